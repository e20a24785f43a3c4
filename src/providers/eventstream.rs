//! Incremental decoder for AWS `application/vnd.amazon.eventstream` frames.
//!
//! Frame layout (all integers big-endian):
//! ```text
//! total length u32 | headers length u32 | prelude CRC32 u32   (12-byte prelude)
//! headers: { name len u8, name, value type u8, value }*
//! payload
//! message CRC32 u32 (over everything before it)
//! ```
//! Header value types: 0 true, 1 false (no bytes), 2 byte (1), 3 short (2), 4 int (4),
//! 5 long (8), 6 byte array and 7 string (u16 length + bytes), 8 timestamp (8, ms),
//! 9 uuid (16).
//!
//! [`Decoder::feed`] accepts bytes in any split. A bad CRC, an impossible length or a frame
//! over [`MAX_FRAME`] yields one error and stops the decoder (a byte stream cannot be
//! resynchronised): it never panics and never buffers more than one frame.

/// Largest frame accepted (AWS limits frames to 16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
const PRELUDE: usize = 12;
const MIN_FRAME: usize = PRELUDE + 4;

// ---------------------------------------------------------------- CRC32 (IEEE 802.3)

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE, reflected, polynomial 0xEDB88320) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

// ---------------------------------------------------------------- messages

/// A header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of a string header, e.g. `:event-type`.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// A framing error; the decoder stops after reporting one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

/// Incremental frame decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    failed: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held for an unfinished frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// True once a framing error was reported.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Feeds bytes; pushes every frame (or the first framing error) they complete.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Result<Message, FrameError>>) {
        if self.failed {
            return;
        }
        self.buf.extend_from_slice(bytes);
        let mut pos = 0;
        loop {
            match next_frame(self.buf.get(pos..).unwrap_or_default()) {
                Step::NeedMore => break,
                Step::Frame(msg, len) => {
                    out.push(Ok(msg));
                    pos += len;
                }
                Step::Error(e) => {
                    out.push(Err(e));
                    self.failed = true;
                    self.buf = Vec::new();
                    return;
                }
            }
        }
        self.buf.drain(..pos.min(self.buf.len()));
    }

    /// The stream ended: an unfinished frame is an error.
    pub fn finish(&mut self, out: &mut Vec<Result<Message, FrameError>>) {
        if !self.failed && !self.buf.is_empty() {
            out.push(Err(FrameError(format!(
                "event stream ended inside a frame ({} bytes left over)",
                self.buf.len()
            ))));
            self.failed = true;
            self.buf = Vec::new();
        }
    }
}

