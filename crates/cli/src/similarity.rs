//! `edgellm similarity`: the cosine similarity of two texts' embeddings.

use std::path::PathBuf;

use anyhow::Result;
use edgellm_runtime::embed::{cosine, Embedder};

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
    let embedder = Embedder::load(&a.model)?;
    let e = embedder.embed_batch(&[a.text_a.as_str(), a.text_b.as_str()], 2)?;
    println!("{:.6}", cosine(&e[0], &e[1]));
    Ok(())
}
