//! Perplexity and KL divergence on cases small enough to compute by hand.

use edgellm_eval::ppl::{
    chunk_tokens, kl_divergence, kl_divergence_eval, percentile, perplexity, token_nll, KldStats, PplError,
    PplOptions,
};
use edgellm_models::kv_cache::KvShape;
use edgellm_models::{KvCache, KvType, LanguageModel, ModelError, ModelInfo};

/// A bigram model over 3 tokens: after token `t` the logit of `(t+1) % 3` is `boost`, the others
/// 0, so `p(next) = e^boost / (e^boost + 2)`. Its cache holds nothing but its length; it
/// accepts at most `max_batch` tokens per call.
struct Bigram {
    info: ModelInfo,
    boost: f32,
    max_batch: usize,
}

impl Bigram {
    fn new(boost: f32, max_batch: usize) -> Bigram {
        let info = ModelInfo {
            arch: "bigram".into(),
            name: None,
            n_vocab: 3,
            n_ctx_train: 64,
            n_layer: 0,
            n_embd: 0,
            n_params: 0,
            weight_bytes: 0,
        };
        Bigram { info, boost, max_batch }
    }
}

impl LanguageModel for Bigram {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn new_cache(&self, n_ctx: usize) -> KvCache {
        let shape = KvShape { kv_type: KvType::F32, head_dim: 0, n_head_kv: 0 };
        let mut c = KvCache::new(shape, 0, n_ctx);
        c.max_batch = self.max_batch;
        c
    }
    fn cache_bytes(&self, _n_ctx: usize) -> u64 {
        0
    }
    fn forward_into(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        assert!(tokens.len() <= cache.max_batch, "called with {} tokens", tokens.len());
        if cache.len + tokens.len() > cache.n_ctx {
            return Err(ModelError::ContextOverflow { needed: cache.len + tokens.len(), n_ctx: cache.n_ctx });
        }
        cache.len += tokens.len();
        let rows = if all_logits { tokens } else { &tokens[tokens.len() - 1..] };
        logits.clear();
        logits.extend(rows.iter().flat_map(|&t| {
            let mut row = [0.0f32; 3];
            row[(t as usize + 1) % 3] = self.boost;
            row
        }));
        Ok(())
    }
}

#[test]
fn token_nll_and_kl_by_hand() {
    // Uniform over 3: NLL = ln 3 for every token.
    assert!((token_nll(&[0.0, 0.0, 0.0], 1) - 3f64.ln()).abs() < 1e-15);
    // Logits [2, 0, 0]: p = (e², 1, 1) / (e² + 2).
    let z = 2f64.exp() + 2.0;
    assert!((token_nll(&[2.0, 0.0, 0.0], 0) - (z.ln() - 2.0)).abs() < 1e-14);
    assert!((token_nll(&[2.0, 0.0, 0.0], 2) - z.ln()).abs() < 1e-14);
    // Shifting the logits changes nothing.
    assert!((token_nll(&[1002.0, 1000.0, 1000.0], 2) - z.ln()).abs() < 1e-12);
    // KL of P = softmax(2,0,0) from Q = uniform: Σ p ln(3p).
    let p = [2f64.exp() / z, 1.0 / z, 1.0 / z];
    let want: f64 = p.iter().map(|&pi| pi * (3.0 * pi).ln()).sum();
    assert!((kl_divergence(&[2.0, 0.0, 0.0], &[0.0, 0.0, 0.0]) - want).abs() < 1e-14);
    assert_eq!(kl_divergence(&[2.0, 0.0, 0.0], &[2.0, 0.0, 0.0]), 0.0);
}

#[test]
fn perplexity_of_a_bigram_by_hand() {
    // c = 6: positions 3 and 4 predict tokens 4 and 5 of each chunk. The two trailing tokens do
    // not fill a chunk and are dropped.
    let tokens = [0, 1, 2, 0, 1, 0, /* */ 2, 2, 2, 1, 2, 2, /* */ 0, 1];
    let opts = PplOptions { n_ctx: 6, max_chunks: None };
    // Scored: 0→1 (the likely one), 1→0, 1→2 (likely), 2→2: two likely, two not.
    let z = 2f64.exp() + 2.0;
    let (likely, other) = (z.ln() - 2.0, z.ln());
    let mean = (likely + other) / 2.0;
    let want_ppl = mean.exp(); // = (e² + 2) / e
    assert!((want_ppl - z / 1f64.exp()).abs() < 1e-12);
    // Variance of the 4 NLLs is 1 (they are mean ± 1); standard error sqrt(1/3).
    let want_err = want_ppl / 3f64.sqrt();
    for max_batch in [6, 4, 1] {
        let mut seen = Vec::new();
        let r =
            perplexity(&Bigram::new(2.0, max_batch), &tokens, None, &opts, |p| seen.push(p.done)).unwrap();
        assert_eq!((r.chunks, r.tokens_scored, r.text_tokens), (2, 4, 14));
        assert!((r.ppl - want_ppl).abs() < 1e-12, "max_batch {max_batch}: {} vs {want_ppl}", r.ppl);
        assert!((r.ppl_err - want_err).abs() < 1e-12, "{} vs {want_err}", r.ppl_err);
        assert!((r.running_ppl[0] - ((likely + other) / 2.0).exp()).abs() < 1e-12);
        assert_eq!(seen, [1, 2]);
    }
    // --chunks 1 scores the first chunk only.
    let one = PplOptions { n_ctx: 6, max_chunks: Some(1) };
    let r = perplexity(&Bigram::new(2.0, 6), &tokens, None, &one, |_| {}).unwrap();
    assert_eq!((r.chunks, r.tokens_scored), (1, 2));
}

