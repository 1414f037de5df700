//! Products of N:M lane matrices (`Q4_S24`, `Q4_S48`; layout in `kernels::packed`: groups of
//! sixteen rows, one row per 32-bit lane) with the dot-product extension.
//!
//! A chunk word (64 bytes, chunk `c` of the group's sixteen rows) is four registers of four
//! rows. Each byte is `position | (value − 8) << 4`: `byte & 0x0f` indexes (`tbl`) the chunk's
//! eight activation codes, gathering every row's own four activations, and `byte & 0xf0` is
//! `16·(value − 8)` as a signed byte, so one `sdot` adds `16·` four products to each of four
//! rows — signed times signed, so no bias and no correction (the layout's correction words are
//! for x86's unsigned `vpdpbusd`). Four instructions per 16 kept multiply-adds (32
//! dense-equivalent), where the dense packed Q4_0 kernel unpacks nibbles and broadcasts
//! activations. Per 32-input half `16·Σc·q` meets `(d_w/16)·d_a` in one multiply-add: exactly
//! the oracle's `fma(Σc·q, d_w·d_a, acc)` (the factor 16 is a power of two). Without the
//! extension (plain NEON) widening multiplies and pairwise adds take `sdot`'s place.
//!
//! That is the 4:8 layout (`Q4_S48`). The compact 2:4 layout (`Q4_S24`, 28 bytes per row and
//! block instead of 36) keeps two value nibbles per byte and two-bit positions within each
//! four-input group: a byte shift and a bit select (`bsl`, bit 2 set for kept inputs 2 and 3)
//! give the `tbl` indices, a mask or a shift the values — the same products.

use std::arch::aarch64::*;

use super::{sdot, widen_f16};
use crate::kernels::packed::{NM24_GB as GB24, NM8_GB as GB8, NM_GB as GB, NM_GROUP as ROWS};
use crate::kernels::MatmulArgs;

/// The lane layouts (`kernels::packed`): 4-bit `position | value << 4` bytes (`Q4_S48`), the
/// compact 2:4 one (`Q4_S24`), 8-bit (`Q8_S24`, `Q8_S48`).
const WIDE: u8 = 0;
const C24: u8 = 1;
const Q8: u8 = 2;

/// Bytes of an activation block (`Act::Q8U`: f32 scale, 32 codes `q + 128`).
const AB: usize = 36;
/// Byte offset of the scales in a group block.
const D: usize = 512;
/// The 8-bit layout's position words and scales.
const P8: usize = 512;
const D8: usize = 768;
/// The compact 2:4 layout's position words and scales.
const P24: usize = 256;
const D24: usize = 384;

/// Bytes of a group block and the scales' offset of layout `L`.
const fn geometry(l: u8) -> (usize, usize) {
    match l {
        WIDE => (GB, D),
        C24 => (GB24, D24),
        _ => (GB8, D8),
    }
}

