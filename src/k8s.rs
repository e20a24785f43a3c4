//! Kubernetes manifests (`tollgate k8s KRAKEND.json --flavor envoy-gateway|istio`) that load
//! the tollgate filter where a control plane manages Envoy. Host-only; not part of the .wasm.
//!
//! The routing model: tollgate picks a backend by setting the routing header
//! ([`CLUSTER_HEADER`]) to the backend's cluster name and rewriting `:authority` and `:path`;
//! Envoy then matches the route again (a header change clears the route cache). Under a
//! control plane the route table is not tollgate's, so the manifests add one route per
//! tollgate cluster that matches the routing header (and removes it before the request goes
//! upstream) and sends the request to that backend (Envoy Gateway `Backend`; Istio
//! `ServiceEntry` + `DestinationRule`), plus a catch-all route on which the filter runs first
//! (it answers what it refuses, and routes the rest by the header).
//!
//! Secrets: every `{{ env "X" }}` the config references is passed to the VM from the proxy's
//! environment (Envoy Gateway `env.hostKeys`, Istio `vmConfig.env` `valueFrom: HOST`), and the
//! proxy's environment gets it from the Kubernetes Secret named by `--secret` (Envoy Gateway:
//! `EnvoyProxy` container env `secretKeyRef`; Istio: the gateway Deployment, see
//! docs/operations.md). No secret value is ever written here.
//!
//! Budgets and rate limits kept in Redis: the limits service runs as a Deployment (`tollgate
//! limits`, from the tools image `--limits-image`, the KrakenD document in a ConfigMap, the
//! Redis credentials it references from the Secret) behind a Service, and an
//! `EnvoyPatchPolicy` (Envoy Gateway) or `EnvoyFilter` (Istio) adds the filter's HTTP/2 cluster
//! to it ([`limits`]). Redis is the user's, at the addresses of the `redis` namespace.
//!
//! Refused (fail closed): `auth/validator` (the bootstrap's `jwt_authn` has no counterpart
//! here yet; a config that expects verified claims would run without them).

use crate::config::{env, Gateway};
use crate::routing::{HostUrl, Scheme, CLUSTER_HEADER};
use serde_json::{json, Value};

/// Which control plane loads the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    EnvoyGateway,
    Istio,
}

