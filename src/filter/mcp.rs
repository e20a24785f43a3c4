//! MCP endpoints in the pipeline ([`crate::mcp`] is the protocol as data). An MCP call
//! reads the client's JSON-RPC message whole, then computes its answer: the gateway answers
//! `initialize`, `ping`, notifications and a server's `tools/list` itself; a tool call goes
//! to its workflow's backend, and a federation's `tools/list` and `tools/call` to the
//! upstream MCP servers, as callouts ([`Exchange`]: one step after the other, each upstream
//! initialized once and its session kept in shared data). The answer is written once
//! ([`write`]), scrubbed of the gateway's secrets.
//!
//! Controls on a tool call, in order: the session (bound to its caller), the tool's
//! visibility to the caller (`ai/mcp-tools`: a denied tool answers as an unknown one), its
//! rate limit, the arguments (input schema, PII masking), then on the result the
//! exfiltration guard, the PII restore and the output schema.
//!
//! A relay (a plain endpoint whose backend gets `Mcp-Session-Id`) is proxied as any plain
//! endpoint; only its sessions are bound to their caller here ([`Flow::relay_session`],
//! [`Flow::relay_answered`]).

use super::security::Auth;
use super::upstream::{self, Headers};
use super::{Action, Flow, Phase, Stop};
use crate::config::{Backend, Endpoint};
use crate::governance::{self, ratelimit};
use crate::host::Host;
use crate::mcp::config::{Federation, Server, Tool};
use crate::mcp::jsonrpc::{self as rpc, Answer, Message, RpcError};
use crate::mcp::session::{self, Standing};
use crate::mcp::{self, server, Access, Caller, Kind, McpEndpoint};
use crate::observe;
use crate::providers::Outgoing;
use crate::refusal::{Refusal, ERROR_HEADER};
use crate::security::pii::{Masking, Pii, PiiAction};
use crate::security::secrets::{Mask, Secrets};
use crate::support::json::each_string;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::rc::Rc;

/// Callout timeout when the endpoint sets none.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Pages of an upstream's `tools/list` followed.
const MAX_PAGES: u8 = 10;

/// One MCP request, from its headers to its answer.
pub struct McpCall {
    caller: String,
    roles: Vec<String>,
    claims: Option<Value>,
    /// The client takes SSE answers.
    accepts_sse: bool,
    /// `Mcp-Session-Id` and `MCP-Protocol-Version` as the client sent them.
    session: Option<String>,
    version: Option<String>,
    /// Each `ai/mcp-tools` rule's rate-limit client key (read while the headers were whole).
    limit_keys: Vec<Option<String>>,
    request_id: Vec<u8>,
    exchange: Option<Exchange>,
}

/// A tool call's labels and clock, for its metrics.
struct Metered {
    server: String,
    tool: String,
    start_ms: u64,
}

/// The callouts that answer one request.
pub struct Exchange {
    id: Value,
    sse: bool,
    steps: VecDeque<Step>,
    current: Option<(Step, u32)>,
    /// An upstream that forgot its session is initialized again once.
    retried: bool,
    /// `tools/list` of a federation: the tools gathered so far.
    tools: Vec<Value>,
    masking: Masking,
    metered: Option<Metered>,
    answer: Option<Answer>,
}

/// One callout.
#[derive(Debug, Clone)]
enum Step {
    /// `initialize` (then `notifications/initialized`) with upstream backend `b`.
    Init(usize),
    Initialized(usize),
    /// A page of upstream `b`'s `tools/list`.
    List(usize, Option<String>, u8),
    /// `tools/call` to upstream `b` with these params.
    Call(usize, Value),
    /// A server tool's workflow backend.
    Workflow(usize, server::ToolRequest),
}

impl McpCall {
    fn caller(&self) -> Caller<'_> {
        Caller {
            roles: &self.roles,
            claims: self.claims.as_ref(),
        }
    }
}

