//! `EngineOptions::device` (`--device cpu|gpu|auto`): SmolLM2 on the GPU generates what the
//! CPU generates (greedy), Gemma 3 loads there too, MiniLM embeds there as on the CPU, and
//! `auto` picks the GPU for all three.
//!
//! Without a GPU adapter the GPU cases skip, saying so, unless `EDGELLM_REQUIRE_GPU` is set
//! (as `.ci/run` sets it with Mesa's lavapipe installed). Without the models directory
//! everything skips (run `scripts/fetch-models`).

use std::ops::ControlFlow;
use std::path::PathBuf;

use edgellm::{Device, Engine, EngineOptions, Error, GenerateParams, RuntimeError, SamplerConfig};
use edgellm_models::ModelError;

mod common;
use common::model;

fn on(device: Device) -> EngineOptions {
    EngineOptions { device, n_ctx: 256, ..Default::default() }
}

/// The engine on the GPU, or `None` when there is no adapter (a failure with
/// `EDGELLM_REQUIRE_GPU`).
fn on_gpu(p: &PathBuf) -> Option<Engine> {
    match Engine::load(p, on(Device::Gpu)) {
        Ok(e) => Some(e),
        Err(Error::Runtime(RuntimeError::Model(ModelError::Device(why))))
            if why.contains("no GPU adapter") =>
        {
            assert!(std::env::var_os("EDGELLM_REQUIRE_GPU").is_none(), "EDGELLM_REQUIRE_GPU is set: {why}");
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn greedy(e: &Engine, prompt: &str, n: usize) -> String {
    let params = GenerateParams {
        max_tokens: n,
        sampling: SamplerConfig { temperature: 0.0, ..Default::default() },
        ignore_eos: true,
        ..Default::default()
    };
    e.generate(prompt, &params, |_| ControlFlow::Continue(())).unwrap().text
}

#[test]
fn smollm2_on_the_gpu_generates_what_the_cpu_generates() {
    let Some(p) = model("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let Some(gpu) = on_gpu(&p) else { return };
    assert_ne!(gpu.info().device, "CPU");
    assert!(gpu.info().device_note.is_none());
    let cpu = Engine::load(&p, on(Device::Cpu)).unwrap();
    assert_eq!(cpu.info().device, "CPU");
    // A prompt whose greedy continuation has no near-tie in its first 16 tokens on the CPU
    // (crates/gpu/tests/llama.rs checks the logits themselves).
    let prompt = "Edge devices such as smart speakers run small language models because";
    assert_eq!(greedy(&gpu, prompt, 16), greedy(&cpu, prompt, 16));
    // auto picks the GPU when it runs the model.
    let auto = Engine::load(&p, on(Device::Auto)).unwrap();
    assert_eq!(auto.info().device, gpu.info().device);
    // Gemma 3 runs there too (its logits: crates/gpu/tests/decoders.rs).
    let Some(gemma) = model("gemma-3-270m-q4_k_m.gguf") else { return };
    let auto = Engine::load(&gemma, on(Device::Auto)).unwrap();
    assert_eq!(auto.info().device, gpu.info().device);
    assert!(!greedy(&auto, "The capital of France is", 3).is_empty());
}

#[test]
fn minilm_embeds_on_the_gpu_as_on_the_cpu() {
    let Some(p) = model("all-MiniLM-L6-v2") else { return };
    let Some(gpu) = on_gpu(&p) else { return };
    assert_ne!(gpu.info().device, "CPU");
    let cpu = Engine::load(&p, on(Device::Cpu)).unwrap();
    let texts = ["Turn on the lights in the kitchen.", "What is the weather like tomorrow?"];
    let (a, b) = (gpu.embed(&texts).unwrap(), cpu.embed(&texts).unwrap());
    for (x, y) in a.iter().zip(&b) {
        assert!(edgellm::cosine(x, y) > 0.99999, "cosine {}", edgellm::cosine(x, y));
    }
    assert_eq!(Engine::load(&p, on(Device::Auto)).unwrap().info().device, gpu.info().device);
}
