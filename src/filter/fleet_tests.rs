#![cfg(feature = "limits")] // the service's own messages (prost) check the bytes
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Budgets and rate limits kept in Redis, through the whole filter ([`Flow`] over MockHost):
//! the call before the request (what it asks, how its answer lets the request go or refuses
//! it, what a failure does) and the charge after the answer. The service's side is in
//! tests/limits.rs, both together through Envoy in tests/e2e/test_fleet.py.

use crate::config::Gateway;
use crate::filter::{Action, Flow};
use crate::host::mock::MockHost;
use crate::limits::proto;
use prost::Message;
use serde_json::{json, Value};
use std::rc::Rc;

fn gateway(quota: Value, extra: Value) -> Rc<Gateway> {
    let mut doc = json!({
        "version": 3,
        "extra_config": {
            "redis": {"connection_pools": [{"name": "shared", "address": "127.0.0.1:6379"}]},
            "limits/service": {"timeout": "80ms"},
            "governance/processors": {"quotas": [quota]}},
        "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST",
            "extra_config": {
                "governance/quota": {"quota_name": "q", "tier_key": "x-plan", "reserve": true,
                    "weight_key": "usage.total_tokens",
                    "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "x-user"}]},
                "qos/ratelimit/router/redis": {"connection_name": "shared", "client_max_rate": 5,
                    "every": "1m", "client_max_tokens": 1000, "strategy": "header", "key": "x-user"}},
            "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
                "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk",
                    "variables": {"model": "gpt-4o-mini"}}}}}}]}]
    });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            doc["extra_config"][k] = v;
        }
    }
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

fn quota(allow: bool) -> Value {
    json!({"name": "q", "connection_name": "shared", "on_failure_allow": allow,
           "rules": [{"name": "r", "limits": [{"amount": 100000, "unit": "day"}, {"amount": 5000, "unit": "minute"}]}]})
}

const BODY: &str = r#"{"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}]}"#;

/// Request headers and body: the call to the limits service is made, the request held.
fn held(gw: &Rc<Gateway>) -> (Flow, MockHost) {
    let mut h = MockHost::request(
        "POST",
        "/v1/chat/completions",
        &[("x-user", "alice"), ("x-request-id", "client-chosen")],
    )
    .with_body(BODY.as_bytes());
    let mut flow = Flow::new(Rc::clone(gw));
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    assert_eq!(
        flow.on_request_body(&mut h, BODY.len(), true),
        Action::Pause
    );
    assert!(h.reply.is_none(), "{:?}", h.reply);
    // The request was written for the provider before the call (credential, path).
    assert_eq!(h.request_values("authorization"), ["Bearer sk"]);
    (flow, h)
}

/// The one callout: cluster, metadata, the decoded request.
fn call(h: &MockHost) -> (Vec<(String, String)>, proto::RateLimitRequest, u64) {
    assert_eq!(h.callouts.len(), 1, "one call before the request");
    let c = &h.callouts[0];
    assert_eq!(c.cluster, "tollgate_limits");
    let req = proto::RateLimitRequest::decode(&c.body[5..]).unwrap();
    (c.headers.clone(), req, c.timeout_ms)
}

fn entries(d: &proto::RateLimitDescriptor) -> Vec<(&str, &str)> {
    d.entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect()
}

fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The service's answer to the call being delivered: codes per descriptor, headers.
fn answer(h: &mut MockHost, codes: &[proto::Code], headers: &[(&str, &str)]) {
    let over = codes.contains(&proto::Code::OverLimit);
    let resp = proto::RateLimitResponse {
        overall_code: if over { 2 } else { 1 },
        statuses: codes
            .iter()
            .map(|c| proto::DescriptorStatus {
                code: *c as i32,
                ..Default::default()
            })
            .collect(),
        response_headers_to_add: headers
            .iter()
            .map(|(k, v)| proto::HeaderValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    };
    let msg = resp.encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    h.callout_answer = (
        vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/grpc".into()),
        ],
        body,
    );
    h.callout_trailers = vec![("grpc-status".into(), "0".into())];
}

