//! A Llama-architecture model (SmolLM2) on the device: the CPU model's forward
//! (`edgellm_models::llama`) with every block's operations recorded into one command buffer
//! per step and the logits read back once. Weights are uploaded once at load; the KV cache
//! (F16, as the CPU default) lives on the device in the [`KvCache`]'s device slot. The token
//! embeddings are looked up on the host (one row per token, a few kilobytes per step).

use std::sync::Arc;

use edgellm_formats::GgufFile;
use edgellm_models::linear::check_shape;
use edgellm_models::llama::LlamaConfig;
use edgellm_models::{KvCache, LanguageModel, Linear, LoadOptions, ModelError, ModelInfo};

use crate::decoder::{self, check_head_dim, check_options, upload, vector, DeviceState, Widths};
use crate::{rope_table, AttnDims, Gpu, GpuError, GpuTensor, GpuWeight, RopeMode};

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

impl GpuLlama {
    /// Loads the model in `f` onto `gpu`, checking every tensor as the CPU model does.
    pub fn from_gguf(gpu: Arc<Gpu>, f: &GgufFile, opts: &LoadOptions) -> Result<GpuLlama, ModelError> {
        check_options(opts)?;
        let arch = f.architecture()?.to_string();
        let cfg = LlamaConfig::from_gguf(f, &arch)?;
        check_head_dim(cfg.head_dim)?;
        let (d, qd, kvd, ff) =
            (cfg.n_embd, cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim, cfg.n_ff);
        let embd = Linear::from_gguf(f, "token_embd.weight", d, cfg.n_vocab)?;
        let tied = upload(&gpu, f, "token_embd.weight", d, cfg.n_vocab)?;
        let mut blocks = Vec::with_capacity(cfg.n_layer.min(f.tensors.len()));
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: vector(&gpu, f, &n("attn_norm"), d)?,
                wq: upload(&gpu, f, &n("attn_q"), d, qd)?,
                wk: upload(&gpu, f, &n("attn_k"), d, kvd)?,
                wv: upload(&gpu, f, &n("attn_v"), d, kvd)?,
                wo: upload(&gpu, f, &n("attn_output"), qd, d)?,
                ffn_norm: vector(&gpu, f, &n("ffn_norm"), d)?,
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
        let info = ModelInfo::from_gguf(f, &arch, cfg.n_vocab, cfg.n_ctx_train, cfg.n_layer, d);
        let attn = AttnDims {
            n_head: cfg.n_head,
            n_head_kv: cfg.n_head_kv,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
        };
        Ok(GpuLlama {
            output_norm: vector(&gpu, f, "output_norm.weight", d)?,
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

    fn new_state(&self, n_ctx: usize) -> Result<DeviceState, GpuError> {
        let c = &self.cfg;
        let layers = (0..c.n_layer)
            .map(|_| self.gpu.layer_kv(c.n_head_kv, c.head_dim, n_ctx, None))
            .collect::<Result<Vec<_>, _>>()?;
        let rope = self.gpu.tensor_from("rope table", &rope_table(c.rope_dim, c.rope_base, n_ctx))?;
        Ok(DeviceState { layers, rope: vec![rope], scratch: None })
    }

    /// One step of `tokens` at positions `pos0..` (at most [`crate::MAX_STEP_TOKENS`]): the
    /// logits of every token (`all`) or of the last.
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
        let (d, ff) = (w.d, w.ff);
        let rows = if all { n } else { 1 };
        let mut x = vec![0.0f32; n * d];
        for (t, &id) in tokens.iter().enumerate() {
            self.embd.row_f32(id as usize, &mut x[t * d..(t + 1) * d])?;
        }
        let (s, layers, ropes) = st.parts(&self.gpu, w, n, rows)?;
        self.gpu.write(&s.x, 0, &x)?;
        let rope = &ropes[0];
        let mut r = self.gpu.step();
        for (b, kv) in self.blocks.iter().zip(layers) {
            r.rms_norm(&s.x, &b.attn_norm, c.eps, n, &s.h)?;
            r.linear(&[&b.wq, &b.wk, &b.wv], &s.h, n, &mut s.acts, &[&s.q, &s.k, &s.v])?;
            r.rope(&s.q, rope, RopeMode::Adjacent, c.rope_dim, c.n_head, c.head_dim, pos0, n)?;
            r.rope(&s.k, rope, RopeMode::Adjacent, c.rope_dim, c.n_head_kv, c.head_dim, pos0, n)?;
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

impl LanguageModel for GpuLlama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A cache whose keys and values live on the device. A device that cannot hold it gives
    /// a cache without device state; the first forward call then reports the error.
    fn new_cache(&self, n_ctx: usize) -> KvCache {
        decoder::device_cache(n_ctx, Vec::new(), self.new_state(n_ctx))
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
        decoder::forward(&self.gpu, self.cfg.n_vocab, tokens, cache, all_logits, logits, |st, t, p, all| {
            self.step(st, t, p, all)
        })
    }
}
