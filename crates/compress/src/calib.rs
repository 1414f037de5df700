//! Calibration: run a model over text and collect, for every weight matrix, statistics of its
//! inputs — per input channel the sum of squares (the importance matrix, as llama.cpp's
//! `llama-imatrix` collects it) and, for GPTQ, the full Gram matrix `Σ x xᵀ`.
//!
//! Text is processed as llama-imatrix does: the token stream is cut into chunks of `ctx`
//! tokens, each chunk starts with BOS (replacing its first token) when the model wants one, and
//! every token of the chunk is evaluated from an empty cache. Only weights inside blocks
//! (`blk.*`) are recorded, as llama-imatrix does.
//!
//! For AWQ ([`crate::awq`]) it also records, per shared input, `Σ|x|`, `Σx²` and a few
//! evenly spaced token rows of every chunk; the chunk's first token (BOS, whose activations
//! are outliers of their own) is left out of those.
//!
//! Gram matrices are shared by weights that read the same input: `attn_k`/`attn_v` use
//! `attn_q`'s, `ffn_up` uses `ffn_gate`'s ([`gram_key`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use edgellm_core::parallel::for_each_range;
use edgellm_formats::{Imatrix, ImatrixEntry};
use edgellm_models::linear::{set_input_observer, InputObserver};
use edgellm_models::LanguageModel;

use crate::awq::{AwqInput, AwqStats};
use crate::quantize::{GramSource, Importance};
use crate::CompressError;

/// What to collect and how.
#[derive(Clone, Copy, Debug)]
pub struct CalibOptions {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks to process at most (0 = all the text gives).
    pub chunks: usize,
    /// Also collect Gram matrices (for GPTQ; costs `n²` per token per distinct input).
    pub grams: bool,
    /// The BOS id to put first in each chunk, if the model wants one.
    pub bos: Option<u32>,
    /// Token rows to sample per shared input for AWQ, over all chunks (0 = no AWQ statistics).
    pub awq_samples: usize,
}

/// Collected statistics.
#[derive(Debug, Default)]
pub struct Calibration {
    /// Per-channel sums of squares and token counts, in llama.cpp's layout.
    pub imatrix: Imatrix,
    /// Gram key ([`gram_key`]) → (row-major `n × n` sums of `x xᵀ`, tokens).
    pub grams: HashMap<String, (Vec<f64>, u64)>,
    /// AWQ statistics per shared input (empty unless asked for).
    pub awq: AwqStats,
}

/// The tensor whose Gram matrix `tensor` shares (same input).
pub fn gram_key(tensor: &str) -> String {
    tensor
        .replace("attn_k.weight", "attn_q.weight")
        .replace("attn_v.weight", "attn_q.weight")
        .replace("ffn_up.weight", "ffn_gate.weight")
}

impl GramSource for Calibration {
    fn gram(&self, tensor: &str) -> Option<(&[f64], u64)> {
        self.grams.get(&gram_key(tensor)).map(|(g, c)| (g.as_slice(), *c))
    }
}

impl Importance {
    /// Mean squares from an importance matrix (entries for stacked experts are skipped).
    pub fn from_imatrix(m: &Imatrix) -> Importance {
        Importance {
            entries: m
                .entries
                .iter()
                .filter(|(_, e)| e.counts.len() == 1)
                .map(|(k, e)| (k.clone(), e.mean_squares()))
                .collect(),
        }
    }
}

#[derive(Default)]
struct Stats {
    sums: HashMap<String, (Vec<f64>, u64)>,
    grams: HashMap<String, (Vec<f64>, u64)>,
    awq: HashMap<String, AwqInput>,
}

pub(crate) struct Collector {
    /// Record only weights whose names start with this (e.g. `blk.3.`); `blk.` by default.
    pub(crate) prefix: String,
    grams: bool,
    /// Collect one Gram matrix per shared input ([`gram_key`]; llama-style blocks) rather than
    /// one per weight.
    pub(crate) share_grams: bool,
    /// AWQ rows to sample per forward (chunk); 0 = none.
    awq_per_chunk: usize,
    stats: Mutex<Stats>,
}

impl InputObserver for Collector {
    fn observe(&self, name: &str, x: &[f32], n: usize, k: usize) {
        if !name.starts_with(&self.prefix) {
            return;
        }
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let e = st.sums.entry(name.to_string()).or_insert_with(|| (vec![0.0; k], 0));
        for row in x.chunks_exact(k) {
            for (s, &v) in e.0.iter_mut().zip(row) {
                *s += v as f64 * v as f64;
            }
        }
        e.1 += n as u64;
        if self.grams && (!self.share_grams || gram_key(name) == name) {
            let g = st.grams.entry(name.to_string()).or_insert_with(|| (vec![0.0; k * k], 0));
            add_gram(&mut g.0, x, n, k);
            g.1 += n as u64;
        }
        if self.awq_per_chunk > 0 && gram_key(name) == name && n > 1 {
            // Rows 1..n (row 0 is the chunk's first token), evenly spaced.
            let take = self.awq_per_chunk.min(n - 1);
            let a = st.awq.entry(name.to_string()).or_insert_with(|| AwqInput::new(k));
            a.add(&x[k..], (0..take).map(|i| i * (n - 1) / take));
        }
    }
}

