//! Quant block formats and their scalar reference conversions to and from f32.
//!
//! One definition per format: a `#[repr(C)]` block struct that documents the GGML/GGUF byte
//! layout (with a compile-time size assertion) and implements [`BlockFormat`], which carries the
//! reference dequantizer and the reference round-to-nearest quantizer for one block. These
//! scalar routines are the oracle for every faster kernel.
//!
//! The quantizers reproduce ggml's reference quantizers (`quantize_row_*_ref`), which is also
//! what llama.cpp's quantizer produces when it is given no importance matrix. Blocks are parsed
//! from byte chunks (little-endian, as GGUF stores them); nothing is transmuted.
//!
//! The public entry points ([`dequantize_row`], [`quantize_row`], [`dequantize`], [`quantize`])
//! check lengths and types and return a [`QuantError`] instead of panicking.

mod float;
mod kquants;
mod legacy;
pub mod sparse;

pub use float::{Bf16, F16, F32};
pub use kquants::{scale_min_k4, BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K, QK_K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK4_0, QK4_1, QK5_0, QK5_1, QK8_0};
pub use sparse::{BlockQ4_S24, BlockQ4_S48, BlockQ8_S24, BlockQ8_S48, BlockQ8_SB, SparseError};

use crate::DType;

/// Why a conversion between a quantized buffer and f32 was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The element type has no f32 conversion in edgellm.
    #[error(
        "element type {0} has no f32 conversion in edgellm; supported types are \
         F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K and \
         the N:M sparse types Q4_S24, Q4_S48, Q8_S24, Q8_S48 (re-quantize the model to one of \
         these; Q8_SB converts through quant::sparse with its companion values)"
    )]
    UnsupportedType(DType),
    /// The element count is not a whole number of blocks.
    #[error(
        "{dtype}: {elements} elements is not a whole number of {block_size}-element blocks \
         (rows of this type must have a length that is a multiple of {block_size})"
    )]
    NotBlockMultiple {
        /// The element type.
        dtype: DType,
        /// The element count asked for.
        elements: usize,
        /// Elements per block of `dtype`.
        block_size: usize,
    },
    /// A buffer has the wrong length for the element count.
    #[error(
        "{dtype}: {elements} elements take {expected} {unit} but the {what} buffer holds {got} \
         (the {what} buffer must be exactly that long)"
    )]
    LengthMismatch {
        /// The element type.
        dtype: DType,
        /// Which buffer: `"source"`, `"destination"` or `"weights"`.
        what: &'static str,
        /// Unit of `expected` and `got`: `"bytes"` or `"values"`.
        unit: &'static str,
        /// The element count.
        elements: usize,
        /// The length the buffer must have.
        expected: usize,
        /// The length it has.
        got: usize,
    },
}

/// One block format: its layout and its scalar reference conversions.
///
/// Implemented by the block structs ([`BlockQ4_0`], [`BlockQ4_K`], ...) and by the marker types
/// [`F32`], [`F16`] and [`Bf16`] for the plain float types (blocks of one element).
pub trait BlockFormat {
    /// The element type this format encodes.
    const DTYPE: DType;
    /// Elements per block.
    const BLOCK: usize;
    /// Bytes per block (equal to the block struct's size).
    const BYTES: usize;

    /// Decodes one block: `src` is exactly [`Self::BYTES`] bytes, `dst` exactly
    /// [`Self::BLOCK`] values.
    ///
    /// # Panics
    /// If a slice has the wrong length (the checked entry points never let that happen).
    fn dequantize_block(src: &[u8], dst: &mut [f32]);

    /// Encodes one block with the reference quantizer: `src` is exactly [`Self::BLOCK`] values,
    /// `dst` exactly [`Self::BYTES`] bytes.
    ///
    /// # Panics
    /// If a slice has the wrong length (the checked entry points never let that happen).
    fn quantize_block(src: &[f32], dst: &mut [u8]);
}

/// Views one block's bytes as an array (lengths are checked by the callers).
#[inline(always)]
pub(crate) fn block_bytes<const N: usize>(b: &[u8]) -> &[u8; N] {
    b.try_into().expect("a block slice has exactly the block's byte length")
}

/// Views one block's output bytes as an array (lengths are checked by the callers).
#[inline(always)]
pub(crate) fn block_bytes_mut<const N: usize>(b: &mut [u8]) -> &mut [u8; N] {
    b.try_into().expect("a block slice has exactly the block's byte length")
}

