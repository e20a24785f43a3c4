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
    split_call_id, CachePoint, ChatRequest, ChatResponse, Choice, DocSource, Document,
    FinishReason, Message, Origin, Part, ProviderError, Reasoning, ReasoningConfig, Role,
    StreamEvent, Tool, ToolCall, ToolChoice, Usage,
};
use super::openai::text_of;
use super::util::{format_instruction, parse_data_url, DataUrl};
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
    let body = request_body(req, t.model, t.defaults, Extras::Messages)?;
    Ok(Outgoing {
        path: "/v1/messages".to_string(),
        body,
        headers: headers(req),
    })
}

/// `anthropic-version`, and the client's beta features when it named some.
pub(crate) fn headers(req: &ChatRequest) -> Vec<(String, String)> {
    let mut h = vec![("anthropic-version".to_string(), API_VERSION.to_string())];
    if !req.anthropic_beta.is_empty() {
        h.push(("anthropic-beta".to_string(), req.anthropic_beta.join(",")));
    }
    h
}

/// Which Anthropic request to write: a Messages call, or a `count_tokens` call (the same
/// prompt without the sampling fields, which that endpoint refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extras {
    Messages,
    CountTokens,
}

/// The Anthropic JSON body for `req` (also what Bedrock's count and the count_tokens call send).
pub(crate) fn request_body(
    req: &ChatRequest,
    model: &str,
    defaults: &super::Defaults,
    kind: Extras,
) -> Result<Vec<u8>, TranslateError> {
    let terr = |m: String| Err(TranslateError(m));
    if let Some(n) = req.n.filter(|n| *n > 1) {
        return terr(format!(
            "n: Anthropic returns a single choice; n = {n} is not supported"
        ));
    }
    if let Some(n) = req.first_native() {
        return terr(format!(
            "{}: a \"{}\" item can only be sent to an OpenAI Responses backend",
            n.path, n.kind
        ));
    }
    let mut system: Vec<BlockOut> = Vec::new();
    let turns = turns(req, &mut system)?;
    let output_config = req.anthropic_extra.get("output_config");
    let native_format = output_config.is_some_and(|o| o.get("format").is_some());
    if let Some(rf) = req.response_format.as_ref().filter(|_| !native_format) {
        if let Some(instruction) = format_instruction(rf, "Anthropic")? {
            system.push(BlockOut::new(Block::OwnedText { text: instruction }));
        }
    }
    let temperature = req.temperature.or(defaults.temperature);
    if let Some(v) = temperature.filter(|v| !(0.0..=1.0).contains(v)) {
        return terr(format!(
            "temperature: {v} is out of range for Anthropic (0 to 1)"
        ));
    }
    let max_tokens = req
        .max_tokens
        .or(defaults.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let messages_call = kind == Extras::Messages;
    let body = RequestOut {
        model,
        max_tokens: messages_call.then_some(max_tokens),
        system: system_out(system),
        messages: turns,
        temperature: temperature.filter(|_| messages_call),
        top_p: req.top_p.or(defaults.top_p).filter(|_| messages_call),
        stop_sequences: if messages_call { &req.stop } else { &[] },
        metadata: req
            .user
            .as_deref()
            .filter(|_| messages_call)
            .map(|user_id| MetadataOut { user_id }),
        stream: req.stream && messages_call,
        tools: req.tools.iter().map(ToolOut::from).collect(),
        tool_choice: choice_out(req),
        thinking: req
            .reasoning
            .as_ref()
            .and_then(|r| ThinkingOut::of(r, max_tokens)),
        extra: ExtraOut {
            fields: &req.anthropic_extra,
            skip: if messages_call {
                &[]
            } else {
                COUNT_TOKENS_REFUSES
            },
        },
    };
    serde_json::to_vec(&body).map_err(|e| TranslateError(format!("cannot write the request: {e}")))
}

/// `system`: a string while no block carries a breakpoint (as clients mostly send it), else
/// blocks.
fn system_out(system: Vec<BlockOut<'_>>) -> Option<SystemOut<'_>> {
    if system.is_empty() {
        None
    } else if system.iter().any(|b| b.cache_control.is_some()) {
        Some(SystemOut::Blocks(system))
    } else {
        let texts: Vec<&str> = system.iter().filter_map(BlockOut::text).collect();
        Some(SystemOut::Text(texts.join("\n\n")))
    }
}

/// The messages as Anthropic turns: system blocks set apart (into `system`), consecutive
/// same-role turns merged, a user turn's tool results before its other content.
fn turns<'a>(
    req: &'a ChatRequest,
    system: &mut Vec<BlockOut<'a>>,
) -> Result<Vec<TurnOut<'a>>, TranslateError> {
    let mut turns: Vec<TurnOut> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let path = || format!("messages[{i}]");
        if m.role == Role::System {
            if m.content
                .iter()
                .any(|p| matches!(p, Part::Image { .. } | Part::Document(_)))
            {
                return Err(TranslateError(format!(
                    "{}.content: images and documents are not allowed in system messages for Anthropic",
                    path()
                )));
            }
            system.extend(content_blocks(&m.content, path)?);
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
    for turn in &mut turns {
        if turn.role == "user" {
            turn.content
                .sort_by_key(|b| !matches!(b.block, Block::ToolResult { .. }));
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
        // System blocks are set apart by the caller.
        Role::System => Ok(("user", Vec::new())),
        Role::User => Ok(("user", content_blocks(&m.content, path)?)),
        Role::Assistant => Ok(("assistant", assistant_blocks(m, path)?)),
        Role::Tool => Ok(("user", vec![tool_result_block(m, path)?])),
    }
}

/// An assistant turn: thinking blocks first (Anthropic checks it), content, tool calls.
fn assistant_blocks(
    m: &Message,
    path: impl Fn() -> String,
) -> Result<Vec<BlockOut<'_>>, TranslateError> {
    let mut blocks = thinking_blocks(&m.content);
    // A breakpoint ending a turn that calls tools is on its last block, the last tool_use
    // (where Claude Code puts it), not on the text before the calls.
    let trailing_cache = trailing_cache_point(&m.content);
    let content = match (&trailing_cache, m.content.split_last()) {
        (Some(_), Some((_, rest))) if !m.tool_calls.is_empty() => rest,
        _ => &m.content[..],
    };
    blocks.extend(content_blocks(content, &path)?);
    for (j, c) in m.tool_calls.iter().enumerate() {
        let input = parse_arguments(&c.arguments).map_err(|e| {
            TranslateError(format!(
                "{}.tool_calls[{j}].function.arguments: {e}",
                path()
            ))
        })?;
        blocks.push(BlockOut::new(Block::ToolUse {
            id: split_call_id(&c.id).0,
            name: &c.name,
            input,
        }));
    }
    if let (Some(cp), Some(last)) = (trailing_cache, blocks.last_mut()) {
        last.cache_control = Some(CacheOut::of(cp));
    }
    Ok(blocks)
}

/// A tool message as a `tool_result` block: one text as a string, several blocks as blocks
/// (a client's array of texts); the result block carries the breakpoint.
fn tool_result_block(
    m: &Message,
    path: impl Fn() -> String,
) -> Result<BlockOut<'_>, TranslateError> {
    let Some(id) = &m.tool_call_id else {
        return Err(TranslateError(format!(
            "{}.tool_call_id: missing for a tool message",
            path()
        )));
    };
    let texts = m
        .content
        .iter()
        .filter(|p| matches!(p, Part::Text(_)))
        .count();
    let content = if texts <= 1
        && m.content
            .iter()
            .all(|p| matches!(p, Part::Text(_) | Part::CachePoint(_) | Part::Reasoning(_)))
    {
        ResultOut::Text(text_of(&m.content))
    } else {
        let mut inner = content_blocks(&m.content, path)?;
        if let Some(last) = inner.last_mut() {
            last.cache_control = None;
        }
        ResultOut::Blocks(inner)
    };
    let mut block = BlockOut::new(Block::ToolResult {
        tool_use_id: split_call_id(id).0,
        content,
    });
    block.cache_control = trailing_cache_point(&m.content).map(CacheOut::of);
    Ok(block)
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

/// Top-level fields the `count_tokens` endpoint refuses (it counts a prompt, it samples nothing).
const COUNT_TOKENS_REFUSES: &[&str] = &[
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "service_tier",
    "container",
    "inference_geo",
    "speed",
];

// The request body is written from typed views borrowing the canonical request (no `Value`
// tree), keys in the order of Anthropic's API reference.

#[derive(Serialize)]
struct RequestOut<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<SystemOut<'a>>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<ThinkingOut<'a>>,
    #[serde(flatten)]
    extra: ExtraOut<'a>,
}

