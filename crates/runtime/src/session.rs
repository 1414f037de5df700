//! Loading a model with its tokenizer, and the prefill/decode loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use edgellm_formats::{GgufError, GgufFile};
use edgellm_models::{Device, KvCache, LanguageModel, LoadOptions, ModelError};
use edgellm_text::{ChatTemplate, ChatTemplateError, StreamDecoder, Tokenizer, TokenizerError};

use crate::memory::{human_bytes, memory_limit, BadLimit, MemoryLimit};
use crate::sampler::Sampler;

/// An error of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model file is not there.
    #[error("model file {0} does not exist")]
    MissingFile(PathBuf),
    /// The file could not be parsed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The model could not be built or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template is malformed.
    #[error(transparent)]
    ChatTemplate(#[from] ChatTemplateError),
    /// The model and its context would not fit in memory.
    #[error("not enough memory: {} is needed ({} of weights + {} of KV cache for {} + {} of buffers) but {} is available (from {from}); {hint}", human_bytes(*needed), human_bytes(*weights), human_bytes(*kv), positions(*caches, *n_ctx), human_bytes(*scratch), human_bytes(*available))]
    OutOfMemory {
        /// Bytes needed in all.
        needed: u64,
        /// Weight bytes (the file's, or the in-memory copies where larger; with activation
        /// sparsity's column-blocked copies).
        weights: u64,
        /// KV cache bytes (of every slot that needs one).
        kv: u64,
        /// Working buffers.
        scratch: u64,
        /// Context positions asked for.
        n_ctx: usize,
        /// KV caches of `n_ctx` positions counted in `kv` (a server's slots).
        caches: usize,
        /// Bytes available.
        available: u64,
        /// Where the available figure comes from (`MemAvailable`, a cgroup limit,
        /// `EDGELLM_MEMORY_LIMIT`).
        from: String,
        /// What to do: the largest context that fits, fewer slots, a smaller type.
        hint: String,
    },
    /// `EDGELLM_MEMORY_LIMIT` is not a size.
    #[error(transparent)]
    BadMemoryLimit(#[from] BadLimit),
    /// The prompt does not fit in the context.
    #[error("the prompt is {n_prompt} tokens long but the context holds {n_ctx}; shorten the prompt or raise the context size (-c, at most {n_ctx_train} for this model)")]
    PromptTooLong {
        /// Prompt tokens.
        n_prompt: usize,
        /// Context size.
        n_ctx: usize,
        /// Training context of the model.
        n_ctx_train: usize,
    },
    /// A token was to be run with every position of the context already filled.
    #[error("the context of {n_ctx} positions is full: start a new session or raise the context size (-c)")]
    ContextFull {
        /// Context size.
        n_ctx: usize,
    },
    /// An empty prompt where the model needs at least one token.
    #[error("the prompt is empty and the model adds no BOS token: give at least one token of prompt")]
    EmptyPrompt,
}

/// A model ready to run: weights, tokenizer and chat template.
pub struct LoadedModel {
    /// The GGUF file (its map holds the weights).
    pub gguf: GgufFile,
    /// The network.
    pub model: Box<dyn LanguageModel>,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The model's chat template, if it has one.
    pub chat_template: Option<ChatTemplate>,
    /// Time to load, in milliseconds.
    pub load_ms: f64,
    /// Context size sessions get.
    pub n_ctx: usize,
    /// Where the model runs: `CPU`, or the GPU adapter (name, back end, driver).
    pub device: String,
    /// Why `--device auto` chose the CPU (no adapter, or a model the GPU path cannot run).
    pub device_note: Option<String>,
}

impl LoadedModel {
    /// Load a GGUF model for a context of `n_ctx` positions (0 = the training context,
    /// capped at 4096), refusing with the numbers if it would not fit in available memory.
    pub fn load(path: impl AsRef<Path>, n_ctx: usize) -> Result<LoadedModel, RuntimeError> {
        LoadedModel::load_with(path, n_ctx, &LoadOptions::default())
    }

    /// [`LoadedModel::load`] with model options (e.g. exact f32 activations).
    pub fn load_with(
        path: impl AsRef<Path>,
        n_ctx: usize,
        opts: &LoadOptions,
    ) -> Result<LoadedModel, RuntimeError> {
        LoadedModel::load_for(path, n_ctx, 1, opts)
    }

    /// [`LoadedModel::load_with`] for a caller that will hold `caches` KV caches of `n_ctx`
    /// positions at once (a server's slots): memory for all of them is checked before the
    /// model is built.
    pub fn load_for(
        path: impl AsRef<Path>,
        n_ctx: usize,
        caches: usize,
        opts: &LoadOptions,
    ) -> Result<LoadedModel, RuntimeError> {
        let caches = caches.max(1) as u64;
        let path = path.as_ref();
        let t0 = Instant::now();
        if !path.exists() {
            return Err(RuntimeError::MissingFile(path.to_path_buf()));
        }
        let gguf = GgufFile::open(path)?;
        let limit = memory_limit()?;
        // Before building the model: the file (mapped pages become resident as they are read;
        // packing copies rows while releasing their pages, so weights stay about the file's
        // size, plus what a packed layout adds), with the KV caches and buffers the metadata implies (`CachePlan` gives what the
        // built model's `cache_bytes` gives: tested on both architectures).
        if let Some(l) = &limit {
            // Activation sparsity keeps a column-blocked copy of each weight it skips columns of.
            let copies = edgellm_models::act_sparsity::column_copy_bytes(&gguf);
            // Packed layouts larger than the file's tensors (the N:M lane layout).
            let file = gguf.file_len().saturating_add(edgellm_models::linear::packing_growth_bytes(&gguf));
            match edgellm_models::CachePlan::from_gguf(&gguf, opts) {
                Some(plan) => {
                    let n_ctx = if n_ctx == 0 { plan.n_ctx_train.min(4096) } else { n_ctx };
                    let scratch = scratch_bytes(plan.n_embd, plan.n_vocab);
                    check_fits(l, (file, copies), scratch, n_ctx, caches, |c| plan.cache_bytes(c))?;
                }
                None => check_fits(l, (file, copies), 0, 0, 1, |_| 0)?,
            }
        }
        let (model, device, device_note) = load_on_device(&gguf, opts)?;
        let info = model.info().clone();
        let n_ctx = if n_ctx == 0 { info.n_ctx_train.min(4096) } else { n_ctx };
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let chat_template = ChatTemplate::from_gguf(&gguf, &tokenizer)?;
        Ok(LoadedModel {
            gguf,
            model,
            tokenizer,
            chat_template,
            load_ms: t0.elapsed().as_secs_f64() * 1e3,
            n_ctx,
            device,
            device_note,
        })
    }

    /// Tokenize a prompt as `edgellm run` does: BOS where the metadata asks, special tokens not parsed.
    pub fn tokenize_prompt(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, self.tokenizer.add_bos_default(), false)
    }

    /// A fresh session with its own KV cache.
    pub fn session(&self) -> Session<'_> {
        Session { lm: self, cache: self.model.new_cache(self.n_ctx), tokens: Vec::new() }
    }
}

