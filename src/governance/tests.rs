#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Governance through the whole filter pipeline ([`crate::filter::Flow`] over MockHost).

use crate::config::Gateway;
use crate::filter::{Action, Flow};
use crate::host::mock::MockHost;
use serde_json::{json, Value};
use std::rc::Rc;

fn gateway(endpoints: Value) -> Rc<Gateway> {
    let doc = json!({"version": 3, "endpoints": endpoints});
    let gw = Gateway::from_value(&doc, &|_| None).unwrap();
    Rc::new(gw)
}

fn llm_endpoint(path: &str, extra: Value) -> Value {
    json!({"endpoint": path, "method": "POST", "extra_config": extra, "backend": [{
        "host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
        "extra_config": {"ai/llm": {"openai-compatible": {"v1": {}}}}}]})
}

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// Runs request headers and body; returns the host (reply or rewritten request).
fn send(flow: &mut Flow, h: &mut MockHost) -> Action {
    let a = flow.on_request_headers(h, false);
    if h.reply.is_some() || a == Action::Continue && h.request_body.is_empty() {
        return a;
    }
    let size = h.request_body.len();
    flow.on_request_body(h, size, true)
}

fn answer(flow: &mut Flow, h: &mut MockHost, body: &str) {
    h.response_headers = vec![(":status".into(), "200".into())];
    assert_eq!(flow.on_response_headers(h, false), Action::Pause);
    h.response_chunk = body.as_bytes().to_vec();
    flow.on_response_body(h, body.len(), true);
}

#[test]
fn client_rate_limit_429_in_the_front_doors_shape() {
    let rl = json!({"qos/ratelimit/router": {"client_max_rate": 2, "every": "10s", "strategy": "header", "key": "Authorization"}});
    let gw = gateway(json!([llm_endpoint("/v1/messages", rl)]));
    let mut shared = None;
    // One key in three spellings is one client (scheme case and spacing do not matter).
    for (i, key) in ["Bearer a", "bearer a", "BEARER  a", "Bearer b"]
        .iter()
        .enumerate()
    {
        let mut h = MockHost::request("POST", "/v1/messages", &[("authorization", key)]).with_body(
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        if let Some(s) = &shared {
            h.shared = Rc::clone(s);
        } else {
            gw.init_shared(&mut h);
            shared = Some(Rc::clone(&h.shared));
        }
        let mut flow = Flow::new(Rc::clone(&gw));
        send(&mut flow, &mut h);
        if i == 2 {
            let r = h.reply.clone().unwrap();
            assert_eq!(r.status, 429);
            assert!(r.headers.contains(&("retry-after".into(), "5".into())));
            assert_eq!(r.json()["type"], "error");
            assert_eq!(r.json()["error"]["type"], "rate_limit_error");
        } else {
            assert!(h.reply.is_none(), "request {i}: {:?}", h.reply);
        }
    }
}

#[test]
fn tokens_of_an_answer_are_charged_to_the_client() {
    let rl = json!({"qos/ratelimit/router": {"client_max_tokens": 10, "client_tokens_every": "1m", "strategy": "header", "key": "x-user"}});
    let gw = gateway(json!([llm_endpoint("/v1/chat/completions", rl)]));
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[("x-user", "u1")])
        .with_body(CHAT.as_bytes());
    gw.init_shared(&mut h);
    let mut flow = Flow::new(Rc::clone(&gw));
    assert_eq!(send(&mut flow, &mut h), Action::Continue);
    answer(
        &mut flow,
        &mut h,
        r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":7,"total_tokens":15}}"#,
    );
    let mut h2 = MockHost::request("POST", "/v1/chat/completions", &[("x-user", "u1")])
        .with_body(CHAT.as_bytes());
    h2.shared = Rc::clone(&h.shared);
    h2.now = h.now + 1;
    send(&mut Flow::new(Rc::clone(&gw)), &mut h2);
    let r = h2.reply.unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (429, json!("rate_limit_exceeded"))
    );
    assert_eq!(r.json()["error"]["type"], "tokens");
}

