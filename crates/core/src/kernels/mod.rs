//! Quantized CPU kernels behind a run-time dispatch table.
//!
//! A matrix product `y = W x` with a quantized weight `W` runs in two steps, as in ggml: the
//! activation row `x` is quantized once into the weight type's *activation format*
//! ([`activation_type`]), then every weight row is dotted with it in integer arithmetic, one
//! float multiply-add per block. The kernels work on rows as they are stored in GGUF files.
//!
//! | weight                       | activation format                                   |
//! |------------------------------|-----------------------------------------------------|
//! | Q4_0, Q5_0, Q8_0             | Q8_0                                                |
//! | Q4_1, Q5_1                   | Q8_1                                                |
//! | Q2_K, Q3_K, Q4_K, Q5_K, Q6_K | Q8_K                                                |
//! | F32, F16, BF16               | F32 (the activations are not quantized)             |
//! | Q4_S24, Q4_S48, Q8_S24, Q8_S48 (N:M sparse) | Q8_0 (a 64-input block meets two blocks) |
//! | Q8_SB (bitmap sparse)        | Q8_0, through [`matmul_bitmap`] / [`vec_dot_bitmap`] |
//!
//! Loaded models run most types in layouts repacked at load time ([`pack`]: row-interleaved
//! groups; the N:M lane layouts) and `Q8_SB` in the bitmap group layout ([`BitmapGroups`],
//! [`matmul_bitmap_groups_to`]) where the tier has their kernels.
//!
//! The activation quantizers reproduce llama.cpp's run-time ones (the SIMD quantizers its CPU
//! backend uses, not ggml's reference weight quantizers), so that whole-model logits follow the
//! reference engine's rounding: Q8_0 codes are `x·(127/amax)` rounded half to even, scale
//! `amax/127` as f16; Q8_1 is ggml's `block_q8_1`: the same scale and codes plus the f16 of
//! `d·Σq` (with the unrounded `d`), which the affine weights' minimum multiplies; Q8_K is the
//! reference quantizer. Our SIMD versions are bit-identical to the scalar ones for finite input.
//!
//! Every kernel exists as a scalar oracle ([`Tier::Scalar`], `generic/`) and as SIMD code per
//! instruction-set tier: [`Tier::Avx2`] (`x86/`, AVX2 + FMA + F16C) and [`Tier::Neon`] /
//! [`Tier::NeonDotprod`] (`arm/`) cover every type above; [`Tier::Avx512Vnni`] adds the
//! matrix products of several tokens of the quantized types (AVX-512 F/BW + VNNI) over AVX2;
//! [`Tier::NeonI8mm`] adds the packed products with the 8-bit matrix multiply (`smmla`) over
//! the dot-product tier.
//! The sparse types (`quant::sparse`) have their own kernels on the AVX2 tier and, where
//! the CPU also has AVX-512 VBMI and VBMI2 (`vpermb`, `vpexpandb`), on the AVX-512 tier (a
//! VNNI CPU without them keeps the AVX2 sparse kernels), and on NEON and NEON dot-product
//! (`arm/sparse.rs`: one `tbl` expansion per two chunks).
//! The table of the best tier the CPU supports is chosen once ([`tier`]);
//! `EDGELLM_KERNELS=scalar|avx2|avx512vnni|neon|dotprod|i8mm` forces one. A tier without its own
//! kernel for a type keeps the lower tier's, down to the oracle
//! ([`Kernels::implementing_tier`] says which code runs). Tests reach every tier through
//! [`Kernels::for_tier`].
//!
//! All kernels are single-threaded; callers split the rows of a matrix product over threads
//! ([`matmul`] takes a row range). For one token, prefer [`matmul`] with `n = 1` to a
//! [`vec_dot`] per row: it shares each activation block over several rows.

mod bitmap_groups;
pub mod colskip;
mod generic;
mod packed;
mod vector;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::ops::Range;
use std::sync::OnceLock;

use crate::DType;

pub use bitmap_groups::BitmapGroups;
pub use packed::{group_rows as pack_group_rows, has_packed_layout, GROUP as PACK_GROUP};
pub use vector::{axpy, f16_to_f32, gelu_erf, gemm_acc, round_to_f16, softmax_exp, swiglu};

/// An instruction-set tier: one set of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Portable scalar code: the oracle every other tier is tested against.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 (F, BW) and VNNI, over AVX2 (its matrix products of several
    /// tokens; the rest is the AVX2 tier's).
    Avx512Vnni,
    /// AArch64 Advanced SIMD.
    Neon,
    /// AArch64 Advanced SIMD with the dot-product extension (`sdot`).
    NeonDotprod,
    /// AArch64 with the dot-product and 8-bit matrix multiply (`smmla`, Armv8.6 I8MM)
    /// extensions, over the dot-product tier (its packed products of several tokens).
    NeonI8mm,
}

/// Every tier, lowest first.
const ALL_TIERS: [Tier; 6] =
    [Tier::Scalar, Tier::Avx2, Tier::Avx512Vnni, Tier::Neon, Tier::NeonDotprod, Tier::NeonI8mm];

