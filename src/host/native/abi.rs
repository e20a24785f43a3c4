//! tollgate's own bindings to the Envoy dynamic-module ABI it was built for: the types and
//! the callbacks (functions Envoy exports and the module calls) that the native host uses,
//! declared from the ABI contract, Envoy's `abi.h` (source/extensions/dynamic_modules).
//! The event hooks (functions the module exports and Envoy calls) are in `hooks.rs`.
//!
//! ABI facts that shape these declarations:
//! - C enums are `int`-sized on x86-64 and aarch64 Linux: they cross as `u32`/`i32`.
//! - A changed signature is not detected when Envoy loads a module (only a missing symbol
//!   is), so every name here is checked against the Envoy binary in use
//!   (`tests/e2e/test_native.py`), and the module refuses an Envoy whose callback set is not
//!   exactly the one of [`ABI_VERSION`] (`abi_check.rs`).
//! - Buffers Envoy hands out (headers, body chunks, attribute values) stay valid until the
//!   end of the current hook or until the module changes what they point into: they are
//!   copied before any setter runs.

use std::ffi::c_void;

/// The ABI version this module implements (Envoy 1.40's).
pub const ABI_VERSION: &str = "v0.2.0";
/// The same, NUL-terminated, as `envoy_dynamic_module_on_program_init` returns it.
pub const ABI_VERSION_C: &[u8] = b"v0.2.0\0";

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// The bytes, copied; empty for a null buffer.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be readable (Envoy's promise for the current hook).
    pub unsafe fn to_vec(self) -> Vec<u8> {
        if self.ptr.is_null() || self.len == 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(self.ptr, self.len).to_vec()
    }
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module, read by Envoy
/// during the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl ModuleBuffer {
    /// A null buffer: "no value" where the ABI takes one (a header removal).
    pub const NULL: Self = Self {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn of(b: &[u8]) -> Self {
        Self {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }
}

/// `envoy_dynamic_module_type_module_http_header` and `..._envoy_http_header` (same layout).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HeaderPair {
    pub key_ptr: *const u8,
    pub key_len: usize,
    pub value_ptr: *const u8,
    pub value_len: usize,
}

impl HeaderPair {
    pub const EMPTY: Self = Self {
        key_ptr: std::ptr::null(),
        key_len: 0,
        value_ptr: std::ptr::null(),
        value_len: 0,
    };

    pub fn of(k: &str, v: &str) -> Self {
        Self {
            key_ptr: k.as_ptr(),
            key_len: k.len(),
            value_ptr: v.as_ptr(),
            value_len: v.len(),
        }
    }

    /// The pair as strings (lossy UTF-8, lowercase name), copied.
    ///
    /// # Safety
    /// Both buffers must be readable (Envoy's promise for the current hook).
    pub unsafe fn to_strings(self) -> (String, String) {
        let mut k = text(self.key_ptr, self.key_len);
        k.make_ascii_lowercase();
        (k, text(self.value_ptr, self.value_len))
    }
}

/// Envoy's bytes as a string (lossy UTF-8), copied once.
///
/// # Safety
/// `ptr..ptr+len` must be readable, or `ptr` null.
pub unsafe fn text(ptr: *const u8, len: usize) -> String {
    if ptr.is_null() || len == 0 {
        return String::new();
    }
    String::from_utf8_lossy(std::slice::from_raw_parts(ptr, len)).into_owned()
}

/// `envoy_dynamic_module_type_http_header_type`.
pub mod header_type {
    pub const REQUEST: u32 = 0;
    pub const REQUEST_TRAILER: u32 = 1;
    pub const RESPONSE: u32 = 2;
}

/// `envoy_dynamic_module_type_http_body_type`.
pub mod body_type {
    pub const RECEIVED_REQUEST: u32 = 0;
    pub const BUFFERED_REQUEST: u32 = 1;
    pub const RECEIVED_RESPONSE: u32 = 2;
    pub const BUFFERED_RESPONSE: u32 = 3;
}

/// `envoy_dynamic_module_type_log_level`.
pub mod log_level {
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
    pub const CRITICAL: u32 = 5;
}

/// `envoy_dynamic_module_type_attribute_id` (the ones the host reads).
pub mod attribute {
    pub const RESPONSE_CODE: u32 = 15;
    pub const SOURCE_ADDRESS: u32 = 24;
}

/// Status values the hooks return (`..._on_http_filter_*_status`).
pub mod status {
    /// Headers and trailers: `Continue`; bodies: `Continue`.
    pub const CONTINUE: u32 = 0;
    /// Headers: `StopIteration` (this filter keeps receiving the body).
    pub const STOP_ITERATION: u32 = 1;
    /// Bodies: `StopIterationAndBuffer` (Envoy buffers up to its limit, then 413).
    pub const STOP_AND_BUFFER: u32 = 1;
    /// Trailers: `StopIteration`.
    pub const TRAILERS_STOP: u32 = 1;
}

/// `envoy_dynamic_module_type_http_callout_init_result_Success`.
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result_Success`.
pub const CALLOUT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result_Success`.
pub const METRICS_SUCCESS: u32 = 0;

pub type FilterPtr = *mut c_void;
pub type ConfigEnvoyPtr = *mut c_void;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterPtr,
        header_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterPtr,
        header_type: u32,
        result: *mut HeaderPair,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterPtr);

    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterPtr,
        status: u32,
        headers: *mut HeaderPair,
        headers_len: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_get_body_size(
        filter: FilterPtr,
        body_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: FilterPtr,
        body_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterPtr,
        body_type: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_append_body(
        filter: FilterPtr,
        body_type: u32,
        data: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_drain_body(
        filter: FilterPtr,
        body_type: u32,
        bytes: usize,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterPtr,
        attribute: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: FilterPtr,
        attribute: u32,
        result: *mut u64,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut HeaderPair,
        headers_len: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_len: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_len: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: FilterPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;
}

/// `envoy_dynamic_module_type_metadata_source_Dynamic`: the stream's dynamic metadata.
pub const METADATA_DYNAMIC: u32 = 0;

extern "C" {
    pub fn envoy_dynamic_module_callback_http_get_metadata_keys_count(
        filter: FilterPtr,
        source: u32,
        namespace: ModuleBuffer,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_metadata_keys(
        filter: FilterPtr,
        source: u32,
        namespace: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
}
