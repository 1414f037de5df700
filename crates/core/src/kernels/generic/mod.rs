//! The scalar oracles: straightforward integer dot products, one block at a time.
//!
//! Every SIMD kernel is tested against these; they in turn are tested against the f32 dot
//! product of the reference dequantizers of [`crate::quant`]. The activation quantizers are
//! llama.cpp's run-time ones (see the module above).
//!
//! The k-quants are all decoded into one canonical form, [`KBlock`]: unsigned codes `u`,
//! one integer scale and one integer offset per 16 values, and two float scales, so that
//! `x = d·sc·u − dm·off` per 16-value group (with `dm = d` for the symmetric types, whose
//! offset folds the code bias: Q6_K `off = 32·sc`, Q3_K `off = 4·sc`). The dot product with a
//! Q8_K block is then `d·da·Σ sc·Σu·q − dm·da·Σ off·bsum`, all sums exact integers.

use super::{Kernels, MatmulArgs, Tier, TypeKernels, WEIGHTS};
use crate::quant::sparse::{bitmap_mask, NmLayout, Q8_SB_BYTES};
use crate::quant::{read_f16, scale_min_k4, BlockFormat, BlockQ8_K, QK_K};
use crate::DType;

/// The oracle table.
pub(super) fn table() -> Kernels {
    let f = |vec_dot: super::VecDotFn, matmul: super::MatmulFn| TypeKernels {
        vec_dot,
        matmul,
        tier: Tier::Scalar,
    };
    let types = WEIGHTS.map(|w| match w.dtype {
        DType::F32 => f(vec_dot_f32, matmul_f32),
        DType::F16 => f(vec_dot_f16, matmul_f16),
        DType::BF16 => f(vec_dot_bf16, matmul_bf16),
        DType::Q4_0 => f(vec_dot_q4_0, matmul_q4_0),
        DType::Q4_1 => f(vec_dot_q4_1, matmul_q4_1),
        DType::Q5_0 => f(vec_dot_q5_0, matmul_q5_0),
        DType::Q5_1 => f(vec_dot_q5_1, matmul_q5_1),
        DType::Q8_0 => f(vec_dot_q8_0, matmul_q8_0),
        DType::Q2_K => f(vec_dot_q2_k, matmul_q2_k),
        DType::Q3_K => f(vec_dot_q3_k, matmul_q3_k),
        DType::Q4_K => f(vec_dot_q4_k, matmul_q4_k),
        DType::Q5_K => f(vec_dot_q5_k, matmul_q5_k),
        DType::Q6_K => f(vec_dot_q6_k, matmul_q6_k),
        DType::Q4_S24 => f(vec_dot_q4_s24, matmul_q4_s24),
        DType::Q4_S48 => f(vec_dot_q4_s48, matmul_q4_s48),
        DType::Q8_S24 => f(vec_dot_q8_s24, matmul_q8_s24),
        DType::Q8_S48 => f(vec_dot_q8_s48, matmul_q8_s48),
        other => unreachable!("no oracle for {other}"),
    });
    let s = Tier::Scalar;
    let packed = WEIGHTS.map(|w| match w.dtype {
        DType::Q4_0 => Some((super::packed::matmul_q4_0 as super::MatmulFn, s)),
        DType::Q5_0 => Some((super::packed::matmul_q5_0 as super::MatmulFn, s)),
        DType::Q8_0 => Some((super::packed::matmul_q8_0 as super::MatmulFn, s)),
        DType::Q4_1 => Some((super::packed::matmul_q4_1 as super::MatmulFn, s)),
        DType::Q5_1 => Some((super::packed::matmul_q5_1 as super::MatmulFn, s)),
        DType::Q4_K => Some((super::packed::matmul_q4_k as super::MatmulFn, s)),
        DType::Q6_K => Some((super::packed::matmul_q6_k as super::MatmulFn, s)),
        DType::Q4_S24 => Some((super::packed::matmul_q4_s24 as super::MatmulFn, s)),
        DType::Q4_S48 => Some((super::packed::matmul_q4_s48 as super::MatmulFn, s)),
        DType::Q8_S24 => Some((super::packed::matmul_q8_s24 as super::MatmulFn, s)),
        DType::Q8_S48 => Some((super::packed::matmul_q8_s48 as super::MatmulFn, s)),
        _ => None,
    });
    Kernels {
        tier: Tier::Scalar,
        quantize: [
            (quantize_f32, s),
            (quantize_q8_0, s),
            (quantize_q8_1, s),
            (quantize_q8_k, s),
            (super::packed::quantize_q8s, s),
            (super::packed::quantize_q8u, s),
        ],
        types,
        packed,
        bitmap: (matmul_bitmap as super::BitmapFn, s),
        bitmap_groups: (super::bitmap_groups::matmul as super::MatmulFn, s),
    }
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers.

/// F32 activations: the values as little-endian bytes.
pub(crate) fn quantize_f32(x: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// One 32-value block of 8-bit activations: (scale, codes).
///
/// Activations are quantized the way llama.cpp's CPU backend does at run time (its SIMD
/// quantizers on x86 and ARM), not like ggml's reference weight quantizer: the codes are
/// `x · (127 / amax)` rounded half to even, the scale `amax / 127`. The two differ on exact
/// ties, which are common in real activations (rows that were themselves dequantized and scaled),
/// and following the reference engine keeps whole-model logits comparable with it.
pub(crate) fn act_q8_block(x: &[f32]) -> (f32, [i8; 32]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut q = [0i8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
    }
    (d, q)
}

/// Q8_0 activations: the ggml block layout (f16 scale, 32 codes), see [`act_q8_block`].
pub(crate) fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let (d, q) = act_q8_block(xb);
        ob[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        for (o, &c) in ob[2..].iter_mut().zip(&q) {
            *o = c as u8;
        }
    }
}

/// Q8_1 (ggml's `block_q8_1`): the Q8_0 activation block with `s = d·Σq` (f16, from the
/// unrounded f32 scale) after the scale.
pub(crate) fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let (d, q) = act_q8_block(xb);
        let sum: i32 = q.iter().map(|&c| c as i32).sum();
        ob[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        ob[2..4].copy_from_slice(&half::f16::from_f32(d * sum as f32).to_le_bytes());
        for (o, &c) in ob[4..].iter_mut().zip(&q) {
            *o = c as u8;
        }
    }
}

