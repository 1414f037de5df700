//! End-to-end tests of `edgellm serve` over raw HTTP on a loopback port: answers equal the
//! library's, streams equal whole answers, JSON-schema output validates, embeddings equal
//! `edgellm embed`, and every error is OpenAI's error JSON with the right status.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use common::{embed_cli, minilm, openai_params, request, smollm2, Server};
use edgellm::{Engine, EngineOptions, Message};
use serde_json::{json, Value};

fn chat_body(content: &str, max_tokens: usize, temperature: f32, seed: u64) -> Value {
    json!({
        "model": "any",
        "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": content}],
        "max_tokens": max_tokens, "temperature": temperature, "seed": seed,
    })
}

#[test]
fn chat_and_completions_equal_the_library_and_streams_equal_whole_answers() {
    let m = smollm2();
    let server = Server::start(&["-m", m.to_str().unwrap(), "--parallel", "2"]);
    let engine = Engine::load(&m, EngineOptions::default()).unwrap();
    for (q, temp, seed) in
        [("What is the capital of France?", 0.0, 1), ("Write a haiku about rain.", 0.8, 42)]
    {
        let body = chat_body(q, 32, temp, seed);
        let r = server.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["object"], "chat.completion");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        let messages = [Message::new("system", "You are a helpful assistant."), Message::new("user", q)];
        let solo =
            engine.chat(&messages, &openai_params(32, temp, seed), |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(text, solo.text, "{q}: the server's answer differs from Engine::chat's");
        assert_eq!(v["usage"]["completion_tokens"], solo.ids.len());
        assert_eq!(v["usage"]["prompt_tokens"], engine.chat_prompt(&messages).unwrap().len());
        assert_eq!(v["choices"][0]["finish_reason"], if solo.ids.len() == 32 { "length" } else { "stop" });

        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let s = common::stream(server.addr, "/v1/chat/completions", &sbody);
        assert_eq!(s.text, text, "{q}: streamed text differs from the whole answer");
        assert_eq!(s.events.last().unwrap(), "[DONE]");
        let first: Value = serde_json::from_str(&s.events[0]).unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        let usage: Value = serde_json::from_str(&s.events[s.events.len() - 2]).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], solo.ids.len());
        let end: Value = serde_json::from_str(&s.events[s.events.len() - 3]).unwrap();
        assert_eq!(end["choices"][0]["finish_reason"], v["choices"][0]["finish_reason"]);
    }

    // Legacy completions: a text prompt, and the same prompt as token ids.
    let prompt = "The capital of France is";
    let solo = engine.generate(prompt, &openai_params(16, 0.0, 7), |_| ControlFlow::Continue(())).unwrap();
    let r = server.post("/v1/completions", &json!({"prompt": prompt, "max_tokens": 16, "temperature": 0}));
    assert_eq!(r.json()["choices"][0]["text"], solo.text.as_str());
    let ids = engine.tokenize(prompt, true).unwrap();
    let r = server.post("/v1/completions", &json!({"prompt": ids, "max_tokens": 16, "temperature": 0}));
    assert_eq!(r.json()["choices"][0]["text"], solo.text.as_str());
    let s = common::stream(
        server.addr,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 16, "temperature": 0, "stream": true}),
    );
    assert_eq!(s.text, solo.text);

    // Stop strings end the text before them.
    let r = server.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 16, "temperature": 0, "stop": ["."]}),
    );
    let v = r.json();
    let expect = &solo.text[..solo.text.find('.').expect("the continuation has a full stop")];
    assert_eq!(v["choices"][0]["text"], expect);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn logprobs_are_the_models_and_the_prompt_cache_is_counted() {
    let m = smollm2();
    let server = Server::start(&["-m", m.to_str().unwrap(), "--parallel", "1"]);
    let engine = Engine::load(&m, EngineOptions::default()).unwrap();
    let mut body = chat_body("Name a colour.", 6, 0.0, 1);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(3);
    let v = server.post("/v1/chat/completions", &body).json();
    let messages =
        [Message::new("system", "You are a helpful assistant."), Message::new("user", "Name a colour.")];
    let solo = engine
        .chat(&messages, &openai_params(6, 0.0, 1).with_logprobs(3), |_| ControlFlow::Continue(()))
        .unwrap();
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), solo.logprobs.len());
    for (got, want) in content.iter().zip(&solo.logprobs) {
        assert_eq!(got["token"], want.token.as_str());
        assert_eq!(got["logprob"].as_f64().unwrap() as f32, want.logprob);
        assert_eq!(got["bytes"], json!(want.bytes));
        let top = got["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the generated token is the most likely.
        assert_eq!(top[0]["token"], want.token.as_str());
    }
    // The same system prompt again: its tokens come from the slot's cache.
    let before = server.metric("edgellm_prompt_tokens_cached_total");
    let v = server.post("/v1/chat/completions", &chat_body("Name a fruit.", 4, 0.0, 1)).json();
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached >= 10, "the shared system prompt was not reused: {v}");
    assert_eq!(server.metric("edgellm_prompt_tokens_cached_total") - before, cached as f64);
    let metrics = server.metrics();
    for name in [
        "edgellm_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2",
        "edgellm_time_to_first_token_seconds_count 2",
        "edgellm_slots 1",
        "edgellm_slots_in_use 0",
        "edgellm_queue_depth 0",
        "edgellm_generation_tokens_per_second_count",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

/// Several schemas: an enum, a nested object, an array with bounds, numbers with bounds.
#[test]
fn json_schema_output_parses_and_validates() {
    let m = smollm2();
    let server = Server::start(&["-m", m.to_str().unwrap(), "--parallel", "4"]);
    let cases = [
        (
            "Is the kitchen light on or off? Answer in JSON.",
            json!({"type": "object", "properties": {"state": {"enum": ["on", "off"]}}, "required": ["state"], "additionalProperties": false}),
        ),
        (
            "Describe a person with a name and an address, in JSON.",
            json!({"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 20},
                "address": {"type": "object", "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
                }, "required": ["city", "zip"], "additionalProperties": false}
            }, "required": ["name", "address"], "additionalProperties": false}),
        ),
        (
            "List three fruits in JSON.",
            json!({"type": "object", "properties": {
                "fruits": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 3, "maxItems": 3}
            }, "required": ["fruits"], "additionalProperties": false}),
        ),
        (
            "Set the thermostat. Answer in JSON.",
            json!({"type": "object", "properties": {
                "temperature": {"type": "number", "minimum": 16, "maximum": 28},
                "fan": {"type": "integer", "minimum": 0, "maximum": 3}
            }, "required": ["temperature", "fan"], "additionalProperties": false}),
        ),
    ];
    for (q, schema) in &cases {
        for temp in [0.0, 0.7] {
            let mut body = chat_body(q, 120, temp, 3);
            body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}});
            let v = server.post("/v1/chat/completions", &body).json();
            let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_else(|| panic!("{v}"));
            assert_eq!(v["choices"][0]["finish_reason"], "stop", "{q}: {text}");
            let got: Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{q}: not JSON ({e}): {text}"));
            let validator = jsonschema::validator_for(schema).unwrap();
            assert!(validator.is_valid(&got), "{q}: {got} does not follow {schema}");
        }
    }
    // json_object: any object.
    let mut body = chat_body("Give me a JSON object about cats.", 120, 0.0, 1);
    body["response_format"] = json!({"type": "json_object"});
    let v = server.post("/v1/chat/completions", &body).json();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    if v["choices"][0]["finish_reason"] == "stop" {
        assert!(serde_json::from_str::<Value>(text).unwrap().is_object(), "{text}");
    } else {
        assert!(text.trim_start().starts_with('{'), "{text}");
    }
}

