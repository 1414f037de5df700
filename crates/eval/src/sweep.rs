//! `edgellm eval sweep`: run a grid of compression recipes (pruning method × sparsity or
//! pattern × quantization type, structured ratios, dense quantization types) on one model and
//! put every result on the same quality–size–speed table and charts.
//!
//! Each point is compressed with [`edgellm_compress::recipe::run_recipe`] (calibrated on the
//! calibration text, never the evaluation text), written to `DIR/models/`, measured, and
//! deleted unless asked to keep it:
//! - decoders: KL divergence and perplexity against the input model over the evaluation text
//!   (the base's logits are computed once and kept in memory when they fit), and prompt and
//!   generation tokens/s ([`crate::speed`]);
//! - encoders: STS Spearman and sentences/s on an STS file.
//!
//! `DIR/sweep.json` is rewritten after every point; a rerun with the same settings skips the
//! points it already holds, so an interrupted sweep resumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use edgellm_compress::prune::{PruneMethod, Sparsity, DAMP};
use edgellm_compress::recipe::{run_recipe, CalibTokens, PruneStep, Recipe, RecipeProgress};
use edgellm_compress::source::OpenedModel;
use edgellm_compress::sparse::StorageFormat;
use edgellm_compress::structured::Structure;
use edgellm_compress::{CompressError, Method, Scheme};
use edgellm_models::act_sparsity::{set_act_sparsity, ActSparsity};
use edgellm_runtime::calib_text::{decoder_chunks, encoder_sentences, CalibTextError};
use edgellm_runtime::embed::{EmbedError, Embedder, DEFAULT_BATCH};
use edgellm_runtime::{LoadedModel, RuntimeError};
use serde::{Deserialize, Serialize};

use crate::ppl::{self, BaseLogits, KldBase, PplError, PplOptions};
use crate::sts::{self, StsError, StsPair};

/// An error of a sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The grid file or preset is malformed.
    #[error("grid: {0}")]
    Grid(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Compressing a point failed.
    #[error("{point}: {source}")]
    Compress {
        /// The point.
        point: String,
        /// Why.
        source: CompressError,
    },
    /// A model could not be loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The evaluation text or a KL/perplexity evaluation failed.
    #[error(transparent)]
    Ppl(#[from] PplError),
    /// The STS file or evaluation failed.
    #[error(transparent)]
    Sts(#[from] StsError),
    /// An encoder could not be loaded.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The calibration text could not be prepared.
    #[error(transparent)]
    Calib(#[from] CalibTextError),
    /// A speed measurement failed.
    #[error(transparent)]
    Model(#[from] edgellm_models::ModelError),
    /// The model could not be opened for compression.
    #[error("opening {path}: {source}")]
    Open {
        /// The model.
        path: PathBuf,
        /// Why.
        source: CompressError,
    },
    /// The model is neither a decoder (llama, gemma3) nor a bert encoder.
    #[error("architecture {0:?} cannot be swept (supported: llama, gemma3, bert)")]
    Architecture(String),
    /// A chart could not be drawn.
    #[error("chart {path}: {why}")]
    Chart {
        /// The chart file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
    move |source| SweepError::Io { path: path.into(), source }
}

/// The evaluation text and its chunking (decoders) or STS file (encoders).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Evaluation text (decoders; default `data/wikitext-2/wiki.test.raw`) or STS pairs
    /// (encoders; default `data/stsb/sts-test.tsv`).
    pub text: Option<PathBuf>,
    /// Tokens per chunk (decoders; default 512).
    pub ctx: Option<usize>,
    /// Chunks (decoders; default 40) or pairs at most (encoders; default all).
    pub chunks: Option<usize>,
}

/// The calibration text and how much of it is used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibSection {
    /// Calibration text (default `data/wikitext-2/wiki.valid.tokens`; never the evaluation text).
    pub text: Option<PathBuf>,
    /// Tokens per chunk (decoders; default 512).
    pub ctx: Option<usize>,
    /// Chunks (decoders; default 32) or sentences/8 (encoders).
    pub chunks: Option<usize>,
}

/// How speed is measured (decoders).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedSection {
    /// Prompt tokens of the prompt test (default 128; 0 skips it).
    pub n_prompt: Option<usize>,
    /// Generated tokens of the generation test (default 64; 0 skips it).
    pub n_gen: Option<usize>,
    /// Repetitions (default 3).
    pub reps: Option<usize>,
}

/// The cross product and lists that make the points.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSection {
    /// Pruning methods: magnitude, wanda, sparsegpt.
    #[serde(default)]
    pub prune: Vec<String>,
    /// Sparsities (`50%`, `0.5`) and N:M patterns (`2:4`), crossed with `prune`.
    #[serde(default)]
    pub sparsity: Vec<String>,
    /// Quantization after pruning (`none` for none), crossed with the pruned and structured points.
    #[serde(default)]
    pub quant: Vec<String>,
    /// Rounding method of every quantization: rtn (default), weighted or awq.
    pub quant_method: Option<String>,
    /// Dense quantization types of the input model: the reference points of the charts.
    #[serde(default)]
    pub dense: Vec<String>,
    /// Structured pruning, `KIND RATIO` (`ffn 0.25`, `heads 0.5`, `layers 0.1`), crossed with `quant`.
    #[serde(default)]
    pub structured: Vec<String>,
    /// How the pruned points are stored: `dense` (zeros in the usual types; the default) and/or
    /// `sparse` (edgellm's sparse types, docs/sparse-gguf.md), crossed with the pruning product.
    /// `sparse` applies to the points a sparse type can hold (2:4 and 4:8 with a 4-, 5- or
    /// 8-bit legacy type, unstructured with Q8_0; round-to-nearest); the others stay dense only.
    #[serde(default)]
    pub format: Vec<String>,
    /// Activation-sparsity levels (fractions in (0, 1); decoders), crossed with `quant`: the
    /// input model (`none`) or its quantization with TEAL thresholds calibrated on the
    /// calibration text, measured with every token thresholded (KLD, perplexity) and decoding
    /// through the column-skipping kernels (speed), as `--act-sparsity` does.
    #[serde(default)]
    pub act_sparsity: Vec<f64>,
}

/// One point given explicitly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointSection {
    /// Pruning method.
    pub prune: Option<String>,
    /// Sparsity or pattern of `prune`.
    pub sparsity: Option<String>,
    /// Structured pruning, `KIND RATIO`.
    pub structured: Option<String>,
    /// Quantization type after pruning.
    pub quant: Option<String>,
    /// `dense` (default) or `sparse` storage of the pruning.
    pub format: Option<String>,
    /// Activation-sparsity level (with `quant` or alone; not with pruning).
    pub act_sparsity: Option<f64>,
}

/// A grid file (TOML).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridFile {
    /// The evaluation.
    #[serde(default)]
    pub eval: EvalSection,
    /// The calibration.
    #[serde(default)]
    pub calib: CalibSection,
    /// The speed tests.
    #[serde(default)]
    pub speed: SpeedSection,
    /// The grid.
    #[serde(default)]
    pub grid: GridSection,
    /// Extra points.
    #[serde(default)]
    pub point: Vec<PointSection>,
}

