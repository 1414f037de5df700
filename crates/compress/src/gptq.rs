//! GPTQ (Frantar et al., 2023, "GPTQ: Accurate Post-Training Quantization for Generative
//! Pre-trained Transformers"): quantize a weight matrix one input column at a time and spread
//! each column's rounding error over the columns not yet quantized, so that the layer's output
//! on calibration inputs changes as little as possible.
//!
//! With `H = XᵀX / tokens` (the inputs' second moment, plus 1 % of its mean diagonal as
//! damping) and `U` the upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`), column `i` of a row is
//! rounded to `q`, and the rest of the row moves by `−(w_i − q)/U_ii · U_i,i+1..` — the
//! optimal compensation under the quadratic loss. The grid is the target type's own: when a
//! column starts a quantization block, that block's scales (and minimums) are fitted to the
//! row's *current* (already compensated) values with [`crate::grid::fit`], weighted by the
//! diagonal of `H`; every column of the block is then rounded on that grid. Rows are
//! independent given `U`, so they run in parallel.
//!
//! `U` is computed without forming `H⁻¹`: with `J` the order-reversing permutation,
//! `U = J·L⁻¹·J` where `L` is the lower Cholesky factor of `J·H·J`.

use edgellm_core::parallel::{for_each_range, DisjointWriter};
use edgellm_core::DType;

use crate::grid;
use crate::CompressError;

/// Default damping added to the diagonal, as a fraction of its mean (GPTQ's `percdamp`).
pub const DAMP: f64 = 0.01;

/// Lower Cholesky factor of the symmetric positive-definite `a` (`n × n`, row-major), or
/// `None` if it is not positive definite.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let (li, lj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let s: f64 = li.iter().zip(lj).map(|(a, b)| a * b).sum();
            let v = a[i * n + j] - s;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of a lower-triangular matrix (row by row: `M_i = (e_i − Σ_{k<i} L_ik M_k) / L_ii`).
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut m = vec![0.0f64; n * n];
    let mut row = vec![0.0f64; n];
    for i in 0..n {
        row.fill(0.0);
        row[i] = 1.0;
        for k in 0..i {
            let c = l[i * n + k];
            if c != 0.0 {
                let mk = &m[k * n..k * n + k + 1];
                for (r, &v) in row[..=k].iter_mut().zip(mk) {
                    *r -= c * v;
                }
            }
        }
        let d = 1.0 / l[i * n + i];
        for (o, &r) in m[i * n..i * n + i + 1].iter_mut().zip(&row[..=i]) {
            *o = r * d;
        }
    }
    m
}

/// The upper Cholesky factor of `(H + damp·I)⁻¹` as f32, and the (undamped) diagonal of `H`,
/// from a Gram matrix `g` summed over `count` tokens, with `damp = damp_frac ·` the mean of
/// the diagonal. Dead inputs (zero diagonal) get a unit diagonal. Damping grows tenfold until
/// the factorization succeeds.
pub fn inverse_factor(g: &[f64], n: usize, count: u64, damp_frac: f64) -> Option<(Vec<f32>, Vec<f32>)> {
    let c = count.max(1) as f64;
    let mut h: Vec<f64> = g.iter().map(|v| v / c).collect();
    let mut diag = vec![0.0f32; n];
    for i in 0..n {
        if h[i * n + i] <= 0.0 {
            h[i * n + i] = 1.0;
        }
        diag[i] = h[i * n + i] as f32;
    }
    let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    let mut damp = damp_frac.max(0.0) * mean;
    for _ in 0..6 {
        // J·(H + damp·I)·J
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
            }
            a[i * n + i] += damp;
        }
        if let Some(l) = cholesky(&a, n) {
            let m = invert_lower(&l, n);
            let mut u = vec![0.0f32; n * n];
            for i in 0..n {
                for j in i..n {
                    u[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)] as f32;
                }
            }
            return Some((u, diag));
        }
        damp *= 10.0;
    }
    None
}

/// GPTQ-quantizes a `[rows × n]` matrix `x` (row-major) to `dtype` given the Gram matrix `g`
/// (`n × n`) of its inputs over `count` tokens, damped by `damp_frac` of its mean diagonal
/// ([`DAMP`] is GPTQ's default); returns the tensor's bytes.
pub fn quantize_matrix(
    name: &str,
    dtype: DType,
    x: &[f32],
    n: usize,
    g: &[f64],
    count: u64,
    damp_frac: f64,
) -> Result<Vec<u8>, CompressError> {
    if !grid::supports(dtype) {
        return Err(CompressError::MethodUnsupported { method: "gptq", dtype, tensor: name.into() });
    }
    if g.len() != n * n {
        return Err(CompressError::ImatrixMismatch {
            tensor: name.into(),
            got: (g.len() as f64).sqrt() as usize,
            want: n,
        });
    }
    let bs = dtype.block_size();
    let ts = dtype.type_size();
    let rows = x.len() / n;
    let row_bytes = n / bs * ts;
    let mut out = vec![0u8; rows * row_bytes];
    let Some((u, diag)) = inverse_factor(g, n, count, damp_frac) else {
        // Not factorizable even with heavy damping: importance-weighted rounding instead.
        for (r, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(row_bytes)) {
            grid::quantize_row_weighted(dtype, r, None, o);
        }
        return Ok(out);
    };
    {
        let dst = DisjointWriter::new(&mut out);
        for_each_range(rows, 4, |range| {
            let mut w = vec![0.0f32; n];
            let mut bytes = vec![0u8; row_bytes];
            for r in range {
                w.copy_from_slice(&x[r * n..(r + 1) * n]);
                gptq_row(dtype, &mut w, &u, &diag, n, &mut bytes);
                for (k, &b) in bytes.iter().enumerate() {
                    // SAFETY: row r's bytes are written by this range only.
                    unsafe { dst.write(r * row_bytes + k, b) };
                }
            }
        });
    }
    Ok(out)
}

