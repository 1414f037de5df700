//! Tokenizers built from small GGUF files made in memory: merge order on toy vocabularies
//! (byte-level BPE and SentencePiece-style), and bad metadata giving a [`TokenizerError`] rather
//! than a panic.

mod common;

use edgellm_formats::{GgufFile, GgufWriter, Value, ValueType};
use edgellm_text::unicode::BYTE_TO_CHAR;
use edgellm_text::{ChatTemplate, ChatTemplateError, Tokenizer, TokenizerError};

fn strings(v: &[&str]) -> Value {
    Value::Array(ValueType::String, v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A toy byte-level vocabulary: three control tokens, the 256 byte characters, then merged tokens.
fn toy_tokens(extra: &[&str]) -> Vec<String> {
    let mut t: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from).to_vec();
    t.extend(BYTE_TO_CHAR.iter().map(|c| c.to_string()));
    t.extend(extra.iter().map(|s| s.to_string()));
    t
}

/// A GGUF file with a toy tokenizer; `edit` changes the metadata before it is written.
fn toy_file(merges: &[&str], extra: &[&str], edit: impl FnOnce(&mut GgufWriter)) -> GgufFile {
    let tokens = toy_tokens(extra);
    let mut types = vec![Value::I32(3); 3];
    types.extend(std::iter::repeat_n(Value::I32(1), tokens.len() - 3));
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.set("tokenizer.ggml.pre", Value::String("smollm".into()));
    w.set("tokenizer.ggml.tokens", strings(&tokens.iter().map(String::as_str).collect::<Vec<_>>()));
    w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types));
    w.set("tokenizer.ggml.merges", strings(merges));
    w.set("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.set("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    edit(&mut w);
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    GgufFile::from_vec(bytes).unwrap()
}

fn toy(merges: &[&str], extra: &[&str]) -> Tokenizer {
    Tokenizer::from_gguf(&toy_file(merges, extra, |_| {})).unwrap()
}

fn strs(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| t.token_str(i).unwrap().to_string()).collect()
}

fn err(f: GgufFile) -> TokenizerError {
    match Tokenizer::from_gguf(&f) {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            // Every error has a message a user can read.
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

#[test]
fn lowest_rank_merges_first() {
    // "b c" outranks "a b": abc -> a + bc, not ab + c.
    let t = toy(&["b c", "a b", "a bc"], &["bc", "ab", "abc"]);
    assert_eq!(strs(&t, &t.encode("abc", false, false)), ["abc"]);
    let t = toy(&["b c", "a b"], &["bc", "ab"]);
    assert_eq!(strs(&t, &t.encode("abc", false, false)), ["a", "bc"]);
    let t = toy(&["a b", "b c"], &["ab", "bc"]);
    assert_eq!(strs(&t, &t.encode("abc", false, false)), ["ab", "c"]);
    // Ties go to the leftmost pair; a space is Ġ and prefixes the word.
    let t = toy(&["a a", "Ġ a"], &["aa", "Ġa"]);
    assert_eq!(strs(&t, &t.encode("aaa aaa", false, false)), ["aa", "a", "Ġ", "aa", "a"]);
    let t = toy(&["Ġ a", "a a"], &["Ġa", "aa"]);
    assert_eq!(strs(&t, &t.encode("aaa aaa", false, false)), ["aa", "a", "Ġa", "aa"]);
    // BOS and the metadata default.
    assert!(t.add_bos_default());
    assert_eq!(t.encode("a", true, false), [1, t.token_id("a").unwrap()]);
    assert_eq!(t.decode(&t.encode("aaa aaa", true, false)), "<|im_start|>aaa aaa");
    assert_eq!(t.decode_with(&t.encode("aaa aaa", true, false), false), "aaa aaa");
}

#[test]
fn user_defined_tokens_are_always_matched() {
    let f = toy_file(&[], &["<tool>"], |w| {
        let n = 3 + 256 + 1;
        let mut types = vec![Value::I32(3); 3];
        types.extend(std::iter::repeat_n(Value::I32(1), 256));
        types.push(Value::I32(4));
        assert_eq!(types.len(), n);
        w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types));
    });
    let t = Tokenizer::from_gguf(&f).unwrap();
    let tool = t.token_id("<tool>").unwrap();
    for parse_special in [false, true] {
        assert_eq!(t.encode("x<tool>y", false, parse_special)[1], tool);
    }
    assert_ne!(t.encode("x<|im_end|>", false, false)[1], 2);
    assert_eq!(t.encode("x<|im_end|>", false, true)[1], 2);
}

#[test]
fn missing_tokens() {
    let f = toy_file(&[], &[], |w| w.metadata.retain(|(k, _)| k != "tokenizer.ggml.tokens"));
    assert!(matches!(err(f), TokenizerError::MissingKey("tokenizer.ggml.tokens")));
}

