//! End-to-end tests over real sockets.

use super::*;
use std::io::{BufRead, Read};

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Chunk payloads as received (chunked responses only).
    chunks: Vec<Vec<u8>>,
}

impl Resp {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: std::net::SocketAddr) -> Client {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Client { w, r }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
        for (n, v) in headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        self.w.write_all(raw.as_bytes()).unwrap();
    }

    fn read(&mut self) -> io::Result<Resp> {
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no status"))?
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').unwrap();
            headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
            chunks: Vec::new(),
        };
        if resp.header("transfer-encoding") == Some("chunked") {
            loop {
                line.clear();
                if self.r.read_line(&mut line)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "eof in stream",
                    ));
                }
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                if n == 0 {
                    line.clear();
                    self.r.read_line(&mut line)?;
                    break;
                }
                let mut chunk = vec![0; n + 2];
                self.r.read_exact(&mut chunk)?;
                chunk.truncate(n);
                resp.body.extend_from_slice(&chunk);
                resp.chunks.push(chunk);
            }
        } else {
            let n: usize = resp.header("content-length").unwrap().parse().unwrap();
            let mut body = vec![0; n];
            self.r.read_exact(&mut body)?;
            resp.body = body;
        }
        Ok(resp)
    }

    fn call(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        self.send(method, path, headers, body);
        self.read().unwrap()
    }
}

fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

#[test]
fn round_trip_non_stream_stream_and_recording() {
    let addr = start("127.0.0.1", 0).unwrap();
    let mut c = Client::connect(addr);
    let req = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"say hello please"}]}"#;

    // Non-stream.
    let r = c.call("POST", "/v1/chat/completions", &[], req);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-mock-usage"), Some("6,4"));
    let v = r.json();
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from mock openai!"
    );
    assert_eq!(v["usage"]["total_tokens"], 10);

    // Stream on the same keep-alive connection, with usage.
    let sreq = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"say hello please"}]}"#;
    let r = c.call(
        "POST",
        "/v1/chat/completions",
        &[("x-mock-chunks", "5")],
        sreq,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-mock-usage"), Some("6,5"));
    // role + 5 content + finish + usage + [DONE], each in its own chunk.
    assert_eq!(r.chunks.len(), 9);
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&data[7]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 6);
    assert_eq!(usage["usage"]["completion_tokens"], 5);

    // Chunked request body (as Envoy sends it) to Anthropic, streamed.
    let body = r#"{"model":"claude-x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (a, b) = body.split_at(20);
    let raw = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nx-mock-text: one two\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    c.w.write_all(raw.as_bytes()).unwrap();
    let r = c.read().unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.starts_with("event: message_start\ndata: "), "{text}");
    assert!(
        text.contains(r#""delta":{"text":"one","type":"text_delta"}"#)
            || text.contains(r#""text":"one""#)
    );
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    assert_eq!(r.header("x-mock-usage"), Some("4,2"));

    // Not recorded.
    let r = c.call(
        "POST",
        "/v1/chat/completions",
        &[("x-mock-no-record", "1")],
        req,
    );
    assert_eq!(r.status, 200);

    // Recording.
    let r = c.call("GET", "/__mock/requests", &[], "");
    let recs = r.json();
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["method"], "POST");
    assert_eq!(recs[0]["path"], "/v1/chat/completions");
    assert_eq!(recs[0]["body"], req);
    assert_eq!(recs[2]["path"], "/v1/messages");
    assert_eq!(recs[2]["body"], body);
    assert!(recs[2]["headers"]
        .as_array()
        .unwrap()
        .contains(&json!(["x-mock-text", "one two"])));

    let r = c.call("DELETE", "/__mock/requests", &[], "");
    assert_eq!(r.json()["cleared"], 3);
    let r = c.call("GET", "/__mock/requests", &[], "");
    assert_eq!(r.json(), json!([]));
    let r = c.call("GET", "/__mock/health", &[], "");
    assert_eq!(r.body, b"ok");
}

