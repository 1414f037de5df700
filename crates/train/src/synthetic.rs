//! A small random BERT for tests and examples: seeded random weights behind
//! [`BertWeights`], and a complete `bert` GGUF (WordPiece vocabulary of [`TINY_WORDS`], mean
//! pooling, L2 normalization) that the runtime, `edgellm embed` and `edgellm distill` load.

use std::path::Path;

use edgellm_core::DType as CoreType;
use edgellm_formats::{Value, ValueType};
use edgellm_models::bert::{Activation, BertConfig, BertError, BertWeights, GgufExport};
use edgellm_models::{Linear, TensorBytes};

use crate::{SplitMix64, TrainError, TrainableBert};

/// Words of the tiny vocabulary: ids 5.., after `[PAD] [UNK] [CLS] [SEP] [MASK]`.
pub const TINY_WORDS: [&str; 45] = [
    "the", "a", "of", "and", "to", "in", "is", "was", "it", "for", "on", "as", "with", "by", "he", "at",
    "from", "his", "an", "were", "are", "which", "this", "be", "or", "has", "had", "first", "one", "their",
    "its", "new", "after", "who", "they", "two", "her", "she", "been", "other", "when", "there", "all",
    "during", ".",
];

/// A tiny encoder's configuration: 2 layers, 2 heads, `hidden` wide, FFN `2·hidden`, the
/// 50-token vocabulary of [`TINY_WORDS`], 16 positions.
pub fn tiny_config(hidden: usize, act: Activation) -> BertConfig {
    BertConfig {
        vocab_size: 5 + TINY_WORDS.len(),
        hidden_size: hidden,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        attention_head_size: None,
        intermediate_size: 2 * hidden,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: act,
        pad_token_id: 0,
    }
}

/// Seeded random weights by name: matrices N(0, 0.3²), LayerNorm gains 1 + N(0, 0.1²), other
/// vectors N(0, 0.1²). Each tensor's values depend on the seed and its name only.
pub struct RandomWeights {
    seed: u64,
}

impl RandomWeights {
    /// Weights from `seed`.
    pub fn new(seed: u64) -> RandomWeights {
        RandomWeights { seed }
    }

    fn rng(&self, name: &str) -> SplitMix64 {
        // FNV-1a of the name, mixed with the seed.
        let h = name
            .bytes()
            .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        SplitMix64::new(h)
    }
}

impl BertWeights for RandomWeights {
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, BertError> {
        let mut r = self.rng(name);
        let base = if name.contains("LayerNorm.weight") { 1.0 } else { 0.0 };
        Ok((0..len).map(|_| (base + 0.1 * r.normal()) as f32).collect())
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Linear, BertError> {
        let mut r = self.rng(name);
        let bytes: Vec<u8> =
            (0..rows * cols).flat_map(|_| ((0.3 * r.normal()) as f32).to_le_bytes()).collect();
        Ok(Linear::new(name, CoreType::F32, cols, rows, TensorBytes::Owned(bytes))?)
    }
}

/// A complete `bert` GGUF export of `config` (its vocabulary must be
/// [`tiny_config`]'s) with [`RandomWeights`] from `seed`.
pub fn tiny_export(config: &BertConfig, seed: u64) -> Result<GgufExport, TrainError> {
    if config.vocab_size != 5 + TINY_WORDS.len() {
        return Err(TrainError::BadOptions(format!(
            "a tiny model has a vocabulary of {} tokens, not {}",
            5 + TINY_WORDS.len(),
            config.vocab_size
        )));
    }
    let model = TrainableBert::from_weights(config.clone(), &RandomWeights::new(seed), crate::DType::F32)?;
    let mut tokens: Vec<Value> =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|t| Value::String(t.to_string())).collect();
    tokens.extend(TINY_WORDS.iter().map(|w| Value::String(format!("\u{2581}{w}"))));
    let types: Vec<Value> = (0..tokens.len()).map(|i| Value::I32(if i < 5 { 3 } else { 1 })).collect();
    let u = |v: usize| Value::U32(v as u32);
    let mut metadata = vec![
        ("general.architecture".to_string(), Value::String("bert".into())),
        ("general.name".into(), Value::String("tiny-random-bert".into())),
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
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(ValueType::String, tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(ValueType::I32, types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(3)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.seperator_token_id".into(), Value::U32(3)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.mask_token_id".into(), Value::U32(4)),
        ("edgellm.embedding.normalize".into(), Value::Bool(true)),
    ];
    if let Some(hd) = config.attention_head_size {
        metadata.push(("bert.attention.key_length".into(), u(hd)));
        metadata.push(("bert.attention.value_length".into(), u(hd)));
    }
    if config.hidden_act != Activation::Gelu {
        let name = match config.hidden_act {
            Activation::GeluTanh => "gelu_new",
            _ => "relu",
        };
        metadata.push(("edgellm.bert.hidden_act".into(), Value::String(name.into())));
    }
    Ok(GgufExport { metadata, tensors: model.export_tensors()? })
}

/// Write [`tiny_export`] as an F32 GGUF at `path`.
pub fn write_tiny_gguf(path: &Path, config: &BertConfig, seed: u64) -> Result<GgufExport, TrainError> {
    let e = tiny_export(config, seed)?;
    e.write_f32(path)?;
    Ok(e)
}

/// `n` lines of random [`TINY_WORDS`] (8 to 12 words each, ending in " ."), a training text
/// for a tiny model.
pub fn tiny_text(n: usize, seed: u64) -> String {
    let mut r = SplitMix64::new(seed);
    let mut out = String::new();
    for _ in 0..n {
        let k = 8 + r.below(5);
        let words: Vec<&str> = (0..k).map(|_| TINY_WORDS[r.below(TINY_WORDS.len() - 1)]).collect();
        out.push_str(&words.join(" "));
        out.push_str(" .\n");
    }
    out
}

/// Labels of [`tiny_intents`], each with the word that marks it.
pub const TINY_INTENTS: [(&str, &str); 3] =
    [("he", "about_him"), ("she", "about_her"), ("they", "about_them")];

/// `n` labelled utterances over [`TINY_WORDS`] for a tiny model: 3 to 6 filler words with one
/// marker word of [`TINY_INTENTS`] at a random place; the marker decides the label (labels
/// cycle, so each has `n / 3` or one more).
pub fn tiny_intents(n: usize, seed: u64) -> Vec<edgellm_eval::intent::IntentExample> {
    let mut r = SplitMix64::new(seed);
    let filler: Vec<&str> = TINY_WORDS
        .iter()
        .copied()
        .filter(|w| !TINY_INTENTS.iter().any(|(m, _)| m == w) && *w != ".")
        .collect();
    (0..n)
        .map(|i| {
            let (marker, label) = TINY_INTENTS[i % TINY_INTENTS.len()];
            let mut words: Vec<&str> = (0..3 + r.below(4)).map(|_| filler[r.below(filler.len())]).collect();
            words.insert(r.below(words.len() + 1), marker);
            edgellm_eval::intent::IntentExample { text: words.join(" "), label: label.to_string() }
        })
        .collect()
}
