//! Perplexity and KL divergence over a text file, computed the way llama.cpp's `llama-perplexity`
//! does, so figures are comparable with the ones it prints.
//!
//! The method (llama.cpp `tools/perplexity`, the default, non-strided mode):
//! - the whole file is tokenized at once (one trailing `\n` dropped, BOS first when the vocabulary
//!   adds one, special tokens not parsed);
//! - the tokens are cut into non-overlapping chunks of `c` tokens (a partial last chunk is
//!   dropped); when the vocabulary adds BOS, the first token of every chunk is replaced by BOS;
//! - each chunk runs from an empty KV cache; the logits at positions `c/2 .. c-1` score the
//!   tokens that follow them, so every chunk scores `c - 1 - c/2` tokens, each with at least half
//!   a context before it;
//! - PPL = `exp(mean NLL)` over all scored tokens, with the uncertainty
//!   `PPL · sqrt((mean NLL² − mean NLL²)/(n − 1))`.
//!
//! Departures: log-softmax and KL divergence run in f64 on the full logit rows (llama.cpp sums
//! `expf` in double, and for KL reads the base from a file of 16-bit-quantized log-probabilities
//! that drops probabilities under e⁻¹⁶), so the KL figures agree with its tool to about its own
//! rounding, not bit for bit. A file needs one chunk of tokens (llama-perplexity asks for two).
//!
//! The scoring core ([`token_nll`], [`kl_divergence`], [`NllStats`], [`KldStats`]) is pure
//! arithmetic over logit rows; [`perplexity`] and [`kl_divergence_eval`] drive models through it.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use edgellm_core::parallel::for_each_range;
use edgellm_models::{LanguageModel, ModelError};
use edgellm_text::Tokenizer;
use serde::Serialize;

/// An error of a perplexity or KL-divergence evaluation.
#[derive(Debug, thiserror::Error)]
pub enum PplError {
    /// The text file could not be read.
    #[error("cannot read the text file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text file is not UTF-8.
    #[error("{0}: not valid UTF-8 text")]
    NotUtf8(PathBuf),
    /// The context size cannot be used.
    #[error("context size {n_ctx}: {why}")]
    BadContext {
        /// The context size asked for.
        n_ctx: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The text does not fill one chunk.
    #[error("the text tokenizes to {tokens} tokens, fewer than one chunk of {n_ctx}; use a longer file or a smaller context (-c)")]
    TooShort {
        /// Tokens of the text.
        tokens: usize,
        /// Chunk size.
        n_ctx: usize,
    },
    /// `--chunks 0`.
    #[error("the number of chunks must be at least 1")]
    NoChunks,
    /// The base and the compared model have different vocabularies.
    #[error("the base model has a vocabulary of {base} tokens and the model {model}: KL divergence needs the same vocabulary")]
    VocabMismatch {
        /// Base vocabulary size.
        base: usize,
        /// Compared model's vocabulary size.
        model: usize,
    },
    /// A token id outside a model's vocabulary.
    #[error("token id {id} is outside the model's vocabulary of {n_vocab}")]
    BadToken {
        /// The id.
        id: u32,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// The model failed to run.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// `ln Σ exp(l)` of a logit row, in f64 (shifted by the maximum for stability).
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln()
}

/// Negative log-likelihood of `target` under the softmax of `logits`: `lse(logits) − logits[target]`.
pub fn token_nll(logits: &[f32], target: u32) -> f64 {
    log_sum_exp(logits) - logits[target as usize] as f64
}

/// `KL(P_base ‖ P_model) = Σ p_base (ln p_base − ln p_model)` of the softmaxes of two logit
/// rows, in f64.
pub fn kl_divergence(base: &[f32], model: &[f32]) -> f64 {
    kl_with_lse(base, model, log_sum_exp(base), log_sum_exp(model))
}

/// [`kl_divergence`] given both rows' log-sum-exp (clamped at 0 against rounding).
fn kl_with_lse(base: &[f32], model: &[f32], lse_base: f64, lse_model: f64) -> f64 {
    base.iter()
        .zip(model)
        .map(|(&b, &m)| {
            let lpb = b as f64 - lse_base;
            lpb.exp() * (lpb - (m as f64 - lse_model))
        })
        .sum::<f64>()
        .max(0.0)
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// Running sums of per-token negative log-likelihoods.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NllStats {
    /// Σ NLL.
    pub sum: f64,
    /// Σ NLL².
    pub sum2: f64,
    /// Tokens counted.
    pub count: usize,
}

impl NllStats {
    /// Count one token's NLL.
    pub fn push(&mut self, nll: f64) {
        self.sum += nll;
        self.sum2 += nll * nll;
        self.count += 1;
    }

    /// Mean NLL (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Standard error of the mean NLL, `sqrt((E[x²] − E[x]²)/(n − 1))` (0 below two tokens).
    pub fn mean_err(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let m = self.mean();
        let var = self.sum2 / self.count as f64 - m * m;
        if var > 0.0 {
            (var / (self.count - 1) as f64).sqrt()
        } else {
            0.0
        }
    }

    /// Perplexity, `exp(mean NLL)`.
    pub fn ppl(&self) -> f64 {
        self.mean().exp()
    }

    /// Uncertainty of the perplexity, `ppl · mean_err` (as llama-perplexity prints it).
    pub fn ppl_err(&self) -> f64 {
        self.ppl() * self.mean_err()
    }
}

/// A value with its uncertainty (standard error).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The value.
    pub value: f64,
    /// Its standard error.
    pub err: f64,
}

/// Per-token comparisons of a model with a base, accumulated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KldStats {
    /// NLLs under the model.
    pub nll: NllStats,
    /// NLLs under the base.
    pub nll_base: NllStats,
    /// Σ NLL · NLL_base (for the covariance of the two log-perplexities).
    pub sum_nll_nll_base: f64,
    /// KL(base ‖ model) of every token, in order.
    pub kld: Vec<f64>,
    /// Tokens where both put their largest logit on the same token.
    pub same_top: usize,
}