fn deliver(flow: &mut Flow, h: &mut MockHost) {
    let size = h.callout_answer.1.len();
    flow.on_callout(h, 1, size);
}

const OK4: [proto::Code; 4] = [proto::Code::Ok; 4];

#[test]
fn one_call_asks_every_limit_then_the_request_goes_and_is_charged_after() {
    let gw = gateway(quota(false), json!({}));
    let (mut flow, mut h) = held(&gw);
    let (headers, req, timeout) = call(&h);
    assert_eq!(timeout, 80);
    assert_eq!(get(&headers, "x-tollgate-op"), Some("reserve"));
    let id = get(&headers, "x-tollgate-id").unwrap().to_string();
    assert!(
        id.ends_with(":reserve") && !id.contains("client-chosen"),
        "{id}"
    );
    assert_eq!(get(&headers, "x-tollgate-at"), Some("1700000000"));
    assert_eq!(req.domain, "tollgate");
    let d = &req.descriptors;
    let scope = "POST /v1/chat/completions";
    assert_eq!(
        entries(&d[0]),
        [("ratelimit", scope), ("client_tokens", "alice")]
    );
    assert_eq!(d[0].hits_addend, Some(0), "a token balance is checked");
    assert_eq!(entries(&d[1]), [("ratelimit", scope), ("client", "alice")]);
    assert_eq!(d[1].hits_addend, Some(1));
    assert_eq!(
        entries(&d[2]),
        [
            ("quota", "q"),
            ("rule", "r"),
            ("unit", "day"),
            ("identity", "alice")
        ]
    );
    assert_eq!(entries(&d[3])[2], ("unit", "minute"));
    let reserved = d[2].hits_addend.unwrap();
    assert!(reserved > 100, "max_tokens and the prompt: {reserved}");
    assert_eq!(d[3].hits_addend, Some(reserved));

    answer(
        &mut h,
        &OK4,
        &[("X-Quota-Limit", "5000"), ("X-Quota-Remaining", "4890")],
    );
    deliver(&mut flow, &mut h);
    assert!(h.reply.is_none());
    assert_eq!(h.resumed, 1, "the held request goes on");

    let mut h =
        h.with_response_headers(&[(":status", "200"), ("content-type", "application/json")]);
    flow.on_response_headers(&mut h, false);
    assert_eq!(h.response_values("x-quota-limit"), ["5000"]);
    assert_eq!(h.response_values("x-quota-remaining"), ["4890"]);
    let answer = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
    .to_string();
    h.response_chunk = answer.clone().into_bytes();
    flow.on_response_body(&mut h, answer.len(), true);
    flow.on_log(&mut h);

    // The charge: the reservation settled to the 15 tokens used, to its windows, and the
    // client's token balance charged 15; once, through the long-lived context.
    assert_eq!(h.detached.len(), 1);
    let c = &h.detached[0];
    assert_eq!(c.cluster, "tollgate_limits");
    assert_eq!(get(&c.headers, "x-tollgate-op"), Some("charge"));
    let charge_id = get(&c.headers, "x-tollgate-id").unwrap();
    assert_eq!(charge_id, id.replace(":reserve", ":charge"));
    assert_eq!(get(&c.headers, "x-tollgate-at"), Some("1700000000"));
    let req = proto::RateLimitRequest::decode(&c.body[5..]).unwrap();
    let d = &req.descriptors;
    assert_eq!(d.len(), 3);
    assert_eq!(entries(&d[0])[2], ("unit", "day"));
    assert_eq!(
        (d[0].hits_addend, d[0].is_negative_hits),
        (Some(reserved - 15), true)
    );
    assert_eq!(
        (d[1].hits_addend, d[1].is_negative_hits),
        (Some(reserved - 15), true)
    );
    assert_eq!(
        entries(&d[2]),
        [("ratelimit", scope), ("client_tokens", "alice")]
    );
    assert_eq!((d[2].hits_addend, d[2].is_negative_hits), (Some(15), false));
    // Nothing counted in this Envoy's own store.
    assert!(h
        .shared
        .borrow()
        .values()
        .all(|(v, _)| !String::from_utf8_lossy(v).contains("q|r|alice")));
}

