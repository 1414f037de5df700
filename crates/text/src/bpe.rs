//! Byte-level BPE (GPT-2 style, `tokenizer.ggml.model = "gpt2"`).
//!
//! Each pre-tokenizer word is taken as bytes; each byte starts as the token of its character in
//! GPT-2's byte alphabet ([`BYTE_TO_CHAR`]); then, as in llama.cpp's `llm_tokenizer_bpe_session`,
//! the adjacent pair with the lowest merge rank (leftmost on ties) is merged until no listed pair
//! remains. Merge rules are held as token-id pairs, so a merge step is one hash lookup.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use edgellm_formats::GgufFile;

use crate::pretok::PreTokenizer;
use crate::unicode::{decode_byte_level, BYTE_TO_CHAR};
use crate::vocab::{str_array, TokenType, Vocab};
use crate::TokenizerError;

/// No token: a byte whose alphabet character is missing from the vocabulary.
const NONE: u32 = u32::MAX;
/// Words cached at most (the cache is emptied when full).
const CACHE_MAX_WORDS: usize = 1 << 16;
/// Longer words are not cached.
const CACHE_MAX_WORD_LEN: usize = 64;

/// A merge rule: its rank (position in `tokenizer.ggml.merges`) and the token it produces.
#[derive(Clone, Copy, Debug)]
struct Merge {
    rank: u32,
    id: u32,
}

/// A byte-level BPE model.
pub(crate) struct BpeModel {
    pre: PreTokenizer,
    /// Whether the pre-tokenizer's models want BOS when the file does not say.
    pub add_bos_default: bool,
    merges: HashMap<(u32, u32), Merge>,
    /// The token of each byte's alphabet character ([`NONE`] if absent).
    byte_ids: [u32; 256],
    /// Word (raw bytes of one pre-token) to its tokens.
    cache: Mutex<HashMap<Box<str>, Box<[u32]>>>,
}

impl std::fmt::Debug for BpeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpeModel")
            .field("pre", &self.pre)
            .field("merges", &self.merges.len())
            .finish_non_exhaustive()
    }
}

/// A symbol of the word being merged: a doubly linked list over the word's bytes.
#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    prev: u32,
    next: u32,
    dead: bool,
}

/// End of the symbol list.
const END: u32 = u32::MAX;

impl BpeModel {
    /// Build from `tokenizer.ggml.merges` and `tokenizer.ggml.pre` (llama.cpp's "default" when
    /// absent).
    pub fn from_gguf(f: &GgufFile, vocab: &Vocab) -> Result<BpeModel, TokenizerError> {
        const PRE: &str = "tokenizer.ggml.pre";
        let pre_name = match f.get(PRE) {
            None => "default",
            Some(v) => v.as_str().ok_or_else(|| TokenizerError::InvalidMetadata {
                key: PRE,
                why: format!("expected a string, found {v}"),
            })?,
        };
        let pre = PreTokenizer::by_name(pre_name)?;
        let merges = str_array(f, "tokenizer.ggml.merges")?;
        let mut model = Self::new(vocab, pre, &merges)?;
        model.add_bos_default = crate::pretok::spec(pre_name).is_some_and(|s| s.add_bos);
        Ok(model)
    }

