//! KrakenD's AI contract through the whole filter: which door reads a body, what goes to the
//! provider, what the client gets back (providers/krakend.rs has the door's own tests).

use super::*;
use crate::host::mock::MockHost;
use crate::refusal::{FRONT_PROPERTY, KRAKEND_FRONT};
use serde_json::{json, Value};

/// KrakenD's own AI examples (tests/krakend_corpus/ee-ai-{openai,gemini}.json) with their
/// hosts pointed at a local address, a tollgate OpenAI door beside them, and a backend
/// without a model.
fn gateway() -> Rc<Gateway> {
    let openai = json!({"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/responses", "method": "POST",
        "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "xx-yy-zz", "debug": false,
            "variables": {"model": "gpt-5-nano"}}}}}});
    let gemini = json!({"host": ["http://127.0.0.1:9002"],
        "url_pattern": "/v1beta/models/gemini-2.5-flash:generateContent", "method": "POST",
        "extra_config": {"ai/llm": {"gemini": {"v1beta": {"credentials": "XXX_YYY_ZZZ", "debug": true}}}}});
    let anthropic = json!({"host": ["http://127.0.0.1:9003"], "url_pattern": "/v1/messages",
        "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-a", "aliases": ["fast"],
            "variables": {"model": "claude-haiku-4-5"}}}}}});
    let ollama = json!({"host": ["http://127.0.0.1:9004"], "url_pattern": "/v1/chat/completions",
        "extra_config": {"ai/llm": {"ollama": {"v1": {}}}}});
    let doc = json!({"version": 3, "endpoints": [
        {"endpoint": "/openai", "method": "POST", "backend": [openai]},
        {"endpoint": "/gemini", "method": "POST", "backend": [gemini]},
        {"endpoint": "/v1/messages", "method": "POST", "backend": [anthropic]},
        {"endpoint": "/ollama", "method": "POST", "backend": [ollama]},
    ]});
    Rc::new(Gateway::from_value(&doc, &|_: &str| None).unwrap())
}

/// The request callbacks for one body; the host as the provider would receive it.
fn send(path: &str, body: Value) -> (Flow, MockHost) {
    let body = body.to_string();
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request("POST", path, &[]).with_body(body.as_bytes());
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    flow.on_request_body(&mut h, body.len(), true);
    (flow, h)
}

fn upstream_body(h: &MockHost) -> Value {
    serde_json::from_slice(&h.request_body).unwrap()
}

/// The provider answers `status` with `body`; what the client gets.
fn answer(flow: &mut Flow, h: MockHost, status: &str, body: &Value) -> (u16, Value) {
    let bytes = body.to_string().into_bytes();
    let mut h =
        h.with_response_headers(&[(":status", status), ("content-type", "application/json")]);
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Pause);
    h.response_chunk = bytes.clone();
    flow.on_response_body(&mut h, bytes.len(), true);
    let status = h.response_values(":status")[0].parse().unwrap();
    (status, serde_json::from_slice(&h.response_chunk).unwrap())
}

fn openai_answer(text: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-5-nano",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}})
}

fn front_property(h: &MockHost) -> Option<&[u8]> {
    h.properties
        .iter()
        .rev()
        .find(|(k, _)| k == FRONT_PROPERTY)
        .map(|(_, v)| v.as_slice())
}

#[test]
fn krakend_client_on_krakends_openai_example() {
    // KrakenD's documented call: the system prompt and the prompt, no model.
    let (mut flow, h) = send(
        "/openai",
        json!({"instructions": "Act as a 1000 dollar consultant", "contents": "Tell me a consultant joke"}),
    );
    assert!(h.reply.is_none(), "{:?}", h.reply);
    let sent = upstream_body(&h);
    assert_eq!(sent["model"], "gpt-5-nano");
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Act as a 1000 dollar consultant"},
               {"role": "user", "content": "Tell me a consultant joke"}])
    );
    assert_eq!(h.request_values("authorization"), vec!["Bearer xx-yy-zz"]);
    assert_eq!(front_property(&h), Some(KRAKEND_FRONT.as_bytes()));
    let (status, body) = answer(
        &mut flow,
        h,
        "200",
        &openai_answer("Why did the consultant..."),
    );
    assert_eq!(
        (status, body),
        (
            200,
            json!({"ai_gateway_response": [{"contents": ["Why did the consultant..."]}], "usage": "15"})
        )
    );
}

#[test]
fn chat_clients_keep_their_door() {
    // The same endpoint still serves OpenAI's API (tollgate's users of unsuffixed paths).
    let (mut flow, h) = send(
        "/openai",
        json!({"model": "any", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(front_property(&h), Some(b"openai".as_slice()));
    let (status, body) = answer(&mut flow, h, "200", &openai_answer("hello"));
    assert_eq!(status, 200);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "hello");

    // Anthropic's door: an Anthropic body keeps it, a KrakenD body takes KrakenD's.
    let anthropic_answer = json!({"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-haiku-4-5", "content": [{"type": "text", "text": "hey"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 2}});
    let (mut flow, h) = send(
        "/v1/messages",
        json!({"model": "fast", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let (_, body) = answer(&mut flow, h, "200", &anthropic_answer);
    assert_eq!(body["type"], "message");
    let (mut flow, h) = send("/v1/messages", json!({"contents": "hi"}));
    let sent = upstream_body(&h);
    assert_eq!(sent["model"], "claude-haiku-4-5");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    );
    let (_, body) = answer(&mut flow, h, "200", &anthropic_answer);
    assert_eq!(
        body,
        json!({"ai_gateway_response": [{"contents": ["hey"]}], "usage": "5"})
    );
}

#[test]
fn gemini_model_from_url_pattern() {
    let (_, h) = send("/gemini", json!({"contents": "Tell me a joke"}));
    assert!(h.reply.is_none(), "{:?}", h.reply);
    assert_eq!(
        h.request_values(":path"),
        vec!["/v1beta/models/gemini-2.5-flash:generateContent"]
    );
    assert_eq!(
        upstream_body(&h)["contents"],
        json!([{"role": "user", "parts": [{"text": "Tell me a joke"}]}])
    );
}

#[test]
fn krakend_errors() {
    // A bad body: 400 in OpenAI's error shape, naming the field.
    let (_, h) = send("/openai", json!({"contents": ["a", "b"]}));
    let r = h.reply.clone().unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "contents");
    assert_eq!(front_property(&h), Some(KRAKEND_FRONT.as_bytes()));
    // A backend that names no model cannot serve a request that names none.
    let (_, h) = send("/ollama", json!({"contents": "hi"}));
    let r = h.reply.clone().unwrap();
    assert_eq!(r.status, 500);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("variables.model"),
        "{}",
        r.json()
    );
    // The provider's error keeps its status and message.
    let (mut flow, h) = send("/openai", json!({"contents": "hi"}));
    let err = json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}});
    let (status, body) = answer(&mut flow, h, "429", &err);
    assert_eq!(status, 429);
    assert_eq!(body["error"]["message"], "Rate limit reached");
}
