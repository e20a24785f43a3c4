#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! One usage record per call, however the call ends, charged alike to the quota, the
//! token rate limit and the metrics ([`crate::filter::Flow`] over MockHost).

use crate::config::Gateway;
use crate::cost::store;
use crate::filter::{Action, Flow};
use crate::governance::ratelimit::{self, TokenCharge};
use crate::host::mock::MockHost;
use crate::providers::tokens::IMAGE_TOKENS;
use crate::support::calendar::Unit;
use serde_json::{json, Value};
use std::rc::Rc;

const LIMIT: u64 = 10_000_000;

fn gateway(reserve: bool) -> Rc<Gateway> {
    gateway_with(reserve, false)
}

/// `failover`: two backends tried one after the other through callouts.
fn gateway_with(reserve: bool, failover: bool) -> Rc<Gateway> {
    let backend = |port: u16| {
        json!({"host": [format!("http://127.0.0.1:{port}")],
        "url_pattern": "/v1/chat/completions",
        "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk",
            "variables": {"model": "gpt-4o-mini"}}}}}})
    };
    let backends = if failover {
        vec![backend(9001), backend(9002)]
    } else {
        vec![backend(9001)]
    };
    let mut doc = json!({
        "version": 3,
        "extra_config": {"governance/processors": {"quotas": [
            {"name": "q", "connection_name": "per-envoy", "rules": [{"name": "r", "limits": [{"amount": LIMIT, "unit": "hour"}]}]}]}},
        "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST",
            "extra_config": {
                "governance/quota": {"quota_name": "q", "tier_key": "x-plan", "reserve": reserve,
                    "weight_key": "usage.total_tokens",
                    "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "x-user"}]},
                "qos/ratelimit/router": {"client_max_tokens": LIMIT, "client_tokens_every": "1h",
                    "strategy": "header", "key": "x-user"}},
            "backend": backends}]
    });
    if failover {
        doc["endpoints"][0]["extra_config"]["ai/routing"] = json!({"failover": true});
    }
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

/// A call in progress and its host.
struct Call {
    gw: Rc<Gateway>,
    flow: Flow,
    h: MockHost,
}

/// Request headers and the whole body (`whole: false`: the client never finished it).
fn start(reserve: bool, body: &Value, whole: bool) -> Call {
    start_on(gateway(reserve), body, whole)
}

/// A fresh host (empty budgets and buckets) and flow, the request headers passed.
fn begin(gw: &Rc<Gateway>, body: &str) -> (Flow, MockHost) {
    let mut h = MockHost::request("POST", "/v1/chat/completions", &[("x-user", "alice")])
        .with_body(body.as_bytes());
    store::init(&mut h);
    gw.init_shared(&mut h);
    let mut flow = Flow::new(Rc::clone(gw));
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    (flow, h)
}

fn start_on(gw: Rc<Gateway>, body: &Value, whole: bool) -> Call {
    let body = body.to_string();
    let (mut flow, mut h) = begin(&gw, &body);
    let a = flow.on_request_body(&mut h, body.len(), whole);
    assert!(h.reply.is_none(), "{:?}", h.reply);
    // Failover sends through callouts: the request itself is held.
    let proxied = whole && !gw.endpoints[0].governance.routing.failover;
    assert_eq!(
        a,
        if proxied {
            Action::Continue
        } else {
            Action::Pause
        }
    );
    Call { gw, flow, h }
}

impl Call {
    /// The provider's answer begins: a 200 stream.
    fn stream(&mut self, chunks: &[&str]) {
        let h = std::mem::take(&mut self.h);
        self.h =
            h.with_response_headers(&[(":status", "200"), ("content-type", "text/event-stream")]);
        self.flow.on_response_headers(&mut self.h, false);
        for c in chunks {
            self.h.response_chunk = c.as_bytes().to_vec();
            self.flow.on_response_body(&mut self.h, c.len(), false);
        }
    }

    /// The stream ends (Envoy's `on_done`; also after a reset or a client that hung up).
    fn done(&mut self) {
        self.flow.on_log(&mut self.h);
    }

    /// What the quota counted.
    fn quota(&self) -> u64 {
        let start = Unit::Hour.window(self.h.now).0;
        store::used(&self.h, "q|r|alice|hour", start)
    }

    /// What the token rate limit counted.
    fn token_limit(&self) -> u64 {
        let rl = self.gw.endpoints[0].governance.rate_limit.as_ref().unwrap();
        let c = TokenCharge::new(rl, Some("alice")).unwrap();
        ratelimit::charged(&self.h, &c) as u64
    }

