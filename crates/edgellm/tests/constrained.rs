//! Constrained decoding and token log-probabilities on the real models: output under JSON
//! schemas (greedy and seeded sampling) parses and validates against its schema, in a session
//! and through the batch scheduler; `json_object` gives an object; a bad schema is a typed
//! error before any work; no format changes nothing; log-probabilities equal the log-softmax
//! of the runtime session's own logits.
//!
//! Run in release: `cargo test --release -p edgellm --test constrained`. Every test skips,
//! saying so, when the models directory is absent (run `scripts/fetch-models`).

use std::ops::ControlFlow;
use std::sync::{mpsc, Arc, OnceLock};

use edgellm::batch::{BatchOptions, Batcher, Event};
use edgellm::{
    Chunk, Completion, Engine, EngineOptions, Error, FinishReason, GenerateParams, Message, OutputFormat,
    SamplerConfig, TokenLogprob, MAX_TOP_LOGPROBS,
};
use edgellm_runtime::{GenerateOptions, LoadedModel, Sampler};
use serde_json::{json, Value};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// Largest difference allowed between a reported log-probability and the test's own f64
/// log-softmax of the runtime session's logits. The logits are the same (same kernels, same
/// cache type); what differs is the reduction order of the log-sum-exp and the rounding of the
/// result to f32 (|logprob| < 100 → an f32 step ≤ 8e-6).
const LOGPROB_TOL: f64 = 1e-4;

mod common;
use common::model;

/// SmolLM2, loaded once (in an `Arc` for the batch scheduler).
fn smollm2() -> Option<&'static Arc<Engine>> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    let p = model(SMOLLM2)?;
    Some(ENGINE.get_or_init(|| Arc::new(Engine::load(&p, EngineOptions::default()).unwrap())))
}

/// A schema with what it is about, for the prompt.
struct Case {
    name: &'static str,
    ask: &'static str,
    schema: Value,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "enum property",
            ask: "Classify the sentiment of this review as JSON: 'The food was wonderful and the staff friendly.'",
            schema: json!({
                "type": "object",
                "properties": {
                    "sentiment": { "enum": ["positive", "negative", "neutral"] },
                    "confidence": { "enum": ["low", "medium", "high"] }
                },
                "required": ["sentiment", "confidence"],
                "additionalProperties": false
            }),
        },
        Case {
            name: "nested objects",
            ask: "Give a person with a name and a home address (street, city, country) as JSON.",
            schema: json!({
                "type": "object",
                "properties": {
                    "name": { "type": "string", "minLength": 1, "maxLength": 40 },
                    "address": {
                        "type": "object",
                        "properties": {
                            "street": { "type": "string", "maxLength": 40 },
                            "city": { "type": "string", "minLength": 1, "maxLength": 30 },
                            "country": {
                                "type": "object",
                                "properties": {
                                    "name": { "type": "string", "maxLength": 30 },
                                    "code": { "type": "string", "pattern": "^[A-Z]{2}$" }
                                },
                                "required": ["name", "code"],
                                "additionalProperties": false
                            }
                        },
                        "required": ["street", "city", "country"],
                        "additionalProperties": false
                    }
                },
                "required": ["name", "address"],
                "additionalProperties": false
            }),
        },
        Case {
            name: "array of objects",
            ask: "List three fruits with their colour as JSON.",
            schema: json!({
                "type": "object",
                "properties": {
                    "fruits": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 4,
                        "items": {
                            "type": "object",
                            "properties": {
                                "fruit": { "type": "string", "minLength": 1, "maxLength": 20 },
                                "colour": { "type": "string", "maxLength": 20 }
                            },
                            "required": ["fruit", "colour"],
                            "additionalProperties": false
                        }
                    }
                },
                "required": ["fruits"],
                "additionalProperties": false
            }),
        },
        Case {
            name: "numbers with bounds",
            ask: "Give the weather in Paris today as JSON: temperature in Celsius, humidity in percent, wind in km/h.",
            schema: json!({
                "type": "object",
                "properties": {
                    "temperature": { "type": "number", "minimum": -30, "maximum": 45 },
                    "humidity": { "type": "integer", "minimum": 0, "maximum": 100 },
                    "wind": { "type": "number", "exclusiveMinimum": 0, "maximum": 150 }
                },
                "required": ["temperature", "humidity", "wind"],
                "additionalProperties": false
            }),
        },
        Case {
            name: "required and optional fields",
            ask: "Describe a book as JSON: its title, its author, and optionally its year and page count.",
            schema: json!({
                "type": "object",
                "properties": {
                    "title": { "type": "string", "minLength": 1, "maxLength": 60 },
                    "author": { "type": "string", "minLength": 1, "maxLength": 40 },
                    "year": { "type": "integer", "minimum": 1400, "maximum": 2030 },
                    "pages": { "type": "integer", "minimum": 1, "maximum": 5000 },
                    "in_print": { "type": "boolean" }
                },
                "required": ["title", "author", "in_print"],
                "additionalProperties": false
            }),
        },
    ]
}

