//! The sentence-embedding pipeline on all-MiniLM-L6-v2 against the sentence-transformers
//! reference (`tests/golden/all-minilm-l6-v2.json`): token ids, embeddings, padded batches
//! against one text at a time, and typed errors for a broken model directory.

use std::path::{Path, PathBuf};

use edgellm_core::tolerance::{assert_ulps, embeddings::MIN_COSINE_VS_REFERENCE};
use edgellm_models::bert::BertError;
use edgellm_runtime::embed::{EmbedError, Embedder};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join("all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-models first",
        p.display()
    );
    p
}

struct Item {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn golden() -> Vec<Item> {
    let p = root().join("tests/golden/all-minilm-l6-v2.json");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| Item {
            text: it["text"].as_str().unwrap().to_string(),
            ids: it["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(),
            embedding: it["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

fn cosine_f64(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn token_ids_match_the_reference() {
    let e = Embedder::load(model_dir()).unwrap();
    assert_eq!(e.max_seq_length(), 256);
    let items = golden();
    assert!(items.iter().any(|it| it.text.is_empty()), "the reference has the empty string");
    assert!(items.iter().any(|it| it.ids.len() == 256), "the reference has a truncated text");
    for it in &items {
        assert_eq!(e.tokenize(&it.text).unwrap(), it.ids, "{:?}", it.text);
    }
}

#[test]
fn embeddings_match_the_reference() {
    let e = Embedder::load(model_dir()).unwrap();
    assert_eq!(e.dim(), 384);
    assert!(e.normalizes());
    let items = golden();
    let texts: Vec<&str> = items.iter().map(|it| it.text.as_str()).collect();
    let batched = e.embed_batch(&texts, 5).unwrap();
    let mut min = (f64::INFINITY, "");
    for (it, got) in items.iter().zip(&batched) {
        let c = cosine_f64(got, &it.embedding);
        if c < min.0 {
            min = (c, &it.text);
        }
        assert!(c >= MIN_COSINE_VS_REFERENCE, "{:?}: cosine {c:.7} < {MIN_COSINE_VS_REFERENCE}", it.text);
        let norm: f64 = got.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{:?}: norm {norm}", it.text);
    }
    eprintln!("min cosine vs reference: {:.9} (1 - cos = {:.2e}, {:?})", min.0, 1.0 - min.0, min.1);
}

#[test]
fn padded_batches_equal_one_text_at_a_time() {
    let e = Embedder::load(model_dir()).unwrap();
    let items = golden();
    let texts: Vec<&str> = items.iter().map(|it| it.text.as_str()).collect();
    // Batches of 4 after sorting by length: every text is padded against longer ones.
    let batched = e.embed_batch(&texts, 4).unwrap();
    let all_in_one = e.embed_batch(&texts, 100).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let alone = e.embed(t).unwrap();
        assert_ulps(&format!("{t:?} in batches of 4"), &batched[i], &alone, 0);
        assert_ulps(&format!("{t:?} in one batch"), &all_in_one[i], &alone, 0);
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellm-embed-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_model_except(dst: &Path, skip: &str) {
    for f in
        ["config.json", "tokenizer.json", "modules.json", "sentence_bert_config.json", "model.safetensors"]
    {
        if f != skip {
            std::fs::copy(model_dir().join(f), dst.join(f)).unwrap();
        }
    }
    std::fs::create_dir_all(dst.join("1_Pooling")).unwrap();
    std::fs::copy(model_dir().join("1_Pooling/config.json"), dst.join("1_Pooling/config.json")).unwrap();
}

#[test]
fn broken_model_directories_give_typed_errors() {
    let missing = root().join("models/no-such-model");
    let err = Embedder::load(&missing).err().unwrap();
    assert!(matches!(err, EmbedError::MissingModelDir(_)), "{err}");
    assert!(err.to_string().contains("no-such-model") && err.to_string().contains("fetch-models"), "{err}");

    let d = scratch("no-weights");
    copy_model_except(&d, "model.safetensors");
    let err = Embedder::load(&d).err().unwrap();
    assert!(matches!(err, EmbedError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    let d = scratch("corrupt");
    copy_model_except(&d, "model.safetensors");
    let good = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &good[..good.len() / 2]).unwrap(); // truncated
    let err = Embedder::load(&d).err().unwrap();
    assert!(matches!(err, EmbedError::Model(BertError::Safetensors(_))), "{err}");
    assert!(err.to_string().contains("invalid safetensors"), "{err}");

    let d = scratch("bad-pooling");
    copy_model_except(&d, "");
    std::fs::write(d.join("1_Pooling/config.json"), r#"{"pooling_mode_weightedmean_tokens": true}"#).unwrap();
    let err = Embedder::load(&d).err().unwrap();
    assert!(matches!(err, EmbedError::Unsupported(_)), "{err}");
    std::fs::write(d.join("1_Pooling/config.json"), "{").unwrap();
    assert!(matches!(Embedder::load(&d).err().unwrap(), EmbedError::Json { .. }));

    for name in ["no-weights", "corrupt", "bad-pooling"] {
        std::fs::remove_dir_all(scratch(name)).ok();
    }
}
