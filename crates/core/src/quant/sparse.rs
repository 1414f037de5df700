//! edgellm's sparse weight formats: N:M blocks (`Q4_S24`, `Q4_S48`, `Q8_S24`, `Q8_S48`) and
//! the bitmap format `Q8_SB` with its companion value tensor.
//!
//! **N:M blocks.** A block covers 64 inputs = 8 chunks of 8 inputs; every chunk keeps exactly
//! 4 values, so every 32-input half keeps exactly 16, and kept values `16h..16h + 16` (in
//! input order) belong to the Q8_0 activation block `h` of the block's two. Layout, little
//! endian: `[d: f16][codes: 6 bytes (2:4) or 7 bytes (4:8)][qs]`.
//!
//! - `codes`: 8 codes, code `c` for inputs `8c..8c + 8`, packed LSB-first in a little-endian
//!   bit string, code `c` at bits `[b·c, b·c + b)`, `b` = 6 (2:4) or 7 (4:8).
//!   - 2:4: code = `p_lo + 6·p_hi`, `p_lo` the pattern index of inputs `8c..8c + 4`, `p_hi`
//!     of `8c + 4..8c + 8`, the six 2-of-4 patterns ([`PATTERNS_2_4`]) in increasing order of
//!     their 4-bit masks. Valid codes: `< 36` ([`MASKS_2_4`] maps code → 8-bit chunk mask).
//!   - 4:8: code = index of the chunk's 8-bit keep-mask among the 70 masks with four bits
//!     set, ascending ([`MASKS_4_8`]). Valid codes: `< 70`.
//! - `qs`: Q4: 16 bytes, kept value `j` (0..32) in byte `j % 16`, low nibble for `j < 16`,
//!   high for `j ≥ 16` (Q4_0's order), value `(nibble − 8)·d`; Q8: 32 `i8`, value `q·d`.
//!
//! The reference quantizer keeps the N largest `|w|` of each group of M (ties: lower index
//! first; so a row that already is N:M keeps exactly its non-zeros, and a group with fewer
//! than N non-zeros keeps zeros at its lowest free positions), then runs ggml's Q4_0 / Q8_0
//! reference quantizer on the 32 kept values: a block's kept values decode exactly as Q4_0 /
//! Q8_0 of those 32 values would.
//!
//! Decoding a block with an out-of-range code is memory-safe but its values are unspecified
//! (every table here is padded to the codes' full bit width); [`validate`] refuses such data.
//!
//! **Bitmap `Q8_SB`.** A tensor of type `Q8_SB` holds per row `k/64` blocks `[d: f16][mask:
//! u64]` (10 bytes; bit `i` of `mask` set = input `i` of the block is kept). The kept values
//! live in a companion tensor of type `I8`, `m` rows of `c` bytes (GGUF dims `[c, m]`): row
//! `r` holds its kept codes in input order, block after block, then zero padding up to `c`.
//! `c` is the largest row count rounded up to a multiple of 32 ([`bitmap_width`]). A block's
//! value is `q·d`, `d = amax/127` of its kept values with ggml's Q8_0 rounding (codes
//! `round(x/d)` half away from zero), `d = 0` for a block with nothing kept. The reference
//! quantizer keeps exactly the non-zero inputs.
//!
//! Type table: the N:M types are `supported` (they convert through [`super::quantize_row`] /
//! [`super::dequantize_row`] like any block format, and `kernels::matmul` runs them against
//! Q8_0 activations). `Q8_SB` is *not* `supported`: its rows alone (10 bytes per 64 inputs,
//! what `DType::type_size` and `bytes_for` count) cannot be decoded without the companion, so
//! the generic conversions refuse it with `QuantError::UnsupportedType`; use
//! [`quantize_bitmap`] / [`dequantize_bitmap`] here and `kernels::matmul_bitmap` /
//! `kernels::vec_dot_bitmap` (Q8_0 activations, as for `DType::Q8_0` weights).
//!
//! Padding contract (what the kernels rely on): the companion holds exactly `m·c` bytes,
//! every row's total popcount is at most `c` (checked by [`validate`]), and the kernels read
//! a row's values only within its `c` bytes. The padding's content never changes a result.

use super::{read_f16, write_f16, BlockFormat, BlockQ4_0, BlockQ8_0};
use crate::DType;

/// Inputs per sparse block (all five formats).
pub const QK_SPARSE: usize = 64;

