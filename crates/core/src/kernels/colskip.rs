//! Column-skipping products for sparse activations (TEAL-style activation sparsity).
//!
//! When most of a token's input values are zero (thresholded hidden states), the weight
//! columns they multiply need not be read at all. The GGUF layout stores each *row*
//! contiguously, so a zero input saves nothing; this module repacks a weight at load time into
//! a *column-blocked* layout in which every input column of a tile of rows is one contiguous,
//! cache-line-aligned run of codes, and the product reads only the runs of the non-zero inputs.
//!
//! The arithmetic is exactly that of the dense kernels on the same (thresholded) input: the
//! activation row is quantized to Q8_0 as for the dense product, the active columns are its
//! non-zero codes ([`ActiveColumns`]), every block's integer sum `Σ c·q` is exact (zeros
//! contribute nothing), and the float work per row and block is the scalar oracle's
//! `acc += (d_w·d_a)·Σ` in block order. So every tier gives the bits of the scalar dense
//! oracle on the thresholded input (tested), and blocks whose codes are all zero are skipped
//! whole (they would add `±0`).
//!
//! # Layout
//!
//! Rows form tiles of [`TILE`] (128) rows; the last tile may have 64 (the row count must be a
//! multiple of [`UNIT`] = 64). A tile holds the `k/32` input blocks in order; a block of a tile
//! of `h` rows is, for Q4_0 and Q5_0:
//!
//! - the `h` weight scales (f16, row order): `2h` bytes;
//! - the nibble plane: 32 columns of `h/2` bytes each. Column `j`'s run has one 32-byte word
//!   per 64-row unit `u`, whose byte `i` holds the low four bits of the code of row `64u + i`
//!   (low nibble) and of row `64u + 32 + i` (high nibble);
//! - Q5_0 only: the fifth-bit plane: 32 columns of `h/8` bytes, one little-endian u64 per
//!   unit whose bit `i` is the fifth bit of row `64u + i`.
//!
//! Codes are kept unsigned (`u = c + 8` for Q4_0, `c + 16` for Q5_0); the kernels subtract
//! `bias·Σq` over the active columns. For Q8_0 a block is:
//!
//! - the `h` weight scales (f16, row order): `2h` bytes;
//! - the code plane: 32 columns of `h` bytes each, column `j`'s run holding the code of row
//!   `i` in its byte `i` (the file's codes, transposed): unsigned `c + 128` on x86 (the
//!   operand `vpdpbusd` takes, and `vpmaddwd` after zero-extension), the signed code itself on
//!   AArch64 (what `smull` takes) — the layout lives in memory only, so each architecture
//!   keeps its kernels' form.
//!
//! Q4_K's blocks are its 256-value super-blocks (against Q8_K activations, whose 32-value
//! sub-blocks the gather lists as blocks of their own); a block of a tile of `h` rows is:
//!
//! - the `h` super-block scales `d` (f16, row order), then the `h` minimum scales `dmin`;
//! - the eight sub-blocks' 6-bit scales, `h` bytes per sub-block (row order), then their
//!   eight 6-bit minimums likewise: `20h` bytes of head in all;
//! - the nibble plane of its 256 columns, as Q4_0's (codes unsigned 0..15, no bias).
//!
//! Per row and super-block the integer sums `s = Σ_j sc_j·Σ u·q` and `m = Σ_j min_j·Σq`
//! (the sub-blocks' code sums) are exact, and the float work is the oracle's
//! `acc += d·d_a·s − dmin·d_a·m`, so Q4_K too gives the dense oracle's bits.
//!
//! Every part is a multiple of 64 bytes, so with the buffer 64-byte aligned ([`ColPacked`]
//! sees to it) one column of a 128-row Q4_0/Q5_0/Q4_K tile is one cache line (two for Q8_0).
//! Only Q4_0, Q5_0, Q8_0 and Q4_K have this layout ([`colskip_supports`]); other types keep
//! the dense kernels (on the thresholded input, the same math).

use std::ops::Range;

use crate::quant::{read_f16, scale_min_k4};
use crate::DType;

use super::Tier;

