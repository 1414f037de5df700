//! One-token products of the N:M sparse types on AVX2, without expanding the weights.
//!
//! Expanding a block's 32 kept values into its 64 inputs (what the several-token kernels do)
//! costs more instructions than the products it feeds, which made sparse decoding slower than
//! dense although it reads fewer bytes. For one token these kernels go the other way: they
//! bring the activations of the inputs a block keeps next to its 32 kept values, in their
//! order, and multiply the two 32-byte vectors as a dense Q8_0 / Q4_0 block would be.
//!
//! - **2:4** ([`matvec_2_4`]): the block's 64 activations are *compressed* by two `vpshufb`.
//!   Each row's eight 6-bit codes become the control: the code bytes go to one dword lane per
//!   chunk (`vpshufb`, `vpsrlvd`, mask), `p_hi = ⌊43c/256⌋ = ⌊c/6⌋` and `p_lo = c − 6·p_hi`
//!   by 16-bit multiplies, and a 16-entry `vpshufb` table gives the kept positions of the
//!   two 2-of-4 patterns. Lanes hold chunks `0, 1, 4, 5 | 2, 3, 6, 7`, so one control serves
//!   both 32-byte activation halves; a blend and a `vpermq` put the 32 kept activations in
//!   kept order. Out-of-range codes select unspecified activations of the block (no memory
//!   is read for them).
//! - **4:8** ([`matvec`]): 70 patterns per chunk do not fit a `vpshufb` table, so the kept
//!   activations are *gathered*. Per call, a table is built from the activation row: for
//!   every 8-input chunk and every chunk code, the four activation codes the code keeps, in
//!   input order (4 bytes; entry 70 of each chunk is zero): `35.5·k` bytes, each chunk's
//!   entries `vpshufb`s of its eight codes with fixed controls. A block's eight codes become
//!   eight table indices (clamped to the zero entry, so an unvalidated block reads inside the
//!   table and counts as keeping nothing), and one `vpgatherdd` fetches its 32 kept
//!   activations. (A gather is slow on AMD Zen 3: about half the kernel's time there.)
//!
//! In both, the low 128 bits hold the first 32 inputs' kept activations (activation block
//! `2b`), the high 128 bits the last 32's (block `2b + 1`). 4-bit values: the low nibbles of
//! the 16 value bytes are kept values 0..16, the high nibbles 16..32 — one blend puts them in
//! the matching lanes; `Σ (q − 8)·a` is `vpmaddubsw(q, a) − vpmaddubsw(8, a)`. 8-bit values
//! move their sign onto the activations as the dense Q8_0 kernel does. The eight i32 lanes
//! (four per activation block) are scaled by the weight scale times the lane's activation
//! scale and added in f32.
//!
//! The integer sums are those of the scalar oracle; only the float order differs (lanes, then
//! a horizontal sum): within `Tolerance::sum_reorder`, as the other AVX2 kernels.

#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::{h2f, h2f_splat, hsum, load, load128};
use crate::kernels::MatmulArgs;
use crate::quant::sparse::{MASKS_4_8, PATTERNS_2_4};

/// An N:M sparse format as the gathered kernel reads it.
pub(super) trait GaFmt {
    /// Bits per chunk code (6 for 2:4, 7 for 4:8).
    const BITS: u32;
    /// Valid codes per chunk.
    const CODES: usize;
    /// Bytes per 64-input block.
    const W: usize;
    /// Offset of the kept values in a block.
    const QS: usize;
    /// 4-bit values (else 8-bit).
    const Q4: bool;
    /// The per-chunk table controls ([`controls`]), 32-byte aligned, `CTL.len()` a multiple
    /// of 32.
    fn controls() -> &'static [u8];
    /// [`code_select`] of [`GaFmt::BITS`].
    const SELECT: [u8; 32] = code_select(Self::BITS as usize);
    /// [`code_shift`] of [`GaFmt::BITS`].
    const SHIFT: [i32; 8] = code_shift(Self::BITS as usize);
}