#[test]
fn gemini_bedrock_models_and_errors() {
    let addr = start("127.0.0.1", 0).unwrap();
    let mut c = Client::connect(addr);
    let greq = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    let r = c.call(
        "POST",
        "/v1beta/models/gemini-2.0-flash:generateContent?key=k",
        &[],
        greq,
    );
    assert_eq!(r.json()["modelVersion"], "gemini-2.0-flash");
    assert_eq!(r.json()["usageMetadata"]["totalTokenCount"], 8);
    let r = c.call(
        "POST",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        &[],
        greq,
    );
    assert_eq!(r.chunks.len(), 4);
    assert!(r.chunks[0].ends_with(b"\r\n\r\n"));
    let r = c.call("POST", "/v1beta/models/g:streamGenerateContent", &[], greq);
    let arr = r.json();
    assert_eq!(arr.as_array().unwrap().len(), 4);

    let breq = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
    let r = c.call("POST", "/model/anthropic.claude-v2/converse", &[], breq);
    assert_eq!(r.json()["usage"]["totalTokens"], 8);
    let r = c.call(
        "POST",
        "/model/anthropic.claude-v2/converse-stream",
        &[],
        breq,
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    let mut off = 0;
    let mut names = Vec::new();
    while off < r.body.len() {
        let (h, _, total) = eventstream::tests::decode(&r.body[off..]);
        names.push(h[0].1.clone());
        off += total;
    }
    assert_eq!(names.first().map(String::as_str), Some("messageStart"));
    assert_eq!(names.last().map(String::as_str), Some("metadata"));

    let r = c.call("GET", "/v1/models", &[], "");
    assert_eq!(r.json()["data"][0]["id"], "mock-model");

    // Status sequence per header value.
    let h = [("x-mock-status", "503,200")];
    let r = c.call("POST", "/v1/messages", &h, r#"{"messages":[]}"#);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["type"], "error");
    let r = c.call("POST", "/v1/messages", &h, r#"{"messages":[]}"#);
    assert_eq!(r.status, 200);
    let r = c.call(
        "POST",
        "/model/m/converse",
        &[("x-mock-status", "429")],
        breq,
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-amzn-errortype"), Some("ThrottlingException"));
    // Invalid JSON request.
    let r = c.call("POST", "/v1beta/models/g:generateContent", &[], "{nope");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    // Invalid JSON response.
    let r = c.call(
        "POST",
        "/v1/chat/completions",
        &[("x-mock-invalid-json", "1")],
        "{}",
    );
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    // 404 keeps the connection usable.
    let r = c.call("POST", "/nope", &[], "{}");
    assert_eq!(r.status, 404);
    let r = c.call("GET", "/__mock/health", &[], "");
    assert_eq!(r.status, 200);
}

#[test]
fn close_after_and_delay() {
    let addr = start("127.0.0.1", 0).unwrap();
    let mut c = Client::connect(addr);
    let req = r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let t = Instant::now();
    let r = c.call(
        "POST",
        "/v1/chat/completions",
        &[("x-mock-delay-ms", "20"), ("x-mock-chunks", "3")],
        req,
    );
    // 6 events -> 5 gaps of 20 ms.
    assert_eq!(r.chunks.len(), 6);
    assert!(t.elapsed() >= Duration::from_millis(100));

    c.send(
        "POST",
        "/v1/chat/completions",
        &[("x-mock-close-after", "2")],
        req,
    );
    let err = c.read().err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

    // Hang.
    let mut c = Client::connect(addr);
    let t = Instant::now();
    let r = c.call(
        "POST",
        "/v1/chat/completions",
        &[("x-mock-hang-ms", "50")],
        "{}",
    );
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(50));
}

#[test]
fn routes_and_args() {
    assert_eq!(
        route("POST", "/openai/deployments/gpt4o-prod/chat/completions"),
        Route::Provider {
            provider: Provider::OpenAi,
            path_model: Some("gpt4o-prod".into()),
            path_stream: false
        }
    );
    assert_eq!(
        route("POST", "/model/us.anthropic.claude-3:0/converse-stream"),
        Route::Provider {
            provider: Provider::Bedrock,
            path_model: Some("us.anthropic.claude-3:0".into()),
            path_stream: true
        }
    );
    assert_eq!(route("GET", "/v1/models"), Route::Models);
    assert_eq!(route("GET", "/v1/chat/completions"), Route::NotFound);
    let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(args(&[]).unwrap(), ("127.0.0.1".to_string(), 0));
    assert_eq!(
        args(&["--port", "8080", "--bind=0.0.0.0"]).unwrap(),
        ("0.0.0.0".to_string(), 8080)
    );
    assert!(args(&["--port"]).is_err());
    assert!(args(&["--bogus"]).is_err());
}

#[test]
fn agents_api_embeddings_counts_responses_and_signed_thinking() {
    let addr = start("127.0.0.1", 0).unwrap();
    let mut c = Client::connect(addr);
    // Embeddings on three wires.
    let r = c.call(
        "POST",
        "/v1/embeddings",
        &[],
        r#"{"model":"e","input":["a b","c"],"dimensions":4}"#,
    );
    let v = r.json();
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    let r = c.call(
        "POST",
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        &[],
        r#"{"requests":[{"model":"models/g","content":{"parts":[{"text":"a"}]}},{"model":"models/g","content":{"parts":[{"text":"b"}]}}]}"#,
    );
    assert_eq!(r.json()["embeddings"].as_array().unwrap().len(), 2);
    let r = c.call(
        "POST",
        "/model/amazon.titan-embed-text-v2%3A0/invoke",
        &[],
        r#"{"inputText":"one two three","dimensions":256}"#,
    );
    assert_eq!(r.json()["inputTextTokenCount"], 3);
    assert_eq!(r.header("x-amzn-bedrock-input-token-count"), Some("3"));
    // Counting agrees with the usage of an answer to the same prompt.
    let prompt = r#"{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"count these four words"}]}"#;
    let n = c
        .call("POST", "/v1/messages/count_tokens", &[], prompt)
        .json()["input_tokens"]
        .clone();
    let u = c.call("POST", "/v1/messages", &[], prompt).json()["usage"]["input_tokens"].clone();
    assert_eq!(n, u);
    // Responses, streamed, with reasoning and a function call.
    let r = c.call(
        "POST",
        "/v1/responses",
        &[("x-mock-thinking", "Think first.")],
        r#"{"model":"gpt-5","input":"hi","stream":true,"tools":[{"type":"function","name":"f","parameters":{}}]}"#,
    );
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.starts_with("event: response.created\ndata: "),
        "{text}"
    );
    assert!(text.contains("event: response.function_call_arguments.delta"));
    assert!(text.contains("event: response.reasoning_summary_text.delta"));
    // Thinking the mock signed comes back fine; anything else is refused, as Anthropic does.
    let a = c
        .call(
            "POST",
            "/v1/messages",
            &[("x-mock-thinking", "Hmm.")],
            prompt,
        )
        .json();
    assert_eq!(a["content"][0]["type"], "thinking");
    let back = json!({"model": "c", "max_tokens": 5, "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": [a["content"][0].clone(), {"type": "text", "text": "x"}]},
        {"role": "user", "content": "again"}]});
    assert_eq!(
        c.call("POST", "/v1/messages", &[], &back.to_string())
            .status,
        200
    );
    let mut forged = back.clone();
    forged["messages"][1]["content"][0]["signature"] = json!("tollgate.gemini.");
    let r = c.call("POST", "/v1/messages", &[], &forged.to_string());
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Invalid `signature`"));
}
