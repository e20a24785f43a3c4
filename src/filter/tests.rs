use super::upstream::TIMEOUT_HEADER;
use super::*;
use crate::host::mock::MockHost;
use crate::routing::CLUSTER_HEADER;
use serde_json::json;

fn gateway() -> Rc<Gateway> {
    let doc = json!({
        "version": 3,
        "timeout": "45s",
        "endpoints": [
            {"endpoint": "/llm/{provider}/chat", "method": "POST",
             "input_headers": ["X-Tag"], "input_query_strings": ["trace", "x"], "backend": [{
                "host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/{provider}/completions",
                "extra_config": {"modifier/martian": {"fifo.Group": {"scope": ["request", "response"], "modifiers": [
                    {"header.Modifier": {"scope": ["request"], "name": "Authorization", "value": "Bearer {{ env \"KEY\" }}"}},
                    {"header.Append": {"scope": ["request"], "name": "X-Tag", "value": "gw"}},
                    {"header.Blacklist": {"scope": ["response"], "names": ["Server"]}},
                    {"header.Modifier": {"scope": ["response"], "name": "X-Gateway", "value": "tollgate"}}
                ]}}}
            }]},
            {"endpoint": "/status", "method": "GET", "timeout": "2s", "backend": [{
                "host": ["https://api.example.com"], "url_pattern": "/health", "method": "POST"}]}
        ]
    });
    let env = |n: &str| (n == "KEY").then(|| "sk-provider".to_string());
    Rc::new(Gateway::from_value(&doc, &env).unwrap())
}

#[test]
fn routes_rewrites_and_replaces_client_credentials() {
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request(
        "POST",
        "/llm/openai/chat?trace=1&x=%20",
        &[
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client2"),
            ("x-tag", "client"),
            (CLUSTER_HEADER, "evil"),
        ],
    );
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Continue);
    assert!(h.reply.is_none());
    assert_eq!(
        h.request_values(":path"),
        vec!["/v1/openai/completions?trace=1&x=%20"]
    );
    assert_eq!(h.request_values(":authority"), vec!["127.0.0.1:9001"]);
    assert_eq!(
        h.request_values("authorization"),
        vec!["Bearer sk-provider"]
    );
    assert!(h.request_values("x-api-key").is_empty());
    assert_eq!(h.request_values("x-tag"), vec!["client", "gw"]);
    assert_eq!(
        h.request_values(CLUSTER_HEADER),
        vec!["tg_http_127.0.0.1_9001"]
    );
    assert_eq!(h.request_values(TIMEOUT_HEADER), vec!["45000"]);

    let mut h =
        h.with_response_headers(&[("server", "upstream"), ("content-type", "application/json")]);
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Continue);
    assert!(h.response_values("server").is_empty());
    assert_eq!(h.response_values("x-gateway"), vec!["tollgate"]);
}

#[test]
fn backend_method_and_endpoint_timeout() {
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request("GET", "/status", &[]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Continue);
    assert_eq!(h.request_values(":method"), vec!["POST"]);
    assert_eq!(h.request_values(":path"), vec!["/health"]);
    assert_eq!(h.request_values(":authority"), vec!["api.example.com"]);
    assert_eq!(h.request_values(TIMEOUT_HEADER), vec!["2000"]);
}

#[test]
fn unknown_path_is_404_and_wrong_method_405_in_openai_shape() {
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request("GET", "/nope?x=1", &[("authorization", "Bearer c")]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    let r = h.reply.clone().unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "no endpoint matches GET /nope", "type": "invalid_request_error", "param": null, "code": "not_found"}})
    );
    assert!(h.request_values(CLUSTER_HEADER).is_empty());

    let mut h = MockHost::request("GET", "/llm/openai/chat", &[]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    let r = h.reply.unwrap();
    assert_eq!(r.status, 405);
    assert!(r.headers.contains(&("allow".into(), "POST".into())));
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
}

fn llm_gateway() -> Rc<Gateway> {
    let doc = json!({
        "version": 3,
        "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST", "backend": [
            {"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
             "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-o", "aliases": ["fast"],
                 "variables": {"model": "gpt-4o-mini"}}}}}},
            {"host": ["http://127.0.0.1:9002"], "url_pattern": "/v1/messages",
             "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-a", "aliases": ["claude"],
                 "variables": {"model": "claude-3-5-haiku-latest"}}}}}}
        ]}]
    });
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

