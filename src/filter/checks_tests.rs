//! CEL checks and policies through the whole filter, on KrakenD's own examples
//! (tests/krakend_corpus: doc-endpoints-common-expression-language-cel-*, pge-ep-track-user,
//! pge-ep-llm-conditional) with their hosts pointed at local addresses.

use crate::config::Gateway;
use crate::filter::{Action, Flow};
use crate::host::mock::MockHost;
use crate::security::metadata::encode_jwt_metadata;
use serde_json::{json, Value};
use std::rc::Rc;

fn plain(url: &str) -> Value {
    json!([{"host": ["http://127.0.0.1:9001"], "url_pattern": url}])
}

fn gateway() -> Rc<Gateway> {
    let doc = json!({"version": 3, "endpoints": [
        // pge-ep-track-user: a request policy with its own error.
        {"endpoint": "/track-user", "input_headers": ["Cookie"], "backend": plain("/cookie"),
         "extra_config": {"security/policies": {"req": {
            "error": {"body": "User did not accept the cookie and tracking is not allowed", "status": 403},
            "policies": ["getCookie('GDPR') == 'yes'"]}}}},
        // The same without input_headers: the cookie does not reach the backend, nor the policy.
        {"endpoint": "/track-unlisted", "backend": plain("/cookie"),
         "extra_config": {"security/policies": {"req": {"policies": ["getCookie('GDPR') == 'yes'"]}}}},
        // doc-endpoints-common-expression-language-cel-L209 and L297.
        {"endpoint": "/nick/{nick}", "backend": plain("/"),
         "extra_config": {"validation/cel": [{"check_expr": "req_params.Nick.matches('k.*')"}]}},
        {"endpoint": "/weekdays", "backend": plain("/"),
         "extra_config": {"validation/cel": [{"check_expr": "(timestamp(now).getDayOfWeek() + 6) % 7 <= 4"}]}},
        // L139: a JWT check beside auth/validator.
        {"endpoint": "/jwt/{nick}", "backend": plain("/"),
         "extra_config": {"auth/validator": {"alg": "RS256", "jwk_local_path": "/k.json"},
            "validation/cel": [{"check_expr": "has(JWT.user_id) && has(JWT.enabled_days) && (timestamp(now).getDayOfWeek() in JWT.enabled_days)"}]}},
        // L231: a backend check on the answer.
        {"endpoint": "/github/{nick}", "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/users/{nick}",
            "extra_config": {"validation/cel": [{"check_expr": "'company' in resp_data.github"}]}}]},
        // Every header forwarded, with and without an answer check.
        {"endpoint": "/gz-checked", "input_headers": ["*"], "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/",
            "extra_config": {"validation/cel": [{"check_expr": "resp_metadata_status == 200"}]}}]},
        {"endpoint": "/gz-plain", "input_headers": ["*"], "backend": plain("/")},
    ]});
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

fn request(path: &str, headers: &[(&str, &str)]) -> (Flow, MockHost) {
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request("GET", path, headers);
    h.now = 1_705_311_000; // 2024-01-15, a Monday
    flow.on_request_headers(&mut h, true);
    (flow, h)
}

fn status(h: &MockHost) -> Option<u32> {
    h.reply.as_ref().map(|r| r.status)
}

#[test]
fn request_policies_and_checks() {
    let (_, h) = request("/track-user", &[("cookie", "GDPR=yes; other=1")]);
    assert_eq!(status(&h), None);
    assert_eq!(h.request_values(":path"), vec!["/cookie"]);
    let (_, h) = request("/track-user", &[("cookie", "GDPR=no")]);
    let r = h.reply.clone().unwrap();
    // KrakenD's own body and content type (a plain endpoint: KrakenD's door).
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        b"User did not accept the cookie and tracking is not allowed"
    );
    assert!(r
        .headers
        .contains(&("content-type".into(), "text/plain".into())));
    // KrakenD's policies see the headers the backend gets: an unlisted cookie is not there.
    let (_, h) = request("/track-unlisted", &[("cookie", "GDPR=yes")]);
    assert_eq!(status(&h), Some(500));
    assert_eq!(
        h.reply.unwrap().json()["error"]["message"],
        "the request does not pass the security policies (req)"
    );

    assert_eq!(status(&request("/nick/kpacha", &[]).1), None);
    assert_eq!(status(&request("/nick/bob", &[]).1), Some(403));
    assert_eq!(status(&request("/weekdays", &[]).1), None);
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request("GET", "/weekdays", &[]);
    h.now = 1_705_224_600; // 2024-01-14, a Sunday
    flow.on_request_headers(&mut h, true);
    assert_eq!(status(&h), Some(403));
}

