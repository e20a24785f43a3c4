//! Multi-LLM routing in the pipeline: header conditions, weights and circuit breakers pick
//! the backend ([`governance::routing`]); with `ai/routing.failover`, a non-streaming request
//! is sent through HTTP callouts, one backend after the other, each attempt translated for
//! its provider, until one answers without 429/5xx; the client gets that answer (translated
//! back) as the gateway's reply.
//!
//! Why callouts and not Envoy retries: a retry resends the same bytes to the same cluster,
//! but a fallback provider needs another cluster, another path, other credentials and a
//! differently translated body. Streams are not failed over (their bytes are already on the
//! way to the client when a provider fails mid-stream); they go, proxied as usual, to the
//! first backend whose breaker lets them through.
//!
//! Each attempt reuses the normal translation code on a [`Capture`] host that records the
//! request the pipeline would send (and replays the callout answer as if it were the
//! upstream response), so translation, modifiers, token charging and response validation
//! are the same on both paths. A callout carries the translated request's headers and the
//! backend's request modifiers, not the client's other headers.

use super::reply::reply;
use super::{apply, reserve_budget, route_to_backend, Action, Flow, Side, TIMEOUT_HEADER};
use crate::governance::{self, routing};
use crate::host::{Host, SharedError};
use crate::routing::forward::Forward;
use crate::routing::CLUSTER_HEADER;
use crate::security::secrets::{Mask, Secrets};
use serde_json::Value;
use std::rc::Rc;

/// Default callout timeout when the endpoint has none (LLM answers are slow).
const DEFAULT_TIMEOUT_MS: u64 = 600_000;

/// Headers never copied from a callout answer into the reply.
const HOP_BY_HOP: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// An answer ready for the client.
struct Answer {
    status: u32,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The attempts of one request.
pub struct Failover {
    order: Vec<usize>,
    next: usize,
    /// The backend and callout token in flight.
    current: Option<(usize, u32)>,
    /// The client's request body (after templates).
    body: Vec<u8>,
    /// The request headers as the client sent them (credentials removed, the gateway's
    /// role and claims set), before any backend rewrote them: each attempt gets those its
    /// backend may get, never another attempt's.
    client: Vec<(String, String)>,
    /// The last failed answer (returned when no backend is left).
    last: Option<Answer>,
    /// Shortest breaker wait among skipped backends.
    wait_ms: Option<u64>,
}

impl Flow {
    /// After the LLM body is read: choose the backend (Some(action) when routing answered or
    /// took over the request; None: continue with the normal path).
    pub(super) fn route_llm<H: Host>(&mut self, h: &mut H, body: &[u8]) -> Option<Action> {
        let gw = Rc::clone(&self.gw);
        let ep = self.endpoint.and_then(|i| gw.endpoints.get(i))?;
        if !ep.is_routed() {
            return None;
        }
        let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let model = doc.get("model").and_then(Value::as_str).unwrap_or_default();
        let stream = doc.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let mut order = super::choose::order(h, ep, model);
        if order.is_empty() {
            return None; // model routing answers (unknown model: 404)
        }
        // security: backends whose model the caller may not use (models_by_role) are not
        // tried while one it may use remains; with none, the first one's check answers 403.
        if let Some(call) = &self.llm {
            let allowed: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&b| call.may_use(ep, b, model))
                .collect();
            if !allowed.is_empty() {
                order = allowed;
            }
        }
        if stream || order.len() == 1 {
            let mut wait: Option<u64> = None;
            for (i, &b) in order.iter().enumerate() {
                let breaker = ep.backends.get(b).and_then(|x| x.rules.breaker.as_ref());
                match routing::allow(h, breaker) {
                    Ok(()) => {
                        if let Some(call) = self.llm.as_mut() {
                            call.forced_backend = Some(b);
                        }
                        if stream && ep.governance.routing.failover && i + 1 < order.len() {
                            // A stream is proxied to this backend; should it fail before its
                            // first byte, the others are tried (on_stream_failure).
                            self.stream_fallback = Some(Failover {
                                order: order[i + 1..].to_vec(),
                                next: 0,
                                current: None,
                                body: body.to_vec(),
                                client: h.request_headers(),
                                last: None,
                                wait_ms: wait,
                            });
                        }
                        return None;
                    }
                    Err(w) => wait = Some(wait.map_or(w, |x: u64| x.min(w))),
                }
            }
            self.replied = true;
            reply(
                h,
                ep.front_door(),
                &routing::unavailable(wait.unwrap_or(1000)),
            );
            return Some(Action::Pause);
        }
        self.failover = Some(Failover {
            order,
            next: 0,
            current: None,
            body: body.to_vec(),
            client: h.request_headers(),
            last: None,
            wait_ms: None,
        });
        Some(self.next_attempt(h))
    }

    /// A proxied stream failed before its first byte (429/5xx at its response headers):
    /// fail over to the next backends through callouts. Their answer reaches the client as
    /// one translated stream, delivered at once (a callout answers whole). Returns false
    /// when there is nothing to fail over to.
    pub(super) fn on_stream_failure<H: Host>(&mut self, h: &mut H, status: Option<u16>) -> bool {
        if !routing::should_fail_over(status) {
            return false;
        }
        let Some(f) = self.stream_fallback.take() else {
            return false;
        };
        h.counter_add(governance::METRIC_FAILOVER, 1);
        self.failover = Some(f);
        self.next_attempt(h);
        true
    }

