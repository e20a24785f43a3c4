//! The ways around the gateway's controls, closed (issue 11), through the whole pipeline
//! ([`Flow`] over MockHost): the client never picks the cluster, a body ending with trailers
//! still passes the body stage, only listed client headers and query parameters go
//! upstream, the API key never does, `{param}`s never reshape the upstream path, and role
//! limits judge the model the provider finally receives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::host::mock::MockHost;
use crate::routing::CLUSTER_HEADER;
use serde_json::{json, Value};

fn gw(doc: Value) -> Rc<Gateway> {
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

const CHAT_PII: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"mail bob@example.com"}]}"#;

/// An LLM endpoint with PII blocking, a plain endpoint with body governance, a plain
/// endpoint with a path parameter, and an "internal" backend.
fn trust_gateway() -> Rc<Gateway> {
    gw(json!({"version": 3,
        "extra_config": {"auth/api-keys": {"keys": [{"key": "gk-1", "roles": ["user"]}],
                                          "identifier": "X-Gateway-Key", "propagate_role": "X-Role"}},
        "endpoints": [
        {"endpoint": "/v1/chat/completions", "method": "POST",
         "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
                      "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-p"}}}}}],
         "extra_config": {"security/pii": {"action": "block"}}},
        {"endpoint": "/plain", "method": "POST",
         "backend": [{"host": ["http://127.0.0.1:9002"], "url_pattern": "/p"}],
         "extra_config": {"proxy": {"max_payload": 10}}},
        {"endpoint": "/store/{name}/meta", "method": "GET",
         "backend": [{"host": ["http://127.0.0.1:9002"], "url_pattern": "/s/{name}/meta"}]},
        {"endpoint": "/keyed", "method": "POST",
         "backend": [{"host": ["http://127.0.0.1:9002"], "url_pattern": "/k"}],
         "extra_config": {"auth/api-keys": {"roles": []}}},
        {"endpoint": "/keyed-all", "method": "POST", "input_headers": ["*"], "input_query_strings": ["*"],
         "backend": [{"host": ["http://127.0.0.1:9002"], "url_pattern": "/k"}],
         "extra_config": {"auth/api-keys": {"roles": []}}},
        {"endpoint": "/keyed/v1/chat/completions", "method": "POST", "input_headers": ["Anthropic-Beta"],
         "backend": [{"host": ["http://127.0.0.1:9003"], "url_pattern": "/v1/messages",
                      "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-a"}}}}}],
         "extra_config": {"auth/api-keys": {"roles": []}}},
        {"endpoint": "/internal", "method": "GET",
         "backend": [{"host": ["http://10.0.0.9:80"], "url_pattern": "/admin"}]}
    ]}))
}

/// Where the request is routed: the cluster header values left on it.
fn clusters(h: &MockHost) -> Vec<&str> {
    h.request_values(CLUSTER_HEADER)
}

#[test]
fn a_client_routing_header_never_survives() {
    let evil = (CLUSTER_HEADER, "tg_http_10.0.0.9_80");
    let cases = [
        ("GET", "/nope"),                 // 404
        ("POST", "/keyed"),               // 401
        ("POST", "/v1/chat/completions"), // held for the body
        ("POST", "/plain"),               // held for governance
        ("GET", "/store/a/meta"),         // routed at once
    ];
    for (method, path) in cases {
        let mut flow = Flow::new(trust_gateway());
        let mut h = MockHost::request(method, path, &[evil, evil]);
        flow.on_request_headers(&mut h, false);
        // Only the filter's own match sets a cluster (plain endpoints at once).
        let want: Vec<&str> = if matches!(path, "/store/a/meta" | "/plain") {
            vec!["tg_http_127.0.0.1_9002"]
        } else {
            vec![]
        };
        assert_eq!(clusters(&h), want, "{method} {path}");
    }
}

/// HTTP/2 (or chunked HTTP/1.1 with trailers kept): the last body callback has no
/// end_of_stream; the trailers callback ends the body, and the body stage runs there.
#[test]
fn a_body_that_ends_with_trailers_still_passes_the_body_stage() {
    // LLM endpoint: PII blocking answers 400; nothing is routed.
    let mut flow = Flow::new(trust_gateway());
    let mut h = MockHost::request(
        "POST",
        "/v1/chat/completions",
        &[(CLUSTER_HEADER, "tg_http_10.0.0.9_80")],
    )
    .with_body(CHAT_PII.as_bytes());
    h.request_trailers = vec![("x-trailer".into(), "1".into())];
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    assert_eq!(
        flow.on_request_body(&mut h, CHAT_PII.len(), false),
        Action::Pause
    );
    assert_eq!(flow.on_request_trailers(&mut h), Action::Pause);
    let r = h.reply.clone().unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, json!("content_blocked"))
    );
    assert!(clusters(&h).is_empty());
    assert!(h.request_trailers.is_empty());
    // A clean body is translated and routed from the trailers callback.
    let clean = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let mut flow = Flow::new(trust_gateway());
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[]).with_body(clean.as_bytes());
    flow.on_request_headers(&mut h, false);
    flow.on_request_body(&mut h, clean.len(), false);
    assert_eq!(flow.on_request_trailers(&mut h), Action::Continue);
    assert_eq!(clusters(&h), vec!["tg_http_127.0.0.1_9001"]);
    assert_eq!(h.request_values("authorization"), vec!["Bearer sk-p"]);
    // Headers then trailers, no body at all: the body is required.
    let mut flow = Flow::new(trust_gateway());
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[]);
    flow.on_request_headers(&mut h, false);
    flow.on_request_trailers(&mut h);
    assert_eq!(h.reply.unwrap().status, 400);
    // Plain endpoint with max_payload: the chunked body is measured at the trailers.
    let mut flow = Flow::new(trust_gateway());
    let mut h = MockHost::request("POST", "/plain", &[]).with_body(CHAT_PII.as_bytes());
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    flow.on_request_body(&mut h, CHAT_PII.len(), false);
    flow.on_request_trailers(&mut h);
    assert_eq!(h.reply.unwrap().status, 413);
}

