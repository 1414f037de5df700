//! End-to-end tests of `edgellm distill` on tiny random encoders: a run writes a GGUF that
//! `edgellm embed` loads and prints its summary; bad requests fail with a clear message.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use edgellm_formats::{GgufWriter, Value};
use edgellm_models::bert::Activation;
use edgellm_train::synthetic::{tiny_config, tiny_export, tiny_text};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellm-distill-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny random encoder; `prune` zeroes every other weight of the layer linears.
fn tiny(dir: &Path, name: &str, hidden: usize, prune: bool) -> PathBuf {
    let mut e = tiny_export(&tiny_config(hidden, Activation::Gelu), 1).unwrap();
    if prune {
        for t in e.tensors.iter_mut().filter(|t| t.name.starts_with("blk.") && t.dims.len() == 2) {
            t.data.iter_mut().step_by(2).for_each(|v| *v = 0.0);
        }
    }
    let p = dir.join(name);
    e.write_f32(&p).unwrap();
    p
}

fn distill(args: &[&Path], extra: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .arg("distill")
        .args([OsStr::new("--teacher"), args[0].as_os_str(), OsStr::new("--student"), args[1].as_os_str()])
        .args([OsStr::new("--data"), args[2].as_os_str(), OsStr::new("-o"), args[3].as_os_str()])
        .args(extra)
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn distill_writes_a_model_embed_loads() {
    let dir = scratch("ok");
    let (t, s) = (tiny(&dir, "t.gguf", 16, false), tiny(&dir, "s.gguf", 16, true));
    let data = dir.join("data.txt");
    std::fs::write(&data, tiny_text(120, 3)).unwrap();
    let out = dir.join("out.gguf");
    let flags =
        ["--steps", "12", "--batch", "8", "--lr", "5e-3", "--max-len", "16", "--held-out", "8", "-t", "1"];
    let (ok, stdout, stderr) = distill(&[&t, &s, &data, &out], &flags);
    assert!(ok, "{stderr}");
    for want in
        ["loss (first", "held-out cosine to the teacher (8 sentences)", "steps: 12 x batch 8", "wrote"]
    {
        assert!(stdout.contains(want), "{want:?} missing from:\n{stdout}");
    }
    assert!(stdout.contains("50.0 % zeros"), "{stdout}");
    let input = dir.join("in.txt");
    std::fs::write(&input, "the first one was new .\n").unwrap();
    let e = Command::new(env!("CARGO_BIN_EXE_edgellm"))
        .args([OsStr::new("embed"), OsStr::new("-m"), out.as_os_str(), OsStr::new("-i"), input.as_os_str()])
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    assert!(String::from_utf8_lossy(&e.stdout).starts_with("{\"index\":0,\"embedding\":["));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn distill_rejects_bad_requests_clearly() {
    let dir = scratch("bad");
    let (t, s) = (tiny(&dir, "t.gguf", 16, false), tiny(&dir, "s.gguf", 16, true));
    let wide = tiny(&dir, "wide.gguf", 32, true);
    let data = dir.join("data.txt");
    std::fs::write(&data, tiny_text(60, 3)).unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let llama = dir.join("llama.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.write_file(&llama).unwrap();
    let out = dir.join("out.gguf");
    let cases: [(&[&Path], &str); 5] = [
        (&[&t, &wide, &data, &out], "teacher and student differ in hidden_size: teacher 16, student 32"),
        (&[&t, &dir.join("missing.gguf"), &data, &out], "student model"),
        (&[&t, &s, &empty, &out], "has 0 usable sentences"),
        (&[&llama, &s, &data, &out], "is a 'llama' model"),
        (&[&t, &s, &dir.join("missing.txt"), &out], "data file"),
    ];
    for (args, want) in cases {
        let (ok, _, stderr) = distill(args, &["--steps", "2"]);
        assert!(!ok, "{want}: succeeded");
        assert!(stderr.contains(want), "{want:?} missing from: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
