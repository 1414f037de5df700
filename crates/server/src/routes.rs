//! The handlers.

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgellm::batch::Event;
use edgellm::{CancelToken, Completion, Engine, FinishReason, GenerateParams, TokenLogprob};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    self, ChatRequest, CompletionRequest, EmbedInput, EmbedRequest, IntentInput, IntentRequest, Prompt,
};
use crate::error::ApiError;
use crate::{App, Classifier, Embedder, Generator};

type Shared = State<Arc<App>>;
type Body = Result<Bytes, BytesRejection>;

/// The body, or the extractor's refusal (413 over the limit) as an OpenAI error.
fn body(b: Body) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        let status = r.status();
        let mut e = ApiError::bad_request(r.body_text());
        e.status = status;
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            e.message = "the request body is over this server's limit (see --body-limit)".into();
            e.code = Some("body_too_large");
        }
        e
    })
}

fn reply(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The route name metrics count a path under.
fn route_name(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/completions" => "/v1/completions",
        "/v1/embeddings" => "/v1/embeddings",
        "/v1/intents" => "/v1/intents",
        "/v1/models" => "/v1/models",
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/tokenize" => "/tokenize",
        "/detokenize" => "/detokenize",
        _ => "other",
    }
}

/// API key check (constant time) and request counting, around every handler.
pub(crate) async fn guard(State(app): Shared, req: Request, next: Next) -> Response {
    let route = route_name(req.uri().path());
    let resp = match (&app.api_key, route) {
        (Some(key), r) if r != "/health" && !authorized(key, req.headers()) => ApiError::unauthorized(
            "missing or wrong API key: send the server's --api-key as 'Authorization: Bearer <key>'",
        )
        .into_response(),
        _ => next.run(req).await,
    };
    app.metrics.request(route, resp.status().as_u16());
    resp
}

pub(crate) fn authorized(key: &str, headers: &HeaderMap) -> bool {
    let Some(given) = headers.get("authorization").and_then(|v| v.to_str().ok()) else { return false };
    let given = given.strip_prefix("Bearer ").unwrap_or("");
    // Unequal lengths answer at once (the length is no secret); equal ones in constant time.
    bool::from(key.as_bytes().ct_eq(given.as_bytes()))
}

pub(crate) async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!("{} {} is not an endpoint of this server", req.method(), req.uri().path()))
        .into_response()
}

impl App {
    fn generator(&self) -> Result<&Generator, ApiError> {
        self.generator.as_ref().ok_or_else(|| {
            ApiError::bad_param(
                "model",
                "this server has no text generator (start it with -m and a llama or gemma3 model)",
            )
            .with_code("model_not_supported")
        })
    }

    fn embedder(&self) -> Result<&Embedder, ApiError> {
        self.embedder.as_ref().ok_or_else(|| {
            ApiError::bad_param("model", "this server has no embedding model (start it with --embed-model)")
                .with_code("model_not_supported")
        })
    }

    fn classifier(&self) -> Result<&Classifier, ApiError> {
        self.classifier.as_ref().ok_or_else(|| {
            ApiError::bad_param("model", "this server has no intent model (start it with --intent-model)")
                .with_code("model_not_supported")
        })
    }

    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06x}", self.started)
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Which endpoint a generation answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// What the scheduler's thread hands the handler.
enum Msg {
    Token { text: String, logprob: Option<TokenLogprob> },
    Done(edgellm::Result<Completion>),
}

/// Cancels a generation when the handler or stream holding it is dropped (the client went
/// away): the scheduler frees the slot before its next step.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

pub(crate) async fn chat(State(app): Shared, b: Body) -> Response {
    reply(chat_inner(app, b).await)
}

async fn chat_inner(app: Arc<App>, b: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let req: ChatRequest = api::parse(&body(b)?)?;
    let gen = app.generator()?;
    let messages = req.messages()?;
    let prompt = gen.engine.chat_prompt(&messages)?;
    let mut params = req.sampling.params(prompt.len(), gen.engine.info().n_ctx)?;
    params.format = req.format()?;
    params.logprobs = req.logprobs()?;
    let (stream, usage) = req.sampling.stream();
    generate(app.clone(), Kind::Chat, prompt, params, stream, usage, arrived).await
}

pub(crate) async fn completions(State(app): Shared, b: Body) -> Response {
    reply(completions_inner(app, b).await)
}

