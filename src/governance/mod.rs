//! Governance of an endpoint: rate limits (`qos/ratelimit/router`), request size
//! (`proxy.max_payload`), request validation (`validation/json-schema`), response validation
//! of structured LLM output (`validation/response-json-schema`), prompt templates
//! (`ai/prompt-template`) and decorators (`ai/prompt-decorator`).
//!
//! The filter calls in at fixed points: [`on_request_headers`] (fast refusals before the body
//! is read), [`on_request_body`] (size, schema, template on the whole body), [`decorate`]
//! (on the canonical LLM request) and [`CallHooks`] (on the LLM answer: where its tokens are
//! charged, and response validation). Everything here is plain Rust over [`Host`].

pub mod ratelimit;
pub mod routing;
pub mod template;
pub mod validate;

use crate::config::reader::{ConfigError, Obj, Result};
use crate::filter::errors::GatewayError;
use crate::host::Host;
use crate::providers::model::{ChatRequest, ChatResponse, Part};
use crate::providers::FrontDoor;
use crate::routing::Params;
use ratelimit::{RateLimit, TokenCharge};
use serde_json::Value;
use std::rc::Rc;
use template::{Decorator, Template};
use validate::Schema;

/// Requests refused by a rate limit (429 or 503).
pub const METRIC_RATE_LIMITED: &str = "tollgate_rate_limited_total";
/// Failover attempts (every attempt after a request's first).
pub const METRIC_FAILOVER: &str = "tollgate_failover_attempts_total";
/// Circuit breakers opening (closed or half-open → open).
pub const METRIC_BREAKER_OPENED: &str = "tollgate_circuit_breaker_opened_total";

/// The governance settings of one endpoint (all optional).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    pub rate_limit: Option<RateLimit>,
    /// `proxy.max_payload`: largest request body in bytes (413 above).
    pub max_payload: Option<u64>,
    pub request_schema: Option<Schema>,
    pub response_schema: Option<Rc<ResponseSchema>>,
    pub template: Option<Template>,
    pub decorator: Option<Decorator>,
    /// `ai/routing`: weights and failover among the backends.
    pub routing: routing::Routing,
}

/// A compiled `validation/response-json-schema`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseSchema {
    pub schema: Schema,
    /// `error.status` (tollgate's default: 502, the provider's answer is unusable).
    pub status: u16,
    /// `error.body`: a fixed message instead of the validation error.
    pub message: Option<String>,
}

/// Reads the governance namespaces of an endpoint's `extra_config`.
/// The shared-data name of an endpoint: its method and path, so that its rate-limit buckets
/// and circuit breakers stay its own when a configuration is replaced live (`tollgate
/// apply`) with endpoints added, removed or reordered (an endpoint's position would hand
/// them to another endpoint; method and path are unique per configuration).
pub fn shared_id(method: &str, pattern: &str) -> String {
    format!(
        "{:016x}",
        crate::cost::store::fnv1a(format!("{method} {pattern}").as_bytes())
    )
}

/// Reads an endpoint's governance namespaces; `id` is its [`shared_id`].
pub fn compile(extra: &mut Obj<'_>, id: &str, warnings: &mut Vec<String>) -> Result<Policy> {
    let mut p = Policy::default();
    if let Some(v) = extra.get("qos/ratelimit/router") {
        p.rate_limit = Some(ratelimit::compile(
            v,
            &extra.at("qos/ratelimit/router"),
            id,
        )?);
    }
    if let Some(mut proxy) = extra.opt_obj("proxy")? {
        p.max_payload = proxy.opt_u64("max_payload")?.filter(|n| *n > 0);
        for (key, _) in proxy.unread() {
            warnings.push(format!(
                "{}: not supported by tollgate; ignored",
                proxy.at(key)
            ));
        }
    }
    if let Some(v) = extra.get("validation/json-schema") {
        p.request_schema = Some(validate::compile(v, &extra.at("validation/json-schema"))?);
    }
    if let Some(v) = extra.get("validation/response-json-schema") {
        p.response_schema = Some(Rc::new(response_schema(
            v,
            &extra.at("validation/response-json-schema"),
        )?));
    }
    if let Some(v) = extra.get("ai/prompt-template") {
        p.template = Some(template::compile(v, &extra.at("ai/prompt-template"))?);
    }
    if let Some(v) = extra.get("ai/routing") {
        p.routing = routing::compile_endpoint(v, &extra.at("ai/routing"))?;
    }
    if let Some(v) = extra.get("ai/prompt-decorator") {
        p.decorator = Some(template::compile_decorator(
            v,
            &extra.at("ai/prompt-decorator"),
        )?);
    }
    Ok(p)
}

