//! Agent traffic across providers: Claude Code's request shapes (recorded, in
//! `tests/fixtures/claude_code/`) on every wire, reasoning blocks and their signatures carried
//! back to the family that wrote them and dropped elsewhere, Gemini thought signatures across
//! turns, cache breakpoints, documents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::model::*;
use super::test_target;
use super::*;
use serde_json::{json, Value};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/claude_code/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).unwrap()
}

fn encode(req: &ChatRequest, wire: Wire, model: &str) -> Value {
    let d = Defaults::default();
    let o = encode_request(req, &test_target(wire, model, &d)).unwrap();
    serde_json::from_slice(&o.body).unwrap()
}

/// Anthropic accepts a string or an array of text blocks alike for `content`, and `1` or
/// `1.0` for a temperature.
fn normalize(mut v: Value) -> Value {
    if let Some(t) = v.get("temperature").and_then(Value::as_f64) {
        v["temperature"] = json!(t);
    }
    for m in v["messages"].as_array_mut().unwrap() {
        if let Some(s) = m["content"].as_str() {
            m["content"] = json!([{"type": "text", "text": s}]);
        }
    }
    v
}

#[test]
fn claude_code_request_reaches_anthropic_as_sent() {
    let raw = fixture("messages_tools_thinking.json");
    let sent: Value = serde_json::from_slice(&raw).unwrap();
    let mut req = anthropic::parse_request(&raw).unwrap();
    req.anthropic_beta = anthropic_betas("oauth-2025-04-20,interleaved-thinking-2025-05-14");
    let d = Defaults::default();
    let o = encode_request(
        &req,
        &test_target(Wire::Anthropic, "claude-opus-4-5-20251101", &d),
    )
    .unwrap();
    let got: Value = serde_json::from_slice(&o.body).unwrap();
    // Everything Claude Code sent, as it sent it: system blocks and their breakpoints, tool
    // schemas ($schema, additionalProperties {} and false, minItems), the thinking block and
    // its signature first in its turn, both tool_use blocks with the breakpoint on the last,
    // tool results (an array of texts, a string with a breakpoint), metadata.user_id.
    assert_eq!(normalize(got), normalize(sent));
    assert!(o.headers.contains(&(
        "anthropic-beta".into(),
        "interleaved-thinking-2025-05-14".into()
    )));
    // The title request too.
    let raw = fixture("title_haiku.json");
    let req = anthropic::parse_request(&raw).unwrap();
    assert_eq!(
        normalize(encode(&req, Wire::Anthropic, "claude-3-5-haiku-20241022")),
        normalize(serde_json::from_slice(&raw).unwrap())
    );
}

#[test]
fn claude_code_request_reaches_other_providers_cleanly() {
    let req = anthropic::parse_request(&fixture("messages_tools_thinking.json")).unwrap();
    let sig = "EpkDCkYICxgCKkDEgg5jtTtBe5kAX6kEonfjuEEeiHZJLfckzrCENPEQfqwDgDabcH6ukBGL";
    // OpenAI: two system messages, no thinking, no breakpoints, tools with their schemas.
    let o = encode(&req, Wire::OpenAi, "gpt-4o");
    let text = o.to_string();
    assert!(!text.contains(sig) && !text.contains("cache_control") && !text.contains("thinking"));
    assert_eq!(o["messages"][0]["role"], "system");
    assert_eq!(o["messages"][1]["role"], "system");
    assert_eq!(
        o["messages"][3]["tool_calls"][1]["id"],
        "toolu_01METmvTdfcqW1Ckfp47x1YL"
    );
    assert_eq!(
        o["tools"][2]["function"]["parameters"]["properties"]["invocations"]["minItems"],
        1
    );
    // Gemini: schemas without the keys Gemini refuses, no thinking.
    let g = encode(&req, Wire::Gemini, "gemini-2.5-pro");
    let text = g.to_string();
    assert!(
        !text.contains(sig) && !text.contains("$schema") && !text.contains("additionalProperties")
    );
    assert!(
        g["systemInstruction"]["parts"][1]["text"]
            .as_str()
            .unwrap()
            .len()
            > 10
    );
    // Bedrock (Claude): reasoning first with its signature, breakpoints as cachePoint blocks.
    let b = encode(
        &req,
        Wire::Bedrock,
        "anthropic.claude-opus-4-5-20251101-v1:0",
    );
    assert_eq!(
        b["messages"][1]["content"][0],
        json!({"reasoningContent": {"reasoningText": {"text": req.messages[3].content.iter().find_map(|p| match p { Part::Reasoning(r) => Some(r.text.clone()), _ => None }).unwrap(), "signature": sig}}})
    );
    assert_eq!(b["system"][1], json!({"cachePoint": {"type": "default"}}));
    let last_assistant = b["messages"][1]["content"].as_array().unwrap();
    assert_eq!(
        last_assistant.last().unwrap(),
        &json!({"cachePoint": {"type": "default"}})
    );
    let results = b["messages"][2]["content"].as_array().unwrap();
    assert_eq!(
        results.last().unwrap(),
        &json!({"cachePoint": {"type": "default"}})
    );
}

