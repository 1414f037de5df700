//! f32 vector and small-matrix operations of the attention and element-wise layers: `axpy`,
//! the accumulating matrix product of probabilities and values, the shifted exponential of a
//! softmax, and f16 → f32 widening.
//!
//! Each is one portable body, written so that the compiler vectorizes it (fixed-size register
//! tiles, fused multiply-adds through `f32::mul_add`), compiled once per tier: as is for the
//! scalar oracle (where products and sums round separately), and inside an AVX2 + FMA (x86) or
//! baseline NEON (AArch64) function for the SIMD tiers. Every SIMD tier computes the same
//! operations in the same order, so their results are bit-identical to each other.

use super::{tier, Tier};

/// Whether the tier in use fuses multiply-adds (every SIMD tier does; the oracle does not).
#[inline]
fn fused() -> bool {
    tier() != Tier::Scalar
}

#[inline(always)]
fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        c + a * b
    }
}

/// `y += a · x`, with fused multiply-adds on the SIMD tiers (one rounding per element there,
/// two on the scalar tier).
///
/// # Panics
/// If `y` and `x` differ in length.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: lengths {} and {}", y.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if fused() {
        // SAFETY: every x86 tier above the scalar one requires AVX2 and FMA (checked when the
        // tier was chosen).
        unsafe { x86::axpy(y, a, x) };
        return;
    }
    if fused() {
        axpy_body::<true>(y, a, x)
    } else {
        axpy_body::<false>(y, a, x)
    }
}

#[inline(always)]
fn axpy_body<const FUSED: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = madd::<FUSED>(a, x, *y);
    }
}

