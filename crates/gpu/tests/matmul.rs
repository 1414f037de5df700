//! The GPU matrix products against the CPU's scalar oracle: the same quantized weights and
//! activations, every output within `Tolerance::sum_reorder` of the oracle's (the integer
//! block sums are exact on both; only the float order and fused multiply-adds differ).
//!
//! Runs on whatever adapter `Gpu::new` finds — in CI, Mesa's software Vulkan driver
//! (lavapipe). Without one the tests say so and pass, unless `EDGELLM_REQUIRE_GPU` is set
//! (as `.ci/run` sets it), where a missing adapter fails them.

use edgellm_core::kernels::{self, Kernels, Tier};
use edgellm_core::quant::quantize;
use edgellm_core::tolerance::{assert_ulps, Tolerance};
use edgellm_core::DType;
use edgellm_gpu::{Gpu, GpuError};

mod common;
use common::{gpu, values};

#[test]
fn quantized_products_equal_the_scalar_oracle() {
    let Some(gpu) = gpu() else { return };
    let scalar = Kernels::for_tier(Tier::Scalar).unwrap();
    // (k, m, n): one block; rows that do not fill a workgroup; wide rows; SmolLM2's shapes.
    let shapes = [(32, 1, 1), (64, 7, 3), (96, 70, 2), (576, 130, 5), (1536, 65, 4), (576, 1536, 1)];
    // The k-quants' super-blocks hold 256 values.
    let kshapes = [(256, 1, 1), (256, 7, 3), (768, 70, 2), (1536, 130, 5), (2048, 65, 4)];
    let mut checked = 0;
    let types = [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::F32,
        DType::F16,
        DType::Q4_K,
        DType::Q6_K,
    ];
    for (ti, dtype) in types.into_iter().enumerate() {
        assert!(Gpu::supports(dtype));
        let sh: &[(usize, usize, usize)] =
            if matches!(dtype, DType::Q4_K | DType::Q6_K) { &kshapes } else { &shapes };
        for (si, &(k, m, n)) in sh.iter().enumerate() {
            let seed = 10 * si as u64 + 1000 * ti as u64;
            let w = quantize(dtype, &values(k * m, seed)).unwrap();
            let x = values(k * n, seed + 1);
            let row = kernels::activation_row_bytes(dtype, k);
            let mut act = vec![0u8; n * row];
            for t in 0..n {
                scalar.quantize_activations(dtype, &x[t * k..(t + 1) * k], &mut act[t * row..(t + 1) * row]);
            }
            let mut want = vec![0.0f32; m * n];
            scalar.matmul(dtype, &w, k, 0..m, &act, n, &mut want, m);
            let gw = gpu.upload(dtype, k, m, &w).unwrap();
            assert_eq!((gw.dtype(), gw.k(), gw.m()), (dtype, k, m));
            let got = gpu.matmul(&gw, &act, n).unwrap();
            assert_eq!(got.len(), m * n);
            let wb = w.len() / m;
            for t in 0..n {
                for r in 0..m {
                    let (terms, mag) = kernels::dot_error_terms(
                        dtype,
                        &w[r * wb..(r + 1) * wb],
                        &act[t * row..(t + 1) * row],
                        k,
                    );
                    let tol = Tolerance::sum_reorder(terms, mag);
                    let (g, o) = (got[t * m + r], want[t * m + r]);
                    assert!(
                        tol.allows(g, o),
                        "{dtype} k={k} m={m} n={n}: row {r} token {t}: GPU {g} vs oracle {o}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 8000, "{checked}");
}

#[test]
fn bad_uploads_and_products_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let w = quantize(DType::Q8_0, &values(64 * 3, 5)).unwrap();
    assert!(matches!(gpu.upload(DType::Q3_K, 256, 1, &[0; 110]), Err(GpuError::Unsupported(DType::Q3_K))));
    assert!(matches!(gpu.upload(DType::Q4_K, 128, 1, &[0; 72]), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.upload(DType::Q8_0, 64, 3, &w[..w.len() - 1]), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.upload(DType::Q8_0, 48, 4, &w), Err(GpuError::Shape(_))));
    let gw = gpu.upload(DType::Q8_0, 64, 3, &w).unwrap();
    let row = kernels::activation_row_bytes(DType::Q8_0, 64);
    for (act, n) in [(vec![0u8; row], 2), (vec![0u8; row - 1], 1), (Vec::new(), 0)] {
        let e = gpu.matmul(&gw, &act, n).unwrap_err();
        assert!(matches!(e, GpuError::Shape(_)), "{e}");
    }
    // A zero activation row gives zeros.
    assert_eq!(gpu.matmul(&gw, &vec![0u8; row], 1).unwrap(), [0.0; 3]);
}

/// The f16 bits of a block's scale at `o`.
fn f16_bits(b: &[u8], o: usize) -> i32 {
    u16::from_le_bytes([b[o], b[o + 1]]) as i32
}

#[test]
fn device_quantization_is_the_cpus() {
    let Some(gpu) = gpu() else { return };
    let scalar = Kernels::for_tier(Tier::Scalar).unwrap();
    let (k, n) = (768, 7);
    let mut x = values(k * n, 77);
    // An all-zero block, an all-zero 256-value super-block and exact halves (rounding ties).
    x[32..64].fill(0.0);
    x[k..k + 256].fill(0.0);
    for (i, v) in x[64..96].iter_mut().enumerate() {
        *v = (i as f32 - 16.0) * 0.5;
    }
    for dtype in [DType::Q8_0, DType::Q4_1, DType::Q4_K] {
        let row = kernels::activation_row_bytes(dtype, k);
        let (bs, head) = match dtype {
            DType::Q4_1 => (36, 4),
            DType::Q4_K => (292, 4),
            _ => (34, 2),
        };
        let mut want = vec![0u8; n * row];
        for t in 0..n {
            scalar.quantize_activations(dtype, &x[t * k..(t + 1) * k], &mut want[t * row..(t + 1) * row]);
        }
        let got = gpu.quantize_activations(dtype, &x).unwrap();
        assert_eq!(got.len(), want.len());
        // WGSL allows a division 2.5 ulp off and leaves the f16 rounding to the device: a code
        // may differ by one at a tie, a scale by one f16 ulp; both are rare.
        let mut differ = 0;
        for (g, w) in got.chunks_exact(bs).zip(want.chunks_exact(bs)) {
            let codes = if dtype == DType::Q4_K {
                // Q8_K: the f32 scale `1 / iscale` (a WGSL division: a few ulp), 256 codes, and
                // 16 sums that must be the sums of the device's own codes.
                let f = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                assert_ulps("Q8_K scale", &[f(g)], &[f(w)], 4);
                for (grp, sum) in g[260..].chunks_exact(2).enumerate() {
                    let want_sum: i32 =
                        g[4 + 16 * grp..4 + 16 * (grp + 1)].iter().map(|&c| c as i8 as i32).sum();
                    assert_eq!(i16::from_le_bytes([sum[0], sum[1]]) as i32, want_sum, "Q8_K group {grp} sum");
                }
                (&g[4..260], &w[4..260])
            } else {
                for o in (0..head).step_by(2) {
                    assert!((f16_bits(g, o) - f16_bits(w, o)).abs() <= 1, "{dtype}: scale {g:?} vs {w:?}");
                }
                (&g[head..], &w[head..])
            };
            for (&a, &b) in codes.0.iter().zip(codes.1) {
                let d = (a as i8 as i32 - b as i8 as i32).abs();
                assert!(d <= 1, "{dtype}: code {} vs {}", a as i8, b as i8);
                differ += d;
            }
        }
        eprintln!("{dtype}: {differ} codes differ from the CPU's on {}", gpu.adapter());
        assert!(differ * 100 <= (n * k) as i32, "{dtype}: {differ} of {} codes differ", n * k);
    }
    assert!(matches!(gpu.quantize_activations(DType::F16, &x), Err(GpuError::Unsupported(_))));
    assert!(matches!(gpu.quantize_activations(DType::Q8_0, &x[..40]), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.quantize_activations(DType::Q6_K, &x[..512 + 32]), Err(GpuError::Shape(_))));
}

#[test]
fn products_of_f32_rows_equal_the_oracle_on_their_quantization() {
    let Some(gpu) = gpu() else { return };
    let scalar = Kernels::for_tier(Tier::Scalar).unwrap();
    for (i, dtype) in [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q6_K,
        DType::F16,
    ]
    .into_iter()
    .enumerate()
    {
        let (k, m, n) = (512, 70, 3);
        let w = quantize(dtype, &values(k * m, 500 + i as u64)).unwrap();
        let x = values(k * n, 600 + i as u64);
        let gw = gpu.upload(dtype, k, m, &w).unwrap();
        let got = gpu.matmul_f32(&gw, &x, n).unwrap();
        // The activations the product met: the device's quantization for the quantized types,
        // the CPU's (f32 rows) for the float ones.
        let act = match gpu.quantize_activations(dtype, &x) {
            Ok(a) => a,
            Err(GpuError::Unsupported(_)) => {
                let row = kernels::activation_row_bytes(dtype, k);
                let mut a = vec![0u8; n * row];
                for t in 0..n {
                    scalar.quantize_activations(
                        dtype,
                        &x[t * k..(t + 1) * k],
                        &mut a[t * row..(t + 1) * row],
                    );
                }
                a
            }
            Err(e) => panic!("{e}"),
        };
        let mut want = vec![0.0f32; m * n];
        scalar.matmul(dtype, &w, k, 0..m, &act, n, &mut want, m);
        let (row, wb) = (act.len() / n, w.len() / m);
        for t in 0..n {
            for r in 0..m {
                let (terms, mag) = kernels::dot_error_terms(
                    dtype,
                    &w[r * wb..(r + 1) * wb],
                    &act[t * row..(t + 1) * row],
                    k,
                );
                let (g, o) = (got[t * m + r], want[t * m + r]);
                assert!(
                    Tolerance::sum_reorder(terms, mag).allows(g, o),
                    "{dtype}: row {r} token {t}: {g} vs {o}"
                );
            }
        }
    }
}

/// A matrix uploaded in parts (as one larger than the device binds is) gives the same bits as
/// one part: each part writes its rows of the output.
#[test]
fn weights_in_parts_give_the_same_products() {
    let Some(gpu) = gpu() else { return };
    for (i, dtype) in [DType::Q8_0, DType::Q4_K, DType::F16].into_iter().enumerate() {
        let (k, m, n) = (256, 150, 3);
        let w = quantize(dtype, &values(k * m, 900 + i as u64)).unwrap();
        let x = values(k * n, 950 + i as u64);
        let whole = gpu.upload(dtype, k, m, &w).unwrap();
        let parts = gpu.upload_in_parts(dtype, k, m, &w, 64).unwrap();
        assert_eq!((whole.parts(), parts.parts()), (1, 3));
        let (a, b) = (gpu.matmul_f32(&whole, &x, n).unwrap(), gpu.matmul_f32(&parts, &x, n).unwrap());
        assert_ulps(&format!("{dtype} in parts"), &b, &a, 0);
    }
}