#[test]
fn plain_endpoint_schema_holds_the_headers_and_names_the_path() {
    let gw = gateway(json!([{"endpoint": "/ask", "method": "POST",
        "extra_config": {"validation/json-schema": {"type": "object", "required": ["q"], "properties": {"q": {"type": "string", "maxLength": 5}}}},
        "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/a"}]}]));
    let mut h = MockHost::request("POST", "/ask", &[]).with_body(br#"{"q":"too long"}"#);
    let mut flow = Flow::new(Rc::clone(&gw));
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    flow.on_request_body(&mut h, 16, true);
    let r = h.reply.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "$.q");
    assert_eq!(
        r.json()["error"]["message"],
        "the request body does not match the endpoint's schema: $.q: must be at most 5 characters long"
    );
    let mut h = MockHost::request("POST", "/ask", &[]).with_body(br#"{"q":"ok"}"#);
    let mut flow = Flow::new(Rc::clone(&gw));
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    assert_eq!(flow.on_request_body(&mut h, 10, true), Action::Continue);
    assert!(h.reply.is_none());
}

#[test]
fn max_payload_by_content_length_and_by_body() {
    let gw = gateway(
        json!([{"endpoint": "/up", "method": "POST", "extra_config": {"proxy": {"max_payload": 8}},
        "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/a"}]}]),
    );
    let mut h = MockHost::request("POST", "/up", &[("content-length", "9")]);
    Flow::new(Rc::clone(&gw)).on_request_headers(&mut h, false);
    assert_eq!(h.reply.unwrap().status, 413);
    let mut h = MockHost::request("POST", "/up", &[]).with_body(b"123456789");
    let mut flow = Flow::new(Rc::clone(&gw));
    flow.on_request_headers(&mut h, false);
    flow.on_request_body(&mut h, 9, true);
    assert_eq!(h.reply.unwrap().status, 413);
}

#[test]
fn template_and_decorator_build_the_upstream_request() {
    let extra = json!({
        "ai/prompt-template": {"template": "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"Summarise for {{ header.x-audience }}: {{ body.text }}\"}]}"},
        "ai/prompt-decorator": {"prepend": [{"role": "system", "content": "Be brief."}], "append": [{"role": "user", "content": "Use French."}]}
    });
    let gw = gateway(json!([llm_endpoint("/summarise", extra)]));
    let mut h = MockHost::request("POST", "/summarise", &[("x-audience", "kids")])
        .with_body(br#"{"text":"a \"quoted\" story"}"#);
    let mut flow = Flow::new(Rc::clone(&gw));
    assert_eq!(send(&mut flow, &mut h), Action::Continue);
    let sent: Value = serde_json::from_slice(&h.request_body).unwrap();
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "Summarise for kids: a \"quoted\" story"},
               {"role": "user", "content": "Use French."}])
    );
    let mut h = MockHost::request("POST", "/summarise", &[]).with_body(br#"{"text":"x"}"#);
    send(&mut Flow::new(Rc::clone(&gw)), &mut h);
    let r = h.reply.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "the template value {{ header.x-audience }} is missing in the request"
    );
}

#[test]
fn structured_output_is_validated_502() {
    let extra = json!({"validation/response-json-schema": {"schema": {"type": "object", "required": ["city"]}}});
    let gw = gateway(json!([llm_endpoint("/v1/chat/completions", extra)]));
    let reply = |content: &str| {
        let mut h =
            MockHost::request("POST", "/v1/chat/completions", &[]).with_body(CHAT.as_bytes());
        let mut flow = Flow::new(Rc::clone(&gw));
        send(&mut flow, &mut h);
        let body = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]});
        answer(&mut flow, &mut h, &body.to_string());
        let status = h.response_values(":status")[0].to_string();
        (
            status,
            serde_json::from_slice::<Value>(&h.response_chunk).unwrap(),
        )
    };
    let (status, body) = reply(r#"{"city": "Paris"}"#);
    assert_eq!(status, "200");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        r#"{"city": "Paris"}"#
    );
    let (status, body) = reply(r#"{"town": "Paris"}"#);
    assert_eq!(status, "502");
    assert_eq!(
        body["error"]["message"],
        "the model's answer does not match the endpoint's response schema: $.city: is required"
    );
    let (status, body) = reply("Paris");
    assert_eq!(status, "502");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the assistant message is not JSON"));
}

#[test]
fn llm_only_settings_are_refused_on_plain_endpoints() {
    let doc = json!({"version": 3, "endpoints": [{"endpoint": "/a", "extra_config": {"ai/prompt-decorator": {"append": [{"role": "user", "content": "x"}]}},
        "backend": [{"host": ["http://h"], "url_pattern": "/"}]}]});
    assert_eq!(
        Gateway::from_value(&doc, &|_| None).unwrap_err().to_string(),
        "$.endpoints[0].extra_config.ai/prompt-decorator: only applies to endpoints with ai/llm backends"
    );
}