#[test]
fn chunks_start_with_bos_where_the_vocabulary_adds_it() {
    let t = [7, 1, 2, 3, 4, 5, 6, 8];
    assert_eq!(chunk_tokens(&t, 0, 4, None), [7, 1, 2, 3]);
    assert_eq!(chunk_tokens(&t, 1, 4, Some(9)), [9, 5, 6, 8]);
}

#[test]
fn kl_divergence_of_two_bigrams_by_hand() {
    let tokens = [0, 1, 2, 0, 1, 0, 2, 2, 2, 1, 2, 2];
    let opts = PplOptions { n_ctx: 6, max_chunks: None };
    let (base, model) = (Bigram::new(2.0, 6), Bigram::new(1.0, 6));
    let r = kl_divergence_eval(&base, &model, &tokens, None, &opts, |_| {}).unwrap();
    let s = &r.summary;
    // Every row compares softmax(2,0,0) with softmax(1,0,0) (rotated): the same KL each token.
    let (zb, zm) = (2f64.exp() + 2.0, 1f64.exp() + 2.0);
    let p = [2f64.exp() / zb, 1.0 / zb, 1.0 / zb];
    let q = [1f64.exp() / zm, 1.0 / zm, 1.0 / zm];
    let kl: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
    assert_eq!(s.tokens, 4);
    for v in [s.kld_mean.value, s.kld_median, s.kld_p99, s.kld_max] {
        assert!((v - kl).abs() < 1e-14, "{v} vs {kl}");
    }
    // Equal up to f64 rounding of rotated rows; the spread is cancellation noise.
    assert!(s.kld_sd < 1e-7 && s.kld_mean.err < 1e-7, "{} {}", s.kld_sd, s.kld_mean.err);
    assert_eq!(s.same_top.value, 1.0);
    assert!((s.ppl_base.value - zb / 1f64.exp()).abs() < 1e-12);
    assert!((s.ppl.value - zm / 0.5f64.exp()).abs() < 1e-12);
    assert!((s.ppl_ratio.value - s.ppl.value / s.ppl_base.value).abs() < 1e-12);
    // Against itself: nothing differs.
    let r = kl_divergence_eval(&base, &base, &tokens, None, &opts, |_| {}).unwrap();
    assert_eq!((r.summary.kld_mean.value, r.summary.kld_max, r.summary.ppl_ratio.value), (0.0, 0.0, 1.0));
    assert!(r.summary.ln_ppl_ratio.err.abs() < 1e-7);
}

#[test]
fn kld_stats_percentiles_and_top_agreement() {
    let mut s = KldStats::default();
    s.push(&[1.0, 0.0], &[1.0, 0.0], 0);
    s.push(&[1.0, 0.0], &[0.0, 1.0], 0);
    let sum = s.summary();
    assert_eq!(sum.same_top.value, 0.5);
    assert_eq!(sum.kld_median, s.kld[1] / 2.0);
    let sorted = [0.0, 1.0, 2.0, 3.0, 4.0];
    assert_eq!(percentile(&sorted, 0.5), 2.0);
    assert!((percentile(&sorted, 0.99) - 3.96).abs() < 1e-12);
    assert_eq!(percentile(&sorted, 1.0), 4.0);
    assert_eq!(percentile(&[], 0.5), 0.0);
}

#[test]
fn bad_requests_are_typed_errors() {
    let m = Bigram::new(2.0, 8);
    let t = [0u32; 10];
    let run = |n_ctx, max_chunks| perplexity(&m, &t, None, &PplOptions { n_ctx, max_chunks }, |_| {});
    assert!(matches!(run(5, None), Err(PplError::BadContext { n_ctx: 5, .. })));
    assert!(matches!(run(2, None), Err(PplError::BadContext { n_ctx: 2, .. })));
    assert!(matches!(run(128, None), Err(PplError::BadContext { n_ctx: 128, .. })));
    assert!(matches!(run(12, None), Err(PplError::TooShort { tokens: 10, n_ctx: 12 })));
    assert!(matches!(run(4, Some(0)), Err(PplError::NoChunks)));
    let e = run(12, None).unwrap_err().to_string();
    assert!(e.contains("10 tokens, fewer than one chunk of 12"), "{e}");
    let bad = [0, 1, 5, 0];
    let e = perplexity(&m, &bad, None, &PplOptions { n_ctx: 4, max_chunks: None }, |_| {}).unwrap_err();
    assert!(matches!(e, PplError::BadToken { id: 5, n_vocab: 3 }), "{e}");
}
