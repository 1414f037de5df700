//! Pre-tokenizers: how text is cut into words before BPE merges run inside each word.
//!
//! A pre-tokenizer is a sequence of splits, as in llama.cpp (`llm_tokenizer_bpe`): the first split
//! cuts the text into segments, each following split cuts every segment on its own (a later split
//! never joins or looks across an earlier cut). A split keeps both what its pattern matches and the
//! text between matches, so no character is ever dropped.
//!
//! Adding a pre-tokenizer is one [`TABLE`] entry: the names `tokenizer.ggml.pre` may carry and the
//! split patterns (the regexes llama.cpp uses for them). Patterns for which a hand-written splitter
//! exists run without a regex engine; the rest run on `fancy-regex` (which handles look-ahead).

use std::ops::Range;

use crate::unicode::{self, LETTER, NUMBER, WHITESPACE};
use crate::TokenizerError;

/// GPT-2's pattern.
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// GPT-2's pattern with a trailing `\s+` alternative (as some tokenizer.json files write it). It
/// splits exactly as [`GPT2_PATTERN`] does: a whitespace character that pattern leaves unmatched
/// is kept as its own segment, which is what the last alternative would have matched.
pub const GPT2_WS_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Every number character on its own.
pub const EACH_NUMBER_PATTERN: &str = r"\p{N}";
/// Llama 3's pattern as llama.cpp writes it (the case-insensitive group spelled out).
pub const LLAMA3_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's pattern: Llama 3's with single digits.
pub const QWEN2_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 3.5's pattern: Qwen 2's with combining marks inside words.
pub const QWEN35_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Runs of punctuation and some ASCII symbols (the first split of llama.cpp's default).
const PUNCT_PATTERN: &str = r"[\p{P}\$\+<=>\^~\|]+";
/// Falcon's first split: [`PUNCT_PATTERN`] with the backtick.
const FALCON_PUNCT_PATTERN: &str = r"[\p{P}\$\+<=>\^~\|`]+";

/// One pre-tokenizer of the table.
pub struct PreTokenizerSpec {
    /// Values of `tokenizer.ggml.pre` that select it.
    pub names: &'static [&'static str],
    /// The split patterns, applied in order.
    pub patterns: &'static [&'static str],
    /// Whether a word found whole in the vocabulary is emitted as that token without merging
    /// (llama.cpp's `ignore_merges`, set for Llama 3).
    pub ignore_merges: bool,
    /// Whether a BOS token is wanted when the file has no `tokenizer.ggml.add_bos_token`.
    pub add_bos: bool,
}

/// The pre-tokenizers known to this crate: llama.cpp's names and patterns (as of the libllama in
/// llama-cpp-python 0.3.36).
///
/// Checked against that llama.cpp's token ids: "smollm" on SmolLM2 (this crate's tests), and
/// "gpt-2", "llama-bpe", "qwen2", "qwen35", "starcoder", "refact", "command-r", "mpt", "falcon"
/// and the default (files naming none) on llama.cpp's own test vocabularies (`ggml-vocab-*.gguf`).
pub static TABLE: &[PreTokenizerSpec] = &[
    PreTokenizerSpec {
        names: &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        patterns: &[EACH_NUMBER_PATTERN, GPT2_PATTERN],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        // "gpt2" is not a llama.cpp name; it is accepted as an alias of "gpt-2".
        names: &[
            "gpt-2",
            "gpt2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
        patterns: &[GPT2_PATTERN],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        // llama.cpp's fallback for BPE files that name no pre-tokenizer.
        names: &["default"],
        patterns: &[PUNCT_PATTERN, GPT2_PATTERN, r"\p{N}+", r"[0-9][0-9][0-9]"],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        names: &["falcon"],
        patterns: &[FALCON_PUNCT_PATTERN, GPT2_PATTERN, r"[0-9][0-9][0-9]"],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        names: &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        patterns: &[LLAMA3_PATTERN],
        ignore_merges: true,
        add_bos: true,
    },
    PreTokenizerSpec {
        names: &["dbrx", "smaug-bpe"],
        patterns: &[LLAMA3_PATTERN],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        names: &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "stablelm2",
            "hunyuan",
            "megrez",
            "solar-open",
        ],
        patterns: &[QWEN2_PATTERN],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        names: &["qwen35"],
        patterns: &[QWEN35_PATTERN],
        ignore_merges: false,
        add_bos: false,
    },
];

/// The table entry for a `tokenizer.ggml.pre` value.
pub fn spec(name: &str) -> Option<&'static PreTokenizerSpec> {
    TABLE.iter().find(|s| s.names.contains(&name))
}

/// Every `tokenizer.ggml.pre` value of the table.
pub fn supported_names() -> Vec<&'static str> {
    TABLE.iter().flat_map(|s| s.names.iter().copied()).collect()
}

/// One split step.
enum Split {
    /// Hand-written [`GPT2_PATTERN`] (and [`GPT2_WS_PATTERN`], which splits the same).
    Gpt2,
    /// Hand-written [`EACH_NUMBER_PATTERN`].
    EachNumber,
    /// Any other pattern.
    Regex(Box<fancy_regex::Regex>),
}

