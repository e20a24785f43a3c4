//! The boundary to Envoy. [`Host`] is what the filter logic needs from the proxy; the
//! `wasm` module implements it over proxy-wasm hostcalls (the only code, with `lib.rs`,
//! that uses `proxy_wasm`), and [`mock::MockHost`] implements it for unit tests.

#[cfg(test)]
pub mod mock;
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
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    fn add_request_header(&mut self, name: &str, value: &str);
    fn response_header(&self, name: &str) -> Option<String>;
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
}