/// The presets `--preset` names, with what each runs.
pub const PRESETS: [(&str, &str); 4] = [
    (
        "pruning",
        "decoders: magnitude/wanda/sparsegpt × 50 %/4:8/2:4 × (none, Q4_K_M), N:M + Q4_K_M also stored sparse, \
         activation sparsity 25/40/50 % on Q4_0, dense Q8_0…Q2_K and Q4_0; KLD over 40×512",
    ),
    ("structured", "decoders: FFN channels 10/25/50 % × (none, Q4_K_M), dense Q8_0…Q3_K_M; KLD over 40×512"),
    (
        "encoder",
        "bert encoders: magnitude/wanda/sparsegpt × 50 %/2:4 × (none, Q8_0), + Q8_0 also stored sparse, \
         wanda 70 % + Q8_0 dense and sparse, FFN 50 %, dense F16…Q4_0",
    ),
    (
        "quick",
        "a minute's smoke run: wanda 50 % and 2:4 + Q4_K_M, 2:4 + Q4_0 sparse, activation sparsity 40 % on \
         Q4_0, dense Q8_0, Q4_K_M and Q4_0, small chunks",
    ),
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A preset's pruning point stored in `format`.
fn prune_point(method: &str, sparsity: &str, quant: &str, format: &str) -> PointSection {
    PointSection {
        prune: Some(method.into()),
        sparsity: Some(sparsity.into()),
        quant: Some(quant.into()),
        format: Some(format.into()),
        ..PointSection::default()
    }
}

/// A preset's activation-sparsity point on `quant`.
fn act_point(level: f64, quant: &str) -> PointSection {
    PointSection { quant: Some(quant.into()), act_sparsity: Some(level), ..PointSection::default() }
}

impl GridFile {
    /// Parses a grid file's TOML.
    pub fn parse(text: &str) -> Result<GridFile, SweepError> {
        toml::from_str(text).map_err(|e| SweepError::Grid(e.to_string()))
    }

    /// Reads and parses a grid file.
    pub fn read(path: &Path) -> Result<GridFile, SweepError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        GridFile::parse(&text).map_err(|e| SweepError::Grid(format!("{}: {e}", path.display())))
    }

    /// A preset by name ([`PRESETS`]).
    pub fn preset(name: &str) -> Result<GridFile, SweepError> {
        let mut g = GridFile::default();
        match name {
            "pruning" => {
                g.grid.prune = strings(&["magnitude", "wanda", "sparsegpt"]);
                g.grid.sparsity = strings(&["50%", "4:8", "2:4"]);
                g.grid.quant = strings(&["none", "Q4_K_M"]);
                g.grid.format = strings(&["dense", "sparse"]);
                g.grid.dense = strings(&["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]);
                g.point = [0.25, 0.4, 0.5].iter().map(|&a| act_point(a, "Q4_0")).collect();
            }
            "structured" => {
                g.grid.structured = strings(&["ffn 0.1", "ffn 0.25", "ffn 0.5"]);
                g.grid.quant = strings(&["none", "Q4_K_M"]);
                g.grid.dense = strings(&["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M"]);
            }
            "encoder" => {
                g.grid.prune = strings(&["magnitude", "wanda", "sparsegpt"]);
                g.grid.sparsity = strings(&["50%", "2:4"]);
                g.grid.quant = strings(&["none", "Q8_0"]);
                g.grid.format = strings(&["dense", "sparse"]);
                g.grid.structured = strings(&["ffn 0.5"]);
                g.grid.dense = strings(&["F16", "Q8_0", "Q5_0", "Q4_0"]);
                g.point =
                    ["dense", "sparse"].iter().map(|&f| prune_point("wanda", "70%", "Q8_0", f)).collect();
            }
            "quick" => {
                g.grid.prune = strings(&["wanda"]);
                g.grid.sparsity = strings(&["50%", "2:4"]);
                g.grid.quant = strings(&["none", "Q4_K_M"]);
                g.grid.dense = strings(&["Q8_0", "Q4_K_M", "Q4_0"]);
                g.point = vec![prune_point("wanda", "2:4", "Q4_0", "sparse"), act_point(0.4, "Q4_0")];
                g.eval = EvalSection { text: None, ctx: Some(128), chunks: Some(4) };
                g.calib = CalibSection { text: None, ctx: Some(128), chunks: Some(4) };
                g.speed = SpeedSection { n_prompt: Some(32), n_gen: Some(16), reps: Some(1) };
            }
            _ => {
                let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                return Err(SweepError::Grid(format!(
                    "unknown preset {name:?} (presets: {})",
                    names.join(", ")
                )));
            }
        }
        Ok(g)
    }

    /// The points of the grid: the dense types, the pruning cross product, the structured
    /// ratios, then the explicit points; duplicates dropped.
    pub fn points(&self) -> Result<Vec<Point>, SweepError> {
        let g = &self.grid;
        let bad = |e: CompressError| SweepError::Grid(e.to_string());
        let qmethod = Method::parse(g.quant_method.as_deref().unwrap_or("rtn")).map_err(bad)?;
        if !matches!(qmethod, Method::Rtn | Method::Weighted | Method::Awq) {
            return Err(SweepError::Grid(format!("quant_method {qmethod} is not one of rtn, weighted, awq")));
        }
        let quant = |s: &str| -> Result<Option<Scheme>, SweepError> {
            if s.eq_ignore_ascii_case("none") {
                Ok(None)
            } else {
                Scheme::parse(s).map(Some).map_err(bad)
            }
        };
        let quants: Vec<Option<Scheme>> = if g.quant.is_empty() {
            vec![None]
        } else {
            g.quant.iter().map(|q| quant(q)).collect::<Result<_, _>>()?
        };
        if !g.prune.is_empty() && g.sparsity.is_empty() {
            return Err(SweepError::Grid("grid.prune needs grid.sparsity (e.g. [\"50%\", \"2:4\"])".into()));
        }
        let mut formats = Vec::new();
        for f in &g.format {
            let f = StorageFormat::parse(f).map_err(bad)?;
            if !formats.contains(&f) {
                formats.push(f);
            }
        }
        if formats.is_empty() {
            formats.push(StorageFormat::Dense);
        }
        let level = |v: f64| -> Result<f32, SweepError> {
            if v > 0.0 && v < 1.0 {
                Ok(v as f32)
            } else {
                Err(SweepError::Grid(format!("act_sparsity {v}: give a fraction in (0, 1), e.g. 0.4")))
            }
        };
        let mut specs = Vec::new();
        for d in &g.dense {
            let s = quant(d)?.ok_or_else(|| SweepError::Grid("grid.dense cannot hold \"none\"".into()))?;
            specs.push(Spec { quant: Some(s), ..Spec::default() });
        }
        for m in &g.prune {
            let method = PruneMethod::parse(m).map_err(bad)?;
            for sp in &g.sparsity {
                let sparsity = parse_sparsity(sp)?;
                for &q in &quants {
                    for &format in &formats {
                        let s = Spec { prune: Some((method, sparsity)), quant: q, format, ..Spec::default() };
                        // Sparse storage only where a sparse type holds the point.
                        if format == StorageFormat::Dense || s.recipe(qmethod).validate_steps().is_ok() {
                            specs.push(s);
                        }
                    }
                }
            }
        }
        for st in &g.structured {
            let s = parse_structured(st)?;
            for &q in &quants {
                specs.push(Spec { structured: Some(s), quant: q, ..Spec::default() });
            }
        }
        for &a in &g.act_sparsity {
            let a = level(a)?;
            for &q in &quants {
                specs.push(Spec { quant: q, act: Some(a), ..Spec::default() });
            }
        }
        for p in &self.point {
            let prune = match (&p.prune, &p.sparsity) {
                (Some(m), Some(s)) => Some((PruneMethod::parse(m).map_err(bad)?, parse_sparsity(s)?)),
                (None, None) => None,
                _ => return Err(SweepError::Grid("a point's prune and sparsity come together".into())),
            };
            let structured = p.structured.as_deref().map(parse_structured).transpose()?;
            let q = p.quant.as_deref().map(quant).transpose()?.flatten();
            let format =
                p.format.as_deref().map(StorageFormat::parse).transpose().map_err(bad)?.unwrap_or_default();
            let act = p.act_sparsity.map(level).transpose()?;
            if prune.is_some() && structured.is_some() {
                return Err(SweepError::Grid("a point prunes either unstructured/N:M or structured".into()));
            }
            if act.is_some() && (prune.is_some() || structured.is_some()) {
                return Err(SweepError::Grid(
                    "a point's act_sparsity goes with quant or alone, not with pruning".into(),
                ));
            }
            if prune.is_none() && structured.is_none() && q.is_none() && act.is_none() {
                return Err(SweepError::Grid(
                    "a point needs prune, structured, quant or act_sparsity".into(),
                ));
            }
            let s = Spec { prune, structured, quant: q, format, act };
            s.recipe(qmethod).validate_steps().map_err(bad)?;
            specs.push(s);
        }
        let mut out: Vec<Point> = Vec::new();
        for s in specs {
            let p = Point::new(s, qmethod);
            if !out.iter().any(|o| o.name == p.name) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err(SweepError::Grid("the grid holds no points".into()));
        }
        Ok(out)
    }
}

fn parse_sparsity(s: &str) -> Result<Sparsity, SweepError> {
    let bad = |e: CompressError| SweepError::Grid(e.to_string());
    let t = s.trim();
    if t.contains(':') {
        return Sparsity::parse_pattern(t).map_err(bad);
    }
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| {
        SweepError::Grid(format!("sparsity {s:?}: give a fraction (0.5), a percentage (50%) or N:M"))
    })?;
    Sparsity::unstructured(v).map_err(bad)
}

fn parse_structured(s: &str) -> Result<(Structure, f64), SweepError> {
    let mut it = s.split_whitespace();
    let (Some(kind), Some(r), None) = (it.next(), it.next(), it.next()) else {
        return Err(SweepError::Grid(format!("structured {s:?}: write KIND RATIO, e.g. \"ffn 0.25\"")));
    };
    let what = Structure::parse(kind).map_err(|e| SweepError::Grid(e.to_string()))?;
    let ratio: f64 =
        r.parse().map_err(|_| SweepError::Grid(format!("structured {s:?}: ratio {r:?} is not a number")))?;
    if !(ratio > 0.0 && ratio < 1.0) {
        return Err(SweepError::Grid(format!("structured {s:?}: the ratio must be in (0, 1)")));
    }
    Ok((what, ratio))
}

/// `50%` for unstructured sparsity, `2:4` for a pattern.
fn short_sparsity(sp: Sparsity) -> String {
    match sp {
        Sparsity::Unstructured(s) => format!("{}%", (s * 1000.0).round() / 10.0),
        other => other.to_string(),
    }
}

/// `40%` for an activation-sparsity level.
fn short_sparsity_level(a: f32) -> String {
    format!("{}%", (a as f64 * 1000.0).round() / 10.0)
}

/// What one point does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Spec {
    prune: Option<(PruneMethod, Sparsity)>,
    structured: Option<(Structure, f64)>,
    quant: Option<Scheme>,
    format: StorageFormat,
    act: Option<f32>,
}