/// Sends an LLM request through the request callbacks.
fn llm_request(body: &str) -> (Flow, MockHost) {
    let mut flow = Flow::new(llm_gateway());
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[]).with_body(body.as_bytes());
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    flow.on_request_body(&mut h, body.len(), true);
    (flow, h)
}

/// Envoy runs a local reply through the response callbacks too; returns what the client gets.
fn through_response(flow: &mut Flow, h: MockHost) -> (u16, serde_json::Value) {
    let r = h.reply.clone().unwrap();
    let status = r.status.to_string();
    let mut headers = vec![(":status", status.as_str())];
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut h = h.with_response_headers(&headers);
    h.response_chunk = r.body.clone();
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Continue);
    assert_eq!(
        flow.on_response_body(&mut h, r.body.len(), true),
        Action::Continue
    );
    let status = h.response_values(":status")[0].parse().unwrap();
    (status, serde_json::from_slice(&h.response_chunk).unwrap())
}

#[test]
fn unknown_model_is_404_naming_the_model_param() {
    let (mut flow, h) =
        llm_request(r#"{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}"#);
    let (status, body) = through_response(&mut flow, h);
    assert_eq!(status, 404);
    let e = &body["error"];
    assert_eq!(
        (e["code"].as_str(), e["param"].as_str()),
        (Some("model_not_found"), Some("model"))
    );
}

#[test]
fn gateway_errors_are_not_translated_again() {
    let (mut flow, h) = llm_request(r#"{"model": "fast", "messages": [{"role": "wizard"}]}"#);
    let sent = h.reply.clone().unwrap().json();
    let (status, body) = through_response(&mut flow, h);
    assert_eq!((status, body), (400, sent));
}

#[test]
fn envoy_replies_are_rendered_once_in_the_clients_api() {
    // Envoy refuses a body over its buffer limit before the filter reads it; its reply,
    // already reshaped by local_reply_config, comes back through the filter.
    let mut flow = Flow::new(llm_gateway());
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    let envoy = br#"{"error":{"code":"invalid_request","message":"Payload Too Large","param":null,"type":"invalid_request_error"}}"#;
    let mut h = h.with_response_headers(&[
        (":status", "413"),
        ("content-type", "application/json"),
        (crate::refusal::ERROR_HEADER, crate::refusal::ENVOY_REPLY),
    ]);
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Pause);
    h.response_chunk = envoy.to_vec();
    flow.on_response_body(&mut h, envoy.len(), true);
    assert_eq!(h.response_values(":status"), vec!["413"]);
    let body: serde_json::Value = serde_json::from_slice(&h.response_chunk).unwrap();
    assert_eq!(
        body["error"]["message"],
        "the gateway rejected the request (HTTP 413): Payload Too Large"
    );
}

fn requests_counted(h: &MockHost) -> Vec<(&str, u64)> {
    let mut v: Vec<_> = h
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with(crate::observe::REQUESTS))
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    v.sort();
    v
}

#[test]
fn a_request_envoy_refused_before_any_provider_is_not_counted() {
    // Envoy's 413 for a body over its buffer limit: the call never went upstream.
    let mut flow = Flow::new(llm_gateway());
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    let mut h = h.with_response_headers(&[
        (":status", "413"),
        (crate::refusal::ERROR_HEADER, crate::refusal::ENVOY_REPLY),
    ]);
    flow.on_response_headers(&mut h, false);
    let envoy = br#"{"error":{"message":"Payload Too Large"}}"#;
    h.response_chunk = envoy.to_vec();
    flow.on_response_body(&mut h, envoy.len(), true);
    flow.on_log(&mut h);
    assert_eq!(requests_counted(&h), vec![]);
}

