//! Intent classification data and scores: labelled utterances from a TSV file, and accuracy,
//! macro-F1, per-label precision/recall/F1 and the most confused label pairs of a set of
//! predictions.
//!
//! Macro-F1 is the unweighted mean of the per-label F1 over every label that occurs among the
//! gold labels or the predictions (scikit-learn's `f1_score(average="macro")` on those labels);
//! a label with no predictions has precision 0.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One labelled utterance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntentExample {
    /// The utterance.
    pub text: String,
    /// Its label.
    pub label: String,
}

/// A data file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IntentDataError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not `text<TAB>label`.
    #[error("{path}:{line}: {why}; each line must be `text<TAB>label` (a first line `text<TAB>intent` is a header)")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// No examples.
    #[error("{0} holds no labelled utterances")]
    Empty(PathBuf),
}

/// Read `text<TAB>label` lines (HWU64 / SNIPS TSV as in `data/`): a header line whose label
/// column is `intent` or `label` is skipped, as are blank lines; text and label are trimmed.
pub fn read_intent_tsv(path: &Path) -> Result<Vec<IntentExample>, IntentDataError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| IntentDataError::Io { path: path.into(), source })?;
    parse_intent_tsv(&text, path)
}

/// [`read_intent_tsv`] of text already read (`path` names it in errors).
pub fn parse_intent_tsv(text: &str, path: &Path) -> Result<Vec<IntentExample>, IntentDataError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| IntentDataError::BadLine { path: path.into(), line: i + 1, why: why.into() };
        let (t, l) = line.rsplit_once('\t').ok_or_else(|| bad("no tab"))?;
        let (t, l) = (t.trim(), l.trim());
        if i == 0 && matches!(l, "intent" | "label") {
            continue;
        }
        if t.is_empty() {
            return Err(bad("empty text"));
        }
        if l.is_empty() {
            return Err(bad("empty label"));
        }
        out.push(IntentExample { text: t.to_string(), label: l.to_string() });
    }
    if out.is_empty() {
        return Err(IntentDataError::Empty(path.into()));
    }
    Ok(out)
}

/// The distinct labels of `examples`, sorted.
pub fn label_set(examples: &[IntentExample]) -> Vec<String> {
    let mut v: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
    v.sort();
    v.dedup();
    v
}

/// Precision, recall and F1 of one label.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelStats {
    /// The label.
    pub label: String,
    /// Gold examples of it.
    pub support: usize,
    /// Predictions of it.
    pub predicted: usize,
    /// Correct predictions of it.
    pub correct: usize,
    /// correct / predicted (0 when never predicted).
    pub precision: f64,
    /// correct / support (0 when absent from the gold labels).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
}

/// A gold label and the label predicted instead, with how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confusion {
    /// The right label.
    pub gold: String,
    /// The label predicted.
    pub predicted: String,
    /// Times.
    pub count: usize,
}

/// Scores of a set of predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct IntentScore {
    /// Examples scored.
    pub n: usize,
    /// Correct predictions.
    pub correct: usize,
    /// correct / n.
    pub accuracy: f64,
    /// Mean F1 over [`IntentScore::per_label`].
    pub macro_f1: f64,
    /// Every label among the gold labels and predictions, sorted by name.
    pub per_label: Vec<LabelStats>,
    /// Every (gold, predicted) pair with gold ≠ predicted, most frequent first (ties by
    /// name).
    pub confusions: Vec<Confusion>,
}

