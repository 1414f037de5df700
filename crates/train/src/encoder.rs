//! The BERT encoder (Devlin et al., 2019) as differentiable candle ops, for training.
//!
//! Computes what [`edgellm_models::bert::Bert`] computes — word + position + token-type
//! embeddings and a LayerNorm, then post-norm layers `x = LN(x + O·attn(Qx, Kx, Vx))`,
//! `x = LN(x + W₂·act(W₁x))` — over a padded batch, with padding keys masked out of the
//! attention (an additive −10⁹, which makes their softmax weight exactly 0). The sentence
//! embedding is the mean over real tokens ([`mean_pool`]), L2-normalized ([`l2_normalize`]).
//!
//! Departures from the obvious:
//! - LayerNorm and softmax are written in primitive ops (mean, subtract, exp, sum, divide):
//!   candle-nn's fused kernels for both have no backward pass.
//! - Every parameter is a [`Param`]: a candle [`Var`] under its Hugging Face name, its kind,
//!   and for the six linear weights of each layer a pruning mask, `weight != 0` as loaded.
//!   [`crate::MaskedAdamW`] keeps masked entries at exactly zero. A frozen parameter enters
//!   the graph detached, so backward computes no gradient for it.
//! - Quantization-aware training ([`TrainableBert::set_fake_quant`]): the forward pass sees each
//!   linear weight rounded to a GGUF type by the reference quantizer the export uses, and
//!   backward passes the gradient straight through to the F32 weight (`w + (q(w) − w)`
//!   detached): the network learns weights whose rounded copy classifies well.
//! - Weights are read through [`BertWeights`] (dequantized row by row with
//!   [`edgellm_models::Linear::row_f32`]), so any source the runtime loads, trains.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use edgellm_core::DType as CoreDType;
use edgellm_formats::{GgufFile, GgufWriter, HfConfig, Value};
use edgellm_models::bert::gguf::gguf_tensor_name;
use edgellm_models::bert::{
    gguf_export, Activation, BertConfig, BertWeights, ExportTensor, GgufBert, GgufExport, SafetensorsBert,
};
use edgellm_runtime::embed::{Embedder, Pooling};

use crate::TrainError;

/// The additive attention bias of a padding key: its exponential underflows to exactly 0.
const MASKED: f64 = -1e9;

/// What a parameter is, for freezing and masking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A row table: word, position or token-type embeddings.
    Embedding,
    /// A LayerNorm gain or bias.
    Norm,
    /// A linear layer's weight matrix (`[out × in]`): the ones pruning zeroes and masks keep.
    LinearWeight,
    /// A linear layer's bias.
    LinearBias,
}

/// One parameter of the encoder.
#[derive(Debug)]
pub struct Param {
    /// Hugging Face name without a model prefix (`encoder.layer.0.attention.self.query.weight`).
    pub name: String,
    /// What it is.
    pub kind: ParamKind,
    /// The values; a matrix is `[rows × cols]` in PyTorch order (`[out × in]`, or one row per
    /// id of an embedding table).
    pub var: Var,
    /// 1 where the weight may be non-zero, 0 where it must stay zero (same shape as `var`);
    /// `None` when the weight had no zeros as loaded, or is not a linear weight.
    pub mask: Option<Tensor>,
    /// Whether the optimizer updates it (and backward computes its gradient).
    pub trainable: bool,
}

impl Param {
    fn new(
        name: String,
        kind: ParamKind,
        values: Vec<f32>,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Param, TrainError> {
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?;
        let mask = if kind == ParamKind::LinearWeight {
            let m = t.ne(0.0)?.to_dtype(dtype)?;
            let kept = m.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            (kept < t.elem_count() as f64).then_some(m)
        } else {
            None
        };
        Ok(Param { name, kind, var: Var::from_tensor(&t)?, mask, trainable: true })
    }

    /// The value as the forward pass uses it: tracked by autograd if trainable, detached if not.
    pub fn value(&self) -> Tensor {
        if self.trainable {
            self.var.as_tensor().clone()
        } else {
            self.var.as_tensor().detach()
        }
    }

    /// Entries the mask holds at zero (0 without a mask).
    pub fn masked_count(&self) -> Result<usize, TrainError> {
        Ok(match &self.mask {
            None => 0,
            Some(m) => m.elem_count() - m.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? as usize,
        })
    }

    /// The values as f32, row-major, with every zero written as +0.0.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, TrainError> {
        let mut v = self.var.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        v.iter_mut().filter(|x| **x == 0.0).for_each(|x| *x = 0.0);
        Ok(v)
    }
}

