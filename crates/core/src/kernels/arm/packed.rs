//! Products of packed (row-interleaved) matrices on AArch64 (see `kernels::packed` for the
//! layout): the design of the x86 packed kernels on NEON, on all three ARM tiers.
//!
//! A group block holds eight rows four codes at a time, one row per 32-bit lane, so a chunk
//! word (32 bytes: codes `4c..4c + 4` of rows 0–7) is two registers, rows 0–3 and 4–7. Codes
//! are used signed, as they are (Q8_0), less their bias (Q4_0: nibble − 8, Q5_0: − 16) or
//! unsigned (Q4_1, Q5_1, whose minimum is added per block from the Q8_1 activation's `d·Σq`),
//! so no bias correction is needed. An [`Engine`] turns a run of chunks into the eight rows'
//! exact integer sums per token:
//!
//! - [`Sdot`] (dot-product tier): one `sdot` against the token's four activation codes
//!   broadcast to every lane adds four products to each of four rows.
//! - [`Mull`] (plain NEON, e.g. Cortex-A72/A53 boards): widening multiplies (`smlal`) of each
//!   chunk byte by its activation code into i16 lanes, `RUN` chunks at a time, then pairwise
//!   widening adds into i32 and one pairwise add per block for the rows' sums. The i16 lanes
//!   never overflow: a lane adds `RUN` products of at most 31·127 (5-bit codes, `RUN` = 8:
//!   31 496) or 128·127 (Q8_0, `RUN` = 2: 32 512); activation codes are within ±127.
//! - [`Mmla`] (I8MM tier): the `zip` of two chunk registers is two rows' eight codes each, the
//!   operand `smmla` takes; one `smmla` against two tokens' eight codes adds a 2 × 2 block of
//!   row × token sums (twice the products of an `sdot`); `uzp` turns the blocks back into
//!   per-token rows. An odd last token goes through `sdot`.
//!
//! Per block, row and token the float work is the oracle's, in its order:
//! `acc ← fma(Σ c·q, d_w·d_a, acc)`, then for Q4_1 `acc ← fma(m_w, s_a, acc)`; the integer sums
//! are exact, so the bits are the oracle's on every engine (tested in
//! `crates/core/tests/kernels.rs`, under QEMU on x86 machines).
//!
//! Types: Q4_0, Q5_0, Q8_0, Q4_1 (the shipped default model), Q5_1, Q4_K, Q6_K — those x86
//! packs; the fifth bits of Q5_0 / Q5_1 come from the group block's `H` word, one shift per
//! chunk. The k-quants' sums of one 32-value (Q4_K) or 16-value (Q6_K, codes less 32) group
//! are multiplied by the rows' integer scales and accumulated in i32 (`vmlaq_s32`): Q4_K's
//! super-block sum `S = Σ sc·Σu·q` and minimum term `M = Σ m·bsum` exactly, Q6_K's
//! `Σ sc·Σ(u − 32)·q`, which is the oracle's `S − M` (the Q8_K `bsums` are the codes' exact
//! sums); then the oracle's float steps.

use std::arch::aarch64::*;

use super::{h2f, sdot, smmla, widen_f16};
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
    let h = vld1q_u16(p as *const u16);
    [widen_f16(vget_low_u16(h)), widen_f16(vget_high_u16(h))]
}

/// The four activation codes at `p` in every 32-bit lane.
#[inline(always)]
unsafe fn bcast(p: *const u8) -> int8x16_t {
    vreinterpretq_s8_u32(vdupq_n_u32((p as *const u32).read_unaligned()))
}

/// `x`, through an empty `asm!` so the compiler cannot see that it is a broadcast: knowing
/// both halves equal, it turned `smlal2 (weights, x)` into an `ext` of the weights and a
/// `smlal`, an extra instruction per weight half.
#[inline(always)]
unsafe fn opaque(x: int8x16_t) -> int8x16_t {
    let mut x = x;
    std::arch::asm!("/* {x:v} */", x = inout(vreg) x, options(pure, nomem, nostack, preserves_flags));
    x
}

