//! Anthropic Messages API: a provider (`POST /v1/messages`) and a second front door, so the
//! official `anthropic` SDKs work through the gateway.
//!
//! Provider: [`encode_request`], [`decode_response`], [`decode_error`], [`stream_decoder`].
//! Front door: [`parse_request`], [`encode_response`], [`StreamEncoder`], [`error_body`].
//!
//! Decisions:
//! - `response_format` has no native Anthropic equivalent: `json_object` and `json_schema`
//!   become an instruction appended to the top-level `system` prompt (the schema is included
//!   verbatim); `text` is a no-op.
//! - `n > 1` is rejected; `seed` and OpenAI-only `extra` fields are dropped, except
//!   `parallel_tool_calls: false` → `tool_choice.disable_parallel_tool_use`.
//! - `temperature` above 1 (Anthropic's maximum) is rejected rather than silently clamped.
//! - Error statuses (see [`decode_error`]): `overloaded_error` (529) → 503 `server_error`
//!   (a standard status that OpenAI SDKs retry) on the OpenAI front door, 529 again on this
//!   one ([`error_reply`]); `api_error` → 502; `authentication_error`
//!   and `permission_error` → 502 with "provider rejected the gateway's credentials: ...",
//!   because they concern the gateway's key, not the client's.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::json::ClientError;
use super::json::{
    as_arr, as_obj, as_str, at, cerr, count, excerpt, field, join, num, object, opt_bool, opt_f64,
    opt_max_tokens, opt_str, parse_body, req, req_str, type_name,
};
use super::model::{
    ChatRequest, ChatResponse, Choice, FinishReason, Message, Part, ProviderError, Role,
    StreamEvent, Tool, ToolCall, ToolChoice, Usage,
};
use super::openai::text_of;
use super::util::format_instruction;
use super::{Outgoing, StreamDecoder, Target, TranslateError};
use crate::stream::{write_json_event, SseParser};

/// The `anthropic-version` header every call carries.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when neither the client nor the backend defaults give one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

// ---------------------------------------------------------------------------------------------
// Provider: request
// ---------------------------------------------------------------------------------------------

/// Encodes a canonical request as an Anthropic Messages call to `t.model`.
pub fn encode_request(req: &ChatRequest, t: &Target) -> Result<Outgoing, TranslateError> {
    let terr = |m: String| Err(TranslateError(m));
    if let Some(n) = req.n.filter(|n| *n > 1) {
        return terr(format!(
            "n: Anthropic returns a single choice; n = {n} is not supported"
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let turns = turns(req, &mut system)?;
    if let Some(rf) = &req.response_format {
        if let Some(instruction) = format_instruction(rf, "Anthropic")? {
            system.push(instruction);
        }
    }
    let temperature = req.temperature.or(t.defaults.temperature);
    if let Some(v) = temperature.filter(|v| !(0.0..=1.0).contains(v)) {
        return terr(format!(
            "temperature: {v} is out of range for Anthropic (0 to 1)"
        ));
    }
    let body = RequestOut {
        model: t.model,
        max_tokens: req
            .max_tokens
            .or(t.defaults.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages: turns,
        temperature,
        top_p: req.top_p.or(t.defaults.top_p),
        stop_sequences: &req.stop,
        metadata: req.user.as_deref().map(|user_id| MetadataOut { user_id }),
        stream: req.stream,
        tools: req.tools.iter().map(ToolOut::from).collect(),
        tool_choice: choice_out(req),
    };
    Ok(Outgoing {
        path: "/v1/messages".to_string(),
        body: serde_json::to_vec(&body).unwrap_or_default(),
        headers: vec![("anthropic-version".to_string(), API_VERSION.to_string())],
    })
}

/// The messages as Anthropic turns: system text set apart (into `system`), consecutive
/// same-role turns merged, a user turn's tool results before its other content.
fn turns<'a>(
    req: &'a ChatRequest,
    system: &mut Vec<String>,
) -> Result<Vec<TurnOut<'a>>, TranslateError> {
    let mut turns: Vec<TurnOut> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let path = || format!("messages[{i}]");
        if m.role == Role::System {
            if m.content.iter().any(|p| matches!(p, Part::Image { .. })) {
                return Err(TranslateError(format!(
                    "{}.content: images are not allowed in system messages for Anthropic",
                    path()
                )));
            }
            let text = text_of(&m.content);
            if !text.is_empty() {
                system.push(text);
            }
            continue;
        }
        let (role, blocks) = turn(m, path)?;
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(TurnOut {
                role,
                content: blocks,
            }),
        }
    }
    // In a user turn, tool results must come before any other content.
    for turn in &mut turns {
        if turn.role == "user" {
            turn.content
                .sort_by_key(|b| !matches!(b, BlockOut::ToolResult { .. }));
        }
    }
    Ok(turns)
}

