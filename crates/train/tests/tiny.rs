//! Distillation end to end on tiny random encoders (fast): masks held through training and
//! into the written GGUF, the loss lowered, and the typed errors of bad requests.

mod common;

use std::path::{Path, PathBuf};

use edgellm_formats::{GgufFile, GgufWriter, Value};
use edgellm_models::bert::Activation;
use edgellm_runtime::embed::Embedder;
use edgellm_train::distill::{DistillJob, DistillOptions};
use edgellm_train::synthetic::{tiny_config, tiny_export, tiny_text};
use edgellm_train::{BertFile, DType, MaskedAdamW, ParamKind, TrainError};

fn tiny(dir: &Path, name: &str, hidden: usize, seed: u64, prune: f64) -> PathBuf {
    let mut e = tiny_export(&tiny_config(hidden, Activation::Gelu), seed).unwrap();
    common::magnitude_prune(&mut e, prune);
    let p = dir.join(name);
    e.write_f32(&p).unwrap();
    p
}

fn opts() -> DistillOptions {
    DistillOptions {
        steps: Some(40),
        batch: 8,
        lr: 5e-3,
        max_len: 16,
        held_out: 16,
        max_sentences: 200,
        ..DistillOptions::default()
    }
}

#[test]
fn tiny_distillation_lowers_the_loss_and_keeps_its_zeros_in_the_gguf() {
    let dir = common::scratch("tiny-e2e");
    let teacher = tiny(&dir, "teacher.gguf", 16, 1, 0.0);
    let student = tiny(&dir, "student.gguf", 16, 1, 0.5);
    let data = dir.join("data.txt");
    std::fs::write(&data, tiny_text(200, 5)).unwrap();
    let mut job = DistillJob::prepare(&teacher, &student, &data, opts()).unwrap();
    let masked_before = job.student.masked_fraction().unwrap();
    assert_eq!(masked_before.0 * 2, masked_before.1, "half of every row is zero");
    let mut steps = 0;
    let r = job.run(&mut |_| steps += 1).unwrap();
    assert_eq!(steps, 40);
    assert!(r.train_after.loss < 0.5 * r.train_before.loss, "{:?} -> {:?}", r.train_before, r.train_after);
    let (hb, ha) = (r.held_before.unwrap(), r.held_after.unwrap());
    assert!(ha.mean_cosine > hb.mean_cosine, "held-out cosine {hb:?} -> {ha:?}");

    // The mask held in memory: every masked entry is exactly zero, and training moved others.
    for p in job.student.params() {
        let Some(m) = &p.mask else { continue };
        let v: Vec<f32> = p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let m: Vec<f32> = m.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().zip(&m).all(|(x, k)| *k == 1.0 || *x == 0.0), "{}: a masked entry moved", p.name);
    }
    assert_eq!(job.student.masked_fraction().unwrap(), masked_before);

    // And on disk: the same zeros, as +0.0, where the student had them; the file loads.
    let out = dir.join("out.gguf");
    job.write(&out).unwrap();
    let (src, got) = (GgufFile::open(&student).unwrap(), GgufFile::open(&out).unwrap());
    let mut changed = 0;
    for t in src.tensors.iter().filter(|t| common::is_layer_linear(&t.name)) {
        let o = got.tensor(&t.name).unwrap();
        assert_eq!((o.dims.clone(), o.dtype), (t.dims.clone(), edgellm_core::DType::F32));
        let (a, b) = (src.tensor_data(t), got.tensor_data(o));
        for (x, y) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
            let (x, y) =
                (f32::from_le_bytes(x.try_into().unwrap()), f32::from_le_bytes(y.try_into().unwrap()));
            if x == 0.0 {
                assert_eq!(y.to_bits(), 0, "{}: a zero became {y:e}", t.name);
            } else {
                assert_ne!(y, 0.0, "{}: a kept weight became zero", t.name);
                changed += usize::from(x != y);
            }
        }
    }
    assert!(changed > 0, "training changed no kept weight");
    assert_eq!(got.get("general.architecture").and_then(Value::as_str), Some("bert"));
    let e = Embedder::load(&out).unwrap();
    assert_eq!(e.embed("the first one was in the new .").unwrap().len(), 16);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn masked_adamw_keeps_zeros_and_masks_gradients() {
    let mut e = tiny_export(&tiny_config(16, Activation::Gelu), 2).unwrap();
    common::magnitude_prune(&mut e, 0.5);
    let dir = common::scratch("tiny-adamw");
    let p = dir.join("s.gguf");
    e.write_f32(&p).unwrap();
    let mut model = BertFile::open(&p, "student").unwrap().trainable(DType::F32).unwrap();
    model.set_trainable(ParamKind::Embedding, false);
    assert!(model.params().iter().filter(|p| p.kind == ParamKind::Embedding).all(|p| !p.trainable));
    let params = edgellm_train::ParamsAdamW { lr: 0.1, weight_decay: 0.1, ..Default::default() };
    let mut opt = MaskedAdamW::new(model.trainable_vars(), model.params(), params).unwrap();
    let word_before: Vec<f32> = model.params()[0].var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let b = model.batch(&[&[2, 9, 10, 11, 3], &[2, 20, 3]]).unwrap();
    for _ in 0..5 {
        let loss = model.forward(&b).unwrap().sqr().unwrap().mean_all().unwrap();
        let mut grads = loss.backward().unwrap();
        assert!(grads.get(model.params()[0].var.as_tensor()).is_none(), "a frozen table got a gradient");
        opt.mask_grads(&mut grads).unwrap();
        for p in model.params() {
            if let (Some(m), Some(g)) = (&p.mask, grads.get(p.var.as_tensor())) {
                let masked_grad = (g * (1.0 - m).unwrap()).unwrap().abs().unwrap().sum_all().unwrap();
                assert_eq!(masked_grad.to_scalar::<f32>().unwrap(), 0.0, "{}", p.name);
            }
        }
        opt.step(grads).unwrap();
    }
    for p in model.params().iter().filter(|p| p.mask.is_some()) {
        let n = p.masked_count().unwrap();
        let zeros = p.to_f32_vec().unwrap().iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros, n, "{}", p.name);
    }
    let word_after: Vec<f32> = model.params()[0].var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(word_before, word_after, "a frozen table moved");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A structured-pruned student (half the FFN channels, one of its two heads) trains with its
