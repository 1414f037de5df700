//! The kernels against their oracles, on every tier this machine runs (forced in-process
//! through `Kernels::for_tier`, so one run covers scalar and every SIMD tier):
//!
//! - SIMD activation quantizers are bit-identical to the scalar ones, which are the reference
//!   quantizers of `quant`;
//! - SIMD `vec_dot` and `matmul` match the scalar oracle within the f32 reordering bound of
//!   `Tolerance::sum_reorder`, on random, random-byte and adversarial blocks (extreme and zero
//!   scales, all-zero blocks, one block, odd block counts, row ranges not starting at 0, token
//!   counts that are not a multiple of the tile);
//! - the oracle is the exact dot product of the dequantized weights and activations (up to
//!   f32 rounding), and against unquantized f32 activations it stays within the activation
//!   quantization error.

use edgellm_core::kernels::{self, Kernels, Tier};
use edgellm_core::quant;
use edgellm_core::tolerance::{check_close, check_rel_rmse, quant_roundtrip_bound, Tolerance};
use edgellm_core::DType;

/// splitmix64: a tiny deterministic generator, enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// `10^e` with `e` uniform in `lo..hi`, random sign.
    fn magnitude(&mut self, lo: f64, hi: f64) -> f32 {
        let m = 10f64.powf(lo + (hi - lo) * self.uniform()) as f32;
        if self.next_u64() & 1 == 0 {
            m
        } else {
            -m
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Every weight type with kernels, most used first.
const TYPES: [DType; 13] = [
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
];

/// Row lengths to test: one block, odd block counts, a model width; any length for floats.
fn lengths(t: DType) -> Vec<usize> {
    match t.block_size() {
        1 => vec![1, 7, 8, 9, 31, 33, 100, 576],
        32 => vec![32, 96, 224, 576, 1568],
        _ => vec![256, 768, 1792],
    }
}

fn oracle() -> &'static Kernels {
    Kernels::for_tier(Tier::Scalar).expect("the scalar tier always runs")
}

/// The SIMD tiers this machine runs.
fn simd_tiers() -> Vec<&'static Kernels> {
    let tiers: Vec<_> = kernels::available_tiers()
        .into_iter()
        .filter(|&t| t != Tier::Scalar)
        .map(|t| Kernels::for_tier(t).expect("an available tier has a table"))
        .collect();
    eprintln!("SIMD tiers tested: {:?}", tiers.iter().map(|k| k.tier()).collect::<Vec<_>>());
    tiers
}

/// Byte offsets of the f16 scale fields (scale, minimum) within one block.
fn scale_fields(t: DType) -> &'static [usize] {
    match t {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        _ => &[],
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Reference-quantized Gaussian rows, row scales from 1e-3 to 1e3.
    Gaussian,
    /// Random bytes everywhere (every code pattern, Q8_0 codes of −128 included), finite
    /// random scales.
    RandomBytes,
    /// Random codes with extreme scales: the largest and smallest (subnormal) halves, zero.
    Extreme,
    /// Gaussian with every other block all zero bytes.
    ZeroBlocks,
}

const KINDS: [Kind; 4] = [Kind::Gaussian, Kind::RandomBytes, Kind::Extreme, Kind::ZeroBlocks];

fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// `rows` weight rows of `k` values of `t`.
fn weights(rng: &mut Rng, t: DType, rows: usize, k: usize, kind: Kind) -> Vec<u8> {
    let gaussian = |rng: &mut Rng| {
        let mut out = Vec::new();
        for _ in 0..rows {
            let s = rng.magnitude(-3.0, 3.0).abs();
            let x: Vec<f32> = (0..k).map(|_| rng.normal() * s).collect();
            out.extend(quant::quantize(t, &x).expect("quantizable"));
        }
        out
    };
    let bs = t.type_size();
    match kind {
        Kind::Gaussian => gaussian(rng),
        Kind::ZeroBlocks => {
            let mut w = gaussian(rng);
            let block_bytes = if t.block_size() == 1 { 8 * bs } else { bs };
            for (i, b) in w.chunks_mut(block_bytes).enumerate() {
                if i % 2 == 1 {
                    b.fill(0);
                }
            }
            w
        }
        Kind::RandomBytes | Kind::Extreme if !t.is_quantized() => {
            // Finite values over a wide range (random bytes would make NaNs and infinities).
            let (lo, hi) = match (t, kind) {
                (_, Kind::RandomBytes) => (-4.0, 2.0),
                (DType::F16, _) => (-7.0, 4.8),
                _ => (-30.0, 30.0),
            };
            let x: Vec<f32> = (0..rows * k).map(|_| rng.magnitude(lo, hi)).collect();
            quant::quantize(t, &x).expect("quantizable")
        }
        Kind::RandomBytes | Kind::Extreme => {
            let mut w = rng.bytes(rows * k / t.block_size() * bs);
            const EXTREME: [f32; 6] = [65504.0, -65504.0, 5.96e-8, -1.0e-4, 0.0, 1.0];
            for (i, b) in w.chunks_mut(bs).enumerate() {
                for (j, &f) in scale_fields(t).iter().enumerate() {
                    let v = match kind {
                        Kind::Extreme => EXTREME[(i + 3 * j) % EXTREME.len()],
                        _ => rng.magnitude(-4.0, 2.0),
                    };
                    b[f..f + 2].copy_from_slice(&f16_bytes(v));
                }
            }
            w
        }
    }
}