/// How a tile turns chunks into the eight rows' exact integer sums.
trait Engine {
    /// The sums of chunks `0..C` for tokens `0..N`, per token rows 0–3 and 4–7: `w(c)` is
    /// chunk `c` of the eight rows (rows 0–3, 4–7, a row per 32-bit lane), `a(t)` the first of
    /// token `t`'s codes (chunk `c`'s four at `a(t) + 4c`).
    ///
    /// # Safety
    /// The reads of `a` are valid; the CPU has the engine's extensions; the engine's bound on
    /// the codes holds.
    unsafe fn sums<const N: usize, const C: usize>(
        w: impl Fn(usize) -> (int8x16_t, int8x16_t),
        a: impl Fn(usize) -> *const u8,
    ) -> [[int32x4_t; 2]; N];
}

/// `sdot` (the dot-product extension).
struct Sdot;

impl Engine for Sdot {
    #[inline(always)]
    unsafe fn sums<const N: usize, const C: usize>(
        w: impl Fn(usize) -> (int8x16_t, int8x16_t),
        a: impl Fn(usize) -> *const u8,
    ) -> [[int32x4_t; 2]; N] {
        let mut s = [[vdupq_n_s32(0); 2]; N];
        for c in 0..C {
            let (lo, hi) = w(c);
            for (t, s) in s.iter_mut().enumerate() {
                let x = bcast(a(t).add(4 * c));
                s[0] = sdot(s[0], lo, x);
                s[1] = sdot(s[1], hi, x);
            }
        }
        s
    }
}

/// Widening multiplies (plain NEON): `RUN` chunks summed in i16 lanes, then widened. Bound:
/// `RUN · max|code| · 127 ≤ 32 767`.
struct Mull<const RUN: usize>;

impl<const RUN: usize> Engine for Mull<RUN> {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn sums<const N: usize, const C: usize>(
        w: impl Fn(usize) -> (int8x16_t, int8x16_t),
        a: impl Fn(usize) -> *const u8,
    ) -> [[int32x4_t; 2]; N] {
        // Lane j of `p[t][i]` (i16): byte j of half i of the chunk registers (halves 0–3:
        // rows 0–1, 2–3, 4–5, 6–7, four codes each); lane j of `q[t][i]` (i32): bytes 2j and
        // 2j + 1 of that half, so one pairwise add of `q[t][0]`, `q[t][1]` gives rows 0–3.
        // The first run's sums are widened into `q` (not added to zeros), so where one run
        // covers the chunks (`RUN ≥ C`) `q` is not live during it.
        let mut q = [[vdupq_n_s32(0); 4]; N];
        for run in 0..C.div_ceil(RUN) {
            let c0 = run * RUN;
            let mut p = [[vdupq_n_s16(0); 4]; N];
            for c in c0..(c0 + RUN).min(C) {
                let (lo, hi) = w(c);
                for t in 0..N {
                    let x = opaque(bcast(a(t).add(4 * c)));
                    let xl = vget_low_s8(x);
                    p[t][0] = vmlal_s8(p[t][0], vget_low_s8(lo), xl);
                    p[t][1] = vmlal_high_s8(p[t][1], lo, x);
                    p[t][2] = vmlal_s8(p[t][2], vget_low_s8(hi), xl);
                    p[t][3] = vmlal_high_s8(p[t][3], hi, x);
                }
            }
            for t in 0..N {
                for i in 0..4 {
                    q[t][i] = if run == 0 { vpaddlq_s16(p[t][i]) } else { vpadalq_s16(q[t][i], p[t][i]) };
                }
            }
        }
        q.map(|q| [vpaddq_s32(q[0], q[1]), vpaddq_s32(q[2], q[3])])
    }
}

/// `smmla` (the 8-bit matrix multiply extension), two tokens at a time; `sdot` for an odd
/// last token.
struct Mmla;

