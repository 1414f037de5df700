//! Causal (optionally sliding-window) grouped-query attention over a [`LayerCache`].
//!
//! Work is split into jobs of one KV head × a block of queries × the query heads sharing that
//! KV head (all of them, or — when there are too few jobs to keep every thread busy, as in
//! decoding — a part of them). Jobs are handed out most expensive first (the last query
//! blocks see the most keys) to whichever thread is free.
//!
//! A job computes the scores of its rows against the visible cached keys with one call of
//! the matrix-product kernels per contiguous run of ring slots (the keys are its "weight
//! rows", in the cache's type), takes the softmax of each row (vectorized exponential), then
//! adds the values weighted by the probabilities as a register-tiled product
//! ([`kernels::gemm_acc`]), converting each chunk of values to f32 once for all its rows.
//!
//! The numerics follow llama.cpp's (non-flash) attention, so that logits stay comparable with
//! the reference engine: with an F16 cache the query is rounded to half before its dot product
//! with the half keys and the probabilities are rounded to half before they weight the half
//! values; with a Q8_0 cache the query is quantized to Q8_0 and the scores are integer dot
//! products. Up to [`ONLINE_CHUNK`] visible keys the softmax is the exact two-pass one (max,
//! then normalized exponentials), because llama.cpp's probabilities exist before their
//! rounding. Longer spans take an online softmax over the cache: chunks of [`ONLINE_CHUNK`]
//! keys, each row keeping a running maximum and sum, its accumulated values rescaled when the
//! maximum grows and divided by the sum at the end (with an F16 cache the unnormalized
//! exponentials are rounded to half, as llama.cpp's flash attention does), so a job's memory
//! stays bounded however long the context.

use std::cell::RefCell;

use edgellm_core::kernels;
use edgellm_core::parallel::{for_each_index, num_threads, DisjointWriter};

use crate::kv_cache::{decode, KvType, LayerCache};

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

/// Queries per job.
const QUERY_BLOCK: usize = 8;
/// Keys per chunk of the online softmax (spans up to this take the exact two-pass one).
pub const ONLINE_CHUNK: usize = 2048;
/// Values converted to f32 at a time (16 KiB).
const VALUE_CHUNK_FLOATS: usize = 4096;

/// Per-thread working memory, grown on first use and reused.
#[derive(Default)]
struct Scratch {
    /// `[head_dim]` one query row being prepared.
    q: Vec<f32>,
    /// `[rows × activation bytes of a head]` queries in the score kernel's activation format.
    qa: Vec<u8>,
    /// `[rows × span]` scores, then probabilities.
    p: Vec<f32>,
    /// `[rows × head_dim]` weighted sum of values.
    acc: Vec<f32>,
    /// `[chunk × head_dim]` values of a chunk of positions as f32.
    vb: Vec<f32>,
    /// `[rows]` running maximum and sum of the online softmax.
    max: Vec<f32>,
    sum: Vec<f64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Attention of `n` queries at positions `pos0..pos0+n` (`q` is `[n × n_head·head_dim]`)
/// against the cache, which already holds their keys/values. A query at position `p` sees
/// positions `lc.first_visible(p)..=p`. Writes `[n × n_head·head_dim]` into `out`.
pub fn attention(s: &AttnShape, q: &[f32], lc: &LayerCache, pos0: usize, n: usize, out: &mut [f32]) {
    attention_chunked(s, q, lc, pos0, n, out, ONLINE_CHUNK)
}

/// [`attention`] with spans above `chunk` keys on the online softmax.
fn attention_chunked(
    s: &AttnShape,
    q: &[f32],
    lc: &LayerCache,
    pos0: usize,
    n: usize,
    out: &mut [f32],
    chunk: usize,
) {
    let qd = s.n_head * s.head_dim;
    assert_eq!(q.len(), n * qd, "attention: query length");
    assert_eq!(out.len(), n * qd, "attention: output length");
    assert_eq!(lc.shape.head_dim, s.head_dim, "attention: cache head width");
    assert_eq!(lc.shape.n_head_kv, s.n_head_kv, "attention: cache heads");
    let group = s.n_head / s.n_head_kv;
    let nqb = n.div_ceil(QUERY_BLOCK);
    let hsplit = if nqb * s.n_head_kv >= 2 * num_threads() { 1 } else { group };
    let per_block = s.n_head_kv * hsplit;
    let w = DisjointWriter::new(out);
    for_each_index(nqb * per_block, |job| {
        let qb = nqb - 1 - job / per_block;
        let (kvh, part) = ((job % per_block) / hsplit, job % hsplit);
        let t0 = qb * QUERY_BLOCK;
        let ts = t0..(t0 + QUERY_BLOCK).min(n);
        let hs = part * group / hsplit..(part + 1) * group / hsplit;
        let job = Job { s, q, lc, pos0, kvh, hs, ts, chunk };
        SCRATCH.with(|cell| one_job(&job, &mut cell.borrow_mut(), &w));
    });
}

/// One job: queries `ts` × query heads `hs` (counted within the group) of KV head `kvh`.
struct Job<'a> {
    s: &'a AttnShape,
    q: &'a [f32],
    lc: &'a LayerCache,
    pos0: usize,
    kvh: usize,
    hs: std::ops::Range<usize>,
    ts: std::ops::Range<usize>,
    /// Spans above this many keys take the online softmax.
    chunk: usize,
}

