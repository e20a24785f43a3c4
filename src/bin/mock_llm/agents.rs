//! The API surface agents use, mocked: embeddings on each provider's wire, token counting
//! (Anthropic, Gemini, Bedrock), OpenAI's Responses API (plain and streamed), and the signed
//! reasoning each provider gives and checks (Anthropic and Bedrock thinking signatures,
//! Gemini thought signatures on function calls).
//!
//! Signatures are deterministic ([`signature`], [`gemini_signature`]), so the mock can do
//! what the real providers do with a signature it did not write: refuse the request (400).

use super::providers::{prompt_tokens, split_words, Provider, TOOL_ARGS};
use serde_json::{json, Map, Value};
use tollgate::support::{encoding::base64_encode, hash::fnv1a64};

/// Vector length when the request names none.
pub const DEFAULT_DIMENSIONS: usize = 8;

/// What an agent-API path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Embeddings: OpenAI-style `/embeddings` (model in the body, or an Azure deployment),
    /// Gemini `:embedContent` / `:batchEmbedContents`, Bedrock `/model/{id}/invoke`.
    Embed {
        provider: Provider,
        model: Option<String>,
    },
    /// Token counting: Anthropic `/v1/messages/count_tokens`, Gemini `:countTokens`, Bedrock
    /// `/model/{id}/count-tokens`.
    Count { provider: Provider },
    /// OpenAI's Responses API.
    Responses,
}

/// The agent-API operation a `POST` path names, if any.
pub fn route(path: &str) -> Option<Op> {
    if path.ends_with("/embeddings") {
        let model = path
            .split_once("/deployments/")
            .and_then(|(_, rest)| rest.split('/').next())
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        return Some(Op::Embed {
            provider: Provider::OpenAi,
            model,
        });
    }
    if path.ends_with("/messages/count_tokens") {
        return Some(Op::Count {
            provider: Provider::Anthropic,
        });
    }
    if path.ends_with("/responses") {
        return Some(Op::Responses);
    }
    if let Some((_, rest)) = path.rsplit_once("/models/") {
        if let Some((model, action)) = rest.rsplit_once(':') {
            match action {
                "embedContent" | "batchEmbedContents" => {
                    return Some(Op::Embed {
                        provider: Provider::Gemini,
                        model: Some(model.to_string()),
                    })
                }
                "countTokens" => {
                    return Some(Op::Count {
                        provider: Provider::Gemini,
                    })
                }
                _ => {}
            }
        }
    }
    if let Some((_, rest)) = path.rsplit_once("/model/") {
        if let Some((model, action)) = rest.rsplit_once('/') {
            match action {
                "invoke" => {
                    return Some(Op::Embed {
                        provider: Provider::Bedrock,
                        model: Some(percent_decoded(model)),
                    })
                }
                "count-tokens" => {
                    return Some(Op::Count {
                        provider: Provider::Bedrock,
                    })
                }
                _ => {}
            }
        }
    }
    None
}

fn percent_decoded(s: &str) -> String {
    s.replace("%3A", ":").replace("%3a", ":")
}

// ---------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------

/// The signature the mock gives a thinking block of `text` (Anthropic, Bedrock).
pub fn signature(text: &str) -> String {
    format!("mocksig{:016x}", fnv1a64(text.as_bytes()))
}

/// The thought signature the mock gives a Gemini function call: base64 with `+`, `/` and
/// padding, as Gemini's are.
pub fn gemini_signature(name: &str) -> String {
    let mut bytes = vec![0xfb, 0xef, 0xff];
    bytes.extend_from_slice(&fnv1a64(name.as_bytes()).to_be_bytes());
    base64_encode(&bytes)
}

