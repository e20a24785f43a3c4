//! The request pipeline, host-independent: each Envoy callback of an HTTP stream calls
//! one method of [`Flow`], which drives the [`Host`] and says whether to continue.
//!
//! Two paths:
//! - plain endpoints: everything happens on the request headers (rewrite, credentials,
//!   cluster header), the body streams through untouched;
//! - `ai/llm` endpoints: the headers are held (`allow_on_headers_stop_iteration`) until
//!   the whole body is read, because the client's `model` chooses the backend and the body
//!   is translated to that provider's API; the response is translated back, event by
//!   event for streams ([`llm`]).

pub mod errors;
mod llm;
mod models;
mod security;

use crate::config::{Endpoint, Gateway, HeaderOp};
use crate::host::Host;
use crate::routing::{self, Miss, CLUSTER_HEADER};
use errors::{reply_error, ErrorKind};
use std::rc::Rc;

/// What Envoy should do after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// Client credential headers of every front door (OpenAI, Anthropic, Azure, Gemini).
/// They authenticate the client to the gateway and are never forwarded to a provider.
const CLIENT_CREDENTIALS: &[&str] = &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Envoy's per-request upstream timeout header, honoured by the router filter.
const TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

/// Which headers a modifier acts on.
#[derive(Debug, Clone, Copy)]
enum Side {
    Request,
    Response,
}

/// State of one HTTP stream.
pub struct Flow {
    gw: Rc<Gateway>,
    /// The matched endpoint, once routed.
    endpoint: Option<usize>,
    /// The chosen backend of that endpoint.
    backend: usize,
    /// Set on `ai/llm` endpoints.
    llm: Option<llm::Call>,
}

impl Flow {
    pub fn new(gw: Rc<Gateway>) -> Self {
        Self {
            gw,
            endpoint: None,
            backend: 0,
            llm: None,
        }
    }

    /// Request headers: match the endpoint; rewrite plain requests at once, hold LLM
    /// requests until their body is read.
    pub fn on_request_headers<H: Host>(&mut self, h: &mut H, end_of_stream: bool) -> Action {
        let method = h.request_header(":method").unwrap_or_default();
        let full_path = h.request_header(":path").unwrap_or_default();
        let (path, query) = match full_path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (full_path.as_str(), None),
        };
        let gw = Rc::clone(&self.gw);
        let candidates = gw.endpoints.iter().map(|e| (&e.pattern, e.method.as_str()));
        let (index, params) = match routing::find(candidates, &method, path) {
            Ok(found) => found,
            Err(miss) => {
                if method == "GET" && models::reply(h, &gw, path) {
                    return Action::Pause;
                }
                not_routed(h, miss, &method, path);
                return Action::Pause;
            }
        };
        self.endpoint = Some(index);
        let Some(ep) = gw.endpoints.get(index) else {
            return Action::Continue;
        };
        // Client authentication first (auth/api-keys, auth/validator): 401/403 here.
        let Ok(auth) = security::authenticate(h, ep, query) else {
            return Action::Pause;
        };
        let query = auth.query.as_deref();
        for name in CLIENT_CREDENTIALS {
            h.set_request_header(name, None);
        }
        if let Some(api) = ep.api {
            let mut call = llm::Call::new(api);
            call.security = security::CallSecurity::new(&ep.security, auth.roles);
            self.llm = Some(call);
            if end_of_stream {
                reply_error(
                    h,
                    ErrorKind::InvalidRequest,
                    "the request body is required",
                    &[],
                );
            }
            return Action::Pause;
        }
        let Some(b) = ep.backend() else {
            return Action::Continue;
        };
        let mut upstream_path = b.url_pattern.render(&params);
        if let Some(q) = query {
            upstream_path.push('?');
            upstream_path.push_str(q);
        }
        h.set_request_header(":path", Some(&upstream_path));
        if let Some(m) = &b.method {
            h.set_request_header(":method", Some(m));
        }
        route_to_backend(h, ep, 0);
        Action::Continue
    }

    /// Request body: only LLM endpoints read it (whole), translate it, and route.
    pub fn on_request_body<H: Host>(
        &mut self,
        h: &mut H,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        let gw = Rc::clone(&self.gw);
        let (Some(call), Some(ep)) = (
            self.llm.as_mut(),
            self.endpoint.and_then(|i| gw.endpoints.get(i)),
        ) else {
            return Action::Continue;
        };
        if !end_of_stream {
            // Envoy buffers the body until the last callback (its buffer limit answers 413).
            return Action::Pause;
        }
        let body = h.request_body(size).unwrap_or_default();
        match call.on_request(h, ep, &body) {
            Some(backend) => {
                self.backend = backend;
                route_to_backend(h, ep, backend);
                Action::Continue
            }
            None => Action::Pause,
        }
    }

    /// Response headers: response modifiers; LLM responses are prepared for translation.
    pub fn on_response_headers<H: Host>(&mut self, h: &mut H, end_of_stream: bool) -> Action {
        let gw = Rc::clone(&self.gw);
        let Some(ep) = self.endpoint.and_then(|i| gw.endpoints.get(i)) else {
            return Action::Continue;
        };
        if let Some(b) = ep.backends.get(self.backend) {
            apply(h, Side::Response, &b.modifiers.response);
        }
        match self.llm.as_mut() {
            Some(call) => call.on_response_headers(h, end_of_stream),
            None => Action::Continue,
        }
    }

    /// Response body: LLM responses are translated (streams chunk by chunk).
    pub fn on_response_body<H: Host>(
        &mut self,
        h: &mut H,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        match self.llm.as_mut() {
            Some(call) => call.on_response_body(h, size, end_of_stream),
            None => Action::Continue,
        }
    }
}

