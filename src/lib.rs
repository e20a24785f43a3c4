//! tollgate: an AI gateway as an Envoy proxy-wasm HTTP filter, configured in KrakenD's format.
//!
//! This file is the Wasm entry point only: log level, panic hook, root context. All logic
//! lives in plain-Rust modules tested on the host; `host/` is the only proxy-wasm glue.

#[cfg(feature = "cli")]
pub mod apply;
pub mod cel;
pub mod config;
pub mod cost;
#[cfg(not(target_arch = "wasm32"))]
pub mod envoy;
pub mod filter;
pub mod gofmt;
pub mod governance;
pub mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod k8s;
pub mod limits;
pub mod observe;
pub mod providers;
pub mod refusal;
pub mod routing;
#[cfg(feature = "cli")]
pub mod schema;
pub mod security;
pub mod stream;
pub mod support;
pub mod template;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(
            proxy_wasm::types::LogLevel::Critical,
            &format!("tollgate: panic: {info}"),
        );
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(host::wasm::Root::default())
    });
}}
