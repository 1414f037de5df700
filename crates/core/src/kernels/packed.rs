//! Weight matrices repacked at load time into row-interleaved groups, for kernels where one
//! integer instruction and one float multiply-add serve eight rows.
//!
//! The kernels on GGUF rows ([`super::matmul`]) keep a block's partial sums of one row spread
//! over the eight lanes of a register, so every block costs a conversion, a multiply and a
//! multiply-add per row (and a horizontal sum per row at the end). Interleaving eight rows
//! four values at a time puts one row in each 32-bit lane: a `vpdpbusd` (or `vpmaddubsw` +
//! `vpmaddwd`) against four activation bytes broadcast to every lane adds four products to
//! each of eight rows, the block's eight row sums come out in one register, and its float
//! work is one conversion and one multiply-add for eight rows.
//!
//! # Layout ([`GROUP`] = 8 rows)
//!
//! Rows `8g..8g + 8` form group `g`; a matrix of `m` rows has `⌈m/8⌉` groups (the missing
//! rows of the last group are zero: scale 0, codes 0), so a packed matrix may be up to 7 rows
//! longer than the GGUF one. A group holds its blocks in order, each *group block* the eight
//! rows' blocks of the same 32 values, the same bytes as the GGUF blocks rearranged:
//!
//! - **Q4_0** (144 bytes): the eight f16 scales (row order), then four 32-byte words `G_j`
//!   (`j = 0..4`). Bytes `4r..4r + 4` of `G_j` are bytes `4j..4j + 4` of row `r`'s nibbles, so
//!   `G_j & 0x0f` holds values `4j..4j + 4` of every row (one row per lane) and `G_j >> 4` values
//!   `16 + 4j..16 + 4j + 4`.
//! - **Q5_0** (176 bytes): the scales and nibble words as Q4_0, then a 32-byte word `H` of
//!   fifth bits: bit `c` of byte `4r + i` is the fifth bit of value `4c + i` of row `r`, so one
//!   shift and mask of `H` gives chunk `c`'s fifth bits in every lane.
//! - **Q8_0** (272 bytes): the scales, then eight 32-byte words `W_c`: bytes `4r..4r + 4` of
//!   `W_c` are codes `4c..4c + 4` of row `r`.
//! - **Q4_1** (160 bytes): the eight f16 scales `d`, the eight f16 minimums `m` (row order),
//!   then the four nibble words `G_j` as Q4_0's (at byte 32).
//! - **Q5_1** (192 bytes): the scales, minimums and nibble words as Q4_1, then the `H` word of
//!   fifth bits as Q5_0's (at byte 160).
//!
//! The k-quants' group blocks hold eight rows' 256-value super-blocks, their bytes rearranged
//! the same way, four bytes of a row per 32-bit lane (the scales stay in the file's encoding
//! and are decoded in registers):
//!
//! - **Q4_K** (1152 bytes): the eight f16 `d`, the eight f16 `dmin`, then three 32-byte words
//!   `S_w` (bytes `4r..4r + 4` are row `r`'s scale bytes `4w..4w + 4`), then 32 nibble words
//!   `G_{p,c}` (at `128 + 32·(8p + c)`, `p = 0..4`, `c = 0..8`): bytes `4r..4r + 4` are row
//!   `r`'s code bytes `32p + 4c..32p + 4c + 4`, so `G_{p,c} & 0x0f` holds values
//!   `64p + 4c..+4` of every row and `G_{p,c} >> 4` values `64p + 32 + 4c..+4`.
//! - **Q6_K** (1680 bytes): the eight f16 `d`, four scale words (at `16 + 32w`: row `r`'s
//!   scales `4w..4w + 4`), 32 words of low nibbles `L_{n,h,c}` (at `144 + 32·(16n + 8h + c)`:
//!   row `r`'s `ql` bytes `64n + 32h + 4c..+4`), then 16 words of high bits `H_{n,c}` (at
//!   `1168 + 32·(8n + c)`: row `r`'s `qh` bytes `32n + 4c..+4`). Values
//!   `128n + 32x + 4c..+4` (`x = 0..4`) are the nibbles of `L_{n,x%2,c}` (low for `x < 2`)
//!   with bits `2x, 2x + 1` of `H_{n,c}` above them.
//!
//! ## The N:M lane layouts (`Q4_S24`, `Q4_S48`, `Q8_S24`, `Q8_S48`; [`NM_GROUP`] = 16 rows)
//!
//! The 4-bit N:M types pack sixteen rows per group (one 512-bit register of 32-bit lanes).
//! `Q4_S48` (4:8) takes per 64-input block a group block of [`NM_GB`] = 576 bytes (36 per
//! row, Q4_0's bytes: the file's 25 become 36 in memory):
//!
//! - eight 64-byte chunk words `W_c` (`c = 0..8`, at `64c`): bytes `4r..4r + 4` are the four
//!   kept inputs of row `r`'s eight-input chunk `c`, in input order, each as
//!   `position | (value − 8) << 4` (position 0–7 within the chunk, bit 3 clear; the value's
//!   nibble two's complement, so `byte & 0xf0` is `16·(value − 8)` as a signed byte);
//! - the sixteen f16 scales (row order, at 512);
//! - two correction words (at 544 + 16h): byte `r` is `Σ(value − 8)` of row `r`'s sixteen kept
//!   values of half `h` (inputs `32h..32h + 32`), within −128..=112, for kernels that bias the
//!   activations to unsigned (`vpdpbusd`, `vpmaddubsw`).
//!
//! `Q4_S24` (2:4) has a compact form of this layout, [`NM24_GB`] = 448 bytes per group block
//! (28 per row: 16 of values, 8 of positions, 2 of scale, 2 of sums; the file's 24 become 28),
//! since every four-input group keeps two inputs: kept inputs 0 and 1 of a chunk lie in its
//! first group, 2 and 3 in its second, and a position needs only its two bits within the group.
//!
//! - four value words `V_p` (at `64p`): byte `4r + i` holds kept input `i` of row `r`'s chunk
//!   `2p` as `(value − 8) & 15` in its high nibble and of chunk `2p + 1` in its low nibble;
//! - two position words `P_q` (at `256 + 64q`): bits `2j, 2j + 1` of byte `4r + i` are the
//!   position of kept input `i` of row `r`'s chunk `4q + j` within its group (0–3), so the
//!   chunk position is that field plus 4 for `i ≥ 2`;
//! - the sixteen f16 scales (at 384) and the two correction words (at 416 + 16h), as above.
//!
//! The 8-bit types (`Q8_S24`, `Q8_S48`) take [`NM8_GB`] = 864 bytes per group block (54 per
//! row, against Q8_0's 68 and the file's 40 or 41): eight value words `V_c` (at `64c`, the
//! kept codes as signed bytes, lanes as above), four position words `P_p` (at `512 + 64p`:
//! byte `4r + j` holds the position of kept input `j` of row `r` in chunk `2p` in its low
//! nibble and in chunk `2p + 1` in its high nibble), the sixteen f16 scales (at 768) and two
//! correction words of sixteen i16 `Σq` (at `800 + 32h`).
//!
//! A chunk whose code is invalid (the format's decoders keep nothing) gets the pattern's first
//! mask with zero values. The kernels gather each row's own activations with the position
//! byte as a permute index (`vpermb`, `vpshufb`, `tbl`) — no expansion of the weights, no
//! decoding of codes — and take `Act::Q8U` activations: per 32 values the Q8_0 scale as an f32
//! (the f16's value) and the codes as `q + 128`, 36 bytes. Per half the oracle's operation is
//! the dense packed Q4_0 kernel's on the dense-equivalent matrix,
//! `acc ← fma(Σc·q, d_w·d_a, acc)`, and every tier gives its bits (tested).
//!
//! # Activations
//!
//! The packed kernels of the symmetric types take the codes as unsigned `u = c + bias` (Q4_0:
//! the nibbles, bias 8; Q5_0: 16; Q8_0: 128 where the CPU has `vpdpbusd`) and subtract
//! `bias·Σq` per block, so their activation format is Q8_0 with the exact sum of its codes:
//! `[d: f16][Σq: i16][q: 32 × i8]`, 36 bytes per 32 values ([`packed_activation_row_bytes`]).
//! The affine types' codes are unsigned already (Q4_1: 0..=15, Q5_1: 0..=31): they take the
//! GGUF kernels' Q8_1 activations as they are, `[d: f16][s = d·Σq: f16][q: 32 × i8]`, whose
//! `s` multiplies the row's minimum. The k-quants take the Q8_K activations as they are
//! (`[d: f32][q: 256 × i8][bsums: 16 × i16]`), whose 16-value sums meet the minimums (Q4_K)
//! and the code bias 32 (Q6_K).
//!
//! # Arithmetic
//!
//! Per row and token the result is `acc ← fma(Σ_b c·q as f32, d_w·d_a, acc)` over the blocks
//! in order, from `acc = 0`, with the exact integer sum of every block; the affine types then
//! add the block's minimum term, `acc ← fma(m_w, s_a, acc)`. The k-quants do the same per
//! super-block with their canonical form (`generic::KBlock`): `S = Σ sc·Σu·q` and
//! `M = Σ off·bsum`, exact integers; Q4_K `acc ← fma(S, d_w·d_a, acc)` then
//! `acc ← fma(M, −(dmin_w·d_a), acc)`, Q6_K `acc ← fma(S − M, d_w·d_a, acc)`. The oracle and
//! every SIMD tier do these operations in this order and give the same bits (tested).

