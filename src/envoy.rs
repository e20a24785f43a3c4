//! Envoy bootstrap generation (`tollgate envoy krakend.json`): a listener whose single
//! route sends each request to the cluster named by the filter's routing header, the
//! tollgate filter carrying the KrakenD document (the Wasm filter, or with `--native` the
//! dynamic module), and one cluster per backend host list (TLS with SNI for https hosts).
//! Host-only; not part of the .wasm.

use crate::config::{env, Gateway};
use crate::providers::FrontDoor;
use crate::refusal::{ANTHROPIC_FRONT, ENVOY_REPLY, ERROR_HEADER, FRONT_PROPERTY};
use crate::routing::{cluster_name, HostUrl, Scheme, CLUSTER_HEADER};
use crate::security::claims::provider_name;
use serde_json::{json, Value};

mod routes;

/// Bootstrap settings that differ between a local run and a container.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: (String, u16),
    pub admin: (String, u16),
    pub wasm_path: String,
    /// The native module (`libtollgate.so`) to run instead of the .wasm.
    pub native_path: Option<String>,
    pub ca_file: String,
    /// Envoy worker threads are set on the command line; this only names the VM.
    pub vm_id: String,
    /// Edge-proxy limits and timeouts.
    pub edge: Edge,
    /// `--dynamic DIR`: the filter configuration (ECDS) and the clusters (CDS) come from
    /// files in DIR that Envoy watches, so `tollgate apply` changes them without a restart.
    pub dynamic: Option<String>,
    /// Environment variables passed to the VM besides those the config references
    /// (`--env-key`): a later `tollgate apply` may reference them; no other (a VM's
    /// environment is fixed when Envoy starts).
    pub extra_env_keys: Vec<String>,
    /// `--limits HOST:PORT`: the fleet limits service (`tollgate limits`, or any Envoy rate
    /// limit service), reached as cluster [`crate::limits::client::CLUSTER`] over HTTP/2.
    pub limits: Option<(String, u16)>,
}

/// Hardening of an edge proxy, after Envoy's "Configuring Envoy as an edge proxy": the
/// overload manager (heap limit, global connection limit), buffer limits, timeouts and
/// HTTP/2 limits. Defaults are the best-practice values; KrakenD's service settings that
/// mean the same thing replace them ([`Edge::from_doc`]); `tollgate envoy --edge NAME=VALUE`
/// replaces either ([`Edge::set`]). Durations in milliseconds; 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// `fixed_heap` resource monitor: shrink the heap at 95%, stop keep-alive at 95%, refuse
    /// new requests at 98% of this.
    pub max_heap_bytes: u64,
    /// `global_downstream_max_connections`: connections past this are closed at accept.
    pub max_connections: u64,
    /// Listener and cluster `per_connection_buffer_limit_bytes`.
    pub connection_buffer_bytes: u64,
    /// Request bodies the gateway reads whole (body governance) may be this large; Envoy
    /// answers 413 past it (route `request_body_buffer_limit`).
    pub request_buffer_bytes: u64,
    /// The same for `ai/llm` endpoints without a `max_payload` (agents send prompts of several
    /// MB); see `envoy/routes.rs`.
    pub llm_request_buffer_bytes: u64,
    /// Time to receive the request headers (slowloris). KrakenD `read_header_timeout`.
    pub request_headers_timeout_ms: u64,
    /// Time to receive the whole request. KrakenD `read_timeout`.
    pub request_timeout_ms: u64,
    /// A connection without streams is closed after this. KrakenD `idle_timeout`.
    pub idle_timeout_ms: u64,
    /// A stream without activity (no byte either way) is reset after this.
    pub stream_idle_timeout_ms: u64,
    /// Request header size limit in KiB (1..8192). KrakenD `max_header_bytes` (rounded up).
    pub max_request_headers_kb: u64,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u64,
    /// HTTP/2 initial stream and connection flow-control windows.
    pub initial_stream_window_size: u64,
    pub initial_connection_window_size: u64,
}

impl Default for Edge {
    fn default() -> Self {
        Self {
            max_heap_bytes: 1 << 30,
            max_connections: 10_000,
            connection_buffer_bytes: 32 * 1024,
            request_buffer_bytes: 1 << 20,
            llm_request_buffer_bytes: 16 << 20,
            request_headers_timeout_ms: 10_000,
            request_timeout_ms: 300_000,
            idle_timeout_ms: 3_600_000,
            stream_idle_timeout_ms: 300_000,
            max_request_headers_kb: 60,
            max_concurrent_streams: 100,
            initial_stream_window_size: 64 * 1024,
            initial_connection_window_size: 1 << 20,
        }
    }
}

/// `--edge` names, with the KrakenD service setting that feeds each (if any).
const EDGE_SETTINGS: &[(&str, Option<&str>)] = &[
    ("max_heap_bytes", None),
    ("max_connections", None),
    ("connection_buffer_bytes", None),
    ("request_buffer_bytes", None),
    ("llm_request_buffer_bytes", None),
    ("request_headers_timeout", Some("read_header_timeout")),
    ("request_timeout", Some("read_timeout")),
    ("idle_timeout", Some("idle_timeout")),
    ("stream_idle_timeout", None),
    ("max_request_headers_kb", None),
    ("max_concurrent_streams", None),
    ("initial_stream_window_size", None),
    ("initial_connection_window_size", None),
];

impl Edge {
    /// The defaults with a KrakenD document's `read_header_timeout`, `read_timeout`,
    /// `idle_timeout` (Go durations; `0s` = no timeout, as in KrakenD) and
    /// `max_header_bytes` (bytes; 0 = the default).
    pub fn from_doc(doc: &Value) -> Result<Self, String> {
        let mut e = Self::default();
        for (name, krakend) in EDGE_SETTINGS {
            let Some(key) = krakend else { continue };
            match doc.get(key) {
                None => {}
                Some(Value::String(v)) => e.set(name, v).map_err(|m| format!("$.{key}: {m}"))?,
                Some(_) => return Err(format!("$.{key}: must be a duration string")),
            }
        }
        match doc.get("max_header_bytes") {
            None => {}
            Some(v) => match v.as_u64() {
                Some(0) => {}
                Some(n) => e.max_request_headers_kb = n.div_ceil(1024).min(8192),
                None => return Err("$.max_header_bytes: must be a non-negative integer".into()),
            },
        }
        Ok(e)
    }

