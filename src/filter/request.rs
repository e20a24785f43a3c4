//! The request side of the pipeline, as named stages. Each returns `Err(Stop)` to end the
//! request with the gateway's own answer (`Flow::settle` writes it).
//!
//! Request headers: [`Flow::match_endpoint`], [`security::authenticate`], [`plain_path`],
//! [`Flow::limits`], the quota pre-check, the client's credentials removed, then
//! [`Flow::await_llm_body`] or [`Flow::plain_upstream`]. Body: [`Flow::plain_body`] or
//! [`Flow::llm_body`]. Where the request goes upstream, the fleet limits are asked first
//! (`Flow::gate`, `fleet.rs`).

use super::call::Call;
use super::failover::Plan;
use super::fleet::Fleet;
use super::upstream::{self, route_to_backend};
use super::{choose, models, reply, security, stored, Action, Flow, Phase, Stop, Then};
use crate::config::{Backend, Endpoint};
use crate::governance::{self, CallHooks};
use crate::host::Host;
use crate::refusal::{ErrorKind, Refusal};
use crate::routing::{self, Params, CLUSTER_HEADER};
use crate::security::call::CallSecurity;
use std::rc::Rc;

/// The matched endpoint of a request.
struct Matched {
    index: usize,
    params: Params,
    query: Option<String>,
}

impl Flow {
    /// Request headers, stage by stage.
    pub(super) fn request_headers<H: Host>(
        &mut self,
        h: &mut H,
        end_of_stream: bool,
    ) -> Result<Action, Stop> {
        // Only the filter chooses the upstream cluster: a client's own routing header is
        // gone before anything else (the generated bootstrap removes it before the filter
        // too), so a request the filter does not route has no cluster.
        h.set_request_header(CLUSTER_HEADER, None);
        let m = self.match_endpoint(h)?;
        let gw = Rc::clone(&self.gw);
        let Some(ep) = gw.endpoints.get(m.index) else {
            return Ok(Action::Continue);
        };
        // Headers the gateway writes for this endpoint (role, claims): the client's own
        // copies go first. Then client authentication (auth/api-keys, auth/validator).
        for name in &ep.forward.owned {
            h.set_request_header(name, None);
        }
        let auth = security::authenticate(h, ep, m.index, m.query.as_deref())?;
        let jwt = auth.claims.clone();
        self.request_checks(h, ep, &m.params, auth.query.as_deref(), jwt)?;
        if ep.api.is_none() {
            // A plain endpoint's one backend (conditional routing reads the client's headers,
            // a policy the request's data), then that backend's request checks.
            let data = self.data.as_deref();
            self.backend = choose::plain(&*h, ep, data).ok_or_else(no_backend)?;
            self.backend_checks(ep)?;
        }
        let path = plain_path(ep, self.backend, &m.params, auth.query.as_deref())?;
        self.limits(h, ep, &m.params)?;
        if let Some(route) = self.route.take() {
            // A stored response: its tokens were held at its POST (nothing to check or
            // reserve now); the client's credentials stay here.
            for name in &ep.forward.never {
                h.set_request_header(name, None);
            }
            return self.stored_upstream(h, ep, route, &auth.roles);
        }
        self.quota.check(h, &gw, ep, &m.params)?;
        if let Some(mcp) = &ep.mcp {
            // The rate-limit keys of its tools are read while the headers are whole.
            let held = self.await_mcp_body(h, ep, mcp, auth, end_of_stream);
            for name in &ep.forward.never {
                h.set_request_header(name, None);
            }
            return held;
        }
        self.relay_session(h, ep, &auth.caller)?;
        // Client credentials and the API-key identifier never leave the gateway.
        for name in &ep.forward.never {
            h.set_request_header(name, None);
        }
        match ep.api {
            Some(_) => self.await_llm_body(h, ep, auth.roles, end_of_stream),
            None => self.plain_upstream(h, ep, path, end_of_stream),
        }
    }

