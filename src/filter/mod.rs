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

mod account;
mod choose;
mod failover;
mod llm;
mod models;
pub mod reply;
mod security;

use crate::config::{Endpoint, Gateway, HeaderOp};
use crate::cost::{self, Charge, QuotaError};
use crate::governance;
use crate::host::Host;
use crate::providers::FrontDoor;
use crate::refusal::{ErrorKind, Refusal};
use crate::routing::forward::Forward;
use crate::routing::{self, Miss, CLUSTER_HEADER};
use crate::support::addr::strip_port;
use reply::reply;
use std::rc::Rc;

/// What Envoy should do after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

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
    /// The budget this request is charged against.
    charge: Option<Charge>,
    /// The caller, for metrics (quota identity, else the `ai/usage` tenant header).
    tenant: String,
    /// A provider has the request: it was handed to Envoy for the upstream (an LLM call's
    /// whole translated body) or sent as a failover callout. From then on the call is
    /// charged, however it ends (an answer, a cut, the client hanging up).
    sent: bool,
    /// Accounting is recorded once.
    recorded: bool,
    /// Rate-limit client and template inputs ([`crate::governance`]).
    gov: governance::State,
    /// A plain endpoint whose body governance reads: headers held until the body is checked.
    hold_body: bool,
    /// LLM failover in progress: the request is answered from callouts.
    failover: Option<failover::Failover>,
    /// A proxied stream's fallback backends, used if it fails before its first byte.
    stream_fallback: Option<failover::Failover>,
    /// The provider's failed answer is held while fallback callouts run.
    awaiting_fallback: bool,
    /// The gateway answered the client itself (its reply passes the response callbacks too).
    replied: bool,
    /// A plain endpoint's answer scrubbed of secrets its backend was sent (security).
    body_scrub: Option<security::BodyScrub>,
}

impl Flow {
    pub fn new(gw: Rc<Gateway>) -> Self {
        Self {
            gw,
            endpoint: None,
            backend: 0,
            llm: None,
            charge: None,
            tenant: String::from("none"),
            sent: false,
            recorded: false,
            gov: governance::State::default(),
            hold_body: false,
            failover: None,
            stream_fallback: None,
            awaiting_fallback: false,
            replied: false,
            body_scrub: None,
        }
    }

