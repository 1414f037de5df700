//! Single-thread speed of the quantized kernels, per weight type and tier (a benchmark, kept
//! apart from the tests).
//!
//! `cargo run --release -p edgellm-core --example kernel_speed [-- [--tiers scalar,avx2]
//! [--types q4_0,q8_0] [--stream-mb 400] [--threads 2] [--quick] [--sparse]
//! [--mm 384x384x448,1536x384x448 [--layout file] [--iters N]]]`
//!
//! For each tier and type it prints:
//! - `vec_dot` throughput in GB/s of weight bytes over every row of a 576×1536 and a 1536×576
//!   matrix (out × in, the shapes of SmolLM2-135M; both fit in L2 cache) against one
//!   activation row, one `vec_dot` call per row;
//! - `mv` the same through `matmul` with one token (4-row tiles sharing each activation
//!   block: the token-generation path), on the 1536×576 matrix and streamed from memory over
//!   400 MB of distinct copies of it (like a model's layers, more than the caches);
//!   the k-quants, whose rows must be whole 256-value blocks, use 1536×768 instead; with
//!   `--threads N`, also the streamed product with the rows split over N threads;
//! - `mm512` the matrix product of the 576×1536 matrix with 512 tokens (prompt processing),
//!   in GFLOP/s (2·rows·k·n per second), and its speed-up over a `vec_dot` per row and token
//!   (`mm/dot`);
//! - `quant` activation quantization in GB/s of f32 input.
//!
//! And, once per tier, the 49152×576 Q8_0 embedding-sized matrix (30 MB) as `dot` and `mv`.
//!
//! With `--mm ROWSxKxN,...` it prints instead, per tier and type, the packed (else file-layout)
//! matrix product of those shapes (out × in × tokens) in GFLOP/s, e.g. an encoder's projections;
//! `--layout file` keeps the file layout where the tier packs; `--iters N` runs each product
//! exactly N times untimed, for an instruction counter (`bench/probes/qemu-insn-count.c`).
//!
//! With `--sparse` it prints instead, per tier, the sparse types next to the dense packed
//! Q4_0 / Q8_0 kernels (`quant::sparse`; Q8_SB at 70 % and 50 % unstructured sparsity):
//! bytes read per one-token product of a 1536×576 matrix, its one-token product repeated on
//! one copy (`mv cached`: the matrix stays in the L2 / L3 caches), one-token products streamed over
//! `--stream-mb` of dense-Q8_0-sized layers (the same number of layers for every type) with 1
//! and `--threads` threads, and the 576×1536 product with 512 tokens; all in GFLOP/s counted
//! as dense-equivalent flops (2·rows·k per token, zeros included). `--sparse --iters N
//! [--types q4_s24]` runs instead each one-token product exactly N times untimed (after one
//! call, which sets up what is lazily set up), for an instruction counter
//! (`bench/arm-insn-counts --sparse`); `--types` keeps the layouts named by one of its
//! entries (case aside: `q4_s24`, `q4_s24 packed`, `q8_sb 70%`).
//! Times are this thread's CPU time on Linux (`CLOCK_THREAD_CPUTIME_ID`), so other processes
//! sharing the cores slow the results less (they still share caches and memory bandwidth).

use std::time::Instant;

use edgellm_core::kernels::{self, Kernels, Tier};
use edgellm_core::quant;
use edgellm_core::DType;

/// Deterministic pseudo-Gaussian data without a generator dependency.
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            let mut v = 0.0f32;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                v += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            v
        })
        .collect()
}

/// Seconds this thread has run on a CPU (`CLOCK_THREAD_CPUTIME_ID`), or `None` off Linux. On
/// a busy machine this excludes the time other processes had the core. (`/proc/thread-self/
/// schedstat`, read from the running thread, only advances at scheduler ticks — 4 ms steps,
/// which made short timings jump between a few values.)
#[cfg(target_os = "linux")]
fn cpu_seconds() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec (64-bit `time_t` and `long` on the 64-bit Linux targets
    // this builds for) that the call writes.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    (rc == 0).then_some(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn cpu_seconds() -> Option<f64> {
    None
}