    /// The endpoint for the method and path: a 404 or 405 in the client's front door when
    /// none takes them (a `GET .../models` of an LLM endpoint is answered here).
    fn match_endpoint<H: Host>(&mut self, h: &mut H) -> Result<Matched, Stop> {
        let method = h.request_header(":method").unwrap_or_default();
        let full_path = h.request_header(":path").unwrap_or_default();
        let (path, query) = match full_path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (full_path.as_str(), None),
        };
        let gw = Rc::clone(&self.gw);
        let candidates = gw.endpoints.iter().map(|e| (&e.pattern, e.method.as_str()));
        match routing::find(candidates, &method, path) {
            Ok((index, params)) => {
                self.endpoint = Some(index);
                if let Some(ep) = gw.endpoints.get(index) {
                    self.front = ep.front_door();
                }
                Ok(Matched {
                    index,
                    params,
                    query: query.map(str::to_string),
                })
            }
            Err(_) if method == "GET" && models::answer(h, &gw, path) => Err(Stop::Answered),
            Err(miss) => match stored::find(&gw, &method, path, query) {
                Some(Ok(route)) => {
                    let index = route.index;
                    self.endpoint = Some(index);
                    if let Some(ep) = gw.endpoints.get(index) {
                        self.front = ep.front_door();
                    }
                    let params = route.params.clone();
                    self.route = Some(route);
                    Ok(Matched {
                        index,
                        params,
                        query: query.map(str::to_string),
                    })
                }
                Some(Err(refusal)) => {
                    self.front = reply::front_of_request(h, path);
                    Err(refusal.into())
                }
                None => {
                    self.front = reply::front_of_request(h, path);
                    Err(not_routed(miss, &method, path).into())
                }
            },
        }
    }

    /// Governance on the request headers: size (`content-length`) and rate limits; the
    /// client's headers are still as sent (a limit may key on Authorization). The clients of
    /// Redis rate limits are read now too (they are checked before the request goes up).
    fn limits<H: Host>(&mut self, h: &mut H, ep: &Endpoint, params: &Params) -> Result<(), Stop> {
        if let Some(refusal) =
            governance::on_request_headers(h, &ep.governance, params, &mut self.gov)
        {
            return Err(refusal.into());
        }
        self.fleet = Fleet::new(h, ep, params);
        Ok(())
    }

    /// An LLM call: its headers are held (`allow_on_headers_stop_iteration`) until the whole
    /// body is read, because the client's model chooses the backend and the body is
    /// translated to that provider's API.
    fn await_llm_body<H: Host>(
        &mut self,
        h: &mut H,
        ep: &Endpoint,
        roles: Vec<String>,
        end_of_stream: bool,
    ) -> Result<Action, Stop> {
        // For Envoy's replies that bypass the filter (a reset mid-answer).
        reply::mark_front(h, ep, None);
        let mut call = Call::new(
            ep.kind,
            CallHooks::new(&ep.governance, &self.gov),
            CallSecurity::new(&ep.security, roles),
        );
        call.data = self.data.clone();
        call.llm_stream = ep.llm_stream;
        self.llm = Some(call);
        if end_of_stream {
            let msg = "the request body is required";
            return Err(Refusal::new(ErrorKind::InvalidRequest, msg).into());
        }
        self.phase = Phase::ReadBody;
        Ok(Action::Pause)
    }

    /// A plain endpoint: everything happens on the request headers (rewrite, credentials,
    /// cluster header); the body streams through untouched unless governance reads it.
    fn plain_upstream<H: Host>(
        &mut self,
        h: &mut H,
        ep: &Endpoint,
        path: Option<String>,
        end_of_stream: bool,
    ) -> Result<Action, Stop> {
        let Some(b) = ep.backends.get(self.backend) else {
            return Ok(Action::Continue);
        };
        // governance: a backend whose circuit breaker is open is not called.
        governance::routing::allow(h, b.rules.breaker.as_ref())
            .map_err(governance::routing::unavailable)?;
        upstream::forward_only(h, &b.forward);
        let bare = path.as_deref().map(|p| p.split('?').next().unwrap_or(p));
        reply::mark_front(h, ep, bare);
        if let Some(p) = &path {
            h.set_request_header(":path", Some(p));
        }
        if let Some(m) = &b.method {
            h.set_request_header(":method", Some(m));
        }
        let checked = b.answer.is_some()
            || [&ep.security.checks, &b.checks]
                .iter()
                .any(|c| c.has(crate::security::policy::Stage::Response));
        if ep.security.upstream_secret || checked {
            // security: the answer is scrubbed of the secret the backend is sent, or read by
            // answer checks or its template (a compressed answer would be no JSON to them),
            // which needs it uncompressed.
            h.set_request_header("accept-encoding", None);
        }
        route_to_backend(h, ep, self.backend);
        if b.body.is_some() {
            if end_of_stream {
                // Envoy cannot add a body to a request that has none (a body template
                // over the request's headers and params alone).
                let msg = "this endpoint makes its backend's body from the request's: send one (an empty JSON object {} will do)";
                return Err(Refusal::new(ErrorKind::InvalidRequest, msg).into());
            }
            self.phase = Phase::ReadBody;
            return Ok(Action::Pause);
        }
        let fixed = b.modifiers.request_body.is_some();
        if !ep.governance.needs_body() && !fixed {
            return Ok(self.gate(h, 0, Then::Upstream(Phase::Upstream { fallback: None })));
        }
        if end_of_stream {
            // No body at all (a GET): a filter inside Envoy cannot add one, so martian's
            // request body.Modifier has nothing to replace (config warns about it).
            // No body at all: what governance says about an empty one.
            governance::on_request_body(&ep.governance, &self.gov, &[])?;
            return Ok(self.gate(h, 0, Then::Upstream(Phase::Upstream { fallback: None })));
        }
        // Hold the headers (allow_on_headers_stop_iteration) until the body is checked:
        // a refused body never reaches the upstream, a templated or replaced one needs a new
        // length.
        self.phase = Phase::ReadBody;
        Ok(Action::Pause)
    }

    /// The whole request body, where the pipeline reads it.
    pub(super) fn request_body<H: Host>(&mut self, h: &mut H, size: usize) -> Result<Action, Stop> {
        let gw = Rc::clone(&self.gw);
        let Some(ep) = self.endpoint(&gw) else {
            return Ok(Action::Continue);
        };
        let body = h.request_body(size).unwrap_or_default();
        if self.mcp.is_some() {
            self.mcp_body(h, ep, &body)
        } else if self.llm.is_some() {
            self.llm_body(h, ep, &body)
        } else {
            self.plain_body(h, ep, &body)
        }
    }

    /// A plain endpoint with body governance: check, maybe rewrite (the template, then
    /// martian's body.Modifier), release.
    fn plain_body<H: Host>(
        &mut self,
        h: &mut H,
        ep: &Endpoint,
        body: &[u8],
    ) -> Result<Action, Stop> {
        let mut rendered = governance::on_request_body(&ep.governance, &self.gov, body)?;
        let b = ep.backends.get(self.backend);
        if let (Some(g), Some(data)) = (b.and_then(|b| b.body.as_ref()), &self.data) {
            // KrakenD's body generator: the backend's body from the client's request.
            let out = g.render(rendered.as_deref().unwrap_or(body), data)?;
            h.set_request_header("content-type", Some(&g.content_type));
            rendered = Some(out);
        }
        let fixed = b.and_then(|b| b.modifiers.request_body.as_ref());
        if let Some(f) = fixed {
            if let Some(t) = &f.content_type {
                h.set_request_header("content-type", Some(t));
            }
        }
        if let Some(new) = fixed.map(|f| f.bytes.as_slice()).or(rendered.as_deref()) {
            h.set_request_header("content-length", Some(&new.len().to_string()));
            h.set_request_body(new);
        }
        Ok(self.gate(h, 0, Then::Upstream(Phase::Upstream { fallback: None })))
    }

    /// An LLM call's body: read once into the canonical request, the backend chosen, the
    /// provider request computed, the budget reserved, then written once (or the request
    /// goes through failover callouts).
    fn llm_body<H: Host>(&mut self, h: &mut H, ep: &Endpoint, body: &[u8]) -> Result<Action, Stop> {
        if let Some(call) = self.llm.as_mut() {
            let read = call.read(&ep.governance, &self.gov, body);
            if call.front() != self.front {
                // The body chose KrakenD's contract: its answers and Envoy's take its shape.
                self.front = call.front();
                reply::mark_door(h, self.front);
            }
            read?;
            call.set_betas(h.request_header("anthropic-beta"));
        }
        let (forced, fallback) = match self.plan(h, ep)? {
            Plan::Proxy(forced, fallback) => (forced, fallback),
            Plan::Callouts(f) => {
                self.phase = Phase::Callouts(f);
                return Ok(self.next_attempt(h));
            }
        };
        let Some(call) = self.llm.as_mut() else {
            return Ok(Action::Continue);
        };
        let backend = match forced {
            Some(b) => b,
            None => call.model_backend(ep)?,
        };
        if let Some(count) = call.local_count(ep, backend, &*h) {
            // Token counting where the provider has none: the gateway's estimate, no call.
            let headers = [("content-type", "application/json")];
            h.send_reply(200, &headers, &count);
            return Err(Stop::Answered);
        }
        // A stream that may fail over keeps the parsed request for the other attempts.
        let out = match fallback {
            Some(_) => call.prepare(ep, backend, &*h)?,
            None => call.prepare_last(ep, backend, &*h)?,
        };
        let reserve = self.quota.reserve(h, &self.gw, &call.account)?;
        upstream::write_llm(h, ep, backend, &out);
        self.backend = backend;
        // The fleet limits (and a reservation kept in Redis) are asked once the request is
        // written: it goes up when they answer.
        Ok(self.gate(h, reserve, Then::Upstream(Phase::Upstream { fallback })))
    }
}

