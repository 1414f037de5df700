//! `edgellm`: run, compress and measure language models on-device.

mod chat;
mod inspect;
mod run;
mod tokenize;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run language models on the device itself.
#[derive(Parser)]
#[command(name = "edgellm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Run(run::Args),
    /// Chat interactively with the model's chat template (Ctrl-D exits).
    Chat(chat::Args),
    /// Print the token ids of a text as a JSON array.
    Tokenize(tokenize::Args),
    /// Show a model file's metadata and tensors.
    Inspect(inspect::Args),
}

/// Output formats shared by subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON object.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Run(a) => run::main(a),
        Command::Chat(a) => chat::main(a),
        Command::Tokenize(a) => tokenize::main(a),
        Command::Inspect(a) => inspect::main(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgellm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
