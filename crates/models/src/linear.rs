//! Linear layers: `y = W x` with the weight in any supported storage type.
//!
//! The weight is `[out_features × in_features]`, one row per output, each row contiguous
//! (GGUF dims `[in, out]`). Storage is the GGUF bytes as they are in the file (memory-mapped,
//! quantized or not) or an owned buffer.
//!
//! Two precisions: [`Precision::Fast`] quantizes the activations on the fly (8-bit, the format
//! the weight type's kernel wants) and runs the integer dot-product kernels of
//! `edgellm_core::kernels` (SIMD, chosen at start-up) — what llama.cpp does. [`Precision::Exact`]
//! dequantizes each weight row to f32 and dots it with f32 activations: slower, and within a
//! few hundredths of float64 math on whole models (the golden tests use it).
//!
//! [`Linear::packed`] repacks a weight at load time into the kernels' row-interleaved layout
//! where the tier in use has a kernel for it (`kernels::pack`): eight rows per integer
//! instruction, several times faster on prompts. `EDGELLM_PACK=0` keeps the file's layout (for
//! comparisons).
//!
//! Sparse weights (`docs/sparse-gguf.md`) are Linears too: the N:M types (`Q4_S24`, `Q4_S48`,
//! `Q8_S24`, `Q8_S48`) run through the same kernel table as the dense types, and a bitmap
//! `Q8_SB` weight carries its companion values tensor (`<name>.values`) and runs the bitmap
//! kernels. Both read Q8_0 activations. Their data is validated when the Linear is built, so a
//! corrupt file is an error before the first token.
//!
//! Activation sparsity (`crate::act_sparsity`): a Linear loaded with a threshold zeroes the
//! input values of smaller magnitude before its product, on decode steps (one token per call;
//! prompts keep the dense, unthresholded path) or on every token when the setting says so.
//! A one-token product of a Q4_0/Q5_0/Q8_0/Q4_K weight then runs the column-skipping kernel
//! (`kernels::colskip`) over a column-blocked copy of the weight made at load time, which
//! reads only the columns of the non-zero inputs; other types run the dense kernel on the
//! thresholded input (the same math).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use edgellm_core::kernels::colskip::{colskip_matmul, ActiveColumns, ColPacked};
use edgellm_core::parallel::{
    for_each_index, for_each_range, for_each_rows_mut, num_threads, DisjointWriter,
};
use edgellm_core::quant::dequantize_row;
use edgellm_core::quant::sparse::{self, NmLayout};
use edgellm_core::{kernels, DType};
use edgellm_formats::mmap::Bytes;
use edgellm_formats::{GgufFile, TensorInfo};

use crate::nn::dot;
use crate::ModelError;

/// Bytes of a weight: a range of a mapped file, or an owned buffer.
#[derive(Clone)]
pub enum TensorBytes {
    /// A range of a (memory-mapped) file.
    Mapped {
        /// The file's bytes.
        bytes: Bytes,
        /// Start of the tensor.
        start: usize,
        /// Length in bytes.
        len: usize,
    },
    /// An owned buffer.
    Owned(Vec<u8>),
    /// An owned buffer shared by the clones of a Linear (a packed weight, which a tied
    /// embedding and output layer share).
    Shared(Arc<Vec<u8>>),
}

impl TensorBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            TensorBytes::Mapped { bytes, start, len } => &bytes[*start..*start + *len],
            TensorBytes::Owned(v) => v,
            TensorBytes::Shared(v) => v,
        }
    }
}

/// How a Linear computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// 8-bit activations and integer SIMD kernels (where the weight type has them).
    #[default]
    Fast,
    /// f32 activations against dequantized weights.
    Exact,
}

/// A linear layer without bias.
#[derive(Clone)]
pub struct Linear {
    /// Tensor name (for messages and per-layer dumps).
    pub name: String,
    /// Storage type of the weight.
    pub dtype: DType,
    /// Input width (row length).
    pub in_features: usize,
    /// Output width (number of rows).
    pub out_features: usize,
    data: TensorBytes,
    row_bytes: usize,
    precision: Precision,
    /// Whether `data` is in the kernels' packed layout (`kernels::pack`).
    packed: bool,
    /// A bitmap (`Q8_SB`) weight's kept values: the companion tensor (`out_features` rows of
    /// `width` bytes) and `width`.
    values: Option<(TensorBytes, usize)>,
    /// Activation-sparsity threshold of the input (`crate::act_sparsity`).
    threshold: Option<f32>,
    /// Whether the threshold applies to every token (else to one-token calls only).
    all_tokens: bool,
    /// The weight in the column-blocked layout, for one-token products with a threshold.
    cols: Option<Arc<ColPacked>>,
    /// A bitmap (`Q8_SB`) weight in the bitmap group layout ([`Linear::packed`]); `data` and
    /// `values` are then empty.
    groups: Option<Arc<kernels::BitmapGroups>>,
}

/// Whether `dtype` is one of edgellm's sparse weight types.
pub fn is_sparse(dtype: DType) -> bool {
    NmLayout::of(dtype).is_some() || dtype == DType::Q8_SB
}

/// The metadata key and version a file with sparse tensors must carry.
pub const SPARSE_VERSION_KEY: &str = "edgellm.sparse.version";
/// The version of the sparse extension this build reads (`docs/sparse-gguf.md`).
pub const SPARSE_VERSION: u32 = 1;

