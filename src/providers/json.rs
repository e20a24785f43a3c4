//! Small helpers for walking client JSON with precise, path-named errors.
//! Shared by the front doors (`openai`, `anthropic`); never panics.

use serde_json::{Map, Value};

use super::openai::ClientError;

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
    v.and_then(Value::as_u64).unwrap_or(0)
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
