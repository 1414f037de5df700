//! Gemma 3 on the device: the CPU model's forward (`edgellm_models::gemma3`) recorded into
//! one command buffer per step — the embedding scaled by √d (on the host, with the lookup),
//! RMS-normed queries and keys per head, norms before and after attention and feed-forward,
//! the GELU gate through half precision, rotary embedding on halves with the local or global
//! base, and sliding-window layers on F16 rings of `window + MAX_STEP_TOKENS` positions.

use std::sync::Arc;

use edgellm_formats::GgufFile;
use edgellm_models::gemma3::{Gemma3Config, LOCAL_ROPE_BASE};
use edgellm_models::linear::check_shape;
use edgellm_models::{KvCache, LanguageModel, Linear, LoadOptions, ModelError, ModelInfo};

use crate::decoder::{self, check_head_dim, check_options, upload, vector, DeviceState, Widths};
use crate::{rope_table, AttnDims, Gpu, GpuError, GpuTensor, GpuWeight, RopeMode, MAX_STEP_TOKENS};

struct Block {
    attn_norm: GpuTensor,
    wq: GpuWeight,
    wk: GpuWeight,
    wv: GpuWeight,
    q_norm: GpuTensor,
    k_norm: GpuTensor,
    wo: GpuWeight,
    post_attn_norm: GpuTensor,
    ffn_norm: GpuTensor,
    gate: GpuWeight,
    up: GpuWeight,
    down: GpuWeight,
    post_ffn_norm: GpuTensor,
}

/// A Gemma 3 model whose forward runs on a [`Gpu`].
pub struct GpuGemma3 {
    gpu: Arc<Gpu>,
    cfg: Gemma3Config,
    info: ModelInfo,
    embd: Linear,
    blocks: Vec<Block>,
    output_norm: GpuTensor,
    /// The output projection (the token embedding unless the file has `output.weight`).
    output: GpuWeight,
    attn: AttnDims,
}

