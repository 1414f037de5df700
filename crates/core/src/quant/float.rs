//! The plain float types: F32, F16 (IEEE half) and BF16 (bfloat16), as blocks of one element.

use super::BlockFormat;
use crate::DType;

/// F32: one little-endian IEEE single per element.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct F32(pub f32);
const _: () = assert!(std::mem::size_of::<F32>() == 4);

/// F16: one little-endian IEEE half per element.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct F16(pub half::f16);
const _: () = assert!(std::mem::size_of::<F16>() == 2);

/// BF16: one little-endian bfloat16 (the top half of an f32) per element.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Bf16(pub half::bf16);
const _: () = assert!(std::mem::size_of::<Bf16>() == 2);

impl BlockFormat for F32 {
    const DTYPE: DType = DType::F32;
    const BLOCK: usize = 1;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline(always)]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        dst[0] = f32::from_le_bytes(*super::block_bytes::<4>(src));
    }

    #[inline(always)]
    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        dst.copy_from_slice(&src[0].to_le_bytes());
    }
}

impl BlockFormat for F16 {
    const DTYPE: DType = DType::F16;
    const BLOCK: usize = 1;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline(always)]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        dst[0] = super::f16_bits_to_f32(u16::from_le_bytes(*super::block_bytes::<2>(src)));
    }

    /// Round to nearest, ties to even (ggml's FP32_TO_FP16); overflow goes to infinity.
    #[inline(always)]
    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        dst.copy_from_slice(&half::f16::from_f32(src[0]).to_le_bytes());
    }
}

/// f32 → bf16 bits as ggml rounds: to nearest, ties to even; a NaN stays a NaN, made quiet.
#[inline(always)]
pub(crate) fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    // Cannot overflow: the largest non-NaN pattern is 0xff80_0000.
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

impl BlockFormat for Bf16 {
    const DTYPE: DType = DType::BF16;
    const BLOCK: usize = 1;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline(always)]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        dst[0] = f32::from_bits((u16::from_le_bytes(*super::block_bytes::<2>(src)) as u32) << 16);
    }

    #[inline(always)]
    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        dst.copy_from_slice(&f32_to_bf16_bits(src[0]).to_le_bytes());
    }
}
