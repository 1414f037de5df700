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
