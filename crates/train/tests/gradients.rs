//! candle's autograd through the whole encoder and the distillation loss against central
//! finite differences, in f64, on a tiny random BERT (2 layers, hidden 16, 2 heads, vocab 50):
//! a few entries of every parameter, padded sequences of three lengths, two token types.

mod common;

use edgellm_core::tolerance::{check_close, gradients::FINITE_DIFFERENCE_F64};
use edgellm_models::bert::Activation;
use edgellm_train::distill::distill_loss;
use edgellm_train::{l2_normalize, DType, Device, SplitMix64, Tensor, TokenBatch, TrainableBert};

const H: f64 = 1e-5;

fn loss(model: &TrainableBert, b: &TokenBatch, tp: &Tensor, te: &Tensor) -> Tensor {
    distill_loss(&model.pooled(b).unwrap(), tp, te, 0.7).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

fn check_gradients(act: Activation) {
    let config = edgellm_train::synthetic::tiny_config(16, act);
    let model = TrainableBert::from_weights(
        config.clone(),
        &edgellm_train::synthetic::RandomWeights::new(3),
        DType::F64,
    )
    .unwrap();
    let seqs: Vec<Vec<u32>> =
        vec![vec![2, 7, 9, 11, 40, 3], vec![2, 5, 3], vec![2, 30, 31, 32, 33, 34, 35, 36, 3]];
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let mut b = model.batch(&refs).unwrap();
    let types: Vec<u32> = (0..b.batch * b.seq_len).map(|i| u32::from(i % b.seq_len >= 3)).collect();
    b.type_ids = Some(Tensor::from_vec(types, (b.batch, b.seq_len), &Device::Cpu).unwrap());
    let mut r = SplitMix64::new(11);
    let target: Vec<f64> = (0..3 * 16).map(|_| r.normal()).collect();
    let tp = Tensor::from_vec(target, (3, 16), &Device::Cpu).unwrap();
    let te = l2_normalize(&tp).unwrap();

    let grads = loss(&model, &b, &tp, &te).backward().unwrap();
    let used: Vec<usize> = seqs.concat().iter().map(|&i| i as usize).collect();
    let (mut checked, mut worst) = (0, 0.0f64);
    for p in model.params() {
        let g: Vec<f64> = grads
            .get(p.var.as_tensor())
            .unwrap_or_else(|| panic!("{}: no gradient", p.name))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let values: Vec<f64> = p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let cols = *p.var.dims().last().unwrap();
        // Three entries: for the word table, of rows the batch uses.
        let picks: Vec<usize> = (0..3)
            .map(|k| {
                let row = if p.name.contains("word_embeddings") {
                    used[(k * 5) % used.len()]
                } else if p.var.dims().len() == 2 {
                    r.below(p.var.dims()[0].min(b.seq_len))
                } else {
                    0
                };
                row * cols + r.below(cols)
            })
            .collect();
        let (mut fd, mut ad) = (Vec::new(), Vec::new());
        for &i in &picks {
            let at = |delta: f64| {
                let mut v = values.clone();
                v[i] += delta;
                p.var.set(&Tensor::from_vec(v, p.var.dims(), &Device::Cpu).unwrap()).unwrap();
                scalar(&loss(&model, &b, &tp, &te))
            };
            let d = (at(H) - at(-H)) / (2.0 * H);
            p.var.set(&Tensor::from_vec(values.clone(), p.var.dims(), &Device::Cpu).unwrap()).unwrap();
            worst = worst.max((d - g[i]).abs() / (g[i].abs() + 1e-8));
            fd.push(d as f32);
            ad.push(g[i] as f32);
            checked += 1;
        }
        if let Err(rep) =
            check_close(&format!("{act:?} d loss / d {}", p.name), &ad, &fd, FINITE_DIFFERENCE_F64)
        {
            panic!("{rep}");
        }
        // A key bias adds q·b to every key's score alike, which the softmax cancels: its
        // gradient is exactly zero. Every other parameter must have moved the loss.
        if !p.name.ends_with("attention.self.key.bias") {
            assert!(fd.iter().any(|&v| v.abs() > 1e-6), "{}: the finite differences are all ~0", p.name);
        }
    }
    eprintln!(
        "{act:?}: {checked} entries of {} parameters, worst relative difference {worst:.2e}",
        model.params().len()
    );
}

#[test]
fn autograd_matches_finite_differences_gelu() {
    check_gradients(Activation::Gelu);
}

#[test]
fn autograd_matches_finite_differences_gelu_tanh() {
    check_gradients(Activation::GeluTanh);
}
