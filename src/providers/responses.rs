//! OpenAI Responses API (`POST /v1/responses`): a front door, and the upstream API of OpenAI
//! and Azure backends for Responses clients.
//!
//! Front door: [`parse_request`] turns a Responses request into the canonical
//! [`ChatRequest`] plus [`ResponsesExtras`] (what only the Responses API has: stateful fields,
//! hosted tools, the client's own spellings to echo back); [`encode_response`] and
//! [`StreamEncoder`] write canonical answers and events as Responses output items and the
//! Responses event sequence (`response.created`, `response.in_progress`,
//! `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`,
//! `response.function_call_arguments.delta`, the `…done` events, `response.completed` with the
//! usage), with sequence numbers, item ids, `output_index` and `content_index`, as the
//! `openai` SDK's stream accumulator checks them. Errors are OpenAI's error shape.
//!
//! Upstream (OpenAI, Azure): [`encode_upstream`] writes the canonical request back as a
//! Responses request, with the client's stateful fields and hosted tools as sent (they go
//! through untouched to OpenAI backends); [`decode_response`] and [`Decoder`] read Responses
//! answers and streams into the canonical form (output items the canonical form has no word
//! for, a `web_search_call` say, travel as [`Part::Native`] / [`StreamEvent::Native`] and reach
//! Responses clients as they were).
//!
//! Other providers: [`ResponsesExtras::needs_openai`] names the first field that only an
//! OpenAI backend can honour (`previous_response_id`, `conversation`, `background`,
//! `store: true`, a stored `prompt`, hosted tools); the request is refused with it, before
//! anything reaches the provider.
//!
//! Event shapes: the `openai` SDK's types (`openai/types/responses/*_event.py`, 3.57) and the
//! accumulator in `openai/lib/streaming/responses/_responses.py`; recorded streams in
//! `tests/fixtures/responses/`.

use serde_json::{json, Map, Value};

use super::json::{
    as_arr, as_obj, at, cerr, excerpt, field, join, num, object, opt_bool, opt_f64, opt_max_tokens,
    opt_str, parse_body, req, req_str, type_name, ClientError,
};
use super::model::{
    CachePoint, ChatRequest, ChatResponse, Choice, DocSource, Document, FinishReason, Message,
    Native, NativeApi, Origin, Part, ProviderError, Reasoning, ReasoningConfig, Role, StreamEvent,
    Tool, ToolCall, ToolChoice, Usage,
};
use super::openai::decode_error;
use super::{StreamDecoder, TranslateError};
use crate::stream::{write_json_event, SseParser};

/// What a Responses request holds beyond the canonical chat request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponsesExtras {
    /// Top-level fields the canonical request does not type, as sent: `previous_response_id`,
    /// `store`, `background`, `conversation`, `include`, `metadata`, `prompt`, `truncation`,
    /// `service_tier`, `prompt_cache_key`, `safety_identifier`, `max_tool_calls`, ... Sent to
    /// OpenAI backends verbatim; see [`ResponsesExtras::needs_openai`] for the others.
    pub fields: Map<String, Value>,
    /// Hosted tools (`web_search`, `file_search`, `code_interpreter`, `mcp`, `custom`, ...)
    /// with their JSON path, as sent: only OpenAI runs them.
    pub hosted_tools: Vec<(String, Value)>,
    /// The client's `tool_choice`, `text`, `reasoning` and `tools`, echoed in the answer.
    pub tool_choice: Option<Value>,
    pub text: Option<Value>,
    pub reasoning: Option<Value>,
    pub tools: Vec<Value>,
    /// `instructions` as sent (echoed; the canonical request has it as a system message).
    pub instructions: Option<String>,
}

/// Fields whose meaning lives in OpenAI's storage, with the value that needs it.
const STATEFUL: &[&str] = &[
    "previous_response_id",
    "conversation",
    "background",
    "store",
    "prompt",
];

impl ResponsesExtras {
    /// The first thing of the request only an OpenAI backend can honour, as `(param,
    /// message)`: a stateful field (`previous_response_id`, `conversation`, `prompt`,
    /// `background: true`, `store: true`) or a hosted tool. `None`: any provider will do.
    pub fn needs_openai(&self) -> Option<(String, String)> {
        for key in STATEFUL {
            let Some(v) = self.fields.get(*key) else {
                continue;
            };
            let set = match v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if set {
                return Some((
                    key.to_string(),
                    format!(
                        "{key}: stored Responses state (previous responses, conversations, background runs, stored prompts, store: true) needs an OpenAI backend; this model is served by another provider"
                    ),
                ));
            }
        }
        self.hosted_tools.first().map(|(path, t)| {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("?");
            (
                format!("{path}.type"),
                format!(
                    "{path}.type: the hosted tool \"{kind}\" runs only on OpenAI backends; this model is served by another provider"
                ),
            )
        })
    }

    /// A field the client sent, for echoing.
    fn echo(&self, key: &str) -> Value {
        self.fields.get(key).cloned().unwrap_or(Value::Null)
    }
}

// ---------------------------------------------------------------------------------------------
// Front door: request
// ---------------------------------------------------------------------------------------------

/// Top-level fields the door types.
const TYPED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "text",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "user",
];

/// Parses a Responses request body into the canonical request and what only Responses has.
pub fn parse_request(body: &[u8]) -> Result<(ChatRequest, ResponsesExtras), ClientError> {
    parse_object(parse_body(body)?)
}

/// Reads a Responses request already parsed as JSON.
pub fn parse_value(doc: Value) -> Result<(ChatRequest, ResponsesExtras), ClientError> {
    parse_object(object(doc)?)
}

fn parse_object(obj: Map<String, Value>) -> Result<(ChatRequest, ResponsesExtras), ClientError> {
    let mut r = ChatRequest {
        model: req_str(&obj, "model", "")?.to_string(),
        ..ChatRequest::default()
    };
    if r.model.is_empty() {
        return Err(cerr("model", "must not be empty"));
    }
    let mut ext = ResponsesExtras::default();
    if let Some(i) = opt_str(&obj, "instructions", "")? {
        if !i.is_empty() {
            r.messages
                .push(message(Role::System, vec![Part::Text(i.to_string())]));
        }
        ext.instructions = Some(i.to_string());
    }
    input(req(&obj, "input", "")?, &mut r.messages)?;
    if let Some(tools) = field(&obj, "tools") {
        for (i, t) in as_arr(tools, "tools")?.iter().enumerate() {
            let p = at("tools", i);
            ext.tools.push(t.clone());
            match tool(t, &p)? {
                Some(tool) => r.tools.push(tool),
                None => ext.hosted_tools.push((p, t.clone())),
            }
        }
    }
    if let Some(tc) = field(&obj, "tool_choice") {
        r.tool_choice = Some(parse_tool_choice(tc)?);
        ext.tool_choice = Some(tc.clone());
    }
    if let Some(text) = field(&obj, "text") {
        let to = as_obj(text, "text")?;
        if let Some(f) = field(to, "format") {
            r.response_format = parse_format(as_obj(f, "text.format")?)?;
        }
        ext.text = Some(text.clone());
    }
    if let Some(rs) = field(&obj, "reasoning") {
        r.reasoning = reasoning_config(as_obj(rs, "reasoning")?)?;
        ext.reasoning = Some(rs.clone());
    }
    sampling(&obj, &mut r)?;
    // Moved, not copied: the client's document was parsed once and is not needed after this.
    for (k, v) in obj {
        if !TYPED.contains(&k.as_str()) {
            ext.fields.insert(k, v);
        }
    }
    Ok((r, ext))
}