#[test]
fn refusals_name_the_limit_with_the_services_headers() {
    let gw = gateway(quota(false), json!({}));
    use proto::Code::{Ok as Y, OverLimit as N};
    // (codes, status, error type, code)
    let cases = [
        ([N, N, Y, Y], 429, "tokens", "rate_limit_exceeded"),
        ([Y, N, Y, Y], 429, "requests", "rate_limit_exceeded"),
        ([Y, Y, Y, N], 429, "rate_limit_error", "quota_exceeded"),
    ];
    for (codes, status, kind, code) in cases {
        let (mut flow, mut h) = held(&gw);
        answer(
            &mut h,
            &codes,
            &[
                ("Retry-After", "37"),
                ("X-Quota-Limit", "5000"),
                ("X-Quota-Remaining", "10"),
            ],
        );
        deliver(&mut flow, &mut h);
        let r = h.reply.clone().unwrap();
        assert_eq!(r.status, status, "{codes:?}");
        let v = r.json();
        assert_eq!(
            (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
            (Some(kind), Some(code))
        );
        assert!(
            r.headers.contains(&("retry-after".into(), "37".into())),
            "{:?}",
            r.headers
        );
        let quota_headers = r.headers.iter().any(|(k, _)| k == "x-quota-limit");
        assert_eq!(quota_headers, code == "quota_exceeded");
        assert_eq!(h.resumed, 0);
        // Refused: nothing reserved, nothing to settle.
        flow.on_log(&mut h);
        assert!(h.detached.is_empty());
    }
    // The endpoint's bucket: 503 (as the local limit).
    let service =
        json!({"qos/ratelimit/service/redis": {"connection_name": "shared", "max_rate": 10}});
    let gw = gateway(quota(false), service);
    let (mut flow, mut h) = held(&gw);
    let (_, req, _) = call(&h);
    assert_eq!(entries(&req.descriptors[0]), [("ratelimit", "service")]);
    let mut codes = vec![proto::Code::OverLimit];
    codes.extend([proto::Code::Ok; 4]);
    answer(&mut h, &codes, &[]);
    deliver(&mut flow, &mut h);
    assert_eq!(h.reply.unwrap().status, 503);
}

#[test]
fn a_failed_call_goes_by_on_failure_allow() {
    // Refused: the quota says no (the rate limit would allow).
    let gw = gateway(quota(false), json!({}));
    let (mut flow, mut h) = held(&gw);
    h.callout_answer = (vec![], vec![]); // timeout, reset, connection refused
    deliver(&mut flow, &mut h);
    let r = h.reply.clone().unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "limits_unavailable");
    // Refused, but the reserve may have landed: nothing may stay taken.
    assert_released(&h, 0);
    flow.on_log(&mut h);
    assert_eq!(h.detached.len(), 1, "released once, nothing charged");
    assert_eq!(
        h.counters
            .get("tollgate_limits_unavailable_total.kind.refused"),
        Some(&1)
    );

    // Allowed only when every limit of the call allows it.
    let gw = gateway(quota(true), json!({}));
    let (mut flow, mut h) = held(&gw);
    h.callout_answer = (
        vec![
            (":status".into(), "200".into()),
            ("grpc-status".into(), "14".into()),
        ],
        vec![],
    );
    deliver(&mut flow, &mut h);
    assert_eq!(
        h.reply.unwrap().status,
        503,
        "the rate limit does not allow it"
    );

    let gw = Rc::new({
        let mut g = (*gateway(quota(true), json!({}))).clone();
        g.endpoints[0].governance.fleet_rate_limits[0].allow_on_failure = true;
        g
    });
    let (mut flow, mut h) = held(&gw);
    h.callout_answer = (
        vec![(":status".into(), "503".into())],
        b"no healthy upstream".to_vec(),
    );
    deliver(&mut flow, &mut h);
    assert!(h.reply.is_none());
    assert_eq!(h.resumed, 1);
    // The reserve may have landed (only its answer was lost): released by its id.
    assert_released(&h, 0);
    assert_eq!(
        h.counters
            .get("tollgate_limits_unavailable_total.kind.allowed"),
        Some(&1)
    );
    // Let through without a reservation: the charge after is the whole usage, to the
    // windows of its end.
    let mut h =
        h.with_response_headers(&[(":status", "200"), ("content-type", "application/json")]);
    flow.on_response_headers(&mut h, false);
    let answer = json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}).to_string();
    h.response_chunk = answer.clone().into_bytes();
    flow.on_response_body(&mut h, answer.len(), true);
    assert_eq!(h.detached.len(), 2, "the release, then the charge");
    let c = &h.detached[1];
    assert_eq!(get(&c.headers, "x-tollgate-op"), Some("charge"));
    assert_eq!(get(&c.headers, "x-tollgate-at"), None);
    let req = proto::RateLimitRequest::decode(&c.body[5..]).unwrap();
    assert_eq!(
        (
            req.descriptors[0].hits_addend,
            req.descriptors[0].is_negative_hits
        ),
        (Some(9), false)
    );
}

