//! Sparse weights in `Linear`: the N:M and bitmap types compute what their dequantized weights
//! do (fast kernels against the exact f32 path), share quantized activations with the dense
//! Q8_0-activation types in `forward_shared` without changing a bit, and a GGUF with a corrupt
//! sparse tensor, without the sparse extension's version key, or without a bitmap weight's
//! values tensor is refused when the Linear is loaded.

use edgellm_core::kernels;
use edgellm_core::quant::{quantize, sparse};
use edgellm_core::DType;
use edgellm_formats::{GgufFile, GgufWriter, Value};
use edgellm_models::linear::{
    packing_growth_bytes, Linear, Precision, TensorBytes, SPARSE_VERSION, SPARSE_VERSION_KEY,
};
use edgellm_models::ModelError;

/// Deterministic weights, `[m × k]`, with every other pair of each group of four zeroed (2:4)
/// when `nm`, else about 70 % zeros scattered unevenly.
fn weights(k: usize, m: usize, nm: bool, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..k * m)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0;
            let keep = if nm { (i + (i / k)) % 4 < 2 } else { (s >> 20) % 10 < 3 };
            if keep {
                v
            } else {
                0.0
            }
        })
        .collect()
}

fn input(k: usize, n: usize) -> Vec<f32> {
    (0..k * n).map(|i| ((i * 37 % 61) as f32 - 30.0) / 17.0).collect()
}

fn nm_linear(dtype: DType, k: usize, m: usize) -> Linear {
    let w = weights(k, m, true, 7);
    let q = quantize(dtype, &w).unwrap();
    Linear::new("nm.weight", dtype, k, m, TensorBytes::Owned(q)).unwrap()
}

fn bitmap_linear(k: usize, m: usize) -> Linear {
    let w = weights(k, m, false, 11);
    let b = sparse::quantize_bitmap(&w, k, m).unwrap();
    Linear::new_bitmap("sb.weight", k, m, TensorBytes::Owned(b.meta), TensorBytes::Owned(b.values), b.c)
        .unwrap()
}

/// The fast path (8-bit activations, sparse kernels; from `SPARSE_PACKED_MIN_TOKENS` tokens
/// the dense packed kernels on expanded groups) against the exact path (each row dequantized,
/// f32 products) of the same Linear: within the activations' 8-bit rounding.
fn check_fast_vs_exact(fast: &Linear, exact: &Linear) {
    let (k, m) = (fast.in_features, fast.out_features);
    for n in [1, 2, 5, 9, 16, 37] {
        let x = input(k, n);
        let (mut y0, mut y1) = (vec![0.0f32; n * m], vec![0.0f32; n * m]);
        fast.forward(&x, n, &mut y0);
        exact.forward(&x, n, &mut y1);
        let scale = y1.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(scale > 0.1, "{}: the product is not trivially zero", fast.name);
        for (i, (a, b)) in y0.iter().zip(&y1).enumerate() {
            assert!((a - b).abs() <= 0.02 * scale, "{} n {n} output {i}: fast {a} vs exact {b}", fast.name);
        }
    }
}

