//! Calibration of activation-sparsity thresholds (TEAL, Liu et al. 2024): per layer and site,
//! the input magnitude below which a fraction `S` of the values fall on calibration text.
//!
//! The inputs of every thresholded Linear (`edgellm_models::act_sparsity::ROLES`) are seen
//! through the Linear input observer while the dense model runs over the text, and their
//! magnitudes counted in a histogram of 2¹⁵ bins (the top 16 bits of the f32: sign cleared,
//! exponent and 7 mantissa bits, so a bin spans under 0.8 % of its value); a threshold is the
//! value where the cumulative count reaches `S`, interpolated linearly inside its bin. Inputs
//! shared by several Linears (q/k/v, gate/up) are counted once, under the first one's name.
//! The thresholds go into the file's metadata (`edgellm_models::act_sparsity` has the keys);
//! everything else is written back unchanged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use edgellm_formats::{GgufFile, Value, ValueType};
use edgellm_models::act_sparsity::{
    is_sparsified, Thresholds, KEY_CALIBRATION, KEY_LEVELS, KEY_TENSORS, KEY_THRESHOLDS,
};
use edgellm_models::linear::{set_input_observer, InputObserver};
use edgellm_models::LanguageModel;

use crate::CompressError;

/// Histogram bins: the top 16 bits of a non-negative f32 below infinity.
const BINS: usize = 0x7f80;

/// The tensor whose histogram counts `name`'s input: the first of the Linears sharing it.
pub fn site_of(name: &str) -> String {
    for (shared, first) in [("attn_k", "attn_q"), ("attn_v", "attn_q"), ("ffn_up", "ffn_gate")] {
        if let Some(l) = name.strip_prefix("blk.").and_then(|r| r.strip_suffix(&format!(".{shared}.weight")))
        {
            return format!("blk.{l}.{first}.weight");
        }
    }
    name.to_string()
}

/// Magnitude histograms of the inputs of the thresholded Linears, one per site.
#[derive(Default)]
pub struct Histograms {
    /// Tensor names in the order first seen (every thresholded Linear, shared inputs too).
    pub tensors: Vec<String>,
    counts: HashMap<String, Vec<u64>>,
}

impl Histograms {
    /// Counts `x`'s magnitudes under `name`'s site.
    pub fn add(&mut self, name: &str, x: &[f32]) {
        if !self.tensors.iter().any(|t| t == name) {
            self.tensors.push(name.to_string());
        }
        let site = site_of(name);
        if site != name && self.counts.contains_key(&site) {
            return;
        }
        let h = self.counts.entry(site).or_insert_with(|| vec![0; BINS]);
        for &v in x {
            let b = ((v.to_bits() & 0x7fff_ffff) >> 16) as usize;
            h[b.min(BINS - 1)] += 1;
        }
    }

    /// Values counted for `name`'s site.
    pub fn total(&self, name: &str) -> u64 {
        self.counts.get(&site_of(name)).map_or(0, |h| h.iter().sum())
    }

    /// The magnitude below which a fraction `s` of `name`'s input values fall.
    pub fn threshold(&self, name: &str, s: f64) -> Option<f32> {
        let h = self.counts.get(&site_of(name))?;
        let total: u64 = h.iter().sum();
        if total == 0 {
            return None;
        }
        let target = s.clamp(0.0, 1.0) * total as f64;
        let mut cum = 0.0f64;
        for (b, &c) in h.iter().enumerate() {
            if c > 0 && cum + c as f64 >= target {
                let lo = f32::from_bits((b as u32) << 16) as f64;
                let hi = f32::from_bits(((b as u32) + 1) << 16) as f64;
                return Some((lo + (hi - lo) * ((target - cum) / c as f64)) as f32);
            }
            cum += c as f64;
        }
        Some(f32::MAX)
    }

    /// The fraction of `name`'s input values of magnitude below `t` (interpolated inside the
    /// bin of `t`, as [`Histograms::threshold`]).
    pub fn fraction_below(&self, name: &str, t: f32) -> Option<f64> {
        let h = self.counts.get(&site_of(name))?;
        let total: u64 = h.iter().sum();
        if total == 0 {
            return None;
        }
        let bt = ((t.to_bits() & 0x7fff_ffff) >> 16) as usize;
        let below: u64 = h[..bt.min(BINS)].iter().sum();
        let mut f = below as f64;
        if bt < BINS {
            let lo = f32::from_bits((bt as u32) << 16) as f64;
            let hi = f32::from_bits(((bt as u32) + 1) << 16) as f64;
            f += h[bt] as f64 * ((t as f64 - lo) / (hi - lo)).clamp(0.0, 1.0);
        }
        Some(f / total as f64)
    }

    /// Thresholds of every tensor for each level.
    pub fn thresholds(&self, levels: &[f32]) -> Thresholds {
        let values = levels
            .iter()
            .map(|&s| self.tensors.iter().map(|t| self.threshold(t, s as f64).unwrap_or(0.0)).collect())
            .collect();
        Thresholds { levels: levels.to_vec(), tensors: self.tensors.clone(), values }
    }

    /// The fraction of all thresholded input values (every site weighted by its count) below
    /// the thresholds of level `i`, and the lowest and highest fraction of a single site.
    pub fn measured(&self, th: &Thresholds, i: usize) -> (f64, f64, f64) {
        let (mut below, mut total, mut lo, mut hi) = (0.0, 0.0, f64::INFINITY, 0.0f64);
        for (t, name) in th.tensors.iter().enumerate() {
            if site_of(name) != *name {
                continue;
            }
            let (Some(f), n) = (self.fraction_below(name, th.values[i][t]), self.total(name) as f64) else {
                continue;
            };
            below += f * n;
            total += n;
            lo = lo.min(f);
            hi = hi.max(f);
        }
        (if total > 0.0 { below / total } else { 0.0 }, lo, hi)
    }
}

