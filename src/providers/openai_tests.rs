#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use super::*;
use crate::providers::{Defaults, Wire};
use crate::stream::SseParser;

fn target<'a>(model: &'a str, d: &'a Defaults) -> Target<'a> {
    Target {
        wire: Wire::OpenAi,
        model,
        api_version: None,
        defaults: d,
        aws: None,
        host: "",
        now_unix: 0,
    }
}

fn err(body: &str) -> ClientError {
    match parse_request(body.as_bytes()) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e,
    }
}

fn body_json(o: &Outgoing) -> Value {
    serde_json::from_slice(&o.body).unwrap()
}

const FULL_REQUEST: &str = r#"{
  "model": "gpt-4o",
  "messages": [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [
      {"type": "text", "text": "What is in this image?"},
      {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
    ], "name": "ann"},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
    ]},
    {"role": "tool", "tool_call_id": "call_abc", "content": "22C"}
  ],
  "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
  "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
  "response_format": {"type": "json_object"},
  "temperature": 0.5, "top_p": 0.9, "max_completion_tokens": 100,
  "stop": "END", "n": 1, "seed": 7, "user": "u-1",
  "stream": true, "stream_options": {"include_usage": true},
  "presence_penalty": 0.1, "logit_bias": {"50256": -100}
}"#;

#[test]
fn parses_a_full_request() {
    let r = parse_request(FULL_REQUEST.as_bytes()).unwrap();
    assert_eq!(r.model, "gpt-4o");
    assert_eq!(r.messages.len(), 4);
    assert_eq!(r.messages[0].role, Role::System);
    assert_eq!(r.messages[0].content, vec![Part::Text("Be brief.".into())]);
    assert_eq!(r.messages[1].name.as_deref(), Some("ann"));
    assert_eq!(
        r.messages[1].content[1],
        Part::Image {
            url: "https://example.com/cat.png".into(),
            detail: Some("low".into())
        }
    );
    assert!(r.messages[2].content.is_empty());
    assert_eq!(
        r.messages[2].tool_calls,
        vec![ToolCall {
            id: "call_abc".into(),
            name: "get_weather".into(),
            arguments: "{\"city\":\"Paris\"}".into()
        }]
    );
    assert_eq!(r.messages[3].role, Role::Tool);
    assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("call_abc"));
    assert_eq!(r.tools[0].name, "get_weather");
    assert_eq!(
        r.tool_choice,
        Some(ToolChoice::Function("get_weather".into()))
    );
    assert_eq!(r.response_format, Some(json!({"type": "json_object"})));
    assert_eq!(
        (r.temperature, r.top_p, r.max_tokens),
        (Some(0.5), Some(0.9), Some(100))
    );
    assert_eq!(r.stop, vec!["END".to_string()]);
    assert_eq!(
        (r.n, r.seed, r.user.as_deref()),
        (Some(1), Some(7), Some("u-1"))
    );
    assert!(r.stream && r.include_usage);
    let mut keys: Vec<&String> = r.extra.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["logit_bias", "max_completion_tokens", "presence_penalty"]
    );
}

#[test]
fn parses_string_forms_and_nulls() {
    let r = parse_request(
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"required",
             "stop":["a","b"],"max_tokens":5,"temperature":null,"stream":false}"#,
    )
    .unwrap();
    assert_eq!(r.tool_choice, Some(ToolChoice::Required));
    assert_eq!(r.stop, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(r.max_tokens, Some(5));
    assert_eq!(r.temperature, None);
    assert!(!r.stream && !r.include_usage);
    assert!(r.extra.is_empty());
}

