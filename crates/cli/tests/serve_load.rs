//! A bounded load test of `edgellm serve` on loopback: 16 clients × 20 seeded chat requests of
//! mixed prompt and answer lengths, streamed, against 8 slots (so requests also queue and
//! prompts are prefilled in chunks beside running decodes). Every answer must equal, byte for
//! byte, what the library gives the same request alone; nothing may be lost. Reports time to
//! first token p50/p99 and aggregate generated tokens/s (a figure of this machine, not a
//! claim: `bench/vs-llama-server` is the benchmark).

mod common;

use std::ops::ControlFlow;
use std::time::Instant;

use common::{openai_params, smollm2, Server};
use edgellm::{Engine, EngineOptions, Message};
use serde_json::json;

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 20;

const QUESTIONS: [&str; 8] = [
    "Turn on the kitchen lights.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in one sentence why the sky is blue.",
    "List three colours.",
    "Dim the bedroom lights to thirty percent and close the blinds.",
    "What time is it in Tokyo when it is noon in London?",
    "Tell me a joke about computers.",
];

/// Request `i` of client `c`: its messages, answer length, temperature and seed.
fn spec(c: usize, i: usize) -> (Vec<Message>, usize, f32, u64) {
    let k = c * PER_CLIENT + i;
    let q = QUESTIONS[k % QUESTIONS.len()];
    // Every fifth request carries a long system prompt (about 300 tokens), prefilled in chunks.
    let system = if k.is_multiple_of(5) {
        format!("You are a careful home assistant. {}", "Keep every answer short and exact. ".repeat(40))
    } else {
        "You are a helpful assistant.".to_string()
    };
    let max_tokens = [4, 8, 12, 24][(k / 3) % 4];
    let temperature = if k.is_multiple_of(2) { 0.0 } else { 0.8 };
    (vec![Message::new("system", system), Message::new("user", q)], max_tokens, temperature, 1000 + k as u64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn sixteen_clients_get_exactly_their_solo_answers() {
    let m = smollm2();
    // The references: each request alone through the library.
    let engine = Engine::load(&m, EngineOptions { threads: Some(2), ..EngineOptions::default() }).unwrap();
    let mut solo = vec![vec![String::new(); PER_CLIENT]; CLIENTS];
    for (c, answers) in solo.iter_mut().enumerate() {
        for (i, answer) in answers.iter_mut().enumerate() {
            let (messages, max_tokens, temperature, seed) = spec(c, i);
            let params = openai_params(max_tokens, temperature, seed);
            *answer = engine.chat(&messages, &params, |_| ControlFlow::Continue(())).unwrap().text;
        }
    }
    drop(engine);

    let server =
        Server::start(&["-m", m.to_str().unwrap(), "--parallel", "8", "--prefill-chunk", "64", "-c", "1024"]);
    let addr = server.addr;
    let t0 = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                (0..PER_CLIENT)
                    .map(|i| {
                        let (messages, max_tokens, temperature, seed) = spec(c, i);
                        let msgs: Vec<_> =
                            messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
                        let body = json!({"messages": msgs, "max_tokens": max_tokens, "temperature": temperature,
                                          "seed": seed, "stream": true});
                        let s = common::stream(addr, "/v1/chat/completions", &body);
                        let usage: serde_json::Value = serde_json::from_str(&s.events[s.events.len() - 2]).unwrap();
                        (s.text, s.ttft, usage["usage"]["completion_tokens"].as_u64().unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<(String, f64, u64)>> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    let wall = t0.elapsed().as_secs_f64();

    let mut ttft = Vec::new();
    let mut tokens = 0;
    let mut mismatches = Vec::new();
    for (c, answers) in results.iter().enumerate() {
        assert_eq!(answers.len(), PER_CLIENT, "client {c} lost answers");
        for (i, (text, t, n)) in answers.iter().enumerate() {
            if *text != solo[c][i] {
                mismatches.push(format!("client {c} request {i}: {text:?} != solo {:?}", solo[c][i]));
            }
            ttft.push(*t);
            tokens += n;
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} answers differ from their solo run:\n{}",
        mismatches.len(),
        CLIENTS * PER_CLIENT,
        mismatches.join("\n")
    );
    ttft.sort_by(f64::total_cmp);
    let generated = server.metric("edgellm_generated_tokens_total");
    assert_eq!(generated as u64, tokens, "the server counted other tokens than the clients got");
    let steps = server.metric("edgellm_batch_steps_total");
    let seqs = server.metric("edgellm_batch_step_sequences_total");
    eprintln!(
        "serve load: {} requests from {CLIENTS} clients, all equal to solo; {tokens} tokens in {wall:.1} s = {:.1} tok/s aggregate; TTFT p50 {:.0} ms, p99 {:.0} ms; mean batch {:.2}",
        CLIENTS * PER_CLIENT,
        tokens as f64 / wall,
        percentile(&ttft, 0.5) * 1e3,
        percentile(&ttft, 0.99) * 1e3,
        seqs / steps
    );
    // Requests really were batched together.
    assert!(seqs / steps > 2.0, "mean batch {:.2}: requests were not batched", seqs / steps);
}
