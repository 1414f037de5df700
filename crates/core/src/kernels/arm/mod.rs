//! AArch64 kernels: Advanced SIMD (NEON), the dot-product extension (`sdot`) and the 8-bit
//! matrix multiply extension (`smmla`, packed products only).
//!
//! The structure follows `x86/`: every weight format is a [`Fmt`] (unpack a weight block,
//! unpack an activation block, add their dot product into four f32 lanes), turned into a dot
//! product and a register-tiled matrix product by [`drive`]. Each format is written once,
//! generic over `DP` (whether `sdot` may be used); [`dot16`] is the one place that differs:
//! `sdot` (four 4-byte dot products per instruction) with the extension, widening multiplies
//! and pairwise adds without it. The entry points come in two sets, `plain` (NEON) and `sdot`
//! (NEON + dotprod), the latter compiled with the extension enabled. The packed
//! (row-interleaved) products exist on all three tiers (`packed`).
//!
//! The dot-product and matrix-multiply intrinsics are not stable in this Rust version, so
//! `sdot` and `smmla` are inline assembly; so is the half → single widening `fcvtl` (its vector type is not stable either).
//! Block scales are widened through the shared table [`super::F16_TO_F32`].

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Act, Kernels, MatmulArgs, Tier};
use crate::DType;

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

/// Whether the CPU has the dot-product extension.
pub(super) fn dotprod_detected() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// Whether the CPU has the 8-bit integer matrix multiply extension (I8MM).
pub(super) fn i8mm_detected() -> bool {
    std::arch::is_aarch64_feature_detected!("i8mm")
}

macro_rules! fill {
    ($k:expr, $t:expr, $set:ident) => {{
        let (k, t): (&mut Kernels, Tier) = (&mut *$k, $t);
        k.set(DType::Q4_S24, sparse::$set::vec_dot_q4_s24, sparse::$set::matmul_q4_s24, t);
        k.set(DType::Q4_S48, sparse::$set::vec_dot_q4_s48, sparse::$set::matmul_q4_s48, t);
        k.set(DType::Q8_S24, sparse::$set::vec_dot_q8_s24, sparse::$set::matmul_q8_s24, t);
        k.set(DType::Q8_S48, sparse::$set::vec_dot_q8_s48, sparse::$set::matmul_q8_s48, t);
        k.set_bitmap(sparse::$set::matmul_bitmap, t);
        k.set(DType::Q4_0, $set::vec_dot_q4_0, $set::matmul_q4_0, t);
        k.set(DType::Q4_1, $set::vec_dot_q4_1, $set::matmul_q4_1, t);
        k.set(DType::Q5_0, $set::vec_dot_q5_0, $set::matmul_q5_0, t);
        k.set(DType::Q5_1, $set::vec_dot_q5_1, $set::matmul_q5_1, t);
        k.set(DType::Q8_0, $set::vec_dot_q8_0, $set::matmul_q8_0, t);
        k.set(DType::Q2_K, $set::vec_dot_q2_k, $set::matmul_q2_k, t);
        k.set(DType::Q3_K, $set::vec_dot_q3_k, $set::matmul_q3_k, t);
        k.set(DType::Q4_K, $set::vec_dot_q4_k, $set::matmul_q4_k, t);
        k.set(DType::Q5_K, $set::vec_dot_q5_k, $set::matmul_q5_k, t);
        k.set(DType::Q6_K, $set::vec_dot_q6_k, $set::matmul_q6_k, t);
    }};
}

/// Puts the NEON kernels into `k`.
pub(super) fn fill_neon(k: &mut Kernels) {
    let t = Tier::Neon;
    k.set_quantize(Act::Q8_0, quantize::q8_0, t);
    k.set_quantize(Act::Q8_1, quantize::q8_1, t);
    k.set_quantize(Act::Q8_K, quantize::q8_k, t);
    k.set_quantize(Act::Q8S, quantize::q8s, t);
    k.set_quantize(Act::Q8U, quantize::q8u, t);
    fill!(k, t, plain);
    // The N:M lane layouts with widening multiplies (`nm_lanes`).
    k.set_packed(DType::Q4_S24, nm_lanes::neon_q4_s24, t);
    k.set_packed(DType::Q4_S48, nm_lanes::neon_q4_nm, t);
    k.set_packed(DType::Q8_S24, nm_lanes::neon_q8_nm, t);
    k.set_packed(DType::Q8_S48, nm_lanes::neon_q8_nm, t);
    // Packed products with widening multiplies, summed in i16 lanes (`packed`).
    for (weight, f) in packed::plain::KERNELS {
        k.set_packed(weight, f, t);
    }
    k.set(DType::F32, float::vec_dot_f32, float::matmul_f32, t);
    k.set(DType::F16, float::vec_dot_f16, float::matmul_f16, t);
    k.set(DType::BF16, float::vec_dot_bf16, float::matmul_bf16, t);
}

