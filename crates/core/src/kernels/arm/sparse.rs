//! NEON kernels of the sparse formats (`quant::sparse`) against Q8_0 activations: the N:M
//! types (`Q4_S24`, `Q4_S48`, `Q8_S24`, `Q8_S48`) and the bitmap type `Q8_SB`.
//!
//! A 64-input weight block is expanded in registers into its 64 dense signed codes (zeros
//! where dropped) with one table lookup (`tbl`) per two 8-input chunks: the chunk's control
//! comes from the shared per-code (N:M) or per-mask-byte (`Q8_SB`) tables of
//! `quant::sparse` — byte `i` the rank of input `i` among the chunk's kept values, or `0x80`,
//! which `tbl` reads as zero — offset to where the chunk's kept values sit in the register.
//! The dense codes then meet the block's two Q8_0 activation blocks as the dense Q8_0 kernel
//! does ([`super::dot16`]: `sdot` with the dot-product extension, widening multiplies
//! without), one integer sum per 32 inputs, scaled by the product of the scales.
//!
//! The integer sums are the oracle's; the float sums run in another order (four lanes, then a
//! horizontal sum), so the results agree with the oracle within `Tolerance::sum_reorder`.
//! Invalid N:M codes index tables padded to the codes' bit width and decode to "keep
//! nothing"; `Q8_SB` rows keeping more than `c` values read no value past their row's `c`
//! bytes (the excess counts as zero), as on x86.

use std::arch::aarch64::*;

use super::{dot16, h2f, load, load_s, s8, Fmt};
use crate::kernels::MatmulArgs;
use crate::quant::sparse::{CTRL_2_4, CTRL_4_8, CTRL_BYTE};

/// An N:M or bitmap block expanded to 64 signed codes (inputs `16q..16q + 16` in `w[q]`) and
/// its scale.
#[derive(Clone, Copy)]
pub(super) struct SW {
    w: [int8x16_t; 4],
    d: f32,
}

/// Two Q8_0 activation blocks (the inputs of one 64-input block).
#[derive(Clone, Copy)]
pub(super) struct SA {
    q: [int8x16_t; 4],
    d: [f32; 2],
}

/// The block `w` against the activation blocks `a`: one integer sum per 32 inputs, each
/// fused-multiply-added with the product of the scales.
#[inline(always)]
unsafe fn dot_sw<const DP: bool>(w: &SW, a: &SA, acc: float32x4_t) -> float32x4_t {
    let i0 = dot16::<DP>(dot16::<DP>(vdupq_n_s32(0), w.w[0], a.q[0]), w.w[1], a.q[1]);
    let i1 = dot16::<DP>(dot16::<DP>(vdupq_n_s32(0), w.w[2], a.q[2]), w.w[3], a.q[3]);
    let acc = vfmaq_n_f32(acc, vcvtq_f32_s32(i0), w.d * a.d[0]);
    vfmaq_n_f32(acc, vcvtq_f32_s32(i1), w.d * a.d[1])
}

#[inline(always)]
unsafe fn pa_pair(p: *const u8) -> SA {
    SA {
        q: [load_s(p.add(2)), load_s(p.add(18)), load_s(p.add(36)), load_s(p.add(52))],
        d: [h2f(p), h2f(p.add(34))],
    }
}

/// `4·j` in every byte: where chunk `j` (of four) of a half finds its kept values among the
/// half's 16. A dropped input's `0x80` keeps its high bit, so it still reads as zero.
const OFFSET: [u64; 4] = [0, 0x0404_0404_0404_0404, 0x0808_0808_0808_0808, 0x0c0c_0c0c_0c0c_0c0c];

/// Expands an N:M block with `B`-bit codes (6 or 7) and `Q4` (4-bit) or 8-bit values at
/// offset `QS`; `table` is the per-code chunk control (2^B entries).
#[inline(always)]
unsafe fn pw_nm<const B: u32, const QS: usize, const Q4: bool>(p: *const u8, table: &[u64]) -> SW {
    // The code field as one little-endian integer (8 bytes from offset 2: within the block).
    let bits = u64::from_le((p.add(2) as *const u64).read_unaligned());
    let mask = (1u64 << B) - 1;
    // The kept values of each 32-input half, 16 each.
    let kept = if Q4 {
        let x = load(p.add(QS));
        let eight = vdupq_n_s8(8);
        [vsubq_s8(s8(vandq_u8(x, vdupq_n_u8(0x0f))), eight), vsubq_s8(s8(vshrq_n_u8::<4>(x)), eight)]
    } else {
        [load_s(p.add(QS)), load_s(p.add(QS + 16))]
    };
    let mut w = [vdupq_n_s8(0); 4];
    for (q, w) in w.iter_mut().enumerate() {
        let (c0, c1) = (2 * q as u32, 2 * q as u32 + 1);
        // Codes are below 2^B, the tables' length.
        let lo = *table.get_unchecked(((bits >> (B * c0)) & mask) as usize) | OFFSET[(2 * q) % 4];
        let hi = *table.get_unchecked(((bits >> (B * c1)) & mask) as usize) | OFFSET[(2 * q + 1) % 4];
        *w = vqtbl1q_s8(kept[q / 2], vcombine_u8(vcreate_u8(lo), vcreate_u8(hi)));
    }
    SW { w, d: h2f(p) }
}