/// Q8_K: ggml's reference quantizer.
pub(crate) fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(292)) {
        BlockQ8_K::quantize_block(xb, ob);
    }
}

// ---------------------------------------------------------------------------------------------
// Float weights against f32 activations: a sequential f32 sum.

fn act_f32(a: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
}

pub(crate) fn vec_dot_f32(w: &[u8], a: &[u8], k: usize) -> f32 {
    (0..k).fold(0.0f32, |s, i| s + act_f32(w, i) * act_f32(a, i))
}

pub(crate) fn vec_dot_f16(w: &[u8], a: &[u8], k: usize) -> f32 {
    (0..k).fold(0.0f32, |s, i| s + read_f16(w, 2 * i) * act_f32(a, i))
}

pub(crate) fn vec_dot_bf16(w: &[u8], a: &[u8], k: usize) -> f32 {
    let bf = |i: usize| f32::from_bits((u16::from_le_bytes([w[2 * i], w[2 * i + 1]]) as u32) << 16);
    (0..k).fold(0.0f32, |s, i| s + bf(i) * act_f32(a, i))
}

// ---------------------------------------------------------------------------------------------
// The 32-value formats.

/// Codes of one 32-value weight block as integers (signed, the bias removed, for the `_0`
/// types; unsigned for the `_1` types), its scale and (for the `_1` types) its minimum.
pub(crate) fn legacy_codes(weight: DType, b: &[u8]) -> ([i32; 32], f32, f32) {
    let mut c = [0i32; 32];
    let nib = |qs: &[u8], c: &mut [i32; 32], bias: i32| {
        for j in 0..16 {
            c[j] = (qs[j] & 0x0f) as i32 - bias;
            c[j + 16] = (qs[j] >> 4) as i32 - bias;
        }
    };
    let high = |qh: &[u8], c: &mut [i32; 32]| {
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, v) in c.iter_mut().enumerate() {
            *v += (((qh >> j) & 1) << 4) as i32;
        }
    };
    match weight {
        DType::Q4_0 => {
            nib(&b[2..18], &mut c, 8);
            (c, read_f16(b, 0), 0.0)
        }
        DType::Q4_1 => {
            nib(&b[4..20], &mut c, 0);
            (c, read_f16(b, 0), read_f16(b, 2))
        }
        DType::Q5_0 => {
            nib(&b[6..22], &mut c, 0);
            high(&b[2..6], &mut c);
            for v in c.iter_mut() {
                *v -= 16;
            }
            (c, read_f16(b, 0), 0.0)
        }
        DType::Q5_1 => {
            nib(&b[8..24], &mut c, 0);
            high(&b[4..8], &mut c);
            (c, read_f16(b, 0), read_f16(b, 2))
        }
        DType::Q8_0 => {
            for (v, &q) in c.iter_mut().zip(&b[2..34]) {
                *v = q as i8 as i32;
            }
            (c, read_f16(b, 0), 0.0)
        }
        other => unreachable!("{other} is not a 32-value format"),
    }
}

