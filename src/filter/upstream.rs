//! Writing a request toward its backend, in one place: what of the client's request the
//! backend may get ([`forward_only`]), the provider request an LLM call computed
//! ([`write_llm`]), and the routing to the backend's cluster ([`route_to_backend`]). A failover
//! attempt goes as a callout instead: [`callout`] computes the same request as data.
//! KrakenD's martian modifiers apply here to either ([`apply`]).

use crate::config::{Endpoint, HeaderOp};
use crate::host::Host;
use crate::providers::Outgoing;
use crate::routing::forward::Forward;
use crate::routing::{martian, CLUSTER_HEADER};

/// The unique id Envoy gives each request (martian's `header.Id` copies it).
const REQUEST_ID: &str = "x-request-id";

/// Envoy's per-request upstream timeout header, honoured by the router filter.
pub const TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

/// Default callout timeout when the endpoint has none (LLM answers are slow).
const DEFAULT_TIMEOUT_MS: u64 = 600_000;

/// A header map martian modifiers act on: the proxied request or answer (through the
/// host), or a failover attempt's header list.
pub trait Headers {
    fn get(&self, name: &str) -> Option<String>;
    /// Sets (`Some`) or removes (`None`) every value of `name`.
    fn set(&mut self, name: &str, value: Option<&str>);
    /// Adds a value, keeping the others.
    fn add(&mut self, name: &str, value: &str);
}

/// The request headers of the host.
pub struct Request<'a, H: Host>(pub &'a mut H);

impl<H: Host> Headers for Request<'_, H> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.request_header(name)
    }
    fn set(&mut self, name: &str, value: Option<&str>) {
        self.0.set_request_header(name, value)
    }
    fn add(&mut self, name: &str, value: &str) {
        self.0.add_request_header(name, value)
    }
}

/// The response headers of the host.
pub struct Response<'a, H: Host>(pub &'a mut H);

impl<H: Host> Headers for Response<'_, H> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.response_header(name)
    }
    fn set(&mut self, name: &str, value: Option<&str>) {
        self.0.set_response_header(name, value)
    }
    fn add(&mut self, name: &str, value: &str) {
        self.0.add_response_header(name, value)
    }
}

/// The first value of `name` in a header list.
fn first(list: &[(String, String)], name: &str) -> Option<String> {
    list.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// A header list held as data (a callout's answer), in order, duplicates kept.
impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        first(self, name)
    }
    fn set(&mut self, name: &str, value: Option<&str>) {
        self.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.push((name.to_string(), v.to_string()));
        }
    }
    fn add(&mut self, name: &str, value: &str) {
        self.push((name.to_string(), value.to_string()));
    }
}

/// Applies martian header operations in order.
pub fn apply(headers: &mut impl Headers, ops: &[HeaderOp]) {
    for op in ops {
        match op {
            HeaderOp::Set { name, value } => headers.set(name, Some(&value.0)),
            HeaderOp::Append { name, value } => headers.add(name, &value.0),
            HeaderOp::Remove { names } => names.iter().for_each(|n| headers.set(n, None)),
            HeaderOp::Copy { from, to } => {
                if let Some(v) = headers.get(from) {
                    headers.set(to, Some(&v));
                }
            }
            HeaderOp::Id { name } => {
                // Envoy gives every request a fresh x-request-id (an external one is replaced).
                if headers.get(name).is_none() {
                    if let Some(id) = headers.get(REQUEST_ID) {
                        headers.set(name, Some(&id));
                    }
                }
            }
            HeaderOp::Query { name, value } => {
                if let Some(path) = headers.get(":path") {
                    headers.set(":path", Some(&martian::set_query(&path, name, value)));
                }
            }
        }
    }
}

/// Removes every request header the backend may not get ([`Forward::keeps`]). Runs after
/// everything that reads the client's headers (auth, limits, quotas, routing) and before
/// the gateway sets its own.
pub fn forward_only<H: Host>(h: &mut H, forward: &Forward) {
    let mut dropped: Vec<String> = h
        .request_headers()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !forward.keeps(k))
        .collect();
    dropped.dedup();
    for name in dropped {
        h.set_request_header(&name, None);
    }
}

/// Points the request at a backend: authority, timeout, request modifiers, and last the
/// cluster header (that change makes Envoy pick the backend's cluster).
pub fn route_to_backend<H: Host>(h: &mut H, ep: &Endpoint, backend: usize) {
    let Some(b) = ep.backends.get(backend) else {
        return;
    };
    h.set_request_header(":authority", Some(&b.authority()));
    if let Some(ms) = ep.timeout_ms {
        h.set_request_header(TIMEOUT_HEADER, Some(&ms.to_string()));
    }
    apply(&mut Request(h), &b.modifiers.request);
    h.set_request_header(CLUSTER_HEADER, Some(&b.cluster));
}