/// Views one block's values as an array (lengths are checked by the callers).
#[inline(always)]
pub(crate) fn block_values<const N: usize>(v: &[f32]) -> &[f32; N] {
    v.try_into().expect("a block slice has exactly the block's element count")
}

/// Views one block's output values as an array (lengths are checked by the callers).
#[inline(always)]
pub(crate) fn block_values_mut<const N: usize>(v: &mut [f32]) -> &mut [f32; N] {
    v.try_into().expect("a block slice has exactly the block's element count")
}

/// Widens IEEE half bits to f32, exactly (NaN payloads kept, not quieted).
///
/// Branch-light integer code the compiler can vectorize: the half's exponent and mantissa,
/// placed in an f32's low bits, are the value times 2⁻¹¹²; multiplying by 2¹¹² is exact for
/// normals and subnormals alike. Infinity and NaN get the all-ones exponent instead.
#[inline(always)]
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let bits = if em >= 0x7c00 {
        (em << 13) | 0x7f80_0000
    } else {
        (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits()
    };
    f32::from_bits(bits | sign)
}

/// Reads a little-endian IEEE half at `off`, widened to f32.
#[inline(always)]
pub(crate) fn read_f16(b: &[u8], off: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// Writes `v` rounded to the nearest IEEE half (ties to even, as ggml's FP32_TO_FP16) at `off`.
#[inline(always)]
pub(crate) fn write_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// Rounds to the nearest integer, ties to even: ggml's `nearest_int`, which all k-quant
/// quantizers use. Adding 1.5·2²³ makes the FPU round at the units place; the integer is then
/// read from the low mantissa bits. Exact for |x| < 2²²; beyond that (and for NaN) the result
/// is a meaningless integer in ±2²², as in ggml — callers clamp it.
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

fn row_dequantize<T: BlockFormat>(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(T::BYTES).zip(dst.chunks_exact_mut(T::BLOCK)) {
        T::dequantize_block(b, out);
    }
}

fn row_quantize<T: BlockFormat>(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src.chunks_exact(T::BLOCK).zip(dst.chunks_exact_mut(T::BYTES)) {
        T::quantize_block(x, out);
    }
}

/// Checks that `dtype` is convertible and `elements` is a whole number of blocks; returns the
/// byte length of `elements` values of `dtype`.
fn checked_bytes(dtype: DType, elements: usize) -> Result<usize, QuantError> {
    if !dtype.is_supported() {
        return Err(QuantError::UnsupportedType(dtype));
    }
    let block_size = dtype.block_size();
    if !elements.is_multiple_of(block_size) {
        return Err(QuantError::NotBlockMultiple { dtype, elements, block_size });
    }
    // Overflow needs more elements than any slice can hold; report it as a length mismatch.
    Ok((elements / block_size).saturating_mul(dtype.type_size()))
}

macro_rules! dispatch {
    ($dtype:expr, $f:ident, $src:expr, $dst:expr) => {
        match $dtype {
            DType::F32 => $f::<F32>($src, $dst),
            DType::F16 => $f::<F16>($src, $dst),
            DType::BF16 => $f::<Bf16>($src, $dst),
            DType::Q4_0 => $f::<BlockQ4_0>($src, $dst),
            DType::Q4_1 => $f::<BlockQ4_1>($src, $dst),
            DType::Q5_0 => $f::<BlockQ5_0>($src, $dst),
            DType::Q5_1 => $f::<BlockQ5_1>($src, $dst),
            DType::Q8_0 => $f::<BlockQ8_0>($src, $dst),
            DType::Q2_K => $f::<BlockQ2_K>($src, $dst),
            DType::Q3_K => $f::<BlockQ3_K>($src, $dst),
            DType::Q4_K => $f::<BlockQ4_K>($src, $dst),
            DType::Q5_K => $f::<BlockQ5_K>($src, $dst),
            DType::Q6_K => $f::<BlockQ6_K>($src, $dst),
            DType::Q8_K => $f::<BlockQ8_K>($src, $dst),
            DType::Q4_S24 => $f::<BlockQ4_S24>($src, $dst),
            DType::Q4_S48 => $f::<BlockQ4_S48>($src, $dst),
            DType::Q8_S24 => $f::<BlockQ8_S24>($src, $dst),
            DType::Q8_S48 => $f::<BlockQ8_S48>($src, $dst),
            other => return Err(QuantError::UnsupportedType(other)),
        }
    };
}

/// Decodes `dst.len()` values of `dtype` from `src` into `dst`.
///
/// `dst.len()` must be a whole number of blocks and `src` exactly
/// `dtype.bytes_for(dst.len())` bytes long.
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let expected = checked_bytes(dtype, dst.len())?;
    if src.len() != expected {
        return Err(QuantError::LengthMismatch {
            dtype,
            what: "source",
            unit: "bytes",
            elements: dst.len(),
            expected,
            got: src.len(),
        });
    }
    dispatch!(dtype, row_dequantize, src, dst);
    Ok(())
}

