//! The sentence-embedding pipeline of a sentence-transformers model directory: text → WordPiece
//! ids (Hugging Face `tokenizers`, from `tokenizer.json`) → BERT → pooling → L2 normalization.
//!
//! Follows sentence-transformers: `modules.json` lists the stages (Transformer, Pooling with its
//! `<path>/config.json`, optional Normalize); `sentence_bert_config.json` gives `max_seq_length`
//! (the truncation length, special tokens included) and `do_lower_case`. Texts are sorted by
//! token count and embedded in batches padded to the longest of each batch.
//!
//! A `bert` GGUF file (llama.cpp's layout, e.g. written from [`edgellm_models::bert::gguf_export`]
//! and quantized) is the other source: weights in any type, pooling and normalization from its
//! metadata, and a WordPiece tokenizer built from `tokenizer.ggml.*` (the vocabulary mapped back
//! from phantom-space form, BERT normalization and pre-tokenization, `[CLS] … [SEP]`), which
//! gives the ids `tokenizer.json` gives.

use std::io::Read;
use std::path::{Path, PathBuf};

use edgellm_formats::{GgufError, GgufFile};
use edgellm_models::bert::{Bert, BertBatch, BertEncoder, BertError, GgufPooling};
use edgellm_models::ModelError;
use serde::Deserialize;

/// An error loading an embedding model or embedding text.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory is not there.
    #[error("model {0} does not exist; pass a sentence-transformers model directory or a bert GGUF file (scripts/fetch-models fetches all-MiniLM-L6-v2)")]
    MissingModelDir(PathBuf),
    /// A file the model needs is not in its directory.
    #[error("{what} {path} is missing; the model directory needs config.json, model.safetensors and tokenizer.json (run scripts/fetch-models)")]
    MissingFile {
        /// What the file is.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A JSON configuration file is malformed.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `tokenizer.json` could not be loaded, or a text could not be tokenized.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The directory asks for a stage or pooling mode edgellm does not implement.
    #[error("unsupported sentence-transformers setup: {0}")]
    Unsupported(String),
    /// The BERT model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] BertError),
    /// A GGUF model file could not be parsed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A GGUF model's metadata does not describe a usable BERT or vocabulary.
    #[error(transparent)]
    GgufModel(#[from] ModelError),
    /// An input line is not UTF-8.
    #[error("input line {line} is not valid UTF-8")]
    InvalidUtf8 {
        /// The line, counted from 1.
        line: usize,
    },
    /// The input holds no lines.
    #[error("the input is empty: give one text per line")]
    EmptyInput,
    /// Reading the input failed.
    #[error("reading the input: {0}")]
    Input(std::io::Error),
}

/// How token states become one vector, as `1_Pooling/config.json` says. Several modes may be on:
/// their vectors are concatenated in the order cls, max, mean, mean-sqrt-len (as
/// sentence-transformers does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Pooling {
    /// The `[CLS]` (first) token's state.
    #[serde(default, rename = "pooling_mode_cls_token")]
    pub cls: bool,
    /// Element-wise maximum over the tokens.
    #[serde(default, rename = "pooling_mode_max_tokens")]
    pub max: bool,
    /// Mean over the tokens.
    #[serde(default, rename = "pooling_mode_mean_tokens")]
    pub mean: bool,
    /// Sum over the tokens divided by the square root of their number.
    #[serde(default, rename = "pooling_mode_mean_sqrt_len_tokens")]
    pub mean_sqrt_len: bool,
}

impl Pooling {
    /// Mean pooling alone (sentence-transformers' default).
    pub const MEAN: Pooling = Pooling { cls: false, max: false, mean: true, mean_sqrt_len: false };

