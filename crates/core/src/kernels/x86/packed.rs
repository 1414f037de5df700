//! Products of packed matrices (layout in `kernels::packed`): a register tile is one group of
//! eight rows against `N` tokens, one row per 32-bit lane.
//!
//! Per group block the code words are unpacked once into unsigned codes (`c + bias`), then
//! for each token and four-value chunk the activation's four bytes are broadcast to every
//! lane (a load, no shuffle) and multiplied into the eight rows at once: `vpdpbusd` on the
//! AVX-512 VNNI tier (256-bit, AVX512VL), `vpmaddubsw` on AVX2 (see [`Avx2Sum`]). The
//! `−bias·Σq` starts the VNNI sum and is added to the AVX2 one (whose Q8_0 products are
//! signed, without bias), and the block's eight row sums then take one conversion and one
//! multiply-add, the same operations on both tiers, so their results are bit-identical (and
//! equal to the oracle's). Products of several tokens on the VNNI tier take two groups at once
//! in 512-bit registers ([`tile_pair`]: sixteen rows per instruction), lane for lane the same
//! operations.

#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::{h2f, load, load128};
use crate::kernels::packed::GROUP;
use crate::kernels::MatmulArgs;

/// Bytes of a packed-kernel activation block.
const AB: usize = 36;
/// How far ahead a one-token product prefetches its weights, in bytes.
const PREFETCH: usize = 4096;

/// How the integer sums of one block are formed on AVX2 (no `vpdpbusd`).
#[derive(PartialEq, Eq)]
enum Avx2Sum {
    /// Unsigned codes below 16 by `vpmaddubsw`, all eight chunks summed in i16 (at most
    /// 8·2·15·127 = 30480), widened once per block.
    I16,
    /// Unsigned codes below 32: widened after every two pairs of chunks (at most
    /// 4·2·31·127 = 31496).
    PerPair,
    /// Signed codes: `|w|` against the activations with `w`'s sign (`vpsignb`), widened after
    /// every chunk.
    Signed,
}

/// One packed format: its group block and how to unpack a pair of chunks.
///
/// # Safety
/// `chunks` reads only within the group block at `wb` ([`Packed::GB`] bytes); AVX2.
unsafe trait Packed {
    /// Bytes of a group block.
    const GB: usize;
    /// The codes' bias: `u = c + BIAS` is what [`Packed::chunks`] returns.
    const BIAS: i32;
    /// How AVX2 sums the products.
    const AVX2: Avx2Sum;
    /// Whether the group block has the rows' minimums (eight f16 after the scales), which
    /// multiply the Q8_1 activation's `d·Σq`.
    const MIN: bool = false;
    /// The unsigned codes `c + BIAS` of chunks `j` and `j + 4` (values `4j..4j + 4` and
    /// `16 + 4j..16 + 4j + 4` of each row, a row per lane), `j = 0..4`.
    unsafe fn chunks(wb: *const u8, j: usize) -> (__m256i, __m256i);

    /// [`Packed::chunks`] of two group blocks at once, `w0`'s in the low halves (AVX-512F).
    #[inline(always)]
    unsafe fn chunks_pair(w0: *const u8, w1: *const u8, j: usize) -> (__m512i, __m512i) {
        let (lo0, hi0) = Self::chunks(w0, j);
        let (lo1, hi1) = Self::chunks(w1, j);
        (join(lo0, lo1), join(hi0, hi1))
    }
}

/// `lo` and `hi` as the low and high halves of one register.
#[inline(always)]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// [`nibbles`] of two group blocks' words at once (AVX-512F).
#[inline(always)]
unsafe fn nibbles_pair(q0: *const u8, q1: *const u8, j: usize) -> (__m512i, __m512i) {
    let low = _mm512_set1_epi8(0x0f);
    let w = join(load(q0.add(32 * j)), load(q1.add(32 * j)));
    (_mm512_and_si512(w, low), _mm512_and_si512(_mm512_srli_epi16::<4>(w), low))
}

struct Q4_0;
struct Q5_0;
struct Q8_0;
struct Q4_1;
struct Q5_1;