    /// Sends the request to the next backend that may be tried, or answers the client.
    fn next_attempt<H: Host>(&mut self, h: &mut H) -> Action {
        let gw = Rc::clone(&self.gw);
        let (Some(ep), Some(f), Some(call)) = (
            self.endpoint.and_then(|i| gw.endpoints.get(i)),
            self.failover.as_mut(),
            self.llm.as_mut(),
        ) else {
            return Action::Continue;
        };
        while let Some(&b) = f.order.get(f.next) {
            f.next += 1;
            let Some(backend) = ep.backends.get(b) else {
                continue;
            };
            let breaker = backend.rules.breaker.as_ref();
            if let Err(w) = routing::allow(h, breaker) {
                f.wait_ms = Some(f.wait_ms.map_or(w, |x| x.min(w)));
                continue;
            }
            if f.next > 1 {
                h.counter_add(governance::METRIC_FAILOVER, 1);
            }
            let mut cap = Capture::new(h);
            call.forced_backend = Some(b);
            if call.on_request(&mut cap, ep, &f.body).is_none() {
                // This provider cannot take the request (translation refused it).
                f.last = cap.reply.take();
                continue;
            }
            route_to_backend(&mut cap, ep, b);
            let timeout = cap
                .request_header(TIMEOUT_HEADER)
                .and_then(|t| t.parse().ok())
                .unwrap_or(DEFAULT_TIMEOUT_MS);
            let (headers, body) = cap.upstream_request(&backend.forward, &f.client);
            // The budget reservation, made once, on the first attempt translated.
            let reserved = reserve_budget(h, &gw, self.charge.as_mut(), &call.account);
            if let Err((refusal, quiet)) = reserved {
                self.charge = None;
                self.replied = true;
                self.awaiting_fallback = false;
                self.refuse(h, &refusal, quiet);
                return Action::Pause;
            }
            let list: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match h.dispatch(&backend.cluster, &list, &body, timeout) {
                Some(token) => {
                    f.current = Some((b, token));
                    self.sent = true;
                    return Action::Pause;
                }
                None => routing::record(h, breaker, None),
            }
        }
        let answer = f.last.take();
        let wait = f.wait_ms;
        self.awaiting_fallback = false;
        match answer {
            Some(a) => send(h, a, &ep.security.secrets),
            None => reply(
                h,
                ep.front_door(),
                &routing::unavailable(wait.unwrap_or(1000)),
            ),
        }
        Action::Pause
    }

    /// A callout answered (or failed: no headers).
    pub fn on_callout<H: Host>(&mut self, h: &mut H, token: u32, body_size: usize) {
        let gw = Rc::clone(&self.gw);
        let (Some(ep), Some(f), Some(call)) = (
            self.endpoint.and_then(|i| gw.endpoints.get(i)),
            self.failover.as_mut(),
            self.llm.as_mut(),
        ) else {
            return;
        };
        let Some((b, _)) = f.current.take_if(|(_, t)| *t == token) else {
            return;
        };
        let headers = h.callout_headers();
        let status: Option<u16> = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok());
        let body = h.callout_body(body_size).unwrap_or_default();
        let breaker = ep.backends.get(b).and_then(|x| x.rules.breaker.as_ref());
        routing::record(h, breaker, status);
        // Translate the answer exactly as a proxied one.
        let mut cap = Capture::new(h);
        cap.resp_headers = headers;
        if status.is_none() {
            cap.resp_headers.push((":status".into(), "503".into()));
            cap.resp_body = br#"{"error":{"message":"the provider did not answer (timeout or connection failure)","type":"server_error"}}"#.to_vec();
        } else {
            cap.resp_body = body;
        }
        self.backend = b;
        if let Some(be) = ep.backends.get(b) {
            apply(&mut cap, Side::Response, &be.modifiers.response);
        }
        call.on_response_headers(&mut cap, false);
        let len = cap.resp_body.len();
        call.on_response_body(&mut cap, len, true);
        let retry = routing::should_fail_over(status) && f.next < f.order.len();
        if !retry {
            // The answer the client gets: account it like a proxied one (budget, token limit,
            // metrics, usage and quota headers go into the reply).
            self.record(&mut cap, true);
        }
        let answer = cap.answer();
        if retry {
            if let Some(f) = self.failover.as_mut() {
                f.last = Some(answer);
            }
            self.next_attempt(h);
            return;
        }
        self.awaiting_fallback = false;
        send(h, answer, &ep.security.secrets);
    }
}

