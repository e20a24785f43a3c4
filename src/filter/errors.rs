//! Errors the gateway itself answers, in the client's front door's shape (OpenAI's or
//! Anthropic's), with one mapping from error kind to HTTP status. Every reply the gateway
//! makes itself goes through [`reply_error`].

use crate::config::Endpoint;
use crate::host::Host;
use crate::providers::FrontDoor;

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
/// Filter-state property naming the client's API ([`ANTHROPIC_FRONT`] or [`OPENAI_FRONT`]):
/// the bootstrap's `local_reply_config` reads it (as `wasm.tollgate_front`) to shape Envoy's
/// replies that never pass through the filter. Without it (a reply made before the filter
/// ran) the bootstrap goes by the path, so it is set wherever the filter rewrote the path
/// to one ending in `/messages` ([`mark_front`]).
pub const FRONT_PROPERTY: &str = "tollgate_front";
/// [`FRONT_PROPERTY`]'s value for `/v1/messages` clients.
pub const ANTHROPIC_FRONT: &str = "anthropic";
/// [`FRONT_PROPERTY`]'s value for OpenAI clients.
pub const OPENAI_FRONT: &str = "openai";

/// Records the client's API for Envoy's replies when the path Envoy will see does not tell
/// it: on LLM endpoints (the path becomes the provider's) and wherever the upstream path ends
/// in `/messages` or the client's does (plain endpoints otherwise skip the hostcall).
pub fn mark_front<H: Host + ?Sized>(h: &mut H, ep: &Endpoint, upstream_path: Option<&str>) {
    let front = front(ep);
    let needed = ep.api.is_some()
        || front == FrontDoor::Anthropic
        || upstream_path.is_some_and(|p| p.ends_with("/messages"));
    if needed {
        let name = match front {
            FrontDoor::Anthropic => ANTHROPIC_FRONT,
            FrontDoor::OpenAi => OPENAI_FRONT,
        };
        h.set_property(FRONT_PROPERTY, name.as_bytes());
    }
}

/// A refusal the gateway answers itself, before it is put in a front door's shape.
#[derive(Debug, Clone, Copy)]
pub struct GatewayError<'a> {
    pub status: u32,
    /// OpenAI error `type` (Anthropic's is derived from it and the status).
    pub kind: &'a str,
    pub code: &'a str,
    pub message: &'a str,
    /// The request field at fault, when known.
    pub param: Option<&'a str>,
}

impl<'a> GatewayError<'a> {
    pub fn new(kind: ErrorKind, message: &'a str) -> Self {
        let (status, kind, code) = kind.parts();
        Self {
            status,
            kind,
            code,
            message,
            param: None,
        }
    }
}

/// The client's API on an endpoint: Anthropic's on `/messages` endpoints (the `ai/llm`
/// Anthropic front door, and plain endpoints by that name), else OpenAI's.
pub fn front(ep: &Endpoint) -> FrontDoor {
    match ep.api {
        Some(front) => front,
        None if ep.pattern.as_str().ends_with("/messages") => FrontDoor::Anthropic,
        None => FrontDoor::OpenAi,
    }
}

/// The client's API when no endpoint took the request: Anthropic's SDKs always send
/// `anthropic-version`, and `/messages` is their path.
pub fn front_of_request<H: Host + ?Sized>(h: &H, path: &str) -> FrontDoor {
    if h.request_header("anthropic-version").is_some() || path.ends_with("/messages") {
        FrontDoor::Anthropic
    } else {
        FrontDoor::OpenAi
    }
}

/// Answers the client with a gateway error in its front door's shape (and status: 529 for
/// Anthropic's `overloaded_error`), marked with [`ERROR_HEADER`].
pub fn reply_error<H: Host + ?Sized>(
    h: &mut H,
    front: FrontDoor,
    e: GatewayError<'_>,
    extra: &[(&str, &str)],
) {
    let status = u16::try_from(e.status).unwrap_or(500);
    let (status, body) = front.gateway_error(status, e.kind, e.code, e.message, e.param);
    let mut headers = vec![("content-type", "application/json"), (ERROR_HEADER, "1")];
    headers.extend_from_slice(extra);
    h.send_reply(u32::from(status), &headers, &body);
}
