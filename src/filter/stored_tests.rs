//! The stored Responses API through the whole pipeline ([`Flow`] over MockHost): the routes,
//! what reaches the backend, the refusals, and a background call charged exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::filter::Flow;
use crate::host::mock::MockHost;
use crate::routing::CLUSTER_HEADER;
use crate::support::calendar::Unit;
use serde_json::{json, Value};

/// `/v1/responses` on OpenAI (`gpt-*`, the Responses API) and Anthropic (`claude`), with a
/// token budget per `x-user`; `/claude/v1/responses` on Anthropic only; `/guarded/…` with
/// PII masking; API keys (role `user`) on every endpoint.
fn gateway() -> Rc<Gateway> {
    let openai = json!({"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/responses",
        "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-openai"}}}}});
    let claude = json!({"host": ["http://127.0.0.1:9002"], "url_pattern": "/v1/messages",
        "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-ant", "aliases": ["claude"]}}}}});
    let keys = json!({"roles": ["user"]});
    let doc = json!({"version": 3,
    "extra_config": {
        "auth/api-keys": {"keys": [{"key": "gk-1", "roles": ["user"]}, {"key": "gk-2", "roles": ["other"]}]},
        "governance/processors": {"quotas": [{"name": "q", "connection_name": "per-envoy", "rules": [
            {"name": "r", "limits": [{"amount": 1000000, "unit": "hour"}]}]}]}},
    "endpoints": [
        {"endpoint": "/v1/responses", "method": "POST", "backend": [openai.clone(), claude.clone()],
         "extra_config": {"auth/api-keys": keys.clone(),
            "governance/quota": {"quota_name": "q", "tier_key": "x-plan", "weight_key": "usage.total_tokens",
                "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "x-user"}]}}},
        {"endpoint": "/claude/v1/responses", "method": "POST", "backend": [claude],
         "extra_config": {"auth/api-keys": keys.clone()}},
        {"endpoint": "/guarded/v1/responses", "method": "POST", "backend": [openai],
         "extra_config": {"auth/api-keys": keys, "security/pii": {"action": "mask"}}}
    ]});
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

const KEY: (&str, &str) = ("authorization", "Bearer gk-1");

/// The request headers of `method path` on a fresh flow over `h`'s shared data.
fn send(h: &mut MockHost, method: &str, path: &str, headers: &[(&str, &str)]) -> Flow {
    let mut next = MockHost::request(method, path, headers);
    next.shared = std::mem::take(&mut h.shared);
    *h = next;
    let mut flow = Flow::new(gateway());
    flow.on_request_headers(h, true);
    flow
}

fn refused(h: &MockHost) -> (u32, Value) {
    let r = h.reply.clone().expect("a refusal");
    (r.status, r.json())
}

#[test]
fn each_route_goes_to_the_openai_backend_with_its_key() {
    let mut h = MockHost::default();
    let cases = [
        ("GET", "/v1/responses/resp_1", "/v1/responses/resp_1"),
        (
            "GET",
            "/v1/responses/resp_1?stream=true&starting_after=3",
            "/v1/responses/resp_1?stream=true&starting_after=3",
        ),
        ("DELETE", "/v1/responses/resp_1", "/v1/responses/resp_1"),
        ("POST", "/v1/responses/resp_1/cancel", "/v1/responses/resp_1/cancel"),
        (
            "GET",
            "/v1/responses/resp_1/input_items?limit=2&order=asc&include%5B%5D=file_search_call.results",
            "/v1/responses/resp_1/input_items?limit=2&order=asc&include%5B%5D=file_search_call.results",
        ),
    ];
    for (method, path, upstream) in cases {
        send(&mut h, method, path, &[KEY, ("x-user", "alice")]);
        assert!(h.reply.is_none(), "{method} {path}: {:?}", h.reply);
        assert_eq!(h.request_values(":path"), vec![upstream]);
        assert_eq!(h.request_values(":method"), vec![method]);
        assert_eq!(h.request_values("authorization"), vec!["Bearer sk-openai"]);
        assert_eq!(
            h.request_values(CLUSTER_HEADER),
            vec!["tg_http_127.0.0.1_9001"]
        );
    }
}

#[test]
fn bad_ids_methods_queries_and_callers_are_refused_with_nothing_sent() {
    let mut h = MockHost::default();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u32, &'a str);
    let cases: [Case; 14] = [
        (
            "GET",
            "/v1/responses/..%2F..%2Fadmin",
            &[KEY],
            400,
            "response_id",
        ),
        (
            "GET",
            "/v1/responses/resp_1%2Fcancel",
            &[KEY],
            400,
            "response_id",
        ),
        ("GET", "/v1/responses/resp%3F1", &[KEY], 400, "response_id"),
        (
            "GET",
            "/v1/responses/resp_1?stream=true%26x%3D1",
            &[KEY],
            400,
            "stream",
        ),
        (
            "GET",
            "/v1/responses/resp_1?model=gpt-4o",
            &[KEY],
            400,
            "model",
        ),
        (
            "GET",
            "/v1/responses/resp_1?stream=true/../../x",
            &[KEY],
            400,
            "stream",
        ),
        (
            "DELETE",
            "/v1/responses/resp_1?stream=true",
            &[KEY],
            400,
            "stream",
        ),
        ("PUT", "/v1/responses/resp_1", &[KEY], 405, ""),
        ("GET", "/v1/responses/resp_1/cancel", &[KEY], 405, ""),
        ("POST", "/v1/responses/resp_1", &[KEY], 405, ""),
        ("GET", "/v1/responses/resp_1/cancel/x", &[KEY], 404, ""),
        ("GET", "/v1/responses/resp_1", &[], 401, ""),
        (
            "GET",
            "/v1/responses/resp_1",
            &[("authorization", "Bearer gk-2")],
            403,
            "",
        ),
        (
            "GET",
            "/claude/v1/responses/resp_1",
            &[KEY],
            400,
            "response_id",
        ),
    ];
    for (method, path, headers, status, param) in cases {
        send(&mut h, method, path, headers);
        let (got, body) = refused(&h);
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body["error"]["type"].as_str().is_some(), "{body}");
        if !param.is_empty() {
            assert_eq!(body["error"]["param"], json!(param), "{method} {path}");
        }
        assert!(
            h.request_values(CLUSTER_HEADER).is_empty(),
            "{method} {path}"
        );
    }
    // PII masking on the endpoint: stored content would pass it (delete is fine).
    send(&mut h, "GET", "/guarded/v1/responses/resp_1", &[KEY]);
    let (status, body) = refused(&h);
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("PII masking"));
    send(&mut h, "DELETE", "/guarded/v1/responses/resp_1", &[KEY]);
    assert!(h.reply.is_none());
}

const QUEUED: &str = r#"{"id":"resp_bg1","object":"response","created_at":1,"status":"queued","background":true,"model":"gpt-4o-mini-2024-07-18","instructions":"Operator prompt. Be brief.","output":[],"usage":null}"#;

fn completed(input: u64, output: u64) -> String {
    json!({"id": "resp_bg1", "object": "response", "created_at": 1, "status": "completed",
        "background": true, "model": "gpt-4o-mini", "output": [],
        "usage": {"input_tokens": input, "output_tokens": output, "total_tokens": input + output,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}})
    .to_string()
}

/// What alice's budget counted.
fn used(h: &MockHost) -> u64 {
    let start = Unit::Hour.window(h.now).0;
    crate::cost::store::used(h, "q|r|alice|hour", start)
}

/// The answer `body` (JSON, or an SSE stream) to a flow whose request went upstream.
fn answer(flow: &mut Flow, h: &mut MockHost, body: &str, sse: bool) -> Vec<u8> {
    let ct = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    h.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), ct.into()),
    ];
    flow.on_response_headers(h, false);
    // A stream in two pieces; a JSON answer is read whole (Envoy buffers it).
    let mid = if sse { body.len() / 2 } else { 0 };
    let mut out = Vec::new();
    for (i, part) in [&body[..mid], &body[mid..]].into_iter().enumerate() {
        h.response_chunk = part.as_bytes().to_vec();
        flow.on_response_body(h, part.len(), i == 1);
        out.extend(h.response_chunk.clone());
    }
    flow.on_log(h);
    out
}