/// The sums of `G` groups from `g0` against `N` tokens from `t0`, four registers (of four
/// rows) per group and token.
///
/// # Safety
/// `m` holds an N:M lane matrix reaching group `g0 + G − 1` and activations of tokens
/// `t0..t0 + N`; NEON with the dot-product extension (the entry point's features).
// Register tiles: the indices name registers (rows, tokens), as in `packed`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<const DP: bool, const L: u8, const G: usize, const N: usize>(
    m: &MatmulArgs<'_>,
    g0: usize,
    t0: usize,
) -> [[[float32x4_t; 4]; N]; G] {
    let nb = m.k / 64;
    let (gb, d_at) = geometry(L);
    let (w, a) = (m.w.as_ptr(), m.act.as_ptr());
    let (low, high, bias) = (vdupq_n_u8(0x0f), vdupq_n_u8(0xf0), vdupq_n_u8(0x80));
    let (three, second) = (vdupq_n_u8(3), vreinterpretq_u8_u32(vdupq_n_u32(0x0404_0000)));
    let mut acc = [[[vdupq_n_f32(0.0); 4]; N]; G];
    for b in 0..nb {
        let mut wb = [w; G];
        let mut dw = [[vdupq_n_f32(0.0); 4]; G];
        for i in 0..G {
            wb[i] = w.add(((g0 + i) * nb + b) * gb);
            for (q, d) in dw[i].iter_mut().enumerate() {
                let s = widen_f16(vld1_u16(wb[i].add(d_at + 8 * q) as *const u16));
                // The 4-bit sums are 16·Σc·q (the values' nibble in the high half of a byte).
                *d = if L == Q8 { s } else { vmulq_n_f32(s, 0.0625) };
            }
        }
        for h in 0..2 {
            // Per register of four rows: `sdot` lanes (DP), or two pairwise-added halves.
            let mut s = [[[[vdupq_n_s32(0); 2]; 4]; N]; G];
            for c in 4 * h..4 * h + 4 {
                let mut table = [vdupq_n_s8(0); N];
                for (t, tb) in table.iter_mut().enumerate() {
                    let at = a.add((t0 + t) * m.act_bytes + (2 * b + h) * AB + 4 + 8 * (c - 4 * h));
                    *tb = vreinterpretq_s8_u8(veorq_u8(
                        vreinterpretq_u8_u64(vld1q_dup_u64(at as *const u64)),
                        bias,
                    ));
                }
                for i in 0..G {
                    for q in 0..4 {
                        let (idx, wv) = match L {
                            Q8 => {
                                // Positions: chunk 2p's in the low nibbles of word p, 2p + 1's
                                // in the high ones; the codes as they are.
                                let p = vld1q_u8(wb[i].add(P8 + 64 * (c / 2) + 16 * q));
                                let idx = if c % 2 == 0 { vandq_u8(p, low) } else { vshrq_n_u8::<4>(p) };
                                (idx, vld1q_s8(wb[i].add(64 * c + 16 * q) as *const i8))
                            }
                            C24 => {
                                // Positions: field c % 4 of word c / 4 (byte shifts), bit 2
                                // inserted for kept inputs 2 and 3; values: the high nibbles
                                // of word c / 2 for even chunks, the low ones shifted up.
                                let p = vld1q_u8(wb[i].add(P24 + 64 * (c / 4) + 16 * q));
                                let idx = match c % 4 {
                                    0 => vbslq_u8(three, p, second),
                                    1 => vbslq_u8(three, vshrq_n_u8::<2>(p), second),
                                    2 => vbslq_u8(three, vshrq_n_u8::<4>(p), second),
                                    _ => vorrq_u8(vshrq_n_u8::<6>(p), second),
                                };
                                let v = vld1q_u8(wb[i].add(64 * (c / 2) + 16 * q));
                                let v = if c % 2 == 0 { vandq_u8(v, high) } else { vshlq_n_u8::<4>(v) };
                                (idx, vreinterpretq_s8_u8(v))
                            }
                            _ => {
                                let raw = vld1q_u8(wb[i].add(64 * c + 16 * q));
                                (vandq_u8(raw, low), vreinterpretq_s8_u8(vandq_u8(raw, high)))
                            }
                        };
                        for t in 0..N {
                            let x = vqtbl1q_s8(table[t], idx);
                            let acc = &mut s[i][t][q];
                            if DP {
                                acc[0] = sdot(acc[0], x, wv);
                            } else {
                                // Products within ±128·127 in i16, pairs added into i32:
                                // lanes (row, kept 0+1 / 2+3) of rows 0–1 and of rows 2–3.
                                acc[0] = vpadalq_s16(acc[0], vmull_s8(vget_low_s8(x), vget_low_s8(wv)));
                                acc[1] = vpadalq_s16(acc[1], vmull_high_s8(x, wv));
                            }
                        }
                    }
                }
            }
            for i in 0..G {
                for t in 0..N {
                    let at = a.add((t0 + t) * m.act_bytes + (2 * b + h) * AB);
                    let da = (at as *const f32).read_unaligned();
                    for q in 0..4 {
                        let sum = if DP { s[i][t][q][0] } else { vpaddq_s32(s[i][t][q][0], s[i][t][q][1]) };
                        let v = vcvtq_f32_s32(sum);
                        acc[i][t][q] = vfmaq_f32(acc[i][t][q], v, vmulq_n_f32(dw[i][q], da));
                    }
                }
            }
        }
    }
    acc
}

/// Writes the sums of groups `g0..g0 + G` for tokens `t0..`: the rows inside the range.
#[inline(always)]
unsafe fn store<const G: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    g0: usize,
    t0: usize,
    f: &[[[float32x4_t; 4]; N]; G],
) {
    for (i, fg) in f.iter().enumerate() {
        let r0 = (g0 + i) * ROWS;
        for (t, v) in fg.iter().enumerate() {
            let mut lanes = [0.0f32; ROWS];
            for (q, &x) in v.iter().enumerate() {
                vst1q_f32(lanes.as_mut_ptr().add(4 * q), x);
            }
            m.store_rows(t0 + t, r0, &lanes);
        }
    }
}