/// 404 or 405 for a request no endpoint takes.
fn not_routed<H: Host>(h: &mut H, miss: Miss, method: &str, path: &str) {
    match miss {
        Miss::NotFound => {
            let msg = format!("no endpoint matches {method} {path}");
            reply_error(h, ErrorKind::NotFound, &msg, &[]);
        }
        Miss::MethodNotAllowed(allowed) => {
            let allow = allowed.join(", ");
            let msg = format!("method {method} is not allowed on {path} (allowed: {allow})");
            reply_error(h, ErrorKind::MethodNotAllowed, &msg, &[("allow", &allow)]);
        }
    }
}

/// Points the request at a backend: authority, timeout, request modifiers, and last the
/// cluster header (that change makes Envoy pick the backend's cluster).
fn route_to_backend<H: Host>(h: &mut H, ep: &Endpoint, backend: usize) {
    let Some(b) = ep.backends.get(backend) else {
        return;
    };
    h.set_request_header(":authority", Some(&b.authority()));
    if let Some(ms) = ep.timeout_ms {
        h.set_request_header(TIMEOUT_HEADER, Some(&ms.to_string()));
    }
    apply(h, Side::Request, &b.modifiers.request);
    h.set_request_header(CLUSTER_HEADER, Some(&b.cluster));
}

/// Applies martian header operations in order.
fn apply<H: Host>(h: &mut H, side: Side, ops: &[HeaderOp]) {
    for op in ops {
        match (op, side) {
            (HeaderOp::Set { name, value }, Side::Request) => {
                h.set_request_header(name, Some(&value.0))
            }
            (HeaderOp::Set { name, value }, Side::Response) => {
                h.set_response_header(name, Some(&value.0))
            }
            (HeaderOp::Append { name, value }, Side::Request) => {
                h.add_request_header(name, &value.0)
            }
            (HeaderOp::Append { name, value }, Side::Response) => {
                h.add_response_header(name, &value.0)
            }
            (HeaderOp::Remove { names }, Side::Request) => {
                names.iter().for_each(|n| h.set_request_header(n, None))
            }
            (HeaderOp::Remove { names }, Side::Response) => {
                names.iter().for_each(|n| h.set_response_header(n, None))
            }
            (HeaderOp::Copy { from, to }, Side::Request) => {
                if let Some(v) = h.request_header(from) {
                    h.set_request_header(to, Some(&v));
                }
            }
            (HeaderOp::Copy { from, to }, Side::Response) => {
                if let Some(v) = h.response_header(from) {
                    h.set_response_header(to, Some(&v));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
