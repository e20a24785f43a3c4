use super::*;
use serde_json::{json, Value};

fn env(name: &str) -> Option<String> {
    (name == "OPENAI_API_KEY").then(|| "sk-test-123".to_string())
}

fn compile(v: Value) -> std::result::Result<Gateway, String> {
    Gateway::from_value(&v, &env).map_err(|e| e.to_string())
}

fn seed() -> Value {
    json!({
        "version": 3,
        "$schema": "https://www.krakend.io/schema/krakend.json",
        "host": ["localhost:8080"],
        "echo_endpoint": true,
        "timeout": "30s",
        "endpoints": [{
            "endpoint": "/llm/openai",
            "method": "POST",
            "backend": [{
                "host": ["https://api.openai.com"],
                "url_pattern": "/v1/chat/completions",
                "extra_config": {"modifier/martian": {"header.Modifier": {
                    "scope": ["request"], "name": "Authorization", "value": "Bearer {{ env \"OPENAI_API_KEY\" }}"}}}
            }]
        }]
    })
}

#[test]
fn seed_example_compiles() {
    // The seed's service-level host is "localhost:8080" (no scheme) in KrakenD's quick start;
    // tollgate needs a scheme there, so the valid seed variant drops it.
    let mut doc = seed();
    doc.as_object_mut().unwrap().remove("host");
    let g = compile(doc).unwrap();
    assert_eq!(g.endpoints.len(), 1);
    let ep = &g.endpoints[0];
    assert_eq!(
        (ep.method.as_str(), ep.pattern.as_str(), ep.timeout_ms),
        ("POST", "/llm/openai", Some(30_000))
    );
    assert_eq!(ep.backends[0].cluster, "tg_https_api.openai.com_443");
    assert_eq!(ep.backends[0].authority(), "api.openai.com");
    assert_eq!(
        ep.backends[0].modifiers.request,
        vec![HeaderOp::Set {
            name: "authorization".into(),
            value: HeaderValue("Bearer sk-test-123".into())
        }]
    );
    assert_eq!(
        g.warnings,
        vec!["$.echo_endpoint: KrakenD server setting, not used inside Envoy; ignored"]
    );
    assert!(!format!("{g:?}").contains("sk-test-123"));
}

#[test]
fn service_host_is_the_default_backend_host() {
    let g = compile(
        json!({"version": 3, "host": ["http://127.0.0.1:9000"], "endpoints": [
        {"endpoint": "/a/{id}", "backend": [{"url_pattern": "/b/{id}", "method": "POST"}]}]}),
    )
    .unwrap();
    let b = &g.endpoints[0].backends[0];
    assert_eq!(
        (b.authority().as_str(), b.method.as_deref()),
        ("127.0.0.1:9000", Some("POST"))
    );
    assert_eq!(g.endpoints[0].method, "GET");
}

#[test]
fn unknown_namespaces_warn_once_each() {
    let g = compile(json!({"version": 3, "extra_config": {"telemetry/logging": {}}, "endpoints": [
        {"endpoint": "/a", "extra_config": {"qos/ratelimit/proxy": {"max_rate": 1}, "@c": "x"}, "backend": [
            {"host": ["http://h"], "url_pattern": "/", "extra_config": {"backend/http": {}}}]}]}))
    .unwrap();
    let mut w = g.warnings.clone();
    w.sort();
    assert_eq!(w, vec![
        "$.endpoints[0].backend[0].extra_config.backend/http: namespace not supported by tollgate; ignored",
        "$.endpoints[0].extra_config.qos/ratelimit/proxy: namespace not supported by tollgate; ignored",
        "$.extra_config.telemetry/logging: namespace not supported by tollgate; ignored",
    ]);
    assert_eq!(g.warnings.len(), 3);
}