/// The six 2-of-4 keep-masks (bit `i` = input `i` of the group kept), in increasing order:
/// pattern index `p` is `PATTERNS_2_4[p]`.
pub const PATTERNS_2_4: [u8; 6] = [0b0011, 0b0101, 0b0110, 0b1001, 0b1010, 0b1100];

/// The 8-bit chunk keep-mask of every 2:4 code `< 36` (`p_lo + 6·p_hi`).
pub const MASKS_2_4: [u8; 36] = {
    let mut t = [0u8; 36];
    let mut c = 0;
    while c < 36 {
        t[c] = PATTERNS_2_4[c % 6] | (PATTERNS_2_4[c / 6] << 4);
        c += 1;
    }
    t
};

/// The 70 8-bit masks with four bits set, ascending: the keep-mask of 4:8 code `c` is
/// `MASKS_4_8[c]`.
pub const MASKS_4_8: [u8; 70] = {
    let mut t = [0u8; 70];
    let (mut m, mut i) = (0u32, 0);
    while m < 256 {
        if m.count_ones() == 4 {
            t[i] = m as u8;
            i += 1;
        }
        m += 1;
    }
    t
};

/// Inverse of [`MASKS_2_4`] / [`MASKS_4_8`]: the code of an 8-bit mask, `u8::MAX` for a mask
/// that is not a pattern.
const fn inverse(masks: &[u8]) -> [u8; 256] {
    let mut t = [u8::MAX; 256];
    let mut c = 0;
    while c < masks.len() {
        t[masks[c] as usize] = c as u8;
        c += 1;
    }
    t
}

const CODE_OF_MASK_2_4: [u8; 256] = inverse(&MASKS_2_4);
const CODE_OF_MASK_4_8: [u8; 256] = inverse(&MASKS_4_8);

/// Code → chunk mask over every value of the code's bit width (invalid codes → 0): what the
/// decoders and kernels index with unvalidated codes.
pub(crate) const MASK_OF_CODE_2_4: [u8; 64] = pad(&MASKS_2_4);
/// As [`MASK_OF_CODE_2_4`], for 4:8 (7-bit codes).
pub(crate) const MASK_OF_CODE_4_8: [u8; 128] = pad(&MASKS_4_8);

/// Byte-shuffle control (`vpshufb`, NEON `tbl`) of one 8-input chunk per keep-mask: byte `i`
/// is the rank of input `i` among the chunk's kept inputs, or `0x80` (zero) where it is dropped.
const fn chunk_control(mask: u8) -> u64 {
    let (mut ctl, mut rank, mut i) = (0u64, 0u64, 0);
    while i < 8 {
        let b = if mask >> i & 1 == 1 {
            rank += 1;
            rank - 1
        } else {
            0x80
        };
        ctl |= b << (8 * i);
        i += 1;
    }
    ctl
}

const fn controls<const N: usize>(masks: &[u8; N]) -> [u64; N] {
    let mut t = [0u64; N];
    let mut i = 0;
    while i < N {
        t[i] = chunk_control(masks[i]);
        i += 1;
    }
    t
}

/// Chunk control per 2:4 code (64 entries: every 6-bit value).
pub(crate) static CTRL_2_4: [u64; 64] = controls(&MASK_OF_CODE_2_4);
/// Chunk control per 4:8 code (128 entries: every 7-bit value).
pub(crate) static CTRL_4_8: [u64; 128] = controls(&MASK_OF_CODE_4_8);
/// Chunk control per keep-mask byte (`Q8_SB`).
pub(crate) static CTRL_BYTE: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = chunk_control(i as u8);
        i += 1;
    }
    t
};

/// The kept positions (4 bytes, ascending) of every code of `N` = 2^bits, from the valid
/// codes' 8-bit masks `masks`; the others keep nothing (`0x80`, which `vpshufb` and `tbl` read
/// as zero).
const fn kept_positions<const N: usize>(masks: &[u8]) -> [u32; N] {
    let mut t = [0x8080_8080u32; N];
    let mut c = 0;
    while c < masks.len() {
        let (mut v, mut i, mut j) = (0u32, 0, 0);
        while i < 8 {
            if masks[c] >> i & 1 == 1 {
                v |= (i as u32) << (8 * j);
                j += 1;
            }
            i += 1;
        }
        t[c] = v;
        c += 1;
    }
    t
}

/// [`kept_positions`] of every 7-bit 4:8 code (the one-token kernels that compress
/// activations).
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) static POSITIONS_4_8: [u32; 128] = kept_positions(&MASKS_4_8);

