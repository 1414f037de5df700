//! all-MiniLM-L6-v2 (F32 safetensors) run whole on the GPU through the embedding pipeline:
//! every golden sentence's embedding against the sentence-transformers float32 reference
//! (`tests/golden/all-minilm-l6-v2.json`) within `embeddings::MIN_COSINE_VS_REFERENCE`, the
//! bound the CPU path meets, and against the CPU path's embedding of the same batch, element
//! by element within `tolerance::gpu::ENCODER`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use edgellm_core::tolerance::{assert_close, embeddings::MIN_COSINE_VS_REFERENCE, gpu as gtol};
use edgellm_runtime::embed::{cosine, Embedder};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn minilm_on_the_gpu_matches_the_reference_and_the_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let dir = dir.join("all-MiniLM-L6-v2");
    assert!(dir.exists(), "{} is missing: run scripts/fetch-models first", dir.display());
    let g: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/golden/all-minilm-l6-v2.json")).unwrap(),
    )
    .unwrap();
    // Four sentences of different lengths: lavapipe runs MiniLM's f32 products slowly (about
    // 2.5 tokens/s here), a functional check.
    let items = &g["items"].as_array().unwrap()[..4];
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let cpu = Embedder::load(&dir).unwrap();
    let enc = edgellm_gpu::load_bert(Arc::new(gpu), &dir).unwrap();
    let on_gpu = Embedder::load(&dir).unwrap().with_encoder(Box::new(enc));
    assert_ne!(on_gpu.device(), "CPU");
    // One batch (lengths differ: each sequence attends to its own tokens only).
    let got = on_gpu.embed_batch(&texts, 32).unwrap();
    let want = cpu.embed_batch(&texts, 32).unwrap();
    let mut worst = 1.0f32;
    for ((item, g), w) in items.iter().zip(&got).zip(&want) {
        let reference: Vec<f32> =
            item["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let c = cosine(g, &reference);
        worst = worst.min(c);
        assert!(c as f64 >= MIN_COSINE_VS_REFERENCE, "{:?}: cosine {c} to the reference", item["text"]);
        assert_close(&format!("{:?} vs the CPU", item["text"]), g, w, gtol::ENCODER);
    }
    eprintln!("GPU embeddings: smallest cosine to the sentence-transformers reference {worst:.7}");
}