/// Rows per tile of the column-blocked layout (the last tile may have [`UNIT`]).
pub const TILE: usize = 128;
/// Rows per unit: the row count must be a multiple of it.
pub const UNIT: usize = 64;

/// Whether `weight` has a column-blocked layout and column-skipping kernels.
pub fn colskip_supports(weight: DType) -> bool {
    matches!(weight, DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::Q4_K)
}

/// (code bias, active columns per 16-bit partial sum) of a supported type: the partial sums
/// `Σ (u − bias)·q` of that many columns fit in an i16 (`|u − bias| ≤ bias`, `|q| ≤ 127`).
/// Q8_0's bias is [`Q8_BIAS`]; two of its signed products fit an i16.
fn bias_and_chunk(weight: DType) -> (i32, usize) {
    match weight {
        DType::Q4_0 => (8, 32),
        DType::Q5_0 => (16, 16),
        DType::Q8_0 => (Q8_BIAS, 2),
        // Unsigned codes against Q8_K's (which reach −128): centred on 8, 16 columns fit.
        DType::Q4_K => (8, 16),
        other => unreachable!("{other} has no column-blocked layout"),
    }
}

/// The bias of Q8_0's stored codes: 128 (unsigned) on x86, 0 (signed) elsewhere.
const Q8_BIAS: i32 = if cfg!(target_arch = "x86_64") { 128 } else { 0 };

/// Bytes of one block (32 input columns) of a tile of `h` rows.
fn block_bytes(weight: DType, h: usize) -> usize {
    match weight {
        DType::Q4_0 => 2 * h + 32 * (h / 2),
        DType::Q5_0 => 2 * h + 32 * (h / 2) + 32 * (h / 8),
        DType::Q8_0 => 2 * h + 32 * h,
        DType::Q4_K => head_bytes(weight, h) + 256 * (h / 2),
        other => unreachable!("{other} has no column-blocked layout"),
    }
}

/// Input columns of one block of the layout: 32, or Q4_K's 256.
fn block_cols(weight: DType) -> usize {
    match weight {
        DType::Q4_K => 256,
        _ => 32,
    }
}

/// Bytes of a block's head (its scales) before the code runs, in a tile of `h` rows.
fn head_bytes(weight: DType, h: usize) -> usize {
    match weight {
        DType::Q4_K => 20 * h,
        _ => 2 * h,
    }
}

/// Where the run of column `col` (0..32) of activation block `index` (32 columns) lies in a
/// tile of `h` rows: (the byte offset of its layout block, the run's offset in that block).
fn run_at(weight: DType, h: usize, index: usize, col: usize) -> (usize, usize) {
    let per = block_cols(weight) / 32;
    let (b, sub) = (index / per, index % per);
    (b * block_bytes(weight, h), head_bytes(weight, h) + (32 * sub + col) * run_bytes(weight, h))
}

/// Bytes of one column's run of codes in a block of a tile of `h` rows (Q5_0's fifth-bit
/// run not counted).
fn run_bytes(weight: DType, h: usize) -> usize {
    match weight {
        DType::Q8_0 => h,
        _ => h / 2,
    }
}

/// Rows of tile `t` of an `m`-row matrix.
fn tile_rows(m: usize, t: usize) -> usize {
    TILE.min(m - t * TILE)
}

/// A weight matrix in the column-blocked layout (see the module docs), 64-byte aligned.
#[derive(Clone)]
pub struct ColPacked {
    weight: DType,
    k: usize,
    m: usize,
    buf: Vec<u8>,
    /// Where the aligned layout starts in `buf`.
    off: usize,
    len: usize,
}

impl ColPacked {
    /// Repacks `m` GGUF rows of `k` values of `weight` (`plain`), or `None` when the type has
    /// no column-blocked layout, `k` is not a whole number of 32-value blocks, `m` is not a
    /// multiple of [`UNIT`], or `plain` is not exactly `m` rows.
    pub fn pack(weight: DType, k: usize, m: usize, plain: &[u8]) -> Option<ColPacked> {
        let len = ColPacked::len_for(weight, k, m)?;
        let bc = block_cols(weight);
        let row_bytes = k / bc * weight.type_size();
        if plain.len() != m * row_bytes {
            return None;
        }
        let mut buf = vec![0u8; len + 64];
        let off = buf.as_ptr().align_offset(64).min(64);
        let out = &mut buf[off..off + len];
        let mut pos = 0;
        for t in 0..m.div_ceil(TILE) {
            let h = tile_rows(m, t);
            for b in 0..k / bc {
                let bb = &mut out[pos..pos + block_bytes(weight, h)];
                pack_block(weight, plain, row_bytes, t * TILE, h, b, bb);
                pos += bb.len();
            }
        }
        Some(ColPacked { weight, k, m, buf, off, len })
    }

