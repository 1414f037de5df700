//! Column-skipping products (`kernels::colskip`) on AVX2 and AVX-512.
//!
//! Every kernel takes several active columns (non-zero activation codes `q`) per instruction,
//! reading each column's run of codes for a tile's rows: on AVX2, Q4_0, Q5_0 and Q4_K two
//! per `vpmaddubsw` ([`unit256_pairs`], [`unit256_pairs_q5`], [`unit256_q4k`]; 16-bit sums
//! of the codes centred on their bias, wrapping, corrected by `bias·Σq` per chunk where the
//! true sum fits an i16) and Q8_0 two per `vpmaddwd` ([`unit256_q8`]); on AVX-512 every type
//! four per `vpdpbusd` over runs interleaved bytewise and wordwise ([`tile512_quads`],
//! [`tile512_quads_q5`] with the fifth bits added by masked `vpaddw`,
//! [`tile512_quads_q8`], [`tile512_q4k`]). Per block the float work is the oracle's
//! `acc += (d_w·d_a)·Σ` (two multiplies and an add, no FMA; Q4_K's per super-block), so the
//! bits are the oracle's.

use std::arch::x86_64::*;

use super::super::colskip::{prefetch_ahead, simd_block_bytes, simd_params, ColArgs};
use crate::DType;

/// `_mm_prefetch` into L1 of the line at `p`, for [`prefetch_ahead`].
#[inline(always)]
fn l1(p: *const u8) {
    // SAFETY: a prefetch does not fault, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
}

/// Interleaves four registers of run bytes `[wa, wb, wc, wd]` bytewise and then wordwise
/// (`vpunpck{l,h}bw`, `vpunpck{l,h}wd`): register `m` of the four it gives holds, in dword
/// `k` of its 128-bit lane `L`, run byte `16L + 4m + k` of all four columns (one `vpdpbusd`
/// operand against a broadcast code quadruple).
macro_rules! interleave4 {
    ($w:expr) => {{
        let [wa, wb, wc, wd]: [__m512i; 4] = $w;
        let (ab_lo, ab_hi) = (_mm512_unpacklo_epi8(wa, wb), _mm512_unpackhi_epi8(wa, wb));
        let (cd_lo, cd_hi) = (_mm512_unpacklo_epi8(wc, wd), _mm512_unpackhi_epi8(wc, wd));
        [
            _mm512_unpacklo_epi16(ab_lo, cd_lo),
            _mm512_unpackhi_epi16(ab_lo, cd_lo),
            _mm512_unpacklo_epi16(ab_hi, cd_hi),
            _mm512_unpackhi_epi16(ab_hi, cd_hi),
        ]
    }};
}

/// The 4 × 4 transpose of the 128-bit lanes of `s[0..4]` (`vshufi32x4`): result `L` holds
/// lane `L` of `s[0]`, `s[1]`, `s[2]`, `s[3]` in that order — for sums in [`interleave4`]'s
/// order, run bytes `16L..16L + 16` in order.
///
/// # Safety
/// `s` has four registers; AVX-512 F.
#[inline(always)]
unsafe fn transpose_lanes(s: &[__m512i]) -> [__m512i; 4] {
    let t0 = _mm512_shuffle_i32x4::<0x44>(s[0], s[1]);
    let t1 = _mm512_shuffle_i32x4::<0xee>(s[0], s[1]);
    let t2 = _mm512_shuffle_i32x4::<0x44>(s[2], s[3]);
    let t3 = _mm512_shuffle_i32x4::<0xee>(s[2], s[3]);
    [
        _mm512_shuffle_i32x4::<0x88>(t0, t2),
        _mm512_shuffle_i32x4::<0xdd>(t0, t2),
        _mm512_shuffle_i32x4::<0x88>(t1, t3),
        _mm512_shuffle_i32x4::<0xdd>(t1, t3),
    ]
}

/// The float work of a block for four `vpdpbusd` sums `s` laid out as [`interleave4`] gives
/// (register `m`, lane `L`, dword `k`: run byte `16L + 4m + k`): a 4 × 4 transpose of the
/// 128-bit lanes (`vshufi32x4`) puts lane `L`'s sixteen sums in run-byte order, whose rows
/// start at `rows[L]` (lanes past `rows.len()` are not used); Q5_0's `fifth` sums (`Σ b·q`
/// per row, i16, 32 rows a register) are added times 16, `corr` subtracted, and
/// `acc[row/16] += (d_w·d_a)·Σ` with the block's scales at `bb` (the oracle's float work).
///
/// # Safety
/// `bb` is a block whose scales cover the rows; AVX-512 F, F16C.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn add_quad_sums(
    s: &[__m512i],
    rows: &[usize],
    bb: *const u8,
    corr: __m512i,
    fifth: Option<&[__m512i; 4]>,
    vda: __m512,
    acc: &mut [__m512; 8],
) {
    for (&v, &row) in transpose_lanes(s).iter().zip(rows) {
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(bb.add(2 * row) as *const __m256i));
        let v = match fifth {
            Some(f) => {
                let x = f[row / 32];
                let x =
                    if row % 32 == 0 { _mm512_castsi512_si256(x) } else { _mm512_extracti64x4_epi64::<1>(x) };
                _mm512_add_epi32(v, _mm512_slli_epi32::<4>(_mm512_cvtepi16_epi32(x)))
            }
            None => v,
        };
        let isum = _mm512_cvtepi32_ps(_mm512_sub_epi32(v, corr));
        acc[row / 16] = _mm512_add_ps(acc[row / 16], _mm512_mul_ps(_mm512_mul_ps(dw, vda), isum));
    }
}