/// A user, assistant or tool message as the role and blocks of an Anthropic turn (tool
/// calls become `tool_use` blocks, a tool message a user turn's `tool_result`).
fn turn(
    m: &Message,
    path: impl Fn() -> String,
) -> Result<(&'static str, Vec<BlockOut<'_>>), TranslateError> {
    match m.role {
        // System text is set apart by the caller: no blocks.
        Role::System => Ok(("user", Vec::new())),
        Role::User => Ok(("user", content_blocks(&m.content, path)?)),
        Role::Assistant => {
            let mut blocks = content_blocks(&m.content, &path)?;
            for (j, c) in m.tool_calls.iter().enumerate() {
                let input = parse_arguments(&c.arguments).map_err(|e| {
                    TranslateError(format!(
                        "{}.tool_calls[{j}].function.arguments: {e}",
                        path()
                    ))
                })?;
                blocks.push(BlockOut::ToolUse {
                    id: &c.id,
                    name: &c.name,
                    input,
                });
            }
            Ok(("assistant", blocks))
        }
        Role::Tool => {
            let Some(id) = &m.tool_call_id else {
                return Err(TranslateError(format!(
                    "{}.tool_call_id: missing for a tool message",
                    path()
                )));
            };
            let content = if m.content.iter().all(|p| matches!(p, Part::Text(_))) {
                ResultOut::Text(text_of(&m.content))
            } else {
                ResultOut::Blocks(content_blocks(&m.content, path)?)
            };
            Ok((
                "user",
                vec![BlockOut::ToolResult {
                    tool_use_id: id,
                    content,
                }],
            ))
        }
    }
}

/// `tool_choice` (with `parallel_tool_calls: false` as `disable_parallel_tool_use`).
fn choice_out(req: &ChatRequest) -> Option<ChoiceOut<'_>> {
    let no_parallel = req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let choice = |kind, name| ChoiceOut {
        kind,
        name,
        disable_parallel_tool_use: no_parallel,
    };
    match &req.tool_choice {
        Some(ToolChoice::Auto) => Some(choice("auto", None)),
        Some(ToolChoice::None) => Some(choice("none", None)),
        Some(ToolChoice::Required) => Some(choice("any", None)),
        Some(ToolChoice::Function(n)) => Some(choice("tool", Some(n.as_str()))),
        None if no_parallel && !req.tools.is_empty() => Some(choice("auto", None)),
        None => None,
    }
}

// The request body is written from typed views borrowing the canonical request (no `Value`
// tree), keys in the order of Anthropic's API reference.

#[derive(Serialize)]
struct RequestOut<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<TurnOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataOut<'a>>,
    #[serde(skip_serializing_if = "is_false")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ChoiceOut<'a>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct TurnOut<'a> {
    role: &'static str,
    content: Vec<BlockOut<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageOut<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: ResultOut<'a>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResultOut<'a> {
    Text(String),
    Blocks(Vec<BlockOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageOut<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct ToolOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    /// The tool's JSON Schema; a tool without one takes an empty object.
    input_schema: SchemaOut<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum SchemaOut<'a> {
    Given(&'a Value),
    Empty {
        #[serde(rename = "type")]
        kind: &'static str,
        properties: Map<String, Value>,
    },
}

impl<'a> From<&'a Tool> for ToolOut<'a> {
    fn from(tool: &'a Tool) -> Self {
        Self {
            name: &tool.name,
            description: tool.description.as_deref(),
            input_schema: if tool.parameters.is_null() {
                SchemaOut::Empty {
                    kind: "object",
                    properties: Map::new(),
                }
            } else {
                SchemaOut::Given(&tool.parameters)
            },
        }
    }
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    disable_parallel_tool_use: bool,
}

fn parse_arguments(args: &str) -> Result<Value, String> {
    if args.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(v) => Err(format!("expected a JSON object, got {}", type_name(&v))),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

/// Text and image blocks (empty texts are dropped: Anthropic rejects them).
fn content_blocks(
    parts: &[Part],
    path: impl Fn() -> String,
) -> Result<Vec<BlockOut<'_>>, TranslateError> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        match p {
            Part::Text(t) if t.is_empty() => {}
            Part::Text(t) => out.push(BlockOut::Text { text: t }),
            Part::Image { url, .. } => out.push(BlockOut::Image {
                source: image_source(url).map_err(|e| {
                    TranslateError(format!("{}.content[{i}].image_url.url: {e}", path()))
                })?,
            }),
        }
    }
    Ok(out)
}

