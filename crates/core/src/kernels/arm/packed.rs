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
//! Types: Q4_0, Q5_0, Q8_0, Q4_1 (the shipped default model), Q5_1, Q4_K, Q6_K — those x86
//! packs; the fifth bits of Q5_0 / Q5_1 come from the group block's `H` word, one shift per
//! chunk. The k-quants' `sdot` sums of one 32-value (Q4_K) or 16-value (Q6_K, codes less 32)
//! group are multiplied by the rows' integer scales and accumulated in i32 (`vmlaq_s32`):
//! Q4_K's super-block sum `S = Σ sc·Σu·q` and minimum term `M = Σ m·bsum` exactly, Q6_K's
//! `Σ sc·Σ(u − 32)·q`, which is the oracle's `S − M` (the Q8_K `bsums` are the codes' exact
//! sums); then the oracle's float steps.

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

/// The register tile of one packed format: a group against `N` tokens.
trait Tile {
    /// The eight rows' results of group `g` for tokens `t0..t0 + N` (rows 0–3, 4–7).
    ///
    /// # Safety
    /// `m` holds a packed matrix of the format reaching group `g` and activations of tokens
    /// `t0..t0 + N`; the CPU has the dot-product extension.
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [[float32x4_t; 2]; N];
}

/// The legacy types' [`tile`].
struct Legacy<F>(std::marker::PhantomData<F>);

impl<F: Packed> Tile for Legacy<F> {
    #[inline(always)]
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [[float32x4_t; 2]; N] {
        tile::<F, N>(m, g, t0)
    }
}

/// Every group that meets the row range against every token, in tiles of 4, 2 and 1 tokens.
#[inline(always)]
unsafe fn matmul<T: Tile>(m: &mut MatmulArgs<'_>) {
    for g in m.rows.start / GROUP..m.rows.end.div_ceil(GROUP) {
        let mut t = 0;
        while t + 4 <= m.n {
            let f = T::tile::<4>(m, g, t);
            store(m, g, t, &f);
            t += 4;
        }
        while t + 2 <= m.n {
            let f = T::tile::<2>(m, g, t);
            store(m, g, t, &f);
            t += 2;
        }
        if t < m.n {
            let f = T::tile::<1>(m, g, t);
            store(m, g, t, &f);
        }
    }
}

/// Bytes of a Q8_K activation block.
const AK: usize = 292;

/// Byte `i` (`0..4`, run-time) of every 32-bit lane of the word `w` (rows 0–3, 4–7), zero- or
/// sign-extended to i32.
#[inline(always)]
unsafe fn lane_bytes(w: [uint8x16_t; 2], i: usize, signed: bool) -> [int32x4_t; 2] {
    let left = vdupq_n_s32(24 - 8 * i as i32);
    w.map(|v| {
        let x = vshlq_s32(vreinterpretq_s32_u8(v), left);
        if signed {
            vshrq_n_s32::<24>(x)
        } else {
            vreinterpretq_s32_u32(vshrq_n_u32::<24>(vreinterpretq_u32_s32(x)))
        }
    })
}

/// The 32 bytes at `p` as two registers (rows 0–3, 4–7).
#[inline(always)]
unsafe fn word(p: *const u8) -> [uint8x16_t; 2] {
    [vld1q_u8(p), vld1q_u8(p.add(16))]
}

