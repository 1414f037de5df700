//! One-token products of the N:M sparse types on AVX2 through *compressed activations*.
//!
//! Expanding a block's 32 kept values into its 64 inputs (what the several-token kernels do)
//! costs more instructions than the products it feeds, which made sparse decoding slower than
//! dense although it reads fewer bytes. For one token these kernels go the other way: they
//! compress the block's 64 activations to the 32 the row keeps, in the order of its kept values,
//! and multiply the two 32-byte vectors as a dense block would be.
//!
//! - Each row's eight chunk codes become one `vpshufb` control of the pattern's four kept
//!   positions per chunk, one dword per chunk. 2:4 computes it: the code bytes go to one dword
//!   lane per chunk (`vpshufb`, `vpsrlvd`, mask), `p_hi = ⌊43c/256⌋ = ⌊c/6⌋` and
//!   `p_lo = c − 6·p_hi` by 16-bit multiplies, and a 16-entry `vpshufb` table gives the two
//!   2-of-4 patterns' positions. 4:8's 70 patterns do not fit such a table: each code indexes a
//!   128-entry table of positions (invalid codes keep nothing). Dword lane `i` holds chunk
//!   [`CHUNK_ORDER`]`[i]` (`0, 1, 4, 5 | 2, 3, 6, 7`), so one control serves both 32-byte
//!   halves of the block's activations (a 128-bit lane holds two chunks of each); an odd
//!   chunk's positions are moved to the upper 8 bytes of its lane.
//! - Two `vpshufb` (one per half), a blend and a `vpermq` give the 32 kept activations: the low
//!   128 bits those of the first 32 inputs (activation block `2b`), the high 128 bits those of
//!   the last 32 (block `2b + 1`).
//! - 4-bit values: the low nibbles of the 16 value bytes are kept values 0..16, the high
//!   nibbles 16..32 — one blend puts them in the matching lanes; `Σ (q − 8)·a` is
//!   `vpmaddubsw(q, a) − vpmaddubsw(8, a)`. 8-bit values move their sign onto the activations
//!   as the dense Q8_0 kernel does.
//! - The eight i32 lanes (four per activation block) are scaled by the weight scale times the
//!   lane's activation scale and added in f32.
//!
//! The integer sums are those of the scalar oracle; only the float order differs (lanes, then
//! a horizontal sum): within `Tolerance::sum_reorder`, as the other AVX2 kernels.
//!
//! (Tried on an AMD Zen 3: 2:4 controls from a 64-entry table like 4:8's decoded 5–7 % slower
//! in `edgellm bench`; gathering the kept activations with `vpgatherdd` from a per-call table
//! of every chunk's kept activations per code was half the kernel's time — Zen 3's gather is
//! slow.)

#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::{h2f, h2f_splat, hsum, load, load128};
use crate::kernels::MatmulArgs;
use crate::quant::sparse::{PAIR_POSITIONS_2_4, POSITIONS_4_8};

/// Dword lane `i` of a control holds chunk `CHUNK_ORDER[i]`.
const CHUNK_ORDER: [usize; 8] = [0, 1, 4, 5, 2, 3, 6, 7];

/// Per dword lane: an odd chunk's bytes are the upper 8 of its 128-bit activation lane.
static LANE_OFFSET: [u32; 8] = {
    let mut t = [0u32; 8];
    let mut i = 0;
    while i < 8 {
        t[i] = if CHUNK_ORDER[i] % 2 == 1 { 0x0808_0808 } else { 0 };
        i += 1;
    }
    t
};

/// Byte-select control that brings chunk `CHUNK_ORDER[i]`'s 6-bit code into dword lane `i`
/// from the code field broadcast as one little-endian u64 to every qword (bytes past the
/// eighth repeat the first ones, in bits the mask removes).
static SELECT_2_4: [u8; 32] = {
    let mut sel = [0u8; 32];
    let mut i = 0;
    while i < 8 {
        let mut b = 0;
        while b < 4 {
            sel[4 * i + b] = (6 * CHUNK_ORDER[i] / 8 + b) as u8;
            b += 1;
        }
        i += 1;
    }
    sel
};

/// The right shift of lane `i` after [`SELECT_2_4`].
static SHIFT_2_4: [i32; 8] = {
    let mut s = [0i32; 8];
    let mut i = 0;
    while i < 8 {
        s[i] = (6 * CHUNK_ORDER[i] % 8) as i32;
        i += 1;
    }
    s
};

