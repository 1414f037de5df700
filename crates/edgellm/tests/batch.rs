//! The continuous-batching scheduler on SmolLM2: every request of a concurrent mix (greedy and
//! seeded sampling, short and long prompts, stop strings, shared prefixes) returns exactly the
//! text and tokens of its solo run; the prompt cache reuses a shared prefix; a request whose
//! sink breaks frees its slot; the queue limit refuses with `QueueFull`.
//!
//! Run in release: `cargo test --release -p edgellm --test batch`. Skips, saying so, when the
//! models directory is absent (run `scripts/fetch-models`).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

use edgellm::batch::{BatchOptions, Batcher, Event};
use edgellm::{Completion, Engine, EngineOptions, Error, FinishReason, GenerateParams, SamplerConfig};

fn engine() -> Option<Arc<Engine>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root.join("models"));
    if !dir.is_dir() {
        eprintln!("skipping: the models directory {} is absent (run scripts/fetch-models)", dir.display());
        return None;
    }
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    Some(Arc::new(Engine::load(&p, EngineOptions { n_ctx: 1024, ..EngineOptions::default() }).unwrap()))
}

/// What a request's sink saw.
#[derive(Debug, Default)]
struct Seen {
    started: Option<(usize, usize)>,
    text: String,
    ids: Vec<u32>,
    done: Option<Result<Completion, String>>,
}

/// Submit and collect every event into a channel, returned per request.
fn submit(b: &Batcher, prompt: Vec<u32>, params: GenerateParams) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    let mut seen = Seen::default();
    b.submit(
        prompt,
        params,
        Box::new(move |e| {
            match e {
                Event::Started { prompt_tokens, cached_tokens } => {
                    seen.started = Some((prompt_tokens, cached_tokens))
                }
                Event::Chunk(c) => {
                    seen.text.push_str(c.text);
                    seen.ids.extend(c.id);
                }
                Event::Done(r) => {
                    seen.done = Some(r.map_err(|e| e.to_string()));
                    let _ = tx.send(std::mem::take(&mut seen));
                }
            }
            ControlFlow::Continue(())
        }),
    )
    .unwrap();
    rx
}

fn mix(e: &Engine) -> Vec<(Vec<u32>, GenerateParams)> {
    let system = "You are a helpful assistant for a smart home. Answer briefly and precisely. ";
    let prompts = [
        "The capital of France is",
        "List three colours:",
        "Turn on the kitchen lights and",
        "Once upon a time, in a small village by the sea, there lived an old fisherman who",
        "Q: What is 12 times 7?\nA:",
        "Water boils at",
        "The best way to learn a language is",
        "Write a haiku about winter:",
    ];
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let text = if i % 3 == 0 { format!("{system}{p}") } else { p.to_string() };
            let ids = e.tokenize(&text, true).unwrap();
            let mut params = GenerateParams::greedy(8 + 7 * i);
            if i % 2 == 1 {
                params.sampling =
                    SamplerConfig { temperature: 0.9, seed: 100 + i as u64, ..SamplerConfig::default() };
            }
            if i == 4 {
                params = params.with_stop(["\n"]);
            }
            (ids, params)
        })
        .collect()
}

#[test]
fn every_request_equals_its_solo_run() {
    let Some(e) = engine() else { return };
    let work = mix(&e);
    let solo: Vec<Completion> = work
        .iter()
        .map(|(p, params)| e.generate_ids(p, params, |_| ControlFlow::Continue(())).unwrap())
        .collect();
    for parallel in [1, 3, 8] {
        let b =
            Batcher::new(e.clone(), BatchOptions { parallel, prefill_chunk: 24, ..BatchOptions::default() })
                .unwrap();
        let rxs: Vec<_> = work.iter().map(|(p, params)| submit(&b, p.clone(), params.clone())).collect();
        for (i, (rx, want)) in rxs.into_iter().zip(&solo).enumerate() {
            let seen = rx.recv().unwrap();
            let got = seen.done.unwrap().unwrap();
            assert_eq!(got.ids, want.ids, "parallel {parallel}, request {i}: tokens");
            assert_eq!(got.text, want.text, "parallel {parallel}, request {i}: text");
            assert_eq!(got.finish, want.finish, "parallel {parallel}, request {i}: finish");
            assert_eq!(seen.text, got.text, "parallel {parallel}, request {i}: streamed text");
            assert_eq!(seen.ids, got.ids, "parallel {parallel}, request {i}: streamed ids");
            assert_eq!(seen.started.unwrap().0, work[i].0.len());
        }
        let st = b.stats();
        assert_eq!(st.requests, work.len() as u64);
        assert_eq!(st.slots_busy, 0);
        assert_eq!(st.generated_tokens, solo.iter().map(|c| c.ids.len() as u64).sum::<u64>());
        if parallel > 1 {
            assert!(
                st.step_sequences > st.steps,
                "parallel {parallel}: sequences should share steps ({} sequences over {} steps)",
                st.step_sequences,
                st.steps
            );
        }
    }
}

