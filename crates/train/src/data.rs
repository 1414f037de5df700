//! Training text and randomness: unlabeled sentences from a plain-text corpus (WikiText's
//! tokenized form included), and the one seeded generator every shuffle draws from.

use std::path::Path;

use crate::TrainError;

/// Sentences of a text, in order: lines split at sentence ends (`" . "`, WikiText's tokenized
/// full stop, and `". "`), headings (`= Title =`) and empty lines skipped, WikiText's `@-@`,
/// `@,@` and `@.@` joined back, and only sentences of at least `min_words` words kept, at most
/// `max` of them.
pub fn sentences(text: &str, max: usize, min_words: usize) -> Vec<String> {
    let mut out = Vec::new();
    if max == 0 {
        return out;
    }
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('=') {
            continue;
        }
        let line = line.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".");
        let mut rest = line.as_str();
        while !rest.is_empty() {
            let (s, next) = match rest.find(". ") {
                Some(i) => (&rest[..=i], &rest[i + 2..]),
                None => (rest, ""),
            };
            rest = next;
            let s = s.trim();
            // WikiText writes "word ." : join the stop back to its word.
            let s = match s.strip_suffix(" .") {
                Some(head) => format!("{head}."),
                None => s.to_string(),
            };
            if s.split_whitespace().count() >= min_words {
                out.push(s);
                if out.len() == max {
                    return out;
                }
            }
        }
    }
    out
}

/// [`sentences`] of the file at `path`.
pub fn read_sentences(path: &Path, max: usize, min_words: usize) -> Result<Vec<String>, TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Data { path: path.into(), source })?;
    Ok(sentences(&String::from_utf8_lossy(&bytes), max, min_words))
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a small, fast generator whose whole state is one
/// seed, so a run is reproduced by its `--seed`.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n > 0`), by Lemire's multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A uniform float in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Shuffle `v` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Batches of indices into `lengths` for one epoch: shuffled, then sorted by length within
/// pools of 16 batches (so a batch pads little), cut into batches of `batch` (the last may be
/// smaller), and the batches shuffled.
pub fn epoch_batches(lengths: &[usize], batch: usize, rng: &mut SplitMix64) -> Vec<Vec<usize>> {
    let batch = batch.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    let mut batches = Vec::new();
    for pool in order.chunks_mut(batch * 16) {
        pool.sort_by_key(|&i| lengths[i]);
        batches.extend(pool.chunks(batch).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wikitext_lines_become_sentences() {
        let text = " = Valkyria Chronicles = \n\n The game began development in 2010 , carrying over a large portion . It was 1 @,@ 000 years old and well @-@ known to all people here . Too short .\n = = Plot = = \n";
        let s = sentences(text, 10, 5);
        assert_eq!(
            s,
            [
                "The game began development in 2010 , carrying over a large portion.",
                "It was 1,000 years old and well-known to all people here."
            ]
        );
        assert_eq!(sentences(text, 1, 5).len(), 1);
        assert!(sentences(text, 0, 5).is_empty());
        assert!(sentences("= a =\n\n", 10, 1).is_empty());
    }

    #[test]
    fn rng_is_seeded_and_shuffles_are_permutations() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        let mut v: Vec<usize> = (0..100).collect();
        a.shuffle(&mut v);
        let mut w: Vec<usize> = (0..100).collect();
        b.shuffle(&mut w);
        assert_eq!(v, w);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
        assert!((0..1000).all(|_| a.below(3) < 3));
    }

    #[test]
    fn epoch_batches_cover_every_index_once() {
        let lengths: Vec<usize> = (0..37).map(|i| (i * 7) % 11).collect();
        let b = epoch_batches(&lengths, 4, &mut SplitMix64::new(1));
        assert!(b.iter().all(|x| !x.is_empty() && x.len() <= 4));
        let mut all: Vec<usize> = b.concat();
        all.sort();
        assert_eq!(all, (0..37).collect::<Vec<_>>());
    }
}
