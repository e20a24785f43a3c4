#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use crate::providers::{anthropic, gemini, openai, Defaults, Target, Wire};

fn parse(body: Value) -> (ChatRequest, ResponsesExtras) {
    parse_request(body.to_string().as_bytes()).unwrap()
}

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/responses/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

/// A recorded `.chunks.jsonl` (one event per line) as the SSE OpenAI sends (`event:` + `data:`).
fn sse_of(jsonl: &str) -> String {
    let mut out = String::new();
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        out.push_str(&format!(
            "event: {}\ndata: {line}\n\n",
            v["type"].as_str().unwrap()
        ));
    }
    out
}

fn decode_stream(sse: &str, split: usize) -> Vec<StreamEvent> {
    let mut d = stream_decoder();
    let mut out = Vec::new();
    for chunk in sse.as_bytes().chunks(split.max(1)) {
        d.feed(chunk, &mut out);
    }
    d.finish(&mut out);
    out
}

/// Parses the door's SSE output into (event name, data) pairs.
fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    let mut p = SseParser::new();
    let mut evs = Vec::new();
    p.feed(bytes, &mut evs);
    p.finish(&mut evs);
    evs.into_iter()
        .map(|e| {
            (
                e.event.unwrap_or_default(),
                serde_json::from_str(&e.data).unwrap(),
            )
        })
        .collect()
}

/// The invariants the `openai` SDK's stream accumulator checks
/// (`lib/streaming/responses/_responses.py`), and the final response it builds.
fn accumulate(evs: &[(String, Value)]) -> Value {
    let mut added: Vec<Value> = Vec::new();
    let mut done: Vec<Option<Value>> = Vec::new();
    let mut last = None;
    for (i, (name, v)) in evs.iter().enumerate() {
        assert_eq!(name, v["type"].as_str().unwrap(), "event name = type");
        assert_eq!(
            v["sequence_number"],
            json!(i),
            "sequence numbers count from 0"
        );
        let t = v["type"].as_str().unwrap();
        if i == 0 {
            assert_eq!(t, "response.created");
        }
        let oi = v["output_index"].as_u64().map(|n| n as usize);
        match t {
            "response.output_item.added" => {
                assert_eq!(oi, Some(added.len()), "items added in order");
                added.push(v["item"].clone());
                done.push(None);
            }
            "response.output_item.done" => {
                let oi = oi.unwrap();
                let a = &added[oi];
                assert_eq!(a["type"], v["item"]["type"], "item identity kept");
                assert_eq!(a["id"], v["item"]["id"], "item id kept");
                assert_eq!(a["call_id"], v["item"]["call_id"], "call id kept");
                done[oi] = Some(v["item"].clone());
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let out = v["response"]["output"].as_array().unwrap();
                if t != "response.failed" {
                    assert!(done.iter().all(Option::is_some), "every item done");
                    for (o, d) in out.iter().zip(&done) {
                        assert_eq!(o["id"], d.as_ref().unwrap()["id"]);
                    }
                }
                last = Some(v["response"].clone());
            }
            t if t.contains(".delta") || t.ends_with(".done") || t.contains("part.added") => {
                let oi = oi.unwrap();
                assert!(oi < added.len(), "{t} for an item not added");
                assert!(done[oi].is_none(), "{t} after its item was done");
                assert_eq!(v["item_id"], added[oi]["id"]);
            }
            _ => {}
        }
    }
    last.expect("no final response event")
}

// ---- request ----

