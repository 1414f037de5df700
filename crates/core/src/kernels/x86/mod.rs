//! x86-64 kernels: AVX2 + FMA + F16C (and, where built, AVX-512 VNNI).
//!
//! Every weight format is described once by a [`Fmt`]: how to unpack one weight block
//! (`pw`) and one activation block (`pa`) into registers, and how to add their dot product
//! into eight f32 lanes (`dot`). Two drivers turn a format into kernels: [`drive::vec_dot`]
//! (several independent accumulators over the blocks of one row) and [`drive::matmul`]
//! (register tiles of 4 weight rows × 3 tokens: each unpacked weight block is reused for 3
//! tokens and each activation block for 4 rows). The drivers and format methods are
//! `#[inline(always)]` and only ever inlined into the `#[target_feature]` entry points at the
//! bottom of each file, so the intrinsics compile to the enabled instructions.
//!
//! Integer dot products of 8-bit values use `vpmaddubsw` (unsigned × signed bytes, pairs
//! summed to i16) then `vpmaddwd` (pairs of i16 to i32). For signed weights the sign is moved
//! onto the activations (`|w| · sign(a, w)`); the magnitudes are bounded so the i16 sums
//! never saturate (|w| ≤ 128, |a| ≤ 127; unsigned codes ≤ 63).

use std::arch::x86_64::*;

use super::{Act, Kernels, MatmulArgs, Tier};
use crate::DType;

mod avx512;
mod bitmap_groups;
pub(crate) mod colskip;
mod compressed;
mod drive;
mod float;
mod kquants;
mod legacy;
mod nm_lanes;
mod packed;
mod quantize;
mod sparse;

/// Whether the CPU has what the AVX2 tier uses (`popcnt` for the bitmap kernels; every AVX2
/// CPU has it).
pub(super) fn avx2_detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("popcnt")
}

/// Whether the CPU has what the AVX-512 VNNI tier uses.
pub(super) fn avx512vnni_detected() -> bool {
    avx512::detected()
}

/// Puts the AVX2 kernels into `k`.
pub(super) fn fill_avx2(k: &mut Kernels) {
    let t = Tier::Avx2;
    k.set_quantize(Act::Q8_0, quantize::q8_0, t);
    k.set_quantize(Act::Q8_1, quantize::q8_1, t);
    k.set_quantize(Act::Q8_K, quantize::q8_k, t);
    k.set_quantize(Act::Q8S, quantize::q8s, t);
    k.set_quantize(Act::Q8U, quantize::q8u, t);
    k.set_packed(DType::Q4_S24, nm_lanes::avx2_q4_s24, t);
    k.set_packed(DType::Q4_S48, nm_lanes::avx2_q4_nm, t);
    k.set_packed(DType::Q8_S24, nm_lanes::avx2_q8_nm, t);
    k.set_packed(DType::Q8_S48, nm_lanes::avx2_q8_nm, t);
    k.set_packed(DType::Q4_0, packed::avx2_q4_0, t);
    k.set_packed(DType::Q5_0, packed::avx2_q5_0, t);
    k.set_packed(DType::Q8_0, packed::avx2_q8_0, t);
    k.set_packed(DType::Q4_1, packed::avx2_q4_1, t);
    k.set_packed(DType::Q5_1, packed::avx2_q5_1, t);
    // The AVX-512 tier keeps these (AVX2 code).
    k.set_packed(DType::Q4_K, packed::avx2_q4_k, t);
    k.set_packed(DType::Q6_K, packed::avx2_q6_k, t);
    k.set(DType::Q4_0, legacy::vec_dot_q4_0, legacy::matmul_q4_0, t);
    k.set(DType::Q4_1, legacy::vec_dot_q4_1, legacy::matmul_q4_1, t);
    k.set(DType::Q5_0, legacy::vec_dot_q5_0, legacy::matmul_q5_0, t);
    k.set(DType::Q5_1, legacy::vec_dot_q5_1, legacy::matmul_q5_1, t);
    k.set(DType::Q8_0, legacy::vec_dot_q8_0, legacy::matmul_q8_0, t);
    k.set(DType::Q2_K, kquants::vec_dot_q2_k, kquants::matmul_q2_k, t);
    k.set(DType::Q3_K, kquants::vec_dot_q3_k, kquants::matmul_q3_k, t);
    k.set(DType::Q4_K, kquants::vec_dot_q4_k, kquants::matmul_q4_k, t);
    k.set(DType::Q5_K, kquants::vec_dot_q5_k, kquants::matmul_q5_k, t);
    k.set(DType::Q6_K, kquants::vec_dot_q6_k, kquants::matmul_q6_k, t);
    k.set(DType::F32, float::vec_dot_f32, float::matmul_f32, t);
    k.set(DType::F16, float::vec_dot_f16, float::matmul_f16, t);
    k.set(DType::BF16, float::vec_dot_bf16, float::matmul_bf16, t);
    k.set(DType::Q4_S24, sparse::avx2_vec_dot_q4_s24, sparse::avx2_matmul_q4_s24, t);
    k.set(DType::Q4_S48, sparse::avx2_vec_dot_q4_s48, sparse::avx2_matmul_q4_s48, t);
    k.set(DType::Q8_S24, sparse::avx2_vec_dot_q8_s24, sparse::avx2_matmul_q8_s24, t);
    k.set(DType::Q8_S48, sparse::avx2_vec_dot_q8_s48, sparse::avx2_matmul_q8_s48, t);
    k.set_bitmap(sparse::avx2_matmul_bitmap, t);
}

