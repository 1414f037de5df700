//! `edgellm intent`: train an intent classifier over a sentence encoder (`train`), measure it
//! on a labelled set (`eval`), and classify utterances (`predict`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use edgellm::{Engine, EngineOptions};
use edgellm_eval::energy::EnergyMeter;
use edgellm_eval::intent::{quantile, read_intent_tsv, score};
use edgellm_train::intent::{train_intents, EpochReport, IntentMode, IntentOptions};
use edgellm_train::BertFile;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::OutputFormat;

/// Arguments of `edgellm intent`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Train a classifier: a linear head on the encoder's embeddings (`--mode head`, seconds)
    /// or the whole encoder with it (`--mode full`, minutes); one GGUF out.
    Train(TrainArgs),
    /// Accuracy, macro-F1, the most confused labels, and latency per utterance (batch 1,
    /// tokenization included) on a labelled TSV file.
    Eval(EvalArgs),
    /// Classify utterances: the label, its probability, and the runners-up.
    Predict(PredictArgs),
    /// Commands outside the intents: a decoder (e.g. SmolLM2) writes
    /// `{"device", "action", "value"}` under a JSON schema; with --data, measured on labelled
    /// utterances (HWU64's iot_*: how often device and action are right, latency per command).
    Command(crate::home_command::CommandArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// A linear head on frozen embeddings.
    Head,
    /// The head, then the encoder and head fine-tuned together.
    Full,
}

/// Arguments of `edgellm intent train`.
#[derive(clap::Args)]
struct TrainArgs {
    /// Encoder: a `bert` GGUF file (any type) or a sentence-transformers directory, with mean
    /// pooling (e.g. models/all-MiniLM-L6-v2).
    #[arg(short, long)]
    model: PathBuf,
    /// Training utterances: `text<TAB>label` lines (e.g. data/hwu64/train.tsv).
    #[arg(long)]
    data: PathBuf,
    /// Validation utterances that choose the epoch kept (never the test set). Without it the
    /// training set chooses.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Output intent GGUF: the encoder, the head and the label names in one file.
    #[arg(short, long)]
    output: PathBuf,
    /// What to train.
    #[arg(long, value_enum, default_value_t = Mode::Head)]
    mode: Mode,
    /// Epochs of the head on frozen embeddings.
    #[arg(long, default_value_t = IntentOptions::default().head_epochs)]
    head_epochs: usize,
    /// Peak learning rate of the head on frozen embeddings.
    #[arg(long, default_value_t = IntentOptions::default().head_lr)]
    head_lr: f64,
    /// Epochs of encoder and head together (--mode full).
    #[arg(long, default_value_t = IntentOptions::default().epochs)]
    epochs: usize,
    /// Peak learning rate of the encoder (--mode full).
    #[arg(long, default_value_t = IntentOptions::default().lr)]
    lr: f64,
    /// Peak learning rate of the head while the encoder trains (--mode full).
    #[arg(long, default_value_t = IntentOptions::default().joint_head_lr)]
    joint_head_lr: f64,
    /// Utterances per batch while the encoder trains.
    #[arg(short, long, default_value_t = IntentOptions::default().batch)]
    batch: usize,
    /// Fraction of each phase's steps spent warming the learning rate up.
    #[arg(long, default_value_t = IntentOptions::default().warmup)]
    warmup: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = IntentOptions::default().weight_decay)]
    weight_decay: f64,
    /// Train the embedding tables too (--mode full; slower steps).
    #[arg(long)]
    train_embeddings: bool,
    /// Tokens per utterance at most, [CLS] and [SEP] included.
    #[arg(long, default_value_t = IntentOptions::default().max_len)]
    max_len: usize,
    /// Seed of the shuffles.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Quantization-aware fine-tuning (--mode full): the encoder's linear weights are seen
    /// rounded to this GGUF type (Q8_0, Q5_0, Q4_0, ...) in every forward pass, validation
    /// included; quantize the output to the same type afterwards.
    #[arg(long, value_name = "TYPE", value_parser = parse_quant_type)]
    qat: Option<edgellm_core::DType>,
    /// With --qat: round the frozen word-embedding table to this type first (the type the
    /// deployment stores it in).
    #[arg(long, value_name = "TYPE", value_parser = parse_quant_type)]
    qat_embeddings: Option<edgellm_core::DType>,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