/// `n` activation rows of `k` values: Gaussian with a magnitude per 32 values from 1e-2 to
/// 1e2; `Extreme` adds all-zero blocks, values from 1e-6 to 1e5 (Q8_0 scales stay finite in
/// f16), and blocks of exact rounding ties.
fn activations(rng: &mut Rng, n: usize, k: usize, kind: Kind) -> Vec<f32> {
    let mut x = Vec::with_capacity(n * k);
    for _ in 0..n {
        for start in (0..k).step_by(32) {
            let len = 32.min(k - start);
            let style = match kind {
                Kind::Extreme => rng.next_u64() % 4,
                _ => 0,
            };
            match style {
                1 => x.resize(x.len() + len, 0.0),
                2 => {
                    let s = rng.magnitude(-6.0, 5.0).abs();
                    x.extend((0..len).map(|_| rng.normal() * s));
                }
                3 => {
                    // amax 127 makes the Q8_0 scale exactly 1, so x.5 values are ties.
                    x.extend((0..len).map(|j| if j == 0 { 127.0 } else { j as f32 - 15.5 }));
                }
                _ => {
                    let s = rng.magnitude(-2.0, 2.0).abs();
                    x.extend((0..len).map(|_| rng.normal() * s));
                }
            }
        }
    }
    x
}

/// Rows of `k` values of `x`, each quantized by `q` into `ab` bytes.
fn quantize_each_row(x: &[f32], k: usize, ab: usize, q: impl Fn(&[f32], &mut [u8])) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / k * ab];
    for (xr, or) in x.chunks_exact(k).zip(out.chunks_exact_mut(ab)) {
        q(xr, or);
    }
    out
}

/// Quantizes `n` rows with the oracle.
fn quantize_rows(t: DType, x: &[f32], k: usize) -> Vec<u8> {
    quantize_each_row(x, k, kernels::activation_row_bytes(t, k), |xr, or| {
        oracle().quantize_activations(t, xr, or)
    })
}

/// Quantizes rows of `k` values into the packed kernels' activations with the oracle.
fn quantize_packed_rows(t: DType, x: &[f32], k: usize) -> Vec<u8> {
    quantize_each_row(x, k, kernels::packed_activation_row_bytes(t, k), |xr, or| {
        oracle().quantize_packed_activations(t, xr, or)
    })
}

#[track_caller]
fn check_dot(name: &str, t: DType, k: usize, w: &[u8], a: &[u8], got: f32, want: f32) {
    let (terms, mag) = kernels::dot_error_terms(t, w, a, k);
    if let Err(r) = check_close(name, &[got], &[want], Tolerance::sum_reorder(terms, mag)) {
        panic!("{r}\n  (terms {terms}, magnitude {mag:e})");
    }
}

#[test]
fn tiers_are_detected_and_tables_filled() {
    let tiers = kernels::available_tiers();
    assert_eq!(tiers[0], Tier::Scalar);
    assert!(tiers.contains(&kernels::tier()), "{:?} not in {tiers:?}", kernels::tier());
    assert_eq!(kernels::tier_name(), kernels::tier().name());
    assert_eq!(kernels::active().tier(), kernels::tier());
    for t in [Tier::Scalar, Tier::Avx2, Tier::Avx512Vnni, Tier::Neon, Tier::NeonDotprod, Tier::NeonI8mm] {
        assert_eq!(Tier::from_name(t.name()), Some(t));
        assert_eq!(Kernels::for_tier(t).is_some(), tiers.contains(&t), "{t:?}");
    }
    assert_eq!(Tier::from_name("GENERIC"), Some(Tier::Scalar));
    assert_eq!(Tier::from_name("sse9"), None);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(tiers.contains(&Tier::Avx2));
    }
    #[cfg(target_arch = "aarch64")]
    assert!(tiers.contains(&Tier::Neon));
    // Every SIMD tier has its own kernels for the types our models use.
    for k in simd_tiers() {
        for t in [DType::Q4_0, DType::Q8_0, DType::Q4_1, DType::Q4_K, DType::Q6_K] {
            assert_ne!(k.implementing_tier(t), Some(Tier::Scalar), "{:?} {t}", k.tier());
            assert_ne!(k.quantize_tier(t), Some(Tier::Scalar), "{:?} {t}", k.tier());
        }
    }
    for t in TYPES {
        assert!(kernels::supports(t), "{t}");
        assert_eq!(oracle().implementing_tier(t), Some(Tier::Scalar));
    }
    assert!(!kernels::supports(DType::IQ2_XXS));
    assert!(!kernels::supports(DType::Q8_K));
    assert_eq!(kernels::activation_type(DType::Q4_0), DType::Q8_0);
    assert_eq!(kernels::activation_type(DType::Q5_1), DType::Q8_1);
    assert_eq!(kernels::activation_type(DType::Q6_K), DType::Q8_K);
    assert_eq!(kernels::activation_type(DType::F16), DType::F32);
    assert_eq!(kernels::activation_row_bytes(DType::Q4_1, 64), 72);
    assert_eq!(kernels::activation_row_bytes(DType::Q4_K, 512), 584);
}