#[test]
fn jwt_checks_read_the_verified_claims() {
    let run = |claims: Value| {
        let mut flow = Flow::new(gateway());
        let mut h = MockHost::request("GET", "/jwt/k", &[]);
        h.now = 1_705_311_000; // a Monday: day 1
        h.metadata = Some(encode_jwt_metadata(&[("tollgate_endpoint_4", &claims)]));
        flow.on_request_headers(&mut h, true);
        status(&h)
    };
    assert_eq!(
        run(json!({"user_id": "u", "enabled_days": [1, 2, 3, 4, 5]})),
        None
    );
    assert_eq!(run(json!({"user_id": "u", "enabled_days": [6]})), Some(401));
    assert_eq!(run(json!({"enabled_days": [1]})), Some(401));
}

/// The backend answers `body`; what the client gets (status, body).
fn answer(path: &str, body: &str) -> (String, Vec<u8>) {
    let (mut flow, h) = request(path, &[]);
    assert_eq!(status(&h), None);
    let mut h = h.with_response_headers(&[
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-length", &body.len().to_string()),
    ]);
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Pause);
    let (first, rest) = body.split_at(body.len() / 2);
    h.response_chunk = first.as_bytes().to_vec();
    assert_eq!(
        flow.on_response_body(&mut h, first.len(), false),
        Action::Pause
    );
    h.response_chunk = body.as_bytes().to_vec();
    assert_eq!(
        flow.on_response_body(&mut h, body.len(), true),
        Action::Continue
    );
    let _ = rest;
    (
        h.response_values(":status")[0].to_string(),
        h.response_chunk,
    )
}

#[test]
fn answer_checks_ask_for_an_uncompressed_answer() {
    // A gzip answer would be no JSON to resp_data: every answer would be refused.
    let (_, h) = request("/gz-checked", &[("accept-encoding", "gzip, br")]);
    assert_eq!(status(&h), None);
    assert!(h.request_values("accept-encoding").is_empty());
    // Endpoints without answer checks keep the client's choice.
    let (_, h) = request("/gz-plain", &[("accept-encoding", "gzip")]);
    assert_eq!(h.request_values("accept-encoding"), vec!["gzip"]);
}

#[test]
fn answer_checks_hold_a_plain_answer_whole() {
    let good = r#"{"github": {"name": "KrakenD", "company": "KrakenD"}}"#;
    let (s, body) = answer("/github/kpacha", good);
    assert_eq!((s.as_str(), body), ("200", good.as_bytes().to_vec()));
    let (s, body) = answer("/github/kpacha", r#"{"github": {"name": "KrakenD"}}"#);
    assert_eq!(s, "502");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["error"]["message"],
        "the backend's answer does not pass the CEL check #0 (validation/cel)"
    );
    // Not JSON: resp_data is null, the check fails.
    assert_eq!(answer("/github/kpacha", "<html>").0, "502");
}

