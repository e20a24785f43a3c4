//! The stored Responses API on OpenAI backends: `GET {responses}/{id}` (also streamed again
//! with `stream=true&starting_after=N`), `DELETE {responses}/{id}`, `POST
//! {responses}/{id}/cancel` and `GET {responses}/{id}/input_items`, where `{responses}` is an
//! LLM endpoint whose path ends in `/responses`. They pass the endpoint's authentication and
//! rate limits like its POST, and go to the backend that stores the response (an OpenAI or
//! Azure backend sent the Responses API) with its credential. Any other backend stores
//! nothing: a 400 in OpenAI's shape, nothing sent.
//!
//! The answer reaches the client as the provider sent it when it is a 2xx JSON object or
//! stream (events that are not JSON dropped), else as an error in OpenAI's shape ([`Answer`]).
//! The charge of a background call is held at its POST ([`crate::cost::held`]); a retrieve
//! whose answer shows it finished with its usage trues the charge up, once.

use super::fleet;
use super::{reply, upstream, Action, Flow, Phase, Stop, Then};
use crate::config::{Endpoint, Gateway};
use crate::cost::held;
use crate::cost::Store;
use crate::host::Host;
use crate::providers::model::Usage;
use crate::providers::{responses, EndpointKind, FrontDoor, Outgoing, Wire};
use crate::refusal::{ErrorKind, Refusal};
use crate::routing::Params;
use crate::security::guard::CallModel;
use crate::security::policy::Stage;
use crate::security::secrets::Mask;
use crate::stream::{write_event, SseEvent, SseParser};
use serde_json::Value;
use std::rc::Rc;

/// What a stored-response request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Retrieve,
    Delete,
    Cancel,
    InputItems,
}

impl Op {
    fn suffix(self) -> &'static str {
        match self {
            Op::Retrieve | Op::Delete => "",
            Op::Cancel => "/cancel",
            Op::InputItems => "/input_items",
        }
    }

    /// The query parameters OpenAI's API takes for it (`include[]` as the SDKs spell it).
    fn query_keys(self) -> &'static [&'static str] {
        const INCLUDE: [&str; 3] = ["include", "include[]", "include%5B%5D"];
        match self {
            Op::Retrieve => &[
                INCLUDE[0],
                INCLUDE[1],
                INCLUDE[2],
                "include_obfuscation",
                "stream",
                "starting_after",
            ],
            Op::InputItems => &[
                INCLUDE[0], INCLUDE[1], INCLUDE[2], "after", "before", "limit", "order",
            ],
            Op::Delete | Op::Cancel => &[],
        }
    }

    /// The answer carries the model's output or the client's input.
    fn reads(self) -> bool {
        !matches!(self, Op::Delete)
    }
}

/// A stored-response request, matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The Responses endpoint, and its path params.
    pub index: usize,
    pub params: Params,
    pub id: String,
    pub op: Op,
    /// The client's query, as checked ([`query`]).
    pub query: Option<String>,
}

