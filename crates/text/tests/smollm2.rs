//! SmolLM2-135M-Instruct's tokenizer against llama.cpp's token ids
//! (`tests/golden/smollm2-135m-instruct-q4_1.json`, see `tests/golden/README.md`).

mod common;

use common::{assert_ids, golden, ids, smollm2, smollm2_gguf};
use edgellm_text::{ChatMessage, ChatTemplate, StreamDecoder, TokenType};

const GOLDEN: &str = "smollm2-135m-instruct-q4_1.json";

#[test]
fn metadata() {
    let tok = smollm2();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.unk_id(), Some(0));
    assert_eq!(tok.pad_id(), Some(2));
    assert!(!tok.add_bos_default());
    assert!(!tok.add_eos_default());
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    // llama.cpp's EOT is whichever name its hash map yields first (<|endoftext|> there); this
    // crate takes the first of its list, <|im_end|>. Both end generation either way.
    assert_eq!(tok.eot_id(), Some(2));
    // EOS/<|im_end|>, <|endoftext|> and the FIM repo-name marker <reponame> end generation:
    // llama.cpp's llama_vocab_is_eog gives exactly these.
    assert_eq!(tok.eog_ids(), &[0, 2, 4]);
    assert!(tok.is_eog(2) && tok.is_eog(0) && !tok.is_eog(1) && !tok.is_eog(198));
    assert_eq!(tok.token_type(1), Some(TokenType::Control));
    assert_eq!(tok.token_type(100), Some(TokenType::Normal));
    assert_eq!(tok.token_type(49152), None);
    assert_eq!(tok.token_str(216), Some("Ġ"));
    assert_eq!(tok.token_bytes(216), b" ");
    assert_eq!(tok.token_bytes(198), b"\n");
    assert_eq!(tok.token_bytes(1), b"<|im_start|>");
    assert_eq!(tok.token_bytes(1_000_000), b"");
}

#[test]
fn tokenize_matches_llama_cpp() {
    let tok = smollm2();
    let g = golden(GOLDEN);
    let cases = g["tokenize"].as_array().expect("tokenize cases");
    assert!(cases.len() >= 19);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, false, false);
        assert_ids(&tok, &format!("{text:?}"), &got, &ids(&case["ids"]));
    }
}

#[test]
fn prompts_match_llama_cpp_with_default_bos() {
    let tok = smollm2();
    let g = golden(GOLDEN);
    let mut n = 0;
    for (list, key) in [("logits", "ids"), ("greedy", "prompt_ids")] {
        for case in g[list].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            let got = tok.encode(prompt, tok.add_bos_default(), false);
            assert_ids(&tok, &format!("{list} {prompt:?}"), &got, &ids(&case[key]));
            n += 1;
        }
    }
    assert_eq!(n, 10);
}

#[test]
fn greedy_continuations_decode_to_llama_cpp_text() {
    let tok = smollm2();
    let g = golden(GOLDEN);
    for case in g["greedy"].as_array().unwrap() {
        let want = case["continuation_text"].as_str().unwrap();
        // llama-cpp-python detokenized without control tokens (one continuation ends in <|im_end|>).
        let got = ids(&case["continuation_ids"]);
        assert_eq!(tok.decode_with(&got, false), want);
        let with_special = tok.decode(&got);
        assert!(with_special == want || with_special == format!("{want}<|im_end|>"), "{with_special:?}");
    }
}

