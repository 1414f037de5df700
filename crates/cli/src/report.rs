//! `edgellm report`: end-to-end comparisons written as Markdown reports with charts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Command as Process;

use anyhow::{Context, Result};
use edgellm_train::intent::IntentOptions;
use edgellm_train::smart_home::{
    run_smart_home, write_report, DatasetSpec, LlmResult, MeasureRequest, Measurement, Progress,
    SmartHomeOptions,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The smart-home intent classifier end to end: trained, fine-tuned, pruned and recovered,
    /// quantized, and measured (accuracy on HWU64 and SNIPS, latency, size, memory, energy)
    /// against the F32 scalar baseline; writes smart-home.md, smart-home.json and charts.
    SmartHome(SmartHomeArgs),
}

/// Arguments of `edgellm report smart-home`.
#[derive(clap::Args)]
struct SmartHomeArgs {
    /// Sentence encoder: a sentence-transformers directory or a `bert` GGUF.
    #[arg(short = 'm', long, default_value = "models/all-MiniLM-L6-v2")]
    encoder: PathBuf,
    /// HWU64 directory (train.tsv, val.tsv, test.tsv).
    #[arg(long, default_value = "data/hwu64")]
    hwu64: PathBuf,
    /// SNIPS directory (train.tsv, test.tsv; a tenth of each intent's training utterances is
    /// held out for validation).
    #[arg(long, default_value = "data/snips")]
    snips: PathBuf,
    /// Output directory.
    #[arg(short, long, default_value = "report")]
    output: PathBuf,
    /// Epochs of the head on frozen embeddings.
    #[arg(long, default_value_t = 40)]
    head_epochs: usize,
    /// Epochs of fine-tuning encoder and head together.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Epochs of the recovery fine-tuning after pruning.
    #[arg(long, default_value_t = 2)]
    recovery_epochs: usize,
    /// Fraction of every FFN's channels pruned.
    #[arg(long, default_value_t = 0.5)]
    ffn_ratio: f64,
    /// Fraction of every layer's attention heads pruned before the FFN channels (0: none).
    #[arg(long, default_value_t = 0.25)]
    head_ratio: f64,
    /// Training utterances kept per label (0: all).
    #[arg(long, default_value_t = 0)]
    max_train_per_label: usize,
    /// Validation and test utterances kept per label (0: all).
    #[arg(long, default_value_t = 0)]
    max_eval_per_label: usize,
    /// Test utterances timed one at a time per model (0: all).
    #[arg(long, default_value_t = 0)]
    latency_samples: usize,
    /// A reduced run for CI and a quick look: 8 training and 2 test utterances per label, 8
    /// head epochs, 1 fine-tuning and 1 recovery epoch, 32 timed utterances (overrides those
    /// options). Its figures are not the full comparison's.
    #[arg(long)]
    reduced: bool,
    /// Power of one busy core in watts, for an energy estimate from CPU time where the machine
    /// has no readable RAPL counters (the report labels it an estimate).
    #[arg(long)]
    watts_per_core: Option<f64>,
    /// Keep the model files under OUTPUT/models (deleted once measured otherwise).
    #[arg(long)]
    keep_models: bool,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Seed of the training shuffles.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Vocabulary trimming keeps the training utterances' tokens and this many of the
    /// commonest other tokens (MiniLM's vocabulary lists them most frequent first).
    #[arg(long, default_value_t = 0)]
    keep_common_tokens: usize,
    /// Peak learning rate of the encoder in the quantization-aware fine-tuning (q5_0-qat; on
    /// HWU64 validation 3e-5 beat 1e-4: 94.98 against 94.42 %).
    #[arg(long, default_value_t = 3e-5)]
    qat_lr: f64,
    /// Peak learning rate of the head in that fine-tuning.
    #[arg(long, default_value_t = 5e-4)]
    qat_head_lr: f64,
    /// Decoder for the LLM path (`intent command` on HWU64's iot_* test utterances).
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    llm: PathBuf,
    /// Leave the LLM path out.
    #[arg(long)]
    no_llm: bool,
    /// iot_* test utterances given to the LLM (0: all; --reduced: 6).
    #[arg(long, default_value_t = 0)]
    llm_limit: usize,
}

pub fn main(a: Args) -> Result<()> {
    match a.command {
        Command::SmartHome(a) => smart_home(a),
    }
}

