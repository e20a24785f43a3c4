//! OpenAI Chat Completions: the main front door (`/v1/chat/completions`) and the provider
//! for OpenAI and every OpenAI-compatible backend.
//!
//! Front door: [`parse_request`], [`encode_response`], [`StreamEncoder`], [`error_body`].
//! Provider: [`encode_request`], [`decode_response`], [`decode_error`], [`stream_decoder`].
//!
//! `max_tokens` vs `max_completion_tokens`: the canonical request holds one number. When the
//! client sent `max_completion_tokens`, [`parse_request`] also keeps that key in `extra`, and
//! [`encode_request`] then sends the number under `max_completion_tokens` (what reasoning
//! models require); otherwise it sends `max_tokens` (what every OpenAI-compatible server knows).

use serde::Serialize;
use serde_json::{json, Map, Value};

pub use super::json::ClientError;
use super::json::{
    as_arr, as_obj, as_str, at, cerr, excerpt, field, join, num, object, opt_bool, opt_f64,
    opt_i64, opt_max_tokens, opt_str, opt_u64, parse_body, req, req_str,
};
use super::model::{
    ChatRequest, ChatResponse, Choice, DocSource, Document, FinishReason, Message, Origin, Part,
    ProviderError, Reasoning, ReasoningConfig, Role, StreamEvent, Tool, ToolCall, ToolChoice,
    Usage,
};
use super::{Outgoing, StreamDecoder, Target, TranslateError};
use crate::stream::{write_event, write_json_event, SseParser};

// ---------------------------------------------------------------------------------------------
// Front door: request
// ---------------------------------------------------------------------------------------------

/// Parses an OpenAI Chat Completions request body.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, ClientError> {
    parse_object(parse_body(body)?)
}

/// Reads an OpenAI Chat Completions request already parsed as JSON.
pub fn parse_value(doc: Value) -> Result<ChatRequest, ClientError> {
    parse_object(object(doc)?)
}

fn parse_object(obj: Map<String, Value>) -> Result<ChatRequest, ClientError> {
    let mut req = ChatRequest {
        model: req_str(&obj, "model", "")?.to_string(),
        ..ChatRequest::default()
    };
    if req.model.is_empty() {
        return Err(cerr("model", "must not be empty"));
    }
    let messages = as_arr(self::req(&obj, "messages", "")?, "messages")?;
    if messages.is_empty() {
        return Err(cerr("messages", "must contain at least one message"));
    }
    for (i, m) in messages.iter().enumerate() {
        req.messages.push(parse_message(m, &at("messages", i))?);
    }
    if let Some(tools) = field(&obj, "tools") {
        for (i, t) in as_arr(tools, "tools")?.iter().enumerate() {
            req.tools.push(parse_tool(t, &at("tools", i))?);
        }
    }
    if let Some(tc) = field(&obj, "tool_choice") {
        req.tool_choice = Some(parse_tool_choice(tc)?);
    }
    if let Some(rf) = field(&obj, "response_format") {
        check_response_format(rf)?;
        req.response_format = Some(rf.clone());
    }
    req.temperature = opt_f64(&obj, "temperature", "")?;
    req.top_p = opt_f64(&obj, "top_p", "")?;
    let max_tokens = opt_max_tokens(&obj, "max_tokens", "")?;
    let max_completion = opt_max_tokens(&obj, "max_completion_tokens", "")?;
    req.max_tokens = max_completion.or(max_tokens);
    if let Some(stop) = field(&obj, "stop") {
        req.stop = stop_list(stop)?;
    }
    if let Some(n) = opt_u64(&obj, "n", "")? {
        req.n = Some(u32::try_from(n).map_err(|_| cerr("n", "too large"))?);
    }
    req.seed = opt_i64(&obj, "seed", "")?;
    req.user = opt_str(&obj, "user", "")?.map(str::to_string);
    req.stream = opt_bool(&obj, "stream", "")?.unwrap_or(false);
    if let Some(so) = field(&obj, "stream_options") {
        let so = as_obj(so, "stream_options")?;
        req.include_usage = opt_bool(so, "include_usage", "stream_options")?.unwrap_or(false);
    }
    if let Some(effort) = opt_str(&obj, "reasoning_effort", "")? {
        req.reasoning = Some(ReasoningConfig {
            effort: Some(effort.to_string()),
            ..ReasoningConfig::default()
        });
    }
    const TYPED: &[&str] = &[
        "model",
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "n",
        "seed",
        "user",
        "stream",
        "stream_options",
        "reasoning_effort",
    ];
    // The fields without a canonical place travel on (moved, not copied: the client's
    // document was parsed once and is not needed after this).
    for (k, v) in obj {
        if !TYPED.contains(&k.as_str()) {
            req.extra.insert(k, v);
        }
    }
    Ok(req)
}

