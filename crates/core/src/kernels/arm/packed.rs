//! Products of packed (row-interleaved) matrices on AArch64 with the dot-product extension
//! (see `kernels::packed` for the layout): the design of the x86 packed kernels on NEON.
//!
//! A group block holds eight rows four codes at a time, one row per 32-bit lane, so a chunk
//! word (32 bytes: codes `4c..4c + 4` of rows 0–7) is two registers, rows 0–3 and 4–7; one
//! `sdot` against the token's four activation codes broadcast to every lane adds four
//! products to each of four rows. Codes are used signed, as they are (Q8_0), less their bias
//! (Q4_0: nibble − 8, Q5_0: − 16) or unsigned (Q4_1, Q5_1, whose minimum is added per block
//! from the Q8_1 activation's `d·Σq`), so no bias correction is needed. Per block, row and
//! token the float work is the oracle's, in its order: `acc ← fma(Σ c·q, d_w·d_a, acc)`, then
//! for Q4_1 `acc ← fma(m_w, s_a, acc)`; the integer sums are exact, so the bits are the
//! oracle's (tested in `crates/core/tests/kernels.rs`, under QEMU on x86 machines).
//!
//! Types: Q4_0, Q5_0, Q8_0, Q4_1 (the shipped default model), Q5_1 — those x86 packs; the
//! fifth bits of Q5_0 / Q5_1 come from the group block's `H` word, one shift per chunk.

use std::arch::aarch64::*;

use super::{h2f, sdot};
use crate::kernels::packed::GROUP;
use crate::kernels::MatmulArgs;

/// Bytes of a packed-kernel activation block (Q8_0 + sum, or Q8_1).
const AB: usize = 36;

/// One packed format on AArch64.
///
/// # Safety
/// `chunk` reads only within the group block at `wb` ([`Packed::GB`] bytes).
unsafe trait Packed {
    /// Bytes of a group block.
    const GB: usize;
    /// Whether the group block has the rows' minimums (eight f16 after the scales).
    const MIN: bool = false;
    /// The codes `4c..4c + 4` of rows 0–3 and 4–7 (a row per 32-bit lane) as the signed
    /// values the dot product takes, `c = 0..8`.
    unsafe fn chunk(wb: *const u8, c: usize) -> (int8x16_t, int8x16_t);
}

struct Q4_0;
struct Q5_0;
struct Q8_0;
struct Q4_1;
struct Q5_1;

/// The nibbles of chunk `c` from the words at `q` (`G_j` at `q + 32j`: low nibbles are
/// chunk `j`, high nibbles chunk `j + 4`), less `bias`.
#[inline(always)]
unsafe fn nibbles(q: *const u8, c: usize, bias: i8) -> (int8x16_t, int8x16_t) {
    let p = q.add(32 * (c % 4));
    let (lo, hi) = (vld1q_u8(p), vld1q_u8(p.add(16)));
    let pick = |v: uint8x16_t| {
        let n = if c < 4 { vandq_u8(v, vdupq_n_u8(0x0f)) } else { vshrq_n_u8::<4>(v) };
        vsubq_s8(vreinterpretq_s8_u8(n), vdupq_n_s8(bias))
    };
    (pick(lo), pick(hi))
}

// SAFETY (all): reads within the group block.
unsafe impl Packed for Q4_0 {
    const GB: usize = 144;
    #[inline(always)]
    unsafe fn chunk(wb: *const u8, c: usize) -> (int8x16_t, int8x16_t) {
        nibbles(wb.add(16), c, 8)
    }
}

/// [`nibbles`] of chunk `c` with the fifth bits of the `H` word at `h` (bit `c` of every byte
/// is chunk `c`'s fifth bit) at bit 4, less `bias`.
#[inline(always)]
unsafe fn fives(q: *const u8, h: *const u8, c: usize, bias: i8) -> (int8x16_t, int8x16_t) {
    let (lo, hi) = nibbles(q, c, 0);
    let shift = vdupq_n_s8(4 - c as i8); // left by 4 − c (right where negative)
    let five = |n: int8x16_t, hw: uint8x16_t| {
        let bit = vandq_u8(vshlq_u8(hw, shift), vdupq_n_u8(0x10));
        vsubq_s8(vorrq_s8(n, vreinterpretq_s8_u8(bit)), vdupq_n_s8(bias))
    };
    (five(lo, vld1q_u8(h)), five(hi, vld1q_u8(h.add(16))))
}

unsafe impl Packed for Q5_0 {
    const GB: usize = 176;
    #[inline(always)]
    unsafe fn chunk(wb: *const u8, c: usize) -> (int8x16_t, int8x16_t) {
        fives(wb.add(16), wb.add(144), c, 16)
    }
}

unsafe impl Packed for Q5_1 {
    const GB: usize = 192;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn chunk(wb: *const u8, c: usize) -> (int8x16_t, int8x16_t) {
        fives(wb.add(32), wb.add(160), c, 0)
    }
}

