//! Errors the gateway itself answers, in OpenAI's error shape, with one mapping from
//! error kind to HTTP status.

use crate::host::Host;
use crate::providers::openai::error_json;

/// What went wrong, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed (400).
    InvalidRequest,
    /// No endpoint by that path (404).
    NotFound,
    /// No backend serves the requested model (404).
    ModelNotFound,
    /// Wrong method for the path (405).
    MethodNotAllowed,
    /// A budget is spent (429).
    QuotaExceeded,
    /// The gateway could not do its part (500).
    Internal,
    /// The provider failed or answered nonsense (502).
    BadGateway,
    /// No or unknown client credential (401).
    Unauthorized,
    /// The credential may not do this (403).
    Forbidden,
    /// A security guard refused the prompt (400).
    Blocked,
}

impl ErrorKind {
    /// HTTP status, OpenAI error `type`, and error `code`.
    pub fn parts(self) -> (u32, &'static str, &'static str) {
        match self {
            ErrorKind::InvalidRequest => (400, "invalid_request_error", "invalid_request"),
            ErrorKind::NotFound => (404, "invalid_request_error", "not_found"),
            ErrorKind::ModelNotFound => (404, "invalid_request_error", "model_not_found"),
            ErrorKind::MethodNotAllowed => (405, "invalid_request_error", "method_not_allowed"),
            ErrorKind::QuotaExceeded => (429, "rate_limit_error", "quota_exceeded"),
            ErrorKind::Internal => (500, "server_error", "internal_error"),
            ErrorKind::BadGateway => (502, "server_error", "bad_gateway"),
            ErrorKind::Unauthorized => (401, "authentication_error", "invalid_api_key"),
            ErrorKind::Forbidden => (403, "permission_error", "forbidden"),
            ErrorKind::Blocked => (400, "invalid_request_error", "content_blocked"),
        }
    }
}

/// Marks an error the gateway answered itself (value `1`: the filter; [`ENVOY_REPLY`]:
/// Envoy, reshaped by the bootstrap's `local_reply_config`), as opposed to a provider's.
pub const ERROR_HEADER: &str = "x-tollgate-error";
/// [`ERROR_HEADER`]'s value on Envoy's own replies.
pub const ENVOY_REPLY: &str = "envoy";
/// Filter-state property naming the client's API when it is not OpenAI's
/// ([`ANTHROPIC_FRONT`]): the bootstrap's `local_reply_config` reads it (as
/// `wasm.tollgate_front`) to shape Envoy's replies that never pass through the filter.
pub const FRONT_PROPERTY: &str = "tollgate_front";
/// [`FRONT_PROPERTY`]'s value for `/v1/messages` clients.
pub const ANTHROPIC_FRONT: &str = "anthropic";

/// Answers the client with a gateway error.
pub fn reply_error<H: Host>(h: &mut H, kind: ErrorKind, message: &str, extra: &[(&str, &str)]) {
    let (status, kind, code) = kind.parts();
    let body = error_json(message, kind, Some(code), None);
    let mut headers = vec![("content-type", "application/json"), (ERROR_HEADER, "1")];
    headers.extend_from_slice(extra);
    h.send_reply(status, &headers, &body);
}