#[test]
fn only_listed_client_headers_and_query_parameters_go_upstream() {
    let mut flow = Flow::new(trust_gateway());
    let mut h = MockHost::request(
        "GET",
        "/store/a/meta?admin=true&page=2",
        &[
            ("content-type", "application/json"),
            ("x-role", "admin"),
            ("x-http-method-override", "DELETE"),
            ("cookie", "s=1"),
            ("user-agent", "curl"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("content-length", "0"),
        ],
    );
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Continue);
    assert_eq!(h.request_values(":path"), vec!["/s/a/meta"]);
    let mut names: Vec<&str> = h.request_headers.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            ":authority",
            ":method",
            ":path",
            "content-length",
            "content-type",
            "x-forwarded-for",
            CLUSTER_HEADER
        ]
    );
}

#[test]
fn the_api_key_never_leaves_whatever_the_lists_say() {
    for path in ["/keyed", "/keyed-all"] {
        let mut flow = Flow::new(trust_gateway());
        let mut h = MockHost::request(
            "POST",
            &format!("{path}?q=1"),
            &[
                ("x-gateway-key", "gk-1"),
                ("x-role", "admin"),
                ("x-other", "1"),
            ],
        );
        assert_eq!(
            flow.on_request_headers(&mut h, false),
            Action::Continue,
            "{path}"
        );
        assert!(h.request_values("x-gateway-key").is_empty(), "{path}");
        // The role is the gateway's, never the client's.
        assert_eq!(h.request_values("x-role"), vec!["ANY"], "{path}");
        let star = path == "/keyed-all";
        assert_eq!(!h.request_values("x-other").is_empty(), star, "{path}");
        let q = if star { "/k?q=1" } else { "/k" };
        assert_eq!(h.request_values(":path"), vec![q], "{path}");
    }
    // Toward a provider: the identifier goes, a listed header stays, the rest goes.
    let body = r#"{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut flow = Flow::new(trust_gateway());
    let mut h = MockHost::request(
        "POST",
        "/keyed/v1/chat/completions",
        &[
            ("x-gateway-key", "gk-1"),
            ("anthropic-beta", "tools-2024"),
            ("anthropic-version", "1999-01-01"),
            ("accept", "text/event-stream"),
            ("x-http-method-override", "DELETE"),
        ],
    )
    .with_body(body.as_bytes());
    flow.on_request_headers(&mut h, false);
    flow.on_request_body(&mut h, body.len(), true);
    assert!(h.reply.is_none());
    assert!(h.request_values("x-gateway-key").is_empty());
    assert_eq!(h.request_values("anthropic-beta"), vec!["tools-2024"]);
    assert_eq!(h.request_values("anthropic-version"), vec!["2023-06-01"]);
    assert_eq!(h.request_values("x-api-key"), vec!["sk-a"]);
    assert!(h.request_values("accept").is_empty());
    assert!(h.request_values("x-http-method-override").is_empty());
}

#[test]
fn a_param_that_would_reshape_the_upstream_path_is_400() {
    for bad in ["..", "%2e%2e", "%2E.", "a%2Fb", "a%5cb", "..;", "%252f"] {
        let mut flow = Flow::new(trust_gateway());
        let mut h = MockHost::request("GET", &format!("/store/{bad}/meta"), &[]);
        assert_eq!(
            flow.on_request_headers(&mut h, false),
            Action::Pause,
            "{bad}"
        );
        let r = h.reply.clone().unwrap();
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("{name}"));
        assert!(clusters(&h).is_empty());
    }
    let mut flow = Flow::new(trust_gateway());
    let mut h = MockHost::request("GET", "/store/a.b%20c/meta", &[]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Continue);
    assert_eq!(h.request_values(":path"), vec!["/s/a.b%20c/meta"]);
}