impl Spec {
    /// The compression recipe (activation sparsity is calibrated after it).
    fn recipe(&self, qmethod: Method) -> Recipe {
        Recipe {
            prune: self.prune.map(|(method, sparsity)| PruneStep {
                method,
                sparsity,
                keep: Vec::new(),
                damp: DAMP,
            }),
            structured: self.structured,
            quantize: self.quant.map(|q| (q, qmethod)),
            keeps: Vec::new(),
            format: self.format,
        }
    }
}

/// One point of a sweep.
#[derive(Clone, Debug)]
pub struct Point {
    /// Unique name (`wanda 2:4 + Q4_K_M`).
    pub name: String,
    /// The chart series it belongs to (`dense`, `wanda`, `structured ffn`, …).
    pub series: String,
    /// Its label on the chart (`2:4 Q4_K_M`).
    pub label: String,
    /// The recipe.
    pub recipe: Recipe,
    /// Activation sparsity at this level after the recipe (TEAL thresholds calibrated on the
    /// calibration text).
    pub act_sparsity: Option<f32>,
}

impl Point {
    fn new(s: Spec, qmethod: Method) -> Point {
        let q = s.quant.map(|q| q.name().to_string());
        let (series, what) = match (s.prune, s.structured, s.act) {
            (Some((m, sp)), _, _) if s.format == StorageFormat::Sparse => {
                (format!("{} sparse", m.name()), Some(short_sparsity(sp)))
            }
            (Some((m, sp)), _, _) => (m.name().to_string(), Some(short_sparsity(sp))),
            (None, Some((k, r)), _) => {
                (format!("structured {}", k.name()), Some(format!("{:.0}%", r * 100.0)))
            }
            (None, None, Some(a)) => ("activation sparsity".to_string(), Some(short_sparsity_level(a))),
            (None, None, None) => ("dense".to_string(), None),
        };
        let label = [what.clone(), q.clone()].into_iter().flatten().collect::<Vec<_>>().join(" ");
        let name = match (&what, &q, series.as_str()) {
            (None, Some(q), _) => q.clone(),
            (Some(w), None, s) => format!("{s} {w}"),
            (Some(w), Some(q), s) => format!("{s} {w} + {q}"),
            (None, None, _) => "copy".to_string(),
        };
        Point { name, series, label, recipe: s.recipe(qmethod), act_sparsity: s.act }
    }

    /// A file-name-safe form of the name.
    pub fn slug(&self) -> String {
        let mut out = String::new();
        for c in self.name.chars() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' => out.push(c),
                '%' => out.push_str("pct"),
                ':' => out.push('-'),
                _ if !out.ends_with('-') => out.push('-'),
                _ => {}
            }
        }
        out.trim_matches('-').to_string()
    }
}

/// The model kind a sweep measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// llama / gemma3: KL divergence, perplexity, tokens/s.
    Decoder,
    /// bert: STS Spearman, sentences/s.
    Encoder,
}

/// Settings resolved from the grid and the model kind (what `sweep.json` records, and what a
/// resumed sweep must match).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Evaluation text or STS file.
    pub eval_text: PathBuf,
    /// Tokens per evaluation chunk (decoders).
    pub eval_ctx: usize,
    /// Evaluation chunks (decoders) or pairs (encoders; 0 = all).
    pub eval_chunks: usize,
    /// Calibration text.
    pub calib_text: PathBuf,
    /// Tokens per calibration chunk.
    pub calib_ctx: usize,
    /// Calibration chunks (decoders) or sentences/8 (encoders).
    pub calib_chunks: usize,
    /// Prompt tokens of the speed test.
    pub n_prompt: usize,
    /// Generated tokens of the speed test.
    pub n_gen: usize,
    /// Repetitions of the speed tests.
    pub reps: usize,
    /// Threads.
    pub threads: usize,
    /// Kernel tier.
    pub kernels: String,
}

