//! Semantic textual similarity on the STS Benchmark (Cer et al., 2017): embed both sentences
//! of every pair, and report the Spearman correlation (× 100) between their cosine similarity
//! and the human score, as sentence-transformers' `EmbeddingSimilarityEvaluator` does.

use std::path::{Path, PathBuf};
use std::time::Instant;

use edgellm_runtime::embed::{cosine, EmbedError, Embedder};
use edgellm_runtime::memory::peak_rss_bytes;
use serde::Serialize;

use crate::stats::{pearson, spearman};

/// An error loading STS data or evaluating on it.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// The data file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of the data file is malformed.
    #[error("{path}:{line}: {message}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The data file holds no pairs.
    #[error("{0}: no sentence pairs")]
    Empty(PathBuf),
    /// Embedding failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// One scored sentence pair.
#[derive(Clone, Debug, PartialEq)]
pub struct StsPair {
    /// Gold similarity (0–5 in the STS Benchmark).
    pub score: f64,
    /// First sentence.
    pub sentence1: String,
    /// Second sentence.
    pub sentence2: String,
}

/// Read STS pairs from a tab-separated file: either `score, sentence1, sentence2` (with an
/// optional header line), or the original STS Benchmark layout `genre, file, year, id, score,
/// sentence1, sentence2[, license fields...]`.
pub fn load(path: impl AsRef<Path>) -> Result<Vec<StsPair>, StsError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| StsError::Io { path: path.into(), source })?;
    parse(&bytes, path)
}

/// Parse the bytes of an STS file (see [`load`]); `path` names it in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Vec<StsPair>, StsError> {
    let bad = |line: usize, message: String| StsError::BadLine { path: path.into(), line, message };
    let mut pairs = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        let line = std::str::from_utf8(raw).map_err(|_| bad(line_no, "not valid UTF-8".into()))?;
        let f: Vec<&str> = line.split('\t').collect();
        let (score, s1, s2) = match f.len() {
            3 => (f[0], f[1], f[2]),
            n if n >= 7 => (f[4], f[5], f[6]),
            n => {
                return Err(bad(
                    line_no,
                    format!("{n} tab-separated fields; expected score, sentence1, sentence2 (3) or the STS Benchmark's 7+"),
                ))
            }
        };
        let score = match score.trim().parse::<f64>() {
            Ok(s) if s.is_finite() => s,
            // A header line.
            _ if pairs.is_empty() && i == 0 => continue,
            _ => return Err(bad(line_no, format!("score '{score}' is not a number"))),
        };
        pairs.push(StsPair { score, sentence1: s1.to_string(), sentence2: s2.to_string() });
    }
    if pairs.is_empty() {
        return Err(StsError::Empty(path.into()));
    }
    Ok(pairs)
}

/// Result of an STS evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StsReport {
    /// Spearman correlation × 100 of cosine similarity with the gold scores.
    pub spearman: f64,
    /// Pearson correlation × 100 of the same.
    pub pearson: f64,
    /// Number of pairs.
    pub pairs: usize,
    /// Number of sentences embedded (two per pair).
    pub sentences: usize,
    /// Seconds spent tokenizing and embedding.
    pub seconds: f64,
    /// Sentences embedded per second.
    pub sentences_per_s: f64,
    /// Peak resident memory of the process, where the system reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// Embed every sentence of `pairs` (batches of `batch_size`, 0 for the default) and correlate
/// the cosine similarities with the gold scores.
pub fn evaluate(embedder: &Embedder, pairs: &[StsPair], batch_size: usize) -> Result<StsReport, StsError> {
    let texts: Vec<&str> = pairs
        .iter()
        .map(|p| p.sentence1.as_str())
        .chain(pairs.iter().map(|p| p.sentence2.as_str()))
        .collect();
    let start = Instant::now();
    let emb = embedder.embed_batch(&texts, batch_size)?;
    let seconds = start.elapsed().as_secs_f64();
    let n = pairs.len();
    let cos: Vec<f64> = (0..n).map(|i| cosine(&emb[i], &emb[n + i]) as f64).collect();
    let gold: Vec<f64> = pairs.iter().map(|p| p.score).collect();
    Ok(StsReport {
        spearman: 100.0 * spearman(&cos, &gold),
        pearson: 100.0 * pearson(&cos, &gold),
        pairs: n,
        sentences: texts.len(),
        seconds,
        sentences_per_s: texts.len() as f64 / seconds.max(1e-9),
        peak_rss_bytes: peak_rss_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_layouts_and_skips_a_header() {
        let p = Path::new("x.tsv");
        let tsv = b"score\tsentence1\tsentence2\n2.500\tA girl.\tA girl is here.\r\n\n5\tB\tC\n";
        let pairs = parse(tsv, p).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            pairs[0],
            StsPair { score: 2.5, sentence1: "A girl.".into(), sentence2: "A girl is here.".into() }
        );
        let orig = b"main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl.\tA boy.\tlicense\textra\n";
        assert_eq!(parse(orig, p).unwrap()[0].sentence2, "A boy.");
    }

    #[test]
    fn bad_files_name_the_line() {
        let p = Path::new("x.tsv");
        let e = parse(b"1\ta\tb\nfive\ta\tb\n", p).unwrap_err();
        assert_eq!(e.to_string(), "x.tsv:2: score 'five' is not a number");
        let e = parse(b"1\ta\tb\n1\ta\n", p).unwrap_err();
        assert!(e.to_string().starts_with("x.tsv:2: 2 tab-separated fields"), "{e}");
        assert!(matches!(parse(b"", p), Err(StsError::Empty(_))));
        assert!(matches!(parse(b"score\ts1\ts2\n", p), Err(StsError::Empty(_))));
        assert!(parse(b"1\t\xff\tb\n", p).unwrap_err().to_string().contains(":1: not valid UTF-8"));
    }
}