#[test]
fn failover_retries_the_next_provider_translated_through_callouts() {
    let doc = json!({"version": 3, "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST", "timeout": "2s",
        "extra_config": {"ai/routing": {"failover": true}},
        "backend": [
            {"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
             "extra_config": {"ai/llm": {"openai-compatible": {"v1": {}}},
                              "qos/circuit-breaker": {"max_errors": 1, "interval": 60, "timeout": 30}}},
            {"host": ["http://127.0.0.1:9002"], "url_pattern": "/v1/messages",
             "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "ak", "variables": {"model": "claude-x"}}}}}}]}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_| None).unwrap());
    let mut h = MockHost::request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer client")],
    )
    .with_body(CHAT.as_bytes());
    gw.init_shared(&mut h);
    let mut flow = Flow::new(Rc::clone(&gw));
    assert_eq!(send(&mut flow, &mut h), Action::Pause);
    let first = h.callouts[0].clone();
    assert_eq!(first.cluster, "tg_http_127.0.0.1_9001");
    assert_eq!(first.timeout_ms, 2000);
    let hv = |c: &crate::host::mock::Callout, n: &str| {
        c.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(hv(&first, ":path").as_deref(), Some("/v1/chat/completions"));
    assert_eq!(hv(&first, "authorization"), None); // the client's credential never goes out
    assert_eq!(hv(&first, "x-tollgate-cluster"), None);
    // The first provider fails: the second is tried, translated for Anthropic.
    h.callout_answer = (
        vec![(":status".into(), "503".into())],
        br#"{"error":{"message":"down"}}"#.to_vec(),
    );
    flow.on_callout(&mut h, 1, 27);
    assert!(h.reply.is_none());
    let second = h.callouts[1].clone();
    assert_eq!(second.cluster, "tg_http_127.0.0.1_9002");
    assert_eq!(hv(&second, ":path").as_deref(), Some("/v1/messages"));
    assert_eq!(hv(&second, "x-api-key").as_deref(), Some("ak"));
    assert_eq!(
        hv(&second, "content-length"),
        Some(second.body.len().to_string())
    );
    let sent: Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(sent["model"], "claude-x");
    let answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"bonjour"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#;
    h.callout_answer = (
        vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
        ],
        answer.to_vec(),
    );
    flow.on_callout(&mut h, 2, answer.len());
    let r = h.reply.clone().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(r.json()["choices"][0]["message"]["content"], "bonjour");
    // The failed provider's breaker is open: the next request goes straight to the second.
    let mut h2 = MockHost::request("POST", "/v1/chat/completions", &[]).with_body(CHAT.as_bytes());
    h2.shared = Rc::clone(&h.shared);
    h2.now = h.now;
    assert_eq!(send(&mut Flow::new(Rc::clone(&gw)), &mut h2), Action::Pause);
    assert_eq!(h2.callouts.len(), 1);
    assert_eq!(h2.callouts[0].cluster, "tg_http_127.0.0.1_9002");
}

#[test]
fn a_failed_callout_without_answer_fails_over_and_the_last_error_is_returned() {
    let doc = json!({"version": 3, "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST",
        "extra_config": {"ai/routing": {"failover": true}},
        "backend": [
            {"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions", "extra_config": {"ai/llm": {"openai-compatible": {"v1": {}}}}},
            {"host": ["http://127.0.0.1:9002"], "url_pattern": "/v1/chat/completions", "extra_config": {"ai/llm": {"openai-compatible": {"v1": {}}}}}]}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_| None).unwrap());
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[]).with_body(CHAT.as_bytes());
    let mut flow = Flow::new(Rc::clone(&gw));
    send(&mut flow, &mut h);
    assert_eq!(h.callouts[0].timeout_ms, 600_000);
    h.callout_answer = (vec![], vec![]); // timeout or connection failure
    flow.on_callout(&mut h, 1, 0);
    assert_eq!(h.callouts.len(), 2);
    flow.on_callout(&mut h, 99, 0); // a stale token is ignored
    assert!(h.reply.is_none());
    h.callout_answer = (
        vec![(":status".into(), "429".into())],
        br#"{"error":{"message":"slow down","type":"rate_limit"}}"#.to_vec(),
    );
    let n = h.callout_answer.1.len();
    flow.on_callout(&mut h, 2, n);
    let r = h.reply.unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["message"], "slow down");
}