    /// Sets one value by its `--edge` name (durations as Go durations: `10s`, `5m`).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let int = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{name}: \"{value}\" is not a non-negative integer"))
        };
        let dur = || crate::config::parse_duration_ms(value).map_err(|m| format!("{name}: {m}"));
        let range = |n: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(format!("{name}: {n} is outside {lo}..={hi}"))
            }
        };
        match name {
            "max_heap_bytes" => self.max_heap_bytes = int()?,
            "max_connections" => self.max_connections = int()?,
            "connection_buffer_bytes" => {
                self.connection_buffer_bytes = range(int()?, 1024, u64::from(u32::MAX))?
            }
            "request_buffer_bytes" => {
                self.request_buffer_bytes = range(int()?, 1024, u64::from(u32::MAX))?
            }
            "llm_request_buffer_bytes" => {
                self.llm_request_buffer_bytes = range(int()?, 1024, u64::from(u32::MAX))?
            }
            "request_headers_timeout" => self.request_headers_timeout_ms = dur()?,
            "request_timeout" => self.request_timeout_ms = dur()?,
            "idle_timeout" => self.idle_timeout_ms = dur()?,
            "stream_idle_timeout" => self.stream_idle_timeout_ms = dur()?,
            "max_request_headers_kb" => self.max_request_headers_kb = range(int()?, 1, 8192)?,
            "max_concurrent_streams" => {
                self.max_concurrent_streams = range(int()?, 1, 2_147_483_647)?
            }
            "initial_stream_window_size" => {
                self.initial_stream_window_size = range(int()?, 65_535, 2_147_483_647)?
            }
            "initial_connection_window_size" => {
                self.initial_connection_window_size = range(int()?, 65_535, 2_147_483_647)?
            }
            _ => {
                let names: Vec<&str> = EDGE_SETTINGS.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown edge setting \"{name}\" (known: {})",
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Envoy's `overload_manager`: heap actions and the global connection limit.
    fn overload_manager(&self) -> Value {
        let mut monitors = Vec::new();
        let mut actions = Vec::new();
        if self.max_heap_bytes > 0 {
            monitors.push(json!({
                "name": HEAP_MONITOR,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    "max_heap_size_bytes": self.max_heap_bytes,
                }
            }));
            for (action, threshold) in [
                ("envoy.overload_actions.shrink_heap", 0.95),
                ("envoy.overload_actions.disable_http_keepalive", 0.95),
                ("envoy.overload_actions.stop_accepting_requests", 0.98),
            ] {
                actions.push(json!({
                    "name": action,
                    "triggers": [{"name": HEAP_MONITOR, "threshold": {"value": threshold}}],
                }));
            }
        }
        if self.max_connections > 0 {
            monitors.push(json!({
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": self.max_connections,
                }
            }));
        }
        json!({"refresh_interval": "0.25s", "resource_monitors": monitors, "actions": actions})
    }
}

const HEAP_MONITOR: &str = "envoy.resource_monitors.fixed_heap";

/// `tollgate envoy`'s options after the config path, usage text for errors.
pub const OPTIONS_USAGE: &str =
    "[--listen ADDR:PORT] [--admin ADDR:PORT] [--wasm PATH | --native PATH] [--ca-file PATH]
                 [--limits HOST:PORT] [--edge NAME=VALUE]... [--dynamic DIR [--env-key NAME]...]";

impl Options {
    /// Options from `tollgate envoy`'s command line (after the config path); the edge
    /// defaults come from the document's KrakenD service settings.
    pub fn from_args(doc: &Value, args: &[String]) -> Result<Self, String> {
        let mut o = Options {
            edge: Edge::from_doc(doc)?,
            ..Options::default()
        };
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .ok_or(format!("{flag} needs a value\n{OPTIONS_USAGE}"))?;
            match flag.as_str() {
                "--listen" => o.listen = addr(value)?,
                "--admin" => o.admin = addr(value)?,
                "--wasm" => o.wasm_path = value.clone(),
                "--native" => o.native_path = Some(value.clone()),
                "--ca-file" => o.ca_file = value.clone(),
                "--dynamic" => o.dynamic = Some(value.clone()),
                "--limits" => {
                    o.limits = Some(limits_addr(value).map_err(|e| format!("--limits {e}"))?)
                }
                "--env-key" => {
                    if value.is_empty()
                        || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(format!("--env-key {value}: not a variable name"));
                    }
                    o.extra_env_keys.push(value.clone());
                }
                "--edge" => {
                    let (name, v) = value
                        .split_once('=')
                        .ok_or(format!("--edge {value}: expected NAME=VALUE"))?;
                    o.edge.set(name, v).map_err(|e| format!("--edge {e}"))?;
                }
                _ => return Err(format!("unknown option {flag}\n{OPTIONS_USAGE}")),
            }
        }
        if o.native_path.is_some() && o.dynamic.is_some() {
            // ECDS here carries the Wasm filter's configuration (tollgate apply).
            return Err("--dynamic works with the .wasm, not with --native".into());
        }
        if !o.extra_env_keys.is_empty() && o.dynamic.is_none() {
            return Err("--env-key needs --dynamic (it is for configs applied later)".into());
        }
        Ok(o)
    }
}

/// `ADDR:PORT`.
pub fn addr(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or(format!("{s}: expected ADDR:PORT"))?;
    let port = port.parse().map_err(|_| format!("{s}: bad port"))?;
    Ok((host.to_string(), port))
}

/// The limits service's `HOST:PORT`: an IP (`[v6]:port` for IPv6) or a DNS name, a port above 0.
fn limits_addr(s: &str) -> Result<(String, u16), String> {
    let (host, port) = addr(s)?;
    if port == 0 {
        return Err(format!("{s}: bad port"));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok((bare.to_string(), port));
    }
    let name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if bare.is_empty() || bare.len() > 253 || !bare.chars().all(name) {
        return Err(format!("{s}: expected an IP address or a DNS name"));
    }
    Ok((bare.to_string(), port))
}

/// A duration in Envoy's JSON form (`"1.500s"`).
fn seconds(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: ("127.0.0.1".into(), 8080),
            admin: ("127.0.0.1".into(), 9901),
            wasm_path: "target/wasm32-wasip1/release/tollgate.wasm".into(),
            native_path: None,
            ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
            vm_id: "tollgate".into(),
            edge: Edge::default(),
            dynamic: None,
            extra_env_keys: Vec::new(),
            limits: None,
        }
    }
}

/// A gateway that keeps budgets or rate limits in Redis needs the limits service's cluster:
/// without it every request would go by `on_failure_allow` (refused closed here instead).
pub fn check_limits(gw: &Gateway, o: &Options) -> Result<(), String> {
    if gw.uses_fleet() && o.limits.is_none() {
        return Err(format!(
            "this configuration keeps budgets or rate limits in Redis (a quota's connection_name names a pool, or a qos/ratelimit/*/redis): give the limits service with --limits HOST:PORT (tollgate limits, docs/limits.md); a quota counted in each Envoy names \"{}\"",
            crate::limits::client::LOCAL
        ));
    }
    Ok(())
}

