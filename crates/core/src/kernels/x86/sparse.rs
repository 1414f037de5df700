//! Kernels of the sparse formats (`quant::sparse`) against Q8_0 activations: the N:M types
//! (`Q4_S24`, `Q4_S48`, `Q8_S24`, `Q8_S48`) and the bitmap type `Q8_SB`.
//!
//! Every weight block (64 inputs, 32 kept values for N:M) is expanded in registers into the
//! 64 dense codes of its inputs (zeros where dropped), then dotted with the block's two Q8_0
//! activation blocks as a dense block would be. One token reads only the sparse bytes; several
//! tokens reuse each expanded block across a register tile of tokens.
//!
//! - **AVX-512** (F, BW, VNNI, VBMI, VBMI2): the 8 chunk codes of a block become its 64-bit
//!   keep-mask with one `vpmultishiftqb` (each code's bits into a byte) and one `vpermb` /
//!   `vpermi2b` (code → 8-bit chunk mask, the 36- or 70-entry table in one or two registers);
//!   `vpexpandb` places the kept codes (for `Q8_SB` straight from memory with
//!   `vpexpandb zmm{k}, m512`, which reads only the kept bytes). The dense codes are made
//!   unsigned by a bias `B` (8 for 4-bit values, 128 for 8-bit; dropped inputs get exactly
//!   `B`), so one `vpdpbusd` per block and token gives `Σ (w + B)·a`, started from `−B·Σa`
//!   (per group of four activations, computed once per activation block and token).
//! - **AVX2**: N:M through the shared tile drivers ([`super::drive`]): each 32-input half
//!   is one `vpshufb` of its 16 kept codes with a control vector gathered from a per-code
//!   table (every chunk keeps exactly four values, at offsets `4c` of the kept list); `Q8_SB`
//!   with a per-mask-byte control table and running popcount offsets. One token (decoding)
//!   does not expand N:M blocks: [`super::compressed`] compresses each block's activations to
//!   its kept ones instead.
//!
//! Both tiers add the same integer products as the scalar oracle, in another float order
//! (lanes, then a horizontal sum): they agree within `Tolerance::sum_reorder`.
//!
//! Invalid N:M codes (refused by `quant::sparse::validate`) index tables padded to the codes'
//! bit width and decode to "keep nothing": no out-of-bounds read. `Q8_SB` rows keeping more
//! than `c` values read no value past their row's `c` bytes (the excess counts as zero).

#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::{compressed, dot_u8i8, drive, h2f_entry, h2f_splat, hsum, load128, Fmt};
use crate::kernels::{MatmulArgs, Out};
use crate::quant::sparse::{CTRL_2_4, CTRL_4_8, CTRL_BYTE, MASK_OF_CODE_2_4, MASK_OF_CODE_4_8};

/// Whether the CPU has what the AVX-512 sparse kernels use (over the AVX-512 VNNI tier).
pub(super) fn avx512_detected() -> bool {
    super::avx512::detected()
        && is_x86_feature_detected!("avx512vbmi")
        && is_x86_feature_detected!("avx512vbmi2")
}

/// 64-byte aligned table for one `vpermb` register.
#[repr(C, align(64))]
struct Table64([u8; 64]);
/// Two registers for `vpermi2b`.
#[repr(C, align(64))]
struct Table128([u8; 128]);

static PERM_2_4: Table64 = Table64(MASK_OF_CODE_2_4);
static PERM_4_8: Table128 = Table128(MASK_OF_CODE_4_8);

// ---------------------------------------------------------------------------------------------
// AVX2.

/// An N:M block expanded to 64 signed codes in two halves, their magnitudes and the scale.
#[derive(Clone, Copy)]
pub(super) struct SW {
    w: [__m256i; 2],
    aw: [__m256i; 2],
    d: __m256,
}

/// Two Q8_0 activation blocks (the inputs of one 64-input block).
#[derive(Clone, Copy)]
pub(super) struct SA {
    q: [__m256i; 2],
    d: [__m256; 2],
}

/// The 64-input block `w` against the activation blocks `a`: per half, as the dense Q8_0
/// AVX2 kernel does (magnitudes times signed activations, pairs summed, then a fused
/// multiply-add by the product of the scales).
#[inline(always)]
unsafe fn dot_sw(w: &SW, a: &SA, mut acc: __m256) -> __m256 {
    for h in 0..2 {
        let p = dot_u8i8(w.aw[h], _mm256_sign_epi8(a.q[h], w.w[h]));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(w.d, a.d[h]), acc);
    }
    acc
}