async fn completions_inner(app: Arc<App>, b: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let req: CompletionRequest = api::parse(&body(b)?)?;
    req.check_unsupported()?;
    let gen = app.generator()?;
    let many = || ApiError::bad_param("prompt", "one prompt per request: send a string (or one token array)");
    let prompt = match &req.prompt {
        Prompt::Text(t) => gen.engine.tokenize(t, true)?,
        Prompt::Texts(v) if v.len() == 1 => gen.engine.tokenize(&v[0], true)?,
        Prompt::Ids(ids) => ids.clone(),
        Prompt::IdLists(v) if v.len() == 1 => v[0].clone(),
        Prompt::Texts(_) | Prompt::IdLists(_) => return Err(many()),
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_param("prompt", "the prompt is empty"));
    }
    let vocab = gen.engine.info().n_vocab;
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::bad_param(
            "prompt",
            format!("token id {id} is out of range: the vocabulary has {vocab} tokens"),
        ));
    }
    let mut params = req.sampling.params(prompt.len(), gen.engine.info().n_ctx)?;
    params.logprobs = req.logprobs()?;
    let (stream, usage) = req.sampling.stream();
    generate(app.clone(), Kind::Completion, prompt, params, stream, usage, arrived).await
}

/// Queue a generation and answer with its completion, or stream it.
async fn generate(
    app: Arc<App>,
    kind: Kind,
    prompt: Vec<u32>,
    mut params: GenerateParams,
    stream: bool,
    usage: bool,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let gen = app.generator()?;
    let cancel = CancelToken::new();
    params.cancel = Some(cancel.clone());
    let want_logprobs = params.logprobs.is_some();
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let sink_app = app.clone();
    gen.batcher.submit(
        prompt,
        params,
        Box::new(move |ev| {
            let msg = match ev {
                Event::Started { .. } => return ControlFlow::Continue(()),
                Event::Chunk(c) => Msg::Token { text: c.text.to_string(), logprob: c.logprob.cloned() },
                Event::Done(r) => Msg::Done(r),
            };
            if tx.send(msg).is_err() {
                sink_app.metrics.disconnects.fetch_add(1, Ordering::Relaxed);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }),
    )?;
    let guard = CancelOnDrop(cancel);
    let meta = Meta {
        id: app.id(if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }),
        created: now(),
        model: gen.id.clone(),
        kind,
        logprobs: want_logprobs,
    };
    if !stream {
        let mut first: Option<f64> = None;
        let done = loop {
            match rx.recv().await {
                Some(Msg::Token { .. }) => {
                    first.get_or_insert_with(|| arrived.elapsed().as_secs_f64());
                }
                Some(Msg::Done(r)) => break r,
                None => return Err(ApiError::internal("the generation ended without an answer")),
            }
        };
        drop(guard);
        let c = done?;
        record(&app, first, &c);
        return Ok(Json(meta.whole(&c, &gen.engine)).into_response());
    }
    let (out, out_rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let engine = gen.engine.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let send = |v: Value| SseEvent::default().data(v.to_string());
        if out.send(Ok(send(meta.chunk_start()))).await.is_err() {
            return;
        }
        let mut first: Option<f64> = None;
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = out.closed() => return,
            };
            let ev = match msg {
                Some(Msg::Token { text, logprob }) => {
                    first.get_or_insert_with(|| arrived.elapsed().as_secs_f64());
                    if text.is_empty() && logprob.is_none() {
                        continue;
                    }
                    send(meta.chunk_token(&text, logprob.as_ref(), &engine))
                }
                Some(Msg::Done(Ok(c))) => {
                    record(&app, first, &c);
                    let mut evs = vec![send(meta.chunk_end(&c))];
                    if usage {
                        evs.push(send(meta.chunk_usage(&c)));
                    }
                    evs.push(SseEvent::default().data("[DONE]"));
                    for e in evs {
                        if out.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                Some(Msg::Done(Err(e))) => {
                    let _ = out.send(Ok(send(ApiError::from(e).body()))).await;
                    return;
                }
                None => return,
            };
            if out.send(Ok(ev)).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(out_rx);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

fn record(app: &App, first: Option<f64>, c: &Completion) {
    let t = &c.timings;
    let tps = (t.gen_tokens >= 2 && t.gen_ms > 0.0).then(|| t.gen_tokens_per_s());
    app.metrics.generation(first.unwrap_or(t.ttft_ms / 1e3), tps);
}

/// The fields every answer of one request shares.
struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    logprobs: bool,
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length | FinishReason::ContextFull => "length",
        FinishReason::Stop | FinishReason::Eos | FinishReason::Cancelled => "stop",
    }
}

fn usage_json(c: &Completion) -> Value {
    json!({
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.ids.len(),
        "total_tokens": c.prompt_tokens + c.ids.len(),
        "prompt_tokens_details": { "cached_tokens": c.cached_tokens },
    })
}

fn token_text(engine: &Engine, id: u32) -> (String, Vec<u8>) {
    let bytes = engine.token_bytes(id).unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// One token's entry of a chat answer's `logprobs.content`.
fn chat_logprob(lp: &TokenLogprob, engine: &Engine) -> Value {
    let top: Vec<Value> = lp
        .top
        .iter()
        .map(|&(id, l)| {
            let (token, bytes) = token_text(engine, id);
            json!({ "token": token, "logprob": l, "bytes": bytes })
        })
        .collect();
    json!({ "token": lp.token, "logprob": lp.logprob, "bytes": lp.bytes, "top_logprobs": top })
}

/// A legacy completion's `logprobs` object for these tokens; `offset` is the text offset of
/// the first.
fn completion_logprobs(lps: &[TokenLogprob], mut offset: usize, engine: &Engine) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    for lp in lps {
        tokens.push(json!(lp.token));
        token_logprobs.push(json!(lp.logprob));
        let alts: serde_json::Map<String, Value> =
            lp.top.iter().map(|&(id, l)| (token_text(engine, id).0, json!(l))).collect();
        top.push(Value::Object(alts));
        offsets.push(json!(offset));
        offset += lp.token.len();
    }
    json!({ "tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets })
}

impl Meta {
    fn object(&self, stream: bool) -> &'static str {
        match (self.kind, stream) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn wrap(&self, stream: bool, choices: Value, usage: Option<Value>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(stream),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("edgellm-", env!("CARGO_PKG_VERSION")),
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }

    /// The whole answer of a request that does not stream.
    fn whole(&self, c: &Completion, engine: &Engine) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": c.text },
                "logprobs": if self.logprobs {
                    json!({ "content": c.logprobs.iter().map(|lp| chat_logprob(lp, engine)).collect::<Vec<_>>() })
                } else { Value::Null },
                "finish_reason": finish_reason(c.finish),
            }),
            Kind::Completion => json!({
                "index": 0,
                "text": c.text,
                "logprobs": if self.logprobs { completion_logprobs(&c.logprobs, 0, engine) } else { Value::Null },
                "finish_reason": finish_reason(c.finish),
            }),
        };
        let mut v = self.wrap(false, json!([choice]), Some(usage_json(c)));
        let t = &c.timings;
        v["timings"] = json!({
            "prompt_n": t.prompt_tokens, "prompt_ms": t.prompt_ms,
            "predicted_n": t.gen_tokens, "predicted_ms": t.gen_ms, "ttft_ms": t.ttft_ms,
        });
        v
    }

    /// The first chunk of a stream: the assistant's role (chat) or empty text.
    fn chunk_start(&self) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                json!({ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null })
            }
            Kind::Completion => json!({ "index": 0, "text": "", "logprobs": null, "finish_reason": null }),
        };
        self.wrap(true, json!([choice]), None)
    }

    fn chunk_token(&self, text: &str, lp: Option<&TokenLogprob>, engine: &Engine) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "delta": { "content": text },
                "logprobs": lp.map(|lp| json!({ "content": [chat_logprob(lp, engine)] })),
                "finish_reason": null,
            }),
            Kind::Completion => json!({
                "index": 0,
                "text": text,
                "logprobs": lp.map(|lp| completion_logprobs(std::slice::from_ref(lp), 0, engine)),
                "finish_reason": null,
            }),
        };
        self.wrap(true, json!([choice]), None)
    }

    fn chunk_end(&self, c: &Completion) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                json!({ "index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason(c.finish) })
            }
            Kind::Completion => {
                json!({ "index": 0, "text": "", "logprobs": null, "finish_reason": finish_reason(c.finish) })
            }
        };
        self.wrap(true, json!([choice]), None)
    }

    fn chunk_usage(&self, c: &Completion) -> Value {
        self.wrap(true, json!([]), Some(usage_json(c)))
    }
}

