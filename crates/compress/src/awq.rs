//! AWQ-style activation-aware scaling (Lin et al., 2024, "AWQ: Activation-aware Weight
//! Quantization for LLM Compression and Acceleration"), folded into the model so the file
//! written is still a plain llama GGUF that llama.cpp runs unchanged.
//!
//! For a group of linears reading the same input `x` (length `k`), scaling the weights'
//! input columns by `s` and the input by `1/s` leaves the product unchanged:
//! `W x = (W·diag s)(x / s)`. Quantizing `W·diag s` instead of `W` gives the channels with
//! large activations (large `s`) a finer grid relative to their weights. `s` is searched as
//! `mean|x|^α` over a grid of `α` (`α = 0` is no scaling), choosing the `α` whose quantized
//! group gives the smallest output error `Σ_t ‖(W − Q(W·diag s)·diag s⁻¹) x_t‖²` on sampled
//! calibration tokens. The `1/s` is folded into what produces `x`:
//!
//! | group (shared input)      | `1/s` goes into                                      |
//! |---------------------------|------------------------------------------------------|
//! | `attn_q`, `attn_k`, `attn_v` | `attn_norm` weight                                |
//! | `ffn_gate`, `ffn_up`      | `ffn_norm` weight                                    |
//! | `ffn_down`                | `ffn_up` rows (`silu(g)·(u/s) = (silu(g)·u)/s`)      |
//! | `attn_output`             | `attn_v` rows (attention mixes rows of `v` linearly) |
//!
//! With grouped-query attention a value head serves several query heads, and `attn_output`'s
//! input channel `h·hd + i` is query head `h`'s mix of value channel `kvh(h)·hd + i`; so `s` is
//! chosen per value channel (the mean of `mean|x|` over the query heads sharing it) and
//! repeated across those query heads. The quantizer afterwards is the importance-weighted one
//! ([`crate::grid`]), with each member's importance divided by `s²` (the scaled input's mean
//! square).
//!
//! Departures from the paper: the search quantizes with the target type's own weighted grid
//! (the one that will be written, per tensor, e.g. Q6_K for some `attn_v` of a Q4_K_M mix) on
//! a subset of output rows ([`SEARCH_ROWS`]); there is no weight clipping search; every group
//! is searched on the original weights (folds only scale whole rows of another group, to which
//! every per-row quantizer here is indifferent), so the groups run in parallel.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use edgellm_core::parallel::for_each_range;
use edgellm_core::quant::{dequantize_row, quantize_row};
use edgellm_core::DType;

use crate::grid;
use crate::quantize::Importance;
use crate::source::{ModelSource, SourceTensor};
use crate::CompressError;

/// Output rows per member tensor the search quantizes (evenly spaced).
pub const SEARCH_ROWS: usize = 64;

/// Calibration tokens kept per input for the search (spread over the chunks).
pub const SAMPLE_TOKENS: usize = 256;

/// Smallest `mean|x|`, relative to the largest of its input, that a scale is computed from
/// (dead channels would otherwise give `s = 0`).
const MIN_REL_ACT: f32 = 1e-4;

/// The default `α` grid: 0, 0.05, …, 1.
pub fn default_alphas() -> Vec<f32> {
    (0..=20).map(|i| i as f32 * 0.05).collect()
}

/// Calibration statistics of one input (shared by the linears of a group).
#[derive(Clone, Debug, Default)]
pub struct AwqInput {
    /// Input width.
    pub k: usize,
    /// Per channel `Σ |x|` over the counted tokens.
    pub abs_sum: Vec<f64>,
    /// Per channel `Σ x²` over the counted tokens.
    pub sq_sum: Vec<f64>,
    /// Tokens counted.
    pub count: u64,
    /// Sampled input rows, `[samples × k]`, token-major.
    pub samples: Vec<f32>,
}

impl AwqInput {
    /// An empty record for inputs of width `k`.
    pub fn new(k: usize) -> AwqInput {
        AwqInput { k, abs_sum: vec![0.0; k], sq_sum: vec![0.0; k], count: 0, samples: Vec::new() }
    }