    /// Read a sentence-transformers Pooling `config.json`, rejecting modes edgellm lacks.
    pub fn from_file(path: &Path) -> Result<Pooling, EmbedError> {
        let text = read(path)?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| EmbedError::Json { path: path.into(), source })?;
        for mode in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
            if raw.get(mode).and_then(|v| v.as_bool()) == Some(true) {
                return Err(EmbedError::Unsupported(format!("{}: {mode}", path.display())));
            }
        }
        if let Some(m) = raw.get("pooling_mode").and_then(|v| v.as_str()) {
            let p = match m {
                "mean" => Pooling::MEAN,
                "cls" => Pooling { cls: true, ..Pooling::default() },
                "max" => Pooling { max: true, ..Pooling::default() },
                "mean_sqrt_len_tokens" => Pooling { mean_sqrt_len: true, ..Pooling::default() },
                other => {
                    return Err(EmbedError::Unsupported(format!(
                        "{}: pooling_mode '{other}'",
                        path.display()
                    )))
                }
            };
            return Ok(p);
        }
        let p: Pooling =
            serde_json::from_value(raw).map_err(|source| EmbedError::Json { path: path.into(), source })?;
        if p == Pooling::default() {
            return Err(EmbedError::Unsupported(format!("{}: no pooling mode is on", path.display())));
        }
        Ok(p)
    }

    /// Number of modes on: the embedding is this many times the hidden size.
    pub fn modes(&self) -> usize {
        [self.cls, self.max, self.mean, self.mean_sqrt_len].iter().filter(|&&m| m).count()
    }

    /// Pool the states `h` (`[len × d]`, padded positions included) of one sequence whose
    /// attention mask is `mask` (`[len]`).
    pub fn apply(&self, h: &[f32], mask: &[u8], d: usize) -> Vec<f32> {
        let rows = || h.chunks_exact(d).zip(mask).filter(|(_, &m)| m != 0).map(|(r, _)| r);
        let count = mask.iter().filter(|&&m| m != 0).count();
        let mut out = Vec::with_capacity(d * self.modes());
        if self.cls {
            out.extend_from_slice(&h[..d]);
        }
        if self.max {
            let mut m = vec![f32::NEG_INFINITY; d];
            rows().for_each(|r| m.iter_mut().zip(r).for_each(|(a, &b)| *a = a.max(b)));
            // sentence-transformers fills masked positions with -1e9 before the maximum.
            m.iter_mut().filter(|v| v.is_infinite()).for_each(|v| *v = -1e9);
            out.extend_from_slice(&m);
        }
        if self.mean || self.mean_sqrt_len {
            let mut sum = vec![0.0f64; d];
            rows().for_each(|r| sum.iter_mut().zip(r).for_each(|(a, &b)| *a += b as f64));
            // sentence-transformers clamps the token count at 1e-9.
            let n = (count as f64).max(1e-9);
            if self.mean {
                out.extend(sum.iter().map(|&s| (s / n) as f32));
            }
            if self.mean_sqrt_len {
                out.extend(sum.iter().map(|&s| (s / n.sqrt()) as f32));
            }
        }
        out
    }
}

/// Scale `v` to unit L2 norm in place (as `torch.nn.functional.normalize`: the norm is clamped at
/// 1e-12, so a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

/// Read one text per line (`\n` or `\r\n` line ends; a final line end is optional), checking each
/// line is UTF-8.
pub fn read_lines(mut r: impl Read) -> Result<Vec<String>, EmbedError> {
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes).map_err(EmbedError::Input)?;
    if bytes.is_empty() {
        return Err(EmbedError::EmptyInput);
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            String::from_utf8(line.to_vec()).map_err(|_| EmbedError::InvalidUtf8 { line: i + 1 })
        })
        .collect()
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

fn read(path: &Path) -> Result<String, EmbedError> {
    std::fs::read_to_string(path).map_err(|source| EmbedError::Io { path: path.into(), source })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EmbedError> {
    serde_json::from_str(&read(path)?).map_err(|source| EmbedError::Json { path: path.into(), source })
}

fn need(dir: &Path, name: &str, what: &'static str) -> Result<PathBuf, EmbedError> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(EmbedError::MissingFile { what, path: p })
    }
}

/// Default batch size of [`Embedder::embed_batch`] (sentence-transformers' default).
pub const DEFAULT_BATCH: usize = 32;

