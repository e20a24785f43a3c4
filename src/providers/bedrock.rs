//! AWS Bedrock Converse / ConverseStream translation, signed with SigV4.
//!
//! Request: `POST /model/{modelId}/converse` (or `/converse-stream`), the model id
//! URI-encoded as one path segment (`:` → `%3A`, `/` of an ARN → `%2F`). User and assistant
//! messages become `messages[].content[]` blocks (`text`, `image` from base64 `data:` URLs,
//! `toolUse`); tool messages become `toolResult` blocks in a `user` message; consecutive
//! messages of one role are merged (Bedrock wants strict alternation and all the results
//! of parallel calls in one message). System messages → `system[]`.
//!
//! Decisions: `n > 1` cannot be honoured by Converse and is a [`TranslateError`]; Converse
//! has no JSON mode, so `response_format` `json_object` and `json_schema` become an
//! instruction at the end of `system[]` (the schema verbatim), as for Anthropic; `seed` and
//! `user` are dropped. `tool_choice`
//! `none` omits `toolConfig`, except when the history holds tool blocks (Bedrock then
//! requires `toolConfig`), where the tools are sent without a `toolChoice`.
//!
//! Responses carry no id, model or creation time: the id is a stable fingerprint of the
//! body (`bedrock-<hex>`), `model` is empty and `created` 0 for the filter to fill in.

use serde_json::{json, Map, Value};

use super::eventstream::{self, FrameError};
use super::json::num;
use super::model::{
    split_call_id, Choice, DocSource, Document, FinishReason, Message, Origin, Part, Reasoning,
    Role, StreamEvent, ToolCall, ToolChoice, Usage,
};
use super::util::{format_instruction, joined_text, map_error, parse_data_url, snippet, stable_id};
use super::{
    ChatRequest, ChatResponse, Outgoing, ProviderError, StreamDecoder, Target, TranslateError,
};
use crate::support::encoding::{base64_encode, uri_encode};

const PROVIDER: &str = "Bedrock";

fn terr(msg: impl Into<String>) -> TranslateError {
    TranslateError(msg.into())
}

// ================================================================= request

/// Translates a canonical request into a Bedrock Converse call, signed when `t.aws` is set.
pub fn encode_request(req: &ChatRequest, t: &Target) -> Result<Outgoing, TranslateError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(terr(
            "Bedrock Converse returns a single choice; n > 1 is not supported",
        ));
    }
    if let Some(n) = req.first_native() {
        return Err(terr(format!(
            "{}: a \"{}\" item can only be sent to an OpenAI Responses backend",
            n.path, n.kind
        )));
    }
    let Conversation {
        mut system,
        messages,
        has_tool_blocks,
    } = conversation(req)?;
    if messages.is_empty() {
        return Err(terr("Bedrock needs at least one user or assistant message"));
    }

    let mut body = Map::new();
    body.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({ "role": role, "content": content }))
                .collect(),
        ),
    );
    // Converse has no JSON mode: the format becomes an instruction, as for Anthropic.
    if let Some(rf) = &req.response_format {
        if let Some(instruction) = format_instruction(rf, PROVIDER)? {
            system.push(json!({ "text": instruction }));
        }
    }
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let inference = inference_config(req, t);
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(config) = tool_config(req, has_tool_blocks) {
        body.insert("toolConfig".into(), config);
    }
    let additional = additional_fields(req, t);
    if !additional.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
    }

    let model = uri_encode(t.model, false);
    let path = if req.stream {
        format!("/model/{model}/converse-stream")
    } else {
        format!("/model/{model}/converse")
    };
    let body = serde_json::to_vec(&Value::Object(body))
        .map_err(|e| terr(format!("cannot serialise the Bedrock request: {e}")))?;
    let headers = request_headers(req, t, &path, &body)?;
    Ok(Outgoing {
        path,
        body,
        headers,
    })
}

/// Claude on Bedrock thinks with Anthropic's own `thinking` field, passed as a model-specific
/// field; other Bedrock models have no such field. Beta features go the same way.
fn additional_fields(req: &ChatRequest, t: &Target) -> Map<String, Value> {
    let mut additional = Map::new();
    if let Some(r) = req.reasoning.as_ref().filter(|_| is_claude(t.model)) {
        let max = req.max_tokens.or(t.defaults.max_tokens);
        let thinking = if r.off() {
            Some(json!({ "type": "disabled" }))
        } else {
            r.budget(max)
                .map(|b| json!({ "type": "enabled", "budget_tokens": b }))
        };
        if let Some(th) = thinking {
            additional.insert("thinking".into(), th);
        }
    }
    if !req.anthropic_beta.is_empty() && is_claude(t.model) {
        additional.insert("anthropic_beta".into(), json!(req.anthropic_beta));
    }
    additional
}

/// The canonical messages as Converse's system blocks and messages.
struct Conversation {
    system: Vec<Value>,
    messages: Vec<(&'static str, Vec<Value>)>,
    /// A tool call or result is in the history (Converse then needs a `toolConfig`).
    has_tool_blocks: bool,
}

fn conversation(req: &ChatRequest) -> Result<Conversation, TranslateError> {
    let mut c = Conversation {
        system: Vec::new(),
        messages: Vec::new(),
        has_tool_blocks: false,
    };
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System => {
                for p in &m.content {
                    match p {
                        Part::Text(text) if !text.is_empty() => {
                            c.system.push(json!({ "text": text }))
                        }
                        Part::CachePoint(_) if !c.system.is_empty() => {
                            c.system.push(cache_point())
                        }
                        Part::Image { .. } | Part::Document(_) => {
                            return Err(terr(format!(
                            "messages[{i}]: Bedrock system prompts can hold only text, not images or documents"
                        )))
                        }
                        _ => {}
                    }
                }
            }
            Role::User => push_message(&mut c.messages, "user", blocks(&m.content, i)?),
            Role::Assistant => {
                c.has_tool_blocks |= !m.tool_calls.is_empty();
                push_message(&mut c.messages, "assistant", assistant_turn(m, i)?);
            }
            Role::Tool => {
                c.has_tool_blocks = true;
                let mut blocks = vec![tool_result(m, i)?];
                if matches!(m.content.last(), Some(Part::CachePoint(_))) {
                    blocks.push(cache_point());
                }
                push_message(&mut c.messages, "user", blocks);
            }
        }
    }
    Ok(c)
}