/// One Q8_0 tile of `64·W` rows on AVX-512 VNNI, four active columns at a time: per 64-row
/// window, the four columns' runs (64 unsigned codes `c + 128` each) are interleaved
/// ([`interleave4`]) and multiplied with one `vpdpbusd` each against the broadcast code
/// quadruple; `128·Σq` is subtracted per block (exact in i32) and the float work is the
/// oracle's ([`add_quad_sums`]), so the bits are the oracle's.
///
/// # Safety
/// `tile` holds the tile's `k/32` Q8_0 blocks of [`simd_block_bytes`]`(Q8_0, 64·W)` bytes,
/// `out` is valid for `64·W` writes; AVX-512 F/BW/VNNI, F16C.
#[inline(always)]
unsafe fn tile512_quads_q8<const W: usize>(
    a: &ColArgs<'_>,
    tile: *const u8,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let h = 64 * W;
    let (bias, _) = simd_params(DType::Q8_0);
    let bbytes = simd_block_bytes(DType::Q8_0, h);
    let mut acc = [_mm512_setzero_ps(); 8];
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        prefetch_ahead(a, tile, h, DType::Q8_0, bi, next, l1);
        let bb = tile.add(blk.index as usize * bbytes);
        let runs = bb.add(2 * h);
        let (q0, nq) = (blk.qstart as usize, (blk.len as usize).div_ceil(4));
        // [4c + m]: register m of window c.
        let mut s = [[_mm512_setzero_si512(); 4]; W];
        for (&[ja, jb, jc, jd], &q) in a.act.quad_cols[q0..q0 + nq].iter().zip(&a.act.quad_codes[q0..q0 + nq])
        {
            let vq = _mm512_set1_epi32(q);
            for (c, sc) in s.iter_mut().enumerate() {
                // A macro, not a closure: closures do not inherit the target features.
                macro_rules! ld {
                    ($j:expr) => {
                        _mm512_loadu_si512(runs.add($j as usize * h + 64 * c) as *const _)
                    };
                }
                let x = interleave4!([ld!(ja), ld!(jb), ld!(jc), ld!(jd)]);
                for (sm, &x) in sc.iter_mut().zip(&x) {
                    *sm = _mm512_dpbusd_epi32(*sm, x, vq);
                }
            }
        }
        let corr = _mm512_set1_epi32(bias * blk.qsum);
        let vda = _mm512_set1_ps(blk.d);
        for (c, sc) in s.iter().enumerate() {
            let rows = [0, 1, 2, 3].map(|l| 64 * c + 16 * l);
            add_quad_sums(sc, &rows, bb, corr, None, vda, &mut acc);
        }
    }
    for (g, &v) in acc.iter().enumerate().take(h / 16) {
        _mm512_storeu_ps(out.add(16 * g), v);
    }
}

/// The `vpdpbusd` sums `Σ u·q` of one block's active columns, four at a time, over nibble
/// runs (Q4_0's plane, `h/2` bytes a column) starting at `runs`, in a tile of `h` (64 or 128)
/// rows: `[m]` the low nibbles of register `m` of [`interleave4`]'s order, `[4 + m]` the high
/// ones. For 64 rows a run is 32 bytes, so two quadruples share a register (the second in the
/// upper half; an odd last one pairs with itself at code 0), and the halves are added.
///
/// # Safety
/// `runs` is a block's nibble plane (32 runs of `h/2` bytes), the columns below 32;
/// AVX-512 F/BW/VNNI.
#[inline(always)]
unsafe fn quad_nibble_sums(runs: *const u8, h: usize, cols: &[[u16; 4]], codes: &[i32]) -> [__m512i; 8] {
    let col = h / 2;
    let m0f = _mm512_set1_epi8(0x0f);
    // [m]: low nibbles of register m, [4 + m]: high nibbles.
    let mut s = [_mm512_setzero_si512(); 8];
    // Four columns' runs and their codes into `s` (a macro: closures do not inherit the
    // target features).
    macro_rules! quad {
        ($w:expr, $vq:expr) => {{
            let vq: __m512i = $vq;
            for (m, &x) in interleave4!($w).iter().enumerate() {
                s[m] = _mm512_dpbusd_epi32(s[m], _mm512_and_si512(x, m0f), vq);
                s[4 + m] =
                    _mm512_dpbusd_epi32(s[4 + m], _mm512_and_si512(_mm512_srli_epi16::<4>(x), m0f), vq);
            }
        }};
    }
    if h == 128 {
        for (&[ja, jb, jc, jd], &q) in cols.iter().zip(codes) {
            quad!(
                [ja, jb, jc, jd].map(|j| _mm512_loadu_si512(runs.add(j as usize * col) as *const _)),
                _mm512_set1_epi32(q)
            );
        }
    } else {
        // 64 rows: two quadruples a register, the halves added at the end.
        for (c, q) in cols.chunks(2).zip(codes.chunks(2)) {
            let (c1, q1) = if c.len() == 2 { (c[1], q[1]) } else { (c[0], 0) };
            let w = [0, 1, 2, 3].map(|e| {
                let lo = _mm256_loadu_si256(runs.add(c[0][e] as usize * col) as *const __m256i);
                let hi = _mm256_loadu_si256(runs.add(c1[e] as usize * col) as *const __m256i);
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
            });
            let vq = _mm512_inserti64x4::<1>(_mm512_set1_epi32(q[0]), _mm256_set1_epi32(q1));
            quad!(w, vq);
        }
        for s in s.iter_mut() {
            *s = _mm512_add_epi32(*s, _mm512_shuffle_i32x4::<0xee>(*s, *s));
        }
    }
    s
}