/// A loaded sentence-embedding model: tokenizer, BERT encoder, pooling and normalization.
pub struct Embedder {
    model: Bert,
    /// Another backend running the encoder's forward (the GPU), in place of `model`'s.
    device: Option<Box<dyn BertEncoder>>,
    tokenizer: tokenizers::Tokenizer,
    pooling: Pooling,
    normalize: bool,
    lower_case: bool,
    max_seq_length: usize,
    /// The tokenizer's vocabulary size, added tokens included (the `tokenizers` crate counts it
    /// by building a map of the whole vocabulary: once, at load).
    n_vocab: usize,
}

impl Embedder {
    /// Load an embedding model: a `bert` GGUF file ([`Embedder::load_gguf`]) or a
    /// sentence-transformers directory (`config.json`, `model.safetensors`, `tokenizer.json`,
    /// and where present `modules.json`, the Pooling config and `sentence_bert_config.json`;
    /// without `modules.json`: mean pooling, no normalization).
    pub fn load(dir: impl AsRef<Path>) -> Result<Embedder, EmbedError> {
        let dir = dir.as_ref();
        if dir.is_file() {
            return Embedder::load_gguf(dir);
        }
        if !dir.is_dir() {
            return Err(EmbedError::MissingModelDir(dir.into()));
        }
        need(dir, "config.json", "model configuration")?;
        need(dir, "model.safetensors", "weight file")?;
        let tok_path = need(dir, "tokenizer.json", "tokenizer file")?;

        let (mut pooling, mut normalize) = (Pooling::MEAN, false);
        let modules_path = dir.join("modules.json");
        if modules_path.is_file() {
            let modules: Vec<Module> = read_json(&modules_path)?;
            for m in &modules {
                match m.kind.rsplit('.').next().unwrap_or("") {
                    "Transformer" if m.path.is_empty() => {}
                    "Pooling" => {
                        pooling = Pooling::from_file(&need(
                            &dir.join(&m.path),
                            "config.json",
                            "pooling configuration",
                        )?)?
                    }
                    "Normalize" => normalize = true,
                    _ => {
                        return Err(EmbedError::Unsupported(format!(
                            "{}: module {} at '{}' (edgellm runs Transformer, Pooling and Normalize)",
                            modules_path.display(),
                            m.kind,
                            m.path
                        )))
                    }
                }
            }
        }

        let model = Bert::from_dir(dir)?;
        let max_pos = model.config.max_position_embeddings;
        let st_path = dir.join("sentence_bert_config.json");
        let st: SentenceBertConfig = if st_path.is_file() {
            read_json(&st_path)?
        } else {
            SentenceBertConfig { max_seq_length: None, do_lower_case: false }
        };
        let max_seq_length = match st.max_seq_length {
            Some(n) => n,
            None => {
                // The tokenizer's model_max_length, where it is a real limit.
                let tc = dir.join("tokenizer_config.json");
                let from_tok = if tc.is_file() {
                    read_json::<serde_json::Value>(&tc)?.get("model_max_length").and_then(|v| v.as_u64())
                } else {
                    None
                };
                from_tok.map_or(max_pos, |n| (n as usize).min(max_pos))
            }
        }
        .min(max_pos);
        if max_seq_length < 2 {
            return Err(EmbedError::Unsupported(format!(
                "max_seq_length {max_seq_length} leaves no room for text"
            )));
        }

        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| EmbedError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        // tokenizer.json may carry its own truncation and padding (all-MiniLM-L6-v2's pads to
        // 128): use sentence-transformers' truncation and no padding instead.
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let n_vocab = tokenizer.get_vocab_size(true);
        Ok(Embedder {
            model,
            device: None,
            tokenizer,
            pooling,
            normalize,
            lower_case: st.do_lower_case,
            max_seq_length,
            n_vocab,
        })
    }

    /// Load a `bert` GGUF file: the encoder (weights in any type), `bert.pooling_type` (mean or
    /// cls), normalization and truncation length from its metadata (see
    /// [`GgufPooling`]), and a WordPiece tokenizer from its vocabulary.
    pub fn load_gguf(path: impl AsRef<Path>) -> Result<Embedder, EmbedError> {
        let path = path.as_ref();
        Embedder::from_gguf_file(&GgufFile::open(path)?, path)
    }