use super::{Act, MatmulArgs};
use crate::quant::read_f16;
use crate::DType;

/// Rows per interleaved group.
pub const GROUP: usize = 8;

/// Whether `weight` has a packed layout (on some tier).
pub fn has_packed_layout(weight: DType) -> bool {
    matches!(
        weight,
        DType::Q4_0
            | DType::Q5_0
            | DType::Q8_0
            | DType::Q4_1
            | DType::Q5_1
            | DType::Q4_K
            | DType::Q6_K
            | DType::Q4_S24
            | DType::Q4_S48
            | DType::Q8_S24
            | DType::Q8_S48
    )
}

/// Rows per group of the N:M lane layouts (the N:M types): one 512-bit register's lanes.
pub const NM_GROUP: usize = 16;
/// Bytes of an N:M lane group block: eight 64-byte chunk words, sixteen f16 scales, two
/// sixteen-byte correction words.
pub(crate) const NM_GB: usize = 576;
/// Bytes of an 8-bit N:M lane group block: eight 64-byte value words, four 64-byte position
/// words, sixteen f16 scales, two 32-byte correction words (i16).
pub(crate) const NM8_GB: usize = 864;

/// Bytes of a compact 2:4 lane group block (`Q4_S24`): four 64-byte value words, two 64-byte
/// position words, sixteen f16 scales, two sixteen-byte correction words.
pub(crate) const NM24_GB: usize = 448;

/// Rows per group and bytes per group block of `weight`'s packed layout.
pub(crate) fn group_geometry(weight: DType) -> (usize, usize) {
    match weight {
        DType::Q4_S24 => (NM_GROUP, NM24_GB),
        DType::Q4_S48 => (NM_GROUP, NM_GB),
        DType::Q8_S24 | DType::Q8_S48 => (NM_GROUP, NM8_GB),
        w => (GROUP, GROUP * w.type_size()),
    }
}

/// Rows per group of `weight`'s packed layout: [`GROUP`], `NM_GROUP` (16) for the N:M types.
pub fn group_rows(weight: DType) -> usize {
    group_geometry(weight).0
}

/// Bytes of the block of one row within a group block, and where each part goes.
trait Lanes {
    /// Copies the GGUF block `src` of lane `r` into the group block `gb`.
    fn put(gb: &mut [u8], r: usize, src: &[u8]);
    /// Copies lane `r` of the group block `gb` back into the GGUF block `dst`.
    fn get(gb: &[u8], r: usize, dst: &mut [u8]);
}

struct Q4_0;
struct Q5_0;
struct Q8_0;
struct Q4_1;
struct Q5_1;
struct Q4K;
struct Q6K;

/// Copies the `(group block offset, GGUF block offset)` runs of four bytes of lane `r`:
/// `runs` lists `(word start in the group block, first GGUF byte, words)`, each word taking
/// the next four bytes of the block.
fn put_words(gb: &mut [u8], r: usize, src: &[u8], runs: &[(usize, usize, usize)]) {
    for &(at, from, words) in runs {
        for w in 0..words {
            gb[at + 32 * w + 4 * r..][..4].copy_from_slice(&src[from + 4 * w..][..4]);
        }
    }
}

