//! KrakenD configuration (version 3) compiled into an immutable [`Gateway`].
//!
//! The filter receives the whole KrakenD JSON as its plugin configuration. Reading is
//! strict where tollgate acts (unknown fields in the namespaces it implements are errors,
//! named by JSON path) and tolerant where KrakenD has settings that do not apply inside
//! Envoy (kept, ignored, and reported once as warnings).

pub mod env;
pub mod llm;
pub mod martian;
pub mod reader;
pub mod security;

use crate::cost::{self, CostConfig, QuotaAttach};
use crate::routing::forward::{Allow, Forward};
use crate::routing::{cluster_name, HostUrl, PathPattern, UrlPattern};
use crate::security::secrets::Secrets;
pub use llm::{LlmBackend, Provider, Secret};
pub use martian::{HeaderOp, HeaderValue, Modifiers};
pub use reader::ConfigError;
use reader::{Obj, Result};
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
    "async_agent",
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
const IGNORED_ENDPOINT: &[&str] = &["cache_ttl", "concurrent_calls", "output_encoding"];
const IGNORED_BACKEND: &[&str] = &[
    "allow",
    "deny",
    "disable_host_sanitize",
    "encoding",
    "group",
    "is_collection",
    "mapping",
    "sd",
    "sd_scheme",
    "target",
];

/// Methods KrakenD endpoints accept.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The compiled gateway: everything the request path needs, nothing parsed at request time.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub endpoints: Vec<Endpoint>,
    /// Quotas, prices and usage reporting.
    pub cost: CostConfig,
    /// Things accepted but ignored (unknown namespaces, unsupported KrakenD settings);
    /// logged once at configure.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub pattern: PathPattern,
    pub method: String,
    /// One backend, or several `ai/llm` backends among which the client's model chooses.
    pub backends: Vec<Backend>,
    /// Set when the backends are LLMs: the API clients speak to this endpoint.
    pub api: Option<Api>,
    /// Upstream timeout (endpoint `timeout`, else the service `timeout`).
    pub timeout_ms: Option<u64>,
    /// The budget this endpoint charges (its `governance/quota`, else the service's).
    pub quota: Option<QuotaAttach>,
    /// Rate limits, validation, templates ([`crate::governance`]).
    pub governance: crate::governance::Policy,
    /// Client auth, PII masking, exfiltration and prompt guards ([`security`]).
    pub security: security::EndpointSecurity,
    /// What of the client's request goes upstream (`input_headers`,
    /// `input_query_strings`); each backend holds its own, narrowed by its lists.
    pub forward: Forward,
}

/// The client-facing LLM API of an endpoint, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI Chat Completions (any path not ending in `/messages`).
    OpenAiChat,
    /// Anthropic Messages (a path ending in `/messages`).
    AnthropicMessages,
}

impl Endpoint {
    /// The backend for a client's model: an alias or configured model first, then a
    /// pass-through backend (no configured model), then the default; a single backend
    /// without aliases takes every model. `None`: no backend serves this model.
    pub fn backend_for(&self, model: &str) -> Option<usize> {
        if let [only] = self.backends.as_slice() {
            if only.llm.as_ref().is_none_or(|l| l.aliases.is_empty()) {
                return Some(0);
            }
        }
        let by = |f: &dyn Fn(&LlmBackend) -> bool| {
            self.backends
                .iter()
                .position(|b| b.llm.as_ref().is_some_and(f))
        };
        by(&|l| l.claims(model))
            .or_else(|| by(&|l| l.model.is_none() && l.aliases.is_empty()))
            .or_else(|| by(&|l| l.default))
    }

    /// The single backend of a non-LLM endpoint (the first otherwise).
    pub fn backend(&self) -> Option<&Backend> {
        self.backends.first()
    }