fn image_source(url: &str) -> Result<ImageOut<'_>, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err("malformed data URL (no comma)".into());
        };
        let Some(media_type) = meta.strip_suffix(";base64") else {
            return Err("data URL must be base64-encoded".into());
        };
        if !matches!(
            media_type,
            "image/jpeg" | "image/png" | "image/gif" | "image/webp"
        ) {
            return Err(format!(
                "image type \"{media_type}\" is not supported by Anthropic (jpeg, png, gif, webp)"
            ));
        }
        return Ok(ImageOut::Base64 { media_type, data });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(ImageOut::Url { url });
    }
    Err("expected an http(s) or data: URL".into())
}

// ---------------------------------------------------------------------------------------------
// Provider: response and errors
// ---------------------------------------------------------------------------------------------

fn stop_from(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn
        _ => FinishReason::Stop,
    }
}

fn stop_to(r: Option<FinishReason>) -> &'static str {
    match r {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls) => "tool_use",
        Some(FinishReason::ContentFilter) => "refusal",
        Some(FinishReason::Stop) | None => "end_turn",
    }
}

/// Anthropic usage → canonical: prompt = input + cache reads + cache writes; cached = reads;
/// cache writes kept as their own figure.
fn usage_from(u: &Value) -> Usage {
    let read = num(u.get("cache_read_input_tokens"));
    let write = num(u.get("cache_creation_input_tokens"));
    Usage {
        prompt_tokens: num(u.get("input_tokens"))
            .saturating_add(read)
            .saturating_add(write),
        completion_tokens: num(u.get("output_tokens")),
        cached_tokens: read,
        reasoning_tokens: 0,
        cache_write_tokens: write,
    }
}

fn invalid_upstream(message: String) -> ProviderError {
    ProviderError {
        status: 502,
        kind: "server_error".into(),
        message,
        code: None,
    }
}

/// Decodes a non-streaming Anthropic message (non-2xx statuses become errors).
/// `created` is 0: Anthropic does not report it (the caller may set it).
pub fn decode_response(status: u16, body: &[u8]) -> Result<ChatResponse, ProviderError> {
    if !(200..300).contains(&status) {
        return Err(decode_error(status, body));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        invalid_upstream(format!(
            "provider returned invalid JSON: {e}: {}",
            excerpt(body)
        ))
    })?;
    if v.get("type").and_then(Value::as_str) == Some("error") {
        return Err(decode_error(502, body));
    }
    let Some(content) = v.get("content").and_then(Value::as_array) else {
        return Err(invalid_upstream(
            "provider response has no \"content\" array".into(),
        ));
    };
    let mut message = Message {
        role: Role::Assistant,
        content: Vec::new(),
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    };
    for b in content {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    message.content.push(Part::Text(t.to_string()));
                }
            }
            Some("tool_use") => message.tool_calls.push(ToolCall {
                id: b
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                name: b
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                arguments: b
                    .get("input")
                    .map_or_else(|| "{}".to_string(), Value::to_string),
            }),
            // thinking, redacted_thinking, server tool blocks: not part of the OpenAI shape.
            _ => {}
        }
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(ChatResponse {
        id: s("id"),
        model: s("model"),
        created: 0,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: v.get("stop_reason").and_then(Value::as_str).map(stop_from),
            refusal: None,
        }],
        usage: v.get("usage").filter(|u| u.is_object()).map(usage_from),
    })
}

/// Maps an Anthropic error type (or, lacking one, the HTTP status) to the client's status and
/// OpenAI error kind. See the module documentation for the reasoning.
fn map_error(etype: Option<&str>, status: u16) -> (u16, &'static str) {
    match etype {
        Some("invalid_request_error") => (400, "invalid_request_error"),
        Some("authentication_error") | Some("permission_error") => (502, "server_error"),
        Some("billing_error") => (502, "server_error"),
        Some("not_found_error") => (404, "invalid_request_error"),
        Some("request_too_large") => (413, "invalid_request_error"),
        Some("rate_limit_error") => (429, "rate_limit_error"),
        Some("api_error") => (502, "server_error"),
        Some("overloaded_error") => (503, "server_error"),
        Some("timeout_error") => (504, "server_error"),
        _ => match status {
            400 | 404 | 413 | 422 => (status, "invalid_request_error"),
            401..=403 => (502, "server_error"),
            429 => (429, "rate_limit_error"),
            500 => (502, "server_error"),
            503 | 529 => (503, "server_error"),
            504 => (504, "server_error"),
            _ => (502, "server_error"),
        },
    }
}

