//! Zeros of a pruned matrix through quantization: the symmetric types (no per-block minimum)
//! map an exact zero to an exact zero with every method, so a pruned-then-quantized file keeps
//! its pattern; the types with minimums cannot, and this test measures how far they drift.

mod common;

use edgellm_compress::grid;
use edgellm_core::quant::{dequantize, quantize_row};
use edgellm_core::DType;

/// A heavy-tailed row with a 2:4 pattern.
fn pruned_row(n: usize, seed: u64) -> Vec<f32> {
    let mut v = common::heavy_tailed(n, seed);
    for g in v.chunks_mut(4) {
        // Keep the two largest of each four.
        let mut idx = [0usize, 1, 2, 3];
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        g[idx[2]] = 0.0;
        g[idx[3]] = 0.0;
    }
    v
}

#[test]
fn symmetric_types_keep_zeros_exactly() {
    let n = 1024;
    let keep = [DType::F16, DType::BF16, DType::Q8_0, DType::Q6_K, DType::Q5_0, DType::Q4_0, DType::Q3_K];
    let drift = [DType::Q5_K, DType::Q5_1, DType::Q4_K, DType::Q4_1, DType::Q2_K];
    for dtype in keep.iter().chain(&drift) {
        let row = pruned_row(n, 3);
        let zeros = row.iter().filter(|&&x| x == 0.0).count();
        let bytes = dtype.bytes_for(n as u64).unwrap() as usize;
        let mut rtn = vec![0u8; bytes];
        quantize_row(*dtype, &row, &mut rtn).unwrap();
        let mut outs = vec![("rtn", rtn)];
        if grid::supports(*dtype) {
            let mut w = vec![0u8; bytes];
            grid::quantize_row_weighted(*dtype, &row, None, &mut w);
            outs.push(("weighted", w));
        }
        for (method, q) in outs {
            let back = dequantize(*dtype, &q, n).unwrap();
            let kept = row.iter().zip(&back).filter(|(&a, &b)| a == 0.0 && b == 0.0).count();
            println!("{dtype} {method}: {kept} of {zeros} zeros exact");
            if keep.contains(dtype) {
                assert_eq!(kept, zeros, "{dtype} {method} lost zeros");
            }
        }
    }
}
