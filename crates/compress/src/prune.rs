//! Pruning: set weights to zero, chosen so that the layer's output changes as little as
//! possible, in an unstructured pattern (a fraction of every row) or an N:M pattern (`N`
//! non-zeros in every group of `M` consecutive inputs of a row, what sparse tensor cores and
//! our sparse kernels use).
//!
//! Three methods, each choosing within one output row (Wanda's comparison group):
//!
//! - **magnitude**: the smallest `|w|` go.
//! - **Wanda** (Sun et al., 2024, "A Simple and Effective Pruning Approach for Large Language
//!   Models"): the smallest `|w_ij|·‖X_j‖₂` go, with `‖X_j‖₂` the norm of input channel `j`
//!   over the calibration tokens (from the same sums of squares as the importance matrix).
//! - **SparseGPT** (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be
//!   Accurately Pruned in One-Shot"): with `H = XᵀX` (damped) and `U` the upper Cholesky factor
//!   of `H⁻¹`, columns are visited in order; a pruned weight's removal is compensated on the
//!   row's later columns by `−w_i/U_ii · U_i,i+1..` (the optimal update under the quadratic
//!   loss, as GPTQ does for rounding). The mask is chosen adaptively per block of
//!   [`SPARSEGPT_BLOCK`] columns (per group of `M` for N:M) from the *updated* weights by
//!   `w²/U_ii²`. The paper's lazy batch update is an ordering of the same arithmetic; rows are
//!   independent given `U`, so here each row is updated directly and rows run in parallel. For
//!   an unstructured target each block prunes up to the cumulative count `round(s·end)`, so
//!   every row ends with exactly its share of zeros.
//!
//! Calibrated methods run **sequentially**, block by block, as both papers do: the calibration
//! tokens' residual stream is kept after each block, the block's inputs are recorded, its
//! weights are pruned, and the block is run again with the pruned weights to give the next
//! block's inputs — so each block sees the already-pruned blocks' outputs, at the cost of two
//! forward passes in all ([`prune_decoder`]). Encoders are pruned the same way with one
//! forward of the model per layer ([`prune_encoder`]; they are small).
//!
//! Only the linears inside blocks are pruned (attention and feed-forward); embeddings, the
//! output layer and norms stay dense, as in both papers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use edgellm_core::parallel::for_each_rows_mut;
use edgellm_core::DType;
use edgellm_formats::{GgufFile, GgufWriter, Value};
use edgellm_models::linear::{set_input_observer, Linear, TensorBytes};
use edgellm_models::LanguageModel;

use crate::calib::{gram_key, Calibration, Collector};
use crate::source::{ModelSource, SourceTensor};
use crate::CompressError;

/// Columns per SparseGPT mask-selection block (the paper's `Bs`).
pub const SPARSEGPT_BLOCK: usize = 128;

/// Default SparseGPT damping: this fraction of the mean diagonal of `H` (the paper's 1 %).
pub const DAMP: f64 = 0.01;

/// How weights to prune are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneMethod {
    /// Smallest magnitude per row.
    Magnitude,
    /// Smallest `|w|·‖x‖` per row (needs calibration).
    Wanda,
    /// Optimal-brain-surgeon selection and weight update (needs calibration).
    SparseGpt,
}

impl PruneMethod {
    /// Parses `magnitude`, `wanda` or `sparsegpt`.
    pub fn parse(s: &str) -> Result<PruneMethod, CompressError> {
        match s.to_ascii_lowercase().as_str() {
            "magnitude" => Ok(PruneMethod::Magnitude),
            "wanda" => Ok(PruneMethod::Wanda),
            "sparsegpt" => Ok(PruneMethod::SparseGpt),
            _ => Err(CompressError::BadPrune(format!(
                "unknown pruning method {s:?}; use magnitude, wanda or sparsegpt"
            ))),
        }
    }

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            PruneMethod::Magnitude => "magnitude",
            PruneMethod::Wanda => "wanda",
            PruneMethod::SparseGpt => "sparsegpt",
        }
    }

    /// Whether the method needs calibration activations.
    pub fn needs_calibration(self) -> bool {
        self != PruneMethod::Magnitude
    }
}

