//! Importance-weighted block quantizers: for every GGML block format, choose a block's scales
//! (and minimums) to minimize the *weighted* squared error `Σ wᵢ (xᵢ − x̂ᵢ)²`, then encode.
//!
//! The weights `wᵢ` come from an importance matrix (the mean square of input channel `i` over
//! calibration tokens): a weight error `Δᵢ` changes the layer's output by `Δᵢ·aᵢ`, whose mean
//! square is `Δᵢ²·E[aᵢ²]`, so weighting by `E[aᵢ²]` minimizes the expected output error of the
//! row (ignoring correlations between channels; GPTQ, in [`crate::gptq`], accounts for those).
//!
//! The search, per (sub-)block: try a few dozen candidate scales around "the largest value
//! lands on the end of the integer grid"; for each, round every value to the grid, solve the
//! weighted least-squares problem for the scale (and minimum) in closed form, and keep the
//! best; then re-round with that fit and solve again. For the k-quants the sub-block scales are
//! themselves quantized (4, 6 or 8 bits) against a super-block scale; that second-level fit is
//! weighted too, by how much each sub-block's error grows per unit of scale error.
//!
//! The encoding is split in two steps so GPTQ can use the same grid: [`fit`] chooses a block's
//! parameters from its values, [`BlockFit::value`] rounds any value to the grid of its
//! sub-block, and [`BlockFit::pack`] writes the block's bytes from the values.

use edgellm_core::DType;
use half::f16;

/// The formats these quantizers produce.
pub const WEIGHTED_TYPES: &[DType] = &[
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// Below this magnitude a block is all zeros.
const TINY: f32 = 1e-30;

/// Rounds like ggml's quantizers do (to nearest, ties to even) and clamps to `lo..=hi`.
#[inline]
fn round_clamp(v: f32, lo: i32, hi: i32) -> i32 {
    if !v.is_finite() {
        return if v > 0.0 { hi } else { lo.max(0).min(hi) };
    }
    (v.round_ties_even() as i64).clamp(lo as i64, hi as i64) as i32
}

/// Rounds through IEEE half, as a stored scale is decoded.
#[inline]
fn via_f16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// Weighted least squares `x ≈ d·q`, `q` integer in `lo..=hi`: the best `d`.
///
/// Candidates map the largest-magnitude value to either end of the grid, stretched by up to
/// ±1 step in tenths; each is refined by re-rounding with its least-squares scale.
pub(crate) fn fit_symmetric(x: &[f32], w: &[f32], lo: i32, hi: i32) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < TINY {
        return 0.0;
    }
    // Score of scale candidate with inverse `iscale`: (Σwxq)²/Σwq² (larger = smaller error),
    // and the least-squares scale Σwxq/Σwq².
    let score = |iscale: f32| -> Option<(f64, f32)> {
        let (mut sxq, mut sqq) = (0.0f64, 0.0f64);
        for (&v, &wi) in x.iter().zip(w) {
            let q = round_clamp(v * iscale, lo, hi) as f64;
            sxq += wi as f64 * v as f64 * q;
            sqq += wi as f64 * q * q;
        }
        (sqq > 0.0).then(|| (sxq * sxq / sqq, (sxq / sqq) as f32))
    };
    let mut best = (f64::NEG_INFINITY, max / if hi != 0 { hi as f32 } else { lo as f32 });
    for end in [lo, hi] {
        if end == 0 {
            continue;
        }
        for k in -10..=10 {
            let t = end as f32 + 0.1 * k as f32 * end.signum() as f32;
            if t.abs() < 0.5 {
                continue;
            }
            if let Some(s) = score(t / max) {
                if s.0 > best.0 {
                    best = s;
                }
            }
        }
    }
    for _ in 0..2 {
        if best.1 == 0.0 || !best.1.is_finite() {
            break;
        }
        match score(1.0 / best.1) {
            Some(s) if s.0 > best.0 => best = s,
            _ => break,
        }
    }
    if best.1.is_finite() {
        best.1
    } else {
        0.0
    }
}

