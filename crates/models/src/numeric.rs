//! Numeric hygiene of a model file: every weight decoded and checked for NaN, infinities and
//! values too large for half precision (`edgellm inspect --check`).
//!
//! A quantized block whose scale is NaN or overflowed to infinity (an f16 scale above 65 504
//! rounds to infinity) decodes to NaN or infinite weights, and a model holding one produces
//! garbage without any error. The check decodes each tensor with the scalar reference decoders
//! (the oracle of every kernel), so it sees exactly what inference computes with, and names the
//! tensor, the block, its row and column, and the value.

use edgellm_core::quant::{self, sparse};
use edgellm_core::DType;
use edgellm_formats::{GgufFile, TensorInfo};

use crate::linear::BITMAP_VALUES_SUFFIX;
use crate::ModelError;

/// Largest finite half-precision value: a weight beyond it overflows any f16 path (an F16 KV
/// cache, a GPU kernel, a re-quantization whose scales are f16).
pub const F16_MAX: f32 = 65_504.0;

/// What is wrong with one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not a number.
    NaN,
    /// Positive or negative infinity.
    Infinite,
    /// Finite but larger in magnitude than the limit ([`F16_MAX`] unless set).
    TooLarge,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Problem::NaN => "NaN",
            Problem::Infinite => "infinite",
            Problem::TooLarge => "too large",
        })
    }
}

/// The first bad value of one block.
#[derive(Clone, Debug, PartialEq)]
pub struct BadBlock {
    /// Index of the block in the tensor (blocks of the type's block size, row-major).
    pub block: u64,
    /// Row of the value (index along the tensor's second and later dimensions, flattened).
    pub row: u64,
    /// Column of the value (index along the first dimension, `ne[0]`).
    pub column: u64,
    /// The decoded value.
    pub value: f32,
    /// What is wrong with it.
    pub problem: Problem,
}

/// The check of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorCheck {
    /// Tensor name.
    pub name: String,
    /// Its type.
    pub dtype: DType,
    /// Values decoded.
    pub elements: u64,
    /// NaN values.
    pub nan: u64,
    /// Infinite values.
    pub infinite: u64,
    /// Finite values above the limit.
    pub too_large: u64,
    /// Blocks holding at least one bad value.
    pub bad_blocks: u64,
    /// The largest finite magnitude.
    pub max_abs: f32,
    /// The first bad blocks (at most [`NumericOptions::max_listed`]), in file order.
    pub first: Vec<BadBlock>,
}

impl TensorCheck {
    /// True when no value is NaN, infinite or too large.
    pub fn is_clean(&self) -> bool {
        self.nan + self.infinite + self.too_large == 0
    }
}

/// A tensor the check did not decode, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Tensor name.
    pub name: String,
    /// Its type.
    pub dtype: DType,
    /// Why: integers hold no NaN, a bitmap tensor's values are checked with it, a type has no
    /// decoder in edgellm.
    pub reason: &'static str,
}

/// Options of [`check_numerics`].
#[derive(Clone, Copy, Debug)]
pub struct NumericOptions {
    /// Finite magnitudes above this are reported as [`Problem::TooLarge`] ([`F16_MAX`] by
    /// default; `f32::INFINITY` turns that off).
    pub max_abs: f32,
    /// Bad blocks listed per tensor (all are counted).
    pub max_listed: usize,
}

impl Default for NumericOptions {
    fn default() -> Self {
        NumericOptions { max_abs: F16_MAX, max_listed: 5 }
    }
}

/// The check of a whole file.
#[derive(Clone, Debug, PartialEq)]
pub struct NumericReport {
    /// One entry per decoded tensor, in file order.
    pub tensors: Vec<TensorCheck>,
    /// Tensors not decoded.
    pub skipped: Vec<Skipped>,
    /// The magnitude limit used.
    pub max_abs: f32,
}

