//! The bodies of edgellm's fuzz targets.
//!
//! Each target is a function of arbitrary bytes that must never panic, hang or allocate without
//! bound: every refusal of hostile input is a typed error value. The libFuzzer binaries in
//! `fuzz/fuzz_targets/` call these functions (`scripts/fuzz TARGET SECONDS`), and the corpus
//! test of this crate (`tests/corpus.rs`) runs every target over its committed corpus
//! (`fuzz/corpus/TARGET/`) and the regression inputs of crashes found (`tests/corpus/TARGET/`)
//! on the stable toolchain, in CI.
//!
//! Where a target can check a property beyond "no panic" it asserts it: a GGUF file that
//! parses writes back to one that parses to the same metadata and tensors; streaming
//! detokenization gives the text batch decoding gives; byte-level BPE decodes what it encoded.

use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use edgellm_core::quant::sparse;
use edgellm_core::DType;
use edgellm_formats::mmap::Bytes;
use edgellm_formats::{GgufFile, GgufWriter, HfConfig, Imatrix, SafetensorsFile, Value, ValueType};
use edgellm_models::bert::BertConfig;
use edgellm_text::{ChatMessage, ChatTemplate, StreamDecoder, Tokenizer};

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (the libFuzzer binary and corpus directory) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("gguf_reader", gguf_reader),
    ("gguf_structured", gguf_structured),
    ("safetensors_header", safetensors_header),
    ("hf_config", hf_config),
    ("imatrix", imatrix),
    ("sparse_validate", sparse_validate),
    ("tokenizer_bpe", tokenizer_bpe),
    ("tokenizer_spm", tokenizer_spm),
    ("tokenizer_wordpiece", tokenizer_wordpiece),
    ("chat_template", chat_template),
    ("server_request", server_request),
];

/// The body of the target called `name`.
pub fn target(name: &str) -> Option<Body> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}

/// Runs target `name` once on a small input, so that what it loads once (a tokenizer, the
/// MiniLM encoder) is loaded before libFuzzer starts timing inputs.
pub fn warm(name: &str) {
    if let Some(body) = target(name) {
        body(b"\0warm");
    }
}

/// The model directory: `EDGELLM_MODELS`, or the repository's `models/`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("EDGELLM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// Raw bytes as a GGUF file. What parses is read through every accessor (tensor data slices
/// must lie inside the file), then written back and parsed again: the same metadata and tensors.
pub fn gguf_reader(data: &[u8]) {
    let Ok(f) = GgufFile::from_vec(data.to_vec()) else { return };
    exercise_gguf(&f);
    let mut out = Vec::new();
    if f.to_writer().write_to(&mut out).is_err() {
        return;
    }
    let g = GgufFile::from_vec(out).expect("a GGUF file that parsed, written back, parses");
    assert_eq!(format!("{:?}", f.metadata), format!("{:?}", g.metadata), "metadata changed in a round trip");
    assert_eq!(f.tensors.len(), g.tensors.len());
    for (a, b) in f.tensors.iter().zip(&g.tensors) {
        assert_eq!((&a.name, &a.dims, a.dtype), (&b.name, &b.dims, b.dtype));
        assert_eq!(f.tensor_data(a), g.tensor_data(b), "tensor {} changed in a round trip", a.name);
    }
}

/// Reads everything a loader reads from a parsed file.
fn exercise_gguf(f: &GgufFile) {
    let len = f.file_len();
    for t in &f.tensors {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.size);
        assert!(f.data_offset + t.offset + t.size <= len);
        let _ = (t.n_elements(), t.row_len(), t.n_rows());
    }
    for (k, v) in &f.metadata {
        let _ = (f.get(k), v.as_u64(), v.as_i64(), v.as_f64(), v.as_bool(), v.as_str(), v.to_string());
        let _ = (f.get_u64(k), f.get_f64(k), f.get_str(k), f.get_bool(k), f.get_str_array(k));
    }
    let _ = f.architecture();
    // `edgellm inspect --check` decodes every tensor of any file it is given.
    if let Ok(r) = edgellm_models::numeric::check_numerics(f, Default::default()) {
        assert!(r.tensors.len() + r.skipped.len() == f.tensors.len(), "the numeric check lost a tensor");
    }
}