impl fmt::Display for PruneMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which zeros a pruned row must have.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sparsity {
    /// This fraction of every row's weights set to zero (`round(s·row_len)` of them).
    Unstructured(f64),
    /// At most `n` non-zeros in every group of `m` consecutive inputs of a row.
    NM {
        /// Non-zeros kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
}

impl Sparsity {
    /// An unstructured target; `s` must be in `[0, 1)`.
    pub fn unstructured(s: f64) -> Result<Sparsity, CompressError> {
        if !(0.0..1.0).contains(&s) {
            return Err(CompressError::BadPrune(format!(
                "--sparsity {s} is outside [0, 1): give the fraction of weights to remove, e.g. 0.5"
            )));
        }
        Ok(Sparsity::Unstructured(s))
    }

    /// Parses `N:M` (e.g. `2:4`: two non-zeros in every four inputs); `0 < N < M ≤ 64`.
    pub fn parse_pattern(p: &str) -> Result<Sparsity, CompressError> {
        let bad =
            |why: &str| CompressError::BadPrune(format!("--pattern {p:?}: {why} (write N:M, e.g. 2:4)"));
        let (n, m) = p.split_once(':').ok_or_else(|| bad("expected N:M"))?;
        let n: usize = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        let m: usize = m.trim().parse().map_err(|_| bad("M is not a number"))?;
        if n == 0 || n >= m || m > 64 {
            return Err(bad("need 0 < N < M <= 64"));
        }
        Ok(Sparsity::NM { n, m })
    }

    /// Checks that rows of length `row_len` of `tensor` can take this pattern.
    pub fn check_row(&self, tensor: &str, row_len: usize) -> Result<(), CompressError> {
        match *self {
            Sparsity::NM { n, m } if !row_len.is_multiple_of(m) => Err(CompressError::BadPrune(format!(
                "pattern {n}:{m}: tensor {tensor} has rows of {row_len}, which groups of {m} do not divide"
            ))),
            _ => Ok(()),
        }
    }

    /// Zeros every row of length `k` gets.
    pub fn zeros_per_row(&self, k: usize) -> usize {
        match *self {
            Sparsity::Unstructured(s) => cumulative(s, k),
            Sparsity::NM { n, m } => k / m * (m - n),
        }
    }

    /// The fraction of weights removed.
    pub fn fraction(&self) -> f64 {
        match *self {
            Sparsity::Unstructured(s) => s,
            Sparsity::NM { n, m } => (m - n) as f64 / m as f64,
        }
    }
}

impl fmt::Display for Sparsity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Sparsity::Unstructured(s) => write!(f, "{}% unstructured", s * 100.0),
            Sparsity::NM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// Zeros wanted among the first `k` columns for an unstructured fraction `s`.
fn cumulative(s: f64, k: usize) -> usize {
    ((s * k as f64).round() as usize).min(k)
}

/// Marks in `mask` the `count` lowest `scores` (ties: the lower index first), `idx` scratch.
fn mark_lowest(scores: &[f32], count: usize, mask: &mut [bool], idx: &mut Vec<usize>) {
    if count == 0 {
        return;
    }
    idx.clear();
    idx.extend(0..scores.len());
    let key = |&i: &usize| (scores[i], i);
    let cmp = |a: &usize, b: &usize| {
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0).then(ka.1.cmp(&kb.1))
    };
    if count < idx.len() {
        idx.select_nth_unstable_by(count - 1, cmp);
    }
    for &i in &idx[..count.min(idx.len())] {
        mask[i] = true;
    }
}

/// Chooses which weights of one row to prune from their `scores` (lowest first): sets
/// `mask[j]` for every pruned `j`, per `sp` (the row length must suit the pattern).
pub fn select_row(scores: &[f32], sp: Sparsity, mask: &mut [bool]) {
    mask.fill(false);
    let mut idx = Vec::new();
    match sp {
        Sparsity::Unstructured(_) => mark_lowest(scores, sp.zeros_per_row(scores.len()), mask, &mut idx),
        Sparsity::NM { n, m } => {
            for (s, mk) in scores.chunks(m).zip(mask.chunks_mut(m)) {
                mark_lowest(s, s.len().saturating_sub(n), mk, &mut idx);
            }
        }
    }
}

/// Prunes a `[rows × k]` matrix in place by per-row scores `|w_ij|·scale_j` (`scale`
/// `None`: magnitude; Wanda: the input norms `‖X_j‖₂`).
pub fn prune_by_score(w: &mut [f32], k: usize, sp: Sparsity, scale: Option<&[f32]>) {
    for_each_rows_mut(w, k, |_, rows| {
        let mut scores = vec![0.0f32; k];
        let mut mask = vec![false; k];
        for row in rows.chunks_exact_mut(k) {
            for (j, (s, &v)) in scores.iter_mut().zip(row.iter()).enumerate() {
                *s = v.abs() * scale.map_or(1.0, |c| c[j]);
            }
            select_row(&scores, sp, &mut mask);
            for (v, &m) in row.iter_mut().zip(&mask) {
                if m {
                    *v = 0.0;
                }
            }
        }
    });
}

