//! The error type of tokenizer construction.

use edgellm_formats::GgufError;

/// An error building a [`Tokenizer`](crate::Tokenizer) from model metadata.
///
/// Every message names the metadata key at fault and what was expected, so a user can tell a
/// corrupt or unsupported file from a bug.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key the tokenizer needs is absent.
    #[error("tokenizer metadata key '{0}' is missing: the file has no usable tokenizer (re-convert the model with a current llama.cpp convert_hf_to_gguf.py)")]
    MissingKey(&'static str),
    /// A metadata value has the wrong type, length or content.
    #[error("tokenizer metadata key '{key}' is invalid: {why}")]
    InvalidMetadata {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer kind this crate does not implement.
    #[error("tokenizer model '{0}' is not supported (supported: {supported})", supported = crate::SUPPORTED_MODELS.join(", "))]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not know.
    #[error("pre-tokenizer '{0}' (tokenizer.ggml.pre) is not supported (supported: {supported})", supported = crate::pretok::supported_names().join(", "))]
    UnsupportedPreTokenizer(String),
    /// A special-token id lies outside the vocabulary.
    #[error("tokenizer metadata key '{key}' = {id} is out of range: the vocabulary has {vocab_size} tokens")]
    IdOutOfRange {
        /// The key.
        key: &'static str,
        /// The id found.
        id: u64,
        /// Size of the vocabulary.
        vocab_size: usize,
    },
    /// A BPE merge rule that cannot be applied.
    #[error("tokenizer.ggml.merges[{index}] = {merge:?} is invalid: {why}")]
    BadMerge {
        /// Position in the merges array.
        index: usize,
        /// The rule as written.
        merge: String,
        /// What is wrong with it.
        why: String,
    },
    /// A regular expression of a pre-tokenizer did not compile (a bug in the pre-tokenizer table).
    #[error("pre-tokenizer '{name}': regex {pattern:?} does not compile: {source}")]
    Regex {
        /// The pre-tokenizer.
        name: String,
        /// The pattern.
        pattern: &'static str,
        /// The regex error.
        source: Box<fancy_regex::Error>,
    },
    /// The GGUF reader refused a value (wrong type of a key).
    #[error(transparent)]
    Gguf(#[from] GgufError),
}
