//! AWS event stream binary framing (`application/vnd.amazon.eventstream`), as used by
//! Bedrock `converse-stream`.
//!
//! Frame layout (all integers big-endian):
//!
//! ```text
//! total_len:u32 | headers_len:u32 | prelude_crc:u32 | headers | payload | message_crc:u32
//! ```
//!
//! `prelude_crc` is the CRC32 (IEEE) of the first 8 bytes, `message_crc` the CRC32 of
//! everything before it. Each header is `name_len:u8 | name | type:u8 | value`; only
//! string headers (type 7: `len:u16 | utf8`) are produced here.

/// The mock frames with the gateway's own CRC32 (tested there against the IEEE vectors).
pub use tollgate::providers::eventstream::crc32;

/// Header value type tag for strings.
const TYPE_STRING: u8 = 7;

/// Encodes one event stream message with string headers.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let headers_len: usize = headers
        .iter()
        .map(|(n, v)| 1 + n.len().min(255) + 1 + 2 + v.len().min(65535))
        .sum();
    let total = 12 + headers_len + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(headers_len as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(255)];
        let value = &value.as_bytes()[..value.len().min(65535)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.push(TYPE_STRING);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// An `event` message as Bedrock sends it: `:event-type`, `:content-type`, `:message-type`.
pub fn event(event_type: &str, json: &[u8]) -> Vec<u8> {
    frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        json,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod tests {
    use super::*;

    /// Decoded frame: string headers and payload. Verifies both CRCs.
    pub fn decode(buf: &[u8]) -> (Vec<(String, String)>, Vec<u8>, usize) {
        let total = u32::from_be_bytes(buf[0..4].try_into().unwrap()) as usize;
        let hlen = u32::from_be_bytes(buf[4..8].try_into().unwrap()) as usize;
        let pcrc = u32::from_be_bytes(buf[8..12].try_into().unwrap());
        assert_eq!(pcrc, crc32(&buf[0..8]), "prelude crc");
        let mcrc = u32::from_be_bytes(buf[total - 4..total].try_into().unwrap());
        assert_eq!(mcrc, crc32(&buf[..total - 4]), "message crc");
        let mut headers = Vec::new();
        let mut i = 12;
        while i < 12 + hlen {
            let nl = buf[i] as usize;
            let name = String::from_utf8(buf[i + 1..i + 1 + nl].to_vec()).unwrap();
            i += 1 + nl;
            assert_eq!(buf[i], 7);
            let vl = u16::from_be_bytes(buf[i + 1..i + 3].try_into().unwrap()) as usize;
            let value = String::from_utf8(buf[i + 3..i + 3 + vl].to_vec()).unwrap();
            i += 3 + vl;
            headers.push((name, value));
        }
        assert_eq!(i, 12 + hlen);
        (headers, buf[i..total - 4].to_vec(), total)
    }

    #[test]
    fn crc32_known_vectors() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn empty_frame_matches_aws_test_vector() {
        // AWS event stream test suite "empty_message": 16 bytes, prelude crc 0x05c248eb,
        // message crc 0x7d98c8ff.
        let f = frame(&[], b"");
        assert_eq!(
            f,
            vec![
                0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98,
                0xc8, 0xff
            ]
        );
    }

    #[test]
    fn event_frame_round_trips() {
        let f = event("contentBlockDelta", br#"{"delta":{"text":"Hi"}}"#);
        let (headers, payload, total) = decode(&f);
        assert_eq!(total, f.len());
        assert_eq!(
            headers,
            vec![
                (":event-type".to_string(), "contentBlockDelta".to_string()),
                (":content-type".to_string(), "application/json".to_string()),
                (":message-type".to_string(), "event".to_string()),
            ]
        );
        assert_eq!(payload, br#"{"delta":{"text":"Hi"}}"#);
    }
}
