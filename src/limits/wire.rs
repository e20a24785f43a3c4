//! One `ShouldRateLimit` call as the filter sends and reads it: the protobuf messages of
//! Envoy's rate limit service written and read by hand (the few fields tollgate uses; no
//! prost in the .wasm), gRPC's length-prefixed framing, and the answer's status read from the
//! HTTP/2 answer of a plain HTTP callout.
//!
//! Why an HTTP callout and not proxy-wasm's gRPC call: the native host (Envoy's dynamic
//! modules, ABI v0.2.0) has HTTP callouts only, so both hosts send the same bytes through
//! [`crate::host::Host::dispatch`]: `POST` [`PATH`] on an HTTP/2 cluster with
//! `content-type: application/grpc` and `te: trailers`, the body one framed message.
//!
//! The answer's gRPC status: the `grpc-status` trailer, else the header (a "trailers-only"
//! answer, which is how gRPC servers answer an error). The native host's one-shot callouts do
//! not hand out trailers, so a unary answer that carries a whole `RateLimitResponse` and no
//! error status in its headers is taken as OK; a unary server sends a message only with an OK
//! status (an error is sent trailers-only, before any message). Everything else (no answer,
//! an HTTP status other than 200, a non-zero `grpc-status`, no or an unreadable message, the
//! code `UNKNOWN`) is a failure, for the caller's `on_failure_allow` to decide.
//!
//! Field numbers: `envoy/service/ratelimit/v3/rls.proto`,
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`, `envoy/config/core/v3/base.proto`,
//! `google/protobuf/wrappers.proto` (checked against prost in the tests, which the service
//! uses).

use crate::limits::scheme::{self, Entries, Op};

/// The gRPC method.
pub const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
/// Largest answer read (a `RateLimitResponse` of 64 statuses is a few KB).
pub const MAX_ANSWER: usize = 64 * 1024;

/// One descriptor of a request: its entries and hits (0: a check), given back when `negative`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Entries,
    pub hits: u64,
    pub negative: bool,
}

/// One `ShouldRateLimit` request with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub descriptors: Vec<Descriptor>,
    pub op: Op,
    /// [`scheme::ID`]: the operation's id (exactly once on retries).
    pub id: String,
    /// [`scheme::AT`]: the windows the operation applies to (unix seconds).
    pub at: Option<u64>,
}

/// A descriptor's code in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok,
    OverLimit,
}

/// What the service answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub overall: Code,
    /// One per descriptor, in the request's order.
    pub statuses: Vec<Code>,
    /// `response_headers_to_add` (`X-Quota-Limit`, `X-Quota-Remaining`, `Retry-After`).
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The value of an answer header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Request {
    /// The callout's headers (`authority` names the cluster for Envoy; `timeout_ms` also goes
    /// as `grpc-timeout`, so the service stops waiting when the filter does).
    pub fn headers(&self, authority: &str, timeout_ms: u64) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), PATH.to_string()),
            (":authority".to_string(), authority.to_string()),
            ("content-type".to_string(), "application/grpc".to_string()),
            ("te".to_string(), "trailers".to_string()),
            (
                "grpc-timeout".to_string(),
                format!("{}m", timeout_ms.max(1)),
            ),
            (scheme::OP.to_string(), self.op.name().to_string()),
            (scheme::ID.to_string(), self.id.clone()),
        ];
        if let Some(at) = self.at {
            h.push((scheme::AT.to_string(), at.to_string()));
        }
        h
    }

    /// The callout's body: the `RateLimitRequest`, framed.
    pub fn body(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(64 * self.descriptors.len() + 16);
        field_bytes(&mut msg, 1, scheme::DOMAIN.as_bytes());
        for d in &self.descriptors {
            let mut desc = Vec::with_capacity(64);
            for (k, v) in &d.entries {
                let mut entry = Vec::with_capacity(k.len() + v.len() + 4);
                field_bytes(&mut entry, 1, k.as_bytes());
                field_bytes(&mut entry, 2, v.as_bytes());
                field_bytes(&mut desc, 1, &entry);
            }
            // google.protobuf.UInt64Value: present even when 0 (a check, not "1").
            let mut wrapper = Vec::with_capacity(11);
            if d.hits > 0 {
                field_varint(&mut wrapper, 1, d.hits);
            }
            field_bytes(&mut desc, 3, &wrapper);
            if d.negative {
                field_varint(&mut desc, 4, 1);
            }
            field_bytes(&mut msg, 2, &desc);
        }
        // The request-level hits (Limitador reads only this one): when all agree.
        if let Some(first) = self.descriptors.first() {
            if first.hits > 0 && self.descriptors.iter().all(|d| d.hits == first.hits) {
                field_varint(&mut msg, 3, first.hits.min(u64::from(u32::MAX)));
            }
        }
        let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        let mut framed = Vec::with_capacity(msg.len() + 5);
        framed.push(0); // not compressed
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&msg);
        framed
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_varint(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, u64::from(field) << 3);
    varint(out, v);
}

fn field_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    varint(out, (u64::from(field) << 3) | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A protobuf reader over one message's bytes.
struct Reader<'a> {
    b: &'a [u8],
}

/// A field's value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.b.split_first()?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    /// The next field, None at the end; Err on malformed bytes.
    fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.b.is_empty() {
            return Ok(None);
        }
        let bad = || "malformed protobuf".to_string();
        let key = self.varint().ok_or_else(bad)?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint().ok_or_else(bad)?),
            1 => self.take(8).map(|_| Value::Fixed).ok_or_else(bad)?,
            2 => {
                let n = usize::try_from(self.varint().ok_or_else(bad)?).map_err(|_| bad())?;
                Value::Bytes(self.take(n).ok_or_else(bad)?)
            }
            5 => self.take(4).map(|_| Value::Fixed).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn code(v: u64) -> Result<Code, String> {
    match v {
        1 => Ok(Code::Ok),
        2 => Ok(Code::OverLimit),
        other => Err(format!("answered code {other} (UNKNOWN)")),
    }
}

/// A `DescriptorStatus`: its code (absent: 0, UNKNOWN).
fn status(b: &[u8]) -> Result<Code, String> {
    let mut r = Reader { b };
    let mut c = 0;
    while let Some((field, v)) = r.next()? {
        if let (1, Value::Varint(x)) = (field, v) {
            c = x;
        }
    }
    code(c)
}

/// A `HeaderValue`.
fn header(b: &[u8]) -> Result<(String, String), String> {
    let mut r = Reader { b };
    let (mut k, mut v) = (String::new(), String::new());
    while let Some((field, val)) = r.next()? {
        match (field, val) {
            (1, Value::Bytes(s)) => k = String::from_utf8_lossy(s).into_owned(),
            (2, Value::Bytes(s)) => v = String::from_utf8_lossy(s).into_owned(),
            _ => {}
        }
    }
    Ok((k, v))
}

/// Reads a framed `RateLimitResponse`.
pub fn decode(body: &[u8]) -> Result<Response, String> {
    let Some((&flag, rest)) = body.split_first() else {
        return Err("no message in the answer".into());
    };
    if flag != 0 {
        return Err("a compressed message (not asked for)".into());
    }
    let len = rest
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or("a truncated message frame")?;
    let msg = usize::try_from(len)
        .ok()
        .and_then(|n| rest.get(4..4usize.saturating_add(n)))
        .ok_or("a truncated message")?;
    let mut r = Reader { b: msg };
    let (mut overall, mut statuses, mut headers) = (0, Vec::new(), Vec::new());
    while let Some((field, v)) = r.next()? {
        match (field, v) {
            (1, Value::Varint(x)) => overall = x,
            (2, Value::Bytes(b)) => statuses.push(status(b)?),
            (3, Value::Bytes(b)) => headers.push(header(b)?),
            _ => {}
        }
    }
    Ok(Response {
        overall: code(overall)?,
        statuses,
        headers,
    })
}

fn find<'h>(list: &'h [(String, String)], name: &str) -> Option<&'h str> {
    list.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A callout's answer (headers, trailers, body) as the service's response, or why it is a
/// failure (see the module docs). `expected`: the number of descriptors sent.
pub fn answer(
    headers: &[(String, String)],
    trailers: &[(String, String)],
    body: &[u8],
    expected: usize,
) -> Result<Response, String> {
    let r = read(headers, trailers, body)?;
    if r.statuses.len() != expected {
        return Err(format!(
            "{} statuses for {expected} descriptors",
            r.statuses.len()
        ));
    }
    Ok(r)
}

/// Whether a charge was delivered: the service answered it (whatever the codes: a charge
/// applies in any case).
pub fn delivered(headers: &[(String, String)], trailers: &[(String, String)], body: &[u8]) -> bool {
    read(headers, trailers, body).is_ok()
}

fn read(
    headers: &[(String, String)],
    trailers: &[(String, String)],
    body: &[u8],
) -> Result<Response, String> {
    let Some(status) = find(headers, ":status") else {
        return Err("no answer (timeout, connection failure or reset)".into());
    };
    if status != "200" {
        return Err(format!("HTTP status {status}"));
    }
    let grpc = find(trailers, "grpc-status").or_else(|| find(headers, "grpc-status"));
    if let Some(s) = grpc.filter(|s| s.trim() != "0") {
        let message = find(trailers, "grpc-message")
            .or_else(|| find(headers, "grpc-message"))
            .unwrap_or("");
        // The service's messages name descriptors, never a secret; cut to keep logs short.
        let message: String = message.chars().take(200).collect();
        return Err(format!("gRPC status {s} {message}").trim_end().to_string());
    }
    decode(body)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