/// Loads a parsed GGUF file as edgellm would: tokenizer, chat template, language model (and a
/// one-token forward pass through it), BERT config and WordPiece vocabulary, activation
/// sparsity thresholds, importance matrix.
fn load_gguf(f: &GgufFile) {
    exercise_gguf(f);
    if let Ok(tok) = Tokenizer::from_gguf(f) {
        let ids = tok.encode("Hello <|im_start|> wörld 🦀\n\n  x", true, true);
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()), "encode gave an id out of range");
        let _ = tok.decode(&ids);
        let _ = tok.decode_with(&[0, 1, u32::MAX, tok.vocab_size() as u32], false);
        if let Ok(Some(t)) = ChatTemplate::from_gguf(f, &tok) {
            let _ = t.render(&[ChatMessage::new("user", "hi")], true);
        }
    }
    // The memory guard sizes caches from the metadata before the model is built.
    let plan = edgellm_models::CachePlan::from_gguf(f, &Default::default());
    let planned = plan.as_ref().map(|p| (p.cache_bytes(4), p.cache_bytes(1 << 20)));
    if let Ok(model) = edgellm_models::load_gguf(f) {
        if let Some((small, _)) = planned {
            assert_eq!(
                small,
                model.cache_bytes(4),
                "the metadata's cache plan differs from the built model's"
            );
        }
        let info = model.info().clone();
        let mut cache = model.new_cache(4);
        let _ = model.cache_bytes(4);
        if info.n_vocab > 0 {
            let _ = model.forward(&[0, (info.n_vocab - 1) as u32], &mut cache, true);
        }
        assert!(model.forward(&[info.n_vocab as u32], &mut model.new_cache(4), false).is_err());
    }
    if let Ok(c) = BertConfig::from_gguf(f) {
        let _ = c.head_dim();
        if let Ok(h) = edgellm_models::intent::IntentHead::from_gguf(f, c.hidden_size) {
            assert!(h.labels.len() >= 2, "an intent head with fewer than 2 labels loaded");
        }
    }
    let _ = edgellm_runtime::embed::wordpiece_from_gguf(f);
    let _ = edgellm_models::act_sparsity::Thresholds::from_gguf(f);
}

/// Names the structure-aware target picks keys from: what the loaders read.
const KEYS: &[&str] = &[
    "general.architecture",
    "general.alignment",
    "general.name",
    "{arch}.block_count",
    "{arch}.context_length",
    "{arch}.embedding_length",
    "{arch}.feed_forward_length",
    "{arch}.attention.head_count",
    "{arch}.attention.head_count_kv",
    "{arch}.attention.key_length",
    "{arch}.attention.value_length",
    "{arch}.attention.layer_norm_rms_epsilon",
    "{arch}.attention.layer_norm_epsilon",
    "{arch}.attention.sliding_window",
    "{arch}.attention.causal",
    "{arch}.rope.dimension_count",
    "{arch}.rope.freq_base",
    "{arch}.rope.scaling.type",
    "{arch}.vocab_size",
    "{arch}.pooling_type",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.normalizer.lowercase",
    "tokenizer.chat_template",
    "imatrix.datasets",
    "imatrix.chunk_count",
    "edgellm.intent.version",
    "edgellm.intent.labels",
];

/// Block roles of the architectures' tensor names (`blk.N.ROLE.weight`).
const ROLES: &[&str] = &[
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "attn_q_norm",
    "attn_k_norm",
    "post_attention_norm",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "post_ffw_norm",
    "attn_output_norm",
    "layer_output_norm",
];

/// Whole-model tensor names.
const GLOBALS: &[&str] = &[
    "token_embd.weight",
    "output_norm.weight",
    "output.weight",
    "token_types.weight",
    "position_embd.weight",
    "token_embd_norm.weight",
    "token_embd_norm.bias",
    "blk.0.ffn_down.in_sum2",
    "blk.0.ffn_down.counts",
    "intent.head.weight",
    "intent.head.bias",
];

/// Tensor types the structure-aware target writes.
const TYPES: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::Q8_K,
    DType::IQ4_NL,
    DType::I32,
    DType::Q4_S24,
    DType::Q4_S48,
    DType::Q8_S24,
    DType::Q8_S48,
    DType::Q8_SB,
];

