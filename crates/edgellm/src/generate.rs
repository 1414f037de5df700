//! Text generation: parameters, the streaming callback, stop strings, cancellation, and
//! [`Session`], the per-conversation state.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use edgellm_runtime::{Sampler, SamplerConfig};
use edgellm_text::{ChatMessage, StreamDecoder, Tokenizer};

use crate::constraint::{Constrained, Grammars, OutputFormat};
use crate::engine::{Decoder, Engine};
use crate::error::{Error, Result};
use crate::logprob::{token_logprob, TokenLogprob, MAX_TOP_LOGPROBS};

/// A flag another thread can raise to stop a generation; it is checked before every token.
///
/// Clones share the flag.
///
/// ```
/// let cancel = edgellm::CancelToken::new();
/// let seen_by_worker = cancel.clone();
/// cancel.cancel();
/// assert!(seen_by_worker.is_cancelled());
/// ```
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Ask the generations holding this token to stop before their next token.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Settings of one generation.
///
/// The sampling chain is the runtime's: repetition penalty → top-k → top-p → min-p →
/// temperature (0 = greedy), drawn from a generator seeded with `sampling.seed`, so the same
/// seed gives the same text.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling settings (temperature, top-k, top-p, min-p, repetition penalty, seed).
    pub sampling: SamplerConfig,
    /// Stop strings: the text ends just before the first occurrence of any of them (which may
    /// span several tokens), and nothing from it on reaches the callback. Text that could be
    /// the start of a stop string is held back until it is decided.
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (EOS, end-of-turn).
    pub ignore_eos: bool,
    /// Checked before each token; when cancelled, generation ends with
    /// [`FinishReason::Cancelled`].
    pub cancel: Option<CancelToken>,
    /// What the output must be: free text (the default), any JSON object, or JSON following a
    /// schema (see [`OutputFormat`]).
    pub format: OutputFormat,
    /// Token log-probabilities: `None` (the default) computes none; `Some(k)` gives each
    /// generated token's log-probability and the `k` most likely tokens of its position
    /// (`k` ≤ [`MAX_TOP_LOGPROBS`]), in [`Chunk::logprob`] and [`Completion::logprobs`]. See
    /// [`TokenLogprob`] for what they are computed from.
    pub logprobs: Option<usize>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampling: SamplerConfig::default(),
            stop: Vec::new(),
            ignore_eos: false,
            cancel: None,
            format: OutputFormat::Text,
            logprobs: None,
        }
    }
}

impl GenerateParams {
    /// Greedy decoding (temperature 0) of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> GenerateParams {
        GenerateParams {
            max_tokens,
            sampling: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
            ..GenerateParams::default()
        }
    }

    /// These parameters with a sampling temperature.
    pub fn with_temperature(mut self, temperature: f32) -> GenerateParams {
        self.sampling.temperature = temperature;
        self
    }

    /// These parameters with a seed.
    pub fn with_seed(mut self, seed: u64) -> GenerateParams {
        self.sampling.seed = seed;
        self
    }

    /// These parameters with stop strings.
    pub fn with_stop<S: Into<String>>(mut self, stop: impl IntoIterator<Item = S>) -> GenerateParams {
        self.stop = stop.into_iter().map(Into::into).collect();
        self
    }

    /// These parameters with a cancellation token.
    pub fn with_cancel(mut self, cancel: CancelToken) -> GenerateParams {
        self.cancel = Some(cancel);
        self
    }

    /// These parameters with an output format (JSON object or schema).
    pub fn with_format(mut self, format: OutputFormat) -> GenerateParams {
        self.format = format;
        self
    }

    /// These parameters with token log-probabilities: each token's and the `top` most likely
    /// at its position.
    pub fn with_logprobs(mut self, top: usize) -> GenerateParams {
        self.logprobs = Some(top);
        self
    }

    /// Check the ranges: temperature finite and ≥ 0, top-p and min-p in [0, 1], repetition
    /// penalty finite and > 0, no empty stop string, at most [`MAX_TOP_LOGPROBS`] top
    /// log-probabilities ([`Error::InvalidParams`]); and that the output format's schema
    /// compiles ([`Error::InvalidSchema`]).
    pub fn validate(&self) -> Result<()> {
        let s = &self.sampling;
        let bad = |m: String| Err(Error::InvalidParams(m));
        if !(s.temperature.is_finite() && s.temperature >= 0.0) {
            return bad(format!("temperature {} must be a number >= 0 (0 = greedy)", s.temperature));
        }
        if !(0.0..=1.0).contains(&s.top_p) {
            return bad(format!("top_p {} must be in [0, 1]", s.top_p));
        }
        if !(0.0..=1.0).contains(&s.min_p) {
            return bad(format!("min_p {} must be in [0, 1]", s.min_p));
        }
        if !(s.repeat_penalty.is_finite() && s.repeat_penalty > 0.0) {
            return bad(format!("repeat_penalty {} must be a number > 0 (1 = off)", s.repeat_penalty));
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("a stop string is empty".to_string());
        }
        if let Some(k) = self.logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
            return bad(format!("logprobs {k}: at most {MAX_TOP_LOGPROBS} top log-probabilities per token"));
        }
        self.format.validate()
    }
}

