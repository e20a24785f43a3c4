//! KrakenD 3.0's LLM streaming through the whole filter (endpoint `output_encoding:
//! "streaming"`, `ai/llm.format`): the endpoint decides that a request in KrakenD's AI
//! contract streams, the provider gets its streaming request, the client gets the format's
//! events as the provider's arrive, with the usage accounted; errors before the first byte
//! take the format's error shape.

use super::*;
use crate::host::mock::MockHost;
use crate::providers::{bedrock, StreamDecoder};
use serde_json::{json, Value};

fn backend(url: &str, llm: Value) -> Value {
    json!({"host": ["http://127.0.0.1:9001"], "url_pattern": url, "method": "POST",
        "extra_config": {"ai/llm": llm}})
}

fn openai(format: Option<&str>, url: &str) -> Value {
    let mut l =
        json!({"openai": {"v1": {"credentials": "k", "variables": {"model": "gpt-5-nano"}}}});
    if let Some(f) = format {
        l["format"] = json!(f);
    }
    backend(url, l)
}

fn gemini(format: Option<&str>) -> Value {
    let mut l = json!({"gemini": {"v1beta": {"credentials": "k"}}});
    if let Some(f) = format {
        l["format"] = json!(f);
    }
    backend("/v1beta/models/gemini-2.5-flash:generateContent", l)
}

/// One streaming endpoint per combination, and one that does not stream.
fn gateway() -> Rc<Gateway> {
    let bedrock = backend(
        "/model/amazon.nova-micro-v1:0/converse",
        json!({"bedrock": {"v1": {"credentials": "k"}}}),
    );
    let mistral = backend(
        "/v1/chat/completions",
        json!({"mistral": {"v1": {"credentials": "k", "variables": {"model": "mistral-small"}}}}),
    );
    let s = |path: &str, b: Value| json!({"endpoint": path, "method": "POST", "output_encoding": "streaming", "backend": [b]});
    let doc = json!({"version": 3, "endpoints": [
        s("/s/anthropic", openai(Some("anthropic"), "/v1/responses")),
        s("/s/openai", gemini(Some("openai"))),
        s("/s/gemini", gemini(None)),
        s("/s/bedrock", bedrock),
        s("/s/openai-own", openai(None, "/v1/responses")),
        s("/s/mistral", mistral),
        {"endpoint": "/whole", "method": "POST", "backend": [openai(Some("anthropic"), "/v1/responses")]},
    ]});
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

fn send(path: &str, body: Value) -> (Flow, MockHost) {
    let body = body.to_string();
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request("POST", path, &[]).with_body(body.as_bytes());
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    flow.on_request_body(&mut h, body.len(), true);
    (flow, h)
}

/// The provider streams `chunks`; the client's bytes after each one, and the host.
fn stream(
    mut flow: Flow,
    h: MockHost,
    ctype: &str,
    chunks: &[Vec<u8>],
) -> (Vec<Vec<u8>>, MockHost) {
    let mut h = h.with_response_headers(&[(":status", "200"), ("content-type", ctype)]);
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Continue);
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        h.response_chunk = c.clone();
        flow.on_response_body(&mut h, c.len(), i + 1 == chunks.len());
        out.push(std::mem::take(&mut h.response_chunk));
    }
    flow.on_log(&mut h);
    (out, h)
}

const CHAT: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#;

fn chat_chunks() -> Vec<Vec<u8>> {
    let c = |v: &str| format!("data: {v}\n\n").into_bytes();
    vec![
        c(CHAT),
        c(&CHAT
            .replace("\"role\":\"assistant\",", "")
            .replace("Hel", "lo")),
        c(
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ),
        c(
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}"#,
        ),
        b"data: [DONE]\n\n".to_vec(),
    ]
}