    /// [`Embedder::load_gguf`] of a file already opened (`path` names it in errors).
    pub fn from_gguf_file(f: &GgufFile, path: &Path) -> Result<Embedder, EmbedError> {
        let model = Bert::from_gguf(f)?;
        let gp = GgufPooling::from_gguf(f)?;
        let pooling = match gp.pooling_type {
            1 => Pooling::MEAN,
            2 => Pooling { cls: true, ..Pooling::default() },
            t => {
                return Err(EmbedError::Unsupported(format!(
                    "{}: bert.pooling_type {t} (edgellm pools mean (1) or cls (2))",
                    path.display()
                )))
            }
        };
        if gp.max_seq_length < 2 {
            return Err(EmbedError::Unsupported(format!(
                "max_seq_length {} leaves no room for text",
                gp.max_seq_length
            )));
        }
        let mut tokenizer = wordpiece_from_gguf(f)?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: gp.max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(Embedder {
            model,
            device: None,
            n_vocab: tokenizer.get_vocab_size(true),
            tokenizer,
            pooling,
            normalize: gp.normalize,
            lower_case: false,
            max_seq_length: gp.max_seq_length,
        })
    }

    /// The BERT encoder.
    pub fn model(&self) -> &Bert {
        &self.model
    }

    /// This embedder with its encoder's forward run by `encoder` (the same model on another
    /// backend, e.g. `edgellm_gpu::GpuBert`); tokenization and pooling stay here.
    pub fn with_encoder(mut self, encoder: Box<dyn BertEncoder>) -> Embedder {
        self.device = Some(encoder);
        self
    }

    /// Where the encoder runs: `CPU` or the GPU adapter.
    pub fn device(&self) -> String {
        self.device.as_ref().map_or_else(|| "CPU".into(), |e| e.device())
    }

    /// Length of an embedding.
    pub fn dim(&self) -> usize {
        self.model.config.hidden_size * self.pooling.modes()
    }

    /// The pooling.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether embeddings are L2-normalized.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Tokens a text is truncated to, special tokens included.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Token ids of `text` with `[CLS]`/`[SEP]`, truncated to [`Self::max_seq_length`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let lowered;
        let text = if self.lower_case {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let enc = self.tokenizer.encode(text, true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text`, with `[CLS]`/`[SEP]` (as the tokenizer's post-processor adds them)
    /// only when `add_special`; truncated to [`Self::max_seq_length`] tokens.
    pub fn tokenize_with(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EmbedError> {
        if add_special {
            return self.tokenize(text);
        }
        let lowered;
        let text = if self.lower_case {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let enc = self.tokenizer.encode(text, false).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Number of tokens in the tokenizer's vocabulary (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.n_vocab
    }

    /// Token ids back to text, special tokens included (WordPiece joins `##` continuations).
    /// Ids must be below [`Self::vocab_size`]; an id out of range is a
    /// [`EmbedError::Tokenizer`] error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, EmbedError> {
        let n = self.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= n) {
            return Err(EmbedError::Tokenizer(format!(
                "token id {bad} is out of range: the vocabulary has {n} tokens"
            )));
        }
        self.tokenizer.decode(ids, false).map_err(|e| EmbedError::Tokenizer(e.to_string()))
    }