/// For pattern index `p` (0..6) of a 2-of-4 group: entry `p` is the position (0..4) of its
/// first kept input, entry `6 + p` of its second; the rest `0x80` (read as zero).
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) const PAIR_POSITIONS_2_4: [u8; 16] = {
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

const fn pad<const N: usize>(masks: &[u8]) -> [u8; N] {
    let mut t = [0u8; N];
    let mut c = 0;
    while c < masks.len() {
        t[c] = masks[c];
        c += 1;
    }
    t
}

/// An N:M sparsity pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NmPattern {
    /// 2 of every 4 inputs kept (6-bit codes, two 2-of-4 patterns per chunk).
    TwoFour,
    /// 4 of every 8 inputs kept (7-bit codes).
    FourEight,
}

impl NmPattern {
    /// `(N, M)`: N kept of every M inputs.
    pub const fn n_m(self) -> (usize, usize) {
        match self {
            NmPattern::TwoFour => (2, 4),
            NmPattern::FourEight => (4, 8),
        }
    }

    /// Bits per chunk code (6 or 7).
    pub const fn code_bits(self) -> u32 {
        match self {
            NmPattern::TwoFour => 6,
            NmPattern::FourEight => 7,
        }
    }

    /// Number of valid codes (36 or 70).
    pub const fn codes(self) -> u32 {
        match self {
            NmPattern::TwoFour => 36,
            NmPattern::FourEight => 70,
        }
    }

    /// Bytes of a block's code field (6 or 7).
    pub const fn code_bytes(self) -> usize {
        match self {
            NmPattern::TwoFour => 6,
            NmPattern::FourEight => 7,
        }
    }

    /// The 8-bit keep-mask of a chunk code, or `None` for an invalid code.
    pub fn mask(self, code: u32) -> Option<u8> {
        match self {
            NmPattern::TwoFour => MASKS_2_4.get(code as usize).copied(),
            NmPattern::FourEight => MASKS_4_8.get(code as usize).copied(),
        }
    }

    /// The code of an 8-bit chunk keep-mask, or `None` when the mask is not of this pattern.
    pub fn code(self, mask: u8) -> Option<u32> {
        let c = match self {
            NmPattern::TwoFour => CODE_OF_MASK_2_4[mask as usize],
            NmPattern::FourEight => CODE_OF_MASK_4_8[mask as usize],
        };
        (c != u8::MAX).then_some(c as u32)
    }

    /// The chunk mask of a code of this pattern's bit width (invalid codes give 0).
    #[inline(always)]
    pub(crate) fn mask_padded(self, code: u32) -> u8 {
        match self {
            NmPattern::TwoFour => MASK_OF_CODE_2_4[(code & 63) as usize],
            NmPattern::FourEight => MASK_OF_CODE_4_8[(code & 127) as usize],
        }
    }
}

/// The layout of one N:M block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NmLayout {
    /// The element type.
    pub dtype: DType,
    /// Its sparsity pattern.
    pub pattern: NmPattern,
    /// Bits per kept value: 4 (Q4_0 codes) or 8 (Q8_0 codes).
    pub value_bits: u32,
}

impl NmLayout {
    /// The layout of an N:M type, `None` for any other type.
    pub const fn of(dtype: DType) -> Option<NmLayout> {
        let (pattern, value_bits) = match dtype {
            DType::Q4_S24 => (NmPattern::TwoFour, 4),
            DType::Q4_S48 => (NmPattern::FourEight, 4),
            DType::Q8_S24 => (NmPattern::TwoFour, 8),
            DType::Q8_S48 => (NmPattern::FourEight, 8),
            _ => return None,
        };
        Some(NmLayout { dtype, pattern, value_bits })
    }

    /// Byte offset of the codes (after the f16 scale).
    pub const fn codes_offset(self) -> usize {
        2
    }

    /// Byte offset of the kept values.
    pub const fn qs_offset(self) -> usize {
        2 + self.pattern.code_bytes()
    }

    /// Bytes per block.
    pub const fn bytes(self) -> usize {
        self.qs_offset() + if self.value_bits == 4 { 16 } else { 32 }
    }

    /// Code `c` (0..8) of a block (raw, possibly invalid).
    #[inline(always)]
    pub fn code(self, block: &[u8], c: usize) -> u32 {
        let bits = self.code_bits_le(block);
        let b = self.pattern.code_bits();
        ((bits >> (b as usize * c)) & ((1u64 << b) - 1)) as u32
    }

