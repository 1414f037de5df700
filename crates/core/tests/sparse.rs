//! The sparse formats (`quant::sparse`) and their kernels:
//!
//! - the N:M quantizer keeps the N largest magnitudes of every M and its kept values decode
//!   exactly as ggml's Q4_0 / Q8_0 of those 32 values; a row that already is N:M keeps
//!   exactly its non-zeros; the bitmap quantizer keeps exactly the non-zeros;
//! - the scalar oracles equal the dense Q4_0 / Q8_0 oracles on the dense equivalent rows (the
//!   kept codes at their inputs, zero codes elsewhere, the block scale in both halves), bit
//!   for bit, and the dense SIMD kernels within `Tolerance::sum_reorder`;
//! - every SIMD tier equals the oracle within `Tolerance::sum_reorder` (of the dense
//!   equivalent's `dot_error_terms`, the same partial products) for 1..=9 tokens, row ranges
//!   that hit tile edges, k = 64, 576, 1536;
//! - the validator accepts every row the quantizers write and refuses each corruption with
//!   the right error.

use edgellm_core::kernels::{self, Kernels};
use edgellm_core::quant::sparse::{
    self, nm_keep_mask, quantize_bitmap, validate, NmLayout, NmPattern, SparseError, MASKS_2_4, MASKS_4_8,
};
use edgellm_core::quant::{dequantize, quantize};
use edgellm_core::tolerance::{check_close, Tolerance};
use edgellm_core::DType;

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
    fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

const NM: [DType; 4] = [DType::Q4_S24, DType::Q4_S48, DType::Q8_S24, DType::Q8_S48];
const KS: [usize; 3] = [64, 576, 1536];

fn dense_type(t: DType) -> DType {
    if NmLayout::of(t).unwrap().value_bits == 4 {
        DType::Q4_0
    } else {
        DType::Q8_0
    }
}

/// The dense Q4_0 / Q8_0 row equal to an N:M row: per 64-input block, two 32-value blocks with
/// the block's scale, the kept codes at their inputs and zero codes (Q4_0: 8) elsewhere.
fn dense_equivalent(t: DType, row: &[u8]) -> Vec<u8> {
    let l = NmLayout::of(t).unwrap();
    let q4 = l.value_bits == 4;
    let mut out = Vec::new();
    for b in row.chunks_exact(l.bytes()) {
        let mask = l.keep_mask(b);
        let qs = &b[l.qs_offset()..];
        let kept: Vec<u8> = (0..32)
            .map(|j| {
                if q4 {
                    if j < 16 {
                        qs[j] & 15
                    } else {
                        qs[j - 16] >> 4
                    }
                } else {
                    qs[j]
                }
            })
            .collect();
        let mut codes = [if q4 { 8u8 } else { 0u8 }; 64];
        let mut j = 0;
        for (i, c) in codes.iter_mut().enumerate() {
            if mask >> i & 1 == 1 {
                *c = kept[j];
                j += 1;
            }
        }
        assert_eq!(j, 32, "a valid block keeps 32 values");
        for h in 0..2 {
            out.extend_from_slice(&b[0..2]);
            let c = &codes[32 * h..32 * h + 32];
            if q4 {
                out.extend((0..16).map(|i| c[i] | (c[i + 16] << 4)));
            } else {
                out.extend_from_slice(c);
            }
        }
    }
    out
}

/// The dense Q8_0 matrix equal to a `Q8_SB` matrix (a row's kept inputs past its `c` values
/// are zero, as the format says).
fn bitmap_dense_equivalent(meta: &[u8], values: &[u8], c: usize, k: usize, m: usize) -> Vec<u8> {
    let rb = k / 64 * 10;
    let mut out = Vec::new();
    for r in 0..m {
        let mut o = r * c;
        for b in meta[r * rb..(r + 1) * rb].chunks_exact(10) {
            let mask = sparse::bitmap_mask(b);
            let mut codes = [0u8; 64];
            for (i, q) in codes.iter_mut().enumerate() {
                if mask >> i & 1 == 1 {
                    *q = if o < (r + 1) * c { values[o] } else { 0 };
                    o += 1;
                }
            }
            for h in 0..2 {
                out.extend_from_slice(&b[0..2]);
                out.extend_from_slice(&codes[32 * h..32 * h + 32]);
            }
        }
    }
    out
}

/// Activations: `n` Q8_0 rows of `k` values.
fn activations(rng: &mut Rng, k: usize, n: usize) -> Vec<u8> {
    let x = rng.normals(k * n);
    let ab = kernels::activation_row_bytes(DType::Q8_0, k);
    let mut a = vec![0u8; ab * n];
    for t in 0..n {
        Kernels::for_tier(kernels::Tier::Scalar).unwrap().quantize_activations(
            DType::Q8_0,
            &x[t * k..(t + 1) * k],
            &mut a[t * ab..(t + 1) * ab],
        );
    }
    a
}