impl Engine for Mmla {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn sums<const N: usize, const C: usize>(
        w: impl Fn(usize) -> (int8x16_t, int8x16_t),
        a: impl Fn(usize) -> *const u8,
    ) -> [[int32x4_t; 2]; N] {
        // `m[p][i]`: rows 2i, 2i + 1 against tokens 2p, 2p + 1, lanes
        // [r·t, r·t', r'·t, r'·t'].
        let mut m = [[vdupq_n_s32(0); 4]; N];
        let mut odd = [vdupq_n_s32(0); 2];
        let pairs = N / 2;
        let mut c = 0;
        while c < C {
            let (l0, h0) = w(c);
            let (l1, h1) = w(c + 1);
            let (l0, l1, h0, h1) = (
                vreinterpretq_s32_s8(l0),
                vreinterpretq_s32_s8(l1),
                vreinterpretq_s32_s8(h0),
                vreinterpretq_s32_s8(h1),
            );
            // Row r's codes 4c..4c + 8, two rows per register.
            let rows = [vzip1q_s32(l0, l1), vzip2q_s32(l0, l1), vzip1q_s32(h0, h1), vzip2q_s32(h0, h1)]
                .map(|r| vreinterpretq_s8_s32(r));
            for p in 0..pairs {
                let x = vcombine_s8(
                    vld1_s8(a(2 * p).add(4 * c) as *const i8),
                    vld1_s8(a(2 * p + 1).add(4 * c) as *const i8),
                );
                for i in 0..4 {
                    m[p][i] = smmla(m[p][i], rows[i], x);
                }
            }
            if N % 2 == 1 {
                let t = N - 1;
                let (x0, x1) = (bcast(a(t).add(4 * c)), bcast(a(t).add(4 * c + 4)));
                odd[0] = sdot(sdot(odd[0], vreinterpretq_s8_s32(l0), x0), vreinterpretq_s8_s32(l1), x1);
                odd[1] = sdot(sdot(odd[1], vreinterpretq_s8_s32(h0), x0), vreinterpretq_s8_s32(h1), x1);
            }
            c += 2;
        }
        let mut s = [[vdupq_n_s32(0); 2]; N];
        for p in 0..pairs {
            s[2 * p] = [vuzp1q_s32(m[p][0], m[p][1]), vuzp1q_s32(m[p][2], m[p][3])];
            s[2 * p + 1] = [vuzp2q_s32(m[p][0], m[p][1]), vuzp2q_s32(m[p][2], m[p][3])];
        }
        if N % 2 == 1 {
            s[N - 1] = odd;
        }
        s
    }
}