    /// Request headers: match the endpoint; rewrite plain requests at once, hold LLM
    /// requests until their body is read.
    pub fn on_request_headers<H: Host>(&mut self, h: &mut H, end_of_stream: bool) -> Action {
        // Only the filter chooses the upstream cluster: a client's own routing header is
        // gone before anything else (the generated bootstrap removes it before the filter
        // too), so a request the filter does not route has no cluster.
        h.set_request_header(CLUSTER_HEADER, None);
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
                if method == "GET" && models::answer(h, &gw, path) {
                    return Action::Pause;
                }
                let front = reply::front_of_request(h, path);
                not_routed(h, front, miss, &method, path);
                return Action::Pause;
            }
        };
        self.endpoint = Some(index);
        let Some(ep) = gw.endpoints.get(index) else {
            return Action::Continue;
        };
        // Headers the gateway writes for this endpoint (role, claims): the client's own
        // copies go first. Then client authentication (auth/api-keys, auth/validator).
        for name in &ep.forward.owned {
            h.set_request_header(name, None);
        }
        let Ok(auth) = security::authenticate(h, ep, index, query) else {
            self.replied = true;
            return Action::Pause;
        };
        let query = auth.query.as_deref();
        // A plain endpoint's upstream path: a `{param}` may not change its structure.
        let upstream_path = match ep.api.is_none().then(|| ep.backend()).flatten() {
            Some(b) => match upstream_path(b, &params, query) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.replied = true;
                    reply(
                        h,
                        ep.front_door(),
                        &Refusal::new(ErrorKind::InvalidRequest, e.to_string()),
                    );
                    return Action::Pause;
                }
            },
            None => None,
        };
        // governance: size (content-length) and rate limits; the client's headers are
        // still as sent (a limit may key on Authorization).
        if let Some(d) = governance::on_request_headers(h, &ep.governance, &params, &mut self.gov) {
            self.replied = true;
            reply(h, ep.front_door(), &d);
            return Action::Pause;
        }
        if !self.check_quota(h, ep, &params) {
            self.replied = true;
            return Action::Pause;
        }
        // Client credentials and the API-key identifier never leave the gateway.
        for name in &ep.forward.never {
            h.set_request_header(name, None);
        }
        if let Some(api) = ep.api {
            // For Envoy's replies that bypass the filter (a reset mid-answer).
            reply::mark_front(h, ep, None);
            let mut call = llm::Call::new(api);
            call.governance = governance::CallHooks::new(&ep.governance, &self.gov);
            call.security = security::CallSecurity::new(&ep.security, auth.roles);
            if end_of_stream {
                call.reply(
                    h,
                    ErrorKind::InvalidRequest,
                    "the request body is required",
                    None,
                );
            }
            self.llm = Some(call);
            return Action::Pause;
        }
        let Some(b) = ep.backend() else {
            return Action::Continue;
        };
        // governance: a backend whose circuit breaker is open is not called.
        if let Err(wait) = governance::routing::allow(h, b.rules.breaker.as_ref()) {
            self.replied = true;
            reply(h, ep.front_door(), &governance::routing::unavailable(wait));
            return Action::Pause;
        }
        forward_only(h, &b.forward);
        let bare = upstream_path
            .as_deref()
            .map(|p| p.split('?').next().unwrap_or(p));
        reply::mark_front(h, ep, bare);
        if let Some(p) = &upstream_path {
            h.set_request_header(":path", Some(p));
        }
        if let Some(m) = &b.method {
            h.set_request_header(":method", Some(m));
        }
        if ep.security.upstream_secret {
            // security: the answer is scrubbed of the secret the backend is sent, which
            // needs it uncompressed.
            h.set_request_header("accept-encoding", None);
        }
        route_to_backend(h, ep, 0);
        if ep.governance.needs_body() {
            if end_of_stream {
                // No body at all: what governance says about an empty one.
                if let Err(d) = governance::on_request_body(&ep.governance, &self.gov, &[]) {
                    self.replied = true;
                    reply(h, ep.front_door(), &d);
                    return Action::Pause;
                }
                self.sent = true;
                return Action::Continue;
            }
            // Hold the headers (allow_on_headers_stop_iteration) until the body is checked:
            // a refused body never reaches the upstream, a templated one needs a new length.
            self.hold_body = true;
            return Action::Pause;
        }
        self.sent = true;
        Action::Continue
    }

    /// Request trailers: the request ended with them, so no body callback saw
    /// `end_of_stream` and the body stage runs now, on the whole buffered body (whatever
    /// the framing, a request never reaches the upstream without it). Client trailers
    /// are never forwarded.
    pub fn on_request_trailers<H: Host>(&mut self, h: &mut H) -> Action {
        h.clear_request_trailers();
        if self.replied {
            return Action::Pause;
        }
        self.on_request_body(h, usize::MAX, true)
    }

    /// Request body: only LLM endpoints read it (whole), translate it, and route.
    pub fn on_request_body<H: Host>(
        &mut self,
        h: &mut H,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        let gw = Rc::clone(&self.gw);
        if self.hold_body {
            return self.plain_body(h, size, end_of_stream);
        }
        let (true, Some(ep)) = (
            self.llm.is_some(),
            self.endpoint.and_then(|i| gw.endpoints.get(i)),
        ) else {
            return Action::Continue;
        };
        if !end_of_stream {
            // Envoy buffers the body until the last callback (its buffer limit answers 413).
            return Action::Pause;
        }
        let body = h.request_body(size).unwrap_or_default();
        let body = match governance::on_request_body(&ep.governance, &self.gov, &body) {
            Ok(Some(rendered)) => rendered,
            Ok(None) => body,
            Err(d) => {
                self.replied = true;
                reply(h, ep.front_door(), &d);
                return Action::Pause;
            }
        };
        // governance: multi-LLM routing (header conditions, weights, breakers, failover).
        if let Some(action) = self.route_llm(h, &body) {
            return action;
        }
        let Some(call) = self.llm.as_mut() else {
            return Action::Continue;
        };
        let Some(backend) = call.on_request(h, ep, &body) else {
            return Action::Pause;
        };
        if !self.reserve(h) {
            self.replied = true;
            return Action::Pause;
        }
        self.backend = backend;
        route_to_backend(h, ep, backend);
        self.sent = true;
        Action::Continue
    }

    /// Quota pre-check on the request headers: 400 when no tier matches, 429 when a
    /// limit is spent. Returns false after answering.
    fn check_quota<H: Host>(&mut self, h: &mut H, ep: &Endpoint, params: &routing::Params) -> bool {
        let gw = Rc::clone(&self.gw);
        if let Some(th) = &gw.cost.usage.tenant_header {
            // Never a credential as a metrics label: the canonical identity (hashed).
            if let Some(t) = h.request_header(th).map(|t| cost::header_identity(th, &t)) {
                self.tenant = t;
            }
        }
        let Some(attach) = &ep.quota else {
            return true;
        };
        let ip = h
            .property(&["source", "address"])
            .and_then(|b| String::from_utf8(b).ok())
            .map(|a| strip_port(&a).to_string());
        let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let resolved = cost::resolve(
            attach,
            &gw.cost.quotas,
            &|n| h.request_header(n),
            ip,
            &param,
        );
        let charge = match resolved {
            Ok(Some(c)) => c,
            Ok(None) => return true,
            Err(refusal) => {
                self.refuse(h, &refusal, attach.disable_quota_headers);
                return false;
            }
        };
        if let Err(refusal) = charge.precheck(h, h.now_unix(), 0) {
            self.refuse(h, &refusal, !charge.headers);
            return false;
        }
        self.tenant = charge.identity.clone();
        self.charge = Some(charge);
        true
    }

    /// Pre-flight reservation of what an LLM call may use ([`reserve_budget`]); false after
    /// answering 429.
    fn reserve<H: Host>(&mut self, h: &mut H) -> bool {
        let Some(call) = &self.llm else {
            return true;
        };
        match reserve_budget(h, &self.gw, self.charge.as_mut(), &call.account) {
            Ok(()) => true,
            Err((refusal, quiet)) => {
                self.charge = None;
                self.refuse(h, &refusal, quiet);
                false
            }
        }
    }

    fn refuse<H: Host>(&mut self, h: &mut H, refusal: &QuotaError, quiet: bool) {
        let gw = Rc::clone(&self.gw);
        let front = self
            .endpoint
            .and_then(|i| gw.endpoints.get(i))
            .map_or(FrontDoor::OpenAi, Endpoint::front_door);
        if let QuotaError::Exceeded { .. } = refusal {
            let tenant = account::tenant_label(h, &self.gw, &self.tenant);
            h.counter_add(cost_rejected_metric(&tenant).as_str(), 1);
        }
        reply(h, front, &refusal.refusal(quiet));
    }

    /// Records the call once: budget, metrics, properties, headers.
    fn record<H: Host>(&mut self, h: &mut H, headers_open: bool) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let gw = Rc::clone(&self.gw);
        if !self.sent {
            // Answered by the gateway, or refused before any provider had the request (Envoy's
            // 413 over its buffer limit, a client gone before its body was whole): nothing
            // was used; a reservation is given back.
            if let Some(c) = self.charge.as_ref().filter(|c| c.reserved > 0) {
                let now = h.now_unix();
                c.settle(h, now, 0);
            }
            return;
        }
        if self.llm.is_none() && self.charge.is_none() {
            return; // a plain call without a quota: nothing to count or to charge
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
        let call = self.llm.as_ref();
        let outcome = account::Outcome {
            account: call.map(|c| &c.account),
            ended: call.is_some_and(|c| c.done),
            charge: self.charge.as_ref(),
            tokens: call.and_then(|c| c.governance.charge.as_ref()),
            tenant: &self.tenant,
            status,
            headers_open,
        };
        account::record(h, &gw, outcome);
    }

    /// The stream ended (also when cut): record what was not recorded yet.
    pub fn on_log<H: Host>(&mut self, h: &mut H) {
        self.record(h, false);
    }

    /// The whole body of a plain endpoint with body governance: check, maybe rewrite, release.
    fn plain_body<H: Host>(&mut self, h: &mut H, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let gw = Rc::clone(&self.gw);
        let Some(ep) = self.endpoint.and_then(|i| gw.endpoints.get(i)) else {
            return Action::Continue;
        };
        let body = h.request_body(size).unwrap_or_default();
        match governance::on_request_body(&ep.governance, &self.gov, &body) {
            Ok(Some(rendered)) => {
                h.set_request_header("content-length", Some(&rendered.len().to_string()));
                h.set_request_body(&rendered);
            }
            Ok(None) => {}
            Err(d) => {
                self.replied = true;
                reply(h, ep.front_door(), &d);
                return Action::Pause;
            }
        }
        self.sent = true;
        Action::Continue
    }

    /// Response headers: response modifiers; LLM responses are prepared for translation.
    pub fn on_response_headers<H: Host>(&mut self, h: &mut H, end_of_stream: bool) -> Action {
        let gw = Rc::clone(&self.gw);
        let Some(ep) = self.endpoint.and_then(|i| gw.endpoints.get(i)) else {
            return Action::Continue;
        };
        if self.awaiting_fallback {
            return Action::Pause; // the failed answer waits for its replacement
        }
        if self.failover.is_some() || self.replied {
            return Action::Continue; // the gateway's own answer, already final
        }
        let backend = ep.backends.get(self.backend);
        let breaker = backend.and_then(|b| b.rules.breaker.as_ref());
        // `:status` is read only when something needs it (one less hostcall otherwise).
        let status: Option<u16> = if breaker.is_some() || self.stream_fallback.is_some() {
            h.response_header(":status").and_then(|s| s.parse().ok())
        } else {
            None
        };
        if breaker.is_some() {
            // governance: the answer counts for the backend's circuit breaker.
            governance::routing::record(h, breaker, status);
        }
        if self.stream_fallback.is_some() {
            // A stream that failed before its first byte fails over (governance).
            self.awaiting_fallback = true;
            if self.on_stream_failure(h, status) {
                return Action::Pause;
            }
            self.awaiting_fallback = false;
        }
        if let Some(b) = backend {
            apply(h, Side::Response, &b.modifiers.response);
        }
        // security: a provider may echo the secrets it was sent (headers, bodies).
        security::scrub_headers(h, &ep.security.secrets);
        if self.llm.is_none() && ep.security.upstream_secret && !end_of_stream {
            self.body_scrub = Some(security::BodyScrub::default());
        }
        let Some(call) = self.llm.as_mut() else {
            self.record(h, true);
            return Action::Continue;
        };
        let action = call.on_response_headers(h, end_of_stream);
        if call.done {
            self.record(h, true);
        }
        action
    }

    /// Response body: LLM responses are translated (streams chunk by chunk).
    pub fn on_response_body<H: Host>(
        &mut self,
        h: &mut H,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.awaiting_fallback {
            return Action::Pause; // the failed answer waits for its replacement
        }
        if self.failover.is_some() || self.replied {
            return Action::Continue; // the gateway's own answer, already final
        }
        let Some(call) = self.llm.as_mut() else {
            let gw = Rc::clone(&self.gw);
            let ep = self.endpoint.and_then(|i| gw.endpoints.get(i));
            if let (Some(scrub), Some(ep)) = (self.body_scrub.as_mut(), ep) {
                scrub.chunk(h, &ep.security.secrets, size, end_of_stream);
            }
            return Action::Continue;
        };
        let action = call.on_response_body(h, size, end_of_stream);
        if call.done {
            let open = call.buffered;
            self.record(h, open);
        }
        action
    }
}