fn floats(v: &Value) -> Vec<Vec<f32>> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect()
}

fn unbase64(s: &str) -> Vec<f32> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 {c}"),
    };
    let mut bytes = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let n = q
            .iter()
            .filter(|&&c| c != b'=')
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (val(c) as u32) << (18 - 6 * i));
        let k = q.iter().filter(|&&c| c != b'=').count() - 1;
        bytes.extend_from_slice(&n.to_be_bytes()[1..1 + k]);
    }
    bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn embeddings_equal_edgellm_embed_alone_or_concurrent() {
    let texts = [
        "Turn on the kitchen lights.",
        "Switch the lights on in the kitchen.",
        "What is the weather tomorrow?",
        "a",
        "Set an alarm for seven in the morning, please.",
    ];
    let want = embed_cli(&texts);
    let server =
        Server::start(&["-m", smollm2().to_str().unwrap(), "--embed-model", minilm().to_str().unwrap()]);
    let v = server.post("/v1/embeddings", &json!({"input": texts, "model": "all-MiniLM-L6-v2"})).json();
    assert_eq!(v["object"], "list");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > texts.len() as u64);
    assert_eq!(floats(&v), want, "the server's embeddings differ from edgellm embed's");
    let b64 = server.post("/v1/embeddings", &json!({"input": texts, "encoding_format": "base64"})).json();
    let decoded: Vec<Vec<f32>> =
        b64["data"].as_array().unwrap().iter().map(|d| unbase64(d["embedding"].as_str().unwrap())).collect();
    assert_eq!(decoded, want);
    // One text per request, eight requests at once: gathered into shared batches, each
    // answer its own text's embedding (within the kernels' batch tolerance: another
    // request's texts may pad the batch).
    let addr = server.addr;
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let t = texts[i % texts.len()].to_string();
            std::thread::spawn(move || {
                let r =
                    request(addr, "POST", "/v1/embeddings", &[], json!({"input": t}).to_string().as_bytes());
                (i % texts.len(), floats(&r.json()).remove(0))
            })
        })
        .collect();
    for h in handles {
        let (i, got) = h.join().unwrap();
        let cos = edgellm::cosine(&got, &want[i]);
        assert!(cos > 0.99999, "text {i}: cosine {cos} to its solo embedding");
    }
    for (body, what) in [
        (json!({"input": []}), "empty input"),
        (json!({"input": [1, 2, 3]}), "token ids"),
        (json!({"input": "x", "encoding_format": "int8"}), "encoding"),
        (json!({"input": "x", "dimensions": 128}), "dimensions"),
        (json!({"text": "x"}), "no input"),
    ] {
        let e = server.post("/v1/embeddings", &body).error(400);
        assert_eq!(e["type"], "invalid_request_error", "{what}: {e}");
    }
    // A server without an encoder says so.
    let solo = Server::start(&["-m", smollm2().to_str().unwrap()]);
    let e = solo.post("/v1/embeddings", &json!({"input": "x"})).error(400);
    assert!(e["message"].as_str().unwrap().contains("--embed-model"), "{e}");
}

