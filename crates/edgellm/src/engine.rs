//! [`Engine`]: a loaded model, whatever its file format and architecture.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use edgellm_formats::mmap::{special_file, SpecialFile};
use edgellm_formats::{GgufFile, HfConfig};
use edgellm_models::bert::{BertConfig, BertEncoder, BertError};
use edgellm_models::intent::{has_intent_head, IntentHead};
use edgellm_models::{Device, KvType, LoadOptions, ModelError, Precision};
use edgellm_runtime::embed::{EmbedError, Embedder, DEFAULT_BATCH};
use edgellm_runtime::{LoadedModel, RuntimeError};
use edgellm_text::{ChatMessage, ChatTemplate};

use crate::constraint::Grammars;
use crate::error::{Error, Result};

/// How to load a model.
///
/// The default is what `edgellm run` does without flags: the training context capped at 4096
/// positions, the fast 8-bit-activation kernels, an F16 KV cache, and the thread count left as
/// it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Context size of generation sessions in positions (0 = the model's training context,
    /// capped at 4096). Memory for it is checked at load. Ignored by encoders, which take
    /// their `max_seq_length`.
    pub n_ctx: usize,
    /// Worker threads of the kernels: `None` leaves the setting as it is, `Some(0)` uses every
    /// core. The thread pool is shared by the whole process, so this is a process-wide setting
    /// (results do not depend on it).
    pub threads: Option<usize>,
    /// Exact f32 activations instead of the 8-bit-activation kernels (slower; for checking
    /// against references).
    pub exact: bool,
    /// Element type of the KV cache; `None` = F16, or F32 with [`EngineOptions::exact`].
    pub cache_type: Option<KvType>,
    /// Generation sessions that will hold a KV cache at once (a [`crate::Batcher`]'s
    /// `parallel`; 0 or 1: one). Memory for all their caches is checked before the model is
    /// built.
    pub slots: usize,
    /// Where the model runs: the CPU (default), the GPU (an error when there is no adapter
    /// or the GPU path cannot run the model), or `Auto` (the GPU where it can, else the CPU;
    /// [`EngineInfo::device_note`] says why).
    pub device: Device,
}

impl EngineOptions {
    /// The model-loading options these give.
    pub fn load_options(&self) -> LoadOptions {
        let precision = if self.exact { Precision::Exact } else { Precision::Fast };
        LoadOptions { precision, kv_type: self.cache_type, device: self.device }
    }
}

/// Parse a KV cache type name: `f16`, `q8_0` or `f32` (any case).
///
/// ```
/// assert_eq!(edgellm::parse_cache_type("Q8_0").unwrap(), edgellm::KvType::Q8_0);
/// assert!(edgellm::parse_cache_type("q4").is_err());
/// ```
pub fn parse_cache_type(s: &str) -> Result<KvType> {
    KvType::parse(s).ok_or_else(|| Error::UnknownCacheType(s.to_string()))
}

/// What a model does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A causal language model: [`Engine::generate`], [`Engine::chat`].
    Decoder,
    /// A sentence encoder: [`Engine::embed`].
    Encoder,
}

/// A label of an intent model with its probability, from [`Engine::classify`].
#[derive(Clone, Debug, PartialEq)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Its probability.
    pub score: f32,
}

/// Where a decoder's chat template comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// The model file's own (`tokenizer.chat_template`).
    File,
    /// The file has none: a built-in one chosen from the vocabulary (Gemma turns or ChatML).
    Builtin,
    /// An encoder: no chat.
    None,
}

