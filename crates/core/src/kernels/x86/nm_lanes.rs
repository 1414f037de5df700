//! Products of N:M lane matrices (`Q4_S24`, `Q4_S48`; layout in `kernels::packed`: groups of
//! sixteen rows, one row per 32-bit lane of a 512-bit register) on AVX-512 VNNI + VBMI.
//!
//! A lane of chunk word `W_c` holds the four kept inputs of one row's eight-input chunk `c` as
//! bytes `position | (value − 8) << 4`. That byte is itself the `vpermb` index into the
//! chunk's eight activation codes (`q + 128`, one 8-byte broadcast: index bits 3–5 select
//! among identical copies), so one permute gathers every row's own four activations, and
//! `byte & 0xf0` is `16·(value − 8)` as a signed byte. One `vpdpbusd` then adds four products
//! to each of sixteen rows: 64 kept multiply-adds (128 dense-equivalent) for a load, an and,
//! a permute and the dot product, where the dense Q4_0 kernel spends its nibble unpacking and
//! a `vpdpbusd` on 64 dense ones. Per 32-input half the sum is `16·Σc·q + 2048·Σc` (the
//! activations' bias 128): the group block's stored `Σc` takes it back to `16·Σc·q`, whose
//! conversion meets `(d_w/16)·d_a`, so each half adds exactly the oracle's
//! `fma(Σc·q, d_w·d_a, acc)` (the factor 16 is a power of two: no rounding moves).
//!
//! That is the 4:8 layout (`Q4_S48`). The compact 2:4 layout (`Q4_S24`, [`vbmi_q4_s24`]: 28
//! bytes per row and block instead of 36) keeps two value nibbles per byte (`byte & 0xf0`, or
//! shifted up four bits for the odd chunk) and two-bit positions within each four-input group:
//! a shift and one `vpternlogd` (`(field & 3) | 4` for kept inputs 2 and 3) make the permute
//! indices — one more and two more operations per chunk for a fifth fewer bytes.
//!
//! AVX2 ([`avx2_q4_nm`]) has no `vpermb` and no `vpdpbusd`: a register holds eight rows;
//! `byte & 0x0f` indexes a `vpshufb` of the chunk's eight activation codes (broadcast to both
//! 128-bit lanes), the value nibble goes through a 16-entry `vpshufb` table to `value − 8`, and
//! `vpmaddubsw` sums two products into i16 lanes (at most 2·255·8 = 4080; a half's four chunks
//! at most 16 320), widened once per half by `vpmaddwd`; the correction is `128·Σc`. Same
//! float operations, same bits.

use std::arch::x86_64::*;

use crate::kernels::packed::{NM24_GB as GB24, NM8_GB as GB8, NM_GB as GB, NM_GROUP as ROWS};
use crate::kernels::MatmulArgs;

/// The lane layouts (`kernels::packed`): 4-bit `position | value << 4` bytes (`Q4_S48`), the
/// compact 2:4 one (`Q4_S24`), 8-bit (`Q8_S24`, `Q8_S48`).
const WIDE: u8 = 0;
const C24: u8 = 1;
const Q8: u8 = 2;

/// Bytes of an activation block (`Act::Q8U`: f32 scale, 32 unsigned codes).
const AB: usize = 36;
/// Byte offsets in a group block: the scales, the two correction words.
const D: usize = 512;
const CORR: usize = 544;
/// How far ahead a one-token product prefetches each group's weights, in bytes (the dense
/// packed kernels' distance).
const PREFETCH: usize = 4096;

/// The 8-bit layout's offsets: position words, scales, correction words (i16).
const P8: usize = 512;
const D8: usize = 768;
const CORR8: usize = 800;

/// The compact 2:4 layout's offsets: position words, scales, correction words.
const P24: usize = 256;
const D24: usize = 384;
const CORR24: usize = 416;

/// Bytes of a group block, the scales' and the correction words' offsets of layout `L`.
const fn geometry(l: u8) -> (usize, usize, usize) {
    match l {
        WIDE => (GB, D, CORR),
        C24 => (GB24, D24, CORR24),
        _ => (GB8, D8, CORR8),
    }
}

/// Prefetches the group block of `bytes` bytes `PREFETCH` bytes after `wb`.
#[inline(always)]
unsafe fn prefetch_block(wb: *const u8, bytes: usize) {
    for l in 0..bytes.div_ceil(64) {
        _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(PREFETCH + 64 * l) as *const i8);
    }
}

