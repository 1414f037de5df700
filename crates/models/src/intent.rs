//! An intent classifier's head: a linear layer over a sentence encoder's embedding, with the
//! names of its labels, stored in the encoder's own GGUF file (see docs/intent-gguf.md).
//!
//! The file is a `bert` GGUF plus two tensors and two metadata keys:
//! - `intent.head.weight`, dims `[dim, n_labels]` (GGUF order: one row of `dim` inputs per
//!   label), any type that dequantizes (F32 as written by `edgellm intent train`);
//! - `intent.head.bias`, dims `[n_labels]`;
//! - [`KEY_VERSION`] (u32, [`VERSION`]) and [`KEY_LABELS`] (array of strings, one per row).
//!
//! The head's input is the sentence embedding exactly as the encoder's pipeline gives it
//! (pooled, and L2-normalized where the file says so); its output is one logit per label.

use edgellm_formats::{GgufFile, GgufWriter, Value, ValueType};

use crate::error::ModelError;

/// Metadata key: the version of the intent layout (u32).
pub const KEY_VERSION: &str = "edgellm.intent.version";
/// Metadata key: the label names, in the order of the head's rows (array of strings).
pub const KEY_LABELS: &str = "edgellm.intent.labels";
/// The version this code reads and writes.
pub const VERSION: u32 = 1;
/// Tensor name of the head's weight.
pub const WEIGHT: &str = "intent.head.weight";
/// Tensor name of the head's bias.
pub const BIAS: &str = "intent.head.bias";

/// The most labels a head may have (a sanity bound against corrupt files).
pub const MAX_LABELS: usize = 65_536;

/// A linear classification head with its label names.
#[derive(Clone, Debug, PartialEq)]
pub struct IntentHead {
    /// Label names, one per output.
    pub labels: Vec<String>,
    /// Length of the input embedding.
    pub dim: usize,
    /// Weights, `[n_labels × dim]` row-major.
    pub weight: Vec<f32>,
    /// Biases, `[n_labels]`.
    pub bias: Vec<f32>,
}

/// Whether a GGUF file carries an intent head (its version key or its labels).
pub fn has_intent_head(f: &GgufFile) -> bool {
    f.get(KEY_VERSION).is_some() || f.get(KEY_LABELS).is_some() || f.tensor(WEIGHT).is_some()
}

fn bad(why: impl Into<String>) -> ModelError {
    ModelError::Intent(why.into())
}

impl IntentHead {
    /// A head from its parts, checked: at least two distinct, non-empty labels, and weights
    /// and biases of the right lengths holding finite values.
    pub fn new(
        labels: Vec<String>,
        dim: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<IntentHead, ModelError> {
        let n = labels.len();
        if n < 2 {
            return Err(bad(format!("a classifier needs at least 2 labels, this one has {n}")));
        }
        if n > MAX_LABELS {
            return Err(bad(format!("{n} labels is more than the {MAX_LABELS} allowed")));
        }
        if let Some(l) = labels.iter().find(|l| l.trim().is_empty()) {
            return Err(bad(format!("label {l:?} is empty")));
        }
        let mut sorted: Vec<&str> = labels.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!("label '{}' appears twice", w[0])));
        }
        if dim == 0 || weight.len() != n * dim || bias.len() != n {
            return Err(bad(format!(
                "head of {} weights and {} biases does not fit {n} labels × {dim} inputs",
                weight.len(),
                bias.len()
            )));
        }
        if weight.iter().chain(&bias).any(|v| !v.is_finite()) {
            return Err(bad("the head holds NaN or infinite values"));
        }
        Ok(IntentHead { labels, dim, weight, bias })
    }

    /// The head stored in `f`, for an encoder whose embeddings have `dim` values. A file
    /// without the version key and labels is an error naming what is missing.
    pub fn from_gguf(f: &GgufFile, dim: usize) -> Result<IntentHead, ModelError> {
        match f.get(KEY_VERSION).map(|v| v.as_u64()) {
            None => {
                return Err(bad(format!(
                "no '{KEY_VERSION}' key: this is not an intent model (make one with `edgellm intent train`)"
            )))
            }
            Some(Some(v)) if v == VERSION as u64 => {}
            Some(v) => {
                return Err(bad(format!("'{KEY_VERSION}' is {v:?}; this edgellm reads version {VERSION}")))
            }
        }
        let labels: Vec<String> = match f.get(KEY_LABELS) {
            None => return Err(bad(format!("no '{KEY_LABELS}' key: the file has no label names"))),
            Some(_) => f.get_str_array(KEY_LABELS)?.into_iter().map(str::to_string).collect(),
        };
        let n = labels.len();
        let t = f.need_tensor(WEIGHT)?;
        crate::linear::check_shape(t, &[dim as u64, n as u64])?;
        let weight = edgellm_core::quant::dequantize(t.dtype, f.tensor_data(t), n * dim)?;
        let bias = crate::linear::gguf_vector(f, BIAS, n)?;
        IntentHead::new(labels, dim, weight, bias)
    }

    /// Number of labels.
    pub fn n_labels(&self) -> usize {
        self.labels.len()
    }

    /// The logits of one embedding (`dim` values).
    pub fn logits(&self, embedding: &[f32]) -> Vec<f32> {
        debug_assert_eq!(embedding.len(), self.dim);
        self.weight
            .chunks_exact(self.dim)
            .zip(&self.bias)
            .map(|(row, b)| b + row.iter().zip(embedding).map(|(w, x)| w * x).sum::<f32>())
            .collect()
    }

    /// The probabilities (softmax of the logits) of one embedding.
    pub fn probabilities(&self, embedding: &[f32]) -> Vec<f32> {
        softmax(&self.logits(embedding))
    }

    /// Add the head to a GGUF writer: its two tensors (F32) and metadata keys, replacing any
    /// head already there.
    pub fn write_into(&self, w: &mut GgufWriter<'_>) -> Result<(), ModelError> {
        w.tensors.retain(|t| t.name != WEIGHT && t.name != BIAS);
        w.set(KEY_VERSION, Value::U32(VERSION));
        w.set(
            KEY_LABELS,
            Value::Array(ValueType::String, self.labels.iter().map(|l| Value::String(l.clone())).collect()),
        );
        let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        w.add_tensor(
            WEIGHT,
            &[self.dim as u64, self.n_labels() as u64],
            edgellm_core::DType::F32,
            f32_bytes(&self.weight),
        )?;
        w.add_tensor(BIAS, &[self.n_labels() as u64], edgellm_core::DType::F32, f32_bytes(&self.bias))?;
        Ok(())
    }
}

