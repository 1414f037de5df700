//! The element-type table: every GGML type id with its block size and bytes per block.
//!
//! One row per type, one place: the GGUF reader uses it to size tensors, the quantizers and
//! kernels use it to walk blocks. Ids and sizes follow the GGML type enumeration as written to
//! GGUF files (the format's on-disk contract).

use std::fmt;

/// A GGML element type, as stored in a GGUF tensor-info record.
///
/// Ids 1024 and above are edgellm's sparse extension (outside ggml's range):
/// [`DType::Q4_S24`], [`DType::Q4_S48`], [`DType::Q8_S24`], [`DType::Q8_S48`] (N:M sparse
/// blocks of 64 inputs) and [`DType::Q8_SB`] (bitmap metadata whose kept values live in a
/// companion `I8` tensor). See [`crate::quant::sparse`] for their layouts.
#[allow(non_camel_case_types, missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    /// edgellm sparse extension: 2:4 sparse, 4-bit kept values (see [`crate::quant::sparse`]).
    Q4_S24 = 1024,
    /// edgellm sparse extension: 4:8 sparse, 4-bit kept values.
    Q4_S48 = 1025,
    /// edgellm sparse extension: 2:4 sparse, 8-bit kept values.
    Q8_S24 = 1026,
    /// edgellm sparse extension: 4:8 sparse, 8-bit kept values.
    Q8_S48 = 1027,
    /// edgellm sparse extension: unstructured (bitmap) sparsity, 8-bit kept values stored in a
    /// companion `I8` tensor; this type's rows hold only the per-block scale and mask.
    Q8_SB = 1028,
}

/// Static facts about one element type.
#[derive(Clone, Copy, Debug)]
pub struct TypeInfo {
    /// The type.
    pub dtype: DType,
    /// Name as llama.cpp prints it (`"Q4_K"`, `"F32"`).
    pub name: &'static str,
    /// Elements per block (1 for plain scalar types).
    pub block_size: usize,
    /// Bytes per block.
    pub type_size: usize,
    /// Whether edgellm can convert this type to and from f32.
    pub supported: bool,
}

macro_rules! info {
    ($t:ident, $bs:expr, $ts:expr, $sup:expr) => {
        TypeInfo { dtype: DType::$t, name: stringify!($t), block_size: $bs, type_size: $ts, supported: $sup }
    };
}

/// The table, one row per type.
pub const TYPES: &[TypeInfo] = &[
    info!(F32, 1, 4, true),
    info!(F16, 1, 2, true),
    info!(Q4_0, 32, 18, true),
    info!(Q4_1, 32, 20, true),
    info!(Q5_0, 32, 22, true),
    info!(Q5_1, 32, 24, true),
    info!(Q8_0, 32, 34, true),
    info!(Q8_1, 32, 36, false),
    info!(Q2_K, 256, 84, true),
    info!(Q3_K, 256, 110, true),
    info!(Q4_K, 256, 144, true),
    info!(Q5_K, 256, 176, true),
    info!(Q6_K, 256, 210, true),
    info!(Q8_K, 256, 292, true),
    info!(IQ2_XXS, 256, 66, false),
    info!(IQ2_XS, 256, 74, false),
    info!(IQ3_XXS, 256, 98, false),
    info!(IQ1_S, 256, 50, false),
    info!(IQ4_NL, 32, 18, false),
    info!(IQ3_S, 256, 110, false),
    info!(IQ2_S, 256, 82, false),
    info!(IQ4_XS, 256, 136, false),
    info!(I8, 1, 1, false),
    info!(I16, 1, 2, false),
    info!(I32, 1, 4, false),
    info!(I64, 1, 8, false),
    info!(F64, 1, 8, false),
    info!(IQ1_M, 256, 56, false),
    info!(BF16, 1, 2, true),
    info!(TQ1_0, 256, 54, false),
    info!(TQ2_0, 256, 66, false),
    info!(MXFP4, 32, 17, false),
    // edgellm's sparse extension (ids outside ggml's range; see `quant::sparse`).
    info!(Q4_S24, 64, 24, true),
    info!(Q4_S48, 64, 25, true),
    info!(Q8_S24, 64, 40, true),
    info!(Q8_S48, 64, 41, true),
    // Not convertible on its own: the kept values live in a companion I8 tensor, so
    // `quant::{quantize,dequantize}_row` refuse it; `quant::sparse` has the bitmap functions.
    // Its sizes are those of the metadata rows (10 bytes per 64 inputs).
    info!(Q8_SB, 64, 10, false),
];

impl DType {
    /// The type with this GGUF id, or `None` for an id no GGML version defines.
    pub fn from_id(id: u32) -> Option<DType> {
        TYPES.iter().find(|t| t.dtype as u32 == id).map(|t| t.dtype)
    }

    /// The type with this name (case-insensitive, `"q4_k"` or `"Q4_K"`).
    pub fn from_name(name: &str) -> Option<DType> {
        TYPES.iter().find(|t| t.name.eq_ignore_ascii_case(name)).map(|t| t.dtype)
    }

    /// The GGUF id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// This type's row of the table.
    pub fn info(self) -> &'static TypeInfo {
        // Every variant has exactly one row (checked by a test).
        TYPES.iter().find(|t| t.dtype == self).expect("every DType has a table row")
    }

    /// Name as llama.cpp prints it.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        self.info().block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.info().type_size
    }

    /// Whether edgellm converts this type to and from f32.
    pub fn is_supported(self) -> bool {
        self.info().supported
    }

    /// Whether this is a block-quantized type (block size above one).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bits per weight.
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }

    /// Bytes taken by `n` elements, or `None` when `n` is not a whole number of blocks
    /// or the size overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_unique_and_round_trips() {
        for t in TYPES {
            assert_eq!(DType::from_id(t.dtype.id()), Some(t.dtype));
            assert_eq!(DType::from_name(t.name), Some(t.dtype));
            assert_eq!(TYPES.iter().filter(|u| u.dtype == t.dtype).count(), 1);
        }
        assert_eq!(DType::from_id(4), None);
        assert_eq!(DType::from_id(1000), None);
        assert_eq!(DType::from_id(1024), Some(DType::Q4_S24));
        assert_eq!(DType::from_id(1028), Some(DType::Q8_SB));
        assert_eq!(DType::from_id(1029), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(DType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(DType::Q4_K.bytes_for(100), None);
        assert_eq!(DType::F16.bytes_for(3), Some(6));
        assert!((DType::Q4_0.bits_per_weight() - 4.5).abs() < 1e-12);
        assert!((DType::Q4_S24.bits_per_weight() - 3.0).abs() < 1e-12);
        assert!((DType::Q4_S48.bits_per_weight() - 3.125).abs() < 1e-12);
        assert!((DType::Q8_S24.bits_per_weight() - 5.0).abs() < 1e-12);
        assert!((DType::Q8_S48.bits_per_weight() - 5.125).abs() < 1e-12);
        assert!((DType::Q8_SB.bits_per_weight() - 1.25).abs() < 1e-12);
    }
}