/// SparseGPT-prunes a `[rows × k]` matrix in place given the Gram matrix `g` (`k × k`) of
/// its inputs over `count` tokens, damped by `damp_frac` of its mean diagonal.
pub fn sparsegpt(
    name: &str,
    w: &mut [f32],
    k: usize,
    sp: Sparsity,
    g: &[f64],
    count: u64,
    damp_frac: f64,
) -> Result<(), CompressError> {
    if g.len() != k * k {
        return Err(CompressError::ImatrixMismatch {
            tensor: name.into(),
            got: (g.len() as f64).sqrt() as usize,
            want: k,
        });
    }
    let Some((u, _)) = crate::gptq::inverse_factor(g, k, count, damp_frac) else {
        // Not factorizable even with heavy damping: Wanda's score from the diagonal instead.
        let norms: Vec<f32> = diag_norms(g, k, count);
        prune_by_score(w, k, sp, Some(&norms));
        return Ok(());
    };
    for_each_rows_mut(w, k, |_, rows| {
        let mut mask = vec![false; k];
        let mut scores = vec![0.0f32; k];
        let mut idx = Vec::new();
        for row in rows.chunks_exact_mut(k) {
            sparsegpt_row(row, &u, k, sp, &mut mask, &mut scores, &mut idx);
        }
    });
    Ok(())
}

/// `sqrt(H_jj)` per input (Wanda's `‖X_j‖₂`) from a Gram matrix.
fn diag_norms(g: &[f64], k: usize, count: u64) -> Vec<f32> {
    (0..k).map(|j| (g[j * k + j] / count.max(1) as f64).max(0.0).sqrt() as f32).collect()
}

/// One row of [`sparsegpt`]; `u` is the upper factor of `H⁻¹`.
fn sparsegpt_row(
    w: &mut [f32],
    u: &[f32],
    k: usize,
    sp: Sparsity,
    mask: &mut [bool],
    scores: &mut [f32],
    idx: &mut Vec<usize>,
) {
    mask.fill(false);
    let mut pruned = 0usize;
    // SparseGPT's saliency `w²/U_jj²` of the current weights in `r`.
    let fill = |scores: &mut [f32], w: &[f32], r: std::ops::Range<usize>| {
        for (j, sc) in r.clone().zip(&mut scores[r]) {
            let d = u[j * k + j];
            *sc = w[j] * w[j] / (d * d);
        }
    };
    for s in (0..k).step_by(SPARSEGPT_BLOCK) {
        let e = (s + SPARSEGPT_BLOCK).min(k);
        if let Sparsity::Unstructured(f) = sp {
            let want = cumulative(f, e) - pruned;
            fill(scores, w, s..e);
            mark_lowest(&scores[s..e], want, &mut mask[s..e], idx);
            pruned += want;
        }
        for i in s..e {
            if let Sparsity::NM { n, m } = sp {
                if i % m == 0 {
                    let ge = (i + m).min(k);
                    fill(scores, w, i..ge);
                    mark_lowest(&scores[i..ge], (ge - i).saturating_sub(n), &mut mask[i..ge], idx);
                }
            }
            if mask[i] {
                let err = w[i] / u[i * k + i];
                w[i] = 0.0;
                let ur = &u[i * k + i + 1..(i + 1) * k];
                for (wk, &uk) in w[i + 1..].iter_mut().zip(ur) {
                    *wk -= err * uk;
                }
            }
        }
    }
}

/// `Σ_rows δᵀ G δ` with `δ = w − w'`: the squared output error of a pruned (or quantized)
/// matrix on the inputs whose Gram matrix is `g` (`k × k`).
pub fn output_error(w: &[f32], w_new: &[f32], k: usize, g: &[f64]) -> f64 {
    let mut total = 0.0f64;
    let mut d = vec![0.0f64; k];
    for (a, b) in w.chunks_exact(k).zip(w_new.chunks_exact(k)) {
        for (dj, (&x, &y)) in d.iter_mut().zip(a.iter().zip(b)) {
            *dj = x as f64 - y as f64;
        }
        for i in 0..k {
            if d[i] != 0.0 {
                let gi = &g[i * k..(i + 1) * k];
                total += d[i] * gi.iter().zip(&d).map(|(x, y)| x * y).sum::<f64>();
            }
        }
    }
    total
}