    /// Build from merge rules written `"left right"`, in rank order.
    pub fn new(vocab: &Vocab, pre: PreTokenizer, rules: &[&str]) -> Result<BpeModel, TokenizerError> {
        let mut merges = HashMap::with_capacity(rules.len());
        let id_of = |index: usize, rule: &str, part: &str| {
            vocab.token_to_id.get(part).copied().ok_or_else(|| TokenizerError::BadMerge {
                index,
                merge: rule.to_string(),
                why: format!("{part:?} is not in the vocabulary"),
            })
        };
        for (index, &rule) in rules.iter().enumerate() {
            // Split at the first space after the first byte, as llama.cpp does.
            let Some(sp) = rule.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                return Err(TokenizerError::BadMerge {
                    index,
                    merge: rule.to_string(),
                    why: "expected two tokens separated by a space".into(),
                });
            };
            let (left, right) = (&rule[..sp], &rule[sp + 1..]);
            let l = id_of(index, rule, left)?;
            let r = id_of(index, rule, right)?;
            let id = id_of(index, rule, &format!("{left}{right}"))?;
            // A rule listed twice keeps its first (lowest) rank.
            merges.entry((l, r)).or_insert(Merge { rank: index as u32, id });
        }
        let mut byte_ids = [NONE; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let mut buf = [0u8; 4];
            if let Some(&id) = vocab.token_to_id.get(&*BYTE_TO_CHAR[b].encode_utf8(&mut buf)) {
                *slot = id;
            }
        }
        Ok(BpeModel { pre, add_bos_default: false, merges, byte_ids, cache: Mutex::new(HashMap::new()) })
    }

    /// Tokenize plain text (no special tokens), appending to `out`.
    pub fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut scratch = Scratch::default();
        for word in self.pre.split(text) {
            self.encode_word(vocab, &text[word], out, &mut scratch);
        }
    }

    fn encode_word(&self, vocab: &Vocab, word: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        if word.len() == 1 {
            push_known(out, self.byte_ids[word.as_bytes()[0] as usize]);
            return;
        }
        if self.pre.ignore_merges {
            let mapped: String = word.bytes().map(|b| BYTE_TO_CHAR[b as usize]).collect();
            if let Some(&id) = vocab.token_to_id.get(&mapped) {
                out.push(id);
                return;
            }
        }
        let cacheable = word.len() <= CACHE_MAX_WORD_LEN;
        if cacheable {
            if let Some(ids) = self.lock_cache().get(word) {
                out.extend_from_slice(ids);
                return;
            }
        }
        let start = out.len();
        self.merge_word(word.as_bytes(), out, scratch);
        if cacheable {
            let mut cache = self.lock_cache();
            if cache.len() >= CACHE_MAX_WORDS {
                cache.clear();
            }
            cache.insert(word.into(), out[start..].into());
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Box<[u32]>>> {
        // The cache holds only finished results; one poisoned by a panic elsewhere is still valid.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The merge loop on one word.
    fn merge_word(&self, bytes: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let n = bytes.len() as u32;
        let syms = &mut scratch.syms;
        syms.clear();
        syms.extend(bytes.iter().enumerate().map(|(i, &b)| Sym {
            id: self.byte_ids[b as usize],
            prev: if i == 0 { END } else { i as u32 - 1 },
            next: if i as u32 + 1 == n { END } else { i as u32 + 1 },
            dead: false,
        }));
        let heap = &mut scratch.heap;
        heap.clear();
        let candidate = |syms: &[Sym], left: u32, right: u32| {
            if left == END || right == END {
                return None;
            }
            let (left_id, right_id) = (syms[left as usize].id, syms[right as usize].id);
            let m = self.merges.get(&(left_id, right_id))?;
            Some(Reverse(Candidate { rank: m.rank, left, right, left_id, right_id }))
        };
        for i in 1..n {
            heap.extend(candidate(syms, i - 1, i));
        }
        while let Some(Reverse(Candidate { left: l, right: r, left_id: a, right_id: b, .. })) = heap.pop() {
            let (ls, rs) = (syms[l as usize], syms[r as usize]);
            // Skip a candidate made stale by an earlier merge on either side.
            if ls.dead || rs.dead || ls.id != a || rs.id != b || ls.next != r {
                continue;
            }
            let merged = self.merges[&(a, b)].id;
            syms[l as usize].id = merged;
            syms[l as usize].next = rs.next;
            syms[r as usize].dead = true;
            if rs.next != END {
                syms[rs.next as usize].prev = l;
            }
            heap.extend(candidate(syms, ls.prev, l));
            heap.extend(candidate(syms, l, rs.next));
        }
        let mut i = 0;
        while i != END && !syms.is_empty() {
            push_known(out, syms[i as usize].id);
            i = syms[i as usize].next;
        }
    }

    /// The bytes a token stands for.
    pub fn token_bytes(vocab: &Vocab, id: u32, out: &mut Vec<u8>) {
        let text = &vocab.tokens[id as usize];
        match vocab.types[id as usize] {
            TokenType::Normal | TokenType::Byte | TokenType::Undefined => decode_byte_level(text, out),
            // Added tokens are stored as plain text, not in the byte alphabet.
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown | TokenType::Unused => {
                out.extend_from_slice(text.as_bytes())
            }
        }
    }
}

/// Push a token unless it is [`NONE`]: like llama.cpp, a byte whose character is missing from
/// the vocabulary is dropped (no vocabulary of a real model lacks a byte that UTF-8 text uses).
fn push_known(out: &mut Vec<u32>, id: u32) {
    if id != NONE {
        out.push(id);
    }
}

/// Buffers reused across the words of one call.
#[derive(Default)]
struct Scratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Reverse<Candidate>>,
}

/// A pair of adjacent symbols that a merge rule joins. Ordered by rank, then by position, so the
/// heap pops the lowest rank, leftmost first (llama.cpp's `llm_bigram_bpe` order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: u32,
    right: u32,
    /// The tokens the pair held when queued; a later merge that changed either makes it stale.
    left_id: u32,
    right_id: u32,
}
