//! Token log-probabilities: the log-softmax of the model's logits at each generated token.

/// Most alternatives [`GenerateParams::logprobs`](crate::GenerateParams::logprobs) may ask for
/// (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// The log-probability of a generated token, and the most likely tokens at its position.
///
/// Log-probabilities are the natural-log softmax of the model's raw logits: before the
/// repetition penalty, top-k / top-p / min-p, the temperature and the constraint mask of an
/// [`OutputFormat`](crate::OutputFormat). They are the model's own distribution; a
/// constrained generation's alternatives may name tokens its grammar banned.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The generated token.
    pub id: u32,
    /// Its text (its bytes, lossily as UTF-8: a token that holds part of a character shows
    /// U+FFFD; a control token its name).
    pub token: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its log-probability (≤ 0).
    pub logprob: f32,
    /// The `k` most likely tokens of the position, as `(id, logprob)`, most likely first (the
    /// lower id first among equals); `k` from [`GenerateParams::logprobs`](crate::GenerateParams).
    /// Empty for `k = 0`. The generated token is among them when it ranks in the top `k` (so
    /// always first for greedy decoding without a repetition penalty or constraint).
    pub top: Vec<(u32, f32)>,
}

/// The log-probability of token `id` of `logits`, and the `k` most likely tokens; `bytes` is
/// the token's text. `scratch` holds the exponentials (sized to the row once, reused).
pub(crate) fn token_logprob(
    logits: &[f32],
    id: u32,
    k: usize,
    bytes: &[u8],
    scratch: &mut Vec<f32>,
) -> TokenLogprob {
    let lse = log_sum_exp(logits, scratch);
    let logprob = |l: f32| (l as f64 - lse) as f32;
    let top = top_k(logits, k).into_iter().map(|(i, l)| (i, logprob(l))).collect();
    TokenLogprob {
        id,
        token: String::from_utf8_lossy(bytes).into_owned(),
        bytes: bytes.to_vec(),
        logprob: logits.get(id as usize).map_or(f32::NEG_INFINITY, |&l| logprob(l)),
        top,
    }
}

/// `ln Σ exp(l)` around the maximum (−∞ for an empty or all −∞ row): the exponentials by the
/// kernels' softmax (SIMD, about one ulp each, summed in f64), in `scratch`.
fn log_sum_exp(logits: &[f32], scratch: &mut Vec<f32>) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    scratch.clear();
    scratch.extend_from_slice(logits);
    max as f64 + edgellm_core::kernels::softmax_exp(scratch, max).ln()
}

/// The `k` largest logits as `(id, logit)`, largest first, the lower id first among equals (NaN
/// never taken). One pass over the row, keeping a sorted list of `k`.
fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return top;
    }
    for (i, &l) in logits.iter().enumerate() {
        // Strictly greater than the k-th: an equal later id does not displace an earlier one.
        if top.len() == k && l <= top[k - 1].1 || l.is_nan() {
            continue;
        }
        let at = top.partition_point(|&(_, t)| t >= l);
        top.insert(at, (i as u32, l));
        top.truncate(k);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_the_log_softmax() {
        let logits = [1.0f32, 3.0, 2.5, -1.0, 3.0, f32::NEG_INFINITY];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let lp = token_logprob(&logits, 2, 3, b"x", &mut Vec::new());
        assert!((lp.logprob as f64 - (2.5 - z.ln())).abs() < 1e-6);
        // Ties: the lower id first.
        assert_eq!(lp.top.iter().map(|&(i, _)| i).collect::<Vec<_>>(), vec![1, 4, 2]);
        assert_eq!(lp.top[0].1, lp.top[1].1);
        assert_eq!(token_logprob(&logits, 5, 0, b"", &mut Vec::new()).logprob, f32::NEG_INFINITY);
        assert!(token_logprob(&logits, 0, 0, b"", &mut Vec::new()).top.is_empty());
        let probs: f64 = token_logprob(&logits, 0, 6, b"", &mut Vec::new())
            .top
            .iter()
            .map(|&(_, l)| (l as f64).exp())
            .sum();
        assert!((probs - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_keeps_the_largest_in_order() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32).collect();
        let top = top_k(&logits, 5);
        let mut sorted: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(top, sorted[..5]);
        assert_eq!(top_k(&[f32::NAN, 1.0], 2), vec![(1, 1.0)]);
    }
}