#[test]
fn tokens_of_the_wrong_type() {
    let f = toy_file(&[], &[], |w| w.set("tokenizer.ggml.tokens", Value::U32(7)));
    assert!(matches!(err(f), TokenizerError::InvalidMetadata { key: "tokenizer.ggml.tokens", .. }));
    let f = toy_file(&[], &[], |w| {
        w.set("tokenizer.ggml.tokens", Value::Array(ValueType::U8, vec![Value::U8(1)]))
    });
    assert!(matches!(err(f), TokenizerError::InvalidMetadata { key: "tokenizer.ggml.tokens", .. }));
    let f = toy_file(&[], &[], |w| w.set("tokenizer.ggml.tokens", strings(&[])));
    assert!(matches!(err(f), TokenizerError::InvalidMetadata { key: "tokenizer.ggml.tokens", .. }));
}

#[test]
fn token_types_that_do_not_fit() {
    let f = toy_file(&[], &[], |w| {
        w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, vec![Value::I32(1); 3]))
    });
    assert!(matches!(err(f), TokenizerError::InvalidMetadata { key: "tokenizer.ggml.token_type", .. }));
    let f = toy_file(&[], &[], |w| {
        w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, vec![Value::I32(9); 259]))
    });
    assert!(matches!(err(f), TokenizerError::InvalidMetadata { key: "tokenizer.ggml.token_type", .. }));
}

#[test]
fn merges_with_unknown_tokens() {
    let e = err(toy_file(&["a b", "q zz"], &["ab"], |_| {}));
    assert!(matches!(&e, TokenizerError::BadMerge { index: 1, merge, .. } if merge == "q zz"), "{e}");
    assert!(e.to_string().contains("\"zz\" is not in the vocabulary"), "{e}");
    // The merged token itself must exist.
    let e = err(toy_file(&["a b"], &[], |_| {}));
    assert!(matches!(&e, TokenizerError::BadMerge { index: 0, .. }), "{e}");
    assert!(e.to_string().contains("\"ab\""), "{e}");
    // Not two tokens.
    let e = err(toy_file(&["ab"], &["ab"], |_| {}));
    assert!(matches!(&e, TokenizerError::BadMerge { index: 0, .. }), "{e}");
    // Missing merges.
    let f = toy_file(&[], &[], |w| w.metadata.retain(|(k, _)| k != "tokenizer.ggml.merges"));
    assert!(matches!(err(f), TokenizerError::MissingKey("tokenizer.ggml.merges")));
}

#[test]
fn unknown_pre_tokenizer() {
    let e = err(toy_file(&[], &[], |w| w.set("tokenizer.ggml.pre", Value::String("no-such-pre".into()))));
    assert!(matches!(&e, TokenizerError::UnsupportedPreTokenizer(n) if n == "no-such-pre"));
    assert!(e.to_string().contains("smollm"), "the message lists what is supported: {e}");
    // No pre-tokenizer named: llama.cpp's default.
    let f = toy_file(&[], &[], |w| w.metadata.retain(|(k, _)| k != "tokenizer.ggml.pre"));
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.decode(&t.encode("it's 12345!", false, false)), "it's 12345!");
}

#[test]
fn unsupported_or_missing_model() {
    let e = err(toy_file(&[], &[], |w| w.set("tokenizer.ggml.model", Value::String("bert".into()))));
    assert!(matches!(&e, TokenizerError::UnsupportedModel(m) if m == "bert"));
    let f = toy_file(&[], &[], |w| w.metadata.retain(|(k, _)| k != "tokenizer.ggml.model"));
    assert!(matches!(err(f), TokenizerError::MissingKey("tokenizer.ggml.model")));
}

#[test]
fn special_ids_out_of_range() {
    let e = err(toy_file(&[], &[], |w| w.set("tokenizer.ggml.eos_token_id", Value::U32(100_000))));
    assert!(matches!(
        e,
        TokenizerError::IdOutOfRange { key: "tokenizer.ggml.eos_token_id", id: 100_000, .. }
    ));
    let e = err(toy_file(&[], &[], |w| w.set("tokenizer.ggml.bos_token_id", Value::String("1".into()))));
    assert!(matches!(e, TokenizerError::InvalidMetadata { key: "tokenizer.ggml.bos_token_id", .. }));
    // -1 is how some converters write "none".
    let f = toy_file(&[], &[], |w| w.set("tokenizer.ggml.bos_token_id", Value::I32(-1)));
    assert_eq!(Tokenizer::from_gguf(&f).unwrap().bos_id(), None);
}

