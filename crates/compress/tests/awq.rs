//! AWQ on a small llama model: folding the scales into norms and preceding rows leaves the
//! unquantized model's function unchanged, the file is a plain llama GGUF our loader runs, and
//! bad inputs are refused with typed errors.

mod common;

use common::{f32_bytes, heavy_tailed, llama_like, Rng};
use edgellm_compress::calib::{calibrate, CalibOptions, Calibration};
use edgellm_compress::{
    quantize_model, AwqParams, CompressError, Importance, Method, ModelSource, QuantizeOptions, Scheme,
};
use edgellm_core::tolerance::{assert_close, Tolerance};
use edgellm_formats::{GgufFile, GgufWriter, Value};
use edgellm_models::{load_gguf_with, LoadOptions, Precision};

/// Folding only re-associates f32 products (`(W·s)(x/s)` for `W x`), through two blocks and
/// attention: logits agree to this, relative to their size (they are O(1..10) here).
const AWQ_FOLD: Tolerance = Tolerance::new(2e-4, 2e-4);

const VOCAB: usize = 64;
const CTX: usize = 48;

/// A loadable llama model (4 query heads of 32, 2 KV heads, so the `attn_v` fold must map
/// value rows to the right query heads) whose norm weights vary by channel, so activation
/// magnitudes — and with them the AWQ scales — differ between channels.
fn model() -> GgufFile {
    let mut w: GgufWriter<'static> = llama_like(128, 256, 2, VOCAB);
    w.set("llama.attention.head_count_kv", Value::U32(2));
    for t in &mut w.tensors {
        if t.name.contains("attn_k.") || t.name.contains("attn_v.") {
            t.dims = vec![128, 64];
            t.data = f32_bytes(&heavy_tailed(128 * 64, t.name.len() as u64 * 31 + 7)).into();
        }
    }
    w.set("llama.feed_forward_length", Value::U32(256));
    w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w.set("llama.context_length", Value::U32(CTX as u32));
    w.set("llama.vocab_size", Value::U32(VOCAB as u32));
    let mut r = Rng(11);
    for t in &mut w.tensors {
        if t.name.ends_with("_norm.weight") {
            let n = t.dims[0] as usize;
            let g: Vec<f32> = (0..n).map(|_| (0.2 + 2.8 * r.uniform()) as f32).collect();
            t.data = f32_bytes(&g).into();
        } else if t.dims.len() == 2 {
            // Heavy-tailed weights at a scale that keeps activations O(1).
            let v: Vec<f32> =
                t.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let s = 1.0 / (t.dims[0] as f32).sqrt();
            t.data = f32_bytes(&v.iter().map(|x| x * s).collect::<Vec<_>>()).into();
        }
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    GgufFile::from_vec(bytes).unwrap()
}

fn exact() -> LoadOptions {
    LoadOptions { precision: Precision::Exact, kv_type: None, ..Default::default() }
}

fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng(seed);
    (0..n).map(|_| (r.next_u64() % VOCAB as u64) as u32).collect()
}

fn logits(f: &GgufFile, toks: &[u32]) -> Vec<f32> {
    let m = load_gguf_with(f, &exact()).unwrap();
    let mut cache = m.new_cache(CTX);
    m.forward(toks, &mut cache, true).unwrap()
}

fn calibration(f: &GgufFile) -> Calibration {
    let m = load_gguf_with(f, &exact()).unwrap();
    let opts = CalibOptions { ctx: CTX, chunks: 0, grams: false, bos: None, awq_samples: 64 };
    calibrate(m.as_ref(), &tokens(4 * CTX, 5), &opts, &mut |_, _| {}).unwrap()
}

