//! The native host: tollgate as an Envoy dynamic module (a shared library loaded by
//! `envoy.extensions.filters.http.dynamic_modules`), the same pipeline as the wasm filter
//! behind the same [`Host`] boundary. Built for the host target with the `native` feature
//! (`make build` → `target/native/libtollgate.so`); proxy-wasm is not part of that build.
//!
//! - `abi`: the project's own bindings to the ABI of Envoy 1.40 (v0.2.0);
//! - `hooks`: the functions Envoy calls, each a few lines feeding [`Flow`], guarded
//!   ([`guard`]) so a panic never unwinds into Envoy;
//! - `host`: [`Host`] over the ABI's callbacks;
//! - [`store`]: shared data as one process-wide store (budgets, rate limits, breakers);
//! - [`metrics`], [`jwt`]: what the ABI gives differently from proxy-wasm;
//! - [`abi_check`]: the module refuses to load into an Envoy of another ABI.
//!
//! The plain-Rust parts build and are unit-tested without the feature; the parts that call
//! Envoy need Envoy's symbols and only build into the `.so`.
//!
//! [`Host`]: crate::host::Host
//! [`Flow`]: crate::filter::Flow

pub mod abi_check;
pub mod guard;
pub mod jwt;
pub mod metrics;
pub mod store;

#[cfg(feature = "native")]
mod abi;
#[cfg(feature = "native")]
mod hooks;
#[cfg(feature = "native")]
mod host;

#[cfg(feature = "native")]
pub use hooks::Config;

/// Logs through Envoy (component `dynamic_modules`).
#[cfg(feature = "native")]
fn log(level: u32, message: &str) {
    // SAFETY: Envoy copies the message during the call; logging is allowed on any thread.
    unsafe {
        abi::envoy_dynamic_module_callback_log(level, abi::ModuleBuffer::of(message.as_bytes()))
    }
}
