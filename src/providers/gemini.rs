//! Google Gemini (Generative Language API, `v1beta`) translation:
//! `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.
//!
//! Request: system messages → `systemInstruction`; user → role `user`, assistant → role
//! `model`; images → `inlineData` (data: URLs) or `fileData` (http/https); assistant tool
//! calls → `functionCall` parts; tool messages → `functionResponse` parts in a `user`
//! content; consecutive contents of one role are merged (Gemini wants parallel function
//! responses in one content). Tools → `functionDeclarations` with the JSON Schema keys
//! Gemini rejects removed; `tool_choice` → `toolConfig.functionCallingConfig`.
//!
//! Response: `candidates` → choices; `thought` parts are skipped; `functionCall` parts
//! become tool calls with ids `call_<n>` numbered across the response. A prompt blocked
//! by `promptFeedback.blockReason` (no candidates, HTTP 200) becomes a response with one
//! empty choice finished by `content_filter`, so clients see OpenAI's filter signal and
//! the usage is kept. `created` is 0: Gemini reports no creation time (the filter may
//! stamp its own clock).

use serde_json::{json, Map, Value};

use super::json::num;
use super::model::{
    call_id_with_signature, split_call_id, Choice, DocSource, FinishReason, Message, Origin, Part,
    Reasoning, Role, StreamEvent, ToolCall, ToolChoice, Usage,
};
use super::util::{guess_image_mime, joined_text, map_error, parse_data_url, snippet, stable_id};
use super::{
    ChatRequest, ChatResponse, Outgoing, ProviderError, StreamDecoder, Target, TranslateError,
};
use crate::stream::SseParser;
use crate::support::encoding::uri_encode;

const PROVIDER: &str = "Gemini";
/// Largest unfinished SSE event the stream decoder holds before giving up.
const MAX_PENDING: usize = 16 * 1024 * 1024;

fn terr(msg: impl Into<String>) -> TranslateError {
    TranslateError(msg.into())
}

// ================================================================= request

/// Translates a canonical request into a Gemini `generateContent` call.
pub fn encode_request(req: &ChatRequest, t: &Target) -> Result<Outgoing, TranslateError> {
    if let Some(n) = req.first_native() {
        return Err(terr(format!(
            "{}: a \"{}\" item can only be sent to an OpenAI Responses backend",
            n.path, n.kind
        )));
    }
    let (system, contents) = contents(req)?;
    if contents.is_empty() {
        return Err(terr("Gemini needs at least one user or assistant message"));
    }

    let mut body = Map::new();
    body.insert(
        "contents".into(),
        Value::Array(
            contents
                .into_iter()
                .map(|(role, parts)| json!({ "role": role, "parts": parts }))
                .collect(),
        ),
    );
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req.tools.iter().map(declaration).collect();
        body.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
    }
    if let Some(choice) = &req.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({ "mode": "AUTO" }),
            ToolChoice::None => json!({ "mode": "NONE" }),
            ToolChoice::Required => json!({ "mode": "ANY" }),
            ToolChoice::Function(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
        };
        body.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": config }),
        );
    }
    let generation = generation_config(req, t)?;
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }

    let model = t.model.strip_prefix("models/").unwrap_or(t.model);
    let model = uri_encode(model, true);
    let path = if req.stream {
        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{model}:generateContent")
    };
    let body = serde_json::to_vec(&Value::Object(body))
        .map_err(|e| terr(format!("cannot serialise the Gemini request: {e}")))?;
    Ok(Outgoing {
        path,
        body,
        headers: vec![("content-type".into(), "application/json".into())],
    })
}

/// A role's parts, in order.
type Contents = Vec<(&'static str, Vec<Value>)>;

/// The canonical messages as Gemini's system instruction parts and contents.
fn contents(req: &ChatRequest) -> Result<(Vec<Value>, Contents), TranslateError> {
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Contents = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System => {
                for p in &m.content {
                    match p {
                        Part::Text(text) if !text.is_empty() => system.push(json!({ "text": text })),
                        Part::Image { .. } | Part::Document(_) => {
                            return Err(terr(format!(
                                "messages[{i}]: Gemini system instructions can hold only text, not images or documents"
                            )))
                        }
                        _ => {}
                    }
                }
            }
            Role::User => push_content(&mut contents, "user", content_parts(&m.content, i)?),
            Role::Assistant => {
                let mut parts = content_parts(&m.content, i)?;
                for (j, call) in m.tool_calls.iter().enumerate() {
                    parts.push(function_call(call, i, j)?);
                }
                push_content(&mut contents, "model", parts);
            }
            Role::Tool => push_content(&mut contents, "user", function_response(req, m, i)?),
        }
    }
    Ok((system, contents))
}

/// A tool message as a `functionResponse` part (named after the call it answers), with the
/// images the tool returned next to it.
/// An assistant's tool call as a `functionCall` part. The thought signature Gemini gave the
/// call comes back with it (Gemini refuses a turn whose function calls lost theirs).
fn function_call(call: &ToolCall, i: usize, j: usize) -> Result<Value, TranslateError> {
    let args = parse_args(&call.arguments).map_err(|e| {
        terr(format!(
            "messages[{i}].tool_calls[{j}].function.arguments: {e}"
        ))
    })?;
    let mut part = json!({ "functionCall": { "name": call.name, "args": args } });
    if let (Some(sig), Some(o)) = (split_call_id(&call.id).1, part.as_object_mut()) {
        o.insert("thoughtSignature".into(), Value::String(sig));
    }
    Ok(part)
}

fn function_response(
    req: &ChatRequest,
    m: &Message,
    i: usize,
) -> Result<Vec<Value>, TranslateError> {
    let name = tool_name_for(req, i)?;
    let text = joined_text(&m.content);
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => json!({ "content": text }),
    };
    let mut parts = vec![json!({ "functionResponse": { "name": name, "response": response } })];
    let images: Vec<Part> = m
        .content
        .iter()
        .filter(|p| matches!(p, Part::Image { .. }))
        .cloned()
        .collect();
    parts.extend(content_parts(&images, i)?);
    Ok(parts)
}

