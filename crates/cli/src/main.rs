//! `edgellm`: run, compress and measure language models on-device.

mod bench;
mod calib_args;
mod calibrate_sparsity;
mod chat;
mod distill;
mod embed;
mod eval;
mod home_command;
mod imatrix;
mod inspect;
mod intent;
mod prune;
mod quantize;
mod report;
mod run;
mod serve;
mod similarity;
mod tokenize;
mod trim_vocab;

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
    /// Measure prompt-processing and generation speed (tokens/s), like llama-bench.
    Bench(bench::Args),
    /// Print sentence embeddings of texts, one per input line (JSON lines or .npy).
    Embed(embed::Args),
    /// Print the cosine similarity of two texts' sentence embeddings.
    Similarity(similarity::Args),
    /// Measure a model on a benchmark (e.g. `eval sts`).
    Eval(eval::Args),
    /// Quantize a model to another type or mix (GGUF out).
    Quantize(quantize::Args),
    /// Prune a model: magnitude, Wanda or SparseGPT, unstructured or N:M (GGUF out).
    Prune(prune::Args),
    /// Trim a WordPiece encoder's vocabulary to the tokens a deployment's texts use (GGUF out).
    TrimVocab(trim_vocab::Args),
    /// Recover a pruned sentence encoder by distillation from its dense original (GGUF out).
    Distill(distill::Args),
    /// Serve the model over HTTP: an OpenAI-compatible API (chat, completions, embeddings).
    Serve(serve::Args),
    /// Collect an importance matrix from calibration text (llama.cpp's imatrix layout).
    Imatrix(imatrix::Args),
    /// Calibrate activation-sparsity thresholds (TEAL) into a copy of the model (GGUF out).
    CalibrateSparsity(calibrate_sparsity::Args),
    /// Intent classification: train a classifier over a sentence encoder, evaluate it, and
    /// classify utterances.
    Intent(intent::Args),
    /// End-to-end comparisons written as Markdown reports with charts (`report smart-home`).
    Report(report::Args),
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
        Command::Bench(a) => bench::main(a),
        Command::Embed(a) => embed::main(a),
        Command::Similarity(a) => similarity::main(a),
        Command::Eval(a) => eval::main(a),
        Command::Quantize(a) => quantize::main(a),
        Command::Imatrix(a) => imatrix::main(a),
        Command::CalibrateSparsity(a) => calibrate_sparsity::main(a),
        Command::Prune(a) => prune::main(a),
        Command::Distill(a) => distill::main(a),
        Command::TrimVocab(a) => trim_vocab::main(a),
        Command::Serve(a) => serve::main(a),
        Command::Intent(a) => intent::main(a),
        Command::Report(a) => report::main(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgellm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
