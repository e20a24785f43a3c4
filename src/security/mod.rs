//! Security: client authentication (KrakenD `auth/api-keys`, JWT claims verified by
//! Envoy's `jwt_authn`), PII masking of prompts, an exfiltration guard on answers, and a
//! prompt guard. Plain Rust, one concept per file; the filter calls in at three points
//! (request headers, parsed request, response text).

pub mod apikeys;
pub mod call;
pub mod claims;
pub mod config;
pub mod detect;
pub mod exfil;
pub mod guard;
pub mod metadata;
pub mod pii;
pub mod reach;
pub mod secrets;
pub mod unescape;
