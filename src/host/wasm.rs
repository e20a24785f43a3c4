//! proxy-wasm glue: the root context (configuration) and HTTP contexts, and [`Host`]
//! implemented over hostcalls. Callbacks stay thin: each feeds [`Flow`] and maps its answer.

use super::{Host, SharedError};
use crate::config::{process_env, Gateway};
use crate::filter::{Action as FlowAction, Flow};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

/// [`Host`] over the hostcalls of the current HTTP context. Hostcall failures (a header
/// map that is no longer writable, say) are logged and otherwise ignored: the request
/// path must never panic.
pub struct WasmHost;

fn warn_on_err<T>(what: &str, r: Result<T, proxy_wasm::types::Status>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(status) => {
            log::warn!("tollgate: {what} failed: {status:?}");
            None
        }
    }
}

impl Host for WasmHost {
    fn request_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        warn_on_err(
            "set request header",
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value),
        );
    }
    fn add_request_header(&mut self, name: &str, value: &str) {
        warn_on_err(
            "add request header",
            hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value),
        );
    }
    fn response_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        warn_on_err(
            "set response header",
            hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value),
        );
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        warn_on_err(
            "add response header",
            hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value),
        );
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
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
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
                hostcalls::increment_metric(id, delta as i64),
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
                crate::cost::store::init(&mut WasmHost);
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
            host: WasmHost,
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
        self.flow.on_log(&mut self.host);
        true
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.flow.on_request_headers(&mut self.host, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.flow
                .on_request_body(&mut self.host, body_size, end_of_stream),
        )
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.flow.on_response_headers(&mut self.host, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.flow
                .on_response_body(&mut self.host, body_size, end_of_stream),
        )
    }
}