#[inline(always)]
unsafe fn pa_pair(p: *const u8) -> SA {
    SA {
        q: [_mm256_loadu_si256(p.add(2) as *const __m256i), _mm256_loadu_si256(p.add(36) as *const __m256i)],
        d: [h2f_splat(p), h2f_splat(p.add(34))],
    }
}

/// The `vpshufb` controls of half `h` of an N:M block whose code bit string is `bits`:
/// chunk `4h + j`'s control in qword `j`, offset by `4·(j % 2)`... placed per 128-bit lane
/// (chunks `4h, 4h + 1` in the low lane, `4h + 2, 4h + 3` in the high lane, which both see
/// the half's 16 kept codes).
#[inline(always)]
unsafe fn nm_controls<const B: i64>(bits: __m256i, h: usize, table: *const u64) -> __m256i {
    let shifts = _mm256_setr_epi64x(0, B, 2 * B, 3 * B);
    let s = _mm256_add_epi64(shifts, _mm256_set1_epi64x(4 * B * h as i64));
    let idx = _mm256_and_si256(_mm256_srlv_epi64(bits, s), _mm256_set1_epi64x((1 << B) - 1));
    // SAFETY (of the gather): indices are below 2^B, the table's length.
    let ctl = _mm256_i64gather_epi64::<8>(table as *const i64, idx);
    // Chunk j of the half takes kept codes 4j..4j + 4 of the half's 16.
    let off = _mm256_setr_epi64x(0, 0x0404_0404_0404_0404, 0x0808_0808_0808_0808, 0x0c0c_0c0c_0c0c_0c0c);
    // Dropped inputs keep their high bit (0x80 + at most 12), so they still read as zero.
    _mm256_add_epi8(ctl, off)
}

/// Expands an N:M block with `B`-bit codes (6 or 7) and `Q4` (4-bit) or 8-bit values at
/// offset `QS`.
#[inline(always)]
unsafe fn pw_nm<const B: i64, const QS: usize, const Q4: bool>(p: *const u8, table: *const u64) -> SW {
    let bits = _mm256_set1_epi64x((p.add(2) as *const i64).read_unaligned());
    let src = if Q4 {
        let x = _mm256_broadcastsi128_si256(load128(p.add(QS)));
        let m = _mm256_set1_epi8(0x0f);
        let eight = _mm256_set1_epi8(8);
        [
            _mm256_sub_epi8(_mm256_and_si256(x, m), eight),
            _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16::<4>(x), m), eight),
        ]
    } else {
        [
            _mm256_broadcastsi128_si256(load128(p.add(QS))),
            _mm256_broadcastsi128_si256(load128(p.add(QS + 16))),
        ]
    };
    let w0 = _mm256_shuffle_epi8(src[0], nm_controls::<B>(bits, 0, table));
    let w1 = _mm256_shuffle_epi8(src[1], nm_controls::<B>(bits, 1, table));
    SW { w: [w0, w1], aw: [_mm256_abs_epi8(w0), _mm256_abs_epi8(w1)], d: h2f_splat(p) }
}

macro_rules! nm_fmt {
    ($name:ident, $w:expr, $b:expr, $qs:expr, $q4:expr, $table:ident) => {
        pub(super) struct $name;
        // SAFETY: `pw` reads one block (`W` bytes; the code field as 8 bytes from offset 2,
        // within the block), `pa` two Q8_0 blocks; all-zero `SW` is valid.
        unsafe impl Fmt for $name {
            const BLOCK: usize = 64;
            const W: usize = $w;
            const A: usize = 68;
            const UNROLL: usize = 2;
            const MV_ROWS: usize = 1;
            type Pw = SW;
            type Pa = SA;
            #[inline(always)]
            unsafe fn pw(p: *const u8) -> SW {
                pw_nm::<$b, $qs, $q4>(p, $table.as_ptr())
            }
            #[inline(always)]
            unsafe fn pa(p: *const u8) -> SA {
                pa_pair(p)
            }
            #[inline(always)]
            unsafe fn dot(w: &SW, a: &SA, acc: __m256) -> __m256 {
                dot_sw(w, a, acc)
            }
        }
    };
}

nm_fmt!(Q4S24, 24, 6, 8, true, CTRL_2_4);
nm_fmt!(Q4S48, 25, 7, 9, true, CTRL_4_8);
nm_fmt!(Q8S24, 40, 6, 8, false, CTRL_2_4);
nm_fmt!(Q8S48, 41, 7, 9, false, CTRL_4_8);

/// Tokens from which the products expand a tile's rows once for all tokens.
const PROMPT_TOKENS: usize = 4;

