//! The request pipeline, host-independent: each Envoy callback of an HTTP stream calls
//! one method of [`Flow`], which drives the [`Host`] and says whether to continue.
//!
//! A request's path through the files:
//! 1. `request.rs`, request headers, stage by stage: match the endpoint (or answer the model
//!    list), authenticate (`security.rs`), the plain upstream path, governance limits, the
//!    quota pre-check (`quota.rs`), the client's credentials removed; then a plain request
//!    goes upstream at once (`upstream.rs`), an LLM call holds its headers for the body.
//! 2. `request.rs`, the body: an LLM body is read once into the canonical request
//!    (`call.rs`), the backends chosen (`choose.rs`, `failover.rs`), the provider request
//!    computed as data (`Call::prepare`), the budget reserved, then written once
//!    (`upstream::write_llm`), or sent as failover callouts (`failover.rs`).
//! 3. `answer.rs`, the response: translated back into the client's API (whole, or event by
//!    event for streams); a stream that fails before its first byte fails over.
//! 4. `account.rs`, at the end of the answer or of the stream: one usage record feeds the
//!    budget, the token rate limit, metrics, access-log properties and usage headers.
//!
//! Every answer the gateway makes itself is a [`Refusal`] written by `reply.rs`.

mod account;
mod answer;
mod call;
mod checks;
mod choose;
mod doors;
mod failover;
mod fleet;
mod mcp;
mod models;
mod quota;
pub mod reply;
mod request;
mod security;
mod stored;
mod upstream;

use crate::config::{Endpoint, Gateway};
use crate::governance;
use crate::host::Host;
use crate::providers::FrontDoor;
use crate::refusal::{Refusal, ENVOY_REPLY, ERROR_HEADER};
use crate::routing::data::RequestData;
use answer::Out;
use call::Call;
use checks::Held;
use failover::{Failover, Origin};
use quota::Quota;
use reply::reply;
use security::BodyScrub;
use std::rc::Rc;

/// What Envoy should do after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// Where a stream is. Every callback looks here first.
enum Phase {
    /// Request headers not handled yet.
    Start,
    /// Request headers held until the whole body is read: an LLM call (the client's model
    /// chooses the backend, the body is translated), or a plain endpoint whose body
    /// governance reads.
    ReadBody,
    /// The request went upstream through Envoy: the backend has it, and the call is charged
    /// however it ends. A proxied stream keeps the backends it fails over to should it fail
    /// before its first byte.
    Upstream { fallback: Option<Failover> },
    /// Failover callouts answer the request, one backend after the other.
    Callouts(Failover),
    /// The request waits for the fleet limits service's answer before going upstream
    /// (`fleet.rs`); its body, if more comes, is buffered meanwhile.
    Gate(Box<fleet::Gate>),
    /// Callouts answer an MCP request (a tool's backend, upstream MCP servers).
    Mcp,
    /// The gateway replied itself before any provider had the request (a refusal, the
    /// model list): nothing is charged; its reply passes the response callbacks untouched.
    Replied,
    /// The client got the failover's last answer after a provider had the request.
    Answered,
    /// The call is recorded (accounting happens once); what follows passes through.
    Closed,
}

impl Phase {
    /// A provider (or plain backend) has the request.
    fn sent(&self) -> bool {
        match self {
            Phase::Upstream { .. } | Phase::Answered | Phase::Mcp => true,
            Phase::Callouts(f) => f.sent(),
            Phase::Start | Phase::ReadBody | Phase::Gate(_) | Phase::Replied | Phase::Closed => {
                false
            }
        }
    }
}

/// What a request does once the fleet limits let it go (`fleet.rs`).
enum Then {
    /// Goes upstream through Envoy (the request was written): this phase, then resumed.
    Upstream(Phase),
    /// A failover attempt: the callout to send.
    Attempt(Box<failover::Pending>),
}

/// Why a stage stopped the request.
enum Stop {
    /// A refusal, for the client in its front door.
    Refuse(Refusal),
    /// The stage answered the client itself.
    Answered,
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Self {
        Stop::Refuse(r)
    }
}