/// The sums of `G` groups from `g0` against `N` tokens from `t0`.
///
/// # Safety
/// `m` holds an N:M lane matrix of layout `L` reaching group `g0 + G − 1` and activations of
/// tokens `t0..t0 + N`; AVX-512 F/BW/VNNI/VBMI (the entry point's features).
// Register tiles: the indices name registers (rows, tokens), as in `packed`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<const L: u8, const G: usize, const N: usize>(
    m: &MatmulArgs<'_>,
    g0: usize,
    t0: usize,
) -> [[__m512; N]; G] {
    let nb = m.k / 64;
    let (gb, d_at, corr_at) = geometry(L);
    let (w, a) = (m.w.as_ptr(), m.act.as_ptr());
    let high = _mm512_set1_epi8(0xf0u8 as i8);
    let (three, second) = (_mm512_set1_epi8(3), _mm512_set1_epi32(0x0404_0000));
    let sixteenth = _mm512_set1_ps(0.0625);
    let mut acc = [[_mm512_setzero_ps(); N]; G];
    for b in 0..nb {
        let mut wb = [w; G];
        let mut dw = [_mm512_setzero_ps(); G];
        for i in 0..G {
            wb[i] = w.add(((g0 + i) * nb + b) * gb);
            if N == 1 {
                prefetch_block(wb[i], gb);
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(wb[i].add(d_at) as *const __m256i));
            // The 4-bit sums are 16·Σc·q (the values' nibble in the high half of a byte).
            dw[i] = if L == Q8 { d } else { _mm512_mul_ps(d, sixteenth) };
        }
        for h in 0..2 {
            let mut s = [[_mm512_setzero_si512(); N]; G];
            for c in 4 * h..4 * h + 4 {
                let mut raw = [_mm512_setzero_si512(); G];
                let mut wv = [_mm512_setzero_si512(); G];
                for i in 0..G {
                    match L {
                        Q8 => {
                            // Positions: chunk 2p's in the low nibbles of word p, 2p + 1's in the
                            // high ones (the permute ignores index bits 3–5; the values' word is
                            // the codes as they are).
                            let p = _mm512_loadu_si512(wb[i].add(P8 + 64 * (c / 2)) as *const _);
                            raw[i] = if c % 2 == 0 { p } else { _mm512_srli_epi16::<4>(p) };
                            wv[i] = _mm512_loadu_si512(wb[i].add(64 * c) as *const _);
                        }
                        C24 => {
                            // Positions: field c % 4 of word c / 4 (shifted down: the bits
                            // above it do not matter), bit 2 set for kept inputs 2 and 3 —
                            // `(field & 3) | second` in one `vpternlogd`.
                            let p = _mm512_loadu_si512(wb[i].add(P24 + 64 * (c / 4)) as *const _);
                            let p = match c % 4 {
                                0 => p,
                                1 => _mm512_srli_epi16::<2>(p),
                                2 => _mm512_srli_epi16::<4>(p),
                                _ => _mm512_srli_epi16::<6>(p),
                            };
                            raw[i] = _mm512_ternarylogic_epi32::<0xea>(p, three, second);
                            // Values: chunk 2p's in the high nibbles of word p, 2p + 1's in
                            // the low ones (moved up; the byte below's nibble masked off).
                            let v = _mm512_loadu_si512(wb[i].add(64 * (c / 2)) as *const _);
                            let v = if c % 2 == 0 { v } else { _mm512_slli_epi16::<4>(v) };
                            wv[i] = _mm512_and_si512(v, high);
                        }
                        _ => {
                            raw[i] = _mm512_loadu_si512(wb[i].add(64 * c) as *const _);
                            wv[i] = _mm512_and_si512(raw[i], high);
                        }
                    }
                }
                for t in 0..N {
                    let at = a.add((t0 + t) * m.act_bytes + (2 * b + h) * AB + 4 + 8 * (c - 4 * h));
                    let table = _mm512_set1_epi64((at as *const i64).read_unaligned());
                    for i in 0..G {
                        let x = _mm512_permutexvar_epi8(raw[i], table);
                        s[i][t] = _mm512_dpbusd_epi32(s[i][t], x, wv[i]);
                    }
                }
            }
            for i in 0..G {
                // The bias: 128·Σq (8-bit), 128·16·Σc (4-bit).
                let corr = if L == Q8 {
                    let c = _mm256_loadu_si256(wb[i].add(corr_at + 32 * h) as *const __m256i);
                    _mm512_slli_epi32::<7>(_mm512_cvtepi16_epi32(c))
                } else {
                    let c = _mm_loadu_si128(wb[i].add(corr_at + 16 * h) as *const __m128i);
                    _mm512_slli_epi32::<11>(_mm512_cvtepi8_epi32(c))
                };
                for t in 0..N {
                    let at = a.add((t0 + t) * m.act_bytes + (2 * b + h) * AB);
                    let da = _mm512_set1_ps((at as *const f32).read_unaligned());
                    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(s[i][t], corr));
                    acc[i][t] = _mm512_fmadd_ps(v, _mm512_mul_ps(dw[i], da), acc[i][t]);
                }
            }
        }
    }
    acc
}