/// Best time per call in seconds of `f` over a few rounds of at least `min_s` each: CPU time
/// of this thread where the OS reports it, else wall time.
fn time(min_s: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let cpu0 = cpu_seconds();
        let mut calls = 0u64;
        while start.elapsed().as_secs_f64() < min_s {
            f();
            calls += 1;
        }
        let wall = start.elapsed().as_secs_f64();
        let spent = match (cpu0, cpu_seconds()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall,
        };
        best = best.min(spent / calls as f64);
    }
    best
}

struct Matrix {
    dtype: DType,
    rows: usize,
    k: usize,
    w: Vec<u8>,
}

impl Matrix {
    fn new(dtype: DType, rows: usize, k: usize, seed: u64) -> Matrix {
        let w = quant::quantize(dtype, &data(rows * k, seed)).expect("quantizable type");
        Matrix { dtype, rows, k, w }
    }

    fn row_bytes(&self) -> usize {
        self.w.len() / self.rows
    }
}

fn activations(kern: &Kernels, dtype: DType, k: usize, n: usize) -> Vec<u8> {
    let x = data(k * n, 99);
    let ab = kernels::activation_row_bytes(dtype, k);
    let mut a = vec![0u8; ab * n];
    for (xr, ar) in x.chunks_exact(k).zip(a.chunks_exact_mut(ab)) {
        kern.quantize_activations(dtype, xr, ar);
    }
    a
}

/// GB/s of weight bytes of one `vec_dot` per row.
fn vec_dot_gbs(kern: &Kernels, m: &Matrix, min_s: f64) -> f64 {
    let a = activations(kern, m.dtype, m.k, 1);
    let rb = m.row_bytes();
    let mut sink = 0.0f32;
    let t = time(min_s, || {
        for r in m.w.chunks_exact(rb) {
            sink += kern.vec_dot(m.dtype, r, &a, m.k);
        }
    });
    std::hint::black_box(sink);
    m.w.len() as f64 / t / 1e9
}

/// GB/s of weight bytes of `matmul` with one token over each matrix in turn.
fn mv_gbs(kern: &Kernels, ms: &[Matrix], min_s: f64) -> f64 {
    let (dtype, k, rows) = (ms[0].dtype, ms[0].k, ms[0].rows);
    let a = activations(kern, dtype, k, 1);
    let mut out = vec![0.0f32; rows];
    let t = time(min_s, || {
        for m in ms {
            kern.matmul(dtype, &m.w, k, 0..rows, &a, 1, &mut out, rows);
        }
    });
    std::hint::black_box(&out);
    ms.iter().map(|m| m.w.len()).sum::<usize>() as f64 / t / 1e9
}

/// GB/s of weight bytes of one-token products over each matrix in turn with `threads`
/// threads, each taking a contiguous share of every matrix's rows (no synchronization between
/// matrices); wall time, best of three rounds.
fn mv_gbs_threads(kern: &Kernels, ms: &[Matrix], threads: usize, min_s: f64) -> f64 {
    let (dtype, k, rows) = (ms[0].dtype, ms[0].k, ms[0].rows);
    let a = activations(kern, dtype, k, 1);
    let per = rows.div_ceil(threads).div_ceil(4) * 4;
    let run = || {
        std::thread::scope(|s| {
            for i in 0..threads {
                let (start, end) = ((i * per).min(rows), ((i + 1) * per).min(rows));
                let a = &a;
                s.spawn(move || {
                    let mut out = vec![0.0f32; end - start];
                    for m in ms {
                        kern.matmul(dtype, &m.w, k, start..end, a, 1, &mut out, end - start);
                    }
                    std::hint::black_box(&out);
                });
            }
        })
    };
    run();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed().as_secs_f64() < min_s {
            run();
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / calls as f64);
    }
    ms.iter().map(|m| m.w.len()).sum::<usize>() as f64 / best / 1e9
}

/// GFLOP/s of `matmul` with `n` tokens.
fn mm_gflops(kern: &Kernels, m: &Matrix, n: usize, min_s: f64) -> f64 {
    let a = activations(kern, m.dtype, m.k, n);
    let mut out = vec![0.0f32; m.rows * n];
    let t = time(min_s, || kern.matmul(m.dtype, &m.w, m.k, 0..m.rows, &a, n, &mut out, m.rows));
    std::hint::black_box(&out);
    2.0 * (m.rows * m.k * n) as f64 / t / 1e9
}

