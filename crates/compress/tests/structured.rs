//! Structured pruning on SmolLM2, Gemma 3 and MiniLM: the smaller model computes what the full-size
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
    let opts = LoadOptions { precision: Precision::Exact, kv_type: None, ..Default::default() };
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

/// MiniLM (a BERT): removing a quarter of the heads (with their keys and values) and then half
/// of the FFN channels gives the model that computes what the full-size model with those parts
/// zeroed computes.
#[test]
fn bert_heads_and_ffn_pruned_equal_the_masked_encoder() {
    use edgellm_compress::source::OpenedModel;
    use edgellm_compress::structured::structure_stats_encoder;
    use edgellm_models::bert::Bert;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let opened = OpenedModel::open(&model("all-MiniLM-L6-v2")).unwrap();
    let src = opened.source();
    // [CLS] random word pieces [SEP]
    let seqs: Vec<Vec<u32>> = (0..6)
        .map(|i| {
            let mut s = vec![101];
            s.extend(tokens(10 + i, 30 + i as u64, 28000).into_iter().map(|t| t + 1000));
            s.push(102);
            s
        })
        .collect();
    let hidden = |s: &ModelSource| -> Vec<f32> {
        let f = s.to_file().unwrap();
        let bert = Bert::from_gguf(&f).unwrap();
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        bert.forward_sequences(&refs).unwrap()
    };
    let max_diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
    };
    let orig = hidden(&src);

    // Heads: 12 -> 9 per layer; q, k, v lose the removed heads' rows, attn_output their columns.
    let stats = structure_stats_encoder(&src, &seqs).unwrap();
    let sel = select(&src, &stats, Structure::Heads, 0.25).unwrap();
    assert!(sel.heads.iter().all(|h| h.len() == 9), "{:?}", sel.heads);
    let small = apply(&src, &sel, false).unwrap();
    let masked = apply(&src, &sel, true).unwrap();
    let dims = |s: &ModelSource, n: &str| s.tensors.iter().find(|t| t.name == n).unwrap().dims.clone();
    for t in ["attn_q", "attn_k", "attn_v"] {
        assert_eq!(dims(&small, &format!("blk.2.{t}.weight")), vec![384, 288], "{t}");
        assert_eq!(dims(&small, &format!("blk.2.{t}.bias")), vec![288], "{t}");
    }
    assert_eq!(dims(&small, "blk.2.attn_output.weight"), vec![288, 384]);
    assert_eq!(small.get("bert.attention.head_count").and_then(|v| v.as_u64()), Some(9));
    assert_eq!(small.get("bert.attention.key_length").and_then(|v| v.as_u64()), Some(32));
    let (a, b) = (hidden(&small), hidden(&masked));
    let d = max_diff(&a, &b);
    println!("MiniLM heads 0.25: max hidden-state difference {d:.2e}");
    assert!(d <= STRUCTURED_VS_MASKED, "heads: {d} > {STRUCTURED_VS_MASKED}");
    assert!(max_diff(&orig, &b) > 1e-2, "removing heads changed nothing");

    // Then FFN channels of the head-pruned model (the file records its head width).
    let f = small.to_file().unwrap();
    let small_src = ModelSource::from_gguf(&f);
    let stats = structure_stats_encoder(&small_src, &seqs).unwrap();
    let sel = select(&small_src, &stats, Structure::Ffn, 0.5).unwrap();
    let smaller = apply(&small_src, &sel, false).unwrap();
    let masked = apply(&small_src, &sel, true).unwrap();
    assert_eq!(dims(&smaller, "blk.0.ffn_up.weight"), vec![384, 768]);
    let d = max_diff(&hidden(&smaller), &hidden(&masked));
    assert!(d <= STRUCTURED_VS_MASKED, "heads then ffn: {d} > {STRUCTURED_VS_MASKED}");

    // A ratio that would remove every head, and block removal, are refused.
    let stats = structure_stats_encoder(&src, &seqs).unwrap();
    let e = select(&src, &stats, Structure::Heads, 0.99).unwrap_err().to_string();
    assert!(e.contains("removes every query head"), "{e}");
    let e = select(&src, &stats, Structure::Layers, 0.2).unwrap_err().to_string();
    assert!(e.contains("not implemented for bert"), "{e}");
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