impl Tier {
    /// Short lowercase name, as `EDGELLM_KERNELS` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Scalar => "scalar",
            Tier::Avx2 => "avx2",
            Tier::Avx512Vnni => "avx512vnni",
            Tier::Neon => "neon",
            Tier::NeonDotprod => "dotprod",
            Tier::NeonI8mm => "i8mm",
        }
    }

    /// The tier with this name (case-insensitive; `generic` is an alias of `scalar`,
    /// `avx512` of `avx512vnni`, `neon-dotprod` of `dotprod`, `neon-i8mm` of `i8mm`).
    pub fn from_name(name: &str) -> Option<Tier> {
        let n = name.trim().to_ascii_lowercase();
        match n.as_str() {
            "scalar" | "generic" => Some(Tier::Scalar),
            "avx2" => Some(Tier::Avx2),
            "avx512vnni" | "avx512" | "avx512-vnni" => Some(Tier::Avx512Vnni),
            "neon" => Some(Tier::Neon),
            "dotprod" | "neon-dotprod" | "neondotprod" => Some(Tier::NeonDotprod),
            "i8mm" | "neon-i8mm" | "neoni8mm" => Some(Tier::NeonI8mm),
            _ => None,
        }
    }

    /// Whether this CPU can run the tier's kernels.
    pub fn is_supported(self) -> bool {
        match self {
            Tier::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => x86::avx2_detected(),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512Vnni => x86::avx512vnni_detected(),
            #[cfg(target_arch = "aarch64")]
            Tier::Neon => true,
            #[cfg(target_arch = "aarch64")]
            Tier::NeonDotprod => arm::dotprod_detected(),
            #[cfg(target_arch = "aarch64")]
            Tier::NeonI8mm => arm::dotprod_detected() && arm::i8mm_detected(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The tiers this CPU supports, lowest first (always starts with [`Tier::Scalar`]).
pub fn available_tiers() -> Vec<Tier> {
    ALL_TIERS.into_iter().filter(|t| t.is_supported() && built(*t)).collect()
}

/// Whether this build has kernels for `tier` (a tier is only built for its architecture).
fn built(tier: Tier) -> bool {
    match tier {
        Tier::Scalar => true,
        Tier::Avx2 | Tier::Avx512Vnni => cfg!(target_arch = "x86_64"),
        Tier::Neon | Tier::NeonDotprod | Tier::NeonI8mm => cfg!(target_arch = "aarch64"),
    }
}

/// The best tier this CPU supports.
fn detect() -> Tier {
    available_tiers().into_iter().last().unwrap_or(Tier::Scalar)
}

/// The tier in use: chosen once, from `EDGELLM_KERNELS` if set and supported, else the best
/// the CPU supports. A forced tier this CPU cannot run is reported on stderr and ignored.
pub fn tier() -> Tier {
    static TIER: OnceLock<Tier> = OnceLock::new();
    *TIER.get_or_init(|| {
        let Ok(forced) = std::env::var("EDGELLM_KERNELS") else { return detect() };
        if forced.trim().is_empty() {
            return detect();
        }
        let best = detect();
        match Tier::from_name(&forced) {
            Some(t) if t.is_supported() && built(t) => t,
            Some(t) => {
                eprintln!(
                    "edgellm: EDGELLM_KERNELS={forced}: this CPU or build cannot run the {} kernels; \
                     using {} (supported here: {})",
                    t.name(),
                    best.name(),
                    names(&available_tiers())
                );
                best
            }
            None => {
                eprintln!(
                    "edgellm: EDGELLM_KERNELS={forced} is not a kernel tier (use one of scalar, avx2, \
                     avx512vnni, neon, dotprod, i8mm); using {} (supported here: {})",
                    best.name(),
                    names(&available_tiers())
                );
                best
            }
        }
    })
}

fn names(tiers: &[Tier]) -> String {
    tiers.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

/// Name of the tier in use (for logs and benchmark reports).
pub fn tier_name() -> &'static str {
    tier().name()
}

/// Activation formats of the dot products.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    F32,
    Q8_0,
    Q8_1,
    Q8_K,
    /// Q8_0 with the exact sum of its codes (the packed kernels', see `packed`).
    Q8S,
    /// Q8_0 with an f32 scale and unsigned codes `q + 128` (the N:M lane kernels', see
    /// `packed`).
    Q8U,
}

impl Act {
    const COUNT: usize = 6;

    /// The element type (Q8S: Q8_0, whose blocks it extends by the codes' sum).
    fn dtype(self) -> DType {
        match self {
            Act::F32 => DType::F32,
            Act::Q8_0 | Act::Q8S | Act::Q8U => DType::Q8_0,
            Act::Q8_1 => DType::Q8_1,
            Act::Q8_K => DType::Q8_K,
        }
    }

    /// (values, bytes) per block.
    const fn geometry(self) -> (usize, usize) {
        match self {
            Act::F32 => (1, 4),
            Act::Q8_0 => (32, 34),
            Act::Q8_1 | Act::Q8S | Act::Q8U => (32, 36),
            Act::Q8_K => (256, 292),
        }
    }
}

/// A weight type with kernels: its activation format and its block geometry (that of the
/// element-type table, copied here for the per-call checks; a unit test compares them).
#[derive(Clone, Copy)]
struct Weight {
    dtype: DType,
    act: Act,
    block: usize,
    bytes: usize,
}

const fn weight(dtype: DType, act: Act, block: usize, bytes: usize) -> Weight {
    Weight { dtype, act, block, bytes }
}

/// Weight types with kernels; the index is the type's slot in a [`Kernels`] table.
const WEIGHTS: [Weight; 17] = [
    weight(DType::F32, Act::F32, 1, 4),
    weight(DType::F16, Act::F32, 1, 2),
    weight(DType::BF16, Act::F32, 1, 2),
    weight(DType::Q4_0, Act::Q8_0, 32, 18),
    weight(DType::Q4_1, Act::Q8_1, 32, 20),
    weight(DType::Q5_0, Act::Q8_0, 32, 22),
    weight(DType::Q5_1, Act::Q8_1, 32, 24),
    weight(DType::Q8_0, Act::Q8_0, 32, 34),
    weight(DType::Q2_K, Act::Q8_K, 256, 84),
    weight(DType::Q3_K, Act::Q8_K, 256, 110),
    weight(DType::Q4_K, Act::Q8_K, 256, 144),
    weight(DType::Q5_K, Act::Q8_K, 256, 176),
    weight(DType::Q6_K, Act::Q8_K, 256, 210),
    // The N:M sparse types (`quant::sparse`): one 64-input block against two Q8_0 blocks.
    weight(DType::Q4_S24, Act::Q8_0, 64, 24),
    weight(DType::Q4_S48, Act::Q8_0, 64, 25),
    weight(DType::Q8_S24, Act::Q8_0, 64, 40),
    weight(DType::Q8_S48, Act::Q8_0, 64, 41),
];

/// First type id of edgellm's extension range (the sparse types).
const EXT_BASE: usize = 1024;
/// Ids below this are ggml's; `EXT_BASE..EXT_BASE + EXT_IDS` are the extension's.
const GGML_IDS: usize = 64;
const EXT_IDS: usize = 16;

/// Index of a type id in [`SLOTS`]: ggml ids as they are, extension ids after them.
const fn slot_index(id: usize) -> Option<usize> {
    if id < GGML_IDS {
        Some(id)
    } else if id >= EXT_BASE && id < EXT_BASE + EXT_IDS {
        Some(GGML_IDS + id - EXT_BASE)
    } else {
        None
    }
}

/// The slot of every type id (`u8::MAX`: no kernels), indexed by [`slot_index`].
const SLOTS: [u8; GGML_IDS + EXT_IDS] = {
    let mut s = [u8::MAX; GGML_IDS + EXT_IDS];
    let mut i = 0;
    while i < WEIGHTS.len() {
        match slot_index(WEIGHTS[i].dtype as usize) {
            Some(j) => s[j] = i as u8,
            None => panic!("a weight type id outside the slot table"),
        }
        i += 1;
    }
    s
};

#[inline]
fn slot(weight: DType) -> Option<usize> {
    match slot_index(weight as usize).map(|j| SLOTS[j]) {
        Some(s) if s != u8::MAX => Some(s as usize),
        _ => None,
    }
}

#[inline]
fn info(weight: DType) -> (usize, Weight) {
    match slot(weight) {
        Some(i) => (i, WEIGHTS[i]),
        None => unsupported(weight),
    }
}

#[cold]
#[track_caller]
fn unsupported(weight: DType) -> ! {
    panic!(
        "edgellm kernels: no dot product for weight type {weight} (supported: {}); \
         check kernels::supports() before building a layer",
        WEIGHTS.iter().map(|w| w.dtype.name()).collect::<Vec<_>>().join(", ")
    )
}

/// Slot, weight row bytes and activation row bytes of rows of `k` values of `weight`.
#[inline]
fn geometry(weight: DType, k: usize) -> (usize, usize, usize) {
    let (i, w) = info(weight);
    let (ablock, abytes) = w.act.geometry();
    if !k.is_multiple_of(w.block) || !k.is_multiple_of(ablock) {
        not_whole(weight, w, k);
    }
    (i, k / w.block * w.bytes, k / ablock * abytes)
}

#[cold]
#[track_caller]
fn not_whole(weight: DType, w: Weight, k: usize) -> ! {
    let act = w.act.dtype();
    panic!(
        "edgellm kernels: {k} values is not a whole number of {}-value {weight} blocks and \
         {}-value {act} activation blocks (rows for {weight} weights)",
        w.block,
        act.block_size()
    )
}

/// Whether the kernels have a dot product for weights of this type.
pub fn supports(weight: DType) -> bool {
    slot(weight).is_some()
}

/// The activation format a weight type's dot product uses: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1
/// (edgellm's layout, see the module docs) for Q4_1/Q5_1, Q8_K for the k-quants, F32 for
/// F32/F16/BF16.
///
/// # Panics
/// If `weight` has no kernels ([`supports`] is false).
pub fn activation_type(weight: DType) -> DType {
    info(weight).1.act.dtype()
}

/// Bytes of one activation row of `k` values quantized for `weight`.
///
/// # Panics
/// If `weight` has no kernels or `k` is not a whole number of weight and activation blocks.
pub fn activation_row_bytes(weight: DType, k: usize) -> usize {
    geometry(weight, k).2
}

/// Quantizes one activation row `x` (its length `k` a multiple of the block size) into `out`
/// (exactly [`activation_row_bytes`]`(weight, k)` bytes) in the layout of
/// [`activation_type`]`(weight)`, with the tier in use.
pub fn quantize_activations(weight: DType, x: &[f32], out: &mut [u8]) {
    active().quantize_activations(weight, x, out)
}

/// Dot product of one weight row (`k` values of `weight`) with one activation row quantized
/// by [`quantize_activations`], with the tier in use.
pub fn vec_dot(weight: DType, w_row: &[u8], act_row: &[u8], k: usize) -> f32 {
    active().vec_dot(weight, w_row, act_row, k)
}

/// Matrix product of weight rows `rows` with `n` activation rows, with the tier in use.
///
/// `w` holds the weight matrix from row 0 (row `r` at `r · row_bytes`, at least up to row
/// `rows.end`), `act` holds `n` quantized activation rows back to back
/// ([`activation_row_bytes`] apart), and
/// `out[t · out_stride + (r − rows.start)] = dot(w_r, act_t)`.
/// Register-tiled over several rows and tokens, so `n > 1` is much faster than `n`
/// calls of [`vec_dot`].
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    weight: DType,
    w: &[u8],
    k: usize,
    rows: Range<usize>,
    act: &[u8],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    active().matmul(weight, w, k, rows, act, n, out, out_stride)
}

/// Dot product of one `Q8_SB` (bitmap sparse) row with one Q8_0 activation row (quantized by
/// [`quantize_activations`] for any of the Q8_0 weight types, e.g. `DType::Q8_0`), with the
/// tier in use: `meta_row` the row's `k/64` 10-byte metadata blocks, `values_row` its
/// companion row (all `c` bytes; see [`crate::quant::sparse`]).
///
/// # Panics
/// If `k` is not a multiple of 64 or a row has the wrong length.
pub fn vec_dot_bitmap(meta_row: &[u8], values_row: &[u8], act_row: &[u8], k: usize) -> f32 {
    active().vec_dot_bitmap(meta_row, values_row, act_row, k)
}

/// Matrix product of `Q8_SB` (bitmap sparse) weight rows `rows` with `n` Q8_0 activation rows,
/// with the tier in use; as [`matmul`], with the weight given as its metadata tensor `meta`
/// (`k/64` 10-byte blocks per row) and its companion values tensor `values` (`c` bytes per
/// row, at least up to row `rows.end`).
///
/// Data checked by [`crate::quant::sparse::validate`] gives the exact product (the kept
/// values in order, the rest zero). Unvalidated data never reads outside `values`, but a
/// row keeping more than `c` values gives unspecified results.
///
/// # Panics
/// If `k` is not a multiple of 64 or a buffer is too short for the rows, tokens or outputs.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bitmap(
    meta: &[u8],
    values: &[u8],
    c: usize,
    k: usize,
    rows: Range<usize>,
    act: &[u8],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    active().matmul_bitmap(meta, values, c, k, rows, act, n, out, out_stride)
}

