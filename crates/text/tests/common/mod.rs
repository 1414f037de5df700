//! Shared helpers of the integration tests: where the models and golden files are.

#![allow(dead_code)]

use std::path::PathBuf;

use edgellm_formats::GgufFile;
use edgellm_text::Tokenizer;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A model file from `$EDGELLM_MODELS` (default: `models/` at the workspace root).
pub fn model_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "model file {} is missing: run scripts/fetch-models (or set EDGELLM_MODELS to the folder holding it)",
        path.display()
    );
    path
}

/// SmolLM2-135M-Instruct (byte-level BPE, `smollm` pre-tokenizer).
pub fn smollm2_gguf() -> GgufFile {
    let path = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// SmolLM2's tokenizer.
pub fn smollm2() -> Tokenizer {
    Tokenizer::from_gguf(&smollm2_gguf()).expect("SmolLM2 tokenizer")
}

/// A golden file of `tests/golden/`, parsed.
pub fn golden(name: &str) -> serde_json::Value {
    let path = workspace_root().join("tests/golden").join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()))
}

/// A JSON array of integers as token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("an array of ids").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}

/// Gemma 3 270M (SentencePiece-style, 262,144 tokens).
pub fn gemma3_gguf() -> GgufFile {
    let path = model_path("gemma-3-270m-q4_k_m.gguf");
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Gemma 3's tokenizer.
pub fn gemma3() -> Tokenizer {
    Tokenizer::from_gguf(&gemma3_gguf()).expect("Gemma 3 tokenizer")
}

/// Show where two id lists part, with the tokens around it.
pub fn assert_ids(tok: &Tokenizer, what: &str, got: &[u32], want: &[u32]) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    let show = |v: &[u32]| {
        v.iter()
            .skip(at.saturating_sub(2))
            .take(6)
            .map(|&i| format!("{i}:{:?}", tok.token_str(i).unwrap_or("?")))
            .collect::<Vec<_>>()
    };
    panic!(
        "{what}: ids differ at position {at}\n  got  {got:?}\n  want {want:?}\n  got  near: {:?}\n  want near: {:?}",
        show(got),
        show(want)
    );
}
