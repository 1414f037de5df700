//! BERT encoder (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
//! Language Understanding"), as Hugging Face `transformers`' `BertModel` computes it.
//!
//! Follows `modeling_bert.py`: word + absolute-position + token-type embeddings and a LayerNorm,
//! then post-norm encoder layers — `x = LN(x + O·attn(Qx, Kx, Vx))`, `x = LN(x + W₂·gelu(W₁x))` —
//! every projection with a bias. The output is the last hidden state; the pooler is not used
//! (sentence-transformers pools the hidden states itself).
//!
//! Departures from the obvious:
//! - Weights reach the model through [`BertWeights`] under their Hugging Face names; every
//!   projection and embedding table is a [`Linear`], so a GGUF or quantized copy plugs in by
//!   implementing that trait, without editing this file ([`gguf::GgufBert`] reads llama.cpp's
//!   `bert` GGUF layout).
//! - A padded batch is packed: positions whose attention mask is 0 are dropped before the first
//!   layer and attention runs within each sequence, so padding costs nothing, and a sequence's
//!   result does not depend on what else is in its batch (batched and one-at-a-time outputs are
//!   bit-identical). Masked positions of the output are zero.
//! - Projections run through [`dense_forward`]: the core's register-tiled matrix kernels on the
//!   [`Linear`]'s bytes, split over threads by weight rows (Q, K and V in one region), then the
//!   bias.

use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;

use edgellm_core::kernels;
use edgellm_core::parallel::{for_each_range, num_threads, DisjointWriter};
use edgellm_core::DType;
use edgellm_formats::mmap::Bytes;
use edgellm_formats::{ConfigError, HfConfig, SafetensorsError, SafetensorsFile};

use crate::{Linear, ModelError, TensorBytes};

pub mod gguf;

pub use gguf::{gguf_export, ExportTensor, GgufBert, GgufExport, GgufPooling};

/// An error loading or running a BERT model.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    /// The safetensors file is missing, corrupt or lacks a tensor.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// `config.json` is missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A weight has the wrong shape or type, a hyper-parameter is unsupported, or a token id is
    /// out of range.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A batch whose arrays do not have the sizes it declares.
    #[error("bad batch: {0}")]
    BadBatch(String),
    /// A sequence longer than the model's position table.
    #[error(
        "sequence {seq} reaches position {position}, but the model has {max} positions; truncate the input"
    )]
    TooLong {
        /// Index of the sequence in the batch.
        seq: usize,
        /// The highest position used.
        position: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
}

impl From<edgellm_formats::GgufError> for BertError {
    fn from(e: edgellm_formats::GgufError) -> BertError {
        BertError::Model(ModelError::Gguf(e))
    }
}

/// The activation of the intermediate (feed-forward) layer, as config.json's `hidden_act` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `"gelu"`: exact GELU, `x·Φ(x) = ½x(1 + erf(x/√2))`.
    Gelu,
    /// `"gelu_new"`, `"gelu_pytorch_tanh"`: the tanh approximation of GELU.
    GeluTanh,
    /// `"relu"`.
    Relu,
}

