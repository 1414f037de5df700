//! End-to-end tests of the `edgellm` binary on the real SmolLM2 model: the exact output shapes
//! users and scripts rely on, and clear errors on bad input.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

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

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "edgellm failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn golden() -> Value {
    let p = root().join("tests/golden/smollm2-135m-instruct-q4_1.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn tokenize_prints_a_json_array_matching_llama_cpp() {
    let m = smollm2();
    for case in golden()["tokenize"].as_array().unwrap().iter().take(6) {
        let text = case["text"].as_str().unwrap();
        let out = stdout(&edgellm(&["tokenize", "-m", m.to_str().unwrap(), text]));
        let got: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(got, case["ids"], "{text:?}");
    }
    let special = stdout(&edgellm(&["tokenize", "-m", m.to_str().unwrap(), "--special", "<|im_end|>"]));
    assert_eq!(special.trim(), "[2]");
    let plain = stdout(&edgellm(&["tokenize", "-m", m.to_str().unwrap(), "<|im_end|>"]));
    assert_ne!(plain.trim(), "[2]");
}

/// Greedy decoding with `--exact` (f32 activations) reproduces the exact-math reference's
/// continuation; the fast path may part from llama.cpp's at near-ties (this prompt's third
/// token has a top-2 gap of 0.197 in exact math), which the model tests cover with gaps.
#[test]
fn run_json_greedy_matches_the_reference_and_has_the_documented_shape() {
    let m = smollm2();
    let p = root().join("tests/golden/smollm2-135m-instruct-q4_1.exact.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let case = &g["greedy"][1];
    let prompt = case["prompt"].as_str().unwrap();
    let out = stdout(&edgellm(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-p",
        prompt,
        "-n",
        "12",
        "--temp",
        "0",
        "--exact",
        "--output-format",
        "json",
    ]));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["prompt_ids"], case["prompt_ids"]);
    let want: Vec<Value> =
        case["continuation"].as_array().unwrap()[..12].iter().map(|s| s["id"].clone()).collect();
    assert_eq!(v["ids"].as_array().unwrap(), &want);
    assert!(v["text"].as_str().unwrap().len() > 10);
    for k in ["load_ms", "prompt_tokens_per_s", "gen_tokens_per_s"] {
        assert!(v["timings"][k].as_f64().unwrap() > 0.0, "timings.{k}");
    }
}

#[test]
fn same_seed_same_text_and_text_mode_streams() {
    let m = smollm2();
    let args = |seed: &str| {
        edgellm(&[
            "run",
            "-m",
            m.to_str().unwrap(),
            "-p",
            "Once upon a time",
            "-n",
            "12",
            "--temp",
            "1.0",
            "--seed",
            seed,
            "--top-k",
            "0",
            "--top-p",
            "1",
            "--min-p",
            "0",
        ])
    };
    let a = stdout(&args("42"));
    let b = stdout(&args("42"));
    assert_eq!(a, b);
    assert!(!a.trim().is_empty());
}

