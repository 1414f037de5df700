//! The tolerance policy: how close two numeric results must be, in one place.
//!
//! Every numeric test compares through this module, with a named level:
//!
//! - element-wise: [`Tolerance`] (`|got − want| ≤ abs + rel·|want|`) with [`assert_close`] /
//!   [`check_close`], or a distance in units in the last place with [`assert_ulps`];
//! - whole-vector: relative RMSE (`‖got − want‖ / ‖want‖`) with [`assert_rel_rmse`], the
//!   measure quantization error is bounded by ([`quant_roundtrip_bound`]).
//!
//! A failure names the comparison, prints the first mismatches (index, got, want, difference)
//! and the largest absolute difference, so a broken kernel shows where it breaks.

use std::fmt;

use crate::DType;

/// How many mismatches a report lists before summarizing.
const SHOWN: usize = 8;

/// An element-wise tolerance: `got` matches `want` when `|got − want| ≤ abs + rel·|want|`.
///
/// Two NaNs match, and so do two infinities of the same sign; a NaN or infinity never matches
/// a finite value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute slack.
    pub abs: f32,
    /// Slack relative to `|want|`.
    pub rel: f32,
}

impl Tolerance {
    /// Values must be equal (`-0.0` equals `0.0`; use [`assert_ulps`] with 0 for bit equality).
    pub const EXACT: Tolerance = Tolerance { abs: 0.0, rel: 0.0 };
    /// One f32 rounding apart (relative 2⁻²³).
    pub const F32_ROUND: Tolerance = Tolerance { abs: 0.0, rel: f32::EPSILON };
    /// The same f32 computation with a different summation order or fused multiply-adds
    /// (e.g. a SIMD kernel against its scalar twin on short reductions).
    pub const F32_REORDER: Tolerance = Tolerance { abs: 1e-6, rel: 1e-5 };
    /// One rounding to IEEE half apart (relative 2⁻¹¹; absolute: half's smallest subnormal).
    pub const F16_ROUND: Tolerance = Tolerance { abs: 6.0e-8, rel: 4.8828125e-4 };
    /// One rounding to bfloat16 apart (relative 2⁻⁸).
    pub const BF16_ROUND: Tolerance = Tolerance { abs: 1.0e-38, rel: 3.90625e-3 };

    /// A tolerance with both kinds of slack.
    pub const fn new(abs: f32, rel: f32) -> Tolerance {
        Tolerance { abs, rel }
    }

    /// Absolute slack only.
    pub const fn absolute(abs: f32) -> Tolerance {
        Tolerance { abs, rel: 0.0 }
    }

    /// Relative slack only.
    pub const fn relative(rel: f32) -> Tolerance {
        Tolerance { abs: 0.0, rel }
    }

    /// Whether `got` matches `want` under this tolerance.
    pub fn allows(self, got: f32, want: f32) -> bool {
        if got.is_nan() || want.is_nan() {
            return got.is_nan() && want.is_nan();
        }
        if got.is_infinite() || want.is_infinite() {
            return got == want;
        }
        let diff = (got as f64 - want as f64).abs();
        diff <= self.abs as f64 + self.rel as f64 * (want as f64).abs()
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "abs {:e} + rel {:e}", self.abs, self.rel)
    }
}

/// What was compared and how it failed; its `Display` is the failure message.
#[derive(Clone, Debug)]
pub struct Report {
    /// Name of the comparison.
    pub name: String,
    /// The criterion, in words.
    pub criterion: String,
    /// Lengths of `got` and `want`.
    pub lens: (usize, usize),
    /// Number of elements that failed the criterion.
    pub failed: usize,
    /// The first failures: index, got, want.
    pub first: Vec<(usize, f32, f32)>,
    /// Largest absolute difference over finite pairs, and its index.
    pub max_abs: (f64, usize),
    /// A whole-vector measure, when the criterion is one (name, value, bound).
    pub measure: Option<(&'static str, f64, f64)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (g, w) = self.lens;
        if g != w {
            return write!(f, "{}: length mismatch, got {g} values, want {w}", self.name);
        }
        write!(f, "{}: {} ({})", self.name, self.criterion, describe_count(self.failed, g))?;
        if let Some((what, value, bound)) = self.measure {
            write!(f, "; {what} = {value:.6e} > bound {bound:.6e}")?;
        }
        writeln!(f)?;
        for &(i, got, want) in &self.first {
            let diff = got as f64 - want as f64;
            writeln!(f, "  [{i}] got {got:e} want {want:e} diff {diff:e}")?;
        }
        if self.failed > self.first.len() {
            writeln!(f, "  ... and {} more", self.failed - self.first.len())?;
        }
        let (m, at) = self.max_abs;
        write!(f, "  max |diff| = {m:e} at [{at}]")
    }
}