/// One Q4_0 tile of `h` (64 or 128) rows on AVX-512 VNNI, four active columns at a time.
///
/// The four columns' runs (`h/2` bytes each: one 64-byte register, or for a 64-row tile the
/// runs of two quadruples in the two halves of one) are interleaved ([`interleave4`]), so that
/// every dword holds one run byte of all four columns; one `vpdpbusd` per nibble against the
/// broadcast code quadruple adds `Σ u·q` of four columns into that byte's rows (i32: no
/// wrapping, no widening). Once per block [`add_quad_sums`] puts the sums in row order,
/// subtracts `8·Σq` and does the oracle's float work, so the bits are the oracle's.
///
/// # Safety
/// `tile` holds the tile's `k/32` Q4_0 blocks of [`simd_block_bytes`]`(Q4_0, h)` bytes, `out`
/// is valid for `h` writes; AVX-512 F/BW/VNNI, F16C.
#[inline(always)]
unsafe fn tile512_quads(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let (bias, _) = simd_params(DType::Q4_0);
    let bbytes = simd_block_bytes(DType::Q4_0, h);
    // Row-order accumulators, 16 rows each (the second four only for 128 rows).
    let mut acc = [_mm512_setzero_ps(); 8];
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        prefetch_ahead(a, tile, h, DType::Q4_0, bi, next, l1);
        let bb = tile.add(blk.index as usize * bbytes);
        let runs = bb.add(2 * h);
        let (q0, nq) = (blk.qstart as usize, (blk.len as usize).div_ceil(4));
        let cols = &a.act.quad_cols[q0..q0 + nq];
        let codes = &a.act.quad_codes[q0..q0 + nq];
        let s = quad_nibble_sums(runs, h, cols, codes);
        let corr = _mm512_set1_epi32(bias * blk.qsum);
        let vda = _mm512_set1_ps(blk.d);
        for (nib, s) in s.chunks_exact(4).enumerate() {
            // Run bytes 16L.. hold rows 64·(L/2) + 16·(L%2) (low nibbles), 32 more (high).
            let rows = [0, 1, 2, 3].map(|l| 64 * (l / 2) + 16 * (l % 2) + 32 * nib);
            add_quad_sums(s, &rows[..h / 32], bb, corr, None, vda, &mut acc);
        }
    }
    for (g, &v) in acc.iter().enumerate().take(h / 16) {
        _mm512_storeu_ps(out.add(16 * g), v);
    }
}

/// One Q5_0 tile of `h` (64 or 128) rows on AVX-512 VNNI, four active columns at a time: the
/// low four bits as Q4_0's ([`quad_nibble_sums`]); the fifth bits as `q` added, per column,
/// into the rows whose bit is set (`vpaddw` masked by the bit word itself, in row order; a
/// block's `Σ b·q` fits an i16); per block [`add_quad_sums`] adds the two (the second times
/// 16), subtracts `16·Σq` and does the oracle's float work: the oracle's bits.
///
/// # Safety
/// `tile` holds the tile's `k/32` Q5_0 blocks of [`simd_block_bytes`]`(Q5_0, h)` bytes, `out`
/// is valid for `h` writes; AVX-512 F/BW/VNNI, F16C.
#[inline(always)]
unsafe fn tile512_quads_q5(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let (bias, _) = simd_params(DType::Q5_0);
    let bbytes = simd_block_bytes(DType::Q5_0, h);
    let (high, hcol) = (2 * h + 32 * (h / 2), h / 8);
    let mut acc = [_mm512_setzero_ps(); 8];
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        prefetch_ahead(a, tile, h, DType::Q5_0, bi, next, l1);
        let bb = tile.add(blk.index as usize * bbytes);
        let (q0, nq) = (blk.qstart as usize, (blk.len as usize).div_ceil(4));
        let cols = &a.act.quad_cols[q0..q0 + nq];
        let codes = &a.act.quad_codes[q0..q0 + nq];
        let s = quad_nibble_sums(bb.add(2 * h), h, cols, codes);
        // Σ b·q per row over the block's columns (|Σ| ≤ 32·127: an i16), 32 rows a register.
        let mut fifth = [_mm512_setzero_si512(); 4];
        for (c, &q) in cols.iter().zip(codes) {
            for (e, &j) in c.iter().enumerate() {
                let v = _mm512_set1_epi16((q >> (8 * e)) as i8 as i16);
                let bits = bb.add(high + j as usize * hcol) as *const __mmask32;
                for (r, f) in fifth.iter_mut().enumerate().take(h / 32) {
                    *f = _mm512_mask_add_epi16(*f, _load_mask32(bits.add(r)), *f, v);
                }
            }
        }
        let corr = _mm512_set1_epi32(bias * blk.qsum);
        let vda = _mm512_set1_ps(blk.d);
        for (nib, s) in s.chunks_exact(4).enumerate() {
            let rows = [0, 1, 2, 3].map(|l| 64 * (l / 2) + 16 * (l % 2) + 32 * nib);
            add_quad_sums(s, &rows[..h / 32], bb, corr, Some(&fifth), vda, &mut acc);
        }
    }
    for (g, &v) in acc.iter().enumerate().take(h / 16) {
        _mm512_storeu_ps(out.add(16 * g), v);
    }
}

