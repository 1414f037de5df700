//! The quant formats against independent references (tests/golden/dequant/golden.json, made by
//! scripts/golden/make_dequant_golden.py from gguf-py and ggml's C reference quantizers).
//!
//! Criteria: dequantized values must be bit-identical (0 ulp) to the reference — both sides
//! do the same f32 operations in the same order, so any difference is a bug. Quantized bytes
//! must be identical.

use edgellm_core::quant::{dequantize, quantize};
use edgellm_core::tolerance::assert_ulps;
use edgellm_core::DType;
use serde_json::Value;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/golden/dequant/golden.json");

fn golden() -> Value {
    let text = std::fs::read_to_string(GOLDEN).unwrap_or_else(|e| panic!("read {GOLDEN}: {e}"));
    serde_json::from_str(&text).expect("golden.json parses")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

fn unhex_f32(s: &str) -> Vec<f32> {
    unhex(s).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn cases<'a>(g: &'a Value, section: &str) -> &'a Vec<Value> {
    g[section].as_array().unwrap_or_else(|| panic!("golden.json has no {section} array"))
}

fn dtype_of(case: &Value) -> DType {
    let name = case["type"].as_str().expect("type");
    DType::from_name(name).unwrap_or_else(|| panic!("unknown type {name}"))
}

const ALL: [DType; 14] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::Q8_K,
];

#[test]
fn golden_covers_every_type() {
    let g = golden();
    for section in ["dequant", "quantize"] {
        for t in ALL {
            assert!(
                cases(&g, section).iter().any(|c| dtype_of(c) == t),
                "golden.json has no {section} case for {t}"
            );
        }
    }
}

#[test]
fn dequantize_matches_golden_bit_exactly() {
    let g = golden();
    for case in cases(&g, "dequant") {
        let t = dtype_of(case);
        let n = case["n"].as_u64().expect("n") as usize;
        let bytes = unhex(case["bytes"].as_str().expect("bytes"));
        let want = unhex_f32(case["want"].as_str().expect("want"));
        assert_eq!(want.len(), n);
        let got = dequantize(t, &bytes, n).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_ulps(&format!("dequant {t} ({})", case["ref"]), &got, &want, 0);
        // NaN patterns (BF16 keeps them) must stay NaN; assert_ulps already treats NaN == NaN.
    }
}

#[test]
fn quantize_matches_golden_bytes() {
    let g = golden();
    for case in cases(&g, "quantize") {
        let t = dtype_of(case);
        let x = unhex_f32(case["input"].as_str().expect("input"));
        assert_eq!(x.len(), case["n"].as_u64().expect("n") as usize);
        let want = unhex(case["want"].as_str().expect("want"));
        let got = quantize(t, &x).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(got.len(), want.len(), "{t}: quantized length");
        let ts = t.type_size();
        let labels: Vec<&str> =
            case["blocks"].as_array().expect("blocks").iter().map(|v| v.as_str().unwrap_or("?")).collect();
        let bad: Vec<usize> =
            (0..got.len() / ts).filter(|&b| got[b * ts..][..ts] != want[b * ts..][..ts]).collect();
        if let Some(&b) = bad.first() {
            // One label per block; the plain float types have a single label for the whole case.
            let label = labels.get(b).or(labels.first()).copied();
            let first_byte = (0..ts).find(|&i| got[b * ts + i] != want[b * ts + i]).unwrap_or(0);
            panic!(
                "quantize {t} ({}): {} of {} blocks differ; first: block {b} ({}), byte {first_byte}: \
                 got {:02x} want {:02x}\n got  {}\n want {}",
                case["ref"],
                bad.len(),
                got.len() / ts,
                label.unwrap_or("?"),
                got[b * ts + first_byte],
                want[b * ts + first_byte],
                hex(&got[b * ts..][..ts]),
                hex(&want[b * ts..][..ts]),
            );
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
