//! Llama (Touvron et al., 2023, "LLaMA: Open and Efficient Foundation Language Models") as stored
//! in GGUF by llama.cpp's converter: pre-norm blocks with RMSNorm, rotary position embedding on
//! adjacent pairs (the converter permutes Q/K rows for that), grouped-query attention, SwiGLU
//! feed-forward, and an output projection tied to the token embedding when `output.weight` is
//! absent. SmolLM2 is this architecture.

use edgellm_core::parallel::for_each_rows_mut;
use edgellm_formats::GgufFile;

use crate::attention::{attention, AttnShape};
use crate::kv_cache::{BufferSlices, Buffers, KvCache, KvShape};
use crate::linear::{check_shape, gguf_vector, Linear};
use crate::nn::{add_assign, rms_norm, swiglu, Rope};
use crate::{check_steps, LanguageModel, LoadOptions, ModelError, ModelInfo, SeqStep};

/// Hyper-parameters from the `llama.*` metadata.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
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
    /// RoPE frequency base.
    pub rope_base: f64,
    /// Rotated dims per head.
    pub rope_dim: usize,
    /// Training context.
    pub n_ctx_train: usize,
}

impl LlamaConfig {
    /// Read the hyper-parameters of architecture `arch` (normally `"llama"`).
    pub fn from_gguf(f: &GgufFile, arch: &str) -> Result<LlamaConfig, ModelError> {
        let u = |k: &str| -> Result<usize, ModelError> { Ok(f.get_u64(&format!("{arch}.{k}"))? as usize) };
        // A model without blocks would leave the other sizes unchecked by any tensor (and they
        // size the working buffers).
        if u("block_count")? == 0 {
            return Err(ModelError::BadConfig("block_count is 0: a model needs at least one block".into()));
        }
        let n_embd = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let n_head_kv = match f.get(&format!("{arch}.attention.head_count_kv")) {
            Some(_) => u("attention.head_count_kv")?,
            None => n_head,
        };
        let key_length = f.get(&format!("{arch}.attention.key_length")).is_some();
        // Without an explicit key length the heads split the residual width.
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 || (!key_length && n_embd % n_head != 0) {
            return Err(ModelError::BadConfig(format!(
                "{n_head} heads, {n_head_kv} KV heads and width {n_embd} are inconsistent"
            )));
        }
        let head_dim = if key_length { u("attention.key_length")? } else { n_embd / n_head };
        if head_dim == 0 {
            return Err(ModelError::BadConfig("attention.key_length is 0".into()));
        }
        // The query width sizes buffers before any tensor checks it (found by fuzzing:
        // `tests/corpus/gguf_structured/head-width-overflow`).
        if head_dim > 1024 || n_head.checked_mul(head_dim).is_none() {
            return Err(ModelError::BadConfig(format!("{n_head} heads of width {head_dim}: too wide")));
        }
        let rope_dim = match f.get(&format!("{arch}.rope.dimension_count")) {
            Some(_) => u("rope.dimension_count")?,
            None => head_dim,
        };
        if rope_dim > head_dim || rope_dim % 2 != 0 || rope_dim > 1024 {
            return Err(ModelError::BadConfig(format!("rope dimension {rope_dim} with head dim {head_dim}")));
        }
        if let Some(v) = f.get(&format!("{arch}.rope.scaling.type")) {
            if v.as_str() != Some("none") {
                return Err(ModelError::BadConfig(format!("RoPE scaling {v} is not supported yet")));
            }
        }
        let n_vocab = match f.get(&format!("{arch}.vocab_size")) {
            Some(_) => u("vocab_size")?,
            None => f.get_array("tokenizer.ggml.tokens")?.len(),
        };
        Ok(LlamaConfig {
            n_vocab,
            n_embd,
            n_layer: u("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: u("feed_forward_length")?,
            eps: f.get_f64(&format!("{arch}.attention.layer_norm_rms_epsilon"))? as f32,
            rope_base: match f.get(&format!("{arch}.rope.freq_base")) {
                Some(_) => f.get_f64(&format!("{arch}.rope.freq_base"))?,
                None => 10000.0,
            },
            rope_dim,
            n_ctx_train: u("context_length")?,
        })
    }

    fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

struct Block {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

/// A Llama-architecture model.
pub struct Llama {
    /// Hyper-parameters.
    pub cfg: LlamaConfig,
    info: ModelInfo,
    tok_embd: Linear,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    output: Linear,
    rope: Rope,
    attn: AttnShape,
    kv: KvShape,
}

impl Llama {
    /// Load from a GGUF file (architecture `llama`).
    pub fn from_gguf(f: &GgufFile) -> Result<Self, ModelError> {
        Self::from_gguf_with(f, &LoadOptions::default())
    }

    /// Load with options (the Linear precision).
    pub fn from_gguf_with(f: &GgufFile, opts: &LoadOptions) -> Result<Llama, ModelError> {
        let arch = f.architecture()?.to_string();
        let cfg = LlamaConfig::from_gguf(f, &arch)?;
        opts.kv_type().check_head_dim(cfg.head_dim)?;
        let lin = |name: &str, i: usize, o: usize| {
            Linear::from_gguf(f, name, i, o).map(|l| l.with_precision(opts.precision).packed())
        };
        let (d, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
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
                wo: lin(&n("attn_output"), qd, d)?,
                ffn_norm: gguf_vector(f, &n("ffn_norm"), d)?,
                w_gate: lin(&n("ffn_gate"), d, ff)?,
                w_up: lin(&n("ffn_up"), d, ff)?,
                w_down: lin(&n("ffn_down"), ff, d)?,
            });
        }
        let output = match f.tensor("output.weight") {
            Some(t) => {
                check_shape(t, &[d as u64, cfg.n_vocab as u64])?;
                lin("output.weight", d, cfg.n_vocab)?
            }
            None => tok_embd.clone(),
        };
        let info = ModelInfo::from_gguf(f, &arch, cfg.n_vocab, cfg.n_ctx_train, cfg.n_layer, d);
        let rope = Rope { dim: cfg.rope_dim, base: cfg.rope_base };
        let attn = AttnShape {
            n_head: cfg.n_head,
            n_head_kv: cfg.n_head_kv,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
        };
        Ok(Llama {
            info,
            tok_embd,
            blocks,
            output_norm: gguf_vector(f, "output_norm.weight", d)?,
            output,
            rope,
            attn,
            kv: KvShape { kv_type: opts.kv_type(), head_dim: cfg.head_dim, n_head_kv: cfg.n_head_kv },
            cfg,
        })
    }
}

impl Llama {
    /// The token embeddings of `tokens` into `x` (`[n × n_embd]`).
    fn embed_into(&self, tokens: &[u32], x: &mut [f32]) -> Result<(), ModelError> {
        let d = self.cfg.n_embd;
        for (t, &id) in tokens.iter().enumerate() {
            if id as usize >= self.cfg.n_vocab {
                return Err(ModelError::BadToken { id, n_vocab: self.cfg.n_vocab });
            }
            self.tok_embd.row_f32(id as usize, &mut x[t * d..(t + 1) * d])?;
        }
        Ok(())
    }

