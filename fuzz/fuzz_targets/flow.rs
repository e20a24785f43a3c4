//! The whole filter (`tollgate::filter::Flow`) through the in-memory host with hostile
//! input: method, path, headers, request body and its chunking, the provider's answer
//! (JSON or streams) and its chunking, callout answers. Format and properties:
//! `tests/fuzz_flow/mod.rs` (shared with the `flow` target of `tests/fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tollgate_fuzz::flow::run(data);
});