/// [`matmul_bitmap`] writing through a raw pointer, as [`matmul_to`].
///
/// # Safety
/// As [`matmul_to`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_bitmap_to(
    meta: &[u8],
    values: &[u8],
    c: usize,
    k: usize,
    rows: Range<usize>,
    act: &[u8],
    n: usize,
    out: *mut f32,
    out_len: usize,
    out_stride: usize,
) {
    // SAFETY: the caller's promise.
    unsafe { active().matmul_bitmap_to(meta, values, c, k, rows, act, n, out, out_len, out_stride) }
}

/// Whether the tier in use has a kernel for `Q8_SB` matrices in the bitmap group layout
/// ([`BitmapGroups`]), which is then the faster way to run them (AVX-512 VBMI2).
pub fn packs_bitmap() -> bool {
    active().packs_bitmap()
}

/// Matrix product of rows `rows` of a `Q8_SB` matrix in the bitmap group layout with `n`
/// activation rows quantized for packed Q8_0 ([`quantize_packed_activations`] with
/// `DType::Q8_0`), with the tier in use; as [`matmul_to`], through a raw output pointer.
///
/// # Safety
/// As [`matmul_to`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_bitmap_groups_to(
    w: &BitmapGroups,
    rows: Range<usize>,
    act: &[u8],
    n: usize,
    out: *mut f32,
    out_len: usize,
    out_stride: usize,
) {
    // SAFETY: the caller's promise.
    unsafe { active().matmul_bitmap_groups_to(w, rows, act, n, out, out_len, out_stride) }
}

/// Whether the tier in use has a kernel for packed `weight` matrices ([`pack`]), which is then
/// the faster way to run them. False on the scalar tier (its packed product is the oracle).
pub fn packs(weight: DType) -> bool {
    active().packs(weight)
}

/// Bytes of `m` rows of `k` values of `weight` in the packed layout (whole groups of
/// [`pack_group_rows`] rows; see [`has_packed_layout`] for the types).
///
/// # Panics
/// If `weight` has no packed layout or `k` is not a whole number of blocks.
pub fn packed_len(weight: DType, k: usize, m: usize) -> usize {
    check_packable(weight, k);
    packed::packed_bytes(weight, k, m)
}

/// The `m` GGUF rows of `k` values of `weight` in `plain`, repacked into row-interleaved
/// groups for the packed kernels ([`matmul_packed`]). The layout does not depend on the tier.
///
/// # Panics
/// If `weight` has no packed layout, `k` is not a whole number of blocks, or `plain` does not
/// hold exactly `m` rows.
pub fn pack(weight: DType, k: usize, m: usize, plain: &[u8]) -> Vec<u8> {
    let (_, row_bytes, _) = check_packable(weight, k);
    assert_eq!(
        plain.len(),
        m * row_bytes,
        "edgellm kernels: pack: {m} rows of {k} {weight} values are {} bytes, got {}",
        m * row_bytes,
        plain.len()
    );
    let mut out = vec![0u8; packed::packed_bytes(weight, k, m)];
    packed::pack_into(weight, k, m, plain, &mut out);
    out
}