impl NumericReport {
    /// True when every decoded tensor is clean.
    pub fn is_clean(&self) -> bool {
        self.tensors.iter().all(TensorCheck::is_clean)
    }

    /// The tensors that are not clean.
    pub fn bad(&self) -> impl Iterator<Item = &TensorCheck> {
        self.tensors.iter().filter(|t| !t.is_clean())
    }
}

/// Decodes every tensor of `f` and reports NaN, infinite and too-large values (see the module
/// documentation). Integer tensors, a bitmap weight's companion values (checked with their
/// weight) and types without a decoder are listed in [`NumericReport::skipped`].
pub fn check_numerics(f: &GgufFile, opts: NumericOptions) -> Result<NumericReport, ModelError> {
    let mut report = NumericReport { tensors: Vec::new(), skipped: Vec::new(), max_abs: opts.max_abs };
    for t in &f.tensors {
        let skip = |reason| Skipped { name: t.name.clone(), dtype: t.dtype, reason };
        let companion = t.dtype == DType::I8
            && t.name
                .strip_suffix(BITMAP_VALUES_SUFFIX)
                .and_then(|w| f.tensor(w))
                .is_some_and(|w| w.dtype == DType::Q8_SB);
        match t.dtype {
            _ if companion => report.skipped.push(skip("kept values of a Q8_SB weight, checked with it")),
            DType::I8 | DType::I16 | DType::I32 | DType::I64 => {
                report.skipped.push(skip("integers: no NaN or infinity"))
            }
            DType::Q8_SB => report.tensors.push(check_bitmap(f, t, opts)?),
            DType::F64 => report.tensors.push(check_f64(f, t, opts)),
            d if decodes(d) => report.tensors.push(check_dense(f, t, opts)?),
            _ => report.skipped.push(skip("no decoder in edgellm for this type")),
        }
    }
    Ok(report)
}

/// Whether [`quant::dequantize_row`] decodes `dtype`.
fn decodes(dtype: DType) -> bool {
    let bs = dtype.block_size();
    let mut one = vec![0.0f32; bs.max(1)];
    quant::dequantize_row(dtype, &vec![0u8; dtype.type_size()], &mut one).is_ok()
}

/// Accumulates one tensor's findings, row by row.
struct Scan {
    check: TensorCheck,
    block_size: u64,
    ne0: u64,
    last_bad_block: Option<u64>,
    opts: NumericOptions,
}

impl Scan {
    fn new(t: &TensorInfo, block_size: usize, opts: NumericOptions) -> Scan {
        Scan {
            check: TensorCheck {
                name: t.name.clone(),
                dtype: t.dtype,
                elements: 0,
                nan: 0,
                infinite: 0,
                too_large: 0,
                bad_blocks: 0,
                max_abs: 0.0,
                first: Vec::new(),
            },
            block_size: block_size as u64,
            ne0: t.dims.first().copied().unwrap_or(1).max(1),
            last_bad_block: None,
            opts,
        }
    }

    /// Values starting at flat index `start`.
    fn values(&mut self, start: u64, values: &[f32]) {
        self.check.elements += values.len() as u64;
        // Fast path: a chunk whose values are all finite and within the limit (the usual case)
        // only updates the maximum.
        let m = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let nonfinite = values.iter().any(|v| !v.is_finite());
        if !nonfinite && m <= self.opts.max_abs {
            self.check.max_abs = self.check.max_abs.max(m);
            return;
        }
        for (i, &v) in values.iter().enumerate() {
            let problem = if v.is_nan() {
                self.check.nan += 1;
                Problem::NaN
            } else if v.is_infinite() {
                self.check.infinite += 1;
                Problem::Infinite
            } else {
                self.check.max_abs = self.check.max_abs.max(v.abs());
                if v.abs() <= self.opts.max_abs {
                    continue;
                }
                self.check.too_large += 1;
                Problem::TooLarge
            };
            let at = start + i as u64;
            let block = at / self.block_size;
            if self.last_bad_block == Some(block) {
                continue;
            }
            self.last_bad_block = Some(block);
            self.check.bad_blocks += 1;
            if self.check.first.len() < self.opts.max_listed {
                self.check.first.push(BadBlock {
                    block,
                    row: at / self.ne0,
                    column: at % self.ne0,
                    value: v,
                    problem,
                });
            }
        }
    }
}