/// The name of the tollgate HTTP filter (and of its ECDS resource).
pub const FILTER_NAME: &str = "tollgate";
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The environment variables the VM is given: those the config references and `--env-key`s.
pub fn env_keys(doc: &Value, o: &Options) -> Vec<String> {
    let mut keys = env::referenced(doc);
    keys.extend(o.extra_env_keys.iter().cloned());
    keys.sort();
    keys.dedup();
    keys
}

/// The tollgate Wasm filter's `typed_config` (an `envoy.extensions.filters.http.wasm.v3.Wasm`).
pub fn wasm_config(config_text: &str, env_keys: &[String], o: &Options) -> Value {
    json!({
        "@type": WASM_TYPE,
        "config": {
            "name": "tollgate",
            "root_id": "tollgate",
            // Reload a VM that panicked instead of failing every later request,
            // and never skip the filter (FAIL_OPEN would bypass auth and budgets).
            "failure_policy": "FAIL_RELOAD",
            // Lets the filter hold the headers until it has read the body
            // (model routing and body translation need it).
            "allow_on_headers_stop_iteration": true,
            "vm_config": {
                "vm_id": o.vm_id,
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": o.wasm_path}},
                "environment_variables": {"host_env_keys": env_keys},
            },
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": config_text.trim_end(),
            },
        }
    })
}

impl Options {
    /// Where the filter keeps its filter state (access-log properties, the client's front
    /// door): Envoy puts a Wasm filter's under `wasm.`; the native module's keys are the
    /// property names.
    fn state_prefix(&self) -> &'static str {
        if self.native_path.is_some() {
            ""
        } else {
            "wasm."
        }
    }
}

/// The native module as the tollgate HTTP filter (`--native`). It reads provider keys from
/// Envoy's own environment; a request never reaches the upstream without the filter (a
/// module that cannot load, or a configuration it refuses, fails Envoy's start).
fn native_filter(path: &str, config_text: &str) -> Value {
    json!({
        "name": FILTER_NAME,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {
                "name": "tollgate",
                "module": {"local": {"filename": path}},
                // Never unloaded: the module keeps process-wide state (shared data,
                // per-worker caches) for the life of Envoy.
                "do_not_close": true,
            },
            "filter_name": "tollgate",
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": config_text.trim_end(),
            },
        }
    })
}

/// Every cluster the config routes to (one per backend host list), and the clusters of
/// `jwt_authn`'s remote JWKS; with the `jwt_authn` filter when an endpoint asks for it.
fn clusters_and_jwt(gw: &Gateway, o: &Options) -> (Vec<Value>, Option<Value>) {
    let mut clusters: Vec<Value> = gw
        .clusters()
        .into_iter()
        .map(|(name, hosts)| cluster(name, hosts, o))
        .collect();
    let jwt = jwt_authn(gw, &mut clusters, o);
    if let Some(limits) = &o.limits {
        clusters.push(limits_cluster(limits, o));
    }
    (clusters, jwt)
}

