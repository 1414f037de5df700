//! What the GPU tests share: the adapter (or a reason to skip) and deterministic inputs.

#![allow(dead_code)]

use edgellm_gpu::{Gpu, GpuError};

/// The adapter `Gpu::new` finds; without one the test says so and passes, unless
/// `EDGELLM_REQUIRE_GPU` is set (as `.ci/run` sets it), where it fails.
pub fn gpu() -> Option<Gpu> {
    match Gpu::new() {
        Ok(g) => {
            eprintln!("GPU: {}", g.adapter());
            Some(g)
        }
        Err(e @ GpuError::NoAdapter { .. }) => {
            assert!(std::env::var_os("EDGELLM_REQUIRE_GPU").is_none(), "EDGELLM_REQUIRE_GPU is set: {e}");
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Deterministic values in about [-scale, scale) (a 64-bit LCG).
pub fn uniform(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// [`uniform`] in about [-1, 1) with one value in 64 eight times larger (outliers that set
/// block scales).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    uniform(n, seed, 1.0)
        .into_iter()
        .enumerate()
        .map(|(i, v)| if (i as u64 ^ seed).is_multiple_of(64) { v * 8.0 } else { v })
        .collect()
}