/// Rows decoded per call: bounded scratch whatever the tensor's size.
const CHUNK_ELEMENTS: usize = 1 << 16;

fn check_dense(f: &GgufFile, t: &TensorInfo, opts: NumericOptions) -> Result<TensorCheck, ModelError> {
    let bs = t.dtype.block_size();
    let data = f.tensor_data(t);
    let n = t.n_elements() as usize;
    // Whole blocks per chunk (the reader checked that rows are whole blocks).
    let per = (CHUNK_ELEMENTS / bs).max(1) * bs;
    let mut buf = vec![0.0f32; per.min(n)];
    let mut scan = Scan::new(t, bs, opts);
    let mut start = 0usize;
    while start < n {
        let len = per.min(n - start);
        // Whole blocks, inside the tensor: the reader checked its size.
        let at = |e: usize| t.dtype.bytes_for(e as u64).unwrap_or(0) as usize;
        quant::dequantize_row(t.dtype, &data[at(start)..at(start + len)], &mut buf[..len])?;
        scan.values(start as u64, &buf[..len]);
        start += len;
    }
    Ok(scan.check)
}

fn check_f64(f: &GgufFile, t: &TensorInfo, opts: NumericOptions) -> TensorCheck {
    let mut scan = Scan::new(t, 1, opts);
    let mut buf = Vec::with_capacity(CHUNK_ELEMENTS);
    // An f64 beyond f32's range becomes infinite here: it is reported as such (edgellm computes
    // in f32).
    for (i, chunk) in f.tensor_data(t).chunks(8 * CHUNK_ELEMENTS).enumerate() {
        buf.clear();
        buf.extend(chunk.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32));
        scan.values((i * CHUNK_ELEMENTS) as u64, &buf);
    }
    scan.check
}

