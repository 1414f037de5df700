//! Errors as OpenAI's error JSON, with the HTTP status that goes with them.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use edgellm::{Error, RuntimeError};
use serde_json::json;

/// A request that failed: the status and OpenAI's `{"error": {...}}` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's error `type` (`invalid_request_error`, `authentication_error`, `server_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, where one is.
    pub param: Option<&'static str>,
    /// A machine-readable code (`context_length_exceeded`, `invalid_api_key`, ...).
    pub code: Option<&'static str>,
    /// Seconds to wait before retrying (503 answers).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// A 400 naming the field at fault.
    pub fn bad_param(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { param: Some(param), ..ApiError::bad_request(message) }
    }

    /// This error with a code.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// A 401 for a missing or wrong API key.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            code: Some("invalid_api_key"),
            ..ApiError::bad_request(message)
        }
    }

    /// A 404 for a path that is not an endpoint.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, code: Some("not_found"), ..ApiError::bad_request(message) }
    }

    /// A 500 for a failure that is the server's, not the request's.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            ..ApiError::bad_request(message)
        }
    }

    /// The `{"error": {...}}` body.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let message = e.to_string();
        match e {
            Error::Runtime(RuntimeError::PromptTooLong { .. }) => {
                ApiError::bad_param("messages", message).with_code("context_length_exceeded")
            }
            Error::Runtime(RuntimeError::EmptyPrompt) => ApiError::bad_request(message),
            Error::InvalidParams(_) | Error::TokenOutOfRange { .. } | Error::ChatTemplate(_) => {
                ApiError::bad_request(message)
            }
            Error::InvalidSchema(_) => ApiError::bad_param("response_format", message),
            Error::NotADecoder { .. } | Error::NotAnEncoder { .. } => {
                ApiError::bad_param("model", message).with_code("model_not_supported")
            }
            Error::Embed(edgellm::EmbedError::Tokenizer(_)) => ApiError::bad_param("input", message),
            Error::QueueFull { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "server_busy",
                code: Some("queue_full"),
                retry_after: Some(1),
                ..ApiError::bad_request(message)
            },
            _ => ApiError::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        r
    }
}
