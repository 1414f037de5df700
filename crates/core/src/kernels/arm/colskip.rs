//! Column-skipping products (`kernels::colskip`) on NEON: one kernel per type for every
//! AArch64 tier (they use neither `sdot` nor `smmla`), and for Q8_0 with the dot-product
//! extension a four-column `sdot` kernel ([`unit_q8_dot`]).
//!
//! A tile is computed one 64-row unit at a time. Per active column (a non-zero activation
//! code `q`) the unit's run of 32 bytes (byte `i`: rows `i` and `32 + i`) splits into four
//! registers of 16 unsigned codes, one row per byte (rows `0..16`, `16..32` from the low
//! nibbles, `32..48`, `48..64` from the high ones; Q5_0 ORs in `16` where the fifth-bit plane
//! has the row's bit), and widening multiply-accumulates (`smlal`, `smlal2`) add `u·q` into
//! eight registers of 16-bit partial sums, one row per lane (wrapping). After a chunk of
//! columns (a whole block for Q4_0: at most 32 active; 16 for Q5_0) `bias·Σq` is subtracted:
//! the true sum `Σ (u − bias)·q` fits an i16, so the wrapped result is exact. Q4_0 widens it
//! straight into the float work; Q5_0 adds its chunks into i32 block sums first. Q8_0
//! ([`unit_q8`]) multiplies its signed codes two columns at a time into 16-bit sums and widens
//! them into i32 block sums. Per block the float work is the oracle's `acc += (d_w·d_a)·Σ`
//! (two multiplies and an add, no fused multiply-add), so the bits are the oracle's, as on
//! x86.
//!
//! Under QEMU (`bench/arm-insn-counts --colskip`, [1536 × 576]) the Q4_0 product at 40 % zero
//! inputs takes 9.7 instructions per 32 dense-equivalent multiply-adds against 11.9 (dotprod)
//! and 14.4 (plain NEON) for the dense packed one-token product (the scalar oracle, which ran
//! before, 260).

use std::arch::aarch64::*;
use std::arch::asm;

use super::super::colskip::{prefetch_ahead, simd_block_bytes, simd_params, ColArgs};
use super::{sdot, widen_f16};
use crate::DType;

/// `prfm pldl1keep` of the line at `p`, for [`prefetch_ahead`].
#[inline(always)]
fn l1(p: *const u8) {
    // SAFETY: a prefetch does not fault, whatever the address, and touches no register or
    // flag the compiler relies on.
    unsafe { asm!("prfm pldl1keep, [{p}]", p = in(reg) p, options(nostack, readonly, preserves_flags)) }
}

/// Byte `l` of the fifth-bit word (a u64 per unit) that holds row `16g + l`'s bit, per
/// 16-row group `g`: bytes `2g` and `2g + 1`, each repeated eight times.
const BIT_BYTES: [[u8; 16]; 4] = {
    let mut t = [[0u8; 16]; 4];
    let mut g = 0;
    while g < 4 {
        let mut l = 0;
        while l < 16 {
            t[g][l] = (2 * g + l / 8) as u8;
            l += 1;
        }
        g += 1;
    }
    t
};

