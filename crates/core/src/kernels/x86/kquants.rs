//! AVX2 kernels of the k-quants against Q8_K activations.
//!
//! Every k-quant super-block unpacks into the canonical form of the oracle (see
//! `generic::KBlock`): 256 unsigned codes in element order (eight registers), an i16 scale
//! per 16-value group laid out for `vpmaddwd` (register `j` holds the scales of groups `2j`
//! and `2j + 1` over its low and high eight i16 lanes, matching the `vpmaddubsw` output of 32
//! codes), one register of 16 i16 offsets, and the float scales. One dot product then is
//! eight `vpmaddubsw` + `vpmaddwd` + add, one `vpmaddwd` of the offsets with the activation
//! block's group sums, and two float multiply-adds.

use std::arch::x86_64::*;

use super::{drive, h2f_splat, hsum, load, load128, Fmt};
use crate::kernels::MatmulArgs;

/// An unpacked k-quant super-block.
#[derive(Clone, Copy)]
pub(super) struct KW {
    /// Codes 32·j .. 32·j + 32, unsigned (≤ 63).
    pub(super) u: [__m256i; 8],
    /// Scales of groups 2j (lanes 0..8) and 2j + 1 (lanes 8..16), i16.
    pub(super) sc: [__m256i; 8],
    /// Offset of each group, i16.
    pub(super) off: __m256i,
    /// Scale of `sc · u`, broadcast.
    pub(super) d: __m256,
    /// Scale of the offsets (`d` for the symmetric types), broadcast.
    pub(super) dm: __m256,
}

/// An unpacked Q8_K block: codes stay in memory (read once per weight block).
#[derive(Clone, Copy)]
pub(super) struct KA {
    p: *const u8,
    bsums: __m256i,
    d: __m256,
}

#[inline(always)]
unsafe fn pa_q8_k(p: *const u8) -> KA {
    KA { p: p.add(4), bsums: load(p.add(260)), d: _mm256_set1_ps((p as *const f32).read_unaligned()) }
}

/// `d·da·Σ sc·Σu·q − dm·da·Σ off·bsum` (the symmetric types subtract in integers first).
#[inline(always)]
unsafe fn kdot<const AFFINE: bool>(w: &KW, a: &KA, acc: __m256) -> __m256 {
    let mut s = _mm256_setzero_si256();
    for j in 0..8 {
        let q = load(a.p.add(32 * j));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(w.u[j], q), w.sc[j]));
    }
    let m = _mm256_madd_epi16(w.off, a.bsums);
    if AFFINE {
        let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(w.d, a.d), acc);
        _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(w.dm, a.d), acc)
    } else {
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(s, m)), _mm256_mul_ps(w.d, a.d), acc)
    }
}

/// A register tile of k-quant rows `r0..r0 + M` against tokens `t0..t0 + N`: per super-block,
/// the `M` weight blocks are unpacked once (to the stack), then for each 32-value slice `j`
/// the `N` activation slices are loaded once and every (row, token) pair adds
/// `vpmaddwd(vpmaddubsw(u, q), sc)` into an integer accumulator; the offsets and float
/// scales are applied once per super-block and pair. One row and one token is the fused
/// [`drive::tile`] (the unpacked block stays in registers).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_k<F: Fmt<Pw = KW, Pa = KA>, const AFFINE: bool, const M: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    r0: usize,
    t0: usize,
) {
    if M == 1 && N == 1 {
        return drive::tile::<F, M, N>(m, r0, t0);
    }
    let nb = m.k / 256;
    let (rb, ab) = (m.row_bytes, m.act_bytes);
    let w0 = m.w.as_ptr().add(r0 * rb);
    let a0 = m.act.as_ptr().add(t0 * ab);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    // SAFETY (of the zeroed value): all-zero is a valid `KW`.
    let mut pw: [KW; M] = std::mem::zeroed();
    for b in 0..nb {
        for (r, pw) in pw.iter_mut().enumerate() {
            *pw = F::pw(w0.add(r * rb + b * F::W));
        }
        let ap = |t: usize| a0.add(t * ab + b * 292);
        let mut s = [[_mm256_setzero_si256(); N]; M];
        for j in 0..8 {
            let mut q = [_mm256_setzero_si256(); N];
            for t in 0..N {
                q[t] = load(ap(t).add(4 + 32 * j));
            }
            for r in 0..M {
                let u = pw[r].u[j];
                for t in 0..N {
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, q[t]), pw[r].sc[j]);
                    s[r][t] = _mm256_add_epi32(s[r][t], p);
                }
            }
        }
        for t in 0..N {
            let bsums = load(ap(t).add(260));
            let da = _mm256_set1_ps((ap(t) as *const f32).read_unaligned());
            for r in 0..M {
                let mm = _mm256_madd_epi16(pw[r].off, bsums);
                let dd = _mm256_mul_ps(pw[r].d, da);
                acc[r][t] = if AFFINE {
                    let a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r][t]), dd, acc[r][t]);
                    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mm), _mm256_mul_ps(pw[r].dm, da), a)
                } else {
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(s[r][t], mm)), dd, acc[r][t])
                };
            }
        }
    }
    let col = r0 - m.rows.start;
    for (r, acc) in acc.iter().enumerate() {
        for (t, &v) in acc.iter().enumerate() {
            m.out[(t0 + t) * m.out_stride + col + r] = hsum(v);
        }
    }
}