/// A matrix packed for the packed kernels, with its activations for `n` tokens.
fn packed(kern: &Kernels, m: &Matrix, n: usize) -> (Vec<u8>, Vec<u8>) {
    let p = kernels::pack(m.dtype, m.k, m.rows, &m.w);
    let x = data(m.k * n, 99);
    let ab = kernels::packed_activation_row_bytes(m.dtype, m.k);
    let mut a = vec![0u8; ab * n];
    for (xr, ar) in x.chunks_exact(m.k).zip(a.chunks_exact_mut(ab)) {
        kern.quantize_packed_activations(m.dtype, xr, ar);
    }
    (p, a)
}

/// GB/s of weight bytes of packed one-token products over each matrix in turn, and GFLOP/s of
/// the packed product of `wide` with 512 tokens.
fn packed_speed(kern: &Kernels, wide: &Matrix, ms: &[Matrix], min_s: f64) -> (f64, f64) {
    let (dtype, k, rows) = (ms[0].dtype, ms[0].k, ms[0].rows);
    let packs: Vec<(Vec<u8>, Vec<u8>)> = ms.iter().map(|m| packed(kern, m, 1)).collect();
    let mut out = vec![0.0f32; rows];
    let t = time(min_s, || {
        for (p, a) in &packs {
            kern.matmul_packed(dtype, p, k, 0..rows, a, 1, &mut out, rows);
        }
    });
    let mv = packs.iter().map(|p| p.0.len()).sum::<usize>() as f64 / t / 1e9;
    let n = 512;
    let (p, a) = packed(kern, wide, n);
    let mut out = vec![0.0f32; wide.rows * n];
    let t = time(min_s, || kern.matmul_packed(dtype, &p, wide.k, 0..wide.rows, &a, n, &mut out, wide.rows));
    std::hint::black_box(&out);
    (mv, 2.0 * (wide.rows * wide.k * n) as f64 / t / 1e9)
}

/// `--mm` options.
struct MmOptions {
    /// `--iters N`: run each product exactly `N` times, untimed (for an instruction counter
    /// such as `bench/probes/qemu-insn-count.c`, where time means nothing).
    iters: Option<usize>,
    /// `--layout file`: the file-layout kernels even where the tier packs.
    file_layout: bool,
}

/// Single-thread GFLOP/s of the product at each shape (`--mm`), packed where the tier packs.
fn shape_table(tiers: &[Tier], types: &[DType], shapes: &[(usize, usize, usize)], o: &MmOptions, min_s: f64) {
    let last = if o.iters.is_some() { "iterations" } else { "GFLOP/s" };
    println!("{:<7} {:<6} {:>16} {:>8} {:>10}", "tier", "type", "rows x k x n", "layout", last);
    for &tier in tiers {
        let Some(kern) = Kernels::for_tier(tier) else {
            println!("{:<7} not supported on this CPU", tier.name());
            continue;
        };
        for &t in types {
            for &(rows, k, n) in shapes {
                let m = Matrix::new(t, rows, k, 5);
                let packs = kern.packs(t) && !o.file_layout;
                let mut out = vec![0.0f32; rows * n];
                let (w, a) =
                    if packs { packed(kern, &m, n) } else { (m.w.clone(), activations(kern, t, k, n)) };
                let mut product = || {
                    if packs {
                        kern.matmul_packed(t, &w, k, 0..rows, &a, n, &mut out, rows)
                    } else {
                        kern.matmul(t, &w, k, 0..rows, &a, n, &mut out, rows)
                    }
                };
                let figure = match o.iters {
                    Some(it) => {
                        for _ in 0..it {
                            product();
                        }
                        it as f64
                    }
                    None => 2.0 * (rows * k * n) as f64 / time(min_s, product) / 1e9,
                };
                std::hint::black_box(&out);
                println!(
                    "{:<7} {:<6} {:>16} {:>8} {figure:>10.1}",
                    tier.name(),
                    t.name(),
                    format!("{rows}x{k}x{n}"),
                    if packs { "packed" } else { "file" }
                );
            }
        }
    }
}

