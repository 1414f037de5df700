//! `edgellm::Engine` on the real models (SmolLM2, Gemma 3, all-MiniLM-L6-v2): generation equal
//! to the runtime's own session, stop strings, cancellation, seeded sampling, embeddings equal
//! to the embedding pipeline's, tokenization, and typed errors for bad input.
//!
//! Run in release: `cargo test --release -p edgellm --test engine`. Every test skips, saying
//! so, when the models directory is absent (run `scripts/fetch-models`); a model missing from a
//! present directory is a failure.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;

use edgellm::{
    CancelToken, Chunk, Completion, Engine, EngineOptions, Error, FinishReason, GenerateParams, KvType,
    Message, ModelKind, RuntimeError, SamplerConfig, TemplateSource,
};
use edgellm_core::tolerance::{assert_ulps, embeddings::MIN_COSINE_VS_REFERENCE};
use edgellm_runtime::embed::{Embedder, DEFAULT_BATCH};
use edgellm_runtime::{GenerateOptions, LoadedModel, Sampler, StopReason};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
const MINILM: &str = "all-MiniLM-L6-v2";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The models directory, or `None` (with a message) when it is absent.
fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("EDGELLM_MODELS").map(PathBuf::from).unwrap_or_else(|| root().join("models"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: the models directory {} is absent (run scripts/fetch-models)", dir.display());
        None
    }
}

/// A model of the models directory, or `None` when the directory is absent.
fn model(name: &str) -> Option<PathBuf> {
    let p = models_dir()?.join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    Some(p)
}

/// SmolLM2 with the default options, loaded once and shared by the tests (an `Engine` is
/// `Sync`).
fn smollm2() -> Option<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    let p = model(SMOLLM2)?;
    Some(ENGINE.get_or_init(|| Engine::load(&p, EngineOptions::default()).unwrap()))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgellm-engine-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A generation with every callback call recorded.
struct Run {
    completion: Completion,
    chunks: Vec<(Option<u32>, String)>,
}

impl Run {
    fn streamed_text(&self) -> String {
        self.chunks.iter().map(|(_, t)| t.as_str()).collect()
    }
}

fn record(engine: &Engine, prompt: &str, params: &GenerateParams) -> Run {
    let mut chunks = Vec::new();
    let completion = engine
        .generate(prompt, params, |c: Chunk<'_>| {
            chunks.push((c.id, c.text.to_string()));
            ControlFlow::Continue(())
        })
        .unwrap();
    Run { completion, chunks }
}

const STORY: &str = "Once upon a time, in a small village by the sea,";

#[test]
fn greedy_generation_equals_the_runtime_session() {
    for name in [SMOLLM2, GEMMA3] {
        let Some(p) = model(name) else { return };
        let engine = Engine::load(&p, EngineOptions::default()).unwrap();
        let lm = LoadedModel::load(&p, 0).unwrap();
        for prompt in ["The capital of France is", STORY] {
            let ids = lm.tokenize_prompt(prompt);
            assert_eq!(engine.tokenize(prompt, true).unwrap(), ids, "{name}: {prompt:?}");
            let mut sampler = Sampler::new(SamplerConfig { temperature: 0.0, ..SamplerConfig::default() });
            let opts = GenerateOptions { max_tokens: 32, stop_at_eog: true };
            let want = lm.session().generate(&ids, &opts, &mut sampler, |_| true).unwrap();
            let got = record(&engine, prompt, &GenerateParams::greedy(32));
            let c = &got.completion;
            assert_eq!(c.ids, want.ids, "{name}: {prompt:?}");
            assert_eq!(c.text, want.text, "{name}: {prompt:?}");
            assert_eq!(got.streamed_text(), c.text);
            let finish = match want.stop {
                StopReason::EndOfGeneration => FinishReason::Eos,
                StopReason::Length => FinishReason::Length,
                StopReason::ContextFull => FinishReason::ContextFull,
                StopReason::Cancelled => FinishReason::Cancelled,
            };
            assert_eq!(c.finish, finish);
            assert_eq!((c.prompt_tokens, c.cached_tokens), (ids.len(), 0));
            assert_eq!(c.timings.gen_tokens, c.ids.len());
            assert!(c.timings.ttft_ms > 0.0 && c.timings.gen_tokens_per_s() > 0.0);
            eprintln!("{name}: {prompt:?} -> {:?} ({})", c.text, c.finish.as_str());
        }
    }
}

