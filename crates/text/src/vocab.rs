//! What every tokenizer kind shares: the token strings and types, the special-token ids and
//! flags from GGUF metadata, and the split of text around special tokens.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use edgellm_formats::{GgufFile, Value};

use crate::TokenizerError;

/// The type of a vocabulary entry (`tokenizer.ggml.token_type`, llama.cpp's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TokenType {
    /// Type 0: not set.
    Undefined = 0,
    /// Type 1: an ordinary token of the model's text encoding.
    Normal = 1,
    /// Type 2: the unknown token.
    Unknown = 2,
    /// Type 3: a control token (`<|im_start|>`, BOS, EOS, ...), matched in text only on request.
    Control = 3,
    /// Type 4: a user-defined token, always matched in text before the model's own splitting.
    UserDefined = 4,
    /// Type 5: an unused slot.
    Unused = 5,
    /// Type 6: a byte token (`<0x0A>` in SentencePiece vocabularies).
    Byte = 6,
}

impl TokenType {
    fn from_i64(v: i64) -> Option<TokenType> {
        Some(match v {
            0 => TokenType::Undefined,
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }

    /// Whether text can contain this token's string as a special token (control, user-defined
    /// or unknown).
    pub fn is_special(self) -> bool {
        matches!(self, TokenType::Control | TokenType::UserDefined | TokenType::Unknown)
    }
}

/// Special tokens found by their text, as llama.cpp does for files whose metadata does not name
/// them (its `auto-detect special tokens by text`). Each found token is made a control token.
mod names {
    /// End of turn, when `tokenizer.ggml.eot_token_id` is absent (the first found is the EOT id).
    pub const EOT: &[&str] = &[
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "<｜end▁of▁sentence｜>",
        "<end_of_utterance>",
    ];
    /// End of message, when `tokenizer.ggml.eom_token_id` is absent.
    pub const EOM: &[&str] = &["<|eom_id|>"];
    /// Fill-in-the-middle prefix, suffix and middle markers: `(metadata key, names)`.
    pub const FIM: &[(&str, &[&str])] = &[
        (
            "tokenizer.ggml.fim_pre_token_id",
            &[
                "<|fim_prefix|>",
                "<fim-prefix>",
                "<fim_prefix>",
                "<｜fim▁begin｜>",
                "<PRE>",
                "▁<PRE>",
                "<|code_prefix|>",
                "<|prefix|>",
            ],
        ),
        (
            "tokenizer.ggml.fim_suf_token_id",
            &[
                "<|fim_suffix|>",
                "<fim-suffix>",
                "<fim_suffix>",
                "<｜fim▁hole｜>",
                "<SUF>",
                "▁<SUF>",
                "<|code_suffix|>",
                "<|suffix|>",
            ],
        ),
        (
            "tokenizer.ggml.fim_mid_token_id",
            &[
                "<|fim_middle|>",
                "<fim-middle>",
                "<fim_middle>",
                "<｜fim▁end｜>",
                "<MID>",
                "▁<MID>",
                "<|code_middle|>",
                "<|middle|>",
            ],
        ),
    ];
    /// Fill-in-the-middle pad, repository and file-separator markers, which also end generation.
    pub const FIM_STOP: &[(&str, &[&str])] = &[
        ("tokenizer.ggml.fim_pad_token_id", &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"]),
        (
            "tokenizer.ggml.fim_rep_token_id",
            &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
        ),
        ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
    ];
    /// Tokens that end generation, whatever the metadata says.
    pub const EOG: &[&str] = &[
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    ];
    /// gpt-oss markers that llama.cpp always renders: made user-defined.
    pub const ALWAYS_TEXT: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];
}

/// The hasher of [`Vocab::token_to_id`]: FxHash's multiply-rotate over 8-byte words, several
/// times faster than SipHash on the short slices a merge loop looks up. (The table holds the
/// model's own tokens, so input text cannot lengthen its probe chains.)
pub(crate) type TokenHash = BuildHasherDefault<FxHasher>;

/// See [`TokenHash`].
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The product's entropy is in its high bits; the table indexes by the low ones.
        self.0.rotate_left(26)
    }
}

/// A piece of input text after special tokens were cut out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Plain text, a byte range of the input.
    Text(Range<usize>),
    /// A special token found in the text.
    Token(u32),
}

/// The vocabulary and its special tokens.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    /// String to id; for a string listed twice the last id wins, as in llama.cpp.
    pub token_to_id: HashMap<String, u32, TokenHash>,
    /// Control, user-defined and unknown tokens, longest string first.
    specials: Vec<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    /// End-of-generation ids, sorted: EOS, EOT, EOM, the FIM pad/repo/file-separator tokens, and
    /// tokens with an end-of-turn name (`names::EOG`).
    pub eog: Vec<u32>,
    /// `tokenizer.ggml.add_bos_token`, if the file says.
    pub add_bos: Option<bool>,
    pub add_eos: bool,
}

