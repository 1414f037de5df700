//! Vocabulary trimming on the real all-MiniLM-L6-v2: texts whose tokens were kept embed
//! bit for bit as with the full vocabulary; other text still tokenizes without new unknown
//! tokens; the word-embedding table shrinks to the kept rows.

mod common;

use std::collections::BTreeSet;

use edgellm_compress::vocab::trim_vocab;
use edgellm_formats::GgufFile;
use edgellm_runtime::embed::Embedder;

#[test]
fn trimmed_vocabulary_embeds_kept_texts_exactly_and_still_spells_new_words() {
    let dir = common::scratch("vocab-trim");
    let full_path = dir.join("full.gguf");
    edgellm_models::bert::gguf_export(&common::minilm()).unwrap().write_f32(&full_path).unwrap();
    let full = Embedder::load_gguf(&full_path).unwrap();
    let kept_texts = [
        "turn off the porch light",
        "dim the bedroom lights to twenty percent",
        "what's the weather like in Paris tomorrow?",
        "set an alarm for 7:30 am",
    ];
    let mut used = BTreeSet::new();
    for t in kept_texts {
        used.extend(full.tokenize(t).unwrap());
    }
    let f = GgufFile::open(&full_path).unwrap();
    let (w, report) = trim_vocab(&f, &used, 0).unwrap();
    assert_eq!(report.before, 30_522);
    assert!(report.kept > used.len() && report.kept < 3_000, "{report:?}");
    assert_eq!(report.embd_bytes.0, 30_522 * 384 * 4);
    assert_eq!(report.embd_bytes.1, report.kept as u64 * 384 * 4);
    let trimmed_path = dir.join("trimmed.gguf");
    w.write_file(&trimmed_path).unwrap();
    drop(f);
    let trimmed = Embedder::load_gguf(&trimmed_path).unwrap();
    assert_eq!(trimmed.vocab_size(), report.kept);

    for t in kept_texts {
        let (a, b) = (full.embed(t).unwrap(), trimmed.embed(t).unwrap());
        assert_eq!(a, b, "{t}: the embedding changed");
        // Same pieces, renumbered.
        let (ta, tb) = (full.tokenize(t).unwrap(), trimmed.tokenize(t).unwrap());
        assert_eq!(full.decode(&ta).unwrap(), trimmed.decode(&tb).unwrap());
    }
    // Words never seen are spelled with the kept pieces (single characters at worst): no
    // unknown token where the full vocabulary had none — but a word spelled letter by letter
    // loses its meaning (cosine 0.07 to the full vocabulary's embedding for the first text
    // here), which is why the trimming text must cover what users say.
    let unk_full = full.tokenize("[UNK]").unwrap()[1];
    let unk_trim = trimmed.tokenize("[UNK]").unwrap()[1];
    for t in ["open the garage door", "play some jazz in the kitchen"] {
        let ids = trimmed.tokenize(t).unwrap();
        assert!(!full.tokenize(t).unwrap().contains(&unk_full));
        assert!(!ids.contains(&unk_trim), "{t}: {ids:?}");
        assert!(ids.len() > full.tokenize(t).unwrap().len(), "{t}: new words split into more pieces");
        let c = edgellm_runtime::embed::cosine(&full.embed(t).unwrap(), &trimmed.embed(t).unwrap());
        assert!(c.is_finite() && c < 0.9999, "{t}: cosine {c}");
    }

    // Keeping the 5 000 commonest other tokens too (MiniLM's vocabulary lists them most
    // frequent first): exactly 5 000 more rows, and a sentence of common words none of the
    // texts used embeds exactly as with the full vocabulary.
    let f = GgufFile::open(&full_path).unwrap();
    let (w, wide) = trim_vocab(&f, &used, 5_000).unwrap();
    assert_eq!(wide.kept, report.kept + 5_000);
    let wide_path = dir.join("wide.gguf");
    w.write_file(&wide_path).unwrap();
    drop(f);
    let wide = Embedder::load_gguf(&wide_path).unwrap();
    // The placeholders `[unused0]`… are not among the common tokens kept.
    let wide_file = GgufFile::open(&wide_path).unwrap();
    let tokens = wide_file.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert!(!tokens.iter().any(|t| t.contains("[unused")), "placeholders kept");
    drop(wide_file);
    let common_words = "the door of the house was open";
    assert!(trimmed.tokenize(common_words).unwrap().len() > full.tokenize(common_words).unwrap().len());
    assert_eq!(full.embed(common_words).unwrap(), wide.embed(common_words).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
