//! `edgellm prune`: set weights to zero (magnitude, Wanda, SparseGPT; unstructured or N:M),
//! write a standard GGUF with the zeros stored densely (or, with `--format sparse`, in edgellm's
//! sparse tensor types), optionally quantize it after.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use edgellm_compress::prune::{PruneMethod, PruneProgress, Sparsity, DAMP};
use edgellm_compress::recipe::{run_recipe, CalibTokens, PruneStep, Recipe, RecipeProgress};
use edgellm_compress::sparse::StorageFormat;
use edgellm_compress::structured::Structure;
use edgellm_compress::{Method, Scheme};
use edgellm_runtime::calib_text::{decoder_chunks, encoder_sentences};
use edgellm_runtime::memory::human_bytes;
use indicatif::{ProgressBar, ProgressStyle};

use crate::calib_args::existing;

/// Arguments of `edgellm prune`.
#[derive(clap::Args)]
pub struct Args {
    /// Input model: a llama or gemma3 GGUF, a bert GGUF, or a sentence-transformers directory.
    input: PathBuf,
    /// Output GGUF file.
    output: PathBuf,
    /// How weights are chosen: magnitude (smallest |w| per row), wanda (smallest |w|·‖x‖ per
    /// row; needs --calib), sparsegpt (optimal selection with weight update; needs --calib).
    #[arg(long, required_unless_present = "structured", conflicts_with = "structured")]
    method: Option<String>,
    /// Fraction of every row's weights to remove, in [0, 1).
    #[arg(long, conflicts_with_all = ["pattern", "structured"], required_unless_present_any = ["pattern", "structured"])]
    sparsity: Option<f64>,
    /// N:M semi-structured pattern: N non-zeros in every M consecutive inputs (2:4, 4:8).
    #[arg(long, conflicts_with = "structured")]
    pattern: Option<String>,
    /// Structured pruning to a smaller dense model: remove FFN channels, query heads or whole
    /// blocks, the least important on --calib first (needs --ratio). BERT encoders: ffn and
    /// heads (a head-pruned BERT runs in edgellm; llama.cpp's loader does not take it).
    #[arg(long, value_name = "heads|ffn|layers", requires = "ratio")]
    structured: Option<String>,
    /// Fraction of the FFN channels, heads (per key/value group) or blocks to remove.
    #[arg(long, requires = "structured")]
    ratio: Option<f64>,
    /// Calibration text (wanda, sparsegpt): e.g. data/wikitext-2/wiki.valid.tokens — never the
    /// evaluation text.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Tokens per calibration chunk (decoders).
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    ctx: usize,
    /// Calibration chunks (decoders; 0 = all the text gives) or sentences/8 (encoders).
    #[arg(long, default_value_t = 32)]
    chunks: usize,
    /// Leave tensors dense: a glob over whole tensor names ('blk.0.*'); repeatable.
    #[arg(long = "keep", value_name = "PATTERN")]
    keep: Vec<String>,
    /// SparseGPT damping: the fraction of H's mean diagonal added to its diagonal.
    #[arg(long, default_value_t = DAMP)]
    damp: f64,
    /// Quantize the pruned model to this type or mix afterwards (see `edgellm quantize`).
    #[arg(long, value_name = "TYPE")]
    then_quantize: Option<String>,
    /// How pruned tensors are stored: dense (zeros stored as zeros; a standard GGUF llama.cpp
    /// loads) or sparse (edgellm's sparse types, docs/sparse-gguf.md: 2:4 / 4:8 with the 4- or
    /// 8-bit values of --then-quantize, unstructured as an 8-bit bitmap type with Q8_0).
    #[arg(long, default_value = "dense", value_name = "dense|sparse")]
    format: String,
    /// Rounding method of --then-quantize: rtn, weighted or awq (statistics from --calib,
    /// collected on the pruned model).
    #[arg(long, default_value = "rtn")]
    quant_method: String,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Print one line per pruned tensor.
    #[arg(short, long)]
    verbose: bool,
}