/// The eight `vpmaddwd` scale registers from 16 per-group scales (signed bytes).
#[inline(always)]
unsafe fn scale_regs(s: __m128i) -> [__m256i; 8] {
    let mut out = [_mm256_setzero_si256(); 8];
    for (j, o) in out.iter_mut().enumerate() {
        let (lo, hi) = ((2 * j) as i8, (2 * j + 1) as i8);
        let pick = _mm_setr_epi8(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi);
        *o = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s, pick));
    }
    out
}

/// Bytes shifted right by `n` bits, masked to `mask`.
#[inline(always)]
unsafe fn shr_mask(x: __m256i, n: i32, mask: i8) -> __m256i {
    _mm256_and_si256(_mm256_srl_epi16(x, _mm_cvtsi32_si128(n)), _mm256_set1_epi8(mask))
}

#[inline(always)]
unsafe fn read_u32(p: *const u8) -> u32 {
    (p as *const u32).read_unaligned()
}

/// Scales and minimums of Q4_K/Q5_K (the 12 bytes at `p`), each repeated for both 16-value
/// halves of its 32-value sub-block: (scale registers, offsets).
#[inline(always)]
unsafe fn k4_scales(p: *const u8) -> ([__m256i; 8], __m256i) {
    let (w0, w1, w2) = (read_u32(p), read_u32(p.add(4)), read_u32(p.add(8)));
    // Sub-blocks 0..4: low six bits of bytes 0..4 (scales) and 4..8 (mins); 4..8: nibbles of
    // bytes 8..12 with the top two bits of bytes 0..4 (scales) and 4..8 (mins) above them.
    let sc_lo = w0 & 0x3f3f_3f3f;
    let m_lo = w1 & 0x3f3f_3f3f;
    let sc_hi = (w2 & 0x0f0f_0f0f) | (((w0 >> 6) & 0x0303_0303) << 4);
    let m_hi = ((w2 >> 4) & 0x0f0f_0f0f) | (((w1 >> 6) & 0x0303_0303) << 4);
    let sc8 = _mm_set_epi32(0, 0, sc_hi as i32, sc_lo as i32);
    let m8 = _mm_set_epi32(0, 0, m_hi as i32, m_lo as i32);
    let sc16 = _mm_unpacklo_epi8(sc8, sc8);
    let m16 = _mm_unpacklo_epi8(m8, m8);
    (scale_regs(sc16), _mm256_cvtepu8_epi16(m16))
}

/// The 256 nibbles of the 128 bytes at `p` in Q4_K order: byte `32·p + l` holds element
/// `64·p + l` (low) and `64·p + 32 + l` (high).
#[inline(always)]
unsafe fn k4_codes(p: *const u8) -> [__m256i; 8] {
    let mut u = [_mm256_setzero_si256(); 8];
    let mask = _mm256_set1_epi8(0x0f);
    for i in 0..4 {
        let x = load(p.add(32 * i));
        u[2 * i] = _mm256_and_si256(x, mask);
        u[2 * i + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask);
    }
    u
}

