//! Quantization-aware training: the fake-quantized forward computes exactly what the
//! model with its weights quantized (by the core reference quantizer) computes, and the
//! gradient passes straight through (it equals the rounded model's gradient); an intent run
//! with `qat` learns a synthetic set and its file, quantized to that type, still classifies it.

mod common;

use edgellm_compress::recipe::{run_recipe, CalibTokens, Recipe};
use edgellm_compress::source::OpenedModel;
use edgellm_compress::{Method, Scheme};
use edgellm_core::DType as CoreDType;
use edgellm_models::bert::Activation;
use edgellm_runtime::intent::IntentClassifier;
use edgellm_train::intent::{train_intents, IntentMode, IntentOptions};
use edgellm_train::synthetic::{tiny_config, tiny_intents, write_tiny_gguf, RandomWeights};
use edgellm_train::{BertFile, DType, Device, ParamKind, Tensor, TrainableBert};

fn model() -> TrainableBert {
    TrainableBert::from_weights(tiny_config(32, Activation::Gelu), &RandomWeights::new(5), DType::F32)
        .unwrap()
}

/// Every linear weight of `m` replaced by its `ty` rounding, with the core quantizer directly.
fn round_in_place(m: &TrainableBert, ty: CoreDType) {
    for p in m.params().into_iter().filter(|p| p.kind == ParamKind::LinearWeight) {
        let v: Vec<f32> = p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let q = edgellm_core::quant::quantize(ty, &v).unwrap();
        let back = edgellm_core::quant::dequantize(ty, &q, v.len()).unwrap();
        assert_ne!(back, v, "{}: rounding to {ty} changes something", p.name);
        p.var.set(&Tensor::from_vec(back, p.var.dims(), &Device::Cpu).unwrap()).unwrap();
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn fake_quantized_forward_and_gradients_are_the_rounded_models() {
    let seqs: Vec<Vec<u32>> = vec![vec![2, 7, 9, 11, 3], vec![2, 5, 3], vec![2, 8, 6, 10, 12, 13, 3]];
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    for ty in [CoreDType::Q8_0, CoreDType::Q5_0, CoreDType::Q4_0] {
        let mut fake = model();
        fake.set_fake_quant(Some(ty), None).unwrap();
        assert_eq!(fake.fake_quant(), Some(ty));
        let rounded = model();
        round_in_place(&rounded, ty);
        let plain = model();
        let b = fake.batch(&refs).unwrap();
        let (yf, yr, yp) = (fake.pooled(&b).unwrap(), rounded.pooled(&b).unwrap(), plain.pooled(&b).unwrap());
        assert_eq!(values(&yf), values(&yr), "{ty}: the fake-quantized forward is the rounded model's");
        assert_ne!(values(&yf), values(&yp), "{ty}: and not the unrounded model's");
        // Straight through: d loss / d w of the fake model = d loss / d w of the rounded one.
        let target =
            Tensor::from_vec((0..3 * 32).map(|i| (i % 7) as f32 * 0.1).collect(), (3, 32), &Device::Cpu)
                .unwrap();
        let loss = |y: &Tensor| (y - &target).unwrap().sqr().unwrap().sum_all().unwrap();
        let (gf, gr) = (loss(&yf).backward().unwrap(), loss(&yr).backward().unwrap());
        for (pf, pr) in fake.params().iter().zip(rounded.params()) {
            let (a, c) = (gf.get(pf.var.as_tensor()), gr.get(pr.var.as_tensor()));
            let (a, c) = (values(a.expect("a gradient")), values(c.expect("a gradient")));
            assert_eq!(a, c, "{ty}: gradient of {}", pf.name);
        }
    }
}

#[test]
fn bad_fake_quant_requests_are_refused() {
    let mut m = model();
    // Not a quantized type; a block wider than the hidden size; a trainable word table.
    for (mat, emb, want) in [
        (Some(CoreDType::F16), None, "quantized type"),
        (Some(CoreDType::Q4_K), None, "hidden size 32"),
        (Some(CoreDType::Q8_0), Some(CoreDType::Q4_0), "frozen"),
    ] {
        let e = m.set_fake_quant(mat, emb).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    // Frozen, the word table is rounded in place.
    m.set_trainable(ParamKind::Embedding, false);
    let before = values(m.params()[0].var.as_tensor());
    m.set_fake_quant(Some(CoreDType::Q8_0), Some(CoreDType::Q4_0)).unwrap();
    let after = values(m.params()[0].var.as_tensor());
    let q = edgellm_core::quant::quantize(CoreDType::Q4_0, &before).unwrap();
    assert_eq!(after, edgellm_core::quant::dequantize(CoreDType::Q4_0, &q, before.len()).unwrap());
    // Options: QAT needs full mode, embeddings rounding needs QAT.
    let o = IntentOptions { qat: Some(CoreDType::Q8_0), ..IntentOptions::default() };
    assert!(o.validate().unwrap_err().to_string().contains("--mode full"));
    let o = IntentOptions {
        mode: IntentMode::Full,
        qat_embeddings: Some(CoreDType::Q4_0),
        ..IntentOptions::default()
    };
    assert!(o.validate().unwrap_err().to_string().contains("--qat-embeddings"));
}

#[test]
fn quantization_aware_intent_training_learns_and_its_quantized_file_agrees() {
    let dir = common::scratch("intent-qat");
    let enc = dir.join("encoder.gguf");
    write_tiny_gguf(&enc, &tiny_config(32, Activation::Gelu), 3).unwrap();
    let source = BertFile::open(&enc, "encoder").unwrap();
    let data = tiny_intents(36, 7);
    let o = IntentOptions {
        qat: Some(CoreDType::Q8_0),
        qat_embeddings: Some(CoreDType::Q8_0),
        ..common::tiny_intent_options(IntentMode::Full)
    };
    let trained = train_intents(&source, &data, &[], &o, &mut |_| {}, &mut |_, _| {}).unwrap();
    assert_eq!(trained.report.best.0, IntentMode::Full, "QAT keeps a rounded epoch");
    assert_eq!(trained.report.best_val_accuracy, 1.0, "{:?}", trained.report.epochs);
    let f32_path = dir.join("qat.gguf");
    trained.write(&source, &f32_path).unwrap();
    // Quantized to the trained type (word table included), the file classifies its
    // training set perfectly.
    let q_path = dir.join("qat-q8_0.gguf");
    let opened = OpenedModel::open(&f32_path).unwrap();
    let recipe =
        Recipe { quantize: Some((Scheme::parse("Q8_0").unwrap(), Method::Rtn)), ..Recipe::default() };
    run_recipe(&opened.source(), opened.gguf(), &recipe, &CalibTokens::None, &q_path, &mut |_| {}).unwrap();
    let c = IntentClassifier::load(&q_path).unwrap();
    let texts: Vec<&str> = data.iter().map(|e| e.text.as_str()).collect();
    let got: Vec<&str> =
        c.classify_batch(&texts, 0).unwrap().iter().map(|s| c.labels()[s.best().index].as_str()).collect();
    let gold: Vec<&str> = data.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(got, gold);
}