/// Puts the dot-product kernels into `k` (over the NEON ones).
pub(super) fn fill_dotprod(k: &mut Kernels) {
    fill!(k, Tier::NeonDotprod, sdot);
    // Packed (row-interleaved) products: one `sdot` serves four rows (`packed`).
    for (weight, f) in packed::dotprod::KERNELS {
        k.set_packed(weight, f, Tier::NeonDotprod);
    }
    // The N:M lane layout: a `tbl` gathers each row's activations, one `sdot` per four rows.
    k.set_packed(DType::Q4_S24, nm_lanes::dotprod_q4_s24, Tier::NeonDotprod);
    k.set_packed(DType::Q4_S48, nm_lanes::dotprod_q4_nm, Tier::NeonDotprod);
    k.set_packed(DType::Q8_S24, nm_lanes::dotprod_q8_nm, Tier::NeonDotprod);
    k.set_packed(DType::Q8_S48, nm_lanes::dotprod_q8_nm, Tier::NeonDotprod);
}

/// Puts the 8-bit matrix multiply kernels into `k` (over the dot-product ones): packed
/// products, one `smmla` per two rows and two tokens (`packed`).
pub(super) fn fill_i8mm(k: &mut Kernels) {
    for (weight, f) in packed::i8mm::KERNELS {
        k.set_packed(weight, f, Tier::NeonI8mm);
    }
}

/// One weight format's NEON building blocks (`DP`: `sdot` may be used).
///
/// # Safety
/// `pw` reads [`Fmt::W`] bytes and `pa` [`Fmt::A`] bytes at their pointers; with `DP`, the
/// CPU has the dot-product extension. An all-zero `Pw` must be a valid value.
pub(super) unsafe trait Fmt {
    /// Values per block.
    const BLOCK: usize;
    /// Bytes per weight block.
    const W: usize;
    /// Bytes per activation block.
    const A: usize;
    /// Blocks in flight per [`drive::vec_dot`] iteration (independent accumulators, ≤ 4).
    const UNROLL: usize;
    /// Rows per tile of a one-token product (4, or 1 for large unpacked blocks).
    const MV_ROWS: usize = 4;
    /// An unpacked weight block.
    type Pw: Copy;
    /// An unpacked activation block.
    type Pa: Copy;
    /// Unpacks the weight block at `p`.
    unsafe fn pw(p: *const u8) -> Self::Pw;
    /// Unpacks the activation block at `p`.
    unsafe fn pa(p: *const u8) -> Self::Pa;
    /// Adds the dot product of `w` and `a` into the lanes of `acc`.
    unsafe fn dot(w: &Self::Pw, a: &Self::Pa, acc: float32x4_t) -> float32x4_t;
    /// The dot product of the `n` values after the last whole block (float formats).
    #[inline(always)]
    unsafe fn tail(_w: *const u8, _a: *const u8, _n: usize) -> f32 {
        0.0
    }
}

/// `acc` plus the dot products of the four 4-byte groups of `a` and `b` (signed bytes, each
/// product within ±127·128): `sdot` with `DP`, else widening multiplies (i16 pairs cannot
/// overflow at these magnitudes) and pairwise accumulation. Only the sum of the lanes is the
/// same either way.
#[inline(always)]
pub(super) unsafe fn dot16<const DP: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DP {
        sdot(acc, a, b)
    } else {
        let p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        vpadalq_s16(acc, vmlal_high_s8(p, a, b))
    }
}