fn describe_count(failed: usize, total: usize) -> String {
    if failed == 0 {
        format!("all {total} elements pass element-wise")
    } else {
        format!("{failed} of {total} elements fail")
    }
}

fn max_abs_diff(got: &[f32], want: &[f32]) -> (f64, usize) {
    let mut best = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w as f64).abs();
        if d > best.0 {
            best = (d, i);
        }
    }
    best
}

fn compare(
    name: &str,
    criterion: String,
    got: &[f32],
    want: &[f32],
    ok: impl Fn(f32, f32) -> bool,
) -> Result<(), Box<Report>> {
    let mut report = Report {
        name: name.to_string(),
        criterion,
        lens: (got.len(), want.len()),
        failed: 0,
        first: Vec::new(),
        max_abs: (0.0, 0),
        measure: None,
    };
    if got.len() != want.len() {
        return Err(Box::new(report));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !ok(g, w) {
            report.failed += 1;
            if report.first.len() < SHOWN {
                report.first.push((i, g, w));
            }
        }
    }
    if report.failed == 0 {
        return Ok(());
    }
    report.max_abs = max_abs_diff(got, want);
    Err(Box::new(report))
}

/// Compares element-wise under `tol`; on failure returns the report.
pub fn check_close(name: &str, got: &[f32], want: &[f32], tol: Tolerance) -> Result<(), Box<Report>> {
    compare(name, format!("|got - want| <= {tol}"), got, want, |g, w| tol.allows(g, w))
}

/// Asserts element-wise closeness under `tol`; panics with the report on failure.
#[track_caller]
pub fn assert_close(name: &str, got: &[f32], want: &[f32], tol: Tolerance) {
    if let Err(r) = check_close(name, got, want, tol) {
        panic!("{r}");
    }
}

/// Distance between two floats in units in the last place (0 for bit-identical values and for
/// `0.0` against `-0.0`; `u32::MAX` when either is NaN and the other is not identical).
pub fn ulp_distance(a: f32, b: f32) -> u32 {
    if a.to_bits() == b.to_bits() || a == b {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u32::MAX;
    }
    // Map the sign-magnitude bit patterns onto a monotonic integer line.
    let key = |x: f32| {
        let u = x.to_bits() as i64;
        if u & 0x8000_0000 != 0 {
            -(u & 0x7fff_ffff)
        } else {
            u
        }
    };
    (key(a) - key(b)).unsigned_abs().min(u32::MAX as u64) as u32
}

/// Compares element-wise by distance in units in the last place; on failure returns the report.
pub fn check_ulps(name: &str, got: &[f32], want: &[f32], max_ulps: u32) -> Result<(), Box<Report>> {
    let criterion =
        if max_ulps == 0 { "bit-identical (0 ulp)".to_string() } else { format!("within {max_ulps} ulp") };
    compare(name, criterion, got, want, |g, w| ulp_distance(g, w) <= max_ulps)
}

/// Asserts element-wise closeness in units in the last place; panics with the report.
#[track_caller]
pub fn assert_ulps(name: &str, got: &[f32], want: &[f32], max_ulps: u32) {
    if let Err(r) = check_ulps(name, got, want, max_ulps) {
        panic!("{r}");
    }
}

/// Relative RMSE `‖got − want‖₂ / ‖want‖₂` in f64 (the absolute RMSE when `want` is all
/// zeros; infinite on a length mismatch).
pub fn rel_rmse(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let d = g as f64 - w as f64;
        err += d * d;
        norm += w as f64 * w as f64;
    }
    if norm == 0.0 {
        (err / got.len().max(1) as f64).sqrt()
    } else {
        (err / norm).sqrt()
    }
}