/// The bit of row `l % 8` within its byte.
const BIT_SELECT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/// The 16-bit sums `Σ (u − bias)·q` of unit `u`'s 64 rows (rows `8i..8i + 8` in `[i]`) over
/// the active columns `cols` (codes `codes`) of the block at `bb` (a tile of `h` rows), whose
/// nibble runs of this activation block start at `nib`; `corr` is `bias·Σq`. Exact while the
/// true sums fit an i16 (the chunk sizes of `simd_params`): the products are added wrapping
/// and `corr` subtracted at the end.
///
/// # Safety
/// `bb` is a block of a tile of `h` rows of the layout and `nib` its runs of 32 columns,
/// `u < h/64`, `cols` below 32; NEON.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_sums<const Q5: bool>(
    bb: *const u8,
    nib: *const u8,
    h: usize,
    u: usize,
    cols: &[u32],
    codes: &[i16],
    corr: i32,
) -> [int16x8_t; 8] {
    let (col, high_off, hcol) = (h / 2, 2 * h + 32 * (h / 2), h / 8);
    let m0f = vdupq_n_u8(0x0f);
    let sixteen = vdupq_n_u8(16);
    let bitsel = vld1q_u8(BIT_SELECT.as_ptr());
    let mut s16 = [vdupq_n_s16(0); 8];
    for (&j, &q) in cols.iter().zip(codes) {
        let j = j as usize;
        let vq = vdupq_n_s8(q as i8);
        let p = nib.add(j * col + 32 * u);
        let (v0, v1) = (vld1q_u8(p), vld1q_u8(p.add(16)));
        let mut r = [vandq_u8(v0, m0f), vandq_u8(v1, m0f), vshrq_n_u8::<4>(v0), vshrq_n_u8::<4>(v1)];
        if Q5 {
            let bits = (bb.add(high_off + j * hcol + 8 * u) as *const u64).read_unaligned();
            let word = vreinterpretq_u8_u64(vdupq_n_u64(bits));
            for (g, x) in r.iter_mut().enumerate() {
                let rep = vqtbl1q_u8(word, vld1q_u8(BIT_BYTES[g].as_ptr()));
                *x = vorrq_u8(*x, vandq_u8(vtstq_u8(rep, bitsel), sixteen));
            }
        }
        for (g, &x) in r.iter().enumerate() {
            let x = vreinterpretq_s8_u8(x);
            s16[2 * g] = vmlal_s8(s16[2 * g], vget_low_s8(x), vget_low_s8(vq));
            s16[2 * g + 1] = vmlal_high_s8(s16[2 * g + 1], x, vq);
        }
    }
    let corr = vdupq_n_s16(corr as i16);
    s16.map(|x| vsubq_s16(x, corr))
}

/// Adds the 16-bit sums `s16` (rows `8i..8i + 8` in `[i]`) into the i32 sums `isum` (rows
/// `4q..4q + 4` in `[q]`).
///
/// # Safety
/// NEON.
#[inline(always)]
unsafe fn widen_add(isum: &mut [int32x4_t; 16], s16: &[int16x8_t; 8]) {
    for (i, &x) in s16.iter().enumerate() {
        isum[2 * i] = vaddw_s16(isum[2 * i], vget_low_s16(x));
        isum[2 * i + 1] = vaddw_high_s16(isum[2 * i + 1], x);
    }
}

/// The oracle's float work for one block of unit `u`: `acc[q] += (d_w·d_a)·Σ` for rows
/// `4q..4q + 4`, the weight scales at `bb` (row order), `d` the activation block's scale.
///
/// # Safety
/// `bb` is a block whose scales cover the unit's rows; NEON.
#[inline(always)]
unsafe fn add_block(acc: &mut [float32x4_t; 16], isum: &[int32x4_t; 16], bb: *const u8, u: usize, d: f32) {
    let vda = vdupq_n_f32(d);
    for (q, &v) in isum.iter().enumerate() {
        let dw = widen_f16(vld1_u16(bb.add(2 * (64 * u + 4 * q)) as *const u16));
        acc[q] = vaddq_f32(acc[q], vmulq_f32(vmulq_f32(dw, vda), vcvtq_f32_s32(v)));
    }
}

/// One 64-row unit `u` of a tile of `h` rows: `tile` its first block, `out` the unit's rows.
///
/// # Safety
/// `tile` holds the tile's `k/32` blocks of [`simd_block_bytes`]`(weight, h)` bytes, `u <
/// h/64`, `out` is valid for 64 writes; NEON.
#[inline(always)]
unsafe fn unit<const Q5: bool>(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    u: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let weight = if Q5 { DType::Q5_0 } else { DType::Q4_0 };
    let (bias, chunk) = simd_params(weight);
    let bbytes = simd_block_bytes(weight, h);
    let mut acc = [vdupq_n_f32(0.0); 16];
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        if u == 0 {
            prefetch_ahead(a, tile, h, weight, bi, next, l1);
        }
        let bb = tile.add(blk.index as usize * bbytes);
        let (s0, len) = (blk.start as usize, blk.len as usize);
        let cols = &a.act.cols[s0..s0 + len];
        let codes = &a.act.codes[s0..s0 + len];
        // Rows 4q..4q + 4 in [q].
        let mut isum = [vdupq_n_s32(0); 16];
        if !Q5 {
            // One chunk (at most 32 active columns), its code sum from the gather: the
            // partial sums are widened as they are.
            let s16 = chunk_sums::<false>(bb, bb.add(2 * h), h, u, cols, codes, blk.qsum * bias);
            for (i, &x) in s16.iter().enumerate() {
                isum[2 * i] = vmovl_s16(vget_low_s16(x));
                isum[2 * i + 1] = vmovl_high_s16(x);
            }
        } else {
            for (cols, codes) in cols.chunks(chunk).zip(codes.chunks(chunk)) {
                let s: i32 = codes.iter().map(|&q| q as i32).sum();
                widen_add(&mut isum, &chunk_sums::<true>(bb, bb.add(2 * h), h, u, cols, codes, s * bias));
            }
        }
        add_block(&mut acc, &isum, bb, u, blk.d);
    }
    for (q, &v) in acc.iter().enumerate() {
        vst1q_f32(out.add(4 * q), v);
    }
}

