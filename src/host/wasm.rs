//! proxy-wasm glue: the root context (configuration) and HTTP contexts, and [`Host`]
//! implemented over hostcalls. Callbacks stay thin: each feeds [`Flow`] and maps its answer.

use super::headers::{cache_set, decode_pairs, unchanged, Headers};
use super::{Host, SharedError};
use crate::config::{process_env, Gateway};
use crate::filter::{Action as FlowAction, Flow};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// [`Host`] over the hostcalls of the current HTTP context. Hostcall failures (a header
/// map that is no longer writable, say) are logged and otherwise ignored: the request
/// path must never panic.
///
/// Every hostcall crosses the V8 boundary (a value coming back costs a second crossing:
/// the host calls into the VM to allocate it), so a header map is read whole, in one call,
/// the first time a header of it is read, and cached while the filter holds the headers:
/// later reads are lookups; removing an absent header and setting a header to the value it
/// already has are skipped. The caches follow the filter's own changes and are dropped as
/// soon as a callback lets the headers go on (other filters and the router may change them
/// after that): see [`Filter`]. The clock is read once per callback.
#[derive(Default)]
pub struct WasmHost {
    req: RefCell<Option<Headers>>,
    resp: RefCell<Option<Headers>>,
    now_ms: Cell<Option<u64>>,
}

impl WasmHost {
    /// Forgets the header maps: they may change outside the filter from now on.
    fn forget(&mut self) {
        *self.req.get_mut() = None;
        *self.resp.get_mut() = None;
    }

    /// A new callback: time has moved on.
    fn tick(&mut self) {
        self.now_ms.set(None);
    }
}

fn get_header(cache: &RefCell<Option<Headers>>, map: MapType, name: &str) -> Option<String> {
    let mut cache = cache.borrow_mut();
    if cache.is_none() {
        *cache = header_map(map);
    }
    match cache.as_ref() {
        Some(m) => m
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone()),
        None => hostcalls::get_map_value(map, name).ok().flatten(),
    }
}

fn set_header(cache: &mut Option<Headers>, map: MapType, name: &str, value: Option<&str>) {
    if cache.as_ref().is_some_and(|m| unchanged(m, name, value)) {
        return;
    }
    let done = warn_on_err("set header", hostcalls::set_map_value(map, name, value));
    match (cache.as_mut(), done) {
        (Some(m), Some(())) => cache_set(m, name, value),
        _ => *cache = None,
    }
}

fn add_header(cache: &mut Option<Headers>, map: MapType, name: &str, value: &str) {
    let done = warn_on_err("add header", hostcalls::add_map_value(map, name, value));
    match (cache.as_mut(), done) {
        (Some(m), Some(())) => m.push((name.to_ascii_lowercase(), value.to_string())),
        _ => *cache = None,
    }
}

fn warn_on_err<T>(what: &str, r: Result<T, proxy_wasm::types::Status>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(status) => {
            log::warn!("tollgate: {what} failed: {status:?}");
            None
        }
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The whole header map in one hostcall. `hostcalls::get_map` would panic (and kill the
/// VM) on a header value that is not UTF-8, which Envoy lets through: this reads bytes.
fn header_map(map: MapType) -> Option<Headers> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer it allocated in this VM's memory through
    // `proxy_on_memory_allocate` (the Rust global allocator, `Vec::with_capacity(size)`),
    // so taking ownership of it as a Vec of that length and capacity is sound; the SDK's own
    // `get_map` does the same.
    let bytes = unsafe {
        match proxy_get_header_map_pairs(map, &mut data, &mut size) {
            Status::Ok if data.is_null() => Vec::new(),
            Status::Ok => Vec::from_raw_parts(data, size, size),
            _ => return None,
        }
    };
    decode_pairs(&bytes)
}

impl Host for WasmHost {
    fn request_header(&self, name: &str) -> Option<String> {
        get_header(&self.req, MapType::HttpRequestHeaders, name)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        let mut cache = self.req.borrow_mut();
        if cache.is_none() {
            *cache = header_map(MapType::HttpRequestHeaders);
        }
        cache.clone().unwrap_or_default()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set_header(self.req.get_mut(), MapType::HttpRequestHeaders, name, value)
    }
    fn clear_request_trailers(&mut self) {
        warn_on_err(
            "remove request trailers",
            hostcalls::set_map(MapType::HttpRequestTrailers, vec![]),
        );
    }
    fn add_request_header(&mut self, name: &str, value: &str) {
        add_header(self.req.get_mut(), MapType::HttpRequestHeaders, name, value)
    }
    fn response_header(&self, name: &str) -> Option<String> {
        get_header(&self.resp, MapType::HttpResponseHeaders, name)
    }
    fn response_headers(&self) -> Vec<(String, String)> {
        let mut cache = self.resp.borrow_mut();
        if cache.is_none() {
            *cache = header_map(MapType::HttpResponseHeaders);
        }
        cache.clone().unwrap_or_default()
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        set_header(
            self.resp.get_mut(),
            MapType::HttpResponseHeaders,
            name,
            value,
        )
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        add_header(
            self.resp.get_mut(),
            MapType::HttpResponseHeaders,
            name,
            value,
        )
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
    }
    fn set_request_body(&mut self, body: &[u8]) {
        // start 0 and a length past the end replace the whole buffered body.
        warn_on_err(
            "set request body",
            hostcalls::set_buffer(BufferType::HttpRequestBody, 0, usize::MAX, body),
        );
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
    }
    fn set_response_body(&mut self, body: &[u8]) {
        warn_on_err(
            "set response body",
            hostcalls::set_buffer(BufferType::HttpResponseBody, 0, usize::MAX, body),
        );
    }
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        warn_on_err(
            "send local reply",
            hostcalls::send_http_response(status, headers.to_vec(), Some(body)),
        );
    }
    fn now_unix(&self) -> u64 {
        self.now_millis() / 1000
    }
    fn now_millis(&self) -> u64 {
        if let Some(ms) = self.now_ms.get() {
            return ms;
        }
        let ms = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.now_ms.set(Some(ms));
        ms
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SharedError::CasMismatch),
            Err(_) => Err(SharedError::Failed),
        }
    }
    fn set_property(&mut self, name: &str, value: &[u8]) {
        warn_on_err(
            "set property",
            hostcalls::set_property(vec![name], Some(value)),
        );
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }
    fn counter_add(&mut self, name: &str, delta: u64) {
        // Envoy refuses an increment of 0 (BadArgument).
        if delta == 0 {
            return;
        }
        if let Some(id) = metric_id(MetricType::Counter, name) {
            warn_on_err(
                "increment metric",
                hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX)),
            );
        }
    }
    fn histogram_record(&mut self, name: &str, value: u64) {
        if let Some(id) = metric_id(MetricType::Histogram, name) {
            warn_on_err("record metric", hostcalls::record_metric(id, value));
        }
    }
    fn log_warn(&self, message: &str) {
        log::warn!("{message}");
    }
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        warn_on_err(
            "dispatch http call",
            hostcalls::dispatch_http_call(
                cluster,
                headers.to_vec(),
                Some(body),
                vec![],
                std::time::Duration::from_millis(timeout_ms),
            ),
        )
    }
    fn callout_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default()
    }
    fn callout_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
            .ok()
            .flatten()
    }
}