/// One Q4_K tile of `h` (64 or 128) rows on AVX-512 VNNI: per active sub-block (32 columns)
/// the `vpdpbusd` sums of [`quad_nibble_sums`] (unsigned codes, exact in i32), put in row
/// order ([`transpose_lanes`]), times the rows' 6-bit scales (`vpmulld`) into the
/// super-block's `s`, and the rows' minimums times the sub-block's code sum into its `m`;
/// when the super-block ends, the oracle's `acc += d·d_a·s − dmin·d_a·m`. Same bits as the
/// oracle.
///
/// # Safety
/// `tile` holds the tile's `k/256` Q4_K blocks of [`simd_block_bytes`]`(Q4_K, h)` bytes,
/// `out` is valid for `h` writes; AVX-512 F/BW/VNNI, F16C.
#[inline(always)]
unsafe fn tile512_q4k(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let bbytes = simd_block_bytes(DType::Q4_K, h);
    let mut acc = [_mm512_setzero_ps(); 8];
    // The current super-block's integer sums, 16 rows a register, and (block, d_a).
    let (mut si, mut mi) = ([_mm512_setzero_si512(); 8], [_mm512_setzero_si512(); 8]);
    let mut cur: Option<(usize, f32)> = None;
    // A macro, not a closure: closures do not inherit the function's target features.
    macro_rules! flush {
        () => {
            if let Some((sb, da)) = cur {
                let bb = tile.add(sb * bbytes);
                let vda = _mm512_set1_ps(da);
                for g in 0..h / 16 {
                    let d = _mm512_cvtph_ps(_mm256_loadu_si256(bb.add(32 * g) as *const __m256i));
                    let dm = _mm512_cvtph_ps(_mm256_loadu_si256(bb.add(2 * h + 32 * g) as *const __m256i));
                    let f = _mm512_sub_ps(
                        _mm512_mul_ps(_mm512_mul_ps(d, vda), _mm512_cvtepi32_ps(si[g])),
                        _mm512_mul_ps(_mm512_mul_ps(dm, vda), _mm512_cvtepi32_ps(mi[g])),
                    );
                    acc[g] = _mm512_add_ps(acc[g], f);
                    (si[g], mi[g]) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                }
            }
        };
    }
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        prefetch_ahead(a, tile, h, DType::Q4_K, bi, next, l1);
        let (sb, sub) = (blk.index as usize / 8, blk.index as usize % 8);
        if cur.map(|c| c.0) != Some(sb) {
            flush!();
            cur = Some((sb, blk.d));
        }
        let bb = tile.add(sb * bbytes);
        let (q0, nq) = (blk.qstart as usize, (blk.len as usize).div_ceil(4));
        let cols = &a.act.quad_cols[q0..q0 + nq];
        let codes = &a.act.quad_codes[q0..q0 + nq];
        let s = quad_nibble_sums(bb.add(20 * h + 32 * sub * (h / 2)), h, cols, codes);
        let vqs = _mm512_set1_epi32(blk.qsum);
        let (sc, mn) = (bb.add(4 * h + sub * h), bb.add(12 * h + sub * h));
        for (nib, s) in s.chunks_exact(4).enumerate() {
            for (l, &v) in transpose_lanes(s).iter().enumerate().take(h / 32) {
                let row = 64 * (l / 2) + 16 * (l % 2) + 32 * nib;
                let vsc = _mm512_cvtepu8_epi32(_mm_loadu_si128(sc.add(row) as *const __m128i));
                let vmn = _mm512_cvtepu8_epi32(_mm_loadu_si128(mn.add(row) as *const __m128i));
                si[row / 16] = _mm512_add_epi32(si[row / 16], _mm512_mullo_epi32(v, vsc));
                mi[row / 16] = _mm512_add_epi32(mi[row / 16], _mm512_mullo_epi32(vmn, vqs));
            }
        }
    }
    flush!();
    for (g, &v) in acc.iter().enumerate().take(h / 16) {
        _mm512_storeu_ps(out.add(16 * g), v);
    }
}

/// The unsigned nibble codes of two columns' runs at `pa`, `pb` (32 bytes each: byte `i`
/// holds rows `i` and `32 + i` of a 64-row unit) interleaved bytewise, so every 16-bit lane
/// holds one row's codes of both columns (a `vpmaddubsw` operand against a code pair). The
/// unpacks work per 128-bit lane: register `p` holds rows `{0..8, 16..24}`, `{8..16, 24..32}`,
/// `{32..40, 48..56}`, `{40..48, 56..64}` (8-row groups `G[p]` and `G[p] + 2`, [`G`]).
///
/// # Safety
/// `pa` and `pb` are valid for 32-byte reads; AVX2.
#[inline(always)]
unsafe fn nibble_pair(pa: *const u8, pb: *const u8) -> [__m256i; 4] {
    let m0f = _mm256_set1_epi8(0x0f);
    let wa = _mm256_loadu_si256(pa as *const __m256i);
    let wb = _mm256_loadu_si256(pb as *const __m256i);
    let (lo, hi) = (_mm256_unpacklo_epi8(wa, wb), _mm256_unpackhi_epi8(wa, wb));
    [
        _mm256_and_si256(lo, m0f),
        _mm256_and_si256(hi, m0f),
        _mm256_and_si256(_mm256_srli_epi16::<4>(lo), m0f),
        _mm256_and_si256(_mm256_srli_epi16::<4>(hi), m0f),
    ]
}

