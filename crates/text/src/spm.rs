//! SentencePiece-style tokenizer (`tokenizer.ggml.model = "llama"`: Llama 1/2, Mistral v0.1,
//! Gemma 1-3), following llama.cpp's `llm_tokenizer_spm_session`, itself a port of
//! SentencePiece's BPE model (Kudo & Richardson 2018, "SentencePiece: A simple and language
//! independent subword tokenizer").
//!
//! A text fragment (what is left between special tokens) has every space written as `▁`
//! (U+2581), with one `▁` put first when `tokenizer.ggml.add_space_prefix` asks (not for Gemma 3).
//! It starts as one symbol per character. Then, repeatedly, the adjacent pair whose concatenation
//! is a vocabulary entry with the highest score (`tokenizer.ggml.scores`; leftmost on ties) is
//! merged, until no adjacent pair forms a vocabulary entry. A symbol that is not a vocabulary entry
//! (a character the vocabulary lacks) becomes one byte token `<0xXX>` per UTF-8 byte.
//!
//! There is no pre-tokenizer: a whole fragment is merged at once, so the candidates live in a
//! binary heap (stale ones are skipped when popped) and a merge step costs one hash lookup of a
//! slice of the escaped text, never an allocation.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use edgellm_formats::GgufFile;

use crate::vocab::{opt_bool, TokenType, Vocab};
use crate::TokenizerError;

/// No token.
const NONE: u32 = u32::MAX;
/// End of the symbol list.
const END: u32 = u32::MAX;
/// The escaped space, U+2581 LOWER ONE EIGHTH BLOCK.
pub(crate) const SPACE: &str = "\u{2581}";
/// Longest fragment merged at once, in bytes: escaped (a space becomes 3 bytes, plus a 3-byte
/// prefix) its positions still fit `u32`.
const MAX_FRAGMENT: usize = (u32::MAX as usize - 3) / 3;

/// A SentencePiece-style model: token scores, the byte-fallback tokens and the space flag.
pub(crate) struct SpmModel {
    /// Merge priority of each token: its score, -0.0 made 0.0 and NaN made -inf so that floats
    /// order totally and as llama.cpp's `<` orders them.
    scores: Vec<f32>,
    /// Whether a fragment that starts the text or follows a special token gets a leading `▁`
    /// (`tokenizer.ggml.add_space_prefix`, default true as in llama.cpp).
    pub add_space_prefix: bool,
    /// The token of each byte: `<0xXX>`, else the one-byte string (ASCII only), else [`NONE`].
    byte_ids: [u32; 256],
    /// What a byte without a token becomes (`tokenizer.ggml.unknown_token_id`), else dropped.
    unk: Option<u32>,
    /// Longest token in bytes: a longer pair is not looked up.
    max_token_len: usize,
}

impl std::fmt::Debug for SpmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpmModel")
            .field("add_space_prefix", &self.add_space_prefix)
            .field("byte_tokens", &self.byte_ids.iter().filter(|&&i| i != NONE).count())
            .field("unk", &self.unk)
            .finish_non_exhaustive()
    }
}

/// One symbol of the text being merged: a byte range of the escaped text, in a doubly linked
/// list. `len == 0` marks a symbol merged into its left neighbour.
#[derive(Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
    /// The vocabulary entry of the symbol's text, or [`NONE`].
    id: u32,
}

/// A pair of adjacent symbols whose text is a vocabulary entry. The heap pops the highest score
/// first, then the leftmost (llama.cpp's `llm_bigram_spm` order).
#[derive(Clone, Copy)]
struct Candidate {
    score: f32,
    left: u32,
    right: u32,
    /// Bytes of the pair when queued: if either symbol grew since, the pair is stale.
    size: u32,
    id: u32,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Scores are normalized (no NaN, no -0.0), so total_cmp agrees with `<`.
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// Buffers of one call.
#[derive(Default)]
pub(crate) struct Scratch {
    escaped: String,
    syms: Vec<Sym>,
    heap: BinaryHeap<Candidate>,
}

impl SpmModel {
    /// Build from `tokenizer.ggml.scores` (all 0 when absent, as llama.cpp reads such files) and
    /// `tokenizer.ggml.add_space_prefix`.
    pub fn from_gguf(f: &GgufFile, vocab: &Vocab) -> Result<SpmModel, TokenizerError> {
        const SCORES: &str = "tokenizer.ggml.scores";
        let n = vocab.tokens.len();
        let scores = match f.get(SCORES) {
            None => vec![0.0; n],
            Some(v) => {
                let arr = v.as_array().ok_or_else(|| TokenizerError::InvalidMetadata {
                    key: SCORES,
                    why: format!("expected an array of numbers, found {:?}", v.value_type()),
                })?;
                if arr.len() != n {
                    return Err(TokenizerError::InvalidMetadata {
                        key: SCORES,
                        why: format!("{} scores for {n} tokens", arr.len()),
                    });
                }
                arr.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        s.as_f64().map(|s| s as f32).ok_or_else(|| TokenizerError::InvalidMetadata {
                            key: SCORES,
                            why: format!("entry {i} ({s}) is not a number"),
                        })
                    })
                    .collect::<Result<Vec<f32>, _>>()?
            }
        };
        let add_space_prefix = opt_bool(f, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        Ok(SpmModel::new(vocab, scores, add_space_prefix))
    }

