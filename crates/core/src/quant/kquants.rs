//! The k-quant formats: 256-element super-blocks split into sub-blocks of 16 or 32 elements,
//! each sub-block with its own small integer scale (and minimum) that multiplies the
//! super-block's f16 scale(s): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, and Q8_K (the activation format
//! of the k-quant dot products).
//!
//! Bit layouts are ggml's (`ggml-common.h`); the quantizers follow ggml's reference
//! `quantize_row_q*_K_ref`: a per-sub-block search for the best scale (and minimum), then the
//! sub-block scales quantized against the largest one, then every element re-quantized with
//! the scales as they will be decoded. Arithmetic is done in f32 in the reference's order, so
//! the bytes match it exactly.

use super::{
    block_bytes, block_bytes_mut, block_values, block_values_mut, nearest_int, read_f16, write_f16,
    BlockFormat,
};
use crate::DType;
use half::f16;

/// Elements per k-quant super-block.
pub const QK_K: usize = 256;

/// Below this magnitude a group is treated as all zeros (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Q2_K (2.625 bits per weight): 16 sub-blocks of 16, `x = d·sc·q − dmin·m`, `q` in 0..=3,
/// `sc` and `m` 4-bit.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ2_K {
    /// Per sub-block: scale in the low nibble, minimum in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// Codes, four per byte: element `128·h + 32·s + l` is bits `2s..2s+2` of byte `32·h + l`.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the minimums.
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2_K>() == 84);

/// Q3_K (3.4375 bits per weight): 16 sub-blocks of 16, `x = d·(sc − 32)·(q − 4)`, `q` in
/// 0..=7, `sc` 6-bit.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ3_K {
    /// High (third) bits: element `i` is bit `i / 32` of byte `i % 32`; a set bit means
    /// "no −4 offset".
    pub hmask: [u8; QK_K / 8],
    /// Low two bits, packed as [`BlockQ2_K::qs`].
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales: low nibbles in bytes 0..8 (sub-block `j` in byte `j % 8`, high
    /// nibble for `j >= 8`), high two bits in bytes 8..12 (sub-block `j` at bits
    /// `2·(j / 4)` of byte `8 + j % 4`).
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3_K>() == 110);

/// Q4_K (4.5 bits per weight): 8 sub-blocks of 32, `x = d·sc·q − dmin·m`, `q` in 0..=15,
/// `sc` and `m` 6-bit.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_K {
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and minimums; see [`scale_min_k4`].
    pub scales: [u8; 12],
    /// Codes: element `64·p + l` is the low nibble and `64·p + 32 + l` the high nibble of
    /// byte `32·p + l`.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == 144);

/// Q5_K (5.5 bits per weight): as [`BlockQ4_K`] with a fifth bit per code, `q` in 0..=31.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_K {
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and minimums; see [`scale_min_k4`].
    pub scales: [u8; 12],
    /// Fifth bits: element `i` is bit `i / 32` of byte `i % 32`.
    pub qh: [u8; QK_K / 8],
    /// Low four bits, packed as [`BlockQ4_K::qs`].
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_K>() == 176);

/// Q6_K (6.5625 bits per weight): 16 sub-blocks of 16, `x = d·sc·(q − 32)`, `q` in 0..=63,
/// `sc` a signed byte.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ6_K {
    /// Low four bits: in each half `h` (128 elements), element `128·h + 32·s + l` is the low
    /// nibble (`s` = 0, 1) or high nibble (`s` = 2, 3) of byte `64·h + 32·(s % 2) + l`.
    pub ql: [u8; QK_K / 2],
    /// High two bits: element `128·h + 32·s + l` is bits `2s..2s+2` of byte `32·h + l`.
    pub qh: [u8; QK_K / 4],
    /// Per sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == 210);

/// Q8_K (9.125 bits per weight): `x = d·q` with an f32 scale; the activation format of the
/// k-quant dot products. `bsums` caches the sum of each group of 16 codes.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_K {
    /// Scale (f32, not f16).
    pub d: f32,
    /// Codes.
    pub qs: [i8; QK_K],
    /// Sum of codes `16·g .. 16·g + 16`, for each group `g`.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_K>() == 292);

