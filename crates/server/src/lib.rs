//! An OpenAI-compatible HTTP server over [`edgellm::Engine`]: what `edgellm serve` runs.
//!
//! Endpoints: `POST /v1/chat/completions` and `POST /v1/completions` (streamed as server-sent
//! events or not; sampling, stop strings, seeds, log-probabilities, `response_format` JSON
//! object / JSON schema enforced by constrained decoding), `POST /v1/embeddings`,
//! `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text), `POST /tokenize`,
//! `POST /detokenize`.
//!
//! Generation runs on the [`Batcher`]'s thread (continuous batching: every active request's
//! next token in one forward step, prompts prefilled in chunks between them, a prompt cache
//! per slot), embeddings on a thread of their own that batches the texts of concurrent
//! requests; the async runtime only parses, tokenizes and writes. A request's output is the
//! same whatever else runs beside it (see [`edgellm::batch`]).
//!
//! Errors are OpenAI's error JSON (`{"error": {"message", "type", "param", "code"}}`) with the
//! status that fits: 400 for a malformed body, a wrong field type, a value out of range or a
//! prompt longer than the context; 401 for a missing or wrong API key (compared in constant
//! time); 404 for an unknown path; 413 for a body over the limit; 503 with `Retry-After` when
//! the queue is full. A client that goes away frees its slot at once.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use edgellm::{Engine, EngineOptions};
//! use edgellm_server::{Models, ServeOptions, Server};
//!
//! # async fn run() -> Result<(), edgellm_server::ServeError> {
//! let engine = Arc::new(Engine::load("models/SmolLM2-135M-Instruct.Q4_1.gguf", EngineOptions::default())?);
//! let models = Models { generator: Some(engine), ..Models::default() };
//! let server = Server::bind(models, &ServeOptions { port: 0, ..ServeOptions::default() }).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.run(edgellm_server::shutdown_signal()).await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod api;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use edgellm::batch::{BatchOptions, Batcher};
use edgellm::{Engine, ModelKind};

pub use error::ApiError;

/// How `edgellm serve` listens and schedules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// Address to listen on (`127.0.0.1`: this machine only).
    pub host: String,
    /// Port (0 = any free one; [`Server::local_addr`] tells which).
    pub port: u16,
    /// When set, every endpoint but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest request body in bytes (413 beyond).
    pub body_limit: usize,
    /// Slots, queue and prefill chunk of the generation scheduler.
    pub batch: BatchOptions,
    /// The name `/v1/models` gives the generator (default: its file name without `.gguf`).
    pub model_id: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            body_limit: 8 << 20,
            batch: BatchOptions::default(),
            model_id: None,
        }
    }
}

/// The models a server runs: a text generator, a sentence encoder, or both.
#[derive(Clone, Debug, Default)]
pub struct Models {
    /// A decoder, for the completion endpoints.
    pub generator: Option<Arc<Engine>>,
    /// An encoder, for `/v1/embeddings`.
    pub embedder: Option<Arc<Engine>>,
    /// An intent model (an encoder with an intent head), for `/v1/intents`.
    pub classifier: Option<Arc<Engine>>,
}