/// An assistant turn's blocks: Claude's reasoning first (as on Anthropic's API), its content,
/// its tool calls; a cache breakpoint that ended the content ends the turn.
fn assistant_turn(m: &Message, i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut content = reasoning_blocks(&m.content);
    content.extend(blocks(&m.content, i)?);
    let trailing_cache = matches!(m.content.last(), Some(Part::CachePoint(_)));
    if trailing_cache && !m.tool_calls.is_empty() {
        content.pop();
    }
    for (j, call) in m.tool_calls.iter().enumerate() {
        let input = parse_input(&call.arguments).map_err(|e| {
            terr(format!(
                "messages[{i}].tool_calls[{j}].function.arguments: {e}"
            ))
        })?;
        content.push(json!({ "toolUse": {
            "toolUseId": split_call_id(&call.id).0, "name": call.name, "input": input
        }}));
    }
    if trailing_cache && !m.tool_calls.is_empty() {
        content.push(cache_point());
    }
    Ok(content)
}

/// A tool message as a `toolResult` block (JSON when its text is a JSON object).
fn tool_result(m: &Message, i: usize) -> Result<Value, TranslateError> {
    let Some(id) = m.tool_call_id.as_deref() else {
        return Err(terr(format!(
            "messages[{i}]: tool message without tool_call_id"
        )));
    };
    let text = joined_text(&m.content);
    let mut result = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => vec![json!({ "json": o })],
        _ => vec![json!({ "text": text })],
    };
    for p in &m.content {
        match p {
            Part::Image { url, .. } => result.push(image_block(url, i)?),
            Part::Document(d) => result.push(document_block(d, i)?),
            _ => {}
        }
    }
    Ok(json!({ "toolResult": { "toolUseId": split_call_id(id).0, "content": result } }))
}

/// `inferenceConfig`: the client's sampling values, else the backend's defaults.
fn inference_config(req: &ChatRequest, t: &Target) -> Map<String, Value> {
    let mut inference = Map::new();
    if let Some(v) = req.max_tokens.or(t.defaults.max_tokens) {
        inference.insert("maxTokens".into(), json!(v));
    }
    if let Some(v) = req.temperature.or(t.defaults.temperature) {
        inference.insert("temperature".into(), json!(v));
    }
    if let Some(v) = req.top_p.or(t.defaults.top_p) {
        inference.insert("topP".into(), json!(v));
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(req.stop));
    }
    inference
}

/// The request headers: JSON, signed with SigV4 when the backend has AWS credentials, and
/// what the answer may be (JSON, or an event stream).
fn request_headers(
    req: &ChatRequest,
    t: &Target,
    path: &str,
    body: &[u8],
) -> Result<Vec<(String, String)>, TranslateError> {
    let accept = if req.stream {
        "application/vnd.amazon.eventstream"
    } else {
        "application/json"
    };
    signed_headers(t, path, body, accept)
}

/// The headers of a JSON `POST` to Bedrock's runtime API, signed with SigV4 when the target
/// has credentials.
fn signed_headers(
    t: &Target,
    path: &str,
    body: &[u8],
    accept: &str,
) -> Result<Vec<(String, String)>, TranslateError> {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(creds) = t.aws {
        if t.host.is_empty() {
            return Err(terr("Bedrock request signing needs the upstream host"));
        }
        headers.extend(super::sigv4::sign(
            "POST", t.host, path, &headers, body, creds, "bedrock", t.now_unix,
        ));
    }
    headers.push(("accept".to_string(), accept.to_string()));
    Ok(headers)
}

/// A JSON `POST` to Bedrock's runtime API (embeddings, token counting), signed with SigV4 when
/// the target has credentials.
pub(crate) fn signed_post(
    path: String,
    body: Vec<u8>,
    t: &Target,
    accept: &str,
) -> Result<Outgoing, TranslateError> {
    let headers = signed_headers(t, &path, &body, accept)?;
    Ok(Outgoing {
        path,
        body,
        headers,
    })
}

/// The model id as one path segment of Bedrock's runtime API.
pub(crate) fn model_segment(model: &str) -> String {
    uri_encode(model, false)
}

fn push_message(
    messages: &mut Vec<(&'static str, Vec<Value>)>,
    role: &'static str,
    content: Vec<Value>,
) {
    if content.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(content),
        _ => messages.push((role, content)),
    }
}

/// A Claude model id (also an inference profile such as `us.anthropic.claude-...` or an ARN
/// naming one).
pub(crate) fn is_claude(model: &str) -> bool {
    model.contains("anthropic.") || model.contains("claude")
}

/// Bedrock's cache breakpoint block.
fn cache_point() -> Value {
    json!({ "cachePoint": { "type": "default" } })
}

/// Claude's reasoning of an assistant turn, for Claude on Bedrock (its own family's only).
fn reasoning_blocks(content: &[Part]) -> Vec<Value> {
    content
        .iter()
        .filter_map(|p| match p {
            Part::Reasoning(r) if r.origin == Origin::Anthropic => Some(if r.redacted {
                json!({ "reasoningContent": { "redactedContent": r.signature.as_deref().unwrap_or("") } })
            } else {
                json!({ "reasoningContent": { "reasoningText": {
                    "text": r.text, "signature": r.signature.as_deref().unwrap_or("") } } })
            }),
            _ => None,
        })
        .collect()
}

fn blocks(content: &[Part], i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::new();
    for p in content {
        match p {
            // Bedrock rejects blank text blocks.
            Part::Text(text) if text.trim().is_empty() => {}
            Part::Text(text) => out.push(json!({ "text": text })),
            Part::Image { url, .. } => out.push(image_block(url, i)?),
            Part::Document(d) => out.push(document_block(d, i)?),
            Part::CachePoint(_) if !out.is_empty() => out.push(cache_point()),
            Part::CachePoint(_) | Part::Reasoning(_) | Part::Native(_) => {}
        }
    }
    Ok(out)
}

/// A Converse `document` block: bytes only (a base64 PDF or other format, or plain text),
/// with the name Bedrock requires (letters, digits, spaces, `-`, `(`, `)`, `[`, `]`).
fn document_block(d: &Document, i: usize) -> Result<Value, TranslateError> {
    let (format, bytes) = match &d.source {
        DocSource::Data(url) => {
            let data = parse_data_url(url)
                .map_err(|e| terr(format!("messages[{i}]: {e}")))?
                .ok_or_else(|| terr(format!("messages[{i}]: a document's data must be a base64 data: URL")))?;
            let format = match data.mime.to_ascii_lowercase().as_str() {
                "application/pdf" => "pdf",
                "text/csv" => "csv",
                "text/html" => "html",
                "text/markdown" => "md",
                "text/plain" => "txt",
                "application/msword" => "doc",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
                "application/vnd.ms-excel" => "xls",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
                other => {
                    return Err(terr(format!(
                        "messages[{i}]: Bedrock does not take documents of type {other}"
                    )))
                }
            };
            (format, data.base64.to_string())
        }
        DocSource::Text(text) => ("txt", base64_encode(text.as_bytes())),
        DocSource::Url(_) | DocSource::File(_) => {
            return Err(terr(format!(
                "messages[{i}]: Bedrock needs a document's bytes; send it as data, not as a link or file id"
            )))
        }
    };
    let name = document_name(d.title.as_deref().or(d.filename.as_deref()), i);
    Ok(json!({ "document": { "format": format, "name": name, "source": { "bytes": bytes } } }))
}

