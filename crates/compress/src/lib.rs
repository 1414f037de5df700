//! edgellm-compress: make models smaller.
//!
//! - [`plan`]: quantization schemes (single types and llama.cpp-compatible mixes such as
//!   Q4_K_M), their per-tensor rules, `--keep` overrides and row-length fallbacks.
//! - [`source`]: a model as plain metadata + named tensors, from GGUF or any converter.
//! - [`quantize`]: the driver — plan, quantize every tensor in parallel, build the output GGUF.
//! - [`grid`]: importance-weighted block quantizers for every GGML block format.
//! - [`calib`]: calibration statistics (importance matrices, Gram matrices) from running a model.
//! - [`gptq`]: GPTQ error-compensating quantization on the same grids.
//! - [`prune`]: magnitude, Wanda and SparseGPT pruning (unstructured and N:M), sequential
//!   calibration block by block.
//! - [`structured`]: structured pruning to a smaller dense model (FFN channels, heads, blocks).
//! - [`recipe`]: prune, then quantize, in one call (what `edgellm prune` and `eval sweep` run).
//! - [`sparse`]: pruned tensors stored in edgellm's sparse types (`--format sparse`).
//! - [`act_sparsity`]: activation-sparsity (TEAL) thresholds from calibration text, into GGUF metadata.
//! - [`awq`]: AWQ-style activation-aware input scaling, folded into norms and preceding rows.
//!
//! Every file written is standard GGUF that llama.cpp loads, except with `--format sparse`
//! (edgellm's sparse tensor types, `docs/sparse-gguf.md`).

#![warn(missing_docs)]

pub mod act_sparsity;
pub mod awq;
pub mod calib;
mod error;
pub mod gptq;
pub mod grid;
pub mod plan;
pub mod prune;
pub mod quantize;
pub mod recipe;
pub mod source;
pub mod sparse;
pub mod structured;
pub mod vocab;

pub use awq::{AwqParams, AwqStats};
pub use error::CompressError;
pub use plan::{KeepRule, Scheme};
pub use quantize::{
    quantize_model, GramSource, Importance, Method, QuantizeOptions, QuantizedModel, TensorReport,
};
pub use source::{ModelSource, SourceTensor};