#[test]
fn an_answer_cut_mid_body_is_counted_with_the_status_the_client_got() {
    // The provider's 200 headers are held for a buffered answer; the connection resets in
    // the body and Envoy answers 502 itself, past the filter: only its response code says so.
    let (mut flow, h) =
        llm_request(r#"{"model": "claude", "messages": [{"role": "user", "content": "hi"}]}"#);
    assert!(h.reply.is_none());
    let mut h =
        h.with_response_headers(&[(":status", "200"), ("content-type", "application/json")]);
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Pause);
    let part = br#"{"content":[{"type":"te"#;
    h.response_chunk = part.to_vec();
    flow.on_response_body(&mut h, part.len(), false);
    h.response_code = Some(502);
    flow.on_log(&mut h);
    assert_eq!(
        requests_counted(&h),
        vec![(
            "tollgate_requests_total.provider.anthropic.model.claude-3-5-haiku-latest.tenant.none.status.502",
            1
        )]
    );
}

// --- Secrets never leave in answers (security::secrets) ------------------------------------

#[test]
fn a_plain_backend_echoing_its_secret_is_scrubbed_in_headers_and_body() {
    // gateway(): the backend of /llm/{provider}/chat is sent `Bearer {{ env "KEY" }}`.
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request("POST", "/llm/openai/chat", &[("accept-encoding", "gzip")]);
    flow.on_request_headers(&mut h, false);
    // A compressed answer could not be scrubbed.
    assert!(h.request_values("accept-encoding").is_empty());
    let mut h = h.with_response_headers(&[
        (":status", "401"),
        ("x-echo", "Bearer sk-provider"),
        ("x-echo", "other"),
        ("x-fine", "ok"),
    ]);
    flow.on_response_headers(&mut h, false);
    assert_eq!(
        h.response_values("x-echo"),
        vec!["Bearer [REDACTED]", "other"]
    );
    assert_eq!(h.response_values("x-fine"), vec!["ok"]);
    // The body keeps its length (content-length stays right); a key split across chunks
    // is held until it is whole.
    let body = br#"{"error": "bad key sk-provider"}"#;
    let mut got = Vec::new();
    for piece in [&body[..22], &body[22..]] {
        h.response_chunk = piece.to_vec();
        flow.on_response_body(&mut h, piece.len(), piece.ends_with(b"}"));
        got.extend_from_slice(&h.response_chunk);
    }
    assert_eq!(got, br#"{"error": "bad key [REDACTED]*"}"#);
}

#[test]
fn an_llm_provider_echoing_the_gateways_key_is_scrubbed_in_every_answer() {
    let key = "sk-ant-gateway-key-0123456789";
    let doc = json!({"version": 3, "endpoints": [
        {"endpoint": "/v1/messages", "method": "POST", "backend": [{"host": ["http://127.0.0.1:9002"],
         "url_pattern": "/v1/messages", "extra_config": {"ai/llm": {"anthropic": {"v1": {
             "credentials": "{{ env \"ANTHROPIC_KEY\" }}"}}}}}]}]});
    let env = |n: &str| (n == "ANTHROPIC_KEY").then(|| key.to_string());
    let gw = Rc::new(Gateway::from_value(&doc, &env).unwrap());
    let call = |stream: bool, status: &str, answer: &[u8]| {
        let body = json!({"model": "claude", "max_tokens": 9, "stream": stream,
                          "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
        let mut flow = Flow::new(Rc::clone(&gw));
        let mut h = MockHost::request("POST", "/v1/messages", &[]).with_body(body.as_bytes());
        flow.on_request_headers(&mut h, false);
        flow.on_request_body(&mut h, body.len(), true);
        assert_eq!(h.request_values("x-api-key"), vec![key]);
        let ctype = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut h = h.with_response_headers(&[
            (":status", status),
            ("content-type", ctype),
            ("x-debug-auth", key),
        ]);
        flow.on_response_headers(&mut h, false);
        let mut out = Vec::new();
        // Envoy buffers a held answer and hands it over whole at its end; a stream comes
        // in pieces, then an empty last callback.
        let pieces: Vec<&[u8]> = match status {
            "200" => answer.chunks(7).chain([&b""[..]]).collect(),
            _ => vec![answer],
        };
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            h.response_chunk = piece.to_vec();
            flow.on_response_body(&mut h, piece.len(), i == last);
            out.extend_from_slice(&h.response_chunk);
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(h.response_values("x-debug-auth"), vec!["[REDACTED]"]);
        assert!(!text.contains(key), "{text}");
        text
    };
    let err = format!(
        r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key: {key}"}}}}"#
    );
    let text = call(false, "401", err.as_bytes());
    assert!(text.contains("invalid x-api-key: [REDACTED]"), "{text}");
    let err = format!(
        r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"key {key} over quota"}}}}"#
    );
    assert!(call(true, "400", err.as_bytes()).contains("key [REDACTED] over quota"));
    // Inside a stream: an error event and a text delta carrying the key.
    let stream = format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m\",\"model\":\"c\",\"usage\":{{\"input_tokens\":1,\"output_tokens\":0}}}}}}\n\n\
         event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"echo {key}\"}}}}\n\n\
         event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":\"bad {key}\"}}}}\n\n"
    );
    let text = call(true, "200", stream.as_bytes());
    assert!(
        text.contains("echo [REDACTED]") && text.contains("bad [REDACTED]"),
        "{text}"
    );
}

