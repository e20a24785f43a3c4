//! Helpers shared by the cargo-fuzz targets in `fuzz_targets/`. The whole-filter driver is
//! the one `tests/fuzz.rs` uses ([`flow`]), so both kinds of fuzzing check the same
//! properties and a failing input of one replays in the other.

#[path = "../../tests/fuzz_flow/mod.rs"]
pub mod flow;

use tollgate::providers::Wire;
use tollgate::stream::SseParser;

/// Every provider wire.
pub const WIRES: [Wire; 5] = [
    Wire::OpenAi,
    Wire::Azure,
    Wire::Anthropic,
    Wire::Gemini,
    Wire::Bedrock,
];

/// `data` cut into pieces as [`flow::splits`] cuts a body (the seed picks sizes from
/// 1 byte to whole).
pub fn pieces(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    flow::splits(seed, data.len())
        .into_iter()
        .map(|r| &data[r])
        .collect()
}

pub use flow::is_json;

/// Panics unless every event of an SSE body carries JSON (or `[DONE]`).
pub fn assert_json_events(what: &str, body: &[u8]) {
    let mut p = SseParser::new();
    let mut events = Vec::new();
    p.feed(body, &mut events);
    p.finish(&mut events);
    for ev in events {
        assert!(
            ev.data == "[DONE]" || is_json(ev.data.as_bytes()),
            "{what} sent a non-JSON event: {:?}",
            ev.data
        );
    }
}
