//! The public [`Tokenizer`]: one type over every tokenizer kind.

use edgellm_formats::GgufFile;

use crate::bpe::BpeModel;
use crate::spm::{self, SpmModel};
use crate::vocab::{DefaultIds, Fragment, TokenType, Vocab};
use crate::TokenizerError;

/// The tokenizer kinds (`tokenizer.ggml.model` values) this crate implements.
pub const SUPPORTED_MODELS: &[&str] = &["gpt2", "llama"];

/// The algorithm behind a [`Tokenizer`]. A new kind (WordPiece for `"bert"`) is a new variant
/// and a new file beside `bpe.rs` and `spm.rs`.
#[derive(Debug)]
enum Model {
    /// Byte-level BPE (`"gpt2"`).
    Bpe(BpeModel),
    /// SentencePiece-style merges by score with byte fallback (`"llama"`).
    Spm(SpmModel),
}

/// A tokenizer read from a model file: text to token ids and back.
///
/// It is `Send + Sync`; encoding takes `&self` (a per-word cache inside is behind a mutex).
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    /// Whether to add BOS by default: the file's `tokenizer.ggml.add_bos_token`, or the model
    /// kind's default.
    add_bos: bool,
    /// Decoded bytes of every token, concatenated; token `i` is `pieces[offsets[i]..offsets[i+1]]`.
    pieces: Vec<u8>,
    offsets: Vec<u32>,
}

// Shared across threads by the runtime.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Tokenizer>();
};