fn check_bitmap(f: &GgufFile, t: &TensorInfo, opts: NumericOptions) -> Result<TensorCheck, ModelError> {
    let bad = |why: String| ModelError::Sparse { tensor: t.name.clone(), why };
    let vname = format!("{}{BITMAP_VALUES_SUFFIX}", t.name);
    let v =
        f.tensor(&vname).ok_or_else(|| bad(format!("its companion values tensor '{vname}' is missing")))?;
    let k = t.dims.first().copied().unwrap_or(0) as usize;
    let m = (t.n_elements() as usize).checked_div(k).unwrap_or(0);
    let c = v.dims.first().copied().unwrap_or(0) as usize;
    let (meta, values) = (f.tensor_data(t), f.tensor_data(v));
    sparse::validate(DType::Q8_SB, k, m, meta, Some((values, c))).map_err(|e| bad(e.to_string()))?;
    let mut scan = Scan::new(t, sparse::QK_SPARSE, opts);
    let mut row = vec![0.0f32; k];
    let rb = meta.len().checked_div(m).unwrap_or(0);
    for r in 0..m {
        sparse::dequantize_bitmap_row(&meta[r * rb..(r + 1) * rb], &values[r * c..(r + 1) * c], &mut row)
            .map_err(|e| bad(e.to_string()))?;
        scan.values((r * k) as u64, &row);
    }
    Ok(scan.check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellm_formats::GgufWriter;

    fn file(tensors: &[(&str, DType, Vec<u64>, Vec<u8>)]) -> GgufFile {
        let mut w = GgufWriter::new();
        w.set("general.architecture", edgellm_formats::Value::String("llama".into()));
        for (name, dtype, dims, data) in tensors {
            w.add_tensor(name, dims, *dtype, data.clone()).unwrap();
        }
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        GgufFile::from_vec(bytes).unwrap()
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn clean_tensors_are_clean() {
        let w: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 7.0).collect();
        let q = quant::quantize(DType::Q8_0, &w).unwrap();
        let f = file(&[("a", DType::F32, vec![64], f32_bytes(&w)), ("b", DType::Q8_0, vec![32, 2], q)]);
        let r = check_numerics(&f, NumericOptions::default()).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.tensors.len(), 2);
        assert_eq!(r.tensors[1].elements, 64);
        assert!((r.tensors[0].max_abs - 32.0 / 7.0).abs() < 1e-6);
    }

    #[test]
    fn nan_inf_and_overflowed_scales_are_located() {
        let mut w = vec![0.5f32; 96];
        w[40] = f32::NAN;
        w[41] = f32::NAN;
        w[70] = f32::NEG_INFINITY;
        w[95] = 1e6;
        // A Q8_0 tensor [32, 3] whose second block's f16 scale is +inf (0x7c00).
        let mut q = quant::quantize(DType::Q8_0, &vec![0.25f32; 96]).unwrap();
        let bsz = DType::Q8_0.type_size();
        q[bsz..bsz + 2].copy_from_slice(&0x7c00u16.to_le_bytes());
        let f =
            file(&[("dense", DType::F32, vec![32, 3], f32_bytes(&w)), ("q", DType::Q8_0, vec![32, 3], q)]);
        let r = check_numerics(&f, NumericOptions::default()).unwrap();
        assert!(!r.is_clean());
        let d = &r.tensors[0];
        // F32 blocks are single values: the two NaNs are two blocks.
        assert_eq!((d.nan, d.infinite, d.too_large, d.bad_blocks), (2, 1, 1, 4));
        let b = &d.first[0];
        assert_eq!((b.block, b.row, b.column, b.problem), (40, 1, 8, Problem::NaN));
        assert!(b.value.is_nan());
        assert_eq!((d.first[2].block, d.first[2].problem), (70, Problem::Infinite));
        assert_eq!((d.first[3].row, d.first[3].column, d.first[3].problem), (2, 31, Problem::TooLarge));
        let q = &r.tensors[1];
        assert_eq!((q.infinite, q.bad_blocks), (32, 1));
        assert_eq!((q.first[0].block, q.first[0].row, q.first[0].column), (1, 1, 0));
        // The limit is an option.
        let loose = check_numerics(&f, NumericOptions { max_abs: f32::INFINITY, max_listed: 1 }).unwrap();
        assert_eq!((loose.tensors[0].too_large, loose.tensors[0].first.len()), (0, 1));
    }

    #[test]
    fn f64_tensors_are_scanned_in_chunks_and_located() {
        // Past the first chunk: a NaN, and a value beyond f32's range (infinite in f32).
        let n = CHUNK_ELEMENTS + 64; // 656 rows of 100
        let mut v = vec![0.25f64; n];
        v[CHUNK_ELEMENTS + 3] = f64::NAN;
        v[n - 1] = 1e300;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let f = file(&[("d", DType::F64, vec![100, n as u64 / 100], bytes)]);
        let r = check_numerics(&f, NumericOptions::default()).unwrap();
        let d = &r.tensors[0];
        assert_eq!((d.elements, d.nan, d.infinite, d.bad_blocks), (n as u64, 1, 1, 2));
        assert_eq!((d.first[0].block, d.first[0].problem), (CHUNK_ELEMENTS as u64 + 3, Problem::NaN));
        assert_eq!((d.first[1].row, d.first[1].column), (n as u64 / 100 - 1, 99));
    }

    #[test]
    fn integers_are_skipped() {
        let f = file(&[("ids", DType::I32, vec![4], vec![0xff; 16])]);
        let r = check_numerics(&f, NumericOptions::default()).unwrap();
        assert!(r.is_clean());
        assert_eq!(r.skipped.len(), 1);
        assert!(r.tensors.is_empty());
    }
}