    /// `/v1/chat/completions` → `/v1/models`: where the model list of this endpoint is served.
    pub fn models_path(&self) -> Option<String> {
        let path = self.pattern.as_str();
        let base = path
            .strip_suffix("/chat/completions")
            .or_else(|| path.strip_suffix("/messages"))?;
        Some(format!("{base}/models"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub hosts: Vec<HostUrl>,
    pub url_pattern: UrlPattern,
    /// Method to use upstream when it differs from the endpoint's.
    pub method: Option<String>,
    /// Envoy cluster for `hosts` ([`cluster_name`]).
    pub cluster: String,
    pub modifiers: Modifiers,
    /// `ai/llm`: the backend is an LLM provider; requests are translated to its API.
    pub llm: Option<LlmBackend>,
    /// `backend/conditional`, `qos/circuit-breaker` ([`crate::governance::routing`]).
    pub rules: crate::governance::routing::BackendRules,
    /// What of the client's request goes to this backend ([`Forward`]).
    pub forward: Forward,
}

impl Backend {
    /// The `:authority` sent upstream: the first host (Envoy's `auto_host_rewrite`
    /// corrects it when a list load-balances over differently named hosts).
    pub fn authority(&self) -> String {
        self.hosts
            .first()
            .map(HostUrl::authority)
            .unwrap_or_default()
    }
}

/// Reads the process environment (the Wasm VM's, inside Envoy).
/// An empty variable counts as missing: an empty provider key is always a mistake.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

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
        let mut cost = CostConfig::default();
        let mut default_quota = None;
        let mut svc = security::ServiceSecurity::default();
        if let Some(mut extra) = root.opt_obj("extra_config")? {
            if let Some(v) = extra.get("governance/processors") {
                cost.quotas = cost::processors(v, &extra.at("governance/processors"))?;
            }
            if let Some(v) = extra.get("governance/quota") {
                default_quota = Some(cost::attach(
                    v,
                    &extra.at("governance/quota"),
                    &cost.quotas,
                )?);
            }
            if let Some(v) = extra.get("ai/usage") {
                cost.usage = cost::usage_config(v, &extra.at("ai/usage"))?;
            }
            svc = security::service(&mut extra, lookup)?;
            ignore_namespaces(&mut extra, &[], &mut warnings);
        }
        let list = root
            .opt_array("endpoints")?
            .ok_or_else(|| ConfigError::new("$.endpoints", "is required"))?;
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(list.len());
        let service = Service {
            default_hosts: &default_hosts,
            cost: &cost,
            security: &svc,
            lookup,
        };
        for (i, item) in list.iter().enumerate() {
            let path = format!("$.endpoints[{i}]");
            let ep = endpoint(item, &path, &service, &mut warnings)?;
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
            endpoints.push(Endpoint {
                timeout_ms: ep.timeout_ms.or(default_timeout),
                quota: ep.quota.or_else(|| default_quota.clone()),
                ..ep
            });
        }
        for (key, _) in root.unread() {
            if IGNORED_ROOT.contains(&key) && !BOOTSTRAP_ROOT.contains(&key) {
                warnings.push(format!(
                    "$.{key}: KrakenD server setting, not used inside Envoy; ignored"
                ));
            }
        }
        root.finish(IGNORED_ROOT)?;
        let secrets = Rc::new(secrets(&endpoints, &svc, from_env.take()));
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
            cost,
            warnings,
        })
    }

    /// Every distinct backend host list with its cluster name (for the bootstrap generator).
    pub fn clusters(&self) -> Vec<(&str, &[HostUrl])> {
        let mut out: Vec<(&str, &[HostUrl])> = Vec::new();
        for b in self.endpoints.iter().flat_map(|e| &e.backends) {
            if !out.iter().any(|(name, _)| *name == b.cluster) {
                out.push((&b.cluster, &b.hosts));
            }
        }
        out
    }
}