/// `tollgate k8s` options.
#[derive(Debug, Clone)]
pub struct Options {
    pub flavor: Flavor,
    /// The OCI image of the .wasm (`make oci`), as `registry/repository:tag`.
    pub image: String,
    pub namespace: String,
    /// The Gateway the routes attach to (Envoy Gateway: a Gateway API `Gateway`; Istio: an
    /// Istio `Gateway`), in `namespace`.
    pub gateway: String,
    /// Envoy Gateway: the Gateway's listener (for the patch that lets the filter hold the
    /// headers until it has read the body).
    pub listener: String,
    /// Envoy Gateway: the xDS name of that listener when it is not Envoy Gateway's default
    /// `<namespace>/<gateway>/<listener>` (with its `XDSNameSchemeV2` runtime flag: `tcp-<port>`).
    pub xds_listener: Option<String>,
    /// The Kubernetes Secret holding the environment variables the config references.
    pub secret: String,
    /// Istio: the labels of the gateway pods the plugin is loaded into.
    pub selector: String,
    /// The image holding the `tollgate` binary (the Dockerfile's `tools` stage), for the
    /// limits service.
    pub limits_image: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            flavor: Flavor::EnvoyGateway,
            image: format!(
                "registry.example.com/tollgate:{}",
                env!("CARGO_PKG_VERSION")
            ),
            namespace: "tollgate".into(),
            gateway: "tollgate".into(),
            listener: "http".into(),
            xds_listener: None,
            secret: "tollgate-secrets".into(),
            selector: "istio=ingressgateway".into(),
            limits_image: format!(
                "registry.example.com/tollgate-tools:{}",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

pub const USAGE: &str = "--flavor envoy-gateway|istio [--image REGISTRY/REPO:TAG] [--namespace NS]
                 [--gateway NAME] [--listener NAME] [--xds-listener NAME] [--secret NAME]
                 [--selector KEY=VALUE] [--limits-image REGISTRY/REPO:TAG]";

impl Options {
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut o = Options::default();
        let mut flavor = None;
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .ok_or(format!("{flag} needs a value\n{USAGE}"))?
                .clone();
            match flag.as_str() {
                "--flavor" => {
                    flavor = Some(match value.as_str() {
                        "envoy-gateway" => Flavor::EnvoyGateway,
                        "istio" => Flavor::Istio,
                        _ => return Err(format!("--flavor {value}: envoy-gateway or istio")),
                    })
                }
                "--image" => o.image = value.trim_start_matches("oci://").to_string(),
                "--namespace" => o.namespace = value,
                "--gateway" => o.gateway = value,
                "--listener" => o.listener = value,
                "--xds-listener" => o.xds_listener = Some(value),
                "--secret" => o.secret = value,
                "--selector" => o.selector = value,
                "--limits-image" => o.limits_image = value,
                _ => return Err(format!("unknown option {flag}\n{USAGE}")),
            }
        }
        o.flavor = flavor.ok_or(format!("--flavor is required\n{USAGE}"))?;
        for (name, v) in [
            ("--namespace", &o.namespace),
            ("--gateway", &o.gateway),
            ("--secret", &o.secret),
        ] {
            if !is_dns_label(v) {
                return Err(format!(
                    "{name} {v}: not a Kubernetes name (lowercase letters, digits, '-')"
                ));
            }
        }
        if !o.selector.contains('=') {
            return Err(format!("--selector {}: expected KEY=VALUE", o.selector));
        }
        Ok(o)
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes name for a tollgate cluster name (`tg_https_api.openai.com_443` →
/// `tg-https-api-openai-com-443`), at most 63 characters (longer ones end in a hash).
pub fn k8s_name(cluster: &str) -> String {
    let mut s: String = cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-').to_string();
    if s.len() <= 63 {
        return s;
    }
    let hash = format!(
        "{:08x}",
        crate::support::hash::fnv1a64(cluster.as_bytes()) & 0xffff_ffff
    );
    format!(
        "{}-{hash}",
        s.get(..54).unwrap_or_default().trim_end_matches('-')
    )
}

fn metadata(name: &str, o: &Options) -> Value {
    json!({"name": name, "namespace": o.namespace, "labels": {"app.kubernetes.io/part-of": "tollgate"}})
}

/// What the control plane must allow for the manifests (a line of the output's header).
pub fn requirements(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::EnvoyGateway => "Envoy Gateway with extensionApis.enableBackend and enableEnvoyPatchPolicy (the patch lets the filter hold the headers until it has read the body).",
        Flavor::Istio => "A gateway Envoy of 1.35 or later; istio-agent pulls the image without a pull secret (an EnvoyFilter names none).",
    }
}

/// The manifests, in the order to apply them.
pub fn manifests(gw: &Gateway, doc: &Value, o: &Options) -> Result<Vec<Value>, String> {
    if let Some(i) = gw.endpoints.iter().position(|e| e.security.jwt.is_some()) {
        return Err(format!(
            "$.endpoints[{i}].extra_config.auth/validator: not supported by tollgate k8s (the control plane's JWT validation is not wired to tollgate's claims yet); refused"
        ));
    }
    let keys = env::referenced(doc);
    let clusters = gw.clusters();
    let mut out = match o.flavor {
        Flavor::EnvoyGateway => envoy_gateway(doc, &keys, &clusters, o),
        Flavor::Istio => istio(doc, &keys, &clusters, o),
    };
    if gw.uses_fleet() {
        out.extend(limits(doc, o)?);
    }
    Ok(out)
}

/// The limits service's name (Deployment, Service, ConfigMap) and port.
pub const LIMITS: &str = "tollgate-limits";
pub const LIMITS_PORT: u16 = 8083;

/// Redis-backed limits: the limits service (ConfigMap with the document, Deployment,
/// Service) and the filter's cluster to it (HTTP/2, the same cluster `tollgate envoy --limits`
/// writes; Envoy Gateway: an `EnvoyPatchPolicy`, Istio: an `EnvoyFilter`). The service gets
/// only the Secret's keys the `redis` namespace references.
fn limits(doc: &Value, o: &Options) -> Result<Vec<Value>, String> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    let labels = json!({"app.kubernetes.io/name": LIMITS, "app.kubernetes.io/part-of": "tollgate"});
    let mut pod_labels = labels.clone();
    if o.flavor == Flavor::Istio {
        // The gateway's cluster speaks plain h2c to it (no Istio mTLS): no sidecar.
        pod_labels["sidecar.istio.io/inject"] = json!("false");
    }
    let redis = doc
        .get("extra_config")
        .and_then(|e| e.get("redis"))
        .unwrap_or(&Value::Null);
    let env: Vec<Value> = env::referenced(redis)
        .iter()
        .map(|k| json!({"name": k, "valueFrom": {"secretKeyRef": {"name": o.secret, "key": k}}}))
        .collect();
    let host = format!("{LIMITS}.{}.svc.cluster.local", o.namespace);
    let cluster = crate::envoy::limits_cluster(&(host, LIMITS_PORT), &Default::default());
    let container = json!({
        "name": "limits",
        "image": o.limits_image,
        "command": ["tollgate", "limits", "/etc/tollgate/krakend.json", "--listen", format!("0.0.0.0:{LIMITS_PORT}")],
        "ports": [{"name": "grpc", "containerPort": LIMITS_PORT}],
        "env": env,
        "readinessProbe": {"tcpSocket": {"port": LIMITS_PORT}, "periodSeconds": 5},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/tollgate", "readOnly": true}],
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
    });
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(LIMITS, o),
               "data": {"krakend.json": text}}),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(LIMITS, o),
            "spec": {
                // Stateless (every counter is in Redis): replicas share nothing.
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": pod_labels}, "spec": {
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": LIMITS}}],
                }},
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": metadata(LIMITS, o),
            "spec": {"selector": labels, "ports": [{"name": "grpc", "port": LIMITS_PORT,
                     "targetPort": LIMITS_PORT, "appProtocol": "kubernetes.io/h2c"}]},
        }),
        limits_cluster(cluster, o),
    ])
}