/// Maps an Anthropic error answer (`{"type":"error","error":{"type","message"}}`).
///
/// | Anthropic | client status | kind |
/// |---|---|---|
/// | invalid_request_error (400) | 400 | invalid_request_error |
/// | authentication_error (401), permission_error (403) | 502 | server_error ("provider rejected the gateway's credentials: ...") |
/// | billing_error (402) | 502 | server_error |
/// | not_found_error (404) | 404 | invalid_request_error |
/// | request_too_large (413) | 413 | invalid_request_error |
/// | rate_limit_error (429) | 429 | rate_limit_error |
/// | api_error (500) | 502 | server_error |
/// | overloaded_error (529) | 503 | server_error |
/// | timeout_error (504) | 504 | server_error |
pub fn decode_error(status: u16, body: &[u8]) -> ProviderError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let e = v.as_ref().and_then(|v| v.get("error"));
    let etype = e.and_then(|e| e.get("type")).and_then(Value::as_str);
    let msg = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            if body.iter().all(u8::is_ascii_whitespace) {
                format!("provider returned HTTP {status} with an empty body")
            } else {
                format!("provider returned HTTP {status}: {}", excerpt(body))
            }
        });
    let (st, kind) = map_error(etype, status);
    let gateway_auth = matches!(
        etype,
        Some("authentication_error") | Some("permission_error")
    ) || (etype.is_none() && matches!(status, 401 | 403));
    let message = if gateway_auth {
        format!("provider rejected the gateway's credentials: {msg}")
    } else {
        msg
    };
    ProviderError {
        status: st,
        kind: kind.to_string(),
        message,
        code: etype.map(str::to_string),
    }
}

// ---------------------------------------------------------------------------------------------
// Provider: stream
// ---------------------------------------------------------------------------------------------

/// Decodes an Anthropic Messages SSE stream.
#[derive(Debug, Default)]
pub struct Decoder {
    sse: SseParser,
    started: bool,
    done: bool,
    failed: bool,
    usage: Usage,
    /// Content block index → tool call number.
    tool_blocks: Vec<(u64, u32)>,
    next_call: u32,
}

pub fn stream_decoder() -> Decoder {
    Decoder::default()
}

impl StreamDecoder for Decoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) {
        let mut events = Vec::new();
        self.sse.feed(bytes, &mut events);
        for e in events {
            self.on_event(e.event.as_deref(), &e.data, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let mut events = Vec::new();
        self.sse.finish(&mut events);
        for e in events {
            self.on_event(e.event.as_deref(), &e.data, out);
        }
        if self.started && !self.done && !self.failed {
            self.failed = true;
            out.push(StreamEvent::Error(invalid_upstream(
                "provider stream ended before message_stop".into(),
            )));
        }
    }
}

impl Decoder {
    fn on_event(&mut self, name: Option<&str>, data: &str, out: &mut Vec<StreamEvent>) {
        if self.done || self.failed || data.trim().is_empty() {
            return;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                self.failed = true;
                out.push(StreamEvent::Error(invalid_upstream(format!(
                    "provider sent an invalid stream event: {e}: {}",
                    excerpt(data.as_bytes())
                ))));
                return;
            }
        };
        let kind = v.get("type").and_then(Value::as_str).or(name).unwrap_or("");
        match kind {
            "message_start" => self.message_start(&v, out),
            "content_block_start" => self.block_start(&v, out),
            "content_block_delta" => self.block_delta(&v, out),
            "message_delta" => self.message_delta(&v, out),
            "message_stop" => self.done = true,
            "error" => {
                self.failed = true;
                out.push(StreamEvent::Error(stream_error(&v, data)));
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
    }

    /// `message_start`: the message id and model, and the first usage (input tokens).
    fn message_start(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let m = v.get("message");
        let s = |k: &str| {
            m.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if let Some(u) = m.and_then(|m| m.get("usage")) {
            self.usage = usage_from(u);
        }
        if !self.started {
            self.started = true;
            let id = s("id");
            out.push(StreamEvent::Start {
                id: if id.is_empty() {
                    "msg_tollgate".into()
                } else {
                    id
                },
                model: s("model"),
            });
        }
    }

    /// `content_block_start`: a tool call begins (its id and name), or text comes whole.
    fn block_start(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let b = v.get("content_block");
        if b.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
            let block = num(v.get("index"));
            let call = self.next_call;
            self.next_call = self.next_call.saturating_add(1);
            self.tool_blocks.push((block, call));
            let s = |k: &str| {
                b.and_then(|b| b.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            out.push(StreamEvent::ToolCallStart {
                index: 0,
                call,
                id: s("id"),
                name: s("name"),
            });
        } else if let Some(t) = b
            .and_then(|b| b.get("text"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            out.push(StreamEvent::Text {
                index: 0,
                text: t.to_string(),
            });
        }
    }

    /// `content_block_delta`: text, or a fragment of a tool call's arguments.
    fn block_delta(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let d = v.get("delta");
        let s = |k: &str| d.and_then(|d| d.get(k)).and_then(Value::as_str);
        match s("type") {
            Some("text_delta") => {
                if let Some(t) = s("text").filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Text {
                        index: 0,
                        text: t.to_string(),
                    });
                }
            }
            Some("input_json_delta") => {
                let block = num(v.get("index"));
                let call = self
                    .tool_blocks
                    .iter()
                    .find(|(b, _)| *b == block)
                    .map(|(_, c)| *c);
                if let (Some(call), Some(p)) = (call, s("partial_json").filter(|p| !p.is_empty())) {
                    out.push(StreamEvent::ToolCallArgs {
                        index: 0,
                        call,
                        arguments: p.to_string(),
                    });
                }
            }
            // thinking_delta, signature_delta, citations_delta: no OpenAI equivalent.
            _ => {}
        }
    }

    /// `message_delta`: the stop reason, and the usage so far.
    fn message_delta(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        if let Some(r) = v
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str)
        {
            out.push(StreamEvent::Finish {
                index: 0,
                reason: stop_from(r),
            });
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            // Cumulative counts; input fields appear here only in newer API versions.
            if u.get("input_tokens").and_then(count).is_some() {
                let out_tokens = self.usage.completion_tokens;
                self.usage = usage_from(u);
                if u.get("output_tokens").is_none() {
                    self.usage.completion_tokens = out_tokens;
                }
            } else if let Some(o) = u.get("output_tokens").and_then(count) {
                self.usage.completion_tokens = o;
            }
            out.push(StreamEvent::Usage(self.usage));
        }
    }
}

/// An `error` event of the stream, with the status Anthropic's error type stands for.
fn stream_error(v: &Value, data: &str) -> ProviderError {
    let etype = v
        .get("error")
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str);
    let (status, _) = map_error(etype, 500);
    let mut e = decode_error(500, data.as_bytes());
    e.status = status;
    e
}

// ---------------------------------------------------------------------------------------------
// Front door: request
// ---------------------------------------------------------------------------------------------

/// Parses an Anthropic Messages request body into the canonical request.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ClientError> {
    parse_object(&parse_body(body)?)
}