/// One step of a streamed generation, as the callback sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chunk<'a> {
    /// The token generated at this step; `None` for the last call, which hands out text that
    /// was held back (an unfinished character, or the possible start of a stop string) when
    /// generation ended by length, end-of-generation or a full context.
    pub id: Option<u32>,
    /// Text released by this step: whole characters only, possibly empty (held back while a
    /// character or a stop string is incomplete). The texts of all calls, joined, are
    /// [`Completion::text`].
    pub text: &'a str,
    /// The token's log-probability and the most likely alternatives, when
    /// [`GenerateParams::logprobs`] asks for them (`None` otherwise, and for the last call
    /// without a token).
    pub logprob: Option<&'a TokenLogprob>,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// [`GenerateParams::max_tokens`] reached.
    Length,
    /// A stop string was generated, or the JSON of an [`OutputFormat`] is complete (nothing
    /// may follow it).
    Stop,
    /// An end-of-generation token (EOS, end-of-turn).
    Eos,
    /// The callback returned [`ControlFlow::Break`] or the [`CancelToken`] was cancelled.
    Cancelled,
    /// Every position of the context is filled.
    ContextFull,
}

impl FinishReason {
    /// Lower-case name: `length`, `stop`, `eos`, `cancelled`, `context`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Stop => "stop",
            FinishReason::Eos => "eos",
            FinishReason::Cancelled => "cancelled",
            FinishReason::ContextFull => "context",
        }
    }
}

/// Timings of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// Prompt tokens evaluated (the prompt less its prefix already in the session's cache).
    pub prompt_tokens: usize,
    /// Milliseconds spent on the prompt.
    pub prompt_ms: f64,
    /// Tokens generated.
    pub gen_tokens: usize,
    /// Milliseconds spent generating (after the prompt).
    pub gen_ms: f64,
    /// Milliseconds from the call to the first generated token (0 when none was).
    pub ttft_ms: f64,
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

/// The result of one generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Generated token ids: every sampled token, the end-of-generation token that stopped it
    /// and the one that completed a stop string included.
    pub ids: Vec<u32>,
    /// Generated text: what the callback received, joined (cut before a stop string;
    /// end-of-generation tokens not rendered).
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// With [`GenerateParams::logprobs`]: one per token of [`Completion::ids`], in order (the
    /// end-of-generation token that stopped it included, which no [`Chunk`] carries). Empty
    /// otherwise.
    pub logprobs: Vec<TokenLogprob>,
    /// Length of the prompt in tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the session's cache instead of being evaluated.
    pub cached_tokens: usize,
    /// Timings.
    pub timings: Timings,
}

/// A conversation with a decoder: its KV cache and the tokens it holds. A new prompt that
/// starts with the cached tokens (a growing chat) evaluates only the rest.
///
/// One thread at a time uses a session (`&mut self`); open one per concurrent conversation
/// from a shared [`Engine`] (it is `Send`, so it may move to the thread that runs it).
pub struct Session<'e> {
    dec: &'e Decoder,
    inner: edgellm_runtime::Session<'e>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("n_ctx", &self.inner.n_ctx())
            .field("cached_tokens", &self.inner.tokens().len())
            .finish_non_exhaustive()
    }
}

const _: () = {
    const fn send<T: Send>() {}
    send::<Session<'static>>();
};

