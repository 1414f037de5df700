//! NEON kernels of the 32-value formats: Q4_0, Q5_0, Q8_0 against Q8_0 activations and
//! Q4_1, Q5_1 against Q8_1 activations.
//!
//! A weight block unpacks to two registers of 16 codes in element order, as signed bytes
//! (the bias removed for the `_0` types; the `_1` types' codes, 0..=31, are positive bytes),
//! its scale and minimum. The `_1` types add `m · s` with the activation block's `s = da · Σq`.

use std::arch::aarch64::*;

use super::{dot16, h2f, load, load_s, s8, Fmt};

/// An unpacked 32-value weight block.
#[derive(Clone, Copy)]
pub(super) struct LW {
    /// Codes 0..16 and 16..32.
    w: [int8x16_t; 2],
    /// Scale.
    d: f32,
    /// Minimum (`_1` types).
    m: f32,
}

/// An unpacked Q8_0 / Q8_1 activation block.
#[derive(Clone, Copy)]
pub(super) struct LA {
    q: [int8x16_t; 2],
    d: f32,
    /// `d · Σq` in lane 0, zeros elsewhere (Q8_1).
    s: float32x4_t,
}

/// The 32 nibbles of the 16 bytes at `p` in element order (low nibbles, then high).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    let x = load(p);
    [vandq_u8(x, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(x)]
}

/// `0x10` in byte `j` where bit `j` of the little-endian u32 at `p` is set.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> [uint8x16_t; 2] {
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bit = vld1q_u8(BIT.as_ptr());
    let lo = vtstq_u8(vcombine_u8(vdup_n_u8(*p), vdup_n_u8(*p.add(1))), bit);
    let hi = vtstq_u8(vcombine_u8(vdup_n_u8(*p.add(2)), vdup_n_u8(*p.add(3))), bit);
    let h = vdupq_n_u8(0x10);
    [vandq_u8(lo, h), vandq_u8(hi, h)]
}

#[inline(always)]
unsafe fn dot_signed<const DP: bool>(w: &LW, a: &LA, acc: float32x4_t) -> float32x4_t {
    let i = dot16::<DP>(dot16::<DP>(vdupq_n_s32(0), w.w[0], a.q[0]), w.w[1], a.q[1]);
    vfmaq_n_f32(acc, vcvtq_f32_s32(i), w.d * a.d)
}

#[inline(always)]
unsafe fn dot_unsigned<const DP: bool>(w: &LW, a: &LA, acc: float32x4_t) -> float32x4_t {
    let acc = dot_signed::<DP>(w, a, acc);
    vfmaq_n_f32(acc, a.s, w.m)
}

#[inline(always)]
unsafe fn pa_q8_0(p: *const u8) -> LA {
    LA { q: [load_s(p.add(2)), load_s(p.add(18))], d: h2f(p), s: vdupq_n_f32(0.0) }
}

#[inline(always)]
unsafe fn pa_q8_1(p: *const u8) -> LA {
    let s = h2f(p.add(2));
    LA { q: [load_s(p.add(4)), load_s(p.add(20))], d: h2f(p), s: vsetq_lane_f32::<0>(s, vdupq_n_f32(0.0)) }
}

pub(super) struct Q4_0<const DP: bool>;
pub(super) struct Q5_0<const DP: bool>;
pub(super) struct Q8_0<const DP: bool>;
pub(super) struct Q4_1<const DP: bool>;
pub(super) struct Q5_1<const DP: bool>;

// SAFETY (all five): `pw`/`pa` read exactly one block at their pointers; an all-zero `LW` is
// valid; `dot16::<true>` is only reached with `DP`, which the dotprod entry points set.
unsafe impl<const DP: bool> Fmt for Q4_0<DP> {
    const BLOCK: usize = 32;
    const W: usize = 18;
    const A: usize = 34;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        let [lo, hi] = nibbles(p.add(2));
        let eight = vdupq_n_s8(8);
        LW { w: [vsubq_s8(s8(lo), eight), vsubq_s8(s8(hi), eight)], d: h2f(p), m: 0.0 }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_0(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: float32x4_t) -> float32x4_t {
        dot_signed::<DP>(w, a, acc)
    }
}

unsafe impl<const DP: bool> Fmt for Q5_0<DP> {
    const BLOCK: usize = 32;
    const W: usize = 22;
    const A: usize = 34;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        let [lo, hi] = nibbles(p.add(6));
        let [hlo, hhi] = fifth_bits(p.add(2));
        let sixteen = vdupq_n_s8(16);
        let w = [vsubq_s8(s8(vorrq_u8(lo, hlo)), sixteen), vsubq_s8(s8(vorrq_u8(hi, hhi)), sixteen)];
        LW { w, d: h2f(p), m: 0.0 }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_0(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: float32x4_t) -> float32x4_t {
        dot_signed::<DP>(w, a, acc)
    }
}

unsafe impl<const DP: bool> Fmt for Q8_0<DP> {
    const BLOCK: usize = 32;
    const W: usize = 34;
    const A: usize = 34;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        LW { w: [load_s(p.add(2)), load_s(p.add(18))], d: h2f(p), m: 0.0 }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_0(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: float32x4_t) -> float32x4_t {
        dot_signed::<DP>(w, a, acc)
    }
}

unsafe impl<const DP: bool> Fmt for Q4_1<DP> {
    const BLOCK: usize = 32;
    const W: usize = 20;
    const A: usize = 36;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        let [lo, hi] = nibbles(p.add(4));
        LW { w: [s8(lo), s8(hi)], d: h2f(p), m: h2f(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_1(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: float32x4_t) -> float32x4_t {
        dot_unsigned::<DP>(w, a, acc)
    }
}

unsafe impl<const DP: bool> Fmt for Q5_1<DP> {
    const BLOCK: usize = 32;
    const W: usize = 24;
    const A: usize = 36;
    const UNROLL: usize = 4;
    type Pw = LW;
    type Pa = LA;
    #[inline(always)]
    unsafe fn pw(p: *const u8) -> LW {
        let [lo, hi] = nibbles(p.add(8));
        let [hlo, hhi] = fifth_bits(p.add(4));
        LW { w: [s8(vorrq_u8(lo, hlo)), s8(vorrq_u8(hi, hhi))], d: h2f(p), m: h2f(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn pa(p: *const u8) -> LA {
        pa_q8_1(p)
    }
    #[inline(always)]
    unsafe fn dot(w: &LW, a: &LA, acc: float32x4_t) -> float32x4_t {
        dot_unsigned::<DP>(w, a, acc)
    }
}
