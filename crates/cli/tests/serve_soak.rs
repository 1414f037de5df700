//! A bounded soak test of `edgellm serve` on loopback: 32 clients for `EDGELLM_SOAK_SECONDS`
//! (default 20; docs/robustness.md reports a 300 s run) send a seeded mix of valid chat
//! requests (streamed and not), embeddings, malformed and hostile requests (bad JSON, wrong
//! types, invalid UTF-8, oversized bodies, unknown routes, half-sent bodies, bytes that are not
//! HTTP) and streams they abandon after the first event.
//!
//! Asserted: no 5xx answer but 503 (a full queue); every valid answer equals, byte for byte
//! (embeddings: cosine > 0.99999), what the library gives the same request alone — nothing lost
//! or mixed; the server's resident memory is flat after warm-up; it still answers afterwards.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{minilm, openai_params, request, smollm2, stream_or_status, Server};
use edgellm::{Engine, EngineOptions, Message};
use serde_json::{json, Value};

const CLIENTS: usize = 32;

const QUESTIONS: [&str; 4] = [
    "Turn on the kitchen lights.",
    "What is the capital of France?",
    "Dim the bedroom lights to thirty percent.",
    "List three colours.",
];

const TEXTS: [&str; 3] =
    ["turn off the porch light", "what's the weather tomorrow", "set an alarm for seven"];

/// Valid chat request `k` (of 16): question, answer length, temperature, seed.
fn chat_spec(k: usize) -> (&'static str, usize, f32, u64) {
    let temperature = if k.is_multiple_of(2) { 0.0 } else { 0.8 };
    (QUESTIONS[k % 4], [4, 8, 12, 16][(k / 4) % 4], temperature, 7 + k as u64)
}

fn chat_body(k: usize, stream: bool) -> Value {
    let (q, max_tokens, temperature, seed) = chat_spec(k);
    json!({"messages": [{"role": "user", "content": q}], "max_tokens": max_tokens,
           "temperature": temperature, "seed": seed, "stream": stream})
}

/// A small deterministic generator (splitmix64) for each client's choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// Sends raw bytes and reads whatever comes back until the server closes (or 30 s): the status
/// of the answer, if there was one.
fn raw(addr: SocketAddr, bytes: &[u8], close_early: bool) -> Option<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    if close_early {
        return None;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let line = String::from_utf8_lossy(&out);
    line.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok())
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    /// Requests by kind and status (0: no answer, as expected for hostile bytes).
    statuses: BTreeMap<(&'static str, u16), usize>,
    /// Valid answers that differ from their reference.
    wrong: Vec<String>,
    /// Valid requests answered 200 and checked.
    checked: usize,
}

