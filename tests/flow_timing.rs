//! Host-side timing of whole LLM calls through the filter (`Flow` over the in-memory host),
//! the part of `make bench`'s "translate" row that runs in the .wasm: request headers, a 4 KB
//! OpenAI body translated for Anthropic, the Anthropic answer back, accounting. Two endpoints:
//! a plain `ai/llm` one (the bench's), and a governed one where the body is also validated
//! against a JSON Schema and the backend chosen by weights (every reader of the body: where the
//! single parse shows). Ignored by default and asserting nothing about time (timings are
//! machine noise); uses only the public API, so it runs on older commits too:
//! `cargo test --release --features mock --test flow_timing -- --ignored --nocapture`
//! (`FLOW_N` calls per scenario, default 20,000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use std::rc::Rc;
use std::time::Instant;
use tollgate::config::Gateway;
use tollgate::filter::Flow;
use tollgate::host::mock::MockHost;

fn body_4k() -> Vec<u8> {
    let para = "The quarterly report shows revenue growth in every region, with the strongest \
                gains in cloud services and a small decline in hardware sales. ";
    serde_json::to_vec(&json!({
        "model": "claude", "temperature": 0.2, "max_tokens": 256,
        "messages": [
            {"role": "system", "content": format!("You are a concise financial analyst. {}", para.repeat(3))},
            {"role": "user", "content": format!("Summarise this: {}", para.repeat(11))},
            {"role": "assistant", "content": "Revenue grew in all regions, led by cloud services."},
            {"role": "user", "content": format!("And the risks? {}", para.repeat(12))},
        ]
    }))
    .unwrap()
}

fn anthropic(host: &str) -> Value {
    json!({"host": [host], "url_pattern": "/v1/messages",
           "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-ant",
               "aliases": ["claude"], "variables": {"model": "claude-3-5-haiku-latest"}}}}}})
}

fn gateway(governed: bool) -> Rc<Gateway> {
    let endpoint = if governed {
        json!({"endpoint": "/v1/chat/completions", "method": "POST",
               "extra_config": {
                   "validation/json-schema": {"type": "object", "required": ["model", "messages"],
                       "properties": {"messages": {"type": "array", "maxItems": 50,
                           "items": {"type": "object", "required": ["role", "content"]}}}},
                   "ai/routing": {"weights": [1, 1]}},
               "backend": [anthropic("http://127.0.0.1:9001"), anthropic("http://127.0.0.1:9002")]})
    } else {
        json!({"endpoint": "/v1/chat/completions", "method": "POST",
               "backend": [anthropic("http://127.0.0.1:9001")]})
    };
    let doc = json!({"version": 3, "endpoints": [endpoint]});
    Rc::new(Gateway::from_value(&doc, &|_| None).unwrap())
}

fn time(label: &str, governed: bool) {
    let body = body_4k();
    let answer = std::fs::read("tests/fixtures/anthropic_response_tool.json").unwrap();
    let gw = gateway(governed);
    let base = MockHost::request(
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
    )
    .with_body(&body);
    let one = || {
        let mut flow = Flow::new(Rc::clone(&gw));
        let mut h = base.clone();
        flow.on_request_headers(&mut h, false);
        flow.on_request_body(&mut h, body.len(), true);
        let mut h =
            h.with_response_headers(&[(":status", "200"), ("content-type", "application/json")]);
        flow.on_response_headers(&mut h, false);
        h.response_chunk = answer.clone();
        flow.on_response_body(&mut h, answer.len(), true);
        flow.on_log(&mut h);
        h
    };
    let h = one();
    assert!(h.reply.is_none(), "{:?}", h.reply.map(|r| r.json()));
    assert!(String::from_utf8_lossy(&h.response_chunk).contains("chat.completion"));
    let n = std::env::var("FLOW_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000u32);
    for _ in 0..n / 10 {
        std::hint::black_box(one());
    }
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(one());
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:48} {us:8.2} µs");
}

#[test]
#[ignore]
fn whole_call_timing() {
    time("whole translated call", false);
    time("whole call, schema-validated and weighted", true);
}
