//! `edgellm eval sweep` from the command line: a small MiniLM grid end to end (table, JSON,
//! charts) and clear errors for bad grids, presets and models.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellm-sweep-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Runs `edgellm` in the repository root (the grids' default data paths are relative to it).
fn edgellm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgellm")).current_dir(root()).args(args).output().unwrap()
}

fn fails(args: &[&str], needle: &str) {
    let o = edgellm(args);
    assert!(!o.status.success(), "{args:?} succeeded");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(needle), "{args:?}: expected {needle:?} in: {e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn minilm_grid_writes_table_json_and_charts() {
    let grid = tmp("minilm.toml");
    std::fs::write(
        &grid,
        "[eval]\nchunks = 100\n[grid]\ndense = [\"Q8_0\"]\nprune = [\"magnitude\"]\nsparsity = [\"2:4\"]\nquant = [\"none\", \"Q8_0\"]\n",
    )
    .unwrap();
    let out = tmp("minilm-sweep");
    let m = model("all-MiniLM-L6-v2");
    let o = edgellm(&[
        "eval",
        "sweep",
        "-m",
        m.to_str().unwrap(),
        "--grid",
        grid.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("(encoder): 3 points"), "{stdout}");
    for line in ["Q8_0", "magnitude 2:4", "magnitude 2:4 + Q8_0"] {
        assert!(
            stderr.lines().any(|l| l.starts_with(line) && l.contains("Spearman")),
            "no line for {line}: {stderr}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(json["kind"], "encoder");
    assert_eq!(json["points"].as_array().unwrap().len(), 3);
    assert_eq!(json["settings"]["eval_chunks"], 100);
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(
        md.contains("| magnitude 2:4 + Q8_0 |") && md.contains("![sts-vs-bpw.png](sts-vs-bpw.png)"),
        "{md}"
    );
    for f in ["sts-vs-bpw.png", "sts-vs-bpw.svg", "sts-vs-speed.png", "sts-vs-speed.svg"] {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 1000, "{f}");
    }
}

#[test]
fn bad_sweeps_are_clear_errors() {
    let m = model("all-MiniLM-L6-v2");
    let m = m.to_str().unwrap();
    let out = tmp("bad");
    let o = out.to_str().unwrap();
    fails(&["eval", "sweep", "-m", m, "--preset", "everything", "-o", o], "unknown preset \"everything\"");
    fails(&["eval", "sweep", "-m", m, "-o", o], "--preset");
    let grid = tmp("typo.toml");
    std::fs::write(&grid, "[grid]\ndenze = [\"Q8_0\"]\n").unwrap();
    fails(&["eval", "sweep", "-m", m, "--grid", grid.to_str().unwrap(), "-o", o], "denze");
    std::fs::write(&grid, "[grid]\nprune = [\"wanda\"]\nsparsity = [\"1.5\"]\n").unwrap();
    fails(&["eval", "sweep", "-m", m, "--grid", grid.to_str().unwrap(), "-o", o], "1.5");
    fails(&["eval", "sweep", "-m", m, "--grid", "/nonexistent/grid.toml", "-o", o], "/nonexistent/grid.toml");
    fails(
        &["eval", "sweep", "-m", "/nonexistent/model.gguf", "--preset", "quick", "-o", o],
        "/nonexistent/model.gguf",
    );
    std::fs::write(&grid, "[eval]\ntext = \"/nonexistent/sts.tsv\"\n[grid]\ndense = [\"Q8_0\"]\n").unwrap();
    fails(&["eval", "sweep", "-m", m, "--grid", grid.to_str().unwrap(), "-o", o], "/nonexistent/sts.tsv");
}
