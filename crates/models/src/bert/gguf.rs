//! BERT in GGUF: export a sentence-transformers directory (safetensors) to GGUF metadata and f32
//! tensors under llama.cpp's `bert` architecture, and load the encoder back from such a file in
//! any tensor type.
//!
//! The layout follows what llama.cpp's `convert_hf_to_gguf.py` (`BertModel`) and gguf-py write
//! (facts read from them, no code taken):
//! - tensors `token_embd`, `position_embd`, `token_types`, `token_embd_norm`, and per layer
//!   `blk.N.attn_{q,k,v}`, `attn_output`, `attn_output_norm`, `ffn_up`, `ffn_down`,
//!   `layer_output_norm` (`.weight`/`.bias`); dims in GGUF order (`ne0` = row length first);
//! - `bert.*` hyper-parameters, `bert.attention.causal = false`, `bert.pooling_type` from the
//!   Pooling module (1 mean, 2 cls, 3 last);
//! - the vocabulary as `tokenizer.ggml.model = "bert"` with "phantom space" tokens: a word-initial
//!   piece gets a leading `▁`, a continuation loses its `##`, control tokens stay as they are;
//!   token types (1 normal, 3 control, 5 unused), `tokenizer.ggml.token_type_count`, the special
//!   ids, `add_bos/eos/sep_token` parsed from the post-processor as gguf-py does, and the
//!   normalizer's lowercase / strip-accents flags.
//!
//! For a quantizer: llama.cpp adds `position_embd` and `token_types` to the embeddings as F32
//! tensors (llama-quantize leaves both unquantized; a quantized one makes llama.cpp abort), so
//! keep them F32; edgellm itself loads any type.
//!
//! Departures: `tokenizer.ggml.pre` is `"default"` (the converter hashes a tokenization with the
//! `transformers` library, unavailable here; llama.cpp ignores the pre-tokenizer for `bert`
//! vocabularies). Three keys under `edgellm.` carry what llama.cpp has no key for: whether the
//! embedding is L2-normalized (sentence-transformers' Normalize module), the truncation length
//! (`max_seq_length`), and the feed-forward activation when it is not exact GELU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edgellm_core::DType;
use edgellm_formats::{GgufFile, GgufWriter, HfConfig, Value, ValueType};

use super::{Activation, BertConfig, BertError, BertWeights, SafetensorsBert};
use crate::linear::gguf_vector;
use crate::{Linear, ModelError};

/// Metadata key: the embedding is L2-normalized after pooling (bool).
pub const KEY_NORMALIZE: &str = "edgellm.embedding.normalize";
/// Metadata key: texts are truncated to this many tokens, special tokens included (u32).
pub const KEY_MAX_SEQ_LENGTH: &str = "edgellm.embedding.max_seq_length";
/// Metadata key: the feed-forward activation as config.json names it, when not `gelu` (string).
pub const KEY_HIDDEN_ACT: &str = "edgellm.bert.hidden_act";

/// GGUF token types (gguf-py `TokenType`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_UNUSED: i32 = 5;

/// One tensor of an export: its GGUF name, dims (GGUF order, `ne0` first) and f32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportTensor {
    /// GGUF tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dims in GGUF order (`ne0`, the row length, first).
    pub dims: Vec<u64>,
    /// Values, row-major (`ne0` fastest).
    pub data: Vec<f32>,
}

/// A model ready to be written as GGUF: metadata in write order and f32 tensors. A quantizer
/// converts the tensors it wants to; [`GgufExport::write_f32`] writes them all as F32.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufExport {
    /// Metadata key/value pairs in the order they are written.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in the order they are written.
    pub tensors: Vec<ExportTensor>,
}

impl GgufExport {
    /// A GGUF writer with the metadata and every tensor as F32.
    pub fn to_writer_f32(&self) -> Result<GgufWriter<'static>, ModelError> {
        let mut w = GgufWriter::new();
        for (k, v) in &self.metadata {
            w.set(k, v.clone());
        }
        for t in &self.tensors {
            let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(&t.name, &t.dims, DType::F32, bytes)?;
        }
        Ok(w)
    }

    /// Write the export as an all-F32 GGUF file.
    pub fn write_f32(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        Ok(self.to_writer_f32()?.write_file(path)?)
    }
}

