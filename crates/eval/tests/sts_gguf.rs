//! all-MiniLM-L6-v2 through GGUF: export the safetensors model to llama.cpp's `bert` layout,
//! load it back (F32, and quantized to Q8_0 / Q4_K with the core's reference quantizers), and
//! check tokenization and STS-B Spearman against the safetensors model.
//!
//! Run in release: `cargo test --release -p edgellm-eval --test sts_gguf -- --nocapture`.

use std::path::{Path, PathBuf};

use edgellm_core::quant::quantize;
use edgellm_core::DType;
use edgellm_eval::sts;
use edgellm_formats::{GgufWriter, Value};
use edgellm_models::bert::{gguf_export, BertError, GgufExport};
use edgellm_models::ModelError;
use edgellm_runtime::embed::{EmbedError, Embedder};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let p = dir.join("all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-models first",
        p.display()
    );
    p
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("edgellm-sts-gguf-{}-{name}", std::process::id()))
}

/// Write `e` with every matrix in `pick(row_len)` (None = keep F32); vectors, `position_embd`
/// and `token_types` stay F32 (llama-quantize leaves those two, and llama.cpp's bert graph adds
/// them as F32). A stand-in for `edgellm quantize` until it lands.
fn write_quantized(e: &GgufExport, path: &Path, file_type: u32, pick: impl Fn(u64) -> Option<DType>) {
    let mut w = GgufWriter::new();
    for (k, v) in &e.metadata {
        w.set(k, v.clone());
    }
    w.set("general.file_type", Value::U32(file_type));
    for t in &e.tensors {
        let keep =
            t.dims.len() != 2 || ["position_embd.weight", "token_types.weight"].contains(&t.name.as_str());
        let dtype = if keep { DType::F32 } else { pick(t.dims[0]).unwrap_or(DType::F32) };
        let bytes = if dtype == DType::F32 {
            t.data.iter().flat_map(|v| v.to_le_bytes()).collect()
        } else {
            quantize(dtype, &t.data).unwrap()
        };
        w.add_tensor(&t.name, &t.dims, dtype, bytes).unwrap();
    }
    w.write_file(path).unwrap();
}

fn spearman(e: &Embedder, pairs: &[sts::StsPair]) -> f64 {
    sts::evaluate(e, pairs, 0).unwrap().spearman
}

#[test]
fn minilm_from_gguf_matches_safetensors_on_sts() {
    let dir = model_dir();
    let pairs = sts::load(root().join("data/stsb/sts-test.tsv")).unwrap();
    let export = gguf_export(&dir).unwrap();
    assert_eq!(export.tensors.len(), 5 + 6 * 16);
    let meta = |k: &str| export.metadata.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
    assert_eq!(meta("general.architecture"), Some(Value::String("bert".into())));
    assert_eq!(meta("bert.pooling_type"), Some(Value::U32(1)));
    assert_eq!(meta("tokenizer.ggml.model"), Some(Value::String("bert".into())));
    assert_eq!(meta("tokenizer.ggml.bos_token_id"), Some(Value::U32(101)));
    let tok = export.tensors.iter().find(|t| t.name == "token_embd.weight").unwrap();
    assert_eq!(tok.dims, [384, 30522]);

    let f32_path = tmp("f32.gguf");
    export.write_f32(&f32_path).unwrap();
    let st = Embedder::load(&dir).unwrap();
    let gg = Embedder::load(&f32_path).unwrap();
    assert!(gg.normalizes() && gg.pooling() == st.pooling());
    assert_eq!(gg.max_seq_length(), st.max_seq_length());

    // The WordPiece tokenizer from GGUF metadata gives tokenizer.json's ids on every sentence.
    let mut n = 0;
    for p in &pairs {
        for s in [&p.sentence1, &p.sentence2] {
            assert_eq!(gg.tokenize(s).unwrap(), st.tokenize(s).unwrap(), "{s:?}");
            n += 1;
        }
    }
    for s in ["Héllo, WORLD!  naïve café 東京 [CLS] x [MASK]", "", "   ", "a\tb\nc", "supercalifragilistic"]
    {
        assert_eq!(gg.tokenize(s).unwrap(), st.tokenize(s).unwrap(), "{s:?}");
    }
    eprintln!("tokenizer: {n} STS sentences tokenize identically");

    let sp_st = spearman(&st, &pairs);
    let sp_f32 = spearman(&gg, &pairs);
    eprintln!("STS-B spearman x100: safetensors {sp_st:.4}, F32 GGUF {sp_f32:.4}");
    assert!((sp_f32 - sp_st).abs() < 0.01, "F32 GGUF {sp_f32} vs safetensors {sp_st}");
    assert!((sp_st - 82.03).abs() < 0.05, "{sp_st}");

    // Q8_0 everywhere (rows of 384 and 1536 are whole 32-blocks).
    let q8 = tmp("q8_0.gguf");
    write_quantized(&export, &q8, 7, |_| Some(DType::Q8_0));
    let sp_q8 = spearman(&Embedder::load(&q8).unwrap(), &pairs);
    // Q4_K where rows are whole 256-blocks (ffn_down, rows of 1536), else Q5_0: llama-quantize's
    // fallback for Q4_K on rows of 384.
    let q4k = tmp("q4_k.gguf");
    write_quantized(&export, &q4k, 14, |row| {
        Some(if row.is_multiple_of(256) { DType::Q4_K } else { DType::Q5_0 })
    });
    let sp_q4k = spearman(&Embedder::load(&q4k).unwrap(), &pairs);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / (1 << 20) as f64;
    eprintln!(
        "STS-B spearman x100: Q8_0 {sp_q8:.4} ({:.1} MiB), Q4_K/Q5_0 {sp_q4k:.4} ({:.1} MiB), F32 {:.1} MiB",
        size(&q8),
        size(&q4k),
        size(&f32_path)
    );
    // EDGELLM_KEEP_GGUF=DIR keeps the three files there (e.g. to load them in llama.cpp).
    for p in [&f32_path, &q8, &q4k] {
        match std::env::var_os("EDGELLM_KEEP_GGUF") {
            Some(d) => {
                let name = p
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace(&format!("edgellm-sts-gguf-{}-", std::process::id()), "minilm-");
                std::fs::copy(p, Path::new(&d).join(name)).unwrap();
                let _ = std::fs::remove_file(p);
            }
            None => {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    assert!((sp_q8 - sp_st).abs() < 0.2, "Q8_0 {sp_q8} vs F32 {sp_st}");
    // Measured: Q8_0 82.0245, Q4_K/Q5_0 81.8719 against 82.0325 (the README's numerics table).
    assert!((sp_q4k - sp_st).abs() < 0.5, "Q4_K {sp_q4k} vs F32 {sp_st}");
}

#[test]
fn bad_sources_are_typed_errors() {
    // A GGUF that is not a BERT.
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    let llama = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if llama.exists() {
        let e = Embedder::load(&llama).err().expect("a llama GGUF is not an embedding model");
        assert!(matches!(e, EmbedError::Model(BertError::Model(ModelError::BadConfig(_)))), "{e}");
        assert!(e.to_string().contains("'llama' is not 'bert'"), "{e}");
    }
    // Export from a directory that is not there, or lacks its files.
    let e = gguf_export(Path::new("no-such-model-dir")).unwrap_err();
    assert!(matches!(e, ModelError::Source { .. }), "{e}");
    let empty = tmp("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let e = gguf_export(&empty).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
    let _ = std::fs::remove_dir_all(&empty);
}