/// Weighted least squares `x ≈ d·q + m`, `q` integer in `0..=nmax`, `d ≥ 0` (and `m ≤ 0`
/// when `min_nonpositive`, as the k-quants store `−m` unsigned): the best `(d, m)`.
pub(crate) fn fit_affine(x: &[f32], w: &[f32], nmax: i32, min_nonpositive: bool) -> (f32, f32) {
    let mut min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if min_nonpositive && min > 0.0 {
        min = 0.0;
    }
    if max - min <= TINY || (max - min).is_nan() {
        return (0.0, if min_nonpositive { min.min(0.0) } else { min });
    }
    let (sw, sx, sxx) = x.iter().zip(w).fold((0.0f64, 0.0f64, 0.0f64), |a, (&v, &wi)| {
        (a.0 + wi as f64, a.1 + wi as f64 * v as f64, a.2 + wi as f64 * v as f64 * v as f64)
    });
    // Least squares for (d, m) given the codes from rounding with (iscale, m0); returns
    // (error, d, m).
    let solve = |iscale: f32, m0: f32| -> Option<(f64, f32, f32)> {
        let (mut sq, mut sqq, mut sxq) = (0.0f64, 0.0f64, 0.0f64);
        for (&v, &wi) in x.iter().zip(w) {
            let q = round_clamp((v - m0) * iscale, 0, nmax) as f64;
            sq += wi as f64 * q;
            sqq += wi as f64 * q * q;
            sxq += wi as f64 * v as f64 * q;
        }
        let det = sw * sqq - sq * sq;
        let (mut d, mut m) = if det > 1e-12 * sw * sqq.max(1.0) {
            ((sw * sxq - sq * sx) / det, (sqq * sx - sq * sxq) / det)
        } else if sqq > 0.0 {
            (sxq / sqq, 0.0)
        } else {
            return None;
        };
        if min_nonpositive && m > 0.0 {
            m = 0.0;
            d = if sqq > 0.0 { sxq / sqq } else { 0.0 };
        }
        if d <= 0.0 || !d.is_finite() || !m.is_finite() {
            return None;
        }
        let err = sxx - 2.0 * d * sxq - 2.0 * m * sx + d * d * sqq + 2.0 * d * m * sq + m * m * sw;
        Some((err, d as f32, m as f32))
    };
    let mut best: Option<(f64, f32, f32)> = None;
    for k in -10..=10 {
        let t = nmax as f32 + 0.1 * k as f32;
        if let Some(s) = solve(t / (max - min), min) {
            if best.is_none_or(|b| s.0 < b.0) {
                best = Some(s);
            }
        }
    }
    let Some(mut best) = best else {
        return (((max - min) / nmax as f32), min);
    };
    for _ in 0..3 {
        match solve(1.0 / best.1, best.2) {
            Some(s) if s.0 < best.0 => best = s,
            _ => break,
        }
    }
    (best.1, best.2)
}

/// One block's chosen grid: each sub-block decodes code `q` (in `lo..=hi`) as
/// `scale·q + offset`, plus the stored fields the bytes need.
#[derive(Clone, Debug)]
pub struct BlockFit {
    dtype: DType,
    sub_len: usize,
    lo: i32,
    hi: i32,
    scale: [f32; 16],
    offset: [f32; 16],
    /// Stored super-block (or block) scale and minimum scale, as f32 of the f16 bits.
    d: f32,
    dmin: f32,
    /// Stored integer sub-block scales and minimums (k-quants).
    ls: [i32; 16],
    lm: [i32; 16],
}

impl BlockFit {
    /// The nearest grid value to `x` for element `j` of the block.
    #[inline]
    pub fn value(&self, j: usize, x: f32) -> f32 {
        let s = j / self.sub_len;
        let (sc, off) = (self.scale[s], self.offset[s]);
        if sc == 0.0 {
            return off;
        }
        sc * round_clamp((x - off) / sc, self.lo, self.hi) as f32 + off
    }

    /// The code of element `j` for value `x` (`lo..=hi`).
    #[inline]
    fn code(&self, j: usize, x: f32) -> i32 {
        let s = j / self.sub_len;
        let (sc, off) = (self.scale[s], self.offset[s]);
        if sc == 0.0 {
            return self.lo.max(0).min(self.hi);
        }
        round_clamp((x - off) / sc, self.lo, self.hi)
    }