/// Scale and minimum of sub-block `j` (0..8) from the 12 packed bytes of Q4_K/Q5_K.
///
/// Sub-blocks 0..4 keep their 6-bit scale in the low bits of byte `j` and their minimum in
/// byte `j + 4`; sub-blocks 4..8 keep the low four bits of both in byte `j + 4` (scale in the
/// low nibble) and their top two bits in the top bits of bytes `j − 4` (scale) and `j` (min).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Packs eight 6-bit scales and minimums as [`scale_min_k4`] reads them.
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Scale `j` (0..16), 6-bit unsigned, from Q3_K's 12 packed scale bytes.
#[inline(always)]
fn q3k_scale(s: &[u8; 12], j: usize) -> i32 {
    let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32
}

/// Packs 2-bit codes `l` (256 of them, each 0..=3) as [`BlockQ2_K::qs`].
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            qs[32 * h + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

/// The element of largest magnitude, signed (first on ties), and its magnitude.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// Symmetric scale search for signed codes in `-nmax..nmax` (stored as `l + nmax` in `codes`),
/// weighting each element by `x²`: ggml's `make_qx_quants` with `rmse_type = 1` and no
/// importance weights. Tries 19 inverse scales around `nmax / max` and keeps the one with the
/// best weighted least-squares fit; returns the fitted scale.
fn make_qx_quants(nmax: i32, x: &[f32], codes: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        codes.fill(0);
        return 0.0;
    }
    let nm = nmax as f32;
    let code = |v: f32, iscale: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let fit = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = code(v, iscale) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -nm / max;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = (code(v, iscale) + nmax) as i8;
    }
    let (sumlx, suml2) = fit(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nm + 0.1 * is as f32) / max;
        let (sumlx, suml2) = fit(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (c, &v) in codes.iter_mut().zip(x) {
                *c = (code(v, iscale) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Symmetric scale search for Q3_K's signed codes in `-nmax..nmax` (stored as `l + nmax`):
/// ggml's `make_q3_quants` with its RMSE refinement. Starts from `nmax / max`, then for up to
/// five passes moves single codes to where the `x²`-weighted least-squares fit improves.
fn make_q3_quants(nmax: i32, x: &[f32], codes: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        codes.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (c, &v) in codes.iter_mut().zip(x) {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *c = l as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (c, &v) in codes.iter_mut().zip(x) {
            let w = v * v;
            let l = *c as f32;
            let mut slx = sumlx - w * v * l;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * l * l;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *c as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *c = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for c in codes.iter_mut() {
        *c += nmax as i8;
    }
    sumlx / suml2
}

/// Parameters of the affine (scale and minimum) search.
struct AffineSearch {
    /// Largest code.
    nmax: i32,
    /// First inverse-scale offset tried, in code units.
    rmin: f32,
    /// Step between tries.
    rdelta: f32,
    /// Number of steps (tries are `0..=nstep`).
    nstep: i32,
    /// Minimize weighted absolute error (`true`) or weighted squared error (`false`).
    use_mad: bool,
}

/// Affine scale search for unsigned codes `0..=nmax` with `x ≈ scale·q − min_out`, the minimum
/// never above zero: ggml's `make_qkx2_quants`. Tries inverse scales
/// `(nmax + rmin + rdelta·k) / (max − min)`, solving the weighted least-squares scale and
/// minimum for each set of codes, and keeps the best. Returns the scale; the (non-negative)
/// amount subtracted goes to `min_out`.
fn make_qkx2_quants(
    p: &AffineSearch,
    x: &[f32],
    weights: &[f32],
    codes: &mut [u8],
    aux: &mut [u8],
    min_out: &mut f32,
) -> f32 {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        codes.fill(0);
        *min_out = -min;
        return 0.0;
    }
    let nmax = p.nmax as f32;
    let err = |d: f32, w: f32| if p.use_mad { w * d.abs() } else { w * (d * d) };
    let mut iscale = nmax / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((c, &v), &w) in codes.iter_mut().zip(x).zip(weights) {
        *c = nearest_int(iscale * (v - min)).clamp(0, p.nmax) as u8;
        best_error += err(scale * *c as f32 + min - v, w);
    }
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((a, &v), &w) in aux.iter_mut().zip(x).zip(weights) {
            let l = nearest_int(iscale * (v - min)).clamp(0, p.nmax);
            *a = l as u8;
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&a, &v), &w) in aux.iter().zip(x).zip(weights) {
                cur_error += err(this_scale * a as f32 + this_min - v, w);
            }
            if cur_error < best_error {
                codes.copy_from_slice(aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *min_out = -min;
    scale
}

impl BlockFormat for BlockQ2_K {
    const DTYPE: DType = DType::Q2_K;
    const BLOCK: usize = QK_K;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<84>(src);
        let y = block_values_mut::<QK_K>(dst);
        let (scales, rest) = b.split_at(16);
        let qs = &rest[..64];
        let d = read_f16(b, 80);
        let dmin = read_f16(b, 82);
        for (sub, out) in y.chunks_exact_mut(16).enumerate() {
            let sc = scales[sub];
            let dl = d * (sc & 0x0f) as f32;
            let ml = dmin * (sc >> 4) as f32;
            // Sub-block `sub` covers elements 16·sub..: half h = sub / 8, shift s = (sub / 2) % 4.
            let base = 32 * (sub / 8) + 16 * (sub % 2);
            let shift = 2 * ((sub / 2) % 4);
            for (l, o) in out.iter_mut().enumerate() {
                *o = dl * ((qs[base + l] >> shift) & 3) as f32 - ml;
            }
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<QK_K>(src);
        let out = block_bytes_mut::<84>(dst);
        const Q4SCALE: f32 = 15.0;
        let search = AffineSearch { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
        let mut l = [0u8; QK_K];
        let mut aux = [0u8; 16];
        let mut weights = [0.0f32; 16];
        let mut mins = [0.0f32; 16];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            scales[j] =
                make_qkx2_quants(&search, xs, &weights, &mut l[16 * j..16 * j + 16], &mut aux, &mut mins[j]);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let (sc, rest) = out.split_at_mut(16);
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (s, &v) in sc.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * v) as u8;
            }
            write_f16(rest, 64, max_scale / Q4SCALE);
        } else {
            sc.fill(0);
            write_f16(rest, 64, 0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (s, &v) in sc.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * v) << 4) as u8;
            }
            write_f16(rest, 66, max_min / Q4SCALE);
        } else {
            write_f16(rest, 66, 0.0);
        }
        let d_all = read_f16(rest, 64);
        let dmin_all = read_f16(rest, 66);
        for ((&s, xs), ls) in sc.iter().zip(x.chunks_exact(16)).zip(l.chunks_exact_mut(16)) {
            let d = d_all * (s & 0x0f) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * (s >> 4) as f32;
            for (c, &v) in ls.iter_mut().zip(xs) {
                *c = nearest_int((v + dm) / d).clamp(0, 3) as u8;
            }
        }
        pack_2bit(&l, &mut rest[..64]);
    }
}

impl BlockFormat for BlockQ3_K {
    const DTYPE: DType = DType::Q3_K;
    const BLOCK: usize = QK_K;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<110>(src);
        let y = block_values_mut::<QK_K>(dst);
        let hmask = &b[0..32];
        let qs = &b[32..96];
        let scales: &[u8; 12] = block_bytes::<12>(&b[96..108]);
        let d_all = read_f16(b, 108);
        for (sub, out) in y.chunks_exact_mut(16).enumerate() {
            let dl = d_all * (q3k_scale(scales, sub) - 32) as f32;
            let base = 32 * (sub / 8) + 16 * (sub % 2);
            let shift = 2 * ((sub / 2) % 4);
            // The high bit of element i is bit i / 32 of hmask[i % 32].
            let hbit = sub / 2;
            for (l, o) in out.iter_mut().enumerate() {
                let low = ((qs[base + l] >> shift) & 3) as i32;
                let hi = (hmask[16 * (sub % 2) + l] >> hbit) & 1;
                let q = low - if hi != 0 { 0 } else { 4 };
                *o = dl * q as f32;
            }
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<QK_K>(src);
        let out = block_bytes_mut::<110>(dst);
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for j in 0..16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let a = scales[j].abs();
            if a > amax {
                amax = a;
                max_scale = scales[j];
            }
        }
        let mut sc = [0u8; 12];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                // The C code narrows to int8_t before clamping; the value is within ±32 anyway.
                let v = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    sc[j] = v & 0x0f;
                } else {
                    sc[j - 8] |= (v & 0x0f) << 4;
                }
                sc[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
            }
            write_f16(out, 108, 1.0 / iscale);
        } else {
            write_f16(out, 108, 0.0);
        }
        out[96..108].copy_from_slice(&sc);
        let d_all = read_f16(out, 108);
        for j in 0..16 {
            let d = d_all * (q3k_scale(&sc, j) - 32) as f32;
            if d == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(x[i] / d).clamp(-4, 3) + 4) as i8;
            }
        }
        let (hmask, rest) = out.split_at_mut(32);
        hmask.fill(0);
        let mut low = [0u8; QK_K];
        for (i, (&c, lo)) in l.iter().zip(low.iter_mut()).enumerate() {
            let mut c = c as u8;
            if c > 3 {
                hmask[i % 32] |= 1 << (i / 32);
                c -= 4;
            }
            *lo = c;
        }
        pack_2bit(&low, &mut rest[..64]);
    }
}

