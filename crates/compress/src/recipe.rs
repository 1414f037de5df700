//! A compression recipe run end to end: prune (unstructured, N:M or structured), then
//! quantize, with calibration statistics collected on the model as it is at each step.
//!
//! `edgellm prune` and `edgellm eval sweep` both call [`run_recipe`]; neither wires pruning,
//! calibration and quantization together itself.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use edgellm_formats::{GgufFile, Value};

use crate::calib::{calibrate, CalibOptions, Calibration};
use crate::prune::{
    prune_decoder, prune_encoder, prune_static, pruned_writer, PruneMethod, PruneOptions, PruneProgress,
    Sparsity,
};
use crate::sparse::{sparsify, StorageFormat};
use crate::structured::{
    apply, select, structure_stats, structure_stats_encoder, Selection, Shape, Structure,
};
use crate::{
    quantize_model, AwqParams, CompressError, Importance, KeepRule, Method, ModelSource, QuantizeOptions,
    Scheme,
};

/// Calibration input, already tokenized by the model's own tokenizer.
#[derive(Clone, Debug, Default)]
pub enum CalibTokens {
    /// None given: only calibration-free steps (magnitude pruning, RTN) can run.
    #[default]
    None,
    /// A decoder's chunks, each of the same length, BOS first where the model wants one.
    Decoder(Vec<Vec<u32>>),
    /// An encoder's sentences (with its special tokens).
    Encoder(Vec<Vec<u32>>),
}

impl CalibTokens {
    fn is_none(&self) -> bool {
        matches!(self, CalibTokens::None)
    }
}

/// Unstructured or N:M pruning.
#[derive(Clone, Debug)]
pub struct PruneStep {
    /// How weights are chosen.
    pub method: PruneMethod,
    /// The pattern every pruned row meets.
    pub sparsity: Sparsity,
    /// Globs over tensor names left dense.
    pub keep: Vec<String>,
    /// SparseGPT damping.
    pub damp: f64,
}

/// The steps of one compression run, applied in order: unstructured/N:M pruning or structured
/// pruning (not both), then quantization.
#[derive(Clone, Debug, Default)]
pub struct Recipe {
    /// Unstructured or N:M pruning.
    pub prune: Option<PruneStep>,
    /// Structured pruning: what and the fraction removed.
    pub structured: Option<(Structure, f64)>,
    /// Quantization after pruning: the type or mix and the rounding method.
    pub quantize: Option<(Scheme, Method)>,
    /// Per-tensor type overrides of the quantization (`PATTERN=TYPE`, first match wins).
    pub keeps: Vec<KeepRule>,
    /// How the pruned tensors are stored (dense zeros, or edgellm's sparse types).
    pub format: StorageFormat,
}

impl Recipe {
    /// Whether a step needs calibration text.
    pub fn needs_calibration(&self) -> bool {
        self.prune.as_ref().is_some_and(|p| p.method.needs_calibration())
            || self.structured.is_some()
            || self.quantize.is_some_and(|(_, m)| m == Method::Awq)
    }

    /// Checks the combination before any work is done.
    pub fn validate(&self, calib: &CalibTokens) -> Result<(), CompressError> {
        self.validate_steps()?;
        if self.needs_calibration() && calib.is_none() {
            return Err(CompressError::NeedsCalibration {
                method: "this recipe",
                what: "calibration text (e.g. data/wikitext-2/wiki.valid.tokens)",
            });
        }
        Ok(())
    }