/// GB/s of f32 input of activation quantization.
fn quant_gbs(kern: &Kernels, dtype: DType, min_s: f64) -> f64 {
    let k = 1536 * 4;
    let x = data(k, 7);
    let mut a = vec![0u8; kernels::activation_row_bytes(dtype, k)];
    let t = time(min_s, || kern.quantize_activations(dtype, &x, &mut a));
    std::hint::black_box(&a);
    (4 * k) as f64 / t / 1e9
}

/// One sparse-comparison entry: a weight matrix in one of the layouts being compared.
#[derive(Clone, Copy)]
enum Layout {
    /// Dense Q4_0 / Q8_0 in the packed layout (with its packed activations).
    Packed(DType),
    /// An N:M type through `matmul`.
    Nm(DType),
    /// `Q8_SB` at this fraction of zeros.
    Bitmap(f64),
    /// `Q8_SB` at this fraction of zeros in the bitmap group layout.
    Groups(f64),
}

/// A matrix in a [`Layout`]: `w` the weights (packed bytes, N:M rows or `Q8_SB` metadata),
/// `values`/`c` the `Q8_SB` companion.
struct Sparse {
    layout: Layout,
    rows: usize,
    k: usize,
    w: Vec<u8>,
    values: Vec<u8>,
    c: usize,
    /// The bitmap group layout of a [`Layout::Groups`] matrix.
    groups: Option<kernels::BitmapGroups>,
}

impl Sparse {
    fn new(layout: Layout, rows: usize, k: usize, seed: u64) -> Sparse {
        let x = data(rows * k, seed);
        let (w, values, c) = match layout {
            Layout::Packed(t) => (kernels::pack(t, k, rows, &quant::quantize(t, &x).unwrap()), vec![], 0),
            Layout::Nm(t) => (quant::quantize(t, &x).unwrap(), vec![], 0),
            Layout::Bitmap(zeros) | Layout::Groups(zeros) => {
                // Zero the `zeros` fraction of smallest magnitudes of each row (unstructured).
                let mut x = x;
                for r in x.chunks_exact_mut(k) {
                    let mut mags: Vec<f32> = r.iter().map(|v| v.abs()).collect();
                    mags.sort_by(f32::total_cmp);
                    let cut = mags[((k as f64 * zeros) as usize).min(k - 1)];
                    r.iter_mut().filter(|v| v.abs() < cut).for_each(|v| *v = 0.0);
                }
                let b = quant::sparse::quantize_bitmap(&x, k, rows).unwrap();
                (b.meta, b.values, b.c)
            }
        };
        let groups = match layout {
            Layout::Groups(_) => Some(kernels::BitmapGroups::pack(k, rows, &w, &values, c)),
            _ => None,
        };
        Sparse { layout, rows, k, w, values, c, groups }
    }

    fn name(&self) -> String {
        match self.layout {
            Layout::Packed(t) => format!("{t} packed"),
            Layout::Nm(t) => t.name().to_string(),
            Layout::Bitmap(z) => format!("Q8_SB {:.0}%", z * 100.0),
            Layout::Groups(z) => format!("Q8_SB {:.0}% grp", z * 100.0),
        }
    }

    /// Weight bytes one product with every row reads.
    fn bytes(&self) -> usize {
        self.groups.as_ref().map_or(self.w.len() + self.values.len(), |g| g.bytes().len())
    }

    /// Activations for `n` tokens in this layout's format.
    fn act(&self, kern: &Kernels, n: usize) -> Vec<u8> {
        match self.layout {
            Layout::Packed(t) => packed(kern, &Matrix { dtype: t, rows: 0, k: self.k, w: vec![] }, n).1,
            Layout::Nm(t) => activations(kern, t, self.k, n),
            Layout::Bitmap(_) => activations(kern, DType::Q8_0, self.k, n),
            Layout::Groups(_) => {
                packed(kern, &Matrix { dtype: DType::Q8_0, rows: 0, k: self.k, w: vec![] }, n).1
            }
        }
    }

