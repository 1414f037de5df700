//! Files written for every scheme read back with identical bytes per tensor, keep the source's
//! metadata and order, and a mix's tensor types follow its stated rules.

mod common;

use std::collections::HashMap;

use common::llama_like;
use edgellm_compress::plan::Reason;
use edgellm_compress::{
    quantize_model, CompressError, Importance, KeepRule, Method, ModelSource, QuantizeOptions, Scheme,
};
use edgellm_core::DType;
use edgellm_formats::{GgufFile, Value};

fn run(
    src: &ModelSource,
    scheme: Scheme,
    method: Method,
    keeps: &[KeepRule],
    imp: Option<&Importance>,
) -> GgufFile {
    let opts = QuantizeOptions { scheme: Some(scheme), keeps, method, importance: imp, ..Default::default() };
    let q = quantize_model(src, &opts, &mut |_, _, _| {}).unwrap();
    let mut bytes = Vec::new();
    q.writer.write_to(&mut bytes).unwrap();
    let f = GgufFile::from_vec(bytes).unwrap();
    // Every tensor reads back exactly as the writer held it, with the planned type.
    assert_eq!(f.tensors.len(), q.writer.tensors.len());
    for ((t, w), r) in f.tensors.iter().zip(&q.writer.tensors).zip(&q.report) {
        assert_eq!((&t.name, &t.dims, t.dtype), (&w.name, &w.dims, w.dtype));
        assert_eq!(t.dtype, r.to, "{}", t.name);
        assert_eq!(f.tensor_data(t), &w.data[..], "{scheme} {method}: bytes of {}", t.name);
        assert_eq!(t.offset % f.alignment, 0);
    }
    f
}

fn types(f: &GgufFile) -> HashMap<String, DType> {
    f.tensors.iter().map(|t| (t.name.clone(), t.dtype)).collect()
}

#[test]
fn every_scheme_writes_a_file_that_reads_back_identically() {
    let w = llama_like(256, 512, 4, 64);
    let src = ModelSource::from_writer(w).unwrap();
    for scheme in Scheme::ALL {
        for method in [Method::Rtn, Method::Weighted] {
            let f = run(&src, scheme, method, &[], None);
            assert_eq!(f.get("general.file_type"), Some(&Value::U32(scheme.file_type())));
            assert_eq!(f.get("general.name").and_then(|v| v.as_str()), Some("synthetic"));
            let names: Vec<_> = f.tensors.iter().map(|t| t.name.as_str()).collect();
            let want: Vec<_> = src.tensors.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, want, "tensor order");
            let ty = types(&f);
            assert_eq!(ty["blk.0.attn_norm.weight"], DType::F32, "vectors stay F32");
            if scheme.base_type().is_quantized() {
                assert_eq!(ty["blk.1.attn_q.weight"], scheme.base_type(), "{scheme}");
            }
            // The written file is itself a valid source: dequantize it back to F32.
            let back = ModelSource::from_gguf(&f);
            let f32 = run(&back, Scheme::F32, Method::Rtn, &[], None);
            assert!(f32.tensors.iter().all(|t| t.dtype == DType::F32));
        }
    }
}

#[test]
fn q4_k_m_rules_and_fallbacks() {
    use DType::*;
    // Width 256: k-quants fit. "More bits" layers of 8: 0, 3, 6, 7.
    let src = ModelSource::from_writer(llama_like(256, 512, 8, 64)).unwrap();
    let ty = types(&run(&src, Scheme::Q4_K_M, Method::Rtn, &[], None));
    assert_eq!(ty["token_embd.weight"], Q6_K, "tied embedding = output");
    for i in 0..8 {
        let more = [0, 3, 6, 7].contains(&i);
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        assert_eq!(ty[&n("attn_v")], if more { Q6_K } else { Q4_K }, "attn_v {i}");
        assert_eq!(ty[&n("ffn_down")], if more { Q6_K } else { Q4_K }, "ffn_down {i}");
        for s in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
            assert_eq!(ty[&n(s)], Q4_K, "{s} {i}");
        }
    }
    // Width 288 (like SmolLM2's 576, not a multiple of 256): llama.cpp's fallbacks.
    let src = ModelSource::from_writer(llama_like(288, 512, 8, 64)).unwrap();
    let ty = types(&run(&src, Scheme::Q4_K_M, Method::Rtn, &[], None));
    assert_eq!(ty["token_embd.weight"], Q8_0);
    for i in 0..8 {
        let more = [0, 3, 6, 7].contains(&i);
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        assert_eq!(ty[&n("attn_v")], if more { Q8_0 } else { Q5_0 });
        assert_eq!(ty[&n("ffn_down")], if more { Q6_K } else { Q4_K }, "rows of 512 fit");
        assert_eq!(ty[&n("attn_q")], Q5_0);
    }
}

