//! JSON output under a schema, and what the constraint costs per token.
//!
//! `cargo run --release -p edgellm --example constrained -- [MODEL.gguf] [RUNS]`
//! (default model: `models/SmolLM2-135M-Instruct.Q4_1.gguf`, fetched by `scripts/fetch-models`;
//! default 3 runs).
//!
//! The same chat prompt runs greedily with a JSON schema, then without a format for the same
//! number of tokens (`ignore_eos`, so both decode equally many tokens over similar context
//! lengths), each `RUNS` times; the best run of each gives generated tokens per second, and
//! the difference per token is the cost of the constraint (the mask llguidance computes, the
//! banned logits set to −∞ in a copy of the row, the token committed to the grammar). The
//! constrained output is printed and parsed.

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
    let mut best_json = f64::INFINITY;
    let mut out = None;
    for _ in 0..runs {
        let c = engine.generate_ids(&prompt, &constrained, |_| ControlFlow::Continue(()))?;
        best_json = best_json.min(c.timings.gen_ms / c.timings.gen_tokens as f64);
        out = Some(c);
    }
    let c = out.expect("one run at least");
    let n = c.ids.len();
    println!("{}", c.text);
    let value: serde_json::Value = serde_json::from_str(&c.text)?;
    eprintln!(
        "parsed: an object with {} keys; {n} tokens, finish {}",
        value.as_object().map_or(0, |o| o.len()),
        c.finish.as_str()
    );

    let free = GenerateParams { ignore_eos: true, ..GenerateParams::greedy(n) };
    let mut best_text = f64::INFINITY;
    for _ in 0..runs {
        let c = engine.generate_ids(&prompt, &free, |_| ControlFlow::Continue(()))?;
        assert_eq!(c.ids.len(), n);
        best_text = best_text.min(c.timings.gen_ms / c.timings.gen_tokens as f64);
    }
    println!(
        "{n} tokens, best of {runs}: without format {:.2} ms/token ({:.1} tok/s), with the schema {:.2} ms/token ({:.1} tok/s): {:+.3} ms/token ({:+.1}%)",
        best_text,
        1e3 / best_text,
        best_json,
        1e3 / best_json,
        best_json - best_text,
        (best_json / best_text - 1.0) * 100.0
    );
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
