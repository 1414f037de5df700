//! Batch invariance on the real models (SmolLM2 Q4_1 and F16/Q8_0 caches, Gemma 3 Q4_K_M):
//! a sequence's logits are bit-identical (0 ulp) however its tokens are chunked and whatever
//! other sequences share its forward step — what lets the server's continuous batching
//! return exactly the text of a solo run.
//!
//! Run in release: `cargo test --release -p edgellm-models --test batch_invariance`. Skips,
//! saying so, when the models directory is absent (run `scripts/fetch-models`).

use std::path::PathBuf;

use edgellm_core::tolerance::assert_ulps;
use edgellm_formats::GgufFile;
use edgellm_models::{Buffers, KvType, LanguageModel, LoadOptions, SeqStep};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(name: &str, kv_type: Option<KvType>) -> Option<Box<dyn LanguageModel>> {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    if !dir.is_dir() {
        eprintln!("skipping: the models directory {} is absent (run scripts/fetch-models)", dir.display());
        return None;
    }
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    let f = GgufFile::open(&p).unwrap();
    Some(edgellm_models::load_gguf_with(&f, &LoadOptions { kv_type, ..LoadOptions::default() }).unwrap())
}

/// A prompt of `n` ids spread over the vocabulary (deterministic).
fn prompt(n: usize, salt: u32, n_vocab: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(7919).wrapping_add(salt * 104_729) % (n_vocab as u32 - 8)) + 4)
        .collect()
}

/// Last-token logits of `tokens` run in chunks of the given sizes (the last repeated).
fn chunked(m: &dyn LanguageModel, tokens: &[u32], sizes: &[usize]) -> Vec<f32> {
    let mut cache = m.new_cache(512);
    let mut logits = Vec::new();
    let (mut at, mut k) = (0, 0);
    while at < tokens.len() {
        let n = sizes[k.min(sizes.len() - 1)].min(tokens.len() - at);
        m.forward_into(&tokens[at..at + n], &mut cache, false, &mut logits).unwrap();
        at += n;
        k += 1;
    }
    logits
}

fn chunking_does_not_change_logits(name: &str, kv: Option<KvType>) {
    let Some(m) = load(name, kv) else { return };
    let tokens = prompt(150, 1, m.info().n_vocab);
    let whole = chunked(&*m, &tokens, &[tokens.len()]);
    for sizes in [&[1usize][..], &[7, 13, 64], &[3, 128], &[100, 1]] {
        let got = chunked(&*m, &tokens, sizes);
        assert_ulps(&format!("{name} chunks {sizes:?} vs one forward"), &got, &whole, 0);
    }
}

#[test]
fn smollm2_logits_do_not_depend_on_chunking() {
    chunking_does_not_change_logits("SmolLM2-135M-Instruct.Q4_1.gguf", None);
}

#[test]
fn smollm2_q8_cache_logits_do_not_depend_on_chunking() {
    chunking_does_not_change_logits("SmolLM2-135M-Instruct.Q4_1.gguf", Some(KvType::Q8_0));
}

#[test]
fn gemma3_logits_do_not_depend_on_chunking() {
    chunking_does_not_change_logits("gemma-3-270m-q4_k_m.gguf", None);
}