/// A background call answered `queued`: charged its reservation, then exactly its usage at
/// the first retrieve that reports it, whatever the number of polls.
#[test]
fn a_background_call_is_charged_once_at_its_usage() {
    let mut h = MockHost::default();
    crate::cost::store::init(&mut h);
    let body = r#"{"model":"gpt-4o-mini","input":"hi","instructions":"Be brief.","background":true,"max_output_tokens":500}"#;
    let mut next = MockHost::request("POST", "/v1/responses", &[KEY, ("x-user", "alice")])
        .with_body(body.as_bytes());
    next.shared = std::mem::take(&mut h.shared);
    h = next;
    let mut flow = Flow::new(gateway());
    flow.on_request_headers(&mut h, false);
    flow.on_request_body(&mut h, body.len(), true);
    assert!(h.reply.is_none(), "{:?}", h.reply);
    h.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
    ];
    flow.on_response_headers(&mut h, false);
    h.response_chunk = QUEUED.as_bytes().to_vec();
    flow.on_response_body(&mut h, QUEUED.len(), true);
    let client: Value = serde_json::from_slice(&h.response_chunk).unwrap();
    // The client sees the provider's queued object, its id, the model as it named it.
    assert_eq!(client["status"], json!("queued"));
    assert_eq!(client["id"], json!("resp_bg1"));
    assert_eq!(client["model"], json!("gpt-4o-mini"));
    assert_eq!(
        client["instructions"],
        json!("Be brief."),
        "the client's, not the provider's"
    );
    flow.on_log(&mut h);
    let held = used(&h);
    assert!(held >= 500, "the reservation is held: {held}");
    // Polls while it runs: nothing changes.
    let mut flow = send(
        &mut h,
        "GET",
        "/v1/responses/resp_bg1",
        &[KEY, ("x-user", "alice")],
    );
    answer(
        &mut flow,
        &mut h,
        &QUEUED.replace("queued", "in_progress"),
        false,
    );
    assert_eq!(used(&h), held);
    // Finished: exactly the reported usage, from whichever caller polls.
    for poll in 0..3 {
        let mut flow = send(
            &mut h,
            "GET",
            "/v1/responses/resp_bg1",
            &[KEY, ("x-user", "bob")],
        );
        let out = answer(&mut flow, &mut h, &completed(12, 30), false);
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap()["status"],
            json!("completed")
        );
        assert_eq!(used(&h), 42, "poll {poll}");
    }
    // A resumed stream of the same response: nothing more.
    let mut flow = send(
        &mut h,
        "GET",
        "/v1/responses/resp_bg1?stream=true&starting_after=2",
        &[KEY],
    );
    let ev = format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{}}}\n\n", completed(12, 30));
    answer(&mut flow, &mut h, &ev, true);
    assert_eq!(used(&h), 42);
}