/// Group `g` against tokens `t0..t0 + N`: the eight rows' results of each token (rows 0–3,
/// 4–7).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<E: Engine, F: Packed, const N: usize>(
    m: &MatmulArgs<'_>,
    g: usize,
    t0: usize,
) -> [[float32x4_t; 2]; N] {
    let nb = m.k / 32;
    let ab = m.act_bytes;
    let wg = m.w.as_ptr().add(g * nb * F::GB);
    let a0 = m.act.as_ptr().add(t0 * ab);
    let mut f = [[vdupq_n_f32(0.0); 2]; N];
    for b in 0..nb {
        let wb = wg.add(b * F::GB);
        let ap = |t: usize| a0.add(t * ab + b * AB);
        let s = E::sums::<N, 8>(|c| F::chunk(wb, c), |t| ap(t).add(4));
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
    let r0 = g * GROUP;
    for (t, v) in f.iter().enumerate() {
        let mut lanes = [0.0f32; GROUP];
        vst1q_f32(lanes.as_mut_ptr(), v[0]);
        vst1q_f32(lanes.as_mut_ptr().add(4), v[1]);
        m.store_rows(t0 + t, r0, &lanes);
    }
}

/// The register tile of one packed format: a group against `N` tokens.
trait Tile {
    /// The eight rows' results of group `g` for tokens `t0..t0 + N` (rows 0–3, 4–7).
    ///
    /// # Safety
    /// `m` holds a packed matrix of the format reaching group `g` and activations of tokens
    /// `t0..t0 + N`; the CPU has the extensions of the tile's [`Engine`].
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [[float32x4_t; 2]; N];
}

/// The legacy types' [`tile`] with engine `E`.
struct Legacy<F, E>(std::marker::PhantomData<(F, E)>);

impl<F: Packed, E: Engine> Tile for Legacy<F, E> {
    #[inline(always)]
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [[float32x4_t; 2]; N] {
        tile::<E, F, N>(m, g, t0)
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

/// Packed Q4_K with engine `E`.
struct Q4K<E>(std::marker::PhantomData<E>);

/// Sub-block `J` of the Q4_K group block at `wb` (the low, even `J`, or high nibbles of words
/// `G_{J/2, c}`) added into the scale sums `s` and the minimum terms `ms`; `sc`, `mn` are
/// the rows' six-bit scales and minimums (byte `i` of lane `r` of `sc[0]`: row `r`'s scale
/// `i`, of `sc[1]`: its scale `4 + i`).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn q4_sub<E: Engine, const N: usize, const J: usize>(
    wb: *const u8,
    ap: impl Fn(usize) -> *const u8,
    sc: &[[uint8x16_t; 2]; 2],
    mn: &[[uint8x16_t; 2]; 2],
    s: &mut [[int32x4_t; 2]; N],
    ms: &mut [[int32x4_t; 2]; N],
) {
    let q = wb.add(128 + 256 * (J / 2));
    let low = vdupq_n_u8(0x0f);
    let chunk = |c: usize| {
        let nib = |v: uint8x16_t| {
            vreinterpretq_s8_u8(if J.is_multiple_of(2) { vandq_u8(v, low) } else { vshrq_n_u8::<4>(v) })
        };
        let w = word(q.add(32 * c));
        (nib(w[0]), nib(w[1]))
    };
    let p = E::sums::<N, 8>(chunk, |t| ap(t).add(4 + 32 * J));
    let scj = lane_bytes(sc[J / 4], J % 4, false);
    let mnj = lane_bytes(mn[J / 4], J % 4, false);
    for t in 0..N {
        let bs = vdupq_n_s32(bsum2(ap(t), 2 * J));
        for h in 0..2 {
            s[t][h] = vmlaq_s32(s[t][h], p[t][h], scj[h]);
            ms[t][h] = vmlaq_s32(ms[t][h], mnj[h], bs);
        }
    }
}

impl<E: Engine> Tile for Q4K<E> {
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
            // One call per sub-block with its index a constant (nibble half and scale byte
            // chosen at compile time, whatever the compiler's unrolling decides).
            q4_sub::<E, N, 0>(wb, ap, &sc, &mn, &mut s, &mut ms);
            q4_sub::<E, N, 1>(wb, ap, &sc, &mn, &mut s, &mut ms);
            q4_sub::<E, N, 2>(wb, ap, &sc, &mn, &mut s, &mut ms);
            q4_sub::<E, N, 3>(wb, ap, &sc, &mn, &mut s, &mut ms);
            q4_sub::<E, N, 4>(wb, ap, &sc, &mn, &mut s, &mut ms);
            q4_sub::<E, N, 5>(wb, ap, &sc, &mn, &mut s, &mut ms);
            q4_sub::<E, N, 6>(wb, ap, &sc, &mn, &mut s, &mut ms);
            q4_sub::<E, N, 7>(wb, ap, &sc, &mn, &mut s, &mut ms);
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

/// Packed Q6_K with engine `E`.
struct Q6K<E>(std::marker::PhantomData<E>);

/// Bytes of a packed Q6_K group block.
const Q6K_GB: usize = 1680;

/// The 16-value group `i = 8n + 2X + h` of the Q6_K group block at `wb` added into `s`:
/// values `128n + 32X + 16h..`, chunks `4h..4h + 4` of quarter `X`, whose codes are the
/// nibbles of `L_{n, X % 2, c}` (high ones for `X ≥ 2`) with bits `2X, 2X + 1` of `H_{n, c}`
/// above them, less 32. `X` is a constant, so every shift is an immediate one.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn q6_group<E: Engine, const N: usize, const X: usize>(
    wb: *const u8,
    ap: impl Fn(usize) -> *const u8,
    n: usize,
    h: usize,
    s: &mut [[int32x4_t; 2]; N],
) {
    let i = 8 * n + 2 * X + h;
    let (low, three, bias) = (vdupq_n_u8(0x0f), vdupq_n_u8(3), vdupq_n_s8(32));
    let chunk = |cc: usize| {
        let c = 4 * h + cc;
        let ql = word(wb.add(144 + 32 * (16 * n + 8 * (X % 2) + c)));
        let qh = word(wb.add(1168 + 32 * (8 * n + c)));
        let code = |r: usize| {
            let lo = if X >= 2 { vshrq_n_u8::<4>(ql[r]) } else { vandq_u8(ql[r], low) };
            let hi = match X {
                0 => vandq_u8(qh[r], three),
                1 => vandq_u8(vshrq_n_u8::<2>(qh[r]), three),
                2 => vandq_u8(vshrq_n_u8::<4>(qh[r]), three),
                _ => vshrq_n_u8::<6>(qh[r]),
            };
            vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, vshlq_n_u8::<4>(hi))), bias)
        };
        (code(0), code(1))
    };
    let p = E::sums::<N, 4>(chunk, |t| ap(t).add(4 + 16 * i));
    let sci = lane_bytes(word(wb.add(16 + 32 * (i / 4))), i % 4, true);
    for t in 0..N {
        for r in 0..2 {
            s[t][r] = vmlaq_s32(s[t][r], p[t][r], sci[r]);
        }
    }
}