impl Activation {
    /// The activation `hidden_act` names, or `None` for one edgellm does not implement.
    pub fn from_name(name: &str) -> Option<Activation> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }

    /// Apply in place.
    pub fn apply(self, x: &mut [f32]) {
        match self {
            Activation::Gelu => kernels::gelu_erf(x),
            Activation::GeluTanh => x.iter_mut().for_each(|v| {
                let u = *v;
                *v = 0.5 * u * (1.0 + (0.797_884_6 * (u + 0.044_715 * u * u * u)).tanh());
            }),
            Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

/// Exact GELU: `½x(1 + erf(x/√2))` with libm's `erff`, one value at a time: the reference for
/// [`Activation::Gelu`], which runs the vectorized [`kernels::gelu_erf`] (within 1e-6 of it).
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The hyper-parameters of a BERT encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Vocabulary size (rows of the word-embedding table).
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of one attention head when it is not `hidden_size / num_attention_heads`: a model
    /// whose heads were pruned keeps the width of the heads it kept (GGUF
    /// `bert.attention.key_length`). `None`: the division.
    pub attention_head_size: Option<usize>,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the absolute-position table: the longest sequence the model takes.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
    /// Feed-forward activation.
    pub hidden_act: Activation,
    /// Id of the padding token.
    pub pad_token_id: u32,
}

impl BertConfig {
    /// The configuration in a Hugging Face `config.json`, checked to be a BERT this file runs.
    pub fn from_hf(c: &HfConfig) -> Result<BertConfig, BertError> {
        let bad = |m: String| BertError::Model(ModelError::BadConfig(m));
        if let Some(t) = c.model_type.as_deref() {
            if t != "bert" {
                return Err(bad(format!(
                    "model_type '{t}' is not supported by the BERT encoder (it runs model_type 'bert')"
                )));
            }
        }
        if let Some(p) = c.raw.get("position_embedding_type").and_then(|v| v.as_str()) {
            if p != "absolute" {
                return Err(bad(format!("position_embedding_type '{p}' is not supported (only 'absolute')")));
            }
        }
        let act_name = c.hidden_act.as_deref().unwrap_or("gelu");
        let hidden_act = Activation::from_name(act_name)
            .ok_or_else(|| bad(format!("hidden_act '{act_name}' is not supported (gelu, gelu_new, relu)")))?;
        let cfg = BertConfig {
            vocab_size: HfConfig::need(c.vocab_size, "vocab_size")?,
            hidden_size: HfConfig::need(c.hidden_size, "hidden_size")?,
            num_hidden_layers: HfConfig::need(c.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: HfConfig::need(c.num_attention_heads, "num_attention_heads")?,
            attention_head_size: None,
            intermediate_size: HfConfig::need(c.intermediate_size, "intermediate_size")?,
            max_position_embeddings: c.max_position_embeddings.unwrap_or(512),
            type_vocab_size: c.type_vocab_size.unwrap_or(2),
            layer_norm_eps: c.layer_norm_eps.unwrap_or(1e-12) as f32,
            hidden_act,
            pad_token_id: c.pad_token_id.unwrap_or(0).max(0) as u32,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check that the sizes are usable.
    pub fn validate(&self) -> Result<(), BertError> {
        let bad = |m: String| BertError::Model(ModelError::BadConfig(m));
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, v) in sizes {
            if v == 0 {
                return Err(bad(format!("{name} is 0")));
            }
        }
        match self.attention_head_size {
            None if self.head_dim() * self.num_attention_heads != self.hidden_size => {
                return Err(bad(format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                )));
            }
            Some(hd) if hd == 0 || hd.checked_mul(self.num_attention_heads).is_none_or(|w| w > 1 << 20) => {
                return Err(bad(format!(
                    "attention head size {hd} with {} heads is not usable",
                    self.num_attention_heads
                )));
            }
            _ => {}
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(bad(format!("layer_norm_eps {} is not a number >= 0", self.layer_norm_eps)));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.attention_head_size.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Width of the queries, keys and values of all heads together: `hidden_size` unless
    /// heads were pruned.
    pub fn attention_width(&self) -> usize {
        self.num_attention_heads * self.head_dim()
    }
}

/// Where a BERT's weights come from, by their Hugging Face names without a model prefix
/// (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...).
///
/// A safetensors checkpoint is one source ([`SafetensorsBert`]); a GGUF file or a quantized
/// copy is another: it maps the names and returns its [`Linear`]s in whatever type it stores.
pub trait BertWeights {
    /// A vector (a bias, a LayerNorm gain) of `len` values, as f32.
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, BertError>;

    /// A `[rows × cols]` matrix (PyTorch order: `rows` outputs of `cols` inputs; an embedding
    /// table has one row per id) as a [`Linear`] with `in_features = cols`.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Linear, BertError>;
}

/// The weights of a Hugging Face safetensors checkpoint (`model.safetensors`), with or without
/// the `bert.` prefix of task models. Matrices stay in the file's memory map
/// ([`TensorBytes::Mapped`], as GGUF weights do): loading copies only the small vectors.
pub struct SafetensorsBert {
    file: SafetensorsFile,
    bytes: Bytes,
    prefix: &'static str,
}

impl SafetensorsBert {
    /// Map and parse the checkpoint at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsBert, BertError> {
        let path = path.as_ref();
        let bytes =
            Bytes::map(path).map_err(|source| SafetensorsError::Io { path: path.to_path_buf(), source })?;
        SafetensorsBert::from_bytes(bytes)
    }

    /// Parse a checkpoint already in memory.
    pub fn from_bytes(bytes: Bytes) -> Result<SafetensorsBert, BertError> {
        let file = SafetensorsFile::from_bytes(bytes.clone())?;
        let prefix = if file.tensor("embeddings.word_embeddings.weight").is_err()
            && file.tensor("bert.embeddings.word_embeddings.weight").is_ok()
        {
            "bert."
        } else {
            ""
        };
        Ok(SafetensorsBert { file, bytes, prefix })
    }

    fn info(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<&edgellm_formats::safetensors::SafeTensorInfo, BertError> {
        let full = format!("{}{name}", self.prefix);
        let t = self.file.tensor(&full)?;
        if t.shape != shape {
            return Err(ModelError::ShapeMismatch {
                tensor: full,
                found: t.shape.iter().map(|&d| d as u64).collect(),
                expected: shape.iter().map(|&d| d as u64).collect(),
            }
            .into());
        }
        Ok(t)
    }
}

impl BertWeights for SafetensorsBert {
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, BertError> {
        let t = self.info(name, &[len])?;
        Ok(self.file.tensor_f32(&t.name)?.0)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Linear, BertError> {
        let t = self.info(name, &[rows, cols])?;
        let dtype: DType = t.dtype.ok_or_else(|| SafetensorsError::UnsupportedType {
            tensor: t.name.clone(),
            dtype: t.dtype_name.clone(),
        })?;
        let data =
            TensorBytes::Mapped { bytes: self.bytes.clone(), start: t.range.0, len: t.range.1 - t.range.0 };
        Ok(Linear::new(&t.name, dtype, cols, rows, data)?)
    }
}

/// LayerNorm over the last dimension: `(x − mean) / sqrt(var + eps) · γ + β`.
struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &dyn BertWeights, name: &str, d: usize, eps: f32) -> Result<LayerNorm, BertError> {
        Ok(LayerNorm {
            gamma: w.vector(&format!("{name}.weight"), d)?,
            beta: w.vector(&format!("{name}.bias"), d)?,
            eps,
        })
    }

    /// Normalize each row of `x` (`[n × d]`) in place.
    fn forward(&self, x: &mut [f32]) {
        self.add_forward(x, None);
    }

    /// `x = LN(x + r)` row by row (`r` the residual branch, `[n × d]`, or nothing), rows split
    /// over the threads in blocks of 16 (each row computed as alone: the split changes no bit).
    fn add_forward(&self, x: &mut [f32], r: Option<&[f32]>) {
        let d = self.gamma.len();
        par_rows(x, d, 16, |rows, part| {
            for (i, row) in rows.zip(part.chunks_exact_mut(d)) {
                if let Some(r) = r {
                    row.iter_mut().zip(&r[i * d..(i + 1) * d]).for_each(|(a, b)| *a += b);
                }
                self.normalize_row(row);
            }
        });
    }

    fn normalize_row(&self, row: &mut [f32]) {
        let d = row.len();
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + self.eps as f64).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *v = ((*v as f64 - mean) * inv) as f32 * g + b;
        }
    }
}

/// A projection with a bias: `y = W x + b`.
pub struct Dense {
    /// The weight, `[out × in]`, in any type a [`Linear`] stores.
    pub linear: Linear,
    /// The bias, `[out]`.
    pub bias: Vec<f32>,
}

impl Dense {
    /// The weight is repacked into the kernels' row-interleaved layout where its type has a
    /// packed kernel ([`Linear::packed`]): the many-token products run several times faster.
    fn load(w: &dyn BertWeights, name: &str, n_in: usize, n_out: usize) -> Result<Dense, BertError> {
        Ok(Dense {
            linear: w.matrix(&format!("{name}.weight"), n_out, n_in)?.packed(),
            bias: w.vector(&format!("{name}.bias"), n_out)?,
        })
    }

    /// `y[t] = W x[t] + b` for `n` tokens (`x`: `[n × in]`, `y`: `[n × out]`).
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) {
        dense_forward(&self.linear, Some(&self.bias), x, n, y);
    }
}