/// A built model, where it runs, and why `auto` chose the CPU.
type OnDevice = (Box<dyn LanguageModel>, String, Option<String>);

/// The model in `f` built for `opts.device`, with where it runs and, under
/// [`Device::Auto`], why it fell back to the CPU (see [`gpu_part`]).
fn load_on_device(f: &GgufFile, opts: &LoadOptions) -> Result<OnDevice, RuntimeError> {
    let (on_gpu, note) = gpu_part(opts.device, || {
        let gpu = edgellm_gpu::shared().map_err(|e| ModelError::Device(e.to_string()))?;
        let name = gpu.adapter().to_string();
        Ok((edgellm_gpu::load_gguf(gpu, f, opts)?, name))
    })?;
    match on_gpu {
        Some((m, name)) => Ok((m, name, None)),
        None => Ok((edgellm_models::load_gguf_with(f, opts)?, "CPU".into(), note)),
    }
}

/// What `gpu` builds for the GPU under `device`, the one place `--device` is decided (decoders
/// here, encoders in `edgellm::embedder_on`): [`Device::Cpu`] builds nothing; on the GPU
/// `Some`; a [`ModelError::Device`] (no adapter, a model the GPU path cannot run) is an error
/// under [`Device::Gpu`], with the way out, and under [`Device::Auto`] `None` with the reason
/// (the caller runs the CPU). Other errors (a corrupt file) stay errors.
pub fn gpu_part<G>(
    device: Device,
    gpu: impl FnOnce() -> Result<G, ModelError>,
) -> Result<(Option<G>, Option<String>), ModelError> {
    if device == Device::Cpu {
        return Ok((None, None));
    }
    match (gpu(), device) {
        (Ok(g), _) => Ok((Some(g), None)),
        (Err(ModelError::Device(why)), Device::Auto) => Ok((None, Some(why))),
        (Err(ModelError::Device(why)), _) => {
            Err(ModelError::Device(format!("{why}; use --device cpu, or auto to fall back to the CPU")))
        }
        (Err(e), _) => Err(e),
    }
}

