//! The OpenAI request bodies, and what they become: [`GenerateParams`] and a prompt.

use edgellm::{GenerateParams, Message, OutputFormat, SamplerConfig, MAX_TOP_LOGPROBS};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A message's `content`: a string, or an array of parts of which only `text` ones are
/// supported.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Value>),
}

/// A chat message as OpenAI sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatMessageIn {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: Option<bool>,
}

/// The sampling and limit fields chat and completions share.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Sampling {
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<i64>,
    #[serde(default)]
    min_p: Option<f32>,
    #[serde(default)]
    repeat_penalty: Option<f32>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    ignore_eos: Option<bool>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    pub(crate) messages: Vec<ChatMessageIn>,
    #[serde(flatten)]
    pub(crate) sampling: Sampling,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<i64>,
    #[serde(default)]
    response_format: Option<Value>,
}

/// `prompt` of a completion: a string, one string in an array, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionRequest {
    pub(crate) prompt: Prompt,
    #[serde(flatten)]
    pub(crate) sampling: Sampling,
    /// Legacy completions: an integer, the number of alternatives per token.
    #[serde(default)]
    logprobs: Option<i64>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    best_of: Option<i64>,
}

/// `input` of an embedding request.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum EmbedInput {
    One(String),
    Many(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbedRequest {
    pub(crate) input: EmbedInput,
    #[serde(default)]
    pub(crate) encoding_format: Option<String>,
    #[serde(default)]
    pub(crate) dimensions: Option<i64>,
}

/// `input` of an intent request.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum IntentInput {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/intents`.
#[derive(Debug, Deserialize)]
pub(crate) struct IntentRequest {
    pub(crate) input: IntentInput,
    /// Labels listed per utterance (default 3).
    #[serde(default)]
    pub(crate) top_k: Option<i64>,
    /// The model's name (ignored: the server has one intent model).
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) model: Option<String>,
}

/// `POST /tokenize` (llama-server's shape).
#[derive(Debug, Deserialize)]
pub(crate) struct TokenizeRequest {
    pub(crate) content: String,
    #[serde(default)]
    pub(crate) add_special: bool,
    #[serde(default)]
    pub(crate) parse_special: bool,
    #[serde(default)]
    pub(crate) with_pieces: bool,
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize)]
pub(crate) struct DetokenizeRequest {
    pub(crate) tokens: Vec<i64>,
}

/// Parse a JSON body into `T`, with OpenAI's 400 for malformed JSON and wrong field types.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request has no body: send a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "malformed JSON",
            serde_json::error::Category::Data => "a field has the wrong type or is missing",
            serde_json::error::Category::Io => "unreadable body",
        };
        ApiError::bad_request(format!("{what}: {e}")).with_code("invalid_json")
    })
}

impl ChatRequest {
    /// The conversation, text parts joined.
    pub(crate) fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_param("messages", "messages is empty: send at least one message"));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let content = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                                (Some("text"), Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(ApiError::bad_param(
                                        "messages",
                                        format!(
                                            "messages[{i}]: content part of type {} is not supported: this server takes text only",
                                            kind.unwrap_or("(none)")
                                        ),
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                Ok(Message::new(m.role.clone(), content))
            })
            .collect()
    }

    /// The output format of `response_format`.
    pub(crate) fn format(&self) -> Result<OutputFormat, ApiError> {
        let Some(rf) = &self.response_format else { return Ok(OutputFormat::Text) };
        let bad = |m: &str| Err(ApiError::bad_param("response_format", m.to_string()));
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => Ok(OutputFormat::Text),
            Some("json_object") => Ok(OutputFormat::JsonObject),
            Some("json_schema") => {
                let Some(js) = rf.get("json_schema") else {
                    return bad(
                        "response_format of type json_schema needs a json_schema object with a schema",
                    );
                };
                match js.get("schema") {
                    Some(s) if s.is_object() || s.is_boolean() => Ok(OutputFormat::JsonSchema(s.clone())),
                    Some(_) => bad("response_format.json_schema.schema must be a JSON schema object"),
                    // OpenAI accepts a missing schema as "any JSON object".
                    None => Ok(OutputFormat::JsonObject),
                }
            }
            Some(other) => bad(&format!(
                "response_format type '{other}' is not supported: use text, json_object or json_schema"
            )),
            None => bad("response_format needs a type: text, json_object or json_schema"),
        }
    }

    /// Top log-probabilities asked for (`logprobs: true`, `top_logprobs: k`).
    pub(crate) fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (false, None) => Ok(None),
            (false, Some(_)) => Err(ApiError::bad_param("top_logprobs", "top_logprobs needs logprobs: true")),
            (true, k) => top_logprobs("top_logprobs", k.unwrap_or(0)).map(Some),
        }
    }
}

