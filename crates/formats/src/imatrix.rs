//! Importance-matrix files, as llama.cpp's `llama-imatrix` writes and `llama-quantize` reads.
//!
//! An importance matrix holds, for every weight matrix, the sum over calibration tokens of the
//! square of each input channel (`Σ_t x_tj²`) and the number of tokens summed. Two layouts:
//!
//! - GGUF (llama.cpp's default since 2025): metadata `general.type = "imatrix"`,
//!   `imatrix.datasets` (array of strings), `imatrix.chunk_count` and `imatrix.chunk_size`
//!   (u32); per weight `NAME`, an F32 tensor `NAME.in_sum2` of dims `[n_in, n_mat]` (the sums)
//!   and an F32 tensor `NAME.counts` of dims `[1, n_mat]` (tokens per matrix; `n_mat` is 1 but
//!   for stacked experts). Tensors sorted by name.
//! - legacy `.dat`: `i32` entry count; per entry `i32` name length, the name, `i32` call count
//!   `ncall`, `i32` value count, then the values as f32 — the *mean* square times `ncall`; then,
//!   optionally, `i32` chunk count, `i32` dataset-name length and the name.
//!
//! [`Imatrix::read`] takes either; [`Imatrix::write_gguf`] writes the GGUF layout.

use std::collections::BTreeMap;
use std::path::Path;

use edgellm_core::DType;

use crate::gguf::{GgufError, GgufFile, GgufWriter, Value, ValueType};

/// One weight's statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImatrixEntry {
    /// `Σ_t x_tj²` per input channel `j` (`n_in × n_mat` values, matrix-major).
    pub sums: Vec<f32>,
    /// Tokens summed, per matrix.
    pub counts: Vec<f32>,
}

impl ImatrixEntry {
    /// The mean square per input channel (sums / counts); channels of a matrix that saw no
    /// token get 1, as llama.cpp does.
    pub fn mean_squares(&self) -> Vec<f32> {
        let n_mat = self.counts.len().max(1);
        let n_in = self.sums.len() / n_mat;
        let mut out = vec![1.0f32; self.sums.len()];
        for (m, &c) in self.counts.iter().enumerate() {
            if c > 0.0 {
                for j in 0..n_in {
                    out[m * n_in + j] = self.sums[m * n_in + j] / c;
                }
            }
        }
        out
    }
}

/// An importance matrix.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    /// Calibration files it was computed from.
    pub datasets: Vec<String>,
    /// Chunks processed.
    pub chunk_count: u32,
    /// Tokens per chunk.
    pub chunk_size: u32,
    /// Weight name → statistics.
    pub entries: BTreeMap<String, ImatrixEntry>,
}