enum Step {
    NeedMore,
    Frame(Message, usize),
    Error(FrameError),
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn next_frame(b: &[u8]) -> Step {
    let (Some(total), Some(hlen), Some(prelude_crc)) = (be_u32(b, 0), be_u32(b, 4), be_u32(b, 8))
    else {
        return Step::NeedMore;
    };
    let err = |m: String| Step::Error(FrameError(m));
    let computed = crc32(b.get(..8).unwrap_or_default());
    if computed != prelude_crc {
        return err(format!(
            "event stream prelude CRC mismatch (got {prelude_crc:#010x}, computed {computed:#010x})"
        ));
    }
    let (total, hlen) = (total as usize, hlen as usize);
    if total > MAX_FRAME {
        return err(format!(
            "event stream frame of {total} bytes exceeds the {MAX_FRAME}-byte limit"
        ));
    }
    if total < MIN_FRAME || hlen > total - MIN_FRAME {
        return err(format!(
            "event stream frame has impossible lengths (total {total}, headers {hlen})"
        ));
    }
    let Some(frame) = b.get(..total) else {
        return Step::NeedMore;
    };
    let body_end = total - 4;
    let (Some(msg_crc), Some(covered)) = (be_u32(frame, body_end), frame.get(..body_end)) else {
        return Step::NeedMore;
    };
    let computed = crc32(covered);
    if computed != msg_crc {
        return err(format!(
            "event stream message CRC mismatch (got {msg_crc:#010x}, computed {computed:#010x})"
        ));
    }
    let headers_bytes = frame.get(PRELUDE..PRELUDE + hlen).unwrap_or_default();
    let headers = match parse_headers(headers_bytes) {
        Ok(h) => h,
        Err(e) => return err(e),
    };
    let payload = frame
        .get(PRELUDE + hlen..body_end)
        .unwrap_or_default()
        .to_vec();
    Step::Frame(Message { headers, payload }, total)
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(String, HeaderValue)>, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err(format!("event stream header truncated in {what}"));
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    fn fixed<const N: usize>(b: &mut &[u8], what: &str) -> Result<[u8; N], String> {
        let s = take(b, N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let [name_len] = fixed::<1>(&mut b, "name length")?;
        let name = take(&mut b, usize::from(name_len), "name")?;
        let name = String::from_utf8_lossy(name).into_owned();
        let [kind] = fixed::<1>(&mut b, "value type")?;
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(fixed::<1>(&mut b, "byte")?)),
            3 => HeaderValue::Short(i16::from_be_bytes(fixed::<2>(&mut b, "short")?)),
            4 => HeaderValue::Int(i32::from_be_bytes(fixed::<4>(&mut b, "int")?)),
            5 => HeaderValue::Long(i64::from_be_bytes(fixed::<8>(&mut b, "long")?)),
            6 | 7 => {
                let len = u16::from_be_bytes(fixed::<2>(&mut b, "value length")?);
                let bytes = take(&mut b, usize::from(len), "value")?;
                if kind == 6 {
                    HeaderValue::Bytes(bytes.to_vec())
                } else {
                    HeaderValue::String(String::from_utf8_lossy(bytes).into_owned())
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(fixed::<8>(&mut b, "timestamp")?)),
            9 => HeaderValue::Uuid(fixed::<16>(&mut b, "uuid")?),
            other => {
                return Err(format!(
                    "event stream header `{name}` has unknown type {other}"
                ))
            }
        };
        out.push((name, value));
    }
    Ok(out)
}

/// Builds a frame from headers and a payload (a Bedrock stream re-made for KrakenD's LLM
/// streaming, and tests). Header names and string values must be under 256 and 65536 bytes:
/// the callers' are constants.
pub(crate) fn encode_frame(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        match value {
            HeaderValue::Bool(true) => h.push(0),
            HeaderValue::Bool(false) => h.push(1),
            HeaderValue::Byte(v) => {
                h.push(2);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Short(v) => {
                h.push(3);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                h.push(4);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                h.push(5);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(v) => {
                h.push(6);
                h.extend_from_slice(&(v.len() as u16).to_be_bytes());
                h.extend_from_slice(v);
            }
            HeaderValue::String(v) => {
                h.push(7);
                h.extend_from_slice(&(v.len() as u16).to_be_bytes());
                h.extend_from_slice(v.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                h.push(8);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                h.push(9);
                h.extend_from_slice(v);
            }
        }
    }
    let total = (PRELUDE + h.len() + payload.len() + 4) as u32;
    let mut f = Vec::new();
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let c = crc32(&f);
    f.extend_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&h);
    f.extend_from_slice(payload);
    let c = crc32(&f);
    f.extend_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> Vec<Result<Message, FrameError>> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    fn s(v: &str) -> HeaderValue {
        HeaderValue::String(v.into())
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn aws_documented_empty_frame() {
        // The smallest frame: no headers, no payload. Its prelude CRC is 0x05c248eb and its
        // message CRC 0x7d98c8ff (values from the AWS event stream test vectors).
        let frame = encode_frame(&[], b"");
        assert_eq!(
            frame,
            [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff]
        );
        assert_eq!(decode(&[&frame]), vec![Ok(Message::default())]);
    }

    fn all_types_frame() -> (Vec<u8>, Message) {
        let headers = vec![
            ("t", HeaderValue::Bool(true)),
            ("f", HeaderValue::Bool(false)),
            ("b", HeaderValue::Byte(-2)),
            ("s", HeaderValue::Short(-300)),
            ("i", HeaderValue::Int(70_000)),
            ("l", HeaderValue::Long(-5_000_000_000)),
            ("y", HeaderValue::Bytes(vec![1, 2, 3])),
            (":event-type", s("contentBlockDelta")),
            ("ts", HeaderValue::Timestamp(1_700_000_000_000)),
            ("u", HeaderValue::Uuid([7; 16])),
        ];
        let frame = encode_frame(&headers, b"{\"x\":1}");
        let msg = Message {
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            payload: b"{\"x\":1}".to_vec(),
        };
        (frame, msg)
    }

    #[test]
    fn decodes_every_header_type() {
        let (frame, msg) = all_types_frame();
        let out = decode(&[&frame]);
        assert_eq!(out, vec![Ok(msg.clone())]);
        assert_eq!(msg.header_str(":event-type"), Some("contentBlockDelta"));
        assert_eq!(msg.header_str("i"), None);
    }

    #[test]
    fn every_split_gives_the_same_frames() {
        let (a, _) = all_types_frame();
        let b = encode_frame(&[(":message-type", s("event"))], b"second");
        let stream: Vec<u8> = [a.clone(), b, a].concat();
        let whole = decode(&[&stream]);
        assert_eq!(whole.len(), 3);
        assert!(whole.iter().all(Result::is_ok));
        for i in 0..=stream.len() {
            assert_eq!(decode(&[&stream[..i], &stream[i..]]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode(&bytes), whole);
    }

    #[test]
    fn corrupt_crcs_and_lengths_are_errors_not_panics() {
        let (frame, _) = all_types_frame();
        // Prelude CRC
        let mut bad = frame.clone();
        bad[9] ^= 1;
        let out = decode(&[&bad]);
        assert!(matches!(&out[..], [Err(FrameError(m))] if m.contains("prelude CRC")));
        // Message CRC (flip a payload byte)
        let mut bad = frame.clone();
        let n = bad.len();
        bad[n - 6] ^= 1;
        let out = decode(&[&bad]);
        assert!(matches!(&out[..], [Err(FrameError(m))] if m.contains("message CRC")));
        // Absurd total length, with a valid prelude CRC: error as soon as the prelude is in.
        let mut huge = Vec::new();
        huge.extend_from_slice(&(64u32 * 1024 * 1024).to_be_bytes());
        huge.extend_from_slice(&0u32.to_be_bytes());
        let c = crc32(&huge);
        huge.extend_from_slice(&c.to_be_bytes());
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(&huge, &mut out);
        assert!(matches!(&out[..], [Err(FrameError(m))] if m.contains("exceeds")));
        d.feed(&[0u8; 1000], &mut out);
        assert_eq!(out.len(), 1, "a failed decoder ignores further bytes");
        assert_eq!(d.pending(), 0);
        assert!(d.failed());
        // Headers longer than the frame
        let mut p = Vec::new();
        p.extend_from_slice(&16u32.to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes());
        let c = crc32(&p);
        p.extend_from_slice(&c.to_be_bytes());
        let out = decode(&[&p]);
        assert!(matches!(&out[..], [Err(FrameError(m))] if m.contains("impossible")));
        // A truncated stream
        let out = decode(&[&frame[..frame.len() - 1]]);
        assert!(matches!(&out[..], [Err(FrameError(m))] if m.contains("ended inside")));
    }

    #[test]
    fn malformed_headers_are_errors() {
        // A header claiming a 10-byte string with 2 bytes present, framed with valid CRCs.
        let headers = [1u8, b'x', 7, 0, 10, b'a', b'b'];
        let total = (PRELUDE + headers.len() + 4) as u32;
        let mut f = Vec::new();
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let c = crc32(&f);
        f.extend_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&headers);
        let c = crc32(&f);
        f.extend_from_slice(&c.to_be_bytes());
        let out = decode(&[&f]);
        assert!(matches!(&out[..], [Err(FrameError(m))] if m.contains("truncated")));
        // Unknown type 12
        let headers = [1u8, b'x', 12];
        let total = (PRELUDE + headers.len() + 4) as u32;
        let mut f = Vec::new();
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let c = crc32(&f);
        f.extend_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&headers);
        let c = crc32(&f);
        f.extend_from_slice(&c.to_be_bytes());
        let out = decode(&[&f]);
        assert!(matches!(&out[..], [Err(FrameError(m))] if m.contains("unknown type 12")));
    }
}
