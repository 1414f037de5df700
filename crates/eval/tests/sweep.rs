//! `eval sweep` end to end on the shipped models with reduced settings (a few short chunks):
//! every point is compressed, measured and charted; a rerun resumes from `sweep.json`; the
//! cached base logits give exactly the KL divergence of running the base alongside.
//! Run in release: `cargo test --release -p edgellm-eval --test sweep`.

use std::path::{Path, PathBuf};

use edgellm_eval::ppl::{self, BaseLogits, KldBase, PplOptions};
use edgellm_eval::sweep::{run_sweep, write_reports, GridFile, Kind, SweepEvent, SweepOptions};
use edgellm_runtime::LoadedModel;

/// Calibration observes layer inputs through a process-wide observer: one calibrating test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellm-sweep-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn grid(toml: &str) -> GridFile {
    let mut g = GridFile::parse(toml).unwrap();
    let data = root().join("data");
    g.calib.text = Some(data.join("wikitext-2/wiki.valid.tokens"));
    if g.eval.text.is_none() {
        g.eval.text = Some(data.join("wikitext-2/wiki.test.raw"));
    }
    g
}

/// Runs the sweep and returns its result and the stage names it reported, in order.
fn sweep_with_stages(g: &GridFile, opts: &SweepOptions) -> (edgellm_eval::sweep::SweepResult, Vec<String>) {
    let mut stages: Vec<String> = Vec::new();
    let r = run_sweep(g, opts, &mut |e| {
        if let SweepEvent::Stage { stage, .. } = e {
            if !stages.iter().any(|s| s == stage) {
                stages.push(stage.to_string());
            }
        }
    })
    .unwrap();
    (r, stages)
}

/// PNG signature and IHDR size.
fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", p.display());
    assert_eq!(&b[12..16], b"IHDR");
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