/// Codes 2-bit packed as Q2_K/Q3_K store them: element `32·j + m` is bits `2·(j % 4)` of
/// byte `32·(j / 4) + m` of the 64 bytes at `p`.
#[inline(always)]
unsafe fn crumbs(p: *const u8) -> [__m256i; 8] {
    let mut u = [_mm256_setzero_si256(); 8];
    for (j, u) in u.iter_mut().enumerate() {
        *u = shr_mask(load(p.add(32 * (j / 4))), 2 * (j % 4) as i32, 3);
    }
    u
}

pub(super) struct Q2K;
pub(super) struct Q3K;
pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;

// SAFETY (all five): `pw`/`pa` read exactly one block at their pointers; an all-zero `KW`
// is valid.
unsafe impl Fmt for Q2K {
    const MV_ROWS: usize = 1;
    #[inline(always)]
    unsafe fn tile<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize) {
        tile_k::<Self, true, M, N>(m, r0, t0)
    }
    const BLOCK: usize = 256;
    const W: usize = 84;
    const A: usize = 292;
    const UNROLL: usize = 1;
    type Pw = KW;
    type Pa = KA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> KW {
        let s = load128(p);
        let nib = _mm_set1_epi8(0x0f);
        let sc = _mm_and_si128(s, nib);
        let m = _mm_and_si128(_mm_srli_epi16::<4>(s), nib);
        KW {
            u: crumbs(p.add(16)),
            sc: scale_regs(sc),
            off: _mm256_cvtepu8_epi16(m),
            d: h2f_splat(p.add(80)),
            dm: h2f_splat(p.add(82)),
        }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> KA {
        pa_q8_k(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &KW, a: &KA, acc: __m256) -> __m256 {
        kdot::<true>(w, a, acc)
    }
}

unsafe impl Fmt for Q3K {
    const MV_ROWS: usize = 1;
    #[inline(always)]
    unsafe fn tile<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize) {
        tile_k::<Self, false, M, N>(m, r0, t0)
    }
    const BLOCK: usize = 256;
    const W: usize = 110;
    const A: usize = 292;
    const UNROLL: usize = 1;
    type Pw = KW;
    type Pa = KA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> KW {
        let mut u = crumbs(p.add(32));
        let hmask = load(p);
        for (j, u) in u.iter_mut().enumerate() {
            // Element 32·j + m has its "no −4" bit at bit j of hmask[m].
            let h = _mm256_slli_epi16::<2>(shr_mask(hmask, j as i32, 1));
            *u = _mm256_or_si256(*u, h);
        }
        // Sixteen 6-bit scales: four bits from bytes 0..8 (groups 0..8 low nibbles, 8..16 high
        // nibbles), two from bytes 8..12 (group g at bits 2·(g / 4) of byte 8 + g % 4).
        let s = p.add(96);
        let (a0, a1, a2) = (read_u32(s), read_u32(s.add(4)), read_u32(s.add(8)));
        let g0 = (a0 & 0x0f0f_0f0f) | ((a2 & 0x0303_0303) << 4);
        let g1 = (a1 & 0x0f0f_0f0f) | (((a2 >> 2) & 0x0303_0303) << 4);
        let g2 = ((a0 >> 4) & 0x0f0f_0f0f) | (((a2 >> 4) & 0x0303_0303) << 4);
        let g3 = ((a1 >> 4) & 0x0f0f_0f0f) | (((a2 >> 6) & 0x0303_0303) << 4);
        let raw = _mm_set_epi32(g3 as i32, g2 as i32, g1 as i32, g0 as i32);
        let sc = _mm_sub_epi8(raw, _mm_set1_epi8(32));
        let d = h2f_splat(p.add(108));
        KW { u, sc: scale_regs(sc), off: _mm256_slli_epi16::<2>(_mm256_cvtepi8_epi16(sc)), d, dm: d }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> KA {
        pa_q8_k(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &KW, a: &KA, acc: __m256) -> __m256 {
        kdot::<false>(w, a, acc)
    }
}

unsafe impl Fmt for Q4K {
    const MV_ROWS: usize = 1;
    #[inline(always)]
    unsafe fn tile<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize) {
        tile_k::<Self, true, M, N>(m, r0, t0)
    }
    const BLOCK: usize = 256;
    const W: usize = 144;
    const A: usize = 292;
    const UNROLL: usize = 1;
    type Pw = KW;
    type Pa = KA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> KW {
        let (sc, off) = k4_scales(p.add(4));
        KW { u: k4_codes(p.add(16)), sc, off, d: h2f_splat(p), dm: h2f_splat(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> KA {
        pa_q8_k(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &KW, a: &KA, acc: __m256) -> __m256 {
        kdot::<true>(w, a, acc)
    }
}

unsafe impl Fmt for Q5K {
    const MV_ROWS: usize = 1;
    #[inline(always)]
    unsafe fn tile<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize) {
        tile_k::<Self, true, M, N>(m, r0, t0)
    }
    const BLOCK: usize = 256;
    const W: usize = 176;
    const A: usize = 292;
    const UNROLL: usize = 1;
    type Pw = KW;
    type Pa = KA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> KW {
        let (sc, off) = k4_scales(p.add(4));
        let mut u = k4_codes(p.add(48));
        let qh = load(p.add(16));
        for (j, u) in u.iter_mut().enumerate() {
            // Element 32·j + m has its fifth bit at bit j of qh[m].
            let h = _mm256_slli_epi16::<4>(shr_mask(qh, j as i32, 1));
            *u = _mm256_or_si256(*u, h);
        }
        KW { u, sc, off, d: h2f_splat(p), dm: h2f_splat(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> KA {
        pa_q8_k(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &KW, a: &KA, acc: __m256) -> __m256 {
        kdot::<true>(w, a, acc)
    }
}

unsafe impl Fmt for Q6K {
    const MV_ROWS: usize = 1;
    #[inline(always)]
    unsafe fn tile<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize) {
        tile_k::<Self, false, M, N>(m, r0, t0)
    }
    const BLOCK: usize = 256;
    const W: usize = 210;
    const A: usize = 292;
    const UNROLL: usize = 1;
    type Pw = KW;
    type Pa = KA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> KW {
        let mut u = [_mm256_setzero_si256(); 8];
        let lo4 = _mm256_set1_epi8(0x0f);
        let lo2 = _mm256_set1_epi8(3);
        for h in 0..2 {
            let ql0 = load(p.add(64 * h));
            let ql1 = load(p.add(64 * h + 32));
            let qh = load(p.add(128 + 32 * h));
            let h0 = _mm256_and_si256(qh, lo2);
            let h1 = _mm256_and_si256(_mm256_srli_epi16::<2>(qh), lo2);
            let h2 = _mm256_and_si256(_mm256_srli_epi16::<4>(qh), lo2);
            let h3 = _mm256_and_si256(_mm256_srli_epi16::<6>(qh), lo2);
            let l0 = _mm256_and_si256(ql0, lo4);
            let l1 = _mm256_and_si256(ql1, lo4);
            let l2 = _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), lo4);
            let l3 = _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), lo4);
            u[4 * h] = _mm256_or_si256(l0, _mm256_slli_epi16::<4>(h0));
            u[4 * h + 1] = _mm256_or_si256(l1, _mm256_slli_epi16::<4>(h1));
            u[4 * h + 2] = _mm256_or_si256(l2, _mm256_slli_epi16::<4>(h2));
            u[4 * h + 3] = _mm256_or_si256(l3, _mm256_slli_epi16::<4>(h3));
        }
        let sc = load128(p.add(192));
        let d = h2f_splat(p.add(208));
        KW { u, sc: scale_regs(sc), off: _mm256_slli_epi16::<5>(_mm256_cvtepi8_epi16(sc)), d, dm: d }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> KA {
        pa_q8_k(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &KW, a: &KA, acc: __m256) -> __m256 {
        kdot::<false>(w, a, acc)
    }
}

macro_rules! entries {
    ($($fmt:ty => $vd:ident, $mm:ident;)*) => {$(
        /// # Safety
        /// Rows of exactly `k` values of their formats; AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $vd(w: &[u8], a: &[u8], k: usize) -> f32 {
            drive::vec_dot::<$fmt>(w, a, k)
        }
        /// # Safety
        /// `m` satisfies the bounds of [`MatmulArgs`]; AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $mm(m: &mut MatmulArgs<'_>) {
            drive::matmul::<$fmt>(m)
        }
    )*};
}

entries! {
    Q2K => vec_dot_q2_k, matmul_q2_k;
    Q3K => vec_dot_q3_k, matmul_q3_k;
    Q4K => vec_dot_q4_k, matmul_q4_k;
    Q5K => vec_dot_q5_k, matmul_q5_k;
    Q6K => vec_dot_q6_k, matmul_q6_k;
}