/// A name Bedrock accepts: the allowed characters of the client's title, single spaces.
fn document_name(title: Option<&str>, i: usize) -> String {
    let mut out = String::new();
    for c in title.unwrap_or("").chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']') {
            c
        } else {
            ' '
        };
        if !(c == ' ' && (out.is_empty() || out.ends_with(' '))) {
            out.push(c);
        }
    }
    let out = out.trim_end().chars().take(200).collect::<String>();
    if out.is_empty() {
        format!("document-{i}")
    } else {
        out
    }
}

fn image_block(url: &str, i: usize) -> Result<Value, TranslateError> {
    let data = parse_data_url(url).map_err(|e| terr(format!("messages[{i}]: {e}")))?;
    let Some(data) = data else {
        return Err(terr(format!(
            "messages[{i}]: Bedrock needs image bytes; send the image as a base64 data: URL, not a link"
        )));
    };
    let format = match data.mime.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(terr(format!(
                "messages[{i}]: Bedrock accepts png, jpeg, gif or webp images, not {other}"
            )))
        }
    };
    Ok(json!({ "image": { "format": format, "source": { "bytes": data.base64 } } }))
}

/// Parses tool-call arguments (empty → `{}`); Bedrock's `input` must be a JSON object.
fn parse_input(arguments: &str) -> Result<Value, String> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => Ok(Value::Object(o)),
        Ok(_) => Err("must be a JSON object".into()),
        Err(e) => Err(format!("not valid JSON ({e})")),
    }
}

fn tool_config(req: &ChatRequest, has_tool_blocks: bool) -> Option<Value> {
    if req.tools.is_empty() {
        return None;
    }
    let choice = match &req.tool_choice {
        Some(ToolChoice::None) if !has_tool_blocks => return None,
        Some(ToolChoice::None) | None => None,
        Some(ToolChoice::Auto) => Some(json!({ "auto": {} })),
        Some(ToolChoice::Required) => Some(json!({ "any": {} })),
        Some(ToolChoice::Function(name)) => Some(json!({ "tool": { "name": name } })),
    };
    let mut tools: Vec<Value> = Vec::new();
    for tool in &req.tools {
        tools.push({
            let mut spec = Map::new();
            spec.insert("name".into(), json!(tool.name));
            if let Some(d) = tool.description.as_deref().filter(|d| !d.is_empty()) {
                spec.insert("description".into(), json!(d));
            }
            let schema = if tool.parameters.is_object() {
                tool.parameters.clone()
            } else {
                json!({ "type": "object", "properties": {} })
            };
            spec.insert("inputSchema".into(), json!({ "json": schema }));
            json!({ "toolSpec": spec })
        });
        if tool.cache.is_some() {
            tools.push(cache_point());
        }
    }
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    if let Some(c) = choice {
        config.insert("toolChoice".into(), c);
    }
    Some(Value::Object(config))
}

// ================================================================= response

/// Maps a Converse `stopReason`.
pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Bedrock's `inputTokens` excludes cache reads and writes; the canonical prompt count
/// includes them, with the reads as `cached_tokens` and the writes as `cache_write_tokens`.
fn usage_of(u: &Value) -> Usage {
    let n = |k: &str| num(u.get(k));
    let cached = n("cacheReadInputTokens");
    let written = n("cacheWriteInputTokens");
    Usage {
        prompt_tokens: n("inputTokens")
            .saturating_add(cached)
            .saturating_add(written),
        completion_tokens: n("outputTokens"),
        cached_tokens: cached,
        reasoning_tokens: 0,
        cache_write_tokens: written,
    }
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError {
        status: 502,
        kind: "server_error".into(),
        message: format!("Bedrock returned an unreadable {what}: {e}"),
        code: None,
    }
}

/// Decodes a non-streaming Converse answer.
pub fn decode_response(status: u16, body: &[u8]) -> Result<ChatResponse, ProviderError> {
    if !(200..300).contains(&status) {
        return Err(decode_error(status, body));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| unreadable("response", e))?;
    let Some(content) = v
        .get("output")
        .and_then(|o| o.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
    else {
        return Err(unreadable("response", "no output.message.content"));
    };
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut reasoning = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(rc) = block.get("reasoningContent") {
            reasoning.extend(reasoning_of(rc).map(Part::Reasoning));
        } else if let Some(tu) = block.get("toolUse") {
            let s = |k: &str| {
                tu.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let arguments = match tu.get("input") {
                Some(input) if !input.is_null() => input.to_string(),
                _ => "{}".to_string(),
            };
            tool_calls.push(ToolCall {
                id: s("toolUseId"),
                name: s("name"),
                arguments,
            });
        }
    }
    let finish = v
        .get("stopReason")
        .and_then(Value::as_str)
        .map(finish_reason);
    Ok(ChatResponse {
        id: stable_id("bedrock-", body),
        model: String::new(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            message: Message {
                role: Role::Assistant,
                content: {
                    if !text.is_empty() {
                        reasoning.push(Part::Text(text));
                    }
                    reasoning
                },
                tool_calls,
                tool_call_id: None,
                name: None,
            },
            finish_reason: finish,
            refusal: None,
        }],
        usage: v.get("usage").map(usage_of),
    })
}

/// A `reasoningContent` block: Claude's signed reasoning (`reasoningText` with its
/// `signature`, or `redactedContent`); reasoning without a signature (other models) is shown
/// but belongs to no family that could verify it.
fn reasoning_of(rc: &Value) -> Option<Reasoning> {
    if let Some(data) = rc.get("redactedContent").and_then(Value::as_str) {
        return Some(Reasoning {
            text: String::new(),
            signature: Some(data.to_string()),
            redacted: true,
            origin: Origin::Anthropic,
            id: None,
        });
    }
    let rt = rc.get("reasoningText")?;
    let signature = rt
        .get("signature")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Some(Reasoning {
        text: rt
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        origin: if signature.is_some() {
            Origin::Anthropic
        } else {
            Origin::Unknown
        },
        signature,
        redacted: false,
        id: None,
    })
}