/// Texts for the gathering thread and where their results go (`T`: an embedding, a list of
/// label scores).
pub(crate) struct TextJob<T> {
    texts: Vec<String>,
    reply: oneshot::Sender<edgellm::Result<(Vec<T>, usize)>>,
}

/// Texts to embed.
pub(crate) type EmbedJob = TextJob<Vec<f32>>;
/// Utterances to classify.
pub(crate) type IntentJob = TextJob<Vec<edgellm::LabelScore>>;

/// Most texts one embedding request may carry (OpenAI's limit).
const MAX_EMBED_INPUTS: usize = 2048;
/// Texts the gathering threads take from concurrent requests into one call.
const EMBED_GATHER: usize = 256;

/// A thread that runs `run` on the texts of concurrent requests together: it takes the
/// waiting requests (up to [`EMBED_GATHER`] texts) into one batched call, and answers each
/// with its share. When the joint call fails, each request runs alone, so only the one with
/// the bad text fails.
fn spawn_gatherer<T: Send + 'static>(
    name: &str,
    engine: Arc<Engine>,
    run: fn(&Engine, &[&str]) -> edgellm::Result<Vec<T>>,
) -> std::io::Result<std::sync::mpsc::Sender<TextJob<T>>> {
    let (tx, rx) = std::sync::mpsc::channel::<TextJob<T>>();
    let tokens = |engine: &Engine, texts: &[String]| -> usize {
        texts.iter().map(|t| engine.tokenize(t, true).map(|v| v.len()).unwrap_or(0)).sum()
    };
    std::thread::Builder::new().name(name.into()).spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            let mut n = jobs[0].texts.len();
            while n < EMBED_GATHER {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.texts.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            let texts: Vec<&str> = jobs.iter().flat_map(|j| j.texts.iter().map(String::as_str)).collect();
            match run(&engine, &texts) {
                Ok(mut all) => {
                    // Split from the back so each job takes its own slice.
                    for j in jobs.into_iter().rev() {
                        let mine = all.split_off(all.len() - j.texts.len());
                        let _ = j.reply.send(Ok((mine, tokens(&engine, &j.texts))));
                    }
                }
                Err(_) if jobs.len() > 1 => {
                    for j in jobs {
                        let refs: Vec<&str> = j.texts.iter().map(String::as_str).collect();
                        let r = run(&engine, &refs).map(|e| (e, tokens(&engine, &j.texts)));
                        let _ = j.reply.send(r);
                    }
                }
                Err(e) => {
                    let _ = jobs.pop().map(|j| j.reply.send(Err(e)));
                }
            }
        }
    })?;
    Ok(tx)
}

