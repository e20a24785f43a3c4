//! Compiling a KrakenD document into a [`Gateway`]: the service level, each endpoint and
//! each backend read their own fields here, and their `extra_config` namespaces through the
//! table of [`namespaces`](super::namespaces), each compiled by its domain.

use super::krakend::{self, Level, Verdict};
use super::namespaces::{self, BackendParts, Context, EndpointParts, ServiceParts};
use super::reader::{self, ConfigError, Obj, Result};
use super::{Backend, Endpoint, Gateway, HeaderOp};
use crate::cost;
use crate::mcp::{Kind, McpEndpoint};
use crate::providers::krakend::StreamShape;
use crate::providers::{EndpointKind, FrontDoor};
use crate::routing::forward::{Allow, Forward};
use crate::routing::{cluster_name, HostUrl, PathPattern, UrlPattern};
use crate::security::config::ServiceSecurity;
use crate::security::secrets::Secrets;
use serde_json::Value;
use std::rc::Rc;

/// KrakenD service-level fields that mean nothing inside Envoy (listener, timeouts of
/// KrakenD's own HTTP server, ...). Accepted so a KrakenD file loads as is; ignored.
const IGNORED_ROOT: &[&str] = &[
    "name",
    "port",
    "listen_ip",
    "cache_ttl",
    "output_encoding",
    "debug_endpoint",
    "echo_endpoint",
    "sequential_start",
    "disable_rest",
    "read_timeout",
    "write_timeout",
    "idle_timeout",
    "read_header_timeout",
    "max_header_bytes",
    "max_idle_connections",
    "max_idle_connections_per_host",
    "idle_connection_timeout",
    "response_header_timeout",
    "expect_continue_timeout",
    "dialer_timeout",
    "dialer_keep_alive",
    "dialer_fallback_delay",
    "disable_compression",
    "disable_keep_alives",
    "dns_cache_ttl",
    "client_tls",
    "tls",
    "plugin",
    "use_h2c",
    "max_shutdown_wait_time",
];
/// Of those, the ones `tollgate envoy` turns into Envoy settings (`envoy::Edge`): no warning.
const BOOTSTRAP_ROOT: &[&str] = &[
    "name",
    "read_header_timeout",
    "read_timeout",
    "idle_timeout",
    "max_header_bytes",
];
const IGNORED_ENDPOINT: &[&str] = &["cache_ttl", "concurrent_calls"];
const IGNORED_BACKEND: &[&str] = &["disable_host_sanitize", "sd_scheme"];
/// Backend fields that reshape the answer (KrakenD's response manipulation): they have no
/// effect on a `no-op` endpoint (KrakenD passes the answer as is there, and so does tollgate);
/// anywhere else they are refused, the answer would reach the client unfiltered.
const RESHAPING: &[&str] = &[
    "allow",
    "deny",
    "mapping",
    "target",
    "group",
    "is_collection",
];
/// Encodings whose answer tollgate passes on as KrakenD would: JSON as the backend sent it.
const JSON_ENCODINGS: &[&str] = &["json", "safejson", "fast-json", "no-op"];
/// The endpoint `output_encoding`s that keep the backend's JSON as it is.
const OUTPUT_ENCODINGS: &[&str] = &["json", "fast-json", "no-op", "negotiate"];

/// Methods KrakenD endpoints accept.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
/// A backend may also be called with OPTIONS or HEAD (KrakenD's backend methods; CONNECT and
/// TRACE are not proxied requests Envoy's router sends).
const BACKEND_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"];