/// Facts about a loaded model.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineInfo {
    /// The file or directory loaded.
    pub path: PathBuf,
    /// Decoder or encoder.
    pub kind: ModelKind,
    /// Architecture: `llama`, `gemma3` or `bert`.
    pub architecture: String,
    /// Model name (`general.name`, or the directory's name), where known.
    pub name: Option<String>,
    /// Number of parameters (elements of the weight tensors; an encoder's pooler excluded).
    pub n_params: u64,
    /// Context size: the positions a session holds (decoder), or the tokens a text is
    /// truncated to (encoder, `max_seq_length`).
    pub n_ctx: usize,
    /// The longest context the model was trained for.
    pub n_ctx_train: usize,
    /// Tokens in the tokenizer's vocabulary (ids `0..n_vocab` are valid).
    pub n_vocab: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Length of an embedding (encoders).
    pub embedding_dim: Option<usize>,
    /// The labels of an intent model (an encoder with an intent head), in its order.
    pub labels: Option<Vec<String>>,
    /// Size of the weight file on disk in bytes (`model.safetensors` for a directory).
    pub file_bytes: u64,
    /// Bytes of weight data in memory.
    pub weight_bytes: u64,
    /// The SIMD kernel tier in use (`scalar`, `avx2`, `avx512`, `neon`, ...).
    pub kernel_tier: &'static str,
    /// KV cache element type (decoders).
    pub kv_type: Option<KvType>,
    /// Where the chat template comes from.
    pub chat_template: TemplateSource,
    /// Milliseconds the load took.
    pub load_ms: f64,
    /// Where the model runs: `CPU`, or the GPU adapter (name, back end, driver, type).
    pub device: String,
    /// Why `Device::Auto` chose the CPU, when it did.
    pub device_note: Option<String>,
}

/// A decoder with the chat template it uses.
pub(crate) struct Decoder {
    /// The model (its `chat_template` moved into `template`).
    pub(crate) lm: LoadedModel,
    /// The file's template, or the built-in one for its vocabulary.
    pub(crate) template: ChatTemplate,
    /// Constrained decoding over `lm.tokenizer`'s vocabulary (built on first use), registered
    /// by the tokenizer's address: the decoder stays in its box.
    pub(crate) grammars: Arc<Grammars>,
}

impl Decoder {
    /// See [`Engine::chat_prompt`].
    pub(crate) fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let rendered = self.template.render(messages, true)?;
        let tok = &self.lm.tokenizer;
        let bos = tok.add_bos_default()
            && !tok.bos_id().and_then(|b| tok.token_str(b)).is_some_and(|s| rendered.starts_with(s));
        Ok(tok.encode(&rendered, bos, true))
    }
}

pub(crate) enum Model {
    Decoder(Box<Decoder>),
    /// A sentence encoder, with its intent head where the file has one.
    Encoder(Box<Embedder>, Option<Box<IntentHead>>),
}

/// A loaded model: a text generator (llama, gemma3) or a sentence encoder (bert), from a GGUF
/// file or a sentence-transformers directory, with its tokenizer and chat template.
///
/// `Engine` is `Send + Sync`: load it once and share it (e.g. in an `Arc`) between threads.
/// Each generation runs in a [`Session`](crate::Session), which owns a KV cache and is used by
/// one thread at a time; [`Engine::generate`] and [`Engine::chat`] open a fresh session per
/// call (a KV cache of [`EngineInfo::n_ctx`] positions each time), [`Engine::session`] gives
/// one to keep (a conversation reuses its cached prefix).
pub struct Engine {
    pub(crate) model: Model,
    info: EngineInfo,
}