/// [`pack`] into a zeroed buffer of exactly [`packed_len`]`(weight, k, m)` bytes: a matrix
/// may be packed a slice of whole groups at a time (the groups of rows `r0..r1`, `r0` a
/// multiple of [`pack_group_rows`]`(weight)`, are bytes `packed_len(r0)..packed_len(r1)`).
///
/// # Panics
/// As [`pack`], or if `out` has the wrong length.
pub fn pack_into(weight: DType, k: usize, m: usize, plain: &[u8], out: &mut [u8]) {
    let (_, row_bytes, _) = check_packable(weight, k);
    assert!(
        plain.len() == m * row_bytes && out.len() == packed::packed_bytes(weight, k, m),
        "edgellm kernels: pack_into: {m} rows of {k} {weight} values are {} bytes packing into {}, got {} and {}",
        m * row_bytes,
        packed::packed_bytes(weight, k, m),
        plain.len(),
        out.len()
    );
    packed::pack_into(weight, k, m, plain, out);
}

/// Row `r` of a packed matrix back in the GGUF layout, into `out` (exactly one row's bytes).
///
/// # Panics
/// If `weight` has no packed layout, `packed` does not reach row `r`, or `out` is not one
/// row long.
pub fn unpack_row(weight: DType, k: usize, packed: &[u8], r: usize, out: &mut [u8]) {
    let (_, row_bytes, _) = check_packable(weight, k);
    assert!(
        packed.len() >= packed::packed_bytes(weight, k, r + 1) && out.len() == row_bytes,
        "edgellm kernels: unpack_row: row {r} of {k} {weight} values needs {} packed bytes and a \
         {row_bytes}-byte output, got {} and {}",
        packed::packed_bytes(weight, k, r + 1),
        packed.len(),
        out.len()
    );
    packed::unpack_row_into(weight, k, packed, r, out);
}

/// Bytes of one activation row of `k` values for the packed kernels of `weight`.
///
/// # Panics
/// As [`packed_len`].
pub fn packed_activation_row_bytes(weight: DType, k: usize) -> usize {
    check_packable(weight, k).2
}

/// Quantizes one activation row for the packed kernels of `weight`, with the tier in use.
pub fn quantize_packed_activations(weight: DType, x: &[f32], out: &mut [u8]) {
    active().quantize_packed_activations(weight, x, out)
}

/// [`matmul`] on a packed matrix (`packed` from row 0, as [`pack`] wrote it) and activations
/// quantized by [`quantize_packed_activations`], with the tier in use.
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed(
    weight: DType,
    packed: &[u8],
    k: usize,
    rows: Range<usize>,
    act: &[u8],
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    active().matmul_packed(weight, packed, k, rows, act, n, out, out_stride)
}

/// [`matmul`] writing through a raw pointer: for threads that each write their rows of one
/// output buffer, with no copy.
///
/// # Safety
/// `out` is valid for reads and writes of `out_len` values while the call runs, and no other
/// thread accesses the elements it writes (`t · out_stride + (r − rows.start)` for every token
/// `t < n` and row `r` of the range).
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_to(
    weight: DType,
    w: &[u8],
    k: usize,
    rows: Range<usize>,
    act: &[u8],
    n: usize,
    out: *mut f32,
    out_len: usize,
    out_stride: usize,
) {
    // SAFETY: the caller's promise.
    unsafe { active().matmul_to(weight, w, k, rows, act, n, out, out_len, out_stride) }
}

/// [`matmul_packed`] writing through a raw pointer, as [`matmul_to`].
///
/// # Safety
/// As [`matmul_to`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_packed_to(
    weight: DType,
    packed: &[u8],
    k: usize,
    rows: Range<usize>,
    act: &[u8],
    n: usize,
    out: *mut f32,
    out_len: usize,
    out_stride: usize,
) {
    // SAFETY: the caller's promise.
    unsafe { active().matmul_packed_to(weight, packed, k, rows, act, n, out, out_len, out_stride) }
}

/// Products of a sparse weight with this many tokens or more are best run through
/// [`matmul_sparse_packed_to`] (where [`sparse_packed_type`] has a type): expanding a group
/// of rows costs about what a few tokens' products of it do.
pub const SPARSE_PACKED_MIN_TOKENS: usize = 16;

/// Bytes of packed weights [`matmul_sparse_packed_to`] expands for one packed product.
const SPARSE_PACKED_BYTES: usize = 32 << 10;

/// The dense type whose packed kernel runs a sparse `weight`'s products of many tokens
/// ([`matmul_sparse_packed_to`]) on the tier in use: Q4_0 for `Q4_S24` / `Q4_S48`, Q8_0 for
/// `Q8_S24` / `Q8_S48` / `Q8_SB`; `None` for other types or where the tier has no packed
/// kernel for it. Such products take that type's packed activations
/// ([`quantize_packed_activations`]).
pub fn sparse_packed_type(weight: DType) -> Option<DType> {
    active().sparse_packed_type(weight)
}

/// The product of sparse weight rows `rows` with `n` tokens through the dense packed kernel
/// of [`sparse_packed_type`], with the tier in use: each group of [`PACK_GROUP`] rows is
/// expanded once into that type's packed layout (a scratch buffer of about 32 KiB, several
/// groups per packed product; the sparse matrix is untouched), then meets every token as a
/// packed matrix would. The result is the
/// packed product of the dense equivalent of the weights, bit for bit: the sparse oracle's
/// integer sums (the dense zeros add nothing) in the packed kernels' float order. `w` is the
/// sparse tensor (for `Q8_SB` its metadata, with `values` its companion tensor and width
/// `c`), `act` `n` rows of [`packed_activation_row_bytes`] of the dense type; otherwise as
/// [`matmul_to`].
///
/// # Safety
/// As [`matmul_to`].
///
/// # Panics
/// If `weight` has no [`sparse_packed_type`], `k` is not a multiple of 64, or a buffer is too
/// short for the rows, tokens or outputs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_sparse_packed_to(
    weight: DType,
    w: &[u8],
    values: Option<(&[u8], usize)>,
    k: usize,
    rows: Range<usize>,
    act: &[u8],
    n: usize,
    out: *mut f32,
    out_len: usize,
    out_stride: usize,
) {
    // SAFETY: the caller's promise.
    unsafe { active().matmul_sparse_packed_to(weight, w, values, k, rows, act, n, out, out_len, out_stride) }
}

/// Slot, GGUF row bytes and packed activation row bytes of `weight`, which must have a packed
/// layout, for rows of `k` values.
fn check_packable(weight: DType, k: usize) -> (usize, usize, usize) {
    let Some(act) = packed::packed_act(weight) else {
        panic!("edgellm kernels: {weight} has no packed layout (check has_packed_layout first)")
    };
    let (i, row_bytes, _) = geometry(weight, k);
    (i, row_bytes, k / act.geometry().0 * act.geometry().1)
}