#[test]
fn rejects_bad_requests_with_precise_messages() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        (r#"{"messages":[]}"#, "model: missing required field", Some("model")),
        (r#"{"model":"m"}"#, "messages: missing required field", Some("messages")),
        (r#"{"model":"m","messages":[]}"#, "messages: must contain at least one message", Some("messages")),
        (r#"{"model":3,"messages":[]}"#, "model: expected a string, got a number", Some("model")),
        (
            r#"{"model":"m","max_tokens":18446744073709551615,"messages":[{"role":"user","content":"a"}]}"#,
            "max_tokens: 18446744073709551615 is more than any model allows (at most 2147483647)",
            Some("max_tokens"),
        ),
        (
            r#"{"model":"m","max_completion_tokens":2147483648,"messages":[{"role":"user","content":"a"}]}"#,
            "max_completion_tokens: 2147483648 is more than any model allows (at most 2147483647)",
            Some("max_completion_tokens"),
        ),
        (
            r#"{"model":"m","max_tokens":18446744073709551616,"messages":[{"role":"user","content":"a"}]}"#,
            "max_tokens: expected a non-negative integer, got a number",
            Some("max_tokens"),
        ),
        (r#"[1]"#, "request body must be a JSON object, got an array", None),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":[{"type":"foo"}]}]}"#,
            "messages[2].content[0].type: unknown part type \"foo\"",
            Some("messages[2].content[0].type"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"robot","content":"a"}]}"#,
            "messages[0].role: unknown role \"robot\" (expected system, developer, user, assistant or tool)",
            Some("messages[0].role"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"tool","content":"a"}]}"#,
            "messages[0].tool_call_id: missing required field",
            Some("messages[0].tool_call_id"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user"}]}"#,
            "messages[0].content: missing required field for role \"user\"",
            Some("messages[0].content"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
            "messages[0].content: expected a string or an array of parts, got a number",
            Some("messages[0].content"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
            "messages[0].content[0].text: missing required field",
            Some("messages[0].content[0].text"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#,
            "messages[0].content[0].image_url.url: missing required field",
            Some("messages[0].content[0].image_url.url"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}"#,
            "messages[0].content[0].type: part type \"input_audio\" is not supported by this gateway",
            Some("messages[0].content[0].type"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a","tool_calls":[]}]}"#,
            "messages[0].tool_calls: only assistant messages may carry tool_calls",
            Some("messages[0].tool_calls"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"x","type":"function"}]}]}"#,
            "messages[0].tool_calls[0].function: missing required field",
            Some("messages[0].tool_calls[0].function"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}],"tools":[{"type":"retrieval"}]}"#,
            "tools[0].type: unsupported tool type \"retrieval\" (expected function)",
            Some("tools[0].type"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}],"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]}"#,
            "tools[0].function.parameters: expected an object, got an array",
            Some("tools[0].function.parameters"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}],"tool_choice":"always"}"#,
            "tool_choice: unknown value \"always\" (expected auto, none, required or an object)",
            Some("tool_choice"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}],"tool_choice":{"type":"function","function":{}}}"#,
            "tool_choice.function.name: missing required field",
            Some("tool_choice.function.name"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}],"max_tokens":-1}"#,
            "max_tokens: expected a non-negative integer, got a number",
            Some("max_tokens"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}],"stop":[1]}"#,
            "stop[0]: expected a string, got a number",
            Some("stop[0]"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}],"stream":"yes"}"#,
            "stream: expected a boolean, got a string",
            Some("stream"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}],"response_format":{"type":"xml"}}"#,
            "response_format.type: unknown response format \"xml\" (expected text, json_object or json_schema)",
            Some("response_format.type"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"a"}],"response_format":{"type":"json_schema"}}"#,
            "response_format.json_schema: missing required field",
            Some("response_format.json_schema"),
        ),
    ];
    for (body, message, param) in cases {
        let e = err(body);
        assert_eq!(e.message, *message, "for {body}");
        assert_eq!(e.param.as_deref(), *param, "for {body}");
    }
}

#[test]
fn malformed_json_reports_line_and_column() {
    let e = err("{\n  \"model\": \"m\",\n  \"messages\": [,]\n}");
    assert!(
        e.message.starts_with("request body is not valid JSON: "),
        "{}",
        e.message
    );
    assert!(e.message.contains("line 3 column"), "{}", e.message);
    assert_eq!(e.to_string(), e.message);
}