    /// Bytes of the layout of `m` rows of `k` values of `weight` (what [`ColPacked::pack`]
    /// allocates, less its alignment slack), or `None` where it would not pack.
    pub fn len_for(weight: DType, k: usize, m: usize) -> Option<usize> {
        let bc = if colskip_supports(weight) { block_cols(weight) } else { return None };
        if m == 0 || !m.is_multiple_of(UNIT) || k == 0 || !k.is_multiple_of(bc) {
            return None;
        }
        Some((0..m.div_ceil(TILE)).map(|t| k / bc * block_bytes(weight, tile_rows(m, t))).sum())
    }

    /// The weight type.
    pub fn dtype(&self) -> DType {
        self.weight
    }

    /// Input width.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Rows.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Number of row tiles.
    pub fn tiles(&self) -> usize {
        self.m.div_ceil(TILE)
    }

    /// Rows `tiles` cover.
    pub fn tile_row_range(&self, tiles: Range<usize>) -> Range<usize> {
        (tiles.start * TILE).min(self.m)..(tiles.end * TILE).min(self.m)
    }

    /// The layout's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }

    /// Bytes of weight data a product with `act` reads: the scales of every block with an
    /// active column and the code runs of the active columns.
    pub fn bytes_read(&self, act: &ActiveColumns) -> usize {
        let (scales, col) = match self.weight {
            DType::Q4_0 => (2, 1.0 / 2.0),
            DType::Q8_0 => (2, 1.0),
            _ => (2, 1.0 / 2.0 + 1.0 / 8.0),
        };
        let cols = act.cols.len();
        if self.weight == DType::Q4_K {
            // The heads of the super-blocks with an active column (20 bytes a row); the
            // blocks are in order, so a super-block's are adjacent.
            let supers = act
                .blocks
                .iter()
                .enumerate()
                .filter(|&(i, b)| i == 0 || act.blocks[i - 1].index / 8 != b.index / 8)
                .count();
            return supers * 20 * self.m + cols * self.m / 2;
        }
        let blocks = act.blocks.len();
        ((blocks * scales) as f64 * self.m as f64 + cols as f64 * col * self.m as f64) as usize
    }

    /// Byte offset of tile `t`.
    fn tile_offset(&self, t: usize) -> usize {
        let full = self.k / block_cols(self.weight) * block_bytes(self.weight, TILE);
        t * full
    }
}