/// Settings that only mean something on `ai/llm` endpoints.
pub fn check_llm_only(p: &Policy, is_llm: bool, extra_path: &str) -> Result<()> {
    if is_llm {
        return Ok(());
    }
    let named = [
        (
            "validation/response-json-schema",
            p.response_schema.is_some(),
        ),
        ("ai/prompt-decorator", p.decorator.is_some()),
    ];
    for (ns, set) in named {
        if set {
            return Err(ConfigError::new(
                format!("{extra_path}.{ns}"),
                "only applies to endpoints with ai/llm backends",
            ));
        }
    }
    if p.rate_limit.as_ref().is_some_and(|r| r.tokens.is_some()) {
        return Err(ConfigError::new(
            format!("{extra_path}.qos/ratelimit/router.client_max_tokens"),
            "only applies to endpoints with ai/llm backends",
        ));
    }
    Ok(())
}

fn response_schema(v: &Value, path: &str) -> Result<ResponseSchema> {
    let mut o = Obj::new(v, path)?;
    let schema = validate::compile(o.required("schema")?, &o.at("schema"))?;
    let (mut status, mut message) = (502, None);
    if let Some(mut e) = o.opt_obj("error")? {
        if let Some(s) = e.opt_u64("status")? {
            if !(400..600).contains(&s) {
                return Err(ConfigError::new(
                    e.at("status"),
                    "must be an HTTP error status (400-599)",
                ));
            }
            status = s as u16;
        }
        message = e
            .opt_str("body")?
            .filter(|b| !b.is_empty())
            .map(String::from);
        e.finish(&["content_type"])?;
    }
    o.finish(&[])?;
    Ok(ResponseSchema {
        schema,
        status,
        message,
    })
}

/// Creates the shared-data keys of every rate limit and circuit breaker (from
/// `Root::on_configure`).
pub fn init_shared<H: Host + ?Sized>(h: &mut H, endpoints: &[crate::config::Endpoint]) {
    for ep in endpoints {
        if let Some(rl) = &ep.governance.rate_limit {
            ratelimit::init_shared(h, rl);
        }
        routing::init_breakers(h, ep);
    }
}

/// A refusal the gateway answers itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub status: u32,
    /// OpenAI error `type`.
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
}

impl Denial {
    fn new(status: u32, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            message,
            param: None,
            retry_after: None,
        }
    }

    /// 429 (client limit) or 503 (endpoint limit), code `rate_limit_exceeded`.
    pub fn rate_limited(status: u32, kind: &'static str, message: &str, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(status, kind, "rate_limit_exceeded", message.to_string())
        }
    }

    fn too_large(limit: u64) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("the request body is larger than this endpoint accepts ({limit} bytes)"),
        )
    }

    fn invalid(message: String, param: Option<String>) -> Self {
        Self {
            param,
            ..Self::new(400, "invalid_request_error", "invalid_request", message)
        }
    }
}

/// Answers the client with a denial, in its front door's shape.
pub fn reply<H: Host + ?Sized>(h: &mut H, front: FrontDoor, d: &Denial) {
    let retry = d.retry_after.map(|s| s.to_string());
    let mut extra = Vec::new();
    if let Some(r) = &retry {
        extra.push(("retry-after", r.as_str()));
    }
    let e = GatewayError {
        status: d.status,
        kind: d.kind,
        code: d.code,
        message: &d.message,
        param: d.param.as_deref(),
    };
    crate::filter::errors::reply_error(h, front, e, &extra);
}

