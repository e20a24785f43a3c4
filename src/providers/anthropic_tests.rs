#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]
use super::*;
use crate::providers::openai;
use crate::providers::{Defaults, Wire};
use crate::stream::SseParser;

fn target<'a>(model: &'a str, d: &'a Defaults) -> Target<'a> {
    Target {
        wire: Wire::Anthropic,
        model,
        api_version: None,
        defaults: d,
        aws: None,
        host: "",
        now_unix: 0,
    }
}

fn encode(openai_body: &str, d: &Defaults) -> Result<Value, TranslateError> {
    let r = openai::parse_request(openai_body.as_bytes()).unwrap();
    encode_request(&r, &target("claude-sonnet-4-5", d)).map(|o| {
        assert_eq!(o.path, "/v1/messages");
        assert_eq!(
            o.headers,
            vec![("anthropic-version".to_string(), "2023-06-01".to_string())]
        );
        serde_json::from_slice(&o.body).unwrap()
    })
}

#[test]
fn openai_request_to_anthropic_request() {
    let body = r#"{
      "model": "claude", "stream": true, "temperature": 0.2, "top_p": 0.8, "stop": ["END"], "user": "u-9",
      "seed": 3, "parallel_tool_calls": false,
      "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
        {"role": "user", "content": [
          {"type": "text", "text": "Weather here and there?"},
          {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
          {"type": "image_url", "image_url": {"url": "https://example.com/map.jpg", "detail": "high"}}
        ]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
          {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
          {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "22C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "18C"}]},
        {"role": "user", "content": "Thanks"},
        {"role": "user", "content": "And tomorrow?"}
      ],
      "tools": [
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "now"}}
      ],
      "tool_choice": "required"
    }"#;
    let got = encode(body, &Defaults::default()).unwrap();
    let want = json!({
      "model": "claude-sonnet-4-5",
      "max_tokens": 4096,
      "system": "You are terse.\n\nUse metric.",
      "messages": [
        {"role": "user", "content": [
          {"type": "text", "text": "Weather here and there?"},
          {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
          {"type": "image", "source": {"type": "url", "url": "https://example.com/map.jpg"}}
        ]},
        {"role": "assistant", "content": [
          {"type": "text", "text": "Checking."},
          {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
          {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}
        ]},
        {"role": "user", "content": [
          {"type": "tool_result", "tool_use_id": "toolu_1", "content": "22C"},
          {"type": "tool_result", "tool_use_id": "toolu_2", "content": "18C"},
          {"type": "text", "text": "Thanks"},
          {"type": "text", "text": "And tomorrow?"}
        ]}
      ],
      "temperature": 0.2, "top_p": 0.8,
      "stop_sequences": ["END"],
      "metadata": {"user_id": "u-9"},
      "stream": true,
      "tools": [
        {"name": "get_weather", "description": "Current weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
      ],
      "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
    });
    assert_eq!(got, want);
}

#[test]
fn defaults_tool_choices_and_response_format() {
    let d = Defaults {
        max_tokens: Some(1000),
        temperature: Some(0.7),
        top_p: None,
    };
    let b = encode(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        &d,
    )
    .unwrap();
    assert_eq!(b["max_tokens"], 1000);
    assert_eq!(b["temperature"], 0.7);
    let b = encode(
        r#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
        &d,
    )
    .unwrap();
    assert_eq!(b["max_tokens"], 10);
    for (tc, want) in [
        (r#""auto""#, json!({"type": "auto"})),
        (r#""none""#, json!({"type": "none"})),
        (
            r#"{"type":"function","function":{"name":"f"}}"#,
            json!({"type": "tool", "name": "f"}),
        ),
    ] {
        let b = encode(
            &format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{{"name":"f"}}}}],"tool_choice":{tc}}}"#),
            &Defaults::default(),
        )
        .unwrap();
        assert_eq!(b["tool_choice"], want);
    }
    let b = encode(
        r#"{"model":"m","messages":[{"role":"system","content":"S"},{"role":"user","content":"hi"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}"#,
        &Defaults::default(),
    )
    .unwrap();
    assert_eq!(
        b["system"],
        "S\n\nRespond only with a single valid JSON value, with no text before or after it, that conforms to this JSON Schema:\n{\"type\":\"object\"}"
    );
    let b = encode(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#, &Defaults::default()).unwrap();
    assert_eq!(
        b["system"],
        "Respond only with a single valid JSON object, with no text before or after it."
    );
    let b = encode(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"text"}}"#, &Defaults::default()).unwrap();
    assert!(b.get("system").is_none());
}