/// A tool as a function declaration.
fn declaration(tool: &super::model::Tool) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), json!(tool.name));
    if let Some(desc) = &tool.description {
        d.insert("description".into(), json!(desc));
    }
    if let Some(params) = function_parameters(&tool.parameters) {
        d.insert("parameters".into(), params);
    }
    Value::Object(d)
}

fn push_content(contents: &mut Contents, role: &'static str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(parts),
        _ => contents.push((role, parts)),
    }
}

fn content_parts(content: &[Part], i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut parts = Vec::new();
    for p in content {
        match p {
            Part::Text(text) => {
                if !text.is_empty() {
                    parts.push(json!({ "text": text }));
                }
            }
            Part::Document(d) => match &d.source {
                DocSource::Text(text) => parts.push(json!({ "text": text })),
                DocSource::Data(url) => {
                    match parse_data_url(url).map_err(|e| terr(format!("messages[{i}]: {e}")))? {
                        Some(d) => parts.push(
                            json!({ "inlineData": { "mimeType": d.mime, "data": d.base64 } }),
                        ),
                        None => {
                            return Err(terr(format!(
                                "messages[{i}]: a document's data must be a base64 data: URL"
                            )))
                        }
                    }
                }
                DocSource::Url(url) => parts.push(
                    json!({ "fileData": { "mimeType": guess_image_mime(url), "fileUri": url } }),
                ),
                DocSource::File(id) => {
                    return Err(terr(format!(
                        "messages[{i}]: the file id \"{id}\" belongs to another provider; send the document's data"
                    )))
                }
            },
            // Thought summaries need not come back (Gemini keeps what it needs in the
            // signatures of the function calls); breakpoints: Gemini caches by itself.
            Part::Reasoning(_) | Part::CachePoint(_) | Part::Native(_) => {}
            Part::Image { url, .. } => {
                let data = parse_data_url(url).map_err(|e| terr(format!("messages[{i}]: {e}")))?;
                if let Some(d) = data {
                    parts.push(json!({ "inlineData": { "mimeType": d.mime, "data": d.base64 } }));
                } else if url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with("gs://")
                {
                    parts.push(json!({ "fileData": { "mimeType": guess_image_mime(url), "fileUri": url } }));
                } else {
                    return Err(terr(format!(
                        "messages[{i}]: image URL must be a data: URL or an http(s) URL"
                    )));
                }
            }
        }
    }
    Ok(parts)
}

/// Parses tool-call arguments: an empty string is `{}`; anything else must be a JSON object.
fn parse_args(arguments: &str) -> Result<Value, String> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => Ok(Value::Object(o)),
        Ok(_) => Err("must be a JSON object".into()),
        Err(e) => Err(format!("not valid JSON ({e})")),
    }
}

/// The function name a tool message answers: the latest earlier assistant tool call with
/// its `tool_call_id` (ids may repeat across turns), else the message's own `name`.
fn tool_name_for(req: &ChatRequest, i: usize) -> Result<String, TranslateError> {
    let Some(m) = req.messages.get(i) else {
        return Err(terr(format!("messages[{i}] is missing")));
    };
    if let Some(id) = &m.tool_call_id {
        let found = req
            .messages
            .get(..i)
            .unwrap_or_default()
            .iter()
            .rev()
            .flat_map(|prev| prev.tool_calls.iter())
            .find(|call| &call.id == id);
        if let Some(call) = found {
            return Ok(call.name.clone());
        }
    }
    match &m.name {
        Some(name) => Ok(name.clone()),
        None => Err(terr(format!(
            "messages[{i}]: tool message answers tool_call_id {:?}, which no earlier assistant \
             tool call has; Gemini needs the function name",
            m.tool_call_id.as_deref().unwrap_or("")
        ))),
    }
}

/// The declaration `parameters`: the cleaned schema, or none for a function without
/// parameters (Gemini rejects an OBJECT schema with no properties).
fn function_parameters(params: &Value) -> Option<Value> {
    let cleaned = clean_schema(params);
    let obj = cleaned.as_object()?;
    let is_object = obj.get("type").and_then(Value::as_str) == Some("object");
    let no_props = obj
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if is_object && no_props {
        return None;
    }
    Some(cleaned)
}

/// Removes the JSON Schema keys Gemini rejects (`$schema`, `additionalProperties`)
/// everywhere in a schema, leaving property *names* alone.
pub fn clean_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                match k.as_str() {
                    "$schema" | "additionalProperties" => {}
                    "properties" | "$defs" | "definitions" | "patternProperties" => {
                        let cleaned = match v {
                            Value::Object(props) => Value::Object(
                                props
                                    .iter()
                                    .map(|(n, s)| (n.clone(), clean_schema(s)))
                                    .collect(),
                            ),
                            other => other.clone(),
                        };
                        out.insert(k.clone(), cleaned);
                    }
                    _ => {
                        out.insert(k.clone(), clean_schema(v));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(clean_schema).collect()),
        other => other.clone(),
    }
}

fn generation_config(req: &ChatRequest, t: &Target) -> Result<Map<String, Value>, TranslateError> {
    let mut g = Map::new();
    if let Some(v) = req.temperature.or(t.defaults.temperature) {
        g.insert("temperature".into(), json!(v));
    }
    if let Some(v) = req.top_p.or(t.defaults.top_p) {
        g.insert("topP".into(), json!(v));
    }
    if let Some(v) = req.max_tokens.or(t.defaults.max_tokens) {
        g.insert("maxOutputTokens".into(), json!(v));
    }
    if !req.stop.is_empty() {
        g.insert("stopSequences".into(), json!(req.stop));
    }
    if let Some(n) = req.n {
        g.insert("candidateCount".into(), json!(n));
    }
    if let Some(seed) = req.seed {
        g.insert("seed".into(), json!(seed));
    }
    if let Some(r) = &req.reasoning {
        let mut thinking = Map::new();
        if r.off() {
            thinking.insert("thinkingBudget".into(), json!(0));
        } else {
            if let Some(b) = r.budget(None) {
                thinking.insert("thinkingBudget".into(), json!(b));
            } else if r.mode.as_deref() == Some("adaptive") {
                thinking.insert("thinkingBudget".into(), json!(-1));
            }
            // Thought summaries for clients that asked for reasoning to be shown.
            if r.summary.as_deref() != Some("omitted") {
                thinking.insert("includeThoughts".into(), json!(true));
            }
        }
        g.insert("thinkingConfig".into(), Value::Object(thinking));
    }
    if let Some(format) = &req.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                g.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                let schema = format
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .ok_or_else(|| terr("response_format json_schema needs json_schema.schema"))?;
                g.insert("responseMimeType".into(), json!("application/json"));
                g.insert("responseSchema".into(), clean_schema(schema));
            }
            Some("text") | None => {}
            Some(other) => {
                return Err(terr(format!(
                    "response_format type {other:?} is not supported for Gemini"
                )))
            }
        }
    }
    Ok(g)
}