/// One 64-row unit `u` of a Q8_0 tile of `h` rows: per pair of active columns, the unit's
/// two runs of 64 signed codes are multiplied by their codes with widening multiplies
/// (`smull`, `smull2`) and multiply-accumulates (`smlal`, `smlal2`) into eight registers of
/// 16-bit sums (`|c_a·q_a + c_b·q_b| ≤ 2·128·127`: exact), which `saddw`/`saddw2` add into
/// i32 block sums. The float work is [`unit`]'s, so the bits are the oracle's.
///
/// # Safety
/// As [`unit`] (a Q8_0 tile).
#[inline(always)]
unsafe fn unit_q8(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    u: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let (_, chunk) = simd_params(DType::Q8_0);
    let bbytes = simd_block_bytes(DType::Q8_0, h);
    let mut acc = [vdupq_n_f32(0.0); 16];
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        if u == 0 {
            prefetch_ahead(a, tile, h, DType::Q8_0, bi, next, l1);
        }
        let bb = tile.add(blk.index as usize * bbytes);
        let runs = bb.add(2 * h + 64 * u);
        let (s0, len) = (blk.start as usize, blk.len as usize);
        let cols = &a.act.cols[s0..s0 + len];
        let codes = &a.act.codes[s0..s0 + len];
        // Rows 4i..4i + 4 in lane order.
        let mut isum = [vdupq_n_s32(0); 16];
        for (cp, qp) in cols.chunks(chunk).zip(codes.chunks(chunk)) {
            // [2g]: rows 16g..16g + 8, [2g + 1]: the next eight.
            let mut s16 = [vdupq_n_s16(0); 8];
            for (e, (&j, &q)) in cp.iter().zip(qp).enumerate() {
                let p = runs.add(j as usize * h) as *const i8;
                let vq = vdupq_n_s8(q as i8);
                for g in 0..4 {
                    let x = vld1q_s8(p.add(16 * g));
                    if e == 0 {
                        s16[2 * g] = vmull_s8(vget_low_s8(x), vget_low_s8(vq));
                        s16[2 * g + 1] = vmull_high_s8(x, vq);
                    } else {
                        s16[2 * g] = vmlal_s8(s16[2 * g], vget_low_s8(x), vget_low_s8(vq));
                        s16[2 * g + 1] = vmlal_high_s8(s16[2 * g + 1], x, vq);
                    }
                }
            }
            widen_add(&mut isum, &s16);
        }
        add_block(&mut acc, &isum, bb, u, blk.d);
    }
    for (q, &v) in acc.iter().enumerate() {
        vst1q_f32(out.add(4 * q), v);
    }
}