impl Tally {
    fn saw(&mut self, kind: &'static str, status: u16) {
        *self.statuses.entry((kind, status)).or_default() += 1;
        if status == 503 {
            // A full queue: back off as its Retry-After asks, if briefly.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

#[allow(clippy::too_many_lines)]
fn client(addr: SocketAddr, c: usize, deadline: Instant, chats: &[String], embeds: &[Vec<f32>]) -> Tally {
    let mut rng = Rng(0x5eed + c as u64);
    let mut t = Tally::default();
    let post =
        |path: &str, body: &[u8], ct: &str| request(addr, "POST", path, &[("Content-Type", ct)], body).status;
    while Instant::now() < deadline {
        match rng.below(16) {
            // Valid chat, answered whole.
            0..=2 => {
                let k = rng.below(16);
                let r = request(
                    addr,
                    "POST",
                    "/v1/chat/completions",
                    &[],
                    chat_body(k, false).to_string().as_bytes(),
                );
                t.saw("chat", r.status);
                if r.status == 200 {
                    let text =
                        r.json()["choices"][0]["message"]["content"].as_str().unwrap_or("").to_string();
                    t.checked += 1;
                    if text != chats[k] {
                        t.wrong.push(format!("chat {k}: {text:?} != {:?}", chats[k]));
                    }
                }
            }
            // Valid chat, streamed.
            3..=5 => {
                let k = rng.below(16);
                match stream_or_status(addr, "/v1/chat/completions", &chat_body(k, true), None) {
                    Ok(s) => {
                        t.saw("chat stream", 200);
                        t.checked += 1;
                        if s.text != chats[k] || s.events.last().map(String::as_str) != Some("[DONE]") {
                            t.wrong.push(format!("stream {k}: {:?} != {:?}", s.text, chats[k]));
                        }
                    }
                    Err(status) => t.saw("chat stream", status),
                }
            }
            // A stream the client abandons after its first event.
            6 => {
                let body = json!({"messages": [{"role": "user", "content": "Tell me a long story."}],
                                  "max_tokens": 200, "stream": true});
                let status = stream_or_status(addr, "/v1/chat/completions", &body, Some(1))
                    .map_or_else(|s| s, |_| 200);
                t.saw("abandoned stream", status);
            }
            // Valid embeddings.
            7 => {
                let i = rng.below(TEXTS.len());
                let r = request(
                    addr,
                    "POST",
                    "/v1/embeddings",
                    &[],
                    json!({"input": TEXTS[i]}).to_string().as_bytes(),
                );
                t.saw("embedding", r.status);
                if r.status == 200 {
                    let v: Vec<f32> = r.json()["data"][0]["embedding"]
                        .as_array()
                        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect())
                        .unwrap_or_default();
                    t.checked += 1;
                    let cos = if v.len() == embeds[i].len() { cosine(&v, &embeds[i]) } else { 0.0 };
                    if cos <= 0.99999 {
                        t.wrong.push(format!("embedding {i}: cosine {cos} to its reference"));
                    }
                }
            }
            // Malformed JSON bodies and wrong types.
            8 => {
                let bodies: [&[u8]; 8] = [
                    b"{\"messages\": [",
                    b"",
                    b"null",
                    b"{\"messages\": 5}",
                    b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": -1}",
                    b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 100000000}",
                    b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": \"hot\"}",
                    b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"schema\": {\"type\": 7}}}}",
                ];
                let b = bodies[rng.below(bodies.len())];
                t.saw("malformed json", post("/v1/chat/completions", b, "application/json"));
            }
            // Invalid UTF-8, a wrong content type, an oversized body.
            9 => {
                let status = match rng.below(3) {
                    0 => post(
                        "/v1/chat/completions",
                        b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}",
                        "application/json",
                    ),
                    1 => post("/v1/embeddings", b"input=hello", "text/plain"),
                    // The server may answer 413 and close before taking the whole body: the
                    // client then sees its answer or a reset connection.
                    _ => {
                        let mut req = format!(
                            "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            300 << 10
                        )
                        .into_bytes();
                        req.resize(req.len() + (300 << 10), b'a');
                        raw(addr, &req, false).unwrap_or(0)
                    }
                };
                t.saw("bad body", status);
            }
            // Unknown routes and wrong methods.
            10 => {
                let r = if rng.below(2) == 0 {
                    request(addr, "GET", "/v1/chat/completions", &[], b"")
                } else {
                    request(addr, "POST", "/v2/nothing", &[], b"{}")
                };
                t.saw("wrong route", r.status);
            }
            // A body cut short: the client closes after part of it.
            11 => {
                let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"messages\": [";
                raw(addr, head.as_bytes(), true);
                t.saw("cut body", 0);
            }
            // Bytes that are not HTTP.
            12 => {
                let status = raw(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n", false);
                t.saw("not http", status.unwrap_or(0));
            }
            // Other endpoints, valid.
            _ => {
                let r = request(
                    addr,
                    "POST",
                    "/tokenize",
                    &[],
                    json!({"content": "Hello world"}).to_string().as_bytes(),
                );
                t.saw("tokenize", r.status);
                let r = request(addr, "GET", "/health", &[], b"");
                t.saw("health", r.status);
            }
        }
    }
    t
}

#[test]
fn thirty_two_clients_cannot_knock_the_server_over() {
    let secs: u64 = std::env::var("EDGELLM_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    // References: each valid request alone through the library.
    let engine =
        Engine::load(smollm2(), EngineOptions { threads: Some(2), ..EngineOptions::default() }).unwrap();
    let chats: Vec<String> = (0..16)
        .map(|k| {
            let (q, max_tokens, temperature, seed) = chat_spec(k);
            let params = openai_params(max_tokens, temperature, seed);
            engine.chat(&[Message::new("user", q)], &params, |_| ControlFlow::Continue(())).unwrap().text
        })
        .collect();
    drop(engine);
    let encoder = Engine::load(minilm(), EngineOptions::default()).unwrap();
    let embeds: Vec<Vec<f32>> = TEXTS.iter().map(|t| encoder.embed(&[t]).unwrap().remove(0)).collect();
    drop(encoder);

    let m = smollm2();
    let e = minilm();
    let mut server = Server::start(&[
        "-m",
        m.to_str().unwrap(),
        "--embed-model",
        e.to_str().unwrap(),
        "--parallel",
        "4",
        "--queue-limit",
        "16",
        "-c",
        "512",
        "--body-limit",
        "262144",
    ]);
    let (addr, pid) = (server.addr, server.pid());

    // Resident memory, sampled every 250 ms while the clients run.
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let t0 = Instant::now();
    let sampler = {
        let (done, samples) = (done.clone(), samples.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                samples.lock().unwrap().push((t0.elapsed().as_secs_f64(), rss_kib(pid)));
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let deadline = t0 + Duration::from_secs(secs);
    let chats = Arc::new(chats);
    let embeds = Arc::new(embeds);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (chats, embeds) = (chats.clone(), embeds.clone());
            std::thread::spawn(move || client(addr, c, deadline, &chats, &embeds))
        })
        .collect();
    let tallies: Vec<Tally> = clients.into_iter().map(|h| h.join().expect("a client panicked")).collect();
    let wall = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    assert!(server.is_running(), "the server died");
    assert_eq!(server.get("/health").status, 200, "the server no longer answers");

    let mut statuses: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    let (mut wrong, mut checked) = (Vec::new(), 0);
    for t in tallies {
        for (k, n) in t.statuses {
            *statuses.entry(k).or_default() += n;
        }
        wrong.extend(t.wrong);
        checked += t.checked;
    }
    let total: usize = statuses.values().sum();
    eprintln!(
        "serve soak: {CLIENTS} clients, {wall:.0} s, {total} requests, {checked} valid answers checked"
    );
    for ((kind, status), n) in &statuses {
        eprintln!("  {kind:<17} {status:>3}: {n}");
    }
    let rss = samples.lock().unwrap().clone();
    // Warm-up: the first quarter of the run (caches, slots, allocator arenas fill up).
    let warm = wall * 0.25;
    let max_in = |a: f64, b: f64| rss.iter().filter(|s| s.0 >= a && s.0 < b).map(|s| s.1).max().unwrap_or(0);
    let (first, second, last) =
        (max_in(warm, wall * 0.5), max_in(wall * 0.5, wall * 0.75), max_in(wall * 0.75, wall));
    eprintln!(
        "  peak RSS after warm-up: {:.1} MiB (25-50 %), {:.1} MiB (50-75 %), {:.1} MiB (75-100 %)",
        first as f64 / 1024.0,
        second as f64 / 1024.0,
        last as f64 / 1024.0
    );

    let bad: Vec<_> = statuses.iter().filter(|((_, s), _)| *s >= 500 && *s != 503).collect();
    assert!(bad.is_empty(), "5xx answers other than 503: {bad:?}");
    assert!(
        wrong.is_empty(),
        "{} of {checked} valid answers differ from their references:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let ok_chats = statuses.get(&("chat", 200)).copied().unwrap_or(0)
        + statuses.get(&("chat stream", 200)).copied().unwrap_or(0);
    assert!(ok_chats >= CLIENTS, "only {ok_chats} valid chats were answered");
    // Malformed requests are refused as client errors, never answered 200.
    for kind in ["malformed json", "bad body", "wrong route"] {
        let ok = statuses.get(&(kind, 200)).copied().unwrap_or(0);
        assert_eq!(ok, 0, "{ok} '{kind}' requests were answered 200");
    }
    // Flat: no growth beyond 16 MiB between the windows after warm-up.
    assert!(
        last <= first + 16 * 1024 && second <= first + 16 * 1024,
        "resident memory grew after warm-up: {first} KiB, {second} KiB, {last} KiB"
    );
}