/// `response_format`: `text`, `json_object`, or `json_schema` with a named schema.
fn check_response_format(rf: &Value) -> Result<(), ClientError> {
    let rfo = as_obj(rf, "response_format")?;
    let kind = req_str(rfo, "type", "response_format")?;
    if !matches!(kind, "text" | "json_object" | "json_schema") {
        return Err(cerr(
            "response_format.type",
            format!(
                "unknown response format \"{kind}\" (expected text, json_object or json_schema)"
            ),
        ));
    }
    if kind == "json_schema" {
        let js = as_obj(
            self::req(rfo, "json_schema", "response_format")?,
            "response_format.json_schema",
        )?;
        req_str(js, "name", "response_format.json_schema")?;
    }
    Ok(())
}

/// `stop`: one string or a list of them.
fn stop_list(stop: &Value) -> Result<Vec<String>, ClientError> {
    match stop {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, s)| as_str(s, &at("stop", i)).map(str::to_string))
            .collect(),
        other => Err(cerr(
            "stop",
            format!(
                "expected a string or an array of strings, got {}",
                super::json::type_name(other)
            ),
        )),
    }
}

fn parse_message(v: &Value, path: &str) -> Result<Message, ClientError> {
    let m = as_obj(v, path)?;
    let role_s = req_str(m, "role", path)?;
    let role = match role_s {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => {
            return Err(cerr(
                &join(path, "role"),
                format!(
                "unknown role \"{other}\" (expected system, developer, user, assistant or tool)"
            ),
            ))
        }
    };
    let mut msg = Message {
        role,
        content: Vec::new(),
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: opt_str(m, "name", path)?.map(str::to_string),
    };
    let cpath = join(path, "content");
    match field(m, "content") {
        None => {
            if role != Role::Assistant {
                return Err(cerr(
                    &cpath,
                    format!("missing required field for role \"{role_s}\""),
                ));
            }
        }
        Some(Value::String(s)) => msg.content.push(Part::Text(s.clone())),
        Some(Value::Array(parts)) => {
            for (i, p) in parts.iter().enumerate() {
                msg.content.push(parse_part(p, &at(&cpath, i), role)?);
            }
        }
        Some(other) => {
            return Err(cerr(
                &cpath,
                format!(
                    "expected a string or an array of parts, got {}",
                    super::json::type_name(other)
                ),
            ))
        }
    }
    if let Some(tcs) = field(m, "tool_calls") {
        let tpath = join(path, "tool_calls");
        if role != Role::Assistant {
            return Err(cerr(&tpath, "only assistant messages may carry tool_calls"));
        }
        for (i, tc) in as_arr(tcs, &tpath)?.iter().enumerate() {
            msg.tool_calls.push(parse_tool_call(tc, &at(&tpath, i))?);
        }
    }
    if role == Role::Tool {
        msg.tool_call_id = Some(req_str(m, "tool_call_id", path)?.to_string());
    }
    Ok(msg)
}

fn parse_part(v: &Value, path: &str, role: Role) -> Result<Part, ClientError> {
    let p = as_obj(v, path)?;
    let kind = req_str(p, "type", path)?;
    match kind {
        "text" => Ok(Part::Text(req_str(p, "text", path)?.to_string())),
        "refusal" if role == Role::Assistant => {
            Ok(Part::Text(req_str(p, "refusal", path)?.to_string()))
        }
        "image_url" => {
            if role != Role::User {
                return Err(cerr(
                    &join(path, "type"),
                    "image parts are only allowed in user messages",
                ));
            }
            let ipath = join(path, "image_url");
            match req(p, "image_url", path)? {
                Value::String(url) => Ok(Part::Image {
                    url: url.clone(),
                    detail: None,
                }),
                other => {
                    let io = as_obj(other, &ipath)?;
                    Ok(Part::Image {
                        url: req_str(io, "url", &ipath)?.to_string(),
                        detail: opt_str(io, "detail", &ipath)?.map(str::to_string),
                    })
                }
            }
        }
        "file" => {
            let fpath = join(path, "file");
            let f = as_obj(req(p, "file", path)?, &fpath)?;
            let source = match (
                opt_str(f, "file_data", &fpath)?,
                opt_str(f, "file_id", &fpath)?,
            ) {
                (Some(data), _) => DocSource::Data(data.to_string()),
                (None, Some(id)) => DocSource::File(id.to_string()),
                (None, None) => {
                    return Err(cerr(
                        &join(&fpath, "file_data"),
                        "a file part needs file_data or file_id",
                    ))
                }
            };
            Ok(Part::Document(Document {
                source,
                title: None,
                context: None,
                filename: opt_str(f, "filename", &fpath)?.map(str::to_string),
                citations: false,
            }))
        }
        "input_audio" => Err(cerr(
            &join(path, "type"),
            format!("part type \"{kind}\" is not supported by this gateway"),
        )),
        other => Err(cerr(
            &join(path, "type"),
            format!("unknown part type \"{other}\""),
        )),
    }
}

fn parse_tool_call(v: &Value, path: &str) -> Result<ToolCall, ClientError> {
    let tc = as_obj(v, path)?;
    if let Some(kind) = opt_str(tc, "type", path)? {
        if kind != "function" {
            return Err(cerr(
                &join(path, "type"),
                format!("unknown tool call type \"{kind}\""),
            ));
        }
    }
    let fpath = join(path, "function");
    let f = as_obj(req(tc, "function", path)?, &fpath)?;
    Ok(ToolCall {
        id: req_str(tc, "id", path)?.to_string(),
        name: req_str(f, "name", &fpath)?.to_string(),
        arguments: opt_str(f, "arguments", &fpath)?.unwrap_or("").to_string(),
    })
}