fn source_err(path: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::Source { path: path.to_path_buf(), message: message.to_string() }
}

fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| source_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| source_err(path, format!("invalid JSON: {e}")))
}

fn bert_err(e: BertError) -> ModelError {
    match e {
        BertError::Model(m) => m,
        BertError::Safetensors(s) => ModelError::Source { path: PathBuf::new(), message: s.to_string() },
        BertError::Config(c) => ModelError::Source { path: PathBuf::new(), message: c.to_string() },
        other => ModelError::BadConfig(other.to_string()),
    }
}

/// The HF → GGUF tensor names of a BERT with `n_layer` layers, each with its GGUF dims given the
/// config.
fn tensor_names(c: &BertConfig) -> Vec<(String, String, Vec<u64>)> {
    let (d, ff) = (c.hidden_size as u64, c.intermediate_size as u64);
    let mut v = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            "token_embd.weight".into(),
            vec![d, c.vocab_size as u64],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            "position_embd.weight".into(),
            vec![d, c.max_position_embeddings as u64],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            "token_types.weight".into(),
            vec![d, c.type_vocab_size as u64],
        ),
        ("embeddings.LayerNorm.weight".into(), "token_embd_norm.weight".into(), vec![d]),
        ("embeddings.LayerNorm.bias".into(), "token_embd_norm.bias".into(), vec![d]),
    ];
    for il in 0..c.num_hidden_layers {
        let (hf, gg) = (format!("encoder.layer.{il}"), format!("blk.{il}"));
        let parts: [(&str, &str, u64, u64); 6] = [
            ("attention.self.query", "attn_q", d, d),
            ("attention.self.key", "attn_k", d, d),
            ("attention.self.value", "attn_v", d, d),
            ("attention.output.dense", "attn_output", d, d),
            ("intermediate.dense", "ffn_up", d, ff),
            ("output.dense", "ffn_down", ff, d),
        ];
        for (h, g, n_in, n_out) in parts {
            v.push((format!("{hf}.{h}.weight"), format!("{gg}.{g}.weight"), vec![n_in, n_out]));
            v.push((format!("{hf}.{h}.bias"), format!("{gg}.{g}.bias"), vec![n_out]));
        }
        for (h, g) in
            [("attention.output.LayerNorm", "attn_output_norm"), ("output.LayerNorm", "layer_output_norm")]
        {
            v.push((format!("{hf}.{h}.weight"), format!("{gg}.{g}.weight"), vec![d]));
            v.push((format!("{hf}.{h}.bias"), format!("{gg}.{g}.bias"), vec![d]));
        }
    }
    v
}

/// The GGUF name of a BERT weight's Hugging Face name (without a `bert.` prefix), if it has one.
pub fn gguf_tensor_name(hf_name: &str) -> Option<String> {
    let fixed = [
        ("embeddings.word_embeddings.weight", "token_embd.weight"),
        ("embeddings.position_embeddings.weight", "position_embd.weight"),
        ("embeddings.token_type_embeddings.weight", "token_types.weight"),
        ("embeddings.LayerNorm.weight", "token_embd_norm.weight"),
        ("embeddings.LayerNorm.bias", "token_embd_norm.bias"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf_name) {
        return Some(g.to_string());
    }
    let rest = hf_name.strip_prefix("encoder.layer.")?;
    let (il, rest) = rest.split_once('.')?;
    il.parse::<usize>().ok()?;
    let (part, suffix) = rest.rsplit_once('.')?;
    let g = match part {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "attention.output.LayerNorm" => "attn_output_norm",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        "output.LayerNorm" => "layer_output_norm",
        _ => return None,
    };
    Some(format!("blk.{il}.{g}.{suffix}"))
}

/// A vocabulary as the export reads it: token strings by id, and which ids are control tokens.
struct SourceVocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    lowercase: Option<bool>,
    strip_accents: Option<bool>,
    /// `(add_bos, add_eos, add_sep)` from the post-processor, where it says.
    add: (Option<bool>, Option<bool>, Option<bool>),
}