/// The first 8-row group of each register of [`nibble_pair`] (its high half is `G[p] + 2`).
const G: [usize; 4] = [0, 1, 4, 5];

/// Adds a chunk's wrapped 16-bit sums `s16` (registers of [`nibble_pair`]'s order), less
/// `corr` (`bias·Σq` of the chunk), to the i32 sums of the 8-row groups `isum`.
///
/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn widen_chunk(s16: &[__m256i; 4], corr: i32, isum: &mut [__m256i; 8]) {
    let corr = _mm256_set1_epi16(corr as i16);
    for (&x, &g) in s16.iter().zip(&G) {
        let x = _mm256_sub_epi16(x, corr);
        isum[g] = _mm256_add_epi32(isum[g], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(x)));
        isum[g + 2] = _mm256_add_epi32(isum[g + 2], _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(x)));
    }
}

/// One 64-row unit of a Q4_0 tile of `h` rows on AVX2, two active columns at a time (the
/// halves of the gathered quadruples).
///
/// The two columns' runs (32 bytes each: byte `i` holds rows `i` and `32 + i`) are
/// interleaved bytewise (`vpunpck{l,h}bw`), so every 16-bit lane holds one row's codes of
/// both columns; one `vpmaddubsw` against the broadcast code pair `(q_a, q_b)` then gives that
/// row's `u_a·q_a + u_b·q_b` (at most 2·15·127, no saturation). A block's products wrap in
/// i16; its `8·Σq` is subtracted once per block (the true sum `Σ (u − 8)·q` over at most 32
/// columns is within ±32·8·127, inside i16) before widening. The unpacks work per 128-bit
/// lane, so a register holds rows `i..i + 8` and `i + 16..i + 24`: the widening puts each
/// half in its 8-row group. The float work is the oracle's, so the bits are the oracle's.
///
/// # Safety
/// `tile` holds the tile's `k/32` Q4_0 blocks, `u < h/64`, `out` is valid for 64 writes; AVX2,
/// F16C.
#[inline(always)]
unsafe fn unit256_pairs(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    u: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let (bias, _) = simd_params(DType::Q4_0);
    let bbytes = simd_block_bytes(DType::Q4_0, h);
    let (nib_off, col) = (2 * h, h / 2);
    let mut acc = [_mm256_setzero_ps(); 8];
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        if u == 0 {
            prefetch_ahead(a, tile, h, DType::Q4_0, bi, next, l1);
        }
        let bb = tile.add(blk.index as usize * bbytes);
        let runs = bb.add(nib_off + 32 * u);
        let (q0, nq) = (blk.qstart as usize, (blk.len as usize).div_ceil(4));
        // Rows {0..8, 16..24}, {8..16, 24..32}, {32..40, 48..56}, {40..48, 56..64}.
        let mut s16 = [_mm256_setzero_si256(); 4];
        // A macro, not a closure: closures do not inherit the function's target features.
        macro_rules! pair {
            ($ja:expr, $jb:expr, $q:expr) => {{
                let (ja, jb, q): (u16, u16, i16) = ($ja, $jb, $q);
                let vq = _mm256_set1_epi16(q);
                let r = nibble_pair(runs.add(ja as usize * col), runs.add(jb as usize * col));
                for (sp, &x) in s16.iter_mut().zip(&r) {
                    *sp = _mm256_add_epi16(*sp, _mm256_maddubs_epi16(x, vq));
                }
            }};
        }
        // The quadruples as two pairs each; a pair of padding columns (code 0) is skipped.
        for (c, &q) in a.act.quad_cols[q0..q0 + nq].iter().zip(&a.act.quad_codes[q0..q0 + nq]) {
            pair!(c[0], c[1], q as i16);
            if q >> 16 != 0 {
                pair!(c[2], c[3], (q >> 16) as i16);
            }
        }
        let corr = _mm256_set1_epi16((bias * blk.qsum) as i16);
        let vda = _mm256_set1_ps(blk.d);
        for (p, &x) in s16.iter().enumerate() {
            let x = _mm256_sub_epi16(x, corr);
            for (g, half) in [(G[p], _mm256_castsi256_si128(x)), (G[p] + 2, _mm256_extracti128_si256::<1>(x))]
            {
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(bb.add(2 * (64 * u + 8 * g)) as *const __m128i));
                let f =
                    _mm256_mul_ps(_mm256_mul_ps(dw, vda), _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(half)));
                acc[g] = _mm256_add_ps(acc[g], f);
            }
        }
    }
    for (q, &v) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.add(8 * q), v);
    }
}

