//! AVX-512 (F, BW) + VNNI matrix products of several tokens (prompt processing).
//!
//! One token stays on the AVX2 path (a matrix-vector product is bound by memory, and its
//! fused 256-bit kernels keep every unpacked block in registers); from two tokens on, the
//! register tiles use 512-bit registers, reusing the AVX2 formats' block unpacking:
//!
//! - 32-value formats: one block of two rows per register (a row per 256-bit half), against
//!   the token's activation block in both halves. `vpdpbusd` multiplies unsigned by signed
//!   bytes and accumulates in i32 without the i16 saturation of `vpmaddubsw`, so the `_1`
//!   types' unsigned codes meet the signed activations directly, and the `_0` types' signed
//!   codes meet activations made unsigned (`q + 128`), the excess `128·Σw` being subtracted by
//!   starting the accumulator at `−128·Σw` (computed once per weight block). Two rows' block
//!   then cost one `vpdpbusd`, a conversion, a multiply of the scales and a multiply-add,
//!   where AVX2 needs twelve operations.
//! - k-quants: the canonical unpacked super-block in four 64-value registers; as AVX2, with
//!   twice the width.
//!
//! Both tiers' results are bit-identical (tested): integer dot products are exact in any
//! order, and each row's float accumulation is the AVX2 tier's sequence of operations, in
//! its half of the register. A model's logits then do not depend on whether the CPU has
//! AVX-512.
//!
//! The AVX-512 intrinsics are stable since Rust 1.89 (the workspace declares an older MSRV).

#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::float::F16;
use super::kquants::{KW, Q2K, Q3K, Q4K, Q5K, Q6K};
use super::legacy::{LA, LW, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
use super::{drive, h2f_entry, load, Fmt};
use crate::kernels::MatmulArgs;

/// Whether the CPU has what this tier uses (and the AVX2 tier below it).
pub(super) fn detected() -> bool {
    super::avx2_detected()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

#[inline(always)]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `x` in lanes 0..8 and `y` in lanes 8..16, from the table entries at `x` and `y`: a
/// broadcast load and a merging broadcast load.
#[inline(always)]
unsafe fn splat2(x: *const f32, y: *const f32) -> __m512 {
    _mm512_mask_broadcastss_ps(_mm512_set1_ps(*x), 0xff00, _mm_load_ss(y))
}

/// Block `b` of two weight rows, one row per 256-bit half (both halves the same row for the
/// odd row at the end of a tile).
#[derive(Clone, Copy)]
struct W2 {
    /// Codes of both rows: signed (`_0` types) or unsigned (`_1` types).
    w: __m512i,
    /// `−128 · Σw` per group of four codes (`_0` types).
    corr: __m512i,
    /// Scales, eight lanes each.
    d: __m512,
    /// Minimums, eight lanes each (`_1` types).
    m: __m512,
}

/// Block `b` of one token's activations, the same in both halves: codes (made unsigned for
/// the `_0` types), scale, `d·Σq` in lanes 0 and 8 (Q8_1).
#[derive(Clone, Copy)]
struct A2 {
    q: __m512i,
    d: __m512,
    s: __m512,
}

#[inline(always)]
unsafe fn w2<F: Fmt<Pw = LW>, const AFFINE: bool>(p0: *const u8, p1: *const u8) -> W2 {
    let (a, b) = (F::pw(p0), F::pw(p1));
    let w = join(a.w, b.w);
    let corr = if AFFINE {
        _mm512_setzero_si512()
    } else {
        let sum128 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(-128), w);
        _mm512_sub_epi32(_mm512_setzero_si512(), sum128)
    };
    // Every 32-value format keeps its scale at byte 0 and (`_1` types) its minimum at byte 2.
    let d = splat2(h2f_entry(p0), h2f_entry(p1));
    let m = if AFFINE { splat2(h2f_entry(p0.add(2)), h2f_entry(p1.add(2))) } else { _mm512_setzero_ps() };
    W2 { w, corr, d, m }
}

#[inline(always)]
unsafe fn a2<F: Fmt<Pa = LA>, const AFFINE: bool>(p: *const u8) -> A2 {
    let q = F::pa(p).q;
    let mut q = join(q, q);
    if !AFFINE {
        q = _mm512_xor_si512(q, _mm512_set1_epi8(-128));
    }
    // Q8_0 and Q8_1 keep their scale at byte 0, Q8_1 its `s = d·Σq` (f16) at byte 2.
    let d = _mm512_set1_ps(*h2f_entry(p));
    let s = if AFFINE {
        _mm512_maskz_broadcastss_ps(0x0101, _mm_set_ss(*h2f_entry(p.add(2))))
    } else {
        _mm512_setzero_ps()
    };
    A2 { q, d, s }
}

/// Adds one block's products into the accumulators of two rows: per half, exactly the AVX2
/// tier's operations (the integer dot product, then a fused multiply-add of its conversion
/// by `dw·da`, then for the `_1` types one of `m · s`).
#[inline(always)]
unsafe fn dot2<const AFFINE: bool>(w: &W2, a: &A2, acc: __m512) -> __m512 {
    let i = if AFFINE {
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), w.w, a.q)
    } else {
        _mm512_dpbusd_epi32(w.corr, a.q, w.w)
    };
    let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(w.d, a.d), acc);
    if AFFINE {
        _mm512_fmadd_ps(w.m, a.s, acc)
    } else {
        acc
    }
}

