//! Multi-LLM routing in the pipeline: header conditions, weights and circuit breakers pick
//! the backend ([`super::choose`], [`governance::routing`]); with `ai/routing.failover`, a
//! non-streaming request is sent through HTTP callouts, one backend after the other, each
//! attempt prepared for its provider, until one answers without 429/5xx; the client gets
//! that answer (translated back) as the gateway's reply.
//!
//! Why callouts and not Envoy retries: a retry resends the same bytes to the same cluster,
//! but a fallback provider needs another cluster, another path, other credentials and a
//! differently translated body. Streams are not failed over mid-way (their bytes are already
//! on the way to the client); they go, proxied as usual, to the first backend whose breaker
//! lets them through, and fail over only if that one fails before its first byte.
//!
//! An attempt is the proxied path's own steps as data: [`Call::prepare`] computes the
//! provider request, [`upstream::callout`] the callout carrying it, and the callout's answer
//! goes through the same translation ([`Call::head`], [`Call::chunk`]) and accounting.

use super::answer::Out;
use super::call::Call;
use super::reply::{rendered, reply};
use super::upstream::{self, apply, Callout, Headers};
use super::{Action, Flow, Phase, Then};
use crate::config::Endpoint;
use crate::governance::{self, routing};
use crate::host::Host;
use crate::providers::FrontDoor;
use crate::refusal::{Refusal, ENVOY_REPLY, ERROR_HEADER};
use crate::security::secrets::{Mask, Secrets};
use std::rc::Rc;

/// Headers never copied from a callout answer into the reply.
const HOP_BY_HOP: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// An answer ready for the client.
pub struct Answer {
    status: u32,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    /// A refusal as the client would get it.
    fn refusal(front: FrontDoor, r: &Refusal) -> Self {
        let (status, headers, body) = rendered(front, r);
        Self {
            status: u32::from(status),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            body,
        }
    }

    fn apply(&mut self, out: Out) {
        for (k, v) in &out.headers {
            self.headers.set(k, v.as_deref());
        }
        if let Some(b) = out.body {
            self.body = b;
        }
    }
}

/// Why callouts answer this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A non-streaming request fails over from its first backend on.
    Request,
    /// A proxied stream failed before its first byte: its failed answer is held until the
    /// replacement is sent.
    FailedStream,
}

/// The attempts of one request.
pub struct Failover {
    pub origin: Origin,
    order: Vec<usize>,
    next: usize,
    /// The backend and callout token in flight.
    current: Option<(usize, u32)>,
    /// A callout went out (a provider has the request: it is charged however it ends).
    dispatched: bool,
    /// The request headers as the client sent them (credentials removed, the gateway's
    /// role and claims set), before any backend rewrote them: each attempt gets those its
    /// backend may get, never another attempt's.
    client: Vec<(String, String)>,
    /// The last failed answer (returned when no backend is left).
    last: Option<Answer>,
    /// Shortest breaker wait among skipped backends.
    wait_ms: Option<u64>,
}

impl Failover {
    pub fn new(
        origin: Origin,
        order: Vec<usize>,
        client: Vec<(String, String)>,
        wait_ms: Option<u64>,
    ) -> Self {
        Self {
            origin,
            order,
            next: 0,
            current: None,
            dispatched: false,
            client,
            last: None,
            wait_ms,
        }
    }

    /// A provider has the request.
    pub fn sent(&self) -> bool {
        self.dispatched || self.origin == Origin::FailedStream
    }
}

/// An attempt prepared, waiting for the fleet limits' answer.
pub struct Pending {
    f: Failover,
    b: usize,
    callout: Callout,
}

/// How an LLM call goes upstream.
pub enum Plan {
    /// Proxied to one backend (`None`: the client's model chooses), with the backends a
    /// stream fails over to should it fail before its first byte.
    Proxy(Option<usize>, Option<Failover>),
    /// Through failover callouts.
    Callouts(Failover),
}

