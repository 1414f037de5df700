//! Pruning on the real models: the layer-wise execution that sequential pruning relies on
//! computes what the whole forward does, and pruned files meet their pattern and load.
//!
//! The Linear input observer is process-wide, so the tests that install one hold `SERIAL`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use edgellm_compress::prune::{
    prune_decoder, pruned_writer, PruneMethod, PruneOptions, Pruned, Sparsity, DAMP,
};
use edgellm_compress::ModelSource;
use edgellm_formats::GgufFile;
use edgellm_models::linear::{set_input_observer, InputObserver};

static SERIAL: Mutex<()> = Mutex::new(());

fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models", p.display());
    p
}

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// Deterministic token ids inside the vocabulary.
fn tokens(n: usize, seed: u64, vocab: usize) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % vocab as u64) as u32
        })
        .collect()
}

#[derive(Default)]
struct Record(Mutex<Vec<(String, Vec<f32>)>>);

impl InputObserver for Record {
    fn observe(&self, name: &str, x: &[f32], _n: usize, _k: usize) {
        self.0.lock().unwrap().push((name.to_string(), x.to_vec()));
    }
}

fn recorded(f: impl FnOnce()) -> Vec<(String, Vec<f32>)> {
    let rec = Arc::new(Record::default());
    set_input_observer(Some(rec.clone()));
    f();
    set_input_observer(None);
    let v = std::mem::take(&mut *rec.0.lock().unwrap());
    v
}