#[test]
fn configuration_errors() {
    let compile = |ep: Value| {
        Gateway::from_value(&json!({"version": 3, "endpoints": [ep]}), &|_: &str| None)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    // KrakenD's placeholder example (cel-L69) names no variable tollgate knows.
    let e = compile(json!({"endpoint": "/wrapped", "backend": plain("/"),
        "extra_config": {"validation/cel": [{"check_expr": "CONDITION1 && CONDITION2"}]}}));
    assert!(
        e.starts_with("$.endpoints[0].extra_config.validation/cel[0].check_expr: \"CONDITION1 && CONDITION2\": at offset 0: unknown variable 'CONDITION1'"),
        "{e}"
    );
    // cel-L314: a JWT check without auth/validator (KrakenD would skip it).
    let e = compile(json!({"endpoint": "/c/{id}", "backend": plain("/"),
        "extra_config": {"validation/cel": [{"check_expr": "has(JWT.user_id)"}]}}));
    assert_eq!(e, "$.endpoints[0].extra_config.validation/cel[0].check_expr: reads JWT: needs auth/validator on this endpoint (KrakenD skips such checks without one)");
}

/// pge-ep-llm-conditional: moderators reach OpenAI by a policy on X-Role, others Gemini (the
/// fallback); plus an answer policy and a backend request check.
fn llm_gateway() -> Rc<Gateway> {
    let openai = json!({"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/responses",
        "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "k", "variables": {"model": "gpt-4o-mini"}}}},
            "backend/conditional": {"strategy": "policy", "value": "req_headers['X-Role'][0].contains('moderator')"}}});
    let gemini = json!({"host": ["http://127.0.0.1:9002"], "url_pattern": "/v1beta/models/gemini-2.5-flash:generateContent",
        "extra_config": {"ai/llm": {"gemini": {"v1beta": {"credentials": "k", "variables": {"candidate_count": 1}}}},
            "backend/conditional": {"strategy": "fallback"}}});
    let guarded = json!({"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
        "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "k", "variables": {"model": "gpt-4o-mini"}}}},
            "validation/cel": [{"check_expr": "req_headers['X-Tier'][0] == 'gold'"}]}});
    let doc = json!({"version": 3, "endpoints": [
        {"endpoint": "/llm-conditional", "method": "POST", "input_headers": ["X-Role", "X-User-Id"],
         "backend": [openai, gemini]},
        {"endpoint": "/guarded", "method": "POST", "input_headers": ["X-Tier"], "backend": [guarded],
         "extra_config": {"security/policies": {"resp": {"policies": ["!resp_data.ai_gateway_response[0].contents[0].contains('secret')"],
            "error": {"status": 403, "body": "{\"error\": \"answer blocked\"}", "content_type": "application/json"}}}}},
    ]});
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

fn llm(path: &str, headers: &[(&str, &str)], body: Value) -> (Flow, MockHost) {
    let body = body.to_string();
    let mut flow = Flow::new(llm_gateway());
    let mut h = MockHost::request("POST", path, headers).with_body(body.as_bytes());
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    flow.on_request_body(&mut h, body.len(), true);
    (flow, h)
}

#[test]
fn policy_routing() {
    let ask = json!({"contents": "Tell me a joke"});
    let (_, h) = llm(
        "/llm-conditional",
        &[("x-role", "reader,moderator")],
        ask.clone(),
    );
    assert_eq!(h.request_values(":path"), vec!["/v1/chat/completions"]);
    let (_, h) = llm("/llm-conditional", &[("x-role", "reader")], ask.clone());
    assert_eq!(
        h.request_values(":path"),
        vec!["/v1beta/models/gemini-2.5-flash:generateContent"]
    );
    // No X-Role: the policy errs (no such key), so it does not match: the fallback.
    let (_, h) = llm("/llm-conditional", &[], ask);
    assert_eq!(
        h.request_values(":path"),
        vec!["/v1beta/models/gemini-2.5-flash:generateContent"]
    );
}

