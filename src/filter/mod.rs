//! The request pipeline, host-independent: each Envoy callback of an HTTP stream calls
//! one method of [`Flow`], which drives the [`Host`] and says whether to continue.

pub mod errors;

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
}

impl Flow {
    pub fn new(gw: Rc<Gateway>) -> Self {
        Self { gw, endpoint: None }
    }

    fn matched(&self) -> Option<&Endpoint> {
        self.endpoint.and_then(|i| self.gw.endpoints.get(i))
    }

    /// Request headers: match the endpoint, rewrite the request toward its backend.
    pub fn on_request_headers<H: Host>(&mut self, h: &mut H) -> Action {
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
            Err(Miss::NotFound) => {
                let msg = format!("no endpoint matches {method} {path}");
                reply_error(h, ErrorKind::NotFound, &msg, &[]);
                return Action::Pause;
            }
            Err(Miss::MethodNotAllowed(allowed)) => {
                let allow = allowed.join(", ");
                let msg = format!("method {method} is not allowed on {path} (allowed: {allow})");
                reply_error(h, ErrorKind::MethodNotAllowed, &msg, &[("allow", &allow)]);
                return Action::Pause;
            }
        };
        self.endpoint = Some(index);
        let Some(ep) = gw.endpoints.get(index) else {
            return Action::Continue;
        };
        let b = &ep.backend;
        let mut upstream_path = b.url_pattern.render(&params);
        if let Some(q) = query {
            upstream_path.push('?');
            upstream_path.push_str(q);
        }
        for name in CLIENT_CREDENTIALS {
            h.set_request_header(name, None);
        }
        h.set_request_header(":path", Some(&upstream_path));
        h.set_request_header(":authority", Some(&b.authority()));
        if let Some(m) = &b.method {
            h.set_request_header(":method", Some(m));
        }
        if let Some(ms) = ep.timeout_ms {
            h.set_request_header(TIMEOUT_HEADER, Some(&ms.to_string()));
        }
        apply(h, Side::Request, &b.modifiers.request);
        // Last: this header change makes Envoy pick the backend's cluster.
        h.set_request_header(CLUSTER_HEADER, Some(&b.cluster));
        Action::Continue
    }

    /// Response headers: apply the backend's response-scope modifiers.
    pub fn on_response_headers<H: Host>(&mut self, h: &mut H) -> Action {
        if let Some(ep) = self.matched() {
            apply(h, Side::Response, &ep.backend.modifiers.response);
        }
        Action::Continue
    }
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