/// Writes block `b` of the tile of rows `r0..r0 + h` into `out` (zeroed).
fn pack_block(weight: DType, plain: &[u8], row_bytes: usize, r0: usize, h: usize, b: usize, out: &mut [u8]) {
    let tb = weight.type_size();
    if weight == DType::Q4_K {
        let (head, nib) = out.split_at_mut(head_bytes(weight, h));
        for i in 0..h {
            let blk = &plain[(r0 + i) * row_bytes + b * tb..][..tb];
            head[2 * i..2 * i + 2].copy_from_slice(&blk[0..2]);
            head[2 * h + 2 * i..2 * h + 2 * i + 2].copy_from_slice(&blk[2..4]);
            let scales: &[u8; 12] = blk[4..16].try_into().expect("12 scale bytes");
            for j in 0..8 {
                let (sc, mn) = scale_min_k4(j, scales);
                head[4 * h + j * h + i] = sc;
                head[12 * h + j * h + i] = mn;
            }
            let (u, ii) = (i / UNIT, i % UNIT);
            // Element 64p + l is the low nibble of qs[32p + l], 64p + 32 + l its high one.
            for (e, &q) in blk[16..144].iter().enumerate() {
                let (p, l) = (e / 32, e % 32);
                for (c, v) in [(64 * p + l, q & 0x0f), (64 * p + 32 + l, q >> 4)] {
                    let byte = &mut nib[c * (h / 2) + 32 * u + ii % 32];
                    *byte |= if ii < 32 { v } else { v << 4 };
                }
            }
        }
        return;
    }
    let (scales, rest) = out.split_at_mut(2 * h);
    if weight == DType::Q8_0 {
        for i in 0..h {
            let blk = &plain[(r0 + i) * row_bytes + b * tb..][..tb];
            scales[2 * i..2 * i + 2].copy_from_slice(&blk[0..2]);
            for (j, &c) in blk[2..].iter().enumerate() {
                rest[j * h + i] = (c as i8 as i32 + Q8_BIAS) as u8;
            }
        }
        return;
    }
    let (nib, high) = rest.split_at_mut(32 * (h / 2));
    for i in 0..h {
        let row = &plain[(r0 + i) * row_bytes..(r0 + i + 1) * row_bytes];
        let blk = &row[b * tb..(b + 1) * tb];
        scales[2 * i..2 * i + 2].copy_from_slice(&blk[0..2]);
        let codes = unsigned_codes(weight, blk);
        let (u, ii) = (i / UNIT, i % UNIT);
        for (j, &c) in codes.iter().enumerate() {
            let byte = &mut nib[j * (h / 2) + 32 * u + ii % 32];
            *byte |= if ii < 32 { c & 0x0f } else { (c & 0x0f) << 4 };
            if weight == DType::Q5_0 && c & 0x10 != 0 {
                high[j * (h / 8) + 8 * u + ii / 8] |= 1 << (ii % 8);
            }
        }
    }
}

/// The 32 unsigned codes of a Q4_0 (0..16) or Q5_0 (0..32) GGUF block.
fn unsigned_codes(weight: DType, blk: &[u8]) -> [u8; 32] {
    let mut u = [0u8; 32];
    let qs = match weight {
        DType::Q4_0 => &blk[2..18],
        _ => &blk[6..22],
    };
    for j in 0..16 {
        u[j] = qs[j] & 0x0f;
        u[j + 16] = qs[j] >> 4;
    }
    if weight == DType::Q5_0 {
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        for (j, v) in u.iter_mut().enumerate() {
            *v |= (((qh >> j) & 1) << 4) as u8;
        }
    }
    u
}

/// The non-zero codes of one Q8_0 activation row, block by block: what a column-skipping
/// product reads. Reused from token to token (no allocation once grown).
#[derive(Clone, Debug, Default)]
pub struct ActiveColumns {
    k: usize,
    /// Gathered from Q8_K (for a k-quant weight) rather than Q8_0.
    k_quant: bool,
    /// Blocks with at least one non-zero code, in order.
    pub(crate) blocks: Vec<ActiveBlock>,
    /// Column (within its block) of every active code, block after block.
    pub(crate) cols: Vec<u32>,
    /// The active codes, as `cols`.
    pub(crate) codes: Vec<i16>,
    /// The active columns four at a time, block after block (a block whose count is not a
    /// multiple of four repeats its last column with code 0).
    pub(crate) quad_cols: Vec<[u16; 4]>,
    /// The codes of `quad_cols`, byte `i` (little-endian) the code of column `i`, as
    /// `vpdpbusd` takes a broadcast quadruple (and `vpmaddubsw` a pair, from either half).
    pub(crate) quad_codes: Vec<i32>,
}

/// One block of [`ActiveColumns`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActiveBlock {
    /// Block index (input columns `32·index..`).
    pub index: u32,
    /// The activation block's scale.
    pub d: f32,
    /// Its entries: `cols[start..start + len]`.
    pub start: u32,
    pub len: u32,
    /// Its quadruples: `quad_cols[qstart..qstart + (len + 3) / 4]` (read by the x86
    /// kernels and NEON's `sdot` one).
    #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
    pub qstart: u32,
    /// The sum of its codes (read by the SIMD kernels).
    #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
    pub qsum: i32,
}

impl ActiveColumns {
    /// An empty set.
    pub fn new() -> ActiveColumns {
        ActiveColumns::default()
    }

