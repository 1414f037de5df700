//! edgellm-core: element types, quant block formats, the tolerance policy, and (later) tensors
//! and CPU kernels.
//!
//! - [`dtype`]: the element-type table (GGUF ids, block sizes, bytes per block).
//! - [`quant`]: one definition per block format with its scalar reference conversions to and
//!   from f32; these are the oracles every fast kernel is tested against.
//! - [`kernels`]: quantized dot products and matrix products (scalar oracles and SIMD tiers
//!   behind a run-time dispatch table).
//! - [`tolerance`]: the one place that says how close two numeric results must be.

#![warn(missing_docs)]

pub mod dtype;
pub mod kernels;
pub mod parallel;
pub mod quant;
pub mod tolerance;

pub use dtype::{DType, TypeInfo, TYPES};