// A server holds one engine per model and runs sessions on its own threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Engine>();
};

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Engine {
    /// Load a model: a GGUF file (`llama` or `gemma3` for generation, `bert` for embeddings),
    /// or a Hugging Face / sentence-transformers directory of a `bert` encoder (`config.json`,
    /// `model.safetensors`, `tokenizer.json`, and where present `modules.json`, the pooling
    /// config and `sentence_bert_config.json`).
    ///
    /// The architecture comes from the file's metadata (`general.architecture`) or the
    /// directory's `config.json` (`model_type`); the tokenizer from the GGUF metadata or
    /// `tokenizer.json`; the chat template from `tokenizer.chat_template`, or a built-in one
    /// for the vocabulary (see [`EngineInfo::chat_template`]).
    ///
    /// Errors: [`RuntimeError::MissingFile`] when nothing is at `path`;
    /// [`Error::NotAModel`] for a pipe, a device or a socket;
    /// [`Error::UnknownFormat`] for a file that is not GGUF; [`Error::MissingConfig`] for a
    /// directory without `config.json`; [`Error::UnsupportedArchitecture`];
    /// [`Error::DecoderDirectoryUnsupported`] for llama / gemma3 safetensors directories (not
    /// supported yet); [`RuntimeError::OutOfMemory`] when the model and its context would not
    /// fit; and the format's own errors for a corrupt file.
    pub fn load(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        let path = path.as_ref();
        let t0 = Instant::now();
        if let Some(n) = options.threads {
            edgellm_core::parallel::set_num_threads(n);
        }
        if !path.exists() {
            return Err(RuntimeError::MissingFile(path.to_path_buf()).into());
        }
        let mut engine = match special_file(path) {
            None => load_file(path, &options)?,
            Some(SpecialFile::Directory) => load_dir(path, &options)?,
            // Checked before opening: opening a FIFO would block until something writes to it.
            Some(kind) => return Err(Error::NotAModel { path: path.to_path_buf(), kind }),
        };
        engine.info.load_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(engine)
    }

    /// Facts about the model.
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Text to token ids. With `add_special`, the special tokens the model adds to an input:
    /// BOS where a decoder's metadata asks for it (as [`Engine::generate`] tokenizes a prompt),
    /// `[CLS] … [SEP]` for an encoder. Special tokens written in the text (`<|im_start|>`) are
    /// tokenized as plain text; see [`Engine::tokenize_with`].
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match &self.model {
            Model::Decoder(d) => {
                let tok = &d.lm.tokenizer;
                Ok(tok.encode(text, add_special && tok.add_bos_default(), false))
            }
            Model::Encoder(e, _) => Ok(e.tokenize_with(text, add_special)?),
        }
    }

    /// Text to token ids with full control: `add_bos` puts the BOS token first whatever the
    /// metadata says (for an encoder: adds `[CLS] … [SEP]`); with `parse_special`, control
    /// tokens written in the text become their ids (an encoder's tokenizer always matches its
    /// special tokens). An encoder truncates to its `max_seq_length`.
    pub fn tokenize_with(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        match &self.model {
            Model::Decoder(d) => Ok(d.lm.tokenizer.encode(text, add_bos, parse_special)),
            Model::Encoder(e, _) => Ok(e.tokenize_with(text, add_bos)?),
        }
    }

    /// Token ids to text; control tokens appear as their text. An id outside the vocabulary is
    /// [`Error::TokenOutOfRange`].
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        let vocab_size = self.info.n_vocab;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(Error::TokenOutOfRange { id, vocab_size });
        }
        match &self.model {
            Model::Decoder(d) => Ok(d.lm.tokenizer.decode_with(ids, true)),
            Model::Encoder(e, _) => Ok(e.decode(ids)?),
        }
    }

    /// The bytes of token `id` as generation renders them (a control token gives its name), e.g.
    /// for the alternatives of [`TokenLogprob::top`](crate::TokenLogprob). An id outside the
    /// vocabulary is [`Error::TokenOutOfRange`]; [`Error::NotADecoder`] for an encoder.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        let tok = &self.decoder("give token bytes")?.lm.tokenizer;
        if id as usize >= tok.vocab_size() {
            return Err(Error::TokenOutOfRange { id, vocab_size: tok.vocab_size() });
        }
        Ok(tok.piece(id).to_vec())
    }

    /// Sentence embeddings of `texts`, in their order, in batches of
    /// [`DEFAULT_BATCH`](edgellm_runtime::embed::DEFAULT_BATCH) (texts sorted by length, each
    /// batch padded to its longest). [`Error::NotAnEncoder`] for a text generator.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        self.embed_batched(texts, DEFAULT_BATCH)
    }

    /// [`Engine::embed`] with `batch_size` texts per forward pass (0 = the default).
    pub fn embed_batched<S: AsRef<str>>(&self, texts: &[S], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        match &self.model {
            Model::Encoder(e, _) => Ok(e.embed_batch(texts, batch_size)?),
            Model::Decoder(_) => Err(Error::NotAnEncoder { arch: self.info.architecture.clone() }),
        }
    }

    /// The intents of `texts`, in their order: for each, the `top_k` most probable labels
    /// (0: all), most probable first, with their probabilities (softmax of the intent head's
    /// logits). Texts are embedded in batches of [`DEFAULT_BATCH`]; a batch gives each text
    /// what it gets alone, up to float rounding of the padded batch. [`Error::NotAClassifier`]
    /// for an encoder without an intent head, [`Error::NotAnEncoder`] for a text generator.
    pub fn classify<S: AsRef<str>>(&self, texts: &[S], top_k: usize) -> Result<Vec<Vec<LabelScore>>> {
        let (e, head) = match &self.model {
            Model::Encoder(e, Some(head)) => (e, head),
            Model::Encoder(_, None) => return Err(Error::NotAClassifier { path: self.info.path.clone() }),
            Model::Decoder(_) => return Err(Error::NotAnEncoder { arch: self.info.architecture.clone() }),
        };
        let k = if top_k == 0 { head.n_labels() } else { top_k.min(head.n_labels()) };
        Ok(e.embed_batch(texts, DEFAULT_BATCH)?
            .iter()
            .map(|emb| {
                let scores = edgellm_runtime::intent::IntentScores { probs: head.probabilities(emb) };
                scores
                    .top(k)
                    .into_iter()
                    .map(|s| LabelScore { label: head.labels[s.index].clone(), score: s.score })
                    .collect()
            })
            .collect())
    }

    /// Render a conversation with the model's chat template. With `add_generation_prompt` the
    /// text ends with the opening of the assistant's turn. The text holds special tokens as
    /// text (e.g. `<|im_start|>`).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        Ok(self.decoder("apply a chat template")?.template.render(messages, add_generation_prompt)?)
    }

    /// The prompt ids [`Engine::chat`] runs: the conversation rendered with the chat template
    /// (with the generation prompt), special tokens parsed, BOS added where the model asks for
    /// it and the template did not write it.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.decoder("chat")?.chat_prompt(messages)
    }

    /// The decoder, or [`Error::NotADecoder`] naming what was asked.
    pub(crate) fn decoder(&self, what: &'static str) -> Result<&Decoder> {
        match &self.model {
            Model::Decoder(d) => Ok(d),
            Model::Encoder(..) => Err(Error::NotADecoder { arch: self.info.architecture.clone(), what }),
        }
    }
}

