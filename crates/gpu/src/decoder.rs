//! What the GPU decoders share: weights uploaded through the CPU model's checks, the device
//! state kept in a [`KvCache`]'s device slot (per-layer F16 key/value rings, the rotary
//! tables, the step's activation buffers), and the forward call's checks and chunking.

use edgellm_formats::GgufFile;
use edgellm_models::{KvCache, KvType, Linear, LoadOptions, ModelError, Precision};

use crate::{ActBuffers, Gpu, GpuError, GpuLayerKv, GpuTensor, GpuWeight};

/// Most tokens one recorded step runs (longer prompts run as several steps).
pub const MAX_STEP_TOKENS: usize = 128;

impl From<GpuError> for ModelError {
    fn from(e: GpuError) -> ModelError {
        ModelError::Device(e.to_string())
    }
}

/// A weight's `Linear` (shape-checked, as the CPU model reads it) uploaded to the device.
pub(crate) fn upload(
    gpu: &Gpu,
    f: &GgufFile,
    name: &str,
    i: usize,
    o: usize,
) -> Result<GpuWeight, ModelError> {
    let lin = Linear::from_gguf(f, name, i, o)?;
    if !Gpu::supports(lin.dtype) {
        return Err(ModelError::Device(format!("tensor '{name}': {}", GpuError::Unsupported(lin.dtype))));
    }
    Ok(gpu.upload(lin.dtype, i, o, lin.bytes())?)
}

/// A norm weight vector uploaded to the device.
pub(crate) fn vector(gpu: &Gpu, f: &GgufFile, name: &str, n: usize) -> Result<GpuTensor, ModelError> {
    Ok(gpu.tensor_from(name, &edgellm_models::linear::gguf_vector(f, name, n)?)?)
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

/// The checks of the GPU attention's head width.
pub(crate) fn check_head_dim(head_dim: usize) -> Result<(), ModelError> {
    if head_dim > crate::MAX_HEAD_DIM || !head_dim.is_multiple_of(2) {
        return Err(ModelError::Device(format!(
            "heads of {head_dim} values: the GPU attention takes even widths up to {}",
            crate::MAX_HEAD_DIM
        )));
    }
    Ok(())
}

/// Widths of a decoder's activations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Widths {
    pub(crate) d: usize,
    pub(crate) qd: usize,
    pub(crate) kvd: usize,
    pub(crate) ff: usize,
    pub(crate) n_vocab: usize,
}

/// What a GPU decoder keeps in a cache's device slot.
pub(crate) struct DeviceState {
    pub(crate) layers: Vec<GpuLayerKv>,
    /// `(cos, sin)` of every position of the context, one table per frequency base.
    pub(crate) rope: Vec<GpuTensor>,
    pub(crate) scratch: Option<Scratch>,
}

impl DeviceState {
    /// The step's buffers, (re)made for `n` tokens and `rows` logit rows when smaller, with
    /// the layers' caches and the rotary tables.
    pub(crate) fn parts(
        &mut self,
        gpu: &Gpu,
        w: Widths,
        n: usize,
        rows: usize,
    ) -> Result<StepParts<'_>, GpuError> {
        if self.scratch.as_ref().is_none_or(|s| s.n < n || s.rows < rows) {
            self.scratch = Some(Scratch::new(gpu, w, n, rows)?);
        }
        let s = self.scratch.as_mut().expect("scratch just made");
        Ok((s, &self.layers, &self.rope))
    }
}

/// A step's buffers, the layers' caches and the rotary tables.
pub(crate) type StepParts<'a> = (&'a mut Scratch, &'a [GpuLayerKv], &'a [GpuTensor]);

/// A step's activations on the device, sized for `n` tokens and `rows` logit rows.
pub(crate) struct Scratch {
    n: usize,
    rows: usize,
    pub(crate) x: GpuTensor,
    pub(crate) h: GpuTensor,
    pub(crate) q: GpuTensor,
    pub(crate) k: GpuTensor,
    pub(crate) v: GpuTensor,
    /// Normed queries and keys (Gemma 3).
    pub(crate) qn: GpuTensor,
    pub(crate) kn: GpuTensor,
    pub(crate) att: GpuTensor,
    pub(crate) o: GpuTensor,
    pub(crate) g: GpuTensor,
    pub(crate) u: GpuTensor,
    pub(crate) gu: GpuTensor,
    pub(crate) last: GpuTensor,
    pub(crate) logits: GpuTensor,
    pub(crate) acts: ActBuffers,
}

impl Scratch {
    fn new(gpu: &Gpu, w: Widths, n: usize, rows: usize) -> Result<Scratch, GpuError> {
        let Widths { d, qd, kvd, ff, n_vocab } = w;
        Ok(Scratch {
            n,
            rows,
            x: gpu.tensor("x", n * d)?,
            h: gpu.tensor("h", n * d.max(qd))?,
            q: gpu.tensor("q", n * qd)?,
            k: gpu.tensor("k", n * kvd)?,
            v: gpu.tensor("v", n * kvd)?,
            qn: gpu.tensor("qn", n * qd)?,
            kn: gpu.tensor("kn", n * kvd)?,
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

/// A cache holding `st` (or, when the device could not make it, the reason, reported by the
/// first forward call).
pub(crate) fn device_cache(
    n_ctx: usize,
    rings: Vec<(usize, usize)>,
    st: Result<DeviceState, GpuError>,
) -> KvCache {
    match st {
        Ok(st) => KvCache::on_device(n_ctx, n_ctx, rings, Box::new(st)),
        Err(e) => KvCache::on_device(n_ctx, n_ctx, rings, Box::new(e.to_string())),
    }
}

/// `LanguageModel::forward_into` of a GPU decoder: the checks, then `tokens` in steps of at
/// most [`MAX_STEP_TOKENS`] (fewer when every position's logits must fit one buffer), each
/// run by `step(state, tokens, pos0, all_logits)`.
pub(crate) fn forward(
    gpu: &Gpu,
    n_vocab: usize,
    tokens: &[u32],
    cache: &mut KvCache,
    all_logits: bool,
    logits: &mut Vec<f32>,
    mut step: impl FnMut(&mut DeviceState, &[u32], usize, bool) -> Result<Vec<f32>, ModelError>,
) -> Result<(), ModelError> {
    let pos0 = cache.len;
    logits.clear();
    if tokens.is_empty() {
        return Ok(());
    }
    if pos0 + tokens.len() > cache.n_ctx {
        return Err(ModelError::ContextOverflow { needed: pos0 + tokens.len(), n_ctx: cache.n_ctx });
    }
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= n_vocab) {
        return Err(ModelError::BadToken { id, n_vocab });
    }
    let not_ours =
        || ModelError::Device("this KV cache was not made by the GPU model (use its new_cache)".into());
    let slot = cache.device.as_mut().ok_or_else(not_ours)?;
    if let Some(why) = slot.downcast_ref::<String>() {
        return Err(ModelError::Device(format!("the GPU could not hold the KV cache: {why}")));
    }
    let st = slot.downcast_mut::<DeviceState>().ok_or_else(not_ours)?;
    let per_step = if all_logits {
        MAX_STEP_TOKENS.min((gpu.max_binding() as usize / (4 * n_vocab)).max(1))
    } else {
        MAX_STEP_TOKENS
    };
    let mut at = 0;
    for chunk in tokens.chunks(per_step) {
        let last = at + chunk.len() == tokens.len();
        let l = step(st, chunk, pos0 + at, all_logits)?;
        if all_logits || last {
            logits.extend_from_slice(&l);
        }
        at += chunk.len();
        cache.len = pos0 + at;
    }
    Ok(())
}
