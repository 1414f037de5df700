//! `edgellm prune`: set weights to zero (magnitude, Wanda, SparseGPT; unstructured or N:M),
//! write a standard GGUF with the zeros stored densely, optionally quantize it after.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use edgellm_compress::prune::{
    prune_decoder, prune_encoder, prune_static, pruned_writer, PruneMethod, PruneOptions, PruneProgress,
    Pruned, Sparsity, DAMP,
};
use edgellm_compress::structured::{
    apply, select, structure_stats, structure_stats_encoder, Shape, Structure,
};
use edgellm_compress::{
    quantize_model, AwqParams, Importance, KeepRule, Method, ModelSource, QuantizeOptions, Scheme,
};
use edgellm_formats::GgufFile;
use edgellm_runtime::memory::human_bytes;
use indicatif::{ProgressBar, ProgressStyle};

use crate::calib_args::{existing, run_calibration, ChunkArgs};

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
    /// blocks, the least important on --calib first (needs --ratio).
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

/// Sentences of a calibration text for an encoder: paragraphs split at sentence ends, headings
/// and short fragments skipped, at most `max`.
fn sentences(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('=') {
            continue;
        }
        for s in line.split(" . ") {
            let s = s.trim();
            if s.split_whitespace().count() >= 6 {
                out.push(format!("{s} ."));
                if out.len() == max {
                    return out;
                }
            }
        }
    }
    out
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

    let opened = crate::calib_args::OpenedModel::open(&a.input)?;
    let f = opened.gguf();
    let src = opened.source();
    let arch = src.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
    anyhow::ensure!(
        matches!(arch.as_str(), "llama" | "gemma3" | "bert"),
        "architecture {arch:?} cannot be pruned (supported: llama, gemma3, bert)"
    );
    if structured {
        return structured_main(&a, f, &src, &arch, t0);
    }
    let opts = PruneOptions { method, sparsity, keep: &a.keep, damp: a.damp };

    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} pruning [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let verbose = a.verbose;
    let mut on_progress = |p: PruneProgress| match p {
        PruneProgress::Block { l, n } => {
            bar.set_length(n as u64);
            bar.set_position(l as u64);
            bar.set_message(format!("block {l}: calibrating"));
        }
        PruneProgress::Tensor(r) => {
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
    };
    let pruned: Pruned = match (method.needs_calibration(), arch.as_str()) {
        (false, _) => prune_static(&src, &opts, &mut on_progress)?,
        (true, "bert") => {
            let text = a.calib.as_ref().context("--calib is required")?;
            let seqs = encoder_calibration(&a.input, text, a.chunks.max(1) * 8)?;
            eprintln!("calibrating on {}: {} sentences", text.display(), seqs.len());
            prune_encoder(&src, &seqs, &opts, &mut on_progress)?
        }
        (true, _) => {
            let f = f.context("calibration needs a GGUF language model")?;
            let text = a.calib.as_ref().context("--calib is required")?;
            let chunks = decoder_calibration(f, text, a.ctx, a.chunks)?;
            let mut model = edgellm_models::load_gguf(f).context("loading the model for calibration")?;
            prune_decoder(model.as_mut(), &src, &chunks, &opts, &mut on_progress)?
        }
    };
    bar.finish_and_clear();
    let (elements, zeros) = pruned.totals();
    let writer = pruned_writer(&src, &pruned, Some((&opts, elements, zeros)))?;
    let t_prune = t0.elapsed().as_secs_f64();

    match then {
        None => writer.write_file(&a.output).with_context(|| format!("writing {}", a.output.display()))?,
        Some(scheme) => quantize_after(&a, writer, scheme, qmethod, &arch)?,
    }
    let fout = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    println!("{} -> {} ({method}, {sparsity})", a.input.display(), a.output.display());
    println!(
        "  {} tensors pruned: {} of {} weights zero ({:.2} %), pruned in {:.1} s",
        pruned.report.len(),
        zeros,
        elements,
        100.0 * zeros as f64 / elements.max(1) as f64,
        t_prune
    );
    if let Some(s) = then {
        println!("  then quantized to {s} ({qmethod})");
    }
    println!("  file {}  ({:.1} s in all)", human_bytes(fout), t0.elapsed().as_secs_f64());
    Ok(())
}

/// `edgellm prune --structured`: rank, remove, write a smaller dense model.
fn structured_main(a: &Args, f: Option<&GgufFile>, src: &ModelSource, arch: &str, t0: Instant) -> Result<()> {
    let what = Structure::parse(a.structured.as_deref().unwrap_or_default())?;
    let ratio = a.ratio.context("--structured needs --ratio R")?;
    anyhow::ensure!(
        ratio > 0.0 && ratio < 1.0,
        "--ratio {ratio} is outside (0, 1): give the fraction to remove, e.g. 0.25"
    );
    let text = a.calib.as_ref().context("--structured needs --calib TEXT")?;
    let then = a.then_quantize.as_deref().map(Scheme::parse).transpose()?;
    let qmethod = Method::parse(&a.quant_method)?;
    let shape = Shape::of(src)?;
    let stats = match (arch, f) {
        ("bert", _) => {
            let seqs = encoder_calibration(&a.input, text, a.chunks.max(1) * 8)?;
            eprintln!("calibrating on {}: {} sentences", text.display(), seqs.len());
            structure_stats_encoder(src, &seqs)?
        }
        (_, Some(f)) => {
            let chunks = decoder_calibration(f, text, a.ctx, a.chunks)?;
            let model = edgellm_models::load_gguf(f).context("loading the model for calibration")?;
            structure_stats(model.as_ref(), &chunks)?
        }
        (_, None) => anyhow::bail!("--structured needs a GGUF decoder or a bert encoder"),
    };
    let sel = select(src, &stats, what, ratio)?;
    let out = apply(src, &sel, false)?;
    let mut w = out.to_writer()?;
    w.set("edgellm.pruning.structured", edgellm_formats::Value::String(format!("{} {ratio}", what.name())));
    match then {
        None => w.write_file(&a.output).with_context(|| format!("writing {}", a.output.display()))?,
        Some(scheme) => quantize_after(a, w, scheme, qmethod, arch)?,
    }
    let fout = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    let s2 =
        (sel.ffn.first().map_or(0, |v| v.len()), sel.heads.first().map_or(0, |v| v.len()), sel.layers.len());
    println!("{} -> {} (structured {}, ratio {ratio})", a.input.display(), a.output.display(), what.name());
    println!(
        "  FFN channels {} -> {}, heads {} -> {}, blocks {} -> {}",
        shape.n_ff, s2.0, shape.n_head, s2.1, shape.n_layer, s2.2
    );
    if what == Structure::Layers {
        let removed: Vec<String> = (0..shape.n_layer)
            .filter(|l| !sel.layers.contains(l))
            .map(|l| format!("{l} ({:.4})", stats.influence[l]))
            .collect();
        println!("  removed blocks (influence): {}", removed.join(", "));
    }
    if let Some(s) = then {
        println!("  then quantized to {s} ({qmethod})");
    }
    println!("  file {}  ({:.1} s)", human_bytes(fout), t0.elapsed().as_secs_f64());
    Ok(())
}

/// Quantizes the pruned model to `scheme`, with statistics collected on the pruned model.
fn quantize_after(
    a: &Args,
    writer: edgellm_formats::GgufWriter,
    scheme: Scheme,
    qmethod: Method,
    arch: &str,
) -> Result<()> {
    let psrc = ModelSource::from_writer(writer)?;
    let mut calibration = None;
    if qmethod != Method::Rtn && arch != "bert" {
        if let Some(text) = &a.calib {
            let file = psrc.to_file()?;
            let chunks = ChunkArgs { ctx: a.ctx, chunks: a.chunks };
            calibration = Some(run_calibration(&file, text, &chunks, false, qmethod == Method::Awq)?);
        }
    }
    anyhow::ensure!(
        qmethod != Method::Awq || calibration.is_some(),
        "--quant-method awq needs --calib and a llama model"
    );
    let importance = calibration.as_ref().map(|c| Importance::from_imatrix(&c.imatrix));
    let alphas = edgellm_compress::awq::default_alphas();
    let keeps: Vec<KeepRule> = Vec::new();
    let opts = QuantizeOptions {
        scheme: Some(scheme),
        keeps: &keeps,
        method: qmethod,
        importance: importance.as_ref(),
        grams: None,
        awq: calibration.as_ref().map(|c| AwqParams { stats: &c.awq, alphas: &alphas }),
        gptq_damp: None,
    };
    let bar = ProgressBar::new(psrc.tensors.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} quantizing [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let q = quantize_model(&psrc, &opts, &mut |done, _, r| {
        bar.set_position(done as u64);
        bar.set_message(format!("{} -> {}", r.name, r.to));
    })?;
    bar.finish_and_clear();
    q.writer.write_file(&a.output).with_context(|| format!("writing {}", a.output.display()))?;
    Ok(())
}

/// Calibration chunks of a decoder: the text's tokens cut into `chunks` chunks of `ctx`, BOS
/// first where the model wants one (as `edgellm imatrix`).
fn decoder_calibration(f: &GgufFile, text: &Path, ctx: usize, chunks: usize) -> Result<Vec<Vec<u32>>> {
    let raw = std::fs::read_to_string(text)
        .with_context(|| format!("reading calibration text {}", text.display()))?;
    let tok = edgellm_text::Tokenizer::from_gguf(f).context("building the tokenizer from the model")?;
    let add_bos = tok.add_bos_default();
    let tokens = tok.encode(&raw, add_bos, false);
    let available = tokens.len() / ctx;
    anyhow::ensure!(
        available > 0,
        "{}: {} tokens is less than one chunk of {ctx} (use a longer text or a smaller --ctx)",
        text.display(),
        tokens.len()
    );
    let n = if chunks == 0 { available } else { chunks.min(available) };
    eprintln!("calibrating on {}: {n} chunks of {ctx} tokens", text.display());
    let bos = if add_bos { tok.bos_id() } else { None };
    Ok((0..n)
        .map(|c| {
            let mut v = tokens[c * ctx..(c + 1) * ctx].to_vec();
            if let Some(b) = bos {
                v[0] = b;
            }
            v
        })
        .collect())
}

/// Calibration sentences of an encoder, tokenized by the model's own tokenizer.
fn encoder_calibration(model: &Path, text: &Path, max: usize) -> Result<Vec<Vec<u32>>> {
    let raw = std::fs::read_to_string(text)
        .with_context(|| format!("reading calibration text {}", text.display()))?;
    let dir = if model.is_file() && model.extension().is_some_and(|e| e == "safetensors") {
        model.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        model.to_path_buf()
    };
    let emb = edgellm_runtime::embed::Embedder::load(&dir)
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let s = sentences(&raw, max);
    anyhow::ensure!(!s.is_empty(), "{}: no sentences of six words or more", text.display());
    s.iter().map(|s| emb.tokenize(s).map_err(anyhow::Error::from)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_sentences_skip_headings_and_fragments() {
        let t = " = Title = \n\n The cat sat on the mat all day . Short one . Another long sentence here with words \n";
        let s = sentences(t, 10);
        assert_eq!(s, ["The cat sat on the mat all day .", "Another long sentence here with words ."]);
        assert_eq!(sentences(t, 1).len(), 1);
    }
}
