//! Activation-sparsity thresholds (TEAL, Liu et al. 2024: training-free, magnitude-based):
//! where they live in a GGUF file and which inputs they apply to.
//!
//! `edgellm calibrate-sparsity` measures, per layer and per *site* — the input of the
//! attention projections (q/k/v share it), of the output projection, of the FFN's gate/up
//! (shared) and of the down projection — the magnitude below which a fraction `S` of that
//! input's values fall on calibration text, and stores it in the file's metadata:
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `edgellm.act_sparsity.levels` | `[f32]` | the target sparsities `S` calibrated (e.g. 0.25, 0.4, 0.5) |
//! | `edgellm.act_sparsity.tensors` | `[string]` | the weight tensors whose *input* is thresholded |
//! | `edgellm.act_sparsity.thresholds.N` | `[f32]` | for level `N` (its index), one threshold per tensor, same order |
//! | `edgellm.act_sparsity.calibration` | string | what the thresholds were measured on |
//!
//! At run time ([`set_act_sparsity`]) each such [`crate::Linear`] zeroes the input values of
//! magnitude below its threshold before its product: on decode tokens (one token per call)
//! only, or on every token ([`ActSparsity::all_tokens`], for perplexity measurements).

use std::sync::RwLock;

use edgellm_formats::GgufFile;

use crate::ModelError;

/// Metadata key of the calibrated levels.
pub const KEY_LEVELS: &str = "edgellm.act_sparsity.levels";
/// Metadata key of the thresholded tensors' names.
pub const KEY_TENSORS: &str = "edgellm.act_sparsity.tensors";
/// Metadata key prefix of the thresholds of level `N` (`…thresholds.N`).
pub const KEY_THRESHOLDS: &str = "edgellm.act_sparsity.thresholds";
/// Metadata key of the calibration description.
pub const KEY_CALIBRATION: &str = "edgellm.act_sparsity.calibration";

/// The block weights whose inputs are thresholded (TEAL's placement): `blk.N.ROLE.weight`.
pub const ROLES: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

/// Whether tensor `name` is one whose input TEAL thresholds.
pub fn is_sparsified(name: &str) -> bool {
    crate::split_block_name(name).is_some_and(|(_, role)| ROLES.contains(&role))
}

/// Activation sparsity at run time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActSparsity {
    /// The calibrated level to use (a fraction in (0, 1), one of the file's levels).
    pub level: f32,
    /// Threshold every token's input (perplexity, KL divergence), not only decode steps'.
    pub all_tokens: bool,
}

static SETTING: RwLock<Option<ActSparsity>> = RwLock::new(None);

/// Turns activation sparsity on (or off) for the models loaded from now on (process-wide,
/// as `linear::set_packing`): their Linear layers read their thresholds from the file.
pub fn set_act_sparsity(s: Option<ActSparsity>) {
    *SETTING.write().unwrap_or_else(|e| e.into_inner()) = s;
}

/// Bytes of the column-blocked copies (`kernels::colskip`) that loading `f` with the current
/// setting makes next to the weights: one per thresholded weight whose type has the layout
/// (0 when activation sparsity is off, or the file has no thresholds for the level).
pub fn column_copy_bytes(f: &GgufFile) -> u64 {
    let Some(s) = act_sparsity() else { return 0 };
    let Ok(Some(th)) = Thresholds::from_gguf(f) else { return 0 };
    let Some(i) = th.level_index(s.level) else { return 0 };
    f.tensors
        .iter()
        .filter(|t| t.dims.len() == 2 && th.threshold(i, &t.name).is_some())
        .filter_map(|t| {
            let (k, m) = (usize::try_from(t.dims[0]).ok()?, usize::try_from(t.dims[1]).ok()?);
            edgellm_core::kernels::colskip::ColPacked::len_for(t.dtype, k, m)
        })
        .map(|b| b as u64)
        .sum()
}

/// The setting of [`set_act_sparsity`].
pub fn act_sparsity() -> Option<ActSparsity> {
    *SETTING.read().unwrap_or_else(|e| e.into_inner())
}