/// `c += a · b` for row-major f32 matrices: `a` is `m × k` (rows `lda` apart), `b` is `k × n`
/// (rows `ldb` apart) and `c` is `m × n` (rows `ldc` apart).
///
/// Every element of `c` accumulates its `k` products in order, one multiply-add at a time
/// (fused on the SIMD tiers), so the result equals `k` successive [`axpy`] calls — only in
/// register tiles of several rows and columns, each `b` row loaded once per tile.
///
/// # Panics
/// If a leading dimension is smaller than its row or a slice is too short for its matrix.
#[allow(clippy::too_many_arguments)]
pub fn gemm_acc(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let need = |rows: usize, ld: usize, cols: usize| (rows - 1) * ld + cols;
    assert!(
        lda >= k && ldb >= n && ldc >= n,
        "gemm_acc: leading dimensions {lda}, {ldb}, {ldc} for {m}×{k} · {k}×{n}"
    );
    assert!(
        a.len() >= need(m, lda, k) && b.len() >= need(k, ldb, n) && c.len() >= need(m, ldc, n),
        "gemm_acc: slices of {}, {}, {} values for {m}×{k} · {k}×{n}",
        a.len(),
        b.len(),
        c.len()
    );
    let mut g = Gemm { k, a, lda, b, ldb, c, ldc };
    #[cfg(target_arch = "x86_64")]
    if tier() == Tier::Avx512Vnni {
        // SAFETY: the AVX-512 tier requires AVX-512 F, AVX2 and FMA.
        unsafe { x86::gemm_acc_avx512(m, n, &mut g) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fused() {
        // SAFETY: every x86 tier above the scalar one requires AVX2 and FMA.
        unsafe { x86::gemm_acc(m, n, &mut g) };
        return;
    }
    if fused() {
        gemm_body::<true, 16>(m, n, &mut g)
    } else {
        gemm_body::<false, 16>(m, n, &mut g)
    }
}

/// The operands of [`gemm_acc`] but the shape `m × n` (checked there).
struct Gemm<'a> {
    k: usize,
    a: &'a [f32],
    lda: usize,
    b: &'a [f32],
    ldb: usize,
    c: &'a mut [f32],
    ldc: usize,
}

/// Rows per register tile of [`gemm_acc`].
const MR: usize = 4;

/// [`gemm_acc`] in tiles of [`MR`] rows × `NR` columns (two AVX2 or AVX-512 registers; then 16
/// columns, then single columns: the width changes which elements share a register, never an
/// element's sequence of operations).
#[inline(always)]
fn gemm_body<const FUSED: bool, const NR: usize>(m: usize, n: usize, g: &mut Gemm<'_>) {
    let mut i = 0;
    while i < m {
        let rows = MR.min(m - i);
        let mut j = 0;
        while j + NR <= n {
            rows_tile::<FUSED, NR>(rows, g, i, j);
            j += NR;
        }
        while NR > 16 && j + 16 <= n {
            rows_tile::<FUSED, 16>(rows, g, i, j);
            j += 16;
        }
        single_columns::<FUSED>(g, i, rows, j, n);
        i += rows;
    }
}

/// Rows `i..i + rows`, columns `j..n` of `c`, one element at a time.
#[inline(always)]
fn single_columns<const FUSED: bool>(g: &mut Gemm<'_>, i: usize, rows: usize, j: usize, n: usize) {
    for j in j..n {
        for r in i..i + rows {
            let mut acc = g.c[r * g.ldc + j];
            for kk in 0..g.k {
                acc = madd::<FUSED>(g.a[r * g.lda + kk], g.b[kk * g.ldb + j], acc);
            }
            g.c[r * g.ldc + j] = acc;
        }
    }
}

/// The tile of `rows` (1..=[`MR`]) rows × `C` columns at `(i, j)`.
#[inline(always)]
fn rows_tile<const FUSED: bool, const C: usize>(rows: usize, g: &mut Gemm<'_>, i: usize, j: usize) {
    match rows {
        4 => tile::<FUSED, 4, C>(g, i, j),
        3 => tile::<FUSED, 3, C>(g, i, j),
        2 => tile::<FUSED, 2, C>(g, i, j),
        _ => tile::<FUSED, 1, C>(g, i, j),
    }
}

/// Rows `i..i + R`, columns `j..j + C` of `c`, accumulated over all `k`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn tile<const FUSED: bool, const R: usize, const C: usize>(g: &mut Gemm<'_>, i: usize, j: usize) {
    let (k, lda, ldb, ldc) = (g.k, g.lda, g.ldb, g.ldc);
    let mut acc = [[0.0f32; C]; R];
    for r in 0..R {
        acc[r].copy_from_slice(&g.c[(i + r) * ldc + j..(i + r) * ldc + j + C]);
    }
    let a = &g.a[i * lda..(i + R - 1) * lda + k];
    for kk in 0..k {
        let Some(br) = g.b[kk * ldb + j..].first_chunk::<C>() else { unreachable!("b holds k rows of n") };
        for r in 0..R {
            let x = a[r * lda + kk];
            for col in 0..C {
                acc[r][col] = madd::<FUSED>(x, br[col], acc[r][col]);
            }
        }
    }
    for r in 0..R {
        g.c[(i + r) * ldc + j..(i + r) * ldc + j + C].copy_from_slice(&acc[r]);
    }
}

/// The exponentials of a softmax row: `x[i] ← e^(x[i] − max)`; returns their sum in f64
/// (each group of eight summed pairwise in f32 first, as llama.cpp's AVX2 softmax does).
///
/// The exponential is ours, the same on every tier: `2^n · p(r)` with `n` the nearest integer
/// to `x·log₂e` and `p` the degree-7 Taylor polynomial on `|r| ≤ ln2/2`, accurate to about
/// one unit in the last place (tested against f64). Arguments below −87 (where `e^x` is under
/// 2⁻¹²⁵, and a probability that small is zero in half precision) give 0. `max` must be at
/// least every `x[i]` (arguments are then `≤ 0`); −∞ entries give 0.
pub fn softmax_exp(x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if fused() {
        // SAFETY: every x86 tier above the scalar one requires AVX2 and FMA.
        return unsafe { x86::softmax_exp(x, max) };
    }
    if fused() {
        softmax_exp_body::<true>(x, max)
    } else {
        softmax_exp_body::<false>(x, max)
    }
}