/// Puts the AVX-512 VNNI kernels into `k` (over the AVX2 ones): matrix products of the
/// quantized types; dot products and one-token products stay AVX2.
pub(super) fn fill_avx512vnni(k: &mut Kernels) {
    let t = Tier::Avx512Vnni;
    k.set_matmul(DType::Q4_0, avx512::matmul_q4_0, t);
    k.set_matmul(DType::Q4_1, avx512::matmul_q4_1, t);
    k.set_matmul(DType::Q5_0, avx512::matmul_q5_0, t);
    k.set_matmul(DType::Q5_1, avx512::matmul_q5_1, t);
    k.set_matmul(DType::Q8_0, avx512::matmul_q8_0, t);
    k.set_matmul(DType::Q2_K, avx512::matmul_q2_k, t);
    k.set_matmul(DType::Q3_K, avx512::matmul_q3_k, t);
    k.set_matmul(DType::Q4_K, avx512::matmul_q4_k, t);
    k.set_matmul(DType::Q5_K, avx512::matmul_q5_k, t);
    k.set_matmul(DType::Q6_K, avx512::matmul_q6_k, t);
    k.set_matmul(DType::F16, avx512::matmul_f16, t);
    k.set_packed(DType::Q4_0, packed::vnni_q4_0, t);
    k.set_packed(DType::Q5_0, packed::vnni_q5_0, t);
    k.set_packed(DType::Q8_0, packed::vnni_q8_0, t);
    k.set_packed(DType::Q4_1, packed::vnni_q4_1, t);
    k.set_packed(DType::Q5_1, packed::vnni_q5_1, t);
    // The sparse kernels also need VBMI (vpermb, vpmultishiftqb) and VBMI2 (vpexpandb); a
    // VNNI CPU without them keeps the AVX2 sparse kernels.
    if sparse::avx512_detected() {
        k.set(DType::Q4_S24, sparse::avx512_vec_dot_q4_s24, sparse::avx512_matmul_q4_s24, t);
        k.set(DType::Q4_S48, sparse::avx512_vec_dot_q4_s48, sparse::avx512_matmul_q4_s48, t);
        k.set(DType::Q8_S24, sparse::avx512_vec_dot_q8_s24, sparse::avx512_matmul_q8_s24, t);
        k.set(DType::Q8_S48, sparse::avx512_vec_dot_q8_s48, sparse::avx512_matmul_q8_s48, t);
        k.set_bitmap(sparse::avx512_matmul_bitmap, t);
        k.set_bitmap_groups(bitmap_groups::vbmi2_bitmap_groups, t);
        k.set_packed(DType::Q4_S24, nm_lanes::vbmi_q4_s24, t);
        k.set_packed(DType::Q4_S48, nm_lanes::vbmi_q4_nm, t);
        k.set_packed(DType::Q8_S24, nm_lanes::vbmi_q8_nm, t);
        k.set_packed(DType::Q8_S48, nm_lanes::vbmi_q8_nm, t);
    }
}

