//! The GPU's row and element-wise operations against the CPU functions the forward passes
//! use, within `tolerance::gpu::ROW_OPS` (add: bit for bit). Adapter handling as in
//! `matmul.rs` (`EDGELLM_REQUIRE_GPU` makes a missing adapter a failure).

use edgellm_core::kernels;
use edgellm_core::tolerance::{assert_close, gpu as gtol, gpu::ROW_OPS};
use edgellm_gpu::GpuError;

mod common;
use common::{gpu, uniform as values};

#[test]
fn row_and_element_ops_equal_the_cpu_functions() {
    let Some(gpu) = gpu() else { return };
    // RMSNorm over SmolLM2's, Gemma 3's and a 2048-wide hidden size, several rows; with
    // 64-bit sums (where the adapter has them) the CPU's bits, with f32 sums within ROW_OPS.
    let f32_sums = edgellm_gpu::Gpu::new_f32_sums().unwrap();
    assert!(!f32_sums.f64_sums());
    eprintln!("64-bit RMSNorm sums: {}", gpu.f64_sums());
    for (i, &(d, rows)) in [(576, 5), (640, 3), (2048, 2), (7, 1)].iter().enumerate() {
        let mut x = values(d * rows, 10 + i as u64, 3.0);
        // An outlier (Gemma 3's residual stream has them): the f32 sum's rounding grows.
        x[d / 2] = 3000.0;
        let w = values(d, 20 + i as u64, 1.5);
        let mut want = x.clone();
        edgellm_models::nn::rms_norm(&mut want, &w, 1e-5);
        let name = format!("rms_norm d={d}");
        assert_close(&name, &f32_sums.rms_norm(&x, &w, 1e-5).unwrap(), &want, ROW_OPS);
        let got = gpu.rms_norm(&x, &w, 1e-5).unwrap();
        if gpu.f64_sums() {
            edgellm_core::tolerance::assert_ulps(&name, &got, &want, 0);
        } else {
            assert_close(&name, &got, &want, ROW_OPS);
        }
    }
    // SwiGLU over both signs and large magnitudes (e^-|x| never overflows).
    let mut g = values(3000, 30, 12.0);
    g.extend([0.0, -0.0, 88.0, -88.0, 1e-30]);
    let u = values(g.len(), 31, 2.0);
    let mut want = g.clone();
    kernels::swiglu(&mut want, &u);
    assert_close("swiglu", &gpu.swiglu(&g, &u).unwrap(), &want, ROW_OPS);
    // The GELU gate through half precision (Gemma 3's feed-forward), over ±12 (both cut-offs).
    let mut g = values(4000, 32, 12.0);
    g.extend([0.0, -10.0, 10.0, -9.99, 9.99, 1e-4]);
    let u = values(g.len(), 33, 2.0);
    let mut want = g.clone();
    edgellm_models::nn::gate(&mut want, &u, edgellm_models::nn::gelu_tanh_table);
    assert_close("gelu_gate", &gpu.gelu_gate(&g, &u).unwrap(), &want, gtol::GELU_F16);
    // Softmax rows as attention takes them: exp(x − max), then one reciprocal of the sum.
    for &(row, rows) in &[(512, 3), (1, 2), (37, 4)] {
        let x = values(row * rows, 40 + row as u64, 8.0);
        let mut want = x.clone();
        for r in want.chunks_exact_mut(row) {
            let m = r.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let inv = (1.0 / kernels::softmax_exp(r, m)) as f32;
            r.iter_mut().for_each(|v| *v *= inv);
        }
        assert_close(&format!("softmax {row}"), &gpu.softmax(&x, row).unwrap(), &want, ROW_OPS);
    }
    // Addition rounds once on both: the same bits.
    let (a, b) = (values(1000, 50, 100.0), values(1000, 51, 1e-3));
    let got = gpu.add(&a, &b).unwrap();
    for ((&g, &x), &y) in got.iter().zip(&a).zip(&b) {
        assert_eq!(g.to_bits(), (x + y).to_bits());
    }
}

#[test]
fn bad_operands_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    assert!(matches!(gpu.rms_norm(&[1.0; 10], &[1.0; 3], 1e-5), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.rms_norm(&[1.0; 3], &[], 1e-5), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.swiglu(&[1.0; 3], &[1.0; 4]), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.add(&[], &[]), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.softmax(&[1.0; 10], 4), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.softmax(&[1.0; 10], 0), Err(GpuError::Shape(_))));
}