    /// The usage the access-log properties (and metrics) got: (prompt, completion, estimated).
    fn logged(&self) -> (u64, u64, bool) {
        let p = |k: &str| {
            let v = &self.h.properties.iter().find(|(n, _)| n == k).unwrap().1;
            String::from_utf8(v.clone()).unwrap()
        };
        let n = |k: &str| p(k).parse::<u64>().unwrap();
        (
            n("tollgate_prompt_tokens"),
            n("tollgate_completion_tokens"),
            p("tollgate_usage_estimated") == "true",
        )
    }

    /// The one usage record: the same total in the quota, the token limit and the log.
    fn charged(&self) -> (u64, u64, bool) {
        let (p, c, estimated) = self.logged();
        assert_eq!(self.quota(), p + c, "quota");
        assert_eq!(self.token_limit(), p + c, "token rate limit");
        (p, c, estimated)
    }
}

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

fn sse(v: Value) -> String {
    format!("data: {v}\n\n")
}

fn text_chunk(text: &str) -> String {
    sse(
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}),
    )
}

fn finish_chunk() -> String {
    sse(
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    )
}

fn usage_chunk(p: u64, c: u64) -> String {
    sse(
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}),
    )
}

#[test]
fn a_client_that_hangs_up_after_the_provider_has_the_request_is_charged() {
    let prompt = "lorem ipsum dolor sit amet ".repeat(1500); // 40.5 KB
    let mut call = start(false, &chat(&prompt), true);
    call.done(); // the client left before any answer
    let (p, c, estimated) = call.charged();
    assert!(p >= prompt.len() as u64 / 4, "{p}");
    assert_eq!((c, estimated), (0, true));
}

#[test]
fn a_hang_up_keeps_the_reservation() {
    let prompt = "lorem ipsum dolor sit amet ".repeat(1500);
    let mut body = chat(&prompt);
    body["max_tokens"] = json!(500);
    let mut call = start(true, &body, true);
    let reserved = call.quota();
    assert!(reserved >= prompt.len() as u64 / 4 + 500, "{reserved}");
    call.done();
    let (p, c, estimated) = call.charged();
    assert_eq!((p + c, c, estimated), (reserved, 500, true));
}

#[test]
fn a_reservation_covers_every_choice() {
    let mut body = chat("hi");
    body["max_tokens"] = json!(100);
    body["n"] = json!(3);
    let mut call = start(true, &body, true);
    let reserved = call.quota();
    call.done();
    let (p, c, _) = call.charged();
    assert_eq!((c, p + c), (300, reserved));
}

#[test]
fn a_client_gone_before_its_body_was_whole_costs_nothing() {
    let mut body = chat("lorem ipsum");
    body["max_tokens"] = json!(500);
    let mut call = start(true, &body, false);
    call.done();
    assert_eq!((call.quota(), call.token_limit()), (0, 0));
    // No accounting property (the front door is marked for Envoy's own replies).
    let accounted: Vec<_> = (call.h.properties.iter())
        .filter(|(k, _)| k.as_str() != crate::refusal::FRONT_PROPERTY)
        .collect();
    assert!(accounted.is_empty(), "{accounted:?}");
}

#[test]
fn a_cut_stream_is_estimated_from_the_whole_request() {
    // 100 KB of tool definitions, a system message and a tool result: all sent, all counted.
    let tools: Vec<Value> = (0..10)
        .map(|i| {
            json!({"type": "function", "function": {"name": format!("t{i}"),
            "description": "d".repeat(10_000), "parameters": {"type": "object"}}})
        })
        .collect();
    let body = json!({"model": "gpt-4o-mini", "stream": true, "tools": tools, "messages": [
        {"role": "system", "content": "s".repeat(4_000)},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "t0", "arguments": format!("{{\"a\":\"{}\"}}", "x".repeat(4_000))}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r".repeat(4_000)}]});
    let mut call = start(false, &body, true);
    call.stream(&[&text_chunk("Hi")]);
    call.done(); // the provider cut the stream
    let (p, c, estimated) = call.charged();
    assert!(p >= 112_000 / 4, "{p}");
    assert_eq!((c, estimated), (1, true));
}

#[test]
fn images_count_by_number_not_by_data_size() {
    let data = format!("data:image/png;base64,{}", "A".repeat(1_000_000));
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": data}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let mut call = start(false, &body, true);
    call.done();
    let (p, _, _) = call.charged();
    assert!(
        (2 * IMAGE_TOKENS..2 * IMAGE_TOKENS + 100).contains(&p),
        "{p}"
    );
}

#[test]
fn a_stream_cut_after_its_usage_is_charged_alike_everywhere() {
    // Cut before [DONE]: the usage after the finish is the provider's final count.
    let mut call = start(
        false,
        &json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
        true,
    );
    call.stream(&[
        &text_chunk("Hel"),
        &text_chunk("lo"),
        &finish_chunk(),
        &usage_chunk(13, 2),
    ]);
    call.done();
    assert_eq!(call.charged(), (13, 2, false));
}

#[test]
fn final_usage_wins_over_the_reservation_but_a_running_count_does_not() {
    let mut body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 400,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut call = start(true, &body, true);
    call.stream(&[&text_chunk("Hello"), &finish_chunk(), &usage_chunk(13, 2)]);
    call.done();
    assert_eq!(call.charged(), (13, 2, false));
    // A usage report before the finish is a running count: the reservation stands.
    body["max_tokens"] = json!(300);
    let mut call = start(true, &body, true);
    call.stream(&[&usage_chunk(13, 1), &text_chunk("Hello")]);
    call.done();
    assert_eq!(call.charged(), (13, 300, true));
}

#[test]
fn a_whole_answer_is_charged_its_usage_everywhere() {
    let mut call = start(true, &chat("hi"), true);
    let answer = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 7, "total_tokens": 15}})
    .to_string();
    let h = std::mem::take(&mut call.h);
    call.h = h.with_response_headers(&[(":status", "200"), ("content-type", "application/json")]);
    assert_eq!(
        call.flow.on_response_headers(&mut call.h, false),
        Action::Pause
    );
    call.h.response_chunk = answer.as_bytes().to_vec();
    call.flow.on_response_body(&mut call.h, answer.len(), true);
    call.done();
    assert_eq!(call.charged(), (8, 7, false));
}

