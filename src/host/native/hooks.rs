//! The event hooks Envoy calls (`envoy_dynamic_module_on_*`), exported by the `.so`.
//!
//! Envoy resolves some hooks when a filter configuration is created and requires them even
//! when unused (callouts, streams, scheduling, watermarks, config-level callouts): all are
//! here; the unused ones do nothing.
//!
//! Threads: program init and filter-configuration create/destroy run on Envoy's main thread;
//! every hook of one HTTP stream runs on that stream's worker thread. The configuration is
//! shared by all workers (it is `Send + Sync`: the KrakenD document and plain data); the
//! compiled gateway holds `Rc`s, so each worker compiles its own, once, like each Wasm VM
//! does ([`worker_gateway`]).
//!
//! Panics: the `.so` is built with `panic = "unwind"` (profile `native`) and every hook runs
//! its body under [`std::panic::catch_unwind`]: a panic is logged at critical level, the
//! stream gets a 500 (shaped in the client's API by the bootstrap) and never reaches the
//! upstream, its later hooks only let the reply out, and Envoy carries on with every other
//! stream. (`panic = "abort"` would take the whole proxy down with one bad request.)

use super::abi::{self, status, EnvoyBuffer, FilterPtr, HeaderPair};
use super::guard::{self, Guarded};
use super::host::NativeHost;
use super::log;
use super::metrics::{Kind, FAMILIES};
use crate::config::{process_env, Gateway};
use crate::filter::{Action, Flow};
use crate::host::Host;
use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// One filter configuration (`DynamicModuleFilter.filter_config`): the KrakenD document
/// (checked when the configuration was created) and what the ABI defined for it. Shared by
/// all workers.
pub struct Config {
    text: String,
    /// Distinguishes configurations in the workers' gateway caches.
    id: u64,
    /// False once Envoy destroyed the configuration (workers then drop their copies).
    alive: Arc<AtomicBool>,
    /// Envoy's id of each metric family ([`FAMILIES`] order); None when Envoy refused it.
    pub(super) metric_ids: Vec<Option<usize>>,
    /// `jwt_authn` providers and the header each forwards its verified payload in.
    pub(super) jwt_providers: Vec<(String, String)>,
}

// Shared by Envoy's threads: must stay `Send + Sync` (a compiled `Gateway` is neither).
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Config>();
};

/// State of one HTTP stream.
struct Filter {
    flow: Flow,
    host: NativeHost,
    /// A hook panicked: the stream was answered 500; later hooks only let that reply out.
    failed: bool,
}

/// A worker's compiled gateway of one configuration: its id, whether it is alive, the gateway.
type WorkerGateway = (u64, Arc<AtomicBool>, Rc<Gateway>);

thread_local! {
    /// This worker's compiled gateway of each live configuration.
    static GATEWAYS: RefCell<Vec<WorkerGateway>> = const { RefCell::new(Vec::new()) };
}

/// The gateway of `cfg` on this worker: compiled once per worker and configuration; those
/// of destroyed configurations are dropped on the way. None if it does not compile (it did
/// when the configuration was created; logged).
fn worker_gateway(cfg: &Config) -> Option<Rc<Gateway>> {
    let compile = || match Gateway::from_json(&cfg.text, &process_env) {
        Ok(gw) => Some(Rc::new(gw)),
        Err(e) => {
            log(
                abi::log_level::ERROR,
                &format!("tollgate: configuration rejected: {e}"),
            );
            None
        }
    };
    GATEWAYS.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return compile();
        };
        cache.retain(|(_, alive, _)| alive.load(Ordering::Acquire));
        if let Some((_, _, gw)) = cache.iter().find(|(id, ..)| *id == cfg.id) {
            return Some(Rc::clone(gw));
        }
        let gw = compile()?;
        cache.push((cfg.id, Arc::clone(&cfg.alive), Rc::clone(&gw)));
        Some(gw)
    })
}

// ----------------------------------------------------------------------------------------
// Program and configuration.