/// The control of a 2:4 block at `p` computed from its codes: `p_hi = ⌊43c/256⌋ = ⌊c/6⌋`,
/// `p_lo = c − 6·p_hi` by 16-bit multiplies, the kept positions from a 16-entry `vpshufb`
/// table; no memory is read per chunk (out-of-range codes select unspecified positions).
#[inline(always)]
unsafe fn control_2_4(p: *const u8, lane_offset: __m256i) -> __m256i {
    let word = _mm256_set1_epi64x((p.add(2) as *const i64).read_unaligned());
    let c = _mm256_shuffle_epi8(word, load(SELECT_2_4.as_ptr()));
    let shift = _mm256_loadu_si256(SHIFT_2_4.as_ptr() as *const __m256i);
    let c = _mm256_and_si256(_mm256_srlv_epi32(c, shift), _mm256_set1_epi32(63));
    let hi = _mm256_srli_epi16::<8>(_mm256_mullo_epi16(c, _mm256_set1_epi16(43)));
    let lo = _mm256_sub_epi16(c, _mm256_mullo_epi16(hi, _mm256_set1_epi16(6)));
    // Table indices per dword: p_lo, 6 + p_lo, p_hi, 6 + p_hi; the second group's positions
    // are 4 on.
    let idx = _mm256_mullo_epi16(_mm256_or_si256(lo, _mm256_slli_epi32::<16>(hi)), _mm256_set1_epi16(0x0101));
    let idx = _mm256_add_epi8(idx, _mm256_set1_epi32(0x0600_0600));
    let positions = _mm256_broadcastsi128_si256(load128(PAIR_POSITIONS_2_4.as_ptr()));
    let ctl = _mm256_add_epi8(_mm256_shuffle_epi8(positions, idx), _mm256_set1_epi32(0x0404_0000));
    _mm256_add_epi8(ctl, lane_offset)
}

/// The control of the N:M block at `p` with `BITS`-bit codes (code field at byte 2): computed
/// for 2:4, from [`POSITIONS_4_8`] for 4:8.
#[inline(always)]
unsafe fn control<const BITS: usize>(p: *const u8, lane_offset: __m256i) -> __m256i {
    if BITS == 6 {
        return control_2_4(p, lane_offset);
    }
    debug_assert_eq!(BITS, 7);
    let word = (p.add(2) as *const u64).read_unaligned();
    // In bounds: 7-bit indices, 128 entries.
    let at = |c: usize| *POSITIONS_4_8.get_unchecked((word >> (7 * c)) as usize & 127) as i32;
    let ctl = _mm256_setr_epi32(at(0), at(1), at(4), at(5), at(2), at(3), at(6), at(7));
    _mm256_add_epi8(ctl, lane_offset)
}

/// Rows `r0..r0 + R` of an N:M format (`W` bytes per block, `BITS`-bit codes, kept values at
/// byte `QS`, `Q4`: 4-bit values, else 8-bit) against the Q8_0 activation row.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn rows<const W: usize, const BITS: usize, const QS: usize, const Q4: bool, const R: usize>(
    m: &mut MatmulArgs<'_>,
    r0: usize,
) {
    let nb = m.k / 64;
    let rb = m.row_bytes;
    let w0 = m.w.as_ptr().add(r0 * rb);
    let a0 = m.act.as_ptr();
    let lane_offset = _mm256_loadu_si256(LANE_OFFSET.as_ptr() as *const __m256i);
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
            let ctl = control::<BITS>(p, lane_offset);
            let a =
                _mm256_blend_epi32::<0b1100_1100>(_mm256_shuffle_epi8(x0, ctl), _mm256_shuffle_epi8(x1, ctl));
            let a = _mm256_permute4x64_epi64::<0b11_01_10_00>(a);
            let sum = if Q4 {
                let x = _mm256_broadcastsi128_si256(load128(p.add(QS)));
                let q = _mm256_and_si256(_mm256_blend_epi32::<0xf0>(x, _mm256_srli_epi16::<4>(x)), nib);
                _mm256_sub_epi16(_mm256_maddubs_epi16(q, a), _mm256_maddubs_epi16(eight, a))
            } else {
                let q = load(p.add(QS));
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

/// The one-token product of [`MatmulArgs`] (`m.n == 1`) of an N:M format: `W` bytes per block,
/// `BITS`-bit codes (6: 2:4, 7: 4:8; the kept values follow the codes), `Q4` for 4-bit values.
///
/// # Safety
/// `m` satisfies the bounds documented on [`MatmulArgs`] with `n = 1`; AVX2, FMA and F16C
/// (inlined into a `#[target_feature]` entry point).
#[inline(always)]
pub(super) unsafe fn matvec<const W: usize, const BITS: usize, const Q4: bool>(m: &mut MatmulArgs<'_>) {
    debug_assert_eq!(m.n, 1);
    macro_rules! run {
        ($bits:literal, $qs:literal) => {{
            let mut r = m.rows.start;
            while r + 4 <= m.rows.end {
                rows::<W, $bits, $qs, Q4, 4>(m, r);
                r += 4;
            }
            while r < m.rows.end {
                rows::<W, $bits, $qs, Q4, 1>(m, r);
                r += 1;
            }
        }};
    }
    if BITS == 6 {
        run!(6, 8)
    } else {
        debug_assert_eq!(BITS, 7);
        run!(7, 9)
    }
}