impl Linear {
    /// A Linear over raw weight bytes in `dtype`, `[out × in]`.
    pub fn new(
        name: &str,
        dtype: DType,
        in_features: usize,
        out_features: usize,
        data: TensorBytes,
    ) -> Result<Linear, ModelError> {
        if dtype == DType::Q8_SB {
            return Err(ModelError::Sparse {
                tensor: name.into(),
                why: "a Q8_SB weight needs its companion values (Linear::new_bitmap)".into(),
            });
        }
        if !dtype.is_supported() {
            return Err(ModelError::UnsupportedTensorType { tensor: name.into(), dtype });
        }
        if NmLayout::of(dtype).is_some() {
            sparse::validate(dtype, in_features, out_features, data.as_slice(), None)
                .map_err(|e| ModelError::Sparse { tensor: name.into(), why: e.to_string() })?;
        }
        let row_bytes = dtype.bytes_for(in_features as u64).ok_or_else(|| {
            ModelError::BadConfig(format!(
                "{name}: row length {in_features} is not a multiple of the {dtype} block size"
            ))
        })? as usize;
        if data.as_slice().len() != row_bytes * out_features {
            return Err(ModelError::BadConfig(format!(
                "{name}: {} bytes of data, {dtype} [{out_features} × {in_features}] needs {}",
                data.as_slice().len(),
                row_bytes * out_features
            )));
        }
        Ok(Linear {
            name: name.into(),
            dtype,
            in_features,
            out_features,
            data,
            row_bytes,
            precision: Precision::default(),
            packed: false,
            values: None,
            threshold: None,
            all_tokens: false,
            cols: None,
            groups: None,
        })
    }

    /// A bitmap-sparse (`Q8_SB`) Linear: `meta` holds `out_features` rows of `in_features/64`
    /// 10-byte blocks, `values` the companion rows of `width` kept codes each. Both are
    /// validated ([`sparse::validate`]): a corrupt tensor is a [`ModelError::Sparse`].
    pub fn new_bitmap(
        name: &str,
        in_features: usize,
        out_features: usize,
        meta: TensorBytes,
        values: TensorBytes,
        width: usize,
    ) -> Result<Linear, ModelError> {
        let dtype = DType::Q8_SB;
        sparse::validate(dtype, in_features, out_features, meta.as_slice(), Some((values.as_slice(), width)))
            .map_err(|e| ModelError::Sparse { tensor: name.into(), why: e.to_string() })?;
        Ok(Linear {
            name: name.into(),
            dtype,
            in_features,
            out_features,
            data: meta,
            row_bytes: in_features / sparse::QK_SPARSE * sparse::Q8_SB_BYTES,
            precision: Precision::default(),
            packed: false,
            values: Some((values, width)),
            threshold: None,
            all_tokens: false,
            cols: None,
            groups: None,
        })
    }