impl KldStats {
    /// Count one token: its target, the base's and the model's logit rows.
    pub fn push(&mut self, base: &[f32], model: &[f32], target: u32) {
        self.push_scored(score_pair(base, model, target));
    }

    fn push_scored(&mut self, s: PairScore) {
        self.nll.push(s.nll);
        self.nll_base.push(s.nll_base);
        self.sum_nll_nll_base += s.nll * s.nll_base;
        self.kld.push(s.kld);
        self.same_top += s.same_top as usize;
    }

    /// The summary statistics.
    pub fn summary(&self) -> KldSummary {
        let n = self.nll.count;
        let nf = n as f64;
        // Covariance of the two mean NLLs (llama-perplexity's estimate).
        let cov = if n >= 2 {
            (self.sum_nll_nll_base / nf - self.nll.mean() * self.nll_base.mean()) / (nf - 1.0)
        } else {
            0.0
        };
        let (e, eb) = (self.nll.mean_err(), self.nll_base.mean_err());
        let ln_ratio = self.nll.mean() - self.nll_base.mean();
        let ln_ratio_err = (e * e + eb * eb - 2.0 * cov).max(0.0).sqrt();
        let mut kld_stats = NllStats::default();
        self.kld.iter().for_each(|&k| kld_stats.push(k));
        let kld_sd = if n >= 2 {
            let m = kld_stats.mean();
            ((kld_stats.sum2 - nf * m * m).max(0.0) / (nf - 1.0)).sqrt()
        } else {
            0.0
        };
        let mut sorted = self.kld.clone();
        sorted.sort_by(f64::total_cmp);
        let same = if n > 0 { self.same_top as f64 / nf } else { 0.0 };
        let same_err = if n >= 2 { (same * (1.0 - same) / (nf - 1.0)).sqrt() } else { 0.0 };
        KldSummary {
            tokens: n,
            ppl_base: Estimate { value: self.nll_base.ppl(), err: self.nll_base.ppl_err() },
            ppl: Estimate { value: self.nll.ppl(), err: self.nll.ppl_err() },
            ln_ppl_ratio: Estimate { value: ln_ratio, err: ln_ratio_err },
            ppl_ratio: Estimate { value: ln_ratio.exp(), err: ln_ratio.exp() * ln_ratio_err },
            kld_mean: Estimate { value: kld_stats.mean(), err: kld_stats.mean_err() },
            kld_sd,
            kld_median: percentile(&sorted, 0.5),
            kld_p99: percentile(&sorted, 0.99),
            kld_max: sorted.last().copied().unwrap_or(0.0),
            same_top: Estimate { value: same, err: same_err },
        }
    }
}

