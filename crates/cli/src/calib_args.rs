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

/// Whether a model path is a sentence-transformers directory (or its `.safetensors` file).
pub fn is_safetensors(p: &Path) -> bool {
    p.is_dir() || p.extension().is_some_and(|e| e == "safetensors")
}

/// A model opened for compression: a GGUF file, or a sentence-transformers directory
/// converted to llama.cpp's `bert` GGUF layout with F32 tensors.
pub enum OpenedModel {
    /// A GGUF file (mapped).
    Gguf(GgufFile),
    /// A converted encoder.
    Converted(edgellm_compress::ModelSource<'static>),
}

impl OpenedModel {
    /// Opens `input` (GGUF, or a safetensors directory / `model.safetensors`).
    pub fn open(input: &Path) -> Result<OpenedModel> {
        if is_safetensors(input) {
            let dir = if input.is_dir() {
                input.to_path_buf()
            } else {
                input.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            let export = edgellm_models::bert::gguf_export(&dir)
                .with_context(|| format!("converting {} to GGUF", dir.display()))?;
            Ok(OpenedModel::Converted(edgellm_compress::ModelSource::from_writer(export.to_writer_f32()?)?))
        } else {
            Ok(OpenedModel::Gguf(
                GgufFile::open(input).with_context(|| format!("reading {}", input.display()))?,
            ))
        }
    }

    /// The GGUF file, when the input was one.
    pub fn gguf(&self) -> Option<&GgufFile> {
        match self {
            OpenedModel::Gguf(f) => Some(f),
            OpenedModel::Converted(_) => None,
        }
    }

    /// The model's metadata and tensors.
    pub fn source(&self) -> edgellm_compress::ModelSource<'_> {
        match self {
            OpenedModel::Gguf(f) => edgellm_compress::ModelSource::from_gguf(f),
            OpenedModel::Converted(s) => s.clone(),
        }
    }
}
