//! edgellm-models: neural-network blocks and one file per architecture.
//!
//! Models see weights only through [`Linear`]: how a weight is stored (dense, quantized, later
//! sparse) is the Linear's business, so compression never edits model code.

pub mod act_sparsity;
pub mod attention;
pub mod bert;
pub mod error;
pub mod gemma3;
pub mod intent;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod nn;
pub mod numeric;

pub use error::ModelError;
pub use kv_cache::{Buffers, KvCache, KvType};
pub use linear::{Linear, Precision, TensorBytes};

use edgellm_formats::GgufFile;

/// Facts about a loaded language model that callers need.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// Architecture name as in `general.architecture`.
    pub arch: String,
    /// Model name from `general.name`, if any.
    pub name: Option<String>,
    /// Vocabulary size (length of a logit row).
    pub n_vocab: usize,
    /// Context length the model was trained for.
    pub n_ctx_train: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of parameters (elements of all weight tensors).
    pub n_params: u64,
    /// Bytes of weight data.
    pub weight_bytes: u64,
}

impl ModelInfo {
    /// The facts of a decoder in GGUF file `f` of architecture `arch`: its name from
    /// `general.name`, parameter and weight-byte totals from the file's tensors, the sizes given.
    pub fn from_gguf(
        f: &GgufFile,
        arch: &str,
        n_vocab: usize,
        n_ctx_train: usize,
        n_layer: usize,
        n_embd: usize,
    ) -> ModelInfo {
        let (n_params, weight_bytes) = linear::file_totals(f);
        ModelInfo {
            arch: arch.to_string(),
            name: f.get("general.name").and_then(|v| v.as_str()).map(str::to_string),
            n_vocab,
            n_ctx_train,
            n_layer,
            n_embd,
            n_params,
            weight_bytes,
        }
    }
}

/// A causal language model: tokens in, logits out, with a KV cache across calls.
pub trait LanguageModel: Send + Sync {
    /// Facts about the model.
    fn info(&self) -> &ModelInfo;

    /// A fresh KV cache able to hold `n_ctx` positions.
    fn new_cache(&self, n_ctx: usize) -> KvCache;

    /// Bytes a KV cache of `n_ctx` positions takes.
    fn cache_bytes(&self, n_ctx: usize) -> u64;

