//! Sentence embeddings and their cosine similarities through `edgellm::Engine`.
//!
//! `cargo run --release -p edgellm --example embed -- [MODEL] [TEXT...]`
//! (default model: the sentence-transformers directory `models/all-MiniLM-L6-v2`; a `bert` GGUF
//! file works the same).

use std::path::PathBuf;
use std::time::Instant;

use edgellm::{cosine, Engine, EngineOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2"));
    let mut texts: Vec<String> = args.collect();
    if texts.is_empty() {
        texts = [
            "Turn on the lights in the kitchen.",
            "Switch the kitchen lights on.",
            "What's the weather like tomorrow?",
            "Quantization reduces the memory footprint of neural networks.",
        ]
        .map(String::from)
        .to_vec();
    }

    let engine = Engine::load(&model, EngineOptions::default())?;
    let info = engine.info();
    eprintln!(
        "{} ({}, {:.1}M parameters, {}-dimensional embeddings) loaded in {:.0} ms",
        info.name.as_deref().unwrap_or("model"),
        info.architecture,
        info.n_params as f64 / 1e6,
        info.embedding_dim.unwrap_or(0),
        info.load_ms
    );
    let t0 = Instant::now();
    let emb = engine.embed(&texts)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    eprintln!("{} texts embedded in {ms:.1} ms ({:.0} texts/s)", texts.len(), texts.len() as f64 * 1e3 / ms);

    println!("cosine similarities:");
    for (i, a) in texts.iter().enumerate() {
        for (j, b) in texts.iter().enumerate().skip(i + 1) {
            println!("{:.3}  {a:?} ~ {b:?}", cosine(&emb[i], &emb[j]));
        }
    }
    Ok(())
}