/// `y = x Wᵀ + b`.
#[derive(Debug)]
struct Dense {
    w: Param,
    b: Param,
}

impl Dense {
    fn load(
        w: &dyn BertWeights,
        name: &str,
        n_in: usize,
        n_out: usize,
        dt: DType,
    ) -> Result<Dense, TrainError> {
        Ok(Dense {
            w: matrix(w, &format!("{name}.weight"), ParamKind::LinearWeight, n_out, n_in, dt)?,
            b: vector(w, &format!("{name}.bias"), ParamKind::LinearBias, n_out, dt)?,
        })
    }

    /// `x`: `[n × in]` → `[n × out]`; with `fake`, the weight as rounded to that type.
    fn forward(&self, x: &Tensor, fake: Option<CoreDType>) -> Result<Tensor, TrainError> {
        let w = match fake {
            None => self.w.value(),
            Some(ty) => straight_through(&self.w.value(), ty)?,
        };
        Ok(x.matmul(&w.t()?)?.broadcast_add(&self.b.value())?)
    }
}

/// `w` quantized to `ty` and back, row by row (rows are the GGUF rows: `[out × in]`), with
/// the reference quantizer.
fn rounded(w: &Tensor, ty: CoreDType) -> Result<Tensor, TrainError> {
    let (rows, cols) = w.dims2()?;
    if !cols.is_multiple_of(ty.block_size()) {
        return Err(TrainError::BadOptions(format!(
            "fake quantization to {ty}: rows of {cols} values are not whole blocks of {}",
            ty.block_size()
        )));
    }
    let v = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let bad = |e: edgellm_core::quant::QuantError| TrainError::BadOptions(format!("fake quantization: {e}"));
    let q = edgellm_core::quant::quantize(ty, &v).map_err(bad)?;
    let back = edgellm_core::quant::dequantize(ty, &q, v.len()).map_err(bad)?;
    Ok(Tensor::from_vec(back, (rows, cols), w.device())?.to_dtype(w.dtype())?)
}

/// The straight-through estimator: the value of `rounded(w)`, the gradient of `w`.
fn straight_through(w: &Tensor, ty: CoreDType) -> Result<Tensor, TrainError> {
    let q = rounded(&w.detach(), ty)?;
    Ok(w.add(&(q - w)?.detach())?)
}

#[derive(Debug)]
struct Norm {
    gamma: Param,
    beta: Param,
}

impl Norm {
    fn load(w: &dyn BertWeights, name: &str, d: usize, dt: DType) -> Result<Norm, TrainError> {
        Ok(Norm {
            gamma: vector(w, &format!("{name}.weight"), ParamKind::Norm, d, dt)?,
            beta: vector(w, &format!("{name}.bias"), ParamKind::Norm, d, dt)?,
        })
    }

    /// LayerNorm over the last dimension: `(x − mean) / sqrt(var + eps) · γ + β`.
    fn forward(&self, x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
        let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.gamma.value())?.broadcast_add(&self.beta.value())
    }
}

#[derive(Debug)]
struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    inter: Dense,
    out: Dense,
    out_norm: Norm,
}

fn vector(
    w: &dyn BertWeights,
    name: &str,
    kind: ParamKind,
    len: usize,
    dt: DType,
) -> Result<Param, TrainError> {
    Param::new(name.into(), kind, w.vector(name, len)?, &[len], dt)
}

fn matrix(
    w: &dyn BertWeights,
    name: &str,
    kind: ParamKind,
    rows: usize,
    cols: usize,
    dt: DType,
) -> Result<Param, TrainError> {
    let lin = w.matrix(name, rows, cols)?;
    let mut v = vec![0.0f32; rows * cols];
    for (r, row) in v.chunks_exact_mut(cols).enumerate() {
        lin.row_f32(r, row)?;
    }
    Param::new(name.into(), kind, v, &[rows, cols], dt)
}