/// The exception name Bedrock uses for an HTTP status (the real one travels in the
/// `x-amzn-errortype` header, which decoders do not see).
fn exception_for_status(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        500 => "InternalServerException",
        503 => "ServiceUnavailableException",
        _ => return None,
    })
}

/// Maps a Bedrock error body (`{"message": "..."}`) to OpenAI's vocabulary; `code` is the
/// exception name (from `__type` when the body has it, else inferred from the status).
pub fn decode_error(status: u16, body: &[u8]) -> ProviderError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let message = field("message").or_else(|| field("Message"));
    let code = field("__type")
        .map(|t| t.rsplit('#').next().unwrap_or(&t).to_string())
        .or_else(|| exception_for_status(status).map(str::to_string));
    let message = match message {
        Some(m) => m,
        None if body.is_empty() => format!("Bedrock returned HTTP {status} with an empty body"),
        None => format!("Bedrock returned HTTP {status}: {}", snippet(body)),
    };
    map_error(PROVIDER, status, message, code)
}

// ================================================================= stream

/// HTTP-like status for an exception inside a ConverseStream.
fn status_for_exception(kind: &str) -> u16 {
    match kind {
        "validationException" => 400,
        "accessDeniedException" => 403,
        "resourceNotFoundException" => 404,
        "throttlingException" => 429,
        "serviceUnavailableException" => 503,
        "modelTimeoutException" => 504,
        "modelStreamErrorException" | "modelErrorException" => 502,
        _ => 500,
    }
}

/// Streaming decoder for `converse-stream` (`application/vnd.amazon.eventstream`).
#[derive(Debug, Default)]
pub struct Decoder {
    frames: eventstream::Decoder,
    started: bool,
    finished: bool,
    failed: bool,
    /// `contentBlockIndex` → tool call number, for blocks that are tool uses.
    tool_blocks: Vec<(u64, u32)>,
    /// The reasoning block being streamed (its `contentBlockIndex`).
    reasoning: Option<u64>,
}

/// A decoder for one streamed answer.
pub fn stream_decoder() -> Decoder {
    Decoder::default()
}

impl Decoder {
    fn fail(&mut self, err: ProviderError, out: &mut Vec<StreamEvent>) {
        self.failed = true;
        out.push(StreamEvent::Error(err));
    }

    fn start(&mut self, seed: &[u8], out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: stable_id("bedrock-", seed),
                model: String::new(),
            });
        }
    }

    fn handle(
        &mut self,
        frame: Result<eventstream::Message, FrameError>,
        out: &mut Vec<StreamEvent>,
    ) {
        if self.failed {
            return;
        }
        let msg = match frame {
            Ok(m) => m,
            Err(FrameError(e)) => return self.fail(unreadable("event stream", e), out),
        };
        match msg.header_str(":message-type").unwrap_or("event") {
            "event" => {}
            "exception" => return self.fail(exception(&msg), out),
            "error" => {
                let code = msg.header_str(":error-code").unwrap_or("error").to_string();
                let message = msg
                    .header_str(":error-message")
                    .unwrap_or("Bedrock reported a stream error")
                    .to_string();
                return self.fail(map_error(PROVIDER, 500, message, Some(code)), out);
            }
            _ => return,
        }
        let event_type = msg
            .header_str(":event-type")
            .unwrap_or_default()
            .to_string();
        let v: Value = match serde_json::from_slice(&msg.payload) {
            Ok(v) => v,
            Err(e) => return self.fail(unreadable(&format!("{event_type} event"), e), out),
        };
        match event_type.as_str() {
            "messageStart" => self.start(&msg.payload, out),
            "contentBlockStart" => {
                self.start(&msg.payload, out);
                self.block_start(&v, out);
            }
            "contentBlockDelta" => {
                self.start(&msg.payload, out);
                self.block_delta(&v, out);
            }
            "contentBlockStop" => {
                // Reasoning that ended without a signature (a model that signs nothing).
                let block = v.get("contentBlockIndex").and_then(Value::as_u64);
                if self.reasoning.is_some() && self.reasoning == block {
                    self.reasoning = None;
                    out.push(StreamEvent::ReasoningEnd {
                        index: 0,
                        signature: None,
                        origin: Origin::Unknown,
                    });
                }
            }
            "messageStop" => {
                self.start(&msg.payload, out);
                let reason = v
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .map(finish_reason)
                    .unwrap_or(FinishReason::Stop);
                if !self.finished {
                    self.finished = true;
                    out.push(StreamEvent::Finish { index: 0, reason });
                }
            }
            "metadata" => {
                if let Some(u) = v.get("usage") {
                    out.push(StreamEvent::Usage(usage_of(u)));
                }
            }
            _ => {}
        }
    }

    /// `contentBlockStart`: a tool call begins (its id and name).
    fn block_start(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let block = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if let Some(tu) = v.get("start").and_then(|s| s.get("toolUse")) {
            let call = self.tool_blocks.len() as u32;
            self.tool_blocks.push((block, call));
            let s = |k: &str| {
                tu.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            out.push(StreamEvent::ToolCallStart {
                index: 0,
                call,
                id: s("toolUseId"),
                name: s("name"),
            });
        }
    }

    /// `contentBlockDelta`: text, or a fragment of a tool call's arguments.
    fn block_delta(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let block = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let Some(delta) = v.get("delta") else { return };
        if let Some(rc) = delta.get("reasoningContent") {
            self.reasoning_delta(block, rc, out);
        } else if let Some(text) = delta.get("text").and_then(Value::as_str) {
            if !text.is_empty() {
                out.push(StreamEvent::Text {
                    index: 0,
                    text: text.to_string(),
                });
            }
        } else if let Some(input) = delta
            .get("toolUse")
            .and_then(|t| t.get("input"))
            .and_then(Value::as_str)
        {
            // Deltas of a block that never started as a tool use are dropped.
            let call = self
                .tool_blocks
                .iter()
                .find(|(b, _)| *b == block)
                .map(|(_, c)| *c);
            if let (Some(call), false) = (call, input.is_empty()) {
                out.push(StreamEvent::ToolCallArgs {
                    index: 0,
                    call,
                    arguments: input.to_string(),
                });
            }
        }
    }

    /// Claude's reasoning on Bedrock: text, then its signature (or redacted content) ends it.
    fn reasoning_delta(&mut self, block: u64, rc: &Value, out: &mut Vec<StreamEvent>) {
        self.reasoning = Some(block);
        if let Some(text) = rc.get("text").and_then(Value::as_str) {
            if !text.is_empty() {
                out.push(StreamEvent::Reasoning {
                    index: 0,
                    text: text.to_string(),
                });
            }
        } else if let Some(sig) = rc.get("signature").and_then(Value::as_str) {
            self.reasoning = None;
            out.push(StreamEvent::ReasoningEnd {
                index: 0,
                signature: Some(sig.to_string()),
                origin: Origin::Anthropic,
            });
        } else if let Some(data) = rc.get("redactedContent").and_then(Value::as_str) {
            self.reasoning = None;
            out.push(StreamEvent::RedactedReasoning {
                index: 0,
                data: data.to_string(),
                origin: Origin::Anthropic,
            });
        }
    }
}