/// `input`: a string (one user message) or items.
fn input(v: &Value, out: &mut Vec<Message>) -> Result<(), ClientError> {
    match v {
        Value::String(s) => out.push(message(Role::User, vec![Part::Text(s.clone())])),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(cerr("input", "must contain at least one item"));
            }
            for (i, item) in items.iter().enumerate() {
                parse_item(item, &at("input", i), out)?;
            }
        }
        other => {
            return Err(cerr(
                "input",
                format!(
                    "expected a string or an array of items, got {}",
                    type_name(other)
                ),
            ))
        }
    }
    Ok(())
}

/// One `tools[i]`: a function tool, or `None` for a hosted tool (kept as sent).
fn tool(t: &Value, p: &str) -> Result<Option<Tool>, ClientError> {
    let to = as_obj(t, p)?;
    if req_str(to, "type", p)? != "function" {
        return Ok(None);
    }
    let name = req_str(to, "name", p)?;
    if name.is_empty() {
        return Err(cerr(&join(p, "name"), "must not be empty"));
    }
    let parameters = match field(to, "parameters") {
        None => Value::Null,
        Some(v) => {
            as_obj(v, &join(p, "parameters"))?;
            v.clone()
        }
    };
    Ok(Some(Tool {
        name: name.to_string(),
        description: opt_str(to, "description", p)?.map(str::to_string),
        parameters,
        cache: None,
        strict: opt_bool(to, "strict", p)?,
    }))
}

/// `reasoning`: `effort` and `summary` (or the older `generate_summary`).
fn reasoning_config(ro: &Map<String, Value>) -> Result<Option<ReasoningConfig>, ClientError> {
    let effort = opt_str(ro, "effort", "reasoning")?.map(str::to_string);
    let summary = match opt_str(ro, "summary", "reasoning")? {
        Some(s) => Some(s.to_string()),
        None => opt_str(ro, "generate_summary", "reasoning")?.map(str::to_string),
    };
    Ok(
        (effort.is_some() || summary.is_some()).then(|| ReasoningConfig {
            effort,
            summary,
            ..ReasoningConfig::default()
        }),
    )
}

