//! The quantization driver: plan every tensor, quantize (in parallel over rows), and build the
//! output GGUF with the source's metadata and tensor order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use edgellm_core::parallel::{for_each_range, DisjointWriter};
use edgellm_core::quant::quantize_row;
use edgellm_core::DType;
use edgellm_formats::{GgufWriter, Value};

use crate::awq::{scale_model, AwqChoice, AwqParams};
use crate::grid;
use crate::plan::{plan, KeepRule, Reason, Scheme};
use crate::source::{ModelSource, SourceTensor};
use crate::CompressError;

/// How weights are rounded to their grid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// Round to nearest with ggml's reference quantizers (what `llama-quantize` does without
    /// an importance matrix); bit-identical to it.
    #[default]
    Rtn,
    /// Importance-weighted least-squares search of every block's scales and minimums
    /// ([`crate::grid`]), with per-input-channel importance from an imatrix (plain squared error
    /// without one).
    Weighted,
    /// GPTQ: column-by-column quantization with the rounding error of each column spread over the
    /// columns not yet quantized, using the inputs' Gram matrix ([`crate::gptq`]).
    Gptq,
    /// AWQ-style per-input-channel scaling searched on calibration activations and folded into
    /// the preceding norms and rows ([`crate::awq`]), then [`Method::Weighted`].
    Awq,
}

impl Method {
    /// Parses `rtn`, `weighted`, `awq` or `gptq`.
    pub fn parse(s: &str) -> Result<Method, CompressError> {
        match s.to_ascii_lowercase().as_str() {
            "rtn" => Ok(Method::Rtn),
            "weighted" => Ok(Method::Weighted),
            "gptq" => Ok(Method::Gptq),
            "awq" => Ok(Method::Awq),
            _ => Err(CompressError::UnknownMethod(s.to_string())),
        }
    }

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Weighted => "weighted",
            Method::Gptq => "gptq",
            Method::Awq => "awq",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-input-channel importance of each weight matrix: the mean of `x_j²` over calibration
/// tokens for input channel `j` (llama.cpp's imatrix, normalized by its counts).
#[derive(Clone, Debug, Default)]
pub struct Importance {
    /// Tensor name → one value per input channel (the row length).
    pub entries: HashMap<String, Vec<f32>>,
}

/// Second-order input statistics for GPTQ: per tensor, the Gram matrix `Σ x xᵀ` of its inputs
/// (row-major, `n × n` for row length `n`) and the number of tokens summed.
pub trait GramSource: Sync {
    /// The Gram matrix and token count for the inputs of `tensor`, if collected.
    fn gram(&self, tensor: &str) -> Option<(&[f64], u64)>;
}

/// Options of [`quantize_model`].
#[derive(Clone, Copy, Default)]
pub struct QuantizeOptions<'o> {
    /// The target.
    pub scheme: Option<Scheme>,
    /// `--keep` overrides, first match wins.
    pub keeps: &'o [KeepRule],
    /// The rounding method.
    pub method: Method,
    /// Importance for [`Method::Weighted`] (and the mix rules that depend on having one).
    pub importance: Option<&'o Importance>,
    /// Input Gram matrices for [`Method::Gptq`].
    pub grams: Option<&'o dyn GramSource>,
    /// Activation statistics and the `α` grid for [`Method::Awq`].
    pub awq: Option<AwqParams<'o>>,
    /// GPTQ's damping as a fraction of the mean diagonal of `H` (`None`: [`crate::gptq::DAMP`]).
    pub gptq_damp: Option<f64>,
}

/// What happened to one tensor.
#[derive(Clone, Debug)]
pub struct TensorReport {
    /// Name.
    pub name: String,
    /// GGUF dims.
    pub dims: Vec<u64>,
    /// Source type.
    pub from: DType,
    /// Written type.
    pub to: DType,
    /// Why it got that type.
    pub reason: Reason,
    /// Source bytes.
    pub bytes_in: u64,
    /// Written bytes.
    pub bytes_out: u64,
    /// Whether an importance entry was used for it.
    pub used_importance: bool,
}

