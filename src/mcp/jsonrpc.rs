//! JSON-RPC 2.0 as the Model Context Protocol carries it over Streamable HTTP: one message
//! per POST body ([`parse`]), answered as one JSON object or as an SSE stream of them
//! ([`Answer::body`]); the answers of an upstream MCP server read back from either framing
//! ([`read_answer`]).
//!
//! Error codes are JSON-RPC's (`-32700` parse error, `-32600` invalid request, `-32601`
//! method not found, `-32602` invalid params, `-32603` internal error) plus the MCP SDKs'
//! `-32001` for a session the server does not know. Transport problems (unparsable JSON, a
//! message that is not JSON-RPC, a missing or unknown session) also carry an HTTP 4xx, as
//! the MCP SDK servers answer them; an error about a well-formed request is HTTP 200.

use crate::stream::{write_event, SseEvent, SseParser};
use serde_json::{json, Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// A request the gateway's limits refused (implementation-defined server error range).
pub const RATE_LIMITED: i64 = -32000;
/// A session id the server does not know, or that belongs to another caller.
pub const SESSION_NOT_FOUND: i64 = -32001;

/// Largest JSON-RPC message read (bytes): Envoy's buffer limit bounds the body already.
pub const MAX_MESSAGE: usize = 8 << 20;

/// A JSON-RPC error, with the HTTP status it travels with.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub status: u16,
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    /// An error about a well-formed request (HTTP 200).
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            status: 200,
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The HTTP status it travels with.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The error object of a JSON-RPC error response.
    pub fn object(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let (Some(d), Some(o)) = (&self.data, e.as_object_mut()) {
            o.insert("data".into(), d.clone());
        }
        e
    }
}

/// One message a client POSTed.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: it gets an answer with its `id` (a string or an integer).
    Request {
        id: Value,
        method: String,
        params: Map<String, Value>,
    },
    /// A notification (no `id`): accepted with 202 and no body.
    Notification { method: String },
    /// A response to a server-to-client request (the gateway sends none): accepted, ignored.
    Response,
}

/// Reads one POSTed message. Batches (removed from MCP in 2025-06-18) are refused.
pub fn parse(body: &[u8]) -> Result<Message, (Value, RpcError)> {
    let bad = |msg: &str| {
        let e = RpcError::new(INVALID_REQUEST, msg).status(400);
        (Value::Null, e)
    };
    if body.len() > MAX_MESSAGE {
        return Err(bad("the message is too large"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        let err = RpcError::new(PARSE_ERROR, format!("Parse error: {e}")).status(400);
        (Value::Null, err)
    })?;
    let Value::Object(mut o) = v else {
        return Err(match v {
            Value::Array(_) => bad("JSON-RPC batches are not supported"),
            _ => bad("a JSON-RPC message must be an object"),
        });
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(bad("\"jsonrpc\" must be \"2.0\""));
    }
    let id = o.remove("id");
    if let Some(id) = &id {
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return Err(bad("\"id\" must be a string or an integer"));
        }
    }
    let with_id = |e: RpcError| (id.clone().unwrap_or(Value::Null), e);
    let method = match o.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => {
            return Err(with_id(
                RpcError::new(INVALID_REQUEST, "\"method\" must be a string").status(400),
            ))
        }
        None if id.is_some() && (o.contains_key("result") || o.contains_key("error")) => {
            return Ok(Message::Response)
        }
        None => {
            return Err(with_id(
                RpcError::new(INVALID_REQUEST, "\"method\" is required").status(400),
            ))
        }
    };
    let params = match o.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            let e = RpcError::new(INVALID_PARAMS, "\"params\" must be an object");
            return Err(with_id(e));
        }
    };
    Ok(match id {
        Some(id) => Message::Request { id, method, params },
        None => Message::Notification { method },
    })
}

/// A JSON-RPC success response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A JSON-RPC error response.
pub fn error(id: &Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": e.object()})
}

/// An answer the gateway gives an MCP client: status, the message (none: 202 Accepted),
/// and whether it goes as an SSE stream of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub message: Option<Value>,
    pub sse: bool,
    /// Headers of the answer (`Mcp-Session-Id` of a new session, `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    /// A response to request `id`.
    pub fn ok(id: &Value, value: Value, sse: bool) -> Self {
        Self {
            status: 200,
            message: Some(result(id, value)),
            sse,
            headers: Vec::new(),
        }
    }

    /// An error answer (always JSON: transport errors are HTTP-level).
    pub fn err(id: &Value, e: &RpcError, sse: bool) -> Self {
        Self {
            status: e.status,
            message: Some(error(id, e)),
            sse: sse && e.status == 200,
            headers: Vec::new(),
        }
    }

    /// An error object an upstream answered request `id` with, passed on (HTTP 200).
    pub fn relayed_error(id: &Value, error: Value, sse: bool) -> Self {
        Self {
            status: 200,
            message: Some(json!({"jsonrpc": "2.0", "id": id, "error": error})),
            sse,
            headers: Vec::new(),
        }
    }

    /// 202 Accepted: a notification or a response.
    pub fn accepted() -> Self {
        Self {
            status: 202,
            message: None,
            sse: false,
            headers: Vec::new(),
        }
    }

    /// Content type and body.
    pub fn body(&self) -> (&'static str, Vec<u8>) {
        let Some(m) = &self.message else {
            return ("application/json", Vec::new());
        };
        let text = m.to_string();
        if self.sse {
            let mut out = Vec::with_capacity(text.len() + 32);
            write_event(&mut out, Some("message"), &text);
            ("text/event-stream", out)
        } else {
            ("application/json", text.into_bytes())
        }
    }
}

