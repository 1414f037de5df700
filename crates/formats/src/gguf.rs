//! GGUF v3: reader (memory-mapped, fully validated) and writer.
//!
//! Layout (little-endian): magic `GGUF`, version `u32`, tensor count `u64`, metadata count `u64`,
//! the metadata key/value pairs, the tensor-info records (name, dims with `ne[0]` first, type id,
//! offset relative to the data section), zero padding to `general.alignment` (default 32), then
//! the tensor data, each tensor starting at an aligned offset.
//!
//! The writer lays a file out the same way (each tensor's data padded to the alignment), so
//! reading a file written by llama.cpp or the `gguf` Python package and writing it back
//! reproduces it byte for byte.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use edgellm_core::DType;

use crate::mmap::{special_file, Bytes, SpecialFile};

/// `GGUF` read as a little-endian `u32`.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of tensor data when the file does not set `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a GGML tensor can have.
pub const MAX_DIMS: usize = 4;

/// An error reading or writing a GGUF file. Offsets are byte positions in the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The path names a directory, a pipe or a device instead of a file.
    #[error("{path} is {kind}, not a GGUF file: pass the path of a .gguf model file")]
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// What it is.
        kind: SpecialFile,
    },
    /// Writing failed.
    #[error("writing GGUF: {0}")]
    Write(#[from] io::Error),
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: the magic is {found:?}, expected \"GGUF\"")]
    BadMagic {
        /// The first bytes found (at most 4).
        found: String,
    },
    /// A GGUF version this reader does not handle.
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    /// The file ends before a field it declares.
    #[error(
        "file is truncated: reading {what} at offset {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// Where.
        offset: u64,
        /// Bytes needed.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A string's declared length runs past the end of the file.
    #[error("string at offset {offset} declares {len} bytes but only {available} remain in the file (corrupt metadata)")]
    StringTooLong {
        /// Where the string's length field is.
        offset: u64,
        /// The declared length.
        len: u64,
        /// Bytes left.
        available: u64,
    },
    /// A string is not valid UTF-8.
    #[error("string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Where the string starts.
        offset: u64,
    },
    /// A metadata value type id that GGUF does not define.
    #[error("unknown metadata value type {type_id} for key '{key}' at offset {offset}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type id found.
        type_id: u32,
        /// Where.
        offset: u64,
    },
    /// An array declares more elements than the file could hold.
    #[error(
        "array for key '{key}' declares {count} elements, more than the {available} bytes left could hold"
    )]
    ArrayTooLong {
        /// The key.
        key: String,
        /// The declared count.
        count: u64,
        /// Bytes left.
        available: u64,
    },
    /// Arrays nested deeper than any real file uses.
    #[error("arrays nested too deeply for key '{0}'")]
    NestingTooDeep(String),
    /// The same metadata key appears twice.
    #[error("duplicate metadata key '{0}'")]
    DuplicateKey(String),
    /// The header declares more tensors or keys than the file could hold.
    #[error("header declares {count} {what}, more than the file could hold")]
    CountTooLarge {
        /// "tensors" or "metadata entries".
        what: &'static str,
        /// The declared count.
        count: u64,
    },
    /// A tensor type id that GGML does not define.
    #[error("tensor '{tensor}' has unknown type id {type_id}")]
    UnknownTensorType {
        /// The tensor.
        tensor: String,
        /// The id found.
        type_id: u32,
    },
    /// Dimensions that cannot be right: too many, zero-sized rows, or an element count that overflows.
    #[error("tensor '{tensor}' has invalid dimensions {dims:?}: {why}")]
    BadDims {
        /// The tensor.
        tensor: String,
        /// The dimensions as read (ne[0] first).
        dims: Vec<u64>,
        /// What is wrong.
        why: String,
    },
    /// The same tensor name appears twice.
    #[error("duplicate tensor name '{0}'")]
    DuplicateTensor(String),
    /// `general.alignment` is not a power of two.
    #[error("general.alignment = {0} is not a non-zero power of two")]
    BadAlignment(u64),
    /// A tensor's offset is not a multiple of the alignment.
    #[error("tensor '{tensor}' offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// The tensor.
        tensor: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's data extends past the end of the file.
    #[error("tensor '{tensor}' data [{start}, {end}) lies past the end of the file ({file_len} bytes): the file is truncated or corrupt")]
    TensorDataOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Absolute start.
        start: u64,
        /// Absolute end.
        end: u64,
        /// File size.
        file_len: u64,
    },
    /// Two tensors' data overlap.
    #[error("tensors '{a}' and '{b}' overlap in the data section")]
    OverlappingTensors {
        /// One tensor.
        a: String,
        /// The other.
        b: String,
    },
    /// A required metadata key is missing.
    #[error("metadata key '{0}' is missing")]
    MissingKey(String),
    /// A metadata key has a type other than the one asked for.
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The type found.
        found: String,
        /// The type expected.
        expected: &'static str,
    },
    /// A tensor the caller asked for is not in the file.
    #[error("tensor '{0}' is not in the file")]
    MissingTensor(String),
    /// Tensor data given to the writer has the wrong size.
    #[error("tensor '{tensor}': {got} bytes of data given, {dtype} {dims:?} needs {want}")]
    WrongDataSize {
        /// The tensor.
        tensor: String,
        /// Its type.
        dtype: DType,
        /// Its dimensions.
        dims: Vec<u64>,
        /// Bytes given.
        got: usize,
        /// Bytes needed.
        want: u64,
    },
}