/// Working buffers of a model: activations of a 512-token prompt batch and a logit row per
/// position, generously.
pub fn scratch_bytes(n_embd: usize, n_vocab: usize) -> u64 {
    // Saturating: the figures may come from hostile metadata.
    (n_embd as u64).saturating_mul(512 * 4 * 16).saturating_add((n_vocab as u64).saturating_mul(4 * 4))
}

/// "4096 positions", or "8 slots × 4096 positions".
fn positions(caches: usize, n_ctx: usize) -> String {
    if caches > 1 {
        format!("{caches} slots × {n_ctx} positions")
    } else {
        format!("{n_ctx} positions")
    }
}

/// [`RuntimeError::OutOfMemory`] when the weights (`(file, copies)`: the file's bytes and
/// activation sparsity's column copies), `caches` KV caches of `n_ctx` positions
/// (`kv_bytes(n_ctx)` each) and `scratch` exceed the limit, with the largest context (and, for
/// several caches, the most caches) that fits. `n_ctx` 0: the weights alone.
fn check_fits(
    limit: &MemoryLimit,
    (file, copies): (u64, u64),
    scratch: u64,
    n_ctx: usize,
    caches: u64,
    kv_bytes: impl Fn(usize) -> u64,
) -> Result<(), RuntimeError> {
    let weights = file.saturating_add(copies);
    let one = if n_ctx == 0 { 0 } else { kv_bytes(n_ctx) };
    let kv = one.saturating_mul(caches);
    let needed = weights.saturating_add(kv).saturating_add(scratch);
    if needed <= limit.bytes {
        return Ok(());
    }
    let room = limit.bytes.saturating_sub(weights.saturating_add(scratch));
    let hint = if weights > limit.bytes || n_ctx == 0 {
        "the weights alone do not fit: use a smaller model or a smaller type (edgellm quantize --type q4_0), or free memory".into()
    } else {
        let ctx = largest_fitting_ctx(room / caches, n_ctx, kv_bytes);
        match (ctx, caches) {
            (Some(c), 1) => format!("use a smaller context (-c {c} fits) or a smaller type (edgellm quantize --type q4_0)"),
            (Some(c), _) => format!(
                "use fewer slots (--parallel {} fits with -c {n_ctx}) or a smaller context (-c {c} fits with --parallel {caches})",
                room / one.max(1)
            ),
            (None, _) => "even a context of one position does not fit: use a smaller model or a smaller type (edgellm quantize --type q4_0), or free memory".into(),
        }
    };
    let hint = if copies > 0 {
        format!(
            "{hint}; {} of the weights are activation sparsity's column copies (run without --act-sparsity to save them)",
            human_bytes(copies)
        )
    } else {
        hint
    };
    Err(RuntimeError::OutOfMemory {
        needed,
        weights,
        kv,
        scratch,
        n_ctx,
        caches: caches as usize,
        available: limit.bytes,
        from: limit.source.to_string(),
        hint,
    })
}