/// `y[t] = W x[t] (+ b)` for `n` tokens: `x` is `[n × in]`, `y` is `[n × out]`.
///
/// [`Linear::forward`]: the core's register-tiled kernels (SIMD where the CPU has it;
/// quantized weights dot with activations quantized to their activation format), the weight
/// rows split over threads (each thread reads its share of the weights once, for every
/// token), then the bias.
pub fn dense_forward(w: &Linear, bias: Option<&[f32]>, x: &[f32], n: usize, y: &mut [f32]) {
    w.forward(x, n, y);
    if let Some(b) = bias {
        add_bias(w, b, y);
    }
}

fn add_bias(w: &Linear, b: &[f32], y: &mut [f32]) {
    assert_eq!(b.len(), w.out_features, "{}: bias length", w.name);
    for row in y.chunks_exact_mut(w.out_features) {
        row.iter_mut().zip(b).for_each(|(v, &bb)| *v += bb);
    }
}

/// Run `f(rows, y_rows)` on one contiguous range of rows of `y` (rows of `row_len` values) per
/// thread, ranges being multiples of `grain` rows; `y_rows` is `y`'s part for `rows`.
fn par_rows<F>(y: &mut [f32], row_len: usize, grain: usize, f: F)
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    if y.is_empty() || row_len == 0 {
        return;
    }
    let n = y.len() / row_len;
    let per = n.div_ceil(num_threads().max(1)).div_ceil(grain).max(1) * grain;
    let parts: Vec<Mutex<(usize, &mut [f32])>> =
        y.chunks_mut(per * row_len).enumerate().map(|(i, c)| Mutex::new((i * per, c))).collect();
    for_each_range(parts.len(), 1, |r| {
        for i in r {
            let mut g = parts[i].lock().unwrap_or_else(|e| e.into_inner());
            let (start, part) = &mut *g;
            let rows = *start..*start + part.len() / row_len;
            f(rows, part);
        }
    });
}

