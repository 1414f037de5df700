//! Distillation of all-MiniLM-L6-v2 with half of every layer-linear row magnitude-zeroed, from
//! the dense model, on a small fixed set of WikiText sentences: the loss falls, the held-out
//! cosine to the teacher rises, and the zeros are exactly where they were, in memory and in
//! the written GGUF, which the runtime loads.

mod common;

use std::time::Instant;

use edgellm_formats::GgufFile;
use edgellm_models::bert::gguf_export;
use edgellm_runtime::embed::{cosine, Embedder};
use edgellm_train::distill::{DistillJob, DistillOptions};

#[test]
fn distilling_pruned_minilm_lowers_the_loss_and_keeps_its_zeros() {
    let t0 = Instant::now();
    let dense = common::minilm();
    let dir = common::scratch("minilm");
    let mut export = gguf_export(&dense).unwrap();
    common::magnitude_prune(&mut export, 0.5);
    let (zeros, n) = common::zeros(&export.tensors);
    assert_eq!(2 * zeros, n);
    let student = dir.join("student.gguf");
    export.write_f32(&student).unwrap();

    let opts = DistillOptions {
        steps: Some(24),
        batch: 16,
        lr: 2e-4,
        max_len: 32,
        max_sentences: 80,
        held_out: 16,
        freeze_embeddings: true,
        ..DistillOptions::default()
    };
    let mut job = DistillJob::prepare(&dense, &student, &common::wikitext(), opts).unwrap();
    assert_eq!((job.data.train.len(), job.data.held_out.len()), (64, 16));
    assert_eq!(job.student.masked_fraction().unwrap(), (zeros, n));
    let r = job.run(&mut |_| {}).unwrap();
    let (hb, ha) = (r.held_before.unwrap(), r.held_after.unwrap());
    eprintln!(
        "loss {:.4} -> {:.4}; held-out cosine {:.4} -> {:.4}; {} steps in {:.1} s",
        r.train_before.loss,
        r.train_after.loss,
        hb.mean_cosine,
        ha.mean_cosine,
        r.stats.steps,
        r.stats.seconds
    );
    assert!(r.train_after.loss < 0.7 * r.train_before.loss, "{:?} -> {:?}", r.train_before, r.train_after);
    assert!(ha.mean_cosine > hb.mean_cosine + 0.02, "held-out cosine {hb:?} -> {ha:?}");
    assert_eq!(r.masked, (zeros, n), "the mask lost or gained zeros");

    let out = dir.join("distilled.gguf");
    job.write(&out).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let mut changed = 0usize;
    for t in export.tensors.iter().filter(|t| common::is_layer_linear(&t.name)) {
        let o = f.tensor(&t.name).unwrap();
        let got: Vec<f32> =
            f.tensor_data(o).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(got.len(), t.data.len());
        for (i, (&want, &g)) in t.data.iter().zip(&got).enumerate() {
            if want == 0.0 {
                assert_eq!(g.to_bits(), 0, "{}[{i}]: a pruned weight is {g:e} in the written file", t.name);
            } else {
                assert_ne!(g, 0.0, "{}[{i}]: a kept weight became zero", t.name);
                changed += usize::from(g != want);
            }
        }
    }
    assert!(changed > n / 4, "only {changed} kept weights changed");
    // The runtime loads the result and it is closer to the teacher than the pruned student.
    let texts = ["A man is playing a guitar.", "The cat sat on the mat near the window."];
    let (t, s, d) =
        (Embedder::load(&dense).unwrap(), Embedder::load(&student).unwrap(), Embedder::load(&out).unwrap());
    for text in texts {
        let te = t.embed(text).unwrap();
        let (before, after) = (cosine(&te, &s.embed(text).unwrap()), cosine(&te, &d.embed(text).unwrap()));
        eprintln!("{text:?}: cosine to the teacher {before:.4} -> {after:.4}");
        assert!(after > before, "{text:?}: cosine to the teacher {before} -> {after}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("total {:.1} s", t0.elapsed().as_secs_f64());
}