/// The `fraction` quantile of sorted values, interpolating linearly between the two nearest
/// ranks at `fraction · (n − 1)` (as llama-perplexity; 0 when empty).
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => {
            let p = fraction.clamp(0.0, 1.0) * (n - 1) as f64;
            let i = p.floor() as usize;
            let f = p - i as f64;
            let j = (i + 1).min(n - 1);
            (1.0 - f) * sorted[i] + f * sorted[j]
        }
    }
}

/// KL-divergence statistics of a model against a base over the same tokens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KldSummary {
    /// Tokens scored.
    pub tokens: usize,
    /// Perplexity of the base.
    pub ppl_base: Estimate,
    /// Perplexity of the model.
    pub ppl: Estimate,
    /// `ln(PPL / PPL_base)`, with the uncertainty that accounts for their correlation.
    pub ln_ppl_ratio: Estimate,
    /// `PPL / PPL_base`.
    pub ppl_ratio: Estimate,
    /// Mean KL(base ‖ model) per token, with the standard error of the mean.
    pub kld_mean: Estimate,
    /// Standard deviation of the per-token KL divergence.
    pub kld_sd: f64,
    /// Median per-token KL divergence.
    pub kld_median: f64,
    /// 99th percentile of the per-token KL divergence.
    pub kld_p99: f64,
    /// Largest per-token KL divergence.
    pub kld_max: f64,
    /// Fraction of tokens where both models' most likely next token is the same.
    pub same_top: Estimate,
}

#[derive(Clone, Copy, Debug)]
struct PairScore {
    nll: f64,
    nll_base: f64,
    kld: f64,
    same_top: bool,
}

fn score_pair(base: &[f32], model: &[f32], target: u32) -> PairScore {
    let (lb, lm) = (log_sum_exp(base), log_sum_exp(model));
    let t = target as usize;
    PairScore {
        nll: lm - model[t] as f64,
        nll_base: lb - base[t] as f64,
        kld: kl_with_lse(base, model, lb, lm),
        same_top: argmax(base) == argmax(model),
    }
}

/// `f(i)` for `i` in `0..n`, in parallel on the core's thread pool, results in order.
fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let parts: Mutex<Vec<(usize, Vec<T>)>> = Mutex::new(Vec::new());
    for_each_range(n, 1, |r: Range<usize>| {
        let start = r.start;
        let v: Vec<T> = r.map(&f).collect();
        parts.lock().unwrap_or_else(|e| e.into_inner()).push((start, v));
    });
    let mut parts = parts.into_inner().unwrap_or_else(|e| e.into_inner());
    parts.sort_by_key(|p| p.0);
    parts.into_iter().flat_map(|p| p.1).collect()
}

/// Read a text file for evaluation, dropping one trailing `\n` (as llama.cpp's `-f` does).
pub fn read_text(path: impl AsRef<Path>) -> Result<String, PplError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| PplError::Io { path: path.into(), source })?;
    let mut text = String::from_utf8(bytes).map_err(|_| PplError::NotUtf8(path.into()))?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

/// Tokenize an evaluation text as llama-perplexity does: BOS first where the vocabulary adds
/// one, special tokens not parsed. Returns the tokens and the BOS each chunk starts with.
pub fn tokenize(tok: &Tokenizer, text: &str) -> (Vec<u32>, Option<u32>) {
    let add_bos = tok.add_bos_default() && tok.bos_id().is_some();
    let bos = if add_bos { tok.bos_id() } else { None };
    (tok.encode(text, add_bos, false), bos)
}

