//! JSON output under a schema, and what the constraint costs per token.
//!
//! `cargo run --release -p edgellm --example constrained -- [MODEL.gguf] [RUNS]`
//! (default model: `models/SmolLM2-135M-Instruct.Q4_1.gguf`, fetched by `scripts/fetch-models`;
//! default 3 runs).
//!
//! The same chat prompt runs greedily with a JSON schema (its output printed and parsed), then
//! `RUNS` times each, interleaved, for as many tokens: without a format (`ignore_eos`, so as
//! many tokens over the same context lengths), with the schema, and without a format but with
//! top-5 log-probabilities. The best run of each gives generated tokens per second; the
//! difference per token is the cost of the constraint (the mask llguidance computes, the banned
//! logits set to −∞ in a copy of the row, the token committed to the grammar) or of the
//! log-probabilities. The constraint's own cost without the model:
//! `cargo test --release -p edgellm --lib -- --ignored --nocapture mask_cost`.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use edgellm::{Engine, EngineOptions, GenerateParams, Message, OutputFormat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3).max(1);

    let engine = Engine::load(&model, EngineOptions::default())?;
    let info = engine.info();
    eprintln!(
        "{} ({} tokens in the vocabulary, {} kernels)",
        info.name.as_deref().unwrap_or("model"),
        info.n_vocab,
        info.kernel_tier
    );
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "maxLength": 40 },
            "age": { "type": "integer", "minimum": 0, "maximum": 130 },
            "role": { "enum": ["admin", "user", "guest"] },
            "address": {
                "type": "object",
                "properties": { "city": { "type": "string" }, "zip": { "type": "string", "pattern": "^[0-9]{5}$" } },
                "required": ["city", "zip"]
            },
            "tags": { "type": "array", "items": { "type": "string", "maxLength": 16 }, "maxItems": 4 }
        },
        "required": ["name", "age", "role", "address", "tags"]
    });
    let messages = [Message::new(
        "user",
        "Describe a fictional user of a web site as JSON with name, age, role, address and tags.",
    )];
    let prompt = engine.chat_prompt(&messages)?;

    // The first constrained call builds the vocabulary's token trie: time it apart.
    let t = Instant::now();
    let params = GenerateParams::greedy(1).with_format(OutputFormat::JsonObject);
    engine.generate_ids(&prompt, &params, |_| ControlFlow::Continue(()))?;
    eprintln!("first constrained call (token trie and parser factory built): {:.0} ms", ms(t));

    let constrained = GenerateParams::greedy(256).with_format(OutputFormat::JsonSchema(schema.clone()));
    let c = engine.generate_ids(&prompt, &constrained, |_| ControlFlow::Continue(()))?;
    let n = c.ids.len();
    println!("{}", c.text);
    let value: serde_json::Value = serde_json::from_str(&c.text)?;
    eprintln!(
        "parsed: an object with {} keys; {n} tokens, finish {}",
        value.as_object().map_or(0, |o| o.len()),
        c.finish.as_str()
    );

    // The same number of tokens each way, the runs interleaved so that a load on the machine
    // touches all three alike; the best run of each counts.
    let free = GenerateParams { ignore_eos: true, ..GenerateParams::greedy(n) };
    let with_logprobs = free.clone().with_logprobs(5);
    let mut best = [f64::INFINITY; 3];
    for _ in 0..runs {
        for (b, params) in best.iter_mut().zip([&free, &constrained, &with_logprobs]) {
            let c = engine.generate_ids(&prompt, params, |_| ControlFlow::Continue(()))?;
            assert_eq!(c.ids.len(), n);
            *b = b.min(c.timings.gen_ms / n as f64);
        }
    }
    let [text, json, lp] = best;
    println!("{n} tokens, best of {runs}:");
    println!("  no format          {text:.2} ms/token ({:.1} tok/s)", 1e3 / text);
    let pct = |x: f64| (x / text - 1.0) * 100.0;
    println!(
        "  JSON schema        {json:.2} ms/token ({:.1} tok/s): {:+.3} ms/token ({:+.1}%)",
        1e3 / json,
        json - text,
        pct(json)
    );
    println!(
        "  logprobs (top 5)   {lp:.2} ms/token ({:.1} tok/s): {:+.3} ms/token ({:+.1}%)",
        1e3 / lp,
        lp - text,
        pct(lp)
    );
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