fn parse_tool(v: &Value, path: &str) -> Result<Tool, ClientError> {
    let t = as_obj(v, path)?;
    let kind = req_str(t, "type", path)?;
    if kind != "function" {
        return Err(cerr(
            &join(path, "type"),
            format!("unsupported tool type \"{kind}\" (expected function)"),
        ));
    }
    let fpath = join(path, "function");
    let f = as_obj(req(t, "function", path)?, &fpath)?;
    let name = req_str(f, "name", &fpath)?;
    if name.is_empty() {
        return Err(cerr(&join(&fpath, "name"), "must not be empty"));
    }
    let parameters = match field(f, "parameters") {
        None => Value::Null,
        Some(p) => {
            as_obj(p, &join(&fpath, "parameters"))?;
            p.clone()
        }
    };
    Ok(Tool {
        name: name.to_string(),
        description: opt_str(f, "description", &fpath)?.map(str::to_string),
        parameters,
        cache: None,
        strict: opt_bool(f, "strict", &fpath)?,
    })
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
        Value::Object(o) => {
            let kind = req_str(o, "type", "tool_choice")?;
            if kind != "function" {
                return Err(cerr(
                    "tool_choice.type",
                    format!("unknown tool choice type \"{kind}\""),
                ));
            }
            let f = as_obj(req(o, "function", "tool_choice")?, "tool_choice.function")?;
            Ok(ToolChoice::Function(
                req_str(f, "name", "tool_choice.function")?.to_string(),
            ))
        }
        other => Err(cerr(
            "tool_choice",
            format!(
                "expected a string or an object, got {}",
                super::json::type_name(other)
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Provider: request
// ---------------------------------------------------------------------------------------------

/// Encodes a canonical request as an OpenAI chat completions call to `t.model`.
pub fn encode_request(req: &ChatRequest, t: &Target) -> Result<Outgoing, TranslateError> {
    check_parts(req, "OpenAI Chat Completions")?;
    Ok(Outgoing {
        path: "/v1/chat/completions".to_string(),
        body: request_body(req, t.model, t.defaults, Dialect::OpenAi),
        headers: Vec::new(),
    })
}

/// Refuses what Chat Completions cannot carry: items of another API, documents by URL (a
/// `file` part takes data or a file id).
pub(crate) fn check_parts(req: &ChatRequest, api: &str) -> Result<(), TranslateError> {
    if let Some(n) = req.first_native() {
        return Err(TranslateError(format!(
            "{}: a \"{}\" item can only be sent to an OpenAI Responses backend",
            n.path, n.kind
        )));
    }
    for (i, m) in req.messages.iter().enumerate() {
        for (j, p) in m.content.iter().enumerate() {
            if let Part::Document(Document {
                source: DocSource::Url(_),
                ..
            }) = p
            {
                return Err(TranslateError(format!(
                    "messages[{i}].content[{j}]: {api} takes documents as data or a file id, not by URL"
                )));
            }
        }
    }
    Ok(())
}

/// Which flavour of the OpenAI body to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    /// Mistral: no `stream_options`, `max_tokens` only, `random_seed` for `seed`.
    Mistral,
}

/// The OpenAI JSON body (shared with Azure and Mistral): the canonical fields, then the
/// client's other fields (`extra`) that the canonical ones do not replace.
pub(crate) fn request_body(
    req: &ChatRequest,
    model: &str,
    defaults: &super::Defaults,
    dialect: Dialect,
) -> Vec<u8> {
    let body = RequestOut {
        req,
        model,
        defaults,
        dialect,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

struct RequestOut<'a> {
    req: &'a ChatRequest,
    model: &'a str,
    defaults: &'a super::Defaults,
    dialect: Dialect,
}

/// The values of a request body that depend on the dialect, the client's own names and the
/// backend's defaults.
struct Resolved<'a> {
    max_key: &'static str,
    max: Option<u64>,
    seed_key: &'static str,
    seed: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    /// Only an effort the client named (an Anthropic thinking budget does not make a
    /// non-reasoning OpenAI model accept `reasoning_effort`); Mistral has none.
    effort: Option<&'a str>,
}

impl<'a> RequestOut<'a> {
    fn resolved(&self) -> Resolved<'a> {
        let r = self.req;
        let mistral = self.dialect == Dialect::Mistral;
        let extra = |k: &str| r.extra.contains_key(k);
        Resolved {
            // The number goes under `max_completion_tokens` when the client used that name
            // (reasoning models require it), except for Mistral, which knows only `max_tokens`.
            max_key: if extra("max_completion_tokens") && !mistral {
                "max_completion_tokens"
            } else {
                "max_tokens"
            },
            max: r.max_tokens.or(self.defaults.max_tokens),
            // Mistral's name for the seed; a `random_seed` the client sent itself wins.
            seed_key: if mistral { "random_seed" } else { "seed" },
            seed: r.seed.filter(|_| !(mistral && extra("random_seed"))),
            temperature: r.temperature.or(self.defaults.temperature),
            top_p: r.top_p.or(self.defaults.top_p),
            effort: r
                .reasoning
                .as_ref()
                .and_then(|x| x.effort.as_deref())
                .filter(|_| !mistral),
        }
    }

    /// Whether the typed fields already wrote key `k` (an extra field of that name is then
    /// left out).
    fn written(&self, v: &Resolved<'_>, k: &str) -> bool {
        let r = self.req;
        match k {
            "model" | "messages" => true,
            "tools" => !r.tools.is_empty(),
            "tool_choice" => r.tool_choice.is_some(),
            "response_format" => r.response_format.is_some(),
            "temperature" => v.temperature.is_some(),
            "top_p" => v.top_p.is_some(),
            "stop" => !r.stop.is_empty(),
            "n" => r.n.is_some(),
            "user" => r.user.is_some(),
            "stream" => r.stream,
            "reasoning_effort" => v.effort.is_some(),
            k if k == v.max_key => v.max.is_some(),
            k if k == v.seed_key => v.seed.is_some(),
            _ => false,
        }
    }
}

impl Serialize for RequestOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.req;
        let mistral = self.dialect == Dialect::Mistral;
        let v = self.resolved();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("model", self.model)?;
        m.serialize_entry("messages", &Seq(&r.messages, RequestMessageOut::new))?;
        if !r.tools.is_empty() {
            m.serialize_entry("tools", &Seq(&r.tools, ToolDefOut::new))?;
        }
        if let Some(tc) = &r.tool_choice {
            m.serialize_entry("tool_choice", &ToolChoiceOut(tc))?;
        }
        if let Some(rf) = &r.response_format {
            m.serialize_entry("response_format", rf)?;
        }
        if let Some(x) = v.temperature {
            m.serialize_entry("temperature", &x)?;
        }
        if let Some(x) = v.top_p {
            m.serialize_entry("top_p", &x)?;
        }
        if let Some(x) = v.max {
            m.serialize_entry(v.max_key, &x)?;
        }
        if !r.stop.is_empty() {
            m.serialize_entry("stop", &r.stop)?;
        }
        if let Some(n) = r.n {
            m.serialize_entry("n", &n)?;
        }
        if let Some(x) = v.seed {
            m.serialize_entry(v.seed_key, &x)?;
        }
        if let Some(u) = &r.user {
            m.serialize_entry("user", u)?;
        }
        if let Some(e) = v.effort {
            m.serialize_entry("reasoning_effort", e)?;
        }
        if r.stream {
            m.serialize_entry("stream", &true)?;
            if !mistral {
                // Always: the gateway accounts tokens even when the client did not ask.
                m.serialize_entry(
                    "stream_options",
                    &StreamOptionsOut {
                        include_usage: true,
                    },
                )?;
            }
        }
        for (k, x) in &r.extra {
            let k = match (mistral, k.as_str()) {
                (_, "stream_options") => continue,
                (true, "max_completion_tokens") => "max_tokens",
                (true, "seed") => "random_seed",
                (_, k) => k,
            };
            if !self.written(&v, k) {
                m.serialize_entry(k, x)?;
            }
        }
        m.end()
    }
}

