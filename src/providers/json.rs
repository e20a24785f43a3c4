//! Small helpers for walking client JSON with precise, path-named errors.
//! Shared by the front doors (`openai`, `anthropic`); never panics.

use serde_json::{Map, Value};

/// The client's request is malformed; answer 400 with `openai::error_json`
/// (`invalid_request_error`, `param`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientError {
    pub message: String,
    /// The offending field, e.g. `messages[2].content[0].type`.
    pub param: Option<String>,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}

/// `a.b`, or `b` at the top level.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `a[i]`.
pub(crate) fn at(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// An error about the field at `param`: `param: msg`.
pub(crate) fn cerr(param: &str, msg: impl std::fmt::Display) -> ClientError {
    ClientError {
        message: format!("{param}: {msg}"),
        param: Some(param.to_string()),
    }
}

pub(crate) use crate::config::reader::type_name;

fn expected(path: &str, what: &str, v: &Value) -> ClientError {
    cerr(path, format!("expected {what}, got {}", type_name(v)))
}

/// The field, with `null` treated as absent.
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

pub(crate) fn as_obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ClientError> {
    v.as_object().ok_or_else(|| expected(path, "an object", v))
}

pub(crate) fn as_arr<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, ClientError> {
    v.as_array().ok_or_else(|| expected(path, "an array", v))
}

pub(crate) fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, ClientError> {
    v.as_str().ok_or_else(|| expected(path, "a string", v))
}

pub(crate) fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ClientError> {
    // The path is only formatted for an error: this runs for every string field.
    field(obj, key)
        .map(|v| {
            v.as_str()
                .ok_or_else(|| expected(&join(path, key), "a string", v))
        })
        .transpose()
}

pub(crate) fn req_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, ClientError> {
    opt_str(obj, key, path)?.ok_or_else(|| cerr(&join(path, key), "missing required field"))
}

pub(crate) fn req<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a Value, ClientError> {
    field(obj, key).ok_or_else(|| cerr(&join(path, key), "missing required field"))
}

pub(crate) fn opt_f64(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<f64>, ClientError> {
    field(obj, key)
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| expected(&join(path, key), "a number", v))
        })
        .transpose()
}

pub(crate) fn opt_u64(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<u64>, ClientError> {
    field(obj, key)
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| expected(&join(path, key), "a non-negative integer", v))
        })
        .transpose()
}

pub(crate) fn opt_i64(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<i64>, ClientError> {
    field(obj, key)
        .map(|v| {
            v.as_i64()
                .ok_or_else(|| expected(&join(path, key), "an integer", v))
        })
        .transpose()
}

pub(crate) fn opt_bool(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<bool>, ClientError> {
    field(obj, key)
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| expected(&join(path, key), "a boolean", v))
        })
        .transpose()
}

/// Parses a request body into a JSON object, with serde's line/column on failure.
pub(crate) fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ClientError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ClientError {
        message: format!("request body is not valid JSON: {e}"),
        param: None,
    })?;
    object(v)
}

/// A parsed client body: it must be a JSON object.
pub(crate) fn object(v: Value) -> Result<Map<String, Value>, ClientError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ClientError {
            message: format!(
                "request body must be a JSON object, got {}",
                type_name(&other)
            ),
            param: None,
        }),
    }
}

/// Non-negative integer from provider JSON, 0 when absent or malformed (lenient on output).
pub(crate) fn num(v: Option<&Value>) -> u64 {
    v.and_then(count).unwrap_or(0)
}

/// A count (tokens) from provider JSON: an integer, or a number past u64 (serde_json reads
/// those as floats: `1e30`, `18446744073709551616`) saturated to `u64::MAX`, never wrapped or
/// dropped to 0. Negative or non-numbers are no count.
pub(crate) fn count(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// `max_tokens`-like field of a client request: a non-negative integer up to
/// [`MAX_TOKENS`](super::model::MAX_TOKENS).
pub(crate) fn opt_max_tokens(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<u64>, ClientError> {
    let max = super::model::MAX_TOKENS;
    match opt_u64(obj, key, path)? {
        Some(n) if n > max => Err(cerr(
            &join(path, key),
            format!("{n} is more than any model allows (at most {max})"),
        )),
        other => Ok(other),
    }
}

/// Lossy, bounded excerpt of a provider body for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::providers::{decode_response, stream_decoder, Wire};

    #[test]
    fn counts_past_u64_saturate_and_never_wrap() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(num(Some(&v("18446744073709551615"))), u64::MAX);
        assert_eq!(num(Some(&v("18446744073709551616"))), u64::MAX);
        assert_eq!(num(Some(&v("1e30"))), u64::MAX);
        assert_eq!(num(Some(&v("12"))), 12);
        assert_eq!(num(Some(&v("-5"))), 0);
        assert_eq!(num(Some(&v("\"7\""))), 0);
        assert_eq!(num(None), 0);
    }

    #[test]
    fn provider_usage_past_u64_saturates_on_every_wire() {
        let h = "18446744073709551616"; // u64::MAX + 1: serde_json reads a float
        let m = "18446744073709551615";
        let answers = [
            (
                Wire::OpenAi,
                format!(
                    r#"{{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"a"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{h},"completion_tokens":{m}}}}}"#
                ),
            ),
            (
                Wire::Anthropic,
                format!(
                    r#"{{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{{"type":"text","text":"a"}}],"stop_reason":"end_turn","usage":{{"input_tokens":{h},"cache_read_input_tokens":{m},"output_tokens":{m}}}}}"#
                ),
            ),
            (
                Wire::Gemini,
                format!(
                    r#"{{"candidates":[{{"content":{{"role":"model","parts":[{{"text":"a"}}]}},"finishReason":"STOP"}}],"usageMetadata":{{"promptTokenCount":{h},"toolUsePromptTokenCount":{m},"candidatesTokenCount":{m},"thoughtsTokenCount":{m}}}}}"#
                ),
            ),
            (
                Wire::Bedrock,
                format!(
                    r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"a"}}]}}}},"stopReason":"end_turn","usage":{{"inputTokens":{h},"cacheReadInputTokens":{m},"outputTokens":{m}}}}}"#
                ),
            ),
        ];
        for (wire, body) in answers {
            let u = decode_response(wire, 200, body.as_bytes())
                .unwrap()
                .usage
                .unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens),
                (u64::MAX, u64::MAX),
                "{wire:?}"
            );
            assert_eq!(u.total(), u64::MAX, "{wire:?}");
        }
        // Anthropic's streamed usage too.
        let mut d = stream_decoder(Wire::Anthropic);
        let mut out = Vec::new();
        let sse = format!("event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m\",\"model\":\"m\",\"usage\":{{\"input_tokens\":5,\"output_tokens\":1}}}}}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{h}}}}}\n\n");
        d.feed(sse.as_bytes(), &mut out);
        let last = out.iter().rev().find_map(|e| match e {
            crate::providers::model::StreamEvent::Usage(u) => Some(*u),
            _ => None,
        });
        assert_eq!(last.unwrap().completion_tokens, u64::MAX);
    }
}
