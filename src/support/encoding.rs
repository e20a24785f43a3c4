//! Byte encodings: percent-encoding (AWS's URI rules, and three decoders for the three places
//! that read one), hex, base64 (standard alphabet, as configurations and providers carry it).

/// AWS-style URI encoding: every byte except `A-Z a-z 0-9 - _ . ~` becomes `%XX`
/// (upper-case hex); `/` is kept when `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_upper(b >> 4));
            out.push(hex_upper(b & 0x0f));
        }
    }
    out
}

fn hex_upper(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

/// Decodes `%XX` escapes (and nothing else); malformed escapes are kept literally.
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hi = b.get(i + 1).and_then(|&h| char::from(h).to_digit(16));
            let lo = b.get(i + 2).and_then(|&l| char::from(l).to_digit(16));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Lower-case hex of bytes.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// One round of percent-decoding; None on a malformed escape.
pub fn percent_decode_strict(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |at: usize| b.get(at).and_then(|h| (*h as char).to_digit(16));
            let (hi, lo) = (hex(i + 1)?, hex(i + 2)?);
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(out)
}

/// Decodes a form value or name (`application/x-www-form-urlencoded`): `%XX` escapes (a
/// malformed one kept as written) and `+` as a space; lossy where the result is not UTF-8 (a
/// query parameter name that is not matches no list entry).
pub fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |at: usize| b.get(at).and_then(|h| char::from(*h).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes base64 (standard alphabet, padded).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, b)| a | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            let c = ALPHABET.get((n >> (18 - 6 * i) & 63) as usize).copied();
            out.push(if i <= chunk.len() {
                c.map_or('=', char::from)
            } else {
                '='
            });
        }
    }
    out
}

/// Decodes base64url (RFC 4648 §5, `-` and `_`; the standard `+` and `/` too), padded or not:
/// a JWT's parts.
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    base64_decode(&s.replace('-', "+").replace('_', "/"))
}

/// Decodes standard base64 (RFC 4648 §4, `+` and `/`), padded or not; ASCII whitespace (line
/// breaks in a configuration value) is skipped. None on any other character or a dangling
/// sextet.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let data = s.trim_end_matches(|c: char| c == '=' || c.is_ascii_whitespace());
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in data.bytes().filter(|c| !c.is_ascii_whitespace()) {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 2 or 4 bits left over are padding; 6 are a sextet that encodes no byte.
    (bits < 6).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert_eq!(base64_decode("Zm9v!"), None);
        assert_eq!(base64_decode("Z"), None);
    }

    /// One form decoder for API-key query parameters and forwarded query names: a sign is
    /// not a hex digit (`u8::from_str_radix` would read `%+f` as an escape).
    #[test]
    fn form_values_and_names() {
        assert_eq!(form_decode("a%20b+c%2Fd"), "a b c/d");
        assert_eq!(form_decode("%+f%4"), "% f%4");
        assert_eq!(form_decode("k%C3%A9y"), "k\u{e9}y");
        assert_eq!(form_decode("%FF"), "\u{fffd}");
    }

    #[test]
    fn uri_encoding_follows_aws_rules() {
        assert_eq!(uri_encode("a-b_c.d~e", false), "a-b_c.d~e");
        assert_eq!(
            uri_encode("anthropic.claude-3-5-sonnet-20240620-v1:0", false),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
        assert_eq!(uri_encode("a/b c", false), "a%2Fb%20c");
        assert_eq!(uri_encode("a/b c", true), "a/b%20c");
        assert_eq!(uri_encode("é", false), "%C3%A9");
        assert_eq!(uri_encode("%3A", false), "%253A");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Ab%2f"), b"a:b/");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
    }

    #[test]
    fn base64_decodes_padded_unpadded_and_refuses_junk() {
        // KrakenD's martian example: {"msg":"you rock!"}
        assert_eq!(
            base64_decode("eyJtc2ciOiJ5b3Ugcm9jayEifQ==").unwrap(),
            br#"{"msg":"you rock!"}"#
        );
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8", "fo"),
            ("Zm9v", "foo"),
            ("Zm9v\nYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), dec.as_bytes(), "{enc}");
        }
        assert_eq!(base64_decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        for bad in ["Zm9v!", "Z", "Zm9vY", "Zm-_"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
        // base64url: a JWT's alphabet.
        assert_eq!(base64url_decode("-_-_"), base64_decode("+/+/"));
        for text in ["", "h", "he", "hel", "hell", "hello", "{{ .req_body }}\n"] {
            let e = base64_encode(text.as_bytes());
            assert_eq!(e.len() % 4, 0);
            assert_eq!(base64_decode(&e).as_deref(), Some(text.as_bytes()), "{e}");
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }
}