/// The largest context below `n_ctx` whose KV cache (`kv_bytes(c)`, growing with `c`) fits in
/// `room` bytes, or `None` when not even one position does.
pub fn largest_fitting_ctx(room: u64, n_ctx: usize, kv_bytes: impl Fn(usize) -> u64) -> Option<usize> {
    if n_ctx == 0 || kv_bytes(1) > room {
        return None;
    }
    let (mut lo, mut hi) = (1, n_ctx);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if kv_bytes(mid) <= room {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

/// Options of one generation.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Stop at end-of-generation tokens.
    pub stop_at_eog: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 128, stop_at_eog: true }
    }
}

/// Timings of one generation.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// Prompt tokens evaluated (after reusing the cached prefix).
    pub prompt_tokens: usize,
    /// Milliseconds spent on the prompt.
    pub prompt_ms: f64,
    /// Tokens generated.
    pub gen_tokens: usize,
    /// Milliseconds spent generating.
    pub gen_ms: f64,
}

impl Timings {
    /// Prompt tokens per second.
    pub fn prompt_tokens_per_s(&self) -> f64 {
        per_s(self.prompt_tokens, self.prompt_ms)
    }
    /// Generated tokens per second.
    pub fn gen_tokens_per_s(&self) -> f64 {
        per_s(self.gen_tokens, self.gen_ms)
    }
}

fn per_s(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1e3 / ms
    } else {
        0.0
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl StopReason {
    /// Name as written in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfGeneration => "eog",
            StopReason::Length => "length",
            StopReason::ContextFull => "context",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// The result of one generation.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated ids (an end-of-generation token that stopped it is included).
    pub ids: Vec<u32>,
    /// Generated text (end-of-generation tokens not rendered).
    pub text: String,
    /// Timings.
    pub timings: Timings,
    /// Why it stopped.
    pub stop: StopReason,
}

/// A conversation with a model: a KV cache and the tokens it holds.
pub struct Session<'m> {
    lm: &'m LoadedModel,
    cache: KvCache,
    tokens: Vec<u32>,
}

