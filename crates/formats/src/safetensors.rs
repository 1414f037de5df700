//! safetensors files (through the `safetensors` crate), memory-mapped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edgellm_core::DType;
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

use crate::mmap::{special_file, Bytes, SpecialFile};

/// An error reading a safetensors file.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The file could not be opened.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path names a directory, a pipe or a device instead of a file.
    #[error("{path} is {kind}, not a safetensors file: pass the path of a .safetensors file, or the model directory that holds one where a directory is accepted")]
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// What it is.
        kind: SpecialFile,
    },
    /// The header is malformed, or offsets do not fit the file.
    #[error("invalid safetensors file: {0}")]
    Invalid(String),
    /// A tensor the caller asked for is not in the file.
    #[error("tensor '{0}' is not in the safetensors file")]
    MissingTensor(String),
    /// A tensor of a type edgellm does not read.
    #[error(
        "tensor '{tensor}' has type {dtype}, which edgellm does not read (F32, F16 and BF16 are supported)"
    )]
    UnsupportedType {
        /// The tensor.
        tensor: String,
        /// Its type as the file names it.
        dtype: String,
    },
}

/// One tensor of a safetensors file.
#[derive(Clone, Debug)]
pub struct SafeTensorInfo {
    /// Name.
    pub name: String,
    /// Shape in the file's (row-major, PyTorch) order: the last dimension is contiguous.
    pub shape: Vec<usize>,
    /// Element type as edgellm knows it, or `None` for types it does not read.
    pub dtype: Option<DType>,
    /// Element type as the file names it.
    pub dtype_name: String,
    /// Absolute byte range in the file.
    pub range: (usize, usize),
}

/// A memory-mapped safetensors file with its header parsed and validated.
pub struct SafetensorsFile {
    bytes: Bytes,
    tensors: Vec<SafeTensorInfo>,
    index: HashMap<String, usize>,
    /// The `__metadata__` map of the header.
    pub metadata: HashMap<String, String>,
}

fn map_dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

impl SafetensorsFile {
    /// Map and parse the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile, SafetensorsError> {
        let path = path.as_ref();
        if let Some(kind) = special_file(path) {
            return Err(SafetensorsError::NotAFile { path: path.to_path_buf(), kind });
        }
        let bytes =
            Bytes::map(path).map_err(|source| SafetensorsError::Io { path: path.to_path_buf(), source })?;
        SafetensorsFile::from_bytes(bytes)
    }

    /// Parse safetensors bytes.
    pub fn from_bytes(bytes: Bytes) -> Result<SafetensorsFile, SafetensorsError> {
        // Full validation (offsets contiguous and inside the buffer) by the safetensors crate.
        SafeTensors::deserialize(&bytes).map_err(|e| SafetensorsError::Invalid(e.to_string()))?;
        let (header_len, meta): (usize, Metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|e| SafetensorsError::Invalid(e.to_string()))?;
        let base = 8 + header_len;
        let mut tensors: Vec<SafeTensorInfo> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| SafeTensorInfo {
                name: name.clone(),
                shape: info.shape.clone(),
                dtype: map_dtype(info.dtype),
                dtype_name: format!("{:?}", info.dtype),
                range: (base + info.data_offsets.0, base + info.data_offsets.1),
            })
            .collect();
        tensors.sort_by_key(|t| t.range.0);
        let index = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(SafetensorsFile { bytes, tensors, index, metadata })
    }

    /// All tensors, in file order.
    pub fn tensors(&self) -> &[SafeTensorInfo] {
        &self.tensors
    }

    /// A tensor's info.
    pub fn tensor(&self, name: &str) -> Result<&SafeTensorInfo, SafetensorsError> {
        self.index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| SafetensorsError::MissingTensor(name.into()))
    }

    /// A tensor's raw bytes.
    pub fn tensor_data(&self, t: &SafeTensorInfo) -> &[u8] {
        &self.bytes[t.range.0..t.range.1]
    }

    /// A tensor converted to f32 (from F32, F16 or BF16), with its shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), SafetensorsError> {
        let t = self.tensor(name)?;
        let data = self.tensor_data(t);
        let v: Vec<f32> = match t.dtype {
            Some(DType::F32) => {
                data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            Some(DType::F16) => {
                data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            Some(DType::BF16) => {
                data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            _ => {
                return Err(SafetensorsError::UnsupportedType {
                    tensor: name.into(),
                    dtype: t.dtype_name.clone(),
                })
            }
        };
        Ok((v, t.shape.clone()))
    }
}