/// One 64-row unit of a Q8_0 tile of `h` rows on AVX2, two active columns at a time (the
/// halves of the gathered quadruples).
///
/// Per 16 rows the two columns' unsigned codes `c + 128` are widened to 16 bits
/// (`vpmovzxbw`) and interleaved wordwise (`vpunpck{l,h}wd`), so every dword holds one row's
/// codes of both columns; one `vpmaddwd` against the broadcast code pair adds that row's
/// `u_a·q_a + u_b·q_b` into i32 sums (exact), and `128·Σq` is subtracted per block. The
/// unpacks work per 128-bit lane, so the sums of rows `16g..16g + 16` come as rows
/// `{0..4, 8..12}` and `{4..8, 12..16}`; one `vperm2i128` pair per block puts them in order,
/// and the float work is the oracle's, so the bits are the oracle's.
///
/// # Safety
/// `tile` holds the tile's Q8_0 blocks, `u < h/64`, `out` is valid for 64 writes; AVX2, F16C.
#[inline(always)]
unsafe fn unit256_q8(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    u: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let (bias, _) = simd_params(DType::Q8_0);
    let bbytes = simd_block_bytes(DType::Q8_0, h);
    let mut acc = [_mm256_setzero_ps(); 8];
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        if u == 0 {
            prefetch_ahead(a, tile, h, DType::Q8_0, bi, next, l1);
        }
        let bb = tile.add(blk.index as usize * bbytes);
        let runs = bb.add(2 * h + 64 * u);
        let (q0, nq) = (blk.qstart as usize, (blk.len as usize).div_ceil(4));
        // [2g]: rows 16g + {0..4, 8..12}, [2g + 1]: 16g + {4..8, 12..16}.
        let mut s = [_mm256_setzero_si256(); 8];
        // A macro, not a closure: closures do not inherit the function's target features.
        macro_rules! pair {
            ($ja:expr, $jb:expr, $q:expr) => {{
                let (ja, jb, q): (u16, u16, i32) = ($ja, $jb, $q);
                // The two codes as sign-extended words.
                let vq =
                    _mm256_set1_epi32((q as i8 as i16 as u16 as i32) | ((q >> 8) as i8 as i16 as i32) << 16);
                let (pa, pb) = (runs.add(ja as usize * h), runs.add(jb as usize * h));
                for g in 0..4 {
                    let wa = _mm256_cvtepu8_epi16(_mm_loadu_si128(pa.add(16 * g) as *const __m128i));
                    let wb = _mm256_cvtepu8_epi16(_mm_loadu_si128(pb.add(16 * g) as *const __m128i));
                    s[2 * g] =
                        _mm256_add_epi32(s[2 * g], _mm256_madd_epi16(_mm256_unpacklo_epi16(wa, wb), vq));
                    s[2 * g + 1] =
                        _mm256_add_epi32(s[2 * g + 1], _mm256_madd_epi16(_mm256_unpackhi_epi16(wa, wb), vq));
                }
            }};
        }
        // The quadruples as two pairs each; a pair of padding columns (code 0) is skipped.
        for (c, &q) in a.act.quad_cols[q0..q0 + nq].iter().zip(&a.act.quad_codes[q0..q0 + nq]) {
            pair!(c[0], c[1], q);
            if q >> 16 != 0 {
                pair!(c[2], c[3], q >> 16);
            }
        }
        let vda = _mm256_set1_ps(blk.d);
        let corr = _mm256_set1_epi32(bias * blk.qsum);
        for g in 0..4 {
            let rows = [
                _mm256_permute2x128_si256::<0x20>(s[2 * g], s[2 * g + 1]),
                _mm256_permute2x128_si256::<0x31>(s[2 * g], s[2 * g + 1]),
            ];
            for (h8, &x) in rows.iter().enumerate() {
                let q = 2 * g + h8;
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(bb.add(2 * (64 * u + 8 * q)) as *const __m128i));
                let f = _mm256_mul_ps(_mm256_mul_ps(dw, vda), _mm256_cvtepi32_ps(_mm256_sub_epi32(x, corr)));
                acc[q] = _mm256_add_ps(acc[q], f);
            }
        }
    }
    for (q, &v) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.add(8 * q), v);
    }
}

/// Byte `i` of lanes 0 and 1 for 16-row register `p` of [`unit256_pairs_q5`]: the byte of
/// the pair's interleaved fifth-bit words (`A0 B0 A1 B1 …`, `Aj` the bits of rows
/// `8j..8j + 8` of column a) that holds the bit of the row in that position.
const Q5_BIT_BYTES: [[i8; 32]; 4] = {
    let mut t = [[0i8; 32]; 4];
    let mut p = 0;
    while p < 4 {
        let j0 = 4 * (p / 2) + p % 2;
        let mut i = 0;
        while i < 32 {
            let j = if i < 16 { j0 } else { j0 + 2 };
            t[p][i] = (2 * j + i % 2) as i8;
            i += 1;
        }
        p += 1;
    }
    t
};