/// State of one HTTP stream.
pub struct Flow {
    gw: Rc<Gateway>,
    phase: Phase,
    /// The client's API, for the gateway's own answers.
    front: FrontDoor,
    /// The matched endpoint, once routed.
    endpoint: Option<usize>,
    /// The chosen backend of that endpoint.
    backend: usize,
    /// Set on `ai/llm` endpoints.
    llm: Option<Call>,
    /// The budget this request is charged against, and the caller.
    quota: Quota,
    /// Its budgets and rate limits kept in Redis (`fleet.rs`).
    fleet: fleet::Fleet,
    /// Rate-limit client and template inputs ([`crate::governance`]).
    gov: governance::State,
    /// Set on MCP endpoints the gateway answers (`mcp.rs`).
    mcp: Option<Box<mcp::McpCall>>,
    /// A relay's caller, to whom the session its upstream opens is bound (`mcp.rs`).
    relay: Option<String>,
    /// What happens to a plain endpoint's answer body on its way to the client.
    plain_answer: PlainAnswer,
    /// The request as CEL checks and policies read it, when the endpoint reads it.
    data: Option<Rc<RequestData>>,
    /// A plain endpoint's answer held whole for its checks or its answer template.
    held: Option<Held>,
    /// A stored-response request (`GET …/responses/{id}`, …), until it goes upstream.
    route: Option<stored::Route>,
    /// A stored-response request's answer ([`stored::Answer`]).
    stored: Option<stored::Answer>,
}

/// A plain endpoint's answer body.
enum PlainAnswer {
    /// As the backend sends it.
    Pass,
    /// Scrubbed of secrets its backend was sent (security).
    Scrub(BodyScrub),
    /// Replaced by martian's response `body.Modifier` (the backend's chunks are dropped).
    Replace,
}

impl Flow {
    pub fn new(gw: Rc<Gateway>) -> Self {
        Self {
            gw,
            phase: Phase::Start,
            front: FrontDoor::OpenAi,
            endpoint: None,
            backend: 0,
            llm: None,
            quota: Quota::default(),
            fleet: fleet::Fleet::default(),
            gov: governance::State::default(),
            plain_answer: PlainAnswer::Pass,
            mcp: None,
            relay: None,
            data: None,
            held: None,
            route: None,
            stored: None,
        }
    }

    /// Request headers: match the endpoint; rewrite plain requests at once, hold LLM
    /// requests until their body is read (`request.rs`).
    pub fn on_request_headers<H: Host>(&mut self, h: &mut H, end_of_stream: bool) -> Action {
        let result = self.request_headers(h, end_of_stream);
        self.settle(h, result)
    }

    /// Request body: read whole where the pipeline needs it (`request.rs`).
    pub fn on_request_body<H: Host>(&mut self, h: &mut H, size: usize, end: bool) -> Action {
        if matches!(self.phase, Phase::Gate(_)) {
            // Held until the limits service answers (then resumed with what was buffered).
            return Action::Pause;
        }
        if !matches!(self.phase, Phase::ReadBody) {
            return Action::Continue;
        }
        if !end {
            // Envoy buffers the body until the last callback (its buffer limit answers 413).
            return Action::Pause;
        }
        let result = self.request_body(h, size);
        self.settle(h, result)
    }

    /// Request trailers: the request ended with them, so no body callback saw
    /// `end_of_stream` and the body stage runs now, on the whole buffered body (whatever
    /// the framing, a request never reaches the upstream without it). Client trailers
    /// are never forwarded.
    pub fn on_request_trailers<H: Host>(&mut self, h: &mut H) -> Action {
        h.clear_request_trailers();
        if matches!(self.phase, Phase::Replied | Phase::Gate(_)) {
            return Action::Pause;
        }
        self.on_request_body(h, usize::MAX, true)
    }

    /// Response headers: response modifiers; LLM answers are prepared for translation
    /// (`answer.rs`).
    pub fn on_response_headers<H: Host>(&mut self, h: &mut H, end_of_stream: bool) -> Action {
        match &self.phase {
            // A failed stream's answer waits for its replacement.
            Phase::Callouts(f) if f.origin == Origin::FailedStream => Action::Pause,
            // The gateway's own answer, already final.
            Phase::Callouts(_) | Phase::Mcp | Phase::Replied | Phase::Answered | Phase::Closed => {
                Action::Continue
            }
            Phase::Start | Phase::ReadBody | Phase::Gate(_) | Phase::Upstream { .. } => {
                self.response_headers(h, end_of_stream)
            }
        }
    }