/// The nibbles of chunks `j` and `j + 4` from the words at `q` (`G_j` at `q + 32j`).
#[inline(always)]
unsafe fn nibbles(q: *const u8, j: usize) -> (__m256i, __m256i) {
    let low = _mm256_set1_epi8(0x0f);
    let w = load(q.add(32 * j));
    (_mm256_and_si256(w, low), _mm256_and_si256(_mm256_srli_epi16::<4>(w), low))
}

/// `(lo, hi)` with the fifth bits of chunks `j` and `j + 4` from the `H` word `h` added.
#[inline(always)]
unsafe fn fifth(lo: __m256i, hi: __m256i, h: __m256i, j: usize) -> (__m256i, __m256i) {
    // Bit c of every byte of H is chunk c's fifth bit: move it to bit 4.
    let bit4 = _mm256_set1_epi8(0x10);
    let (hj, hj4) = match j {
        0 => (_mm256_slli_epi16::<4>(h), h),
        1 => (_mm256_slli_epi16::<3>(h), _mm256_srli_epi16::<1>(h)),
        2 => (_mm256_slli_epi16::<2>(h), _mm256_srli_epi16::<2>(h)),
        _ => (_mm256_slli_epi16::<1>(h), _mm256_srli_epi16::<3>(h)),
    };
    (_mm256_or_si256(lo, _mm256_and_si256(hj, bit4)), _mm256_or_si256(hi, _mm256_and_si256(hj4, bit4)))
}

// SAFETY (all): reads within the group block.
unsafe impl Packed for Q4_0 {
    const GB: usize = 144;
    const BIAS: i32 = 8;
    const AVX2: Avx2Sum = Avx2Sum::I16;
    #[inline(always)]
    unsafe fn chunks(wb: *const u8, j: usize) -> (__m256i, __m256i) {
        nibbles(wb.add(16), j)
    }
    #[inline(always)]
    unsafe fn chunks_pair(w0: *const u8, w1: *const u8, j: usize) -> (__m512i, __m512i) {
        nibbles_pair(w0.add(16), w1.add(16), j)
    }
}

unsafe impl Packed for Q5_0 {
    const GB: usize = 176;
    const BIAS: i32 = 16;
    const AVX2: Avx2Sum = Avx2Sum::PerPair;
    #[inline(always)]
    unsafe fn chunks(wb: *const u8, j: usize) -> (__m256i, __m256i) {
        let (lo, hi) = nibbles(wb.add(16), j);
        fifth(lo, hi, load(wb.add(144)), j)
    }
}

unsafe impl Packed for Q4_1 {
    const GB: usize = 160;
    const BIAS: i32 = 0;
    const AVX2: Avx2Sum = Avx2Sum::I16;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn chunks(wb: *const u8, j: usize) -> (__m256i, __m256i) {
        nibbles(wb.add(32), j)
    }
    #[inline(always)]
    unsafe fn chunks_pair(w0: *const u8, w1: *const u8, j: usize) -> (__m512i, __m512i) {
        nibbles_pair(w0.add(32), w1.add(32), j)
    }
}

unsafe impl Packed for Q5_1 {
    const GB: usize = 192;
    const BIAS: i32 = 0;
    const AVX2: Avx2Sum = Avx2Sum::PerPair;
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn chunks(wb: *const u8, j: usize) -> (__m256i, __m256i) {
        let (lo, hi) = nibbles(wb.add(32), j);
        fifth(lo, hi, load(wb.add(160)), j)
    }
}

unsafe impl Packed for Q8_0 {
    const GB: usize = 272;
    const BIAS: i32 = 128;
    const AVX2: Avx2Sum = Avx2Sum::Signed;
    #[inline(always)]
    unsafe fn chunks(wb: *const u8, j: usize) -> (__m256i, __m256i) {
        let flip = _mm256_set1_epi8(-128);
        (
            _mm256_xor_si256(load(wb.add(16 + 32 * j)), flip),
            _mm256_xor_si256(load(wb.add(16 + 32 * (j + 4))), flip),
        )
    }
    #[inline(always)]
    unsafe fn chunks_pair(w0: *const u8, w1: *const u8, j: usize) -> (__m512i, __m512i) {
        let flip = _mm512_set1_epi8(-128);
        let word = |c: usize| join(load(w0.add(16 + 32 * c)), load(w1.add(16 + 32 * c)));
        (_mm512_xor_si512(word(j), flip), _mm512_xor_si512(word(j + 4), flip))
    }
}