#[test]
fn llm_backend_checks_and_answer_policies() {
    let ask = json!({"contents": "hi"});
    let (_, h) = llm("/guarded", &[("x-tier", "silver")], ask.clone());
    assert_eq!(status(&h), Some(403));
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let answer_to = |ask: &Value, text: &str| {
        let (mut flow, h) = llm("/guarded", &[("x-tier", "gold")], ask.clone());
        assert_eq!(status(&h), None);
        let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
        .to_string();
        let mut h =
            h.with_response_headers(&[(":status", "200"), ("content-type", "application/json")]);
        flow.on_response_headers(&mut h, false);
        h.response_chunk = body.as_bytes().to_vec();
        flow.on_response_body(&mut h, body.len(), true);
        (
            h.response_values(":status")[0].to_string(),
            h.response_values("content-type")[0].to_string(),
            String::from_utf8(h.response_chunk).unwrap(),
        )
    };
    let answer = |text: &str| answer_to(&ask, text);
    let (s, _, body) = answer("a joke");
    assert_eq!(s, "200");
    assert_eq!(
        body,
        r#"{"ai_gateway_response":[{"contents":["a joke"]}],"usage":"0"}"#
    );
    // The configured error, as is, for KrakenD's client.
    let (s, ct, body) = answer("the secret is 42");
    assert_eq!(
        (s.as_str(), ct.as_str(), body.as_str()),
        ("403", "application/json", "{\"error\": \"answer blocked\"}")
    );
    // A chat client's answer is checked in KrakenD's shape too (the policy's): a benign
    // answer passes, a blocked one is refused in the client's error shape.
    let (s, _, body) = answer_to(&chat, "a joke");
    assert_eq!(s, "200", "{body}");
    assert!(body.contains("chat.completion"), "{body}");
    let (s, ct, body) = answer_to(&chat, "the secret is 42");
    assert_eq!((s.as_str(), ct.as_str()), ("403", "application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["message"], "{\"error\": \"answer blocked\"}");
    // A stream cannot be checked whole: refused before any provider has it.
    let (_, h) = llm(
        "/guarded",
        &[("x-tier", "gold")],
        json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let r = h.reply.unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("stream"))
    );
}

/// KrakenD's body generator on a plain backend (the AI security page's masking template,
/// corpus doc-ai-gateway-security-L179), inlined as `tollgate envoy` inlines its `path`.
fn generator_gateway() -> Rc<Gateway> {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/krakend_templates/doc-ai-gateway-security-body_mask.tmpl"
    ))
    .unwrap();
    let template = crate::support::encoding::base64_encode(src.as_bytes());
    let doc = json!({"version": 3, "endpoints": [
        {"endpoint": "/req-mask", "method": "POST", "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/echo",
            "extra_config": {"modifier/request-body-generator": {"template": template, "content_type": "application/json", "debug": true}}}]},
        {"endpoint": "/form/{username}", "method": "POST", "input_headers": ["X-User"], "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/echo",
            "extra_config": {"modifier/body-generator": {"content_type": "application/x-www-form-urlencoded",
                "template": crate::support::encoding::base64_encode(b"username={{ .req_params.Username }}&h={{ index .req_headers \"X-User\" 0 }}&b={{ .req_body.a }}")}}}]},
    ]});
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

#[test]
fn body_generator_makes_the_backends_body() {
    let send = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut flow = Flow::new(generator_gateway());
        let mut h = MockHost::request("POST", path, headers).with_body(body);
        assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
        flow.on_request_body(&mut h, body.len(), true);
        h
    };
    let h = send(
        "/req-mask",
        &[("content-type", "application/json")],
        br#"{"message": "my card 4111 1111 1111 1234"}"#,
    );
    assert_eq!(status(&h), None);
    let v: Value = serde_json::from_slice(&h.request_body).unwrap();
    assert_eq!(v, json!({"message": "my cardXXX-1234"}));
    assert_eq!(
        h.request_values("content-length"),
        vec![h.request_body.len().to_string()]
    );
    assert_eq!(h.request_values("content-type"), vec!["application/json"]);
    // Params, the forwarded header and the body in a form; an unlisted header is not data.
    let h = send(
        "/form/kpacha",
        &[("x-user", "u-1"), ("x-other", "o")],
        br#"{"a": 1}"#,
    );
    assert_eq!(
        String::from_utf8(h.request_body.clone()).unwrap(),
        "username=kpacha&h=u-1&b=1"
    );
    assert_eq!(
        h.request_values("content-type"),
        vec!["application/x-www-form-urlencoded"]
    );
    // A render error (no X-User to index) is the gateway's 500, never the template text.
    let h = send("/form/kpacha", &[], b"{}");
    let r = h.reply.unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json()["error"]["message"],
        "the backend's request body template failed: line 1 column 42: index of untyped nil"
    );
    // Not JSON where the template indexes the body: 500 too.
    assert_eq!(status(&send("/req-mask", &[], b"plain text")), Some(500));
    // No body at all: Envoy cannot add one.
    let mut flow = Flow::new(generator_gateway());
    let mut h = MockHost::request("POST", "/req-mask", &[]);
    flow.on_request_headers(&mut h, true);
    assert_eq!(status(&h), Some(400));
}