/// The limits service's cluster: gRPC, so HTTP/2 (cleartext, a private network or loopback).
pub(crate) fn limits_cluster((host, port): &(String, u16), o: &Options) -> Value {
    let name = crate::limits::client::CLUSTER;
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    let mut c = json!({
        "name": name,
        "type": if ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "per_connection_buffer_limit_bytes": o.edge.connection_buffer_bytes,
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
    });
    if !ip {
        c["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    c
}

/// Every cluster the config needs (for the CDS file of `--dynamic`).
pub fn clusters(gw: &Gateway, o: &Options) -> Vec<Value> {
    clusters_and_jwt(gw, o).0
}

/// An xDS config source reading `file` in `dir`, reloaded when a file is moved into `dir`
/// (`tollgate apply` writes a temporary file there and renames it: the swap is atomic).
fn file_source(dir: &str, file: &str) -> Value {
    let dir = dir.trim_end_matches('/');
    json!({
        "path_config_source": {"path": format!("{dir}/{file}"), "watched_directory": {"path": dir}},
        "resource_api_version": "V3",
    })
}

/// The route configuration's name (the bootstrap's, or RDS's resource).
const ROUTE_CONFIG: &str = "tollgate";

/// The route configuration: one virtual host; per-endpoint body limits (`max_payload`, the
/// LLM default), then a catch-all ([`routes`]).
pub fn route_config(gw: &Gateway, doc: &Value, e: &Edge) -> Value {
    json!({
        "name": ROUTE_CONFIG,
        "virtual_hosts": [{
            "name": "tollgate",
            "domains": ["*"],
            "routes": routes::routes(gw, doc, e),
        }]
    })
}

/// The RDS resource file of `--dynamic` (the routes), in its own subdirectory
/// ([`routes_dir`]).
pub const RDS_FILE: &str = "tollgate.rds.json";

/// Where `--dynamic` keeps the RDS file: a directory of its own, watched on its own. Any file
/// moved into a watched directory makes Envoy read every file source watching it again, and
/// an ECDS file read again builds the filter (a new VM) even when unchanged: routes that
/// change with an endpoint must not cost that.
pub fn routes_dir(dir: &str) -> String {
    format!("{}/routes", dir.trim_end_matches('/'))
}

/// The RDS file's content.
pub fn rds_resource(route_config: Value) -> Value {
    discovery_response(
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        vec![route_config],
    )
}

/// The ECDS resource file of `--dynamic` (the filter configuration).
pub const ECDS_FILE: &str = "tollgate.ecds.json";
/// The CDS resource file of `--dynamic` (the clusters).
pub const CDS_FILE: &str = "tollgate.cds.json";

/// Builds the bootstrap for a compiled gateway and its source document.
pub fn bootstrap(gw: &Gateway, doc: &Value, config_text: &str, o: &Options) -> Value {
    let e = &o.edge;
    let (clusters, jwt) = clusters_and_jwt(gw, o);
    let mut http_filters = Vec::new();
    let has_jwt = jwt.is_some();
    if let Some(jwt) = jwt {
        http_filters.push(jwt);
    }
    http_filters.push(match (&o.native_path, &o.dynamic) {
        (Some(path), _) => native_filter(path, config_text),
        (None, None) => json!({
            "name": FILTER_NAME,
            "typed_config": wasm_config(config_text, &env_keys(doc, o), o),
        }),
        // No default config: until the file has been read the listener is not ready, and
        // a filter config Envoy refuses (on_configure fails) leaves the previous one serving.
        (None, Some(dir)) => json!({
            "name": FILTER_NAME,
            "config_discovery": {
                "config_source": file_source(dir, ECDS_FILE),
                "type_urls": [WASM_TYPE],
            }
        }),
    });
    http_filters.push(
        json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
    );
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "tollgate",
        "codec_type": "AUTO",
        // First of all, a client's own routing header goes: only the filter picks the
        // cluster. Early header mutations run before the route is chosen and before any
        // filter (an HTTP filter removing it would come too late: jwt_authn and
        // header_mutation look the route up, and Envoy keeps that choice). The tollgate
        // filter removes it again (for hand-written bootstraps).
        // The native module's JWT payload headers go the same way: only `jwt_authn` writes
        // them (see host::native::jwt).
        "early_header_mutation_extensions": [{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": early_removals(gw, o),
            }
        }],
        // The gateway is the edge: the client is the TCP peer, and a client's own
        // X-Forwarded-For is not trusted. `source.address` (the rate-limit `ip` strategy)
        // follows this; behind a trusted load balancer set `xff_num_trusted_hops` instead.
        "use_remote_address": true,
        // Edge limits (see `Edge`): slow or idle clients cannot hold connections and streams.
        "request_headers_timeout": seconds(e.request_headers_timeout_ms),
        "request_timeout": seconds(e.request_timeout_ms),
        "stream_idle_timeout": seconds(e.stream_idle_timeout_ms),
        "max_request_headers_kb": e.max_request_headers_kb,
        "common_http_protocol_options": {
            "idle_timeout": seconds(e.idle_timeout_ms),
            // Upstreams may read `x_api_key` as `x-api-key`: such headers are refused.
            "headers_with_underscores_action": "REJECT_REQUEST",
        },
        "http2_protocol_options": {
            "max_concurrent_streams": e.max_concurrent_streams,
            "initial_stream_window_size": e.initial_stream_window_size,
            "initial_connection_window_size": e.initial_connection_window_size,
        },
        // The path is logged without its query string: a client key sent as `?key=...`
        // (auth/api-keys `query_string`) never reaches the log, not even on a 401/403 the
        // filter answered before rewriting the path.
        "access_log": [{
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"text_format_source": {"inline_string":
                    access_log_format(o.state_prefix())},
                    "formatters": [{
                        "name": "envoy.formatter.req_without_query",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"}}]}
            }
        }],
        "http_filters": http_filters,
    });
    // The routes (per-endpoint body limits, then a catch-all) follow the endpoints: with
    // `--dynamic` they come from RDS (a file, like the filter and the clusters), so that
    // `tollgate apply` can change them.
    match &o.dynamic {
        Some(dir) => {
            hcm["rds"] = json!({
                "config_source": file_source(&routes_dir(dir), RDS_FILE),
                "route_config_name": ROUTE_CONFIG,
            })
        }
        None => hcm["route_config"] = route_config(gw, doc, e),
    }
    hcm["local_reply_config"] = local_reply_shape(gw, has_jwt, o.state_prefix());
    // The native module defines its metrics with labels: no tags to cut from names.
    let tags: Vec<Value> = crate::observe::stats_tags()
        .into_iter()
        .filter(|_| o.native_path.is_none())
        .map(|(tag, regex)| json!({"tag_name": tag, "regex": regex}))
        .collect();
    let mut b = json!({
        "admin": {"address": socket(&o.admin)},
        "overload_manager": e.overload_manager(),
        // tollgate's wasm metrics carry their labels in the name; these turn them into tags.
        "stats_config": {"stats_tags": tags, "use_all_default_tags": true},
        "static_resources": {
            "listeners": [{
                "name": "tollgate",
                "address": socket(&o.listen),
                "per_connection_buffer_limit_bytes": e.connection_buffer_bytes,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}]
            }],
            "clusters": clusters,
        }
    });
    if let Some(dir) = &o.dynamic {
        b["static_resources"]["clusters"] = json!([]);
        b["dynamic_resources"] = json!({"cds_config": file_source(dir, CDS_FILE)});
        // File-based xDS needs a node identity.
        b["node"] = json!({"id": "tollgate", "cluster": "tollgate"});
    }
    if o.native_path.is_some() {
        // The native module's metrics carry Envoy's `dynamicmodulescustom.` prefix, which
        // /stats/prometheus strips only with this flag: the series are then the wasm
        // build's (`tollgate_tokens_total{...}`).
        b["layered_runtime"] = json!({"layers": [{"name": "static", "static_layer": {
            "envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix": true,
        }}]});
    }
    b
}

/// Headers removed before any filter runs: the routing header, and the native module's JWT
/// payload headers (`jwt_authn` writes them after this).
fn early_removals(gw: &Gateway, o: &Options) -> Vec<Value> {
    let mut names = vec![CLUSTER_HEADER.to_string()];
    if o.native_path.is_some() {
        names.extend(
            gw.endpoints
                .iter()
                .enumerate()
                .filter(|(_, ep)| ep.security.jwt.is_some())
                .map(|(i, _)| crate::host::native::jwt::header(&provider_name(i))),
        );
    }
    names.into_iter().map(|n| json!({ "remove": n })).collect()
}

/// The access log line: request, answer, and the filter's usage properties.
fn access_log_format(state_prefix: &str) -> String {
    let mut line = String::from(
        "[%START_TIME%] \"%REQ(:METHOD)% %REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %DURATION%ms",
    );
    for (label, property) in [
        ("provider", "tollgate_provider"),
        ("model", "tollgate_model"),
        ("tenant", "tollgate_tenant"),
        ("prompt_tokens", "tollgate_prompt_tokens"),
        ("completion_tokens", "tollgate_completion_tokens"),
        ("cost", "tollgate_cost"),
        ("estimated", "tollgate_usage_estimated"),
    ] {
        line.push_str(&format!(
            " {label}=%FILTER_STATE({state_prefix}{property}:PLAIN)%"
        ));
    }
    line.push('\n');
    line
}

/// An xDS `DiscoveryResponse` as Envoy reads it from a file: the resources and a version
/// (a hash of their content, shown by the admin's `/config_dump` and the
/// `extension_config_discovery.http_filter.tollgate.version_text` stat).
pub fn discovery_response(type_url: &str, resources: Vec<Value>) -> Value {
    let resources: Vec<Value> = resources
        .into_iter()
        .map(|mut r| {
            if let Some(m) = r.as_object_mut() {
                m.insert("@type".into(), json!(type_url));
            }
            r
        })
        .collect();
    let text = serde_json::to_string(&resources).unwrap_or_default();
    let version = format!("{:016x}", crate::support::hash::fnv1a64(text.as_bytes()));
    json!({"version_info": version, "resources": resources})
}

/// The ECDS file's content: the tollgate filter with `config_text`.
pub fn ecds_resource(config_text: &str, env_keys: &[String], o: &Options) -> Value {
    discovery_response(
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        vec![json!({"name": FILTER_NAME, "typed_config": wasm_config(config_text, env_keys, o)})],
    )
}

/// The CDS file's content.
pub fn cds_resource(clusters: Vec<Value>) -> Value {
    discovery_response(
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        clusters,
    )
}

