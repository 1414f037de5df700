//! Prompt-processing and generation speed, measured as `llama-bench` does: `pp N` runs an
//! `N`-token prompt in one batch from an empty cache, `tg N` generates `N` tokens one at a
//! time; deterministic token ids spread over the vocabulary.

use std::time::Instant;

use edgellm_models::{LanguageModel, ModelError};
use serde::Serialize;

/// One test's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpeedTest {
    /// `pp512`, `tg128`, …
    pub test: String,
    /// Mean tokens per second over the repetitions.
    pub tokens_per_s: f64,
    /// Their standard deviation.
    pub sd: f64,
    /// Every repetition's tokens per second.
    pub runs: Vec<f64>,
}

/// What [`bench`] measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SpeedReport {
    /// Prompt processing, when asked for.
    pub prompt: Option<SpeedTest>,
    /// Generation, when asked for.
    pub generation: Option<SpeedTest>,
}

impl SpeedReport {
    /// The tests in order (prompt, then generation).
    pub fn tests(&self) -> Vec<&SpeedTest> {
        self.prompt.iter().chain(self.generation.iter()).collect()
    }
}

/// Mean and sample standard deviation.
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// The context a [`bench`] run needs.
pub fn bench_ctx(n_prompt: usize, n_gen: usize) -> usize {
    (n_prompt.max(n_gen) + 1).max(16)
}

/// Measures `pp n_prompt` and `tg n_gen` (either may be 0 to skip), `reps` times each, after
/// a warm-up that pages the weights in and starts the workers. `progress(done, total)` after
/// each repetition.
pub fn bench(
    model: &dyn LanguageModel,
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<SpeedReport, ModelError> {
    let reps = reps.max(1);
    let n_ctx = bench_ctx(n_prompt, n_gen);
    let n_vocab = model.info().n_vocab.max(1) as u32;
    let ids: Vec<u32> =
        (0..n_prompt.max(n_gen) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % n_vocab).collect();
    let mut cache = model.new_cache(n_ctx);
    let mut logits = Vec::new();
    let warm_ids: Vec<u32> = if ids.is_empty() { vec![0] } else { ids[..ids.len().min(8)].to_vec() };
    model.forward_into(&warm_ids, &mut cache, false, &mut logits)?;
    let total = reps * ((n_prompt > 0) as usize + (n_gen > 0) as usize);
    let mut done = 0;
    let mut report = SpeedReport::default();
    if n_prompt > 0 {
        let mut runs = Vec::with_capacity(reps);
        for _ in 0..reps {
            cache.clear();
            let t = Instant::now();
            model.forward_into(&ids[..n_prompt], &mut cache, false, &mut logits)?;
            runs.push(n_prompt as f64 / t.elapsed().as_secs_f64());
            done += 1;
            progress(done, total);
        }
        let (m, s) = mean_sd(&runs);
        report.prompt = Some(SpeedTest { test: format!("pp{n_prompt}"), tokens_per_s: m, sd: s, runs });
    }
    if n_gen > 0 {
        let mut runs = Vec::with_capacity(reps);
        for _ in 0..reps {
            cache.clear();
            let t = Instant::now();
            for &id in &ids[..n_gen] {
                model.forward_into(&[id], &mut cache, false, &mut logits)?;
            }
            runs.push(n_gen as f64 / t.elapsed().as_secs_f64());
            done += 1;
            progress(done, total);
        }
        let (m, s) = mean_sd(&runs);
        report.generation = Some(SpeedTest { test: format!("tg{n_gen}"), tokens_per_s: m, sd: s, runs });
    }
    Ok(report)
}