/// Shared by Q4_K and Q5_K: per-sub-block affine search with weights `rms + |x|`, then the
/// 6-bit scales and minimums, then the final codes (`0..=nmax`). Writes `d`, `dmin` and the
/// packed scales into `head` (16 bytes) and returns the codes.
fn quantize_k4_like(x: &[f32; QK_K], search: &AffineSearch, head: &mut [u8]) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let mut aux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2 = xs.iter().fold(0.0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        scales[j] =
            make_qkx2_quants(search, xs, &weights, &mut l[32 * j..32 * j + 32], &mut aux, &mut mins[j]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // Narrowed to a byte before clamping, as the C code does.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    write_f16(head, 0, max_scale / 63.0);
    write_f16(head, 2, max_min / 63.0);
    head[4..16].copy_from_slice(&packed);
    let d_all = read_f16(head, 0);
    let dmin_all = read_f16(head, 2);
    let nmax = search.nmax;
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    l
}

impl BlockFormat for BlockQ4_K {
    const DTYPE: DType = DType::Q4_K;
    const BLOCK: usize = QK_K;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<144>(src);
        let y = block_values_mut::<QK_K>(dst);
        let d = read_f16(b, 0);
        let dmin = read_f16(b, 2);
        let scales: &[u8; 12] = block_bytes::<12>(&b[4..16]);
        let qs = &b[16..144];
        for (p, out) in y.chunks_exact_mut(64).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * p, scales);
            let (sc2, m2) = scale_min_k4(2 * p + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            let q = &qs[32 * p..32 * p + 32];
            let (lo, hi) = out.split_at_mut(32);
            for l in 0..32 {
                lo[l] = d1 * (q[l] & 0x0f) as f32 - m1;
                hi[l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<QK_K>(src);
        let out = block_bytes_mut::<144>(dst);
        let search = AffineSearch { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
        let (head, qs) = out.split_at_mut(16);
        let l = quantize_k4_like(x, &search, head);
        for p in 0..4 {
            for i in 0..32 {
                qs[32 * p + i] = l[64 * p + i] | (l[64 * p + 32 + i] << 4);
            }
        }
    }
}

impl BlockFormat for BlockQ5_K {
    const DTYPE: DType = DType::Q5_K;
    const BLOCK: usize = QK_K;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<176>(src);
        let y = block_values_mut::<QK_K>(dst);
        let d = read_f16(b, 0);
        let dmin = read_f16(b, 2);
        let scales: &[u8; 12] = block_bytes::<12>(&b[4..16]);
        let qh = &b[16..48];
        let qs = &b[48..176];
        for (p, out) in y.chunks_exact_mut(64).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * p, scales);
            let (sc2, m2) = scale_min_k4(2 * p + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            let q = &qs[32 * p..32 * p + 32];
            let (lo, hi) = out.split_at_mut(32);
            for l in 0..32 {
                let h1 = ((qh[l] >> (2 * p)) & 1) << 4;
                let h2 = ((qh[l] >> (2 * p + 1)) & 1) << 4;
                lo[l] = d1 * ((q[l] & 0x0f) | h1) as f32 - m1;
                hi[l] = d2 * ((q[l] >> 4) | h2) as f32 - m2;
            }
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<QK_K>(src);
        let out = block_bytes_mut::<176>(dst);
        let search = AffineSearch { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };
        let (head, rest) = out.split_at_mut(16);
        let l = quantize_k4_like(x, &search, head);
        let (qh, qs) = rest.split_at_mut(32);
        qh.fill(0);
        for p in 0..4 {
            for i in 0..32 {
                let (l1, l2) = (l[64 * p + i], l[64 * p + 32 + i]);
                qh[i] |= ((l1 >> 4) << (2 * p)) | ((l2 >> 4) << (2 * p + 1));
                qs[32 * p + i] = (l1 & 0x0f) | ((l2 & 0x0f) << 4);
            }
        }
    }
}

impl BlockFormat for BlockQ6_K {
    const DTYPE: DType = DType::Q6_K;
    const BLOCK: usize = QK_K;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<210>(src);
        let y = block_values_mut::<QK_K>(dst);
        let d = read_f16(b, 208);
        for (h, out) in y.chunks_exact_mut(128).enumerate() {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[128 + 32 * h..128 + 32 * h + 32];
            let sc = &b[192 + 8 * h..192 + 8 * h + 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<QK_K>(src);
        let out = block_bytes_mut::<210>(dst);
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for j in 0..16 {
            scales[j] = make_qx_quants(32, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let a = scales[j].abs();
            if a > max_abs_scale {
                max_abs_scale = a;
                max_scale = scales[j];
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            out.fill(0);
            return;
        }
        let iscale = -128.0 / max_scale;
        write_f16(out, 208, 1.0 / iscale);
        let mut sc = [0i8; 16];
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v).min(127) as i8;
        }
        let d_all = read_f16(out, 208);
        for ((&s, xs), ls) in sc.iter().zip(x.chunks_exact(16)).zip(l.chunks_exact_mut(16)) {
            let d = d_all * s as f32;
            if d == 0.0 {
                continue;
            }
            for (c, &v) in ls.iter_mut().zip(xs) {
                *c = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for (o, &s) in out[192..208].iter_mut().zip(&sc) {
            *o = s as u8;
        }
        for h in 0..2 {
            for i in 0..32 {
                let c = |k: usize| l[128 * h + 32 * k + i] as u8;
                out[64 * h + i] = (c(0) & 0x0f) | ((c(2) & 0x0f) << 4);
                out[64 * h + 32 + i] = (c(1) & 0x0f) | ((c(3) & 0x0f) << 4);
                out[128 + 32 * h + i] =
                    (c(0) >> 4) | ((c(1) >> 4) << 2) | ((c(2) >> 4) << 4) | ((c(3) >> 4) << 6);
            }
        }
    }
}

impl BlockFormat for BlockQ8_K {
    const DTYPE: DType = DType::Q8_K;
    const BLOCK: usize = QK_K;
    const BYTES: usize = std::mem::size_of::<Self>();

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b = block_bytes::<292>(src);
        let y = block_values_mut::<QK_K>(dst);
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (o, &q) in y.iter_mut().zip(&b[4..260]) {
            *o = d * (q as i8) as f32;
        }
    }

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x = block_values::<QK_K>(src);
        let out = block_bytes_mut::<292>(dst);
        let (max, amax) = signed_absmax(x);
        if amax == 0.0 {
            out.fill(0);
            return;
        }
        let iscale = -127.0 / max;
        let mut qs = [0i8; QK_K];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        out[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (o, &q) in out[4..260].iter_mut().zip(&qs) {
            *o = q as u8;
        }
        for (g, o) in out[260..292].chunks_exact_mut(2).enumerate() {
            let sum: i32 = qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum();
            o.copy_from_slice(&(sum as i16).to_le_bytes());
        }
    }
}
