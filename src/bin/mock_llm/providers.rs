//! What the mock answers and how each provider spells it.
//!
//! A request is first turned into a provider-neutral [`Reply`] (text or a tool call, cut
//! into pieces, plus usage), then rendered as one provider's non-stream body or stream
//! events. Everything is deterministic except ids' sequence numbers and timestamps.

use super::eventstream;
use serde_json::{json, Map, Value};

/// Arguments of every mock tool call.
pub const TOOL_ARGS: &str = r#"{"location":"Paris","unit":"celsius"}"#;
/// Fixed number added to the prompt word count (stands for role/formatting overhead).
pub const PROMPT_OVERHEAD: u64 = 3;
/// Default number of argument pieces in a streamed tool call.
const DEFAULT_TOOL_PIECES: usize = 3;
/// Upper bound on `x-mock-chunks`.
pub const MAX_CHUNKS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Bedrock => "bedrock",
        }
    }
}

/// Behaviour knobs taken from the `x-mock-*` request headers.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// `x-mock-text`.
    pub text: Option<String>,
    /// `x-mock-chunks`.
    pub chunks: Option<usize>,
    /// `x-mock-tool: 0` disables tool calls.
    pub no_tools: bool,
    /// `x-mock-tool-args`: the JSON text of a tool call's arguments (default [`TOOL_ARGS`]).
    pub tool_args: Option<String>,
    /// `x-mock-cache-write: N`: Anthropic and Bedrock report N prompt tokens written to
    /// their cache (beside the uncached ones).
    pub cache_write: u64,
    /// `x-mock-refusal: TEXT`: OpenAI declines with TEXT (`message.refusal`, `delta.refusal`,
    /// `content: null`), the way its structured outputs refuse.
    pub refusal: Option<String>,
    /// `x-mock-thinking: TEXT`: the answer reasons first (see the module of the agents' API).
    pub thinking: Option<String>,
    /// `x-mock-thought-signature: 1`: Gemini signs its function calls.
    pub thought_signature: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A call to the named tool; the pieces are its JSON arguments.
    Tool {
        name: String,
    },
}

/// A provider-neutral answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub provider: Provider,
    pub model: String,
    pub kind: Kind,
    /// Content pieces: one per streamed content event.
    pub pieces: Vec<String>,
    pub prompt_tokens: u64,
    /// Prompt tokens reported as cache writes (Anthropic, Bedrock), on top of `prompt_tokens`.
    pub cache_write: u64,
    /// OpenAI answers the text as a refusal.
    pub refusal: bool,
    /// Reasoning given before the answer (`x-mock-thinking`).
    pub thinking: Option<String>,
    /// Gemini signs its function calls.
    pub thought_signature: bool,
    /// Sequence number used in ids.
    pub seq: u64,
    /// Unix seconds.
    pub created: u64,
}

impl Reply {
    pub fn completion_tokens(&self) -> u64 {
        self.pieces.len() as u64
    }
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens()
    }
    pub fn full(&self) -> String {
        self.pieces.concat()
    }
    /// Value of the `x-mock-usage` response header (prompt tokens include cache writes).
    pub fn usage_header(&self) -> String {
        format!(
            "{},{}",
            self.prompt_tokens + self.cache_write,
            self.completion_tokens()
        )
    }
    fn is_tool(&self) -> bool {
        matches!(self.kind, Kind::Tool { .. })
    }
    fn tool_args(&self) -> Value {
        serde_json::from_str(&self.full()).unwrap_or(Value::Null)
    }
}

// ---------------------------------------------------------------------------------------
// Planning: request -> Reply
// ---------------------------------------------------------------------------------------

/// The usage rule: `PROMPT_OVERHEAD` + the number of whitespace-separated words in every
/// string found under the request's conversation fields (`messages`, `system`,
/// `contents`, `systemInstruction`), counting only strings that are the field itself or
/// sit (at any depth) under a `content` or `text` key.
pub fn prompt_tokens(provider: Provider, req: &Value) -> u64 {
    let roots: &[&str] = match provider {
        Provider::OpenAi => &["messages"],
        Provider::Anthropic | Provider::Bedrock => &["system", "messages"],
        Provider::Gemini => &["systemInstruction", "system_instruction", "contents"],
    };
    let mut words = 0u64;
    for key in roots {
        if let Some(v) = req.get(*key) {
            count_words(v, true, &mut words);
        }
    }
    PROMPT_OVERHEAD + words
}

fn count_words(v: &Value, texty: bool, acc: &mut u64) {
    match v {
        Value::String(s) if texty => *acc += s.split_whitespace().count() as u64,
        Value::Array(items) => items.iter().for_each(|x| count_words(x, texty, acc)),
        Value::Object(map) => {
            for (k, x) in map {
                count_words(x, k == "content" || k == "text", acc);
            }
        }
        _ => {}
    }
}

fn last_message<'a>(req: &'a Value, key: &str) -> Option<&'a Value> {
    req.get(key)?.as_array()?.last()
}