    /// Writes the block: `x` are the block's values (each rounded to the grid here).
    pub fn pack(&self, x: &[f32], out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.dtype.type_size());
        let n = self.dtype.block_size();
        let mut u = [0u8; 256];
        for j in 0..n {
            u[j] = (self.code(j, x[j]) - self.lo) as u8;
        }
        let h = |v: f32| f16::from_f32(v).to_le_bytes();
        match self.dtype {
            DType::Q4_0 | DType::Q4_1 => {
                out[0..2].copy_from_slice(&h(self.d));
                let o = if self.dtype == DType::Q4_1 {
                    out[2..4].copy_from_slice(&h(self.dmin));
                    4
                } else {
                    2
                };
                for j in 0..16 {
                    out[o + j] = u[j] | (u[j + 16] << 4);
                }
            }
            DType::Q5_0 | DType::Q5_1 => {
                out[0..2].copy_from_slice(&h(self.d));
                let o = if self.dtype == DType::Q5_1 {
                    out[2..4].copy_from_slice(&h(self.dmin));
                    4
                } else {
                    2
                };
                let mut qh = 0u32;
                for j in 0..16 {
                    out[o + 4 + j] = (u[j] & 0x0f) | ((u[j + 16] & 0x0f) << 4);
                    qh |= ((u[j] as u32 >> 4) & 1) << j;
                    qh |= ((u[j + 16] as u32 >> 4) & 1) << (j + 16);
                }
                out[o..o + 4].copy_from_slice(&qh.to_le_bytes());
            }
            DType::Q8_0 => {
                out[0..2].copy_from_slice(&h(self.d));
                for j in 0..32 {
                    out[2 + j] = ((u[j] as i32 + self.lo) as i8) as u8;
                }
            }
            DType::Q2_K => {
                for (s, o) in out[..16].iter_mut().enumerate() {
                    *o = (self.ls[s] as u8 & 0x0f) | ((self.lm[s] as u8 & 0x0f) << 4);
                }
                pack_2bit(&u, &mut out[16..80]);
                out[80..82].copy_from_slice(&h(self.d));
                out[82..84].copy_from_slice(&h(self.dmin));
            }
            DType::Q3_K => {
                out[..32].fill(0);
                for (i, &v) in u.iter().enumerate() {
                    if v >= 4 {
                        out[i % 32] |= 1 << (i / 32);
                    }
                }
                let mut low = [0u8; 256];
                for i in 0..256 {
                    low[i] = u[i] & 3;
                }
                pack_2bit(&low, &mut out[32..96]);
                let sc = &mut out[96..108];
                sc.fill(0);
                for s in 0..16 {
                    let v = (self.ls[s] + 32) as u8;
                    if s < 8 {
                        sc[s] |= v & 0x0f;
                    } else {
                        sc[s - 8] |= (v & 0x0f) << 4;
                    }
                    sc[8 + s % 4] |= (v >> 4) << (2 * (s / 4));
                }
                out[108..110].copy_from_slice(&h(self.d));
            }
            DType::Q4_K | DType::Q5_K => {
                out[0..2].copy_from_slice(&h(self.d));
                out[2..4].copy_from_slice(&h(self.dmin));
                let sc = &mut out[4..16];
                sc.fill(0);
                for j in 0..8 {
                    let (l, m) = (self.ls[j] as u8, self.lm[j] as u8);
                    if j < 4 {
                        sc[j] = l;
                        sc[j + 4] = m;
                    } else {
                        sc[j + 4] = (l & 0x0f) | ((m & 0x0f) << 4);
                        sc[j - 4] |= (l >> 4) << 6;
                        sc[j] |= (m >> 4) << 6;
                    }
                }
                let qs_at = if self.dtype == DType::Q5_K {
                    let qh = &mut out[16..48];
                    qh.fill(0);
                    for p in 0..4 {
                        for i in 0..32 {
                            let (a, b) = (u[64 * p + i], u[64 * p + 32 + i]);
                            qh[i] |= ((a >> 4) << (2 * p)) | ((b >> 4) << (2 * p + 1));
                        }
                    }
                    48
                } else {
                    16
                };
                for p in 0..4 {
                    for i in 0..32 {
                        out[qs_at + 32 * p + i] = (u[64 * p + i] & 0x0f) | ((u[64 * p + 32 + i] & 0x0f) << 4);
                    }
                }
            }
            DType::Q6_K => {
                for hh in 0..2 {
                    for l in 0..32 {
                        let e = 128 * hh + l;
                        let (q1, q2, q3, q4) = (u[e], u[e + 32], u[e + 64], u[e + 96]);
                        out[64 * hh + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                        out[64 * hh + 32 + l] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                        out[128 + 32 * hh + l] =
                            (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
                    }
                }
                for s in 0..16 {
                    out[192 + s] = (self.ls[s] as i8) as u8;
                }
                out[208..210].copy_from_slice(&h(self.d));
            }
            other => unreachable!("no weighted grid for {other}"),
        }
    }
}

/// Packs 256 two-bit codes: element `128·h + 32·s + l` goes to bits `2s` of byte `32·h + l`.
fn pack_2bit(l: &[u8; 256], qs: &mut [u8]) {
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            qs[32 * h + i] =
                (l[b] & 3) | ((l[b + 32] & 3) << 2) | ((l[b + 64] & 3) << 4) | ((l[b + 96] & 3) << 6);
        }
    }
}