    /// Response body: LLM answers are translated (streams chunk by chunk).
    pub fn on_response_body<H: Host>(&mut self, h: &mut H, size: usize, end: bool) -> Action {
        match &self.phase {
            Phase::Callouts(f) if f.origin == Origin::FailedStream => return Action::Pause,
            Phase::Callouts(_) | Phase::Mcp | Phase::Replied | Phase::Answered => {
                return Action::Continue
            }
            Phase::Closed if self.llm.is_some() => return Action::Continue,
            _ => {}
        }
        let Some(call) = self.llm.as_mut() else {
            if let Some(held) = self.held.take() {
                return self.held_chunk(h, held, size, end);
            }
            if self.stored.is_some() {
                return self.stored_chunk(h, size, end);
            }
            self.plain_answer_chunk(h, size, end);
            return Action::Continue;
        };
        let chunk = h.response_body(size).unwrap_or_default();
        let out = call.chunk(&chunk, end, &*h);
        let action = write(h, out);
        if call.done() {
            let open = call.held();
            self.record_into(h, open);
        }
        action
    }

    /// The stream ended (also when cut): record what was not recorded yet.
    pub fn on_log<H: Host>(&mut self, h: &mut H) {
        self.record(h);
    }

    /// A callout answered (or failed: no headers): the fleet limits' call before the
    /// request (`fleet.rs`), an MCP request's (`mcp.rs`), or a failover attempt (`failover.rs`).
    pub fn on_callout<H: Host>(&mut self, h: &mut H, token: u32, body_size: usize) {
        match self.phase {
            Phase::Gate(_) => self.on_gate_answer(h, token, body_size),
            Phase::Mcp => self.on_mcp_callout(h, token, body_size),
            _ => self.on_attempt_answer(h, token, body_size),
        }
    }

    /// A stage's result as an Envoy action: a stop answers the client (a refusal in its
    /// front door) and holds the request.
    fn settle<H: Host>(&mut self, h: &mut H, result: Result<Action, Stop>) -> Action {
        match result {
            Ok(action) => action,
            Err(stop) => {
                if let Stop::Refuse(r) = stop {
                    let gw = Rc::clone(&self.gw);
                    let speaks_mcp = |e: &&Endpoint| e.mcp.is_some() || e.relays_mcp_sessions();
                    match self.endpoint(&gw).filter(speaks_mcp) {
                        // An MCP client (of the gateway's server or of a relay) gets a
                        // JSON-RPC error.
                        Some(ep) => mcp::write(h, &mcp::refusal_answer(&r), &ep.security.secrets),
                        None => reply(h, self.front, &r),
                    }
                }
                self.phase = Phase::Replied;
                Action::Pause
            }
        }
    }