/// Checks `rel_rmse(got, want) ≤ bound` (NaN fails); on failure returns the report, listing
/// the elements with the largest errors first.
pub fn check_rel_rmse(name: &str, got: &[f32], want: &[f32], bound: f64) -> Result<(), Box<Report>> {
    let value = rel_rmse(got, want);
    if value <= bound {
        return Ok(());
    }
    let mut idx: Vec<usize> = (0..got.len().min(want.len())).collect();
    let err = |i: usize| {
        let d = (got[i] as f64 - want[i] as f64).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            d
        }
    };
    idx.sort_by(|&a, &b| err(b).total_cmp(&err(a)));
    Err(Box::new(Report {
        name: name.to_string(),
        criterion: "relative RMSE (largest errors listed)".to_string(),
        lens: (got.len(), want.len()),
        failed: 0,
        first: idx.iter().take(SHOWN).map(|&i| (i, got[i], want[i])).collect(),
        max_abs: max_abs_diff(got, want),
        measure: Some(("rel RMSE", value, bound)),
    }))
}

/// Asserts `rel_rmse(got, want) ≤ bound`; panics with the report on failure.
#[track_caller]
pub fn assert_rel_rmse(name: &str, got: &[f32], want: &[f32], bound: f64) {
    if let Err(r) = check_rel_rmse(name, got, want, bound) {
        panic!("{r}");
    }
}

/// Upper bounds on quantize→dequantize relative RMSE (see [`rel_rmse`]) for one data shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantBound {
    /// The type.
    pub dtype: DType,
    /// Bound on standard Gaussian data.
    pub gaussian: f64,
    /// Bound on heavy-tailed data (Student-t with 3 degrees of freedom, plus rare ×20
    /// outliers), where the per-block scale is set by outliers.
    pub heavy_tailed: f64,
}

/// The round-trip error table of the reference quantizers (no importance matrix): relative
/// RMSE measured on 64 Ki values of each data shape (crates/core/tests/quant_roundtrip.rs, run
/// with `--nocapture` to print it), with 1.2× headroom. A quantizer that exceeds its row is
/// broken; every row is also below the measured error of the next coarser type, so a
/// quantizer that loses a bit is caught. Kernels and model tests may use these as the expected
/// error of a type.
///
/// | type | gaussian measured | heavy-tailed measured |
/// |------|------------------:|----------------------:|
/// | F16  | 2.07e-4 | 1.99e-4 |
/// | BF16 | 1.66e-3 | 1.72e-3 |
/// | Q8_0 | 5.36e-3 | 1.02e-2 |
/// | Q8_K | 6.98e-3 | 2.54e-2 |
/// | Q6_K | 1.78e-2 | 2.89e-2 |
/// | Q5_1 | 3.80e-2 | 5.08e-2 |
/// | Q5_0 | 4.28e-2 | 7.24e-2 |
/// | Q5_K | 3.61e-2 | 4.83e-2 |
/// | Q4_1 | 7.85e-2 | 1.05e-1 |
/// | Q4_0 | 8.60e-2 | 1.29e-1 |
/// | Q4_K | 7.14e-2 | 9.26e-2 |
/// | Q3_K | 1.51e-1 | 1.67e-1 |
/// | Q2_K | 2.97e-1 | 3.12e-1 |
pub const QUANT_ROUNDTRIP: &[QuantBound] = &[
    QuantBound { dtype: DType::F32, gaussian: 0.0, heavy_tailed: 0.0 },
    QuantBound { dtype: DType::F16, gaussian: 2.5e-4, heavy_tailed: 2.5e-4 },
    QuantBound { dtype: DType::BF16, gaussian: 2.0e-3, heavy_tailed: 2.1e-3 },
    QuantBound { dtype: DType::Q8_0, gaussian: 6.5e-3, heavy_tailed: 1.3e-2 },
    QuantBound { dtype: DType::Q8_K, gaussian: 8.5e-3, heavy_tailed: 3.1e-2 },
    QuantBound { dtype: DType::Q6_K, gaussian: 2.2e-2, heavy_tailed: 3.5e-2 },
    QuantBound { dtype: DType::Q5_1, gaussian: 4.6e-2, heavy_tailed: 6.1e-2 },
    QuantBound { dtype: DType::Q5_0, gaussian: 5.2e-2, heavy_tailed: 8.7e-2 },
    QuantBound { dtype: DType::Q5_K, gaussian: 4.4e-2, heavy_tailed: 5.8e-2 },
    QuantBound { dtype: DType::Q4_1, gaussian: 9.5e-2, heavy_tailed: 1.26e-1 },
    QuantBound { dtype: DType::Q4_0, gaussian: 1.04e-1, heavy_tailed: 1.55e-1 },
    QuantBound { dtype: DType::Q4_K, gaussian: 8.6e-2, heavy_tailed: 1.12e-1 },
    QuantBound { dtype: DType::Q3_K, gaussian: 1.82e-1, heavy_tailed: 2.01e-1 },
    QuantBound { dtype: DType::Q2_K, gaussian: 3.6e-1, heavy_tailed: 3.75e-1 },
    // The N:M sparse types on dense data: dominated by the pruning (half the inputs dropped;
    // measured 3.68e-1, 3.26e-1, 3.62e-1, 3.20e-1 on 16 Ki gaussian values). On rows that
    // already are N:M their error is that of Q4_0 / Q8_0 (tests/sparse.rs).
    QuantBound { dtype: DType::Q4_S24, gaussian: 3.85e-1, heavy_tailed: 3.85e-1 },
    QuantBound { dtype: DType::Q4_S48, gaussian: 3.45e-1, heavy_tailed: 3.45e-1 },
    QuantBound { dtype: DType::Q8_S24, gaussian: 3.8e-1, heavy_tailed: 3.8e-1 },
    QuantBound { dtype: DType::Q8_S48, gaussian: 3.4e-1, heavy_tailed: 3.4e-1 },
];