    /// The code field of a block as a little-endian integer.
    #[inline(always)]
    pub(crate) fn code_bits_le(self, block: &[u8]) -> u64 {
        let n = self.pattern.code_bytes();
        if let Some(word) = block.get(2..10) {
            // Eight bytes at once (every block holds them), the field's bytes kept: a copy of
            // `n` bytes is a call to `memcpy` per block (a quarter of the prompt-time expansion).
            let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            return if n >= 8 { w } else { w & ((1u64 << (8 * n)) - 1) };
        }
        let mut x = [0u8; 8];
        x[..n].copy_from_slice(&block[2..2 + n]);
        u64::from_le_bytes(x)
    }

    /// The 64-bit keep-mask of a block (bit `i` = input `i` kept; chunks with an invalid
    /// code contribute no bits).
    #[inline]
    pub fn keep_mask(self, block: &[u8]) -> u64 {
        let bits = self.code_bits_le(block);
        let b = self.pattern.code_bits();
        let mut m = 0u64;
        for c in 0..8 {
            let code = ((bits >> (b as usize * c)) & ((1u64 << b) - 1)) as u32;
            m |= (self.pattern.mask_padded(code) as u64) << (8 * c);
        }
        m
    }

    /// The 32 kept values' integer codes (bias removed: `nibble − 8` for Q4) and the scale.
    #[inline]
    pub(crate) fn kept_codes(self, block: &[u8]) -> ([i32; 32], f32) {
        let mut q = [0i32; 32];
        let qs = &block[self.qs_offset()..];
        if self.value_bits == 4 {
            for j in 0..16 {
                q[j] = (qs[j] & 0x0f) as i32 - 8;
                q[j + 16] = (qs[j] >> 4) as i32 - 8;
            }
        } else {
            for (q, &b) in q.iter_mut().zip(&qs[..32]) {
                *q = b as i8 as i32;
            }
        }
        (q, read_f16(block, 0))
    }
}

/// The keep-mask of `x` (64 values) under `pattern`: the N largest `|x|` of each group of M,
/// ties to the lower index.
pub fn nm_keep_mask(pattern: NmPattern, x: &[f32]) -> u64 {
    let (n, m) = pattern.n_m();
    let mut mask = 0u64;
    for g in 0..QK_SPARSE / m {
        let mut idx: [usize; 8] = std::array::from_fn(|i| i);
        let idx = &mut idx[..m];
        // Stable sort by decreasing magnitude: ties keep the lower index first. NaN counts
        // as the largest (never panics).
        idx.sort_by(|&a, &b| {
            let (a, b) = (x[g * m + a].abs(), x[g * m + b].abs());
            b.partial_cmp(&a).unwrap_or(if a.is_nan() {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            })
        });
        for &i in &idx[..n] {
            mask |= 1u64 << (g * m + i);
        }
    }
    mask
}

/// Reference N:M quantizer of one block (64 values into [`NmLayout::bytes`] bytes).
fn nm_quantize_block(l: NmLayout, x: &[f32], out: &mut [u8]) {
    let mask = nm_keep_mask(l.pattern, x);
    let mut kept = [0.0f32; 32];
    let mut j = 0;
    for (i, &v) in x.iter().enumerate().take(QK_SPARSE) {
        if mask >> i & 1 == 1 {
            kept[j] = v;
            j += 1;
        }
    }
    debug_assert_eq!(j, 32);
    let mut bits = 0u64;
    for c in 0..8 {
        let code = l.pattern.code((mask >> (8 * c)) as u8).expect("the keep-mask follows the pattern");
        bits |= (code as u64) << (l.pattern.code_bits() as usize * c);
    }
    let n = l.pattern.code_bytes();
    out[2..2 + n].copy_from_slice(&bits.to_le_bytes()[..n]);
    let qs = l.qs_offset();
    if l.value_bits == 4 {
        let mut b = [0u8; 18];
        BlockQ4_0::quantize_block(&kept, &mut b);
        out[0..2].copy_from_slice(&b[0..2]);
        out[qs..qs + 16].copy_from_slice(&b[2..18]);
    } else {
        let mut b = [0u8; 34];
        BlockQ8_0::quantize_block(&kept, &mut b);
        out[0..2].copy_from_slice(&b[0..2]);
        out[qs..qs + 32].copy_from_slice(&b[2..34]);
    }
}