/// Whether `name` is a linear inside a block that pruning applies to (attention Q/K/V/output
/// and the feed-forward matrices).
pub fn is_prunable(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("blk.") else { return false };
    let Some((_, role)) = rest.split_once('.') else { return false };
    matches!(
        role,
        "attn_q.weight"
            | "attn_k.weight"
            | "attn_v.weight"
            | "attn_output.weight"
            | "ffn_gate.weight"
            | "ffn_up.weight"
            | "ffn_down.weight"
    )
}

/// What to prune and how.
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions<'o> {
    /// How weights are chosen.
    pub method: PruneMethod,
    /// The pattern every pruned row meets.
    pub sparsity: Sparsity,
    /// Globs over tensor names left dense (`--keep`).
    pub keep: &'o [String],
    /// SparseGPT damping as a fraction of the mean diagonal of `H`.
    pub damp: f64,
}

impl PruneOptions<'_> {
    fn keeps(&self, name: &str) -> bool {
        self.keep.iter().any(|p| crate::plan::glob_match(p, name))
    }
}

/// One pruned tensor.
#[derive(Clone, Debug)]
pub struct PruneReport {
    /// Name.
    pub name: String,
    /// GGUF dims.
    pub dims: Vec<u64>,
    /// Elements.
    pub elements: u64,
    /// Exact zeros before.
    pub zeros_before: u64,
    /// Exact zeros after.
    pub zeros_after: u64,
}

/// The pruned weights (f32, `[rows × row_len]` row-major), by tensor name.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Tensor name → pruned values.
    pub weights: HashMap<String, Vec<f32>>,
    /// One report per pruned tensor, in file order.
    pub report: Vec<PruneReport>,
}

impl Pruned {
    fn add(&mut self, w: Vec<f32>, r: PruneReport) {
        self.weights.insert(r.name.clone(), w);
        self.report.push(r);
    }

    /// Reports in `src`'s tensor order.
    fn sort_like(&mut self, src: &ModelSource) {
        self.report.sort_by_key(|r| src.tensors.iter().position(|t| t.name == r.name));
    }

    /// Elements and zeros over every pruned tensor.
    pub fn totals(&self) -> (u64, u64) {
        self.report.iter().fold((0, 0), |a, r| (a.0 + r.elements, a.1 + r.zeros_after))
    }
}

/// Progress of a pruning run.
#[derive(Clone, Debug)]
pub enum PruneProgress<'a> {
    /// Block `l` of `n` is being calibrated.
    Block {
        /// The block.
        l: usize,
        /// Blocks in all.
        n: usize,
    },
    /// A tensor was pruned.
    Tensor(&'a PruneReport),
}

fn zeros(v: &[f32]) -> u64 {
    v.iter().filter(|&&x| x == 0.0).count() as u64
}

/// The tensors of `src` that the options prune, checked against the pattern.
fn targets<'s>(
    src: &'s ModelSource,
    opts: &PruneOptions,
) -> Result<Vec<&'s SourceTensor<'s>>, CompressError> {
    let t: Vec<_> = src.tensors.iter().filter(|t| is_prunable(&t.name) && !opts.keeps(&t.name)).collect();
    for t in &t {
        if t.dims.len() != 2 {
            return Err(CompressError::BadTensor {
                tensor: t.name.clone(),
                why: format!("dims {:?} are not a matrix", t.dims),
            });
        }
        opts.sparsity.check_row(&t.name, t.row_len())?;
    }
    if t.is_empty() {
        return Err(CompressError::BadPrune(
            "no tensor to prune: the model has no blk.N attention/feed-forward weights (or --keep matched them all)".into(),
        ));
    }
    Ok(t)
}

/// [`targets`] of a calibrated method, after checking that every calibration sequence
/// (`what` says what one is) has tokens.
fn calibrated_targets<'s>(
    src: &'s ModelSource,
    opts: &PruneOptions,
    seqs: &[Vec<u32>],
    what: &'static str,
) -> Result<Vec<&'s SourceTensor<'s>>, CompressError> {
    let t = targets(src, opts)?;
    if seqs.is_empty() || seqs.iter().any(|c| c.is_empty()) {
        return Err(CompressError::NeedsCalibration { method: opts.method.name(), what });
    }
    Ok(t)
}

