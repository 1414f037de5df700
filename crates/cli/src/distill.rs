//! `edgellm distill`: recover a pruned sentence encoder by training it to reproduce its dense
//! original's embeddings on unlabeled text, its zeros held; an F32 `bert` GGUF out.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use edgellm_runtime::memory::human_bytes;
use edgellm_train::distill::{DistillJob, DistillOptions, EvalStats, StepProgress};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `edgellm distill`.
#[derive(clap::Args)]
pub struct Args {
    /// Dense teacher: a `bert` GGUF file or a sentence-transformers directory.
    #[arg(long)]
    teacher: PathBuf,
    /// Pruned student of the same network (zeros stored densely, e.g. from `edgellm prune`):
    /// a `bert` GGUF file in any type, or a sentence-transformers directory. Its zeros stay.
    #[arg(long)]
    student: PathBuf,
    /// Unlabeled training text, one paragraph per line (e.g. data/wikitext-2/wiki.valid.tokens),
    /// split into sentences; headings and short lines are skipped. Never the evaluation set.
    #[arg(long)]
    data: PathBuf,
    /// Output GGUF file (F32, the student's metadata).
    #[arg(short, long)]
    output: PathBuf,
    /// Optimizer steps (default: --epochs passes over the sentences).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Passes over the training sentences, when --steps is not given.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Peak learning rate (AdamW), reached after the warmup, then decayed linearly to 0.
    #[arg(long, default_value_t = DistillOptions::default().lr)]
    lr: f64,
    /// Fraction of the steps spent warming the learning rate up from 0.
    #[arg(long, default_value_t = DistillOptions::default().warmup)]
    warmup: f64,
    /// Sentences per batch.
    #[arg(short, long, default_value_t = DistillOptions::default().batch)]
    batch: usize,
    /// Sentences read from --data at most (held-out ones included).
    #[arg(long, default_value_t = DistillOptions::default().max_sentences)]
    max_sentences: usize,
    /// Tokens per sentence at most, [CLS] and [SEP] included.
    #[arg(long, default_value_t = DistillOptions::default().max_len)]
    max_len: usize,
    /// Sentences set aside to measure the student against the teacher (not trained on).
    #[arg(long, default_value_t = DistillOptions::default().held_out)]
    held_out: usize,
    /// λ: weight of the squared error of the mean-pooled vectors next to (1 − cosine).
    #[arg(long, default_value_t = DistillOptions::default().mse_weight)]
    mse_weight: f64,
    /// μ: weight of a token-level term, the squared error of every token's last hidden state
    /// (0: sentence embeddings alone).
    #[arg(long, default_value_t = DistillOptions::default().token_weight)]
    token_weight: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = DistillOptions::default().weight_decay)]
    weight_decay: f64,
    /// Seed of the data split and the shuffles.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Leave the embedding tables as they are (faster steps).
    #[arg(long)]
    freeze_embeddings: bool,
    /// Leave the LayerNorm gains and biases as they are.
    #[arg(long)]
    freeze_norms: bool,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

fn cosines(s: &Option<EvalStats>) -> String {
    match s {
        Some(s) => format!("mean {:.4} (min {:.4})", s.mean_cosine, s.min_cosine),
        None => "-".into(),
    }
}

/// Run `edgellm distill`.
pub fn main(a: Args) -> Result<()> {
    edgellm_train::set_num_threads(a.threads);
    let t0 = Instant::now();
    let opts = DistillOptions {
        steps: a.steps,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        mse_weight: a.mse_weight,
        token_weight: a.token_weight,
        seed: a.seed,
        max_len: a.max_len,
        max_sentences: a.max_sentences,
        held_out: a.held_out,
        freeze_embeddings: a.freeze_embeddings,
        freeze_norms: a.freeze_norms,
        ..DistillOptions::default()
    };
    let spinner =
        ProgressBar::new_spinner().with_message("reading the data, computing the teacher's embeddings");
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let job = DistillJob::prepare(&a.teacher, &a.student, &a.data, opts);
    spinner.finish_and_clear();
    let mut job = job?;
    let (masked, total) = job.student.masked_fraction()?;
    eprintln!(
        "student {}: {:.1} % of the layer-linear weights are zero and stay zero",
        a.student.display(),
        100.0 * masked as f64 / total.max(1) as f64
    );
    eprintln!(
        "{}: {} sentences to train on, {} held out; teacher embeddings in {:.1} s",
        a.data.display(),
        job.data.train.len(),
        job.data.held_out.len(),
        job.teacher_seconds
    );

    let total_steps = job.opts.total_steps(job.data.train.len());
    let bar = ProgressBar::new(total_steps as u64).with_style(
        ProgressStyle::with_template("{spinner} distilling [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut on_step = |p: &StepProgress| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.5} lr {:.2e}", p.loss, p.lr));
    };
    let report = job.run(&mut on_step);
    bar.finish_and_clear();
    let r = report?;
    job.write(&a.output).with_context(|| format!("writing {}", a.output.display()))?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);

    let s = &r.stats;
    println!("teacher: {}", a.teacher.display());
    println!(
        "student: {} ({:.1} % zeros in the layer linears, held)",
        a.student.display(),
        100.0 * r.masked.0 as f64 / r.masked.1.max(1) as f64
    );
    println!(
        "loss (first {} training sentences): {:.5} -> {:.5}  (batch loss, first/last tenth of the steps: {:.5} -> {:.5})",
        job.data.train.len().min(edgellm_train::distill::PROBE),
        r.train_before.loss,
        r.train_after.loss,
        s.first_loss,
        s.last_loss
    );
    println!(
        "held-out cosine to the teacher ({} sentences): {} -> {}",
        job.data.held_out.len(),
        cosines(&r.held_before),
        cosines(&r.held_after)
    );
    println!(
        "steps: {} x batch {} in {:.1} s ({:.2} s/step); total {:.1} s, threads {}",
        s.steps,
        job.opts.batch,
        s.seconds,
        s.seconds / s.steps.max(1) as f64,
        t0.elapsed().as_secs_f64(),
        edgellm_core::parallel::num_threads()
    );
    println!("wrote {} (F32, {})", a.output.display(), human_bytes(size));
    Ok(())
}