/// [`put_words`] undone.
fn get_words(gb: &[u8], r: usize, dst: &mut [u8], runs: &[(usize, usize, usize)]) {
    for &(at, from, words) in runs {
        for w in 0..words {
            dst[from + 4 * w..][..4].copy_from_slice(&gb[at + 32 * w + 4 * r..][..4]);
        }
    }
}

/// Q4_K: `d`, `dmin`, three scale words, 32 nibble words (module docs).
const Q4K_WORDS: [(usize, usize, usize); 2] = [(32, 4, 3), (128, 16, 32)];
/// Q6_K: `d`, four scale words, 32 `ql` words, 16 `qh` words (module docs).
const Q6K_WORDS: [(usize, usize, usize); 3] = [(16, 192, 4), (144, 0, 32), (1168, 128, 16)];

impl Lanes for Q4K {
    fn put(gb: &mut [u8], r: usize, src: &[u8]) {
        gb[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
        gb[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&src[2..4]);
        put_words(gb, r, src, &Q4K_WORDS);
    }
    fn get(gb: &[u8], r: usize, dst: &mut [u8]) {
        dst[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
        dst[2..4].copy_from_slice(&gb[16 + 2 * r..16 + 2 * r + 2]);
        get_words(gb, r, dst, &Q4K_WORDS);
    }
}

impl Lanes for Q6K {
    fn put(gb: &mut [u8], r: usize, src: &[u8]) {
        gb[2 * r..2 * r + 2].copy_from_slice(&src[208..210]);
        put_words(gb, r, src, &Q6K_WORDS);
    }
    fn get(gb: &[u8], r: usize, dst: &mut [u8]) {
        dst[208..210].copy_from_slice(&gb[2 * r..2 * r + 2]);
        get_words(gb, r, dst, &Q6K_WORDS);
    }
}

impl Lanes for Q4_0 {
    fn put(gb: &mut [u8], r: usize, src: &[u8]) {
        gb[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
        for j in 0..4 {
            gb[16 + 32 * j + 4 * r..][..4].copy_from_slice(&src[2 + 4 * j..][..4]);
        }
    }
    fn get(gb: &[u8], r: usize, dst: &mut [u8]) {
        dst[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
        for j in 0..4 {
            dst[2 + 4 * j..][..4].copy_from_slice(&gb[16 + 32 * j + 4 * r..][..4]);
        }
    }
}

/// The fifth bits `qh` (bit `v` of value `v`) of one row as four bytes of an `H` word (bit
/// `c` of byte `i` is that of value `4c + i`).
fn put_high(qh: u32, dst: &mut [u8]) {
    for (i, d) in dst[..4].iter_mut().enumerate() {
        let mut byte = 0u8;
        for c in 0..8 {
            byte |= (((qh >> (4 * c + i)) & 1) as u8) << c;
        }
        *d = byte;
    }
}

/// [`put_high`] undone.
fn get_high(src: &[u8]) -> u32 {
    let mut qh = 0u32;
    for (i, &byte) in src[..4].iter().enumerate() {
        for c in 0..8 {
            qh |= (((byte >> c) & 1) as u32) << (4 * c + i);
        }
    }
    qh
}

impl Lanes for Q5_0 {
    fn put(gb: &mut [u8], r: usize, src: &[u8]) {
        gb[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
        for j in 0..4 {
            gb[16 + 32 * j + 4 * r..][..4].copy_from_slice(&src[6 + 4 * j..][..4]);
        }
        put_high(u32::from_le_bytes([src[2], src[3], src[4], src[5]]), &mut gb[144 + 4 * r..]);
    }
    fn get(gb: &[u8], r: usize, dst: &mut [u8]) {
        dst[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
        for j in 0..4 {
            dst[6 + 4 * j..][..4].copy_from_slice(&gb[16 + 32 * j + 4 * r..][..4]);
        }
        dst[2..6].copy_from_slice(&get_high(&gb[144 + 4 * r..]).to_le_bytes());
    }
}

impl Lanes for Q4_1 {
    fn put(gb: &mut [u8], r: usize, src: &[u8]) {
        gb[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
        gb[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&src[2..4]);
        for j in 0..4 {
            gb[32 + 32 * j + 4 * r..][..4].copy_from_slice(&src[4 + 4 * j..][..4]);
        }
    }
    fn get(gb: &[u8], r: usize, dst: &mut [u8]) {
        dst[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
        dst[2..4].copy_from_slice(&gb[16 + 2 * r..16 + 2 * r + 2]);
        for j in 0..4 {
            dst[4 + 4 * j..][..4].copy_from_slice(&gb[32 + 32 * j + 4 * r..][..4]);
        }
    }
}

impl Lanes for Q5_1 {
    fn put(gb: &mut [u8], r: usize, src: &[u8]) {
        gb[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
        gb[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&src[2..4]);
        for j in 0..4 {
            gb[32 + 32 * j + 4 * r..][..4].copy_from_slice(&src[8 + 4 * j..][..4]);
        }
        put_high(u32::from_le_bytes([src[4], src[5], src[6], src[7]]), &mut gb[160 + 4 * r..]);
    }
    fn get(gb: &[u8], r: usize, dst: &mut [u8]) {
        dst[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
        dst[2..4].copy_from_slice(&gb[16 + 2 * r..16 + 2 * r + 2]);
        for j in 0..4 {
            dst[8 + 4 * j..][..4].copy_from_slice(&gb[32 + 32 * j + 4 * r..][..4]);
        }
        dst[4..8].copy_from_slice(&get_high(&gb[160 + 4 * r..]).to_le_bytes());
    }
}

impl Lanes for Q8_0 {
    fn put(gb: &mut [u8], r: usize, src: &[u8]) {
        gb[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
        for c in 0..8 {
            gb[16 + 32 * c + 4 * r..][..4].copy_from_slice(&src[2 + 4 * c..][..4]);
        }
    }
    fn get(gb: &[u8], r: usize, dst: &mut [u8]) {
        dst[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
        for c in 0..8 {
            dst[2 + 4 * c..][..4].copy_from_slice(&gb[16 + 32 * c + 4 * r..][..4]);
        }
    }
}

/// Byte offset of the scales in an N:M lane group block.
const NM_D: usize = 512;
/// Byte offset of the two correction words in an N:M lane group block.
const NM_CORR: usize = 544;

/// A block's eight chunks as four `(position, code)` slots each, in input order, and the two
/// halves' sums of the codes (bias removed: `value − 8` for 4-bit values). A chunk whose code
/// is invalid (it keeps nothing) gets the pattern's first mask with zero codes.
fn nm_slots(l: crate::quant::sparse::NmLayout, src: &[u8]) -> ([[(u8, i32); 4]; 8], [i32; 2]) {
    let mask = l.keep_mask(src);
    let (q, _) = l.kept_codes(src);
    let fallback = l.pattern.mask(0).expect("code 0 is valid");
    let (mut slots, mut sums) = ([[(0u8, 0i32); 4]; 8], [0i32; 2]);
    for (c, chunk) in slots.iter_mut().enumerate() {
        let m = ((mask >> (8 * c)) & 0xff) as u8;
        // Chunk c's kept values are kept values 4c.. in input order.
        let (mut bits, valid) = if m == 0 { (fallback, false) } else { (m, true) };
        for (i, slot) in chunk.iter_mut().enumerate() {
            let v = if valid { q[4 * c + i] } else { 0 };
            *slot = (bits.trailing_zeros() as u8, v);
            bits &= bits - 1;
            sums[c / 4] += v;
        }
    }
    (slots, sums)
}

/// The code field of a block whose chunks keep `masks` (each a valid mask of the pattern),
/// into `dst` (a GGUF block).
fn nm_put_codes(l: crate::quant::sparse::NmLayout, masks: [u8; 8], dst: &mut [u8]) {
    let b = l.pattern.code_bits() as usize;
    let codes = masks.iter().enumerate().fold(0u64, |acc, (c, &m)| {
        acc | (l.pattern.code(m).expect("the lane layout holds valid masks") as u64) << (b * c)
    });
    let n = l.pattern.code_bytes();
    dst[2..2 + n].copy_from_slice(&codes.to_le_bytes()[..n]);
}

/// An N:M block (GGUF bytes `src`, 4-bit values) into lane `r` of an N:M lane group block
/// (module docs): each chunk's four kept inputs as `position | (value − 8) << 4` bytes in
/// input order, the scale, and the two halves' sums of `value − 8`.
fn nm_put(l: crate::quant::sparse::NmLayout, gb: &mut [u8], r: usize, src: &[u8]) {
    let (slots, sums) = nm_slots(l, src);
    for (c, chunk) in slots.iter().enumerate() {
        for (i, &(pos, v)) in chunk.iter().enumerate() {
            gb[64 * c + 4 * r + i] = pos | ((v as u8 & 0x0f) << 4);
        }
    }
    gb[NM_D + 2 * r..NM_D + 2 * r + 2].copy_from_slice(&src[..2]);
    for (h, &s) in sums.iter().enumerate() {
        gb[NM_CORR + 16 * h + r] = s as i8 as u8;
    }
}

/// [`nm_put`] undone: the GGUF block of lane `r` (codes recomputed from the positions).
fn nm_get(l: crate::quant::sparse::NmLayout, gb: &[u8], r: usize, dst: &mut [u8]) {
    dst[..2].copy_from_slice(&gb[NM_D + 2 * r..NM_D + 2 * r + 2]);
    let qs = l.qs_offset();
    let mut masks = [0u8; 8];
    dst[qs..qs + 16].fill(0);
    for (c, m) in masks.iter_mut().enumerate() {
        for i in 0..4 {
            let byte = gb[64 * c + 4 * r + i];
            *m |= 1 << (byte & 7);
            // Kept value j = 4c + i: the low nibble of qs[j] below 16, else the high one of qs[j − 16].
            let (j, nib) = (4 * c + i, ((byte as i8 >> 4) + 8) as u8);
            dst[qs + j % 16] |= if j < 16 { nib } else { nib << 4 };
        }
    }
    nm_put_codes(l, masks, dst);
}

/// Byte offsets in a compact 2:4 lane group block: the position words, the scales, the
/// correction words.
const NM24_P: usize = 256;
const NM24_D: usize = 384;
const NM24_CORR: usize = 416;

/// A `Q4_S24` block (GGUF bytes `src`) into lane `r` of a compact 2:4 lane group block
/// (module docs): each chunk's four kept values as nibbles of value word `c / 2` (high for even
/// chunks), their positions within their four-input group as the two-bit fields `c % 4` of
/// position word `c / 4`, the scale, and the two halves' sums of `value − 8`.
fn nm24_put(gb: &mut [u8], r: usize, src: &[u8]) {
    let (slots, sums) = nm_slots(Q4_S24, src);
    for (c, chunk) in slots.iter().enumerate() {
        for (i, &(pos, v)) in chunk.iter().enumerate() {
            // 2:4 keeps two inputs of each group of four: kept inputs 0, 1 of a chunk lie in
            // its first group, 2, 3 in its second (also for the fallback mask of a bad code).
            debug_assert_eq!(pos as usize / 4, i / 2);
            let (at, nib) = (64 * (c / 2) + 4 * r + i, v as u8 & 0x0f);
            gb[at] = if c % 2 == 0 { (gb[at] & 0x0f) | nib << 4 } else { (gb[at] & 0xf0) | nib };
            let (at, sh) = (NM24_P + 64 * (c / 4) + 4 * r + i, 2 * (c % 4));
            gb[at] = (gb[at] & !(3 << sh)) | (pos & 3) << sh;
        }
    }
    gb[NM24_D + 2 * r..NM24_D + 2 * r + 2].copy_from_slice(&src[..2]);
    for (h, &s) in sums.iter().enumerate() {
        gb[NM24_CORR + 16 * h + r] = s as i8 as u8;
    }
}

/// [`nm24_put`] undone: the GGUF block of lane `r` (codes recomputed from the positions).
fn nm24_get(gb: &[u8], r: usize, dst: &mut [u8]) {
    dst[..2].copy_from_slice(&gb[NM24_D + 2 * r..NM24_D + 2 * r + 2]);
    let qs = Q4_S24.qs_offset();
    let mut masks = [0u8; 8];
    dst[qs..qs + 16].fill(0);
    for (c, m) in masks.iter_mut().enumerate() {
        for i in 0..4 {
            let field = (gb[NM24_P + 64 * (c / 4) + 4 * r + i] >> (2 * (c % 4))) & 3;
            *m |= 1 << (field | (i as u8 / 2) << 2);
            let byte = gb[64 * (c / 2) + 4 * r + i];
            let nib = if c % 2 == 0 { byte >> 4 } else { byte & 0x0f };
            // Kept value j = 4c + i: the low nibble of qs[j] below 16, else the high one of qs[j − 16].
            let (j, nib) = (4 * c + i, (nib ^ 8) & 0x0f);
            dst[qs + j % 16] |= if j < 16 { nib } else { nib << 4 };
        }
    }
    nm_put_codes(Q4_S24, masks, dst);
}

/// Byte offsets in an 8-bit N:M lane group block: the position words, the scales, the
/// correction words.
const NM8_P: usize = 512;
const NM8_D: usize = 768;
const NM8_CORR: usize = 800;

/// An 8-bit N:M block (GGUF bytes `src`) into lane `r` of an 8-bit N:M lane group block
/// (module docs): each chunk's four kept codes in value word `c`, their positions as nibbles
/// of position word `c / 2` (low for even chunks), the scale, and the two halves' `Σq` as i16.
fn nm8_put(l: crate::quant::sparse::NmLayout, gb: &mut [u8], r: usize, src: &[u8]) {
    let (slots, sums) = nm_slots(l, src);
    for (c, chunk) in slots.iter().enumerate() {
        for (i, &(pos, v)) in chunk.iter().enumerate() {
            gb[64 * c + 4 * r + i] = v as i8 as u8;
            let at = NM8_P + 64 * (c / 2) + 4 * r + i;
            gb[at] = if c % 2 == 0 { (gb[at] & 0xf0) | pos } else { (gb[at] & 0x0f) | (pos << 4) };
        }
    }
    gb[NM8_D + 2 * r..NM8_D + 2 * r + 2].copy_from_slice(&src[..2]);
    for (h, &s) in sums.iter().enumerate() {
        gb[NM8_CORR + 32 * h + 2 * r..][..2].copy_from_slice(&(s as i16).to_le_bytes());
    }
}

/// [`nm8_put`] undone: the GGUF block of lane `r` (codes recomputed from the positions).
fn nm8_get(l: crate::quant::sparse::NmLayout, gb: &[u8], r: usize, dst: &mut [u8]) {
    dst[..2].copy_from_slice(&gb[NM8_D + 2 * r..NM8_D + 2 * r + 2]);
    let qs = l.qs_offset();
    let mut masks = [0u8; 8];
    for (c, m) in masks.iter_mut().enumerate() {
        for i in 0..4 {
            let p = gb[NM8_P + 64 * (c / 2) + 4 * r + i];
            *m |= 1 << (if c % 2 == 0 { p & 7 } else { (p >> 4) & 7 });
            dst[qs + 4 * c + i] = gb[64 * c + 4 * r + i];
        }
    }
    nm_put_codes(l, masks, dst);
}

/// The 8-bit N:M layouts.
const Q8_S24: crate::quant::sparse::NmLayout = match crate::quant::sparse::NmLayout::of(DType::Q8_S24) {
    Some(l) => l,
    None => panic!("Q8_S24 is an N:M type"),
};
const Q8_S48: crate::quant::sparse::NmLayout = match crate::quant::sparse::NmLayout::of(DType::Q8_S48) {
    Some(l) => l,
    None => panic!("Q8_S48 is an N:M type"),
};

/// The 4-bit N:M layouts.
const Q4_S48: crate::quant::sparse::NmLayout = match crate::quant::sparse::NmLayout::of(DType::Q4_S48) {
    Some(l) => l,
    None => panic!("Q4_S48 is an N:M type"),
};

/// The N:M lane kernels' activations (`Act::Q8U`): per 32 values Q8_0's scale as an f32 (the
/// f16's value) and the codes biased to unsigned, `q + 128`; 36 bytes.
pub(crate) fn quantize_q8u(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let (d, q) = super::generic::act_q8_block(xb);
        ob[0..4].copy_from_slice(&half::f16::from_f32(d).to_f32().to_le_bytes());
        for (o, &c) in ob[4..].iter_mut().zip(&q) {
            *o = (c as u8) ^ 0x80;
        }
    }
}

/// Rewrites, in place, the first `34·nb` bytes of `out` (`nb` Q8_0 activation blocks) as the
/// `36·nb` bytes of their Q8U form ([`quantize_q8u`]): for a tier's Q8_0 quantizer.
pub(crate) fn q8_0_to_q8u(out: &mut [u8], nb: usize) {
    for b in (0..nb).rev() {
        let d = read_f16(out, 34 * b);
        out.copy_within(34 * b + 2..34 * b + 34, 36 * b + 4);
        out[36 * b..36 * b + 4].copy_from_slice(&d.to_le_bytes());
        for o in &mut out[36 * b + 4..36 * b + 36] {
            *o ^= 0x80;
        }
    }
}

/// One N:M block (GGUF bytes `w`, 4- or 8-bit values) against its two Q8U activation blocks
/// `ab`: per 32-input half `acc ← fma(Σc·q, d_w·d_a, acc)`, the dense packed Q4_0 / Q8_0
/// kernel's operations on the block's dense equivalent.
fn nm_block_step(weight: DType, w: &[u8], ab: &[u8], acc: f32) -> f32 {
    let l = crate::quant::sparse::NmLayout::of(weight).expect("an N:M type");
    let mask = l.keep_mask(w);
    let (q, dw) = l.kept_codes(w);
    let mut codes = [0i32; 64];
    for c in 0..8 {
        let (mut m, mut j) = ((mask >> (8 * c)) & 0xff, 4 * c);
        while m != 0 {
            codes[8 * c + m.trailing_zeros() as usize] = q[j];
            j += 1;
            m &= m - 1;
        }
    }
    let mut acc = acc;
    for h in 0..2 {
        let a = &ab[36 * h..36 * h + 36];
        let isum: i32 =
            codes[32 * h..32 * h + 32].iter().zip(&a[4..]).map(|(&c, &u)| c * (u as i32 - 128)).sum();
        let da = f32::from_le_bytes([a[0], a[1], a[2], a[3]]);
        acc = (isum as f32).mul_add(dw * da, acc);
    }
    acc
}

/// Copies a GGUF block into (`Put`) or out of (`Get`) a lane of a group block.
type Put = fn(&mut [u8], usize, &[u8]);
type Get = fn(&[u8], usize, &mut [u8]);

/// `put` and `get` of `weight`'s layout.
fn lanes(weight: DType) -> (Put, Get) {
    match weight {
        DType::Q4_0 => (Q4_0::put, Q4_0::get),
        DType::Q5_0 => (Q5_0::put, Q5_0::get),
        DType::Q8_0 => (Q8_0::put, Q8_0::get),
        DType::Q4_1 => (Q4_1::put, Q4_1::get),
        DType::Q5_1 => (Q5_1::put, Q5_1::get),
        DType::Q4_K => (Q4K::put, Q4K::get),
        DType::Q6_K => (Q6K::put, Q6K::get),
        DType::Q4_S24 => (nm24_put, nm24_get),
        DType::Q4_S48 => (|gb, r, src| nm_put(Q4_S48, gb, r, src), |gb, r, dst| nm_get(Q4_S48, gb, r, dst)),
        DType::Q8_S24 => (|gb, r, src| nm8_put(Q8_S24, gb, r, src), |gb, r, dst| nm8_get(Q8_S24, gb, r, dst)),
        DType::Q8_S48 => (|gb, r, src| nm8_put(Q8_S48, gb, r, src), |gb, r, dst| nm8_get(Q8_S48, gb, r, dst)),
        other => unreachable!("{other} has no packed layout"),
    }
}

/// The activation format of the packed kernels of `weight`.
pub(super) fn packed_act(weight: DType) -> Option<Act> {
    match weight {
        DType::Q4_1 | DType::Q5_1 => Some(Act::Q8_1),
        DType::Q4_K | DType::Q6_K => Some(Act::Q8_K),
        DType::Q4_S24 | DType::Q4_S48 | DType::Q8_S24 | DType::Q8_S48 => Some(Act::Q8U),
        w => has_packed_layout(w).then_some(Act::Q8S),
    }
}

/// Bytes of `m` rows of `k` values of `weight` in the packed layout (whole groups).
pub(super) fn packed_bytes(weight: DType, k: usize, m: usize) -> usize {
    let (rows, gb) = group_geometry(weight);
    m.div_ceil(rows) * (k / weight.block_size()) * gb
}

/// Packs `m` GGUF rows of `k` values (`plain`, exactly their bytes) into `out` (exactly
/// [`packed_bytes`], zeroed), the groups split over the thread pool.
pub(super) fn pack_into(weight: DType, k: usize, m: usize, plain: &[u8], out: &mut [u8]) {
    let (put, _) = lanes(weight);
    let (bb, nb) = (weight.type_size(), k / weight.block_size());
    let ((group, gb), rb) = (group_geometry(weight), nb * bb);
    let groups = m.div_ceil(group);
    let out = crate::parallel::DisjointWriter::new(out);
    crate::parallel::for_each_range(groups, 64, |gs| {
        // SAFETY: each range of groups owns its groups' bytes, disjoint from the others'.
        let dst = unsafe { out.slice_mut(gs.start * nb * gb, gs.len() * nb * gb) };
        for (i, g) in gs.enumerate() {
            for b in 0..nb {
                let o = &mut dst[(i * nb + b) * gb..][..gb];
                for r in 0..group.min(m - g * group) {
                    put(o, r, &plain[(g * group + r) * rb + b * bb..][..bb]);
                }
            }
        }
    });
}

/// The dense type whose packed layout holds a sparse type's weights exactly: Q4_0 for the
/// 4-bit N:M types (a kept value's nibble is the same, a dropped one is nibble 8, i.e. zero),
/// Q8_0 for the 8-bit N:M types and `Q8_SB` (a dropped value is code 0). Each 64-input sparse
/// block becomes two 32-value blocks with the sparse block's scale.
pub(super) fn sparse_dense(weight: DType) -> Option<DType> {
    match weight {
        DType::Q4_S24 | DType::Q4_S48 => Some(DType::Q4_0),
        DType::Q8_S24 | DType::Q8_S48 | DType::Q8_SB => Some(DType::Q8_0),
        _ => None,
    }
}

/// Rows `g0 + lanes.start..g0 + lanes.end` of a sparse matrix `w` (`values`: a `Q8_SB`
/// matrix's companion tensor and its width `c`) expanded into one packed group of their dense
/// type ([`sparse_dense`]) in `out`, exactly one group of `k` values
/// (`packed_bytes(dense, k, GROUP)`); the other lanes are zero. The codes are those the sparse
/// oracle multiplies (`generic::nm_block_sums` / `bitmap_block_sums`): invalid N:M codes keep
/// nothing, a bitmap row's values past its `c` bytes are zero.
///
/// # Panics
/// If `weight` is not sparse, `k` is not a multiple of 64, or a row lies outside `w` (or
/// `values`).
pub(super) fn pack_sparse_group(
    weight: DType,
    w: &[u8],
    values: Option<(&[u8], usize)>,
    k: usize,
    g0: usize,
    lanes: std::ops::Range<usize>,
    out: &mut [u8],
) {
    use crate::quant::sparse::{bitmap_mask, NmLayout, Q8_SB_BYTES, QK_SPARSE};
    let dense = sparse_dense(weight).unwrap_or_else(|| panic!("{weight} is not a sparse type"));
    assert!(k.is_multiple_of(QK_SPARSE), "sparse rows of {k} values");
    let bb = dense.type_size();
    let gb = GROUP * bb;
    let nb = k / QK_SPARSE;
    assert_eq!(out.len(), 2 * nb * gb, "one packed group of {k} {dense} values");
    assert!(lanes.end <= GROUP);
    out.fill(0);
    let (put, _) = self::lanes(dense);
    let mut codes = [0i8; QK_SPARSE];
    let mut blk = [0u8; 34];
    // The 64 codes of block `b` of lane `r` (scale bytes `d`) as the two dense GGUF blocks they
    // equal, put into lane `r` of group blocks `2b` and `2b + 1` by the layout's own `put`.
    let mut emit = |out: &mut [u8], b: usize, r: usize, d: [u8; 2], codes: &[i8; QK_SPARSE]| {
        for h in 0..2 {
            let q = &codes[32 * h..32 * h + 32];
            blk[..2].copy_from_slice(&d);
            if dense == DType::Q4_0 {
                for j in 0..16 {
                    blk[2 + j] = ((q[j] + 8) as u8 & 0x0f) | (((q[j + 16] + 8) as u8) << 4);
                }
            } else {
                for (o, &c) in blk[2..34].iter_mut().zip(q) {
                    *o = c as u8;
                }
            }
            put(&mut out[(2 * b + h) * gb..][..gb], r, &blk[..bb]);
        }
    };
    for r in lanes {
        let row = g0 + r;
        if weight == DType::Q8_SB {
            let (vals, c) = values.expect("a Q8_SB matrix comes with its values");
            let rb = nb * Q8_SB_BYTES;
            let meta = &w[row * rb..(row + 1) * rb];
            let vrow = &vals[row * c..(row + 1) * c];
            let mut o = 0;
            for b in 0..nb {
                let mb = &meta[b * Q8_SB_BYTES..(b + 1) * Q8_SB_BYTES];
                codes.fill(0);
                // The kept inputs in order, each taking the row's next value.
                let mut mask = bitmap_mask(mb);
                while mask != 0 {
                    codes[mask.trailing_zeros() as usize] = vrow.get(o).map_or(0, |&v| v as i8);
                    o += 1;
                    mask &= mask - 1;
                }
                emit(out, b, r, [mb[0], mb[1]], &codes);
            }
        } else if weight == DType::Q4_S24 {
            // The headline format straight to Q4_0 nibbles, a table lookup per 2-of-4 group.
            let rb = nb * Q4_S24_BYTES;
            for b in 0..nb {
                let wb = &w[row * rb + b * Q4_S24_BYTES..][..Q4_S24_BYTES];
                let blocks = expand_q4_s24(wb);
                for (h, blk) in blocks.iter().enumerate() {
                    put(&mut out[(2 * b + h) * gb..][..gb], r, blk);
                }
            }
        } else {
            let l = NmLayout::of(weight).expect("an N:M type");
            let (lb, rb) = (l.bytes(), nb * l.bytes());
            for b in 0..nb {
                let wb = &w[row * rb + b * lb..row * rb + (b + 1) * lb];
                let mask = l.keep_mask(wb);
                let (q, _) = l.kept_codes(wb);
                codes.fill(0);
                for c in 0..8 {
                    // Chunk c's kept values are kept values 4c.. in input order.
                    let (mut m, mut j) = ((mask >> (8 * c)) & 0xff, 4 * c);
                    while m != 0 {
                        codes[8 * c + m.trailing_zeros() as usize] = q[j] as i8;
                        j += 1;
                        m &= m - 1;
                    }
                }
                emit(out, b, r, [wb[0], wb[1]], &codes);
            }
        }
    }
}

/// The `Q4_S24` layout: scale, six bytes of codes, sixteen of kept nibbles.
const Q4_S24: crate::quant::sparse::NmLayout = match crate::quant::sparse::NmLayout::of(DType::Q4_S24) {
    Some(l) => l,
    None => panic!("Q4_S24 is an N:M type"),
};
/// Bytes of a `Q4_S24` block.
const Q4_S24_BYTES: usize = Q4_S24.bytes();

/// Per 2-of-4 group pattern `p` (a seventh: an invalid code's, keeping nothing) and byte `v`
/// of its two kept nibbles (the first in the low half): the group's four Q4_0 nibbles, one
/// per byte — the kept ones at the pattern's positions, 8 (the value 0) elsewhere.
static GROUP_NIBBLES_2_4: [[u32; 256]; 7] = {
    let mut t = [[0x0808_0808u32; 256]; 7];
    let mut p = 0;
    while p < 6 {
        let m = crate::quant::sparse::PATTERNS_2_4[p];
        let i0 = m.trailing_zeros();
        let i1 = (m & !(1 << i0)).trailing_zeros();
        let mut v = 0;
        while v < 256 {
            let mut x = 0x0808_0808u32;
            x &= !(0xff << (8 * i0) | 0xff << (8 * i1));
            x |= ((v & 15) as u32) << (8 * i0) | ((v >> 4) as u32) << (8 * i1);
            t[p][v] = x;
            v += 1;
        }
        p += 1;
    }
    t
};

/// A `Q4_S24` block as the two Q4_0 blocks it equals (its scale, and `8 + value` nibbles with
/// `8` at dropped inputs; invalid codes keep nothing, as the decoders say).
fn expand_q4_s24(wb: &[u8]) -> [[u8; 18]; 2] {
    let codes = Q4_S24.code_bits_le(wb);
    let qs = &wb[Q4_S24.qs_offset()..Q4_S24_BYTES];
    // Group g's four nibbles (inputs 4g..4g + 4) in the bytes of `g4[g]`.
    let mut g4 = [0u32; 16];
    for c in 0..8 {
        let code = (codes >> (6 * c)) as usize & 63;
        let (lo, hi) = if code < 36 { (code % 6, code / 6) } else { (6, 6) };
        for (g, p) in [(2 * c, lo), (2 * c + 1, hi)] {
            // Kept values 2g, 2g + 1: low nibbles of qs[2g..] for g < 8, high ones of qs[2g − 16..].
            let (a, b) = (qs[(2 * g) % 16], qs[(2 * g + 1) % 16]);
            let v = if g < 8 { (a & 15) | (b << 4) } else { (a >> 4) | (b & 0xf0) };
            g4[g] = GROUP_NIBBLES_2_4[p][v as usize];
        }
    }
    let mut out = [[0u8; 18]; 2];
    for (h, blk) in out.iter_mut().enumerate() {
        blk[..2].copy_from_slice(&wb[..2]);
        // Q4_0 byte j: input j in the low nibble, input j + 16 in the high one.
        for gg in 0..4 {
            let word = g4[8 * h + gg] | g4[8 * h + gg + 4] << 4;
            blk[2 + 4 * gg..6 + 4 * gg].copy_from_slice(&word.to_le_bytes());
        }
    }
    out
}

/// Row `r` of a packed matrix (`packed` from row 0) back in the GGUF layout, into `out`
/// (exactly one row's bytes).
pub(super) fn unpack_row_into(weight: DType, k: usize, packed: &[u8], r: usize, out: &mut [u8]) {
    let (_, get) = lanes(weight);
    let (bb, nb) = (weight.type_size(), k / weight.block_size());
    let (group, gb) = group_geometry(weight);
    let (g, lane) = (r / group, r % group);
    for b in 0..nb {
        get(&packed[(g * nb + b) * gb..][..gb], lane, &mut out[b * bb..][..bb]);
    }
}

/// Packed-kernel activations (see the module docs): the Q8_0 block plus `Σq`.
pub(crate) fn quantize_q8s(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let (d, q) = super::generic::act_q8_block(xb);
        let sum: i32 = q.iter().map(|&c| c as i32).sum();
        ob[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        ob[2..4].copy_from_slice(&(sum as i16).to_le_bytes());
        for (o, &c) in ob[4..].iter_mut().zip(&q) {
            *o = c as u8;
        }
    }
}

/// The oracle of the packed products: for every row of the range and token, the blocks'
/// exact integer sums accumulated with one fused multiply-add each (the k-quants: per
/// super-block, [`k_block_step`]).
pub(crate) fn matmul(weight: DType, m: &mut MatmulArgs<'_>) {
    let (_, get) = lanes(weight);
    let (act_values, act_bytes) = packed_act(weight).expect("a packed type").geometry();
    let (bb, nb) = (weight.type_size(), m.k / weight.block_size());
    // Activation bytes per weight block (an N:M block meets two activation blocks).
    let ab_bytes = weight.block_size() / act_values * act_bytes;
    let (group, gb) = group_geometry(weight);
    let step = match weight {
        DType::Q4_S24 | DType::Q4_S48 | DType::Q8_S24 | DType::Q8_S48 => nm_block_step,
        w if w.block_size() == crate::quant::QK_K => k_block_step,
        _ => legacy_block_step,
    };
    let mut block = [0u8; 210]; // the largest block with a packed layout (Q6_K)
    for t in 0..m.n {
        let a = &m.act[t * m.act_bytes..(t + 1) * m.act_bytes];
        for (i, r) in m.rows.clone().enumerate() {
            let (g, lane) = (r / group, r % group);
            let mut acc = 0.0f32;
            for b in 0..nb {
                get(&m.w[(g * nb + b) * gb..][..gb], lane, &mut block[..bb]);
                acc = step(weight, &block[..bb], &a[b * ab_bytes..][..ab_bytes], acc);
            }
            m.out[t * m.out_stride + i] = acc;
        }
    }
}

/// One legacy block (GGUF bytes `w`) against its activation block `ab` (Q8S or Q8_1) added to
/// `acc`: `fma(Σc·q, d_w·d_a, acc)`, then for the affine types `fma(m_w, s_a, ·)`.
fn legacy_block_step(weight: DType, w: &[u8], ab: &[u8], acc: f32) -> f32 {
    let (c, dw, mw) = super::generic::legacy_codes(weight, w);
    let isum: i32 = c.iter().zip(&ab[4..]).map(|(&c, &q)| c * q as i8 as i32).sum();
    let acc = (isum as f32).mul_add(dw * read_f16(ab, 0), acc);
    if matches!(weight, DType::Q4_1 | DType::Q5_1) {
        mw.mul_add(read_f16(ab, 2), acc)
    } else {
        acc
    }
}

/// One k-quant super-block (GGUF bytes `w`) against its Q8_K block `ab` added to `acc`: the
/// canonical form's `S = Σ sc·Σu·q` and `M = Σ off·bsum`, then the float steps of the module
/// docs.
fn k_block_step(weight: DType, w: &[u8], ab: &[u8], acc: f32) -> f32 {
    let kb = super::generic::kblock(weight, w);
    let da = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]);
    let (mut s, mut mm) = (0i32, 0i32);
    for grp in 0..16 {
        let q = &ab[4 + 16 * grp..][..16];
        let u = &kb.u[16 * grp..][..16];
        let gs: i32 = u.iter().zip(q).map(|(&u, &q)| u as i32 * q as i8 as i32).sum();
        s += kb.sc[grp] as i32 * gs;
        mm += kb.off[grp] as i32 * i16::from_le_bytes([ab[260 + 2 * grp], ab[261 + 2 * grp]]) as i32;
    }
    if kb.affine {
        let acc = (s as f32).mul_add(kb.d * da, acc);
        (mm as f32).mul_add(-(kb.dm * da), acc)
    } else {
        ((s - mm) as f32).mul_add(kb.d * da, acc)
    }
}

pub(crate) fn matmul_q4_0(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q4_0, m)
}
pub(crate) fn matmul_q5_0(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q5_0, m)
}
pub(crate) fn matmul_q8_0(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q8_0, m)
}
pub(crate) fn matmul_q4_1(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q4_1, m)
}
pub(crate) fn matmul_q5_1(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q5_1, m)
}
pub(crate) fn matmul_q4_k(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q4_K, m)
}
pub(crate) fn matmul_q6_k(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q6_K, m)
}
pub(crate) fn matmul_q4_s24(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q4_S24, m)
}
pub(crate) fn matmul_q4_s48(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q4_S48, m)
}
pub(crate) fn matmul_q8_s24(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q8_S24, m)
}
pub(crate) fn matmul_q8_s48(m: &mut MatmulArgs<'_>) {
    matmul(DType::Q8_S48, m)
}

