//! Helpers shared by the training tests: paths and a magnitude pruner.

#![allow(dead_code)]

use std::path::PathBuf;

use edgellm_models::bert::{ExportTensor, GgufExport};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn minilm() -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join("all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-models first",
        p.display()
    );
    p
}

pub fn wikitext() -> PathBuf {
    root().join("data/wikitext-2/wiki.valid.tokens")
}

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellm-train-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Is `name` (GGUF) one of the six linear weights of a layer?
pub fn is_layer_linear(name: &str) -> bool {
    name.starts_with("blk.")
        && ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down"]
            .iter()
            .any(|r| name.ends_with(&format!(".{r}.weight")))
}

/// Zero the `fraction` smallest-magnitude weights of every output row of every layer linear
/// (ties broken by position, so the count per row is exact).
pub fn magnitude_prune(export: &mut GgufExport, fraction: f64) {
    for t in export.tensors.iter_mut().filter(|t| is_layer_linear(&t.name)) {
        let cols = t.dims[0] as usize;
        let k = (cols as f64 * fraction).round() as usize;
        for row in t.data.chunks_exact_mut(cols) {
            let mut idx: Vec<usize> = (0..cols).collect();
            idx.sort_by(|&a, &b| row[a].abs().total_cmp(&row[b].abs()).then(a.cmp(&b)));
            for &i in &idx[..k] {
                row[i] = 0.0;
            }
        }
    }
}

/// Zeros in the layer linears of a list of tensors, and their number of entries.
pub fn zeros(tensors: &[ExportTensor]) -> (usize, usize) {
    tensors
        .iter()
        .filter(|t| is_layer_linear(&t.name))
        .fold((0, 0), |(z, n), t| (z + t.data.iter().filter(|v| **v == 0.0).count(), n + t.data.len()))
}

/// Intent training options that learn the tiny synthetic sets quickly (high rates, many epochs).
pub fn tiny_intent_options(mode: edgellm_train::intent::IntentMode) -> edgellm_train::intent::IntentOptions {
    edgellm_train::intent::IntentOptions {
        mode,
        head_epochs: 300,
        head_lr: 0.5,
        head_batch: 8,
        epochs: 15,
        lr: 3e-3,
        joint_head_lr: 1e-2,
        batch: 8,
        ..Default::default()
    }
}
