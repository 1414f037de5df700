//! edgellm-text: text in and out of a model.
//!
//! - [`Tokenizer`]: built from a GGUF file's `tokenizer.ggml.*` metadata. Byte-level BPE
//!   (`tokenizer.ggml.model = "gpt2"`, GPT-2 / SmolLM / Llama 3 / Qwen 2 style) is implemented,
//!   with llama.cpp's pre-tokenizers ([`pretok::TABLE`]) and its handling of special tokens, so
//!   token ids match llama.cpp's `llama_tokenize`. SentencePiece-style vocabularies
//!   (`"llama"`: Llama 2, Gemma 3) merge by token score with byte fallback, as llama.cpp's SPM
//!   tokenizer does.
//! - [`StreamDecoder`]: token ids to text while generating, never splitting a character.
//! - [`ChatTemplate`]: the model's Jinja chat template (`tokenizer.chat_template`), with a ChatML
//!   fallback.

#![warn(missing_docs)]

mod bpe;
pub mod chat;
mod error;
pub mod pretok;
mod spm;
mod stream;
mod tokenizer;
pub mod unicode;
mod vocab;

pub use chat::{ChatMessage, ChatTemplate, ChatTemplateError};
pub use error::TokenizerError;
pub use stream::StreamDecoder;
pub use tokenizer::{Tokenizer, SUPPORTED_MODELS};
pub use vocab::TokenType;
