//! The column-skipping product (`kernels::colskip`) equals the dense product on the
//! thresholded input: bit for bit against the scalar dense oracle, on every tier, for every
//! type with a column-blocked layout, at tile edges and at several sparsities.

use edgellm_core::kernels::colskip::{
    colskip_implementing_tier, colskip_matmul_for_tier, colskip_supports, ActiveColumns, ColPacked, TILE,
};
use edgellm_core::kernels::{activation_row_bytes, available_tiers, Kernels, Tier};
use edgellm_core::quant::quantize;
use edgellm_core::tolerance::assert_ulps;
use edgellm_core::DType;

/// Deterministic values in about [-1, 1) (a 64-bit LCG), with a few large ones.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            if (s >> 20) & 63 == 0 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

/// `x` with the values of magnitude below its `frac` quantile set to zero.
fn threshold(x: &[f32], frac: f64) -> Vec<f32> {
    let mut mags: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    mags.sort_by(|a, b| a.total_cmp(b));
    let i = ((frac * x.len() as f64) as usize).min(x.len());
    let t = if i == x.len() { f32::INFINITY } else { mags[i] };
    x.iter().map(|&v| if v.abs() < t { 0.0 } else { v }).collect()
}

const TYPES: [DType; 4] = [DType::Q4_0, DType::Q5_0, DType::Q8_0, DType::Q4_K];

#[test]
fn supported_types_are_the_tested_ones() {
    for t in edgellm_core::TYPES {
        assert_eq!(colskip_supports(t.dtype), TYPES.contains(&t.dtype), "{}", t.name);
    }
}