/// Reserves what an LLM call may use on its budget (`reserve: true`), once per call: the
/// request as sent and `max_tokens` of answer, weighed as the call will be. When it does not
/// fit: the refusal, and whether quota headers are hidden.
fn reserve_budget<H: Host>(
    h: &mut H,
    gw: &Gateway,
    charge: Option<&mut Charge>,
    account: &account::Account,
) -> Result<(), (QuotaError, bool)> {
    let Some(charge) = charge.filter(|c| c.reserve && c.reserved == 0) else {
        return Ok(());
    };
    let u = account.reservation();
    let amount = match charge.weight {
        cost::Weight::Requests => 0,
        _ => charge.weigh(&u, gw.cost.usage.cost_micros(&account.model, &u)),
    };
    let now = h.now_unix();
    charge
        .precheck(h, now, amount)
        .map_err(|refusal| (refusal, !charge.headers))?;
    charge.add(h, now, cost::signed(amount));
    charge.reserved = amount;
    Ok(())
}

/// The status Envoy answered the client with (its `response.code`, a little-endian integer;
/// also set for Envoy's own replies).
fn response_code<H: Host>(h: &H) -> Option<u16> {
    let bytes: [u8; 8] = h.property(&["response", "code"])?.try_into().ok()?;
    u16::try_from(u64::from_le_bytes(bytes)).ok()
}