#[test]
fn thinking_round_trips_through_the_anthropic_door_and_stays_with_its_family() {
    // Anthropic answers with thinking; the door gives it to the client as Anthropic wrote it.
    let answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","stop_reason":"tool_use",
        "content":[{"type":"thinking","thinking":"Let me check.","signature":"EqQBCgIYAhIM"},
                   {"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"},
                   {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],
        "usage":{"input_tokens":10,"output_tokens":5}}"#;
    let r = anthropic::decode_response(200, answer).unwrap();
    let door: Value = serde_json::from_slice(&anthropic::encode_response(&r, "claude")).unwrap();
    assert_eq!(
        door["content"][0],
        json!({"type": "thinking", "thinking": "Let me check.", "signature": "EqQBCgIYAhIM"})
    );
    assert_eq!(
        door["content"][1],
        json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"})
    );
    // The client sends the turn back: Anthropic and Bedrock get both blocks, first.
    let next = json!({"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": door["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "22C"}]}
    ]});
    let req = anthropic::parse_request(next.to_string().as_bytes()).unwrap();
    let a = encode(&req, Wire::Anthropic, "claude");
    assert_eq!(a["messages"][1]["content"][0]["signature"], "EqQBCgIYAhIM");
    assert_eq!(
        a["messages"][1]["content"][1],
        json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"})
    );
    let b = encode(&req, Wire::Bedrock, "anthropic.claude-sonnet-4-5");
    assert_eq!(
        b["messages"][1]["content"][1],
        json!({"reasoningContent": {"redactedContent": "EmwKAhgBEgy3va3pzix"}})
    );
    // Everyone else: dropped cleanly, the tool round trip intact.
    for (wire, model) in [(Wire::OpenAi, "gpt-4o"), (Wire::Gemini, "gemini-2.5-flash")] {
        let v = encode(&req, wire, model);
        let text = v.to_string();
        assert!(
            !text.contains("EqQBCgIYAhIM") && !text.contains("EmwKAhgBEgy3va3pzix"),
            "{wire:?}"
        );
        assert!(
            text.contains("22C") && text.contains("get_weather"),
            "{wire:?}"
        );
    }

    // Gemini's thought summary reaches the Anthropic door as a thinking block tagged as
    // Gemini's: sent back, it is never taken for Anthropic's (which would refuse it).
    let gem = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Pondering.","thought":true},{"text":"Hi."}]},"finishReason":"STOP"}]}"#;
    let r = gemini::decode_response(200, gem).unwrap();
    let door: Value = serde_json::from_slice(&anthropic::encode_response(&r, "gem")).unwrap();
    assert_eq!(door["content"][0]["signature"], "tollgate.gemini.");
    let next = json!({"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": door["content"]},
        {"role": "user", "content": "And?"}]});
    let req = anthropic::parse_request(next.to_string().as_bytes()).unwrap();
    let a = encode(&req, Wire::Anthropic, "claude");
    assert_eq!(
        a["messages"][1]["content"],
        json!([{"type": "text", "text": "Hi."}])
    );
}