#[test]
fn encodes_provider_request_with_defaults_and_forced_usage() {
    let mut r = parse_request(FULL_REQUEST.as_bytes()).unwrap();
    r.include_usage = false;
    let d = Defaults {
        max_tokens: Some(999),
        temperature: Some(0.1),
        top_p: None,
    };
    let o = encode_request(&r, &target("gpt-4o-2024-08-06", &d)).unwrap();
    assert_eq!(o.path, "/v1/chat/completions");
    assert!(o.headers.is_empty());
    let b = body_json(&o);
    assert_eq!(b["model"], "gpt-4o-2024-08-06");
    assert_eq!(b["temperature"], 0.5);
    assert_eq!(b["max_completion_tokens"], 100);
    assert!(b.get("max_tokens").is_none());
    assert_eq!(b["stream_options"], json!({"include_usage": true}));
    assert_eq!(b["presence_penalty"], 0.1);
    assert_eq!(b["logit_bias"], json!({"50256": -100}));
    assert_eq!(b["stop"], json!(["END"]));
    assert_eq!(
        b["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "22C"}
        ])
    );
    assert_eq!(
        b["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(b["tools"][0]["function"]["description"], "Weather");

    let r = parse_request(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    let b = body_json(&encode_request(&r, &target("x", &d)).unwrap());
    assert_eq!(
        b,
        json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
               "temperature": 0.1, "max_tokens": 999})
    );
}

const RESPONSE: &str = r#"{
  "id": "chatcmpl-123", "object": "chat.completion", "created": 1677652288,
  "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_44709d6fcb",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how may I assist you today?", "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
  "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0}}
}"#;

const TOOL_RESPONSE: &str = r#"{
  "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1699896916, "model": "gpt-4o-mini",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
     {"id": "call_abc123", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\n\"location\": \"Boston, MA\"\n}"}}]},
     "logprobs": null, "finish_reason": "tool_calls"}],
  "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
}"#;

#[test]
fn decodes_responses() {
    let r = decode_response(200, RESPONSE.as_bytes()).unwrap();
    assert_eq!(r.id, "chatcmpl-123");
    assert_eq!(r.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(r.created, 1677652288);
    assert_eq!(
        r.choices[0].message.content,
        vec![Part::Text(
            "Hello there, how may I assist you today?".into()
        )]
    );
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        r.usage,
        Some(Usage {
            prompt_tokens: 9,
            completion_tokens: 12,
            cached_tokens: 2,
            reasoning_tokens: 3,
            cache_write_tokens: 0,
        })
    );
    let r = decode_response(200, TOOL_RESPONSE.as_bytes()).unwrap();
    assert!(r.choices[0].message.content.is_empty());
    assert_eq!(
        r.choices[0].message.tool_calls[0].name,
        "get_current_weather"
    );
    assert_eq!(
        r.choices[0].message.tool_calls[0].arguments,
        "{\n\"location\": \"Boston, MA\"\n}"
    );
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
}

#[test]
fn decode_response_failures() {
    let e = decode_response(200, b"<html>").unwrap_err();
    assert_eq!(e.status, 502);
    assert!(
        e.message.starts_with("provider returned invalid JSON: "),
        "{}",
        e.message
    );
    let e = decode_response(200, b"{\"id\":\"x\"}").unwrap_err();
    assert_eq!(e.message, "provider response has no \"choices\" array");
    let e = decode_response(
        200,
        br#"{"error":{"message":"boom","type":"server_error"}}"#,
    )
    .unwrap_err();
    assert_eq!((e.status, e.message.as_str()), (502, "boom"));
    let e = decode_response(429, br#"{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#).unwrap_err();
    assert_eq!(e.status, 429);
}

#[test]
fn error_mapping_table() {
    let cases: &[(u16, &str, u16, &str, &str, Option<&str>)] = &[
        (
            400,
            r#"{"error":{"message":"Invalid 'messages[0]'","type":"invalid_request_error","param":"messages","code":null}}"#,
            400,
            "invalid_request_error",
            "Invalid 'messages[0]'",
            Some("invalid_request_error"),
        ),
        (
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-xx.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            502,
            "server_error",
            "provider rejected the gateway's credentials: Incorrect API key provided: sk-xx.",
            Some("invalid_api_key"),
        ),
        (
            404,
            r#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
            404,
            "invalid_request_error",
            "The model `gpt-9` does not exist",
            Some("model_not_found"),
        ),
        (
            429,
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            429,
            "insufficient_quota",
            "You exceeded your current quota",
            Some("insufficient_quota"),
        ),
        (
            500,
            r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
            500,
            "server_error",
            "The server had an error",
            Some("server_error"),
        ),
        (
            503,
            "upstream connect error",
            503,
            "server_error",
            "provider returned HTTP 503: upstream connect error",
            None,
        ),
        (
            502,
            "",
            502,
            "server_error",
            "provider returned HTTP 502 with an empty body",
            None,
        ),
        (
            529,
            r#"{"message":"overloaded"}"#,
            503,
            "server_error",
            "overloaded",
            None,
        ),
        (
            422,
            r#"{"error":"bad field"}"#,
            422,
            "invalid_request_error",
            "bad field",
            None,
        ),
        (
            302,
            "moved",
            502,
            "server_error",
            "provider returned HTTP 302: moved",
            None,
        ),
    ];
    for (status, body, want_status, kind, message, code) in cases {
        let e = decode_error(*status, body.as_bytes());
        assert_eq!(e.status, *want_status, "{body}");
        assert_eq!(e.kind, *kind, "{body}");
        assert_eq!(e.message, *message, "{body}");
        assert_eq!(e.code.as_deref(), *code, "{body}");
    }
}

pub(crate) fn decode_all(d: &mut impl StreamDecoder, chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    for c in chunks {
        d.feed(c, &mut out);
    }
    d.finish(&mut out);
    out
}

const STREAM: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21,\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n\
data: [DONE]\n\n";

fn stream_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: "gpt-4o-mini".into(),
        },
        StreamEvent::Text {
            index: 0,
            text: "Hel".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            call: 0,
            id: "call_1".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            call: 0,
            arguments: "{\"city\":".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            call: 1,
            id: "call_2".into(),
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
            prompt_tokens: 9,
            completion_tokens: 12,
            cached_tokens: 0,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
        }),
    ]
}

