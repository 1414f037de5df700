//! Gemma 3 270M's SentencePiece-style tokenizer (262,144 tokens) against llama.cpp's token ids
//! (`tests/golden/gemma-3-270m-q4_k_m.json`, see `tests/golden/README.md`).

mod common;

use common::{assert_ids, gemma3, gemma3_gguf, golden, ids};
use edgellm_text::{ChatMessage, ChatTemplate, StreamDecoder, TokenType};

const GOLDEN: &str = "gemma-3-270m-q4_k_m.json";

#[test]
fn metadata() {
    let tok = gemma3();
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.bos_id(), Some(2));
    assert_eq!(tok.eos_id(), Some(1));
    assert_eq!(tok.unk_id(), Some(3));
    assert_eq!(tok.pad_id(), Some(0));
    assert!(tok.add_bos_default());
    assert!(!tok.add_eos_default());
    assert_eq!(tok.token_id("<end_of_turn>"), Some(106));
    assert_eq!(tok.token_id("<start_of_turn>"), Some(105));
    assert_eq!(tok.eot_id(), Some(106));
    // llama.cpp's llama_vocab_is_eog: <eos>, <end_of_turn> and "</s>" (a user-defined token
    // that its end-token names make a control token).
    assert_eq!(tok.eog_ids(), &[1, 106, 212]);
    assert!(tok.is_eog(1) && tok.is_eog(106) && !tok.is_eog(2) && !tok.is_eog(105));
    assert_eq!(tok.token_type(212), Some(TokenType::Control));
    assert_eq!(tok.token_type(105), Some(TokenType::Control));
    assert_eq!(tok.token_type(138), Some(TokenType::UserDefined));
    assert_eq!(tok.token_type(248), Some(TokenType::Byte));
    assert_eq!(tok.token_str(248), Some("<0x0A>"));
    assert_eq!(tok.token_bytes(248), b"\n");
    assert_eq!(tok.token_str(26352), Some("\u{2581}Hello"));
    assert_eq!(tok.token_bytes(26352), b" Hello");
    assert_eq!(tok.token_bytes(138), b"  ");
    assert_eq!(tok.token_bytes(106), b"<end_of_turn>");
}

#[test]
fn tokenize_matches_llama_cpp() {
    let tok = gemma3();
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
    let tok = gemma3();
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
    let tok = gemma3();
    let g = golden(GOLDEN);
    for case in g["greedy"].as_array().unwrap() {
        let got = ids(&case["continuation_ids"]);
        assert_eq!(tok.decode_with(&got, false), case["continuation_text"].as_str().unwrap());
    }
}