/// A matrix product's arguments before their bounds are checked ([`MatmulCall::run`]).
struct MatmulCall<'a> {
    weight: DType,
    k: usize,
    rows: Range<usize>,
    w: &'a [u8],
    /// Weight bytes the row range needs in `w`'s layout.
    w_need: usize,
    row_bytes: usize,
    act: &'a [u8],
    act_bytes: usize,
    n: usize,
    out_stride: usize,
}

impl MatmulCall<'_> {
    /// Checks the bounds of [`MatmulArgs`] (panicking with the sizes when one is short) and
    /// runs `f` unless there is nothing to compute.
    ///
    /// # Safety
    /// `out` is valid for reads and writes of `out_len` values and no other thread accesses
    /// the elements the product writes; `f` reads `w` within `w_need` bytes and is code this
    /// CPU runs.
    unsafe fn run(self, f: MatmulFn, out: *mut f32, out_len: usize) {
        // SAFETY: the caller's promise.
        unsafe { self.run_with(|m| f(m), out, out_len) }
    }

    /// [`Self::run`] with a closure over the checked arguments.
    ///
    /// # Safety
    /// As [`Self::run`], `f` in place of the kernel.
    unsafe fn run_with(self, f: impl Fn(&mut MatmulArgs<'_>), out: *mut f32, out_len: usize) {
        let block = token_block(self.act_bytes);
        // SAFETY: the caller's promise.
        unsafe { self.run_blocks(f, out, out_len, block) }
    }

    /// [`Self::run_with`] in blocks of `block` tokens (`usize::MAX`: all at once, for kernels
    /// that block the tokens themselves).
    ///
    /// # Safety
    /// As [`Self::run`], `f` in place of the kernel.
    unsafe fn run_blocks(self, f: impl Fn(&mut MatmulArgs<'_>), out: *mut f32, out_len: usize, block: usize) {
        let MatmulCall { weight, k, rows, w, w_need, row_bytes, act, act_bytes, n, out_stride } = self;
        assert!(
            w.len() >= w_need,
            "edgellm kernels: matmul: rows {rows:?} of {k} {weight} values need {w_need} weight bytes, got {}",
            w.len()
        );
        let a_need = n.checked_mul(act_bytes).expect("activation size overflows");
        assert!(
            act.len() >= a_need,
            "edgellm kernels: matmul: {n} activation rows of {k} values for {weight} need {a_need} bytes, got {}",
            act.len()
        );
        let m = rows.len();
        assert!(
            out_stride >= m || n <= 1,
            "edgellm kernels: matmul: out_stride {out_stride} is less than the {m} rows of a token"
        );
        if n == 0 || m == 0 {
            return;
        }
        let o_need =
            (n - 1).checked_mul(out_stride).and_then(|v| v.checked_add(m)).expect("output size overflows");
        assert!(
            out_len >= o_need,
            "edgellm kernels: matmul: {n} tokens × {m} rows with stride {out_stride} need {o_need} outputs, got {out_len}"
        );
        // Tokens in blocks whose activations stay in the L1 cache while every row passes over
        // them (the kernels take all their tokens for each tile of rows). Each output is the
        // same dot product whatever the blocking.
        let mut t0 = 0;
        while t0 < n {
            let nb = block.min(n - t0);
            let off = t0 * out_stride;
            // SAFETY: the caller's promise on `out`; `off + (nb − 1)·out_stride + m ≤ o_need ≤
            // out_len`, so the block's outputs lie within.
            let out = unsafe { Out::from_raw(out.add(off), out_len - off) };
            let act = &act[t0 * act_bytes..];
            let mut args =
                MatmulArgs { w, row_bytes, k, rows: rows.clone(), act, act_bytes, n: nb, out, out_stride };
            f(&mut args);
            t0 += nb;
        }
    }
}

/// Tokens per block of a matrix product: a multiple of 24 (whole register tiles of 8, 6 and 3
/// tokens) whose activation rows take at most 32 KiB (an L1 data cache), at least 24.
fn token_block(act_bytes: usize) -> usize {
    const L1: usize = 32 << 10;
    ((L1 / act_bytes.max(1)) / 24 * 24).max(24)
}

/// The scale of the f32 rounding error of a dot product of these rows: the longest chain of
/// additions and the sum of the absolute values of the partial products (integer products
/// times their float scales). Any two tiers' [`vec_dot`] (or [`matmul`]) results differ by at
/// most [`Tolerance::sum_reorder`](crate::tolerance::Tolerance::sum_reorder) of these.
///
/// # Panics
/// As [`vec_dot`], on rows of the wrong length.
pub fn dot_error_terms(weight: DType, w_row: &[u8], act_row: &[u8], k: usize) -> (usize, f64) {
    check_rows(weight, w_row, act_row, k);
    generic::dot_error_terms(weight, w_row, act_row, k)
}

fn check_rows(weight: DType, w_row: &[u8], act_row: &[u8], k: usize) -> usize {
    let (i, wb, ab) = geometry(weight, k);
    if w_row.len() != wb || act_row.len() != ab {
        bad_rows(weight, k, (wb, ab), (w_row.len(), act_row.len()));
    }
    i
}

#[cold]
#[track_caller]
fn bad_rows(weight: DType, k: usize, want: (usize, usize), got: (usize, usize)) -> ! {
    panic!(
        "edgellm kernels: vec_dot: a {weight} row of {k} values has {} bytes and its activation row \
         {} bytes, got {} and {}",
        want.0, want.1, got.0, got.1
    )
}

/// The table of the tier in use.
pub fn active() -> &'static Kernels {
    static ACTIVE: OnceLock<&'static Kernels> = OnceLock::new();
    ACTIVE.get_or_init(|| Kernels::for_tier(tier()).expect("the chosen tier is supported"))
}

/// Every IEEE half widened to f32 (as bits), indexed by the half's bits: 256 KiB, for the
/// SIMD kernels' block scales.
///
/// Widening a scale through the table costs two loads and no arithmetic, where x86's F16C
/// needs an insert, a conversion and a broadcast on the shuffle port, which the 32-value
/// formats (one scale per 18–34 bytes) would saturate. A model's scales cluster in a few
/// binades, so the lines in use stay in cache.
pub(crate) static F16_TO_F32: [u32; 1 << 16] = {
    let mut t = [0u32; 1 << 16];
    let mut h = 0;
    while h < t.len() {
        t[h] = f16_to_f32_bits(h as u16);
        h += 1;
    }
    t
};

/// IEEE half → single, exactly (NaN payloads kept), in integer arithmetic for the table.
const fn f16_to_f32_bits(h: u16) -> u32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else if exp != 0 {
        sign | ((exp + 112) << 23) | (man << 13)
    } else if man == 0 {
        sign
    } else {
        // Subnormal: man·2⁻²⁴, normalized.
        let (mut e, mut m) = (113u32, man);
        while m & 0x400 == 0 {
            m <<= 1;
            e -= 1;
        }
        sign | (e << 23) | ((m & 0x3ff) << 13)
    }
}

