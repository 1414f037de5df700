//! `edgellm calibrate-sparsity` and `--act-sparsity` end to end on the real SmolLM2 (requantized
//! to Q4_0, the type with column-skipping kernels), at a reduced size so it runs in seconds:
//! the file written keeps every tensor and key, the thresholds give the requested sparsity on
//! held-out text within 2 points, and the flag's errors say what to do.

use std::path::PathBuf;
use std::process::{Command, Output};

use edgellm_formats::GgufFile;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn smollm2() -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

fn edgellm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgellm")).args(args).output().unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellm-act-sparsity-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn calibrate_then_run_bench_and_eval_with_act_sparsity() {
    let q4 = tmp("q4_0.gguf");
    ok(&edgellm(&["quantize", smollm2().to_str().unwrap(), q4.to_str().unwrap(), "--type", "Q4_0"]));
    let out = tmp("teal.gguf");
    let valid = root().join("data/wikitext-2/wiki.valid.tokens");
    let test = root().join("data/wikitext-2/wiki.test.raw");
    let text = ok(&edgellm(&[
        "calibrate-sparsity",
        "-m",
        q4.to_str().unwrap(),
        "--calib",
        valid.to_str().unwrap(),
        "--sparsity",
        "0.5,0.25",
        "-o",
        out.to_str().unwrap(),
        "--ctx",
        "256",
        "--chunks",
        "6",
        "--heldout",
        test.to_str().unwrap(),
        "--heldout-chunks",
        "3",
    ]));
    // Held-out measurement within ±2 points of each level.
    for level in [0.25, 0.5] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("level {level}: held-out")))
            .unwrap_or_else(|| panic!("no held-out line for {level}:\n{text}"));
        let pct: f64 = line.split(") ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
        assert!((pct - 100.0 * level).abs() <= 2.0, "level {level}: held-out {pct} %\n{text}");
    }
    // Everything else unchanged: the same tensors (same bytes), the same keys plus ours.
    let (a, b) = (GgufFile::open(&q4).unwrap(), GgufFile::open(&out).unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for t in &a.tensors {
        let u = b.tensor(&t.name).unwrap();
        assert_eq!((u.dtype, &u.dims), (t.dtype, &t.dims));
        assert!(a.tensor_data(t) == b.tensor_data(u), "{} changed", t.name);
    }
    for (k, v) in &a.metadata {
        assert_eq!(b.get(k), Some(v), "{k}");
    }
    let th = edgellm_models::act_sparsity::Thresholds::from_gguf(&b).unwrap().unwrap();
    assert_eq!(th.levels, [0.25, 0.5]);
    assert_eq!(th.tensors.len(), 30 * 7);
    for (t, name) in th.tensors.iter().enumerate() {
        assert!(th.values[0][t] > 0.0 && th.values[0][t] < th.values[1][t], "{name}");
    }

    // run: greedy text differs from dense at 50 % but is produced.
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "-m",
            out.to_str().unwrap(),
            "-p",
            "The capital of France is",
            "-n",
            "12",
            "--temp",
            "0",
        ];
        args.extend_from_slice(extra);
        ok(&edgellm(&args))
    };
    let dense = run(&[]);
    let sparse = run(&["--act-sparsity", "0.5"]);
    assert!(!sparse.trim().is_empty());
    assert_ne!(dense, sparse, "50 % activation sparsity changed no token");

    // bench reads fewer weight bytes per decode token.
    let bytes = |extra: &[&str]| -> f64 {
        let mut args = vec![
            "bench",
            "-m",
            out.to_str().unwrap(),
            "-p",
            "0",
            "-n",
            "4",
            "-r",
            "1",
            "--output-format",
            "json",
        ];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(ok(&edgellm(&args)).trim()).unwrap();
        v["weight_bytes_per_token"].as_f64().unwrap()
    };
    let (d, s) = (bytes(&[]), bytes(&["--act-sparsity", "0.5"]));
    assert!(s < 0.85 * d, "sparse {s} vs dense {d} bytes per token");

    // eval ppl thresholds every token: a different perplexity.
    let ppl = |extra: &[&str]| -> f64 {
        let mut args = vec![
            "eval",
            "ppl",
            "-m",
            out.to_str().unwrap(),
            "-f",
            test.to_str().unwrap(),
            "-c",
            "128",
            "--chunks",
            "2",
            "--output-format",
            "json",
        ];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(ok(&edgellm(&args)).trim()).unwrap();
        v["ppl"].as_f64().unwrap()
    };
    let (p0, p5) = (ppl(&[]), ppl(&["--act-sparsity", "0.5"]));
    assert!(p5.is_finite() && p5 != p0, "ppl dense {p0} vs 50 % {p5}");

    // Errors: a level not calibrated names the ones there; a file without thresholds names
    // the command that makes them.
    let e = edgellm(&["run", "-m", out.to_str().unwrap(), "-p", "hi", "-n", "1", "--act-sparsity", "0.4"]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && msg.contains("0.25, 0.5"), "{msg}");
    let e = edgellm(&["bench", "-m", q4.to_str().unwrap(), "-p", "0", "-n", "1", "--act-sparsity", "0.4"]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && msg.contains("calibrate-sparsity"), "{msg}");
    let e = edgellm(&["run", "-m", out.to_str().unwrap(), "-p", "hi", "--act-sparsity", "1.5"]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("(0, 1)"));

    // The memory guard counts the column-blocked copies: a limit the model fits in without
    // activation sparsity (file + 32 MiB for the 256-position cache and buffers) refuses it
    // with, naming the copies (SmolLM2 Q4_0: about 57 MiB of them).
    let limit = (std::fs::metadata(&out).unwrap().len() + (32 << 20)).to_string();
    let guarded = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgellm"))
            .args(["run", "-m", out.to_str().unwrap(), "-p", "hi", "-n", "1", "-c", "256"])
            .args(extra)
            .env("EDGELLM_MEMORY_LIMIT", &limit)
            .output()
            .unwrap()
    };
    ok(&guarded(&[]));
    let e = guarded(&["--act-sparsity", "0.5"]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && msg.contains("not enough memory") && msg.contains("column copies"),
        "{msg}"
    );
}

#[test]
fn calibrate_sparsity_checks_its_flags() {
    let e = edgellm(&[
        "calibrate-sparsity",
        "-m",
        "nope.gguf",
        "--calib",
        "x",
        "--sparsity",
        "0.4",
        "-o",
        "o.gguf",
    ]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("does not exist"));
    let e = edgellm(&[
        "calibrate-sparsity",
        "-m",
        smollm2().to_str().unwrap(),
        "--calib",
        root().join("data/wikitext-2/wiki.valid.tokens").to_str().unwrap(),
        "--sparsity",
        "0",
        "-o",
        tmp("never.gguf").to_str().unwrap(),
    ]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("fraction in (0, 1)"));
}
