//! Every wire's stream decoder on arbitrary bytes cut at arbitrary points (byte 0 picks the
//! wire and whether the client wants usage, byte 1 the split); whatever comes out, both
//! front doors' stream encoders send JSON events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::providers::model::StreamEvent;
use tollgate::providers::{self, FrontDoor, Wire};
use tollgate_fuzz::{assert_json_events, pieces, WIRES};

fn decode(wire: Wire, pieces: &[&[u8]]) -> Vec<StreamEvent> {
    let mut d = providers::stream_decoder(wire);
    let mut out = Vec::new();
    for piece in pieces {
        d.feed(piece, &mut out);
    }
    d.finish(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let [pick, split, input @ ..] = data else {
        return;
    };
    let wire = WIRES[usize::from(pick & 7) % WIRES.len()];
    let whole = decode(wire, &[input]);
    let split = decode(wire, &pieces(*split, input));
    for front in [FrontDoor::OpenAi, FrontDoor::Anthropic] {
        let mut enc = front.stream_encoder("m", pick & 8 != 0, 1_700_000_000);
        let mut out = Vec::new();
        for ev in split.iter().chain(whole.iter()) {
            enc.encode(ev, &mut out);
        }
        enc.finish(&mut out);
        assert_json_events(&format!("{front:?}"), &out);
    }
});