/// The round-trip bounds of `dtype`, or `None` for a type without a quantizer.
pub fn quant_roundtrip_bound(dtype: DType) -> Option<QuantBound> {
    QUANT_ROUNDTRIP.iter().copied().find(|b| b.dtype == dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_follows_the_formula() {
        let t = Tolerance::new(0.1, 0.01);
        assert!(t.allows(1.0, 1.1));
        assert!(!t.allows(1.0, 1.2));
        assert!(t.allows(100.0, 101.0));
        assert!(Tolerance::EXACT.allows(0.0, -0.0));
        assert!(Tolerance::EXACT.allows(f32::NAN, f32::NAN));
        assert!(!Tolerance::EXACT.allows(f32::NAN, 0.0));
        assert!(Tolerance::EXACT.allows(f32::INFINITY, f32::INFINITY));
        assert!(!Tolerance::new(1e30, 1.0).allows(f32::INFINITY, f32::MAX));
    }

    #[test]
    fn report_lists_first_mismatches_and_max() {
        let want = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        let got = [0.0f32, 1.5, 2.0, 3.0, 7.0];
        let r = check_close("demo", &got, &want, Tolerance::absolute(0.1)).unwrap_err();
        assert_eq!(r.failed, 2);
        let msg = r.to_string();
        assert!(msg.contains("demo"), "{msg}");
        assert!(msg.contains("[1] got 1.5e0 want 1e0"), "{msg}");
        assert!(msg.contains("[4]"), "{msg}");
        assert!(msg.contains("max |diff| = 3e0 at [4]"), "{msg}");
        assert!(check_close("len", &got[..2], &want, Tolerance::EXACT).is_err());
    }

    #[test]
    #[should_panic(expected = "max |diff|")]
    fn assert_close_panics_with_report() {
        assert_close("p", &[1.0], &[2.0], Tolerance::EXACT);
    }

    #[test]
    fn ulps() {
        assert_eq!(ulp_distance(1.0, 1.0), 0);
        assert_eq!(ulp_distance(0.0, -0.0), 0);
        assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() + 1)), 1);
        assert_eq!(ulp_distance(f32::from_bits(1), -f32::from_bits(1)), 2);
        assert_eq!(ulp_distance(f32::NAN, 1.0), u32::MAX);
        assert!(check_ulps("u", &[1.0], &[f32::from_bits(1.0f32.to_bits() + 2)], 1).is_err());
    }

    #[test]
    fn rmse() {
        assert_eq!(rel_rmse(&[1.0, 1.0], &[1.0, 1.0]), 0.0);
        assert!((rel_rmse(&[1.1, 0.0], &[1.0, 0.0]) - 0.1).abs() < 1e-6);
        let r = check_rel_rmse("q", &[2.0, 0.0], &[1.0, 0.0], 0.5).unwrap_err();
        assert!(r.to_string().contains("rel RMSE"), "{r}");
        assert!(check_rel_rmse("nan", &[f32::NAN], &[1.0], 1.0).is_err());
    }

    #[test]
    fn every_convertible_type_has_a_bound() {
        for t in crate::TYPES.iter().filter(|t| t.supported) {
            assert!(quant_roundtrip_bound(t.dtype).is_some(), "{}", t.name);
        }
    }
}