/// Read the vocabulary from `tokenizer.json` (preferred) or `vocab.txt`.
fn read_vocab(dir: &Path, vocab_size: usize) -> Result<SourceVocab, ModelError> {
    let tj = dir.join("tokenizer.json");
    let mut by_id: Vec<Option<String>> = vec![None; vocab_size];
    let mut control = vec![false; vocab_size];
    let mut sv = SourceVocab {
        tokens: vec![],
        types: vec![],
        lowercase: None,
        strip_accents: None,
        add: (None, None, None),
    };
    let put =
        |by_id: &mut Vec<Option<String>>, path: &Path, tok: &str, id: usize| -> Result<(), ModelError> {
            if id >= by_id.len() {
                return Err(source_err(
                    path,
                    format!("token '{tok}' has id {id}, beyond vocab_size {}", by_id.len()),
                ));
            }
            by_id[id] = Some(tok.to_string());
            Ok(())
        };
    if tj.is_file() {
        let j = read_json(&tj)?;
        let model = &j["model"];
        if model["type"].as_str().is_some_and(|t| t != "WordPiece") {
            return Err(source_err(&tj, format!("model type {} is not WordPiece", model["type"])));
        }
        let vocab =
            model["vocab"].as_object().ok_or_else(|| source_err(&tj, "model.vocab is not an object"))?;
        for (tok, id) in vocab {
            let id = id.as_u64().ok_or_else(|| source_err(&tj, format!("id of '{tok}' is not a number")))?;
            put(&mut by_id, &tj, tok, id as usize)?;
        }
        for t in j["added_tokens"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let (Some(tok), Some(id)) = (t["content"].as_str(), t["id"].as_u64()) else {
                return Err(source_err(&tj, "an added token lacks content or id"));
            };
            put(&mut by_id, &tj, tok, id as usize)?;
            // gguf-py: special added tokens (and ones that look special) are CONTROL.
            control[id as usize] = t["special"].as_bool().unwrap_or(false) || looks_special(tok);
        }
        parse_normalizer(&j["normalizer"], &mut sv);
        sv.add = parse_post_processor(&j["post_processor"]);
    } else {
        let vt = dir.join("vocab.txt");
        let text = std::fs::read_to_string(&vt)
            .map_err(|e| source_err(&vt, format!("{e} (the directory needs tokenizer.json or vocab.txt)")))?;
        for (id, tok) in text.lines().enumerate() {
            put(&mut by_id, &vt, tok, id)?;
            control[id] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].contains(&tok);
        }
        sv.lowercase = Some(true);
    }
    for (i, t) in by_id.into_iter().enumerate() {
        match t {
            Some(t) => {
                sv.types.push(if control[i] { TOKEN_CONTROL } else { TOKEN_NORMAL });
                sv.tokens.push(t);
            }
            None => {
                sv.tokens.push(format!("[PAD{i}]"));
                sv.types.push(TOKEN_UNUSED);
            }
        }
    }
    Ok(sv)
}

/// gguf-py's test for added tokens that look special (`<|...|>`, `[...]`, `<...>`).
fn looks_special(t: &str) -> bool {
    (t.starts_with("<|") && t.ends_with("|>")) || (t.starts_with('[') && t.ends_with(']') && t.len() > 2)
}

fn parse_normalizer(n: &serde_json::Value, sv: &mut SourceVocab) {
    match n["type"].as_str() {
        Some("Lowercase") => sv.lowercase = Some(true),
        Some("StripAccents") => sv.strip_accents = Some(true),
        Some("BertNormalizer") => {
            if let Some(b) = n["lowercase"].as_bool() {
                sv.lowercase = Some(b);
            }
            if let Some(b) = n["strip_accents"].as_bool() {
                sv.strip_accents = Some(b);
            }
        }
        Some("Sequence") => {
            for m in n["normalizers"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                parse_normalizer(m, sv);
            }
        }
        _ => {}
    }
}

