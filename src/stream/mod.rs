//! Server-sent events: a parser and writer that survive arbitrary chunk boundaries.
//!
//! Envoy hands the filter response bytes as the upstream sends them, but callback
//! boundaries do not follow SSE events: one callback may hold several events, or a
//! fraction of one line. [`SseParser`] keeps the unfinished line and the event being
//! built between calls, so feeding a stream in any split yields the same events.

/// One complete SSE event (dispatched at its blank line).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// Longest line kept (bytes): a provider sending an endless line cannot grow the VM's
/// memory; the rest of such a line is dropped and [`SseParser::overflowed`] is set.
pub const MAX_LINE: usize = 4 << 20;

/// Incremental SSE parser (WHATWG `text/event-stream` rules: LF, CRLF or CR line ends,
/// `:` comments, one optional space after the colon, multi-line `data`).
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet terminated.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF of the next chunk belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Vec<String>,
    id: Option<String>,
    has_fields: bool,
    /// A line longer than [`MAX_LINE`] was cut.
    pub overflowed: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; pushes every event they complete.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) {
        if bytes.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        // Whole runs up to each line end are copied at once, not byte by byte.
        while let Some(i) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (run, rest) = bytes.split_at(i);
            self.keep(run);
            self.end_line(out);
            bytes = match rest {
                [b'\r', b'\n', rest @ ..] => rest,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, rest @ ..] => rest,
                [] => &[],
            };
        }
        self.keep(bytes);
    }

    /// Adds bytes to the unfinished line, up to [`MAX_LINE`].
    fn keep(&mut self, run: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        if run.len() > room {
            self.overflowed = true;
        }
        self.line.extend_from_slice(run.get(..room).unwrap_or(run));
    }

    /// The stream ended: dispatches a last event that lacked its blank line.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        self.dispatch(out);
    }

    /// The events `bytes` complete ([`SseParser::feed`] into a fresh list).
    pub fn events(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.feed(bytes, &mut out);
        out
    }

    /// The events left when the stream ends ([`SseParser::finish`] into a fresh list).
    pub fn rest(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.finish(&mut out);
        out
    }

    /// Bytes held for an unfinished line (for bounds checks by callers).
    pub fn pending(&self) -> usize {
        self.line.len() + self.data.iter().map(String::len).sum::<usize>()
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        if self.line.is_empty() {
            self.dispatch(out);
            return;
        }
        // The line buffer is lent out and given back, so its capacity is reused.
        let line = std::mem::take(&mut self.line);
        self.field(&String::from_utf8_lossy(&line));
        self.line = line;
        self.line.clear();
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => self.data.push(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            "id" => self.id = Some(value.to_string()),
            _ => return,
        }
        self.has_fields = true;
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if !self.has_fields {
            return;
        }
        let data = match self.data.as_mut_slice() {
            [one] => std::mem::take(one),
            more => more.join("\n"),
        };
        out.push(SseEvent {
            event: self.event.take(),
            data,
            id: self.id.take(),
        });
        self.data.clear();
        self.has_fields = false;
    }
}

/// Appends one SSE event (`event:` line when given, one `data:` line per line of data).
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends one SSE event whose data is `data` as JSON, written straight into `out`
/// (serde_json writes no newline, so it is a single `data:` line).
pub fn write_json_event(out: &mut Vec<u8>, event: Option<&str>, data: &impl serde::Serialize) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, data).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out);
        }
        p.finish(&mut out);
        out
    }

    const ANTHROPIC: &str = "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n: ping comment\r\n\r\nevent: content_block_delta\r\ndata: {\"a\":\n\ndata:1\ndata: 2\n\nevent: message_stop\rdata: {}\r\r";

    #[test]
    fn parses_fields_comments_and_line_ends() {
        let events = parse_all(&[ANTHROPIC.as_bytes()]);
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].event.as_deref(), Some("message_start"));
        assert_eq!(events[0].data, "{\"type\":\"message_start\"}");
        assert_eq!(events[1].event.as_deref(), Some("content_block_delta"));
        assert_eq!(events[1].data, "{\"a\":");
        assert_eq!(events[2].event, None);
        assert_eq!(events[2].data, "1\n2");
        assert_eq!(events[3].event.as_deref(), Some("message_stop"));
        assert_eq!(events[3].data, "{}");
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let whole = parse_all(&[ANTHROPIC.as_bytes()]);
        let bytes = ANTHROPIC.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let split = parse_all(&[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(split, whole, "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn byte_by_byte_with_utf8_split_inside_a_character() {
        let text = "data: héllo ✓\n\n";
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        let events = parse_all(&chunks);
        assert_eq!(events[0].data, "héllo ✓");
    }

    #[test]
    fn an_endless_line_is_cut_not_buffered() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let chunk = vec![b'x'; 1 << 20];
        p.feed(b"data: ", &mut out);
        for _ in 0..6 {
            p.feed(&chunk, &mut out);
        }
        assert!(p.pending() <= MAX_LINE);
        assert!(p.overflowed);
        p.feed(b"\n\ndata: ok\n\n", &mut out);
        assert_eq!(out.last().map(|e| e.data.as_str()), Some("ok"));
    }

    #[test]
    fn unterminated_last_event_is_dispatched_at_finish() {
        let events = parse_all(&[b"data: [DONE]"]);
        assert_eq!(
            events,
            vec![SseEvent {
                data: "[DONE]".into(),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn writer_round_trips_through_parser() {
        let mut buf = Vec::new();
        write_event(&mut buf, Some("x"), "a\nb");
        write_event(&mut buf, None, "[DONE]");
        let events = parse_all(&[&buf]);
        assert_eq!(events[0].event.as_deref(), Some("x"));
        assert_eq!(events[0].data, "a\nb");
        assert_eq!(events[1].data, "[DONE]");
    }
}