/// The filter's cluster to the limits service, added where the control plane builds Envoy's.
fn limits_cluster(cluster: Value, o: &Options) -> Value {
    match o.flavor {
        Flavor::EnvoyGateway => json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyPatchPolicy",
            "metadata": metadata("tollgate-limits-cluster", o),
            "spec": {
                "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": o.gateway},
                "type": "JSONPatch",
                "jsonPatches": [{
                    "type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                    "name": crate::limits::client::CLUSTER,
                    // An empty path adds the whole resource.
                    "operation": {"op": "add", "path": "", "value": cluster},
                }],
            },
        }),
        Flavor::Istio => {
            let (label, value) = o
                .selector
                .split_once('=')
                .unwrap_or(("istio", "ingressgateway"));
            json!({
                "apiVersion": "networking.istio.io/v1alpha3",
                "kind": "EnvoyFilter",
                "metadata": metadata("tollgate-limits-cluster", o),
                "spec": {
                    "workloadSelector": {"labels": {label: value}},
                    "configPatches": [{
                        "applyTo": "CLUSTER",
                        "match": {"context": "GATEWAY"},
                        "patch": {"operation": "ADD", "value": cluster},
                    }],
                },
            })
        }
    }
}

/// The routing header match of one tollgate cluster.
fn header_value(cluster: &str) -> Value {
    json!(cluster)
}

