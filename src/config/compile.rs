//! Compiling a KrakenD document into a [`Gateway`]: the service level, each endpoint and
//! each backend read their own fields here, and their `extra_config` namespaces through the
//! table of [`namespaces`](super::namespaces), each compiled by its domain.

use super::namespaces::{self, BackendParts, Context, EndpointParts, ServiceParts};
use super::reader::{self, ConfigError, Obj, Result};
use super::{Backend, Endpoint, Gateway, HeaderOp};
use crate::cost;
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
        };
        namespaces::compile(&mut extra, namespaces::SERVICE, &mut svc, &cx)?;
        ignore_namespaces(&mut extra, warnings);
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
        endpoints.push(Endpoint {
            timeout_ms: ep.timeout_ms.or(inherited.default_timeout),
            quota: ep.quota.or_else(|| inherited.service.default_quota.clone()),
            ..ep
        });
    }
    Ok(endpoints)
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

fn endpoint(
    v: &Value,
    path: &str,
    inherited: &Inherited<'_>,
    warnings: &mut Vec<String>,
) -> Result<Endpoint> {
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
    let mut parts = EndpointParts::default();
    if let Some(mut extra) = o.opt_obj("extra_config")? {
        let cx = Context {
            lookup: inherited.lookup,
            service: inherited.service,
            id: &shared_id,
            is_messages: pattern.as_str().ends_with("/messages"),
            host: "",
        };
        namespaces::compile(&mut extra, namespaces::ENDPOINT, &mut parts, &cx)?;
        warnings.append(&mut parts.warnings);
        ignore_namespaces(&mut extra, warnings);
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
        backends.push(backend(item, &bpath, &pattern, inherited, warnings)?);
    }
    // Headers the gateway writes itself are kept; the client's API key never leaves.
    forward.owned = parts.security.owned_headers();
    forward.never = parts.security.secret_headers();
    for b in &mut backends {
        b.forward = forward.narrow(Some(&b.forward.headers), Some(&b.forward.query));
    }
    let api = front_door(&o, &backends, &pattern, &method)?;
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
    };
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
    if backends.len() > 1 && llm_count < backends.len() {
        return Err(ConfigError::new(
            o.at("backend"),
            "several backends are only supported when every one is an ai/llm backend (the client's model chooses); KrakenD response merging is not supported",
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

fn backend(
    v: &Value,
    path: &str,
    endpoint: &PathPattern,
    inherited: &Inherited<'_>,
    warnings: &mut Vec<String>,
) -> Result<Backend> {
    let mut o = Obj::new(v, path)?;
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
    let mut parts = BackendParts::default();
    if let Some(mut extra) = o.opt_obj("extra_config")? {
        let none = ServiceParts::default();
        let cx = Context {
            lookup: inherited.lookup,
            service: &none,
            id: "",
            is_messages: false,
            host: hosts.first().map(|h| h.host.as_str()).unwrap_or_default(),
        };
        namespaces::compile(&mut extra, namespaces::BACKEND, &mut parts, &cx)?;
        ignore_namespaces(&mut extra, warnings);
    }
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
fn ignore_namespaces(extra: &mut Obj<'_>, warnings: &mut Vec<String>) {
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
        Some(s) => reader::parse_duration_ms(s)
            .map(Some)
            .map_err(|m| ConfigError::new(o.at(key), m)),
    }
}