fn gemini_chunks() -> Vec<Vec<u8>> {
    vec![
        br#"data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],"modelVersion":"gemini-2.5-flash","responseId":"r1"}

"#.to_vec(),
        br#"data: {"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":4,"totalTokenCount":15}}

"#.to_vec(),
    ]
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn logged(h: &MockHost, k: &str) -> String {
    let v = &h.properties.iter().rev().find(|(n, _)| n == k).unwrap().1;
    String::from_utf8(v.clone()).unwrap()
}

/// `format: "anthropic"` over an OpenAI backend: the provider is asked for its stream (usage
/// included), whatever the client sent about streams; the client gets Anthropic's events as
/// the provider's chunks arrive, and the usage is charged.
#[test]
fn anthropic_format_streams_token_by_token() {
    let (flow, h) = send(
        "/s/anthropic",
        json!({"contents": "hi", "stream": false, "stream_options": null}),
    );
    assert!(h.reply.is_none(), "{:?}", h.reply);
    let sent: Value = serde_json::from_slice(&h.request_body).unwrap();
    assert_eq!(
        (&sent["stream"], &sent["stream_options"]["include_usage"]),
        (&json!(true), &json!(true))
    );
    let (out, h) = stream(flow, h, "text/event-stream", &chat_chunks());
    assert_eq!(h.response_values("content-type"), vec!["text/event-stream"]);
    // Not buffered: the first provider chunk already gives the client its first token.
    let first = text(&out[0]);
    assert!(
        first.starts_with("event: message_start") && first.contains("\"text\":\"Hel\""),
        "{first}"
    );
    let all = text(&out.concat());
    for e in ["content_block_stop", "message_delta", "message_stop"] {
        assert!(all.contains(&format!("event: {e}\n")), "{all}");
    }
    assert!(all.contains("\"output_tokens\":4"), "{all}");
    assert_eq!(logged(&h, "tollgate_prompt_tokens"), "11");
    assert_eq!(logged(&h, "tollgate_completion_tokens"), "4");
}

/// `format: "openai"` over Gemini: Responses API events, the usage in `response.completed`.
#[test]
fn openai_format_is_responses_events() {
    let (flow, h) = send("/s/openai", json!({"contents": "hi"}));
    assert!(h.request_values(":path")[0].contains(":streamGenerateContent?alt=sse"));
    let (out, h) = stream(flow, h, "text/event-stream", &gemini_chunks());
    let first = text(&out[0]);
    assert!(
        first.starts_with("event: response.created") && first.contains("\"delta\":\"Hel\""),
        "{first}"
    );
    let all = text(&out.concat());
    assert!(
        all.contains("event: response.completed") && all.contains("\"total_tokens\":15"),
        "{all}"
    );
    assert_eq!(logged(&h, "tollgate_prompt_tokens"), "11");
}

/// No `format`: the vendor's own stream format, re-made from the decoded events.
#[test]
fn without_format_each_vendor_streams_its_own_format() {
    let (flow, h) = send("/s/gemini", json!({"contents": "hi"}));
    let (out, _) = stream(flow, h, "text/event-stream", &gemini_chunks());
    let first = text(&out[0]);
    assert!(
        first.starts_with("data: {\"candidates\"") && first.contains("Hel"),
        "{first}"
    );
    assert!(text(&out.concat()).contains("\"totalTokenCount\":15"));

    let (flow, h) = send("/s/openai-own", json!({"contents": "hi"}));
    let (out, _) = stream(flow, h, "text/event-stream", &chat_chunks());
    assert!(text(&out[0]).starts_with("event: response.created"));

    let (flow, h) = send("/s/mistral", json!({"contents": "hi"}));
    let (out, h) = stream(flow, h, "text/event-stream", &chat_chunks());
    let all = text(&out.concat());
    assert!(
        text(&out[0]).contains("chat.completion.chunk") && all.contains("\"total_tokens\":15"),
        "{all}"
    );
    assert_eq!(logged(&h, "tollgate_completion_tokens"), "4");

    // Bedrock: eventstream frames in and out.
    let (flow, h) = send("/s/bedrock", json!({"contents": "hi"}));
    assert!(
        h.request_values(":path")[0].ends_with("/converse-stream"),
        "{:?}",
        h.request_values(":path")
    );
    let mut frames = crate::providers::vendor_stream::BedrockEncoder::new();
    let mut provider = Vec::new();
    let evs = [
        StreamEvent::Text {
            index: 0,
            text: "Hel".into(),
        },
        StreamEvent::Text {
            index: 0,
            text: "lo".into(),
        },
        StreamEvent::Finish {
            index: 0,
            reason: crate::providers::model::FinishReason::Stop,
        },
        StreamEvent::Usage(crate::providers::model::Usage {
            prompt_tokens: 11,
            completion_tokens: 4,
            ..Default::default()
        }),
    ];
    for e in &evs {
        let mut b = Vec::new();
        frames.encode(e, &mut b);
        provider.push(b);
    }
    let mut last = Vec::new();
    frames.finish(&mut last);
    provider.push(last);
    let (out, h) = stream(flow, h, "application/vnd.amazon.eventstream", &provider);
    assert_eq!(
        h.response_values("content-type"),
        vec!["application/vnd.amazon.eventstream"]
    );
    assert!(!out[0].is_empty());
    let mut d = bedrock::stream_decoder();
    let mut back = Vec::new();
    d.feed(&out.concat(), &mut back);
    d.finish(&mut back);
    assert!(back.contains(&evs[3]), "{back:?}");
    assert_eq!(logged(&h, "tollgate_prompt_tokens"), "11");
}

use crate::providers::model::StreamEvent;

/// Errors before the first byte: the format's error shape (Anthropic's for its stream).
#[test]
fn errors_before_the_stream_take_the_formats_shape() {
    let (_, h) = send("/s/anthropic", json!({"contents": 1}));
    let (status, body) = h
        .reply
        .as_ref()
        .map(|r| (r.status, r.body.clone()))
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, v["type"].as_str()), (400, Some("error")), "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let (mut flow, h) = send("/s/anthropic", json!({"contents": "hi"}));
    let mut h =
        h.with_response_headers(&[(":status", "429"), ("content-type", "application/json")]);
    flow.on_response_headers(&mut h, false);
    let err = br#"{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#;
    h.response_chunk = err.to_vec();
    flow.on_response_body(&mut h, err.len(), true);
    let v: Value = serde_json::from_slice(&h.response_chunk).unwrap();
    assert_eq!(h.response_values(":status"), vec!["429"]);
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("rate_limit_error")),
        "{v}"
    );

    // OpenAI's format: OpenAI's error object.
    let (_, h) = send("/s/openai", json!({"contents": 1}));
    let v: Value = serde_json::from_slice(&h.reply.as_ref().unwrap().body).unwrap();
    assert_eq!(v["error"]["param"], "contents", "{v}");
}