/// A small model described by its shape: the structure-aware target writes it as a GGUF file
/// with consistent metadata and tensors, then lets [`Edit`]s break it, so the fuzzer reaches
/// the model loaders' checks rather than stopping at the first header error.
#[derive(Arbitrary, Debug)]
pub struct ModelDesc {
    arch: u8,
    n_layer: u8,
    embd_blocks: u8,
    n_head: u8,
    n_kv_head: u8,
    ff_blocks: u8,
    n_vocab: u8,
    ctx: u16,
    weight_type: u8,
    norm_type: u8,
    tokenizer: u8,
    tokens: Vec<String>,
    merges: Vec<String>,
    template: Option<String>,
    fill: Vec<u8>,
    edits: Vec<Edit>,
}

/// A change to the written description: a key set to any value, a tensor dropped or reshaped.
#[derive(Arbitrary, Debug)]
pub enum Edit {
    /// Set a known key (index into the key list) to a value.
    Set(u8, Val),
    /// Set any key.
    SetAny(String, Val),
    /// Remove a key.
    Unset(u8),
    /// Drop the tensor at this index.
    DropTensor(u8),
    /// Give the tensor at this index other dimensions (data sized for the new shape).
    Reshape(u8, Vec<u8>),
    /// Change the tensor at this index to another type (data sized for it).
    Retype(u8, u8),
    /// Add a tensor.
    AddTensor(u8, u8, Vec<u8>, u8),
}

/// A metadata value.
#[derive(Arbitrary, Debug)]
pub enum Val {
    /// Unsigned.
    U32(u32),
    /// Wide unsigned.
    U64(u64),
    /// Signed.
    I32(i32),
    /// Float.
    F32(f32),
    /// Boolean.
    Bool(bool),
    /// Text.
    Str(String),
    /// Array of texts.
    Strs(Vec<String>),
    /// Array of integers.
    Ints(Vec<i32>),
    /// Array of floats.
    Floats(Vec<f32>),
    /// Array of arrays.
    Nested(Vec<Vec<u8>>),
}

impl Val {
    fn value(&self) -> Value {
        match self {
            Val::U32(v) => Value::U32(*v),
            Val::U64(v) => Value::U64(*v),
            Val::I32(v) => Value::I32(*v),
            Val::F32(v) => Value::F32(*v),
            Val::Bool(v) => Value::Bool(*v),
            Val::Str(s) => Value::String(s.clone()),
            Val::Strs(v) => Value::Array(ValueType::String, v.iter().cloned().map(Value::String).collect()),
            Val::Ints(v) => Value::Array(ValueType::I32, v.iter().copied().map(Value::I32).collect()),
            Val::Floats(v) => Value::Array(ValueType::F32, v.iter().copied().map(Value::F32).collect()),
            Val::Nested(v) => Value::Array(
                ValueType::Array,
                v.iter()
                    .map(|a| Value::Array(ValueType::U8, a.iter().copied().map(Value::U8).collect()))
                    .collect(),
            ),
        }
    }
}

/// A tensor of the description: name, dims, type.
struct Spec {
    name: String,
    dims: Vec<u64>,
    dtype: DType,
}

/// Bytes for `n` elements of `dtype` from the fill pattern (so scales and sparse codes vary),
/// or `None` when `n` is not a whole number of blocks.
fn tensor_bytes(dtype: DType, n: u64, fill: &[u8], salt: usize) -> Option<Vec<u8>> {
    let len = dtype.bytes_for(n)? as usize;
    if len > 1 << 20 {
        return None;
    }
    Some(if fill.is_empty() {
        vec![0; len]
    } else {
        (0..len).map(|i| fill[(i + salt) % fill.len()]).collect()
    })
}