/// The thresholds stored in a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Calibrated levels.
    pub levels: Vec<f32>,
    /// Thresholded tensors.
    pub tensors: Vec<String>,
    /// `values[level][tensor]`.
    pub values: Vec<Vec<f32>>,
}

impl Thresholds {
    /// The thresholds in `f`'s metadata, `None` when it has none, an error when they are
    /// malformed.
    pub fn from_gguf(f: &GgufFile) -> Result<Option<Thresholds>, ModelError> {
        let Some(levels) = f.get(KEY_LEVELS) else { return Ok(None) };
        let bad = |what: &str| ModelError::BadConfig(format!("activation-sparsity metadata: {what}"));
        let floats = |v: &edgellm_formats::gguf::Value| -> Option<Vec<f32>> {
            v.as_array()?.iter().map(|x| x.as_f64().map(|x| x as f32)).collect()
        };
        let levels =
            floats(levels).ok_or_else(|| bad(&format!("{KEY_LEVELS} is not an array of numbers")))?;
        let tensors: Vec<String> = f
            .get_str_array(KEY_TENSORS)
            .map_err(|_| bad(&format!("{KEY_TENSORS} missing or not strings")))?
            .into_iter()
            .map(String::from)
            .collect();
        let mut values = Vec::new();
        for i in 0..levels.len() {
            let key = format!("{KEY_THRESHOLDS}.{i}");
            let v = f.get(&key).and_then(floats).ok_or_else(|| bad(&format!("{key} missing")))?;
            if v.len() != tensors.len() {
                return Err(bad(&format!("{key} has {} values for {} tensors", v.len(), tensors.len())));
            }
            values.push(v);
        }
        Ok(Some(Thresholds { levels, tensors, values }))
    }

    /// Index of `level` among the calibrated ones (within 1e-4).
    pub fn level_index(&self, level: f32) -> Option<usize> {
        self.levels.iter().position(|&l| (l - level).abs() < 1e-4)
    }

    /// The levels as a list for messages (`0.25, 0.4, 0.5`).
    pub fn levels_text(&self) -> String {
        self.levels.iter().map(|l| format!("{l}")).collect::<Vec<_>>().join(", ")
    }

    /// The threshold of tensor `name` at level index `i`.
    pub fn threshold(&self, i: usize, name: &str) -> Option<f32> {
        let t = self.tensors.iter().position(|n| n == name)?;
        self.values.get(i).map(|v| v[t])
    }
}

/// The threshold of Linear `name` of file `f` under the current setting: `None` when
/// activation sparsity is off or the tensor is not thresholded; an error (naming the levels
/// available, or the command that makes them) when it is on and the file cannot provide it.
pub fn threshold_for(f: &GgufFile, name: &str) -> Result<Option<f32>, ModelError> {
    let Some(s) = act_sparsity() else { return Ok(None) };
    if !is_sparsified(name) {
        return Ok(None);
    }
    let th = Thresholds::from_gguf(f)?.ok_or_else(|| {
        ModelError::BadConfig(format!(
            "--act-sparsity {}: this model file has no activation-sparsity thresholds; create them with \
             `edgellm calibrate-sparsity -m MODEL --calib data/wikitext-2/wiki.valid.tokens --sparsity {} -o OUT.gguf`",
            s.level, s.level
        ))
    })?;
    let i = th.level_index(s.level).ok_or_else(|| {
        ModelError::BadConfig(format!(
            "--act-sparsity {}: this model file has thresholds for the levels {} only; calibrate this one with \
             `edgellm calibrate-sparsity --sparsity {}`",
            s.level,
            th.levels_text(),
            s.level
        ))
    })?;
    match th.threshold(i, name) {
        Some(t) => Ok(Some(t)),
        None => Err(ModelError::BadConfig(format!(
            "--act-sparsity {}: the file's thresholds do not cover {name}; recalibrate it",
            s.level
        ))),
    }
}