impl Flow {
    /// Request headers of an MCP endpoint: who calls, with what session, then the body.
    pub(super) fn await_mcp_body<H: Host>(
        &mut self,
        h: &mut H,
        ep: &Endpoint,
        m: &McpEndpoint,
        auth: Auth,
        end_of_stream: bool,
    ) -> Result<Action, Stop> {
        let limit_keys = m
            .policy
            .rules
            .iter()
            .map(|r| {
                let rl = r.rate_limit.as_ref()?;
                // The authenticated caller, else the rule's own strategy (address, header).
                match auth.caller.is_empty() {
                    false => Some(auth.caller.clone()),
                    true => rl.client_key(&*h, &Vec::new()),
                }
            })
            .collect();
        let accept = h.request_header("accept");
        let session = presented_session(&*h)
            .map_err(|e| self.answered(h, ep, Answer::err(&Value::Null, &e, false)))?;
        self.mcp = Some(Box::new(McpCall {
            caller: auth.caller,
            roles: auth.roles,
            claims: auth.claims,
            accepts_sse: rpc::accepts_sse(accept.as_deref()),
            session,
            version: h.request_header("mcp-protocol-version"),
            limit_keys,
            request_id: h.property(&["request", "id"]).unwrap_or_default(),
            exchange: None,
        }));
        if end_of_stream {
            let e = RpcError::new(
                rpc::PARSE_ERROR,
                "the request has no body: a JSON-RPC message is required",
            )
            .status(400);
            return Err(self.answered(h, ep, Answer::err(&Value::Null, &e, false)));
        }
        self.phase = Phase::ReadBody;
        Ok(Action::Pause)
    }

    /// The whole JSON-RPC message: answered here, or by callouts.
    pub(super) fn mcp_body<H: Host>(
        &mut self,
        h: &mut H,
        ep: &Endpoint,
        body: &[u8],
    ) -> Result<Action, Stop> {
        governance::on_request_body(&ep.governance, &self.gov, body)?;
        let (Some(m), Some(call)) = (ep.mcp.as_ref(), self.mcp.as_deref_mut()) else {
            return Ok(Action::Continue);
        };
        let sse = call.accepts_sse && !m.info().json_response;
        let answer = match rpc::parse(body) {
            Err((id, e)) => Answer::err(&id, &e, false),
            Ok(Message::Notification { .. } | Message::Response) => match check_session(h, m, call)
            {
                Ok(()) => Answer::accepted(),
                Err(e) => Answer::err(&Value::Null, &e, false),
            },
            Ok(Message::Request { id, method, params }) => {
                match request(h, ep, m, call, &id, &method, &params, sse) {
                    Ok(Some(answer)) => answer,
                    Ok(None) => return Ok(self.next_step(h)),
                    Err(e) => {
                        count_refusal(h, m, call, &method, &params, &e);
                        let mut a = Answer::err(&id, &e, sse);
                        if let Some(s) = e.data.as_ref().and_then(|d| d["retry_after"].as_u64()) {
                            a.headers.push(("retry-after", s.to_string()));
                        }
                        a
                    }
                }
            }
        };
        Err(self.answered(h, ep, answer))
    }

    /// Writes an answer the gateway made before any callout.
    fn answered<H: Host>(&mut self, h: &mut H, ep: &Endpoint, a: Answer) -> Stop {
        write(h, &a, &ep.security.secrets);
        Stop::Answered
    }

    /// Sends the next callout of the exchange, or the answer when none is left.
    pub(super) fn next_step<H: Host>(&mut self, h: &mut H) -> Action {
        let gw = Rc::clone(&self.gw);
        let Some(ep) = self.endpoint(&gw) else {
            return Action::Continue;
        };
        let (Some(m), Some(call)) = (ep.mcp.as_ref(), self.mcp.as_deref_mut()) else {
            return Action::Continue;
        };
        let caller = Caller {
            roles: &call.roles,
            claims: call.claims.as_ref(),
        };
        let Some(x) = call.exchange.as_mut() else {
            return Action::Continue;
        };
        let client: Vec<(String, String)> = h
            .request_headers()
            .into_iter()
            .filter(|(k, _)| k != session::HEADER && k != "mcp-protocol-version")
            .collect();
        while let Some(step) = x.steps.pop_front() {
            let Some(c) = callout(h, ep, &step, &client) else {
                continue;
            };
            let list: Vec<(&str, &str)> = c
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Some(token) = h.dispatch(&c.cluster, &list, &c.body, c.timeout_ms) {
                x.current = Some((step, token));
                self.phase = Phase::Mcp;
                return Action::Pause;
            }
            fail(x, &step, None, &[], ep);
        }
        let answer = x.answer.take().unwrap_or_else(|| listing(m, &caller, x));
        if let Some(m) = x.metered.take() {
            meter(h, &m, &answer);
        }
        self.phase = if matches!(self.phase, Phase::Mcp) {
            Phase::Answered
        } else {
            Phase::Replied
        };
        write(h, &answer, &ep.security.secrets);
        Action::Pause
    }

