//! `edgellm run`: generate text from a prompt.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::Result;
use edgellm::{Device, Engine, EngineOptions, FinishReason, GenerateParams, KvType, Sampler, SamplerConfig};

use crate::OutputFormat;

/// Sampling flags shared by `run` and `chat`.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature (0 = greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens the repetition penalty looks back on.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The sampling settings these flags describe, checked with the flags' names.
    pub fn config(&self) -> Result<SamplerConfig> {
        anyhow::ensure!(self.temp.is_finite() && self.temp >= 0.0, "--temp must be a number >= 0");
        anyhow::ensure!((0.0..=1.0).contains(&self.top_p), "--top-p must be in [0, 1]");
        anyhow::ensure!((0.0..=1.0).contains(&self.min_p), "--min-p must be in [0, 1]");
        anyhow::ensure!(self.repeat_penalty > 0.0, "--repeat-penalty must be > 0");
        let seed = self.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
        });
        Ok(SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed,
        })
    }

    /// The sampler these flags describe.
    pub fn sampler(&self) -> Result<Sampler> {
        Ok(Sampler::new(self.config()?))
    }
}

/// Model options from the `--exact`, `--cache-type` and `--device` flags.
pub fn load_options(exact: bool, cache_type: Option<KvType>, device: Device) -> edgellm_models::LoadOptions {
    EngineOptions { exact, cache_type, device, ..Default::default() }.load_options()
}

/// Parse a `--device` value: `cpu`, `gpu` or `auto`.
pub fn parse_device(s: &str) -> Result<Device, String> {
    Device::parse(s).ok_or_else(|| format!("unknown device '{s}': expected cpu, gpu or auto"))
}

/// Says on stderr why `--device auto` runs on the CPU, when it does.
pub fn note_device(note: Option<&str>) {
    if let Some(why) = note {
        eprintln!("--device auto: running on the CPU ({why})");
    }
}

/// Parse a `--cache-type` value.
pub fn parse_cache_type(s: &str) -> Result<KvType, String> {
    edgellm::parse_cache_type(s).map_err(|e| e.to_string())
}

/// The name `edgellm run --output-format json` gives a finish reason (`eog` for an
/// end-of-generation token, as before the Engine).
pub fn stop_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Eos => "eog",
        other => other.as_str(),
    }
}

/// The model and how to load it, shared by `run` and `chat`.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Model file (GGUF).
    #[arg(short, long)]
    pub model: PathBuf,
    /// Context size (0 = the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    ctx: usize,
    /// Exact f32 activations instead of the 8-bit-activation kernels (slower; for checking).
    #[arg(long)]
    exact: bool,
    /// KV cache type: f16 (default, as llama.cpp), q8_0 (half the memory) or f32 (the
    /// default with --exact).
    #[arg(long = "cache-type", value_parser = crate::run::parse_cache_type)]
    cache_type: Option<KvType>,
    /// Activation sparsity: zero the inputs of the attention and FFN projections below the
    /// file's thresholds for this level (`edgellm calibrate-sparsity`), e.g. 0.4; decode
    /// tokens then skip the weight columns of the zeros (prompts stay dense).
    #[arg(long = "act-sparsity", value_name = "S")]
    act_sparsity: Option<f32>,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Where the model runs: cpu, gpu (Vulkan, Metal or DX12 through wgpu; an error without
    /// one) or auto (the GPU where there is one that runs the model, else the CPU).
    #[arg(long, default_value = "cpu", value_parser = crate::run::parse_device)]
    device: Device,
}

impl ModelArgs {
    /// Load the engine these flags describe (one slot).
    pub fn load(&self) -> Result<Engine> {
        crate::calibrate_sparsity::enable(&self.model, self.act_sparsity, false)?;
        let engine = Engine::load(
            &self.model,
            EngineOptions {
                n_ctx: self.ctx,
                threads: Some(self.threads),
                exact: self.exact,
                cache_type: self.cache_type,
                slots: 1,
                device: self.device,
            },
        )?;
        note_device(engine.info().device_note.as_deref());
        Ok(engine)
    }
}

/// Arguments of `edgellm run`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(short, long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output_format: OutputFormat,
    /// Print load and speed details to stderr.
    #[arg(short, long)]
    verbose: bool,
}

/// Run `edgellm run`.
pub fn main(a: Args) -> Result<()> {
    let sampling = a.sampling.config()?;
    let engine = a.model.load()?;
    let prompt_ids = engine.tokenize(&a.prompt, true)?;
    let params = GenerateParams { max_tokens: a.n, sampling, ..Default::default() };
    let json = a.output_format == OutputFormat::Json;
    let stdout = std::io::stdout();
    let gen = engine.generate_ids(&prompt_ids, &params, |chunk| {
        if !json && !chunk.text.is_empty() {
            let mut out = stdout.lock();
            // A closed pipe (e.g. `| head`) ends generation quietly.
            if out.write_all(chunk.text.as_bytes()).and_then(|_| out.flush()).is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    let t = &gen.timings;
    let load_ms = engine.info().load_ms;
    let device = engine.info().device.clone();
    if json {
        let obj = serde_json::json!({
            "prompt_ids": prompt_ids,
            "ids": gen.ids,
            "text": gen.text,
            "stop": stop_name(gen.finish),
            "timings": {
                "load_ms": load_ms,
                "prompt_tokens_per_s": t.prompt_tokens_per_s(),
                "gen_tokens_per_s": t.gen_tokens_per_s(),
                "prompt_tokens": t.prompt_tokens,
                "gen_tokens": t.gen_tokens,
            }
        });
        println!("{obj}");
    } else {
        println!();
    }
    if a.verbose {
        eprintln!(
            "load {:.0} ms | prompt {} tokens, {:.1} tok/s | generation {} tokens, {:.1} tok/s | stop: {} | threads {} | {}",
            load_ms,
            t.prompt_tokens,
            t.prompt_tokens_per_s(),
            t.gen_tokens,
            t.gen_tokens_per_s(),
            stop_name(gen.finish),
            edgellm_core::parallel::num_threads(),
            device
        );
    }
    Ok(())
}