/// The `vpshufb` controls that build one chunk's table entries from its eight codes: entry `e`
/// (bytes `4e..4e + 4`) takes the positions of the bits of `masks[e]`, ascending; entry
/// `masks.len()` and the padding are zero (`0x80`).
const fn controls<const N: usize>(masks: &[u8]) -> [u8; N] {
    let mut t = [0x80u8; N];
    let mut e = 0;
    while e < masks.len() {
        let (mut i, mut j) = (0, 0);
        while i < 8 {
            if masks[e] >> i & 1 == 1 {
                t[4 * e + j] = i as u8;
                j += 1;
            }
            i += 1;
        }
        e += 1;
    }
    t
}

#[repr(C, align(32))]
struct Ctl<const N: usize>([u8; N]);

/// 4:8: 71 entries of 4 bytes = 284, padded to 288.
static CTL_4_8: Ctl<288> = Ctl(controls::<288>(&MASKS_4_8));

macro_rules! ga_fmt {
    ($name:ident, $bits:expr, $codes:expr, $w:expr, $qs:expr, $q4:expr, $ctl:ident) => {
        pub(super) struct $name;
        impl GaFmt for $name {
            const BITS: u32 = $bits;
            const CODES: usize = $codes;
            const W: usize = $w;
            const QS: usize = $qs;
            const Q4: bool = $q4;
            fn controls() -> &'static [u8] {
                &$ctl.0
            }
        }
    };
}

ga_fmt!(GaQ4S48, 7, 70, 25, 9, true, CTL_4_8);
ga_fmt!(GaQ8S48, 7, 70, 41, 9, false, CTL_4_8);

/// Bytes per chunk in the table: the valid codes' entries and the zero entry.
const fn stride<F: GaFmt>() -> usize {
    (F::CODES + 1) * 4
}

/// Byte-select control that brings chunk `j`'s `bits`-bit code into dword lane `j` from the
/// block's code field broadcast as one little-endian u64 to every qword: lane `j` takes bytes
/// `⌊bits·j/8⌋ ..+ 4` (within the lane's 16 bytes, the code word twice; a byte past the eighth
/// repeats the first ones, in bits the mask removes).
const fn code_select(bits: usize) -> [u8; 32] {
    let mut sel = [0u8; 32];
    let mut j = 0;
    while j < 8 {
        let mut i = 0;
        while i < 4 {
            sel[4 * j + i] = (bits * j / 8 + i) as u8;
            i += 1;
        }
        j += 1;
    }
    sel
}

/// The right shift of lane `j` after [`code_select`]: `bits·j mod 8`.
const fn code_shift(bits: usize) -> [i32; 8] {
    let mut s = [0i32; 8];
    let mut j = 0;
    while j < 8 {
        s[j] = (bits * j % 8) as i32;
        j += 1;
    }
    s
}

/// Writes the table of the Q8_0 activation row `act` (`k` values) to `table` (at least
/// [`table_bytes`] bytes) and, per 64-input block, the lane scales (four times each of the
/// two activation blocks' scales) to `scales` (`k/64 · 8` values).
#[inline(always)]
unsafe fn build<F: GaFmt>(act: *const u8, k: usize, table: *mut u8, scales: *mut f32) {
    let ctl = F::controls();
    let s = stride::<F>();
    for c in 0..k / 8 {
        // Chunk c: codes 8·(c % 4).. of activation block c / 4 (34 bytes: scale, 32 codes).
        let src = act.add(34 * (c / 4) + 2 + 8 * (c % 4));
        let x = _mm256_set1_epi64x((src as *const i64).read_unaligned());
        let dst = table.add(c * s);
        // The last store runs past this chunk's entries into the next chunk's, which are
        // written after it (and into the padding for the last chunk).
        for (i, part) in ctl.chunks_exact(32).enumerate() {
            _mm256_storeu_si256(dst.add(32 * i) as *mut __m256i, _mm256_shuffle_epi8(x, load(part.as_ptr())));
        }
    }
    for b in 0..k / 64 {
        let (lo, hi) = (h2f(act.add(68 * b)), h2f(act.add(68 * b + 34)));
        _mm256_storeu_ps(scales.add(8 * b), _mm256_setr_ps(lo, lo, lo, lo, hi, hi, hi, hi));
    }
}

