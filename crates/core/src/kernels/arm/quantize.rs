//! NEON activation quantizers, bit-identical to the generic ones (the oracles): Q8_0/Q8_1 round
//! `x · (127 / amax)` half to even (`fcvtns`, as llama.cpp's run-time quantizer), Q8_K half to
//! even too (ggml's `nearest_int`) with its scale from the first element of largest magnitude.

use std::arch::aarch64::*;

use crate::quant::write_f16;

/// Packs eight registers of four i32 (each within i8) into 32 bytes in element order.
#[inline(always)]
unsafe fn pack_store(q: &[int32x4_t; 8], out: *mut u8) {
    for h in 0..2 {
        let a = vcombine_s16(vqmovn_s32(q[4 * h]), vqmovn_s32(q[4 * h + 1]));
        let b = vcombine_s16(vqmovn_s32(q[4 * h + 2]), vqmovn_s32(q[4 * h + 3]));
        vst1q_s8(out.add(16 * h) as *mut i8, vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
    }
}

/// One 32-value Q8_0 block: (scale, codes as i32).
#[inline(always)]
unsafe fn q8_0_block(x: *const f32) -> (f32, [int32x4_t; 8]) {
    let mut v = [vdupq_n_f32(0.0); 8];
    let mut m = vdupq_n_f32(0.0);
    for (i, v) in v.iter_mut().enumerate() {
        *v = vld1q_f32(x.add(4 * i));
        m = vmaxq_f32(m, vabsq_f32(*v));
    }
    let amax = vmaxvq_f32(m);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut q = [vdupq_n_s32(0); 8];
    for (q, &v) in q.iter_mut().zip(&v) {
        // Round half to even, like the generic `act_q8_block`.
        *q = vcvtnq_s32_f32(vmulq_n_f32(v, id));
    }
    (d, q)
}

/// # Safety
/// `out` holds exactly the Q8_0 bytes of `x` (a whole number of blocks); NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_0(x: &[f32], out: &mut [u8]) {
    for (b, ob) in out.chunks_exact_mut(34).enumerate() {
        let (d, q) = q8_0_block(x.as_ptr().add(32 * b));
        write_f16(ob, 0, d);
        pack_store(&q, ob.as_mut_ptr().add(2));
    }
}

/// # Safety
/// `out` holds exactly the N:M lane kernels' activation bytes of `x` (36 per 32 values: the
/// scale as f32, the codes `q + 128`); NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8u(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / 32;
    q8_0(x, &mut out[..34 * nb]);
    crate::kernels::packed::q8_0_to_q8u(out, nb);
}

/// 36-byte blocks: the Q8_0 scale, then the two bytes `second(d, Σq)`, then the codes.
#[inline(always)]
unsafe fn q8_with_sum(x: &[f32], out: &mut [u8], second: impl Fn(f32, i32) -> [u8; 2]) {
    for (b, ob) in out.chunks_exact_mut(36).enumerate() {
        let (d, q) = q8_0_block(x.as_ptr().add(32 * b));
        let mut s = vdupq_n_s32(0);
        for &q in &q {
            s = vaddq_s32(s, q);
        }
        write_f16(ob, 0, d);
        ob[2..4].copy_from_slice(&second(d, vaddvq_s32(s)));
        pack_store(&q, ob.as_mut_ptr().add(4));
    }
}

/// # Safety
/// `out` holds exactly the Q8_1 bytes of `x` (a whole number of blocks); NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_1(x: &[f32], out: &mut [u8]) {
    q8_with_sum(x, out, |d, sum| half::f16::from_f32(d * sum as f32).to_le_bytes())
}

/// # Safety
/// `out` holds exactly the packed-kernel activation bytes of `x` (36 per 32 values: Q8_0's
/// scale, the codes' sum as i16, the codes); NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8s(x: &[f32], out: &mut [u8]) {
    // |Σq| ≤ 32 · 127: an i16.
    q8_with_sum(x, out, |_, sum| (sum as i16).to_le_bytes())
}

/// # Safety
/// `out` holds exactly the Q8_K bytes of `x` (a whole number of blocks); NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_k(x: &[f32], out: &mut [u8]) {
    for (b, ob) in out.chunks_exact_mut(292).enumerate() {
        let xb = x.as_ptr().add(256 * b);
        let mut m = vdupq_n_f32(0.0);
        for i in 0..64 {
            m = vmaxq_f32(m, vabsq_f32(vld1q_f32(xb.add(4 * i))));
        }
        let amax = vmaxvq_f32(m);
        if amax == 0.0 {
            ob.fill(0);
            continue;
        }
        // The first element of largest magnitude, with its sign.
        let mut max = amax;
        for i in 0..64 {
            let eq = vceqq_f32(vabsq_f32(vld1q_f32(xb.add(4 * i))), vdupq_n_f32(amax));
            if vmaxvq_u32(eq) != 0 {
                let j = (0..4).find(|&j| (*xb.add(4 * i + j)).abs() == amax).unwrap_or(0);
                max = *xb.add(4 * i + j);
                break;
            }
        }
        let iscale = -127.0 / max;
        let top = vdupq_n_s32(127);
        let o = ob.as_mut_ptr();
        for g in 0..8 {
            let mut q = [vdupq_n_s32(0); 8];
            for (i, q) in q.iter_mut().enumerate() {
                let v = vmulq_n_f32(vld1q_f32(xb.add(32 * g + 4 * i)), iscale);
                *q = vminq_s32(vcvtnq_s32_f32(v), top);
            }
            pack_store(&q, o.add(4 + 32 * g));
            for h in 0..2 {
                let s = vaddq_s32(vaddq_s32(q[4 * h], q[4 * h + 1]), vaddq_s32(q[4 * h + 2], q[4 * h + 3]));
                let sum = vaddvq_s32(s) as i16;
                ob[260 + 4 * g + 2 * h..262 + 4 * g + 2 * h].copy_from_slice(&sum.to_le_bytes());
            }
        }
        ob[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