impl Engine {
    /// A new session with an empty KV cache of [`EngineInfo::n_ctx`](crate::EngineInfo)
    /// positions. [`Error::NotADecoder`] for an encoder.
    pub fn session(&self) -> Result<Session<'_>> {
        let dec = self.decoder("generate text")?;
        Ok(Session { dec, inner: dec.lm.session() })
    }

    /// Generate after `prompt` (tokenized as [`Engine::tokenize`] with `add_special`: BOS where
    /// the model asks, special tokens as plain text) in a fresh session; `on_chunk` receives
    /// every step and returns [`ControlFlow::Break`] to stop.
    ///
    /// Errors: [`Error::NotADecoder`], [`Error::InvalidParams`],
    /// [`RuntimeError::PromptTooLong`](crate::RuntimeError::PromptTooLong),
    /// [`RuntimeError::EmptyPrompt`](crate::RuntimeError::EmptyPrompt).
    pub fn generate<F>(&self, prompt: &str, params: &GenerateParams, on_chunk: F) -> Result<Completion>
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        self.session()?.generate(prompt, params, on_chunk)
    }

    /// [`Engine::generate`] from prompt token ids ([`Error::TokenOutOfRange`] for an id outside
    /// the vocabulary).
    pub fn generate_ids<F>(&self, prompt: &[u32], params: &GenerateParams, on_chunk: F) -> Result<Completion>
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        self.session()?.generate_ids(prompt, params, on_chunk)
    }

    /// Answer a conversation: the messages rendered with the model's chat template and the
    /// assistant's turn opened ([`Engine::chat_prompt`]), then [`Engine::generate_ids`].
    pub fn chat<F>(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_chunk: F,
    ) -> Result<Completion>
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        self.session()?.chat(messages, params, on_chunk)
    }
}

impl<'e> Session<'e> {
    /// Tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        self.inner.tokens()
    }

    /// Context size in positions.
    pub fn n_ctx(&self) -> usize {
        self.inner.n_ctx()
    }

    /// [`Engine::generate`] in this session.
    pub fn generate<F>(&mut self, prompt: &str, params: &GenerateParams, on_chunk: F) -> Result<Completion>
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        let tok = &self.dec.lm.tokenizer;
        let ids = tok.encode(prompt, tok.add_bos_default(), false);
        self.generate_ids(&ids, params, on_chunk)
    }

    /// [`Engine::chat`] in this session: a conversation that grows by a turn reuses the cached
    /// tokens of the turns before.
    pub fn chat<F>(
        &mut self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_chunk: F,
    ) -> Result<Completion>
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        let ids = self.dec.chat_prompt(messages)?;
        self.generate_ids(&ids, params, on_chunk)
    }

    /// [`Engine::generate_ids`] in this session, with a sampler made from `params.sampling`.
    pub fn generate_ids<F>(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_chunk: F,
    ) -> Result<Completion>
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        params.validate()?;
        let mut sampler = Sampler::new(params.sampling.clone());
        self.run(prompt, params, &mut sampler, on_chunk)
    }

    /// Generate with a sampler of the caller's (`params.sampling` is not used): its random
    /// state and history carry over from call to call, as in an interactive chat with one
    /// seed for the whole conversation.
    pub fn generate_ids_with<F>(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        sampler: &mut Sampler,
        on_chunk: F,
    ) -> Result<Completion>
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        params.validate()?;
        self.run(prompt, params, sampler, on_chunk)
    }

    /// The decoding loop: prefill, then [`Decoding::step`] and one forward step per token,
    /// until a finish reason.
    fn run<F>(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        sampler: &mut Sampler,
        mut on_chunk: F,
    ) -> Result<Completion>
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        let tok = &self.dec.lm.tokenizer;
        check_prompt_ids(prompt, tok.vocab_size())?;
        let t0 = Instant::now();
        // The grammar is built before the prompt runs: a schema this vocabulary cannot serve
        // fails before any work.
        let constraint = self.dec.grammars.matcher(tok, &params.format)?;
        let (mut logits, n_eval) = self.inner.prefill(prompt)?;
        for &id in prompt {
            sampler.accept(id);
        }
        let mut d = Decoding::new(t0, prompt.len(), n_eval);
        d.constrain(constraint);
        let finish = loop {
            match d.step(tok, params, sampler, &logits, &mut on_chunk) {
                Step::Finished(f) => break f,
                Step::Next(id) => {
                    if self.inner.is_full() {
                        break FinishReason::ContextFull;
                    }
                    self.inner.decode(id, &mut logits)?;
                }
            }
        };
        d.finish_checked(finish, params, &mut on_chunk)
    }
}

