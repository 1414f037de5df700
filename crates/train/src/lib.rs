//! Training on the device: a BERT encoder whose parameters candle's autograd differentiates,
//! pruning masks that keep zeros at zero through every optimizer step, and distillation of a
//! pruned sentence encoder from its dense original (`edgellm distill`).
//!
//! The pieces are meant to be reused for any loss (an intent classifier on top of the encoder,
//! say):
//! - [`TrainableBert`]: the encoder's forward in candle ops, built from any
//!   [`edgellm_models::bert::BertWeights`] source (a `bert` GGUF in any type that dequantizes,
//!   or a sentence-transformers directory), with [`mean_pool`] and [`l2_normalize`] for the
//!   sentence embedding, and a write-back into a `bert` GGUF;
//! - [`BertFile`]: a model on disk opened for training: its tokenizer and fast forward (the
//!   runtime's [`edgellm_runtime::embed::Embedder`]), and the GGUF metadata a trained copy
//!   carries;
//! - [`MaskedAdamW`] and [`LrSchedule`]: AdamW whose gradients and parameters are masked around
//!   every step, and a warmup/decay schedule;
//! - [`distill`]: the teacher's targets, the distillation loss and loop, and the whole
//!   file-to-file run.
//!
//! Backpropagation is candle's (`candle-core`'s autograd, CPU backend); nothing here writes a
//! gradient by hand. See docs/training.md.

#![warn(missing_docs)]

use std::path::PathBuf;

pub mod data;
pub mod distill;
pub mod encoder;
pub mod intent;
pub mod optim;
pub mod smart_home;
pub mod synthetic;

pub use candle_core::{DType, Device, Tensor, Var};
pub use candle_nn::ParamsAdamW;
pub use data::{read_sentences, sentences, SplitMix64};
pub use encoder::{l2_normalize, mean_pool, BertFile, Param, ParamKind, TokenBatch, TrainableBert};
pub use optim::{LrSchedule, MaskedAdamW};

/// An error preparing or running a training job.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A model path that is neither a file nor a directory.
    #[error(
        "{role} model {path} does not exist; pass a bert GGUF file or a sentence-transformers directory"
    )]
    MissingModel {
        /// Which model (teacher, student).
        role: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// A model that is not a BERT encoder.
    #[error("{role} model {path} is a '{arch}' model; distill trains BERT encoders (architecture 'bert')")]
    NotBert {
        /// Which model.
        role: &'static str,
        /// The path given.
        path: PathBuf,
        /// The architecture or model type it declares.
        arch: String,
    },
    /// The teacher and the student are not the same network.
    #[error("teacher and student differ in {what}: teacher {teacher}, student {student}; distill a student pruned from this teacher")]
    Mismatch {
        /// The hyper-parameter or component that differs.
        what: String,
        /// The teacher's value.
        teacher: String,
        /// The student's value.
        student: String,
    },
    /// A model whose pooling the trainer does not implement.
    #[error("{path}: {what}; distill trains mean-pooled encoders")]
    UnsupportedPooling {
        /// The model.
        path: PathBuf,
        /// What it asks for.
        what: String,
    },
    /// A data file that cannot be read.
    #[error("data file {path}: {source}")]
    Data {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A data file that yields no usable sentences.
    #[error("data file {path} has {found} usable sentences (lines of at least {min_words} words, headings skipped); {need} are needed")]
    NotEnoughData {
        /// The file.
        path: PathBuf,
        /// Sentences found.
        found: usize,
        /// Sentences needed.
        need: usize,
        /// The shortest sentence kept, in words.
        min_words: usize,
    },
    /// Options that cannot be run.
    #[error("bad option: {0}")]
    BadOptions(String),
    /// A batch the encoder cannot take (a token id outside the vocabulary, a sequence longer
    /// than the position table, an empty sequence).
    #[error("bad batch: {0}")]
    BadBatch(String),
    /// Loading or running the fast runtime's model or tokenizer failed.
    #[error(transparent)]
    Embed(#[from] edgellm_runtime::embed::EmbedError),
    /// A BERT weight source failed.
    #[error(transparent)]
    Bert(#[from] edgellm_models::bert::BertError),
    /// A model file could not be parsed or written.
    #[error(transparent)]
    Model(#[from] edgellm_models::ModelError),
    /// A GGUF file could not be parsed or written.
    #[error(transparent)]
    Gguf(#[from] edgellm_formats::GgufError),
    /// A tensor operation failed (a bug or an out-of-memory, not a user error).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Set the worker threads of training (candle's matrix products and rayon pool) and of the
/// fast runtime (0 = all cores). Call it before any tensor work: candle reads its thread count
/// from `RAYON_NUM_THREADS` and rayon sizes its pool once, at first use.
///
/// Candle's element-wise ops run on a pool of their own whose workers spin between ops; on a
/// small machine shared with matrix-product threads that spinning took over half the time of
/// a MiniLM fine-tuning step (3 s against 0.9 s per batch of 32 on 2 cores), so it gets one
/// thread (`CANDLE_NUM_THREADS=1`) unless the environment says otherwise; the matrix products
/// keep every thread.
pub fn set_num_threads(n: usize) {
    edgellm_core::parallel::set_num_threads(n);
    // Only at start-up, before any thread that reads the environment exists.
    if n > 0 {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
