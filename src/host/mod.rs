//! The boundary to Envoy. [`Host`] is what the filter logic needs from the proxy; the
//! `wasm` module implements it over proxy-wasm hostcalls (the only code, with `lib.rs`,
//! that uses `proxy_wasm`), `native` over Envoy's dynamic-module ABI (the `.so`, feature
//! `native`), and `mock::MockHost` implements it in memory for unit tests,
//! `tests/fuzz.rs` and the cargo-fuzz targets (feature `mock`; never in the .wasm).

pub mod headers;
#[cfg(all(any(test, feature = "mock"), not(target_arch = "wasm32")))]
pub mod mock;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

/// What the filter logic asks of the proxy for one HTTP stream.
///
/// Header names are lowercase. Setting a value to `None` removes the header.
/// Envoy facts that shape this API: request headers can only change while the filter
/// holds the headers (header callback, or later if it paused them); any request header
/// change clears Envoy's route cache, so setting the cluster header re-routes.
pub trait Host {
    fn request_header(&self, name: &str) -> Option<String>;
    /// Every request header as it stands (names lowercase, in order, duplicates kept).
    fn request_headers(&self) -> Vec<(String, String)>;
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// Removes the request's trailers (only while the trailers callback runs).
    fn clear_request_trailers(&mut self);
    fn add_request_header(&mut self, name: &str, value: &str);
    fn response_header(&self, name: &str) -> Option<String>;
    /// Every response header, in order (names lowercase, duplicates kept).
    fn response_headers(&self) -> Vec<(String, String)>;
    fn set_response_header(&mut self, name: &str, value: Option<&str>);
    fn add_response_header(&mut self, name: &str, value: &str);
    /// The buffered request body (`size` bytes, as Envoy reported).
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the whole buffered request body.
    fn set_request_body(&mut self, body: &[u8]);
    /// The response bytes of this callback (`size` bytes).
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces this callback's response bytes.
    fn set_response_body(&mut self, body: &[u8]);
    /// Answers the client directly; the request never reaches the upstream.
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Wall-clock time, Unix seconds.
    fn now_unix(&self) -> u64;
    /// Wall-clock time, Unix milliseconds.
    fn now_millis(&self) -> u64 {
        self.now_unix() * 1000
    }
    /// Shared data (one store for all worker VMs of this Envoy): value and CAS token.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes shared data; with `cas`, only if the value is unchanged since it was read.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError>;
    /// Sets a filter-state property (`wasm.<name>` in access logs).
    fn set_property(&mut self, name: &str, value: &[u8]);
    /// Reads a host property such as `["source", "address"]`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Adds to a counter metric (defined on first use; names appear as-is in /stats/prometheus).
    fn counter_add(&mut self, name: &str, delta: u64);
    /// Records a value in a histogram metric.
    fn histogram_record(&mut self, name: &str, value: u64);
    /// Logs at warn level (never pass secrets).
    fn log_warn(&self, message: &str);
    /// Sends an HTTP request to an Envoy cluster (a callout); the answer comes to
    /// `Flow::on_callout` with the returned token. None: the host refused.
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32>;
    /// Headers of the callout answer being delivered (`:status` among them; none when the
    /// callout failed: connection failure, reset or timeout).
    fn callout_headers(&self) -> Vec<(String, String)>;
    /// Body of the callout answer being delivered.
    fn callout_body(&self, size: usize) -> Option<Vec<u8>>;
}

/// Why a shared-data write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedError {
    /// Someone else wrote since our read: read again and retry.
    CasMismatch,
    /// The host refused.
    Failed,
}

/// Read-modify-write of a shared-data value with CAS retries (exact across workers).
/// `update` maps the current value (None when absent) to the new one, or None to leave
/// it unchanged; returns what was written (or the unchanged value).
pub fn shared_update<H: Host + ?Sized>(
    h: &mut H,
    key: &str,
    mut update: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    for _ in 0..64 {
        let (current, cas) = h.shared_get(key);
        let Some(next) = update(current.as_deref()) else {
            return current;
        };
        match h.shared_set(key, &next, cas.or(Some(0))) {
            Ok(()) => return Some(next),
            Err(SharedError::CasMismatch) => continue,
            Err(SharedError::Failed) => return None,
        }
    }
    None
}