/// Envoy's `jwt_authn` filter for endpoints with KrakenD `auth/validator` (each has a
/// JWKS: `jwk_local_path`, or `jwk_url` with a cluster added for its host). One provider per
/// endpoint ([`provider_name`]) verifies the token (signature, expiry, issuer, audiences),
/// removes it, and stores the payload in dynamic metadata under its own name, where tollgate
/// reads the claims of the endpoint it matched. Rules: one per endpoint, in the order
/// tollgate matches (most literal segments first, then configuration order), each on path
/// and method, so the first rule that matches a request is the endpoint tollgate picks and
/// the token checked is the one that endpoint requires; endpoints without `auth/validator`
/// get a rule that requires nothing. `None` when no endpoint asks for a token.
fn jwt_authn(gw: &Gateway, clusters: &mut Vec<Value>, o: &Options) -> Option<Value> {
    let mut providers = serde_json::Map::new();
    for (i, ep) in gw.endpoints.iter().enumerate() {
        let Some(rule) = &ep.security.jwt else {
            continue;
        };
        if let Some(p) = jwt_provider(rule, i, clusters, o) {
            providers.insert(provider_name(i), p);
        }
    }
    if providers.is_empty() {
        return None;
    }
    let mut order: Vec<usize> = (0..gw.endpoints.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(gw.endpoints.get(i).map_or(0, |e| e.pattern.literal_count()))
    });
    let rules: Vec<Value> = order
        .into_iter()
        .filter_map(|i| Some((i, gw.endpoints.get(i)?)))
        .map(|(i, ep)| {
            let mut m = path_match(ep.pattern.as_str());
            m["headers"] = json!([{"name": ":method", "string_match": {"exact": ep.method}}]);
            let name = provider_name(i);
            if providers.contains_key(&name) {
                json!({"match": m, "requires": {"provider_name": name}})
            } else {
                json!({"match": m})
            }
        })
        .collect();
    // `GET {prefix}/models[/{id}]` (answered by the filter when no endpoint matches) is
    // guarded like the first LLM endpoint under that prefix with authentication.
    let mut rules = rules;
    let mut seen: Vec<String> = Vec::new();
    for (i, ep) in gw.endpoints.iter().enumerate() {
        let guarded = ep.security.api_keys.is_some() || ep.security.jwt.is_some();
        let Some(m) = ep.models_path().filter(|_| ep.api.is_some() && guarded) else {
            continue;
        };
        if seen.contains(&m) {
            continue;
        }
        let name = provider_name(i);
        if providers.contains_key(&name) {
            let get = json!([{"name": ":method", "string_match": {"exact": "GET"}}]);
            for m in [json!({"path": m}), json!({"prefix": format!("{m}/")})] {
                let mut m = m;
                m["headers"] = get.clone();
                rules.push(json!({"match": m, "requires": {"provider_name": name}}));
            }
        }
        seen.push(m);
    }
    Some(json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": rules,
        }
    }))
}

/// The `jwt_authn` provider of endpoint `i`: its JWKS (a local file, or a URL whose host
/// gets a cluster), issuer and audiences; the payload goes to dynamic metadata.
fn jwt_provider(
    rule: &crate::security::claims::ClaimsRule,
    i: usize,
    clusters: &mut Vec<Value>,
    o: &Options,
) -> Option<Value> {
    let jwks = if let Some(path) = &rule.jwk_local_path {
        json!({"local_jwks": {"filename": path}})
    } else if let Some(url) = &rule.jwk_url {
        // Checked when the config was read.
        let host = crate::security::config::jwks_host(url).ok()?;
        let name = cluster_name(std::slice::from_ref(&host));
        if !clusters.iter().any(|c| c["name"] == name.as_str()) {
            clusters.push(cluster(&name, std::slice::from_ref(&host), o));
        }
        json!({"remote_jwks": {
            "http_uri": {"uri": url, "cluster": name, "timeout": "5s"},
            "cache_duration": "300s"}})
    } else {
        return None; // refused when the config was read
    };
    let name = provider_name(i);
    let mut p = jwks;
    if let Some(iss) = &rule.issuer {
        p["issuer"] = json!(iss);
    }
    if !rule.audience.is_empty() {
        p["audiences"] = json!(rule.audience);
    }
    p["forward"] = json!(false);
    p["payload_in_metadata"] = json!(name);
    if o.native_path.is_some() {
        p["forward_payload_header"] = json!(crate::host::native::jwt::header(&name));
    }
    Some(p)
}

/// An Envoy route match for a KrakenD endpoint path (`{param}` matches one segment).
fn path_match(pattern: &str) -> Value {
    if !pattern.contains('{') {
        return json!({"path": pattern});
    }
    let mut re = String::new();
    for (i, seg) in pattern.split('/').enumerate() {
        if i > 0 {
            re.push('/');
        }
        if seg.starts_with('{') && seg.ends_with('}') {
            re.push_str("[^/]+");
        } else {
            re.push_str(&regex_lite::escape(seg));
        }
    }
    json!({"safe_regex": {"regex": re}})
}

/// A CEL condition true when the request's path is a KrakenD endpoint path.
fn path_cel(pattern: &str) -> String {
    // CEL single-quoted strings: backslashes and quotes escaped.
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    match path_match(pattern).get("safe_regex") {
        Some(re) => {
            let re = re["regex"].as_str().unwrap_or_default();
            format!("request.url_path.matches({})", quote(&format!("^{re}$")))
        }
        None => format!("request.url_path == {}", quote(pattern)),
    }
}

fn socket((addr, port): &(String, u16)) -> Value {
    json!({"socket_address": {"address": addr, "port_value": port}})
}

fn cluster(name: &str, hosts: &[HostUrl], o: &Options) -> Value {
    let all_ip = hosts.iter().all(HostUrl::is_ip);
    let endpoints: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({"endpoint": {
                "address": {"socket_address": {"address": h.host, "port_value": h.port}},
                "hostname": h.authority(),
            }})
        })
        .collect();
    let mut c = json!({
        "name": name,
        "type": if all_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "10s",
        "per_connection_buffer_limit_bytes": o.edge.connection_buffer_bytes,
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    });
    if !all_ip {
        c["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    if let Some(first) = hosts.first().filter(|h| h.scheme == Scheme::Https) {
        c["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": first.host,
                "common_tls_context": {
                    "validation_context": {"trusted_ca": {"filename": o.ca_file}}
                }
            }
        });
    }
    c
}

