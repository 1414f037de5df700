//! `Q8_SB` (bitmap sparse) matrices repacked at load time into sixteen-row groups whose kept
//! codes lie in the order of the dense packed kernels' words, so that one expanding load
//! (`vpexpandb`) turns a chunk's kept codes into the dense word of sixteen rows by four inputs.
//!
//! The file layout keeps each row's kept codes in input order (`Q8_SB` and its `.values`
//! tensor, [`crate::quant::sparse`]); a kernel on it expands one row's 64-input block at a
//! time and does its float work per row and block. Here sixteen rows share every instruction:
//!
//! # Layout ([`ROWS`] = 16 rows per group, `nb = k / 64` blocks)
//!
//! Group `g` starts at `g · (16 + 160·nb)`: a header of two u64 (the byte offset of the group's
//! codes within the buffer, and their count), then per block `b` a 160-byte meta block:
//!
//! - sixteen chunk masks `M_j` (u64, at `16 + 160b + 8j`, `j = 0..16`): bit `4r + i` is set
//!   when row `r` keeps input `4j + i` of the block (the byte order of the dense packed word);
//! - the sixteen rows' f16 scales (at `16 + 160b + 128`, row order).
//!
//! The codes follow all groups: per group, block after block, chunk after chunk, the kept
//! codes of the chunk in bit order (`4r + i`), each as `code + 128` (unsigned). A missing row
//! of the last group keeps nothing (scale 0). 64 bytes of zeros end the buffer, so a kernel may
//! load a whole register at the last code.
//!
//! # Arithmetic
//!
//! Expanded with 128 at dropped inputs, a chunk word is `code + 128` for every input, exactly
//! the dense packed Q8_0 kernels' unsigned weights on the dense-equivalent matrix: with
//! `Act::Q8S` activations (`d`, `Σq`, codes) a half's integer sum is `Σ(c + 128)·q − 128·Σq`
//! and each row adds `fma(Σc·q, d_w·d_a, acc)` per half — the dense packed Q8_0 oracle's
//! operations, hence its bits (tested).

use crate::quant::read_f16;
use crate::quant::sparse::{bitmap_mask, Q8_SB_BYTES, QK_SPARSE};

/// Rows per group.
pub const ROWS: usize = 16;
/// Bytes of a group's header: the offset of its codes, their count.
pub(crate) const HEAD: usize = 16;
/// Bytes of a meta block: sixteen chunk masks, sixteen f16 scales.
pub(crate) const META: usize = 160;
/// Byte offset of the scales in a meta block.
pub(crate) const SCALES: usize = 128;
/// Zero bytes after the last code.
const TAIL: usize = 64;

/// A `Q8_SB` matrix in the bitmap group layout (module docs), built by [`BitmapGroups::pack`]
/// only: its headers, masks and code counts agree, which is what the kernels rely on.
#[derive(Debug, Clone)]
pub struct BitmapGroups {
    bytes: Vec<u8>,
    k: usize,
    m: usize,
}

/// Bytes of one group's header and meta blocks.
pub(crate) fn group_bytes(k: usize) -> usize {
    HEAD + k / QK_SPARSE * META
}

impl BitmapGroups {
    /// Packs `m` rows of `k` values: `meta` the `Q8_SB` blocks (`k / 64` of 10 bytes per row),
    /// `values` the companion rows of `c` codes. A row keeping more inputs than it has codes
    /// (never in a validated file) takes code 0 for the missing ones, as the oracle does.
    ///
    /// # Panics
    /// If `k` is not a multiple of 64 or `meta` / `values` do not hold `m` rows.
    pub fn pack(k: usize, m: usize, meta: &[u8], values: &[u8], c: usize) -> BitmapGroups {
        assert!(k.is_multiple_of(QK_SPARSE), "bitmap groups: {k} values is not a whole number of blocks");
        let nb = k / QK_SPARSE;
        let rb = nb * Q8_SB_BYTES;
        assert!(meta.len() == m * rb && values.len() >= m * c, "bitmap groups: {m} rows of {k} values");
        let groups = m.div_ceil(ROWS);
        let gb = group_bytes(k);
        // Each group's first code, from its rows' kept counts.
        let mut first = Vec::with_capacity(groups + 1);
        first.push(groups * gb);
        for g in 0..groups {
            let kept: usize = meta[g * ROWS * rb..(g * ROWS + ROWS).min(m) * rb]
                .chunks_exact(Q8_SB_BYTES)
                .map(|blk| bitmap_mask(blk).count_ones() as usize)
                .sum();
            first.push(first[g] + kept);
        }
        let mut bytes = vec![0u8; first[groups] + TAIL];
        let (heads, codes) = bytes.split_at_mut(groups * gb);
        let (heads, codes) =
            (crate::parallel::DisjointWriter::new(heads), crate::parallel::DisjointWriter::new(codes));
        crate::parallel::for_each_range(groups, 16, |gs| {
            for g in gs {
                // SAFETY: group g alone writes its header and meta blocks and its codes.
                let (head, out) = unsafe {
                    (
                        heads.slice_mut(g * gb, gb),
                        codes.slice_mut(first[g] - groups * gb, first[g + 1] - first[g]),
                    )
                };
                pack_group(k, m, meta, values, c, g, first[g], head, out);
            }
        });
        BitmapGroups { bytes, k, m }
    }