macro_rules! nm_fmt {
    ($name:ident, $w:expr, $b:expr, $qs:expr, $q4:expr, $table:ident) => {
        pub(super) struct $name<const DP: bool>;
        impl<const DP: bool> $name<DP> {
            /// Block bytes, code bits, offset of the kept values, 4-bit values: what the
            /// one-token kernels (`compressed::matvec`) take.
            const NM: (usize, usize, usize, bool) = ($w, $b, $qs, $q4);
        }
        // SAFETY: `pw` reads one block (`W` bytes; the code field as 8 bytes from offset 2,
        // within the block), `pa` two Q8_0 blocks; an all-zero `SW` is valid; `dot16::<true>`
        // is only reached with `DP`, which the dotprod entry points set.
        unsafe impl<const DP: bool> Fmt for $name<DP> {
            const BLOCK: usize = 64;
            const W: usize = $w;
            const A: usize = 68;
            const UNROLL: usize = 2;
            const MV_ROWS: usize = 1;
            type Pw = SW;
            type Pa = SA;
            #[inline(always)]
            unsafe fn pw(p: *const u8) -> SW {
                pw_nm::<$b, $qs, $q4>(p, &$table)
            }
            #[inline(always)]
            unsafe fn pa(p: *const u8) -> SA {
                pa_pair(p)
            }
            #[inline(always)]
            unsafe fn dot(w: &SW, a: &SA, acc: float32x4_t) -> float32x4_t {
                dot_sw::<DP>(w, a, acc)
            }
        }
    };
}

nm_fmt!(Q4S24, 24, 6, 8, true, CTRL_2_4);
nm_fmt!(Q4S48, 25, 7, 9, true, CTRL_4_8);
nm_fmt!(Q8S24, 40, 6, 8, false, CTRL_2_4);
nm_fmt!(Q8S48, 41, 7, 9, false, CTRL_4_8);

/// Expands one `Q8_SB` block: metadata at `mb`, kept codes from `vals[o..]`, the row's values
/// ending at `vals[c]` and the values tensor at `vals[room]`. Returns the block and the next
/// block's offset.
#[inline(always)]
unsafe fn pw_bitmap(mb: *const u8, vals: *const u8, o: usize, c: usize, room: usize) -> (SW, usize) {
    let mask = u64::from_le((mb.add(2) as *const u64).read_unaligned());
    // Kept codes per mask byte (`cnt`), and their running sums by one multiply: byte j of
    // `before` is where chunk j's kept codes start (at most 56), the top byte of `upto` the
    // block's count (at most 64).
    let counts = vget_lane_u64::<0>(vreinterpret_u64_u8(vcnt_u8(vcreate_u8(mask))));
    let upto = counts.wrapping_mul(0x0101_0101_0101_0101);
    let before = upto << 8;
    let next = o + (upto >> 56) as usize;
    // The lane of chunks 2q, 2q + 1 reads 16 bytes from chunk 2q's first kept code (at most 48
    // codes in), of which it uses the chunks' kept codes: straight from the values where 64
    // bytes lie in the tensor and the block's codes in the row (the lanes may read into the
    // next row, never using those bytes); otherwise from a zero-padded copy of what is left of
    // the row (values past `c` count as zero, as in the oracle).
    let mut tail = [0u8; 64];
    let src = if o + 64 <= room && next <= c {
        vals.add(o)
    } else {
        let n = c.saturating_sub(o).min(64);
        std::ptr::copy_nonoverlapping(vals.add(o.min(c)), tail.as_mut_ptr(), n);
        tail.as_ptr()
    };
    let mut w = [vdupq_n_s8(0); 4];
    for (q, w) in w.iter_mut().enumerate() {
        let (b0, b1) = ((mask >> (16 * q)) as u8, (mask >> (16 * q + 8)) as u8);
        let lane = vld1q_u8(src.add((before >> (16 * q)) as u8 as usize));
        // The second chunk's ranks move on by the first chunk's count (dropped inputs' 0x80
        // stay at or above 0x80: zero).
        let shift = (counts >> (16 * q) & 0xff).wrapping_mul(0x0101_0101_0101_0101);
        let ctl = vcombine_u8(vcreate_u8(CTRL_BYTE[b0 as usize]), vcreate_u8(CTRL_BYTE[b1 as usize] + shift));
        *w = s8(vqtbl1q_u8(lane, ctl));
    }
    (SW { w, d: h2f(mb) }, next)
}