/// The stored-response request at `method path?query`, when the path is one under a
/// Responses endpoint: the route, or the refusal (bad method 405, bad id or query 400).
/// `None`: not such a path.
pub fn find(
    gw: &Gateway,
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Option<Result<Route, Refusal>> {
    let (head, last) = path.rsplit_once('/')?;
    let mut tries: Vec<(&str, &str, Option<Op>)> = Vec::with_capacity(2);
    let op = match last {
        "cancel" => Some(Op::Cancel),
        "input_items" => Some(Op::InputItems),
        _ => None,
    };
    if let Some((base, id)) = op.and_then(|_| head.rsplit_once('/')) {
        tries.push((base, id, op));
    }
    tries.push((head, last, None));
    for (base, id, op) in tries {
        if id.is_empty() {
            continue;
        }
        let responses = gw.endpoints.iter().enumerate().filter(|(_, e)| {
            e.api.is_some() && e.kind == EndpointKind::Responses && e.method == "POST"
        });
        for (index, ep) in responses {
            if let Some(params) = ep.pattern.matches(base) {
                return Some(route(index, params, id, op, method, query));
            }
        }
    }
    None
}

fn route(
    index: usize,
    params: Params,
    id: &str,
    op: Option<Op>,
    method: &str,
    query: Option<&str>,
) -> Result<Route, Refusal> {
    let op = match (op, method) {
        (None, "GET") => Op::Retrieve,
        (None, "DELETE") => Op::Delete,
        (Some(Op::Cancel), "POST") => Op::Cancel,
        (Some(Op::InputItems), "GET") => Op::InputItems,
        (op, _) => {
            let allow = match op {
                None => "GET, DELETE",
                Some(Op::Cancel) => "POST",
                Some(_) => "GET",
            };
            let msg =
                format!("method {method} is not allowed on a stored response (allowed: {allow})");
            return Err(Refusal::new(ErrorKind::MethodNotAllowed, msg).header("allow", allow));
        }
    };
    if !held::valid_id(id) {
        let msg = "response id: a stored response's id is 1 to 200 letters, digits, _ or - (like resp_123)";
        return Err(Refusal::new(ErrorKind::InvalidRequest, msg).param(Some("response_id")));
    }
    Ok(Route {
        index,
        params,
        id: id.to_string(),
        op,
        query: self::query(op, query)?,
    })
}

/// The client's query, checked: only the parameters OpenAI takes for `op`, each value
/// letters, digits, `.`, `_` or `-` (nothing that could start another parameter or path).
fn query(op: Op, query: Option<&str>) -> Result<Option<String>, Refusal> {
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
        let name: String = key.chars().take(40).collect();
        if !op.query_keys().contains(&key) {
            let msg = format!("query parameter \"{name}\" is not taken here");
            return Err(Refusal::new(ErrorKind::InvalidRequest, msg).param(Some(&name)));
        }
        if value.len() > 200 || !value.bytes().all(safe) {
            let msg = format!("query parameter \"{name}\": a value of letters, digits, ., _ or -");
            return Err(Refusal::new(ErrorKind::InvalidRequest, msg).param(Some(&name)));
        }
        kept.push(pair);
    }
    Ok((!kept.is_empty()).then(|| kept.join("&")))
}

/// Why the endpoint cannot show stored content: a control that reads prompts or answers
/// (PII masking, exfiltration guard, answer checks) would be passed by it.
fn unguarded(ep: &Endpoint) -> Option<&'static str> {
    if ep.security.pii.is_some() {
        Some("PII masking")
    } else if ep.security.exfil.is_some() {
        Some("the exfiltration guard")
    } else if ep.security.checks.has(Stage::Response)
        || ep.backends.iter().any(|b| b.checks.has(Stage::Response))
    {
        Some("answer checks")
    } else {
        None
    }
}

/// `models_by_role`: a stored response is a model's output, so the caller's roles must allow
/// the model its POST was sent (known from a background call's hold). An unknown model is
/// allowed only to roles that may use any model (`*`).
fn roles_allow(ep: &Endpoint, hold: Option<&held::Hold>, roles: &[String]) -> Result<(), Refusal> {
    let Some(g) = ep.security.guard.as_ref() else {
        return Ok(());
    };
    let model = hold.map_or("", |h| h.model.as_str());
    let none = |_: &str| None;
    let m = CallModel {
        requested: model,
        upstream: model,
        resolve: &none,
    };
    if g.allows_model(&m, roles) {
        return Ok(());
    }
    let msg = match hold {
        Some(h) => format!("your role may not use the model of this response ({})", h.model),
        None => "this endpoint limits models by role (models_by_role) and the model of this stored response is not known to the gateway: only a role allowed every model may read it".into(),
    };
    Err(Refusal::new(ErrorKind::Forbidden, msg))
}

/// The backend that stores the response: the one that created it (a background call's
/// hold), else the endpoint's first backend sent the Responses API.
fn backend(ep: &Endpoint, hold: Option<&held::Hold>) -> Result<usize, Refusal> {
    let stores = |i: &usize| {
        let b = ep.backends.get(*i);
        b.and_then(|b| b.llm.as_ref().map(|l| (b, l)))
            .is_some_and(|(b, l)| {
                super::doors::responses_upstream(l.provider.wire(), b.url_pattern.as_str())
            })
    };
    let created = hold.map(|h| h.backend).filter(stores);
    created.or_else(|| (0..ep.backends.len()).find(stores)).ok_or_else(|| {
        let msg = "stored responses (retrieve, delete, cancel, input_items) exist only on OpenAI backends sent the Responses API (url_pattern ending in /responses); this endpoint's models are served by other providers";
        Refusal::new(ErrorKind::InvalidRequest, msg).param(Some("response_id"))
    })
}