/// The headers a provider request sets, in order: path, method, JSON framing, no
/// compression (the answer must be readable to be translated), then the provider's own (its
/// credential first).
fn provider_headers(out: &Outgoing) -> Vec<(&str, Option<String>)> {
    let mut list: Vec<(&str, Option<String>)> = vec![
        (":path", Some(out.path.clone())),
        (":method", Some("POST".into())),
        ("content-type", Some("application/json".into())),
        ("content-length", Some(out.body.len().to_string())),
        ("accept-encoding", None),
    ];
    list.extend(
        out.headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.clone()))),
    );
    list
}

/// Writes an LLM call's provider request onto the proxied request and routes it to backend
/// `backend`: the one place the request side of an LLM call touches the host.
pub fn write_llm<H: Host>(h: &mut H, ep: &Endpoint, backend: usize, out: &Outgoing) {
    let Some(b) = ep.backends.get(backend) else {
        return;
    };
    // The client's headers the provider may get (`input_headers`); then what its API needs.
    forward_only(h, &b.forward);
    for (name, value) in provider_headers(out) {
        h.set_request_header(name, value.as_deref());
    }
    h.set_request_body(&out.body);
    route_to_backend(h, ep, backend);
}

/// A stored-response request (`GET …/responses/{id}`, …) written toward backend `backend`:
/// the client's headers the backend may get, the path and the provider's credential; the
/// method and any body as the client sent them. Uncompressed: a retrieve's answer is read
/// for its usage.
pub fn write_stored<H: Host>(h: &mut H, ep: &Endpoint, backend: usize, out: &Outgoing) {
    let Some(b) = ep.backends.get(backend) else {
        return;
    };
    forward_only(h, &b.forward);
    h.set_request_header(":path", Some(&out.path));
    h.set_request_header("accept-encoding", None);
    for (name, value) in &out.headers {
        h.set_request_header(name, Some(value));
    }
    route_to_backend(h, ep, backend);
}

/// A failover attempt, ready to dispatch.
pub struct Callout {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// The header changes of a failover attempt over the client's headers, as the proxied path
/// makes them on the host: in order, the latest of a name winning (`None`: removed).
struct Changes<'a> {
    client: &'a [(String, String)],
    list: Vec<(String, Option<String>)>,
}

impl Headers for Changes<'_> {
    fn get(&self, name: &str) -> Option<String> {
        match self.list.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => v.clone(),
            None => first(self.client, name),
        }
    }
    fn set(&mut self, name: &str, value: Option<&str>) {
        self.list.retain(|(k, _)| k != name);
        self.list.push((name.to_string(), value.map(String::from)));
    }
    fn add(&mut self, name: &str, value: &str) {
        self.list.push((name.to_string(), Some(value.to_string())));
    }
}

/// Backend `backend`'s request as a callout: of the `client`'s headers (as the client sent
/// them, credentials removed, the gateway's role and claims set) those the backend may get,
/// then the provider request's and the backend's request modifiers — never what another
/// attempt wrote. The routing and timeout headers are Envoy's business on the proxied path
/// only: the callout names its cluster and timeout itself.
pub fn callout(
    ep: &Endpoint,
    backend: usize,
    out: Outgoing,
    client: &[(String, String)],
) -> Option<Callout> {
    let b = ep.backends.get(backend)?;
    let mut changes = Changes {
        client,
        list: Vec::new(),
    };
    for (name, _) in client.iter().filter(|(k, _)| !b.forward.keeps(k)) {
        changes.set(name, None);
    }
    for (name, value) in provider_headers(&out) {
        changes.set(name, value.as_deref());
    }
    changes.set(":authority", Some(&b.authority()));
    apply(&mut changes, &b.modifiers.request);
    let set_here = |k: &str| changes.list.iter().any(|(n, _)| n == k);
    let passes = |k: &str| b.forward.client_header(k) || b.forward.owned.iter().any(|o| o == k);
    let mut headers: Vec<(String, String)> = client
        .iter()
        .filter(|(k, _)| passes(k) && !set_here(k) && k != "content-length")
        .cloned()
        .collect();
    headers.extend(
        changes
            .list
            .iter()
            .filter(|(k, _)| k != CLUSTER_HEADER && k != TIMEOUT_HEADER && k != "content-length")
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone()))),
    );
    headers.push(("content-length".into(), out.body.len().to_string()));
    Some(Callout {
        cluster: b.cluster.clone(),
        headers,
        body: out.body,
        timeout_ms: ep.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
    })
}