// ================================================================= response

/// What one candidate part means to us.
enum Piece {
    Text(String),
    /// A thought summary (`thought: true`).
    Thought(String),
    Call {
        name: String,
        args: String,
        /// Gemini's `thoughtSignature` on the call.
        signature: Option<String>,
    },
}

fn pieces(candidate: &Value) -> Vec<Piece> {
    let parts = candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array);
    let mut out = Vec::new();
    for part in parts.into_iter().flatten() {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                out.push(Piece::Thought(text.to_string()));
            }
            continue;
        }
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            out.push(Piece::Text(text.to_string()));
        } else if let Some(call) = part.get("functionCall") {
            let name = call
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let args = match call.get("args") {
                Some(a @ Value::Object(_)) => a.to_string(),
                _ => "{}".to_string(),
            };
            let signature = part
                .get("thoughtSignature")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            out.push(Piece::Call {
                name,
                args,
                signature,
            });
        }
    }
    out
}

/// Maps a Gemini `finishReason`; `STOP` after a function call is `tool_calls`.
pub fn finish_reason(reason: &str, had_call: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ if had_call => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usageMetadata")?;
    let n = |k: &str| num(u.get(k));
    let thoughts = n("thoughtsTokenCount");
    Some(Usage {
        prompt_tokens: n("promptTokenCount").saturating_add(n("toolUsePromptTokenCount")),
        completion_tokens: n("candidatesTokenCount").saturating_add(thoughts),
        cached_tokens: n("cachedContentTokenCount"),
        reasoning_tokens: thoughts,
        cache_write_tokens: 0,
    })
}

fn candidate_index(c: &Value, position: usize) -> u32 {
    c.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .unwrap_or(position as u32)
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError {
        status: 502,
        kind: "server_error".into(),
        message: format!("Gemini returned an unreadable {what}: {e}"),
        code: None,
    }
}

fn blocked(v: &Value) -> Option<&str> {
    let no_candidates = v
        .get("candidates")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if !no_candidates {
        return None;
    }
    v.get("promptFeedback")?.get("blockReason")?.as_str()
}

/// Decodes a non-streaming `generateContent` answer.
pub fn decode_response(status: u16, body: &[u8]) -> Result<ChatResponse, ProviderError> {
    if !(200..300).contains(&status) {
        return Err(decode_error(status, body));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| unreadable("response", e))?;
    if let Some(err) = v.get("error") {
        return Err(error_from_object(error_code(err).unwrap_or(500), err));
    }
    let id = v
        .get("responseId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| stable_id("gemini-", body));
    let model = v
        .get("modelVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut choices = Vec::new();
    let mut call_counter = 0u32;
    for (pos, c) in v
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        choices.push(candidate_choice(c, pos, &mut call_counter));
    }
    if choices.is_empty() {
        match blocked(&v) {
            Some(_) => choices.push(Choice {
                index: 0,
                message: assistant_message(String::new(), Vec::new()),
                finish_reason: Some(FinishReason::ContentFilter),
                refusal: None,
            }),
            None => {
                return Err(unreadable(
                    "response",
                    "no candidates and no promptFeedback.blockReason",
                ))
            }
        }
    }
    Ok(ChatResponse {
        id,
        model,
        created: 0,
        choices,
        usage: usage_of(&v),
    })
}

/// One candidate as a choice: its text, its thought summary (as reasoning, first) and its
/// function calls (numbered across the answer from `call_counter`).
fn candidate_choice(c: &Value, pos: usize, call_counter: &mut u32) -> Choice {
    let mut text = String::new();
    let mut thought = String::new();
    let mut calls = Vec::new();
    for piece in pieces(c) {
        match piece {
            Piece::Text(t) => text.push_str(&t),
            Piece::Thought(t) => thought.push_str(&t),
            Piece::Call {
                name,
                args,
                signature,
            } => {
                calls.push(ToolCall {
                    id: call_id(*call_counter, signature.as_deref()),
                    name,
                    arguments: args,
                });
                *call_counter = call_counter.saturating_add(1);
            }
        }
    }
    let finish = c
        .get("finishReason")
        .and_then(Value::as_str)
        .map(|r| finish_reason(r, !calls.is_empty()));
    let mut message = assistant_message(text, calls);
    if !thought.is_empty() {
        message
            .content
            .insert(0, Part::Reasoning(thought_of(thought)));
    }
    Choice {
        index: candidate_index(c, pos),
        message,
        finish_reason: finish,
        refusal: None,
    }
}

/// The id of the `n`th function call of an answer, carrying its thought signature.
fn call_id(n: u32, signature: Option<&str>) -> String {
    let id = format!("call_{n}");
    match signature {
        Some(sig) => call_id_with_signature(&id, sig),
        None => id,
    }
}

/// Thought summaries: reasoning to show, with no signature (Gemini signs function calls).
fn thought_of(text: String) -> Reasoning {
    Reasoning {
        text,
        signature: None,
        redacted: false,
        origin: Origin::Gemini,
        id: None,
    }
}

fn assistant_message(text: String, tool_calls: Vec<ToolCall>) -> Message {
    Message {
        role: Role::Assistant,
        content: if text.is_empty() {
            Vec::new()
        } else {
            vec![Part::Text(text)]
        },
        tool_calls,
        tool_call_id: None,
        name: None,
    }
}

/// Maps a Gemini error (`{"error":{"code","message","status"}}`, possibly wrapped in an
/// array) to OpenAI's vocabulary; `code` keeps Gemini's `status` string (e.g.
/// `INVALID_ARGUMENT`). A 400 whose details say `API_KEY_INVALID` is the gateway's key
/// being refused, so it is reported like a 401/403.
pub fn decode_error(status: u16, body: &[u8]) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| match v {
        Value::Array(items) => items.iter().find_map(|i| i.get("error")),
        other => other.get("error"),
    });
    let Some(err) = err else {
        let message = if body.is_empty() {
            format!("Gemini returned HTTP {status} with an empty body")
        } else {
            format!("Gemini returned HTTP {status}: {}", snippet(body))
        };
        return map_error(PROVIDER, status, message, None);
    };
    error_from_object(status, err)
}

