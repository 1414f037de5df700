//! End-to-end tests of `edgellm prune` on the real models: N:M then Q8_0 on SmolLM2 (zeros
//! survive the quantization), Wanda on MiniLM from safetensors, structured FFN pruning, and
//! clear errors for bad requests.

use std::path::PathBuf;
use std::process::{Command, Output};

use edgellm_core::DType;
use edgellm_formats::{GgufFile, GgufWriter, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

fn smollm2() -> String {
    model("SmolLM2-135M-Instruct.Q4_1.gguf").to_str().unwrap().to_string()
}

fn calib() -> String {
    root().join("data/wikitext-2/wiki.valid.tokens").to_str().unwrap().to_string()
}

fn edgellm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgellm")).args(args).output().unwrap()
}

fn tmp(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("edgellm-prune-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name).to_str().unwrap().to_string()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn values(f: &GgufFile, name: &str) -> (Vec<f32>, usize) {
    let t = f.need_tensor(name).unwrap();
    let v = edgellm_core::quant::dequantize(t.dtype, f.tensor_data(t), t.n_elements() as usize).unwrap();
    (v, t.row_len() as usize)
}

#[test]
fn two_four_then_q8_0_keeps_the_pattern_and_runs() {
    let out = tmp("smollm2-24-q8.gguf");
    let text = ok(&edgellm(&[
        "prune",
        &smollm2(),
        &out,
        "--method",
        "magnitude",
        "--pattern",
        "2:4",
        "--then-quantize",
        "Q8_0",
    ]));
    assert!(text.contains("2:4") && text.contains("210 tensors pruned") && text.contains("Q8_0"), "{text}");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get("edgellm.pruning.pattern").and_then(|v| v.as_str()), Some("2:4"));
    for name in ["blk.0.attn_q.weight", "blk.7.attn_v.weight", "blk.29.ffn_down.weight"] {
        assert_eq!(f.need_tensor(name).unwrap().dtype, DType::Q8_0);
        let (v, k) = values(&f, name);
        for (r, row) in v.chunks_exact(k).enumerate() {
            for g in row.chunks(4) {
                assert!(g.iter().filter(|&&x| x != 0.0).count() <= 2, "{name} row {r}: {g:?}");
            }
        }
    }
    // Embeddings are not pruned.
    let (v, _) = values(&f, "token_embd.weight");
    assert!(v.iter().filter(|&&x| x == 0.0).count() < v.len() / 10);
    let r = ok(&edgellm(&["run", "-m", &out, "-p", "The capital of France is", "-n", "4", "--temp", "0"]));
    assert!(!r.trim().is_empty());
}

#[test]
fn wanda_on_minilm_from_safetensors_prunes_every_row_and_embeds() {
    let dir = model("all-MiniLM-L6-v2");
    let out = tmp("minilm-wanda.gguf");
    let text = ok(&edgellm(&[
        "prune",
        dir.to_str().unwrap(),
        &out,
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
        "--calib",
        &calib(),
        "--chunks",
        "2",
    ]));
    assert!(text.contains("36 tensors pruned"), "{text}");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.architecture().unwrap(), "bert");
    for l in 0..6 {
        for role in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down"] {
            let name = format!("blk.{l}.{role}.weight");
            let (v, k) = values(&f, &name);
            for row in v.chunks_exact(k) {
                assert_eq!(row.iter().filter(|&&x| x == 0.0).count(), k / 2, "{name}");
            }
        }
    }
    let s = ok(&edgellm(&[
        "similarity",
        "-m",
        &out,
        "turn on the kitchen lights",
        "switch the kitchen light on",
    ]));
    let cos: f64 = s.split_whitespace().last().unwrap().parse().unwrap();
    assert!(cos > 0.5 && cos <= 1.0, "{s}");
}

#[test]
fn structured_ffn_pruning_writes_a_smaller_model_that_runs() {
    let out = tmp("smollm2-ffn.gguf");
    let text = ok(&edgellm(&[
        "prune",
        &smollm2(),
        &out,
        "--structured",
        "ffn",
        "--ratio",
        "0.25",
        "--calib",
        &calib(),
        "--chunks",
        "1",
        "-c",
        "64",
    ]));
    assert!(text.contains("FFN channels 1536 -> 1152"), "{text}");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get("llama.feed_forward_length"), Some(&Value::U32(1152)));
    assert_eq!(f.need_tensor("blk.3.ffn_down.weight").unwrap().dims, vec![1152, 576]);
    assert_eq!(f.need_tensor("blk.3.ffn_up.weight").unwrap().dims, vec![576, 1152]);
    let r = ok(&edgellm(&["run", "-m", &out, "-p", "Hello", "-n", "3", "--temp", "0"]));
    assert!(!r.trim().is_empty());
}