/// Quantizes one activation row; `out` has exactly the activation row's bytes.
pub(crate) type QuantizeFn = unsafe fn(x: &[f32], out: &mut [u8]);
/// Dot product of one weight row and one activation row, both of exactly their row's bytes.
pub(crate) type VecDotFn = unsafe fn(w: &[u8], a: &[u8], k: usize) -> f32;
/// Matrix product over a checked [`MatmulArgs`].
pub(crate) type MatmulFn = unsafe fn(m: &mut MatmulArgs<'_>);
/// `Q8_SB` product over a checked [`MatmulArgs`] (`w`: the metadata rows) and its companion
/// `values`, `c` bytes per row, at least `rows.end · c` bytes.
pub(crate) type BitmapFn = unsafe fn(m: &mut MatmulArgs<'_>, values: &[u8], c: usize);

/// The arguments of a matrix product, checked by [`Kernels::matmul`]: `w` holds at least
/// `rows.end` rows of `row_bytes`, `act` at least `n` rows of `act_bytes`, `out` at least
/// `(n − 1) · out_stride + rows.len()` values, `out_stride ≥ rows.len()`, and `k` is a whole
/// number of weight and activation blocks.
pub(crate) struct MatmulArgs<'a> {
    pub w: &'a [u8],
    pub row_bytes: usize,
    pub k: usize,
    pub rows: Range<usize>,
    pub act: &'a [u8],
    pub act_bytes: usize,
    pub n: usize,
    pub out: Out<'a>,
    pub out_stride: usize,
}

impl MatmulArgs<'_> {
    /// Writes the sums `lanes` of rows `r0..r0 + lanes.len()` for token `t`: those of them
    /// inside the row range (a register tile's group may straddle its ends).
    #[inline(always)]
    pub(crate) fn store_rows(&mut self, t: usize, r0: usize, lanes: &[f32]) {
        let (start, end, o) = (self.rows.start, self.rows.end, t * self.out_stride);
        for r in r0.max(start)..(r0 + lanes.len()).min(end) {
            self.out[o + r - start] = lanes[r - r0];
        }
    }
}

/// The output of a matrix product: `len` values at `ptr`, of which the product writes only
/// those of its rows, so threads may each write their rows of one buffer (see
/// [`matmul_to`]). Indexing is bounds-checked.
pub(crate) struct Out<'a> {
    ptr: *mut f32,
    len: usize,
    _life: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> Out<'a> {
    /// # Safety
    /// `ptr` is valid for reads and writes of `len` values for `'a`, and no other thread
    /// accesses the elements the product writes while it runs.
    unsafe fn from_raw(ptr: *mut f32, len: usize) -> Out<'a> {
        Out { ptr, len, _life: std::marker::PhantomData }
    }

    /// The first value's address (for vector stores within the bounds of [`MatmulArgs`]).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn as_mut_ptr(&mut self) -> *mut f32 {
        self.ptr
    }
}

impl std::ops::Index<usize> for Out<'_> {
    type Output = f32;
    fn index(&self, i: usize) -> &f32 {
        assert!(i < self.len, "matmul output index {i} out of bounds ({})", self.len);
        // SAFETY: in bounds; no other thread accesses this element (`from_raw`).
        unsafe { &*self.ptr.add(i) }
    }
}

impl std::ops::IndexMut<usize> for Out<'_> {
    fn index_mut(&mut self, i: usize) -> &mut f32 {
        assert!(i < self.len, "matmul output index {i} out of bounds ({})", self.len);
        // SAFETY: in bounds; no other thread accesses this element (`from_raw`).
        unsafe { &mut *self.ptr.add(i) }
    }
}

/// One weight type's kernels.
#[derive(Clone, Copy)]
pub(crate) struct TypeKernels {
    pub vec_dot: VecDotFn,
    pub matmul: MatmulFn,
    /// The tier that wrote these kernels (lower than the table's when it falls back).
    pub tier: Tier,
}

/// The kernels of one tier: filled once from the scalar oracles, then overwritten by every
/// SIMD kernel the tier has.
pub struct Kernels {
    tier: Tier,
    quantize: [(QuantizeFn, Tier); Act::COUNT],
    types: [TypeKernels; WEIGHTS.len()],
    /// Products of packed matrices (see `packed`), for the types with a packed layout.
    packed: [Option<(MatmulFn, Tier)>; WEIGHTS.len()],
    /// The `Q8_SB` (bitmap sparse) product.
    bitmap: (BitmapFn, Tier),
    /// The product of `Q8_SB` matrices in the bitmap group layout ([`BitmapGroups`]).
    bitmap_groups: (MatmulFn, Tier),
}