impl Gateway {
    /// Parses and compiles a KrakenD JSON document. `lookup` resolves `{{ env "X" }}`.
    pub fn from_json(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::new("$", format!("invalid JSON: {e}")))?;
        Self::from_value(&doc, lookup)
    }

    pub fn from_value(doc: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        // Every value read from the environment is a secret (see `secrets`).
        let from_env = std::cell::RefCell::new(Vec::new());
        let recording = |name: &str| {
            let v = lookup(name);
            if let Some(v) = &v {
                from_env.borrow_mut().push(v.clone());
            }
            v
        };
        let lookup: &dyn Fn(&str) -> Option<String> = &recording;
        let mut warnings = Vec::new();
        let mut root = Obj::new(doc, "$")?;
        match root.get("version") {
            Some(v) if v.as_u64() == Some(3) => {}
            Some(_) => {
                return Err(ConfigError::new(
                    "$.version",
                    "must be 3 (KrakenD configuration version 3)",
                ))
            }
            None => return Err(ConfigError::new("$.version", "is required and must be 3")),
        }
        let default_hosts = match root.opt_strings("host")? {
            Some(list) => parse_hosts(&list, &root.at("host"))?,
            None => Vec::new(),
        };
        let default_timeout = duration_field(&mut root, "timeout")?;
        let svc = service(&mut root, lookup, &mut warnings)?;
        let inherited = Inherited {
            default_hosts: &default_hosts,
            default_timeout,
            service: &svc,
            lookup,
        };
        if root.get("async_agent").is_some() {
            return Err(ConfigError::new(
                "$.async_agent",
                "async agents (queue consumers) are not supported by tollgate",
            ));
        }
        let mut endpoints = endpoints(&mut root, &inherited, &mut warnings)?;
        for (key, _) in root.unread() {
            if IGNORED_ROOT.contains(&key) && !BOOTSTRAP_ROOT.contains(&key) {
                warnings.push(format!(
                    "$.{key}: KrakenD server setting, not used inside Envoy; ignored"
                ));
            }
        }
        root.finish(IGNORED_ROOT)?;
        let secrets = Rc::new(secrets(&endpoints, &svc.security, from_env.take()));
        for ep in &mut endpoints {
            ep.security.secrets = Rc::clone(&secrets);
            ep.security.upstream_secret = ep.backends.iter().any(|b| {
                b.modifiers.request.iter().any(|op| match op {
                    HeaderOp::Set { value, .. } | HeaderOp::Append { value, .. } => {
                        secrets.any_in(value.0.as_bytes())
                    }
                    _ => false,
                })
            });
        }
        Ok(Self {
            endpoints,
            cost: svc.cost,
            fleet: svc.fleet,
            warnings,
        })
    }
}