/// Sends the answer; a provider's headers and body may echo the secrets it was sent.
fn send<H: Host>(h: &mut H, a: Answer, secrets: &Secrets) {
    let scrubbed: Vec<(String, String)> = a
        .headers
        .into_iter()
        .filter(|(k, _)| !k.starts_with(':') && !HOP_BY_HOP.contains(&k.as_str()))
        .map(|(k, v)| {
            let v = secrets.scrub_text(&v).unwrap_or(v);
            (k, v)
        })
        .collect();
    let headers: Vec<(&str, &str)> = scrubbed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = secrets.scrub(&a.body, Mask::Redacted).unwrap_or(a.body);
    h.send_reply(a.status, &headers, &body);
}

/// A [`Host`] that records what the pipeline would send upstream and replays a callout
/// answer as the upstream response; everything else goes to the real host.
struct Capture<'a, H: Host> {
    inner: &'a mut H,
    /// Request header changes, in order (None: removed).
    req: Vec<(String, Option<String>)>,
    req_body: Vec<u8>,
    resp_headers: Vec<(String, String)>,
    resp_body: Vec<u8>,
    reply: Option<Answer>,
}

impl<'a, H: Host> Capture<'a, H> {
    fn new(inner: &'a mut H) -> Self {
        Self {
            inner,
            req: Vec::new(),
            req_body: Vec::new(),
            resp_headers: Vec::new(),
            resp_body: Vec::new(),
            reply: None,
        }
    }

    /// The headers (of the `client`'s, those `forward` lets through and the gateway's own,
    /// such as a propagated role; then those set by translation and modifiers) and body of
    /// the upstream request.
    fn upstream_request(
        &self,
        forward: &Forward,
        client: &[(String, String)],
    ) -> (Vec<(String, String)>, Vec<u8>) {
        let set_here = |k: &str| self.req.iter().any(|(n, _)| n == k);
        let passes = |k: &str| forward.client_header(k) || forward.owned.iter().any(|o| o == k);
        let mut out: Vec<(String, String)> = client
            .iter()
            .filter(|(k, _)| passes(k) && !set_here(k) && k != "content-length")
            .cloned()
            .collect();
        out.extend(
            self.req
                .iter()
                .filter(|(k, _)| {
                    k != CLUSTER_HEADER && k != TIMEOUT_HEADER && k != "content-length"
                })
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone()))),
        );
        out.push(("content-length".into(), self.req_body.len().to_string()));
        (out, self.req_body.clone())
    }

    /// The translated answer (or the reply the pipeline sent instead).
    fn answer(mut self) -> Answer {
        if let Some(r) = self.reply.take() {
            return r;
        }
        let status = self
            .resp_headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(502);
        Answer {
            status,
            headers: self.resp_headers,
            body: self.resp_body,
        }
    }
}

fn set_in(list: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    list.retain(|(k, _)| k != name);
    if let Some(v) = value {
        list.push((name.to_string(), v.to_string()));
    }
}

impl<H: Host> Host for Capture<'_, H> {
    fn request_header(&self, name: &str) -> Option<String> {
        match self.req.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => v.clone(),
            None => self.inner.request_header(name),
        }
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        let mut out = self.inner.request_headers();
        for (k, v) in &self.req {
            set_in(&mut out, k, v.as_deref());
        }
        out
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.req.retain(|(k, _)| k != name);
        self.req.push((name.to_string(), value.map(String::from)));
    }
    fn clear_request_trailers(&mut self) {}
    fn add_request_header(&mut self, name: &str, value: &str) {
        self.req.push((name.to_string(), Some(value.to_string())));
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.resp_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn response_headers(&self) -> Vec<(String, String)> {
        self.resp_headers.clone()
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        set_in(&mut self.resp_headers, name, value)
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        self.resp_headers
            .push((name.to_string(), value.to_string()))
    }
    fn request_body(&self, _size: usize) -> Option<Vec<u8>> {
        Some(self.req_body.clone())
    }
    fn set_request_body(&mut self, body: &[u8]) {
        self.req_body = body.to_vec()
    }
    fn response_body(&self, _size: usize) -> Option<Vec<u8>> {
        Some(self.resp_body.clone())
    }
    fn set_response_body(&mut self, body: &[u8]) {
        self.resp_body = body.to_vec()
    }
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.reply = Some(Answer {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        })
    }
    fn now_unix(&self) -> u64 {
        self.inner.now_unix()
    }
    fn now_millis(&self) -> u64 {
        self.inner.now_millis()
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.inner.shared_get(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        self.inner.shared_set(key, value, cas)
    }
    fn set_property(&mut self, name: &str, value: &[u8]) {
        self.inner.set_property(name, value)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.inner.property(path)
    }
    fn counter_add(&mut self, name: &str, delta: u64) {
        self.inner.counter_add(name, delta)
    }
    fn histogram_record(&mut self, name: &str, value: u64) {
        self.inner.histogram_record(name, value)
    }
    fn log_warn(&self, message: &str) {
        self.inner.log_warn(message)
    }
    fn dispatch(&mut self, _: &str, _: &[(&str, &str)], _: &[u8], _: u64) -> Option<u32> {
        None // attempts are dispatched by the failover loop only
    }
    fn callout_headers(&self) -> Vec<(String, String)> {
        self.inner.callout_headers()
    }
    fn callout_body(&self, size: usize) -> Option<Vec<u8>> {
        self.inner.callout_body(size)
    }
}
