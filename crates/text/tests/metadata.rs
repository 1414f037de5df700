//! Tokenizers built from small GGUF files made in memory: merge order on a toy vocabulary, and
//! bad metadata giving a [`TokenizerError`] rather than a panic.

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
fn gemma_is_reported_as_unsupported_not_a_panic() {
    let path = common::model_path("gemma-3-270m-q4_k_m.gguf");
    let f = GgufFile::open(&path).unwrap();
    let e = Tokenizer::from_gguf(&f).unwrap_err();
    assert!(matches!(&e, TokenizerError::UnsupportedModel(m) if m == "llama"), "{e}");
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