#[test]
fn encode_rejects_what_anthropic_cannot_express() {
    let cases: &[(&str, &str)] = &[
        (r#"{"model":"m","n":2,"messages":[{"role":"user","content":"hi"}]}"#, "n: Anthropic returns a single choice; n = 2 is not supported"),
        (
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#,
            "messages[0].tool_calls[0].function.arguments: invalid JSON: key must be a string at line 1 column 2",
        ),
        (
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}"#,
            "messages[0].tool_calls[0].function.arguments: expected a JSON object, got an array",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]}"#,
            "messages[0].content[0].image_url.url: expected an http(s) or data: URL",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAA"}}]}]}"#,
            "messages[0].content[0].image_url.url: image type \"image/tiff\" is not supported by Anthropic (jpeg, png, gif, webp)",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,AAA"}}]}]}"#,
            "messages[0].content[0].image_url.url: data URL must be base64-encoded",
        ),
        (r#"{"model":"m","temperature":1.5,"messages":[{"role":"user","content":"hi"}]}"#, "temperature: 1.5 is out of range for Anthropic (0 to 1)"),
    ];
    for (body, msg) in cases {
        assert_eq!(
            encode(body, &Defaults::default()).unwrap_err().0,
            *msg,
            "{body}"
        );
    }
}

const RESPONSE: &str = r#"{
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
  "content": [{"type": "text", "text": "Hi! My name is Claude."}],
  "stop_reason": "end_turn", "stop_sequence": null,
  "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100}
}"#;

const TOOL_RESPONSE: &str = r#"{
  "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
  "stop_reason": "tool_use", "stop_sequence": null,
  "content": [
    {"type": "thinking", "thinking": "hmm", "signature": "abc"},
    {"type": "text", "text": "I'll check the weather."},
    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}}
  ],
  "usage": {"input_tokens": 472, "output_tokens": 89}
}"#;

#[test]
fn decodes_responses() {
    let r = decode_response(200, RESPONSE.as_bytes()).unwrap();
    assert_eq!(r.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        r.choices[0].message.content,
        vec![Part::Text("Hi! My name is Claude.".into())]
    );
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        r.usage,
        Some(Usage {
            prompt_tokens: 2205,
            completion_tokens: 503,
            cached_tokens: 100,
            reasoning_tokens: 0,
            cache_write_tokens: 10,
        })
    );
    let r = decode_response(200, TOOL_RESPONSE.as_bytes()).unwrap();
    let m = &r.choices[0].message;
    // Thinking is kept, with its signature and origin (before it was dropped).
    assert_eq!(
        m.content,
        vec![
            Part::Reasoning(Reasoning {
                text: "hmm".into(),
                signature: Some("abc".into()),
                redacted: false,
                origin: Origin::Anthropic,
                id: None,
            }),
            Part::Text("I'll check the weather.".into())
        ]
    );
    assert_eq!(m.tool_calls[0].id, "toolu_01A09q90qw90lq917835lq9");
    let args: Value = serde_json::from_str(&m.tool_calls[0].arguments).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    for (stop, want) in [
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("refusal", FinishReason::ContentFilter),
    ] {
        let b = RESPONSE.replace("\"end_turn\"", &format!("\"{stop}\""));
        assert_eq!(
            decode_response(200, b.as_bytes()).unwrap().choices[0].finish_reason,
            Some(want)
        );
    }
    assert_eq!(
        decode_response(200, b"{}").unwrap_err().message,
        "provider response has no \"content\" array"
    );
    assert!(decode_response(200, b"nope")
        .unwrap_err()
        .message
        .starts_with("provider returned invalid JSON"));
}