/// Readable text of a tool result value: strings as is, text blocks joined, objects by
/// their `content`/`result`/`text`/`output` string, anything else as compact JSON.
pub fn result_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(m) => match (m.get("text"), m.get("json")) {
                    (Some(Value::String(t)), _) => t.clone(),
                    (_, Some(j)) => result_text(j),
                    _ => result_text(item),
                },
                other => result_text(other),
            })
            .collect(),
        Value::Object(m) => ["content", "result", "text", "output"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
        other => other.to_string(),
    }
}

/// The text of the tool result in the LAST message, if it is one.
pub fn last_tool_result(provider: Provider, req: &Value) -> Option<String> {
    match provider {
        Provider::OpenAi => {
            let last = last_message(req, "messages")?;
            (last.get("role")?.as_str()? == "tool")
                .then(|| result_text(last.get("content").unwrap_or(&Value::Null)))
        }
        Provider::Anthropic => {
            let blocks = last_message(req, "messages")?.get("content")?.as_array()?;
            let block = blocks
                .iter()
                .rev()
                .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))?;
            Some(result_text(block.get("content").unwrap_or(&Value::Null)))
        }
        Provider::Gemini => {
            let parts = last_message(req, "contents")?.get("parts")?.as_array()?;
            let fr = parts.iter().rev().find_map(|p| {
                p.get("functionResponse")
                    .or_else(|| p.get("function_response"))
            })?;
            Some(result_text(fr.get("response").unwrap_or(&Value::Null)))
        }
        Provider::Bedrock => {
            let blocks = last_message(req, "messages")?.get("content")?.as_array()?;
            let tr = blocks.iter().rev().find_map(|b| b.get("toolResult"))?;
            Some(result_text(tr.get("content").unwrap_or(&Value::Null)))
        }
    }
}

/// The name of the first declared tool, if any.
pub fn first_tool(provider: Provider, req: &Value) -> Option<String> {
    let name = match provider {
        Provider::OpenAi => req
            .get("tools")
            .and_then(|t| t.get(0))
            .and_then(|t| t.get("function"))
            .and_then(|f| f.get("name"))
            .or_else(|| req.get("functions")?.get(0)?.get("name")),
        Provider::Anthropic => req.get("tools")?.get(0)?.get("name"),
        Provider::Gemini => req.get("tools")?.as_array()?.iter().find_map(|t| {
            t.get("functionDeclarations")
                .or_else(|| t.get("function_declarations"))?
                .get(0)?
                .get("name")
        }),
        Provider::Bedrock => req
            .get("toolConfig")?
            .get("tools")?
            .get(0)?
            .get("toolSpec")?
            .get("name"),
    };
    name?.as_str().map(str::to_string)
}

/// Default text split: one piece per word, each word after the first carrying the
/// whitespace before it ("Hello from mock" -> "Hello", " from", " mock").
pub fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if ws && !prev_ws && i > start {
            pieces.push(text[start..i].to_string());
            start = i;
        }
        prev_ws = ws;
    }
    if start < text.len() || pieces.is_empty() {
        pieces.push(text[start..].to_string());
    }
    pieces
}

/// Exactly `n` pieces of nearly equal char length. A text shorter than `n` chars is first
/// repeated until it is long enough.
pub fn split_even(text: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    let base = if text.is_empty() { " " } else { text };
    let base_len = base.chars().count();
    let mut chars: Vec<char> = base.chars().collect();
    while chars.len() < n {
        chars.extend(base.chars());
    }
    debug_assert!(base_len > 0);
    let len = chars.len();
    (0..n)
        .map(|i| chars[i * len / n..(i + 1) * len / n].iter().collect())
        .collect()
}

/// Builds the neutral reply. Precedence: a tool result in the last message answers
/// `The tool said: <result>`; else declared tools (unless `x-mock-tool: 0`) answer a call
/// to the first tool; else `x-mock-text` or `Hello from mock <provider>!`.
pub fn plan(
    provider: Provider,
    req: &Value,
    model: String,
    opts: &Opts,
    seq: u64,
    created: u64,
) -> Reply {
    let prompt_tokens = prompt_tokens(provider, req);
    let cache_write = match provider {
        Provider::Anthropic | Provider::Bedrock => opts.cache_write,
        Provider::OpenAi | Provider::Gemini => 0,
    };
    let tool = if let Some(result) = last_tool_result(provider, req) {
        return Reply {
            cache_write,
            ..text_reply(
                provider,
                model,
                &format!("The tool said: {result}"),
                opts,
                prompt_tokens,
                seq,
                created,
            )
        };
    } else if opts.no_tools {
        None
    } else {
        first_tool(provider, req)
    };
    match tool {
        Some(name) => {
            let args = opts.tool_args.as_deref().unwrap_or(TOOL_ARGS);
            let pieces = if provider == Provider::Gemini {
                vec![args.to_string()]
            } else {
                let n = opts
                    .chunks
                    .unwrap_or(DEFAULT_TOOL_PIECES)
                    .clamp(2, args.chars().count().max(2));
                split_even(args, n)
            };
            Reply {
                provider,
                model,
                kind: Kind::Tool { name },
                pieces,
                prompt_tokens,
                cache_write,
                refusal: false,
                thinking: opts.thinking.clone(),
                thought_signature: opts.thought_signature,
                seq,
                created,
            }
        }
        None if provider == Provider::OpenAi && opts.refusal.is_some() => {
            let text = opts.refusal.as_deref().unwrap_or_default();
            Reply {
                refusal: true,
                ..text_reply(provider, model, text, opts, prompt_tokens, seq, created)
            }
        }
        None => {
            let default = format!("Hello from mock {}!", provider.name());
            let text = opts.text.as_deref().unwrap_or(&default);
            Reply {
                cache_write,
                ..text_reply(provider, model, text, opts, prompt_tokens, seq, created)
            }
        }
    }
}