impl Settings {
    fn resolve(g: &GridFile, kind: Kind) -> Settings {
        let (text, ctx, chunks) = match kind {
            Kind::Decoder => (
                g.eval.text.clone().unwrap_or_else(|| "data/wikitext-2/wiki.test.raw".into()),
                g.eval.ctx.unwrap_or(512),
                g.eval.chunks.unwrap_or(40),
            ),
            Kind::Encoder => (
                g.eval.text.clone().unwrap_or_else(|| "data/stsb/sts-test.tsv".into()),
                0,
                g.eval.chunks.unwrap_or(0),
            ),
        };
        Settings {
            eval_text: text,
            eval_ctx: ctx,
            eval_chunks: chunks,
            calib_text: g.calib.text.clone().unwrap_or_else(|| "data/wikitext-2/wiki.valid.tokens".into()),
            calib_ctx: g.calib.ctx.unwrap_or(512),
            calib_chunks: g.calib.chunks.unwrap_or(32),
            n_prompt: g.speed.n_prompt.unwrap_or(128),
            n_gen: g.speed.n_gen.unwrap_or(64),
            reps: g.speed.reps.unwrap_or(3).max(1),
            threads: edgellm_core::parallel::num_threads(),
            kernels: edgellm_models::linear::kernel_description().to_string(),
        }
    }
}

/// What one point measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    /// The point's name.
    pub name: String,
    /// Its series.
    pub series: String,
    /// Its chart label.
    pub label: String,
    /// The recipe, in words.
    pub recipe: String,
    /// File size in bytes.
    pub file_bytes: u64,
    /// Parameters.
    pub params: u64,
    /// Bits per weight: tensor bytes × 8 / parameters (zeros stored densely count in full).
    pub bpw: f64,
    /// Fraction of the pruned matrices' weights that are zero (unstructured/N:M points).
    pub zero_fraction: Option<f64>,
    /// Activation-sparsity level the point runs at (its KLD and perplexity with every token
    /// thresholded, its decoding through the column-skipping kernels).
    pub act_sparsity: Option<f64>,
    /// Mean KL divergence from the base (decoders).
    pub kld: Option<f64>,
    /// Its standard error.
    pub kld_err: Option<f64>,
    /// 99th percentile of the per-token KL divergence.
    pub kld_p99: Option<f64>,
    /// Same top token as the base, fraction.
    pub same_top: Option<f64>,
    /// Perplexity over the evaluation chunks.
    pub ppl: Option<f64>,
    /// Its uncertainty.
    pub ppl_err: Option<f64>,
    /// STS Spearman × 100 (encoders).
    pub spearman: Option<f64>,
    /// Sentences embedded per second during the STS evaluation (encoders).
    pub sentences_per_s: Option<f64>,
    /// Prompt tokens/s (decoders).
    pub prompt_tps: Option<f64>,
    /// Generation tokens/s (decoders).
    pub gen_tps: Option<f64>,
    /// Seconds to compress.
    pub compress_s: f64,
    /// Seconds to measure.
    pub eval_s: f64,
}

/// A whole sweep: what `sweep.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    /// The input model.
    pub model: PathBuf,
    /// Decoder or encoder.
    pub kind: Kind,
    /// The input model's own type (`F32`, `Q4_1`, …: its most common tensor type).
    pub base_type: String,
    /// The settings.
    pub settings: Settings,
    /// The input model measured the same way (KLD 0 by definition).
    pub base: PointResult,
    /// The points, in grid order.
    pub points: Vec<PointResult>,
}

/// Progress of a sweep.
#[derive(Clone, Debug)]
pub enum SweepEvent<'a> {
    /// Preparing: what is being done (tokenizing, base logits, …), with a count where known.
    Prepare {
        /// What.
        what: &'a str,
        /// Done.
        done: usize,
        /// In all (0 when unknown).
        total: usize,
    },
    /// A point starts (`index` of `total`).
    Start {
        /// The point.
        point: &'a Point,
        /// Its index.
        index: usize,
        /// Points in all.
        total: usize,
    },
    /// A point's stage moved on.
    Stage {
        /// The point.
        point: &'a Point,
        /// The stage (pruning, quantizing, KLD, speed, STS).
        stage: &'a str,
        /// Done.
        done: usize,
        /// In all (0 when unknown).
        total: usize,
    },
    /// A point finished.
    Done {
        /// The point.
        point: &'a Point,
        /// What it measured.
        result: &'a PointResult,
        /// Whether it came from an earlier run of the sweep.
        resumed: bool,
    },
}

/// What to sweep and where the results go.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The input model (GGUF, or a sentence-transformers directory).
    pub model: PathBuf,
    /// Output directory.
    pub dir: PathBuf,
    /// Keep each point's model file in `DIR/models/`.
    pub keep_models: bool,
    /// Ignore an earlier `sweep.json` in `dir`.
    pub fresh: bool,
}

fn most_common_type(src: &edgellm_compress::ModelSource) -> String {
    let mut n: BTreeMap<&str, u64> = BTreeMap::new();
    for t in &src.tensors {
        *n.entry(t.dtype.name()).or_default() += t.n_elements();
    }
    n.into_iter().max_by_key(|e| e.1).map(|e| e.0.to_string()).unwrap_or_default()
}