/// Per-stream governance state.
#[derive(Debug, Default)]
pub struct State {
    /// Where to charge the LLM tokens of this request.
    pub charge: Option<TokenCharge>,
    /// The endpoint params (templates read them).
    params: Params,
    /// Header values templates read, captured before the filter changes headers.
    headers: Vec<(String, String)>,
}

/// Request headers: payload size by `content-length`, then rate limits.
pub fn on_request_headers<H: Host + ?Sized>(
    h: &mut H,
    p: &Policy,
    params: &Params,
    state: &mut State,
) -> Option<Denial> {
    if let Some(max) = p.max_payload {
        let len = h
            .request_header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        if len.is_some_and(|n| n > max) {
            return Some(Denial::too_large(max));
        }
    }
    if let Some(rl) = &p.rate_limit {
        let client = rl.client_key(h, params);
        if let Some(d) = ratelimit::check(h, rl, client.as_deref()) {
            h.counter_add(METRIC_RATE_LIMITED, 1);
            return Some(d);
        }
        state.charge = TokenCharge::new(rl, client.as_deref());
    }
    if let Some(t) = &p.template {
        state.params = params.clone();
        state.headers = t
            .header_names()
            .filter_map(|n| h.request_header(n).map(|v| (n.to_string(), v)))
            .collect();
    }
    None
}

impl Policy {
    /// Whether the whole request body must be read (validation, template or size limit).
    pub fn needs_body(&self) -> bool {
        self.request_schema.is_some() || self.template.is_some() || self.max_payload.is_some()
    }
}

/// The whole request body: size, schema, then template. Returns the new body when the
/// template rewrote it.
pub fn on_request_body(
    p: &Policy,
    state: &State,
    body: &[u8],
) -> std::result::Result<Option<Vec<u8>>, Denial> {
    if let Some(max) = p.max_payload {
        if body.len() as u64 > max {
            return Err(Denial::too_large(max));
        }
    }
    if p.request_schema.is_none() && p.template.is_none() {
        return Ok(None);
    }
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| Denial::invalid(format!("the request body is not valid JSON: {e}"), None))?;
    if let Some(s) = &p.request_schema {
        s.validate(&doc).map_err(|e| {
            Denial::invalid(
                format!("the request body does not match the endpoint's schema: {e}"),
                Some(e.path.clone()),
            )
        })?;
    }
    let Some(t) = &p.template else {
        return Ok(None);
    };
    let header = |n: &str| {
        state
            .headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let inputs = template::Inputs {
        body: &doc,
        header: &header,
        params: &state.params,
    };
    t.render(&inputs)
        .map(Some)
        .map_err(|m| Denial::invalid(m, None))
}

/// Adds the endpoint's decorator messages to a canonical LLM request.
pub fn decorate(p: &Policy, req: &mut ChatRequest) {
    if let Some(d) = &p.decorator {
        d.apply(req);
    }
}

/// What an LLM call does with its answer for governance.
#[derive(Debug, Default)]
pub struct CallHooks {
    /// Where the call's tokens are charged (by the call's accounting, from its one usage
    /// record, however the call ends).
    pub charge: Option<TokenCharge>,
    pub response_schema: Option<Rc<ResponseSchema>>,
}

impl CallHooks {
    pub fn new(p: &Policy, state: &State) -> Self {
        Self {
            charge: state.charge.clone(),
            response_schema: p.response_schema.clone(),
        }
    }

    /// Validates the assistant message of a non-streaming answer (parsed as JSON) against
    /// `validation/response-json-schema`.
    pub fn check_response(&self, resp: &ChatResponse) -> std::result::Result<(), Denial> {
        let Some(rs) = &self.response_schema else {
            return Ok(());
        };
        let fail = |detail: String| {
            let message = rs.message.clone().unwrap_or_else(|| {
                format!(
                    "the model's answer does not match the endpoint's response schema: {detail}"
                )
            });
            Denial::new(
                u32::from(rs.status),
                "server_error",
                "invalid_response",
                message,
            )
        };
        let text: String = resp
            .choices
            .first()
            .map(|c| {
                c.message
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let doc: Value = serde_json::from_str(text.trim())
            .map_err(|e| fail(format!("the assistant message is not JSON ({e})")))?;
        rs.schema.validate(&doc).map_err(|e| fail(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