/// The gateway's secrets: every value read from `{{ env }}`, provider credentials (also
/// literal ones), client API keys stored in plain and the salt, and the values of
/// credential headers that martian modifiers send upstream (without an auth scheme word
/// such as `Bearer`).
fn secrets(
    endpoints: &[Endpoint],
    svc: &security::ServiceSecurity,
    from_env: Vec<String>,
) -> Secrets {
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
        for op in &b.modifiers.request {
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

/// What endpoints inherit from the service level.
struct Service<'a> {
    default_hosts: &'a [HostUrl],
    cost: &'a CostConfig,
    security: &'a security::ServiceSecurity,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

fn endpoint(
    v: &Value,
    path: &str,
    service: &Service<'_>,
    warnings: &mut Vec<String>,
) -> Result<Endpoint> {
    let Service {
        default_hosts,
        cost,
        security: svc,
        lookup,
    } = *service;
    let mut o = Obj::new(v, path)?;
    let pattern = PathPattern::parse(o.str("endpoint")?)
        .map_err(|m| ConfigError::new(o.at("endpoint"), m))?;
    let method = method_field(&mut o, "method")?.unwrap_or_else(|| "GET".to_string());
    let timeout_ms = duration_field(&mut o, "timeout")?;
    let shared_id = crate::governance::shared_id(&method, pattern.as_str());
    let mut forward = Forward::new(
        o.opt_strings("input_headers")?.as_deref(),
        o.opt_strings("input_query_strings")?.as_deref(),
    );
    let mut quota = None;
    let mut governance = crate::governance::Policy::default();
    let mut sec = security::EndpointSecurity::default();
    if let Some(mut extra) = o.opt_obj("extra_config")? {
        if let Some(v) = extra.get("governance/quota") {
            quota = Some(cost::attach(
                v,
                &extra.at("governance/quota"),
                &cost.quotas,
            )?);
        }
        governance = crate::governance::compile(&mut extra, &shared_id, warnings)?;
        let is_messages = pattern.as_str().ends_with("/messages");
        sec = security::endpoint(&mut extra, svc, is_messages)?;
        ignore_namespaces(&mut extra, &[], warnings);
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
        backends.push(backend(
            item,
            &bpath,
            &pattern,
            default_hosts,
            lookup,
            warnings,
        )?);
    }
    // Headers the gateway writes itself are kept; the client's API key never leaves.
    forward.owned = sec.owned_headers();
    forward.never = sec.secret_headers();
    for b in &mut backends {
        b.forward = forward.narrow(Some(&b.forward.headers), Some(&b.forward.query));
    }
    let llm_count = backends.iter().filter(|b| b.llm.is_some()).count();
    if backends.len() > 1 && llm_count < backends.len() {
        return Err(ConfigError::new(
            o.at("backend"),
            "several backends are only supported when every one is an ai/llm backend (the client's model chooses); KrakenD response merging is not supported",
        ));
    }
    let api = (llm_count > 0).then(|| {
        if pattern.as_str().ends_with("/messages") {
            Api::AnthropicMessages
        } else {
            Api::OpenAiChat
        }
    });
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
    crate::governance::check_llm_only(&governance, api.is_some(), &o.at("extra_config"))?;
    o.finish(IGNORED_ENDPOINT)?;
    let mut ep = Endpoint {
        pattern,
        method,
        backends,
        api,
        timeout_ms,
        quota,
        governance,
        security: sec,
        forward,
    };
    let (bpath, xpath) = (format!("{path}.backend"), format!("{path}.extra_config"));
    crate::governance::routing::finish_endpoint(&mut ep, &shared_id, &bpath, &xpath)?;
    Ok(ep)
}

fn backend(
    v: &Value,
    path: &str,
    endpoint: &PathPattern,
    default_hosts: &[HostUrl],
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Backend> {
    let mut o = Obj::new(v, path)?;
    let hosts = match o.opt_strings("host")? {
        Some(list) => parse_hosts(&list, &o.at("host"))?,
        None if !default_hosts.is_empty() => default_hosts.to_vec(),
        None => {
            return Err(ConfigError::new(
                o.at("host"),
                "is required (or set the service-level host list)",
            ))
        }
    };
    let url_pattern = UrlPattern::parse(o.str("url_pattern")?, endpoint)
        .map_err(|m| ConfigError::new(o.at("url_pattern"), m))?;
    let method = method_field(&mut o, "method")?;
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
    let mut modifiers = Modifiers::default();
    let mut llm = None;
    let mut rules = crate::governance::routing::BackendRules::default();
    if let Some(mut extra) = o.opt_obj("extra_config")? {
        rules = crate::governance::routing::compile_backend(&mut extra)?;
        if let Some(m) = extra.get("modifier/martian") {
            modifiers = martian::compile(m, &extra.at("modifier/martian"), lookup)?;
        }
        if let Some(l) = extra.get("ai/llm") {
            let host = hosts.first().map(|h| h.host.as_str()).unwrap_or_default();
            llm = Some(llm::compile(l, &extra.at("ai/llm"), host, lookup)?);
        }
        ignore_namespaces(&mut extra, &[], warnings);
    }
    o.finish(IGNORED_BACKEND)?;
    Ok(Backend {
        cluster: cluster_name(&hosts),
        hosts,
        url_pattern,
        method,
        modifiers,
        llm,
        rules,
        forward,
    })
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

fn method_field(o: &mut Obj<'_>, key: &str) -> Result<Option<String>> {
    match o.opt_str(key)? {
        None => Ok(None),
        Some(m) if METHODS.contains(&m) => Ok(Some(m.to_string())),
        Some(m) => Err(ConfigError::new(
            o.at(key),
            format!("\"{m}\" is not one of GET, POST, PUT, PATCH, DELETE"),
        )),
    }
}

/// Records every unread namespace of an `extra_config` as ignored.
fn ignore_namespaces(extra: &mut Obj<'_>, _known: &[&str], warnings: &mut Vec<String>) {
    for (key, _) in extra.unread() {
        if !reader::is_meta_key(key) {
            warnings.push(format!(
                "{}: namespace not supported by tollgate; ignored",
                extra.at(key)
            ));
        }
    }
}

fn duration_field(o: &mut Obj<'_>, key: &str) -> Result<Option<u64>> {
    match o.opt_str(key)? {
        None => Ok(None),
        Some(s) => parse_duration_ms(s)
            .map(Some)
            .map_err(|m| ConfigError::new(o.at(key), m)),
    }
}

/// Parses a Go duration (`2s`, `500ms`, `1m30s`, `1.5h`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("\"{s}\" is not a duration (examples: 500ms, 30s, 2m, 1h30m)");
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return Err(bad()),
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests;