/// Sampling and streaming, `parallel_tool_calls: false`, and the shapes of `metadata` and
/// `include` (which travel on untyped).
fn sampling(obj: &Map<String, Value>, r: &mut ChatRequest) -> Result<(), ClientError> {
    r.max_tokens = opt_max_tokens(obj, "max_output_tokens", "")?;
    r.temperature = opt_f64(obj, "temperature", "")?;
    r.top_p = opt_f64(obj, "top_p", "")?;
    r.stream = opt_bool(obj, "stream", "")?.unwrap_or(false);
    r.user = opt_str(obj, "user", "")?.map(str::to_string);
    if opt_bool(obj, "parallel_tool_calls", "")? == Some(false) {
        r.extra
            .insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    if let Some(v) = field(obj, "metadata").filter(|v| !v.is_object()) {
        return Err(cerr(
            "metadata",
            format!("expected an object, got {}", type_name(v)),
        ));
    }
    if let Some(v) = field(obj, "include").filter(|v| !v.is_array()) {
        return Err(cerr(
            "include",
            format!("expected an array, got {}", type_name(v)),
        ));
    }
    Ok(())
}

fn message(role: Role, content: Vec<Part>) -> Message {
    Message {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    }
}

/// Adds parts and calls to the assistant message the next assistant item joins: the last
/// message when it is an assistant message (no tool result has answered it yet), else a new one.
fn to_assistant(out: &mut Vec<Message>, parts: Vec<Part>, calls: Vec<ToolCall>) {
    match out.last_mut() {
        Some(m) if m.role == Role::Assistant => {
            m.content.extend(parts);
            m.tool_calls.extend(calls);
        }
        _ => {
            let mut m = message(Role::Assistant, parts);
            m.tool_calls = calls;
            out.push(m);
        }
    }
}

/// One input item → canonical messages (consecutive assistant items — reasoning, a message,
/// function calls — form one assistant turn, as Chat Completions has it).
fn parse_item(v: &Value, path: &str, out: &mut Vec<Message>) -> Result<(), ClientError> {
    let o = as_obj(v, path)?;
    let kind = match opt_str(o, "type", path)? {
        Some(k) => k,
        None if field(o, "role").is_some() => "message",
        None => {
            return Err(cerr(
                &join(path, "type"),
                "missing required field (an input item needs a type, or a role for a message)",
            ))
        }
    };
    match kind {
        "message" => message_item_in(o, path, out)?,
        "function_call" => {
            let call = ToolCall {
                id: req_str(o, "call_id", path)?.to_string(),
                name: req_str(o, "name", path)?.to_string(),
                arguments: req_str(o, "arguments", path)?.to_string(),
            };
            to_assistant(out, Vec::new(), vec![call]);
        }
        "function_call_output" => {
            let mut m = message(Role::Tool, Vec::new());
            m.tool_call_id = Some(req_str(o, "call_id", path)?.to_string());
            m.content = parts(req(o, "output", path)?, &join(path, "output"), Role::User)?;
            out.push(m);
        }
        "reasoning" => {
            let r = reasoning_item_in(o, path)?;
            // Reasoning opens its assistant turn: a new one unless the last has no content yet.
            let fresh = matches!(out.last(), Some(m) if m.role == Role::Assistant && m.tool_calls.is_empty());
            if !fresh {
                out.push(message(Role::Assistant, Vec::new()));
            }
            to_assistant(out, vec![Part::Reasoning(r)], Vec::new());
        }
        other => {
            // `item_reference`, hosted-tool calls and their outputs, ...: OpenAI's own.
            let item = Part::Native(Native {
                api: NativeApi::Responses,
                kind: other.to_string(),
                path: path.to_string(),
                value: v.clone(),
            });
            to_assistant(out, vec![item], Vec::new());
        }
    }
    Ok(())
}

/// A `message` item: a user, system/developer or assistant message.
fn message_item_in(
    o: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Message>,
) -> Result<(), ClientError> {
    let role = match req_str(o, "role", path)? {
        "user" => Role::User,
        "system" | "developer" => Role::System,
        "assistant" => Role::Assistant,
        other => {
            return Err(cerr(
                &join(path, "role"),
                format!("unknown role \"{other}\" (expected user, assistant, system or developer)"),
            ))
        }
    };
    let parts = parts(req(o, "content", path)?, &join(path, "content"), role)?;
    if role == Role::Assistant {
        to_assistant(out, parts, Vec::new());
    } else {
        out.push(message(role, parts));
    }
    Ok(())
}

/// A message's `content` or a function call's `output`: a string, or content parts.
fn parts(v: &Value, cpath: &str, role: Role) -> Result<Vec<Part>, ClientError> {
    let mut parts = Vec::new();
    match v {
        Value::String(s) => parts.push(Part::Text(s.clone())),
        Value::Array(items) => {
            for (i, it) in items.iter().enumerate() {
                parse_content(it, &at(cpath, i), role, &mut parts)?;
            }
        }
        other => {
            return Err(cerr(
                cpath,
                format!(
                    "expected a string or an array of content parts, got {}",
                    type_name(other)
                ),
            ))
        }
    }
    Ok(parts)
}

/// A `reasoning` item: its summary's text, and its encrypted content as the signature (of
/// the family it came from).
fn reasoning_item_in(o: &Map<String, Value>, path: &str) -> Result<Reasoning, ClientError> {
    let spath = join(path, "summary");
    let mut text = String::new();
    for (i, s) in as_arr(req(o, "summary", path)?, &spath)?.iter().enumerate() {
        let sp = at(&spath, i);
        text.push_str(req_str(as_obj(s, &sp)?, "text", &sp)?);
    }
    let (origin, signature) = match opt_str(o, "encrypted_content", path)? {
        Some(enc) => {
            let (origin, sig) = Reasoning::from_carried(enc, Origin::OpenAi);
            (origin, Some(sig))
        }
        None => (Origin::OpenAi, None),
    };
    Ok(Reasoning {
        text,
        redacted: false,
        signature,
        origin,
        id: opt_str(o, "id", path)?.map(str::to_string),
    })
}

/// One content part of a message (or of a function call's output).
fn parse_content(
    v: &Value,
    path: &str,
    role: Role,
    out: &mut Vec<Part>,
) -> Result<(), ClientError> {
    let o = as_obj(v, path)?;
    let kind = req_str(o, "type", path)?;
    match (kind, role) {
        ("input_text", _) | ("output_text", Role::Assistant) | ("text", _) => {
            out.push(Part::Text(req_str(o, "text", path)?.to_string()));
        }
        ("refusal", Role::Assistant) => {
            out.push(Part::Text(req_str(o, "refusal", path)?.to_string()));
        }
        ("input_image", Role::User | Role::Tool) => out.push(input_image(o, path)?),
        ("input_file", Role::User | Role::Tool) => out.push(input_file(o, path)?),
        ("input_image" | "input_file", _) => {
            return Err(cerr(
                &join(path, "type"),
                format!("\"{kind}\" parts are only allowed in user messages"),
            ))
        }
        (other, _) => {
            return Err(cerr(
                &join(path, "type"),
                format!("unknown content part type \"{other}\""),
            ))
        }
    }
    // An explicit prompt-cache breakpoint after this part.
    if let Some(bp) = field(o, "prompt_cache_breakpoint") {
        let bpath = join(path, "prompt_cache_breakpoint");
        let bo = as_obj(bp, &bpath)?;
        out.push(Part::CachePoint(CachePoint {
            ttl: opt_str(bo, "ttl", &bpath)?.map(str::to_string),
        }));
    }
    Ok(())
}

/// An `input_image` part: by URL (file ids are refused).
fn input_image(o: &Map<String, Value>, path: &str) -> Result<Part, ClientError> {
    let url = match (opt_str(o, "image_url", path)?, opt_str(o, "file_id", path)?) {
        (Some(u), _) => u.to_string(),
        (None, Some(_)) => {
            return Err(cerr(
                &join(path, "file_id"),
                "images by file id are not supported by this gateway; send image_url",
            ))
        }
        (None, None) => return Err(cerr(&join(path, "image_url"), "missing required field")),
    };
    Ok(Part::Image {
        url,
        detail: opt_str(o, "detail", path)?
            .filter(|d| *d != "auto")
            .map(str::to_string),
    })
}

/// An `input_file` part: its data, URL or file id.
fn input_file(o: &Map<String, Value>, path: &str) -> Result<Part, ClientError> {
    let source = match (
        opt_str(o, "file_data", path)?,
        opt_str(o, "file_url", path)?,
        opt_str(o, "file_id", path)?,
    ) {
        (Some(d), _, _) => DocSource::Data(d.to_string()),
        (None, Some(u), _) => DocSource::Url(u.to_string()),
        (None, None, Some(id)) => DocSource::File(id.to_string()),
        (None, None, None) => {
            return Err(cerr(
                &join(path, "file_data"),
                "an input_file needs file_data, file_url or file_id",
            ))
        }
    };
    Ok(Part::Document(Document {
        source,
        title: None,
        context: None,
        filename: opt_str(o, "filename", path)?.map(str::to_string),
        citations: false,
    }))
}

fn parse_tool_choice(v: &Value) -> Result<ToolChoice, ClientError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(cerr(
                "tool_choice",
                format!("unknown value \"{other}\" (expected auto, none, required or an object)"),
            )),
        },
        Value::Object(o) => match req_str(o, "type", "tool_choice")? {
            "function" => Ok(ToolChoice::Function(
                req_str(o, "name", "tool_choice")?.to_string(),
            )),
            "allowed_tools" => Ok(match opt_str(o, "mode", "tool_choice")? {
                Some("required") => ToolChoice::Required,
                _ => ToolChoice::Auto,
            }),
            // A hosted tool: OpenAI must use it; elsewhere the request is refused for the tool.
            _ => Ok(ToolChoice::Required),
        },
        other => Err(cerr(
            "tool_choice",
            format!("expected a string or an object, got {}", type_name(other)),
        )),
    }
}