/// Metadata value type ids.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Smallest encoded size of one value of this type (used to bound array counts).
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// An array: its element type (kept for empty arrays) and the elements.
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// This value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as an integer, for any integer type (and bool); `None` for others or when negative
    /// values do not fit.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            Value::Bool(v) => Some(v as u64),
            _ => None,
        }
    }

    /// The value as a signed integer, for any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            Value::U8(v) => Some(v as i64),
            Value::U16(v) => Some(v as i64),
            Value::U32(v) => Some(v as i64),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, for float and integer types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of an array value.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, v) => Some(v),
            _ => None,
        }
    }

    fn type_name(&self) -> String {
        match self {
            Value::Array(t, v) => format!("array<{t:?}>[{}]", v.len()),
            other => format!("{:?}", other.value_type()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(t, v) => {
                write!(f, "[")?;
                for (i, x) in v.iter().take(6).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{x}")?;
                }
                if v.len() > 6 {
                    write!(f, ", ... ({} {:?} in all)", v.len(), t)?;
                }
                write!(f, "]")
            }
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
        }
    }
}

/// One tensor-info record.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Dimensions, `ne[0]` (the contiguous row length) first.
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (`ne[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of all dims but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// A parsed GGUF file: metadata, tensor infos, and the (memory-mapped) bytes.
pub struct GgufFile {
    bytes: Bytes,
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Alignment of the data section.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// Arrays deeper than this are refused (real files use at most 2 levels).
const MAX_NESTING: usize = 8;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if (n as u64) > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n as u64,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos as u64;
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(GgufError::StringTooLong { offset: at, len, available: self.remaining() });
        }
        let start = self.pos as u64;
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 { offset: start })
    }

    fn value(&mut self, key: &str, t: ValueType, depth: usize) -> Result<Value, GgufError> {
        let w = key;
        Ok(match t {
            ValueType::U8 => Value::U8(self.array::<1>(w)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(w)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(w)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(w)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(w)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(w)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(w)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(w)?[0] != 0),
            ValueType::String => Value::String(self.string(w)?),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(w)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(w)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(w)?)),
            ValueType::Array => {
                if depth >= MAX_NESTING {
                    return Err(GgufError::NestingTooDeep(key.to_string()));
                }
                let at = self.pos as u64;
                let tid = self.u32(w)?;
                let et = ValueType::from_id(tid).ok_or_else(|| GgufError::UnknownValueType {
                    key: key.to_string(),
                    type_id: tid,
                    offset: at,
                })?;
                let count = self.u64(w)?;
                if count.saturating_mul(et.min_size()) > self.remaining() {
                    return Err(GgufError::ArrayTooLong {
                        key: key.to_string(),
                        count,
                        available: self.remaining(),
                    });
                }
                let mut v = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    v.push(self.value(key, et, depth + 1)?);
                }
                Value::Array(et, v)
            }
        })
    }
}

/// The element count of `dims`, refusing a product that overflows: also the product of the
/// non-zero dimensions, so that with a zero dimension (no elements) the row count
/// ([`TensorInfo::n_rows`]) still fits.
fn element_count(dims: &[u64]) -> Result<u64, String> {
    let mut n: u64 = 1;
    let mut nonzero: u64 = 1;
    for &d in dims {
        n = n.checked_mul(d).ok_or("the element count overflows")?;
        nonzero = nonzero.checked_mul(d.max(1)).ok_or("the product of the dimensions overflows")?;
    }
    Ok(n)
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

impl GgufFile {
    /// Memory-map and parse the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        if let Some(kind) = special_file(path) {
            return Err(GgufError::NotAFile { path: path.to_path_buf(), kind });
        }
        let bytes = Bytes::map(path).map_err(|source| GgufError::Io { path: path.to_path_buf(), source })?;
        GgufFile::from_bytes(bytes)
    }

    /// Parse a GGUF file held in memory.
    pub fn from_vec(v: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(Bytes::from_vec(v))
    }

    /// Parse GGUF bytes, validating every size and offset against the buffer.
    pub fn from_bytes(bytes: Bytes) -> Result<GgufFile, GgufError> {
        let buf = bytes.as_slice();
        let file_len = buf.len() as u64;
        let mut r = Reader { buf, pos: 0 };
        if buf.len() < 4 || buf[..4] != GGUF_MAGIC {
            let n = buf.len().min(4);
            return Err(GgufError::BadMagic { found: String::from_utf8_lossy(&buf[..n]).into_owned() });
        }
        r.pos = 4;
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // A key/value needs at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least 8+4+8+4+8.
        if n_kv.saturating_mul(13) > r.remaining() {
            return Err(GgufError::CountTooLarge { what: "metadata entries", count: n_kv });
        }
        if n_tensors.saturating_mul(32) > r.remaining() {
            return Err(GgufError::CountTooLarge { what: "tensors", count: n_tensors });
        }

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let at = r.pos as u64;
            let tid = r.u32("metadata value type")?;
            let t = ValueType::from_id(tid).ok_or_else(|| GgufError::UnknownValueType {
                key: key.clone(),
                type_id: tid,
                offset: at,
            })?;
            let v = r.value(&key, t, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, v));
        }

        let alignment = match metadata.get(index.get("general.alignment").copied().unwrap_or(usize::MAX)) {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => {
                let a = v.as_u64().ok_or_else(|| GgufError::WrongType {
                    key: "general.alignment".into(),
                    found: v.type_name(),
                    expected: "unsigned integer",
                })?;
                if a == 0 || !a.is_power_of_two() {
                    return Err(GgufError::BadAlignment(a));
                }
                a
            }
        };

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32("tensor dimension count")? as usize;
            if n_dims > MAX_DIMS {
                return Err(GgufError::BadDims {
                    tensor: name,
                    dims: vec![],
                    why: format!("{n_dims} dimensions, at most {MAX_DIMS} are allowed"),
                });
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64("tensor dimension")?);
            }
            let tid = r.u32("tensor type")?;
            let dtype = DType::from_id(tid)
                .ok_or_else(|| GgufError::UnknownTensorType { tensor: name.clone(), type_id: tid })?;
            let offset = r.u64("tensor offset")?;
            let bad = |why: String| GgufError::BadDims { tensor: name.clone(), dims: dims.clone(), why };
            let n = element_count(&dims).map_err(bad)?;
            if n > file_len.saturating_mul(8) {
                return Err(bad(format!("{n} elements cannot fit in a {file_len}-byte file")));
            }
            let row = dims.first().copied().unwrap_or(1);
            if row % dtype.block_size() as u64 != 0 {
                return Err(bad(format!(
                    "row length {row} is not a multiple of the {dtype} block size {}",
                    dtype.block_size()
                )));
            }
            let size = dtype.bytes_for(n).ok_or_else(|| bad("size overflows".into()))?;
            if offset % alignment != 0 {
                return Err(GgufError::MisalignedTensor { tensor: name, offset, alignment });
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor(name));
            }
            tensors.push(TensorInfo { name, dims, dtype, offset, size });
        }

        let data_offset = align_up(r.pos as u64, alignment);
        for t in &tensors {
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.size));
            match (start, end) {
                (Some(_), Some(e)) if e <= file_len => {}
                _ => {
                    return Err(GgufError::TensorDataOutOfBounds {
                        tensor: t.name.clone(),
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        file_len,
                    })
                }
            }
        }
        // No two tensors may share bytes.
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            if a.size > 0 && b.size > 0 && a.offset + a.size > b.offset {
                return Err(GgufError::OverlappingTensors { a: a.name.clone(), b: b.name.clone() });
            }
        }

        Ok(GgufFile { bytes, version, metadata, index, tensors, tensor_index, alignment, data_offset })
    }

    /// Size of the whole file in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the tensor data is memory-mapped from the file.
    pub fn is_mapped(&self) -> bool {
        self.bytes.is_mapped()
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn need(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// A required unsigned integer (any integer width).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.need(key)?;
        v.as_u64().ok_or_else(|| GgufError::WrongType {
            key: key.into(),
            found: v.type_name(),
            expected: "unsigned integer",
        })
    }

    /// A required float (f32, f64 or integer).
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.need(key)?;
        v.as_f64().ok_or_else(|| GgufError::WrongType {
            key: key.into(),
            found: v.type_name(),
            expected: "number",
        })
    }

    /// A required string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.need(key)?;
        v.as_str().ok_or_else(|| GgufError::WrongType {
            key: key.into(),
            found: v.type_name(),
            expected: "string",
        })
    }

    /// A required bool.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.need(key)?;
        v.as_bool().ok_or_else(|| GgufError::WrongType {
            key: key.into(),
            found: v.type_name(),
            expected: "bool",
        })
    }

    /// A required array.
    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        let v = self.need(key)?;
        v.as_array().ok_or_else(|| GgufError::WrongType {
            key: key.into(),
            found: v.type_name(),
            expected: "array",
        })
    }

    /// A required array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        self.get_array(key)?
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| GgufError::WrongType {
                    key: key.into(),
                    found: v.type_name(),
                    expected: "array of strings",
                })
            })
            .collect()
    }

    /// The model architecture (`general.architecture`).
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    /// A tensor's info.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's info, or [`GgufError::MissingTensor`].
    pub fn need_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor(name.to_string()))
    }

    /// The raw bytes of a tensor (bounds were checked when the file was parsed).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let s = (self.data_offset + t.offset) as usize;
        &self.bytes[s..s + t.size as usize]
    }

    /// A clone of the file's bytes handle (cheap; keeps the map alive).
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// A writer holding this file's metadata and tensors (data borrowed from the map).
    pub fn to_writer(&self) -> GgufWriter<'_> {
        let mut w = GgufWriter::new();
        w.version = self.version;
        for (k, v) in &self.metadata {
            w.metadata.push((k.clone(), v.clone()));
        }
        for t in &self.tensors {
            w.tensors.push(WriterTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                dtype: t.dtype,
                data: std::borrow::Cow::Borrowed(self.tensor_data(t)),
            });
        }
        w
    }
}

/// A tensor to be written.
pub struct WriterTensor<'a> {
    /// Name.
    pub name: String,
    /// Dimensions, `ne[0]` first.
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Data (exactly the size the type and dims need).
    pub data: std::borrow::Cow<'a, [u8]>,
}

/// Builds a GGUF file: metadata in insertion order, tensors laid out in insertion order, each
/// aligned to `general.alignment` (default 32) and padded with zeros.
pub struct GgufWriter<'a> {
    /// GGUF version written (3 by default).
    pub version: u32,
    /// Metadata in the order it will be written.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in the order they will be written.
    pub tensors: Vec<WriterTensor<'a>>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty GGUF v3 file.
    pub fn new() -> Self {
        GgufWriter { version: 3, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// Set a metadata value (replacing an existing key in place).
    pub fn set(&mut self, key: &str, value: Value) {
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key.to_string(), value));
        }
    }

    /// Add a tensor; its data size is checked against its type and dims.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        dtype: DType,
        data: impl Into<std::borrow::Cow<'a, [u8]>>,
    ) -> Result<(), GgufError> {
        let data = data.into();
        let bad = |why: String| GgufError::BadDims { tensor: name.into(), dims: dims.to_vec(), why };
        if dims.len() > MAX_DIMS {
            return Err(bad(format!("{} dimensions, at most {MAX_DIMS} are allowed", dims.len())));
        }
        let n = element_count(dims).map_err(bad)?;
        // As the reader requires: whole blocks in every row, not only in the whole tensor.
        let row = dims.first().copied().unwrap_or(1);
        if row % dtype.block_size() as u64 != 0 {
            return Err(bad(format!(
                "row length {row} is not a multiple of the {dtype} block size {}",
                dtype.block_size()
            )));
        }
        let want = dtype.bytes_for(n).ok_or_else(|| bad(format!("not a whole number of {dtype} blocks")))?;
        if data.len() as u64 != want {
            return Err(GgufError::WrongDataSize {
                tensor: name.into(),
                dtype,
                dims: dims.to_vec(),
                got: data.len(),
                want,
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor(name.into()));
        }
        self.tensors.push(WriterTensor { name: name.into(), dims: dims.to_vec(), dtype, data });
        Ok(())
    }

    fn alignment(&self) -> Result<u64, GgufError> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => Ok(a),
                Some(a) => Err(GgufError::BadAlignment(a)),
                None => Err(GgufError::WrongType {
                    key: "general.alignment".into(),
                    found: v.type_name(),
                    expected: "unsigned integer",
                }),
            },
        }
    }

    /// Write the file to `w`.
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), GgufError> {
        let alignment = self.alignment()?;
        let mut w = CountingWriter { inner: w, n: 0 };
        w.write_all(&GGUF_MAGIC)?;
        w.write_all(&self.version.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (k, v) in &self.metadata {
            write_string(&mut w, k)?;
            w.write_all(&(v.value_type() as u32).to_le_bytes())?;
            write_value(&mut w, v)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&t.dtype.id().to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            offset = align_up(offset + t.data.len() as u64, alignment);
        }
        pad(&mut w, alignment)?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            pad(&mut w, alignment)?;
        }
        w.flush()?;
        Ok(())
    }

    /// Write the file to `path` atomically (a temporary file renamed into place).
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let tmp = path.with_extension("gguf.tmp");
        let io_err = |source| GgufError::Io { path: path.to_path_buf(), source };
        let f = std::fs::File::create(&tmp).map_err(io_err)?;
        let mut bw = io::BufWriter::with_capacity(1 << 20, f);
        let res = self.write_to(&mut bw).and_then(|_| {
            bw.into_inner().map_err(|e| GgufError::Write(e.into_error()))?.sync_all()?;
            Ok(())
        });
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(io_err)
    }
}

struct CountingWriter<'w, W: Write> {
    inner: &'w mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut CountingWriter<'_, W>, alignment: u64) -> io::Result<()> {
    let k = align_up(w.n, alignment) - w.n;
    w.write_all(&vec![0u8; k as usize])
}

fn write_string(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[*x as u8]),
        Value::String(s) => write_string(w, s),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Array(t, items) => {
            w.write_all(&(*t as u32).to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            for it in items {
                if it.value_type() != *t {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("array of {t:?} holds a {:?}", it.value_type()),
                    ));
                }
                if let Value::Array(..) = it {
                    // Nested arrays carry their own element type and count.
                }
                write_value(w, it)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String("llama".into()));
        w.set("llama.block_count", Value::U32(2));
        w.set(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, vec![Value::String("a".into()), Value::String("é".into())]),
        );
        w.set(
            "nested",
            Value::Array(ValueType::Array, vec![Value::Array(ValueType::I32, vec![Value::I32(-1)])]),
        );
        w.set("f", Value::F64(1.5));
        w.add_tensor("w", &[32, 2], DType::Q8_0, vec![1u8; 68]).unwrap();
        w.add_tensor("b", &[3], DType::F32, vec![2u8; 12]).unwrap();
        let mut out = Vec::new();
        w.write_to(&mut out).unwrap();
        out
    }

    #[test]
    fn write_read_write_is_identity() {
        let bytes = sample();
        let f = GgufFile::from_vec(bytes.clone()).unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.get_u64("llama.block_count").unwrap(), 2);
        assert_eq!(f.get_str_array("tokenizer.ggml.tokens").unwrap(), vec!["a", "é"]);
        assert_eq!(f.tensors.len(), 2);
        assert_eq!(f.tensor("b").unwrap().offset, 96);
        assert_eq!(f.tensor_data(f.tensor("b").unwrap()), &[2u8; 12]);
        let mut again = Vec::new();
        f.to_writer().write_to(&mut again).unwrap();
        assert_eq!(again, bytes);
    }

    #[test]
    fn wrong_types_and_missing_keys_are_errors() {
        let f = GgufFile::from_vec(sample()).unwrap();
        assert!(matches!(f.get_str("llama.block_count"), Err(GgufError::WrongType { .. })));
        assert!(matches!(f.get_u64("nope"), Err(GgufError::MissingKey(_))));
        assert!(matches!(f.need_tensor("nope"), Err(GgufError::MissingTensor(_))));
    }

    #[test]
    fn writer_checks_data_size() {
        let mut w = GgufWriter::new();
        assert!(matches!(
            w.add_tensor("x", &[32], DType::Q4_0, vec![0u8; 17]),
            Err(GgufError::WrongDataSize { .. })
        ));
        assert!(matches!(
            w.add_tensor("x", &[31], DType::Q4_0, vec![0u8; 18]),
            Err(GgufError::BadDims { .. })
        ));
    }
}