/// `(add_bos, add_eos, add_sep)` from a `TemplateProcessing` or `BertProcessing` post-processor:
/// a leading special token means BOS ([CLS]) is added, a trailing one EOS ([SEP]); in the pair
/// template, a separator between A and B that is not also the trailing token means SEP.
fn parse_post_processor(p: &serde_json::Value) -> (Option<bool>, Option<bool>, Option<bool>) {
    let special = |e: &serde_json::Value| e["SpecialToken"]["id"].as_str().map(str::to_string);
    match p["type"].as_str() {
        Some("BertProcessing") => (Some(true), Some(true), Some(false)),
        Some("TemplateProcessing") => {
            let single = p["single"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if single.len() < 2 {
                return (None, None, None);
            }
            let (first, last) = (special(&single[0]), special(&single[single.len() - 1]));
            let pair = p["pair"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let mut add_sep = None;
            if !pair.is_empty() {
                let start = usize::from(first.is_some() && special(&pair[0]) == first);
                let stop = pair.len() - usize::from(last.is_some() && special(&pair[pair.len() - 1]) == last);
                let mid = &pair[start..stop.max(start)];
                if mid.len() > 2 {
                    let inner = &mid[1..mid.len() - 1];
                    let sep = inner.iter().any(|e| special(e).is_some());
                    // gguf-py: one separator counts only without a trailing special token.
                    add_sep = Some(sep && (last.is_none() || inner.len() == 2));
                }
            }
            (Some(first.is_some()), Some(last.is_some()), add_sep)
        }
        _ => (None, None, None),
    }
}

/// The pooling a sentence-transformers directory asks for, as llama.cpp's `pooling_type`
/// (1 mean, 2 cls, 3 last), and whether a Normalize module follows. `None` when there is no
/// `modules.json` or no Pooling module.
fn read_pooling(dir: &Path) -> Result<(Option<u32>, bool), ModelError> {
    let mp = dir.join("modules.json");
    if !mp.is_file() {
        return Ok((None, false));
    }
    let modules = read_json(&mp)?;
    let mut pooling = None;
    let mut normalize = false;
    for m in modules.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let kind = m["type"].as_str().unwrap_or("");
        if kind.ends_with("Normalize") {
            normalize = true;
        }
        if kind.ends_with("Pooling") {
            let pc = dir.join(m["path"].as_str().unwrap_or("")).join("config.json");
            let p = read_json(&pc)?;
            let on = |k: &str| p[k].as_bool() == Some(true);
            let t = if on("pooling_mode_mean_tokens") {
                1
            } else if on("pooling_mode_cls_token") {
                2
            } else if on("pooling_mode_lasttoken") {
                3
            } else {
                match p["pooling_mode"].as_str() {
                    Some("mean") => 1,
                    Some("cls") => 2,
                    Some("lasttoken") => 3,
                    _ => {
                        return Err(source_err(&pc, "only mean, cls and last-token pooling can be exported"))
                    }
                }
            };
            pooling = Some(t);
        }
    }
    Ok((pooling, normalize))
}

/// Export the sentence-transformers BERT in `dir` (`config.json`, `model.safetensors`,
/// `tokenizer.json` or `vocab.txt`, and where present `modules.json` with its Pooling config and
/// `sentence_bert_config.json`) as GGUF metadata and f32 tensors under llama.cpp's `bert`
/// architecture. See the module docs for the layout.
pub fn gguf_export(dir: &Path) -> Result<GgufExport, ModelError> {
    if !dir.is_dir() {
        return Err(source_err(dir, "not a directory (expected a sentence-transformers model directory)"));
    }
    let cfg_path = dir.join("config.json");
    let hf = HfConfig::open(&cfg_path).map_err(|e| source_err(&cfg_path, e))?;
    let c = BertConfig::from_hf(&hf).map_err(bert_err)?;
    let weights = SafetensorsBert::open(dir.join("model.safetensors")).map_err(bert_err)?;
    let vocab = read_vocab(dir, c.vocab_size)?;
    let (pooling, normalize) = read_pooling(dir)?;
    let st = dir.join("sentence_bert_config.json");
    let max_seq = if st.is_file() { read_json(&st)?["max_seq_length"].as_u64() } else { None };

    let u32v = |v: usize| Value::U32(v as u32);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("bert".into())),
        ("general.type".into(), Value::String("model".into())),
    ];
    if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
        md.push(("general.name".into(), Value::String(name.into())));
    }
    md.extend([
        ("bert.block_count".into(), u32v(c.num_hidden_layers)),
        ("bert.context_length".into(), u32v(c.max_position_embeddings)),
        ("bert.embedding_length".into(), u32v(c.hidden_size)),
        ("bert.feed_forward_length".into(), u32v(c.intermediate_size)),
        ("bert.attention.head_count".into(), u32v(c.num_attention_heads)),
        ("bert.attention.layer_norm_epsilon".into(), Value::F32(c.layer_norm_eps)),
        ("general.file_type".into(), Value::U32(0)),
        ("bert.attention.causal".into(), Value::Bool(false)),
    ]);
    if let Some(p) = pooling {
        md.push(("bert.pooling_type".into(), Value::U32(p)));
    }
    md.push(("tokenizer.ggml.token_type_count".into(), u32v(c.type_vocab_size)));
    md.push(("tokenizer.ggml.model".into(), Value::String("bert".into())));
    md.push(("tokenizer.ggml.pre".into(), Value::String("default".into())));
    let phantom: Vec<Value> = vocab
        .tokens
        .iter()
        .zip(&vocab.types)
        .map(|(t, &ty)| {
            Value::String(if ty == TOKEN_CONTROL {
                t.clone()
            } else if let Some(rest) = t.strip_prefix("##") {
                rest.to_string()
            } else {
                format!("\u{2581}{t}")
            })
        })
        .collect();
    md.push(("tokenizer.ggml.tokens".into(), Value::Array(ValueType::String, phantom)));
    md.push((
        "tokenizer.ggml.token_type".into(),
        Value::Array(ValueType::I32, vocab.types.iter().map(|&t| Value::I32(t)).collect()),
    ));
    // Special ids as gguf-py resolves them for a BERT tokenizer: BOS = [CLS], EOS = [SEP].
    let id_of = |s: &str| vocab.tokens.iter().position(|t| t == s).map(|i| i as u32);
    let specials = [
        ("bos", id_of("[CLS]")),
        ("eos", id_of("[SEP]")),
        ("unknown", id_of("[UNK]")),
        ("seperator", id_of("[SEP]")),
        ("padding", id_of("[PAD]").or(Some(c.pad_token_id))),
        ("mask", id_of("[MASK]")),
    ];
    for (k, id) in specials {
        if let Some(id) = id {
            md.push((format!("tokenizer.ggml.{k}_token_id"), Value::U32(id)));
        }
    }
    let (add_bos, add_eos, add_sep) = vocab.add;
    for (k, v) in [("bos", add_bos), ("eos", add_eos), ("sep", add_sep)] {
        if let Some(v) = v {
            md.push((format!("tokenizer.ggml.add_{k}_token"), Value::Bool(v)));
        }
    }
    if let Some(l) = vocab.lowercase {
        md.push(("tokenizer.ggml.normalizer.lowercase".into(), Value::Bool(l)));
    }
    if let Some(s) = vocab.strip_accents {
        md.push(("tokenizer.ggml.normalizer.strip_accents".into(), Value::Bool(s)));
    }
    md.push((KEY_NORMALIZE.into(), Value::Bool(normalize)));
    if let Some(n) = max_seq {
        md.push((KEY_MAX_SEQ_LENGTH.into(), Value::U32(n.min(c.max_position_embeddings as u64) as u32)));
    }
    if c.hidden_act != Activation::Gelu {
        let name = hf.hidden_act.clone().unwrap_or_default();
        md.push((KEY_HIDDEN_ACT.into(), Value::String(name)));
    }

    let mut tensors = Vec::new();
    for (hf_name, name, dims) in tensor_names(&c) {
        let data = if dims.len() == 1 {
            weights.vector(&hf_name, dims[0] as usize).map_err(bert_err)?
        } else {
            let lin = weights.matrix(&hf_name, dims[1] as usize, dims[0] as usize).map_err(bert_err)?;
            let mut v = vec![0.0f32; (dims[0] * dims[1]) as usize];
            for (r, row) in v.chunks_exact_mut(dims[0] as usize).enumerate() {
                lin.row_f32(r, row)?;
            }
            v
        };
        tensors.push(ExportTensor { name, dims, data });
    }
    Ok(GgufExport { metadata: md, tensors })
}