/// The `detached[i]` is a `release` of the call before the request: its id, its windows,
/// its descriptors (hits as reserved, not negated: the service gives back what that reserve
/// took, if anything).
fn assert_released(h: &MockHost, i: usize) {
    let (headers, reserve, _) = call(h);
    let c = &h.detached[i];
    assert_eq!(get(&c.headers, "x-tollgate-op"), Some("release"));
    assert_eq!(
        get(&c.headers, "x-tollgate-id"),
        get(&headers, "x-tollgate-id")
    );
    assert!(get(&headers, "x-tollgate-id")
        .unwrap()
        .ends_with(":reserve"));
    assert_eq!(
        get(&c.headers, "x-tollgate-at"),
        get(&headers, "x-tollgate-at")
    );
    let req = proto::RateLimitRequest::decode(&c.body[5..]).unwrap();
    assert_eq!(req, reserve);
}

#[test]
fn a_client_gone_while_the_call_is_out_releases_what_it_may_have_reserved() {
    let gw = gateway(quota(false), json!({}));
    let (mut flow, mut h) = held(&gw);
    // More body or trailers meanwhile stay held.
    assert_eq!(flow.on_request_body(&mut h, 0, true), Action::Pause);
    flow.on_log(&mut h);
    assert_eq!(h.detached.len(), 1);
    assert_released(&h, 0);
    assert!(h.reply.is_none());
    // The late answer changes nothing.
    answer(&mut h, &OK4, &[]);
    deliver(&mut flow, &mut h);
    flow.on_log(&mut h);
    assert_eq!(h.detached.len(), 1);
}

#[test]
fn a_plain_endpoint_waits_at_its_headers_and_per_envoy_quotas_make_no_call() {
    let doc = json!({
        "version": 3,
        "extra_config": {
            "redis": {"connection_pools": [{"name": "shared", "address": "127.0.0.1:6379"}]},
            "governance/processors": {"quotas": [
                {"name": "fleet", "connection_name": "shared", "rules": [{"name": "r", "limits": [{"amount": 10, "unit": "hour"}]}]},
                {"name": "local", "connection_name": "per-envoy", "rules": [{"name": "r", "limits": [{"amount": 10, "unit": "hour"}]}]}]}},
        "endpoints": [
            {"endpoint": "/a", "extra_config": {"governance/quota": {"quota_name": "fleet", "tier_key": "x",
                "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "ip"}]}},
             "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/a"}]},
            {"endpoint": "/b", "extra_config": {"governance/quota": {"quota_name": "local", "tier_key": "x",
                "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "ip"}]}},
             "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/b"}]}]
    });
    let gw = Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap());
    let mut h = MockHost::request("GET", "/a", &[]);
    h.source_address = Some("10.0.0.1:5555".into());
    let mut flow = Flow::new(Rc::clone(&gw));
    assert_eq!(flow.on_request_headers(&mut h, true), Action::Pause);
    let (_, req, _) = call(&h);
    assert_eq!(req.descriptors.len(), 1);
    assert_eq!(
        req.descriptors[0].hits_addend,
        Some(0),
        "checked, charged after"
    );
    answer(&mut h, &[proto::Code::Ok], &[]);
    deliver(&mut flow, &mut h);
    assert_eq!(h.resumed, 1);
    assert_eq!(h.request_values(":path"), ["/a"]);
    let mut h = h.with_response_headers(&[(":status", "200")]);
    flow.on_response_headers(&mut h, true);
    flow.on_log(&mut h);
    let req = proto::RateLimitRequest::decode(&h.detached[0].body[5..]).unwrap();
    assert_eq!(req.descriptors[0].hits_addend, Some(1), "one request");

    let mut h = MockHost::request("GET", "/b", &[]);
    h.source_address = Some("10.0.0.1:5555".into());
    let mut flow = Flow::new(gw);
    assert_eq!(flow.on_request_headers(&mut h, true), Action::Continue);
    assert!(h.callouts.is_empty());
}