/// One 64-row unit of a Q5_0 tile of `h` rows on AVX2, two active columns at a time (the
/// halves of the gathered quadruples): the low nibbles as [`unit256_pairs`]'s (one
/// `vpmaddubsw` per 16 rows and two columns); the fifth bits of the two columns are
/// interleaved bytewise into one vector once per pair and spread over each register's
/// bytes (`vpshufb` of the bit-group bytes, a per-byte bit test): `16` is OR-ed into the
/// codes whose bit is set. Sums wrap in i16 over chunks of 16 columns (`|Σ (u − 16)·q| ≤
/// 16·16·127` fits), are corrected by `16·Σq` and widened; the float work is
/// the oracle's: the oracle's bits.
///
/// # Safety
/// `tile` holds the tile's `k/32` Q5_0 blocks, `u < h/64`, `out` is valid for 64 writes; AVX2,
/// F16C.
#[inline(always)]
unsafe fn unit256_pairs_q5(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    u: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let (bias, chunk) = simd_params(DType::Q5_0);
    let bbytes = simd_block_bytes(DType::Q5_0, h);
    let (col, high, hcol) = (h / 2, 2 * h + 32 * (h / 2), h / 8);
    let sixteen = _mm256_set1_epi8(16);
    // Bytes 2k and 2k + 1 of a lane (columns a and b of the lane's row k) test bit k.
    let bitsel = _mm256_setr_epi8(
        1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 64, 64, -128, -128, 1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32,
        64, 64, -128, -128,
    );
    let sel = Q5_BIT_BYTES.map(|t| _mm256_loadu_si256(t.as_ptr() as *const __m256i));
    let mut acc = [_mm256_setzero_ps(); 8];
    for (bi, blk) in a.act.blocks.iter().enumerate() {
        if u == 0 {
            prefetch_ahead(a, tile, h, DType::Q5_0, bi, next, l1);
        }
        let bb = tile.add(blk.index as usize * bbytes);
        let runs = bb.add(2 * h + 32 * u);
        let bits = bb.add(high + 8 * u);
        let (q0, nq) = (blk.qstart as usize, (blk.len as usize).div_ceil(4));
        let mut isum = [_mm256_setzero_si256(); 8];
        for (cols, codes) in a.act.quad_cols[q0..q0 + nq]
            .chunks(chunk / 4)
            .zip(a.act.quad_codes[q0..q0 + nq].chunks(chunk / 4))
        {
            let mut s16 = [_mm256_setzero_si256(); 4];
            let mut qs = 0i32;
            for (c, &q) in cols.iter().zip(codes) {
                qs += q.to_le_bytes().iter().map(|&b| b as i8 as i32).sum::<i32>();
                for (pair, qq) in [((c[0], c[1]), q as i16), ((c[2], c[3]), (q >> 16) as i16)] {
                    let vq = _mm256_set1_epi16(qq);
                    let (ja, jb) = (pair.0 as usize, pair.1 as usize);
                    let r = nibble_pair(runs.add(ja * col), runs.add(jb * col));
                    // A0 B0 A1 B1 … A7 B7 in both lanes.
                    let ba = _mm_loadl_epi64(bits.add(ja * hcol) as *const __m128i);
                    let bbits = _mm_loadl_epi64(bits.add(jb * hcol) as *const __m128i);
                    let ab = _mm256_broadcastsi128_si256(_mm_unpacklo_epi8(ba, bbits));
                    for (p, (sp, &x)) in s16.iter_mut().zip(&r).enumerate() {
                        let b = _mm256_and_si256(_mm256_shuffle_epi8(ab, sel[p]), bitsel);
                        let x = _mm256_or_si256(x, _mm256_and_si256(_mm256_cmpeq_epi8(b, bitsel), sixteen));
                        *sp = _mm256_add_epi16(*sp, _mm256_maddubs_epi16(x, vq));
                    }
                }
            }
            widen_chunk(&s16, bias * qs, &mut isum);
        }
        let vda = _mm256_set1_ps(blk.d);
        for (g, aq) in acc.iter_mut().enumerate() {
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(bb.add(2 * (64 * u + 8 * g)) as *const __m128i));
            *aq = _mm256_add_ps(*aq, _mm256_mul_ps(_mm256_mul_ps(dw, vda), _mm256_cvtepi32_ps(isum[g])));
        }
    }
    for (g, &v) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.add(8 * g), v);
    }
}