impl Job<'_> {
    /// Query heads per row block (`hs.len()`); row `r` is query `ts.start + r / gh`, head
    /// `kvh·group + hs.start + r % gh`.
    fn gh(&self) -> usize {
        self.hs.len()
    }

    /// Position of the query of row `r`.
    fn pos(&self, r: usize) -> usize {
        self.pos0 + self.ts.start + r / self.gh()
    }

    /// Offset of row `r`'s head in a `[n × n_head·head_dim]` array.
    fn offset(&self, r: usize) -> usize {
        let group = self.s.n_head / self.s.n_head_kv;
        let (t, h) = (self.ts.start + r / self.gh(), self.kvh * group + self.hs.start + r % self.gh());
        t * self.s.n_head * self.s.head_dim + h * self.s.head_dim
    }

    /// Scores of every row against positions `c0..c1` into `p` (`[rows × (c1 − c0)]`), one
    /// matrix product per run of contiguous ring slots.
    fn scores(&self, qa: &[u8], rows: usize, c0: usize, c1: usize, p: &mut [f32]) {
        let (lc, hd) = (self.lc, self.s.head_dim);
        let width = c1 - c0;
        let mut a = c0;
        while a < c1 {
            let slot = lc.slot(a);
            let b = c1.min(a + lc.capacity - slot);
            let keys = lc.keys(self.kvh, slot..slot + (b - a));
            kernels::matmul(lc.shape.kv_type.dtype(), keys, hd, 0..b - a, qa, rows, &mut p[a - c0..], width);
            a = b;
        }
    }

    /// `acc += p · values` over positions `c0..c1` (`p` is `[rows × (c1 − c0)]`), a chunk of
    /// values at a time, converted to f32 once for all rows.
    fn add_values(&self, p: &[f32], rows: usize, c0: usize, c1: usize, vb: &mut Vec<f32>, acc: &mut [f32]) {
        let (lc, hd) = (self.lc, self.s.head_dim);
        let width = c1 - c0;
        let chunk = (VALUE_CHUNK_FLOATS / hd).max(8).min(lc.capacity);
        vb.resize(chunk * hd, 0.0);
        let mut a = c0;
        while a < c1 {
            let slot = lc.slot(a);
            let b = (a + chunk).min(c1).min(a + lc.capacity - slot);
            let len = b - a;
            decode(lc.shape.kv_type, lc.values(self.kvh, slot..slot + len), &mut vb[..len * hd]);
            kernels::gemm_acc(rows, len, hd, &p[a - c0..], width, vb, hd, acc, hd);
            a = b;
        }
    }
}

/// Runs one job into `w`.
fn one_job(job: &Job<'_>, sc: &mut Scratch, w: &DisjointWriter<'_, f32>) {
    let (s, lc) = (job.s, job.lc);
    let hd = s.head_dim;
    let kt = lc.shape.kv_type;
    let rows = job.ts.len() * job.gh();
    // Query rows as the score kernels take them: the activation format of the cache type
    // (f32 for F16/F32 keys — rounded to half first for F16, as llama.cpp does — Q8_0 for Q8_0).
    let qab = kernels::activation_row_bytes(kt.dtype(), hd);
    sc.q.resize(hd, 0.0);
    sc.qa.resize(rows * qab, 0);
    for r in 0..rows {
        let o = job.offset(r);
        sc.q.copy_from_slice(&job.q[o..o + hd]);
        if kt == KvType::F16 {
            kernels::round_to_f16(&mut sc.q);
        }
        kernels::quantize_activations(kt.dtype(), &sc.q, &mut sc.qa[r * qab..(r + 1) * qab]);
    }
    let lo = lc.first_visible(job.pos(0));
    let hi = job.pos(rows - 1);
    let span = hi + 1 - lo;
    sc.acc.clear();
    sc.acc.resize(rows * hd, 0.0);
    if span > job.chunk {
        online(job, sc, rows, lo, hi);
    } else {
        two_pass(job, sc, rows, lo, hi);
    }
    for r in 0..rows {
        // SAFETY: each job owns rows (t, h) for its queries and its KV head's query heads;
        // no two jobs share one.
        unsafe { w.write_slice(job.offset(r), &sc.acc[r * hd..(r + 1) * hd]) };
    }
}