/// Once per process, on the main thread: installs the panic log and checks that Envoy's ABI
/// is the one this module was built for. Null refuses the module (Envoy then rejects the
/// configuration that names it).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    let checked = catch_unwind(|| {
        std::panic::set_hook(Box::new(|info| {
            log(
                abi::log_level::CRITICAL,
                &format!("tollgate: panic: {info}"),
            );
        }));
        super::abi_check::check_running_envoy()
    });
    match or_logged(checked, "tollgate: refusing to load the native module") {
        Some(n) => {
            log(
                abi::log_level::INFO,
                &format!(
                    "tollgate {} ({}) native module: Envoy's dynamic-module ABI is {} ({} callbacks, {})",
                    env!("CARGO_PKG_VERSION"),
                    env!("TOLLGATE_GIT_HASH"),
                    abi::ABI_VERSION,
                    n,
                    super::abi_check::BUILT_FOR
                ),
            );
            abi::ABI_VERSION_C.as_ptr().cast()
        }
        None => std::ptr::null(),
    }
}

/// A main-thread hook's outcome: the value, or None with the reason logged at critical
/// level (after a panic, the panic hook has logged it).
fn or_logged<T>(made: std::thread::Result<Result<T, String>>, refusal: &str) -> Option<T> {
    match made {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            log(abi::log_level::CRITICAL, &format!("{refusal}: {e}"));
            None
        }
        Err(_) => None,
    }
}

/// A filter configuration: the KrakenD document, compiled (a refused document refuses the
/// configuration, and Envoy with it, with the reason logged), plus the shared-data keys and
/// metric families it needs.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let made = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy's config bytes are valid during this hook.
        let text = String::from_utf8_lossy(&unsafe { config.to_vec() }).into_owned();
        new_config(config_envoy, &text)
    }));
    match or_logged(made, "tollgate: configuration rejected") {
        Some(cfg) => Arc::into_raw(Arc::new(cfg)).cast(),
        None => std::ptr::null(),
    }
}

fn new_config(config_envoy: *mut c_void, text: &str) -> Result<Config, String> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    if text.trim().is_empty() {
        return Err("the filter configuration is empty; it must be a KrakenD JSON document".into());
    }
    let gw = Gateway::from_json(text, &process_env).map_err(|e| e.to_string())?;
    if !gw.warnings.is_empty() {
        log(
            abi::log_level::WARN,
            &format!(
                "tollgate: {} setting(s) ignored: {}",
                gw.warnings.len(),
                gw.warnings.join("; ")
            ),
        );
    }
    log(
        abi::log_level::INFO,
        &format!(
            "tollgate: configured {} endpoint(s), {} cluster(s)",
            gw.endpoints.len(),
            gw.clusters().len()
        ),
    );
    // Shared-data keys created before traffic, as in the wasm build (natively not needed
    // for exactness, but the pipeline expects them).
    let mut shared = super::store::SharedOnly::default();
    crate::cost::store::init(&mut shared);
    crate::observe::init(&mut shared);
    gw.init_shared(&mut shared);
    let metric_ids = FAMILIES
        .iter()
        .map(|f| define_metric(config_envoy, f.name, f.kind, f.labels))
        .collect();
    let jwt_providers = gw
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, ep)| ep.security.jwt.is_some())
        .map(|(i, _)| {
            let p = crate::security::claims::provider_name(i);
            let h = super::jwt::header(&p);
            (p, h)
        })
        .collect();
    Ok(Config {
        text: text.to_string(),
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        alive: Arc::new(AtomicBool::new(true)),
        metric_ids,
        jwt_providers,
    })
}