#[test]
fn fleet_settings_are_checked_at_configure() {
    let refused = |quota: Value, extra: Value| {
        let doc = json!({"version": 3, "extra_config": {
            "governance/processors": {"quotas": [quota]}},
            "endpoints": [{"endpoint": "/a", "extra_config": extra,
                "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/"}]}]});
        let mut doc = doc;
        doc["extra_config"]["redis"] = json!({"connection_pools": [{"name": "one", "address": "a:1"}, {"name": "two", "address": "b:1"}]});
        Gateway::from_value(&doc, &|_: &str| None)
            .unwrap_err()
            .to_string()
    };
    let q = |c: &str| json!({"name": "q", "connection_name": c, "rules": [{"name": "r", "limits": [{"amount": 1, "unit": "day"}]}]});
    let attach = json!({"quota_name": "q", "tier_key": "x", "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "ip"}]});
    assert!(refused(q("local"), json!({})).starts_with(
        "$.extra_config.governance/processors.quotas[0].connection_name: \"local\" names no Redis connection pool or cluster (declared in $.extra_config.redis: one, two); use \"per-envoy\""));
    let e = refused(
        q("one"),
        json!({"governance/quota": attach, "qos/ratelimit/router/redis": {"connection_name": "two", "max_rate": 1}}),
    );
    assert!(e.starts_with("$.endpoints[0].extra_config: its quota and the endpoint's other fleet limits name different Redis pools"), "{e}");
    let e = refused(
        q("one"),
        json!({"qos/ratelimit/router/redis": {"connection_name": "per-envoy", "max_rate": 1}}),
    );
    assert!(
        e.contains("qos/ratelimit/router/redis.connection_name: \"per-envoy\" is for quotas"),
        "{e}"
    );
    let e = refused(
        q("one"),
        json!({"qos/ratelimit/router/redis": {"connection_name": "one", "client_max_tokens": 1}}),
    );
    assert_eq!(e, "$.endpoints[0].extra_config.qos/ratelimit/router/redis.client_max_tokens: only applies to endpoints with ai/llm backends");
}

#[test]
fn failover_attempts_wait_for_the_call_once() {
    let gw = {
        let mut doc = json!({
            "version": 3,
            "extra_config": {
                "redis": {"connection_pools": [{"name": "shared", "address": "127.0.0.1:6379"}]},
                "governance/processors": {"quotas": [quota(false)]}},
            "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST",
                "extra_config": {"ai/routing": {"failover": true},
                    "governance/quota": {"quota_name": "q", "tier_key": "x-plan", "reserve": true,
                        "weight_key": "usage.total_tokens",
                        "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "x-user"}]}},
                "backend": []}]
        });
        for port in [9001, 9002] {
            doc["endpoints"][0]["backend"]
                .as_array_mut()
                .unwrap()
                .push(json!({
                "host": [format!("http://127.0.0.1:{port}")], "url_pattern": "/v1/chat/completions",
                "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk",
                    "variables": {"model": "gpt-4o-mini"}}}}}}));
        }
        Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
    };
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[("x-user", "alice")])
        .with_body(BODY.as_bytes());
    let mut flow = Flow::new(gw);
    flow.on_request_headers(&mut h, false);
    assert_eq!(
        flow.on_request_body(&mut h, BODY.len(), true),
        Action::Pause
    );
    let (_, req, _) = call(&h);
    assert_eq!(req.descriptors.len(), 2);
    answer(&mut h, &[proto::Code::Ok; 2], &[]);
    deliver(&mut flow, &mut h);
    // The first attempt goes once the call answered.
    assert_eq!(h.callouts.len(), 2);
    assert_eq!(h.callouts[1].cluster, "tg_http_127.0.0.1_9001");
    // It fails: the second attempt goes without a second call.
    h.callout_answer = (vec![(":status".into(), "503".into())], b"{}".to_vec());
    h.callout_trailers.clear();
    flow.on_callout(&mut h, 2, 2);
    assert_eq!(h.callouts.len(), 3);
    assert_eq!(h.callouts[2].cluster, "tg_http_127.0.0.1_9002");
}

