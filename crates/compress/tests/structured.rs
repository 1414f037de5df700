//! Structured pruning on SmolLM2 and Gemma 3: the smaller model computes what the full-size
//! model with the removed parts zeroed computes, and bad requests are clear errors.

use std::path::PathBuf;
use std::sync::Mutex;

use edgellm_compress::structured::{apply, select, structure_stats, Shape, Structure};
use edgellm_compress::ModelSource;
use edgellm_core::tolerance::logits::STRUCTURED_VS_MASKED;
use edgellm_formats::GgufFile;
use edgellm_models::{LoadOptions, Precision};

/// Calibration installs the process-wide Linear input observer: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models", p.display());
    p
}

fn tokens(n: usize, seed: u64, vocab: usize) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// All logits of `ids` with f32 activations.
fn logits(src: &ModelSource, ids: &[u32]) -> Vec<f32> {
    let f = src.to_file().unwrap();
    let opts = LoadOptions { precision: Precision::Exact, kv_type: None };
    let m = edgellm_models::load_gguf_with(&f, &opts).unwrap();
    let mut cache = m.new_cache(ids.len());
    m.forward(ids, &mut cache, true).unwrap()
}

#[test]
fn structured_model_equals_the_masked_dense_model() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (name, cases) in [
        (
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            vec![(Structure::Ffn, 0.25), (Structure::Heads, 0.34), (Structure::Layers, 0.2)],
        ),
        ("gemma-3-270m-q4_k_m.gguf", vec![(Structure::Ffn, 0.5), (Structure::Heads, 0.5)]),
    ] {
        let f = GgufFile::open(model(name)).unwrap();
        let src = ModelSource::from_gguf(&f);
        let shape = Shape::of(&src).unwrap();
        let m = edgellm_models::load_gguf(&f).unwrap();
        let vocab = m.info().n_vocab;
        let chunks: Vec<Vec<u32>> = (0..2).map(|c| tokens(48, 10 + c, vocab)).collect();
        let stats = structure_stats(m.as_ref(), &chunks).unwrap();
        drop(m);
        let ids = tokens(12, 99, vocab);
        for (what, ratio) in cases {
            let sel = select(&src, &stats, what, ratio).unwrap();
            let small = apply(&src, &sel, false).unwrap();
            let masked = apply(&src, &sel, true).unwrap();
            // The smaller model really is smaller, in the dimension asked for.
            match what {
                Structure::Ffn => {
                    assert!(sel.ffn[0].len() < shape.n_ff && sel.ffn[0].len().is_multiple_of(32))
                }
                Structure::Heads => assert!(sel.heads[0].len() < shape.n_head),
                Structure::Layers => assert!(sel.layers.len() < shape.n_layer),
            }
            let params = |s: &ModelSource| s.tensors.iter().map(|t| t.n_elements()).sum::<u64>();
            assert!(params(&small) < params(&masked), "{name} {what:?}: not smaller");
            let (a, b) = (logits(&small, &ids), logits(&masked, &ids));
            let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
            println!("{name} {what:?} {ratio}: max logit difference {max:.2e}");
            assert!(max <= STRUCTURED_VS_MASKED, "{name} {what:?}: {max} > {STRUCTURED_VS_MASKED}");
            // And the pruning changed the model (the masked model is not the original).
            let orig = logits(&src, &ids);
            let moved = orig.iter().zip(&b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
            assert!(moved > 1e-2, "{name} {what:?}: pruning changed nothing ({moved})");
        }
    }
}

#[test]
fn bad_structured_requests_are_clear_errors() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = GgufFile::open(model("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let src = ModelSource::from_gguf(&f);
    let m = edgellm_models::load_gguf(&f).unwrap();
    let stats = structure_stats(m.as_ref(), &[tokens(16, 1, 49152)]).unwrap();
    let err = |w, r| select(&src, &stats, w, r).unwrap_err().to_string();
    assert!(err(Structure::Heads, 0.9).contains("removes every query head"));
    assert!(err(Structure::Ffn, 0.99).contains("removes every FFN channel"));
    assert!(err(Structure::Layers, 0.99).contains("removes every block"));
    assert!(err(Structure::Ffn, 1.0).contains("outside (0, 1)"));
    assert!(err(Structure::Ffn, 0.0).contains("outside (0, 1)"));
    assert!(Structure::parse("rows").is_err());
    assert!(structure_stats(m.as_ref(), &[]).is_err());
    let g = GgufFile::open(model("gemma-3-270m-q4_k_m.gguf")).unwrap();
    let gsrc = ModelSource::from_gguf(&g);
    let e = select(&gsrc, &stats, Structure::Layers, 0.2).unwrap_err().to_string();
    assert!(e.contains("gemma3 blocks cannot be removed"), "{e}");
}