/// A compiled pre-tokenizer.
pub struct PreTokenizer {
    name: String,
    splits: Vec<Split>,
    /// See [`PreTokenizerSpec::ignore_merges`].
    pub ignore_merges: bool,
}

impl std::fmt::Debug for PreTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreTokenizer").field("name", &self.name).finish_non_exhaustive()
    }
}

impl PreTokenizer {
    /// The pre-tokenizer named `name` (a `tokenizer.ggml.pre` value).
    pub fn by_name(name: &str) -> Result<PreTokenizer, TokenizerError> {
        let spec = spec(name).ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(name.to_string()))?;
        Self::from_patterns(name, spec.patterns, spec.ignore_merges)
    }

    /// A pre-tokenizer from split patterns (hand-written splitters are used where one exists).
    pub fn from_patterns(
        name: &str,
        patterns: &[&'static str],
        ignore_merges: bool,
    ) -> Result<PreTokenizer, TokenizerError> {
        let splits = patterns
            .iter()
            .map(|&p| match p {
                GPT2_PATTERN | GPT2_WS_PATTERN => Ok(Split::Gpt2),
                EACH_NUMBER_PATTERN => Ok(Split::EachNumber),
                _ => Self::regex(name, p),
            })
            .collect::<Result<_, _>>()?;
        Ok(PreTokenizer { name: name.to_string(), splits, ignore_merges })
    }

    /// Like [`from_patterns`](Self::from_patterns) but every pattern runs on the regex engine:
    /// the oracle the hand-written splitters are tested against.
    pub fn regex_only(name: &str, patterns: &[&'static str]) -> Result<PreTokenizer, TokenizerError> {
        let splits = patterns.iter().map(|&p| Self::regex(name, p)).collect::<Result<_, _>>()?;
        Ok(PreTokenizer { name: name.to_string(), splits, ignore_merges: false })
    }

    fn regex(name: &str, pattern: &'static str) -> Result<Split, TokenizerError> {
        fancy_regex::Regex::new(pattern)
            .map(|r| Split::Regex(Box::new(r)))
            .map_err(|e| TokenizerError::Regex { name: name.to_string(), pattern, source: Box::new(e) })
    }

    /// The name it was built under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cut `text` into words: byte ranges of `text`, in order, covering it exactly.
    pub fn split(&self, text: &str) -> Vec<Range<usize>> {
        let mut segs = Vec::new();
        if !text.is_empty() {
            segs.push(0..text.len());
        }
        let mut next = Vec::with_capacity(segs.len());
        let mut chars = Vec::new();
        for split in &self.splits {
            next.clear();
            for seg in &segs {
                match split {
                    Split::Gpt2 => split_gpt2(text, seg.clone(), &mut chars, &mut next),
                    Split::EachNumber => split_each_number(text, seg.clone(), &mut next),
                    Split::Regex(re) => split_regex(re, text, seg.clone(), &mut next),
                }
            }
            std::mem::swap(&mut segs, &mut next);
        }
        segs
    }
}

/// Matches of `re` within `seg`, and the text between them, as segments.
fn split_regex(re: &fancy_regex::Regex, text: &str, seg: Range<usize>, out: &mut Vec<Range<usize>>) {
    let s = &text[seg.clone()];
    let mut last = 0;
    let mut pos = 0;
    while pos <= s.len() {
        // A regex error here is the backtracking limit, on pathological input: keep the rest whole.
        let Ok(Some(m)) = re.find_from_pos(s, pos) else { break };
        if m.start() > last {
            out.push(seg.start + last..seg.start + m.start());
        }
        if m.end() > m.start() {
            out.push(seg.start + m.start()..seg.start + m.end());
            last = m.end();
            pos = m.end();
        } else {
            // An empty match: step over one character.
            last = m.start();
            pos = m.start() + s[m.start()..].chars().next().map_or(1, char::len_utf8);
        }
    }
    if last < s.len() {
        out.push(seg.start + last..seg.end);
    }
}

/// Every `\p{N}` character its own segment; runs of other characters are segments.
fn split_each_number(text: &str, seg: Range<usize>, out: &mut Vec<Range<usize>>) {
    let mut run_start = seg.start;
    for (i, c) in text[seg.clone()].char_indices() {
        if unicode::is_number(c) {
            let at = seg.start + i;
            if at > run_start {
                out.push(run_start..at);
            }
            run_start = at + c.len_utf8();
            out.push(at..run_start);
        }
    }
    if run_start < seg.end {
        out.push(run_start..seg.end);
    }
}

/// [`GPT2_PATTERN`] by hand, the way llama.cpp's `unicode_regex_split_custom_gpt2` reads it:
/// at each position the first alternative that matches wins; a character no alternative matches
/// (one whitespace before a non-space) is a segment of its own.
fn split_gpt2(text: &str, seg: Range<usize>, chars: &mut Vec<(usize, char)>, out: &mut Vec<Range<usize>>) {
    chars.clear();
    chars.extend(text[seg.clone()].char_indices().map(|(i, c)| (seg.start + i, c)));
    let n = chars.len();
    let ch = |i: usize| chars.get(i).map(|&(_, c)| c);
    // Flags of the character at `i`; `None` past the end of the segment.
    let fl = |i: usize| chars.get(i).map(|&(_, c)| unicode::flags(c));
    let offset = |i: usize| if i < n { chars[i].0 } else { seg.end };

    let mut pos = 0;
    while pos < n {
        let start = pos;
        let c = chars[pos].1;
        // 's|'t|'re|'ve|'m|'ll|'d
        if c == '\'' {
            match (ch(pos + 1), ch(pos + 2)) {
                (Some('s' | 't' | 'm' | 'd'), _) => pos += 2,
                (Some('r' | 'v'), Some('e')) | (Some('l'), Some('l')) => pos += 3,
                _ => {}
            }
            if pos > start {
                out.push(offset(start)..offset(pos));
                continue;
            }
        }
        // The class of the character after an optional leading space.
        let lead = if c == ' ' { fl(pos + 1) } else { fl(pos) };
        let word_class = match lead {
            Some(LETTER) => Some(LETTER),
            Some(NUMBER) => Some(NUMBER),
            Some(0) => Some(0), // [^\s\p{L}\p{N}]
            _ => None,          // whitespace, or a lone space at the end
        };
        if let Some(class) = word_class {
            // ` ?\p{L}+`, ` ?\p{N}+` or ` ?[^\s\p{L}\p{N}]+`
            if c == ' ' {
                pos += 1;
            }
            while fl(pos) == Some(class) {
                pos += 1;
            }
            out.push(offset(start)..offset(pos));
            continue;
        }
        let mut ws = 0;
        while fl(pos + ws) == Some(WHITESPACE) {
            ws += 1;
        }
        if ws > 1 && pos + ws < n {
            // \s+(?!\S): leave the last whitespace to prefix the word that follows.
            pos += ws - 1;
        } else if ws > 0 {
            // \s+
            pos += ws;
        } else {
            pos += 1;
        }
        out.push(offset(start)..offset(pos));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words<'a>(p: &PreTokenizer, s: &'a str) -> Vec<&'a str> {
        p.split(s).into_iter().map(|r| &s[r]).collect()
    }

    #[test]
    fn smollm_splits_digits_and_words() {
        let p = PreTokenizer::by_name("smollm").unwrap();
        assert_eq!(words(&p, "numbers 123 x"), ["numbers", " ", "1", "2", "3", " x"]);
        assert_eq!(words(&p, "I'm   here\n\n"), ["I", "'m", "  ", " here", "\n\n"]);
        assert_eq!(words(&p, "a!!  b"), ["a", "!!", " ", " b"]);
        assert!(words(&p, "").is_empty());
    }

    #[test]
    fn every_table_entry_compiles() {
        for spec in TABLE {
            for name in spec.names {
                PreTokenizer::by_name(name).unwrap();
            }
        }
        assert!(matches!(
            PreTokenizer::by_name("no-such-pre"),
            Err(TokenizerError::UnsupportedPreTokenizer(n)) if n == "no-such-pre"
        ));
    }

    /// The hand-written splitters against the regex engine on the same patterns.
    #[test]
    fn hand_written_splitters_match_regex() {
        let samples = [
            "Hello world",
            "  leading spaces and trailing   ",
            "tabs\tand\nnewlines\n\n",
            "numbers 1234567890 3.14159 -42 ²³ ٣٤",
            "I'm sure you'll see it's what we've done 'RE 'x '",
            "Ünïcödé façade naïve café e\u{301}",
            "设备端推理：大语言模型在边缘设备上的应用",
            "emoji 🙂👍🏽🚀 and symbols ©®™",
            "<|im_start|>user\nhi<|im_end|>",
            " \t \n  x  \u{3000}y\u{a0} z \u{85}",
            "a  ",
            " ",
            "'",
            "x' ",
            "!!! ?? ...\r\n\r\n",
        ];
        for patterns in
            [&[EACH_NUMBER_PATTERN, GPT2_PATTERN][..], &[GPT2_PATTERN][..], &[GPT2_WS_PATTERN][..]]
        {
            let fast = PreTokenizer::from_patterns("t", patterns, false).unwrap();
            let oracle = PreTokenizer::regex_only("t", patterns).unwrap();
            for s in samples {
                assert_eq!(fast.split(s), oracle.split(s), "{patterns:?} on {s:?}");
            }
        }
    }

    #[test]
    fn splits_cover_the_text() {
        for spec in TABLE {
            let p = PreTokenizer::by_name(spec.names[0]).unwrap();
            let s = "It's 2024: résumé\t\tof 12345 items!!\n\n  done  ";
            let segs = p.split(s);
            assert_eq!(segs.first().unwrap().start, 0);
            assert_eq!(segs.last().unwrap().end, s.len());
            assert!(segs.windows(2).all(|w| w[0].end == w[1].start && w[0].start < w[0].end));
        }
    }
}