    /// The GGUF tensor `name`, checked to be `[in, out]` (GGUF order).
    pub fn from_gguf(
        f: &GgufFile,
        name: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Linear, ModelError> {
        let t = f.need_tensor(name)?;
        check_shape(t, &[in_features as u64, out_features as u64])?;
        let lin = Linear::weight_from_gguf(f, t, name, in_features, out_features)?;
        match crate::act_sparsity::threshold_for(f, name)? {
            Some(th) => {
                let all = crate::act_sparsity::act_sparsity().is_some_and(|s| s.all_tokens);
                Ok(lin.with_threshold(Some(th), all))
            }
            None => Ok(lin),
        }
    }

    /// The weight of tensor `t` (`name`, checked to be `[in, out]`): dense, N:M sparse, or a
    /// bitmap weight with its companion values tensor.
    fn weight_from_gguf(
        f: &GgufFile,
        t: &TensorInfo,
        name: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Linear, ModelError> {
        if !is_sparse(t.dtype) {
            return Linear::new(name, t.dtype, in_features, out_features, gguf_bytes(f, t));
        }
        let bad = |why: String| ModelError::Sparse { tensor: name.into(), why };
        match f.get(SPARSE_VERSION_KEY).and_then(|v| v.as_u64()) {
            Some(v) if v == SPARSE_VERSION as u64 => {}
            Some(v) => {
                return Err(bad(format!(
                    "the file uses version {v} of edgellm's sparse extension; this build reads version \
                     {SPARSE_VERSION} (docs/sparse-gguf.md)"
                )))
            }
            None => {
                return Err(bad(format!(
                    "type {} is edgellm's sparse extension but the file lacks {SPARSE_VERSION_KEY}; \
                     the file is corrupt or was not written by edgellm",
                    t.dtype
                )))
            }
        }
        if t.dtype != DType::Q8_SB {
            return Linear::new(name, t.dtype, in_features, out_features, gguf_bytes(f, t));
        }
        let vname = format!("{name}{BITMAP_VALUES_SUFFIX}");
        let v = f.tensor(&vname).ok_or_else(|| {
            bad(format!("a Q8_SB tensor needs its companion values tensor '{vname}', which the file lacks"))
        })?;
        if v.dtype != DType::I8 || v.dims.len() != 2 || v.dims[1] != out_features as u64 {
            return Err(bad(format!(
                "its values tensor '{vname}' must be I8 [c, {out_features}], found {} {:?}",
                v.dtype, v.dims
            )));
        }
        let width = usize::try_from(v.dims[0]).map_err(|_| bad("values width overflows".into()))?;
        Linear::new_bitmap(name, in_features, out_features, gguf_bytes(f, t), gguf_bytes(f, v), width)
    }

    /// This Linear thresholding its input at `threshold` (values of smaller magnitude become
    /// zero) on one-token calls, or on every call when `all_tokens`; `None` turns it off.
    /// With a threshold, a Q4_0/Q5_0/Q8_0/Q4_K weight of a multiple of 64 rows also gets its
    /// column-blocked copy (`kernels::colskip`), for the column-skipping one-token product.
    pub fn with_threshold(mut self, threshold: Option<f32>, all_tokens: bool) -> Linear {
        self.threshold = threshold;
        self.all_tokens = all_tokens;
        self.cols = None;
        if threshold.is_some() && !self.is_packed() {
            self.cols =
                ColPacked::pack(self.dtype, self.in_features, self.out_features, self.data.as_slice())
                    .map(Arc::new);
        }
        self
    }

    /// The activation-sparsity threshold of the input, if any.
    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// Whether one-token products skip the columns of zero inputs (column-blocked copy made).
    pub fn skips_columns(&self) -> bool {
        self.cols.is_some() && self.uses_kernels()
    }

    /// The threshold in force for a call of `n` tokens.
    fn active_threshold(&self, n: usize) -> Option<f32> {
        self.threshold.filter(|_| n == 1 || self.all_tokens)
    }

    /// This Linear computing with `p`.
    pub fn with_precision(mut self, p: Precision) -> Linear {
        self.precision = p;
        self
    }

    /// The precision it computes with.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// This Linear with its weight repacked into the kernels' row-interleaved layout, where
    /// it computes with [`Precision::Fast`], the tier in use has a packed kernel for its type
    /// and `EDGELLM_PACK` is not `0`; otherwise unchanged. The packed copy replaces the file's
    /// bytes, whose mapped pages are released, so resident memory does not double.
    pub fn packed(mut self) -> Linear {
        if self.dtype == DType::Q8_SB {
            return self.bitmap_groups();
        }
        if self.packed
            || self.precision != Precision::Fast
            || !packing_enabled()
            || !kernels::packs(self.dtype)
            || !self.uses_kernels()
        {
            return self;
        }
        let (k, m, rb) = (self.in_features, self.out_features, self.row_bytes);
        let mut packed = vec![0u8; kernels::packed_len(self.dtype, k, m)];
        // A few MiB of rows at a time, the file's pages released after each, so that a large
        // matrix (a tied embedding) is not resident twice while it is packed.
        let step =
            (PACK_CHUNK_BYTES / rb.max(1)).max(1).next_multiple_of(kernels::pack_group_rows(self.dtype));
        let plain = self.data.as_slice();
        let mut r0 = 0;
        while r0 < m {
            let r1 = (r0 + step).min(m);
            let (p0, p1) = (kernels::packed_len(self.dtype, k, r0), kernels::packed_len(self.dtype, k, r1));
            kernels::pack_into(self.dtype, k, r1 - r0, &plain[r0 * rb..r1 * rb], &mut packed[p0..p1]);
            if let TensorBytes::Mapped { bytes, start, .. } = &self.data {
                bytes.release(start + r0 * rb..start + r1 * rb);
            }
            r0 = r1;
        }
        self.data = TensorBytes::Shared(Arc::new(packed));
        self.packed = true;
        self
    }

    /// [`Linear::packed`] of a bitmap (`Q8_SB`) weight: the bitmap group layout
    /// ([`kernels::BitmapGroups`]) where the tier in use has its kernel, replacing the file's
    /// metadata and values (their mapped pages released).
    fn bitmap_groups(mut self) -> Linear {
        if self.groups.is_some()
            || self.precision != Precision::Fast
            || !packing_enabled()
            || !kernels::packs_bitmap()
            || !self.uses_kernels()
        {
            return self;
        }
        let Some((values, width)) = self.values.take() else { return self };
        let (k, m) = (self.in_features, self.out_features);
        let g = kernels::BitmapGroups::pack(k, m, self.data.as_slice(), values.as_slice(), width);
        for t in [&self.data, &values] {
            if let TensorBytes::Mapped { bytes, start, len } = t {
                bytes.release(*start..*start + *len);
            }
        }
        self.data = TensorBytes::Shared(Arc::new(Vec::new()));
        self.groups = Some(Arc::new(g));
        self
    }

    /// Whether the weight is in the kernels' packed layout ([`Linear::packed`]; for a bitmap
    /// weight, the bitmap group layout).
    pub fn is_packed(&self) -> bool {
        self.packed || self.groups.is_some()
    }

    /// Whether the forward pass runs the quantized-activation kernels.
    fn uses_kernels(&self) -> bool {
        self.precision == Precision::Fast
            && (self.dtype == DType::Q8_SB || kernels::supports(self.dtype))
            && self.in_features.is_multiple_of(kernels::activation_type(self.act_dtype()).block_size())
    }

    /// The weight type whose activation format the kernel reads: its own, or Q8_0's for a
    /// bitmap weight (whose products take Q8_0 activations).
    fn act_dtype(&self) -> DType {
        if self.dtype == DType::Q8_SB {
            DType::Q8_0
        } else {
            self.dtype
        }
    }

    /// Bytes the weight occupies: its data, and a bitmap weight's companion values.
    pub fn storage_bytes(&self) -> usize {
        self.data.as_slice().len()
            + self.values.as_ref().map_or(0, |(v, _)| v.as_slice().len())
            + self.groups.as_ref().map_or(0, |g| g.bytes().len())
    }

    /// The raw weight bytes: the file's rows, or the packed layout when [`Linear::is_packed`]
    /// (a bitmap weight's bitmap group layout).
    pub fn bytes(&self) -> &[u8] {
        self.groups.as_ref().map_or(self.data.as_slice(), |g| g.bytes())
    }

    /// Dequantize row `r` into `out` (`in_features` values).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) -> Result<(), ModelError> {
        if let Some(g) = &self.groups {
            g.row_f32(r, out);
            return Ok(());
        }
        if let Some((values, width)) = &self.values {
            let meta = &self.data.as_slice()[r * self.row_bytes..(r + 1) * self.row_bytes];
            let vals = &values.as_slice()[r * width..(r + 1) * width];
            return sparse::dequantize_bitmap_row(meta, vals, out)
                .map_err(|e| ModelError::Sparse { tensor: self.name.clone(), why: e.to_string() });
        }
        if !self.packed {
            let b = &self.data.as_slice()[r * self.row_bytes..(r + 1) * self.row_bytes];
            dequantize_row(self.dtype, b, out)?;
            return Ok(());
        }
        ROW.with(|cell| {
            let mut row = cell.borrow_mut();
            row.resize(self.row_bytes, 0);
            kernels::unpack_row(self.dtype, self.in_features, self.data.as_slice(), r, &mut row);
            dequantize_row(self.dtype, &row, out)
        })?;
        Ok(())
    }

    /// `y[t] = W x[t]` for `n` tokens: `x` is `[n × in]`, `y` is `[n × out]`.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) {
        Linear::forward_shared(&[self], x, n, &mut [y]);
    }