/// One row: `w` is updated in place to its quantized values; `bytes` gets the encoding.
fn gptq_row(dtype: DType, w: &mut [f32], u: &[f32], diag: &[f32], n: usize, bytes: &mut [u8]) {
    let bs = dtype.block_size();
    let ts = dtype.type_size();
    for b in 0..n / bs {
        let s = b * bs;
        let fit = grid::fit(dtype, &w[s..s + bs], &diag[s..s + bs]);
        for j in 0..bs {
            let i = s + j;
            let q = fit.value(j, w[i]);
            let e = (w[i] - q) / u[i * n + i];
            w[i] = q;
            if e != 0.0 {
                let ur = &u[i * n + i + 1..(i + 1) * n];
                for (wk, &uk) in w[i + 1..].iter_mut().zip(ur) {
                    *wk -= e * uk;
                }
            }
        }
        fit.pack(&w[s..s + bs], &mut bytes[b * ts..(b + 1) * ts]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellm_core::quant::dequantize;

    fn lcg(s: &mut u64) -> f32 {
        *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*s >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
    }

    #[test]
    fn inverse_factor_reproduces_the_inverse() {
        let n = 24;
        let mut s = 1u64;
        let x: Vec<f32> = (0..n * 64).map(|_| lcg(&mut s)).collect();
        let mut g = vec![0.0f64; n * n];
        for t in 0..64 {
            for i in 0..n {
                for j in 0..n {
                    g[i * n + j] += x[t * n + i] as f64 * x[t * n + j] as f64;
                }
            }
        }
        let (u, _) = inverse_factor(&g, n, 64, DAMP).unwrap();
        // (UᵀU)·(H + damp I) = I
        let mut h: Vec<f64> = g.iter().map(|v| v / 64.0).collect();
        let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        for i in 0..n {
            h[i * n + i] += DAMP * mean;
        }
        for i in 0..n {
            for j in 0..n {
                let mut hinv_h = 0.0f64;
                for k in 0..n {
                    let hinv_ik: f64 = (0..n).map(|m| u[m * n + i] as f64 * u[m * n + k] as f64).sum();
                    hinv_h += hinv_ik * h[k * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((hinv_h - want).abs() < 1e-3, "({i},{j}): {hinv_h}");
            }
        }
    }

    #[test]
    fn gptq_lowers_output_error_on_correlated_inputs() {
        // Inputs with strongly correlated channels: GPTQ must beat plain rounding on ‖(W−Ŵ)X‖.
        let (n, rows, tokens) = (64usize, 16usize, 256usize);
        let mut s = 3u64;
        let base: Vec<f32> = (0..tokens * 4).map(|_| lcg(&mut s)).collect();
        let xs: Vec<f32> =
            (0..tokens * n).map(|i| base[(i / n) * 4 + (i % n) % 4] + 0.1 * lcg(&mut s)).collect();
        let w: Vec<f32> = (0..rows * n).map(|_| lcg(&mut s)).collect();
        let mut g = vec![0.0f64; n * n];
        for t in 0..tokens {
            for i in 0..n {
                for j in 0..n {
                    g[i * n + j] += xs[t * n + i] as f64 * xs[t * n + j] as f64;
                }
            }
        }
        let out_err = |wq: &[f32]| -> f64 {
            let mut e = 0.0f64;
            for r in 0..rows {
                for t in 0..tokens {
                    let d: f64 =
                        (0..n).map(|i| (w[r * n + i] - wq[r * n + i]) as f64 * xs[t * n + i] as f64).sum();
                    e += d * d;
                }
            }
            e
        };
        for dtype in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
            let q = quantize_matrix("t", dtype, &w, n, &g, tokens as u64, DAMP).unwrap();
            let wq = dequantize(dtype, &q, rows * n).unwrap();
            let mut r = vec![0u8; q.len()];
            for (a, o) in w.chunks_exact(n).zip(r.chunks_exact_mut(n / 32 * dtype.type_size())) {
                grid::quantize_row_weighted(dtype, a, None, o);
            }
            let wr = dequantize(dtype, &r, rows * n).unwrap();
            let (eg, er) = (out_err(&wq), out_err(&wr));
            assert!(eg < 0.7 * er, "{dtype}: gptq {eg} vs rounding {er}");
        }
    }
}