/// The HTTP status an error object names in its `code`.
fn error_code(err: &Value) -> Option<u16> {
    err.get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
}

fn error_from_object(status: u16, err: &Value) -> ProviderError {
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("Gemini reported an error without a message")
        .to_string();
    let code = err
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| err.get("code").map(|c| c.to_string()));
    let key_invalid = err
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"));
    let status = if key_invalid { 401 } else { status };
    map_error(PROVIDER, status, message, code)
}

// ================================================================= stream

/// Streaming decoder for `streamGenerateContent?alt=sse`: every SSE `data:` is one
/// `GenerateContentResponse` chunk.
#[derive(Debug, Default)]
pub struct Decoder {
    sse: SseParser,
    started: bool,
    /// Per candidate index: tool calls so far, whether finished.
    calls: Vec<(u32, u32)>,
    finished: Vec<u32>,
    next_call_id: u32,
    failed: bool,
    /// Candidates whose thought summary is being streamed.
    thinking: Vec<u32>,
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

    fn calls_in(&self, index: u32) -> u32 {
        self.calls
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }

    fn bump_calls(&mut self, index: u32) -> u32 {
        match self.calls.iter_mut().find(|(i, _)| *i == index) {
            Some((_, n)) => {
                let call = *n;
                *n += 1;
                call
            }
            None => {
                self.calls.push((index, 1));
                0
            }
        }
    }

    fn handle_data(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => return self.fail(unreadable("stream chunk", e), out),
        };
        match v {
            Value::Array(items) => {
                for item in items {
                    self.handle_chunk(&item, data, out);
                }
            }
            other => self.handle_chunk(&other, data, out),
        }
    }

    fn handle_chunk(&mut self, v: &Value, raw: &str, out: &mut Vec<StreamEvent>) {
        if self.failed {
            return;
        }
        if let Some(err) = v.get("error") {
            let status = error_code(err).unwrap_or(500);
            return self.fail(error_from_object(status, err), out);
        }
        if !self.started {
            self.started = true;
            let id = v
                .get("responseId")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| stable_id("gemini-", raw.as_bytes()));
            let model = v
                .get("modelVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            out.push(StreamEvent::Start { id, model });
        }
        for (pos, c) in v
            .get("candidates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            self.candidate(c, pos, out);
        }
        if blocked(v).is_some() && !self.finished.contains(&0) {
            self.finished.push(0);
            out.push(StreamEvent::Finish {
                index: 0,
                reason: FinishReason::ContentFilter,
            });
        }
        if let Some(usage) = usage_of(v) {
            out.push(StreamEvent::Usage(usage));
        }
    }

    /// One candidate of a chunk: its thought summary, text and function calls as events, and
    /// its finish.
    fn candidate(&mut self, c: &Value, pos: usize, out: &mut Vec<StreamEvent>) {
        let index = candidate_index(c, pos);
        for piece in pieces(c) {
            if let Piece::Thought(text) = piece {
                if !self.thinking.contains(&index) {
                    self.thinking.push(index);
                }
                if !text.is_empty() {
                    out.push(StreamEvent::Reasoning { index, text });
                }
                continue;
            }
            self.end_thought(index, out);
            match piece {
                Piece::Thought(_) => {}
                Piece::Text(text) => {
                    if !text.is_empty() {
                        out.push(StreamEvent::Text { index, text });
                    }
                }
                Piece::Call {
                    name,
                    args,
                    signature,
                } => {
                    let call = self.bump_calls(index);
                    let id = call_id(self.next_call_id, signature.as_deref());
                    self.next_call_id = self.next_call_id.saturating_add(1);
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        call,
                        id,
                        name,
                    });
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        call,
                        arguments: args,
                    });
                }
            }
        }
        if let Some(reason) = c.get("finishReason").and_then(Value::as_str) {
            self.end_thought(index, out);
            if !self.finished.contains(&index) {
                self.finished.push(index);
                let reason = finish_reason(reason, self.calls_in(index) > 0);
                out.push(StreamEvent::Finish { index, reason });
            }
        }
    }

    /// A thought summary ends when the candidate's answer starts (or it finishes).
    fn end_thought(&mut self, index: u32, out: &mut Vec<StreamEvent>) {
        if let Some(pos) = self.thinking.iter().position(|i| *i == index) {
            self.thinking.remove(pos);
            out.push(StreamEvent::ReasoningEnd {
                index,
                signature: None,
                origin: Origin::Gemini,
            });
        }
    }

    fn drain(&mut self, events: Vec<crate::stream::SseEvent>, out: &mut Vec<StreamEvent>) {
        for ev in events {
            self.handle_data(&ev.data, out);
        }
    }
}