/// Byte offset in the reference text where each token's text ends.
fn ends(reference: &Run) -> Vec<usize> {
    let mut acc = 0;
    reference
        .chunks
        .iter()
        .filter(|(id, _)| id.is_some())
        .map(|(_, t)| {
            acc += t.len();
            acc
        })
        .collect()
}

/// Generation with `stops` against the reference run without them: the text is the
/// reference's up to the first stop string, the ids stop at the token that completes it, and
/// the callback saw exactly that text and nothing after.
fn check_stops(engine: &Engine, reference: &Run, stops: &[String]) {
    let r = &reference.completion;
    let params = GenerateParams::greedy(r.ids.len()).with_stop(stops.iter().cloned());
    let got = record(engine, STORY, &params);
    let c = &got.completion;
    assert_eq!(got.streamed_text(), c.text, "the callback's text is the completion's");
    match stops.iter().filter_map(|s| r.text.find(s.as_str()).map(|at| (at, at + s.len()))).min() {
        Some((at, end)) => {
            let n_tokens = ends(reference).iter().position(|&e| e >= end).unwrap() + 1;
            assert_eq!(c.finish, FinishReason::Stop, "{stops:?}");
            assert_eq!(c.text, r.text[..at], "{stops:?}");
            assert_eq!(c.ids, r.ids[..n_tokens], "{stops:?}");
            assert_eq!(got.chunks.len(), n_tokens, "no callback after the stop string");
            assert!(stops.iter().all(|s| !c.text.contains(s.as_str())));
        }
        None => {
            assert_eq!(c.finish, r.finish, "{stops:?}");
            assert_eq!(c.text, r.text, "{stops:?}");
            assert_eq!(c.ids, r.ids, "{stops:?}");
        }
    }
}

#[test]
fn stop_strings_cut_the_text_and_nothing_after_them_is_streamed() {
    let Some(engine) = smollm2() else { return };
    let reference = record(engine, STORY, &GenerateParams::greedy(40));
    let r = &reference.completion;
    assert_eq!(r.finish, FinishReason::Length, "the reference should run to its limit: {:?}", r.text);
    let pieces: Vec<&str> = reference.chunks.iter().map(|(_, t)| t.as_str()).collect();
    // Tokens with at least two characters of text, past the first few.
    let wide: Vec<usize> = (4..pieces.len() - 2)
        .filter(|&i| pieces[i].chars().count() >= 2 && !pieces[i + 1].is_empty())
        .collect();
    assert!(wide.len() >= 3, "{pieces:?}");
    let (k, m) = (wide[0], wide[wide.len() / 2]);
    let tail =
        |s: &str, n: usize| s.chars().rev().take(n).collect::<Vec<_>>().into_iter().rev().collect::<String>();
    let head = |s: &str, n: usize| s.chars().take(n).collect::<String>();

    // One that spans two tokens: the end of token k and the start of token k + 1.
    let spanning = format!("{}{}", tail(pieces[k], 2), head(pieces[k + 1], 1));
    eprintln!("reference {:?}; stop strings {spanning:?}, {:?}, {:?}", r.text, pieces[m], pieces[k]);
    check_stops(engine, &reference, &[spanning]);
    // One token's whole text, and two stop strings where the earlier one wins.
    check_stops(engine, &reference, &[pieces[m].to_string()]);
    check_stops(engine, &reference, &[pieces[m].to_string(), pieces[k].to_string()]);
    // Text that begins a stop string is held back, then released when the stop string does
    // not follow: all of it comes out, in order.
    let never = format!("{}\u{1}", pieces[k]);
    check_stops(engine, &reference, std::slice::from_ref(&never));
    let held = record(engine, STORY, &GenerateParams::greedy(r.ids.len()).with_stop([never]));
    let through_k: String = held.chunks[..=k].iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(through_k, r.text[..ends(&reference)[k] - pieces[k].len()], "token {k}'s text waits");
    // Held back at the very end: handed out by the last call, with no token.
    let last = reference.chunks.iter().rev().find(|(id, _)| id.is_some()).unwrap().1.clone();
    assert!(!last.is_empty());
    let held =
        record(engine, STORY, &GenerateParams::greedy(r.ids.len()).with_stop([format!("{last}\u{1}")]));
    assert_eq!(held.completion.text, r.text);
    let (id, text) = held.chunks.last().unwrap();
    assert!(id.is_none() && text.ends_with(&last), "{:?}", held.chunks.last());
}

