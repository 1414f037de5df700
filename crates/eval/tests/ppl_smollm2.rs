//! Perplexity of SmolLM2-135M-Instruct (Q4_1) on WikiText-2 against llama-perplexity's figures on
//! the same settings (`tests/golden/llama-perplexity.json`): 40 chunks of 512 tokens
//! (`q4_1_c512_40`, the bound of 0.5 %) and 2 chunks of 128 (`q4_1_c128`).
//! Run in release: `cargo test --release -p edgellm-eval --test ppl_smollm2 -- --nocapture`.

use std::path::PathBuf;

use edgellm_eval::ppl::{self, PplOptions};
use edgellm_models::{LoadOptions, Precision};
use edgellm_runtime::LoadedModel;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_path() -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

#[test]
fn smollm2_perplexity_matches_llama_perplexity() {
    let g: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/golden/llama-perplexity.json")).unwrap(),
    )
    .unwrap();
    let want = g["q4_1_c128"]["ppl"].as_f64().unwrap();
    let want_running: Vec<f64> =
        g["q4_1_c128"]["running_ppl"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();

    let text = ppl::read_text(root().join("data/wikitext-2/wiki.test.raw")).unwrap();
    // Only the first 256 tokens are scored: tokenize a prefix cut at a line end (the
    // pre-tokenizer splits there, so the tokens before the cut are those of the whole file).
    let cut = text[8192..].find('\n').map_or(text.len(), |i| 8192 + i);
    let opts = PplOptions { n_ctx: 128, max_chunks: Some(2) };
    let mut results = Vec::new();
    for precision in [Precision::Fast, Precision::Exact] {
        let lm = LoadedModel::load_with(
            model_path(),
            128,
            &LoadOptions { precision, kv_type: None, ..Default::default() },
        )
        .unwrap();
        let (tokens, bos) = ppl::tokenize(&lm.tokenizer, &text[..cut]);
        assert_eq!(bos, None, "SmolLM2's vocabulary does not add BOS");
        let r = ppl::perplexity(lm.model.as_ref(), &tokens, bos, &opts, |_| {}).unwrap();
        assert_eq!((r.chunks, r.tokens_scored), (2, 2 * 63));
        eprintln!(
            "{precision:?}: PPL {:.4} +/- {:.4}, running {:?}; llama-perplexity {want} {want_running:?}",
            r.ppl, r.ppl_err, r.running_ppl
        );
        results.push(r);
    }
    // On 126 scored tokens the figure is too noisy for a 0.5 % comparison: llama-perplexity gives
    // ±6.6 as its own error estimate, and float summation order alone moves ours by about 1 %
    // (measured: 22.81 on the SIMD tiers, 22.83 on the scalar oracle; 23.07 with the AVX2
    // attention kernels of the previous session). A different chunking or scoring would move it
    // by far more than the 2 % asserted here; the 0.5 % comparison is the 40-chunk test below.
    let fast = &results[0];
    assert!((fast.ppl / want - 1.0).abs() < 0.02, "fast {} vs llama-perplexity {want}", fast.ppl);
    assert!((fast.running_ppl[0] / want_running[0] - 1.0).abs() < 0.02, "{:?}", fast.running_ppl);
    let exact = &results[1];
    assert!((exact.ppl / want - 1.0).abs() < 0.02, "exact {} vs llama-perplexity {want}", exact.ppl);
}

/// The comparison: 40 chunks of 512 tokens (20 480 tokens, 10 240 scored), with the
/// 8-bit-activation path llama.cpp's CPU backend also uses; within 0.5 % (measured: 23.5763
/// against 23.5861, 0.04 %).
#[test]
fn smollm2_perplexity_matches_llama_perplexity_on_40_chunks() {
    let g: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/golden/llama-perplexity.json")).unwrap(),
    )
    .unwrap();
    let want = g["q4_1_c512_40"]["ppl"].as_f64().unwrap();
    let text = ppl::read_text(root().join("data/wikitext-2/wiki.test.raw")).unwrap();
    let opts = PplOptions { n_ctx: 512, max_chunks: Some(40) };
    let lm = LoadedModel::load_with(
        model_path(),
        512,
        &LoadOptions { precision: Precision::Fast, kv_type: None, ..Default::default() },
    )
    .unwrap();
    let (tokens, bos) = ppl::tokenize(&lm.tokenizer, &text);
    let r = ppl::perplexity(lm.model.as_ref(), &tokens, bos, &opts, |_| {}).unwrap();
    assert_eq!((r.chunks, r.tokens_scored), (40, 40 * 255));
    eprintln!("fast, 40 × 512: PPL {:.4} +/- {:.4}; llama-perplexity {want}", r.ppl, r.ppl_err);
    assert!((r.ppl / want - 1.0).abs() < 0.005, "fast {} vs llama-perplexity {want}", r.ppl);
}

/// A long context: one chunk of 4096 tokens, whose scored second half attends to more than
/// `attention::ONLINE_CHUNK` (2048) keys, so it runs the online softmax; within 0.5 % of
/// llama-perplexity (`q4_1_c4096_1`: measured 21.1520 against 21.1331, 0.09 %; with 2 chunks
/// 23.6235 against 23.6261).
#[test]
fn smollm2_long_context_perplexity_matches_llama_perplexity() {
    let g: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/golden/llama-perplexity.json")).unwrap(),
    )
    .unwrap();
    let want = g["q4_1_c4096_1"]["ppl"].as_f64().unwrap();
    // Scored positions p ≥ 2048 see p + 1 keys.
    const {
        assert!(
            4096 / 2 + 1 > edgellm_models::attention::ONLINE_CHUNK,
            "the scored half must take the online path"
        )
    };
    let text = ppl::read_text(root().join("data/wikitext-2/wiki.test.raw")).unwrap();
    // One chunk needs the first 4096 tokens: a prefix cut at a line end holds them.
    let cut = text[80_000..].find('\n').map_or(text.len(), |i| 80_000 + i);
    let opts = PplOptions { n_ctx: 4096, max_chunks: Some(1) };
    let lm = LoadedModel::load_with(
        model_path(),
        4096,
        &LoadOptions { precision: Precision::Fast, kv_type: None, ..Default::default() },
    )
    .unwrap();
    let (tokens, bos) = ppl::tokenize(&lm.tokenizer, &text[..cut]);
    assert!(tokens.len() >= 4096, "{} tokens in the prefix", tokens.len());
    let r = ppl::perplexity(lm.model.as_ref(), &tokens, bos, &opts, |_| {}).unwrap();
    assert_eq!((r.chunks, r.tokens_scored), (1, 2047));
    eprintln!("fast, 1 × 4096: PPL {:.4} +/- {:.4}; llama-perplexity {want}", r.ppl, r.ppl_err);
    assert!((r.ppl / want - 1.0).abs() < 0.005, "fast {} vs llama-perplexity {want}", r.ppl);
}