/// Table bytes for rows of `k` values (with the overrun of the last chunk's stores).
fn table_bytes<F: GaFmt>(k: usize) -> usize {
    k / 8 * stride::<F>() + F::controls().len()
}

/// Rows `r0..r0 + R` against the table.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn rows<F: GaFmt, const R: usize>(
    m: &mut MatmulArgs<'_>,
    table: *const u8,
    scales: *const f32,
    r0: usize,
) {
    let nb = m.k / 64;
    let rb = m.row_bytes;
    let w0 = m.w.as_ptr().add(r0 * rb);
    let sel = load(F::SELECT.as_ptr());
    let shift = _mm256_loadu_si256(F::SHIFT.as_ptr() as *const __m256i);
    let code_mask = _mm256_set1_epi32((1 << F::BITS) - 1);
    let zero_entry = _mm256_set1_epi32(F::CODES as i32);
    let e = (F::CODES + 1) as i32;
    let mut base = _mm256_setr_epi32(0, e, 2 * e, 3 * e, 4 * e, 5 * e, 6 * e, 7 * e);
    let step = _mm256_set1_epi32(8 * e);
    let (nib, eight, ones) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(8), _mm256_set1_epi16(1));
    let ahead = (2 * R * rb).max(4096);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let sd = _mm256_loadu_ps(scales.add(8 * b));
        for r in 0..R {
            let p = w0.add(r * rb + b * F::W);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead) as *const i8);
            let word = _mm256_set1_epi64x((p.add(2) as *const i64).read_unaligned());
            let code = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(word, sel), shift), code_mask);
            let idx = _mm256_add_epi32(_mm256_min_epu32(code, zero_entry), base);
            // In bounds: chunk 8b + j's entries, index below CODES + 1.
            let a = _mm256_i32gather_epi32::<4>(table as *const i32, idx);
            let sum = if F::Q4 {
                let x = _mm256_broadcastsi128_si256(load128(p.add(F::QS)));
                let q = _mm256_and_si256(_mm256_blend_epi32::<0xf0>(x, _mm256_srli_epi16::<4>(x)), nib);
                _mm256_sub_epi16(_mm256_maddubs_epi16(q, a), _mm256_maddubs_epi16(eight, a))
            } else {
                let q = load(p.add(F::QS));
                _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(a, q))
            };
            let sum = _mm256_madd_epi16(sum, ones);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(sd, h2f_splat(p)), acc[r]);
        }
        base = _mm256_add_epi32(base, step);
    }
    let col = r0 - m.rows.start;
    for r in 0..R {
        m.out[col + r] = hsum(acc[r]);
    }
}

