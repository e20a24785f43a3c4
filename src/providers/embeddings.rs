//! Embeddings (`POST /v1/embeddings`, OpenAI's shape) to every provider that has them.
//!
//! The door: [`parse_request`] (OpenAI's request: `input` a string, strings, or token arrays;
//! `dimensions`; `encoding_format` `float` or `base64`) and [`encode_response`] (OpenAI's
//! `list` of `embedding` objects, vectors as JSON numbers or as base64 of little-endian
//! float32, the way the `openai` SDK asks for them by default).
//!
//! Providers ([`encode_request`], [`decode_response`]):
//!
//! | provider | call | notes |
//! |---|---|---|
//! | OpenAI, Ollama, vLLM, OpenAI-compatible | `POST /v1/embeddings` | vectors asked as floats |
//! | Mistral | `POST /v1/embeddings` | `output_dimension` for `dimensions`; no `user` |
//! | Azure | `POST /openai/deployments/{d}/embeddings?api-version=…` | |
//! | Gemini | `:embedContent` (one input), `:batchEmbedContents` (several) | `outputDimensionality`, `taskType` from `input_type` |
//! | Bedrock Titan (`amazon.titan-embed-*`) | `POST /model/{id}/invoke` `{inputText, dimensions, normalize}` | one text per call |
//! | Bedrock Cohere (`cohere.embed-*`) | `POST /model/{id}/invoke` `{texts, input_type, embedding_types}` | `output_dimension` (v4) |
//! | Anthropic | — | refused: Anthropic has no embeddings API |
//!
//! Token arrays go to OpenAI-compatible providers only. Usage: the provider's count when it
//! gives one (OpenAI `usage`, Titan `inputTextTokenCount`, Bedrock's
//! `x-amzn-bedrock-input-token-count` header), else `None` and the gateway's estimate
//! ([`EmbeddingRequest::estimate_tokens`]).

use serde_json::{json, Map, Value};

use super::json::{
    as_arr, as_str, at, cerr, excerpt, object, opt_str, opt_u64, parse_body, req, req_str,
    ClientError,
};
use super::model::{
    EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EncodingFormat, ProviderError,
};
use super::{Outgoing, Target, TranslateError, Wire};
use crate::support::encoding::{base64_decode, base64_encode, uri_encode};

/// OpenAI's limit on inputs per call.
pub const MAX_INPUTS: usize = 2048;

/// The `input_type` values tollgate maps to Cohere `input_type` and Gemini `taskType`.
const INPUT_TYPES: &[(&str, &str)] = &[
    ("search_document", "RETRIEVAL_DOCUMENT"),
    ("search_query", "RETRIEVAL_QUERY"),
    ("classification", "CLASSIFICATION"),
    ("clustering", "CLUSTERING"),
];

// ---------------------------------------------------------------------------------------------
// Door
// ---------------------------------------------------------------------------------------------

/// Parses an OpenAI embeddings request.
pub fn parse_request(body: &[u8]) -> Result<EmbeddingRequest, ClientError> {
    parse_object(parse_body(body)?)
}

/// Reads an OpenAI embeddings request already parsed as JSON.
pub fn parse_value(doc: Value) -> Result<EmbeddingRequest, ClientError> {
    parse_object(object(doc)?)
}

