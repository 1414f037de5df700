//! Calibration flags and the calibration run shared by `edgellm imatrix` and `edgellm quantize`.

use std::path::Path;

use anyhow::{Context, Result};
use edgellm_compress::calib::{calibrate, CalibOptions, Calibration};
use edgellm_formats::GgufFile;
use indicatif::{ProgressBar, ProgressStyle};

/// Tokens per chunk and how many chunks.
#[derive(clap::Args, Clone, Debug)]
pub struct ChunkArgs {
    /// Tokens per calibration chunk (each chunk is evaluated from an empty context).
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    pub ctx: usize,
    /// Chunks to process (0 = as many as the text gives).
    #[arg(long, default_value_t = 0)]
    pub chunks: usize,
}

/// Runs the model in `f` over the text file `text` and collects input statistics: always the
/// importance matrix, Gram matrices with `grams` (GPTQ), sampled activations with `awq`.
pub fn run_calibration(
    f: &GgufFile,
    text: &Path,
    chunks: &ChunkArgs,
    grams: bool,
    awq: bool,
) -> Result<Calibration> {
    let d = edgellm_runtime::calib_text::decoder_chunks(f, text, chunks.ctx, chunks.chunks)?;
    let model = edgellm_models::load_gguf(f).context("loading the model for calibration")?;
    let n = d.chunks.len();
    eprintln!(
        "calibrating on {}: {} tokens, {n} chunks of {}{}",
        text.display(),
        d.text_tokens,
        chunks.ctx,
        if grams {
            " (with Gram matrices for GPTQ)"
        } else if awq {
            " (with activation samples for AWQ)"
        } else {
            ""
        }
    );
    // The chunks already start with BOS where the model wants one.
    let tokens: Vec<u32> = d.chunks.concat();
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} calibration [{bar:30}] {pos}/{len} chunks, {elapsed} ({eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let opts = CalibOptions {
        ctx: chunks.ctx,
        chunks: n,
        grams,
        bos: None,
        awq_samples: if awq { edgellm_compress::awq::SAMPLE_TOKENS } else { 0 },
    };
    let mut cal = calibrate(model.as_ref(), &tokens, &opts, &mut |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    cal.imatrix.datasets = vec![text.display().to_string()];
    Ok(cal)
}

/// Checks that a file given on the command line exists.
pub fn existing(p: &Path, what: &str) -> Result<()> {
    anyhow::ensure!(p.exists(), "{what} {} does not exist", p.display());
    Ok(())
}

pub use edgellm_compress::source::{is_safetensors, OpenedModel};
