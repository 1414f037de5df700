//! Gemma 3 (Gemma Team, 2025, "Gemma 3 Technical Report") as stored in GGUF by llama.cpp's
//! converter: the token embedding scaled by sqrt(d); RMSNorm whose weights the converter
//! stored as `1 + w`, so they apply as plain multipliers; RMS-normed queries and keys per head;
//! norms before and after both attention and feed-forward; a GELU(tanh)-gated feed-forward;
//! rotary embedding on halves (NeoX order); and interleaved attention — five local layers with
//! a sliding window (RoPE base 10 000) for every global layer (RoPE base from the metadata,
//! 1 000 000). Scores are scaled by 1/sqrt(head_dim). The output projection is the embedding.

use edgellm_core::parallel::for_each_rows_mut;
use edgellm_formats::GgufFile;

use crate::attention::{attention, AttnShape};
use crate::kv_cache::{BufferSlices, Buffers, KvCache, KvShape};
use crate::linear::{check_shape, gguf_vector, Linear, Precision};
use crate::llama::{begin_step, end_step, position, Seg};
use crate::nn::{add_assign, gate, gelu_tanh, gelu_tanh_table, rms_norm, Rope};
use crate::{check_steps, LanguageModel, LoadOptions, ModelError, ModelInfo, SeqStep};

/// Local layers per global layer plus one: layer `l` is global when `(l + 1) % 6 == 0`.
const SWA_PATTERN: usize = 6;
/// RoPE base of the local (sliding-window) layers.
pub const LOCAL_ROPE_BASE: f64 = 10_000.0;
/// Most positions one forward pass adds (local layers' rings are sized for it).
pub const MAX_BATCH: usize = 512;

/// Hyper-parameters from the `gemma3.*` metadata.
#[derive(Clone, Debug)]
pub struct Gemma3Config {
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Residual width.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// RoPE base of the global layers.
    pub rope_base_global: f64,
    /// Sliding window of the local layers.
    pub window: usize,
    /// Training context.
    pub n_ctx_train: usize,
}

impl Gemma3Config {
    /// Read the hyper-parameters.
    pub fn from_gguf(f: &GgufFile) -> Result<Gemma3Config, ModelError> {
        let u = |k: &str| -> Result<usize, ModelError> { Ok(f.get_u64(&format!("gemma3.{k}"))? as usize) };
        // A model without blocks would leave the other sizes unchecked by any tensor (and they
        // size the working buffers).
        if u("block_count")? == 0 {
            return Err(ModelError::BadConfig("block_count is 0: a model needs at least one block".into()));
        }
        let n_embd = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let n_head_kv = u("attention.head_count_kv")?;
        let head_dim = u("attention.key_length")?;
        if n_head == 0
            || n_head_kv == 0
            || n_head % n_head_kv != 0
            || head_dim % 2 != 0
            || head_dim > 1024
            || n_head.checked_mul(head_dim).is_none()
        {
            return Err(ModelError::BadConfig(format!(
                "{n_head} heads, {n_head_kv} KV heads, head dim {head_dim}"
            )));
        }
        if u("attention.value_length")? != head_dim {
            return Err(ModelError::BadConfig("key and value head widths differ".into()));
        }
        let window = u("attention.sliding_window")?;
        if window == 0 {
            return Err(ModelError::BadConfig("sliding window of 0".into()));
        }
        if let Some(v) = f.get("gemma3.final_logit_softcapping").or(f.get("gemma3.attn_logit_softcapping")) {
            return Err(ModelError::BadConfig(format!("logit soft-capping ({v}) is not supported")));
        }
        Ok(Gemma3Config {
            n_vocab: f.get_array("tokenizer.ggml.tokens")?.len(),
            n_embd,
            n_layer: u("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: u("feed_forward_length")?,
            eps: f.get_f64("gemma3.attention.layer_norm_rms_epsilon")? as f32,
            rope_base_global: f.get_f64("gemma3.rope.freq_base").unwrap_or(1_000_000.0),
            window,
            n_ctx_train: u("context_length")?,
        })
    }

    /// Whether layer `l` attends globally (otherwise within the sliding window).
    pub fn is_global(&self, l: usize) -> bool {
        (l + 1).is_multiple_of(SWA_PATTERN)
    }

    fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn windows(&self) -> Vec<Option<usize>> {
        (0..self.n_layer).map(|l| if self.is_global(l) { None } else { Some(self.window) }).collect()
    }
}

struct Block {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    wo: Linear,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
    post_ffn_norm: Vec<f32>,
}

/// A Gemma 3 model.
pub struct Gemma3 {
    /// Hyper-parameters.
    pub cfg: Gemma3Config,
    info: ModelInfo,
    precision: Precision,
    tok_embd: Linear,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    output: Linear,
    rope_local: Rope,
    rope_global: Rope,
    attn: AttnShape,
    kv: KvShape,
}

impl Gemma3 {
    /// Load from a GGUF file (architecture `gemma3`).
    pub fn from_gguf(f: &GgufFile) -> Result<Self, ModelError> {
        Self::from_gguf_with(f, &LoadOptions::default())
    }

