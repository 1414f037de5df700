//! One-token product speed: the column-skipping kernel (`kernels::colskip`) at several input
//! sparsities against the dense kernels (GGUF rows and the row-interleaved packed layout) on
//! the same matrix, with the tier in use (`EDGELLM_KERNELS` forces one).
//!
//! `cargo run --release -p edgellm-core --example colskip_speed [-- K M]` (default 576 1536,
//! SmolLM2's FFN gate/up).
//!
//! `--iters N` runs every case exactly `N` times instead of timing it, and `--only CASE`
//! (`TYPE/LAYOUT[/SPARSITY]`, layout `rows`, `packed` or `col`, e.g. `q4_0/col/0.4`) keeps one
//! case: what `bench/arm-insn-counts --colskip` counts instructions of under QEMU.
//! `--copies N` cycles through N copies of each layout, one per call (e.g. 64 copies of the
//! default shape, 32 MiB: out of L2, as the weights of a decoded token are).

use std::time::Instant;

use edgellm_core::kernels::colskip::{colskip_matmul, ActiveColumns, ColPacked};
use edgellm_core::kernels::{self, tier_name};
use edgellm_core::quant::quantize;
use edgellm_core::DType;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Median of `reps` timings of `f` in microseconds; with `iters`, `f` run once (lazy set-up
/// such as the kernel table) and then that many times instead, and 0 returned.
fn time(reps: usize, iters: Option<usize>, mut f: impl FnMut()) -> f64 {
    if let Some(n) = iters {
        for _ in 0..=n {
            f();
        }
        return 0.0;
    }
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            for _ in 0..20 {
                f();
            }
            s.elapsed().as_secs_f64() * 1e6 / 20.0
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| raw.iter().position(|a| a == flag).and_then(|i| raw.get(i + 1)).cloned();
    let iters: Option<usize> = value("--iters").map(|v| v.parse().expect("--iters takes a count"));
    let only = value("--only").map(|v| v.to_lowercase());
    let copies: usize = value("--copies").map_or(1, |v| v.parse().expect("--copies takes a count"));
    if iters.is_some() {
        // No worker threads (packing uses the pool): their spinning would add to an
        // instruction count.
        edgellm_core::parallel::set_num_threads(1);
    }
    // A case runs unless `--only` names another.
    let runs = |dtype: DType, layout: &str, s: f64| {
        only.as_deref().is_none_or(|o| {
            let mut it = o.split('/');
            let (t, l, sp) = (it.next(), it.next(), it.next());
            t == Some(&dtype.to_string().to_lowercase())
                && l == Some(layout)
                && sp.is_none_or(|v| v.parse::<f64>().ok() == Some(s))
        })
    };
    let sizes: Vec<usize> = raw
        .iter()
        .enumerate()
        .filter(|&(i, _)| i == 0 || !matches!(raw[i - 1].as_str(), "--iters" | "--only" | "--copies"))
        .filter_map(|(_, a)| a.parse().ok())
        .collect();
    let (k, m) = (sizes.first().copied().unwrap_or(576), sizes.get(1).copied().unwrap_or(1536));
    println!(
        "tier {} · one token · [{m} × {k}] · {copies} cop{} · median of 15 × 20 calls, single thread",
        tier_name(),
        if copies == 1 { "y" } else { "ies" }
    );
    println!("| type | layout | sparsity | µs | GB/s of bytes read | bytes read | gathering the input, µs |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for dtype in [DType::Q4_0, DType::Q5_0, DType::Q8_0, DType::Q4_K] {
        if dtype == DType::Q4_K && !k.is_multiple_of(256) {
            println!("| Q4_K | (k = {k} is not a whole number of 256-value super-blocks: try `1536 576`) | | | | | |");
            continue;
        }
        let w = quantize(dtype, &values(k * m, 1)).unwrap();
        let x = values(k, 2);
        let mut act = vec![0u8; kernels::activation_row_bytes(dtype, k)];
        kernels::quantize_activations(dtype, &x, &mut act);
        let mut out = vec![0.0f32; m];
        if runs(dtype, "rows", 0.0) {
            let us = time(15, iters, || kernels::matmul(dtype, &w, k, 0..m, &act, 1, &mut out, m));
            println!(
                "| {dtype} | GGUF rows | 0 | {us:.1} | {:.1} | {} |",
                w.len() as f64 / us / 1e3,
                w.len()
            );
        }
        if kernels::packs(dtype) && runs(dtype, "packed", 0.0) {
            let p: Vec<Vec<u8>> = (0..copies).map(|_| kernels::pack(dtype, k, m, &w)).collect();
            let mut pa = vec![0u8; kernels::packed_activation_row_bytes(dtype, k)];
            kernels::quantize_packed_activations(dtype, &x, &mut pa);
            let mut i = 0;
            let us = time(15, iters, || {
                i = (i + 1) % copies;
                kernels::matmul_packed(dtype, &p[i], k, 0..m, &pa, 1, &mut out, m)
            });
            println!(
                "| {dtype} | packed rows | 0 | {us:.1} | {:.1} | {} |",
                p[0].len() as f64 / us / 1e3,
                p[0].len()
            );
        }
        let c: Vec<ColPacked> = (0..copies).map(|_| ColPacked::pack(dtype, k, m, &w).unwrap()).collect();
        let mut cols = ActiveColumns::new();
        for s in [0.0, 0.25, 0.4, 0.5, 0.7] {
            let mut mags: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            mags.sort_by(|a, b| a.total_cmp(b));
            let t = mags[((s * k as f64) as usize).min(k - 1)];
            let xt: Vec<f32> = x.iter().map(|&v| if v.abs() < t && s > 0.0 { 0.0 } else { v }).collect();
            kernels::quantize_activations(dtype, &xt, &mut act);
            cols.gather_for(dtype, &act, k);
            if !runs(dtype, "col", s) {
                continue;
            }
            let g = time(15, iters, || cols.gather_for(dtype, &act, k));
            let mut i = 0;
            let us = time(15, iters, || {
                i = (i + 1) % copies;
                colskip_matmul(&c[i], 0..c[i].tiles(), &cols, &mut out)
            });
            let b = c[0].bytes_read(&cols);
            println!(
                "| {dtype} | column-blocked | {s} | {us:.1} | {:.1} | {b} | {g:.2} |",
                b as f64 / us / 1e3
            );
        }
    }
}
