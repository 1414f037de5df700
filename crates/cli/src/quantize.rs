//! `edgellm quantize`: rewrite a model's weights in another type or mix, as standard GGUF.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use edgellm_compress::plan::Reason;
use edgellm_compress::{quantize_model, AwqParams, Importance, KeepRule, Method, QuantizeOptions, Scheme};
use edgellm_formats::Imatrix;
use edgellm_runtime::memory::human_bytes;
use indicatif::{ProgressBar, ProgressStyle};

use crate::calib_args::{existing, is_safetensors, run_calibration, ChunkArgs, OpenedModel};

/// Arguments of `edgellm quantize`.
#[derive(clap::Args)]
#[command(after_help = schemes_help())]
pub struct Args {
    /// Input model: GGUF of any supported type (quantized tensors are dequantized first).
    input: PathBuf,
    /// Output GGUF file.
    output: PathBuf,
    /// Target type or mix (see the list below).
    #[arg(long = "type")]
    scheme: String,
    /// Rounding method: rtn (llama-quantize's reference rounding), weighted (importance-weighted
    /// scale search; uses --imatrix or --calib when given), awq (activation-aware input scaling
    /// folded into the model, then weighted; needs --calib), gptq (error compensation; needs --calib).
    #[arg(long, default_value = "rtn")]
    method: String,
    /// Importance matrix (ours or llama-imatrix's, GGUF or legacy .dat) for --method weighted.
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Calibration text to collect statistics from on the input model (weighted, gptq).
    #[arg(long)]
    calib: Option<PathBuf>,
    #[command(flatten)]
    chunks: ChunkArgs,
    /// GPTQ damping: the fraction of H's mean diagonal added to its diagonal (GPTQ's percdamp).
    #[arg(long, default_value_t = edgellm_compress::gptq::DAMP)]
    damp: f64,
    /// Override a tensor's type: PATTERN=TYPE, PATTERN a glob over whole tensor names
    /// ('blk.*.attn_v.weight=Q8_0'); repeatable, first match wins.
    #[arg(long = "keep", value_name = "PATTERN=TYPE")]
    keep: Vec<String>,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Print one line per tensor.
    #[arg(short, long)]
    verbose: bool,
}

fn schemes_help() -> String {
    let mut s = String::from("Types and what each keeps at higher precision:\n");
    for t in Scheme::ALL {
        s.push_str(&format!("  {:<7} {}\n", t.name(), t.rules()));
    }
    s.push_str(
        "Row lengths that a type's block does not divide fall back as llama-quantize does \
                (Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0, Q2_K/Q3_K->Q4_0).",
    );
    s
}