#[test]
fn error_mapping_table() {
    let cases: &[(u16, &str, u16, &str, Option<&str>, &str)] = &[
        (
            400,
            "invalid_request_error",
            400,
            "invalid_request_error",
            Some("invalid_request_error"),
            "bad",
        ),
        (
            401,
            "authentication_error",
            502,
            "server_error",
            Some("authentication_error"),
            "provider rejected the gateway's credentials: bad",
        ),
        (
            403,
            "permission_error",
            502,
            "server_error",
            Some("permission_error"),
            "provider rejected the gateway's credentials: bad",
        ),
        (
            402,
            "billing_error",
            502,
            "server_error",
            Some("billing_error"),
            "bad",
        ),
        (
            404,
            "not_found_error",
            404,
            "invalid_request_error",
            Some("not_found_error"),
            "bad",
        ),
        (
            413,
            "request_too_large",
            413,
            "invalid_request_error",
            Some("request_too_large"),
            "bad",
        ),
        (
            429,
            "rate_limit_error",
            429,
            "rate_limit_error",
            Some("rate_limit_error"),
            "bad",
        ),
        (
            500,
            "api_error",
            502,
            "server_error",
            Some("api_error"),
            "bad",
        ),
        (
            529,
            "overloaded_error",
            503,
            "server_error",
            Some("overloaded_error"),
            "bad",
        ),
        (
            504,
            "timeout_error",
            504,
            "server_error",
            Some("timeout_error"),
            "bad",
        ),
    ];
    for (status, etype, want_status, kind, code, message) in cases {
        let body = format!(
            r#"{{"type":"error","error":{{"type":"{etype}","message":"bad"}},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}"#
        );
        let e = decode_error(*status, body.as_bytes());
        assert_eq!(
            (
                e.status,
                e.kind.as_str(),
                e.code.as_deref(),
                e.message.as_str()
            ),
            (*want_status, *kind, *code, *message),
            "{etype}"
        );
        // Back out through the Anthropic front door: the type survives.
        let v: Value = serde_json::from_slice(&error_body(&e)).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": etype, "message": message}})
        );
    }
    let e = decode_error(401, b"");
    assert_eq!((e.status, e.message.as_str()), (502, "provider rejected the gateway's credentials: provider returned HTTP 401 with an empty body"));
    let e = decode_error(529, b"<html>busy</html>");
    assert_eq!(
        (e.status, e.message.as_str()),
        (503, "provider returned HTTP 529: <html>busy</html>")
    );
    // OpenAI-side errors rendered for Anthropic clients.
    let e = openai::decode_error(
        429,
        br#"{"error":{"message":"slow","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#,
    );
    let v: Value = serde_json::from_slice(&error_body(&e)).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let c = parse_request(b"{}").unwrap_err();
    let v: Value = serde_json::from_slice(&client_error_body(&c)).unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "model: missing required field"}})
    );
}

const STREAM: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2,\"cache_read_input_tokens\":8},\"content\":[],\"stop_reason\":null}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let\u{2019}s check\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" the weather.\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":1}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"get_time\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":2}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

fn stream_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "msg_014p7gG3wDgGV9EUtLvnow3U".into(),
            model: "claude-sonnet-4-5".into(),
        },
        StreamEvent::Text {
            index: 0,
            text: "Okay, let\u{2019}s check".into(),
        },
        StreamEvent::Text {
            index: 0,
            text: " the weather.".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            call: 0,
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            call: 0,
            arguments: "{\"location\":".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            call: 0,
            arguments: " \"San Francisco, CA\"}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            call: 1,
            id: "toolu_2".into(),
            name: "get_time".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            call: 1,
            arguments: "{}".into(),
        },
        StreamEvent::Finish {
            index: 0,
            reason: FinishReason::ToolCalls,
        },
        StreamEvent::Usage(Usage {
            prompt_tokens: 480,
            completion_tokens: 89,
            cached_tokens: 8,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
        }),
    ]
}

