//! Storing pruned weights in edgellm's sparse tensor types (`docs/sparse-gguf.md`).
//!
//! A pruned model is written dense by default (zeros stored as zeros, a file llama.cpp loads).
//! With [`StorageFormat::Sparse`] every pruned tensor is written in the sparse type matching its
//! pattern and the width its dense plan gave it: N:M 2:4 / 4:8 with 4-bit values (`Q4_S24`,
//! `Q4_S48`) where the plan chose a type of 5 bits or fewer, 8-bit values (`Q8_S24`, `Q8_S48`)
//! where it chose more; unstructured sparsity as the bitmap type `Q8_SB` with its companion
//! values tensor. The kept values are quantized from the pruned f32 weights by the reference
//! quantizers of `edgellm_core::quant::sparse` (the keep-mask is the pruned row's non-zeros).

use std::borrow::Cow;

use edgellm_core::parallel::{for_each_range, DisjointWriter};
use edgellm_core::quant::sparse::{self, QK_SPARSE};
use edgellm_core::quant::{quantize_row, QuantError};
use edgellm_core::DType;
use edgellm_formats::{GgufWriter, Value};
use edgellm_models::linear::{BITMAP_VALUES_SUFFIX, SPARSE_VERSION, SPARSE_VERSION_KEY};

use crate::prune::Sparsity;
use crate::CompressError;

/// How pruned tensors are stored in the output file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StorageFormat {
    /// Zeros stored densely in the usual types: a standard GGUF llama.cpp loads.
    #[default]
    Dense,
    /// edgellm's sparse types (fewer bytes, faster decoding; edgellm only).
    Sparse,
}

impl StorageFormat {
    /// Parses `dense` or `sparse`.
    pub fn parse(s: &str) -> Result<StorageFormat, CompressError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dense" => Ok(StorageFormat::Dense),
            "sparse" => Ok(StorageFormat::Sparse),
            other => Err(CompressError::BadPrune(format!(
                "--format {other:?}: use dense (standard GGUF) or sparse (edgellm's sparse types)"
            ))),
        }
    }

    /// `dense` or `sparse`.
    pub fn name(self) -> &'static str {
        match self {
            StorageFormat::Dense => "dense",
            StorageFormat::Sparse => "sparse",
        }
    }
}

/// The sparse type a pruned tensor planned as `dense` is stored in under `sp`.
pub fn sparse_type(dense: DType, sp: Sparsity, tensor: &str) -> Result<DType, CompressError> {
    let bad = |why: String| CompressError::BadTensor { tensor: tensor.into(), why };
    let eight = match dense {
        DType::Q2_K
        | DType::Q3_K
        | DType::Q4_0
        | DType::Q4_1
        | DType::Q4_K
        | DType::Q5_0
        | DType::Q5_1
        | DType::Q5_K => false,
        DType::Q6_K | DType::Q8_0 => true,
        other => {
            return Err(bad(format!(
                "the sparse types hold 4- or 8-bit values, and this tensor would be {other}: \
                 give --then-quantize with a quantized type (e.g. Q4_0 or Q8_0), or --format dense"
            )))
        }
    };
    match (sp, eight) {
        (Sparsity::NM { n: 2, m: 4 }, false) => Ok(DType::Q4_S24),
        (Sparsity::NM { n: 4, m: 8 }, false) => Ok(DType::Q4_S48),
        (Sparsity::NM { n: 2, m: 4 }, true) => Ok(DType::Q8_S24),
        (Sparsity::NM { n: 4, m: 8 }, true) => Ok(DType::Q8_S48),
        (Sparsity::NM { n, m }, _) => Err(bad(format!(
            "pattern {n}:{m} has no sparse type (2:4 and 4:8 do); use --format dense for it"
        ))),
        (Sparsity::Unstructured(_), true) => Ok(DType::Q8_SB),
        (Sparsity::Unstructured(_), false) => Err(bad(format!(
            "unstructured sparsity is stored as Q8_SB (8-bit values), but this tensor would be {dense}: \
             use --then-quantize Q8_0 with --format sparse, or a 2:4 / 4:8 pattern for 4-bit values"
        ))),
    }
}

