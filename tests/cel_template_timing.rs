//! Host-side timing of the two configuration-time engines on a request's path: a typical
//! policy (`backend/conditional` on a header, KrakenD's playground), a typical JWT check
//! (KrakenD's CEL docs), and KrakenD's AI body template (pre-2.11 Gemini request) and
//! response template. Ignored by default and asserting nothing about time:
//! `cargo test --release --test cel_template_timing -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use std::hint::black_box;
use std::time::Instant;
use tollgate::cel::{canonical_header_key, Activation, Program, Value};
use tollgate::template::Template;

fn time(label: &str, n: u32, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:50} {us:8.3} µs");
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/krakend_templates/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
#[ignore]
fn cel_and_template_timing() {
    // A request as Envoy gives it: lower-case header names, a dozen headers.
    let headers: Vec<(String, String)> = [
        ("host", "gw.example.com"),
        ("user-agent", "curl/8.5"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
        ("content-length", "58"),
        ("x-request-id", "5f1c"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-role", "reader,moderator"),
        ("x-user-id", "42"),
        ("cookie", "GDPR=yes; ab-test-xyz=1"),
        ("x-position", "developer"),
    ]
    .iter()
    .map(|(k, v)| (canonical_header_key(k), v.to_string()))
    .collect();
    let claims =
        json!({"sub": "42", "user_id": "42", "enabled_days": [1, 2, 3, 4, 5], "roles": ["reader"]});
    let policy = Program::compile("req_headers['X-Role'][0].contains('moderator')").unwrap();
    let jwt = Program::compile(
        "has(JWT.user_id) && has(JWT.enabled_days) && (timestamp(now).getDayOfWeek() in JWT.enabled_days)",
    )
    .unwrap();
    let build = || {
        let mut a = Activation::new();
        a.bind(
            "req_headers",
            Value::string_lists(headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )
        .bind("JWT", Value::from_json(&claims))
        .bind("now", Value::str("2024-01-15T09:30:00Z"));
        a
    };
    assert!(policy.check(&build()) && jwt.check(&build()));
    time("cel compile (policy)", 20_000, || {
        black_box(Program::compile("req_headers['X-Role'][0].contains('moderator')").unwrap());
    });
    time("cel activation (12 headers, JWT, now)", 100_000, || {
        black_box(build());
    });
    let act = build();
    time("cel eval: X-Role contains (policy)", 200_000, || {
        black_box(policy.check(&act));
    });
    time("cel eval: JWT has/in/getDayOfWeek", 200_000, || {
        black_box(jwt.check(&act));
    });

    let req = json!({
        "req_body": {"contents": "Tell me a consultant joke", "instructions": "Act as a consultant"},
        "req_headers": {"X-Name": ["Ana"], "X-Locale": ["es-ES"], "X-Position": ["developer"]},
    });
    let request_t =
        Template::compile(&fixture("llm-pre-2.11-generate.request.gemini.tmpl")).unwrap();
    let response_t =
        Template::compile(&fixture("llm-pre-2.11-generate.response.gemini.tmpl")).unwrap();
    let resp = json!({"resp_body": {"candidates": [{"content": {"parts": [{"text": "Hello! I am GarsIA."}, {"text": "Here is a joke."}]}}],
                                    "usageMetadata": {"totalTokenCount": 42}}});
    assert!(request_t.render(&req).unwrap().contains("consultant joke"));
    time("template compile (Gemini request, 842 B)", 20_000, || {
        black_box(
            Template::compile(&fixture("llm-pre-2.11-generate.request.gemini.tmpl")).unwrap(),
        );
    });
    time("template render: Gemini request body", 100_000, || {
        black_box(request_t.render(&req).unwrap());
    });
    time("template render: Gemini response", 100_000, || {
        black_box(response_t.render(&resp).unwrap());
    });
}