#[test]
fn string_input_with_instructions_and_settings() {
    let (r, ext) = parse(json!({
        "model": "gpt-5", "input": "Hello", "instructions": "Be brief.",
        "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9, "stream": true,
        "metadata": {"k": "v"}, "store": false, "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"}, "parallel_tool_calls": false
    }));
    assert_eq!(r.model, "gpt-5");
    assert_eq!(r.messages.len(), 2);
    assert_eq!(r.messages[0].role, Role::System);
    assert_eq!(r.messages[0].content, vec![Part::Text("Be brief.".into())]);
    assert_eq!(r.messages[1].content, vec![Part::Text("Hello".into())]);
    assert_eq!(
        (r.max_tokens, r.temperature, r.top_p, r.stream),
        (Some(64), Some(0.2), Some(0.9), true)
    );
    let rc = r.reasoning.unwrap();
    assert_eq!(
        (rc.effort.as_deref(), rc.summary.as_deref()),
        (Some("low"), Some("auto"))
    );
    assert_eq!(r.extra["parallel_tool_calls"], json!(false));
    assert_eq!(ext.fields["metadata"], json!({"k": "v"}));
    assert_eq!(ext.fields["store"], json!(false));
    assert_eq!(ext.instructions.as_deref(), Some("Be brief."));
    assert_eq!(ext.needs_openai(), None, "store: false needs no storage");
}

#[test]
fn items_become_one_conversation() {
    // The shape the `openai-agents` runner sends on its second turn: the user's message, the
    // model's reasoning, message and function call (replayed as it got them), the tool's output.
    let (r, ext) = parse(json!({
        "model": "m",
        "input": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Look at this."},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need weather."}],
             "encrypted_content": "gAAAAB"},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_1", "output": "22C"},
            {"type": "item_reference", "id": "ws_1"}
        ],
        "tools": [
            {"type": "function", "name": "get_weather", "description": "Weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true},
            {"type": "web_search"}
        ],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}}
    }));
    let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::User,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Assistant
        ]
    );
    let images = &r.messages[1].content;
    assert!(matches!(&images[1], Part::Image { detail: Some(d), .. } if d == "high"));
    assert!(
        matches!(&images[2], Part::Document(d) if d.filename.as_deref() == Some("a.pdf") && matches!(&d.source, DocSource::Data(u) if u.starts_with("data:application/pdf")))
    );
    let a = &r.messages[2];
    assert_eq!(
        a.content[0],
        Part::Reasoning(Reasoning {
            text: "Need weather.".into(),
            signature: Some("gAAAAB".into()),
            redacted: false,
            origin: Origin::OpenAi,
            id: Some("rs_1".into()),
        })
    );
    assert_eq!(a.content[1], Part::Text("Checking.".into()));
    assert_eq!(a.tool_calls[0].id, "call_1");
    assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("call_1"));
    assert!(
        matches!(&r.messages[4].content[0], Part::Native(n) if n.kind == "item_reference" && n.path == "input[6]")
    );
    assert_eq!(r.tools.len(), 1);
    assert_eq!(r.tools[0].strict, Some(true));
    assert_eq!(ext.hosted_tools[0].0, "tools[1]");
    assert_eq!(
        r.tool_choice,
        Some(ToolChoice::Function("get_weather".into()))
    );
    assert_eq!(
        r.response_format,
        Some(
            json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}})
        )
    );
    // The hosted tool names the request's first OpenAI-only need.
    assert_eq!(
        ext.needs_openai().unwrap().0,
        "tools[1].type",
        "hosted tools need OpenAI"
    );
}

#[test]
fn stateful_fields_need_an_openai_backend_and_name_the_field() {
    for (field, value, needed) in [
        ("previous_response_id", json!("resp_1"), true),
        ("previous_response_id", json!(null), false),
        ("conversation", json!("conv_1"), true),
        ("background", json!(true), true),
        ("background", json!(false), false),
        ("store", json!(true), true),
        ("store", json!(false), false),
        ("prompt", json!({"id": "pmpt_1"}), true),
    ] {
        let mut body = json!({"model": "m", "input": "hi"});
        body[field] = value.clone();
        let (_, ext) = parse(body);
        match ext.needs_openai() {
            Some((param, msg)) => {
                assert!(needed, "{field}={value}");
                assert_eq!(param, field);
                assert!(msg.starts_with(&format!("{field}: ")), "{msg}");
            }
            None => assert!(!needed, "{field}={value}"),
        }
    }
}