/// Rows `r0..r0 + M`, expanded (`w[i·nb + b]`: block `b` of row `i`), against tokens
/// `t0..t0 + N`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_expanded_avx2<const M: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    w: &[SW],
    r0: usize,
    t0: usize,
) {
    let nb = m.k / 64;
    let a0 = m.act.as_ptr().add(t0 * m.act_bytes);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    for b in 0..nb {
        for t in 0..N {
            let a = pa_pair(a0.add(t * m.act_bytes + 68 * b));
            for r in 0..M {
                // In bounds: the caller expanded M rows of nb blocks.
                acc[r][t] = dot_sw(w.get_unchecked(r * nb + b), &a, acc[r][t]);
            }
        }
    }
    let col = r0 - m.rows.start;
    for r in 0..M {
        for t in 0..N {
            m.out[(t0 + t) * m.out_stride + col + r] = hsum(acc[r][t]);
        }
    }
}

/// Expands one row's blocks for [`matmul_prompt_avx2`] (a trait, not a closure: closures are
/// not compiled with their caller's target features).
trait ExpandRow {
    /// Writes the `nb` expanded blocks of row `r` of `m` to `out`.
    unsafe fn expand(&self, m: &MatmulArgs<'_>, r: usize, out: &mut [SW]);
}

/// N:M rows of format `F`.
struct NmRows<F>(std::marker::PhantomData<F>);

impl<F: Fmt<Pw = SW>> ExpandRow for NmRows<F> {
    #[inline(always)]
    unsafe fn expand(&self, m: &MatmulArgs<'_>, r: usize, out: &mut [SW]) {
        let p = m.w.as_ptr().add(r * m.row_bytes);
        for (b, o) in out.iter_mut().enumerate() {
            *o = F::pw(p.add(b * F::W));
        }
    }
}

/// `Q8_SB` rows with their companion values (`c` per row).
struct BitmapRows<'a> {
    values: &'a [u8],
    c: usize,
}

impl ExpandRow for BitmapRows<'_> {
    #[inline(always)]
    unsafe fn expand(&self, m: &MatmulArgs<'_>, r: usize, out: &mut [SW]) {
        let mb = m.w.as_ptr().add(r * m.row_bytes);
        let vals = self.values.as_ptr().add(r * self.c);
        let mut o = 0;
        for (b, w) in out.iter_mut().enumerate() {
            let (x, next) = pw_bitmap_avx2(mb.add(10 * b), vals, o, self.c);
            *w = x;
            o = next;
        }
    }
}

/// Several tokens: every 4-row tile is expanded once into a buffer by `e`
/// (the row's `nb` blocks), then meets all tokens in register tiles of 4 rows × 2 tokens.
#[inline(always)]
unsafe fn matmul_prompt_avx2<E: ExpandRow>(m: &mut MatmulArgs<'_>, e: &E) {
    let nb = m.k / 64;
    // SAFETY (of the zeroed value): all-zero is a valid `SW` (plain vectors).
    let mut w: Vec<SW> = vec![std::mem::zeroed(); 4 * nb];
    let mut r = m.rows.start;
    while r < m.rows.end {
        let rows = (m.rows.end - r).min(4);
        for i in 0..rows {
            e.expand(m, r + i, &mut w[i * nb..(i + 1) * nb]);
        }
        let mut t = 0;
        macro_rules! run {
            ($m:literal) => {{
                while t + 2 <= m.n {
                    tile_expanded_avx2::<$m, 2>(m, &w, r, t);
                    t += 2;
                }
                if t < m.n {
                    tile_expanded_avx2::<$m, 1>(m, &w, r, t);
                }
            }};
        }
        match rows {
            4 => run!(4),
            3 => run!(3),
            2 => run!(2),
            _ => run!(1),
        }
        r += rows;
    }
}

macro_rules! avx2_entries {
    ($($fmt:ty, $mv:expr => $vd:ident, $mm:ident;)*) => {$(
        /// # Safety
        /// Rows of exactly `k` values of their formats; AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $vd(w: &[u8], a: &[u8], k: usize) -> f32 {
            drive::vec_dot::<$fmt>(w, a, k)
        }
        /// # Safety
        /// `m` satisfies the bounds of [`MatmulArgs`]; AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $mm(m: &mut MatmulArgs<'_>) {
            if m.n >= PROMPT_TOKENS {
                matmul_prompt_avx2(m, &NmRows::<$fmt>(std::marker::PhantomData));
            } else if m.n == 1 {
                $mv(m)
            } else {
                drive::matmul::<$fmt>(m)
            }
        }
    )*};
}