fn invalid(key: &'static str, why: impl Into<String>) -> TokenizerError {
    TokenizerError::InvalidMetadata { key, why: why.into() }
}

/// A required array of strings.
pub(crate) fn str_array<'a>(f: &'a GgufFile, key: &'static str) -> Result<Vec<&'a str>, TokenizerError> {
    let arr = f.get(key).ok_or(TokenizerError::MissingKey(key))?;
    let arr = arr
        .as_array()
        .ok_or_else(|| invalid(key, format!("expected an array of strings, found {}", type_name(arr))))?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().ok_or_else(|| invalid(key, format!("element {i} is {}, not a string", type_name(v))))
        })
        .collect()
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Array(t, items) => format!("an array of {} {t:?}", items.len()),
        other => format!("{:?}", other.value_type()),
    }
}

/// An optional bool.
pub(crate) fn opt_bool(f: &GgufFile, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| invalid(key, format!("expected a bool, found {}", type_name(v)))),
    }
}

/// An optional token id, checked against the vocabulary. A negative id means "none".
fn opt_id(f: &GgufFile, key: &'static str, n_vocab: usize) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = f.get(key) else { return Ok(None) };
    let id =
        v.as_i64().ok_or_else(|| invalid(key, format!("expected an integer, found {}", type_name(v))))?;
    if id < 0 {
        return Ok(None);
    }
    if id as u64 >= n_vocab as u64 {
        return Err(TokenizerError::IdOutOfRange { key, id: id as u64, vocab_size: n_vocab });
    }
    Ok(Some(id as u32))
}

/// Special-token ids a tokenizer kind assumes when the metadata does not name them (llama.cpp's
/// per-kind defaults; an id outside the vocabulary is dropped).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DefaultIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
}

/// The 4-byte windows of a text, hashed into a 2^16-bit set: a pattern whose first or last four
/// bytes are not in the set does not occur in the text.
struct Windows(Vec<u64>);

impl Windows {
    const BITS: u32 = 16;

    fn hash(w: &[u8]) -> usize {
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        (w.wrapping_mul(0x9e37_79b1) >> (32 - Self::BITS)) as usize
    }

    fn of(text: &[u8]) -> Windows {
        let mut set = vec![0u64; (1 << Self::BITS) / 64];
        for w in text.windows(4) {
            let h = Self::hash(w);
            set[h / 64] |= 1 << (h % 64);
        }
        Windows(set)
    }

    fn has(&self, w: &[u8]) -> bool {
        let h = Self::hash(w);
        self.0[h / 64] & (1 << (h % 64)) != 0
    }

    /// False only if `pat` cannot occur in the text (patterns under 4 bytes always may).
    fn may_contain(&self, pat: &[u8]) -> bool {
        pat.len() < 4 || (self.has(&pat[..4]) && self.has(&pat[pat.len() - 4..]))
    }
}