/// The softmax of `x` (max-subtracted).
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> IntentHead {
        IntentHead::new(
            vec!["a".into(), "b".into(), "c".into()],
            2,
            vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0],
            vec![0.0, 0.5, 0.0],
        )
        .unwrap()
    }

    #[test]
    fn logits_are_rows_times_input_plus_bias() {
        let h = head();
        assert_eq!(h.logits(&[2.0, 3.0]), vec![2.0, 3.5, -5.0]);
        let p = h.probabilities(&[2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[0] && p[0] > p[2]);
    }

    #[test]
    fn bad_heads_are_refused() {
        let w = vec![0.0; 4];
        assert!(IntentHead::new(vec!["a".into()], 4, w.clone(), vec![0.0]).is_err());
        assert!(IntentHead::new(vec!["a".into(), "a".into()], 2, w.clone(), vec![0.0; 2]).is_err());
        assert!(IntentHead::new(vec!["a".into(), " ".into()], 2, w.clone(), vec![0.0; 2]).is_err());
        assert!(IntentHead::new(vec!["a".into(), "b".into()], 3, w.clone(), vec![0.0; 2]).is_err());
        assert!(IntentHead::new(vec!["a".into(), "b".into()], 2, vec![f32::NAN; 4], vec![0.0; 2]).is_err());
    }

    #[test]
    fn head_round_trips_through_gguf() {
        let h = head();
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String("bert".into()));
        h.write_into(&mut w).unwrap();
        h.write_into(&mut w).unwrap(); // replaces, does not duplicate
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let f = GgufFile::from_vec(bytes).unwrap();
        assert!(has_intent_head(&f));
        assert_eq!(IntentHead::from_gguf(&f, 2).unwrap(), h);
        let err = IntentHead::from_gguf(&f, 3).unwrap_err().to_string();
        assert!(err.contains("intent.head.weight"), "{err}");
    }

    #[test]
    fn a_file_without_labels_is_refused() {
        let mut w = GgufWriter::new();
        w.set(KEY_VERSION, Value::U32(VERSION));
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let f = GgufFile::from_vec(bytes).unwrap();
        let err = IntentHead::from_gguf(&f, 2).unwrap_err().to_string();
        assert!(err.contains("label names"), "{err}");
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String("bert".into()));
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let f = GgufFile::from_vec(bytes).unwrap();
        assert!(!has_intent_head(&f));
        let err = IntentHead::from_gguf(&f, 2).unwrap_err().to_string();
        assert!(err.contains("not an intent model"), "{err}");
    }
}