#[cfg(test)]
mod tests {
    use super::expand_q4_s24;
    use crate::quant::dequantize;
    use crate::DType;

    /// The table-driven `Q4_S24` expansion equals the format's dequantization (the oracle) for
    /// every block, invalid codes (36..64: keep nothing) included.
    #[test]
    fn q4_s24_expansion_equals_dequantization() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u8
        };
        for i in 0..2000 {
            let mut blk = [0u8; 24];
            blk.iter_mut().for_each(|b| *b = next());
            // A normal scale (0x3c00 = 1.0 and neighbours).
            blk[0] = next();
            blk[1] = 0x3c;
            // Mostly valid codes, every fourth block with some invalid ones.
            let mut codes = 0u64;
            for c in 0..8 {
                let code = if i % 4 == 0 { next() as u64 & 63 } else { next() as u64 % 36 };
                codes |= code << (6 * c);
            }
            blk[2..8].copy_from_slice(&codes.to_le_bytes()[..6]);
            let want = dequantize(DType::Q4_S24, &blk, 64).unwrap();
            let got: Vec<f32> =
                expand_q4_s24(&blk).iter().flat_map(|b| dequantize(DType::Q4_0, b, 32).unwrap()).collect();
            assert_eq!(got, want, "block {i}: {blk:?}");
        }
    }
}