// --- Metric labels come from bounded sets (observe) ----------------------------------------

#[test]
fn metric_labels_are_configured_models_and_capped_tenants() {
    let doc = json!({"version": 3,
        "extra_config": {"ai/usage": {"tenant_header": "x-tenant", "max_tenant_labels": 2}},
        "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST", "backend": [
            {"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
             "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-x", "aliases": ["fast"], "default": true}}}}}]}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap());
    let shared = crate::host::mock::SharedStore::default();
    let mut names = std::collections::BTreeSet::new();
    for i in 0..50 {
        let model = if i % 2 == 0 {
            "fast".to_string()
        } else {
            format!("random-{i}")
        };
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let tenant = format!("tenant-{i}");
        let mut flow = Flow::new(Rc::clone(&gw));
        let mut h = MockHost::request("POST", "/v1/chat/completions", &[("x-tenant", &tenant)])
            .with_body(body.as_bytes());
        h.shared = Rc::clone(&shared);
        flow.on_request_headers(&mut h, false);
        flow.on_request_body(&mut h, body.len(), true);
        let answer = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
        let mut h =
            h.with_response_headers(&[(":status", "200"), ("content-type", "application/json")]);
        flow.on_response_headers(&mut h, false);
        h.response_chunk = answer.to_vec();
        flow.on_response_body(&mut h, answer.len(), true);
        names.extend(h.counters.keys().cloned());
        names.extend(h.histograms.keys().cloned());
    }
    let values = |label: &str| -> std::collections::BTreeSet<String> {
        names
            .iter()
            .filter_map(|n| n.split(&format!(".{label}.")).nth(1))
            .map(|rest| rest.split('.').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(values("model"), ["fast", "other"].map(String::from).into());
    assert_eq!(
        values("tenant"),
        ["other", "tenant-0", "tenant-1"].map(String::from).into()
    );
}

/// Every refusal the gateway makes itself is in the client's front door: Anthropic's shape
/// on `/v1/messages` (and for Anthropic's SDK, which sends `anthropic-version`), OpenAI's on
/// `/v1/chat/completions`, whichever stage refuses.
#[test]
fn refusals_use_the_clients_front_door() {
    let llm = |p: &str| {
        json!({"host": ["http://127.0.0.1:9002"], "url_pattern": p,
               "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-a"}}}}})
    };
    let quota = json!({"quota_name": "q", "tier_key": "X-Plan",
                       "tiers": [{"rule_name": "r", "tier_value": "gold", "tier_value_as": "literal", "strategy": "ip"}]});
    let doc = json!({
        "version": 3,
        "extra_config": {"governance/processors": {"quotas": [{"name": "q", "connection_name": "per-envoy", "rules": [
            {"name": "r", "limits": [{"amount": 10, "unit": "day"}]}]}]}},
        "endpoints": [
            {"endpoint": "/v1/messages", "method": "POST", "backend": [llm("/v1/messages")],
             "extra_config": {"governance/quota": quota.clone()}},
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": [llm("/v1/messages")],
             "extra_config": {"governance/quota": quota}}]
    });
    let gw = Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap());
    let anthropic = |r: &crate::host::mock::Reply| {
        let v = r.json();
        v["type"] == "error" && v["error"]["type"].is_string() && v["error"]["message"].is_string()
    };
    let openai = |r: &crate::host::mock::Reply| r.json()["error"]["code"].is_string();
    // (method, path, headers, status, Anthropic shape?)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u32, bool);
    let cases: &[Case] = &[
        ("POST", "/v1/messages", &[], 400, true), // quota: no tier matches
        ("POST", "/v1/chat/completions", &[], 400, false),
        ("GET", "/v1/messages", &[], 405, true),
        ("GET", "/v1/chat/completions", &[], 405, false),
        ("POST", "/v2/messages", &[], 404, true),
        (
            "POST",
            "/nope",
            &[("anthropic-version", "2023-06-01")],
            404,
            true,
        ),
        ("POST", "/nope", &[], 404, false),
        (
            "GET",
            "/v1/models/nope",
            &[("anthropic-version", "2023-06-01")],
            404,
            true,
        ),
        ("GET", "/v1/models/nope", &[], 404, false),
    ];
    for (method, path, headers, status, want_anthropic) in cases {
        let mut flow = Flow::new(Rc::clone(&gw));
        let mut h = MockHost::request(method, path, headers);
        assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
        let r = h.reply.clone().unwrap();
        assert_eq!(r.status, *status, "{method} {path}");
        let shaped = if *want_anthropic {
            anthropic(&r)
        } else {
            openai(&r)
        };
        assert!(shaped, "{method} {path} {headers:?}: {}", r.json());
    }
}