/// One tensor rewritten by [`sparsify`].
#[derive(Clone, Debug)]
pub struct SparseTensorReport {
    /// Name.
    pub name: String,
    /// The dense type the plan gave it.
    pub from: DType,
    /// The sparse type written.
    pub to: DType,
    /// Bytes of the dense tensor.
    pub bytes_dense: u64,
    /// Bytes written (with a bitmap weight's companion values).
    pub bytes_sparse: u64,
}

/// Rewrites the tensors of `w` named in `pruned` (name → pruned f32 weights, `[rows × k]`) in
/// their sparse types, in place (a bitmap weight's companion values tensor right after it), and
/// marks the file with `edgellm.sparse.version` and `edgellm.sparse.pattern`.
pub fn sparsify<'a>(
    w: &mut GgufWriter<'a>,
    pruned: &[(String, Vec<f32>)],
    sp: Sparsity,
) -> Result<Vec<SparseTensorReport>, CompressError> {
    let mut report = Vec::with_capacity(pruned.len());
    for (name, x) in pruned {
        let i = w.tensors.iter().position(|t| &t.name == name).ok_or_else(|| CompressError::BadTensor {
            tensor: name.clone(),
            why: "pruned but not in the output".into(),
        })?;
        let (dims, from, bytes_dense) = {
            let t = &w.tensors[i];
            (t.dims.clone(), t.dtype, t.data.len() as u64)
        };
        let k = dims.first().copied().unwrap_or(0) as usize;
        let m = x.len().checked_div(k).unwrap_or(0);
        if dims.len() != 2 || k * m != x.len() || !k.is_multiple_of(QK_SPARSE) {
            return Err(CompressError::BadTensor {
                tensor: name.clone(),
                why: format!(
                    "a sparse weight must be a matrix whose rows are a multiple of {QK_SPARSE} long; dims {dims:?}"
                ),
            });
        }
        let to = sparse_type(from, sp, name)?;
        let sparse_err =
            |e: sparse::SparseError| CompressError::BadTensor { tensor: name.clone(), why: e.to_string() };
        let bytes_sparse;
        if to == DType::Q8_SB {
            let b = sparse::quantize_bitmap(x, k, m).map_err(sparse_err)?;
            bytes_sparse = (b.meta.len() + b.values.len()) as u64;
            let t = &mut w.tensors[i];
            t.dtype = to;
            t.data = Cow::Owned(b.meta);
            let vname = format!("{name}{BITMAP_VALUES_SUFFIX}");
            if w.tensors.iter().any(|t| t.name == vname) {
                return Err(CompressError::BadTensor {
                    tensor: vname,
                    why: "the model already has a tensor of this name".into(),
                });
            }
            w.tensors.insert(
                i + 1,
                edgellm_formats::WriterTensor {
                    name: vname,
                    dims: vec![b.c as u64, m as u64],
                    dtype: DType::I8,
                    data: Cow::Owned(b.values),
                },
            );
        } else {
            let data = quantize_rows(to, x, k, m)
                .map_err(|e| CompressError::Quant { tensor: name.clone(), source: e })?;
            bytes_sparse = data.len() as u64;
            let t = &mut w.tensors[i];
            t.dtype = to;
            t.data = Cow::Owned(data);
        }
        report.push(SparseTensorReport { name: name.clone(), from, to, bytes_dense, bytes_sparse });
    }
    w.set(SPARSE_VERSION_KEY, Value::U32(SPARSE_VERSION));
    w.set("edgellm.sparse.pattern", Value::String(pattern_label(sp)));
    Ok(report)
}

/// The `edgellm.sparse.pattern` value: `2:4`, `4:8` or `unstructured 0.7`.
fn pattern_label(sp: Sparsity) -> String {
    match sp {
        Sparsity::NM { n, m } => format!("{n}:{m}"),
        Sparsity::Unstructured(s) => format!("unstructured {s}"),
    }
}

