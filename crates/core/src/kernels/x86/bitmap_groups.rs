//! Products of `Q8_SB` matrices in the bitmap group layout (`kernels::bitmap_groups`) on
//! AVX-512 VNNI + VBMI2.
//!
//! Per chunk (four inputs of a 64-input block) and group of sixteen rows, the chunk mask is a
//! `k` register and one `vpexpandb` of the next 64 code bytes (merged into 128s) is the dense
//! packed Q8_0 word of the sixteen rows — unsigned codes `c + 128`, 128 at dropped inputs —
//! which meets the chunk's four activation codes broadcast in one `vpdpbusd`; the group's code
//! pointer moves on by the mask's popcount. The float work is the dense packed kernel's: per
//! 32-input half one conversion and one multiply-add for sixteen rows, after taking off
//! `128·Σq`. One token runs four groups at a time (four independent pointer chains), several
//! tokens two groups by four tokens (each expansion serves four tokens).

use std::arch::x86_64::*;

use super::nm_lanes::store;
use crate::kernels::bitmap_groups::{group_bytes, HEAD, META, ROWS, SCALES};
use crate::kernels::{MatmulArgs, Out};

/// Bytes of an activation block (`Act::Q8S`: f16 scale, i16 Σq, 32 codes).
const AB: usize = 36;
/// How far ahead a one-token product prefetches meta blocks and codes, in bytes (the dense
/// packed kernels' distance; 2048 measured the same or 5–7 % slower on the Xeon).
const PREFETCH: usize = 4096;

/// The sums of `G` groups from `g0` against `N` tokens from `t0`.
///
/// # Safety
/// `m.w` is a [`crate::kernels::bitmap_groups::BitmapGroups`]' bytes reaching group
/// `g0 + G − 1`, `m.act` holds `Act::Q8S` rows of tokens `t0..t0 + N`; AVX-512
/// F/BW/VNNI/VBMI2, POPCNT (the entry point's features).
// Register tiles: the indices name registers (groups, tokens).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<const G: usize, const N: usize>(m: &MatmulArgs<'_>, g0: usize, t0: usize) -> [[__m512; N]; G] {
    let nb = m.k / 64;
    let gb = group_bytes(m.k);
    let (w, a) = (m.w.as_ptr(), m.act.as_ptr());
    let fill = _mm512_set1_epi8(0x80u8 as i8);
    let mut acc = [[_mm512_setzero_ps(); N]; G];
    let mut head = [w; G];
    let mut vp = [w; G];
    for i in 0..G {
        head[i] = w.add((g0 + i) * gb);
        vp[i] = w.add((head[i] as *const u64).read_unaligned() as usize);
    }
    for b in 0..nb {
        let mut mb = [w; G];
        let mut dw = [_mm512_setzero_ps(); G];
        for i in 0..G {
            mb[i] = head[i].add(HEAD + b * META);
            if N == 1 {
                _mm_prefetch::<_MM_HINT_T0>(mb[i].wrapping_add(PREFETCH) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(mb[i].wrapping_add(PREFETCH + 64) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(mb[i].wrapping_add(PREFETCH + 128) as *const i8);
                for l in 0..5 {
                    _mm_prefetch::<_MM_HINT_T0>(vp[i].wrapping_add(PREFETCH + 64 * l) as *const i8);
                }
            }
            dw[i] = _mm512_cvtph_ps(_mm256_loadu_si256(mb[i].add(SCALES) as *const __m256i));
        }
        for h in 0..2 {
            let mut s = [[_mm512_setzero_si512(); N]; G];
            for j in 8 * h..8 * h + 8 {
                let mut wv = [_mm512_setzero_si512(); G];
                for i in 0..G {
                    let mask = (mb[i].add(8 * j) as *const u64).read_unaligned();
                    // In bounds: the group's codes, then other groups' or the 64-byte tail.
                    let x = _mm512_loadu_si512(vp[i] as *const _);
                    wv[i] = _mm512_mask_expand_epi8(fill, _cvtu64_mask64(mask), x);
                    vp[i] = vp[i].add(_popcnt64(mask as i64) as usize);
                }
                for t in 0..N {
                    let at = a.add((t0 + t) * m.act_bytes + (2 * b + h) * AB + 4 + 4 * (j - 8 * h));
                    let q = _mm512_set1_epi32((at as *const i32).read_unaligned());
                    for i in 0..G {
                        s[i][t] = _mm512_dpbusd_epi32(s[i][t], wv[i], q);
                    }
                }
            }
            for t in 0..N {
                let at = a.add((t0 + t) * m.act_bytes + (2 * b + h) * AB);
                let d16 = _mm_cvtsi32_si128((at as *const u16).read_unaligned() as i32);
                let da = _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(d16)));
                let bias = _mm512_set1_epi32(128 * (at.add(2) as *const i16).read_unaligned() as i32);
                for i in 0..G {
                    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(s[i][t], bias));
                    acc[i][t] = _mm512_fmadd_ps(v, _mm512_mul_ps(dw[i], da), acc[i][t]);
                }
            }
        }
    }
    acc
}

/// `G` groups from `g` against every token: tiles of 4 tokens, then single ones.
#[inline(always)]
unsafe fn groups<const G: usize>(m: &mut MatmulArgs<'_>, g: usize) {
    let mut t = 0;
    while t + 4 <= m.n {
        let f = tile::<G, 4>(m, g, t);
        store(m, g, t, &f);
        t += 4;
    }
    while t < m.n {
        let f = tile::<G, 1>(m, g, t);
        store(m, g, t, &f);
        t += 1;
    }
}