impl ModelDesc {
    /// The GGUF writer for this description, or `None` where the writer itself refuses it.
    fn writer(&self) -> Option<GgufWriter<'static>> {
        let arch = ["llama", "gemma3", "bert", "mistral"][self.arch as usize % 4];
        let n_layer = (self.n_layer % 3) as u64;
        let n_embd = 32 * (1 + (self.embd_blocks % 4) as u64);
        let n_head = 1 + (self.n_head % 4) as u64;
        let n_kv = 1 + (self.n_kv_head % 4) as u64;
        let n_ff = 32 * (1 + (self.ff_blocks % 4) as u64);
        let n_vocab = 1 + self.n_vocab as u64;
        let wt = TYPES[self.weight_type as usize % TYPES.len()];
        let nt = [DType::F32, DType::F16, DType::BF16][self.norm_type as usize % 3];
        let mut w = GgufWriter::new();
        let key = |k: &str| k.replace("{arch}", arch);
        w.set("general.architecture", Value::String(arch.into()));
        for (k, v) in [
            ("{arch}.block_count", n_layer),
            ("{arch}.context_length", self.ctx as u64),
            ("{arch}.embedding_length", n_embd),
            ("{arch}.feed_forward_length", n_ff),
            ("{arch}.attention.head_count", n_head),
            ("{arch}.attention.head_count_kv", n_kv),
        ] {
            w.set(&key(k), Value::U32(v as u32));
        }
        w.set(&key("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
        let mut tokens: Vec<String> = self.tokens.iter().take(n_vocab as usize).cloned().collect();
        while (tokens.len() as u64) < n_vocab {
            tokens.push(format!("<t{}>", tokens.len()));
        }
        let model = ["gpt2", "llama", "bert", "none", "t5"][self.tokenizer as usize % 5];
        w.set("tokenizer.ggml.model", Value::String(model.into()));
        w.set(
            "tokenizer.ggml.pre",
            Value::String(["smollm", "default", "gpt-2", "llama3"][self.tokenizer as usize / 5 % 4].into()),
        );
        w.set(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, tokens.iter().cloned().map(Value::String).collect()),
        );
        w.set(
            "tokenizer.ggml.token_type",
            Value::Array(
                ValueType::I32,
                (0..n_vocab).map(|i| Value::I32(1 + (i % 6 == 5) as i32 * 2)).collect(),
            ),
        );
        w.set(
            "tokenizer.ggml.scores",
            Value::Array(ValueType::F32, (0..n_vocab).map(|i| Value::F32(-(i as f32))).collect()),
        );
        w.set(
            "tokenizer.ggml.merges",
            Value::Array(ValueType::String, self.merges.iter().cloned().map(Value::String).collect()),
        );
        w.set("tokenizer.ggml.bos_token_id", Value::U32(0));
        w.set("tokenizer.ggml.eos_token_id", Value::U32((n_vocab - 1) as u32));
        if let Some(t) = &self.template {
            w.set("tokenizer.chat_template", Value::String(t.clone()));
        }

        let head_dim = n_embd / n_head;
        let mut specs = vec![
            Spec { name: "token_embd.weight".into(), dims: vec![n_embd, n_vocab], dtype: wt },
            Spec { name: "output_norm.weight".into(), dims: vec![n_embd], dtype: nt },
        ];
        for l in 0..n_layer {
            let b = |r: &str| format!("blk.{l}.{r}.weight");
            for (r, dims, t) in [
                ("attn_norm", vec![n_embd], nt),
                ("attn_q", vec![n_embd, head_dim * n_head], wt),
                ("attn_k", vec![n_embd, head_dim * n_kv], wt),
                ("attn_v", vec![n_embd, head_dim * n_kv], wt),
                ("attn_output", vec![head_dim * n_head, n_embd], wt),
                ("ffn_norm", vec![n_embd], nt),
                ("ffn_gate", vec![n_embd, n_ff], wt),
                ("ffn_up", vec![n_embd, n_ff], wt),
                ("ffn_down", vec![n_ff, n_embd], wt),
            ] {
                specs.push(Spec { name: b(r), dims, dtype: t });
            }
            if arch == "gemma3" {
                for r in ["attn_q_norm", "attn_k_norm"] {
                    specs.push(Spec { name: b(r), dims: vec![head_dim], dtype: nt });
                }
                for r in ["post_attention_norm", "post_ffw_norm"] {
                    specs.push(Spec { name: b(r), dims: vec![n_embd], dtype: nt });
                }
            }
        }

        for e in &self.edits {
            match e {
                Edit::Set(k, v) => w.set(&key(KEYS[*k as usize % KEYS.len()]), v.value()),
                Edit::SetAny(k, v) => w.set(k, v.value()),
                Edit::Unset(k) => {
                    let k = key(KEYS[*k as usize % KEYS.len()]);
                    w.metadata.retain(|(name, _)| *name != k);
                }
                Edit::DropTensor(i) if !specs.is_empty() => {
                    specs.remove(*i as usize % specs.len());
                }
                Edit::Reshape(i, dims) if !specs.is_empty() => {
                    let n = specs.len();
                    specs[*i as usize % n].dims = dims.iter().take(5).map(|&d| d as u64).collect();
                }
                Edit::Retype(i, t) if !specs.is_empty() => {
                    let n = specs.len();
                    specs[*i as usize % n].dtype = TYPES[*t as usize % TYPES.len()];
                }
                Edit::AddTensor(name, role, dims, t) => {
                    let name = if role.is_multiple_of(2) {
                        GLOBALS[*name as usize % GLOBALS.len()].to_string()
                    } else {
                        format!("blk.{}.{}.weight", name % 4, ROLES[*role as usize / 2 % ROLES.len()])
                    };
                    let dims = dims.iter().take(5).map(|&d| d as u64).collect();
                    specs.push(Spec { name, dims, dtype: TYPES[*t as usize % TYPES.len()] });
                }
                _ => {}
            }
        }
        // The writer pads every tensor to the alignment: keep it small enough to write.
        if let Some((_, v)) = w.metadata.iter().find(|(k, _)| k == "general.alignment") {
            if v.as_u64().is_some_and(|a| a > 4096) {
                return None;
            }
        }
        for (i, s) in specs.iter().enumerate() {
            let n = s.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
            let data = tensor_bytes(s.dtype, n, &self.fill, i * 7)?;
            w.add_tensor(&s.name, &s.dims, s.dtype, data).ok()?;
        }
        Some(w)
    }
}