impl Flow {
    /// A stored-response request after authentication and limits: written to the backend
    /// that stores the response, its credential set. A finished background call's usage is
    /// watched for in the answer when this Envoy holds its charge.
    pub(super) fn stored_upstream<H: Host>(
        &mut self,
        h: &mut H,
        ep: &Endpoint,
        route: Route,
        roles: &[String],
    ) -> Result<Action, Stop> {
        if let Some(control) = unguarded(ep).filter(|_| route.op.reads()) {
            let msg = format!("stored responses are not served on this endpoint: their content would pass its {control}");
            return Err(Refusal::new(ErrorKind::InvalidRequest, msg).into());
        }
        let now = h.now_unix();
        let hold = held::get(&*h, &route.id, now).filter(|x| x.endpoint == route.index);
        roles_allow(ep, hold.as_ref(), roles)?;
        let index = backend(ep, hold.as_ref())?;
        let (b, l) = match ep.backends.get(index).map(|b| (b, b.llm.as_ref())) {
            Some((b, Some(l))) => (b, l),
            _ => return Ok(Action::Continue),
        };
        let bad =
            |e: crate::routing::ParamError| Refusal::new(ErrorKind::InvalidRequest, e.to_string());
        let base = b.url_pattern.render(&route.params).map_err(bad)?;
        let base = base.split('?').next().unwrap_or_default();
        let mut path = format!("{base}/{}{}", route.id, route.op.suffix());
        if let Some(q) = &route.query {
            path.push('?');
            path.push_str(q);
        }
        let out = l.authorize(Outgoing {
            path,
            body: Vec::new(),
            headers: Vec::new(),
        });
        upstream::write_stored(h, ep, index, &out);
        reply::mark_front(h, ep, None);
        self.backend = index;
        let watched = hold.is_some() && matches!(route.op, Op::Retrieve | Op::Cancel);
        self.stored = Some(Answer::new(watched.then_some(route.id)));
        Ok(self.gate(h, 0, Then::Upstream(Phase::Upstream { fallback: None })))
    }

