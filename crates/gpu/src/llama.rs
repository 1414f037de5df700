//! A Llama-architecture model (SmolLM2) on the device: the CPU model's forward
//! (`edgellm_models::llama`) with every block's operations recorded into one command buffer
//! per step and the logits read back once. Weights are uploaded once at load; the KV cache
//! (F16, as the CPU default) lives on the device in the [`KvCache`]'s device slot. The token
//! embeddings are looked up on the host (one row per token, a few kilobytes per step).

use std::sync::Arc;

use edgellm_formats::GgufFile;
use edgellm_models::linear::{check_shape, gguf_vector};
use edgellm_models::llama::LlamaConfig;
use edgellm_models::{KvCache, KvType, LanguageModel, Linear, LoadOptions, ModelError, ModelInfo, Precision};

use crate::{rope_table, ActBuffers, AttnDims, Gpu, GpuError, GpuLayerKv, GpuTensor, GpuWeight, RopeMode};

/// Most tokens one recorded step runs (longer prompts run as several steps).
pub const MAX_STEP_TOKENS: usize = 128;

impl From<GpuError> for ModelError {
    fn from(e: GpuError) -> ModelError {
        ModelError::Device(e.to_string())
    }
}

struct Block {
    attn_norm: GpuTensor,
    wq: GpuWeight,
    wk: GpuWeight,
    wv: GpuWeight,
    wo: GpuWeight,
    ffn_norm: GpuTensor,
    gate: GpuWeight,
    up: GpuWeight,
    down: GpuWeight,
}

/// A Llama-architecture model whose forward runs on a [`Gpu`].
pub struct GpuLlama {
    gpu: Arc<Gpu>,
    cfg: LlamaConfig,
    info: ModelInfo,
    /// The token embedding, read on the host (rows of the file's tensor).
    embd: Linear,
    blocks: Vec<Block>,
    output_norm: GpuTensor,
    /// The output projection (`None`: tied to the token embedding, `tied`).
    output: Option<GpuWeight>,
    tied: GpuWeight,
    attn: AttnDims,
}

/// A weight's `Linear` (shape-checked, as the CPU model reads it) uploaded to the device.
fn upload(gpu: &Gpu, f: &GgufFile, name: &str, i: usize, o: usize) -> Result<GpuWeight, ModelError> {
    let lin = Linear::from_gguf(f, name, i, o)?;
    if !Gpu::supports(lin.dtype) {
        return Err(ModelError::Device(format!("tensor '{name}': {}", GpuError::Unsupported(lin.dtype))));
    }
    Ok(gpu.upload(lin.dtype, i, o, lin.bytes())?)
}

/// The device path's checks of the loading options: 8-bit activations and an F16 cache.
pub(crate) fn check_options(opts: &LoadOptions) -> Result<(), ModelError> {
    if opts.precision == Precision::Exact {
        return Err(ModelError::Device(
            "the GPU path quantizes activations to 8 bits as the CPU's default path does; exact f32 \
             activations run on the CPU only (--device cpu)"
                .into(),
        ));
    }
    if opts.kv_type() != KvType::F16 {
        return Err(ModelError::Device(format!(
            "the GPU path keeps an F16 KV cache; a {} cache runs on the CPU only (--device cpu)",
            opts.kv_type()
        )));
    }
    Ok(())
}