#[test]
fn body_generator_configuration_errors() {
    let compile = |b: Value| {
        let doc = json!({"version": 3, "endpoints": [{"endpoint": "/x", "method": "POST", "backend": [b]}]});
        Gateway::from_value(&doc, &|_: &str| None)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let t = crate::support::encoding::base64_encode(b"{}");
    let e = compile(
        json!({"host": ["http://h"], "url_pattern": "/v1/chat/completions", "extra_config": {
        "ai/llm": {"openai": {"v1": {"credentials": "k"}}}, "modifier/body-generator": {"template": t}}}),
    );
    assert_eq!(e, "$.endpoints[0].backend[0].extra_config.modifier/body-generator: an ai/llm backend's request is made by its provider's translation: use a plain backend for a templated vendor request");
    let e = compile(
        json!({"host": ["http://h"], "url_pattern": "/v1/chat/completions", "extra_config": {
        "ai/llm": {"openai": {"v1": {"credentials": "k"}}}, "modifier/response-body-generator": {"template": t}}}),
    );
    assert_eq!(e, "$.endpoints[0].backend[0].extra_config.modifier/response-body-generator: an ai/llm backend's answer is made by its front door's translation: use a plain backend for a templated answer");
    let e = compile(
        json!({"host": ["http://h"], "url_pattern": "/", "extra_config": {
        "modifier/body-generator": {"template": crate::support::encoding::base64_encode(b"{{ template \"x\" }}")}}}),
    );
    assert!(e.starts_with("$.endpoints[0].backend[0].extra_config.modifier/body-generator.template: line 1 column 1: "), "{e}");
}

#[test]
fn answer_template_makes_the_clients_answer() {
    // KrakenD's pre-2.11 AI example: a plain backend's OpenAI Responses answer in KrakenD's
    // unified shape, after an answer check.
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/krakend_templates/llm-pre-2.11-generate.response.openai.tmpl"
    ))
    .unwrap();
    let doc = json!({"version": 3, "endpoints": [{"endpoint": "/gen", "input_headers": ["*"], "backend": [{
        "host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/responses",
        "extra_config": {"modifier/response-body-generator": {"template": crate::support::encoding::base64_encode(src.as_bytes())},
            "validation/cel": [{"check_expr": "resp_metadata_status == 200"}]}}]}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap());
    let run = |status: &str, body: &str| {
        let mut flow = Flow::new(Rc::clone(&gw));
        let mut h = MockHost::request("GET", "/gen", &[("accept-encoding", "gzip")]);
        flow.on_request_headers(&mut h, true);
        assert!(h.request_values("accept-encoding").is_empty());
        let mut h = h.with_response_headers(&[
            (":status", status),
            ("content-type", "application/json"),
            ("content-length", &body.len().to_string()),
        ]);
        assert_eq!(flow.on_response_headers(&mut h, false), Action::Pause);
        h.response_chunk = body.as_bytes().to_vec();
        flow.on_response_body(&mut h, body.len(), true);
        h
    };
    let answer = r#"{"output": [{"content": [{"type": "output_text", "text": "Yo"}]}], "usage": {"total_tokens": 12}}"#;
    let h = run("200", answer);
    let v: Value = serde_json::from_slice(&h.response_chunk).unwrap();
    assert_eq!(
        v,
        json!({"ai_gateway_response": [{"contents": ["Yo"]}], "usage": "12"})
    );
    assert!(h.response_values("content-length").is_empty());
    // The check refuses first: the template never runs on that answer.
    let h = run("500", answer);
    assert_eq!(h.response_values(":status"), vec!["502"]);
    // An answer the template cannot read (no output): a 500, not a half-made body.
    let h = run("200", r#"{"error": "x"}"#);
    assert_eq!(h.response_values(":status"), vec!["500"]);
}