/// Rows `r0..r0 + M` of a 32-value format against tokens `t0..t0 + N`, rows in pairs (one
/// per half of a 512-bit register), a block at a time.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_l<F: Fmt<Pw = LW, Pa = LA>, const AFFINE: bool, const M: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    r0: usize,
    t0: usize,
) {
    let pairs = M.div_ceil(2);
    let nb = m.k / 32;
    let (rb, ab) = (m.row_bytes, m.act_bytes);
    let w0 = m.w.as_ptr().add(r0 * rb);
    let a0 = m.act.as_ptr().add(t0 * ab);
    // Accumulators of row pair `p` (only the first `pairs` are used).
    let mut acc = [[_mm512_setzero_ps(); N]; M];
    // SAFETY (of the zeroed value): all-zero is a valid `W2`.
    let mut pw: [W2; M] = std::mem::zeroed();
    for b in 0..nb {
        for p in 0..pairs {
            let (r, r1) = (2 * p, (2 * p + 1).min(M - 1));
            pw[p] = w2::<F, AFFINE>(w0.add(r * rb + b * F::W), w0.add(r1 * rb + b * F::W));
        }
        for t in 0..N {
            let pa = a2::<F, AFFINE>(a0.add(t * ab + b * F::A));
            for p in 0..pairs {
                acc[p][t] = dot2::<AFFINE>(&pw[p], &pa, acc[p][t]);
            }
        }
    }
    let col = r0 - m.rows.start;
    for p in 0..pairs {
        for t in 0..N {
            let (lo, hi) = halves(acc[p][t]);
            let o = (t0 + t) * m.out_stride + col + 2 * p;
            m.out[o] = super::hsum(lo);
            if 2 * p + 1 < M {
                m.out[o + 1] = super::hsum(hi);
            }
        }
    }
}

/// Lanes 0..8 and 8..16 of `x`.
#[inline(always)]
unsafe fn halves(x: __m512) -> (__m256, __m256) {
    (_mm512_castps512_ps256(x), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x))))
}

