//! Fleet limits: quotas and rate limits shared by every Envoy and kept across restarts, in
//! Redis, behind Envoy's rate limit protocol (`envoy.service.ratelimit.v3.RateLimitService`).
//!
//! - [`scheme`]: the descriptors a check or charge is written as (compiled for the .wasm too:
//!   the filter builds them, the service reads them); [`wire`]: the call as the filter sends
//!   and reads it (hand-written protobuf and gRPC framing over an HTTP callout); [`client`]:
//!   the filter's settings (where a quota keeps its counters, the `limits/service` timeout).
//! - `tollgate limits KRAKEND.json` (feature `limits`, host only): [`config`] reads the KrakenD
//!   `redis` pools, Redis quotas and rate limits; [`service`] answers `ShouldRateLimit` with the
//!   counters in Redis ([`store`], one Lua script per operation); [`print`] writes the same
//!   limits for envoyproxy/ratelimit or Limitador. See docs/limits.md.

pub mod client;
pub mod scheme;
pub mod wire;

#[cfg(feature = "limits")]
pub mod config;
#[cfg(feature = "limits")]
pub mod print;
#[cfg(feature = "limits")]
pub mod proto;
#[cfg(feature = "limits")]
pub mod run;
#[cfg(feature = "limits")]
pub mod service;
#[cfg(feature = "limits")]
pub mod store;
