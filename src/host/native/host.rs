//! [`Host`] over the dynamic-module ABI, for one HTTP stream.
//!
//! Unlike proxy-wasm, a callback is a plain function call into Envoy (no VM boundary, no
//! copy into a VM's memory), so nothing is cached: every read asks Envoy and copies what it
//! gets (Envoy's buffers live only until the end of the hook or the next change).
//! Differences from the wasm host, each forced by the ABI:
//! - a request header change does not clear Envoy's route cache by itself: the host notes
//!   it and the hook clears the cache once, when it returns ([`NativeHost::end_hook`]);
//! - a body stage sees what Envoy buffered for the filter so far and the bytes of this
//!   callback as two buffers: the host reads and replaces both as one body;
//! - metrics are families defined up front ([`super::metrics`]);
//! - filter state keys are the property names as given (the wasm host's are `wasm.<name>`);
//! - the verified JWT payloads come from `jwt_authn`'s forwarded headers ([`super::jwt`]).

use super::abi::{self, body_type, header_type, EnvoyBuffer, FilterPtr, HeaderPair, ModuleBuffer};
use super::metrics::{self, Kind};
use super::store::Store;
use super::Config;
use crate::host::{Host, SharedError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A callout's answer: headers (none when it failed) and body.
pub type CalloutAnswer = (Vec<(String, String)>, Vec<u8>);

/// Host of one stream. `f` is Envoy's filter pointer, valid until the filter is destroyed;
/// every call happens on the stream's worker thread, inside a hook.
pub struct NativeHost {
    f: FilterPtr,
    cfg: Arc<Config>,
    /// A request header changed during this hook: Envoy must choose the route again.
    request_changed: bool,
    /// The callout answer being delivered.
    callout: Option<CalloutAnswer>,
    /// The verified JWT payloads as a serialized `Metadata` (see [`super::jwt`]).
    metadata: Option<Vec<u8>>,
}

impl NativeHost {
    pub fn new(f: FilterPtr, cfg: Arc<Config>) -> Self {
        Self {
            f,
            cfg,
            request_changed: false,
            callout: None,
            metadata: None,
        }
    }

    /// After a hook: if a request header changed, Envoy picks the route again (the routing
    /// header chooses the cluster). A no-op once the request headers went on.
    pub fn end_hook(&mut self) {
        if std::mem::take(&mut self.request_changed) {
            // SAFETY: `f` is live for the stream (see `NativeHost`).
            unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(self.f) }
        }
    }

    /// Sets the answer of a callout for the duration of its delivery.
    pub fn set_callout(&mut self, answer: Option<CalloutAnswer>) {
        self.callout = answer;
    }

    /// Takes the forwarded JWT payloads off the request (request headers hook, before the
    /// pipeline): every provider's header goes, whatever it holds; a payload is kept only
    /// for a provider `jwt_authn` recorded a verified token for, from a header with one value.
    pub fn take_jwt_payloads(&mut self) {
        if self.cfg.jwt_providers.is_empty() {
            return;
        }
        let verified = self.metadata_keys(crate::security::metadata::JWT_NAMESPACE);
        let mut payloads = Vec::new();
        let cfg = Arc::clone(&self.cfg);
        for (provider, header) in &cfg.jwt_providers {
            let (value, count) = self.header_first(header_type::REQUEST, header);
            if count == 0 {
                continue;
            }
            self.set(header_type::REQUEST, header, None);
            let payload = value
                .filter(|_| count == 1 && verified.iter().any(|k| k == provider))
                .and_then(|v| super::jwt::decode_payload(&v));
            if let Some(p) = payload {
                payloads.push((provider.clone(), p));
            }
        }
        self.metadata = (!payloads.is_empty())
            .then(|| super::jwt::metadata(crate::security::metadata::JWT_NAMESPACE, &payloads));
    }

    fn metadata_keys(&self, namespace: &str) -> Vec<String> {
        let ns = ModuleBuffer::of(namespace.as_bytes());
        // SAFETY: `f` is live; `keys` has room for the `n` buffers Envoy writes, which are
        // copied before the hook returns.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_metadata_keys_count(
                self.f,
                abi::METADATA_DYNAMIC,
                ns,
            );
            if n == 0 {
                return Vec::new();
            }
            let mut keys = vec![EnvoyBuffer::EMPTY; n];
            if !abi::envoy_dynamic_module_callback_http_get_metadata_keys(
                self.f,
                abi::METADATA_DYNAMIC,
                ns,
                keys.as_mut_ptr(),
            ) {
                return Vec::new();
            }
            keys.into_iter()
                .map(|k| String::from_utf8_lossy(&k.to_vec()).into_owned())
                .collect()
        }
    }

    /// The first value of a header and how many values it has.
    fn header_first(&self, kind: u32, name: &str) -> (Option<String>, usize) {
        let mut buf = EnvoyBuffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: `f` is live; `buf` and `count` are written by Envoy; the value is copied
        // before anything can change the header map.
        let value = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.f,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                &mut buf,
                0,
                &mut count,
            )
            .then(|| abi::text(buf.ptr, buf.len))
        };
        if count == 0 {
            return (None, 0);
        }
        (value, count)
    }

    fn headers(&self, kind: u32) -> Vec<(String, String)> {
        // SAFETY: `f` is live; `pairs` has room for the `n` pairs Envoy writes, copied at once.
        unsafe {
            let n = abi::envoy_dynamic_module_callback_http_get_headers_size(self.f, kind);
            if n == 0 {
                return Vec::new();
            }
            let mut pairs = vec![HeaderPair::EMPTY; n];
            if !abi::envoy_dynamic_module_callback_http_get_headers(
                self.f,
                kind,
                pairs.as_mut_ptr(),
            ) {
                return Vec::new();
            }
            pairs.into_iter().map(|p| p.to_strings()).collect()
        }
    }

    fn set(&mut self, kind: u32, name: &str, value: Option<&str>) {
        let v = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: `f` is live; Envoy copies both buffers during the call.
        let done = unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.f,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                v,
            )
        };
        self.changed(kind, done, "set header");
    }

    fn add(&mut self, kind: u32, name: &str, value: &str) {
        // SAFETY: as in `set`.
        let done = unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.f,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        };
        self.changed(kind, done, "add header");
    }

    fn changed(&mut self, kind: u32, done: bool, what: &str) {
        if !done {
            self.log_warn(&format!("tollgate: {what} failed"));
        } else if kind == header_type::REQUEST {
            self.request_changed = true;
        }
    }

    /// The body as one: what Envoy buffered for the filter, then this callback's bytes;
    /// at most `size` bytes.
    fn body(&self, buffered: u32, received: u32, size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size.min(self.body_size_of(buffered, received)));
        for kind in [buffered, received] {
            // SAFETY: `f` is live; `chunks` has room for the `n` buffers Envoy writes, and
            // they are copied before the hook returns or the body changes.
            unsafe {
                let n = abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.f, kind);
                if n == 0 {
                    continue;
                }
                let mut chunks = vec![EnvoyBuffer::EMPTY; n];
                if !abi::envoy_dynamic_module_callback_http_get_body_chunks(
                    self.f,
                    kind,
                    chunks.as_mut_ptr(),
                ) {
                    continue;
                }
                for c in chunks {
                    if c.ptr.is_null() || c.len == 0 {
                        continue;
                    }
                    out.extend_from_slice(std::slice::from_raw_parts(c.ptr, c.len));
                }
            }
            if out.len() >= size {
                break;
            }
        }
        out.truncate(size);
        out
    }

    /// Replaces the body (both buffers) with `body`: into this callback's bytes when the
    /// hook has them (a body callback), else into what Envoy buffered (the trailers
    /// callback).
    fn set_body(&mut self, buffered: u32, received: u32, body: &[u8]) {
        // SAFETY: `f` is live; Envoy copies `body` during the call.
        let done = unsafe {
            for kind in [buffered, received] {
                let n = abi::envoy_dynamic_module_callback_http_get_body_size(self.f, kind);
                if n > 0 {
                    abi::envoy_dynamic_module_callback_http_drain_body(self.f, kind, n);
                }
            }
            abi::envoy_dynamic_module_callback_http_append_body(
                self.f,
                received,
                ModuleBuffer::of(body),
            ) || abi::envoy_dynamic_module_callback_http_append_body(
                self.f,
                buffered,
                ModuleBuffer::of(body),
            )
        };
        if !done {
            self.log_warn("tollgate: set body failed");
        }
    }

    /// The size of the body a body stage sees (buffered + this callback's).
    pub fn body_size(&self, response: bool) -> usize {
        if response {
            self.body_size_of(body_type::BUFFERED_RESPONSE, body_type::RECEIVED_RESPONSE)
        } else {
            self.body_size_of(body_type::BUFFERED_REQUEST, body_type::RECEIVED_REQUEST)
        }
    }

    fn body_size_of(&self, buffered: u32, received: u32) -> usize {
        // SAFETY: `f` is live.
        unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_size(self.f, buffered).saturating_add(
                abi::envoy_dynamic_module_callback_http_get_body_size(self.f, received),
            )
        }
    }

    fn metric(&mut self, kind: Kind, name: &str, value: u64) {
        let Some((family, values)) = metrics::split(name, kind) else {
            warn_unknown_metric(self, name);
            return;
        };
        let Some(Some(id)) = self.cfg.metric_ids.get(family).copied() else {
            return;
        };
        let mut labels: Vec<ModuleBuffer> = values
            .iter()
            .map(|v| ModuleBuffer::of(v.as_bytes()))
            .collect();
        let ptr = if labels.is_empty() {
            std::ptr::null_mut()
        } else {
            labels.as_mut_ptr()
        };
        // SAFETY: `f` is live; the label buffers outlive the call; their number is the
        // family's label count, as defined.
        let result = unsafe {
            match kind {
                Kind::Counter => abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                    self.f,
                    id,
                    ptr,
                    labels.len(),
                    value,
                ),
                Kind::Histogram => {
                    abi::envoy_dynamic_module_callback_http_filter_record_histogram_value(
                        self.f,
                        id,
                        ptr,
                        labels.len(),
                        value,
                    )
                }
            }
        };
        if result != abi::METRICS_SUCCESS {
            self.log_warn(&format!("tollgate: metric {name}: error {result}"));
        }
    }
}