/// A weight matrix that is `keep` dense, the rest exact zeros (unstructured).
fn unstructured(rng: &mut Rng, k: usize, m: usize, keep: f64) -> Vec<f32> {
    (0..k * m).map(|_| if rng.uniform() < keep { rng.normal() } else { 0.0 }).collect()
}

#[test]
fn nm_kept_values_are_q4_0_or_q8_0_of_the_kept_values() {
    let mut rng = Rng(1);
    for t in NM {
        let l = NmLayout::of(t).unwrap();
        let x = rng.normals(1536);
        let q = quantize(t, &x).unwrap();
        assert_eq!(q.len(), 1536 / 64 * t.type_size());
        let y = dequantize(t, &q, 1536).unwrap();
        for (bi, (xb, yb)) in x.chunks_exact(64).zip(y.chunks_exact(64)).enumerate() {
            let mask = nm_keep_mask(l.pattern, xb);
            assert_eq!(mask, l.keep_mask(&q[bi * l.bytes()..]), "{t}: stored mask");
            let (n, mm) = l.pattern.n_m();
            for g in 0..64 / mm {
                let gm = (mask >> (g * mm)) & ((1 << mm) - 1);
                assert_eq!(gm.count_ones() as usize, n, "{t}: group {g}");
                // Every kept magnitude is at least every dropped one in its group.
                let kept_min = (0..mm)
                    .filter(|i| gm >> i & 1 == 1)
                    .map(|i| xb[g * mm + i].abs())
                    .fold(f32::MAX, f32::min);
                let drop_max =
                    (0..mm).filter(|i| gm >> i & 1 == 0).map(|i| xb[g * mm + i].abs()).fold(0.0, f32::max);
                assert!(kept_min >= drop_max, "{t}: group {g} keeps a smaller value");
            }
            let kept: Vec<f32> = (0..64).filter(|i| mask >> i & 1 == 1).map(|i| xb[i]).collect();
            let dt = dense_type(t);
            let want = dequantize(dt, &quantize(dt, &kept).unwrap(), 32).unwrap();
            let got: Vec<f32> = (0..64).filter(|i| mask >> i & 1 == 1).map(|i| yb[i]).collect();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{t}: kept values are {dt} of the kept values"
            );
            assert!((0..64).filter(|i| mask >> i & 1 == 0).all(|i| yb[i] == 0.0), "{t}: dropped are zero");
        }
    }
}

#[test]
fn nm_quantizer_is_the_identity_mask_on_nm_rows() {
    let mut rng = Rng(2);
    for t in NM {
        let l = NmLayout::of(t).unwrap();
        let (n, m) = l.pattern.n_m();
        for case in 0..3 {
            // Random N:M rows; case 1 drops one more per group (fewer than N non-zeros: the
            // zeros are kept at the lowest free positions); case 2 includes tiny values.
            let mut x = rng.normals(576);
            let mut want_mask = [0u64; 9];
            for g in 0..576 / m {
                let mut idx: Vec<usize> = (0..m).collect();
                for i in (1..m).rev() {
                    idx.swap(i, rng.next_u64() as usize % (i + 1));
                }
                let keep = if case == 1 { n - 1 } else { n };
                for &i in &idx[keep..] {
                    x[g * m + i] = 0.0;
                }
                if case == 2 {
                    x[g * m + idx[0]] = 1e-30;
                }
                let mut kept: Vec<usize> = idx[..keep].to_vec();
                let free: Vec<usize> = (0..m).filter(|i| !kept.contains(i)).collect();
                kept.extend_from_slice(&free[..n - keep]);
                for i in kept {
                    let e = g * m + i;
                    want_mask[e / 64] |= 1 << (e % 64);
                }
            }
            let q = quantize(t, &x).unwrap();
            for b in 0..9 {
                assert_eq!(l.keep_mask(&q[b * l.bytes()..]), want_mask[b], "{t} case {case} block {b}");
            }
            validate(t, 576, 1, &q, None).unwrap();
        }
    }
}

#[test]
fn oracles_equal_the_dense_kernels_on_the_dense_equivalent() {
    let mut rng = Rng(3);
    let scalar = Kernels::for_tier(kernels::Tier::Scalar).unwrap();
    for t in NM {
        for k in KS {
            let m = 5;
            let w = quantize(t, &rng.normals(k * m)).unwrap();
            let a = activations(&mut rng, k, 1);
            let rb = t.type_size() * k / 64;
            let dt = dense_type(t);
            for r in 0..m {
                let row = &w[r * rb..(r + 1) * rb];
                let dense = dense_equivalent(t, row);
                assert_eq!(dense.len(), dt.bytes_for(k as u64).unwrap() as usize);
                // The dense equivalent decodes to the same values.
                assert_eq!(dequantize(t, row, k).unwrap(), dequantize(dt, &dense, k).unwrap(), "{t} k={k}");
                let got = scalar.vec_dot(t, row, &a, k);
                let want = scalar.vec_dot(dt, &dense, &a, k);
                assert_eq!(got.to_bits(), want.to_bits(), "{t} k={k} row {r}: oracle {got} vs dense {want}");
                for tier in kernels::available_tiers() {
                    let kt = Kernels::for_tier(tier).unwrap();
                    let d = kt.vec_dot(dt, &dense, &a, k);
                    let (terms, mag) = kernels::dot_error_terms(dt, &dense, &a, k);
                    let tol = Tolerance::sum_reorder(terms, mag);
                    assert!(tol.allows(got, d), "{t} k={k}: oracle {got} vs {dt} on {tier:?} {d}");
                }
            }
        }
    }
}

