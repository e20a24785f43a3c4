//! Shared primitives, one home each: hashing, SHA-256 and HMAC, calendar windows and dates,
//! address parsing, percent-encoding and hex. Plain functions over plain data: this module
//! imports nothing else of the crate, so every layer may use it.

pub mod addr;
pub mod calendar;
pub mod encoding;
pub mod hash;
pub mod sha256;
