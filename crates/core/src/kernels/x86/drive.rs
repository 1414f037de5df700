//! The two drivers that turn a [`Fmt`] into a dot product and a register-tiled matrix
//! product. Only ever inlined into `#[target_feature]` entry points.

use std::arch::x86_64::*;

use super::{hsum, Fmt};
use crate::kernels::MatmulArgs;

/// Dot product of one weight row and one activation row of `k` values.
///
/// # Safety
/// `w` and `a` hold the bytes of `k` values in their formats; AVX2, FMA and F16C.
#[inline(always)]
pub(super) unsafe fn vec_dot<F: Fmt>(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = k / F::BLOCK;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut b = 0;
    while b + F::UNROLL <= nb {
        // Prefetch 1 KiB ahead (into the next rows, which callers usually dot next).
        prefetch(wp.wrapping_add(b * F::W + 1024), F::UNROLL * F::W);
        for (i, acc) in acc.iter_mut().enumerate().take(F::UNROLL) {
            let pw = F::pw(wp.add((b + i) * F::W));
            let pa = F::pa(ap.add((b + i) * F::A));
            *acc = F::dot(&pw, &pa, *acc);
        }
        b += F::UNROLL;
    }
    while b < nb {
        acc[0] = F::dot(&F::pw(wp.add(b * F::W)), &F::pa(ap.add(b * F::A)), acc[0]);
        b += 1;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let rem = k - nb * F::BLOCK;
    let mut sum = hsum(s);
    if rem > 0 {
        sum += F::tail(wp.add(nb * F::W), ap.add(nb * F::A), rem);
    }
    sum
}

/// The matrix product of [`MatmulArgs`], in register tiles of 4 rows × 3 tokens (smaller
/// tiles at the edges; a row at a time for one token where [`Fmt::MV_ROWS`] is 1).
///
/// # Safety
/// `m` satisfies the bounds documented on [`MatmulArgs`]; AVX2, FMA and F16C.
#[inline(always)]
pub(super) unsafe fn matmul<F: Fmt>(m: &mut MatmulArgs<'_>) {
    if m.n == 1 && F::MV_ROWS == 1 {
        for r in m.rows.clone() {
            F::tile::<1, 1>(m, r, 0);
        }
    } else {
        tiles::<F, 4, 3>(m);
    }
}

#[inline(always)]
unsafe fn tiles<F: Fmt, const M: usize, const N: usize>(m: &mut MatmulArgs<'_>) {
    let mut r = m.rows.start;
    while r + M <= m.rows.end {
        tokens::<F, M, N>(m, r);
        r += M;
    }
    while r < m.rows.end {
        tokens::<F, 1, N>(m, r);
        r += 1;
    }
}

#[inline(always)]
unsafe fn tokens<F: Fmt, const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r: usize) {
    let mut t = 0;
    while t + N <= m.n {
        F::tile::<M, N>(m, r, t);
        t += N;
    }
    while t + 2 <= m.n {
        F::tile::<M, 2>(m, r, t);
        t += 2;
    }
    if t < m.n {
        F::tile::<M, 1>(m, r, t);
    }
}