/// [`Error::TokenOutOfRange`] for the first prompt id outside the vocabulary.
pub(crate) fn check_prompt_ids(prompt: &[u32], vocab_size: usize) -> Result<()> {
    match prompt.iter().find(|&&id| id as usize >= vocab_size) {
        Some(&id) => Err(Error::TokenOutOfRange { id, vocab_size }),
        None => Ok(()),
    }
}

/// What [`Decoding::step`] decided.
pub(crate) enum Step {
    /// Run this token through the model, then step again with the logits it gives.
    Next(u32),
    /// Generation is over (call [`Decoding::finish`]).
    Finished(FinishReason),
}

/// The constraint of a [`Decoding`].
enum Constraint {
    /// Not decided yet: made from the parameters at the first step.
    Pending,
    /// Free text.
    Off,
    /// The output follows this matcher.
    On(Box<Constrained>),
}

/// The per-token half of a generation, shared by [`Session`] and the batch scheduler so that
/// both give the same text for the same logits: (constraint mask →) sample (→ commit to the
/// grammar) → log-probabilities → stream-decode → stop strings → callback → limits.
pub(crate) struct Decoding {
    ids: Vec<u32>,
    text: String,
    /// Decoded text not yet handed out: the possible start of a stop string.
    held: String,
    dec: StreamDecoder,
    t0: Instant,
    /// When the prompt was done (generation time counts from here).
    t1: Instant,
    timings: Timings,
    prompt_tokens: usize,
    /// One per id of `ids`, when the parameters ask for log-probabilities.
    logprobs: Vec<TokenLogprob>,
    /// Scratch of the log-probabilities: a row's exponentials (vocabulary-sized once).
    exps: Vec<f32>,
    constraint: Constraint,
    /// The grammar of the output format is complete (the generation ended by itself).
    grammar_done: bool,
    /// The constraint failed (the message): the generation ended there.
    failure: Option<Error>,
}

impl Decoding {
    /// A generation whose call started at `t0`, after a prompt of `prompt_tokens` tokens of
    /// which `n_eval` were evaluated (the rest came from a cache), the prompt done now.
    pub(crate) fn new(t0: Instant, prompt_tokens: usize, n_eval: usize) -> Decoding {
        let t1 = Instant::now();
        Decoding {
            ids: Vec::new(),
            text: String::new(),
            held: String::new(),
            dec: StreamDecoder::new(),
            t0,
            t1,
            timings: Timings {
                prompt_tokens: n_eval,
                prompt_ms: (t1 - t0).as_secs_f64() * 1e3,
                ..Timings::default()
            },
            prompt_tokens,
            logprobs: Vec::new(),
            exps: Vec::new(),
            constraint: Constraint::Pending,
            grammar_done: false,
            failure: None,
        }
    }

    /// Follow `constraint` (`None`: free text) instead of making one from the parameters at the
    /// first step (which reports a failure to make it only when the generation ends).
    pub(crate) fn constrain(&mut self, constraint: Option<Constrained>) {
        self.constraint = match constraint {
            Some(c) => Constraint::On(Box::new(c)),
            None => Constraint::Off,
        };
    }

    /// Draw the next token: under the constraint (made now from `params` if still pending),
    /// or straight from the sampler.
    fn draw(
        &mut self,
        tok: &Tokenizer,
        params: &GenerateParams,
        sampler: &mut Sampler,
        logits: &[f32],
    ) -> std::result::Result<u32, String> {
        if let Constraint::Pending = self.constraint {
            let c = Grammars::matcher_for(tok, &params.format).map_err(|e| e.to_string())?;
            self.constrain(c);
        }
        match &mut self.constraint {
            Constraint::On(c) => c.sample(sampler, logits),
            _ => Ok(sampler.sample(logits)),
        }
    }

    /// Tokens generated so far.
    pub(crate) fn n_generated(&self) -> usize {
        self.ids.len()
    }