fn text_reply(
    provider: Provider,
    model: String,
    text: &str,
    opts: &Opts,
    prompt_tokens: u64,
    seq: u64,
    created: u64,
) -> Reply {
    let pieces = match opts.chunks {
        Some(n) => split_even(text, n.clamp(1, MAX_CHUNKS)),
        None => split_words(text),
    };
    Reply {
        provider,
        model,
        kind: Kind::Text,
        pieces,
        prompt_tokens,
        cache_write: 0,
        refusal: false,
        thinking: opts.thinking.clone(),
        thought_signature: opts.thought_signature,
        seq,
        created,
    }
}

// ---------------------------------------------------------------------------------------
// Non-stream bodies
// ---------------------------------------------------------------------------------------

/// The complete non-stream JSON body.
pub fn body(r: &Reply, latency_ms: u64) -> Value {
    match r.provider {
        Provider::OpenAi => openai_body(r),
        Provider::Anthropic => anthropic_body(r),
        Provider::Gemini => gemini_chunk(r, &r.pieces.concat(), true, true, r.completion_tokens()),
        Provider::Bedrock => bedrock_body(r, latency_ms),
    }
}

fn openai_usage(r: &Reply) -> Value {
    json!({
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens(),
        "total_tokens": r.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}
    })
}

fn openai_body(r: &Reply) -> Value {
    let (message, finish) = match &r.kind {
        Kind::Text if r.refusal => (
            json!({"role": "assistant", "content": null, "refusal": r.full()}),
            "stop",
        ),
        Kind::Text => (
            json!({"role": "assistant", "content": r.full(), "refusal": null}),
            "stop",
        ),
        Kind::Tool { name } => (
            json!({
                "role": "assistant",
                "content": null,
                "refusal": null,
                "tool_calls": [{
                    "id": "call_mock1",
                    "type": "function",
                    "function": {"name": name, "arguments": r.full()}
                }]
            }),
            "tool_calls",
        ),
    };
    let mut message = message;
    if let Some(t) = &r.thinking {
        message["reasoning_content"] = json!(t);
    }
    json!({
        "id": format!("chatcmpl-mock{}", r.seq),
        "object": "chat.completion",
        "created": r.created,
        "model": r.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": openai_usage(r),
        "system_fingerprint": null
    })
}

fn anthropic_usage(r: &Reply, output: u64) -> Value {
    json!({
        "input_tokens": r.prompt_tokens,
        "output_tokens": output,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": r.cache_write
    })
}

fn anthropic_body(r: &Reply) -> Value {
    let (block, stop) = match &r.kind {
        Kind::Text => (json!({"type": "text", "text": r.full()}), "end_turn"),
        Kind::Tool { name } => (
            json!({"type": "tool_use", "id": "toolu_mock1", "name": name, "input": r.tool_args()}),
            "tool_use",
        ),
    };
    let mut content = Vec::new();
    if let Some(t) = &r.thinking {
        content.push(
            json!({"type": "thinking", "thinking": t, "signature": super::agents::signature(t)}),
        );
    }
    content.push(block);
    json!({
        "id": format!("msg_mock{}", r.seq),
        "type": "message",
        "role": "assistant",
        "model": r.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": anthropic_usage(r, r.completion_tokens())
    })
}

