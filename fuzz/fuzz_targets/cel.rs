//! CEL expressions from arbitrary bytes: compile errors point inside the expression;
//! evaluation (against a fixed request) never panics and is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::cel::{Activation, Program, Value};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let p = match Program::compile(&text) {
        Ok(p) => p,
        Err(e) => {
            assert!(e.pos <= text.len());
            return;
        }
    };
    let claims = serde_json::json!({"sub": "u", "roles": ["a", "b"], "n": 1.5, "m": {"k": [1, {}]}});
    let mut act = Activation::new();
    act.bind("req_method", Value::str("POST"))
        .bind("req_path", Value::str("/x"))
        .bind("req_headers", Value::string_lists([("X-A", "1"), ("Cookie", "a=b; c=d")]))
        .bind("req_querystring", Value::string_lists([("q", "1"), ("q", "2")]))
        .bind("req_params", Value::string_map([("Id", "7")]))
        .bind("resp_data", Value::from_json(&claims))
        .bind("JWT", Value::from_json(&claims))
        .bind("now", Value::str("2024-01-15T09:30:00Z"))
        .bind("value", Value::str("gold"));
    let a = p.eval(&act).map(|v| v.to_string());
    assert_eq!(a, p.eval(&act).map(|v| v.to_string()));
});