#[test]
fn bitmap_oracle_equals_the_dense_q8_0_kernel() {
    let mut rng = Rng(4);
    let scalar = Kernels::for_tier(kernels::Tier::Scalar).unwrap();
    for k in KS {
        for keep in [0.0, 0.05, 0.3, 0.7, 1.0] {
            let m = 6;
            let x = unstructured(&mut rng, k, m, keep);
            let bm = quantize_bitmap(&x, k, m).unwrap();
            validate(DType::Q8_SB, k, m, &bm.meta, Some((&bm.values, bm.c))).unwrap();
            let max = x.chunks_exact(k).map(sparse::bitmap_row_count).max().unwrap();
            assert_eq!(bm.c, max.div_ceil(32) * 32);
            let dense = bitmap_dense_equivalent(&bm.meta, &bm.values, bm.c, k, m);
            let y = sparse::dequantize_bitmap(&bm.meta, &bm.values, bm.c, k, m).unwrap();
            assert_eq!(y, dequantize(DType::Q8_0, &dense, k * m).unwrap(), "k={k} keep={keep}");
            // Exactly the non-zeros are kept, each within Q8_0's rounding of its block.
            for (xb, yb) in x.chunks_exact(64).zip(y.chunks_exact(64)) {
                let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                for (&u, &v) in xb.iter().zip(yb) {
                    assert!(u != 0.0 || v == 0.0, "a zero input decodes to {v}");
                    assert!((u - v).abs() <= amax / 127.0 * 0.51 + amax * 1e-3, "{u} vs {v}");
                }
            }
            let a = activations(&mut rng, k, 1);
            let (rb, db) = (k / 64 * 10, k / 32 * 34);
            for r in 0..m {
                let vals = &bm.values[r * bm.c..(r + 1) * bm.c];
                let got = scalar.vec_dot_bitmap(&bm.meta[r * rb..(r + 1) * rb], vals, &a, k);
                let want = scalar.vec_dot(DType::Q8_0, &dense[r * db..(r + 1) * db], &a, k);
                assert_eq!(got.to_bits(), want.to_bits(), "k={k} keep={keep} row {r}");
            }
        }
    }
}

/// Every tier's products against the oracle, through `matmul` (1..=9 tokens, row ranges with
/// tile edges) and `vec_dot`.
#[test]
fn nm_tiers_equal_the_oracle() {
    let mut rng = Rng(5);
    let scalar = Kernels::for_tier(kernels::Tier::Scalar).unwrap();
    for t in NM {
        let dt = dense_type(t);
        for k in KS {
            let m = 13;
            let w = quantize(t, &rng.normals(k * m)).unwrap();
            let rb = t.type_size() * k / 64;
            let dense: Vec<u8> = w.chunks_exact(rb).flat_map(|r| dense_equivalent(t, r)).collect();
            let db = dt.bytes_for(k as u64).unwrap() as usize;
            let a = activations(&mut rng, k, 9);
            let ab = kernels::activation_row_bytes(t, k);
            for tier in kernels::available_tiers() {
                let kt = Kernels::for_tier(tier).unwrap();
                for n in 1..=9 {
                    for rows in [0..m, 3..m, 1..6, 5..6] {
                        let stride = rows.len() + 2;
                        let mut got = vec![f32::NAN; (n - 1) * stride + rows.len()];
                        kt.matmul(t, &w, k, rows.clone(), &a, n, &mut got, stride);
                        for tok in 0..n {
                            let at = &a[tok * ab..(tok + 1) * ab];
                            for (i, r) in rows.clone().enumerate() {
                                let want = scalar.vec_dot(t, &w[r * rb..(r + 1) * rb], at, k);
                                let (terms, mag) =
                                    kernels::dot_error_terms(dt, &dense[r * db..(r + 1) * db], at, k);
                                let g = got[tok * stride + i];
                                assert!(
                                    Tolerance::sum_reorder(terms, mag).allows(g, want),
                                    "{t} {tier:?} k={k} n={n} rows {rows:?} row {r} token {tok}: {g} vs oracle {want}"
                                );
                            }
                        }
                    }
                }
                for r in 0..m {
                    let want = scalar.vec_dot(t, &w[r * rb..(r + 1) * rb], &a[..ab], k);
                    let got = kt.vec_dot(t, &w[r * rb..(r + 1) * rb], &a[..ab], k);
                    let (terms, mag) = kernels::dot_error_terms(t, &w[r * rb..(r + 1) * rb], &a[..ab], k);
                    check_close(
                        &format!("{t} {tier:?} vec_dot k={k}"),
                        &[got],
                        &[want],
                        Tolerance::sum_reorder(terms, mag),
                    )
                    .unwrap();
                }
            }
        }
    }
}