/// How to cut the tokens into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PplOptions {
    /// Tokens per chunk (the context each chunk runs in); even, at least 4.
    pub n_ctx: usize,
    /// Evaluate at most this many chunks (`None`: all whole chunks of the text).
    pub max_chunks: Option<usize>,
}

impl PplOptions {
    /// Check the options against a text of `n_tokens` tokens and a model trained for
    /// `n_ctx_train` positions; returns the number of chunks to evaluate.
    pub fn plan(&self, n_tokens: usize, n_ctx_train: usize) -> Result<usize, PplError> {
        let n_ctx = self.n_ctx;
        let bad = |why: String| PplError::BadContext { n_ctx, why };
        if n_ctx < 4 {
            return Err(bad("at least 4 tokens are needed (the second half of a chunk is scored)".into()));
        }
        if !n_ctx.is_multiple_of(2) {
            return Err(bad("must be even (the second half of each chunk is scored)".into()));
        }
        if n_ctx_train > 0 && n_ctx > n_ctx_train {
            return Err(bad(format!("larger than the {n_ctx_train} positions the model was trained for")));
        }
        if self.max_chunks == Some(0) {
            return Err(PplError::NoChunks);
        }
        let whole = n_tokens / n_ctx;
        if whole == 0 {
            return Err(PplError::TooShort { tokens: n_tokens, n_ctx });
        }
        Ok(self.max_chunks.map_or(whole, |m| m.min(whole)))
    }

    /// First scored position of a chunk: logits at `first..n_ctx-1` predict the next token.
    pub fn first(&self) -> usize {
        self.n_ctx / 2
    }

    /// Tokens a chunk scores.
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first()
    }
}

/// Tokens of chunk `i`: `tokens[i·c .. (i+1)·c]`, the first replaced by `bos` when given.
pub fn chunk_tokens(tokens: &[u32], i: usize, n_ctx: usize, bos: Option<u32>) -> Vec<u32> {
    let mut c = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
    if let Some(b) = bos {
        c[0] = b;
    }
    c
}

/// Progress after one chunk, for a progress line.
#[derive(Clone, Copy, Debug)]
pub struct ChunkProgress {
    /// Chunks done.
    pub done: usize,
    /// Chunks in all.
    pub total: usize,
    /// Perplexity (of the compared model, for KL divergence) over the chunks so far.
    pub ppl: f64,
    /// Mean KL divergence so far (KL evaluations only).
    pub kld: Option<f64>,
    /// Seconds since the start.
    pub seconds: f64,
}

/// Run one chunk from an empty cache and return the logit rows of positions `first..n_ctx-1`
/// (`[(n_ctx-1-first) × n_vocab]`). Positions before `first` run without logits (only the KV
/// cache is needed from them), in batches the cache accepts.
fn scored_logits(model: &dyn LanguageModel, chunk: &[u32], first: usize) -> Result<Vec<f32>, PplError> {
    let n_vocab = model.info().n_vocab;
    if let Some(&id) = chunk.iter().find(|&&id| id as usize >= n_vocab) {
        return Err(PplError::BadToken { id, n_vocab });
    }
    let n_ctx = chunk.len();
    let mut cache = model.new_cache(n_ctx);
    let step = cache.max_batch.clamp(1, 512);
    for part in chunk[..first].chunks(step) {
        model.forward(part, &mut cache, false)?;
    }
    let mut out = Vec::with_capacity((n_ctx - 1 - first) * n_vocab);
    let mut pos = first;
    for part in chunk[first..].chunks(step) {
        let logits = model.forward(part, &mut cache, true)?;
        // Rows of positions up to n_ctx-2: the last position predicts nothing in the chunk.
        let keep = part.len().min(n_ctx - 1 - pos);
        out.extend_from_slice(&logits[..keep * n_vocab]);
        pos += part.len();
    }
    Ok(out)
}

