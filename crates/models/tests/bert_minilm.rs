//! The BERT encoder on all-MiniLM-L6-v2 against the sentence-transformers reference
//! (`tests/golden/all-minilm-l6-v2.json`), from the reference's own token ids: mean pooling and
//! L2 normalization are done here, so this checks the forward pass alone. Also: padded batches
//! against one sequence at a time, and typed errors on a broken checkpoint.

use std::path::PathBuf;

use edgellm_core::tolerance::{assert_ulps, embeddings::MIN_COSINE_VS_REFERENCE};
use edgellm_models::bert::{Bert, BertBatch, BertError};
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

fn golden() -> Vec<(String, Vec<u32>, Vec<f32>)> {
    let p = root().join("tests/golden/all-minilm-l6-v2.json");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| {
            let ids = it["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let emb =
                it["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            (it["text"].as_str().unwrap().to_string(), ids, emb)
        })
        .collect()
}

fn mean_pool_normalized(h: &[f32], d: usize) -> Vec<f32> {
    let n = h.len() / d;
    let mut m = vec![0.0f64; d];
    for row in h.chunks_exact(d) {
        m.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
    }
    let norm = m.iter().map(|v| (v / n as f64).powi(2)).sum::<f64>().sqrt();
    m.iter().map(|v| (v / n as f64 / norm) as f32).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn forward_matches_sentence_transformers_on_reference_ids() {
    let bert = Bert::from_dir(model_dir()).unwrap();
    let d = bert.config.hidden_size;
    let mut worst = (f64::INFINITY, String::new());
    for (text, ids, want) in golden() {
        let h = bert.forward_sequences(&[&ids]).unwrap();
        let got = mean_pool_normalized(&h, d);
        let c = cosine(&got, &want);
        if c < worst.0 {
            worst = (c, text.clone());
        }
        assert!(
            c >= MIN_COSINE_VS_REFERENCE,
            "{text:?}: cosine to the reference {c:.6} < {MIN_COSINE_VS_REFERENCE}"
        );
    }
    eprintln!("min cosine vs reference: {:.7} ({:?})", worst.0, worst.1);
}

#[test]
fn padded_batch_equals_one_sequence_at_a_time() {
    let bert = Bert::from_dir(model_dir()).unwrap();
    let d = bert.config.hidden_size;
    let g = golden();
    let seqs: Vec<&[u32]> = g.iter().map(|(_, ids, _)| ids.as_slice()).collect();
    let len = seqs.iter().map(|s| s.len()).max().unwrap();
    let mut ids = vec![0u32; seqs.len() * len];
    let mut mask = vec![0u8; seqs.len() * len];
    for (s, q) in seqs.iter().enumerate() {
        ids[s * len..s * len + q.len()].copy_from_slice(q);
        mask[s * len..s * len + q.len()].iter_mut().for_each(|m| *m = 1);
    }
    let batch = BertBatch {
        input_ids: &ids,
        attention_mask: &mask,
        token_type_ids: None,
        batch: seqs.len(),
        seq_len: len,
    };
    let all = bert.forward(&batch).unwrap();
    for (s, q) in seqs.iter().enumerate() {
        let one = bert.forward_sequences(&[q]).unwrap();
        let got = &all[s * len * d..(s * len + q.len()) * d];
        assert_ulps(&format!("sequence {s} batched vs alone"), got, &one, 0);
        assert!(
            all[(s * len + q.len()) * d..(s + 1) * len * d].iter().all(|&v| v == 0.0),
            "padding not zero"
        );
    }
}

#[test]
fn broken_checkpoints_give_typed_errors() {
    let tmp = std::env::temp_dir().join(format!("edgellm-bert-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // No files at all.
    assert!(matches!(Bert::from_dir(&tmp), Err(BertError::Config(_))));
    // A config but a corrupt safetensors file.
    std::fs::copy(model_dir().join("config.json"), tmp.join("config.json")).unwrap();
    std::fs::write(tmp.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}").unwrap();
    let e = Bert::from_dir(&tmp).err().expect("corrupt file must fail");
    assert!(matches!(e, BertError::Safetensors(_)), "{e}");
    assert!(e.to_string().contains("invalid safetensors"), "{e}");
    // A token id outside the vocabulary.
    let bert = Bert::from_dir(model_dir()).unwrap();
    let e = bert.forward_sequences(&[&[101, 999_999, 102]]).unwrap_err();
    assert!(e.to_string().contains("999999"), "{e}");
    // Too long for the position table.
    let long = vec![100u32; 513];
    assert!(matches!(bert.forward_sequences(&[&long]), Err(BertError::TooLong { .. })));
    std::fs::remove_dir_all(&tmp).ok();
}
