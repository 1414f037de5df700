//! Quantize → dequantize error of every type, on Gaussian and heavy-tailed weights, for the
//! round-to-nearest reference and the importance-weighted search: each stays within its
//! named bound (edgellm_core::tolerance::QUANT_ROUNDTRIP), and the weighted search is never
//! worse than the reference.

mod common;

use common::{gaussian, heavy_tailed};
use edgellm_compress::grid::{quantize_row_weighted, WEIGHTED_TYPES};
use edgellm_core::quant::{dequantize, quantize};
use edgellm_core::tolerance::{quant_roundtrip_bound, rel_rmse};
use edgellm_core::DType;

const N: usize = 64 * 1024;

fn weighted(t: DType, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0u8; t.bytes_for(x.len() as u64).unwrap() as usize];
    quantize_row_weighted(t, x, None, &mut out);
    dequantize(t, &out, x.len()).unwrap()
}

#[test]
fn every_type_within_its_bound_and_weighted_no_worse() {
    let mut types = vec![DType::F32, DType::F16, DType::BF16];
    types.extend_from_slice(WEIGHTED_TYPES);
    for t in types {
        let bound = quant_roundtrip_bound(t).unwrap_or_else(|| panic!("no bound for {t}"));
        for (shape, x, b) in [
            ("gaussian", gaussian(N, 11), bound.gaussian),
            ("heavy-tailed", heavy_tailed(N, 12), bound.heavy_tailed),
        ] {
            let rtn = dequantize(t, &quantize(t, &x).unwrap(), N).unwrap();
            let e_rtn = rel_rmse(&rtn, &x);
            println!("{t:<5} {shape:<12} rtn {e_rtn:.5}");
            assert!(e_rtn <= b, "{t} {shape}: rtn rel. RMSE {e_rtn} over its bound {b}");
            if t.is_quantized() {
                let e_w = rel_rmse(&weighted(t, &x), &x);
                println!("{t:<5} {shape:<12} weighted {e_w:.5} ({:+.1}%)", 100.0 * (e_w / e_rtn - 1.0));
                assert!(e_w <= b, "{t} {shape}: weighted rel. RMSE {e_w} over its bound {b}");
                assert!(e_w <= e_rtn * 1.001, "{t} {shape}: weighted {e_w} worse than rtn {e_rtn}");
            }
        }
    }
}