    /// Gathers the non-zero codes of an activation row of `k` values quantized for `weight`
    /// (`kernels::quantize_activations`): Q8_0 (34 bytes per 32 values) for Q4_0, Q5_0 and
    /// Q8_0, Q8_K (292 bytes per 256 values, listed as eight blocks of 32) for Q4_K.
    ///
    /// # Panics
    /// If `weight` has no column-blocked layout or `act_row` is not `k` values of its
    /// activation format.
    pub fn gather_for(&mut self, weight: DType, act_row: &[u8], k: usize) {
        assert!(colskip_supports(weight), "edgellm kernels: ActiveColumns::gather_for: {weight}");
        let (n, bytes, name) = if weight == DType::Q4_K { (256, 292, "Q8_K") } else { (32, 34, "Q8_0") };
        assert!(
            k.is_multiple_of(n) && act_row.len() == k / n * bytes,
            "edgellm kernels: ActiveColumns::gather: {k} values need {} bytes of {name}, got {}",
            k / n * bytes,
            act_row.len()
        );
        self.k = k;
        self.k_quant = weight == DType::Q4_K;
        self.blocks.clear();
        self.cols.clear();
        self.codes.clear();
        self.quad_cols.clear();
        self.quad_codes.clear();
        if self.k_quant {
            for (b, blk) in act_row.chunks_exact(bytes).enumerate() {
                let d = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
                for (j, q) in blk[4..260].chunks_exact(32).enumerate() {
                    self.push_block(8 * b + j, d, q);
                }
            }
        } else {
            for (b, blk) in act_row.chunks_exact(bytes).enumerate() {
                self.push_block(b, read_f16(blk, 0), &blk[2..]);
            }
        }
    }

    /// [`ActiveColumns::gather_for`] of a Q8_0 row (Q4_0, Q5_0 and Q8_0 weights).
    ///
    /// # Panics
    /// If `act_row` is not `k/32` Q8_0 blocks.
    pub fn gather(&mut self, act_row: &[u8], k: usize) {
        self.gather_for(DType::Q8_0, act_row, k)
    }

    /// Lists the non-zero codes of the 32 codes `q` of block `b` (scale `d`), if any.
    fn push_block(&mut self, b: usize, d: f32, q: &[u8]) {
        // The non-zero codes as a bit mask (vectorizes), then its set bits in order: no
        // branch per code, whose outcome a thresholded input makes unpredictable.
        let mut mask = q.iter().enumerate().fold(0u32, |m, (j, &v)| m | ((v != 0) as u32) << j);
        if mask == 0 {
            return;
        }
        // The block's entries (padded to whole quadruples below), then copied at once.
        let (mut bc, mut bq) = ([0u32; 32], [0i16; 32]);
        let mut n = 0;
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            bc[n] = j as u32;
            bq[n] = q[j] as i8 as i16;
            n += 1;
        }
        let start = self.cols.len();
        self.cols.extend_from_slice(&bc[..n]);
        self.codes.extend_from_slice(&bq[..n]);
        let qsum = bq[..n].iter().map(|&q| q as i32).sum();
        // Past the count: the last column again, with code 0 (same line).
        let nq = n.div_ceil(4);
        for e in n..4 * nq {
            (bc[e], bq[e]) = (bc[n - 1], 0);
        }
        let qstart = self.quad_cols.len();
        for i in 0..nq {
            self.quad_cols.push([0, 1, 2, 3].map(|e| bc[4 * i + e] as u16));
            self.quad_codes.push(i32::from_le_bytes([0, 1, 2, 3].map(|e| bq[4 * i + e] as u8)));
        }
        let len = n;
        self.blocks.push(ActiveBlock {
            index: b as u32,
            d,
            start: start as u32,
            len: len as u32,
            qstart: qstart as u32,
            qsum,
        });
    }

    /// Input width of the gathered row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of non-zero codes.
    pub fn active(&self) -> usize {
        self.cols.len()
    }

    /// Number of blocks with a non-zero code.
    pub fn active_blocks(&self) -> usize {
        self.blocks.len()
    }
}