#[test]
fn decodes_stream_at_every_split() {
    let whole = decode_all(&mut stream_decoder(), &[STREAM.as_bytes()]);
    assert_eq!(whole, stream_events());
    let b = STREAM.as_bytes();
    for i in 0..=b.len() {
        assert_eq!(
            decode_all(&mut stream_decoder(), &[&b[..i], &b[i..]]),
            whole,
            "split at {i}"
        );
    }
}

#[test]
fn stream_errors_and_truncation() {
    let s = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n\
             data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
    let ev = decode_all(&mut stream_decoder(), &[s.as_bytes()]);
    assert_eq!(ev.len(), 3);
    match &ev[2] {
        StreamEvent::Error(e) => {
            assert_eq!((e.status, e.kind.as_str()), (500, "server_error"));
            assert_eq!(
                e.message,
                "The server had an error while processing your request."
            );
        }
        other => panic!("{other:?}"),
    }
    // Stream cut before any finish_reason or [DONE].
    let s = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
    let ev = decode_all(&mut stream_decoder(), &[s.as_bytes()]);
    assert_eq!(
        ev.last(),
        Some(&StreamEvent::Error(ProviderError {
            status: 502,
            kind: "server_error".into(),
            message: "provider stream ended before the response was complete".into(),
            code: None
        }))
    );
    // Invalid JSON chunk.
    let ev = decode_all(&mut stream_decoder(), &[b"data: {nope\n\n"]);
    assert!(
        matches!(&ev[..], [StreamEvent::Error(e)] if e.message.starts_with("provider sent an invalid stream chunk"))
    );
}

#[test]
fn azure_style_stream_skips_filter_chunk_and_empty_ids() {
    let s = "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n\
             data: {\"choices\":[{\"delta\":{\"content\":\"Hi\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0}],\"created\":1,\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o\",\"object\":\"chat.completion.chunk\"}\n\n\
             data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"content_filter\",\"index\":0}],\"id\":\"chatcmpl-az\",\"model\":\"gpt-4o\"}\n\n\
             data: [DONE]\n\n";
    let ev = decode_all(&mut stream_decoder(), &[s.as_bytes()]);
    assert_eq!(
        ev,
        vec![
            StreamEvent::Start {
                id: "chatcmpl-az".into(),
                model: "gpt-4o".into()
            },
            StreamEvent::Text {
                index: 0,
                text: "Hi".into()
            },
            StreamEvent::Finish {
                index: 0,
                reason: FinishReason::ContentFilter
            },
        ]
    );
}