/// A chat generation with every callback call recorded; the streamed text must be the
/// completion's.
fn chat(engine: &Engine, ask: &str, params: &GenerateParams) -> edgellm::Result<Completion> {
    let messages = [Message::new("user", ask)];
    let mut streamed = String::new();
    let c = engine.chat(&messages, params, |c: Chunk<'_>| {
        streamed.push_str(c.text);
        ControlFlow::Continue(())
    })?;
    assert_eq!(streamed, c.text);
    Ok(c)
}

/// `text` parses as JSON and validates against `schema` (the failures listed otherwise).
fn assert_valid(schema: &Value, text: &str, what: &str) -> Value {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(&v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: {text} does not validate: {errors:?}");
    v
}

/// Seeded sampling, wide enough to stray from the greedy path.
fn sampled(max_tokens: usize, seed: u64) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..SamplerConfig::default()
        },
        ..GenerateParams::default()
    }
}

#[test]
fn output_follows_each_schema_greedy_and_sampled() {
    let Some(engine) = smollm2() else { return };
    for case in cases() {
        let format = OutputFormat::JsonSchema(case.schema.clone());
        let mut texts = Vec::new();
        for (how, params) in [
            ("greedy", GenerateParams::greedy(256)),
            ("seed 1", sampled(256, 1)),
            ("seed 2", sampled(256, 2)),
        ] {
            let what = format!("{} ({how})", case.name);
            let c = chat(engine, case.ask, &params.with_format(format.clone())).unwrap();
            eprintln!("{what}: {} tokens, {}: {}", c.ids.len(), c.finish.as_str(), c.text);
            assert!(
                matches!(c.finish, FinishReason::Stop | FinishReason::Eos),
                "{what}: ended by {:?}",
                c.finish
            );
            assert_valid(&case.schema, &c.text, &what);
            texts.push(c.text);
        }
        // The seeds draw other tokens than greedy decoding (the schema still holds).
        assert!(texts[1] != texts[0] || texts[2] != texts[0], "{}: sampling gave the greedy text", case.name);
        // The same seed, the same text.
        let again = chat(engine, case.ask, &sampled(256, 1).with_format(format)).unwrap();
        assert_eq!(again.text, texts[1], "{}", case.name);
    }
}

#[test]
fn constrained_sessions_on_a_second_model() {
    // Gemma 3: a SentencePiece vocabulary of 262k tokens (byte tokens, `<end_of_turn>`).
    let Some(p) = model(GEMMA3) else { return };
    let engine = Engine::load(&p, EngineOptions::default()).unwrap();
    for case in cases().into_iter().take(3) {
        let params = GenerateParams::greedy(256).with_format(OutputFormat::JsonSchema(case.schema.clone()));
        let c = chat(&engine, case.ask, &params).unwrap();
        eprintln!("gemma3 {}: {} tokens, {}: {}", case.name, c.ids.len(), c.finish.as_str(), c.text);
        assert!(matches!(c.finish, FinishReason::Stop | FinishReason::Eos), "{}: {:?}", case.name, c.finish);
        assert_valid(&case.schema, &c.text, case.name);
    }
}