/// The client's other top-level Anthropic fields, after the typed ones (which win).
struct ExtraOut<'a> {
    fields: &'a Map<String, Value>,
    skip: &'static [&'static str],
}

/// Keys [`RequestOut`] writes itself.
const TYPED_KEYS: &[&str] = &[
    "model",
    "max_tokens",
    "system",
    "messages",
    "temperature",
    "top_p",
    "stop_sequences",
    "metadata",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
];

impl Serialize for ExtraOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.fields {
            if !TYPED_KEYS.contains(&k.as_str()) && !self.skip.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum SystemOut<'a> {
    Text(String),
    Blocks(Vec<BlockOut<'a>>),
}

/// Anthropic's `thinking` from the canonical reasoning settings.
#[derive(Serialize)]
struct ThinkingOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'a str>,
}

impl<'a> ThinkingOut<'a> {
    fn of(r: &'a ReasoningConfig, max_tokens: u64) -> Option<Self> {
        if r.off() {
            return Some(Self {
                kind: "disabled",
                budget_tokens: None,
                display: None,
            });
        }
        let display = r
            .summary
            .as_deref()
            .filter(|d| matches!(*d, "summarized" | "omitted"));
        if r.mode.as_deref() == Some("adaptive") {
            return Some(Self {
                kind: "adaptive",
                budget_tokens: None,
                display,
            });
        }
        Some(Self {
            kind: "enabled",
            budget_tokens: Some(r.budget(Some(max_tokens))?),
            display,
        })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct TurnOut<'a> {
    role: &'static str,
    content: Vec<BlockOut<'a>>,
}

/// A content block and its cache breakpoint.
#[derive(Serialize)]
struct BlockOut<'a> {
    #[serde(flatten)]
    block: Block<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheOut<'a>>,
}