#[test]
fn a_streamed_retrieve_settles_the_hold_once_and_passes_only_json_events() {
    let mut a = Answer::new(Some("resp_1".into()));
    a.start(Some(200), Some("text/event-stream"));
    let ev = format!(
        "event: response.in_progress\ndata: {{\"type\":\"response.in_progress\",\"response\":{}}}\n\ndata: {{cut\n\nevent: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{}}}\n\n",
        QUEUED, completed(3, 4)
    );
    let (x, y) = ev.split_at(ev.len() / 3);
    let (first, usage) = a.feed(x.as_bytes(), false);
    assert_eq!(usage, None);
    let (rest, usage) = a.feed(y.as_bytes(), true);
    assert_eq!(usage.unwrap().completion_tokens, 4);
    let all = [first.body, rest.body].concat();
    let text = String::from_utf8(all).unwrap();
    assert_eq!(text.matches("data: ").count(), 2, "{text}");
    assert!(!text.contains("{cut"));
    // The same usage again (another event, another chunk): taken once.
    assert_eq!(a.feed(y.as_bytes(), true).1, None);
    // Without a hold here, nothing is read for usage.
    let mut a = Answer::new(None);
    a.start(Some(200), Some("application/json"));
    assert_eq!(a.feed(completed(1, 2).as_bytes(), true).1, None);
}

