//! `edgellm tokenize`: print token ids as a JSON array.

use std::path::PathBuf;

use anyhow::Result;
use edgellm::{Engine, EngineOptions};

/// Arguments of `edgellm tokenize`.
#[derive(clap::Args)]
pub struct Args {
    /// Model: a GGUF file, or a sentence-transformers directory.
    #[arg(short, long)]
    model: PathBuf,
    /// Add the BOS token.
    #[arg(long)]
    bos: bool,
    /// Parse special tokens such as `<|im_start|>` in the text.
    #[arg(long)]
    special: bool,
    /// The text.
    text: String,
}

/// Run `edgellm tokenize`.
pub fn main(a: Args) -> Result<()> {
    let engine = Engine::load(&a.model, EngineOptions::default())?;
    let ids = engine.tokenize_with(&a.text, a.bos, a.special)?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