/// Structure-aware GGUF: an arbitrary [`ModelDesc`] written by [`GgufWriter`], read back
/// (it must parse: the writer only writes valid files) and loaded by every loader.
pub fn gguf_structured(data: &[u8]) {
    let Some(bytes) = structured_file(data) else { return };
    let f = GgufFile::from_vec(bytes).expect("a file the GGUF writer wrote parses");
    load_gguf(&f);
    let _ = Imatrix::from_bytes(f.bytes().to_vec(), "fuzz.gguf");
}

/// The GGUF file `gguf_structured` builds from `data` (`None` where the description does not
/// decode or the writer refuses it): to look at a failing input with `edgellm inspect`
/// (`cargo run -p edgellm-fuzzing --example structured_file -- INPUT OUT.gguf`).
pub fn structured_file(data: &[u8]) -> Option<Vec<u8>> {
    let desc = ModelDesc::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    let w = desc.writer()?;
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).ok()?;
    Some(bytes)
}

// ---------------------------------------------------------------------------------------------
// Other formats

/// Raw bytes as a safetensors file: what parses has every tensor's range inside the file.
pub fn safetensors_header(data: &[u8]) {
    let Ok(f) = SafetensorsFile::from_bytes(Bytes::from_vec(data.to_vec())) else { return };
    for t in f.tensors() {
        assert!(t.range.0 <= t.range.1 && t.range.1 <= data.len(), "tensor {} outside the file", t.name);
        assert_eq!(f.tensor_data(t).len(), t.range.1 - t.range.0);
        let _ = f.tensor_f32(&t.name);
    }
}

/// Raw bytes as a Hugging Face `config.json`, and the BERT configuration read from it.
pub fn hf_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(c) = HfConfig::parse(text) else { return };
    if let Ok(b) = BertConfig::from_hf(&c) {
        let _ = b.head_dim();
    }
}

/// Raw bytes as an importance matrix (GGUF or legacy `.dat`).
pub fn imatrix(data: &[u8]) {
    let Ok(m) = Imatrix::from_bytes(data.to_vec(), "fuzz.imatrix") else { return };
    for e in m.entries.values() {
        let _ = e.mean_squares();
    }
    if let Ok(w) = m.to_gguf() {
        let mut out = Vec::new();
        if w.write_to(&mut out).is_ok() {
            let again =
                Imatrix::from_bytes(out, "again.imatrix").expect("a written importance matrix reads back");
            assert_eq!(again.entries.len(), m.entries.len());
        }
    }
}

