//! What an MCP server answers, as data: `initialize` and `tools/list` from the
//! configuration, a tool's arguments checked and turned into its workflow backend's
//! request ([`tool_request`]), and that backend's answer turned into a `CallToolResult`
//! ([`tool_result`], checked against the tool's output schema).

use super::config::{Info, Media, Tool};
use super::jsonrpc::{RpcError, INTERNAL_ERROR, INVALID_PARAMS};
use crate::routing::Params;
use crate::support::encoding::{base64_encode, uri_encode};
use serde_json::{json, Map, Value};

/// Protocol revisions the gateway speaks, newest first.
pub const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The version to answer `initialize` with: the client's when the gateway speaks it, else
/// the newest (the client then decides whether it can go on).
pub fn negotiate(params: &Map<String, Value>) -> &'static str {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    VERSIONS
        .iter()
        .copied()
        .find(|v| Some(*v) == asked)
        .unwrap_or(VERSIONS[0])
}

/// Whether an `MCP-Protocol-Version` header names a revision the gateway speaks (absent:
/// yes, the 2025-03-26 default).
pub fn version_ok(header: Option<&str>) -> bool {
    header.is_none_or(|v| VERSIONS.contains(&v.trim()))
}

/// The `initialize` result.
pub fn initialize(info: &Info, params: &Map<String, Value>) -> Value {
    let mut r = json!({
        "protocolVersion": negotiate(params),
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": info.name, "title": info.title, "version": info.version},
    });
    if let (false, Some(o)) = (info.instructions.is_empty(), r.as_object_mut()) {
        o.insert("instructions".into(), json!(info.instructions));
    }
    r
}

/// A tool's arguments (`params.arguments`, an object; absent: none).
pub fn arguments(params: &Map<String, Value>) -> Result<Map<String, Value>, RpcError> {
    match params.get("arguments") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(a)) => Ok(a.clone()),
        Some(_) => Err(RpcError::new(
            INVALID_PARAMS,
            "\"arguments\" must be an object",
        )),
    }
}

/// A tool's backend request: path, method, and the arguments as a JSON body for methods
/// that carry one.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    pub path: String,
    pub method: String,
    pub body: Option<Vec<u8>>,
}

/// Checks the arguments against the tool's input schema (`-32602` naming the place), then
/// fills the workflow's `{params}` with them (percent-encoded; a value that would change
/// the path's structure is refused).
pub fn tool_request(tool: &Tool, args: &Map<String, Value>) -> Result<ToolRequest, RpcError> {
    let doc = Value::Object(args.clone());
    if let Some(schema) = &tool.input {
        schema.validate(&doc).map_err(|e| {
            let msg = format!("invalid arguments for tool {}: {e}", tool.name);
            RpcError::new(INVALID_PARAMS, msg).data(json!({"path": e.path, "reason": e.message}))
        })?;
    }
    let wf = &tool.workflow;
    let mut params: Params = Vec::new();
    for name in wf.pattern.params() {
        let text = match args.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            Some(_) => {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    format!("argument {name} must be a string, a number or a boolean"),
                ))
            }
            None => {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    format!("argument {name} is required"),
                ))
            }
        };
        params.push((name.to_string(), uri_encode(&text, false)));
    }
    let path = wf.url_pattern.render(&params).map_err(|e| {
        RpcError::new(
            INVALID_PARAMS,
            format!("argument {}: may not contain /, \\, %, or be . or ..", e.0),
        )
    })?;
    let body = matches!(wf.method.as_str(), "POST" | "PUT" | "PATCH")
        .then(|| doc.to_string().into_bytes());
    Ok(ToolRequest {
        path,
        method: wf.method.clone(),
        body,
    })
}

/// A backend's answer as the tool's `CallToolResult`: its body as text (or image/audio
/// data), a JSON object answer also as `structuredContent`; an output schema checks it
/// (`-32603` when the backend breaks the tool's contract). A failed backend is a tool
/// error (`isError`), with its message only when `return_error_msg` says so.
pub fn tool_result(
    tool: &Tool,
    status: Option<u16>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Value, RpcError> {
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    if !ok {
        let text = match (tool.return_error_msg, status) {
            (true, Some(s)) => format!(
                "the tool's backend failed (HTTP {s}): {}",
                String::from_utf8_lossy(body).trim()
            ),
            (true, None) => {
                "the tool's backend did not answer (timeout or connection failure)".to_string()
            }
            (false, _) => "the tool failed".to_string(),
        };
        return Ok(json!({"content": [{"type": "text", "text": text}], "isError": true}));
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let structured = parsed.filter(Value::is_object);
    if let Some(schema) = &tool.output {
        let doc = structured.clone().unwrap_or(Value::Null);
        schema.validate(&doc).map_err(|e| {
            RpcError::new(
                INTERNAL_ERROR,
                format!(
                    "the result of tool {} does not match its output schema: {e}",
                    tool.name
                ),
            )
        })?;
    }
    let mime = content_type
        .unwrap_or("application/octet-stream")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let content = match tool.media {
        Media::Text => json!({"type": "text", "text": String::from_utf8_lossy(body)}),
        Media::Image => json!({"type": "image", "data": base64_encode(body), "mimeType": mime}),
        Media::Audio => json!({"type": "audio", "data": base64_encode(body), "mimeType": mime}),
    };
    let mut r = json!({"content": [content], "isError": false});
    if let (Some(s), Some(o)) = (structured, r.as_object_mut()) {
        o.insert("structuredContent".into(), s);
    }
    Ok(r)
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