/// First bytes of a file, to tell GGUF from anything else.
fn magic(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut head = Vec::with_capacity(4);
    std::fs::File::open(path).map_err(io)?.take(4).read_to_end(&mut head).map_err(io)?;
    Ok(head)
}

fn load_file(path: &Path, options: &EngineOptions) -> Result<Engine> {
    let head = magic(path)?;
    if head != b"GGUF" {
        return Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            magic: String::from_utf8_lossy(&head).into_owned(),
        });
    }
    // A first look at the metadata (the file is mapped, not read); each loader opens it again.
    let (arch, name, file_bytes) = {
        let f = GgufFile::open(path)?;
        let name = f.get("general.name").and_then(|v| v.as_str()).map(str::to_string);
        (f.architecture()?.to_string(), name, f.file_len())
    };
    match arch.as_str() {
        "llama" | "gemma3" => load_decoder(path, options),
        "bert" => {
            let f = GgufFile::open(path)?;
            let embedder = Embedder::from_gguf_file(&f, path)?;
            let head = if has_intent_head(&f) {
                Some(IntentHead::from_gguf(&f, embedder.dim()).map_err(EmbedError::from)?)
            } else {
                None
            };
            encoder(path, embedder, head, name, file_bytes, options)
        }
        _ => Err(Error::UnsupportedArchitecture { path: path.to_path_buf(), arch }),
    }
}

fn load_decoder(path: &Path, options: &EngineOptions) -> Result<Engine> {
    let load = options.load_options();
    let mut lm = LoadedModel::load_for(path, options.n_ctx, options.slots, &load)?;
    let (template, source) = match lm.chat_template.take() {
        Some(t) => (t, TemplateSource::File),
        None => {
            (ChatTemplate::builtin_for(&lm.tokenizer).map_err(RuntimeError::from)?, TemplateSource::Builtin)
        }
    };
    let mi = lm.model.info();
    let info = EngineInfo {
        path: path.to_path_buf(),
        kind: ModelKind::Decoder,
        architecture: mi.arch.clone(),
        name: mi.name.clone(),
        n_params: mi.n_params,
        n_ctx: lm.n_ctx,
        n_ctx_train: mi.n_ctx_train,
        n_vocab: lm.tokenizer.vocab_size(),
        n_layer: mi.n_layer,
        n_embd: mi.n_embd,
        embedding_dim: None,
        labels: None,
        file_bytes: lm.gguf.file_len(),
        weight_bytes: mi.weight_bytes,
        kernel_tier: edgellm_core::kernels::tier_name(),
        kv_type: Some(load.kv_type()),
        chat_template: source,
        load_ms: 0.0,
        device: lm.device.clone(),
        device_note: lm.device_note.clone(),
    };
    let mut dec = Box::new(Decoder { lm, template, grammars: Grammars::detached() });
    dec.grammars = Grammars::register(&dec.lm.tokenizer);
    Ok(Engine { model: Model::Decoder(dec), info })
}