    /// Adds the rows of `x` (`[n × k]`) to the sums, and the rows listed in `keep` to the samples.
    pub fn add(&mut self, x: &[f32], keep: impl Iterator<Item = usize>) {
        for row in x.chunks_exact(self.k) {
            for ((a, s), &v) in self.abs_sum.iter_mut().zip(self.sq_sum.iter_mut()).zip(row) {
                *a += v.abs() as f64;
                *s += v as f64 * v as f64;
            }
            self.count += 1;
        }
        for t in keep {
            if let Some(r) = x.get(t * self.k..(t + 1) * self.k) {
                self.samples.extend_from_slice(r);
            }
        }
    }

    /// Per channel mean `|x|`.
    pub fn mean_abs(&self) -> Vec<f32> {
        let c = self.count.max(1) as f64;
        self.abs_sum.iter().map(|v| (v / c) as f32).collect()
    }

    /// Per channel mean `x²` (the importance).
    pub fn mean_sq(&self) -> Vec<f32> {
        let c = self.count.max(1) as f64;
        self.sq_sum.iter().map(|v| (v / c) as f32).collect()
    }

    /// Number of sampled rows.
    pub fn n_samples(&self) -> usize {
        self.samples.len() / self.k.max(1)
    }
}

/// Per input statistics, keyed by the group's first tensor ([`crate::calib::gram_key`]:
/// `attn_q`, `attn_output`, `ffn_gate`, `ffn_down`).
#[derive(Clone, Debug, Default)]
pub struct AwqStats {
    /// Key → statistics.
    pub inputs: HashMap<String, AwqInput>,
}

/// What [`crate::quantize_model`] needs for [`crate::Method::Awq`].
#[derive(Clone, Copy)]
pub struct AwqParams<'o> {
    /// Calibration statistics.
    pub stats: &'o AwqStats,
    /// The `α` grid searched ([`default_alphas`]); must contain at least one value.
    pub alphas: &'o [f32],
}

/// What the search chose for one group.
#[derive(Clone, Debug)]
pub struct AwqChoice {
    /// The group's key tensor (`blk.3.ffn_down.weight`).
    pub group: String,
    /// The chosen exponent (0 = unscaled).
    pub alpha: f32,
    /// Output error on the sampled tokens and rows without scaling (`α = 0`, if in the grid).
    pub err_unscaled: f64,
    /// Output error with the chosen scaling.
    pub err_chosen: f64,
}

/// Where a group's `1/s` is folded.
#[derive(Clone, Debug)]
enum Fold {
    /// Into a norm weight (`γ_j / s_j`).
    Norm(String),
    /// Into the rows of a linear (`row_j / s_j`); with grouped-query attention the group's
    /// input has `n_rep` query heads per row block of `head_dim` rows of that linear.
    Rows { tensor: String, head_dim: usize, n_rep: usize },
}

#[derive(Clone, Debug)]
struct Group {
    key: String,
    members: Vec<String>,
    fold: Fold,
}

/// The model after scaling: tensors touched are F32 and owned, the rest borrowed from the
/// source; with the importance each scaled tensor should be quantized with.
pub struct Scaled<'a> {
    /// The scaled model.
    pub source: ModelSource<'a>,
    /// Importance for every member tensor (divided by `s²`), and the source's other entries.
    pub importance: Importance,
    /// One entry per group.
    pub choices: Vec<AwqChoice>,
}

fn awq_refused(why: String) -> CompressError {
    CompressError::AwqUnsupported(why)
}

/// The groups of a llama model, from its tensor names.
fn groups(src: &ModelSource, n_head: usize, n_head_kv: usize) -> Result<Vec<Group>, CompressError> {
    let has = |n: &str| src.tensors.iter().any(|t| t.name == n);
    let mut out = Vec::new();
    for l in 0.. {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        if !has(&n("attn_norm")) {
            break;
        }
        for t in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"] {
            if !has(&n(t)) {
                return Err(awq_refused(format!("block {l} has no {} (not a plain llama block)", n(t))));
            }
        }
        let o_in = src.tensors.iter().find(|t| t.name == n("attn_output")).map_or(0, |t| t.row_len());
        if o_in == 0 || !o_in.is_multiple_of(n_head) {
            return Err(awq_refused(format!(
                "{}'s rows ({o_in}) do not split into {n_head} heads",
                n("attn_output")
            )));
        }
        let hd = o_in / n_head;
        out.push(Group {
            key: n("attn_q"),
            members: vec![n("attn_q"), n("attn_k"), n("attn_v")],
            fold: Fold::Norm(n("attn_norm")),
        });
        out.push(Group {
            key: n("attn_output"),
            members: vec![n("attn_output")],
            fold: Fold::Rows { tensor: n("attn_v"), head_dim: hd, n_rep: n_head / n_head_kv },
        });
        out.push(Group {
            key: n("ffn_gate"),
            members: vec![n("ffn_gate"), n("ffn_up")],
            fold: Fold::Norm(n("ffn_norm")),
        });
        out.push(Group {
            key: n("ffn_down"),
            members: vec![n("ffn_down")],
            fold: Fold::Rows { tensor: n("ffn_up"), head_dim: 0, n_rep: 1 },
        });
    }
    Ok(out)
}