    /// The answer's headers: a stream (2xx SSE) passes event by event; anything else is read
    /// whole (its headers held), to be passed as JSON or made OpenAI's error.
    pub(super) fn stored_headers<H: Host>(&mut self, h: &mut H, end_of_stream: bool) -> Action {
        let Some(a) = self.stored.as_mut() else {
            return Action::Continue;
        };
        let status = h.response_header(":status").and_then(|s| s.parse().ok());
        let content_type = h.response_header("content-type");
        a.start(status, content_type.as_deref());
        h.set_response_header("content-length", None);
        h.set_response_header("content-encoding", None);
        if end_of_stream {
            return self.stored_chunk(h, 0, true);
        }
        if a.streams() {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    /// A chunk of the answer (`end`: the last one): events re-sent (JSON ones only), or the
    /// whole answer at its end; a finished background call's usage trues its hold up.
    pub(super) fn stored_chunk<H: Host>(&mut self, h: &mut H, size: usize, end: bool) -> Action {
        let gw = Rc::clone(&self.gw);
        let secrets = self.endpoint(&gw).map(|ep| Rc::clone(&ep.security.secrets));
        let Some(a) = self.stored.as_mut() else {
            return Action::Continue;
        };
        if !a.streams() && !end {
            return Action::Pause;
        }
        let chunk = h.response_body(size).unwrap_or_default();
        let (out, usage) = a.feed(&chunk, end);
        let scrubbed = secrets.and_then(|s| s.scrub(&out.body, Mask::Redacted));
        for (name, value) in &out.headers {
            h.set_response_header(name, Some(value));
        }
        h.set_response_body(scrubbed.as_deref().unwrap_or(&out.body));
        if let (Some(usage), Some(id)) = (usage, a.held_id()) {
            self.true_up(h, &id, &usage);
        }
        Action::Continue
    }

    /// The hold of response `id` settled to the reported usage: the budget charged the
    /// difference (a give-back when the estimate was more), in this Envoy or in Redis.
    fn true_up<H: Host>(&mut self, h: &mut H, id: &str, usage: &Usage) {
        let now = h.now_unix();
        let Some(hold) = held::take(h, id, now) else {
            return;
        };
        let Some(charge) = hold.charge else {
            return;
        };
        let gw = Rc::clone(&self.gw);
        let amount = charge.weigh(usage, gw.cost.usage.cost_micros(&hold.model, usage));
        match charge.store {
            Store::Local => {
                charge.settle(h, now, amount);
            }
            Store::Fleet(_) => {
                // The difference goes to the windows of now (the POST's may have ended).
                self.fleet.at = now;
                fleet::settle(h, &gw, &mut self.fleet, Some(&charge), Some(amount), 0)
            }
        }
    }

    /// A background call answered `queued`: its charge (the reservation, just recorded) is
    /// held under its response id until a retrieve reports the usage.
    pub(super) fn hold<H: Host>(&self, h: &mut H, id: &str) {
        let Some(call) = self.llm.as_ref() else {
            return;
        };
        let u = call.account.reservation();
        let model = call.account.model.clone();
        let charge = self.quota.charge.clone().map(|mut c| {
            c.reserved = c.weigh(&u, self.gw.cost.usage.cost_micros(&model, &u));
            c
        });
        let now = h.now_unix();
        let hold = held::Hold {
            charge,
            model,
            endpoint: self.endpoint.unwrap_or_default(),
            backend: self.backend,
            expires: now.saturating_add(held::TTL_SECS),
        };
        held::put(h, id, &hold, now);
    }
}

/// What the client gets of a stored-response answer, and the usage a finished background
/// call reports in it.
#[derive(Debug)]
pub struct Answer {
    /// The response id, when this Envoy holds its charge (its usage is looked for).
    held: Option<String>,
    status: u16,
    /// A 2xx stream's parser (None: the answer is read whole).
    sse: Option<SseParser>,
    events: Vec<SseEvent>,
    /// The usage was seen (it is taken once).
    settled: bool,
}

/// A chunk of the answer for the client: headers to set, and its bytes.
#[derive(Debug, Default)]
pub struct Chunk {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// `held`: the response id whose charge this Envoy holds.
    pub fn new(held: Option<String>) -> Self {
        Self {
            held,
            status: 502,
            sse: None,
            events: Vec::new(),
            settled: false,
        }
    }

    /// The answer's headers.
    pub fn start(&mut self, status: Option<u16>, content_type: Option<&str>) {
        self.status = status.unwrap_or(502);
        let ok = (200..300).contains(&self.status);
        if ok && content_type.is_some_and(|t| t.contains("event-stream")) {
            self.sse = Some(SseParser::new());
        }
    }

    pub fn streams(&self) -> bool {
        self.sse.is_some()
    }

    /// The id whose hold the answer settles.
    fn held_id(&self) -> Option<String> {
        self.held.clone()
    }

    /// A chunk (or, read whole, the answer at its end): what the client gets, and the usage
    /// of a finished call, once, when this Envoy holds its charge.
    pub fn feed(&mut self, chunk: &[u8], end: bool) -> (Chunk, Option<Usage>) {
        let mut out = Chunk::default();
        let Some(sse) = self.sse.as_mut() else {
            let (status, body, object) = whole(self.status, chunk);
            out.headers.push((":status", status.to_string()));
            out.headers
                .push(("content-type", "application/json".into()));
            out.body = body;
            let usage = object.as_ref().and_then(responses::terminal_usage);
            return (out, self.once(usage));
        };
        self.events.clear();
        sse.feed(chunk, &mut self.events);
        if end {
            sse.finish(&mut self.events);
        }
        let mut usage = None;
        for e in &self.events {
            // Only JSON events reach the client (a cut or garbled one is dropped).
            let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
                continue;
            };
            usage = usage.or_else(|| v.get("response").and_then(responses::terminal_usage));
            write_event(&mut out.body, e.event.as_deref(), &e.data);
        }
        (out, self.once(usage))
    }

    fn once(&mut self, usage: Option<Usage>) -> Option<Usage> {
        let usage = usage.filter(|_| self.held.is_some() && !self.settled)?;
        self.settled = true;
        Some(usage)
    }
}

/// A whole answer for the client: a 2xx JSON object as sent (and parsed, for its usage);
/// an error in OpenAI's shape, whatever shape the provider (or Envoy) gave it.
fn whole(status: u16, body: &[u8]) -> (u16, Vec<u8>, Option<Value>) {
    let ok = (200..300).contains(&status);
    if ok {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            return (status, body.to_vec(), Some(v));
        }
    }
    let mut e = crate::providers::decode_error(Wire::OpenAi, status, body);
    if ok {
        e.status = 502;
        e.kind = "server_error".into();
        e.message = format!("the provider's answer is not JSON: {}", e.message);
    }
    let (status, body) = FrontDoor::OpenAi.error(&e);
    (status, body, None)
}

#[cfg(test)]
#[path = "stored_tests.rs"]
mod tests;