#[test]
fn oracle_quantizers_are_the_reference() {
    let mut rng = Rng(1);
    let k = 1024;
    for kind in [Kind::Gaussian, Kind::Extreme] {
        let x = activations(&mut rng, 1, k, kind);
        for (w, act) in [(DType::Q4_K, DType::Q8_K), (DType::F16, DType::F32)] {
            assert_eq!(quantize_rows(w, &x, k), quant::quantize(act, &x).unwrap(), "{act} {kind:?}");
        }
        // Q8_0 activations follow llama.cpp's run-time quantizer: the reference's scale, codes
        // x·127/amax rounded half to even (the reference rounds half away from zero), so they
        // may differ from the reference only on ties, and then by one.
        let q0 = quantize_rows(DType::Q4_0, &x, k);
        let r0 = quant::quantize(DType::Q8_0, &x).unwrap();
        for ((b, r), xb) in q0.chunks_exact(34).zip(r0.chunks_exact(34)).zip(x.chunks_exact(32)) {
            assert_eq!(b[0..2], r[0..2], "{kind:?}: scale");
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for ((&c, &rc), &v) in b[2..].iter().zip(&r[2..]).zip(xb) {
                let s = if amax == 0.0 { 0.0 } else { v * (127.0 / amax) };
                assert_eq!(c as i8 as f32, s.round_ties_even(), "{kind:?}: code of {v}");
                if c != rc {
                    assert_eq!((s - s.trunc()).abs(), 0.5, "{kind:?}: {v} differs from the reference");
                }
            }
        }
        // Q8_1: the Q8_0 block with s = d·Σq (f16 of the unrounded scale times the code sum).
        let q1 = quantize_rows(DType::Q4_1, &x, k);
        for ((b1, b0), xb) in q1.chunks_exact(36).zip(q0.chunks_exact(34)).zip(x.chunks_exact(32)) {
            assert_eq!(b1[0..2], b0[0..2]);
            assert_eq!(b1[4..36], b0[2..34]);
            let sum: i32 = b0[2..34].iter().map(|&q| q as i8 as i32).sum();
            let d = xb.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            assert_eq!(b1[2..4], half::f16::from_f32(d * sum as f32).to_le_bytes());
        }
    }
    // An exact tie block (amax 127 makes the scale 1): codes round half to even.
    let x: Vec<f32> = (0..32).map(|j| if j == 0 { 127.0 } else { j as f32 - 15.5 }).collect();
    let q = quantize_rows(DType::Q4_0, &x, 32);
    let codes: Vec<i8> = q[2..].iter().map(|&c| c as i8).collect();
    let want: Vec<i8> = x.iter().map(|v| v.round_ties_even() as i8).collect();
    assert_eq!(codes, want);
    assert_eq!(codes[1], -14, "-14.5 rounds to -14");
}