    fn endpoint<'g>(&self, gw: &'g Gateway) -> Option<&'g Endpoint> {
        self.endpoint.and_then(|i| gw.endpoints.get(i))
    }

    /// A proxied answer's headers: the backend's circuit breaker counts it, a stream that
    /// failed before its first byte fails over, then response modifiers, secrets scrubbed,
    /// and an LLM answer's translation begins.
    fn response_headers<H: Host>(&mut self, h: &mut H, end_of_stream: bool) -> Action {
        let gw = Rc::clone(&self.gw);
        let Some(ep) = self.endpoint(&gw) else {
            return Action::Continue;
        };
        let backend = ep.backends.get(self.backend);
        let breaker = backend.and_then(|b| b.rules.breaker.as_ref());
        let fallback = matches!(self.phase, Phase::Upstream { fallback: Some(_) });
        // `:status` is read only when something needs it (one less hostcall otherwise).
        let status: Option<u16> = if breaker.is_some() || fallback {
            h.response_header(":status").and_then(|s| s.parse().ok())
        } else {
            None
        };
        if breaker.is_some() {
            // governance: the answer counts for the backend's circuit breaker.
            governance::routing::record(h, breaker, status);
        }
        if fallback && governance::routing::should_fail_over(status) {
            if let Phase::Upstream { fallback: Some(f) } =
                std::mem::replace(&mut self.phase, Phase::Start)
            {
                self.on_stream_failure(h, f);
            }
            return Action::Pause;
        }
        if let Some(b) = backend {
            upstream::apply(&mut upstream::Response(h), &b.modifiers.response);
        }
        // security: a provider may echo the secrets it was sent (headers, bodies).
        security::scrub_headers(h, &ep.security.secrets);
        // The fleet quota's standing, as the limits service answered before the request.
        for (k, v) in &self.fleet.headers {
            h.set_response_header(k, Some(v));
        }
        if self.stored.is_some() {
            self.record_into(h, false); // nothing to count: the phase ends here
            return self.stored_headers(h, end_of_stream);
        }
        if self.llm.is_none() {
            // security: answer checks and answer templates read a plain answer whole (held).
            self.held = Held::start(h, ep, backend);
            if self.held.is_none() && !end_of_stream {
                self.plain_answer = plain_answer(h, ep, self.backend);
            }
        }
        let Some(call) = self.llm.as_mut() else {
            self.relay_answered(h);
            // cost: the weight the backend reports (a header now, a body field at its end).
            if !self.quota.weigh_headers(&*h, end_of_stream) {
                self.record_into(h, true);
            }
            return match self.held.take() {
                Some(held) if end_of_stream => {
                    held.finish(h, ep, backend, self.data.as_deref(), Vec::new())
                }
                Some(held) => {
                    self.held = Some(held);
                    Action::Pause
                }
                None => Action::Continue,
            };
        };
        let status = h.response_header(":status").and_then(|s| s.parse().ok());
        if call.checks_answer() {
            call.answer_headers = h.response_headers();
        }
        // Envoy's own replies come already reshaped by the bootstrap's local_reply_config.
        let envoy = h.response_header(ERROR_HEADER).as_deref() == Some(ENVOY_REPLY);
        if let Some(name) = call.usage_header() {
            call.set_usage_header(h.response_header(name));
        }
        let out = call.head(status, envoy, end_of_stream, &*h);
        let action = write(h, out);
        if call.done() {
            self.record_into(h, true);
        }
        action
    }

    /// A chunk of a plain endpoint's held answer: Envoy buffers it until its last callback,
    /// where it is weighed, checked and made ([`Held::finish`]).
    fn held_chunk<H: Host>(&mut self, h: &mut H, held: Held, size: usize, end: bool) -> Action {
        if !end {
            self.held = Some(held);
            return Action::Pause;
        }
        let gw = Rc::clone(&self.gw);
        let Some(ep) = self.endpoint(&gw) else {
            return Action::Continue;
        };
        if self.quota.weigh_chunk(&*h, size, end) {
            self.record_into(h, true);
        }
        let body = h.response_body(size).unwrap_or_default();
        let b = ep.backends.get(self.backend);
        held.finish(h, ep, b, self.data.as_deref(), body)
    }

    /// A chunk of a plain endpoint's answer: passed, scrubbed, or dropped for the fixed body
    /// (written with the last chunk).
    fn plain_answer_chunk<H: Host>(&mut self, h: &mut H, size: usize, end: bool) {
        let gw = Rc::clone(&self.gw);
        let Some(ep) = self.endpoint(&gw) else {
            return;
        };
        if self.quota.weigh_chunk(&*h, size, end) {
            self.record_into(h, false);
        }
        match &mut self.plain_answer {
            PlainAnswer::Pass => {}
            PlainAnswer::Scrub(scrub) => scrub.chunk(h, &ep.security.secrets, size, end),
            PlainAnswer::Replace => {
                let fixed = ep.backends.get(self.backend);
                let fixed = fixed.and_then(|b| b.modifiers.response_body.as_ref());
                let bytes = fixed
                    .filter(|_| end)
                    .map_or(&[][..], |f| f.bytes.as_slice());
                h.set_response_body(bytes);
            }
        }
    }

    /// Records the call, and writes its usage headers on the answer when it still can
    /// (`open`: a buffered answer or a plain endpoint's, whose headers are still held).
    fn record_into<H: Host>(&mut self, h: &mut H, open: bool) {
        let headers = self.record(h);
        if open {
            for (k, v) in headers {
                h.set_response_header(k, Some(&v));
            }
        }
    }

    /// Records the call once: budget, metrics, properties; returns the headers its answer
    /// carries (quota standing, usage).
    fn record<H: Host>(&mut self, h: &mut H) -> Vec<(&'static str, String)> {
        if matches!(self.phase, Phase::Closed) {
            return Vec::new();
        }
        let sent = self.phase.sent();
        self.phase = Phase::Closed;
        // Gone while the call before the request was out: whatever it reserved is released.
        fleet::release_pending(h, &self.gw, &mut self.fleet);
        if !sent {
            // Answered by the gateway, or refused before any provider had the request (Envoy's
            // 413 over its buffer limit, a client gone before its body was whole): nothing
            // was used; a reservation is given back.
            self.quota.release(h, &self.gw, &mut self.fleet);
            return Vec::new();
        }
        if self.llm.is_none() && self.quota.charge.is_none() {
            return Vec::new(); // a plain call without a quota: nothing to count or to charge
        }
        // An LLM answer cut before its end (the provider reset the connection) has no
        // status of its own: the client got Envoy's reply, whose code Envoy keeps.
        let status = match &self.llm {
            Some(c) if c.status != 0 => Some(c.status),
            Some(_) => response_code(h),
            None => h
                .response_header(":status")
                .and_then(|s| s.parse().ok())
                .or_else(|| response_code(h)),
        }
        .unwrap_or(0);
        if self.llm.is_some() {
            self.quota.weigh_headers(&*h, true); // a weight the provider reports in a header
        }
        // A background call still running is charged its reservation, held until a
        // retrieve reports its usage (`stored.rs`).
        let pending = self.llm.as_mut().and_then(Call::take_pending);
        let call = self.llm.as_ref();
        let outcome = account::Outcome {
            account: call.map(|c| &c.account),
            ended: call.is_some_and(Call::done),
            charge: self.quota.charge.as_ref(),
            tokens: call.and_then(|c| c.governance.charge.as_ref()),
            tenant: &self.quota.tenant,
            status,
            fleet: &mut self.fleet,
        };
        let headers = account::record(h, &self.gw, outcome);
        if let Some(id) = pending {
            self.hold(h, &id);
        }
        headers
    }
}

