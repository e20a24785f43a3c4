#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::super::config::servers;
use super::*;
use serde_json::json;

fn tool(method: &str, media: &str, output: Option<Value>) -> Tool {
    let mut t = json!({
        "name": "lookup", "title": "Lookup", "description": "d", "type": media,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string", "maxLength": 20}, "n": {"type": "integer"}}, "required": ["id"]},
        "workflow": {"endpoint": "/w/{id}/{n}", "backend": [{"host": ["http://h"], "url_pattern": "/items/{id}?n={n}", "method": method}]}
    });
    if let Some(o) = output {
        t["output_schema"] = o;
    }
    let cfg = json!({"servers": [{"name": "s", "title": "S", "version": "1", "tools": [t]}]});
    let s = servers(&cfg, "$", &|_| None).unwrap();
    s[0].tools[0].clone()
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn negotiates_a_revision_the_gateway_speaks() {
    assert_eq!(
        negotiate(&args(json!({"protocolVersion": "2025-06-18"}))),
        "2025-06-18"
    );
    assert_eq!(
        negotiate(&args(json!({"protocolVersion": "1999-01-01"}))),
        VERSIONS[0]
    );
    assert!(version_ok(None) && version_ok(Some("2025-03-26")));
    assert!(!version_ok(Some("2026-07-28")));
    let info = Info {
        name: "s".into(),
        title: "S".into(),
        version: "1".into(),
        instructions: "hi".into(),
        ..Info::default()
    };
    let r = initialize(&info, &Map::new());
    assert_eq!(
        r["serverInfo"],
        json!({"name": "s", "title": "S", "version": "1"})
    );
    assert_eq!(r["instructions"], "hi");
    assert_eq!(r["capabilities"]["tools"], json!({"listChanged": false}));
}

#[test]
fn arguments_fill_the_workflow_or_fail_the_schema() {
    let t = tool("GET", "text", None);
    let r = tool_request(&t, &args(json!({"id": "a b", "n": 3}))).unwrap();
    assert_eq!(
        r,
        ToolRequest {
            path: "/items/a%20b?n=3".into(),
            method: "GET".into(),
            body: None
        }
    );
    let post = tool("POST", "text", None);
    let r = tool_request(&post, &args(json!({"id": "x", "n": 1}))).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body.unwrap()).unwrap(),
        json!({"id": "x", "n": 1})
    );
    for bad in [
        json!({}),
        json!({"id": 5}),
        json!({"id": "x".repeat(21)}),
        json!({"id": "x", "n": 1.5}),
    ] {
        let e = tool_request(&t, &args(bad.clone())).unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS, "{bad}");
        assert_eq!(e.status, 200);
        assert!(e.data.is_some());
    }
    for hostile in ["../admin", "..", "a/b", "%2e%2e", "a\\b"] {
        let e = tool_request(&t, &args(json!({"id": hostile, "n": 1}))).unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS, "{hostile}");
    }
    let e = tool_request(&t, &args(json!({"id": "x"}))).unwrap_err();
    assert!(
        e.message.contains("argument n is required"),
        "{}",
        e.message
    );
    assert!(arguments(&args(json!({"arguments": [1]}))).is_err());
    assert_eq!(arguments(&Map::new()).unwrap(), Map::new());
}

#[test]
fn backend_answers_become_call_tool_results() {
    let t = tool(
        "GET",
        "text",
        Some(json!({"type": "object", "required": ["temp"]})),
    );
    let r = tool_result(&t, Some(200), Some("application/json"), br#"{"temp": 21}"#).unwrap();
    assert_eq!(r["isError"], false);
    assert_eq!(r["structuredContent"], json!({"temp": 21}));
    assert_eq!(
        r["content"][0],
        json!({"type": "text", "text": "{\"temp\": 21}"})
    );
    let e = tool_result(&t, Some(200), None, br#"{"wind": 3}"#).unwrap_err();
    assert_eq!(e.code, INTERNAL_ERROR);
    let e = tool_result(&t, Some(200), None, b"not json").unwrap_err();
    assert_eq!(
        e.code, INTERNAL_ERROR,
        "an output schema needs a JSON object"
    );
    let failed = tool_result(&t, Some(503), None, b"db down").unwrap();
    assert_eq!(failed["isError"], true);
    assert_eq!(
        failed["content"][0]["text"], "the tool failed",
        "no backend message without return_error_msg"
    );
    let mut loud = t.clone();
    loud.return_error_msg = true;
    let failed = tool_result(&loud, None, None, b"").unwrap();
    assert!(failed["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("did not answer"));
    let img = tool("GET", "image", None);
    let r = tool_result(&img, Some(200), Some("image/png; x=1"), &[0x89, 0x50]).unwrap();
    assert_eq!(
        r["content"][0],
        json!({"type": "image", "data": "iVA=", "mimeType": "image/png"})
    );
}
