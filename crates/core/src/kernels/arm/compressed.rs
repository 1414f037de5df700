//! One-token products of the N:M sparse types on NEON through *compressed activations*, as
//! on x86 (`x86/compressed.rs`): instead of expanding each block's 32 kept values into its 64
//! inputs, the block's 64 activations (four registers) are compressed to the 32 the row keeps,
//! in the order of its kept values, by two four-register table lookups (`tbl`), and meet the
//! kept values as a dense block would (`sdot` with the dot-product extension, widening
//! multiplies without).
//!
//! The lookups' control is each chunk's four kept positions plus the chunk's offset, kept
//! values 0..16 (inputs 0..32, activation block `2b`) in one register and 16..32 in the other.
//! 2:4 computes it in vector registers: the eight 6-bit codes are brought to 16-bit lanes
//! (`tbl`, a per-lane `ushl`, a mask), `p_hi = ⌊43c/256⌋ = ⌊c/6⌋` and `p_lo = c − 6·p_hi`
//! (widening multiply, narrowing shift, multiply-subtract), and a 16-entry `tbl` of the 2-of-4
//! patterns' positions gives the bytes. 4:8's 70 patterns do not fit a register: each 7-bit
//! code indexes a 128-entry table of four positions. Invalid codes select positions past the
//! 64 activations (or unspecified ones within them): `tbl` reads those as zero, so every read
//! stays in the registers (the format documents invalid codes' results as unspecified).
//!
//! The integer sums are those of the scalar oracle; the float order is the expanding
//! kernels' (four lanes, then a horizontal sum), within `Tolerance::sum_reorder`.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{dot16, h2f, load, load_s, s8};
use crate::kernels::MatmulArgs;
use crate::quant::sparse::{PAIR_POSITIONS_2_4, POSITIONS_4_8};

/// For `tbl`: 16-bit lane `j` of the code field gets the two bytes holding bits `6j..6j + 6`.
const CODE_BYTES: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut j = 0;
    while j < 8 {
        t[2 * j] = (6 * j / 8) as u8;
        t[2 * j + 1] = (6 * j / 8 + 1) as u8;
        j += 1;
    }
    t
};

/// The right shift (negative `ushl`) that brings code `j` to bit 0 of its lane.
const CODE_SHIFTS: [i16; 8] = {
    let mut t = [0i16; 8];
    let mut j = 0;
    while j < 8 {
        t[j] = -((6 * j % 8) as i16);
        j += 1;
    }
    t
};

/// Byte offsets of the 2:4 control: chunk `j` (of eight) starts at input `8j`, its second
/// group four further on; `[0]` for kept values 0..16, `[1]` for 16..32.
const OFFSETS_2_4: [[u8; 16]; 2] = {
    let mut t = [[0u8; 16]; 2];
    let mut i = 0;
    while i < 32 {
        t[i / 16][i % 16] = (8 * (i / 4) + 4 * (i % 4 / 2)) as u8;
        i += 1;
    }
    t
};

/// `prfm pldl1keep` of the line at `p`.
#[inline(always)]
fn prefetch(p: *const u8) {
    // SAFETY: a prefetch does not fault, whatever the address, and touches no register or
    // flag the compiler relies on.
    unsafe { asm!("prfm pldl1keep, [{p}]", p = in(reg) p, options(nostack, readonly, preserves_flags)) }
}

/// The loop-invariant registers of the 2:4 control.
#[derive(Clone, Copy)]
struct Consts {
    code_bytes: uint8x16_t,
    code_shifts: int16x8_t,
    pairs: uint8x16_t,
    offsets: [uint8x16_t; 2],
}

/// The two lookup controls of the N:M block at `p` (`BITS`-bit codes from byte 2): computed
/// for 2:4, from [`POSITIONS_4_8`] for 4:8.
#[inline(always)]
unsafe fn control<const BITS: usize>(p: *const u8, k: &Consts) -> [uint8x16_t; 2] {
    let word = (p.add(2) as *const u64).read_unaligned();
    if BITS == 6 {
        let w = vreinterpretq_u16_u8(vqtbl1q_u8(vreinterpretq_u8_u64(vdupq_n_u64(word)), k.code_bytes));
        let c = vmovn_u16(vandq_u16(vshlq_u16(w, k.code_shifts), vdupq_n_u16(63)));
        let hi = vshrn_n_u16::<8>(vmull_u8(c, vdup_n_u8(43)));
        let lo = vmls_u8(c, hi, vdup_n_u8(6));
        // Chunk j: bytes 2j (its first group's pattern), 2j + 1 (its second's).
        let lh = vcombine_u8(vzip1_u8(lo, hi), vzip2_u8(lo, hi));
        let lh6 = vaddq_u8(lh, vdupq_n_u8(6));
        [
            vaddq_u8(vqtbl1q_u8(k.pairs, vzip1q_u8(lh, lh6)), k.offsets[0]),
            vaddq_u8(vqtbl1q_u8(k.pairs, vzip2q_u8(lh, lh6)), k.offsets[1]),
        ]
    } else {
        debug_assert_eq!(BITS, 7);
        // In bounds: 7-bit indices, 128 entries; chunk j's positions move on by 8j.
        let at = |c: usize| {
            (*POSITIONS_4_8.get_unchecked((word >> (7 * c)) as usize & 127) as u64)
                .wrapping_add(0x0808_0808 * (c as u64 % 4))
        };
        let half = |c: usize| {
            vcombine_u8(vcreate_u8(at(c) | at(c + 1) << 32), vcreate_u8(at(c + 2) | at(c + 3) << 32))
        };
        [half(0), vaddq_u8(half(4), vdupq_n_u8(32))]
    }
}