impl CompletionRequest {
    /// The legacy fields this server does not support, refused rather than ignored.
    pub(crate) fn check_unsupported(&self) -> Result<(), ApiError> {
        if self.echo == Some(true) {
            return Err(ApiError::bad_param("echo", "echo is not supported"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_param("suffix", "suffix (insertion) is not supported"));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::bad_param("best_of", "best_of must be 1"));
        }
        Ok(())
    }

    /// Top log-probabilities asked for (`logprobs: k`).
    pub(crate) fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        self.logprobs.map(|k| top_logprobs("logprobs", k)).transpose()
    }
}

fn top_logprobs(param: &'static str, k: i64) -> Result<usize, ApiError> {
    if !(0..=MAX_TOP_LOGPROBS as i64).contains(&k) {
        return Err(ApiError::bad_param(param, format!("{param} {k} must be in 0..={MAX_TOP_LOGPROBS}")));
    }
    Ok(k as usize)
}

impl Sampling {
    /// Whether the answer streams, and whether a usage chunk ends the stream (by default it
    /// does; `stream_options.include_usage: false` turns it off).
    pub(crate) fn stream(&self) -> (bool, bool) {
        let usage = self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(true);
        (self.stream.unwrap_or(false), usage)
    }

    /// The generation parameters, for a prompt of `n_prompt` tokens in a context of `n_ctx`.
    ///
    /// OpenAI's defaults: temperature 1 and top-p 1 (no top-k, min-p or penalty) unless set.
    /// `max_tokens` absent: until the context is full. A prompt that does not leave room for
    /// `max_tokens` is refused (`context_length_exceeded`), as OpenAI does.
    pub(crate) fn params(&self, n_prompt: usize, n_ctx: usize) -> Result<GenerateParams, ApiError> {
        if n_prompt > n_ctx {
            return Err(ApiError::bad_param(
                "messages",
                format!("the prompt is {n_prompt} tokens: this server's context holds {n_ctx} (see -c)"),
            )
            .with_code("context_length_exceeded"));
        }
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::bad_param(
                "n",
                format!("n = {n}: this server generates one choice per request (n = 1)"),
            ));
        }
        for (name, v) in
            [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)]
        {
            if v.is_some_and(|v| v != 0.0) {
                return Err(ApiError::bad_param(
                    name,
                    format!("{name} is not supported (only 0); use repeat_penalty (1 = off)"),
                ));
            }
        }
        let room = n_ctx - n_prompt;
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => room,
            Some(m) if m < 1 => {
                return Err(ApiError::bad_param("max_tokens", format!("max_tokens {m} must be at least 1")))
            }
            Some(m) if m as u64 > room as u64 => {
                return Err(ApiError::bad_param(
                    "max_tokens",
                    format!(
                        "this server's context holds {n_ctx} tokens; the prompt takes {n_prompt}, so max_tokens can be at most {room}, not {m}"
                    ),
                )
                .with_code("context_length_exceeded"))
            }
            Some(m) => m as usize,
        };
        if room == 0 {
            return Err(ApiError::bad_param(
                "messages",
                format!("the prompt is {n_prompt} tokens and fills this server's whole context of {n_ctx}"),
            )
            .with_code("context_length_exceeded"));
        }
        let top_k = match self.top_k {
            None => 0,
            Some(k) if k < 0 => {
                return Err(ApiError::bad_param("top_k", format!("top_k {k} must be >= 0 (0 = off)")))
            }
            Some(k) => k as usize,
        };
        let seed = match self.seed {
            None => SamplerConfig::default().seed,
            Some(s) => s as u64,
        };
        let sampling = SamplerConfig {
            temperature: self.temperature.unwrap_or(1.0),
            top_k,
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repeat_penalty: self.repeat_penalty.unwrap_or(1.0),
            seed,
            ..SamplerConfig::default()
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 16 {
            return Err(ApiError::bad_param("stop", format!("{} stop strings: at most 16", stop.len())));
        }
        let params = GenerateParams {
            max_tokens,
            sampling,
            stop,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            ..GenerateParams::default()
        };
        params.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(params)
    }
}