/// The service level's namespaces (the root `extra_config`).
fn service(
    root: &mut Obj<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<ServiceParts> {
    let mut svc = ServiceParts::default();
    if let Some(mut extra) = root.opt_obj("extra_config")? {
        let none = ServiceParts::default();
        let cx = Context {
            lookup,
            service: &none,
            id: "",
            is_messages: false,
            host: "",
            url_pattern: "",
            scope: "",
        };
        namespaces::compile(&mut extra, namespaces::SERVICE, &mut svc, &cx)?;
        warnings.append(&mut svc.warnings);
        unread_namespaces(&mut extra, Level::Service, warnings)?;
    }
    Ok(svc)
}

/// What endpoints inherit from the service level.
struct Inherited<'a> {
    default_hosts: &'a [HostUrl],
    default_timeout: Option<u64>,
    service: &'a ServiceParts,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

/// Every endpoint, with what it inherits; two endpoints of one method and path shape are
/// refused.
fn endpoints(
    root: &mut Obj<'_>,
    inherited: &Inherited<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Endpoint>> {
    let list = root
        .opt_array("endpoints")?
        .ok_or_else(|| ConfigError::new("$.endpoints", "is required"))?;
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let path = format!("$.endpoints[{i}]");
        let ep = endpoint(item, &path, inherited, warnings)?;
        if let Some(j) = endpoints
            .iter()
            .position(|e| e.method == ep.method && e.pattern.same_shape(&ep.pattern))
        {
            return Err(ConfigError::new(
                format!("{path}.endpoint"),
                format!(
                    "{} {} duplicates $.endpoints[{j}] ({} {})",
                    ep.method,
                    ep.pattern.as_str(),
                    endpoints[j].method,
                    endpoints[j].pattern.as_str()
                ),
            ));
        }
        let mut ep = ep;
        let own = &mut ep.governance.max_payload;
        *own = own.or(inherited.service.max_payload);
        if let Some(t) = &inherited.service.tiered {
            ep.governance.tiered.insert(0, Rc::clone(t));
        }
        let at = format!("{path}.extra_config");
        tier_warnings(&ep, &at, inherited.service.tiered.is_some(), warnings);
        let quota = match (ep.quota.take(), &inherited.service.default_quota) {
            (Some(q), _) => Some((q, format!("{at}.governance/quota"))),
            (None, Some(q)) => Some((q.clone(), "$.extra_config.governance/quota".to_string())),
            (None, None) => None,
        };
        let quota = match quota {
            Some((q, qpath)) if ep.api.is_some() => Some(crate::cost::for_llm(&q, &qpath)?),
            q => q.map(|(q, _)| crate::cost::for_plain(&q)),
        };
        let mut ep = Endpoint {
            timeout_ms: ep.timeout_ms.or(inherited.default_timeout),
            quota,
            ..ep
        };
        if let Some(rl) = &inherited.service.fleet_rate_limit {
            ep.governance.fleet_rate_limits.insert(0, rl.clone());
        }
        fleet_pool(&ep, inherited.service, &path)?;
        endpoints.push(ep);
    }
    Ok(endpoints)
}

/// The fleet limits one request sends (its rate limits and its quota, in one call to the
/// limits service) must be on one Redis pool.
fn fleet_pool(ep: &Endpoint, svc: &ServiceParts, path: &str) -> Result<()> {
    let quota = ep
        .quota
        .as_ref()
        .and_then(|a| svc.cost.quotas.get(a.quota))
        .and_then(|q| match q.store {
            crate::limits::client::Store::Fleet(p) => Some((p, "its quota")),
            crate::limits::client::Store::Local => None,
        });
    let pools = ep.governance.fleet_rate_limits.iter();
    let mut used = pools.map(|r| (r.pool, "a Redis rate limit")).chain(quota);
    let Some((first, _)) = used.next() else {
        return Ok(());
    };
    match used.find(|(p, _)| *p != first) {
        None => Ok(()),
        Some((_, what)) => Err(ConfigError::new(
            format!("{path}.extra_config"),
            format!("{what} and the endpoint's other fleet limits name different Redis pools: one request's limits are checked in one call, on one pool"),
        )),
    }
}

/// A tiered rate limit whose plan header nothing in the gateway writes: the client states its
/// own plan (KrakenD's docs: propagate it from the API key's role or the token's claims).
/// Once per namespace.
fn tier_warnings(ep: &Endpoint, path: &str, service: bool, warnings: &mut Vec<String>) {
    for (i, t) in ep.governance.tiered.iter().enumerate() {
        if ep.forward.owned.contains(&t.tier_key) {
            continue;
        }
        let at = if service && i == 0 {
            "$.extra_config"
        } else {
            path
        };
        let w = format!(
            "{at}.qos/ratelimit/tiered.tier_key: header {} comes from the client (no auth/api-keys propagate_role or auth/validator propagate_claims writes it): a client picks its own tier",
            t.tier_key
        );
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
}

/// The gateway's secrets: every value read from `{{ env }}`, provider credentials (also
/// literal ones), client API keys stored in plain and the salt, and the values of
/// credential headers that martian modifiers send upstream (without an auth scheme word
/// such as `Bearer`).
fn secrets(endpoints: &[Endpoint], svc: &ServiceSecurity, from_env: Vec<String>) -> Secrets {
    let mut all = from_env;
    if let Some(keys) = &svc.api_keys {
        if keys.hash == crate::security::apikeys::Hash::Plain {
            all.extend(keys.keys.iter().map(|k| k.stored.0.clone()));
        }
        all.push(keys.salt.0.clone());
    }
    for b in endpoints.iter().flat_map(|e| &e.backends) {
        if let Some(l) = &b.llm {
            all.extend(l.credentials.iter().map(|c| c.0.clone()));
            if let Some(aws) = &l.aws {
                all.push(aws.0.access_key_id.clone());
                all.push(aws.0.secret_access_key.clone());
                all.extend(aws.0.session_token.clone());
            }
        }
    }
    let tools = endpoints.iter().filter_map(|e| match &e.mcp {
        Some(McpEndpoint {
            kind: Kind::Server(s),
            ..
        }) => Some(s.tools.iter().map(|t| &t.workflow.modifiers)),
        _ => None,
    });
    let modifiers = endpoints
        .iter()
        .flat_map(|e| e.backends.iter().map(|b| &b.modifiers))
        .chain(tools.flatten());
    for m in modifiers {
        for op in &m.request {
            if let HeaderOp::Set { name, value } | HeaderOp::Append { name, value } = op {
                if cost::is_credential_header(name) {
                    let v = value.0.trim();
                    let token = v.split_once(' ').map_or(v, |(_, t)| t.trim());
                    all.push(token.to_string());
                }
            }
        }
    }
    Secrets::new(all)
}

fn endpoint(
    v: &Value,
    path: &str,
    inherited: &Inherited<'_>,
    warnings: &mut Vec<String>,
) -> Result<Endpoint> {
    let mut o = Obj::new(v, path)?;
    let pattern = PathPattern::parse(o.str("endpoint")?)
        .map_err(|m| ConfigError::new(o.at("endpoint"), m))?;
    let method = method_field(&mut o, "method", METHODS)?.unwrap_or_else(|| "GET".to_string());
    let timeout_ms = duration_field(&mut o, "timeout")?;
    let (no_op, streaming) = output_encoding(&mut o)?;
    let shared_id = crate::governance::shared_id(&method, pattern.as_str());
    let scope = crate::limits::scheme::endpoint_scope(&method, pattern.as_str());
    let mut forward = Forward::new(
        o.opt_strings("input_headers")?.as_deref(),
        o.opt_strings("input_query_strings")?.as_deref(),
    );
    let mut parts = EndpointParts::default();
    if let Some(mut extra) = o.opt_obj("extra_config")? {
        let cx = Context {
            lookup: inherited.lookup,
            service: inherited.service,
            id: &shared_id,
            is_messages: pattern.as_str().ends_with("/messages"),
            host: "",
            url_pattern: "",
            scope: &scope,
        };
        namespaces::compile(&mut extra, namespaces::ENDPOINT, &mut parts, &cx)?;
        warnings.append(&mut parts.warnings);
        unread_namespaces(&mut extra, Level::Endpoint, warnings)?;
    }
    let list = o
        .opt_array("backend")?
        .ok_or_else(|| ConfigError::new(o.at("backend"), "is required"))?;
    if list.is_empty() {
        return Err(ConfigError::new(o.at("backend"), "needs one backend"));
    }
    let mut backends = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let bpath = format!("{}[{i}]", o.at("backend"));
        let shape = Shape {
            no_op,
            endpoint: &pattern,
            method: &method,
        };
        backends.push(backend(item, &bpath, shape, inherited, warnings)?);
    }
    // Headers the gateway writes itself are kept; the client's API key never leaves.
    forward.owned = parts.security.owned_headers();
    forward.never = parts.security.secret_headers();
    for b in &mut backends {
        b.forward = forward.narrow(Some(&b.forward.headers), Some(&b.forward.query));
    }
    let mcp = mcp_endpoint(&o, &mut parts, &backends, &method)?;
    let api = match mcp {
        Some(_) => None,
        None => front_door(&o, &backends, &pattern, &method)?,
    };
    crate::governance::check_llm_only(&parts.governance, api.is_some(), &o.at("extra_config"))?;
    o.finish(IGNORED_ENDPOINT)?;
    let kind = EndpointKind::of(pattern.as_str());
    let mut ep = Endpoint {
        pattern,
        method,
        backends,
        api,
        kind,
        timeout_ms,
        quota: parts.quota,
        governance: parts.governance,
        security: parts.security,
        forward,
        mcp,
        llm_stream: None,
    };
    llm_streaming(&ep, streaming, path, warnings)?;
    ep.llm_stream = streaming.then(|| stream_door(&ep.backends));
    let (bpath, xpath) = (format!("{path}.backend"), format!("{path}.extra_config"));
    let rules = ep.backends.iter_mut().map(|b| &mut b.rules).collect();
    let is_llm = ep.api.is_some();
    crate::governance::routing::finish_endpoint(
        &ep.governance.routing,
        rules,
        is_llm,
        &shared_id,
        &bpath,
        &xpath,
    )?;
    Ok(ep)
}

/// The API clients speak to an endpoint whose backends are LLMs (None otherwise): Anthropic's
/// on a path ending in `/messages` or `/messages/count_tokens`, else OpenAI's
/// ([`EndpointKind::front`]). Several backends must all be LLMs (the
/// client's model chooses among them), with one default at most; LLM endpoints take POST.
fn front_door(
    o: &Obj<'_>,
    backends: &[Backend],
    pattern: &PathPattern,
    method: &str,
) -> Result<Option<FrontDoor>> {
    let llm_count = backends.iter().filter(|b| b.llm.is_some()).count();
    // KrakenD's conditional routing picks one plain backend per request.
    let routed = llm_count == 0 && backends.iter().all(|b| b.rules.conditional.is_some());
    if backends.len() > 1 && llm_count < backends.len() && !routed {
        return Err(ConfigError::new(
            o.at("backend"),
            "several backends are only supported when every one is an ai/llm backend (the client's model chooses) or every one has a backend/conditional (one is called); KrakenD response merging is not supported",
        ));
    }
    let api = (llm_count > 0).then(|| EndpointKind::of(pattern.as_str()).front());
    if api.is_some() && method != "POST" {
        return Err(ConfigError::new(
            o.at("method"),
            "ai/llm endpoints must use POST",
        ));
    }
    if backends
        .iter()
        .filter(|b| b.llm.as_ref().is_some_and(|l| l.default))
        .count()
        > 1
    {
        return Err(ConfigError::new(
            o.at("backend"),
            "only one ai/llm backend may be the default",
        ));
    }
    Ok(api)
}

/// What a backend needs of its endpoint.
#[derive(Clone, Copy)]
struct Shape<'a> {
    /// `output_encoding: no-op`: the answer passes as the backend sent it.
    no_op: bool,
    endpoint: &'a PathPattern,
    method: &'a str,
}

