//! `edgellm trim-vocab`: keep only the tokens a deployment needs in a WordPiece (`bert`) GGUF —
//! those of its texts, plus control, single-character and optionally the commonest tokens —
//! so the word-embedding table shrinks to those rows ([`edgellm_compress::vocab`]).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use edgellm::{Engine, EngineOptions};

/// Arguments of `edgellm trim-vocab`.
#[derive(clap::Args)]
pub struct Args {
    /// Input: a `bert` GGUF (an encoder or an intent model from `edgellm intent train`).
    #[arg(short, long)]
    model: PathBuf,
    /// Text the deployment must handle exactly: `text<TAB>label` TSV or plain lines (the text
    /// before a tab is used); repeatable. Texts whose tokens are all kept embed bit for bit as
    /// before.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Also keep this many of the commonest other tokens (the vocabulary's order: BERT-style
    /// WordPiece vocabularies list pieces most frequent first), for words the texts lack.
    #[arg(long, default_value_t = 0)]
    keep_common: usize,
    /// Output GGUF.
    #[arg(short, long)]
    output: PathBuf,
}

/// Run `edgellm trim-vocab`.
pub fn main(a: Args) -> Result<()> {
    let engine = Engine::load(&a.model, EngineOptions::default())?;
    let mut used = BTreeSet::new();
    let mut lines = 0usize;
    for path in &a.data {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            // A TSV's header line (`text<TAB>intent`, as `intent train` reads it) is not text.
            if i == 0 && line.rsplit_once('\t').is_some_and(|(_, l)| matches!(l.trim(), "intent" | "label")) {
                continue;
            }
            let t = line.split('\t').next().unwrap_or("").trim();
            if t.is_empty() {
                continue;
            }
            used.extend(engine.tokenize(t, false)?);
            lines += 1;
        }
    }
    anyhow::ensure!(lines > 0, "no text in {:?}", a.data);
    drop(engine);
    let f = edgellm_formats::GgufFile::open(&a.model)?;
    let (w, r) = edgellm_compress::vocab::trim_vocab(&f, &used, a.keep_common)?;
    w.write_file(&a.output).with_context(|| format!("writing {}", a.output.display()))?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    println!(
        "{} lines, {} distinct tokens used; kept {} of {} tokens (+{} common); token_embd {} -> {}",
        lines,
        r.used,
        r.kept,
        r.before,
        a.keep_common,
        edgellm_runtime::memory::human_bytes(r.embd_bytes.0),
        edgellm_runtime::memory::human_bytes(r.embd_bytes.1)
    );
    println!("wrote {} ({})", a.output.display(), edgellm_runtime::memory::human_bytes(size));
    Ok(())
}