impl Kernels {
    /// The kernels of `tier`, or `None` when this CPU (or build) cannot run them.
    pub fn for_tier(tier: Tier) -> Option<&'static Kernels> {
        static TABLES: [OnceLock<Kernels>; ALL_TIERS.len()] = [const { OnceLock::new() }; ALL_TIERS.len()];
        if !(tier.is_supported() && built(tier)) {
            return None;
        }
        let i = ALL_TIERS.iter().position(|&t| t == tier).expect("every tier is listed");
        Some(TABLES[i].get_or_init(|| Kernels::build(tier)))
    }

    fn build(tier: Tier) -> Kernels {
        let mut k = generic::table();
        #[cfg(target_arch = "x86_64")]
        {
            if matches!(tier, Tier::Avx2 | Tier::Avx512Vnni) {
                x86::fill_avx2(&mut k);
            }
            if tier == Tier::Avx512Vnni {
                x86::fill_avx512vnni(&mut k);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if matches!(tier, Tier::Neon | Tier::NeonDotprod | Tier::NeonI8mm) {
                arm::fill_neon(&mut k);
            }
            if matches!(tier, Tier::NeonDotprod | Tier::NeonI8mm) {
                arm::fill_dotprod(&mut k);
            }
            if tier == Tier::NeonI8mm {
                arm::fill_i8mm(&mut k);
            }
        }
        k.tier = tier;
        k
    }

    /// The tier of this table.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The tier whose code runs the matrix products of `weight` (lower than [`Self::tier`]
    /// where this tier has no kernel of its own for the type), or `None` for an unsupported
    /// type.
    pub fn implementing_tier(&self, weight: DType) -> Option<Tier> {
        slot(weight).map(|i| self.types[i].tier)
    }

    /// The tier whose code quantizes activations for `weight`.
    pub fn quantize_tier(&self, weight: DType) -> Option<Tier> {
        slot(weight).map(|i| self.quantize[WEIGHTS[i].act as usize].1)
    }

    pub(crate) fn set_quantize(&mut self, act: Act, f: QuantizeFn, tier: Tier) {
        self.quantize[act as usize] = (f, tier);
    }

    /// Sets the product of packed `weight` matrices.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn set_packed(&mut self, weight: DType, matmul: MatmulFn, tier: Tier) {
        let i = slot(weight).expect("a weight type with kernels");
        self.packed[i] = Some((matmul, tier));
    }

    /// Replaces the matrix product of `weight` only (its dot product stays that of the lower
    /// tier).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn set_matmul(&mut self, weight: DType, matmul: MatmulFn, tier: Tier) {
        let i = slot(weight).expect("a weight type with kernels");
        self.types[i].matmul = matmul;
        self.types[i].tier = tier;
    }

    /// Sets the product of `Q8_SB` matrices in the bitmap group layout.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn set_bitmap_groups(&mut self, f: MatmulFn, tier: Tier) {
        self.bitmap_groups = (f, tier);
    }

    /// Whether this table has its own (SIMD) kernel for `Q8_SB` matrices in the bitmap group
    /// layout ([`BitmapGroups`]), which is then the faster way to run them.
    pub fn packs_bitmap(&self) -> bool {
        self.bitmap_groups.1 != Tier::Scalar
    }

    /// [`matmul_bitmap_groups_to`] with this table, into a slice.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_bitmap_groups(
        &self,
        w: &BitmapGroups,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        // SAFETY: `out` is an exclusive slice of `out.len()` values.
        unsafe { self.matmul_bitmap_groups_to(w, rows, act, n, out.as_mut_ptr(), out.len(), out_stride) }
    }

    /// [`matmul_bitmap_groups_to`] with this table.
    ///
    /// # Safety
    /// As [`matmul_to`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul_bitmap_groups_to(
        &self,
        w: &BitmapGroups,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: *mut f32,
        out_len: usize,
        out_stride: usize,
    ) {
        let (k, weight) = (w.k(), DType::Q8_SB);
        assert!(
            rows.start <= rows.end && rows.end <= w.rows(),
            "edgellm kernels: matmul_bitmap_groups: rows {rows:?} of a {}-row matrix",
            w.rows()
        );
        let act_bytes = k / 32 * 36;
        let f = self.bitmap_groups.0;
        // `w_need` is the whole buffer: `BitmapGroups::pack` made it, so its headers, masks and
        // code counts agree and every group's codes (and the 64-byte tail) lie within.
        let bytes = w.bytes();
        let m = MatmulCall {
            weight,
            k,
            rows,
            w: bytes,
            w_need: bytes.len(),
            row_bytes: 0,
            act,
            act_bytes,
            n,
            out_stride,
        };
        // A prompt's product takes every token at once: the SIMD kernels expand slabs of
        // groups once, then run them in token blocks themselves.
        let block = if n >= SPARSE_PACKED_MIN_TOKENS { usize::MAX } else { token_block(act_bytes) };
        // SAFETY: the caller's promise on `out`; the layout's invariants above.
        unsafe { m.run_blocks(|a| f(a), out, out_len, block) }
    }

    /// Sets the `Q8_SB` product.
    #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
    pub(crate) fn set_bitmap(&mut self, f: BitmapFn, tier: Tier) {
        self.bitmap = (f, tier);
    }

    /// The tier whose code runs the `Q8_SB` products ([`matmul_bitmap`]).
    pub fn bitmap_tier(&self) -> Tier {
        self.bitmap.1
    }

    /// [`vec_dot_bitmap`] with this table.
    pub fn vec_dot_bitmap(&self, meta_row: &[u8], values_row: &[u8], act_row: &[u8], k: usize) -> f32 {
        let mut out = [0.0f32];
        self.matmul_bitmap(meta_row, values_row, values_row.len(), k, 0..1, act_row, 1, &mut out, 1);
        out[0]
    }

    /// [`matmul_bitmap`] with this table.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_bitmap(
        &self,
        meta: &[u8],
        values: &[u8],
        c: usize,
        k: usize,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        // SAFETY: `out` is an exclusive slice of `out.len()` values.
        unsafe {
            self.matmul_bitmap_to(meta, values, c, k, rows, act, n, out.as_mut_ptr(), out.len(), out_stride)
        }
    }

    /// [`matmul_bitmap_to`] with this table.
    ///
    /// # Safety
    /// As [`matmul_to`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul_bitmap_to(
        &self,
        meta: &[u8],
        values: &[u8],
        c: usize,
        k: usize,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: *mut f32,
        out_len: usize,
        out_stride: usize,
    ) {
        let weight = DType::Q8_SB;
        assert!(
            k.is_multiple_of(64),
            "edgellm kernels: matmul_bitmap: {k} values is not a whole number of 64-value Q8_SB blocks"
        );
        assert!(rows.start <= rows.end, "edgellm kernels: matmul_bitmap: empty-reversed row range {rows:?}");
        let row_bytes = k / 64 * crate::quant::sparse::Q8_SB_BYTES;
        let v_need = rows.end.checked_mul(c).expect("values size overflows");
        assert!(
            values.len() >= v_need,
            "edgellm kernels: matmul_bitmap: rows {rows:?} of {c} companion values need {v_need} bytes, got {}",
            values.len()
        );
        let w_need = rows.end.checked_mul(row_bytes).expect("weight size overflows");
        let act_bytes = k / 32 * 34;
        let f = self.bitmap.0;
        let m = MatmulCall { weight, k, rows, w: meta, w_need, row_bytes, act, act_bytes, n, out_stride };
        // SAFETY: the caller's promise on `out`; `values` holds `c` bytes for every row up to
        // `rows.end` (checked above), which is what the bitmap kernels read.
        unsafe { m.run_with(|args| f(args, values, c), out, out_len) }
    }

    pub(crate) fn set(&mut self, weight: DType, vec_dot: VecDotFn, matmul: MatmulFn, tier: Tier) {
        let i = slot(weight).expect("a weight type with kernels");
        self.types[i] = TypeKernels { vec_dot, matmul, tier };
    }

    /// [`quantize_activations`] with this table.
    pub fn quantize_activations(&self, weight: DType, x: &[f32], out: &mut [u8]) {
        let (i, _, need) = geometry(weight, x.len());
        let act = WEIGHTS[i].act;
        assert_eq!(
            out.len(),
            need,
            "edgellm kernels: quantize_activations for {weight}: {} values need {need} bytes of {}, \
             the output buffer has {}",
            x.len(),
            act.dtype(),
            out.len()
        );
        let f = self.quantize[act as usize].0;
        // SAFETY: `out` has exactly the bytes of `x.len()` (a whole number of blocks) values in
        // the activation format, which is what every quantizer of the table requires; the
        // table only holds SIMD code that this CPU supports (checked in `for_tier`).
        unsafe { f(x, out) }
    }

    /// [`vec_dot`] with this table.
    pub fn vec_dot(&self, weight: DType, w_row: &[u8], act_row: &[u8], k: usize) -> f32 {
        let i = check_rows(weight, w_row, act_row, k);
        let f = self.types[i].vec_dot;
        // SAFETY: both rows have exactly the bytes of `k` values (a whole number of blocks of
        // either format); the table only holds SIMD code that this CPU supports.
        unsafe { f(w_row, act_row, k) }
    }

    /// [`matmul`] with this table.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        weight: DType,
        w: &[u8],
        k: usize,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        // SAFETY: `out` is an exclusive slice of `out.len()` values.
        unsafe { self.matmul_to(weight, w, k, rows, act, n, out.as_mut_ptr(), out.len(), out_stride) }
    }

    /// [`matmul_to`] with this table.
    ///
    /// # Safety
    /// As [`matmul_to`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul_to(
        &self,
        weight: DType,
        w: &[u8],
        k: usize,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: *mut f32,
        out_len: usize,
        out_stride: usize,
    ) {
        let (i, row_bytes, act_bytes) = geometry(weight, k);
        assert!(rows.start <= rows.end, "edgellm kernels: matmul: empty-reversed row range {rows:?}");
        let w_need = rows.end.checked_mul(row_bytes).expect("weight size overflows");
        let m = MatmulCall { weight, k, rows, w, w_need, row_bytes, act, act_bytes, n, out_stride };
        // SAFETY: the caller's promise on `out`; `w_need` is what rows up to `rows.end` take.
        unsafe { m.run(self.types[i].matmul, out, out_len) }
    }
}