#[test]
fn bitmap_tiers_equal_the_oracle() {
    let mut rng = Rng(6);
    let scalar = Kernels::for_tier(kernels::Tier::Scalar).unwrap();
    for k in KS {
        for keep in [0.0, 0.1, 0.3, 0.5, 1.0] {
            let m = 13;
            let x = unstructured(&mut rng, k, m, keep);
            let bm = quantize_bitmap(&x, k, m).unwrap();
            let dense = bitmap_dense_equivalent(&bm.meta, &bm.values, bm.c, k, m);
            let (rb, db) = (k / 64 * 10, k / 32 * 34);
            let a = activations(&mut rng, k, 9);
            let ab = k / 32 * 34;
            for tier in kernels::available_tiers() {
                let kt = Kernels::for_tier(tier).unwrap();
                for n in 1..=9 {
                    for rows in [0..m, 3..m, 1..6, 12..13] {
                        let stride = rows.len() + 1;
                        let mut got = vec![f32::NAN; (n - 1) * stride + rows.len()];
                        kt.matmul_bitmap(
                            &bm.meta,
                            &bm.values,
                            bm.c,
                            k,
                            rows.clone(),
                            &a,
                            n,
                            &mut got,
                            stride,
                        );
                        for tok in 0..n {
                            let at = &a[tok * ab..(tok + 1) * ab];
                            for (i, r) in rows.clone().enumerate() {
                                let vals = &bm.values[r * bm.c..(r + 1) * bm.c];
                                let want = scalar.vec_dot_bitmap(&bm.meta[r * rb..(r + 1) * rb], vals, at, k);
                                let (terms, mag) = kernels::dot_error_terms(
                                    DType::Q8_0,
                                    &dense[r * db..(r + 1) * db],
                                    at,
                                    k,
                                );
                                let g = got[tok * stride + i];
                                assert!(
                                    Tolerance::sum_reorder(terms, mag).allows(g, want),
                                    "Q8_SB {tier:?} k={k} keep={keep} n={n} rows {rows:?} row {r} token {tok}: {g} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Rows that keep more inputs than their `c` values (refused by the validator; the kernels must
/// still read only the row's values and count the excess as zero, on every tier): the last
/// blocks of a middle row keep every input.
#[test]
fn bitmap_rows_keeping_more_than_their_width_count_the_excess_as_zero() {
    let mut rng = Rng(12);
    let scalar = Kernels::for_tier(kernels::Tier::Scalar).unwrap();
    let (k, m) = (576, 6);
    let mut bm = quantize_bitmap(&unstructured(&mut rng, k, m, 0.3), k, m).unwrap();
    let rb = k / 64 * 10;
    for b in 6..9 {
        bm.meta[2 * rb + 10 * b + 2..2 * rb + 10 * b + 10].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    let total: u32 =
        bm.meta[2 * rb..3 * rb].chunks_exact(10).map(|b| sparse::bitmap_mask(b).count_ones()).sum();
    assert!(total as usize > bm.c, "row 2 keeps {total} > c = {}", bm.c);
    let dense = bitmap_dense_equivalent(&bm.meta, &bm.values, bm.c, k, m);
    let (ab, db) = (k / 32 * 34, k / 32 * 34);
    let a = activations(&mut rng, k, 3);
    for tier in kernels::available_tiers() {
        let kt = Kernels::for_tier(tier).unwrap();
        for n in 1..=3 {
            let mut got = vec![f32::NAN; n * m];
            kt.matmul_bitmap(&bm.meta, &bm.values, bm.c, k, 0..m, &a, n, &mut got, m);
            for tok in 0..n {
                let at = &a[tok * ab..(tok + 1) * ab];
                for r in 0..m {
                    let vals = &bm.values[r * bm.c..(r + 1) * bm.c];
                    let want = scalar.vec_dot_bitmap(&bm.meta[r * rb..(r + 1) * rb], vals, at, k);
                    let oracle_dense = scalar.vec_dot(DType::Q8_0, &dense[r * db..(r + 1) * db], at, k);
                    assert_eq!(want, oracle_dense, "row {r}: the oracle counts the excess as zero");
                    let (terms, mag) =
                        kernels::dot_error_terms(DType::Q8_0, &dense[r * db..(r + 1) * db], at, k);
                    let g = got[tok * m + r];
                    assert!(
                        Tolerance::sum_reorder(terms, mag).allows(g, want),
                        "{tier:?} n={n} row {r} token {tok}: {g} vs {want}"
                    );
                }
            }
        }
    }
}

/// Every output of `n` tokens × `m` rows (token stride `stride`) has `want`'s bits.
fn assert_same_bits(got: &[f32], want: &[f32], n: usize, stride: usize, m: usize, what: &str) {
    for tok in 0..n {
        for i in 0..m {
            let (g, e) = (got[tok * stride + i], want[tok * stride + i]);
            assert_eq!(g.to_bits(), e.to_bits(), "{what}: n={n} row {i} token {tok}: {g} vs {e}");
        }
    }
}

/// Values per row, then a sparse matrix (type, tensor, a bitmap's values and width) and its
/// dense equivalent.
type SparseCase = (usize, DType, Vec<u8>, Option<(Vec<u8>, usize)>, Vec<u8>);

/// Packed activations of `dt` for `n` rows of `x` with the tier `kt`.
fn packed_activations(kt: &Kernels, dt: DType, x: &[f32], k: usize, n: usize) -> Vec<u8> {
    let ab = kernels::packed_activation_row_bytes(dt, k);
    let mut a = vec![0u8; ab * n];
    for t in 0..n {
        kt.quantize_packed_activations(dt, &x[t * k..(t + 1) * k], &mut a[t * ab..(t + 1) * ab]);
    }
    a
}

/// The products of many tokens through the dense packed kernels (each group of eight sparse
/// rows expanded into the packed layout) equal, bit for bit, the packed kernel of the dense
/// type on the dense-equivalent matrix, on every tier that packs it; row ranges start and end
/// inside groups (a group shared by two ranges), token counts cross the tiles.
#[test]
fn sparse_products_through_packed_kernels_are_the_dense_equivalents_bits() {
    let mut rng = Rng(9);
    let m = 21;
    let cases: Vec<SparseCase> = {
        let mut v = Vec::new();
        // k = 3072: a packed group is 13.5 (Q4_0) or 25.5 KiB (Q8_0), so the expansion's
        // products of a few groups end inside the row ranges.
        for k in [576, 3072] {
            for t in NM {
                let w = quantize(t, &rng.normals(k * m)).unwrap();
                let rb = t.type_size() * k / 64;
                let dense: Vec<u8> = w.chunks_exact(rb).flat_map(|row| dense_equivalent(t, row)).collect();
                v.push((k, t, w, None, dense));
            }
        }
        for (k, keep) in [(576, 0.0), (576, 0.3), (576, 1.0), (3072, 0.3)] {
            let bm = quantize_bitmap(&unstructured(&mut rng, k, m, keep), k, m).unwrap();
            let dense = bitmap_dense_equivalent(&bm.meta, &bm.values, bm.c, k, m);
            v.push((k, DType::Q8_SB, bm.meta, Some((bm.values, bm.c)), dense));
        }
        v
    };
    let mut covered = 0;
    for tier in kernels::available_tiers() {
        let kt = Kernels::for_tier(tier).unwrap();
        for (k, t, w, values, dense) in &cases {
            let k = *k;
            let Some(dt) = kt.sparse_packed_type(*t) else {
                assert!(!kt.packs(if *t == DType::Q8_SB { DType::Q8_0 } else { dense_type(*t) }));
                continue;
            };
            covered += 1;
            let packed = kernels::pack(dt, k, m, dense);
            let values = values.as_ref().map(|(v, c)| (v.as_slice(), *c));
            for n in [1, 3, 16, 37] {
                let x = rng.normals(k * n);
                let a = packed_activations(kt, dt, &x, k, n);
                for rows in [0..m, 3..m, 5..17, 8..16, 20..21, 0..0] {
                    let stride = rows.len() + 2;
                    let len = (n - 1) * stride + rows.len();
                    let mut want = vec![f32::NAN; len];
                    kt.matmul_packed(dt, &packed, k, rows.clone(), &a, n, &mut want, stride);
                    let mut got = vec![f32::NAN; len];
                    kt.matmul_sparse_packed(*t, w, values, k, rows.clone(), &a, n, &mut got, stride);
                    assert_same_bits(
                        &got,
                        &want,
                        n,
                        stride,
                        rows.len(),
                        &format!("{t} on {tier:?}: rows {rows:?}"),
                    );
                }
            }
        }
    }
    // Every SIMD tier of this CPU packs Q4_0 and Q8_0.
    assert!(covered > 0 || kernels::available_tiers().iter().all(|&t| t == kernels::Tier::Scalar));
}

/// The N:M lane layouts (the N:M types packed: sixteen rows per group; 4:8 4-bit: position
/// and value per byte, 2:4 4-bit: value nibbles and two-bit positions, 8-bit: code bytes and
/// position nibbles) give every GGUF row back, and their
/// products on every tier (the oracle included) are, bit for bit, the dense packed Q4_0 /
/// Q8_0 oracle's on the dense-equivalent matrix: row ranges start and end inside groups, token
/// counts cross the tiles (4 tokens, and 4 groups at a time for one token), rows of extreme
/// codes (every kept value the most negative code: a half's correction −128 (4-bit) or −2032
/// (8-bit); the largest code) are included.
#[test]
fn nm_lane_layout_products_are_the_dense_packed_bits() {
    let mut rng = Rng(31);
    let m = 71;
    let oracle = Kernels::for_tier(kernels::Tier::Scalar).unwrap();
    let mut covered = 0;
    for t in NM {
        for k in [64, 576, 1536] {
            let mut x = rng.normals(k * m);
            // Row 0: all −1 (every kept code −8); row 1: the largest code 7 beside −1s.
            x[..k].fill(-1.0);
            for (i, v) in x[k..2 * k].iter_mut().enumerate() {
                *v = if i % 8 == 0 { -8.0 } else { 7.0 };
            }
            let w = quantize(t, &x).unwrap();
            let rb = t.type_size() * k / 64;
            let lanes = kernels::pack(t, k, m, &w);
            assert_eq!(lanes.len(), kernels::packed_len(t, k, m));
            let row_block = match t {
                DType::Q4_S24 => 28,
                DType::Q4_S48 => 36,
                _ => 54,
            };
            assert_eq!(lanes.len(), m.div_ceil(16) * 16 * k / 64 * row_block, "{t}: bytes per row and block");
            let mut row = vec![0u8; rb];
            for r in 0..m {
                kernels::unpack_row(t, k, &lanes, r, &mut row);
                assert_eq!(row, w[r * rb..(r + 1) * rb], "{t} k {k}: row {r} back from the lanes");
            }
            let dense: Vec<u8> = w.chunks_exact(rb).flat_map(|row| dense_equivalent(t, row)).collect();
            let dt = dense_type(t);
            let dense_packed = kernels::pack(dt, k, m, &dense);
            for tier in kernels::available_tiers() {
                let kt = Kernels::for_tier(tier).unwrap();
                if tier != kernels::Tier::Scalar && !kt.packs(t) {
                    continue;
                }
                covered += 1;
                for n in [1, 3, 4, 9] {
                    let xa = rng.normals(k * n);
                    let a_dense = packed_activations(oracle, dt, &xa, k, n);
                    let a = packed_activations(kt, t, &xa, k, n);
                    assert_eq!(a, packed_activations(oracle, t, &xa, k, n), "{t} on {tier:?}: activations");
                    for rows in [0..m, 3..m, 5..17, 16..48, 13..70, 70..71, 0..0] {
                        let stride = rows.len() + 2;
                        let len = (n - 1) * stride + rows.len();
                        let mut want = vec![f32::NAN; len];
                        oracle.matmul_packed(
                            dt,
                            &dense_packed,
                            k,
                            rows.clone(),
                            &a_dense,
                            n,
                            &mut want,
                            stride,
                        );
                        let mut got = vec![f32::NAN; len];
                        kt.matmul_packed(t, &lanes, k, rows.clone(), &a, n, &mut got, stride);
                        let what = format!("{t} k {k} on {tier:?}: rows {rows:?}");
                        assert_same_bits(&got, &want, n, stride, rows.len(), &what);
                    }
                }
            }
        }
    }
    assert!(covered >= 12, "the oracle at least, for four types and three widths");
}

#[test]
fn validator_accepts_quantizer_output_and_refuses_corruption() {
    let mut rng = Rng(7);
    for t in NM {
        let l = NmLayout::of(t).unwrap();
        let (k, m) = (576, 3);
        let w = quantize(t, &rng.normals(k * m)).unwrap();
        validate(t, k, m, &w, None).unwrap();
        // Every code field set to each out-of-range value is refused, naming row/block/chunk.
        let limit = l.pattern.codes();
        for (row, block, chunk) in [(0, 0, 0), (2, 8, 7), (1, 4, 3)] {
            for code in [limit, (1 << l.pattern.code_bits()) - 1] {
                let mut bad = w.clone();
                let off = row * (k / 64) * l.bytes() + block * l.bytes() + 2;
                let nbytes = l.pattern.code_bytes();
                let mut bits = [0u8; 8];
                bits[..nbytes].copy_from_slice(&bad[off..off + nbytes]);
                let mut v = u64::from_le_bytes(bits);
                let b = l.pattern.code_bits() as usize;
                v &= !(((1u64 << b) - 1) << (b * chunk));
                v |= (code as u64) << (b * chunk);
                bad[off..off + nbytes].copy_from_slice(&v.to_le_bytes()[..nbytes]);
                assert_eq!(
                    validate(t, k, m, &bad, None),
                    Err(SparseError::CodeOutOfRange { dtype: t, row, block, chunk, code, limit })
                );
                // Decoding it never panics or reads out of bounds.
                let _ = dequantize(t, &bad, k * m).unwrap();
            }
        }
        let e = validate(t, k, m, &w[..w.len() - 1], None).unwrap_err();
        assert!(matches!(e, SparseError::WrongByteCount { got, .. } if got == w.len() - 1), "{e}");
        assert_eq!(validate(t, 100, 1, &w, None), Err(SparseError::NotBlockMultiple { dtype: t, k: 100 }));
        assert!(matches!(
            validate(t, k, m, &w, Some((&[], 0))),
            Err(SparseError::Companion { expected: false, .. })
        ));
    }
    // Bitmap.
    let (k, m) = (576, 4);
    let x = unstructured(&mut rng, k, m, 0.3);
    let bm = quantize_bitmap(&x, k, m).unwrap();
    validate(DType::Q8_SB, k, m, &bm.meta, Some((&bm.values, bm.c))).unwrap();
    // A row whose popcount passes c: set every bit of row 2's blocks.
    let mut bad = bm.meta.clone();
    let rb = k / 64 * 10;
    for b in 0..k / 64 {
        bad[2 * rb + b * 10 + 2..2 * rb + b * 10 + 10].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    let block = bm.c / 64; // The running count first passes c at this block.
    assert_eq!(
        validate(DType::Q8_SB, k, m, &bad, Some((&bm.values, bm.c))),
        Err(SparseError::PopcountOverWidth { row: 2, block, count: 64 * (block + 1), c: bm.c })
    );
    // Kernels stay in bounds on it.
    let a = activations(&mut rng, k, 1);
    for tier in kernels::available_tiers() {
        let mut out = [0.0f32; 4];
        Kernels::for_tier(tier).unwrap().matmul_bitmap(&bad, &bm.values, bm.c, k, 0..m, &a, 1, &mut out, m);
    }
    assert_eq!(
        validate(DType::Q8_SB, k, m, &bm.meta, Some((&bm.values[1..], bm.c))),
        Err(SparseError::CompanionSize { m, c: bm.c, expected: m * bm.c, got: m * bm.c - 1 })
    );
    assert!(matches!(
        validate(DType::Q8_SB, k, m, &bm.meta, Some((&bm.values, bm.c + 1))),
        Err(SparseError::CompanionSize { .. })
    ));
    assert_eq!(
        validate(DType::Q8_SB, k, m, &bm.meta, None),
        Err(SparseError::Companion { dtype: DType::Q8_SB, expected: true })
    );
    assert!(matches!(
        validate(DType::Q8_SB, k, m, &bm.meta[..10], Some((&bm.values, bm.c))),
        Err(SparseError::WrongByteCount { .. })
    ));
    assert_eq!(validate(DType::Q4_0, 64, 1, &[0; 18], None), Err(SparseError::NotSparse(DType::Q4_0)));
    let msg =
        SparseError::CodeOutOfRange { dtype: DType::Q4_S24, row: 3, block: 1, chunk: 2, code: 40, limit: 36 }
            .to_string();
    assert!(msg.contains("row 3") && msg.contains("block 1") && msg.contains("40"), "{msg}");
}

/// Dense data: within the table's bound (mostly pruning error); N:M data: within the bound of
/// the dense type of the same value width (only quantization error, 32 values per scale).
#[test]
fn roundtrip_error_within_table() {
    use edgellm_core::tolerance::{quant_roundtrip_bound, rel_rmse};
    let mut rng = Rng(8);
    let x = rng.normals(1 << 14);
    for t in NM {
        let y = dequantize(t, &quantize(t, &x).unwrap(), x.len()).unwrap();
        let e = rel_rmse(&y, &x);
        let b = quant_roundtrip_bound(t).unwrap().gaussian;
        println!("{t} dense gaussian rel RMSE {e:.4e} (bound {b:.2e})");
        assert!(e <= b, "{t}: {e} > {b}");
        // Already N:M: the quantizer keeps the non-zeros, the error is the dense type's.
        let pruned = dequantize(t, &quantize(t, &x).unwrap(), x.len()).unwrap();
        let exact: Vec<f32> = x.iter().zip(&pruned).map(|(&v, &p)| if p != 0.0 { v } else { 0.0 }).collect();
        let y = dequantize(t, &quantize(t, &exact).unwrap(), x.len()).unwrap();
        let e = rel_rmse(&y, &exact);
        let b = quant_roundtrip_bound(dense_type(t)).unwrap().gaussian * 1.1;
        assert!(e <= b, "{t} on N:M data: {e} > {b}");
    }
}

#[test]
fn code_tables_round_trip() {
    for (c, &m) in MASKS_2_4.iter().enumerate() {
        assert_eq!(NmPattern::TwoFour.code(m), Some(c as u32));
    }
    for (c, &m) in MASKS_4_8.iter().enumerate() {
        assert_eq!(NmPattern::FourEight.code(m), Some(c as u32));
    }
}

#[test]
fn q8_sb_is_not_convertible_alone() {
    assert!(!DType::Q8_SB.is_supported());
    assert!(dequantize(DType::Q8_SB, &[0; 10], 64).is_err());
    for t in NM {
        assert!(t.is_supported() && kernels::supports(t));
        assert_eq!(kernels::activation_type(t), DType::Q8_0);
    }
    assert!(!kernels::supports(DType::Q8_SB));
}

/// The SIMD tiers run their own sparse kernels (so the comparisons above test them): AVX2
/// always; AVX-512 where the CPU has VBMI and VBMI2, else it keeps AVX2's; NEON and NEON
/// dot-product each their own (the I8MM tier the dot-product tier's).
#[test]
fn simd_tiers_have_sparse_kernels() {
    for tier in kernels::available_tiers() {
        let kt = Kernels::for_tier(tier).unwrap();
        #[cfg(target_arch = "x86_64")]
        let want = match tier {
            kernels::Tier::Avx512Vnni
                if !(is_x86_feature_detected!("avx512vbmi") && is_x86_feature_detected!("avx512vbmi2")) =>
            {
                kernels::Tier::Avx2
            }
            t => t,
        };
        // The I8MM tier only adds packed products: its sparse kernels are the dot-product tier's.
        #[cfg(target_arch = "aarch64")]
        let want = if tier == kernels::Tier::NeonI8mm { kernels::Tier::NeonDotprod } else { tier };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let want = kernels::Tier::Scalar;
        for t in NM {
            assert_eq!(kt.implementing_tier(t), Some(want), "{t} on {tier:?}");
        }
        assert_eq!(kt.bitmap_tier(), want, "Q8_SB on {tier:?}");
    }
}

/// `Q8_SB` matrices in the bitmap group layout (sixteen rows per group, each chunk's kept
/// codes in the dense packed word's order): every row dequantizes as the file's, and the
/// product on every tier that has its kernel, and the oracle, is bit for bit the dense packed
/// Q8_0 oracle's on the dense-equivalent matrix — densities 0, 0.3 and 1, blocks keeping
/// everything beside empty ones, row ranges inside groups, token counts across the tiles (4
/// tokens; 4 groups at a time for one) and the prompt path (from 16 tokens: slabs expanded
/// into the dense packed layout), a row keeping more than its width (code 0 beyond).
#[test]
fn bitmap_group_products_are_the_dense_packed_bits() {
    let mut rng = Rng(41);
    let m = 71;
    let oracle = Kernels::for_tier(kernels::Tier::Scalar).unwrap();
    let mut covered = 0;
    for (k, keep) in [(64, 0.3), (576, 0.0), (576, 0.3), (576, 1.0), (1536, 0.3), (1536, 0.05)] {
        let mut x = unstructured(&mut rng, k, m, keep);
        // Row 3: every other block fully kept, the others empty.
        for (i, v) in x[3 * k..4 * k].iter_mut().enumerate() {
            *v = if (i / 64) % 2 == 0 { rng.normal() + 4.0 } else { 0.0 };
        }
        let mut bm = quantize_bitmap(&x, k, m).unwrap();
        if k == 576 && keep == 0.3 {
            // Row 5 keeps more inputs than its width holds: the excess counts as code 0.
            let rb = k / 64 * 10;
            bm.meta[5 * rb + 10 * 8 + 2..5 * rb + 10 * 8 + 10].copy_from_slice(&u64::MAX.to_le_bytes());
        }
        let bg = kernels::BitmapGroups::pack(k, m, &bm.meta, &bm.values, bm.c);
        let dense = bitmap_dense_equivalent(&bm.meta, &bm.values, bm.c, k, m);
        let db = k / 32 * 34;
        let mut got_row = vec![0f32; k];
        for r in 0..m {
            bg.row_f32(r, &mut got_row);
            let want_row = dequantize(DType::Q8_0, &dense[r * db..(r + 1) * db], k).unwrap();
            assert_eq!(got_row, want_row, "k {k} keep {keep}: row {r} dequantized");
        }
        let dense_packed = kernels::pack(DType::Q8_0, k, m, &dense);
        for tier in kernels::available_tiers() {
            let kt = Kernels::for_tier(tier).unwrap();
            if tier != kernels::Tier::Scalar && !kt.packs_bitmap() {
                continue;
            }
            covered += 1;
            for n in [1, 3, 4, 9, 16, 37] {
                let xa = rng.normals(k * n);
                let a = packed_activations(oracle, DType::Q8_0, &xa, k, n);
                assert_eq!(a, packed_activations(kt, DType::Q8_0, &xa, k, n), "{tier:?}: activations");
                for rows in [0..m, 3..m, 5..17, 16..48, 13..70, 70..71, 0..0] {
                    let stride = rows.len() + 2;
                    let len = (n - 1) * stride + rows.len();
                    let mut want = vec![f32::NAN; len];
                    oracle.matmul_packed(
                        DType::Q8_0,
                        &dense_packed,
                        k,
                        rows.clone(),
                        &a,
                        n,
                        &mut want,
                        stride,
                    );
                    let mut got = vec![f32::NAN; len];
                    kt.matmul_bitmap_groups(&bg, rows.clone(), &a, n, &mut got, stride);
                    let what = format!("bitmap groups k {k} keep {keep} on {tier:?}: rows {rows:?}");
                    assert_same_bits(&got, &want, n, stride, rows.len(), &what);
                }
            }
        }
    }
    assert!(covered >= 6, "the oracle at least, for every case");
}