/// `text.format` → the canonical (Chat Completions) `response_format`.
fn parse_format(f: &Map<String, Value>) -> Result<Option<Value>, ClientError> {
    let p = "text.format";
    match req_str(f, "type", p)? {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let name = req_str(f, "name", p)?;
            let schema = req(f, "schema", p)?;
            as_obj(schema, "text.format.schema")?;
            let mut js = Map::new();
            js.insert("name".into(), json!(name));
            js.insert("schema".into(), schema.clone());
            if let Some(s) = opt_bool(f, "strict", p)? {
                js.insert("strict".into(), json!(s));
            }
            if let Some(d) = opt_str(f, "description", p)? {
                js.insert("description".into(), json!(d));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        other => Err(cerr(
            "text.format.type",
            format!("unknown format \"{other}\" (expected text, json_object or json_schema)"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Front door: answer
// ---------------------------------------------------------------------------------------------

/// The response id clients see: the provider's when it is already a Responses id.
fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_string()
    } else if id.is_empty() {
        "resp_tollgate".to_string()
    } else {
        format!("resp_{}", id.trim_start_matches("chatcmpl-"))
    }
}

/// Item ids derived from the response id (`msg_…`, `fc_…`, `rs_…`).
fn item_id(prefix: &str, resp_id: &str, n: usize) -> String {
    format!(
        "{prefix}_{}_{n}",
        resp_id.strip_prefix("resp_").unwrap_or(resp_id)
    )
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total(),
    })
}

/// `status` and `incomplete_details` of a finished answer.
fn status_of(reason: Option<FinishReason>) -> (&'static str, Value) {
    match reason {
        Some(FinishReason::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(FinishReason::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// A response object's own fields.
struct Head<'a> {
    id: &'a str,
    model: &'a str,
    created: u64,
    status: &'a str,
    incomplete: Value,
}

/// The response object around `output` (every field the SDK's `Response` requires, and the
/// client's settings echoed as OpenAI does).
fn response_object(
    h: Head,
    output: Vec<Value>,
    usage: Option<&Usage>,
    ext: &ResponsesExtras,
    req_echo: &Echo,
) -> Value {
    let Head {
        id,
        model,
        created,
        status,
        incomplete,
    } = h;
    let or_null = |v: &Option<Value>| v.clone().unwrap_or(Value::Null);
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": ext.fields.get("background").cloned().unwrap_or(json!(false)),
        "error": null,
        "incomplete_details": incomplete,
        "instructions": ext.instructions,
        "max_output_tokens": req_echo.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": ext.fields.get("parallel_tool_calls").cloned().unwrap_or(json!(true)),
        "previous_response_id": ext.echo("previous_response_id"),
        "reasoning": ext.reasoning.clone().unwrap_or(json!({"effort": null, "summary": null})),
        "store": ext.fields.get("store").cloned().unwrap_or(json!(false)),
        "temperature": req_echo.temperature,
        "text": ext.text.clone().unwrap_or(json!({"format": {"type": "text"}})),
        "tool_choice": ext.tool_choice.clone().unwrap_or(json!("auto")),
        "tools": ext.tools,
        "top_p": req_echo.top_p,
        "truncation": ext.fields.get("truncation").cloned().unwrap_or(json!("disabled")),
        "usage": usage.map(usage_json),
        "user": or_null(&req_echo.user),
        "metadata": ext.fields.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// Request settings the answer echoes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Echo {
    pub max_output_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub user: Option<Value>,
}

impl Echo {
    /// The settings of the canonical request the client sent.
    pub fn of(req: &ChatRequest) -> Self {
        Self {
            max_output_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            user: req.user.as_ref().map(|u| json!(u)),
        }
    }
}

/// A reasoning item as this door's clients get it (another family's signature tagged, see
/// [`Reasoning::carried_signature`]).
fn reasoning_item(id: &str, r: &Reasoning) -> Value {
    let summary: Vec<Value> = if r.text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "summary_text", "text": r.text})]
    };
    let mut item = json!({"id": id, "type": "reasoning", "summary": summary});
    if r.signature.is_some() || r.origin != Origin::OpenAi {
        item["encrypted_content"] = json!(r.carried_signature(Origin::OpenAi));
    }
    item
}

fn message_item(id: &str, text: &str, refusal: Option<&str>, status: &str) -> Value {
    let mut content = Vec::new();
    if !text.is_empty() || refusal.is_none() {
        content
            .push(json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []}));
    }
    if let Some(r) = refusal {
        content.push(json!({"type": "refusal", "refusal": r}));
    }
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn function_call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "arguments": call.arguments,
           "call_id": call.id, "name": call.name})
}