/// The Q8_K activation's scale at `p`.
#[inline(always)]
unsafe fn act_d(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

/// The Q8_K activation's sum of 16-value groups `i` and `i + 1`.
#[inline(always)]
unsafe fn bsum2(p: *const u8, i: usize) -> i32 {
    let b = |j: usize| i16::from_le((p.add(260 + 2 * j) as *const i16).read_unaligned()) as i32;
    b(i) + b(i + 1)
}

/// Packed Q4_K.
struct Q4K;

impl Tile for Q4K {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [[float32x4_t; 2]; N] {
        const GB: usize = 1152;
        let nb = m.k / 256;
        let ab = m.act_bytes;
        let wg = m.w.as_ptr().add(g * nb * GB);
        let a0 = m.act.as_ptr().add(t0 * ab);
        let mut f = [[vdupq_n_f32(0.0); 2]; N];
        for b in 0..nb {
            let wb = wg.add(b * GB);
            let ap = |t: usize| a0.add(t * ab + b * AK);
            // The six-bit scales and minimums: byte i of lane r of `sc[0]` is row r's scale i,
            // of `sc[1]` its scale 4 + i; `mn` the minimums alike.
            let (w0, w1, w2) = (word(wb.add(32)), word(wb.add(64)), word(wb.add(96)));
            let (six, low, top) = (vdupq_n_u8(0x3f), vdupq_n_u8(0x0f), vdupq_n_u8(0x30));
            let sc = [
                w0.map(|v| vandq_u8(v, six)),
                [0, 1].map(|h| vorrq_u8(vandq_u8(w2[h], low), vandq_u8(vshrq_n_u8::<2>(w0[h]), top))),
            ];
            let mn = [
                w1.map(|v| vandq_u8(v, six)),
                [0, 1].map(|h| vorrq_u8(vshrq_n_u8::<4>(w2[h]), vandq_u8(vshrq_n_u8::<2>(w1[h]), top))),
            ];
            let mut s = [[vdupq_n_s32(0); 2]; N];
            let mut ms = [[vdupq_n_s32(0); 2]; N];
            for j in 0..8 {
                // Sub-block j: the low (even j) or high nibbles of words G_{j/2, c}.
                let q = wb.add(128 + 256 * (j / 2));
                let mut p = [[vdupq_n_s32(0); 2]; N];
                for c in 0..8 {
                    let u = word(q.add(32 * c)).map(|v| {
                        vreinterpretq_s8_u8(if j % 2 == 0 { vandq_u8(v, low) } else { vshrq_n_u8::<4>(v) })
                    });
                    for t in 0..N {
                        let a = bcast(ap(t).add(4 + 32 * j + 4 * c));
                        p[t][0] = sdot(p[t][0], u[0], a);
                        p[t][1] = sdot(p[t][1], u[1], a);
                    }
                }
                let scj = lane_bytes(sc[j / 4], j % 4, false);
                let mnj = lane_bytes(mn[j / 4], j % 4, false);
                for t in 0..N {
                    let bs = vdupq_n_s32(bsum2(ap(t), 2 * j));
                    for h in 0..2 {
                        s[t][h] = vmlaq_s32(s[t][h], p[t][h], scj[h]);
                        ms[t][h] = vmlaq_s32(ms[t][h], mnj[h], bs);
                    }
                }
            }
            let (dw, mw) = (halves8(wb), halves8(wb.add(16)));
            for t in 0..N {
                let da = vdupq_n_f32(act_d(ap(t)));
                for h in 0..2 {
                    f[t][h] = vfmaq_f32(f[t][h], vcvtq_f32_s32(s[t][h]), vmulq_f32(dw[h], da));
                    f[t][h] = vfmsq_f32(f[t][h], vcvtq_f32_s32(ms[t][h]), vmulq_f32(mw[h], da));
                }
            }
        }
        f
    }
}

/// Packed Q6_K.
struct Q6K;

impl Tile for Q6K {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [[float32x4_t; 2]; N] {
        const GB: usize = 1680;
        let nb = m.k / 256;
        let ab = m.act_bytes;
        let wg = m.w.as_ptr().add(g * nb * GB);
        let a0 = m.act.as_ptr().add(t0 * ab);
        let (low, three, bias) = (vdupq_n_u8(0x0f), vdupq_n_u8(3), vdupq_n_s8(32));
        let mut f = [[vdupq_n_f32(0.0); 2]; N];
        for b in 0..nb {
            let wb = wg.add(b * GB);
            let ap = |t: usize| a0.add(t * ab + b * AK);
            let mut s = [[vdupq_n_s32(0); 2]; N];
            // The 16-value group i = 8n + 2x + h: values 128n + 32x + 16h.., chunks 4h..4h + 4
            // of quarter x, whose codes are the nibbles of L_{n, x % 2, c} (high ones for
            // x ≥ 2) with bits 2x, 2x + 1 of H_{n, c} above them, less 32.
            for i in 0..16 {
                let (n, x, h) = (i / 8, i / 2 % 4, i % 2);
                let lo_shift = vdupq_n_s8(-4 * (x / 2) as i8);
                let hi_shift = vdupq_n_s8(-2 * x as i8);
                let mut p = [[vdupq_n_s32(0); 2]; N];
                for c in 4 * h..4 * h + 4 {
                    let ql = word(wb.add(144 + 32 * (16 * n + 8 * (x % 2) + c)));
                    let qh = word(wb.add(1168 + 32 * (8 * n + c)));
                    let u: [int8x16_t; 2] = std::array::from_fn(|r| {
                        let lo = vandq_u8(vshlq_u8(ql[r], lo_shift), low);
                        let hi = vandq_u8(vshlq_u8(qh[r], hi_shift), three);
                        vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, vshlq_n_u8::<4>(hi))), bias)
                    });
                    for t in 0..N {
                        let a = bcast(ap(t).add(4 + 16 * i + 4 * (c % 4)));
                        p[t][0] = sdot(p[t][0], u[0], a);
                        p[t][1] = sdot(p[t][1], u[1], a);
                    }
                }
                let sci = lane_bytes(word(wb.add(16 + 32 * (i / 4))), i % 4, true);
                for t in 0..N {
                    for h in 0..2 {
                        s[t][h] = vmlaq_s32(s[t][h], p[t][h], sci[h]);
                    }
                }
            }
            let dw = halves8(wb);
            for t in 0..N {
                let da = vdupq_n_f32(act_d(ap(t)));
                for h in 0..2 {
                    f[t][h] = vfmaq_f32(f[t][h], vcvtq_f32_s32(s[t][h]), vmulq_f32(dw[h], da));
                }
            }
        }
        f
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
            matmul::<Legacy<$fmt>>(m)
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

/// # Safety
/// `m` holds a packed Q4_K matrix reaching `rows.end` and Q8_K activations, with the bounds of
/// [`MatmulArgs`]; the CPU has the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn sdot_q4_k(m: &mut MatmulArgs<'_>) {
    matmul::<Q4K>(m)
}

/// # Safety
/// As [`sdot_q4_k`], for Q6_K.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn sdot_q6_k(m: &mut MatmulArgs<'_>) {
    matmul::<Q6K>(m)
}
