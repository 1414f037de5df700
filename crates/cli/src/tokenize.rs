//! `edgellm tokenize`: print token ids as a JSON array.

use std::path::PathBuf;

use anyhow::{Context, Result};
use edgellm_formats::GgufFile;
use edgellm_text::Tokenizer;

/// Arguments of `edgellm tokenize`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (GGUF).
    #[arg(short, long)]
    model: PathBuf,
    /// Add the BOS token.
    #[arg(long)]
    bos: bool,
    /// Parse special tokens such as `<|im_start|>` in the text.
    #[arg(long)]
    special: bool,
    /// The text.
    text: String,
}

/// Run `edgellm tokenize`.
pub fn main(a: Args) -> Result<()> {
    anyhow::ensure!(a.model.exists(), "model file {} does not exist", a.model.display());
    let f = GgufFile::open(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    let tok = Tokenizer::from_gguf(&f)?;
    let ids = tok.encode(&a.text, a.bos, a.special);
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