/// One Gemini `GenerateContentResponse` carrying `text` (or the function call), with
/// `candidatesTokenCount = output`; `first` puts the thought summary before it, `last` adds
/// `finishReason`.
fn gemini_chunk(r: &Reply, text: &str, first: bool, last: bool, output: u64) -> Value {
    let mut part = match &r.kind {
        Kind::Text => json!({"text": text}),
        Kind::Tool { name } => json!({"functionCall": {"name": name, "args": r.tool_args()}}),
    };
    if let (Kind::Tool { name }, true) = (&r.kind, r.thought_signature) {
        part["thoughtSignature"] = json!(super::agents::gemini_signature(name));
    }
    let mut parts = Vec::new();
    // The thought summary comes first, in the answer's first chunk.
    if let Some(t) = r.thinking.as_ref().filter(|_| first) {
        parts.push(json!({"text": t, "thought": true}));
    }
    parts.push(part);
    let mut candidate = Map::new();
    candidate.insert("content".into(), json!({"parts": parts, "role": "model"}));
    if last {
        candidate.insert("finishReason".into(), json!("STOP"));
    }
    candidate.insert("index".into(), json!(0));
    json!({
        "candidates": [Value::Object(candidate)],
        "usageMetadata": {
            "promptTokenCount": r.prompt_tokens,
            "candidatesTokenCount": output,
            "totalTokenCount": r.prompt_tokens + output
        },
        "modelVersion": r.model,
        "responseId": format!("mock-{}", r.seq)
    })
}

fn bedrock_usage(r: &Reply) -> Value {
    let mut u = json!({
        "inputTokens": r.prompt_tokens,
        "outputTokens": r.completion_tokens(),
        "totalTokens": r.total_tokens() + r.cache_write
    });
    // Bedrock names cache figures only when the prompt used the cache.
    if r.cache_write > 0 {
        u["cacheWriteInputTokens"] = json!(r.cache_write);
    }
    u
}

fn bedrock_body(r: &Reply, latency_ms: u64) -> Value {
    let (block, stop) = match &r.kind {
        Kind::Text => (json!({"text": r.full()}), "end_turn"),
        Kind::Tool { name } => (
            json!({"toolUse": {"toolUseId": "tooluse_mock1", "name": name, "input": r.tool_args()}}),
            "tool_use",
        ),
    };
    let mut content = Vec::new();
    if let Some(t) = &r.thinking {
        content.push(json!({"reasoningContent": {"reasoningText": {"text": t, "signature": super::agents::signature(t)}}}));
    }
    content.push(block);
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": bedrock_usage(r),
        "metrics": {"latencyMs": latency_ms}
    })
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// One stream event: its name (SSE `event:` for Anthropic, `:event-type` for Bedrock) and
/// its JSON (or `[DONE]`) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
    pub name: &'static str,
    pub data: String,
}

fn ev(name: &'static str, data: Value) -> Ev {
    Ev {
        name,
        data: data.to_string(),
    }
}

/// How events go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `data: JSON\n\n` (OpenAI).
    SseData,
    /// `event: NAME\ndata: JSON\n\n` (Anthropic).
    SseNamed,
    /// `data: JSON\r\n\r\n` (Gemini `alt=sse`, which uses CRLF).
    SseCrlf,
    /// A JSON array streamed element by element (Gemini without `alt=sse`).
    JsonArray,
    /// AWS event stream binary frames (Bedrock).
    EventStream,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::SseData | Format::SseNamed | Format::SseCrlf => "text/event-stream",
            Format::JsonArray => "application/json",
            Format::EventStream => "application/vnd.amazon.eventstream",
        }
    }
}

/// Wire bytes of event `index` of `count`.
pub fn encode(format: Format, e: &Ev, index: usize, count: usize) -> Vec<u8> {
    match format {
        Format::SseData => format!("data: {}\n\n", e.data).into_bytes(),
        Format::SseNamed => format!("event: {}\ndata: {}\n\n", e.name, e.data).into_bytes(),
        Format::SseCrlf => format!("data: {}\r\n\r\n", e.data).into_bytes(),
        Format::JsonArray => {
            let open = if index == 0 { "[" } else { ",\r\n" };
            let close = if index + 1 == count { "]" } else { "" };
            format!("{open}{}{close}", e.data).into_bytes()
        }
        Format::EventStream => eventstream::event(e.name, e.data.as_bytes()),
    }
}

/// The stream events of `r`. `include_usage` is OpenAI's `stream_options.include_usage`.
pub fn events(r: &Reply, include_usage: bool, latency_ms: u64) -> Vec<Ev> {
    match r.provider {
        Provider::OpenAi => openai_events(r, include_usage),
        Provider::Anthropic => anthropic_events(r),
        Provider::Gemini => gemini_events(r),
        Provider::Bedrock => bedrock_events(r, latency_ms),
    }
}