#[test]
fn malformed_requests_get_errors_naming_the_field() {
    let cases: &[(Value, &str)] = &[
        (json!({"input": "x"}), "model: missing required field"),
        (json!({"model": "m"}), "input: missing required field"),
        (json!({"model": "m", "input": 5}), "input: expected a string or an array of items, got a number"),
        (json!({"model": "m", "input": []}), "input: must contain at least one item"),
        (json!({"model": "m", "input": [{"content": "x"}]}), "input[0].type: missing required field (an input item needs a type, or a role for a message)"),
        (json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}), "input[0].role: unknown role \"robot\" (expected user, assistant, system or developer)"),
        (json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_video"}]}]}), "input[0].content[0].type: unknown content part type \"input_video\""),
        (json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}), "input[0].content[0].image_url: missing required field"),
        (json!({"model": "m", "input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "x"}]}]}), "input[0].content[0].type: \"input_image\" parts are only allowed in user messages"),
        (json!({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}), "input[0].call_id: missing required field"),
        (json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}), "input[0].output: missing required field"),
        (json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": 3}]}), "input[0].output: expected a string or an array of content parts, got a number"),
        (json!({"model": "m", "input": [{"type": "reasoning", "id": "r"}]}), "input[0].summary: missing required field"),
        (json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}), "tools[0].name: missing required field"),
        (json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": []}]}), "tools[0].parameters: expected an object, got an array"),
        (json!({"model": "m", "input": "x", "tool_choice": "sometimes"}), "tool_choice: unknown value \"sometimes\" (expected auto, none, required or an object)"),
        (json!({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}), "text.format.type: unknown format \"xml\" (expected text, json_object or json_schema)"),
        (json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}), "text.format.name: missing required field"),
        (json!({"model": "m", "input": "x", "max_output_tokens": -1}), "max_output_tokens: expected a non-negative integer, got a number"),
        (json!({"model": "m", "input": "x", "metadata": [1]}), "metadata: expected an object, got an array"),
    ];
    for (body, want) in cases {
        let e = parse_request(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.message, *want, "{body}");
        assert!(e.param.is_some(), "{body}");
    }
}

// ---- answer ----

fn answer() -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-abc".into(),
        model: "claude".into(),
        created: 1_700_000_000,
        choices: vec![Choice {
            index: 0,
            message: Message {
                role: Role::Assistant,
                content: vec![
                    Part::Reasoning(Reasoning {
                        text: "Think.".into(),
                        signature: Some("sig".into()),
                        redacted: false,
                        origin: Origin::Anthropic,
                        id: None,
                    }),
                    Part::Text("Calling.".into()),
                ],
                tool_calls: vec![ToolCall {
                    id: "toolu_1".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into(),
                }],
                tool_call_id: None,
                name: None,
            },
            finish_reason: Some(FinishReason::ToolCalls),
            refusal: None,
        }],
        usage: Some(Usage {
            prompt_tokens: 100,
            completion_tokens: 20,
            cached_tokens: 30,
            reasoning_tokens: 5,
            cache_write_tokens: 0,
        }),
    }
}