/// Runs the sweep `grid` on `opts.model`, writing `sweep.json` after every point; returns the
/// whole result (charts and `sweep.md` are written by [`write_reports`]).
pub fn run_sweep(
    grid: &GridFile,
    opts: &SweepOptions,
    progress: &mut dyn FnMut(SweepEvent),
) -> Result<SweepResult, SweepError> {
    let points = grid.points()?;
    let opened = OpenedModel::open(&opts.model)
        .map_err(|source| SweepError::Open { path: opts.model.clone(), source })?;
    let src = opened.source();
    let arch = src.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let kind = match arch.as_str() {
        "llama" | "gemma3" => Kind::Decoder,
        "bert" => Kind::Encoder,
        _ => return Err(SweepError::Architecture(arch)),
    };
    let settings = Settings::resolve(grid, kind);
    if kind == Kind::Encoder {
        if let Some(p) = points.iter().find(|p| p.act_sparsity.is_some()) {
            return Err(SweepError::Grid(format!(
                "{}: activation sparsity applies to decoders (llama, gemma3), not to a bert encoder",
                p.name
            )));
        }
    }
    for (p, what) in [(&settings.eval_text, "evaluation text"), (&settings.calib_text, "calibration text")] {
        if !p.is_file() {
            return Err(SweepError::Io {
                path: p.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("the {what} does not exist"),
                ),
            });
        }
    }
    let models_dir = opts.dir.join("models");
    std::fs::create_dir_all(&models_dir).map_err(io_err(&models_dir))?;
    let json_path = opts.dir.join("sweep.json");
    let earlier: Vec<PointResult> = match (opts.fresh, std::fs::read_to_string(&json_path)) {
        (false, Ok(text)) => match serde_json::from_str::<SweepResult>(&text) {
            Ok(r) if r.model == opts.model && same_settings(&r.settings, &settings) => r.points,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };

    // Calibration input, once for every point.
    let needs_calib = points.iter().any(|p| {
        p.recipe.needs_calibration()
            || p.recipe.quantize.is_some_and(|(_, m)| m != Method::Rtn) && kind == Kind::Decoder
            || p.act_sparsity.is_some()
    });
    let calib = if !needs_calib {
        CalibTokens::None
    } else {
        progress(SweepEvent::Prepare { what: "tokenizing the calibration text", done: 0, total: 0 });
        match (kind, opened.gguf()) {
            (Kind::Encoder, _) => CalibTokens::Encoder(encoder_sentences(
                &opts.model,
                &settings.calib_text,
                settings.calib_chunks.max(1) * 8,
            )?),
            (Kind::Decoder, Some(f)) => CalibTokens::Decoder(
                decoder_chunks(f, &settings.calib_text, settings.calib_ctx, settings.calib_chunks)?.chunks,
            ),
            (Kind::Decoder, None) => return Err(SweepError::Architecture(arch)),
        }
    };

    let mut measure = Measurer::new(kind, &opts.model, &settings, progress)?;
    let base_type = most_common_type(&src);
    let mut result = SweepResult {
        model: opts.model.clone(),
        kind,
        base_type: base_type.clone(),
        settings: settings.clone(),
        base: PointResult::default(),
        points: Vec::new(),
    };
    let base_point = Point {
        name: format!("base ({base_type})"),
        series: "base".into(),
        label: base_type.clone(),
        recipe: Recipe::default(),
        act_sparsity: None,
    };
    progress(SweepEvent::Start { point: &base_point, index: 0, total: points.len() });
    result.base = measure.measure(&base_point, &opts.model, None, progress)?;
    result.base.file_bytes = model_bytes(&opts.model);
    (result.base.params, result.base.bpw) = tensor_totals(&src);
    if let Some((v, e)) = measure.base_ppl() {
        (result.base.ppl, result.base.ppl_err) = (Some(v), Some(e));
    }
    progress(SweepEvent::Done { point: &base_point, result: &result.base, resumed: false });

    for (i, p) in points.iter().enumerate() {
        progress(SweepEvent::Start { point: p, index: i + 1, total: points.len() });
        if let Some(r) = earlier.iter().find(|r| r.name == p.name) {
            result.points.push(r.clone());
            progress(SweepEvent::Done { point: p, result: r, resumed: true });
            continue;
        }
        let out = models_dir.join(format!("{}.gguf", p.slug()));
        let t0 = Instant::now();
        let rep = run_recipe(&src, opened.gguf(), &p.recipe, &calib, &out, &mut |e| {
            let (stage, done, total) = match e {
                RecipeProgress::Prune(edgellm_compress::prune::PruneProgress::Block { l, n }) => {
                    ("pruning", l, n)
                }
                RecipeProgress::Prune(_) => ("pruning", 0, 0),
                RecipeProgress::Ranking => ("ranking", 0, 0),
                RecipeProgress::Calibrating { done, total } => ("calibrating", done, total),
                RecipeProgress::Quantizing { done, total } => ("quantizing", done, total),
                RecipeProgress::Writing => ("writing", 0, 0),
            };
            progress(SweepEvent::Stage { point: p, stage, done, total });
        })
        .map_err(|source| SweepError::Compress { point: p.name.clone(), source })?;
        let out = match p.act_sparsity {
            None => out,
            Some(level) => {
                // TEAL thresholds on the calibration text, into a copy of the compressed model.
                let CalibTokens::Decoder(chunks) = &calib else {
                    return Err(SweepError::Grid(format!("{}: no decoder calibration text", p.name)));
                };
                let teal = models_dir.join(format!("{}.teal.gguf", p.slug()));
                let f = edgellm_formats::GgufFile::open(&out).map_err(RuntimeError::from)?;
                let desc = format!(
                    "{} ({} chunks of {} tokens)",
                    settings.calib_text.display(),
                    chunks.len(),
                    settings.calib_ctx
                );
                edgellm_compress::act_sparsity::calibrate_file(
                    &f,
                    chunks,
                    &[level],
                    &desc,
                    &teal,
                    &mut |d, t| {
                        progress(SweepEvent::Stage { point: p, stage: "thresholds", done: d, total: t })
                    },
                )
                .map_err(|source| SweepError::Compress { point: p.name.clone(), source })?;
                drop(f);
                let _ = std::fs::remove_file(&out);
                teal
            }
        };
        let compress_s = t0.elapsed().as_secs_f64();
        let measured = measure.measure(p, &out, Some(&rep), progress);
        if !opts.keep_models {
            let _ = std::fs::remove_file(&out);
        }
        let mut r = measured?;
        r.compress_s = compress_s;
        result.points.push(r);
        let json = serde_json::to_string_pretty(&result).unwrap_or_default();
        std::fs::write(&json_path, json).map_err(io_err(&json_path))?;
        progress(SweepEvent::Done {
            point: p,
            result: result.points.last().unwrap_or(&result.base),
            resumed: false,
        });
    }
    if let (None, Some((v, e))) = (result.base.ppl, measure.base_ppl()) {
        (result.base.ppl, result.base.ppl_err) = (Some(v), Some(e));
    }
    let json = serde_json::to_string_pretty(&result).unwrap_or_default();
    std::fs::write(&json_path, json).map_err(io_err(&json_path))?;
    if !opts.keep_models {
        let _ = std::fs::remove_dir(&models_dir);
    }
    Ok(result)
}

/// Settings equal apart from the machine facts (threads, kernels), which a resumed run reports
/// but need not match.
fn same_settings(a: &Settings, b: &Settings) -> bool {
    Settings { threads: 0, kernels: String::new(), ..a.clone() }
        == Settings { threads: 0, kernels: String::new(), ..b.clone() }
}

/// Parameters and bits per weight (tensor bytes × 8 / parameters, over every tensor; a
/// bitmap-sparse weight's companion values count as bytes, not parameters).
fn tensor_totals(src: &edgellm_compress::ModelSource) -> (u64, f64) {
    use edgellm_core::DType;
    let companion = |t: &&edgellm_compress::source::SourceTensor<'_>| {
        t.dtype == DType::I8
            && t.name
                .strip_suffix(edgellm_models::linear::BITMAP_VALUES_SUFFIX)
                .is_some_and(|w| src.tensors.iter().any(|o| o.name == w && o.dtype == DType::Q8_SB))
    };
    let params: u64 = src.tensors.iter().filter(|t| !companion(t)).map(|t| t.n_elements()).sum();
    (params, src.tensor_bytes() as f64 * 8.0 / params.max(1) as f64)
}