/// KrakenD's martian `body.Modifier` (both scopes), `querystring.Modifier` and `header.Id` on
/// a plain backend: the backend gets the fixed body (its length and type), the set query
/// parameter (a client's other spelling of it gone) and the request id; the client gets the
/// fixed answer body, whatever the backend sent.
#[test]
fn martian_body_query_and_id_on_a_plain_backend() {
    let doc = json!({"version": 3, "endpoints": [{"endpoint": "/m", "method": "POST",
        "input_query_strings": ["amount", "currency"], "input_headers": ["Content-Type"], "backend": [{
        "host": ["http://127.0.0.1:9001"], "url_pattern": "/__echo/m",
        "extra_config": {"modifier/martian": {"fifo.Group": {"scope": ["request", "response"], "modifiers": [
            {"body.Modifier": {"scope": ["request", "response"], "body": "eyJtc2ciOiJ5b3Ugcm9jayEifQ==", "contentType": "application/json"}},
            {"querystring.Modifier": {"scope": ["request"], "name": "amount", "value": "75"}},
            {"header.Id": {"scope": ["request"]}},
            {"header.Id": {"scope": ["request"], "header": "X-Request-Id"}}]}}}}]}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_| None).unwrap());
    assert!(gw.warnings.is_empty(), "{:?}", gw.warnings);
    let mut flow = Flow::new(Rc::clone(&gw));
    let headers = [
        ("content-type", "text/plain"),
        ("content-length", "5"),
        ("x-request-id", "envoy-id-1"),
    ];
    let mut h =
        MockHost::request("POST", "/m?%61mount=1000000&currency=EUR", &headers).with_body(b"hello");
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    assert_eq!(flow.on_request_body(&mut h, 5, true), Action::Continue);
    assert!(h.reply.is_none());
    assert_eq!(h.request_body, br#"{"msg":"you rock!"}"#);
    assert_eq!(h.request_values("content-length"), vec!["19"]);
    assert_eq!(h.request_values("content-type"), vec!["application/json"]);
    assert_eq!(
        h.request_values(":path"),
        vec!["/__echo/m?currency=EUR&amount=75"]
    );
    assert_eq!(h.request_values("x-krakend-id"), vec!["envoy-id-1"]);
    assert_eq!(h.request_values("x-request-id"), vec!["envoy-id-1"]);
    // The answer: headers then two chunks, replaced by the fixed body at the end.
    h.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-length".into(), "11".into()),
        ("content-type".into(), "text/html".into()),
    ];
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Continue);
    assert!(h.response_values("content-length").is_empty());
    assert_eq!(h.response_values("content-type"), vec!["application/json"]);
    h.response_chunk = b"hello ".to_vec();
    flow.on_response_body(&mut h, 6, false);
    assert!(h.response_chunk.is_empty());
    h.response_chunk = b"world".to_vec();
    flow.on_response_body(&mut h, 5, true);
    assert_eq!(h.response_chunk, br#"{"msg":"you rock!"}"#);
}

/// A request body.Modifier on a GET (KrakenD's own example) is accepted with a warning: a
/// request without a body gets none; on an ai/llm backend it is refused.
#[test]
fn martian_body_where_it_cannot_apply() {
    let modifier = json!({"body.Modifier": {"scope": ["request"], "body": "e30="}});
    let doc = json!({"version": 3, "endpoints": [{"endpoint": "/m", "backend": [{
        "host": ["http://127.0.0.1:9001"], "url_pattern": "/m", "extra_config": {"modifier/martian": modifier}}]}]});
    let gw = Gateway::from_value(&doc, &|_| None).unwrap();
    assert_eq!(gw.warnings, vec!["$.endpoints[0].backend[0].extra_config.modifier/martian: body.Modifier (request scope) on a GET endpoint: a request that arrives without a body reaches the backend without one (a filter inside Envoy cannot add a body)"]);
    let mut flow = Flow::new(Rc::new(gw));
    let mut h = MockHost::request("GET", "/m", &[]);
    assert_eq!(flow.on_request_headers(&mut h, true), Action::Continue);
    assert!(h.request_body.is_empty() && h.request_values("content-length").is_empty());
    let doc = json!({"version": 3, "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST", "backend": [{
        "host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions", "extra_config": {
            "modifier/martian": modifier, "ai/llm": {"openai-compatible": {"v1": {}}}}}]}]});
    assert_eq!(Gateway::from_value(&doc, &|_| None).unwrap_err().to_string(),
        "$.endpoints[0].backend[0].extra_config.modifier/martian: body.Modifier applies to plain backends; an ai/llm backend's request and answer are translated");
}