/// An `exception` message of the stream, as the provider's error.
fn exception(msg: &eventstream::Message) -> ProviderError {
    let kind = msg.header_str(":exception-type").unwrap_or("exception");
    let payload: Option<Value> = serde_json::from_slice(&msg.payload).ok();
    let message = payload
        .as_ref()
        .and_then(|p| p.get("message").or_else(|| p.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| snippet(&msg.payload));
    map_error(
        PROVIDER,
        status_for_exception(kind),
        message,
        Some(kind.to_string()),
    )
}

impl StreamDecoder for Decoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) {
        if self.failed {
            return;
        }
        let mut frames = Vec::new();
        self.frames.feed(bytes, &mut frames);
        for f in frames {
            self.handle(f, out);
        }
    }

    /// A stream cut inside a frame, without any event, or before `messageStop` is
    /// reported as an `Error` event.
    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.failed {
            return;
        }
        let mut frames = Vec::new();
        self.frames.finish(&mut frames);
        for f in frames {
            self.handle(f, out);
        }
        if self.failed {
            return;
        }
        if !self.started {
            self.fail(
                unreadable("event stream", "it ended without any event"),
                out,
            );
        } else if !self.finished {
            self.fail(
                unreadable("event stream", "it ended before messageStop"),
                out,
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::providers::eventstream::{encode_frame, HeaderValue};
    use crate::providers::model::Tool;
    use crate::providers::{AwsCredentials, Defaults, Wire};

    const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

    fn target<'a>(defaults: &'a Defaults, aws: Option<&'a AwsCredentials>) -> Target<'a> {
        Target {
            wire: Wire::Bedrock,
            model: MODEL,
            api_version: None,
            defaults,
            aws,
            host: "bedrock-runtime.us-east-1.amazonaws.com",
            now_unix: 1_440_938_160,
        }
    }

    fn msg(role: Role, text: &str) -> Message {
        Message {
            role,
            content: vec![Part::Text(text.into())],
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
        }
    }

    fn encode(req: &ChatRequest) -> Value {
        let d = Defaults::default();
        let out = encode_request(req, &target(&d, None)).unwrap();
        serde_json::from_slice(&out.body).unwrap()
    }

    fn header<'a>(out: &'a Outgoing, name: &str) -> Option<&'a str> {
        out.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn paths_encode_the_model_id() {
        let d = Defaults::default();
        let mut req = ChatRequest {
            messages: vec![msg(Role::User, "hi")],
            ..Default::default()
        };
        let out = encode_request(&req, &target(&d, None)).unwrap();
        assert_eq!(
            out.path,
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert_eq!(header(&out, "accept"), Some("application/json"));
        assert_eq!(header(&out, "content-type"), Some("application/json"));
        assert_eq!(header(&out, "authorization"), None);
        req.stream = true;
        let out = encode_request(&req, &target(&d, None)).unwrap();
        assert_eq!(
            out.path,
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
        );
        assert_eq!(
            header(&out, "accept"),
            Some("application/vnd.amazon.eventstream")
        );
        let mut t = target(&d, None);
        t.model = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0";
        let out = encode_request(&req, &t).unwrap();
        assert_eq!(
            out.path,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
        );
    }

    #[test]
    fn system_merging_inference_config_and_defaults() {
        let req = ChatRequest {
            messages: vec![
                msg(Role::System, "You are terse."),
                msg(Role::User, "Hello"),
                msg(Role::User, "   "),
                msg(Role::User, "Anyone?"),
                msg(Role::Assistant, "Yes."),
                msg(Role::Assistant, "Hi."),
                msg(Role::User, "Bye"),
            ],
            temperature: Some(0.5),
            stop: vec!["\n\nHuman:".into()],
            seed: Some(1),
            n: Some(1),
            response_format: Some(json!({"type": "json_object"})),
            ..Default::default()
        };
        let defaults = Defaults {
            max_tokens: Some(512),
            temperature: Some(1.0),
            top_p: Some(0.9),
        };
        let out = encode_request(&req, &target(&defaults, None)).unwrap();
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            body,
            json!({
                "system": [{"text": "You are terse."}, {"text": "Respond only with a single valid JSON object, with no text before or after it."}],
                "messages": [
                    {"role": "user", "content": [{"text": "Hello"}, {"text": "Anyone?"}]},
                    {"role": "assistant", "content": [{"text": "Yes."}, {"text": "Hi."}]},
                    {"role": "user", "content": [{"text": "Bye"}]}
                ],
                "inferenceConfig": {"maxTokens": 512, "temperature": 0.5, "topP": 0.9,
                                    "stopSequences": ["\n\nHuman:"]}
            })
        );
    }

    #[test]
    fn images_need_bytes() {
        let mut m = msg(Role::User, "What is in this image?");
        m.content.push(Part::Image {
            url: "data:image/jpeg;base64,/9j/4AAQSkZJRg==".into(),
            detail: None,
        });
        let body = encode(&ChatRequest {
            messages: vec![m],
            ..Default::default()
        });
        assert_eq!(
            body["messages"][0]["content"][1],
            json!({"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQSkZJRg=="}}})
        );
        let d = Defaults::default();
        for (url, needle) in [
            ("https://example.com/cat.png", "needs image bytes"),
            ("data:image/bmp;base64,Qk0=", "image/bmp"),
            ("data:image/png,raw", "base64"),
        ] {
            let m = Message {
                content: vec![Part::Image {
                    url: url.into(),
                    detail: None,
                }],
                ..msg(Role::User, "")
            };
            let e = encode_request(
                &ChatRequest {
                    messages: vec![m],
                    ..Default::default()
                },
                &target(&d, None),
            )
            .unwrap_err();
            assert!(e.0.contains(needle), "{e}");
            assert!(e.0.starts_with("messages[0]"), "{e}");
        }
    }

    fn weather_tool() -> Tool {
        Tool {
            name: "top_song".into(),
            description: Some("Get the most popular song played on a radio station.".into()),
            parameters: json!({"type": "object", "properties": {"sign": {"type": "string"}},
                               "required": ["sign"]}),
            ..Default::default()
        }
    }

    fn tool_history() -> Vec<Message> {
        vec![
            msg(Role::User, "What is the most popular song on WZPZ?"),
            Message {
                tool_calls: vec![
                    ToolCall {
                        id: "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".into(),
                        name: "top_song".into(),
                        arguments: r#"{"sign":"WZPZ"}"#.into(),
                    },
                    ToolCall {
                        id: "tooluse_2".into(),
                        name: "top_song".into(),
                        arguments: "".into(),
                    },
                ],
                ..msg(Role::Assistant, "Let me look that up.")
            },
            Message {
                tool_call_id: Some("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".into()),
                ..msg(
                    Role::Tool,
                    r#"{"song":"Elemental Hotel","artist":"8 Storey Hike"}"#,
                )
            },
            Message {
                tool_call_id: Some("tooluse_2".into()),
                ..msg(Role::Tool, "Station not found")
            },
        ]
    }

    #[test]
    fn tool_use_and_results() {
        let body = encode(&ChatRequest {
            messages: tool_history(),
            tools: vec![weather_tool()],
            tool_choice: Some(ToolChoice::Auto),
            ..Default::default()
        });
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"text": "What is the most popular song on WZPZ?"}]},
                {"role": "assistant", "content": [
                    {"text": "Let me look that up."},
                    {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song",
                                 "input": {"sign": "WZPZ"}}},
                    {"toolUse": {"toolUseId": "tooluse_2", "name": "top_song", "input": {}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                                    "content": [{"json": {"song": "Elemental Hotel", "artist": "8 Storey Hike"}}]}},
                    {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "Station not found"}]}}
                ]}
            ])
        );
        assert_eq!(
            body["toolConfig"],
            json!({"tools": [{"toolSpec": {
                "name": "top_song",
                "description": "Get the most popular song played on a radio station.",
                "inputSchema": {"json": {"type": "object", "properties": {"sign": {"type": "string"}},
                                         "required": ["sign"]}}}}],
                   "toolChoice": {"auto": {}}})
        );
    }

    #[test]
    fn tool_choice_table() {
        let base = ChatRequest {
            messages: vec![msg(Role::User, "x")],
            tools: vec![weather_tool()],
            ..Default::default()
        };
        let cases = [
            (None, Some(Value::Null)),
            (Some(ToolChoice::Auto), Some(json!({"auto": {}}))),
            (Some(ToolChoice::Required), Some(json!({"any": {}}))),
            (
                Some(ToolChoice::Function("top_song".into())),
                Some(json!({"tool": {"name": "top_song"}})),
            ),
            (Some(ToolChoice::None), None),
        ];
        for (choice, expected) in cases {
            let body = encode(&ChatRequest {
                tool_choice: choice.clone(),
                ..base.clone()
            });
            match expected {
                None => assert!(body.get("toolConfig").is_none(), "{choice:?}"),
                Some(c) => {
                    assert_eq!(body["toolConfig"]["toolChoice"], c, "{choice:?}");
                    assert_eq!(
                        body["toolConfig"]["tools"][0]["toolSpec"]["name"],
                        "top_song"
                    );
                }
            }
        }
        // `none` with tool blocks in the history keeps the tools (Bedrock requires them).
        let body = encode(&ChatRequest {
            messages: tool_history(),
            tools: vec![weather_tool()],
            tool_choice: Some(ToolChoice::None),
            ..Default::default()
        });
        assert!(body["toolConfig"]["tools"].is_array());
        assert!(body["toolConfig"].get("toolChoice").is_none());
        // A tool without a schema gets an empty object schema.
        let body = encode(&ChatRequest {
            tools: vec![Tool {
                name: "ping".into(),
                description: None,
                parameters: Value::Null,
                ..Default::default()
            }],
            ..base
        });
        assert_eq!(
            body["toolConfig"]["tools"][0],
            json!({"toolSpec": {"name": "ping", "inputSchema": {"json": {"type": "object", "properties": {}}}}})
        );
    }

    #[test]
    fn json_schema_becomes_a_system_instruction_with_the_schema() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let body = encode(&ChatRequest {
            messages: vec![msg(Role::User, "Where?")],
            response_format: Some(
                json!({"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}),
            ),
            ..Default::default()
        });
        let system = body["system"].as_array().unwrap();
        assert_eq!(system.len(), 1);
        let text = system[0]["text"].as_str().unwrap();
        assert!(
            text.starts_with("Respond only with a single valid JSON value"),
            "{text}"
        );
        let given: Value = serde_json::from_str(text.rsplit_once('\n').unwrap().1).unwrap();
        assert_eq!(given, schema);
    }

    #[test]
    fn untranslatable_requests() {
        let d = Defaults::default();
        let base = ChatRequest {
            messages: vec![msg(Role::User, "x")],
            ..Default::default()
        };
        let bad = [
            ChatRequest {
                n: Some(2),
                ..base.clone()
            },
            ChatRequest {
                response_format: Some(json!({"type": "xml"})),
                ..base.clone()
            },
            ChatRequest {
                messages: vec![msg(Role::System, "only system")],
                ..base.clone()
            },
            ChatRequest {
                messages: vec![msg(Role::User, "x"), msg(Role::Tool, "no id")],
                ..base.clone()
            },
        ];
        for req in bad {
            assert!(encode_request(&req, &target(&d, None)).is_err(), "{req:?}");
        }
        let mut h = tool_history();
        h[1].tool_calls[0].arguments = "\"str\"".into();
        let e = encode_request(
            &ChatRequest {
                messages: h,
                ..base
            },
            &target(&d, None),
        )
        .unwrap_err();
        assert!(e.0.starts_with("messages[1].tool_calls[0]"), "{e}");
    }

    #[test]
    fn signed_request_headers() {
        let d = Defaults::default();
        let creds = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("SESSION".into()),
            region: "us-west-2".into(),
        };
        let req = ChatRequest {
            messages: vec![msg(Role::User, "hi")],
            ..Default::default()
        };
        let out = encode_request(&req, &target(&d, Some(&creds))).unwrap();
        assert_eq!(header(&out, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(header(&out, "x-amz-security-token"), Some("SESSION"));
        assert_eq!(header(&out, "accept"), Some("application/json"));
        let sha = crate::support::encoding::hex_lower(&crate::support::sha256::sha256(&out.body));
        assert_eq!(header(&out, "x-amz-content-sha256"), Some(sha.as_str()));
        let auth = header(&out, "authorization").unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-west-2/bedrock/aws4_request, \
             SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="
        ), "{auth}");
        // The signature covers the double-encoded path: recompute it independently.
        let signed: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            (
                "host".into(),
                "bedrock-runtime.us-east-1.amazonaws.com".into(),
            ),
            ("x-amz-content-sha256".into(), sha.clone()),
            ("x-amz-date".into(), "20150830T123600Z".into()),
            ("x-amz-security-token".into(), "SESSION".into()),
        ];
        let (creq, _) =
            crate::providers::sigv4::canonical_request("POST", &out.path, &signed, &sha);
        assert!(
            creq.starts_with(
                "POST\n/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse\n\n"
            ),
            "{creq}"
        );
        let expected = crate::providers::sigv4::authorization(
            "POST",
            &out.path,
            &signed,
            &sha,
            &creds,
            "bedrock",
            "20150830T123600Z",
        );
        assert_eq!(auth, expected);
        let mut t = target(&d, Some(&creds));
        t.host = "";
        assert!(encode_request(&req, &t).is_err());
    }

    // ------------------------------------------------------------- responses

    const TEXT_RESPONSE: &str = r#"{
      "output": {"message": {"role": "assistant", "content": [{"text": "Hello! How can I help?"}]}},
      "stopReason": "end_turn",
      "usage": {"inputTokens": 12, "outputTokens": 9, "totalTokens": 21},
      "metrics": {"latencyMs": 412}
    }"#;

    const TOOL_RESPONSE: &str = r#"{
      "output": {"message": {"role": "assistant", "content": [
        {"text": "I'll look that up."},
        {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}}
      ]}},
      "stopReason": "tool_use",
      "usage": {"inputTokens": 375, "outputTokens": 70, "totalTokens": 545,
                "cacheReadInputTokens": 60, "cacheWriteInputTokens": 40},
      "metrics": {"latencyMs": 1065}
    }"#;

    #[test]
    fn decodes_text_and_tool_responses() {
        let r = decode_response(200, TEXT_RESPONSE.as_bytes()).unwrap();
        assert!(r.id.starts_with("bedrock-"));
        assert_eq!(
            r.choices[0].message.content,
            vec![Part::Text("Hello! How can I help?".into())]
        );
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 9,
                ..Default::default()
            })
        );
        let r = decode_response(200, TOOL_RESPONSE.as_bytes()).unwrap();
        let c = &r.choices[0];
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            c.message.content,
            vec![Part::Text("I'll look that up.".into())]
        );
        assert_eq!(
            c.message.tool_calls,
            vec![ToolCall {
                id: "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".into(),
                name: "top_song".into(),
                arguments: r#"{"sign":"WZPZ"}"#.into()
            }]
        );
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 475,
                completion_tokens: 70,
                cached_tokens: 60,
                reasoning_tokens: 0,
                cache_write_tokens: 40,
            })
        );
        assert!(decode_response(200, b"{}").is_err());
        assert!(decode_response(200, b"nope").is_err());
    }

    #[test]
    fn stop_reason_table() {
        let cases = [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("guardrail_intervened", FinishReason::ContentFilter),
            ("content_filtered", FinishReason::ContentFilter),
            ("something_new", FinishReason::Stop),
        ];
        for (reason, expected) in cases {
            assert_eq!(finish_reason(reason), expected, "{reason}");
        }
    }

    #[test]
    fn error_table() {
        let cases: [(u16, &str, u16, &str, &str); 8] = [
            (
                400,
                r#"{"message":"Malformed input request: #: required key [messages] not found"}"#,
                400,
                "invalid_request_error",
                "ValidationException",
            ),
            (
                403,
                r#"{"message":"The security token included in the request is invalid."}"#,
                502,
                "server_error",
                "AccessDeniedException",
            ),
            (
                404,
                r#"{"message":"Could not resolve the foundation model from the provided model identifier."}"#,
                404,
                "not_found_error",
                "ResourceNotFoundException",
            ),
            (
                408,
                r#"{"message":"Model has timed out in processing the request."}"#,
                408,
                "invalid_request_error",
                "ModelTimeoutException",
            ),
            (
                429,
                r#"{"message":"Too many requests, please wait before trying again."}"#,
                429,
                "rate_limit_error",
                "ThrottlingException",
            ),
            (
                500,
                r#"{"Message":"Internal failure"}"#,
                500,
                "server_error",
                "InternalServerException",
            ),
            (
                503,
                r#"{"message":"Bedrock is unable to process your request."}"#,
                503,
                "server_error",
                "ServiceUnavailableException",
            ),
            (
                400,
                r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"bad"}"#,
                400,
                "invalid_request_error",
                "ValidationException",
            ),
        ];
        for (status, body, want_status, kind, code) in cases {
            let e = decode_error(status, body.as_bytes());
            assert_eq!((e.status, e.kind.as_str()), (want_status, kind), "{body}");
            assert_eq!(e.code.as_deref(), Some(code));
            assert_eq!(decode_response(status, body.as_bytes()), Err(e));
        }
        let e = decode_error(
            403,
            br#"{"message":"The security token included in the request is invalid."}"#,
        );
        assert_eq!(
            e.message,
            "Bedrock rejected the gateway's credentials (HTTP 403): The security token included in the request is invalid."
        );
        let e = decode_error(502, b"<html>bad gateway</html>");
        assert_eq!(
            e.message,
            "Bedrock returned HTTP 502: <html>bad gateway</html>"
        );
        assert_eq!(e.code, None);
        let e = decode_error(500, b"");
        assert_eq!(e.message, "Bedrock returned HTTP 500 with an empty body");
    }

    // ------------------------------------------------------------- stream

    fn event(kind: &str, payload: Value) -> Vec<u8> {
        encode_frame(
            &[
                (":event-type", HeaderValue::String(kind.into())),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type", HeaderValue::String("event".into())),
            ],
            payload.to_string().as_bytes(),
        )
    }

    fn stream_fixture() -> Vec<u8> {
        [
            event("messageStart", json!({"p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ", "role": "assistant"})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Let me"}, "p": "abcd"})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": " check ✓"}, "p": "abcdef"})),
            event("contentBlockStop", json!({"contentBlockIndex": 0, "p": "ab"})),
            event("contentBlockStart", json!({"contentBlockIndex": 1, "p": "abc",
                "start": {"toolUse": {"name": "top_song", "toolUseId": "tooluse_abc"}}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": ""}}, "p": "a"})),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"sign\": "}}, "p": "a"})),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"WZPZ\"}"}}, "p": "a"})),
            event("contentBlockStop", json!({"contentBlockIndex": 1, "p": "abcd"})),
            event("messageStop", json!({"p": "abcdefghij", "stopReason": "tool_use"})),
            event("metadata", json!({"metrics": {"latencyMs": 1028},
                "usage": {"inputTokens": 375, "outputTokens": 54, "totalTokens": 429}, "p": "ab"})),
        ]
        .concat()
    }

    fn run(chunks: &[&[u8]]) -> Vec<StreamEvent> {
        let mut d = stream_decoder();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn stream_events() {
        let bytes = stream_fixture();
        let events = run(&[&bytes]);
        assert!(
            matches!(&events[0], StreamEvent::Start { id, model } if id.starts_with("bedrock-") && model.is_empty())
        );
        assert_eq!(
            events[1..].to_vec(),
            vec![
                StreamEvent::Text {
                    index: 0,
                    text: "Let me".into()
                },
                StreamEvent::Text {
                    index: 0,
                    text: " check ✓".into()
                },
                StreamEvent::ToolCallStart {
                    index: 0,
                    call: 0,
                    id: "tooluse_abc".into(),
                    name: "top_song".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    call: 0,
                    arguments: "{\"sign\": ".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    call: 0,
                    arguments: "\"WZPZ\"}".into()
                },
                StreamEvent::Finish {
                    index: 0,
                    reason: FinishReason::ToolCalls
                },
                StreamEvent::Usage(Usage {
                    prompt_tokens: 375,
                    completion_tokens: 54,
                    ..Default::default()
                }),
            ]
        );
    }

    #[test]
    fn stream_every_split_matches_whole() {
        let bytes = stream_fixture();
        let whole = run(&[&bytes]);
        for i in 0..=bytes.len() {
            assert_eq!(run(&[&bytes[..i], &bytes[i..]]), whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles), whole);
        let threes: Vec<&[u8]> = bytes.chunks(3).collect();
        assert_eq!(run(&threes), whole);
    }

    #[test]
    fn stream_exceptions() {
        let start = event("messageStart", json!({"role": "assistant"}));
        let exc = encode_frame(
            &[
                (
                    ":exception-type",
                    HeaderValue::String("throttlingException".into()),
                ),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type", HeaderValue::String("exception".into())),
            ],
            br#"{"message":"Too many tokens, please wait before trying again."}"#,
        );
        let after = event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "ignored"}}),
        );
        let events = run(&[&start, &exc, &after]);
        assert_eq!(events.len(), 2);
        match &events[1] {
            StreamEvent::Error(e) => {
                assert_eq!((e.status, e.kind.as_str()), (429, "rate_limit_error"));
                assert_eq!(e.code.as_deref(), Some("throttlingException"));
                assert_eq!(
                    e.message,
                    "Too many tokens, please wait before trying again."
                );
            }
            other => panic!("{other:?}"),
        }
        let table = [
            ("validationException", 400),
            ("modelStreamErrorException", 502),
            ("internalServerException", 500),
            ("serviceUnavailableException", 503),
            ("modelTimeoutException", 504),
        ];
        for (kind, status) in table {
            let exc = encode_frame(
                &[
                    (":exception-type", HeaderValue::String(kind.into())),
                    (":message-type", HeaderValue::String("exception".into())),
                ],
                br#"{"message":"m"}"#,
            );
            let events = run(&[&exc]);
            assert!(
                matches!(&events[..], [StreamEvent::Error(e)] if e.status == status),
                "{kind}"
            );
        }
        let err = encode_frame(
            &[
                (":message-type", HeaderValue::String("error".into())),
                (":error-code", HeaderValue::String("InternalFailure".into())),
                (":error-message", HeaderValue::String("boom".into())),
            ],
            b"",
        );
        let events = run(&[&err]);
        assert!(matches!(&events[..], [StreamEvent::Error(e)]
            if e.message == "boom" && e.code.as_deref() == Some("InternalFailure")));
    }

    #[test]
    fn stream_corruption_and_truncation() {
        let mut bytes = stream_fixture();
        let n = bytes.len();
        bytes[n / 2] ^= 0x55;
        let events = run(&[&bytes]);
        assert!(matches!(events.last(), Some(StreamEvent::Error(e)) if e.message.contains("CRC")));
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, StreamEvent::Error(_)))
                .count(),
            1
        );
        // Cut mid-frame.
        let bytes = stream_fixture();
        let events = run(&[&bytes[..bytes.len() - 5]]);
        assert!(
            matches!(events.last(), Some(StreamEvent::Error(e)) if e.message.contains("inside a frame"))
        );
        // Whole frames, but no messageStop.
        let partial = [
            event("messageStart", json!({"role": "assistant"})),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "hi"}}),
            ),
        ]
        .concat();
        let events = run(&[&partial]);
        assert!(
            matches!(events.last(), Some(StreamEvent::Error(e)) if e.message.contains("messageStop"))
        );
        // Nothing at all.
        let events = run(&[]);
        assert!(
            matches!(&events[..], [StreamEvent::Error(e)] if e.message.contains("without any event"))
        );
        // A payload that is not JSON.
        let bad = encode_frame(
            &[(":event-type", HeaderValue::String("messageStop".into()))],
            b"{nope",
        );
        let events = run(&[&bad]);
        assert!(matches!(&events[..], [StreamEvent::Error(e)] if e.status == 502));
    }

    /// Garbage and mutated fixtures never panic any decoder (deterministic LCG "fuzzing").
    #[test]
    fn decoders_survive_garbage() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as u32
        };
        let fixture = stream_fixture();
        let gemini_fixture = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"finishReason\":\"STOP\"}]}\n\n";
        for round in 0..300 {
            let mut bytes = if round % 2 == 0 {
                fixture.clone()
            } else {
                gemini_fixture.to_vec()
            };
            for _ in 0..(1 + next() % 4) {
                let i = next() as usize % bytes.len();
                bytes[i] = next() as u8;
            }
            let cut = next() as usize % (bytes.len() + 1);
            let mut out = Vec::new();
            let mut b = stream_decoder();
            b.feed(&bytes[..cut], &mut out);
            b.feed(&bytes[cut..], &mut out);
            b.finish(&mut out);
            let mut g = crate::providers::gemini::stream_decoder();
            g.feed(&bytes[..cut], &mut out);
            g.feed(&bytes[cut..], &mut out);
            g.finish(&mut out);
            let _ = decode_response(200, &bytes);
            let _ = decode_error(400, &bytes);
            let _ = crate::providers::gemini::decode_response(200, &bytes);
            let _ = crate::providers::gemini::decode_error(500, &bytes);
        }
    }
}
