//! `edgellm inspect`: metadata, a tensor table and totals.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use edgellm_core::DType;
use edgellm_formats::{GgufFile, Value};
use edgellm_models::linear::{is_sparse, BITMAP_VALUES_SUFFIX};
use edgellm_models::numeric::{check_numerics, NumericOptions, F16_MAX};
use edgellm_runtime::memory::human_bytes;

/// Arguments of `edgellm inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// Model file (GGUF).
    model: PathBuf,
    /// Print every tensor (default: all, since the table is the point; use --no-tensors to skip).
    #[arg(long)]
    no_tensors: bool,
    /// Decode every weight and report NaN, infinite and too-large values (tensor, block, row,
    /// column); exits with an error when any is found.
    #[arg(long)]
    check: bool,
    /// With --check: finite magnitudes above this are reported too (default: 65504, the
    /// largest half-precision value; "inf" turns that off).
    #[arg(long, default_value_t = F16_MAX, requires = "check")]
    max_abs: f32,
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 100 {
        let cut: String = s.chars().take(97).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Run `edgellm inspect`.
pub fn main(a: Args) -> Result<()> {
    anyhow::ensure!(a.model.exists(), "model file {} does not exist", a.model.display());
    let f = GgufFile::open(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    println!(
        "file: {} ({}), GGUF v{}, alignment {}",
        a.model.display(),
        human_bytes(f.file_len()),
        f.version,
        f.alignment
    );
    println!("\nmetadata ({} keys):", f.metadata.len());
    let w = f.metadata.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &f.metadata {
        let shown = match v {
            Value::String(s) if s.len() > 100 => format!("<{} characters of text>", s.len()),
            _ => short(v),
        };
        println!("  {k:<w$} = {shown}");
    }
    // A bitmap-sparse weight's companion values tensor counts toward its weight's type (bytes,
    // no parameters): bits per weight are then the real ones.
    let owner = |t: &edgellm_formats::TensorInfo| -> Option<DType> {
        let w = t.name.strip_suffix(BITMAP_VALUES_SUFFIX)?;
        (t.dtype == DType::I8).then(|| f.tensor(w)).flatten().map(|w| w.dtype).filter(|&d| d == DType::Q8_SB)
    };
    let mut by_type: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
    for t in &f.tensors {
        match owner(t) {
            Some(d) => by_type.entry(d.name()).or_default().2 += t.size,
            None => {
                let e = by_type.entry(t.dtype.name()).or_default();
                e.0 += 1;
                e.1 += t.n_elements();
                e.2 += t.size;
            }
        }
    }
    if !a.no_tensors {
        println!("\ntensors ({}):", f.tensors.len());
        let nw = f.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
        println!("  {:<nw$}  {:<6}  {:<16}  {:>12}", "name", "type", "shape", "bytes");
        for t in &f.tensors {
            let shape = format!("{:?}", t.dims);
            let note = match owner(t) {
                Some(_) => "  (kept values of the Q8_SB weight above)".to_string(),
                None if is_sparse(t.dtype) => {
                    let bytes =
                        t.size + f.tensor(&format!("{}{BITMAP_VALUES_SUFFIX}", t.name)).map_or(0, |v| v.size);
                    format!("  {:.2} bits/weight", bytes as f64 * 8.0 / t.n_elements().max(1) as f64)
                }
                None => String::new(),
            };
            println!("  {:<nw$}  {:<6}  {:<16}  {:>12}{note}", t.name, t.dtype.name(), shape, t.size);
        }
    }
    if f.tensors.iter().any(|t| is_sparse(t.dtype)) {
        let version = f.get("edgellm.sparse.version").map_or("missing".to_string(), short);
        let pattern = f.get("edgellm.sparse.pattern").map_or("not recorded".to_string(), short);
        println!("\nsparse tensors: edgellm sparse extension version {version}, pattern {pattern} (docs/sparse-gguf.md)");
    }
    let (n, p, b) = by_type.values().fold((0, 0, 0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2));
    println!("\ntotals by type:");
    for (ty, (cnt, el, by)) in &by_type {
        println!(
            "  {ty:<6} {cnt:>5} tensors {el:>12} params {:>10}  {:.2} bits/weight",
            human_bytes(*by),
            *by as f64 * 8.0 / *el as f64
        );
    }
    println!(
        "  all    {n:>5} tensors {p:>12} params {:>10}  {:.2} bits/weight",
        human_bytes(b),
        b as f64 * 8.0 / p.max(1) as f64
    );
    if a.check {
        check(&f, a.max_abs)?;
    }
    Ok(())
}

/// `--check`: the numeric report; an error when a tensor is not clean.
fn check(f: &GgufFile, max_abs: f32) -> Result<()> {
    anyhow::ensure!(!max_abs.is_nan() && max_abs > 0.0, "--max-abs must be a positive number, got {max_abs}");
    let r = check_numerics(f, NumericOptions { max_abs, max_listed: 5 })?;
    println!("\nnumeric check ({} tensors decoded, limit |w| <= {max_abs}):", r.tensors.len());
    for t in r.bad() {
        println!(
            "  {} ({}): {} NaN, {} infinite, {} too large, in {} of its blocks",
            t.name, t.dtype, t.nan, t.infinite, t.too_large, t.bad_blocks
        );
        for b in &t.first {
            println!(
                "    block {} (row {}, column {}): {} ({})",
                b.block, b.row, b.column, b.value, b.problem
            );
        }
        if t.bad_blocks > t.first.len() as u64 {
            println!("    ... and {} more blocks", t.bad_blocks - t.first.len() as u64);
        }
    }
    let n_bad = r.bad().count();
    if let Some(t) = r.tensors.iter().filter(|t| t.is_clean()).max_by(|a, b| a.max_abs.total_cmp(&b.max_abs))
    {
        println!("  {} tensors clean; largest |w| {} in {}", r.tensors.len() - n_bad, t.max_abs, t.name);
    }
    for s in &r.skipped {
        println!("  not decoded: {} ({}): {}", s.name, s.dtype, s.reason);
    }
    anyhow::ensure!(
        n_bad == 0,
        "numeric check failed: {n_bad} tensor(s) hold NaN, infinite or too-large values (listed above); \
         the file would produce garbage: convert or quantize it again from its source"
    );
    println!("  ok: every decoded weight is finite and within the limit");
    Ok(())
}