/// Reference N:M decoder of one block.
fn nm_dequantize_block(l: NmLayout, src: &[u8], dst: &mut [f32]) {
    let mask = l.keep_mask(src);
    let qs = l.qs_offset();
    let mut kept = [0.0f32; 32];
    if l.value_bits == 4 {
        let mut b = [0u8; 18];
        b[0..2].copy_from_slice(&src[0..2]);
        b[2..18].copy_from_slice(&src[qs..qs + 16]);
        BlockQ4_0::dequantize_block(&b, &mut kept);
    } else {
        let mut b = [0u8; 34];
        b[0..2].copy_from_slice(&src[0..2]);
        b[2..34].copy_from_slice(&src[qs..qs + 32]);
        BlockQ8_0::dequantize_block(&b, &mut kept);
    }
    // Chunk `c`'s kept values are `4c..4c + 4` (a valid code keeps exactly four; the padded
    // tables give invalid codes an empty mask).
    for (c, y) in dst.chunks_exact_mut(8).enumerate().take(8) {
        let mut j = 4 * c;
        for (i, y) in y.iter_mut().enumerate() {
            if mask >> (8 * c + i) & 1 == 1 {
                *y = kept[j];
                j += 1;
            } else {
                *y = 0.0;
            }
        }
    }
}

macro_rules! nm_block {
    ($name:ident, $dtype:ident, $codes:expr, $qs:ty, $size:expr, $doc:expr) => {
        #[doc = $doc]
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug)]
        #[repr(C)]
        pub struct $name {
            /// Scale, IEEE half bits, little endian (bytes, so the struct has no padding).
            pub d: [u8; 2],
            /// The 8 chunk codes, a little-endian bit string (see the module docs).
            pub codes: [u8; $codes],
            /// The 32 kept values' codes (see the module docs).
            pub qs: $qs,
        }
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
        const _: () = assert!(match NmLayout::of(DType::$dtype) {
            Some(l) => l.bytes() == $size,
            None => false,
        });

        impl BlockFormat for $name {
            const DTYPE: DType = DType::$dtype;
            const BLOCK: usize = QK_SPARSE;
            const BYTES: usize = std::mem::size_of::<Self>();

            fn dequantize_block(src: &[u8], dst: &mut [f32]) {
                assert!(src.len() == Self::BYTES && dst.len() == QK_SPARSE, "one block");
                nm_dequantize_block(NmLayout::of(DType::$dtype).expect("an N:M type"), src, dst)
            }

            fn quantize_block(src: &[f32], dst: &mut [u8]) {
                assert!(dst.len() == Self::BYTES && src.len() == QK_SPARSE, "one block");
                nm_quantize_block(NmLayout::of(DType::$dtype).expect("an N:M type"), src, dst)
            }
        }
    };
}

nm_block!(
    BlockQ4_S24,
    Q4_S24,
    6,
    [u8; 16],
    24,
    "Q4_S24 (3 bits per weight): 2:4 sparse, kept values as Q4_0 codes."
);
nm_block!(
    BlockQ4_S48,
    Q4_S48,
    7,
    [u8; 16],
    25,
    "Q4_S48 (3.125 bits per weight): 4:8 sparse, kept values as Q4_0 codes."
);
nm_block!(
    BlockQ8_S24,
    Q8_S24,
    6,
    [i8; 32],
    40,
    "Q8_S24 (5 bits per weight): 2:4 sparse, kept values as Q8_0 codes."
);
nm_block!(
    BlockQ8_S48,
    Q8_S48,
    7,
    [i8; 32],
    41,
    "Q8_S48 (5.125 bits per weight): 4:8 sparse, kept values as Q8_0 codes."
);

/// One `Q8_SB` metadata block: scale and keep-mask of 64 inputs (the values are in the
/// companion tensor).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_SB {
    /// Scale, IEEE half bits, little endian.
    pub d: [u8; 2],
    /// Keep-mask, a little-endian u64: bit `i` set = input `i` kept.
    pub mask: [u8; 8],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_SB>() == 10);

/// Bytes per `Q8_SB` metadata block.
pub const Q8_SB_BYTES: usize = 10;

/// The keep-mask of a `Q8_SB` metadata block.
#[inline(always)]
pub fn bitmap_mask(block: &[u8]) -> u64 {
    u64::from_le_bytes(block[2..10].try_into().expect("a 10-byte block"))
}