    /// A callout of the exchange answered (no headers: it failed).
    pub(super) fn on_mcp_callout<H: Host>(&mut self, h: &mut H, token: u32, size: usize) {
        let gw = Rc::clone(&self.gw);
        let Some(ep) = self.endpoint(&gw) else {
            return;
        };
        let Some(call) = self.mcp.as_deref_mut() else {
            return;
        };
        let Some(x) = call.exchange.as_mut() else {
            return;
        };
        let Some((step, _)) = x.current.take_if(|(_, t)| *t == token) else {
            return;
        };
        let headers = h.callout_headers();
        let body = h.callout_body(size).unwrap_or_default();
        let status: Option<u16> = headers.get(":status").and_then(|s| s.parse().ok());
        match status {
            Some(s) if (200..300).contains(&s) => done(h, ep, x, step, &headers, &body),
            _ => fail(x, &step, status, &body, ep),
        }
        self.next_step(h);
    }

    /// A relay's request headers: a presented session must be this caller's (an unknown
    /// or foreign one is answered as a server answers an unknown session); a request
    /// without one may open one, bound when the answer names it.
    pub(super) fn relay_session<H: Host>(
        &mut self,
        h: &mut H,
        ep: &Endpoint,
        caller: &str,
    ) -> Result<(), Stop> {
        if caller.is_empty() || !ep.relays_mcp_sessions() {
            return Ok(());
        }
        let presented = presented_session(&*h)
            .map_err(|e| self.answered(h, ep, Answer::err(&Value::Null, &e, false)))?;
        match presented {
            Some(sid) => match session::check(&*h, &sid, caller, h.now_unix()) {
                Standing::Own => Ok(()),
                Standing::Unknown => Err(self.answered(h, ep, unknown_session())),
            },
            None => {
                self.relay = Some(caller.to_string());
                Ok(())
            }
        }
    }

    /// A relay's answer headers: the session the upstream opened belongs to its caller.
    pub(super) fn relay_answered<H: Host>(&mut self, h: &mut H) {
        if let Some(caller) = self.relay.take() {
            if let Some(sid) = h.response_header(session::HEADER) {
                let now = h.now_unix();
                session::bind(h, &sid, &caller, now);
            }
        }
    }
}

/// The client's `Mcp-Session-Id`. Two of them are refused (400): the gateway would check
/// one and an upstream might use the other.
fn presented_session<H: Host + ?Sized>(h: &H) -> Result<Option<String>, RpcError> {
    let mut ids = h
        .request_headers()
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(session::HEADER));
    let first = ids.next().map(|(_, v)| v);
    if ids.next().is_some() {
        let msg = "Bad Request: more than one Mcp-Session-Id header";
        return Err(RpcError::new(rpc::INVALID_REQUEST, msg).status(400));
    }
    Ok(first)
}

/// 404 with `-32001`: what a server answers a session it does not know.
fn unknown_session() -> Answer {
    let e = RpcError::new(rpc::SESSION_NOT_FOUND, "Session not found").status(404);
    Answer::err(&Value::Null, &e, false)
}

/// The session rules of a stateful MCP endpoint, for anything but `initialize`.
fn check_session<H: Host>(h: &H, m: &McpEndpoint, call: &McpCall) -> Result<(), RpcError> {
    if m.info().stateless {
        return Ok(());
    }
    let Some(sid) = &call.session else {
        return Err(
            RpcError::new(rpc::INVALID_REQUEST, "Bad Request: Missing session ID").status(400),
        );
    };
    match session::check(h, sid, &call.caller, h.now_unix()) {
        Standing::Own => Ok(()),
        Standing::Unknown => {
            Err(RpcError::new(rpc::SESSION_NOT_FOUND, "Session not found").status(404))
        }
    }
}