/// The embedding thread (see [`spawn_gatherer`]).
pub(crate) fn spawn_embedder(engine: Arc<Engine>) -> std::io::Result<std::sync::mpsc::Sender<EmbedJob>> {
    spawn_gatherer("edgellm-embed", engine, |e, t| e.embed(t))
}

/// The intent thread (see [`spawn_gatherer`]): every label's score, most probable first.
pub(crate) fn spawn_classifier(engine: Arc<Engine>) -> std::io::Result<std::sync::mpsc::Sender<IntentJob>> {
    spawn_gatherer("edgellm-intent", engine, |e, t| e.classify(t, 0))
}

/// Little-endian f32 bytes in base64 (`encoding_format: "base64"`, what the `openai` Python
/// client asks for by default).
fn base64_f32(v: &[f32]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(A[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An encoder request's texts: at least one, at most [`MAX_EMBED_INPUTS`].
fn check_text_count(texts: &[String]) -> Result<(), ApiError> {
    if texts.is_empty() {
        return Err(ApiError::bad_param("input", "input is empty: send a string or an array of strings"));
    }
    if texts.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::bad_param(
            "input",
            format!("{} inputs: at most {MAX_EMBED_INPUTS} per request", texts.len()),
        ));
    }
    Ok(())
}

/// Hands `texts` to an encoder thread (the `what` thread) and awaits its answer, counted in the
/// `queued` gauge meanwhile.
async fn on_thread<T>(
    jobs: &std::sync::mpsc::Sender<TextJob<T>>,
    texts: Vec<String>,
    queued: &AtomicU64,
    what: &str,
) -> Result<(Vec<T>, usize), ApiError> {
    let stopped = || ApiError::internal(format!("the {what} thread has stopped"));
    let (reply, rx) = oneshot::channel();
    queued.fetch_add(1, Ordering::Relaxed);
    let got = match jobs.send(TextJob { texts, reply }) {
        Ok(()) => rx.await.map_err(|_| stopped()),
        Err(_) => Err(stopped()),
    };
    queued.fetch_sub(1, Ordering::Relaxed);
    Ok(got??)
}

pub(crate) async fn embeddings(State(app): Shared, b: Body) -> Response {
    reply(embeddings_inner(app, b).await)
}

async fn embeddings_inner(app: Arc<App>, b: Body) -> Result<Response, ApiError> {
    let req: EmbedRequest = api::parse(&body(b)?)?;
    let emb = app.embedder()?;
    let texts = match req.input {
        EmbedInput::One(t) => vec![t],
        EmbedInput::Many(v) => v,
        EmbedInput::Ids(ids) => {
            return Err(ApiError::bad_param(
                "input",
                format!("token-id input ({} ids) is not supported: send the texts", ids.len()),
            ))
        }
        EmbedInput::IdLists(lists) => {
            return Err(ApiError::bad_param(
                "input",
                format!("token-id input ({} lists) is not supported: send the texts", lists.len()),
            ))
        }
    };
    check_text_count(&texts)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_param(
                "encoding_format",
                format!("encoding_format '{other}' is not supported: use float or base64"),
            ))
        }
    };
    let dim = emb.engine.info().embedding_dim.unwrap_or(0);
    if let Some(d) = req.dimensions.filter(|&d| d as usize != dim) {
        return Err(ApiError::bad_param(
            "dimensions",
            format!("dimensions {d}: this model's embeddings have {dim} (it cannot shorten them)"),
        ));
    }
    let n = texts.len() as u64;
    let (vectors, tokens) = on_thread(&emb.jobs, texts, &app.metrics.embed_queued, "embedding").await?;
    app.metrics.embedded.fetch_add(n, Ordering::Relaxed);
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = if base64 { json!(base64_f32(e)) } else { json!(e) };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": emb.id,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response())
}