/// Why an imatrix file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A GGUF imatrix whose tensors are not as llama.cpp writes them.
    #[error("{path}: not an importance matrix: {why}")]
    Bad {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// GGUF reading or writing failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

const SUMS: &str = ".in_sum2";
const COUNTS: &str = ".counts";

impl Imatrix {
    /// Reads a GGUF or legacy `.dat` importance matrix.
    pub fn read(path: impl AsRef<Path>) -> Result<Imatrix, ImatrixError> {
        let path = path.as_ref();
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ImatrixError::Io { path: p.clone(), source })?;
        Self::from_bytes(bytes, &p)
    }

    /// Parses the bytes of a GGUF or legacy `.dat` importance matrix; `name` (the file's path)
    /// is what errors name.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Imatrix, ImatrixError> {
        if bytes.starts_with(b"GGUF") {
            Self::from_gguf(&GgufFile::from_vec(bytes)?, name)
        } else {
            Self::from_legacy(&bytes, name)
        }
    }

    fn from_gguf(f: &GgufFile, p: &str) -> Result<Imatrix, ImatrixError> {
        let bad = |why: String| ImatrixError::Bad { path: p.to_string(), why };
        let mut m = Imatrix {
            datasets: f
                .get("imatrix.datasets")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            chunk_count: f.get("imatrix.chunk_count").and_then(|v| v.as_u64()).unwrap_or(0) as u32,
            chunk_size: f.get("imatrix.chunk_size").and_then(|v| v.as_u64()).unwrap_or(0) as u32,
            entries: BTreeMap::new(),
        };
        let floats = |name: &str| -> Result<Vec<f32>, ImatrixError> {
            let t = f.need_tensor(name)?;
            if t.dtype != DType::F32 {
                return Err(bad(format!("{name} is {}, not F32", t.dtype)));
            }
            Ok(f.tensor_data(t)
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        for t in &f.tensors {
            let Some(name) = t.name.strip_suffix(SUMS) else { continue };
            let sums = floats(&t.name)?;
            let counts = floats(&format!("{name}{COUNTS}"))
                .map_err(|_| bad(format!("{name} has sums but no {name}{COUNTS}")))?;
            if counts.is_empty() || sums.len() % counts.len() != 0 {
                return Err(bad(format!("{name}: {} sums for {} matrices", sums.len(), counts.len())));
            }
            m.entries.insert(name.to_string(), ImatrixEntry { sums, counts });
        }
        if m.entries.is_empty() {
            return Err(bad("no *.in_sum2 tensors".into()));
        }
        Ok(m)
    }

    fn from_legacy(b: &[u8], p: &str) -> Result<Imatrix, ImatrixError> {
        let bad =
            |why: &str| ImatrixError::Bad { path: p.to_string(), why: format!("legacy .dat layout: {why}") };
        let mut pos = 0usize;
        let i32_at = |pos: &mut usize| -> Option<i32> {
            let v = b.get(*pos..*pos + 4)?;
            *pos += 4;
            Some(i32::from_le_bytes([v[0], v[1], v[2], v[3]]))
        };
        let n = i32_at(&mut pos).filter(|&n| n > 0).ok_or_else(|| bad("no entry count"))?;
        let mut m = Imatrix::default();
        for _ in 0..n {
            let len = i32_at(&mut pos).filter(|&l| l > 0).ok_or_else(|| bad("bad name length"))? as usize;
            let name = b.get(pos..pos + len).ok_or_else(|| bad("truncated name"))?;
            let name = String::from_utf8_lossy(name).into_owned();
            pos += len;
            let ncall = i32_at(&mut pos).ok_or_else(|| bad("truncated"))?;
            let nval = i32_at(&mut pos).filter(|&v| v > 0).ok_or_else(|| bad("bad value count"))? as usize;
            let raw = b.get(pos..pos + 4 * nval).ok_or_else(|| bad("truncated values"))?;
            pos += 4 * nval;
            // Stored: mean square × ncall, so sums / counts is the mean square with counts = ncall.
            let sums = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            m.entries.insert(name, ImatrixEntry { sums, counts: vec![ncall as f32] });
        }
        if let Some(c) = i32_at(&mut pos) {
            m.chunk_count = c.max(0) as u32;
            if let Some(len) = i32_at(&mut pos).filter(|&l| l > 0) {
                if let Some(s) = b.get(pos..pos + len as usize) {
                    m.datasets.push(String::from_utf8_lossy(s).into_owned());
                }
            }
        }
        Ok(m)
    }

    /// The GGUF file llama.cpp writes for this matrix.
    pub fn to_gguf(&self) -> Result<GgufWriter<'static>, ImatrixError> {
        let mut w = GgufWriter::new();
        w.set("general.type", Value::String("imatrix".into()));
        w.set(
            "imatrix.datasets",
            Value::Array(ValueType::String, self.datasets.iter().map(|s| Value::String(s.clone())).collect()),
        );
        w.set("imatrix.chunk_count", Value::U32(self.chunk_count));
        w.set("imatrix.chunk_size", Value::U32(self.chunk_size));
        let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for (name, e) in &self.entries {
            let n_mat = e.counts.len().max(1) as u64;
            w.add_tensor(
                &format!("{name}{SUMS}"),
                &[e.sums.len() as u64 / n_mat, n_mat],
                DType::F32,
                le(&e.sums),
            )?;
            w.add_tensor(&format!("{name}{COUNTS}"), &[1, n_mat], DType::F32, le(&e.counts))?;
        }
        Ok(w)
    }

    /// Writes the GGUF layout to `path`.
    pub fn write_gguf(&self, path: impl AsRef<Path>) -> Result<(), ImatrixError> {
        Ok(self.to_gguf()?.write_file(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Imatrix {
        let mut m = Imatrix {
            datasets: vec!["wiki.valid.tokens".into()],
            chunk_count: 3,
            chunk_size: 512,
            ..Default::default()
        };
        m.entries.insert(
            "blk.0.attn_q.weight".into(),
            ImatrixEntry { sums: vec![1.0, 4.0, 9.0, 0.0], counts: vec![2.0] },
        );
        m.entries
            .insert("blk.0.ffn_down.weight".into(), ImatrixEntry { sums: vec![3.0; 6], counts: vec![3.0] });
        m
    }

    #[test]
    fn gguf_round_trip() {
        let m = sample();
        let mut bytes = Vec::new();
        m.to_gguf().unwrap().write_to(&mut bytes).unwrap();
        let back = Imatrix::from_gguf(&GgufFile::from_vec(bytes).unwrap(), "mem").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.entries["blk.0.attn_q.weight"].mean_squares(), vec![0.5, 2.0, 4.5, 0.0]);
    }

    #[test]
    fn legacy_layout_reads() {
        let mut b = Vec::new();
        b.extend(1i32.to_le_bytes());
        let name = b"blk.0.attn_k.weight";
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name);
        b.extend(10i32.to_le_bytes());
        b.extend(2i32.to_le_bytes());
        b.extend(20.0f32.to_le_bytes());
        b.extend(5.0f32.to_le_bytes());
        b.extend(7i32.to_le_bytes());
        b.extend(3i32.to_le_bytes());
        b.extend(b"abc");
        let m = Imatrix::from_legacy(&b, "mem").unwrap();
        assert_eq!(m.entries["blk.0.attn_k.weight"].mean_squares(), vec![2.0, 0.5]);
        assert_eq!((m.chunk_count, m.datasets.clone()), (7, vec!["abc".to_string()]));
        assert!(Imatrix::from_legacy(&b[..10], "mem").is_err());
    }
}