#[inline(always)]
fn softmax_exp_body<const FUSED: bool>(x: &mut [f32], max: f32) -> f64 {
    // Two loops: the exponentials (branch-free, so the compiler vectorizes them), then the sum.
    for v in x.iter_mut() {
        *v = exp_nonpositive::<FUSED>(*v - max);
    }
    let mut sum = 0.0f64;
    let mut chunks = x.chunks_exact(8);
    for v in &mut chunks {
        sum += (((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))) as f64;
    }
    chunks.remainder().iter().fold(sum, |s, &v| s + v as f64)
}

/// The SiLU-gated product in place: `g[i] ← silu(g[i]) · u[i]`, `silu(x) = x / (1 + e^−x)`,
/// with the exponential of [`softmax_exp`] (about one ulp) on `−|x|`, so that it never
/// overflows: `x / (1 + e^−x)` for `x ≥ 0`, `x · e^x / (1 + e^x)` below.
///
/// # Panics
/// If the lengths differ.
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "swiglu: lengths");
    #[cfg(target_arch = "x86_64")]
    if fused() {
        // SAFETY: every x86 tier above the scalar one requires AVX2 and FMA.
        return unsafe { x86::swiglu(g, u) };
    }
    if fused() {
        swiglu_body::<true>(g, u)
    } else {
        swiglu_body::<false>(g, u)
    }
}

#[inline(always)]
fn swiglu_body<const FUSED: bool>(g: &mut [f32], u: &[f32]) {
    for (a, &b) in g.iter_mut().zip(u) {
        let x = *a;
        let e = exp_nonpositive::<FUSED>(-x.abs());
        let num = if x >= 0.0 { x } else { x * e };
        *a = num / (1.0 + e) * b;
    }
}

/// Exact (erf) GELU in place: `x ← ½x(1 + erf(x/√2))`, the activation of BERT-style encoders.
///
/// `erf` is a rational approximation `z·P(z²)/Q(z²)` (degrees 12 and 10 in `z`, fitted by
/// iterated weighted least squares for edgellm) on `|z| ≤ 3.9`, ±1 beyond (`erf(3.9)` rounds
/// to 1 within 4e-8): within 4e-7 of the true `erf` in f32, so GELU is within 1e-6 of exact.
/// Unlike a libm call it vectorizes. NaN stays NaN.
pub fn gelu_erf(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if fused() {
        // SAFETY: every x86 tier above the scalar one requires AVX2 and FMA.
        return unsafe { x86::gelu_erf(x) };
    }
    if fused() {
        gelu_erf_body::<true>(x)
    } else {
        gelu_erf_body::<false>(x)
    }
}

#[inline(always)]
fn gelu_erf_body<const FUSED: bool>(x: &mut [f32]) {
    /// Numerator coefficients, of z¹, z³, … z¹³.
    const P: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        1.833_830_2e-1,
        5.349_445_3e-2,
        3.702_441_7e-3,
        3.527_003e-4,
        3.982_961_5e-6,
        -9.288_417e-9,
    ];
    /// Denominator coefficients, of z⁰, z², … z¹⁰.
    const Q: [f32; 6] = [1.0, 4.958_523_8e-1, 1.126_919_6e-1, 1.507_035_9e-2, 1.242_064_2e-3, 5.657_089_8e-5];
    for v in x.iter_mut() {
        let u = *v;
        // z = u/√2, clamped to where the fit holds (`clamp` keeps NaN).
        let z = (u * std::f32::consts::FRAC_1_SQRT_2).clamp(-3.9, 3.9);
        let z2 = z * z;
        let mut p = P[6];
        for &c in P[..6].iter().rev() {
            p = madd::<FUSED>(p, z2, c);
        }
        let mut q = Q[5];
        for &c in Q[..5].iter().rev() {
            q = madd::<FUSED>(q, z2, c);
        }
        let erf = (z * p / q).clamp(-1.0, 1.0);
        *v = 0.5 * u * (1.0 + erf);
    }
}

