//! `edgellm eval`: measure a model's quality and cost on a benchmark.

use std::path::PathBuf;

use anyhow::{Context, Result};
use edgellm_eval::ppl::{self, ChunkProgress, PplOptions};
use edgellm_eval::sts;
use edgellm_runtime::embed::{Embedder, DEFAULT_BATCH};
use edgellm_runtime::memory::human_bytes;
use edgellm_runtime::LoadedModel;

use crate::OutputFormat;

/// Arguments of `edgellm eval`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(clap::Subcommand)]
enum Task {
    /// Semantic textual similarity: Spearman correlation (× 100) of embedding cosines with the
    /// gold scores of an STS file (e.g. data/stsb/sts-test.tsv), throughput and peak memory.
    Sts(StsArgs),
    /// Perplexity of a language model over a text file, computed as llama.cpp's
    /// llama-perplexity does (non-overlapping chunks of -c tokens, the second half of each
    /// scored), so the figures are comparable.
    Ppl(PplArgs),
    /// KL divergence of a model's next-token distributions from a base model's over the same
    /// chunks of a text (mean, 99th percentile, same-top-token rate, perplexity ratio).
    Kld(KldArgs),
    /// Run a grid of compression recipes on one model (pruning method × sparsity or pattern ×
    /// quantization type, structured ratios, dense quantization types), measure each (KLD, PPL,
    /// tokens/s; STS for encoders) and write DIR/sweep.md, DIR/sweep.json and charts (PNG, SVG).
    #[command(after_help = presets_help())]
    Sweep(SweepArgs),
}

fn presets_help() -> String {
    let mut s = String::from("Presets:\n");
    for (n, d) in edgellm_eval::sweep::PRESETS {
        s.push_str(&format!("  {n:<11} {d}\n"));
    }
    s.push_str(
        "A grid file (TOML) has sections [eval] text/ctx/chunks, [calib] text/ctx/chunks, [speed] \
         n_prompt/n_gen/reps, [grid] prune/sparsity/quant/quant_method/dense/structured and [[point]] \
         entries; see docs/sweep.md.",
    );
    s
}

