//! Intent training end to end on a tiny random encoder (fast): both modes learn a small
//! synthetic set perfectly, the written GGUF predicts what the trained model did, and bad
//! intent files are refused with a clear error.

mod common;

use std::path::{Path, PathBuf};

use edgellm_formats::{GgufFile, GgufWriter, Value};
use edgellm_models::bert::Activation;
use edgellm_models::intent::{IntentHead, KEY_LABELS, WEIGHT};
use edgellm_runtime::intent::IntentClassifier;
use edgellm_train::intent::{train_intents, IntentMode, IntentOptions};
use edgellm_train::synthetic::{tiny_config, tiny_intents, write_tiny_gguf};
use edgellm_train::BertFile;

fn tiny_encoder(dir: &Path) -> PathBuf {
    let p = dir.join("encoder.gguf");
    write_tiny_gguf(&p, &tiny_config(32, Activation::Gelu), 3).unwrap();
    p
}

fn predictions(c: &IntentClassifier, texts: &[&str]) -> Vec<String> {
    c.classify_batch(texts, 0).unwrap().iter().map(|s| c.labels()[s.best().index].clone()).collect()
}

#[test]
fn both_modes_learn_a_synthetic_set_and_the_file_predicts_the_same() {
    let dir = common::scratch("intent-modes");
    let enc = tiny_encoder(&dir);
    let source = BertFile::open(&enc, "encoder").unwrap();
    // Head only: 24 utterances of 32-wide embeddings (separable by a linear head); the whole
    // encoder: 36.
    for (mode, n) in [(IntentMode::Head, 24), (IntentMode::Full, 36)] {
        let data = tiny_intents(n, 7);
        let texts: Vec<&str> = data.iter().map(|e| e.text.as_str()).collect();
        let gold: Vec<&str> = data.iter().map(|e| e.label.as_str()).collect();
        let trained = train_intents(
            &source,
            &data,
            &[],
            &common::tiny_intent_options(mode),
            &mut |_| {},
            &mut |_, _| {},
        )
        .unwrap();
        let r = &trained.report;
        assert_eq!(r.labels, vec!["about_her", "about_him", "about_them"]);
        assert_eq!(r.best_val_accuracy, 1.0, "{mode:?}: {:?}", r.epochs);
        assert_eq!(trained.encoder.is_some(), mode == IntentMode::Full && r.best.0 == IntentMode::Full);
        let path = dir.join(format!("{}.gguf", mode.as_str()));
        trained.write(&source, &path).unwrap();
        let loaded = IntentClassifier::load(&path).unwrap();
        assert_eq!(loaded.head(), &trained.head, "the head round-trips exactly");
        let got = predictions(&loaded, &texts);
        assert_eq!(got, gold, "{mode:?}: the saved model classifies its training set perfectly");
        // A second load gives the very same probabilities.
        let again = IntentClassifier::load(&path).unwrap();
        assert_eq!(loaded.classify_batch(&texts, 0).unwrap(), again.classify_batch(&texts, 0).unwrap());
        if mode == IntentMode::Head {
            // Head-only training leaves the encoder's tensors byte for byte.
            let (a, b) = (GgufFile::open(&enc).unwrap(), GgufFile::open(&path).unwrap());
            for t in &a.tensors {
                assert_eq!(a.tensor_data(t), b.tensor_data(b.tensor(&t.name).unwrap()), "{}", t.name);
            }
        }
    }
}

#[test]
fn training_is_deterministic() {
    let dir = common::scratch("intent-determinism");
    let source = BertFile::open(&tiny_encoder(&dir), "encoder").unwrap();
    let data = tiny_intents(24, 1);
    let o = IntentOptions { head_epochs: 5, ..common::tiny_intent_options(IntentMode::Full) };
    let o = IntentOptions { epochs: 2, ..o };
    let a = train_intents(&source, &data, &[], &o, &mut |_| {}, &mut |_, _| {}).unwrap();
    let b = train_intents(&source, &data, &[], &o, &mut |_| {}, &mut |_, _| {}).unwrap();
    assert_eq!(a.head, b.head);
    let losses =
        |r: &edgellm_train::intent::IntentReport| r.epochs.iter().map(|e| e.loss).collect::<Vec<_>>();
    assert_eq!(losses(&a.report), losses(&b.report));
}