#[test]
fn nm_and_bitmap_linears_compute_their_weights() {
    let (k, m) = (192, 37);
    for dtype in [DType::Q4_S24, DType::Q4_S48, DType::Q8_S24, DType::Q8_S48] {
        check_fast_vs_exact(
            &nm_linear(dtype, k, m),
            &nm_linear(dtype, k, m).with_precision(Precision::Exact),
        );
        // Packed (the 4-bit types' lane layout where the tier has its kernel): the same
        // rows, and the same products within the tolerance of the 8-bit activations.
        let packed = nm_linear(dtype, k, m).packed();
        assert_eq!(packed.is_packed(), kernels::packs(dtype), "{dtype}");
        check_fast_vs_exact(&packed, &nm_linear(dtype, k, m).with_precision(Precision::Exact));
        let (plain, mut a, mut b) = (nm_linear(dtype, k, m), vec![0.0f32; k], vec![0.0f32; k]);
        for r in 0..m {
            plain.row_f32(r, &mut a).unwrap();
            packed.row_f32(r, &mut b).unwrap();
            assert_eq!(a, b, "{dtype} row {r}");
        }
    }
    check_fast_vs_exact(&bitmap_linear(k, m), &bitmap_linear(k, m).with_precision(Precision::Exact));
    // Packed (the bitmap group layout where the tier has its kernel): the same rows and the
    // same products within the activations' rounding.
    let packed = bitmap_linear(k, m).packed();
    assert_eq!(packed.is_packed(), kernels::packs_bitmap());
    check_fast_vs_exact(&packed, &bitmap_linear(k, m).with_precision(Precision::Exact));
    let (plain, mut a, mut b) = (bitmap_linear(k, m), vec![0.0f32; k], vec![0.0f32; k]);
    for r in 0..m {
        plain.row_f32(r, &mut a).unwrap();
        packed.row_f32(r, &mut b).unwrap();
        assert_eq!(a, b, "bitmap row {r}");
    }
    if packed.is_packed() {
        // The group layout: sixteen-row groups of 16-byte headers and 160-byte meta blocks,
        // then the kept codes and a 64-byte tail (no companion padding).
        let kept = (0..m).map(|r| {
            plain.row_f32(r, &mut a).unwrap();
            a.iter().filter(|v| **v != 0.0).count()
        });
        let kept: usize = kept.sum();
        assert!(packed.storage_bytes() >= m.div_ceil(16) * (16 + k / 64 * 160) + kept + 64);
    }
    // The bitmap Linear's rows are the quantized weights.
    let lin = bitmap_linear(k, m);
    let w = weights(k, m, false, 11);
    let mut row = vec![0.0f32; k];
    for r in 0..m {
        lin.row_f32(r, &mut row).unwrap();
        for (a, b) in w[r * k..(r + 1) * k].iter().zip(&row) {
            // Zeros stay zeros; a kept weight is within half an 8-bit step (of |w| ≤ 1, the
            // scale rounded to f16).
            if *a == 0.0 {
                assert_eq!(*b, 0.0, "row {r}");
            } else {
                assert!((a - b).abs() <= 0.6 / 127.0, "row {r}: {a} vs {b}");
            }
        }
    }
    let c = sparse::quantize_bitmap(&w, k, m).unwrap().c;
    assert!(c <= k / 2, "rows keeping about 30 % need at most half the width");
    assert_eq!(lin.storage_bytes(), m * (k / 64 * 10) + m * c);
}

#[test]
fn shared_activations_change_nothing() {
    // A 2:4 layer, a bitmap layer and a dense Q8_0 layer read one quantized Q8_0 input (three
    // tokens), or each the input of its kernel (twenty: the sparse ones through the packed
    // kernels).
    for n in [3, 20] {
        shared_activations_change_nothing_for(n);
    }
}

fn shared_activations_change_nothing_for(n: usize) {
    let k = 256;
    // The 2:4 layer packed where the tier has the lane kernel (its own activation format).
    let a = nm_linear(DType::Q4_S24, k, 40).packed();
    let b = bitmap_linear(k, 24).packed();
    let dense = quantize(DType::Q8_0, &weights(k, 16, false, 3)).unwrap();
    let c = Linear::new("dense.weight", DType::Q8_0, k, 16, TensorBytes::Owned(dense)).unwrap();
    let x = input(k, n);
    let (mut ya, mut yb, mut yc) = (vec![0.0f32; n * 40], vec![0.0f32; n * 24], vec![0.0f32; n * 16]);
    Linear::forward_shared(&[&a, &b, &c], &x, n, &mut [&mut ya, &mut yb, &mut yc]);
    for (l, y) in [(&a, &ya), (&b, &yb), (&c, &yc)] {
        let mut alone = vec![0.0f32; y.len()];
        l.forward(&x, n, &mut alone);
        assert_eq!(&alone, y, "{}", l.name);
    }
}