/// Whether a client takes SSE answers (its `Accept` names `text/event-stream`).
pub fn accepts_sse(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/event-stream")
        })
    })
}

/// The JSON-RPC messages of an MCP server's answer: one JSON object, or the `data` of each
/// SSE event (events that are not JSON are skipped).
pub fn read_answer(content_type: Option<&str>, body: &[u8]) -> Vec<Value> {
    let sse = content_type.is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
    });
    if !sse {
        return serde_json::from_slice::<Value>(body)
            .ok()
            .into_iter()
            .collect();
    }
    let mut parser = SseParser::new();
    let mut events: Vec<SseEvent> = Vec::new();
    parser.feed(body, &mut events);
    parser.finish(&mut events);
    events
        .iter()
        .filter(|e| e.event.as_deref().is_none_or(|n| n == "message"))
        .filter_map(|e| serde_json::from_str(&e.data).ok())
        .collect()
}

/// The response to request `id` among an upstream's messages: `Ok(result)` or
/// `Err(error object)`; None when the answer holds no response to it.
pub fn response_to(messages: Vec<Value>, id: &Value) -> Option<Result<Value, Value>> {
    messages.into_iter().find_map(|mut m| {
        if m.get("id") != Some(id) {
            return None;
        }
        let o = m.as_object_mut()?;
        match (o.remove("result"), o.remove("error")) {
            (Some(r), None) => Some(Ok(r)),
            (_, Some(e)) => Some(Err(e)),
            (None, None) => None,
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn code(body: &str) -> (u16, i64, Value) {
        let (id, e) = parse(body.as_bytes()).unwrap_err();
        (e.status, e.code, id)
    }

    #[test]
    fn reads_requests_notifications_and_responses() {
        let m = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"x"}}"#)
            .unwrap();
        let Message::Request { id, method, params } = m else {
            panic!()
        };
        assert_eq!((id, method.as_str()), (json!(7), "tools/list"));
        assert_eq!(params["cursor"], "x");
        let m = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(
            m,
            Message::Notification {
                method: "notifications/initialized".into()
            }
        );
        let m = parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(m, Message::Response);
        let m = parse(br#"{"jsonrpc":"2.0","id":"s-1","method":"ping"}"#).unwrap();
        assert!(matches!(
            m,
            Message::Request {
                id: Value::String(_),
                ..
            }
        ));
    }

    #[test]
    fn refuses_what_is_not_a_json_rpc_request_with_its_code() {
        assert_eq!(code("{not json"), (400, PARSE_ERROR, Value::Null));
        assert_eq!(code(""), (400, PARSE_ERROR, Value::Null));
        assert_eq!(code("[]").1, INVALID_REQUEST);
        assert_eq!(
            code(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).1,
            INVALID_REQUEST
        );
        assert_eq!(code("42").1, INVALID_REQUEST);
        assert_eq!(code(r#"{"id":1,"method":"ping"}"#).1, INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#).1,
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).1,
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#).1,
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#).1,
            INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":3,"method":5}"#),
            (400, INVALID_REQUEST, json!(3))
        );
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":3}"#).1, INVALID_REQUEST);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":4,"method":"x","params":[1]}"#),
            (200, INVALID_PARAMS, json!(4))
        );
    }

    #[test]
    fn answers_as_json_or_as_one_sse_event() {
        let a = Answer::ok(&json!(1), json!({}), true);
        let (ct, body) = a.body();
        assert_eq!(ct, "text/event-stream");
        let msgs = read_answer(Some(ct), &body);
        assert_eq!(msgs, vec![json!({"jsonrpc":"2.0","id":1,"result":{}})]);
        let e = RpcError::new(PARSE_ERROR, "bad").status(400);
        let a = Answer::err(&Value::Null, &e, true);
        assert_eq!(
            a.body().0,
            "application/json",
            "a transport error is never an SSE stream"
        );
        assert_eq!(Answer::accepted().body().1, b"");
        assert!(accepts_sse(Some("application/json, text/event-stream")));
        assert!(accepts_sse(Some("Text/Event-Stream;q=0.5")));
        assert!(!accepts_sse(Some("application/json")));
        assert!(!accepts_sse(None));
    }

    #[test]
    fn finds_the_response_among_an_upstream_streams_messages() {
        let body = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n: ping\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"ok\":true}}\n\n";
        let msgs = read_answer(Some("text/event-stream"), body);
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            response_to(msgs.clone(), &json!(9)),
            Some(Ok(json!({"ok": true})))
        );
        assert_eq!(response_to(msgs, &json!(8)), None);
        let err = br#"{"jsonrpc":"2.0","id":"x","error":{"code":-32601,"message":"nope"}}"#;
        let got = response_to(read_answer(Some("application/json"), err), &json!("x"));
        assert_eq!(got.unwrap().unwrap_err()["code"], -32601);
        assert!(read_answer(None, b"<html>").is_empty());
    }
}
