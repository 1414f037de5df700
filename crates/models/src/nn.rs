//! Element-wise and small building blocks shared by the architectures.
//!
//! The row-wise and element-wise operations split large inputs (a prompt's activations)
//! over the thread pool ([`for_each_rows_mut`]); small ones (a decoded token's) run on the
//! calling thread. Each element is computed the same way either way.

use edgellm_core::kernels;
use edgellm_core::parallel::for_each_rows_mut;

/// Dot product in f32 with eight independent accumulators (vectorizes well).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// RMSNorm of each row of `x` (`[n × w.len()]`) in place: `x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    for_each_rows_mut(x, w.len(), |_, rows| {
        for row in rows.chunks_exact_mut(w.len()) {
            let ss: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let scale = (1.0 / (ss / w.len() as f64 + eps as f64).sqrt()) as f32;
            for (v, &g) in row.iter_mut().zip(w) {
                *v = *v * scale * g;
            }
        }
    });
}

/// `y += x`.
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add_assign: lengths");
    for_each_rows_mut(y, 1, |at, ys| {
        for (a, b) in ys.iter_mut().zip(&x[at..]) {
            *a += b;
        }
    });
}

/// SiLU-gated product in place: `g = silu(g) * u` (vectorized, [`kernels::swiglu`]).
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "swiglu: lengths");
    for_each_rows_mut(g, 1, |at, gs| kernels::swiglu(gs, &u[at..at + gs.len()]));
}

/// `g = f(g) * u`, element by element.
pub fn gate(g: &mut [f32], u: &[f32], f: impl Fn(f32) -> f32 + Sync) {
    assert_eq!(g.len(), u.len(), "gate: lengths");
    for_each_rows_mut(g, 1, |at, gs| {
        for (a, &b) in gs.iter_mut().zip(&u[at..]) {
            *a = f(*a) * b;
        }
    });
}

/// Rotary embedding tables: `cos`/`sin` of `pos · base^(-2i/rope_dim)` for `i < rope_dim/2`.
pub struct Rope {
    /// Rotated dimensions per head.
    pub dim: usize,
    /// Frequency base.
    pub base: f64,
}

impl Rope {
    /// Rotate adjacent pairs `(x[2i], x[2i+1])` of each head of `x` (`[n_heads × head_dim]`)
    /// at position `pos` (the GGUF llama convention: Q/K weights are stored permuted for it).
    pub fn apply_adjacent(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        self.with_angles(pos, |cs| {
            for head in x.chunks_exact_mut(head_dim) {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (x0, x1) = (head[2 * i] as f64, head[2 * i + 1] as f64);
                    head[2 * i] = (x0 * c - x1 * s) as f32;
                    head[2 * i + 1] = (x0 * s + x1 * c) as f32;
                }
            }
        });
    }

    /// Rotate the halves `(x[i], x[i + dim/2])` of each head (the NeoX convention, used by Gemma).
    pub fn apply_halves(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        let half = self.dim / 2;
        self.with_angles(pos, |cs| {
            for head in x.chunks_exact_mut(head_dim) {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (x0, x1) = (head[i] as f64, head[i + half] as f64);
                    head[i] = (x0 * c - x1 * s) as f32;
                    head[i + half] = (x0 * s + x1 * c) as f32;
                }
            }
        });
    }

    /// Calls `f` with `(cos, sin)` of the `dim/2` angles at `pos`, computed once for all heads
    /// (on the stack: rotary dimensions up to 1024).
    fn with_angles(&self, pos: usize, f: impl FnOnce(&[(f64, f64)])) {
        let mut cs = [(0.0f64, 0.0f64); 512];
        let n = (self.dim / 2).min(cs.len());
        assert_eq!(n, self.dim / 2, "rotary dimension {} above 1024", self.dim);
        // Frequencies base^(-2i/dim) as successive products in f64 (relative error below
        // 1e-13 after 512 steps, far under the f32 results' rounding).
        let step = self.base.powf(-2.0 / self.dim as f64);
        let mut freq = 1.0f64;
        for e in cs[..n].iter_mut() {
            let (s, c) = (pos as f64 * freq).sin_cos();
            *e = (c, s);
            freq *= step;
        }
        f(&cs[..n]);
    }
}

/// Softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// GELU, tanh approximation: `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
}

/// GELU (tanh form) through a table indexed by the input rounded to f16, holding results
/// rounded to f16 — the way llama.cpp's CPU backend evaluates it; inputs at or beyond ±10
/// are computed directly (0 below, the identity above), as there. Used on the fast path so
/// that its activations follow the reference engine's rounding; it is also a cheap lookup.
#[inline]
pub fn gelu_tanh_table(x: f32) -> f32 {
    static TABLE: std::sync::OnceLock<Box<[f32]>> = std::sync::OnceLock::new();
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let t = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let v = half::f16::from_bits(bits).to_f32();
                half::f16::from_f32(gelu_tanh(v)).to_f32()
            })
            .collect()
    });
    t[half::f16::from_f32(x).to_bits() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5);
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_zero() {
        let rope = Rope { dim: 8, base: 10000.0 };
        let orig: Vec<f32> = (0..16).map(|i| i as f32 - 3.0).collect();
        let mut x = orig.clone();
        rope.apply_adjacent(&mut x, 8, 0);
        assert_eq!(x, orig);
        rope.apply_adjacent(&mut x, 8, 17);
        let n0: f32 = orig.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3);
        assert_ne!(x, orig);
    }

    #[test]
    fn rms_norm_unit() {
        let mut x = vec![3.0, 4.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        let r = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / r).abs() < 1e-6 && (x[1] - 8.0 / r).abs() < 1e-6);
    }
}
