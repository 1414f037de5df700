//! The candle encoder against the fast runtime on the real all-MiniLM-L6-v2: sentence
//! embeddings of the golden texts (tests/golden/all-minilm-l6-v2.json's token ids, lengths 2 to
//! 256) in one padded batch, from the safetensors directory and from its F32 GGUF export.

mod common;

use std::time::Instant;

use edgellm_core::tolerance::{assert_close, embeddings::TRAIN_FORWARD};
use edgellm_models::bert::gguf_export;
use edgellm_train::{l2_normalize, BertFile, DType};
use serde_json::Value;

fn golden_ids() -> Vec<Vec<u32>> {
    let p = common::root().join("tests/golden/all-minilm-l6-v2.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| it["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
        .collect()
}

fn check(file: &BertFile, what: &str) {
    let ids = golden_ids();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let want: Vec<f32> = file.embedder.embed_ids(&refs).unwrap().concat();
    let model = file.trainable(DType::F32).unwrap();
    let t = Instant::now();
    let batch = model.batch(&refs).unwrap();
    let emb = l2_normalize(&model.pooled(&batch).unwrap()).unwrap();
    let got: Vec<f32> = emb.flatten_all().unwrap().to_vec1().unwrap();
    eprintln!(
        "{what}: candle forward of {} sequences padded to {} in {:.2} s",
        ids.len(),
        batch.seq_len,
        t.elapsed().as_secs_f64()
    );
    assert_close(what, &got, &want, TRAIN_FORWARD);
}

#[test]
fn candle_forward_equals_runtime_on_minilm_safetensors_and_gguf() {
    let dir = common::minilm();
    check(&BertFile::open(&dir, "student").unwrap(), "safetensors");
    let gguf = common::scratch("fwd").join("minilm-f32.gguf");
    gguf_export(&dir).unwrap().write_f32(&gguf).unwrap();
    check(&BertFile::open(&gguf, "student").unwrap(), "gguf f32");
    std::fs::remove_file(&gguf).unwrap();
}