/// Why sparse data (or a request on it) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparseError {
    /// The type is not one of the sparse formats.
    #[error("{0} is not a sparse type (expected Q4_S24, Q4_S48, Q8_S24, Q8_S48 or Q8_SB)")]
    NotSparse(DType),
    /// The row length is not a multiple of 64.
    #[error(
        "{dtype}: a row of {k} inputs is not a whole number of 64-input blocks (k must be a multiple of 64)"
    )]
    NotBlockMultiple {
        /// The type.
        dtype: DType,
        /// The row length.
        k: usize,
    },
    /// A buffer has the wrong length.
    #[error("{dtype}: {m} rows of {k} inputs take {expected} bytes of {what} but {got} were given")]
    WrongByteCount {
        /// The type.
        dtype: DType,
        /// `"data"` (the N:M or `Q8_SB` tensor), `"values"` or `"metadata"`.
        what: &'static str,
        /// Row length.
        k: usize,
        /// Rows.
        m: usize,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// An N:M chunk code is out of range.
    #[error(
        "{dtype}: row {row}, block {block}, chunk {chunk}: code {code} is out of range \
         (valid codes are below {limit}); the tensor is corrupt"
    )]
    CodeOutOfRange {
        /// The type.
        dtype: DType,
        /// Row index.
        row: usize,
        /// Block index within the row.
        block: usize,
        /// Chunk (8 inputs) within the block.
        chunk: usize,
        /// The code found.
        code: u32,
        /// Codes must be below this (36 or 70).
        limit: u32,
    },
    /// A `Q8_SB` row keeps more values than its companion row holds.
    #[error(
        "Q8_SB: row {row} keeps {count} values up to block {block}, more than the {c} values per \
         row of its companion tensor; the tensor is corrupt"
    )]
    PopcountOverWidth {
        /// Row index.
        row: usize,
        /// The block at which the running count first passes `c`.
        block: usize,
        /// The row's running popcount at that block.
        count: usize,
        /// Values per companion row.
        c: usize,
    },
    /// The companion values tensor has the wrong size or width.
    #[error(
        "Q8_SB: the companion values tensor must be {m} rows of {c} bytes ({expected} bytes, c a \
         multiple of 32), got {got} bytes with c = {c}"
    )]
    CompanionSize {
        /// Rows.
        m: usize,
        /// Values per row.
        c: usize,
        /// Bytes expected (`m·c`).
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// `Q8_SB` data came without its companion values, or an N:M tensor with one.
    #[error("{dtype}: {}", if *.expected { "the companion values tensor (<name>.values, I8) is missing" } else { "N:M tensors have no companion values tensor" })]
    Companion {
        /// The type.
        dtype: DType,
        /// Whether a companion was expected.
        expected: bool,
    },
}

/// Checks sparse tensor data: `m` rows of `k` inputs of `dtype` in `data`, and for `Q8_SB` the
/// companion values tensor `values = Some((bytes, c))` (`m` rows of `c` bytes).
///
/// Refuses, naming the row and block: a `k` that is not a multiple of 64, a `data` (or
/// companion) of the wrong byte count, an N:M chunk code out of range (≥ 36 for 2:4, ≥ 70 for
/// 4:8), a `Q8_SB` row whose popcount exceeds `c`, a `c` that is not a multiple of 32, a
/// missing companion for `Q8_SB` or one given for an N:M type. Data that passes is safe and
/// meaningful for every kernel. Does not check the companion's zero padding (no kernel reads
/// it into a result).
pub fn validate(
    dtype: DType,
    k: usize,
    m: usize,
    data: &[u8],
    values: Option<(&[u8], usize)>,
) -> Result<(), SparseError> {
    let nm = NmLayout::of(dtype);
    if nm.is_none() && dtype != DType::Q8_SB {
        return Err(SparseError::NotSparse(dtype));
    }
    if !k.is_multiple_of(QK_SPARSE) {
        return Err(SparseError::NotBlockMultiple { dtype, k });
    }
    let nb = k / QK_SPARSE;
    let row_bytes = nb * dtype.type_size();
    let expected = row_bytes.saturating_mul(m);
    if data.len() != expected {
        return Err(SparseError::WrongByteCount { dtype, what: "data", k, m, expected, got: data.len() });
    }
    match nm {
        Some(l) => {
            if values.is_some() {
                return Err(SparseError::Companion { dtype, expected: false });
            }
            let limit = l.pattern.codes();
            for (row, r) in data.chunks_exact(row_bytes.max(1)).enumerate() {
                for (block, b) in r.chunks_exact(l.bytes()).enumerate() {
                    for chunk in 0..8 {
                        let code = l.code(b, chunk);
                        if code >= limit {
                            return Err(SparseError::CodeOutOfRange {
                                dtype,
                                row,
                                block,
                                chunk,
                                code,
                                limit,
                            });
                        }
                    }
                }
            }
        }
        None => {
            let Some((vals, c)) = values else {
                return Err(SparseError::Companion { dtype, expected: true });
            };
            let want = c.saturating_mul(m);
            if vals.len() != want || !c.is_multiple_of(32) {
                return Err(SparseError::CompanionSize { m, c, expected: want, got: vals.len() });
            }
            for (row, r) in data.chunks_exact(row_bytes.max(1)).enumerate() {
                let mut count = 0usize;
                for (block, b) in r.chunks_exact(Q8_SB_BYTES).enumerate() {
                    count += bitmap_mask(b).count_ones() as usize;
                    if count > c {
                        return Err(SparseError::PopcountOverWidth { row, block, count, c });
                    }
                }
            }
        }
    }
    Ok(())
}