/// A slice written as a JSON array through a typed view of each element.
struct Seq<'a, T, V>(&'a [T], fn(&'a T) -> V);

impl<'a, T, V: Serialize> Serialize for Seq<'a, T, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(self.1))
    }
}

#[derive(Serialize)]
struct StreamOptionsOut {
    include_usage: bool,
}

#[derive(Serialize)]
struct ToolDefOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionDefOut<'a>,
}

#[derive(Serialize)]
struct FunctionDefOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

impl<'a> ToolDefOut<'a> {
    fn new(t: &'a Tool) -> Self {
        Self {
            kind: "function",
            function: FunctionDefOut {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: Some(&t.parameters).filter(|p| !p.is_null()),
                strict: t.strict,
            },
        }
    }
}

struct ToolChoiceOut<'a>(&'a ToolChoice);

impl Serialize for ToolChoiceOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Function(name) => ToolDefOut {
                kind: "function",
                function: FunctionDefOut {
                    name,
                    description: None,
                    parameters: None,
                    strict: None,
                },
            }
            .serialize(s),
        }
    }
}

#[derive(Serialize)]
struct RequestMessageOut<'a> {
    role: &'static str,
    content: ContentOut<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// Parts Chat Completions has no place for: reasoning (another API's), cache breakpoints
/// (OpenAI caches prefixes by itself), other APIs' items (refused before).
fn sent(p: &Part) -> bool {
    !matches!(
        p,
        Part::Reasoning(_) | Part::CachePoint(_) | Part::Native(_)
    )
}