/// How a GGUF BERT turns token states into an embedding, from its metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgufPooling {
    /// `bert.pooling_type`: 1 mean, 2 cls, 3 last (mean when absent, as sentence-transformers).
    pub pooling_type: u32,
    /// L2-normalize the pooled vector ([`KEY_NORMALIZE`]; true when absent, as llama.cpp's
    /// embedding tools do by default).
    pub normalize: bool,
    /// Truncation length ([`KEY_MAX_SEQ_LENGTH`], else the context length).
    pub max_seq_length: usize,
}

impl GgufPooling {
    /// Read from a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<GgufPooling, ModelError> {
        let pooling_type = match f.get("bert.pooling_type") {
            None => 1,
            Some(_) => f.get_u64("bert.pooling_type")? as u32,
        };
        let normalize = match f.get(KEY_NORMALIZE) {
            None => true,
            Some(_) => f.get_bool(KEY_NORMALIZE)?,
        };
        let n_ctx = f.get_u64("bert.context_length")? as usize;
        let max_seq_length = match f.get(KEY_MAX_SEQ_LENGTH) {
            None => n_ctx,
            Some(_) => (f.get_u64(KEY_MAX_SEQ_LENGTH)? as usize).min(n_ctx),
        };
        Ok(GgufPooling { pooling_type, normalize, max_seq_length })
    }
}