/// One `Q8_SB` row against tokens `t0..t0 + N`.
#[inline(always)]
unsafe fn bitmap_row<const DP: bool, const N: usize>(
    m: &mut MatmulArgs<'_>,
    values: &[u8],
    c: usize,
    r: usize,
    t0: usize,
) {
    let nb = m.k / 64;
    let mb = m.w.as_ptr().add(r * m.row_bytes);
    let vals = values.as_ptr().add(r * c);
    let room = values.len() - r * c;
    let a0 = m.act.as_ptr().add(t0 * m.act_bytes);
    let mut acc = [vdupq_n_f32(0.0); N];
    let mut o = 0;
    for b in 0..nb {
        let (w, next) = pw_bitmap(mb.add(10 * b), vals, o, c, room);
        o = next;
        for (t, acc) in acc.iter_mut().enumerate() {
            *acc = dot_sw::<DP>(&w, &pa_pair(a0.add(t * m.act_bytes + 68 * b)), *acc);
        }
    }
    let col = r - m.rows.start;
    for (t, &v) in acc.iter().enumerate() {
        m.out[(t0 + t) * m.out_stride + col] = vaddvq_f32(v);
    }
}

/// The `Q8_SB` product: each row expanded once per block for up to four tokens at a time.
///
/// # Safety
/// `m` satisfies the bounds of [`MatmulArgs`] with `w` the `Q8_SB` metadata; `values` holds
/// `c` bytes for every row up to `m.rows.end`; with `DP`, the CPU has the dot-product
/// extension.
#[inline(always)]
unsafe fn matmul_bitmap<const DP: bool>(m: &mut MatmulArgs<'_>, values: &[u8], c: usize) {
    for r in m.rows.clone() {
        let mut t = 0;
        while t + 4 <= m.n {
            bitmap_row::<DP, 4>(m, values, c, r, t);
            t += 4;
        }
        while t < m.n {
            bitmap_row::<DP, 1>(m, values, c, r, t);
            t += 1;
        }
    }
}

macro_rules! entries {
    ($mod:ident, $features:literal, $dp:literal;
     $($fmt:ident => $vd:ident, $mm:ident;)*) => {
        /// The sparse formats' entry points with these features.
        pub(super) mod $mod {
            use super::{Q4S24, Q4S48, Q8S24, Q8S48};
            use crate::kernels::MatmulArgs;
            $(
                /// # Safety
                /// Rows of exactly `k` values of their formats; the CPU has the enabled features.
                #[target_feature(enable = $features)]
                pub(in crate::kernels::arm) unsafe fn $vd(w: &[u8], a: &[u8], k: usize) -> f32 {
                    crate::kernels::arm::drive::vec_dot::<$fmt<$dp>>(w, a, k)
                }
                /// # Safety
                /// `m` satisfies the bounds of [`MatmulArgs`]; the CPU has the enabled features.
                #[target_feature(enable = $features)]
                pub(in crate::kernels::arm) unsafe fn $mm(m: &mut MatmulArgs<'_>) {
                    if m.n == 1 {
                        // One token: compress the activations instead of expanding the rows.
                        crate::kernels::arm::compressed::matvec::<
                            { $fmt::<$dp>::NM.0 },
                            { $fmt::<$dp>::NM.1 },
                            { $fmt::<$dp>::NM.2 },
                            { $fmt::<$dp>::NM.3 },
                            $dp,
                        >(m)
                    } else {
                        crate::kernels::arm::drive::matmul::<$fmt<$dp>>(m)
                    }
                }
            )*

            /// # Safety
            /// `m` satisfies the bounds of [`MatmulArgs`] with `w` the `Q8_SB` metadata;
            /// `values` holds `c` bytes for every row up to `m.rows.end`; the CPU has the
            /// enabled features.
            #[target_feature(enable = $features)]
            pub(in crate::kernels::arm) unsafe fn matmul_bitmap(m: &mut MatmulArgs<'_>, values: &[u8], c: usize) {
                super::matmul_bitmap::<$dp>(m, values, c)
            }
        }
    };
}

entries!(plain, "neon", false;
    Q4S24 => vec_dot_q4_s24, matmul_q4_s24;
    Q4S48 => vec_dot_q4_s48, matmul_q4_s48;
    Q8S24 => vec_dot_q8_s24, matmul_q8_s24;
    Q8S48 => vec_dot_q8_s48, matmul_q8_s48;
);
entries!(sdot, "neon,dotprod", true;
    Q4S24 => vec_dot_q4_s24, matmul_q4_s24;
    Q4S48 => vec_dot_q4_s48, matmul_q4_s48;
    Q8S24 => vec_dot_q8_s24, matmul_q8_s24;
    Q8S48 => vec_dot_q8_s48, matmul_q8_s48;
);