impl Tokenizer {
    /// Build the tokenizer a GGUF file describes (`tokenizer.ggml.*`).
    ///
    /// Errors name the metadata key at fault: a missing or mistyped vocabulary, a merge rule that
    /// uses unknown tokens, a special-token id out of range, or a tokenizer model or
    /// pre-tokenizer this crate does not implement.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        const MODEL: &str = "tokenizer.ggml.model";
        let kind = match f.get(MODEL) {
            None => return Err(TokenizerError::MissingKey(MODEL)),
            Some(v) => v.as_str().ok_or_else(|| TokenizerError::InvalidMetadata {
                key: MODEL,
                why: format!("expected a string, found {v}"),
            })?,
        };
        if !SUPPORTED_MODELS.contains(&kind) {
            return Err(TokenizerError::UnsupportedModel(kind.to_string()));
        }
        let (vocab, model, add_bos) = if kind == "llama" {
            // llama.cpp's defaults for SentencePiece vocabularies: <unk> <s> </s> first, BOS added.
            let vocab = Vocab::from_gguf(f, DefaultIds { bos: Some(1), eos: Some(2), unk: Some(0) })?;
            let spm = SpmModel::from_gguf(f, &vocab)?;
            let add_bos = vocab.add_bos.unwrap_or(true);
            (vocab, Model::Spm(spm), add_bos)
        } else {
            let vocab = Vocab::from_gguf(f, DefaultIds::default())?;
            let bpe = BpeModel::from_gguf(f, &vocab)?;
            let add_bos = vocab.add_bos.unwrap_or(bpe.add_bos_default);
            (vocab, Model::Bpe(bpe), add_bos)
        };
        let mut pieces = Vec::new();
        let mut offsets = Vec::with_capacity(vocab.tokens.len() + 1);
        offsets.push(0);
        for id in 0..vocab.tokens.len() as u32 {
            match &model {
                Model::Bpe(_) => BpeModel::token_bytes(&vocab, id, &mut pieces),
                Model::Spm(_) => SpmModel::token_bytes(&vocab, id, &mut pieces),
            }
            let end = u32::try_from(pieces.len()).map_err(|_| TokenizerError::InvalidMetadata {
                key: "tokenizer.ggml.tokens",
                why: "the token strings add up to more than 4 GiB".into(),
            })?;
            offsets.push(end);
        }
        Ok(Tokenizer { vocab, model, add_bos, pieces, offsets })
    }

    /// Text to token ids.
    ///
    /// `add_bos` puts the BOS token first (when the model has one; use
    /// [`add_bos_default`](Self::add_bos_default) for what the model wants). With
    /// `parse_special`, control tokens written in the text (`<|im_start|>`) become their ids;
    /// without it they are tokenized as plain text. User-defined tokens are always matched, as in
    /// llama.cpp. EOS is never added; see [`add_eos_default`](Self::add_eos_default).
    ///
    /// For a SentencePiece model with `tokenizer.ggml.add_space_prefix` (Llama 2, not Gemma 3),
    /// the text and every piece of it after a special token get a leading space, as in llama.cpp.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            out.extend(self.vocab.bos);
        }
        let frags = self.vocab.partition(text, parse_special);
        match &self.model {
            Model::Bpe(m) => {
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(r) => m.encode(&self.vocab, &text[r], &mut out),
                    }
                }
            }
            Model::Spm(m) => {
                let mut scratch = spm::Scratch::default();
                // llama.cpp: the start of the text counts as following a special token.
                let mut after_special = true;
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text(r) => {
                            let prefix = m.add_space_prefix && after_special;
                            m.encode(&self.vocab, &text[r], prefix, &mut out, &mut scratch);
                            after_special = false;
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether the model expects a BOS token before a prompt: `tokenizer.ggml.add_bos_token`, or
    /// when absent llama.cpp's default for the pre-tokenizer (true for Llama 3, else false).
    pub fn add_bos_default(&self) -> bool {
        self.add_bos
    }

    /// Whether the model expects an EOS token after a prompt (`tokenizer.ggml.add_eos_token`,
    /// false when absent).
    pub fn add_eos_default(&self) -> bool {
        self.vocab.add_eos
    }

    /// The beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        self.vocab.bos
    }

    /// The end-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// The end-of-turn token: `tokenizer.ggml.eot_token_id`, or else a vocabulary entry named
    /// like one (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, ...).
    pub fn eot_id(&self) -> Option<u32> {
        self.vocab.eot
    }

    /// The unknown token (`tokenizer.ggml.unknown_token_id`).
    pub fn unk_id(&self) -> Option<u32> {
        self.vocab.unk
    }

    /// The padding token (`tokenizer.ggml.padding_token_id`).
    pub fn pad_id(&self) -> Option<u32> {
        self.vocab.pad
    }

    /// Whether `id` ends generation: EOS, end-of-turn, end-of-message, the FIM stop tokens, or a
    /// token named like an end token (`<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, ...), as
    /// llama.cpp decides.
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// Every end-of-generation id, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.tokens.len()
    }

    /// The raw vocabulary string of a token (byte-level BPE tokens are in GPT-2's byte alphabet,
    /// e.g. `Ġthe`; SentencePiece tokens write a space as `▁`, e.g. `▁the`, and bytes as
    /// `<0x0A>`).
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.vocab.tokens.get(id as usize).map(String::as_str)
    }

    /// The type of a token.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.vocab.types.get(id as usize).copied()
    }

    /// The bytes a token decodes to (the byte-level mapping or `▁` undone, a byte token's byte;
    /// control and user-defined tokens give their text, unused SentencePiece slots nothing).
    /// Empty for an id out of range.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.piece(id).to_vec()
    }

    /// Like [`token_bytes`](Self::token_bytes), borrowed.
    pub fn piece(&self, id: u32) -> &[u8] {
        match (self.offsets.get(id as usize), self.offsets.get(id as usize + 1)) {
            (Some(&a), Some(&b)) => &self.pieces[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Token ids to text. The bytes of all tokens are joined first, so a character split across
    /// tokens comes out whole; only bytes that are not valid UTF-8 in the joined result become
    /// U+FFFD. Ids out of range are skipped.
    ///
    /// For a SentencePiece model with `tokenizer.ggml.add_space_prefix`, the first token loses
    /// one leading space (the one [`encode`](Self::encode) added), as llama.cpp's
    /// `llama_detokenize` does; Gemma 3 has no such prefix, so nothing is removed there.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, true)
    }

    /// [`decode`](Self::decode), choosing whether control tokens appear as their text
    /// (`special = true`) or as nothing (`false`, what llama.cpp's detokenizer does without
    /// `unparse_special`). User-defined tokens always appear.
    pub fn decode_with(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let strip_space = matches!(&self.model, Model::Spm(m) if m.add_space_prefix);
        for (i, &id) in ids.iter().enumerate() {
            if !special
                && self.token_type(id).is_some_and(|t| {
                    !matches!(
                        t,
                        TokenType::Normal | TokenType::Byte | TokenType::UserDefined | TokenType::Undefined
                    )
                })
            {
                continue;
            }
            let piece = self.piece(id);
            match piece.strip_prefix(b" ") {
                Some(rest) if strip_space && i == 0 => bytes.extend_from_slice(rest),
                _ => bytes.extend_from_slice(piece),
            }
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// The id of a vocabulary string (exact match on the raw string, see
    /// [`token_str`](Self::token_str)).
    pub fn token_id(&self, s: &str) -> Option<u32> {
        self.vocab.token_to_id.get(s).copied()
    }
}
