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
    /// Output format.
    #[arg(long = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
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
    LoadedModel::load_with(path, c.n_ctx, &crate::run::load_options(c.exact, None))
        .with_context(|| format!("loading {}", path.display()))
}

fn run_ppl(a: PplArgs) -> Result<()> {
    let c = &a.chunk;
    edgellm_core::parallel::set_num_threads(c.threads);
    let text = ppl::read_text(&c.file)?;
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
    let base = load(&a.base, c)?;
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
    let embedder = Embedder::load(&a.model)?;
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