impl Flow {
    /// After the LLM body is read: the backends to try ([`super::choose`]), those the
    /// caller may use first, and the first whose circuit breaker lets the request through.
    pub(super) fn plan<H: Host>(&self, h: &mut H, ep: &Endpoint) -> Result<Plan, Refusal> {
        let Some(call) = self.llm.as_ref().filter(|_| ep.is_routed()) else {
            return Ok(Plan::Proxy(None, None));
        };
        let mut order = super::choose::order(h, ep, call.client_model(), self.data.as_deref());
        if order.is_empty() {
            return Ok(Plan::Proxy(None, None)); // model routing answers (unknown model: 404)
        }
        // security: backends whose model the caller may not use (models_by_role) are not
        // tried while one it may use remains; with none, the first one's check answers 403.
        let allowed: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&b| call.may_use(ep, b))
            .collect();
        if !allowed.is_empty() {
            order = allowed;
        }
        let stream = call.client_streams();
        if !stream && order.len() > 1 {
            let client = h.request_headers();
            return Ok(Plan::Callouts(Failover::new(
                Origin::Request,
                order,
                client,
                None,
            )));
        }
        let mut wait: Option<u64> = None;
        for (i, &b) in order.iter().enumerate() {
            let breaker = ep.backends.get(b).and_then(|x| x.rules.breaker.as_ref());
            match routing::allow(h, breaker) {
                Ok(()) => {
                    // A stream is proxied to this backend; should it fail before its first
                    // byte, the others are tried (`on_stream_failure`).
                    let fallback = (stream
                        && ep.governance.routing.failover
                        && i + 1 < order.len())
                    .then(|| {
                        let rest = order[i + 1..].to_vec();
                        Failover::new(Origin::FailedStream, rest, h.request_headers(), wait)
                    });
                    return Ok(Plan::Proxy(Some(b), fallback));
                }
                Err(w) => wait = Some(wait.map_or(w, |x: u64| x.min(w))),
            }
        }
        Err(routing::unavailable(wait.unwrap_or(1000)))
    }

    /// A proxied stream failed before its first byte (429/5xx at its response headers):
    /// fail over to the next backends through callouts. Their answer reaches the client as
    /// one translated stream, delivered at once (a callout answers whole).
    pub(super) fn on_stream_failure<H: Host>(&mut self, h: &mut H, f: Failover) {
        h.counter_add(governance::METRIC_FAILOVER, 1);
        self.phase = Phase::Callouts(f);
        self.next_attempt(h);
    }

    /// Sends the request to the next backend that may be tried, or answers the client.
    pub(super) fn next_attempt<H: Host>(&mut self, h: &mut H) -> Action {
        let gw = Rc::clone(&self.gw);
        let (Some(ep), Phase::Callouts(f), Some(call)) = (
            self.endpoint.and_then(|i| gw.endpoints.get(i)),
            &mut self.phase,
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
            if let Some(count) = call.local_count(ep, b, &*h) {
                // Token counting reached a provider with no counting API: the gateway's
                // estimate answers, marked `estimated` (it cannot fail, nothing is sent).
                self.phase = if f.sent() {
                    Phase::Answered
                } else {
                    Phase::Replied
                };
                h.send_reply(200, &[("content-type", "application/json")], &count);
                return Action::Pause;
            }
            let out = match call.prepare(ep, b, h) {
                Ok(out) => out,
                Err(refusal) => {
                    // This provider cannot take the request (translation refused it).
                    f.last = Some(Answer::refusal(self.front, &refusal));
                    continue;
                }
            };
            if let Some(callout) = upstream::callout(ep, b, out, &f.client) {
                return self.reserve_and_send(h, b, callout);
            }
        }
        let answer = f.last.take();
        let wait = f.wait_ms;
        self.phase = if f.sent() {
            Phase::Answered
        } else {
            Phase::Replied
        };
        match answer {
            Some(a) => send(h, a, &ep.security.secrets),
            None => reply(h, self.front, &routing::unavailable(wait.unwrap_or(1000))),
        }
        Action::Pause
    }

    /// The budget reservation, made once, on the first attempt prepared (a fleet quota's by
    /// the call to the limits service, which the attempt waits for); then the attempt.
    fn reserve_and_send<H: Host>(&mut self, h: &mut H, b: usize, callout: Callout) -> Action {
        let Phase::Callouts(f) = std::mem::replace(&mut self.phase, Phase::Replied) else {
            return Action::Continue;
        };
        let account = self
            .llm
            .as_ref()
            .map(|c| c.account.clone())
            .unwrap_or_default();
        let reserve = match self.quota.reserve(h, &self.gw, &account) {
            Ok(amount) => amount,
            Err(refusal) => {
                reply(h, self.front, &refusal);
                return Action::Pause;
            }
        };
        let pending = Pending { f, b, callout };
        self.gate(h, reserve, Then::Attempt(Box::new(pending)))
    }

    /// Sends a prepared attempt (the next one when the host refuses it).
    pub(super) fn send_attempt<H: Host>(&mut self, h: &mut H, p: Pending) -> Action {
        let Pending { mut f, b, callout } = p;
        let list: Vec<(&str, &str)> = callout
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let token = h.dispatch(&callout.cluster, &list, &callout.body, callout.timeout_ms);
        if let Some(token) = token {
            f.current = Some((b, token));
            f.dispatched = true;
        }
        self.phase = Phase::Callouts(f);
        if token.is_some() {
            return Action::Pause;
        }
        let gw = Rc::clone(&self.gw);
        let breaker = self
            .endpoint
            .and_then(|i| gw.endpoints.get(i))
            .and_then(|ep| ep.backends.get(b))
            .and_then(|x| x.rules.breaker.as_ref());
        routing::record(h, breaker, None);
        self.next_attempt(h)
    }

    /// A failover attempt answered (or failed: no headers).
    pub(super) fn on_attempt_answer<H: Host>(&mut self, h: &mut H, token: u32, body_size: usize) {
        let gw = Rc::clone(&self.gw);
        let (Some(ep), Phase::Callouts(f), Some(call)) = (
            self.endpoint.and_then(|i| gw.endpoints.get(i)),
            &mut self.phase,
            self.llm.as_mut(),
        ) else {
            return;
        };
        let Some((b, _)) = f.current.take_if(|(_, t)| *t == token) else {
            return;
        };
        let (status, answer) = translate_callout(h, ep, b, call, body_size);
        self.backend = b;
        if routing::should_fail_over(status) && f.next < f.order.len() {
            f.last = Some(answer);
            self.next_attempt(h);
            return;
        }
        // The answer the client gets: accounted like a proxied one (budget, token limit,
        // metrics; usage and quota headers go into the answer).
        let mut answer = answer;
        let fleet: Vec<(&str, String)> = self.fleet.headers.clone();
        for (k, v) in fleet.into_iter().chain(self.record(h)) {
            answer.headers.set(k, Some(&v));
        }
        send(h, answer, &ep.security.secrets);
    }
}