fn backend(
    v: &Value,
    path: &str,
    shape: Shape<'_>,
    inherited: &Inherited<'_>,
    warnings: &mut Vec<String>,
) -> Result<Backend> {
    let endpoint = shape.endpoint;
    let mut o = Obj::new(v, path)?;
    answer_as_sent(&mut o, shape.no_op)?;
    let hosts = match o.opt_strings("host")? {
        Some(list) => parse_hosts(&list, &o.at("host"))?,
        None if !inherited.default_hosts.is_empty() => inherited.default_hosts.to_vec(),
        None => {
            return Err(ConfigError::new(
                o.at("host"),
                "is required (or set the service-level host list)",
            ))
        }
    };
    let url_pattern = UrlPattern::parse(o.str("url_pattern")?, endpoint)
        .map_err(|m| ConfigError::new(o.at("url_pattern"), m))?;
    let method = method_field(&mut o, "method", BACKEND_METHODS)?;
    // The backend's own lists (KrakenD's second-level filter), narrowed into the
    // endpoint's policy by `endpoint`; absent lists let everything through here.
    let list = |o: &mut Obj<'_>, key: &str, lower: bool| -> Result<Allow> {
        Ok(o.opt_strings(key)?
            .filter(|l| !l.is_empty())
            .map_or(Allow::All, |l| Allow::from_list(&l, lower)))
    };
    let forward = Forward {
        headers: list(&mut o, "input_headers", true)?,
        query: list(&mut o, "input_query_strings", false)?,
        ..Forward::default()
    };
    let mut parts = BackendParts::default();
    if let Some(mut extra) = o.opt_obj("extra_config")? {
        let none = ServiceParts::default();
        let cx = Context {
            lookup: inherited.lookup,
            service: &none,
            id: "",
            is_messages: false,
            host: hosts.first().map(|h| h.host.as_str()).unwrap_or_default(),
            url_pattern: url_pattern.as_str(),
            scope: "",
        };
        namespaces::compile(&mut extra, namespaces::BACKEND, &mut parts, &cx)?;
        unread_namespaces(&mut extra, Level::Backend, warnings)?;
    }
    fixed_bodies(&parts, shape.method, &o.at("extra_config"), warnings)?;
    o.finish(IGNORED_BACKEND)?;
    Ok(Backend {
        cluster: cluster_name(&hosts),
        hosts,
        url_pattern,
        method,
        modifiers: parts.modifiers,
        llm: parts.llm,
        rules: parts.rules,
        forward,
        mcp_upstream: parts.mcp_upstream,
        checks: parts.checks,
        body: parts.body,
        answer: parts.answer,
    })
}