/// Whole-model logit tolerances, against the golden references of `tests/golden/`.
pub mod logits {
    /// Top-10 logits and log-sum-exp of every prompt position against the float64 exact-math
    /// reference, for SmolLM2 with f32 activations. Also the top-2 gap below which a greedy
    /// divergence counts as a near-tie.
    pub const EXACT_F32_ACTIVATIONS: f64 = 0.02;
    /// The same for Gemma 3 (a larger vocabulary and head dim, more rounding).
    pub const EXACT_F32_ACTIVATIONS_GEMMA: f64 = 0.05;
    /// Against llama.cpp (which quantizes activations to 8 bits): top-1 must agree wherever
    /// llama.cpp's own top-2 gap is at least this.
    pub const LLAMA_CPP_TOP1_GAP: f64 = 0.25;
    /// Against llama.cpp: the largest top-10 logit difference over all positions.
    pub const LLAMA_CPP_TOP10_MAX: f64 = 1.0;
    /// The same for Gemma 3, whose sharp attention amplifies float summation order: on its
    /// worst position ("def fibonacci(n):", 5) equally valid orders land between 0.85 and 1.11
    /// (x86, 2026-12-07: file-layout kernels, `EDGELLM_PACK=0`, 0.868; the scalar oracle's
    /// exact per-block sums 1.043; packed Q4_K/Q6_K 1.109; packed legacy types only, earlier,
    /// 0.690), and llama.cpp's reference itself sits 1.14 from exact math. The bound is set
    /// above that spread for every tier; the mean bound and top-1 agreement stay the sharp
    /// checks.
    pub const LLAMA_CPP_TOP10_MAX_GEMMA: f64 = 1.2;
    /// Against llama.cpp: the mean over positions of each position's largest top-10 difference.
    pub const LLAMA_CPP_TOP10_MEAN: f64 = 0.4;
    /// A structured-pruned (smaller) model against the same-shape model with the removed
    /// channels, heads or blocks zeroed, both with f32 activations: they add the same non-zero
    /// products, in another order and without the zeros; the largest logit difference (an
    /// encoder's: the largest difference of its last hidden state, LayerNorm-scaled like logits).
    pub const STRUCTURED_VS_MASKED: f64 = 1e-3;
}

/// Sentence-embedding tolerances, against the golden references of `tests/golden/`.
pub mod embeddings {
    /// Cosine similarity between an f32 embedding and the sentence-transformers float32
    /// reference, for every reference sentence.
    pub const MIN_COSINE_VS_REFERENCE: f64 = 0.9999;
    /// The training crate's candle forward against the runtime's, both f32 on the same
    /// weights: the same sums in another order (candle's matrix products, a padded batch
    /// with masked keys), element-wise on L2-normalized embeddings (components ~0.05 for
    /// MiniLM's 384). Measured 2.3e-7 at most on the golden texts; 10× headroom.
    pub const TRAIN_FORWARD: super::Tolerance = super::Tolerance { abs: 2e-6, rel: 0.0 };
}