impl<'a> BlockOut<'a> {
    fn new(block: Block<'a>) -> Self {
        Self {
            block,
            cache_control: None,
        }
    }

    fn text(&self) -> Option<&str> {
        match &self.block {
            Block::Text { text } => Some(text),
            Block::OwnedText { text } => Some(text),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct CacheOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<&'a str>,
}

impl<'a> CacheOut<'a> {
    fn of(cp: &'a CachePoint) -> Self {
        Self {
            kind: "ephemeral",
            ttl: cp.ttl.as_deref(),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    /// Text the gateway wrote (a format instruction).
    #[serde(rename = "text")]
    OwnedText {
        text: String,
    },
    Image {
        source: ImageOut<'a>,
    },
    Document {
        source: DocOut<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        context: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        citations: Option<CitationsOut>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
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
struct CitationsOut {
    enabled: bool,
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
#[serde(tag = "type", rename_all = "snake_case")]
enum DocOut<'a> {
    Base64 {
        media_type: &'a str,
        data: &'a str,
    },
    Text {
        media_type: &'static str,
        data: &'a str,
    },
    Url {
        url: &'a str,
    },
    File {
        file_id: &'a str,
    },
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
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheOut<'a>>,
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
            cache_control: tool.cache.as_ref().map(CacheOut::of),
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

/// The thinking blocks of an assistant turn that Anthropic can verify (its own family's);
/// reasoning from other providers is dropped.
fn thinking_blocks(parts: &[Part]) -> Vec<BlockOut<'_>> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Reasoning(r) if r.origin == Origin::Anthropic => {
                let sig = r.signature.as_deref().unwrap_or("");
                Some(BlockOut::new(if r.redacted {
                    Block::RedactedThinking { data: sig }
                } else {
                    Block::Thinking {
                        thinking: &r.text,
                        signature: sig,
                    }
                }))
            }
            _ => None,
        })
        .collect()
}

/// The breakpoint that ends a part list, if it ends with one.
fn trailing_cache_point(parts: &[Part]) -> Option<&CachePoint> {
    match parts.last() {
        Some(Part::CachePoint(cp)) => Some(cp),
        _ => None,
    }
}

/// Text, image and document blocks, each with the breakpoint that follows it (empty texts are
/// dropped: Anthropic rejects them; reasoning goes first, see [`thinking_blocks`]).
fn content_blocks(
    parts: &[Part],
    path: impl Fn() -> String,
) -> Result<Vec<BlockOut<'_>>, TranslateError> {
    let mut out: Vec<BlockOut> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let block = match p {
            Part::Text(t) if t.is_empty() => continue,
            Part::Text(t) => Block::Text { text: t },
            Part::Image { url, .. } => Block::Image {
                source: image_source(url).map_err(|e| {
                    TranslateError(format!("{}.content[{i}].image_url.url: {e}", path()))
                })?,
            },
            Part::Document(d) => document_block(d)
                .map_err(|e| TranslateError(format!("{}.content[{i}]: {e}", path())))?,
            Part::CachePoint(cp) => {
                if let Some(last) = out.last_mut() {
                    last.cache_control = Some(CacheOut::of(cp));
                }
                continue;
            }
            Part::Reasoning(_) | Part::Native(_) => continue,
        };
        out.push(BlockOut::new(block));
    }
    Ok(out)
}

fn document_block(d: &Document) -> Result<Block<'_>, String> {
    let source = match &d.source {
        DocSource::Data(url) => match parse_data_url(url)? {
            Some(DataUrl { mime, base64 }) => DocOut::Base64 {
                media_type: mime,
                data: base64,
            },
            None => return Err("expected a base64 data: URL".into()),
        },
        DocSource::Text(text) => DocOut::Text {
            media_type: "text/plain",
            data: text,
        },
        DocSource::Url(url) => DocOut::Url { url },
        DocSource::File(id) => DocOut::File { file_id: id },
    };
    Ok(Block::Document {
        source,
        title: d.title.as_deref().or(d.filename.as_deref()),
        context: d.context.as_deref(),
        citations: d.citations.then_some(CitationsOut { enabled: true }),
    })
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
            Some("thinking") => message.content.push(Part::Reasoning(Reasoning {
                text: str_of(b, "thinking"),
                signature: Some(str_of(b, "signature")),
                redacted: false,
                origin: Origin::Anthropic,
                id: None,
            })),
            Some("redacted_thinking") => message.content.push(Part::Reasoning(Reasoning {
                text: String::new(),
                signature: Some(str_of(b, "data")),
                redacted: true,
                origin: Origin::Anthropic,
                id: None,
            })),
            // Server tool blocks: not part of the canonical shape.
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

/// A string field of a JSON object, empty when absent.
fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
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
    /// The open thinking block (its index) and the signature seen for it.
    thinking: Option<(u64, Option<String>)>,
}