/// own shapes and is written with them.
#[test]
fn a_narrower_ffn_student_distills() {
    let dir = common::scratch("tiny-narrow");
    let teacher = tiny(&dir, "teacher.gguf", 16, 1, 0.0);
    let mut c = tiny_config(16, Activation::Gelu);
    c.intermediate_size = 16;
    c.attention_head_size = Some(c.head_dim());
    c.num_attention_heads = 1;
    let student = dir.join("narrow.gguf");
    tiny_export(&c, 2).unwrap().write_f32(&student).unwrap();
    let data = dir.join("data.txt");
    std::fs::write(&data, tiny_text(200, 5)).unwrap();
    let mut job = DistillJob::prepare(&teacher, &student, &data, opts()).unwrap();
    assert_eq!(job.student.masked_fraction().unwrap().0, 0, "a dense student has no mask");
    let r = job.run(&mut |_| {}).unwrap();
    assert!(r.train_after.loss < 0.5 * r.train_before.loss, "{:?} -> {:?}", r.train_before, r.train_after);
    let out = dir.join("out.gguf");
    job.write(&out).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.tensor("blk.0.ffn_up.weight").unwrap().dims, vec![16, 16]);
    assert_eq!(f.get("bert.feed_forward_length"), Some(&Value::U32(16)));
    assert_eq!(f.tensor("blk.0.attn_k.weight").unwrap().dims, vec![16, 8]);
    assert_eq!(f.tensor("blk.0.attn_output.weight").unwrap().dims, vec![8, 16]);
    assert_eq!(f.get("bert.attention.head_count"), Some(&Value::U32(1)));
    assert_eq!(f.get("bert.attention.key_length"), Some(&Value::U32(8)));
    // The fast runtime runs the written model.
    let bert = edgellm_models::bert::Bert::from_gguf(&f).unwrap();
    assert_eq!(bert.config.attention_width(), 8);
    assert_eq!(bert.forward_sequences(&[&[2, 7, 9, 3]]).unwrap().len(), 4 * 16);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_requests_are_typed_errors() {
    let dir = common::scratch("tiny-errors");
    let teacher = tiny(&dir, "teacher.gguf", 16, 1, 0.0);
    let wide = tiny(&dir, "wide.gguf", 32, 1, 0.5);
    let data = dir.join("data.txt");
    std::fs::write(&data, tiny_text(100, 5)).unwrap();
    let prep =
        |t: &Path, s: &Path, d: &Path, o: DistillOptions| DistillJob::prepare(t, s, d, o).err().unwrap();

    match prep(&teacher, &wide, &data, opts()) {
        TrainError::Mismatch { what, teacher, student } => {
            assert_eq!((what.as_str(), teacher.as_str(), student.as_str()), ("hidden_size", "16", "32"))
        }
        e => panic!("{e}"),
    }
    let missing = dir.join("nope.gguf");
    let e = prep(&teacher, &missing, &data, opts());
    assert!(matches!(&e, TrainError::MissingModel { role: "student", .. }), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e = prep(&teacher, &teacher, &empty, opts());
    assert!(matches!(e, TrainError::NotEnoughData { found: 0, .. }), "{e}");
    std::fs::write(&empty, " = Heading = \n\n short line .\n").unwrap();
    let e = prep(&teacher, &teacher, &empty, opts());
    assert!(matches!(e, TrainError::NotEnoughData { found: 0, .. }), "{e}");
    let e = prep(&teacher, &teacher, &dir.join("no-data.txt"), opts());
    assert!(matches!(e, TrainError::Data { .. }), "{e}");

    let llama = dir.join("llama.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.write_file(&llama).unwrap();
    match prep(&llama, &teacher, &data, opts()) {
        TrainError::NotBert { role, arch, .. } => assert_eq!((role, arch.as_str()), ("teacher", "llama")),
        e => panic!("{e}"),
    }
    let hf = dir.join("hf-llama");
    std::fs::create_dir_all(&hf).unwrap();
    std::fs::write(hf.join("config.json"), r#"{"model_type": "llama", "hidden_size": 16}"#).unwrap();
    let e = prep(&teacher, &hf, &data, opts());
    assert!(matches!(&e, TrainError::NotBert { role: "student", .. }), "{e}");

    let e = prep(&teacher, &teacher, &data, DistillOptions { batch: 0, ..opts() });
    assert!(matches!(e, TrainError::BadOptions(_)), "{e}");
    let e = prep(&teacher, &teacher, &data, DistillOptions { steps: Some(0), ..opts() });
    assert!(matches!(e, TrainError::BadOptions(_)), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quantized_students_load_dequantized() {
    use edgellm_core::quant::{dequantize, quantize};
    use edgellm_core::DType as T;
    let dir = common::scratch("tiny-quant");
    let e = tiny_export(&tiny_config(32, Activation::Gelu), 4).unwrap();
    for dtype in [T::F16, T::Q8_0] {
        let mut w = GgufWriter::new();
        for (k, v) in &e.metadata {
            w.set(k, v.clone());
        }
        let mut want = Vec::new();
        for t in &e.tensors {
            let q = if common::is_layer_linear(&t.name) || t.name == "token_embd.weight" {
                dtype
            } else {
                T::F32
            };
            let bytes = quantize(q, &t.data).unwrap();
            want.push(dequantize(q, &bytes, t.data.len()).unwrap());
            w.add_tensor(&t.name, &t.dims, q, bytes).unwrap();
        }
        let p = dir.join(format!("{dtype}.gguf"));
        w.write_file(&p).unwrap();
        let model = BertFile::open(&p, "student").unwrap().trainable(DType::F32).unwrap();
        let got = model.export_tensors().unwrap();
        assert_eq!(got.len(), e.tensors.len());
        for ((g, t), w) in got.iter().zip(&e.tensors).zip(&want) {
            assert_eq!(g.name, t.name);
            assert_eq!(&g.data, w, "{dtype} {}", t.name);
        }
        if dtype == T::Q8_0 {
            assert!(got.iter().zip(&e.tensors).any(|(g, t)| g.data != t.data), "Q8_0 changed nothing");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