#[test]
fn encodes_response_for_the_client() {
    let r = decode_response(200, TOOL_RESPONSE.as_bytes()).unwrap();
    let v: Value = serde_json::from_slice(&encode_response(&r, "my-alias")).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1699896916, "model": "my-alias",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_abc123", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\n\"location\": \"Boston, MA\"\n}"}}]},
                "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99,
                      "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
        })
    );
}

fn sse_json(bytes: &[u8]) -> Vec<String> {
    let mut p = SseParser::new();
    let mut ev = Vec::new();
    p.feed(bytes, &mut ev);
    p.finish(&mut ev);
    ev.into_iter().map(|e| e.data).collect()
}

#[test]
fn stream_encoder_output_parses_back() {
    for include_usage in [true, false] {
        let mut enc = StreamEncoder::new("alias", include_usage);
        enc.set_created(42);
        let mut out = Vec::new();
        for ev in stream_events() {
            enc.encode(&ev, &mut out);
        }
        enc.finish(&mut out);
        enc.finish(&mut out); // idempotent
        let datas = sse_json(&out);
        assert_eq!(datas.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        for c in &chunks {
            assert_eq!(c["id"], "chatcmpl-1");
            assert_eq!(c["model"], "alias");
            assert_eq!(c["created"], 42);
            assert_eq!(c["object"], "chat.completion.chunk");
        }
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "Hel"}));
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
        );
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"],
            json!([{"index": 0, "function": {"arguments": "{\"city\":"}}])
        );
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "tool_calls");
        if include_usage {
            assert_eq!(chunks.len(), 8);
            assert_eq!(chunks[7]["choices"], json!([]));
            assert_eq!(chunks[7]["usage"]["total_tokens"], 21);
            assert_eq!(chunks[1]["usage"], Value::Null);
        } else {
            assert_eq!(chunks.len(), 7);
            assert!(chunks.iter().all(|c| c.get("usage").is_none()));
        }
        // Round trip: our own decoder reads our encoder's output back.
        let mut back = decode_all(&mut stream_decoder(), &[&out]);
        if !include_usage {
            back.push(stream_events()[7].clone());
        }
        let mut want = stream_events();
        want[0] = StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: "alias".into(),
        };
        assert_eq!(back, want);
    }
}

#[test]
fn stream_encoder_error_event_and_role_per_choice() {
    let mut enc = StreamEncoder::new("m", false);
    let mut out = Vec::new();
    enc.encode(
        &StreamEvent::Text {
            index: 1,
            text: "x".into(),
        },
        &mut out,
    );
    enc.encode(
        &StreamEvent::Error(ProviderError {
            status: 503,
            kind: "server_error".into(),
            message: "Overloaded".into(),
            code: Some("overloaded_error".into()),
        }),
        &mut out,
    );
    enc.finish(&mut out);
    let d = sse_json(&out);
    let c: Value = serde_json::from_str(&d[0]).unwrap();
    assert_eq!(
        c["choices"][0]["delta"],
        json!({"role": "assistant", "content": "x"})
    );
    assert_eq!(c["id"], "chatcmpl-tollgate");
    let e: Value = serde_json::from_str(&d[1]).unwrap();
    assert_eq!(
        e,
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
    );
    assert_eq!(d[2], "[DONE]");
}

#[test]
fn error_helpers() {
    let v: Value = serde_json::from_slice(&error_json(
        "bad",
        "invalid_request_error",
        None,
        Some("messages"),
    ))
    .unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": null}})
    );
    let e = decode_error(
        429,
        br#"{"error":{"message":"slow","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#,
    );
    let v: Value = serde_json::from_slice(&error_body(&e)).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[test]
fn tool_calls_without_index_are_numbered_by_id() {
    let s = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\"\"}}]}}]}\n\n\
             data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n\
             data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n\
             data: [DONE]\n\n";
    let ev = decode_all(&mut stream_decoder(), &[s.as_bytes()]);
    assert_eq!(
        &ev[1..],
        &[
            StreamEvent::ToolCallStart {
                index: 0,
                call: 0,
                id: "a".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                call: 0,
                arguments: "{\"x\"".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                call: 0,
                arguments: ":1}".into()
            },
            StreamEvent::ToolCallStart {
                index: 0,
                call: 1,
                id: "b".into(),
                name: "g".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                call: 1,
                arguments: "{}".into()
            },
            StreamEvent::Finish {
                index: 0,
                reason: FinishReason::ToolCalls
            },
        ]
    );
}