/// Run `edgellm quantize`.
pub fn main(a: Args) -> Result<()> {
    edgellm_core::parallel::set_num_threads(a.threads);
    let scheme = Scheme::parse(&a.scheme)?;
    let method = Method::parse(&a.method)?;
    anyhow::ensure!(
        a.damp.is_finite() && a.damp >= 0.0,
        "--damp must be a fraction >= 0 (GPTQ's default is 0.01)"
    );
    let keeps = a.keep.iter().map(|k| KeepRule::parse(k)).collect::<Result<Vec<_>, _>>()?;
    existing(&a.input, "input model")?;
    if let Some(p) = &a.imatrix {
        existing(p, "importance matrix")?;
    }
    if let Some(p) = &a.calib {
        existing(p, "calibration text")?;
    }
    anyhow::ensure!(
        !matches!(method, Method::Gptq | Method::Awq) || a.calib.is_some(),
        "--method {method} needs --calib TEXT (calibration text, e.g. data/wikitext-2/wiki.valid.tokens)"
    );
    let t0 = Instant::now();
    // A sentence-transformers directory (or its model.safetensors) goes through the BERT
    // exporter: llama.cpp's `bert` GGUF layout with F32 tensors, then the same quantizer.
    let safetensors = is_safetensors(&a.input);
    anyhow::ensure!(
        !safetensors || a.calib.is_none(),
        "--calib runs a language model; for a safetensors encoder use --method rtn or --method \
         weighted without calibration"
    );
    let opened = OpenedModel::open(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let f = opened.gguf();
    let src = opened.source();

    let mut importance = None;
    if let Some(p) = &a.imatrix {
        let m = Imatrix::read(p).with_context(|| format!("reading importance matrix {}", p.display()))?;
        eprintln!("importance matrix {}: {} weights, {} chunks", p.display(), m.entries.len(), m.chunk_count);
        importance = Some(Importance::from_imatrix(&m));
    }
    let mut calibration = None;
    if let (Some(text), Method::Weighted | Method::Gptq | Method::Awq) = (&a.calib, method) {
        let f = f.context("calibration needs a GGUF language model")?;
        let cal = run_calibration(f, text, &a.chunks, method == Method::Gptq, method == Method::Awq)?;
        if importance.is_none() {
            importance = Some(Importance::from_imatrix(&cal.imatrix));
        }
        calibration = Some(cal);
    }
    if method == Method::Weighted && importance.is_none() {
        eprintln!(
            "note: --method weighted without --imatrix or --calib minimizes plain squared weight error"
        );
    }
    if method == Method::Rtn && (importance.is_some() || a.calib.is_some()) {
        eprintln!(
            "note: --method rtn ignores the importance matrix except for the mix rules that depend on one"
        );
    }

    let bar = ProgressBar::new(src.tensors.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} quantizing [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let alphas = edgellm_compress::awq::default_alphas();
    let opts = QuantizeOptions {
        scheme: Some(scheme),
        keeps: &keeps,
        method,
        importance: importance.as_ref(),
        grams: calibration.as_ref().map(|c| c as &dyn edgellm_compress::GramSource),
        awq: calibration.as_ref().map(|c| AwqParams { stats: &c.awq, alphas: &alphas }),
        gptq_damp: Some(a.damp),
    };
    let verbose = a.verbose;
    let q = quantize_model(&src, &opts, &mut |done, _, r| {
        bar.set_position(done as u64);
        bar.set_message(format!("{} -> {}", r.name, r.to));
        if verbose {
            bar.println(format!(
                "{:<28} {:<16} {:>5} -> {:<5} {:>10} -> {:>10}  {}",
                r.name,
                format!("{:?}", r.dims),
                r.from.name(),
                r.to.name(),
                r.bytes_in,
                r.bytes_out,
                reason_text(&r.reason)
            ));
        }
    })?;
    bar.finish_and_clear();
    q.writer.write_file(&a.output).with_context(|| format!("writing {}", a.output.display()))?;

    let (bin, bout, params) = q.totals();
    let fin = edgellm_eval::sweep::model_bytes(&a.input);
    let fout = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    let mut by_type: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
    for r in &q.report {
        let e = by_type.entry(r.to.name()).or_default();
        e.0 += 1;
        e.1 += r.n_elements();
        e.2 += r.bytes_out;
    }
    let fallbacks = q.report.iter().filter(|r| matches!(r.reason, Reason::Fallback { .. })).count();
    let with_imp = q.report.iter().filter(|r| r.used_importance).count();
    println!("{} -> {} ({scheme}, method {method})", a.input.display(), a.output.display());
    for (ty, (n, el, by)) in &by_type {
        println!(
            "  {ty:<6} {n:>5} tensors {el:>12} params {:>10}  {:.2} bits/weight",
            human_bytes(*by),
            *by as f64 * 8.0 / *el as f64
        );
    }
    let bpw = |b: u64| b as f64 * 8.0 / params.max(1) as f64;
    println!(
        "  size: file {} -> {}, weights {} ({:.2} bpw) -> {} ({:.2} bpw)",
        human_bytes(fin),
        human_bytes(fout),
        human_bytes(bin),
        bpw(bin),
        human_bytes(bout),
        bpw(bout)
    );
    if fallbacks > 0 {
        println!("  {fallbacks} tensors fell back to a 32-block type (row length not a multiple of 256)");
    }
    if method != Method::Rtn {
        println!("  {with_imp} tensors quantized with calibration statistics");
    }
    if !q.awq.is_empty() {
        let scaled = q.awq.iter().filter(|c| c.alpha != 0.0).count();
        let mean_alpha = q.awq.iter().map(|c| c.alpha as f64).sum::<f64>() / q.awq.len() as f64;
        let (e0, e1) = q.awq.iter().fold((0.0, 0.0), |a, c| (a.0 + c.err_unscaled, a.1 + c.err_chosen));
        println!(
            "  awq: {scaled} of {} groups scaled, mean alpha {mean_alpha:.2}; sampled output error {:.1} % of unscaled",
            q.awq.len(),
            100.0 * e1 / e0.max(f64::MIN_POSITIVE)
        );
        if verbose {
            for c in &q.awq {
                println!(
                    "    {:<28} alpha {:.2}  error {:.4e} -> {:.4e}",
                    c.group, c.alpha, c.err_unscaled, c.err_chosen
                );
            }
        }
    }
    println!("  {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

fn reason_text(r: &Reason) -> String {
    match r {
        Reason::Kept => "kept".into(),
        Reason::Base => String::new(),
        Reason::Rule(s) => format!("rule: {s}"),
        Reason::Keep(p) => format!("--keep {p}"),
        Reason::Fallback { wanted } => format!("fallback from {wanted}"),
    }
}