#[test]
fn json_object_gives_an_object() {
    let Some(engine) = smollm2() else { return };
    // The default sampling chain (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05): an
    // unbounded object drawn from the full distribution can run past any limit.
    let seeded = GenerateParams { max_tokens: 256, ..GenerateParams::default() }.with_seed(7);
    for params in [GenerateParams::greedy(256), seeded] {
        let params = params.with_format(OutputFormat::JsonObject);
        let c = chat(engine, "Give the capital, population and currency of Japan as JSON.", &params).unwrap();
        eprintln!("json_object: {} tokens, {}: {}", c.ids.len(), c.finish.as_str(), c.text);
        assert!(matches!(c.finish, FinishReason::Stop | FinishReason::Eos), "{:?}", c.finish);
        let v: Value =
            serde_json::from_str(&c.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", c.text));
        assert!(v.is_object(), "{v}");
    }
    // A prompt that does not ask for JSON still gets an object.
    let params = GenerateParams::greedy(200).with_format(OutputFormat::JsonObject);
    let c = engine.generate("Once upon a time", &params, |_| ControlFlow::Continue(())).unwrap();
    eprintln!("json_object after a story prompt: {} tokens, {}: {}", c.ids.len(), c.finish.as_str(), c.text);
    assert!(c.text.trim_start().starts_with('{'), "{:?}", c.text);
    if c.finish != FinishReason::Length {
        assert!(serde_json::from_str::<Value>(&c.text).is_ok_and(|v| v.is_object()), "{:?}", c.text);
    }
}

#[test]
fn the_batch_scheduler_gives_the_session_results() {
    let Some(engine) = smollm2() else { return };
    let batcher =
        Batcher::new(engine.clone(), BatchOptions { parallel: 3, ..BatchOptions::default() }).unwrap();
    let runs: Vec<(Vec<u32>, GenerateParams)> = cases()
        .into_iter()
        .take(3)
        .enumerate()
        .map(|(i, case)| {
            let prompt = engine.chat_prompt(&[Message::new("user", case.ask)]).unwrap();
            let params = if i == 1 { sampled(200, 3) } else { GenerateParams::greedy(200) };
            (prompt, params.with_format(OutputFormat::JsonSchema(case.schema)).with_logprobs(2))
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    for (i, (prompt, params)) in runs.iter().enumerate() {
        let tx = tx.clone();
        let sink = Box::new(move |e: Event<'_>| {
            if let Event::Done(r) = e {
                let _ = tx.send((i, r));
            }
            ControlFlow::Continue(())
        });
        batcher.submit(prompt.clone(), params.clone(), sink).unwrap();
    }
    drop(tx);
    let mut got: Vec<(usize, Completion)> = rx.iter().map(|(i, r)| (i, r.unwrap())).collect();
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(got.len(), runs.len());
    for ((prompt, params), (_, batched)) in runs.iter().zip(&got) {
        let solo = engine.generate_ids(prompt, params, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(batched.ids, solo.ids);
        assert_eq!(batched.text, solo.text);
        assert_eq!(batched.finish, solo.finish);
        assert_eq!(batched.logprobs, solo.logprobs);
        assert!(serde_json::from_str::<Value>(&batched.text).is_ok(), "{:?}", batched.text);
    }
}

#[test]
fn a_bad_schema_is_an_error_before_any_work() {
    let Some(engine) = smollm2() else { return };
    let bad = [
        json!({ "type": "no such type" }),
        json!({ "type": "integer", "minimum": 10, "maximum": 1 }),
        json!({ "type": "object", "properties": { "a": { "$ref": "#/$defs/missing" } }, "required": ["a"] }),
        json!({ "type": "string", "pattern": "([a-z]" }),
    ];
    for schema in bad {
        let params = GenerateParams::greedy(8).with_format(OutputFormat::JsonSchema(schema.clone()));
        match engine.generate("Hello", &params, |_| panic!("no token expected")) {
            Err(e @ Error::InvalidSchema(_)) => eprintln!("{schema}: {e}"),
            other => panic!("{schema}: expected InvalidSchema, got {other:?}"),
        }
        let batcher =
            Batcher::new(engine.clone(), BatchOptions { parallel: 1, ..BatchOptions::default() }).unwrap();
        let r = batcher.submit(vec![1, 2, 3], params, Box::new(|_| panic!("no event expected")));
        assert!(matches!(r, Err(Error::InvalidSchema(_))), "{schema}: {r:?}");
    }
}

#[test]
fn no_format_changes_nothing() {
    let Some(p) = model(SMOLLM2) else { return };
    let engine = smollm2().unwrap();
    let lm = LoadedModel::load(&p, 0).unwrap();
    let prompt = "The capital of France is";
    let ids = lm.tokenize_prompt(prompt);
    for params in [GenerateParams::greedy(32), sampled(32, 11)] {
        let mut sampler = Sampler::new(params.sampling.clone());
        let opts = GenerateOptions { max_tokens: 32, stop_at_eog: true };
        let want = lm.session().generate(&ids, &opts, &mut sampler, |_| true).unwrap();
        let text = engine.generate(prompt, &params, |_| ControlFlow::Continue(())).unwrap();
        let explicit = params.clone().with_format(OutputFormat::Text);
        let same = engine.generate(prompt, &explicit, |_| ControlFlow::Continue(())).unwrap();
        let with_logprobs =
            engine.generate(prompt, &params.with_logprobs(5), |_| ControlFlow::Continue(())).unwrap();
        for c in [&text, &same, &with_logprobs] {
            assert_eq!(c.ids, want.ids);
            assert_eq!(c.text, want.text);
        }
        assert!(text.logprobs.is_empty());
        assert_eq!(with_logprobs.logprobs.len(), with_logprobs.ids.len());
    }
}

/// The f64 log-softmax of a row of logits.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// Every log-probability of `c` against the runtime session's logits for the same tokens.
fn check_logprobs(lm: &LoadedModel, prompt: &[u32], c: &Completion, k: usize, greedy: bool) {
    assert_eq!(c.logprobs.len(), c.ids.len());
    let mut session = lm.session();
    let (mut logits, _) = session.prefill(prompt).unwrap();
    let mut worst = 0.0f64;
    for (i, (lp, &id)) in c.logprobs.iter().zip(&c.ids).enumerate() {
        assert_eq!(lp.id, id);
        assert_eq!(lp.bytes, lm.tokenizer.piece(id));
        assert_eq!(lp.token, String::from_utf8_lossy(&lp.bytes));
        let reference = log_softmax(&logits);
        let want = reference[id as usize];
        let diff = (lp.logprob as f64 - want).abs();
        worst = worst.max(diff);
        assert!(
            diff <= LOGPROB_TOL,
            "token {i} ({id}): logprob {} vs {want} (tolerance {LOGPROB_TOL})",
            lp.logprob
        );
        assert!(lp.logprob <= 0.0);
        assert_eq!(lp.top.len(), k);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1), "top not sorted: {:?}", lp.top);
        for &(t, l) in &lp.top {
            assert!((l as f64 - reference[t as usize]).abs() <= LOGPROB_TOL, "token {i}: top {t}");
        }
        // The k-th alternative is no less likely than any token left out.
        if let Some(&(_, last)) = lp.top.last() {
            let left_out = (0..logits.len())
                .filter(|&t| !lp.top.iter().any(|&(a, _)| a as usize == t))
                .map(|t| reference[t])
                .fold(f64::NEG_INFINITY, f64::max);
            assert!(last as f64 >= left_out - LOGPROB_TOL, "token {i}: {last} < {left_out}");
        }
        if greedy {
            assert_eq!(lp.top[0].0, id, "token {i}: greedy chose {id}, top-1 is {:?}", lp.top[0]);
            assert_eq!(lp.top[0].1, lp.logprob);
        }
        if i + 1 < c.ids.len() {
            session.decode(id, &mut logits).unwrap();
        }
    }
    eprintln!("{} tokens: largest logprob difference {worst:.2e}", c.ids.len());
}

#[test]
fn logprobs_are_the_log_softmax_of_the_model_logits() {
    let Some(p) = model(SMOLLM2) else { return };
    let engine = smollm2().unwrap();
    let lm = LoadedModel::load(&p, 0).unwrap();
    let prompt = lm.tokenize_prompt("Once upon a time, in a small village by the sea,");
    for (params, k, greedy) in [
        (GenerateParams::greedy(24).with_logprobs(5), 5, true),
        (GenerateParams::greedy(8).with_logprobs(MAX_TOP_LOGPROBS), MAX_TOP_LOGPROBS, true),
        (sampled(24, 5).with_logprobs(3), 3, false),
        (GenerateParams::greedy(8).with_logprobs(0), 0, false),
    ] {
        let mut chunks: Vec<TokenLogprob> = Vec::new();
        let c = engine
            .generate_ids(&prompt, &params, |ch| {
                if ch.id.is_some() {
                    chunks.push(ch.logprob.expect("a token's chunk carries its logprob").clone());
                } else {
                    assert!(ch.logprob.is_none());
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        // The chunks carry the completion's log-probabilities (an end-of-generation token has
        // no chunk).
        let n_chunks = if c.finish == FinishReason::Eos { c.ids.len() - 1 } else { c.ids.len() };
        assert_eq!(chunks[..], c.logprobs[..n_chunks]);
        check_logprobs(&lm, &prompt, &c, k, greedy);
    }
    // Constrained: the raw model distribution, the chosen token among the allowed ones.
    let case = &cases()[0];
    let prompt = engine.chat_prompt(&[Message::new("user", case.ask)]).unwrap();
    let params = GenerateParams::greedy(64)
        .with_format(OutputFormat::JsonSchema(case.schema.clone()))
        .with_logprobs(4);
    let c = engine.generate_ids(&prompt, &params, |_| ControlFlow::Continue(())).unwrap();
    check_logprobs(&lm, &prompt, &c, 4, false);
}

#[test]
fn too_many_top_logprobs_is_an_error() {
    let Some(engine) = smollm2() else { return };
    let params = GenerateParams::greedy(4).with_logprobs(MAX_TOP_LOGPROBS + 1);
    let r = engine.generate("Hello", &params, |_| panic!("no token expected"));
    assert!(matches!(&r, Err(Error::InvalidParams(m)) if m.contains("logprobs")), "{r:?}");
    assert!(GenerateParams::greedy(4).with_logprobs(MAX_TOP_LOGPROBS).validate().is_ok());
}
