//! Synthetic data and models for the compress tests.
#![allow(dead_code)]

use edgellm_core::DType;
use edgellm_formats::{GgufWriter, Value};

/// A small deterministic generator (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn gaussian(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Student-t with 3 degrees of freedom.
    pub fn student_t3(&mut self) -> f64 {
        let z = self.gaussian();
        let chi2: f64 = (0..3).map(|_| self.gaussian().powi(2)).sum();
        z / (chi2 / 3.0).sqrt()
    }
}

pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n).map(|_| r.gaussian() as f32).collect()
}

/// Student-t(3) with rare ×20 outliers, the shape of real weight matrices' tails.
pub fn heavy_tailed(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n).map(|_| (r.student_t3() * if r.uniform() < 0.002 { 20.0 } else { 1.0 }) as f32).collect()
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A Llama-shaped model with F32 weights: `d` wide, `ff` feed-forward, `layers` blocks,
/// 4 query heads per KV head, tied embeddings.
pub fn llama_like(d: usize, ff: usize, layers: usize, vocab: usize) -> GgufWriter<'static> {
    let kv = d / 4;
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.name", Value::String("synthetic".into()));
    w.set("general.file_type", Value::U32(0));
    w.set("llama.block_count", Value::U32(layers as u32));
    w.set("llama.embedding_length", Value::U32(d as u32));
    w.set("llama.attention.head_count", Value::U32(4));
    w.set("llama.attention.head_count_kv", Value::U32(1));
    let mut seed = 1u64;
    let mut add = |w: &mut GgufWriter<'static>, name: &str, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        seed += 1;
        let data = if dims.len() == 1 { vec![1.0f32; n as usize] } else { heavy_tailed(n as usize, seed) };
        w.add_tensor(name, dims, DType::F32, f32_bytes(&data)).unwrap();
    };
    add(&mut w, "token_embd.weight", &[d as u64, vocab as u64]);
    for i in 0..layers {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        add(&mut w, &n("attn_norm"), &[d as u64]);
        add(&mut w, &n("attn_q"), &[d as u64, d as u64]);
        add(&mut w, &n("attn_k"), &[d as u64, kv as u64]);
        add(&mut w, &n("attn_v"), &[d as u64, kv as u64]);
        add(&mut w, &n("attn_output"), &[d as u64, d as u64]);
        add(&mut w, &n("ffn_norm"), &[d as u64]);
        add(&mut w, &n("ffn_gate"), &[d as u64, ff as u64]);
        add(&mut w, &n("ffn_up"), &[d as u64, ff as u64]);
        add(&mut w, &n("ffn_down"), &[ff as u64, d as u64]);
    }
    add(&mut w, "output_norm.weight", &[d as u64]);
    w
}