/// Run `edgellm prune`.
pub fn main(a: Args) -> Result<()> {
    edgellm_core::parallel::set_num_threads(a.threads);
    let structured = a.structured.is_some();
    let method = match &a.method {
        Some(m) => PruneMethod::parse(m)?,
        None if structured => PruneMethod::Wanda,
        None => anyhow::bail!("give --method magnitude|wanda|sparsegpt"),
    };
    let sparsity = match (&a.pattern, a.sparsity) {
        (Some(p), _) => Sparsity::parse_pattern(p)?,
        (None, Some(s)) => Sparsity::unstructured(s)?,
        (None, None) if structured => Sparsity::Unstructured(0.0),
        (None, None) => anyhow::bail!("give --sparsity S or --pattern N:M"),
    };
    anyhow::ensure!(a.damp.is_finite() && a.damp >= 0.0, "--damp must be a fraction >= 0 (default {DAMP})");
    anyhow::ensure!(a.ctx >= 16, "--ctx must be at least 16 tokens");
    let then = a.then_quantize.as_deref().map(Scheme::parse).transpose()?;
    let qmethod = Method::parse(&a.quant_method)?;
    anyhow::ensure!(
        matches!(qmethod, Method::Rtn | Method::Weighted | Method::Awq),
        "--quant-method must be rtn, weighted or awq"
    );
    existing(&a.input, "input model")?;
    if let Some(p) = &a.calib {
        existing(p, "calibration text")?;
    }
    anyhow::ensure!(
        !(method.needs_calibration() || structured) || a.calib.is_some(),
        "--method {method} needs --calib TEXT (calibration text, e.g. data/wikitext-2/wiki.valid.tokens)"
    );
    anyhow::ensure!(
        qmethod != Method::Awq || a.calib.is_some(),
        "--quant-method awq needs --calib TEXT (calibration text, e.g. data/wikitext-2/wiki.valid.tokens)"
    );
    let t0 = Instant::now();

    let opened = crate::calib_args::OpenedModel::open(&a.input)
        .with_context(|| format!("reading {}", a.input.display()))?;
    let f = opened.gguf();
    let src = opened.source();
    let arch = src.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
    anyhow::ensure!(
        matches!(arch.as_str(), "llama" | "gemma3" | "bert"),
        "architecture {arch:?} cannot be pruned (supported: llama, gemma3, bert)"
    );
    let format = StorageFormat::parse(&a.format)?;
    let mut recipe = Recipe { quantize: then.map(|s| (s, qmethod)), format, ..Recipe::default() };
    if structured {
        let what = Structure::parse(a.structured.as_deref().unwrap_or_default())?;
        let ratio = a.ratio.context("--structured needs --ratio R")?;
        anyhow::ensure!(
            ratio > 0.0 && ratio < 1.0,
            "--ratio {ratio} is outside (0, 1): give the fraction to remove, e.g. 0.25"
        );
        recipe.structured = Some((what, ratio));
    } else {
        recipe.prune = Some(PruneStep { method, sparsity, keep: a.keep.clone(), damp: a.damp });
    }
    // Calibration tokens: what pruning (or quantizing after it) calibrates on.
    // Refuse a bad combination before any calibration work.
    if format == StorageFormat::Sparse {
        let mut check = recipe.clone();
        check.prune = check.prune.map(|p| PruneStep { method: PruneMethod::Magnitude, ..p });
        check.validate(&CalibTokens::None)?;
    }
    let wants_calib =
        recipe.needs_calibration() || (qmethod != Method::Rtn && then.is_some() && arch != "bert");
    let calib = match (&a.calib, wants_calib) {
        (Some(text), true) if arch == "bert" => {
            let seqs = encoder_sentences(&a.input, text, a.chunks.max(1) * 8)?;
            eprintln!("calibrating on {}: {} sentences", text.display(), seqs.len());
            CalibTokens::Encoder(seqs)
        }
        (Some(text), true) => {
            let f = f.context("calibration needs a GGUF language model")?;
            let d = decoder_chunks(f, text, a.ctx, a.chunks)?;
            eprintln!("calibrating on {}: {} chunks of {} tokens", text.display(), d.chunks.len(), a.ctx);
            CalibTokens::Decoder(d.chunks)
        }
        _ => CalibTokens::None,
    };

    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("pruning");
    let verbose = a.verbose;
    let report = run_recipe(&src, f, &recipe, &calib, &a.output, &mut |p| match p {
        RecipeProgress::Prune(PruneProgress::Block { l, n }) => {
            bar.set_length(n as u64);
            bar.set_position(l as u64);
            bar.set_message(format!("block {l}: calibrating"));
        }
        RecipeProgress::Prune(PruneProgress::Tensor(r)) => {
            bar.set_message(r.name.clone());
            if verbose {
                bar.println(format!(
                    "{:<28} {:<16} zeros {:>9} -> {:>9} ({:.1} %)",
                    r.name,
                    format!("{:?}", r.dims),
                    r.zeros_before,
                    r.zeros_after,
                    100.0 * r.zeros_after as f64 / r.elements.max(1) as f64
                ));
            }
        }
        RecipeProgress::Ranking => bar.set_message("ranking on the calibration text"),
        RecipeProgress::Calibrating { done, total } => {
            bar.set_prefix("calibrating the pruned model");
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        RecipeProgress::Quantizing { done, total } => {
            bar.set_prefix("quantizing");
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        RecipeProgress::Writing => bar.set_message(format!("writing {}", a.output.display())),
    });
    bar.finish_and_clear();
    let report = report.with_context(|| format!("pruning {}", a.input.display()))?;
    let fout = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    if let Some(p) = report.pruned {
        println!("{} -> {} ({method}, {sparsity})", a.input.display(), a.output.display());
        println!(
            "  {} tensors pruned: {} of {} weights zero ({:.2} %), pruned in {:.1} s",
            p.tensors,
            p.zeros,
            p.elements,
            100.0 * p.zeros as f64 / p.elements.max(1) as f64,
            report.prune_seconds
        );
    }
    if let (Some((shape, sel)), Some((what, ratio))) = (&report.structured, recipe.structured) {
        println!(
            "{} -> {} (structured {}, ratio {ratio})",
            a.input.display(),
            a.output.display(),
            what.name()
        );
        let kept = (
            sel.ffn.first().map_or(0, |v| v.len()),
            sel.heads.first().map_or(0, |v| v.len()),
            sel.layers.len(),
        );
        println!(
            "  FFN channels {} -> {}, heads {} -> {}, blocks {} -> {}",
            shape.n_ff, kept.0, shape.n_head, kept.1, shape.n_layer, kept.2
        );
        if what == Structure::Layers {
            let removed: Vec<String> = (0..shape.n_layer)
                .filter(|l| !sel.layers.contains(l))
                .map(|l| format!("{l} ({:.4})", report.block_influence.get(l).copied().unwrap_or(f64::NAN)))
                .collect();
            println!("  removed blocks (influence): {}", removed.join(", "));
        }
    }
    if let Some(s) = then {
        println!("  then quantized to {s} ({qmethod})");
    }
    if !report.sparse.is_empty() {
        let mut by: std::collections::BTreeMap<String, (usize, u64, u64)> = Default::default();
        for r in &report.sparse {
            let e = by.entry(format!("{} -> {}", r.from, r.to)).or_default();
            e.0 += 1;
            e.1 += r.bytes_dense;
            e.2 += r.bytes_sparse;
        }
        for (what, (n, d, sp)) in by {
            println!(
                "  stored sparse: {n} tensors {what}: {} -> {} ({:.2}x smaller)",
                human_bytes(d),
                human_bytes(sp),
                d as f64 / sp.max(1) as f64
            );
        }
    }
    println!("  file {}  ({:.1} s in all)", human_bytes(fout), t0.elapsed().as_secs_f64());
    Ok(())
}