/// The callout's answer (a failed callout: a 503 in the provider's error shape), counted for
/// backend `b`'s breaker, with the backend's response modifiers, translated as a proxied one.
fn translate_callout<H: Host>(
    h: &mut H,
    ep: &Endpoint,
    b: usize,
    call: &mut Call,
    body_size: usize,
) -> (Option<u16>, Answer) {
    let mut headers = h.callout_headers();
    let status: Option<u16> = headers
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.parse().ok());
    let mut body = h.callout_body(body_size).unwrap_or_default();
    let breaker = ep.backends.get(b).and_then(|x| x.rules.breaker.as_ref());
    routing::record(h, breaker, status);
    if status.is_none() {
        headers.push((":status".into(), "503".into()));
        body = br#"{"error":{"message":"the provider did not answer (timeout or connection failure)","type":"server_error"}}"#.to_vec();
    }
    if let Some(be) = ep.backends.get(b) {
        apply(&mut headers, &be.modifiers.response);
    }
    let mut answer = Answer {
        status: 502,
        headers,
        body,
    };
    if call.checks_answer() {
        call.answer_headers = answer.headers.clone();
    }
    if let Some(name) = call.usage_header() {
        // Bedrock's embeddings report their tokens in a header, as on the proxied path.
        call.set_usage_header(answer.headers.get(name));
    }
    let head_status = answer.headers.get(":status").and_then(|s| s.parse().ok());
    let envoy = answer.headers.get(ERROR_HEADER).as_deref() == Some(ENVOY_REPLY);
    let head = call.head(head_status, envoy, false, &*h);
    answer.apply(head);
    let chunk = call.chunk(&answer.body.clone(), true, &*h);
    answer.apply(chunk);
    answer.status = answer
        .headers
        .get(":status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    (status, answer)
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

#[cfg(test)]
#[path = "failover_tests.rs"]
mod tests;
