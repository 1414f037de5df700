//! NEON kernels of the float weights (F32, F16, BF16) against f32 activations: four values
//! per "block", widened to f32 and fused-multiply-added; a scalar tail for the rest.

use std::arch::aarch64::*;

use super::{drive, widen_f16, Fmt};
use crate::kernels::MatmulArgs;
use crate::quant::read_f16;

#[inline(always)]
unsafe fn f32_at(p: *const u8, i: usize) -> f32 {
    (p as *const f32).add(i).read_unaligned()
}

pub(super) struct F32;
pub(super) struct F16;
pub(super) struct BF16;

// SAFETY (all three): `pw`/`pa` read exactly four values at their pointers, `tail` `n`
// values; an all-zero `float32x4_t` is valid.
unsafe impl Fmt for F32 {
    const BLOCK: usize = 4;
    const W: usize = 16;
    const A: usize = 16;
    const UNROLL: usize = 4;
    type Pw = float32x4_t;
    type Pa = float32x4_t;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> float32x4_t {
        vld1q_f32(p as *const f32)
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> float32x4_t {
        vld1q_f32(p as *const f32)
    }
    #[inline(always)]
    unsafe fn dot(w: &float32x4_t, a: &float32x4_t, acc: float32x4_t) -> float32x4_t {
        vfmaq_f32(acc, *w, *a)
    }
    #[inline(always)]
    unsafe fn tail(w: *const u8, a: *const u8, n: usize) -> f32 {
        (0..n).fold(0.0, |s, i| s + f32_at(w, i) * f32_at(a, i))
    }
}

unsafe impl Fmt for F16 {
    const BLOCK: usize = 4;
    const W: usize = 8;
    const A: usize = 16;
    const UNROLL: usize = 4;
    type Pw = float32x4_t;
    type Pa = float32x4_t;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> float32x4_t {
        widen_f16(vld1_u16(p as *const u16))
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> float32x4_t {
        vld1q_f32(p as *const f32)
    }
    #[inline(always)]
    unsafe fn dot(w: &float32x4_t, a: &float32x4_t, acc: float32x4_t) -> float32x4_t {
        vfmaq_f32(acc, *w, *a)
    }
    #[inline(always)]
    unsafe fn tail(w: *const u8, a: *const u8, n: usize) -> f32 {
        let w = std::slice::from_raw_parts(w, 2 * n);
        (0..n).fold(0.0, |s, i| s + read_f16(w, 2 * i) * f32_at(a, i))
    }
}

unsafe impl Fmt for BF16 {
    const BLOCK: usize = 4;
    const W: usize = 8;
    const A: usize = 16;
    const UNROLL: usize = 4;
    type Pw = float32x4_t;
    type Pa = float32x4_t;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> float32x4_t {
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p as *const u16)))
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> float32x4_t {
        vld1q_f32(p as *const f32)
    }
    #[inline(always)]
    unsafe fn dot(w: &float32x4_t, a: &float32x4_t, acc: float32x4_t) -> float32x4_t {
        vfmaq_f32(acc, *w, *a)
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
        /// Rows of exactly `k` values of their formats; NEON.
        #[target_feature(enable = "neon")]
        pub(super) unsafe fn $vd(w: &[u8], a: &[u8], k: usize) -> f32 {
            drive::vec_dot::<$fmt>(w, a, k)
        }
        /// # Safety
        /// `m` satisfies the bounds of [`MatmulArgs`]; NEON.
        #[target_feature(enable = "neon")]
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