/// A padded batch of token sequences, as the encoder takes it.
#[derive(Clone, Debug)]
pub struct TokenBatch {
    /// Token ids, `[batch × seq_len]` (u32), padding with the pad id.
    pub ids: Tensor,
    /// 1 for a real token, 0 for padding, `[batch × seq_len]`, in the encoder's float type.
    pub mask: Tensor,
    /// Segment ids, `[batch × seq_len]` (u32); `None`: all 0.
    pub type_ids: Option<Tensor>,
    /// Number of sequences.
    pub batch: usize,
    /// Padded length.
    pub seq_len: usize,
}

/// A BERT encoder whose parameters are candle [`Var`]s.
#[derive(Debug)]
pub struct TrainableBert {
    /// Hyper-parameters.
    pub config: BertConfig,
    dtype: DType,
    word: Param,
    position: Param,
    token_type: Param,
    emb_norm: Norm,
    layers: Vec<Layer>,
    /// Straight-through rounding of the linear weights ([`Self::set_fake_quant`]).
    fake_quant: Option<CoreDType>,
}

impl TrainableBert {
    /// Build the encoder from `config` and a weight source, every value converted to `dtype`
    /// (F32 to train; F64 for exact gradient checks). Linear weights that hold zeros get a
    /// mask (`weight != 0`).
    pub fn from_weights(
        config: BertConfig,
        w: &dyn BertWeights,
        dtype: DType,
    ) -> Result<TrainableBert, TrainError> {
        config.validate()?;
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(TrainError::BadOptions(format!("the encoder trains in f32 or f64, not {dtype:?}")));
        }
        let (d, ff, c) = (config.hidden_size, config.intermediate_size, &config);
        let aw = c.attention_width();
        let e = ParamKind::Embedding;
        let word = matrix(w, "embeddings.word_embeddings.weight", e, c.vocab_size, d, dtype)?;
        let position =
            matrix(w, "embeddings.position_embeddings.weight", e, c.max_position_embeddings, d, dtype)?;
        let token_type =
            matrix(w, "embeddings.token_type_embeddings.weight", e, c.type_vocab_size, d, dtype)?;
        let emb_norm = Norm::load(w, "embeddings.LayerNorm", d, dtype)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for il in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{il}");
            layers.push(Layer {
                query: Dense::load(w, &format!("{p}.attention.self.query"), d, aw, dtype)?,
                key: Dense::load(w, &format!("{p}.attention.self.key"), d, aw, dtype)?,
                value: Dense::load(w, &format!("{p}.attention.self.value"), d, aw, dtype)?,
                attn_out: Dense::load(w, &format!("{p}.attention.output.dense"), aw, d, dtype)?,
                attn_norm: Norm::load(w, &format!("{p}.attention.output.LayerNorm"), d, dtype)?,
                inter: Dense::load(w, &format!("{p}.intermediate.dense"), d, ff, dtype)?,
                out: Dense::load(w, &format!("{p}.output.dense"), ff, d, dtype)?,
                out_norm: Norm::load(w, &format!("{p}.output.LayerNorm"), d, dtype)?,
            });
        }
        Ok(TrainableBert { config, dtype, word, position, token_type, emb_norm, layers, fake_quant: None })
    }

    /// The float type of the parameters and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every parameter, in the order of the GGUF export (embeddings, then each layer's
    /// projections with their biases, then its norms).
    pub fn params(&self) -> Vec<&Param> {
        let mut v =
            vec![&self.word, &self.position, &self.token_type, &self.emb_norm.gamma, &self.emb_norm.beta];
        for l in &self.layers {
            for d in [&l.query, &l.key, &l.value, &l.attn_out, &l.inter, &l.out] {
                v.extend([&d.w, &d.b]);
            }
            for n in [&l.attn_norm, &l.out_norm] {
                v.extend([&n.gamma, &n.beta]);
            }
        }
        v
    }

    /// Every parameter, mutably (to freeze or unfreeze), in [`Self::params`]' order.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![
            &mut self.word,
            &mut self.position,
            &mut self.token_type,
            &mut self.emb_norm.gamma,
            &mut self.emb_norm.beta,
        ];
        for l in &mut self.layers {
            for d in [&mut l.query, &mut l.key, &mut l.value, &mut l.attn_out, &mut l.inter, &mut l.out] {
                v.extend([&mut d.w, &mut d.b]);
            }
            for n in [&mut l.attn_norm, &mut l.out_norm] {
                v.extend([&mut n.gamma, &mut n.beta]);
            }
        }
        v
    }

    /// Quantization-aware training: from now on the forward pass sees every linear weight
    /// rounded to `matrices` (quantized and dequantized by the reference quantizer, as the
    /// export to that type will), and the gradient passes straight through to the F32 weight.
    /// `word_embeddings` rounds the word table once, now, in place: it must be frozen (its
    /// rounded values are what the export then writes, so quantizing the table to the same
    /// type afterwards changes little or nothing). `None` for `matrices` turns rounding off.
    pub fn set_fake_quant(
        &mut self,
        matrices: Option<CoreDType>,
        word_embeddings: Option<CoreDType>,
    ) -> Result<(), TrainError> {
        let d = self.config.hidden_size;
        for ty in matrices.iter().chain(word_embeddings.iter()) {
            if !ty.is_quantized() || ty.id() >= 1024 || !d.is_multiple_of(ty.block_size()) {
                return Err(TrainError::BadOptions(format!(
                    "fake quantization to {ty}: pick a dense quantized type whose blocks divide the hidden size {d}"
                )));
            }
        }
        if let Some(ty) = word_embeddings {
            if self.word.trainable {
                return Err(TrainError::BadOptions(
                    "rounding the word embeddings needs them frozen (they are rounded once, in place)".into(),
                ));
            }
            let r = rounded(self.word.var.as_tensor(), ty)?;
            self.word.var.set(&r)?;
        }
        self.fake_quant = matrices;
        Ok(())
    }

    /// The type the linear weights are rounded to in the forward pass, if any.
    pub fn fake_quant(&self) -> Option<CoreDType> {
        self.fake_quant
    }

    /// Freeze (or unfreeze) every parameter of `kind`.
    pub fn set_trainable(&mut self, kind: ParamKind, trainable: bool) {
        self.params_mut().into_iter().filter(|p| p.kind == kind).for_each(|p| p.trainable = trainable);
    }

    /// The variables the optimizer should update.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.params().into_iter().filter(|p| p.trainable).map(|p| p.var.clone()).collect()
    }

    /// Set every masked entry to zero (after loading new values, say).
    pub fn apply_masks(&self) -> Result<(), TrainError> {
        for p in self.params() {
            if let Some(m) = &p.mask {
                p.var.set(&p.var.as_tensor().mul(m)?)?;
            }
        }
        Ok(())
    }

    /// Masked entries over all linear weights, and the number of linear-weight entries.
    pub fn masked_fraction(&self) -> Result<(usize, usize), TrainError> {
        let (mut masked, mut total) = (0, 0);
        for p in self.params().into_iter().filter(|p| p.kind == ParamKind::LinearWeight) {
            masked += p.masked_count()?;
            total += p.var.elem_count();
        }
        Ok((masked, total))
    }

    /// A padded batch of `seqs` (each at least one token), checked against the vocabulary and
    /// the position table.
    pub fn batch(&self, seqs: &[&[u32]]) -> Result<TokenBatch, TrainError> {
        let c = &self.config;
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
            return Err(TrainError::BadBatch("every batch needs at least one non-empty sequence".into()));
        }
        if len > c.max_position_embeddings {
            return Err(TrainError::BadBatch(format!(
                "a sequence of {len} tokens is longer than the model's {} positions",
                c.max_position_embeddings
            )));
        }
        if let Some(&id) = seqs.iter().flat_map(|s| s.iter()).find(|&&id| id as usize >= c.vocab_size) {
            return Err(TrainError::BadBatch(format!(
                "token id {id} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let b = seqs.len();
        let mut ids = vec![c.pad_token_id; b * len]; // [b × len]
        let mut mask = vec![0.0f32; b * len]; // [b × len]
        for (s, q) in seqs.iter().enumerate() {
            ids[s * len..s * len + q.len()].copy_from_slice(q);
            mask[s * len..s * len + q.len()].fill(1.0);
        }
        Ok(TokenBatch {
            ids: Tensor::from_vec(ids, (b, len), &Device::Cpu)?,
            mask: Tensor::from_vec(mask, (b, len), &Device::Cpu)?.to_dtype(self.dtype)?,
            type_ids: None,
            batch: b,
            seq_len: len,
        })
    }

    /// The last hidden state, `[batch × seq_len × hidden_size]` (rows at padding positions are
    /// computed but meaningless; [`mean_pool`] skips them).
    pub fn forward(&self, b: &TokenBatch) -> Result<Tensor, TrainError> {
        let c = &self.config;
        let (n, l, d) = (b.batch, b.seq_len, c.hidden_size);
        let (h, hd) = (c.num_attention_heads, c.head_dim());
        let eps = c.layer_norm_eps as f64;
        // Embeddings. x: [n·l × d]
        let word = self.word.value().embedding(&b.ids.flatten_all()?)?;
        let pos = self.position.value().narrow(0, 0, l)?.repeat((n, 1))?;
        let types = match &b.type_ids {
            Some(t) => self.token_type.value().embedding(&t.flatten_all()?)?,
            None => self.token_type.value().narrow(0, 0, 1)?,
        };
        let x = (word + pos)?.broadcast_add(&types)?;
        let mut x = self.emb_norm.forward(&x, eps)?;
        // Additive key mask, [n × 1 × 1 × l]: 0 for a real token, MASKED for padding.
        let bias = ((1.0 - &b.mask)? * MASKED)?.reshape((n, 1, 1, l))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let heads = |t: Tensor| t.reshape((n, l, h, hd))?.transpose(1, 2)?.contiguous(); // [n × h × l × hd]
        let fq = self.fake_quant;
        for layer in &self.layers {
            let q = heads(layer.query.forward(&x, fq)?)?;
            let k = heads(layer.key.forward(&x, fq)?)?;
            let v = heads(layer.value.forward(&x, fq)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?; // [n × h × l × l]
            let probs = softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((n * l, h * hd))?;
            x = layer.attn_norm.forward(&(layer.attn_out.forward(&ctx, fq)? + x)?, eps)?;
            let mid = activation(&layer.inter.forward(&x, fq)?, c.hidden_act)?; // [n·l × ff]
            x = layer.out_norm.forward(&(layer.out.forward(&mid, fq)? + x)?, eps)?;
        }
        Ok(x.reshape((n, l, d))?)
    }

    /// Mean-pooled sentence vectors `[batch × hidden_size]` before normalization.
    pub fn pooled(&self, b: &TokenBatch) -> Result<Tensor, TrainError> {
        mean_pool(&self.forward(b)?, &b.mask)
    }

    /// The trained tensors under their GGUF names and dims (GGUF order), as f32, masked
    /// entries exactly +0.0.
    pub fn export_tensors(&self) -> Result<Vec<ExportTensor>, TrainError> {
        self.params()
            .into_iter()
            .map(|p| {
                let name = gguf_tensor_name(&p.name)
                    .ok_or_else(|| TrainError::BadOptions(format!("no GGUF name for {}", p.name)))?;
                let dims = p.var.dims().iter().rev().map(|&x| x as u64).collect();
                Ok(ExportTensor { name, dims, data: p.to_f32_vec()? })
            })
            .collect()
    }
}

/// The softmax over the last dimension, in ops that have a backward pass.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

fn activation(x: &Tensor, act: Activation) -> candle_core::Result<Tensor> {
    match act {
        Activation::Gelu => x.gelu_erf(),
        Activation::GeluTanh => x.gelu(),
        Activation::Relu => x.relu(),
    }
}

/// The mean of `hidden` (`[batch × len × d]`) over the positions where `mask` (`[batch × len]`)
/// is 1: `[batch × d]`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor, TrainError> {
    let m = mask.unsqueeze(2)?; // [b × len × 1]
    let sum = hidden.broadcast_mul(&m)?.sum(1)?; // [b × d]
    let count = mask.sum_keepdim(1)?.maximum(1e-9)?; // [b × 1]
    Ok(sum.broadcast_div(&count)?)
}

/// Each row of `x` (`[batch × d]`) scaled to unit L2 norm (the norm clamped at 1e-12, as
/// `torch.nn.functional.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor, TrainError> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Where a [`BertFile`]'s weights are.
enum Source {
    Gguf(GgufFile),
    Dir(PathBuf),
}

/// A BERT model on disk, opened for training: a `bert` GGUF file (any tensor type) or a
/// sentence-transformers directory.
pub struct BertFile {
    /// The path it was opened from.
    pub path: PathBuf,
    /// The fast runtime's pipeline for it: tokenizer, encoder, pooling, normalization.
    pub embedder: Embedder,
    /// The GGUF metadata a trained copy is written with: the file's own, or what
    /// [`gguf_export`] gives for a directory.
    pub metadata: Vec<(String, Value)>,
    source: Source,
}

impl BertFile {
    /// Open the model at `path`; `role` ("teacher", "student") names it in errors. The model
    /// must be a BERT with mean pooling.
    pub fn open(path: &Path, role: &'static str) -> Result<BertFile, TrainError> {
        let not_bert = |arch: &str| TrainError::NotBert { role, path: path.into(), arch: arch.into() };
        let (source, metadata) = if path.is_file() {
            let f = GgufFile::open(path)?;
            let arch = f.architecture()?;
            if arch != "bert" {
                return Err(not_bert(arch));
            }
            let md = f.metadata.clone();
            (Source::Gguf(f), md)
        } else if path.is_dir() {
            let cfg = path.join("config.json");
            if cfg.is_file() {
                let hf = HfConfig::open(&cfg).map_err(edgellm_models::bert::BertError::from)?;
                match hf.model_type.as_deref() {
                    Some("bert") | None => {}
                    Some(other) => return Err(not_bert(other)),
                }
            }
            let md = gguf_export(path)?.metadata;
            (Source::Dir(path.into()), md)
        } else {
            return Err(TrainError::MissingModel { role, path: path.into() });
        };
        let embedder = Embedder::load(path)?;
        let p = embedder.pooling();
        if p != Pooling::MEAN {
            return Err(TrainError::UnsupportedPooling { path: path.into(), what: format!("pooling {p:?}") });
        }
        Ok(BertFile { path: path.into(), embedder, metadata, source })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &BertConfig {
        &self.embedder.model().config
    }

    /// Whether its sentence embeddings are L2-normalized.
    pub fn normalizes(&self) -> bool {
        self.embedder.normalizes()
    }

    /// The encoder as trainable variables in `dtype`.
    pub fn trainable(&self, dtype: DType) -> Result<TrainableBert, TrainError> {
        let config = self.config().clone();
        match &self.source {
            Source::Gguf(f) => TrainableBert::from_weights(config, &GgufBert::new(f), dtype),
            Source::Dir(d) => TrainableBert::from_weights(
                config,
                &SafetensorsBert::open(d.join("model.safetensors"))?,
                dtype,
            ),
        }
    }

    /// Write `model` as an F32 `bert` GGUF at `path`: this file's metadata (with
    /// `general.file_type` 0, all F32), the model's tensors, and after them any tensor of this
    /// file that is not one of the encoder's, unchanged.
    pub fn write_trained(&self, model: &TrainableBert, path: &Path) -> Result<(), TrainError> {
        self.trained_writer(model)?.write_file(path)?;
        Ok(())
    }

    /// The GGUF writer [`Self::write_trained`] writes (to add tensors or metadata first).
    pub fn trained_writer(&self, model: &TrainableBert) -> Result<GgufWriter<'_>, TrainError> {
        let export = GgufExport { metadata: self.metadata.clone(), tensors: model.export_tensors()? };
        let mut w: GgufWriter<'_> = export.to_writer_f32()?;
        w.set("general.file_type", Value::U32(0));
        if let Source::Gguf(f) = &self.source {
            for t in &f.tensors {
                if !export.tensors.iter().any(|e| e.name == t.name) {
                    w.add_tensor(&t.name, &t.dims, t.dtype, f.tensor_data(t))?;
                }
            }
        }
        Ok(w)
    }

    /// The file as it is, as a GGUF writer: a GGUF source's metadata and tensors unchanged
    /// (quantized types kept), or a directory's F32 export.
    pub fn source_writer(&self) -> Result<GgufWriter<'_>, TrainError> {
        match &self.source {
            Source::Gguf(f) => Ok(f.to_writer()),
            Source::Dir(d) => Ok(gguf_export(d)?.to_writer_f32()?),
        }
    }
}