/// Envoy's own error replies are plain text (`upstream request timeout`, `jwt_authn`'s
/// `Jwt is missing`, a reset upstream's `upstream connect error ...`); clients of an
/// OpenAI-compatible gateway expect OpenAI's error shape. These mappers rewrite every reply
/// Envoy generates itself (tollgate's own carry `x-tollgate-error: 1` and are already
/// shaped) and mark it `x-tollgate-error: envoy`. Most such replies then pass through the
/// filter, which renders LLM calls' errors in the client's API (OpenAI or Anthropic); the
/// rest reach the client as shaped here: a provider that resets after its headers (the
/// filter already held them), plain endpoints, `jwt_authn` (before the filter).
fn local_reply_shape(gw: &Gateway, jwt: bool, state_prefix: &str) -> Value {
    // First match wins. Anthropic's shape for `/v1/messages` clients (the filter marks them
    // in filter state: this reaches the replies that never pass through it; the path
    // reaches those made before the filter ran, `jwt_authn`'s, the codec's), then OpenAI's.
    // The path only where the filter did not record the front (it rewrites paths).
    let mut by_path = String::from("false");
    for ep in gw.endpoints.iter() {
        if ep.front_door() == FrontDoor::Anthropic {
            by_path = format!("{by_path} || {}", path_cel(ep.pattern.as_str()));
        }
    }
    let anthropic = format!(
        "(('{state_prefix}{FRONT_PROPERTY}' in filter_state) ? filter_state['{state_prefix}{FRONT_PROPERTY}'] == b'{ANTHROPIC_FRONT}' : ({by_path}))"
    );
    let cel = |condition: &str| {
        json!({"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": format!("{condition} && !('{ERROR_HEADER}' in response.headers)"),
            }
        }})
    };
    let mapper = |condition: &str, error: Value| {
        json!({
            "filter": cel(condition),
            "headers_to_add": [{"header": {"key": ERROR_HEADER, "value": ENVOY_REPLY}}],
            "body_format_override": {"json_format": error, "content_type": "application/json"}
        })
    };
    let anthropic_mapper = |code: &str, kind: &str| {
        let mut m = mapper(
            &format!("{anthropic} && {code}"),
            json!({"type": "error", "error": {"type": kind, "message": "%LOCAL_REPLY_BODY%"}}),
        );
        if kind == "overloaded_error" {
            // Anthropic's status for it (the SDK's OverloadedError).
            m["status_code"] = json!(crate::providers::anthropic::OVERLOADED);
        }
        m
    };
    let openai_mapper = |code: &str, kind: &str, err: &str| {
        mapper(
            code,
            json!({"error": {"message": "%LOCAL_REPLY_BODY%", "type": kind, "param": null, "code": err}}),
        )
    };
    let mut mappers = Vec::new();
    mappers.extend(mcp_mappers(gw, &mapper));
    // Anthropic's error types by status, as the filter maps provider errors.
    for (code, kind) in [
        ("response.code == 504", "timeout_error"),
        ("response.code == 503", "overloaded_error"),
        ("response.code >= 500", "api_error"),
        ("response.code == 413", "request_too_large"),
        ("response.code >= 400", "invalid_request_error"),
    ] {
        mappers.push(anthropic_mapper(code, kind));
    }
    if jwt {
        mappers.push(openai_mapper(
            "response.code == 401",
            "authentication_error",
            "invalid_token",
        ));
        mappers.push(openai_mapper(
            "response.code == 403",
            "permission_error",
            "forbidden",
        ));
    }
    mappers.push(openai_mapper(
        "response.code >= 500",
        "server_error",
        "upstream_error",
    ));
    mappers.push(openai_mapper(
        "response.code >= 400",
        "invalid_request_error",
        "invalid_request",
    ));
    json!({ "mappers": mappers })
}

/// MCP clients (of the gateway's servers, federations, relays) read JSON-RPC errors: a
/// missing or bad JWT, an oversized or cut request, by the endpoints' paths.
fn mcp_mappers(gw: &Gateway, mapper: &dyn Fn(&str, Value) -> Value) -> Vec<Value> {
    let paths: Vec<String> = gw
        .endpoints
        .iter()
        .filter(|ep| ep.mcp.is_some() || ep.relays_mcp_sessions())
        .map(|ep| path_cel(ep.pattern.as_str()))
        .collect();
    if paths.is_empty() {
        return Vec::new();
    }
    let paths = format!("({})", paths.join(" || "));
    [
        ("response.code >= 500", crate::mcp::jsonrpc::INTERNAL_ERROR),
        ("response.code >= 400", crate::mcp::jsonrpc::INVALID_REQUEST),
    ]
    .iter()
    .map(|(code, rpc)| {
        let error = json!({"jsonrpc": "2.0", "id": null,
            "error": {"code": rpc, "message": "%LOCAL_REPLY_BODY%"}});
        mapper(&format!("{paths} && {code}"), error)
    })
    .collect()
}