pub fn stream_decoder() -> Decoder {
    Decoder::default()
}

impl StreamDecoder for Decoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) {
        for e in self.sse.events(bytes) {
            self.on_event(e.event.as_deref(), &e.data, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        for e in self.sse.rest() {
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
            "content_block_stop" => self.block_stop(&v, out),
            "message_delta" => self.message_delta(&v, out),
            "message_stop" => self.done = true,
            "error" => {
                self.failed = true;
                out.push(StreamEvent::Error(stream_error(&v, data)));
            }
            // ping, and event types added later.
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

    /// `content_block_start`: thinking or redacted thinking begins, a tool call begins (its id
    /// and name), or text comes whole.
    fn block_start(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let b = v.get("content_block");
        let kind = b.and_then(|b| b.get("type")).and_then(Value::as_str);
        // Text a block starts with (non-empty).
        let initial = |k: &str| {
            b.and_then(|b| b.get(k))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        if kind == Some("thinking") {
            self.thinking = Some((num(v.get("index")), None));
            if let Some(text) = initial("thinking") {
                out.push(StreamEvent::Reasoning { index: 0, text });
            }
        } else if kind == Some("redacted_thinking") {
            out.push(StreamEvent::RedactedReasoning {
                index: 0,
                data: b.map_or_else(String::new, |b| str_of(b, "data")),
                origin: Origin::Anthropic,
            });
        } else if kind == Some("tool_use") {
            let block = num(v.get("index"));
            let call = self.next_call;
            self.next_call = self.next_call.saturating_add(1);
            self.tool_blocks.push((block, call));
            let s = |k: &str| b.map_or_else(String::new, |b| str_of(b, k));
            out.push(StreamEvent::ToolCallStart {
                index: 0,
                call,
                id: s("id"),
                name: s("name"),
            });
        } else if let Some(text) = initial("text") {
            out.push(StreamEvent::Text { index: 0, text });
        }
    }

    /// `content_block_delta`: text, a fragment of a tool call's arguments, thinking, or a
    /// piece of the thinking's signature.
    fn block_delta(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let d = v.get("delta");
        let s = |k: &str| d.and_then(|d| d.get(k)).and_then(Value::as_str);
        // A non-empty piece of the delta's field `k`.
        let piece = |k: &str| s(k).filter(|t| !t.is_empty()).map(str::to_string);
        match s("type") {
            Some("text_delta") => {
                if let Some(text) = piece("text") {
                    out.push(StreamEvent::Text { index: 0, text });
                }
            }
            Some("input_json_delta") => {
                let block = num(v.get("index"));
                let call = self
                    .tool_blocks
                    .iter()
                    .find(|(b, _)| *b == block)
                    .map(|(_, c)| *c);
                if let (Some(call), Some(arguments)) = (call, piece("partial_json")) {
                    out.push(StreamEvent::ToolCallArgs {
                        index: 0,
                        call,
                        arguments,
                    });
                }
            }
            Some("thinking_delta") => {
                if let Some(text) = piece("thinking") {
                    out.push(StreamEvent::Reasoning { index: 0, text });
                }
            }
            Some("signature_delta") => {
                if let (Some((_, sig)), Some(piece)) = (&mut self.thinking, s("signature")) {
                    sig.get_or_insert_with(String::new).push_str(piece);
                }
            }
            // citations_delta: no canonical equivalent.
            _ => {}
        }
    }

    /// `content_block_stop`: the end of the open thinking block, with its signature.
    fn block_stop(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let index = num(v.get("index"));
        if let Some((block, signature)) = self.thinking.take() {
            if block == index {
                out.push(StreamEvent::ReasoningEnd {
                    index: 0,
                    signature,
                    origin: Origin::Anthropic,
                });
            } else {
                self.thinking = Some((block, signature));
            }
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
    parse_object(parse_body(body)?, true)
}

/// Reads an Anthropic Messages request already parsed as JSON.
pub fn parse_value(doc: Value) -> Result<ChatRequest, ClientError> {
    parse_object(object(doc)?, true)
}

/// Parses a `count_tokens` request body: a Messages request without `max_tokens`.
pub fn parse_count_tokens_request(body: &[u8]) -> Result<ChatRequest, ClientError> {
    parse_object(parse_body(body)?, false)
}

/// Reads a `count_tokens` request already parsed as JSON.
pub fn parse_count_tokens_value(doc: Value) -> Result<ChatRequest, ClientError> {
    parse_object(object(doc)?, false)
}

/// Top-level fields the door types; every other one goes to `anthropic_extra`.
const DOOR_KEYS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "stop_sequences",
    "metadata",
    "stream",
    "thinking",
];

fn parse_object(obj: Map<String, Value>, messages_call: bool) -> Result<ChatRequest, ClientError> {
    let mut r = ChatRequest {
        model: req_str(&obj, "model", "")?.to_string(),
        ..ChatRequest::default()
    };
    if r.model.is_empty() {
        return Err(cerr("model", "must not be empty"));
    }
    let max_tokens = opt_max_tokens(&obj, "max_tokens", "")?;
    r.max_tokens = match max_tokens {
        None if messages_call => return Err(cerr("max_tokens", "missing required field")),
        other => other,
    };
    let messages = as_arr(req(&obj, "messages", "")?, "messages")?;
    if let Some(sys) = field(&obj, "system") {
        system(sys, &mut r.messages)?;
    }
    if messages.is_empty() {
        return Err(cerr("messages", "must contain at least one message"));
    }
    for (i, m) in messages.iter().enumerate() {
        parse_turn(m, &at("messages", i), &mut r.messages)?;
    }
    if let Some(tools) = field(&obj, "tools") {
        for (i, t) in as_arr(tools, "tools")?.iter().enumerate() {
            r.tools.push(tool(t, &at("tools", i))?);
        }
    }
    if let Some(tc) = field(&obj, "tool_choice") {
        let tco = as_obj(tc, "tool_choice")?;
        r.tool_choice = Some(tool_choice(tco)?);
        if opt_bool(tco, "disable_parallel_tool_use", "tool_choice")? == Some(true) {
            r.extra.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    sampling(&obj, &mut r)?;
    // top_k, service_tier, context_management, container, mcp_servers, cache_control, ...:
    // Anthropic's own knobs, passed to Anthropic as sent (moved, not copied: the client's
    // document was parsed once and is not needed after this).
    for (k, v) in obj {
        if !DOOR_KEYS.contains(&k.as_str()) {
            r.anthropic_extra.insert(k, v);
        }
    }
    Ok(r)
}

/// Sampling, stop sequences, metadata, streaming, thinking and `output_config`.
fn sampling(obj: &Map<String, Value>, r: &mut ChatRequest) -> Result<(), ClientError> {
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
    if let Some(th) = field(obj, "thinking") {
        r.reasoning = Some(parse_thinking(as_obj(th, "thinking")?)?);
    }
    if let Some(oc) = field(obj, "output_config") {
        parse_output_config(as_obj(oc, "output_config")?, r)?;
    }
    Ok(())
}

/// `system`: a string, or text blocks. One system message per block: providers without
/// blocks read them as separate instructions; Anthropic gets the blocks (and their
/// breakpoints) back.
fn system(sys: &Value, out: &mut Vec<Message>) -> Result<(), ClientError> {
    match sys {
        Value::String(s) => out.push(msg(Role::System, vec![Part::Text(s.clone())])),
        Value::Array(blocks) => {
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
                let mut content = vec![Part::Text(req_str(bo, "text", &p)?.to_string())];
                content.extend(cache_point(bo, &p)?.map(Part::CachePoint));
                out.push(msg(Role::System, content));
            }
        }
        other => {
            return Err(cerr(
                "system",
                format!(
                    "expected a string or an array of text blocks, got {}",
                    type_name(other)
                ),
            ))
        }
    }
    Ok(())
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
        cache: cache_point(to, p)?,
        strict: opt_bool(to, "strict", p)?,
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

/// `thinking`: `{"type": "enabled", "budget_tokens": N}`, `{"type": "adaptive"}`,
/// `{"type": "disabled"}`; `display` kept.
fn parse_thinking(th: &Map<String, Value>) -> Result<ReasoningConfig, ClientError> {
    let p = "thinking";
    let mode = req_str(th, "type", p)?;
    if !matches!(mode, "enabled" | "disabled" | "adaptive" | "between_tools") {
        return Err(cerr(
            "thinking.type",
            format!("unknown thinking type \"{mode}\" (expected enabled, adaptive or disabled)"),
        ));
    }
    let budget = opt_max_tokens(th, "budget_tokens", p)?;
    if mode == "enabled" && budget.is_none() {
        return Err(cerr("thinking.budget_tokens", "missing required field"));
    }
    Ok(ReasoningConfig {
        mode: Some(mode.to_string()),
        budget_tokens: budget,
        effort: None,
        summary: opt_str(th, "display", p)?.map(str::to_string),
    })
}

/// `output_config`: `effort` becomes the reasoning effort and `format` (a JSON schema) the
/// response format for other providers; Anthropic gets the object back as sent.
fn parse_output_config(oc: &Map<String, Value>, r: &mut ChatRequest) -> Result<(), ClientError> {
    let p = "output_config";
    if let Some(effort) = opt_str(oc, "effort", p)? {
        r.reasoning.get_or_insert_with(Default::default).effort = Some(effort.to_string());
    }
    if let Some(f) = field(oc, "format") {
        let fp = "output_config.format";
        let fo = as_obj(f, fp)?;
        match req_str(fo, "type", fp)? {
            "json_schema" => {
                let schema = req(fo, "schema", fp)?;
                as_obj(schema, "output_config.format.schema")?;
                r.response_format = Some(json!({
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema, "strict": true}
                }));
            }
            other => {
                return Err(cerr(
                    "output_config.format.type",
                    format!("unknown format type \"{other}\" (expected json_schema)"),
                ))
            }
        }
    }
    Ok(())
}

/// A block's `cache_control` (`{"type": "ephemeral", "ttl"?: "5m" | "1h"}`).
fn cache_point(b: &Map<String, Value>, path: &str) -> Result<Option<CachePoint>, ClientError> {
    let Some(cc) = field(b, "cache_control") else {
        return Ok(None);
    };
    let p = join(path, "cache_control");
    let cco = as_obj(cc, &p)?;
    let kind = req_str(cco, "type", &p)?;
    if kind != "ephemeral" {
        return Err(cerr(
            &join(&p, "type"),
            format!("unknown cache_control type \"{kind}\" (expected ephemeral)"),
        ));
    }
    Ok(Some(CachePoint {
        ttl: opt_str(cco, "ttl", &p)?.map(str::to_string),
    }))
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
                turn_block(b, &at(&cpath, i), &mut main, out)?;
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

/// One content block of a turn, into the turn's message `main`; a tool result becomes a tool
/// message of its own in `out` (before the turn's other content).
fn turn_block(
    b: &Value,
    p: &str,
    main: &mut Message,
    out: &mut Vec<Message>,
) -> Result<(), ClientError> {
    let bo = as_obj(b, p)?;
    let kind = req_str(bo, "type", p)?;
    let cache = cache_point(bo, p)?;
    match (kind, main.role) {
        ("text", _) => main
            .content
            .push(Part::Text(req_str(bo, "text", p)?.to_string())),
        ("image", _) => main.content.push(parse_image(bo, p)?),
        ("document", _) => main.content.push(parse_document(bo, p)?),
        ("tool_use", Role::Assistant) => {
            let input = req(bo, "input", p)?;
            as_obj(input, &join(p, "input"))?;
            main.tool_calls.push(ToolCall {
                id: req_str(bo, "id", p)?.to_string(),
                name: req_str(bo, "name", p)?.to_string(),
                arguments: input.to_string(),
            });
        }
        ("tool_result", Role::User) => {
            out.push(tool_result(bo, p, cache)?);
            return Ok(());
        }
        ("thinking" | "redacted_thinking", Role::Assistant) => main.content.push(Part::Reasoning(
            thinking(bo, p, kind == "redacted_thinking")?,
        )),
        ("tool_use" | "tool_result" | "thinking" | "redacted_thinking", role) => {
            return Err(cerr(
                &join(p, "type"),
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
                &join(p, "type"),
                format!("unknown content block type \"{other}\""),
            ))
        }
    }
    if let Some(cp) = cache {
        main.content.push(Part::CachePoint(cp));
    }
    Ok(())
}

/// A `thinking` block (its signature) or a `redacted_thinking` one (its data), as reasoning
/// of the family that signed it.
fn thinking(bo: &Map<String, Value>, p: &str, redacted: bool) -> Result<Reasoning, ClientError> {
    let (text, carried) = if redacted {
        (String::new(), req_str(bo, "data", p)?)
    } else {
        (
            req_str(bo, "thinking", p)?.to_string(),
            req_str(bo, "signature", p)?,
        )
    };
    let (origin, signature) = Reasoning::from_carried(carried, Origin::Anthropic);
    Ok(Reasoning {
        text,
        signature: Some(signature),
        redacted,
        origin,
        id: None,
    })
}

/// A user turn's `tool_result` block as a tool message (`is_error` prefixes `Error: `; the
/// breakpoint on the block ends the message).
fn tool_result(
    bo: &Map<String, Value>,
    p: &str,
    cache: Option<CachePoint>,
) -> Result<Message, ClientError> {
    let mut t = msg(Role::Tool, Vec::new());
    t.tool_call_id = Some(req_str(bo, "tool_use_id", p)?.to_string());
    let rp = join(p, "content");
    match field(bo, "content") {
        None => {}
        Some(Value::String(s)) => t.content.push(Part::Text(s.clone())),
        Some(Value::Array(items)) => {
            for (j, it) in items.iter().enumerate() {
                result_block(it, &at(&rp, j), &mut t.content)?;
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
    if let Some(cp) = cache {
        if !matches!(t.content.last(), Some(Part::CachePoint(_))) {
            t.content.push(Part::CachePoint(cp));
        }
    }
    Ok(t)
}

/// One block of a tool result's content: text, an image or a document (and its breakpoint).
fn result_block(it: &Value, ip: &str, content: &mut Vec<Part>) -> Result<(), ClientError> {
    let io = as_obj(it, ip)?;
    match req_str(io, "type", ip)? {
        "text" => content.push(Part::Text(req_str(io, "text", ip)?.to_string())),
        "image" => content.push(parse_image(io, ip)?),
        "document" => content.push(parse_document(io, ip)?),
        other => {
            return Err(cerr(
                &join(ip, "type"),
                format!("unsupported tool result block type \"{other}\""),
            ))
        }
    }
    if let Some(cp) = cache_point(io, ip)? {
        content.push(Part::CachePoint(cp));
    }
    Ok(())
}

/// A `document` block: a PDF (`base64`, `url`), plain text (`text`), a `file` of Anthropic's
/// Files API, or `content` blocks (their text joined).
fn parse_document(b: &Map<String, Value>, path: &str) -> Result<Part, ClientError> {
    let sp = join(path, "source");
    let src = as_obj(req(b, "source", path)?, &sp)?;
    let source = match req_str(src, "type", &sp)? {
        "base64" => DocSource::Data(format!(
            "data:{};base64,{}",
            req_str(src, "media_type", &sp)?,
            req_str(src, "data", &sp)?
        )),
        "text" => DocSource::Text(req_str(src, "data", &sp)?.to_string()),
        "url" => DocSource::Url(req_str(src, "url", &sp)?.to_string()),
        "file" => DocSource::File(req_str(src, "file_id", &sp)?.to_string()),
        "content" => {
            let cp = join(&sp, "content");
            let text = match req(src, "content", &sp)? {
                Value::String(s) => s.clone(),
                other => {
                    let mut text = String::new();
                    for (i, it) in as_arr(other, &cp)?.iter().enumerate() {
                        let ip = at(&cp, i);
                        let io = as_obj(it, &ip)?;
                        if req_str(io, "type", &ip)? != "text" {
                            return Err(cerr(
                                &join(&ip, "type"),
                                "only text blocks are supported in document content",
                            ));
                        }
                        text.push_str(req_str(io, "text", &ip)?);
                    }
                    text
                }
            };
            DocSource::Text(text)
        }
        other => {
            return Err(cerr(
                &join(&sp, "type"),
                format!(
                    "unsupported document source type \"{other}\" (expected base64, text, url, content or file)"
                ),
            ))
        }
    };
    let citations = match field(b, "citations") {
        Some(c) => {
            let cp = join(path, "citations");
            opt_bool(as_obj(c, &cp)?, "enabled", &cp)?.unwrap_or(false)
        }
        None => false,
    };
    Ok(Part::Document(Document {
        source,
        title: opt_str(b, "title", path)?.map(str::to_string),
        context: opt_str(b, "context", path)?.map(str::to_string),
        filename: None,
        citations,
    }))
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
        for p in &c.message.content {
            if let Part::Reasoning(r) = p {
                content.push(thinking_json(r));
            }
        }
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

/// A reasoning block as this door's clients get it: Anthropic's own signatures as they are,
/// other providers' tagged (see [`Reasoning::carried_signature`]).
fn thinking_json(r: &Reasoning) -> Value {
    let sig = r.carried_signature(Origin::Anthropic);
    if r.redacted {
        json!({"type": "redacted_thinking", "data": sig})
    } else {
        json!({"type": "thinking", "thinking": r.text, "signature": sig})
    }
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
#[allow(clippy::enum_variant_names)] // Anthropic's own names
enum DeltaOut<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
    ThinkingDelta { thinking: &'a str },
    SignatureDelta { signature: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OpenBlock {
    Text,
    Tool(u32),
    Thinking,
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
    open: Option<(u32, OpenBlock)>,
    next_block: u32,
    /// Tool call number → block index.
    tool_blocks: Vec<(u32, u32)>,
    stop: Option<FinishReason>,
    /// Refusal text was streamed: the stop reason is `refusal`.
    refused: bool,
    usage: Usage,
    /// The open thinking block has its signature.
    signed: bool,
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
            signed: false,
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
        // A thinking block ended by other content, without a signature: its reasoning came
        // from a provider that signs nothing, and is tagged as such (never taken for
        // Anthropic's own when the client sends it back).
        if let Some((i, OpenBlock::Thinking)) = self.open {
            if !self.signed {
                let sig = Reasoning::signed(None, false, Origin::Unknown)
                    .carried_signature(Origin::Anthropic);
                let delta = DeltaOut::SignatureDelta { signature: &sig };
                Self::emit(out, "content_block_delta", BlockDeltaOut::new(i, delta));
            }
        }
        self.signed = false;
        if let Some((i, _)) = self.open.take() {
            Self::emit(
                out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            );
        }
    }

    fn open_block(&mut self, kind: OpenBlock, block: Value, out: &mut Vec<u8>) -> u32 {
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
                    Some((i, OpenBlock::Text)) => i,
                    _ => self.open_block(OpenBlock::Text, json!({"type": "text", "text": ""}), out),
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
                    OpenBlock::Tool(*call),
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
            StreamEvent::Reasoning { index: 0, .. }
            | StreamEvent::ReasoningStart { index: 0, .. }
            | StreamEvent::ReasoningEnd { index: 0, .. }
            | StreamEvent::RedactedReasoning { index: 0, .. } => self.reasoning(ev, out),
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

    /// The open thinking block, opened when none is.
    fn thinking_block(&mut self, out: &mut Vec<u8>) -> u32 {
        self.start("", out);
        match self.open {
            Some((i, OpenBlock::Thinking)) => i,
            _ => self.open_block(
                OpenBlock::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                out,
            ),
        }
    }

    /// Reasoning events as thinking blocks: text as `thinking_delta`s, the end as the
    /// `signature_delta` (the signature carries its family), redacted reasoning whole.
    fn reasoning(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match ev {
            StreamEvent::Reasoning { text, .. } => {
                let i = self.thinking_block(out);
                let delta = DeltaOut::ThinkingDelta { thinking: text };
                Self::emit(out, "content_block_delta", BlockDeltaOut::new(i, delta));
            }
            StreamEvent::ReasoningStart { .. } => {
                self.thinking_block(out);
            }
            StreamEvent::ReasoningEnd {
                signature, origin, ..
            } => {
                let i = self.thinking_block(out);
                let sig = Reasoning::signed(signature.clone(), false, *origin)
                    .carried_signature(Origin::Anthropic);
                let delta = DeltaOut::SignatureDelta { signature: &sig };
                Self::emit(out, "content_block_delta", BlockDeltaOut::new(i, delta));
                self.signed = true;
                self.close(out);
            }
            StreamEvent::RedactedReasoning { data, origin, .. } => {
                self.start("", out);
                let r = Reasoning::signed(Some(data.clone()), true, *origin);
                self.open_block(OpenBlock::Thinking, thinking_json(&r), out);
                self.signed = true;
                self.close(out);
            }
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