/// A request: its answer, or None when callouts were planned (`call.exchange`).
#[allow(clippy::too_many_arguments)]
fn request<H: Host>(
    h: &mut H,
    ep: &Endpoint,
    m: &McpEndpoint,
    call: &mut McpCall,
    id: &Value,
    method: &str,
    params: &Map<String, Value>,
    sse: bool,
) -> Result<Option<Answer>, RpcError> {
    if !matches!(method, "initialize" | "ping" | "tools/list" | "tools/call") {
        return Err(RpcError::new(
            rpc::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        ));
    }
    if method == "initialize" {
        let mut a = Answer::ok(id, server::initialize(m.info(), params), sse);
        if !m.info().stateless {
            let sid = session::new_id(&call.request_id, &call.caller, h.now_millis());
            let now = h.now_unix();
            session::bind(h, &sid, &call.caller, now);
            a.headers.push((session::HEADER, sid));
        }
        return Ok(Some(a));
    }
    check_session(h, m, call)?;
    if !server::version_ok(call.version.as_deref()) {
        let msg = format!(
            "Bad Request: unsupported MCP-Protocol-Version (supported: {})",
            server::VERSIONS.join(", ")
        );
        return Err(RpcError::new(rpc::INVALID_REQUEST, msg).status(400));
    }
    let mut x = Exchange::new(id, sse);
    match (method, &m.kind) {
        ("ping", _) => return Ok(Some(Answer::ok(id, json!({}), sse))),
        ("tools/list", Kind::Server(s)) => {
            let caller = call.caller();
            let tools: Vec<Value> = s
                .tools
                .iter()
                .filter(|t| m.policy.access(&t.name, &caller) != Access::Denied)
                .map(|t| t.listing.clone())
                .collect();
            return Ok(Some(Answer::ok(id, json!({"tools": tools}), sse)));
        }
        ("tools/list", Kind::Federation(_)) => {
            x.steps = (0..ep.backends.len())
                .flat_map(|b| first_step(&*h, ep, b, Step::List(b, None, 0)))
                .collect();
        }
        (_, Kind::Server(s)) => server_call(h, ep, m, s, call, params, &mut x)?,
        (_, Kind::Federation(f)) => federated_call(h, ep, m, f, call, params, &mut x)?,
    }
    call.exchange = Some(x);
    Ok(None)
}

impl Exchange {
    fn new(id: &Value, sse: bool) -> Self {
        Self {
            id: id.clone(),
            sse,
            steps: VecDeque::new(),
            current: None,
            retried: false,
            tools: Vec::new(),
            masking: Masking::default(),
            metered: None,
            answer: None,
        }
    }
}

/// The tool a `tools/call` names, if the caller may see it: its policy rule.
fn allowed(m: &McpEndpoint, call: &McpCall, name: &str) -> Result<Option<usize>, RpcError> {
    match m.policy.access(name, &call.caller()) {
        Access::Denied => Err(unknown_tool(name)),
        Access::Allowed(rule) => Ok(rule),
    }
}

fn unknown_tool(name: &str) -> RpcError {
    RpcError::new(rpc::INVALID_PARAMS, format!("Unknown tool: {name}"))
}

fn tool_name(params: &Map<String, Value>) -> Result<&str, RpcError> {
    params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(rpc::INVALID_PARAMS, "\"name\" (the tool) is required"))
}

/// The rate limit of the rule that allowed a tool (429, `-32000`).
fn limit<H: Host>(
    h: &mut H,
    m: &McpEndpoint,
    call: &McpCall,
    rule: Option<usize>,
) -> Result<(), RpcError> {
    let Some(i) = rule else {
        return Ok(());
    };
    let Some(rl) = m.policy.rules.get(i).and_then(|r| r.rate_limit.as_ref()) else {
        return Ok(());
    };
    let key = call.limit_keys.get(i).cloned().flatten();
    match ratelimit::check(h, rl, key.as_deref()) {
        None => Ok(()),
        Some(r) => Err(limited(&r)),
    }
}

fn limited(r: &Refusal) -> RpcError {
    let e = RpcError::new(rpc::RATE_LIMITED, r.message.clone()).status(r.status);
    match r.retry_after {
        Some(s) => e.data(json!({"retry_after": s})),
        None => e,
    }
}

/// The arguments as the tool gets them: the exfiltration guard's secrets redacted (or the
/// call refused: a secret in the arguments leaves through the tool), then PII masked
/// (`security/pii`): placeholders go to the tool, the values come back in its result;
/// `block` refuses the call.
fn masked(
    ep: &Endpoint,
    args: Map<String, Value>,
    masking: &mut Masking,
) -> Result<Map<String, Value>, RpcError> {
    let mut v = Value::Object(args);
    if let Some(ex) = &ep.security.exfil {
        ex.scan_value(&mut v).map_err(|b| {
            let msg = format!(
                "the arguments contain sensitive data the gateway does not pass on ({})",
                b.0.join(", ")
            );
            RpcError::new(rpc::INVALID_PARAMS, msg)
        })?;
    }
    let Some(pii) = &ep.security.pii else {
        return Ok(into_map(v));
    };
    let found = mask_value(pii, masking, &mut v);
    if !found.is_empty() || (pii.action == PiiAction::Block && !masking.pairs.is_empty()) {
        let msg = format!(
            "the arguments contain personal data the gateway does not pass on ({})",
            found.join(", ")
        );
        return Err(RpcError::new(rpc::INVALID_PARAMS, msg));
    }
    Ok(into_map(v))
}