/// A GGUF holding one weight `w` (and what `extra` adds), with or without the version key.
fn gguf(
    dtype: DType,
    data: Vec<u8>,
    k: usize,
    m: usize,
    version: Option<u32>,
    extra: Option<(Vec<u64>, Vec<u8>)>,
) -> GgufFile {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    if let Some(v) = version {
        w.set(SPARSE_VERSION_KEY, Value::U32(v));
    }
    w.add_tensor("w", &[k as u64, m as u64], dtype, data).unwrap();
    if let Some((dims, bytes)) = extra {
        w.add_tensor("w.values", &dims, DType::I8, bytes).unwrap();
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    GgufFile::from_vec(bytes).unwrap()
}

fn sparse_error(r: Result<Linear, ModelError>) -> String {
    match r {
        Err(ModelError::Sparse { tensor, why }) => {
            assert_eq!(tensor, "w");
            why
        }
        Err(e) => panic!("expected a sparse-tensor error, got {e}"),
        Ok(_) => panic!("a bad sparse tensor was accepted"),
    }
}

#[test]
fn loading_checks_the_sparse_tensors() {
    let (k, m) = (128, 6);
    let good = quantize(DType::Q4_S24, &weights(k, m, true, 5)).unwrap();
    let f = gguf(DType::Q4_S24, good.clone(), k, m, Some(SPARSE_VERSION), None);
    assert_eq!(Linear::from_gguf(&f, "w", k, m).unwrap().dtype, DType::Q4_S24);

    let why =
        sparse_error(Linear::from_gguf(&gguf(DType::Q4_S24, good.clone(), k, m, None, None), "w", k, m));
    assert!(why.contains(SPARSE_VERSION_KEY), "{why}");
    let why =
        sparse_error(Linear::from_gguf(&gguf(DType::Q4_S24, good.clone(), k, m, Some(9), None), "w", k, m));
    assert!(why.contains("version 9"), "{why}");

    // A code of 63 (all six bits set) in row 2, block 1, chunk 0.
    let mut bad = good;
    let at = 2 * (k / 64) * 24 + 24 + 2;
    bad[at] |= 0x3f;
    let why = sparse_error(Linear::from_gguf(
        &gguf(DType::Q4_S24, bad, k, m, Some(SPARSE_VERSION), None),
        "w",
        k,
        m,
    ));
    assert!(why.contains("row 2") && why.contains("block 1") && why.contains("out of range"), "{why}");

    // Bitmap: good, missing values, values of the wrong shape, a row keeping more than c.
    let b = sparse::quantize_bitmap(&weights(k, m, false, 9), k, m).unwrap();
    let vdims = vec![b.c as u64, m as u64];
    let f = gguf(
        DType::Q8_SB,
        b.meta.clone(),
        k,
        m,
        Some(SPARSE_VERSION),
        Some((vdims.clone(), b.values.clone())),
    );
    let lin = Linear::from_gguf(&f, "w", k, m).unwrap();
    assert_eq!(lin.dtype, DType::Q8_SB);
    let why = sparse_error(Linear::from_gguf(
        &gguf(DType::Q8_SB, b.meta.clone(), k, m, Some(SPARSE_VERSION), None),
        "w",
        k,
        m,
    ));
    assert!(why.contains("w.values"), "{why}");
    let why = sparse_error(Linear::from_gguf(
        &gguf(
            DType::Q8_SB,
            b.meta.clone(),
            k,
            m,
            Some(SPARSE_VERSION),
            Some((vec![(b.c * m) as u64], b.values.clone())),
        ),
        "w",
        k,
        m,
    ));
    assert!(why.contains("I8 [c, 6]"), "{why}");
    let mut full = b.meta.clone();
    for blk in full[..(k / 64) * 10].chunks_exact_mut(10) {
        blk[2..10].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    let why = sparse_error(Linear::from_gguf(
        &gguf(DType::Q8_SB, full, k, m, Some(SPARSE_VERSION), Some((vdims, b.values))),
        "w",
        k,
        m,
    ));
    assert!(why.contains("row 0") && why.contains("corrupt"), "{why}");
}

/// The memory check's estimate counts what the N:M lane layout adds to the file's bytes: the
/// packed Linear's storage minus the tensor's.
#[test]
fn packing_growth_is_the_packed_linears_extra_bytes() {
    let (k, m) = (128, 6);
    for dtype in [DType::Q4_S24, DType::Q4_S48, DType::Q8_S24] {
        let data = quantize(dtype, &weights(k, m, true, 5)).unwrap();
        let file_bytes = data.len();
        let f = gguf(dtype, data, k, m, Some(SPARSE_VERSION), None);
        let lin = Linear::from_gguf(&f, "w", k, m).unwrap().packed();
        let growth = packing_growth_bytes(&f);
        assert_eq!(growth as usize, lin.storage_bytes() - file_bytes, "{dtype}");
        // Sixteen rows of 36 bytes per 64 inputs where the tier packs the 4-bit types.
        assert_eq!(growth > 0, kernels::packs(dtype), "{dtype}");
    }
}