/// Sub-block layout of a format: (elements per sub-block, code range, affine?).
fn layout(dtype: DType) -> (usize, i32, i32, bool) {
    match dtype {
        DType::Q4_0 => (32, -8, 7, false),
        DType::Q5_0 => (32, -16, 15, false),
        DType::Q8_0 => (32, -127, 127, false),
        DType::Q4_1 => (32, 0, 15, true),
        DType::Q5_1 => (32, 0, 31, true),
        DType::Q2_K => (16, 0, 3, true),
        DType::Q3_K => (16, -4, 3, false),
        DType::Q4_K => (32, 0, 15, true),
        DType::Q5_K => (32, 0, 31, true),
        DType::Q6_K => (16, -32, 31, false),
        other => unreachable!("no weighted grid for {other}"),
    }
}

/// Whether [`fit`] handles `dtype`.
pub fn supports(dtype: DType) -> bool {
    WEIGHTED_TYPES.contains(&dtype)
}

/// Chooses the grid of one block of `dtype` (`x` and `w` are one block long; `w ≥ 0`).
///
/// # Panics
/// If `dtype` is not one of [`WEIGHTED_TYPES`] or the slices are not one block long (callers
/// check both).
pub fn fit(dtype: DType, x: &[f32], w: &[f32]) -> BlockFit {
    assert_eq!(x.len(), dtype.block_size());
    assert_eq!(w.len(), x.len());
    let (sub_len, lo, hi, affine) = layout(dtype);
    let mut f = BlockFit {
        dtype,
        sub_len,
        lo,
        hi,
        scale: [0.0; 16],
        offset: [0.0; 16],
        d: 0.0,
        dmin: 0.0,
        ls: [0; 16],
        lm: [0; 16],
    };
    let n_sub = x.len() / sub_len;
    if n_sub == 1 {
        // Legacy formats: one f16 scale (and minimum) per 32 values.
        if affine {
            let (d, m) = fit_affine(x, w, hi, false);
            f.d = via_f16(d);
            f.dmin = via_f16(m);
            f.scale[0] = f.d;
            f.offset[0] = f.dmin;
        } else {
            f.d = via_f16(fit_symmetric(x, w, lo, hi));
            f.scale[0] = f.d;
        }
        return f;
    }
    // k-quants: a float scale (and minimum) per sub-block, then those quantized.
    let mut sc = [0.0f32; 16];
    let mut mn = [0.0f32; 16]; // −minimum, ≥ 0
    let mut wsc = [0.0f32; 16]; // weight of a scale error: Σ w q²
    let mut wmn = [0.0f32; 16]; // weight of a minimum error: Σ w
    for s in 0..n_sub {
        let (xs, ws) = (&x[s * sub_len..(s + 1) * sub_len], &w[s * sub_len..(s + 1) * sub_len]);
        let (d, m) = if affine { fit_affine(xs, ws, hi, true) } else { (fit_symmetric(xs, ws, lo, hi), 0.0) };
        sc[s] = d;
        mn[s] = -m;
        let (mut a, mut b) = (0.0f64, 0.0f64);
        for (&v, &wi) in xs.iter().zip(ws) {
            let q = if d != 0.0 { round_clamp((v - m) / d, lo, hi) as f64 } else { 0.0 };
            a += wi as f64 * q * q;
            b += wi as f64;
        }
        wsc[s] = a as f32 + 1e-30;
        wmn[s] = b as f32 + 1e-30;
    }
    let (sc, mn, wsc, wmn) = (&sc[..n_sub], &mn[..n_sub], &wsc[..n_sub], &wmn[..n_sub]);
    // Integer ranges of the stored sub-block scales and minimums.
    let (slo, shi, mhi) = match dtype {
        DType::Q2_K => (0, 15, 15),
        DType::Q3_K => (-32, 31, 0),
        DType::Q4_K | DType::Q5_K => (0, 63, 63),
        DType::Q6_K => (-128, 127, 0),
        _ => unreachable!(),
    };
    f.d = via_f16(fit_symmetric(sc, wsc, slo, shi));
    if affine {
        f.dmin = via_f16(fit_symmetric(mn, wmn, 0, mhi));
    }
    for s in 0..n_sub {
        f.ls[s] = if f.d != 0.0 { round_clamp(sc[s] / f.d, slo, shi) } else { 0 };
        f.scale[s] = f.d * f.ls[s] as f32;
        if affine {
            f.lm[s] = if f.dmin != 0.0 { round_clamp(mn[s] / f.dmin, 0, mhi) } else { 0 };
            f.offset[s] = -(f.dmin * f.lm[s] as f32);
        }
    }
    f
}

