//! An in-memory [`Host`] for tests of the filter logic: unit tests, `tests/fuzz.rs` and the
//! cargo-fuzz targets (feature `mock`).

use super::outbox::Detached;
use super::{Host, SharedError};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Shared data as Envoy keeps it: value plus a CAS counter; clones of a MockHost share it,
/// like the worker VMs of one Envoy.
pub type SharedStore = Rc<RefCell<HashMap<String, (Vec<u8>, u32)>>>;

/// A reply the filter sent instead of proxying.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Default, Clone)]
pub struct MockHost {
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub request_trailers: Vec<(String, String)>,
    pub response_chunk: Vec<u8>,
    pub reply: Option<Reply>,
    pub now: u64,
    /// Milliseconds clock; `now * 1000` when unset.
    pub now_ms: Option<u64>,
    pub shared: SharedStore,
    pub properties: Vec<(String, Vec<u8>)>,
    pub counters: HashMap<String, u64>,
    pub histograms: HashMap<String, Vec<u64>>,
    pub source_address: Option<String>,
    /// Envoy's `response.code` property (the status the client got).
    pub response_code: Option<u64>,
    pub logs: RefCell<Vec<String>>,
    /// Callouts sent: (cluster, headers, body, timeout ms).
    pub callouts: Vec<Callout>,
    /// The callout answer being delivered: headers and body.
    pub callout_answer: (Vec<(String, String)>, Vec<u8>),
    /// Trailers of the callout answer being delivered.
    pub callout_trailers: Vec<(String, String)>,
    /// Times the filter let a held request go on.
    pub resumed: u32,
    /// Calls handed to the long-lived context (`send_detached`).
    pub detached: Vec<Detached>,
    /// Envoy's dynamic metadata (the `metadata` property: a serialized
    /// `envoy.config.core.v3.Metadata`), where `jwt_authn` puts verified payloads.
    pub metadata: Option<Vec<u8>>,
}

/// A callout the filter sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Callout {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl MockHost {
    /// A request with method, path and extra headers.
    pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut h = Self {
            now: 1_700_000_000,
            ..Self::default()
        };
        h.request_headers.push((":method".into(), method.into()));
        h.request_headers.push((":path".into(), path.into()));
        h.request_headers
            .push((":authority".into(), "gateway.local".into()));
        for (k, v) in headers {
            h.request_headers.push((k.to_string(), v.to_string()));
        }
        h
    }

    pub fn with_body(mut self, body: &[u8]) -> Self {
        self.request_body = body.to_vec();
        self
    }

    pub fn with_response_headers(mut self, headers: &[(&str, &str)]) -> Self {
        self.response_headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// All values of a request header.
    pub fn request_values(&self, name: &str) -> Vec<&str> {
        values(&self.request_headers, name)
    }

    pub fn response_values(&self, name: &str) -> Vec<&str> {
        values(&self.response_headers, name)
    }
}

fn values<'a>(list: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    list.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn get(list: &[(String, String)], name: &str) -> Option<String> {
    list.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn set(list: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    list.retain(|(k, _)| k != name);
    if let Some(v) = value {
        list.push((name.to_string(), v.to_string()));
    }
}

impl Host for MockHost {
    fn request_header(&self, name: &str) -> Option<String> {
        get(&self.request_headers, name)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.request_headers.clone()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set(&mut self.request_headers, name, value)
    }
    fn clear_request_trailers(&mut self) {
        self.request_trailers.clear()
    }
    fn add_request_header(&mut self, name: &str, value: &str) {
        self.request_headers.push((name.into(), value.into()))
    }
    fn response_header(&self, name: &str) -> Option<String> {
        get(&self.response_headers, name)
    }
    fn response_headers(&self) -> Vec<(String, String)> {
        self.response_headers.clone()
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        set(&mut self.response_headers, name, value)
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        self.response_headers.push((name.into(), value.into()))
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.request_body[..size.min(self.request_body.len())].to_vec())
    }
    fn set_request_body(&mut self, body: &[u8]) {
        self.request_body = body.to_vec()
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.response_chunk[..size.min(self.response_chunk.len())].to_vec())
    }
    fn set_response_body(&mut self, body: &[u8]) {
        self.response_chunk = body.to_vec()
    }
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.reply = Some(Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        })
    }
    fn now_unix(&self) -> u64 {
        self.now
    }
    fn now_millis(&self) -> u64 {
        self.now_ms.unwrap_or(self.now * 1000)
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        let mut store = self.shared.borrow_mut();
        let current = store.get(key).map(|(_, c)| *c).unwrap_or(0);
        if let Some(expected) = cas {
            if expected != 0 && expected != current {
                return Err(SharedError::CasMismatch);
            }
            if expected == 0 && current != 0 {
                return Err(SharedError::CasMismatch);
            }
        }
        store.insert(key.to_string(), (value.to_vec(), current + 1));
        Ok(())
    }
    fn set_property(&mut self, name: &str, value: &[u8]) {
        self.properties.retain(|(k, _)| k != name);
        self.properties.push((name.to_string(), value.to_vec()));
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match path {
            ["source", "address"] => self.source_address.clone().map(String::into_bytes),
            ["response", "code"] => self.response_code.map(|c| c.to_le_bytes().to_vec()),
            ["metadata"] => self.metadata.clone(),
            _ => None,
        }
    }
    fn counter_add(&mut self, name: &str, delta: u64) {
        *self.counters.entry(name.to_string()).or_default() += delta;
    }
    fn histogram_record(&mut self, name: &str, value: u64) {
        self.histograms
            .entry(name.to_string())
            .or_default()
            .push(value);
    }
    fn log_warn(&self, message: &str) {
        self.logs.borrow_mut().push(message.to_string());
    }
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        self.callouts.push(Callout {
            cluster: cluster.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            timeout_ms,
        });
        Some(self.callouts.len() as u32)
    }
    fn callout_headers(&self) -> Vec<(String, String)> {
        self.callout_answer.0.clone()
    }
    fn callout_body(&self, size: usize) -> Option<Vec<u8>> {
        let b = &self.callout_answer.1;
        Some(b[..size.min(b.len())].to_vec())
    }
    fn callout_trailers(&self) -> Vec<(String, String)> {
        self.callout_trailers.clone()
    }
    fn resume_request(&mut self) {
        self.resumed += 1;
    }
    fn send_detached(&mut self, call: Detached) {
        self.detached.push(call);
    }
}