/// Writes the sums of sixteen-row groups `g0..g0 + G` for tokens `t0..`: the rows inside the
/// range (also the bitmap group kernel's).
#[inline(always)]
pub(super) unsafe fn store<const G: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    g0: usize,
    t0: usize,
    f: &[[__m512; N]; G],
) {
    let (start, end) = (m.rows.start, m.rows.end);
    for (i, fg) in f.iter().enumerate() {
        let r0 = (g0 + i) * ROWS;
        for (t, &v) in fg.iter().enumerate() {
            let o = (t0 + t) * m.out_stride;
            if r0 >= start && r0 + ROWS <= end {
                // In bounds: `out` holds `(n − 1)·out_stride + rows.len()` values (MatmulArgs).
                _mm512_storeu_ps(m.out.as_mut_ptr().add(o + r0 - start), v);
            } else {
                let mut lanes = [0.0f32; ROWS];
                _mm512_storeu_ps(lanes.as_mut_ptr(), v);
                m.store_rows(t0 + t, r0, &lanes);
            }
        }
    }
}

/// `G` groups from `g` against every token: tiles of 4 tokens, then single ones.
#[inline(always)]
unsafe fn groups<const L: u8, const G: usize>(m: &mut MatmulArgs<'_>, g: usize) {
    let mut t = 0;
    while t + 4 <= m.n {
        let f = tile::<L, G, 4>(m, g, t);
        store(m, g, t, &f);
        t += 4;
    }
    while t < m.n {
        let f = tile::<L, G, 1>(m, g, t);
        store(m, g, t, &f);
        t += 1;
    }
}

/// Every group of the row range: one token four groups at a time, several two.
#[inline(always)]
unsafe fn drive512<const L: u8>(m: &mut MatmulArgs<'_>) {
    let (mut g, end) = (m.rows.start / ROWS, m.rows.end.div_ceil(ROWS));
    if m.n == 1 {
        while g + 4 <= end {
            groups::<L, 4>(m, g);
            g += 4;
        }
    }
    while g + 2 <= end {
        groups::<L, 2>(m, g);
        g += 2;
    }
    if g < end {
        groups::<L, 1>(m, g);
    }
}

/// The product of a 4-bit N:M lane matrix (`Q4_S48`) with `Act::Q8U` activations. One token
/// takes four groups at a time (four independent `vpdpbusd` chains sharing each activation
/// broadcast), several tokens two groups by four tokens.
///
/// # Safety
/// AVX-512 F/BW/VNNI/VBMI; `m` checked by the caller (`MatmulCall`) for the packed layout.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx2,fma,f16c")]
pub(super) unsafe fn vbmi_q4_nm(m: &mut MatmulArgs<'_>) {
    drive512::<WIDE>(m)
}

/// The product of a compact 2:4 lane matrix (`Q4_S24`) with `Act::Q8U` activations: each
/// chunk's permute indices from a shift and a `vpternlogd` of its position word, its values
/// from the high or (shifted) low nibbles of its value word; otherwise as [`vbmi_q4_nm`].
///
/// # Safety
/// AVX-512 F/BW/VNNI/VBMI; `m` checked by the caller (`MatmulCall`) for the packed layout.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx2,fma,f16c")]
pub(super) unsafe fn vbmi_q4_s24(m: &mut MatmulArgs<'_>) {
    drive512::<C24>(m)
}

/// The product of an 8-bit N:M lane matrix (`Q8_S24` or `Q8_S48`) with `Act::Q8U`
/// activations: the positions come from the position words (a shift for odd chunks), the
/// codes meet the gathered activations as they are, the bias `128·Σq` from the correction
/// words; otherwise as [`vbmi_q4_nm`].
///
/// # Safety
/// AVX-512 F/BW/VNNI/VBMI; `m` checked by the caller (`MatmulCall`) for the packed layout.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx2,fma,f16c")]
pub(super) unsafe fn vbmi_q8_nm(m: &mut MatmulArgs<'_>) {
    drive512::<Q8>(m)
}

