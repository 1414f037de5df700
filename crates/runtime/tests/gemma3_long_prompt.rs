//! Gemma 3 on a prompt longer than its 512-token sliding window (WikiText-2): it runs, local
//! layers keep only window + one batch of keys, and feeding the prompt in different chunkings
//! (so the local rings wrap at different points) gives the same logits.

use std::path::PathBuf;

use edgellm_core::tolerance::{assert_close, Tolerance};
use edgellm_runtime::LoadedModel;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn prompt_longer_than_the_window_runs_and_chunking_does_not_matter() {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let path = dir.join("gemma-3-270m-q4_k_m.gguf");
    assert!(path.exists(), "{} is missing: run scripts/fetch-models first", path.display());
    let lm = LoadedModel::load(&path, 2048).unwrap();
    let text = std::fs::read_to_string(root().join("data/wikitext-2/wiki.test.raw")).unwrap();
    let mut ids = lm.tokenize_prompt(&text[..6000]);
    assert!(ids.len() > 700, "only {} tokens", ids.len());
    ids.truncate(700);

    let run = |chunk: usize| {
        let mut cache = lm.model.new_cache(2048);
        let mut last = Vec::new();
        for c in ids.chunks(chunk) {
            last = lm.model.forward(c, &mut cache, false).unwrap();
        }
        // Local layers hold window + one batch; global layers the whole context.
        let caps: Vec<usize> = cache.layers.iter().map(|l| l.capacity).collect();
        assert_eq!(caps[0], 1024, "{caps:?}");
        assert_eq!(caps[5], 2048, "{caps:?}");
        assert_eq!(cache.len, 700);
        last
    };
    let whole = run(700);
    assert!(whole.iter().all(|x| x.is_finite()));
    for chunk in [97, 512] {
        assert_close(
            &format!("last logits, chunks of {chunk}"),
            &run(chunk),
            &whole,
            Tolerance::new(2e-3, 2e-4),
        );
    }
}