    /// Build from per-token scores (one per vocabulary entry).
    pub fn new(vocab: &Vocab, scores: Vec<f32>, add_space_prefix: bool) -> SpmModel {
        let scores =
            scores.into_iter().map(|s| if s.is_nan() { f32::NEG_INFINITY } else { s + 0.0 }).collect();
        let mut byte_ids = [NONE; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            let single = (b < 0x80).then(|| char::from(b as u8).to_string());
            *slot = vocab
                .token_to_id
                .get(&hex)
                .or_else(|| single.and_then(|s| vocab.token_to_id.get(&s)))
                .copied()
                .unwrap_or(NONE);
        }
        let max_token_len = vocab.tokens.iter().map(String::len).max().unwrap_or(0);
        SpmModel { scores, add_space_prefix, byte_ids, unk: vocab.unk, max_token_len }
    }

    /// Tokenize one text fragment (no special tokens in it), appending to `out`. `prefix_space`
    /// puts a `▁` first (the fragment starts the text or follows a special token, and
    /// [`add_space_prefix`](Self::add_space_prefix) is set).
    pub fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        prefix_space: bool,
        out: &mut Vec<u32>,
        scratch: &mut Scratch,
    ) {
        if text.len() > MAX_FRAGMENT {
            // Positions are 32-bit: cut at a character boundary (the ids can only differ at the
            // cut, on a text no model can take anyway).
            let mut cut = text.len() / 2;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.encode(vocab, &text[..cut], prefix_space, out, scratch);
            self.encode(vocab, &text[cut..], false, out, scratch);
            return;
        }
        let s = &mut scratch.escaped;
        s.clear();
        if prefix_space {
            s.push_str(SPACE);
        }
        let mut rest = text;
        while let Some(at) = rest.find(' ') {
            s.push_str(&rest[..at]);
            s.push_str(SPACE);
            rest = &rest[at + 1..];
        }
        s.push_str(rest);
        let s: &str = s;
        if s.is_empty() {
            return;
        }
        // At most 3 bytes per input byte plus the prefix: fits (see MAX_FRAGMENT).
        let total = s.len() as u32;

        let syms = &mut scratch.syms;
        syms.clear();
        for (i, (at, c)) in s.char_indices().enumerate() {
            let len = c.len_utf8() as u32;
            let at = at as u32;
            syms.push(Sym {
                start: at,
                len,
                prev: if i == 0 { END } else { i as u32 - 1 },
                next: if at + len == total { END } else { i as u32 + 1 },
                id: vocab.token_to_id.get(&s[at as usize..(at + len) as usize]).copied().unwrap_or(NONE),
            });
        }

        let heap = &mut scratch.heap;
        heap.clear();
        let candidate = |syms: &[Sym], left: u32, right: u32| -> Option<Candidate> {
            if left == END || right == END {
                return None;
            }
            let (l, r) = (syms[left as usize], syms[right as usize]);
            let size = l.len + r.len;
            if size as usize > self.max_token_len {
                return None;
            }
            let id = *vocab.token_to_id.get(&s[l.start as usize..(l.start + size) as usize])?;
            Some(Candidate { score: self.scores[id as usize], left, right, size, id })
        };
        for i in 1..syms.len() as u32 {
            heap.extend(candidate(syms, i - 1, i));
        }
        while let Some(c) = heap.pop() {
            let (l, r) = (syms[c.left as usize], syms[c.right as usize]);
            // A symbol only grows, and the right one of a live pair is still the left one's
            // neighbour: the pair is current exactly when both are alive at their queued sizes.
            if l.len == 0 || r.len == 0 || l.len + r.len != c.size {
                continue;
            }
            let left = &mut syms[c.left as usize];
            left.len = c.size;
            left.id = c.id;
            left.next = r.next;
            syms[c.right as usize].len = 0;
            if r.next != END {
                syms[r.next as usize].prev = c.left;
            }
            heap.extend(candidate(syms, l.prev, c.left));
            heap.extend(candidate(syms, c.left, r.next));
        }

        let mut i = 0;
        while i != END {
            let sym = syms[i as usize];
            if sym.id != NONE {
                out.push(sym.id);
            } else {
                // Byte fallback: one token per UTF-8 byte.
                for &b in &s.as_bytes()[sym.start as usize..(sym.start + sym.len) as usize] {
                    match self.byte_ids[b as usize] {
                        NONE => out.extend(self.unk),
                        id => out.push(id),
                    }
                }
            }
            i = sym.next;
        }
    }

    /// The bytes a token stands for: `▁` as a space in normal tokens, the byte of a byte token,
    /// the text of control, unknown and user-defined tokens, nothing for unused and undefined
    /// ones (llama.cpp's `token_to_piece` for SPM).
    pub fn token_bytes(vocab: &Vocab, id: u32, out: &mut Vec<u8>) {
        let text = vocab.tokens[id as usize].as_str();
        match vocab.types[id as usize] {
            TokenType::Normal => out.extend_from_slice(text.replace(SPACE, " ").as_bytes()),
            TokenType::Byte => match parse_byte_token(text) {
                Some(b) => out.push(b),
                // Not of the form <0xXX>: its text (llama.cpp would read garbage).
                None => out.extend_from_slice(text.as_bytes()),
            },
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => {
                out.extend_from_slice(text.as_bytes())
            }
            TokenType::Unused | TokenType::Undefined => {}
        }
    }
}

/// The byte of a `<0xXX>` token.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xff>"), Some(255));
        assert_eq!(parse_byte_token("<0x1>"), None);
        assert_eq!(parse_byte_token("<0xZZ>"), None);
        assert_eq!(parse_byte_token("0x41"), None);
    }

    #[test]
    fn candidates_pop_highest_score_then_leftmost() {
        let c = |score, left| Candidate { score, left, right: left + 1, size: 2, id: 0 };
        let mut h: BinaryHeap<Candidate> = [c(-1.0, 0), c(2.0, 5), c(2.0, 3), c(0.0, 1)].into();
        let order: Vec<u32> = std::iter::from_fn(|| h.pop().map(|c| c.left)).collect();
        assert_eq!(order, [3, 5, 1, 0]);
    }
}