fn smart_home(a: SmartHomeArgs) -> Result<()> {
    edgellm_train::set_num_threads(a.threads);
    let mut o = SmartHomeOptions {
        encoder: a.encoder.clone(),
        datasets: vec![DatasetSpec::in_dir("hwu64", &a.hwu64), DatasetSpec::in_dir("snips", &a.snips)],
        out: a.output.clone(),
        train: IntentOptions {
            head_epochs: a.head_epochs,
            epochs: a.epochs,
            seed: a.seed,
            ..Default::default()
        },
        recovery_epochs: a.recovery_epochs,
        ffn_ratio: a.ffn_ratio,
        head_ratio: a.head_ratio,
        max_train_per_label: a.max_train_per_label,
        max_eval_per_label: a.max_eval_per_label,
        latency_samples: a.latency_samples,
        threads: a.threads,
        watts_per_core: a.watts_per_core,
        keep_models: a.keep_models,
        keep_common_tokens: a.keep_common_tokens,
        qat_lr: a.qat_lr,
        qat_head_lr: a.qat_head_lr,
    };
    if a.reduced {
        o.max_train_per_label = 8;
        o.max_eval_per_label = 2;
        o.train.head_epochs = 8;
        o.train.epochs = 1;
        o.recovery_epochs = 1;
        o.latency_samples = 32;
    }
    for d in &o.datasets {
        for p in [Some(&d.train), d.val.as_ref(), Some(&d.test)].into_iter().flatten() {
            anyhow::ensure!(p.is_file(), "{}: missing ({} data)", p.display(), d.name);
        }
    }
    if let Some(w) = a.watts_per_core {
        anyhow::ensure!(
            w.is_finite() && w > 0.0,
            "--watts-per-core must be a positive number of watts, got {w}"
        );
    }
    if !a.no_llm {
        anyhow::ensure!(
            a.llm.is_file(),
            "{}: missing (the LLM path's decoder; fetch it with scripts/fetch-models, give --llm, or --no-llm)",
            a.llm.display()
        );
    }
    let llm_limit = if a.reduced && a.llm_limit == 0 { 6 } else { a.llm_limit };
    let exe = std::env::current_exe().context("finding the edgellm executable to measure with")?;
    let mut measure = |r: &MeasureRequest| -> Result<Measurement, String> { measure_in_child(&exe, r) };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    // A log (not a terminal) gets plain lines, the training steps now and then.
    let to_terminal = std::io::stderr().is_terminal();
    let t0 = std::time::Instant::now();
    let line = |text: String| {
        if to_terminal {
            bar.println(text)
        } else {
            eprintln!("[{:>5.0} s] {text}", t0.elapsed().as_secs_f64())
        }
    };
    let mut progress = |p: Progress| match p {
        Progress::Step { dataset, what } => {
            bar.set_prefix(dataset.clone());
            bar.set_message(what.clone());
            bar.set_length(0);
            bar.set_position(0);
            line(format!("[{dataset}] {what}"));
        }
        Progress::Epoch(text) => line(format!("  {text}")),
        Progress::TrainStep(s, n) => {
            bar.set_length(n as u64);
            bar.set_position(s as u64);
            if !to_terminal && (s.is_multiple_of(50) || s == n) {
                line(format!("  fine-tuning step {s}/{n}"));
            }
        }
    };
    let result = run_smart_home(&o, &mut measure, &mut progress);
    let mut result = match result {
        Ok(r) => r,
        Err(e) => {
            bar.finish_and_clear();
            return Err(e.into());
        }
    };
    if !a.no_llm {
        progress(Progress::Step {
            dataset: "hwu64".into(),
            what: format!("the LLM path ({})", a.llm.display()),
        });
        let test = o.datasets[0].test.clone();
        let llm = measure_llm_in_child(&exe, &a.llm, &test, llm_limit, o.threads, o.watts_per_core);
        bar.finish_and_clear();
        result.llm = Some(llm.map_err(|why| anyhow::anyhow!("measuring the LLM path: {why}"))?);
    }
    bar.finish_and_clear();
    let files = write_report(&result, &o.out)?;
    for r in result.results.iter().filter(|r| r.dataset == "hwu64") {
        println!(
            "{:<12} {:>7.1} MiB  p50 {:>7.2} ms  p99 {:>7.2} ms  hwu64 {:>6.2} %",
            r.config,
            r.file_bytes as f64 / (1u64 << 20) as f64,
            r.p50(),
            r.p99(),
            100.0 * r.m.accuracy
        );
    }
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// Run a child `edgellm` that prints one JSON value; `what` names it in errors.
fn run_json(mut cmd: Process, what: &str) -> Result<serde_json::Value, String> {
    let out = cmd.output().map_err(|e| format!("running {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{what} printed no JSON: {e}"))
}

/// `edgellm intent command --data TEST --output-format json` in a child process.
fn measure_llm_in_child(
    exe: &std::path::Path,
    model: &std::path::Path,
    test: &std::path::Path,
    limit: usize,
    threads: usize,
    watts_per_core: Option<f64>,
) -> Result<LlmResult, String> {
    let mut cmd = Process::new(exe);
    cmd.args(["intent", "command", "-m"]).arg(model).arg("--data").arg(test).args([
        "--output-format",
        "json",
        "--limit",
        &limit.to_string(),
        "-t",
        &threads.to_string(),
    ]);
    if let Some(w) = watts_per_core {
        cmd.args(["--watts-per-core", &w.to_string()]);
    }
    let v = run_json(cmd, "intent command")?;
    let sc = &v["scores"];
    let f = |x: &serde_json::Value, k: &str| {
        x[k].as_f64().ok_or_else(|| format!("intent command JSON lacks {k}"))
    };
    Ok(LlmResult {
        model: model.display().to_string(),
        file_bytes: v["file_bytes"].as_u64().unwrap_or(0),
        n: sc["n"].as_u64().unwrap_or(0) as usize,
        complete: sc["complete"].as_u64().unwrap_or(0) as usize,
        action_accuracy: f(sc, "action_accuracy")?,
        device_accuracy: f(sc, "device_accuracy")?,
        both_accuracy: f(sc, "both_accuracy")?,
        latencies_ms: v["latencies_ms"]
            .as_array()
            .ok_or("intent command JSON lacks latencies_ms")?
            .iter()
            .filter_map(|x| x.as_f64())
            .collect(),
        generated_tokens_per_command: f(&v, "generated_tokens_per_command")?,
        peak_rss_bytes: v["peak_rss_bytes"].as_u64(),
        joules_per_command: v["energy"]["joules_per_command"].as_f64(),
        energy_source: v["energy"]["label"].as_str().map(String::from),
        kernel_tier: v["kernel_tier"].as_str().unwrap_or("").to_string(),
    })
}

/// `edgellm intent eval --output-format json` on the request, in a child process (so that its
/// peak memory is the model's alone); the scalar baseline runs with `EDGELLM_KERNELS=scalar`.
fn measure_in_child(exe: &std::path::Path, r: &MeasureRequest) -> Result<Measurement, String> {
    let mut cmd = Process::new(exe);
    cmd.arg("intent")
        .arg("eval")
        .arg("-m")
        .arg(&r.model)
        .arg("--data")
        .arg(&r.data)
        .args(["--output-format", "json", "--confusions", "0"])
        .args(["--latency-samples", &r.latency_samples.to_string()])
        .args(["-t", &r.threads.to_string()]);
    if let Some(w) = r.watts_per_core {
        cmd.args(["--watts-per-core", &w.to_string()]);
    }
    if r.scalar_kernels {
        cmd.env("EDGELLM_KERNELS", "scalar");
    }
    let v = run_json(cmd, "intent eval")?;
    let f = |k: &str| v[k].as_f64().ok_or_else(|| format!("intent eval JSON lacks {k}"));
    Ok(Measurement {
        accuracy: f("accuracy")?,
        macro_f1: f("macro_f1")?,
        n: v["n"].as_u64().unwrap_or(0) as usize,
        latencies_ms: v["latencies_ms"]
            .as_array()
            .ok_or("intent eval JSON lacks latencies_ms")?
            .iter()
            .filter_map(|x| x.as_f64())
            .collect(),
        utterances_per_s: f("batched_utterances_per_s")?,
        peak_rss_bytes: v["peak_rss_bytes"].as_u64(),
        joules_per_utterance: v["energy"]["joules_per_utterance"].as_f64(),
        energy_source: v["energy"]["label"].as_str().map(String::from),
        kernel_tier: v["kernel_tier"].as_str().unwrap_or("").to_string(),
    })
}