fn openai_events(r: &Reply, include_usage: bool) -> Vec<Ev> {
    let id = format!("chatcmpl-mock{}", r.seq);
    let chunk = |delta: Value, finish: Value| {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": r.created,
            "model": r.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage {
            if let Some(m) = v.as_object_mut() {
                m.insert("usage".into(), Value::Null);
            }
        }
        ev("", v)
    };
    let mut out = Vec::with_capacity(r.pieces.len() + 4);
    match &r.kind {
        Kind::Text if r.refusal => {
            out.push(chunk(
                json!({"role": "assistant", "content": null, "refusal": ""}),
                Value::Null,
            ));
            for p in &r.pieces {
                out.push(chunk(json!({"refusal": p}), Value::Null));
            }
        }
        Kind::Text => {
            out.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            for t in r.thinking.iter().flat_map(|t| split_words(t)) {
                out.push(chunk(json!({"reasoning_content": t}), Value::Null));
            }
            for p in &r.pieces {
                out.push(chunk(json!({"content": p}), Value::Null));
            }
        }
        Kind::Tool { name } => {
            out.push(chunk(
                json!({
                    "role": "assistant",
                    "content": null,
                    "refusal": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": "call_mock1",
                        "type": "function",
                        "function": {"name": name, "arguments": ""}
                    }]
                }),
                Value::Null,
            ));
            for p in &r.pieces {
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}),
                    Value::Null,
                ));
            }
        }
    }
    let finish = if r.is_tool() { "tool_calls" } else { "stop" };
    out.push(chunk(json!({}), json!(finish)));
    if include_usage {
        out.push(ev(
            "",
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": r.created,
                "model": r.model,
                "system_fingerprint": null,
                "choices": [],
                "usage": openai_usage(r)
            }),
        ));
    }
    out.push(Ev {
        name: "",
        data: "[DONE]".to_string(),
    });
    out
}

fn anthropic_events(r: &Reply) -> Vec<Ev> {
    let mut out = Vec::with_capacity(r.pieces.len() + 6);
    out.push(ev(
        "message_start",
        json!({
            "type": "message_start",
            "message": {
                "id": format!("msg_mock{}", r.seq),
                "type": "message",
                "role": "assistant",
                "model": r.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": anthropic_usage(r, 1)
            }
        }),
    ));
    let block = match &r.kind {
        Kind::Text => json!({"type": "text", "text": ""}),
        Kind::Tool { name } => {
            json!({"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {}})
        }
    };
    let mut index = 0;
    if let Some(t) = &r.thinking {
        out.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ));
        for w in split_words(t) {
            out.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "thinking_delta", "thinking": w}}),
            ));
        }
        out.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "signature_delta", "signature": super::agents::signature(t)}}),
        ));
        out.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        index = 1;
    }
    out.push(ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": block}),
    ));
    out.push(ev("ping", json!({"type": "ping"})));
    for p in &r.pieces {
        let delta = match r.kind {
            Kind::Text => json!({"type": "text_delta", "text": p}),
            Kind::Tool { .. } => json!({"type": "input_json_delta", "partial_json": p}),
        };
        out.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        ));
    }
    out.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    ));
    let stop = if r.is_tool() { "tool_use" } else { "end_turn" };
    out.push(ev(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": r.completion_tokens()}
        }),
    ));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    out
}

fn gemini_events(r: &Reply) -> Vec<Ev> {
    let n = r.pieces.len();
    r.pieces
        .iter()
        .enumerate()
        .map(|(i, p)| ev("", gemini_chunk(r, p, i == 0, i + 1 == n, (i + 1) as u64)))
        .collect()
}

