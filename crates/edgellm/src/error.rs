//! The one error type of the facade.

use std::path::PathBuf;

use edgellm_formats::hf_config::ConfigError;
use edgellm_formats::mmap::SpecialFile;
use edgellm_formats::GgufError;
use edgellm_runtime::embed::EmbedError;
use edgellm_runtime::RuntimeError;
use edgellm_text::ChatTemplateError;

/// Everything that can go wrong loading or running a model through [`Engine`](crate::Engine).
///
/// Each message says what failed, where, and what to do. The runtime's own errors come through
/// unchanged in [`Error::Runtime`] (e.g. [`RuntimeError::MissingFile`],
/// [`RuntimeError::OutOfMemory`], [`RuntimeError::PromptTooLong`], [`RuntimeError::EmptyPrompt`]),
/// so a caller can match on them:
///
/// ```
/// use edgellm::{Engine, EngineOptions, Error, RuntimeError};
///
/// match Engine::load("no/such/model.gguf", EngineOptions::default()) {
///     Err(Error::Runtime(RuntimeError::MissingFile(p))) => assert!(p.ends_with("model.gguf")),
///     other => panic!("expected a missing-file error, got {:?}", other.err()),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running a language model failed: a missing file, not enough memory, a prompt
    /// longer than the context, an empty prompt, a model or tokenizer that cannot be built.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Loading or running a sentence encoder failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// A GGUF file could not be parsed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A model directory's `config.json` could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The chat template failed to render the conversation.
    #[error(transparent)]
    ChatTemplate(#[from] ChatTemplateError),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path names a pipe, a device or a socket: neither a model file nor a model directory.
    #[error("{path} is {kind}, not a model: pass a .gguf file, or a Hugging Face / sentence-transformers directory holding config.json, model.safetensors and tokenizer.json")]
    NotAModel {
        /// The path given.
        path: PathBuf,
        /// What it is.
        kind: SpecialFile,
    },
    /// The path is a file but not a GGUF file.
    #[error("{path} is not a GGUF file (it starts with {magic:?}, expected \"GGUF\") nor a model directory: pass a .gguf file, or a Hugging Face / sentence-transformers directory holding config.json, model.safetensors and tokenizer.json")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its first bytes, lossily as text.
        magic: String,
    },
    /// The path is a directory without `config.json`.
    #[error("{dir} is a directory without config.json: a model directory needs config.json, model.safetensors and tokenizer.json (a Hugging Face or sentence-transformers checkpoint); or pass a .gguf file")]
    MissingConfig {
        /// The directory.
        dir: PathBuf,
    },
    /// The model's architecture is not one edgellm runs.
    #[error("{path}: architecture '{arch}' is not supported: edgellm runs llama and gemma3 (text generation) and bert (embeddings)")]
    UnsupportedArchitecture {
        /// The model file or directory.
        path: PathBuf,
        /// The architecture it declares.
        arch: String,
    },
    /// A Hugging Face safetensors directory of a decoder (llama, gemma3): not supported yet.
    #[error("{dir}: '{arch}' safetensors directories are not supported yet (only bert encoders load from a directory); convert the checkpoint to GGUF (llama.cpp's convert_hf_to_gguf.py) and load the .gguf file")]
    DecoderDirectoryUnsupported {
        /// The directory.
        dir: PathBuf,
        /// Its `model_type`.
        arch: String,
    },
    /// A text-generation call on an embedding model.
    #[error("'{arch}' is an embedding model (encoder): it cannot {what}; use Engine::embed, or load a llama or gemma3 model to generate text")]
    NotADecoder {
        /// The model's architecture.
        arch: String,
        /// What was asked.
        what: &'static str,
    },
    /// An embedding call on a text generator.
    #[error("'{arch}' is a text generator (decoder), not an embedding model: load a bert GGUF file or a sentence-transformers directory to embed")]
    NotAnEncoder {
        /// The model's architecture.
        arch: String,
    },
    /// A classification call on a model without an intent head.
    #[error("{} has no intent head: classify with an intent model made by `edgellm intent train`", path.display())]
    NotAClassifier {
        /// The model loaded.
        path: std::path::PathBuf,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range: the vocabulary has {vocab_size} tokens (ids 0..{vocab_size})")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Size of the vocabulary.
        vocab_size: usize,
    },
    /// A generation parameter is out of its range.
    #[error("invalid generation parameter: {0}")]
    InvalidParams(String),
    /// The JSON schema of [`OutputFormat::JsonSchema`](crate::OutputFormat) cannot be compiled
    /// (a malformed or unsatisfiable schema, a `$ref` to nothing, a feature llguidance does not
    /// support): the message says what and where. Checked before any generation.
    #[error("invalid JSON schema for the output format: {0}")]
    InvalidSchema(String),
    /// Constrained decoding failed during a generation (the grammar matcher hit one of its
    /// limits, or allowed no token of the vocabulary), or the vocabulary cannot serve it.
    #[error("constrained decoding failed: {0}")]
    Constraint(String),
    /// The model computed NaN or infinite logits: its weights are corrupt (see
    /// `edgellm inspect --check`) or its activations overflowed. Nothing is sampled from them.
    #[error("the model computed NaN or infinite logits after {generated} generated tokens: its weights are probably corrupt (run `edgellm inspect --check MODEL` to find the tensor and block) or its activations overflowed")]
    NonFiniteLogits {
        /// Tokens generated before the bad logits.
        generated: usize,
    },
    /// The batch scheduler's queue is full: try again later.
    #[error("{queued} requests are already waiting for one of {slots} slots (the queue holds {limit}): try again shortly, or raise --parallel")]
    QueueFull {
        /// Requests waiting.
        queued: usize,
        /// Generation slots.
        slots: usize,
        /// Most requests that may wait.
        limit: usize,
    },
    /// The batch scheduler has stopped (it was dropped, or its worker failed).
    #[error("the batch scheduler has stopped")]
    Stopped,
    /// The model failed in the middle of a batched step (a bug: every sequence is checked
    /// before it is scheduled).
    #[error("the model failed during a batched step: {0}")]
    StepFailed(String),
    /// A KV cache type name that is not one of the supported ones.
    #[error("unknown KV cache type '{0}': use f16, q8_0 or f32")]
    UnknownCacheType(String),
}

/// `Result` with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