/// `s = m^α`, normalized to geometric mean 1. `m` is already floored above zero.
fn scales(m: &[f32], alpha: f32) -> Vec<f32> {
    let mut s: Vec<f32> = m.iter().map(|&v| v.powf(alpha)).collect();
    let log_mean = s.iter().map(|v| (*v as f64).ln()).sum::<f64>() / s.len().max(1) as f64;
    let g = (-log_mean).exp() as f32;
    for v in &mut s {
        *v *= g;
    }
    s
}

/// The per channel activation magnitude a group's scales are computed from: `mean|x|` floored
/// at [`MIN_REL_ACT`] of its largest, averaged over the query heads sharing a value channel
/// when the fold goes into `attn_v`'s rows.
fn activation_magnitude(inp: &AwqInput, fold: &Fold) -> Vec<f32> {
    let mut m = inp.mean_abs();
    if let Fold::Rows { head_dim, n_rep, .. } = *fold {
        if n_rep > 1 && head_dim > 0 {
            let kv_dim = m.len() / n_rep;
            let mut kv = vec![0.0f32; kv_dim];
            for (c, &v) in m.iter().enumerate() {
                let (h, i) = (c / head_dim, c % head_dim);
                kv[(h / n_rep) * head_dim + i] += v / n_rep as f32;
            }
            for (c, v) in m.iter_mut().enumerate() {
                let (h, i) = (c / head_dim, c % head_dim);
                *v = kv[(h / n_rep) * head_dim + i];
            }
        }
    }
    let max = m.iter().copied().fold(0.0f32, f32::max);
    let floor = (max * MIN_REL_ACT).max(f32::MIN_POSITIVE);
    for v in &mut m {
        if v.is_nan() || *v < floor {
            *v = floor;
        }
    }
    m
}

/// Rounds `x` to `dtype`'s grid as the quantizer that will write it does (the weighted
/// search with importance `w` where [`grid::supports`] the type, the reference quantizer
/// otherwise), writing the dequantized values to `out`.
pub(crate) fn round_trip(dtype: DType, x: &[f32], w: &[f32], out: &mut [f32]) -> Result<(), CompressError> {
    if dtype == DType::F32 {
        out.copy_from_slice(x);
        return Ok(());
    }
    if grid::supports(dtype) {
        let bs = dtype.block_size();
        for ((xb, wb), ob) in x.chunks_exact(bs).zip(w.chunks_exact(bs)).zip(out.chunks_exact_mut(bs)) {
            let f = grid::fit(dtype, xb, wb);
            for (j, (o, &v)) in ob.iter_mut().zip(xb).enumerate() {
                *o = f.value(j, v);
            }
        }
        return Ok(());
    }
    let quant = |e| CompressError::Quant { tensor: "(awq search)".into(), source: e };
    let mut bytes = vec![0u8; dtype.bytes_for(x.len() as u64).unwrap_or(0) as usize];
    quantize_row(dtype, x, &mut bytes).map_err(quant)?;
    dequantize_row(dtype, &bytes, out).map_err(quant)
}

/// One member of a group as the search sees it.
pub(crate) struct Member<'m> {
    /// `[rows × k]` weights.
    pub w: &'m [f32],
    /// The type it will be written as.
    pub dtype: DType,
    /// Its importance in the unscaled input (one per input channel).
    pub imp: &'m [f32],
}