/// A user allowed only gpt-4o-mini names it, and sends the header that routes to a
/// premium backend: refused, for the model the provider would receive. The same on a
/// failover attempt: the attempt is skipped.
#[test]
fn role_limits_judge_the_model_the_provider_receives() {
    let be = |port: u16, model: &str, cond: Option<Value>| {
        let mut b = json!({"host": [format!("http://127.0.0.1:{port}")], "url_pattern": "/v1/chat/completions",
            "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk", "variables": {"model": model}}}}}});
        if let Some(c) = cond {
            b["extra_config"]["backend/conditional"] = c;
        }
        b
    };
    let doc = json!({"version": 3,
        "extra_config": {"auth/api-keys": {"keys": [{"key": "u", "roles": ["user"]}]}},
        "endpoints": [
        {"endpoint": "/v1/chat/completions", "method": "POST",
         "backend": [be(9001, "gpt-4o-mini", None),
                     be(9002, "o1-pro", Some(json!({"strategy": "header", "name": "X-Tier", "value": "premium"})))],
         "extra_config": {"auth/api-keys": {"roles": []},
                          "ai/prompt-guard": {"models_by_role": {"user": ["gpt-4o-mini"]}}}},
        {"endpoint": "/failover/v1/chat/completions", "method": "POST",
         "backend": [be(9002, "o1-pro", None), be(9001, "gpt-4o-mini", None)],
         "extra_config": {"auth/api-keys": {"roles": []}, "ai/routing": {"failover": true, "weights": [1, 0]},
                          "ai/prompt-guard": {"models_by_role": {"user": ["gpt-4o-mini"]}}}},
        {"endpoint": "/premium/v1/chat/completions", "method": "POST",
         "backend": [be(9002, "o1-pro", None), be(9003, "o3", None)],
         "extra_config": {"auth/api-keys": {"roles": []}, "ai/routing": {"failover": true, "weights": [1, 1]},
                          "ai/prompt-guard": {"models_by_role": {"user": ["gpt-4o-mini"]}}}}
    ]});
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let run = |path: &str, headers: &[(&str, &str)]| {
        let mut flow = Flow::new(gw(doc.clone()));
        let mut all = vec![("authorization", "Bearer u")];
        all.extend_from_slice(headers);
        let mut h = MockHost::request("POST", path, &all).with_body(chat.as_bytes());
        flow.on_request_headers(&mut h, false);
        flow.on_request_body(&mut h, chat.len(), true);
        h
    };
    let ok = run("/v1/chat/completions", &[]);
    assert!(ok.reply.is_none());
    assert_eq!(clusters(&ok), vec!["tg_http_127.0.0.1_9001"]);
    let premium = run("/v1/chat/completions", &[("x-tier", "premium")]);
    let r = premium.reply.clone().unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["error"]["message"],
        "your key or token may not use the model \"gpt-4o-mini\" (routed to \"o1-pro\")"
    );
    assert!(clusters(&premium).is_empty());
    // Failover whose weighted primary is o1-pro: that backend is not tried, gpt-4o-mini is.
    let f = run("/failover/v1/chat/completions", &[]);
    assert!(f.reply.is_none());
    assert!(f.callouts.is_empty());
    assert_eq!(clusters(&f), vec!["tg_http_127.0.0.1_9001"]);
    assert!(String::from_utf8_lossy(&f.request_body).contains("\"gpt-4o-mini\""));
    // Every backend forbidden: each attempt is checked, none is sent, 403.
    let p = run("/premium/v1/chat/completions", &[]);
    assert!(p.callouts.is_empty());
    let r = p.reply.unwrap();
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("routed to"));
}

/// A stream that fails before its first byte fails over through callouts: each attempt
/// carries the client's listed headers, never what the first backend's translation and
/// modifiers wrote on the proxied request.
#[test]
fn a_failover_attempt_carries_only_its_own_headers() {
    let doc = json!({"version": 3, "endpoints": [
        {"endpoint": "/v1/chat/completions", "method": "POST", "input_headers": ["*"],
         "extra_config": {"ai/routing": {"failover": true}},
         "backend": [
            {"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
             "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-first"}}},
                 "modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "X-First-Only", "value": "1"}}}},
            {"host": ["http://127.0.0.1:9002"], "url_pattern": "/v1/messages",
             "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-second",
                 "variables": {"model": "claude-3-5-haiku-latest"}}}}}}]}]});
    let chat =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut flow = Flow::new(gw(doc));
    let mut h = MockHost::request(
        "POST",
        "/v1/chat/completions",
        &[("x-client", "1"), ("authorization", "Bearer client")],
    )
    .with_body(chat.as_bytes());
    flow.on_request_headers(&mut h, false);
    flow.on_request_body(&mut h, chat.len(), true);
    assert_eq!(h.request_values("x-first-only"), vec!["1"]);
    let mut h = h.with_response_headers(&[(":status", "503")]);
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Pause);
    let c = h.callouts.first().unwrap();
    let get = |n: &str| -> Vec<&str> {
        c.headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(c.cluster, "tg_http_127.0.0.1_9002");
    assert_eq!(get("x-client"), vec!["1"]);
    assert_eq!(get("x-api-key"), vec!["sk-second"]);
    assert!(get("x-first-only").is_empty());
    assert!(get("authorization").is_empty());
}