/// A column-skipping product over a checked [`ColArgs`].
pub(crate) type ColFn = unsafe fn(a: &mut ColArgs<'_>);

/// The arguments of a column-skipping product, checked by [`colskip_matmul_for_tier`]:
/// `w` is the tile range's bytes, `out` holds exactly its rows.
pub(crate) struct ColArgs<'a> {
    pub weight: DType,
    pub k: usize,
    /// Rows of each tile in the range, in order (all [`TILE`] but possibly the last).
    pub heights: (usize, usize, usize),
    pub w: &'a [u8],
    pub act: &'a ActiveColumns,
    pub out: &'a mut [f32],
}

impl ColArgs<'_> {
    /// Number of tiles and height of tile `i` of the range.
    pub fn tile(&self, i: usize) -> usize {
        if i + 1 == self.heights.0 {
            self.heights.2
        } else {
            self.heights.1
        }
    }
}

/// `out[r − rows.start] = Σ_b (d_w·d_a)·Σ_j c·q` for the rows of `tiles` of `w` and the
/// activation row gathered in `act`, with the tier in use ([`super::tier`]).
///
/// # Panics
/// If `act` was gathered for another width, `tiles` is out of range, or `out` does not hold
/// exactly the tiles' rows.
pub fn colskip_matmul(w: &ColPacked, tiles: Range<usize>, act: &ActiveColumns, out: &mut [f32]) {
    colskip_matmul_for_tier(super::tier(), w, tiles, act, out)
}

/// [`colskip_matmul`] with the kernels of `tier` (a tier without its own falls back to a
/// lower one, down to the scalar oracle; an unsupported tier runs the oracle).
pub fn colskip_matmul_for_tier(
    tier: Tier,
    w: &ColPacked,
    tiles: Range<usize>,
    act: &ActiveColumns,
    out: &mut [f32],
) {
    assert_eq!(
        act.k, w.k,
        "edgellm kernels: colskip: activations of {} values for a {}-wide weight",
        act.k, w.k
    );
    assert_eq!(
        act.k_quant,
        w.weight == DType::Q4_K,
        "edgellm kernels: colskip: activations gathered from {} for a {} weight",
        if act.k_quant { "Q8_K" } else { "Q8_0" },
        w.weight
    );
    assert!(
        tiles.start <= tiles.end && tiles.end <= w.tiles(),
        "edgellm kernels: colskip: tiles {tiles:?} of {}",
        w.tiles()
    );
    let rows = w.tile_row_range(tiles.clone());
    assert_eq!(
        out.len(),
        rows.len(),
        "edgellm kernels: colskip: output of {} rows for rows {rows:?}",
        out.len()
    );
    if tiles.is_empty() {
        return;
    }
    let (start, end) = (w.tile_offset(tiles.start), w.tile_offset(tiles.end - 1));
    let last_h = tile_rows(w.m, tiles.end - 1);
    let end = end + w.k / block_cols(w.weight) * block_bytes(w.weight, last_h);
    let mut a = ColArgs {
        weight: w.weight,
        k: w.k,
        heights: (tiles.len(), TILE, last_h),
        w: &w.bytes()[start..end],
        act,
        out,
    };
    let f = kernel_for(tier, w.weight);
    // SAFETY: the arguments are checked above (the byte range is exactly the tiles', `out`
    // exactly their rows, `act` gathered for this width) and `kernel_for` only returns SIMD
    // code of a tier this CPU supports.
    unsafe { f(&mut a) }
}

/// The tier whose code [`colskip_matmul_for_tier`] runs for `tier` and `weight`.
pub fn colskip_implementing_tier(tier: Tier, weight: DType) -> Tier {
    if !colskip_supports(weight) || !tier.is_supported() {
        return Tier::Scalar;
    }
    match tier {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 | Tier::Avx512Vnni => tier,
        // One NEON kernel per type serves every AArch64 tier (it needs neither `sdot` nor
        // `smmla`); Q8_0 has a four-column `sdot` kernel where the extension is there.
        #[cfg(target_arch = "aarch64")]
        Tier::NeonDotprod | Tier::NeonI8mm if weight == DType::Q8_0 => Tier::NeonDotprod,
        #[cfg(target_arch = "aarch64")]
        Tier::Neon | Tier::NeonDotprod | Tier::NeonI8mm => Tier::Neon,
        _ => Tier::Scalar,
    }
}