/// One weight format's AVX2 building blocks.
///
/// # Safety
/// `pw` reads [`Fmt::W`] bytes and `pa` [`Fmt::A`] bytes at their pointers; all methods need
/// AVX2, FMA and F16C. An all-zero `Pw` must be a valid value (the tile driver starts from it).
pub(super) unsafe trait Fmt {
    /// Values per block.
    const BLOCK: usize;
    /// Bytes per weight block.
    const W: usize;
    /// Bytes per activation block.
    const A: usize;
    /// Blocks in flight per [`drive::vec_dot`] iteration (independent accumulators).
    const UNROLL: usize;
    /// An unpacked weight block.
    type Pw: Copy;
    /// An unpacked activation block.
    type Pa: Copy;
    /// Unpacks the weight block at `p`.
    unsafe fn pw(p: *const u8) -> Self::Pw;
    /// Unpacks the activation block at `p`.
    unsafe fn pa(p: *const u8) -> Self::Pa;
    /// Adds the dot product of `w` and `a` into the lanes of `acc`.
    unsafe fn dot(w: &Self::Pw, a: &Self::Pa, acc: __m256) -> __m256;
    /// The dot product of the `n` values after the last whole block (float formats, whose
    /// rows need not be whole blocks).
    #[inline(always)]
    unsafe fn tail(_w: *const u8, _a: *const u8, _n: usize) -> f32 {
        0.0
    }
    /// Rows per tile of a one-token product: 4 shares each activation block over four rows;
    /// 1 suits formats whose unpacked block fills the registers (one fused row at a time).
    const MV_ROWS: usize = 4;
    /// One register tile of the matrix product: rows `r0..r0 + M` against tokens
    /// `t0..t0 + N` (see [`drive::tile`], the default).
    #[inline(always)]
    unsafe fn tile<const M: usize, const N: usize>(m: &mut MatmulArgs<'_>, r0: usize, t0: usize)
    where
        Self: Sized,
    {
        drive::tile::<Self, M, N>(m, r0, t0)
    }
}

/// Sum of the eight lanes.
#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Pointer to the table entry of the little-endian half at `p`.
#[inline(always)]
pub(super) unsafe fn h2f_entry(p: *const u8) -> *const f32 {
    let bits = (p as *const u16).read_unaligned();
    // The index is below 2¹⁶, the table's length.
    super::F16_TO_F32.as_ptr().add(bits as usize) as *const f32
}

/// The little-endian IEEE half at `p`, widened.
#[inline(always)]
pub(super) unsafe fn h2f(p: *const u8) -> f32 {
    *h2f_entry(p)
}

/// The half at `p`, widened and broadcast (a broadcast load from the table).
#[inline(always)]
pub(super) unsafe fn h2f_splat(p: *const u8) -> __m256 {
    _mm256_broadcast_ss(&*h2f_entry(p))
}

/// 32 bytes at `p`.
#[inline(always)]
pub(super) unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// 16 bytes at `p`.
#[inline(always)]
pub(super) unsafe fn load128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p as *const __m128i)
}

/// `Σ` of products of unsigned bytes `u` and signed bytes `s`, per group of four, as i32.
#[inline(always)]
pub(super) unsafe fn dot_u8i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}
