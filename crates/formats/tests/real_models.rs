//! GGUF and safetensors readers on the real models fetched by `scripts/fetch-models`.

use std::path::PathBuf;

use edgellm_formats::{GgufFile, SafetensorsFile};

fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

fn round_trip(name: &str) {
    let path = model(name);
    let f = GgufFile::open(&path).unwrap();
    assert!(f.is_mapped());
    let mut out = Vec::with_capacity(f.file_len() as usize);
    f.to_writer().write_to(&mut out).unwrap();
    let orig = std::fs::read(&path).unwrap();
    assert_eq!(out.len(), orig.len(), "{name}: written size differs");
    if let Some(i) = out.iter().zip(&orig).position(|(a, b)| a != b) {
        panic!("{name}: first differing byte at offset {i}");
    }
}

#[test]
fn smollm2_gguf_round_trips_byte_for_byte() {
    round_trip("SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn gemma3_gguf_round_trips_byte_for_byte() {
    round_trip("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn smollm2_metadata_and_tensors() {
    let f = GgufFile::open(model("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_str_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    let mut counts = std::collections::BTreeMap::new();
    for t in &f.tensors {
        *counts.entry(t.dtype.name()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("Q4_1"), Some(&210));
    assert_eq!(counts.get("F32"), Some(&61));
    assert_eq!(counts.get("Q8_0"), Some(&1));
}

#[test]
fn minilm_safetensors() {
    let f = SafetensorsFile::open(model("all-MiniLM-L6-v2/model.safetensors")).unwrap();
    let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert!(names.len() > 90, "{names:?}");
    let emb = f.tensors().iter().find(|t| t.name.ends_with("word_embeddings.weight")).unwrap();
    assert_eq!(emb.shape, vec![30522, 384]);
    let (v, shape) = f.tensor_f32(&emb.name).unwrap();
    assert_eq!(v.len(), shape.iter().product::<usize>());
    assert!(v.iter().all(|x| x.is_finite()));
}