#[test]
fn decoder_sweep_measures_charts_and_resumes() {
    let _serial = serial();
    let g = grid(
        "[eval]\nctx = 64\nchunks = 2\n[calib]\nctx = 64\nchunks = 2\n[speed]\nn_prompt = 8\nn_gen = 4\nreps = 1\n\
         [grid]\ndense = [\"Q8_0\"]\n[[point]]\nprune = \"magnitude\"\nsparsity = \"50%\"\n\
         [[point]]\nprune = \"wanda\"\nsparsity = \"2:4\"\nquant = \"Q4_K_M\"\n",
    );
    let dir = tmp("decoder");
    let opts = SweepOptions {
        model: model("SmolLM2-135M-Instruct.Q4_1.gguf"),
        dir: dir.clone(),
        keep_models: false,
        fresh: false,
    };
    let (r, stages) = sweep_with_stages(&g, &opts);
    assert_eq!(r.kind, Kind::Decoder);
    assert_eq!(r.base_type, "Q4_1");
    let names: Vec<&str> = r.points.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Q8_0", "magnitude 50%", "wanda 2:4 + Q4_K_M"]);
    for s in ["pruning", "quantizing", "KLD", "speed"] {
        assert!(stages.iter().any(|x| x == s), "no {s} stage in {stages:?}");
    }
    assert_eq!(r.base.kld, Some(0.0));
    assert!(r.base.ppl.is_some_and(|p| p.is_finite() && p > 1.0));
    for p in &r.points {
        let k = p.kld.unwrap();
        assert!(k.is_finite() && k >= 0.0, "{}: KLD {k}", p.name);
        assert!(p.ppl.is_some_and(|x| x.is_finite()) && p.gen_tps.is_some_and(|t| t > 0.0), "{p:?}");
        assert!(p.file_bytes > 0 && p.params > 100_000_000, "{p:?}");
    }
    let (q8, mag, wanda) = (&r.points[0], &r.points[1], &r.points[2]);
    // Q8_0 is far closer to the base than removing half of every row's weights.
    assert!(q8.kld.unwrap() < mag.kld.unwrap() / 10.0, "{q8:?} {mag:?}");
    assert!((8.4..8.7).contains(&q8.bpw), "Q8_0 bpw {}", q8.bpw);
    // Half of every pruned row is removed (576 and 1536 are even); a few kept weights of the
    // Q4_1 source are exact zeros already. The fraction recorded is that of the pruning step.
    for p in [mag, wanda] {
        let z = p.zero_fraction.unwrap();
        assert!((0.5..0.5001).contains(&z), "{}: zero fraction {z}", p.name);
    }
    assert!(q8.zero_fraction.is_none());
    // The pruned F32 file is far larger than the Q4_K_M one: zeros are stored densely.
    assert!(mag.bpw > 20.0 && wanda.bpw < 7.0, "{} {}", mag.bpw, wanda.bpw);
    assert!(!dir.join("models").exists(), "point models are deleted unless kept");

    let files = write_reports(&r, &dir).unwrap();
    let md = std::fs::read_to_string(dir.join("sweep.md")).unwrap();
    for n in names.iter().chain(["base (Q4_1)"].iter()) {
        assert!(md.contains(&format!("| {n} |")), "sweep.md lacks {n}:\n{md}");
    }
    for stem in ["kld-vs-bpw", "ppl-vs-bpw", "kld-vs-speed"] {
        assert_eq!(png_size(&dir.join(format!("{stem}.png"))), edgellm_eval::chart::SIZE);
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("dense") && svg.contains("wanda"), "{stem}.svg");
        assert!(md.contains(&format!("({stem}.png)")));
    }
    assert!(files.iter().all(|f| f.exists()), "{files:?}");

    // A rerun with the same settings takes every point from sweep.json.
    let mut resumed = 0;
    let again = run_sweep(&g, &opts, &mut |e| {
        if let SweepEvent::Done { resumed: true, .. } = e {
            resumed += 1;
        }
    })
    .unwrap();
    assert_eq!(resumed, 3);
    assert_eq!(again.points, r.points);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn decoder_sweep_stores_sparse_and_thresholds_activations() {
    let _serial = serial();
    let g = grid(
        "[eval]\nctx = 64\nchunks = 2\n[calib]\nctx = 64\nchunks = 2\n[speed]\nn_prompt = 8\nn_gen = 4\nreps = 1\n\
         [grid]\ndense = [\"Q4_0\"]\nprune = [\"magnitude\"]\nsparsity = [\"2:4\"]\nquant = [\"Q4_0\"]\n\
         format = [\"dense\", \"sparse\"]\n[[point]]\nquant = \"Q4_0\"\nact_sparsity = 0.4\n",
    );
    let dir = tmp("sparse");
    let opts = SweepOptions {
        model: model("SmolLM2-135M-Instruct.Q4_1.gguf"),
        dir: dir.clone(),
        keep_models: false,
        fresh: true,
    };
    let (r, stages) = sweep_with_stages(&g, &opts);
    // Activation sparsity is off again for whatever loads next.
    assert_eq!(edgellm_models::act_sparsity::act_sparsity(), None);
    let names: Vec<&str> = r.points.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["Q4_0", "magnitude 2:4 + Q4_0", "magnitude sparse 2:4 + Q4_0", "activation sparsity 40% + Q4_0"]
    );
    assert!(stages.iter().any(|s| s == "thresholds"), "{stages:?}");
    let (q4, dense, sparse, act) = (&r.points[0], &r.points[1], &r.points[2], &r.points[3]);
    for p in &r.points {
        assert!(p.kld.is_some_and(|k| k.is_finite() && k > 0.0), "{p:?}");
        assert!(p.gen_tps.is_some_and(|t| t > 0.0) && p.params > 100_000_000, "{p:?}");
    }
    // The sparse file holds the same pruning in fewer bytes (3 bits per pruned weight against
    // Q4_0's 4.5) and the same parameter count; its model is the pruned one (its kept values
    // are quantized as one block per 32 kept values, so the two are close, not equal).
    assert_eq!(sparse.params, dense.params);
    assert!(sparse.bpw < 0.85 * dense.bpw, "sparse {} vs dense {} bpw", sparse.bpw, dense.bpw);
    assert_eq!(sparse.series, "magnitude sparse");
    assert!(sparse.zero_fraction.is_some_and(|z| (0.5..0.5001).contains(&z)), "{sparse:?}");
    let (ks, kd) = (sparse.kld.unwrap(), dense.kld.unwrap());
    assert!(ks < 1.5 * kd && kd < 1.5 * ks, "KLD sparse {ks} vs dense {kd}");
    // Activation sparsity changes no tensor byte, and thresholding 40 % of every projection's
    // input adds to Q4_0's loss (unthresholded it would be the Q4_0 point exactly; on these two
    // 64-token chunks: 0.50 against 0.32).
    assert_eq!(act.act_sparsity, Some(0.4f32 as f64));
    assert_eq!((act.bpw, act.params), (q4.bpw, q4.params));
    assert!(act.kld.unwrap() > 1.2 * q4.kld.unwrap(), "act {:?} vs Q4_0 {:?}", act.kld, q4.kld);
    assert_eq!(act.series, "activation sparsity");
    write_reports(&r, &dir).unwrap();
    let svg = std::fs::read_to_string(dir.join("kld-vs-bpw.svg")).unwrap();
    assert!(svg.contains("magnitude sparse") && svg.contains("activation sparsity"), "series on the chart");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cached_base_logits_give_the_same_kl_divergence() {
    let base = LoadedModel::load(model("SmolLM2-135M-Instruct.Q4_1.gguf"), 64).unwrap();
    let text = ppl::read_text(root().join("data/wikitext-2/wiki.test.raw")).unwrap();
    let cut = text[8192..].find('\n').map_or(text.len(), |i| 8192 + i);
    let (tokens, bos) = ppl::tokenize(&base.tokenizer, &text[..cut]);
    let opts = PplOptions { n_ctx: 64, max_chunks: Some(2) };
    // The model compared: the base with exact f32 activations (different logits, same vocabulary).
    let exact = LoadedModel::load_with(
        model("SmolLM2-135M-Instruct.Q4_1.gguf"),
        64,
        &edgellm_models::LoadOptions {
            precision: edgellm_models::Precision::Exact,
            kv_type: None,
            ..Default::default()
        },
    )
    .unwrap();
    let direct =
        ppl::kl_divergence_eval(base.model.as_ref(), exact.model.as_ref(), &tokens, bos, &opts, |_| {})
            .unwrap();
    let cache = BaseLogits::compute(base.model.as_ref(), &tokens, bos, &opts, |_, _| {}).unwrap();
    assert_eq!(cache.chunks(), 2);
    let cached =
        ppl::kl_divergence_with(KldBase::Cached(&cache), exact.model.as_ref(), &tokens, bos, &opts, |_| {})
            .unwrap();
    assert_eq!(direct.summary, cached.summary);
    assert!(direct.summary.kld_mean.value > 0.0);
    let (ppl_base, _) = cache.ppl();
    assert_eq!(ppl_base, direct.summary.ppl_base.value);
    // Cached logits of another chunk length are refused.
    let bad = PplOptions { n_ctx: 32, max_chunks: Some(2) };
    assert!(ppl::kl_divergence_with(
        KldBase::Cached(&cache),
        exact.model.as_ref(),
        &tokens,
        bos,
        &bad,
        |_| {}
    )
    .is_err());
}

