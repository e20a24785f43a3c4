//! Governance of an endpoint: rate limits (`qos/ratelimit/router`, `qos/ratelimit/tiered`),
//! request size (`proxy.max_payload`, service `router.max_payload`), request validation (`validation/json-schema`), response validation
//! of structured LLM output (`validation/response-json-schema`), prompt templates
//! (`ai/prompt-template`) and decorators (`ai/prompt-decorator`).
//!
//! Each namespace has its compiler here or in its submodule; `config::namespaces` lists them.
//! The filter calls in at fixed points: [`on_request_headers`] (fast refusals before the body
//! is read), [`read_body`] (size, schema, template on the whole body, parsed once; an LLM
//! call's front door reads the same document) or [`on_request_body`] on plain endpoints,
//! [`decorate`] (on the canonical LLM request) and [`CallHooks`] (on the LLM answer: where its tokens are
//! charged, and response validation). Everything here is plain Rust over [`Host`].

pub mod ratelimit;
pub mod routing;
pub mod template;
pub mod tiered;
pub mod validate;

use crate::config::reader::{ConfigError, Obj, Result};
use crate::host::Host;
use crate::providers::model::{ChatRequest, ChatResponse, Part};
use crate::refusal::{ErrorKind, Refusal};
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
    /// `qos/ratelimit/tiered`: the service's (shared by every endpoint), then the endpoint's.
    pub tiered: Vec<Rc<tiered::Tiered>>,
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

/// The shared-data name of an endpoint: its method and path, so that its rate-limit buckets
/// and circuit breakers stay its own when a configuration is replaced live (`tollgate
/// apply`) with endpoints added, removed or reordered (an endpoint's position would hand
/// them to another endpoint; method and path are unique per configuration).
pub fn shared_id(method: &str, pattern: &str) -> String {
    format!(
        "{:016x}",
        crate::support::hash::fnv1a64(format!("{method} {pattern}").as_bytes())
    )
}

/// Reads `proxy` (KrakenD EE, endpoint): `max_payload`, the largest request body in bytes
/// (0: none). Its other fields change how KrakenD calls its backends (one after the other,
/// merged, decompressed): refused when set, never skipped.
pub fn max_payload(v: &Value, path: &str, warnings: &mut Vec<String>) -> Result<Option<u64>> {
    let mut proxy = Obj::new(v, path)?;
    let max = proxy.opt_u64("max_payload")?.filter(|n| *n > 0);
    let refused: &[(&str, &str)] = &[
        ("sequential", SEQUENTIAL),
        ("sequential_propagated_params", SEQUENTIAL),
        (
            "flatmap_filter",
            "array manipulation of the answer is not supported by tollgate",
        ),
        (
            "combiner",
            "custom combiners (KrakenD custom builds) are not supported by tollgate",
        ),
        (
            "static",
            "static data merged into the answer is not supported by tollgate",
        ),
        ("decompress_gzip", GZIP),
        ("shadow", "shadow backends are not supported by tollgate"),
    ];
    settings(proxy, &[], refused, warnings)?;
    Ok(max)
}

const SEQUENTIAL: &str =
    "the sequential proxy (chained backend calls) is not supported by tollgate";
const GZIP: &str =
    "decompressing request bodies for the backend is not supported by tollgate (the body would reach it compressed)";

/// Reads the service `router` (KrakenD's router options): `max_payload`, the largest request
/// body in bytes for every endpoint without its own `proxy.max_payload` (0: none). Options of
/// KrakenD's own HTTP router with no effect inside Envoy are listed in one warning line; the
/// ones that change what a client gets or who it is (custom error bodies, the client IP from
/// forwarded headers, decompression) are refused.
pub fn router(v: &Value, path: &str, warnings: &mut Vec<String>) -> Result<Option<u64>> {
    let mut o = Obj::new(v, path)?;
    let max = o.opt_u64("max_payload")?.filter(|n| *n > 0);
    let ignored = &[
        "app_engine",
        "auto_options",
        "disable_access_log",
        "disable_gzip",
        "disable_handle_method_not_allowed",
        "disable_health",
        "disable_path_decoding",
        "disable_redirect_fixed_path",
        "disable_redirect_trailing_slash",
        "health_path",
        "hide_version_header",
        "logger_skip_paths",
        "max_multipart_memory",
        "remove_extra_slash",
        "return_error_msg",
    ];
    let client_ip = "the client IP from forwarded headers is not supported by tollgate (Envoy's xff settings decide it)";
    let refused: &[(&str, &str)] = &[
        ("error_body", "custom 404/405 bodies are not supported by tollgate (its errors are in the client's API shape)"),
        ("forwarded_by_client_ip", client_ip),
        ("trusted_proxies", client_ip),
        ("remote_ip_headers", client_ip),
        ("decompress_gzip", GZIP),
    ];
    settings(o, ignored, refused, warnings)?;
    Ok(max)
}