#[test]
fn answers_are_output_items_with_usage() {
    let (req, ext) = parse(json!({"model": "alias", "input": "hi", "metadata": {"a": "b"}}));
    let v: Value =
        serde_json::from_slice(&encode_response(&answer(), "alias", &ext, &Echo::of(&req)))
            .unwrap();
    assert_eq!(v["id"], "resp_abc");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "alias");
    assert_eq!(v["metadata"], json!({"a": "b"}));
    let out = v["output"].as_array().unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["type"], "reasoning");
    // Anthropic's signature, tagged: it comes back to Anthropic only.
    assert_eq!(out[0]["encrypted_content"], "tollgate.anthropic.sig");
    assert_eq!(out[0]["summary"][0]["text"], "Think.");
    assert_eq!(out[1]["content"][0]["text"], "Calling.");
    assert_eq!(out[2]["type"], "function_call");
    assert_eq!(out[2]["call_id"], "toolu_1");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 0},
               "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 120})
    );
    // Every field the SDK's `Response` model requires.
    for k in [
        "id",
        "created_at",
        "model",
        "object",
        "output",
        "parallel_tool_calls",
        "tool_choice",
        "tools",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    // The reasoning item sent back reaches Anthropic with its signature, OpenAI never.
    let (back, _) = parse(json!({"model": "m", "input": [
        {"role": "user", "content": "hi"}, out[0].clone(), out[1].clone(), out[2].clone(),
        {"type": "function_call_output", "call_id": "toolu_1", "output": "22C"}
    ]}));
    let d = Defaults::default();
    let t = Target {
        wire: Wire::Anthropic,
        model: "claude-sonnet-4-5",
        api_version: None,
        defaults: &d,
        aws: None,
        host: "",
        now_unix: 0,
    };
    let a: Value =
        serde_json::from_slice(&anthropic::encode_request(&back, &t).unwrap().body).unwrap();
    assert_eq!(
        a["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "Think.", "signature": "sig"})
    );
    assert_eq!(a["messages"][1]["content"][2]["type"], "tool_use");
    let o = encode_upstream(&back, &ResponsesExtras::default(), "gpt-5", &d).unwrap();
    let o: Value = serde_json::from_slice(&o).unwrap();
    assert!(
        o["input"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["type"] != "reasoning"),
        "another family's reasoning never reaches OpenAI: {o}"
    );
}

#[test]
fn cut_answers_are_incomplete() {
    let mut a = answer();
    a.choices[0].finish_reason = Some(FinishReason::Length);
    let v: Value = serde_json::from_slice(&encode_response(
        &a,
        "m",
        &ResponsesExtras::default(),
        &Echo::default(),
    ))
    .unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
}

// ---- stream ----

fn stream(evs: &[StreamEvent]) -> Vec<(String, Value)> {
    let mut e = StreamEncoder::new("alias", &ResponsesExtras::default(), Echo::default(), 7);
    let mut out = Vec::new();
    for ev in evs {
        e.encode(ev, &mut out);
    }
    e.finish(&mut out);
    events(&out)
}

fn names(evs: &[(String, Value)]) -> Vec<&str> {
    evs.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn text_stream_is_the_responses_event_sequence() {
    let evs = stream(&[
        StreamEvent::Start {
            id: "msg_01X".into(),
            model: "claude".into(),
        },
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
            reason: FinishReason::Stop,
        },
        StreamEvent::Usage(Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
            ..Usage::default()
        }),
    ]);
    assert_eq!(
        names(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let last = accumulate(&evs);
    assert_eq!(last["status"], "completed");
    assert_eq!(last["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(last["usage"]["total_tokens"], 7);
    assert_eq!(evs[0].1["response"]["id"], "resp_msg_01X");
    assert_eq!(evs[0].1["response"]["created_at"], 7);
    // The same stream, once more as a recording of OpenAI would have it.
    let recorded = fixture("text.chunks.jsonl");
    let want: Vec<String> = recorded
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let got: Vec<String> = names(&evs).iter().map(|s| s.to_string()).collect();
    let dedup = |v: &[String]| {
        let mut v = v.to_vec();
        v.dedup();
        v
    };
    assert_eq!(
        dedup(&got),
        dedup(&want),
        "same event types in the same order"
    );
}

#[test]
fn tools_reasoning_and_refusals_stream_as_items() {
    let evs = stream(&[
        StreamEvent::Start {
            id: "x".into(),
            model: "m".into(),
        },
        StreamEvent::Reasoning {
            index: 0,
            text: "Think".into(),
        },
        StreamEvent::ReasoningEnd {
            index: 0,
            signature: Some("EpkD".into()),
            origin: Origin::Anthropic,
        },
        StreamEvent::Text {
            index: 0,
            text: "Calling.".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            call: 0,
            id: "toolu_1".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            call: 0,
            arguments: "{\"city\":".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            call: 0,
            arguments: "\"Paris\"}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            call: 1,
            id: "toolu_2".into(),
            name: "now".into(),
        },
        StreamEvent::Finish {
            index: 0,
            reason: FinishReason::ToolCalls,
        },
    ]);
    let last = accumulate(&evs);
    let out = last["output"].as_array().unwrap();
    assert_eq!(
        out.iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["reasoning", "message", "function_call", "function_call"]
    );
    assert_eq!(out[0]["encrypted_content"], "tollgate.anthropic.EpkD");
    assert_eq!(out[0]["summary"][0]["text"], "Think");
    assert_eq!(out[2]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(out[3]["call_id"], "toolu_2");
    let deltas: String = evs
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, "{\"city\":\"Paris\"}");
    assert!(names(&evs).contains(&"response.reasoning_summary_text.delta"));

    let evs = stream(&[
        StreamEvent::Refusal {
            index: 0,
            text: "I can't".into(),
        },
        StreamEvent::Finish {
            index: 0,
            reason: FinishReason::Stop,
        },
    ]);
    let last = accumulate(&evs);
    assert_eq!(last["output"][0]["content"][0]["type"], "refusal");
    assert!(names(&evs).contains(&"response.refusal.delta"));
}

#[test]
fn stream_errors_and_cuts_end_the_response() {
    let evs = stream(&[
        StreamEvent::Text {
            index: 0,
            text: "par".into(),
        },
        StreamEvent::Error(ProviderError {
            status: 529,
            kind: "server_error".into(),
            message: "Overloaded".into(),
            code: Some("overloaded_error".into()),
        }),
    ]);
    let n = names(&evs);
    assert_eq!(&n[n.len() - 2..], ["error", "response.failed"]);
    let last = accumulate(&evs);
    assert_eq!(last["status"], "failed");
    assert_eq!(last["error"]["code"], "overloaded_error");
    let evs = stream(&[
        StreamEvent::Text {
            index: 0,
            text: "cut".into(),
        },
        StreamEvent::Finish {
            index: 0,
            reason: FinishReason::Length,
        },
    ]);
    assert_eq!(names(&evs).last(), Some(&"response.incomplete"));
    assert_eq!(
        accumulate(&evs)["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

// ---- upstream ----

#[test]
fn recorded_openai_streams_decode_at_every_split() {
    let sse = sse_of(&fixture("text.chunks.jsonl"));
    let whole = decode_stream(&sse, usize::MAX);
    assert_eq!(
        whole,
        vec![
            StreamEvent::Start {
                id: "resp_sanitized_streaming".into(),
                model: "gpt-4o-mini-2024-07-18".into()
            },
            StreamEvent::Text {
                index: 0,
                text: "OK".into()
            },
            StreamEvent::Finish {
                index: 0,
                reason: FinishReason::Stop
            },
            StreamEvent::Usage(Usage {
                prompt_tokens: 12,
                completion_tokens: 2,
                ..Usage::default()
            }),
        ]
    );
    for split in [1, 7, 64, 500] {
        assert_eq!(decode_stream(&sse, split), whole, "split {split}");
    }
    let sse = sse_of(&fixture("tool_call.chunks.jsonl"));
    let evs = decode_stream(&sse, 13);
    assert_eq!(
        evs[1],
        StreamEvent::ToolCallStart {
            index: 0,
            call: 0,
            id: "call_2FQdm3Br7Qb35YUBSkDR7kue".into(),
            name: "get_weather".into()
        }
    );
    let args: String = evs
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallArgs { arguments, .. } => Some(arguments.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(args, "{\"city\":\"Beijing\"}");
    assert!(evs.contains(&StreamEvent::Finish {
        index: 0,
        reason: FinishReason::ToolCalls
    }));
    // Re-encoded for a Responses client: the same items, ids and arguments.
    let again = stream(&evs);
    let last = accumulate(&again);
    assert_eq!(
        last["output"][0]["call_id"],
        "call_2FQdm3Br7Qb35YUBSkDR7kue"
    );
    assert_eq!(last["output"][0]["arguments"], "{\"city\":\"Beijing\"}");
    assert_eq!(last["usage"]["input_tokens"], 45);
}

#[test]
fn recorded_openai_answer_decodes() {
    let r = decode_response(200, fixture("text.json").as_bytes()).unwrap();
    assert_eq!(r.id, "resp_sanitized_normal");
    assert_eq!(r.choices[0].message.content, vec![Part::Text("OK".into())]);
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(r.usage.unwrap().total(), 14);
    // Hosted-tool items the canonical form has no word for come back to Responses clients.
    let body = json!({"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
        "model": "gpt-5", "output": [
            {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "x"}},
            {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Found.", "annotations": []}]}
        ], "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}});
    let r = decode_response(200, body.to_string().as_bytes()).unwrap();
    let v: Value = serde_json::from_slice(&encode_response(
        &r,
        "gpt-5",
        &ResponsesExtras::default(),
        &Echo::default(),
    ))
    .unwrap();
    assert_eq!(v["output"][0]["type"], "web_search_call");
    assert_eq!(v["output"][1]["content"][0]["text"], "Found.");
    // And a failed response is the provider's error.
    let failed = json!({"id": "r", "status": "failed", "output": [],
                        "error": {"code": "rate_limit_exceeded", "message": "slow down"}});
    let e = decode_response(200, failed.to_string().as_bytes()).unwrap_err();
    assert_eq!((e.status, e.message.as_str()), (429, "slow down"));
}

#[test]
fn upstream_requests_keep_what_only_openai_understands() {
    let (r, ext) = parse(json!({
        "model": "alias", "instructions": "Be brief.", "previous_response_id": "resp_prev",
        "store": true, "include": ["reasoning.encrypted_content"], "metadata": {"k": "v"},
        "input": [{"role": "user", "content": "hi"}, {"type": "item_reference", "id": "ws_1"}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}, {"type": "web_search"}],
        "tool_choice": "auto", "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "reasoning": {"effort": "high"}, "max_output_tokens": 100
    }));
    let body = encode_upstream(&r, &ext, "gpt-5", &Defaults::default()).unwrap();
    let b: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(b["model"], "gpt-5");
    assert_eq!(b["instructions"], "Be brief.");
    assert_eq!(b["previous_response_id"], "resp_prev");
    assert_eq!(b["store"], true);
    assert_eq!(b["metadata"], json!({"k": "v"}));
    assert_eq!(
        b["input"][1],
        json!({"type": "item_reference", "id": "ws_1"})
    );
    assert_eq!(b["tools"][1], json!({"type": "web_search"}));
    assert_eq!(
        b["text"],
        json!({"format": {"type": "json_object"}, "verbosity": "low"})
    );
    assert_eq!(b["reasoning"], json!({"effort": "high"}));
    assert_eq!(b["max_output_tokens"], 100);
    // The same request to another provider is refused naming the item.
    let d = Defaults::default();
    let t = Target {
        wire: Wire::Gemini,
        model: "gemini-2.5-flash",
        api_version: None,
        defaults: &d,
        aws: None,
        host: "",
        now_unix: 0,
    };
    let e = gemini::encode_request(&r, &t).unwrap_err();
    assert!(
        e.0.starts_with("input[1]: a \"item_reference\" item"),
        "{}",
        e.0
    );
    let e = openai::encode_request(
        &r,
        &Target {
            wire: Wire::OpenAi,
            ..t.clone()
        },
    )
    .unwrap_err();
    assert!(e.0.starts_with("input[1]:"), "{}", e.0);
}

#[test]
fn a_responses_request_reaches_every_provider() {
    // Function tools and a tool round trip, translated for each wire format.
    let (r, _) = parse(json!({
        "model": "alias", "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "22C"}
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    }));
    let d = Defaults::default();
    let t = |wire| Target {
        wire,
        model: "model-x",
        api_version: None,
        defaults: &d,
        aws: None,
        host: "bedrock-runtime.us-east-1.amazonaws.com",
        now_unix: 0,
    };
    for wire in [
        Wire::OpenAi,
        Wire::Azure,
        Wire::Anthropic,
        Wire::Gemini,
        Wire::Bedrock,
    ] {
        let o = crate::providers::encode_request(&r, &t(wire)).unwrap();
        let body = String::from_utf8(o.body).unwrap();
        assert!(body.contains("Be brief."), "{wire:?}: {body}");
        assert!(body.contains("get_weather"), "{wire:?}");
        assert!(body.contains("22C"), "{wire:?}");
    }
}