fn cost_rejected_metric(tenant: &str) -> String {
    crate::observe::name(crate::observe::QUOTA_REJECTED, &[("tenant", tenant)])
}

/// 404 or 405 for a request no endpoint takes.
fn not_routed<H: Host>(h: &mut H, front: FrontDoor, miss: Miss, method: &str, path: &str) {
    let refusal = match miss {
        Miss::NotFound => Refusal::new(
            ErrorKind::NotFound,
            format!("no endpoint matches {method} {path}"),
        ),
        Miss::MethodNotAllowed(allowed) => {
            let allow = allowed.join(", ");
            let msg = format!("method {method} is not allowed on {path} (allowed: {allow})");
            Refusal::new(ErrorKind::MethodNotAllowed, msg).header("allow", allow)
        }
    };
    reply(h, front, &refusal);
}

/// The upstream path of a plain backend: `url_pattern` with the params, then the client's
/// query parameters the backend may get.
fn upstream_path(
    b: &crate::config::Backend,
    params: &routing::Params,
    query: Option<&str>,
) -> Result<String, routing::ParamError> {
    let mut path = b.url_pattern.render(params)?;
    if let Some(q) = query.and_then(|q| b.forward.query(q)) {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&q);
    }
    Ok(path)
}

/// Removes every request header the backend may not get ([`Forward::keeps`]). Runs after
/// everything that reads the client's headers (auth, limits, quotas, routing) and before
/// the gateway sets its own.
fn forward_only<H: Host>(h: &mut H, forward: &Forward) {
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
#[cfg(test)]
mod trust_tests;