/// Bytes of a dense packed Q8_0 group block (eight rows' 32 values: scales, eight words).
const DENSE_GB: usize = 272;
/// Dense packed bytes expanded per packed product of a prompt: about 32 KiB, so that one
/// product meets every token with several groups.
const SLAB_BYTES: usize = 32 << 10;

/// Expands bitmap group `g` of `m.w` into the dense packed Q8_0 layout of its sixteen rows
/// (two eight-row groups of `2·nb` blocks) at `out`: per chunk one `vpexpandb` (zeros at
/// dropped inputs) whose halves are word `j % 8` of the two groups' block `2b + j / 8`.
///
/// # Safety
/// As [`tile`]; `out` holds `4·nb·272` bytes.
#[inline(always)]
unsafe fn expand_dense(m: &MatmulArgs<'_>, g: usize, out: *mut u8) {
    let nb = m.k / 64;
    let w = m.w.as_ptr();
    let head = w.add(g * group_bytes(m.k));
    let mut vp = w.add((head as *const u64).read_unaligned() as usize);
    let fill = _mm512_set1_epi8(0x80u8 as i8);
    for b in 0..nb {
        let mb = head.add(HEAD + b * META);
        for q in 0..2 {
            let scales = _mm_loadu_si128(mb.add(SCALES + 16 * q) as *const __m128i);
            for h in 0..2 {
                _mm_storeu_si128(out.add((q * 2 * nb + 2 * b + h) * DENSE_GB) as *mut __m128i, scales);
            }
        }
        for j in 0..16 {
            let mask = (mb.add(8 * j) as *const u64).read_unaligned();
            let x = _mm512_mask_expand_epi8(fill, _cvtu64_mask64(mask), _mm512_loadu_si512(vp as *const _));
            vp = vp.add(_popcnt64(mask as i64) as usize);
            let codes = _mm512_xor_si512(x, fill);
            let at = (2 * b + j / 8) * DENSE_GB + 16 + 32 * (j % 8);
            _mm256_storeu_si256(out.add(at) as *mut __m256i, _mm512_castsi512_si256(codes));
            _mm256_storeu_si256(
                out.add(2 * nb * DENSE_GB + at) as *mut __m256i,
                _mm512_extracti64x4_epi64::<1>(codes),
            );
        }
    }
}

/// Several tokens (all of a call's: `Kernels::matmul_bitmap_groups_to` does not block them):
/// slabs of about [`SLAB_BYTES`] of groups expanded once into the dense packed Q8_0 layout,
/// each through the dense packed kernel in token blocks (the same activations, the same sums).
///
/// # Safety
/// As [`vbmi2_bitmap_groups`].
#[inline(always)]
unsafe fn prompt(m: &mut MatmulArgs<'_>) {
    use std::cell::RefCell;
    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let gbytes = 4 * (m.k / 64) * DENSE_GB;
    let per_call = (SLAB_BYTES / gbytes).max(1);
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(per_call * gbytes, 0);
        let mut r = m.rows.start;
        while r < m.rows.end {
            let g0 = r / ROWS;
            let hi = ((g0 + per_call) * ROWS).min(m.rows.end);
            let g1 = hi.div_ceil(ROWS);
            for (i, g) in (g0..g1).enumerate() {
                expand_dense(m, g, buf.as_mut_ptr().add(i * gbytes));
            }
            // The tokens in blocks whose activations stay in L1 (as `MatmulCall` blocks them).
            let block = crate::kernels::token_block(m.act_bytes);
            let mut t0 = 0;
            while t0 < m.n {
                let nt = block.min(m.n - t0);
                let skip = t0 * m.out_stride + r - m.rows.start;
                let mut args = MatmulArgs {
                    w: &buf[..(g1 - g0) * gbytes],
                    row_bytes: m.k / 32 * 34,
                    k: m.k,
                    rows: r - g0 * ROWS..hi - g0 * ROWS,
                    act: &m.act[t0 * m.act_bytes..],
                    act_bytes: m.act_bytes,
                    n: nt,
                    // In bounds: rows r..hi of tokens t0.. start `skip` values in.
                    out: Out::from_raw(m.out.as_mut_ptr().add(skip), m.out.len - skip),
                    out_stride: m.out_stride,
                };
                super::packed::vnni_q8_0(&mut args);
                t0 += nt;
            }
            r = hi;
        }
    });
}

/// The product of a bitmap group matrix with `Act::Q8S` activations (module docs); from
/// [`crate::kernels::SPARSE_PACKED_MIN_TOKENS`] tokens through the dense packed kernel on
/// expanded slabs ([`prompt`]).
///
/// # Safety
/// AVX-512 F/BW/VNNI/VBMI2, POPCNT; `m.w` a `BitmapGroups`' bytes holding the row range,
/// checked by the caller (`Kernels::matmul_bitmap_groups_to`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi2,avx2,fma,f16c,popcnt")]
pub(super) unsafe fn vbmi2_bitmap_groups(m: &mut MatmulArgs<'_>) {
    if m.n >= crate::kernels::SPARSE_PACKED_MIN_TOKENS {
        return prompt(m);
    }
    let (mut g, end) = (m.rows.start / ROWS, m.rows.end.div_ceil(ROWS));
    if m.n == 1 {
        while g + 4 <= end {
            groups::<4>(m, g);
            g += 4;
        }
    }
    while g + 2 <= end {
        groups::<2>(m, g);
        g += 2;
    }
    if g < end {
        groups::<1>(m, g);
    }
}