impl StreamDecoder for Decoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) {
        if self.failed {
            return;
        }
        let mut events = Vec::new();
        self.sse.feed(bytes, &mut events);
        self.drain(events, out);
        if !self.failed && self.sse.pending() > MAX_PENDING {
            self.sse = SseParser::new();
            self.fail(
                unreadable("stream", format!("an event exceeded {MAX_PENDING} bytes")),
                out,
            );
        }
    }

    /// Flushes a last unterminated event. A stream that ends without any chunk, or before
    /// a `finishReason`, was cut short: that is reported as an `Error` event.
    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.failed {
            return;
        }
        let mut events = Vec::new();
        self.sse.finish(&mut events);
        self.drain(events, out);
        if self.failed {
            return;
        }
        if !self.started {
            self.fail(unreadable("stream", "it ended without any data"), out);
        } else if self.finished.is_empty() {
            self.fail(unreadable("stream", "it ended before a finishReason"), out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::providers::{Defaults, Wire};

    fn target<'a>(defaults: &'a Defaults) -> Target<'a> {
        Target {
            wire: Wire::Gemini,
            model: "gemini-2.0-flash",
            api_version: None,
            defaults,
            aws: None,
            host: "generativelanguage.googleapis.com",
            now_unix: 0,
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

    fn encode(req: &ChatRequest) -> (String, Value) {
        let d = Defaults::default();
        let out = encode_request(req, &target(&d)).unwrap();
        (out.path, serde_json::from_slice(&out.body).unwrap())
    }

    #[test]
    fn paths_for_plain_and_streaming_calls() {
        let mut req = ChatRequest {
            messages: vec![msg(Role::User, "hi")],
            ..Default::default()
        };
        assert_eq!(
            encode(&req).0,
            "/v1beta/models/gemini-2.0-flash:generateContent"
        );
        req.stream = true;
        assert_eq!(
            encode(&req).0,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
        let d = Defaults::default();
        let mut t = target(&d);
        t.model = "models/gemini-1.5-pro";
        let out = encode_request(&req, &t).unwrap();
        assert_eq!(
            out.path,
            "/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse"
        );
        assert!(out.headers.iter().all(|(k, _)| k != "x-goog-api-key"));
    }

    #[test]
    fn system_roles_merging_and_generation_config() {
        let req = ChatRequest {
            messages: vec![
                msg(Role::System, "Be terse."),
                msg(Role::System, "Answer in French."),
                msg(Role::User, "Hello"),
                msg(Role::User, "Are you there?"),
                msg(Role::Assistant, "Oui."),
                msg(Role::User, "Bye"),
            ],
            temperature: Some(0.2),
            top_p: Some(0.9),
            stop: vec!["END".into()],
            n: Some(2),
            seed: Some(42),
            ..Default::default()
        };
        let defaults = Defaults {
            max_tokens: Some(256),
            temperature: Some(1.0),
            top_p: None,
        };
        let out = encode_request(&req, &target(&defaults)).unwrap();
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            body,
            json!({
                "systemInstruction": {"parts": [{"text": "Be terse."}, {"text": "Answer in French."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "Hello"}, {"text": "Are you there?"}]},
                    {"role": "model", "parts": [{"text": "Oui."}]},
                    {"role": "user", "parts": [{"text": "Bye"}]}
                ],
                "generationConfig": {
                    "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 256,
                    "stopSequences": ["END"], "candidateCount": 2, "seed": 42
                }
            })
        );
    }

    #[test]
    fn client_max_tokens_wins_over_default() {
        let req = ChatRequest {
            messages: vec![msg(Role::User, "x")],
            max_tokens: Some(10),
            ..Default::default()
        };
        let defaults = Defaults {
            max_tokens: Some(999),
            ..Default::default()
        };
        let out = encode_request(&req, &target(&defaults)).unwrap();
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body["generationConfig"], json!({"maxOutputTokens": 10}));
    }

    #[test]
    fn images_inline_and_by_uri() {
        let mut m = msg(Role::User, "What is this?");
        m.content.push(Part::Image {
            url: "data:image/png;base64,iVBORw0KGgo=".into(),
            detail: None,
        });
        m.content.push(Part::Image {
            url: "https://example.com/cat.webp?size=big".into(),
            detail: Some("high".into()),
        });
        m.content.push(Part::Image {
            url: "https://example.com/photo".into(),
            detail: None,
        });
        let (_, body) = encode(&ChatRequest {
            messages: vec![m],
            ..Default::default()
        });
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=big"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}}
            ])
        );
    }

    #[test]
    fn bad_images_are_translate_errors() {
        let d = Defaults::default();
        for url in ["data:image/png,notbase64", "ftp://x/y.png"] {
            let m = Message {
                content: vec![Part::Image {
                    url: url.into(),
                    detail: None,
                }],
                ..msg(Role::User, "")
            };
            let req = ChatRequest {
                messages: vec![m],
                ..Default::default()
            };
            let e = encode_request(&req, &target(&d)).unwrap_err();
            assert!(e.0.starts_with("messages[0]"), "{e}");
        }
        let mut sys = msg(Role::System, "x");
        sys.content.push(Part::Image {
            url: "data:image/png;base64,AA==".into(),
            detail: None,
        });
        let req = ChatRequest {
            messages: vec![sys, msg(Role::User, "u")],
            ..Default::default()
        };
        assert!(encode_request(&req, &target(&d)).is_err());
        let only_system = ChatRequest {
            messages: vec![msg(Role::System, "x")],
            ..Default::default()
        };
        assert!(encode_request(&only_system, &target(&d)).is_err());
    }

    fn tool_history() -> Vec<Message> {
        vec![
            msg(Role::User, "Weather in Paris and Rome?"),
            Message {
                role: Role::Assistant,
                content: vec![],
                tool_calls: vec![
                    ToolCall {
                        id: "call_a".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    },
                    ToolCall {
                        id: "call_b".into(),
                        name: "get_time".into(),
                        arguments: "".into(),
                    },
                ],
                tool_call_id: None,
                name: None,
            },
            Message {
                tool_call_id: Some("call_a".into()),
                ..msg(Role::Tool, r#"{"temp":21}"#)
            },
            Message {
                tool_call_id: Some("call_b".into()),
                ..msg(Role::Tool, "12:00")
            },
        ]
    }

    #[test]
    fn tool_calls_and_results() {
        let (_, body) = encode(&ChatRequest {
            messages: tool_history(),
            ..Default::default()
        });
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "get_time", "response": {"content": "12:00"}}}
                ]}
            ])
        );
    }

    #[test]
    fn tool_result_names_and_argument_errors() {
        let d = Defaults::default();
        // Unknown id, no name → error; unknown id with a name → that name.
        let mut req = ChatRequest {
            messages: vec![
                msg(Role::User, "x"),
                Message {
                    tool_call_id: Some("nope".into()),
                    ..msg(Role::Tool, "r")
                },
            ],
            ..Default::default()
        };
        let e = encode_request(&req, &target(&d)).unwrap_err();
        assert!(e.0.contains("nope"), "{e}");
        req.messages[1].name = Some("fallback".into());
        let (_, body) = encode(&req);
        assert_eq!(
            body["contents"][0]["parts"][1]["functionResponse"]["name"],
            "fallback"
        );
        // A repeated id resolves to the latest earlier call.
        let mut h = tool_history();
        h.truncate(3);
        h.push(Message {
            tool_calls: vec![ToolCall {
                id: "call_a".into(),
                name: "second".into(),
                arguments: "{}".into(),
            }],
            ..msg(Role::Assistant, "again")
        });
        h.push(Message {
            tool_call_id: Some("call_a".into()),
            ..msg(Role::Tool, "[1,2]")
        });
        let (_, body) = encode(&ChatRequest {
            messages: h,
            ..Default::default()
        });
        assert_eq!(
            body["contents"][4]["parts"][0],
            json!({"functionResponse": {"name": "second", "response": {"content": "[1,2]"}}})
        );
        // Arguments that are not a JSON object.
        for bad in ["[1]", "{oops"] {
            let mut h = tool_history();
            h[1].tool_calls[0].arguments = bad.into();
            let e = encode_request(
                &ChatRequest {
                    messages: h,
                    ..Default::default()
                },
                &target(&d),
            )
            .unwrap_err();
            assert!(e.0.starts_with("messages[1].tool_calls[0]"), "{e}");
        }
    }

    #[test]
    fn tools_schema_cleaning_and_tool_choice() {
        let params = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "additionalProperties": {"type": "string", "additionalProperties": true},
                "loc": {"type": "object", "additionalProperties": false,
                        "properties": {"city": {"type": "string"}}},
                "tags": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                         "properties": {"k": {"type": "string"}}}}
            },
            "required": ["loc"]
        });
        let tools = vec![
            crate::providers::model::Tool {
                name: "f".into(),
                description: Some("does f".into()),
                parameters: params,
                ..Default::default()
            },
            crate::providers::model::Tool {
                name: "g".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {}}),
                ..Default::default()
            },
        ];
        let choices = [
            (ToolChoice::Auto, json!({"mode": "AUTO"})),
            (ToolChoice::None, json!({"mode": "NONE"})),
            (ToolChoice::Required, json!({"mode": "ANY"})),
            (
                ToolChoice::Function("f".into()),
                json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
            ),
        ];
        for (choice, expected) in choices {
            let (_, body) = encode(&ChatRequest {
                messages: vec![msg(Role::User, "x")],
                tools: tools.clone(),
                tool_choice: Some(choice),
                ..Default::default()
            });
            assert_eq!(
                body["toolConfig"],
                json!({"functionCallingConfig": expected})
            );
            assert_eq!(
                body["tools"],
                json!([{"functionDeclarations": [
                    {"name": "f", "description": "does f", "parameters": {
                        "type": "object",
                        "properties": {
                            "additionalProperties": {"type": "string"},
                            "loc": {"type": "object", "properties": {"city": {"type": "string"}}},
                            "tags": {"type": "array", "items": {"type": "object",
                                     "properties": {"k": {"type": "string"}}}}
                        },
                        "required": ["loc"]
                    }},
                    {"name": "g"}
                ]}])
            );
        }
        let (_, body) = encode(&ChatRequest {
            messages: vec![msg(Role::User, "x")],
            tools,
            ..Default::default()
        });
        assert!(body.get("toolConfig").is_none());
    }

    #[test]
    fn response_formats() {
        let base = ChatRequest {
            messages: vec![msg(Role::User, "x")],
            ..Default::default()
        };
        let (_, body) = encode(&ChatRequest {
            response_format: Some(json!({"type": "json_object"})),
            ..base.clone()
        });
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        let (_, body) = encode(&ChatRequest {
            response_format: Some(json!({"type": "json_schema", "json_schema": {
                "name": "r", "strict": true,
                "schema": {"type": "object", "additionalProperties": false,
                           "properties": {"a": {"type": "integer"}}}}})),
            ..base.clone()
        });
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json", "responseSchema":
                {"type": "object", "properties": {"a": {"type": "integer"}}}})
        );
        let (_, body) = encode(&ChatRequest {
            response_format: Some(json!({"type": "text"})),
            ..base.clone()
        });
        assert!(body.get("generationConfig").is_none());
        let d = Defaults::default();
        let bad = ChatRequest {
            response_format: Some(json!({"type": "json_schema"})),
            ..base
        };
        assert!(encode_request(&bad, &target(&d)).is_err());
    }

    // ------------------------------------------------------------- responses

    const TEXT_RESPONSE: &str = r#"{
      "candidates": [{
        "content": {"parts": [
            {"text": "Let me think.", "thought": true},
            {"text": "Hello"}, {"text": ", world!"}], "role": "model"},
        "finishReason": "STOP",
        "avgLogprobs": -0.05
      }],
      "usageMetadata": {
        "promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 27,
        "cachedContentTokenCount": 4, "thoughtsTokenCount": 12,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}]
      },
      "modelVersion": "gemini-2.5-flash",
      "responseId": "mAitaLmkHPPlz7IPvtfUqQ4"
    }"#;

    #[test]
    fn decodes_text_response_with_usage() {
        let r = decode_response(200, TEXT_RESPONSE.as_bytes()).unwrap();
        assert_eq!(r.id, "mAitaLmkHPPlz7IPvtfUqQ4");
        assert_eq!(r.model, "gemini-2.5-flash");
        assert_eq!(r.choices.len(), 1);
        assert_eq!(r.choices[0].index, 0);
        // The thought summary is kept as reasoning (before it was dropped), ahead of the text.
        assert_eq!(
            r.choices[0].message.content,
            vec![
                Part::Reasoning(thought_of("Let me think.".into())),
                Part::Text("Hello, world!".into())
            ]
        );
        assert_eq!(r.choices[0].message.role, Role::Assistant);
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 17,
                cached_tokens: 4,
                reasoning_tokens: 12,
                cache_write_tokens: 0,
            })
        );
    }

    const CALL_RESPONSE: &str = r#"{
      "candidates": [
        {"content": {"role": "model", "parts": [
            {"functionCall": {"name": "set_light_values", "args": {"brightness": 25, "color_temp": "warm"}}},
            {"functionCall": {"name": "noop"}}]},
         "finishReason": "STOP", "index": 0},
        {"content": {"role": "model", "parts": [
            {"functionCall": {"name": "set_light_values", "args": {"brightness": 50}}}]},
         "finishReason": "STOP", "index": 1}
      ],
      "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 8, "totalTokenCount": 38},
      "modelVersion": "gemini-2.0-flash"
    }"#;

    #[test]
    fn decodes_function_calls_with_deterministic_ids() {
        let r = decode_response(200, CALL_RESPONSE.as_bytes()).unwrap();
        assert!(r.id.starts_with("gemini-"));
        assert_eq!(
            r.id,
            decode_response(200, CALL_RESPONSE.as_bytes()).unwrap().id
        );
        assert_eq!(r.choices.len(), 2);
        let c0 = &r.choices[0];
        assert_eq!(c0.finish_reason, Some(FinishReason::ToolCalls));
        assert!(c0.message.content.is_empty());
        assert_eq!(c0.message.tool_calls[0].id, "call_0");
        assert_eq!(c0.message.tool_calls[0].name, "set_light_values");
        let args: Value = serde_json::from_str(&c0.message.tool_calls[0].arguments).unwrap();
        assert_eq!(args, json!({"brightness": 25, "color_temp": "warm"}));
        assert_eq!(c0.message.tool_calls[1].id, "call_1");
        assert_eq!(c0.message.tool_calls[1].arguments, "{}");
        assert_eq!(r.choices[1].index, 1);
        assert_eq!(r.choices[1].message.tool_calls[0].id, "call_2");
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 30,
                completion_tokens: 8,
                ..Default::default()
            })
        );
    }

    #[test]
    fn finish_reason_table() {
        let cases = [
            ("STOP", false, FinishReason::Stop),
            ("STOP", true, FinishReason::ToolCalls),
            ("MAX_TOKENS", false, FinishReason::Length),
            ("MAX_TOKENS", true, FinishReason::Length),
            ("SAFETY", false, FinishReason::ContentFilter),
            ("RECITATION", false, FinishReason::ContentFilter),
            ("BLOCKLIST", false, FinishReason::ContentFilter),
            ("PROHIBITED_CONTENT", false, FinishReason::ContentFilter),
            ("SPII", false, FinishReason::ContentFilter),
            ("IMAGE_SAFETY", false, FinishReason::ContentFilter),
            ("OTHER", false, FinishReason::Stop),
            ("MALFORMED_FUNCTION_CALL", false, FinishReason::Stop),
            ("FINISH_REASON_UNSPECIFIED", false, FinishReason::Stop),
            ("LANGUAGE", false, FinishReason::Stop),
        ];
        for (reason, call, expected) in cases {
            assert_eq!(finish_reason(reason, call), expected, "{reason}");
        }
    }

    #[test]
    fn safety_finish_without_content() {
        let body = r#"{"candidates":[{"finishReason":"SAFETY","index":0,"safetyRatings":[
            {"category":"HARM_CATEGORY_HARASSMENT","probability":"HIGH","blocked":true}]}],
            "usageMetadata":{"promptTokenCount":7,"totalTokenCount":7}}"#;
        let r = decode_response(200, body.as_bytes()).unwrap();
        assert_eq!(
            r.choices[0].finish_reason,
            Some(FinishReason::ContentFilter)
        );
        assert!(r.choices[0].message.content.is_empty());
    }

    #[test]
    fn blocked_prompt_is_a_content_filter_response() {
        let body = r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},
            "usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-2.0-flash"}"#;
        let r = decode_response(200, body.as_bytes()).unwrap();
        assert_eq!(r.choices.len(), 1);
        assert_eq!(
            r.choices[0].finish_reason,
            Some(FinishReason::ContentFilter)
        );
        assert_eq!(r.usage.unwrap().prompt_tokens, 9);
        // Neither candidates nor a block reason: an unreadable answer.
        let e = decode_response(200, b"{}").unwrap_err();
        assert_eq!((e.status, e.kind.as_str()), (502, "server_error"));
        let e = decode_response(
            200,
            br#"{"error":{"code":429,"message":"q","status":"RESOURCE_EXHAUSTED"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 429);
        let e = decode_response(200, b"not json").unwrap_err();
        assert!(e.message.contains("unreadable"));
    }

    #[test]
    fn error_mapping() {
        let cases: [(u16, &str, u16, &str, Option<&str>); 7] = [
            (
                400,
                r#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}"#,
                400,
                "invalid_request_error",
                Some("INVALID_ARGUMENT"),
            ),
            (
                403,
                r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers.","status":"PERMISSION_DENIED"}}"#,
                502,
                "server_error",
                Some("PERMISSION_DENIED"),
            ),
            (
                404,
                r#"{"error":{"code":404,"message":"models/nope is not found for API version v1beta","status":"NOT_FOUND"}}"#,
                404,
                "not_found_error",
                Some("NOT_FOUND"),
            ),
            (
                429,
                r#"[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}]"#,
                429,
                "rate_limit_error",
                Some("RESOURCE_EXHAUSTED"),
            ),
            (
                500,
                r#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#,
                500,
                "server_error",
                Some("INTERNAL"),
            ),
            (
                503,
                r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#,
                503,
                "server_error",
                Some("UNAVAILABLE"),
            ),
            (502, "<html>Bad Gateway</html>", 502, "server_error", None),
        ];
        for (status, body, want_status, kind, code) in cases {
            let e = decode_error(status, body.as_bytes());
            assert_eq!((e.status, e.kind.as_str()), (want_status, kind), "{body}");
            assert_eq!(e.code.as_deref(), code);
            assert_eq!(decode_response(status, body.as_bytes()), Err(e));
        }
        let e = decode_error(404, b"{\"error\":{\"code\":404,\"message\":\"models/nope is not found\",\"status\":\"NOT_FOUND\"}}");
        assert_eq!(e.message, "models/nope is not found");
        let e = decode_error(502, b"<html>Bad Gateway</html>");
        assert_eq!(
            e.message,
            "Gemini returned HTTP 502: <html>Bad Gateway</html>"
        );
        let e = decode_error(503, b"");
        assert_eq!(e.message, "Gemini returned HTTP 503 with an empty body");
        let key = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",
            "status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",
            "reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        let e = decode_error(400, key.as_bytes());
        assert_eq!(e.status, 502);
        assert!(
            e.message.contains("rejected the gateway's credentials"),
            "{}",
            e.message
        );
    }

    // ------------------------------------------------------------- stream

    const STREAM: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"thinking\", \"thought\": true}],\"role\": \"model\"}}],",
        "\"usageMetadata\": {\"promptTokenCount\": 9,\"totalTokenCount\": 9},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r-1\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The sky\"}],\"role\": \"model\"}}],",
        "\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 2,\"totalTokenCount\": 11},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r-1\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" is blue ✓\"},",
        "{\"functionCall\": {\"name\": \"lookup\", \"args\": {\"q\": \"sky\"}}}],\"role\": \"model\"},\"finishReason\": \"STOP\"}],",
        "\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 6,\"totalTokenCount\": 20,",
        "\"thoughtsTokenCount\": 5},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r-1\"}\r\n\r\n"
    );

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
        let events = run(&[STREAM.as_bytes()]);
        let u = |p, c, r| {
            StreamEvent::Usage(Usage {
                prompt_tokens: p,
                completion_tokens: c,
                cached_tokens: 0,
                reasoning_tokens: r,
                cache_write_tokens: 0,
            })
        };
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "r-1".into(),
                    model: "gemini-2.5-flash".into()
                },
                StreamEvent::Reasoning {
                    index: 0,
                    text: "thinking".into()
                },
                u(9, 0, 0),
                // The summary ends when the answer starts.
                StreamEvent::ReasoningEnd {
                    index: 0,
                    signature: None,
                    origin: Origin::Gemini,
                },
                StreamEvent::Text {
                    index: 0,
                    text: "The sky".into()
                },
                u(9, 2, 0),
                StreamEvent::Text {
                    index: 0,
                    text: " is blue ✓".into()
                },
                StreamEvent::ToolCallStart {
                    index: 0,
                    call: 0,
                    id: "call_0".into(),
                    name: "lookup".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    call: 0,
                    arguments: "{\"q\":\"sky\"}".into()
                },
                StreamEvent::Finish {
                    index: 0,
                    reason: FinishReason::ToolCalls
                },
                u(9, 11, 5),
            ]
        );
    }

    #[test]
    fn stream_every_split_matches_whole() {
        let whole = run(&[STREAM.as_bytes()]);
        let bytes = STREAM.as_bytes();
        for i in 0..=bytes.len() {
            assert_eq!(run(&[&bytes[..i], &bytes[i..]]), whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles), whole);
    }

    #[test]
    fn stream_errors_and_truncation() {
        let err = "data: {\"error\": {\"code\": 429, \"message\": \"quota\", \"status\": \"RESOURCE_EXHAUSTED\"}}\n\n";
        let events = run(&[err.as_bytes()]);
        assert_eq!(events.len(), 1);
        assert!(matches!(&events[0], StreamEvent::Error(e)
            if e.status == 429 && e.kind == "rate_limit_error" && e.code.as_deref() == Some("RESOURCE_EXHAUSTED")));

        let events = run(&[b"data: {not json\n\n"]);
        assert!(matches!(&events[..], [StreamEvent::Error(e)] if e.status == 502));

        // Cut before a finishReason.
        let cut = STREAM.split("\r\n\r\n").next().unwrap();
        let events = run(&[cut.as_bytes()]);
        assert!(
            matches!(events.last(), Some(StreamEvent::Error(e)) if e.message.contains("finishReason"))
        );

        let events = run(&[]);
        assert!(
            matches!(&events[..], [StreamEvent::Error(e)] if e.message.contains("without any data"))
        );
    }

    #[test]
    fn stream_blocked_prompt() {
        let body = "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}, \"usageMetadata\": {\"promptTokenCount\": 3}, \"modelVersion\": \"m\"}\n\n";
        let events = run(&[body.as_bytes()]);
        assert_eq!(
            events[1],
            StreamEvent::Finish {
                index: 0,
                reason: FinishReason::ContentFilter
            }
        );
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn stream_multiple_candidates() {
        let body = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"index\":0},",
            "{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{}}}]},\"index\":1,\"finishReason\":\"STOP\"}]}\n\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"index\":0,\"finishReason\":\"MAX_TOKENS\"}]}\n\n"
        );
        let events = run(&[body.as_bytes()]);
        assert!(matches!(&events[0], StreamEvent::Start { id, .. } if id.starts_with("gemini-")));
        assert_eq!(
            events[1..].to_vec(),
            vec![
                StreamEvent::Text {
                    index: 0,
                    text: "a".into()
                },
                StreamEvent::ToolCallStart {
                    index: 1,
                    call: 0,
                    id: "call_0".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 1,
                    call: 0,
                    arguments: "{}".into()
                },
                StreamEvent::Finish {
                    index: 1,
                    reason: FinishReason::ToolCalls
                },
                StreamEvent::Text {
                    index: 0,
                    text: "b".into()
                },
                StreamEvent::Finish {
                    index: 0,
                    reason: FinishReason::Length
                },
            ]
        );
    }
}