    /// The embedding of one text.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let ids = self.tokenize(text)?;
        Ok(self.embed_ids(&[&ids])?.remove(0))
    }

    /// Embeddings of `texts`, in their order: sorted by token count into batches of
    /// `batch_size` (0: [`DEFAULT_BATCH`]), each padded to its longest sequence.
    pub fn embed_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let batch_size = if batch_size == 0 { DEFAULT_BATCH } else { batch_size };
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t.as_ref())).collect::<Result<_, _>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(batch_size) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, e) in chunk.iter().zip(self.embed_ids(&seqs)?) {
                out[i] = e;
            }
        }
        Ok(out)
    }

    /// Embeddings of token sequences run as one batch padded to the longest.
    pub fn embed_ids(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if let Some(enc) = &self.device {
            // Unpadded sequences, each pooled over its own rows.
            let d = self.model.config.hidden_size;
            let h = enc.forward_sequences(seqs)?;
            let mut t = 0;
            return Ok(seqs
                .iter()
                .map(|s| {
                    let rows = &h[t * d..(t + s.len()) * d];
                    t += s.len();
                    let mut e = self.pooling.apply(rows, &vec![1u8; s.len()], d);
                    if self.normalize {
                        l2_normalize(&mut e);
                    }
                    e
                })
                .collect());
        }
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let (b, d) = (seqs.len(), self.model.config.hidden_size);
        let pad = self.model.config.pad_token_id;
        let mut input_ids = vec![pad; b * len]; // [b × len]
        let mut attention_mask = vec![0u8; b * len]; // [b × len]
        for (s, q) in seqs.iter().enumerate() {
            input_ids[s * len..s * len + q.len()].copy_from_slice(q);
            attention_mask[s * len..s * len + q.len()].fill(1);
        }
        let batch = BertBatch {
            input_ids: &input_ids,
            attention_mask: &attention_mask,
            token_type_ids: None,
            batch: b,
            seq_len: len,
        };
        let h = self.model.forward(&batch)?; // [b × len × d]
        Ok((0..b)
            .map(|s| {
                let mut e = self.pooling.apply(
                    &h[s * len * d..(s + 1) * len * d],
                    &attention_mask[s * len..(s + 1) * len],
                    d,
                );
                if self.normalize {
                    l2_normalize(&mut e);
                }
                e
            })
            .collect())
    }
}