/// Reads an Anthropic Messages request already parsed as JSON.
pub fn parse_value(doc: Value) -> Result<ChatRequest, ClientError> {
    parse_object(&object(doc)?)
}

fn parse_object(obj: &Map<String, Value>) -> Result<ChatRequest, ClientError> {
    let mut r = ChatRequest {
        model: req_str(obj, "model", "")?.to_string(),
        ..ChatRequest::default()
    };
    if r.model.is_empty() {
        return Err(cerr("model", "must not be empty"));
    }
    r.max_tokens = Some(
        opt_max_tokens(obj, "max_tokens", "")?
            .ok_or_else(|| cerr("max_tokens", "missing required field"))?,
    );
    let messages = as_arr(req(obj, "messages", "")?, "messages")?;
    if let Some(sys) = field(obj, "system") {
        r.messages
            .push(msg(Role::System, vec![Part::Text(system(sys)?)]));
    }
    if messages.is_empty() {
        return Err(cerr("messages", "must contain at least one message"));
    }
    for (i, m) in messages.iter().enumerate() {
        parse_turn(m, &at("messages", i), &mut r.messages)?;
    }
    if let Some(tools) = field(obj, "tools") {
        for (i, t) in as_arr(tools, "tools")?.iter().enumerate() {
            r.tools.push(tool(t, &at("tools", i))?);
        }
    }
    if let Some(tc) = field(obj, "tool_choice") {
        let tco = as_obj(tc, "tool_choice")?;
        r.tool_choice = Some(tool_choice(tco)?);
        if opt_bool(tco, "disable_parallel_tool_use", "tool_choice")? == Some(true) {
            r.extra.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    r.temperature = opt_f64(obj, "temperature", "")?;
    r.top_p = opt_f64(obj, "top_p", "")?;
    if let Some(ss) = field(obj, "stop_sequences") {
        for (i, s) in as_arr(ss, "stop_sequences")?.iter().enumerate() {
            r.stop
                .push(as_str(s, &at("stop_sequences", i))?.to_string());
        }
    }
    if let Some(md) = field(obj, "metadata") {
        r.user = opt_str(as_obj(md, "metadata")?, "user_id", "metadata")?.map(str::to_string);
    }
    r.stream = opt_bool(obj, "stream", "")?.unwrap_or(false);
    // top_k, thinking, service_tier, ...: Anthropic-only knobs without an OpenAI equivalent.
    Ok(r)
}

/// `system`: a string or an array of text blocks (joined by blank lines).
fn system(sys: &Value) -> Result<String, ClientError> {
    match sys {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                let p = at("system", i);
                let bo = as_obj(b, &p)?;
                let t = req_str(bo, "type", &p)?;
                if t != "text" {
                    return Err(cerr(
                        &join(&p, "type"),
                        format!("expected a text block, got \"{t}\""),
                    ));
                }
                parts.push(req_str(bo, "text", &p)?.to_string());
            }
            Ok(parts.join("\n\n"))
        }
        other => Err(cerr(
            "system",
            format!(
                "expected a string or an array of text blocks, got {}",
                type_name(other)
            ),
        )),
    }
}