/// The encoder's operations through a recording: LayerNorm (the CPU's formula: f64 mean and
/// variance, normalized in f64, rounded, then γ and β), the bias add (exact), exact GELU
/// against the CPU's vectorized one, and attention within sequences against the definition.
#[test]
fn encoder_ops_equal_the_cpu_functions() {
    let Some(gpu) = gpu() else { return };
    let (d, rows) = (384, 5);
    let mut x = values(d * rows, 80, 4.0);
    x[7] = 300.0;
    let (gamma, beta) = (values(d, 81, 1.5), values(d, 82, 0.5));
    let mut want = x.clone();
    for row in want.chunks_exact_mut(d) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + 1e-12f32 as f64).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(&gamma).zip(&beta) {
            *v = ((*v as f64 - mean) * inv) as f32 * g + b;
        }
    }
    let gb: Vec<f32> = gamma.iter().chain(&beta).copied().collect();
    let (xt, gbt, out) = (
        gpu.tensor_from("x", &x).unwrap(),
        gpu.tensor_from("gb", &gb).unwrap(),
        gpu.tensor("out", d * rows).unwrap(),
    );
    let bias = gpu.tensor_from("bias", &beta).unwrap();
    let mut s = gpu.step();
    s.layer_norm(&xt, &gbt, 1e-12, rows, &out).unwrap();
    s.add_bias(&xt, &bias, rows).unwrap();
    let got = s.read(&out, 0, d * rows).unwrap();
    if gpu.f64_sums() {
        edgellm_core::tolerance::assert_ulps("layer_norm", &got, &want, 0);
    } else {
        assert_close("layer_norm", &got, &want, ROW_OPS);
    }
    let biased = gpu.step().read(&xt, 0, d * rows).unwrap();
    for (i, (&g, &v)) in biased.iter().zip(&x).enumerate() {
        assert_eq!(g.to_bits(), (v + beta[i % d]).to_bits(), "add_bias {i}");
    }
    // Exact GELU over the fit's range and beyond (±3.9·√2 clamps).
    let mut gx = values(3000, 83, 8.0);
    gx.extend([0.0, -0.0, 5.6, -5.6, 1e-6]);
    let mut want = gx.clone();
    kernels::gelu_erf(&mut want);
    let (gt, go) = (gpu.tensor_from("g", &gx).unwrap(), gpu.tensor("go", gx.len()).unwrap());
    let mut s = gpu.step();
    s.gelu_erf(&gt, gx.len(), &go).unwrap();
    assert_close("gelu_erf", &s.read(&go, 0, gx.len()).unwrap(), &want, ROW_OPS);
    // Attention within two sequences of 3 and 5 tokens, 2 heads of 32, against f64.
    let (heads, hd, n) = (2usize, 32usize, 8usize);
    let qd = heads * hd;
    let (q, k, v) = (values(n * qd, 84, 2.0), values(n * qd, 85, 2.0), values(n * qd, 86, 1.0));
    let seqs = [0..3usize, 3..8];
    let mut bounds = Vec::new();
    for t in 0..n {
        let r = if t < 3 { &seqs[0] } else { &seqs[1] };
        bounds.extend([f32::from_bits(r.start as u32), f32::from_bits(r.end as u32)]);
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let mut want = vec![0.0f32; n * qd];
    for t in 0..n {
        let r = if t < 3 { seqs[0].clone() } else { seqs[1].clone() };
        for h in 0..heads {
            let o = h * hd;
            let sc: Vec<f64> = r
                .clone()
                .map(|j| {
                    (0..hd).map(|c| q[t * qd + o + c] as f64 * k[j * qd + o + c] as f64).sum::<f64>()
                        * scale as f64
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
            for c in 0..hd {
                want[t * qd + o + c] = r
                    .clone()
                    .zip(&sc)
                    .map(|(j, s)| (s - m).exp() / z * v[j * qd + o + c] as f64)
                    .sum::<f64>() as f32;
            }
        }
    }
    let t = |l: &str, x: &[f32]| gpu.tensor_from(l, x).unwrap();
    let (qt, kt, vt, bt, ot) =
        (t("q", &q), t("k", &k), t("v", &v), t("b", &bounds), gpu.tensor("o", n * qd).unwrap());
    let a = edgellm_gpu::AttnDims { n_head: heads, n_head_kv: heads, head_dim: hd, scale };
    let mut s = gpu.step();
    s.encoder_attention(&qt, &kt, &vt, &bt, &a, n, &ot).unwrap();
    assert_close("encoder_attention", &s.read(&ot, 0, n * qd).unwrap(), &want, gtol::ROW_OPS);
}