/// A background Responses call on a budget kept in Redis: the POST settles its reservation
/// to the estimate it holds (nothing to send: the same amount), and the first retrieve that
/// reports the usage sends the difference, once.
#[test]
fn a_background_call_is_trued_up_in_redis_once() {
    let doc = json!({"version": 3,
        "extra_config": {"redis": {"connection_pools": [{"name": "shared", "address": "127.0.0.1:6379"}]},
                         "governance/processors": {"quotas": [quota(false)]}},
        "endpoints": [{"endpoint": "/v1/responses", "method": "POST",
            "extra_config": {"governance/quota": {"quota_name": "q", "tier_key": "x-plan", "reserve": true,
                "weight_key": "usage.total_tokens",
                "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "x-user"}]}},
            "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/responses",
                "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk"}}}}}]}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap());
    let body = r#"{"model": "gpt-4o-mini", "input": "Hello", "background": true, "max_output_tokens": 100}"#;
    let mut h = MockHost::request("POST", "/v1/responses", &[("x-user", "alice")])
        .with_body(body.as_bytes());
    crate::cost::store::init(&mut h);
    let mut flow = Flow::new(Rc::clone(&gw));
    flow.on_request_headers(&mut h, false);
    flow.on_request_body(&mut h, body.len(), true);
    let (_, req, _) = call(&h);
    let reserved = req.descriptors[0].hits_addend.unwrap();
    answer(&mut h, &[proto::Code::Ok; 2], &[]);
    deliver(&mut flow, &mut h);
    h.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
    ];
    flow.on_response_headers(&mut h, false);
    let queued =
        r#"{"id":"resp_bg","object":"response","status":"queued","output":[],"usage":null}"#;
    h.response_chunk = queued.as_bytes().to_vec();
    flow.on_response_body(&mut h, queued.len(), true);
    flow.on_log(&mut h);
    assert!(h.detached.is_empty(), "the reservation is what is held");
    let done = r#"{"id":"resp_bg","object":"response","status":"completed","output":[],"usage":{"input_tokens":12,"output_tokens":30,"total_tokens":42}}"#;
    for poll in 0..2 {
        let mut next = MockHost::request("GET", "/v1/responses/resp_bg", &[("x-user", "bob")]);
        next.shared = std::mem::take(&mut h.shared);
        next.detached = std::mem::take(&mut h.detached);
        h = next;
        let mut flow = Flow::new(Rc::clone(&gw));
        flow.on_request_headers(&mut h, true);
        assert!(h.reply.is_none(), "{:?}", h.reply);
        h.response_headers = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
        ];
        flow.on_response_headers(&mut h, false);
        h.response_chunk = done.as_bytes().to_vec();
        flow.on_response_body(&mut h, done.len(), true);
        flow.on_log(&mut h);
        assert_eq!(h.detached.len(), 1, "poll {poll}: one charge in all");
    }
    let c = &h.detached[0];
    assert_eq!(get(&c.headers, "x-tollgate-op"), Some("charge"));
    let req = proto::RateLimitRequest::decode(&c.body[5..]).unwrap();
    for d in &req.descriptors {
        assert_eq!(entries(d)[3], ("identity", "alice"), "the POST's budget");
        assert_eq!(
            (d.hits_addend, d.is_negative_hits),
            (Some(reserved - 42), true)
        );
    }
}