#[test]
fn other_mix_rules() {
    use DType::*;
    let src = ModelSource::from_writer(llama_like(256, 512, 16, 64)).unwrap();
    let ty = types(&run(&src, Scheme::Q3_K_M, Method::Rtn, &[], None));
    for i in 0..16 {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        assert_eq!(ty[&n("attn_v")], if i < 2 { Q5_K } else { Q4_K });
        assert_eq!(ty[&n("ffn_down")], if i < 1 { Q5_K } else { Q4_K });
        assert_eq!(ty[&n("attn_output")], Q4_K);
        assert_eq!(ty[&n("ffn_up")], Q3_K);
    }
    let ty = types(&run(&src, Scheme::Q4_K_S, Method::Rtn, &[], None));
    for i in 0..16 {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        assert_eq!(ty[&n("attn_v")], if i < 4 { Q5_K } else { Q4_K });
        assert_eq!(ty[&n("ffn_down")], if i < 2 { Q5_K } else { Q4_K });
    }
    let ty = types(&run(&src, Scheme::Q2_K, Method::Rtn, &[], None));
    assert_eq!(ty["blk.5.attn_v.weight"], Q4_K, "4 query heads per KV head");
    assert_eq!(ty["blk.5.ffn_down.weight"], Q3_K);
    assert_eq!(ty["blk.5.attn_output.weight"], Q3_K);
    assert_eq!(ty["blk.5.ffn_gate.weight"], Q2_K);
    // Q4_0: the _1 type on the first eighth's ffn_down only when an imatrix is given.
    let plain = types(&run(&src, Scheme::Q4_0, Method::Rtn, &[], None));
    assert_eq!(plain["blk.0.ffn_down.weight"], Q4_0);
    let imp = Importance::default();
    let with = types(&run(&src, Scheme::Q4_0, Method::Weighted, &[], Some(&imp)));
    assert_eq!((with["blk.1.ffn_down.weight"], with["blk.2.ffn_down.weight"]), (Q4_1, Q4_0));
}

#[test]
fn keep_overrides_and_errors() {
    let src = ModelSource::from_writer(llama_like(256, 512, 2, 64)).unwrap();
    let keeps = [
        KeepRule::parse("blk.*.attn_q.weight=Q8_0").unwrap(),
        KeepRule::parse("token_embd.weight=F16").unwrap(),
    ];
    let opts = QuantizeOptions { scheme: Some(Scheme::Q4_0), keeps: &keeps, ..Default::default() };
    let q = quantize_model(&src, &opts, &mut |_, _, _| {}).unwrap();
    let r: HashMap<_, _> = q.report.iter().map(|r| (r.name.as_str(), r)).collect();
    assert_eq!(r["blk.1.attn_q.weight"].to, DType::Q8_0);
    assert!(matches!(r["blk.1.attn_q.weight"].reason, Reason::Keep(_)));
    assert_eq!(r["token_embd.weight"].to, DType::F16);
    assert_eq!(r["blk.1.attn_k.weight"].to, DType::Q4_0);
    let keeps = [KeepRule::parse("blk.*.attn_qq.weight=Q8_0").unwrap()];
    let opts = QuantizeOptions { scheme: Some(Scheme::Q4_0), keeps: &keeps, ..Default::default() };
    assert!(matches!(
        quantize_model(&src, &opts, &mut |_, _, _| {}),
        Err(CompressError::KeepMatchedNothing(_))
    ));
    // GPTQ without statistics is a typed error, not a panic.
    let opts = QuantizeOptions { scheme: Some(Scheme::Q4_0), method: Method::Gptq, ..Default::default() };
    assert!(matches!(
        quantize_model(&src, &opts, &mut |_, _, _| {}),
        Err(CompressError::NeedsCalibration { .. })
    ));
}

#[test]
fn imatrix_of_the_wrong_model_is_refused() {
    let src = ModelSource::from_writer(llama_like(256, 512, 2, 64)).unwrap();
    let mut imp = Importance::default();
    imp.entries.insert("blk.0.attn_q.weight".into(), vec![1.0; 100]);
    let opts = QuantizeOptions {
        scheme: Some(Scheme::Q4_0),
        method: Method::Weighted,
        importance: Some(&imp),
        ..Default::default()
    };
    assert!(matches!(
        quantize_model(&src, &opts, &mut |_, _, _| {}),
        Err(CompressError::ImatrixMismatch { .. })
    ));
}