impl Vocab {
    /// Read the vocabulary and special tokens from `tokenizer.ggml.*`; a special-token key that
    /// is absent takes its value from `defaults`.
    pub fn from_gguf(f: &GgufFile, defaults: DefaultIds) -> Result<Vocab, TokenizerError> {
        const TOKENS: &str = "tokenizer.ggml.tokens";
        const TYPES: &str = "tokenizer.ggml.token_type";
        let tokens: Vec<String> = str_array(f, TOKENS)?.into_iter().map(str::to_string).collect();
        let n = tokens.len();
        if n == 0 {
            return Err(invalid(TOKENS, "the vocabulary is empty"));
        }
        if n >= u32::MAX as usize {
            return Err(invalid(TOKENS, format!("{n} tokens do not fit 32-bit ids")));
        }
        let mut types = match f.get(TYPES) {
            // Files without types are all-normal, as llama.cpp reads them.
            None => vec![TokenType::Normal; n],
            Some(v) => {
                let arr = v.as_array().ok_or_else(|| {
                    invalid(TYPES, format!("expected an array of integers, found {}", type_name(v)))
                })?;
                if arr.len() != n {
                    return Err(invalid(TYPES, format!("{} entries for {n} tokens", arr.len())));
                }
                arr.iter()
                    .enumerate()
                    .map(|(i, t)| {
                        t.as_i64().and_then(TokenType::from_i64).ok_or_else(|| {
                            invalid(TYPES, format!("entry {i} ({t}) is not a token type 0..=6"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let mut token_to_id = HashMap::with_capacity_and_hasher(n, TokenHash::default());
        for (i, t) in tokens.iter().enumerate() {
            token_to_id.insert(t.clone(), i as u32);
        }

        let or_default = |key: &'static str, default: Option<u32>| -> Result<Option<u32>, TokenizerError> {
            if f.get(key).is_some() {
                opt_id(f, key, n)
            } else {
                Ok(default.filter(|&id| (id as usize) < n))
            }
        };
        let bos = or_default("tokenizer.ggml.bos_token_id", defaults.bos)?;
        let eos = or_default("tokenizer.ggml.eos_token_id", defaults.eos)?;
        let unk = or_default("tokenizer.ggml.unknown_token_id", defaults.unk)?;
        let pad = opt_id(f, "tokenizer.ggml.padding_token_id", n)?;

        // Special tokens the metadata names, else found by their text; those found by text
        // become control tokens (so parse_special matches them), as in llama.cpp.
        let mut find = |list: &[&str]| -> Option<u32> {
            let id = list.iter().find_map(|s| token_to_id.get(*s).copied())?;
            let t = &mut types[id as usize];
            if *t != TokenType::Unknown {
                *t = TokenType::Control;
            }
            Some(id)
        };
        let eot = match opt_id(f, "tokenizer.ggml.eot_token_id", n)? {
            Some(id) => Some(id),
            None => find(names::EOT),
        };
        let eom = match opt_id(f, "tokenizer.ggml.eom_token_id", n)? {
            Some(id) => Some(id),
            None => find(names::EOM),
        };
        for &(key, list) in names::FIM {
            if opt_id(f, key, n)?.is_none() {
                find(list);
            }
        }
        let mut eog = Vec::new();
        for &(key, list) in names::FIM_STOP {
            match opt_id(f, key, n)? {
                Some(id) => eog.push(id),
                None => eog.extend(find(list)),
            }
        }
        for name in names::EOG {
            eog.extend(find(&[name]));
        }
        eog.extend(eos.into_iter().chain(eot).chain(eom));
        eog.sort_unstable();
        eog.dedup();
        for name in names::ALWAYS_TEXT {
            if let Some(&id) = token_to_id.get(*name) {
                types[id as usize] = TokenType::UserDefined;
            }
        }

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| types[i as usize].is_special() && !tokens[i as usize].is_empty())
            .collect();
        specials.sort_by_key(|&i| (std::cmp::Reverse(tokens[i as usize].len()), i));

        Ok(Vocab {
            tokens,
            types,
            token_to_id,
            specials,
            bos,
            eos,
            eot,
            unk,
            pad,
            eog,
            add_bos: opt_bool(f, "tokenizer.ggml.add_bos_token")?,
            add_eos: opt_bool(f, "tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        })
    }

    /// Cut special tokens out of `text`, as llama.cpp's `tokenizer_st_partition` does: special
    /// tokens are taken longest first, each one split out of every remaining text fragment at all
    /// its (non-overlapping, leftmost-first) occurrences. Without `parse_special` only user-defined
    /// tokens are matched; control and unknown tokens stay text.
    pub fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = if text.is_empty() { Vec::new() } else { vec![Fragment::Text(0..text.len())] };
        let mut next = Vec::new();
        // Thousands of special tokens (Gemma's <unusedN>): rule most out in one pass.
        let windows = (self.specials.len() > 64 && !text.is_empty()).then(|| Windows::of(text.as_bytes()));
        for &id in &self.specials {
            let ty = self.types[id as usize];
            if !parse_special && ty != TokenType::UserDefined {
                continue;
            }
            let pat = self.tokens[id as usize].as_str();
            if windows.as_ref().is_some_and(|w| !w.may_contain(pat.as_bytes())) {
                continue;
            }
            if !frags.iter().any(|f| matches!(f, Fragment::Text(r) if text[r.clone()].contains(pat))) {
                continue;
            }
            next.clear();
            for f in &frags {
                let Fragment::Text(r) = f else {
                    next.push(f.clone());
                    continue;
                };
                let mut last = r.start;
                for (at, _) in text[r.clone()].match_indices(pat) {
                    let at = r.start + at;
                    if at > last {
                        next.push(Fragment::Text(last..at));
                    }
                    next.push(Fragment::Token(id));
                    last = at + pat.len();
                }
                if last < r.end {
                    next.push(Fragment::Text(last..r.end));
                }
            }
            std::mem::swap(&mut frags, &mut next);
        }
        frags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_never_rule_out_a_pattern_that_occurs() {
        let text = "ab<start_of_turn>user\nhi 设备端推理 <unused12>";
        let w = Windows::of(text.as_bytes());
        for i in 0..text.len() {
            for j in i + 1..=text.len() {
                if text.is_char_boundary(i) && text.is_char_boundary(j) {
                    assert!(w.may_contain(&text.as_bytes()[i..j]), "{:?}", &text[i..j]);
                }
            }
        }
        assert!(!w.may_contain(b"<end_of_turn>"));
        assert!(!w.may_contain(b"<unused13>"));
        assert!(w.may_contain(b"<s>"), "short patterns are always scanned");
    }

    #[test]
    fn fx_hasher_tells_tails_apart() {
        let h = |s: &str| {
            let mut f = FxHasher::default();
            f.write(s.as_bytes());
            f.finish()
        };
        assert_ne!(h("a"), h("a\0"));
        assert_ne!(h("abcdefgh"), h("abcdefgh\0"));
        assert_ne!(h("\u{2581}the"), h("\u{2581}The"));
    }
}