/// `e^x` for `x ≤ 0` (0 below −87, and for −∞); see [`softmax_exp`].
#[inline(always)]
fn exp_nonpositive<const FUSED: bool>(x: f32) -> f32 {
    /// 1.5 · 2²³: adding it to a float of magnitude below 2²² rounds to an integer (ties to
    /// even), which then sits in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    /// ln 2 in two parts, the first with few enough bits that `n · LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.max(-87.0);
    let t = madd::<FUSED>(xc, std::f32::consts::LOG2_E, SHIFT);
    let n = t - SHIFT;
    let r = madd::<FUSED>(n, -LN2_HI, xc);
    let r = madd::<FUSED>(n, -LN2_LO, r);
    let mut p = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd::<FUSED>(p, r, c);
    }
    // n ∈ [−126, 0]: 2ⁿ is a normal float built from its exponent bits.
    let e = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let scale = f32::from_bits(((e + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// Rounds every value to the nearest IEEE half (ties to even) and back to f32: exactly a
/// conversion to `f16` and back (values beyond the half range become ±∞).
pub fn round_to_f16(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if fused() {
        // SAFETY: every x86 tier above the scalar one requires F16C.
        unsafe { x86::round_to_f16(x) };
        return;
    }
    x.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
}

/// Widens little-endian IEEE halves (`src`, two bytes each) into `dst`, exactly.
///
/// # Panics
/// If `src` does not hold exactly `2 · dst.len()` bytes.
pub fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "f16_to_f32: {} bytes for {} values", src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if fused() {
        // SAFETY: every x86 tier above the scalar one requires F16C; lengths checked above.
        unsafe { x86::f16_to_f32(src, dst) };
        return;
    }
    for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = f32::from_bits(super::F16_TO_F32[u16::from_le_bytes([c[0], c[1]]) as usize]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD tiers' instances: the portable bodies compiled for AVX2 + FMA, and the F16C
    //! conversions.

    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn round_to_f16(x: &mut [f32]) {
        let mut ch = x.chunks_exact_mut(8);
        for c in &mut ch {
            let v = _mm256_loadu_ps(c.as_ptr());
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
        ch.into_remainder().iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
    }

    /// # Safety
    /// The CPU has AVX2 and F16C; `src.len() == 2 · dst.len()`.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
        let n8 = dst.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        for i in n8..dst.len() {
            dst[i] = half::f16::from_le_bytes([src[2 * i], src[2 * i + 1]]).to_f32();
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `y` and `x` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        super::axpy_body::<true>(y, a, x)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_acc(m: usize, n: usize, g: &mut super::Gemm<'_>) {
        super::gemm_body::<true, 16>(m, n, g)
    }

    /// The AVX-512 [`super::gemm_acc`]: tiles of up to [`super::MR`] rows × 32 columns (two
    /// registers a row), then × 16, in explicit 512-bit operations (the portable body's 32-column
    /// tile is not vectorized by the compiler), then single columns; every element's sequence
    /// of fused multiply-adds is the portable body's.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, AVX2 and FMA; `g` holds `m` rows of `a` and `c` and `n` columns
    /// of `b` and `c` (checked by `gemm_acc`).
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn gemm_acc_avx512(m: usize, n: usize, g: &mut super::Gemm<'_>) {
        let mut i = 0;
        while i < m {
            let rows = super::MR.min(m - i);
            let mut j = 0;
            while j + 32 <= n {
                match rows {
                    4 => tile512::<4, 2>(g, i, j),
                    3 => tile512::<3, 2>(g, i, j),
                    2 => tile512::<2, 2>(g, i, j),
                    _ => tile512::<1, 2>(g, i, j),
                }
                j += 32;
            }
            if j + 16 <= n {
                match rows {
                    4 => tile512::<4, 1>(g, i, j),
                    3 => tile512::<3, 1>(g, i, j),
                    2 => tile512::<2, 1>(g, i, j),
                    _ => tile512::<1, 1>(g, i, j),
                }
                j += 16;
            }
            super::single_columns::<true>(g, i, rows, j, n);
            i += rows;
        }
    }

    /// Rows `i..i + R`, columns `j..j + 16·V` of `c`, accumulated over all `k`.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile512<const R: usize, const V: usize>(g: &mut super::Gemm<'_>, i: usize, j: usize) {
        let (k, lda, ldb, ldc) = (g.k, g.lda, g.ldb, g.ldc);
        let (a, b, c) = (g.a.as_ptr(), g.b.as_ptr(), g.c.as_mut_ptr());
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for r in 0..R {
            for v in 0..V {
                acc[r][v] = _mm512_loadu_ps(c.add((i + r) * ldc + j + 16 * v));
            }
        }
        for kk in 0..k {
            let mut bv = [_mm512_setzero_ps(); V];
            for v in 0..V {
                bv[v] = _mm512_loadu_ps(b.add(kk * ldb + j + 16 * v));
            }
            for r in 0..R {
                let x = _mm512_set1_ps(*a.add((i + r) * lda + kk));
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
                }
            }
        }
        for r in 0..R {
            for v in 0..V {
                _mm512_storeu_ps(c.add((i + r) * ldc + j + 16 * v), acc[r][v]);
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `g` and `u` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn swiglu(g: &mut [f32], u: &[f32]) {
        super::swiglu_body::<true>(g, u)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu_erf(x: &mut [f32]) {
        super::gelu_erf_body::<true>(x)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_exp(x: &mut [f32], max: f32) -> f64 {
        super::softmax_exp_body::<true>(x, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The tiled product equals the same accumulation done one `axpy` at a time, bit for
    /// bit, for tile edges in every direction and leading dimensions wider than the rows.
    #[test]
    fn gemm_acc_equals_successive_axpys() {
        for (m, k, n) in
            [(1, 1, 1), (4, 32, 16), (7, 33, 64), (24, 5, 256), (3, 9, 40), (5, 17, 7), (2, 3, 48)]
        {
            let (lda, ldb, ldc) = (k + 3, n + 5, n + 1);
            let a = fill(m * lda, 1);
            let b = fill(k * ldb, 2);
            let c0 = fill(m * ldc, 3);
            let mut got = c0.clone();
            gemm_acc(m, k, n, &a, lda, &b, ldb, &mut got, ldc);
            let mut want = c0.clone();
            for r in 0..m {
                for kk in 0..k {
                    axpy(&mut want[r * ldc..r * ldc + n], a[r * lda + kk], &b[kk * ldb..kk * ldb + n]);
                }
            }
            assert_eq!(got, want, "{m}×{k}·{k}×{n}");
            // Padding columns of c are left alone.
            for r in 0..m {
                assert_eq!(got[r * ldc + n..(r + 1) * ldc], c0[r * ldc + n..(r + 1) * ldc]);
            }
        }
    }

    /// Halves round-trip exactly; rounding equals the `half` crate's (ties to even, overflow to
    /// infinity, subnormals) on every length, including tails.
    #[test]
    fn f16_conversions_match_the_reference() {
        let mut x = fill(1003, 4);
        x.iter_mut().enumerate().for_each(|(i, v)| *v *= [1.0, 1e-6, 7e4, 1e-8, 65519.0][i % 5]);
        x.extend([0.5 + 2f32.powi(-12), 65520.0, -0.0, 6e-8]);
        let mut got = x.clone();
        round_to_f16(&mut got);
        let want: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let mut wide = vec![0.0f32; 1 << 16];
        f16_to_f32(&bytes, &mut wide);
        for (h, w) in wide.iter().enumerate() {
            let r = half::f16::from_bits(h as u16).to_f32();
            assert!(w.to_bits() == r.to_bits() || (w.is_nan() && r.is_nan()), "half {h:#x}");
        }
    }

    #[test]
    #[should_panic(expected = "gemm_acc: slices")]
    fn gemm_acc_rejects_short_slices() {
        let mut c = vec![0.0; 4];
        gemm_acc(2, 2, 2, &[0.0; 3], 2, &[0.0; 4], 2, &mut c, 2);
    }

    /// Within 2 units in the last place of the f64 exponential over the whole range used,
    /// exact at 0, zero for −∞ and below −87; the sum is the f64 sum of the f32 results to
    /// f32 rounding of the groups of eight.
    #[test]
    fn swiglu_is_accurate() {
        let mut x: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).collect();
        x.extend([-100.0, -88.0, 88.0, 100.0, 0.0, -0.0, f32::MIN_POSITIVE, 1e30, -1e30]);
        let u: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut g = x.clone();
        swiglu(&mut g, &u);
        for ((&x, &u), &got) in x.iter().zip(&u).zip(&g) {
            let want = x as f64 / (1.0 + (-(x as f64)).exp()) * u as f64;
            let err = (got as f64 - want).abs();
            assert!(err <= 4.0 * f32::EPSILON as f64 * want.abs() + 1e-35, "silu({x})·{u}: {got} vs {want}");
        }
        // Below −87 the exponential is 0: silu is then below 87·e⁻⁸⁷ ≈ 1.4e-36 in magnitude.
        let mut nan = [f32::NAN];
        swiglu(&mut nan, &[1.0]);
        assert!(nan[0].is_nan());
    }

    /// Within 1e-6 of the exact GELU (f64 `erf`) everywhere, including far tails, ±0 and
    /// NaN.
    #[test]
    fn gelu_erf_is_accurate() {
        let mut x: Vec<f32> = (-400_000..=400_000).map(|i| i as f32 * 2.5e-5).collect();
        x.extend([-1e30, -100.0, -6.0, 6.0, 100.0, 1e30, 0.0, -0.0, f32::MIN_POSITIVE]);
        let mut y = x.clone();
        gelu_erf(&mut y);
        for (&x, &got) in x.iter().zip(&y) {
            let want = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            let tol = 1e-6f64.max(want.abs() * 2.0 * f32::EPSILON as f64);
            assert!((got as f64 - want).abs() <= tol, "gelu({x}) = {got}, want {want}");
        }
        let mut nan = [f32::NAN];
        gelu_erf(&mut nan);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn softmax_exp_is_accurate() {
        let n = 200_003;
        let mut x: Vec<f32> = (0..n).map(|i| -87.0 * i as f32 / (n - 1) as f32).collect();
        x.extend([0.0, -0.0, -1e-30, -87.0, -87.5, -1000.0, f32::NEG_INFINITY]);
        let orig = x.clone();
        let sum = softmax_exp(&mut x, 0.0);
        let mut worst = 0.0f64;
        for (&o, &y) in orig.iter().zip(&x) {
            if o < -87.0 {
                assert_eq!(y, 0.0, "e^{o}");
                continue;
            }
            let want = (o as f64).exp();
            let ulp = (want as f32).to_bits();
            let ulp = (f32::from_bits(ulp + 1) - f32::from_bits(ulp)) as f64;
            worst = worst.max((y as f64 - want).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(x[n], 1.0);
        let direct: f64 = x.iter().map(|&v| v as f64).sum();
        assert!((sum - direct).abs() <= direct * 1e-6, "sum {sum} vs {direct}");
        // Shifting by the maximum.
        let mut y = vec![3.0f32, 1.0, 3.0];
        softmax_exp(&mut y, 3.0);
        assert_eq!(y[0], 1.0);
        assert!((y[1] as f64 - (-2.0f64).exp()).abs() < 1e-7);
    }
}