/// One 64-row unit `u` of a Q4_K tile of `h` rows: per active sub-block, [`chunk_sums`] of
/// its columns (codes centred on 8) in chunks of 16 (`|Σ (u − 8)·q| ≤ 16·8·128` fits an i16),
/// widened to i32 with `8·Σq` added back, times the rows' 6-bit scales (`mla`) into the
/// super-block's `s`, and the rows' minimums times `Σq` into its `m`; when the super-block
/// ends, the oracle's `acc += d·d_a·s − dmin·d_a·m`. Same bits as the oracle.
///
/// # Safety
/// As [`unit`] (a Q4_K tile of `k/256` blocks).
#[inline(always)]
unsafe fn unit_q4k(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    u: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let (bias, chunk) = simd_params(DType::Q4_K);
    let bbytes = simd_block_bytes(DType::Q4_K, h);
    let mut acc = [vdupq_n_f32(0.0); 16];
    // The current super-block's integer sums (rows 4q..4q + 4 in [q]) and (block, d_a).
    let (mut si, mut mi) = ([vdupq_n_s32(0); 16], [vdupq_n_s32(0); 16]);
    let mut cur: Option<(usize, f32)> = None;
    // A macro, not a closure: closures do not inherit the function's target features.
    macro_rules! flush {
        () => {
            if let Some((sb, da)) = cur {
                let bb = tile.add(sb * bbytes);
                let vda = vdupq_n_f32(da);
                for q in 0..16 {
                    let row = 64 * u + 4 * q;
                    let d = widen_f16(vld1_u16(bb.add(2 * row) as *const u16));
                    let dm = widen_f16(vld1_u16(bb.add(2 * h + 2 * row) as *const u16));
                    let f = vsubq_f32(
                        vmulq_f32(vmulq_f32(d, vda), vcvtq_f32_s32(si[q])),
                        vmulq_f32(vmulq_f32(dm, vda), vcvtq_f32_s32(mi[q])),
                    );
                    acc[q] = vaddq_f32(acc[q], f);
                    (si[q], mi[q]) = (vdupq_n_s32(0), vdupq_n_s32(0));
                }
            }
        };
    }
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        if u == 0 {
            prefetch_ahead(a, tile, h, DType::Q4_K, bi, next, l1);
        }
        let (sb, sub) = (blk.index as usize / 8, blk.index as usize % 8);
        if cur.map(|c| c.0) != Some(sb) {
            flush!();
            cur = Some((sb, blk.d));
        }
        let bb = tile.add(sb * bbytes);
        let nib = bb.add(20 * h + 32 * sub * (h / 2));
        let (s0, len) = (blk.start as usize, blk.len as usize);
        let cols = &a.act.cols[s0..s0 + len];
        let codes = &a.act.codes[s0..s0 + len];
        // The sub-block's Σ u·q, rows 4q..4q + 4 in [q].
        let back = vdupq_n_s32(bias * blk.qsum);
        let mut isum = [back; 16];
        for (cols, codes) in cols.chunks(chunk).zip(codes.chunks(chunk)) {
            let s: i32 = codes.iter().map(|&q| q as i32).sum();
            widen_add(&mut isum, &chunk_sums::<false>(bb, nib, h, u, cols, codes, s * bias));
        }
        let vqs = vdupq_n_s32(blk.qsum);
        let (sc, mn) = (bb.add(4 * h + sub * h + 64 * u), bb.add(12 * h + sub * h + 64 * u));
        for i in 0..8 {
            let vsc = vmovl_u8(vld1_u8(sc.add(8 * i)));
            let vmn = vmovl_u8(vld1_u8(mn.add(8 * i)));
            for (half, (vs, vm)) in
                [(vget_low_u16(vsc), vget_low_u16(vmn)), (vget_high_u16(vsc), vget_high_u16(vmn))]
                    .into_iter()
                    .enumerate()
            {
                let q = 2 * i + half;
                let (vs, vm) = (vreinterpretq_s32_u32(vmovl_u16(vs)), vreinterpretq_s32_u32(vmovl_u16(vm)));
                si[q] = vmlaq_s32(si[q], isum[q], vs);
                mi[q] = vmlaq_s32(mi[q], vm, vqs);
            }
        }
    }
    flush!();
    for (q, &v) in acc.iter().enumerate() {
        vst1q_f32(out.add(4 * q), v);
    }
}