thread_local! {
    /// The table and lane scales of the current call (reused between calls).
    static SCRATCH: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// The one-token product of [`MatmulArgs`] (`m.n == 1`) of N:M format `F` through gathered
/// activations.
///
/// # Safety
/// `m` satisfies the bounds documented on [`MatmulArgs`] with `n = 1`; AVX2, FMA and F16C
/// (inlined into a `#[target_feature]` entry point).
#[inline(always)]
pub(super) unsafe fn matvec<F: GaFmt>(m: &mut MatmulArgs<'_>) {
    debug_assert_eq!(m.n, 1);
    let tb = table_bytes::<F>(m.k).div_ceil(4);
    let mut buf = SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
    buf.resize(tb + m.k / 64 * 8, 0);
    let table = buf.as_mut_ptr() as *mut u8;
    let scales = buf.as_mut_ptr().add(tb) as *mut f32;
    build::<F>(m.act.as_ptr(), m.k, table, scales);
    let mut r = m.rows.start;
    while r + 4 <= m.rows.end {
        rows::<F, 4>(m, table, scales, r);
        r += 4;
    }
    while r < m.rows.end {
        rows::<F, 1>(m, table, scales, r);
        r += 1;
    }
    SCRATCH.with(|c| *c.borrow_mut() = buf);
}

// ---------------------------------------------------------------------------------------------
// 2:4 without a gather: the block's activations compressed by `vpshufb`.

/// For pattern index `p` (0..6) of a 2-of-4 group: entry `p` is the position (0..4) of its
/// first kept input, entry `6 + p` of its second; the rest `0x80`.
const PAIR_POSITIONS: [u8; 16] = {
    let mut t = [0x80u8; 16];
    let mut p = 0;
    while p < 6 {
        let m = PATTERNS_2_4[p];
        let lo = m.trailing_zeros() as u8;
        t[p] = lo;
        t[6 + p] = (m & !(1 << lo)).trailing_zeros() as u8;
        p += 1;
    }
    t
};

/// Dword lane `i` of the 2:4 controls holds chunk `CHUNK_ORDER[i]`: each 128-bit lane of the
/// control register serves two chunks of each of the block's two 32-byte activation halves.
const CHUNK_ORDER: [usize; 8] = [0, 1, 4, 5, 2, 3, 6, 7];

/// [`code_select`] for chunks in lane order `order`.
const fn code_select_in(bits: usize, order: [usize; 8]) -> [u8; 32] {
    let mut sel = [0u8; 32];
    let mut i = 0;
    while i < 8 {
        let mut b = 0;
        while b < 4 {
            sel[4 * i + b] = (bits * order[i] / 8 + b) as u8;
            b += 1;
        }
        i += 1;
    }
    sel
}

/// [`code_shift`] for chunks in lane order `order`.
const fn code_shift_in(bits: usize, order: [usize; 8]) -> [i32; 8] {
    let mut s = [0i32; 8];
    let mut i = 0;
    while i < 8 {
        s[i] = (bits * order[i] % 8) as i32;
        i += 1;
    }
    s
}

static SELECT_2_4: [u8; 32] = code_select_in(6, CHUNK_ORDER);
static SHIFT_2_4: [i32; 8] = code_shift_in(6, CHUNK_ORDER);

/// Per dword lane (chunk `CHUNK_ORDER[i]`): the second group's positions are 4 on, and an odd
/// chunk's bytes are the upper 8 of its 128-bit activation lane.
static CTL_OFFSET_2_4: [u32; 8] = {
    let mut t = [0u32; 8];
    let mut i = 0;
    while i < 8 {
        t[i] = 0x0404_0000 + if CHUNK_ORDER[i] % 2 == 1 { 0x0808_0808 } else { 0 };
        i += 1;
    }
    t
};

/// Rows `r0..r0 + R` of a 2:4 format (`Q4`: 4-bit values, else 8-bit) against the Q8_0
/// activation row: per block, each row's eight codes become a `vpshufb` control (pattern
/// indices `p_lo = c mod 6`, `p_hi = ⌊c/6⌋` by a multiply, then a 16-entry table of kept
/// positions) that compresses the block's 64 activations to the row's 32 kept ones, in the
/// order of its kept values.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn rows_2_4<const W: usize, const Q4: bool, const R: usize>(m: &mut MatmulArgs<'_>, r0: usize) {
    let nb = m.k / 64;
    let rb = m.row_bytes;
    let w0 = m.w.as_ptr().add(r0 * rb);
    let a0 = m.act.as_ptr();
    let sel = load(SELECT_2_4.as_ptr());
    let shift = _mm256_loadu_si256(SHIFT_2_4.as_ptr() as *const __m256i);
    let offset = _mm256_loadu_si256(CTL_OFFSET_2_4.as_ptr() as *const __m256i);
    let positions = _mm256_broadcastsi128_si256(load128(PAIR_POSITIONS.as_ptr()));
    let code_mask = _mm256_set1_epi32(63);
    let (m43, m6, m0101) = (_mm256_set1_epi16(43), _mm256_set1_epi16(6), _mm256_set1_epi16(0x0101));
    let second = _mm256_set1_epi32(0x0600_0600);
    let (nib, eight, ones) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(8), _mm256_set1_epi16(1));
    let ahead = (2 * R * rb).max(4096);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let ap = a0.add(68 * b);
        let (x0, x1) = (load(ap.add(2)), load(ap.add(36)));
        let sd = _mm256_insertf128_ps::<1>(
            _mm256_castps128_ps256(_mm_set1_ps(h2f(ap))),
            _mm_set1_ps(h2f(ap.add(34))),
        );
        for r in 0..R {
            let p = w0.add(r * rb + b * W);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead) as *const i8);
            let word = _mm256_set1_epi64x((p.add(2) as *const i64).read_unaligned());
            let c = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(word, sel), shift), code_mask);
            // p_hi = ⌊43c / 256⌋ = ⌊c/6⌋ for c < 36; p_lo = c − 6·p_hi.
            let hi = _mm256_srli_epi16::<8>(_mm256_mullo_epi16(c, m43));
            let lo = _mm256_sub_epi16(c, _mm256_mullo_epi16(hi, m6));
            // Table indices per dword: p_lo, 6 + p_lo, p_hi, 6 + p_hi.
            let idx = _mm256_mullo_epi16(_mm256_or_si256(lo, _mm256_slli_epi32::<16>(hi)), m0101);
            let ctl = _mm256_add_epi8(_mm256_shuffle_epi8(positions, _mm256_add_epi8(idx, second)), offset);
            let a =
                _mm256_blend_epi32::<0b1100_1100>(_mm256_shuffle_epi8(x0, ctl), _mm256_shuffle_epi8(x1, ctl));
            let a = _mm256_permute4x64_epi64::<0b11_01_10_00>(a);
            let sum = if Q4 {
                let x = _mm256_broadcastsi128_si256(load128(p.add(8)));
                let q = _mm256_and_si256(_mm256_blend_epi32::<0xf0>(x, _mm256_srli_epi16::<4>(x)), nib);
                _mm256_sub_epi16(_mm256_maddubs_epi16(q, a), _mm256_maddubs_epi16(eight, a))
            } else {
                let q = load(p.add(8));
                _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(a, q))
            };
            let sum = _mm256_madd_epi16(sum, ones);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(sd, h2f_splat(p)), acc[r]);
        }
    }
    let col = r0 - m.rows.start;
    for r in 0..R {
        m.out[col + r] = hsum(acc[r]);
    }
}

/// The one-token product of [`MatmulArgs`] (`m.n == 1`) of a 2:4 format (`W` bytes per block,
/// `Q4`: 4-bit values) through compressed activations ([`rows_2_4`]).
///
/// # Safety
/// `m` satisfies the bounds documented on [`MatmulArgs`] with `n = 1`; AVX2, FMA and F16C
/// (inlined into a `#[target_feature]` entry point).
#[inline(always)]
pub(super) unsafe fn matvec_2_4<const W: usize, const Q4: bool>(m: &mut MatmulArgs<'_>) {
    debug_assert_eq!(m.n, 1);
    let mut r = m.rows.start;
    while r + 4 <= m.rows.end {
        rows_2_4::<W, Q4, 4>(m, r);
        r += 4;
    }
    while r < m.rows.end {
        rows_2_4::<W, Q4, 1>(m, r);
        r += 1;
    }
}
