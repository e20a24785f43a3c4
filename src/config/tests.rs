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
    // The seed's service-level host is "localhost:8080" (no scheme) as in KrakenD's quick
    // start: KrakenD reads it as http://localhost:8080, and so does tollgate.
    let g = compile(seed()).unwrap();
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

/// A namespace with no effect inside Envoy is one warning line; one that is a control or
/// changes the answer is refused naming its path (issue 13: never accepted and skipped).
#[test]
fn namespaces_without_effect_warn_once_each_the_others_are_refused() {
    let doc = |endpoint_ns: Value, backend_ns: Value| {
        json!({"version": 3, "extra_config": {"telemetry/logging": {}, "documentation/openapi": {}}, "endpoints": [
        {"endpoint": "/a", "extra_config": endpoint_ns, "backend": [
            {"host": ["http://h"], "url_pattern": "/", "extra_config": backend_ns}]}]})
    };
    let g = compile(doc(
        json!({"telemetry/opentelemetry": {}, "@c": "x"}),
        json!({"telemetry/logging": {"custom_format": "%{resp.usage}"}}),
    ))
    .unwrap();
    let mut w = g.warnings.clone();
    w.sort();
    let why = "ignored inside Envoy: KrakenD's own telemetry; inside Envoy, Envoy's stats, tracing and access log (with tollgate's metrics and usage properties) take its place";
    assert_eq!(
        w,
        vec![
            format!("$.endpoints[0].backend[0].extra_config.telemetry/logging: {why}"),
            format!("$.endpoints[0].extra_config.telemetry/opentelemetry: {why}"),
            "$.extra_config.documentation/openapi: ignored inside Envoy: API documentation for KrakenD's generators; no effect on requests".to_string(),
            format!("$.extra_config.telemetry/logging: {why}"),
        ]
    );
    for (ep, be, want) in [
        (json!({"qos/ratelimit/proxy": {"max_rate": 1}}), json!({}),
         "$.endpoints[0].extra_config.qos/ratelimit/proxy: a backend-side rate limit is not supported: use qos/ratelimit/router on the endpoint"),
        (json!({"validation/cel": []}), json!({}),
         "$.endpoints[0].extra_config.validation/cel: expected a list of {\"check_expr\": ...}"),
        (json!({}), json!({"backend/http": {"return_error_details": "x"}}),
         "$.endpoints[0].backend[0].extra_config.backend/http: error wrapping (return_error_details) is not supported: tollgate passes the backend's status and body as they are"),
        (json!({}), json!({"made/up": {}}),
         "$.endpoints[0].backend[0].extra_config.made/up: namespace not supported by tollgate"),
    ] {
        assert_eq!(compile(doc(ep, be)).unwrap_err(), want);
    }
    // The fleet limits service runs these: no warning, no refusal from the filter.
    let mut d = doc(json!({}), json!({}));
    d["extra_config"]["redis"] = json!({"connection_pools": []});
    assert_eq!(compile(d).unwrap().warnings.len(), 2);
}