/// An MCP endpoint the gateway answers: an `ai/mcp` server or an `ai/mcp-federation` of
/// its backends (each an `ai/mcp-upstream`, named once); `ai/mcp-tools` needs one of them.
fn mcp_endpoint(
    o: &Obj<'_>,
    parts: &mut EndpointParts,
    backends: &[Backend],
    method: &str,
) -> Result<Option<McpEndpoint>> {
    let extra = o.at("extra_config");
    let kind = match (parts.mcp_server.take(), parts.mcp_federation.take()) {
        (Some(_), Some(_)) => {
            let msg = "an endpoint is an ai/mcp server or an ai/mcp-federation, not both";
            return Err(ConfigError::new(format!("{extra}.ai/mcp-federation"), msg));
        }
        (Some(s), None) => Some(Kind::Server(s)),
        (None, Some(f)) => Some(Kind::Federation(f)),
        (None, None) => None,
    };
    let named: Vec<(usize, &str)> = backends
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.mcp_upstream.as_deref().map(|n| (i, n)))
        .collect();
    let upstream_at = |i: usize| format!("{}[{i}].extra_config.ai/mcp-upstream", o.at("backend"));
    match &kind {
        Some(Kind::Federation(_)) => {
            if let Some(i) = backends
                .iter()
                .position(|b| b.mcp_upstream.is_none() || b.llm.is_some())
            {
                let msg = "every backend of an ai/mcp-federation endpoint is an upstream MCP server: add {\"name\": ...}";
                return Err(ConfigError::new(upstream_at(i), msg));
            }
            for (k, (i, n)) in named.iter().enumerate() {
                if named.iter().take(k).any(|(_, m)| m == n) {
                    return Err(ConfigError::new(
                        format!("{}.name", upstream_at(*i)),
                        format!("\"{n}\" names two upstreams"),
                    ));
                }
            }
        }
        _ => {
            if let Some((i, _)) = named.first() {
                let msg = "only applies to the backends of an ai/mcp-federation endpoint";
                return Err(ConfigError::new(upstream_at(*i), msg));
            }
        }
    }
    let policy = parts.mcp_policy.take();
    let Some(kind) = kind else {
        return match policy {
            Some(_) => Err(ConfigError::new(
                format!("{extra}.ai/mcp-tools"),
                "only applies to ai/mcp and ai/mcp-federation endpoints",
            )),
            None => Ok(None),
        };
    };
    if method != "POST" {
        return Err(ConfigError::new(
            o.at("method"),
            "MCP endpoints take POST (JSON-RPC messages)",
        ));
    }
    Ok(Some(McpEndpoint {
        kind,
        policy: policy.unwrap_or_default(),
    }))
}

