//! Encoding speed of a model's tokenizer on a text file: one paragraph (median of 50 runs) and
//! the whole file.
//!
//! `cargo run --release -p edgellm-text --example tokenize_speed -- [MODEL.gguf] [TEXT]`
//! (defaults: `models/gemma-3-270m-q4_k_m.gguf`, `data/wikitext-2/wiki.test.raw`, from the
//! workspace root).

use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "models/gemma-3-270m-q4_k_m.gguf".into());
    let path = args.next().unwrap_or_else(|| "data/wikitext-2/wiki.test.raw".into());
    let t = Instant::now();
    let f = edgellm_formats::GgufFile::open(&model)?;
    let tok = edgellm_text::Tokenizer::from_gguf(&f)?;
    println!("{model}: {} tokens, loaded in {:?}", tok.vocab_size(), t.elapsed());
    let text = std::fs::read_to_string(&path)?;
    // The first paragraph of at least 8 KB (about 2,000 tokens of English), else the whole text.
    let para = text.split("\n \n").find(|p| p.len() >= 8000).unwrap_or(&text);
    let mut times: Vec<Duration> = Vec::new();
    let mut n = 0;
    for _ in 0..50 {
        let t = Instant::now();
        n = tok.encode(para, false, false).len();
        times.push(t.elapsed());
    }
    times.sort();
    println!("paragraph: {} bytes -> {n} ids in {:?} (median of 50)", para.len(), times[25]);
    let t = Instant::now();
    let ids = tok.encode(&text, tok.add_bos_default(), false);
    let took = t.elapsed();
    println!(
        "{path}: {} bytes -> {} ids in {took:?} ({:.2} µs per id)",
        text.len(),
        ids.len(),
        took.as_secs_f64() * 1e6 / ids.len().max(1) as f64
    );
    Ok(())
}