unsafe impl Packed for Q8_0 {
    const GB: usize = 272;
    #[inline(always)]
    unsafe fn chunk(wb: *const u8, c: usize) -> (int8x16_t, int8x16_t) {
        let p = wb.add(16 + 32 * c);
        (vld1q_s8(p as *const i8), vld1q_s8(p.add(16) as *const i8))
    }
}

unsafe impl Packed for Q4_1 {
    const GB: usize = 160;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn chunk(wb: *const u8, c: usize) -> (int8x16_t, int8x16_t) {
        nibbles(wb.add(32), c, 0)
    }
}

/// The eight f16 at `p` widened, rows 0–3 and 4–7.
#[inline(always)]
unsafe fn halves8(p: *const u8) -> [float32x4_t; 2] {
    let mut v = [0.0f32; 8];
    for (i, x) in v.iter_mut().enumerate() {
        *x = h2f(p.add(2 * i));
    }
    [vld1q_f32(v.as_ptr()), vld1q_f32(v.as_ptr().add(4))]
}

/// The four activation codes at `p` in every 32-bit lane.
#[inline(always)]
unsafe fn bcast(p: *const u8) -> int8x16_t {
    vreinterpretq_s8_u32(vdupq_n_u32((p as *const u32).read_unaligned()))
}

/// Group `g` against tokens `t0..t0 + N`: the eight rows' results of each token (rows 0–3,
/// 4–7).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<F: Packed, const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [[float32x4_t; 2]; N] {
    let nb = m.k / 32;
    let ab = m.act_bytes;
    let wg = m.w.as_ptr().add(g * nb * F::GB);
    let a0 = m.act.as_ptr().add(t0 * ab);
    let mut f = [[vdupq_n_f32(0.0); 2]; N];
    for b in 0..nb {
        let wb = wg.add(b * F::GB);
        let ap = |t: usize| a0.add(t * ab + b * AB);
        let mut s = [[vdupq_n_s32(0); 2]; N];
        for c in 0..8 {
            let (lo, hi) = F::chunk(wb, c);
            for t in 0..N {
                let a = bcast(ap(t).add(4 + 4 * c));
                s[t][0] = sdot(s[t][0], lo, a);
                s[t][1] = sdot(s[t][1], hi, a);
            }
        }
        let dw = halves8(wb);
        let mw = if F::MIN { halves8(wb.add(16)) } else { [vdupq_n_f32(0.0); 2] };
        for t in 0..N {
            let da = vdupq_n_f32(h2f(ap(t)));
            let sa = if F::MIN { vdupq_n_f32(h2f(ap(t).add(2))) } else { vdupq_n_f32(0.0) };
            for h in 0..2 {
                f[t][h] = vfmaq_f32(f[t][h], vcvtq_f32_s32(s[t][h]), vmulq_f32(dw[h], da));
                if F::MIN {
                    f[t][h] = vfmaq_f32(f[t][h], mw[h], sa);
                }
            }
        }
    }
    f
}

/// Writes the results of group `g` for tokens `t0..`: the rows of the group inside the range.
#[inline(always)]
unsafe fn store(m: &mut MatmulArgs<'_>, g: usize, t0: usize, f: &[[float32x4_t; 2]]) {
    let (start, end) = (m.rows.start, m.rows.end);
    let r0 = g * GROUP;
    for (t, v) in f.iter().enumerate() {
        let o = (t0 + t) * m.out_stride;
        let mut lanes = [0.0f32; GROUP];
        vst1q_f32(lanes.as_mut_ptr(), v[0]);
        vst1q_f32(lanes.as_mut_ptr().add(4), v[1]);
        for r in r0.max(start)..(r0 + GROUP).min(end) {
            m.out[o + r - start] = lanes[r - r0];
        }
    }
}

/// Every group that meets the row range against every token, in tiles of 4, 2 and 1 tokens.
#[inline(always)]
unsafe fn matmul<F: Packed>(m: &mut MatmulArgs<'_>) {
    for g in m.rows.start / GROUP..m.rows.end.div_ceil(GROUP) {
        let mut t = 0;
        while t + 4 <= m.n {
            let f = tile::<F, 4>(m, g, t);
            store(m, g, t, &f);
            t += 4;
        }
        while t + 2 <= m.n {
            let f = tile::<F, 2>(m, g, t);
            store(m, g, t, &f);
            t += 2;
        }
        if t < m.n {
            let f = tile::<F, 1>(m, g, t);
            store(m, g, t, &f);
        }
    }
}

macro_rules! entries {
    ($($fmt:ident => $name:ident;)*) => {$(
        /// # Safety
        /// `m` holds a packed matrix of the type reaching `rows.end` and packed-kernel
        /// activations, with the bounds of [`MatmulArgs`]; the CPU has the dot-product
        /// extension.
        #[target_feature(enable = "neon,dotprod")]
        pub(super) unsafe fn $name(m: &mut MatmulArgs<'_>) {
            matmul::<$fmt>(m)
        }
    )*};
}

entries! {
    Q4_0 => sdot_q4_0;
    Q5_0 => sdot_q5_0;
    Q8_0 => sdot_q8_0;
    Q4_1 => sdot_q4_1;
    Q5_1 => sdot_q5_1;
}