/// A plain endpoint's upstream path: `url_pattern` with the params (a `{param}` may not
/// change its structure: 400), then the client's query parameters the backend may get.
fn plain_path(
    ep: &Endpoint,
    backend: usize,
    params: &Params,
    query: Option<&str>,
) -> Result<Option<String>, Stop> {
    let Some(b) = ep.api.is_none().then(|| ep.backends.get(backend)).flatten() else {
        return Ok(None);
    };
    upstream_path(b, params, query)
        .map(Some)
        .map_err(|e| Refusal::new(ErrorKind::InvalidRequest, e.to_string()).into())
}

/// The upstream path of a plain backend: `url_pattern` with the params, then the client's
/// query parameters the backend may get.
fn upstream_path(
    b: &Backend,
    params: &Params,
    query: Option<&str>,
) -> Result<String, routing::ParamError> {
    let mut path = b.url_pattern.render(params)?;
    if let Some(q) = query.and_then(|q| b.forward.query(q)) {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&q);
    }
    Ok(path)
}

/// A plain endpoint whose `backend/conditional` rules all fail, without a fallback: KrakenD
/// calls no backend; the client gets a 404 saying why.
fn no_backend() -> Stop {
    let msg = "no backend of this endpoint takes this request (backend/conditional)";
    Refusal::new(ErrorKind::NotFound, msg).into()
}

/// 404 or 405 for a request no endpoint takes.
fn not_routed(miss: routing::Miss, method: &str, path: &str) -> Refusal {
    match miss {
        routing::Miss::NotFound => Refusal::new(
            ErrorKind::NotFound,
            format!("no endpoint matches {method} {path}"),
        ),
        routing::Miss::MethodNotAllowed(allowed) => {
            let allow = allowed.join(", ");
            let msg = format!("method {method} is not allowed on {path} (allowed: {allow})");
            Refusal::new(ErrorKind::MethodNotAllowed, msg).header("allow", allow)
        }
    }
}