/// The four bytes at `p` in every 32-bit lane.
#[inline(always)]
unsafe fn bcast(p: *const u8) -> __m256i {
    _mm256_set1_epi32((p as *const i32).read_unaligned())
}

/// The codes' sum of the activation block at `p`.
#[inline(always)]
unsafe fn act_sum(p: *const u8) -> i32 {
    i16::from_le((p.add(2) as *const i16).read_unaligned()) as i32
}

/// `Σ |w|·(a with w's sign)` of the signed codes `w` (given unsigned, `w + 128`) and
/// activations `a`, widened to i32 per lane.
#[inline(always)]
unsafe fn signed_dot(u: __m256i, a: __m256i) -> __m256i {
    let w = _mm256_xor_si256(u, _mm256_set1_epi8(-128));
    let p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Group `g` of a packed matrix against tokens `t0..t0 + N`: the eight rows' sums of each
/// token.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<F: Packed, const VNNI: bool, const N: usize>(
    m: &MatmulArgs<'_>,
    g: usize,
    t0: usize,
) -> [__m256; N] {
    let nb = m.k / 32;
    let ab = m.act_bytes;
    let wg = m.w.as_ptr().add(g * nb * F::GB);
    let a0 = m.act.as_ptr().add(t0 * ab);
    let ones = _mm256_set1_epi16(1);
    let mut f = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let wb = wg.add(b * F::GB);
        if N == 1 {
            // One token streams the matrix once, bound by memory: fetch 4 KiB ahead, which the
            // hardware prefetcher alone does not keep up with (`kernel_speed` mv streamed).
            // Past the matrix end the addresses are never read (a prefetch does not fault).
            prefetch(wb, F::GB, 0, 1);
        }
        let ap = |t: usize| a0.add(t * ab + b * AB);
        // i32 sums (i16 for `Avx2Sum::I16` until the end of the block).
        let mut s = [_mm256_setzero_si256(); N];
        if VNNI && F::BIAS != 0 {
            for t in 0..N {
                s[t] = _mm256_set1_epi32(-F::BIAS * act_sum(ap(t)));
            }
        }
        if !VNNI && N > 1 && matches!(F::AVX2, Avx2Sum::Signed) {
            // Several tokens, signed codes: one chunk word at a time (its signed codes and
            // magnitudes once for the token tile) in a loop the compiler does not unroll (an
            // opaque count): unrolled, it loaded all eight words and their magnitudes up front
            // and spilled the tile's sums to the stack (AVX2 has sixteen registers).
            let flip = _mm256_set1_epi8(-128);
            for j in 0..std::hint::black_box(4usize) {
                let (lo, hi) = F::chunks(wb, j);
                for (word, off) in [(lo, 4 * j), (hi, 16 + 4 * j)] {
                    let w = _mm256_xor_si256(word, flip);
                    let aw = _mm256_abs_epi8(w);
                    for t in 0..N {
                        let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(bcast(ap(t).add(4 + off)), w));
                        s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(p, ones));
                    }
                }
            }
        } else if !VNNI && matches!(F::AVX2, Avx2Sum::PerPair) {
            // Two pairs of chunks at a time: their four products' i16 sums fit (see
            // `Avx2Sum::PerPair`), so one widening serves both.
            for j in [0, 2] {
                let (lo0, hi0) = F::chunks(wb, j);
                let (lo1, hi1) = F::chunks(wb, j + 1);
                for t in 0..N {
                    let q = ap(t).add(4);
                    let p0 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo0, bcast(q.add(4 * j))),
                        _mm256_maddubs_epi16(hi0, bcast(q.add(16 + 4 * j))),
                    );
                    let p1 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo1, bcast(q.add(4 * j + 4))),
                        _mm256_maddubs_epi16(hi1, bcast(q.add(16 + 4 * j + 4))),
                    );
                    s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones));
                }
            }
        } else {
            for j in 0..4 {
                let (lo, hi) = F::chunks(wb, j);
                for t in 0..N {
                    let q = ap(t).add(4);
                    let (alo, ahi) = (bcast(q.add(4 * j)), bcast(q.add(16 + 4 * j)));
                    s[t] = if VNNI {
                        _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(s[t], lo, alo), hi, ahi)
                    } else {
                        match F::AVX2 {
                            Avx2Sum::I16 => {
                                let p = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(lo, alo),
                                    _mm256_maddubs_epi16(hi, ahi),
                                );
                                _mm256_add_epi16(s[t], p)
                            }
                            // Summed above, two pairs of chunks at a time.
                            Avx2Sum::PerPair => s[t],
                            Avx2Sum::Signed => _mm256_add_epi32(
                                s[t],
                                _mm256_add_epi32(signed_dot(lo, alo), signed_dot(hi, ahi)),
                            ),
                        }
                    };
                }
            }
        }
        let dw = _mm256_cvtph_ps(load128(wb));
        let mw = if F::MIN { _mm256_cvtph_ps(load128(wb.add(16))) } else { _mm256_setzero_ps() };
        for t in 0..N {
            let i = match (VNNI, &F::AVX2) {
                (true, _) | (false, Avx2Sum::Signed) => s[t],
                (false, Avx2Sum::I16) => {
                    let wide = _mm256_madd_epi16(s[t], ones);
                    if F::BIAS != 0 {
                        _mm256_add_epi32(wide, _mm256_set1_epi32(-F::BIAS * act_sum(ap(t))))
                    } else {
                        wide
                    }
                }
                (false, Avx2Sum::PerPair) if F::BIAS != 0 => {
                    _mm256_add_epi32(s[t], _mm256_set1_epi32(-F::BIAS * act_sum(ap(t))))
                }
                (false, Avx2Sum::PerPair) => s[t],
            };
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(h2f(ap(t))));
            f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), d, f[t]);
            if F::MIN {
                // The Q8_1 activation's `d·Σq` (f16) after its scale.
                f[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(h2f(ap(t).add(2))), f[t]);
            }
        }
    }
    f
}