impl Models {
    /// One model in the role its kind gives it.
    pub fn single(engine: Arc<Engine>) -> Models {
        match (engine.info().kind, engine.info().labels.is_some()) {
            (ModelKind::Decoder, _) => Models { generator: Some(engine), ..Models::default() },
            (ModelKind::Encoder, false) => Models { embedder: Some(engine), ..Models::default() },
            (ModelKind::Encoder, true) => Models { classifier: Some(engine), ..Models::default() },
        }
    }
}

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address is taken, or not this machine's.
    #[error("cannot listen on {addr}: {source} (is another server on that port? try --port)")]
    Bind {
        /// host:port.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// A model is in the wrong role (an encoder as the generator, a decoder as the embedder),
    /// or there is none.
    #[error("{0}")]
    Models(String),
    /// The engine refused (e.g. the slots' KV caches do not fit in memory).
    #[error(transparent)]
    Engine(#[from] edgellm::Error),
    /// The runtime or the listening socket failed.
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The generator's part of the server state.
pub(crate) struct Generator {
    pub(crate) engine: Arc<Engine>,
    pub(crate) batcher: Batcher,
    pub(crate) id: String,
}

/// The embedder's part.
pub(crate) struct Embedder {
    pub(crate) engine: Arc<Engine>,
    pub(crate) jobs: std::sync::mpsc::Sender<routes::EmbedJob>,
    pub(crate) id: String,
}

/// The intent model's part.
pub(crate) struct Classifier {
    pub(crate) engine: Arc<Engine>,
    pub(crate) jobs: std::sync::mpsc::Sender<routes::IntentJob>,
    pub(crate) id: String,
}

/// What every handler shares.
pub(crate) struct App {
    pub(crate) generator: Option<Generator>,
    pub(crate) embedder: Option<Embedder>,
    pub(crate) classifier: Option<Classifier>,
    pub(crate) api_key: Option<String>,
    pub(crate) metrics: metrics::Metrics,
    /// Unix time the server started (`created` of `/v1/models`).
    pub(crate) started: u64,
    pub(crate) next_id: AtomicU64,
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
    addr: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// The id a model gets in `/v1/models`: its file or directory name without `.gguf`.
fn model_id(engine: &Engine) -> String {
    let p = &engine.info().path;
    let name =
        p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string());
    name.strip_suffix(".gguf").map(str::to_string).unwrap_or(name)
}

impl Server {
    /// Start the scheduler and the embedding thread, and listen on `opts.host:opts.port`.
    /// Must be called within a tokio runtime.
    pub async fn bind(models: Models, opts: &ServeOptions) -> Result<Server, ServeError> {
        if models.generator.is_none() && models.embedder.is_none() && models.classifier.is_none() {
            return Err(ServeError::Models(
                "no model to serve: give a text generator (-m), an encoder or an intent model".into(),
            ));
        }
        let generator = match models.generator {
            None => None,
            Some(engine) => {
                if engine.info().kind != ModelKind::Decoder {
                    return Err(ServeError::Models(format!(
                        "{} is an embedding model: pass it as --embed-model, and a llama or gemma3 model as -m",
                        engine.info().path.display()
                    )));
                }
                let id = opts.model_id.clone().unwrap_or_else(|| model_id(&engine));
                let batcher = Batcher::new(engine.clone(), opts.batch)?;
                Some(Generator { engine, batcher, id })
            }
        };
        let embedder = match models.embedder {
            None => None,
            Some(engine) => {
                if engine.info().kind != ModelKind::Encoder {
                    return Err(ServeError::Models(format!(
                        "{} is a text generator: --embed-model takes an encoder (a bert GGUF or a sentence-transformers directory)",
                        engine.info().path.display()
                    )));
                }
                let id = model_id(&engine);
                let jobs = routes::spawn_embedder(engine.clone())?;
                Some(Embedder { engine, jobs, id })
            }
        };
        let classifier = match models.classifier {
            None => None,
            Some(engine) => {
                if engine.info().labels.is_none() {
                    return Err(ServeError::Models(format!(
                        "{} has no intent head: --intent-model takes a model made by `edgellm intent train`",
                        engine.info().path.display()
                    )));
                }
                let id = model_id(&engine);
                let jobs = routes::spawn_classifier(engine.clone())?;
                Some(Classifier { engine, jobs, id })
            }
        };
        let app = Arc::new(App {
            generator,
            embedder,
            classifier,
            api_key: opts.api_key.clone().filter(|k| !k.is_empty()),
            metrics: metrics::Metrics::new(),
            started: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            next_id: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(routes::chat))
            .route("/v1/completions", post(routes::completions))
            .route("/v1/embeddings", post(routes::embeddings))
            .route("/v1/intents", post(routes::intents))
            .route("/v1/models", get(routes::models))
            .route("/health", get(routes::health))
            .route("/metrics", get(routes::metrics))
            .route("/tokenize", post(routes::tokenize))
            .route("/detokenize", post(routes::detokenize))
            .fallback(routes::not_found)
            .layer(axum::middleware::from_fn_with_state(app.clone(), routes::guard))
            .layer(DefaultBodyLimit::max(opts.body_limit))
            .with_state(app);
        let addr_s = format!("{}:{}", opts.host, opts.port);
        let listener = tokio::net::TcpListener::bind(&addr_s)
            .await
            .map_err(|source| ServeError::Bind { addr: addr_s.clone(), source })?;
        let addr = listener.local_addr()?;
        Ok(Server { listener, router, addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `shutdown` completes, then finish the requests in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        use axum::serve::ListenerExt;
        // Token-sized writes of a stream go out at once (no Nagle delay).
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router).with_graceful_shutdown(shutdown).await?;
        Ok(())
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Run a server on a runtime of its own until Ctrl-C or SIGTERM: what `edgellm serve` does.
/// `on_listening` is called with the address once the socket is bound.
pub fn serve(
    models: Models,
    opts: &ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    // Two I/O threads are plenty: inference runs on the scheduler's threads.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let server = Server::bind(models, opts).await?;
        on_listening(server.local_addr());
        server.run(shutdown_signal()).await
    })
}
