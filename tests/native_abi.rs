//! The native module's load-time decisions, with this test binary as a stand-in Envoy: it
//! defines the callbacks the module imports (recording logs and metric definitions) but
//! exports none of Envoy 1.40's ABI, so the module must refuse it. Needs the `native` feature
//! (`make unit` runs it: `cargo test --features native --test native_abi`).
#![cfg(feature = "native")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// Links the module (its hooks are reached by symbol name only).
extern crate tollgate;

use std::ffi::{c_char, c_void};
use std::sync::Mutex;

#[repr(C)]
#[derive(Clone, Copy)]
struct Buf {
    ptr: *const u8,
    len: usize,
}

impl Buf {
    fn text(self) -> String {
        if self.ptr.is_null() {
            return String::new();
        }
        // SAFETY: the module passes valid buffers for the duration of the call.
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
            .into_owned()
    }
}

static LOGS: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());
static METRICS: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());

fn logs() -> String {
    LOGS.lock()
        .unwrap()
        .iter()
        .map(|(l, m)| format!("{l}:{m}\n"))
        .collect()
}

// ---- the stand-in Envoy's callbacks ------------------------------------------------------

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_log(level: u32, message: Buf) {
    LOGS.lock().unwrap().push((level, message.text()));
}

fn define(name: Buf, labels: usize, id: *mut usize) -> u32 {
    let mut m = METRICS.lock().unwrap();
    m.push((name.text(), labels));
    // SAFETY: the module passes a valid out pointer.
    unsafe { *id = m.len() };
    0
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    _: *mut c_void,
    name: Buf,
    _: *mut Buf,
    labels: usize,
    id: *mut usize,
) -> u32 {
    define(name, labels, id)
}

#[no_mangle]
extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
    _: *mut c_void,
    name: Buf,
    _: *mut Buf,
    labels: usize,
    id: *mut usize,
) -> u32 {
    define(name, labels, id)
}

/// Callbacks only a stream uses: never called here.
macro_rules! unused {
    ($($name:ident),* $(,)?) => {$(
        #[no_mangle]
        extern "C" fn $name() {
            panic!(concat!(stringify!($name), " called without a stream"));
        }
    )*};
}

unused!(
    envoy_dynamic_module_callback_http_get_header,
    envoy_dynamic_module_callback_http_get_headers_size,
    envoy_dynamic_module_callback_http_get_headers,
    envoy_dynamic_module_callback_http_set_header,
    envoy_dynamic_module_callback_http_add_header,
    envoy_dynamic_module_callback_http_clear_route_cache,
    envoy_dynamic_module_callback_http_send_response,
    envoy_dynamic_module_callback_http_get_body_size,
    envoy_dynamic_module_callback_http_get_body_chunks_size,
    envoy_dynamic_module_callback_http_get_body_chunks,
    envoy_dynamic_module_callback_http_append_body,
    envoy_dynamic_module_callback_http_drain_body,
    envoy_dynamic_module_callback_http_set_filter_state_bytes,
    envoy_dynamic_module_callback_http_filter_get_attribute_string,
    envoy_dynamic_module_callback_http_filter_get_attribute_int,
    envoy_dynamic_module_callback_http_filter_http_callout,
    envoy_dynamic_module_callback_http_filter_increment_counter,
    envoy_dynamic_module_callback_http_filter_record_histogram_value,
    envoy_dynamic_module_callback_http_get_metadata_keys_count,
    envoy_dynamic_module_callback_http_get_metadata_keys,
);

// ---- the module's hooks -------------------------------------------------------------------

extern "C" {
    fn envoy_dynamic_module_on_program_init() -> *const c_char;
    fn envoy_dynamic_module_on_http_filter_config_new(
        config_envoy: *mut c_void,
        name: Buf,
        config: Buf,
    ) -> *const c_void;
    fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void);
}

fn config_new(text: &str) -> *const c_void {
    let b = |s: &str| Buf {
        ptr: s.as_ptr(),
        len: s.len(),
    };
    // SAFETY: the hook reads both buffers during the call.
    unsafe {
        envoy_dynamic_module_on_http_filter_config_new(std::ptr::null_mut(), b("tollgate"), b(text))
    }
}

// One test function: the hooks share process-wide state (the logs, the panic hook).
#[test]
fn load_time_decisions() {
    // An "Envoy" without Envoy 1.40's callback set: refused, with the reason, at critical.
    // SAFETY: a plain call.
    let version = unsafe { envoy_dynamic_module_on_program_init() };
    assert!(version.is_null(), "the module accepted a foreign ABI");
    let log = logs();
    assert!(
        log.contains("5:tollgate: refusing to load the native module: this Envoy's dynamic-module ABI is not the one of Envoy 1.40"),
        "{log}"
    );
    assert!(
        log.contains("0 ABI callbacks where 781 were expected"),
        "{log}"
    );

    // A document tollgate refuses: no configuration, the JSON path in the log.
    assert!(config_new("{\"version\": 3, \"endpoints\": [{\"endpoint\": 7}]}").is_null());
    assert!(
        logs().contains("tollgate: configuration rejected: $.endpoints[0]"),
        "{}",
        logs()
    );
    assert!(config_new("").is_null());
    assert!(logs().contains("the filter configuration is empty"));

    // A good one: every metric family defined once, with its labels; destroyed cleanly.
    let cfg = config_new(
        r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/"}]}]}"#,
    );
    assert!(!cfg.is_null(), "{}", logs());
    let defined = METRICS.lock().unwrap().clone();
    assert_eq!(defined.len(), 10, "{defined:?}");
    assert!(defined.contains(&("tollgate_tokens_total".to_string(), 4)));
    assert!(defined.contains(&("tollgate_request_duration_ms".to_string(), 2)));
    assert!(logs().contains("tollgate: configured 1 endpoint(s), 1 cluster(s)"));
    // SAFETY: `cfg` came from config_new and is destroyed once.
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(cfg) };
}
