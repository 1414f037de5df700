//! End-to-end tests of `edgellm embed`, `edgellm similarity` and `edgellm eval sts` on
//! all-MiniLM-L6-v2: output shapes, agreement with the sentence-transformers reference, the
//! STS Benchmark score, and clear errors on bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use edgellm_core::tolerance::embeddings::MIN_COSINE_VS_REFERENCE;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn minilm() -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join("all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-models first",
        p.display()
    );
    p
}

fn edgellm(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A child that fails before reading its input closes the pipe: not an error here.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "edgellm failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The error message of a failed run, checked to be a clean error and not a panic.
fn failure(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "edgellm should have failed; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!err.contains("panicked"), "edgellm panicked: {err}");
    assert!(err.starts_with("edgellm: error:"), "{err}");
    err
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellm-cli-embed-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn golden() -> Vec<(String, Vec<f32>)> {
    let p = root().join("tests/golden/all-minilm-l6-v2.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| {
            let e = it["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            (it["text"].as_str().unwrap().to_string(), e)
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn parse_jsonl(out: &str) -> Vec<Vec<f32>> {
    out.lines()
        .enumerate()
        .map(|(i, l)| {
            assert!(l.starts_with(&format!("{{\"index\":{i},\"embedding\":[")), "{l}");
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["index"], i, "{l}");
            v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect()
}

/// A `.npy` file's shape and float32 data.
fn parse_npy(b: &[u8]) -> ((usize, usize), Vec<f32>) {
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "header not 64-byte aligned");
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': ("), "{header}");
    assert!(header.ends_with('\n'));
    let shape = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let dims: Vec<usize> =
        shape.split(',').map(|s| s.trim()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    let data: Vec<f32> =
        b[10 + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(data.len(), dims[0] * dims[1]);
    ((dims[0], dims[1]), data)
}

#[test]
fn embed_jsonl_from_stdin_matches_the_reference() {
    let m = minilm();
    let g = golden();
    let input: String = g.iter().map(|(t, _)| format!("{t}\n")).collect();
    let out = stdout(&edgellm(&["embed", "-m", m.to_str().unwrap(), "--batch", "4"], input.as_bytes()));
    let got = parse_jsonl(&out);
    assert_eq!(got.len(), g.len());
    for ((text, want), e) in g.iter().zip(&got) {
        assert_eq!(e.len(), 384);
        let c = cosine(e, want);
        assert!(c >= MIN_COSINE_VS_REFERENCE, "{text:?}: cosine {c}");
    }
}

#[test]
fn embed_npy_equals_jsonl() {
    let m = minilm();
    let d = scratch("npy");
    let input = d.join("in.txt");
    std::fs::write(
        &input,
        "The cat sat on the mat.\r\nA man is playing a guitar.\n\nlast line without newline",
    )
    .unwrap();
    let npy = d.join("out.npy");
    let i = input.to_str().unwrap();
    let o = edgellm(
        &[
            "embed",
            "-m",
            m.to_str().unwrap(),
            "--input",
            i,
            "--output-format",
            "npy",
            "-o",
            npy.to_str().unwrap(),
        ],
        b"",
    );
    stdout(&o);
    let (shape, data) = parse_npy(&std::fs::read(&npy).unwrap());
    assert_eq!(shape, (4, 384));
    let jsonl = parse_jsonl(&stdout(&edgellm(&["embed", "-m", m.to_str().unwrap(), "-i", i], b"")));
    assert_eq!(jsonl.concat(), data, "npy and jsonl differ");
    // npy to a pipe works too.
    let piped = edgellm(&["embed", "-m", m.to_str().unwrap(), "-i", i, "--output-format", "npy"], b"");
    assert!(piped.status.success());
    assert_eq!(parse_npy(&piped.stdout).1, data);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn similarity_prints_the_cosine() {
    let m = minilm();
    let m = m.to_str().unwrap();
    let sim = |a: &str, b: &str| -> f64 {
        stdout(&edgellm(&["similarity", "-m", m, a, b], b"")).trim().parse().unwrap()
    };
    let same = sim("The cat sat on the mat.", "The cat sat on the mat.");
    assert!((same - 1.0).abs() < 1e-5, "{same}");
    let close = sim("Turn on the lights in the kitchen.", "Switch the kitchen lights on.");
    let far = sim(
        "Turn on the lights in the kitchen.",
        "Quantization reduces the memory footprint of neural networks.",
    );
    assert!(close > 0.7 && far < 0.3 && close > far, "close {close} far {far}");
    let g = golden();
    let want = cosine(&g[0].1, &g[1].1);
    assert!((close - want).abs() < 1e-4, "similarity {close} vs reference {want}");
}

#[test]
#[cfg_attr(debug_assertions, ignore = "evaluates 2758 sentences: run with --release")]
fn eval_sts_benchmark_spearman() {
    let m = minilm();
    let data = root().join("data/stsb/sts-test.tsv");
    let o = edgellm(
        &[
            "eval",
            "sts",
            "-m",
            m.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--output-format",
            "json",
        ],
        b"",
    );
    let r: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    eprintln!("{r}");
    let s = r["spearman"].as_f64().unwrap();
    assert!((s - 82.03).abs() <= 0.05, "STS-B test Spearman {s:.3}, sentence-transformers reports 82.03");
    assert_eq!(r["pairs"], 1379);
    assert!(r["sentences_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn eval_sts_text_report() {
    let m = minilm();
    let d = scratch("sts-text");
    let full = std::fs::read_to_string(root().join("data/stsb/sts-test.tsv")).unwrap();
    let small: String = full.lines().take(21).map(|l| format!("{l}\n")).collect();
    let f = d.join("small.tsv");
    std::fs::write(&f, small).unwrap();
    let out =
        stdout(&edgellm(&["eval", "sts", "-m", m.to_str().unwrap(), "--data", f.to_str().unwrap()], b""));
    assert!(out.contains("20 pairs"), "{out}");
    for key in ["spearman (cosine) x100:", "sentences/s", "peak RSS:"] {
        assert!(out.contains(key), "{key} missing in {out}");
    }
    std::fs::write(&f, "score\tsentence1\tsentence2\n2.5\tonly two fields\n").unwrap();
    let err =
        failure(&edgellm(&["eval", "sts", "-m", m.to_str().unwrap(), "--data", f.to_str().unwrap()], b""));
    assert!(err.contains("small.tsv:2:"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_inputs_give_clear_errors() {
    let m = minilm();
    let m = m.to_str().unwrap();
    let err = failure(&edgellm(&["embed", "-m", m], b"fine\n\xc3\x28 broken\nfine\n"));
    assert!(err.contains("input line 2 is not valid UTF-8"), "{err}");

    let err = failure(&edgellm(&["embed", "-m", m], b""));
    assert!(err.contains("the input is empty"), "{err}");
    let d = scratch("errors");
    let empty = d.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = failure(&edgellm(&["embed", "-m", m, "--input", empty.to_str().unwrap()], b""));
    assert!(err.contains("the input is empty"), "{err}");

    let missing = d.join("no-such-model");
    let err = failure(&edgellm(&["embed", "-m", missing.to_str().unwrap()], b"hello\n"));
    assert!(err.contains("no-such-model") && err.contains("does not exist"), "{err}");
    let err = failure(&edgellm(&["similarity", "-m", missing.to_str().unwrap(), "a", "b"], b""));
    assert!(err.contains("does not exist"), "{err}");

    let corrupt = d.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(Path::new(m).join(f), corrupt.join(f)).unwrap();
    }
    std::fs::write(corrupt.join("model.safetensors"), b"definitely not a safetensors file").unwrap();
    let err = failure(&edgellm(&["embed", "-m", corrupt.to_str().unwrap()], b"hello\n"));
    assert!(err.contains("invalid safetensors file"), "{err}");

    let no_tok = d.join("no-tokenizer");
    std::fs::create_dir_all(&no_tok).unwrap();
    std::fs::copy(Path::new(m).join("config.json"), no_tok.join("config.json")).unwrap();
    std::fs::write(no_tok.join("model.safetensors"), b"x").unwrap();
    let err = failure(&edgellm(&["embed", "-m", no_tok.to_str().unwrap()], b"hello\n"));
    assert!(err.contains("tokenizer.json") && err.contains("is missing"), "{err}");

    let err =
        failure(&edgellm(&["eval", "sts", "-m", m, "--data", d.join("nope.tsv").to_str().unwrap()], b""));
    assert!(err.contains("nope.tsv"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}