impl<'a> RequestMessageOut<'a> {
    fn new(m: &'a Message) -> Self {
        let content = if !m.content.iter().any(sent) {
            if m.role == Role::Assistant && !m.tool_calls.is_empty() {
                ContentOut::Null
            } else {
                ContentOut::Text("".into())
            }
        } else if m
            .content
            .iter()
            .all(|p| matches!(p, Part::Text(_)) || !sent(p))
        {
            ContentOut::Text(text_cow(&m.content))
        } else {
            ContentOut::Parts(&m.content)
        };
        Self {
            role: match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            },
            content,
            tool_calls: m.tool_calls.iter().map(ToolCallOut::whole).collect(),
            tool_call_id: m.tool_call_id.as_deref(),
            name: m.name.as_deref(),
        }
    }
}

/// A message's `content`: `null` (an assistant turn of tool calls only), a string (text
/// only), or parts.
enum ContentOut<'a> {
    Null,
    Text(std::borrow::Cow<'a, str>),
    Parts(&'a [Part]),
}

impl Serialize for ContentOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ContentOut::Null => s.serialize_unit(),
            ContentOut::Text(t) => s.serialize_str(t),
            ContentOut::Parts(parts) => {
                s.collect_seq(parts.iter().filter(|p| sent(p)).map(PartOut::new))
            }
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PartOut<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrlOut<'a> },
    File { file: FileOut<'a> },
}

#[derive(Serialize)]
struct FileOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<&'a str>,
}

#[derive(Serialize)]
struct ImageUrlOut<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

impl<'a> PartOut<'a> {
    fn new(p: &'a Part) -> Self {
        match p {
            Part::Text(text) => PartOut::Text { text },
            Part::Image { url, detail } => PartOut::ImageUrl {
                image_url: ImageUrlOut {
                    url,
                    detail: detail.as_deref(),
                },
            },
            Part::Document(d) => match &d.source {
                DocSource::Text(text) => PartOut::Text { text },
                DocSource::File(id) => PartOut::File {
                    file: FileOut {
                        file_data: None,
                        file_id: Some(id),
                        filename: d.filename.as_deref(),
                    },
                },
                // URLs are refused before ([`check_parts`]).
                DocSource::Data(url) | DocSource::Url(url) => PartOut::File {
                    file: FileOut {
                        file_data: Some(url),
                        file_id: None,
                        filename: Some(
                            d.filename
                                .as_deref()
                                .or(d.title.as_deref())
                                .unwrap_or("document.pdf"),
                        ),
                    },
                },
            },
            // Filtered out before ([`sent`]).
            Part::Reasoning(_) | Part::CachePoint(_) | Part::Native(_) => {
                PartOut::Text { text: "" }
            }
        }
    }
}

/// Mistral's chat API takes OpenAI's format but answers 422 (`extra_forbidden`) to fields it
/// does not know: it has no `stream_options` (its last stream chunk always carries usage), no
/// `max_completion_tokens` (only `max_tokens`), and names the seed `random_seed`.
pub fn encode_mistral_request(req: &ChatRequest, t: &Target) -> Result<Outgoing, TranslateError> {
    check_parts(req, "Mistral")?;
    Ok(Outgoing {
        path: "/v1/chat/completions".to_string(),
        body: request_body(req, t.model, t.defaults, Dialect::Mistral),
        headers: Vec::new(),
    })
}

// Front-door output is written from typed views that borrow the canonical values (no
// `Value` tree, no key strings allocated), with keys in OpenAI's own order.

#[derive(Serialize)]
struct ToolCallOut<'a> {
    /// Only in stream deltas.
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl<'a> ToolCallOut<'a> {
    fn whole(c: &'a ToolCall) -> Self {
        Self {
            index: None,
            id: Some(&c.id),
            kind: Some("function"),
            function: FunctionOut {
                name: Some(&c.name),
                arguments: &c.arguments,
            },
        }
    }
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedOut,
    completion_tokens_details: ReasoningOut,
}

#[derive(Serialize)]
struct CachedOut {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningOut {
    reasoning_tokens: u64,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
            prompt_tokens_details: CachedOut {
                cached_tokens: u.cached_tokens,
            },
            completion_tokens_details: ReasoningOut {
                reasoning_tokens: u.reasoning_tokens,
            },
        }
    }
}

#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<std::borrow::Cow<'a, str>>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [DeltaChoiceOut<'a>],
    /// With `include_usage`: `null` on every chunk but the usage one.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageOut>>,
}

#[derive(Serialize)]
struct DeltaChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

/// The text parts of a content list, concatenated; borrowed when there is one.
fn text_cow(parts: &[Part]) -> std::borrow::Cow<'_, str> {
    let mut texts = parts.iter().filter_map(|p| match p {
        Part::Text(t) => Some(t.as_str()),
        _ => None,
    });
    match (texts.next(), texts.next()) {
        (None, _) => "".into(),
        (Some(t), None) => t.into(),
        _ => text_of(parts).into(),
    }
}