avx2_entries! {
    Q4S24, compressed::matvec::<24, 6, true> => avx2_vec_dot_q4_s24, avx2_matmul_q4_s24;
    Q4S48, compressed::matvec::<25, 7, true> => avx2_vec_dot_q4_s48, avx2_matmul_q4_s48;
    Q8S24, compressed::matvec::<40, 6, false> => avx2_vec_dot_q8_s24, avx2_matmul_q8_s24;
    Q8S48, compressed::matvec::<41, 7, false> => avx2_vec_dot_q8_s48, avx2_matmul_q8_s48;
}

/// Expands one `Q8_SB` block: metadata at `mb`, kept codes from `vals[o..]`, the row's values
/// ending at `vals[c]`. Returns the block and the next block's offset.
#[inline(always)]
unsafe fn pw_bitmap_avx2(mb: *const u8, vals: *const u8, o: usize, c: usize) -> (SW, usize) {
    let mask = (mb.add(2) as *const u64).read_unaligned();
    let next = o + mask.count_ones() as usize;
    // Chunk j reads 8 bytes from its first kept code (at most 56 codes in): in bounds while
    // `o + 64 <= c`;
    // otherwise read from a zero-padded copy of what is left of the row (values past `c`
    // count as zero, as in the oracle).
    let mut tail = [0u8; 64];
    let src = if o + 64 <= c {
        vals.add(o)
    } else {
        let n = c.saturating_sub(o).min(64);
        std::ptr::copy_nonoverlapping(vals.add(o.min(c)), tail.as_mut_ptr(), n);
        tail.as_ptr()
    };
    let mut w = [_mm256_setzero_si256(); 2];
    let mut off = 0usize;
    for (h, w) in w.iter_mut().enumerate() {
        let mut q = [0i64; 4];
        let mut ctl = [0i64; 4];
        for j in 0..4 {
            let byte = (mask >> (8 * (4 * h + j))) as u8;
            q[j] = (src.add(off) as *const i64).read_unaligned();
            ctl[j] = CTRL_BYTE[byte as usize] as i64 + if j % 2 == 1 { 0x0808_0808_0808_0808 } else { 0 };
            off += byte.count_ones() as usize;
        }
        let q = _mm256_setr_epi64x(q[0], q[1], q[2], q[3]);
        let ctl = _mm256_setr_epi64x(ctl[0], ctl[1], ctl[2], ctl[3]);
        *w = _mm256_shuffle_epi8(q, ctl);
    }
    let sw = SW { w, aw: [_mm256_abs_epi8(w[0]), _mm256_abs_epi8(w[1])], d: h2f_splat(mb) };
    (sw, next)
}

/// Expands one `Q8_SB` block (metadata at `mb`, mask `mask`) whose kept codes start at `v`,
/// with 64 bytes from `v` readable: each 128-bit lane is one 16-byte load from its first
/// chunk's kept codes, shuffled by the two chunks' controls (the second chunk's ranks moved
/// on by the first chunk's count), so nothing is assembled from 8-byte pieces.
#[inline(always)]
unsafe fn pw_bitmap_lanes(mb: *const u8, v: *const u8, mask: u64) -> SW {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut w = [_mm256_setzero_si256(); 2];
    let mut off = 0usize;
    for (h, w) in w.iter_mut().enumerate() {
        let m = (mask >> (32 * h)) as u32;
        let byte = |i: u32| (m >> (8 * i)) as u8;
        // Dropped inputs' control bytes (0x80) stay at or above 0x80 after adding ≤ 8.
        let ctl = |i: u32| CTRL_BYTE[byte(i) as usize] as i64;
        let moved =
            |i: u32| (CTRL_BYTE[byte(i) as usize] + u64::from(byte(i - 1).count_ones()) * ONES) as i64;
        let ctl = _mm256_setr_epi64x(ctl(0), moved(1), ctl(2), moved(3));
        let first = (m & 0xffff).count_ones() as usize;
        let src = _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(load128(v.add(off))),
            load128(v.add(off + first)),
        );
        *w = _mm256_shuffle_epi8(src, ctl);
        off += m.count_ones() as usize;
    }
    SW { w, aw: [_mm256_abs_epi8(w[0]), _mm256_abs_epi8(w[1])], d: h2f_splat(mb) }
}

