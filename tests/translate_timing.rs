//! Host-side timing of the translation hot path (what `make bench`'s "translate" and
//! "stream" rows run inside the .wasm): OpenAI request of ~4 KB → canonical → Anthropic
//! body; Anthropic answer → OpenAI answer; an Anthropic stream → OpenAI chunks; and whole
//! calls through the filter.
//! Ignored by default and asserting nothing about time (timings are machine noise):
//! `cargo test --release --features mock --test translate_timing -- --ignored --nocapture`
//! (without `cli`, so no binaries are linked: with them, `--release` builds the library
//! twice, with and without `panic = "abort"`, under one file name).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
#[cfg(feature = "mock")]
use serde_json::Value;
#[cfg(feature = "mock")]
use std::rc::Rc;
use std::time::Instant;
use tollgate::providers::{self, Defaults, FrontDoor, StreamEvent, Target, Wire};
#[cfg(feature = "mock")]
use tollgate::{config::Gateway, filter::Flow, host::mock::MockHost};

fn body_4k() -> Vec<u8> {
    let para = "The quarterly report shows revenue growth in every region, with the strongest \
                gains in cloud services and a small decline in hardware sales. ";
    serde_json::to_vec(&json!({
        "model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 256,
        "messages": [
            {"role": "system", "content": format!("You are a concise financial analyst. {}", para.repeat(3))},
            {"role": "user", "content": format!("Summarise this: {}", para.repeat(11))},
            {"role": "assistant", "content": "Revenue grew in all regions, led by cloud services."},
            {"role": "user", "content": format!("And the risks? {}", para.repeat(12))},
        ]
    }))
    .unwrap()
}

fn time(label: &str, n: u32, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:40} {us:8.2} µs");
}

#[test]
#[ignore]
fn translation_timing() {
    let body = body_4k();
    let defaults = Defaults::default();
    let target = Target {
        wire: Wire::Anthropic,
        model: "claude-3-5-haiku-latest",
        api_version: None,
        defaults: &defaults,
        aws: None,
        host: "127.0.0.1:1",
        now_unix: 1,
    };
    let req = FrontDoor::OpenAi.parse(&body).unwrap();
    let out = providers::encode_request(&req, &target).unwrap();
    assert!(!out.body.is_empty());
    time("parse OpenAI 4 KB request", 20_000, || {
        std::hint::black_box(FrontDoor::OpenAi.parse(&body).unwrap());
    });
    time("encode Anthropic request", 20_000, || {
        std::hint::black_box(providers::encode_request(&req, &target).unwrap());
    });
    let openai = Target {
        wire: Wire::OpenAi,
        model: "gpt-4o-mini",
        ..target.clone()
    };
    time("encode OpenAI request (pass-through)", 20_000, || {
        std::hint::black_box(providers::encode_request(&req, &openai).unwrap());
    });
    let answer = std::fs::read("tests/fixtures/anthropic_response_tool.json").unwrap();
    let resp = providers::decode_response(Wire::Anthropic, 200, &answer).unwrap();
    time("decode Anthropic answer", 20_000, || {
        std::hint::black_box(providers::decode_response(Wire::Anthropic, 200, &answer).unwrap());
    });
    time("encode OpenAI answer", 20_000, || {
        std::hint::black_box(FrontDoor::OpenAi.encode_response(&resp, "m"));
    });
    let sse = std::fs::read("tests/fixtures/anthropic_stream.sse").unwrap();
    let mut events: Vec<StreamEvent> = Vec::new();
    let mut out = Vec::new();
    time("Anthropic stream → OpenAI (whole fixture)", 5_000, || {
        let mut dec = providers::stream_decoder(Wire::Anthropic);
        let mut enc = FrontDoor::OpenAi.stream_encoder("m", true, 1);
        out.clear();
        // Feed it the way Envoy does: one network chunk per event.
        for chunk in sse.split_inclusive(|b| *b == b'\n') {
            events.clear();
            dec.feed(chunk, &mut events);
            for ev in &events {
                enc.encode(ev, &mut out);
            }
        }
        events.clear();
        dec.finish(&mut events);
        for ev in &events {
            enc.encode(ev, &mut out);
        }
        enc.finish(&mut out);
        std::hint::black_box(&out);
    });
    // The two halves apart: reading the provider's events, writing the client's.
    let mut decoded = Vec::new();
    time("  of which: decode Anthropic stream", 5_000, || {
        let mut dec = providers::stream_decoder(Wire::Anthropic);
        decoded.clear();
        for chunk in sse.split_inclusive(|b| *b == b'\n') {
            dec.feed(chunk, &mut decoded);
        }
        dec.finish(&mut decoded);
        std::hint::black_box(&decoded);
    });
    time("  of which: encode OpenAI chunks", 5_000, || {
        let mut enc = FrontDoor::OpenAi.stream_encoder("m", true, 1);
        out.clear();
        for ev in &decoded {
            enc.encode(ev, &mut out);
        }
        enc.finish(&mut out);
        std::hint::black_box(&out);
    });
    println!(
        "stream fixture: {} bytes in, {} events, {} bytes out",
        sse.len(),
        decoded.len(),
        out.len()
    );
}

#[cfg(feature = "mock")]
fn anthropic(host: &str) -> Value {
    json!({"host": [host], "url_pattern": "/v1/messages",
           "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-ant",
               "aliases": ["claude"], "variables": {"model": "claude-3-5-haiku-latest"}}}}}})
}

#[cfg(feature = "mock")]
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

#[cfg(feature = "mock")]
fn whole_call(label: &str, governed: bool) {
    // The same 4 KB request, for the Anthropic backend's alias.
    let mut doc: Value = serde_json::from_slice(&body_4k()).unwrap();
    doc["model"] = json!("claude");
    let body = serde_json::to_vec(&doc).unwrap();
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

/// Whole calls through the filter (`Flow` over the in-memory host: needs `--features mock`):
/// request headers, the 4 KB body to Anthropic, the Anthropic answer back, accounting; on a
/// plain `ai/llm` endpoint (the bench's), and on one whose body is also validated against a
/// JSON Schema and whose backend is chosen by weights (every reader of the body: where the
/// single parse shows). Public API only, so it runs on older commits too. `FLOW_N` calls per
/// scenario (default 20,000).
#[test]
#[ignore]
#[cfg(feature = "mock")]
fn whole_call_timing() {
    whole_call("whole translated call", false);
    whole_call("whole call, schema-validated and weighted", true);
}