/// Renders the bootstrap as YAML with a real serializer (libyaml's emitter): any string,
/// the KrakenD document included, reads back as itself, whatever its indentation, quotes,
/// YAML indicators (`: `, `#`, `&`, `*`, `!`, `%`, `@`, `---`), tabs or unicode.
pub fn to_yaml(v: &Value) -> Result<String, String> {
    serde_norway::to_string(v).map_err(|e| format!("cannot write the bootstrap as YAML: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn http_filters(b: &Value) -> &Value {
        &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"]
    }

    #[test]
    fn mcp_endpoints_get_json_rpc_local_replies_first() {
        let text = r#"{"version": 3,
            "extra_config": {"ai/mcp": {"servers": [{"name": "s", "title": "S", "version": "1", "tools": []}]}},
            "endpoints": [
            {"endpoint": "/mcp", "method": "POST", "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}],
             "extra_config": {"ai/mcp": {"server_name": "s"}}},
            {"endpoint": "/relay/{team}", "method": "POST", "input_headers": ["Mcp-Session-Id"],
             "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/mcp"}]},
            {"endpoint": "/open", "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}]}]}"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let gw = Gateway::from_value(&doc, &|_| None).unwrap();
        let shape = local_reply_shape(&gw, false, "");
        let first = &shape["mappers"][0];
        let cel = first["filter"]["extension_filter"]["typed_config"]["expression"]
            .as_str()
            .unwrap();
        assert!(cel.starts_with("(request.url_path == '/mcp' || request.url_path.matches("));
        assert!(!cel.contains("/open"), "{cel}");
        let body = &first["body_format_override"]["json_format"];
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["error"]["code"], json!(-32603));
        assert_eq!(
            shape["mappers"][1]["body_format_override"]["json_format"]["error"]["code"],
            json!(-32600)
        );
        let plain: Value = serde_json::from_str(r#"{"version": 3, "endpoints": [
            {"endpoint": "/open", "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}]}]}"#).unwrap();
        let plain = Gateway::from_value(&plain, &|_| None).unwrap();
        assert!(!local_reply_shape(&plain, false, "")
            .to_string()
            .contains("jsonrpc"));
    }

    #[test]
    fn jwt_authn_only_when_an_endpoint_asks() {
        let text = r#"{"version": 3, "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}],
             "extra_config": {"auth/validator": {"alg": "RS256", "jwk_local_path": "/etc/jwks.json", "issuer": "me", "audience": ["a"], "roles": ["r"], "propagate_claims": [["sub", "x-user"]]}}},
            {"endpoint": "/t/{tenant}/x", "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}],
             "extra_config": {"auth/validator": {"alg": "RS256", "jwk_url": "https://idp.example.com/.well-known/jwks.json"}}},
            {"endpoint": "/open", "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}]}]}"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let gw = Gateway::from_value(&doc, &|_| None).unwrap();
        let b = bootstrap(&gw, &doc, text, &Options::default());
        let filters = http_filters(&b);
        assert_eq!(filters[0]["name"], "envoy.filters.http.jwt_authn");
        assert_eq!(filters[1]["name"], "tollgate");
        let cfg = &filters[0]["typed_config"];
        let p0 = &cfg["providers"]["tollgate_endpoint_0"];
        assert_eq!(p0["local_jwks"]["filename"], "/etc/jwks.json");
        assert_eq!(p0["issuer"], "me");
        assert_eq!(p0["audiences"], json!(["a"]));
        assert_eq!(p0["payload_in_metadata"], "tollgate_endpoint_0");
        assert_eq!(p0["forward"], false);
        // The payload and the claims reach tollgate through metadata only.
        assert!(p0.get("forward_payload_header").is_none());
        assert!(p0.get("claim_to_headers").is_none());
        let p1 = &cfg["providers"]["tollgate_endpoint_1"];
        assert_eq!(
            p1["remote_jwks"]["http_uri"]["cluster"],
            "tg_https_idp.example.com_443"
        );
        let method = |m: &str| json!([{"name": ":method", "string_match": {"exact": m}}]);
        assert_eq!(
            cfg["rules"],
            json!([
                {"match": {"path": "/v1/chat/completions", "headers": method("POST")},
                 "requires": {"provider_name": "tollgate_endpoint_0"}},
                {"match": {"safe_regex": {"regex": "/t/[^/]+/x"}, "headers": method("GET")},
                 "requires": {"provider_name": "tollgate_endpoint_1"}},
                {"match": {"path": "/open", "headers": method("GET")}}
            ])
        );
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        assert!(clusters
            .iter()
            .any(|c| c["name"] == "tg_https_idp.example.com_443"));
        // No auth/validator: no jwt_authn; the routing header is removed all the same.
        let plain: Value = serde_json::from_str(
            r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/"}]}]}"#,
        )
        .unwrap();
        let gw = Gateway::from_value(&plain, &|_| None).unwrap();
        let b = bootstrap(&gw, &plain, "{}", &Options::default());
        let filters = http_filters(&b);
        assert_eq!(filters[0]["name"], "tollgate");
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        assert_eq!(
            hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"],
            json!([{"remove": CLUSTER_HEADER}])
        );
    }

    /// jwt_authn checks the first rule that matches; tollgate picks the most literal
    /// endpoint of the request's method. The rules come in tollgate's order, per method, so
    /// both pick the same endpoint (and the token that endpoint requires).
    #[test]
    fn jwt_rules_follow_tollgates_match_order() {
        let be = r#"[{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}]"#;
        let jwt = |iss: &str| {
            format!(r#"{{"auth/validator": {{"jwk_local_path": "/j.json", "issuer": "{iss}"}}}}"#)
        };
        let text = format!(
            r#"{{"version": 3, "endpoints": [
            {{"endpoint": "/v1/{{x}}", "method": "POST", "backend": {be}, "extra_config": {a}}},
            {{"endpoint": "/v1/admin", "method": "POST", "backend": {be}, "extra_config": {b}}},
            {{"endpoint": "/v2/thing", "method": "GET", "backend": {be}, "extra_config": {a}}},
            {{"endpoint": "/v2/thing", "method": "POST", "backend": {be}, "extra_config": {b}}},
            {{"endpoint": "/v1/{{x}}/{{y}}", "method": "POST", "backend": {be}}},
            {{"endpoint": "/v1/public", "method": "POST", "backend": {be}}}]}}"#,
            a = jwt("A"),
            b = jwt("B")
        );
        let doc: Value = serde_json::from_str(&text).unwrap();
        let gw = Gateway::from_value(&doc, &|_| None).unwrap();
        let b = bootstrap(&gw, &doc, &text, &Options::default());
        let rules = http_filters(&b)[0]["typed_config"]["rules"].clone();
        let order: Vec<(String, String, String)> = rules
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let m = &r["match"];
                let path = m["path"]
                    .as_str()
                    .or(m["safe_regex"]["regex"].as_str())
                    .unwrap();
                let method = m["headers"][0]["string_match"]["exact"].as_str().unwrap();
                let p = r["requires"]["provider_name"].as_str().unwrap_or("-");
                (path.to_string(), method.to_string(), p.to_string())
            })
            .collect();
        let t = |p: &str, m: &str, r: &str| (p.to_string(), m.to_string(), r.to_string());
        assert_eq!(
            order,
            [
                t("/v1/admin", "POST", "tollgate_endpoint_1"),
                t("/v2/thing", "GET", "tollgate_endpoint_2"),
                t("/v2/thing", "POST", "tollgate_endpoint_3"),
                t("/v1/public", "POST", "-"),
                t("/v1/[^/]+", "POST", "tollgate_endpoint_0"),
                t("/v1/[^/]+/[^/]+", "POST", "-"),
            ]
        );
        // For each request, the first rule matching path and method is tollgate's endpoint.
        for (method, path) in [
            ("POST", "/v1/admin"),
            ("POST", "/v1/other"),
            ("POST", "/v1/public"),
            ("GET", "/v2/thing"),
            ("POST", "/v2/thing"),
            ("POST", "/v1/a/b"),
        ] {
            let candidates = gw.endpoints.iter().map(|e| (&e.pattern, e.method.as_str()));
            let (want, _) = crate::routing::find(candidates, method, path).unwrap();
            let first = order
                .iter()
                .position(|(p, m, _)| {
                    m == method
                        && regex_lite::Regex::new(&format!("^{p}$"))
                            .unwrap()
                            .is_match(path)
                })
                .unwrap();
            let name = &order[first].2;
            let expected = if gw.endpoints[want].security.jwt.is_some() {
                provider_name(want)
            } else {
                "-".to_string()
            };
            assert_eq!(name, &expected, "{method} {path}");
        }
    }

    /// Config texts YAML could misread if written naively: an indented first line (the
    /// literal block of the old hand-written writer took its indentation from it and Envoy
    /// refused the file), YAML indicators inside strings, tabs, CR, unicode, `---`, long lines.
    fn hostile_texts() -> Vec<String> {
        let base = r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/",
            "extra_config": {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "X-Note", "value": "VALUE"}}}}]}]}"#;
        let values = [
            "a: b # not a comment",
            "*alias &anchor !tag %directive @at `tick`",
            "---",
            "...",
            "- item",
            "? key",
            "| literal > folded",
            "\ttab\tinside",
            "unicode ✓ ü 漢字 \u{2028} line separator",
            "\"double\" and 'single' quotes",
            "{{ env \"SECRET_KEY\" }}",
            "trailing spaces   ",
            "null",
            "0x1F",
            "1e3",
        ];
        let mut texts = vec![];
        for v in values {
            let escaped = serde_json::to_string(v).unwrap();
            let one = base.replace("\"VALUE\"", &escaped);
            texts.push(format!("    {one}"));
            texts.push(format!("\n\n  {}", one.replace(", ", ",\n\t ")));
            texts.push(one.replace(
                "{\"version\"",
                "{ \"@comment\": \"# ---\\n  indented: yes\", \"version\"",
            ));
        }
        let long = "x".repeat(20_000);
        texts.push(base.replace("VALUE", &long));
        texts.push(format!("\r\n   {}\r\n", base.replace(", ", ",\r\n      ")));
        texts.push(format!("---\n{base}").replacen("---\n", " ", 1));
        texts
    }

    #[test]
    fn yaml_reads_back_as_the_bootstrap_for_hostile_config_texts() {
        for text in hostile_texts() {
            let doc: Value = serde_json::from_str(&text).unwrap();
            let gw = Gateway::from_value(&doc, &|_| Some("x".into())).unwrap();
            let b = bootstrap(&gw, &doc, &text, &Options::default());
            let yaml = to_yaml(&b).unwrap();
            let back: Value = serde_norway::from_str(&yaml)
                .unwrap_or_else(|e| panic!("YAML does not parse for {text:?}: {e}\n{yaml}"));
            assert_eq!(back, b, "YAML reads back differently for {text:?}");
            let cfg = &back["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                ["typed_config"]["http_filters"][0]["typed_config"]["config"];
            assert_eq!(cfg["configuration"]["value"], text.trim_end());
        }
    }

    #[test]
    fn bootstrap_has_clusters_env_keys_and_filter() {
        let text = r#"{"version": 3, "endpoints": [
            {"endpoint": "/a", "backend": [{"host": ["https://api.openai.com"], "url_pattern": "/v1",
              "extra_config": {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "Authorization", "value": "Bearer {{ env \"OPENAI_API_KEY\" }}"}}}}]},
            {"endpoint": "/b", "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}]}]}"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let gw = Gateway::from_value(&doc, &|_| Some("x".into())).unwrap();
        let b = bootstrap(&gw, &doc, text, &Options::default());
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters[0]["name"], "tg_https_api.openai.com_443");
        assert_eq!(clusters[0]["type"], "STRICT_DNS");
        assert_eq!(
            clusters[0]["transport_socket"]["typed_config"]["sni"],
            "api.openai.com"
        );
        assert_eq!(clusters[1]["type"], "STATIC");
        assert!(clusters[1].get("transport_socket").is_none());
        let wasm = &http_filters(&b)[0]["typed_config"]["config"];
        assert_eq!(
            wasm["vm_config"]["environment_variables"]["host_env_keys"],
            json!(["OPENAI_API_KEY"])
        );
        assert_eq!(wasm["failure_policy"], "FAIL_RELOAD");
        assert_eq!(wasm["configuration"]["value"], text);
    }

    /// Budgets in Redis: every bootstrap variant has the limits service's HTTP/2 cluster, and
    /// none is made without it.
    #[test]
    fn fleet_limits_need_the_limits_cluster_in_every_variant() {
        let text = r#"{"version": 3, "extra_config": {
            "redis": {"connection_pools": [{"name": "shared", "address": "127.0.0.1:6379"}]},
            "governance/processors": {"quotas": [{"name": "q", "connection_name": "shared",
                "rules": [{"name": "r", "limits": [{"amount": 1, "unit": "day"}]}]}]}},
            "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}]}]}"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let gw = Gateway::from_value(&doc, &|_| None).unwrap();
        let args =
            |extra: &[&str]| -> Vec<String> { extra.iter().map(|s| s.to_string()).collect() };
        let none = Options::from_args(&doc, &[]).unwrap();
        assert!(check_limits(&gw, &none)
            .unwrap_err()
            .contains("--limits HOST:PORT"));
        let variants = [
            args(&["--limits", "127.0.0.1:8083"]),
            args(&[
                "--limits",
                "limits.internal:8083",
                "--native",
                "/x/libtollgate.so",
            ]),
            args(&["--limits", "127.0.0.1:8083", "--dynamic", "/tmp/unused"]),
        ];
        for a in variants {
            let o = Options::from_args(&doc, &a).unwrap();
            check_limits(&gw, &o).unwrap();
            // --dynamic: the clusters come from its CDS file, which holds the same list.
            let list = if o.dynamic.is_some() {
                json!(clusters(&gw, &o))
            } else {
                bootstrap(&gw, &doc, text, &o)["static_resources"]["clusters"].clone()
            };
            let c = list
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "tollgate_limits")
                .unwrap_or_else(|| panic!("no limits cluster for {a:?}"));
            let opts = &c["typed_extension_protocol_options"]
                ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
            assert_eq!(
                opts["explicit_http_config"],
                json!({"http2_protocol_options": {}})
            );
            let port = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                ["address"]["socket_address"];
            assert_eq!(port["port_value"], 8083);
            let dns = port["address"] == "limits.internal";
            assert_eq!(c["type"], if dns { "STRICT_DNS" } else { "STATIC" });
        }
        // An IPv6 address loses its brackets; no empty host, port 0 or stray characters.
        let o = Options::from_args(&doc, &args(&["--limits", "[::1]:8083"])).unwrap();
        assert_eq!(o.limits, Some(("::1".to_string(), 8083)));
        for bad in [
            ":8083",
            "limits:0",
            "limits",
            "a b:8083",
            "x\ny:1",
            "[::1:8083",
        ] {
            let e = Options::from_args(&doc, &args(&["--limits", bad])).unwrap_err();
            assert!(e.starts_with("--limits "), "{bad}: {e}");
        }
        // A per-Envoy quota needs no service.
        let local = text.replace(
            "\"connection_name\": \"shared\"",
            "\"connection_name\": \"per-envoy\"",
        );
        let doc: Value = serde_json::from_str(&local).unwrap();
        let gw = Gateway::from_value(&doc, &|_| None).unwrap();
        assert!(!gw.uses_fleet());
        check_limits(&gw, &none).unwrap();
    }
}
