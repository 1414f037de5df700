//! `edgellm chat`: interactive chat with the model's own chat template.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use edgellm_runtime::{GenerateOptions, LoadedModel};
use edgellm_text::{ChatMessage, ChatTemplate};

use crate::run::SamplingArgs;

/// Arguments of `edgellm chat`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (GGUF).
    #[arg(short, long)]
    model: PathBuf,
    /// System prompt.
    #[arg(short, long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n: usize,
    /// Context size (0 = the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    ctx: usize,
    /// Exact f32 activations instead of the 8-bit-activation kernels (slower; for checking).
    #[arg(long)]
    exact: bool,
    /// KV cache type: f16 (default, as llama.cpp), q8_0 (half the memory) or f32 (the
    /// default with --exact).
    #[arg(long = "cache-type", value_parser = crate::run::parse_cache_type)]
    cache_type: Option<edgellm_models::KvType>,
    /// Worker threads (0 = all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// Run `edgellm chat`.
pub fn main(a: Args) -> Result<()> {
    edgellm_core::parallel::set_num_threads(a.threads);
    let mut sampler = a.sampling.sampler()?;
    let lm = LoadedModel::load_with(&a.model, a.ctx, &crate::run::load_options(a.exact, a.cache_type))?;
    let fallback;
    let template = match &lm.chat_template {
        Some(t) => t,
        None => {
            eprintln!("edgellm: the model has no chat template; using the built-in one for its vocabulary");
            fallback = ChatTemplate::builtin_for(&lm.tokenizer)?;
            &fallback
        }
    };
    let interactive = std::io::stdin().is_terminal();
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage { role: "system".into(), content: s.clone() });
    }
    if interactive {
        eprintln!("edgellm chat — {} · Ctrl-D to exit", lm.model.info().name.as_deref().unwrap_or("model"));
    }
    let mut session = lm.session();
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        if interactive {
            eprint!("\n> ");
            std::io::stderr().flush().ok();
        }
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            if interactive {
                eprintln!();
            }
            return Ok(());
        }
        let user = line.trim_end_matches(['\n', '\r']).to_string();
        if user.trim().is_empty() {
            continue;
        }
        messages.push(ChatMessage { role: "user".into(), content: user });
        let rendered = template.render(&messages, true)?;
        let bos = lm.tokenizer.add_bos_default()
            && !lm
                .tokenizer
                .bos_id()
                .and_then(|b| lm.tokenizer.token_str(b))
                .is_some_and(|s| rendered.starts_with(s));
        let ids = lm.tokenizer.encode(&rendered, bos, true);
        let opts = GenerateOptions { max_tokens: a.n, ..Default::default() };
        let stdout = std::io::stdout();
        let gen = match session.generate(&ids, &opts, &mut sampler, |piece| {
            let mut o = stdout.lock();
            o.write_all(piece.as_bytes()).and_then(|_| o.flush()).is_ok()
        }) {
            Ok(g) => g,
            Err(e) => {
                // Keep the conversation usable: drop the turn that did not fit.
                messages.pop();
                eprintln!("\nedgellm: {e}");
                continue;
            }
        };
        println!();
        messages.push(ChatMessage { role: "assistant".into(), content: gen.text.trim().to_string() });
    }
}