/// `value − 8` of each nibble `(value − 8) & 15`, as a signed byte (both 128-bit lanes).
const SIGNED_NIBBLE: [i8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3,
    -2, -1,
];

/// The sums of `G` groups from `g0` against `N` tokens from `t0` on AVX2: per group and
/// token, rows 0–7 and 8–15.
///
/// # Safety
/// As [`tile`]; AVX2, FMA, F16C.
// Register tiles: the indices name registers (rows, tokens), as in `packed`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile256<const L: u8, const G: usize, const N: usize>(
    m: &MatmulArgs<'_>,
    g0: usize,
    t0: usize,
) -> [[[__m256; 2]; N]; G] {
    let nb = m.k / 64;
    let (gb, d_at, corr_at) = geometry(L);
    let bias = _mm256_set1_epi8(0x80u8 as i8);
    let (w, a) = (m.w.as_ptr(), m.act.as_ptr());
    let low = _mm256_set1_epi8(0x0f);
    let (three, second) = (_mm256_set1_epi8(3), _mm256_set1_epi32(0x0404_0000));
    let ones = _mm256_set1_epi16(1);
    let signed = _mm256_loadu_si256(SIGNED_NIBBLE.as_ptr() as *const __m256i);
    let mut acc = [[[_mm256_setzero_ps(); 2]; N]; G];
    for b in 0..nb {
        let mut wb = [w; G];
        for (i, p) in wb.iter_mut().enumerate() {
            *p = w.add(((g0 + i) * nb + b) * gb);
            if N == 1 {
                prefetch_block(*p, gb);
            }
        }
        for h in 0..2 {
            let mut s = [[[_mm256_setzero_si256(); 2]; N]; G];
            for c in 4 * h..4 * h + 4 {
                let mut idx = [[_mm256_setzero_si256(); 2]; G];
                let mut wv = [[_mm256_setzero_si256(); 2]; G];
                for i in 0..G {
                    for j in 0..2 {
                        match L {
                            Q8 => {
                                // Positions: chunk 2p's in the low nibbles of word p, 2p + 1's
                                // in the high ones; `|q|` meets the activations with `q`'s sign.
                                let p = _mm256_loadu_si256(
                                    wb[i].add(P8 + 64 * (c / 2) + 32 * j) as *const __m256i
                                );
                                let p = if c % 2 == 0 { p } else { _mm256_srli_epi16::<4>(p) };
                                idx[i][j] = _mm256_and_si256(p, low);
                                wv[i][j] = _mm256_loadu_si256(wb[i].add(64 * c + 32 * j) as *const __m256i);
                            }
                            C24 => {
                                // Positions: field c % 4 of word c / 4, plus 4 for kept inputs
                                // 2 and 3; values: the high nibbles of word c / 2 for even
                                // chunks, the low ones for odd.
                                let p = _mm256_loadu_si256(
                                    wb[i].add(P24 + 64 * (c / 4) + 32 * j) as *const __m256i
                                );
                                let p = match c % 4 {
                                    0 => p,
                                    1 => _mm256_srli_epi16::<2>(p),
                                    2 => _mm256_srli_epi16::<4>(p),
                                    _ => _mm256_srli_epi16::<6>(p),
                                };
                                idx[i][j] = _mm256_or_si256(_mm256_and_si256(p, three), second);
                                let v =
                                    _mm256_loadu_si256(wb[i].add(64 * (c / 2) + 32 * j) as *const __m256i);
                                let v = if c % 2 == 0 { _mm256_srli_epi16::<4>(v) } else { v };
                                wv[i][j] = _mm256_shuffle_epi8(signed, _mm256_and_si256(v, low));
                            }
                            _ => {
                                let raw = _mm256_loadu_si256(wb[i].add(64 * c + 32 * j) as *const __m256i);
                                idx[i][j] = _mm256_and_si256(raw, low);
                                let nib = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low);
                                wv[i][j] = _mm256_shuffle_epi8(signed, nib);
                            }
                        }
                    }
                }
                for t in 0..N {
                    let at = a.add((t0 + t) * m.act_bytes + (2 * b + h) * AB + 4 + 8 * (c - 4 * h));
                    let table = _mm256_set1_epi64x((at as *const i64).read_unaligned());
                    // The 8-bit codes take signed activations (`q + 128` less its bias).
                    let table = if L == Q8 { _mm256_xor_si256(table, bias) } else { table };
                    for i in 0..G {
                        for j in 0..2 {
                            let x = _mm256_shuffle_epi8(table, idx[i][j]);
                            if L == Q8 {
                                // At most 2·128·127 per i16 lane; widened at once.
                                let p = _mm256_maddubs_epi16(
                                    _mm256_abs_epi8(wv[i][j]),
                                    _mm256_sign_epi8(x, wv[i][j]),
                                );
                                s[i][t][j] = _mm256_add_epi32(s[i][t][j], _mm256_madd_epi16(p, ones));
                            } else {
                                s[i][t][j] = _mm256_add_epi16(s[i][t][j], _mm256_maddubs_epi16(x, wv[i][j]));
                            }
                        }
                    }
                }
            }
            for i in 0..G {
                for j in 0..2 {
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(wb[i].add(d_at + 16 * j) as *const __m128i));
                    for t in 0..N {
                        let at = a.add((t0 + t) * m.act_bytes + (2 * b + h) * AB);
                        let da = _mm256_set1_ps((at as *const f32).read_unaligned());
                        // 8-bit: the exact signed sums already; 4-bit: widen, less the bias
                        // 128·Σc.
                        let v = if L == Q8 {
                            s[i][t][j]
                        } else {
                            let corr = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                                wb[i].add(corr_at + 16 * h + 8 * j) as *const __m128i,
                            ));
                            _mm256_sub_epi32(
                                _mm256_madd_epi16(s[i][t][j], ones),
                                _mm256_slli_epi32::<7>(corr),
                            )
                        };
                        acc[i][t][j] =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_mul_ps(dw, da), acc[i][t][j]);
                    }
                }
            }
        }
    }
    acc
}

