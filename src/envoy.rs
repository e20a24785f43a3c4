//! Envoy bootstrap generation (`tollgate envoy krakend.json`): a listener whose single
//! route sends each request to the cluster named by the filter's routing header, the
//! tollgate Wasm filter carrying the KrakenD document, and one cluster per backend host
//! list (TLS with SNI for https hosts). Host-only; not part of the .wasm.

use crate::config::{env, Gateway};
use crate::routing::{HostUrl, Scheme, CLUSTER_HEADER};
use serde_json::{json, Value};

/// Bootstrap settings that differ between a local run and a container.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: (String, u16),
    pub admin: (String, u16),
    pub wasm_path: String,
    pub ca_file: String,
    /// Envoy worker threads are set on the command line; this only names the VM.
    pub vm_id: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: ("127.0.0.1".into(), 8080),
            admin: ("127.0.0.1".into(), 9901),
            wasm_path: "target/wasm32-wasip1/release/tollgate.wasm".into(),
            ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
            vm_id: "tollgate".into(),
        }
    }
}

/// Builds the bootstrap for a compiled gateway and its source document.
pub fn bootstrap(gw: &Gateway, doc: &Value, config_text: &str, o: &Options) -> Value {
    let env_keys = env::referenced(doc);
    let wasm_filter = json!({
        "name": "tollgate",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
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
        }
    });
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "tollgate",
        "codec_type": "AUTO",
        "access_log": [{
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"text_format_source": {"inline_string":
                    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %DURATION%ms provider=%FILTER_STATE(wasm.tollgate_provider:PLAIN)% model=%FILTER_STATE(wasm.tollgate_model:PLAIN)% tenant=%FILTER_STATE(wasm.tollgate_tenant:PLAIN)% prompt_tokens=%FILTER_STATE(wasm.tollgate_prompt_tokens:PLAIN)% completion_tokens=%FILTER_STATE(wasm.tollgate_completion_tokens:PLAIN)% cost=%FILTER_STATE(wasm.tollgate_cost:PLAIN)% estimated=%FILTER_STATE(wasm.tollgate_usage_estimated:PLAIN)%\n"}}
            }
        }],
        "route_config": {
            "name": "tollgate",
            "virtual_hosts": [{
                "name": "tollgate",
                "domains": ["*"],
                "routes": [{
                    "match": {"prefix": "/"},
                    "route": {
                        "cluster_header": CLUSTER_HEADER,
                        // LLM answers are slow; endpoints with a KrakenD `timeout`
                        // override this per request.
                        "timeout": "600s",
                        "auto_host_rewrite": true,
                    },
                    "request_headers_to_remove": [CLUSTER_HEADER],
                }]
            }]
        },
        "http_filters": [
            wasm_filter,
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        ]
    });
    let clusters: Vec<Value> = gw
        .clusters()
        .into_iter()
        .map(|(name, hosts)| cluster(name, hosts, o))
        .collect();
    let tags: Vec<Value> = crate::observe::stats_tags()
        .into_iter()
        .map(|(tag, regex)| json!({"tag_name": tag, "regex": regex}))
        .collect();
    json!({
        "admin": {"address": socket(&o.admin)},
        // tollgate metrics carry their labels in the name; these turn them into tags.
        "stats_config": {"stats_tags": tags, "use_all_default_tags": true},
        "static_resources": {
            "listeners": [{
                "name": "tollgate",
                "address": socket(&o.listen),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}]
            }],
            "clusters": clusters,
        }
    })
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

/// Renders JSON as block-style YAML (strings quoted only when YAML would misread them;
/// multi-line strings as literal blocks).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    write_node(v, 0, &mut out);
    out
}

fn write_node(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                out.push_str(&pad);
                out.push_str(&scalar_str(k));
                out.push(':');
                write_child(val, indent, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // First key on the dash line, the rest aligned under it.
                        let mut first = true;
                        for (k, val) in m {
                            if first {
                                out.push(' ');
                                first = false;
                            } else {
                                out.push_str(&pad);
                                out.push_str("  ");
                            }
                            out.push_str(&scalar_str(k));
                            out.push(':');
                            write_child(val, indent + 2, out);
                        }
                    }
                    other => write_child(other, indent, out),
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// Writes what follows `key:` or `-`.
fn write_child(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_node(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_node(v, indent + 2, out);
        }
        Value::String(s) if s.contains('\n') => {
            out.push_str(" |-\n");
            let pad = " ".repeat(indent + 2);
            for line in s.lines() {
                if !line.is_empty() {
                    out.push_str(&pad);
                }
                out.push_str(line);
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::String(s) => scalar_str(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// A string as a YAML scalar: plain when unambiguous, else JSON-quoted (valid YAML).
fn scalar_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./@+".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '_')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_shapes() {
        let v = json!({"a": [{"b": 1, "c": "x y"}, "s", []], "d": {}, "e": "line1\nline2", "f": "true", "g": "@type"});
        assert_eq!(
            to_yaml(&v),
            "a:\n  - b: 1\n    c: \"x y\"\n  - s\n  - []\nd: {}\ne: |-\n  line1\n  line2\nf: \"true\"\ng: @type\n"
                .replace("g: @type", "g: \"@type\"")
        );
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
        let wasm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"][0]["typed_config"]["config"];
        assert_eq!(
            wasm["vm_config"]["environment_variables"]["host_env_keys"],
            json!(["OPENAI_API_KEY"])
        );
        assert_eq!(wasm["failure_policy"], "FAIL_RELOAD");
        assert_eq!(wasm["configuration"]["value"], text);
    }
}
