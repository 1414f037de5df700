//! File formats of edgellm: GGUF v3 (read and write), safetensors, Hugging Face `config.json`
//! and llama.cpp importance matrices.
//!
//! This crate is the only place that maps files into memory (see [`mmap`]). Every size and
//! offset read from a file is checked against the file before it is used: a corrupt or
//! truncated file gives a typed error, never a panic or an out-of-bounds read.

pub mod gguf;
pub mod hf_config;
pub mod imatrix;
pub mod mmap;
pub mod safetensors;

pub use gguf::{GgufError, GgufFile, GgufWriter, TensorInfo, Value, ValueType, WriterTensor};
pub use hf_config::{ConfigError, HfConfig};
pub use imatrix::{Imatrix, ImatrixEntry, ImatrixError};
pub use safetensors::{SafetensorsError, SafetensorsFile};