thread_local! {
    /// Metric ids by name, defined once per VM.
    static METRICS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

fn metric_id(kind: MetricType, name: &str) -> Option<u32> {
    METRICS.with(|m| {
        if let Some(id) = m.borrow().get(name) {
            return Some(*id);
        }
        let id = warn_on_err("define metric", hostcalls::define_metric(kind, name))?;
        m.borrow_mut().insert(name.to_string(), id);
        Some(id)
    })
}

fn action(a: FlowAction) -> Action {
    match a {
        FlowAction::Continue => Action::Continue,
        FlowAction::Pause => Action::Pause,
    }
}

/// Holds the compiled configuration; creates one [`Filter`] per HTTP stream.
#[derive(Default)]
pub struct Root {
    gateway: Option<Rc<Gateway>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        log::info!(
            "tollgate {} ({}) started",
            env!("CARGO_PKG_VERSION"),
            env!("TOLLGATE_GIT_HASH")
        );
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            _ => {
                log::error!("tollgate: configuration rejected: the plugin configuration is empty; it must be a KrakenD JSON document");
                return false;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        match Gateway::from_json(&text, &process_env) {
            Ok(gw) => {
                if !gw.warnings.is_empty() {
                    log::warn!(
                        "tollgate: {} setting(s) ignored: {}",
                        gw.warnings.len(),
                        gw.warnings.join("; ")
                    );
                }
                log::info!(
                    "tollgate: configured {} endpoint(s), {} cluster(s)",
                    gw.endpoints.len(),
                    gw.clusters().len()
                );
                // Budget counters and rate-limit buckets live in shared data under keys
                // created here, before traffic (see cost::store for why).
                crate::cost::store::init(&mut WasmHost::default());
                crate::observe::init(&mut WasmHost::default());
                gw.init_shared(&mut WasmHost::default());
                self.gateway = Some(Rc::new(gw));
                true
            }
            Err(e) => {
                log::error!("tollgate: configuration rejected: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let gw = self.gateway.clone()?;
        Some(Box::new(Filter {
            flow: Flow::new(gw),
            host: WasmHost::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream.
pub struct Filter {
    flow: Flow,
    host: WasmHost,
}

impl Context for Filter {
    /// The stream is over (also when reset): Envoy 1.40 calls this for every stream,
    /// while `on_log` is not called for HTTP filters here. Accounting that did not happen
    /// at the end of the response (a stream cut short) happens now.
    fn on_done(&mut self) -> bool {
        self.host.forget();
        self.host.tick();
        self.flow.on_log(&mut self.host);
        true
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        self.host.forget();
        self.host.tick();
        self.flow.on_callout(&mut self.host, token, body_size);
    }
}

impl Filter {
    /// Maps the flow's answer; header caches live only while the filter holds the headers
    /// (a Pause): once a callback lets them go on, later filters and the router may change
    /// them.
    fn held(&mut self, a: FlowAction) -> Action {
        if a == FlowAction::Continue {
            self.host.forget();
        }
        action(a)
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.host.tick();
        let a = self.flow.on_request_headers(&mut self.host, end_of_stream);
        self.held(a)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.host.tick();
        let a = self
            .flow
            .on_request_body(&mut self.host, body_size, end_of_stream);
        self.held(a)
    }

    /// A request that ends with trailers (HTTP/2; HTTP/1.1 chunked when Envoy keeps
    /// trailers): no body callback had `end_of_stream`, so the body stage runs here.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.host.tick();
        let a = self.flow.on_request_trailers(&mut self.host);
        self.held(a)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.host.tick();
        let a = self.flow.on_response_headers(&mut self.host, end_of_stream);
        self.held(a)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.host.tick();
        let a = self
            .flow
            .on_response_body(&mut self.host, body_size, end_of_stream);
        self.held(a)
    }
}