#[test]
fn column_skipping_equals_dense_oracle_on_thresholded_input() {
    let scalar = Kernels::for_tier(Tier::Scalar).unwrap();
    // (k, m): one 64-row tile, a 128-row tile, tiles of 128 and a 64-row tail, wide rows;
    // 99.9 % zeros leaves one or two active blocks (the prefetch runs past the list's end).
    let shapes: [(usize, usize); 5] = [(32, 64), (96, 128), (160, 192), (576, 576), (1536, 320)];
    let mut checked = 0;
    for (ti, &weight) in TYPES.iter().enumerate() {
        for (si, &(k, m)) in shapes.iter().enumerate() {
            // Q4_K's rows are whole 256-value super-blocks.
            let k = if weight == DType::Q4_K { k.next_multiple_of(256) } else { k };
            let mut w = quantize(weight, &values(k * m, 7 + si as u64 + 100 * ti as u64)).unwrap();
            if weight == DType::Q8_0 {
                // Codes at the type's extremes (-128 is valid in a file, though quantize
                // never writes it): the kernels' 16-bit sums must still be exact.
                for (i, blk) in w.chunks_exact_mut(34).enumerate() {
                    blk[2 + i % 32] = 0x80;
                    blk[2 + (i * 7 + 3) % 32] = 0x7f;
                }
            }
            let packed = ColPacked::pack(weight, k, m, &w).expect("packable shape");
            assert_eq!(packed.tiles(), m.div_ceil(TILE));
            for (fi, frac) in [0.0, 0.4, 0.5, 0.9, 0.99, 0.999, 1.0].into_iter().enumerate() {
                let x = threshold(&values(k, 1000 + fi as u64 + 10 * si as u64), frac);
                let mut act = vec![0u8; activation_row_bytes(weight, k)];
                scalar.quantize_activations(weight, &x, &mut act);
                let mut want = vec![0.0f32; m];
                scalar.matmul(weight, &w, k, 0..m, &act, 1, &mut want, m);
                let mut cols = ActiveColumns::new();
                cols.gather_for(weight, &act, k);
                let codes: Vec<u8> = if weight == DType::Q4_K {
                    act.chunks_exact(292).flat_map(|b| &b[4..260]).copied().collect()
                } else {
                    act.chunks_exact(34).flat_map(|b| &b[2..]).copied().collect()
                };
                let nonzero = codes.iter().filter(|&&q| q != 0).count();
                assert_eq!(cols.active(), nonzero);
                for tier in available_tiers() {
                    let name = format!("{weight} k={k} m={m} frac={frac} tier={}", tier.name());
                    let mut got = vec![f32::NAN; m];
                    colskip_matmul_for_tier(tier, &packed, 0..packed.tiles(), &cols, &mut got);
                    assert_ulps(&name, &got, &want, 0);
                    // Every split into tile ranges (what threads get) writes the same rows.
                    for split in 1..packed.tiles() {
                        let r = packed.tile_row_range(0..split).end;
                        let (a, b) = got.split_at_mut(r);
                        a.fill(f32::NAN);
                        b.fill(f32::NAN);
                        colskip_matmul_for_tier(tier, &packed, 0..split, &cols, a);
                        colskip_matmul_for_tier(tier, &packed, split..packed.tiles(), &cols, b);
                        assert_ulps(&format!("{name} split {split}"), &got, &want, 0);
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= TYPES.len() * shapes.len() * 7);
}

#[test]
fn simd_tiers_have_their_own_kernels() {
    for tier in available_tiers() {
        for weight in TYPES {
            let t = colskip_implementing_tier(tier, weight);
            match tier {
                Tier::Avx2 | Tier::Avx512Vnni => assert_eq!(t, tier, "{weight}"),
                // One NEON kernel for every AArch64 tier; Q8_0's `sdot` kernel where it can.
                Tier::NeonDotprod | Tier::NeonI8mm if weight == DType::Q8_0 => {
                    assert_eq!(t, Tier::NeonDotprod, "{weight}")
                }
                Tier::Neon | Tier::NeonDotprod | Tier::NeonI8mm => assert_eq!(t, Tier::Neon, "{weight}"),
                Tier::Scalar => assert_eq!(t, Tier::Scalar, "{weight}"),
            }
        }
    }
}

#[test]
fn unpackable_shapes_and_types_are_refused() {
    let w = quantize(DType::Q4_0, &values(32 * 96, 1)).unwrap();
    assert!(ColPacked::pack(DType::Q4_0, 32, 96, &w).is_none(), "96 rows is not a multiple of 64");
    let w = quantize(DType::Q6_K, &values(256 * 64, 1)).unwrap();
    assert!(ColPacked::pack(DType::Q6_K, 256, 64, &w).is_none(), "Q6_K has no column-blocked layout");
    let w = quantize(DType::Q4_K, &values(512 * 64, 1)).unwrap();
    assert!(ColPacked::pack(DType::Q4_K, 512, 64, &w).is_some());
    assert!(ColPacked::pack(DType::Q4_K, 288, 64, &w).is_none(), "Q4_K rows of 288 values");
    let w = quantize(DType::Q4_0, &values(32 * 64, 1)).unwrap();
    assert!(ColPacked::pack(DType::Q4_0, 32, 64, &w[1..]).is_none());
}

#[test]
fn bytes_read_shrink_with_the_active_columns() {
    let (k, m) = (512, 192);
    let scalar = Kernels::for_tier(Tier::Scalar).unwrap();
    for weight in TYPES {
        let w = quantize(weight, &values(k * m, 3)).unwrap();
        let p = ColPacked::pack(weight, k, m, &w).unwrap();
        assert_eq!(ColPacked::len_for(weight, k, m), Some(p.bytes().len()), "{weight}");
        let mut act = vec![0u8; activation_row_bytes(weight, k)];
        let mut cols = ActiveColumns::new();
        // Magnitudes within a factor 3 of each other: no code rounds to zero.
        let x: Vec<f32> = values(k, 5).iter().map(|v| v.signum() * (0.5 + v.abs().min(1.0))).collect();
        scalar.quantize_activations(weight, &x, &mut act);
        cols.gather_for(weight, &act, k);
        assert_eq!(cols.active(), k);
        let dense = p.bytes_read(&cols);
        assert_eq!(dense, p.bytes().len(), "{weight}: all columns active reads the whole layout");
        scalar.quantize_activations(weight, &threshold(&x, 0.5), &mut act);
        cols.gather_for(weight, &act, k);
        assert!(p.bytes_read(&cols) < dense * 6 / 10, "{weight}: {} of {dense}", p.bytes_read(&cols));
    }
}

#[test]
fn q4_k_extreme_codes_stay_exact() {
    // Every Q8_K code −127 (a constant input) against rows of all-0 and all-15 nibbles with
    // the largest scales and minimums: the kernels' 16-bit partial sums are at their bounds.
    let (k, m) = (512, 128);
    let mut w = Vec::with_capacity(m * k / 256 * 144);
    for r in 0..m {
        for _ in 0..k / 256 {
            w.extend_from_slice(&[0x00, 0x3c, 0x00, 0x38]); // d = 1, dmin = 0.5
            w.extend_from_slice(&[0xff; 12]); // every scale and minimum 63
            w.extend_from_slice(&[if r % 2 == 0 { 0x00 } else { 0xff }; 128]);
        }
    }
    let scalar = Kernels::for_tier(Tier::Scalar).unwrap();
    let mut act = vec![0u8; activation_row_bytes(DType::Q4_K, k)];
    scalar.quantize_activations(DType::Q4_K, &vec![1.0; k], &mut act);
    assert!(act[4..260].iter().all(|&q| q == 0x81), "a constant input quantizes to −127");
    let mut want = vec![0.0f32; m];
    scalar.matmul(DType::Q4_K, &w, k, 0..m, &act, 1, &mut want, m);
    let packed = ColPacked::pack(DType::Q4_K, k, m, &w).unwrap();
    let mut cols = ActiveColumns::new();
    cols.gather_for(DType::Q4_K, &act, k);
    for tier in available_tiers() {
        let mut got = vec![f32::NAN; m];
        colskip_matmul_for_tier(tier, &packed, 0..packed.tiles(), &cols, &mut got);
        assert_ulps(&format!("Q4_K extremes tier={}", tier.name()), &got, &want, 0);
    }
}
