//! The stored Responses API on OpenAI backends: `GET {responses}/{id}` (also streamed again
//! with `stream=true&starting_after=N`), `DELETE {responses}/{id}`, `POST
//! {responses}/{id}/cancel` and `GET {responses}/{id}/input_items`, where `{responses}` is an
//! LLM endpoint whose path ends in `/responses`. They pass the endpoint's authentication and
//! rate limits like its POST, and go to the backend that stores the response (an OpenAI or
//! Azure backend sent the Responses API) with its credential. Any other backend stores
//! nothing: a 400 in OpenAI's shape, nothing sent.
//!
//! The charge of a background call is held at its POST ([`crate::cost::held`]); a retrieve
//! whose answer shows it finished with its usage trues the charge up, once ([`Watch`]).

use super::fleet;
use super::{reply, upstream, Action, Flow, Phase, Stop, Then};
use crate::config::{Endpoint, Gateway};
use crate::cost::held;
use crate::cost::Store;
use crate::host::Host;
use crate::providers::model::Usage;
use crate::providers::{responses, EndpointKind, Outgoing};
use crate::refusal::{ErrorKind, Refusal};
use crate::routing::Params;
use crate::security::policy::Stage;
use crate::stream::{SseEvent, SseParser};
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
    ) -> Result<Action, Stop> {
        if let Some(control) = unguarded(ep).filter(|_| route.op.reads()) {
            let msg = format!("stored responses are not served on this endpoint: their content would pass its {control}");
            return Err(Refusal::new(ErrorKind::InvalidRequest, msg).into());
        }
        let now = h.now_unix();
        let hold = held::get(&*h, &route.id, now).filter(|x| x.endpoint == route.index);
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
        if hold.is_some() && matches!(route.op, Op::Retrieve | Op::Cancel) {
            self.stored = Some(Watch::new(route.id));
        }
        Ok(self.gate(h, 0, Then::Upstream(Phase::Upstream { fallback: None })))
    }

    /// The answer's headers: a retrieve's answer is watched when it can show the usage.
    pub(super) fn watch_start<H: Host>(&mut self, h: &H, end_of_stream: bool) {
        if let Some(w) = self.stored.as_mut() {
            let status = h.response_header(":status").and_then(|s| s.parse().ok());
            let content_type = h.response_header("content-type");
            if !w.start(status, content_type.as_deref()) || end_of_stream {
                self.stored = None;
            }
        }
    }

    /// A chunk of a watched answer: a finished call's usage trues its hold up (once).
    pub(super) fn watch_chunk<H: Host>(&mut self, h: &mut H, size: usize, end: bool) {
        let Some(w) = self.stored.as_mut() else {
            return;
        };
        let chunk = h.response_body(size).unwrap_or_default();
        let Some(usage) = w.feed(&chunk, end) else {
            return;
        };
        let id = w.id.clone();
        self.stored = None;
        self.true_up(h, &id, &usage);
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

/// The most of a JSON answer read for its usage.
const WATCH_MAX: usize = 16 << 20;

/// Reads a retrieve's answer, as it passes untouched, for a finished call's usage: the
/// `response` object (JSON), or the stream's `response.completed` (or `incomplete`,
/// `failed`, `cancelled`) event.
#[derive(Debug)]
pub struct Watch {
    pub id: String,
    /// None until the answer's headers say; then JSON (buffered) or a stream.
    sse: Option<SseParser>,
    json: bool,
    buf: Vec<u8>,
    events: Vec<SseEvent>,
}

impl Watch {
    pub fn new(id: String) -> Self {
        Self {
            id,
            sse: None,
            json: false,
            buf: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The answer's headers: false when there is nothing to watch (an error).
    pub fn start(&mut self, status: Option<u16>, content_type: Option<&str>) -> bool {
        if !status.is_some_and(|s| (200..300).contains(&s)) {
            return false;
        }
        if content_type.is_some_and(|t| t.contains("event-stream")) {
            self.sse = Some(SseParser::new());
        } else {
            self.json = true;
        }
        true
    }

    /// A chunk of the answer: the usage once it shows the call finished.
    pub fn feed(&mut self, chunk: &[u8], end: bool) -> Option<Usage> {
        if let Some(sse) = self.sse.as_mut() {
            self.events.clear();
            sse.feed(chunk, &mut self.events);
            if end {
                sse.finish(&mut self.events);
            }
            return self.events.iter().find_map(|e| {
                let v: Value = serde_json::from_str(&e.data).ok()?;
                responses::terminal_usage(v.get("response")?)
            });
        }
        if !self.json {
            return None;
        }
        let room = WATCH_MAX.saturating_sub(self.buf.len());
        self.buf
            .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if !end {
            return None;
        }
        let v: Value = serde_json::from_slice(&std::mem::take(&mut self.buf)).ok()?;
        responses::terminal_usage(&v)
    }
}

#[cfg(test)]
#[path = "stored_tests.rs"]
mod tests;
