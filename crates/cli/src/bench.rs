//! `edgellm bench`: prompt-processing and generation speed, like llama-bench.

use std::path::PathBuf;

use anyhow::Result;
use edgellm_runtime::memory::{human_bytes, peak_rss_bytes};
use edgellm_runtime::LoadedModel;

/// Output formats of `bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFormat {
    /// A Markdown table.
    Md,
    /// One JSON object.
    Json,
}

/// Arguments of `edgellm bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (GGUF).
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt tokens processed in one batch (0 = skip).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated one at a time (0 = skip).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Activation sparsity: zero the inputs of the attention and FFN projections below the
    /// file's thresholds for this level (`edgellm calibrate-sparsity`), e.g. 0.4; decode
    /// tokens then skip the weight columns of the zeros (prompts stay dense).
    #[arg(long = "act-sparsity", value_name = "S")]
    act_sparsity: Option<f32>,
    /// Threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Exact f32 activations instead of the 8-bit-activation kernels (slower; for checking).
    #[arg(long)]
    exact: bool,
    /// KV cache type: f16 (default, as llama.cpp), q8_0 (half the memory) or f32 (the
    /// default with --exact).
    #[arg(long = "cache-type", value_parser = crate::run::parse_cache_type)]
    cache_type: Option<edgellm_models::KvType>,
    /// Where the model runs: cpu, gpu or auto (see `edgellm run --help`).
    #[arg(long, default_value = "cpu", value_parser = crate::run::parse_device)]
    device: edgellm_models::Device,
    /// Repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 5)]
    reps: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Md)]
    output_format: BenchFormat,
}

/// Run `edgellm bench`.
pub fn main(a: Args) -> Result<()> {
    anyhow::ensure!(a.reps > 0, "--reps must be at least 1");
    edgellm_core::parallel::set_num_threads(a.threads);
    let threads = edgellm_core::parallel::num_threads();
    let n_ctx = edgellm_eval::speed::bench_ctx(a.n_prompt, a.n_gen);
    crate::calibrate_sparsity::enable(&a.model, a.act_sparsity, false)?;
    let opts = crate::run::load_options(a.exact, a.cache_type, a.device);
    let lm = LoadedModel::load_with(&a.model, n_ctx, &opts)?;
    crate::run::note_device(lm.device_note.as_deref());
    let on_cpu = lm.device == "CPU";
    let info = lm.model.info().clone();
    let report = edgellm_eval::speed::bench(lm.model.as_ref(), a.n_prompt, a.n_gen, a.reps, |_, _| {})?;
    let rows: Vec<(String, (f64, f64))> =
        report.tests().into_iter().map(|t| (t.test.clone(), (t.tokens_per_s, t.sd))).collect();
    // The CPU's Linear layers count the bytes they read; the GPU's do not.
    let bytes_per_token =
        if a.n_gen > 0 && on_cpu { Some(decode_bytes_per_token(lm.model.as_ref())?) } else { None };
    let rss = peak_rss_bytes().unwrap_or(0);
    let tier =
        if on_cpu { edgellm_models::linear::kernel_description() } else { format!("GPU: {}", lm.device) };
    let packing = if on_cpu { edgellm_models::linear::packing_description() } else { "GPU layout".into() };
    let cache_type = opts.kv_type().name();
    let name = a.model.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match a.output_format {
        BenchFormat::Json => {
            let tests: Vec<_> = rows
                .iter()
                .map(|(t, (m, s))| serde_json::json!({"test": t, "tokens_per_s": m, "sd": s}))
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "model": name, "size_bytes": lm.gguf.file_len(), "params": info.n_params,
                    "threads": threads, "kernels": tier, "device": lm.device, "cache_type": cache_type, "reps": a.reps,
                    "load_ms": lm.load_ms, "peak_rss_bytes": rss, "packing": packing, "tests": tests,
                    "act_sparsity": a.act_sparsity, "weight_bytes_per_token": bytes_per_token,
                })
            );
        }
        BenchFormat::Md => {
            println!("| model | size | params | kernels | threads | test | t/s |");
            println!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
            for (t, (m, s)) in &rows {
                println!(
                    "| {name} | {} | {:.1} M | {tier} | {threads} | {t} | {m:.2} ± {s:.2} |",
                    human_bytes(lm.gguf.file_len()),
                    info.n_params as f64 / 1e6
                );
            }
            println!(
                "\nload {:.1} ms · peak RSS {} · KV cache {cache_type} · packing {packing} · {} reps",
                lm.load_ms,
                human_bytes(rss),
                a.reps
            );
            if let Some(b) = bytes_per_token {
                let sp = a.act_sparsity.map_or("off".to_string(), |s| s.to_string());
                println!("weight bytes read per decode token: {} · activation sparsity {sp}", human_bytes(b));
            }
        }
    }
    Ok(())
}

/// Weight bytes the Linear products read per decode token, over 16 greedy tokens after one
/// (as `tg` runs them: one token per call).
fn decode_bytes_per_token(model: &dyn edgellm_models::LanguageModel) -> Result<u64> {
    const STEPS: u64 = 16;
    let mut cache = model.new_cache(STEPS as usize + 2);
    let mut logits = Vec::new();
    let mut tok = 1u32;
    model.forward_into(&[tok], &mut cache, false, &mut logits)?;
    edgellm_models::linear::reset_weight_bytes_read();
    for _ in 0..STEPS {
        tok = logits.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map_or(0, |(i, _)| i as u32);
        model.forward_into(&[tok], &mut cache, false, &mut logits)?;
    }
    Ok(edgellm_models::linear::weight_bytes_read() / STEPS)
}
