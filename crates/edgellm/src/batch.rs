//! Continuous batching: many generations share one decoder, their tokens run together.
//!
//! A [`Batcher`] owns `parallel` slots, each a KV cache, and one worker thread. Requests wait
//! in a bounded queue until a slot is free; each step of the worker then runs, in **one**
//! forward pass of the model ([`LanguageModel::forward_many`]: one read of the weights for
//! all of them), the next token of every sequence that is decoding and a chunk of the
//! prompts being prefilled (at most [`BatchOptions::prefill_chunk`] prompt tokens per step,
//! so a long prompt does not stall the others).
//!
//! **Batch invariance.** A sequence's logits are bit-identical whatever else shares its step
//! and however its prompt was chunked (the kernels accumulate every row in the same order for
//! one token or many), and each request samples with its own seeded [`Sampler`] and the same
//! per-token logic as [`Session`](crate::Session): a request returns exactly the text
//! [`Engine::generate_ids`] returns for it alone.
//!
//! **Prompt cache.** A finished request leaves its tokens in its slot's cache. A new request
//! goes to the free slot whose cached tokens share the longest prefix with its prompt (the
//! same system prompt, a growing chat) and evaluates only the rest; [`BatchStats`] counts the
//! reused tokens.
//!
//! Events reach the caller through a callback ([`Sink`]) called on the worker thread:
//! [`Event::Started`], then an [`Event::Chunk`] per token, then [`Event::Done`]. A callback
//! that returns [`ControlFlow::Break`] (its client has gone) ends its request at once,
//! freeing the slot; so does a cancelled [`CancelToken`](crate::CancelToken) in the
//! parameters, checked at every step, prefill included.
//!
//! [`LanguageModel::forward_many`]: edgellm_models::LanguageModel::forward_many

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use edgellm_models::{Buffers, KvCache, SeqStep};
use edgellm_runtime::memory::memory_limit;
use edgellm_runtime::{RuntimeError, Sampler};

use crate::engine::{Decoder, Engine};
use crate::error::{Error, Result};
use crate::generate::{check_prompt_ids, Chunk, Completion, Decoding, FinishReason, GenerateParams, Step};

/// Settings of a [`Batcher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Sequences decoded together: KV cache slots of [`EngineInfo::n_ctx`](crate::EngineInfo)
    /// positions each (at least 1).
    pub parallel: usize,
    /// Requests that may wait for a slot; beyond, [`Batcher::submit`] answers
    /// [`Error::QueueFull`].
    pub queue_limit: usize,
    /// Prompt tokens run per step, shared by the prompts being prefilled (at least 1).
    pub prefill_chunk: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions { parallel: 4, queue_limit: 64, prefill_chunk: 256 }
    }
}

/// What a request's [`Sink`] hears, in order: `Started`, `Chunk`s, `Done`.
#[derive(Debug)]
pub enum Event<'a> {
    /// The request has a slot: its prompt's length, and how many of its tokens the slot's
    /// cache already held (not evaluated again).
    Started {
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Prompt tokens reused from the slot's cache.
        cached_tokens: usize,
    },
    /// A generated token and the text it releases, as [`Engine::generate`]'s callback gets.
    Chunk(Chunk<'a>),
    /// The end: the completion (its `timings.ttft_ms` counts from the submission, waiting in
    /// the queue included), or the error that ended it.
    Done(Result<Completion>),
}

/// A request's event callback, called on the worker thread: keep it short (hand the event to
/// another thread). [`ControlFlow::Break`] ends the request.
pub type Sink = Box<dyn FnMut(Event<'_>) -> ControlFlow<()> + Send>;

/// Counters of a [`Batcher`], for monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Slots (`parallel`).
    pub slots: usize,
    /// Slots running a request now.
    pub slots_busy: usize,
    /// Requests waiting for a slot now.
    pub queued: usize,
    /// Requests finished (any finish reason, errors included).
    pub requests: u64,
    /// Prompt tokens evaluated.
    pub prompt_tokens: u64,
    /// Prompt tokens reused from a slot's cache instead of being evaluated.
    pub cached_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Forward steps run.
    pub steps: u64,
    /// Sequences summed over the steps (divided by `steps`: the mean batch).
    pub step_sequences: u64,
}