/// Sparse tensor data with a type, shape and companion width from the first bytes: what the
/// validator accepts must be safe for the kernels, which run over every row (in the tier in
/// use and the scalar one).
pub fn sparse_validate(data: &[u8]) {
    let [t, kb, m, cb, rest @ ..] = data else { return };
    let dtype = [DType::Q4_S24, DType::Q4_S48, DType::Q8_S24, DType::Q8_S48, DType::Q8_SB, DType::Q4_0]
        [*t as usize % 6];
    let k = 64 * (*kb as usize % 5) + (*kb as usize / 5 % 2) * 32;
    let m = *m as usize % 5;
    let c = 32 * (*cb as usize % 4) + (*cb as usize / 4 % 2) * 16;
    let (meta, values) = if dtype == DType::Q8_SB {
        let split = (dtype.bytes_for(k as u64).unwrap_or(0) as usize * m).min(rest.len());
        let (a, b) = rest.split_at(split);
        (a, Some((b, c)))
    } else {
        (rest, None)
    };
    if sparse::validate(dtype, k, m, meta, values).is_err() {
        return;
    }
    let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
    let act_type = if dtype == DType::Q8_SB { DType::Q8_0 } else { dtype };
    let mut act = vec![0u8; edgellm_core::kernels::activation_row_bytes(act_type, k)];
    edgellm_core::kernels::quantize_activations(act_type, &x, &mut act);
    let row = dtype.bytes_for(k as u64).expect("validated") as usize;
    let scalar = edgellm_core::kernels::Kernels::for_tier(edgellm_core::kernels::Tier::Scalar);
    for r in 0..m {
        let w = &meta[r * row..(r + 1) * row];
        match values {
            Some((v, c)) => {
                let v = &v[r * c..(r + 1) * c];
                let _ = edgellm_core::kernels::vec_dot_bitmap(w, v, &act, k);
                if let Some(s) = scalar {
                    let _ = s.vec_dot_bitmap(w, v, &act, k);
                }
            }
            None => {
                let _ = edgellm_core::kernels::vec_dot(dtype, w, &act, k);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizers

fn gguf_tokenizer(file: &str) -> &'static Tokenizer {
    static CACHE: OnceLock<std::sync::Mutex<Vec<(String, &'static Tokenizer)>>> = OnceLock::new();
    let mut c = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, t)) = c.iter().find(|(n, _)| n == file) {
        return t;
    }
    let path = models_dir().join(file);
    let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}: run scripts/fetch-models first"));
    let t: &'static Tokenizer =
        Box::leak(Box::new(Tokenizer::from_gguf(&f).expect("the shipped tokenizer loads")));
    c.push((file.to_string(), t));
    t
}

/// The first byte picks what to do with the rest: encode it as text (lossy UTF-8, with or
/// without BOS and special-token parsing), or decode it as token ids (4 bytes each, any value),
/// in one piece and streamed.
fn tokenizer_body(tok: &Tokenizer, data: &[u8], roundtrip: bool, strips_space: bool) {
    let [mode, rest @ ..] = data else { return };
    match mode % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let ids = tok.encode(&text, mode & 4 != 0, mode & 8 != 0);
            assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()), "encode gave an id out of range");
            // A vocabulary may lack tokens for some bytes (SmolLM2's has none for 21 byte
            // values, e.g. 0x13 and the lead bytes 0xF1, 0xF2): encode drops them, as llama.cpp
            // does. Text whose every character survives alone must survive whole.
            let alone = |c: char| {
                let s = c.to_string();
                tok.decode(&tok.encode(&s, false, false)) == s
            };
            if roundtrip && mode & 12 == 0 && text.chars().all(alone) {
                assert_eq!(tok.decode(&ids), text, "decode(encode(text)) != text");
            }
        }
        _ => {
            let ids: Vec<u32> = rest
                .chunks_exact(4)
                .map(|b| {
                    let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    // Mostly ids in the vocabulary, some past it.
                    if mode % 3 == 1 {
                        id % (tok.vocab_size() as u32 + 8)
                    } else {
                        id
                    }
                })
                .collect();
            let whole = tok.decode_with(&ids, true);
            let _ = tok.decode_with(&ids, false);
            let mut s = StreamDecoder::new();
            let mut streamed = String::new();
            for &id in &ids {
                streamed.push_str(&s.push(tok, id));
            }
            streamed.push_str(&s.flush());
            if !strips_space {
                assert_eq!(streamed, whole, "streamed detokenization differs from decode");
            }
        }
    }
}