/// Sequences of different lengths decoded together in `forward_many` steps (some prefilling,
/// some decoding, joining and leaving) give each the logits it gets alone.
fn batched_equals_solo(name: &str) {
    let Some(m) = load(name, None) else { return };
    let nv = m.info().n_vocab;
    // (prompt length, tokens decoded after it, step at which it joins)
    let plan = [(40usize, 12usize, 0usize), (5, 20, 0), (90, 6, 3), (1, 9, 5), (17, 15, 8)];
    let seqs: Vec<Vec<u32>> =
        plan.iter().enumerate().map(|(i, &(p, g, _))| prompt(p + g, i as u32 + 2, nv)).collect();
    // Solo: each sequence alone, prompt in one forward then one token at a time (teacher
    // forcing the same continuation), the logits after every step.
    let solo: Vec<Vec<Vec<f32>>> = plan
        .iter()
        .zip(&seqs)
        .map(|(&(p, g, _), s)| {
            let mut cache = m.new_cache(256);
            let mut out = vec![m.forward(&s[..p], &mut cache, false).unwrap()];
            for t in p..p + g - 1 {
                out.push(m.forward(&s[t..t + 1], &mut cache, false).unwrap());
            }
            out
        })
        .collect();
    // Batched: prompts in chunks of up to 16 tokens, decoding sequences one token per step.
    let mut caches: Vec<_> = plan.iter().map(|_| m.new_cache(256)).collect();
    let mut fed = vec![0usize; plan.len()];
    let mut got: Vec<Vec<Vec<f32>>> = vec![Vec::new(); plan.len()];
    let mut bufs = Buffers::default();
    let mut max_batch = 0;
    for step in 0.. {
        let mut who = Vec::new();
        let mut ranges = Vec::new();
        for (i, &(p, g, join)) in plan.iter().enumerate() {
            if step < join || fed[i] >= p + g - 1 {
                continue;
            }
            let n = if fed[i] < p { (p - fed[i]).min(16) } else { 1 };
            who.push(i);
            ranges.push(fed[i]..fed[i] + n);
        }
        if who.is_empty() {
            break;
        }
        max_batch = max_batch.max(who.len());
        let mut logits = vec![Vec::new(); who.len()];
        {
            let mut steps: Vec<SeqStep<'_>> = Vec::new();
            let mut rest: Vec<Option<&mut edgellm_models::KvCache>> = caches.iter_mut().map(Some).collect();
            for (&i, r) in who.iter().zip(&ranges) {
                steps.push(SeqStep { tokens: &seqs[i][r.clone()], cache: rest[i].take().unwrap() });
            }
            m.forward_many(&mut steps, &mut bufs, &mut logits).unwrap();
        }
        for ((&i, r), l) in who.iter().zip(&ranges).zip(logits) {
            fed[i] = r.end;
            if fed[i] >= plan[i].0 {
                got[i].push(l);
            }
        }
    }
    assert!(max_batch >= 4, "the plan should put at least 4 sequences in one step, got {max_batch}");
    for (i, (g, s)) in got.iter().zip(&solo).enumerate() {
        assert_eq!(g.len(), s.len(), "sequence {i}: steps");
        for (k, (a, b)) in g.iter().zip(s).enumerate() {
            assert_ulps(&format!("{name} sequence {i} step {k} batched vs solo"), a, b, 0);
        }
    }
}

#[test]
fn smollm2_batched_steps_equal_solo_runs() {
    batched_equals_solo("SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn gemma3_batched_steps_equal_solo_runs() {
    batched_equals_solo("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn bad_steps_are_refused_before_any_runs() {
    let Some(m) = load("SmolLM2-135M-Instruct.Q4_1.gguf", None) else { return };
    let mut a = m.new_cache(8);
    let mut b = m.new_cache(8);
    let mut bufs = Buffers::default();
    let too_long = [1u32; 9];
    let mut logits = vec![Vec::new(), Vec::new()];
    let mut steps =
        vec![SeqStep { tokens: &[1, 2], cache: &mut a }, SeqStep { tokens: &too_long, cache: &mut b }];
    assert!(m.forward_many(&mut steps, &mut bufs, &mut logits).is_err());
    assert_eq!(a.len, 0, "nothing ran");
    let bad = [u32::MAX];
    let mut steps = vec![SeqStep { tokens: &bad, cache: &mut a }];
    assert!(m.forward_many(&mut steps, &mut bufs, &mut logits[..1]).is_err());
    let mut steps = vec![SeqStep { tokens: &[], cache: &mut a }];
    assert!(m.forward_many(&mut steps, &mut bufs, &mut logits[..1]).is_err());
}

/// The memory guard's estimate from metadata alone equals what the built model's caches take,
/// for both architectures and every cache type.
#[test]
fn cache_plan_from_metadata_equals_the_built_models() {
    for name in ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"] {
        for kv_type in [None, Some(KvType::F32), Some(KvType::Q8_0)] {
            let Some(m) = load(name, kv_type) else { return };
            let dir = std::env::var_os("EDGELLM_MODELS")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("models"));
            let f = GgufFile::open(dir.join(name)).unwrap();
            let plan =
                edgellm_models::CachePlan::from_gguf(&f, &LoadOptions { kv_type, ..LoadOptions::default() })
                    .expect("a plan for a supported model");
            let info = m.info();
            assert_eq!(
                (plan.n_ctx_train, plan.n_embd, plan.n_vocab),
                (info.n_ctx_train, info.n_embd, info.n_vocab)
            );
            for n_ctx in [1, 100, 512, 513, 4096, 32768] {
                assert_eq!(plan.cache_bytes(n_ctx), m.cache_bytes(n_ctx), "{name} {kv_type:?} n_ctx {n_ctx}");
            }
        }
    }
}