/// Rows `r0..r0 + R` of an N:M format (`W` bytes per block, `BITS`-bit codes, kept values at
/// byte `QS`, `Q4`: 4-bit values, else 8-bit) against the Q8_0 activation row.
#[inline(always)]
unsafe fn rows<
    const W: usize,
    const BITS: usize,
    const QS: usize,
    const Q4: bool,
    const DP: bool,
    const R: usize,
>(
    m: &mut MatmulArgs<'_>,
    r0: usize,
    k: &Consts,
) {
    let nb = m.k / 64;
    let rb = m.row_bytes;
    let w0 = m.w.as_ptr().add(r0 * rb);
    let a0 = m.act.as_ptr();
    let ahead = (2 * R * rb).max(4096);
    let (nib, eight) = (vdupq_n_u8(0x0f), vdupq_n_s8(8));
    let mut acc = [vdupq_n_f32(0.0); R];
    for b in 0..nb {
        let ap = a0.add(68 * b);
        let a = int8x16x4_t(load_s(ap.add(2)), load_s(ap.add(18)), load_s(ap.add(36)), load_s(ap.add(52)));
        let (da0, da1) = (h2f(ap), h2f(ap.add(34)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let p = w0.add(r * rb + b * W);
            prefetch(p.wrapping_add(ahead));
            let [c0, c1] = control::<BITS>(p, k);
            let (k0, k1) = (vqtbl4q_s8(a, c0), vqtbl4q_s8(a, c1));
            let (v0, v1) = if Q4 {
                let x = load(p.add(QS));
                (vsubq_s8(s8(vandq_u8(x, nib)), eight), vsubq_s8(s8(vshrq_n_u8::<4>(x)), eight))
            } else {
                (load_s(p.add(QS)), load_s(p.add(QS + 16)))
            };
            let i0 = dot16::<DP>(vdupq_n_s32(0), v0, k0);
            let i1 = dot16::<DP>(vdupq_n_s32(0), v1, k1);
            let dw = h2f(p);
            *acc = vfmaq_n_f32(*acc, vcvtq_f32_s32(i0), dw * da0);
            *acc = vfmaq_n_f32(*acc, vcvtq_f32_s32(i1), dw * da1);
        }
    }
    let col = r0 - m.rows.start;
    for (r, &v) in acc.iter().enumerate() {
        m.out[col + r] = vaddvq_f32(v);
    }
}

/// The one-token product of [`MatmulArgs`] (`m.n == 1`) of an N:M format: `W` bytes per
/// block, `BITS`-bit codes (6: 2:4, 7: 4:8) with the kept values at byte `QS`, `Q4` for 4-bit
/// values; `DP`: `sdot` may be used.
///
/// # Safety
/// `m` satisfies the bounds documented on [`MatmulArgs`] with `n = 1`; NEON (and the
/// dot-product extension with `DP`), inlined into a `#[target_feature]` entry point.
#[inline(always)]
pub(super) unsafe fn matvec<
    const W: usize,
    const BITS: usize,
    const QS: usize,
    const Q4: bool,
    const DP: bool,
>(
    m: &mut MatmulArgs<'_>,
) {
    debug_assert_eq!(m.n, 1);
    let k = Consts {
        code_bytes: vld1q_u8(CODE_BYTES.as_ptr()),
        code_shifts: vld1q_s16(CODE_SHIFTS.as_ptr()),
        pairs: vld1q_u8(PAIR_POSITIONS_2_4.as_ptr()),
        offsets: [vld1q_u8(OFFSETS_2_4[0].as_ptr()), vld1q_u8(OFFSETS_2_4[1].as_ptr())],
    };
    // Two rows share each block's activation registers (four rows: the same instruction
    // count under QEMU, with spills).
    let mut r = m.rows.start;
    while r + 2 <= m.rows.end {
        rows::<W, BITS, QS, Q4, DP, 2>(m, r, &k);
        r += 2;
    }
    while r < m.rows.end {
        rows::<W, BITS, QS, Q4, DP, 1>(m, r, &k);
        r += 1;
    }
}