/// Groups `g` and `g + 1` of a packed matrix against tokens `t0..t0 + N` in 512-bit registers
/// (AVX-512 VNNI): sixteen rows per register, group `g` in the low half. One `vpdpbusd` and
/// one broadcast serve the sixteen rows where [`tile`] needs two of each; every lane does the
/// operations [`tile`]'s does, in the same order, so the bits are the same.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_pair<F: Packed, const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [__m512; N] {
    let nb = m.k / 32;
    let ab = m.act_bytes;
    let wg0 = m.w.as_ptr().add(g * nb * F::GB);
    let wg1 = wg0.add(nb * F::GB);
    let a0 = m.act.as_ptr().add(t0 * ab);
    let halves = |p: *const u8, q: *const u8| {
        _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(_mm256_castsi128_si256(load128(p)), load128(q)))
    };
    let mut f = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        let (w0, w1) = (wg0.add(b * F::GB), wg1.add(b * F::GB));
        let ap = |t: usize| a0.add(t * ab + b * AB);
        let mut s = [_mm512_setzero_si512(); N];
        if F::BIAS != 0 {
            for t in 0..N {
                s[t] = _mm512_set1_epi32(-F::BIAS * act_sum(ap(t)));
            }
        }
        for j in 0..4 {
            let (lo, hi) = F::chunks_pair(w0, w1, j);
            for t in 0..N {
                let q = ap(t).add(4);
                let alo = _mm512_set1_epi32((q.add(4 * j) as *const i32).read_unaligned());
                let ahi = _mm512_set1_epi32((q.add(16 + 4 * j) as *const i32).read_unaligned());
                s[t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s[t], lo, alo), hi, ahi);
            }
        }
        let dw = halves(w0, w1);
        let mw = if F::MIN { halves(w0.add(16), w1.add(16)) } else { _mm512_setzero_ps() };
        for t in 0..N {
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(h2f(ap(t))));
            f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), d, f[t]);
            if F::MIN {
                f[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(h2f(ap(t).add(2))), f[t]);
            }
        }
    }
    f
}