    /// Rows `rows` against `n` tokens into `out` (stride `rows.len()`).
    fn run(&self, kern: &Kernels, rows: std::ops::Range<usize>, act: &[u8], n: usize, out: &mut [f32]) {
        let s = rows.len();
        match self.layout {
            Layout::Packed(t) => kern.matmul_packed(t, &self.w, self.k, rows, act, n, out, s),
            Layout::Nm(t) => kern.matmul(t, &self.w, self.k, rows, act, n, out, s),
            Layout::Bitmap(_) => {
                kern.matmul_bitmap(&self.w, &self.values, self.c, self.k, rows, act, n, out, s)
            }
            Layout::Groups(_) => {
                let g = self.groups.as_ref().expect("a bitmap group matrix");
                kern.matmul_bitmap_groups(g, rows, act, n, out, s)
            }
        }
    }
}

/// Seconds per pass of one-token products over every layer with `threads` threads (each a
/// contiguous share of every layer's rows, multiples of 16), wall time, best of three.
fn sparse_mv_seconds(kern: &Kernels, layers: &[Sparse], threads: usize, min_s: f64) -> f64 {
    let (rows, act) = (layers[0].rows, layers[0].act(kern, 1));
    let per = rows.div_ceil(threads).div_ceil(16) * 16;
    let run = || {
        std::thread::scope(|s| {
            for i in 0..threads {
                let (start, end) = ((i * per).min(rows), ((i + 1) * per).min(rows));
                let act = &act;
                s.spawn(move || {
                    let mut out = vec![0.0f32; end - start];
                    for l in layers {
                        l.run(kern, start..end, act, 1, &mut out);
                    }
                    std::hint::black_box(&out);
                });
            }
        })
    };
    run();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed().as_secs_f64() < min_s {
            run();
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / calls as f64);
    }
    best
}

/// The sparse layouts of [`sparse_table`].
fn sparse_layouts() -> [Layout; 14] {
    [
        Layout::Packed(DType::Q4_0),
        Layout::Nm(DType::Q4_S24),
        Layout::Packed(DType::Q4_S24),
        Layout::Nm(DType::Q4_S48),
        Layout::Packed(DType::Q4_S48),
        Layout::Packed(DType::Q8_0),
        Layout::Nm(DType::Q8_S24),
        Layout::Packed(DType::Q8_S24),
        Layout::Nm(DType::Q8_S48),
        Layout::Packed(DType::Q8_S48),
        Layout::Bitmap(0.7),
        Layout::Groups(0.7),
        Layout::Bitmap(0.5),
        Layout::Groups(0.5),
    ]
}

/// `f(tier, kernels, matrix)` for every supported tier of `tiers` and every sparse layout's
/// `rows × k` matrix (a line for each unsupported tier).
fn each_sparse(tiers: &[Tier], rows: usize, k: usize, mut f: impl FnMut(Tier, &Kernels, Sparse)) {
    for &tier in tiers {
        let Some(kern) = Kernels::for_tier(tier) else {
            println!("{:<11} not supported on this CPU", tier.name());
            continue;
        };
        for layout in sparse_layouts() {
            f(tier, kern, Sparse::new(layout, rows, k, 2));
        }
    }
}

/// `--sparse --iters N`: each kept layout's one-token 1536×576 product, once and then `n`
/// times, untimed.
fn sparse_counted(tiers: &[Tier], only: Option<&[String]>, n: usize) {
    let rows = 1536;
    each_sparse(tiers, rows, 576, |tier, kern, one| {
        let name = one.name();
        if only.is_some_and(|o| !o.iter().any(|t| name.to_lowercase() == *t)) {
            return;
        }
        let act = one.act(kern, 1);
        let mut out = vec![0.0f32; rows];
        for _ in 0..=n {
            one.run(kern, 0..rows, &act, 1, &mut out);
        }
        std::hint::black_box(&out);
        println!("{:<11} {:<12} {n} products", tier.name(), name);
    });
}