#[test]
fn chat_keeps_history_and_exits_on_eof() {
    let m = smollm2();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args(["chat", "-m", m.to_str().unwrap(), "--temp", "0", "-n", "16", "--exact"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"What is the capital of France?\nAnd of Italy?\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    let replies: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(replies.len() >= 2, "expected two replies, got {text:?}");
    assert!(text.contains("Paris"), "{text:?}");
    assert!(text.contains("Rome"), "the second turn lost the history or failed: {text:?}");
}

#[test]
fn inspect_shows_metadata_tensors_and_totals() {
    let out = stdout(&edgellm(&["inspect", smollm2().to_str().unwrap()]));
    assert!(out.contains("llama.block_count"));
    assert!(out.contains("blk.0.attn_q.weight"));
    assert!(out.contains("Q4_1"));
    assert!(out.contains("272 tensors"));
}

#[test]
fn bad_inputs_give_clear_errors() {
    let o = edgellm(&["run", "-m", "/nonexistent.gguf", "-p", "hi"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));

    let dir = std::env::temp_dir().join(format!("edgellm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"this is not a model").unwrap();
    let o = edgellm(&["run", "-m", bad.to_str().unwrap(), "-p", "hi"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a GGUF file"));

    let full = std::fs::read(smollm2()).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let o = edgellm(&["inspect", cut.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();

    let long = "word ".repeat(100);
    let o = edgellm(&["run", "-m", smollm2().to_str().unwrap(), "-p", &long, "-c", "32"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("context holds 32"), "{err}");
}

/// A weight block whose scale is NaN: `inspect --check` names the tensor, block, row and column
/// and fails; generating from the file is refused with a typed error instead of garbage text;
/// the intact model passes the check.
#[test]
fn nan_weights_are_found_by_inspect_check_and_refused_by_run() {
    let ok = edgellm(&["inspect", "--no-tensors", "--check", smollm2().to_str().unwrap()]);
    let out = stdout(&ok);
    assert!(out.contains("272 tensors clean") && out.contains("ok: every decoded weight"), "{out}");

    let f = edgellm_formats::GgufFile::open(smollm2()).unwrap();
    let t = f.tensor("blk.5.ffn_down.weight").unwrap();
    assert_eq!((t.dtype, t.dims[0]), (edgellm_core::DType::Q4_1, 1536));
    // Q4_1 block: f16 scale d, f16 minimum m, 16 bytes of 4-bit codes. Block 7 = row 0, columns 224..256.
    let at = (f.data_offset + t.offset) as usize + 7 * t.dtype.type_size();
    let mut bytes = std::fs::read(smollm2()).unwrap();
    drop(f);
    bytes[at..at + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    let dir = std::env::temp_dir().join(format!("edgellm-cli-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("nan.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let bad = bad.to_str().unwrap();

    let o = edgellm(&["inspect", "--no-tensors", "--check", bad]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("blk.5.ffn_down.weight (Q4_1): 32 NaN, 0 infinite, 0 too large, in 1 of its blocks"),
        "{out}"
    );
    assert!(out.contains("block 7 (row 0, column 224): NaN"), "{out}");
    assert!(out.contains("271 tensors clean"), "{out}");
    assert!(err.contains("numeric check failed: 1 tensor(s)"), "{err}");

    let o = edgellm(&["run", "-m", bad, "-p", "Hello", "-n", "4"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "garbage was generated: {}", String::from_utf8_lossy(&o.stdout));
    assert!(
        err.contains("NaN or infinite logits after 0 generated tokens") && err.contains("inspect --check"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A directory or a special file given as the model names the path and what to pass instead
/// (not an OS error such as "No such device"), and a FIFO is refused without blocking on it.
#[test]
fn directories_and_special_files_as_model_are_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("edgellm-cli-special-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let err = |o: Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // Commands that load through the engine: a directory must be a model directory.
    for cmd in [&["run", "-m", d, "-p", "hi"][..], &["tokenize", "-m", d, "hi"]] {
        let e = err(edgellm(cmd));
        assert!(e.contains(d) && e.contains("config.json"), "{cmd:?}: {e}");
        assert!(!e.contains("os error"), "{cmd:?}: {e}");
    }
    // Commands that read a GGUF file only.
    let text = dir.join("calib.txt");
    std::fs::write(&text, "some text").unwrap();
    for cmd in [
        &["bench", "-m", d][..],
        &["inspect", d],
        &["imatrix", "-m", d, "--file", text.to_str().unwrap()],
        &["eval", "ppl", "-m", d, "-f", text.to_str().unwrap()],
    ] {
        let e = err(edgellm(cmd));
        assert!(e.contains(&format!("{d} is a directory, not a GGUF file")), "{cmd:?}: {e}");
        assert!(e.contains("pass the path of a .gguf"), "{cmd:?}: {e}");
        assert!(!e.contains("os error"), "{cmd:?}: {e}");
    }
    // A character device.
    for cmd in [&["run", "-m", "/dev/null", "-p", "hi"][..], &["bench", "-m", "/dev/zero"]] {
        let e = err(edgellm(cmd));
        assert!(e.contains("is a character device, not a"), "{cmd:?}: {e}");
    }
    // A named pipe nobody writes to: refused at once instead of blocking in open().
    #[cfg(unix)]
    {
        let fifo = dir.join("pipe.gguf");
        let made = Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
        if made {
            let f = fifo.to_str().unwrap();
            for cmd in [&["run", "-m", f, "-p", "hi"][..], &["inspect", f]] {
                let mut child = Command::new(env!("CARGO_BIN_EXE_edgellm"))
                    .args(cmd)
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let t0 = std::time::Instant::now();
                while child.try_wait().unwrap().is_none() {
                    if t0.elapsed() > std::time::Duration::from_secs(30) {
                        child.kill().ok();
                        panic!("{cmd:?} blocked on a FIFO");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let e = err(child.wait_with_output().unwrap());
                assert!(e.contains("is a named pipe (FIFO), not a"), "{cmd:?}: {e}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The memory guard (limit injected with EDGELLM_MEMORY_LIMIT): a context that does not fit is
/// refused with the numbers, the limit's source and the largest context that fits; that
/// context then loads (a model that fits is never refused) and one more position does not.
#[test]
fn memory_guard_refuses_with_numbers_and_names_a_context_that_fits() {
    let m = smollm2();
    let file = std::fs::metadata(&m).unwrap().len();
    let limit = (file + (64 << 20)).to_string();
    let run = |limit: &str, ctx: usize| {
        Command::new(env!("CARGO_BIN_EXE_edgellm"))
            .args(["run", "-m", m.to_str().unwrap(), "-p", "Hi", "-n", "1", "-c", &ctx.to_string()])
            .env("EDGELLM_MEMORY_LIMIT", limit)
            .output()
            .unwrap()
    };
    // Less than the weights.
    let o = run("50M", 256);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("not enough memory") && e.contains("50.0 MiB is available (from EDGELLM_MEMORY_LIMIT)"),
        "{e}"
    );
    assert!(e.contains("the weights alone do not fit"), "{e}");

    // Weights fit, a 8192-position cache does not.
    let o = run(&limit, 8192);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(e.contains("of KV cache for 8192 positions"), "{e}");
    let fits: usize = e
        .split("-c ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no context suggested: {e}"));
    assert!((1..8192).contains(&fits), "{e}");
    let o = run(&limit, fits);
    assert!(o.status.success(), "-c {fits} was said to fit: {}", String::from_utf8_lossy(&o.stderr));
    let o = run(&limit, fits + 1);
    assert!(!o.status.success(), "-c {} should not fit under {limit} bytes", fits + 1);

    let o = run("plenty", 256);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a size"));

    // The server's slots are counted before the model is loaded: 8 caches of 4096 positions do
    // not fit, the suggested number of slots does.
    let serve = |parallel: usize| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgellm"))
            .args(["serve", "-m", m.to_str().unwrap(), "--port", "0", "-c", "4096", "-t", "1"])
            .args(["--parallel", &parallel.to_string()])
            .env("EDGELLM_MEMORY_LIMIT", "400M")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first)
            .unwrap();
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        (first, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (out, e) = serve(8);
    assert!(out.is_empty(), "8 slots were served under 400M: {out}");
    assert!(e.contains("720.0 MiB of KV cache for 8 slots × 4096 positions"), "{e}");
    let slots: usize = e
        .split("--parallel ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no slot count suggested: {e}"));
    assert!((1..8).contains(&slots), "{e}");
    let (out, e) = serve(slots);
    assert!(out.contains("listening on"), "--parallel {slots} was said to fit: {e}");
}

#[test]
fn eval_ppl_and_kld_json() {
    let m = smollm2();
    let m = m.to_str().unwrap();
    // The first ~8 KiB of WikiText-2 (cut at a line end) hold the 2 chunks of 128 tokens.
    let text = std::fs::read_to_string(root().join("data/wikitext-2/wiki.test.raw")).unwrap();
    let cut = 8192 + text[8192..].find('\n').unwrap();
    let f = std::env::temp_dir().join(format!("edgellm-cli-ppl-{}.txt", std::process::id()));
    std::fs::write(&f, &text[..cut + 1]).unwrap();
    let f = f.to_str().unwrap();
    let common = ["-f", f, "-c", "128", "--chunks", "2", "--output-format", "json"];

    let out = stdout(&edgellm(&[&["eval", "ppl", "-m", m][..], &common].concat()));
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    // llama-perplexity on the same setting: 23.0000 (tests/golden/llama-perplexity.json). On 126
    // scored tokens float summation order alone moves the figure by about 1 %; the 0.5 %
    // comparison runs on 40 chunks of 512 in crates/eval/tests/ppl_smollm2.rs.
    let ppl = r["ppl"].as_f64().unwrap();
    assert!((ppl / 23.0 - 1.0).abs() < 0.02, "{out}");
    assert_eq!(
        (r["chunks"].as_u64(), r["tokens_scored"].as_u64(), r["bos"].as_bool()),
        (Some(2), Some(126), Some(false))
    );
    assert_eq!(r["running_ppl"].as_array().unwrap().len(), 2);

    // A model against itself: no divergence, the same perplexity.
    let out = stdout(&edgellm(&[&["eval", "kld", "--base", m, "-m", m][..], &common].concat()));
    let k: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(k["kld_mean"]["value"].as_f64(), Some(0.0), "{out}");
    assert_eq!(k["same_top"]["value"].as_f64(), Some(1.0));
    assert_eq!(k["ppl_ratio"]["value"].as_f64(), Some(1.0));
    assert!((k["ppl"]["value"].as_f64().unwrap() - ppl).abs() < 1e-9);

    let o = edgellm(&["eval", "ppl", "-m", m, "-f", f, "-c", "127"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("context size 127: must be even"));
    let o = edgellm(&["eval", "ppl", "-m", m, "-f", f, "-c", "8192"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("fewer than one chunk of 8192"), "{o:?}");
    let _ = std::fs::remove_file(f);
}

/// `edgellm bench`: llama-bench's two tests as mean ± sd, with the kernel tier, the packed
/// weight types, load time and peak RSS, as a table and as JSON; `EDGELLM_PACK=0` shows in
/// the report.
#[test]
fn bench_reports_speed_tier_layout_and_memory() {
    let m = smollm2();
    let m = m.to_str().unwrap();
    let args = ["bench", "-m", m, "-p", "16", "-n", "4", "-r", "2", "-t", "2", "--output-format", "json"];
    let r: Value = serde_json::from_str(stdout(&edgellm(&args)).trim()).unwrap();
    let tests = r["tests"].as_array().unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t["test"].as_str().unwrap()).collect();
    assert_eq!(names, ["pp16", "tg4"]);
    for t in tests {
        assert!(t["tokens_per_s"].as_f64().unwrap() > 0.0 && t["sd"].as_f64().unwrap() >= 0.0, "{t}");
    }
    let tier = r["kernels"].as_str().unwrap();
    assert!(edgellm_core::kernels::Tier::from_name(tier).is_some(), "{tier}");
    assert_eq!((r["threads"].as_u64(), r["reps"].as_u64()), (Some(2), Some(2)));
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > r["size_bytes"].as_u64().unwrap() / 2);
    assert!(r["load_ms"].as_f64().unwrap() > 0.0);
    // The types this tier packs at load (Q4_0/Q5_0/Q8_0/Q4_1/Q5_1/Q4_K/Q6_K on x86), or off.
    let packing = r["packing"].as_str().unwrap();
    assert!(
        packing == "off" || packing.split('/').all(|t| edgellm_core::DType::from_name(t).is_some()),
        "{r}"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args(["bench", "-m", m, "-p", "8", "-n", "2", "-r", "1"])
        .env("EDGELLM_PACK", "0")
        .output()
        .unwrap();
    let md = stdout(&o);
    assert!(md.contains("| model | size | params | kernels | threads | test | t/s |"), "{md}");
    assert!(md.contains("| pp8 |") && md.contains("| tg2 |"), "{md}");
    assert!(md.contains("peak RSS") && md.contains("packing off"), "{md}");

    let o = edgellm(&["bench", "-m", "/nonexistent.gguf"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.gguf"), "{o:?}");
}