/// One `Q8_SB` row against tokens `t0..t0 + N`.
#[inline(always)]
unsafe fn bitmap_row_avx2<const N: usize>(
    m: &mut MatmulArgs<'_>,
    values: &[u8],
    c: usize,
    r: usize,
    t0: usize,
) {
    let nb = m.k / 64;
    let mb = m.w.as_ptr().add(r * m.row_bytes);
    let vals = values.as_ptr().add(r * c);
    let a0 = m.act.as_ptr().add(t0 * m.act_bytes);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut o = 0;
    // Blocks whose 64 bytes from their first kept code lie in `values` and whose kept codes
    // lie in the row take the lane loads; the rest the exact piecewise path.
    let room = values.len() - r * c;
    for b in 0..nb {
        let mask = (mb.add(10 * b + 2) as *const u64).read_unaligned();
        let count = mask.count_ones() as usize;
        let (w, next) = if o + 64 <= room && o + count <= c {
            (pw_bitmap_lanes(mb.add(10 * b), vals.add(o), mask), o + count)
        } else {
            pw_bitmap_avx2(mb.add(10 * b), vals, o, c)
        };
        o = next;
        for (t, acc) in acc.iter_mut().enumerate() {
            *acc = dot_sw(&w, &pa_pair(a0.add(t * m.act_bytes + 68 * b)), *acc);
        }
    }
    let col = r - m.rows.start;
    for (t, &v) in acc.iter().enumerate() {
        m.out[(t0 + t) * m.out_stride + col] = hsum(v);
    }
}

/// # Safety
/// `m` satisfies the bounds of [`MatmulArgs`] with `w` the `Q8_SB` metadata; `values` holds
/// `c` bytes for every row up to `m.rows.end`; AVX2, FMA, F16C and POPCNT.
#[target_feature(enable = "avx2,fma,f16c,popcnt")]
pub(super) unsafe fn avx2_matmul_bitmap(m: &mut MatmulArgs<'_>, values: &[u8], c: usize) {
    if m.n >= PROMPT_TOKENS {
        return matmul_prompt_avx2(m, &BitmapRows { values, c });
    }
    for r in m.rows.clone() {
        let mut t = 0;
        while t + 4 <= m.n {
            bitmap_row_avx2::<4>(m, values, c, r, t);
            t += 4;
        }
        while t < m.n {
            bitmap_row_avx2::<1>(m, values, c, r, t);
            t += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512.

/// A weight block made unsigned for `vpdpbusd`: `w + B` at kept inputs, `B` at dropped ones.
#[derive(Clone, Copy)]
struct W512 {
    w: __m512i,
    d: __m512,
}

/// Two activation blocks: 64 codes, `−B·Σ` of every four codes, the scales (eight lanes each).
#[derive(Clone, Copy)]
struct A512 {
    q: __m512i,
    neg: __m512i,
    d: __m512,
}

#[inline(always)]
unsafe fn a512(p: *const u8, bias: i8) -> A512 {
    let lo = _mm256_loadu_si256(p.add(2) as *const __m256i);
    let hi = _mm256_loadu_si256(p.add(36) as *const __m256i);
    let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
    let sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(bias), q);
    let neg = _mm512_sub_epi32(_mm512_setzero_si512(), sum);
    let d =
        _mm512_mask_broadcastss_ps(_mm512_set1_ps(*h2f_entry(p)), 0xff00, _mm_load_ss(h2f_entry(p.add(34))));
    A512 { q, neg, d }
}

/// The rows of a sparse matrix as seen by the AVX-512 tile: a cursor per row that yields its
/// blocks in order.
trait Rows512 {
    /// The unsigned bias of the expanded codes (8 or 128, as a byte).
    const BIAS: i8;
    /// Per-call context (the companion values for `Q8_SB`).
    type Ctx: Copy;
    /// A row's position.
    type Cur: Copy;
    /// The cursor of row `r` of `m`.
    unsafe fn cursor(m: &MatmulArgs<'_>, ctx: Self::Ctx, r: usize) -> Self::Cur;
    /// The next block of the row.
    unsafe fn next(cur: &mut Self::Cur) -> W512;
    /// Prefetch hints for other streams than the rows (block `b` of `nb` of the tile of rows
    /// `r0..r0 + m`).
    #[inline(always)]
    unsafe fn prefetch(_ctx: Self::Ctx, _r0: usize, _m: usize, _b: usize, _nb: usize) {}
}

/// The 64-bit keep-mask of the N:M block at `p`: its code bit string, one `vpmultishiftqb`
/// (byte j: the bits from offset `B·j`) and one table lookup (`vpermb` uses the low 6 bits of
/// each index byte, `vpermi2b` the low 7).
#[inline(always)]
unsafe fn nm_mask512<const B: u64>(p: *const u8) -> __mmask64 {
    let bits = (p.add(2) as *const i64).read_unaligned();
    let shifts = _mm512_set1_epi64((0..8).fold(0i64, |s, j| s | (((B * j) as i64) << (8 * j))));
    let idx = _mm512_multishift_epi64_epi8(shifts, _mm512_set1_epi64(bits));
    let m = if B == 6 {
        _mm512_permutexvar_epi8(idx, _mm512_loadu_si512(PERM_2_4.0.as_ptr() as *const _))
    } else {
        let t = PERM_4_8.0.as_ptr();
        _mm512_permutex2var_epi8(
            _mm512_loadu_si512(t as *const _),
            idx,
            _mm512_loadu_si512(t.add(64) as *const _),
        )
    };
    _cvtu64_mask64(_mm_cvtsi128_si64(_mm512_castsi512_si128(m)) as u64)
}

struct Nm512<const B: u64, const W: usize, const QS: usize, const Q4: bool>;

impl<const B: u64, const W: usize, const QS: usize, const Q4: bool> Rows512 for Nm512<B, W, QS, Q4> {
    const BIAS: i8 = if Q4 { 8 } else { -128 };
    type Ctx = ();
    type Cur = *const u8;
    #[inline(always)]
    unsafe fn cursor(m: &MatmulArgs<'_>, _: (), r: usize) -> *const u8 {
        m.w.as_ptr().add(r * m.row_bytes)
    }
    #[inline(always)]
    unsafe fn next(cur: &mut *const u8) -> W512 {
        let p = *cur;
        *cur = p.add(W);
        let k = nm_mask512::<B>(p);
        let w = if Q4 {
            // Kept codes 0..16 are the low nibbles, 16..32 the high ones.
            let x = load128(p.add(QS));
            let m = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(x, m);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), m);
            let kept = _mm512_castsi256_si512(_mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi));
            // Kept: the nibble (value + 8); dropped: 8.
            _mm512_mask_expand_epi8(_mm512_set1_epi8(8), k, kept)
        } else {
            let kept = _mm512_castsi256_si512(_mm256_loadu_si256(p.add(QS) as *const __m256i));
            _mm512_xor_si512(_mm512_maskz_expand_epi8(k, kept), _mm512_set1_epi8(-128))
        };
        W512 { w, d: _mm512_set1_ps(*h2f_entry(p)) }
    }
}

