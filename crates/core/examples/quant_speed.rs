//! Throughput of the scalar reference conversions (a benchmark, kept apart from the tests).
//!
//! `cargo run --release -p edgellm-core --example quant_speed [million-weights]`
//!
//! Prints, per type, the time to dequantize and to quantize the given number of weights
//! (default 16 M) and the dequantize time projected to 100 M weights.

use std::time::Instant;

use edgellm_core::quant::{dequantize_row, quantize_row};
use edgellm_core::DType;

fn main() {
    let millions: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let n = millions * 1024 * 1024;
    // Deterministic, roughly Gaussian-looking data without a generator dependency.
    let x: Vec<f32> =
        (0..n).map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * ((i % 97) as f32 * 0.05 + 0.1)).collect();
    let mut y = vec![1.0f32; n]; // touched, so page faults do not count
    println!("{:<6} {:>12} {:>14} {:>12}", "type", "dequant ms", "ms per 100M", "quant ms");
    for t in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q8_K,
    ] {
        let mut q = vec![0u8; t.bytes_for(n as u64).expect("whole blocks") as usize];
        let start = Instant::now();
        quantize_row(t, &x, &mut q).expect("quantize");
        let quant_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        dequantize_row(t, &q, &mut y).expect("dequantize");
        let deq_ms = start.elapsed().as_secs_f64() * 1e3;
        std::hint::black_box(&y);
        let per_100m = deq_ms * 100.0e6 / n as f64;
        println!("{:<6} {deq_ms:>12.1} {per_100m:>14.1} {quant_ms:>12.1}", t.name());
    }
}