/// Encodes a canonical answer as a Responses `response` object (first choice); `model` is
/// what the client asked for.
pub fn encode_response(
    resp: &ChatResponse,
    model: &str,
    ext: &ResponsesExtras,
    echo: &Echo,
) -> Vec<u8> {
    let id = response_id(&resp.id);
    let choice = resp
        .choices
        .iter()
        .find(|c| c.index == 0)
        .or(resp.choices.first());
    let mut output = Vec::new();
    let mut reason = None;
    if let Some(c) = choice {
        reason = c.finish_reason;
        let mut text = String::new();
        for p in &c.message.content {
            match p {
                Part::Reasoning(r) => {
                    let rid =
                        r.id.clone()
                            .filter(|_| r.origin == Origin::OpenAi)
                            .unwrap_or_else(|| item_id("rs", &id, output.len()));
                    output.push(reasoning_item(&rid, r));
                }
                Part::Text(t) => text.push_str(t),
                Part::Native(n) if n.api == NativeApi::Responses => output.push(n.value.clone()),
                _ => {}
            }
        }
        if !text.is_empty() || c.refusal.is_some() || c.message.tool_calls.is_empty() {
            let mid = item_id("msg", &id, output.len());
            output.push(message_item(&mid, &text, c.refusal.as_deref(), "completed"));
        }
        for call in &c.message.tool_calls {
            let fid = item_id("fc", &id, output.len());
            output.push(function_call_item(&fid, call, "completed"));
        }
    }
    let (status, incomplete) = status_of(reason);
    let head = Head {
        id: &id,
        model,
        created: resp.created,
        status,
        incomplete,
    };
    let v = response_object(head, output, resp.usage.as_ref(), ext, echo);
    serde_json::to_vec(&v).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Front door: stream
// ---------------------------------------------------------------------------------------------

/// The output item being streamed.
#[derive(Debug, Clone, PartialEq)]
enum Open {
    /// A message: its text, and a refusal part once refusal text came.
    Message {
        text: String,
        refusal: Option<String>,
    },
    Reasoning {
        text: String,
        /// A summary part was opened (`response.reasoning_summary_part.added`).
        part: bool,
    },
    /// A function call: its call number in the canonical stream.
    Call { call: u32, data: ToolCall },
}

/// Encodes canonical stream events as the Responses event sequence (choice 0 only).
#[derive(Debug)]
pub struct StreamEncoder {
    model: String,
    ext: ResponsesExtras,
    echo: Echo,
    id: String,
    created: u64,
    seq: u64,
    started: bool,
    ended: bool,
    /// Finished output items, in order (for `response.completed`).
    output: Vec<Value>,
    /// The open item: its output index, id and state.
    open: Option<(usize, String, Open)>,
    /// Function calls already closed: call number → (output index, item id), for late
    /// argument pieces.
    closed_calls: Vec<(u32, usize, String)>,
    reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    pub fn new(model: &str, ext: &ResponsesExtras, echo: Echo, now_unix: u64) -> Self {
        Self {
            model: model.to_string(),
            ext: ext.clone(),
            echo,
            id: "resp_tollgate".to_string(),
            created: now_unix,
            seq: 0,
            started: false,
            ended: false,
            output: Vec::new(),
            open: None,
            closed_calls: Vec::new(),
            reason: None,
            usage: None,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        if let Some(o) = data.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq = self.seq.saturating_add(1);
        write_json_event(out, Some(kind), &data);
    }

    fn snapshot(&self, status: &str, incomplete: Value, usage: Option<&Usage>) -> Value {
        let head = Head {
            id: &self.id,
            model: &self.model,
            created: self.created,
            status,
            incomplete,
        };
        response_object(head, self.output.clone(), usage, &self.ext, &self.echo)
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if !id.is_empty() {
            self.id = response_id(id);
        }
        let r = self.snapshot("in_progress", Value::Null, None);
        self.emit(out, "response.created", json!({ "response": r }));
        self.emit(out, "response.in_progress", json!({ "response": r }));
    }

    /// Opens an item (closing the open one first); returns its output index and id.
    fn open_item(&mut self, prefix: &str, item: Value, state: Open, out: &mut Vec<u8>) -> usize {
        self.close(out);
        let index = self.output.len();
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| item_id(prefix, &self.id, index));
        let mut item = item;
        item["id"] = json!(id);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        // The slot is filled when the item is done.
        self.output.push(Value::Null);
        self.open = Some((index, id, state));
        index
    }

    fn open_message(&mut self, out: &mut Vec<u8>) {
        if matches!(self.open, Some((_, _, Open::Message { .. }))) {
            return;
        }
        let item =
            json!({"type": "message", "status": "in_progress", "role": "assistant", "content": []});
        self.open_item(
            "msg",
            item,
            Open::Message {
                text: String::new(),
                refusal: None,
            },
            out,
        );
    }

    fn text(&mut self, piece: &str, refusal: bool, out: &mut Vec<u8>) {
        self.open_message(out);
        let Some((index, id, Open::Message { text, refusal: r })) = &mut self.open else {
            return;
        };
        let (index, id) = (*index, id.clone());
        // Text after a refusal part: OpenAI never sends it; it joins the refusal.
        let refusal = refusal || r.is_some();
        let first;
        let content_index;
        if refusal {
            first = r.is_none();
            r.get_or_insert_with(String::new).push_str(piece);
            content_index = usize::from(!text.is_empty());
        } else {
            first = text.is_empty();
            text.push_str(piece);
            content_index = 0;
        }
        if first {
            let part = if refusal {
                json!({"type": "refusal", "refusal": ""})
            } else {
                json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            };
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": content_index, "part": part}),
            );
        }
        if refusal {
            self.emit(
                out,
                "response.refusal.delta",
                json!({"item_id": id, "output_index": index, "content_index": content_index, "delta": piece}),
            );
        } else {
            self.emit(
                out,
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "delta": piece, "logprobs": []}),
            );
        }
    }

    fn open_reasoning(&mut self, id: Option<&str>, out: &mut Vec<u8>) {
        if matches!(self.open, Some((_, _, Open::Reasoning { .. }))) {
            return;
        }
        let mut item = json!({"type": "reasoning", "summary": []});
        if let Some(id) = id {
            item["id"] = json!(id);
        }
        self.open_item(
            "rs",
            item,
            Open::Reasoning {
                text: String::new(),
                part: false,
            },
            out,
        );
    }

    fn reasoning_text(&mut self, piece: &str, out: &mut Vec<u8>) {
        self.open_reasoning(None, out);
        let Some((index, id, Open::Reasoning { text, part })) = &mut self.open else {
            return;
        };
        let (index, id) = (*index, id.clone());
        text.push_str(piece);
        let first = !*part;
        *part = true;
        if first {
            self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            );
        }
        self.emit(
            out,
            "response.reasoning_summary_text.delta",
            json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": piece}),
        );
    }

    /// Closes the open item with its `…done` events; `signature` ends a reasoning item.
    fn close_with(&mut self, signature: Option<Reasoning>, out: &mut Vec<u8>) {
        let Some((index, id, state)) = self.open.take() else {
            return;
        };
        let item = match state {
            Open::Message { text, refusal } => {
                if !text.is_empty() {
                    let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                    self.emit(
                        out,
                        "response.output_text.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                               "text": text, "logprobs": []}),
                    );
                    self.emit(
                        out,
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                    );
                }
                if let Some(r) = &refusal {
                    let ci = usize::from(!text.is_empty());
                    self.emit(
                        out,
                        "response.refusal.done",
                        json!({"item_id": id, "output_index": index, "content_index": ci, "refusal": r}),
                    );
                    self.emit(
                        out,
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": index, "content_index": ci,
                               "part": {"type": "refusal", "refusal": r}}),
                    );
                }
                message_item(&id, &text, refusal.as_deref(), "completed")
            }
            Open::Reasoning { text, part } => {
                if part {
                    self.emit(
                        out,
                        "response.reasoning_summary_text.done",
                        json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                    );
                    self.emit(
                        out,
                        "response.reasoning_summary_part.done",
                        json!({"item_id": id, "output_index": index, "summary_index": 0,
                               "part": {"type": "summary_text", "text": text}}),
                    );
                }
                let r = signature.unwrap_or(Reasoning::signed(None, false, Origin::Unknown));
                reasoning_item(&id, &Reasoning { text, ..r })
            }
            Open::Call { call, data } => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": data.arguments}),
                );
                self.closed_calls.push((call, index, id.clone()));
                function_call_item(&id, &data, "completed")
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        if let Some(slot) = self.output.get_mut(index) {
            *slot = item;
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        self.close_with(None, out);
    }

    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match ev {
            StreamEvent::Start { id, .. } => self.start(id, out),
            StreamEvent::Text { index: 0, text } => {
                self.start("", out);
                self.text(text, false, out);
            }
            StreamEvent::Refusal { index: 0, text } => {
                self.start("", out);
                self.text(text, true, out);
            }
            StreamEvent::ReasoningStart { index: 0, id } => {
                self.start("", out);
                self.open_reasoning(id.as_deref(), out);
            }
            StreamEvent::Reasoning { index: 0, text } => {
                self.start("", out);
                self.reasoning_text(text, out);
            }
            StreamEvent::ReasoningEnd {
                index: 0,
                signature,
                origin,
            } => {
                self.start("", out);
                self.open_reasoning(None, out);
                let r = Reasoning::signed(signature.clone(), false, *origin);
                self.close_with(Some(r), out);
            }
            StreamEvent::RedactedReasoning {
                index: 0,
                data,
                origin,
            } => {
                self.start("", out);
                self.open_reasoning(None, out);
                let r = Reasoning::signed(Some(data.clone()), true, *origin);
                self.close_with(Some(r), out);
            }
            StreamEvent::ToolCallStart {
                index: 0,
                call,
                id,
                name,
            } => {
                self.start("", out);
                let data = ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                };
                let item = json!({"type": "function_call", "status": "in_progress", "arguments": "",
                                  "call_id": id, "name": name});
                self.open_item("fc", item, Open::Call { call: *call, data }, out);
            }
            StreamEvent::ToolCallArgs {
                index: 0,
                call,
                arguments,
            } => self.call_args(*call, arguments, out),
            StreamEvent::Native(n) if n.api == NativeApi::Responses => {
                self.start("", out);
                self.native(n.value.clone(), out);
            }
            StreamEvent::Finish { index: 0, reason } => self.reason = Some(*reason),
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Error(e) => self.fail(e, out),
            // Other choices: a response has one output list.
            _ => {}
        }
    }

    /// A fragment of a tool call's arguments, for the open call or one already closed.
    fn call_args(&mut self, call: u32, arguments: &str, out: &mut Vec<u8>) {
        let target = match &mut self.open {
            Some((index, id, Open::Call { call: c, data })) if *c == call => {
                data.arguments.push_str(arguments);
                Some((*index, id.clone()))
            }
            _ => self
                .closed_calls
                .iter()
                .find(|(c, _, _)| *c == call)
                .map(|(_, index, id)| (*index, id.clone())),
        };
        if let Some((index, id)) = target {
            self.emit(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": arguments}),
            );
        }
    }

    /// An output item of OpenAI's own (a hosted tool's call), added and done as it came.
    fn native(&mut self, item: Value, out: &mut Vec<u8>) {
        self.close(out);
        let index = self.output.len();
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.output.push(item);
    }

    /// The stream failed: an `error` event, then `response.failed`; nothing after.
    fn fail(&mut self, e: &ProviderError, out: &mut Vec<u8>) {
        self.start("", out);
        self.close(out);
        self.ended = true;
        let code = e.code.clone().unwrap_or_else(|| e.kind.clone());
        self.emit(
            out,
            "error",
            json!({"code": code, "message": e.message, "param": null}),
        );
        let mut r = self.snapshot("failed", Value::Null, self.usage.as_ref());
        r["error"] = json!({"code": code, "message": e.message});
        self.emit(out, "response.failed", json!({ "response": r }));
    }

    /// Ends the response: the open item's `…done` events, then `response.completed` (or
    /// `response.incomplete` for an answer cut by `max_output_tokens` or a content filter).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.start("", out);
        self.close(out);
        let (status, incomplete) = status_of(self.reason);
        let r = self.snapshot(status, incomplete, self.usage.as_ref());
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({ "response": r }));
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream: request
// ---------------------------------------------------------------------------------------------

