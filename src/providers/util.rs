//! Small helpers shared by the provider modules: stable ids, URI encoding, data URLs,
//! HTTP status to OpenAI error mapping. Pure and panic-free.

use super::model::{Part, ProviderError};
use super::TranslateError;
use serde_json::Value;

/// FNV-1a 64-bit hash: a cheap, deterministic fingerprint (not cryptographic).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A stable id for a response that carries none: `prefix` + hex fingerprint of `seed`.
pub(crate) fn stable_id(prefix: &str, seed: &[u8]) -> String {
    format!("{prefix}{:016x}", fnv1a64(seed))
}

/// AWS-style URI encoding: every byte except `A-Z a-z 0-9 - _ . ~` becomes `%XX`
/// (upper-case hex); `/` is kept when `keep_slash`.
pub(crate) fn uri_encode(s: &str, keep_slash: bool) -> String {
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
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
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
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional, whitespace refused); `None` when malformed.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let t = text.trim_end_matches('=').as_bytes();
    if t.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3 + 2);
    for chunk in t.chunks(4) {
        let mut n = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * k as u32);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(bytes.get(..chunk.len().saturating_sub(1))?);
    }
    Some(out)
}

/// A `data:<mime>;base64,<data>` URL split into its media type and base64 data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataUrl<'a> {
    pub mime: &'a str,
    pub base64: &'a str,
}

/// Parses a base64 `data:` URL. `Ok(None)` for a URL that is not a `data:` URL;
/// `Err` for a `data:` URL that is not base64 or lacks a media type.
pub(crate) fn parse_data_url(url: &str) -> Result<Option<DataUrl<'_>>, String> {
    let Some(rest) = strip_prefix_ignore_case(url, "data:") else {
        return Ok(None);
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err("malformed data: URL (no comma before the data)".into());
    };
    let mut params = meta.split(';');
    let mime = params.next().unwrap_or("").trim();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err("data: URL images must be base64-encoded (`;base64,`)".into());
    }
    if mime.is_empty() {
        return Err("data: URL has no media type (expected e.g. data:image/png;base64,...)".into());
    }
    Ok(Some(DataUrl {
        mime,
        base64: data.trim(),
    }))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Guesses an image media type from a URL's file extension (query and fragment ignored).
pub(crate) fn guess_image_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|file| file.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

/// The text parts of a message joined together (images ignored).
pub(crate) fn joined_text(parts: &[Part]) -> String {
    let mut s = String::new();
    for p in parts {
        if let Part::Text(t) = p {
            s.push_str(t);
        }
    }
    s
}

/// The start of a body as text, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let mut s: String = text.chars().take(MAX).collect();
    s.push('…');
    s
}

/// Maps a provider's HTTP error to OpenAI's vocabulary. `provider` names the provider in
/// messages ("Gemini", "Bedrock"); `code` keeps the provider's own status/type string.
///
/// 400 → 400 `invalid_request_error`; 401/403 → 502 `server_error` (the provider rejected
/// the gateway's credentials, which the client cannot fix); 404 → 404 `not_found_error`;
/// 429 → 429 `rate_limit_error`; other 4xx → same status, `invalid_request_error`;
/// 5xx (and anything else) → `server_error` (5xx keeps its status, others become 502).
pub(crate) fn map_error(
    provider: &str,
    status: u16,
    message: String,
    code: Option<String>,
) -> ProviderError {
    let (status, kind, message) = match status {
        401 | 403 => (
            502,
            "server_error",
            format!("{provider} rejected the gateway's credentials (HTTP {status}): {message}"),
        ),
        400 => (400, "invalid_request_error", message),
        404 => (404, "not_found_error", message),
        429 => (429, "rate_limit_error", message),
        402..=499 => (status, "invalid_request_error", message),
        500..=599 => (status, "server_error", message),
        _ => (502, "server_error", message),
    };
    ProviderError {
        status,
        kind: kind.to_string(),
        message,
        code,
    }
}

/// `response_format` for providers with no JSON mode (Anthropic, Bedrock Converse): an
/// instruction for the system prompt (`json_schema`: the schema verbatim), none for `text`.
pub(crate) fn format_instruction(
    rf: &Value,
    provider: &str,
) -> Result<Option<String>, TranslateError> {
    match rf.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(
            "Respond only with a single valid JSON object, with no text before or after it."
                .to_string(),
        )),
        Some("json_schema") => {
            let schema = rf
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
            Ok(Some(format!(
                "Respond only with a single valid JSON value, with no text before or after it, that conforms to this JSON Schema:\n{schema}"
            )))
        }
        Some(other) => Err(TranslateError(format!(
            "response_format.type: \"{other}\" cannot be expressed for {provider}"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

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
    fn data_urls() {
        assert_eq!(
            parse_data_url("data:image/png;base64,iVBORw0KGgo="),
            Ok(Some(DataUrl {
                mime: "image/png",
                base64: "iVBORw0KGgo="
            }))
        );
        assert_eq!(parse_data_url("https://x/y.png"), Ok(None));
        assert!(parse_data_url("data:image/png,rawdata").is_err());
        assert!(parse_data_url("data:;base64,AAAA").is_err());
        assert!(parse_data_url("data:image/png;base64").is_err());
        assert!(parse_data_url("d").is_ok());
    }

    #[test]
    fn mime_guessing() {
        assert_eq!(
            guess_image_mime("https://x.org/a/b.PNG?x=1.gif"),
            "image/png"
        );
        assert_eq!(guess_image_mime("https://x.org/a.webp#f"), "image/webp");
        assert_eq!(guess_image_mime("https://x.org/photo"), "image/jpeg");
        assert_eq!(guess_image_mime("https://x.org/a.jpg"), "image/jpeg");
    }

    #[test]
    fn error_mapping_table() {
        let cases = [
            (400, 400, "invalid_request_error"),
            (401, 502, "server_error"),
            (403, 502, "server_error"),
            (404, 404, "not_found_error"),
            (413, 413, "invalid_request_error"),
            (429, 429, "rate_limit_error"),
            (500, 500, "server_error"),
            (503, 503, "server_error"),
            (200, 502, "server_error"),
        ];
        for (input, status, kind) in cases {
            let e = map_error("P", input, "m".into(), Some("C".into()));
            assert_eq!(
                (e.status, e.kind.as_str()),
                (status, kind),
                "status {input}"
            );
            assert_eq!(e.code.as_deref(), Some("C"));
        }
        let e = map_error("Bedrock", 403, "bad sig".into(), None);
        assert_eq!(
            e.message,
            "Bedrock rejected the gateway's credentials (HTTP 403): bad sig"
        );
    }

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

    #[test]
    fn ids_and_snippets() {
        assert_eq!(stable_id("x-", b"abc"), stable_id("x-", b"abc"));
        assert_ne!(stable_id("x-", b"abc"), stable_id("x-", b"abd"));
        assert_eq!(snippet(b"  hi \n"), "hi");
        assert_eq!(snippet(&[b'a'; 400]).chars().count(), 301);
        assert_eq!(hex_lower(&[0, 0xab, 0xff]), "00abff");
    }
}