/// Architectures whose Hugging Face directories hold decoders edgellm runs from GGUF only.
const DECODER_MODEL_TYPES: &[&str] = &["llama", "gemma3", "gemma3_text", "gemma", "gemma2", "mistral"];

fn load_dir(dir: &Path, options: &EngineOptions) -> Result<Engine> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(Error::MissingConfig { dir: dir.to_path_buf() });
    }
    let config = HfConfig::open(&config_path)?;
    let arch = match config.model_type.as_deref() {
        Some(t) => t.to_string(),
        // No model_type: a BERT by its class name (or by default, as the BERT loader assumes).
        None => match config.architectures.first() {
            Some(a) if !a.contains("Bert") => a.clone(),
            _ => "bert".to_string(),
        },
    };
    if DECODER_MODEL_TYPES.contains(&arch.as_str()) {
        return Err(Error::DecoderDirectoryUnsupported { dir: dir.to_path_buf(), arch });
    }
    if arch != "bert" {
        return Err(Error::UnsupportedArchitecture { path: dir.to_path_buf(), arch });
    }
    let embedder = Embedder::load(dir)?;
    let file_bytes = std::fs::metadata(dir.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    encoder(dir, embedder, None, name, file_bytes, options)
}

/// The embedder `e` (loaded from `path`) with its encoder's forward on `device`: unchanged
/// for the CPU; on the GPU with the weights uploaded from `path` (an error naming why under
/// [`Device::Gpu`] when that fails; under [`Device::Auto`] the CPU and the reason). What
/// [`Engine::load`] does for encoders, for callers holding an
/// [`Embedder`](edgellm_runtime::embed::Embedder) directly (`edgellm eval sts`).
pub fn embedder_on(e: Embedder, path: &Path, device: Device) -> Result<(Embedder, Option<String>)> {
    let (encoder, note) = edgellm_runtime::gpu_part(device, || {
        let gpu = edgellm_gpu::shared().map_err(|e| ModelError::Device(e.to_string()))?;
        // The CPU has loaded the same files: what fails here is the device's.
        let enc = edgellm_gpu::load_bert(gpu, path).map_err(|e| match e {
            BertError::Model(m @ ModelError::Device(_)) => m,
            other => ModelError::Device(other.to_string()),
        })?;
        Ok(Box::new(enc) as Box<dyn BertEncoder>)
    })
    .map_err(RuntimeError::Model)?;
    Ok(match encoder {
        Some(enc) => (e.with_encoder(enc), None),
        None => (e, note),
    })
}

/// Parameters of a BERT encoder (embeddings, layers; no pooler).
fn bert_params(c: &BertConfig) -> u64 {
    let (d, ff) = (c.hidden_size as u64, c.intermediate_size as u64);
    let emb = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) as u64 * d + 2 * d;
    // Q, K, V, output (weights + biases), two LayerNorms, the feed-forward pair.
    let layer = 4 * (d * d + d) + 2 * 2 * d + (d * ff + ff) + (ff * d + d);
    emb + c.num_hidden_layers as u64 * layer
}

fn encoder(
    path: &Path,
    e: Embedder,
    head: Option<IntentHead>,
    name: Option<String>,
    file_bytes: u64,
    options: &EngineOptions,
) -> Result<Engine> {
    let (e, device_note) = embedder_on(e, path, options.device)?;
    let c = &e.model().config;
    let info = EngineInfo {
        path: path.to_path_buf(),
        kind: ModelKind::Encoder,
        architecture: "bert".to_string(),
        name,
        n_params: bert_params(c),
        n_ctx: e.max_seq_length(),
        n_ctx_train: c.max_position_embeddings,
        n_vocab: e.vocab_size(),
        n_layer: c.num_hidden_layers,
        n_embd: c.hidden_size,
        embedding_dim: Some(e.dim()),
        labels: head.as_ref().map(|h| h.labels.clone()),
        file_bytes,
        weight_bytes: e.model().weight_bytes(),
        kernel_tier: edgellm_core::kernels::tier_name(),
        kv_type: None,
        chat_template: TemplateSource::None,
        load_ms: 0.0,
        device: e.device(),
        device_note,
    };
    Ok(Engine { model: Model::Encoder(Box::new(e), head.map(Box::new)), info })
}