fn parse_object(obj: Map<String, Value>) -> Result<EmbeddingRequest, ClientError> {
    let model = req_str(&obj, "model", "")?;
    if model.is_empty() {
        return Err(cerr("model", "must not be empty"));
    }
    let input = input(req(&obj, "input", "")?)?;
    let dimensions = match opt_u64(&obj, "dimensions", "")? {
        Some(0) => return Err(cerr("dimensions", "must be at least 1")),
        Some(n) => {
            Some(u32::try_from(n).map_err(|_| cerr("dimensions", format!("{n} is too large")))?)
        }
        None => None,
    };
    let encoding_format = match opt_str(&obj, "encoding_format", "")? {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(cerr(
                "encoding_format",
                format!("unknown encoding format \"{other}\" (expected float or base64)"),
            ))
        }
    };
    let input_type = opt_str(&obj, "input_type", "")?;
    if let Some(t) = input_type {
        if !INPUT_TYPES.iter().any(|(k, _)| *k == t) {
            let known: Vec<&str> = INPUT_TYPES.iter().map(|(k, _)| *k).collect();
            return Err(cerr(
                "input_type",
                format!("unknown input type \"{t}\" (expected {})", known.join(", ")),
            ));
        }
    }
    let model = model.to_string();
    let user = opt_str(&obj, "user", "")?.map(str::to_string);
    let input_type = input_type.map(str::to_string);
    const TYPED: &[&str] = &[
        "model",
        "input",
        "dimensions",
        "encoding_format",
        "user",
        "input_type",
    ];
    // Moved, not copied: the client's document was parsed once and is not needed after this.
    let extra: Map<String, Value> = obj
        .into_iter()
        .filter(|(k, _)| !TYPED.contains(&k.as_str()))
        .collect();
    Ok(EmbeddingRequest {
        model,
        input,
        dimensions,
        encoding_format,
        user,
        input_type,
        extra,
    })
}

/// `input`: a string, strings, one token array or token arrays; at least one, at most
/// [`MAX_INPUTS`], no empty text.
fn input(v: &Value) -> Result<EmbeddingInput, ClientError> {
    let input = match v {
        Value::String(s) => EmbeddingInput::Texts(vec![s.clone()]),
        Value::Array(items) if items.iter().all(Value::is_number) && !items.is_empty() => {
            EmbeddingInput::Tokens(vec![tokens(items, "input")?])
        }
        Value::Array(items) if items.first().is_some_and(Value::is_array) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let p = at("input", i);
                out.push(tokens(as_arr(it, &p)?, &p)?);
            }
            EmbeddingInput::Tokens(out)
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                out.push(as_str(it, &at("input", i))?.to_string());
            }
            EmbeddingInput::Texts(out)
        }
        other => {
            return Err(cerr(
                "input",
                format!(
                    "expected a string, an array of strings or token arrays, got {}",
                    super::json::type_name(other)
                ),
            ))
        }
    };
    if input.is_empty() {
        return Err(cerr("input", "must contain at least one input"));
    }
    if input.len() > MAX_INPUTS {
        return Err(cerr(
            "input",
            format!(
                "{} inputs are more than one call takes (at most {MAX_INPUTS})",
                input.len()
            ),
        ));
    }
    if let EmbeddingInput::Texts(texts) = &input {
        if let Some(i) = texts.iter().position(String::is_empty) {
            return Err(cerr(&at("input", i), "must not be empty"));
        }
    }
    Ok(input)
}