/// KrakenD's conditional routing between plain backends: the header rule picks its backend
/// (path, cluster, modifiers of that one), the fallback takes the rest; a lone header rule that
/// fails calls no backend (404). Rules that could hold together (KrakenD would merge both
/// answers) are refused at configuration.
#[test]
fn backend_conditional_routes_plain_requests() {
    let be = |host: &str, path: &str, cond: serde_json::Value| {
        json!({"host": [host], "url_pattern": path, "extra_config": {"backend/conditional": cond,
            "modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "X-Via", "value": path}}}})
    };
    let doc = |backends: serde_json::Value| json!({"version": 3, "endpoints": [{"endpoint": "/ab/{id}", "backend": backends}]});
    let gw = Rc::new(
        Gateway::from_value(
            &doc(json!([
                be(
                    "http://a_svc:8001",
                    "/a/{id}",
                    json!({"strategy": "header", "name": "X-Ab-Test", "value": "A"})
                ),
                be(
                    "http://b_svc:8002",
                    "/b/{id}",
                    json!({"strategy": "header", "name": "X-Ab-Test", "value": "B"})
                ),
                be(
                    "http://c_svc:8003",
                    "/c/{id}",
                    json!({"strategy": "fallback"})
                )
            ])),
            &|_| None,
        )
        .unwrap(),
    );
    let call = |gw: &Rc<Gateway>, ab: Option<&str>| {
        let headers: Vec<(&str, &str)> = ab.map(|v| ("x-ab-test", v)).into_iter().collect();
        let mut h = MockHost::request("GET", "/ab/7", &headers);
        Flow::new(Rc::clone(gw)).on_request_headers(&mut h, true);
        h
    };
    for (ab, path, cluster) in [
        (Some("A"), "/a/7", "tg_http_a_svc_8001"),
        (Some("B"), "/b/7", "tg_http_b_svc_8002"),
        (Some("b"), "/c/7", "tg_http_c_svc_8003"),
        (None, "/c/7", "tg_http_c_svc_8003"),
    ] {
        let h = call(&gw, ab);
        assert!(h.reply.is_none(), "{ab:?}");
        assert_eq!(h.request_values(":path"), vec![path]);
        assert_eq!(h.request_values(CLUSTER_HEADER), vec![cluster]);
        assert_eq!(h.request_values("x-via"), vec![path.replace('7', "{id}")]);
    }
    // One header rule, no fallback: a request it does not match reaches no backend.
    let gw = Rc::new(
        Gateway::from_value(
            &doc(json!([be(
                "http://a_svc:8001",
                "/a/{id}",
                json!({"strategy": "header", "name": "X-Ab-Test", "value": "A"})
            )])),
            &|_| None,
        )
        .unwrap(),
    );
    assert!(call(&gw, Some("A")).reply.is_none());
    let h = call(&gw, Some("B"));
    assert_eq!(h.reply.as_ref().map(|r| r.status), Some(404));
    assert!(h.request_values(CLUSTER_HEADER).is_empty());
    // Two headers could both hold: KrakenD would call both and merge.
    let e = Gateway::from_value(
        &doc(json!([
            be(
                "http://a",
                "/a",
                json!({"strategy": "header", "name": "X-A", "value": "1"})
            ),
            be(
                "http://b",
                "/b",
                json!({"strategy": "header", "name": "X-B", "value": "1"})
            )
        ])),
        &|_| None,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("$.endpoints[0].backend: backend/conditional header rules of a plain endpoint must test one header"), "{e}");
    // A plain backend without a rule beside a conditional one is always called: merging.
    let e = Gateway::from_value(
        &doc(json!([
        be("http://a", "/a", json!({"strategy": "fallback"})),
        {"host": ["http://b"], "url_pattern": "/b"}])),
        &|_| None,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("KrakenD response merging is not supported"),
        "{e}"
    );
}

/// A backend called with OPTIONS or HEAD (KrakenD's backend methods; its schema's own example).
#[test]
fn backend_options_and_head() {
    for m in ["OPTIONS", "HEAD"] {
        let doc = json!({"version": 3, "endpoints": [{"endpoint": "/wrapped", "backend": [
            {"host": ["http://127.0.0.1:8081"], "url_pattern": "/__debug/root", "method": m}]}]});
        let gw = Rc::new(Gateway::from_value(&doc, &|_| None).unwrap());
        let mut h = MockHost::request("GET", "/wrapped", &[]);
        Flow::new(gw).on_request_headers(&mut h, true);
        assert!(h.reply.is_none(), "{m}");
        assert_eq!(h.request_values(":method"), vec![m]);
    }
}

/// The model list under a templated prefix (`/t/{team}/v1/chat/completions` →
/// `/t/acme/v1/models`) is served behind that endpoint's API keys; a model id may hold
/// slashes; other depths and prefixes stay 404.
#[test]
fn models_under_a_templated_prefix() {
    let doc = json!({
        "version": 3,
        "extra_config": {"auth/api-keys": {"keys": [{"key": "k-alice", "roles": ["analyst"]}]}},
        "endpoints": [{"endpoint": "/t/{team}/v1/chat/completions", "method": "POST",
            "extra_config": {"auth/api-keys": {"roles": []}},
            "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
                "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-o", "aliases": ["fast"],
                    "variables": {"model": "gpt-4o-mini"}}}}}}]}]
    });
    let gw = Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap());
    let key = [("authorization", "Bearer k-alice")];
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut flow = Flow::new(Rc::clone(&gw));
        let mut h = MockHost::request("GET", path, headers);
        assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
        h.reply.clone().unwrap()
    };
    assert_eq!(get("/t/acme/v1/models", &[]).status, 401);
    let list = get("/t/acme/v1/models", &key);
    assert_eq!(list.status, 200, "{}", list.json());
    assert!(list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "fast"));
    let one = get("/t/acme/v1/models/fast", &key);
    assert_eq!((one.status, one.json()["id"].clone()), (200, json!("fast")));
    let slashed = get("/t/acme/v1/models/meta-llama/x", &key);
    assert_eq!(slashed.status, 404);
    assert_eq!(slashed.json()["error"]["code"], "model_not_found");
    for other in [
        "/t/acme/v2/models",
        "/t/acme/x/v1/models",
        "/t/v1/models",
        "/t/acme/v1/models/",
    ] {
        assert_eq!(get(other, &key).status, 404, "{other}");
    }
}