/// A metric name outside the defined families is a bug in this host's table: said a few
/// times, not on every request.
fn warn_unknown_metric(h: &NativeHost, name: &str) {
    static WARNED: AtomicU32 = AtomicU32::new(0);
    if WARNED.fetch_add(1, Ordering::Relaxed) < 10 {
        h.log_warn(&format!(
            "tollgate: metric {name} has no family in the native host; not recorded"
        ));
    }
}

impl Host for NativeHost {
    fn request_header(&self, name: &str) -> Option<String> {
        self.header_first(header_type::REQUEST, name).0
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers(header_type::REQUEST)
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.set(header_type::REQUEST, name, value)
    }
    fn clear_request_trailers(&mut self) {
        for (name, _) in self.headers(header_type::REQUEST_TRAILER) {
            self.set(header_type::REQUEST_TRAILER, &name, None);
        }
    }
    fn add_request_header(&mut self, name: &str, value: &str) {
        self.add(header_type::REQUEST, name, value)
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.header_first(header_type::RESPONSE, name).0
    }
    fn response_headers(&self) -> Vec<(String, String)> {
        self.headers(header_type::RESPONSE)
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        self.set(header_type::RESPONSE, name, value)
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        self.add(header_type::RESPONSE, name, value)
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.body(
            body_type::BUFFERED_REQUEST,
            body_type::RECEIVED_REQUEST,
            size,
        ))
    }
    fn set_request_body(&mut self, body: &[u8]) {
        self.set_body(
            body_type::BUFFERED_REQUEST,
            body_type::RECEIVED_REQUEST,
            body,
        )
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.body(
            body_type::BUFFERED_RESPONSE,
            body_type::RECEIVED_RESPONSE,
            size,
        ))
    }
    fn set_response_body(&mut self, body: &[u8]) {
        self.set_body(
            body_type::BUFFERED_RESPONSE,
            body_type::RECEIVED_RESPONSE,
            body,
        )
    }
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let mut pairs: Vec<HeaderPair> =
            headers.iter().map(|(k, v)| HeaderPair::of(k, v)).collect();
        // SAFETY: `f` is live; Envoy copies headers, body and details during the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.f,
                status,
                pairs.as_mut_ptr(),
                pairs.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(b"tollgate"),
            )
        }
    }
    fn now_unix(&self) -> u64 {
        self.now_millis() / 1000
    }
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        Store::global().get(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        Store::global().set(key, value, cas)
    }
    fn set_property(&mut self, name: &str, value: &[u8]) {
        // SAFETY: `f` is live; Envoy copies both buffers.
        let done = unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.f,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            )
        };
        if !done {
            self.log_warn(&format!("tollgate: set filter state {name} failed"));
        }
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match path {
            ["source", "address"] => {
                let mut buf = EnvoyBuffer::EMPTY;
                // SAFETY: `f` is live; the value is copied at once.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                        self.f,
                        abi::attribute::SOURCE_ADDRESS,
                        &mut buf,
                    )
                    .then(|| buf.to_vec())
                }
            }
            ["response", "code"] => {
                let mut code = 0u64;
                // SAFETY: `f` is live; Envoy writes `code`.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(
                        self.f,
                        abi::attribute::RESPONSE_CODE,
                        &mut code,
                    )
                }
                .then(|| code.to_le_bytes().to_vec())
            }
            ["metadata"] => self.metadata.clone(),
            _ => None,
        }
    }
    fn counter_add(&mut self, name: &str, delta: u64) {
        if delta > 0 {
            self.metric(Kind::Counter, name, delta)
        }
    }
    fn histogram_record(&mut self, name: &str, value: u64) {
        self.metric(Kind::Histogram, name, value)
    }
    fn log_warn(&self, message: &str) {
        super::log(abi::log_level::WARN, message);
    }
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        let mut pairs: Vec<HeaderPair> =
            headers.iter().map(|(k, v)| HeaderPair::of(k, v)).collect();
        let mut id = 0u64;
        // SAFETY: `f` is live; Envoy copies cluster name, headers and body during the call.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_http_callout(
                self.f,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                pairs.as_mut_ptr(),
                pairs.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        if result != abi::CALLOUT_INIT_SUCCESS {
            self.log_warn(&format!(
                "tollgate: callout to {cluster} refused (init result {result})"
            ));
            return None;
        }
        u32::try_from(id).ok()
    }
    fn callout_headers(&self) -> Vec<(String, String)> {
        self.callout
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default()
    }
    fn callout_body(&self, size: usize) -> Option<Vec<u8>> {
        let body = &self.callout.as_ref()?.1;
        Some(
            body.get(..size.min(body.len()))
                .unwrap_or_default()
                .to_vec(),
        )
    }
}