fn tokens(items: &[Value], path: &str) -> Result<Vec<u32>, ClientError> {
    if items.is_empty() {
        return Err(cerr(path, "must not be empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| cerr(&at(path, i), "expected a token id (a non-negative integer)"))
        })
        .collect()
}

impl EmbeddingRequest {
    /// The gateway's token estimate of the inputs (four bytes a token; a token id counts one).
    pub fn estimate_tokens(&self) -> u64 {
        match &self.input {
            EmbeddingInput::Texts(t) => t
                .iter()
                .map(|s| super::tokens::estimate_tokens(s.len()))
                .fold(0, u64::saturating_add),
            EmbeddingInput::Tokens(t) => t.iter().map(|v| v.len() as u64).sum(),
        }
    }

    fn texts(&self, provider: &str) -> Result<&[String], TranslateError> {
        match &self.input {
            EmbeddingInput::Texts(t) => Ok(t),
            EmbeddingInput::Tokens(_) => Err(TranslateError(format!(
                "input: {provider} embeds texts, not token ids"
            ))),
        }
    }
}

/// Encodes an answer in OpenAI's shape; `model` is what the client asked for; `prompt_tokens`
/// the provider's count or the estimate.
pub fn encode_response(
    resp: &EmbeddingResponse,
    model: &str,
    format: EncodingFormat,
    prompt_tokens: u64,
) -> Vec<u8> {
    let data: Vec<Value> = resp
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = match format {
                EncodingFormat::Float => json!(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    json!(base64_encode(&bytes))
                }
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let v = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Providers: request
// ---------------------------------------------------------------------------------------------

/// Which family of Bedrock embedding model a model id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BedrockModel {
    Titan,
    Cohere,
}

fn bedrock_model(model: &str) -> Option<BedrockModel> {
    // Inference profiles and ARNs name the model inside (`us.cohere.embed-v4:0`).
    if model.contains("amazon.titan-embed") {
        Some(BedrockModel::Titan)
    } else if model.contains("cohere.embed") {
        Some(BedrockModel::Cohere)
    } else {
        None
    }
}

/// Translates an embeddings request for the target's wire (`mistral`: Mistral's dialect of
/// the OpenAI API).
pub fn encode_request(
    req: &EmbeddingRequest,
    t: &Target,
    mistral: bool,
) -> Result<Outgoing, TranslateError> {
    match t.wire {
        Wire::OpenAi | Wire::Azure => {
            let body = openai_body(req, t.model, mistral)?;
            let path = if t.wire == Wire::Azure {
                let version = t
                    .api_version
                    .filter(|v| !v.is_empty())
                    .unwrap_or(super::azure::DEFAULT_API_VERSION);
                format!(
                    "/openai/deployments/{}/embeddings?api-version={}",
                    uri_encode(t.model, false),
                    uri_encode(version, false)
                )
            } else {
                "/v1/embeddings".to_string()
            };
            Ok(Outgoing {
                path,
                body,
                headers: vec![("content-type".into(), "application/json".into())],
            })
        }
        Wire::Gemini => gemini(req, t),
        Wire::Bedrock => bedrock(req, t),
        Wire::Anthropic => Err(TranslateError(
            "Anthropic offers no embeddings API; route embeddings to another provider".into(),
        )),
    }
}

fn openai_body(
    req: &EmbeddingRequest,
    model: &str,
    mistral: bool,
) -> Result<Vec<u8>, TranslateError> {
    let mut b = Map::new();
    b.insert("model".into(), json!(model));
    b.insert(
        "input".into(),
        match &req.input {
            EmbeddingInput::Texts(t) => json!(t),
            EmbeddingInput::Tokens(_) if mistral => {
                return Err(TranslateError(
                    "input: Mistral embeds texts, not token ids".into(),
                ))
            }
            EmbeddingInput::Tokens(t) => json!(t),
        },
    );
    if let Some(d) = req.dimensions {
        b.insert(
            if mistral {
                "output_dimension"
            } else {
                "dimensions"
            }
            .into(),
            json!(d),
        );
    }
    // Floats from the provider; the door writes base64 itself when the client asked.
    b.insert("encoding_format".into(), json!("float"));
    if !mistral {
        if let Some(u) = &req.user {
            b.insert("user".into(), json!(u));
        }
        for (k, v) in &req.extra {
            b.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    serde_json::to_vec(&Value::Object(b))
        .map_err(|e| TranslateError(format!("cannot write the request: {e}")))
}

fn gemini(req: &EmbeddingRequest, t: &Target) -> Result<Outgoing, TranslateError> {
    let texts = req.texts("Gemini")?;
    let model = t.model.strip_prefix("models/").unwrap_or(t.model);
    let task = req
        .input_type
        .as_deref()
        .and_then(|k| INPUT_TYPES.iter().find(|(c, _)| *c == k))
        .map(|(_, g)| *g);
    let one = |text: &str, with_model: bool| {
        let mut r = Map::new();
        if with_model {
            r.insert("model".into(), json!(format!("models/{model}")));
        }
        r.insert("content".into(), json!({"parts": [{"text": text}]}));
        if let Some(task) = task {
            r.insert("taskType".into(), json!(task));
        }
        if let Some(d) = req.dimensions {
            r.insert("outputDimensionality".into(), json!(d));
        }
        Value::Object(r)
    };
    let m = uri_encode(model, true);
    let (path, body) = match texts {
        [text] => (format!("/v1beta/models/{m}:embedContent"), one(text, false)),
        _ => (
            format!("/v1beta/models/{m}:batchEmbedContents"),
            json!({"requests": texts.iter().map(|t| one(t, true)).collect::<Vec<_>>()}),
        ),
    };
    Ok(Outgoing {
        path,
        body: serde_json::to_vec(&body).unwrap_or_default(),
        headers: vec![("content-type".into(), "application/json".into())],
    })
}

fn bedrock(req: &EmbeddingRequest, t: &Target) -> Result<Outgoing, TranslateError> {
    let texts = req.texts("Bedrock")?;
    let body = match bedrock_model(t.model) {
        Some(BedrockModel::Titan) => {
            let [text] = texts else {
                return Err(TranslateError(format!(
                    "input: Titan embeds one text per call, got {}; send one, or use a Cohere embedding model",
                    texts.len()
                )));
            };
            let mut b = json!({"inputText": text});
            if t.model.contains("titan-embed-text-v2") {
                b["normalize"] = json!(true);
                if let Some(d) = req.dimensions {
                    if !matches!(d, 256 | 512 | 1024) {
                        return Err(TranslateError(format!(
                            "dimensions: Titan Text Embeddings V2 makes 256, 512 or 1024 dimensions, not {d}"
                        )));
                    }
                    b["dimensions"] = json!(d);
                }
            } else if t.model.contains("titan-embed-image") {
                if let Some(d) = req.dimensions {
                    b["embeddingConfig"] = json!({"outputEmbeddingLength": d});
                }
            } else if req.dimensions.is_some() {
                return Err(TranslateError(format!(
                    "dimensions: {} has a fixed size",
                    t.model
                )));
            }
            b
        }
        Some(BedrockModel::Cohere) => {
            let mut b = json!({
                "texts": texts,
                "input_type": req.input_type.as_deref().unwrap_or("search_document"),
                "embedding_types": ["float"],
            });
            if let Some(d) = req.dimensions {
                if !t.model.contains("embed-v4") {
                    return Err(TranslateError(format!(
                        "dimensions: {} has a fixed size (Cohere Embed v4 takes output_dimension)",
                        t.model
                    )));
                }
                b["output_dimension"] = json!(d);
            }
            b
        }
        None => {
            return Err(TranslateError(format!(
                "model: Bedrock embeddings are supported for Titan (amazon.titan-embed-*) and Cohere (cohere.embed-*) models, not \"{}\"",
                t.model
            )))
        }
    };
    let path = format!("/model/{}/invoke", super::bedrock::model_segment(t.model));
    super::bedrock::signed_post(
        path,
        serde_json::to_vec(&body).unwrap_or_default(),
        t,
        "application/json",
    )
}

// ---------------------------------------------------------------------------------------------
// Providers: answer
// ---------------------------------------------------------------------------------------------

fn unreadable(what: impl std::fmt::Display) -> ProviderError {
    ProviderError {
        status: 502,
        kind: "server_error".into(),
        message: format!("the provider returned unreadable embeddings: {what}"),
        code: None,
    }
}

fn vector(v: &Value) -> Result<Vec<f32>, ProviderError> {
    match v {
        Value::Array(nums) => nums
            .iter()
            .map(|n| n.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| unreadable("a vector holds something other than numbers")),
        // OpenAI's base64: little-endian float32.
        Value::String(b64) => {
            let bytes = base64_decode(b64).ok_or_else(|| unreadable("invalid base64"))?;
            if bytes.len() % 4 != 0 {
                return Err(unreadable("base64 vector length is not a multiple of 4"));
            }
            Ok(bytes
                .chunks_exact(4)
                .filter_map(|c| <[u8; 4]>::try_from(c).ok())
                .map(f32::from_le_bytes)
                .collect())
        }
        _ => Err(unreadable("a vector is neither numbers nor base64")),
    }
}

/// Decodes a provider's embeddings answer (non-2xx: its error in OpenAI's vocabulary).
/// `header_tokens`: Bedrock's `x-amzn-bedrock-input-token-count`, when the caller has it.
pub fn decode_response(
    wire: Wire,
    model: &str,
    status: u16,
    body: &[u8],
    header_tokens: Option<u64>,
) -> Result<EmbeddingResponse, ProviderError> {
    if !(200..300).contains(&status) {
        return Err(super::decode_error(wire, status, body));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| unreadable(format!("{e}: {}", excerpt(body))))?;
    let mut prompt_tokens = header_tokens;
    let vectors = match wire {
        Wire::OpenAi | Wire::Azure => openai_vectors(&v, &mut prompt_tokens)?,
        Wire::Gemini => gemini_vectors(&v, &mut prompt_tokens)?,
        Wire::Bedrock => bedrock_vectors(&v, model, &mut prompt_tokens)?,
        Wire::Anthropic => return Err(unreadable("Anthropic has no embeddings")),
    };
    Ok(EmbeddingResponse {
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        vectors,
        prompt_tokens,
    })
}

/// OpenAI's `data` (in `index` order) and `usage.prompt_tokens`.
fn openai_vectors(
    v: &Value,
    prompt_tokens: &mut Option<u64>,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| unreadable("no \"data\" array"))?;
    let mut items: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
    for (i, d) in data.iter().enumerate() {
        let index = d.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
        let e = d
            .get("embedding")
            .ok_or_else(|| unreadable("an item has no \"embedding\""))?;
        items.push((index, vector(e)?));
    }
    items.sort_by_key(|(i, _)| *i);
    if let Some(u) = v.get("usage") {
        *prompt_tokens = u.get("prompt_tokens").and_then(super::json::count);
    }
    Ok(items.into_iter().map(|(_, e)| e).collect())
}

/// Gemini's `embedding` (one) or `embeddings` (a batch), and `usageMetadata`.
fn gemini_vectors(
    v: &Value,
    prompt_tokens: &mut Option<u64>,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    if let Some(u) = v.get("usageMetadata") {
        *prompt_tokens = u.get("promptTokenCount").and_then(super::json::count);
    }
    if let Some(e) = v.get("embedding") {
        return Ok(vec![vector(e.get("values").unwrap_or(&Value::Null))?]);
    }
    v.get("embeddings")
        .and_then(Value::as_array)
        .ok_or_else(|| unreadable("no \"embedding\" or \"embeddings\""))?
        .iter()
        .map(|e| vector(e.get("values").unwrap_or(&Value::Null)))
        .collect()
}

/// Titan's `embedding` and `inputTextTokenCount`, or Cohere's `embeddings` (the list, or by
/// type when `embedding_types` was set).
fn bedrock_vectors(
    v: &Value,
    model: &str,
    prompt_tokens: &mut Option<u64>,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    if bedrock_model(model) == Some(BedrockModel::Titan) {
        if let Some(n) = v.get("inputTextTokenCount").and_then(super::json::count) {
            *prompt_tokens = Some(n);
        }
        let e = v
            .get("embedding")
            .or_else(|| v.get("embeddingsByType").and_then(|b| b.get("float")))
            .ok_or_else(|| unreadable("no \"embedding\""))?;
        return Ok(vec![vector(e)?]);
    }
    let e = v
        .get("embeddings")
        .ok_or_else(|| unreadable("no \"embeddings\""))?;
    let list = e.get("float").unwrap_or(e);
    as_list(list)?.iter().map(vector).collect()
}

fn as_list(v: &Value) -> Result<&Vec<Value>, ProviderError> {
    v.as_array()
        .ok_or_else(|| unreadable("\"embeddings\" is not a list"))
}

/// Checks an answer has one vector per input (a provider that drops some is refused rather
/// than letting a client pair vectors with the wrong texts).
pub fn check_count(req: &EmbeddingRequest, resp: &EmbeddingResponse) -> Result<(), ProviderError> {
    if resp.vectors.len() == req.input.len() {
        return Ok(());
    }
    Err(unreadable(format!(
        "{} vectors for {} inputs",
        resp.vectors.len(),
        req.input.len()
    )))
}

#[cfg(test)]
#[path = "embeddings_tests.rs"]
mod tests;