/// The text parts of a content list, concatenated.
pub(crate) fn text_of(parts: &[Part]) -> String {
    let mut s = String::new();
    for p in parts {
        if let Part::Text(t) = p {
            s.push_str(t);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Provider: response and errors
// ---------------------------------------------------------------------------------------------

/// Decodes a non-streaming OpenAI answer (non-2xx statuses become errors).
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
    let Some(o) = v.as_object() else {
        return Err(invalid_upstream(format!(
            "provider returned {} instead of a chat completion object",
            super::json::type_name(&v)
        )));
    };
    if o.get("error").is_some_and(Value::is_object) && field(o, "choices").is_none() {
        return Err(decode_error(502, body));
    }
    let choices = match field(o, "choices") {
        Some(Value::Array(c)) => c,
        _ => {
            return Err(invalid_upstream(
                "provider response has no \"choices\" array".to_string(),
            ))
        }
    };
    let mut out = ChatResponse {
        id: str_field(o, "id"),
        model: str_field(o, "model"),
        created: num(o.get("created")),
        choices: Vec::new(),
        usage: field(o, "usage").map(usage_from),
    };
    for (i, c) in choices.iter().enumerate() {
        if let Some(c) = c.as_object() {
            out.choices.push(choice(c, i));
        }
    }
    Ok(out)
}

/// One of `choices` (the `i`th): its message, refusal and finish reason.
fn choice(c: &Map<String, Value>, i: usize) -> Choice {
    let index = c
        .get("index")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(u32::try_from(i).unwrap_or(u32::MAX));
    let empty = Map::new();
    let m = c
        .get("message")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut message = Message {
        role: Role::Assistant,
        content: Vec::new(),
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    };
    match field(m, "content") {
        Some(Value::String(s)) if !s.is_empty() => message.content.push(Part::Text(s.clone())),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    message.content.push(Part::Text(t.to_string()));
                }
            }
        }
        _ => {}
    }
    // DeepSeek, vLLM, Ollama and others send the model's reasoning beside the content.
    if let Some(r) = reasoning_text(m) {
        message.content.insert(
            0,
            Part::Reasoning(Reasoning {
                text: r.to_string(),
                signature: None,
                redacted: false,
                origin: Origin::Unknown,
                id: None,
            }),
        );
    }
    let refusal = field(m, "refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    if let Some(Value::Array(tcs)) = field(m, "tool_calls") {
        message.tool_calls = tcs.iter().map(tool_call).collect();
    }
    Choice {
        index,
        message,
        finish_reason: c
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(finish_from),
        refusal,
    }
}

/// A message's tool call (missing fields empty).
fn tool_call(tc: &Value) -> ToolCall {
    let f = tc.get("function");
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    ToolCall {
        id: s(tc.get("id")),
        name: s(f.and_then(|f| f.get("name"))),
        arguments: s(f.and_then(|f| f.get("arguments"))),
    }
}

fn str_field(o: &Map<String, Value>, key: &str) -> String {
    o.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// The reasoning text OpenAI-compatible servers put beside a message's content
/// (`reasoning_content`: DeepSeek, vLLM; `reasoning`: Ollama, OpenRouter).
fn reasoning_text(m: &Map<String, Value>) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|k| field(m, k).and_then(Value::as_str))
        .filter(|t| !t.is_empty())
}

fn finish_from(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn usage_from(v: &Value) -> Usage {
    Usage {
        prompt_tokens: num(v.get("prompt_tokens")),
        completion_tokens: num(v.get("completion_tokens")),
        cached_tokens: num(v
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))),
        reasoning_tokens: num(v
            .get("completion_tokens_details")
            .and_then(|d| d.get("reasoning_tokens"))),
        // OpenAI's usage has no cache-write figure.
        cache_write_tokens: 0,
    }
}

fn invalid_upstream(message: String) -> ProviderError {
    ProviderError {
        status: 502,
        kind: "server_error".to_string(),
        message,
        code: None,
    }
}

