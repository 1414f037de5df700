//! Stream a chat answer from SmolLM2 through `edgellm::Engine` and print the timings.
//!
//! `cargo run --release -p edgellm --example generate -- [MODEL.gguf] [QUESTION]`
//! (default model: `models/SmolLM2-135M-Instruct.Q4_1.gguf`, fetched by `scripts/fetch-models`).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use edgellm::{Engine, EngineOptions, GenerateParams, Message};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let question = args.next().unwrap_or_else(|| "What is the capital of France? Answer briefly.".into());

    let engine = Engine::load(&model, EngineOptions::default())?;
    let info = engine.info();
    eprintln!(
        "{} ({}, {:.0}M parameters, {} context, {} kernels) loaded in {:.0} ms",
        info.name.as_deref().unwrap_or("model"),
        info.architecture,
        info.n_params as f64 / 1e6,
        info.n_ctx,
        info.kernel_tier,
        info.load_ms
    );

    let messages = [Message::new("system", "You are a concise assistant."), Message::new("user", question)];
    let params = GenerateParams::greedy(128);
    let stdout = std::io::stdout();
    let answer = engine.chat(&messages, &params, |chunk| {
        let mut out = stdout.lock();
        // Stop quietly when the reader goes away (e.g. `| head`).
        match out.write_all(chunk.text.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    })?;
    println!();
    let t = &answer.timings;
    eprintln!(
        "prompt {} tokens in {:.0} ms ({:.1} tok/s) | first token after {:.0} ms | {} tokens at {:.1} tok/s | finish: {}",
        t.prompt_tokens,
        t.prompt_ms,
        t.prompt_tokens_per_s(),
        t.ttft_ms,
        t.gen_tokens,
        t.gen_tokens_per_s(),
        answer.finish.as_str()
    );
    Ok(())
}
