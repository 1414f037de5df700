//! `edgellm report smart-home --reduced` end to end on all-MiniLM-L6-v2 and the HWU64 and
//! SNIPS files in `data/`: every configuration is made and measured on both datasets, and the
//! report, its JSON and its charts are written and consistent with each other.

mod common;

use std::process::Command;

use serde_json::Value;

use edgellm_train::smart_home::CONFIGS;

#[test]
fn reduced_smart_home_report_runs_end_to_end() {
    let root = common::root();
    let out = std::env::temp_dir().join(format!("edgellm-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .current_dir(&root)
        .args(["report", "smart-home", "--reduced", "--watts-per-core", "5", "-o"])
        .arg(&out)
        .args(["-m"])
        .arg(common::minilm())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "report failed: {stderr}");

    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("smart-home.json")).unwrap()).unwrap();
    let data = j["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    // (name, train, val, test, labels): the reduced caps of 8 training and 2 test utterances
    // per label, over HWU64's 64 and SNIPS's 7 intents.
    assert_eq!(data[0], serde_json::json!(["hwu64", 512, 128, 128, 64]));
    assert_eq!(data[1], serde_json::json!(["snips", 56, 14, 14, 7]));
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 2 * CONFIGS.len());
    for (i, r) in results.iter().enumerate() {
        let (ds, config) = (r["dataset"].as_str().unwrap(), r["config"].as_str().unwrap());
        assert_eq!(ds, if i < CONFIGS.len() { "hwu64" } else { "snips" });
        assert_eq!(config, CONFIGS[i % CONFIGS.len()]);
        let m = &r["m"];
        let acc = m["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{ds} {config}: accuracy {acc}");
        // Better than chance (1/64, 1/7) even after a reduced training run.
        assert!(acc > if ds == "hwu64" { 0.2 } else { 0.3 }, "{ds} {config}: accuracy {acc}");
        assert_eq!(m["latencies_ms"].as_array().unwrap().len(), if ds == "hwu64" { 32 } else { 14 });
        assert_eq!(m["kernel_tier"].as_str().unwrap() == "scalar", config == "f32-scalar", "{ds} {config}");
        assert!(m["peak_rss_bytes"].as_u64().unwrap() > 10 << 20);
        assert!(m["joules_per_utterance"].as_f64().unwrap() > 0.0);
        let src = m["energy_source"].as_str().unwrap();
        assert!(src == "RAPL" || src.contains("estimate"), "{src}");
        assert!(r["file_bytes"].as_u64().unwrap() > 1 << 20);
        // Every configuration is scored on the validation set too (for choosing).
        let val =
            r["val_accuracy"].as_f64().unwrap_or_else(|| panic!("{ds} {config}: no validation accuracy"));
        assert!(val > if ds == "hwu64" { 0.2 } else { 0.3 }, "{ds} {config}: validation accuracy {val}");
    }
    // Quantized files are smaller than the F32 one they come from; pruning shrinks the file.
    let bytes = |c: &str| results.iter().find(|r| r["config"] == c).unwrap()["file_bytes"].as_u64().unwrap();
    assert!(bytes("q8_0") < bytes("fine-tuned") / 3);
    assert!(bytes("q4_k") < bytes("q8_0"));
    assert!(bytes("q5_0") < bytes("q8_0") - (8 << 20), "Q5_0 matrices and Q4_0 word embeddings");
    assert!(bytes("q5_0-vocab") < bytes("q5_0"));
    // Quantization-aware training changes the values, not the types.
    assert_eq!(bytes("q5_0-qat"), bytes("q5_0"));
    assert_eq!(bytes("q5_0-qat-vocab"), bytes("q5_0-vocab"));
    assert!(bytes("pruned") < bytes("fine-tuned"));
    // A quarter of the heads (q, k, v rows and attn_output columns: 3.5 MB of F32) go as well
    // as half the FFN channels (14.2 MB).
    assert!(bytes("fine-tuned") - bytes("pruned") > 16 << 20, "heads and FFN channels pruned");
    assert!(bytes("pruned-q8_0") < bytes("q8_0"));
    // The trimmed vocabulary (a few thousand of MiniLM's 30 522 tokens) takes most of the
    // embedding table's 12 MB away.
    assert!(bytes("q8_0-vocab") + (8 << 20) < bytes("q8_0"));
    assert!(bytes("pruned-q8_0-vocab") + (8 << 20) < bytes("pruned-q8_0"));
    assert!(bytes("pruned-2:4-q8-vocab") + (8 << 20) < bytes("pruned-2:4-q8"));
    // 2:4 with 8-bit values stored sparse: half the values and their indices, against Q8_0's
    // all the values (the embedding table, most of the bytes, stays Q8_0 in both).
    // Zeros stored densely in F32: the same size, give or take metadata.
    assert!(bytes("pruned-2:4").abs_diff(bytes("fine-tuned")) < 1 << 16);
    assert!(bytes("pruned-2:4-q8") + (3 << 20) < bytes("q8_0"));

    // The LLM path: 6 iot_* commands under the schema, all complete.
    let llm = &j["llm"];
    assert_eq!(llm["n"], 6);
    assert_eq!(llm["complete"], 6);
    assert_eq!(llm["latencies_ms"].as_array().unwrap().len(), 6);
    let both = llm["both_accuracy"].as_f64().unwrap();
    assert!(
        both <= llm["action_accuracy"].as_f64().unwrap() && both <= llm["device_accuracy"].as_f64().unwrap()
    );

    let md = std::fs::read_to_string(out.join("smart-home.md")).unwrap();
    for c in CONFIGS {
        assert!(md.contains(&format!("| {c} |")), "report lacks {c}");
    }
    assert!(md.contains("## Goals"));
    assert!(md.contains("Chosen on validation among the compressed models of at most 12 MB"));
    assert!(md.contains("## The LLM path") && md.contains("| SmolLM2-135M-Instruct.Q4_1.gguf |"));
    for chart in ["latency", "accuracy-size", "pareto"] {
        let png = std::fs::read(out.join(format!("{chart}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{chart}.png");
        assert!(md.contains(&format!("({chart}.png)")));
        assert!(out.join(format!("{chart}.svg")).is_file());
    }
    // Models are deleted once measured unless --keep-models.
    assert!(!out.join("models/hwu64/q8_0.gguf").exists());
    std::fs::remove_dir_all(&out).unwrap();
}