#[test]
fn bad_requests_get_openai_errors_with_the_right_status() {
    let server = Server::start(&["-m", smollm2().to_str().unwrap(), "-c", "128"]);
    let raw = |body: &[u8]| request(server.addr, "POST", "/v1/chat/completions", &[], body);
    let e = raw(b"{\"messages\": [").error(400);
    assert!(e["message"].as_str().unwrap().contains("malformed JSON"), "{e}");
    raw(b"").error(400);
    raw(b"[1, 2]").error(400);
    let e = raw(br#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}"#).error(400);
    assert!(e["message"].as_str().unwrap().contains("wrong type"), "{e}");
    raw(br#"{"messages": "hi"}"#).error(400);
    raw(br#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#).error(400);
    let user = |c: &str| json!([{"role": "user", "content": c}]);
    let long = "lights ".repeat(200);
    for (body, param, code) in [
        (json!({"messages": user(&long)}), "messages", Some("context_length_exceeded")),
        (json!({"messages": user("hi"), "max_tokens": 0}), "max_tokens", None),
        (json!({"messages": user("hi"), "max_tokens": -5}), "max_tokens", None),
        (
            json!({"messages": user("hi"), "max_tokens": 100000}),
            "max_tokens",
            Some("context_length_exceeded"),
        ),
        (json!({"messages": user("hi"), "n": 2}), "n", None),
        (json!({"messages": user("hi"), "logprobs": true, "top_logprobs": 21}), "top_logprobs", None),
        (json!({"messages": user("hi"), "top_logprobs": 2}), "top_logprobs", None),
        (json!({"messages": user("hi"), "presence_penalty": 0.5}), "presence_penalty", None),
        (json!({"messages": user("hi"), "response_format": {"type": "xml"}}), "response_format", None),
        (
            json!({"messages": user("hi"), "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "no such type"}}}}),
            "response_format",
            None,
        ),
        (json!({"messages": [], "max_tokens": 4}), "messages", None),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages",
            None,
        ),
    ] {
        let e = server.post("/v1/chat/completions", &body).error(400);
        assert_eq!(e["param"], param, "{body}: {e}");
        if let Some(c) = code {
            assert_eq!(e["code"], c, "{body}: {e}");
        }
    }
    for (body, what) in [
        (json!({"messages": user("hi"), "temperature": -1}), "temperature"),
        (json!({"messages": user("hi"), "top_p": 1.5}), "top_p"),
        (json!({"messages": user("hi"), "stop": [""]}), "stop"),
    ] {
        let e = server.post("/v1/chat/completions", &body).error(400);
        assert!(e["message"].as_str().unwrap().contains(what), "{body}: {e}");
    }
    // Text parts are joined.
    let ok = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 2}),
    );
    assert_eq!(ok.status, 200);
    server.post("/v1/completions", &json!({"prompt": [99999999], "max_tokens": 2})).error(400);
    server.post("/v1/completions", &json!({"prompt": ["a", "b"], "max_tokens": 2})).error(400);
    server.post("/v1/completions", &json!({"prompt": "", "max_tokens": 2})).error(400);
    server.post("/v1/completions", &json!({"prompt": "a", "echo": true})).error(400);
    server.post("/detokenize", &json!({"tokens": [1, -1]})).error(400);
    server.post("/detokenize", &json!({"tokens": [49152]})).error(400);
    let e = server.get("/v1/nothing").error(404);
    assert_eq!(e["code"], "not_found");
    // The server is still fine, and counted every answer.
    assert_eq!(server.get("/health").json()["status"], "ok");
    assert!(server.metric("edgellm_requests_total{route=\"/v1/chat/completions\",status=\"400\"}") >= 20.0);
}

#[test]
fn tokenize_detokenize_models_and_health() {
    let m = smollm2();
    let server = Server::start(&["-m", m.to_str().unwrap(), "--alias", "smol"]);
    let engine = Engine::load(&m, EngineOptions::default()).unwrap();
    let text = "Turn off the porch light.";
    let v = server.post("/tokenize", &json!({"content": text})).json();
    let ids: Vec<u32> = serde_json::from_value(v["tokens"].clone()).unwrap();
    assert_eq!(ids, engine.tokenize(text, false).unwrap());
    let v = server.post("/tokenize", &json!({"content": "<|im_end|>", "parse_special": true})).json();
    assert_eq!(v["tokens"], json!([2]));
    let v = server.post("/tokenize", &json!({"content": "Hello", "with_pieces": true})).json();
    assert_eq!(v["tokens"][0]["piece"], "Hello");
    let v = server.post("/detokenize", &json!({"tokens": ids})).json();
    assert_eq!(v["content"], text);
    let v = server.get("/v1/models").json();
    assert_eq!(v["data"][0]["id"], "smol");
    assert_eq!(v["data"][0]["object"], "model");
    let v = server.get("/health").json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["slots_idle"], 4);
}