impl TensorReport {
    /// Elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A quantized model, ready to write.
pub struct QuantizedModel<'a> {
    /// The output file.
    pub writer: GgufWriter<'a>,
    /// One report per tensor, in file order.
    pub report: Vec<TensorReport>,
    /// With [`Method::Awq`], what the search chose for each group of linears.
    pub awq: Vec<AwqChoice>,
}

impl QuantizedModel<'_> {
    /// Total bytes of tensor data before and after.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.report.iter().fold((0, 0, 0), |a, r| (a.0 + r.bytes_in, a.1 + r.bytes_out, a.2 + r.n_elements()))
    }
}

/// Quantizes `src` as `opts` say. `progress(done, total, report)` is called after each tensor
/// (from the calling thread).
pub fn quantize_model<'a>(
    src: &'a ModelSource<'a>,
    opts: &QuantizeOptions,
    progress: &mut dyn FnMut(usize, usize, &TensorReport),
) -> Result<QuantizedModel<'a>, CompressError> {
    src.validate()?;
    let scheme = opts.scheme.unwrap_or(Scheme::Q8_0);
    if opts.method == Method::Gptq && opts.grams.is_none() {
        return Err(CompressError::NeedsCalibration {
            method: "gptq",
            what: "input Gram matrices: pass --calib TEXT (calibration text, e.g. data/wikitext-2/wiki.valid.tokens)",
        });
    }
    if opts.method != Method::Awq {
        return quantize_planned(src, opts, progress);
    }
    let params = opts.awq.ok_or(CompressError::NeedsCalibration {
        method: "awq",
        what: "calibration activations: pass --calib TEXT (calibration text, e.g. data/wikitext-2/wiki.valid.tokens)",
    })?;
    // The types the search rounds to are the ones the plan will write.
    let shapes: Vec<_> = src.tensors.iter().map(|t| t.shape()).collect();
    let plans = plan(scheme, &shapes, src.facts(), opts.keeps, opts.importance.is_some())?;
    let dtypes: HashMap<String, DType> =
        src.tensors.iter().zip(&plans).map(|(t, p)| (t.name.clone(), p.dtype)).collect();
    let scaled = scale_model(src, &dtypes, params, opts.importance)?;
    let inner = QuantizeOptions {
        method: Method::Weighted,
        importance: Some(&scaled.importance),
        awq: None,
        // The plan must not change with the importance AWQ always brings: keep the caller's view.
        ..*opts
    };
    let has_imatrix = opts.importance.is_some();
    let mut q = quantize_with(&scaled.source, &inner, has_imatrix, progress)?;
    for (r, t) in q.report.iter_mut().zip(&src.tensors) {
        r.from = t.dtype;
        r.bytes_in = t.data.len() as u64;
    }
    q.awq = scaled.choices;
    Ok(q)
}

/// [`quantize_model`] for every method but AWQ.
fn quantize_planned<'a>(
    src: &ModelSource<'a>,
    opts: &QuantizeOptions,
    progress: &mut dyn FnMut(usize, usize, &TensorReport),
) -> Result<QuantizedModel<'a>, CompressError> {
    quantize_with(src, opts, opts.importance.is_some(), progress)
}