    /// [`Recipe::validate`] without the calibration input: whether the steps go together
    /// (a sweep checks its points before it has tokenized the calibration text).
    pub fn validate_steps(&self) -> Result<(), CompressError> {
        if self.prune.is_some() && self.structured.is_some() {
            return Err(CompressError::BadPrune(
                "a recipe prunes either unstructured/N:M or structured, not both".into(),
            ));
        }
        if let Some((_, r)) = self.structured {
            if !(r > 0.0 && r < 1.0) {
                return Err(CompressError::BadPrune(format!(
                    "structured ratio {r} is outside (0, 1): give the fraction to remove, e.g. 0.25"
                )));
            }
        }
        if let Some((_, m)) = self.quantize {
            if !matches!(m, Method::Rtn | Method::Weighted | Method::Awq) {
                return Err(CompressError::BadPrune(format!(
                    "quantization method {m} is not available after pruning (use rtn, weighted or awq)"
                )));
            }
        }
        if self.format == StorageFormat::Sparse {
            let Some(p) = &self.prune else {
                return Err(CompressError::BadPrune(
                    "--format sparse stores unstructured or N:M pruning (give --sparsity or --pattern)"
                        .into(),
                ));
            };
            match self.quantize {
                None => return Err(CompressError::BadPrune(
                    "--format sparse needs --then-quantize TYPE (the sparse types hold 4- or 8-bit values: \
                         e.g. Q4_0 for 2:4 or 4:8, Q8_0 for unstructured)"
                        .into(),
                )),
                Some((scheme, Method::Rtn)) => {
                    crate::sparse::sparse_type(scheme.base_type(), p.sparsity, "the pruned tensors")?;
                }
                Some((_, m)) => {
                    return Err(CompressError::BadPrune(format!(
                        "--format sparse quantizes the kept values by round-to-nearest; --quant-method {m} \
                         is not available with it yet (use rtn, or --format dense)"
                    )))
                }
            }
            if let Sparsity::NM { n, m } = p.sparsity {
                if !matches!((n, m), (2, 4) | (4, 8)) {
                    return Err(CompressError::BadPrune(format!(
                        "--format sparse stores the 2:4 and 4:8 patterns, not {n}:{m} (use --format dense)"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = &self.prune {
            parts.push(format!("{} {}", p.method, p.sparsity));
        }
        if let Some((s, r)) = self.structured {
            parts.push(format!("structured {} {r}", s.name()));
        }
        if let Some((s, m)) = self.quantize {
            parts.push(format!("{s} ({m})"));
        }
        if self.format == StorageFormat::Sparse {
            parts.push("stored sparse".into());
        }
        if parts.is_empty() {
            parts.push("copy".into());
        }
        f.write_str(&parts.join(" + "))
    }
}

/// Progress of [`run_recipe`].
#[derive(Clone, Debug)]
pub enum RecipeProgress<'a> {
    /// A pruning step.
    Prune(PruneProgress<'a>),
    /// Structured pruning: collecting importance statistics.
    Ranking,
    /// Calibrating the (pruned) model for quantization: chunk `done` of `total`.
    Calibrating {
        /// Chunks done.
        done: usize,
        /// Chunks in all.
        total: usize,
    },
    /// Quantizing: tensor `done` of `total`.
    Quantizing {
        /// Tensors done.
        done: usize,
        /// Tensors in all.
        total: usize,
    },
    /// Writing the output file.
    Writing,
}

/// What a recipe did.
#[derive(Clone, Debug, Default)]
pub struct RecipeReport {
    /// Tensors pruned, their elements and their zeros (unstructured/N:M).
    pub pruned: Option<PrunedTotals>,
    /// The structure kept (structured pruning) and the shape it started from.
    pub structured: Option<(Shape, Selection)>,
    /// Structured pruning's block influence (`1 − cos` of a block's input and output).
    pub block_influence: Vec<f64>,
    /// Quantized weights: bytes in, bytes out, elements.
    pub quantized: Option<(u64, u64, u64)>,
    /// Tensors written in sparse types (`--format sparse`).
    pub sparse: Vec<crate::sparse::SparseTensorReport>,
    /// Tensors quantized with calibration statistics.
    pub calibrated_tensors: usize,
    /// Seconds spent pruning (with its calibration).
    pub prune_seconds: f64,
    /// Seconds spent in all.
    pub seconds: f64,
}

/// Totals of an unstructured/N:M pruning step.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrunedTotals {
    /// Tensors pruned.
    pub tensors: usize,
    /// Their elements.
    pub elements: u64,
    /// Their zeros after pruning.
    pub zeros: u64,
}

/// Runs `recipe` on `src` (with `gguf`, its file, when there is one, so a decoder can be loaded
/// without a copy) and writes the result to `out`. Calibration for quantization after pruning
/// is collected on the pruned model, from the same tokens.
pub fn run_recipe(
    src: &ModelSource,
    gguf: Option<&GgufFile>,
    recipe: &Recipe,
    calib: &CalibTokens,
    out: &Path,
    progress: &mut dyn FnMut(RecipeProgress),
) -> Result<RecipeReport, CompressError> {
    recipe.validate(calib)?;
    let t0 = Instant::now();
    let arch = src.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let mut report = RecipeReport::default();
    let owned_file;
    let decoder_file: Option<&GgufFile> = match (gguf, arch.as_str()) {
        (Some(f), _) => Some(f),
        (None, "bert") => None,
        (None, _)
            if recipe.prune.as_ref().is_some_and(|p| p.method.needs_calibration())
                || recipe.structured.is_some() =>
        {
            owned_file = src.to_file()?;
            Some(&owned_file)
        }
        (None, _) => None,
    };

    // Step 1: pruning, into a writer that borrows `src` (or a structured copy of it).
    let structured_src;
    let mut pruned_names: Vec<String> = Vec::new();
    let writer = if let Some(p) = &recipe.prune {
        let opts = PruneOptions { method: p.method, sparsity: p.sparsity, keep: &p.keep, damp: p.damp };
        let mut cb = |e: PruneProgress| progress(RecipeProgress::Prune(e));
        let pruned = match (p.method.needs_calibration(), calib) {
            (false, _) => prune_static(src, &opts, &mut cb)?,
            (true, CalibTokens::Encoder(seqs)) if arch == "bert" => prune_encoder(src, seqs, &opts, &mut cb)?,
            (true, CalibTokens::Decoder(chunks)) if arch != "bert" => {
                let f =
                    decoder_file.ok_or_else(|| CompressError::BadPrune("no decoder to calibrate".into()))?;
                let mut model = edgellm_models::load_gguf(f).map_err(model_error)?;
                prune_decoder(model.as_mut(), src, chunks, &opts, &mut cb)?
            }
            _ => return Err(calibration_kind_error(&arch)),
        };
        let (elements, zeros) = pruned.totals();
        report.pruned = Some(PrunedTotals { tensors: pruned.report.len(), elements, zeros });
        pruned_names = pruned.report.iter().map(|r| r.name.clone()).collect();
        pruned_writer(src, &pruned, Some((&opts, elements, zeros)))?
    } else if let Some((what, ratio)) = recipe.structured {
        progress(RecipeProgress::Ranking);
        let shape = Shape::of(src)?;
        let stats = match calib {
            CalibTokens::Encoder(seqs) if arch == "bert" => structure_stats_encoder(src, seqs)?,
            CalibTokens::Decoder(chunks) if arch != "bert" => {
                let f =
                    decoder_file.ok_or_else(|| CompressError::BadPrune("no decoder to calibrate".into()))?;
                let model = edgellm_models::load_gguf(f).map_err(model_error)?;
                structure_stats(model.as_ref(), chunks)?
            }
            _ => return Err(calibration_kind_error(&arch)),
        };
        let sel = select(src, &stats, what, ratio)?;
        structured_src = apply(src, &sel, false)?;
        report.structured = Some((shape, sel));
        report.block_influence = stats.influence.clone();
        let mut w = structured_src.to_writer()?;
        w.set("edgellm.pruning.structured", Value::String(format!("{} {ratio}", what.name())));
        w
    } else {
        src.to_writer()?
    };
    report.prune_seconds = t0.elapsed().as_secs_f64();

    // Step 2: quantization of the (pruned) model.
    if let Some((scheme, method)) = recipe.quantize {
        let psrc = ModelSource::from_writer(writer)?;
        let mut calibration: Option<Calibration> = None;
        if method != Method::Rtn && arch != "bert" {
            if let CalibTokens::Decoder(chunks) = calib {
                let file = psrc.to_file()?;
                let model = edgellm_models::load_gguf(&file).map_err(model_error)?;
                let ctx = chunks.first().map_or(0, |c| c.len());
                let flat: Vec<u32> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
                let opts = CalibOptions {
                    ctx,
                    chunks: chunks.len(),
                    grams: false,
                    bos: None,
                    awq_samples: if method == Method::Awq { crate::awq::SAMPLE_TOKENS } else { 0 },
                };
                calibration = Some(calibrate(model.as_ref(), &flat, &opts, &mut |done, total| {
                    progress(RecipeProgress::Calibrating { done, total })
                })?);
            }
        }
        if method == Method::Awq && calibration.is_none() {
            return Err(CompressError::NeedsCalibration {
                method: "awq",
                what: "calibration text and a llama or gemma3 decoder",
            });
        }
        let importance = calibration.as_ref().map(|c| Importance::from_imatrix(&c.imatrix));
        let alphas = crate::awq::default_alphas();
        let opts = QuantizeOptions {
            scheme: Some(scheme),
            keeps: &recipe.keeps,
            method,
            importance: importance.as_ref(),
            grams: None,
            awq: calibration.as_ref().map(|c| AwqParams { stats: &c.awq, alphas: &alphas }),
            gptq_damp: None,
        };
        let total = psrc.tensors.len();
        let q = quantize_model(&psrc, &opts, &mut |done, _, _| {
            progress(RecipeProgress::Quantizing { done, total })
        })?;
        report.quantized = Some(q.totals());
        report.calibrated_tensors = q.report.iter().filter(|r| r.used_importance).count();
        let mut writer = q.writer;
        if recipe.format == StorageFormat::Sparse {
            let sp = recipe.prune.as_ref().map(|p| p.sparsity).expect("validated: sparse needs pruning");
            let mut weights = Vec::with_capacity(pruned_names.len());
            for name in &pruned_names {
                let t = psrc.tensors.iter().find(|t| &t.name == name).ok_or_else(|| {
                    CompressError::BadTensor {
                        tensor: name.clone(),
                        why: "pruned but missing from the pruned model".into(),
                    }
                })?;
                weights.push((name.clone(), t.to_f32()?));
            }
            report.sparse = sparsify(&mut writer, &weights, sp)?;
            if let Some((bin, bout, el)) = report.quantized {
                let (dense, sparse) =
                    report.sparse.iter().fold((0, 0), |a, r| (a.0 + r.bytes_dense, a.1 + r.bytes_sparse));
                report.quantized = Some((bin, bout - dense + sparse, el));
            }
        }
        progress(RecipeProgress::Writing);
        writer.write_file(out)?;
    } else {
        progress(RecipeProgress::Writing);
        writer.write_file(out)?;
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

fn model_error(e: edgellm_models::ModelError) -> CompressError {
    CompressError::BadTensor { tensor: "(loading the model for calibration)".into(), why: e.to_string() }
}

fn calibration_kind_error(arch: &str) -> CompressError {
    CompressError::BadPrune(format!(
        "calibration tokens of the wrong kind for a {arch:?} model (decoders take chunks, bert takes sentences)"
    ))
}