#[test]
fn api_key_is_required_and_compared_whole() {
    let server = Server::start(&["-m", smollm2().to_str().unwrap(), "--api-key", "s3cret-key"]);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).to_string();
    let post = |h: &[(&str, &str)]| request(server.addr, "POST", "/v1/chat/completions", h, body.as_bytes());
    for h in [
        vec![],
        vec![("Authorization", "Bearer wrong-key!")],
        vec![("Authorization", "Bearer s3cret-ke")],
        vec![("Authorization", "Bearer s3cret-key2")],
        vec![("Authorization", "s3cret-key")],
    ] {
        let e = post(&h).error(401);
        assert_eq!(e["code"], "invalid_api_key", "{h:?}");
    }
    assert_eq!(post(&[("Authorization", "Bearer s3cret-key")]).status, 200);
    request(server.addr, "GET", "/v1/models", &[], b"").error(401);
    // Health checks need no key.
    assert_eq!(request(server.addr, "GET", "/health", &[], b"").status, 200);
}

#[test]
fn a_body_over_the_limit_is_413() {
    let server = Server::start(&["-m", smollm2().to_str().unwrap(), "--body-limit", "4096"]);
    let body = json!({"messages": [{"role": "user", "content": "x".repeat(10_000)}]}).to_string();
    let e = request(server.addr, "POST", "/v1/chat/completions", &[], body.as_bytes()).error(413);
    assert_eq!(e["code"], "body_too_large");
    // Under the limit is fine.
    let small = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).to_string();
    assert_eq!(request(server.addr, "POST", "/v1/chat/completions", &[], small.as_bytes()).status, 200);
}

