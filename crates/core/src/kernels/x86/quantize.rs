//! AVX2 activation quantizers, bit-identical to the reference quantizers (the oracles).
//!
//! Q8_0/Q8_1 follow the run-time activation quantizer of llama.cpp (see the generic
//! `act_q8_block`): codes `x · (127 / amax)` rounded half to even by `vroundps`. Q8_K rounds half
//! to even too (`nearest_int`) and takes its scale from the first element of largest magnitude,
//! with its sign.

use std::arch::x86_64::*;

use super::hsum;

/// Largest lane.
#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

#[inline(always)]
unsafe fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// `v` rounded to the nearest IEEE half, ties to even (as `half::f16::from_f32`).
#[inline(always)]
unsafe fn f16_bits(v: f32) -> u16 {
    _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v))) as u16
}

/// Packs four registers of eight i32 (each within i8) into 32 bytes in element order.
#[inline(always)]
unsafe fn pack_i8(q: [__m256i; 4]) -> __m256i {
    let p01 = _mm256_packs_epi32(q[0], q[1]);
    let p23 = _mm256_packs_epi32(q[2], q[3]);
    let p = _mm256_packs_epi16(p01, p23);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// One 32-value Q8_0 block: (scale, codes, as i32 in four registers).
#[inline(always)]
unsafe fn q8_0_block(x: *const f32) -> (f32, [__m256i; 4]) {
    let v = [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ];
    let m = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
    let amax = hmax(m);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let mut q = [_mm256_setzero_si256(); 4];
    for (q, &v) in q.iter_mut().zip(&v) {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(v, idv));
        *q = _mm256_cvtps_epi32(r);
    }
    (d, q)
}

/// # Safety
/// `out` holds exactly the Q8_0 bytes of `x` (a whole number of blocks); AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0(x: &[f32], out: &mut [u8]) {
    let o = out.as_mut_ptr();
    for b in 0..x.len() / 32 {
        let (d, q) = q8_0_block(x.as_ptr().add(32 * b));
        let ob = o.add(34 * b);
        (ob as *mut u16).write_unaligned(f16_bits(d).to_le());
        _mm256_storeu_si256(ob.add(2) as *mut __m256i, pack_i8(q));
    }
}

/// # Safety
/// `out` holds exactly the N:M lane kernels' activation bytes of `x` (36 per 32 values: the
/// scale as f32, the codes `q + 128`); AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8u(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / 32;
    q8_0(x, &mut out[..34 * nb]);
    crate::kernels::packed::q8_0_to_q8u(out, nb);
}

/// 36-byte blocks: the Q8_0 block's scale, then `second(d, Σq)` as two bytes, then the codes.
#[inline(always)]
unsafe fn q8_with_sum(x: &[f32], out: &mut [u8], second: impl Fn(f32, f32) -> u16) {
    let o = out.as_mut_ptr();
    for b in 0..x.len() / 32 {
        let (d, q) = q8_0_block(x.as_ptr().add(32 * b));
        let ob = o.add(36 * b);
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        // The lane sums are small integers, exact in f32 (|Σq| ≤ 32·127).
        let sum = hsum(_mm256_cvtepi32_ps(s));
        (ob as *mut u16).write_unaligned(f16_bits(d).to_le());
        (ob.add(2) as *mut u16).write_unaligned(second(d, sum).to_le());
        _mm256_storeu_si256(ob.add(4) as *mut __m256i, pack_i8(q));
    }
}

/// # Safety
/// `out` holds exactly the Q8_1 bytes of `x` (a whole number of blocks); AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_1(x: &[f32], out: &mut [u8]) {
    q8_with_sum(x, out, |d, sum| f16_bits(d * sum))
}

/// # Safety
/// `out` holds exactly the Q8_K bytes of `x` (a whole number of blocks); AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_k(x: &[f32], out: &mut [u8]) {
    let o = out.as_mut_ptr();
    for b in 0..x.len() / 256 {
        let xb = x.as_ptr().add(256 * b);
        let ob = o.add(292 * b);
        let mut m = _mm256_setzero_ps();
        for i in 0..32 {
            m = _mm256_max_ps(m, abs(_mm256_loadu_ps(xb.add(8 * i))));
        }
        let amax = hmax(m);
        if amax == 0.0 {
            std::ptr::write_bytes(ob, 0, 292);
            continue;
        }
        // The first element of largest magnitude, with its sign.
        let target = _mm256_set1_ps(amax);
        let mut max = amax;
        for i in 0..32 {
            let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(abs(_mm256_loadu_ps(xb.add(8 * i))), target);
            let bits = _mm256_movemask_ps(eq);
            if bits != 0 {
                max = *xb.add(8 * i + bits.trailing_zeros() as usize);
                break;
            }
        }
        let iscale = -127.0 / max;
        let isv = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        let ones = _mm256_set1_epi8(1);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (g, sum) in sums.iter_mut().enumerate() {
            let mut q = [_mm256_setzero_si256(); 4];
            for (i, q) in q.iter_mut().enumerate() {
                let v = _mm256_mul_ps(_mm256_loadu_ps(xb.add(32 * g + 8 * i)), isv);
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                *q = _mm256_min_epi32(_mm256_cvtps_epi32(r), top);
            }
            let p = pack_i8(q);
            _mm256_storeu_si256(ob.add(4 + 32 * g) as *mut __m256i, p);
            // Lanes 0..4: partial sums of group 2g, lanes 4..8: of group 2g + 1.
            *sum = _mm256_madd_epi16(_mm256_maddubs_epi16(ones, p), _mm256_set1_epi16(1));
        }
        // Reduce to one sum per 16-value group: after two rounds of horizontal adds the low
        // 128-bit lane holds the even groups and the high lane the odd ones.
        let h0 = _mm256_hadd_epi32(sums[0], sums[1]);
        let h1 = _mm256_hadd_epi32(sums[2], sums[3]);
        let h2 = _mm256_hadd_epi32(sums[4], sums[5]);
        let h3 = _mm256_hadd_epi32(sums[6], sums[7]);
        let g0 = _mm256_hadd_epi32(h0, h1);
        let g1 = _mm256_hadd_epi32(h2, h3);
        let g = _mm256_packs_epi32(g0, g1);
        let (even, odd) = (_mm256_castsi256_si128(g), _mm256_extracti128_si256::<1>(g));
        _mm_storeu_si128(ob.add(260) as *mut __m128i, _mm_unpacklo_epi16(even, odd));
        _mm_storeu_si128(ob.add(276) as *mut __m128i, _mm_unpackhi_epi16(even, odd));
        (ob as *mut f32).write_unaligned(1.0 / iscale);
    }
}

/// # Safety
/// `out` holds exactly the packed-kernel activation bytes of `x` (36 per 32 values: Q8_0's
/// scale, the codes' sum as i16, the codes); AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8s(x: &[f32], out: &mut [u8]) {
    q8_with_sum(x, out, |_, sum| sum as i16 as u16)
}