/// How a plain endpoint's answer body goes to the client, decided on its headers: martian's
/// response `body.Modifier` replaces it (its content type set, the length no longer the
/// backend's), else secrets its backend was sent are scrubbed from it, else it passes.
/// The endpoint a request is matched to, its stored-response routes (`…/responses/{id}`)
/// included: what the property tests check the routing against.
pub fn matched_endpoint(gw: &Gateway, method: &str, path: &str) -> Option<usize> {
    let candidates = gw.endpoints.iter().map(|e| (&e.pattern, e.method.as_str()));
    match crate::routing::find(candidates, method, path) {
        Ok((i, _)) => Some(i),
        Err(_) => stored::find(gw, method, path, None)
            .and_then(Result::ok)
            .map(|r| r.index),
    }
}

fn plain_answer<H: Host>(h: &mut H, ep: &Endpoint, backend: usize) -> PlainAnswer {
    let fixed = ep.backends.get(backend);
    if let Some(f) = fixed.and_then(|b| b.modifiers.response_body.as_ref()) {
        h.set_response_header("content-length", None);
        h.set_response_header("content-encoding", None);
        if let Some(t) = &f.content_type {
            h.set_response_header("content-type", Some(t));
        }
        return PlainAnswer::Replace;
    }
    if ep.security.upstream_secret {
        return PlainAnswer::Scrub(BodyScrub::default());
    }
    PlainAnswer::Pass
}

/// Writes a translation step's result onto the proxied answer.
fn write<H: Host>(h: &mut H, out: Out) -> Action {
    for (name, value) in &out.headers {
        h.set_response_header(name, value.as_deref());
    }
    if let Some(body) = &out.body {
        h.set_response_body(body);
    }
    if out.hold {
        Action::Pause
    } else {
        Action::Continue
    }
}

/// The status Envoy answered the client with (its `response.code`, a little-endian integer;
/// also set for Envoy's own replies).
fn response_code<H: Host>(h: &H) -> Option<u16> {
    let bytes: [u8; 8] = h.property(&["response", "code"])?.try_into().ok()?;
    u16::try_from(u64::from_le_bytes(bytes)).ok()
}

#[cfg(test)]
mod krakend_stream_tests;
#[cfg(test)]
mod krakend_tests;
#[cfg(test)]
#[path = "mcp_tests.rs"]
mod mcp_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trust_tests;