/// Rows `r0..r0 + M` against tokens `t0..t0 + N`: for every block, unpack the `M` weight
/// blocks once, then for each token unpack its activation block once and add it into the `M`
/// accumulators of that token.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn tile<F: Fmt, const M: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    r0: usize,
    t0: usize,
) {
    let nb = m.k / F::BLOCK;
    let (rb, ab) = (m.row_bytes, m.act_bytes);
    let w0 = m.w.as_ptr().add(r0 * rb);
    let a0 = m.act.as_ptr().add(t0 * ab);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    // SAFETY (of the zeroed value): all-zero is a valid `Pw` (a requirement of `Fmt`).
    let mut pw: [F::Pw; M] = std::mem::zeroed();
    // One token streams every weight once: prefetch the rows of the tile after next (four
    // rows ahead for single-row tiles), at least 4 KiB ahead, which the hardware prefetcher
    // alone does not do for short rows. Past the matrix end the addresses are never read.
    let ahead = if M == 1 { 4 * rb } else { 2 * M * rb }.max(4096);
    for b in 0..nb {
        for (r, pw) in pw.iter_mut().enumerate() {
            let p = w0.add(r * rb + b * F::W);
            if N == 1 {
                prefetch(p.wrapping_add(ahead), F::W);
            }
            *pw = F::pw(p);
        }
        for t in 0..N {
            let pa = F::pa(a0.add(t * ab + b * F::A));
            for r in 0..M {
                acc[r][t] = F::dot(&pw[r], &pa, acc[r][t]);
            }
        }
    }
    let rem = m.k - nb * F::BLOCK;
    let col = r0 - m.rows.start;
    if M == 4 && rem == 0 {
        // Four rows of a token are adjacent outputs: reduce them together.
        for t in 0..N {
            let s = hsum4([acc[0][t], acc[1][t], acc[2][t], acc[3][t]]);
            // In bounds: rows r0..r0 + 4 are in the range (MatmulArgs).
            _mm_storeu_ps(m.out.as_mut_ptr().add((t0 + t) * m.out_stride + col), s);
        }
        return;
    }
    for (r, acc) in acc.iter().enumerate() {
        for (t, &v) in acc.iter().enumerate() {
            let mut s = hsum(v);
            if rem > 0 {
                s += F::tail(w0.add(r * rb + nb * F::W), a0.add(t * ab + nb * F::A), rem);
            }
            m.out[(t0 + t) * m.out_stride + col + r] = s;
        }
    }
}

/// The lane sums of four registers, each summed as [`hsum`] does (`(l0 + l4) + (l2 + l6)` plus
/// `(l1 + l5) + (l3 + l7)`), so the results are its bits; in 14 operations instead of 4 × 6.
#[inline(always)]
pub(super) unsafe fn hsum4(v: [__m256; 4]) -> __m128 {
    // [lo_i + hi_i | lo_j + hi_j]: the four-lane partial sums u of two registers.
    let u01 =
        _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(v[0], v[1]), _mm256_permute2f128_ps::<0x31>(v[0], v[1]));
    let u23 =
        _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(v[2], v[3]), _mm256_permute2f128_ps::<0x31>(v[2], v[3]));
    // Per 128-bit lane: [u0 + u2, u1 + u3] of register 0 and 2 (low lane), 1 and 3 (high).
    let a = _mm256_shuffle_ps::<0b01_00_01_00>(u01, u23);
    let b = _mm256_shuffle_ps::<0b11_10_11_10>(u01, u23);
    let c = _mm256_add_ps(a, b);
    // (u0 + u2) + (u1 + u3): low lane [s0, s2, s0, s2], high lane [s1, s3, s1, s3].
    let d = _mm256_add_ps(_mm256_shuffle_ps::<0b10_00_10_00>(c, c), _mm256_shuffle_ps::<0b11_01_11_01>(c, c));
    _mm_unpacklo_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps::<1>(d))
}

/// Prefetches the cache lines of `len` bytes at `p` into L1 (a hint: never faults, so `p` may
/// point past the end of the data).
#[inline(always)]
unsafe fn prefetch(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off) as *const i8);
        off += 64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsum4_gives_hsum_bits() {
        if !crate::kernels::Tier::Avx2.is_supported() {
            return;
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Wide magnitudes, both signs: sums round differently in other orders.
            f32::from_bits(((x >> 33) as u32 & 0x807f_ffff) | (((x >> 20) as u32 % 40 + 107) << 23))
        };
        for _ in 0..10_000 {
            let v: [[f32; 8]; 4] = std::array::from_fn(|_| std::array::from_fn(|_| next()));
            // SAFETY: AVX2 is supported (checked above).
            let (got, want) = unsafe {
                let r = v.map(|l| _mm256_loadu_ps(l.as_ptr()));
                let mut got = [0.0f32; 4];
                _mm_storeu_ps(got.as_mut_ptr(), hsum4(r));
                (got, r.map(|r| hsum(r)))
            };
            assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "{v:?}");
        }
    }
}