/// The exact two-pass softmax over positions `lo..=hi`, then the weighted values, into
/// `sc.acc`.
fn two_pass(job: &Job<'_>, sc: &mut Scratch, rows: usize, lo: usize, hi: usize) {
    let (s, lc) = (job.s, job.lc);
    let kt = lc.shape.kv_type;
    let span = hi + 1 - lo;
    // Pass 1: the scores of every row against positions lo..=hi (`[rows × span]`), straight
    // into the rows.
    sc.p.resize(rows * span, 0.0);
    job.scores(&sc.qa, rows, lo, hi + 1, &mut sc.p);
    // Softmax of each row over its visible positions, as ggml computes it: scaled scores,
    // exp(s − max), the sum in f64, one reciprocal; with an F16 cache the probabilities are
    // rounded to half (they meet half values). Invisible positions get probability 0.
    for r in 0..rows {
        let p = job.pos(r);
        let (jlo, jhi) = (lc.first_visible(p) - lo, p - lo);
        let row = &mut sc.p[r * span..(r + 1) * span];
        row[..jlo].fill(0.0);
        row[jhi + 1..].fill(0.0);
        let vis = &mut row[jlo..=jhi];
        let mut m = f32::NEG_INFINITY;
        for v in vis.iter_mut() {
            *v *= s.scale;
            m = m.max(*v);
        }
        let inv = (1.0 / kernels::softmax_exp(vis, m)) as f32;
        vis.iter_mut().for_each(|v| *v *= inv);
        if kt == KvType::F16 {
            kernels::round_to_f16(vis);
        }
    }
    // Pass 2: the probability-weighted sum of values.
    job.add_values(&sc.p, rows, lo, hi + 1, &mut sc.vb, &mut sc.acc);
}

