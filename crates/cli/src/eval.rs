//! `edgellm eval`: measure a model's quality and cost on a benchmark.

use std::path::PathBuf;

use anyhow::{Context, Result};
use edgellm_eval::sts;
use edgellm_runtime::embed::{Embedder, DEFAULT_BATCH};
use edgellm_runtime::memory::human_bytes;

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
}

/// Arguments of `edgellm eval sts`.
#[derive(clap::Args)]
struct StsArgs {
    /// Embedding model directory (sentence-transformers layout).
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
    }
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