/// Prunes one tensor with the statistics of its block (`None` for magnitude).
fn prune_tensor(
    t: &SourceTensor,
    opts: &PruneOptions,
    cal: Option<&Calibration>,
) -> Result<(Vec<f32>, PruneReport), CompressError> {
    let mut w = t.to_f32()?;
    let k = t.row_len();
    let zeros_before = zeros(&w);
    let missing = || CompressError::BadPrune(format!("no calibration inputs were recorded for {}", t.name));
    match (opts.method, cal) {
        (PruneMethod::Magnitude, _) => prune_by_score(&mut w, k, opts.sparsity, None),
        (PruneMethod::Wanda, Some(cal)) => {
            let e = cal.imatrix.entries.get(&t.name).ok_or_else(missing)?;
            if e.sums.len() != k {
                return Err(CompressError::ImatrixMismatch {
                    tensor: t.name.clone(),
                    got: e.sums.len(),
                    want: k,
                });
            }
            let norms: Vec<f32> = e.sums.iter().map(|&s| s.max(0.0).sqrt()).collect();
            prune_by_score(&mut w, k, opts.sparsity, Some(&norms));
        }
        (PruneMethod::SparseGpt, Some(cal)) => {
            let (g, count) =
                cal.grams.get(&t.name).or_else(|| cal.grams.get(&gram_key(&t.name))).ok_or_else(missing)?;
            sparsegpt(&t.name, &mut w, k, opts.sparsity, g, *count, opts.damp)?;
        }
        (_, None) => {
            return Err(CompressError::NeedsCalibration {
                method: opts.method.name(),
                what: "calibration text: pass --calib TEXT (e.g. data/wikitext-2/wiki.valid.tokens)",
            })
        }
    }
    let r = PruneReport {
        name: t.name.clone(),
        dims: t.dims.clone(),
        elements: t.n_elements(),
        zeros_before,
        zeros_after: zeros(&w),
    };
    Ok((w, r))
}

/// Block index of a block tensor name.
fn block_of(name: &str) -> Option<usize> {
    edgellm_models::split_block_name(name).map(|(l, _)| l)
}

/// Magnitude pruning: needs no model run.
pub fn prune_static(
    src: &ModelSource,
    opts: &PruneOptions,
    progress: &mut dyn FnMut(PruneProgress),
) -> Result<Pruned, CompressError> {
    if opts.method.needs_calibration() {
        return Err(CompressError::NeedsCalibration {
            method: opts.method.name(),
            what: "calibration text: pass --calib TEXT (e.g. data/wikitext-2/wiki.valid.tokens)",
        });
    }
    let mut out = Pruned::default();
    for t in targets(src, opts)? {
        let (w, r) = prune_tensor(t, opts, None)?;
        progress(PruneProgress::Tensor(&r));
        out.add(w, r);
    }
    Ok(out)
}

/// An F32 Linear over pruned values.
fn f32_linear(name: &str, w: &[f32], k: usize) -> Result<Linear, CompressError> {
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    Linear::new(name, DType::F32, k, w.len() / k, TensorBytes::Owned(bytes))
        .map_err(|e| CompressError::BadTensor { tensor: name.into(), why: e.to_string() })
}

/// Runs `f` with a collector of the inputs of `blk.{l}.*` installed; returns what it saw.
fn observe_block<E>(
    l: usize,
    grams: bool,
    share_grams: bool,
    chunks: usize,
    ctx: usize,
    f: impl FnOnce() -> Result<(), E>,
) -> Result<Calibration, E> {
    let mut c = Collector::new(&format!("blk.{l}."), grams, 0);
    c.share_grams = share_grams;
    let c = Arc::new(c);
    set_input_observer(Some(c.clone()));
    let r = f();
    set_input_observer(None);
    r?;
    Ok(c.take(chunks, ctx))
}