#[test]
fn simd_activation_quantizers_are_bit_identical() {
    let mut rng = Rng(2);
    for tier in simd_tiers() {
        for w in [DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::F16] {
            for k in [256, 512, 2048] {
                for kind in [Kind::Gaussian, Kind::Extreme, Kind::ZeroBlocks] {
                    let mut x = activations(&mut rng, 1, k, kind);
                    if let Kind::ZeroBlocks = kind {
                        x[..k / 2].fill(0.0);
                    }
                    // Ties of the magnitude: the first element of largest magnitude sets the sign.
                    x[7] = -1.0e3;
                    x[200] = 1.0e3;
                    let want = quantize_rows(w, &x, k);
                    let mut got = vec![0u8; want.len()];
                    tier.quantize_activations(w, &x, &mut got);
                    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
                        panic!(
                            "{:?} activations for {w}, k {k}, {kind:?}: byte {i} is {:#04x}, oracle {:#04x}",
                            tier.tier(),
                            got[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn simd_vec_dot_matches_oracle() {
    let mut rng = Rng(3);
    for tier in simd_tiers() {
        for t in TYPES {
            for k in lengths(t) {
                for kind in KINDS {
                    let rows = 4;
                    let w = weights(&mut rng, t, rows, k, kind);
                    let x = activations(&mut rng, 2, k, kind);
                    let a = quantize_rows(t, &x, k);
                    let (wb, ab) = (w.len() / rows, a.len() / 2);
                    for (r, wr) in w.chunks_exact(wb).enumerate() {
                        for (j, ar) in a.chunks_exact(ab).enumerate() {
                            let got = tier.vec_dot(t, wr, ar, k);
                            let want = oracle().vec_dot(t, wr, ar, k);
                            let name =
                                format!("{:?} vec_dot {t} k {k} {kind:?} row {r} act {j}", tier.tier());
                            check_dot(&name, t, k, wr, ar, got, want);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_matches_oracle_on_every_tier() {
    let mut rng = Rng(4);
    let all: Vec<&Kernels> = std::iter::once(oracle()).chain(simd_tiers()).collect();
    let total_rows = 13;
    for t in TYPES {
        let k = lengths(t)[1];
        let kind = KINDS[rng.next_u64() as usize % KINDS.len()];
        let w = weights(&mut rng, t, total_rows, k, kind);
        let wb = w.len() / total_rows;
        for n in [1, 2, 3, 4, 5, 7, 8, 13] {
            let x = activations(&mut rng, n, k, kind);
            let a = quantize_rows(t, &x, k);
            let ab = a.len() / n;
            for rows in [3..12, 0..13, 5..6, 1..9] {
                let m = rows.len();
                let stride = m + 3;
                for tier in &all {
                    // Padding between a token's outputs must stay untouched.
                    let mut out = vec![f32::NAN; (n - 1) * stride + m];
                    // Only as many weight rows as the range needs.
                    tier.matmul(t, &w[..rows.end * wb], k, rows.clone(), &a, n, &mut out, stride);
                    for tok in 0..n {
                        let ar = &a[tok * ab..(tok + 1) * ab];
                        for (i, r) in rows.clone().enumerate() {
                            let wr = &w[r * wb..(r + 1) * wb];
                            let want = oracle().vec_dot(t, wr, ar, k);
                            let got = out[tok * stride + i];
                            let name = format!(
                                "{:?} matmul {t} k {k} {kind:?} n {n} rows {rows:?} [{tok}, {r}]",
                                tier.tier()
                            );
                            check_dot(&name, t, k, wr, ar, got, want);
                        }
                        if tok + 1 < n {
                            let pad = &out[tok * stride + m..(tok + 1) * stride];
                            assert!(pad.iter().all(|v| v.is_nan()), "{:?} {t}: padding written", tier.tier());
                        }
                    }
                }
            }
        }
    }
}

/// Products over more tokens than one cache block (the kernels run tokens in blocks of
/// activations that fit the L1 cache) equal the oracle's dot products for every token, with
/// the padding between tokens' outputs untouched.
#[test]
fn matmul_over_many_token_blocks_matches_oracle() {
    let mut rng = Rng(12);
    let all: Vec<&Kernels> = std::iter::once(oracle()).chain(simd_tiers()).collect();
    let n = 150;
    for t in TYPES {
        let k = if t.block_size() == 256 { 768 } else { 576 };
        let w = weights(&mut rng, t, 5, k, KINDS[0]);
        let wb = w.len() / 5;
        let x = activations(&mut rng, n, k, KINDS[0]);
        let a = quantize_rows(t, &x, k);
        let ab = a.len() / n;
        let stride = 6;
        for tier in &all {
            let mut out = vec![f32::NAN; (n - 1) * stride + 5];
            tier.matmul(t, &w, k, 0..5, &a, n, &mut out, stride);
            for tok in 0..n {
                let ar = &a[tok * ab..(tok + 1) * ab];
                for r in 0..5 {
                    let wr = &w[r * wb..(r + 1) * wb];
                    let want = oracle().vec_dot(t, wr, ar, k);
                    let name = format!("{:?} matmul {t} n {n} [{tok}, {r}]", tier.tier());
                    check_dot(&name, t, k, wr, ar, out[tok * stride + r], want);
                }
                if tok + 1 < n {
                    assert!(out[tok * stride + 5].is_nan(), "{:?} {t}: padding written", tier.tier());
                }
            }
        }
    }
}

/// The AVX-512 tier's matrix products (its own code from two tokens on) equal the AVX2
/// tier's bit for bit, for every type, kind of input, tile edge and odd block count: a
/// model's logits do not depend on whether the CPU has AVX-512. Skipped without AVX-512.
#[test]
fn avx512_matmul_is_bit_identical_to_avx2() {
    let (Some(avx2), Some(avx512)) = (Kernels::for_tier(Tier::Avx2), Kernels::for_tier(Tier::Avx512Vnni))
    else {
        eprintln!("skipped: this CPU has no AVX-512 VNNI tier");
        return;
    };
    let mut rng = Rng(11);
    let total_rows = 11;
    for t in TYPES {
        for k in lengths(t) {
            for kind in KINDS {
                let w = weights(&mut rng, t, total_rows, k, kind);
                for n in [2, 3, 5, 7, 13] {
                    let x = activations(&mut rng, n, k, kind);
                    let a = quantize_rows(t, &x, k);
                    let mut out = [vec![0.0f32; n * total_rows], vec![0.0f32; n * total_rows]];
                    for (tier, out) in [avx2, avx512].iter().zip(&mut out) {
                        tier.matmul(t, &w, k, 0..total_rows, &a, n, out, total_rows);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&out[0]),
                        bits(&out[1]),
                        "{t} k {k} {kind:?} n {n}: AVX-512 differs from AVX2"
                    );
                }
            }
        }
    }
}

/// Types with a packed layout.
fn packed_types() -> Vec<DType> {
    TYPES.into_iter().filter(|&t| kernels::has_packed_layout(t)).collect()
}

#[test]
fn pack_then_unpack_gives_every_row_back() {
    let mut rng = Rng(21);
    for t in packed_types() {
        for k in lengths(t) {
            for m in [1, 7, 8, 9, 16, 21] {
                let w = weights(&mut rng, t, m, k, Kind::RandomBytes);
                let p = kernels::pack(t, k, m, &w);
                assert_eq!(p.len(), kernels::packed_len(t, k, m), "{t} k {k} m {m}");
                assert_eq!(p.len(), m.div_ceil(kernels::PACK_GROUP) * kernels::PACK_GROUP * w.len() / m);
                let rb = w.len() / m;
                let mut row = vec![0u8; rb];
                for r in 0..m {
                    kernels::unpack_row(t, k, &p, r, &mut row);
                    assert_eq!(row, w[r * rb..(r + 1) * rb], "{t} k {k} m {m} row {r}");
                }
            }
        }
    }
}

#[test]
fn packed_activation_quantizers_are_bit_identical_and_carry_the_sum() {
    let mut rng = Rng(22);
    for t in packed_types() {
        for kind in KINDS {
            let k = if t.block_size() == 256 { 768 } else { 576 };
            let x = activations(&mut rng, 1, k, kind);
            let ab = kernels::packed_activation_row_bytes(t, k);
            let mut want = vec![0u8; ab];
            oracle().quantize_packed_activations(t, &x, &mut want);
            let plain = quantize_rows(t, &x, k);
            if matches!(kernels::activation_type(t), DType::Q8_1 | DType::Q8_K) {
                // The affine types' and k-quants' packed kernels take their Q8_1 / Q8_K
                // activations as they are.
                assert_eq!(want, plain, "{t} {kind:?}: packed activations are the plain ones");
            } else {
                // The codes and scale are the Q8_0 activations'; the sum is theirs.
                for (pb, qb) in want.chunks_exact(36).zip(plain.chunks_exact(34)) {
                    assert_eq!(pb[..2], qb[..2], "{t} {kind:?}: scale");
                    assert_eq!(pb[4..], qb[2..], "{t} {kind:?}: codes");
                    let sum: i32 = qb[2..].iter().map(|&c| c as i8 as i32).sum();
                    assert_eq!(i16::from_le_bytes([pb[2], pb[3]]) as i32, sum, "{t} {kind:?}: sum");
                }
            }
            for tier in simd_tiers() {
                let mut got = vec![0u8; ab];
                tier.quantize_packed_activations(t, &x, &mut got);
                assert_eq!(got, want, "{:?} {t} {kind:?}", tier.tier());
            }
        }
    }
}

/// The packed products of every tier give the oracle's bits (the same operations in the same
/// order on exact integer sums), and the oracle matches the GGUF-layout oracle within the
/// f32 reordering bound; rows ranges cut groups, token counts cut tiles.
#[test]
fn packed_matmul_is_the_oracle_on_every_tier() {
    let mut rng = Rng(23);
    let all: Vec<&Kernels> = std::iter::once(oracle()).chain(simd_tiers()).collect();
    let total_rows = 21;
    for t in packed_types() {
        for k in lengths(t) {
            for kind in KINDS {
                let w = weights(&mut rng, t, total_rows, k, kind);
                let wb = w.len() / total_rows;
                let p = kernels::pack(t, k, total_rows, &w);
                for n in [1, 2, 3, 4, 5, 7, 8, 9, 13, 17] {
                    let x = activations(&mut rng, n, k, kind);
                    let a = quantize_rows(t, &x, k);
                    let pa = quantize_packed_rows(t, &x, k);
                    let ab = a.len() / n;
                    for rows in [0..21, 3..12, 8..16, 5..6, 16..21] {
                        let m = rows.len();
                        let stride = m + 2;
                        let mut want = vec![f32::NAN; (n - 1) * stride + m];
                        let need = kernels::packed_len(t, k, rows.end);
                        oracle().matmul_packed(t, &p[..need], k, rows.clone(), &pa, n, &mut want, stride);
                        for tok in 0..n {
                            let ar = &a[tok * ab..(tok + 1) * ab];
                            for (i, r) in rows.clone().enumerate() {
                                let wr = &w[r * wb..(r + 1) * wb];
                                let plain = oracle().vec_dot(t, wr, ar, k);
                                let name = format!(
                                    "packed oracle {t} k {k} {kind:?} n {n} rows {rows:?} [{tok}, {r}]"
                                );
                                check_dot(&name, t, k, wr, ar, want[tok * stride + i], plain);
                            }
                            if tok + 1 < n {
                                let pad = &want[tok * stride + m..(tok + 1) * stride];
                                assert!(pad.iter().all(|v| v.is_nan()), "{t}: padding written");
                            }
                        }
                        for tier in &all[1..] {
                            let mut got = vec![f32::NAN; want.len()];
                            tier.matmul_packed(t, &p[..need], k, rows.clone(), &pa, n, &mut got, stride);
                            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                assert!(
                                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                                    "{:?} packed {t} k {k} {kind:?} n {n} rows {rows:?} output {i}: {g} vs oracle {w}",
                                    tier.tier()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Codes at their extremes in every byte (all bits clear, all set, 0x80) against activations
/// all at ±127: every packed kernel's integer sums stay exact (the narrow sums of plain NEON
/// would wrap first) and give the oracle's bits.
#[test]
fn packed_matmul_holds_the_largest_sums() {
    let rows = 16;
    for t in packed_types() {
        // Eight legacy blocks, two super-blocks.
        let k = if t.block_size() == 256 { 512 } else { 256 };
        for byte in [0x00u8, 0xff, 0x80] {
            let mut w = vec![byte; rows * k / t.block_size() * t.type_size()];
            for b in w.chunks_mut(t.type_size()) {
                for &f in scale_fields(t) {
                    b[f..f + 2].copy_from_slice(&f16_bytes(1.0));
                }
            }
            let p = kernels::pack(t, k, rows, &w);
            for sign in [1.0f32, -1.0] {
                let n = 5;
                let x = vec![sign; n * k];
                let pa = quantize_packed_rows(t, &x, k);
                let mut want = vec![0.0f32; n * rows];
                oracle().matmul_packed(t, &p, k, 0..rows, &pa, n, &mut want, rows);
                // The oracle itself against the GGUF-layout oracle on the same bytes.
                let a = quantize_rows(t, &x, k);
                let ab = a.len() / n;
                let wb = w.len() / rows;
                let plain = oracle().vec_dot(t, &w[..wb], &a[..ab], k);
                check_dot(&format!("extreme {t} {byte:#x} {sign}"), t, k, &w[..wb], &a[..ab], want[0], plain);
                for tier in simd_tiers() {
                    let mut got = vec![f32::NAN; n * rows];
                    tier.matmul_packed(t, &p, k, 0..rows, &pa, n, &mut got, rows);
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            w.to_bits(),
                            "{:?} packed {t} bytes {byte:#x} activations {sign} output {i}: {g} vs oracle {w}",
                            tier.tier()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn packing_is_offered_where_a_simd_kernel_exists() {
    assert!(!oracle().packs(DType::Q4_0), "the oracle tier gains nothing from packing");
    assert_eq!(oracle().packed_tier(DType::Q4_0), Some(Tier::Scalar));
    assert_eq!(oracle().packed_tier(DType::Q4_K), Some(Tier::Scalar));
    assert_eq!(oracle().packed_tier(DType::Q5_K), None);
    let mut arm_packed = 0;
    for tier in simd_tiers() {
        if cfg!(target_arch = "x86_64") {
            for t in [DType::Q4_0, DType::Q5_0, DType::Q8_0, DType::Q4_1, DType::Q5_1] {
                assert!(tier.packs(t), "{:?} {t}", tier.tier());
                assert_eq!(tier.packed_tier(t), Some(tier.tier()), "{t}");
            }
            // The k-quants' packed kernels are AVX2 code on both x86 tiers.
            for t in [DType::Q4_K, DType::Q6_K] {
                assert!(tier.packs(t), "{:?} {t}", tier.tier());
                assert_eq!(tier.packed_tier(t), Some(Tier::Avx2), "{:?} {t}", tier.tier());
            }
        } else {
            // Every ARM tier packs what x86 packs, with its own code (arm/packed.rs).
            for t in
                [DType::Q4_0, DType::Q5_0, DType::Q8_0, DType::Q4_1, DType::Q5_1, DType::Q4_K, DType::Q6_K]
            {
                assert!(tier.packs(t), "{:?} {t}", tier.tier());
                assert_eq!(tier.packed_tier(t), Some(tier.tier()), "{t}");
                arm_packed += 1;
            }
        }
    }
    // Under QEMU (scripts/test-aarch64, `-cpu max`) the three ARM tiers are there: their packed
    // kernels are among the tiers `packed_matmul_is_the_oracle_on_every_tier` checks.
    if cfg!(target_arch = "aarch64") && simd_tiers().iter().any(|t| t.tier() == Tier::NeonI8mm) {
        assert_eq!(arm_packed, 3 * 7);
    }
}

#[test]
#[should_panic(expected = "need 288 weight bytes, got 144")]
fn packed_matmul_rejects_a_short_matrix() {
    let w = vec![0u8; 9 * 18];
    let p = kernels::pack(DType::Q4_0, 32, 9, &w);
    let a = vec![0u8; 36];
    let mut out = [0.0f32; 9];
    // Row 8 is in the second group, which a one-group buffer lacks.
    kernels::matmul_packed(DType::Q4_0, &p[..144], 32, 0..9, &a, 1, &mut out, 9);
}

/// The dequantized activation values of one activation row.
fn dequantized_activations(t: DType, a: &[u8], k: usize) -> Vec<f32> {
    match kernels::activation_type(t) {
        DType::Q8_1 => a
            .chunks_exact(36)
            .flat_map(|b| {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                b[4..36].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
        act => quant::dequantize(act, a, k).expect("dequantizable activations"),
    }
}

/// Q8_1 stores `s = f16(d·Σq)` from the unrounded scale, and the affine weights' minimum `m`
/// multiplies that rather than the dequantized codes' sum `f16(d)·Σq`: the difference, per block
/// `m · (s − f16(d)·Σq)`, that the oracle's dot rightly includes.
fn q8_1_sum_correction(t: DType, w: &[u8], a: &[u8]) -> f64 {
    let f16 = |b: &[u8], o: usize| half::f16::from_le_bytes([b[o], b[o + 1]]).to_f32() as f64;
    w.chunks_exact(t.type_size())
        .zip(a.chunks_exact(36))
        .map(|(wb, ab)| {
            let sum: i32 = ab[4..36].iter().map(|&q| q as i8 as i32).sum();
            // Q4_1 and Q5_1 both keep their minimum at bytes 2..4.
            f16(wb, 2) * (f16(ab, 2) - f16(ab, 0) * sum as f64)
        })
        .sum()
}

#[test]
fn oracle_is_the_exact_dot_of_dequantized_values() {
    let mut rng = Rng(5);
    for t in TYPES {
        for k in lengths(t) {
            for kind in KINDS {
                let w = weights(&mut rng, t, 3, k, kind);
                let x = activations(&mut rng, 1, k, kind);
                let a = quantize_rows(t, &x, k);
                let af = dequantized_activations(t, &a, k);
                for (r, wr) in w.chunks_exact(w.len() / 3).enumerate() {
                    let wf = quant::dequantize(t, wr, k).expect("dequantizable weights");
                    let mut exact: f64 = wf.iter().zip(&af).map(|(&w, &a)| w as f64 * a as f64).sum();
                    if kernels::activation_type(t) == DType::Q8_1 {
                        exact += q8_1_sum_correction(t, wr, &a);
                    }
                    let got = oracle().vec_dot(t, wr, &a, k);
                    check_dot(&format!("oracle {t} k {k} {kind:?} row {r}"), t, k, wr, &a, got, exact as f32);
                }
            }
        }
    }
}

#[test]
fn oracle_error_against_f32_activations_is_the_activation_quantization_error() {
    let mut rng = Rng(6);
    for t in TYPES {
        let k = *lengths(t).last().expect("lengths");
        let rows = 64;
        // Unit Gaussians (one scale for all rows and the whole activation row): the relative
        // error is then that of the activation format's Gaussian round trip.
        let wf: Vec<f32> = (0..rows * k).map(|_| rng.normal()).collect();
        let w = quant::quantize(t, &wf).expect("quantizable");
        let x: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
        let a = quantize_rows(t, &x, k);
        let act = kernels::activation_type(t);
        let af = dequantized_activations(t, &a, k);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for (r, wr) in w.chunks_exact(w.len() / rows).enumerate() {
            let wf = quant::dequantize(t, wr, k).expect("dequantizable weights");
            let exact: f64 = wf.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
            let dot = oracle().vec_dot(t, wr, &a, k);
            // Element-wise: |Σ w·(x − x̂)| ≤ Σ |w|·|x − x̂|, plus the f32 rounding of the dot.
            let quant_err: f64 = wf
                .iter()
                .zip(x.iter().zip(&af))
                .map(|(&w, (&x, &q))| (w as f64 * (x - q) as f64).abs())
                .sum();
            let (terms, mag) = kernels::dot_error_terms(t, wr, &a, k);
            let tol =
                Tolerance::new(quant_err as f32 * 1.0001 + Tolerance::sum_reorder(terms, mag).abs, 1e-6);
            if let Err(rep) =
                check_close(&format!("oracle {t} vs f32 activations, row {r}"), &[dot], &[exact as f32], tol)
            {
                panic!("{rep}");
            }
            got.push(dot);
            want.push(exact as f32);
        }
        // Over rows: the relative error is that of the activation format's round trip.
        let bound = match act {
            DType::F32 => 1e-6,
            DType::Q8_K => quant_roundtrip_bound(DType::Q8_K).expect("bound").gaussian,
            _ => quant_roundtrip_bound(DType::Q8_0).expect("bound").gaussian,
        };
        if let Err(rep) = check_rel_rmse(&format!("oracle {t} vs f32 activations"), &got, &want, 1.5 * bound)
        {
            panic!("{rep}");
        }
    }
}

#[test]
fn free_functions_use_the_active_tier() {
    let mut rng = Rng(7);
    let t = DType::Q4_0;
    let k = 96;
    let w = weights(&mut rng, t, 2, k, Kind::Gaussian);
    let x = activations(&mut rng, 1, k, Kind::Gaussian);
    let mut a = vec![0u8; kernels::activation_row_bytes(t, k)];
    kernels::quantize_activations(t, &x, &mut a);
    assert_eq!(a, quantize_rows(t, &x, k));
    let wr = &w[..w.len() / 2];
    assert_eq!(kernels::vec_dot(t, wr, &a, k), kernels::active().vec_dot(t, wr, &a, k));
    let mut out = [0.0f32; 2];
    kernels::matmul(t, &w, k, 0..2, &a, 1, &mut out, 2);
    check_dot("free matmul", t, k, wr, &a, out[0], oracle().vec_dot(t, wr, &a, k));
}

#[test]
#[should_panic(expected = "has 18 bytes and its activation row 34 bytes, got 17 and 34")]
fn vec_dot_rejects_a_short_row() {
    let a = vec![0u8; 34];
    kernels::vec_dot(DType::Q4_0, &[0u8; 17], &a, 32);
}

#[test]
#[should_panic(expected = "not a whole number")]
fn quantize_rejects_a_partial_block() {
    let mut out = vec![0u8; 292];
    kernels::quantize_activations(DType::Q4_K, &[0.0; 100], &mut out);
}

#[test]
#[should_panic(expected = "need 6 outputs")]
fn matmul_rejects_a_small_output() {
    let w = vec![0u8; 18 * 3];
    let a = vec![0u8; 34 * 2];
    let mut out = vec![0.0f32; 5];
    kernels::matmul(DType::Q4_0, &w, 32, 0..3, &a, 2, &mut out, 3);
}

#[test]
#[should_panic(expected = "need 54 weight bytes")]
fn matmul_rejects_missing_weight_rows() {
    let w = vec![0u8; 18 * 2];
    let a = vec![0u8; 34];
    let mut out = vec![0.0f32; 3];
    kernels::matmul(DType::Q4_0, &w, 32, 1..3, &a, 1, &mut out, 3);
}

#[test]
#[should_panic(expected = "no dot product for weight type IQ2_XXS")]
fn unsupported_types_are_named() {
    kernels::activation_type(DType::IQ2_XXS);
}

/// `EDGELLM_KERNELS` forces a tier, and a tier the CPU cannot run (or a name that is no tier)
/// falls back to detection with a message. Checked in child processes (the tier is chosen once
/// per process): this test binary re-runs itself with the variable set.
#[test]
fn environment_variable_forces_a_tier() {
    if let Ok(want) = std::env::var("EDGELLM_KERNELS_EXPECT") {
        assert_eq!(kernels::tier_name(), want);
        return;
    }
    let best = kernels::available_tiers().last().copied().expect("scalar at least").name();
    let missing = [Tier::Avx2, Tier::Neon].into_iter().find(|t| !kernels::available_tiers().contains(t));
    let mut cases = vec![
        ("scalar", "scalar", None),
        ("GENERIC", "scalar", None),
        ("sse9", best, Some("not a kernel tier")),
    ];
    if let Some(t) = missing {
        cases.push((t.name(), best, Some("cannot run")));
    }
    for (forced, want, message) in cases {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "environment_variable_forces_a_tier", "--nocapture", "--test-threads", "1"])
            .env("EDGELLM_KERNELS", forced)
            .env("EDGELLM_KERNELS_EXPECT", want)
            .output()
            .expect("run the test binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !String::from_utf8_lossy(&out.stdout).contains("running 1 test") {
            // Under user-mode emulation (scripts/test-aarch64) the binary cannot start itself.
            eprintln!("skipped: this test binary cannot re-run itself here ({:?})", out.status);
            return;
        }
        assert!(out.status.success(), "EDGELLM_KERNELS={forced}: child failed\n{stderr}");
        if let Some(m) = message {
            assert!(
                stderr.contains(m) && stderr.contains("EDGELLM_KERNELS"),
                "EDGELLM_KERNELS={forced}: {stderr}"
            );
        }
    }
}
