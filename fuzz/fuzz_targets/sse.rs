//! The SSE parser: hostile bytes give the same events whatever the split (byte 0 picks the
//! split); events written with `write_event` come back as written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::stream::{write_event, SseEvent, SseParser};
use tollgate_fuzz::pieces;

fn parse(pieces: &[&[u8]]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for piece in pieces {
        p.feed(piece, &mut out);
    }
    p.finish(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = parse(&[input]);
    assert_eq!(
        parse(&pieces(seed, input)),
        whole,
        "a split changes the events"
    );

    // The input's text as events (NUL-separated; `write_event` takes data without CR).
    let text = String::from_utf8_lossy(input).replace('\r', "");
    let mut written = Vec::new();
    let mut expect = Vec::new();
    for (i, data) in text.split('\0').enumerate() {
        let event = (i % 2 == 1).then(|| format!("e{i}"));
        write_event(&mut written, event.as_deref(), data);
        expect.push(SseEvent {
            event,
            data: data.to_string(),
            id: None,
        });
    }
    assert_eq!(parse(&pieces(seed.rotate_left(3), &written)), expect);
});