    /// Values per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// The layout's bytes (module docs).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Row `r` dequantized into `out` (`k` values): `code · d` at kept inputs, 0 elsewhere.
    ///
    /// # Panics
    /// If `r` is not a row or `out` is not `k` long.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.m && out.len() == self.k, "bitmap groups: row {r} of {} × {}", self.m, self.k);
        let (g, lane) = (r / ROWS, r % ROWS);
        let head = g * group_bytes(self.k);
        let mut o = u64::from_le_bytes(self.bytes[head..head + 8].try_into().expect("8 bytes")) as usize;
        for (b, ob) in out.chunks_exact_mut(QK_SPARSE).enumerate() {
            let mb = head + HEAD + b * META;
            let d = read_f16(&self.bytes, mb + SCALES + 2 * lane);
            for (j, oc) in ob.chunks_exact_mut(4).enumerate() {
                let mj = u64::from_le_bytes(self.bytes[mb + 8 * j..][..8].try_into().expect("8 bytes"));
                // This row's codes follow those of the rows before it in the chunk.
                let before = (mj & ((1u64 << (4 * lane)) - 1)).count_ones() as usize;
                let mut at = o + before;
                for (i, v) in oc.iter_mut().enumerate() {
                    *v = if mj >> (4 * lane + i) & 1 == 1 {
                        at += 1;
                        (self.bytes[at - 1] ^ 0x80) as i8 as f32 * d
                    } else {
                        0.0
                    };
                }
                o += mj.count_ones() as usize;
            }
        }
    }
}

/// Group `g` of [`BitmapGroups::pack`]: its header and meta blocks into `head`, its kept codes
/// (starting at byte `start` of the buffer) into `out`, exactly their bytes.
#[allow(clippy::too_many_arguments)]
fn pack_group(
    k: usize,
    m: usize,
    meta: &[u8],
    values: &[u8],
    c: usize,
    g: usize,
    start: usize,
    head: &mut [u8],
    out: &mut [u8],
) {
    let nb = k / QK_SPARSE;
    let rb = nb * Q8_SB_BYTES;
    let rows = ROWS.min(m - g * ROWS);
    // Each row's companion codes and its next one.
    let vrows: [&[u8]; ROWS] =
        std::array::from_fn(|r| if r < rows { &values[(g * ROWS + r) * c..][..c] } else { &[] });
    let mut next = [0usize; ROWS];
    let mut o = 0;
    for b in 0..nb {
        let mb = HEAD + b * META;
        let mut masks = [0u64; 16];
        for r in 0..rows {
            let blk = &meta[(g * ROWS + r) * rb + b * Q8_SB_BYTES..][..Q8_SB_BYTES];
            let mask = bitmap_mask(blk);
            for (j, mj) in masks.iter_mut().enumerate() {
                *mj |= ((mask >> (4 * j)) & 0xf) << (4 * r);
            }
            head[mb + SCALES + 2 * r..][..2].copy_from_slice(&blk[..2]);
        }
        for (j, &mj) in masks.iter().enumerate() {
            head[mb + 8 * j..][..8].copy_from_slice(&mj.to_le_bytes());
            let mut bits = mj;
            while bits != 0 {
                let r = bits.trailing_zeros() as usize / 4;
                let code = vrows[r].get(next[r]).map_or(0, |&v| v as i8);
                next[r] += 1;
                out[o] = (code as u8) ^ 0x80;
                o += 1;
                bits &= bits - 1;
            }
        }
    }
    debug_assert_eq!(o, out.len());
    head[..8].copy_from_slice(&(start as u64).to_le_bytes());
    head[8..16].copy_from_slice(&(o as u64).to_le_bytes());
}

/// The oracle of the bitmap group product (`m.w` a [`BitmapGroups`]' bytes, `Act::Q8S`
/// activations): per row, token and half `acc ← fma(Σc·q, d_w·d_a, acc)` from 0, the dense
/// packed Q8_0 oracle's operations on the dense-equivalent matrix.
pub(crate) fn matmul(m: &mut super::MatmulArgs<'_>) {
    let nb = m.k / QK_SPARSE;
    let gb = group_bytes(m.k);
    let w = m.w;
    for (i, r) in m.rows.clone().enumerate() {
        let (g, lane) = (r / ROWS, r % ROWS);
        let head = g * gb;
        // The row's codes, block after block (0 where dropped), and the block scales.
        let mut codes = vec![0i32; m.k];
        let mut scales = vec![0f32; nb];
        let mut o = u64::from_le_bytes(w[head..head + 8].try_into().expect("8 bytes")) as usize;
        for b in 0..nb {
            let mb = head + HEAD + b * META;
            scales[b] = read_f16(w, mb + SCALES + 2 * lane);
            for j in 0..16 {
                let mj = u64::from_le_bytes(w[mb + 8 * j..][..8].try_into().expect("8 bytes"));
                let mut at = o + (mj & ((1u64 << (4 * lane)) - 1)).count_ones() as usize;
                for q in 0..4 {
                    if mj >> (4 * lane + q) & 1 == 1 {
                        codes[64 * b + 4 * j + q] = (w[at] ^ 0x80) as i8 as i32;
                        at += 1;
                    }
                }
                o += mj.count_ones() as usize;
            }
        }
        for t in 0..m.n {
            let a = &m.act[t * m.act_bytes..(t + 1) * m.act_bytes];
            let mut acc = 0.0f32;
            for (h, ab) in a.chunks_exact(36).enumerate() {
                let s: i32 =
                    codes[32 * h..32 * h + 32].iter().zip(&ab[4..]).map(|(&c, &q)| c * q as i8 as i32).sum();
                acc = (s as f32).mul_add(scales[h / 2] * read_f16(ab, 0), acc);
            }
            m.out[t * m.out_stride + i] = acc;
        }
    }
}