impl BertConfig {
    /// The configuration in a `bert` GGUF file's metadata.
    pub fn from_gguf(f: &GgufFile) -> Result<BertConfig, BertError> {
        let arch = f.architecture()?;
        if arch != "bert" {
            return Err(ModelError::BadConfig(format!("architecture '{arch}' is not 'bert'")).into());
        }
        let u = |k: &str| -> Result<usize, BertError> { Ok(f.get_u64(k)? as usize) };
        let vocab_size = match f.get("tokenizer.ggml.tokens") {
            Some(_) => f.get_array("tokenizer.ggml.tokens")?.len(),
            None => f.need_tensor("token_embd.weight")?.dims.get(1).copied().unwrap_or(0) as usize,
        };
        let type_vocab_size = match f.get("tokenizer.ggml.token_type_count") {
            Some(_) => u("tokenizer.ggml.token_type_count")?,
            None => f.need_tensor("token_types.weight")?.dims.get(1).copied().unwrap_or(0) as usize,
        };
        let act_name = match f.get(KEY_HIDDEN_ACT) {
            Some(_) => f.get_str(KEY_HIDDEN_ACT)?.to_string(),
            None => "gelu".into(),
        };
        let hidden_act = Activation::from_name(&act_name).ok_or_else(|| {
            ModelError::BadConfig(format!(
                "{KEY_HIDDEN_ACT} '{act_name}' is not supported (gelu, gelu_new, relu)"
            ))
        })?;
        let pad = match f.get("tokenizer.ggml.padding_token_id") {
            Some(_) => f.get_u64("tokenizer.ggml.padding_token_id")? as u32,
            None => 0,
        };
        if let (Some(_), Some(_)) = (f.get("bert.attention.key_length"), f.get("bert.attention.value_length"))
        {
            let (k, v) = (u("bert.attention.key_length")?, u("bert.attention.value_length")?);
            if k != v {
                return Err(ModelError::BadConfig(format!(
                    "bert.attention.key_length {k} differs from value_length {v}"
                ))
                .into());
            }
        }
        let cfg = BertConfig {
            vocab_size,
            hidden_size: u("bert.embedding_length")?,
            num_hidden_layers: u("bert.block_count")?,
            num_attention_heads: u("bert.attention.head_count")?,
            attention_head_size: match f.get("bert.attention.key_length") {
                Some(_) => Some(u("bert.attention.key_length")?),
                None => None,
            },
            intermediate_size: u("bert.feed_forward_length")?,
            max_position_embeddings: u("bert.context_length")?,
            type_vocab_size,
            layer_norm_eps: f.get_f64("bert.attention.layer_norm_epsilon")? as f32,
            hidden_act,
            pad_token_id: pad,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The weights of a `bert` GGUF file, under their Hugging Face names: each matrix is a
/// [`Linear`] over the file's bytes in whatever type it is stored.
pub struct GgufBert<'f> {
    file: &'f GgufFile,
}

impl<'f> GgufBert<'f> {
    /// Weights from a parsed GGUF file.
    pub fn new(file: &'f GgufFile) -> GgufBert<'f> {
        GgufBert { file }
    }

    fn name(&self, hf: &str) -> Result<String, BertError> {
        gguf_tensor_name(hf)
            .ok_or_else(|| ModelError::BadConfig(format!("no GGUF name for the BERT weight '{hf}'")).into())
    }
}

impl BertWeights for GgufBert<'_> {
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, BertError> {
        Ok(gguf_vector(self.file, &self.name(name)?, len)?)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Linear, BertError> {
        Ok(Linear::from_gguf(self.file, &self.name(name)?, cols, rows)?)
    }
}

/// Token strings of a `bert` GGUF vocabulary back in WordPiece form (`##` for continuations),
/// with their ids: the inverse of the export's phantom-space mapping.
pub fn wordpiece_vocab(f: &GgufFile) -> Result<(HashMap<String, u32>, Vec<u32>), ModelError> {
    let model = f.get_str("tokenizer.ggml.model")?;
    if model != "bert" {
        return Err(ModelError::BadConfig(format!(
            "tokenizer.ggml.model is '{model}'; a WordPiece vocabulary ('bert') is needed"
        )));
    }
    let tokens = f.get_str_array("tokenizer.ggml.tokens")?;
    let types: Vec<i64> = match f.get("tokenizer.ggml.token_type") {
        Some(_) => {
            f.get_array("tokenizer.ggml.token_type")?.iter().map(|v| v.as_i64().unwrap_or(1)).collect()
        }
        None => vec![TOKEN_NORMAL as i64; tokens.len()],
    };
    let mut map = HashMap::with_capacity(tokens.len());
    let mut control = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let ty = types.get(i).copied().unwrap_or(TOKEN_NORMAL as i64);
        let wp = if ty == TOKEN_CONTROL as i64 {
            control.push(i as u32);
            t.to_string()
        } else if let Some(rest) = t.strip_prefix('\u{2581}') {
            rest.to_string()
        } else {
            format!("##{t}")
        };
        map.entry(wp).or_insert(i as u32);
    }
    Ok((map, control))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_llama_cpp_names() {
        assert_eq!(gguf_tensor_name("embeddings.word_embeddings.weight").unwrap(), "token_embd.weight");
        assert_eq!(
            gguf_tensor_name("encoder.layer.5.attention.output.LayerNorm.bias").unwrap(),
            "blk.5.attn_output_norm.bias"
        );
        assert_eq!(gguf_tensor_name("encoder.layer.0.output.dense.weight").unwrap(), "blk.0.ffn_down.weight");
        assert_eq!(gguf_tensor_name("encoder.layer.x.output.dense.weight"), None);
        assert_eq!(gguf_tensor_name("pooler.dense.weight"), None);
    }

    #[test]
    fn post_processor_flags_follow_gguf_py() {
        let bert: serde_json::Value = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "[SEP]"}}],
            "pair": [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "[SEP]"}},
                     {"Sequence": {"id": "B"}}, {"SpecialToken": {"id": "[SEP]"}}]
        });
        assert_eq!(parse_post_processor(&bert), (Some(true), Some(true), Some(false)));
        assert_eq!(parse_post_processor(&serde_json::Value::Null), (None, None, None));
    }
}