fn parse_hosts(list: &[&str], path: &str) -> Result<Vec<HostUrl>> {
    if list.is_empty() {
        return Err(ConfigError::new(path, "needs at least one host"));
    }
    let mut hosts: Vec<HostUrl> = Vec::with_capacity(list.len());
    for (i, h) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let host = HostUrl::parse(h).map_err(|m| ConfigError::new(&at, m))?;
        if let Some(first) = hosts.first() {
            if first.scheme != host.scheme {
                return Err(ConfigError::new(
                    at,
                    "all hosts of a backend must use the same scheme",
                ));
            }
        }
        hosts.push(host);
    }
    Ok(hosts)
}

/// Martian's `body.Modifier` replaces a plain backend's bodies; an LLM backend's request and
/// answer are translated, so there it is refused. A request without a body (a GET) gets
/// none: a filter inside Envoy cannot add one (a warning says so).
fn fixed_bodies(
    parts: &BackendParts,
    method: &str,
    extra: &str,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let m = &parts.modifiers;
    let at = format!("{extra}.modifier/martian");
    if parts.llm.is_some() && (m.request_body.is_some() || m.response_body.is_some()) {
        return Err(ConfigError::new(
            at,
            "body.Modifier applies to plain backends; an ai/llm backend's request and answer are translated",
        ));
    }
    if m.request_body.is_some() && matches!(method, "GET" | "DELETE") {
        warnings.push(format!("{at}: body.Modifier (request scope) on a {method} endpoint: a request that arrives without a body reaches the backend without one (a filter inside Envoy cannot add a body)"));
    }
    Ok(())
}