/// One encoder layer.
struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    inter: Dense,
    out: Dense,
    out_norm: LayerNorm,
}

/// A batch of token sequences padded to one length, as `BertModel` takes it.
#[derive(Clone, Copy, Debug)]
pub struct BertBatch<'a> {
    /// Token ids, `[batch × seq_len]`.
    pub input_ids: &'a [u32],
    /// 1 for a real token, 0 for padding, `[batch × seq_len]`.
    pub attention_mask: &'a [u8],
    /// Segment ids, `[batch × seq_len]` (`None`: all 0).
    pub token_type_ids: Option<&'a [u32]>,
    /// Number of sequences.
    pub batch: usize,
    /// Padded length.
    pub seq_len: usize,
}

/// Tokens of a batch without padding: what the layers run on.
struct Packed {
    /// Word id, position and token type per kept token.
    ids: Vec<u32>,
    positions: Vec<usize>,
    types: Vec<u32>,
    /// Index of each kept token in the padded `[batch × seq_len]` layout.
    dest: Vec<usize>,
    /// Each sequence's range of kept tokens.
    seqs: Vec<Range<usize>>,
}

/// A BERT encoder's forward over unpadded sequences: the CPU [`Bert`], or another
/// backend's (`edgellm_gpu::GpuBert`).
pub trait BertEncoder: Send + Sync {
    /// Hyper-parameters.
    fn config(&self) -> &BertConfig;

    /// The last hidden state of each sequence (token type 0, positions from 0),
    /// concatenated: `[Σ len × hidden_size]`.
    fn forward_sequences(&self, seqs: &[&[u32]]) -> Result<Vec<f32>, BertError>;

    /// Where it runs: `CPU` or the GPU adapter.
    fn device(&self) -> String {
        "CPU".into()
    }
}

impl BertEncoder for Bert {
    fn config(&self) -> &BertConfig {
        &self.config
    }

    fn forward_sequences(&self, seqs: &[&[u32]]) -> Result<Vec<f32>, BertError> {
        Bert::forward_sequences(self, seqs)
    }
}

/// A BERT encoder with its weights.
pub struct Bert {
    /// Hyper-parameters.
    pub config: BertConfig,
    word: Linear,
    position: Linear,
    token_type: Linear,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl Bert {
    /// Load a Hugging Face BERT checkpoint: `config.json` and `model.safetensors` in `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Bert, BertError> {
        let dir = dir.as_ref();
        let config = BertConfig::from_hf(&HfConfig::open(dir.join("config.json"))?)?;
        Bert::load(config, &SafetensorsBert::open(dir.join("model.safetensors"))?)
    }

