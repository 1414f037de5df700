//! The weight bytes a one-token product reads: dense vs column-skipping, a bitmap-sparse and
//! an N:M weight (its own test binary: the byte counter is process-wide).

use edgellm_core::quant::quantize;
use edgellm_core::DType;
use edgellm_models::{Linear, TensorBytes};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn linear(dtype: DType, k: usize, m: usize) -> Linear {
    let w = quantize(dtype, &values(k * m, 11)).unwrap();
    Linear::new("blk.0.ffn_down.weight", dtype, k, m, TensorBytes::Owned(w)).unwrap()
}

#[test]
fn column_skipping_reads_fewer_bytes() {
    let (k, m) = (576, 576);
    let sparse = linear(DType::Q4_0, k, m).with_threshold(Some(0.5), false);
    let dense = linear(DType::Q4_0, k, m);
    let x = values(k, 21);
    let mut y = vec![0.0; m];
    edgellm_models::linear::reset_weight_bytes_read();
    dense.forward(&x, 1, &mut y);
    let d = edgellm_models::linear::weight_bytes_read();
    edgellm_models::linear::reset_weight_bytes_read();
    sparse.forward(&x, 1, &mut y);
    let s = edgellm_models::linear::weight_bytes_read();
    assert_eq!(d as usize, dense.bytes().len());
    // Half the inputs zero: half the codes plus all the scales (0.5 of 4.5 bits).
    assert!(s < d * 7 / 10 && s > d * 4 / 10, "sparse {s} vs dense {d}");

    // (In the same test: the counter is process-wide.) A bitmap-sparse weight reads its
    // metadata and its companion values; an N:M weight what it holds in memory (the lane
    // layout where the tier packs it).
    let w: Vec<f32> = values(k * m, 5).into_iter().map(|v| if v.abs() < 0.7 { 0.0 } else { v }).collect();
    let b = edgellm_core::quant::sparse::quantize_bitmap(&w, k, m).unwrap();
    let (meta, vals) = (b.meta.len(), b.values.len());
    let bitmap =
        Linear::new_bitmap("sb.weight", k, m, TensorBytes::Owned(b.meta), TensorBytes::Owned(b.values), b.c)
            .unwrap();
    edgellm_models::linear::reset_weight_bytes_read();
    bitmap.forward(&x, 1, &mut y);
    assert_eq!(edgellm_models::linear::weight_bytes_read() as usize, meta + vals);
    let nm = linear(DType::Q4_S24, k, m).packed();
    edgellm_models::linear::reset_weight_bytes_read();
    nm.forward(&x, 1, &mut y);
    assert_eq!(edgellm_models::linear::weight_bytes_read() as usize, nm.bytes().len());
}
