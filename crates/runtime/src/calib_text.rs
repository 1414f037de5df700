//! Calibration text → the token input calibration runs on: a decoder's fixed-length chunks or
//! an encoder's sentences, tokenized by the model's own tokenizer.
//!
//! `edgellm imatrix`, `quantize`, `prune` and `eval sweep` all cut their calibration text here.
//! Calibrate on `wiki.valid.tokens`, never on the evaluation text.

use std::path::{Path, PathBuf};

use edgellm_formats::GgufFile;
use edgellm_text::{Tokenizer, TokenizerError};

use crate::embed::{EmbedError, Embedder};

/// An error preparing calibration input.
#[derive(Debug, thiserror::Error)]
pub enum CalibTextError {
    /// The text could not be read.
    #[error("reading calibration text {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is shorter than one chunk.
    #[error(
        "{path}: {tokens} tokens is less than one chunk of {ctx} (use a longer text or a smaller --ctx)"
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Tokens of the whole text.
        tokens: usize,
        /// Tokens per chunk asked for.
        ctx: usize,
    },
    /// The chunk length is too small to calibrate on.
    #[error("calibration chunks of {0} tokens are too short (at least 16)")]
    ChunkTooShort(usize),
    /// No sentence of six words or more was found.
    #[error("{0}: no sentences of six words or more")]
    NoSentences(PathBuf),
    /// The decoder's tokenizer could not be built.
    #[error("building the tokenizer from the model: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// The encoder (its tokenizer) could not be loaded or run.
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// A decoder's calibration chunks.
#[derive(Clone, Debug)]
pub struct DecoderChunks {
    /// `n` chunks of `ctx` tokens, BOS first where the model wants one.
    pub chunks: Vec<Vec<u32>>,
    /// Tokens of the whole text.
    pub text_tokens: usize,
    /// Whole chunks the text holds.
    pub available: usize,
}

fn read(path: &Path) -> Result<String, CalibTextError> {
    std::fs::read_to_string(path).map_err(|source| CalibTextError::Read { path: path.into(), source })
}

/// Cuts the text file `text` into `chunks` chunks of `ctx` tokens (0 = every whole chunk) with
/// the tokenizer of `model`, BOS first where the model adds one (as `llama-imatrix` does).
pub fn decoder_chunks(
    model: &GgufFile,
    text: &Path,
    ctx: usize,
    chunks: usize,
) -> Result<DecoderChunks, CalibTextError> {
    if ctx < 16 {
        return Err(CalibTextError::ChunkTooShort(ctx));
    }
    let raw = read(text)?;
    let tok = Tokenizer::from_gguf(model)?;
    let add_bos = tok.add_bos_default();
    let tokens = tok.encode(&raw, add_bos, false);
    let available = tokens.len() / ctx;
    if available == 0 {
        return Err(CalibTextError::TooShort { path: text.into(), tokens: tokens.len(), ctx });
    }
    let n = if chunks == 0 { available } else { chunks.min(available) };
    let bos = if add_bos { tok.bos_id() } else { None };
    let chunks = (0..n)
        .map(|c| {
            let mut v = tokens[c * ctx..(c + 1) * ctx].to_vec();
            if let Some(b) = bos {
                v[0] = b;
            }
            v
        })
        .collect();
    Ok(DecoderChunks { chunks, text_tokens: tokens.len(), available })
}

/// Sentences of a calibration text for an encoder: paragraphs split at sentence ends, headings
/// (`= … =`) and fragments under six words skipped, at most `max`.
pub fn sentences(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    if max == 0 {
        return out;
    }
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('=') {
            continue;
        }
        for s in line.split(" . ") {
            let s = s.trim();
            if s.split_whitespace().count() >= 6 {
                out.push(format!("{s} ."));
                if out.len() == max {
                    return out;
                }
            }
        }
    }
    out
}

/// At most `max` sentences of the text file `text`, tokenized by the encoder at `model` (a
/// sentence-transformers directory, its `model.safetensors`, or a `bert` GGUF file).
pub fn encoder_sentences(model: &Path, text: &Path, max: usize) -> Result<Vec<Vec<u32>>, CalibTextError> {
    let raw = read(text)?;
    let dir = if model.is_file() && model.extension().is_some_and(|e| e == "safetensors") {
        model.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        model.to_path_buf()
    };
    let emb = Embedder::load(&dir)?;
    let s = sentences(&raw, max);
    if s.is_empty() {
        return Err(CalibTextError::NoSentences(text.into()));
    }
    s.iter().map(|s| emb.tokenize(s).map_err(CalibTextError::from)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_skip_headings_and_fragments() {
        let t = " = Title = \n\n The cat sat on the mat all day . Short one . Another long sentence here with words \n";
        let s = sentences(t, 10);
        assert_eq!(s, ["The cat sat on the mat all day .", "Another long sentence here with words ."]);
        assert_eq!(sentences(t, 1).len(), 1);
        assert!(sentences(t, 0).is_empty());
    }
}