    /// The product without the kernels (exact precision, or a type without kernels).
    fn forward_exact(&self, x: &[f32], n: usize, y: &mut [f32]) {
        let (k, m) = (self.in_features, self.out_features);
        assert_eq!(x.len(), n * k, "{}: input length", self.name);
        assert_eq!(y.len(), n * m, "{}: output length", self.name);
        if OBSERVING.load(Ordering::Relaxed) {
            notify_observer(&self.name, x, n, k);
        }
        count_bytes(self.storage_bytes());
        let out = DisjointWriter::new(y);
        for_each_range(m, 16, |rows| {
            SCRATCH.with(|cell| {
                let mut w = cell.borrow_mut();
                w.resize(k, 0.0);
                for r in rows {
                    // Sizes were checked at construction; a failure here is a bug.
                    self.row_f32(r, &mut w).expect("row size checked at construction");
                    for t in 0..n {
                        let v = dot(&w, &x[t * k..(t + 1) * k]);
                        // SAFETY: each thread owns its rows `r`; index t*m + r is written once.
                        unsafe { out.write(t * m + r, v) };
                    }
                }
            });
        });
    }

    /// `ys[i] = layers[i] · x` for `n` tokens, for up to [`MAX_SHARED`] layers that read the
    /// same input (`[n × in]`; the Q, K and V projections, the gate and up projections).
    ///
    /// On the fast path the activations are quantized once per activation format (in
    /// parallel over tokens), and the products of all the layers run in one parallel region
    /// over their rows taken together: one hand-off to the pool instead of one per layer,
    /// and the split between threads balances over the whole. Otherwise (an exact-precision
    /// layer among them) each layer runs its own [`Linear::forward`].
    ///
    /// # Panics
    /// If the numbers of layers and outputs differ or exceed [`MAX_SHARED`], or a length does
    /// not match its layer.
    pub fn forward_shared(layers: &[&Linear], x: &[f32], n: usize, ys: &mut [&mut [f32]]) {
        assert!(
            layers.len() == ys.len() && layers.len() <= MAX_SHARED,
            "forward_shared: {} layers, {} outputs (at most {MAX_SHARED})",
            layers.len(),
            ys.len()
        );
        let Some(first) = layers.first() else { return };
        let th = first.active_threshold(n);
        if layers.iter().any(|l| l.active_threshold(n) != th) {
            // Layers thresholded differently: each on its own.
            for (l, y) in layers.iter().zip(ys.iter_mut()) {
                Linear::forward_shared(&[l], x, n, &mut [y]);
            }
            return;
        }
        let Some(t) = th else { return Linear::forward_plain(layers, x, n, ys) };
        for l in layers {
            assert_eq!(x.len(), n * l.in_features, "{}: input length", l.name);
        }
        let mut xt = THRESHOLDED.with(|c| std::mem::take(&mut *c.borrow_mut()));
        xt.clear();
        xt.extend(x.iter().map(|&v| if v.abs() < t { 0.0 } else { v }));
        let act = kernels::activation_type(first.dtype);
        if n == 1 && layers.iter().all(|l| l.skips_columns() && kernels::activation_type(l.dtype) == act) {
            Linear::forward_columns(layers, &xt, ys);
        } else if n == 1 && layers.iter().any(|l| l.skips_columns()) {
            // Column-skipping and dense layers, or activation formats that differ (Q4_K's
            // Q8_K next to Q8_0): each on its own.
            for (l, y) in layers.iter().zip(ys.iter_mut()) {
                if l.skips_columns() {
                    Linear::forward_columns(&[l], &xt, std::slice::from_mut(y));
                } else {
                    Linear::forward_plain(&[l], &xt, n, std::slice::from_mut(y));
                }
            }
        } else {
            Linear::forward_plain(layers, &xt, n, ys);
        }
        THRESHOLDED.with(|c| *c.borrow_mut() = xt);
    }