/// Output error of the group quantized after scaling its inputs by `s`: summed over the
/// members' sampled rows and the sampled tokens `x` (`[t × k]`).
pub(crate) fn group_error(members: &[Member], k: usize, x: &[f32], s: &[f32]) -> Result<f64, CompressError> {
    let w_scaled: Vec<f32> = (0..k).map(|j| 1.0 / (s[j] * s[j])).collect();
    let mut imp = vec![0.0f32; k];
    let (mut ws, mut q, mut delta) = (vec![0.0f32; k], vec![0.0f32; k], vec![0.0f32; k]);
    let mut err = 0.0f64;
    for m in members {
        let rows = m.w.len() / k;
        for (i, w) in imp.iter_mut().enumerate() {
            *w = m.imp[i] * w_scaled[i];
        }
        let picked = SEARCH_ROWS.min(rows);
        for p in 0..picked {
            let r = p * rows / picked;
            let row = &m.w[r * k..(r + 1) * k];
            for j in 0..k {
                ws[j] = row[j] * s[j];
            }
            round_trip(m.dtype, &ws, &imp, &mut q)?;
            for j in 0..k {
                delta[j] = row[j] - q[j] / s[j];
            }
            for xt in x.chunks_exact(k) {
                let e: f32 = delta.iter().zip(xt).map(|(a, b)| a * b).sum();
                err += e as f64 * e as f64;
            }
        }
    }
    Ok(err)
}

/// Searches `alphas` for one group: the best `α`, its error and the error at `α = 0`.
pub(crate) fn search(
    members: &[Member],
    k: usize,
    x: &[f32],
    m: &[f32],
    alphas: &[f32],
) -> Result<(f32, f64, f64), CompressError> {
    let mut best = (0.0f32, f64::INFINITY);
    let mut unscaled = f64::NAN;
    for &a in alphas {
        let e = group_error(members, k, x, &scales(m, a))?;
        if a == 0.0 {
            unscaled = e;
        }
        if e < best.1 {
            best = (a, e);
        }
    }
    Ok((best.0, best.1, unscaled))
}

