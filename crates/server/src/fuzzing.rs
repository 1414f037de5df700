//! Entry point of the request-parsing fuzz target (`fuzz/`, and the corpus test of
//! `edgellm-fuzzing`): not a public API.

use axum::http::{HeaderMap, HeaderValue};

use crate::api::{self, ChatRequest, CompletionRequest, DetokenizeRequest, EmbedRequest, TokenizeRequest};

/// Runs everything the server does with a request before it reaches a model: `data`'s first
/// line is an `Authorization` header value (checked against a key), the rest a JSON body
/// parsed as every endpoint's request and turned into messages, an output format, log-prob
/// options, stream options and generation parameters. Refusals are values; any panic is a bug.
pub fn request(data: &[u8]) {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    if let Ok(v) = HeaderValue::from_bytes(header) {
        let mut h = HeaderMap::new();
        h.insert("authorization", v);
        let ok = crate::routes::authorized("k3y", &h);
        assert_eq!(ok, header == b"Bearer k3y", "API key check disagrees with an exact comparison");
    }
    // A prompt length and context taken from the body, so every branch of `params` is reached.
    let n_ctx = 1 + body.len() % 97;
    let n_prompt = body.first().map_or(0, |&b| b as usize % (n_ctx + 2));
    if let Ok(r) = api::parse::<ChatRequest>(body) {
        let _ = r.messages();
        let _ = r.format();
        let _ = r.logprobs();
        let _ = r.sampling.stream();
        let _ = r.sampling.params(n_prompt, n_ctx);
    }
    if let Ok(r) = api::parse::<CompletionRequest>(body) {
        let _ = r.check_unsupported();
        let _ = r.logprobs();
        let _ = r.sampling.stream();
        if let Ok(p) = r.sampling.params(n_prompt, n_ctx) {
            assert!(
                p.max_tokens >= 1 && p.max_tokens <= n_ctx - n_prompt,
                "max_tokens outside the room left"
            );
        }
    }
    let _ = api::parse::<EmbedRequest>(body);
    let _ = api::parse::<TokenizeRequest>(body);
    let _ = api::parse::<DetokenizeRequest>(body);
    if let Err(e) = api::parse::<ChatRequest>(body) {
        // Every refusal renders as an OpenAI error object.
        assert!(e.body()["error"]["message"].is_string());
    }
}