fn define_metric(cfg: *mut c_void, name: &str, kind: Kind, labels: &[&str]) -> Option<usize> {
    let mut names: Vec<abi::ModuleBuffer> = labels
        .iter()
        .map(|l| abi::ModuleBuffer::of(l.as_bytes()))
        .collect();
    let ptr = if names.is_empty() {
        std::ptr::null_mut()
    } else {
        names.as_mut_ptr()
    };
    let mut id = 0usize;
    // SAFETY: `cfg` is Envoy's configuration pointer of this hook; Envoy copies the names.
    let result = unsafe {
        let name = abi::ModuleBuffer::of(name.as_bytes());
        match kind {
            Kind::Counter => abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                cfg,
                name,
                ptr,
                names.len(),
                &mut id,
            ),
            Kind::Histogram => {
                abi::envoy_dynamic_module_callback_http_filter_config_define_histogram(
                    cfg,
                    name,
                    ptr,
                    names.len(),
                    &mut id,
                )
            }
        }
    };
    if result != abi::METRICS_SUCCESS {
        log(
            abi::log_level::WARN,
            &format!("tollgate: metric {name} not defined (error {result})"),
        );
        return None;
    }
    Some(id)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if config.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: `config` came from `Arc::into_raw` in `config_new`; Envoy destroys it once.
        let cfg = unsafe { Arc::from_raw(config.cast::<Config>()) };
        cfg.alive.store(false, Ordering::Release);
    });
}

/// Per-route configuration is not supported: refusing it fails the route configuration
/// (rather than ignoring settings an operator wrote).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    log(
        abi::log_level::ERROR,
        "tollgate: per-route configuration is not supported; configure the filter once, with the KrakenD document",
    );
    std::ptr::null()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_: *const c_void) {}

// ----------------------------------------------------------------------------------------
// Streams.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    f: FilterPtr,
) -> *const c_void {
    if config.is_null() {
        return std::ptr::null();
    }
    let made = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `config` is a live `Arc<Config>` from `config_new` (Envoy keeps the
        // configuration alive while its filters exist); this takes one more reference.
        let cfg = unsafe {
            Arc::increment_strong_count(config.cast::<Config>());
            Arc::from_raw(config.cast::<Config>())
        };
        let flow = Flow::new(worker_gateway(&cfg)?);
        Some(Box::new(Filter {
            flow,
            host: NativeHost::new(f, cfg),
            failed: false,
        }))
    }));
    match made {
        Ok(Some(filter)) => Box::into_raw(filter).cast_const().cast(),
        _ => std::ptr::null(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    if filter.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: `filter` came from `Box::into_raw` in `filter_new`; Envoy destroys it once.
        drop(unsafe { Box::from_raw(filter.cast::<Filter>().cast_mut()) });
    });
}

impl Guarded for Filter {
    fn failed(&mut self) -> &mut bool {
        &mut self.failed
    }

    /// A 500 to the client, without `x-tollgate-error`: the bootstrap shapes it in the
    /// client's API like Envoy's own replies.
    fn fail(&mut self) {
        self.host.send_reply(
            500,
            &[("content-type", "text/plain")],
            b"tollgate: internal error",
        );
    }
}

/// Runs a hook's body on the stream's filter, guarded ([`guard::run`]). `on_fail` is the
/// status after a panic (or once the stream failed): request hooks stop (the 500 is the
/// answer), response hooks continue (to let it out).
fn guarded(filter: *const c_void, on_fail: u32, body: impl FnOnce(&mut Filter) -> u32) -> u32 {
    // SAFETY: `filter` came from `filter_new` and lives until `filter_destroy`; Envoy calls a
    // stream's hooks one at a time on one thread, so this is the only reference.
    match unsafe { filter.cast::<Filter>().cast_mut().as_mut() } {
        Some(filter) => guard::run(filter, on_fail, body),
        None => on_fail,
    }
}

fn headers_status(a: Action) -> u32 {
    match a {
        Action::Continue => status::CONTINUE,
        Action::Pause => status::STOP_ITERATION,
    }
}