/// The endpoint's `output_encoding`: (`no-op`, `streaming`). An encoding that would reshape
/// the backend's JSON (wrap it in `collection`, turn it into XML) is refused, and so are
/// KrakenD 3.0's stream manipulation encodings (`sse`, `ndjson`, `eventstream` parse a stream
/// message by message for components tollgate does not run). `streaming` is the
/// pseudo-encoding of the `ai/llm` stream
/// (https://www.krakend.io/docs/enterprise/ai-gateway/llm-streaming/), checked by
/// [`llm_streaming`] once the endpoint is known to be an `ai/llm` one.
fn output_encoding(o: &mut Obj<'_>) -> Result<(bool, bool)> {
    match o.opt_str("output_encoding")? {
        None => Ok((false, false)),
        Some(e) if OUTPUT_ENCODINGS.contains(&e) => Ok((e == "no-op", false)),
        Some("streaming") => Ok((false, true)),
        Some(e @ ("sse" | "ndjson" | "eventstream")) => Err(ConfigError::new(
            o.at("output_encoding"),
            format!("\"{e}\" (KrakenD 3.0 stream manipulation) is not supported by tollgate: use no-op to pass a stream as is; an ai/llm endpoint streams its answer with \"streaming\""),
        )),
        Some(e) => Err(ConfigError::new(
            o.at("output_encoding"),
            format!("\"{e}\" is not supported by tollgate (the backend's JSON is passed as is: use json or no-op)"),
        )),
    }
}

/// KrakenD 3.0's `output_encoding: "streaming"`: "a pseudo-encoding reserved for the ai/llm
/// component", so refused elsewhere; on a chat endpoint (the door that reads KrakenD's AI
/// contract) only, and not where a check reads the whole answer (it would refuse every
/// request). An `ai/llm.format` on an endpoint that does not stream has no effect: a warning.
fn llm_streaming(
    ep: &Endpoint,
    streaming: bool,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let at = format!("{path}.output_encoding");
    if streaming && ep.api.is_none() {
        let msg = "\"streaming\" is reserved for ai/llm endpoints (KrakenD 3.0 LLM streaming): use no-op to pass another stream as is";
        return Err(ConfigError::new(at, msg));
    }
    if streaming
        && !matches!(
            ep.kind,
            EndpointKind::ChatCompletions | EndpointKind::Messages
        )
    {
        let msg = format!("\"streaming\" streams KrakenD's AI contract, which a {} endpoint does not read (its clients ask for a stream in their own API)", ep.kind.suffix());
        return Err(ConfigError::new(at, msg));
    }
    let checked = ep
        .security
        .checks
        .has(crate::security::policy::Stage::Response)
        || ep
            .backends
            .iter()
            .any(|b| b.checks.has(crate::security::policy::Stage::Response));
    if streaming && checked {
        let msg = "\"streaming\" cannot be combined with checks of the whole answer (security/policies resp, validation/cel on the answer): the answer is sent as it is made";
        return Err(ConfigError::new(at, msg));
    }
    for (i, b) in ep.backends.iter().enumerate() {
        if !streaming && b.llm.as_ref().is_some_and(|l| l.format.is_some()) {
            warnings.push(format!("{path}.backend[{i}].extra_config.ai/llm.format: ignored: it names the wire format of a streamed answer and the endpoint does not stream (output_encoding \"streaming\")"));
        }
    }
    Ok(())
}