/// Arguments of `edgellm eval sweep`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("points").required(true).args(["grid", "preset"])))]
struct SweepArgs {
    /// The model to compress: a llama or gemma3 GGUF (ideally full precision, e.g. F32), a bert
    /// GGUF or a sentence-transformers directory.
    #[arg(short, long)]
    model: PathBuf,
    /// Grid file (TOML).
    #[arg(long, conflicts_with = "preset")]
    grid: Option<PathBuf>,
    /// A built-in grid (see below).
    #[arg(long)]
    preset: Option<String>,
    /// Output directory.
    #[arg(short, long)]
    output: PathBuf,
    /// Evaluation chunks (decoders) or STS pairs (encoders), overriding the grid.
    #[arg(long)]
    eval_chunks: Option<usize>,
    /// Calibration chunks, overriding the grid.
    #[arg(long)]
    calib_chunks: Option<usize>,
    /// Keep every point's model in DIR/models/ (deleted after measuring otherwise).
    #[arg(long)]
    keep_models: bool,
    /// Measure every point again even where DIR/sweep.json holds it from an earlier run.
    #[arg(long)]
    fresh: bool,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

/// Chunking and compute options shared by `eval ppl` and `eval kld`.
#[derive(clap::Args)]
struct ChunkArgs {
    /// Text file to evaluate on (e.g. data/wikitext-2/wiki.test.raw).
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Tokens per chunk (the context every chunk runs in).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    n_ctx: usize,
    /// Evaluate at most this many chunks (default: every whole chunk of the file).
    #[arg(long)]
    chunks: Option<usize>,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Compute with f32 activations instead of the 8-bit-activation kernels (the default, like
    /// llama.cpp's CPU backend).
    #[arg(long)]
    exact: bool,
    /// Where the models run: cpu, gpu or auto (see `edgellm run --help`).
    #[arg(long, default_value = "cpu", value_parser = crate::run::parse_device)]
    device: edgellm_models::Device,
    /// Output format.
    #[arg(long = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    /// Activation sparsity at this level (`edgellm calibrate-sparsity`), applied to every
    /// token of the model (for `kld`, the model, not the base).
    #[arg(long = "act-sparsity", value_name = "S")]
    act_sparsity: Option<f32>,
}

/// Arguments of `edgellm eval ppl`.
#[derive(clap::Args)]
struct PplArgs {
    /// Model file (GGUF).
    #[arg(short, long)]
    model: PathBuf,
    #[command(flatten)]
    chunk: ChunkArgs,
}

/// Arguments of `edgellm eval kld`.
#[derive(clap::Args)]
struct KldArgs {
    /// Base model (GGUF), e.g. the F32 original; its tokenizer cuts the text.
    #[arg(long)]
    base: PathBuf,
    /// Model to compare with the base (GGUF), e.g. a quantized copy.
    #[arg(short, long)]
    model: PathBuf,
    #[command(flatten)]
    chunk: ChunkArgs,
}

/// Arguments of `edgellm eval sts`.
#[derive(clap::Args)]
struct StsArgs {
    /// Embedding model: a sentence-transformers directory or a `bert` GGUF file (any tensor type).
    #[arg(short, long)]
    model: PathBuf,
    /// STS pairs: tab-separated `score, sentence1, sentence2` (a header line is skipped), or the
    /// original STS Benchmark layout.
    #[arg(long)]
    data: PathBuf,
    /// Texts per batch.
    #[arg(short, long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Where the encoder runs: cpu, gpu or auto (see `edgellm run --help`).
    #[arg(long, default_value = "cpu", value_parser = crate::run::parse_device)]
    device: edgellm_models::Device,
    /// Output format.
    #[arg(long = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
}

/// Run `edgellm eval`.
pub fn main(a: Args) -> Result<()> {
    match a.task {
        Task::Sts(a) => run_sts(a),
        Task::Ppl(a) => run_ppl(a),
        Task::Kld(a) => run_kld(a),
        Task::Sweep(a) => run_sweep(a),
    }
}

/// A progress line on stderr after each chunk.
fn progress(p: &ChunkProgress) {
    let eta = p.seconds / p.done as f64 * (p.total - p.done) as f64;
    match p.kld {
        Some(k) => eprintln!(
            "[{}/{}] ppl {:.4}  kld {:.6}  ({:.1} s, eta {:.0} s)",
            p.done, p.total, p.ppl, k, p.seconds, eta
        ),
        None => {
            eprintln!("[{}/{}] ppl {:.4}  ({:.1} s, eta {:.0} s)", p.done, p.total, p.ppl, p.seconds, eta)
        }
    }
}

fn load(path: &PathBuf, c: &ChunkArgs) -> Result<LoadedModel> {
    let lm = LoadedModel::load_with(path, c.n_ctx, &crate::run::load_options(c.exact, None, c.device))
        .with_context(|| format!("loading {}", path.display()))?;
    crate::run::note_device(lm.device_note.as_deref());
    Ok(lm)
}

fn run_ppl(a: PplArgs) -> Result<()> {
    let c = &a.chunk;
    edgellm_core::parallel::set_num_threads(c.threads);
    let text = ppl::read_text(&c.file)?;
    crate::calibrate_sparsity::enable(&a.model, c.act_sparsity, true)?;
    let lm = load(&a.model, c)?;
    let (tokens, bos) = ppl::tokenize(&lm.tokenizer, &text);
    let opts = PplOptions { n_ctx: c.n_ctx, max_chunks: c.chunks };
    let n = opts.plan(tokens.len(), lm.model.info().n_ctx_train)?;
    eprintln!(
        "{}: {} tokens; {n} chunks of {} (BOS {}), scoring {} tokens each",
        c.file.display(),
        tokens.len(),
        c.n_ctx,
        if bos.is_some() { "first" } else { "not added" },
        opts.scored_per_chunk()
    );
    let r = ppl::perplexity(lm.model.as_ref(), &tokens, bos, &opts, progress)?;
    match c.format {
        OutputFormat::Json => println!("{}", serde_json::to_string(&r)?),
        OutputFormat::Text => {
            println!("model: {}", a.model.display());
            println!(
                "PPL = {:.4} +/- {:.5}  ({} chunks of {}, {} tokens scored, {})",
                r.ppl,
                r.ppl_err,
                r.chunks,
                r.n_ctx,
                r.tokens_scored,
                if c.exact { "f32 activations" } else { "8-bit activations" }
            );
            println!("time: {:.1} s ({:.0} tokens/s)", r.seconds, r.tokens_per_s);
        }
    }
    Ok(())
}

fn run_kld(a: KldArgs) -> Result<()> {
    let c = &a.chunk;
    edgellm_core::parallel::set_num_threads(c.threads);
    let text = ppl::read_text(&c.file)?;
    crate::calibrate_sparsity::enable(&a.base, None, true)?;
    let base = load(&a.base, c)?;
    crate::calibrate_sparsity::enable(&a.model, c.act_sparsity, true)?;
    let model = load(&a.model, c)?;
    let (tokens, bos) = ppl::tokenize(&base.tokenizer, &text);
    let opts = PplOptions { n_ctx: c.n_ctx, max_chunks: c.chunks };
    let r =
        ppl::kl_divergence_eval(base.model.as_ref(), model.model.as_ref(), &tokens, bos, &opts, progress)?;
    let s = &r.summary;
    match c.format {
        OutputFormat::Json => println!("{}", serde_json::to_string(&r)?),
        OutputFormat::Text => {
            println!("base:  {}", a.base.display());
            println!("model: {}", a.model.display());
            println!("{} chunks of {}, {} tokens scored", r.chunks, r.n_ctx, s.tokens);
            println!("PPL(base)        : {:.4} +/- {:.5}", s.ppl_base.value, s.ppl_base.err);
            println!("PPL(model)       : {:.4} +/- {:.5}", s.ppl.value, s.ppl.err);
            println!("PPL(model)/PPL(base): {:.6} +/- {:.6}", s.ppl_ratio.value, s.ppl_ratio.err);
            println!(
                "mean KLD         : {:.6} +/- {:.6} (sd {:.6})",
                s.kld_mean.value, s.kld_mean.err, s.kld_sd
            );
            println!("median KLD       : {:.6}", s.kld_median);
            println!("99th pct KLD     : {:.6}", s.kld_p99);
            println!("max KLD          : {:.6}", s.kld_max);
            println!(
                "same top token   : {:.3} +/- {:.3} %",
                100.0 * s.same_top.value,
                100.0 * s.same_top.err
            );
            println!("time: {:.1} s", r.seconds);
        }
    }
    Ok(())
}

fn run_sts(a: StsArgs) -> Result<()> {
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    edgellm_core::parallel::set_num_threads(a.threads);
    let pairs = sts::load(&a.data)?;
    let (embedder, note) = edgellm::embedder_on(Embedder::load(&a.model)?, &a.model, a.device)?;
    crate::run::note_device(note.as_deref());
    let r = sts::evaluate(&embedder, &pairs, a.batch).context("evaluating STS")?;
    match a.format {
        OutputFormat::Json => println!("{}", serde_json::to_string(&r)?),
        OutputFormat::Text => {
            println!("STS {}: {} pairs", a.data.display(), r.pairs);
            println!("spearman (cosine) x100: {:.2}", r.spearman);
            println!("pearson (cosine) x100:  {:.2}", r.pearson);
            println!(
                "throughput: {:.1} sentences/s ({} sentences in {:.2} s, batch {}, threads {})",
                r.sentences_per_s,
                r.sentences,
                r.seconds,
                a.batch,
                edgellm_core::parallel::num_threads()
            );
            match r.peak_rss_bytes {
                Some(b) => println!("peak RSS: {}", human_bytes(b)),
                None => println!("peak RSS: unknown on this system"),
            }
        }
    }
    Ok(())
}

fn run_sweep(a: SweepArgs) -> Result<()> {
    use edgellm_eval::sweep::{run_sweep, write_reports, GridFile, Kind, SweepEvent, SweepOptions};
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    edgellm_core::parallel::set_num_threads(a.threads);
    let mut grid = match (&a.grid, &a.preset) {
        (Some(g), _) => GridFile::read(g)?,
        (None, Some(p)) => GridFile::preset(p)?,
        (None, None) => anyhow::bail!("give --grid FILE or --preset NAME"),
    };
    if let Some(n) = a.eval_chunks {
        grid.eval.chunks = Some(n);
    }
    if let Some(n) = a.calib_chunks {
        grid.calib.chunks = Some(n);
    }
    let n_points = grid.points()?.len();
    std::fs::create_dir_all(&a.output).with_context(|| format!("creating {}", a.output.display()))?;
    let opts = SweepOptions {
        model: a.model.clone(),
        dir: a.output.clone(),
        keep_models: a.keep_models,
        fresh: a.fresh,
    };
    eprintln!("sweep of {}: {n_points} points and the base, into {}", a.model.display(), a.output.display());
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>32} [{bar:24}] {pos}/{len} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    let t0 = std::time::Instant::now();
    let result = run_sweep(&grid, &opts, &mut |e| match e {
        SweepEvent::Prepare { what, done, total } => {
            let b = bar.get_or_insert_with(|| multi.add(ProgressBar::new(0).with_style(style.clone())));
            b.set_prefix("preparing");
            b.set_length(total as u64);
            b.set_position(done as u64);
            b.set_message(what.to_string());
        }
        SweepEvent::Start { point, index, total } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let b = multi.add(ProgressBar::new(0).with_style(style.clone()));
            b.set_prefix(format!("[{index}/{total}] {}", point.name));
            bar = Some(b);
        }
        SweepEvent::Stage { stage, done, total, .. } => {
            if let Some(b) = &bar {
                b.set_length(total as u64);
                b.set_position(done as u64);
                b.set_message(stage.to_string());
            }
        }
        SweepEvent::Done { point, result, resumed } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let q = match (result.kld, result.ppl, result.spearman) {
                (_, _, Some(s)) => format!("Spearman {s:.2}"),
                (Some(k), Some(p), _) => format!("KLD {k:.4}  PPL {p:.2}"),
                (Some(k), None, _) => format!("KLD {k:.4}"),
                _ => String::new(),
            };
            let speed = match (result.gen_tps, result.sentences_per_s) {
                (Some(t), _) => format!("  tg {t:.1} t/s"),
                (None, Some(s)) => format!("  {s:.0} sentences/s"),
                _ => String::new(),
            };
            let line = format!(
                "{:<36} {:>6.2} bpw  {q}{speed}{}",
                point.name,
                result.bpw,
                if resumed { "  (from the earlier run)" } else { "" }
            );
            if multi.is_hidden() {
                eprintln!("{line}");
            } else {
                let _ = multi.println(line);
            }
        }
    });
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let result = result?;
    let files = write_reports(&result, &a.output)?;
    println!(
        "sweep of {} ({}): {} points in {:.0} s",
        a.model.display(),
        if result.kind == Kind::Decoder { "decoder" } else { "encoder" },
        result.points.len(),
        t0.elapsed().as_secs_f64()
    );
    for f in files {
        println!("  {}", f.display());
    }
    Ok(())
}
