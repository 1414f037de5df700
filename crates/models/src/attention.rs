//! Causal (optionally sliding-window) grouped-query attention over a [`LayerCache`].

use edgellm_core::parallel::for_each_range;

use crate::kv_cache::LayerCache;
use crate::nn::{dot, softmax};

/// Shape of an attention layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (each serves `n_head / n_head_kv` query heads).
    pub n_head_kv: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Multiplier of the scores (usually `1/sqrt(head_dim)`).
    pub scale: f32,
}

/// Attention of `n` queries at positions `pos0..pos0+n` (`q` is `[n × n_head·head_dim]`)
/// against the cache, which already holds their keys/values. A query at position `p` sees
/// positions `lc.first_visible(p)..=p`. Writes `[n × n_head·head_dim]` into `out`.
pub fn attention(s: &AttnShape, q: &[f32], lc: &LayerCache, pos0: usize, n: usize, out: &mut [f32]) {
    let hd = s.head_dim;
    let qd = s.n_head * hd;
    let group = s.n_head / s.n_head_kv;
    let jobs = n * s.n_head;
    let results = std::sync::Mutex::new(Vec::with_capacity(jobs));
    for_each_range(jobs, 1, |range| {
        let mut scores = Vec::new();
        let mut local = Vec::with_capacity(range.len());
        for job in range {
            let (t, h) = (job / s.n_head, job % s.n_head);
            let kvh = h / group;
            let qv = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
            let p = pos0 + t;
            let lo = lc.first_visible(p);
            debug_assert!(p - lo < lc.capacity, "the cache ring is too small for this batch");
            scores.clear();
            scores.extend((lo..=p).map(|j| dot(qv, &lc.key(j)[kvh * hd..(kvh + 1) * hd]) * s.scale));
            softmax(&mut scores);
            let mut o = vec![0.0f32; hd];
            for (j, &w) in (lo..=p).zip(&scores) {
                for (a, &b) in o.iter_mut().zip(&lc.value(j)[kvh * hd..(kvh + 1) * hd]) {
                    *a += w * b;
                }
            }
            local.push((job, o));
        }
        results.lock().unwrap_or_else(|e| e.into_inner()).extend(local);
    });
    for (job, o) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let (t, h) = (job / s.n_head, job % s.n_head);
        out[t * qd + h * hd..t * qd + (h + 1) * hd].copy_from_slice(&o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct masked attention over full K/V arrays: the definition, with no cache.
    fn naive(
        s: &AttnShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n_total: usize,
        window: Option<usize>,
    ) -> Vec<f32> {
        let (hd, qd, kvd) = (s.head_dim, s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
        let mut out = vec![0.0; n_total * qd];
        for p in 0..n_total {
            for h in 0..s.n_head {
                let kvh = h / (s.n_head / s.n_head_kv);
                let mut w: Vec<f64> = (0..n_total)
                    .map(|j| {
                        let visible = j <= p && window.is_none_or(|w| p - j < w);
                        if !visible {
                            return f64::NEG_INFINITY;
                        }
                        (0..hd)
                            .map(|i| q[p * qd + h * hd + i] as f64 * k[j * kvd + kvh * hd + i] as f64)
                            .sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let m = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                w.iter_mut().for_each(|x| *x = (*x - m).exp());
                let z: f64 = w.iter().sum();
                for i in 0..hd {
                    out[p * qd + h * hd + i] =
                        ((0..n_total).map(|j| w[j] * v[j * kvd + kvh * hd + i] as f64).sum::<f64>() / z)
                            as f32;
                }
            }
        }
        out
    }

    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Sliding-window attention through the ring cache, fed in batches, equals the direct
    /// masked computation — including positions far past the window, where the ring wrapped.
    #[test]
    fn windowed_ring_matches_direct_masked_attention() {
        let s = AttnShape { n_head: 4, n_head_kv: 2, head_dim: 8, scale: 0.35 };
        let (window, batch, n_total) = (5, 3, 23);
        let (qd, kvd) = (32, 16);
        let (q, k, v) = (fill(n_total * qd, 1), fill(n_total * kvd, 2), fill(n_total * kvd, 3));
        for win in [Some(window), None] {
            let want = naive(&s, &q, &k, &v, n_total, win);
            let cap = match win {
                Some(w) => w + batch,
                None => n_total,
            };
            let mut lc = LayerCache::new(kvd, cap, win);
            let mut got = vec![0.0; n_total * qd];
            let mut pos = 0;
            while pos < n_total {
                let n = batch.min(n_total - pos);
                lc.store(pos, &k[pos * kvd..(pos + n) * kvd], &v[pos * kvd..(pos + n) * kvd]);
                attention(&s, &q[pos * qd..(pos + n) * qd], &lc, pos, n, &mut got[pos * qd..(pos + n) * qd]);
                pos += n;
            }
            edgellm_core::tolerance::assert_close(
                "windowed attention",
                &got,
                &want,
                edgellm_core::tolerance::Tolerance::F32_REORDER,
            );
        }
    }
}
