//! Go templates from arbitrary bytes: compile errors carry a position; rendering (over a
//! fixed request) never panics, stays under its output limit and is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::template::Template;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let t = match Template::compile(&text) {
        Ok(t) => t,
        Err(e) => {
            assert!(e.line >= 1 && e.col >= 1);
            return;
        }
    };
    let req = serde_json::json!({
        "req_body": {"content": "a \"b\" <c>", "documents": [{"text": "d"}], "n": 1.5},
        "req_headers": {"X-Name": ["n"]},
        "req_params": {"Resp0": "{\"embeddings\":[{\"values\":[1]}]}", "Resp0_contents": "c"},
        "resp_body": {"candidates": [{"content": {"parts": [{"text": "t"}]}}]}
    });
    let a = t.render_limited(&req, LIMIT);
    if let Ok(out) = &a {
        assert!(out.len() <= LIMIT);
    }
    assert_eq!(a, t.render_limited(&req, LIMIT));
});