impl GpuGemma3 {
    /// Loads the model in `f` onto `gpu`, checking every tensor as the CPU model does.
    pub fn from_gguf(gpu: Arc<Gpu>, f: &GgufFile, opts: &LoadOptions) -> Result<GpuGemma3, ModelError> {
        check_options(opts)?;
        let cfg = Gemma3Config::from_gguf(f)?;
        check_head_dim(cfg.head_dim)?;
        let hd = cfg.head_dim;
        let (d, qd, kvd, ff) = (cfg.n_embd, cfg.n_head * hd, cfg.n_head_kv * hd, cfg.n_ff);
        let embd = Linear::from_gguf(f, "token_embd.weight", d, cfg.n_vocab)?;
        let mut blocks = Vec::with_capacity(cfg.n_layer.min(f.tensors.len()));
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: vector(&gpu, f, &n("attn_norm"), d)?,
                wq: upload(&gpu, f, &n("attn_q"), d, qd)?,
                wk: upload(&gpu, f, &n("attn_k"), d, kvd)?,
                wv: upload(&gpu, f, &n("attn_v"), d, kvd)?,
                q_norm: vector(&gpu, f, &n("attn_q_norm"), hd)?,
                k_norm: vector(&gpu, f, &n("attn_k_norm"), hd)?,
                wo: upload(&gpu, f, &n("attn_output"), qd, d)?,
                post_attn_norm: vector(&gpu, f, &n("post_attention_norm"), d)?,
                ffn_norm: vector(&gpu, f, &n("ffn_norm"), d)?,
                gate: upload(&gpu, f, &n("ffn_gate"), d, ff)?,
                up: upload(&gpu, f, &n("ffn_up"), d, ff)?,
                down: upload(&gpu, f, &n("ffn_down"), ff, d)?,
                post_ffn_norm: vector(&gpu, f, &n("post_ffw_norm"), d)?,
            });
        }
        let output = match f.tensor("output.weight") {
            Some(t) => {
                check_shape(t, &[d as u64, cfg.n_vocab as u64])?;
                upload(&gpu, f, "output.weight", d, cfg.n_vocab)?
            }
            None => upload(&gpu, f, "token_embd.weight", d, cfg.n_vocab)?,
        };
        let info = ModelInfo::from_gguf(f, "gemma3", cfg.n_vocab, cfg.n_ctx_train, cfg.n_layer, d);
        let attn = AttnDims {
            n_head: cfg.n_head,
            n_head_kv: cfg.n_head_kv,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        Ok(GpuGemma3 {
            output_norm: vector(&gpu, f, "output_norm.weight", d)?,
            gpu,
            cfg,
            info,
            embd,
            blocks,
            output,
            attn,
        })
    }

    fn widths(&self) -> Widths {
        let c = &self.cfg;
        Widths {
            d: c.n_embd,
            qd: c.n_head * c.head_dim,
            kvd: c.n_head_kv * c.head_dim,
            ff: c.n_ff,
            n_vocab: c.n_vocab,
        }
    }

    /// `(capacity, window)` of each layer's ring in a context of `n_ctx`.
    fn rings(&self, n_ctx: usize) -> Vec<(usize, Option<usize>)> {
        self.cfg.windows().into_iter().map(|w| (KvCache::capacity(w, n_ctx, MAX_STEP_TOKENS), w)).collect()
    }

    fn new_state(&self, n_ctx: usize) -> Result<DeviceState, GpuError> {
        let c = &self.cfg;
        let layers = self
            .rings(n_ctx)
            .into_iter()
            .map(|(cap, w)| self.gpu.layer_kv(c.n_head_kv, c.head_dim, cap, w))
            .collect::<Result<Vec<_>, _>>()?;
        let rope = [LOCAL_ROPE_BASE, c.rope_base_global]
            .iter()
            .map(|&base| self.gpu.tensor_from("rope table", &rope_table(c.head_dim, base, n_ctx)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DeviceState { layers, rope, scratch: None })
    }

    fn step(
        &self,
        st: &mut DeviceState,
        tokens: &[u32],
        pos0: usize,
        all: bool,
    ) -> Result<Vec<f32>, ModelError> {
        let c = &self.cfg;
        let n = tokens.len();
        let w = self.widths();
        let (d, ff, hd) = (w.d, w.ff, c.head_dim);
        let rows = if all { n } else { 1 };
        let mut x = vec![0.0f32; n * d];
        let scale = (d as f32).sqrt();
        for (t, &id) in tokens.iter().enumerate() {
            let row = &mut x[t * d..(t + 1) * d];
            self.embd.row_f32(id as usize, row)?;
            row.iter_mut().for_each(|v| *v *= scale);
        }
        let (s, layers, ropes) = st.parts(&self.gpu, w, n, rows)?;
        self.gpu.write(&s.x, 0, &x)?;
        let mut r = self.gpu.step();
        for (l, (b, kv)) in self.blocks.iter().zip(layers).enumerate() {
            let rope = &ropes[usize::from(c.is_global(l))];
            r.rms_norm(&s.x, &b.attn_norm, c.eps, n, &s.h)?;
            r.linear(&[&b.wq, &b.wk, &b.wv], &s.h, n, &mut s.acts, &[&s.q, &s.k, &s.v])?;
            r.rms_norm(&s.q, &b.q_norm, c.eps, n * c.n_head, &s.qn)?;
            r.rms_norm(&s.k, &b.k_norm, c.eps, n * c.n_head_kv, &s.kn)?;
            r.rope(&s.qn, rope, RopeMode::Halves, hd, c.n_head, hd, pos0, n)?;
            r.rope(&s.kn, rope, RopeMode::Halves, hd, c.n_head_kv, hd, pos0, n)?;
            r.kv_store(kv, &s.kn, &s.v, &self.attn, pos0, n)?;
            r.attention(kv, &s.qn, &self.attn, pos0, n, &s.att)?;
            r.linear(&[&b.wo], &s.att, n, &mut s.acts, &[&s.o])?;
            r.rms_norm(&s.o, &b.post_attn_norm, c.eps, n, &s.h)?;
            r.add_to(&s.x, &s.h, n * d)?;
            r.rms_norm(&s.x, &b.ffn_norm, c.eps, n, &s.h)?;
            r.linear(&[&b.gate, &b.up], &s.h, n, &mut s.acts, &[&s.g, &s.u])?;
            r.gelu_gate(&s.g, &s.u, n * ff, &s.gu)?;
            r.linear(&[&b.down], &s.gu, n, &mut s.acts, &[&s.o])?;
            r.rms_norm(&s.o, &b.post_ffn_norm, c.eps, n, &s.h)?;
            r.add_to(&s.x, &s.h, n * d)?;
        }
        r.copy(&s.x, (n - rows) * d, &s.last, 0, rows * d)?;
        r.rms_norm(&s.last, &self.output_norm, c.eps, rows, &s.h)?;
        r.linear(&[&self.output], &s.h, rows, &mut s.acts, &[&s.logits])?;
        Ok(r.read(&s.logits, 0, rows * c.n_vocab)?)
    }
}

impl LanguageModel for GpuGemma3 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A cache whose keys and values live on the device (local layers on rings of
    /// `window + MAX_STEP_TOKENS` positions). A device that cannot hold it gives a cache
    /// without device state; the first forward call then reports the error.
    fn new_cache(&self, n_ctx: usize) -> KvCache {
        let rings = self.rings(n_ctx).into_iter().filter_map(|(cap, w)| w.map(|w| (cap, w))).collect();
        decoder::device_cache(n_ctx, rings, self.new_state(n_ctx))
    }

    fn cache_bytes(&self, n_ctx: usize) -> u64 {
        let c = &self.cfg;
        let per_position = 2 * 2 * (c.n_head_kv * c.head_dim) as u64;
        self.rings(n_ctx).iter().map(|&(cap, _)| cap as u64 * per_position).sum()
    }

    fn forward_into(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        decoder::forward(&self.gpu, self.cfg.n_vocab, tokens, cache, all_logits, logits, |st, t, p, all| {
            self.step(st, t, p, all)
        })
    }
}