/// Sequential calibrated pruning of a decoder (see the module doc): `model` is the loaded
/// `src` (its pruned Linears are replaced as it goes), `chunks` the calibration token
/// sequences (each run from an empty cache, BOS already in place).
pub fn prune_decoder(
    model: &mut dyn LanguageModel,
    src: &ModelSource,
    chunks: &[Vec<u32>],
    opts: &PruneOptions,
    progress: &mut dyn FnMut(PruneProgress),
) -> Result<Pruned, CompressError> {
    if !opts.method.needs_calibration() {
        return prune_static(src, opts, progress);
    }
    let targets = calibrated_targets(src, opts, chunks, "at least one non-empty calibration chunk")?;
    let fwd = |e: edgellm_models::ModelError| CompressError::BadTensor {
        tensor: "(calibration forward)".into(),
        why: e.to_string(),
    };
    let ctx = chunks.iter().map(|c| c.len()).max().unwrap_or(1);
    let mut xs = chunks.iter().map(|c| model.embed(c)).collect::<Result<Vec<_>, _>>().map_err(fwd)?;
    let mut cache = model.new_cache(ctx);
    let n_layer = model.info().n_layer;
    let grams = opts.method == PruneMethod::SparseGpt;
    let mut out = Pruned::default();
    let mut scratch = Vec::new();
    for l in 0..n_layer {
        let mine: Vec<_> = targets.iter().filter(|t| block_of(&t.name) == Some(l)).collect();
        if mine.is_empty() {
            continue;
        }
        progress(PruneProgress::Block { l, n: n_layer });
        let cal = observe_block(l, grams, true, chunks.len(), ctx, || {
            for x in &xs {
                scratch.clear();
                scratch.extend_from_slice(x);
                cache.len = 0;
                model.forward_block(l, &mut scratch, &mut cache)?;
            }
            Ok(())
        })
        .map_err(fwd)?;
        for t in mine {
            let (w, r) = prune_tensor(t, opts, Some(&cal))?;
            model
                .replace_weight(&t.name, f32_linear(&t.name, &w, t.row_len())?)
                .map_err(|e| CompressError::BadTensor { tensor: t.name.clone(), why: e.to_string() })?;
            progress(PruneProgress::Tensor(&r));
            out.add(w, r);
        }
        // The next block's inputs: this block's outputs with its pruned weights.
        for x in &mut xs {
            cache.len = 0;
            model.forward_block(l, x, &mut cache).map_err(fwd)?;
        }
    }
    out.sort_like(src);
    Ok(out)
}

/// Sequential calibrated pruning of a BERT encoder in llama.cpp's `bert` GGUF layout (as
/// `edgellm_models::bert::gguf_export` writes it): per layer, the encoder with the layers
/// pruned so far is built and run over `seqs` (token ids, `[CLS] … [SEP]`), the layer's inputs
/// recorded and its weights pruned.
pub fn prune_encoder(
    src: &ModelSource,
    seqs: &[Vec<u32>],
    opts: &PruneOptions,
    progress: &mut dyn FnMut(PruneProgress),
) -> Result<Pruned, CompressError> {
    if !opts.method.needs_calibration() {
        return prune_static(src, opts, progress);
    }
    let targets = calibrated_targets(src, opts, seqs, "at least one non-empty calibration sentence")?;
    let n_layer = targets.iter().filter_map(|t| block_of(&t.name)).max().map_or(0, |l| l + 1);
    let grams = opts.method == PruneMethod::SparseGpt;
    let mut out = Pruned::default();
    for l in 0..n_layer {
        let mine: Vec<_> = targets.iter().filter(|t| block_of(&t.name) == Some(l)).collect();
        if mine.is_empty() {
            continue;
        }
        progress(PruneProgress::Block { l, n: n_layer });
        let file = in_memory(src, &out)?;
        let bert = edgellm_models::bert::Bert::from_gguf(&file)
            .map_err(|e| CompressError::BadPrune(format!("loading the encoder for calibration: {e}")))?;
        let ctx = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
        // BERT's FFN has no gate: every weight gets its own Gram matrix.
        let cal = observe_block(l, grams, false, seqs.len(), ctx, || {
            for batch in seqs.chunks(32) {
                let refs: Vec<&[u32]> = batch.iter().map(|s| s.as_slice()).collect();
                bert.forward_sequences(&refs)?;
            }
            Ok(())
        })
        .map_err(|e: edgellm_models::bert::BertError| {
            CompressError::BadPrune(format!("calibration forward: {e}"))
        })?;
        for t in mine {
            let (w, r) = prune_tensor(t, opts, Some(&cal))?;
            progress(PruneProgress::Tensor(&r));
            out.add(w, r);
        }
    }
    out.sort_like(src);
    Ok(out)
}