#[test]
fn decode_inverts_encode() {
    let tok = gemma3();
    let g = golden(GOLDEN);
    let mut texts: Vec<String> =
        g["tokenize"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
    for list in ["logits", "greedy"] {
        texts.extend(g[list].as_array().unwrap().iter().map(|c| c["prompt"].as_str().unwrap().to_string()));
    }
    // Byte fallback, spaces around special-token text, the unassigned plane end. (Not a literal
    // ▁: it encodes as a space, as in llama.cpp, so it decodes as one.)
    texts.push("e\u{301}\u{200d}\u{fe0f} 👩‍👩‍👧 \u{10ffff}\r\n\u{0}  x  <0x41> <eos> </s>".to_string());
    for text in &texts {
        for parse_special in [false, true] {
            let ids = tok.encode(text, false, parse_special);
            assert_eq!(&tok.decode(&ids), text, "parse_special={parse_special}");
        }
        // With BOS: decode shows it, decode_with(.., false) drops it and keeps the text whole.
        let ids = tok.encode(text, true, false);
        assert_eq!(tok.decode(&ids), format!("<bos>{text}"));
        assert_eq!(&tok.decode_with(&ids, false), text);
    }
}

#[test]
fn stream_decoder_never_splits_characters() {
    let tok = gemma3();
    let mut split = 0;
    for text in [
        "设备端推理：大语言模型在边缘设备上的应用",
        "日本語のテキストも大丈夫ですか？",
        "emoji 🙂👍🏽🚀 and symbols ©®™ 👩‍👩‍👧",
        "Ünïcödé façade naïve café \u{10ffff}\u{e000}",
    ] {
        let ids = tok.encode(text, false, false);
        split += ids.iter().filter(|&&i| std::str::from_utf8(&tok.token_bytes(i)).is_err()).count();
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
    // Gemma covers most characters whole; the rare ones go through byte tokens.
    assert!(split > 0, "no character was split into byte tokens: the test lost its point");
}

#[test]
fn special_tokens_only_when_asked() {
    let tok = gemma3();
    let text = "<start_of_turn>user\nhi<end_of_turn>";
    // llama.cpp: llama_tokenize(text, add_special=false, parse_special=true / false).
    assert_eq!(tok.encode(text, false, true), [105, 2364, 107, 2202, 106]);
    assert_eq!(
        tok.encode(text, false, false),
        [
            236820, 3041, 236779, 1340, 236779, 887, 236813, 2364, 107, 2202, 236820, 643, 236779, 1340,
            236779, 887, 236813
        ]
    );
    // User-defined tokens ("\n", runs of spaces, tabs, HTML tags, "<s>") are always matched;
    // control tokens ("<eos>", and "</s>" made one) only with parse_special.
    assert_eq!(tok.encode("a<table>b", false, false), [236746, 168, 236763]);
    assert_eq!(
        tok.encode("x\ty  z\n\n\nw", false, false),
        [236781, 255968, 236762, 138, 236802, 109, 236765]
    );
    assert_eq!(tok.encode("<s>", false, false), [203]);
    assert_eq!(tok.encode("</s>", false, false), [954, 236751, 236813]);
    assert_eq!(tok.encode("</s>", false, true), [212]);
    assert_eq!(tok.encode("<eos>", false, false), [236820, 211827, 236813]);
    assert_eq!(tok.encode("<eos>", false, true), [1]);
    // Byte fallback for characters the vocabulary lacks; a literal ▁ is an ordinary space.
    assert_eq!(tok.encode("\u{a0}", false, false), [432, 398]);
    assert_eq!(tok.encode("\u{10ffff}", false, false), [482, 381, 429, 429]);
    assert_eq!(tok.encode("\u{2581}x", false, false), tok.encode(" x", false, false));
    assert_eq!(tok.encode(" \u{2581} ", false, false), [236743, 236743, 236743]);
    // Control tokens decode as their text, or as nothing without `special`.
    let ids = tok.encode(text, true, true);
    assert_eq!(tok.decode(&ids), format!("<bos>{text}"));
    assert_eq!(tok.decode_with(&ids, false), "user\nhi");
}

#[test]
fn chat_template_renders_gemma_turns() {
    let f = gemma3_gguf();
    let tok = gemma3();
    // The file carries no template: the built-in Gemma one is chosen from the vocabulary.
    assert!(ChatTemplate::from_gguf(&f, &tok).unwrap().is_none());
    let tmpl = ChatTemplate::from_gguf_or_builtin(&f, &tok).unwrap();
    let conv = [
        ChatMessage::new("system", "You control a smart home."),
        ChatMessage::new("user", "Turn on the lights. "),
        ChatMessage::new("assistant", "Done."),
        ChatMessage::new("user", "Thanks!"),
    ];
    // llama.cpp's built-in "gemma" chat format (llm_chat_apply_template), after <bos> as in
    // Gemma's own Jinja template.
    let want = "<bos><start_of_turn>user\nYou control a smart home.\n\nTurn on the lights.<end_of_turn>\n\
                <start_of_turn>model\nDone.<end_of_turn>\n\
                <start_of_turn>user\nThanks!<end_of_turn>\n\
                <start_of_turn>model\n";
    let rendered = tmpl.render(&conv, true).unwrap();
    assert_eq!(rendered, want);
    // The prompt starts with BOS as text, so it is encoded without adding another.
    let ids = tok.encode(&rendered, false, true);
    assert_eq!(ids[..3], [2, 105, 2364]);
    assert_eq!(ids.iter().filter(|&&i| i == 105).count(), 4);
    assert_eq!(ids.iter().filter(|&&i| i == 106).count(), 3);
    assert_eq!(ids[ids.len() - 3..], [105, 4368, 107]);
    assert_eq!(tok.decode(&ids), rendered);
}

/// A long text encodes in one merge pass per fragment: ~2,000 tokens in milliseconds.
#[test]
fn long_text_is_fast_and_consistent() {
    let tok = gemma3();
    let para = "The Tower Building of the Little Rock Arsenal, also known as U.S. Arsenal Building, is a \
                building located in MacArthur Park in downtown Little Rock, Arkansas. Built in 1840, it was \
                part of Little Rock's first military installation. Since its decommissioning, the tower \
                building has housed two museums. ";
    let text = para.repeat(25);
    let t = std::time::Instant::now();
    let ids = tok.encode(&text, false, false);
    let took = t.elapsed();
    assert!(ids.len() > 1500, "{}", ids.len());
    assert_eq!(tok.decode(&ids), text);
    // The paragraph's tokens repeat (but for its final space, which joins the next "The").
    let one = tok.encode(para.trim_end(), false, false);
    assert_eq!(ids[..one.len()], one[..]);
    assert_eq!(ids[one.len()], tok.token_id("\u{2581}The").unwrap());
    // Generous for debug builds on a busy machine; a release build takes about a millisecond.
    assert!(took.as_millis() < 2000, "{} tokens took {took:?}", ids.len());
}

/// A data file of `tests/data/`, parsed.
fn data(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// 500 random texts (the SmolLM2 pieces plus Gemma's control, user-defined and byte-token
/// strings, `▁`, runs of spaces, tabs and newlines) tokenized by llama.cpp with and without
/// `parse_special`; see `tests/data/README.md`.
#[test]
fn random_texts_match_llama_cpp() {
    let tok = gemma3();
    let doc = data("gemma-3-270m-q4_k_m.tokenize.json");
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 500);
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

/// FNV-1a (64-bit) of ids written as little-endian u32, as `gen_llama_cpp_wikitext.py` hashes them.
fn fnv1a64(ids: &[u32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ids.iter().flat_map(|i| i.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The whole WikiText-2 test split (`data/wikitext-2/wiki.test.raw`, 295,216 tokens) gives
/// llama.cpp's ids exactly, checked by count and hash; on a difference, chunk by chunk to say
/// where.
#[test]
fn wikitext2_test_split_matches_llama_cpp() {
    let tok = gemma3();
    let doc = data("gemma-3-270m-q4_k_m.wikitext2-test.json");
    let path = common::workspace_root().join("data/wikitext-2/wiki.test.raw");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let whole = tok.encode(&text, true, false);
    let want = (doc["n_ids"].as_u64().unwrap(), doc["fnv1a64"].as_str().unwrap().to_string());
    if (whole.len() as u64, fnv1a64(&whole)) == want {
        assert_eq!(tok.decode_with(&whole, false), text);
        return;
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (k, c) in doc["chunks"].as_array().unwrap().iter().enumerate() {
        let first = c["first_line"].as_u64().unwrap() as usize;
        let n = c["n_lines"].as_u64().unwrap() as usize;
        let ids = tok.encode(&lines[first..first + n].concat(), false, false);
        assert_eq!(
            (ids.len() as u64, fnv1a64(&ids)),
            (c["n_ids"].as_u64().unwrap(), c["fnv1a64"].as_str().unwrap().to_string()),
            "chunk {k}: lines {first}..{} differ from llama.cpp (tokenize them with llama.cpp to see where)",
            first + n
        );
    }
    panic!("every chunk matches but the whole text does not: {} ids, want {want:?}", whole.len());
}