#[test]
fn mistral_body_has_only_fields_mistral_accepts() {
    let d = Defaults::default();
    let req = parse_request(
        br#"{"model": "m", "stream": true, "stream_options": {"include_usage": false}, "seed": 7,
             "max_completion_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}"#,
    )
    .unwrap();
    let out = encode_mistral_request(&req, &target("mistral-small-latest", &d)).unwrap();
    assert_eq!(out.path, "/v1/chat/completions");
    assert_eq!(
        body_json(&out),
        json!({"model": "mistral-small-latest", "stream": true, "random_seed": 7, "max_tokens": 20,
               "messages": [{"role": "user", "content": "hi"}]})
    );
    // The plain OpenAI body keeps OpenAI's names.
    let openai = body_json(&encode_request(&req, &target("gpt-4o", &d)).unwrap());
    assert_eq!(
        (
            &openai["seed"],
            &openai["max_completion_tokens"],
            &openai["stream_options"]
        ),
        (&json!(7), &json!(20), &json!({"include_usage": true}))
    );
}

/// OpenAI's refusal (`message.refusal`, `delta.refusal`; tests/fixtures/README.md says where
/// the shape comes from) was turned into content. The OpenAI door carries it as a refusal;
/// the Anthropic door as text with `stop_reason: "refusal"`.
#[test]
fn refusals_keep_their_form_on_each_door() {
    use crate::providers::anthropic;
    let fixture = |name: &str| {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    const TEXT: &str = "I'm very sorry, but I can't assist with that request.";
    let r = decode_response(200, &fixture("openai_response_refusal.json")).unwrap();
    assert_eq!(r.choices[0].refusal.as_deref(), Some(TEXT));
    assert!(r.choices[0].message.content.is_empty());
    let v: Value = serde_json::from_slice(&encode_response(&r, "gpt-4o")).unwrap();
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": null, "refusal": TEXT})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let v: Value = serde_json::from_slice(&anthropic::encode_response(&r, "m")).unwrap();
    assert_eq!(v["content"], json!([{"type": "text", "text": TEXT}]));
    assert_eq!(v["stop_reason"], "refusal");
    // An ordinary answer keeps `refusal: null` and its content.
    let plain = decode_response(200, &fixture("openai_response.json")).unwrap();
    let v: Value = serde_json::from_slice(&encode_response(&plain, "m")).unwrap();
    assert_eq!(v["choices"][0]["message"]["refusal"], Value::Null);
    assert!(v["choices"][0]["message"]["content"].is_string());

    // Streamed.
    let mut d = crate::providers::stream_decoder(Wire::OpenAi);
    let mut events = Vec::new();
    d.feed(&fixture("openai_stream_refusal.sse"), &mut events);
    d.finish(&mut events);
    let refused: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Refusal { text, .. } => Some(text.as_str()),
            StreamEvent::Text { text, .. } => panic!("refusal decoded as content: {text}"),
            _ => None,
        })
        .collect();
    assert_eq!(refused, TEXT);
    let datas = |bytes: &[u8]| -> Vec<Value> {
        let mut p = SseParser::default();
        let mut evs = Vec::new();
        p.feed(bytes, &mut evs);
        evs.iter()
            .filter_map(|e| serde_json::from_str(&e.data).ok())
            .collect()
    };
    let mut enc = StreamEncoder::new("gpt-4o", false);
    let mut out = Vec::new();
    for e in &events {
        enc.encode(e, &mut out);
    }
    enc.finish(&mut out);
    let chunks = datas(&out);
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["refusal"].as_str())
        .collect();
    assert_eq!(streamed, TEXT);
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"]
        .get("content")
        .is_none_or(|t| t == "")));
    let mut enc = anthropic::StreamEncoder::new("claude");
    let mut out = Vec::new();
    for e in &events {
        enc.encode(e, &mut out);
    }
    enc.finish(&mut out);
    let evs = datas(&out);
    let text: String = evs
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, TEXT);
    let delta = evs.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "refusal");
}