/// [`tile_pair`]'s registers stored as the two groups' [`store`]s.
#[inline(always)]
unsafe fn store_pair<const N: usize>(m: &mut MatmulArgs<'_>, g: usize, t0: usize, f: &[__m512; N]) {
    let lo: [__m256; N] = std::array::from_fn(|t| _mm512_castps512_ps256(f[t]));
    let hi: [__m256; N] =
        std::array::from_fn(|t| _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(f[t]))));
    store(m, g, t0, &lo);
    store(m, g + 1, t0, &hi);
}

/// Every group that meets the row range, two at a time in 512-bit registers against tokens in
/// tiles of `N` (then 4) as [`tile_pair`]; the tokens left over, and a last unpaired group, as
/// [`group`] does them.
#[inline(always)]
unsafe fn matmul_pairs<F: Packed, const N: usize>(m: &mut MatmulArgs<'_>) {
    let (g_start, g_end) = (m.rows.start / GROUP, m.rows.end.div_ceil(GROUP));
    let mut g = g_start;
    while g < g_end {
        if g + 1 == g_end {
            // One group left: the 256-bit tiles.
            group::<Legacy<F, true>, N>(m, g, 0);
            break;
        }
        let mut t = 0;
        while t + N <= m.n {
            let f = tile_pair::<F, N>(m, g, t);
            store_pair(m, g, t, &f);
            t += N;
        }
        if N > 4 && t + 4 <= m.n {
            let f = tile_pair::<F, 4>(m, g, t);
            store_pair(m, g, t, &f);
            t += 4;
        }
        // Fewer than 4 tokens left: the 256-bit tiles of 2 and 1.
        group::<Legacy<F, true>, N>(m, g, t);
        group::<Legacy<F, true>, N>(m, g + 1, t);
        g += 2;
    }
}

/// The register tile of one packed format: a group against `N` tokens.
trait Tile {
    /// The eight rows' sums of group `g` for tokens `t0..t0 + N`.
    ///
    /// # Safety
    /// `m` holds a packed matrix of the format reaching group `g` and activations of tokens
    /// `t0..t0 + N`; the CPU features of the entry point that inlines it.
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [__m256; N];
}

/// The legacy types' [`tile`].
struct Legacy<F, const VNNI: bool>(std::marker::PhantomData<F>);

impl<F: Packed, const VNNI: bool> Tile for Legacy<F, VNNI> {
    #[inline(always)]
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [__m256; N] {
        tile::<F, VNNI, N>(m, g, t0)
    }
}

/// Writes the sums of group `g` for tokens `t0..`: the rows of the group inside the range.
#[inline(always)]
unsafe fn store(m: &mut MatmulArgs<'_>, g: usize, t0: usize, f: &[__m256]) {
    let (start, end) = (m.rows.start, m.rows.end);
    let r0 = g * GROUP;
    for (t, &v) in f.iter().enumerate() {
        let o = (t0 + t) * m.out_stride;
        if r0 >= start && r0 + GROUP <= end {
            // In bounds: `out` holds `(n − 1)·out_stride + rows.len()` values (MatmulArgs).
            _mm256_storeu_ps(m.out.as_mut_ptr().add(o + r0 - start), v);
        } else {
            let mut lanes = [0.0f32; GROUP];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            m.store_rows(t0 + t, r0, &lanes);
        }
    }
}

/// Every group that meets the row range, each as [`group`].
#[inline(always)]
unsafe fn matmul<T: Tile, const N: usize>(m: &mut MatmulArgs<'_>) {
    for g in m.rows.start / GROUP..m.rows.end.div_ceil(GROUP) {
        group::<T, N>(m, g, 0);
    }
}

/// Group `g` against tokens `t..` in 256-bit tiles of `N`, then 4, 2, 1.
#[inline(always)]
unsafe fn group<T: Tile, const N: usize>(m: &mut MatmulArgs<'_>, g: usize, mut t: usize) {
    while t + N <= m.n {
        let f = T::tile::<N>(m, g, t);
        store(m, g, t, &f);
        t += N;
    }
    if N > 4 && t + 4 <= m.n {
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

macro_rules! entries {
    ($($fmt:ident => $avx2:ident, $vnni:ident;)*) => {$(
        /// # Safety
        /// `m` holds a packed matrix of the type reaching `rows.end` and packed-kernel
        /// activations, with the bounds of [`MatmulArgs`]; AVX2, FMA, F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $avx2(m: &mut MatmulArgs<'_>) {
            matmul::<Legacy<$fmt, false>, 4>(m)
        }
        /// # Safety
        /// As the AVX2 entry; AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(super) unsafe fn $vnni(m: &mut MatmulArgs<'_>) {
            if m.n == 1 {
                // One token is bound by memory: the 256-bit tile, which prefetches.
                matmul::<Legacy<$fmt, true>, 8>(m)
            } else {
                matmul_pairs::<$fmt, 8>(m)
            }
        }
    )*};
}