/// Score `predicted` against `gold` (same length, one label each).
pub fn score(gold: &[&str], predicted: &[&str]) -> IntentScore {
    assert_eq!(gold.len(), predicted.len(), "one prediction per gold label");
    let mut support: HashMap<&str, usize> = HashMap::new();
    let mut npred: HashMap<&str, usize> = HashMap::new();
    let mut right: HashMap<&str, usize> = HashMap::new();
    let mut pairs: HashMap<(&str, &str), usize> = HashMap::new();
    for (&g, &p) in gold.iter().zip(predicted) {
        *support.entry(g).or_default() += 1;
        *npred.entry(p).or_default() += 1;
        if g == p {
            *right.entry(g).or_default() += 1;
        } else {
            *pairs.entry((g, p)).or_default() += 1;
        }
    }
    let mut labels: Vec<&str> = support.keys().chain(npred.keys()).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_label: Vec<LabelStats> = labels
        .iter()
        .map(|&l| {
            let (s, p, c) = (
                support.get(l).copied().unwrap_or(0),
                npred.get(l).copied().unwrap_or(0),
                right.get(l).copied().unwrap_or(0),
            );
            let (precision, recall) = (ratio(c, p), ratio(c, s));
            let f1 =
                if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
            LabelStats { label: l.to_string(), support: s, predicted: p, correct: c, precision, recall, f1 }
        })
        .collect();
    let correct: usize = right.values().sum();
    let mut confusions: Vec<Confusion> = pairs
        .into_iter()
        .map(|((g, p), count)| Confusion { gold: g.into(), predicted: p.into(), count })
        .collect();
    confusions.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| (&a.gold, &a.predicted).cmp(&(&b.gold, &b.predicted)))
    });
    let macro_f1 = if per_label.is_empty() {
        0.0
    } else {
        per_label.iter().map(|s| s.f1).sum::<f64>() / per_label.len() as f64
    };
    IntentScore {
        n: gold.len(),
        correct,
        accuracy: ratio(correct, gold.len()),
        macro_f1,
        per_label,
        confusions,
    }
}

/// The `q`-quantile (0..=1) of `v` by linear interpolation between order statistics
/// (NumPy's default); `NaN` for an empty slice.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_reads_header_blank_lines_and_refuses_bad_lines() {
        let p = Path::new("x.tsv");
        let ex = parse_intent_tsv(
            "text\tintent\nturn on the light\tiot_hue_lighton\n\n wake me up \t alarm_set \n",
            p,
        )
        .unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1], IntentExample { text: "wake me up".into(), label: "alarm_set".into() });
        assert_eq!(label_set(&ex), vec!["alarm_set".to_string(), "iot_hue_lighton".into()]);
        let e = parse_intent_tsv("text\tintent\nno tab here\n", p).unwrap_err().to_string();
        assert!(e.contains("x.tsv:2") && e.contains("no tab"), "{e}");
        assert!(parse_intent_tsv("a\t\n", p).unwrap_err().to_string().contains("empty label"));
        assert!(matches!(parse_intent_tsv("text\tintent\n", p), Err(IntentDataError::Empty(_))));
    }

    /// A tiny set checked by hand: gold a a a b b c, predicted a a b b c c.
    /// a: support 3, predicted 2, correct 2 → P 1, R 2/3, F1 0.8.
    /// b: support 2, predicted 2, correct 1 → P 1/2, R 1/2, F1 1/2.
    /// c: support 1, predicted 2, correct 1 → P 1/2, R 1, F1 2/3.
    /// accuracy 4/6; macro-F1 (0.8 + 0.5 + 2/3) / 3 = 0.655…
    #[test]
    fn scores_match_a_hand_checked_set() {
        let s = score(&["a", "a", "a", "b", "b", "c"], &["a", "a", "b", "b", "c", "c"]);
        assert_eq!((s.n, s.correct), (6, 4));
        assert!((s.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let f1: Vec<f64> = s.per_label.iter().map(|l| l.f1).collect();
        for (got, want) in f1.iter().zip([0.8, 0.5, 2.0 / 3.0]) {
            assert!((got - want).abs() < 1e-12, "{f1:?}");
        }
        assert!((s.macro_f1 - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(s.confusions.len(), 2);
        assert_eq!((s.confusions[0].gold.as_str(), s.confusions[0].predicted.as_str()), ("a", "b"));
    }

    #[test]
    fn a_label_never_in_gold_counts_with_zero_recall() {
        let s = score(&["a", "a"], &["a", "z"]);
        assert_eq!(s.per_label.len(), 2);
        assert_eq!(s.per_label[1].label, "z");
        assert_eq!(s.per_label[1].f1, 0.0);
        assert!((s.macro_f1 - (2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.99) - 3.97).abs() < 1e-12);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
