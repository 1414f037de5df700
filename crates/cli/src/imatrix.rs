//! `edgellm imatrix`: collect an importance matrix (per input channel of every block weight, the
//! sum of squares of its inputs over calibration text) in llama.cpp's GGUF imatrix layout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use edgellm_formats::GgufFile;

use crate::calib_args::{existing, run_calibration, ChunkArgs};

/// Arguments of `edgellm imatrix`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (GGUF).
    #[arg(short, long)]
    model: PathBuf,
    /// Calibration text (e.g. data/wikitext-2/wiki.valid.tokens; never the evaluation text).
    #[arg(short = 'f', long = "file")]
    text: PathBuf,
    #[command(flatten)]
    chunks: ChunkArgs,
    /// Output file (GGUF imatrix; llama-quantize --imatrix reads it).
    #[arg(short, long, default_value = "imatrix.gguf")]
    output: PathBuf,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

/// Run `edgellm imatrix`.
pub fn main(a: Args) -> Result<()> {
    edgellm_core::parallel::set_num_threads(a.threads);
    existing(&a.model, "model file")?;
    existing(&a.text, "calibration text")?;
    let f = GgufFile::open(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    let t0 = Instant::now();
    let cal = run_calibration(&f, &a.text, &a.chunks, false, false)?;
    cal.imatrix.write_gguf(&a.output).with_context(|| format!("writing {}", a.output.display()))?;
    println!(
        "wrote {}: {} weights, {} chunks of {} tokens, {:.1} s",
        a.output.display(),
        cal.imatrix.entries.len(),
        cal.imatrix.chunk_count,
        cal.imatrix.chunk_size,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