impl GpuLlama {
    /// Loads the model in `f` onto `gpu`, checking every tensor as the CPU model does.
    pub fn from_gguf(gpu: Arc<Gpu>, f: &GgufFile, opts: &LoadOptions) -> Result<GpuLlama, ModelError> {
        check_options(opts)?;
        let arch = f.architecture()?.to_string();
        let cfg = LlamaConfig::from_gguf(f, &arch)?;
        let (d, qd, kvd, ff) =
            (cfg.n_embd, cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim, cfg.n_ff);
        if cfg.head_dim > crate::MAX_HEAD_DIM || !cfg.head_dim.is_multiple_of(2) {
            return Err(ModelError::Device(format!(
                "heads of {} values: the GPU attention takes even widths up to {}",
                cfg.head_dim,
                crate::MAX_HEAD_DIM
            )));
        }
        let embd = Linear::from_gguf(f, "token_embd.weight", d, cfg.n_vocab)?;
        let tied = upload(&gpu, f, "token_embd.weight", d, cfg.n_vocab)?;
        let vector = |name: &str, n: usize| -> Result<GpuTensor, ModelError> {
            Ok(gpu.tensor_from(name, &gguf_vector(f, name, n)?)?)
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer.min(f.tensors.len()));
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: vector(&n("attn_norm"), d)?,
                wq: upload(&gpu, f, &n("attn_q"), d, qd)?,
                wk: upload(&gpu, f, &n("attn_k"), d, kvd)?,
                wv: upload(&gpu, f, &n("attn_v"), d, kvd)?,
                wo: upload(&gpu, f, &n("attn_output"), qd, d)?,
                ffn_norm: vector(&n("ffn_norm"), d)?,
                gate: upload(&gpu, f, &n("ffn_gate"), d, ff)?,
                up: upload(&gpu, f, &n("ffn_up"), d, ff)?,
                down: upload(&gpu, f, &n("ffn_down"), ff, d)?,
            });
        }
        let output = match f.tensor("output.weight") {
            Some(t) => {
                check_shape(t, &[d as u64, cfg.n_vocab as u64])?;
                Some(upload(&gpu, f, "output.weight", d, cfg.n_vocab)?)
            }
            None => None,
        };
        let (n_params, weight_bytes) = edgellm_models::linear::file_totals(f);
        let info = ModelInfo {
            arch,
            name: f.get("general.name").and_then(|v| v.as_str()).map(str::to_string),
            n_vocab: cfg.n_vocab,
            n_ctx_train: cfg.n_ctx_train,
            n_layer: cfg.n_layer,
            n_embd: d,
            n_params,
            weight_bytes,
        };
        let attn = AttnDims {
            n_head: cfg.n_head,
            n_head_kv: cfg.n_head_kv,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
        };
        Ok(GpuLlama {
            output_norm: vector("output_norm.weight", d)?,
            gpu,
            cfg,
            info,
            embd,
            blocks,
            output,
            tied,
            attn,
        })
    }

    /// The device the model runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn new_state(&self, n_ctx: usize) -> Result<DeviceState, GpuError> {
        let c = &self.cfg;
        let layers = (0..c.n_layer)
            .map(|_| self.gpu.layer_kv(c.n_head_kv, c.head_dim, n_ctx, None))
            .collect::<Result<Vec<_>, _>>()?;
        let rope = self.gpu.tensor_from("rope table", &rope_table(c.rope_dim, c.rope_base, n_ctx))?;
        Ok(DeviceState { layers, rope, scratch: None })
    }

    /// One step of `tokens` at positions `pos0..` (at most [`MAX_STEP_TOKENS`]): the logits of
    /// every token (`all`) or of the last.
    fn step(
        &self,
        st: &mut DeviceState,
        tokens: &[u32],
        pos0: usize,
        all: bool,
    ) -> Result<Vec<f32>, ModelError> {
        let c = &self.cfg;
        let n = tokens.len();
        let (d, qd, kvd, ff) = (c.n_embd, c.n_head * c.head_dim, c.n_head_kv * c.head_dim, c.n_ff);
        let rows = if all { n } else { 1 };
        if st.scratch.as_ref().is_none_or(|s| s.n < n || s.rows < rows) {
            st.scratch = Some(Scratch::new(&self.gpu, n, rows, d, qd, kvd, ff, c.n_vocab)?);
        }
        let s = st.scratch.as_mut().expect("scratch just made");
        let mut x = vec![0.0f32; n * d];
        for (t, &id) in tokens.iter().enumerate() {
            self.embd.row_f32(id as usize, &mut x[t * d..(t + 1) * d])?;
        }
        self.gpu.write(&s.x, 0, &x)?;
        let mut r = self.gpu.step();
        for (b, kv) in self.blocks.iter().zip(&st.layers) {
            r.rms_norm(&s.x, &b.attn_norm, c.eps, n, &s.h)?;
            r.linear(&[&b.wq, &b.wk, &b.wv], &s.h, n, &mut s.acts, &[&s.q, &s.k, &s.v])?;
            r.rope(&s.q, &st.rope, RopeMode::Adjacent, c.rope_dim, c.n_head, c.head_dim, pos0, n)?;
            r.rope(&s.k, &st.rope, RopeMode::Adjacent, c.rope_dim, c.n_head_kv, c.head_dim, pos0, n)?;
            r.kv_store(kv, &s.k, &s.v, &self.attn, pos0, n)?;
            r.attention(kv, &s.q, &self.attn, pos0, n, &s.att)?;
            r.linear(&[&b.wo], &s.att, n, &mut s.acts, &[&s.o])?;
            r.add_to(&s.x, &s.o, n * d)?;
            r.rms_norm(&s.x, &b.ffn_norm, c.eps, n, &s.h)?;
            r.linear(&[&b.gate, &b.up], &s.h, n, &mut s.acts, &[&s.g, &s.u])?;
            r.swiglu(&s.g, &s.u, n * ff, &s.gu)?;
            r.linear(&[&b.down], &s.gu, n, &mut s.acts, &[&s.o])?;
            r.add_to(&s.x, &s.o, n * d)?;
        }
        r.copy(&s.x, (n - rows) * d, &s.last, 0, rows * d)?;
        r.rms_norm(&s.last, &self.output_norm, c.eps, rows, &s.h)?;
        let output = self.output.as_ref().unwrap_or(&self.tied);
        r.linear(&[output], &s.h, rows, &mut s.acts, &[&s.logits])?;
        Ok(r.read(&s.logits, 0, rows * c.n_vocab)?)
    }
}