/// The first reason to refuse the reasoning blocks a request carries back, as the real
/// provider would: a thinking block (Anthropic) or `reasoningContent` (Bedrock) whose
/// signature is not the one the mock gave it; for Gemini, a function call whose
/// `thoughtSignature` is not the mock's (or missing, when `require` is set).
pub fn bad_signature(provider: Provider, req: &Value, require: bool) -> Option<String> {
    let turns = match provider {
        Provider::Gemini => req.get("contents"),
        _ => req.get("messages"),
    }?
    .as_array()?;
    for (i, turn) in turns.iter().enumerate() {
        let blocks = match provider {
            Provider::Gemini => turn.get("parts"),
            _ => turn.get("content"),
        };
        for (j, b) in blocks
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            match provider {
                Provider::Anthropic
                    if b.get("type").and_then(Value::as_str) == Some("thinking") =>
                {
                    let text = b.get("thinking").and_then(Value::as_str).unwrap_or("");
                    if b.get("signature").and_then(Value::as_str) != Some(&signature(text)) {
                        return Some(format!(
                            "messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                        ));
                    }
                }
                Provider::Bedrock => {
                    let Some(rt) = b
                        .get("reasoningContent")
                        .and_then(|r| r.get("reasoningText"))
                    else {
                        continue;
                    };
                    let text = rt.get("text").and_then(Value::as_str).unwrap_or("");
                    if rt.get("signature").and_then(Value::as_str) != Some(&signature(text)) {
                        return Some(format!(
                            "messages.{i}.content.{j}.reasoningContent: the signature does not match the reasoning text"
                        ));
                    }
                }
                Provider::Gemini => {
                    let Some(name) = b
                        .get("functionCall")
                        .and_then(|c| c.get("name"))
                        .and_then(Value::as_str)
                    else {
                        continue;
                    };
                    match b.get("thoughtSignature").and_then(Value::as_str) {
                        Some(s) if s == gemini_signature(name) => {}
                        Some(_) => {
                            return Some(format!(
                                "contents[{i}].parts[{j}]: Corrupted thought signature."
                            ))
                        }
                        None if require && j == 0 => {
                            return Some(format!(
                                "contents[{i}].parts[{j}]: Function call is missing a thought_signature in functionCall parts."
                            ))
                        }
                        None => {}
                    }
                }
                _ => {}
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------

/// A deterministic vector for `text`: `dims` values `k/1024` (exact in float32, short in JSON).
pub fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut h = fnv1a64(text.as_bytes());
    (0..dims)
        .map(|_| {
            h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
            let k = ((h >> 33) % 2049) as i32 - 1024;
            k as f32 / 1024.0
        })
        .collect()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn dims_of(v: Option<&Value>) -> usize {
    v.and_then(Value::as_u64)
        .map(|d| (d as usize).clamp(1, 4096))
        .unwrap_or(DEFAULT_DIMENSIONS)
}

fn texts_of(input: Option<&Value>) -> Vec<String> {
    match input {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The embeddings answer: (status, body, extra headers). `path_model` is the model of the
/// path (Azure deployment, Gemini model, Bedrock model id).
pub fn embed(
    provider: Provider,
    path_model: Option<&str>,
    path: &str,
    req: &Value,
) -> (u16, Value, Vec<(&'static str, String)>) {
    match provider {
        Provider::Gemini => {
            let one = |r: &Value| {
                let text: String = r
                    .get("content")
                    .and_then(|c| c.get("parts"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                json!({"values": vector(&text, dims_of(r.get("outputDimensionality")))})
            };
            if path.ends_with(":batchEmbedContents") {
                let list: Vec<Value> = req
                    .get("requests")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(one)
                    .collect();
                (200, json!({"embeddings": list}), Vec::new())
            } else {
                (200, json!({"embedding": one(req)}), Vec::new())
            }
        }
        Provider::Bedrock => {
            let model = path_model.unwrap_or("");
            if model.contains("titan-embed") {
                let text = req.get("inputText").and_then(Value::as_str).unwrap_or("");
                let dims = dims_of(req.get("dimensions"));
                let v = vector(text, dims);
                let n = words(text);
                (
                    200,
                    json!({"embedding": v, "embeddingsByType": {"float": v}, "inputTextTokenCount": n}),
                    vec![("x-amzn-bedrock-input-token-count", n.to_string())],
                )
            } else if model.contains("cohere.embed") {
                let texts = texts_of(req.get("texts"));
                let dims = dims_of(req.get("output_dimension"));
                let list: Vec<Vec<f32>> = texts.iter().map(|t| vector(t, dims)).collect();
                let n: u64 = texts.iter().map(|t| words(t)).sum();
                (
                    200,
                    json!({"id": "mock-embed", "response_type": "embeddings_by_type",
                           "embeddings": {"float": list}, "texts": texts}),
                    vec![("x-amzn-bedrock-input-token-count", n.to_string())],
                )
            } else {
                (
                    400,
                    json!({"message": format!("The provided model identifier is invalid: {model}")}),
                    vec![("x-amzn-errortype", "ValidationException".to_string())],
                )
            }
        }
        _ => {
            let texts = texts_of(req.get("input"));
            let dims = dims_of(
                req.get("dimensions")
                    .or_else(|| req.get("output_dimension")),
            );
            let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
            let data: Vec<Value> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let v = vector(t, dims);
                    let e = if base64 {
                        let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                        json!(base64_encode(&bytes))
                    } else {
                        json!(v)
                    };
                    json!({"object": "embedding", "index": i, "embedding": e})
                })
                .collect();
            let n: u64 = texts.iter().map(|t| words(t)).sum();
            let model = req
                .get("model")
                .and_then(Value::as_str)
                .or(path_model)
                .unwrap_or("mock-embedding");
            (
                200,
                json!({"object": "list", "data": data, "model": model,
                       "usage": {"prompt_tokens": n, "total_tokens": n}}),
                Vec::new(),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// Token counting
// ---------------------------------------------------------------------------------------

/// The count answer: the same word rule as the usage of an answer to the same prompt, so a
/// count can be checked against a later call.
pub fn count(provider: Provider, req: &Value) -> Value {
    match provider {
        Provider::Gemini => {
            let inner = req.get("generateContentRequest").unwrap_or(req);
            json!({"totalTokens": prompt_tokens(Provider::Gemini, inner)})
        }
        Provider::Bedrock => {
            let inner = req
                .get("input")
                .and_then(|i| i.get("converse"))
                .unwrap_or(&Value::Null);
            json!({"inputTokens": prompt_tokens(Provider::Bedrock, inner)})
        }
        _ => json!({"input_tokens": prompt_tokens(Provider::Anthropic, req)}),
    }
}

// ---------------------------------------------------------------------------------------
// Responses API
// ---------------------------------------------------------------------------------------

/// The prompt tokens of a Responses request: the overhead plus the words of `instructions`
/// and of the input's texts.
fn responses_prompt_tokens(req: &Value) -> u64 {
    let mut probe = Map::new();
    let mut messages = Vec::new();
    if let Some(i) = req.get("instructions") {
        messages.push(json!({"content": i}));
    }
    match req.get("input") {
        Some(Value::String(s)) => messages.push(json!({"content": s})),
        Some(Value::Array(items)) => messages.extend(items.iter().cloned()),
        _ => {}
    }
    probe.insert("messages".into(), Value::Array(messages));
    prompt_tokens(Provider::OpenAi, &Value::Object(probe))
}

/// What the mock answers a Responses request with.
#[derive(Debug, Clone)]
pub struct ResponsesReply {
    pub id: String,
    pub model: String,
    pub created: u64,
    /// The reasoning summary (with `x-mock-thinking`).
    pub thinking: Option<String>,
    pub text: Option<Vec<String>>,
    /// A function call: name and argument pieces.
    pub call: Option<(String, Vec<String>)>,
    pub prompt_tokens: u64,
    /// Echoed fields of the request (to show what went through).
    pub echo: Map<String, Value>,
}

impl ResponsesReply {
    pub fn output_tokens(&self) -> u64 {
        let n =
            self.text.as_ref().map_or(0, Vec::len) + self.call.as_ref().map_or(0, |(_, p)| p.len());
        n as u64
    }
}

/// Plans a Responses answer: a function output last in the input answers `The tool said:
/// <output>`; else function tools make the first one called; else text.
pub fn plan_responses(
    req: &Value,
    text: Option<&str>,
    thinking: Option<&str>,
    seq: u64,
    created: u64,
) -> ResponsesReply {
    let items = req.get("input").and_then(Value::as_array);
    let last = items.and_then(|i| i.last());
    let tool_output = last
        .filter(|l| l.get("type").and_then(Value::as_str) == Some("function_call_output"))
        .map(|l| super::providers::result_text(l.get("output").unwrap_or(&Value::Null)));
    let function = req.get("tools").and_then(Value::as_array).and_then(|t| {
        t.iter()
            .find(|t| t.get("type").and_then(Value::as_str) == Some("function"))
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let mut echo = Map::new();
    for k in [
        "previous_response_id",
        "store",
        "metadata",
        "instructions",
        "background",
    ] {
        if let Some(v) = req.get(k) {
            echo.insert(k.to_string(), v.clone());
        }
    }
    let (text, call) = match (tool_output, function) {
        (Some(out), _) => (Some(split_words(&format!("The tool said: {out}"))), None),
        (None, Some(name)) => {
            let args = TOOL_ARGS;
            let mid = args.len() / 2;
            (
                None,
                Some((name, vec![args[..mid].to_string(), args[mid..].to_string()])),
            )
        }
        (None, None) => (
            Some(split_words(text.unwrap_or("Hello from mock openai!"))),
            None,
        ),
    };
    ResponsesReply {
        id: format!("resp_mock{seq}"),
        model: req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("mock-model")
            .to_string(),
        created,
        thinking: thinking.map(str::to_string),
        text,
        call,
        prompt_tokens: responses_prompt_tokens(req),
        echo,
    }
}

fn reasoning_item(r: &ResponsesReply) -> Option<Value> {
    let t = r.thinking.as_ref()?;
    Some(json!({"id": format!("rs_{}", r.id), "type": "reasoning",
                "summary": [{"type": "summary_text", "text": t}],
                "encrypted_content": signature(t)}))
}

fn message_item(r: &ResponsesReply) -> Option<Value> {
    let t = r.text.as_ref()?.concat();
    Some(
        json!({"id": format!("msg_{}", r.id), "type": "message", "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": t, "annotations": [], "logprobs": []}]}),
    )
}

fn call_item(r: &ResponsesReply) -> Option<Value> {
    let (name, pieces) = r.call.as_ref()?;
    Some(
        json!({"id": format!("fc_{}", r.id), "type": "function_call", "status": "completed",
                "arguments": pieces.concat(), "call_id": format!("call_{}", r.id), "name": name}),
    )
}

fn responses_object(r: &ResponsesReply, status: &str, output: Vec<Value>, usage: bool) -> Value {
    let mut v = json!({
        "id": r.id, "object": "response", "created_at": r.created, "status": status,
        "background": false, "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": r.model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
        "store": true, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": null, "user": null, "metadata": {}
    });
    for (k, e) in &r.echo {
        v[k] = e.clone();
    }
    if usage {
        let o = r.output_tokens();
        v["usage"] = json!({"input_tokens": r.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": o, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": r.prompt_tokens + o});
    }
    v
}

/// The whole (non-stream) Responses answer.
pub fn responses_body(r: &ResponsesReply) -> Value {
    let output: Vec<Value> = [reasoning_item(r), message_item(r), call_item(r)]
        .into_iter()
        .flatten()
        .collect();
    responses_object(r, "completed", output, true)
}

/// The Responses event sequence of `r` (as OpenAI streams it: created, in_progress, items
/// added/deltas/done, completed), each `(event name, data)`.
pub fn responses_events(r: &ResponsesReply) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut push = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(out.len());
        out.push((kind.to_string(), data));
    };
    let snapshot = responses_object(r, "in_progress", Vec::new(), false);
    push("response.created", json!({"response": snapshot}));
    push("response.in_progress", json!({"response": snapshot}));
    let mut output = Vec::new();
    if let Some(item) = reasoning_item(r) {
        let i = output.len();
        let id = item["id"].clone();
        let text = r.thinking.clone().unwrap_or_default();
        push(
            "response.output_item.added",
            json!({"output_index": i,
            "item": {"id": id, "type": "reasoning", "summary": []}}),
        );
        push(
            "response.reasoning_summary_part.added",
            json!({"item_id": id, "output_index": i,
            "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
        );
        for w in split_words(&text) {
            push(
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": i,
                "summary_index": 0, "delta": w}),
            );
        }
        push(
            "response.reasoning_summary_text.done",
            json!({"item_id": id, "output_index": i,
            "summary_index": 0, "text": text}),
        );
        push(
            "response.reasoning_summary_part.done",
            json!({"item_id": id, "output_index": i,
            "summary_index": 0, "part": {"type": "summary_text", "text": text}}),
        );
        push(
            "response.output_item.done",
            json!({"output_index": i, "item": item}),
        );
        output.push(item);
    }
    if let (Some(item), Some(pieces)) = (message_item(r), &r.text) {
        let i = output.len();
        let id = item["id"].clone();
        push(
            "response.output_item.added",
            json!({"output_index": i, "item": {"id": id,
            "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
        );
        push(
            "response.content_part.added",
            json!({"item_id": id, "output_index": i,
            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
        );
        for p in pieces {
            push(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": i,
                "content_index": 0, "delta": p, "logprobs": []}),
            );
        }
        let text = pieces.concat();
        push(
            "response.output_text.done",
            json!({"item_id": id, "output_index": i,
            "content_index": 0, "text": text, "logprobs": []}),
        );
        push(
            "response.content_part.done",
            json!({"item_id": id, "output_index": i,
            "content_index": 0, "part": item["content"][0]}),
        );
        push(
            "response.output_item.done",
            json!({"output_index": i, "item": item}),
        );
        output.push(item);
    }
    if let (Some(item), Some((_, pieces))) = (call_item(r), &r.call) {
        let i = output.len();
        let id = item["id"].clone();
        let mut added = item.clone();
        added["status"] = json!("in_progress");
        added["arguments"] = json!("");
        push(
            "response.output_item.added",
            json!({"output_index": i, "item": added}),
        );
        for p in pieces {
            push(
                "response.function_call_arguments.delta",
                json!({"item_id": id,
                "output_index": i, "delta": p}),
            );
        }
        push(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": i,
            "arguments": item["arguments"]}),
        );
        push(
            "response.output_item.done",
            json!({"output_index": i, "item": item}),
        );
        output.push(item);
    }
    push(
        "response.completed",
        json!({"response": responses_object(r, "completed", output, true)}),
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Stored responses (OpenAI's background mode, retrieve, cancel, delete, input items)
// ---------------------------------------------------------------------------------------------

/// What a path under `/responses/{id}` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// `GET` (retrieve) and `DELETE` of `/responses/{id}`.
    Object(String),
    Cancel(String),
    InputItems(String),
}

/// The stored-response operation a path names, if any.
pub fn stored_route(path: &str) -> Option<Stored> {
    let (head, last) = path.rsplit_once('/')?;
    let id_of = |p: &str| {
        let (base, id) = p.rsplit_once('/')?;
        (base.ends_with("/responses") && id.starts_with("resp_")).then(|| id.to_string())
    };
    match last {
        "cancel" => id_of(head).map(Stored::Cancel),
        "input_items" => id_of(head).map(Stored::InputItems),
        _ => id_of(path).map(Stored::Object),
    }
}

/// A response the mock stores: what it answers, how often it was polled (a background
/// response is `queued`, then `in_progress` at the first retrieve, `completed` from the
/// second on), and whether it was cancelled.
#[derive(Debug, Clone)]
pub struct Kept {
    pub reply: ResponsesReply,
    pub background: bool,
    pub polls: u32,
    pub cancelled: bool,
    /// The request's `input`, for `input_items`.
    pub input: Value,
}

impl Kept {
    /// The object as a retrieve sees it now (counts the poll).
    pub fn retrieve(&mut self) -> Value {
        if self.background && !self.cancelled {
            self.polls = self.polls.saturating_add(1);
        }
        self.object()
    }

    /// The object as it stands.
    pub fn object(&self) -> Value {
        let mut v = if self.cancelled {
            responses_object(&self.reply, "cancelled", Vec::new(), false)
        } else if self.background && self.polls < 2 {
            let status = if self.polls == 0 {
                "queued"
            } else {
                "in_progress"
            };
            responses_object(&self.reply, status, Vec::new(), false)
        } else {
            responses_body(&self.reply)
        };
        v["background"] = json!(self.background);
        v
    }

    /// The stream of a retrieve with `stream=true`: every event after `starting_after`.
    pub fn events(&self, starting_after: Option<u64>) -> Vec<(String, Value)> {
        let mut all = responses_events(&self.reply);
        all.retain(|(_, d)| {
            let n = d
                .get("sequence_number")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            starting_after.is_none_or(|s| n > s)
        });
        all
    }

    /// `input_items`: the input as items, as OpenAI lists them.
    pub fn input_items(&self) -> Value {
        let items: Vec<Value> = match &self.input {
            Value::String(t) => vec![json!({"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": t}]})],
            Value::Array(a) => a.clone(),
            _ => Vec::new(),
        };
        let data: Vec<Value> = items
            .into_iter()
            .enumerate()
            .map(|(i, mut item)| {
                item["id"] = json!(format!("msg_in{i}_{}", self.reply.id));
                if item.get("type").is_none() {
                    item["type"] = json!("message");
                }
                if item.get("status").is_none() {
                    item["status"] = json!("completed");
                }
                item
            })
            .collect();
        let id = |v: Option<&Value>| v.and_then(|i| i.get("id")).cloned().unwrap_or(json!(""));
        json!({"object": "list", "first_id": id(data.first()), "last_id": id(data.last()),
               "has_more": false, "data": data})
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let embed = |p, m: Option<&str>| {
            Some(Op::Embed {
                provider: p,
                model: m.map(str::to_string),
            })
        };
        assert_eq!(route("/v1/embeddings"), embed(Provider::OpenAi, None));
        assert_eq!(
            route("/openai/deployments/emb/embeddings"),
            embed(Provider::OpenAi, Some("emb"))
        );
        assert_eq!(
            route("/v1beta/models/gemini-embedding-001:batchEmbedContents"),
            embed(Provider::Gemini, Some("gemini-embedding-001"))
        );
        assert_eq!(
            route("/model/amazon.titan-embed-text-v2%3A0/invoke"),
            embed(Provider::Bedrock, Some("amazon.titan-embed-text-v2:0"))
        );
        assert_eq!(
            route("/v1/messages/count_tokens"),
            Some(Op::Count {
                provider: Provider::Anthropic
            })
        );
        assert_eq!(
            route("/v1beta/models/g:countTokens"),
            Some(Op::Count {
                provider: Provider::Gemini
            })
        );
        assert_eq!(
            route("/model/x/count-tokens"),
            Some(Op::Count {
                provider: Provider::Bedrock
            })
        );
        assert_eq!(route("/v1/responses"), Some(Op::Responses));
        assert_eq!(
            stored_route("/v1/responses/resp_1"),
            Some(Stored::Object("resp_1".into()))
        );
        assert_eq!(
            stored_route("/openai/v1/responses/resp_1/cancel"),
            Some(Stored::Cancel("resp_1".into()))
        );
        assert_eq!(
            stored_route("/v1/responses/resp_1/input_items"),
            Some(Stored::InputItems("resp_1".into()))
        );
        assert_eq!(stored_route("/v1/responses"), None);
        assert_eq!(stored_route("/v1/chat/completions"), None);
        assert_eq!(route("/v1/messages"), None);
    }

    #[test]
    fn vectors_are_deterministic_and_exact_in_float32() {
        let v = vector("hello", 16);
        assert_eq!(v, vector("hello", 16));
        assert_ne!(v, vector("hellp", 16));
        assert!(v
            .iter()
            .all(|x| (-1.0..=1.0).contains(x) && (x * 1024.0).fract() == 0.0));
    }

    #[test]
    fn signatures_are_checked_like_the_providers_do() {
        let good = json!({"messages": [{"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": signature("t")}]}]});
        assert_eq!(bad_signature(Provider::Anthropic, &good, false), None);
        let forged = json!({"messages": [{"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "tollgate.gemini."}]}]});
        assert!(bad_signature(Provider::Anthropic, &forged, false).is_some());
        let sig = gemini_signature("f");
        assert!(sig.contains('+') || sig.contains('/') || sig.ends_with('='));
        let g = json!({"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}]});
        assert!(bad_signature(Provider::Gemini, &g, true).is_some());
        assert_eq!(bad_signature(Provider::Gemini, &g, false), None);
    }

    #[test]
    fn responses_stream_is_well_formed() {
        let req =
            json!({"model": "gpt-5", "input": "hi", "tools": [{"type": "function", "name": "f"}]});
        let r = plan_responses(&req, None, Some("Think first."), 3, 1);
        let evs = responses_events(&r);
        assert_eq!(evs.first().unwrap().0, "response.created");
        assert_eq!(evs.last().unwrap().0, "response.completed");
        for (i, (_, d)) in evs.iter().enumerate() {
            assert_eq!(d["sequence_number"], json!(i));
        }
        let done = &evs.last().unwrap().1["response"];
        assert_eq!(done["output"][0]["type"], "reasoning");
        assert_eq!(done["output"][1]["arguments"], TOOL_ARGS);
        assert_eq!(responses_body(&r)["output"], done["output"]);
    }
}
