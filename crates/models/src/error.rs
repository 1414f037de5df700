//! Errors of model loading and inference.

use edgellm_core::quant::QuantError;
use edgellm_core::DType;
use edgellm_formats::GgufError;

/// An error loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The GGUF file is malformed or lacks metadata.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A weight could not be converted.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// The file holds an architecture edgellm does not implement.
    #[error("architecture '{0}' is not supported (supported: llama, gemma3)")]
    UnsupportedArchitecture(String),
    /// A tensor has a shape other than the hyper-parameters imply.
    #[error("tensor '{tensor}' has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor.
        tensor: String,
        /// Shape found (`ne[0]` first).
        found: Vec<u64>,
        /// Shape expected.
        expected: Vec<u64>,
    },
    /// A tensor has a type edgellm cannot compute with.
    #[error("tensor '{tensor}' has type {dtype}, which edgellm cannot compute with yet")]
    UnsupportedTensorType {
        /// The tensor.
        tensor: String,
        /// Its type.
        dtype: DType,
    },
    /// Hyper-parameters that are inconsistent or unsupported.
    #[error("invalid model configuration: {0}")]
    BadConfig(String),
    /// More positions than the KV cache holds.
    #[error("context overflow: {needed} positions needed but the context holds {n_ctx}; use a shorter prompt or a larger context (-c)")]
    ContextOverflow {
        /// Positions needed.
        needed: usize,
        /// Context size.
        n_ctx: usize,
    },
    /// A source file of a conversion (config.json, tokenizer.json, safetensors) is missing or
    /// malformed.
    #[error("{}: {message}", path.display())]
    Source {
        /// The file (empty when the message names it).
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken {
        /// The id.
        id: u32,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// A weight name that is not one of the model's block linears.
    #[error("'{0}' is not a block weight of this model (expected blk.N.ROLE.weight)")]
    NoSuchWeight(String),
    /// A sparse weight tensor is corrupt, or the file does not declare the sparse extension.
    #[error("tensor '{tensor}': {why}")]
    Sparse {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        why: String,
    },
    /// The model does not implement layer-wise execution.
    #[error("the {0} model does not support layer-wise execution (needed by sequential pruning)")]
    LayerwiseUnsupported(String),
    /// The device running the model (a GPU) failed or cannot hold it.
    #[error("{0}")]
    Device(String),
    /// An intent classifier's head or labels are missing or malformed.
    #[error("intent model: {0}")]
    Intent(String),
}