fn decode_all(chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut d = stream_decoder();
    let mut out = Vec::new();
    for c in chunks {
        d.feed(c, &mut out);
    }
    d.finish(&mut out);
    out
}

#[test]
fn decodes_stream_at_every_byte_split() {
    let b = STREAM.as_bytes();
    let whole = decode_all(&[b]);
    assert_eq!(whole, stream_events());
    for i in 0..=b.len() {
        assert_eq!(decode_all(&[&b[..i], &b[i..]]), whole, "split at {i}");
    }
    let crlf = STREAM.replace('\n', "\r\n");
    assert_eq!(decode_all(&[crlf.as_bytes()]), whole);
}

#[test]
fn stream_error_and_truncation() {
    let s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n\
             event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
    let ev = decode_all(&[s.as_bytes()]);
    assert_eq!(
        ev[1],
        StreamEvent::Error(ProviderError {
            status: 503,
            kind: "server_error".into(),
            message: "Overloaded".into(),
            code: Some("overloaded_error".into())
        })
    );
    assert_eq!(ev.len(), 2);
    let cut = &STREAM[..STREAM.find("event: message_delta").unwrap()];
    let ev = decode_all(&[cut.as_bytes()]);
    assert!(
        matches!(ev.last(), Some(StreamEvent::Error(e)) if e.message == "provider stream ended before message_stop" && e.status == 502)
    );
    let ev = decode_all(&[b"event: message_start\ndata: {nope\n\n"]);
    assert!(
        matches!(&ev[..], [StreamEvent::Error(e)] if e.message.starts_with("provider sent an invalid stream event"))
    );
}

// ---- Front door ----

const CLIENT_REQUEST: &str = r#"{
  "model": "claude-alias", "max_tokens": 1024, "stream": true,
  "system": [{"type": "text", "text": "Be nice.", "cache_control": {"type": "ephemeral"}}],
  "messages": [
    {"role": "user", "content": [
      {"type": "text", "text": "What is this?"},
      {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}
    ]},
    {"role": "assistant", "content": [
      {"type": "thinking", "thinking": "...", "signature": "s"},
      {"type": "text", "text": "Let me look."},
      {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "cat"}}
    ]},
    {"role": "user", "content": [
      {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a cat"}]},
      {"type": "text", "text": "So?"}
    ]}
  ],
  "tools": [{"name": "lookup", "description": "Search", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}],
  "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
  "temperature": 0.3, "top_k": 5, "stop_sequences": ["\n\nHuman:"], "metadata": {"user_id": "user-7"}
}"#;