    /// Load with options (the Linear precision).
    pub fn from_gguf_with(f: &GgufFile, opts: &LoadOptions) -> Result<Gemma3, ModelError> {
        let cfg = Gemma3Config::from_gguf(f)?;
        opts.kv_type().check_head_dim(cfg.head_dim)?;
        let lin = |name: &str, i: usize, o: usize| {
            Linear::from_gguf(f, name, i, o).map(|l| l.with_precision(opts.precision).packed())
        };
        let (d, qd, kvd, ff, hd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff, cfg.head_dim);
        let tok_embd = lin("token_embd.weight", d, cfg.n_vocab)?;
        // block_count comes from the file: each block needs tensors, so the file bounds it.
        let mut blocks = Vec::with_capacity(cfg.n_layer.min(f.tensors.len()));
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: gguf_vector(f, &n("attn_norm"), d)?,
                wq: lin(&n("attn_q"), d, qd)?,
                wk: lin(&n("attn_k"), d, kvd)?,
                wv: lin(&n("attn_v"), d, kvd)?,
                q_norm: gguf_vector(f, &n("attn_q_norm"), hd)?,
                k_norm: gguf_vector(f, &n("attn_k_norm"), hd)?,
                wo: lin(&n("attn_output"), qd, d)?,
                post_attn_norm: gguf_vector(f, &n("post_attention_norm"), d)?,
                ffn_norm: gguf_vector(f, &n("ffn_norm"), d)?,
                w_gate: lin(&n("ffn_gate"), d, ff)?,
                w_up: lin(&n("ffn_up"), d, ff)?,
                w_down: lin(&n("ffn_down"), ff, d)?,
                post_ffn_norm: gguf_vector(f, &n("post_ffw_norm"), d)?,
            });
        }
        let output = match f.tensor("output.weight") {
            Some(t) => {
                check_shape(t, &[d as u64, cfg.n_vocab as u64])?;
                lin("output.weight", d, cfg.n_vocab)?
            }
            None => tok_embd.clone(),
        };
        let info = ModelInfo::from_gguf(f, "gemma3", cfg.n_vocab, cfg.n_ctx_train, cfg.n_layer, d);
        Ok(Gemma3 {
            info,
            tok_embd,
            blocks,
            output_norm: gguf_vector(f, "output_norm.weight", d)?,
            output,
            rope_local: Rope { dim: hd, base: LOCAL_ROPE_BASE },
            rope_global: Rope { dim: hd, base: cfg.rope_base_global },
            attn: AttnShape {
                n_head: cfg.n_head,
                n_head_kv: cfg.n_head_kv,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
            },
            kv: KvShape { kv_type: opts.kv_type(), head_dim: hd, n_head_kv: cfg.n_head_kv },
            cfg,
            precision: opts.precision,
        })
    }

    /// The scaled token embeddings of `tokens` into `x` (`[n × n_embd]`).
    fn embed_into(&self, tokens: &[u32], x: &mut [f32]) -> Result<(), ModelError> {
        let d = self.cfg.n_embd;
        let scale = (d as f32).sqrt();
        for (t, &id) in tokens.iter().enumerate() {
            if id as usize >= self.cfg.n_vocab {
                return Err(ModelError::BadToken { id, n_vocab: self.cfg.n_vocab });
            }
            let row = &mut x[t * d..(t + 1) * d];
            self.tok_embd.row_f32(id as usize, row)?;
            row.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(())
    }

    /// Block `l` over the residual stream `x` (`[n × n_embd]`, in place) of the sequences
    /// `segs` (each its rows of `x`, at most one batch of its cache, its positions), with
    /// scratch `s` sized for all the rows; stores each sequence's keys and values in layer
    /// `l` of its cache. Products over all the rows at once; rotary embedding and attention
    /// per sequence.
    fn block(&self, l: usize, x: &mut [f32], s: &mut BufferSlices<'_>, segs: &mut [Seg<'_>]) {
        let c = &self.cfg;
        let b = &self.blocks[l];
        let n = x.len() / c.n_embd;
        let (qd, kvd, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
        let BufferSlices { h, q, k, v, att, o, g, u, .. } = s;
        let rope = if c.is_global(l) { &self.rope_global } else { &self.rope_local };
        h.copy_from_slice(x);
        rms_norm(h, &b.attn_norm, c.eps);
        Linear::forward_shared(&[&b.wq, &b.wk, &b.wv], h, n, &mut [&mut **q, &mut **k, &mut **v]);
        rms_norm(q, &b.q_norm, c.eps); // per head: rows of head_dim
        rms_norm(k, &b.k_norm, c.eps);
        let segs_ro: &[Seg<'_>] = segs;
        for (x, w) in [(&mut **q, qd), (&mut **k, kvd)] {
            for_each_rows_mut(x, w, |t0, rows| {
                for (i, row) in rows.chunks_exact_mut(w).enumerate() {
                    rope.apply_halves(row, hd, position(segs_ro, t0 + i));
                }
            });
        }
        for sg in segs.iter_mut() {
            let r = sg.start..sg.start + sg.n;
            sg.cache.layers[l].store(sg.pos0, &k[r.start * kvd..r.end * kvd], &v[r.start * kvd..r.end * kvd]);
            attention(
                &self.attn,
                &q[r.start * qd..r.end * qd],
                &sg.cache.layers[l],
                sg.pos0,
                sg.n,
                &mut att[r.start * qd..r.end * qd],
            );
        }
        b.wo.forward(att, n, o);
        rms_norm(o, &b.post_attn_norm, c.eps);
        add_assign(x, o);

        h.copy_from_slice(x);
        rms_norm(h, &b.ffn_norm, c.eps);
        Linear::forward_shared(&[&b.w_gate, &b.w_up], h, n, &mut [&mut **g, &mut **u]);
        gelu_tanh_gate(g, u, self.precision);
        b.w_down.forward(g, n, o);
        rms_norm(o, &b.post_ffn_norm, c.eps);
        add_assign(x, o);
    }

    /// The Linear of block weight `name` (`blk.{l}.{role}.weight`).
    fn block_linear_mut(&mut self, name: &str) -> Option<&mut Linear> {
        let (l, role) = crate::split_block_name(name)?;
        let b = self.blocks.get_mut(l)?;
        Some(match role {
            "attn_q" => &mut b.wq,
            "attn_k" => &mut b.wk,
            "attn_v" => &mut b.wv,
            "attn_output" => &mut b.wo,
            "ffn_gate" => &mut b.w_gate,
            "ffn_up" => &mut b.w_up,
            "ffn_down" => &mut b.w_down,
            _ => return None,
        })
    }

    fn forward_batch(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        logits: Option<&mut Vec<f32>>,
    ) -> Result<(), ModelError> {
        let c = &self.cfg;
        let n = tokens.len();
        let pos0 = cache.len;
        let (d, qd, kvd, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        // Activations, token-major, in buffers kept with the cache (see `Buffers`).
        let mut bufs = std::mem::take(&mut cache.buffers);
        let mut s = bufs.sized(n, d, qd, kvd, ff);
        let x = std::mem::take(&mut s.x);
        self.embed_into(tokens, x)?;

        {
            let mut segs = [Seg { start: 0, n, pos0, cache: &mut *cache }];
            for l in 0..self.blocks.len() {
                self.block(l, x, &mut s, &mut segs);
            }
        }
        cache.len = pos0 + n;

        if let Some(logits) = logits {
            let rows = if all_logits { &mut x[..] } else { &mut x[(n - 1) * d..] };
            rms_norm(rows, &self.output_norm, c.eps);
            let m = rows.len() / d;
            let start = logits.len();
            logits.resize(start + m * c.n_vocab, 0.0);
            self.output.forward(rows, m, &mut logits[start..]);
        }
        cache.buffers = bufs;
        Ok(())
    }
}

/// `g = gelu_tanh(g) * u`; on the fast path through llama.cpp's f16 table
/// ([`gelu_tanh_table`]), exactly otherwise.
fn gelu_tanh_gate(g: &mut [f32], u: &[f32], precision: Precision) {
    match precision {
        Precision::Fast => gate(g, u, gelu_tanh_table),
        Precision::Exact => gate(g, u, gelu_tanh),
    }
}

impl LanguageModel for Gemma3 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_cache(&self, n_ctx: usize) -> KvCache {
        KvCache::with_windows(self.kv, n_ctx, &self.cfg.windows(), MAX_BATCH)
    }

    fn cache_bytes(&self, n_ctx: usize) -> u64 {
        KvCache::bytes_for(self.kv, n_ctx, &self.cfg.windows(), MAX_BATCH)
    }

    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let mut x = vec![0.0f32; tokens.len() * self.cfg.n_embd];
        self.embed_into(tokens, &mut x)?;
        Ok(x)
    }

    fn forward_block(&self, l: usize, x: &mut [f32], cache: &mut KvCache) -> Result<(), ModelError> {
        let c = &self.cfg;
        let d = c.n_embd;
        let n = x.len() / d;
        if l >= self.blocks.len() || x.len() != n * d {
            return Err(ModelError::BadConfig(format!(
                "block {l} of {} over {} values (not a whole number of {d}-wide rows)",
                self.blocks.len(),
                x.len()
            )));
        }
        if cache.len + n > cache.n_ctx {
            return Err(ModelError::ContextOverflow { needed: cache.len + n, n_ctx: cache.n_ctx });
        }
        // As forward_into: local layers' rings hold window + one batch.
        let batch = cache.max_batch.min(MAX_BATCH);
        let mut bufs = std::mem::take(&mut cache.buffers);
        for (i, xs) in x.chunks_mut(batch * d).enumerate() {
            let m = xs.len() / d;
            let mut s = bufs.sized(m, d, c.q_dim(), c.kv_dim(), c.n_ff);
            let pos0 = cache.len + i * batch;
            self.block(l, xs, &mut s, &mut [Seg { start: 0, n: m, pos0, cache: &mut *cache }]);
        }
        cache.buffers = bufs;
        Ok(())
    }

    fn replace_weight(&mut self, name: &str, w: Linear) -> Result<(), ModelError> {
        crate::replace_checked(self.block_linear_mut(name), name, w)
    }

    fn forward_many(
        &self,
        seqs: &mut [SeqStep<'_>],
        bufs: &mut Buffers,
        logits: &mut [Vec<f32>],
    ) -> Result<(), ModelError> {
        let c = &self.cfg;
        check_steps(seqs, logits, c.n_vocab)?;
        // Local layers' rings hold window + one batch: longer parts go alone, in batches.
        if seqs.iter().any(|s| s.tokens.len() > s.cache.max_batch.min(MAX_BATCH)) {
            for (s, l) in seqs.iter_mut().zip(logits.iter_mut()) {
                self.forward_into(s.tokens, s.cache, false, l)?;
            }
            return Ok(());
        }
        if seqs.is_empty() {
            return Ok(());
        }
        let (d, qd, kvd, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        let mut s = bufs.sized(total, d, qd, kvd, ff);
        let x = std::mem::take(&mut s.x);
        let mut segs = begin_step(seqs, x, d, |t, x| self.embed_into(t, x))?;
        for l in 0..self.blocks.len() {
            self.block(l, x, &mut s, &mut segs);
        }
        end_step(&mut segs, x, s.h, &self.output_norm, c.eps, &self.output, logits);
        Ok(())
    }

    fn forward_into(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let n_vocab = self.cfg.n_vocab;
        logits.clear();
        if tokens.is_empty() {
            return Ok(());
        }
        if cache.len + tokens.len() > cache.n_ctx {
            return Err(ModelError::ContextOverflow { needed: cache.len + tokens.len(), n_ctx: cache.n_ctx });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(ModelError::BadToken { id, n_vocab });
        }
        // Local layers' rings hold window + one batch: feed at most a batch at a time.
        let batch = cache.max_batch.min(MAX_BATCH);
        let n_chunks = tokens.len().div_ceil(batch);
        for (i, chunk) in tokens.chunks(batch).enumerate() {
            let emit = all_logits || i + 1 == n_chunks;
            self.forward_batch(chunk, cache, all_logits, emit.then_some(&mut *logits))?;
        }
        Ok(())
    }
}