/// The companion width `c` for rows keeping at most `max_count` values: `max_count` rounded
/// up to a multiple of 32.
pub fn bitmap_width(max_count: usize) -> usize {
    max_count.div_ceil(32) * 32
}

/// The number of values a `Q8_SB` row of `x` keeps (its non-zeros).
pub fn bitmap_row_count(x: &[f32]) -> usize {
    x.iter().filter(|&&v| v != 0.0).count()
}

/// Reference `Q8_SB` quantizer of one row `x` (`k` a multiple of 64): writes its `k/64`
/// metadata blocks to `meta` (exactly `k/64 · 10` bytes) and its kept codes to the front of
/// `values` (at least [`bitmap_row_count`]`(x)` bytes; the rest is zero-filled). Keeps exactly
/// the non-zero inputs. Returns the number of kept values.
pub fn quantize_bitmap_row(x: &[f32], meta: &mut [u8], values: &mut [u8]) -> Result<usize, SparseError> {
    let k = x.len();
    let dtype = DType::Q8_SB;
    if !k.is_multiple_of(QK_SPARSE) {
        return Err(SparseError::NotBlockMultiple { dtype, k });
    }
    let nb = k / QK_SPARSE;
    if meta.len() != nb * Q8_SB_BYTES {
        return Err(SparseError::WrongByteCount {
            dtype,
            what: "metadata",
            k,
            m: 1,
            expected: nb * Q8_SB_BYTES,
            got: meta.len(),
        });
    }
    let count = bitmap_row_count(x);
    if values.len() < count {
        return Err(SparseError::WrongByteCount {
            dtype,
            what: "values",
            k,
            m: 1,
            expected: count,
            got: values.len(),
        });
    }
    let mut o = 0;
    for (xb, mb) in x.chunks_exact(QK_SPARSE).zip(meta.chunks_exact_mut(Q8_SB_BYTES)) {
        let mut mask = 0u64;
        let mut amax = 0.0f32;
        for (i, &v) in xb.iter().enumerate() {
            if v != 0.0 {
                mask |= 1 << i;
                amax = amax.max(v.abs());
            }
        }
        // ggml's Q8_0 reference: d = amax/127, codes round(x/d) half away from zero.
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(mb, 0, d);
        mb[2..10].copy_from_slice(&mask.to_le_bytes());
        for &v in xb.iter().filter(|&&v| v != 0.0) {
            values[o] = ((v * id).round() as i8) as u8;
            o += 1;
        }
    }
    values[o..].fill(0);
    Ok(count)
}