fn envoy_gateway(
    doc: &Value,
    keys: &[String],
    clusters: &[(&str, &[HostUrl])],
    o: &Options,
) -> Vec<Value> {
    let mut out = Vec::new();
    let env: Vec<Value> = keys
        .iter()
        .map(|k| json!({"name": k, "valueFrom": {"secretKeyRef": {"name": o.secret, "key": k}}}))
        .collect();
    // The Gateway's proxies get the secrets as environment variables (reference this
    // EnvoyProxy from the Gateway's `spec.infrastructure.parametersRef`).
    out.push(json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyProxy",
        "metadata": metadata("tollgate", o),
        "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
            "envoyDeployment": {"container": {"env": env}}}}},
    }));
    for (name, hosts) in clusters {
        let endpoints: Vec<Value> = hosts
            .iter()
            .map(|h| {
                if h.is_ip() {
                    json!({"ip": {"address": h.host, "port": h.port}})
                } else {
                    json!({"fqdn": {"hostname": h.host, "port": h.port}})
                }
            })
            .collect();
        let mut spec = json!({"endpoints": endpoints});
        if let Some(first) = hosts.first().filter(|h| h.scheme == Scheme::Https) {
            spec["tls"] = json!({"wellKnownCACertificates": "System", "sni": first.host});
        }
        out.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": metadata(&k8s_name(name), o),
            "spec": spec,
        }));
    }
    let mut rules: Vec<Value> = clusters
        .iter()
        .map(|(name, hosts)| {
            json!({
                "matches": [{
                    "path": {"type": "PathPrefix", "value": "/"},
                    "headers": [{"type": "Exact", "name": CLUSTER_HEADER, "value": header_value(name)}],
                }],
                "filters": [{"type": "RequestHeaderModifier",
                             "requestHeaderModifier": {"remove": [CLUSTER_HEADER]}}],
                "backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend",
                                 "name": k8s_name(name), "port": hosts.first().map_or(80, |h| h.port)}],
            })
        })
        .collect();
    // Every request starts here: the filter runs on this route, answers what it refuses and
    // sets the routing header on the rest (then Envoy matches one of the rules above).
    rules.push(json!({"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}));
    out.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata("tollgate", o),
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": o.gateway}],
            "rules": rules,
        },
    }));
    out.push(json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": metadata("tollgate", o),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "tollgate"}],
            "wasm": [{
                "name": "tollgate",
                "rootID": "tollgate",
                "code": {"type": "Image", "image": {"url": o.image}},
                "config": doc,
                "env": {"hostKeys": keys},
                // Never skip the filter: that would bypass auth and budgets.
                "failOpen": false,
            }],
        },
    }));
    // tollgate holds the request headers until it has read the body (routing by model, body
    // translation): Envoy's Wasm filter needs allow_on_headers_stop_iteration for that, which
    // EnvoyExtensionPolicy does not expose (measured: without it such requests hang).
    // Envoy Gateway puts the policy's Wasm filter inline in the listener's HCM, with the
    // policy's wasm `name` as the plugin name, and patches the listener as snake_case JSON
    // (sources in docs/operations.md); the JSONPath selects that filter wherever the HCM is.
    let listener = o
        .xds_listener
        .clone()
        .unwrap_or(format!("{}/{}/{}", o.namespace, o.gateway, o.listener));
    out.push(json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyPatchPolicy",
        "metadata": metadata("tollgate-hold-headers", o),
        "spec": {
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": o.gateway},
            "type": "JSONPatch",
            "jsonPatches": [{
                "type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": listener,
                "operation": {
                    "op": "add",
                    "jsonPath": "$..http_filters[?(@.typed_config.config.name=='tollgate')].typed_config.config",
                    "path": "/allow_on_headers_stop_iteration",
                    "value": true,
                },
            }],
        },
    }));
    out
}