impl Kernels {
    /// [`packs`] with this table: whether it has its own (SIMD) kernel for packed `weight`.
    pub fn packs(&self, weight: DType) -> bool {
        slot(weight).and_then(|i| self.packed[i]).is_some_and(|(_, t)| t != Tier::Scalar)
    }

    /// The tier whose code runs the products of packed `weight` matrices, if it has a packed
    /// layout.
    pub fn packed_tier(&self, weight: DType) -> Option<Tier> {
        slot(weight).and_then(|i| self.packed[i]).map(|(_, t)| t)
    }

    /// [`quantize_packed_activations`] with this table.
    pub fn quantize_packed_activations(&self, weight: DType, x: &[f32], out: &mut [u8]) {
        let (_, _, need) = check_packable(weight, x.len());
        assert_eq!(
            out.len(),
            need,
            "edgellm kernels: quantize_packed_activations for {weight}: {} values need {need} bytes, \
             the output buffer has {}",
            x.len(),
            out.len()
        );
        let act = packed::packed_act(weight).expect("checked above");
        let f = self.quantize[act as usize].0;
        // SAFETY: `out` has exactly the bytes of `x.len()` values (a whole number of blocks)
        // in the activation format; the table only holds code that this CPU supports.
        unsafe { f(x, out) }
    }

    /// [`matmul_packed`] with this table.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_packed(
        &self,
        weight: DType,
        packed: &[u8],
        k: usize,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        // SAFETY: `out` is an exclusive slice of `out.len()` values.
        unsafe {
            self.matmul_packed_to(weight, packed, k, rows, act, n, out.as_mut_ptr(), out.len(), out_stride)
        }
    }

    /// [`matmul_packed_to`] with this table.
    ///
    /// # Safety
    /// As [`matmul_to`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul_packed_to(
        &self,
        weight: DType,
        packed: &[u8],
        k: usize,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: *mut f32,
        out_len: usize,
        out_stride: usize,
    ) {
        let (i, row_bytes, act_bytes) = check_packable(weight, k);
        assert!(rows.start <= rows.end, "edgellm kernels: matmul_packed: empty-reversed row range {rows:?}");
        let w_need = packed::packed_bytes(weight, k, rows.end);
        let (f, _) = self.packed[i].expect("every type with a packed layout has an oracle");
        let m = MatmulCall { weight, k, rows, w: packed, w_need, row_bytes, act, act_bytes, n, out_stride };
        // SAFETY: the caller's promise on `out`; `w_need` is what the groups up to `rows.end`
        // take in the packed layout.
        unsafe { m.run(f, out, out_len) }
    }
}

impl Kernels {
    /// [`sparse_packed_type`] with this table.
    pub fn sparse_packed_type(&self, weight: DType) -> Option<DType> {
        packed::sparse_dense(weight).filter(|&d| self.packs(d))
    }

    /// [`matmul_sparse_packed_to`] on slices, with this table.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_sparse_packed(
        &self,
        weight: DType,
        w: &[u8],
        values: Option<(&[u8], usize)>,
        k: usize,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        // SAFETY: `out` is an exclusive slice of `out.len()` values.
        unsafe {
            self.matmul_sparse_packed_to(
                weight,
                w,
                values,
                k,
                rows,
                act,
                n,
                out.as_mut_ptr(),
                out.len(),
                out_stride,
            )
        }
    }

    /// [`matmul_sparse_packed_to`] with this table.
    ///
    /// # Safety
    /// As [`matmul_to`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul_sparse_packed_to(
        &self,
        weight: DType,
        w: &[u8],
        values: Option<(&[u8], usize)>,
        k: usize,
        rows: Range<usize>,
        act: &[u8],
        n: usize,
        out: *mut f32,
        out_len: usize,
        out_stride: usize,
    ) {
        use std::cell::RefCell;
        thread_local! {
            static GROUP_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let Some(dense) = self.sparse_packed_type(weight) else {
            panic!("edgellm kernels: {weight} has no packed product on this tier (check sparse_packed_type)")
        };
        assert!(rows.start <= rows.end, "edgellm kernels: matmul_sparse_packed: reversed row range {rows:?}");
        let gbytes = packed::packed_bytes(dense, k, PACK_GROUP);
        // Groups expanded per packed product: about 32 KiB of packed weights, so that one
        // product meets every token with several groups (a product per group streamed all
        // the tokens' activations from L2 once per eight rows: a third slower).
        let per_call = (SPARSE_PACKED_BYTES / gbytes).max(1);
        GROUP_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.resize(per_call * gbytes, 0);
            let mut r = rows.start;
            while r < rows.end {
                let g0 = r / PACK_GROUP * PACK_GROUP;
                let hi = (g0 + per_call * PACK_GROUP).min(rows.end);
                for (i, gs) in (g0..hi).step_by(PACK_GROUP).enumerate() {
                    let lanes = r.max(gs) - gs..hi.min(gs + PACK_GROUP) - gs;
                    packed::pack_sparse_group(
                        weight,
                        w,
                        values,
                        k,
                        gs,
                        lanes,
                        &mut buf[i * gbytes..(i + 1) * gbytes],
                    );
                }
                let skip = r - rows.start;
                assert!(out_len >= skip, "edgellm kernels: matmul_sparse_packed: output too short");
                // SAFETY: the caller's promise covers rows r..hi of every token, which start
                // `skip` values into `out` (output column r − rows.start).
                unsafe {
                    self.matmul_packed_to(
                        dense,
                        &buf,
                        k,
                        r - g0..hi - g0,
                        act,
                        n,
                        out.add(skip),
                        out_len - skip,
                        out_stride,
                    )
                };
                r = hi;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_geometry_is_the_type_table() {
        for w in WEIGHTS {
            assert_eq!(w.block, w.dtype.block_size(), "{}", w.dtype);
            assert_eq!(w.bytes, w.dtype.type_size(), "{}", w.dtype);
            let (ab, abytes) = w.act.geometry();
            assert_eq!(ab, w.act.dtype().block_size(), "{}", w.dtype);
            assert_eq!(abytes, w.act.dtype().type_size(), "{}", w.dtype);
            assert_eq!(slot(w.dtype).map(|i| WEIGHTS[i].dtype), Some(w.dtype));
        }
        for t in crate::TYPES {
            assert!(slot_index(t.dtype as usize).is_some(), "{}", t.name);
        }
        assert_eq!(slot(DType::Q8_K), None);
        assert_eq!(slot(DType::Q8_SB), None);
        assert_eq!(slot(DType::Q8_S48).map(|i| WEIGHTS[i].dtype), Some(DType::Q8_S48));
    }

    #[test]
    fn f16_table_is_exact() {
        for h in 0..=u16::MAX {
            let want = crate::quant::f16_bits_to_f32(h).to_bits();
            assert_eq!(F16_TO_F32[h as usize], want, "{h:#06x}");
        }
    }
}
