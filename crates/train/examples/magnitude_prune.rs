//! Zero the smallest-magnitude weights of every output row of every layer linear of a
//! sentence-transformers BERT and write an F32 `bert` GGUF: the pruned student of
//! docs/training.md's measurement, independent of `edgellm prune`.
//!
//! `cargo run --release -p edgellm-train --example magnitude_prune -- MODEL_DIR OUT.gguf [FRACTION]`

use std::path::PathBuf;

use edgellm_models::bert::gguf_export;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: magnitude_prune MODEL_DIR OUT.gguf [FRACTION (default 0.5)]".into());
    }
    let fraction: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(0.5);
    if !(0.0..1.0).contains(&fraction) {
        return Err("FRACTION must be in [0, 1)".into());
    }
    let mut export = gguf_export(&PathBuf::from(&args[0]))?;
    let roles = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down"];
    let (mut zeros, mut total) = (0usize, 0usize);
    for t in &mut export.tensors {
        if !(t.name.starts_with("blk.") && roles.iter().any(|r| t.name.ends_with(&format!(".{r}.weight")))) {
            continue;
        }
        let cols = t.dims[0] as usize;
        let k = (cols as f64 * fraction).round() as usize;
        for row in t.data.chunks_exact_mut(cols) {
            let mut idx: Vec<usize> = (0..cols).collect();
            // Smallest |w| first, ties by position: exactly k zeros per row.
            idx.sort_by(|&a, &b| row[a].abs().total_cmp(&row[b].abs()).then(a.cmp(&b)));
            idx[..k].iter().for_each(|&i| row[i] = 0.0);
        }
        zeros += t.data.iter().filter(|v| **v == 0.0).count();
        total += t.data.len();
    }
    export.write_f32(&args[1])?;
    println!(
        "{}: {zeros} of {total} layer-linear weights zero ({:.2} %)",
        args[1],
        100.0 * zeros as f64 / total as f64
    );
    Ok(())
}
