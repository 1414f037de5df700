//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/TARGET/`) from the real model
//! files (`scripts/fuzz-seeds`): small GGUF files keeping the shipped models' metadata (arrays
//! cut to a few entries) and a few tensors, raw header prefixes, the MiniLM safetensors header
//! with small tensors, its `config.json`, importance matrices in both layouts, sparse tensors of
//! every sparse type, texts and token ids for the tokenizers, the shipped chat templates, and
//! server request bodies. Every seed is at most a few KB.

use std::fs;
use std::path::{Path, PathBuf};

use edgellm_core::DType;
use edgellm_formats::{GgufFile, GgufWriter, Value};
use edgellm_fuzzing::models_dir;

fn out_dir(target: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    fs::create_dir_all(&d).unwrap();
    d
}

fn put(target: &str, name: &str, data: &[u8]) {
    assert!(data.len() <= 16 * 1024, "seed {target}/{name} is {} bytes: keep seeds small", data.len());
    fs::write(out_dir(target).join(name), data).unwrap();
}

/// A small GGUF file with `path`'s metadata (arrays cut to `keep` entries, strings to 512
/// bytes) and its first tensors cut to one block row each.
fn small_gguf(path: &Path, keep: usize, n_tensors: usize) -> Vec<u8> {
    let f = GgufFile::open(path).unwrap_or_else(|e| panic!("{e}: run scripts/fetch-models first"));
    let mut w = GgufWriter::new();
    let cut = |v: &Value| -> Value {
        match v {
            Value::Array(t, a) => Value::Array(*t, a.iter().take(keep).cloned().collect()),
            Value::String(s) if s.len() > 512 => {
                let mut end = 512;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                Value::String(s[..end].to_string())
            }
            v => v.clone(),
        }
    };
    for (k, v) in &f.metadata {
        w.set(k, cut(v));
    }
    for t in f.tensors.iter().take(n_tensors) {
        let row = t.dtype.block_size() as u64;
        let bytes = t.dtype.bytes_for(row).unwrap() as usize;
        w.add_tensor(&t.name, &[row], t.dtype, f.tensor_data(t)[..bytes].to_vec()).unwrap();
    }
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

fn main() {
    let models = models_dir();
    let smol = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let gemma = models.join("gemma-3-270m-q4_k_m.gguf");
    let minilm = models.join("all-MiniLM-L6-v2");

    // GGUF reader: small valid files from both models, and raw header prefixes.
    for (name, p) in [("smollm2", &smol), ("gemma3", &gemma)] {
        let small = small_gguf(p, 16, 3);
        put("gguf_reader", &format!("{name}-small.gguf"), &small);
        let raw = fs::read(p).unwrap();
        put("gguf_reader", &format!("{name}-head-2k.gguf"), &raw[..2048]);
        put("gguf_structured", &format!("{name}-head-1k.bin"), &raw[..1024]);
        put("imatrix", &format!("{name}-small.gguf"), &small[..small.len().min(4096)]);
    }
    // Structure-aware GGUF: the input is an arbitrary description; a few patterns.
    put("gguf_structured", "zeros.bin", &[0; 256]);
    put("gguf_structured", "counting.bin", &(0..=255u8).collect::<Vec<_>>());
    put("gguf_structured", "ones.bin", &[1; 512]);
    put("gguf_structured", "mixed.bin", &(0..2048u32).map(|i| (i * 37 % 251) as u8).collect::<Vec<_>>());

    // safetensors: MiniLM's header with its first tensors, each cut to 4 values.
    let st = fs::read(minilm.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    let mut small = serde_json::Map::new();
    let mut data = Vec::new();
    for (k, v) in header.as_object().unwrap().iter().take(6) {
        if k == "__metadata__" {
            small.insert(k.clone(), v.clone());
            continue;
        }
        let dtype = v["dtype"].as_str().unwrap();
        let size = if dtype == "I64" { 8 } else { 4 };
        let start = data.len();
        data.extend((0..4 * size).map(|i| i as u8));
        small.insert(
            k.clone(),
            serde_json::json!({"dtype": dtype, "shape": [4], "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&small).unwrap();
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend(&h);
    file.extend(&data);
    put("safetensors_header", "minilm-small.safetensors", &file);
    put("safetensors_header", "minilm-head-2k.safetensors", &st[..2048]);

    // config.json and its siblings.
    for f in ["config.json", "sentence_bert_config.json", "config_sentence_transformers.json"] {
        put("hf_config", f, &fs::read(minilm.join(f)).unwrap());
    }

    // Importance matrices: llama.cpp's legacy .dat layout, and the GGUF one.
    let mut dat = Vec::new();
    dat.extend(2i32.to_le_bytes());
    for (name, n) in [("blk.0.attn_q.weight", 8i32), ("blk.0.ffn_down.weight", 4)] {
        dat.extend((name.len() as i32).to_le_bytes());
        dat.extend(name.as_bytes());
        dat.extend(10i32.to_le_bytes());
        dat.extend(n.to_le_bytes());
        for i in 0..n {
            dat.extend((i as f32 * 0.5).to_le_bytes());
        }
    }
    dat.extend(3i32.to_le_bytes());
    dat.extend(9i32.to_le_bytes());
    dat.extend(b"wiki.test");
    put("imatrix", "legacy.dat", &dat);
    let mut m = edgellm_formats::Imatrix { chunk_count: 3, chunk_size: 512, ..Default::default() };
    m.datasets.push("wiki.test.raw".into());
    m.entries.insert(
        "blk.0.ffn_down.weight".into(),
        edgellm_formats::ImatrixEntry { sums: vec![1.0, 2.0, 3.0, 4.0], counts: vec![512.0] },
    );
    let mut g = Vec::new();
    m.to_gguf().unwrap().write_to(&mut g).unwrap();
    put("imatrix", "small.imatrix.gguf", &g);

    // Sparse tensors: [type, k code, rows, width code] then the data (all-zero codes are valid).
    let types = [DType::Q4_S24, DType::Q4_S48, DType::Q8_S24, DType::Q8_S48, DType::Q8_SB];
    for (ti, t) in types.iter().enumerate() {
        let (kb, rows, cb) = (2u8, 2u8, 1u8); // k = 128, m = 2, c = 32
        let k = 128u64;
        let mut seed = vec![ti as u8, kb, rows, cb];
        let bytes = t.bytes_for(k).unwrap() as usize * rows as usize;
        seed.extend((0..bytes).map(|i| if *t == DType::Q8_SB { [0u8, 1, 0x10][i % 3] } else { 0 }));
        if *t == DType::Q8_SB {
            seed.extend((0..32 * rows as usize).map(|i| i as u8));
        }
        put("sparse_validate", &format!("{}.bin", t.name().to_lowercase()), &seed);
    }

    // Tokenizers: [mode] + text (mode 0: plain, 4: with BOS, 8: special tokens parsed), or
    // [mode 1/2] + little-endian ids.
    let texts: &[&str] = &[
        "Hello, world! How are you today?",
        "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
        "Ünïcödé, 日本語のテキスト, emoji 🦀👩‍👩‍👧 and tabs\t\tand  spaces",
        "<|im_start|>user\nhi<|im_end|>\n<start_of_turn>model\n<bos>",
        "   leading and trailing   \n\n\r\n",
        "1234567890 3.14159 -42 0x1F",
    ];
    for target in ["tokenizer_bpe", "tokenizer_spm"] {
        for (i, t) in texts.iter().enumerate() {
            for mode in [0u8, 12] {
                let mut s = vec![mode];
                s.extend(t.as_bytes());
                put(target, &format!("text-{i}-{mode}"), &s);
            }
        }
        let mut ids = vec![1u8];
        for id in [0u32, 1, 2, 100, 1000, 5000, 20000, 49151, 49152, 262143, u32::MAX] {
            ids.extend(id.to_le_bytes());
        }
        put(target, "ids", &ids);
        // A 4-byte emoji split over byte tokens (ids of <0xF0> etc. in SentencePiece vocabularies).
        let mut bytes = vec![2u8];
        for id in [240u32 + 3, 159 + 3, 166 + 3, 128 + 3] {
            bytes.extend(id.to_le_bytes());
        }
        put(target, "byte-tokens", &bytes);
    }
    for (i, t) in texts.iter().enumerate() {
        for mode in [0u8, 2] {
            let mut s = vec![mode];
            s.extend(t.as_bytes());
            put("tokenizer_wordpiece", &format!("text-{i}-{mode}"), &s);
        }
    }
    let mut ids = vec![1u8];
    for id in [0u32, 101, 102, 7592, 2088, 30521, 30522, 30525] {
        ids.extend(id.to_le_bytes());
    }
    put("tokenizer_wordpiece", "ids", &ids);

    // Chat templates: the shipped ones with a conversation, and a template source as input.
    let conv: &[u8] =
        b"\0\x00Be brief.\0\x01Hi there\0\x02Hello! How can I help?\0\x01Lights on? {{ 7*7 }} {% if %}";
    for t in ["0", "1", "2"] {
        let mut s = t.as_bytes().to_vec();
        s.extend(conv);
        put("chat_template", &format!("builtin-{t}"), &s);
    }
    let smol_tmpl = GgufFile::open(&smol).unwrap().get_str("tokenizer.chat_template").unwrap().to_string();
    let mut s = smol_tmpl.into_bytes();
    s.extend(conv);
    put("chat_template", "smollm2-source", &s);
    put(
        "chat_template",
        "loops",
        b"{% for m in messages %}{{ m.role | upper }}: {{ m.content[:10] }}{% if loop.last %}!{% endif %}{% endfor %}{{ raise_exception('x') if messages|length > 3 }}\0\x01a\0\x02b",
    );

    // Server requests: "Authorization value\nJSON body".
    let bodies: &[&str] = &[
        r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0.7,"top_p":0.9,"seed":1,"stream":true,"stream_options":{"include_usage":false}}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"}]}],"logprobs":true,"top_logprobs":3,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}}"#,
        r#"{"prompt":"Once upon a time","max_tokens":16,"stop":["\n","."],"logprobs":2,"echo":false,"best_of":1,"n":1}"#,
        r#"{"prompt":[[1,2,3],[4]],"max_completion_tokens":-1,"top_k":-5,"presence_penalty":0.5}"#,
        r#"{"input":["a","b"],"encoding_format":"base64","dimensions":384}"#,
        r#"{"content":"hello","add_special":true,"parse_special":true,"with_pieces":true}"#,
        r#"{"tokens":[1,2,-3,4294967296]}"#,
    ];
    for (i, b) in bodies.iter().enumerate() {
        let auth: &[u8] = if i % 2 == 0 { b"Bearer k3y\n" } else { b"Bearer wrong\n" };
        let mut s = auth.to_vec();
        s.extend(b.as_bytes());
        put("server_request", &format!("body-{i}.json"), &s);
    }
    eprintln!("seeds written to {}", out_dir("").display());
}