/// GPU tolerances (`edgellm_gpu`), against the CPU functions on the same input.
pub mod gpu {
    /// Row and element-wise operations (RMSNorm, SwiGLU, softmax, add): a GPU without 64-bit
    /// floats sums a row's squares in f32 where the CPU's RMSNorm sums in f64 (with them the
    /// GPU gives the CPU's bits) (relative error up to `n·ε/2`,
    /// 6.1e-5 for rows of 2048), and WGSL lets `exp`, `sqrt` and a division be a few ulps off.
    /// Relative 1e-4 with an absolute floor of 1e-6 for values near zero.
    pub const ROW_OPS: super::Tolerance = super::Tolerance { abs: 1e-6, rel: 1e-4 };
    /// Rotary embedding: the GPU turns each pair in f32 with the `(cos, sin)` table rounded
    /// to f32, the CPU in f64 rounded once: a few f32 roundings of values up to |x|, so an
    /// absolute floor of 1e-6 (|x| ≲ 4) where a result cancels towards zero.
    pub const ROPE: super::Tolerance = super::Tolerance { abs: 1e-6, rel: 1e-5 };
    /// GELU through half precision (the CPU's table: f16 input, f16 result) times the up
    /// projection `u`: the input rounds identically, but the f32 GELU differs by a few ulps
    /// (WGSL's `exp`; the CPU's `1 + tanh z` cancels for negative inputs, an absolute error
    /// up to |x|·2⁻²⁴ ≤ 6e-7 at x = −10) and can cross an f16 rounding boundary: one f16 ulp
    /// (up to 2⁻¹⁰ relative; 6e-8 absolute among f16 subnormals). For |u| ≤ 2 (the test's):
    /// relative 1e-3, absolute 2e-6.
    pub const GELU_F16: super::Tolerance = super::Tolerance { abs: 2e-6, rel: 1e-3 };
    /// A BERT encoder's L2-normalized embedding (components ~0.05 for MiniLM's 384) against
    /// the CPU's: f32 throughout on both (the same LayerNorm bits where the GPU has 64-bit
    /// floats), the products' and the attention's sums in another order, `exp` a few ulps
    /// apart, through 6 layers. Absolute 2e-6 (a few f32 ulps of the components; the training
    /// crate's candle forward is held to the same, `embeddings::TRAIN_FORWARD`).
    pub const ENCODER: super::Tolerance = super::Tolerance { abs: 2e-6, rel: 0.0 };
    /// Attention with an F16 cache: both sides round each probability to half, so an `exp`
    /// or a sum a few ulps apart can move a probability by one half ulp (2⁻¹¹ relative); the
    /// output moves by at most 2⁻¹¹·Σp·|v| ≤ 4.9e-4·max|v|. For values within ±1 (the test's),
    /// absolute 5e-4, plus the f32 sums' reordering.
    pub const ATTENTION: super::Tolerance = super::Tolerance { abs: 5e-4, rel: 1e-4 };
}

/// Gradient tolerances: autograd against central finite differences.
pub mod gradients {
    use super::Tolerance;

    /// An autograd gradient against the central difference `(L(θ+h) − L(θ−h)) / 2h`, both in
    /// f64 with `h` = 1e-5: the difference's truncation error is O(h²·L‴) ~ 1e-10 and its
    /// rounding ~ε/h ~ 1e-11; candle's GELU backward carries 6-digit constants (relative
    /// ~1e-6), so the relative slack is 1e-5.
    pub const FINITE_DIFFERENCE_F64: Tolerance = Tolerance { abs: 1e-8, rel: 1e-5 };
}

/// Kernel tolerances: a SIMD kernel against its scalar oracle, which add the same products in
/// another order (lanes, several accumulators) and with or without fused multiply-adds.
impl Tolerance {
    /// Two f32 sums of the same partial products, `terms` the longest chain of additions and
    /// `magnitude` the sum of the products' absolute values (as
    /// `edgellm_core::kernels::dot_error_terms` gives them for a dot product): each sum is
    /// within `(terms + 2)·ε/2·magnitude` of the exact value, so they differ by at most
    /// `2·(terms + 8)·ε·magnitude`, the absolute slack returned (ε = 2⁻²³).
    pub fn sum_reorder(terms: usize, magnitude: f64) -> Tolerance {
        Tolerance::absolute((2.0 * (terms as f64 + 8.0) * f32::EPSILON as f64 * magnitude) as f32)
    }
}