#[test]
fn chat_template_errors() {
    let f = toy_file(&[], &[], |w| w.set("tokenizer.chat_template", Value::U32(1)));
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert!(matches!(ChatTemplate::from_gguf(&f, &t), Err(ChatTemplateError::NotAString(_))));
    let f = toy_file(&[], &[], |w| w.set("tokenizer.chat_template", Value::String("{% if %}".into())));
    assert!(matches!(ChatTemplate::from_gguf(&f, &t), Err(ChatTemplateError::Syntax(_))));
    let f = toy_file(&[], &[], |_| {});
    assert!(ChatTemplate::from_gguf(&f, &t).unwrap().is_none());
    // No template: the ChatML fallback, with bos/eos from the tokenizer.
    let tmpl = ChatTemplate::from_gguf_or_builtin(&f, &t).unwrap();
    assert!(tmpl.source().contains("<|im_start|>"));
}

#[test]
fn add_bos_default_follows_the_pre_tokenizer_when_unset() {
    let unset = |pre: &'static str| {
        toy_file(&[], &[], move |w| {
            w.set("tokenizer.ggml.pre", Value::String(pre.into()));
            w.metadata.retain(|(k, _)| k != "tokenizer.ggml.add_bos_token");
        })
    };
    assert!(Tokenizer::from_gguf(&unset("llama-bpe")).unwrap().add_bos_default());
    assert!(!Tokenizer::from_gguf(&unset("smollm")).unwrap().add_bos_default());
    let f = toy_file(&[], &[], |w| w.set("tokenizer.ggml.add_bos_token", Value::Bool(false)));
    assert!(!Tokenizer::from_gguf(&f).unwrap().add_bos_default());
}

#[test]
fn end_tokens_found_by_name_become_control() {
    // "<|im_end|>" typed normal: llama.cpp makes it a control token that ends generation.
    let f = toy_file(&[], &[], |w| {
        let mut types = vec![Value::I32(3), Value::I32(3), Value::I32(1)];
        types.extend(std::iter::repeat_n(Value::I32(1), 256));
        w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types));
        w.metadata.retain(|(k, _)| k != "tokenizer.ggml.eos_token_id");
    });
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.token_type(2), Some(edgellm_text::TokenType::Control));
    assert_eq!(t.eos_id(), None);
    assert_eq!(t.eot_id(), Some(2));
    assert!(t.is_eog(2) && t.is_eog(0) && !t.is_eog(1));
    assert_eq!(t.encode("<|im_end|>", false, true), [2]);
}

/// A toy SentencePiece-style vocabulary (`tokenizer.ggml.model = "llama"`): `<unk> <s> </s>`, the
/// 256 byte tokens, then `(token, score)` pairs; no special-token ids, no `add_*` flags (the
/// defaults apply). `edit` changes the metadata before it is written.
fn spm_file(pieces: &[(&str, f32)], edit: impl FnOnce(&mut GgufWriter)) -> GgufFile {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
    let mut scores = vec![Value::F32(0.0); 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(Value::I32(6));
        scores.push(Value::F32(0.0));
    }
    for &(p, s) in pieces {
        tokens.push(p.to_string());
        types.push(Value::I32(1));
        scores.push(Value::F32(s));
    }
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.set("tokenizer.ggml.tokens", strings(&tokens.iter().map(String::as_str).collect::<Vec<_>>()));
    w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types));
    w.set("tokenizer.ggml.scores", Value::Array(ValueType::F32, scores));
    edit(&mut w);
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    GgufFile::from_vec(bytes).unwrap()
}

fn spm(pieces: &[(&str, f32)]) -> Tokenizer {
    Tokenizer::from_gguf(&spm_file(pieces, |_| {})).unwrap()
}

/// Letters and the space marker, score 0.
const LETTERS: [(&str, f32); 4] = [("\u{2581}", 0.0), ("a", 0.0), ("b", 0.0), ("c", 0.0)];