fn fails(args: &[&str], needle: &str) {
    let o = edgellm(args);
    assert!(!o.status.success(), "{args:?} succeeded");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(needle), "{args:?}: expected {needle:?} in: {e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn bad_requests_are_clear_errors() {
    let m = smollm2();
    let out = tmp("bad.gguf");
    fails(&["prune", &m, &out, "--method", "magnitude", "--sparsity", "1.0"], "outside [0, 1)");
    fails(&["prune", &m, &out, "--method", "magnitude", "--sparsity=-0.2"], "outside [0, 1)");
    fails(&["prune", &m, &out, "--method", "magnitude", "--pattern", "2:5"], "groups of 5 do not divide");
    fails(&["prune", &m, &out, "--method", "magnitude", "--pattern", "4:2"], "0 < N < M");
    fails(&["prune", &m, &out, "--method", "wanda", "--sparsity", "0.5"], "needs --calib");
    fails(&["prune", &m, &out, "--method", "random", "--sparsity", "0.5"], "magnitude, wanda or sparsegpt");
    fails(
        &[
            "prune",
            &m,
            &out,
            "--structured",
            "heads",
            "--ratio",
            "0.9",
            "--calib",
            &calib(),
            "--chunks",
            "1",
            "-c",
            "32",
        ],
        "removes every query head",
    );
    fails(
        &["prune", &m, &out, "--structured", "layers", "--ratio", "1.5", "--calib", &calib()],
        "outside (0, 1)",
    );
    fails(
        &["prune", "/nonexistent.gguf", &out, "--method", "magnitude", "--sparsity", "0.5"],
        "does not exist",
    );
    // A GGUF of an architecture edgellm does not prune.
    let odd = tmp("mamba.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("mamba".into()));
    w.add_tensor("blk.0.attn_q.weight", &[4, 4], DType::F32, vec![0u8; 64]).unwrap();
    w.write_file(&odd).unwrap();
    fails(&["prune", &odd, &out, "--method", "magnitude", "--sparsity", "0.5"], "cannot be pruned");
    assert!(!std::path::Path::new(&out).exists(), "a failed run wrote its output");
}

/// The first ~8 KiB of WikiText-2 test (two chunks of 128 tokens), in a temporary file.
fn short_text() -> String {
    let text = std::fs::read_to_string(root().join("data/wikitext-2/wiki.test.raw")).unwrap();
    let cut = 8192 + text[8192..].find('\n').unwrap();
    let f = tmp("wiki-short.txt");
    std::fs::write(&f, &text[..cut + 1]).unwrap();
    f
}

#[test]
fn format_sparse_writes_sparse_types_that_compute_like_the_dense_export() {
    let text = short_text();
    let m = smollm2();
    for (pattern, quant, want) in [
        (["--pattern", "2:4"], "Q8_0", DType::Q8_S24),
        (["--pattern", "4:8"], "Q4_0", DType::Q4_S48),
        // 30 %, not 70 %: magnitude pruning at 70 % leaves SmolLM2 at a perplexity of 10⁵, where
        // any rounding difference is amplified; the type does not depend on the level.
        (["--sparsity", "0.3"], "Q8_0", DType::Q8_SB),
    ] {
        let tag = format!("{}-{quant}", pattern[1].replace(':', ""));
        let (dense, sparse) = (tmp(&format!("d-{tag}.gguf")), tmp(&format!("s-{tag}.gguf")));
        for (out, format) in [(&dense, "dense"), (&sparse, "sparse")] {
            let args = [&["prune", &m, out, "--method", "magnitude"][..], &pattern[..]].concat();
            let text = ok(&edgellm(&[&args[..], &["--then-quantize", quant, "--format", format]].concat()));
            if format == "sparse" {
                assert!(text.contains(&format!("stored sparse: 210 tensors {quant} -> {want}")), "{text}");
            }
        }
        let f = GgufFile::open(&sparse).unwrap();
        assert_eq!(f.get("edgellm.sparse.version").and_then(|v| v.as_u64()), Some(1));
        for name in ["blk.0.attn_q.weight", "blk.29.ffn_down.weight"] {
            assert_eq!(f.need_tensor(name).unwrap().dtype, want, "{name}");
        }
        // Embeddings are not pruned: they keep the plan's dense type.
        let embd = f.need_tensor("token_embd.weight").unwrap().dtype;
        assert!(!edgellm_models::linear::is_sparse(embd), "token_embd.weight is {embd}");
        assert_eq!(f.tensor("blk.0.attn_q.weight.values").is_some(), want == DType::Q8_SB);
        let (ds, ss) = (std::fs::metadata(&dense).unwrap().len(), std::fs::metadata(&sparse).unwrap().len());
        assert!(ss < ds * 9 / 10, "{want}: sparse file {ss} bytes vs dense {ds}");

        // The sparse model runs, and computes what the dense export of the same pruning does.
        let r =
            ok(&edgellm(&["run", "-m", &sparse, "-p", "The capital of France is", "-n", "4", "--temp", "0"]));
        assert!(!r.trim().is_empty());
        let o = ok(&edgellm(&[
            "eval",
            "kld",
            "--base",
            &dense,
            "-m",
            &sparse,
            "-f",
            &text,
            "-c",
            "128",
            "--chunks",
            "2",
            "--output-format",
            "json",
        ]));
        let k: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
        let kld = k["kld_mean"]["value"].as_f64().unwrap();
        let ratio = k["ppl_ratio"]["value"].as_f64().unwrap();
        if quant == "Q8_0" {
            // 8-bit values: the same model to within rounding — one scale per 64 inputs in the
            // sparse file, per 32 in the dense one. On this damaged model (PPL ~940) that
            // rounding alone is a KLD of about 0.0098 for 2:4 (measured with the scalar oracle
            // on both files, EDGELLM_KERNELS=scalar), and the SIMD kernels' summation order
            // moves it by about ±5 % (0.0095 with the sparse kernels, 0.0100 through the
            // packed ones): the bound leaves room for that; a kernel computing anything else
            // lands far above it.
            assert!(kld < 0.015, "{want}: KLD {kld} against the dense export\n{o}");
        } else {
            // 4-bit values with one scale per 32 kept values instead of per 32 inputs: another
            // rounding of a model magnitude pruning has damaged (PPL in the hundreds), so only
            // the same order of perplexity is asserted here; the kernels' equality with the
            // dense ones is tested in crates/core/tests/sparse.rs.
            assert!(ratio > 0.5 && ratio < 2.0, "{want}: PPL ratio {ratio} to the dense export\n{o}");
        }

        let i = ok(&edgellm(&["inspect", &sparse, "--no-tensors"]));
        assert!(i.contains(want.name()) && i.contains("sparse extension version 1"), "{i}");
        let _ = std::fs::remove_file(&dense);
        let _ = std::fs::remove_file(&sparse);
    }
}

#[test]
fn format_sparse_refuses_what_it_cannot_store() {
    let out = tmp("never.gguf");
    let m = smollm2();
    for (extra, why) in [
        (&["--pattern", "2:4"][..], "needs --then-quantize"),
        (&["--pattern", "2:4", "--then-quantize", "F16"][..], "4- or 8-bit values"),
        (&["--sparsity", "0.7", "--then-quantize", "Q4_0"][..], "use --then-quantize Q8_0"),
        (&["--pattern", "1:4", "--then-quantize", "Q4_0"][..], "2:4 and 4:8"),
        (
            &[
                "--pattern",
                "2:4",
                "--then-quantize",
                "Q4_0",
                "--quant-method",
                "weighted",
                "--calib",
                &calib(),
            ][..],
            "round-to-nearest",
        ),
    ] {
        let args = [&["prune", &m, &out, "--method", "magnitude", "--format", "sparse"][..], extra].concat();
        let o = edgellm(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{extra:?}: {err}");
        assert!(!std::path::Path::new(&out).exists(), "{extra:?} wrote a file");
    }
    let o = edgellm(&["prune", &m, &out, "--method", "magnitude", "--pattern", "2:4", "--format", "bogus"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("use dense"), "{o:?}");
}