#[test]
fn cancellation_after_k_tokens_yields_k_tokens() {
    let Some(engine) = smollm2() else { return };
    let reference = record(engine, STORY, &GenerateParams::greedy(20));
    for k in [1, 5] {
        // The callback breaks at its k-th call.
        let mut calls = 0;
        let c = engine
            .generate(STORY, &GenerateParams::greedy(20), |_| {
                calls += 1;
                if calls == k {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!((calls, c.ids.len(), c.finish), (k, k, FinishReason::Cancelled));
        assert_eq!(c.ids, reference.completion.ids[..k]);
        assert!(reference.completion.text.starts_with(&c.text));

        // A cancel token raised at the k-th call stops before the next token.
        let token = CancelToken::new();
        let mut calls = 0;
        let params = GenerateParams::greedy(20).with_cancel(token.clone());
        let c = engine
            .generate(STORY, &params, |_| {
                calls += 1;
                if calls == k {
                    token.cancel();
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!((calls, c.ids.len(), c.finish), (k, k, FinishReason::Cancelled));
        assert_eq!(c.ids, reference.completion.ids[..k]);
    }
    // Cancelled before it starts: no token, no call.
    let token = CancelToken::new();
    token.cancel();
    let c = engine
        .generate(STORY, &GenerateParams::greedy(20).with_cancel(token), |_| panic!("no token expected"))
        .unwrap();
    assert_eq!((c.ids.len(), c.text.as_str(), c.finish), (0, "", FinishReason::Cancelled));
}

#[test]
fn same_seed_same_text_whatever_the_thread_count() {
    let Some(p) = model(SMOLLM2) else { return };
    let params = GenerateParams {
        max_tokens: 24,
        sampling: SamplerConfig {
            temperature: 0.9,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 1234,
            ..SamplerConfig::default()
        },
        ignore_eos: true,
        ..GenerateParams::default()
    };
    let mut runs = Vec::new();
    for threads in [1, 2, 1] {
        let engine =
            Engine::load(&p, EngineOptions { threads: Some(threads), ..Default::default() }).unwrap();
        assert_eq!(edgellm_core::parallel::num_threads(), threads);
        runs.push(engine.generate(STORY, &params, |_| ControlFlow::Continue(())).unwrap());
    }
    assert_eq!(runs[0].ids.len(), 24);
    for r in &runs[1..] {
        assert_eq!(r.text, runs[0].text);
        assert_eq!(r.ids, runs[0].ids);
    }
    // The sampled text is not simply the greedy one.
    let greedy =
        smollm2().unwrap().generate(STORY, &GenerateParams::greedy(24), |_| ControlFlow::Continue(()));
    assert_ne!(greedy.unwrap().ids, runs[0].ids);
}

#[test]
fn sessions_on_several_threads_give_their_solo_results() {
    let Some(engine) = smollm2() else { return };
    let prompts = ["The capital of France is", STORY, "1, 2, 3, 4,"];
    let solo: Vec<Completion> = prompts
        .iter()
        .map(|p| engine.generate(p, &GenerateParams::greedy(16), |_| ControlFlow::Continue(())).unwrap())
        .collect();
    let together: Vec<Completion> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                s.spawn(move || {
                    let mut session = engine.session().unwrap();
                    session.generate(p, &GenerateParams::greedy(16), |_| ControlFlow::Continue(())).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in solo.iter().zip(&together) {
        assert_eq!(a.ids, b.ids);
        assert_eq!(a.text, b.text);
    }
}

#[test]
fn chat_applies_the_template_and_a_session_reuses_the_conversation() {
    let Some(engine) = smollm2() else { return };
    assert_eq!(engine.info().chat_template, TemplateSource::File);
    let mut messages = vec![Message::new("user", "What is the capital of France?")];
    let ids = engine.chat_prompt(&messages).unwrap();
    let rendered = engine.apply_chat_template(&messages, true).unwrap();
    assert!(rendered.contains("What is the capital of France?"));
    assert_eq!(engine.detokenize(&ids).unwrap(), rendered, "special tokens parsed, no BOS added");
    let params = GenerateParams::greedy(24);
    let a = engine.chat(&messages, &params, |_| ControlFlow::Continue(())).unwrap();
    let b = engine.generate_ids(&ids, &params, |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(a, Completion { timings: a.timings, ..b.clone() });
    assert!(!a.text.trim().is_empty());

    let mut session = engine.session().unwrap();
    let first = session.chat(&messages, &params, |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(first.ids, a.ids);
    messages.push(Message::new("assistant", first.text.trim()));
    messages.push(Message::new("user", "And of Italy?"));
    let second = session.chat(&messages, &params, |_| ControlFlow::Continue(())).unwrap();
    assert!(second.cached_tokens >= first.prompt_tokens, "{} cached", second.cached_tokens);
    assert_eq!(second.timings.prompt_tokens, second.prompt_tokens - second.cached_tokens);
}

#[test]
fn embeddings_equal_the_embedding_pipeline() {
    let Some(dir) = model(MINILM) else { return };
    let texts = [
        "Turn on the lights in the kitchen.",
        "Switch the kitchen lights on.",
        "Quantization reduces the memory footprint of neural networks.",
        "",
        "Héllo, WORLD! naïve café 東京",
    ];
    let engine = Engine::load(&dir, EngineOptions::default()).unwrap();
    let info = engine.info();
    assert_eq!((info.kind, info.architecture.as_str()), (ModelKind::Encoder, "bert"));
    let embedder = Embedder::load(&dir).unwrap();
    assert_eq!(info.embedding_dim, Some(embedder.dim()));
    assert_eq!(info.n_ctx, embedder.max_seq_length());
    let got = engine.embed(&texts).unwrap();
    let want = embedder.embed_batch(&texts, DEFAULT_BATCH).unwrap();
    assert_eq!(got.len(), texts.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_ulps(&format!("directory, text {i}"), g, w, 0);
    }
    let got2 = engine.embed_batched(&texts, 2).unwrap();
    for (i, (g, w)) in got2.iter().zip(&embedder.embed_batch(&texts, 2).unwrap()).enumerate() {
        assert_ulps(&format!("directory, batches of 2, text {i}"), g, w, 0);
    }
    assert!(engine.embed::<&str>(&[]).unwrap().is_empty());

    // The same model as an F32 bert GGUF.
    let d = scratch("gguf");
    let gguf = d.join("minilm-f32.gguf");
    edgellm_models::bert::gguf_export(&dir).unwrap().write_f32(&gguf).unwrap();
    let from_gguf = Engine::load(&gguf, EngineOptions::default()).unwrap();
    let g_info = from_gguf.info();
    assert_eq!((g_info.kind, g_info.embedding_dim), (ModelKind::Encoder, info.embedding_dim));
    let elements: u64 =
        edgellm_formats::GgufFile::open(&gguf).unwrap().tensors.iter().map(|t| t.n_elements()).sum();
    assert_eq!(g_info.n_params, elements, "parameters counted from the config = the file's tensors");
    assert_eq!(info.n_params, elements);
    assert_eq!(g_info.file_bytes, std::fs::metadata(&gguf).unwrap().len());
    let got = from_gguf.embed(&texts).unwrap();
    let want_gguf = Embedder::load(&gguf).unwrap().embed_batch(&texts, DEFAULT_BATCH).unwrap();
    for (i, (g, w)) in got.iter().zip(&want_gguf).enumerate() {
        assert_ulps(&format!("gguf, text {i}"), g, w, 0);
        let c = edgellm::cosine(g, &want[i]) as f64;
        assert!(c >= MIN_COSINE_VS_REFERENCE, "gguf against directory, text {i}: cosine {c}");
    }
    assert_eq!(from_gguf.tokenize(texts[0], true).unwrap(), engine.tokenize(texts[0], true).unwrap());
    std::fs::remove_dir_all(&d).ok();

    // An encoder does not generate; a decoder does not embed.
    let e = engine.generate("hi", &GenerateParams::greedy(4), |_| ControlFlow::Continue(())).unwrap_err();
    assert!(matches!(e, Error::NotADecoder { .. }), "{e}");
    assert!(matches!(engine.session(), Err(Error::NotADecoder { .. })));
    assert!(matches!(engine.chat_prompt(&[Message::new("user", "hi")]), Err(Error::NotADecoder { .. })));
    if let Some(decoder) = smollm2() {
        let e = decoder.embed(&["hello"]).unwrap_err();
        assert!(matches!(e, Error::NotAnEncoder { .. }), "{e}");
        assert!(e.to_string().contains("not an embedding model"), "{e}");
    }
}

#[test]
fn tokenize_detokenize_round_trip_and_out_of_range_ids() {
    let texts = ["Hello, world!", "Héllo wörld 🙂 東京\n\tfn main() { println!(\"x\"); }", " two  spaces"];
    for name in [SMOLLM2, GEMMA3] {
        let Some(p) = model(name) else { return };
        let engine = Engine::load(&p, EngineOptions::default()).unwrap();
        let lm = LoadedModel::load(&p, 0).unwrap();
        for t in texts {
            let ids = engine.tokenize(t, false).unwrap();
            assert_eq!(engine.detokenize(&ids).unwrap(), t, "{name}");
            assert_eq!(engine.tokenize(t, true).unwrap(), lm.tokenize_prompt(t), "{name}");
            assert_eq!(engine.tokenize_with(t, true, false).unwrap(), lm.tokenizer.encode(t, true, false));
        }
        let n = engine.info().n_vocab;
        assert_eq!(n, lm.tokenizer.vocab_size());
        for bad in [n as u32, u32::MAX] {
            let e = engine.detokenize(&[0, bad]).unwrap_err();
            assert!(
                matches!(e, Error::TokenOutOfRange { id, vocab_size } if id == bad && vocab_size == n),
                "{e}"
            );
        }
        assert_eq!(engine.detokenize(&[]).unwrap(), "");
    }
    let Some(engine) = smollm2() else { return };
    let special = engine.tokenize_with("<|im_end|>", false, true).unwrap();
    assert_eq!(special.len(), 1);
    assert_eq!(engine.detokenize(&special).unwrap(), "<|im_end|>");
    assert!(engine.tokenize("<|im_end|>", false).unwrap().len() > 1, "not parsed without parse_special");

    let Some(dir) = model(MINILM) else { return };
    let encoder = Engine::load(&dir, EngineOptions::default()).unwrap();
    let with = encoder.tokenize("hello world", true).unwrap();
    let without = encoder.tokenize("hello world", false).unwrap();
    assert_eq!(with.len(), without.len() + 2, "[CLS] and [SEP]");
    assert_eq!(encoder.detokenize(&without).unwrap(), "hello world");
    let n = encoder.info().n_vocab;
    assert!(matches!(encoder.detokenize(&[n as u32]), Err(Error::TokenOutOfRange { .. })));
}

#[test]
fn context_limits_are_typed_errors_or_finish_reasons() {
    let Some(p) = model(SMOLLM2) else { return };
    let engine = Engine::load(&p, EngineOptions { n_ctx: 32, ..Default::default() }).unwrap();
    assert_eq!(engine.info().n_ctx, 32);
    let long = "word ".repeat(100);
    let e = engine.generate(&long, &GenerateParams::greedy(4), |_| ControlFlow::Continue(())).unwrap_err();
    assert!(matches!(e, Error::Runtime(RuntimeError::PromptTooLong { n_ctx: 32, .. })), "{e}");
    assert!(e.to_string().contains("context holds 32"), "{e}");
    let e = engine.generate_ids(&[], &GenerateParams::greedy(4), |_| ControlFlow::Continue(())).unwrap_err();
    assert!(matches!(e, Error::Runtime(RuntimeError::EmptyPrompt)), "{e}");
    let n = engine.info().n_vocab as u32;
    let e =
        engine.generate_ids(&[1, n], &GenerateParams::greedy(4), |_| ControlFlow::Continue(())).unwrap_err();
    assert!(matches!(e, Error::TokenOutOfRange { id, .. } if id == n), "{e}");
    // Generation fills the context and stops there.
    let prompt = engine.tokenize(STORY, true).unwrap();
    let params = GenerateParams { ignore_eos: true, ..GenerateParams::greedy(100) };
    let c = engine.generate_ids(&prompt, &params, |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(c.finish, FinishReason::ContextFull);
    assert_eq!(c.ids.len(), 32 - prompt.len() + 1, "the last sampled token needs no cache slot");
    // No tokens asked for: none generated, the prompt still checked.
    let c = engine.generate_ids(&prompt, &GenerateParams::greedy(0), |_| ControlFlow::Continue(())).unwrap();
    assert_eq!((c.ids.len(), c.finish), (0, FinishReason::Length));
}

#[test]
fn info_describes_the_model() {
    let Some(p) = model(SMOLLM2) else { return };
    let engine = smollm2().unwrap();
    let lm = LoadedModel::load(&p, 0).unwrap();
    let info = engine.info();
    let mi = lm.model.info();
    assert_eq!((info.kind, info.architecture.as_str()), (ModelKind::Decoder, mi.arch.as_str()));
    assert_eq!((info.n_params, info.n_ctx, info.n_ctx_train), (mi.n_params, lm.n_ctx, mi.n_ctx_train));
    assert_eq!((info.n_layer, info.n_embd, info.n_vocab), (mi.n_layer, mi.n_embd, lm.tokenizer.vocab_size()));
    assert_eq!(info.file_bytes, std::fs::metadata(&p).unwrap().len());
    assert_eq!(info.kernel_tier, edgellm_core::kernels::tier_name());
    assert_eq!((info.kv_type, info.embedding_dim), (Some(KvType::F16), None));
    assert!(info.load_ms > 0.0 && info.name.is_some());
    let exact = Engine::load(&p, EngineOptions { exact: true, n_ctx: 64, ..Default::default() }).unwrap();
    assert_eq!((exact.info().kv_type, exact.info().n_ctx), (Some(KvType::F32), 64));
    let q8 =
        Engine::load(&p, EngineOptions { cache_type: Some(KvType::Q8_0), ..Default::default() }).unwrap();
    assert_eq!(q8.info().kv_type, Some(KvType::Q8_0));
}

#[test]
fn bad_sources_and_parameters_are_typed_errors() {
    let d = scratch("bad");
    let e = Engine::load(d.join("no-such-model.gguf"), EngineOptions::default()).unwrap_err();
    assert!(
        matches!(&e, Error::Runtime(RuntimeError::MissingFile(p)) if p.ends_with("no-such-model.gguf")),
        "{e}"
    );
    assert!(e.to_string().contains("does not exist"), "{e}");

    // A directory without config.json.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = Engine::load(&empty, EngineOptions::default()).unwrap_err();
    assert!(matches!(&e, Error::MissingConfig { dir } if dir == &empty), "{e}");
    assert!(e.to_string().contains("config.json"), "{e}");

    // A file that is not GGUF, and one too short to have a magic.
    for (name, bytes) in [("random.bin", &b"\x13\x37 definitely not a model"[..]), ("tiny", &b"GG"[..])] {
        let f = d.join(name);
        std::fs::write(&f, bytes).unwrap();
        let e = Engine::load(&f, EngineOptions::default()).unwrap_err();
        assert!(matches!(e, Error::UnknownFormat { .. }), "{e}");
        assert!(e.to_string().contains("not a GGUF file"), "{e}");
    }

    // Hugging Face directories of decoders (not supported yet) and of unknown architectures.
    for (model_type, decoder) in [("llama", true), ("gemma3_text", true), ("t5", false)] {
        let dir = d.join(model_type);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), format!("{{\"model_type\": \"{model_type}\"}}")).unwrap();
        let e = Engine::load(&dir, EngineOptions::default()).unwrap_err();
        if decoder {
            assert!(
                matches!(&e, Error::DecoderDirectoryUnsupported { arch, .. } if arch == model_type),
                "{e}"
            );
            assert!(e.to_string().contains("not supported yet"), "{e}");
        } else {
            assert!(matches!(&e, Error::UnsupportedArchitecture { arch, .. } if arch == model_type), "{e}");
        }
    }
    // A malformed config.json.
    let broken = d.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{ not json").unwrap();
    assert!(matches!(Engine::load(&broken, EngineOptions::default()), Err(Error::Config(_))));

    if let Some(p) = model(SMOLLM2) {
        // A truncated GGUF.
        let full = std::fs::read(&p).unwrap();
        let cut = d.join("cut.gguf");
        std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
        let e = Engine::load(&cut, EngineOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Gguf(_) | Error::Runtime(RuntimeError::Gguf(_))), "{e}");
        // A bert directory with a broken weight file.
        if let Some(minilm) = model(MINILM) {
            let st = d.join("corrupt-bert");
            std::fs::create_dir_all(&st).unwrap();
            for f in ["config.json", "tokenizer.json"] {
                std::fs::copy(minilm.join(f), st.join(f)).unwrap();
            }
            std::fs::write(st.join("model.safetensors"), b"not safetensors").unwrap();
            let e = Engine::load(&st, EngineOptions::default()).unwrap_err();
            assert!(matches!(e, Error::Embed(_)), "{e}");
        }
    }
    std::fs::remove_dir_all(&d).ok();

    assert!(matches!(edgellm::parse_cache_type("q4"), Err(Error::UnknownCacheType(_))));
    let Some(engine) = smollm2() else { return };
    let mut params = GenerateParams::greedy(4);
    params.sampling.temperature = f32::NAN;
    let e = engine.generate("hi", &params, |_| ControlFlow::Continue(())).unwrap_err();
    assert!(matches!(e, Error::InvalidParams(_)), "{e}");
    let e = engine.generate("hi", &GenerateParams::greedy(4).with_stop([""]), |_| ControlFlow::Continue(()));
    assert!(matches!(e, Err(Error::InvalidParams(_))));
}