/// Scales the llama model `src` as AWQ does: searches every group's `α` with `dtypes` (the
/// type each tensor will be written as) and folds the scales. `importance` gives the
/// unscaled per channel importance (entries missing are taken from the AWQ statistics).
pub fn scale_model<'a>(
    src: &'a ModelSource<'a>,
    dtypes: &HashMap<String, DType>,
    params: AwqParams,
    importance: Option<&Importance>,
) -> Result<Scaled<'a>, CompressError> {
    if params.alphas.is_empty() || params.alphas.iter().any(|a| !a.is_finite()) {
        return Err(awq_refused("the α grid is empty or not finite".into()));
    }
    let arch = src.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
    if arch != "llama" {
        return Err(awq_refused(format!(
            "AWQ folding is implemented for llama-architecture models; this one is {arch:?} \
             (use --method weighted or gptq)"
        )));
    }
    let num = |k: &str| src.get(&format!("llama.{k}")).and_then(|v| v.as_u64()).map(|v| v as usize);
    let n_head = num("attention.head_count").unwrap_or(0);
    let n_head_kv = num("attention.head_count_kv").unwrap_or(n_head);
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(awq_refused(format!("{n_head} heads with {n_head_kv} KV heads")));
    }
    let groups = groups(src, n_head, n_head_kv)?;
    let index: HashMap<&str, usize> =
        src.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    // f32 copies of every tensor a group reads or writes.
    let mut work: HashMap<String, Vec<f32>> = HashMap::new();
    for g in &groups {
        let fold_name = match &g.fold {
            Fold::Norm(n) | Fold::Rows { tensor: n, .. } => n,
        };
        for name in g.members.iter().chain(std::iter::once(fold_name)) {
            if !work.contains_key(name) {
                work.insert(name.clone(), src.tensors[index[name.as_str()]].to_f32()?);
            }
        }
    }
    // Check shapes and statistics before the long part.
    for g in &groups {
        let inp = params.stats.inputs.get(&g.key).ok_or_else(|| {
            awq_refused(format!("no calibration statistics for {} (calibrate on this model)", g.key))
        })?;
        for name in &g.members {
            let t = &src.tensors[index[name.as_str()]];
            if t.row_len() != inp.k || t.dims.len() != 2 {
                return Err(CompressError::BadTensor {
                    tensor: name.clone(),
                    why: format!("rows of {} but its calibrated input has {} channels", t.row_len(), inp.k),
                });
            }
        }
        if inp.n_samples() == 0 {
            return Err(awq_refused(format!("no sampled calibration tokens for {}", g.key)));
        }
        let (fold_name, want) = match &g.fold {
            Fold::Norm(n) => (n, inp.k),
            Fold::Rows { tensor, n_rep, .. } => (tensor, inp.k / n_rep),
        };
        let len = work[fold_name].len();
        let rows = match g.fold {
            Fold::Norm(_) => len,
            Fold::Rows { .. } => len / src.tensors[index[fold_name.as_str()]].row_len(),
        };
        if rows != want || inp.k % want != 0 {
            return Err(CompressError::BadTensor {
                tensor: fold_name.clone(),
                why: format!("{rows} rows/values where folding {}'s input needs {want}", g.key),
            });
        }
    }

    let imp_of = |name: &str, inp: &AwqInput| -> Vec<f32> {
        importance
            .and_then(|m| m.entries.get(name))
            .filter(|v| v.len() == inp.k)
            .cloned()
            .unwrap_or_else(|| inp.mean_sq())
    };
    // Search every group in parallel on the unscaled weights.
    type Found = Option<Result<(f32, f64, f64), CompressError>>;
    let results: Mutex<Vec<Found>> = Mutex::new((0..groups.len()).map(|_| None).collect());
    for_each_range(groups.len(), 1, |range| {
        for gi in range {
            let g = &groups[gi];
            let inp = &params.stats.inputs[&g.key];
            let imps: Vec<Vec<f32>> = g.members.iter().map(|n| imp_of(n, inp)).collect();
            let members: Vec<Member> = g
                .members
                .iter()
                .zip(&imps)
                .map(|(n, imp)| Member {
                    w: &work[n],
                    dtype: dtypes.get(n).copied().unwrap_or(DType::F32),
                    imp,
                })
                .collect();
            let m = activation_magnitude(inp, &g.fold);
            let r = search(&members, inp.k, &inp.samples, &m, params.alphas);
            results.lock().unwrap_or_else(|e| e.into_inner())[gi] = Some(r);
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());

    let mut out_imp = importance.cloned().unwrap_or_default();
    let mut choices = Vec::with_capacity(groups.len());
    for (g, r) in groups.iter().zip(results) {
        let (alpha, err_chosen, err_unscaled) =
            r.ok_or_else(|| awq_refused(format!("search of {} did not run", g.key)))??;
        let inp = &params.stats.inputs[&g.key];
        let s = scales(&activation_magnitude(inp, &g.fold), alpha);
        let k = inp.k;
        for name in &g.members {
            let imp = imp_of(name, inp);
            out_imp.entries.insert(name.clone(), imp.iter().zip(&s).map(|(v, s)| v / (s * s)).collect());
            if alpha != 0.0 {
                let w = work.get_mut(name).expect("member loaded above");
                for row in w.chunks_exact_mut(k) {
                    for (v, sj) in row.iter_mut().zip(&s) {
                        *v *= sj;
                    }
                }
            }
        }
        if alpha != 0.0 {
            match &g.fold {
                Fold::Norm(n) => {
                    let gamma = work.get_mut(n).expect("fold target loaded above");
                    for (v, sj) in gamma.iter_mut().zip(&s) {
                        *v /= sj;
                    }
                }
                Fold::Rows { tensor, head_dim, n_rep } => {
                    let row_len = src.tensors[index[tensor.as_str()]].row_len();
                    let w = work.get_mut(tensor).expect("fold target loaded above");
                    for (c, row) in w.chunks_exact_mut(row_len).enumerate() {
                        // Row c of the fold target is channel c of the input grouped by KV head:
                        // the scale of its first query head (equal across the heads sharing it).
                        let ch =
                            if *n_rep > 1 { (c / head_dim) * n_rep * head_dim + c % head_dim } else { c };
                        let inv = 1.0 / s[ch];
                        for v in row.iter_mut() {
                            *v *= inv;
                        }
                    }
                }
            }
        }
        choices.push(AwqChoice { group: g.key.clone(), alpha, err_unscaled, err_chosen });
    }

    let tensors = src
        .tensors
        .iter()
        .map(|t| match work.remove(&t.name) {
            Some(v) => SourceTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                dtype: DType::F32,
                data: Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            },
            None => SourceTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                dtype: t.dtype,
                data: Cow::Borrowed(&t.data[..]),
            },
        })
        .collect();
    Ok(Scaled {
        source: ModelSource { metadata: src.metadata.clone(), tensors },
        importance: out_imp,
        choices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(s: &mut u64) -> f32 {
        *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*s >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
    }

    #[test]
    fn scales_have_unit_geometric_mean_and_follow_alpha() {
        let m = [0.5f32, 2.0, 8.0, 1.0];
        let s0 = scales(&m, 0.0);
        assert!(s0.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{s0:?}");
        let s = scales(&m, 0.5);
        let gm: f64 = s.iter().map(|v| (*v as f64).ln()).sum::<f64>() / 4.0;
        assert!(gm.abs() < 1e-6);
        assert!((s[2] / s[0] - 4.0).abs() < 1e-5, "{s:?}");
    }

    #[test]
    fn gqa_magnitude_is_shared_by_query_heads_of_a_kv_head() {
        // 4 query heads of width 2, 2 per KV head.
        let mut inp = AwqInput::new(8);
        inp.add(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], std::iter::empty());
        let m = activation_magnitude(&inp, &Fold::Rows { tensor: String::new(), head_dim: 2, n_rep: 2 });
        assert_eq!(m, vec![2.0, 3.0, 2.0, 3.0, 6.0, 7.0, 6.0, 7.0]);
    }

    /// The synthetic case AWQ is for: a few input channels with activations 30× the rest.
    /// Error is measured on held-out tokens, not the ones searched on.
    #[test]
    fn awq_lowers_output_error_with_outlier_channels() {
        let (k, rows) = (256usize, 64usize);
        let mut s = 7u64;
        let outlier = |j: usize| j % 37 == 5;
        let tokens = |s: &mut u64, n: usize| -> Vec<f32> {
            (0..n * k).map(|i| lcg(s) * if outlier(i % k) { 30.0 } else { 1.0 }).collect()
        };
        let search_x = tokens(&mut s, 128);
        let held_out = tokens(&mut s, 256);
        let w: Vec<f32> = (0..rows * k).map(|_| lcg(&mut s)).collect();
        let mut inp = AwqInput::new(k);
        inp.add(&search_x, 0..128);
        let fold = Fold::Norm(String::new());
        let m = activation_magnitude(&inp, &fold);
        // Bounds on AWQ's held-out error relative to the importance-weighted rounding (α = 0),
        // from measured ratios 0.66, 0.95, 0.57: the k-quants' per-32 sub-block scales already
        // follow a 30× channel, so Q4_K gains least.
        for (dtype, vs_weighted) in [(DType::Q4_0, 0.8), (DType::Q4_K, 0.98), (DType::Q3_K, 0.8)] {
            // Plain: rounding with no importance; weighted: importance E[x²] (α = 0 of AWQ).
            let ones = vec![1.0f32; k];
            let imp = inp.mean_sq();
            let plain = Member { w: &w, dtype, imp: &ones };
            let weighted = Member { w: &w, dtype, imp: &imp };
            let (alpha, _, _) = search(&[weighted], k, &inp.samples, &m, &default_alphas()).unwrap();
            let weighted = Member { w: &w, dtype, imp: &imp };
            let e_plain = group_error(&[plain], k, &held_out, &scales(&m, 0.0)).unwrap();
            let e_weighted = group_error(&[weighted], k, &held_out, &scales(&m, 0.0)).unwrap();
            let weighted = Member { w: &w, dtype, imp: &imp };
            let e_awq = group_error(&[weighted], k, &held_out, &scales(&m, alpha)).unwrap();
            assert!(alpha > 0.0, "{dtype}: α = 0 chosen");
            assert!(e_awq < 0.2 * e_plain, "{dtype}: awq {e_awq:.4e} vs plain {e_plain:.4e}");
            assert!(
                e_awq < vs_weighted * e_weighted,
                "{dtype}: awq {e_awq:.4e} vs weighted {e_weighted:.4e} (α {alpha})"
            );
        }
    }
}
