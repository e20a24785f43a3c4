//! Host-side timing of the translation hot path (what `make bench`'s "translate" and
//! "stream" rows run inside the .wasm): OpenAI request of ~4 KB → canonical → Anthropic
//! body; Anthropic answer → OpenAI answer; an Anthropic stream → OpenAI chunks.
//! Ignored by default and asserting nothing about time (timings are machine noise):
//! `cargo test --release --test translate_timing -- --ignored --nocapture` (without `cli`, so
//! no binaries are linked: with them, `--release` builds the library twice, with and without
//! `panic = "abort"`, under one file name).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use std::time::Instant;
use tollgate::providers::{self, Defaults, FrontDoor, StreamEvent, Target, Wire};

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