pub(crate) async fn intents(State(app): Shared, b: Body) -> Response {
    reply(intents_inner(app, b).await)
}

async fn intents_inner(app: Arc<App>, b: Body) -> Result<Response, ApiError> {
    let req: IntentRequest = api::parse(&body(b)?)?;
    let cls = app.classifier()?;
    let texts = match req.input {
        IntentInput::One(t) => vec![t],
        IntentInput::Many(v) => v,
    };
    check_text_count(&texts)?;
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::bad_param("input", format!("input {i} is empty: send the utterance's text")));
    }
    let n_labels = cls.engine.info().labels.as_ref().map_or(0, Vec::len);
    let top_k = match req.top_k {
        None => 3.min(n_labels),
        Some(k) if k >= 1 => (k as usize).min(n_labels),
        Some(k) => return Err(ApiError::bad_param("top_k", format!("top_k {k}: ask for at least 1 label"))),
    };
    let n = texts.len() as u64;
    let (scores, tokens) = on_thread(&cls.jobs, texts, &app.metrics.intent_queued, "intent").await?;
    app.metrics.classified.fetch_add(n, Ordering::Relaxed);
    let data: Vec<Value> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let top: Vec<Value> =
                s.iter().take(top_k).map(|l| json!({ "label": l.label, "score": l.score })).collect();
            json!({ "object": "intent", "index": i, "label": s[0].label, "score": s[0].score, "top": top })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": cls.id,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response())
}

fn model_entry(app: &App, id: &str, engine: &Engine) -> Value {
    let i = engine.info();
    json!({
        "id": id,
        "object": "model",
        "created": app.started,
        "owned_by": "edgellm",
        "meta": {
            "architecture": i.architecture,
            "kind": match (i.kind, &i.labels) { (edgellm::ModelKind::Decoder, _) => "generator", (edgellm::ModelKind::Encoder, None) => "embedder", (edgellm::ModelKind::Encoder, Some(_)) => "classifier" },
            "labels": i.labels,
            "n_params": i.n_params,
            "n_ctx": i.n_ctx,
            "n_ctx_train": i.n_ctx_train,
            "n_vocab": i.n_vocab,
            "embedding_dim": i.embedding_dim,
            "file_bytes": i.file_bytes,
            "kernel_tier": i.kernel_tier,
        },
    })
}