/// Plans (with `has_imatrix` for the rules that depend on one) and quantizes every tensor.
fn quantize_with<'a>(
    src: &ModelSource<'a>,
    opts: &QuantizeOptions,
    has_imatrix: bool,
    progress: &mut dyn FnMut(usize, usize, &TensorReport),
) -> Result<QuantizedModel<'a>, CompressError> {
    let scheme = opts.scheme.unwrap_or(Scheme::Q8_0);
    let shapes: Vec<_> = src.tensors.iter().map(|t| t.shape()).collect();
    let plans = plan(scheme, &shapes, src.facts(), opts.keeps, has_imatrix)?;

    let mut w = GgufWriter::new();
    w.metadata = src.metadata.clone();
    w.set("general.quantization_version", Value::U32(2));
    w.set("general.file_type", Value::U32(scheme.file_type()));
    let mut report = Vec::with_capacity(src.tensors.len());
    let total = src.tensors.len();
    for (i, (t, p)) in src.tensors.iter().zip(plans).enumerate() {
        let imp = match (opts.method, opts.importance) {
            (Method::Weighted | Method::Gptq | Method::Awq, Some(m)) => m.entries.get(&t.name),
            _ => None,
        };
        if let Some(v) = imp {
            if v.len() != t.row_len() && t.name != "token_embd.weight" {
                return Err(CompressError::ImatrixMismatch {
                    tensor: t.name.clone(),
                    got: v.len(),
                    want: t.row_len(),
                });
            }
        }
        let imp = imp.filter(|v| v.len() == t.row_len()).map(|v| v.as_slice());
        let data: Cow<'a, [u8]> = if p.dtype == t.dtype {
            t.data.clone()
        } else {
            let gram = match opts.method {
                Method::Gptq if grid::supports(p.dtype) => opts.grams.and_then(|g| g.gram(&t.name)),
                _ => None,
            };
            let damp = opts.gptq_damp.unwrap_or(crate::gptq::DAMP);
            Cow::Owned(quantize_tensor(t, p.dtype, opts.method, imp, gram.map(|(g, c)| (g, c, damp)))?)
        };
        let r = TensorReport {
            name: t.name.clone(),
            dims: t.dims.clone(),
            from: t.dtype,
            to: p.dtype,
            reason: p.reason,
            bytes_in: t.data.len() as u64,
            bytes_out: data.len() as u64,
            used_importance: imp.is_some() && p.dtype != t.dtype,
        };
        w.add_tensor(&t.name, &t.dims, p.dtype, data)?;
        progress(i + 1, total, &r);
        report.push(r);
    }
    Ok(QuantizedModel { writer: w, report, awq: Vec::new() })
}

/// Quantizes one tensor to `dtype`.
fn quantize_tensor(
    t: &SourceTensor,
    dtype: DType,
    method: Method,
    imp: Option<&[f32]>,
    gram: Option<(&[f64], u64, f64)>,
) -> Result<Vec<u8>, CompressError> {
    let x = t.to_f32()?;
    let n = t.row_len();
    let rows = x.len() / n.max(1);
    let row_bytes = dtype.bytes_for(n as u64).ok_or_else(|| CompressError::BadTensor {
        tensor: t.name.clone(),
        why: format!("row length {n} is not a multiple of the {dtype} block size"),
    })? as usize;
    if let (Method::Gptq, Some((g, count, damp))) = (method, gram) {
        return crate::gptq::quantize_matrix(&t.name, dtype, &x, n, g, count, damp);
    }
    let weighted = method != Method::Rtn && grid::supports(dtype);
    let mut out = vec![0u8; rows * row_bytes];
    let err: Mutex<Option<CompressError>> = Mutex::new(None);
    {
        let dst = DisjointWriter::new(&mut out);
        for_each_range(rows, 8, |range| {
            let mut buf = vec![0u8; row_bytes];
            for r in range {
                let row = &x[r * n..(r + 1) * n];
                if weighted {
                    grid::quantize_row_weighted(dtype, row, imp, &mut buf);
                } else if let Err(e) = quantize_row(dtype, row, &mut buf) {
                    *err.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(CompressError::Quant { tensor: t.name.clone(), source: e });
                    return;
                }
                for (k, &b) in buf.iter().enumerate() {
                    // SAFETY: row r's bytes r*row_bytes.. are written by this range only.
                    unsafe { dst.write(r * row_bytes + k, b) };
                }
            }
        });
    }
    if let Some(e) = err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(out)
}