    /// Run `tokens` at positions `cache.len..`, append their keys/values to the cache, and
    /// write logits into `logits` (resized): for every token (`[tokens.len() × n_vocab]`) when
    /// `all_logits`, else for the last one only (`[n_vocab]`). With a reused `logits` vector
    /// and cache, a decoding step allocates nothing.
    fn forward_into(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError>;

    /// One step of several sequences at once (continuous batching): each sequence's `tokens`
    /// at positions `cache.len..` of its own cache, whose keys/values are appended; the
    /// logits of each sequence's last token into `logits[i]` (`[n_vocab]`, resized).
    /// `bufs` holds the step's activations (reused from step to step).
    ///
    /// The result is what [`LanguageModel::forward_into`] gives each sequence alone, bit for
    /// bit: every row of a product is accumulated in the same order whatever the other rows
    /// (see `tests/batch_invariance.rs`). Architectures that do not batch run the sequences
    /// one after another. Every sequence is checked (tokens in the vocabulary, room in its
    /// context, at least one token) before any runs.
    fn forward_many(
        &self,
        seqs: &mut [SeqStep<'_>],
        bufs: &mut Buffers,
        logits: &mut [Vec<f32>],
    ) -> Result<(), ModelError> {
        let _ = bufs;
        check_steps(seqs, logits, self.info().n_vocab)?;
        for (s, l) in seqs.iter_mut().zip(logits.iter_mut()) {
            self.forward_into(s.tokens, s.cache, false, l)?;
        }
        Ok(())
    }

    /// The residual stream entering block 0 for `tokens`, `[n × n_embd]` (layer-wise execution,
    /// for compression that calibrates one block at a time, such as SparseGPT's sequential
    /// pruning).
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let _ = tokens;
        Err(ModelError::LayerwiseUnsupported(self.info().arch.clone()))
    }

    /// Runs block `l` in place over the residual stream `x` (`[n × n_embd]`) of tokens at
    /// positions `cache.len..`, storing their keys and values in layer `l` of `cache`.
    /// `cache.len` is not advanced: the caller runs every block over the same positions and
    /// then sets it. Blocks `0..=l` run this way give what [`LanguageModel::forward_into`]
    /// computes.
    fn forward_block(&self, l: usize, x: &mut [f32], cache: &mut KvCache) -> Result<(), ModelError> {
        let _ = (l, x, cache);
        Err(ModelError::LayerwiseUnsupported(self.info().arch.clone()))
    }

    /// Replaces the Linear of block weight `name` (`blk.N.ROLE.weight`) with `w`, which must
    /// have the same shape.
    fn replace_weight(&mut self, name: &str, w: Linear) -> Result<(), ModelError> {
        let _ = w;
        Err(ModelError::NoSuchWeight(name.to_string()))
    }

    /// [`LanguageModel::forward_into`] into a new vector.
    fn forward(&self, tokens: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Vec<f32>, ModelError> {
        let mut logits = Vec::new();
        self.forward_into(tokens, cache, all_logits, &mut logits)?;
        Ok(logits)
    }
}

/// One sequence of a [`LanguageModel::forward_many`] step.
pub struct SeqStep<'a> {
    /// Tokens to run, at positions `cache.len..`.
    pub tokens: &'a [u32],
    /// The sequence's KV cache.
    pub cache: &'a mut KvCache,
}

/// The checks of [`LanguageModel::forward_many`]: one logits vector per sequence, and every
/// sequence non-empty, in the vocabulary and within its context.
pub fn check_steps(seqs: &[SeqStep<'_>], logits: &[Vec<f32>], n_vocab: usize) -> Result<(), ModelError> {
    if logits.len() != seqs.len() {
        return Err(ModelError::BadConfig(format!(
            "forward_many: {} sequences but {} logits vectors",
            seqs.len(),
            logits.len()
        )));
    }
    for s in seqs {
        if s.tokens.is_empty() {
            return Err(ModelError::BadConfig("forward_many: a sequence with no tokens".into()));
        }
        let needed = s.cache.len + s.tokens.len();
        if needed > s.cache.n_ctx {
            return Err(ModelError::ContextOverflow { needed, n_ctx: s.cache.n_ctx });
        }
        if let Some(&id) = s.tokens.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(ModelError::BadToken { id, n_vocab });
        }
    }
    Ok(())
}

/// `blk.{l}.{role}.weight` → `(l, role)`.
pub fn split_block_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?.strip_suffix(".weight")?;
    let (l, role) = rest.split_once('.')?;
    Some((l.parse().ok()?, role))
}

/// Puts `w` in `slot` if the shapes agree.
fn replace_checked(slot: Option<&mut Linear>, name: &str, w: Linear) -> Result<(), ModelError> {
    let slot = slot.ok_or_else(|| ModelError::NoSuchWeight(name.to_string()))?;
    if (slot.in_features, slot.out_features) != (w.in_features, w.out_features) {
        return Err(ModelError::ShapeMismatch {
            tensor: name.to_string(),
            found: vec![w.in_features as u64, w.out_features as u64],
            expected: vec![slot.in_features as u64, slot.out_features as u64],
        });
    }
    *slot = w;
    Ok(())
}

/// Options of model loading.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// How the Linear layers compute.
    pub precision: Precision,
    /// Element type of the KV cache; `None` = F16 with [`Precision::Fast`] (as llama.cpp),
    /// F32 with [`Precision::Exact`].
    pub kv_type: Option<KvType>,
    /// Where the model runs. This crate builds CPU models only; the runtime's loader
    /// (`edgellm_runtime::LoadedModel`) hands [`Device::Gpu`] and [`Device::Auto`] to the GPU
    /// backend (`edgellm-gpu`).
    pub device: Device,
}

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The CPU kernels (the default).
    #[default]
    Cpu,
    /// The GPU backend; no usable adapter, or a model it cannot run yet, is an error.
    Gpu,
    /// The GPU where it has an adapter and runs the model, else the CPU.
    Auto,
}