fn istio(doc: &Value, keys: &[String], clusters: &[(&str, &[HostUrl])], o: &Options) -> Vec<Value> {
    let mut out = Vec::new();
    let (label, value) = o
        .selector
        .split_once('=')
        .unwrap_or(("istio", "ingressgateway"));
    out.push(envoy_filter(doc, keys, (label, value), o));
    let mut routes = Vec::new();
    for (name, hosts) in clusters {
        let external: Vec<&HostUrl> = hosts
            .iter()
            .filter(|h| !h.host.ends_with(".svc.cluster.local") && !h.host.ends_with(".svc"))
            .collect();
        let Some(first) = hosts.first() else { continue };
        let port = first.port;
        if !external.is_empty() {
            let mut se = json!({
                "hosts": [first.host],
                "location": "MESH_EXTERNAL",
                // Plain HTTP from Envoy's view: the DestinationRule originates TLS.
                "ports": [{"number": port, "name": format!("http-{port}"), "protocol": "HTTP"}],
                "resolution": if first.is_ip() { "STATIC" } else { "DNS" },
            });
            if hosts.len() > 1 || first.is_ip() {
                se["endpoints"] = json!(hosts
                    .iter()
                    .map(|h| json!({"address": h.host, "ports": {format!("http-{port}"): h.port}}))
                    .collect::<Vec<_>>());
            }
            out.push(json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "ServiceEntry",
                "metadata": metadata(&k8s_name(name), o),
                "spec": se,
            }));
        }
        if first.scheme == Scheme::Https {
            out.push(json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": metadata(&k8s_name(name), o),
                "spec": {
                    "host": first.host,
                    "trafficPolicy": {"tls": {"mode": "SIMPLE", "sni": first.host}},
                },
            }));
        }
        routes.push(json!({
            "name": k8s_name(name),
            "match": [{"headers": {CLUSTER_HEADER: {"exact": header_value(name)}}}],
            "headers": {"request": {"remove": [CLUSTER_HEADER]}},
            "route": [{"destination": {"host": first.host, "port": {"number": port}}}],
        }));
    }
    // The filter answers every request it does not route; this answers what it did not see.
    routes.push(json!({
        "name": "tollgate-unrouted",
        "directResponse": {"status": 404, "body": {"string": "{\"error\":{\"message\":\"no route\",\"type\":\"invalid_request_error\"}}"}},
    }));
    out.push(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata("tollgate", o),
        "spec": {"hosts": ["*"], "gateways": [o.gateway], "http": routes},
    }));
    out
}

/// Istio: the filter as an `EnvoyFilter` (not a `WasmPlugin`, which cannot set the Wasm
/// filter's `allow_on_headers_stop_iteration`, and whose config an `EXTENSION_CONFIG` patch
/// cannot change: istiod applies only ADD to extension configs). Two patches, the way Istio
/// distributes Wasm through ECDS: the complete filter config as an extension config named
/// `<namespace>.tollgate`, with the module's OCI image as its remote code (istio-agent
/// downloads it and hands Envoy a local file, as for a WasmPlugin), and an HTTP filter that
/// loads that config by ECDS, inserted before the router (where a WasmPlugin lands).
/// Sources in docs/operations.md ("Istio").
fn envoy_filter(doc: &Value, keys: &[String], (label, value): (&str, &str), o: &Options) -> Value {
    let name = ecds_name(o);
    let mut wasm =
        crate::envoy::wasm_config(&doc.to_string(), keys, &crate::envoy::Options::default());
    wasm["config"]["vm_config"]["code"] = json!({"remote": {
        // istiod's own form for a WasmPlugin's module: the agent fetches it (so no cluster:
        // `_`), and "nil" is istiod's placeholder for "no checksum" that the agent clears.
        "http_uri": {"uri": format!("oci://{}", o.image), "cluster": "_", "timeout": "30s"},
        "sha256": "nil",
    }});
    let gateway = json!({"context": "GATEWAY"});
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("tollgate", o),
        "spec": {
            "workloadSelector": {"labels": {label: value}},
            "configPatches": [
                {
                    "applyTo": "EXTENSION_CONFIG",
                    "match": gateway,
                    "patch": {"operation": "ADD", "value": {"name": name, "typed_config": wasm}},
                },
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {
                        "name": "envoy.filters.network.http_connection_manager",
                        "subFilter": {"name": "envoy.filters.http.router"}}}}},
                    "patch": {"operation": "INSERT_BEFORE", "value": {
                        "name": name,
                        "config_discovery": {
                            // Like istiod's own ECDS filters: the proxy waits for the config
                            // (no request passes without the filter), and accepts the deny-all
                            // RBAC filter istio-agent sends instead when the module cannot be
                            // fetched (fail closed).
                            "config_source": {"ads": {}, "initial_fetch_timeout": "0s"},
                            "type_urls": [
                                "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                            ],
                        },
                    }},
                },
            ],
        },
    })
}

