//! `mock-llm`: a deterministic mock of the OpenAI, Anthropic, Gemini and Bedrock APIs,
//! used as the upstream in tollgate's demo, integration tests and benchmarks.
//!
//! Usage: `mock-llm [--port N] [--bind ADDR]` (defaults: port 0 = any free port,
//! bind 127.0.0.1). The first stdout line is `listening on ADDR:PORT`.
//!
//! Endpoints:
//! - `POST .../chat/completions` (OpenAI, Azure, Ollama, vLLM)
//! - `POST .../v1/messages` (Anthropic)
//! - `POST .../models/{model}:generateContent` and `:streamGenerateContent[?alt=sse]` (Gemini)
//! - `POST .../model/{modelId}/converse` and `/converse-stream` (Bedrock)
//! - agents' API (see `mock_llm/agents.rs`): `POST .../embeddings` (OpenAI wire, Azure
//!   deployments), Gemini `:embedContent` / `:batchEmbedContents`, Bedrock
//!   `/model/{id}/invoke` (Titan, Cohere); `POST .../messages/count_tokens` (Anthropic),
//!   Gemini `:countTokens`, Bedrock `/model/{id}/count-tokens`; `POST .../responses`
//!   (OpenAI Responses API, plain and streamed)
//! - `GET .../models` (OpenAI model list)
//! - `GET /__mock/requests` (recorded requests, oldest first, at most 1000),
//!   `DELETE /__mock/requests` (clears them and the `x-mock-status` counters),
//!   `GET /__mock/health` (`ok`), `POST /__mock/reset` (same as the DELETE)
//!
//! Request headers that steer the answer: `x-mock-text`, `x-mock-chunks`,
//! `x-mock-delay-ms`, `x-mock-status` (e.g. `503,200`), `x-mock-close-after`,
//! `x-mock-invalid-json`, `x-mock-hang-ms`, `x-mock-tool: 0`, `x-mock-no-record: 1`,
//! `x-mock-stream-usage: always` (usage in OpenAI-style streams without `stream_options`),
//! `x-mock-tool-args` (the JSON arguments of the tool call answered), `x-mock-echo-key: 1`
//! (a careless provider: the credential it received comes back in an `x-echo-credential`
//! response header and in the message of an error answer), `x-mock-cache-write: N`
//! (Anthropic and Bedrock report N cache-write prompt tokens), `x-mock-refusal: TEXT`
//! (OpenAI refuses with TEXT), `x-mock-thinking: TEXT` (the answer reasons first: Anthropic
//! and Bedrock signed thinking, Gemini a thought summary, OpenAI-compatible
//! `reasoning_content`, Responses a reasoning item), `x-mock-thought-signature: 1` (Gemini signs
//! its function calls and refuses a later turn whose calls lost their signatures). Thinking
//! blocks sent back to the Anthropic and Bedrock mocks must carry the signature the mock gave
//! them (400 otherwise, as the real APIs answer).
//!
//! Usage accounting: prompt tokens = 3 + whitespace-separated words of the conversation
//! text (see [`providers::prompt_tokens`]); completion tokens = number of content events
//! of the stream (the same number for the non-stream answer). Every provider answer
//! carries `x-mock-usage: P,C`.

#[path = "mock_llm/agents.rs"]
mod agents;
#[path = "mock_llm/eventstream.rs"]
mod eventstream;
#[path = "mock_llm/http.rs"]
mod http;
#[path = "mock_llm/providers.rs"]
mod providers;

use http::{Headers, Request};
use providers::{Format, Opts, Provider};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Concurrent connections served; more are refused with 503.
const MAX_CONNECTIONS: usize = 512;
/// Recorded requests kept.
const MAX_RECORDS: usize = 1000;
/// Idle keep-alive connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Stack of a connection thread.
const THREAD_STACK: usize = 256 * 1024;
/// Cap on `x-mock-delay-ms` / `x-mock-hang-ms`.
const MAX_SLEEP_MS: u64 = 600_000;