fn bedrock_events(r: &Reply, latency_ms: u64) -> Vec<Ev> {
    let mut out = Vec::with_capacity(r.pieces.len() + 5);
    out.push(ev("messageStart", json!({"role": "assistant"})));
    let mut index = 0;
    if let Some(t) = &r.thinking {
        for w in split_words(t) {
            out.push(ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": w}}}),
            ));
        }
        out.push(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0,
                   "delta": {"reasoningContent": {"signature": super::agents::signature(t)}}}),
        ));
        out.push(ev("contentBlockStop", json!({"contentBlockIndex": 0})));
        index = 1;
    }
    if let Kind::Tool { name } = &r.kind {
        out.push(ev(
            "contentBlockStart",
            json!({
                "contentBlockIndex": index,
                "start": {"toolUse": {"toolUseId": "tooluse_mock1", "name": name}}
            }),
        ));
    }
    for p in &r.pieces {
        let delta = match r.kind {
            Kind::Text => json!({"text": p}),
            Kind::Tool { .. } => json!({"toolUse": {"input": p}}),
        };
        out.push(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": index, "delta": delta}),
        ));
    }
    out.push(ev("contentBlockStop", json!({"contentBlockIndex": index})));
    let stop = if r.is_tool() { "tool_use" } else { "end_turn" };
    out.push(ev("messageStop", json!({"stopReason": stop})));
    out.push(ev(
        "metadata",
        json!({"usage": bedrock_usage(r), "metrics": {"latencyMs": latency_ms}}),
    ));
    out
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// The provider's error body (and extra headers) for `status`.
pub fn error(
    provider: Provider,
    status: u16,
    message: &str,
) -> (Value, Vec<(&'static str, String)>) {
    match provider {
        Provider::OpenAi => {
            let (kind, code) = match status {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                404 => ("invalid_request_error", json!("model_not_found")),
                429 => ("requests", json!("rate_limit_exceeded")),
                500..=599 => ("server_error", Value::Null),
                _ => ("invalid_request_error", Value::Null),
            };
            (
                json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
                Vec::new(),
            )
        }
        Provider::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                500..=599 => "api_error",
                _ => "invalid_request_error",
            };
            (
                json!({"type": "error", "error": {"type": kind, "message": message}}),
                Vec::new(),
            )
        }
        Provider::Gemini => {
            let s = match status {
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                409 => "ABORTED",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                500..=599 => "INTERNAL",
                _ => "INVALID_ARGUMENT",
            };
            (
                json!({"error": {"code": status, "message": message, "status": s}}),
                Vec::new(),
            )
        }
        Provider::Bedrock => {
            let kind = match status {
                401 => "UnrecognizedClientException",
                403 => "AccessDeniedException",
                404 => "ResourceNotFoundException",
                408 => "ModelTimeoutException",
                424 => "ModelErrorException",
                429 => "ThrottlingException",
                503 => "ServiceUnavailableException",
                500..=599 => "InternalServerException",
                _ => "ValidationException",
            };
            (
                json!({"message": message}),
                vec![("x-amzn-errortype", kind.to_string())],
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn reply(p: Provider, req: Value, opts: Opts) -> Reply {
        plan(p, &req, "m1".into(), &opts, 7, 1000)
    }

    fn chunks(n: usize) -> Opts {
        Opts {
            chunks: Some(n),
            ..Opts::default()
        }
    }

    #[test]
    fn usage_rule() {
        let oa = json!({"model": "x", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "what is  the\nweather"}]}
        ]});
        assert_eq!(prompt_tokens(Provider::OpenAi, &oa), 3 + 2 + 4);
        let an = json!({"system": "one two", "messages": [{"role": "user", "content": "three"}]});
        assert_eq!(prompt_tokens(Provider::Anthropic, &an), 3 + 3);
        let ge = json!({"systemInstruction": {"parts": [{"text": "a b"}]},
            "contents": [{"role": "user", "parts": [{"text": "c d e"}]}]});
        assert_eq!(prompt_tokens(Provider::Gemini, &ge), 3 + 5);
        let br = json!({"system": [{"text": "sys"}], "messages": [{"role": "user", "content": [{"text": "hi there"}]}]});
        assert_eq!(prompt_tokens(Provider::Bedrock, &br), 3 + 3);
        assert_eq!(prompt_tokens(Provider::OpenAi, &json!({})), 3);
    }

    #[test]
    fn splitting() {
        assert_eq!(
            split_words("Hello from mock openai!"),
            vec!["Hello", " from", " mock", " openai!"]
        );
        assert_eq!(split_words(""), vec![""]);
        assert_eq!(split_words("  a  b "), vec!["  a", "  b", " "]);
        assert_eq!(split_even("abcdef", 3), vec!["ab", "cd", "ef"]);
        assert_eq!(split_even("abcdefg", 2), vec!["abc", "defg"]);
        assert_eq!(split_even("ab", 5), vec!["a", "b", "a", "b", "ab"]);
        assert_eq!(split_even("é€x", 3), vec!["é", "€", "x"]);
        assert_eq!(split_even("", 2), vec![" ", " "]);
    }

    #[test]
    fn openai_text_non_stream_and_stream_agree() {
        let req = json!({"messages": [{"role": "user", "content": "hi"}]});
        let r = reply(Provider::OpenAi, req, Opts::default());
        assert_eq!(r.usage_header(), "4,4");
        let b = body(&r, 0);
        assert_eq!(b["id"], "chatcmpl-mock7");
        assert_eq!(b["object"], "chat.completion");
        assert_eq!(b["model"], "m1");
        assert_eq!(
            b["choices"][0]["message"]["content"],
            "Hello from mock openai!"
        );
        assert_eq!(b["choices"][0]["finish_reason"], "stop");
        assert_eq!(b["usage"]["prompt_tokens"], 4);
        assert_eq!(b["usage"]["completion_tokens"], 4);
        assert_eq!(b["usage"]["total_tokens"], 8);
        assert_eq!(b["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

        let evs = events(&r, true, 0);
        // role, 4 pieces, finish, usage, [DONE]
        assert_eq!(evs.len(), 8);
        let first: Value = serde_json::from_str(&evs[0].data).unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["choices"][0]["delta"]["content"], "");
        let text: String = evs[1..5]
            .iter()
            .map(|e| {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(text, "Hello from mock openai!");
        let fin: Value = serde_json::from_str(&evs[5].data).unwrap();
        assert_eq!(fin["choices"][0]["finish_reason"], "stop");
        assert_eq!(fin["choices"][0]["delta"], json!({}));
        let usage: Value = serde_json::from_str(&evs[6].data).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"], b["usage"]);
        assert_eq!(evs[7].data, "[DONE]");
        assert_eq!(events(&r, false, 0).len(), 7, "no usage chunk by default");
        assert_eq!(encode(Format::SseData, &evs[7], 7, 8), b"data: [DONE]\n\n");
    }

    #[test]
    fn openai_tool_call_and_tool_result() {
        let req = json!({"messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}},
                      {"type": "function", "function": {"name": "other"}}]});
        let r = reply(Provider::OpenAi, req.clone(), Opts::default());
        let b = body(&r, 0);
        let call = &b["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_mock1");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], TOOL_ARGS);
        assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");
        let evs = events(&r, false, 0);
        let args: Vec<String> = evs
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(str::to_string)
            })
            .filter(|a| !a.is_empty())
            .collect();
        assert!(args.len() >= 2);
        assert_eq!(args.concat(), TOOL_ARGS);

        let mut msgs = req["messages"].as_array().unwrap().clone();
        msgs.push(json!({"role": "tool", "tool_call_id": "call_mock1", "content": "22 degrees"}));
        let r = reply(
            Provider::OpenAi,
            json!({"messages": msgs, "tools": req["tools"]}),
            Opts::default(),
        );
        assert_eq!(
            body(&r, 0)["choices"][0]["message"]["content"],
            "The tool said: 22 degrees"
        );

        let off = Opts {
            no_tools: true,
            ..Opts::default()
        };
        let r = reply(Provider::OpenAi, req, off);
        assert_eq!(r.kind, Kind::Text);
    }

    #[test]
    fn anthropic_shapes() {
        let req = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
        let r = reply(Provider::Anthropic, req, chunks(3));
        let b = body(&r, 0);
        assert_eq!(b["type"], "message");
        assert_eq!(b["content"][0]["text"], "Hello from mock anthropic!");
        assert_eq!(b["stop_reason"], "end_turn");
        assert_eq!(b["usage"]["input_tokens"], 4);
        assert_eq!(b["usage"]["output_tokens"], 3);
        let evs = events(&r, false, 0);
        let names: Vec<&str> = evs.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            vec![
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let start: Value = serde_json::from_str(&evs[0].data).unwrap();
        assert_eq!(start["message"]["usage"]["input_tokens"], 4);
        assert_eq!(start["message"]["usage"]["output_tokens"], 1);
        let delta: Value = serde_json::from_str(&evs[7].data).unwrap();
        assert_eq!(delta["usage"]["output_tokens"], 3);
        assert_eq!(
            String::from_utf8(encode(Format::SseNamed, &evs[8], 8, 9)).unwrap(),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );

        let tools = json!({"messages": [{"role": "user", "content": "w"}],
            "tools": [{"name": "get_weather", "input_schema": {}}]});
        let r = reply(Provider::Anthropic, tools, Opts::default());
        let b = body(&r, 0);
        assert_eq!(b["content"][0]["type"], "tool_use");
        assert_eq!(b["content"][0]["id"], "toolu_mock1");
        assert_eq!(
            b["content"][0]["input"],
            json!({"location": "Paris", "unit": "celsius"})
        );
        assert_eq!(b["stop_reason"], "tool_use");
        let evs = events(&r, false, 0);
        let cbs: Value = serde_json::from_str(&evs[1].data).unwrap();
        assert_eq!(cbs["content_block"]["type"], "tool_use");
        let partial: String = evs
            .iter()
            .filter(|e| e.name == "content_block_delta")
            .map(|e| {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                assert_eq!(v["delta"]["type"], "input_json_delta");
                v["delta"]["partial_json"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(partial, TOOL_ARGS);

        let result = json!({"tools": [{"name": "get_weather"}], "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_mock1",
              "content": [{"type": "text", "text": "sunny"}]}]}]});
        let r = reply(Provider::Anthropic, result, Opts::default());
        assert_eq!(body(&r, 0)["content"][0]["text"], "The tool said: sunny");
    }

    #[test]
    fn gemini_shapes() {
        let req = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
        let r = reply(Provider::Gemini, req, Opts::default());
        let b = body(&r, 0);
        assert_eq!(
            b["candidates"][0]["content"]["parts"][0]["text"],
            "Hello from mock gemini!"
        );
        assert_eq!(b["candidates"][0]["content"]["role"], "model");
        assert_eq!(b["candidates"][0]["finishReason"], "STOP");
        assert_eq!(b["usageMetadata"]["promptTokenCount"], 4);
        assert_eq!(b["usageMetadata"]["candidatesTokenCount"], 4);
        assert_eq!(b["usageMetadata"]["totalTokenCount"], 8);
        assert_eq!(b["modelVersion"], "m1");
        let evs = events(&r, false, 0);
        assert_eq!(evs.len(), 4);
        let last: Value = serde_json::from_str(&evs[3].data).unwrap();
        assert_eq!(last["usageMetadata"], b["usageMetadata"]);
        let first: Value = serde_json::from_str(&evs[0].data).unwrap();
        assert!(first["candidates"][0].get("finishReason").is_none());
        assert_eq!(
            encode(
                Format::JsonArray,
                &Ev {
                    name: "",
                    data: "1".into()
                },
                0,
                2
            ),
            b"[1"
        );
        assert_eq!(
            encode(
                Format::JsonArray,
                &Ev {
                    name: "",
                    data: "2".into()
                },
                1,
                2
            ),
            b",\r\n2]"
        );

        let tools = json!({"contents": [{"role": "user", "parts": [{"text": "w"}]}],
            "tools": [{"googleSearch": {}}, {"functionDeclarations": [{"name": "get_weather"}]}]});
        let r = reply(Provider::Gemini, tools, Opts::default());
        let evs = events(&r, false, 0);
        assert_eq!(evs.len(), 1);
        let v: Value = serde_json::from_str(&evs[0].data).unwrap();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["functionCall"],
            json!({"name": "get_weather", "args": {"location": "Paris", "unit": "celsius"}})
        );

        let result = json!({"tools": [{"functionDeclarations": [{"name": "get_weather"}]}],
            "contents": [{"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
              "response": {"result": "rain"}}}]}]});
        let r = reply(Provider::Gemini, result, Opts::default());
        assert_eq!(
            body(&r, 0)["candidates"][0]["content"]["parts"][0]["text"],
            "The tool said: rain"
        );
    }

    #[test]
    fn bedrock_shapes() {
        let req = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]});
        let r = reply(Provider::Bedrock, req, Opts::default());
        let b = body(&r, 12);
        assert_eq!(
            b["output"]["message"]["content"][0]["text"],
            "Hello from mock bedrock!"
        );
        assert_eq!(b["stopReason"], "end_turn");
        assert_eq!(
            b["usage"],
            json!({"inputTokens": 4, "outputTokens": 4, "totalTokens": 8})
        );
        assert_eq!(b["metrics"]["latencyMs"], 12);
        let names: Vec<&str> = events(&r, false, 0).iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            vec![
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );

        let tools = json!({"messages": [{"role": "user", "content": [{"text": "w"}]}],
            "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {}}}}]}});
        let r = reply(Provider::Bedrock, tools, Opts::default());
        let b = body(&r, 0);
        assert_eq!(
            b["output"]["message"]["content"][0]["toolUse"]["toolUseId"],
            "tooluse_mock1"
        );
        assert_eq!(
            b["output"]["message"]["content"][0]["toolUse"]["name"],
            "get_weather"
        );
        assert_eq!(b["stopReason"], "tool_use");
        let evs = events(&r, false, 0);
        assert_eq!(evs[1].name, "contentBlockStart");
        let frame = encode(Format::EventStream, &evs[2], 2, evs.len());
        let (headers, payload, _) = eventstream::tests::decode(&frame);
        assert_eq!(headers[0].1, "contentBlockDelta");
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert!(v["delta"]["toolUse"]["input"].is_string());

        let result = json!({"messages": [{"role": "user", "content": [{"toolResult": {
            "toolUseId": "tooluse_mock1", "content": [{"json": {"temp": 3}}]}}]}],
            "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather"}}]}});
        let r = reply(Provider::Bedrock, result, Opts::default());
        assert_eq!(
            body(&r, 0)["output"]["message"]["content"][0]["text"],
            "The tool said: {\"temp\":3}"
        );
    }

    #[test]
    fn error_bodies() {
        let (b, _) = error(Provider::OpenAi, 429, "slow down");
        assert_eq!(b["error"]["type"], "requests");
        assert_eq!(b["error"]["code"], "rate_limit_exceeded");
        assert_eq!(b["error"]["param"], Value::Null);
        let (b, _) = error(Provider::OpenAi, 401, "m");
        assert_eq!(b["error"]["code"], "invalid_api_key");
        let (b, _) = error(Provider::OpenAi, 503, "m");
        assert_eq!(b["error"]["type"], "server_error");
        let (b, _) = error(Provider::Anthropic, 529, "m");
        assert_eq!(
            b,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "m"}})
        );
        let (b, _) = error(Provider::Anthropic, 500, "m");
        assert_eq!(b["error"]["type"], "api_error");
        let (b, _) = error(Provider::Gemini, 429, "m");
        assert_eq!(
            b,
            json!({"error": {"code": 429, "message": "m", "status": "RESOURCE_EXHAUSTED"}})
        );
        let (b, _) = error(Provider::Gemini, 400, "m");
        assert_eq!(b["error"]["status"], "INVALID_ARGUMENT");
        let (b, h) = error(Provider::Bedrock, 429, "m");
        assert_eq!(b, json!({"message": "m"}));
        assert_eq!(
            h,
            vec![("x-amzn-errortype", "ThrottlingException".to_string())]
        );
    }

    #[test]
    fn stream_and_non_stream_usage_match_with_chunks() {
        for p in [
            Provider::OpenAi,
            Provider::Anthropic,
            Provider::Gemini,
            Provider::Bedrock,
        ] {
            let r = reply(p, json!({}), chunks(30));
            assert_eq!(r.completion_tokens(), 30);
            assert_eq!(r.full().chars().count(), 30.max(r.full().chars().count()));
            assert!(r.full().starts_with("Hello from mock"));
        }
    }
}
