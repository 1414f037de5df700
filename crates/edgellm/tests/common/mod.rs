//! What the Engine's integration tests share: finding the models.

#![allow(dead_code)]

use std::path::PathBuf;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A model of the models directory (`EDGELLM_MODELS` or `models/`), or `None`, saying so,
/// when the directory is absent; a model missing from a present directory is a failure.
pub fn model(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    if !dir.is_dir() {
        eprintln!("skipping: the models directory {} is absent (run scripts/fetch-models)", dir.display());
        return None;
    }
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    Some(p)
}
