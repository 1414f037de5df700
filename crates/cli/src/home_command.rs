//! `edgellm intent command`: smart-home commands as `{"device", "action", "value"}` JSON from a
//! decoder under a schema ([`edgellm::home`]), for one-off commands or measured on a labelled
//! file (HWU64's `iot_*` utterances).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use edgellm::home::CommandParser;
use edgellm::{Engine, EngineOptions};
use edgellm_eval::energy::EnergyMeter;
use edgellm_eval::home::{hwu64_expected, CommandScore};
use edgellm_eval::intent::{quantile, read_intent_tsv};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::OutputFormat;

/// Arguments of `edgellm intent command`.
#[derive(clap::Args)]
pub struct CommandArgs {
    /// Decoder: a `llama` or `gemma3` GGUF (e.g. models/SmolLM2-135M-Instruct.Q4_1.gguf).
    #[arg(short, long)]
    model: PathBuf,
    /// Commands to parse (none and no --data: one per line of standard input).
    texts: Vec<String>,
    /// Labelled utterances (`text<TAB>label`) to measure on: the utterances whose label maps to
    /// a device and action (HWU64's `iot_*`) are parsed and scored; others are skipped.
    #[arg(long, conflicts_with = "texts")]
    data: Option<PathBuf>,
    /// With --data: score at most this many utterances (0: all), in file order.
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Power of one busy core in watts, for an energy estimate (CPU time × this) where the
    /// machine has no readable RAPL counters; RAPL, where readable, is used instead.
    #[arg(long)]
    watts_per_core: Option<f64>,
    /// Mistakes listed (text output of --data).
    #[arg(long, default_value_t = 10)]
    mistakes: usize,
    /// Output format.
    #[arg(long = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

/// Run `edgellm intent command`.
pub fn command(a: CommandArgs) -> Result<()> {
    if let Some(w) = a.watts_per_core {
        anyhow::ensure!(
            w.is_finite() && w > 0.0,
            "--watts-per-core must be a positive number of watts, got {w}"
        );
    }
    let engine = Engine::load(&a.model, EngineOptions { threads: Some(a.threads), ..Default::default() })?;
    let mut parser = CommandParser::new(&engine)?;
    match &a.data {
        Some(data) => measure(&a, data, &mut parser),
        None => {
            let texts = if a.texts.is_empty() {
                edgellm_runtime::embed::read_lines(std::io::stdin().lock())?
            } else {
                a.texts.clone()
            };
            for t in &texts {
                let t0 = Instant::now();
                let p = parser.parse(t)?;
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                match a.format {
                    OutputFormat::Json => {
                        let c = p.command.as_ref();
                        println!(
                            "{}",
                            json!({"text": t, "device": c.map(|c| &c.device), "action": c.map(|c| &c.action),
                                   "value": c.and_then(|c| c.value.as_ref()), "complete": c.is_some(),
                                   "output": p.completion.text, "ms": ms})
                        );
                    }
                    OutputFormat::Text => match &p.command {
                        Some(c) => println!(
                            "{}\t{}\t{}\t{:.0} ms\t{}",
                            c.device,
                            c.action,
                            c.value.as_deref().unwrap_or("-"),
                            ms,
                            t
                        ),
                        None => println!("(incomplete: {})\t{:.0} ms\t{}", p.completion.text, ms, t),
                    },
                }
            }
            Ok(())
        }
    }
}

fn measure(a: &CommandArgs, data: &Path, parser: &mut CommandParser<'_>) -> Result<()> {
    let examples = read_intent_tsv(data)?;
    let mut scored: Vec<_> = examples.iter().filter(|e| hwu64_expected(&e.label).is_some()).collect();
    anyhow::ensure!(
        !scored.is_empty(),
        "{}: no utterance has a label with an expected device and action (HWU64 iot_* labels)",
        data.display()
    );
    if a.limit > 0 {
        scored.truncate(a.limit);
    }
    // Warm-up: the system message and examples go into the cache (not timed).
    parser.parse(edgellm::home::EXAMPLES[0].0).context("warm-up command")?;

    let bar = ProgressBar::new(scored.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} commands [{bar:30}] {pos}/{len}, {elapsed} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut score = CommandScore::default();
    let mut ms = Vec::with_capacity(scored.len());
    let (mut gen_tokens, mut eval_tokens) = (0usize, 0usize);
    let mut rows = Vec::with_capacity(scored.len());
    let meter = EnergyMeter::start();
    for e in &scored {
        let t0 = Instant::now();
        let p = parser.parse(&e.text)?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let got = p.command.as_ref().map(|c| (c.device.as_str(), c.action.as_str()));
        score.add(&e.label, got);
        gen_tokens += p.completion.ids.len();
        eval_tokens += p.completion.prompt_tokens - p.completion.cached_tokens;
        rows.push((e, p));
        bar.inc(1);
    }
    let reading = meter.stop();
    bar.finish_and_clear();
    let energy = reading.energy(a.watts_per_core);
    let n = scored.len() as f64;
    let (p50, p99) = (quantile(&ms, 0.5), quantile(&ms, 0.99));
    let mean = ms.iter().sum::<f64>() / n;
    let s = &score.all;
    let info = parser.engine().info();
    let wrong = |(e, p): &&(&&edgellm_eval::intent::IntentExample, edgellm::home::ParsedCommand)| {
        let x = hwu64_expected(&e.label).expect("scored labels have an expectation");
        p.command.as_ref().is_none_or(|c| c.device != x.device || !x.actions.contains(&c.action.as_str()))
    };
    match a.format {
        OutputFormat::Json => {
            let counts = |c: &edgellm_eval::home::CommandCounts| {
                json!({"n": c.n, "complete": c.valid, "device_right": c.device, "action_right": c.action, "both_right": c.both,
                       "device_accuracy": c.rate(c.device), "action_accuracy": c.rate(c.action), "both_accuracy": c.rate(c.both)})
            };
            let out = json!({
                "model": a.model,
                "data": a.data,
                "kernel_tier": info.kernel_tier,
                "threads": edgellm_core::parallel::num_threads(),
                "file_bytes": info.file_bytes,
                "scores": counts(s),
                "per_label": score.per_label.iter().map(|(l, c)| json!({"label": l, "scores": counts(c)})).collect::<Vec<_>>(),
                "latency_ms": {"p50": p50, "p99": p99, "mean": mean, "samples": ms.len()},
                "latencies_ms": ms,
                "generated_tokens_per_command": gen_tokens as f64 / n,
                "prompt_tokens_evaluated_per_command": eval_tokens as f64 / n,
                "energy": energy.as_ref().map(|e| json!({"joules_per_command": e.joules / n, "source": e.source, "label": e.source.label()})),
                "cpu_seconds": reading.cpu_seconds,
                "peak_rss_bytes": edgellm_runtime::memory::peak_rss_bytes(),
                "results": rows.iter().map(|(e, p)| json!({"text": e.text, "label": e.label,
                    "device": p.command.as_ref().map(|c| &c.device), "action": p.command.as_ref().map(|c| &c.action),
                    "value": p.command.as_ref().and_then(|c| c.value.as_ref()), "output": p.completion.text})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Text => {
            println!("model: {} ({} kernels)", a.model.display(), info.kernel_tier);
            println!("data:  {} ({} utterances scored)", data.display(), s.n);
            let pct = |c: usize| 100.0 * s.rate(c);
            println!("action right {:6.2} %  ({} / {})", pct(s.action), s.action, s.n);
            println!("device right {:6.2} %  ({} / {})", pct(s.device), s.device, s.n);
            println!("both right   {:6.2} %  ({} / {})", pct(s.both), s.both, s.n);
            println!("complete     {:6.2} %  ({} / {})", pct(s.valid), s.valid, s.n);
            println!(
                "latency per command: p50 {:.0} ms, p99 {:.0} ms, mean {:.0} ms ({:.1} tokens generated, {:.1} prompt tokens evaluated per command)",
                p50,
                p99,
                mean,
                gen_tokens as f64 / n,
                eval_tokens as f64 / n
            );
            if let Some(e) = &energy {
                println!("energy per command: {:.1} mJ ({})", 1e3 * e.joules / n, e.source.label());
            }
            println!("per label:           n  action  device    both");
            for (l, c) in &score.per_label {
                println!(
                    "  {:<18}{:>3} {:>6.1}% {:>6.1}% {:>6.1}%",
                    l,
                    c.n,
                    100.0 * c.rate(c.action),
                    100.0 * c.rate(c.device),
                    100.0 * c.rate(c.both)
                );
            }
            let mistakes: Vec<_> = rows.iter().filter(wrong).take(a.mistakes).collect();
            if !mistakes.is_empty() {
                println!("mistakes (label: output  <- utterance):");
                for (e, p) in mistakes {
                    println!("  {}: {}  <- {}", e.label, p.completion.text, e.text);
                }
            }
        }
    }
    Ok(())
}
