//! AVX2 kernels of the 32-value formats: Q4_0, Q5_0, Q8_0 against Q8_0 activations and
//! Q4_1, Q5_1 against Q8_1 activations.
//!
//! A weight block unpacks to 32 bytes of codes in element order plus its scale (and minimum).
//! Signed codes (`_0` types) keep their magnitudes for `vpmaddubsw` and lend their signs to
//! the activations; unsigned codes (`_1` types, 0..=31) go in directly and the minimum adds
//! `m · s` with the activation block's stored `s = da · Σq`.

use std::arch::x86_64::*;

use super::{dot_u8i8, drive, h2f, h2f_splat, load, load128, Fmt};
use crate::kernels::MatmulArgs;

/// An unpacked 32-value weight block.
#[derive(Clone, Copy)]
pub(super) struct LW {
    /// Codes in element order: signed for the `_0` types, unsigned for the `_1` types.
    pub(super) w: __m256i,
    /// `|w|` (signed types only).
    aw: __m256i,
    /// Scale, broadcast.
    pub(super) d: __m256,
    /// Minimum, broadcast (`_1` types only).
    pub(super) m: __m256,
}

/// An unpacked Q8_0 / Q8_1 activation block.
#[derive(Clone, Copy)]
pub(super) struct LA {
    /// Codes.
    pub(super) q: __m256i,
    /// Scale, broadcast.
    pub(super) d: __m256,
    /// `d · Σq` in lane 0, zeros elsewhere (Q8_1 only).
    pub(super) s: __m256,
}

/// The 32 nibbles of the 16 bytes at `p` in element order: low nibbles (elements 0..16),
/// then high nibbles (16..32). A broadcast load and a per-half shift (no shuffle-port work).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let x = _mm256_broadcastsi128_si256(load128(p));
    let x = _mm256_srlv_epi32(x, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(x, _mm256_set1_epi8(0x0f))
}

/// `0x10` in byte `j` where bit `j` of the little-endian u32 at `p` is set, else 0.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let qh = (p as *const i32).read_unaligned();
    #[rustfmt::skip]
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

#[inline(always)]
unsafe fn signed(w: __m256i, d: __m256) -> LW {
    LW { w, aw: _mm256_abs_epi8(w), d, m: _mm256_setzero_ps() }
}

#[inline(always)]
unsafe fn dot_signed(w: &LW, a: &LA, acc: __m256) -> __m256 {
    let p = dot_u8i8(w.aw, _mm256_sign_epi8(a.q, w.w));
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(w.d, a.d), acc)
}

#[inline(always)]
unsafe fn dot_unsigned(w: &LW, a: &LA, acc: __m256) -> __m256 {
    let p = dot_u8i8(w.w, a.q);
    let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(w.d, a.d), acc);
    _mm256_fmadd_ps(w.m, a.s, acc)
}

#[inline(always)]
unsafe fn pa_q8_0(p: *const u8) -> LA {
    LA { q: load(p.add(2)), d: h2f_splat(p), s: _mm256_setzero_ps() }
}

#[inline(always)]
unsafe fn pa_q8_1(p: *const u8) -> LA {
    let s = _mm256_set_ps(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, h2f(p.add(2)));
    LA { q: load(p.add(4)), d: h2f_splat(p), s }
}

pub(super) struct Q4_0;
pub(super) struct Q5_0;
pub(super) struct Q8_0;
pub(super) struct Q4_1;
pub(super) struct Q5_1;

// SAFETY (all five): `pw`/`pa` read exactly one block at their pointers; an all-zero `LW` is
// valid.
unsafe impl Fmt for Q4_0 {
    const BLOCK: usize = 32;
    const W: usize = 18;
    const A: usize = 34;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        signed(_mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)), h2f_splat(p))
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_0(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: __m256) -> __m256 {
        dot_signed(w, a, acc)
    }
}

unsafe impl Fmt for Q5_0 {
    const BLOCK: usize = 32;
    const W: usize = 22;
    const A: usize = 34;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        let u = _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2)));
        signed(_mm256_sub_epi8(u, _mm256_set1_epi8(16)), h2f_splat(p))
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_0(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: __m256) -> __m256 {
        dot_signed(w, a, acc)
    }
}

unsafe impl Fmt for Q8_0 {
    const BLOCK: usize = 32;
    const W: usize = 34;
    const A: usize = 34;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        // A code of −128 (never written by the reference quantizer) still works: its
        // magnitude 128 is exact as an unsigned byte.
        signed(load(p.add(2)), h2f_splat(p))
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_0(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: __m256) -> __m256 {
        dot_signed(w, a, acc)
    }
}

unsafe impl Fmt for Q4_1 {
    const BLOCK: usize = 32;
    const W: usize = 20;
    const A: usize = 36;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        let w = nibbles(p.add(4));
        LW { w, aw: w, d: h2f_splat(p), m: h2f_splat(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_1(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: __m256) -> __m256 {
        dot_unsigned(w, a, acc)
    }
}

unsafe impl Fmt for Q5_1 {
    const BLOCK: usize = 32;
    const W: usize = 24;
    const A: usize = 36;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        let w = _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4)));
        LW { w, aw: w, d: h2f_splat(p), m: h2f_splat(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_1(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: __m256) -> __m256 {
        dot_unsigned(w, a, acc)
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
    Q4_0 => vec_dot_q4_0, matmul_q4_0;
    Q5_0 => vec_dot_q5_0, matmul_q5_0;
    Q8_0 => vec_dot_q8_0, matmul_q8_0;
    Q4_1 => vec_dot_q4_1, matmul_q4_1;
    Q5_1 => vec_dot_q5_1, matmul_q5_1;
}