entries! {
    Q4_0 => avx2_q4_0, vnni_q4_0;
    Q5_0 => avx2_q5_0, vnni_q5_0;
    Q8_0 => avx2_q8_0, vnni_q8_0;
    Q4_1 => avx2_q4_1, vnni_q4_1;
    Q5_1 => avx2_q5_1, vnni_q5_1;
}

// ---------------------------------------------------------------------------------------------
// The k-quants (layouts in `kernels::packed`): per 16- or 32-value group of a super-block the
// `vpmaddubsw` products of its chunks are summed in i16 and widened by one `vpmaddwd` with the
// eight rows' integer scales (an i16 pair `(sc, sc)` per lane), so a super-block's integer sum
// `Σ sc·Σu·q` is exact in i32; its offsets meet the activation's 16-value sums the same way.
// AVX2 instructions only: the AVX-512 tier runs these too.

/// Bytes of a Q8_K activation block.
const AK: usize = 292;

/// The i16 pair `(b, b)` in every 32-bit lane, `b` byte `i` (`0..4`) of that lane of `x`
/// (zero-extended).
#[inline(always)]
unsafe fn byte_pair(x: __m256i, i: usize) -> __m256i {
    // Byte 4l + i of each lane in both bytes' low halves, 0x80 + i (zero) in the high ones.
    let base = _mm256_set1_epi64x(0x8004_8004_8000_8000u64 as i64);
    let lanes = _mm256_setr_epi64x(0, 0x0808_0808_0808_0808, 0, 0x0808_0808_0808_0808);
    let ctrl = _mm256_add_epi8(_mm256_add_epi8(base, lanes), _mm256_set1_epi8(i as i8));
    _mm256_shuffle_epi8(x, ctrl)
}

/// The i16 pair `(b_i, b_j)` in every 32-bit lane, `b_i` and `b_j` bytes `i` and `j` (`0..4`)
/// of that lane of `x`, sign-extended.
#[inline(always)]
unsafe fn signed_pair(x: __m256i, i: usize, j: usize) -> __m256i {
    // Byte 4l + i (4l + j) of each lane in the high byte of its low (high) i16, 0x80 (zero)
    // in the low bytes; the arithmetic shift then sign-extends.
    let base = _mm256_set1_epi64x(0x0480_0480_0080_0080u64 as i64);
    let lanes = _mm256_setr_epi64x(0, 0x0800_0800_0800_0800, 0, 0x0800_0800_0800_0800);
    let pick = _mm256_set1_epi32(((i as i32) << 8) | ((j as i32) << 24));
    let ctrl = _mm256_add_epi8(_mm256_add_epi8(base, lanes), pick);
    _mm256_srai_epi16::<8>(_mm256_shuffle_epi8(x, ctrl))
}

/// Prefetches part `i` of `parts` of the group block at `wb` (`gb` bytes) [`PREFETCH`] bytes
/// ahead, as [`tile`] does for one token: spread over a large block's iterations, so that a
/// block's cache-line requests do not come in one burst.
#[inline(always)]
unsafe fn prefetch(wb: *const u8, gb: usize, i: usize, parts: usize) {
    let mut off = (i * gb / parts) & !63;
    while off < (i + 1) * gb / parts {
        _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(PREFETCH + off) as *const i8);
        off += 64;
    }
}

/// The f32 scale of the Q8_K activation block at `p`.
#[inline(always)]
unsafe fn act_d(p: *const u8) -> __m256 {
    _mm256_set1_ps((p as *const f32).read_unaligned())
}

/// Packed Q4_K.
struct Q4K;

