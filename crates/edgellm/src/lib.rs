//! edgellm: run language models and sentence encoders on the device itself, through one
//! [`Engine`].
//!
//! [`Engine::load`] takes a GGUF file (`llama` and `gemma3` generate text, `bert` embeds) or a
//! sentence-transformers / Hugging Face directory of a `bert` encoder (`config.json`,
//! `model.safetensors`, `tokenizer.json`), and picks the architecture, the tokenizer and the
//! chat template itself. Then:
//!
//! - [`Engine::generate`] / [`Engine::chat`]: text streamed to a callback a [`Chunk`] at a time
//!   (whole characters only), with sampling settings, stop strings, a token limit and
//!   cancellation (the callback returns [`ControlFlow::Break`](std::ops::ControlFlow), or a
//!   [`CancelToken`] is cancelled from another thread); the [`Completion`] says why it ended
//!   ([`FinishReason`]) and how fast it went;
//! - output constrained to JSON ([`OutputFormat`]: any JSON object, or JSON following a
//!   schema, in [`GenerateParams::format`]), and token log-probabilities
//!   ([`GenerateParams::logprobs`], [`TokenLogprob`]);
//! - [`Engine::embed`]: sentence embeddings, batched; [`Engine::classify`]: intents, for an
//!   intent model (an encoder with an intent head, made by `edgellm intent train`);
//! - [`home::CommandParser`]: smart-home commands as `{"device", "action", "value"}` JSON
//!   from a decoder under a schema;
//! - [`Engine::tokenize`] / [`Engine::detokenize`], and [`Engine::info`].
//!
//! Every failure is an [`Error`] value with a message a user can act on; bad input never
//! panics. An `Engine` is `Send + Sync`: share one between threads, each running its own
//! [`Session`] (a KV cache; a conversation kept in one session reuses its cached prefix).
//!
//! ```no_run
//! use std::io::Write;
//! use std::ops::ControlFlow;
//!
//! use edgellm::{Engine, EngineOptions, GenerateParams, Message};
//!
//! # fn main() -> Result<(), edgellm::Error> {
//! let engine = Engine::load("models/SmolLM2-135M-Instruct.Q4_1.gguf", EngineOptions::default())?;
//! let messages = [Message::new("user", "What is the capital of France?")];
//! let params = GenerateParams::greedy(64).with_stop(["\n\n"]);
//! let answer = engine.chat(&messages, &params, |chunk| {
//!     print!("{}", chunk.text);
//!     std::io::stdout().flush().ok();
//!     ControlFlow::Continue(())
//! })?;
//! println!("\n[{} tokens, {:.1} tok/s, {}]",
//!     answer.ids.len(), answer.timings.gen_tokens_per_s(), answer.finish.as_str());
//!
//! let encoder = Engine::load("models/all-MiniLM-L6-v2", EngineOptions::default())?;
//! let e = encoder.embed(&["Turn on the lights.", "Switch the lights on."])?;
//! println!("similarity {:.3}", edgellm::cosine(&e[0], &e[1]));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod batch;
mod constraint;
mod engine;
mod error;
mod generate;
pub mod home;
mod logprob;

pub use constraint::OutputFormat;
pub use engine::{
    embedder_on, parse_cache_type, Engine, EngineInfo, EngineOptions, LabelScore, ModelKind, TemplateSource,
};
pub use error::{Error, Result};
pub use generate::{CancelToken, Chunk, Completion, FinishReason, GenerateParams, Session, Timings};
pub use logprob::{TokenLogprob, MAX_TOP_LOGPROBS};

/// What a path given as a model is when it is not a regular file, in [`Error::NotAModel`].
pub use edgellm_formats::mmap::SpecialFile;
/// Where a model runs, for [`EngineOptions::device`].
pub use edgellm_models::Device;
/// Element type of the KV cache, for [`EngineOptions::cache_type`].
pub use edgellm_models::KvType;
/// Cosine similarity of two embeddings.
pub use edgellm_runtime::embed::cosine;
/// Errors of the embedding pipeline, which come through [`Error::Embed`].
pub use edgellm_runtime::embed::EmbedError;
/// The default number of texts per batch of [`Engine::embed`].
pub use edgellm_runtime::embed::DEFAULT_BATCH;
/// Errors of the runtime, which come through [`Error::Runtime`].
pub use edgellm_runtime::RuntimeError;
/// A sampler with its random state, for [`Session::generate_ids_with`].
pub use edgellm_runtime::Sampler;
/// The sampling settings of [`GenerateParams::sampling`].
pub use edgellm_runtime::SamplerConfig;
/// A message of a conversation (`role` and `content`), for [`Engine::chat`].
pub use edgellm_text::ChatMessage as Message;