/// SmolLM2's byte-level BPE (GGUF metadata): encode, decode, stream; decode(encode(t)) == t.
pub fn tokenizer_bpe(data: &[u8]) {
    tokenizer_body(gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf"), data, true, false);
}

/// Gemma 3's SentencePiece (GGUF metadata): encode, decode, stream.
pub fn tokenizer_spm(data: &[u8]) {
    tokenizer_body(gguf_tokenizer("gemma-3-270m-q4_k_m.gguf"), data, false, false);
}

/// MiniLM's WordPiece (`tokenizer.json` through the encoder's pipeline): encode with and
/// without `[CLS]`/`[SEP]`, decode ids in and out of range (out of range is an error value).
pub fn tokenizer_wordpiece(data: &[u8]) {
    static E: OnceLock<edgellm_runtime::embed::Embedder> = OnceLock::new();
    let e = E.get_or_init(|| {
        edgellm_runtime::embed::Embedder::load(models_dir().join("all-MiniLM-L6-v2"))
            .unwrap_or_else(|e| panic!("{e}: run scripts/fetch-models first"))
    });
    let n = e.vocab_size() as u32;
    let [mode, rest @ ..] = data else { return };
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Ok(ids) = e.tokenize_with(&text, mode & 2 != 0) {
            assert!(ids.len() <= e.max_seq_length(), "not truncated");
            assert!(ids.iter().all(|&id| id < n));
        }
    } else {
        let ids: Vec<u32> =
            rest.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) % (n + 4)).collect();
        let r = e.decode(&ids);
        assert_eq!(
            r.is_err(),
            ids.iter().any(|&i| i >= n),
            "out-of-range ids must be refused, others decoded"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Chat templates and the server

/// A real template with hostile messages, or a hostile template. The input is split at NUL
/// bytes: the first part picks the template (`0`: SmolLM2's, `1`: ChatML, `2`: Gemma's
/// built-in, anything else: the part itself is the template source), the others are messages
/// (first byte the role).
pub fn chat_template(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let head = parts.next().unwrap_or_default();
    let src: String = match head {
        b"0" => {
            static SMOL: OnceLock<String> = OnceLock::new();
            SMOL.get_or_init(|| {
                let f = GgufFile::open(models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"))
                    .unwrap_or_else(|e| panic!("{e}: run scripts/fetch-models first"));
                f.get_str("tokenizer.chat_template").expect("SmolLM2 has a template").to_string()
            })
            .clone()
        }
        b"1" => ChatTemplate::chatml().source().to_string(),
        b"2" => {
            let t = gguf_tokenizer("gemma-3-270m-q4_k_m.gguf");
            ChatTemplate::builtin_for(t).expect("the built-in template compiles").source().to_string()
        }
        other => String::from_utf8_lossy(other).into_owned(),
    };
    let Ok(t) = ChatTemplate::new(&src, "<s>", "</s>") else { return };
    let roles = ["system", "user", "assistant", "tool", ""];
    let messages: Vec<ChatMessage> = parts
        .take(64)
        .map(|p| {
            let (r, c) = p.split_first().map_or((0, &[][..]), |(r, c)| (*r, c));
            ChatMessage::new(roles[r as usize % roles.len()], String::from_utf8_lossy(c))
        })
        .collect();
    let _ = t.render(&messages, true);
    let _ = t.render(&messages, false);
}

/// A request as the server receives it (see [`edgellm_server::fuzzing::request`]).
pub fn server_request(data: &[u8]) {
    edgellm_server::fuzzing::request(data);
}