/// Quantizes one row of `dtype` with importance `imp` (one weight per element of the row;
/// `None` = plain squared error) into `out` (`dtype.bytes_for(x.len())` bytes).
///
/// # Panics
/// If the lengths disagree or the type is unsupported (callers check).
pub fn quantize_row_weighted(dtype: DType, x: &[f32], imp: Option<&[f32]>, out: &mut [u8]) {
    let bs = dtype.block_size();
    let ts = dtype.type_size();
    assert_eq!(x.len() % bs, 0);
    assert_eq!(out.len(), x.len() / bs * ts);
    // The importance itself is the weight: it is what the layer's expected output error
    // weights each element's error by. (ggml's extra factor sqrt(σ² + x²), favouring large
    // weights, measured worse on SmolLM2: docs/quantization.md.)
    let w = imp.map_or_else(|| vec![1.0f32; x.len()], |v| v.to_vec());
    for ((xb, ob), wb) in x.chunks_exact(bs).zip(out.chunks_exact_mut(ts)).zip(w.chunks_exact(bs)) {
        fit(dtype, xb, wb).pack(xb, ob);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellm_core::quant::{dequantize, quantize};

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = ((s >> 11) as f64 / (1u64 << 53) as f64) as f32;
                (u - 0.5) * 2.0 + if s.is_multiple_of(97) { 6.0 } else { 0.0 }
            })
            .collect()
    }

    fn mse(a: &[f32], b: &[f32], w: &[f32]) -> f64 {
        a.iter().zip(b).zip(w).map(|((x, y), w)| *w as f64 * (*x as f64 - *y as f64).powi(2)).sum::<f64>()
    }

    #[test]
    fn pack_agrees_with_core_dequantize_and_beats_reference_mse() {
        for &t in WEIGHTED_TYPES {
            let x = data(4096, t.id() as u64 + 1);
            let mut out = vec![0u8; t.bytes_for(4096).unwrap() as usize];
            quantize_row_weighted(t, &x, None, &mut out);
            let y = dequantize(t, &out, 4096).unwrap();
            // The fitted values, rounded on the grid, must be what the bytes decode to.
            let bs = t.block_size();
            let ones = vec![1.0f32; bs];
            for (b, xb) in x.chunks_exact(bs).enumerate() {
                let f = fit(t, xb, &ones);
                for (j, &v) in xb.iter().enumerate() {
                    let want = f.value(j, v);
                    let got = y[b * bs + j];
                    assert!(
                        (want - got).abs() <= 1e-5 * want.abs().max(1e-3),
                        "{t} block {b} elem {j}: {got} vs {want}"
                    );
                }
            }
            let reference = dequantize(t, &quantize(t, &x).unwrap(), 4096).unwrap();
            let ones = vec![1.0f32; 4096];
            let (e_ours, e_ref) = (mse(&x, &y, &ones), mse(&x, &reference, &ones));
            assert!(e_ours <= e_ref * 1.02, "{t}: weighted search {e_ours} vs reference {e_ref}");
        }
    }

    #[test]
    fn weights_move_the_error_to_unimportant_elements() {
        for &t in WEIGHTED_TYPES {
            let x = data(2048, 7 + t.id() as u64);
            let imp: Vec<f32> = (0..2048).map(|i| if i % 4 == 0 { 100.0 } else { 1.0 }).collect();
            let mut a = vec![0u8; t.bytes_for(2048).unwrap() as usize];
            let mut b = a.clone();
            quantize_row_weighted(t, &x, Some(&imp), &mut a);
            quantize_row_weighted(t, &x, None, &mut b);
            let ya = dequantize(t, &a, 2048).unwrap();
            let yb = dequantize(t, &b, 2048).unwrap();
            let (ea, eb) = (mse(&x, &ya, &imp), mse(&x, &yb, &imp));
            assert!(ea <= eb * 1.001, "{t}: weighted {ea} vs unweighted {eb}");
        }
    }

    #[test]
    fn zero_and_constant_blocks_encode_exactly() {
        for &t in WEIGHTED_TYPES {
            let n = t.block_size();
            for x in [vec![0.0f32; n], vec![0.5f32; n]] {
                let mut out = vec![0u8; t.type_size()];
                quantize_row_weighted(t, &x, None, &mut out);
                let y = dequantize(t, &out, n).unwrap();
                for (a, b) in x.iter().zip(&y) {
                    assert!((a - b).abs() <= 0.02 * a.abs().max(1e-6) + 1e-6, "{t}: {a} -> {b}");
                }
            }
        }
    }
}