/// Encodes `src` as `dtype` into `dst` with the reference quantizer (ggml's
/// `quantize_row_*_ref`; what llama.cpp produces without an importance matrix).
///
/// `src.len()` must be a whole number of blocks and `dst` exactly
/// `dtype.bytes_for(src.len())` bytes long.
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let expected = checked_bytes(dtype, src.len())?;
    if dst.len() != expected {
        return Err(QuantError::LengthMismatch {
            dtype,
            what: "destination",
            unit: "bytes",
            elements: src.len(),
            expected,
            got: dst.len(),
        });
    }
    dispatch!(dtype, row_quantize, src, dst);
    Ok(())
}

/// Decodes `n` values of `dtype` from `src` into a new vector; `src` must be exactly
/// `dtype.bytes_for(n)` bytes long (checked before anything is allocated).
pub fn dequantize(dtype: DType, src: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    let expected = checked_bytes(dtype, n)?;
    if src.len() != expected {
        return Err(QuantError::LengthMismatch {
            dtype,
            what: "source",
            unit: "bytes",
            elements: n,
            expected,
            got: src.len(),
        });
    }
    let mut out = vec![0.0f32; n];
    dequantize_row(dtype, src, &mut out)?;
    Ok(out)
}

/// Encodes `src` as `dtype` into a new byte vector with the reference quantizer.
pub fn quantize(dtype: DType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let bytes = checked_bytes(dtype, src.len())?;
    let mut out = vec![0u8; bytes];
    quantize_row(dtype, src, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TYPES;

    fn check<T: BlockFormat>() {
        assert_eq!(T::BLOCK, T::DTYPE.block_size(), "{}", T::DTYPE);
        assert_eq!(T::BYTES, T::DTYPE.type_size(), "{}", T::DTYPE);
        assert!(T::DTYPE.is_supported(), "{}", T::DTYPE);
    }

    #[test]
    fn formats_agree_with_the_type_table() {
        check::<F32>();
        check::<F16>();
        check::<Bf16>();
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ5_0>();
        check::<BlockQ5_1>();
        check::<BlockQ8_0>();
        check::<BlockQ2_K>();
        check::<BlockQ3_K>();
        check::<BlockQ4_K>();
        check::<BlockQ5_K>();
        check::<BlockQ6_K>();
        check::<BlockQ8_K>();
        check::<BlockQ4_S24>();
        check::<BlockQ4_S48>();
        check::<BlockQ8_S24>();
        check::<BlockQ8_S48>();
    }

    #[test]
    fn supported_flag_matches_dispatch() {
        for t in TYPES {
            let n = t.block_size;
            let r = dequantize(t.dtype, &vec![0u8; t.type_size], n);
            assert_eq!(r.is_ok(), t.supported, "{}", t.name);
            let q = quantize(t.dtype, &vec![0.0; n]);
            assert_eq!(q.is_ok(), t.supported, "{}", t.name);
        }
    }

    #[test]
    fn f16_widening_matches_half_for_every_pattern() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_bits_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
                assert_eq!(got.to_bits() & 0x803f_ffff, want.to_bits() & 0x803f_ffff, "payload {h:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        for x in [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 3.7, -3.7, 4_194_303.0, -4_194_303.0] {
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
        }
        // Out of range it is garbage, as in ggml, but bounded and panic-free.
        for x in [f32::NAN, f32::INFINITY, -f32::INFINITY, 1e30, -1e30] {
            assert!(nearest_int(x).abs() <= 0x40_0000, "{x}");
        }
    }
}
