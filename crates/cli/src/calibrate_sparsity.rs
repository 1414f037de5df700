//! `edgellm calibrate-sparsity`: activation-sparsity (TEAL) thresholds from calibration text,
//! stored in a copy of the model file; `--act-sparsity S` on `run`, `chat`, `bench` and `eval`
//! turns them on.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use edgellm_compress::act_sparsity::{calibrate_file, collect};
use edgellm_formats::GgufFile;
use edgellm_models::act_sparsity::{set_act_sparsity, ActSparsity, Thresholds};

use crate::calib_args::existing;

/// Arguments of `edgellm calibrate-sparsity`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (GGUF, a decoder).
    #[arg(short, long)]
    model: PathBuf,
    /// Calibration text (e.g. data/wikitext-2/wiki.valid.tokens; never the evaluation text).
    #[arg(long)]
    calib: PathBuf,
    /// Target sparsities, comma-separated fractions in (0, 1) (e.g. 0.25,0.4,0.5).
    #[arg(long, value_delimiter = ',', required = true)]
    sparsity: Vec<f32>,
    /// Output GGUF file: the model with the thresholds in its metadata.
    #[arg(short, long)]
    output: PathBuf,
    /// Tokens per calibration chunk.
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    ctx: usize,
    /// Calibration chunks.
    #[arg(long, default_value_t = 16)]
    chunks: usize,
    /// Held-out text to measure the sparsity the thresholds give (e.g. a part of the
    /// calibration file not used, or another text).
    #[arg(long)]
    heldout: Option<PathBuf>,
    /// Chunks of the held-out text.
    #[arg(long, default_value_t = 4)]
    heldout_chunks: usize,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

/// Run `edgellm calibrate-sparsity`.
pub fn main(a: Args) -> Result<()> {
    edgellm_core::parallel::set_num_threads(a.threads);
    existing(&a.model, "model file")?;
    existing(&a.calib, "calibration text")?;
    for &s in &a.sparsity {
        anyhow::ensure!(
            s > 0.0 && s < 1.0,
            "--sparsity {s}: each level must be a fraction in (0, 1), e.g. 0.4"
        );
    }
    let t0 = Instant::now();
    let f = GgufFile::open(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    let d = edgellm_runtime::calib_text::decoder_chunks(&f, &a.calib, a.ctx, a.chunks)?;
    eprintln!("calibrating on {}: {} chunks of {} tokens", a.calib.display(), d.chunks.len(), a.ctx);
    let desc = format!("{} ({} chunks of {} tokens)", a.calib.display(), d.chunks.len(), a.ctx);
    let (th, h) = calibrate_file(&f, &d.chunks, &a.sparsity, &desc, &a.output, &mut |done, total| {
        eprint!("\r  chunk {done}/{total}")
    })
    .with_context(|| format!("calibrating and writing {}", a.output.display()))?;
    eprintln!();
    println!(
        "wrote {}: thresholds for {} tensors at sparsity {} ({:.1} s)",
        a.output.display(),
        th.tensors.len(),
        th.levels_text(),
        t0.elapsed().as_secs_f64()
    );
    for (i, l) in th.levels.iter().enumerate() {
        let (m, lo, hi) = h.measured(&th, i);
        println!(
            "  level {l}: calibration text {:.2} % below (sites {:.2} … {:.2} %)",
            100.0 * m,
            100.0 * lo,
            100.0 * hi
        );
    }
    if let Some(p) = &a.heldout {
        existing(p, "held-out text")?;
        let d = edgellm_runtime::calib_text::decoder_chunks(&f, p, a.ctx, a.heldout_chunks)?;
        // Dense: `calibrate_file` turned activation sparsity off.
        let model = edgellm_models::load_gguf(&f).context("loading the model for the held-out text")?;
        let h = collect(model.as_ref(), &d.chunks, &mut |_, _| {})?;
        for (i, l) in th.levels.iter().enumerate() {
            let (m, lo, hi) = h.measured(&th, i);
            println!(
                "  level {l}: held-out {} ({} chunks) {:.2} % below (sites {:.2} … {:.2} %)",
                p.display(),
                d.chunks.len(),
                100.0 * m,
                100.0 * lo,
                100.0 * hi
            );
        }
    }
    Ok(())
}

/// Checks `--act-sparsity S` against the file's thresholds (an error naming the levels there,
/// or the command that makes them) and turns activation sparsity on for the models loaded
/// from now on; `all_tokens` thresholds prompts too (perplexity).
pub fn enable(model: &std::path::Path, level: Option<f32>, all_tokens: bool) -> Result<()> {
    let Some(level) = level else {
        set_act_sparsity(None);
        return Ok(());
    };
    anyhow::ensure!(
        level > 0.0 && level < 1.0,
        "--act-sparsity {level}: must be a fraction in (0, 1), e.g. 0.4"
    );
    let f = GgufFile::open(model).with_context(|| format!("reading {}", model.display()))?;
    match Thresholds::from_gguf(&f)? {
        None => anyhow::bail!(
            "--act-sparsity {level}: {} has no activation-sparsity thresholds; create them with \
             `edgellm calibrate-sparsity -m {} --calib data/wikitext-2/wiki.valid.tokens --sparsity {level} -o OUT.gguf`",
            model.display(),
            model.display()
        ),
        Some(th) if th.level_index(level).is_none() => anyhow::bail!(
            "--act-sparsity {level}: {} has thresholds for the levels {} only (or calibrate this one with \
             `edgellm calibrate-sparsity --sparsity {level}`)",
            model.display(),
            th.levels_text()
        ),
        Some(_) => {}
    }
    set_act_sparsity(Some(ActSparsity { level, all_tokens }));
    Ok(())
}