#[test]
fn bad_options_and_single_label_data_are_refused() {
    let dir = common::scratch("intent-bad-options");
    let source = BertFile::open(&tiny_encoder(&dir), "encoder").unwrap();
    let one_label: Vec<_> = tiny_intents(9, 1).into_iter().filter(|e| e.label == "about_him").collect();
    let e = train_intents(&source, &one_label, &[], &IntentOptions::default(), &mut |_| {}, &mut |_, _| {});
    assert!(e.err().unwrap().to_string().contains("at least 2"));
    let bad = IntentOptions { head_lr: -1.0, ..IntentOptions::default() };
    let e = train_intents(&source, &tiny_intents(9, 1), &[], &bad, &mut |_| {}, &mut |_, _| {});
    assert!(e.err().unwrap().to_string().contains("--head-lr"));
}

/// Rewrite `src` through `edit` into `dst`.
fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut GgufWriter<'_>)) {
    let f = GgufFile::open(src).unwrap();
    let mut w = f.to_writer();
    edit(&mut w);
    w.write_file(dst).unwrap();
}

#[test]
fn corrupt_or_label_less_intent_files_are_clear_errors() {
    let dir = common::scratch("intent-corrupt");
    let enc = tiny_encoder(&dir);
    let source = BertFile::open(&enc, "encoder").unwrap();
    let o = IntentOptions { head_epochs: 2, ..IntentOptions::default() };
    let good = dir.join("good.gguf");
    train_intents(&source, &tiny_intents(12, 2), &[], &o, &mut |_| {}, &mut |_, _| {})
        .unwrap()
        .write(&source, &good)
        .unwrap();
    assert!(IntentClassifier::load(&good).is_ok());

    let err = |p: &Path| IntentClassifier::load(p).err().expect("refused").to_string();
    // A plain encoder.
    assert!(err(&enc).contains("not an intent model"), "{}", err(&enc));
    // Labels removed.
    let p = dir.join("no-labels.gguf");
    rewrite(&good, &p, |w| w.metadata.retain(|(k, _)| k != KEY_LABELS));
    assert!(err(&p).contains("no label names"), "{}", err(&p));
    // One label fewer than the head's rows.
    let p = dir.join("short-labels.gguf");
    rewrite(&good, &p, |w| {
        w.set(
            KEY_LABELS,
            Value::Array(
                edgellm_formats::ValueType::String,
                vec![Value::String("a".into()), Value::String("b".into())],
            ),
        )
    });
    assert!(err(&p).contains(WEIGHT), "{}", err(&p));
    // The head's weight missing.
    let p = dir.join("no-weight.gguf");
    rewrite(&good, &p, |w| w.tensors.retain(|t| t.name != WEIGHT));
    assert!(err(&p).contains(WEIGHT), "{}", err(&p));
    // Duplicate labels.
    let p = dir.join("dup-labels.gguf");
    rewrite(&good, &p, |w| {
        let l = Value::String("same".into());
        w.set(KEY_LABELS, Value::Array(edgellm_formats::ValueType::String, vec![l.clone(), l.clone(), l]))
    });
    assert!(err(&p).contains("twice"), "{}", err(&p));
    // A truncated file.
    let bytes = std::fs::read(&good).unwrap();
    let p = dir.join("truncated.gguf");
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    assert!(!err(&p).is_empty());
    // The head's own check, directly.
    assert!(IntentHead::new(vec!["x".into(), "y".into()], 2, vec![0.0; 3], vec![0.0; 2]).is_err());
}
