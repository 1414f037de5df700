//! `edgellm chat`: interactive chat with the model's own chat template.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;

use anyhow::Result;
use edgellm::{GenerateParams, Message, TemplateSource};

use crate::run::{ModelArgs, SamplingArgs};

/// Arguments of `edgellm chat`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// System prompt.
    #[arg(short, long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// Run `edgellm chat`.
pub fn main(a: Args) -> Result<()> {
    let mut sampler = a.sampling.sampler()?;
    let engine = a.model.load()?;
    if engine.info().chat_template == TemplateSource::Builtin {
        eprintln!("edgellm: the model has no chat template; using the built-in one for its vocabulary");
    }
    let interactive = std::io::stdin().is_terminal();
    let mut messages: Vec<Message> = Vec::new();
    if let Some(s) = &a.system {
        messages.push(Message::new("system", s.clone()));
    }
    if interactive {
        eprintln!("edgellm chat — {} · Ctrl-D to exit", engine.info().name.as_deref().unwrap_or("model"));
    }
    // One session for the whole conversation: each turn reuses the cached tokens of the ones
    // before, and one sampler carries its random state from turn to turn.
    let mut session = engine.session()?;
    let params = GenerateParams { max_tokens: a.n, ..Default::default() };
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
        messages.push(Message::new("user", user));
        let ids = engine.chat_prompt(&messages)?;
        let stdout = std::io::stdout();
        let gen = match session.generate_ids_with(&ids, &params, &mut sampler, |chunk| {
            let mut o = stdout.lock();
            match o.write_all(chunk.text.as_bytes()).and_then(|_| o.flush()) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
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
        messages.push(Message::new("assistant", gen.text.trim()));
    }
}