fn f32_of(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap();
    f.tensor_data(t).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn folded_scales_leave_the_unquantized_model_unchanged() {
    let f = model();
    let cal = calibration(&f);
    assert_eq!(cal.awq.inputs.len(), 2 * 4, "four shared inputs per block");
    let imp = Importance::from_imatrix(&cal.imatrix);
    let src = ModelSource::from_gguf(&f);
    // F32 output: nothing is rounded, so only the folding can change the function. One α,
    // so every group is scaled.
    let alphas = [0.5f32];
    let opts = QuantizeOptions {
        scheme: Some(Scheme::F32),
        method: Method::Awq,
        importance: Some(&imp),
        awq: Some(AwqParams { stats: &cal.awq, alphas: &alphas }),
        ..Default::default()
    };
    let q = quantize_model(&src, &opts, &mut |_, _, _| {}).unwrap();
    assert_eq!(q.awq.len(), 8);
    assert!(q.awq.iter().all(|c| c.alpha == 0.5));
    let mut bytes = Vec::new();
    q.writer.write_to(&mut bytes).unwrap();
    let g = GgufFile::from_vec(bytes).unwrap();

    // The weights did change: norms, attn_v and ffn_up rows, and every member's columns.
    for name in
        ["blk.0.attn_norm.weight", "blk.1.ffn_norm.weight", "blk.0.attn_v.weight", "blk.1.ffn_up.weight"]
    {
        let (a, b) = (f32_of(&f, name), f32_of(&g, name));
        let moved = a.iter().zip(&b).filter(|(x, y)| (*x - *y).abs() > 1e-3 * x.abs().max(1e-3)).count();
        assert!(moved > a.len() / 2, "{name}: only {moved} of {} values changed", a.len());
    }
    // ...and the function did not, on tokens the calibration never saw.
    let toks = tokens(CTX, 99);
    assert_close("logits after AWQ folding (F32)", &logits(&g, &toks), &logits(&f, &toks), AWQ_FOLD);
}

#[test]
fn awq_quantized_model_runs_and_is_no_worse_on_the_search_sample() {
    let f = model();
    let cal = calibration(&f);
    let imp = Importance::from_imatrix(&cal.imatrix);
    let src = ModelSource::from_gguf(&f);
    let alphas = edgellm_compress::awq::default_alphas();
    let opts = QuantizeOptions {
        scheme: Some(Scheme::Q4_0),
        method: Method::Awq,
        importance: Some(&imp),
        awq: Some(AwqParams { stats: &cal.awq, alphas: &alphas }),
        ..Default::default()
    };
    let q = quantize_model(&src, &opts, &mut |_, _, _| {}).unwrap();
    for c in &q.awq {
        // α = 0 is in the grid, so the chosen error can only be lower or equal.
        assert!(c.err_chosen <= c.err_unscaled, "{}: {} > {}", c.group, c.err_chosen, c.err_unscaled);
    }
    let mut bytes = Vec::new();
    q.writer.write_to(&mut bytes).unwrap();
    let g = GgufFile::from_vec(bytes).unwrap();
    let out = logits(&g, &tokens(CTX, 99));
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn awq_refusals_are_typed() {
    let f = model();
    let src = ModelSource::from_gguf(&f);
    // No statistics.
    let opts = QuantizeOptions { scheme: Some(Scheme::Q4_0), method: Method::Awq, ..Default::default() };
    let e = quantize_model(&src, &opts, &mut |_, _, _| {}).err().unwrap();
    assert!(matches!(e, CompressError::NeedsCalibration { method: "awq", .. }), "{e}");
    // Statistics of another model (none of these tensors).
    let stats = edgellm_compress::AwqStats::default();
    let alphas = [0.0f32, 0.5];
    let opts = QuantizeOptions {
        scheme: Some(Scheme::Q4_0),
        method: Method::Awq,
        awq: Some(AwqParams { stats: &stats, alphas: &alphas }),
        ..Default::default()
    };
    let e = quantize_model(&src, &opts, &mut |_, _, _| {}).err().unwrap();
    assert!(matches!(e, CompressError::AwqUnsupported(_)), "{e}");
    assert!(e.to_string().contains("no calibration statistics"), "{e}");
    // Another architecture.
    let mut other = src.clone();
    for (k, v) in &mut other.metadata {
        if k == "general.architecture" {
            *v = Value::String("gemma3".into());
        }
    }
    let e = quantize_model(&other, &opts, &mut |_, _, _| {}).err().unwrap();
    assert!(e.to_string().contains("llama-architecture"), "{e}");
    // An empty α grid.
    let opts = QuantizeOptions { awq: Some(AwqParams { stats: &stats, alphas: &[] }), ..opts };
    let e = quantize_model(&src, &opts, &mut |_, _, _| {}).err().unwrap();
    assert!(e.to_string().contains("grid"), "{e}");
}