/// What a [`GpuLlama`] keeps in a cache's device slot.
struct DeviceState {
    layers: Vec<GpuLayerKv>,
    /// `(cos, sin)` of every position of the context.
    rope: GpuTensor,
    scratch: Option<Scratch>,
}

/// A step's activations on the device, sized for `n` tokens and `rows` logit rows.
struct Scratch {
    n: usize,
    rows: usize,
    x: GpuTensor,
    h: GpuTensor,
    q: GpuTensor,
    k: GpuTensor,
    v: GpuTensor,
    att: GpuTensor,
    o: GpuTensor,
    g: GpuTensor,
    u: GpuTensor,
    gu: GpuTensor,
    last: GpuTensor,
    logits: GpuTensor,
    acts: ActBuffers,
}

impl Scratch {
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        n: usize,
        rows: usize,
        d: usize,
        qd: usize,
        kvd: usize,
        ff: usize,
        n_vocab: usize,
    ) -> Result<Scratch, GpuError> {
        Ok(Scratch {
            n,
            rows,
            x: gpu.tensor("x", n * d)?,
            h: gpu.tensor("h", n * d.max(qd))?,
            q: gpu.tensor("q", n * qd)?,
            k: gpu.tensor("k", n * kvd)?,
            v: gpu.tensor("v", n * kvd)?,
            att: gpu.tensor("att", n * qd)?,
            o: gpu.tensor("o", n * d)?,
            g: gpu.tensor("g", n * ff)?,
            u: gpu.tensor("u", n * ff)?,
            gu: gpu.tensor("gu", n * ff)?,
            last: gpu.tensor("last", rows * d)?,
            logits: gpu.tensor("logits", rows * n_vocab)?,
            acts: gpu.act_buffers(n * d.max(qd).max(ff))?,
        })
    }
}

impl LanguageModel for GpuLlama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A cache whose keys and values live on the device. A device that cannot hold it gives
    /// a cache without device state; the first forward call then reports the error.
    fn new_cache(&self, n_ctx: usize) -> KvCache {
        match self.new_state(n_ctx) {
            Ok(st) => KvCache::on_device(n_ctx, n_ctx, Box::new(st)),
            Err(e) => KvCache::on_device(n_ctx, n_ctx, Box::new(e.to_string())),
        }
    }

    fn cache_bytes(&self, n_ctx: usize) -> u64 {
        let c = &self.cfg;
        2 * (c.n_layer * c.n_head_kv * c.head_dim * 2 * n_ctx) as u64
    }

    fn forward_into(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let c = &self.cfg;
        let pos0 = cache.len;
        logits.clear();
        if tokens.is_empty() {
            return Ok(());
        }
        if pos0 + tokens.len() > cache.n_ctx {
            return Err(ModelError::ContextOverflow { needed: pos0 + tokens.len(), n_ctx: cache.n_ctx });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.n_vocab) {
            return Err(ModelError::BadToken { id, n_vocab: c.n_vocab });
        }
        let slot = cache.device.as_mut().ok_or_else(|| {
            ModelError::Device("this KV cache was not made by the GPU model (use its new_cache)".into())
        })?;
        if let Some(why) = slot.downcast_ref::<String>() {
            return Err(ModelError::Device(format!("the GPU could not hold the KV cache: {why}")));
        }
        let st = slot.downcast_mut::<DeviceState>().ok_or_else(|| {
            ModelError::Device("this KV cache was not made by the GPU model (use its new_cache)".into())
        })?;
        // Logit rows per step when every position's are wanted: what one buffer binds.
        let per_step = if all_logits {
            let max = self.gpu.max_binding() as usize / (4 * c.n_vocab);
            MAX_STEP_TOKENS.min(max.max(1))
        } else {
            MAX_STEP_TOKENS
        };
        let mut at = 0;
        for chunk in tokens.chunks(per_step) {
            let last = at + chunk.len() == tokens.len();
            let l = self.step(st, chunk, pos0 + at, all_logits)?;
            if all_logits || last {
                logits.extend_from_slice(&l);
            }
            at += chunk.len();
            cache.len = pos0 + at;
        }
        Ok(())
    }
}