    /// Load a `bert` GGUF file (llama.cpp's layout, as [`gguf_export`] writes it), its weights
    /// in any type the [`Linear`] layers run.
    pub fn from_gguf(f: &edgellm_formats::GgufFile) -> Result<Bert, BertError> {
        Bert::load(BertConfig::from_gguf(f)?, &GgufBert::new(f))
    }

    /// Build the model from `config` and a weight source.
    pub fn load(config: BertConfig, w: &dyn BertWeights) -> Result<Bert, BertError> {
        config.validate()?;
        let (d, ff, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps);
        let aw = config.attention_width();
        let word = w.matrix("embeddings.word_embeddings.weight", config.vocab_size, d)?;
        let position =
            w.matrix("embeddings.position_embeddings.weight", config.max_position_embeddings, d)?;
        let token_type = w.matrix("embeddings.token_type_embeddings.weight", config.type_vocab_size, d)?;
        let emb_norm = LayerNorm::load(w, "embeddings.LayerNorm", d, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for il in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{il}");
            layers.push(Layer {
                query: Dense::load(w, &format!("{p}.attention.self.query"), d, aw)?,
                key: Dense::load(w, &format!("{p}.attention.self.key"), d, aw)?,
                value: Dense::load(w, &format!("{p}.attention.self.value"), d, aw)?,
                attn_out: Dense::load(w, &format!("{p}.attention.output.dense"), aw, d)?,
                attn_norm: LayerNorm::load(w, &format!("{p}.attention.output.LayerNorm"), d, eps)?,
                inter: Dense::load(w, &format!("{p}.intermediate.dense"), d, ff)?,
                out: Dense::load(w, &format!("{p}.output.dense"), ff, d)?,
                out_norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), d, eps)?,
            });
        }
        Ok(Bert { config, word, position, token_type, emb_norm, layers })
    }

    /// Bytes of weight data.
    pub fn weight_bytes(&self) -> u64 {
        let mut linears = vec![&self.word, &self.position, &self.token_type];
        for l in &self.layers {
            linears.extend([&l.query, &l.key, &l.value, &l.attn_out, &l.inter, &l.out].map(|d| &d.linear));
        }
        linears.iter().map(|l| l.storage_bytes() as u64).sum()
    }

    /// The last hidden state of a padded batch, `[batch × seq_len × hidden_size]`; rows at
    /// masked positions are zero.
    pub fn forward(&self, b: &BertBatch) -> Result<Vec<f32>, BertError> {
        let packed = self.pack(b)?;
        let d = self.config.hidden_size;
        let h = self.forward_packed(&packed)?;
        let mut out = vec![0.0f32; b.batch * b.seq_len * d];
        for (t, &dst) in packed.dest.iter().enumerate() {
            out[dst * d..(dst + 1) * d].copy_from_slice(&h[t * d..(t + 1) * d]);
        }
        Ok(out)
    }

    /// The last hidden state of each unpadded sequence (token type 0, positions from 0),
    /// concatenated: `[Σ len × hidden_size]`.
    pub fn forward_sequences(&self, seqs: &[&[u32]]) -> Result<Vec<f32>, BertError> {
        let mut packed = Packed { ids: vec![], positions: vec![], types: vec![], dest: vec![], seqs: vec![] };
        for (s, ids) in seqs.iter().enumerate() {
            if ids.len() > self.config.max_position_embeddings {
                return Err(BertError::TooLong {
                    seq: s,
                    position: ids.len() - 1,
                    max: self.config.max_position_embeddings,
                });
            }
            let start = packed.ids.len();
            packed.ids.extend_from_slice(ids);
            packed.positions.extend(0..ids.len());
            packed.types.resize(packed.ids.len(), 0);
            packed.seqs.push(start..packed.ids.len());
        }
        self.check_ids(&packed)?;
        self.forward_packed(&packed)
    }

    fn pack(&self, b: &BertBatch) -> Result<Packed, BertError> {
        let n = b.batch * b.seq_len;
        let bad_len = |what: &str, len: usize| {
            BertError::BadBatch(format!(
                "{what} has {len} values, batch {} × seq_len {} needs {n}",
                b.batch, b.seq_len
            ))
        };
        if b.input_ids.len() != n {
            return Err(bad_len("input_ids", b.input_ids.len()));
        }
        if b.attention_mask.len() != n {
            return Err(bad_len("attention_mask", b.attention_mask.len()));
        }
        if let Some(t) = b.token_type_ids {
            if t.len() != n {
                return Err(bad_len("token_type_ids", t.len()));
            }
        }
        let mut p = Packed { ids: vec![], positions: vec![], types: vec![], dest: vec![], seqs: vec![] };
        for s in 0..b.batch {
            let start = p.ids.len();
            for pos in 0..b.seq_len {
                let i = s * b.seq_len + pos;
                if b.attention_mask[i] == 0 {
                    continue;
                }
                if pos >= self.config.max_position_embeddings {
                    return Err(BertError::TooLong {
                        seq: s,
                        position: pos,
                        max: self.config.max_position_embeddings,
                    });
                }
                p.ids.push(b.input_ids[i]);
                p.positions.push(pos);
                p.types.push(b.token_type_ids.map_or(0, |t| t[i]));
                p.dest.push(i);
            }
            p.seqs.push(start..p.ids.len());
        }
        self.check_ids(&p)?;
        Ok(p)
    }

    fn check_ids(&self, p: &Packed) -> Result<(), BertError> {
        let c = &self.config;
        if let Some(&id) = p.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(ModelError::BadToken { id, n_vocab: c.vocab_size }.into());
        }
        if let Some(&t) = p.types.iter().find(|&&t| t as usize >= c.type_vocab_size) {
            return Err(BertError::BadBatch(format!(
                "token type {t} is outside the model's {} token types",
                c.type_vocab_size
            )));
        }
        Ok(())
    }

    /// The encoder over packed tokens: `[n × hidden_size]`.
    fn forward_packed(&self, p: &Packed) -> Result<Vec<f32>, BertError> {
        let c = &self.config;
        let (d, ff, n) = (c.hidden_size, c.intermediate_size, p.ids.len());
        // Embeddings: word + position + token type, then LayerNorm. x: [n × d]
        let mut x = vec![0.0f32; n * d];
        let mut tmp = vec![0.0f32; d];
        for t in 0..n {
            let xt = &mut x[t * d..(t + 1) * d];
            self.word.row_f32(p.ids[t] as usize, xt)?;
            self.position.row_f32(p.positions[t], &mut tmp)?;
            xt.iter_mut().zip(&tmp).for_each(|(a, b)| *a += b);
            self.token_type.row_f32(p.types[t] as usize, &mut tmp)?;
            xt.iter_mut().zip(&tmp).for_each(|(a, b)| *a += b);
        }
        self.emb_norm.forward(&mut x);

        let aw = c.attention_width();
        let mut q = vec![0.0f32; n * aw]; // [n × aw]
        let mut k = vec![0.0f32; n * aw]; // [n × aw]
        let mut v = vec![0.0f32; n * aw]; // [n × aw]
        let mut ctx = vec![0.0f32; n * aw]; // [n × aw], attention output before its projection
        let mut o = vec![0.0f32; n * d]; // [n × d], a projection back to the residual width
        let mut h = vec![0.0f32; n * ff]; // [n × ff]
        for l in &self.layers {
            // Q, K and V in one parallel region, from one quantization of x.
            Linear::forward_shared(
                &[&l.query.linear, &l.key.linear, &l.value.linear],
                &x,
                n,
                &mut [&mut q, &mut k, &mut v],
            );
            for (dense, y) in [(&l.query, &mut q), (&l.key, &mut k), (&l.value, &mut v)] {
                add_bias(&dense.linear, &dense.bias, y);
            }
            self.attention(&q, &k, &v, &p.seqs, &mut ctx);
            // x = LN(x + O·ctx + b)
            l.attn_out.forward(&ctx, n, &mut o);
            l.attn_norm.add_forward(&mut x, Some(&o));
            // x = LN(x + W₂·act(W₁x + b₁) + b₂)
            l.inter.forward(&x, n, &mut h);
            par_rows(&mut h, ff, 1, |_, part| c.hidden_act.apply(part));
            l.out.forward(&h, n, &mut o);
            l.out_norm.add_forward(&mut x, Some(&o));
        }
        Ok(x)
    }

    /// Scaled dot-product attention of every head within each sequence:
    /// `ctx_i = Σ_j softmax_j(q_i·k_j / √d_h) v_j` over the tokens `j` of `i`'s sequence.
    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], seqs: &[Range<usize>], ctx: &mut [f32]) {
        // Row stride of q, k, v and ctx: the width of all heads.
        let (d, n_head, hd) =
            (self.config.attention_width(), self.config.num_attention_heads, self.config.head_dim());
        let scale = 1.0 / (hd as f32).sqrt();
        // One task per (sequence, head); each writes its sequence's rows of its head's columns
        // of ctx, straight through the writer (no per-task block, lock or copy).
        let n_tasks = seqs.len() * n_head;
        let w = DisjointWriter::new(ctx);
        for_each_range(n_tasks, 1, |tasks| {
            // Per task: Kᵀ of the head (hd × len), the scores (len × len), the head's context
            // (len × hd). Q and V are read in place (rows d apart).
            let (mut kt, mut s, mut out) = (Vec::new(), Vec::new(), Vec::new());
            for task in tasks {
                let (si, head) = (task / n_head, task % n_head);
                let r = seqs[si].clone();
                let (len, off) = (r.len(), head * hd);
                if len == 0 {
                    continue;
                }
                // Kᵀ with its columns padded to a multiple of 16 (zeros), so that the scores'
                // product runs in whole register tiles; the padding's scores are not used.
                let lp = len.next_multiple_of(16);
                kt.clear();
                kt.resize(hd * lp, 0.0);
                for (t, i) in r.clone().enumerate() {
                    for (c, &kv) in k[i * d + off..i * d + off + hd].iter().enumerate() {
                        kt[c * lp + t] = kv;
                    }
                }
                // Scores S = Q·Kᵀ as one small product, then each row's softmax (scaled).
                s.clear();
                s.resize(len * lp, 0.0);
                let base = r.start * d + off;
                kernels::gemm_acc(len, hd, lp, &q[base..], d, &kt, lp, &mut s, lp);
                for row in s.chunks_exact_mut(lp) {
                    let row = &mut row[..len];
                    let mut max = f32::NEG_INFINITY;
                    for v in row.iter_mut() {
                        *v *= scale;
                        max = max.max(*v);
                    }
                    let inv = (1.0 / kernels::softmax_exp(row, max)) as f32;
                    row.iter_mut().for_each(|v| *v *= inv);
                }
                // Context = P·V.
                out.clear();
                out.resize(len * hd, 0.0);
                kernels::gemm_acc(len, len, hd, &s, lp, &v[base..], d, &mut out, hd);
                for (t, i) in r.clone().enumerate() {
                    // SAFETY: row i's columns off..off + hd belong to this task alone: one task
                    // per (sequence, head), and sequences' token ranges are disjoint.
                    unsafe { w.write_slice(i * d + off, &out[t * hd..(t + 1) * hd]) };
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_known_values() {
        // x·Φ(x) from the normal CDF.
        for (x, want) in [(0.0f32, 0.0f32), (1.0, 0.841_344_7), (-1.0, -0.158_655_25), (3.0, 2.995_950_2)] {
            assert!((gelu(x) - want).abs() < 1e-6, "gelu({x}) = {} want {want}", gelu(x));
        }
        let xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.004).collect();
        let mut ys = xs.clone();
        Activation::Gelu.apply(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            assert!((y - gelu(x)).abs() < 1e-6, "Activation::Gelu({x}) = {y}, gelu {}", gelu(x));
        }
    }

    #[test]
    fn dense_forward_matches_naive_for_odd_sizes() {
        for (n, k, m) in [(1, 3, 1), (5, 7, 9), (13, 16, 17), (4, 8, 8)] {
            let wv: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
            let bytes: Vec<u8> = wv.iter().flat_map(|v| v.to_le_bytes()).collect();
            let lin = Linear::new("w", DType::F32, k, m, TensorBytes::Owned(bytes)).unwrap();
            let b: Vec<f32> = (0..m).map(|i| i as f32 * 0.5).collect();
            let x: Vec<f32> = (0..n * k).map(|i| ((i * 3 % 13) as f32 - 6.0) * 0.2).collect();
            let mut y = vec![0.0f32; n * m];
            dense_forward(&lin, Some(&b), &x, n, &mut y);
            for t in 0..n {
                for r in 0..m {
                    let want: f32 = (0..k).map(|c| wv[r * k + c] * x[t * k + c]).sum::<f32>() + b[r];
                    assert!((y[t * m + r] - want).abs() < 1e-4, "n{n} k{k} m{m} t{t} r{r}");
                }
            }
        }
    }
}
