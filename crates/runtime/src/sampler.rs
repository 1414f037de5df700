//! The sampler chain: repetition penalty → top-k → top-p → min-p → temperature → draw.
//!
//! Temperature 0 (or below) is greedy: the arg-max of the (penalized) logits. A seeded sampler
//! is deterministic: the same seed, logits and history give the same tokens.

/// Sampling settings.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` means greedy.
    pub temperature: f32,
    /// Keep the `k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0 = none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Random seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0x5eed,
        }
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and reproducible across platforms.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator from a 64-bit seed.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A sampler with its random state and the history the repetition penalty sees.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
    history: Vec<u32>,
    cand: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler with these settings.
    pub fn new(cfg: SamplerConfig) -> Sampler {
        Sampler { rng: Rng::new(cfg.seed), cfg, history: Vec::new(), cand: Vec::new() }
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Record tokens (the prompt, or tokens chosen elsewhere) for the repetition penalty.
    pub fn accept(&mut self, id: u32) {
        self.history.push(id);
    }

    /// Choose the next token from a row of logits, and record it.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let id = self.choose(logits);
        self.accept(id);
        id
    }

    fn choose(&mut self, logits: &[f32]) -> u32 {
        let c = &self.cfg;
        self.cand.clear();
        self.cand.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        if c.repeat_penalty != 1.0 && c.repeat_last_n > 0 {
            let start = self.history.len().saturating_sub(c.repeat_last_n);
            let mut seen: Vec<u32> = self.history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(e) = self.cand.get_mut(id as usize) {
                    e.1 = if e.1 > 0.0 { e.1 / c.repeat_penalty } else { e.1 * c.repeat_penalty };
                }
            }
        }
        if c.temperature <= 0.0 {
            // Greedy: first maximum wins (stable tie-break on the lower id).
            let mut best = (0u32, f32::NEG_INFINITY);
            for &(i, l) in &self.cand {
                if l > best.1 {
                    best = (i, l);
                }
            }
            return best.0;
        }
        // Sort by logit, descending; NaN last.
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        let k = if c.top_k == 0 { self.cand.len() } else { c.top_k.min(self.cand.len()) };
        if k < self.cand.len() {
            self.cand.select_nth_unstable_by(k - 1, by_logit);
            self.cand.truncate(k);
        }
        self.cand.sort_by(by_logit);
        // Probabilities at temperature 1 for top-p and min-p (as llama.cpp's chain does).
        let max = self.cand[0].1;
        let mut probs: Vec<f64> = self.cand.iter().map(|&(_, l)| ((l - max) as f64).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        let mut keep = self.cand.len();
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= c.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let thr = probs[0] * c.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&p| p >= thr).count().max(1));
        }
        self.cand.truncate(keep);
        // Temperature, then draw.
        let t = c.temperature as f64;
        let w: Vec<f64> = self.cand.iter().map(|&(_, l)| ((l - max) as f64 / t).exp()).collect();
        let total: f64 = w.iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (i, wi) in w.iter().enumerate() {
            if r < *wi {
                return self.cand[i].0;
            }
            r -= wi;
        }
        self.cand[self.cand.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, -1.0, 0.0, 2.9]
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() });
        assert_eq!(s.sample(&logits()), 1);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig {
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                ..Default::default()
            });
            (0..64).map(|_| s.sample(&logits())).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerConfig { temperature: 5.0, top_k: 1, ..Default::default() });
        for _ in 0..20 {
            assert_eq!(s.sample(&logits()), 1);
        }
    }

    #[test]
    fn top_p_and_min_p_restrict_the_candidates() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            ..Default::default()
        });
        for _ in 0..50 {
            assert!([1, 5].contains(&s.sample(&logits())));
        }
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..Default::default()
        });
        for _ in 0..50 {
            assert!([1, 2, 5].contains(&s.sample(&logits())));
        }
    }

    #[test]
    fn repetition_penalty_changes_greedy_choice() {
        let mut s =
            Sampler::new(SamplerConfig { temperature: 0.0, repeat_penalty: 2.0, ..Default::default() });
        s.accept(1);
        assert_eq!(s.sample(&logits()), 5);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 1,
            ..Default::default()
        });
        let l = [0.0f32, (3.0f32).ln()];
        let ones = (0..4000).filter(|_| s.sample(&l) == 1).count();
        assert!((2800..3200).contains(&ones), "{ones}");
    }
}