impl<E: Engine> Tile for Q6K<E> {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [[float32x4_t; 2]; N] {
        let nb = m.k / 256;
        let ab = m.act_bytes;
        let wg = m.w.as_ptr().add(g * nb * Q6K_GB);
        let a0 = m.act.as_ptr().add(t0 * ab);
        let mut f = [[vdupq_n_f32(0.0); 2]; N];
        for b in 0..nb {
            let wb = wg.add(b * Q6K_GB);
            let ap = |t: usize| a0.add(t * ab + b * AK);
            let mut s = [[vdupq_n_s32(0); 2]; N];
            // The sixteen 16-value groups, in another order than the oracle's: the integer
            // sum is exact, so the order does not change it.
            for n in 0..2 {
                for h in 0..2 {
                    q6_group::<E, N, 0>(wb, ap, n, h, &mut s);
                    q6_group::<E, N, 1>(wb, ap, n, h, &mut s);
                    q6_group::<E, N, 2>(wb, ap, n, h, &mut s);
                    q6_group::<E, N, 3>(wb, ap, n, h, &mut s);
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

/// The seven packed kernels of one tier as a module `$tier` with its table `KERNELS`:
/// `$eng` the engine of the types up to 5-bit codes, `$eng8` Q8_0's.
macro_rules! tier {
    ($tier:ident, $features:literal, $what:literal, $eng:ty, $eng8:ty) => {
        pub(super) mod $tier {
            use super::*;
            use crate::kernels::MatmulFn;
            use crate::DType;

            tier!(@fns $features, $what;
                Legacy<Q4_0, $eng> => q4_0;
                Legacy<Q5_0, $eng> => q5_0;
                Legacy<Q8_0, $eng8> => q8_0;
                Legacy<Q4_1, $eng> => q4_1;
                Legacy<Q5_1, $eng> => q5_1;
                Q4K<$eng> => q4_k;
                Q6K<$eng> => q6_k;
            );

            /// The tier's packed products, by weight type.
            pub(in crate::kernels::arm) const KERNELS: [(DType, MatmulFn); 7] = [
                (DType::Q4_0, q4_0),
                (DType::Q5_0, q5_0),
                (DType::Q8_0, q8_0),
                (DType::Q4_1, q4_1),
                (DType::Q5_1, q5_1),
                (DType::Q4_K, q4_k),
                (DType::Q6_K, q6_k),
            ];
        }
    };
    (@fns $features:literal, $what:literal; $($tile:ty => $name:ident;)*) => {$(
        /// # Safety
        /// `m` holds a packed matrix of the type reaching `rows.end` and its packed-kernel
        /// activations, with the bounds of [`MatmulArgs`]; the CPU has
        #[doc = concat!($what, ".")]
        #[target_feature(enable = $features)]
        unsafe fn $name(m: &mut MatmulArgs<'_>) {
            matmul::<$tile>(m)
        }
    )*};
}

// Plain NEON: 5-bit codes and less sum eight chunks in i16, Q8_0 two (see [`Mull`]).
tier!(plain, "neon", "NEON", Mull<8>, Mull<2>);
tier!(dotprod, "neon,dotprod", "the dot-product extension", Sdot, Sdot);
tier!(i8mm, "neon,dotprod,i8mm", "the dot-product and 8-bit matrix multiply extensions", Mmla, Mmla);