/// KrakenD's response manipulation reshapes the answer: refused, except on `no-op` endpoints
/// where KrakenD does not apply it either; non-JSON encodings and DNS discovery likewise.
#[test]
fn response_manipulation_is_refused_unless_no_op() {
    let doc = |output: Option<&str>, field: &str, v: Value| {
        let mut d = json!({"version": 3, "endpoints": [{"endpoint": "/a", "backend": [
            {"host": ["http://h"], "url_pattern": "/"}]}]});
        d["endpoints"][0]["backend"][0][field] = v;
        if let Some(o) = output {
            d["endpoints"][0]["output_encoding"] = json!(o);
        }
        d
    };
    for (field, v) in [
        ("allow", json!(["a"])),
        ("deny", json!(["a"])),
        ("mapping", json!({"a": "b"})),
        ("target", json!("data")),
        ("group", json!("g")),
        ("is_collection", json!(true)),
    ] {
        let e = compile(doc(None, field, v.clone())).unwrap_err();
        assert!(
            e.starts_with(&format!("$.endpoints[0].backend[0].{field}: KrakenD's response manipulation is not supported")),
            "{e}"
        );
        compile(doc(Some("no-op"), field, v)).unwrap();
    }
    compile(doc(None, "allow", json!([]))).unwrap();
    compile(doc(None, "is_collection", json!(false))).unwrap();
    compile(doc(None, "encoding", json!("safejson"))).unwrap();
    assert!(compile(doc(None, "encoding", json!("xml")))
        .unwrap_err()
        .starts_with("$.endpoints[0].backend[0].encoding: \"xml\" is not supported by tollgate"));
    assert!(
        compile(doc(Some("json-collection"), "encoding", json!("json")))
            .unwrap_err()
            .starts_with(
                "$.endpoints[0].output_encoding: \"json-collection\" is not supported by tollgate"
            )
    );
    compile(doc(None, "sd", json!("static"))).unwrap();
    assert!(compile(doc(None, "sd", json!("dns")))
        .unwrap_err()
        .starts_with("$.endpoints[0].backend[0].sd: service discovery \"dns\" is not supported"));
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
        (ep(json!({"endpoint": "/a", "backend": [{"host": ["http://h"], "url_pattern": "/", "method": "TRACE"}]})),
         "$.endpoints[0].backend[0].method: \"TRACE\" is not one of GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD"),
        (ep(json!({"endpoint": "/a"})), "$.endpoints[0].backend: is required"),
        (ep(json!({"endpoint": "/a", "backend": []})), "$.endpoints[0].backend: needs one backend"),
        (ep(json!({"endpoint": "/a", "backend": [{"host": ["http://h"], "url_pattern": "/"}, {"host": ["http://h"], "url_pattern": "/"}]})),
         "$.endpoints[0].backend: several backends are only supported when every one is an ai/llm backend (the client's model chooses) or every one has a backend/conditional (one is called); KrakenD response merging is not supported"),
        (ep(json!({"endpoint": "/a", "backend": [{"host": ["http://h"], "url_pattern": "/"}], "typo": 1})),
         "$.endpoints[0].typo: unknown field"),
        (be(json!({"url_pattern": "/"})),
         "$.endpoints[0].backend[0].host: is required (or set the service-level host list)"),
        (be(json!({"host": [], "url_pattern": "/"})), "$.endpoints[0].backend[0].host: needs at least one host"),
        (be(json!({"host": ["ftp://h"], "url_pattern": "/"})),
         "$.endpoints[0].backend[0].host[0]: \"ftp://h\" must start with http:// or https:// (or have no scheme: http://)"),
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

/// KrakenD's AI examples: the model in Gemini's and Bedrock's `url_pattern` (no
/// `variables.model`), and 3.0's streaming `output_encoding` on `ai/llm` endpoints (its stream
/// manipulation encodings refused).
#[test]
fn krakend_ai_endpoints() {
    let llm = |url: &str, provider: Value| {
        json!({"version": 3, "endpoints": [{"endpoint": "/ai", "method": "POST", "backend": [{
            "host": ["http://127.0.0.1:9001"], "url_pattern": url,
            "extra_config": {"ai/llm": provider}}]}]})
    };
    let gemini = json!({"gemini": {"v1beta": {"credentials": "k"}}});
    let g = compile(llm(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        gemini.clone(),
    ))
    .unwrap();
    let l = g.endpoints[0].backends[0].llm.as_ref().unwrap();
    assert_eq!(l.model.as_deref(), Some("gemini-2.5-flash"));
    // variables.model wins over the path.
    let named = json!({"gemini": {"v1beta": {"credentials": "k", "variables": {"model": "m2"}}}});
    let g = compile(llm(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        named,
    ))
    .unwrap();
    let l = g.endpoints[0].backends[0].llm.as_ref().unwrap();
    assert_eq!(l.model.as_deref(), Some("m2"));
    for enc in ["sse", "ndjson", "eventstream"] {
        let mut doc = llm(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            gemini.clone(),
        );
        doc["endpoints"][0]["output_encoding"] = json!(enc);
        let err = compile(doc).unwrap_err();
        assert!(
            err.starts_with("$.endpoints[0].output_encoding: \"")
                && err.contains("is not supported by tollgate")
                && err.contains("\"streaming\""),
            "{err}"
        );
    }
    let mut doc = llm(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        gemini.clone(),
    );
    doc["endpoints"][0]["output_encoding"] = json!("streaming");
    assert_eq!(
        compile(doc).unwrap().endpoints[0].llm_stream,
        Some(crate::providers::FrontDoor::KrakenD)
    );
    let mut doc = llm(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        gemini.clone(),
    );
    assert_eq!(compile(doc.clone()).unwrap().endpoints[0].llm_stream, None);
    // A stream format on an endpoint that does not stream has no effect: a warning.
    doc["endpoints"][0]["backend"][0]["extra_config"]["ai/llm"]["format"] = json!("openai");
    let g = compile(doc).unwrap();
    assert!(
        g.warnings.iter().any(|w| w.starts_with(
            "$.endpoints[0].backend[0].extra_config.ai/llm.format: ignored"
        )),
        "{:?}",
        g.warnings
    );
    let mut doc = llm("/v1beta/models/gemini-2.5-flash:generateContent", gemini);
    doc["endpoints"][0]["output_encoding"] = json!("json");
    assert!(compile(doc).is_ok());
}

/// `output_encoding: "streaming"` is KrakenD's `ai/llm` pseudo-encoding: refused, naming the
/// path and why, on a plain endpoint, on an endpoint whose door does not read KrakenD's
/// contract, and where a check reads the whole answer (every request would be refused).
#[test]
fn krakend_llm_streaming_where_it_cannot_be() {
    let at = "$.endpoints[0].output_encoding: ";
    let ep = |path: &str, backend: Value, extra: Value| {
        json!({"version": 3, "endpoints": [{"endpoint": path, "method": "POST",
            "output_encoding": "streaming", "extra_config": extra, "backend": [backend]}]})
    };
    let llm = json!({"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/messages",
        "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "k", "variables": {"model": "c"}}}}}});
    // Its refusals before the body is read are Anthropic's: every backend streams its format.
    let g = compile(ep("/ai", llm.clone(), json!({}))).unwrap();
    assert_eq!(
        g.endpoints[0].front_door(),
        crate::providers::FrontDoor::Anthropic
    );
    assert!(compile(ep("/v1/messages", llm.clone(), json!({}))).is_ok());
    let plain = json!({"host": ["http://127.0.0.1:9001"], "url_pattern": "/x"});
    let err = compile(ep("/plain", plain, json!({}))).unwrap_err();
    assert!(
        err.starts_with(at) && err.contains("reserved for ai/llm endpoints"),
        "{err}"
    );
    for path in [
        "/v1/responses",
        "/v1/embeddings",
        "/v1/messages/count_tokens",
    ] {
        let err = compile(ep(path, llm.clone(), json!({}))).unwrap_err();
        assert!(
            err.starts_with(at) && err.contains("does not read"),
            "{path}: {err}"
        );
    }
    let checks = json!({"security/policies": {"resp": {"policies": ["resp_data.usage != ''"]}}});
    let err = compile(ep("/ai", llm.clone(), checks.clone())).unwrap_err();
    assert!(
        err.starts_with(at) && err.contains("checks of the whole answer"),
        "{err}"
    );
    let mut checked = llm;
    checked["extra_config"]["security/policies"] = checks["security/policies"].clone();
    let err = compile(ep("/ai", checked, json!({}))).unwrap_err();
    assert!(
        err.starts_with(at) && err.contains("checks of the whole answer"),
        "{err}"
    );
}