impl Device {
    /// `cpu`, `gpu` or `auto`.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
            Device::Auto => "auto",
        }
    }

    /// Parses `cpu`, `gpu` or `auto` (any case).
    pub fn parse(s: &str) -> Option<Device> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Some(Device::Cpu),
            "gpu" => Some(Device::Gpu),
            "auto" => Some(Device::Auto),
            _ => None,
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl LoadOptions {
    /// The KV cache type these options give.
    pub fn kv_type(&self) -> KvType {
        self.kv_type.unwrap_or(match self.precision {
            Precision::Fast => KvType::F16,
            Precision::Exact => KvType::F32,
        })
    }
}

/// What a language model's KV cache and buffers will take, read from the metadata alone (no
/// tensor is touched): the memory guard's estimate before a model is built.
#[derive(Clone, Debug)]
pub struct CachePlan {
    shape: kv_cache::KvShape,
    windows: Vec<Option<usize>>,
    /// Batch rows a windowed layer's ring keeps beyond its window (`None`: the whole context).
    max_batch: Option<usize>,
    /// Context the model was trained for.
    pub n_ctx_train: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
}

impl CachePlan {
    /// Reads the plan of the model in `f` as [`load_gguf_with`] would build it with `opts`.
    /// `None` when the metadata is incomplete or implausible (more blocks than the file has
    /// tensors): building the model then reports what is wrong.
    pub fn from_gguf(f: &GgufFile, opts: &LoadOptions) -> Option<CachePlan> {
        let kv = |head_dim, n_head_kv| kv_cache::KvShape { kv_type: opts.kv_type(), head_dim, n_head_kv };
        // Each block needs tensors: a larger block count is refused before anything is sized by it.
        let plausible = |n_layer: usize| n_layer <= f.tensors.len();
        match f.architecture().ok()? {
            "llama" => {
                let c = llama::LlamaConfig::from_gguf(f, "llama").ok().filter(|c| plausible(c.n_layer))?;
                Some(CachePlan {
                    shape: kv(c.head_dim, c.n_head_kv),
                    windows: vec![None; c.n_layer],
                    max_batch: None,
                    n_ctx_train: c.n_ctx_train,
                    n_embd: c.n_embd,
                    n_vocab: c.n_vocab,
                })
            }
            "gemma3" => {
                let c = gemma3::Gemma3Config::from_gguf(f).ok().filter(|c| plausible(c.n_layer))?;
                Some(CachePlan {
                    shape: kv(c.head_dim, c.n_head_kv),
                    windows: c.windows(),
                    max_batch: Some(gemma3::MAX_BATCH),
                    n_ctx_train: c.n_ctx_train,
                    n_embd: c.n_embd,
                    n_vocab: c.n_vocab,
                })
            }
            _ => None,
        }
    }

    /// Bytes of a KV cache of `n_ctx` positions (what [`LanguageModel::cache_bytes`] gives once
    /// the model is built).
    pub fn cache_bytes(&self, n_ctx: usize) -> u64 {
        KvCache::bytes_for(self.shape, n_ctx, &self.windows, self.max_batch.unwrap_or(n_ctx))
    }
}

/// Load the language model in a GGUF file, choosing the architecture from its metadata.
pub fn load_gguf(f: &GgufFile) -> Result<Box<dyn LanguageModel>, ModelError> {
    load_gguf_with(f, &LoadOptions::default())
}

/// [`load_gguf`] with options.
pub fn load_gguf_with(f: &GgufFile, opts: &LoadOptions) -> Result<Box<dyn LanguageModel>, ModelError> {
    let arch = f.architecture()?;
    match arch {
        "llama" => Ok(Box::new(llama::Llama::from_gguf_with(f, opts)?)),
        "gemma3" => Ok(Box::new(gemma3::Gemma3::from_gguf_with(f, opts)?)),
        other => Err(ModelError::UnsupportedArchitecture(other.to_string())),
    }
}