#[test]
fn spm_highest_score_merges_first() {
    let with = |extra: &[(&'static str, f32)]| spm(&[&LETTERS[..], extra].concat());
    let no_prefix = |t: &Tokenizer, s: &str| strs(t, &t.encode(s, false, false))[1..].to_vec();
    // "bc" scores higher than "ab": abc -> a + bc.
    let t = with(&[("ab", -2.0), ("bc", -1.0)]);
    assert_eq!(no_prefix(&t, "abc"), ["a", "bc"]);
    let t = with(&[("ab", -1.0), ("bc", -2.0)]);
    assert_eq!(no_prefix(&t, "abc"), ["ab", "c"]);
    // Any merge that makes a token happens in the end, whatever its score.
    let t = with(&[("ab", -1.0), ("bc", -2.0), ("abc", -100.0)]);
    assert_eq!(no_prefix(&t, "abc"), ["abc"]);
    // Ties go to the leftmost pair.
    let t = with(&[("aa", -1.0)]);
    assert_eq!(no_prefix(&t, "aaa"), ["aa", "a"]);
    // A space is ▁ and merges like any character.
    let t = with(&[("\u{2581}a", -1.0), ("aa", -2.0)]);
    assert_eq!(strs(&t, &t.encode("aaa aaa", false, false)), ["\u{2581}a", "aa", "\u{2581}a", "aa"]);
    assert_eq!(t.decode(&t.encode("aaa aaa", false, false)), "aaa aaa");
}

#[test]
fn spm_defaults_and_space_prefix() {
    // No metadata: llama.cpp's SentencePiece defaults (<unk> 0, <s> 1, </s> 2, BOS added,
    // a space put before the text).
    let t = spm(&LETTERS);
    assert_eq!((t.unk_id(), t.bos_id(), t.eos_id()), (Some(0), Some(1), Some(2)));
    assert!(t.add_bos_default() && !t.add_eos_default());
    assert!(t.is_eog(2));
    let (sp, a) = (t.token_id("\u{2581}").unwrap(), t.token_id("a").unwrap());
    assert_eq!(t.encode("a", true, false), [1, sp, a]);
    // The prefix also follows a special token; decoding drops the first token's space only.
    let ids = t.encode("a</s>a", false, true);
    assert_eq!(ids, [sp, a, 2, sp, a]);
    assert_eq!(t.decode(&ids), "a</s> a");
    assert_eq!(t.decode_with(&ids, false), "a a");
    assert_eq!(t.decode(&t.encode(" a", false, false)), " a");
    // Without the prefix (Gemma 3).
    let f = spm_file(&LETTERS, |w| w.set("tokenizer.ggml.add_space_prefix", Value::Bool(false)));
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.encode("a</s>a", false, true), [a, 2, a]);
    assert_eq!(t.decode(&t.encode(" a", false, false)), " a");
    // Metadata ids win over the defaults.
    let f = spm_file(&LETTERS, |w| {
        w.set("tokenizer.ggml.bos_token_id", Value::U32(2));
        w.set("tokenizer.ggml.add_bos_token", Value::Bool(false));
    });
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.bos_id(), Some(2));
    assert!(!t.add_bos_default());
}

#[test]
fn spm_byte_fallback() {
    let t = spm(&LETTERS);
    // é is not a token: its two UTF-8 bytes are.
    let ids = t.encode("aé", false, false);
    assert_eq!(strs(&t, &ids), ["\u{2581}", "a", "<0xC3>", "<0xA9>"]);
    assert_eq!(t.decode(&ids), "aé");
    assert_eq!(t.token_bytes(ids[2]), [0xC3]);
    // Without byte tokens a missing character becomes <unk> per byte (llama.cpp would abort).
    let f = spm_file(&LETTERS, |w| {
        let tokens = ["<unk>", "<s>", "</s>", "\u{2581}", "a"];
        w.set("tokenizer.ggml.tokens", strings(&tokens));
        w.set(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, [2, 3, 3, 1, 1].map(Value::I32).to_vec()),
        );
        w.set("tokenizer.ggml.scores", Value::Array(ValueType::F32, vec![Value::F32(0.0); 5]));
    });
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(t.encode("aé", false, false), [3, 4, 0, 0]);
}

#[test]
fn spm_bad_scores() {
    let e = err(spm_file(&LETTERS, |w| {
        w.set("tokenizer.ggml.scores", Value::Array(ValueType::F32, vec![Value::F32(0.0); 3]))
    }));
    assert!(matches!(e, TokenizerError::InvalidMetadata { key: "tokenizer.ggml.scores", .. }), "{e}");
    let e = err(spm_file(&LETTERS, |w| w.set("tokenizer.ggml.scores", Value::F32(0.0))));
    assert!(matches!(e, TokenizerError::InvalidMetadata { key: "tokenizer.ggml.scores", .. }), "{e}");
    // No scores at all: every merge ties, so the leftmost pair wins each time.
    let f = spm_file(&[&LETTERS[..], &[("ab", -5.0), ("bc", 0.0)]].concat(), |w| {
        w.metadata.retain(|(k, _)| k != "tokenizer.ggml.scores")
    });
    let t = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(strs(&t, &t.encode("abc", false, false)), ["\u{2581}", "ab", "c"]);
}

#[test]
fn spm_unused_tokens_decode_to_nothing() {
    let f = spm_file(&[&LETTERS[..], &[("<unused0>", 0.0)]].concat(), |w| {
        let mut types = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
        types.extend(std::iter::repeat_n(Value::I32(6), 256));
        types.extend([1, 1, 1, 1, 5].map(Value::I32));
        w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types));
    });
    let t = Tokenizer::from_gguf(&f).unwrap();
    let unused = t.token_id("<unused0>").unwrap();
    assert_eq!(t.token_type(unused), Some(edgellm_text::TokenType::Unused));
    assert_eq!(t.token_bytes(unused), b"");
    assert_eq!(t.decode(&[t.token_id("a").unwrap(), unused]), "a");
}
