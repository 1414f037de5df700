//! edgellm-runtime: from a model file to tokens — loading with a memory check, the
//! prefill/decode loop, and the sampler chain.

pub mod calib_text;
pub mod embed;
pub mod intent;
pub mod memory;
pub mod sampler;
pub mod session;

pub use sampler::{Sampler, SamplerConfig};
pub use session::{
    gpu_part, GenerateOptions, Generation, LoadedModel, RuntimeError, Session, StopReason, Timings,
};