struct Observer(Mutex<Histograms>);

impl InputObserver for Observer {
    fn observe(&self, name: &str, x: &[f32], _n: usize, _in_features: usize) {
        if is_sparsified(name) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).add(name, x);
        }
    }
}

/// Runs `model` (dense) over each chunk of `chunks` from an empty context and returns the
/// magnitude histograms of the thresholded Linears' inputs. `progress(done, total)` after each.
pub fn collect(
    model: &dyn LanguageModel,
    chunks: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Histograms, CompressError> {
    let obs = Arc::new(Observer(Mutex::new(Histograms::default())));
    set_input_observer(Some(obs.clone()));
    let res = (|| -> Result<(), CompressError> {
        for (i, c) in chunks.iter().enumerate() {
            let mut cache = model.new_cache(c.len());
            model.forward(c, &mut cache, false).map_err(|e| CompressError::BadTensor {
                tensor: "(activation-sparsity calibration forward)".into(),
                why: e.to_string(),
            })?;
            progress(i + 1, chunks.len());
        }
        Ok(())
    })();
    set_input_observer(None);
    res?;
    let h = std::mem::take(&mut *obs.0.lock().unwrap_or_else(|e| e.into_inner()));
    if h.tensors.is_empty() {
        return Err(CompressError::BadPrune(
            "activation-sparsity calibration saw no attention or FFN projection inputs (not a decoder?)"
                .into(),
        ));
    }
    Ok(h)
}

/// Writes `f` to `out` with `th` (and `calibration`, a description) in its metadata, replacing
/// any thresholds it had; tensors and other metadata unchanged.
pub fn write_with_thresholds(
    f: &GgufFile,
    th: &Thresholds,
    calibration: &str,
    out: &Path,
) -> Result<(), CompressError> {
    let mut w = f.to_writer();
    w.metadata.retain(|(k, _)| !k.starts_with("edgellm.act_sparsity."));
    w.set(KEY_LEVELS, Value::Array(ValueType::F32, th.levels.iter().map(|&l| Value::F32(l)).collect()));
    w.set(
        KEY_TENSORS,
        Value::Array(ValueType::String, th.tensors.iter().map(|t| Value::String(t.clone())).collect()),
    );
    for (i, v) in th.values.iter().enumerate() {
        w.set(
            &format!("{KEY_THRESHOLDS}.{i}"),
            Value::Array(ValueType::F32, v.iter().map(|&t| Value::F32(t)).collect()),
        );
    }
    w.set(KEY_CALIBRATION, Value::String(calibration.to_string()));
    w.write_file(out)?;
    Ok(())
}

/// Calibrates thresholds for `levels` on the model file `f` over the tokenized `chunks` and
/// writes the model with them to `out` (as [`write_with_thresholds`], `calibration` describing
/// the text). The model runs dense: activation sparsity is turned off for the models loaded
/// from now on (`edgellm_models::act_sparsity::set_act_sparsity(None)`). Returns the
/// thresholds and the calibration histograms (for [`Histograms::measured`]).
pub fn calibrate_file(
    f: &GgufFile,
    chunks: &[Vec<u32>],
    levels: &[f32],
    calibration: &str,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Thresholds, Histograms), CompressError> {
    if let Some(&l) = levels.iter().find(|&&l| !(l > 0.0 && l < 1.0)) {
        return Err(CompressError::BadPrune(format!(
            "activation sparsity {l}: each level must be a fraction in (0, 1), e.g. 0.4"
        )));
    }
    let mut levels = levels.to_vec();
    levels.sort_by(|x, y| x.total_cmp(y));
    levels.dedup();
    edgellm_models::act_sparsity::set_act_sparsity(None);
    let model = edgellm_models::load_gguf(f).map_err(|e| CompressError::BadTensor {
        tensor: "(loading the model for activation-sparsity calibration)".into(),
        why: e.to_string(),
    })?;
    let h = collect(model.as_ref(), chunks, progress)?;
    let th = h.thresholds(&levels);
    write_with_thresholds(f, &th, calibration, out)?;
    Ok((th, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_splits_the_counted_values() {
        let mut h = Histograms::default();
        let x: Vec<f32> = (0..10_000).map(|i| ((i * 7919) % 10_000) as f32 / 1000.0 - 5.0).collect();
        h.add("blk.0.attn_q.weight", &x);
        h.add("blk.0.attn_k.weight", &[100.0; 50]); // shared input: not counted again
        assert_eq!(h.total("blk.0.attn_k.weight"), 10_000);
        for s in [0.1, 0.25, 0.4, 0.5, 0.9] {
            let t = h.threshold("blk.0.attn_q.weight", s).unwrap();
            let below = x.iter().filter(|v| v.abs() < t).count() as f64 / x.len() as f64;
            assert!((below - s).abs() < 0.005, "s {s}: threshold {t} leaves {below} below");
            let f = h.fraction_below("blk.0.attn_v.weight", t).unwrap();
            assert!((f - s).abs() < 1e-3, "s {s}: fraction_below {f}");
        }
        assert_eq!(h.tensors, ["blk.0.attn_q.weight", "blk.0.attn_k.weight"]);
    }
}