impl Session<'_> {
    /// Tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Context size of this session's KV cache.
    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx
    }

    /// The model this session runs.
    pub fn model(&self) -> &LoadedModel {
        self.lm
    }

    /// Whether the cache is full: no further token can be run.
    pub fn is_full(&self) -> bool {
        self.tokens.len() >= self.cache.n_ctx
    }

    /// Run `prompt` (reusing the longest cached prefix) and return the logits of its last token
    /// with the number of prompt tokens evaluated (the rest came from the cache).
    ///
    /// Errors: [`RuntimeError::PromptTooLong`] when it exceeds the context,
    /// [`RuntimeError::EmptyPrompt`] when it is empty.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize), RuntimeError> {
        let n_ctx = self.cache.n_ctx;
        if prompt.len() > n_ctx {
            return Err(RuntimeError::PromptTooLong {
                n_prompt: prompt.len(),
                n_ctx,
                n_ctx_train: self.lm.model.info().n_ctx_train,
            });
        }
        if prompt.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        let mut common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        // Always evaluate at least the last prompt token to get its logits.
        common = common.min(prompt.len() - 1);
        self.cache.truncate(common);
        let common = self.cache.len;
        self.tokens.truncate(common);
        let rest = &prompt[common..];
        let mut last = Vec::new();
        for chunk in rest.chunks(self.cache.max_batch.min(512)) {
            last = self.lm.model.forward(chunk, &mut self.cache, false)?;
        }
        self.tokens.extend_from_slice(rest);
        Ok((last, rest.len()))
    }

    /// Run one generated token `id` after the cached ones and write the logits of the next
    /// position into `logits` (reused: a decoding step allocates nothing). Refuses with
    /// [`RuntimeError::ContextFull`] when the cache is full (see [`Session::is_full`]).
    pub fn decode(&mut self, id: u32, logits: &mut Vec<f32>) -> Result<(), RuntimeError> {
        if self.is_full() {
            return Err(RuntimeError::ContextFull { n_ctx: self.cache.n_ctx });
        }
        self.lm.model.forward_into(&[id], &mut self.cache, false, logits)?;
        self.tokens.push(id);
        Ok(())
    }

    /// Generate after `prompt`: `on_text` receives each new piece of valid UTF-8 text and
    /// returns `false` to stop.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        sampler: &mut Sampler,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, RuntimeError> {
        let tok = &self.lm.tokenizer;
        let t0 = Instant::now();
        let (mut logits, n_eval) = self.prefill(prompt)?;
        for &id in prompt {
            sampler.accept(id);
        }
        let mut timings = Timings {
            prompt_tokens: n_eval,
            prompt_ms: t0.elapsed().as_secs_f64() * 1e3,
            ..Default::default()
        };
        let t1 = Instant::now();
        let mut ids = Vec::new();
        let mut text = String::new();
        let mut dec = StreamDecoder::new();
        let mut stop = StopReason::Length;
        while ids.len() < opts.max_tokens {
            let id = sampler.sample(&logits);
            ids.push(id);
            if opts.stop_at_eog && tok.is_eog(id) {
                stop = StopReason::EndOfGeneration;
                break;
            }
            let piece = dec.push(tok, id);
            text.push_str(&piece);
            if !piece.is_empty() && !on_text(&piece) {
                stop = StopReason::Cancelled;
                break;
            }
            if ids.len() == opts.max_tokens {
                break;
            }
            if self.tokens.len() >= self.cache.n_ctx {
                stop = StopReason::ContextFull;
                break;
            }
            // Reuses the logits vector and the cache's activation buffers: no allocation here.
            self.lm.model.forward_into(&[id], &mut self.cache, false, &mut logits)?;
            self.tokens.push(id);
        }
        let rest = dec.flush();
        if !rest.is_empty() {
            text.push_str(&rest);
            on_text(&rest);
        }
        timings.gen_tokens = ids.len();
        timings.gen_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(Generation { ids, text, timings, stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--device`: the CPU builds nothing on the GPU; a device error falls back under auto (with
    /// the reason) and fails under gpu (with the way out); other errors stay errors.
    #[test]
    fn gpu_part_decides_the_device() {
        let device_err = || Err::<u8, _>(ModelError::Device("no GPU adapter".into()));
        let mut called = false;
        let (g, note) = gpu_part(Device::Cpu, || {
            called = true;
            Ok(1u8)
        })
        .unwrap();
        assert!(g.is_none() && note.is_none() && !called);
        assert_eq!(gpu_part(Device::Gpu, || Ok(7u8)).unwrap(), (Some(7), None));
        assert_eq!(gpu_part(Device::Auto, || Ok(7u8)).unwrap(), (Some(7), None));
        assert_eq!(gpu_part(Device::Auto, device_err).unwrap(), (None, Some("no GPU adapter".to_string())));
        let e = gpu_part(Device::Gpu, device_err).unwrap_err().to_string();
        assert!(e.contains("no GPU adapter") && e.contains("--device cpu"), "{e}");
        let bad = || Err::<u8, _>(ModelError::BadConfig("corrupt".into()));
        assert!(matches!(gpu_part(Device::Auto, bad), Err(ModelError::BadConfig(_))));
    }
}
