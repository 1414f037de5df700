//! `edgellm similarity`: the cosine similarity of two texts' embeddings.

use std::path::PathBuf;

use anyhow::Result;
use edgellm::{cosine, Engine, EngineOptions};

/// Arguments of `edgellm similarity`.
#[derive(clap::Args)]
pub struct Args {
    /// Embedding model: a sentence-transformers directory or a `bert` GGUF file.
    #[arg(short, long)]
    model: PathBuf,
    /// First text.
    text_a: String,
    /// Second text.
    text_b: String,
}

/// Run `edgellm similarity`: print the cosine similarity.
pub fn main(a: Args) -> Result<()> {
    let engine = Engine::load(&a.model, EngineOptions::default())?;
    let e = engine.embed_batched(&[a.text_a.as_str(), a.text_b.as_str()], 2)?;
    println!("{:.6}", cosine(&e[0], &e[1]));
    Ok(())
}