/// `m` rows of `k` values quantized to the N:M type `dtype`, rows in parallel.
fn quantize_rows(dtype: DType, x: &[f32], k: usize, m: usize) -> Result<Vec<u8>, QuantError> {
    let rb = (k / QK_SPARSE) * dtype.type_size();
    let mut out = vec![0u8; rb * m];
    let err = std::sync::Mutex::new(None);
    {
        let dst = DisjointWriter::new(&mut out);
        for_each_range(m, 16, |rows| {
            let mut buf = vec![0u8; rb];
            for r in rows {
                if let Err(e) = quantize_row(dtype, &x[r * k..(r + 1) * k], &mut buf) {
                    *err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return;
                }
                for (j, &b) in buf.iter().enumerate() {
                    // SAFETY: row r's bytes are written by this range only.
                    unsafe { dst.write(r * rb + j, b) };
                }
            }
        });
    }
    match err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_pattern_and_width() {
        let nm = |n, m| Sparsity::NM { n, m };
        assert_eq!(sparse_type(DType::Q4_0, nm(2, 4), "t").unwrap(), DType::Q4_S24);
        assert_eq!(sparse_type(DType::Q4_K, nm(4, 8), "t").unwrap(), DType::Q4_S48);
        assert_eq!(sparse_type(DType::Q8_0, nm(2, 4), "t").unwrap(), DType::Q8_S24);
        assert_eq!(sparse_type(DType::Q6_K, nm(4, 8), "t").unwrap(), DType::Q8_S48);
        assert_eq!(sparse_type(DType::Q8_0, Sparsity::Unstructured(0.7), "t").unwrap(), DType::Q8_SB);
        assert!(sparse_type(DType::Q4_0, Sparsity::Unstructured(0.7), "t").is_err());
        assert!(sparse_type(DType::F16, nm(2, 4), "t").is_err());
        assert!(sparse_type(DType::Q4_0, nm(1, 4), "t").is_err());
    }

    #[test]
    fn sparsify_writes_types_companion_and_marks() {
        let (k, m) = (128usize, 5usize);
        // A 2:4 row pattern and an unstructured one (70 % zeros, uneven per block).
        let nm: Vec<f32> = (0..k * m)
            .map(|i| if i % 4 < 2 { ((i * 7 % 13) as f32 - 6.0) / 3.0 + 0.1 } else { 0.0 })
            .collect();
        let un: Vec<f32> = (0..k * m)
            .map(|i| if (i * 31 + i / 7) % 10 < 3 { ((i % 11) as f32 - 5.0) / 2.0 + 0.25 } else { 0.0 })
            .collect();
        for (x, sp, dense, want) in [
            (&nm, Sparsity::NM { n: 2, m: 4 }, DType::Q4_0, DType::Q4_S24),
            (&un, Sparsity::Unstructured(0.7), DType::Q8_0, DType::Q8_SB),
        ] {
            let mut w = GgufWriter::new();
            let dq = edgellm_core::quant::quantize(dense, x).unwrap();
            w.add_tensor("blk.0.ffn_up.weight", &[k as u64, m as u64], dense, dq).unwrap();
            w.add_tensor("other", &[4], DType::F32, vec![0u8; 16]).unwrap();
            let rep = sparsify(&mut w, &[("blk.0.ffn_up.weight".into(), x.clone())], sp).unwrap();
            assert_eq!(rep[0].to, want);
            assert!(rep[0].bytes_sparse < rep[0].bytes_dense, "{want}: sparse is smaller");
            assert_eq!(w.tensors[0].dtype, want);
            let back = if want == DType::Q8_SB {
                assert_eq!(w.tensors[1].name, "blk.0.ffn_up.weight.values");
                assert_eq!(w.tensors[1].dtype, DType::I8);
                let c = w.tensors[1].dims[0] as usize;
                sparse::dequantize_bitmap(&w.tensors[0].data, &w.tensors[1].data, c, k, m).unwrap()
            } else {
                edgellm_core::quant::dequantize(want, &w.tensors[0].data, k * m).unwrap()
            };
            // Zeros stay zeros; kept values within their quantization step.
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for (a, b) in x.iter().zip(&back) {
                if *a == 0.0 {
                    assert_eq!(*b, 0.0);
                } else {
                    assert!((a - b).abs() <= amax / 7.0, "{want}: {a} vs {b}");
                }
            }
            assert!(w
                .metadata
                .iter()
                .any(|(k, v)| k == SPARSE_VERSION_KEY && *v == Value::U32(SPARSE_VERSION)));
            assert_eq!(w.tensors.last().unwrap().name, "other");
            // The writer accepts what it holds (sizes checked on write).
            let mut bytes = Vec::new();
            w.write_to(&mut bytes).unwrap();
        }
    }
}