impl Tile for Q4K {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [__m256; N] {
        const GB: usize = 1152;
        let nb = m.k / 256;
        let ab = m.act_bytes;
        let wg = m.w.as_ptr().add(g * nb * GB);
        let a0 = m.act.as_ptr().add(t0 * ab);
        let low = _mm256_set1_epi8(0x0f);
        let six = _mm256_set1_epi8(0x3f);
        let top = _mm256_set1_epi8(0x30);
        let mut f = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let wb = wg.add(b * GB);
            let ap = |t: usize| a0.add(t * ab + b * AK);
            // The six-bit scales and minimums: lane r of `sc[0]` holds row r's scales 0..4,
            // `sc[1]` its scales 4..8 (the top two bits of the first eight bytes above the
            // nibbles of the last four), `mn` the minimums alike.
            let (w0, w1, w2) = (load(wb.add(32)), load(wb.add(64)), load(wb.add(96)));
            let sc = [
                _mm256_and_si256(w0, six),
                _mm256_or_si256(_mm256_and_si256(w2, low), _mm256_and_si256(_mm256_srli_epi16::<2>(w0), top)),
            ];
            let mn = [
                _mm256_and_si256(w1, six),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(w2), low),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(w1), top),
                ),
            ];
            let mut s = [_mm256_setzero_si256(); N];
            // Sub-block j: the low (even j) or high nibbles of words G_{j/2, c}. A loop the
            // compiler keeps rolled (an opaque count), so that each iteration's token tile
            // stays in registers (unrolled whole, it spilled them).
            for j in 0..std::hint::black_box(8usize) {
                if N == 1 {
                    prefetch(wb, GB, j, 8);
                }
                let q = wb.add(128 + 256 * (j / 2));
                let shift = _mm_cvtsi32_si128(4 * (j % 2) as i32);
                let mut p = [_mm256_setzero_si256(); N];
                for c in 0..8 {
                    let u = _mm256_and_si256(_mm256_srl_epi16(load(q.add(32 * c)), shift), low);
                    for t in 0..N {
                        // At most 8·2·15·128 = 30720: the i16 sums do not saturate.
                        let a = bcast(ap(t).add(4 + 32 * j + 4 * c));
                        p[t] = _mm256_add_epi16(p[t], _mm256_maddubs_epi16(u, a));
                    }
                }
                let scp = byte_pair(if j < 4 { sc[0] } else { sc[1] }, j % 4);
                for t in 0..N {
                    s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(p[t], scp));
                }
            }
            let mut ms = [_mm256_setzero_si256(); N];
            for j in 0..8 {
                // The minimum of sub-block j against its two 16-value sums.
                let mp = byte_pair(if j < 4 { mn[0] } else { mn[1] }, j % 4);
                for t in 0..N {
                    ms[t] = _mm256_add_epi32(ms[t], _mm256_madd_epi16(mp, bcast(ap(t).add(260 + 4 * j))));
                }
            }
            let dw = _mm256_cvtph_ps(load128(wb));
            let mw = _mm256_cvtph_ps(load128(wb.add(16)));
            for t in 0..N {
                let da = act_d(ap(t));
                f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(dw, da), f[t]);
                f[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ms[t]), _mm256_mul_ps(mw, da), f[t]);
            }
        }
        f
    }
}

/// The six-bit codes of quarter `X` (values `32X..32X + 32` of a 128-value half) of a chunk
/// of a Q6_K group block, whose low-nibble word of quarters 0 and 2 is at `ql` (quarters 1 and
/// 3: `ql + 256`) and high-bits word at `qh`.
#[inline(always)]
unsafe fn q6_code<const X: usize>(ql: *const u8, qh: *const u8) -> __m256i {
    let (low, top) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    let l = load(ql.add(256 * (X % 2)));
    let lo = if X < 2 { l } else { _mm256_srli_epi16::<4>(l) };
    let h = load(qh);
    let hi = match X {
        0 => _mm256_slli_epi16::<4>(h),
        1 => _mm256_slli_epi16::<2>(h),
        2 => h,
        _ => _mm256_srli_epi16::<2>(h),
    };
    _mm256_or_si256(_mm256_and_si256(lo, low), _mm256_and_si256(hi, top))
}

/// Packed Q6_K.
struct Q6K;

