//! `edgellm embed`: one sentence embedding per input line, as JSON lines or a `.npy` array.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use edgellm::{Engine, EngineOptions, DEFAULT_BATCH};
use edgellm_runtime::embed::read_lines;

/// Output formats of `edgellm embed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedFormat {
    /// One `{"index": i, "embedding": [...]}` object per line.
    Jsonl,
    /// A float32 `[n, dim]` NumPy array (`.npy`, version 1.0).
    Npy,
}

/// Arguments of `edgellm embed`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: a sentence-transformers directory (config.json, model.safetensors,
    /// tokenizer.json, modules.json, 1_Pooling/) or a `bert` GGUF file.
    #[arg(short, long)]
    model: PathBuf,
    /// Input file with one text per line (`-` or absent: standard input).
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Texts per batch (sorted by length, padded to the longest of the batch).
    #[arg(short, long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Output format.
    #[arg(long = "output-format", value_enum, default_value_t = EmbedFormat::Jsonl)]
    format: EmbedFormat,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Where the encoder runs: cpu, gpu or auto (see `edgellm run --help`).
    #[arg(long, default_value = "cpu", value_parser = crate::run::parse_device)]
    device: edgellm::Device,
}

/// Run `edgellm embed`.
pub fn main(a: Args) -> Result<()> {
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    let lines = match a.input.as_deref() {
        None => read_lines(std::io::stdin().lock())?,
        Some(p) if p.as_os_str() == "-" => read_lines(std::io::stdin().lock())?,
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening input {}", p.display()))?;
            read_lines(f).with_context(|| format!("reading {}", p.display()))?
        }
    };
    let to_terminal = a.output.is_none() && std::io::stdout().is_terminal();
    anyhow::ensure!(
        !(a.format == EmbedFormat::Npy && to_terminal),
        "npy output is binary: redirect standard output or pass -o FILE"
    );
    let engine = Engine::load(
        &a.model,
        EngineOptions { threads: Some(a.threads), device: a.device, ..Default::default() },
    )?;
    crate::run::note_device(engine.info().device_note.as_deref());
    let emb = engine.embed_batched(&lines, a.batch)?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match a.format {
        EmbedFormat::Jsonl => {
            for (i, e) in emb.iter().enumerate() {
                // f32 values in their shortest round-trip form; "index" first.
                writeln!(out, "{{\"index\":{i},\"embedding\":{}}}", serde_json::to_string(e)?)?;
            }
        }
        EmbedFormat::Npy => write_npy(&mut out, &emb, engine.info().embedding_dim.unwrap_or_default())?,
    }
    out.flush()?;
    Ok(())
}

/// Write `rows` (each `dim` long) as a little-endian float32 `.npy` array of shape `[n, dim]`.
pub fn write_npy(w: &mut dyn Write, rows: &[Vec<f32>], dim: usize) -> Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {dim}), }}", rows.len());
    // Magic (6) + version (2) + header length (2) + header, padded with spaces and ended with a
    // newline to a multiple of 64 bytes.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for r in rows {
        anyhow::ensure!(r.len() == dim, "embedding of length {} in a [n, {dim}] array", r.len());
        for v in r {
            w.write_all(&v.to_le_bytes())?;
        }
    }
    Ok(())
}
