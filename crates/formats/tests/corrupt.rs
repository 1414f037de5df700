//! Corrupt GGUF inputs each give a typed error naming the problem, never a panic.

use edgellm_core::DType;
use edgellm_formats::gguf::{GgufError, GgufFile, GgufWriter, Value};

// Layout of `sample()` (checked by `layout_is_as_documented`):
//   0 magic, 4 version, 8 tensor count, 16 kv count,
//   24 key len, 32 "general.architecture", 52 value type, 56 string len, 64 "llama",
//   69 name len, 77 "w", 78 n_dims, 82 ne0, 90 ne1, 98 type id, 102 offset, 110 end of infos,
//   128 data (68 bytes) + padding to 224.
const STR_LEN: usize = 56;
const NE1: usize = 90;
const TYPE_ID: usize = 98;
const OFFSET: usize = 102;

fn sample() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.add_tensor("w", &[32, 2], DType::Q8_0, vec![7u8; 68]).unwrap();
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn parse(b: Vec<u8>) -> GgufError {
    match GgufFile::from_vec(b) {
        Ok(_) => panic!("corrupt file was accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            e
        }
    }
}

#[test]
fn layout_is_as_documented() {
    let b = sample();
    assert_eq!(&b[64..69], b"llama");
    assert_eq!(b[77], b'w');
    assert_eq!(u32::from_le_bytes(b[TYPE_ID..TYPE_ID + 4].try_into().unwrap()), DType::Q8_0.id());
    assert_eq!(b.len(), 224);
    assert!(GgufFile::from_vec(b).is_ok());
}

#[test]
fn wrong_magic() {
    let mut b = sample();
    b[..4].copy_from_slice(b"GGML");
    let e = parse(b);
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a GGUF file"));
}

#[test]
fn truncated_header() {
    for len in [0, 3, 10, 30, 60, 100] {
        let mut b = sample();
        b.truncate(len);
        let e = parse(b);
        assert!(
            matches!(
                e,
                GgufError::Truncated { .. }
                    | GgufError::BadMagic { .. }
                    | GgufError::StringTooLong { .. }
                    | GgufError::CountTooLarge { .. }
            ),
            "{len}: {e}"
        );
    }
}

#[test]
fn truncated_data() {
    let mut b = sample();
    b.truncate(150);
    let e = parse(b);
    assert!(matches!(e, GgufError::TensorDataOutOfBounds { ref tensor, .. } if tensor == "w"), "{e}");
    assert!(e.to_string().contains("truncated"));
}

#[test]
fn tensor_data_past_the_end() {
    let mut b = sample();
    put_u64(&mut b, OFFSET, 1 << 20);
    let e = parse(b);
    assert!(matches!(e, GgufError::TensorDataOutOfBounds { .. }), "{e}");
    let mut b = sample();
    put_u64(&mut b, OFFSET, u64::MAX - 31);
    assert!(matches!(parse(b), GgufError::TensorDataOutOfBounds { .. }));
}

#[test]
fn misaligned_offset() {
    let mut b = sample();
    put_u64(&mut b, OFFSET, 3);
    assert!(matches!(parse(b), GgufError::MisalignedTensor { .. }));
}

#[test]
fn unknown_tensor_type() {
    let mut b = sample();
    b[TYPE_ID..TYPE_ID + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = parse(b);
    assert!(matches!(e, GgufError::UnknownTensorType { type_id: 99, .. }), "{e}");
    assert!(e.to_string().contains("'w'"));
}

#[test]
fn absurd_dimensions() {
    for ne1 in [u64::MAX, 1 << 40, u64::MAX / 32 + 1] {
        let mut b = sample();
        put_u64(&mut b, NE1, ne1);
        let e = parse(b);
        assert!(matches!(e, GgufError::BadDims { .. } | GgufError::TensorDataOutOfBounds { .. }), "{e}");
    }
    let mut b = sample();
    b[78..82].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(parse(b), GgufError::BadDims { .. }));
}

#[test]
fn metadata_string_longer_than_file() {
    let mut b = sample();
    put_u64(&mut b, STR_LEN, 1 << 40);
    let e = parse(b);
    assert!(matches!(e, GgufError::StringTooLong { len, .. } if len == 1 << 40), "{e}");
}

#[test]
fn absurd_counts() {
    let mut b = sample();
    put_u64(&mut b, 8, u64::MAX);
    assert!(matches!(parse(b), GgufError::CountTooLarge { .. }));
    let mut b = sample();
    put_u64(&mut b, 16, 1 << 50);
    assert!(matches!(parse(b), GgufError::CountTooLarge { .. }));
}

#[test]
fn unknown_value_type() {
    let mut b = sample();
    b[52..56].copy_from_slice(&77u32.to_le_bytes());
    assert!(matches!(parse(b), GgufError::UnknownValueType { type_id: 77, .. }));
}

#[test]
fn every_single_byte_truncation_is_an_error_not_a_panic() {
    let b = sample();
    for len in 0..128 {
        assert!(GgufFile::from_vec(b[..len].to_vec()).is_err(), "prefix of {len} bytes accepted");
    }
}

#[test]
fn missing_file() {
    let e = GgufFile::open("/nonexistent/model.gguf").err().unwrap();
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/model.gguf"));
}

/// Found by fuzzing (tests/corpus/gguf_reader/zero-dim-row-count-overflow): a zero dimension
/// made the element count 0, so huge other dimensions passed and the row count overflowed.
#[test]
fn zero_dimension_with_huge_others_is_refused() {
    let mut w = GgufWriter::new();
    assert!(matches!(
        w.add_tensor("z", &[0, 1 << 40, 1 << 40], DType::Q8_0, Vec::new()),
        Err(GgufError::BadDims { .. })
    ));
    // A file declaring [0, 2^40, 2^40] (written by hand: the writer refuses it) is refused.
    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes());
    f.extend(1u64.to_le_bytes());
    f.extend(0u64.to_le_bytes());
    f.extend(1u64.to_le_bytes());
    f.push(b'z');
    f.extend(3u32.to_le_bytes());
    for d in [0u64, 1 << 40, 1 << 40] {
        f.extend(d.to_le_bytes());
    }
    f.extend(DType::Q8_0.id().to_le_bytes());
    f.extend(0u64.to_le_bytes());
    f.resize(128, 0);
    match parse(f) {
        GgufError::BadDims { tensor, why, .. } => {
            assert!(tensor == "z" && why.contains("overflows"), "{why}")
        }
        e => panic!("{e}"),
    }
}

/// Found by fuzzing (tests/corpus/gguf_structured/writer-row-not-whole-blocks): the writer
/// accepted a Q3_K tensor of rows of 96 (the whole tensor a multiple of 256), which the reader
/// then refused. The writer checks rows as the reader does.
#[test]
fn writer_refuses_rows_that_are_not_whole_blocks() {
    let mut w = GgufWriter::new();
    let data = vec![0u8; DType::Q3_K.bytes_for(96 * 96).unwrap() as usize];
    match w.add_tensor("w", &[96, 96], DType::Q3_K, data) {
        Err(GgufError::BadDims { why, .. }) => assert!(why.contains("row length 96"), "{why}"),
        other => panic!("accepted: {:?}", other.err()),
    }
    let data = vec![0u8; DType::Q3_K.bytes_for(256 * 3).unwrap() as usize];
    w.add_tensor("ok", &[256, 3], DType::Q3_K, data).unwrap();
}
