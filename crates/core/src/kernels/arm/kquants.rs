//! NEON kernels of the k-quants against Q8_K activations.
//!
//! Every super-block unpacks into the oracle's canonical form (`generic::KBlock`): 256
//! unsigned codes (≤ 63, so valid signed bytes) in element order, one register per 16-value
//! group, an integer scale and offset per group, and the float scales. The dot product is,
//! per group, one [`dot16`] and one multiply-accumulate by the group's scale; the offsets meet
//! the activation block's group sums in widening multiply-adds.

use std::arch::aarch64::*;

use super::{dot16, h2f, load, s8, Fmt};
use crate::kernels::generic::q3k_scale;
use crate::quant::scale_min_k4;

/// An unpacked k-quant super-block.
#[derive(Clone, Copy)]
pub(super) struct KW {
    /// Codes of group `g` (values 16·g .. 16·g + 16).
    u: [int8x16_t; 16],
    /// Scale of each group.
    sc: [i32; 16],
    /// Offset of each group (groups 0..8, 8..16).
    off: [int16x8_t; 2],
    /// Scale of `sc · u`.
    d: f32,
    /// Scale of the offsets (`d` for the symmetric types).
    dm: f32,
}

/// An unpacked Q8_K block: codes stay in memory.
#[derive(Clone, Copy)]
pub(super) struct KA {
    p: *const u8,
    bsums: [int16x8_t; 2],
    d: f32,
}

#[inline(always)]
unsafe fn pa_q8_k(p: *const u8) -> KA {
    let bs = p.add(260) as *const i16;
    KA { p: p.add(4), bsums: [vld1q_s16(bs), vld1q_s16(bs.add(8))], d: (p as *const f32).read_unaligned() }
}

#[inline(always)]
unsafe fn kdot<const DP: bool, const AFFINE: bool>(w: &KW, a: &KA, acc: float32x4_t) -> float32x4_t {
    let mut s = vdupq_n_s32(0);
    for g in 0..16 {
        let q = vld1q_s8(a.p.add(16 * g) as *const i8);
        s = vmlaq_n_s32(s, dot16::<DP>(vdupq_n_s32(0), w.u[g], q), w.sc[g]);
    }
    let m = vmull_s16(vget_low_s16(w.off[0]), vget_low_s16(a.bsums[0]));
    let m = vmlal_high_s16(m, w.off[0], a.bsums[0]);
    let m = vmlal_s16(m, vget_low_s16(w.off[1]), vget_low_s16(a.bsums[1]));
    let m = vmlal_high_s16(m, w.off[1], a.bsums[1]);
    if AFFINE {
        let acc = vfmaq_n_f32(acc, vcvtq_f32_s32(s), w.d * a.d);
        vfmsq_f32(acc, vcvtq_f32_s32(m), vdupq_n_f32(w.dm * a.d))
    } else {
        vfmaq_n_f32(acc, vcvtq_f32_s32(vsubq_s32(s, m)), w.d * a.d)
    }
}

/// Bytes shifted right by `n` bits (`n` < 8), masked to `mask`.
#[inline(always)]
unsafe fn shr_mask(x: uint8x16_t, n: i32, mask: u8) -> uint8x16_t {
    vandq_u8(vshlq_u8(x, vdupq_n_s8(-(n as i8))), vdupq_n_u8(mask))
}

/// 16 i16 offsets into two registers.
#[inline(always)]
unsafe fn offsets(off: &[i16; 16]) -> [int16x8_t; 2] {
    [vld1q_s16(off.as_ptr()), vld1q_s16(off.as_ptr().add(8))]
}

/// The low two bits of the codes packed as Q2_K/Q3_K store them (element `32·j + m` at bits
/// `2·(j % 4)` of byte `32·(j / 4) + m` of the 64 bytes at `p`).
#[inline(always)]
unsafe fn crumbs(p: *const u8) -> [uint8x16_t; 16] {
    let mut u = [vdupq_n_u8(0); 16];
    for (g, u) in u.iter_mut().enumerate() {
        let j = g / 2;
        *u = shr_mask(load(p.add(32 * (j / 4) + 16 * (g % 2))), 2 * (j % 4) as i32, 3);
    }
    u
}

/// Q4_K/Q5_K nibbles (the 128 bytes at `p`: byte `32·i + l` holds element `64·i + l` low and
/// `64·i + 32 + l` high).
#[inline(always)]
unsafe fn k4_codes(p: *const u8) -> [uint8x16_t; 16] {
    let mut u = [vdupq_n_u8(0); 16];
    let mask = vdupq_n_u8(0x0f);
    for i in 0..4 {
        let (x0, x1) = (load(p.add(32 * i)), load(p.add(32 * i + 16)));
        u[4 * i] = vandq_u8(x0, mask);
        u[4 * i + 1] = vandq_u8(x1, mask);
        u[4 * i + 2] = vshrq_n_u8::<4>(x0);
        u[4 * i + 3] = vshrq_n_u8::<4>(x1);
    }
    u
}