/// Result of a perplexity evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PplReport {
    /// Perplexity over all scored tokens.
    pub ppl: f64,
    /// Its uncertainty (as llama-perplexity's `±`).
    pub ppl_err: f64,
    /// Mean negative log-likelihood (nats per token).
    pub mean_nll: f64,
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored.
    pub tokens_scored: usize,
    /// Tokens of the whole text.
    pub text_tokens: usize,
    /// Whether each chunk starts with BOS.
    pub bos: bool,
    /// Running perplexity after each chunk (llama-perplexity's `[i]ppl` list).
    pub running_ppl: Vec<f64>,
    /// Seconds spent running the model and scoring.
    pub seconds: f64,
    /// Tokens run through the model per second.
    pub tokens_per_s: f64,
}

/// Perplexity of `model` over `tokens` (from [`tokenize`]), chunk by chunk; `progress` is
/// called after each chunk.
pub fn perplexity(
    model: &dyn LanguageModel,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PplOptions,
    mut progress: impl FnMut(&ChunkProgress),
) -> Result<PplReport, PplError> {
    let n_chunks = opts.plan(tokens.len(), model.info().n_ctx_train)?;
    let (n_ctx, first, n_vocab) = (opts.n_ctx, opts.first(), model.info().n_vocab);
    let t0 = Instant::now();
    let mut stats = NllStats::default();
    let mut running = Vec::with_capacity(n_chunks);
    for i in 0..n_chunks {
        let chunk = chunk_tokens(tokens, i, n_ctx, bos);
        let logits = scored_logits(model, &chunk, first)?;
        let nll = par_map(opts.scored_per_chunk(), |j| {
            token_nll(&logits[j * n_vocab..(j + 1) * n_vocab], chunk[first + j + 1])
        });
        nll.into_iter().for_each(|v| stats.push(v));
        running.push(stats.ppl());
        progress(&ChunkProgress {
            done: i + 1,
            total: n_chunks,
            ppl: stats.ppl(),
            kld: None,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(PplReport {
        ppl: stats.ppl(),
        ppl_err: stats.ppl_err(),
        mean_nll: stats.mean(),
        n_ctx,
        chunks: n_chunks,
        tokens_scored: stats.count,
        text_tokens: tokens.len(),
        bos: bos.is_some(),
        running_ppl: running,
        seconds,
        tokens_per_s: (n_chunks * n_ctx) as f64 / seconds.max(1e-9),
    })
}

/// Result of a KL-divergence evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KldReport {
    /// The statistics.
    #[serde(flatten)]
    pub summary: KldSummary,
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens of the whole text.
    pub text_tokens: usize,
    /// Whether each chunk starts with BOS.
    pub bos: bool,
    /// Seconds spent running both models and scoring.
    pub seconds: f64,
}

/// The base of a KL-divergence evaluation: a model run alongside, or its logits computed once
/// ([`BaseLogits`]) and compared with many models.
#[derive(Clone, Copy)]
pub enum KldBase<'a> {
    /// Run the base model on every chunk.
    Model(&'a dyn LanguageModel),
    /// Logits computed before.
    Cached(&'a BaseLogits),
}

/// A base model's scored logits over the chunks of one text, kept in memory so that a sweep
/// compares every model with them without running the base again.
#[derive(Clone, Debug)]
pub struct BaseLogits {
    /// Per chunk, `[scored × n_vocab]` logit rows.
    chunks: Vec<Vec<f32>>,
    n_vocab: usize,
    n_ctx: usize,
    n_ctx_train: usize,
    nll: NllStats,
}

impl BaseLogits {
    /// Bytes the logits of `chunks` chunks would take for a model of `n_vocab` tokens.
    pub fn bytes_needed(n_vocab: usize, opts: &PplOptions, chunks: usize) -> u64 {
        (chunks * opts.scored_per_chunk() * n_vocab * 4) as u64
    }

    /// Runs `base` over the chunks of `tokens` that `opts` plans and keeps its scored logits;
    /// `progress(done, total)` after each chunk.
    pub fn compute(
        base: &dyn LanguageModel,
        tokens: &[u32],
        bos: Option<u32>,
        opts: &PplOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<BaseLogits, PplError> {
        let info = base.info();
        let n_chunks = opts.plan(tokens.len(), info.n_ctx_train)?;
        let (first, n_vocab) = (opts.first(), info.n_vocab);
        let mut chunks = Vec::with_capacity(n_chunks);
        let mut nll = NllStats::default();
        for i in 0..n_chunks {
            let chunk = chunk_tokens(tokens, i, opts.n_ctx, bos);
            let logits = scored_logits(base, &chunk, first)?;
            let v = par_map(opts.scored_per_chunk(), |j| {
                token_nll(&logits[j * n_vocab..(j + 1) * n_vocab], chunk[first + j + 1])
            });
            v.into_iter().for_each(|x| nll.push(x));
            chunks.push(logits);
            progress(i + 1, n_chunks);
        }
        Ok(BaseLogits { chunks, n_vocab, n_ctx: opts.n_ctx, n_ctx_train: info.n_ctx_train, nll })
    }

    /// The base's perplexity over the chunks and its uncertainty.
    pub fn ppl(&self) -> (f64, f64) {
        (self.nll.ppl(), self.nll.ppl_err())
    }

    /// Chunks held.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

/// KL divergence of `model` from `base` over the same chunks of `tokens` (from [`tokenize`]
/// with the base's tokenizer); `progress` is called after each chunk.
pub fn kl_divergence_eval(
    base: &dyn LanguageModel,
    model: &dyn LanguageModel,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PplOptions,
    progress: impl FnMut(&ChunkProgress),
) -> Result<KldReport, PplError> {
    kl_divergence_with(KldBase::Model(base), model, tokens, bos, opts, progress)
}

/// [`kl_divergence_eval`] against a base model or its cached logits. With cached logits the
/// chunking (`opts.n_ctx`, chunk count) must be the one they were computed with.
pub fn kl_divergence_with(
    base: KldBase,
    model: &dyn LanguageModel,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PplOptions,
    mut progress: impl FnMut(&ChunkProgress),
) -> Result<KldReport, PplError> {
    let (n_vocab, base_ctx_train) = match base {
        KldBase::Model(b) => (b.info().n_vocab, b.info().n_ctx_train),
        KldBase::Cached(c) => (c.n_vocab, c.n_ctx_train),
    };
    if model.info().n_vocab != n_vocab {
        return Err(PplError::VocabMismatch { base: n_vocab, model: model.info().n_vocab });
    }
    let n_ctx_train = match (base_ctx_train, model.info().n_ctx_train) {
        (0, m) => m,
        (b, 0) => b,
        (b, m) => b.min(m),
    };
    let mut n_chunks = opts.plan(tokens.len(), n_ctx_train)?;
    if let KldBase::Cached(c) = base {
        if c.n_ctx != opts.n_ctx {
            return Err(PplError::BadContext {
                n_ctx: opts.n_ctx,
                why: format!("the cached base logits were computed with chunks of {} tokens", c.n_ctx),
            });
        }
        n_chunks = n_chunks.min(c.chunks.len());
    }
    let (n_ctx, first) = (opts.n_ctx, opts.first());
    let t0 = Instant::now();
    let mut stats = KldStats::default();
    for i in 0..n_chunks {
        let chunk = chunk_tokens(tokens, i, n_ctx, bos);
        let computed;
        let lb: &[f32] = match base {
            KldBase::Model(b) => {
                computed = scored_logits(b, &chunk, first)?;
                &computed
            }
            KldBase::Cached(c) => &c.chunks[i],
        };
        let lm = scored_logits(model, &chunk, first)?;
        let scores = par_map(opts.scored_per_chunk(), |j| {
            let r = j * n_vocab..(j + 1) * n_vocab;
            score_pair(&lb[r.clone()], &lm[r], chunk[first + j + 1])
        });
        scores.into_iter().for_each(|s| stats.push_scored(s));
        progress(&ChunkProgress {
            done: i + 1,
            total: n_chunks,
            ppl: stats.nll.ppl(),
            kld: Some(stats.kld.iter().sum::<f64>() / stats.kld.len().max(1) as f64),
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(KldReport {
        summary: stats.summary(),
        n_ctx,
        chunks: n_chunks,
        text_tokens: tokens.len(),
        bos: bos.is_some(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