/// One `tools[i]`: a custom tool (server tools are refused).
fn tool(t: &Value, p: &str) -> Result<Tool, ClientError> {
    let to = as_obj(t, p)?;
    if let Some(kind) = opt_str(to, "type", p)? {
        if kind != "custom" {
            return Err(cerr(
                &join(p, "type"),
                format!("server tool \"{kind}\" is not supported by this gateway"),
            ));
        }
    }
    let schema = req(to, "input_schema", p)?;
    as_obj(schema, &join(p, "input_schema"))?;
    Ok(Tool {
        name: req_str(to, "name", p)?.to_string(),
        description: opt_str(to, "description", p)?.map(str::to_string),
        parameters: schema.clone(),
    })
}

/// `tool_choice`: auto, any, none, or one named tool.
fn tool_choice(tco: &Map<String, Value>) -> Result<ToolChoice, ClientError> {
    Ok(match req_str(tco, "type", "tool_choice")? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => ToolChoice::Function(req_str(tco, "name", "tool_choice")?.to_string()),
        other => {
            return Err(cerr(
                "tool_choice.type",
                format!("unknown tool choice type \"{other}\" (expected auto, any, tool or none)"),
            ))
        }
    })
}

fn msg(role: Role, content: Vec<Part>) -> Message {
    Message {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    }
}

/// A user turn's `tool_result` block as a tool message (`is_error` prefixes `Error: `).
fn tool_result(bo: &Map<String, Value>, p: &str) -> Result<Message, ClientError> {
    let mut t = msg(Role::Tool, Vec::new());
    t.tool_call_id = Some(req_str(bo, "tool_use_id", p)?.to_string());
    let rp = join(p, "content");
    match field(bo, "content") {
        None => {}
        Some(Value::String(s)) => t.content.push(Part::Text(s.clone())),
        Some(Value::Array(items)) => {
            for (j, it) in items.iter().enumerate() {
                let ip = at(&rp, j);
                let io = as_obj(it, &ip)?;
                match req_str(io, "type", &ip)? {
                    "text" => t
                        .content
                        .push(Part::Text(req_str(io, "text", &ip)?.to_string())),
                    "image" => t.content.push(parse_image(io, &ip)?),
                    other => {
                        return Err(cerr(
                            &join(&ip, "type"),
                            format!("unsupported tool result block type \"{other}\""),
                        ))
                    }
                }
            }
        }
        Some(other) => {
            return Err(cerr(
                &rp,
                format!(
                    "expected a string or an array of blocks, got {}",
                    type_name(other)
                ),
            ))
        }
    }
    if opt_bool(bo, "is_error", p)? == Some(true) {
        t.content.insert(0, Part::Text("Error: ".into()));
    }
    Ok(t)
}

