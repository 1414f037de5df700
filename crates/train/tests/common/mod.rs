//! Helpers shared by the training tests: paths, a magnitude pruner, a tiny random BERT.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use edgellm_formats::{Value, ValueType};
use edgellm_models::bert::{Activation, BertConfig, BertError, BertWeights, ExportTensor, GgufExport};
use edgellm_models::{Linear, ModelError, TensorBytes};
use edgellm_train::SplitMix64;

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

/// Zeros in the layer linears of an export, and their number of entries.
pub fn zeros(tensors: &[ExportTensor]) -> (usize, usize) {
    tensors
        .iter()
        .filter(|t| is_layer_linear(&t.name))
        .fold((0, 0), |(z, n), t| (z + t.data.iter().filter(|v| **v == 0.0).count(), n + t.data.len()))
}

/// The config of the tiny test encoder.
pub fn tiny_config(hidden: usize, act: Activation) -> BertConfig {
    BertConfig {
        vocab_size: 50,
        hidden_size: hidden,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 2 * hidden,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: act,
        pad_token_id: 0,
    }
}

/// Random weights by Hugging Face name: matrices N(0, 0.3²), LayerNorm gains 1 + N(0, 0.1²),
/// biases N(0, 0.1²).
pub struct RandomWeights {
    seed: u64,
}

impl RandomWeights {
    pub fn new(seed: u64) -> RandomWeights {
        RandomWeights { seed }
    }

    fn rng(&self, name: &str) -> SplitMix64 {
        let h = name
            .bytes()
            .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        SplitMix64::new(h)
    }
}

impl BertWeights for RandomWeights {
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, BertError> {
        let mut r = self.rng(name);
        let gain = name.contains("LayerNorm.weight");
        Ok((0..len).map(|_| (if gain { 1.0 } else { 0.0 } + 0.1 * r.normal()) as f32).collect())
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Linear, BertError> {
        let mut r = self.rng(name);
        let bytes: Vec<u8> =
            (0..rows * cols).flat_map(|_| ((0.3 * r.normal()) as f32).to_le_bytes()).collect();
        Ok(Linear::new(name, edgellm_core::DType::F32, cols, rows, TensorBytes::Owned(bytes))?)
    }
}

/// Words of the tiny vocabulary (ids 5..50; 0..5 are [PAD] [UNK] [CLS] [SEP] [MASK]).
pub const TINY_WORDS: [&str; 45] = [
    "the", "a", "of", "and", "to", "in", "is", "was", "it", "for", "on", "as", "with", "by", "he", "at",
    "from", "his", "an", "were", "are", "which", "this", "be", "or", "has", "had", "first", "one", "their",
    "its", "new", "after", "who", "they", "two", "her", "she", "been", "other", "when", "there", "all",
    "during", ".",
];

/// Write a tiny random `bert` GGUF (with a WordPiece vocabulary of [`TINY_WORDS`], mean
/// pooling, normalization) to `path`; returns its export. `prune` zeroes that fraction of each
/// layer linear's rows.
pub fn write_tiny_gguf(path: &Path, config: &BertConfig, seed: u64, prune: f64) -> GgufExport {
    let w = RandomWeights::new(seed);
    let model =
        edgellm_train::TrainableBert::from_weights(config.clone(), &w, edgellm_train::DType::F32).unwrap();
    let tensors = model.export_tensors().unwrap();
    let mut tokens: Vec<Value> =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|t| Value::String(t.to_string())).collect();
    tokens.extend(TINY_WORDS.iter().map(|w| Value::String(format!("\u{2581}{w}"))));
    assert_eq!(tokens.len(), config.vocab_size);
    let types: Vec<Value> = (0..config.vocab_size).map(|i| Value::I32(if i < 5 { 3 } else { 1 })).collect();
    let u = |v: usize| Value::U32(v as u32);
    let metadata = vec![
        ("general.architecture".to_string(), Value::String("bert".into())),
        ("general.name".into(), Value::String("tiny".into())),
        ("bert.block_count".into(), u(config.num_hidden_layers)),
        ("bert.context_length".into(), u(config.max_position_embeddings)),
        ("bert.embedding_length".into(), u(config.hidden_size)),
        ("bert.feed_forward_length".into(), u(config.intermediate_size)),
        ("bert.attention.head_count".into(), u(config.num_attention_heads)),
        ("bert.attention.layer_norm_epsilon".into(), Value::F32(config.layer_norm_eps)),
        ("general.file_type".into(), Value::U32(0)),
        ("bert.attention.causal".into(), Value::Bool(false)),
        ("bert.pooling_type".into(), Value::U32(1)),
        ("tokenizer.ggml.token_type_count".into(), u(config.type_vocab_size)),
        ("tokenizer.ggml.model".into(), Value::String("bert".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(ValueType::String, tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(ValueType::I32, types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(3)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(0)),
        ("edgellm.embedding.normalize".into(), Value::Bool(true)),
    ];
    let mut export = GgufExport { metadata, tensors };
    magnitude_prune(&mut export, prune);
    export.write_f32(path).map_err(|e: ModelError| e).unwrap();
    export
}
