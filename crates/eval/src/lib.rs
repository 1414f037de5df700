//! edgellm-eval: measurements of a model's quality and cost, driven through `edgellm-runtime`.
//!
//! - [`sts`]: semantic textual similarity (STS Benchmark): Spearman correlation of embedding
//!   cosines with human scores, with throughput and peak memory.
//! - [`stats`]: rank statistics shared by the evaluations.

pub mod stats;
pub mod sts;
