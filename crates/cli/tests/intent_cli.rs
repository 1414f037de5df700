//! End-to-end tests of `edgellm intent` on a tiny random encoder: train writes one GGUF that
//! `eval` and `predict` load; eval's figures are checked against labels altered by hand; a
//! model without an intent head is a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

use edgellm_models::bert::Activation;
use edgellm_train::synthetic::{tiny_config, tiny_intents, write_tiny_gguf};
use serde_json::{json, Value};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellm-intent-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn edgellm(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_edgellm")).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn write_tsv(path: &Path, rows: &[(String, String)]) {
    let mut s = String::from("text\tintent\n");
    for (t, l) in rows {
        s.push_str(&format!("{t}\t{l}\n"));
    }
    std::fs::write(path, s).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny encoder and an intent model trained on it (head only), with the training rows.
fn tiny_intent_model(dir: &Path) -> (PathBuf, PathBuf, Vec<(String, String)>, String) {
    let enc = dir.join("enc.gguf");
    write_tiny_gguf(&enc, &tiny_config(32, Activation::Gelu), 3).unwrap();
    let rows: Vec<(String, String)> = tiny_intents(24, 7).into_iter().map(|e| (e.text, e.label)).collect();
    let train = dir.join("train.tsv");
    write_tsv(&train, &rows);
    let model = dir.join("intents.gguf");
    let (ok, out, err) = edgellm(&[
        "intent",
        "train",
        "-m",
        s(&enc),
        "--data",
        s(&train),
        "-o",
        s(&model),
        "--head-epochs",
        "300",
        "--head-lr",
        "0.5",
        "-t",
        "1",
    ]);
    assert!(ok, "{err}");
    (enc, model, rows, out)
}

#[test]
fn serve_answers_intents_alone_batched_and_concurrently() {
    let dir = scratch("serve");
    let (enc, model, rows, _) = tiny_intent_model(&dir);
    let server = Server::start(&["--intent-model", s(&model)]);
    // One utterance: its label and the 3 labels by default.
    let r = server.post("/v1/intents", &json!({ "input": rows[0].0 }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["data"][0]["label"].as_str(), Some(rows[0].1.as_str()), "{v}");
    assert_eq!(v["data"][0]["top"].as_array().unwrap().len(), 3);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    // Every training utterance in one request, then each in a request of its own from
    // concurrent clients: the same labels and scores (to float rounding of the padded batch).
    let texts: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let all = server.post("/v1/intents", &json!({ "input": texts, "top_k": 1 })).json();
    let data = all["data"].as_array().unwrap();
    assert_eq!(data.len(), rows.len());
    for (d, (_, label)) in data.iter().zip(&rows) {
        assert_eq!(d["label"].as_str(), Some(label.as_str()), "{d}");
        assert_eq!(d["top"].as_array().unwrap().len(), 1);
    }
    let addr = server.addr;
    let alone: Vec<Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = texts
            .iter()
            .map(|t| {
                sc.spawn(move || {
                    common::request(
                        addr,
                        "POST",
                        "/v1/intents",
                        &[],
                        json!({ "input": t }).to_string().as_bytes(),
                    )
                    .json()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, d) in alone.iter().zip(data) {
        assert_eq!(a["data"][0]["label"], d["label"]);
        let (x, y) = (a["data"][0]["score"].as_f64().unwrap(), d["score"].as_f64().unwrap());
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    assert_eq!(server.metric("edgellm_classified_utterances_total"), (1 + 2 * rows.len()) as f64);
    let m = server.get("/v1/models").json();
    assert_eq!(m["data"][0]["meta"]["kind"], "classifier", "{m}");
    assert_eq!(m["data"][0]["meta"]["labels"].as_array().unwrap().len(), 3);
    // Bad requests.
    server.post("/v1/intents", &json!({ "input": [] })).error(400);
    server.post("/v1/intents", &json!({ "input": "" })).error(400);
    server.post("/v1/intents", &json!({ "input": "the one", "top_k": 0 })).error(400);
    server.post("/v1/intents", &json!({ "input": 7 })).error(400);
    let e = server.post("/v1/embeddings", &json!({ "input": "the one" })).error(400);
    assert!(e["message"].as_str().unwrap().contains("--embed-model"), "{e}");
    drop(server);
    // A server without an intent model says how to get one; a plain encoder is refused as one.
    let plain = Server::start(&["--embed-model", s(&enc)]);
    let e = plain.post("/v1/intents", &json!({ "input": "the one" })).error(400);
    assert!(e["message"].as_str().unwrap().contains("--intent-model"), "{e}");
    drop(plain);
    let o = Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args(["serve", "--port", "0", "--intent-model", s(&enc)])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no intent head"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn train_eval_predict_end_to_end() {
    let dir = scratch("e2e");
    let (enc, model, rows, out) = tiny_intent_model(&dir);
    let train = dir.join("train.tsv");
    assert!(out.contains("trained 3 labels on 24 utterances (head mode)"), "{out}");
    assert!(out.contains("kept: head epoch") && out.contains("train accuracy 100.00 %"), "{out}");

    // On its own training data the model is right every time.
    let (ok, out, err) = edgellm(&[
        "intent",
        "eval",
        "-m",
        s(&model),
        "--data",
        s(&train),
        "--output-format",
        "json",
        "-t",
        "1",
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["n"].as_u64(), v["correct"].as_u64()), (Some(24), Some(24)), "{v}");
    assert!(v["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(v["latency_ms"]["p99"].as_f64().unwrap() >= v["latency_ms"]["p50"].as_f64().unwrap());

    // Three gold labels altered by hand: rows 0 and 3 (about_him -> about_her), row 1
    // (about_her -> about_them). The model still predicts the true labels, so exactly those
    // three are wrong: accuracy 21/24; about_her: 8 right of 9 predicted... computed below.
    let mut altered = rows.clone();
    assert_eq!(
        (altered[0].1.as_str(), altered[1].1.as_str(), altered[3].1.as_str()),
        ("about_him", "about_her", "about_him")
    );
    altered[0].1 = "about_her".into();
    altered[3].1 = "about_her".into();
    altered[1].1 = "about_them".into();
    let test = dir.join("altered.tsv");
    write_tsv(&test, &altered);
    let (ok, out, err) = edgellm(&[
        "intent",
        "eval",
        "-m",
        s(&model),
        "--data",
        s(&test),
        "--output-format",
        "json",
        "-t",
        "1",
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["correct"].as_u64(), Some(21), "{v}");
    assert!((v["accuracy"].as_f64().unwrap() - 21.0 / 24.0).abs() < 1e-12);
    // By hand, gold counts her 8+2-1=9, him 8-2=6, them 8+1=9; predictions her 8, him 8, them 8.
    // her: right 7 (8 true her minus row 1) -> P 7/8, R 7/9; him: right 6 -> P 6/8, R 6/6;
    // them: right 8 -> P 8/8, R 8/9.
    let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
    let want = (f1(7.0 / 8.0, 7.0 / 9.0) + f1(6.0 / 8.0, 1.0) + f1(1.0, 8.0 / 9.0)) / 3.0;
    assert!((v["macro_f1"].as_f64().unwrap() - want).abs() < 1e-12, "{v}");
    let c = &v["confusions"];
    assert_eq!(c[0]["gold"], "about_her");
    assert_eq!(c[0]["predicted"], "about_him");
    assert_eq!(c[0]["count"], 2);
    assert_eq!(
        (c[1]["gold"].as_str(), c[1]["predicted"].as_str(), c[1]["count"].as_u64()),
        (Some("about_them"), Some("about_her"), Some(1))
    );

    // predict: the label of a training utterance, with the runners-up.
    let (ok, out, err) =
        edgellm(&["intent", "predict", "-m", s(&model), "-k", "3", "--output-format", "json", &rows[2].0]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["label"].as_str(), Some(rows[2].1.as_str()));
    assert_eq!(v["top"].as_array().unwrap().len(), 3);
    let total: f64 = v["top"].as_array().unwrap().iter().map(|t| t["score"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4, "three labels' probabilities sum to 1: {total}");

    // A plain encoder is not an intent model.
    let (ok, _, err) = edgellm(&["intent", "predict", "-m", s(&enc), "the one"]);
    assert!(!ok);
    assert!(err.contains("not an intent model") || err.contains("no intent head"), "{err}");
    // A training file without a tab.
    let bad = dir.join("bad.tsv");
    std::fs::write(&bad, "text\tintent\nno tab here\n").unwrap();
    let (ok, _, err) =
        edgellm(&["intent", "train", "-m", s(&enc), "--data", s(&bad), "-o", s(&dir.join("x.gguf"))]);
    assert!(!ok);
    assert!(err.contains("bad.tsv:2") && err.contains("no tab"), "{err}");
}

#[test]
fn hwu64_expectations_use_the_schema_s_devices_and_actions() {
    for l in edgellm_eval::home::HWU64_IOT_LABELS {
        let e = edgellm_eval::home::hwu64_expected(l).unwrap();
        assert!(edgellm::home::DEVICES.contains(&e.device), "{l}: {}", e.device);
        for a in e.actions {
            assert!(edgellm::home::ACTIONS.contains(a), "{l}: {a}");
        }
    }
}

/// The LLM path on SmolLM2: complete commands under the schema, scored on the labelled
/// utterances whose label has an expected command (the others skipped).
#[test]
fn command_path_on_smollm2() {
    let dir = scratch("command");
    let data = dir.join("iot.tsv");
    let rows: Vec<(String, String)> = [
        ("switch off the light in the garage", "iot_hue_lightoff"),
        ("what is the weather tomorrow", "weather_query"),
        ("turn the kitchen lights off", "iot_hue_lightoff"),
        ("set the lights to blue", "iot_hue_lightchange"),
    ]
    .iter()
    .map(|(t, l)| (t.to_string(), l.to_string()))
    .collect();
    write_tsv(&data, &rows);
    let llm = common::smollm2();
    let (ok, out, err) = edgellm(&[
        "intent",
        "command",
        "-m",
        s(&llm),
        "--data",
        s(&data),
        "--output-format",
        "json",
        "-t",
        "2",
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["scores"]["n"], 3, "the weather query is not scored");
    assert_eq!(v["scores"]["complete"], 3, "constrained output is always a complete command");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        assert!(edgellm::home::DEVICES.contains(&r["device"].as_str().unwrap()), "{r}");
        assert!(edgellm::home::ACTIONS.contains(&r["action"].as_str().unwrap()), "{r}");
    }
    // The plainest command of all comes out right (greedy, so the same every run).
    assert_eq!(
        (results[1]["device"].as_str(), results[1]["action"].as_str()),
        (Some("light"), Some("turn_off"))
    );
    let right = v["scores"]["both_right"].as_u64().unwrap();
    assert!((v["scores"]["both_accuracy"].as_f64().unwrap() - right as f64 / 3.0).abs() < 1e-12);
    assert_eq!(v["latencies_ms"].as_array().unwrap().len(), 3);

    // One-off commands, one JSON line each.
    let (ok, out, err) =
        edgellm(&["intent", "command", "-m", s(&llm), "--output-format", "json", "turn off the porch light"]);
    assert!(ok, "{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["complete"], true);
    assert_eq!(line["device"], "light");

    // An encoder is not a decoder; a file with nothing to score says so.
    let (ok, _, err) = edgellm(&["intent", "command", "-m", s(&common::minilm()), "turn on the lamp"]);
    assert!(!ok);
    assert!(err.contains("decoder") || err.contains("generate"), "{err}");
    let none = dir.join("none.tsv");
    write_tsv(&none, &rows[1..2]);
    let (ok, _, err) = edgellm(&["intent", "command", "-m", s(&llm), "--data", s(&none)]);
    assert!(!ok);
    assert!(err.contains("no utterance has a label"), "{err}");
}

/// `trim-vocab` on an intent model: the training utterances are classified exactly as before
/// (their tokens are all kept); a non-WordPiece model and a file without text are clear errors.
#[test]
fn trim_vocab_keeps_the_training_utterances_exact() {
    let dir = scratch("trim");
    let (_, model, rows, _) = tiny_intent_model(&dir);
    let train = dir.join("train.tsv");
    let trimmed = dir.join("trimmed.gguf");
    let (ok, out, err) = edgellm(&[
        "trim-vocab",
        "-m",
        s(&model),
        "--data",
        s(&train),
        "--keep-common",
        "2",
        "-o",
        s(&trimmed),
    ]);
    assert!(ok, "{err}");
    // The TSV's header line is not counted as text.
    assert!(out.starts_with(&format!("{} lines,", rows.len())), "{out}");
    let kept: Vec<usize> = out
        .split("kept ")
        .nth(1)
        .and_then(|r| r.split(" tokens").next())
        .map(|r| r.split(" of ").map(|n| n.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| panic!("no 'kept N of M tokens' in {out}"));
    assert!(kept[0] <= kept[1], "{out}");
    let texts: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    let predict = |m: &Path| {
        let mut args = vec!["intent", "predict", "-m", s(m), "--output-format", "json"];
        args.extend(&texts);
        let (ok, out, err) = edgellm(&args);
        assert!(ok, "{err}");
        out
    };
    assert_eq!(predict(&model), predict(&trimmed), "training utterances classify exactly as before");

    // SmolLM2's byte-level BPE is not a WordPiece vocabulary.
    let (ok, _, err) = edgellm(&[
        "trim-vocab",
        "-m",
        s(&common::smollm2()),
        "--data",
        s(&train),
        "-o",
        s(&dir.join("x.gguf")),
    ]);
    assert!(!ok);
    assert!(err.contains("WordPiece"), "{err}");
    let empty = dir.join("empty.tsv");
    std::fs::write(&empty, "\n\n").unwrap();
    let (ok, _, err) =
        edgellm(&["trim-vocab", "-m", s(&model), "--data", s(&empty), "-o", s(&dir.join("y.gguf"))]);
    assert!(!ok);
    assert!(err.contains("no text"), "{err}");
}