/// Bytes of a model: the file, or the `*.safetensors` files of a directory.
pub fn model_bytes(p: &Path) -> u64 {
    if !p.is_dir() {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(p)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Holds what every point is measured against (one per sweep, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Measurer {
    Decoder {
        base: Option<Box<LoadedModel>>,
        cached: Option<BaseLogits>,
        tokens: Vec<u32>,
        bos: Option<u32>,
        opts: PplOptions,
        settings: Settings,
        base_ppl: Option<(f64, f64)>,
    },
    Encoder {
        pairs: Vec<StsPair>,
    },
}

impl Measurer {
    fn new(
        kind: Kind,
        model: &Path,
        s: &Settings,
        progress: &mut dyn FnMut(SweepEvent),
    ) -> Result<Measurer, SweepError> {
        match kind {
            Kind::Encoder => {
                let mut pairs = sts::load(&s.eval_text)?;
                if s.eval_chunks > 0 {
                    pairs.truncate(s.eval_chunks);
                }
                Ok(Measurer::Encoder { pairs })
            }
            Kind::Decoder => {
                progress(SweepEvent::Prepare { what: "tokenizing the evaluation text", done: 0, total: 0 });
                let base =
                    LoadedModel::load(model, s.eval_ctx.max(crate::speed::bench_ctx(s.n_prompt, s.n_gen)))?;
                let text = ppl::read_text(&s.eval_text)?;
                let (tokens, bos) = ppl::tokenize(&base.tokenizer, &text);
                let opts =
                    PplOptions { n_ctx: s.eval_ctx, max_chunks: Some(s.eval_chunks).filter(|&c| c > 0) };
                let n_chunks = opts.plan(tokens.len(), base.model.info().n_ctx_train)?;
                let need = BaseLogits::bytes_needed(base.model.info().n_vocab, &opts, n_chunks);
                let budget =
                    edgellm_runtime::memory::available_bytes().map_or(1 << 30, |a| (a / 3).min(6 << 30));
                let cached = if need <= budget {
                    Some(BaseLogits::compute(base.model.as_ref(), &tokens, bos, &opts, |done, total| {
                        progress(SweepEvent::Prepare { what: "base logits", done, total })
                    })?)
                } else {
                    None
                };
                Ok(Measurer::Decoder {
                    base: Some(Box::new(base)),
                    cached,
                    tokens,
                    bos,
                    opts,
                    settings: s.clone(),
                    base_ppl: None,
                })
            }
        }
    }

    /// Measures the model at `path` (the base when `rep` is `None`).
    fn measure(
        &mut self,
        p: &Point,
        path: &Path,
        rep: Option<&edgellm_compress::recipe::RecipeReport>,
        progress: &mut dyn FnMut(SweepEvent),
    ) -> Result<PointResult, SweepError> {
        let t0 = Instant::now();
        let mut r = PointResult {
            name: p.name.clone(),
            series: p.series.clone(),
            label: p.label.clone(),
            recipe: p.recipe.to_string(),
            file_bytes: model_bytes(path),
            zero_fraction: rep.and_then(|r| r.pruned).map(|t| t.zeros as f64 / t.elements.max(1) as f64),
            act_sparsity: p.act_sparsity.map(f64::from),
            ..PointResult::default()
        };
        // Models load with the point's activation sparsity (process-wide; off again on return).
        let _act = ActGuard::set(p.act_sparsity, true);
        match self {
            Measurer::Encoder { pairs } => {
                progress(SweepEvent::Stage { point: p, stage: "STS", done: 0, total: 0 });
                let emb = Embedder::load(path)?;
                let s = sts::evaluate(&emb, pairs, DEFAULT_BATCH)?;
                r.spearman = Some(s.spearman);
                r.sentences_per_s = Some(s.sentences_per_s);
            }
            Measurer::Decoder { base, cached, tokens, bos, opts, settings, base_ppl } => {
                let is_base = rep.is_none();
                let n_ctx = settings.eval_ctx.max(crate::speed::bench_ctx(settings.n_prompt, settings.n_gen));
                let owned;
                let lm: &LoadedModel = if is_base {
                    base.as_ref().ok_or_else(|| SweepError::Grid("the base model was released".into()))?
                } else {
                    owned = LoadedModel::load(path, n_ctx)?;
                    &owned
                };
                if is_base {
                    r.kld = Some(0.0);
                    r.same_top = Some(1.0);
                } else {
                    let kb = match (cached.as_ref(), base.as_ref()) {
                        (Some(c), _) => KldBase::Cached(c),
                        (None, Some(b)) => KldBase::Model(b.model.as_ref()),
                        (None, None) => return Err(SweepError::Grid("the base model was released".into())),
                    };
                    let k = ppl::kl_divergence_with(kb, lm.model.as_ref(), tokens, *bos, opts, |c| {
                        progress(SweepEvent::Stage { point: p, stage: "KLD", done: c.done, total: c.total })
                    })?;
                    let s = &k.summary;
                    r.kld = Some(s.kld_mean.value);
                    r.kld_err = Some(s.kld_mean.err);
                    r.kld_p99 = Some(s.kld_p99);
                    r.same_top = Some(s.same_top.value);
                    r.ppl = Some(s.ppl.value);
                    r.ppl_err = Some(s.ppl.err);
                    *base_ppl = Some((s.ppl_base.value, s.ppl_base.err));
                }
                // Speed as `bench --act-sparsity` measures it: prompts dense, decoding thresholded.
                let speed_model;
                let lm = match p.act_sparsity {
                    Some(level) if !is_base => {
                        set_act_sparsity(Some(ActSparsity { level, all_tokens: false }));
                        speed_model = LoadedModel::load(path, n_ctx)?;
                        &speed_model
                    }
                    _ => lm,
                };
                let sp = crate::speed::bench(
                    lm.model.as_ref(),
                    settings.n_prompt,
                    settings.n_gen,
                    settings.reps,
                    |done, total| progress(SweepEvent::Stage { point: p, stage: "speed", done, total }),
                )?;
                r.prompt_tps = sp.prompt.map(|t| t.tokens_per_s);
                r.gen_tps = sp.generation.map(|t| t.tokens_per_s);
                // Once the logits are cached, the base model is only needed for its own speed run.
                if is_base && cached.is_some() {
                    *base = None;
                }
            }
        }
        if rep.is_some() {
            let f = edgellm_formats::GgufFile::open(path).map_err(RuntimeError::from)?;
            (r.params, r.bpw) = tensor_totals(&edgellm_compress::ModelSource::from_gguf(&f));
        }
        r.eval_s = t0.elapsed().as_secs_f64();
        Ok(r)
    }

    fn base_ppl(&self) -> Option<(f64, f64)> {
        match self {
            Measurer::Decoder { base_ppl, cached, .. } => base_ppl.or(cached.as_ref().map(|c| c.ppl())),
            Measurer::Encoder { .. } => None,
        }
    }
}

/// Sets the process-wide activation sparsity for the models loaded next and turns it off
/// when dropped.
struct ActGuard;

impl ActGuard {
    fn set(level: Option<f32>, all_tokens: bool) -> ActGuard {
        set_act_sparsity(level.map(|level| ActSparsity { level, all_tokens }));
        ActGuard
    }
}

impl Drop for ActGuard {
    fn drop(&mut self) {
        set_act_sparsity(None);
    }
}

/// The dense point with the fewest bits per weight that is at least as small as `p` and
/// better on the quality measure (`None` where no dense point beats it).
fn beaten_by<'r>(r: &'r SweepResult, p: &PointResult) -> Option<&'r PointResult> {
    if p.series == "dense" || p.series == "base" {
        return None;
    }
    let better = |d: &PointResult| match r.kind {
        Kind::Decoder => matches!((d.kld, p.kld), (Some(a), Some(b)) if a < b),
        Kind::Encoder => matches!((d.spearman, p.spearman), (Some(a), Some(b)) if a > b),
    };
    r.points
        .iter()
        .filter(|d| d.series == "dense" && d.bpw <= p.bpw + 1e-9 && better(d))
        .min_by(|a, b| a.bpw.total_cmp(&b.bpw))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite()).map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// The Markdown report of a sweep.
pub fn markdown(r: &SweepResult, charts: &[PathBuf]) -> String {
    let s = &r.settings;
    let mut m = String::new();
    m.push_str(&format!("# Sweep: {}\n\n", r.model.display()));
    m.push_str(&format!(
        "Base: the input model ({}, mostly {}). Calibration: `{}` ({}). Evaluation: `{}` ({}).\n",
        match r.kind {
            Kind::Decoder => "decoder",
            Kind::Encoder => "encoder",
        },
        r.base_type,
        s.calib_text.display(),
        match r.kind {
            Kind::Decoder => format!("{} chunks of {} tokens", s.calib_chunks, s.calib_ctx),
            Kind::Encoder => format!("up to {} sentences", s.calib_chunks.max(1) * 8),
        },
        s.eval_text.display(),
        match r.kind {
            Kind::Decoder =>
                format!("{} chunks of {} tokens, KL divergence from the base", s.eval_chunks, s.eval_ctx),
            Kind::Encoder => "STS Spearman × 100".to_string(),
        },
    ));
    m.push_str(&format!("Machine: {} threads, kernels {}.\n\n", s.threads, s.kernels));
    let all: Vec<&PointResult> = std::iter::once(&r.base).chain(r.points.iter()).collect();
    match r.kind {
        Kind::Decoder => {
            m.push_str(&format!(
                "| point | bpw | file | zeros | KLD | KLD p99 | same top | PPL | pp{} t/s | tg{} t/s | a dense type as small and better |\n",
                s.n_prompt, s.n_gen
            ));
            m.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
            for p in &all {
                m.push_str(&format!(
                    "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    p.name,
                    p.bpw,
                    mib(p.file_bytes),
                    p.zero_fraction.map_or("–".into(), |z| format!("{:.1} %", z * 100.0)),
                    opt(p.kld, 4),
                    opt(p.kld_p99, 3),
                    p.same_top.map_or("–".into(), |v| format!("{:.1} %", v * 100.0)),
                    match (p.ppl, p.ppl_err) {
                        (Some(v), Some(e)) => format!("{v:.2} ± {e:.2}"),
                        _ => "–".into(),
                    },
                    opt(p.prompt_tps, 1),
                    opt(p.gen_tps, 1),
                    beaten_by(r, p).map_or(String::new(), |d| format!("{} (KLD {})", d.name, opt(d.kld, 4))),
                ));
            }
        }
        Kind::Encoder => {
            m.push_str("| point | bpw | file | zeros | Spearman | sentences/s | a dense type as small and better |\n");
            m.push_str("|---|---:|---:|---:|---:|---:|---|\n");
            for p in &all {
                m.push_str(&format!(
                    "| {} | {:.2} | {} | {} | {} | {} | {} |\n",
                    p.name,
                    p.bpw,
                    mib(p.file_bytes),
                    p.zero_fraction.map_or("–".into(), |z| format!("{:.1} %", z * 100.0)),
                    opt(p.spearman, 2),
                    opt(p.sentences_per_s, 0),
                    beaten_by(r, p).map_or(String::new(), |d| format!("{} ({})", d.name, opt(d.spearman, 2))),
                ));
            }
        }
    }
    m.push_str(
        "\nBits per weight are the file's tensor bytes × 8 / parameters: zeros are stored densely (F32, or the \
         quantized type) and count in full, so unstructured and N:M pruning save nothing on disk or in \
         bandwidth until a sparse format stores them (the `sparse` series: edgellm's sparse types, \
         docs/sparse-gguf.md). Structured pruning removes parameters and shrinks the file. Activation \
         sparsity changes no byte of the file: its points sit at their file's size, with every token \
         thresholded for KLD and perplexity and decoding through the column-skipping kernels. Speed is one measurement per point, in sequence, on whatever else the machine was doing: a \
         guide, not a benchmark (use `edgellm bench` and `bench/` for speed claims).\n\n",
    );
    for c in charts.iter().filter(|c| c.extension().is_some_and(|e| e == "png")) {
        let name = c.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        m.push_str(&format!("![{name}]({name})\n\n"));
    }
    let secs: f64 = r.points.iter().map(|p| p.compress_s + p.eval_s).sum::<f64>() + r.base.eval_s;
    m.push_str(&format!("{} points, {:.0} s of compression and measurement.\n", r.points.len(), secs));
    m
}

fn series_of(
    r: &SweepResult,
    y: impl Fn(&PointResult) -> Option<f64>,
    x: impl Fn(&PointResult) -> Option<f64>,
    with_base: bool,
) -> Vec<crate::chart::Series> {
    let mut names: Vec<String> = Vec::new();
    if with_base {
        names.push("base".into());
    }
    for p in &r.points {
        if !names.contains(&p.series) {
            names.push(p.series.clone());
        }
    }
    names
        .into_iter()
        .map(|n| {
            let points = std::iter::once(&r.base)
                .chain(r.points.iter())
                .filter(|p| p.series == n)
                .filter_map(|p| Some(crate::chart::ChartPoint { x: x(p)?, y: y(p)?, label: p.label.clone() }))
                .collect();
            crate::chart::Series { line: n == "dense", name: n, points }
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Writes `DIR/sweep.md` and the charts (PNG and SVG); returns the files written.
pub fn write_reports(r: &SweepResult, dir: &Path) -> Result<Vec<PathBuf>, SweepError> {
    use crate::chart::{write, Axis, Chart};
    let axis = |t: &str, log: bool, lower: bool| Axis { title: t.into(), log, lower_is_better: lower };
    let model = r.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let s = &r.settings;
    let charts: Vec<(&str, Chart)> = match r.kind {
        Kind::Decoder => vec![
            (
                "kld-vs-bpw",
                Chart {
                    title: format!("{model}: KL divergence vs size"),
                    x: axis("bits per weight", true, true),
                    y: axis(
                        &format!("mean KL divergence from the base, {}x{}", s.eval_chunks, s.eval_ctx),
                        true,
                        true,
                    ),
                    series: series_of(r, |p| p.kld, |p| Some(p.bpw), false),
                },
            ),
            (
                "ppl-vs-bpw",
                Chart {
                    title: format!("{model}: perplexity vs size"),
                    x: axis("bits per weight", true, true),
                    y: axis("perplexity", true, true),
                    series: series_of(r, |p| p.ppl, |p| Some(p.bpw), true),
                },
            ),
            (
                "kld-vs-speed",
                Chart {
                    title: format!("{model}: KL divergence vs decode speed ({} threads)", s.threads),
                    x: axis(&format!("tg{} tokens/s", s.n_gen), false, false),
                    y: axis("mean KL divergence from the base", true, true),
                    series: series_of(r, |p| p.kld, |p| p.gen_tps, false),
                },
            ),
        ],
        Kind::Encoder => vec![
            (
                "sts-vs-bpw",
                Chart {
                    title: format!("{model}: STS Spearman vs size"),
                    x: axis("bits per weight", true, true),
                    y: axis("STS Spearman x 100", false, false),
                    series: series_of(r, |p| p.spearman, |p| Some(p.bpw), true),
                },
            ),
            (
                "sts-vs-speed",
                Chart {
                    title: format!("{model}: STS Spearman vs speed ({} threads)", s.threads),
                    x: axis("sentences/s", false, false),
                    y: axis("STS Spearman x 100", false, false),
                    series: series_of(r, |p| p.spearman, |p| p.sentences_per_s, true),
                },
            ),
        ],
    };
    let mut files = Vec::new();
    for (stem, c) in &charts {
        files.extend(write(c, &dir.join(stem)).map_err(|(path, why)| SweepError::Chart { path, why })?);
    }
    let md = dir.join("sweep.md");
    std::fs::write(&md, markdown(r, &files)).map_err(io_err(&md))?;
    files.insert(0, md);
    files.insert(1, dir.join("sweep.json"));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_expand_to_their_points() {
        let g = GridFile::preset("pruning").unwrap();
        let pts = g.points().unwrap();
        // 7 dense types, 3 methods × 3 sparsities × 2 quants, the 3 × 2 N:M + Q4_K_M points
        // stored sparse (4-bit unstructured and unquantized points have no sparse type), 3 levels
        // of activation sparsity.
        assert_eq!(pts.len(), 7 + 3 * 3 * 2 + 3 * 2 + 3);
        assert_eq!(pts[0].name, "Q8_0");
        assert!(pts.iter().any(|p| p.name == "sparsegpt 2:4 + Q4_K_M" && p.series == "sparsegpt"));
        let sparse: Vec<&str> =
            pts.iter().filter(|p| p.series.ends_with(" sparse")).map(|p| p.name.as_str()).collect();
        assert_eq!(sparse.len(), 6, "{sparse:?}");
        assert!(
            sparse.contains(&"wanda sparse 2:4 + Q4_K_M")
                && sparse.contains(&"magnitude sparse 4:8 + Q4_K_M")
        );
        assert!(pts
            .iter()
            .filter(|p| p.series.ends_with(" sparse"))
            .all(|p| p.recipe.format == StorageFormat::Sparse));
        let act: Vec<&Point> = pts.iter().filter(|p| p.act_sparsity.is_some()).collect();
        assert_eq!(act.len(), 3);
        assert!(act.iter().all(|p| p.series == "activation sparsity" && p.recipe.prune.is_none()));
        assert_eq!(act[1].name, "activation sparsity 40% + Q4_0");
        assert_eq!(act[1].act_sparsity, Some(0.4));
        assert!(pts.iter().any(|p| p.name == "wanda 50%" && p.label == "50%"));
        assert!(pts.iter().any(|p| p.name == "magnitude 4:8 + Q4_K_M" && p.label == "4:8 Q4_K_M"));
        let names: Vec<&String> = pts.iter().map(|p| &p.name).collect();
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len(), "names are unique");
        for name in ["structured", "encoder", "quick"] {
            assert!(!GridFile::preset(name).unwrap().points().unwrap().is_empty());
        }
        assert!(GridFile::preset("nope").unwrap_err().to_string().contains("presets: pruning"));
    }

    #[test]
    fn grid_files_parse_and_bad_ones_are_clear_errors() {
        let g = GridFile::parse(
            "[eval]\nctx = 256\nchunks = 8\n[grid]\nprune = [\"magnitude\"]\nsparsity = [\"0.3\", \"4:8\"]\n\
             quant = [\"none\", \"Q8_0\"]\nstructured = [\"ffn 0.25\"]\n[[point]]\nquant = \"Q4_0\"\n",
        )
        .unwrap();
        assert_eq!(g.eval.ctx, Some(256));
        let pts = g.points().unwrap();
        // 2 sparsities × 2 quants + 1 structured × 2 quants + 1 point.
        assert_eq!(pts.len(), 7);
        assert!(pts.iter().any(|p| p.series == "structured ffn" && p.label == "25% Q8_0"));
        assert_eq!(pts.last().unwrap().name, "Q4_0");
        let bad = |t: &str, needle: &str| {
            let e = GridFile::parse(t).and_then(|g| g.points()).unwrap_err().to_string();
            assert!(e.contains(needle), "{t:?}: {e}");
        };
        bad("[grid]\nprune = [\"wanda\"]\n", "needs grid.sparsity");
        bad("[grid]\nprune = [\"nope\"]\nsparsity = [\"50%\"]\n", "nope");
        bad("[grid]\nprune = [\"wanda\"]\nsparsity = [\"150%\"]\n", "1.5");
        bad("[grid]\nprune = [\"wanda\"]\nsparsity = [\"3:5:7\"]\n", "3:5:7");
        bad("[grid]\nstructured = [\"ffn\"]\n", "KIND RATIO");
        bad("[grid]\nstructured = [\"ffn 1.5\"]\n", "(0, 1)");
        bad("[grid]\ndense = [\"Q9_9\"]\n", "Q9_9");
        bad("[grid]\ndense = [\"Q8_0\"]\nquant_method = \"gptq\"\n", "quant_method");
        bad("[grid]\ndenze = [\"Q8_0\"]\n", "denze");
        bad("[grid]\n", "no points");
        bad("[[point]]\nprune = \"wanda\"\n", "come together");
        bad("[grid]\nprune = [\"wanda\"]\nsparsity = [\"50%\"]\nformat = [\"packed\"]\n", "packed");
        bad("[grid]\nact_sparsity = [1.5]\n", "(0, 1)");
        bad("[[point]]\nact_sparsity = 0.4\nprune = \"wanda\"\nsparsity = \"2:4\"\n", "not with pruning");
        // A point stored sparse must be one a sparse type holds.
        bad("[[point]]\nprune = \"wanda\"\nsparsity = \"2:4\"\nformat = \"sparse\"\n", "--then-quantize");
        bad(
            "[[point]]\nprune = \"wanda\"\nsparsity = \"50%\"\nquant = \"Q4_0\"\nformat = \"sparse\"\n",
            "Q8_SB",
        );
        // In the grid, sparse storage applies where it can: 2:4 + Q8_0 and 60 % + Q8_0, not
        // 2:4 unquantized.
        let g = GridFile::parse(
            "[grid]\nprune = [\"magnitude\"]\nsparsity = [\"60%\", \"2:4\"]\nquant = [\"none\", \"Q8_0\"]\n\
             format = [\"dense\", \"sparse\"]\nact_sparsity = [0.25]\n",
        )
        .unwrap();
        let names: Vec<String> = g.points().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "magnitude 60%",
                "magnitude 60% + Q8_0",
                "magnitude sparse 60% + Q8_0",
                "magnitude 2:4",
                "magnitude 2:4 + Q8_0",
                "magnitude sparse 2:4 + Q8_0",
                "activation sparsity 25%",
                "activation sparsity 25% + Q8_0",
            ]
        );
    }

    #[test]
    fn slugs_are_file_names() {
        let g = GridFile::preset("pruning").unwrap();
        for p in g.points().unwrap() {
            let s = p.slug();
            assert!(
                !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{s}"
            );
        }
    }
}