    /// One token: the limits and cancellation checked, a token drawn from `logits` (among those
    /// the output format allows), its log-probability computed if asked, its text released to
    /// `on_chunk` (less what may start a stop string).
    ///
    /// A constraint that fails (see [`Decoding::finish_checked`]) ends the generation with
    /// [`FinishReason::Stop`].
    pub(crate) fn step<F>(
        &mut self,
        tok: &Tokenizer,
        params: &GenerateParams,
        sampler: &mut Sampler,
        logits: &[f32],
        on_chunk: &mut F,
    ) -> Step
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        if self.ids.len() >= params.max_tokens {
            return Step::Finished(FinishReason::Length);
        }
        if params.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            return Step::Finished(FinishReason::Cancelled);
        }
        if !all_finite(logits) {
            self.failure = Some(Error::NonFiniteLogits { generated: self.ids.len() });
            return Step::Finished(FinishReason::Stop);
        }
        let id = match self.draw(tok, params, sampler, logits) {
            Ok(id) => id,
            Err(e) => {
                let n = self.ids.len();
                self.failure = Some(Error::Constraint(format!(
                    "after {n} generated tokens: {e} (simplify the schema, or generate without an output format)"
                )));
                return Step::Finished(FinishReason::Stop);
            }
        };
        self.ids.push(id);
        if self.ids.len() == 1 {
            self.timings.ttft_ms = self.t0.elapsed().as_secs_f64() * 1e3;
        }
        if let Some(k) = params.logprobs {
            self.logprobs.push(token_logprob(logits, id, k, tok.piece(id), &mut self.exps));
        }
        let constrained = matches!(self.constraint, Constraint::On(_));
        // A constraint lets an end-of-generation token through only where its JSON is
        // complete: it ends the output even with `ignore_eos`.
        if (!params.ignore_eos || constrained) && tok.is_eog(id) {
            return Step::Finished(FinishReason::Eos);
        }
        let logprob = self.logprobs.last().filter(|_| params.logprobs.is_some());
        let stops = &params.stop;
        self.dec.push_into(tok.piece(id), &mut self.held);
        if let Some(cut) = find_stop(&self.held, stops) {
            self.held.truncate(cut);
            self.text.push_str(&self.held);
            // Generation ends here whatever the callback answers.
            let _ = on_chunk(Chunk { id: Some(id), text: &self.held, logprob });
            self.held.clear();
            return Step::Finished(FinishReason::Stop);
        }
        let release = self.held.len() - stop_prefix_len(&self.held, stops);
        self.text.push_str(&self.held[..release]);
        let flow = on_chunk(Chunk { id: Some(id), text: &self.held[..release], logprob });
        self.held.drain(..release);
        if flow.is_break() {
            return Step::Finished(FinishReason::Cancelled);
        }
        if let Constraint::On(c) = &self.constraint {
            if c.is_done() {
                self.grammar_done = true;
                return Step::Finished(FinishReason::Stop);
            }
        }
        if self.ids.len() >= params.max_tokens {
            return Step::Finished(FinishReason::Length);
        }
        Step::Next(id)
    }

    /// [`Decoding::finish`], or [`Error::Constraint`] when the output format's constraint failed
    /// (its grammar could not be built for the vocabulary, or its matcher failed: the text
    /// streamed so far ends where it did).
    pub(crate) fn finish_checked<F>(
        mut self,
        finish: FinishReason,
        params: &GenerateParams,
        on_chunk: &mut F,
    ) -> Result<Completion>
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(self.finish(finish, params, on_chunk)),
        }
    }

    /// The end: text held back is released where the generation ended by itself (its length,
    /// an end-of-generation token, a full context, a complete JSON value), and the
    /// [`Completion`] made. A failed constraint gives the completion of the text so far (see
    /// [`Decoding::finish_checked`], which reports it).
    pub(crate) fn finish<F>(
        mut self,
        finish: FinishReason,
        params: &GenerateParams,
        on_chunk: &mut F,
    ) -> Completion
    where
        F: FnMut(Chunk<'_>) -> ControlFlow<()>,
    {
        let mut finish = finish;
        let by_itself =
            matches!(finish, FinishReason::Length | FinishReason::Eos | FinishReason::ContextFull);
        if by_itself || self.grammar_done {
            // What was held back is output after all (a broken character as U+FFFD).
            self.held.push_str(&self.dec.flush());
            if let Some(cut) = find_stop(&self.held, &params.stop) {
                self.held.truncate(cut);
                finish = FinishReason::Stop;
            }
            if !self.held.is_empty() {
                self.text.push_str(&self.held);
                let _ = on_chunk(Chunk { id: None, text: &self.held, logprob: None });
            }
        }
        self.timings.gen_tokens = self.ids.len();
        self.timings.gen_ms = self.t1.elapsed().as_secs_f64() * 1e3;
        Completion {
            ids: self.ids,
            text: self.text,
            finish,
            logprobs: self.logprobs,
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.prompt_tokens - self.timings.prompt_tokens,
            timings: self.timings,
        }
    }
}