    /// Block `l` over the residual stream `x` (`[n × n_embd]`, updated in place) of the
    /// sequences `segs` (each its rows of `x`, its positions and its cache), with scratch `s`
    /// sized for all the rows; stores each sequence's keys and values in layer `l` of its
    /// cache. The products run over all the rows at once (one read of the weights); rotary
    /// embedding and attention per sequence.
    fn block(&self, l: usize, x: &mut [f32], s: &mut BufferSlices<'_>, segs: &mut [Seg<'_>]) {
        let c = &self.cfg;
        let b = &self.blocks[l];
        let n = x.len() / c.n_embd;
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let BufferSlices { h, q, k, v, att, o, g, u, .. } = s;
        h.copy_from_slice(x);
        rms_norm(h, &b.attn_norm, c.eps);
        Linear::forward_shared(&[&b.wq, &b.wk, &b.wv], h, n, &mut [&mut **q, &mut **k, &mut **v]);
        let segs_ro: &[Seg<'_>] = segs;
        for (x, w) in [(&mut **q, qd), (&mut **k, kvd)] {
            for_each_rows_mut(x, w, |t0, rows| {
                for (i, row) in rows.chunks_exact_mut(w).enumerate() {
                    self.rope.apply_adjacent(row, c.head_dim, position(segs_ro, t0 + i));
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
        add_assign(x, o);

        h.copy_from_slice(x);
        rms_norm(h, &b.ffn_norm, c.eps);
        Linear::forward_shared(&[&b.w_gate, &b.w_up], h, n, &mut [&mut **g, &mut **u]);
        swiglu(g, u);
        b.w_down.forward(g, n, o);
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
}

impl LanguageModel for Llama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_cache(&self, n_ctx: usize) -> KvCache {
        KvCache::new(self.kv, self.cfg.n_layer, n_ctx)
    }

    fn cache_bytes(&self, n_ctx: usize) -> u64 {
        KvCache::bytes_for(self.kv, n_ctx, &vec![None; self.cfg.n_layer], n_ctx)
    }

    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let mut x = vec![0.0f32; tokens.len() * self.cfg.n_embd];
        self.embed_into(tokens, &mut x)?;
        Ok(x)
    }

    fn forward_block(&self, l: usize, x: &mut [f32], cache: &mut KvCache) -> Result<(), ModelError> {
        let c = &self.cfg;
        let n = x.len() / c.n_embd;
        if l >= self.blocks.len() || x.len() != n * c.n_embd {
            return Err(ModelError::BadConfig(format!(
                "block {l} of {} over {} values (not a whole number of {}-wide rows)",
                self.blocks.len(),
                x.len(),
                c.n_embd
            )));
        }
        if cache.len + n > cache.n_ctx {
            return Err(ModelError::ContextOverflow { needed: cache.len + n, n_ctx: cache.n_ctx });
        }
        let mut bufs = std::mem::take(&mut cache.buffers);
        let mut s = bufs.sized(n, c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        let pos0 = cache.len;
        self.block(l, x, &mut s, &mut [Seg { start: 0, n, pos0, cache: &mut *cache }]);
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
        let c = &self.cfg;
        let n = tokens.len();
        let pos0 = cache.len;
        if n == 0 {
            logits.clear();
            return Ok(());
        }
        if pos0 + n > cache.n_ctx {
            return Err(ModelError::ContextOverflow { needed: pos0 + n, n_ctx: cache.n_ctx });
        }
        for &id in tokens {
            if id as usize >= c.n_vocab {
                return Err(ModelError::BadToken { id, n_vocab: c.n_vocab });
            }
        }
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

        let rows = if all_logits { &mut x[..] } else { &mut x[(n - 1) * d..] };
        rms_norm(rows, &self.output_norm, c.eps);
        let m = rows.len() / d;
        logits.resize(m * c.n_vocab, 0.0);
        self.output.forward(rows, m, &mut logits[..m * c.n_vocab]);
        cache.buffers = bufs;
        Ok(())
    }
}

/// One sequence's part of a step: rows `start..start + n` of the activations, at positions
/// `pos0..` of `cache`.
pub(crate) struct Seg<'c> {
    pub(crate) start: usize,
    pub(crate) n: usize,
    pub(crate) pos0: usize,
    pub(crate) cache: &'c mut KvCache,
}

/// Position of activation row `t` among the sequences `segs`.
pub(crate) fn position(segs: &[Seg<'_>], t: usize) -> usize {
    for sg in segs {
        if t < sg.start + sg.n {
            return sg.pos0 + (t - sg.start);
        }
    }
    unreachable!("row {t} beyond the step's sequences")
}

/// The sequences of a step as [`Seg`]s over the activations `x` (`[Σn × d]`), their tokens
/// embedded by `embed`.
pub(crate) fn begin_step<'c>(
    seqs: &'c mut [SeqStep<'_>],
    x: &mut [f32],
    d: usize,
    embed: impl Fn(&[u32], &mut [f32]) -> Result<(), ModelError>,
) -> Result<Vec<Seg<'c>>, ModelError> {
    let mut segs = Vec::with_capacity(seqs.len());
    let mut start = 0;
    for sq in seqs.iter_mut() {
        let n = sq.tokens.len();
        embed(sq.tokens, &mut x[start * d..(start + n) * d])?;
        segs.push(Seg { start, n, pos0: sq.cache.len, cache: &mut *sq.cache });
        start += n;
    }
    Ok(segs)
}

/// The end of a step: each cache advanced, and the last row of each sequence normalized and
/// through the output projection together (one read of its weights), into `logits[i]`.
pub(crate) fn end_step(
    segs: &mut [Seg<'_>],
    x: &[f32],
    h: &mut [f32],
    norm: &[f32],
    eps: f32,
    output: &Linear,
    logits: &mut [Vec<f32>],
) {
    let (d, m, nv) = (norm.len(), segs.len(), output.out_features);
    let h = &mut h[..m * d];
    for (j, sg) in segs.iter_mut().enumerate() {
        sg.cache.len = sg.pos0 + sg.n;
        let last = sg.start + sg.n - 1;
        h[j * d..(j + 1) * d].copy_from_slice(&x[last * d..(last + 1) * d]);
    }
    rms_norm(h, norm, eps);
    let (first, rest) = logits.split_first_mut().expect("one logits vector per sequence");
    first.resize(m * nv, 0.0);
    output.forward(h, m, first);
    for (j, l) in rest.iter_mut().enumerate() {
        l.clear();
        l.extend_from_slice(&first[(j + 1) * nv..(j + 2) * nv]);
    }
    first.truncate(nv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellm_formats::{GgufWriter, Value};

    fn config(block_count: u32, n_ff: u32) -> Result<LlamaConfig, ModelError> {
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String("llama".into()));
        for (k, v) in [
            ("block_count", block_count),
            ("context_length", 64),
            ("embedding_length", 32),
            ("feed_forward_length", n_ff),
            ("attention.head_count", 1),
            ("attention.head_count_kv", 1),
            ("vocab_size", 1),
        ] {
            w.set(&format!("llama.{k}"), Value::U32(v));
        }
        w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        LlamaConfig::from_gguf(&GgufFile::from_vec(bytes).unwrap(), "llama")
    }

    /// Found by fuzzing (`tests/corpus/gguf_structured/zero-blocks-huge-ffn`): with no block, no
    /// tensor checked a feed-forward width of ~10^9, which then sized 4 GB of buffers.
    #[test]
    fn a_model_without_blocks_is_refused() {
        assert!(config(1, 64).is_ok());
        let e = config(0, 976_894_522).unwrap_err();
        assert!(e.to_string().contains("block_count is 0"), "{e}");
    }

    /// Found by fuzzing (`tests/corpus/gguf_structured/head-width-overflow`): an explicit key
    /// length made `n_head × head_dim` overflow.
    #[test]
    fn absurd_head_widths_are_refused() {
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String("llama".into()));
        for (k, v) in [
            ("block_count", 1u64),
            ("context_length", 64),
            ("embedding_length", 32),
            ("feed_forward_length", 64),
            ("attention.head_count", 1 << 40),
            ("attention.head_count_kv", 1),
            ("vocab_size", 1),
            ("attention.key_length", 1 << 30),
        ] {
            w.set(&format!("llama.{k}"), Value::U64(v));
        }
        w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let e = LlamaConfig::from_gguf(&GgufFile::from_vec(bytes).unwrap(), "llama").unwrap_err();
        assert!(e.to_string().contains("too wide"), "{e}");
    }
}