/// The client's fields never choose: `stream: true` does not make a whole endpoint stream,
/// and a chat client (its own API) keeps its own `stream`.
#[test]
fn clients_do_not_choose_whether_krakends_contract_streams() {
    let (flow, h) = send(
        "/whole",
        json!({"contents": "hi", "stream": true, "stream_options": {"include_usage": true}}),
    );
    let sent: Value = serde_json::from_slice(&h.request_body).unwrap();
    assert_eq!(sent.get("stream"), None, "{sent}");
    drop(flow);
    let (_, h) = send(
        "/s/anthropic",
        json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}),
    );
    let sent: Value = serde_json::from_slice(&h.request_body).unwrap();
    assert_eq!(sent.get("stream"), None, "{sent}");
}

/// An error the provider reports mid-stream is the format's error event, after the tokens
/// already sent (Anthropic's `event: error`; Responses' `error` and `response.failed`;
/// Gemini's error chunk).
#[test]
fn errors_mid_stream_are_the_formats_error_event() {
    let err =
        b"data: {\"error\": {\"message\": \"overloaded mid-way\", \"type\": \"server_error\"}}\n\n"
            .to_vec();
    let provider = vec![chat_chunks().remove(0), err];
    let (flow, h) = send("/s/anthropic", json!({"contents": "hi"}));
    let (out, _) = stream(flow, h, "text/event-stream", &provider);
    assert!(text(&out[0]).contains("\"text\":\"Hel\""));
    let tail = text(&out[1]);
    assert!(
        tail.contains("event: error\n") && tail.contains("overloaded mid-way"),
        "{tail}"
    );
    assert!(!tail.contains("message_stop"), "{tail}");

    let provider = vec![gemini_chunks().remove(0), gemini_err_chunk()];
    let (flow, h) = send("/s/openai", json!({"contents": "hi"}));
    let (out, _) = stream(flow, h, "text/event-stream", &provider);
    let tail = text(&out[1]);
    assert!(
        tail.contains("event: error\n") && tail.contains("event: response.failed"),
        "{tail}"
    );

    let provider = vec![gemini_chunks().remove(0), gemini_err_chunk()];
    let (flow, h) = send("/s/gemini", json!({"contents": "hi"}));
    let (out, _) = stream(flow, h, "text/event-stream", &provider);
    let tail = text(&out[1]);
    assert!(
        tail.starts_with("data: {\"error\"") && tail.contains("\"UNAVAILABLE\""),
        "{tail}"
    );
}

fn gemini_err_chunk() -> Vec<u8> {
    b"data: {\"error\": {\"code\": 503, \"message\": \"overloaded mid-way\", \"status\": \"UNAVAILABLE\"}}\n\n".to_vec()
}