/// Masks every string of a JSON value; the kinds found when `block` refuses it.
fn mask_value(pii: &Pii, masking: &mut Masking, v: &mut Value) -> Vec<String> {
    each_string(v, &mut |s| masking.reserve(s));
    let mut found: Vec<String> = Vec::new();
    each_string(v, &mut |s| match masking.apply(pii, s) {
        Ok(Some(new)) => *s = new,
        Ok(None) => {}
        Err(kinds) => found.extend(kinds),
    });
    found.sort();
    found.dedup();
    found
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// A server tool's call: allowed, limited, arguments checked and masked, then its
/// workflow backend's callout.
fn server_call<H: Host>(
    h: &mut H,
    ep: &Endpoint,
    m: &McpEndpoint,
    s: &Server,
    call: &McpCall,
    params: &Map<String, Value>,
    x: &mut Exchange,
) -> Result<(), RpcError> {
    let name = tool_name(params)?;
    let (i, tool) = s
        .tools
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == name)
        .ok_or_else(|| unknown_tool(name))?;
    let rule = allowed(m, call, name)?;
    limit(h, m, call, rule)?;
    let args = server::arguments(params)?;
    let req = server::tool_request(tool, &args)?;
    let args = masked(ep, args, &mut x.masking)?;
    let body = req
        .body
        .as_ref()
        .map(|_| Value::Object(args).to_string().into_bytes());
    x.metered = Some(Metered {
        server: s.info.name.clone(),
        tool: tool.name.clone(),
        start_ms: h.now_millis(),
    });
    x.steps
        .push_back(Step::Workflow(i, server::ToolRequest { body, ..req }));
    Ok(())
}

/// A federated tool's call: its upstream by name, allowed, limited, arguments masked, then
/// the upstream's `tools/call` under its own name.
fn federated_call<H: Host>(
    h: &mut H,
    ep: &Endpoint,
    m: &McpEndpoint,
    f: &Federation,
    call: &McpCall,
    params: &Map<String, Value>,
    x: &mut Exchange,
) -> Result<(), RpcError> {
    let name = tool_name(params)?;
    let names: Vec<&str> = ep
        .backends
        .iter()
        .map(|b| b.mcp_upstream.as_deref().unwrap_or_default())
        .collect();
    let (b, own) = mcp::split(name, &f.separator, &names).ok_or_else(|| unknown_tool(name))?;
    let rule = allowed(m, call, name)?;
    limit(h, m, call, rule)?;
    let args = masked(ep, server::arguments(params)?, &mut x.masking)?;
    let mut up = params.clone();
    up.insert("name".into(), json!(own));
    up.insert("arguments".into(), Value::Object(args));
    x.metered = Some(Metered {
        server: names.get(b).copied().unwrap_or_default().to_string(),
        tool: observe::tool_label(h, name),
        start_ms: h.now_millis(),
    });
    x.steps
        .extend(first_step(&*h, ep, b, Step::Call(b, Value::Object(up))));
    Ok(())
}

/// Counts a refused tool call (denied, limited, invalid).
fn count_refusal<H: Host>(
    h: &mut H,
    m: &McpEndpoint,
    call: &McpCall,
    method: &str,
    params: &Map<String, Value>,
    e: &RpcError,
) {
    if method != "tools/call" {
        return;
    }
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let status = match e.code {
        rpc::RATE_LIMITED => "limited",
        _ if e.message.starts_with("Unknown tool") => "denied",
        _ => "invalid",
    };
    let known = match &m.kind {
        Kind::Server(s) => s.tools.iter().any(|t| t.name == name),
        Kind::Federation(_) => m.policy.access(name, &call.caller()) != Access::Denied,
    };
    let tool = if known {
        observe::tool_label(h, name)
    } else {
        observe::OTHER.to_string()
    };
    let server = m.info().name.clone();
    let labels = [
        ("server", server.as_str()),
        ("tool", tool.as_str()),
        ("status", status),
    ];
    h.counter_add(&observe::name(observe::MCP_TOOL_CALLS, &labels), 1);
}