/// One Anthropic turn → canonical messages (a user turn's tool results become tool messages
/// placed before the turn's other content).
fn parse_turn(v: &Value, path: &str, out: &mut Vec<Message>) -> Result<(), ClientError> {
    let m = as_obj(v, path)?;
    let role = match req_str(m, "role", path)? {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(cerr(
                &join(path, "role"),
                format!("unknown role \"{other}\" (expected user or assistant)"),
            ))
        }
    };
    let cpath = join(path, "content");
    let mut main = msg(role, Vec::new());
    match req(m, "content", path)? {
        Value::String(s) => main.content.push(Part::Text(s.clone())),
        Value::Array(blocks) => {
            for (i, b) in blocks.iter().enumerate() {
                let p = at(&cpath, i);
                let bo = as_obj(b, &p)?;
                let kind = req_str(bo, "type", &p)?;
                match (kind, role) {
                    ("text", _) => main
                        .content
                        .push(Part::Text(req_str(bo, "text", &p)?.to_string())),
                    ("image", _) => main.content.push(parse_image(bo, &p)?),
                    ("tool_use", Role::Assistant) => {
                        let input = req(bo, "input", &p)?;
                        as_obj(input, &join(&p, "input"))?;
                        main.tool_calls.push(ToolCall {
                            id: req_str(bo, "id", &p)?.to_string(),
                            name: req_str(bo, "name", &p)?.to_string(),
                            arguments: input.to_string(),
                        });
                    }
                    ("tool_result", Role::User) => out.push(tool_result(bo, &p)?),
                    ("thinking" | "redacted_thinking", Role::Assistant) => {}
                    ("tool_use" | "tool_result", _) => {
                        return Err(cerr(
                            &join(&p, "type"),
                            format!(
                                "\"{kind}\" blocks are not allowed in {} messages",
                                if role == Role::User {
                                    "user"
                                } else {
                                    "assistant"
                                }
                            ),
                        ))
                    }
                    (other, _) => {
                        return Err(cerr(
                            &join(&p, "type"),
                            format!("unknown content block type \"{other}\""),
                        ))
                    }
                }
            }
        }
        other => {
            return Err(cerr(
                &cpath,
                format!(
                    "expected a string or an array of content blocks, got {}",
                    type_name(other)
                ),
            ))
        }
    }
    if !main.content.is_empty() || !main.tool_calls.is_empty() {
        out.push(main);
    }
    Ok(())
}

fn parse_image(b: &Map<String, Value>, path: &str) -> Result<Part, ClientError> {
    let sp = join(path, "source");
    let src = as_obj(req(b, "source", path)?, &sp)?;
    let url = match req_str(src, "type", &sp)? {
        "base64" => format!(
            "data:{};base64,{}",
            req_str(src, "media_type", &sp)?,
            req_str(src, "data", &sp)?
        ),
        "url" => req_str(src, "url", &sp)?.to_string(),
        other => {
            return Err(cerr(
                &join(&sp, "type"),
                format!("unsupported image source type \"{other}\" (expected base64 or url)"),
            ))
        }
    };
    Ok(Part::Image { url, detail: None })
}

// ---------------------------------------------------------------------------------------------
// Front door: response, stream and errors
// ---------------------------------------------------------------------------------------------

/// Canonical usage → Anthropic's: `input_tokens` excludes cache reads and writes.
fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(u.cached_tokens).saturating_sub(u.cache_write_tokens),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": u.completion_tokens,
    })
}

fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else if id.is_empty() {
        "msg_tollgate".to_string()
    } else {
        format!("msg_{id}")
    }
}

/// Tool arguments as an `input` object ({} when the model produced invalid JSON).
fn input_of(arguments: &str) -> Value {
    parse_arguments(arguments).unwrap_or_else(|_| json!({}))
}

/// Encodes a canonical response as an Anthropic `message` (first choice); `model` is what the
/// client asked for.
pub fn encode_response(resp: &ChatResponse, model: &str) -> Vec<u8> {
    let choice = resp
        .choices
        .iter()
        .find(|c| c.index == 0)
        .or(resp.choices.first());
    let mut content = Vec::new();
    if let Some(c) = choice {
        let text = text_of(&c.message.content);
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for tc in &c.message.tool_calls {
            content.push(json!({"type": "tool_use", "id": tc.id, "name": tc.name, "input": input_of(&tc.arguments)}));
        }
        // A refusal (OpenAI `message.refusal`): its text as a text block, and `refusal` as the
        // stop reason, Anthropic's own mark of a declined answer.
        if let Some(r) = &c.refusal {
            content.push(json!({"type": "text", "text": r}));
        }
    }
    let stop = match choice {
        Some(c) if c.refusal.is_some() => "refusal",
        _ => stop_to(choice.and_then(|c| c.finish_reason)),
    };
    json!({
        "id": message_id(&resp.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage_json(&resp.usage.unwrap_or_default()),
    })
    .to_string()
    .into_bytes()
}

/// `content_block_delta`, the event of every streamed piece (typed: no `Value` per piece).
#[derive(Serialize)]
struct BlockDeltaOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: DeltaOut<'a>,
}

impl<'a> BlockDeltaOut<'a> {
    fn new(index: u32, delta: DeltaOut<'a>) -> Self {
        Self {
            kind: "content_block_delta",
            index,
            delta,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaOut<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Tool(u32),
}

/// Encodes canonical stream events as Anthropic Messages SSE (choice 0 only).
///
/// `message_delta` (stop reason and usage) is written at [`StreamEncoder::finish`], because
/// OpenAI-style upstreams report usage after the finish reason.
#[derive(Debug)]
pub struct StreamEncoder {
    model: String,
    started: bool,
    ended: bool,
    /// The open block: (Anthropic block index, kind).
    open: Option<(u32, Block)>,
    next_block: u32,
    /// Tool call number → block index.
    tool_blocks: Vec<(u32, u32)>,
    stop: Option<FinishReason>,
    /// Refusal text was streamed: the stop reason is `refusal`.
    refused: bool,
    usage: Usage,
}

impl StreamEncoder {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            started: false,
            ended: false,
            open: None,
            next_block: 0,
            tool_blocks: Vec::new(),
            stop: None,
            refused: false,
            usage: Usage::default(),
        }
    }

