//! The original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! Each block holds an f16 scale `d` (and for the `_1` types an f16 minimum `m`) and 32 codes.
//! `_0` types are symmetric (`x = d·(q − offset)`), `_1` types affine (`x = d·q + m`).
//! 4-bit codes are packed two per byte: element `j` in the low nibble of byte `j`, element
//! `j + 16` in the high nibble. 5-bit codes keep their fifth bits in a 32-bit little-endian
//! mask `qh` (bit `j` for element `j`).
//!
//! The quantizers follow ggml's `quantize_row_q*_ref`: the scale comes from the element of
//! largest magnitude (first one on ties) or from the block's range, codes are computed with the
//! f32 inverse scale (not the f16-rounded one), truncated after adding one half (the `_0`/`_1`
//! 4/5-bit types) or rounded half away from zero (Q8_0).

use super::{block_bytes, block_bytes_mut, block_values, block_values_mut, read_f16, write_f16, BlockFormat};
use crate::DType;
use half::f16;

/// Elements per Q4_0 block.
pub const QK4_0: usize = 32;
/// Elements per Q4_1 block.
pub const QK4_1: usize = 32;
/// Elements per Q5_0 block.
pub const QK5_0: usize = 32;
/// Elements per Q5_1 block.
pub const QK5_1: usize = 32;
/// Elements per Q8_0 block.
pub const QK8_0: usize = 32;

/// Q4_0 (4.5 bits per weight): `x = d·(q − 8)`, `q` in 0..=15.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Codes, two per byte (element `j` low nibble, `j + 16` high nibble of byte `j`).
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// Q4_1 (5 bits per weight): `x = d·q + m`, `q` in 0..=15.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of code 0).
    pub m: f16,
    /// Codes, packed as in [`BlockQ4_0`].
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// Q5_0 (5.5 bits per weight): `x = d·(q − 16)`, `q` in 0..=31.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, a little-endian u32: bit `j` belongs to element `j`.
    pub qh: [u8; 4],
    /// Low four bits, packed as in [`BlockQ4_0`].
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// Q5_1 (6 bits per weight): `x = d·q + m`, `q` in 0..=31.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of code 0).
    pub m: f16,
    /// Fifth bits, as in [`BlockQ5_0`].
    pub qh: [u8; 4],
    /// Low four bits, packed as in [`BlockQ4_0`].
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// Q8_0 (8.5 bits per weight): `x = d·q`, `q` a signed byte.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Codes.
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// The element of largest magnitude, signed (the first one on ties), and its magnitude.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Smallest and largest element.
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline(always)]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

impl BlockFormat for BlockQ4_0 {
    const DTYPE: DType = DType::Q4_0;
    const BLOCK: usize = QK4_0;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<18>(src);
        let y = block_values_mut::<32>(dst);
        let d = read_f16(b, 0);
        for j in 0..16 {
            let q = b[2 + j];
            y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<32>(src);
        let out = block_bytes_mut::<18>(dst);
        let (max, _) = signed_absmax(x);
        let d = max / -8.0;
        let id = inverse(d);
        write_f16(out, 0, d);
        for j in 0..16 {
            // The sum lies in [0.5, 16.5] for finite input; `as` truncates like the C cast.
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            out[2 + j] = q0 | (q1 << 4);
        }
    }
}

impl BlockFormat for BlockQ4_1 {
    const DTYPE: DType = DType::Q4_1;
    const BLOCK: usize = QK4_1;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<20>(src);
        let y = block_values_mut::<32>(dst);
        let d = read_f16(b, 0);
        let m = read_f16(b, 2);
        for j in 0..16 {
            let q = b[4 + j];
            y[j] = (q & 0x0f) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<32>(src);
        let out = block_bytes_mut::<20>(dst);
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        write_f16(out, 0, d);
        write_f16(out, 2, min);
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            out[4 + j] = q0 | (q1 << 4);
        }
    }
}

impl BlockFormat for BlockQ5_0 {
    const DTYPE: DType = DType::Q5_0;
    const BLOCK: usize = QK5_0;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<22>(src);
        let y = block_values_mut::<32>(dst);
        let d = read_f16(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..16 {
            let q = b[6 + j];
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            y[j] = (((q & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
            y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<32>(src);
        let out = block_bytes_mut::<22>(dst);
        let (max, _) = signed_absmax(x);
        let d = max / -16.0;
        let id = inverse(d);
        write_f16(out, 0, d);
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            out[6 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= ((q0 as u32 >> 4) & 1) << j;
            qh |= ((q1 as u32 >> 4) & 1) << (j + 16);
        }
        out[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

impl BlockFormat for BlockQ5_1 {
    const DTYPE: DType = DType::Q5_1;
    const BLOCK: usize = QK5_1;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<24>(src);
        let y = block_values_mut::<32>(dst);
        let d = read_f16(b, 0);
        let m = read_f16(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for j in 0..16 {
            let q = b[8 + j];
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            y[j] = ((q & 0x0f) as u32 | h0) as f32 * d + m;
            y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<32>(src);
        let out = block_bytes_mut::<24>(dst);
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        write_f16(out, 0, d);
        write_f16(out, 2, min);
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(31) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(31) as u8;
            out[8 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= ((q0 as u32 >> 4) & 1) << j;
            qh |= ((q1 as u32 >> 4) & 1) << (j + 16);
        }
        out[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

impl BlockFormat for BlockQ8_0 {
    const DTYPE: DType = DType::Q8_0;
    const BLOCK: usize = QK8_0;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<34>(src);
        let y = block_values_mut::<32>(dst);
        let d = read_f16(b, 0);
        for j in 0..32 {
            y[j] = (b[2 + j] as i8) as f32 * d;
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<32>(src);
        let out = block_bytes_mut::<34>(dst);
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse(d);
        write_f16(out, 0, d);
        for j in 0..32 {
            // Half away from zero, like C's roundf.
            out[2 + j] = ((x[j] * id).round() as i8) as u8;
        }
    }
}