/// `Q8_SB` rows: metadata, companion values, offset of the next kept code, row width.
#[derive(Clone, Copy)]
struct BitmapCur {
    meta: *const u8,
    vals: *const u8,
    o: usize,
    c: usize,
}

struct Bitmap512;

impl Rows512 for Bitmap512 {
    const BIAS: i8 = -128;
    type Ctx = (*const u8, usize);
    type Cur = BitmapCur;
    #[inline(always)]
    unsafe fn prefetch((vals, c): (*const u8, usize), r0: usize, m: usize, b: usize, nb: usize) {
        let span = m * c;
        let ahead = vals.wrapping_add(r0 * c + (2 * span).max(4096));
        let per_block = span.div_ceil(nb.max(1));
        let mut off = 0;
        while off < per_block {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(b * per_block + off) as *const i8);
            off += 64;
        }
    }
    #[inline(always)]
    unsafe fn cursor(m: &MatmulArgs<'_>, (vals, c): (*const u8, usize), r: usize) -> BitmapCur {
        BitmapCur { meta: m.w.as_ptr().add(r * m.row_bytes), vals: vals.add(r * c), o: 0, c }
    }
    #[inline(always)]
    unsafe fn next(cur: &mut BitmapCur) -> W512 {
        let mb = cur.meta;
        cur.meta = mb.add(10);
        let mut mask = (mb.add(2) as *const u64).read_unaligned();
        let n = mask.count_ones() as usize;
        let o = cur.o;
        cur.o += n;
        if o + n > cur.c {
            // More kept than the row holds (invalid data): keep the first codes that exist.
            let left = cur.c.saturating_sub(o);
            while mask.count_ones() as usize > left {
                mask &= !(1u64 << (63 - mask.leading_zeros()));
            }
        }
        let k = _cvtu64_mask64(mask);
        let v = if o + 64 <= cur.c {
            // A plain 64-byte load within the row and a register expand (faster than the
            // expanding load from memory).
            _mm512_maskz_expand_epi8(k, _mm512_loadu_si512(cur.vals.add(o) as *const _))
        } else {
            // Near the row's end: reads only the popcount(mask) bytes at `vals + o`
            // (masked-off bytes are not accessed), all within the row's `c` bytes.
            _mm512_maskz_expandloadu_epi8(k, cur.vals.add(o.min(cur.c)) as *const i8)
        };
        W512 { w: _mm512_xor_si512(v, _mm512_set1_epi8(-128)), d: _mm512_set1_ps(*h2f_entry(mb)) }
    }
}