    fn emit(out: &mut Vec<u8>, name: &str, data: impl Serialize) {
        write_json_event(out, Some(name), &data);
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        Self::emit(
            out,
            "message_start",
            json!({"type": "message_start", "message": {
                "id": message_id(id), "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((i, _)) = self.open.take() {
            Self::emit(
                out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            );
        }
    }

    fn open_block(&mut self, kind: Block, block: Value, out: &mut Vec<u8>) -> u32 {
        self.close(out);
        let i = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        self.open = Some((i, kind));
        Self::emit(
            out,
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": block}),
        );
        i
    }

    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match ev {
            StreamEvent::Start { id, .. } => self.start(id, out),
            StreamEvent::Text { index: 0, text } | StreamEvent::Refusal { index: 0, text } => {
                // A refusal is text to Anthropic's clients, marked by the stop reason.
                self.refused |= matches!(ev, StreamEvent::Refusal { .. });
                self.start("", out);
                let i = match self.open {
                    Some((i, Block::Text)) => i,
                    _ => self.open_block(Block::Text, json!({"type": "text", "text": ""}), out),
                };
                let delta = DeltaOut::TextDelta { text };
                Self::emit(out, "content_block_delta", BlockDeltaOut::new(i, delta));
            }
            StreamEvent::ToolCallStart {
                index: 0,
                call,
                id,
                name,
            } => {
                self.start("", out);
                let i = self.open_block(
                    Block::Tool(*call),
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
                self.tool_blocks.push((*call, i));
            }
            StreamEvent::ToolCallArgs {
                index: 0,
                call,
                arguments,
            } => {
                if let Some((_, i)) = self.tool_blocks.iter().rev().find(|(c, _)| c == call) {
                    let delta = DeltaOut::InputJsonDelta {
                        partial_json: arguments,
                    };
                    Self::emit(out, "content_block_delta", BlockDeltaOut::new(*i, delta));
                }
            }
            StreamEvent::Finish { index: 0, reason } => self.stop = Some(*reason),
            StreamEvent::Usage(u) => self.usage = *u,
            StreamEvent::Error(e) => {
                self.ended = true;
                Self::emit(out, "error", error_value(e));
            }
            // Other choices: the Messages API has exactly one.
            _ => {}
        }
    }

    /// Ends the message: closes the open block, then `message_delta` and `message_stop`.
    /// Writes nothing after an error event.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.start("", out);
        self.close(out);
        let u = &self.usage;
        Self::emit(
            out,
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": if self.refused { "refusal" } else { stop_to(self.stop) }, "stop_sequence": null},
                   "usage": usage_json(u)}),
        );
        Self::emit(out, "message_stop", json!({"type": "message_stop"}));
    }
}

fn anthropic_type(e: &ProviderError) -> &'static str {
    const KNOWN: &[&str] = &[
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    ];
    if let Some(k) = e
        .code
        .as_deref()
        .and_then(|c| KNOWN.iter().find(|k| **k == c))
    {
        return k;
    }
    match e.status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if (400..500).contains(&s) => "invalid_request_error",
        _ => "api_error",
    }
}

fn error_value(e: &ProviderError) -> Value {
    json!({"type": "error", "error": {"type": anthropic_type(e), "message": e.message}})
}

/// A provider error in Anthropic's error shape (send with `e.status`).
pub fn error_body(e: &ProviderError) -> Vec<u8> {
    serde_json::to_vec(&error_value(e)).unwrap_or_default()
}

/// A provider or gateway error as Anthropic's API answers it: its shape, and 529 for
/// `overloaded_error` (Anthropic's own status for it; the SDK raises `OverloadedError`).
pub fn error_reply(e: &ProviderError) -> (u16, Vec<u8>) {
    let status = if anthropic_type(e) == "overloaded_error" {
        OVERLOADED
    } else {
        e.status
    };
    (status, error_body(e))
}

/// Anthropic's status for `overloaded_error`.
pub const OVERLOADED: u16 = 529;

/// A client error (from [`parse_request`]) in Anthropic's error shape (send with 400).
pub fn client_error_body(e: &ClientError) -> Vec<u8> {
    json!({"type": "error", "error": {"type": "invalid_request_error", "message": e.message}})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