fn parse_quant_type(s: &str) -> std::result::Result<edgellm_core::DType, String> {
    match edgellm_core::DType::from_name(&s.to_ascii_uppercase()) {
        Some(t) if t.is_quantized() && t.id() < 1024 => Ok(t),
        Some(t) => Err(format!("{t} is not a dense quantized type")),
        None => Err(format!("unknown type '{s}' (Q8_0, Q5_0, Q4_0, Q4_K, ...)")),
    }
}

/// Arguments of `edgellm intent eval`.
#[derive(clap::Args)]
struct EvalArgs {
    /// Intent model (from `edgellm intent train`).
    #[arg(short, long)]
    model: PathBuf,
    /// Labelled utterances: `text<TAB>label` lines (e.g. data/hwu64/test.tsv).
    #[arg(long)]
    data: PathBuf,
    /// Most confused label pairs to list.
    #[arg(long, default_value_t = 10)]
    confusions: usize,
    /// Utterances timed one at a time (0: all; the accuracy always covers all).
    #[arg(long, default_value_t = 0)]
    latency_samples: usize,
    /// Power of one busy core in watts, for an energy estimate (CPU time × this) where the
    /// machine has no readable RAPL counters; RAPL, where readable, is used instead.
    #[arg(long)]
    watts_per_core: Option<f64>,
    /// Output format.
    #[arg(long = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

/// Arguments of `edgellm intent predict`.
#[derive(clap::Args)]
struct PredictArgs {
    /// Intent model (from `edgellm intent train`).
    #[arg(short, long)]
    model: PathBuf,
    /// Utterances to classify (none: one per line of standard input).
    texts: Vec<String>,
    /// Labels listed per utterance.
    #[arg(short = 'k', long, default_value_t = 3)]
    top: usize,
    /// Output format.
    #[arg(long = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

/// Run `edgellm intent`.
pub fn main(a: Args) -> Result<()> {
    match a.command {
        Sub::Train(a) => train(a),
        Sub::Eval(a) => eval(a),
        Sub::Predict(a) => predict(a),
        Sub::Command(a) => crate::home_command::command(a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    edgellm_train::set_num_threads(a.threads);
    let opts = IntentOptions {
        mode: match a.mode {
            Mode::Head => IntentMode::Head,
            Mode::Full => IntentMode::Full,
        },
        head_epochs: a.head_epochs,
        head_lr: a.head_lr,
        epochs: a.epochs,
        lr: a.lr,
        joint_head_lr: a.joint_head_lr,
        batch: a.batch,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        freeze_embeddings: !a.train_embeddings,
        max_len: a.max_len,
        seed: a.seed,
        qat: a.qat,
        qat_embeddings: a.qat_embeddings,
        ..IntentOptions::default()
    };
    opts.validate()?;
    let train = read_intent_tsv(&a.data)?;
    let val = match &a.val {
        Some(p) => read_intent_tsv(p)?,
        None => Vec::new(),
    };
    let source = BertFile::open(&a.model, "encoder")?;
    eprintln!(
        "{}: {} utterances, {} labels; {}",
        a.data.display(),
        train.len(),
        edgellm_eval::intent::label_set(&train).len(),
        match &a.val {
            Some(p) => format!("choosing on {} ({} utterances)", p.display(), val.len()),
            None => "no --val: the training set chooses the epoch".into(),
        }
    );
    let spinner = ProgressBar::new_spinner().with_message("embedding the utterances, fitting the head");
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let bar = ProgressBar::hidden();
    let mut on_epoch = |r: &EpochReport| {
        let line = format!(
            "{} epoch {:>2}/{}: loss {:.4}, {} accuracy {:.2} %  ({:.0} s)",
            r.phase.as_str(),
            r.epoch,
            r.epochs,
            r.loss,
            if a.val.is_some() { "val" } else { "train" },
            100.0 * r.val_accuracy,
            r.seconds
        );
        if r.phase == IntentMode::Full {
            bar.suspend(|| eprintln!("{line}"));
        } else {
            spinner.set_message(line);
        }
    };
    let to_terminal = std::io::stderr().is_terminal();
    let t_steps = Instant::now();
    let mut on_step = |step: usize, total: usize| {
        if !to_terminal && (step.is_multiple_of(25) || step == total) {
            // Logs get a line now and then instead of a bar.
            let s = t_steps.elapsed().as_secs_f64();
            eprintln!("fine-tuning step {step}/{total}: {s:.0} s, {:.2} s/step", s / step as f64);
        }
        if bar.is_hidden() {
            spinner.finish_and_clear();
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{spinner} fine-tuning [{bar:30}] {pos}/{len} (eta {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
        }
        bar.set_position(step as u64);
    };
    let trained = train_intents(&source, &train, &val, &opts, &mut on_epoch, &mut on_step);
    spinner.finish_and_clear();
    bar.finish_and_clear();
    let trained = trained?;
    trained.write(&source, &a.output).with_context(|| format!("writing {}", a.output.display()))?;
    let r = &trained.report;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    println!(
        "trained {} labels on {} utterances ({} mode) in {:.1} s (embedding {:.1} s)",
        r.labels.len(),
        r.n_train,
        opts.mode.as_str(),
        r.seconds,
        r.embed_seconds
    );
    let head_best =
        r.epochs.iter().filter(|e| e.phase == IntentMode::Head).map(|e| e.val_accuracy).fold(0.0, f64::max);
    println!(
        "head on frozen embeddings: best {} accuracy {:.2} %",
        if a.val.is_some() { "val" } else { "train" },
        100.0 * head_best
    );
    if opts.mode == IntentMode::Full {
        for e in r.epochs.iter().filter(|e| e.phase == IntentMode::Full) {
            println!(
                "fine-tuning epoch {}: loss {:.4}, accuracy {:.2} % ({:.0} s)",
                e.epoch,
                e.loss,
                100.0 * e.val_accuracy,
                e.seconds
            );
        }
    }
    println!(
        "kept: {} epoch {} ({} accuracy {:.2} %)",
        r.best.0.as_str(),
        r.best.1,
        if a.val.is_some() { "val" } else { "train" },
        100.0 * r.best_val_accuracy
    );
    if r.n_val_unknown > 0 {
        println!(
            "note: {} validation utterances have labels the training set lacks (counted wrong)",
            r.n_val_unknown
        );
    }
    println!("wrote {} ({})", a.output.display(), edgellm_runtime::memory::human_bytes(size));
    Ok(())
}

fn load(model: &PathBuf, threads: usize) -> Result<Engine> {
    let engine = Engine::load(model, EngineOptions { threads: Some(threads), ..Default::default() })?;
    if engine.info().labels.is_none() {
        anyhow::bail!(edgellm::Error::NotAClassifier { path: model.clone() });
    }
    Ok(engine)
}

fn eval(a: EvalArgs) -> Result<()> {
    let engine = load(&a.model, a.threads)?;
    let data = read_intent_tsv(&a.data)?;
    let texts: Vec<&str> = data.iter().map(|e| e.text.as_str()).collect();
    let t0 = Instant::now();
    let preds = engine.classify(&texts, 1)?;
    let batch_seconds = t0.elapsed().as_secs_f64();
    let gold: Vec<&str> = data.iter().map(|e| e.label.as_str()).collect();
    let predicted: Vec<&str> = preds.iter().map(|p| p[0].label.as_str()).collect();
    let s = score(&gold, &predicted);
    let labels = engine.info().labels.clone().unwrap_or_default();
    let unknown = gold.iter().filter(|g| !labels.iter().any(|l| l == *g)).count();

    // Latency: one utterance at a time, tokenization included, after a short warm-up.
    let n_lat = if a.latency_samples == 0 { texts.len() } else { a.latency_samples.min(texts.len()) };
    for t in texts.iter().take(8) {
        engine.classify(&[t], 1)?;
    }
    if let Some(w) = a.watts_per_core {
        anyhow::ensure!(
            w.is_finite() && w > 0.0,
            "--watts-per-core must be a positive number of watts, got {w}"
        );
    }
    let mut ms = Vec::with_capacity(n_lat);
    let meter = EnergyMeter::start();
    for t in texts.iter().take(n_lat) {
        let t0 = Instant::now();
        let p = engine.classify(&[t], 1)?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(p);
    }
    let reading = meter.stop();
    let energy = reading.energy(a.watts_per_core);
    let per_utt = |j: f64| j / ms.len().max(1) as f64;
    let peak_rss = edgellm_runtime::memory::peak_rss_bytes();
    let (p50, p99) = (quantile(&ms, 0.5), quantile(&ms, 0.99));
    let info = engine.info();
    match a.format {
        OutputFormat::Json => {
            let out = json!({
                "model": a.model,
                "data": a.data,
                "n": s.n,
                "correct": s.correct,
                "accuracy": s.accuracy,
                "macro_f1": s.macro_f1,
                "unknown_labels": unknown,
                "latency_ms": {"p50": p50, "p99": p99, "mean": ms.iter().sum::<f64>() / ms.len().max(1) as f64, "samples": ms.len(), "batch": 1},
                "latencies_ms": ms,
                "energy": energy.as_ref().map(|e| json!({
                    "joules_per_utterance": per_utt(e.joules),
                    "source": e.source,
                    "label": e.source.label(),
                })),
                "cpu_seconds": reading.cpu_seconds,
                "wall_seconds": reading.wall_seconds,
                "peak_rss_bytes": peak_rss,
                "threads": edgellm_core::parallel::num_threads(),
                "batched_utterances_per_s": s.n as f64 / batch_seconds,
                "file_bytes": info.file_bytes,
                "kernel_tier": info.kernel_tier,
                "confusions": s.confusions.iter().take(a.confusions).map(|c| json!({"gold": c.gold, "predicted": c.predicted, "count": c.count})).collect::<Vec<_>>(),
                "per_label": s.per_label.iter().map(|l| json!({"label": l.label, "support": l.support, "precision": l.precision, "recall": l.recall, "f1": l.f1})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Text => {
            println!("model: {} ({} labels, {} kernels)", a.model.display(), labels.len(), info.kernel_tier);
            println!("data:  {} ({} utterances)", a.data.display(), s.n);
            println!("accuracy  {:.2} %  ({} / {})", 100.0 * s.accuracy, s.correct, s.n);
            println!("macro-F1  {:.2} %", 100.0 * s.macro_f1);
            if unknown > 0 {
                println!("note: {unknown} utterances have labels the model does not know (counted wrong)");
            }
            println!(
                "latency per utterance, batch 1, tokenization included: p50 {:.2} ms, p99 {:.2} ms ({} utterances)",
                p50,
                p99,
                ms.len()
            );
            println!("batched (32 per batch): {:.0} utterances/s", s.n as f64 / batch_seconds);
            match &energy {
                Some(e) => println!(
                    "energy per utterance: {:.2} mJ ({})",
                    1e3 * per_utt(e.joules),
                    e.source.label()
                ),
                None => println!(
                    "energy: no RAPL counters readable here; give --watts-per-core for an estimate from CPU time ({:.3} s)",
                    reading.cpu_seconds.unwrap_or(f64::NAN)
                ),
            }
            if let Some(b) = peak_rss {
                println!("peak memory (RSS): {}", edgellm_runtime::memory::human_bytes(b));
            }
            if !s.confusions.is_empty() {
                println!("most confused (gold -> predicted):");
                for c in s.confusions.iter().take(a.confusions) {
                    println!("  {:>4}  {} -> {}", c.count, c.gold, c.predicted);
                }
            }
        }
    }
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    let engine = load(&a.model, a.threads)?;
    let texts = if a.texts.is_empty() {
        edgellm_runtime::embed::read_lines(std::io::stdin().lock())?
    } else {
        a.texts.clone()
    };
    let preds = engine.classify(&texts, a.top.max(1))?;
    for (t, p) in texts.iter().zip(&preds) {
        match a.format {
            OutputFormat::Json => {
                let top: Vec<_> = p.iter().map(|l| json!({"label": l.label, "score": l.score})).collect();
                println!("{}", json!({"text": t, "label": p[0].label, "score": p[0].score, "top": top}));
            }
            OutputFormat::Text => {
                let rest: Vec<String> =
                    p[1..].iter().map(|l| format!("{} {:.3}", l.label, l.score)).collect();
                if rest.is_empty() {
                    println!("{}\t{:.3}\t{}", p[0].label, p[0].score, t);
                } else {
                    println!("{}\t{:.3}\t{}\t({})", p[0].label, p[0].score, t, rest.join(", "));
                }
            }
        }
    }
    Ok(())
}
