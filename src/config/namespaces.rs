//! The KrakenD namespaces tollgate reads, level by level: each row names a namespace and
//! calls the domain function that compiles it, storing the result where the request path
//! finds it. A key of an `extra_config` that is in no row (and is not a `@ $ _ #` meta key)
//! is accepted and listed once as ignored. Rows run in order: a row may use what an
//! earlier one compiled (a quota names a processor).
//!
//! Adding a namespace: its compiler in its domain (`fn(&Value, path) -> Result<T>` over
//! [`super::reader`], every error a JSON path), a field for `T` in the parts of its level,
//! and a row here.

use super::reader::{Obj, Result};
use crate::cost::{self, CostConfig, QuotaAttach};
use crate::governance::{self, routing, template, validate, Policy};
use crate::providers::backend::{self, LlmBackend};
use crate::routing::martian::{self, Modifiers};
use crate::security::config::{self as security, EndpointSecurity, ServiceSecurity};
use serde_json::Value;
use std::rc::Rc;

/// What the service level's namespaces compile into.
#[derive(Debug, Default)]
pub struct ServiceParts {
    pub cost: CostConfig,
    /// Service-level `governance/quota`: endpoints without their own use it.
    pub default_quota: Option<QuotaAttach>,
    pub security: ServiceSecurity,
    /// Service `qos/ratelimit/tiered`: every endpoint applies it (its buckets shared).
    pub tiered: Option<Rc<governance::tiered::Tiered>>,
    /// Service `router.max_payload`: endpoints without their own `proxy.max_payload` use it.
    pub max_payload: Option<u64>,
    /// Settings accepted but ignored inside a namespace.
    pub warnings: Vec<String>,
}

/// What an endpoint's namespaces compile into.
#[derive(Debug, Default)]
pub struct EndpointParts {
    pub quota: Option<QuotaAttach>,
    pub governance: Policy,
    pub security: EndpointSecurity,
    /// Settings accepted but ignored inside a namespace.
    pub warnings: Vec<String>,
}

/// What a backend's namespaces compile into.
#[derive(Debug, Default)]
pub struct BackendParts {
    pub rules: routing::BackendRules,
    pub modifiers: Modifiers,
    pub llm: Option<LlmBackend>,
}

/// What a compiler may read besides its namespace's value.
pub struct Context<'a> {
    /// Resolves `{{ env "X" }}`.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// The service level, once compiled (endpoint rows).
    pub service: &'a ServiceParts,
    /// The endpoint's shared-data name (`governance::shared_id`: rate-limit keys).
    pub id: &'a str,
    /// The endpoint's path ends in `/messages` (Anthropic clients).
    pub is_messages: bool,
    /// The backend's first host (Bedrock's region).
    pub host: &'a str,
}