/// `G` groups from `g` against every token: tiles of 2 tokens, then one.
#[inline(always)]
unsafe fn groups<const DP: bool, const L: u8, const G: usize>(m: &mut MatmulArgs<'_>, g: usize) {
    let mut t = 0;
    // Without `sdot` a token's accumulators take twice the registers: one token at a time.
    while DP && G == 1 && t + 2 <= m.n {
        let f = tile::<DP, L, G, 2>(m, g, t);
        store(m, g, t, &f);
        t += 2;
    }
    while t < m.n {
        let f = tile::<DP, L, G, 1>(m, g, t);
        store(m, g, t, &f);
        t += 1;
    }
}

/// Every group of the row range: one token two groups at a time, several one.
#[inline(always)]
unsafe fn drive<const DP: bool, const L: u8>(m: &mut MatmulArgs<'_>) {
    let (mut g, end) = (m.rows.start / ROWS, m.rows.end.div_ceil(ROWS));
    if DP && m.n == 1 {
        while g + 2 <= end {
            groups::<DP, L, 2>(m, g);
            g += 2;
        }
    }
    while g < end {
        groups::<DP, L, 1>(m, g);
        g += 1;
    }
}

/// The product of a 4-bit N:M lane matrix (`Q4_S48`) with `Act::Q8U` activations. One token
/// takes two groups at a time (eight independent `sdot` chains sharing each activation
/// table), several tokens one group by two tokens.
///
/// # Safety
/// NEON with the dot-product extension; `m` checked by the caller (`MatmulCall`) for the
/// packed layout.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn dotprod_q4_nm(m: &mut MatmulArgs<'_>) {
    drive::<true, WIDE>(m)
}

/// The product of a compact 2:4 lane matrix (`Q4_S24`) with `Act::Q8U` activations: each
/// chunk's `tbl` indices from a byte shift and a bit select of its position word, its values
/// from the high or low nibbles of its value word; otherwise as [`dotprod_q4_nm`].
///
/// # Safety
/// NEON with the dot-product extension; `m` checked by the caller (`MatmulCall`) for the
/// packed layout.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn dotprod_q4_s24(m: &mut MatmulArgs<'_>) {
    drive::<true, C24>(m)
}

/// The product of an 8-bit N:M lane matrix (`Q8_S24` or `Q8_S48`) with `Act::Q8U`
/// activations: the positions from the position words, the codes as they are; otherwise as
/// [`dotprod_q4_nm`].
///
/// # Safety
/// NEON with the dot-product extension; `m` checked by the caller (`MatmulCall`) for the
/// packed layout.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn dotprod_q8_nm(m: &mut MatmulArgs<'_>) {
    drive::<true, Q8>(m)
}

/// [`dotprod_q4_nm`] on plain NEON (e.g. Cortex-A53/A72 boards): widening multiplies of the
/// gathered activations by the lane bytes into i16 (each product within ±128·127), pairs
/// added into i32 per chunk, the rows' sums formed per half by one pairwise add; one group
/// and one token at a time. The same exact sums, the same bits.
///
/// # Safety
/// NEON; `m` checked by the caller (`MatmulCall`) for the packed layout.
#[target_feature(enable = "neon")]
pub(super) unsafe fn neon_q4_nm(m: &mut MatmulArgs<'_>) {
    drive::<false, WIDE>(m)
}

/// [`dotprod_q4_s24`] on plain NEON, as [`neon_q4_nm`].
///
/// # Safety
/// NEON; `m` checked by the caller (`MatmulCall`) for the packed layout.
#[target_feature(enable = "neon")]
pub(super) unsafe fn neon_q4_s24(m: &mut MatmulArgs<'_>) {
    drive::<false, C24>(m)
}

/// [`dotprod_q8_nm`] on plain NEON, as [`neon_q4_nm`].
///
/// # Safety
/// NEON; `m` checked by the caller (`MatmulCall`) for the packed layout.
#[target_feature(enable = "neon")]
pub(super) unsafe fn neon_q8_nm(m: &mut MatmulArgs<'_>) {
    drive::<false, Q8>(m)
}