    /// One token through the column-skipping kernels: the layers' row tiles split over the
    /// threads, each quantizing `x` (thresholded) and gathering its non-zero codes itself.
    fn forward_columns(layers: &[&Linear], x: &[f32], ys: &mut [&mut [f32]]) {
        for (l, y) in layers.iter().zip(ys.iter()) {
            assert_eq!(y.len(), l.out_features, "{}: output length", l.name);
            if OBSERVING.load(Ordering::Relaxed) {
                notify_observer(&l.name, x, 1, l.in_features);
            }
        }
        let (k, dtype) = (layers[0].in_features, layers[0].dtype);
        let mut tiles = [0usize; MAX_SHARED];
        for (i, l) in layers.iter().enumerate() {
            tiles[i] = l.cols.as_ref().expect("skips_columns checked").tiles();
        }
        let mut outs: [Option<DisjointWriter<'_, f32>>; MAX_SHARED] = Default::default();
        for (o, y) in outs.iter_mut().zip(ys.iter_mut()) {
            *o = Some(DisjointWriter::new(y));
        }
        let total: usize = tiles.iter().sum();
        let parts = num_threads().min(total).clamp(1, MAX_PARTS);
        // Tile ranges of about equal rows (tiles have 128 or 64): an even count of tiles
        // would give one thread 384 of SmolLM2's 576 rows. Part p ends at the first tile
        // where the rows so far reach its share, keeping a tile for each later part; parts
        // left without tiles are empty.
        let mut bounds = [total; MAX_PARTS + 1];
        bounds[0] = 0;
        let all_rows: usize = layers.iter().map(|l| l.out_features).sum();
        let (mut p, mut rows, mut t) = (1, 0, 0);
        for l in layers {
            let c = l.cols.as_ref().expect("skips_columns checked");
            for i in 0..c.tiles() {
                rows += c.tile_row_range(i..i + 1).len();
                t += 1;
                while p < parts && rows * parts >= p * all_rows && total - t >= parts - p {
                    bounds[p] = t;
                    p += 1;
                }
            }
        }
        // Every part quantizes and gathers the input itself (the same codes on every thread):
        // no serial step while the other threads wait.
        for_each_index(parts, |part| {
            let mut cols = COLUMNS.with(|c| std::mem::take(&mut *c.borrow_mut()));
            ACT.with(|cell| {
                let mut act = cell.borrow_mut();
                let ab = kernels::activation_row_bytes(dtype, k);
                act.resize(ab, 0);
                kernels::quantize_activations(dtype, x, &mut act[..ab]);
                cols.gather_for(dtype, &act[..ab], k);
            });
            if part == 0 {
                count_bytes(layers.iter().map(|l| l.cols.as_ref().map_or(0, |c| c.bytes_read(&cols))).sum());
            }
            let range = bounds[part]..bounds[part + 1].max(bounds[part]);
            let mut base = 0;
            for (i, l) in layers.iter().enumerate() {
                let nt = tiles[i];
                let (lo, hi) = (range.start.max(base), range.end.min(base + nt));
                base += nt;
                if lo >= hi {
                    continue;
                }
                let c = l.cols.as_ref().expect("skips_columns checked");
                let t = lo - (base - nt)..hi - (base - nt);
                let rows = c.tile_row_range(t.clone());
                let (ptr, len) = outs[i].as_ref().expect("one writer per layer").raw_parts();
                assert!(rows.end <= len);
                // SAFETY: the output of layer i has `len` values at `ptr`; this part alone
                // writes its rows `rows` (the parts' tile ranges are disjoint), and nothing
                // reads the output during the region.
                let out = unsafe { std::slice::from_raw_parts_mut(ptr.add(rows.start), rows.len()) };
                colskip_matmul(c, t, &cols, out);
            }
            COLUMNS.with(|c| *c.borrow_mut() = cols);
        });
    }

    /// [`Linear::forward_shared`] on an input already thresholded (or not to be).
    fn forward_plain(layers: &[&Linear], x: &[f32], n: usize, ys: &mut [&mut [f32]]) {
        if layers.iter().any(|l| !l.uses_kernels()) {
            for (l, y) in layers.iter().zip(ys.iter_mut()) {
                l.forward_exact(x, n, y);
            }
            return;
        }
        for (l, y) in layers.iter().zip(ys.iter()) {
            assert_eq!(x.len(), n * l.in_features, "{}: input length", l.name);
            assert_eq!(y.len(), n * l.out_features, "{}: output length", l.name);
            if OBSERVING.load(Ordering::Relaxed) {
                notify_observer(&l.name, x, n, l.in_features);
            }
            count_bytes(l.storage_bytes());
        }
        let Some(first) = layers.first() else { return };
        if n == 0 {
            return;
        }
        let k = first.in_features;
        // Segment of the quantized activations each layer reads: one per activation format,
        // quantized with the first layer of that format (the format alone fixes the bytes).
        let mut seg = [(0usize, 0usize); MAX_SHARED];
        let mut formats = [(ActFormat::Plain(DType::F32), DType::F32, 0usize, 0usize); MAX_SHARED];
        let (mut n_formats, mut total) = (0, 0);
        for (i, l) in layers.iter().enumerate() {
            let fmt = l.act_format(n);
            let ab = l.activation_row_bytes(n);
            let f = match formats[..n_formats].iter().position(|&(f, ..)| f == fmt) {
                Some(f) => f,
                None => {
                    let w = match fmt {
                        ActFormat::Packed(d) => d,
                        ActFormat::Plain(_) => l.act_dtype(),
                    };
                    formats[n_formats] = (fmt, w, total, ab);
                    total += n * ab;
                    n_formats += 1;
                    n_formats - 1
                }
            };
            seg[i] = (formats[f].2, ab);
        }
        ACT.with(|cell| {
            let mut act = cell.borrow_mut();
            act.resize(total, 0);
            for &(fmt, w, off, ab) in &formats[..n_formats] {
                for_each_rows_mut(&mut act[off..off + n * ab], ab, |t0, rows| {
                    for (i, ar) in rows.chunks_exact_mut(ab).enumerate() {
                        let t = t0 + i;
                        let xt = &x[t * k..(t + 1) * k];
                        match fmt {
                            ActFormat::Plain(_) => kernels::quantize_activations(w, xt, ar),
                            ActFormat::Packed(_) => kernels::quantize_packed_activations(w, xt, ar),
                        }
                    }
                });
            }
            let act = &act[..];
            let mut outs: [Option<DisjointWriter<'_, f32>>; MAX_SHARED] = Default::default();
            for (o, y) in outs.iter_mut().zip(ys.iter_mut()) {
                *o = Some(DisjointWriter::new(y));
            }
            let rows_total: usize = layers.iter().map(|l| l.out_features).sum();
            // A prompt's product is split finer than one part per thread, the parts claimed
            // by whichever thread is free, so a thread that starts late or is slowed by
            // another process costs less; a token's stays at one part per thread.
            let parts = if n >= 16 { 4 * num_threads() } else { num_threads() };
            let per = rows_total.div_ceil(parts).next_multiple_of(16);
            for_each_index(rows_total.div_ceil(per), |part| {
                let range = part * per..((part + 1) * per).min(rows_total);
                let mut base = 0;
                for (i, l) in layers.iter().enumerate() {
                    let m = l.out_features;
                    let (lo, hi) = (range.start.max(base), range.end.min(base + m));
                    base += m;
                    if lo >= hi {
                        continue;
                    }
                    let rows = lo - (base - m)..hi - (base - m);
                    let (off, ab) = seg[i];
                    let a = &act[off..off + n * ab];
                    let (ptr, len) = outs[i].as_ref().expect("one writer per layer").raw_parts();
                    let data = l.data.as_slice();
                    // SAFETY: the output of layer i is `[n × m]` at `ptr`; this part alone writes
                    // its rows `rows` of every token (`t·m + r`), the parts' row ranges being
                    // disjoint, and nothing reads the output during the region.
                    unsafe {
                        let (out, out_len) = (ptr.add(rows.start), len - rows.start);
                        if let Some(g) = &l.groups {
                            debug_assert_eq!(ActFormat::Packed(DType::Q8_0), l.act_format(n));
                            kernels::matmul_bitmap_groups_to(g, rows.clone(), a, n, out, out_len, m);
                        } else if let Some(dense) = l.sparse_packed(n) {
                            let values = l.values.as_ref().map(|(v, c)| (v.as_slice(), *c));
                            debug_assert_eq!(ActFormat::Packed(dense), l.act_format(n));
                            kernels::matmul_sparse_packed_to(
                                l.dtype,
                                data,
                                values,
                                k,
                                rows.clone(),
                                a,
                                n,
                                out,
                                out_len,
                                m,
                            );
                        } else if let Some((values, width)) = &l.values {
                            let v = values.as_slice();
                            kernels::matmul_bitmap_to(
                                data,
                                v,
                                *width,
                                k,
                                rows.clone(),
                                a,
                                n,
                                out,
                                out_len,
                                m,
                            );
                        } else if l.packed {
                            kernels::matmul_packed_to(l.dtype, data, k, rows.clone(), a, n, out, out_len, m);
                        } else {
                            kernels::matmul_to(l.dtype, data, k, rows.clone(), a, n, out, out_len, m);
                        }
                    }
                }
            });
        });
    }
}

impl Linear {
    /// The dense type whose packed kernel runs this sparse weight's product of `n` tokens
    /// (`kernels::matmul_sparse_packed_to`: a prompt's), if it does.
    fn sparse_packed(&self, n: usize) -> Option<DType> {
        if n >= kernels::SPARSE_PACKED_MIN_TOKENS && is_sparse(self.dtype) && !self.packed {
            kernels::sparse_packed_type(self.dtype)
        } else {
            None
        }
    }

    /// The activation format its kernel reads for a product of `n` tokens.
    fn act_format(&self, n: usize) -> ActFormat {
        if self.groups.is_some() {
            ActFormat::Packed(DType::Q8_0)
        } else if self.packed {
            ActFormat::Packed(self.dtype)
        } else if let Some(dense) = self.sparse_packed(n) {
            ActFormat::Packed(dense)
        } else {
            ActFormat::Plain(kernels::activation_type(self.act_dtype()))
        }
    }

    /// Bytes of one quantized activation row for its kernel, for a product of `n` tokens.
    fn activation_row_bytes(&self, n: usize) -> usize {
        if self.groups.is_some() {
            kernels::packed_activation_row_bytes(DType::Q8_0, self.in_features)
        } else if self.packed {
            kernels::packed_activation_row_bytes(self.dtype, self.in_features)
        } else if let Some(dense) = self.sparse_packed(n) {
            kernels::packed_activation_row_bytes(dense, self.in_features)
        } else {
            kernels::activation_row_bytes(self.act_dtype(), self.in_features)
        }
    }
}

/// The activation format of a Linear's kernel: that of the GGUF-layout kernels (named by its
/// type), or that of the packed kernel of a weight type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActFormat {
    Plain(DType),
    Packed(DType),
}

/// Whether [`Linear::packed`] packs: 0 = not yet decided, 1 = yes, 2 = no.
static PACKING: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether [`Linear::packed`] packs: as [`set_packing`] last set it, else unless the
/// environment has `EDGELLM_PACK=0`.
pub fn packing_enabled() -> bool {
    match PACKING.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var("EDGELLM_PACK").map(|v| v.trim() != "0").unwrap_or(true);
            PACKING.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turns the packing of [`Linear::packed`] on or off for the models loaded from now on
/// (process-wide; for comparisons of the two layouts in one process).
pub fn set_packing(on: bool) {
    PACKING.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Suffix of a bitmap (`Q8_SB`) tensor's companion values tensor: `NAME.values`.
pub const BITMAP_VALUES_SUFFIX: &str = ".values";

/// Bytes by which loading `f` grows its weights beyond the file's tensors when packing is on
/// ([`Linear::packed`]): the N:M lane layouts (28, 36 or 54 bytes per row and 64 inputs
/// against the file's 24, 25, 40 or 41), the bitmap group layout's headers, and the padding of
/// the last row group. 0 when packing is off.
pub fn packing_growth_bytes(f: &GgufFile) -> u64 {
    if !packing_enabled() {
        return 0;
    }
    f.tensors
        .iter()
        .filter(|t| {
            t.dims.len() == 2
                && (kernels::packs(t.dtype) || (t.dtype == DType::Q8_SB && kernels::packs_bitmap()))
        })
        .filter_map(|t| {
            let (k, m) = (usize::try_from(t.dims[0]).ok()?, usize::try_from(t.dims[1]).ok()?);
            let packed = if t.dtype == DType::Q8_SB {
                // The bitmap group layout: headers and meta blocks in place of the metadata
                // (the kept codes take at most the companion tensor's bytes), a 64-byte tail.
                m.div_ceil(16) * (16 + k / sparse::QK_SPARSE * 160) + 64
            } else {
                k.is_multiple_of(t.dtype.block_size()).then(|| kernels::packed_len(t.dtype, k, m))?
            };
            Some((packed as u64).saturating_sub(t.size))
        })
        .sum()
}

/// Bytes of a file's rows packed between two releases of their pages ([`Linear::packed`]).
const PACK_CHUNK_BYTES: usize = 4 << 20;

/// The most layers [`Linear::forward_shared`] takes at once.
pub const MAX_SHARED: usize = 4;

/// The most threads a column-skipping product is split over.
const MAX_PARTS: usize = 64;

/// Sees the input of every [`Linear::forward`] while installed (calibration statistics for
/// quantization: importance matrices, Gram matrices). Called on the thread that runs the
/// forward, before the product.
pub trait InputObserver: Send + Sync {
    /// `x` is the input of Linear `name`: `[n × in_features]`, token-major.
    fn observe(&self, name: &str, x: &[f32], n: usize, in_features: usize);
}

/// Whether an observer is installed (checked on every forward; one relaxed load).
static OBSERVING: AtomicBool = AtomicBool::new(false);
static OBSERVER: RwLock<Option<Arc<dyn InputObserver>>> = RwLock::new(None);

/// Installs `obs` as the process-wide Linear input observer (`None` removes it). Meant for
/// calibration runs; with none installed a forward pays one atomic load.
pub fn set_input_observer(obs: Option<Arc<dyn InputObserver>>) {
    let mut g = OBSERVER.write().unwrap_or_else(|e| e.into_inner());
    OBSERVING.store(obs.is_some(), Ordering::Release);
    *g = obs;
}

#[cold]
fn notify_observer(name: &str, x: &[f32], n: usize, k: usize) {
    let obs = OBSERVER.read().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(o) = obs {
        o.observe(name, x, n, k);
    }
}

thread_local! {
    /// One dequantized weight row (exact path) or output block (fast path) per thread.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// One GGUF-layout row unpacked from a packed weight.
    static ROW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Quantized activations of the calling thread.
    static ACT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The thresholded input of the calling thread.
    static THRESHOLDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The non-zero activation codes of a one-token column-skipping product.
    static COLUMNS: std::cell::RefCell<ActiveColumns> = std::cell::RefCell::new(ActiveColumns::new());
}

/// Weight bytes the Linear products have read since the last [`reset_weight_bytes_read`]:
/// all of a weight for a dense product, the scales and active columns for a column-skipping
/// one (per call, not per token: a call of `n` tokens reads its weight once).
static BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_bytes(b: usize) {
    BYTES_READ.fetch_add(b as u64, Ordering::Relaxed);
}

/// Weight bytes read by Linear products since the last reset (process-wide).
pub fn weight_bytes_read() -> u64 {
    BYTES_READ.load(Ordering::Relaxed)
}

/// Resets [`weight_bytes_read`].
pub fn reset_weight_bytes_read() {
    BYTES_READ.store(0, Ordering::Relaxed);
}

/// The bytes of a GGUF tensor, borrowed from the file's map.
pub fn gguf_bytes(f: &GgufFile, t: &TensorInfo) -> TensorBytes {
    TensorBytes::Mapped { bytes: f.bytes(), start: (f.data_offset + t.offset) as usize, len: t.size as usize }
}

/// Parameters and bytes of a file's tensors: a bitmap weight's companion values tensor counts
/// its bytes but no parameters (its weight's dims already count them).
pub fn file_totals(f: &GgufFile) -> (u64, u64) {
    f.tensors.iter().fold((0u64, 0u64), |(n, b), t| {
        let companion = t.dtype == DType::I8
            && t.name
                .strip_suffix(BITMAP_VALUES_SUFFIX)
                .and_then(|w| f.tensor(w))
                .is_some_and(|w| w.dtype == DType::Q8_SB);
        (if companion { n } else { n + t.n_elements() }, b + t.size)
    })
}

/// Check a tensor's dims (GGUF order).
pub fn check_shape(t: &TensorInfo, expected: &[u64]) -> Result<(), ModelError> {
    if t.dims != expected {
        return Err(ModelError::ShapeMismatch {
            tensor: t.name.clone(),
            found: t.dims.clone(),
            expected: expected.to_vec(),
        });
    }
    Ok(())
}

/// A GGUF vector (norm weights and the like) as f32, checked to have `n` elements.
pub fn gguf_vector(f: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
    let t = f.need_tensor(name)?;
    check_shape(t, &[n as u64])?;
    Ok(edgellm_core::quant::dequantize(t.dtype, f.tensor_data(t), n)?)
}

/// Which weight types [`Linear::packed`] packs here, for reports: e.g.
/// `Q4_0/Q5_0/Q8_0/Q4_1/Q5_1/Q4_K/Q6_K`, or `off` (no packed kernel on this tier, or
/// `EDGELLM_PACK=0`). Weights of other types keep the file's layout.
pub fn packing_description() -> String {
    let types: Vec<&str> = [
        DType::Q4_0,
        DType::Q5_0,
        DType::Q8_0,
        DType::Q4_1,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q6_K,
        DType::Q4_S24,
        DType::Q4_S48,
        DType::Q8_S24,
        DType::Q8_S48,
        DType::Q8_SB,
    ]
    .into_iter()
    .filter(|&t| packing_enabled() && (kernels::packs(t) || (t == DType::Q8_SB && kernels::packs_bitmap())))
    .map(|t| t.name())
    .collect();
    if types.is_empty() {
        "off".to_string()
    } else {
        types.join("/")
    }
}

/// Which kernels the Linear layers use, for reports (`edgellm bench`, `--verbose`).
pub fn kernel_description() -> String {
    kernels::tier_name().to_string()
}

#[cfg(test)]
mod packed_tests {
    use super::*;

    /// A Linear of type `t`, `m` rows of `k` values, from a smooth deterministic pattern.
    fn linear(t: DType, k: usize, m: usize) -> Linear {
        let x: Vec<f32> = (0..k * m).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let w = edgellm_core::quant::quantize(t, &x).unwrap();
        Linear::new("packed.weight", t, k, m, TensorBytes::Owned(w)).unwrap()
    }

    #[test]
    fn packed_linear_computes_what_the_file_layout_does() {
        // 21 rows: two whole groups and a partial one.
        let (k, m) = (96, 21);
        // One test, as packing is switched process-wide.
        for t in [DType::Q4_0, DType::Q4_1, DType::Q5_1] {
            set_packing(false);
            let plain = linear(t, k, m).packed();
            assert!(!plain.is_packed());
            set_packing(true);
            let packed = linear(t, k, m).packed();
            assert_eq!(packed.is_packed(), kernels::packs(t), "{t}");
            let (mut a, mut b) = (vec![0.0f32; k], vec![0.0f32; k]);
            for r in 0..m {
                plain.row_f32(r, &mut a).unwrap();
                packed.row_f32(r, &mut b).unwrap();
                assert_eq!(a, b, "{t} row {r}");
            }
            for n in [1, 3, 9] {
                let x: Vec<f32> = (0..n * k).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
                let (mut y0, mut y1) = (vec![0.0f32; n * m], vec![0.0f32; n * m]);
                plain.forward(&x, n, &mut y0);
                packed.forward(&x, n, &mut y1);
                for (i, (u, v)) in y0.iter().zip(&y1).enumerate() {
                    // Same integer sums, float sums in another order: a few ulps of the largest.
                    assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "{t} n {n} output {i}: {u} vs {v}");
                }
                // And an exact-precision Linear over the packed bytes dequantizes them right.
                let exact = linear(t, k, m).packed().with_precision(Precision::Exact);
                let mut y2 = vec![0.0f32; n * m];
                exact.forward(&x, n, &mut y2);
                let scale = y0.iter().fold(0.0f32, |s, v| s.max(v.abs()));
                for (u, v) in y0.iter().zip(&y2) {
                    assert!((u - v).abs() <= 0.05 * scale, "{t}: 8-bit activations vs exact: {u} vs {v}");
                }
            }
        }
    }
}

#[cfg(test)]
mod observer_tests {
    use super::*;
    use std::sync::Mutex;

    struct Record(Mutex<Vec<(String, Vec<f32>, usize)>>);

    impl InputObserver for Record {
        fn observe(&self, name: &str, x: &[f32], n: usize, _in_features: usize) {
            self.0.lock().unwrap().push((name.to_string(), x.to_vec(), n));
        }
    }

    #[test]
    fn observer_sees_inputs_while_installed() {
        let w: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let lin = Linear::new("observed.weight", DType::F32, 2, 2, TensorBytes::Owned(w)).unwrap();
        let rec = Arc::new(Record(Mutex::new(Vec::new())));
        let mut y = [0.0f32; 4];
        set_input_observer(Some(rec.clone()));
        lin.forward(&[1.0, 0.5, -1.0, 2.0], 2, &mut y);
        set_input_observer(None);
        lin.forward(&[9.0, 9.0], 1, &mut y[..2]);
        let seen: Vec<_> =
            rec.0.lock().unwrap().iter().filter(|r| r.0 == "observed.weight").cloned().collect();
        assert_eq!(seen, vec![("observed.weight".to_string(), vec![1.0, 0.5, -1.0, 2.0], 2)]);
    }
}