/// The OpenAI error `type` that goes with an HTTP status.
pub(crate) fn kind_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// Maps an OpenAI(-compatible) error answer to a [`ProviderError`].
///
/// Status mapping: the provider's 401/403 mean the *gateway's* credentials were refused, so
/// the client gets 502 (`provider rejected the gateway's credentials: ...`); 529 → 503;
/// other statuses pass through (non-error statuses become 502).
pub fn decode_error(status: u16, body: &[u8]) -> ProviderError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let (message, ptype, code) = match err {
        Some(Value::Object(e)) => (
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            e.get("type").and_then(Value::as_str).map(str::to_string),
            match e.get("code") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
        ),
        // Some compatible servers answer {"error": "text"} or {"message": "..."}.
        Some(Value::String(s)) => (s.clone(), None, None),
        _ => match parsed
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
        {
            Some(m) => (m.to_string(), None, None),
            None => (String::new(), None, None),
        },
    };
    let message = if message.is_empty() {
        if body.iter().all(u8::is_ascii_whitespace) {
            format!("provider returned HTTP {status} with an empty body")
        } else {
            format!("provider returned HTTP {status}: {}", excerpt(body))
        }
    } else {
        message
    };
    let code = code.or(ptype.clone());
    match status {
        401 | 403 => ProviderError {
            status: 502,
            kind: "server_error".into(),
            message: format!("provider rejected the gateway's credentials: {message}"),
            code,
        },
        529 => ProviderError {
            status: 503,
            kind: "server_error".into(),
            message,
            code,
        },
        400..=599 => ProviderError {
            status,
            kind: ptype.unwrap_or_else(|| kind_for_status(status).to_string()),
            message,
            code,
        },
        _ => ProviderError {
            status: 502,
            kind: "server_error".into(),
            message,
            code,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Provider: stream
// ---------------------------------------------------------------------------------------------

/// Decodes an OpenAI `chat.completion.chunk` SSE stream.
#[derive(Debug, Default)]
pub struct Decoder {
    sse: SseParser,
    started: bool,
    done: bool,
    failed: bool,
    /// (choice, call) pairs already announced with ToolCallStart.
    calls: Vec<(u32, u32)>,
    /// Choices that reported a finish reason.
    finished: Vec<u32>,
}

pub fn stream_decoder() -> Decoder {
    Decoder::default()
}

impl StreamDecoder for Decoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) {
        for e in self.sse.events(bytes) {
            self.on_data(&e.data, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        for e in self.sse.rest() {
            self.on_data(&e.data, out);
        }
        if self.started && !self.done && !self.failed && self.finished.is_empty() {
            self.failed = true;
            out.push(StreamEvent::Error(invalid_upstream(
                "provider stream ended before the response was complete".into(),
            )));
        }
    }
}

impl Decoder {
    fn on_data(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        if self.done || self.failed {
            return;
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        if data.is_empty() {
            return;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                self.failed = true;
                out.push(StreamEvent::Error(invalid_upstream(format!(
                    "provider sent an invalid stream chunk: {e}: {}",
                    excerpt(data.as_bytes())
                ))));
                return;
            }
        };
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            self.failed = true;
            let status = err
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(500);
            let body = json!({ "error": err }).to_string();
            out.push(StreamEvent::Error(decode_error(status, body.as_bytes())));
            return;
        }
        let choices = v.get("choices").and_then(Value::as_array);
        let usage = v.get("usage").filter(|u| u.is_object());
        // Azure sends a first chunk with empty choices carrying only prompt filter results.
        if choices.is_none_or(|c| c.is_empty()) && usage.is_none() {
            return;
        }
        if !self.started {
            self.started = true;
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            out.push(StreamEvent::Start {
                id: id.unwrap_or("chatcmpl-tollgate").to_string(),
                model: v
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
        for (i, c) in choices.into_iter().flatten().enumerate() {
            let index = c
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(u32::try_from(i).unwrap_or(0));
            if let Some(delta) = c.get("delta") {
                self.on_delta(index, delta, out);
            }
            if let Some(r) = c.get("finish_reason").and_then(Value::as_str) {
                if !self.finished.contains(&index) {
                    self.finished.push(index);
                }
                out.push(StreamEvent::Finish {
                    index,
                    reason: finish_from(r),
                });
            }
        }
        if let Some(u) = usage {
            out.push(StreamEvent::Usage(usage_from(u)));
        }
    }

    fn on_delta(&mut self, index: u32, delta: &Value, out: &mut Vec<StreamEvent>) {
        let text = |key: &str| {
            delta
                .get(key)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        if let Some(text) = delta
            .as_object()
            .and_then(reasoning_text)
            .map(str::to_string)
        {
            out.push(StreamEvent::Reasoning { index, text });
        }
        if let Some(text) = text("content") {
            out.push(StreamEvent::Text { index, text });
        }
        if let Some(text) = text("refusal") {
            out.push(StreamEvent::Refusal { index, text });
        }
        let Some(tcs) = delta.get("tool_calls").and_then(Value::as_array) else {
            return;
        };
        for tc in tcs {
            let id = tc
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let f = tc.get("function");
            let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
            let known = self.calls.iter().filter(|(c, _)| *c == index).count();
            let call = match tc.get("index").and_then(Value::as_u64) {
                Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
                // Some compatible servers omit the index: a new id opens the next call.
                None if id.is_some() => u32::try_from(known).unwrap_or(u32::MAX),
                None => u32::try_from(known.saturating_sub(1)).unwrap_or(0),
            };
            if !self.calls.contains(&(index, call)) && (id.is_some() || name.is_some()) {
                self.calls.push((index, call));
                out.push(StreamEvent::ToolCallStart {
                    index,
                    call,
                    id: id.map_or_else(|| format!("call_{index}_{call}"), str::to_string),
                    name: name.unwrap_or("").to_string(),
                });
            }
            if let Some(a) = f
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                out.push(StreamEvent::ToolCallArgs {
                    index,
                    call,
                    arguments: a.to_string(),
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Front door: response, stream and errors
// ---------------------------------------------------------------------------------------------

/// Encodes a canonical response as an OpenAI `chat.completion`; `model` is what the client asked for.
pub fn encode_response(resp: &ChatResponse, model: &str) -> Vec<u8> {
    let choices = resp
        .choices
        .iter()
        .map(|c| {
            let m = &c.message;
            let text = text_cow(&m.content);
            // A refusal alone has `content: null`, as OpenAI answers it.
            let bare = m.tool_calls.is_empty() && c.refusal.is_none();
            ChoiceOut {
                index: c.index,
                message: MessageOut {
                    role: "assistant",
                    content: (!text.is_empty() || bare).then_some(text),
                    refusal: c.refusal.as_deref(),
                    tool_calls: m.tool_calls.iter().map(ToolCallOut::whole).collect(),
                },
                logprobs: (),
                finish_reason: c.finish_reason.map(FinishReason::as_str),
            }
        })
        .collect();
    let out = CompletionOut {
        id: &resp.id,
        object: "chat.completion",
        created: resp.created,
        model,
        choices,
        usage: resp.usage.as_ref().map(UsageOut::from),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Encodes canonical stream events as OpenAI `chat.completion.chunk` SSE.
#[derive(Debug)]
pub struct StreamEncoder {
    model: String,
    include_usage: bool,
    id: String,
    created: u64,
    /// Choices whose first chunk (with `role`) was sent.
    roles: Vec<u32>,
    usage: Option<Usage>,
    finished: bool,
}

impl StreamEncoder {
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            model: model.to_string(),
            include_usage,
            id: "chatcmpl-tollgate".to_string(),
            created: 0,
            roles: Vec::new(),
            usage: None,
            finished: false,
        }
    }

    /// Sets the `created` Unix time carried by every chunk (0 unless set).
    pub fn set_created(&mut self, unix_seconds: u64) {
        self.created = unix_seconds;
    }

    fn chunk(&self, choices: &[DeltaChoiceOut], usage: Option<UsageOut>, out: &mut Vec<u8>) {
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage: self.include_usage.then_some(usage),
        };
        write_json_event(out, None, &chunk);
    }

    fn delta(
        &mut self,
        index: u32,
        mut delta: DeltaOut,
        finish: Option<FinishReason>,
        out: &mut Vec<u8>,
    ) {
        if !self.roles.contains(&index) {
            self.roles.push(index);
            delta.role = Some("assistant");
        }
        let choice = DeltaChoiceOut {
            index,
            delta,
            logprobs: (),
            finish_reason: finish.map(FinishReason::as_str),
        };
        self.chunk(&[choice], None, out);
    }

    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        match ev {
            StreamEvent::Start { id, .. } => {
                if !id.is_empty() {
                    self.id.clone_from(id);
                }
                let d = DeltaOut {
                    content: Some(""),
                    ..DeltaOut::default()
                };
                self.delta(0, d, None, out);
            }
            StreamEvent::Text { index, text } => {
                let d = DeltaOut {
                    content: Some(text),
                    ..DeltaOut::default()
                };
                self.delta(*index, d, None, out);
            }
            StreamEvent::Refusal { index, text } => {
                let d = DeltaOut {
                    refusal: Some(text),
                    ..DeltaOut::default()
                };
                self.delta(*index, d, None, out);
            }
            StreamEvent::ToolCallStart {
                index,
                call,
                id,
                name,
            } => {
                let d = tool_delta(*call, Some((id, name)), "");
                self.delta(*index, d, None, out);
            }
            StreamEvent::ToolCallArgs {
                index,
                call,
                arguments,
            } => self.delta(*index, tool_delta(*call, None, arguments), None, out),
            StreamEvent::Finish { index, reason } => {
                self.delta(*index, DeltaOut::default(), Some(*reason), out);
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            // Chat Completions has no reasoning or hosted-tool items in its answers.
            StreamEvent::ReasoningStart { .. }
            | StreamEvent::Reasoning { .. }
            | StreamEvent::ReasoningEnd { .. }
            | StreamEvent::RedactedReasoning { .. }
            | StreamEvent::Native(_) => {}
            StreamEvent::Error(e) => {
                write_event(
                    out,
                    None,
                    &error_value(&e.message, &e.kind, e.code.as_deref(), None).to_string(),
                );
            }
        }
    }

    /// Ends the stream: the usage chunk (if asked for and known), then `data: [DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.include_usage {
            if let Some(u) = self.usage {
                self.chunk(&[], Some(UsageOut::from(&u)), out);
            }
        }
        write_event(out, None, "[DONE]");
    }
}

/// A delta of tool call `call`: its start (`id` and name, no arguments yet) or a fragment of
/// its arguments.
fn tool_delta<'a>(
    call: u32,
    start: Option<(&'a str, &'a str)>,
    arguments: &'a str,
) -> DeltaOut<'a> {
    let call = ToolCallOut {
        index: Some(call),
        id: start.map(|(id, _)| id),
        kind: start.map(|_| "function"),
        function: FunctionOut {
            name: start.map(|(_, name)| name),
            arguments,
        },
    };
    DeltaOut {
        tool_calls: Some([call]),
        ..DeltaOut::default()
    }
}

fn error_value(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// OpenAI's error body: `{"error":{"message","type","param","code"}}`.
pub fn error_json(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Vec<u8> {
    error_value(message, kind, code, param)
        .to_string()
        .into_bytes()
}

/// A provider error in OpenAI's error shape (send with `e.status`).
pub fn error_body(e: &ProviderError) -> Vec<u8> {
    error_json(&e.message, &e.kind, e.code.as_deref(), None)
}

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