/// One 64-row unit of a Q4_K tile of `h` rows on AVX2: [`unit256_pairs`]'s products (two
/// columns a `vpmaddubsw`, wrapping i16 sums of the codes centred on 8) in chunks of 16
/// active columns (four quadruples: `|Σ (u − 8)·q| ≤ 16·8·128` fits an i16 even with Q8_K's
/// −128), each corrected and widened to i32; per sub-block `8·Σq` is added back, the sums
/// multiplied by the rows' 6-bit scales into the super-block's `s` and the minimums times
/// `Σq` into its `m`; when the super-block ends, the oracle's
/// `acc += d·d_a·s − dmin·d_a·m`. Same bits as the oracle.
///
/// # Safety
/// `tile` holds the tile's Q4_K blocks, `u < h/64`, `out` is valid for 64 writes; AVX2, F16C.
#[inline(always)]
unsafe fn unit256_q4k(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    u: usize,
    out: *mut f32,
    next: Option<(*const u8, usize)>,
) {
    let (bias, chunk) = simd_params(DType::Q4_K);
    let bbytes = simd_block_bytes(DType::Q4_K, h);
    let col = h / 2;
    let mut acc = [_mm256_setzero_ps(); 8];
    let (mut si, mut mi) = ([_mm256_setzero_si256(); 8], [_mm256_setzero_si256(); 8]);
    let mut cur: Option<(usize, f32)> = None;
    // Macros, not closures: closures do not inherit the function's target features.
    macro_rules! flush {
        () => {
            if let Some((sb, da)) = cur {
                let bb = tile.add(sb * bbytes);
                let vda = _mm256_set1_ps(da);
                for g in 0..8 {
                    let row = 64 * u + 8 * g;
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(bb.add(2 * row) as *const __m128i));
                    let dm = _mm256_cvtph_ps(_mm_loadu_si128(bb.add(2 * h + 2 * row) as *const __m128i));
                    let f = _mm256_sub_ps(
                        _mm256_mul_ps(_mm256_mul_ps(d, vda), _mm256_cvtepi32_ps(si[g])),
                        _mm256_mul_ps(_mm256_mul_ps(dm, vda), _mm256_cvtepi32_ps(mi[g])),
                    );
                    acc[g] = _mm256_add_ps(acc[g], f);
                    (si[g], mi[g]) = (_mm256_setzero_si256(), _mm256_setzero_si256());
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
        let runs = bb.add(20 * h + 32 * sub * col + 32 * u);
        let (q0, nq) = (blk.qstart as usize, (blk.len as usize).div_ceil(4));
        // The sub-block's Σ (u − 8)·q per 8-row group.
        let mut isum = [_mm256_setzero_si256(); 8];
        for (cols, codes) in a.act.quad_cols[q0..q0 + nq]
            .chunks(chunk / 4)
            .zip(a.act.quad_codes[q0..q0 + nq].chunks(chunk / 4))
        {
            let mut s16 = [_mm256_setzero_si256(); 4];
            let mut qs = 0i32;
            for (c, &q) in cols.iter().zip(codes) {
                qs += q.to_le_bytes().iter().map(|&b| b as i8 as i32).sum::<i32>();
                for (pair, qq) in [((c[0], c[1]), q as i16), ((c[2], c[3]), (q >> 16) as i16)] {
                    let vq = _mm256_set1_epi16(qq);
                    let r = nibble_pair(runs.add(pair.0 as usize * col), runs.add(pair.1 as usize * col));
                    for (sp, &x) in s16.iter_mut().zip(&r) {
                        *sp = _mm256_add_epi16(*sp, _mm256_maddubs_epi16(x, vq));
                    }
                }
            }
            widen_chunk(&s16, bias * qs, &mut isum);
        }
        let back = _mm256_set1_epi32(bias * blk.qsum);
        let vqs = _mm256_set1_epi32(blk.qsum);
        let (sc, mn) = (bb.add(4 * h + sub * h + 64 * u), bb.add(12 * h + sub * h + 64 * u));
        for g in 0..8 {
            let vsc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sc.add(8 * g) as *const __m128i));
            let vmn = _mm256_cvtepu8_epi32(_mm_loadl_epi64(mn.add(8 * g) as *const __m128i));
            let x = _mm256_add_epi32(isum[g], back);
            si[g] = _mm256_add_epi32(si[g], _mm256_mullo_epi32(x, vsc));
            mi[g] = _mm256_add_epi32(mi[g], _mm256_mullo_epi32(vmn, vqs));
        }
    }
    flush!();
    for (g, &v) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.add(8 * g), v);
    }
}

macro_rules! entries {
    ($($name:ident, $w:expr, $tier:ident;)*) => {$(
        entries!(@one $name, $w, $tier);
    )*};
    (@one $name:ident, $w:expr, avx512) => {
        /// # Safety
        /// `a` is checked by `colskip_matmul_for_tier`; AVX-512 F/BW/VNNI, AVX2, FMA, F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
        pub(crate) unsafe fn $name(a: &mut ColArgs<'_>) {
            let nb = a.k / if $w == DType::Q4_K { 256 } else { 32 };
            let (mut pos, mut r0) = (0usize, 0usize);
            let (w, out) = (a.w.as_ptr(), a.out.as_mut_ptr());
            for t in 0..a.heights.0 {
                let h = a.tile(t);
                let end = pos + nb * simd_block_bytes($w, h);
                let next = (t + 1 < a.heights.0).then(|| (w.add(end), a.tile(t + 1)));
                match ($w, h) {
                    (DType::Q4_0, _) => tile512_quads(a, w.add(pos), h, out.add(r0), next),
                    (DType::Q8_0, 128) => tile512_quads_q8::<2>(a, w.add(pos), out.add(r0), next),
                    (DType::Q8_0, _) => tile512_quads_q8::<1>(a, w.add(pos), out.add(r0), next),
                    (DType::Q4_K, _) => tile512_q4k(a, w.add(pos), h, out.add(r0), next),
                    _ => tile512_quads_q5(a, w.add(pos), h, out.add(r0), next),
                }
                pos = end;
                r0 += h;
            }
        }
    };
    (@one $name:ident, $w:expr, avx2) => {
        /// # Safety
        /// `a` is checked by `colskip_matmul_for_tier`; AVX2, FMA, F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
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
                        DType::Q4_0 => unit256_pairs(a, w.add(pos), h, u, o, next),
                        DType::Q8_0 => unit256_q8(a, w.add(pos), h, u, o, next),
                        DType::Q4_K => unit256_q4k(a, w.add(pos), h, u, o, next),
                        _ => unit256_pairs_q5(a, w.add(pos), h, u, o, next),
                    }
                }
                pos = end;
                r0 += h;
            }
        }
    };
}

entries! {
    avx512_q4_0, DType::Q4_0, avx512;
    avx512_q5_0, DType::Q5_0, avx512;
    avx512_q8_0, DType::Q8_0, avx512;
    avx512_q4_k, DType::Q4_K, avx512;
    avx2_q4_0, DType::Q4_0, avx2;
    avx2_q5_0, DType::Q5_0, avx2;
    avx2_q8_0, DType::Q8_0, avx2;
    avx2_q4_k, DType::Q4_K, avx2;
}
