//! Activation sparsity in the Linear: a one-token product with a threshold equals the dense
//! product on the thresholded input (through the column-skipping kernel where the type has
//! one, the dense kernel otherwise); prompts stay dense and unthresholded unless every token
//! is asked for.

use edgellm_core::quant::quantize;
use edgellm_core::tolerance::{assert_close, Tolerance};
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

fn threshold(x: &[f32], t: f32) -> Vec<f32> {
    x.iter().map(|&v| if v.abs() < t { 0.0 } else { v }).collect()
}

/// Products of the same integer sums in another float order: a few ulps of the largest.
fn reorder(y: &[f32]) -> Tolerance {
    Tolerance::absolute(1e-5 * y.iter().fold(1.0f32, |m, v| m.max(v.abs())))
}

#[test]
fn one_token_products_are_dense_products_on_the_thresholded_input() {
    let m = 192;
    // Q4_K's rows are whole 256-value super-blocks.
    for (dtype, k) in
        [(DType::Q4_0, 576), (DType::Q5_0, 576), (DType::Q8_0, 576), (DType::Q4_K, 768), (DType::Q4_1, 576)]
    {
        let x = values(k, 3);
        let t = 0.45; // about 45 % of uniform(-1, 1) values below
        let sparse = linear(dtype, k, m).with_threshold(Some(t), false);
        let dense = linear(dtype, k, m);
        assert_eq!(
            sparse.skips_columns(),
            matches!(dtype, DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::Q4_K),
            "{dtype}"
        );
        assert_eq!(sparse.threshold(), Some(t));
        let (mut got, mut want, mut raw) = (vec![0.0f32; m], vec![0.0f32; m], vec![0.0f32; m]);
        sparse.forward(&x, 1, &mut got);
        dense.forward(&threshold(&x, t), 1, &mut want);
        dense.forward(&x, 1, &mut raw);
        assert_close(&format!("{dtype} one token"), &got, &want, reorder(&want));
        assert!(
            got.iter().zip(&raw).any(|(a, b)| (a - b).abs() > 1e-3),
            "{dtype}: thresholding changed nothing"
        );

        // A prompt (several tokens) is dense and unthresholded: the same bits as no threshold.
        let n = 3;
        let xs = values(n * k, 5);
        let (mut got, mut want) = (vec![0.0f32; n * m], vec![0.0f32; n * m]);
        sparse.forward(&xs, n, &mut got);
        dense.forward(&xs, n, &mut want);
        assert_eq!(got, want, "{dtype}: prompt");

        // Every token thresholded (perplexity runs): the dense product on the thresholded input.
        let all = linear(dtype, k, m).with_threshold(Some(t), true);
        all.forward(&xs, n, &mut got);
        dense.forward(&threshold(&xs, t), n, &mut want);
        assert_eq!(got, want, "{dtype}: all tokens");
    }
}

#[test]
fn shared_inputs_give_what_each_layer_gives_alone() {
    let t = 0.3;
    // One activation format (Q8_0) for all; Q4_K alone (Q8_K); Q4_K next to Q8_0 types and a
    // type without a column layout (each layer on its own).
    let groups: [&[(DType, usize)]; 3] = [
        &[(DType::Q4_0, 128), (DType::Q5_0, 64), (DType::Q8_0, 192), (DType::Q4_0, 320)],
        &[(DType::Q4_K, 192), (DType::Q4_K, 64)],
        &[(DType::Q4_K, 128), (DType::Q4_0, 64), (DType::Q6_K, 64), (DType::Q8_0, 128)],
    ];
    for (gi, group) in groups.iter().enumerate() {
        let k = if gi == 0 { 320 } else { 512 };
        shared_group(group, k, t);
    }
}

fn shared_group(group: &[(DType, usize)], k: usize, t: f32) {
    let layers: Vec<Linear> =
        group.iter().map(|&(d, m)| linear(d, k, m).with_threshold(Some(t), false)).collect();
    let x = values(k, 9);
    // The rows are split over the threads by tile (of 128 or 64 rows) in parts of about
    // equal rows: every split, more parts than tiles included, writes every row once.
    for threads in [1, 2, 3, 5, 8] {
        edgellm_core::parallel::set_num_threads(threads);
        let mut shared: Vec<Vec<f32>> = layers.iter().map(|l| vec![f32::NAN; l.out_features]).collect();
        {
            let mut outs: Vec<&mut [f32]> = shared.iter_mut().map(|v| v.as_mut_slice()).collect();
            let refs: Vec<&Linear> = layers.iter().collect();
            Linear::forward_shared(&refs, &x, 1, &mut outs);
        }
        for (l, s) in layers.iter().zip(&shared) {
            let mut alone = vec![0.0; l.out_features];
            l.forward(&x, 1, &mut alone);
            assert_eq!(&alone, s, "{} with {threads} threads", l.dtype);
        }
    }
    edgellm_core::parallel::set_num_threads(0);
}
