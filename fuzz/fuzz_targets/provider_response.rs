//! Provider answers: byte 0 picks the wire and the HTTP status, the rest is the body.
//! `decode_response` then encoding for both front doors gives JSON; errors have a status
//! of at least 100 and JSON error bodies; `decode_error` never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::providers::{self, FrontDoor};
use tollgate_fuzz::{is_json, WIRES};

const STATUSES: [u16; 8] = [200, 200, 400, 429, 500, 529, 0, 999];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let wire = WIRES[usize::from(pick & 7) % WIRES.len()];
    let status = STATUSES[usize::from(pick >> 5)];
    match providers::decode_response(wire, status, body) {
        Ok(resp) => {
            for front in [FrontDoor::OpenAi, FrontDoor::Anthropic] {
                assert!(
                    is_json(&front.encode_response(&resp, "m")),
                    "{front:?} answer"
                );
            }
        }
        Err(e) => {
            assert!(e.status >= 100, "{wire:?} error status {}", e.status);
            for front in [FrontDoor::OpenAi, FrontDoor::Anthropic] {
                assert!(is_json(&front.error(&e).1), "{front:?} error body");
            }
        }
    }
    let _ = providers::decode_error(wire, status, body);
});