/// Counts a tool call the gateway passed on, and its latency.
fn meter<H: Host>(h: &mut H, m: &Metered, answer: &Answer) {
    let is_error = answer
        .message
        .as_ref()
        .is_some_and(|v| v.get("error").is_some() || v["result"]["isError"] == json!(true));
    let status = if is_error { "error" } else { "ok" };
    let labels = [("server", m.server.as_str()), ("tool", m.tool.as_str())];
    let ms = h.now_millis().saturating_sub(m.start_ms);
    h.histogram_record(&observe::name(observe::MCP_TOOL_DURATION, &labels), ms);
    let labels = [labels[0], labels[1], ("status", status)];
    h.counter_add(&observe::name(observe::MCP_TOOL_CALLS, &labels), 1);
}

/// Shared-data key of the gateway's session with upstream backend `b` of an endpoint.
fn upstream_key(ep: &Endpoint, b: &Backend) -> String {
    format!(
        "tollgate:mcp:upstream:{}:{}:{}",
        ep.method,
        ep.pattern.as_str(),
        b.cluster
    )
}

/// The gateway's session with an upstream: (session id, protocol version); the id is
/// empty for a stateless upstream. None: not initialized yet.
fn upstream_session<H: Host>(h: &H, ep: &Endpoint, b: usize) -> Option<(String, String)> {
    let be = ep.backends.get(b)?;
    let v = h.shared_get(&upstream_key(ep, be)).0?;
    let text = String::from_utf8(v).ok()?;
    let (sid, version) = text.split_once('\n')?;
    Some((sid.to_string(), version.to_string()))
}

/// `step`, preceded by the upstream's initialization when the gateway has no session yet.
fn first_step<H: Host>(h: &H, ep: &Endpoint, b: usize, step: Step) -> Vec<Step> {
    match upstream_session(h, ep, b) {
        Some(_) => vec![step],
        None => vec![Step::Init(b), step],
    }
}

fn step_backend(step: &Step) -> usize {
    match step {
        Step::Init(b) | Step::Initialized(b) | Step::List(b, ..) | Step::Call(b, _) => *b,
        Step::Workflow(..) => usize::MAX,
    }
}

/// A step's callout: the upstream's JSON-RPC message, or the workflow's request.
fn callout<H: Host>(
    h: &H,
    ep: &Endpoint,
    step: &Step,
    client: &[(String, String)],
) -> Option<upstream::Callout> {
    let timeout_ms = ep.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if let Step::Workflow(i, req) = step {
        let Some(Kind::Server(s)) = ep.mcp.as_ref().map(|m| &m.kind) else {
            return None;
        };
        return s
            .tools
            .get(*i)
            .map(|t| workflow_callout(t, req, client, timeout_ms));
    }
    let b = step_backend(step);
    let (msg, id) = match step {
        Step::Init(_) => (
            json!({"method": "initialize", "params": {
            "protocolVersion": server::VERSIONS[0], "capabilities": {},
            "clientInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")}}}),
            Some("tollgate-init"),
        ),
        Step::Initialized(_) => (json!({"method": "notifications/initialized"}), None),
        Step::List(_, cursor, _) => (
            json!({"method": "tools/list", "params": cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}))}),
            Some("tollgate-list"),
        ),
        Step::Call(_, params) => (
            json!({"method": "tools/call", "params": params}),
            Some("tollgate-call"),
        ),
        Step::Workflow(..) => return None,
    };
    let mut msg = msg;
    if let Some(o) = msg.as_object_mut() {
        o.insert("jsonrpc".into(), json!("2.0"));
        if let Some(id) = id {
            o.insert("id".into(), json!(id));
        }
    }
    let be = ep.backends.get(b)?;
    let mut headers = vec![(
        "accept".to_string(),
        "application/json, text/event-stream".to_string(),
    )];
    if let Some((sid, version)) =
        upstream_session(h, ep, b).filter(|_| !matches!(step, Step::Init(_)))
    {
        if !sid.is_empty() {
            headers.push((session::HEADER.to_string(), sid));
        }
        headers.push(("mcp-protocol-version".to_string(), version));
    }
    let path = be.url_pattern.render(&Vec::new()).ok()?;
    let out = Outgoing {
        path,
        body: msg.to_string().into_bytes(),
        headers,
    };
    let mut c = upstream::callout(ep, b, out, client)?;
    c.timeout_ms = timeout_ms;
    Some(c)
}

