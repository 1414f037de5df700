//! Where weights come from: a model as a list of named tensors plus metadata.
//!
//! [`ModelSource`] is deliberately plain — metadata key/values and tensors (name, GGUF dims,
//! element type, bytes) in file order — so any reader can feed the quantizer: a GGUF file of any
//! supported type ([`ModelSource::from_gguf`]), or a converter that builds GGUF tensors in
//! memory, e.g. safetensors → GGUF for BERT encoders ([`ModelSource::from_writer`] takes the
//! [`GgufWriter`] such a converter fills). Quantized tensors are dequantized to f32 on demand.

use std::borrow::Cow;

use edgellm_core::quant::dequantize;
use edgellm_core::DType;
use edgellm_formats::{GgufFile, GgufWriter, Value};

use crate::plan::{ModelFacts, Role, TensorShape};
use crate::CompressError;

/// One tensor of a source model.
#[derive(Clone, Debug)]
pub struct SourceTensor<'a> {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// GGUF dims, `ne[0]` (the row length) first.
    pub dims: Vec<u64>,
    /// Element type of `data`.
    pub dtype: DType,
    /// The data, exactly `dtype.bytes_for(n_elements)` bytes.
    pub data: Cow<'a, [u8]>,
}

impl SourceTensor<'_> {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (`ne[0]`).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }

    /// The values as f32 (dequantized when quantized).
    pub fn to_f32(&self) -> Result<Vec<f32>, CompressError> {
        dequantize(self.dtype, &self.data, self.n_elements() as usize)
            .map_err(|source| CompressError::Quant { tensor: self.name.clone(), source })
    }

    /// The planner's view.
    pub fn shape(&self) -> TensorShape<'_> {
        TensorShape { name: &self.name, dims: &self.dims, dtype: self.dtype }
    }
}

/// A model to compress: metadata and tensors, in the order they will be written.
#[derive(Clone, Debug, Default)]
pub struct ModelSource<'a> {
    /// Metadata key/values, in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensors, in file order.
    pub tensors: Vec<SourceTensor<'a>>,
}

impl<'a> ModelSource<'a> {
    /// A GGUF file's metadata and tensors (data borrowed from its map).
    pub fn from_gguf(f: &'a GgufFile) -> ModelSource<'a> {
        ModelSource {
            metadata: f.metadata.clone(),
            tensors: f
                .tensors
                .iter()
                .map(|t| SourceTensor {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    dtype: t.dtype,
                    data: Cow::Borrowed(f.tensor_data(t)),
                })
                .collect(),
        }
    }

    /// The metadata and tensors of a GGUF file built in memory (e.g. by a safetensors → GGUF
    /// converter), checking each tensor's data size.
    pub fn from_writer(w: GgufWriter<'a>) -> Result<ModelSource<'a>, CompressError> {
        let tensors = w
            .tensors
            .into_iter()
            .map(|t| SourceTensor { name: t.name, dims: t.dims, dtype: t.dtype, data: t.data })
            .collect::<Vec<_>>();
        let src = ModelSource { metadata: w.metadata, tensors };
        src.validate()?;
        Ok(src)
    }

    /// Checks every tensor's data length against its type and dims.
    pub fn validate(&self) -> Result<(), CompressError> {
        for t in &self.tensors {
            let want = t.dtype.bytes_for(t.n_elements()).ok_or_else(|| CompressError::BadTensor {
                tensor: t.name.clone(),
                why: format!("{:?} is not a whole number of {} blocks", t.dims, t.dtype),
            })?;
            if t.data.len() as u64 != want {
                return Err(CompressError::BadTensor {
                    tensor: t.name.clone(),
                    why: format!("{} bytes of data, {} {:?} needs {want}", t.data.len(), t.dtype, t.dims),
                });
            }
        }
        Ok(())
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The facts the mix rules need, from `{arch}.*` metadata (or counted from tensor names).
    pub fn facts(&self) -> ModelFacts {
        let arch = self.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("");
        let num = |k: &str| self.get(&format!("{arch}.{k}")).and_then(|v| v.as_u64()).map(|v| v as usize);
        let n_layer = num("block_count")
            .unwrap_or_else(|| self.tensors.iter().filter(|t| Role::of(&t.name) == Role::FfnDown).count());
        let n_head = num("attention.head_count").unwrap_or(1).max(1);
        let n_head_kv = num("attention.head_count_kv").unwrap_or(n_head).max(1);
        ModelFacts { n_layer, n_gqa: n_head / n_head_kv }
    }

    /// A writer of this model (metadata and tensors, data borrowed).
    pub fn to_writer(&self) -> Result<GgufWriter<'_>, CompressError> {
        let mut w = GgufWriter::new();
        w.metadata = self.metadata.clone();
        for t in &self.tensors {
            w.add_tensor(&t.name, &t.dims, t.dtype, Cow::Borrowed(&*t.data))?;
        }
        Ok(w)
    }

    /// This model as an in-memory GGUF file (to load and run it, e.g. for calibration).
    pub fn to_file(&self) -> Result<GgufFile, CompressError> {
        let mut bytes = Vec::new();
        self.to_writer()?.write_to(&mut bytes)?;
        Ok(GgufFile::from_vec(bytes)?)
    }

    /// Total bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.data.len() as u64).sum()
    }
}

/// Whether a model path is a sentence-transformers directory (or its `.safetensors` file).
pub fn is_safetensors(p: &std::path::Path) -> bool {
    p.is_dir() || p.extension().is_some_and(|e| e == "safetensors")
}

/// A model opened for compression: a GGUF file, or a sentence-transformers directory
/// converted to llama.cpp's `bert` GGUF layout with F32 tensors.
pub enum OpenedModel {
    /// A GGUF file (mapped).
    Gguf(GgufFile),
    /// A converted encoder.
    Converted(ModelSource<'static>),
}

impl OpenedModel {
    /// Opens `input` (GGUF, or a safetensors directory / `model.safetensors`).
    pub fn open(input: &std::path::Path) -> Result<OpenedModel, CompressError> {
        if !input.exists() {
            return Err(CompressError::BadPrune(format!("model {} does not exist", input.display())));
        }
        if is_safetensors(input) {
            let dir = if input.is_dir() {
                input.to_path_buf()
            } else {
                input.parent().unwrap_or(std::path::Path::new(".")).to_path_buf()
            };
            let convert = |e: edgellm_models::ModelError| CompressError::BadTensor {
                tensor: format!("(converting {} to GGUF)", dir.display()),
                why: e.to_string(),
            };
            let export = edgellm_models::bert::gguf_export(&dir).map_err(convert)?;
            Ok(OpenedModel::Converted(ModelSource::from_writer(export.to_writer_f32().map_err(convert)?)?))
        } else {
            Ok(OpenedModel::Gguf(GgufFile::open(input)?))
        }
    }

    /// The GGUF file, when the input was one.
    pub fn gguf(&self) -> Option<&GgufFile> {
        match self {
            OpenedModel::Gguf(f) => Some(f),
            OpenedModel::Converted(_) => None,
        }
    }

    /// The model's metadata and tensors.
    pub fn source(&self) -> ModelSource<'_> {
        match self {
            OpenedModel::Gguf(f) => ModelSource::from_gguf(f),
            OpenedModel::Converted(s) => s.clone(),
        }
    }
}