/// A request waiting for a slot.
struct Job {
    prompt: Vec<u32>,
    params: GenerateParams,
    sink: Sink,
    submitted: Instant,
}

/// What the submitting threads and the worker share.
struct Shared {
    queue: Mutex<VecDeque<Job>>,
    wake: Condvar,
    shutdown: AtomicBool,
    busy: AtomicUsize,
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    steps: AtomicU64,
    step_sequences: AtomicU64,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Job>> {
        // A panic while holding the lock leaves a queue that is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Continuous batching over one decoder (see the [module documentation](self)).
///
/// ```no_run
/// use std::ops::ControlFlow;
/// use std::sync::{mpsc, Arc};
///
/// use edgellm::batch::{BatchOptions, Batcher, Event};
/// use edgellm::{Engine, EngineOptions, GenerateParams};
///
/// # fn main() -> Result<(), edgellm::Error> {
/// let engine = Arc::new(Engine::load("models/SmolLM2-135M-Instruct.Q4_1.gguf", EngineOptions::default())?);
/// let batcher = Batcher::new(engine.clone(), BatchOptions { parallel: 4, ..BatchOptions::default() })?;
/// let (tx, rx) = mpsc::channel();
/// for q in ["The capital of France is", "Water boils at"] {
///     let tx = tx.clone();
///     let prompt = engine.tokenize(q, true)?;
///     batcher.submit(prompt, GenerateParams::greedy(16), Box::new(move |e| {
///         if let Event::Done(Ok(c)) = e {
///             let _ = tx.send(c.text);
///         }
///         ControlFlow::Continue(())
///     }))?;
/// }
/// drop(tx);
/// for text in rx {
///     println!("{text}");
/// }
/// # Ok(())
/// # }
/// ```
pub struct Batcher {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    engine: Arc<Engine>,
    opts: BatchOptions,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("opts", &self.opts)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Start a scheduler of `opts.parallel` slots over `engine`, refusing with
    /// [`RuntimeError::OutOfMemory`] (with the numbers) when their KV caches would not fit in
    /// the memory available, and with [`Error::NotADecoder`] for an encoder.
    pub fn new(engine: Arc<Engine>, opts: BatchOptions) -> Result<Batcher> {
        let dec = engine.decoder("generate text")?;
        let opts =
            BatchOptions { parallel: opts.parallel.max(1), prefill_chunk: opts.prefill_chunk.max(1), ..opts };
        let n_ctx = dec.lm.n_ctx;
        // The engine's load checked the weights and one cache; the other slots need theirs.
        let kv = dec.lm.model.cache_bytes(n_ctx);
        let extra = kv * (opts.parallel as u64 - 1);
        if let Some(l) = memory_limit().map_err(RuntimeError::from)? {
            if extra > l.bytes {
                let slots = 1 + l.bytes / kv.max(1);
                return Err(RuntimeError::OutOfMemory {
                    needed: extra,
                    weights: 0,
                    kv: extra,
                    scratch: 0,
                    n_ctx,
                    caches: opts.parallel - 1,
                    available: l.bytes,
                    from: l.source.to_string(),
                    hint: format!(
                        "{} more KV caches of {} positions do not fit: use fewer slots (--parallel {slots} fits) or a smaller context (-c)",
                        opts.parallel - 1,
                        n_ctx
                    ),
                }
                .into());
            }
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            cached_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            step_sequences: AtomicU64::new(0),
        });
        let worker = {
            let (shared, engine) = (shared.clone(), engine.clone());
            std::thread::Builder::new()
                .name("edgellm-batch".into())
                .spawn(move || {
                    let dec = engine.decoder("generate text").expect("checked above");
                    Worker::new(dec, &shared, opts).run();
                })
                .map_err(|e| Error::Io { path: "edgellm-batch thread".into(), source: e })?
        };
        Ok(Batcher { shared, worker: Some(worker), engine, opts })
    }

    /// The engine it runs.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Its settings (`parallel` and `prefill_chunk` at least 1).
    pub fn options(&self) -> BatchOptions {
        self.opts
    }

    /// Queue a generation after `prompt` (token ids, as [`Engine::generate_ids`] takes them).
    /// Its events go to `sink` on the worker thread.
    ///
    /// Refused at once, `sink` never called: [`Error::InvalidParams`],
    /// [`Error::TokenOutOfRange`], [`RuntimeError::EmptyPrompt`],
    /// [`RuntimeError::PromptTooLong`], [`Error::QueueFull`] and [`Error::Stopped`].
    pub fn submit(&self, prompt: Vec<u32>, params: GenerateParams, sink: Sink) -> Result<()> {
        params.validate()?;
        let dec = self.engine.decoder("generate text")?;
        check_prompt_ids(&prompt, dec.lm.tokenizer.vocab_size())?;
        if prompt.is_empty() {
            return Err(RuntimeError::EmptyPrompt.into());
        }
        let n_ctx = dec.lm.n_ctx;
        if prompt.len() > n_ctx {
            return Err(RuntimeError::PromptTooLong {
                n_prompt: prompt.len(),
                n_ctx,
                n_ctx_train: dec.lm.model.info().n_ctx_train,
            }
            .into());
        }
        let mut q = self.shared.queue();
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        if q.len() >= self.opts.queue_limit {
            return Err(Error::QueueFull {
                queued: q.len(),
                slots: self.opts.parallel,
                limit: self.opts.queue_limit,
            });
        }
        q.push_back(Job { prompt, params, sink, submitted: Instant::now() });
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// The counters now.
    pub fn stats(&self) -> BatchStats {
        let s = &self.shared;
        BatchStats {
            slots: self.opts.parallel,
            slots_busy: s.busy.load(Ordering::Relaxed),
            queued: s.queue().len(),
            requests: s.requests.load(Ordering::Relaxed),
            prompt_tokens: s.prompt_tokens.load(Ordering::Relaxed),
            cached_tokens: s.cached_tokens.load(Ordering::Relaxed),
            generated_tokens: s.generated_tokens.load(Ordering::Relaxed),
            steps: s.steps.load(Ordering::Relaxed),
            step_sequences: s.step_sequences.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Batcher {
    /// Stops the worker: requests running or waiting end with [`Error::Stopped`].
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A request in a slot.
struct Active {
    job: Job,
    sampler: Sampler,
    /// Prompt tokens in the cache so far.
    fed: usize,
    /// Prompt tokens the cache held when the request came.
    cached: usize,
    /// Set once the prompt is done.
    decoding: Option<Decoding>,
    /// The token to run next (decoding).
    next: Option<u32>,
}

/// A KV cache slot.
struct Slot {
    cache: KvCache,
    /// The tokens the cache holds (`cache.len` of them).
    tokens: Vec<u32>,
    /// When it was last given up (for least-recently-used choice).
    last_used: u64,
    active: Option<Active>,
}

/// A sequence's part of a step.
#[derive(Clone, Copy)]
enum Part {
    /// Prompt tokens `fed..fed + n`.
    Prefill(usize),
    /// The next token.
    Decode,
}

struct Worker<'e> {
    dec: &'e Decoder,
    shared: &'e Shared,
    opts: BatchOptions,
    slots: Vec<Slot>,
    bufs: Buffers,
    logits: Vec<Vec<f32>>,
    clock: u64,
}

impl<'e> Worker<'e> {
    fn new(dec: &'e Decoder, shared: &'e Shared, opts: BatchOptions) -> Worker<'e> {
        let n_ctx = dec.lm.n_ctx;
        let slots = (0..opts.parallel)
            .map(|_| Slot {
                cache: dec.lm.model.new_cache(n_ctx),
                tokens: Vec::new(),
                last_used: 0,
                active: None,
            })
            .collect();
        Worker {
            dec,
            shared,
            opts,
            slots,
            bufs: Buffers::default(),
            logits: vec![Vec::new(); opts.parallel],
            clock: 0,
        }
    }

    fn run(mut self) {
        loop {
            {
                let mut q = self.shared.queue();
                loop {
                    if self.shared.shutdown.load(Ordering::Acquire) {
                        let waiting: Vec<Job> = q.drain(..).collect();
                        drop(q);
                        for mut job in waiting {
                            let _ = (job.sink)(Event::Done(Err(Error::Stopped)));
                        }
                        for i in 0..self.slots.len() {
                            self.end(i, Err(Error::Stopped));
                        }
                        return;
                    }
                    while !q.is_empty() && self.slots.iter().any(|s| s.active.is_none()) {
                        let job = q.pop_front().expect("not empty");
                        self.admit(job);
                    }
                    if self.slots.iter().any(|s| s.active.is_some()) {
                        break;
                    }
                    q = self.shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            }
            self.step();
        }
    }

    /// Give `job` the free slot whose cache shares the longest prefix with its prompt (the
    /// least recently used among equals).
    fn admit(&mut self, mut job: Job) {
        let common = |s: &Slot| s.tokens.iter().zip(&job.prompt).take_while(|(a, b)| a == b).count();
        let Some(i) = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.is_none())
            .max_by_key(|&i| (common(&self.slots[i]), std::cmp::Reverse(self.slots[i].last_used)))
        else {
            unreachable!("admit is called with a free slot");
        };
        let slot = &mut self.slots[i];
        // At least the last prompt token runs, for its logits.
        let keep = common(slot).min(job.prompt.len() - 1);
        slot.cache.truncate(keep);
        let kept = slot.cache.len;
        slot.tokens.truncate(kept);
        let started = Event::Started { prompt_tokens: job.prompt.len(), cached_tokens: kept };
        if (job.sink)(started).is_break() {
            self.shared.requests.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut sampler = Sampler::new(job.params.sampling.clone());
        for &id in &job.prompt {
            sampler.accept(id);
        }
        self.shared.busy.fetch_add(1, Ordering::Relaxed);
        self.shared.cached_tokens.fetch_add(kept as u64, Ordering::Relaxed);
        slot.active = Some(Active { job, sampler, fed: kept, cached: kept, decoding: None, next: None });
    }

    /// One forward pass: every decoding sequence's next token, and prompt chunks.
    fn step(&mut self) {
        // Requests cancelled while waiting for their prompt end first.
        for i in 0..self.slots.len() {
            let cancelled = self.slots[i].active.as_ref().is_some_and(|a| {
                a.decoding.is_none() && a.job.params.cancel.as_ref().is_some_and(|c| c.is_cancelled())
            });
            if cancelled {
                self.finish(i, FinishReason::Cancelled);
            }
        }
        let mut parts: Vec<(usize, Part)> = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(a) = &s.active {
                if a.next.is_some() {
                    parts.push((i, Part::Decode));
                }
            }
        }
        // Prompt chunks, oldest request first, within the step's budget.
        let mut budget = self.opts.prefill_chunk;
        let mut waiting: Vec<(Instant, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.active.as_ref().filter(|a| a.decoding.is_none()).map(|a| (a.job.submitted, i))
            })
            .collect();
        waiting.sort();
        for (_, i) in waiting {
            if budget == 0 {
                break;
            }
            let s = &self.slots[i];
            let a = s.active.as_ref().expect("active");
            let n = (a.job.prompt.len() - a.fed).min(budget).min(s.cache.max_batch);
            if n > 0 {
                parts.push((i, Part::Prefill(n)));
                budget -= n;
            }
        }
        if parts.is_empty() {
            return;
        }
        let result = {
            let mut steps: Vec<SeqStep<'_>> = Vec::with_capacity(parts.len());
            let mut by_slot: Vec<Option<&mut Slot>> = self.slots.iter_mut().map(Some).collect();
            for &(i, part) in &parts {
                let slot = by_slot[i].take().expect("one part per slot");
                let Slot { cache, active, .. } = slot;
                let a = active.as_ref().expect("active");
                let tokens: &[u32] = match part {
                    Part::Decode => std::slice::from_ref(a.next.as_ref().expect("decoding")),
                    Part::Prefill(n) => &a.job.prompt[a.fed..a.fed + n],
                };
                steps.push(SeqStep { tokens, cache });
            }
            self.dec.lm.model.forward_many(&mut steps, &mut self.bufs, &mut self.logits[..parts.len()])
        };
        self.shared.steps.fetch_add(1, Ordering::Relaxed);
        self.shared.step_sequences.fetch_add(parts.len() as u64, Ordering::Relaxed);
        if let Err(e) = result {
            for &(i, _) in &parts {
                self.end(i, Err(Error::StepFailed(e.to_string())));
            }
            return;
        }
        for (k, &(i, part)) in parts.iter().enumerate() {
            let logits = std::mem::take(&mut self.logits[k]);
            self.advance(i, part, &logits);
            self.logits[k] = logits;
        }
    }

    /// After a step: record the tokens run, and sample where the prompt is done.
    fn advance(&mut self, i: usize, part: Part, logits: &[f32]) {
        let tok = &self.dec.lm.tokenizer;
        let n_ctx = self.dec.lm.n_ctx;
        let slot = &mut self.slots[i];
        let Slot { tokens, active, .. } = slot;
        let a = active.as_mut().expect("active");
        match part {
            Part::Prefill(n) => {
                tokens.extend_from_slice(&a.job.prompt[a.fed..a.fed + n]);
                a.fed += n;
                self.shared.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
                if a.fed < a.job.prompt.len() {
                    return;
                }
                a.decoding =
                    Some(Decoding::new(a.job.submitted, a.job.prompt.len(), a.job.prompt.len() - a.cached));
            }
            Part::Decode => tokens.push(a.next.take().expect("decoding")),
        }
        let Active { job, sampler, decoding, next, .. } = a;
        let d = decoding.as_mut().expect("prompt done");
        let sink = &mut job.sink;
        let mut on_chunk = |c: Chunk<'_>| sink(Event::Chunk(c));
        let before = d.n_generated();
        let step = d.step(tok, &job.params, sampler, logits, &mut on_chunk);
        self.shared.generated_tokens.fetch_add((d.n_generated() - before) as u64, Ordering::Relaxed);
        match step {
            Step::Next(id) if tokens.len() < n_ctx => *next = Some(id),
            Step::Next(_) => self.finish(i, FinishReason::ContextFull),
            Step::Finished(f) => self.finish(i, f),
        }
    }

    /// End slot `i`'s request with `finish` (held-back text released as a solo run does).
    fn finish(&mut self, i: usize, finish: FinishReason) {
        let Some(a) = self.slots[i].active.as_mut() else { return };
        let completion = match a.decoding.take() {
            Some(d) => {
                let sink = &mut a.job.sink;
                let mut on_chunk = |c: Chunk<'_>| sink(Event::Chunk(c));
                // A constraint that failed mid-generation is the request's error.
                let result = d.finish_checked(finish, &a.job.params, &mut on_chunk);
                return self.end(i, result);
            }
            // Cancelled before its first token.
            None => Decoding::new(a.job.submitted, a.job.prompt.len(), a.fed - a.cached).finish(
                finish,
                &a.job.params,
                &mut |_| ControlFlow::Continue(()),
            ),
        };
        self.end(i, Ok(completion));
    }

    /// Free slot `i`, telling its request how it ended.
    fn end(&mut self, i: usize, result: Result<Completion>) {
        let slot = &mut self.slots[i];
        let Some(mut a) = slot.active.take() else { return };
        self.clock += 1;
        slot.last_used = self.clock;
        // The counters first: whoever hears `Done` sees them up to date. (A cache holding an
        // unfinished prompt is still a valid prefix of it: it stays.)
        self.shared.busy.fetch_sub(1, Ordering::Relaxed);
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        let _ = (a.job.sink)(Event::Done(result));
    }
}