#[test]
fn anthropic_front_door_to_openai_provider() {
    let r = parse_request(CLIENT_REQUEST.as_bytes()).unwrap();
    assert_eq!(r.model, "claude-alias");
    let d = Defaults::default();
    let t = Target {
        wire: Wire::OpenAi,
        model: "gpt-4o",
        api_version: None,
        defaults: &d,
        aws: None,
        host: "",
        now_unix: 0,
    };
    let o = openai::encode_request(&r, &t).unwrap();
    let b: Value = serde_json::from_slice(&o.body).unwrap();
    assert_eq!(
        b,
        json!({
          "model": "gpt-4o",
          "messages": [
            {"role": "system", "content": "Be nice."},
            {"role": "user", "content": [
              {"type": "text", "text": "What is this?"},
              {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
            ]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
              {"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"},
            {"role": "user", "content": "So?"}
          ],
          "tools": [{"type": "function", "function": {"name": "lookup", "description": "Search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
          "tool_choice": "auto",
          "parallel_tool_calls": false,
          "temperature": 0.3,
          "max_tokens": 1024,
          "stop": ["\n\nHuman:"],
          "user": "user-7",
          "stream": true,
          "stream_options": {"include_usage": true}
        })
    );
    // And back to Anthropic: the same conversation shape, with the system block's breakpoint,
    // the thinking block (first in its turn) and the client's other fields (top_k).
    let back = encode_request(&r, &target("claude-sonnet-4-5", &d)).unwrap();
    let b: Value = serde_json::from_slice(&back.body).unwrap();
    assert_eq!(
        b["system"],
        json!([{"type": "text", "text": "Be nice.", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        b["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "...", "signature": "s"})
    );
    assert_eq!(b["top_k"], 5);
    assert_eq!(
        b["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"})
    );
    assert_eq!(
        b["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
}

#[test]
fn front_door_rejects_with_precise_messages() {
    let cases: &[(&str, &str)] = &[
        (r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#, "max_tokens: missing required field"),
        (r#"{"max_tokens":5,"messages":[]}"#, "model: missing required field"),
        (r#"{"model":"m","max_tokens":5}"#, "messages: missing required field"),
        (r#"{"model":"m","max_tokens":5,"messages":[]}"#, "messages: must contain at least one message"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#, "messages[0].role: unknown role \"system\" (expected user or assistant)"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"container_upload"}]}]}"#, "messages[0].content[0].type: unknown content block type \"container_upload\""),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document"}]}]}"#, "messages[0].content[0].source: missing required field"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"ftp"}}]}]}"#, "messages[0].content[0].source.type: unsupported document source type \"ftp\" (expected base64, text, url, content or file)"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"forever"}}]}]}"#, "messages[0].content[0].cache_control.type: unknown cache_control type \"forever\" (expected ephemeral)"),
        (r#"{"model":"m","max_tokens":5,"system":[{"type":"text","text":"a","cache_control":"yes"}],"messages":[{"role":"user","content":"hi"}]}"#, "system[0].cache_control: expected an object, got a string"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"t"}]}]}"#, "messages[0].content[0].signature: missing required field"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"thinking","thinking":"t","signature":"s"}]}]}"#, "messages[0].content[0].type: \"thinking\" blocks are not allowed in user messages"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"redacted_thinking"}]}]}"#, "messages[0].content[0].data: missing required field"),
        (r#"{"model":"m","max_tokens":5,"thinking":{"type":"enabled"},"messages":[{"role":"user","content":"hi"}]}"#, "thinking.budget_tokens: missing required field"),
        (r#"{"model":"m","max_tokens":5,"thinking":{"type":"deep"},"messages":[{"role":"user","content":"hi"}]}"#, "thinking.type: unknown thinking type \"deep\" (expected enabled, adaptive or disabled)"),
        (r#"{"model":"m","max_tokens":5,"output_config":{"format":{"type":"xml"}},"messages":[{"role":"user","content":"hi"}]}"#, "output_config.format.type: unknown format type \"xml\" (expected json_schema)"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"b","input":{}}]}]}"#, "messages[0].content[0].type: \"tool_use\" blocks are not allowed in user messages"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a","name":"b","input":[]}]}]}"#, "messages[0].content[0].input: expected an object, got an array"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}"#, "messages[0].content[0].tool_use_id: missing required field"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}"#, "messages[0].content[0].source.type: unsupported image source type \"file\" (expected base64 or url)"),
        (r#"{"model":"m","max_tokens":5,"system":5,"messages":[{"role":"user","content":"hi"}]}"#, "system: expected a string or an array of text blocks, got a number"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#, "tools[0].type: server tool \"web_search_20250305\" is not supported by this gateway"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f"}]}"#, "tools[0].input_schema: missing required field"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tool_choice":{"type":"tool"}}"#, "tool_choice.name: missing required field"),
        (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tool_choice":{"type":"all"}}"#, "tool_choice.type: unknown tool choice type \"all\" (expected auto, any, tool or none)"),
        (r#"{"model":"m","max_tokens":"5","messages":[{"role":"user","content":"hi"}]}"#, "max_tokens: expected a non-negative integer, got a string"),
        (r#"{"model":"m","max_tokens":18446744073709551615,"messages":[{"role":"user","content":"hi"}]}"#, "max_tokens: 18446744073709551615 is more than any model allows (at most 2147483647)"),
        (r#"{"model":"m","max_tokens":2147483648,"messages":[{"role":"user","content":"hi"}]}"#, "max_tokens: 2147483648 is more than any model allows (at most 2147483647)"),
    ];
    for (body, msg) in cases {
        assert_eq!(
            parse_request(body.as_bytes()).unwrap_err().message,
            *msg,
            "{body}"
        );
    }
}

#[test]
fn front_door_encodes_response() {
    let r = openai::decode_response(
        200,
        br#"{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Sure.","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":50,"completion_tokens":7,"total_tokens":57,"prompt_tokens_details":{"cached_tokens":20}}}"#,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&encode_response(&r, "claude-alias")).unwrap();
    assert_eq!(
        v,
        json!({
          "id": "msg_chatcmpl-9", "type": "message", "role": "assistant", "model": "claude-alias",
          "content": [{"type": "text", "text": "Sure."}, {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}],
          "stop_reason": "tool_use", "stop_sequence": null,
          "usage": {"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 20, "output_tokens": 7}
        })
    );
    // Anthropic → canonical → Anthropic keeps content and stop reason.
    let r = decode_response(200, TOOL_RESPONSE.as_bytes()).unwrap();
    let v: Value = serde_json::from_slice(&encode_response(&r, "x")).unwrap();
    assert_eq!(v["id"], "msg_01Aq9w938a90dw8q");
    assert_eq!(
        v["content"][0],
        json!({"type": "thinking", "thinking": "hmm", "signature": "abc"})
    );
    assert_eq!(
        v["content"][2]["input"],
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(v["stop_reason"], "tool_use");
}

/// A minimal model of the anthropic SDK's stream accumulator: it checks the event order
/// and rebuilds the final message from the events.
fn accumulate(bytes: &[u8]) -> Value {
    let mut p = SseParser::new();
    let mut events = Vec::new();
    p.feed(bytes, &mut events);
    p.finish(&mut events);
    let mut msg = Value::Null;
    let mut json_bufs: Vec<String> = Vec::new();
    let mut open: Option<u64> = None;
    let mut state = "init";
    for e in events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        let t = v["type"].as_str().unwrap();
        assert_eq!(
            e.event.as_deref(),
            Some(t),
            "SSE event name matches data type"
        );
        match t {
            "message_start" => {
                assert_eq!(state, "init");
                state = "started";
                msg = v["message"].clone();
                assert!(msg["usage"]["input_tokens"].is_u64());
            }
            "content_block_start" => {
                assert_eq!(state, "started");
                assert!(open.is_none(), "previous block not stopped");
                let i = v["index"].as_u64().unwrap();
                assert_eq!(
                    i as usize,
                    msg["content"].as_array().unwrap().len(),
                    "block indexes are consecutive"
                );
                open = Some(i);
                msg["content"]
                    .as_array_mut()
                    .unwrap()
                    .push(v["content_block"].clone());
                json_bufs.push(String::new());
            }
            "content_block_delta" => {
                let i = v["index"].as_u64().unwrap();
                assert_eq!(open, Some(i));
                let block = &mut msg["content"][i as usize];
                match v["delta"]["type"].as_str().unwrap() {
                    "text_delta" => {
                        let t = format!(
                            "{}{}",
                            block["text"].as_str().unwrap(),
                            v["delta"]["text"].as_str().unwrap()
                        );
                        block["text"] = json!(t);
                    }
                    "input_json_delta" => {
                        assert_eq!(block["type"], "tool_use");
                        json_bufs[i as usize]
                            .push_str(v["delta"]["partial_json"].as_str().unwrap());
                        if let Ok(input) = serde_json::from_str::<Value>(&json_bufs[i as usize]) {
                            block["input"] = input;
                        }
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(open, v["index"].as_u64());
                open = None;
            }
            "message_delta" => {
                assert!(open.is_none());
                state = "delta";
                msg["stop_reason"] = v["delta"]["stop_reason"].clone();
                msg["usage"]["output_tokens"] = v["usage"]["output_tokens"].clone();
                if v["usage"]["input_tokens"].is_u64() {
                    msg["usage"]["input_tokens"] = v["usage"]["input_tokens"].clone();
                }
            }
            "message_stop" => {
                assert_eq!(state, "delta");
                state = "stopped";
            }
            "error" => state = "error",
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(
        state == "stopped" || state == "error",
        "ended in state {state}"
    );
    msg
}

#[test]
fn stream_encoder_produces_an_accumulable_message() {
    // OpenAI-style order: usage after finish.
    let mut enc = StreamEncoder::new("claude-alias");
    let mut out = Vec::new();
    let events = [
        StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: "gpt-4o".into(),
        },
        StreamEvent::Text {
            index: 0,
            text: "Hel".into(),
        },
        StreamEvent::Text {
            index: 0,
            text: "lo".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            call: 0,
            id: "call_1".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            call: 0,
            arguments: "{\"a\":".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            call: 0,
            arguments: "1}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            call: 1,
            id: "call_2".into(),
            name: "g".into(),
        },
        StreamEvent::Text {
            index: 1,
            text: "ignored".into(),
        },
        StreamEvent::Finish {
            index: 0,
            reason: FinishReason::ToolCalls,
        },
        StreamEvent::Usage(Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 4,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
        }),
    ];
    for e in &events {
        enc.encode(e, &mut out);
    }
    enc.finish(&mut out);
    enc.finish(&mut out);
    let msg = accumulate(&out);
    assert_eq!(
        msg,
        json!({
          "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "claude-alias",
          "content": [
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "call_2", "name": "g", "input": {}}
          ],
          "stop_reason": "tool_use", "stop_sequence": null,
          "usage": {"input_tokens": 6, "output_tokens": 5}
        })
    );
}

#[test]
fn anthropic_stream_through_anthropic_front_door_round_trips() {
    let mut enc = StreamEncoder::new("claude-sonnet-4-5");
    let mut out = Vec::new();
    for e in decode_all(&[STREAM.as_bytes()]) {
        enc.encode(&e, &mut out);
    }
    enc.finish(&mut out);
    let msg = accumulate(&out);
    assert_eq!(msg["id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
    assert_eq!(
        msg["content"][0]["text"],
        "Okay, let\u{2019}s check the weather."
    );
    assert_eq!(
        msg["content"][1]["input"],
        json!({"location": "San Francisco, CA"})
    );
    assert_eq!(msg["content"][2]["name"], "get_time");
    assert_eq!(
        msg["usage"],
        json!({"input_tokens": 472, "output_tokens": 89})
    );
    // And our decoder reads our encoder back.
    let back = decode_all(&[&out]);
    assert_eq!(&back[1..9], &stream_events()[1..9]);
}

#[test]
fn stream_encoder_error_and_empty_stream() {
    let mut enc = StreamEncoder::new("m");
    let mut out = Vec::new();
    enc.encode(
        &StreamEvent::Start {
            id: "msg_1".into(),
            model: "x".into(),
        },
        &mut out,
    );
    enc.encode(
        &StreamEvent::Error(ProviderError {
            status: 503,
            kind: "server_error".into(),
            message: "Overloaded".into(),
            code: None,
        }),
        &mut out,
    );
    enc.encode(
        &StreamEvent::Text {
            index: 0,
            text: "late".into(),
        },
        &mut out,
    );
    enc.finish(&mut out);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.ends_with("event: error\ndata: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\"},\"type\":\"error\"}\n\n"), "{text}");
    accumulate(&out);
    // A stream with no events still yields a valid, empty message.
    let mut enc = StreamEncoder::new("m");
    let mut out = Vec::new();
    enc.finish(&mut out);
    let msg = accumulate(&out);
    assert_eq!(msg["content"], json!([]));
    assert_eq!(msg["stop_reason"], "end_turn");
}

#[test]
fn never_panics_on_truncated_or_hostile_input() {
    let fixtures = [CLIENT_REQUEST, RESPONSE, TOOL_RESPONSE, STREAM];
    for f in fixtures {
        let b = f.as_bytes();
        for i in 0..=b.len() {
            let _ = parse_request(&b[..i]);
            let _ = openai::parse_request(&b[..i]);
            let _ = decode_response(200, &b[..i]);
            let _ = openai::decode_response(200, &b[..i]);
            let _ = decode_error(400, &b[..i]);
            let _ = openai::decode_error(400, &b[..i]);
            let _ = decode_all(&[&b[..i]]);
        }
    }
    let huge = br#"{"content":[],"usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":18446744073709551615,"output_tokens":18446744073709551615}}"#;
    let r = decode_response(200, huge).unwrap();
    assert_eq!(r.usage.unwrap().prompt_tokens, u64::MAX);
    let _ = openai::encode_response(&r, "m");
    let _ = encode_response(&r, "m");
}

/// Anthropic's 529 `overloaded_error` (recorded body shape: tests/fixtures/anthropic_error.json's
/// form, Anthropic's documented errors) stays 529 on the Anthropic door (the SDK's
/// `OverloadedError`) and is 503 on the OpenAI door; any provider's 503 is overloaded on the
/// Anthropic door too.
#[test]
fn overloaded_is_529_on_the_anthropic_door_and_503_on_the_openai_door() {
    use crate::providers::FrontDoor;
    let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let e = decode_error(529, body);
    let (status, out) = FrontDoor::Anthropic.error(&e);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(status, 529);
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    let (status, out) = FrontDoor::OpenAi.error(&e);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(status, 503);
    assert_eq!(v["error"]["type"], "server_error");
    let other = crate::providers::openai::decode_error(503, b"{}");
    assert_eq!(FrontDoor::Anthropic.error(&other).0, 529);
    // Gemini and Bedrock keep a provider's status: a 529 from them is 503 for OpenAI clients.
    let gemini = crate::providers::gemini::decode_error(529, b"{}");
    assert_eq!(FrontDoor::OpenAi.error(&gemini).0, 503);
    assert_eq!(FrontDoor::Anthropic.error(&gemini).0, 529);
    let not_overloaded = decode_error(
        429,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
    );
    assert_eq!(FrontDoor::Anthropic.error(&not_overloaded).0, 429);
}

/// Cache writes survive Anthropic → canonical → Anthropic, whole and streamed: they were
/// folded into `input_tokens` and reported as 0. Usage as Anthropic's Messages API reference
/// documents it (`input_tokens` excludes cache reads and writes).
#[test]
fn cache_writes_reach_the_anthropic_door() {
    let r = decode_response(200, RESPONSE.as_bytes()).unwrap();
    let v: Value = serde_json::from_slice(&encode_response(&r, "x")).unwrap();
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100})
    );
    // A stream: usage arrives in message_start, the final counts in message_delta.
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,",
        "\"usage\":{\"input_tokens\":21,\"cache_creation_input_tokens\":1888,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":12}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let events = decode_all(&[stream.as_bytes()]);
    let last = events.iter().rev().find_map(|e| match e {
        StreamEvent::Usage(u) => Some(*u),
        _ => None,
    });
    assert_eq!(
        last,
        Some(Usage {
            prompt_tokens: 1909,
            completion_tokens: 12,
            cached_tokens: 0,
            reasoning_tokens: 0,
            cache_write_tokens: 1888,
        })
    );
    let mut enc = StreamEncoder::new("claude");
    let mut out = Vec::new();
    for e in &events {
        enc.encode(e, &mut out);
    }
    enc.finish(&mut out);
    let mut sse = SseParser::default();
    let mut parsed = Vec::new();
    sse.feed(&out, &mut parsed);
    let delta = parsed
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .find(|v| v["type"] == "message_delta")
        .unwrap();
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 21, "cache_creation_input_tokens": 1888, "cache_read_input_tokens": 0, "output_tokens": 12})
    );
}