/// The online softmax over positions `lo..=hi` in chunks of `job.chunk` keys, into `sc.acc`.
fn online(job: &Job<'_>, sc: &mut Scratch, rows: usize, lo: usize, hi: usize) {
    let (s, lc, hd) = (job.s, job.lc, job.s.head_dim);
    let kt = lc.shape.kv_type;
    sc.max.clear();
    sc.max.resize(rows, f32::NEG_INFINITY);
    sc.sum.clear();
    sc.sum.resize(rows, 0.0);
    let mut c0 = lo;
    while c0 <= hi {
        let c1 = (c0 + job.chunk).min(hi + 1);
        let width = c1 - c0;
        sc.p.resize(rows * width, 0.0);
        job.scores(&sc.qa, rows, c0, c1, &mut sc.p);
        for r in 0..rows {
            let p = job.pos(r);
            let row = &mut sc.p[r * width..(r + 1) * width];
            // Visible positions of this row within the chunk (possibly none).
            let (vlo, vhi) = (lc.first_visible(p).max(c0), p.min(c1 - 1));
            if vlo > vhi {
                row.fill(0.0);
                continue;
            }
            let (jlo, jhi) = (vlo - c0, vhi - c0);
            row[..jlo].fill(0.0);
            row[jhi + 1..].fill(0.0);
            let vis = &mut row[jlo..=jhi];
            let mut m = sc.max[r];
            for v in vis.iter_mut() {
                *v *= s.scale;
                m = m.max(*v);
            }
            if m > sc.max[r] {
                // The maximum grew: rescale what the earlier chunks gave.
                let alpha = (sc.max[r] - m).exp();
                sc.sum[r] *= alpha as f64;
                sc.acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= alpha);
                sc.max[r] = m;
            }
            sc.sum[r] += kernels::softmax_exp(vis, m);
            if kt == KvType::F16 {
                kernels::round_to_f16(vis);
            }
        }
        job.add_values(&sc.p, rows, c0, c1, &mut sc.vb, &mut sc.acc);
        c0 = c1;
    }
    for r in 0..rows {
        let inv = (1.0 / sc.sum[r]) as f32;
        sc.acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::{KvCache, KvShape};
    use edgellm_core::tolerance::Tolerance;
    use edgellm_core::DType;

    /// Direct masked attention over full K/V arrays: the definition, with no cache.
    fn naive(
        s: &AttnShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n_total: usize,
        window: Option<usize>,
        half_probabilities: bool,
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
                w.iter_mut().for_each(|x| *x /= z);
                if half_probabilities {
                    w.iter_mut().for_each(|x| *x = half::f16::from_f64(*x).to_f64());
                }
                for i in 0..hd {
                    out[p * qd + h * hd + i] =
                        (0..n_total).map(|j| w[j] * v[j * kvd + kvh * hd + i] as f64).sum::<f64>() as f32;
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

    /// `x` as the cache type stores it (and, for queries, as the scores see it).
    fn through(t: KvType, x: &[f32]) -> Vec<f32> {
        let mut b = vec![0u8; t.bytes(x.len())];
        let mut out = vec![0.0; x.len()];
        match t {
            KvType::F32 => return x.to_vec(),
            KvType::F16 => {
                for (o, v) in b.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
                }
            }
            KvType::Q8_0 => kernels::quantize_activations(DType::Q8_0, x, &mut b),
        }
        decode(t, &b, &mut out);
        out
    }

    /// Sliding-window attention through the ring cache, fed in batches, equals the direct
    /// masked computation on the values the cache type holds — including positions far past
    /// the window, where the ring wrapped — for every cache type.
    #[test]
    fn windowed_ring_matches_direct_masked_attention() {
        let s = AttnShape { n_head: 4, n_head_kv: 2, head_dim: 32, scale: 0.35 };
        let (window, n_total) = (5, 83);
        let (qd, kvd) = (128, 64);
        let (q, k, v) = (fill(n_total * qd, 1), fill(n_total * kvd, 2), fill(n_total * kvd, 3));
        for kt in [KvType::F32, KvType::F16, KvType::Q8_0] {
            let (qs, ks, vs) = (through(kt, &q), through(kt, &k), through(kt, &v));
            let shape = KvShape { kv_type: kt, head_dim: 32, n_head_kv: 2 };
            for (win, batch, chunk) in [
                (Some(window), 11, ONLINE_CHUNK),
                (Some(40), 11, ONLINE_CHUNK),
                (None, 11, ONLINE_CHUNK),
                (Some(window), 1, ONLINE_CHUNK),
                (None, 2, ONLINE_CHUNK),
                // The online softmax: chunks of 16 and 7 keys (the first chunks of a long
                // span hold no visible key for late queries of a window).
                (None, 11, 16),
                (None, 1, 7),
                (Some(40), 11, 16),
                (Some(window), 3, 2),
            ] {
                let want = naive(&s, &qs, &ks, &vs, n_total, win, kt == KvType::F16);
                let cap = KvCache::capacity(win, n_total, batch);
                let mut lc = LayerCache::new(shape, cap, win);
                let mut got = vec![0.0; n_total * qd];
                let mut pos = 0;
                while pos < n_total {
                    let n = batch.min(n_total - pos);
                    lc.store(pos, &k[pos * kvd..(pos + n) * kvd], &v[pos * kvd..(pos + n) * kvd]);
                    attention_chunked(
                        &s,
                        &q[pos * qd..(pos + n) * qd],
                        &lc,
                        pos,
                        n,
                        &mut got[pos * qd..(pos + n) * qd],
                        chunk,
                    );
                    pos += n;
                }
                // With half probabilities, a probability computed in f32 rather than f64 may
                // round to the neighbouring half: one half-ulp (2⁻¹¹ relative) of a weight of
                // at most 1 times a value of at most 1, per position.
                let tol = match kt {
                    KvType::F16 => Tolerance { abs: 2.0 * 4.9e-4, rel: 1e-5 },
                    _ => Tolerance::F32_REORDER,
                };
                edgellm_core::tolerance::assert_close(
                    &format!("{kt} attention, window {win:?}, batch {batch}, chunk {chunk}"),
                    &got,
                    &want,
                    tol,
                );
            }
        }
    }
}
