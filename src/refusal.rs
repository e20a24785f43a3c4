//! [`Refusal`]: every answer the gateway makes itself instead of a provider (a 4xx or 5xx:
//! no route, bad credentials, a limit, a blocked prompt, an unusable answer). Each domain
//! converts its own errors into one; [`Refusal::render`] puts it in a front door's shape,
//! once per door; the pipeline writes it to the host in one place (`filter::reply`).
//!
//! Adding a front door: a [`FrontDoor`] variant (providers), its arm in [`Refusal::render`],
//! and its value of [`FRONT_PROPERTY`] for Envoy's own replies.

use crate::providers::{anthropic, openai, FrontDoor, ProviderError};

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
    pub fn parts(self) -> (u16, &'static str, &'static str) {
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
/// Filter-state property naming the client's API ([`ANTHROPIC_FRONT`] or [`OPENAI_FRONT`]):
/// the bootstrap's `local_reply_config` reads it (as `wasm.tollgate_front`) to shape Envoy's
/// replies that never pass through the filter. Without it (a reply made before the filter
/// ran) the bootstrap goes by the path, so it is set wherever the filter rewrote the path
/// to one ending in `/messages` (`filter::reply::mark_front`).
pub const FRONT_PROPERTY: &str = "tollgate_front";
/// [`FRONT_PROPERTY`]'s value for `/v1/messages` clients.
pub const ANTHROPIC_FRONT: &str = "anthropic";
/// [`FRONT_PROPERTY`]'s value for OpenAI clients.
pub const OPENAI_FRONT: &str = "openai";

/// A front door's [`FRONT_PROPERTY`] value.
pub fn front_property(front: FrontDoor) -> &'static str {
    match front {
        FrontDoor::Anthropic => ANTHROPIC_FRONT,
        FrontDoor::OpenAi => OPENAI_FRONT,
    }
}

/// An answer the gateway makes itself, before it is put in a front door's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    /// OpenAI error `type` (Anthropic's is derived from it and the status).
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when known.
    pub param: Option<String>,
    /// `Retry-After` seconds (u32 keeps a refusal small: it travels in `Result`s).
    pub retry_after: Option<u32>,
    /// Other headers of the answer (`allow`, `www-authenticate`, `x-quota-*`).
    pub headers: Vec<(&'static str, String)>,
}

impl Refusal {
    /// A refusal of a known kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let (status, kind, code) = kind.parts();
        Self::custom(status, kind, code, message)
    }

    /// A refusal with its own status, OpenAI error type and code.
    pub fn custom(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// Names the request field at fault.
    pub fn param(mut self, param: Option<impl Into<String>>) -> Self {
        self.param = param.map(Into::into);
        self
    }

    /// Asks the client to wait `seconds` (`Retry-After`).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(u32::try_from(seconds).unwrap_or(u32::MAX));
        self
    }

    /// Adds a header to the answer.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The answer in the front door's shape: its status (529 for Anthropic's
    /// `overloaded_error`) and JSON body.
    pub fn render(&self, front: FrontDoor) -> (u16, Vec<u8>) {
        match front {
            FrontDoor::OpenAi => (
                self.status,
                openai::error_json(
                    &self.message,
                    self.kind,
                    Some(self.code),
                    self.param.as_deref(),
                ),
            ),
            FrontDoor::Anthropic => anthropic::error_reply(&ProviderError {
                status: self.status,
                kind: self.kind.to_string(),
                message: self.message.clone(),
                code: None,
            }),
        }
    }

    /// The answer's headers: `Retry-After` first, then the others, in order.
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        let retry = self.retry_after.map(|s| ("retry-after", s.to_string()));
        retry
            .into_iter()
            .chain(self.headers.iter().cloned())
            .collect()
    }
}

impl From<(ErrorKind, String)> for Refusal {
    fn from((kind, message): (ErrorKind, String)) -> Self {
        Refusal::new(kind, message)
    }
}