#[test]
fn a_shared_prefix_is_reused_from_the_slot_cache() {
    let Some(e) = engine() else { return };
    let b = Batcher::new(e.clone(), BatchOptions { parallel: 2, ..BatchOptions::default() }).unwrap();
    let system = "You are a careful assistant. Keep every answer to one sentence, and never make things up. ";
    let first = e.tokenize(&format!("{system}What is a kettle?"), true).unwrap();
    let second = e.tokenize(&format!("{system}What is a toaster?"), true).unwrap();
    let common = first.iter().zip(&second).take_while(|(a, b)| a == b).count();
    assert!(common > 10);
    let a = submit(&b, first, GenerateParams::greedy(6)).recv().unwrap();
    assert_eq!(a.started.unwrap().1, 0, "nothing cached at first");
    let want = e.generate_ids(&second, &GenerateParams::greedy(6), |_| ControlFlow::Continue(())).unwrap();
    let s = submit(&b, second.clone(), GenerateParams::greedy(6)).recv().unwrap();
    assert_eq!(s.started.unwrap(), (second.len(), common), "the shared prefix comes from the cache");
    let got = s.done.unwrap().unwrap();
    assert_eq!(got.cached_tokens, common);
    assert_eq!(got.ids, want.ids, "a cached prefix gives the same tokens");
    assert_eq!(b.stats().cached_tokens, common as u64);
}

#[test]
fn a_breaking_sink_frees_its_slot_and_the_queue_is_bounded() {
    let Some(e) = engine() else { return };
    let b = Batcher::new(e.clone(), BatchOptions { parallel: 1, queue_limit: 1, prefill_chunk: 64 }).unwrap();
    let p = e.tokenize("Tell me a very long story about dragons.", true).unwrap();
    // A client that goes away after its third token.
    let (tx, rx) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    let (go_tx, go) = mpsc::channel::<()>();
    let mut n = 0;
    b.submit(
        p.clone(),
        GenerateParams { ignore_eos: true, ..GenerateParams::greedy(500) },
        Box::new(move |ev| match ev {
            Event::Chunk(_) => {
                n += 1;
                if n == 1 {
                    // Hold the slot until the test has filled the queue.
                    let _ = started_tx.send(());
                    let _ = go.recv();
                }
                if n == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
            Event::Done(r) => {
                let _ = tx.send(r.map(|c| (c.finish, c.ids.len())).map_err(|e| e.to_string()));
                ControlFlow::Continue(())
            }
            Event::Started { .. } => ControlFlow::Continue(()),
        }),
    )
    .unwrap();
    // The first holds the only slot: the queue takes one more and refuses the next.
    started.recv().unwrap();
    // ignore_eos: whether this model's greedy continuation ends early depends on its kernels'
    // rounding; the point is that the freed slot serves all four tokens.
    let queued = submit(&b, p.clone(), GenerateParams { ignore_eos: true, ..GenerateParams::greedy(4) });
    let third = b.submit(p.clone(), GenerateParams::greedy(4), Box::new(|_| ControlFlow::Continue(())));
    assert!(matches!(third, Err(Error::QueueFull { queued: 1, slots: 1, limit: 1 })), "{third:?}");
    assert_eq!((b.stats().slots_busy, b.stats().queued), (1, 1));
    go_tx.send(()).unwrap();
    let (finish, n_ids) = rx.recv().unwrap().unwrap();
    assert_eq!(finish, FinishReason::Cancelled);
    assert_eq!(n_ids, 3);
    let after = queued.recv().unwrap().done.unwrap().unwrap();
    assert_eq!(after.ids.len(), 4, "the freed slot serves the next request");
    let st = b.stats();
    assert_eq!((st.slots_busy, st.queued), (0, 0));
}

#[test]
fn bad_requests_are_refused_at_submit() {
    let Some(e) = engine() else { return };
    let b = Batcher::new(e.clone(), BatchOptions::default()).unwrap();
    let nop = || -> edgellm::batch::Sink { Box::new(|_| ControlFlow::Continue(())) };
    let n_ctx = e.info().n_ctx;
    assert!(matches!(
        b.submit(vec![1; n_ctx + 1], GenerateParams::greedy(1), nop()),
        Err(Error::Runtime(edgellm::RuntimeError::PromptTooLong { .. }))
    ));
    assert!(matches!(
        b.submit(vec![], GenerateParams::greedy(1), nop()),
        Err(Error::Runtime(edgellm::RuntimeError::EmptyPrompt))
    ));
    assert!(matches!(
        b.submit(vec![u32::MAX], GenerateParams::greedy(1), nop()),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        b.submit(vec![1], GenerateParams::greedy(1).with_temperature(-1.0), nop()),
        Err(Error::InvalidParams(_))
    ));
}
