//! Runs every fuzz target over its committed corpus (`fuzz/corpus/TARGET/`) and the regression
//! inputs of the crashes fuzzing found (`tests/corpus/TARGET/`), on the stable toolchain: what
//! `scripts/fuzz` found once stays fixed. Needs the models (`scripts/fetch-models`) for the
//! tokenizer and template targets.

use std::path::{Path, PathBuf};
use std::time::Instant;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

#[test]
fn every_target_runs_its_corpus_and_regressions() {
    let mut report = Vec::new();
    for &(name, body) in edgellm_fuzzing::TARGETS {
        let seeds = inputs(&root().join("fuzz/corpus").join(name));
        let regressions = inputs(&root().join("tests/corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} is empty: run scripts/fuzz-seeds");
        let t0 = Instant::now();
        for p in seeds.iter().chain(&regressions) {
            let data = std::fs::read(p).unwrap();
            // A panic names the input that caused it.
            let r = std::panic::catch_unwind(|| body(&data));
            assert!(r.is_ok(), "{name} panicked on {}", p.display());
        }
        report.push(format!(
            "{name}: {} seeds, {} regressions, {:.2} s",
            seeds.len(),
            regressions.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn every_target_has_a_libfuzzer_binary() {
    for &(name, _) in edgellm_fuzzing::TARGETS {
        let p = root().join("fuzz/fuzz_targets").join(format!("{name}.rs"));
        let src = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(src.contains(&format!("edgellm_fuzzing::{name}(")), "{} does not call its body", p.display());
    }
}

#[test]
fn the_empty_input_and_ones_are_handled_by_every_target() {
    for &(_, body) in edgellm_fuzzing::TARGETS {
        body(&[]);
        body(&[0xff; 64]);
        body(b"GGUF\x03\0\0\0");
    }
}