/// A workflow backend's request: the tool's `input_headers` of the client's headers, the
/// backend's request modifiers (its credentials).
fn workflow_callout(
    t: &Tool,
    req: &server::ToolRequest,
    client: &[(String, String)],
    timeout_ms: u64,
) -> upstream::Callout {
    let wf = &t.workflow;
    let authority = wf.hosts.first().map(|h| h.authority()).unwrap_or_default();
    let mut headers: Vec<(String, String)> = client
        .iter()
        .filter(|(k, _)| t.input_headers.contains(k))
        .cloned()
        .collect();
    headers.set(":method", Some(&req.method));
    headers.set(":path", Some(&req.path));
    headers.set(":authority", Some(&authority));
    headers.set("accept", Some("application/json"));
    if let Some(body) = &req.body {
        headers.set("content-type", Some("application/json"));
        headers.set("content-length", Some(&body.len().to_string()));
    }
    upstream::apply(&mut headers, &wf.modifiers.request);
    upstream::Callout {
        cluster: wf.cluster.clone(),
        headers,
        body: req.body.clone().unwrap_or_default(),
        timeout_ms,
    }
}

/// A step that failed (no answer, or a 4xx/5xx): an upstream that lost the gateway's
/// session is initialized again once; a list goes on without that upstream; a call gets
/// its error.
fn fail(x: &mut Exchange, step: &Step, status: Option<u16>, body: &[u8], ep: &Endpoint) {
    let b = step_backend(step);
    let name = ep
        .backends
        .get(b)
        .and_then(|be| be.mcp_upstream.clone())
        .unwrap_or_default();
    match step {
        Step::Init(_) | Step::Initialized(_) => {
            // The step that needed the session fails in turn.
            if let Some(Step::Call(..)) = x.steps.front() {
                x.steps.clear();
                x.answer = Some(upstream_failed(x, &name, status));
            } else if let Some(Step::List(..)) = x.steps.front() {
                x.steps.pop_front();
            }
        }
        Step::List(..) | Step::Call(..) if status == Some(404) && !x.retried => {
            x.retried = true;
            x.steps.push_front(step.clone());
            x.steps.push_front(Step::Init(b));
        }
        Step::List(..) => {}
        Step::Call(..) => x.answer = Some(upstream_failed(x, &name, status)),
        Step::Workflow(i, _) => {
            let Some(Kind::Server(s)) = ep.mcp.as_ref().map(|m| &m.kind) else {
                return;
            };
            if let Some(t) = s.tools.get(*i) {
                x.answer = Some(tool_answer(x, ep, t, status, None, body));
            }
        }
    }
}

/// -32603: an upstream MCP server did not answer (or answered an HTTP error).
fn upstream_failed(x: &Exchange, name: &str, status: Option<u16>) -> Answer {
    let why = match status {
        Some(s) => format!("answered HTTP {s}"),
        None => "did not answer (connection failure, reset or timeout)".to_string(),
    };
    let e = RpcError::new(
        rpc::INTERNAL_ERROR,
        format!("the upstream MCP server {name} {why}"),
    );
    Answer::err(&x.id, &e, x.sse)
}

/// A step that succeeded.
fn done<H: Host>(
    h: &mut H,
    ep: &Endpoint,
    x: &mut Exchange,
    step: Step,
    headers: &[(String, String)],
    body: &[u8],
) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let content_type = header("content-type");
    let msgs = || rpc::read_answer(content_type.as_deref(), body);
    match step {
        Step::Init(b) => {
            let result = rpc::response_to(msgs(), &json!("tollgate-init")).and_then(Result::ok);
            let version = result
                .as_ref()
                .and_then(|r| r["protocolVersion"].as_str())
                .unwrap_or(server::VERSIONS[0])
                .to_string();
            let sid = header(session::HEADER).unwrap_or_default();
            if let Some(be) = ep.backends.get(b) {
                let _ = h.shared_set(
                    &upstream_key(ep, be),
                    format!("{sid}\n{version}").as_bytes(),
                    None,
                );
            }
            x.steps.push_front(Step::Initialized(b));
        }
        Step::Initialized(_) => {}
        Step::List(b, _, page) => {
            let Some(Ok(result)) = rpc::response_to(msgs(), &json!("tollgate-list")) else {
                return;
            };
            let (Some(Kind::Federation(f)), Some(name)) = (
                ep.mcp.as_ref().map(|m| &m.kind),
                ep.backends.get(b).and_then(|be| be.mcp_upstream.as_deref()),
            ) else {
                return;
            };
            x.tools.extend(mcp::namespaced(name, &f.separator, &result));
            if let (Some(cursor), true) = (result["nextCursor"].as_str(), page + 1 < MAX_PAGES) {
                x.steps
                    .push_front(Step::List(b, Some(cursor.to_string()), page + 1));
            }
        }
        Step::Call(b, _) => {
            let name = ep
                .backends
                .get(b)
                .and_then(|be| be.mcp_upstream.clone())
                .unwrap_or_default();
            x.answer = Some(match rpc::response_to(msgs(), &json!("tollgate-call")) {
                Some(Ok(result)) => secured(x, ep, result),
                Some(Err(error)) => Answer::relayed_error(&x.id, error, x.sse),
                None => upstream_failed(x, &name, None),
            });
        }
        Step::Workflow(i, _) => {
            let Some(Kind::Server(s)) = ep.mcp.as_ref().map(|m| &m.kind) else {
                return;
            };
            if let Some(t) = s.tools.get(i) {
                x.answer = Some(tool_answer(
                    x,
                    ep,
                    t,
                    Some(200),
                    content_type.as_deref(),
                    body,
                ));
            }
        }
    }
}