/// [`store`] of [`tile256`]'s sums.
#[inline(always)]
unsafe fn store256<const G: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    g0: usize,
    t0: usize,
    f: &[[[__m256; 2]; N]; G],
) {
    for (i, fg) in f.iter().enumerate() {
        let r0 = (g0 + i) * ROWS;
        for (t, v) in fg.iter().enumerate() {
            let mut lanes = [0.0f32; ROWS];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), v[1]);
            m.store_rows(t0 + t, r0, &lanes);
        }
    }
}

/// `G` groups from `g` against every token on AVX2: tiles of 2 tokens (one group), then one.
#[inline(always)]
unsafe fn groups256<const L: u8, const G: usize>(m: &mut MatmulArgs<'_>, g: usize) {
    let mut t = 0;
    while G == 1 && t + 2 <= m.n {
        let f = tile256::<L, G, 2>(m, g, t);
        store256(m, g, t, &f);
        t += 2;
    }
    while t < m.n {
        let f = tile256::<L, G, 1>(m, g, t);
        store256(m, g, t, &f);
        t += 1;
    }
}

/// Every group of the row range on AVX2: one token two groups at a time, several one.
#[inline(always)]
unsafe fn drive256<const L: u8>(m: &mut MatmulArgs<'_>) {
    let (mut g, end) = (m.rows.start / ROWS, m.rows.end.div_ceil(ROWS));
    if m.n == 1 {
        while g + 2 <= end {
            groups256::<L, 2>(m, g);
            g += 2;
        }
    }
    while g < end {
        groups256::<L, 1>(m, g);
        g += 1;
    }
}

/// [`vbmi_q4_nm`] on AVX2 (module docs): one token takes two groups at a time, several
/// tokens one group by two tokens.
///
/// # Safety
/// AVX2, FMA, F16C; `m` checked by the caller (`MatmulCall`) for the packed layout.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_q4_nm(m: &mut MatmulArgs<'_>) {
    drive256::<WIDE>(m)
}

/// [`vbmi_q4_s24`] on AVX2: indices from a shift, an and and an or of the position word, the
/// value nibbles through the signed-nibble table; otherwise as [`avx2_q4_nm`].
///
/// # Safety
/// AVX2, FMA, F16C; `m` checked by the caller (`MatmulCall`) for the packed layout.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_q4_s24(m: &mut MatmulArgs<'_>) {
    drive256::<C24>(m)
}

/// [`vbmi_q8_nm`] on AVX2: `vpmaddubsw` of `|q|` against the gathered (signed) activations
/// with `q`'s sign (at most 2·128·127 per i16 lane), widened per chunk — exact signed sums,
/// no bias.
///
/// # Safety
/// AVX2, FMA, F16C; `m` checked by the caller (`MatmulCall`) for the packed layout.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_q8_nm(m: &mut MatmulArgs<'_>) {
    drive256::<Q8>(m)
}