/// Q4_K/Q5_K scales and minimums (the 12 bytes at `p`), per 16-value group.
#[inline(always)]
unsafe fn k4_scales(p: *const u8) -> ([i32; 16], [i16; 16]) {
    let q: &[u8; 12] = &*(p as *const [u8; 12]);
    let (mut sc, mut off) = ([0i32; 16], [0i16; 16]);
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, q);
        sc[2 * j] = s as i32;
        sc[2 * j + 1] = s as i32;
        off[2 * j] = m as i16;
        off[2 * j + 1] = m as i16;
    }
    (sc, off)
}

#[inline(always)]
unsafe fn signed(u: [uint8x16_t; 16]) -> [int8x16_t; 16] {
    let mut s = [vdupq_n_s8(0); 16];
    for (s, &u) in s.iter_mut().zip(&u) {
        *s = s8(u);
    }
    s
}

pub(super) struct Q2K<const DP: bool>;
pub(super) struct Q3K<const DP: bool>;
pub(super) struct Q4K<const DP: bool>;
pub(super) struct Q5K<const DP: bool>;
pub(super) struct Q6K<const DP: bool>;

macro_rules! kfmt {
    ($name:ident, $bytes:expr, $affine:expr, |$p:ident| $pw:block) => {
        // SAFETY: `pw`/`pa` read exactly one block at their pointers; an all-zero `KW` is
        // valid; `dot16::<true>` is only reached with `DP`, set by the dotprod entry points.
        unsafe impl<const DP: bool> Fmt for $name<DP> {
            const BLOCK: usize = 256;
            const W: usize = $bytes;
            const A: usize = 292;
            const UNROLL: usize = 1;
            const MV_ROWS: usize = 1;
            type Pw = KW;
            type Pa = KA;
            #[inline(always)]
            unsafe fn pw($p: *const u8) -> KW $pw
            #[inline(always)]
            unsafe fn pa(p: *const u8) -> KA {
                pa_q8_k(p)
            }
            #[inline(always)]
            unsafe fn dot(w: &KW, a: &KA, acc: float32x4_t) -> float32x4_t {
                kdot::<DP, { $affine }>(w, a, acc)
            }
        }
    };
}

kfmt!(Q2K, 84, true, |p| {
    let (mut sc, mut off) = ([0i32; 16], [0i16; 16]);
    for g in 0..16 {
        let s = *p.add(g);
        sc[g] = (s & 0x0f) as i32;
        off[g] = (s >> 4) as i16;
    }
    KW { u: signed(crumbs(p.add(16))), sc, off: offsets(&off), d: h2f(p.add(80)), dm: h2f(p.add(82)) }
});

kfmt!(Q3K, 110, false, |p| {
    let mut u = crumbs(p.add(32));
    for (g, u) in u.iter_mut().enumerate() {
        // Element 32·j + m has its "no −4" bit at bit j of hmask[m].
        let h = shr_mask(load(p.add(16 * (g % 2))), (g / 2) as i32, 1);
        *u = vorrq_u8(*u, vshlq_n_u8::<2>(h));
    }
    let scales = std::slice::from_raw_parts(p.add(96), 12);
    let (mut sc, mut off) = ([0i32; 16], [0i16; 16]);
    for g in 0..16 {
        let s = q3k_scale(scales, g) - 32;
        sc[g] = s as i32;
        off[g] = 4 * s;
    }
    let d = h2f(p.add(108));
    KW { u: signed(u), sc, off: offsets(&off), d, dm: d }
});

kfmt!(Q4K, 144, true, |p| {
    let (sc, off) = k4_scales(p.add(4));
    KW { u: signed(k4_codes(p.add(16))), sc, off: offsets(&off), d: h2f(p), dm: h2f(p.add(2)) }
});

kfmt!(Q5K, 176, true, |p| {
    let (sc, off) = k4_scales(p.add(4));
    let mut u = k4_codes(p.add(48));
    for (g, u) in u.iter_mut().enumerate() {
        // Element 32·j + m has its fifth bit at bit j of qh[m].
        let h = shr_mask(load(p.add(16 + 16 * (g % 2))), (g / 2) as i32, 1);
        *u = vorrq_u8(*u, vshlq_n_u8::<4>(h));
    }
    KW { u: signed(u), sc, off: offsets(&off), d: h2f(p), dm: h2f(p.add(2)) }
});

kfmt!(Q6K, 210, false, |p| {
    let mut u = [vdupq_n_u8(0); 16];
    for h in 0..2 {
        for c in 0..2 {
            let qh = load(p.add(128 + 32 * h + 16 * c));
            for s in 0..4 {
                let ql = load(p.add(64 * h + 32 * (s % 2) + 16 * c));
                let low = if s < 2 { vandq_u8(ql, vdupq_n_u8(0x0f)) } else { vshrq_n_u8::<4>(ql) };
                let high = shr_mask(qh, 2 * s as i32, 3);
                u[8 * h + 2 * s + c] = vorrq_u8(low, vshlq_n_u8::<4>(high));
            }
        }
    }
    let (mut sc, mut off) = ([0i32; 16], [0i16; 16]);
    for g in 0..16 {
        let s = *p.add(192 + g) as i8;
        sc[g] = s as i32;
        off[g] = 32 * s as i16;
    }
    let d = h2f(p.add(208));
    KW { u: signed(u), sc, off: offsets(&off), d, dm: d }
});