#[test]
fn encoder_sweep_scores_sts() {
    let _serial = serial();
    let mut g = grid(
        "[eval]\nchunks = 200\n[calib]\nchunks = 4\n[grid]\ndense = [\"Q8_0\"]\nprune = [\"wanda\"]\nsparsity = [\"50%\"]\n\
         [[point]]\nprune = \"wanda\"\nsparsity = \"2:4\"\nquant = \"Q8_0\"\nformat = \"sparse\"\n",
    );
    g.eval.text = Some(root().join("data/stsb/sts-test.tsv"));
    let dir = tmp("encoder");
    let opts =
        SweepOptions { model: model("all-MiniLM-L6-v2"), dir: dir.clone(), keep_models: true, fresh: true };
    let r = run_sweep(&g, &opts, &mut |_| {}).unwrap();
    assert_eq!(r.kind, Kind::Encoder);
    let base = r.base.spearman.unwrap();
    let q8 = r.points[0].spearman.unwrap();
    let wanda = r.points[1].spearman.unwrap();
    assert!(base > 70.0 && (q8 - base).abs() < 1.0, "base {base}, Q8_0 {q8}");
    assert!(wanda.is_finite() && wanda < base + 1.0, "wanda {wanda}");
    // 2:4 stored in Q8_S24 (5 bits per pruned weight; the embeddings stay Q8_0): 7.1 against
    // 8.7 bits per weight, and still an encoder.
    let s24 = &r.points[2];
    assert_eq!(s24.name, "wanda sparse 2:4 + Q8_0");
    assert!(s24.bpw < 0.9 * r.points[0].bpw, "{} vs {}", s24.bpw, r.points[0].bpw);
    assert!(s24.spearman.is_some_and(|s| s > 40.0 && s < base + 1.0), "{s24:?}");
    assert!(r.points.iter().all(|p| p.sentences_per_s.is_some_and(|s| s > 0.0)));
    assert!(dir.join("models/Q8_0.gguf").exists(), "--keep-models keeps the files");
    write_reports(&r, &dir).unwrap();
    assert_eq!(png_size(&dir.join("sts-vs-bpw.png")), edgellm_eval::chart::SIZE);
    let _ = std::fs::remove_dir_all(&dir);
}