#[test]
fn an_attempt_after_a_refused_translation_is_still_translated_back() {
    // Found by the flow fuzz target: the first backend cannot take the request (Gemini
    // needs a user or assistant message), the next one answers, and its answer reached the
    // client untranslated, in the provider's own API.
    let doc = json!({"version": 3, "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST",
        "extra_config": {"ai/routing": {"failover": true}},
        "backend": [
            {"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1beta/models",
             "extra_config": {"ai/llm": {"gemini": {"v1beta": {"credentials": "g", "variables": {"model": "gemini-2.0-flash"}}}}}},
            {"host": ["http://127.0.0.1:9002"], "url_pattern": "/v1/messages",
             "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "ak", "variables": {"model": "claude-x"}}}}}}]}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_| None).unwrap());
    let body =
        r#"{"model":"gemini-2.0-flash","messages":[{"role":"system","content":"Be brief."}]}"#;
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[]).with_body(body.as_bytes());
    let mut flow = Flow::new(Rc::clone(&gw));
    assert_eq!(send(&mut flow, &mut h), Action::Pause);
    assert_eq!(h.callouts.len(), 1, "{:?}", h.reply);
    assert_eq!(h.callouts[0].cluster, "tg_http_127.0.0.1_9002");
    let answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}"#;
    h.callout_answer = (
        vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
        ],
        answer.to_vec(),
    );
    flow.on_callout(&mut h, 1, answer.len());
    let r = h.reply.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(r.json()["choices"][0]["message"]["content"], "ok");
}

#[test]
fn stream_usage_is_charged_at_the_end_of_the_stream() {
    let rl = json!({"qos/ratelimit/router": {"client_max_tokens": 10, "strategy": "header", "key": "x-user", "client_tokens_every": "1h"}});
    let gw = gateway(json!([llm_endpoint("/v1/chat/completions", rl)]));
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[("x-user", "u")])
        .with_body(body.as_bytes());
    gw.init_shared(&mut h);
    let mut flow = Flow::new(Rc::clone(&gw));
    assert_eq!(send(&mut flow, &mut h), Action::Continue);
    h.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "text/event-stream".into()),
    ];
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Continue);
    let chunks = [
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hey\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":6,\"total_tokens\":15}}\n\ndata: [DONE]\n\n",
    ];
    for c in chunks {
        h.response_chunk = c.as_bytes().to_vec();
        flow.on_response_body(&mut h, c.len(), false);
    }
    let check = |h: &MockHost| {
        let mut h2 = MockHost::request("POST", "/v1/chat/completions", &[("x-user", "u")])
            .with_body(CHAT.as_bytes());
        h2.shared = Rc::clone(&h.shared);
        h2.now = h.now;
        send(&mut Flow::new(Rc::clone(&gw)), &mut h2);
        h2.reply.map(|r| r.status)
    };
    assert_eq!(check(&h), None); // charged only when the stream ends
    h.response_chunk.clear();
    flow.on_response_body(&mut h, 0, true);
    assert_eq!(check(&h), Some(429));
}

/// `qos/ratelimit/tiered` with the plan from the API key's role (KrakenD's tiers example):
/// the plan is the key's, not what a client writes in the plan header.
#[test]
fn tiers_follow_the_api_keys_role_not_the_clients_header() {
    let doc = json!({"version": 3,
        "extra_config": {"auth/api-keys": {"propagate_role": "X-Krakend-Role", "keys": [
            {"key": "gold-key", "roles": ["user", "gold"]}, {"key": "silver-key", "roles": ["user", "silver"]}]}},
        "endpoints": [{"endpoint": "/test", "extra_config": {
            "auth/api-keys": {"roles": ["gold", "silver"]},
            "qos/ratelimit/tiered": {"tier_key": "X-Krakend-Role", "tiers": [
                {"tier_value": "gold", "ratelimit": {"client_max_rate": 3, "every": "10s", "strategy": "header", "key": "Authorization"}},
                {"tier_value": "silver", "ratelimit": {"client_max_rate": 1, "every": "10s", "strategy": "header", "key": "Authorization"}}]}},
            "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/__debug"}]}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_| None).unwrap());
    assert!(gw.warnings.is_empty(), "{:?}", gw.warnings);
    let mut shared = None;
    let mut call = |key: &str| {
        let headers = [("authorization", key), ("x-krakend-role", "gold")];
        let mut h = MockHost::request("GET", "/test", &headers);
        h.now_ms = Some(5_000);
        match &shared {
            Some(s) => h.shared = Rc::clone(s),
            None => {
                gw.init_shared(&mut h);
                shared = Some(Rc::clone(&h.shared));
            }
        }
        Flow::new(Rc::clone(&gw)).on_request_headers(&mut h, true);
        h.reply.map(|r| r.status)
    };
    // The silver key claims gold in the header: it gets silver's one request.
    assert_eq!(call("Bearer silver-key"), None);
    assert_eq!(call("Bearer silver-key"), Some(429));
    for _ in 0..3 {
        assert_eq!(call("Bearer gold-key"), None);
    }
    assert_eq!(call("Bearer gold-key"), Some(429));
}