fn kernel_for(tier: Tier, weight: DType) -> ColFn {
    match colskip_implementing_tier(tier, weight) {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512Vnni => match weight {
            DType::Q4_0 => super::x86::colskip::avx512_q4_0,
            DType::Q8_0 => super::x86::colskip::avx512_q8_0,
            DType::Q4_K => super::x86::colskip::avx512_q4_k,
            _ => super::x86::colskip::avx512_q5_0,
        },
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 => match weight {
            DType::Q4_0 => super::x86::colskip::avx2_q4_0,
            DType::Q8_0 => super::x86::colskip::avx2_q8_0,
            DType::Q4_K => super::x86::colskip::avx2_q4_k,
            _ => super::x86::colskip::avx2_q5_0,
        },
        #[cfg(target_arch = "aarch64")]
        Tier::NeonDotprod => super::arm::colskip::neon_dot_q8_0,
        #[cfg(target_arch = "aarch64")]
        Tier::Neon => match weight {
            DType::Q4_0 => super::arm::colskip::neon_q4_0,
            DType::Q8_0 => super::arm::colskip::neon_q8_0,
            DType::Q4_K => super::arm::colskip::neon_q4_k,
            _ => super::arm::colskip::neon_q5_0,
        },
        _ => oracle,
    }
}

/// The scalar oracle: per row, the exact integer sum of each active block, then
/// `acc += (d_w·d_a)·Σ` in block order (Q4_K: the super-block's `acc += d·d_a·s − dmin·d_a·m`
/// once its sub-blocks are summed, as the dense oracle).
fn oracle(a: &mut ColArgs<'_>) {
    let (bias, _) = bias_and_chunk(a.weight);
    let kq = a.weight == DType::Q4_K;
    let bias = if kq { 0 } else { bias };
    let nb = a.k / block_cols(a.weight);
    let (mut pos, mut r0) = (0, 0);
    for t in 0..a.heights.0 {
        let h = a.tile(t);
        let bbytes = block_bytes(a.weight, h);
        let tile = &a.w[pos..pos + nb * bbytes];
        for i in 0..h {
            let mut acc = 0.0f32;
            // Q4_K: the super-block being summed (its block, d_a, s, m).
            let mut sup: Option<(&[u8], f32, i32, i32)> = None;
            let flush = |acc: &mut f32, sup: Option<(&[u8], f32, i32, i32)>| {
                if let Some((bb, da, s, m)) = sup {
                    *acc += read_f16(bb, 2 * i) * da * s as f32 - read_f16(bb, 2 * h + 2 * i) * da * m as f32;
                }
            };
            for blk in &a.act.blocks {
                let (boff, run0) = run_at(a.weight, h, blk.index as usize, 0);
                let bb = &tile[boff..boff + bbytes];
                let mut isum = 0i32;
                let range = blk.start as usize..(blk.start + blk.len) as usize;
                for (&j, &q) in a.act.cols[range.clone()].iter().zip(&a.act.codes[range]) {
                    isum += (code(a.weight, bb, h, run0, j as usize, i) - bias) * q as i32;
                }
                if kq {
                    let sub = blk.index as usize % 8;
                    if sup.is_none_or(|(sb, ..)| !std::ptr::eq(sb, bb)) {
                        flush(&mut acc, sup);
                        sup = Some((bb, blk.d, 0, 0));
                    }
                    let (sc, mn) = (bb[4 * h + sub * h + i] as i32, bb[12 * h + sub * h + i] as i32);
                    if let Some((_, _, s, m)) = sup.as_mut() {
                        *s += sc * isum;
                        *m += mn * blk.qsum;
                    }
                } else {
                    acc += read_f16(bb, 2 * i) * blk.d * isum as f32;
                }
            }
            flush(&mut acc, sup);
            a.out[r0 + i] = acc;
        }
        pos += nb * bbytes;
        r0 += h;
    }
}