/// Rows `r0..r0 + M` against tokens `t0..t0 + N`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile512<R: Rows512, const M: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    ctx: R::Ctx,
    r0: usize,
    t0: usize,
) {
    let nb = m.k / 64;
    // Plain loops, no closures: a closure is not compiled with its caller's target features
    // and, when not inlined, turns every intrinsic into a call.
    let mut cur: [R::Cur; M] = [R::cursor(m, ctx, r0); M];
    for (i, c) in cur.iter_mut().enumerate().skip(1) {
        *c = R::cursor(m, ctx, r0 + i);
    }
    let a0 = m.act.as_ptr().add(t0 * m.act_bytes);
    let mut acc = [[_mm512_setzero_ps(); N]; M];
    // One token streams every weight once: prefetch the tile after next (at least 4 KiB
    // ahead), spreading its lines over the blocks. A hint: never faults past the end.
    let (rb, span) = (m.row_bytes, M * m.row_bytes);
    let ahead = m.w.as_ptr().wrapping_add(r0 * rb + (2 * span).max(4096));
    let per_block = span.div_ceil(nb.max(1));
    for b in 0..nb {
        if N == 1 {
            let mut off = 0;
            while off < per_block {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(b * per_block + off) as *const i8);
                off += 64;
            }
            R::prefetch(ctx, r0, M, b, nb);
        }
        let mut w = [W512 { w: _mm512_setzero_si512(), d: _mm512_setzero_ps() }; M];
        for (w, c) in w.iter_mut().zip(cur.iter_mut()) {
            *w = R::next(c);
        }
        for t in 0..N {
            let a = a512(a0.add(t * m.act_bytes + 68 * b), R::BIAS);
            for r in 0..M {
                let i = _mm512_dpbusd_epi32(a.neg, w[r].w, a.q);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(w[r].d, a.d), acc[r][t]);
            }
        }
    }
    let col = r0 - m.rows.start;
    for r in 0..M {
        for t in 0..N {
            m.out[(t0 + t) * m.out_stride + col + r] = _mm512_reduce_add_ps(acc[r][t]);
        }
    }
}

#[inline(always)]
unsafe fn tokens512<R: Rows512, const M: usize>(m: &mut MatmulArgs<'_>, ctx: R::Ctx, r: usize) {
    let mut t = 0;
    while t + 3 <= m.n {
        tile512::<R, M, 3>(m, ctx, r, t);
        t += 3;
    }
    while t + 2 <= m.n {
        tile512::<R, M, 2>(m, ctx, r, t);
        t += 2;
    }
    if t < m.n {
        tile512::<R, M, 1>(m, ctx, r, t);
    }
}

/// Rows `r0..r0 + M`, already expanded (`w`: block `b` of row `i` at `w[i·nb + b]`, scales
/// likewise in `d`), against tokens `t0..t0 + N`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile512_expanded<const M: usize, const N: usize>(
    m: &mut MatmulArgs<'_>,
    bias: i8,
    w: &[__m512i],
    d: &[f32],
    r0: usize,
    t0: usize,
) {
    let nb = m.k / 64;
    let a0 = m.act.as_ptr().add(t0 * m.act_bytes);
    let mut acc = [[_mm512_setzero_ps(); N]; M];
    for b in 0..nb {
        for t in 0..N {
            let a = a512(a0.add(t * m.act_bytes + 68 * b), bias);
            for r in 0..M {
                // In bounds: the caller expanded M rows of nb blocks.
                let wr = *w.get_unchecked(r * nb + b);
                let dr = _mm512_set1_ps(*d.get_unchecked(r * nb + b));
                let i = _mm512_dpbusd_epi32(a.neg, wr, a.q);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(dr, a.d), acc[r][t]);
            }
        }
    }
    let col = r0 - m.rows.start;
    for r in 0..M {
        for t in 0..N {
            m.out[(t0 + t) * m.out_stride + col + r] = _mm512_reduce_add_ps(acc[r][t]);
        }
    }
}