/// Rows `r0..r0 + M` of a k-quant against tokens `t0..t0 + N`: as the AVX2 k-quant tile, with
/// the codes and scale registers of each unpacked super-block read in adjacent pairs.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_k<F: Fmt<Pw = KW>, const AFFINE: bool, const M: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    r0: usize,
    t0: usize,
) {
    let nb = m.k / 256;
    let (rb, ab) = (m.row_bytes, m.act_bytes);
    let w0 = m.w.as_ptr().add(r0 * rb);
    let a0 = m.act.as_ptr().add(t0 * ab);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    // SAFETY (of the zeroed value): all-zero is a valid `KW`.
    let mut pw: [KW; M] = std::mem::zeroed();
    for b in 0..nb {
        for r in 0..M {
            pw[r] = F::pw(w0.add(r * rb + b * F::W));
        }
        let ap = |t: usize| a0.add(t * ab + b * 292);
        let mut s = [[_mm512_setzero_si512(); N]; M];
        for j in 0..4 {
            let mut q = [_mm512_setzero_si512(); N];
            for t in 0..N {
                q[t] = _mm512_loadu_si512(ap(t).add(4 + 64 * j) as *const _);
            }
            for r in 0..M {
                // Registers 2j and 2j + 1 of the codes (and scales) are adjacent in memory.
                let u = _mm512_loadu_si512(pw[r].u.as_ptr().add(2 * j) as *const _);
                let sc = _mm512_loadu_si512(pw[r].sc.as_ptr().add(2 * j) as *const _);
                for t in 0..N {
                    let p = _mm512_madd_epi16(_mm512_maddubs_epi16(u, q[t]), sc);
                    s[r][t] = _mm512_add_epi32(s[r][t], p);
                }
            }
        }
        for t in 0..N {
            let bsums = load(ap(t).add(260));
            let da = _mm256_set1_ps((ap(t) as *const f32).read_unaligned());
            for r in 0..M {
                let st = _mm256_add_epi32(
                    _mm512_castsi512_si256(s[r][t]),
                    _mm512_extracti64x4_epi64::<1>(s[r][t]),
                );
                let mm = _mm256_madd_epi16(pw[r].off, bsums);
                let dd = _mm256_mul_ps(pw[r].d, da);
                acc[r][t] = if AFFINE {
                    let a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(st), dd, acc[r][t]);
                    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mm), _mm256_mul_ps(pw[r].dm, da), a)
                } else {
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(st, mm)), dd, acc[r][t])
                };
            }
        }
    }
    let col = r0 - m.rows.start;
    for r in 0..M {
        for t in 0..N {
            m.out[(t0 + t) * m.out_stride + col + r] = super::hsum(acc[r][t]);
        }
    }
}

/// Rows `r0..r0 + 4` of F16 weights against f32 tokens `t0..t0 + N`: two rows per 512-bit
/// register (a row per half, widened from their eight halves together), each token's eight
/// values broadcast to both halves, so every row and token accumulates exactly the AVX2
/// tile's sequence of fused multiply-adds with half as many instructions; then the AVX2
/// tile's lane sums ([`drive::hsum4`]). Other shapes, and rows that are not whole blocks of
/// eight, run the AVX2 tile.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_f16<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize) {
    if M != 4 || !m.k.is_multiple_of(8) {
        return drive::tile::<F16, M, N>(m, r0, t0);
    }
    let nb = m.k / 8;
    let (rb, ab) = (m.row_bytes, m.act_bytes);
    let w0 = m.w.as_ptr().add(r0 * rb);
    let a0 = m.act.as_ptr().add(t0 * ab);
    let mut acc = [[_mm512_setzero_ps(); N]; 2];
    for b in 0..nb {
        let mut w = [_mm512_setzero_ps(); 2];
        for p in 0..2 {
            let lo = _mm_loadu_si128(w0.add(2 * p * rb + 16 * b) as *const __m128i);
            let hi = _mm_loadu_si128(w0.add((2 * p + 1) * rb + 16 * b) as *const __m128i);
            w[p] = _mm512_cvtph_ps(_mm256_set_m128i(hi, lo));
        }
        for t in 0..N {
            // vbroadcasti64x4 from memory (AVX-512 F; the f32x8 form needs DQ): a load.
            let a8 = _mm256_loadu_si256(a0.add(t * ab + 32 * b) as *const __m256i);
            let a = _mm512_castsi512_ps(_mm512_broadcast_i64x4(a8));
            for p in 0..2 {
                acc[p][t] = _mm512_fmadd_ps(w[p], a, acc[p][t]);
            }
        }
    }
    let col = r0 - m.rows.start;
    for t in 0..N {
        let (r0, r1) = halves(acc[0][t]);
        let (r2, r3) = halves(acc[1][t]);
        // In bounds: rows r0..r0 + 4 are in the range (MatmulArgs).
        _mm_storeu_ps(m.out.as_mut_ptr().add((t0 + t) * m.out_stride + col), drive::hsum4([r0, r1, r2, r3]));
    }
}

