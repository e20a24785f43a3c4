//! Small helpers shared by the provider modules: stable ids, data URLs, HTTP status to
//! OpenAI error mapping. Pure and panic-free.

use super::model::{Part, ProviderError};
use super::TranslateError;
use crate::support::hash::fnv1a64;
use serde_json::Value;

/// A stable id for a response that carries none: `prefix` + hex fingerprint of `seed`.
pub(crate) fn stable_id(prefix: &str, seed: &[u8]) -> String {
    format!("{prefix}{:016x}", fnv1a64(seed))
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
    use crate::support::encoding::hex_lower;

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
    fn ids_and_snippets() {
        assert_eq!(stable_id("x-", b"abc"), stable_id("x-", b"abc"));
        assert_ne!(stable_id("x-", b"abc"), stable_id("x-", b"abd"));
        assert_eq!(snippet(b"  hi \n"), "hi");
        assert_eq!(snippet(&[b'a'; 400]).chars().count(), 301);
        assert_eq!(hex_lower(&[0, 0xab, 0xff]), "00abff");
    }
}