/// True when no value is NaN or infinite (exponent bits all set), in a form that vectorizes.
fn all_finite(v: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    let mut chunks = v.chunks_exact(16);
    let any_bad = chunks.by_ref().any(|c| c.iter().fold(false, |b, x| b | (x.to_bits() & EXP == EXP)));
    !any_bad && chunks.remainder().iter().all(|x| x.is_finite())
}

/// Start of the earliest stop string in `held`.
///
/// Only `held` needs searching: text is handed out only once no stop string can start in it
/// (see [`stop_prefix_len`]), so a stop string never begins in text already released.
fn find_stop(held: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| held.find(s.as_str())).min()
}

/// Length of the longest end of `held` that is a proper beginning of a stop string: the text to
/// hold back. It starts on a character boundary of `held` (a stop string's beginning is valid
/// UTF-8, which starts with a leading byte).
fn stop_prefix_len(held: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .map(|s| (1..s.len()).rev().find(|&j| s.is_char_boundary(j) && held.ends_with(&s[..j])).unwrap_or(0))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn earliest_stop_wins() {
        let s = stops(&["world", "lo"]);
        assert_eq!(find_stop("hello world", &s), Some(3));
        assert_eq!(find_stop("nothing", &s), None);
        assert_eq!(find_stop("x", &[]), None);
    }

    #[test]
    fn holds_back_possible_starts() {
        let s = stops(&["</end>", "##"]);
        assert_eq!(stop_prefix_len("text </e", &s), "</e".len());
        assert_eq!(stop_prefix_len("text #", &s), 1);
        assert_eq!(stop_prefix_len("text", &s), 0);
        // A complete stop string is find_stop's business, not held back as a prefix.
        assert_eq!(stop_prefix_len("a</end>", &stops(&["</end>"])), 0);
        // Multi-byte stop strings are cut on character boundaries.
        let s = stops(&["🙂!"]);
        assert_eq!(stop_prefix_len("ok 🙂", &s), "🙂".len());
        assert_eq!(stop_prefix_len("ok", &s), 0);
    }

    #[test]
    fn params_are_checked() {
        assert!(GenerateParams::default().validate().is_ok());
        assert!(GenerateParams::greedy(4).with_temperature(f32::NAN).validate().is_err());
        assert!(GenerateParams::greedy(4).with_temperature(-1.0).validate().is_err());
        let mut p = GenerateParams::greedy(4);
        p.sampling.top_p = 1.5;
        assert!(matches!(p.validate(), Err(Error::InvalidParams(m)) if m.contains("top_p")));
        assert!(GenerateParams::greedy(4).with_stop([""]).validate().is_err());
    }

    #[test]
    fn non_finite_logits_are_found_anywhere() {
        let mut v = vec![0.5f32; 37];
        assert!(all_finite(&v));
        for (i, bad) in [(0, f32::NAN), (15, f32::INFINITY), (16, f32::NEG_INFINITY), (36, f32::NAN)] {
            let keep = v[i];
            v[i] = bad;
            assert!(!all_finite(&v), "{i}");
            v[i] = keep;
        }
        assert!(all_finite(&[f32::MAX, f32::MIN, -0.0]));
    }

    #[test]
    fn cancel_token_is_shared() {
        let t = CancelToken::new();
        let u = t.clone();
        assert!(!u.is_cancelled());
        t.cancel();
        assert!(u.is_cancelled());
    }
}