/// One 64-row unit `u` of a Q8_0 tile of `h` rows with the dot-product extension, four active
/// columns at a time: per 16 rows the four runs are interleaved bytewise then halfword-wise
/// (`zip1`/`zip2`), so each 32-bit lane holds one row's codes of the four columns, and one
/// `sdot` against the code quadruple (the same four bytes in every lane) adds that row's
/// `Σ c·q` into i32 sums in row order (exact). The float work is [`unit`]'s: the oracle's
/// bits.
///
/// # Safety
/// As [`unit`] (a Q8_0 tile); NEON and the dot-product extension.
#[inline(always)]
unsafe fn unit_q8_dot(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    u: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let bbytes = simd_block_bytes(DType::Q8_0, h);
    let mut acc = [vdupq_n_f32(0.0); 16];
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        if u == 0 {
            prefetch_ahead(a, tile, h, DType::Q8_0, bi, next, l1);
        }
        let bb = tile.add(blk.index as usize * bbytes);
        let runs = bb.add(2 * h + 64 * u) as *const i8;
        let (q0, nq) = (blk.qstart as usize, (blk.len as usize).div_ceil(4));
        // Rows 4t..4t + 4 in [t].
        let mut isum = [vdupq_n_s32(0); 16];
        for (&[ja, jb, jc, jd], &q) in a.act.quad_cols[q0..q0 + nq].iter().zip(&a.act.quad_codes[q0..q0 + nq])
        {
            let vq = vreinterpretq_s8_s32(vdupq_n_s32(q));
            let (pa, pb) = (runs.add(ja as usize * h), runs.add(jb as usize * h));
            let (pc, pd) = (runs.add(jc as usize * h), runs.add(jd as usize * h));
            for g in 0..4 {
                let (wa, wb) = (vld1q_s8(pa.add(16 * g)), vld1q_s8(pb.add(16 * g)));
                let (wc, wd) = (vld1q_s8(pc.add(16 * g)), vld1q_s8(pd.add(16 * g)));
                let (ab_lo, ab_hi) =
                    (vreinterpretq_s16_s8(vzip1q_s8(wa, wb)), vreinterpretq_s16_s8(vzip2q_s8(wa, wb)));
                let (cd_lo, cd_hi) =
                    (vreinterpretq_s16_s8(vzip1q_s8(wc, wd)), vreinterpretq_s16_s8(vzip2q_s8(wc, wd)));
                let x = [
                    vzip1q_s16(ab_lo, cd_lo),
                    vzip2q_s16(ab_lo, cd_lo),
                    vzip1q_s16(ab_hi, cd_hi),
                    vzip2q_s16(ab_hi, cd_hi),
                ];
                for (t, &x) in x.iter().enumerate() {
                    isum[4 * g + t] = sdot(isum[4 * g + t], vreinterpretq_s8_s16(x), vq);
                }
            }
        }
        add_block(&mut acc, &isum, bb, u, blk.d);
    }
    for (q, &v) in acc.iter().enumerate() {
        vst1q_f32(out.add(4 * q), v);
    }
}

macro_rules! entries {
    ($($name:ident, $w:expr;)*) => {$(
        /// # Safety
        /// `a` is checked by `colskip_matmul_for_tier`; NEON.
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn $name(a: &mut ColArgs<'_>) {
            let nb = a.k / if $w == DType::Q4_K { 256 } else { 32 };
            let (mut pos, mut r0) = (0usize, 0usize);
            let (w, out) = (a.w.as_ptr(), a.out.as_mut_ptr());
            for t in 0..a.heights.0 {
                let h = a.tile(t);
                let end = pos + nb * simd_block_bytes($w, h);
                let next = (t + 1 < a.heights.0).then(|| (w.add(end), a.tile(t + 1)));
                for u in 0..h / 64 {
                    let o = out.add(r0 + 64 * u);
                    match $w {
                        DType::Q4_0 => unit::<false>(a, w.add(pos), h, u, o, next),
                        DType::Q8_0 => unit_q8(a, w.add(pos), h, u, o, next),
                        DType::Q4_K => unit_q4k(a, w.add(pos), h, u, o, next),
                        _ => unit::<true>(a, w.add(pos), h, u, o, next),
                    }
                }
                pos = end;
                r0 += h;
            }
        }
    )*};
}

entries! {
    neon_q4_0, DType::Q4_0;
    neon_q5_0, DType::Q5_0;
    neon_q8_0, DType::Q8_0;
    neon_q4_k, DType::Q4_K;
}

/// # Safety
/// `a` is checked by `colskip_matmul_for_tier`; NEON and the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn neon_dot_q8_0(a: &mut ColArgs<'_>) {
    let nb = a.k / 32;
    let (mut pos, mut r0) = (0usize, 0usize);
    let (w, out) = (a.w.as_ptr(), a.out.as_mut_ptr());
    for t in 0..a.heights.0 {
        let h = a.tile(t);
        let end = pos + nb * simd_block_bytes(DType::Q8_0, h);
        let next = (t + 1 < a.heights.0).then(|| (w.add(end), a.tile(t + 1)));
        for u in 0..h / 64 {
            unit_q8_dot(a, w.add(pos), h, u, out.add(r0 + 64 * u), next);
        }
        pos = end;
        r0 += h;
    }
}