/// `g += XᵀX` for `x` = `[n × k]` (upper triangle computed, then mirrored), in parallel over
/// tiles of rows of `g`; each tile accumulates in f32 over the call, then adds into `g`.
fn add_gram(g: &mut [f64], x: &[f32], n: usize, k: usize) {
    const TILE: usize = 8;
    let tiles = k.div_ceil(TILE);
    let g = Mutex::new(g);
    for_each_range(tiles, 1, |range| {
        let mut acc = vec![0.0f32; TILE * k];
        for tile in range {
            let i0 = tile * TILE;
            let rows = TILE.min(k - i0);
            acc[..rows * k].fill(0.0);
            for t in 0..n {
                let xr = &x[t * k..(t + 1) * k];
                for r in 0..rows {
                    let a = xr[i0 + r];
                    if a != 0.0 {
                        let dst = &mut acc[r * k + i0..(r + 1) * k];
                        for (d, &v) in dst.iter_mut().zip(&xr[i0..]) {
                            *d += a * v;
                        }
                    }
                }
            }
            let mut g = g.lock().unwrap_or_else(|e| e.into_inner());
            for r in 0..rows {
                let i = i0 + r;
                for j in i..k {
                    let v = acc[r * k + j] as f64;
                    g[i * k + j] += v;
                    if j != i {
                        g[j * k + i] += v;
                    }
                }
            }
        }
    });
}

/// Runs `model` over `tokens` and collects input statistics of every block weight.
/// `progress(done, total)` is called after each chunk.
pub fn calibrate(
    model: &dyn LanguageModel,
    tokens: &[u32],
    opts: &CalibOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Calibration, CompressError> {
    let ctx = opts.ctx.max(1);
    let available = tokens.len() / ctx;
    if available == 0 {
        return Err(CompressError::NeedsCalibration {
            method: "calibration",
            what: "at least one full chunk of text (fewer tokens than the context size were given)",
        });
    }
    let n_chunks = if opts.chunks == 0 { available } else { opts.chunks.min(available) };
    let collector = Arc::new(Collector::new("blk.", opts.grams, opts.awq_samples.div_ceil(n_chunks)));
    set_input_observer(Some(collector.clone()));
    let res = (|| -> Result<(), CompressError> {
        for c in 0..n_chunks {
            let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
            if let Some(b) = opts.bos {
                chunk[0] = b;
            }
            let mut cache = model.new_cache(ctx);
            model.forward(&chunk, &mut cache, false).map_err(|e| CompressError::BadTensor {
                tensor: "(calibration forward)".into(),
                why: e.to_string(),
            })?;
            progress(c + 1, n_chunks);
        }
        Ok(())
    })();
    set_input_observer(None);
    res?;
    Ok(collector.take(n_chunks, ctx))
}

impl Collector {
    /// A collector of the inputs of weights named `prefix*`: sums of squares always, Gram
    /// matrices with `grams`, `awq_per_chunk` sampled rows per forward for AWQ.
    pub(crate) fn new(prefix: &str, grams: bool, awq_per_chunk: usize) -> Collector {
        Collector {
            prefix: prefix.to_string(),
            grams,
            share_grams: true,
            awq_per_chunk,
            stats: Mutex::new(Stats::default()),
        }
    }

    /// What was collected so far (the collector is left empty), labelled with the chunk
    /// count and size.
    pub(crate) fn take(&self, n_chunks: usize, ctx: usize) -> Calibration {
        let st = std::mem::take(&mut *self.stats.lock().unwrap_or_else(|e| e.into_inner()));
        let mut imatrix = Imatrix {
            datasets: Vec::new(),
            chunk_count: n_chunks as u32,
            chunk_size: ctx as u32,
            ..Default::default()
        };
        for (name, (sums, count)) in st.sums {
            imatrix.entries.insert(
                name,
                ImatrixEntry { sums: sums.iter().map(|&v| v as f32).collect(), counts: vec![count as f32] },
            );
        }
        Calibration { imatrix, grams: st.grams, awq: AwqStats { inputs: st.awq } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_matches_naive() {
        let (n, k) = (5, 19);
        let x: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let mut g = vec![1.0f64; k * k];
        add_gram(&mut g, &x, n, k);
        for i in 0..k {
            for j in 0..k {
                let want: f64 = 1.0 + (0..n).map(|t| x[t * k + i] as f64 * x[t * k + j] as f64).sum::<f64>();
                assert!((g[i * k + j] - want).abs() < 1e-4, "({i},{j}) {} vs {want}", g[i * k + j]);
            }
        }
    }

    #[test]
    fn gram_keys_share_inputs() {
        assert_eq!(gram_key("blk.3.attn_v.weight"), "blk.3.attn_q.weight");
        assert_eq!(gram_key("blk.3.attn_k.weight"), "blk.3.attn_q.weight");
        assert_eq!(gram_key("blk.3.ffn_up.weight"), "blk.3.ffn_gate.weight");
        assert_eq!(gram_key("blk.3.ffn_down.weight"), "blk.3.ffn_down.weight");
    }
}