/// The rest of a settings object: `refused` fields that are set (not false, 0 or empty) are
/// refused with their reason; `ignored` ones are listed in one warning line; anything else
/// is an unknown field.
fn settings(
    mut o: Obj<'_>,
    ignored: &[&str],
    refused: &[(&str, &str)],
    warnings: &mut Vec<String>,
) -> Result<()> {
    for (key, why) in refused {
        if o.get(key).is_some_and(is_set) {
            return Err(ConfigError::new(o.at(key), *why));
        }
    }
    let present: Vec<&str> = ignored
        .iter()
        .copied()
        .filter(|k| o.get(k).is_some())
        .collect();
    if !present.is_empty() {
        warnings.push(format!(
            "{}: {}: KrakenD settings with no effect inside Envoy; ignored",
            o.path(),
            present.join(", ")
        ));
    }
    let tolerated: Vec<&str> = refused.iter().map(|r| r.0).collect();
    o.finish(&tolerated)
}

/// A setting that does something: not null, false, 0, "" or empty.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        Value::Bool(true) => true,
    }
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

/// Reads `validation/response-json-schema` (KrakenD EE, endpoint).
pub fn response_schema(v: &Value, path: &str) -> Result<ResponseSchema> {
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

/// 429 (client limit) or 503 (endpoint limit), code `rate_limit_exceeded`; `kind`: OpenAI's
/// error type for rate limits (`requests` or `tokens`).
pub fn rate_limited(status: u16, kind: &'static str, message: &str, retry_after: u64) -> Refusal {
    Refusal::custom(status, kind, "rate_limit_exceeded", message).retry_after(retry_after)
}

fn too_large(limit: u64) -> Refusal {
    Refusal::custom(
        413,
        "invalid_request_error",
        "request_too_large",
        format!("the request body is larger than this endpoint accepts ({limit} bytes)"),
    )
}

fn invalid(message: String, param: Option<String>) -> Refusal {
    Refusal::new(ErrorKind::InvalidRequest, message).param(param)
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
) -> Option<Refusal> {
    if let Some(max) = p.max_payload {
        let len = h
            .request_header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        if len.is_some_and(|n| n > max) {
            return Some(too_large(max));
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
    for t in &p.tiered {
        if let Some(d) = tiered::check(h, t, params) {
            h.counter_add(METRIC_RATE_LIMITED, 1);
            return Some(d);
        }
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
    /// Every rate limit of the endpoint: its router limit and its tiers' (shared-data keys).
    pub fn rate_limits(&self) -> impl Iterator<Item = &RateLimit> {
        let tiers = self.tiered.iter().flat_map(|t| t.limits());
        self.rate_limit.iter().chain(tiers)
    }

    /// Whether the whole request body must be read (validation, template or size limit).
    pub fn needs_body(&self) -> bool {
        self.request_schema.is_some() || self.template.is_some() || self.max_payload.is_some()
    }
}

/// What governance made of a whole request body.
#[derive(Debug)]
pub enum Body {
    /// Nothing here needed to parse it.
    Unread,
    /// Parsed and valid (a request schema): the document, for the next reader.
    Parsed(Value),
    /// Rewritten by the template: the new body.
    Rendered(Vec<u8>),
}

/// The whole request body: size, then (parsed once) schema, then template.
pub fn read_body(p: &Policy, state: &State, body: &[u8]) -> std::result::Result<Body, Refusal> {
    if let Some(max) = p.max_payload {
        if body.len() as u64 > max {
            return Err(too_large(max));
        }
    }
    if p.request_schema.is_none() && p.template.is_none() {
        return Ok(Body::Unread);
    }
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the request body is not valid JSON: {e}"), None))?;
    if let Some(s) = &p.request_schema {
        s.validate(&doc).map_err(|e| {
            invalid(
                format!("the request body does not match the endpoint's schema: {e}"),
                Some(e.path.clone()),
            )
        })?;
    }
    let Some(t) = &p.template else {
        return Ok(Body::Parsed(doc));
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
        .map(Body::Rendered)
        .map_err(|m| invalid(m, None))
}

/// The whole request body of a plain endpoint: the new body when the template rewrote it.
pub fn on_request_body(
    p: &Policy,
    state: &State,
    body: &[u8],
) -> std::result::Result<Option<Vec<u8>>, Refusal> {
    Ok(match read_body(p, state, body)? {
        Body::Rendered(b) => Some(b),
        Body::Unread | Body::Parsed(_) => None,
    })
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
    pub fn check_response(&self, resp: &ChatResponse) -> std::result::Result<(), Refusal> {
        let Some(rs) = &self.response_schema else {
            return Ok(());
        };
        let fail = |detail: String| {
            let message = rs.message.clone().unwrap_or_else(|| {
                format!(
                    "the model's answer does not match the endpoint's response schema: {detail}"
                )
            });
            Refusal::custom(rs.status, "server_error", "invalid_response", message)
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