/// `Σ c·q` over one Q8_0 (or Q8_1) activation block's codes.
fn idot32(c: &[i32; 32], q: &[u8]) -> i32 {
    c.iter().zip(q).map(|(&c, &q)| c * q as i8 as i32).sum()
}

/// Symmetric weights (`x = d·c`) against Q8_0 activations.
fn vec_dot_sym(weight: DType, w: &[u8], a: &[u8]) -> f32 {
    let wb = weight.type_size();
    let mut sum = 0.0f32;
    for (wb, ab) in w.chunks_exact(wb).zip(a.chunks_exact(34)) {
        let (c, d, _) = legacy_codes(weight, wb);
        sum += d * read_f16(ab, 0) * idot32(&c, &ab[2..34]) as f32;
    }
    sum
}

/// Affine weights (`x = d·c + m`) against Q8_1 activations: `d·da·Σc·q + m·s`.
fn vec_dot_affine(weight: DType, w: &[u8], a: &[u8]) -> f32 {
    let wb = weight.type_size();
    let mut sum = 0.0f32;
    for (wb, ab) in w.chunks_exact(wb).zip(a.chunks_exact(36)) {
        let (c, d, m) = legacy_codes(weight, wb);
        let da = read_f16(ab, 0);
        sum += d * da * idot32(&c, &ab[4..36]) as f32;
        sum += m * read_f16(ab, 2);
    }
    sum
}

pub(crate) fn vec_dot_q4_0(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_sym(DType::Q4_0, w, a)
}
pub(crate) fn vec_dot_q5_0(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_sym(DType::Q5_0, w, a)
}
pub(crate) fn vec_dot_q8_0(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_sym(DType::Q8_0, w, a)
}
pub(crate) fn vec_dot_q4_1(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_affine(DType::Q4_1, w, a)
}
pub(crate) fn vec_dot_q5_1(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_affine(DType::Q5_1, w, a)
}

// ---------------------------------------------------------------------------------------------
// The k-quants.