/// The sparse comparison table (see the module docs).
fn sparse_table(tiers: &[Tier], threads: usize, stream_mb: usize, min_s: f64) {
    let (rows, k) = (1536, 576);
    // The same number of layers for every type: `stream_mb` of dense Q8_0.
    let copies = ((stream_mb << 20) / (rows * k / 32 * 34)).max(1);
    let flops = 2.0 * (rows * k) as f64;
    println!(
        "sparse vs dense, {rows}x{k} one-token products streamed over {copies} layers, 576x1536 x 512 tokens;          GFLOP/s counted dense-equivalent"
    );
    println!(
        "{:<11} {:<12} {:>11} {:>10} {:>12} {:>12} {:>12} {:>13}",
        "tier",
        "type",
        "bytes/prod",
        "bits/w",
        "mv cached",
        "mv 1 thread",
        format!("mv {threads} thr"),
        "mm512"
    );
    each_sparse(tiers, rows, k, |tier, kern, one| {
        let bytes = one.bytes();
        let layers: Vec<Sparse> = (0..copies)
            .map(|_| Sparse {
                layout: one.layout,
                rows,
                k,
                w: one.w.clone(),
                values: one.values.clone(),
                c: one.c,
                groups: one.groups.clone(),
            })
            .collect();
        // One thread: this thread's CPU time (the machine may be shared).
        let act1 = one.act(kern, 1);
        let mut out1 = vec![0.0f32; rows];
        let t0 = time(min_s, || one.run(kern, 0..rows, &act1, 1, &mut out1));
        let t1 = time(min_s, || {
            for l in &layers {
                l.run(kern, 0..rows, &act1, 1, &mut out1);
            }
        });
        let tn = sparse_mv_seconds(kern, &layers, threads, min_s);
        drop(layers);
        let wide = Sparse::new(one.layout, 576, 1536, 1);
        let n = 512;
        let act = wide.act(kern, n);
        let mut out = vec![0.0f32; 576 * n];
        let tm = time(min_s, || wide.run(kern, 0..576, &act, n, &mut out));
        std::hint::black_box(&out);
        println!(
            "{:<11} {:<12} {:>11} {:>10.3} {:>12.1} {:>12.1} {:>12.1} {:>13.1}",
            tier.name(),
            one.name(),
            bytes,
            bytes as f64 * 8.0 / (rows * k) as f64,
            flops / t0 / 1e9,
            flops * copies as f64 / t1 / 1e9,
            flops * copies as f64 / tn / 1e9,
            2.0 * (576 * 1536 * n) as f64 / tm / 1e9
        );
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let quick = args.iter().any(|a| a == "--quick");
    let min_s = if quick { 0.05 } else { 0.2 };
    let threads: usize = value("--threads").map(|v| v.parse().expect("a thread count")).unwrap_or(1);
    let stream_mb: usize = value("--stream-mb").map(|v| v.parse().expect("megabytes")).unwrap_or(400);
    let tiers: Vec<Tier> = match value("--tiers") {
        Some(list) => list.split(',').map(|n| Tier::from_name(n).expect("a tier name")).collect(),
        None => kernels::available_tiers(),
    };
    if args.iter().any(|a| a == "--sparse") {
        let iters: Option<usize> = value("--iters").map(|v| v.parse().expect("an iteration count"));
        let only: Option<Vec<String>> =
            value("--types").map(|l| l.split(',').map(|t| t.to_lowercase()).collect());
        if let Some(n) = iters {
            // No worker threads: their spinning would add to an instruction count.
            edgellm_core::parallel::set_num_threads(1);
            sparse_counted(&tiers, only.as_deref(), n);
        } else {
            sparse_table(&tiers, threads, stream_mb, min_s);
        }
        return;
    }
    let shapes: Option<Vec<(usize, usize, usize)>> = value("--mm").map(|list| {
        list.split(',')
            .map(|s| {
                let d: Vec<usize> = s.split('x').map(|v| v.parse().expect("ROWSxKxN")).collect();
                assert_eq!(d.len(), 3, "--mm takes ROWSxKxN shapes");
                (d[0], d[1], d[2])
            })
            .collect()
    });
    let types: Vec<DType> = match value("--types") {
        Some(list) => list.split(',').map(|n| DType::from_name(n).expect("a type name")).collect(),
        None => vec![
            DType::Q4_0,
            DType::Q8_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q4_K,
            DType::Q6_K,
            DType::F16,
            DType::F32,
            DType::Q5_1,
            DType::Q5_K,
            DType::Q3_K,
            DType::Q2_K,
            DType::BF16,
        ],
    };
    if let Some(shapes) = shapes {
        let o = MmOptions {
            iters: value("--iters").map(|v| v.parse().expect("an iteration count")),
            file_layout: value("--layout").is_some_and(|v| v == "file"),
        };
        if o.iters.is_some() {
            // No worker threads (set-up code uses the pool): their spinning would add to an
            // instruction count.
            edgellm_core::parallel::set_num_threads(1);
        }
        shape_table(&tiers, &types, &shapes, &o, min_s);
        return;
    }
    println!("active tier: {} (single thread)", kernels::tier_name());
    println!(
        "{:<7} {:<6} {:>14} {:>14} {:>11} {:>13} {:>13} {:>9} {:>10}",
        "tier",
        "type",
        "dot 576x1536",
        "dot 1536x576",
        "mv 1536x576",
        "mv streamed",
        "mm512 GFLOP/s",
        "mm/dot",
        "quant act"
    );
    println!(
        "{:<7} {:<6} {:>14} {:>14} {:>11} {:>13} {:>13} {:>9} {:>10}",
        "", "", "GB/s", "GB/s", "GB/s", "GB/s", "", "", "GB/s"
    );
    for &tier in &tiers {
        let Some(kern) = Kernels::for_tier(tier) else {
            println!("{:<7} not supported on this CPU", tier.name());
            continue;
        };
        for &t in &types {
            let wide = Matrix::new(t, 576, 1536, 1);
            // The k-quants need rows of whole 256-value blocks: 1536×768 for them.
            let tall_k = if t.block_size() == 256 { 768 } else { 576 };
            let tall = Matrix::new(t, 1536, tall_k, 2);
            // Distinct copies, 400 MB in all by default (`--stream-mb`), more than the caches.
            let copies = (stream_mb << 20) / tall.w.len();
            let layers: Vec<Matrix> =
                (0..copies).map(|_| Matrix { dtype: t, rows: 1536, k: tall_k, w: tall.w.clone() }).collect();
            let dot_wide = vec_dot_gbs(kern, &wide, min_s);
            let dot_tall = vec_dot_gbs(kern, &tall, min_s);
            let mv_tall = mv_gbs(kern, std::slice::from_ref(&tall), min_s);
            let mv_stream = mv_gbs(kern, &layers, min_s);
            let mv_stream_threads = (threads > 1).then(|| mv_gbs_threads(kern, &layers, threads, min_s));
            let n = 512;
            let mm = mm_gflops(kern, &wide, n, min_s);
            // Speed-up of one 512-token product over a vec_dot per row and token.
            let dot_wide_gflops =
                dot_wide * 1e9 / wide.w.len() as f64 * 2.0 * (wide.rows * wide.k) as f64 / 1e9;
            let q = quant_gbs(kern, t, min_s);
            println!(
                "{:<7} {:<6} {dot_wide:>14.2} {dot_tall:>14.2} {mv_tall:>11.2} {mv_stream:>13.2} {mm:>13.1} {:>8.1}x {q:>10.2}",
                tier.name(),
                t.name(),
                mm / dot_wide_gflops
            );
            if kern.packs(t) {
                let (mv, _) = packed_speed(kern, &wide, std::slice::from_ref(&tall), min_s);
                let (mv_stream, mm) = packed_speed(kern, &wide, &layers, min_s);
                println!(
                    "{:<7} {:<6} packed: mv 1536x576 {mv:.2} GB/s, mv streamed {mv_stream:.2} GB/s, mm512 {mm:.1} GFLOP/s",
                    tier.name(),
                    t.name()
                );
            }
            if let Some(g) = mv_stream_threads {
                println!(
                    "{:<7} {:<6} mv streamed with {threads} threads: {g:.2} GB/s",
                    tier.name(),
                    t.name()
                );
            }
        }
        if types.contains(&DType::Q8_0) {
            let emb = Matrix::new(DType::Q8_0, 49152, 576, 3);
            let mv = mv_gbs(kern, std::slice::from_ref(&emb), min_s);
            let dot = vec_dot_gbs(kern, &emb, min_s);
            println!(
                "{:<7} Q8_0 49152x576 (embedding, 30 MB): dot {dot:.2} GB/s, mv {mv:.2} GB/s",
                tier.name()
            );
        }
    }
}