/// A workflow backend's answer as the tool's result.
fn tool_answer(
    x: &Exchange,
    ep: &Endpoint,
    t: &Tool,
    status: Option<u16>,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    match server::tool_result(t, status, content_type, body) {
        Ok(result) => secured(x, ep, result),
        Err(e) => Answer::err(&x.id, &e, x.sse),
    }
}

/// A tool's result for the client: the exfiltration guard (redact, or stop the result),
/// PII the tool gave (not the caller's own) masked as in arguments (`block` stops the
/// result), then the placeholders of the caller's arguments put back.
fn secured(x: &Exchange, ep: &Endpoint, mut result: Value) -> Answer {
    let stopped = |msg: String| Answer::err(&x.id, &RpcError::new(rpc::INTERNAL_ERROR, msg), x.sse);
    if let Some(ex) = &ep.security.exfil {
        if let Err(b) = ex.scan_value(&mut result) {
            return stopped(b.message());
        }
    }
    let Some(pii) = &ep.security.pii else {
        return Answer::ok(&x.id, result, x.sse);
    };
    // A copy: the result's own values get placeholders of their own, never restored.
    let found = mask_value(pii, &mut x.masking.clone(), &mut result);
    if !found.is_empty() {
        return stopped(format!(
            "the result was stopped by the gateway: it contained personal data ({})",
            found.join(", ")
        ));
    }
    if pii.restore && !x.masking.pairs.is_empty() {
        each_string(&mut result, &mut |s| *s = x.masking.restore(s));
    }
    Answer::ok(&x.id, result, x.sse)
}

/// A federation's `tools/list` answer: the upstreams' tools the caller may see.
fn listing(m: &McpEndpoint, caller: &Caller<'_>, x: &mut Exchange) -> Answer {
    let mut tools = std::mem::take(&mut x.tools);
    tools.retain(|t| {
        t["name"]
            .as_str()
            .is_some_and(|n| m.policy.access(n, caller) != Access::Denied)
    });
    Answer::ok(&x.id, json!({"tools": tools}), x.sse)
}

/// Writes an MCP answer: status, content type, the new session, `Retry-After`, an error's
/// [`ERROR_HEADER`]; the body without the gateway's secrets.
pub fn write<H: Host + ?Sized>(h: &mut H, a: &Answer, secrets: &Secrets) {
    let (content_type, body) = a.body();
    let body = secrets.scrub(&body, Mask::Redacted).unwrap_or(body);
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", content_type),
        ("cache-control", "no-cache"),
    ];
    headers.extend(a.headers.iter().map(|(k, v)| (*k, v.as_str())));
    if a.status >= 400 {
        // The gateway's own error, already shaped: the bootstrap's local-reply mappers
        // leave it alone.
        headers.push((ERROR_HEADER, "1"));
    }
    h.send_reply(u32::from(a.status), &headers, &body);
}

/// A refusal of the shared stages (authentication, rate limits, budgets, body checks) on an
/// MCP endpoint, as a JSON-RPC error with the refusal's status and headers.
pub fn refusal_answer(r: &Refusal) -> Answer {
    let code = match r.status {
        429 => rpc::RATE_LIMITED,
        s if s >= 500 => rpc::INTERNAL_ERROR,
        _ => rpc::INVALID_REQUEST,
    };
    let mut a = Answer::err(
        &Value::Null,
        &RpcError::new(code, r.message.clone()).status(r.status),
        false,
    );
    a.headers = r.extra_headers();
    a
}