#[test]
fn a_provider_error_of_any_shape_reaches_the_client_in_openais() {
    for (status, body, want) in [
        (
            404,
            r#"{"error":{"message":"Response with id 'resp_x' not found.","type":"invalid_request_error"}}"#,
            404,
        ),
        (503, "<html>upstream overloaded</html>", 503),
        (200, "not json", 502),
        (
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
            503,
        ),
    ] {
        let mut a = Answer::new(None);
        a.start(Some(status), Some("text/html"));
        assert!(!a.streams());
        let (out, _) = a.feed(body.as_bytes(), true);
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert!(v["error"]["message"].as_str().is_some(), "{v}");
        assert!(
            out.headers.contains(&(":status", want.to_string())),
            "{status}: {:?}",
            out.headers
        );
    }
}

#[test]
fn azure_sent_the_responses_api_stores_responses_too() {
    let doc = json!({"version": 3, "endpoints": [{"endpoint": "/v1/responses", "method": "POST", "backend": [
        {"host": ["https://my.openai.azure.com"], "url_pattern": "/openai/v1/responses",
         "extra_config": {"ai/llm": {"azure": {"v1": {"credentials": "az-key", "variables": {"model": "dep"}}}}}}]}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap());
    let mut h = MockHost::request("POST", "/v1/responses/resp_9/cancel", &[]);
    Flow::new(gw).on_request_headers(&mut h, true);
    assert!(h.reply.is_none(), "{:?}", h.reply);
    assert_eq!(
        h.request_values(":path"),
        vec!["/openai/v1/responses/resp_9/cancel"]
    );
    assert_eq!(h.request_values("api-key"), vec!["az-key"]);
}

#[test]
fn models_by_role_judge_the_model_of_a_stored_response() {
    let doc = json!({"version": 3, "extra_config": {
            "auth/api-keys": {"keys": [{"key": "k-admin", "roles": ["admin"]}, {"key": "k-user", "roles": ["user"]}]},
            "ai/prompt-guard": {"guards": [{"name": "j", "kind": "regex", "severity": "high", "config": {"patterns": ["x"]}}]}},
        "endpoints": [{"endpoint": "/v1/responses", "method": "POST",
            "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/responses",
                "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk"}}}}}],
            "extra_config": {"auth/api-keys": {"roles": ["admin", "user"]},
                "ai/prompt-guard": {"guards": ["j"], "models_by_role": {"admin": ["*"], "user": ["gpt-4o-mini"]}}}}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap());
    let mut shared = MockHost::default();
    crate::cost::store::init(&mut shared);
    let hold = |model: &str| held::Hold {
        charge: None,
        model: model.into(),
        endpoint: 0,
        backend: 0,
        expires: u64::MAX,
    };
    held::put(&mut shared, "resp_mini", &hold("gpt-4o-mini"), 1);
    held::put(&mut shared, "resp_big", &hold("gpt-5"), 1);
    let status = |shared: &mut MockHost, key: &str, id: &str| {
        let auth = format!("Bearer {key}");
        let mut h = MockHost::request(
            "GET",
            &format!("/v1/responses/{id}"),
            &[("authorization", &auth)],
        );
        h.shared = std::mem::take(&mut shared.shared);
        Flow::new(Rc::clone(&gw)).on_request_headers(&mut h, true);
        shared.shared = std::mem::take(&mut h.shared);
        h.reply.map_or(0, |r| r.status)
    };
    assert_eq!(status(&mut shared, "k-user", "resp_mini"), 0);
    assert_eq!(status(&mut shared, "k-user", "resp_big"), 403);
    assert_eq!(status(&mut shared, "k-user", "resp_unknown"), 403);
    assert_eq!(status(&mut shared, "k-admin", "resp_big"), 0);
    assert_eq!(status(&mut shared, "k-admin", "resp_unknown"), 0);
}