/// `src` with the pruned tensors replaced, as an in-memory GGUF file.
pub fn in_memory(src: &ModelSource, pruned: &Pruned) -> Result<GgufFile, CompressError> {
    let w = pruned_writer(src, pruned, None)?;
    let mut bytes = Vec::new();
    w.write_to(&mut bytes)?;
    Ok(GgufFile::from_vec(bytes)?)
}

/// The output file: `src`'s metadata and tensors in order, pruned tensors as F32 (zeros
/// stored densely), and with `label` (method, pattern) recorded under `edgellm.pruning.*`.
pub fn pruned_writer<'a>(
    src: &'a ModelSource<'a>,
    pruned: &Pruned,
    label: Option<(&PruneOptions, u64, u64)>,
) -> Result<GgufWriter<'a>, CompressError> {
    let mut w = GgufWriter::new();
    w.metadata = src.metadata.clone();
    if let Some((o, elements, zeros)) = label {
        w.set("edgellm.pruning.method", Value::String(o.method.name().into()));
        w.set("edgellm.pruning.pattern", Value::String(o.sparsity.to_string()));
        w.set("edgellm.pruning.sparsity", Value::F32((zeros as f64 / elements.max(1) as f64) as f32));
    }
    for t in &src.tensors {
        match pruned.weights.get(&t.name) {
            Some(v) => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.add_tensor(&t.name, &t.dims, DType::F32, bytes)?;
            }
            None => w.add_tensor(&t.name, &t.dims, t.dtype, t.data.clone())?,
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(s: &mut u64) -> f32 {
        *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*s >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
    }

    /// Inputs with correlated channels (four latent factors plus noise, channel scales that
    /// vary) and their Gram matrix.
    fn inputs(k: usize, tokens: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
        let mut s = seed;
        let base: Vec<f32> = (0..tokens * 4).map(|_| lcg(&mut s)).collect();
        let x: Vec<f32> = (0..tokens * k)
            .map(|i| {
                let (t, j) = (i / k, i % k);
                (base[t * 4 + j % 4] + 0.3 * lcg(&mut s)) * (1.0 + (j % 7) as f32)
            })
            .collect();
        let mut g = vec![0.0f64; k * k];
        for t in 0..tokens {
            for i in 0..k {
                for j in 0..k {
                    g[i * k + j] += x[t * k + i] as f64 * x[t * k + j] as f64;
                }
            }
        }
        (x, g)
    }

    fn patterns() -> [Sparsity; 4] {
        [
            Sparsity::Unstructured(0.5),
            Sparsity::Unstructured(0.3),
            Sparsity::NM { n: 2, m: 4 },
            Sparsity::NM { n: 4, m: 8 },
        ]
    }

    /// Every row meets `sp` exactly (no source zeros, so every pruned weight is a new zero).
    fn assert_pattern(w: &[f32], k: usize, sp: Sparsity, what: &str) {
        for (r, row) in w.chunks_exact(k).enumerate() {
            match sp {
                Sparsity::Unstructured(_) => {
                    assert_eq!(zeros(row) as usize, sp.zeros_per_row(k), "{what}: row {r}");
                }
                Sparsity::NM { n, m } => {
                    for (gi, g) in row.chunks(m).enumerate() {
                        assert_eq!(g.iter().filter(|&&v| v != 0.0).count(), n, "{what}: row {r} group {gi}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_method_meets_its_pattern_exactly() {
        // 300 columns: blocks of 128 that do not divide the row, an uneven cumulative count.
        let (k, rows, tokens) = (296usize, 12usize, 400usize);
        let (x, g) = inputs(k, tokens, 5);
        let mut s = 9u64;
        let w0: Vec<f32> = (0..rows * k).map(|_| lcg(&mut s) + 0.001).collect();
        let norms: Vec<f32> =
            (0..k).map(|j| (0..tokens).map(|t| x[t * k + j].powi(2)).sum::<f32>().sqrt()).collect();
        for sp in patterns() {
            let mut w = w0.clone();
            prune_by_score(&mut w, k, sp, None);
            assert_pattern(&w, k, sp, &format!("magnitude {sp}"));
            let mut w = w0.clone();
            prune_by_score(&mut w, k, sp, Some(&norms));
            assert_pattern(&w, k, sp, &format!("wanda {sp}"));
            let mut w = w0.clone();
            sparsegpt("t", &mut w, k, sp, &g, tokens as u64, DAMP).unwrap();
            assert_pattern(&w, k, sp, &format!("sparsegpt {sp}"));
        }
    }

    #[test]
    fn magnitude_and_wanda_remove_the_lowest_scores() {
        let row = [0.5f32, -0.1, 0.3, -0.9, 0.05, 0.2, -0.4, 0.8];
        let mut w = row.to_vec();
        prune_by_score(&mut w, 8, Sparsity::Unstructured(0.5), None);
        assert_eq!(w, [0.5, 0.0, 0.0, -0.9, 0.0, 0.0, -0.4, 0.8]);
        let mut w = row.to_vec();
        prune_by_score(&mut w, 8, Sparsity::NM { n: 2, m: 4 }, None);
        assert_eq!(w, [0.5, 0.0, 0.0, -0.9, 0.0, 0.0, -0.4, 0.8]);
        let mut w = [0.5f32, -0.1, 0.3, -0.9, 0.9, 0.2, -0.4, 0.05].to_vec();
        prune_by_score(&mut w, 8, Sparsity::NM { n: 2, m: 4 }, None);
        assert_eq!(w, [0.5, 0.0, 0.0, -0.9, 0.9, 0.0, -0.4, 0.0]);
        // Wanda: a large input norm keeps a small weight.
        let mut w = row.to_vec();
        let norms = [1.0f32, 100.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        prune_by_score(&mut w, 8, Sparsity::NM { n: 2, m: 4 }, Some(&norms));
        assert_eq!(w, [0.0, -0.1, 0.0, -0.9, 0.0, 0.0, -0.4, 0.8]);
    }

    #[test]
    fn sparsegpt_update_lowers_the_reconstruction_error() {
        let (k, rows, tokens) = (256usize, 16usize, 512usize);
        let (_, g) = inputs(k, tokens, 11);
        let mut s = 3u64;
        let w0: Vec<f32> = (0..rows * k).map(|_| lcg(&mut s)).collect();
        for sp in patterns() {
            let mut w = w0.clone();
            sparsegpt("t", &mut w, k, sp, &g, tokens as u64, DAMP).unwrap();
            // The same mask without the update: the original weights with those zeros.
            let masked: Vec<f32> = w0.iter().zip(&w).map(|(&a, &b)| if b == 0.0 { 0.0 } else { a }).collect();
            let (e_upd, e_mask) = (output_error(&w0, &w, k, &g), output_error(&w0, &masked, k, &g));
            assert!(e_upd < 0.5 * e_mask, "{sp}: with update {e_upd:.4e}, mask only {e_mask:.4e}");
            // And it beats magnitude's mask.
            let mut m = w0.clone();
            prune_by_score(&mut m, k, sp, None);
            let e_mag = output_error(&w0, &m, k, &g);
            assert!(e_upd < e_mag, "{sp}: sparsegpt {e_upd:.4e} vs magnitude {e_mag:.4e}");
        }
    }

    #[test]
    fn bad_requests_are_clear_errors() {
        for s in [-0.1, 1.0, 1.5, f64::NAN] {
            let e = Sparsity::unstructured(s).unwrap_err().to_string();
            assert!(e.contains("outside [0, 1)"), "{e}");
        }
        for p in ["2", "4:2", "0:4", "4:4", "a:4", "2:b", "1:128"] {
            assert!(Sparsity::parse_pattern(p).is_err(), "{p}");
        }
        assert_eq!(Sparsity::parse_pattern("2:4").unwrap(), Sparsity::NM { n: 2, m: 4 });
        let e = Sparsity::NM { n: 4, m: 8 }.check_row("blk.0.ffn_down.weight", 1540).unwrap_err().to_string();
        assert!(e.contains("1540") && e.contains("groups of 8"), "{e}");
        assert!(PruneMethod::parse("random")
            .unwrap_err()
            .to_string()
            .contains("magnitude, wanda or sparsegpt"));
        let mut w = vec![1.0f32; 8 * 4];
        let e = sparsegpt("t", &mut w, 8, Sparsity::Unstructured(0.5), &[1.0; 9], 1, DAMP).unwrap_err();
        assert!(matches!(e, CompressError::ImatrixMismatch { .. }), "{e}");
    }

    #[test]
    fn prunable_names() {
        assert!(is_prunable("blk.0.attn_q.weight"));
        assert!(is_prunable("blk.12.ffn_down.weight"));
        assert!(!is_prunable("blk.0.attn_norm.weight"));
        assert!(!is_prunable("token_embd.weight"));
        assert!(!is_prunable("output.weight"));
        assert!(!is_prunable("blk.0.attn_q.bias"));
    }
}