/// The WordPiece tokenizer a `bert` GGUF vocabulary describes, as Hugging Face `tokenizers`
/// components: BERT normalizer (clean text, CJK spacing, `tokenizer.ggml.normalizer.lowercase`,
/// accents stripped per `...strip_accents` or, when absent, with lowercasing, as
/// `BertNormalizer` does), BERT pre-tokenizer, WordPiece with `##` continuations and the unknown
/// token, and `[CLS] $A [SEP]` where `add_bos_token` / `add_eos_token` (or llama.cpp's defaults
/// for `bert`: both) say so.
pub fn wordpiece_from_gguf(f: &GgufFile) -> Result<tokenizers::Tokenizer, EmbedError> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::AddedToken;

    let tok_err = |e: tokenizers::Error| EmbedError::Tokenizer(e.to_string());
    let (vocab, control) = edgellm_models::bert::gguf::wordpiece_vocab(f)?;
    let mut by_id = vec![String::new(); vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0)];
    for (t, &i) in &vocab {
        by_id[i as usize] = t.clone();
    }
    let opt_id = |k: &str| -> Result<Option<u32>, EmbedError> {
        match f.get(k) {
            None => Ok(None),
            Some(_) => Ok(Some(f.get_u64(k)? as u32)),
        }
    };
    let name = |id: Option<u32>, default: &str| -> String {
        id.and_then(|i| by_id.get(i as usize))
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| default.into())
    };
    let opt_bool = |k: &str| -> Result<Option<bool>, EmbedError> {
        match f.get(k) {
            None => Ok(None),
            Some(_) => Ok(Some(f.get_bool(k)?)),
        }
    };
    let unk = name(opt_id("tokenizer.ggml.unknown_token_id")?, "[UNK]");
    let cls = name(opt_id("tokenizer.ggml.bos_token_id")?, "[CLS]");
    let sep = name(
        opt_id("tokenizer.ggml.eos_token_id")?.or(opt_id("tokenizer.ggml.seperator_token_id")?),
        "[SEP]",
    );
    // WordPiece's vocabulary type comes from its own reader: one token per line, id = line.
    let mut lines = String::new();
    for t in &by_id {
        if t.contains('\n') || t.trim_end() != t {
            return Err(EmbedError::Tokenizer(format!(
                "token {t:?} cannot be represented in a WordPiece vocabulary"
            )));
        }
        lines.push_str(t);
        lines.push('\n');
    }
    let wp_vocab = WordPiece::read_bytes(lines.as_bytes()).map_err(tok_err)?;
    let model = WordPiece::builder()
        .vocab(wp_vocab)
        .unk_token(unk)
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(tok_err)?;
    let mut tok = tokenizers::Tokenizer::new(model);
    let lowercase = opt_bool("tokenizer.ggml.normalizer.lowercase")?.unwrap_or(true);
    let strip_accents = opt_bool("tokenizer.ggml.normalizer.strip_accents")?;
    tok.with_normalizer(Some(BertNormalizer::new(true, true, strip_accents, lowercase)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    // A control token whose text repeats an earlier token's has no line of its own (the map
    // keeps the first id): it can be past the end of `by_id`. Such a token is not added.
    let specials: Vec<AddedToken> = control
        .iter()
        .filter_map(|&i| by_id.get(i as usize).filter(|t| vocab.get(t.as_str()) == Some(&i)))
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    tok.add_special_tokens(&specials);
    let add_bos = opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(true);
    let add_eos = opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(true);
    let id_of = |t: &str| {
        vocab
            .get(t)
            .copied()
            .ok_or_else(|| EmbedError::Tokenizer(format!("special token {t} is not in the vocabulary")))
    };
    let mut single = Vec::new();
    let mut special_tokens = Vec::new();
    if add_bos {
        single.push(cls.clone());
        special_tokens.push((cls.clone(), id_of(&cls)?));
    }
    single.push("$A".to_string());
    if add_eos {
        single.push(sep.clone());
        if sep != cls || !add_bos {
            special_tokens.push((sep.clone(), id_of(&sep)?));
        }
    }
    let post = TemplateProcessing::builder()
        .try_single(single)
        .map_err(|e| EmbedError::Tokenizer(e.to_string()))?
        .special_tokens(special_tokens)
        .build()
        .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
    tok.with_post_processor(Some(post));
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (tests/corpus/gguf_structured/wordpiece-duplicate-control-token): a
    /// control token repeating an earlier token's text indexed past the vocabulary.
    #[test]
    fn wordpiece_with_a_duplicate_control_token_builds() {
        use edgellm_formats::{GgufWriter, Value, ValueType};
        let mut w = GgufWriter::new();
        w.set("tokenizer.ggml.model", Value::String("bert".into()));
        let toks = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "\u{2581}a", "[PAD]"];
        w.set(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, toks.iter().map(|t| Value::String(t.to_string())).collect()),
        );
        let types = [3, 3, 3, 3, 1, 3];
        w.set(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.iter().map(|&t| Value::I32(t)).collect()),
        );
        let mut b = Vec::new();
        w.write_to(&mut b).unwrap();
        let f = GgufFile::from_vec(b).unwrap();
        let tok = wordpiece_from_gguf(&f).unwrap();
        let ids = tok.encode("a", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![4]);
    }

    #[test]
    fn lines_are_split_and_checked() {
        assert_eq!(read_lines(&b"a\nb\r\n\nc"[..]).unwrap(), ["a", "b", "", "c"]);
        assert_eq!(read_lines(&b"a\n"[..]).unwrap(), ["a"]);
        assert_eq!(read_lines(&b"\n"[..]).unwrap(), [""]);
        assert!(matches!(read_lines(&b""[..]), Err(EmbedError::EmptyInput)));
        let e = read_lines(&b"ok\nok\n\xff\xfe\n"[..]).unwrap_err();
        assert!(matches!(e, EmbedError::InvalidUtf8 { line: 3 }), "{e}");
        assert_eq!(e.to_string(), "input line 3 is not valid UTF-8");
    }

    #[test]
    fn pooling_modes() {
        let h = [1.0, 2.0, 3.0, 6.0, 100.0, 100.0]; // 3 tokens × 2, the last one padding
        let mask = [1, 1, 0];
        assert_eq!(Pooling::MEAN.apply(&h, &mask, 2), [2.0, 4.0]);
        assert_eq!(Pooling { cls: true, ..Pooling::default() }.apply(&h, &mask, 2), [1.0, 2.0]);
        assert_eq!(Pooling { max: true, ..Pooling::default() }.apply(&h, &mask, 2), [3.0, 6.0]);
        let all = Pooling { cls: true, max: true, mean: true, mean_sqrt_len: true };
        assert_eq!(all.apply(&h, &mask, 2).len(), 8);
        assert_eq!(all.modes(), 4);
    }

    #[test]
    fn normalize_and_cosine() {
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0, 0.0]);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