/// The name of the Istio ECDS resource (and HTTP filter): namespace-qualified, as istiod names
/// a WasmPlugin's (extension config names are not namespaced in Envoy).
pub fn ecds_name(o: &Options) -> String {
    format!("{}.tollgate", o.namespace)
}

/// Multi-document YAML with a header comment.
pub fn to_yaml(docs: &[Value], header: &str) -> Result<String, String> {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
    for d in docs {
        out.push_str("---\n");
        out.push_str(&crate::envoy::to_yaml(d)?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kubernetes_names() {
        assert_eq!(
            k8s_name("tg_https_api.openai.com_443"),
            "tg-https-api-openai-com-443"
        );
        let long = format!("tg_https_{}.example.com_443", "a".repeat(80));
        let n = k8s_name(&long);
        assert!(n.len() <= 63 && is_dns_label(&n), "{n}");
        assert_ne!(n, k8s_name(&long.replace("443", "444")));
    }

    #[test]
    fn options_refuse_bad_names_and_need_a_flavor() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(Options::from_args(&args("--image x")).is_err());
        assert!(Options::from_args(&args("--flavor nginx")).is_err());
        assert!(Options::from_args(&args("--flavor istio --namespace Bad_Name")).is_err());
        let o = Options::from_args(&args("--flavor istio --image oci://r.io/t:1")).unwrap();
        assert_eq!((o.flavor, o.image.as_str()), (Flavor::Istio, "r.io/t:1"));
    }

    #[test]
    fn the_patch_policy_names_the_xds_listener() {
        let text = r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["https://x.example.com"], "url_pattern": "/"}]}]}"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let gw = Gateway::from_value(&doc, &|_| None).unwrap();
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let name = |a: &str| {
            let o = Options::from_args(&args(a)).unwrap();
            let docs = manifests(&gw, &doc, &o).unwrap();
            let p = docs
                .iter()
                .find(|d| d["kind"] == "EnvoyPatchPolicy")
                .unwrap();
            p["spec"]["jsonPatches"][0]["name"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            name("--flavor envoy-gateway --listener web"),
            "tollgate/tollgate/web"
        );
        assert_eq!(
            name("--flavor envoy-gateway --xds-listener tcp-80"),
            "tcp-80"
        );
    }

    #[test]
    fn istio_loads_the_filter_by_ecds_holding_the_headers() {
        let text = r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["https://x.example.com"], "url_pattern": "/"}]}]}"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let gw = Gateway::from_value(&doc, &|_| None).unwrap();
        let o = Options {
            flavor: Flavor::Istio,
            namespace: "ai".into(),
            ..Options::default()
        };
        let docs = manifests(&gw, &doc, &o).unwrap();
        assert!(docs.iter().all(|d| d["kind"] != "WasmPlugin"));
        let ef = docs.iter().find(|d| d["kind"] == "EnvoyFilter").unwrap();
        let (ext, http) = (
            &ef["spec"]["configPatches"][0],
            &ef["spec"]["configPatches"][1],
        );
        assert_eq!(ext["patch"]["value"]["name"], "ai.tollgate");
        assert_eq!(http["patch"]["value"]["name"], "ai.tollgate");
        let config = &ext["patch"]["value"]["typed_config"]["config"];
        assert_eq!(config["allow_on_headers_stop_iteration"], true);
        assert_eq!(
            config["vm_config"]["code"]["remote"]["http_uri"]["uri"],
            format!("oci://{}", o.image)
        );
        let plugin: Value =
            serde_json::from_str(config["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(plugin, doc);
    }

    #[test]
    fn jwt_configs_are_refused() {
        let text = r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["https://x.example.com"], "url_pattern": "/"}],
            "extra_config": {"auth/validator": {"alg": "RS256", "jwk_local_path": "/j.json"}}}]}"#;
        let doc: Value = serde_json::from_str(text).unwrap();
        let gw = Gateway::from_value(&doc, &|_| None).unwrap();
        let e = manifests(&gw, &doc, &Options::default()).unwrap_err();
        assert!(
            e.starts_with("$.endpoints[0].extra_config.auth/validator"),
            "{e}"
        );
    }
}