/// The register tiles of one format, as a function of the tile shape.
trait Tiles {
    /// Tokens per full tile (with 4 rows): 8, 6 or 3.
    const N: usize;
    unsafe fn tile<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize);
}

/// Rows in fours, tokens in `T::N` (3 or 6; smaller tiles at the edges); one token on the
/// AVX2 path.
#[inline(always)]
unsafe fn matmul<F: Fmt, T: Tiles>(m: &mut MatmulArgs<'_>) {
    if m.n < 2 {
        return drive::matmul::<F>(m);
    }
    let mut r = m.rows.start;
    while r + 4 <= m.rows.end {
        tokens::<T, 4>(m, r);
        r += 4;
    }
    while r < m.rows.end {
        tokens::<T, 1>(m, r);
        r += 1;
    }
}

#[inline(always)]
unsafe fn tokens<T: Tiles, const M: usize>(m: &mut MatmulArgs<'_>, r: usize) {
    let mut t = 0;
    if T::N == 8 {
        while t + 8 <= m.n {
            T::tile::<M, 8>(m, r, t);
            t += 8;
        }
    }
    if T::N >= 6 {
        while t + 6 <= m.n {
            T::tile::<M, 6>(m, r, t);
            t += 6;
        }
    }
    while t + 3 <= m.n {
        T::tile::<M, 3>(m, r, t);
        t += 3;
    }
    match m.n - t {
        2 => T::tile::<M, 2>(m, r, t),
        1 => T::tile::<M, 1>(m, r, t),
        _ => {}
    }
}

macro_rules! entries {
    ($($fmt:ident, $tile:ident, $affine:literal, $n:literal => $mm:ident;)*) => {$(
        /// # Safety
        /// `m` satisfies the bounds of [`MatmulArgs`]; AVX-512 F/BW/VNNI, AVX2, FMA, F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
        pub(super) unsafe fn $mm(m: &mut MatmulArgs<'_>) {
            struct T;
            impl Tiles for T {
                const N: usize = $n;
                #[inline(always)]
                unsafe fn tile<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize) {
                    $tile::<$fmt, $affine, M, N>(m, r0, t0)
                }
            }
            matmul::<$fmt, T>(m)
        }
    )*};
}

/// # Safety
/// `m` satisfies the bounds of [`MatmulArgs`]; AVX-512 F/BW/VNNI, AVX2, FMA, F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn matmul_f16(m: &mut MatmulArgs<'_>) {
    struct T;
    impl Tiles for T {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn tile<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize) {
            tile_f16::<M, N>(m, r0, t0)
        }
    }
    matmul::<F16, T>(m)
}

entries! {
    Q4_0, tile_l, false, 8 => matmul_q4_0;
    Q5_0, tile_l, false, 8 => matmul_q5_0;
    Q8_0, tile_l, false, 8 => matmul_q8_0;
    Q4_1, tile_l, true, 8 => matmul_q4_1;
    Q5_1, tile_l, true, 8 => matmul_q5_1;
    Q2K, tile_k, true, 6 => matmul_q2_k;
    Q3K, tile_k, false, 6 => matmul_q3_k;
    Q4K, tile_k, true, 6 => matmul_q4_k;
    Q5K, tile_k, true, 6 => matmul_q5_k;
    Q6K, tile_k, false, 6 => matmul_q6_k;
}