#[test]
fn decode_inverts_encode() {
    let tok = smollm2();
    let g = golden(GOLDEN);
    let mut texts: Vec<String> =
        g["tokenize"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
    texts.push("e\u{301}\u{200d}\u{fe0f} 👩‍👩‍👧 \u{10ffff}\r\n\u{0}".to_string());
    for text in &texts {
        for parse_special in [false, true] {
            let ids = tok.encode(text, false, parse_special);
            assert_eq!(&tok.decode(&ids), text, "parse_special={parse_special}");
        }
    }
}

#[test]
fn stream_decoder_never_splits_characters() {
    let tok = smollm2();
    for text in [
        "设备端推理：大语言模型在边缘设备上的应用",
        "日本語のテキストも大丈夫ですか？",
        "emoji 🙂👍🏽🚀 and symbols ©®™ 👩‍👩‍👧",
        "Ünïcödé façade naïve café",
    ] {
        let ids = tok.encode(text, false, false);
        // The test is only meaningful if some character spans several tokens.
        assert!(ids.iter().any(|&i| std::str::from_utf8(&tok.token_bytes(i)).is_err()), "{text}");
        let mut d = StreamDecoder::new();
        let mut out = String::new();
        for &id in &ids {
            let piece = d.push(&tok, id);
            assert!(!piece.contains('\u{fffd}'), "U+FFFD in the middle of {text:?}");
            out.push_str(&piece);
        }
        assert!(!d.has_pending());
        out.push_str(&d.flush());
        assert_eq!(out, text);
    }
}

#[test]
fn special_tokens_only_when_asked() {
    let tok = smollm2();
    let text = "<|im_start|>user\nhi<|im_end|>";
    let special = tok.encode(text, false, true);
    let (start, end) = (tok.token_id("<|im_start|>").unwrap(), tok.token_id("<|im_end|>").unwrap());
    assert_eq!(special.first(), Some(&start));
    assert_eq!(special.last(), Some(&end));
    assert_eq!(special, [vec![start], tok.encode("user\nhi", false, false), vec![end]].concat());
    let plain = tok.encode(text, false, false);
    assert!(!plain.contains(&start) && !plain.contains(&end));
    assert_eq!(plain.len(), 17);
    // Longest first, and text right around a special token is tokenized on its own.
    let ids = tok.encode("a<|endoftext|><|im_end|>b", true, true);
    assert_eq!(ids, [1, 81, 0, 2, 82]);
}

#[test]
fn chat_template_renders_chatml() {
    let f = smollm2_gguf();
    let tok = smollm2();
    let tmpl = ChatTemplate::from_gguf(&f, &tok).unwrap().expect("SmolLM2 has a chat template");
    let conv = [
        ChatMessage::new("user", "Turn on the lights."),
        ChatMessage::new("assistant", "Done."),
        ChatMessage::new("user", "Thanks!"),
    ];
    let want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                <|im_start|>user\nTurn on the lights.<|im_end|>\n\
                <|im_start|>assistant\nDone.<|im_end|>\n\
                <|im_start|>user\nThanks!<|im_end|>\n\
                <|im_start|>assistant\n";
    assert_eq!(tmpl.render(&conv, true).unwrap(), want);
    // A system message of the caller's replaces the default one; no generation prompt.
    let conv = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
    assert_eq!(
        tmpl.render(&conv, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
    // The rendered prompt tokenizes with the control tokens as single ids.
    let ids = tok.encode(want, tok.add_bos_default(), true);
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 5);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 4);
    // The built-in fallback for this vocabulary is ChatML, which agrees apart from the default system turn.
    let fallback = ChatTemplate::builtin_for(&tok).unwrap();
    assert_eq!(
        fallback.render(&conv, true).unwrap(),
        format!("{}<|im_start|>assistant\n", tmpl.render(&conv, false).unwrap())
    );
}

/// 400 random texts (every whitespace kind, contractions, digits, scripts, emoji, combining and
/// unassigned code points, control-token strings) tokenized by llama.cpp with and without
/// `parse_special`; see `tests/data/README.md`.
#[test]
fn random_texts_match_llama_cpp() {
    let tok = smollm2();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/smollm2-135m-instruct-q4_1.tokenize.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 400);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_ids(&tok, &format!("{text:?}"), &tok.encode(text, false, false), &ids(&case["ids"]));
        assert_ids(
            &tok,
            &format!("{text:?} parse_special"),
            &tok.encode(text, false, true),
            &ids(&case["ids_special"]),
        );
    }
}
