//! edgellm-eval: measurements of a model's quality and cost, driven through `edgellm-runtime`.
//!
//! - [`ppl`]: perplexity and KL divergence over a text, as llama.cpp's `llama-perplexity`
//!   computes them (non-overlapping chunks, the second half of each scored).
//! - [`sts`]: semantic textual similarity (STS Benchmark): Spearman correlation of embedding
//!   cosines with human scores, with throughput and peak memory.
//! - [`speed`]: prompt and generation tokens/s, as llama-bench measures them.
//! - [`sweep`]: a grid of compression recipes on one model, measured and charted.
//! - [`chart`]: quality-against-size/speed scatter charts (PNG and SVG).
//! - [`intent`]: intent classification data (TSV) and scores: accuracy, macro-F1, confusions.
//! - [`energy`]: energy of a stretch of work, by RAPL or estimated from CPU time (labelled).
//! - [`stats`]: rank statistics shared by the evaluations.

pub mod chart;
pub mod energy;
pub mod home;
pub mod intent;
pub mod ppl;
pub mod speed;
pub mod stats;
pub mod sts;
pub mod sweep;