/// One k-quant super-block in canonical form: `x = d·sc[g]·u − dm·off[g]` for the 16 values
/// of group `g`.
pub(crate) struct KBlock {
    /// Unsigned codes, 0..=63, in element order.
    pub u: [u8; QK_K],
    /// Integer scale of each 16-value group.
    pub sc: [i16; 16],
    /// Integer offset of each 16-value group.
    pub off: [i16; 16],
    /// Float scale of `sc·u`.
    pub d: f32,
    /// Float scale of `off` (equal to `d` for the symmetric types).
    pub dm: f32,
    /// Whether `dm` is a separate scale (Q2_K, Q4_K, Q5_K) rather than `d`.
    pub affine: bool,
}

/// 2-bit codes packed as Q2_K/Q3_K store them: element `32·j + m` (j = 0..8) is bits
/// `2·(j % 4)` of byte `32·(j / 4) + m`.
fn unpack_2bit(qs: &[u8], u: &mut [u8; QK_K]) {
    for j in 0..8 {
        for m in 0..32 {
            u[32 * j + m] = (qs[32 * (j / 4) + m] >> (2 * (j % 4))) & 3;
        }
    }
}

/// Q3_K scale `j` (0..16), 6-bit unsigned.
pub(crate) fn q3k_scale(s: &[u8], j: usize) -> i16 {
    let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i16
}