/// The stored code (unsigned where the layout biases it) of row `i` in column `j` of the
/// block `bb` (a tile of `h` rows) whose runs of this activation block start at `run0`.
fn code(weight: DType, bb: &[u8], h: usize, run0: usize, j: usize, i: usize) -> i32 {
    let run = run0 + j * run_bytes(weight, h);
    if weight == DType::Q8_0 {
        let b = bb[run + i];
        return if Q8_BIAS == 0 { b as i8 as i32 } else { b as i32 };
    }
    let (u, ii) = (i / UNIT, i % UNIT);
    let byte = bb[run + 32 * u + ii % 32];
    let mut c = if ii < 32 { byte & 0x0f } else { byte >> 4 } as i32;
    if weight == DType::Q5_0 {
        let high = 2 * h + 32 * (h / 2) + j * (h / 8);
        c |= (((bb[high + 8 * u + ii / 8] >> (ii % 8)) & 1) as i32) << 4;
    }
    c
}

/// Blocks ahead (in the active list) whose lines a tile prefetches: 2 left the AVX2 Q4_0
/// product waiting on memory (`colskip_speed`, Zen 3: 0.4 sparsity 24 µs at 2, 17–18 at 8).
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
const AHEAD: usize = 8;

/// Prefetches (`pf`, one line each) the lines of active block `blk` in the tile at `tile` (of
/// `h` rows) that a product reads: its scales and its active columns' runs. Skipped columns break the
/// hardware prefetchers' streams, so the kernels name the lines themselves.
///
/// # Safety
/// `tile` is a tile of the layout (prefetches do not fault, but the address must be computed
/// within the allocation).
#[inline(always)]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
unsafe fn prefetch_block(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    weight: DType,
    blk: &ActiveBlock,
    pf: impl Fn(*const u8),
) {
    let (boff, run0) = run_at(weight, h, blk.index as usize, 0);
    let bb = tile.add(boff);
    if weight == DType::Q4_K {
        // The sub-block's scales and minimums; `d` and `dmin` with the first sub-block.
        let sub = blk.index as usize % 8;
        if sub == 0 {
            for l in (0..4 * h).step_by(64) {
                pf(bb.add(l));
            }
        }
        for l in (0..h).step_by(64) {
            pf(bb.add(4 * h + sub * h + l));
            pf(bb.add(12 * h + sub * h + l));
        }
    } else {
        for l in (0..2 * h).step_by(64) {
            pf(bb.add(l));
        }
    }
    let run = run_bytes(weight, h);
    let (s0, len) = (blk.start as usize, blk.len as usize);
    for &j in &a.act.cols[s0..s0 + len] {
        let j = j as usize;
        // A run is one line, or two (Q8_0's 128 bytes).
        pf(bb.add(run0 + j * run));
        if run > 64 {
            pf(bb.add(run0 + j * run + 64));
        }
        if weight == DType::Q5_0 {
            pf(bb.add(2 * h + 32 * run + j * (h / 8)));
        }
    }
}

/// For the SIMD kernels: prefetches (`pf`) the block [`AHEAD`] places after active block `i`
/// of the tile at `tile` (`h` rows of `weight`), or the one it falls on in the next tile
/// (`next`: its start and height).
///
/// # Safety
/// `tile` (and `next`'s start) are tiles of the layout `a` covers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) unsafe fn prefetch_ahead(
    a: &ColArgs<'_>,
    tile: *const u8,
    h: usize,
    weight: DType,
    i: usize,
    next: Option<(*const u8, usize)>,
    pf: impl Fn(*const u8),
) {
    let blocks = &a.act.blocks;
    if i + AHEAD < blocks.len() {
        prefetch_block(a, tile, h, weight, &blocks[i + AHEAD], pf);
    } else if let (Some((nt, nh)), Some(b)) = (next, blocks.get(i + AHEAD - blocks.len())) {
        prefetch_block(a, nt, nh, weight, b, pf);
    }
}

/// Code bias and active columns per i16 partial sum, for the SIMD kernels.
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) fn simd_params(weight: DType) -> (i32, usize) {
    bias_and_chunk(weight)
}

/// Bytes of a block of a tile of `h` rows (for the SIMD kernels).
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) fn simd_block_bytes(weight: DType, h: usize) -> usize {
    block_bytes(weight, h)
}
