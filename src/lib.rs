//! tollgate: an AI gateway as an Envoy proxy-wasm HTTP filter, configured in KrakenD's format.

pub mod providers;
pub mod stream;
