//! `edgellm serve`: an OpenAI-compatible HTTP server.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use edgellm::batch::BatchOptions;
use edgellm::{Engine, EngineOptions, KvType};
use edgellm_server::{Models, ServeOptions};

/// `edgellm serve` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model: a text generator (llama, gemma3 GGUF) for the completion endpoints, an encoder
    /// for /v1/embeddings, or an intent model for /v1/intents.
    #[arg(short, long, required_unless_present_any = ["embed_model", "intent_model"])]
    pub model: Option<PathBuf>,
    /// An encoder (bert GGUF or sentence-transformers directory) for /v1/embeddings.
    #[arg(long)]
    pub embed_model: Option<PathBuf>,
    /// An intent model (from `edgellm intent train`) for /v1/intents.
    #[arg(long)]
    pub intent_model: Option<PathBuf>,
    /// Address to listen on (127.0.0.1 = this machine only; 0.0.0.0 = every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 = any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Context of each slot in tokens (0 = the model's training context, capped at 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Sequences decoded together, each with its own KV cache slot.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests that may wait for a slot (503 beyond).
    #[arg(long, default_value_t = 64)]
    pub queue_limit: usize,
    /// Prompt tokens prefilled per step, between decode steps.
    #[arg(long, default_value_t = 256)]
    pub prefill_chunk: usize,
    /// Require 'Authorization: Bearer KEY' (also from EDGELLM_API_KEY).
    #[arg(long, env = "EDGELLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 8 << 20)]
    pub body_limit: usize,
    /// The name /v1/models gives the generator (default: its file name).
    #[arg(long)]
    pub alias: Option<String>,
    /// KV cache element type: f16 (default), q8_0 or f32.
    #[arg(long = "cache-type", value_parser = crate::run::parse_cache_type)]
    pub cache_type: Option<KvType>,
    /// Threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Where the models run: cpu, gpu or auto (see `edgellm run --help`).
    #[arg(long, default_value = "cpu", value_parser = crate::run::parse_device)]
    pub device: edgellm::Device,
}

pub fn main(a: Args) -> Result<()> {
    anyhow::ensure!(a.parallel >= 1, "--parallel must be at least 1");
    anyhow::ensure!(a.prefill_chunk >= 1, "--prefill-chunk must be at least 1");
    let opts = EngineOptions {
        n_ctx: a.ctx_size,
        threads: Some(a.threads),
        cache_type: a.cache_type,
        slots: a.parallel,
        device: a.device,
        ..Default::default()
    };
    let load = |p: &PathBuf| -> Result<Arc<Engine>> {
        let e = Engine::load(p, opts.clone()).with_context(|| format!("loading {}", p.display()))?;
        crate::run::note_device(e.info().device_note.as_deref());
        Ok(Arc::new(e))
    };
    let mut models = match &a.model {
        Some(m) => Models::single(load(m)?),
        None => Models::default(),
    };
    let model_name = a.model.as_ref().map(|m| m.display().to_string()).unwrap_or_default();
    if let Some(p) = &a.embed_model {
        anyhow::ensure!(
            models.embedder.is_none(),
            "-m {model_name} is already an embedding model: give a text generator as -m, or drop --embed-model",
        );
        models.embedder = Some(load(p)?);
    }
    if let Some(p) = &a.intent_model {
        anyhow::ensure!(
            models.classifier.is_none(),
            "-m {model_name} is already an intent model: drop --intent-model, or give a text generator as -m",
        );
        models.classifier = Some(load(p)?);
    }
    let sopts = ServeOptions {
        host: a.host,
        port: a.port,
        api_key: a.api_key,
        body_limit: a.body_limit,
        batch: BatchOptions {
            parallel: a.parallel,
            queue_limit: a.queue_limit,
            prefill_chunk: a.prefill_chunk,
        },
        model_id: a.alias,
    };
    let describe = |e: &Engine| {
        let i = e.info();
        format!("{} ({}, {} ctx, {} kernels)", i.path.display(), i.architecture, i.n_ctx, i.kernel_tier)
    };
    let mut what = Vec::new();
    if let Some(g) = &models.generator {
        what.push(format!("generator {} x{} slots", describe(g), a.parallel));
    }
    if let Some(e) = &models.embedder {
        what.push(format!("embedder {}", describe(e)));
    }
    if let Some(c) = &models.classifier {
        what.push(format!(
            "intent model {} ({} labels)",
            describe(c),
            c.info().labels.as_ref().map_or(0, Vec::len)
        ));
    }
    edgellm_server::serve(models, &sopts, |addr| {
        eprintln!("edgellm serve: {}", what.join("; "));
        println!("edgellm serve: listening on http://{addr}");
        let _ = std::io::stdout().flush();
    })?;
    eprintln!("edgellm serve: stopped");
    Ok(())
}