pub(crate) async fn models(State(app): Shared) -> Response {
    let mut data = Vec::new();
    if let Some(g) = &app.generator {
        data.push(model_entry(&app, &g.id, &g.engine));
    }
    if let Some(e) = &app.embedder {
        data.push(model_entry(&app, &e.id, &e.engine));
    }
    if let Some(c) = &app.classifier {
        data.push(model_entry(&app, &c.id, &c.engine));
    }
    Json(json!({ "object": "list", "data": data })).into_response()
}

pub(crate) async fn health(State(app): Shared) -> Response {
    let mut v = json!({ "status": "ok" });
    if let Some(g) = &app.generator {
        let s = g.batcher.stats();
        v["slots_idle"] = json!(s.slots - s.slots_busy);
        v["slots_processing"] = json!(s.slots_busy);
        v["queued"] = json!(s.queued);
    }
    Json(v).into_response()
}

pub(crate) async fn metrics(State(app): Shared) -> Response {
    let text = app.metrics.render(app.generator.as_ref().map(|g| g.batcher.stats()));
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The model `/tokenize` and `/detokenize` work on: the generator, else the embedder.
fn text_engine(app: &App) -> Result<&Engine, ApiError> {
    match (&app.generator, &app.embedder) {
        (Some(g), _) => Ok(&g.engine),
        (None, Some(e)) => Ok(&e.engine),
        (None, None) => Err(ApiError::internal("no model")),
    }
}

pub(crate) async fn tokenize(State(app): Shared, b: Body) -> Response {
    reply((|| {
        let req: api::TokenizeRequest = api::parse(&body(b)?)?;
        let engine = text_engine(&app)?;
        let ids = if req.parse_special || !req.add_special {
            engine.tokenize_with(&req.content, req.add_special && adds_bos(engine), req.parse_special)?
        } else {
            engine.tokenize(&req.content, true)?
        };
        let tokens: Vec<Value> = if req.with_pieces {
            ids.iter()
                .map(|&id| {
                    let piece = match engine.token_bytes(id) {
                        Ok(b) => {
                            String::from_utf8(b).map(Value::from).unwrap_or_else(|e| json!(e.into_bytes()))
                        }
                        Err(_) => json!(engine.detokenize(&[id]).unwrap_or_default()),
                    };
                    json!({ "id": id, "piece": piece })
                })
                .collect()
        } else {
            ids.iter().map(|&id| json!(id)).collect()
        };
        Ok(Json(json!({ "tokens": tokens })).into_response())
    })())
}

/// Whether `tokenize(text, true)` puts a BOS first for this model.
fn adds_bos(engine: &Engine) -> bool {
    let with = engine.tokenize("a", true).unwrap_or_default();
    let without = engine.tokenize("a", false).unwrap_or_default();
    with.len() > without.len()
}

pub(crate) async fn detokenize(State(app): Shared, b: Body) -> Response {
    reply((|| {
        let req: api::DetokenizeRequest = api::parse(&body(b)?)?;
        let engine = text_engine(&app)?;
        let n = engine.info().n_vocab;
        let ids = req
            .tokens
            .iter()
            .map(|&t| {
                u32::try_from(t).ok().filter(|&id| (id as usize) < n).ok_or_else(|| {
                    ApiError::bad_param(
                        "tokens",
                        format!("token id {t} is out of range: the vocabulary has {n} tokens (ids 0..{n})"),
                    )
                })
            })
            .collect::<Result<Vec<u32>, ApiError>>()?;
        Ok(Json(json!({ "content": engine.detokenize(&ids)? })).into_response())
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        // 1.0f32 = 00 00 80 3f.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn api_keys_compare_whole() {
        let mut h = HeaderMap::new();
        assert!(!authorized("k3y", &h));
        h.insert("authorization", "Bearer k3y".parse().unwrap());
        assert!(authorized("k3y", &h));
        h.insert("authorization", "Bearer k3".parse().unwrap());
        assert!(!authorized("k3y", &h));
        h.insert("authorization", "k3y".parse().unwrap());
        assert!(!authorized("k3y", &h));
    }
}
