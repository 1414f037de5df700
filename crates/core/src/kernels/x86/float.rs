//! AVX2 kernels of the float weights (F32, F16, BF16) against f32 activations: eight values
//! per "block", widened to f32 and fused-multiply-added; a scalar tail for rows that are not
//! a multiple of eight.

use std::arch::x86_64::*;

use super::{drive, Fmt};
use crate::kernels::MatmulArgs;
use crate::quant::read_f16;

#[inline(always)]
unsafe fn f32_at(p: *const u8, i: usize) -> f32 {
    (p as *const f32).add(i).read_unaligned()
}

pub(super) struct F32;
pub(super) struct F16;
pub(super) struct BF16;

// SAFETY (all three): `pw`/`pa` read exactly eight values at their pointers, `tail` `n` values;
// an all-zero `__m256` is valid.
unsafe impl Fmt for F32 {
    const BLOCK: usize = 8;
    const W: usize = 32;
    const A: usize = 32;
    const UNROLL: usize = 4;
    type Pw = __m256;
    type Pa = __m256;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn dot(w: &__m256, a: &__m256, acc: __m256) -> __m256 {
        _mm256_fmadd_ps(*w, *a, acc)
    }
    #[inline(always)]
    unsafe fn tail(w: *const u8, a: *const u8, n: usize) -> f32 {
        (0..n).fold(0.0, |s, i| s + f32_at(w, i) * f32_at(a, i))
    }
}

unsafe impl Fmt for F16 {
    const BLOCK: usize = 8;
    const W: usize = 16;
    const A: usize = 32;
    const UNROLL: usize = 4;
    type Pw = __m256;
    type Pa = __m256;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn dot(w: &__m256, a: &__m256, acc: __m256) -> __m256 {
        _mm256_fmadd_ps(*w, *a, acc)
    }
    #[inline(always)]
    unsafe fn tail(w: *const u8, a: *const u8, n: usize) -> f32 {
        let w = std::slice::from_raw_parts(w, 2 * n);
        (0..n).fold(0.0, |s, i| s + read_f16(w, 2 * i) * f32_at(a, i))
    }
}

unsafe impl Fmt for BF16 {
    const BLOCK: usize = 8;
    const W: usize = 16;
    const A: usize = 32;
    const UNROLL: usize = 4;
    type Pw = __m256;
    type Pa = __m256;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> __m256 {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn dot(w: &__m256, a: &__m256, acc: __m256) -> __m256 {
        _mm256_fmadd_ps(*w, *a, acc)
    }
    #[inline(always)]
    unsafe fn tail(w: *const u8, a: *const u8, n: usize) -> f32 {
        (0..n).fold(0.0, |s, i| {
            let h = (w as *const u16).add(i).read_unaligned();
            s + f32::from_bits((h as u32) << 16) * f32_at(a, i)
        })
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
    F32 => vec_dot_f32, matmul_f32;
    F16 => vec_dot_f16, matmul_f16;
    BF16 => vec_dot_bf16, matmul_bf16;
}