impl Tile for Q6K {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const N: usize>(m: &MatmulArgs<'_>, g: usize, t0: usize) -> [__m256; N] {
        const GB: usize = 1680;
        let nb = m.k / 256;
        let ab = m.act_bytes;
        let wg = m.w.as_ptr().add(g * nb * GB);
        let a0 = m.act.as_ptr().add(t0 * ab);
        let mut f = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let wb = wg.add(b * GB);
            let ap = |t: usize| a0.add(t * ab + b * AK);
            // Lane r of `sw[w]`: row r's scales 4w..4w + 4.
            let sw = [load(wb.add(16)), load(wb.add(48)), load(wb.add(80)), load(wb.add(112))];
            // The scale pair `(sc, sc)` of each 16-value group, once per super-block.
            let scp: [__m256i; 16] = [
                signed_pair(sw[0], 0, 0),
                signed_pair(sw[0], 1, 1),
                signed_pair(sw[0], 2, 2),
                signed_pair(sw[0], 3, 3),
                signed_pair(sw[1], 0, 0),
                signed_pair(sw[1], 1, 1),
                signed_pair(sw[1], 2, 2),
                signed_pair(sw[1], 3, 3),
                signed_pair(sw[2], 0, 0),
                signed_pair(sw[2], 1, 1),
                signed_pair(sw[2], 2, 2),
                signed_pair(sw[2], 3, 3),
                signed_pair(sw[3], 0, 0),
                signed_pair(sw[3], 1, 1),
                signed_pair(sw[3], 2, 2),
                signed_pair(sw[3], 3, 3),
            ];
            let mut s = [_mm256_setzero_si256(); N];
            // Chunks c, c + 1 (c = 2·(it % 4)) of the four quarters x of half n = it / 4: their
            // words are read once for the four quarters, whose 16-value groups are
            // 8n + 2x + c / 4. A rolled loop (an opaque count), as Q4_K's; a pair of chunks'
            // i16 sum is at most 2·2·63·128 = 32256.
            for it in 0..std::hint::black_box(8usize) {
                if N == 1 {
                    prefetch(wb, GB, it, 8);
                }
                let (n, c) = (it / 4, 2 * (it % 4));
                let ql = wb.add(144 + 32 * (16 * n + c));
                let qh = wb.add(1168 + 32 * (8 * n + c));
                let a = ap(0).add(4 + 128 * n + 4 * c);
                macro_rules! quarter {
                    ($x:literal) => {{
                        let (u0, u1) = (q6_code::<$x>(ql, qh), q6_code::<$x>(ql.add(32), qh.add(32)));
                        let sc = scp[8 * n + 2 * $x + c / 4];
                        for t in 0..N {
                            let a = a.add(t * ab + 32 * $x);
                            let p = _mm256_add_epi16(
                                _mm256_maddubs_epi16(u0, bcast(a)),
                                _mm256_maddubs_epi16(u1, bcast(a.add(4))),
                            );
                            s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(p, sc));
                        }
                    }};
                }
                quarter!(0);
                quarter!(1);
                quarter!(2);
                quarter!(3);
            }
            // The code bias: 32·Σ sc·bsum, the scales of groups 2i and 2i + 1 against the
            // activation's sums of those groups.
            let mut bs = [_mm256_setzero_si256(); N];
            for i in 0..8 {
                let pair = signed_pair(sw[i / 2], 2 * i % 4, 2 * i % 4 + 1);
                for t in 0..N {
                    bs[t] = _mm256_add_epi32(bs[t], _mm256_madd_epi16(pair, bcast(ap(t).add(260 + 4 * i))));
                }
            }
            let dw = _mm256_cvtph_ps(load128(wb));
            for t in 0..N {
                let i = _mm256_sub_epi32(s[t], _mm256_slli_epi32::<5>(bs[t]));
                f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(dw, act_d(ap(t))), f[t]);
            }
        }
        f
    }
}

/// # Safety
/// `m` holds a packed Q4_K matrix reaching `rows.end` and Q8_K activations, with the bounds of
/// [`MatmulArgs`]; AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_q4_k(m: &mut MatmulArgs<'_>) {
    matmul::<Q4K, 4>(m)
}

/// # Safety
/// As [`avx2_q4_k`], for Q6_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_q6_k(m: &mut MatmulArgs<'_>) {
    matmul::<Q6K, 4>(m)
}