#[test]
fn anthropic_door_streams_thinking_with_signatures() {
    // Anthropic's streamed thinking (event shapes of the extended-thinking docs).
    let sse = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"think.\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"EmwKAhgB\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"text_delta\",\"text\":\"42\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    for split in [1usize, 9, 4096] {
        let mut dec = stream_decoder(Wire::Anthropic);
        let mut evs = Vec::new();
        for c in sse.as_bytes().chunks(split) {
            dec.feed(c, &mut evs);
        }
        dec.finish(&mut evs);
        assert!(evs.contains(&StreamEvent::ReasoningEnd {
            index: 0,
            signature: Some("EqQBCgIYAhIM".into()),
            origin: Origin::Anthropic
        }));
        let mut enc = anthropic::StreamEncoder::new("claude");
        let mut out = Vec::new();
        for e in &evs {
            enc.encode(e, &mut out);
        }
        enc.finish(&mut out);
        let mut p = crate::stream::SseParser::new();
        let mut frames = Vec::new();
        p.feed(&out, &mut frames);
        let datas: Vec<Value> = frames
            .iter()
            .map(|f| serde_json::from_str(&f.data).unwrap())
            .collect();
        let thinking: String = datas
            .iter()
            .filter(|d| d["delta"]["type"] == "thinking_delta")
            .map(|d| d["delta"]["thinking"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(thinking, "Let me think.");
        assert!(
            datas
                .iter()
                .any(|d| d["delta"]
                    == json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM"}))
        );
        assert!(datas.iter().any(
            |d| d["content_block"] == json!({"type": "redacted_thinking", "data": "EmwKAhgB"})
        ));
        // Block indexes count up with no gap: thinking 0, redacted 1, text 2.
        let starts: Vec<u64> = datas
            .iter()
            .filter(|d| d["type"] == "content_block_start")
            .map(|d| d["index"].as_u64().unwrap())
            .collect();
        assert_eq!(starts, [0, 1, 2]);
    }
}

#[test]
fn gemini_thought_signatures_come_back_across_turns() {
    // Gemini 3 answers a function call with its thought signature (on the part).
    let sig = "CiQBcsjafD+8p2Zq/Y0TtW1kLq2x3TE7ggKPiJlyPHqt9Mtr//Z6xQ==";
    let answer = format!(
        r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"functionCall":{{"name":"get_weather","args":{{"city":"Paris"}}}},"thoughtSignature":"{sig}"}},{{"functionCall":{{"name":"get_time","args":{{}}}}}}]}},"finishReason":"STOP"}}]}}"#
    );
    let r = gemini::decode_response(200, answer.as_bytes()).unwrap();
    let calls = &r.choices[0].message.tool_calls;
    assert_eq!(
        split_call_id(&calls[0].id),
        ("call_0", Some(sig.to_string()))
    );
    assert_eq!(
        calls[1].id, "call_1",
        "only the first parallel call is signed"
    );
    // Each door hands the ids out; the client sends them back verbatim.
    for door in ["anthropic", "openai"] {
        let (assistant, results) = if door == "anthropic" {
            let v: Value = serde_json::from_slice(&anthropic::encode_response(&r, "g")).unwrap();
            (
                json!({"role": "assistant", "content": v["content"]}),
                json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": v["content"][0]["id"], "content": "22C"},
                    {"type": "tool_result", "tool_use_id": v["content"][1]["id"], "content": "noon"}]}),
            )
        } else {
            let v: Value = serde_json::from_slice(&openai::encode_response(&r, "g")).unwrap();
            let m = v["choices"][0]["message"].clone();
            (
                m.clone(),
                json!([
                {"role": "tool", "tool_call_id": m["tool_calls"][0]["id"], "content": "22C"},
                {"role": "tool", "tool_call_id": m["tool_calls"][1]["id"], "content": "noon"}]),
            )
        };
        let req = if door == "anthropic" {
            let body = json!({"model": "g", "max_tokens": 50, "messages": [
                {"role": "user", "content": "Weather and time?"}, assistant, results]});
            anthropic::parse_request(body.to_string().as_bytes()).unwrap()
        } else {
            let mut msgs = vec![
                json!({"role": "user", "content": "Weather and time?"}),
                assistant,
            ];
            msgs.extend(results.as_array().unwrap().iter().cloned());
            openai::parse_request(
                json!({"model": "g", "messages": msgs})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap()
        };
        let g = encode(&req, Wire::Gemini, "gemini-3-pro-preview");
        let parts = &g["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], sig, "{door}");
        assert!(parts[1].get("thoughtSignature").is_none(), "{door}");
        assert_eq!(
            g["contents"][2]["parts"][0]["functionResponse"]["name"], "get_weather",
            "{door}"
        );
        // Other providers get the plain ids.
        let a = encode(&req, Wire::Anthropic, "claude");
        assert_eq!(a["messages"][1]["content"][0]["id"], "call_0", "{door}");
        assert_eq!(
            a["messages"][2]["content"][0]["tool_use_id"], "call_0",
            "{door}"
        );
        let b = encode(&req, Wire::Bedrock, "anthropic.claude-x");
        assert_eq!(
            b["messages"][1]["content"][0]["toolUse"]["toolUseId"], "call_0",
            "{door}"
        );
    }
}