/// A plan header nobody in the gateway writes is the client's word: accepted (KrakenD's
/// behaviour) with a warning saying so.
#[test]
fn a_client_stated_tier_is_warned_about() {
    let doc = json!({"version": 3, "extra_config": {"qos/ratelimit/tiered": {"tier_key": "X-Plan", "tiers": [
            {"tier_value_as": "*", "ratelimit": {"max_rate": 1}}]}},
        "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://h"], "url_pattern": "/"}]},
                      {"endpoint": "/b", "backend": [{"host": ["http://h"], "url_pattern": "/"}]}]});
    let gw = Gateway::from_value(&doc, &|_| None).unwrap();
    assert_eq!(gw.warnings, vec!["$.extra_config.qos/ratelimit/tiered.tier_key: header x-plan comes from the client (no auth/api-keys propagate_role or auth/validator propagate_claims writes it): a client picks its own tier"]);
    // The service's tiers are one set of buckets for every endpoint.
    let gw = Rc::new(gw);
    let mut h = MockHost::request("GET", "/a", &[]);
    gw.init_shared(&mut h);
    h.now_ms = Some(1_000);
    Flow::new(Rc::clone(&gw)).on_request_headers(&mut h, true);
    assert!(h.reply.is_none());
    let mut h2 = MockHost::request("GET", "/b", &[]);
    h2.shared = Rc::clone(&h.shared);
    h2.now_ms = Some(1_000);
    Flow::new(Rc::clone(&gw)).on_request_headers(&mut h2, true);
    assert_eq!(h2.reply.unwrap().status, 503);
}

/// Service-level `router.max_payload` (KrakenD EE) limits every endpoint without its own
/// `proxy.max_payload`: 413 by content-length and by the body itself (a chunked one).
#[test]
fn service_router_max_payload_applies_to_every_endpoint() {
    let doc = json!({"version": 3, "extra_config": {"router": {"max_payload": 8, "hide_version_header": true}},
        "endpoints": [
            {"endpoint": "/up", "method": "POST", "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/a"}]},
            {"endpoint": "/own", "method": "POST", "extra_config": {"proxy": {"max_payload": 20}},
             "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/a"}]},
            llm_endpoint("/v1/chat/completions", json!({}))]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_| None).unwrap());
    assert_eq!(gw.warnings, vec!["$.extra_config.router: hide_version_header: KrakenD settings with no effect inside Envoy; ignored"]);
    let status = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut h = MockHost::request("POST", path, headers).with_body(body);
        let mut flow = Flow::new(Rc::clone(&gw));
        send(&mut flow, &mut h);
        h.reply.map(|r| r.status)
    };
    assert_eq!(
        status("/up", &[("content-length", "9")], b"123456789"),
        Some(413)
    );
    assert_eq!(status("/up", &[], b"123456789"), Some(413));
    assert_eq!(status("/up", &[], b"12345678"), None);
    assert_eq!(status("/own", &[], b"123456789"), None);
    assert_eq!(status("/own", &[], &[b'x'; 21]), Some(413));
    assert_eq!(
        status("/v1/chat/completions", &[], CHAT.as_bytes()),
        Some(413)
    );
}

/// Router options that change what a client gets or who it is are refused, never skipped.
#[test]
fn router_options_with_an_effect_are_refused() {
    for (field, v) in [
        ("error_body", json!({"404": {"msg": "x"}})),
        ("trusted_proxies", json!(["10.0.0.0/8"])),
        ("forwarded_by_client_ip", json!(true)),
        ("decompress_gzip", json!(1024)),
    ] {
        let doc = json!({"version": 3, "extra_config": {"router": {field: v}}, "endpoints": []});
        let e = Gateway::from_value(&doc, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("$.extra_config.router.{field}: ")),
            "{e}"
        );
    }
    let doc = json!({"version": 3, "extra_config": {"router": {"forwarded_by_client_ip": false, "typo": 1}}, "endpoints": []});
    assert_eq!(
        Gateway::from_value(&doc, &|_| None)
            .unwrap_err()
            .to_string(),
        "$.extra_config.router.typo: unknown field"
    );
}