fn answer_json(p: u64, c: u64) -> String {
    json!({"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
    .to_string()
}

#[test]
fn a_failover_answer_is_charged_alike_everywhere() {
    let mut call = start_on(gateway_with(false, true), &chat("hi"), true);
    call.h.callout_answer = (
        vec![(":status".into(), "503".into())],
        br#"{"error":{"message":"overloaded","type":"server_error"}}"#.to_vec(),
    );
    let n = call.h.callout_answer.1.len();
    call.flow.on_callout(&mut call.h, 1, n);
    let answer = answer_json(8, 7);
    call.h.callout_answer = (
        vec![(":status".into(), "200".into())],
        answer.clone().into_bytes(),
    );
    call.flow.on_callout(&mut call.h, 2, answer.len());
    assert_eq!(call.h.reply.as_ref().unwrap().status, 200);
    call.done();
    assert_eq!(call.charged(), (8, 7, false));
}

#[test]
fn a_hang_up_during_a_failover_callout_is_charged() {
    let mut body = chat("lorem ipsum dolor sit amet");
    body["max_tokens"] = json!(200);
    let mut call = start_on(gateway_with(true, true), &body, true);
    assert_eq!(call.h.callouts.len(), 1);
    let reserved = call.quota();
    call.done(); // the client left while the provider worked
    let (p, c, estimated) = call.charged();
    assert_eq!((p + c, c, estimated), (reserved, 200, true));
}

#[test]
fn failover_reserves_before_its_first_callout() {
    let mut body = chat("hi");
    body["max_tokens"] = json!(LIMIT * 2);
    let body = body.to_string();
    let (mut flow, mut h) = begin(&gateway_with(true, true), &body);
    assert_eq!(
        flow.on_request_body(&mut h, body.len(), true),
        Action::Pause
    );
    assert_eq!(h.reply.as_ref().map(|r| r.status), Some(429));
    assert!(h.callouts.is_empty());
    // With room, the reservation is made once, however many attempts.
    let mut call = start_on(gateway_with(true, true), &chat("hi"), true);
    let reserved = call.quota();
    assert!(reserved > 0);
    call.h.callout_answer = (vec![(":status".into(), "503".into())], b"{}".to_vec());
    call.flow.on_callout(&mut call.h, 1, 2);
    assert_eq!((call.h.callouts.len(), call.quota()), (2, reserved));
}

/// KrakenD's `weight_key`: a plain backend reports what a call weighs in a field of its JSON
/// answer (the default `body` strategy; read across chunk boundaries, a numeric string too)
/// or in a response header; a call that reports nothing weighs nothing.
#[test]
fn a_plain_backend_reports_the_weight() {
    let gw = |weight: Option<(&str, &str)>| {
        let mut q = json!({"quota_name": "q", "tier_key": "x-plan",
            "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "x-user"}]});
        if let Some((key, strategy)) = weight {
            q["weight_key"] = json!(key);
            q["weight_strategy"] = json!(strategy);
        }
        Rc::new(Gateway::from_value(&json!({"version": 3,
            "extra_config": {"governance/processors": {"quotas": [
                {"name": "q", "connection_name": "per-envoy", "rules": [{"name": "r", "limits": [{"amount": LIMIT, "unit": "hour"}]}]}]}},
            "endpoints": [{"endpoint": "/wrapped", "method": "POST", "extra_config": {"governance/quota": q},
                "backend": [{"host": ["http://127.0.0.1:8081"], "url_pattern": "/"}]}]}), &|_: &str| None).unwrap())
    };
    let call = |gw: Rc<Gateway>, headers: &[(&str, &str)], chunks: &[&str]| {
        let mut h = MockHost::request("POST", "/wrapped", &[("x-user", "alice")]);
        store::init(&mut h);
        gw.init_shared(&mut h);
        let mut flow = Flow::new(Rc::clone(&gw));
        flow.on_request_headers(&mut h, true);
        assert!(h.reply.is_none(), "{:?}", h.reply);
        let mut h = h.with_response_headers(headers);
        flow.on_response_headers(&mut h, chunks.is_empty());
        for (i, c) in chunks.iter().enumerate() {
            h.response_chunk = c.as_bytes().to_vec();
            flow.on_response_body(&mut h, c.len(), i + 1 == chunks.len());
        }
        flow.on_log(&mut h);
        store::used(&h, "q|r|alice|hour", Unit::Hour.window(h.now).0)
    };
    let ok = [(":status", "200")];
    let credits = || gw(Some(("credits_consumed", "body")));
    let body = |c: &str| call(credits(), &ok, &[c]);
    assert_eq!(
        call(credits(), &ok, &[r#"{"credits_con"#, r#"sumed": 42}"#]),
        42
    );
    assert_eq!(body(r#"{"credits_consumed": "7"}"#), 7);
    assert_eq!(body(r#"{"credits_consumed": 2.9}"#), 2);
    assert_eq!(body(r#"{"credits_consumed": -3}"#), 0);
    assert_eq!(body(r#"{"other": 5}"#), 0);
    assert_eq!(body("not json"), 0);
    let nested = gw(Some(("usage.total", "body")));
    assert_eq!(call(nested, &ok, &[r#"{"usage": {"total": 9}}"#]), 9);
    // tollgate's token names are fields too when no LLM call is counted (was: charged 0).
    let tokens = gw(Some(("usage.total_tokens", "body")));
    assert_eq!(
        call(tokens, &ok, &[r#"{"usage": {"total_tokens": 11}}"#]),
        11
    );
    let header = || gw(Some(("X-Credits", "header")));
    let weighed = [(":status", "200"), ("x-credits", " 12 ")];
    assert_eq!(call(header(), &weighed, &["{}"]), 12);
    assert_eq!(call(header(), &weighed, &[]), 12);
    assert_eq!(call(header(), &ok, &["{}"]), 0);
    // Without weight_key every call weighs one, as before.
    assert_eq!(call(gw(None), &ok, &[r#"{"credits_consumed": 42}"#]), 1);
}

/// On an `ai/llm` endpoint KrakenD's `weight_key: usage` is the total tokens (its unified
/// answer's `usage`); a field the translated answer does not have is refused at configuration.
#[test]
fn usage_on_an_llm_endpoint_is_the_total_tokens() {
    let doc = |key: &str| {
        let mut d = json!({"version": 3,
            "extra_config": {"governance/processors": {"quotas": [
                {"name": "q", "connection_name": "per-envoy", "rules": [{"name": "r", "limits": [{"amount": LIMIT, "unit": "hour"}]}]}]}},
            "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST",
                "extra_config": {"governance/quota": {"quota_name": "q", "tier_key": "x-plan",
                    "weight_key": key, "weight_strategy": "body",
                    "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "x-user"}]}},
                "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
                    "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk",
                        "variables": {"model": "gpt-4o-mini"}}}}}}]}]});
        d["endpoints"][0]["input_headers"] = json!(["x-user"]);
        d
    };
    let gw = Rc::new(Gateway::from_value(&doc("usage"), &|_: &str| None).unwrap());
    let mut call = start_on(gw, &chat("hi"), true);
    let h = std::mem::take(&mut call.h);
    call.h = h.with_response_headers(&[(":status", "200"), ("content-type", "application/json")]);
    call.flow.on_response_headers(&mut call.h, false);
    let answer = answer_json(8, 7);
    call.h.response_chunk = answer.as_bytes().to_vec();
    call.flow.on_response_body(&mut call.h, answer.len(), true);
    call.done();
    assert_eq!(call.quota(), 15);
    let e = Gateway::from_value(&doc("credits_consumed"), &|_: &str| None).unwrap_err();
    assert_eq!(e.to_string(), "$.endpoints[0].extra_config.governance/quota.weight_key: \"credits_consumed\": an ai/llm answer is translated by the gateway and has no such field; use usage (KrakenD's total tokens), usage.prompt_tokens, usage.completion_tokens or cost");
}