/// The path of a Responses call: OpenAI's, or Azure's v1 API.
pub fn upstream_path(azure: bool) -> &'static str {
    if azure {
        "/openai/v1/responses"
    } else {
        "/v1/responses"
    }
}

/// Writes the canonical request (with its Responses extras, when the client spoke Responses)
/// as a Responses request to `model`. Leading system messages become `instructions`; the
/// client's stateful fields, hosted tools and untranslatable items go as sent.
pub fn encode_upstream(
    req: &ChatRequest,
    ext: &ResponsesExtras,
    model: &str,
    defaults: &super::Defaults,
) -> Result<Vec<u8>, TranslateError> {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    let lead = req
        .messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .count();
    let instructions: Vec<String> = req
        .messages
        .iter()
        .take(lead)
        .map(|m| super::openai::text_of(&m.content))
        .filter(|t| !t.is_empty())
        .collect();
    if !instructions.is_empty() {
        body.insert("instructions".into(), json!(instructions.join("\n\n")));
    }
    let mut input = Vec::new();
    for (i, m) in req.messages.iter().enumerate().skip(lead) {
        input_items(m, i, &mut input)?;
    }
    body.insert("input".into(), Value::Array(input));
    upstream_tools(req, ext, &mut body);
    upstream_options(req, ext, defaults, &mut body);
    for (k, v) in &ext.fields {
        body.entry(k.clone()).or_insert_with(|| v.clone());
    }
    serde_json::to_vec(&Value::Object(body))
        .map_err(|e| TranslateError(format!("cannot write the request: {e}")))
}

/// `tools` (the function tools, then the client's hosted tools as sent) and `tool_choice`
/// (the client's own spelling when it spoke Responses).
fn upstream_tools(req: &ChatRequest, ext: &ResponsesExtras, body: &mut Map<String, Value>) {
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            json!({"type": "function", "name": t.name, "description": t.description,
                   "parameters": if t.parameters.is_null() { json!({"type": "object", "properties": {}}) } else { t.parameters.clone() },
                   "strict": t.strict.unwrap_or(false)})
        })
        .collect();
    tools.extend(ext.hosted_tools.iter().map(|(_, t)| t.clone()));
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    let choice = match (&ext.tool_choice, &req.tool_choice) {
        (Some(raw), _) => Some(raw.clone()),
        (None, Some(ToolChoice::Auto)) => Some(json!("auto")),
        (None, Some(ToolChoice::None)) => Some(json!("none")),
        (None, Some(ToolChoice::Required)) => Some(json!("required")),
        (None, Some(ToolChoice::Function(n))) => Some(json!({"type": "function", "name": n})),
        (None, None) => None,
    };
    if let Some(c) = choice {
        body.insert("tool_choice".into(), c);
    }
}

/// `text` (with the format), `reasoning`, sampling (the client's, else the backend's
/// defaults), `user`, `stream`, `parallel_tool_calls`.
fn upstream_options(
    req: &ChatRequest,
    ext: &ResponsesExtras,
    defaults: &super::Defaults,
    body: &mut Map<String, Value>,
) {
    let echoed = |v: &Option<Value>| v.as_ref().and_then(Value::as_object).cloned();
    let mut text = echoed(&ext.text).unwrap_or_default();
    if let Some(rf) = &req.response_format {
        text.insert("format".into(), format_of(rf));
    }
    if !text.is_empty() {
        body.insert("text".into(), Value::Object(text));
    }
    if let Some(r) = &req.reasoning {
        let mut ro = echoed(&ext.reasoning).unwrap_or_default();
        if let Some(e) = r.effort.as_deref() {
            ro.insert("effort".into(), json!(e));
        }
        if let Some(s) = r
            .summary
            .as_deref()
            .filter(|s| matches!(*s, "auto" | "concise" | "detailed"))
        {
            ro.insert("summary".into(), json!(s));
        }
        if !ro.is_empty() {
            body.insert("reasoning".into(), Value::Object(ro));
        }
    }
    if let Some(v) = req.max_tokens.or(defaults.max_tokens) {
        body.insert("max_output_tokens".into(), json!(v));
    }
    if let Some(v) = req.temperature.or(defaults.temperature) {
        body.insert("temperature".into(), json!(v));
    }
    if let Some(v) = req.top_p.or(defaults.top_p) {
        body.insert("top_p".into(), json!(v));
    }
    if let Some(u) = &req.user {
        body.insert("user".into(), json!(u));
    }
    if req.stream {
        body.insert("stream".into(), json!(true));
    }
    if req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        body.insert("parallel_tool_calls".into(), json!(false));
    }
}

/// Chat Completions' `response_format` → Responses' `text.format`.
fn format_of(rf: &Value) -> Value {
    match rf.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let js = rf.get("json_schema").cloned().unwrap_or(json!({}));
            let mut f = js.as_object().cloned().unwrap_or_default();
            f.insert("type".into(), json!("json_schema"));
            Value::Object(f)
        }
        Some("json_object") => json!({"type": "json_object"}),
        _ => json!({"type": "text"}),
    }
}

