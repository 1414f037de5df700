//! The compress crate's error type.

use edgellm_core::quant::QuantError;
use edgellm_core::DType;
use edgellm_formats::GgufError;

/// Why a compression step was refused.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// `--type` named no scheme.
    #[error(
        "unknown quantization type {0:?}; use one of F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_1, Q5_K, Q5_0, \
         Q4_1, Q4_K_M, Q4_K_S, Q4_K, Q4_0, Q3_K_M, Q3_K, Q2_K"
    )]
    UnknownScheme(String),
    /// A `--keep` rule could not be parsed.
    #[error("--keep {rule:?}: {why} (write PATTERN=TYPE, e.g. 'blk.*.attn_v.weight=Q8_0')")]
    BadKeep {
        /// The rule as given.
        rule: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `--keep` pattern matched no tensor.
    #[error("--keep pattern {0:?} matches no tensor of the model (`edgellm inspect MODEL` lists the names)")]
    KeepMatchedNothing(String),
    /// `--method` named no method.
    #[error("unknown method {0:?}; use rtn, weighted, awq or gptq")]
    UnknownMethod(String),
    /// The method needs calibration data that was not given.
    #[error("--method {method} needs {what}")]
    NeedsCalibration {
        /// The method.
        method: &'static str,
        /// What to pass.
        what: &'static str,
    },
    /// The type cannot be produced by the chosen method.
    #[error("{method} cannot produce {dtype} (tensor {tensor})")]
    MethodUnsupported {
        /// The method.
        method: &'static str,
        /// The type.
        dtype: DType,
        /// The tensor.
        tensor: String,
    },
    /// AWQ cannot scale this model (architecture, layout or missing statistics).
    #[error("--method awq: {0}")]
    AwqUnsupported(String),
    /// An importance-matrix entry has the wrong length for its tensor.
    #[error(
        "importance matrix entry {tensor} has {got} values but the tensor's rows have {want} \
         (the imatrix was made for another model)"
    )]
    ImatrixMismatch {
        /// The tensor.
        tensor: String,
        /// Values in the entry.
        got: usize,
        /// The tensor's row length.
        want: usize,
    },
    /// A tensor's source type has no f32 conversion.
    #[error("tensor {tensor}: {source}")]
    Quant {
        /// The tensor.
        tensor: String,
        /// The conversion error.
        source: QuantError,
    },
    /// A source tensor's data does not match its declared dims and type.
    #[error("tensor {tensor}: {why}")]
    BadTensor {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        why: String,
    },
    /// A pruning request that cannot be carried out (bad sparsity, pattern, ratio or model).
    #[error("prune: {0}")]
    BadPrune(String),
    /// Reading or writing GGUF failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
}