#[test]
fn a_full_queue_is_503_with_retry_after() {
    let server = Server::start(&["-m", smollm2().to_str().unwrap(), "--parallel", "1", "--queue-limit", "1"]);
    let addr = server.addr;
    let body = json!({"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 400, "ignore_eos": true, "temperature": 0}).to_string();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let body = body.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150 * i));
                request(addr, "POST", "/v1/chat/completions", &[], body.as_bytes())
            })
        })
        .collect();
    let answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let busy: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(
        !busy.is_empty(),
        "no request was refused: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &busy {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.error(503)["code"], "queue_full");
    }
    // The others ran in full, each the same text (greedy, same prompt: never mixed).
    let done: Vec<_> = answers.iter().filter(|r| r.status == 200).map(|r| r.json()).collect();
    assert!(done.len() >= 2);
    for v in &done {
        assert_eq!(v["usage"]["completion_tokens"], 400);
        assert_eq!(v["choices"][0]["message"]["content"], done[0]["choices"][0]["message"]["content"]);
    }
}

/// Poll `/health` until no slot is busy.
fn wait_idle(server: &Server, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if server.get("/health").json()["slots_processing"] == 0 {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "the slot is still busy after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_goes_away_frees_its_slot_at_once() {
    let server = Server::start(&["-m", smollm2().to_str().unwrap(), "--parallel", "1"]);
    let long = json!({"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 3000, "ignore_eos": true, "stream": true}).to_string();
    // Streaming: read the first bytes, then hang up.
    let mut s = TcpStream::connect(server.addr).unwrap();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{long}", long.len()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut buf = [0u8; 2048];
    let _ = r.read(&mut buf).unwrap();
    // The first event (the role) may come before the scheduler has taken the request.
    let t0 = Instant::now();
    while server.get("/health").json()["slots_processing"] != 1 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the request never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(r);
    drop(s);
    let took = wait_idle(&server, Duration::from_secs(3));
    eprintln!("stream: slot freed {took:?} after the client left");
    assert!(server.metric("edgellm_client_disconnects_total") >= 1.0);
    assert!(server.metric("edgellm_generated_tokens_total") < 3000.0);

    // Not streaming: send, then hang up while it generates.
    let whole = long.replace("\"stream\":true", "\"stream\":false");
    let mut s = TcpStream::connect(server.addr).unwrap();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{whole}", whole.len()).unwrap();
    let t0 = Instant::now();
    while server.get("/health").json()["slots_processing"] == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the request never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(s);
    let took = wait_idle(&server, Duration::from_secs(3));
    eprintln!("whole answer: slot freed {took:?} after the client left");
    // The slot serves the next request at once.
    let ok = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
    );
    assert_eq!(ok.status, 200);
}
