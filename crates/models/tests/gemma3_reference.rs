//! Gemma 3 270M (Q4_K_M) forward pass against the exact-math float64 reference and llama.cpp,
//! driven by the reference's own token ids (the tokenizer is tested on its own).

use std::path::PathBuf;

use edgellm_core::tolerance::logits as tol;
use edgellm_formats::GgufFile;
use edgellm_models::{LanguageModel, LoadOptions, Precision};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load_with(precision: Precision) -> Box<dyn LanguageModel> {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join("gemma-3-270m-q4_k_m.gguf");
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    edgellm_models::load_gguf_with(
        &GgufFile::open(p).unwrap(),
        &LoadOptions { precision, kv_type: None, ..Default::default() },
    )
    .unwrap()
}

fn golden(name: &str) -> Value {
    let p = root().join("tests/golden").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn argmax(row: &[f32]) -> u32 {
    let mut b = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[b] {
            b = i;
        }
    }
    b as u32
}

fn logsumexp(row: &[f32]) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
}

fn rows(m: &dyn LanguageModel, prompt: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache(1024);
    let flat = m.forward(prompt, &mut cache, true).unwrap();
    flat.chunks_exact(m.info().n_vocab).map(<[f32]>::to_vec).collect()
}

fn greedy(m: &dyn LanguageModel, prompt: &[u32], n: usize, eos: u32) -> Vec<u32> {
    let mut cache = m.new_cache(1024);
    let mut logits = m.forward(prompt, &mut cache, false).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let id = argmax(&logits);
        out.push(id);
        if id == eos {
            break;
        }
        logits = m.forward(&[id], &mut cache, false).unwrap();
    }
    out
}

#[test]
fn logits_and_greedy_match_exact_math() {
    let m = load_with(Precision::Exact);
    let exact = golden("gemma-3-270m-q4_k_m.exact.json");
    let mut worst = 0.0f64;
    for case in exact["logits"].as_array().unwrap() {
        let prompt = ids(&case["ids"]);
        let r = rows(m.as_ref(), &prompt);
        for (pos, p) in case["positions"].as_array().unwrap().iter().enumerate() {
            for (id, want) in ids(&p["top_ids"]).iter().zip(p["top_logits"].as_array().unwrap()) {
                let (got, want) = (r[pos][*id as usize] as f64, want.as_f64().unwrap());
                worst = worst.max((got - want).abs());
                assert!(
                    (got - want).abs() <= tol::EXACT_F32_ACTIVATIONS_GEMMA,
                    "{:?} position {pos} token {id}: logit {got:.4}, exact {want:.4}",
                    case["prompt"]
                );
            }
            let (lse, want) = (logsumexp(&r[pos]), p["logsumexp"].as_f64().unwrap());
            assert!(
                (lse - want).abs() <= tol::EXACT_F32_ACTIVATIONS_GEMMA,
                "{:?} position {pos}: lse {lse} vs {want}",
                case["prompt"]
            );
        }
    }
    eprintln!("largest top-10 logit difference vs exact math: {worst:.5}");
    for case in exact["greedy"].as_array().unwrap() {
        let cont = case["continuation"].as_array().unwrap();
        let got = greedy(m.as_ref(), &ids(&case["prompt_ids"]), cont.len(), 1);
        for (i, step) in cont.iter().enumerate() {
            let want = step["id"].as_u64().unwrap() as u32;
            let gap = step["top2_gap"].as_f64().unwrap();
            if got.get(i) != Some(&want) {
                assert!(
                    gap < tol::EXACT_F32_ACTIVATIONS_GEMMA,
                    "{:?}: greedy step {i} gave {:?}, exact math {want}, top-2 gap {gap:.4} (not a near-tie)",
                    case["prompt"],
                    got.get(i)
                );
                eprintln!("{:?}: near-tie divergence at step {i} (gap {gap:.4}) accepted", case["prompt"]);
                break;
            }
        }
    }
}

/// (max, mean) over positions of the largest top-10 logit difference from llama.cpp; asserts
/// top-1 agreement wherever llama.cpp's top-2 gap is at least the named tolerance.
fn compare_with_llama_cpp(m: &dyn LanguageModel) -> (f64, f64) {
    let lcpp = golden("gemma-3-270m-q4_k_m.json");
    let (mut max_diff, mut sum, mut npos) = (0.0f64, 0.0f64, 0usize);
    let mut worst: Vec<(f64, String, usize)> = Vec::new();
    for case in lcpp["logits"].as_array().unwrap() {
        let r = rows(m, &ids(&case["ids"]));
        for (pos, p) in case["positions"].as_array().unwrap().iter().enumerate() {
            let top = ids(&p["top_ids"]);
            let tl: Vec<f64> =
                p["top_logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let d = top
                .iter()
                .zip(&tl)
                .map(|(&id, &w)| (r[pos][id as usize] as f64 - w).abs())
                .fold(0.0, f64::max);
            max_diff = max_diff.max(d);
            worst.push((d, case["prompt"].as_str().unwrap().chars().take(24).collect(), pos));
            sum += d;
            npos += 1;
            if tl[0] - tl[1] >= tol::LLAMA_CPP_TOP1_GAP {
                assert_eq!(
                    argmax(&r[pos]),
                    top[0],
                    "{:?} position {pos}: top-1 differs from llama.cpp",
                    case["prompt"]
                );
            }
        }
    }
    let mean = sum / npos as f64;
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    eprintln!(
        "vs llama.cpp: largest top-10 difference {max_diff:.3}, mean {mean:.3}; worst {:?}",
        &worst[..3]
    );
    (max_diff, mean)
}

#[test]
fn top1_agrees_with_llama_cpp() {
    compare_with_llama_cpp(load_with(Precision::Fast).as_ref());
}

/// The reference files themselves sit 1.14 (max) / 0.41 (mean) apart on this model: exact f32
/// math cannot meet these bounds. The fast path reproduces llama.cpp's rounding where it is
/// systematic — 8-bit activations quantized as its run-time quantizers do, GELU through its f16
/// table, an F16 KV cache with queries and attention probabilities rounded to half — and the
/// first two layers then match llama.cpp's to 1e-7 at every position (per-layer dumps with
/// `scripts/golden/llama_cpp_dump.py`). What is left is float summation order, which Gemma 3
/// amplifies through its sharp attention (a 6e-6 difference at layer 1 grows to 2e-2 by layer
/// 17; llama.cpp's own flash and non-flash attention paths differ by up to 0.47 on these
/// prompts). The mean bound holds on every tier (0.32–0.35).
#[test]
fn logits_within_llama_cpp_mean_bound() {
    let (_, mean) = compare_with_llama_cpp(load_with(Precision::Fast).as_ref());
    assert!(mean <= tol::LLAMA_CPP_TOP10_MEAN, "mean top-10 difference {mean:.3}");
}

/// The max bound is above that amplified summation-order noise (`LLAMA_CPP_TOP10_MAX_GEMMA`:
/// 0.87–1.11 on the worst position for the file-layout kernels, the scalar oracle and the
/// packed k-quant kernels), on every tier.
#[test]
fn logits_within_llama_cpp_max_bound() {
    let (max_diff, _) = compare_with_llama_cpp(load_with(Precision::Fast).as_ref());
    assert!(max_diff <= tol::LLAMA_CPP_TOP10_MAX_GEMMA, "largest top-10 difference {max_diff:.3}");
}