/// Several tokens: every 4-row tile is expanded once into a buffer, then meets all tokens in
/// register tiles of 4 rows × 4 tokens (the weight expansion is paid once per call, not
/// once per token tile).
#[inline(always)]
unsafe fn matmul512_prompt<R: Rows512>(m: &mut MatmulArgs<'_>, ctx: R::Ctx) {
    let nb = m.k / 64;
    let mut w = vec![_mm512_setzero_si512(); 4 * nb];
    let mut d = vec![0.0f32; 4 * nb];
    let mut r = m.rows.start;
    while r < m.rows.end {
        let rows = (m.rows.end - r).min(4);
        for i in 0..rows {
            let mut cur = R::cursor(m, ctx, r + i);
            for b in 0..nb {
                let x = R::next(&mut cur);
                w[i * nb + b] = x.w;
                d[i * nb + b] = _mm_cvtss_f32(_mm512_castps512_ps128(x.d));
            }
        }
        let mut t = 0;
        macro_rules! run {
            ($m:literal) => {{
                while t + 4 <= m.n {
                    tile512_expanded::<$m, 4>(m, R::BIAS, &w, &d, r, t);
                    t += 4;
                }
                while t < m.n {
                    tile512_expanded::<$m, 1>(m, R::BIAS, &w, &d, r, t);
                    t += 1;
                }
            }};
        }
        match rows {
            4 => run!(4),
            3 => run!(3),
            2 => run!(2),
            _ => run!(1),
        }
        r += rows;
    }
}

#[inline(always)]
unsafe fn matmul512<R: Rows512>(m: &mut MatmulArgs<'_>, ctx: R::Ctx) {
    if m.n >= PROMPT_TOKENS {
        return matmul512_prompt::<R>(m, ctx);
    }
    let mut r = m.rows.start;
    while r + 4 <= m.rows.end {
        tokens512::<R, 4>(m, ctx, r);
        r += 4;
    }
    while r < m.rows.end {
        tokens512::<R, 1>(m, ctx, r);
        r += 1;
    }
}

/// One row of `k` values against one activation row, through a one-row, one-token product.
#[inline(always)]
unsafe fn vec_dot512<R: Rows512<Ctx = ()>>(w: &[u8], a: &[u8], k: usize, row_bytes: usize) -> f32 {
    let mut out = 0.0f32;
    // SAFETY: `out` is a local value, written once.
    let o = Out::from_raw(&mut out, 1);
    let mut m =
        MatmulArgs { w, row_bytes, k, rows: 0..1, act: a, act_bytes: a.len(), n: 1, out: o, out_stride: 1 };
    tile512::<R, 1, 1>(&mut m, (), 0, 0);
    out
}

type NQ4S24 = Nm512<6, 24, 8, true>;
type NQ4S48 = Nm512<7, 25, 9, true>;
type NQ8S24 = Nm512<6, 40, 8, false>;
type NQ8S48 = Nm512<7, 41, 9, false>;

macro_rules! avx512_entries {
    ($($rows:ty, $w:expr => $vd:ident, $mm:ident;)*) => {$(
        /// # Safety
        /// Rows of exactly `k` values of their formats; AVX-512 F/BW/VNNI/VBMI/VBMI2, AVX2.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx512vbmi2,avx2,fma,f16c")]
        pub(super) unsafe fn $vd(w: &[u8], a: &[u8], k: usize) -> f32 {
            vec_dot512::<$rows>(w, a, k, k / 64 * $w)
        }
        /// # Safety
        /// `m` satisfies the bounds of [`MatmulArgs`]; AVX-512 F/BW/VNNI/VBMI/VBMI2, AVX2.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx512vbmi2,avx2,fma,f16c")]
        pub(super) unsafe fn $mm(m: &mut MatmulArgs<'_>) {
            matmul512::<$rows>(m, ())
        }
    )*};
}

avx512_entries! {
    NQ4S24, 24 => avx512_vec_dot_q4_s24, avx512_matmul_q4_s24;
    NQ4S48, 25 => avx512_vec_dot_q4_s48, avx512_matmul_q4_s48;
    NQ8S24, 40 => avx512_vec_dot_q8_s24, avx512_matmul_q8_s24;
    NQ8S48, 41 => avx512_vec_dot_q8_s48, avx512_matmul_q8_s48;
}

/// # Safety
/// As [`avx2_matmul_bitmap`]; AVX-512 F/BW/VNNI/VBMI/VBMI2, AVX2.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx512vbmi2,avx2,fma,f16c,popcnt")]
pub(super) unsafe fn avx512_matmul_bitmap(m: &mut MatmulArgs<'_>, values: &[u8], c: usize) {
    matmul512::<Bitmap512>(m, (values.as_ptr(), c))
}