/// `$name(acc, a, b)`: the instruction `$name acc.4s, a.16b, b.16b` of extension `$feature`
/// (inline assembly: these intrinsics are not stable).
macro_rules! accumulate_instr {
    ($(#[$doc:meta])* $name:ident, $feature:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        #[doc = concat!("The CPU has the `", $feature, "` extension.")]
        #[inline]
        #[target_feature(enable = $feature)]
        unsafe fn $name(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
            let mut acc = acc;
            asm!(
                concat!(stringify!($name), " {acc:v}.4s, {a:v}.16b, {b:v}.16b"),
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
            acc
        }
    };
}

accumulate_instr!(
    /// `sdot acc.4s, a.16b, b.16b`: adds the dot products of the four 4-byte groups of `a`
    /// and `b` (signed) to the lanes of `acc`.
    sdot,
    "dotprod"
);
accumulate_instr!(
    /// `smmla acc.4s, a.16b, b.16b`: with `a` two rows of eight signed bytes (`a0`, `a1`) and
    /// `b` two more (`b0`, `b1`), adds `[a0·b0, a0·b1, a1·b0, a1·b1]` to the lanes of `acc`.
    smmla,
    "i8mm"
);

/// Four halves widened to singles (`fcvtl`, exact; the half vector type is not stable in
/// Rust).
#[inline(always)]
pub(super) unsafe fn widen_f16(h: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    asm!(
        "fcvtl {o:v}.4s, {i:v}.4h",
        o = lateout(vreg) out,
        i = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    out
}

/// The little-endian IEEE half at `p`, widened (through the shared table).
#[inline(always)]
pub(super) unsafe fn h2f(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    // The index is below 2¹⁶, the table's length.
    f32::from_bits(*super::F16_TO_F32.as_ptr().add(bits as usize))
}

/// 16 bytes at `p`.
#[inline(always)]
pub(super) unsafe fn load(p: *const u8) -> uint8x16_t {
    vld1q_u8(p)
}

/// 16 signed bytes at `p`.
#[inline(always)]
pub(super) unsafe fn load_s(p: *const u8) -> int8x16_t {
    vld1q_s8(p as *const i8)
}

#[inline(always)]
pub(super) unsafe fn s8(x: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(x)
}

macro_rules! entries {
    ($features:literal, $dp:literal; $($fmt:ident => $vd:ident, $mm:ident;)*) => {$(
        /// # Safety
        /// Rows of exactly `k` values of their formats; the CPU has the enabled features.
        #[target_feature(enable = $features)]
        pub(in crate::kernels::arm) unsafe fn $vd(w: &[u8], a: &[u8], k: usize) -> f32 {
            super::drive::vec_dot::<$fmt<$dp>>(w, a, k)
        }
        /// # Safety
        /// `m` satisfies the bounds of [`MatmulArgs`]; the CPU has the enabled features.
        #[target_feature(enable = $features)]
        pub(in crate::kernels::arm) unsafe fn $mm(m: &mut MatmulArgs<'_>) {
            super::drive::matmul::<$fmt<$dp>>(m)
        }
    )*};
}

macro_rules! quantized_entries {
    ($features:literal, $dp:literal) => {
        use super::kquants::{Q2K, Q3K, Q4K, Q5K, Q6K};
        use super::legacy::{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
        use super::MatmulArgs;
        entries! {
            $features, $dp;
            Q4_0 => vec_dot_q4_0, matmul_q4_0;
            Q4_1 => vec_dot_q4_1, matmul_q4_1;
            Q5_0 => vec_dot_q5_0, matmul_q5_0;
            Q5_1 => vec_dot_q5_1, matmul_q5_1;
            Q8_0 => vec_dot_q8_0, matmul_q8_0;
            Q2K => vec_dot_q2_k, matmul_q2_k;
            Q3K => vec_dot_q3_k, matmul_q3_k;
            Q4K => vec_dot_q4_k, matmul_q4_k;
            Q5K => vec_dot_q5_k, matmul_q5_k;
            Q6K => vec_dot_q6_k, matmul_q6_k;
        }
    };
}

/// The quantized formats with widening multiplies.
mod plain {
    quantized_entries!("neon", false);
}

/// The quantized formats with `sdot`.
mod sdot {
    quantized_entries!("neon,dotprod", true);
}