fn body_status(a: Action) -> u32 {
    match a {
        Action::Continue => status::CONTINUE,
        Action::Pause => status::STOP_AND_BUFFER,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _: FilterPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guarded(filter, status::STOP_ITERATION, |s| {
        s.host.take_jwt_payloads();
        let a = s.flow.on_request_headers(&mut s.host, end_of_stream);
        s.host.end_hook();
        headers_status(a)
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _: FilterPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guarded(filter, status::STOP_AND_BUFFER, |s| {
        let size = s.host.body_size(false);
        let a = s.flow.on_request_body(&mut s.host, size, end_of_stream);
        s.host.end_hook();
        body_status(a)
    })
}

/// A request that ends with trailers: the body stage runs here (see `Flow`).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _: FilterPtr,
    filter: *const c_void,
) -> u32 {
    guarded(filter, status::TRAILERS_STOP, |s| {
        let a = s.flow.on_request_trailers(&mut s.host);
        s.host.end_hook();
        match a {
            Action::Continue => status::CONTINUE,
            Action::Pause => status::TRAILERS_STOP,
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _: FilterPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guarded(filter, status::CONTINUE, |s| {
        headers_status(s.flow.on_response_headers(&mut s.host, end_of_stream))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _: FilterPtr,
    filter: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guarded(filter, status::CONTINUE, |s| {
        let size = s.host.body_size(true);
        body_status(s.flow.on_response_body(&mut s.host, size, end_of_stream))
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _: FilterPtr,
    _: *const c_void,
) -> u32 {
    status::CONTINUE
}

/// The stream is over (also when reset), before the access log is written: accounting
/// that did not happen at the end of the response happens now, and its filter state
/// reaches the access log.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _: FilterPtr,
    filter: *const c_void,
) {
    guarded(filter, status::CONTINUE, |s| {
        s.flow.on_log(&mut s.host);
        status::CONTINUE
    });
}

/// A callout's answer (failover): headers only when it succeeded.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: FilterPtr,
    filter: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const HeaderPair,
    headers_len: usize,
    chunks: *const EnvoyBuffer,
    chunks_len: usize,
) {
    guarded(filter, status::CONTINUE, |s| {
        // SAFETY: Envoy's arrays (either may be null) are valid during this hook and are
        // copied before anything else runs.
        let (headers, body) = unsafe { callout_answer(headers, headers_len, chunks, chunks_len) };
        let headers = if result == abi::CALLOUT_SUCCESS {
            headers
        } else {
            Vec::new()
        };
        let size = body.len();
        s.host.set_callout(Some((headers, body)));
        let token = u32::try_from(callout_id).unwrap_or(u32::MAX);
        s.flow.on_callout(&mut s.host, token, size);
        s.host.set_callout(None);
        s.host.end_hook();
        status::CONTINUE
    });
}

/// # Safety
/// Each pointer is null or points to `len` valid items whose buffers are readable.
unsafe fn callout_answer(
    headers: *const HeaderPair,
    headers_len: usize,
    chunks: *const EnvoyBuffer,
    chunks_len: usize,
) -> (Vec<(String, String)>, Vec<u8>) {
    let headers = if headers.is_null() {
        Vec::new()
    } else {
        std::slice::from_raw_parts(headers, headers_len)
            .iter()
            .map(|p| p.to_strings())
            .collect()
    };
    let mut body = Vec::new();
    if !chunks.is_null() {
        for c in std::slice::from_raw_parts(chunks, chunks_len) {
            body.extend(c.to_vec());
        }
    }
    (headers, body)
}

/// Envoy's local replies pass as they are.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _: FilterPtr,
    _: *const c_void,
    _code: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> u32 {
    0 // Continue
}

// ----------------------------------------------------------------------------------------
// Hooks Envoy requires but tollgate does not use (streamed callouts, scheduling,
// watermarks, configuration-level callouts).

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
    _: *const HeaderPair,
    _: usize,
    _: bool,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
    _: *const EnvoyBuffer,
    _: usize,
    _: bool,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
    _: *const HeaderPair,
    _: usize,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
    _: u32,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: FilterPtr,
    _: *const c_void,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: FilterPtr,
    _: *const c_void,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: u32,
    _: *const HeaderPair,
    _: usize,
    _: *const EnvoyBuffer,
    _: usize,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: *const HeaderPair,
    _: usize,
    _: bool,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: *const EnvoyBuffer,
    _: usize,
    _: bool,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: *const HeaderPair,
    _: usize,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
) {
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: u32,
) {
}