/// Every Linear of every block sees bit-identical inputs whether the model runs whole or one
/// block at a time (embed + forward_block), on SmolLM2 and on Gemma 3 (batches cut at 512).
#[test]
fn layerwise_execution_equals_the_whole_forward() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (name, n) in [(SMOLLM2, 40usize), (GEMMA3, 520)] {
        let f = GgufFile::open(model(name)).unwrap();
        let m = edgellm_models::load_gguf(&f).unwrap();
        let ids = tokens(n, 7, m.info().n_vocab);
        let whole = recorded(|| {
            let mut cache = m.new_cache(n);
            m.forward(&ids, &mut cache, false).unwrap();
        });
        let layered = recorded(|| {
            let mut cache = m.new_cache(n);
            let mut x = m.embed(&ids).unwrap();
            for l in 0..m.info().n_layer {
                m.forward_block(l, &mut x, &mut cache).unwrap();
            }
        });
        let blocks = |v: &[(String, Vec<f32>)]| {
            let mut v: Vec<_> = v.iter().filter(|(k, _)| k.starts_with("blk.")).cloned().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let (a, b) = (blocks(&whole), blocks(&layered));
        assert!(!a.is_empty(), "{name}: no block inputs observed");
        assert_eq!(a.len(), b.len(), "{name}: calls differ");
        for ((na, xa), (nb, xb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert!(xa == xb, "{name}: inputs of {na} differ");
        }
    }
}

/// Layer-wise calls are checked: a block outside the model and a weight the model does not
/// have are typed errors.
#[test]
fn layerwise_misuse_is_an_error() {
    let f = GgufFile::open(model(SMOLLM2)).unwrap();
    let mut m = edgellm_models::load_gguf(&f).unwrap();
    let mut cache = m.new_cache(8);
    let mut x = m.embed(&[1, 2, 3]).unwrap();
    assert!(m.forward_block(30, &mut x, &mut cache).is_err());
    assert!(m.forward_block(0, &mut x[..100], &mut cache).is_err());
    assert!(m.embed(&[u32::MAX]).is_err());
    let lin = edgellm_models::Linear::new(
        "blk.0.attn_q.weight",
        edgellm_core::DType::F32,
        4,
        4,
        edgellm_models::TensorBytes::Owned(vec![0; 64]),
    )
    .unwrap();
    assert!(m.replace_weight("blk.0.attn_q.weight", lin.clone()).is_err(), "shape mismatch accepted");
    assert!(m.replace_weight("blk.99.attn_q.weight", lin).is_err(), "unknown block accepted");
}

fn check_file_pattern(f: &GgufFile, pruned: &Pruned, sp: Sparsity) {
    for r in &pruned.report {
        let t = f.need_tensor(&r.name).unwrap();
        let v = edgellm_core::quant::dequantize(t.dtype, f.tensor_data(t), t.n_elements() as usize).unwrap();
        let k = t.row_len() as usize;
        for (i, row) in v.chunks_exact(k).enumerate() {
            match sp {
                Sparsity::NM { n, m } => {
                    for g in row.chunks(m) {
                        assert!(g.iter().filter(|&&x| x != 0.0).count() <= n, "{} row {i}", r.name);
                    }
                }
                Sparsity::Unstructured(_) => {
                    let z = row.iter().filter(|&&x| x == 0.0).count();
                    assert!(z >= sp.zeros_per_row(k), "{} row {i}: {z} zeros", r.name);
                }
            }
        }
    }
}

/// Sequential Wanda and SparseGPT on SmolLM2 (a few short chunks): every block weight is
/// pruned to its pattern, the written file holds exactly those values and loads, and the
/// pruned model still computes finite logits.
#[test]
fn sequential_pruning_of_smollm2_meets_the_pattern_and_loads() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = GgufFile::open(model(SMOLLM2)).unwrap();
    let src = ModelSource::from_gguf(&f);
    let chunks: Vec<Vec<u32>> = (0..2).map(|c| tokens(64, 100 + c, 49152)).collect();
    for (method, sp) in [
        (PruneMethod::Wanda, Sparsity::NM { n: 2, m: 4 }),
        (PruneMethod::SparseGpt, Sparsity::Unstructured(0.5)),
    ] {
        let mut m = edgellm_models::load_gguf(&f).unwrap();
        let opts = PruneOptions { method, sparsity: sp, keep: &["blk.1.*".to_string()], damp: DAMP };
        let pruned = prune_decoder(m.as_mut(), &src, &chunks, &opts, &mut |_| {}).unwrap();
        assert_eq!(pruned.report.len(), 29 * 7, "{method}: every block weight but blk.1's");
        assert!(pruned.report.iter().all(|r| !r.name.starts_with("blk.1.")));
        let (el, z) = pruned.totals();
        assert!((z as f64 / el as f64 - 0.5).abs() < 1e-3, "{method}: {z} zeros of {el}");
        let w = pruned_writer(&src, &pruned, Some((&opts, el, z))).unwrap();
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let out = GgufFile::from_vec(bytes).unwrap();
        check_file_pattern(&out, &pruned, sp);
        assert_eq!(out.get("edgellm.pruning.method").and_then(|v| v.as_str()), Some(method.name()));
        // blk.1 kept dense: its tensors are the source's bytes.
        let (a, b) =
            (f.need_tensor("blk.1.ffn_up.weight").unwrap(), out.need_tensor("blk.1.ffn_up.weight").unwrap());
        assert_eq!(f.tensor_data(a), out.tensor_data(b));
        let pm = edgellm_models::load_gguf(&out).unwrap();
        let mut cache = pm.new_cache(16);
        let logits = pm.forward(&tokens(16, 3, 49152), &mut cache, false).unwrap();
        assert!(logits.iter().all(|v| v.is_finite()));
    }
}

/// Bad requests on a real model: a pattern whose groups do not divide the rows, and
/// calibrated methods without calibration, are typed errors before any work.
#[test]
fn bad_pruning_requests_on_a_model() {
    let f = GgufFile::open(model(SMOLLM2)).unwrap();
    let src = ModelSource::from_gguf(&f);
    let mut m = edgellm_models::load_gguf(&f).unwrap();
    // Groups of 5 divide neither 576 nor 1536.
    let opts = PruneOptions {
        method: PruneMethod::Magnitude,
        sparsity: Sparsity::NM { n: 2, m: 5 },
        keep: &[],
        damp: DAMP,
    };
    let e = prune_decoder(m.as_mut(), &src, &[], &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("groups of 5"), "{e}");
    let opts = PruneOptions {
        method: PruneMethod::Wanda,
        sparsity: Sparsity::Unstructured(0.5),
        keep: &[],
        damp: DAMP,
    };
    let e = prune_decoder(m.as_mut(), &src, &[], &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("calibration"), "{e}");
    let all = ["blk.*".to_string()];
    let opts = PruneOptions {
        method: PruneMethod::Magnitude,
        sparsity: Sparsity::Unstructured(0.5),
        keep: &all,
        damp: DAMP,
    };
    let e = prune_decoder(m.as_mut(), &src, &[], &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("no tensor to prune"), "{e}");
}