/// A row: the namespace and what compiles it into the parts `P`.
pub type Row<P> = (
    &'static str,
    fn(&Value, &str, &mut P, &Context<'_>) -> Result<()>,
);

/// Service level (the root `extra_config`).
pub const SERVICE: &[Row<ServiceParts>] = &[
    ("governance/processors", |v, at, p, _| {
        p.cost.quotas = cost::processors(v, at)?;
        Ok(())
    }),
    ("governance/quota", |v, at, p, _| {
        p.default_quota = Some(cost::attach(v, at, &p.cost.quotas)?);
        Ok(())
    }),
    ("ai/usage", |v, at, p, _| {
        p.cost.usage = cost::usage_config(v, at)?;
        Ok(())
    }),
    ("auth/api-keys", |v, at, p, cx| {
        p.security.api_keys = Some(Rc::new(security::api_keys(v, at, cx.lookup)?));
        Ok(())
    }),
    ("ai/prompt-guard", |v, at, p, _| {
        p.security.guards = security::guards(v, at)?;
        Ok(())
    }),
    ("qos/ratelimit/tiered", |v, at, p, _| {
        let id = "service";
        p.tiered = Some(Rc::new(governance::tiered::compile(v, at, id)?));
        Ok(())
    }),
    ("router", |v, at, p, _| {
        p.max_payload = governance::router(v, at, &mut p.warnings)?;
        Ok(())
    }),
];

/// Endpoint level.
pub const ENDPOINT: &[Row<EndpointParts>] = &[
    ("governance/quota", |v, at, p, cx| {
        p.quota = Some(cost::attach(v, at, &cx.service.cost.quotas)?);
        Ok(())
    }),
    ("qos/ratelimit/router", |v, at, p, cx| {
        p.governance.rate_limit = governance::ratelimit::compile_router(v, at, cx.id)?;
        Ok(())
    }),
    ("qos/ratelimit/tiered", |v, at, p, cx| {
        let tiered = governance::tiered::compile(v, at, cx.id)?;
        p.governance.tiered.push(Rc::new(tiered));
        Ok(())
    }),
    ("proxy", |v, at, p, _| {
        p.governance.max_payload = governance::max_payload(v, at, &mut p.warnings)?;
        Ok(())
    }),
    ("validation/json-schema", |v, at, p, _| {
        p.governance.request_schema = Some(validate::compile(v, at)?);
        Ok(())
    }),
    ("validation/response-json-schema", |v, at, p, _| {
        let schema = governance::response_schema(v, at)?;
        p.governance.response_schema = Some(Rc::new(schema));
        Ok(())
    }),
    ("ai/prompt-template", |v, at, p, _| {
        p.governance.template = Some(template::compile(v, at)?);
        Ok(())
    }),
    ("ai/routing", |v, at, p, _| {
        p.governance.routing = routing::compile_endpoint(v, at)?;
        Ok(())
    }),
    ("ai/prompt-decorator", |v, at, p, _| {
        p.governance.decorator = Some(template::compile_decorator(v, at)?);
        Ok(())
    }),
    ("auth/api-keys", |v, at, p, cx| {
        let rule = security::key_rule(v, at, &cx.service.security, cx.is_messages)?;
        p.security.api_keys = Some(rule);
        Ok(())
    }),
    ("auth/validator", |v, at, p, _| {
        p.security.jwt = Some(security::validator(v, at)?);
        Ok(())
    }),
    ("security/pii", |v, at, p, _| {
        p.security.pii = Some(Rc::new(security::pii(v, at)?));
        Ok(())
    }),
    ("security/exfiltration", |v, at, p, _| {
        p.security.exfil = Some(Rc::new(security::exfil(v, at)?));
        Ok(())
    }),
    ("ai/prompt-guard", |v, at, p, cx| {
        let guard = security::guard(v, at, &cx.service.security)?;
        p.security.guard = Some(Rc::new(guard));
        Ok(())
    }),
];

/// Backend level.
pub const BACKEND: &[Row<BackendParts>] = &[
    ("backend/conditional", |v, at, p, _| {
        p.rules.conditional = Some(routing::conditional(v, at)?);
        Ok(())
    }),
    ("qos/circuit-breaker", |v, at, p, _| {
        p.rules.breaker = Some(routing::breaker(v, at)?);
        Ok(())
    }),
    ("modifier/martian", |v, at, p, cx| {
        p.modifiers = martian::compile(v, at, cx.lookup)?;
        Ok(())
    }),
    ("ai/llm", |v, at, p, cx| {
        p.llm = Some(backend::compile(v, at, cx.host, cx.lookup)?);
        Ok(())
    }),
];

/// Compiles every namespace of `rows` present in `extra`, in row order.
pub fn compile<P>(
    extra: &mut Obj<'_>,
    rows: &[Row<P>],
    parts: &mut P,
    cx: &Context<'_>,
) -> Result<()> {
    for (name, compile) in rows {
        if let Some(v) = extra.get(name) {
            compile(v, &extra.at(name), parts, cx)?;
        }
    }
    Ok(())
}