/// Reference `Q8_SB` decoder of one row: `meta` its metadata blocks, `values` its companion
/// row (its kept codes in order; at least the row's popcount bytes), `out` the `k` values.
pub fn dequantize_bitmap_row(meta: &[u8], values: &[u8], out: &mut [f32]) -> Result<(), SparseError> {
    let k = out.len();
    let dtype = DType::Q8_SB;
    if !k.is_multiple_of(QK_SPARSE) {
        return Err(SparseError::NotBlockMultiple { dtype, k });
    }
    let nb = k / QK_SPARSE;
    if meta.len() != nb * Q8_SB_BYTES {
        return Err(SparseError::WrongByteCount {
            dtype,
            what: "metadata",
            k,
            m: 1,
            expected: nb * Q8_SB_BYTES,
            got: meta.len(),
        });
    }
    let count: usize = meta.chunks_exact(Q8_SB_BYTES).map(|b| bitmap_mask(b).count_ones() as usize).sum();
    if values.len() < count {
        return Err(SparseError::WrongByteCount {
            dtype,
            what: "values",
            k,
            m: 1,
            expected: count,
            got: values.len(),
        });
    }
    let mut o = 0;
    for (mb, y) in meta.chunks_exact(Q8_SB_BYTES).zip(out.chunks_exact_mut(QK_SPARSE)) {
        let d = read_f16(mb, 0);
        let mask = bitmap_mask(mb);
        for (i, y) in y.iter_mut().enumerate() {
            if mask >> i & 1 == 1 {
                *y = values[o] as i8 as f32 * d;
                o += 1;
            } else {
                *y = 0.0;
            }
        }
    }
    Ok(())
}

/// A whole `Q8_SB` matrix: the metadata tensor and its companion values tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitmapMatrix {
    /// The `Q8_SB` tensor: `m` rows of `k/64` 10-byte blocks.
    pub meta: Vec<u8>,
    /// The companion `I8` tensor: `m` rows of `c` bytes.
    pub values: Vec<u8>,
    /// Values per companion row (a multiple of 32, see [`bitmap_width`]).
    pub c: usize,
}

/// Reference `Q8_SB` quantizer of `m` rows of `k` values (`x.len() == m·k`), keeping exactly
/// the non-zeros.
pub fn quantize_bitmap(x: &[f32], k: usize, m: usize) -> Result<BitmapMatrix, SparseError> {
    let dtype = DType::Q8_SB;
    if !k.is_multiple_of(QK_SPARSE) {
        return Err(SparseError::NotBlockMultiple { dtype, k });
    }
    if Some(x.len()) != k.checked_mul(m) {
        return Err(SparseError::WrongByteCount {
            dtype,
            what: "f32 input (values, not bytes)",
            k,
            m,
            expected: k.saturating_mul(m),
            got: x.len(),
        });
    }
    let rows = || x.chunks_exact(k.max(1)).take(m);
    let c = bitmap_width(rows().map(bitmap_row_count).max().unwrap_or(0));
    let rb = k / QK_SPARSE * Q8_SB_BYTES;
    let mut meta = vec![0u8; rb * m];
    let mut values = vec![0u8; c * m];
    if k > 0 {
        for (r, xr) in rows().enumerate() {
            quantize_bitmap_row(xr, &mut meta[r * rb..(r + 1) * rb], &mut values[r * c..(r + 1) * c])?;
        }
    }
    Ok(BitmapMatrix { meta, values, c })
}

/// Decodes a whole `Q8_SB` matrix (checked with [`validate`] first) into `m·k` values.
pub fn dequantize_bitmap(
    meta: &[u8],
    values: &[u8],
    c: usize,
    k: usize,
    m: usize,
) -> Result<Vec<f32>, SparseError> {
    validate(DType::Q8_SB, k, m, meta, Some((values, c)))?;
    let mut out = vec![0.0f32; k * m];
    if k > 0 {
        let rb = k / QK_SPARSE * Q8_SB_BYTES;
        for (r, y) in out.chunks_exact_mut(k).enumerate() {
            dequantize_bitmap_row(&meta[r * rb..(r + 1) * rb], &values[r * c..(r + 1) * c], y)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_tables() {
        assert_eq!(MASKS_2_4.len(), 36);
        for (c, &m) in MASKS_2_4.iter().enumerate() {
            assert_eq!(m.count_ones(), 4);
            assert_eq!((m & 0x0f).count_ones(), 2);
            assert_eq!(NmPattern::TwoFour.code(m), Some(c as u32));
        }
        assert!(MASKS_4_8.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(MASKS_4_8[0], 0x0f);
        assert_eq!(MASKS_4_8[69], 0xf0);
        for (c, &m) in MASKS_4_8.iter().enumerate() {
            assert_eq!(NmPattern::FourEight.code(m), Some(c as u32));
        }
        assert_eq!(NmPattern::TwoFour.code(0x0f), None);
        assert_eq!(NmPattern::TwoFour.mask(36), None);
        assert_eq!(NmPattern::FourEight.mask(70), None);
        // code = p_lo + 6·p_hi.
        assert_eq!(MASKS_2_4[1 + 6 * 5], 0b0101 | 0b1100 << 4);
    }
}