#[test]
fn reject_paths_name_the_json_path() {
    let ep = |e: Value| json!({"version": 3, "endpoints": [e]});
    let be = |b: Value| ep(json!({"endpoint": "/a/{x}", "backend": [b]}));
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "$: expected an object, found an array"),
        (json!({"endpoints": []}), "$.version: is required and must be 3"),
        (json!({"version": 2, "endpoints": []}), "$.version: must be 3 (KrakenD configuration version 3)"),
        (json!({"version": 3}), "$.endpoints: is required"),
        (json!({"version": 3, "endpoints": [], "typo": 1}), "$.typo: unknown field"),
        (json!({"version": 3, "endpoints": {}}), "$.endpoints: expected an array, found an object"),
        (json!({"version": 3, "timeout": "2 secs", "endpoints": []}),
         "$.timeout: \"2 secs\" is not a duration (examples: 500ms, 30s, 2m, 1h30m)"),
        (ep(json!({"backend": []})), "$.endpoints[0].endpoint: is required"),
        (ep(json!({"endpoint": "a", "backend": []})), "$.endpoints[0].endpoint: \"a\" must start with /"),
        (ep(json!({"endpoint": "/a", "method": "post", "backend": []})),
         "$.endpoints[0].method: \"post\" is not one of GET, POST, PUT, PATCH, DELETE"),
        (ep(json!({"endpoint": "/a"})), "$.endpoints[0].backend: is required"),
        (ep(json!({"endpoint": "/a", "backend": []})), "$.endpoints[0].backend: needs one backend"),
        (ep(json!({"endpoint": "/a", "backend": [{"host": ["http://h"], "url_pattern": "/"}, {"host": ["http://h"], "url_pattern": "/"}]})),
         "$.endpoints[0].backend: several backends are only supported when every one is an ai/llm backend (the client's model chooses); KrakenD response merging is not supported"),
        (ep(json!({"endpoint": "/a", "backend": [{"host": ["http://h"], "url_pattern": "/"}], "typo": 1})),
         "$.endpoints[0].typo: unknown field"),
        (be(json!({"url_pattern": "/"})),
         "$.endpoints[0].backend[0].host: is required (or set the service-level host list)"),
        (be(json!({"host": [], "url_pattern": "/"})), "$.endpoints[0].backend[0].host: needs at least one host"),
        (be(json!({"host": ["ftp://h"], "url_pattern": "/"})),
         "$.endpoints[0].backend[0].host[0]: \"ftp://h\" must start with http:// or https://"),
        (be(json!({"host": ["http://a", "https://b"], "url_pattern": "/"})),
         "$.endpoints[0].backend[0].host[1]: all hosts of a backend must use the same scheme"),
        (be(json!({"host": ["http://a"]})), "$.endpoints[0].backend[0].url_pattern: is required"),
        (be(json!({"host": ["http://a"], "url_pattern": "/{y}"})),
         "$.endpoints[0].backend[0].url_pattern: \"/{y}\": {y} is not a parameter of endpoint \"/a/{x}\""),
        (be(json!({"host": ["http://a"], "url_pattern": "/", "hosts": []})),
         "$.endpoints[0].backend[0].hosts: unknown field"),
        (be(json!({"host": ["http://a"], "url_pattern": "/", "extra_config": {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "A", "value": "{{ env \"NOPE\" }}"}}}})),
         "$.endpoints[0].backend[0].extra_config.modifier/martian.header.Modifier.value: environment variable NOPE is not set (Envoy passes it to the filter only when it is listed in vm_config.environment_variables.host_env_keys)"),
        (json!({"version": 3, "endpoints": [
            {"endpoint": "/a/{x}", "method": "POST", "backend": [{"host": ["http://a"], "url_pattern": "/"}]},
            {"endpoint": "/a/{y}", "method": "POST", "backend": [{"host": ["http://a"], "url_pattern": "/"}]}]}),
         "$.endpoints[1].endpoint: POST /a/{y} duplicates $.endpoints[0] (POST /a/{x})"),
    ];
    for (doc, msg) in cases {
        assert_eq!(compile(doc).unwrap_err(), msg);
    }
    assert!(Gateway::from_json("{\"version\": 3,", &env)
        .unwrap_err()
        .to_string()
        .starts_with("$: invalid JSON: EOF while parsing"));
}

#[test]
fn same_path_different_methods_and_clusters_are_shared() {
    let g = compile(json!({"version": 3, "endpoints": [
        {"endpoint": "/a", "method": "GET", "backend": [{"host": ["http://h:1"], "url_pattern": "/x"}]},
        {"endpoint": "/a", "method": "POST", "backend": [{"host": ["http://h:1"], "url_pattern": "/y"}]},
        {"endpoint": "/b", "backend": [{"host": ["https://o"], "url_pattern": "/z"}]}]}))
    .unwrap();
    let names: Vec<&str> = g.clusters().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, vec!["tg_http_h_1", "tg_https_o_443"]);
}

#[test]
fn durations() {
    for (s, ms) in [
        ("2s", 2000),
        ("500ms", 500),
        ("1m30s", 90_000),
        ("1.5h", 5_400_000),
        ("100us", 0),
    ] {
        assert_eq!(parse_duration_ms(s).unwrap(), ms, "{s}");
    }
    for bad in ["", "2", "s", "2x", "1..2s"] {
        assert!(parse_duration_ms(bad).is_err(), "{bad}");
    }
}