/// The door whose error object answers a streaming endpoint's refusals and provider errors
/// before the stream starts: Anthropic's when every backend streams Anthropic's format (its
/// SDK reads the errors), else OpenAI's (KrakenD's door).
fn stream_door(backends: &[Backend]) -> FrontDoor {
    let shapes = backends.iter().filter_map(|b| {
        let l = b.llm.as_ref()?;
        Some(StreamShape::of(
            l.format,
            l.provider.wire(),
            b.url_pattern.as_str(),
        ))
    });
    let mut shapes = shapes.peekable();
    let some = shapes.peek().is_some();
    if some && shapes.all(|s| s == StreamShape::Anthropic) {
        FrontDoor::Anthropic
    } else {
        FrontDoor::KrakenD
    }
}

/// KrakenD's response manipulation on a backend (`allow`, `mapping`, `group`, non-JSON
/// `encoding`, DNS service discovery): refused, unless the endpoint is `no-op`, where KrakenD
/// does not apply it either.
fn answer_as_sent(o: &mut Obj<'_>, no_op: bool) -> Result<()> {
    let mut fields = RESHAPING.iter();
    let set = |v: &Value| match v {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    };
    if let Some(key) = fields.find(|k| o.get(k).is_some_and(|v| !no_op && set(v))) {
        return Err(ConfigError::new(
            o.at(key),
            "KrakenD's response manipulation is not supported by tollgate (the answer would reach the client unfiltered); use output_encoding no-op to pass it as is",
        ));
    }
    for key in RESHAPING {
        o.get(key);
    }
    match o.opt_str("encoding")? {
        Some(e) if !no_op && !JSON_ENCODINGS.contains(&e) => {
            return Err(ConfigError::new(
                o.at("encoding"),
                format!("\"{e}\" is not supported by tollgate (the backend's answer is passed as is: use json or no-op)"),
            ))
        }
        _ => {}
    }
    match o.opt_str("sd")? {
        None | Some("static") => Ok(()),
        Some(sd) => Err(ConfigError::new(
            o.at("sd"),
            format!("service discovery \"{sd}\" is not supported by tollgate (hosts are Envoy cluster members: use static)"),
        )),
    }
}

fn method_field(o: &mut Obj<'_>, key: &str, allowed: &[&str]) -> Result<Option<String>> {
    match o.opt_str(key)? {
        None => Ok(None),
        Some(m) if allowed.contains(&m) => Ok(Some(m.to_string())),
        Some(m) => Err(ConfigError::new(
            o.at(key),
            format!("\"{m}\" is not one of {}", allowed.join(", ")),
        )),
    }
}

/// Every namespace of an `extra_config` no row compiled, by its verdict ([`krakend`]): one
/// warning line for a namespace with no effect inside Envoy, nothing for one run outside the
/// filter (the fleet limits), a refusal naming its path for every other one.
fn unread_namespaces(extra: &mut Obj<'_>, level: Level, warnings: &mut Vec<String>) -> Result<()> {
    for (key, _) in extra.unread() {
        if reader::is_meta_key(key) {
            continue;
        }
        match krakend::verdict(level, key) {
            Verdict::Implemented | Verdict::Elsewhere(_) => {}
            Verdict::Ignored(why) => {
                warnings.push(format!("{}: ignored inside Envoy: {why}", extra.at(key)));
            }
            Verdict::Refused(why) => return Err(ConfigError::new(extra.at(key), why)),
        }
    }
    Ok(())
}

fn duration_field(o: &mut Obj<'_>, key: &str) -> Result<Option<u64>> {
    match o.opt_str(key)? {
        None => Ok(None),
        Some(s) => reader::parse_duration_ms(s)
            .map(Some)
            .map_err(|m| ConfigError::new(o.at(key), m)),
    }
}