/// Decodes one k-quant super-block into canonical form.
pub(crate) fn kblock(weight: DType, b: &[u8]) -> KBlock {
    let mut k = KBlock { u: [0; QK_K], sc: [0; 16], off: [0; 16], d: 0.0, dm: 0.0, affine: false };
    match weight {
        DType::Q2_K => {
            unpack_2bit(&b[16..80], &mut k.u);
            for (g, &s) in b[..16].iter().enumerate() {
                k.sc[g] = (s & 0x0f) as i16;
                k.off[g] = (s >> 4) as i16;
            }
            k.d = read_f16(b, 80);
            k.dm = read_f16(b, 82);
            k.affine = true;
        }
        DType::Q3_K => {
            unpack_2bit(&b[32..96], &mut k.u);
            for (i, u) in k.u.iter_mut().enumerate() {
                // Element 32·j + m has its high bit at bit j of hmask[m]; set means "no −4".
                *u |= ((b[i % 32] >> (i / 32)) & 1) << 2;
            }
            for g in 0..16 {
                k.sc[g] = q3k_scale(&b[96..108], g) - 32;
                k.off[g] = 4 * k.sc[g];
            }
            k.d = read_f16(b, 108);
            k.dm = k.d;
        }
        DType::Q4_K | DType::Q5_K => {
            let scales: &[u8; 12] = b[4..16].try_into().expect("12 scale bytes");
            let qs = if weight == DType::Q4_K { &b[16..144] } else { &b[48..176] };
            for p in 0..4 {
                for l in 0..32 {
                    k.u[64 * p + l] = qs[32 * p + l] & 0x0f;
                    k.u[64 * p + 32 + l] = qs[32 * p + l] >> 4;
                }
            }
            if weight == DType::Q5_K {
                let qh = &b[16..48];
                for (i, u) in k.u.iter_mut().enumerate() {
                    *u |= ((qh[i % 32] >> (i / 32)) & 1) << 4;
                }
            }
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, scales);
                k.sc[2 * j] = sc as i16;
                k.sc[2 * j + 1] = sc as i16;
                k.off[2 * j] = m as i16;
                k.off[2 * j + 1] = m as i16;
            }
            k.d = read_f16(b, 0);
            k.dm = read_f16(b, 2);
            k.affine = true;
        }
        DType::Q6_K => {
            for h in 0..2 {
                let (ql, qh) = (&b[64 * h..64 * h + 64], &b[128 + 32 * h..160 + 32 * h]);
                for l in 0..32 {
                    let e = 128 * h + l;
                    k.u[e] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                    k.u[e + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                    k.u[e + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                    k.u[e + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                }
            }
            for g in 0..16 {
                k.sc[g] = b[192 + g] as i8 as i16;
                k.off[g] = 32 * k.sc[g];
            }
            k.d = read_f16(b, 208);
            k.dm = k.d;
        }
        other => unreachable!("{other} is not a k-quant"),
    }
    k
}

/// One canonical super-block against one Q8_K block.
fn kdot(k: &KBlock, a: &[u8]) -> f32 {
    let da = f32::from_le_bytes([a[0], a[1], a[2], a[3]]);
    let q = &a[4..260];
    let mut s = 0i32;
    let mut m = 0i32;
    for g in 0..16 {
        let gs: i32 = (16 * g..16 * g + 16).map(|i| k.u[i] as i32 * q[i] as i8 as i32).sum();
        s += k.sc[g] as i32 * gs;
        let bsum = i16::from_le_bytes([a[260 + 2 * g], a[261 + 2 * g]]) as i32;
        m += k.off[g] as i32 * bsum;
    }
    if k.affine {
        k.d * da * s as f32 - k.dm * da * m as f32
    } else {
        k.d * da * (s - m) as f32
    }
}

fn vec_dot_k(weight: DType, w: &[u8], a: &[u8]) -> f32 {
    let wb = weight.type_size();
    w.chunks_exact(wb).zip(a.chunks_exact(292)).fold(0.0f32, |s, (wb, ab)| s + kdot(&kblock(weight, wb), ab))
}

pub(crate) fn vec_dot_q2_k(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_k(DType::Q2_K, w, a)
}
pub(crate) fn vec_dot_q3_k(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_k(DType::Q3_K, w, a)
}
pub(crate) fn vec_dot_q4_k(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_k(DType::Q4_K, w, a)
}
pub(crate) fn vec_dot_q5_k(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_k(DType::Q5_K, w, a)
}
pub(crate) fn vec_dot_q6_k(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_k(DType::Q6_K, w, a)
}

// ---------------------------------------------------------------------------------------------
// Matrix products: one dot product per (row, token).

/// `out[t·stride + r − rows.start] = dot(w_r, act_t)` with `dot` a vec_dot of this module.
pub(crate) fn matmul_with(m: &mut MatmulArgs<'_>, dot: fn(&[u8], &[u8], usize) -> f32) {
    for t in 0..m.n {
        let a = &m.act[t * m.act_bytes..(t + 1) * m.act_bytes];
        for (i, r) in m.rows.clone().enumerate() {
            let w = &m.w[r * m.row_bytes..(r + 1) * m.row_bytes];
            m.out[t * m.out_stride + i] = dot(w, a, m.k);
        }
    }
}

macro_rules! matmuls {
    ($($mm:ident => $vd:ident),* $(,)?) => {$(
        pub(crate) fn $mm(m: &mut MatmulArgs<'_>) {
            matmul_with(m, $vd)
        }
    )*};
}

matmuls!(
    matmul_f32 => vec_dot_f32,
    matmul_f16 => vec_dot_f16,
    matmul_bf16 => vec_dot_bf16,
    matmul_q4_0 => vec_dot_q4_0,
    matmul_q4_1 => vec_dot_q4_1,
    matmul_q5_0 => vec_dot_q5_0,
    matmul_q5_1 => vec_dot_q5_1,
    matmul_q8_0 => vec_dot_q8_0,
    matmul_q2_k => vec_dot_q2_k,
    matmul_q3_k => vec_dot_q3_k,
    matmul_q4_k => vec_dot_q4_k,
    matmul_q5_k => vec_dot_q5_k,
    matmul_q6_k => vec_dot_q6_k,
    matmul_q4_s24 => vec_dot_q4_s24,
    matmul_q4_s48 => vec_dot_q4_s48,
    matmul_q8_s24 => vec_dot_q8_s24,
    matmul_q8_s48 => vec_dot_q8_s48,
);

// ---------------------------------------------------------------------------------------------
// The sparse formats (`quant::sparse`).

/// The two integer sums of one N:M block against its two Q8_0 activation blocks `a` (68
/// bytes): kept value `j` of chunk `c` (`j` in `4c..4c + 4`, in input order) meets the
/// activation at its input; inputs `0..32` go to sum 0, `32..64` to sum 1. Also the scale.
pub(crate) fn nm_block_sums(l: NmLayout, w: &[u8], a: &[u8]) -> ([i32; 2], f32) {
    let (q, d) = l.kept_codes(w);
    let mask = l.keep_mask(w);
    let mut s = [0i32; 2];
    for c in 0..8 {
        let mut j = 4 * c;
        for i in 8 * c..8 * c + 8 {
            if mask >> i & 1 == 1 {
                s[i / 32] += q[j] * a[2 + 34 * (i / 32) + i % 32] as i8 as i32;
                j += 1;
            }
        }
    }
    (s, d)
}

/// N:M weights against Q8_0 activations: per block, `d·da₀·s₀` then `d·da₁·s₁` added in
/// order: the same float operations as the dense Q4_0 / Q8_0 oracle on the block's dense
/// equivalent (two 32-value blocks of scale `d`), so the results are its bits.
fn vec_dot_nm(weight: DType, w: &[u8], a: &[u8]) -> f32 {
    let l = NmLayout::of(weight).expect("an N:M type");
    let mut sum = 0.0f32;
    for (wb, ab) in w.chunks_exact(l.bytes()).zip(a.chunks_exact(68)) {
        let (s, d) = nm_block_sums(l, wb, ab);
        sum += d * read_f16(ab, 0) * s[0] as f32;
        sum += d * read_f16(ab, 34) * s[1] as f32;
    }
    sum
}

pub(crate) fn vec_dot_q4_s24(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_nm(DType::Q4_S24, w, a)
}
pub(crate) fn vec_dot_q4_s48(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_nm(DType::Q4_S48, w, a)
}
pub(crate) fn vec_dot_q8_s24(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_nm(DType::Q8_S24, w, a)
}
pub(crate) fn vec_dot_q8_s48(w: &[u8], a: &[u8], _k: usize) -> f32 {
    vec_dot_nm(DType::Q8_S48, w, a)
}

/// The two integer sums of one `Q8_SB` block (metadata `mb`) whose kept codes start at
/// `vals[o]`, against its two Q8_0 activation blocks; codes past the end of `vals` count as
/// zero. Returns the sums and the next block's offset.
pub(crate) fn bitmap_block_sums(mb: &[u8], vals: &[u8], mut o: usize, a: &[u8]) -> ([i32; 2], usize) {
    let mask = bitmap_mask(mb);
    let mut s = [0i32; 2];
    for i in 0..64 {
        if mask >> i & 1 == 1 {
            let q = vals.get(o).map_or(0, |&v| v as i8 as i32);
            s[i / 32] += q * a[2 + 34 * (i / 32) + i % 32] as i8 as i32;
            o += 1;
        }
    }
    (s, o)
}

/// One `Q8_SB` row (metadata and its `c` companion bytes) against one Q8_0 activation row,
/// in the float order of [`vec_dot_nm`] (that of the dense Q8_0 oracle).
pub(crate) fn vec_dot_bitmap(meta: &[u8], vals: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    let mut o = 0;
    for (mb, ab) in meta.chunks_exact(Q8_SB_BYTES).zip(a.chunks_exact(68)) {
        let (s, next) = bitmap_block_sums(mb, vals, o, ab);
        o = next;
        let d = read_f16(mb, 0);
        sum += d * read_f16(ab, 0) * s[0] as f32;
        sum += d * read_f16(ab, 34) * s[1] as f32;
    }
    sum
}

/// The `Q8_SB` product over checked arguments: `m.w` the metadata rows, `values` the companion
/// (`c` bytes per row).
pub(crate) fn matmul_bitmap(m: &mut MatmulArgs<'_>, values: &[u8], c: usize) {
    for t in 0..m.n {
        let a = &m.act[t * m.act_bytes..(t + 1) * m.act_bytes];
        for (i, r) in m.rows.clone().enumerate() {
            let w = &m.w[r * m.row_bytes..(r + 1) * m.row_bytes];
            m.out[t * m.out_stride + i] = vec_dot_bitmap(w, &values[r * c..(r + 1) * c], a);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rounding-error scale of a dot product.

/// The longest chain of f32 additions of a dot product and the sum of the absolute values of
/// its partial products (each integer product times its float scales): what bounds the f32
/// rounding error of any summation order ([`crate::tolerance::Tolerance::sum_reorder`]).
pub(crate) fn dot_error_terms(weight: DType, w: &[u8], a: &[u8], k: usize) -> (usize, f64) {
    let mut mag = 0.0f64;
    match weight {
        DType::F32 | DType::F16 | DType::BF16 => {
            let mut wf = vec![0.0f32; k];
            crate::quant::dequantize_row(weight, w, &mut wf).expect("checked row length");
            for (i, &x) in wf.iter().enumerate() {
                mag += (x as f64 * act_f32(a, i) as f64).abs();
            }
            (k, mag)
        }
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::Q4_1 | DType::Q5_1 => {
            let affine = matches!(weight, DType::Q4_1 | DType::Q5_1);
            let ab = if affine { 36 } else { 34 };
            let qs = if affine { 4 } else { 2 };
            for (wb, ab) in w.chunks_exact(weight.type_size()).zip(a.chunks_exact(ab)) {
                let (c, d, m) = legacy_codes(weight, wb);
                let da = read_f16(ab, 0) as f64;
                let cq: i64 =
                    c.iter().zip(&ab[qs..qs + 32]).map(|(&c, &q)| (c * q as i8 as i32).abs() as i64).sum();
                mag += (d as f64 * da).abs() * cq as f64;
                if affine {
                    mag += (m as f64 * read_f16(ab, 2) as f64).abs();
                }
            }
            (k / 32, mag)
        }
        DType::Q4_S24 | DType::Q4_S48 | DType::Q8_S24 | DType::Q8_S48 => {
            let l = NmLayout::of(weight).expect("an N:M type");
            for (wb, ab) in w.chunks_exact(l.bytes()).zip(a.chunks_exact(68)) {
                let (q, d) = l.kept_codes(wb);
                let mask = l.keep_mask(wb);
                let mut s = [0i64; 2];
                for c in 0..8 {
                    let mut j = 4 * c;
                    for i in 8 * c..8 * c + 8 {
                        if mask >> i & 1 == 1 {
                            s[i / 32] += (q[j] as i64 * ab[2 + 34 * (i / 32) + i % 32] as i8 as i64).abs();
                            j += 1;
                        }
                    }
                }
                mag += (d as f64 * read_f16(ab, 0) as f64).abs() * s[0] as f64;
                mag += (d as f64 * read_f16(ab, 34) as f64).abs() * s[1] as f64;
            }
            (k / 32, mag)
        }
        _ => {
            for (wb, ab) in w.chunks_exact(weight.type_size()).zip(a.chunks_exact(292)) {
                let kb = kblock(weight, wb);
                let da = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]) as f64;
                let (mut s, mut m) = (0i64, 0i64);
                for g in 0..16 {
                    for i in 16 * g..16 * g + 16 {
                        s += (kb.sc[g] as i64 * kb.u[i] as i64 * ab[4 + i] as i8 as i64).abs();
                    }
                    let bsum = i16::from_le_bytes([ab[260 + 2 * g], ab[261 + 2 * g]]) as i64;
                    m += (kb.off[g] as i64 * bsum).abs();
                }
                mag += (kb.d as f64 * da).abs() * s as f64 + (kb.dm as f64 * da).abs() * m as f64;
            }
            (k / QK_K, mag)
        }
    }
}