fn input_parts(parts: &[Part], i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push(json!({"type": "input_text", "text": t})),
            Part::Image { url, detail } => out.push(
                json!({"type": "input_image", "image_url": url, "detail": detail.as_deref().unwrap_or("auto")}),
            ),
            Part::Document(d) => {
                let mut f = json!({"type": "input_file"});
                match &d.source {
                    DocSource::Data(u) => f["file_data"] = json!(u),
                    DocSource::Url(u) => f["file_url"] = json!(u),
                    DocSource::File(id) => f["file_id"] = json!(id),
                    DocSource::Text(t) => {
                        out.push(json!({"type": "input_text", "text": t}));
                        continue;
                    }
                }
                if let Some(n) = d.filename.as_deref().or(d.title.as_deref()) {
                    f["filename"] = json!(n);
                } else if matches!(d.source, DocSource::Data(_)) {
                    f["filename"] = json!("document.pdf");
                }
                out.push(f);
            }
            Part::Native(n) => {
                return Err(TranslateError(format!(
                    "messages[{i}]: a \"{}\" item cannot be part of a message",
                    n.kind
                )))
            }
            Part::Reasoning(_) | Part::CachePoint(_) => {}
        }
    }
    Ok(out)
}

fn input_items(m: &Message, i: usize, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    match m.role {
        Role::System => out.push(json!({"type": "message", "role": "developer",
                                         "content": input_parts(&m.content, i)?})),
        Role::User => out.push(json!({"type": "message", "role": "user",
                                       "content": input_parts(&m.content, i)?})),
        Role::Tool => {
            let id = m.tool_call_id.as_deref().unwrap_or("");
            let only_text = m
                .content
                .iter()
                .all(|p| !matches!(p, Part::Image { .. } | Part::Document(_)));
            let output = if only_text {
                json!(super::openai::text_of(&m.content))
            } else {
                Value::Array(input_parts(&m.content, i)?)
            };
            out.push(json!({"type": "function_call_output", "call_id": id, "output": output}));
        }
        Role::Assistant => {
            let mut text = String::new();
            for p in &m.content {
                match p {
                    Part::Reasoning(r) if r.origin == Origin::OpenAi => {
                        let mut item = json!({"type": "reasoning", "summary":
                            if r.text.is_empty() { json!([]) } else { json!([{"type": "summary_text", "text": r.text}]) }});
                        if let Some(id) = &r.id {
                            item["id"] = json!(id);
                        }
                        if let Some(s) = &r.signature {
                            item["encrypted_content"] = json!(s);
                        }
                        out.push(item);
                    }
                    Part::Native(n) if n.api == NativeApi::Responses => out.push(n.value.clone()),
                    Part::Text(t) => text.push_str(t),
                    _ => {}
                }
            }
            if !text.is_empty() {
                out.push(json!({"type": "message", "role": "assistant",
                                "content": [{"type": "output_text", "text": text, "annotations": []}]}));
            }
            for c in &m.tool_calls {
                out.push(
                    json!({"type": "function_call", "call_id": c.id, "name": c.name,
                                "arguments": c.arguments}),
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Upstream: answer
// ---------------------------------------------------------------------------------------------

fn invalid_upstream(message: String) -> ProviderError {
    ProviderError {
        status: 502,
        kind: "server_error".into(),
        message,
        code: None,
    }
}

fn usage_from(u: &Value) -> Usage {
    let details = |k: &str, f: &str| num(u.get(k).and_then(|d| d.get(f)));
    Usage {
        prompt_tokens: num(u.get("input_tokens")),
        completion_tokens: num(u.get("output_tokens")),
        cached_tokens: details("input_tokens_details", "cached_tokens"),
        reasoning_tokens: details("output_tokens_details", "reasoning_tokens"),
        cache_write_tokens: details("input_tokens_details", "cache_write_tokens"),
    }
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// A reasoning output item → canonical reasoning (summary texts joined).
fn reasoning_of(item: &Value) -> Reasoning {
    let text = item
        .get("summary")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n\n");
    Reasoning {
        text,
        signature: item
            .get("encrypted_content")
            .and_then(Value::as_str)
            .map(str::to_string),
        redacted: false,
        origin: Origin::OpenAi,
        id: item.get("id").and_then(Value::as_str).map(str::to_string),
    }
}

/// The finish reason of a Responses answer: its status and whether it called functions.
fn finish_of(r: &Value, calls: bool) -> FinishReason {
    let reason = r
        .get("incomplete_details")
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    match (r.get("status").and_then(Value::as_str), reason) {
        (Some("incomplete"), Some("content_filter")) => FinishReason::ContentFilter,
        (Some("incomplete"), _) => FinishReason::Length,
        _ if calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// The error of a failed response object (`status: failed`, `error: {code, message}`).
fn failed(r: &Value) -> ProviderError {
    let e = r.get("error");
    let code = e.map(|e| str_of(e, "code")).filter(|c| !c.is_empty());
    let message = e
        .map(|e| str_of(e, "message"))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "the provider reported a failed response".into());
    let (status, kind) = match code.as_deref() {
        Some("rate_limit_exceeded") => (429, "rate_limit_error"),
        Some("invalid_prompt") | Some("invalid_request_error") => (400, "invalid_request_error"),
        _ => (502, "server_error"),
    };
    ProviderError {
        status,
        kind: kind.into(),
        message,
        code,
    }
}

/// A Responses answer that is not finished yet (a background call's `queued` or
/// `in_progress` object): the object as sent, its `id` a valid response id.
pub fn pending(status: u16, body: &[u8]) -> Option<Value> {
    if !(200..300).contains(&status) {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let open = matches!(
        v.get("status").and_then(Value::as_str),
        Some("queued" | "in_progress")
    );
    (open && v.get("id").is_some_and(Value::is_string)).then_some(v)
}

/// The usage of a finished `response` object (`completed`, `incomplete`, `failed`,
/// `cancelled`) that reports one.
pub fn terminal_usage(v: &Value) -> Option<Usage> {
    let finished = matches!(
        v.get("status").and_then(Value::as_str),
        Some("completed" | "incomplete" | "failed" | "cancelled")
    );
    let usage = v.get("usage").filter(|u| u.is_object())?;
    finished.then(|| usage_from(usage))
}

/// Decodes a non-streaming Responses answer (non-2xx statuses become errors).
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
    if v.get("status").and_then(Value::as_str) == Some("failed") {
        return Err(failed(&v));
    }
    let Some(items) = v.get("output").and_then(Value::as_array) else {
        return Err(invalid_upstream(
            "provider response has no \"output\" array".into(),
        ));
    };
    let mut message = Message {
        role: Role::Assistant,
        content: Vec::new(),
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    };
    let mut refusal: Option<String> = None;
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for c in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match c.get("type").and_then(Value::as_str) {
                        Some("output_text") => message.content.push(Part::Text(str_of(c, "text"))),
                        Some("refusal") => refusal
                            .get_or_insert_with(String::new)
                            .push_str(&str_of(c, "refusal")),
                        _ => {}
                    }
                }
            }
            Some("function_call") => message.tool_calls.push(ToolCall {
                id: str_of(item, "call_id"),
                name: str_of(item, "name"),
                arguments: str_of(item, "arguments"),
            }),
            Some("reasoning") => message.content.push(Part::Reasoning(reasoning_of(item))),
            other => message.content.push(Part::Native(Native {
                api: NativeApi::Responses,
                kind: other.unwrap_or("?").to_string(),
                path: "output".into(),
                value: item.clone(),
            })),
        }
    }
    let reason = finish_of(&v, !message.tool_calls.is_empty());
    Ok(ChatResponse {
        id: str_of(&v, "id"),
        model: str_of(&v, "model"),
        created: num(v.get("created_at")),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(reason),
            refusal,
        }],
        usage: v.get("usage").filter(|u| u.is_object()).map(usage_from),
    })
}

// ---------------------------------------------------------------------------------------------
// Upstream: stream
// ---------------------------------------------------------------------------------------------

/// Decodes a Responses event stream into canonical events, event by event.
#[derive(Debug, Default)]
pub struct Decoder {
    sse: SseParser,
    started: bool,
    done: bool,
    failed: bool,
    /// Function-call items: output index → call number, and whether arguments streamed.
    calls: Vec<(u64, u32, bool)>,
    /// Reasoning items open: output index.
    reasoning: Vec<u64>,
}

pub fn stream_decoder() -> Decoder {
    Decoder::default()
}

impl StreamDecoder for Decoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) {
        for e in self.sse.events(bytes) {
            self.on_event(&e.data, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        for e in self.sse.rest() {
            self.on_event(&e.data, out);
        }
        if self.started && !self.done && !self.failed {
            self.failed = true;
            out.push(StreamEvent::Error(invalid_upstream(
                "provider stream ended before response.completed".into(),
            )));
        }
    }
}

impl Decoder {
    fn on_event(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let data = data.trim();
        if self.done || self.failed || data.is_empty() || data == "[DONE]" {
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
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        let index = num(v.get("output_index"));
        match kind {
            "response.created" | "response.in_progress" | "response.queued" if !self.started => {
                self.started = true;
                let r = v.get("response");
                out.push(StreamEvent::Start {
                    id: r.map(|r| str_of(r, "id")).unwrap_or_default(),
                    model: r.map(|r| str_of(r, "model")).unwrap_or_default(),
                });
            }
            "response.output_item.added" => self.item_added(&v, index, out),
            "response.output_text.delta" | "response.refusal.delta" => {
                let text = str_of(&v, "delta");
                if !text.is_empty() {
                    out.push(if kind == "response.refusal.delta" {
                        StreamEvent::Refusal { index: 0, text }
                    } else {
                        StreamEvent::Text { index: 0, text }
                    });
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                let text = str_of(&v, "delta");
                if !text.is_empty() {
                    out.push(StreamEvent::Reasoning { index: 0, text });
                }
            }
            "response.function_call_arguments.delta" => self.call_args(&v, index, out),
            "response.output_item.done" => self.item_done(&v, index, out),
            "response.completed" | "response.incomplete" => {
                self.done = true;
                let r = v.get("response").cloned().unwrap_or(Value::Null);
                out.push(StreamEvent::Finish {
                    index: 0,
                    reason: finish_of(&r, !self.calls.is_empty()),
                });
                if let Some(u) = r.get("usage").filter(|u| u.is_object()) {
                    out.push(StreamEvent::Usage(usage_from(u)));
                }
            }
            "response.failed" => {
                self.failed = true;
                let r = v.get("response").cloned().unwrap_or(Value::Null);
                out.push(StreamEvent::Error(failed(&r)));
            }
            "error" => {
                self.failed = true;
                let e = v.get("error").unwrap_or(&v);
                out.push(StreamEvent::Error(failed(&json!({ "error": e }))));
            }
            // content_part.added/done, *.done, annotations, hosted-tool progress, keepalives,
            // and event types added later: nothing to translate.
            _ => {}
        }
    }

    /// `response.output_item.added`: a function call or reasoning item begins.
    fn item_added(&mut self, v: &Value, index: u64, out: &mut Vec<StreamEvent>) {
        let Some(item) = v.get("item") else { return };
        match item.get("type").and_then(Value::as_str) {
            Some("function_call") => {
                let call = u32::try_from(self.calls.len()).unwrap_or(u32::MAX);
                self.calls.push((index, call, false));
                out.push(StreamEvent::ToolCallStart {
                    index: 0,
                    call,
                    id: str_of(item, "call_id"),
                    name: str_of(item, "name"),
                });
            }
            Some("reasoning") => {
                self.reasoning.push(index);
                out.push(StreamEvent::ReasoningStart {
                    index: 0,
                    id: item.get("id").and_then(Value::as_str).map(str::to_string),
                });
            }
            _ => {}
        }
    }

    /// `response.function_call_arguments.delta`: a fragment of a call's arguments.
    fn call_args(&mut self, v: &Value, index: u64, out: &mut Vec<StreamEvent>) {
        let delta = str_of(v, "delta");
        if let Some((_, call, streamed)) = self.calls.iter_mut().find(|(i, _, _)| *i == index) {
            *streamed = true;
            if !delta.is_empty() {
                out.push(StreamEvent::ToolCallArgs {
                    index: 0,
                    call: *call,
                    arguments: delta,
                });
            }
        }
    }

    /// `response.output_item.done`: reasoning ends (with its encrypted content), a call's
    /// arguments that came whole, or an item of OpenAI's own.
    fn item_done(&mut self, v: &Value, index: u64, out: &mut Vec<StreamEvent>) {
        let Some(item) = v.get("item") else { return };
        match item.get("type").and_then(Value::as_str) {
            Some("reasoning") => {
                self.reasoning.retain(|i| *i != index);
                let r = reasoning_of(item);
                out.push(StreamEvent::ReasoningEnd {
                    index: 0,
                    signature: r.signature,
                    origin: Origin::OpenAi,
                });
            }
            Some("function_call") => {
                if let Some((_, call, false)) =
                    self.calls.iter().find(|(i, _, _)| *i == index).copied()
                {
                    let arguments = str_of(item, "arguments");
                    if !arguments.is_empty() {
                        out.push(StreamEvent::ToolCallArgs {
                            index: 0,
                            call,
                            arguments,
                        });
                    }
                }
            }
            Some("message") | None => {}
            Some(other) => out.push(StreamEvent::Native(Native {
                api: NativeApi::Responses,
                kind: other.to_string(),
                path: "output".into(),
                value: item.clone(),
            })),
        }
    }
}

#[cfg(test)]
#[path = "responses_tests.rs"]
mod tests;