/// One recorded request.
struct Record {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// State shared by all connections.
#[derive(Default)]
struct State {
    records: Mutex<VecDeque<Record>>,
    /// `x-mock-status` value -> how many requests used it.
    status_counters: Mutex<HashMap<String, usize>>,
    seq: AtomicU64,
    active: AtomicUsize,
    /// Responses kept (`store`, `background`), by id.
    kept: Mutex<HashMap<String, agents::Kept>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn record(&self, req: &Request) {
        let rec = Record {
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.clone(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
        };
        let mut records = lock(&self.records);
        while records.len() >= MAX_RECORDS {
            records.pop_front();
        }
        records.push_back(rec);
    }

    fn records_json(&self) -> Vec<u8> {
        let records = lock(&self.records);
        let list: Vec<Value> = records
            .iter()
            .map(|r| {
                json!({
                    "method": r.method,
                    "path": r.target,
                    "headers": r.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
                    "body": r.body
                })
            })
            .collect();
        Value::Array(list).to_string().into_bytes()
    }

    /// The status for this use of an `x-mock-status` value: the n-th use of `503,200`
    /// picks the n-th entry, staying on the last one once the list is exhausted.
    fn next_status(&self, value: &str) -> Option<u16> {
        let list: Vec<u16> = value
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .filter(|s| (100..=599).contains(s))
            .collect();
        if list.is_empty() {
            return None;
        }
        let idx = if list.len() == 1 {
            0
        } else {
            let mut counters = lock(&self.status_counters);
            let n = counters.entry(value.to_string()).or_insert(0);
            let idx = *n;
            *n += 1;
            idx
        };
        list.get(idx.min(list.len() - 1)).copied()
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// Decrements the connection count when a connection thread ends.
struct ConnGuard(Arc<State>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections forever, one thread each.
fn serve(listener: TcpListener, state: Arc<State>) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mock-llm: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if state.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            state.active.fetch_sub(1, Ordering::AcqRel);
            refuse(stream);
            continue;
        }
        let guard = ConnGuard(Arc::clone(&state));
        let spawned = thread::Builder::new()
            .name("mock-conn".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let guard = guard;
                if let Err(e) = handle_connection(stream, &guard.0) {
                    if !is_disconnect(&e) {
                        eprintln!("mock-llm: connection error: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            // The closure (and with it the guard and the stream) was dropped.
            eprintln!("mock-llm: cannot spawn connection thread: {e}");
        }
    }
}

fn refuse(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let mut s = &stream;
    let _ = s.write_all(&http::response_bytes(
        503,
        "text/plain",
        &[],
        b"mock-llm: too many connections\n",
        false,
    ));
    let _ = stream.shutdown(Shutdown::Both);
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// What to do with the connection after a response.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

fn handle_connection(stream: TcpStream, state: &State) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream.try_clone()?);
    let mut w = stream;
    let mut line = Vec::with_capacity(1024);
    loop {
        let mut req = match http::read_head(&mut reader, &mut line) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => return bad_request(&mut w, e),
        };
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        if let Err(e) = http::read_body(&mut reader, &mut req) {
            return bad_request(&mut w, e);
        }
        let next = handle(state, &req, &mut w)?;
        if next == Next::Close || !req.keep_alive {
            let _ = w.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

fn bad_request(w: &mut TcpStream, e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::InvalidData {
        let msg = format!("mock-llm: bad request: {e}\n");
        let _ = http::write_response(w, 400, "text/plain", &[], msg.as_bytes(), false);
        return Ok(());
    }
    Err(e)
}

// ---------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Provider call; `path_model` is the model named by the path (Azure deployment,
    /// Gemini model, Bedrock model id); `path_stream` is true for streaming paths.
    Provider {
        provider: Provider,
        path_model: Option<String>,
        path_stream: bool,
    },
    Models,
    NotFound,
}

fn route(method: &str, path: &str) -> Route {
    let post = method == "POST";
    if post && path.ends_with("/chat/completions") {
        let deployment = path
            .split_once("/deployments/")
            .and_then(|(_, rest)| rest.split('/').next())
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        return Route::Provider {
            provider: Provider::OpenAi,
            path_model: deployment,
            path_stream: false,
        };
    }
    if post && path.ends_with("/v1/messages") {
        return Route::Provider {
            provider: Provider::Anthropic,
            path_model: None,
            path_stream: false,
        };
    }
    if post {
        if let Some((_, rest)) = path.rsplit_once("/models/") {
            if let Some((model, action)) = rest.rsplit_once(':') {
                if action == "generateContent" || action == "streamGenerateContent" {
                    return Route::Provider {
                        provider: Provider::Gemini,
                        path_model: Some(model.to_string()),
                        path_stream: action == "streamGenerateContent",
                    };
                }
            }
        }
        if let Some((_, rest)) = path.rsplit_once("/model/") {
            if let Some((model, action)) = rest.rsplit_once('/') {
                if action == "converse" || action == "converse-stream" {
                    return Route::Provider {
                        provider: Provider::Bedrock,
                        path_model: Some(model.to_string()),
                        path_stream: action == "converse-stream",
                    };
                }
            }
        }
    }
    if method == "GET" && path.ends_with("/models") {
        return Route::Models;
    }
    Route::NotFound
}

/// Serves one request.
fn handle(state: &State, req: &Request, w: &mut TcpStream) -> io::Result<Next> {
    let path = req.path();
    let ka = req.keep_alive;
    if let Some(ctl) = path.strip_prefix("/__mock/") {
        let (status, ctype, body): (u16, &str, Vec<u8>) = match (req.method.as_str(), ctl) {
            ("GET", "health") => (200, "text/plain", b"ok".to_vec()),
            ("GET", "requests") => (200, "application/json", state.records_json()),
            ("DELETE", "requests") => {
                // Also forgets the x-mock-status sequences, so each test starts fresh.
                lock(&state.status_counters).clear();
                let n = {
                    let mut records = lock(&state.records);
                    let n = records.len();
                    records.clear();
                    n
                };
                (
                    200,
                    "application/json",
                    json!({"cleared": n}).to_string().into_bytes(),
                )
            }
            ("POST", "reset") => {
                lock(&state.records).clear();
                lock(&state.status_counters).clear();
                (200, "application/json", b"{\"reset\":true}".to_vec())
            }
            _ => (404, "text/plain", b"unknown mock control endpoint".to_vec()),
        };
        http::write_response(w, status, ctype, &[], &body, ka)?;
        return Ok(Next::KeepAlive);
    }
    if req.header("x-mock-no-record") != Some("1") {
        state.record(req);
    }
    if let Some(op) = agents::stored_route(path) {
        return stored_call(state, req, w, op);
    }
    if req.method == "POST" {
        if let Some(op) = agents::route(path) {
            return agent_call(state, req, w, op);
        }
    }
    match route(&req.method, path) {
        Route::Models => {
            let body = br#"{"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"mock"}]}"#;
            http::write_response(w, 200, "application/json", &[], body, ka)?;
            Ok(Next::KeepAlive)
        }
        Route::NotFound => {
            let msg = format!("mock-llm: no route for {} {}", req.method, path);
            let body = json!({"error": {"message": msg, "type": "invalid_request_error", "param": null, "code": "not_found"}});
            http::write_response(
                w,
                404,
                "application/json",
                &[],
                body.to_string().as_bytes(),
                ka,
            )?;
            Ok(Next::KeepAlive)
        }
        Route::Provider {
            provider,
            path_model,
            path_stream,
        } => provider_call(state, req, w, provider, path_model, path_stream),
    }
}

fn header_u64(req: &Request, name: &str) -> Option<u64> {
    req.header(name).and_then(|v| v.trim().parse().ok())
}

fn sleep_ms(ms: u64) {
    if ms > 0 {
        thread::sleep(Duration::from_millis(ms.min(MAX_SLEEP_MS)));
    }
}

/// With `x-mock-echo-key: 1`, the credential the request carried (any provider's header).
fn echoed_credential(req: &Request) -> Option<String> {
    if req.header("x-mock-echo-key") != Some("1") {
        return None;
    }
    ["authorization", "x-api-key", "x-goog-api-key", "api-key"]
        .iter()
        .find_map(|h| req.header(h))
        .map(str::to_string)
}

fn write_error(
    w: &mut TcpStream,
    req: &Request,
    provider: Provider,
    status: u16,
    message: &str,
) -> io::Result<Next> {
    let echo = echoed_credential(req);
    let message = match &echo {
        Some(c) => format!("{message}; credential received: {c}"),
        None => message.to_string(),
    };
    let (body, mut headers) = providers::error(provider, status, &message);
    headers.push(("x-mock-usage", "0,0".to_string()));
    if let Some(c) = echo {
        headers.push(("x-echo-credential", c));
    }
    let ka = req.keep_alive;
    http::write_response(
        w,
        status,
        "application/json",
        &headers,
        body.to_string().as_bytes(),
        ka,
    )?;
    Ok(Next::KeepAlive)
}

/// The request's JSON object, after `x-mock-hang-ms`; `Err` when the mock answered already
/// (an `x-mock-status` error, a body that is not a JSON object).
fn steered_or_body(
    state: &State,
    req: &Request,
    w: &mut TcpStream,
    provider: Provider,
) -> Result<Value, io::Result<Next>> {
    sleep_ms(header_u64(req, "x-mock-hang-ms").unwrap_or(0));
    if let Some(status) = req
        .header("x-mock-status")
        .and_then(|v| state.next_status(v))
        .filter(|s| *s >= 400)
    {
        let msg = format!(
            "mock error: HTTP {status} {} (x-mock-status)",
            http::reason(status)
        );
        return Err(write_error(w, req, provider, status, &msg));
    }
    match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(write_error(
            w,
            req,
            provider,
            400,
            "request body must be a JSON object",
        )),
        Err(e) => {
            let msg = format!("mock: invalid JSON request body: {e}");
            Err(write_error(w, req, provider, 400, &msg))
        }
    }
}

/// OpenAI's stored responses: retrieve (also as a stream resumed after `starting_after`),
/// delete, cancel, input items; an unknown id is OpenAI's 404.
fn stored_call(
    state: &State,
    req: &Request,
    w: &mut TcpStream,
    op: agents::Stored,
) -> io::Result<Next> {
    let ka = req.keep_alive;
    let query = req.query();
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
    };
    let mut kept = lock(&state.kept);
    let (id, method) = match &op {
        agents::Stored::Object(id)
        | agents::Stored::Cancel(id)
        | agents::Stored::InputItems(id) => (id.clone(), req.method.as_str()),
    };
    let Some(k) = kept.get_mut(&id) else {
        drop(kept);
        let msg = format!("Response with id '{id}' not found.");
        return write_error(w, req, Provider::OpenAi, 404, &msg);
    };
    let answer = match (op, method) {
        (agents::Stored::Object(_), "GET") if param("stream") == Some("true") => {
            let after = param("starting_after").and_then(|s| s.parse().ok());
            let events = k.events(after);
            drop(kept);
            http::write_stream_head(w, 200, "text/event-stream", &[], ka)?;
            for (name, data) in events {
                http::write_chunk(w, format!("event: {name}\ndata: {data}\n\n").as_bytes())?;
            }
            http::write_last_chunk(w)?;
            return Ok(Next::KeepAlive);
        }
        (agents::Stored::Object(_), "GET") => k.retrieve(),
        (agents::Stored::Object(_), "DELETE") => {
            kept.remove(&id);
            json!({"id": id, "object": "response.deleted", "deleted": true})
        }
        (agents::Stored::Cancel(_), "POST") => {
            if k.background {
                k.cancelled = true;
            }
            k.object()
        }
        (agents::Stored::InputItems(_), "GET") => k.input_items(),
        _ => {
            drop(kept);
            return write_error(w, req, Provider::OpenAi, 405, "mock: method not allowed");
        }
    };
    drop(kept);
    let usage = answer
        .get("usage")
        .filter(|u| u.is_object())
        .map(|u| format!("{},{}", u["input_tokens"], u["output_tokens"]))
        .unwrap_or_else(|| "0,0".into());
    let headers: Headers = vec![("x-mock-usage", usage)];
    let body = answer.to_string();
    http::write_response(w, 200, "application/json", &headers, body.as_bytes(), ka)?;
    Ok(Next::KeepAlive)
}

/// The agents' API: embeddings, token counts, Responses.
fn agent_call(state: &State, req: &Request, w: &mut TcpStream, op: agents::Op) -> io::Result<Next> {
    let ka = req.keep_alive;
    let provider = match &op {
        agents::Op::Embed { provider, .. } | agents::Op::Count { provider } => *provider,
        agents::Op::Responses => Provider::OpenAi,
    };
    let body = match steered_or_body(state, req, w, provider) {
        Ok(body) => body,
        Err(answered) => return answered,
    };
    let (status, answer, mut headers) = match op {
        agents::Op::Embed { provider, model } => {
            agents::embed(provider, model.as_deref(), req.path(), &body)
        }
        agents::Op::Count { provider } => (200, agents::count(provider, &body), Vec::new()),
        agents::Op::Responses => {
            let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let reply = agents::plan_responses(
                &body,
                req.header("x-mock-text"),
                req.header("x-mock-thinking"),
                seq,
                created,
            );
            let background = body.get("background") == Some(&Value::Bool(true));
            if background || body.get("store") != Some(&Value::Bool(false)) {
                let kept = agents::Kept {
                    reply: reply.clone(),
                    background,
                    polls: 0,
                    cancelled: false,
                    input: body.get("input").cloned().unwrap_or(Value::Null),
                };
                lock(&state.kept).insert(reply.id.clone(), kept);
            }
            if background && body.get("stream") != Some(&Value::Bool(true)) {
                // OpenAI's background mode: queued now, the usage at a later retrieve.
                let queued = lock(&state.kept).get(&reply.id).map(agents::Kept::object);
                let headers: Headers = vec![("x-mock-usage", "0,0".into())];
                let body = queued.unwrap_or_default().to_string();
                http::write_response(w, 200, "application/json", &headers, body.as_bytes(), ka)?;
                return Ok(Next::KeepAlive);
            }
            let usage = format!("{},{}", reply.prompt_tokens, reply.output_tokens());
            let headers: Headers = vec![
                ("x-mock-usage", usage),
                ("cache-control", "no-cache".into()),
            ];
            if body.get("stream") == Some(&Value::Bool(true)) {
                let delay = header_u64(req, "x-mock-delay-ms").unwrap_or(0);
                http::write_stream_head(w, 200, "text/event-stream", &headers, ka)?;
                for (i, (name, data)) in agents::responses_events(&reply).iter().enumerate() {
                    if i > 0 {
                        sleep_ms(delay);
                    }
                    http::write_chunk(w, format!("event: {name}\ndata: {data}\n\n").as_bytes())?;
                }
                http::write_last_chunk(w)?;
                return Ok(Next::KeepAlive);
            }
            (200, agents::responses_body(&reply), headers)
        }
    };
    if status >= 400 {
        let msg = answer
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("mock error")
            .to_string();
        return write_error(w, req, provider, status, &msg);
    }
    if !headers.iter().any(|(k, _)| *k == "x-mock-usage") {
        headers.push(("x-mock-usage", "0,0".to_string()));
    }
    http::write_response(
        w,
        200,
        "application/json",
        &headers,
        answer.to_string().as_bytes(),
        ka,
    )?;
    Ok(Next::KeepAlive)
}

fn provider_call(
    state: &State,
    req: &Request,
    w: &mut TcpStream,
    provider: Provider,
    path_model: Option<String>,
    path_stream: bool,
) -> io::Result<Next> {
    let started = Instant::now();
    let ka = req.keep_alive;
    let body = match steered_or_body(state, req, w, provider) {
        Ok(body) => body,
        Err(answered) => return answered,
    };

    // Reasoning sent back must carry the signature the mock gave it, as the real APIs check.
    let require_sig = req.header("x-mock-thought-signature") == Some("1");
    if let Some(msg) = agents::bad_signature(provider, &body, require_sig) {
        return write_error(w, req, provider, 400, &msg);
    }

    let stream = match provider {
        Provider::OpenAi | Provider::Anthropic => body.get("stream") == Some(&Value::Bool(true)),
        Provider::Gemini | Provider::Bedrock => path_stream,
    };
    let model = match provider {
        Provider::Gemini | Provider::Bedrock => path_model,
        Provider::OpenAi => body
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(path_model),
        Provider::Anthropic => body
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
    .unwrap_or_else(|| "mock-model".to_string());

    let opts = Opts {
        text: req.header("x-mock-text").map(str::to_string),
        chunks: header_u64(req, "x-mock-chunks").map(|n| n as usize),
        no_tools: req.header("x-mock-tool") == Some("0"),
        tool_args: req.header("x-mock-tool-args").map(str::to_string),
        cache_write: header_u64(req, "x-mock-cache-write").unwrap_or(0),
        refusal: req.header("x-mock-refusal").map(str::to_string),
        thinking: req.header("x-mock-thinking").map(str::to_string),
        thought_signature: require_sig,
    };
    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reply = providers::plan(provider, &body, model, &opts, seq, created);
    let mut headers: Headers = vec![("x-mock-usage", reply.usage_header())];
    if let Some(c) = echoed_credential(req) {
        headers.push(("x-echo-credential", c));
    }
    let invalid_json = req.header("x-mock-invalid-json") == Some("1");
    let close_after = header_u64(req, "x-mock-close-after").map(|n| n as usize);
    let latency_ms = started.elapsed().as_millis() as u64;

    if !stream {
        let bytes = if invalid_json {
            b"{\"this is\": not valid json".to_vec()
        } else {
            providers::body(&reply, latency_ms).to_string().into_bytes()
        };
        if close_after.is_some() {
            // Announce the full length, send half, hang up.
            let full = http::response_bytes(200, "application/json", &headers, &bytes, ka);
            let cut = full.len() - bytes.len() / 2;
            w.write_all(&full[..cut])?;
            w.flush()?;
            let _ = w.shutdown(Shutdown::Both);
            return Ok(Next::Close);
        }
        http::write_response(w, 200, "application/json", &headers, &bytes, ka)?;
        return Ok(Next::KeepAlive);
    }

    // `x-mock-stream-usage: always`: usage in every OpenAI-style stream, asked for or not
    // (Mistral's API has no `stream_options` and always ends with usage).
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true))
        || req.header("x-mock-stream-usage") == Some("always");
    let mut events = providers::events(&reply, include_usage, latency_ms);
    if invalid_json {
        if let Some(first) = events.first_mut() {
            first.data = "{\"this is\": not valid json".to_string();
        }
    }
    let format = match provider {
        Provider::OpenAi => Format::SseData,
        Provider::Anthropic => Format::SseNamed,
        Provider::Gemini if req.query().split('&').any(|kv| kv == "alt=sse") => Format::SseCrlf,
        Provider::Gemini => Format::JsonArray,
        Provider::Bedrock => Format::EventStream,
    };
    headers.push(("cache-control", "no-cache".to_string()));
    write_stream(w, format, &events, &headers, req, close_after)
}

fn write_stream(
    w: &mut TcpStream,
    format: Format,
    events: &[providers::Ev],
    headers: &[(&'static str, String)],
    req: &Request,
    close_after: Option<usize>,
) -> io::Result<Next> {
    let delay = header_u64(req, "x-mock-delay-ms").unwrap_or(0);
    http::write_stream_head(w, 200, format.content_type(), headers, req.keep_alive)?;
    for (i, e) in events.iter().enumerate() {
        if close_after.is_some_and(|n| i >= n) {
            break;
        }
        if i > 0 {
            sleep_ms(delay);
        }
        http::write_chunk(w, &providers::encode(format, e, i, events.len()))?;
    }
    if close_after.is_some() {
        let _ = w.shutdown(Shutdown::Both);
        return Ok(Next::Close);
    }
    http::write_last_chunk(w)?;
    Ok(Next::KeepAlive)
}

// ---------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------

const USAGE: &str = "usage: mock-llm [--port N] [--bind ADDR]\n  --port N     port to listen on (default 0: any free port)\n  --bind ADDR  address to bind (default 127.0.0.1)\n";

fn parse_args(args: &[String]) -> Result<(String, u16), String> {
    let mut bind = "127.0.0.1".to_string();
    let mut port = 0u16;
    let mut i = 0;
    while i < args.len() {
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (args[i].as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--port" | "-p" => {
                let v = value()?;
                port = v.parse().map_err(|_| format!("invalid port: {v}"))?;
            }
            "--bind" | "-b" => bind = value()?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
        i += 1;
    }
    Ok((bind, port))
}

/// Binds the listener and starts serving on a background thread.
#[cfg(test)]
fn start(bind: &str, port: u16) -> io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind((bind, port))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State::default());
    thread::Builder::new()
        .name("mock-accept".into())
        .spawn(move || serve(listener, state))?;
    Ok(addr)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bind, port) = match parse_args(&args) {
        Ok(v) => v,
        Err(msg) => {
            if msg.is_empty() {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprint!("mock-llm: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind((bind.as_str(), port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mock-llm: cannot bind {bind}:{port}: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mock-llm: {e}");
            return ExitCode::from(1);
        }
    };
    {
        let mut out = io::stdout().lock();
        if writeln!(out, "listening on {addr}")
            .and_then(|_| out.flush())
            .is_err()
        {
            return ExitCode::from(1);
        }
    }
    serve(listener, Arc::new(State::default()));
    ExitCode::SUCCESS
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "mock_llm/tests.rs"]
mod tests;