#[test]
fn documents_reach_each_provider_in_its_shape() {
    let body = json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="},
         "title": "Q3 report", "citations": {"enabled": true}, "cache_control": {"type": "ephemeral"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Plain notes."}},
        {"type": "text", "text": "Summarise both."}
    ]}]});
    let req = anthropic::parse_request(body.to_string().as_bytes()).unwrap();
    let a = encode(&req, Wire::Anthropic, "claude");
    assert_eq!(
        a["messages"][0]["content"][0],
        json!({"type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="},
        "title": "Q3 report", "citations": {"enabled": true}, "cache_control": {"type": "ephemeral"}})
    );
    assert_eq!(
        a["messages"][0]["content"][1]["source"],
        json!({"type": "text", "media_type": "text/plain", "data": "Plain notes."})
    );
    let o = encode(&req, Wire::OpenAi, "gpt-4o");
    assert_eq!(
        o["messages"][0]["content"][0],
        json!({"type": "file", "file": {
        "file_data": "data:application/pdf;base64,JVBERi0xLjQ=", "filename": "Q3 report"}})
    );
    assert_eq!(
        o["messages"][0]["content"][1],
        json!({"type": "text", "text": "Plain notes."})
    );
    let g = encode(&req, Wire::Gemini, "gemini-2.5-flash");
    assert_eq!(
        g["contents"][0]["parts"][0],
        json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjQ="}})
    );
    let b = encode(&req, Wire::Bedrock, "anthropic.claude-x");
    assert_eq!(
        b["messages"][0]["content"][0],
        json!({"document": {"format": "pdf", "name": "Q3 report", "source": {"bytes": "JVBERi0xLjQ="}}})
    );
    assert_eq!(
        b["messages"][0]["content"][1],
        json!({"cachePoint": {"type": "default"}})
    );
    assert_eq!(b["messages"][0]["content"][2]["document"]["format"], "txt");
    // A document by URL: Anthropic and Gemini fetch it; Chat Completions and Bedrock refuse.
    let url = json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]}]});
    let req = anthropic::parse_request(url.to_string().as_bytes()).unwrap();
    let d = Defaults::default();
    for (wire, ok) in [
        (Wire::Anthropic, true),
        (Wire::Gemini, true),
        (Wire::OpenAi, false),
        (Wire::Bedrock, false),
    ] {
        let r = encode_request(&req, &test_target(wire, "m", &d));
        assert_eq!(r.is_ok(), ok, "{wire:?}: {r:?}");
        if let Err(e) = r {
            assert!(e.0.starts_with("messages[0]"), "{}", e.0);
        }
    }
}

#[test]
fn thinking_settings_translate_per_provider() {
    let body = json!({"model": "m", "max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 4000},
                      "messages": [{"role": "user", "content": "Think."}]});
    let req = anthropic::parse_request(body.to_string().as_bytes()).unwrap();
    assert_eq!(
        encode(&req, Wire::Anthropic, "claude")["thinking"],
        json!({"type": "enabled", "budget_tokens": 4000})
    );
    assert_eq!(
        encode(&req, Wire::Bedrock, "anthropic.claude-x")["additionalModelRequestFields"]
            ["thinking"],
        json!({"type": "enabled", "budget_tokens": 4000})
    );
    assert!(encode(&req, Wire::Bedrock, "amazon.nova-pro-v1:0")
        .get("additionalModelRequestFields")
        .is_none());
    assert_eq!(
        encode(&req, Wire::Gemini, "gemini-2.5-flash")["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 4000, "includeThoughts": true})
    );
    // A budget is not an effort: OpenAI models that do not reason would refuse one.
    assert!(encode(&req, Wire::OpenAi, "gpt-4o")
        .get("reasoning_effort")
        .is_none());
    // An OpenAI client's effort reaches OpenAI, and becomes a budget for Claude and Gemini.
    let req = openai::parse_request(br#"{"model":"m","reasoning_effort":"low","max_completion_tokens":3000,"messages":[{"role":"user","content":"x"}]}"#).unwrap();
    assert_eq!(
        encode(&req, Wire::OpenAi, "o4-mini")["reasoning_effort"],
        "low"
    );
    assert_eq!(
        encode(&req, Wire::Anthropic, "claude")["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(
        encode(&req, Wire::Gemini, "g")["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        1024
    );
}

#[test]
fn openai_door_keeps_files_strict_tools_and_reasoning_output() {
    let req = openai::parse_request(br#"{"model":"m","messages":[{"role":"user","content":[
        {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"}},
        {"type":"text","text":"Read it."}]}],
        "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"},"strict":true}}]}"#).unwrap();
    let o = encode(&req, Wire::OpenAi, "gpt-4o");
    assert_eq!(o["messages"][0]["content"][0]["file"]["filename"], "a.pdf");
    assert_eq!(o["tools"][0]["function"]["strict"], true);
    assert_eq!(
        encode(&req, Wire::Anthropic, "c")["messages"][0]["content"][0]["type"],
        "document"
    );
    // DeepSeek/vLLM reasoning beside the content reaches the Anthropic door as thinking that
    // no provider will verify.
    let r = openai::decode_response(200, br#"{"id":"x","object":"chat.completion","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"message":{"role":"assistant","content":"4","reasoning_content":"2+2=4"},"finish_reason":"stop"}]}"#).unwrap();
    let door: Value = serde_json::from_slice(&anthropic::encode_response(&r, "d")).unwrap();
    assert_eq!(
        door["content"][0],
        json!({"type": "thinking", "thinking": "2+2=4", "signature": "tollgate.unknown."})
    );
    let chat: Value = serde_json::from_slice(&openai::encode_response(&r, "d")).unwrap();
    assert_eq!(chat["choices"][0]["message"]["content"], "4");
}
