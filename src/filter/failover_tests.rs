//! Failover callouts for the agents' doors (issue 15) through the whole pipeline ([`Flow`]
//! over MockHost): token counting that reaches a provider with no counting API answers the
//! gateway's estimate, and Bedrock's embeddings token header counts on a callout as on the
//! proxied path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::config::Gateway;
use crate::cost::store;
use crate::host::mock::MockHost;
use crate::support::calendar::Unit;
use serde_json::{json, Value};
use std::rc::Rc;

fn llm(port: u16, provider: &str, url: &str, settings: Value) -> Value {
    json!({"host": [format!("http://127.0.0.1:{port}")], "url_pattern": url,
           "extra_config": {"ai/llm": {provider: {"v1": settings}}}})
}

/// `path` with `backends` tried in order through callouts, and a token budget per `x-user`.
fn gateway(path: &str, backends: Vec<Value>) -> Rc<Gateway> {
    let doc = json!({"version": 3,
        "extra_config": {"governance/processors": {"quotas": [{"name": "q", "connection_name": "per-envoy",
            "rules": [{"name": "r", "limits": [{"amount": 1000000, "unit": "hour"}]}]}]}},
        "endpoints": [{"endpoint": path, "method": "POST", "backend": backends,
            "extra_config": {"ai/routing": {"failover": true},
                "governance/quota": {"quota_name": "q", "tier_key": "x-plan", "weight_key": "usage.total_tokens",
                    "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "x-user"}]}}}]});
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

fn begin(gw: &Rc<Gateway>, path: &str, body: &Value) -> (Flow, MockHost) {
    let body = body.to_string();
    let mut h = MockHost::request("POST", path, &[("x-user", "alice")]).with_body(body.as_bytes());
    store::init(&mut h);
    gw.init_shared(&mut h);
    let mut flow = Flow::new(Rc::clone(gw));
    flow.on_request_headers(&mut h, false);
    flow.on_request_body(&mut h, body.len(), true);
    (flow, h)
}

/// The attempt in flight answers.
fn answer(flow: &mut Flow, h: &mut MockHost, token: u32, headers: &[(&str, &str)], body: &str) {
    h.callout_answer = (
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body.as_bytes().to_vec(),
    );
    flow.on_callout(h, token, body.len());
}

const OVERLOADED: &str = r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#;

#[test]
fn counting_that_fails_over_to_a_provider_without_a_count_api_answers_the_estimate() {
    let gw = gateway(
        "/v1/messages/count_tokens",
        vec![
            llm(
                9001,
                "anthropic",
                "/v1/messages",
                json!({"credentials": "sk-a", "variables": {"model": "claude-sonnet-4-5"}}),
            ),
            llm(
                9002,
                "openai",
                "/v1/chat/completions",
                json!({"credentials": "sk-o", "variables": {"model": "gpt-4o-mini"}}),
            ),
        ],
    );
    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "count these four words"}]});
    let (mut flow, mut h) = begin(&gw, "/v1/messages/count_tokens", &body);
    assert_eq!(
        h.callouts.len(),
        1,
        "Anthropic counts first: {:?}",
        h.reply.as_ref().map(|r| r.json())
    );
    answer(&mut flow, &mut h, 1, &[(":status", "529")], OVERLOADED);
    // OpenAI has no counting API: the gateway's estimate, marked, nothing more sent.
    let r = h.reply.clone().expect("an answer");
    assert_eq!(r.status, 200, "{:?}", r.json());
    let v = r.json();
    assert_eq!(v["estimated"], json!(true));
    assert!(v["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(h.callouts.len(), 1);
    flow.on_log(&mut h);
}

#[test]
fn bedrock_embeddings_tokens_are_read_from_the_header_of_a_callout() {
    let gw = gateway(
        "/v1/embeddings",
        vec![
            llm(
                9001,
                "openai",
                "/v1/embeddings",
                json!({"credentials": "sk-o", "variables": {"model": "text-embedding-3-small"}}),
            ),
            llm(
                9002,
                "bedrock",
                "/model",
                json!({"credentials": "bedrock-api-key",
                "variables": {"model": "cohere.embed-v4:0"}}),
            ),
        ],
    );
    let body = json!({"model": "text-embedding-3-small", "input": ["one", "two"], "encoding_format": "float"});
    let (mut flow, mut h) = begin(&gw, "/v1/embeddings", &body);
    let busy = r#"{"error":{"message":"busy","type":"server_error"}}"#;
    answer(&mut flow, &mut h, 1, &[(":status", "503")], busy);
    assert_eq!(h.callouts.len(), 2, "Bedrock is tried next");
    // Cohere on Bedrock: the vectors, and the input tokens only in the header.
    let cohere = r#"{"id":"x","embeddings":{"float":[[0.1,0.2],[0.3,0.4]]},"texts":["one","two"],"response_type":"embeddings_by_type"}"#;
    let headers = [
        (":status", "200"),
        ("x-amzn-bedrock-input-token-count", "17"),
    ];
    answer(&mut flow, &mut h, 2, &headers, cohere);
    let r = h.reply.clone().expect("an answer");
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["usage"]["prompt_tokens"], json!(17));
    flow.on_log(&mut h);
    // Charged what the provider reported.
    let start = Unit::Hour.window(h.now).0;
    assert_eq!(store::used(&h, "q|r|alice|hour", start), 17);
}
