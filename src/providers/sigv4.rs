//! AWS Signature Version 4 (header flavour), over the gateway's own SHA-256 and HMAC-SHA256
//! ([`crate::support::sha256`]) so the .wasm needs no crypto dependency.
//!
//! Steps (AWS "Create a signed AWS API request"):
//! 1. canonical request: method, canonical URI, canonical query, canonical headers,
//!    signed headers, hex SHA-256 of the payload;
//! 2. string to sign: `AWS4-HMAC-SHA256`, `x-amz-date`, credential scope
//!    (`date/region/service/aws4_request`), hex SHA-256 of the canonical request;
//! 3. signing key: HMAC chain `"AWS4"+secret` → date → region → service → `aws4_request`;
//! 4. signature: hex HMAC of the string to sign.
//!
//! Canonical URI: for every service except S3 each path segment is URI-encoded once more
//! on top of the encoding already on the wire ("double encoding"); a Bedrock model id
//! `...-v1:0` travels as `...-v1%3A0` and is signed as `...-v1%253A0`.

use super::AwsCredentials;
use crate::support::calendar::civil_from_days;
use crate::support::encoding::{hex_lower, percent_decode, uri_encode};
use crate::support::sha256::{hmac_sha256, sha256};

// ---------------------------------------------------------------- dates

/// `YYYYMMDDTHHMMSSZ` (the `x-amz-date` format) for a unix time in seconds.
pub fn amz_date(now_unix: u64) -> String {
    let days = (now_unix / 86_400) as i64;
    let secs = now_unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

// ---------------------------------------------------------------- signing

/// The canonical URI of a path as sent on the wire: each segment URI-encoded again
/// (non-S3 double encoding); an empty path is `/`.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    path.split('/')
        .map(|seg| uri_encode(seg, false))
        .collect::<Vec<_>>()
        .join("/")
}

/// The canonical query string: parameters decoded, re-encoded the AWS way, sorted by
/// name then value, joined with `&`.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let raw = percent_decode(s);
                uri_encode(&String::from_utf8_lossy(&raw), false)
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Canonical headers block and signed-headers list: names lower-cased, values trimmed
/// with inner whitespace runs collapsed, duplicates joined with `,`, sorted by name.
pub fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut list: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.trim().to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match list.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => list.push((name, value)),
        }
    }
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let block: String = list.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed = list
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (block, signed)
}

/// The canonical request and the signed-headers list. `headers` are all the headers to
/// sign (including `host` and `x-amz-date`).
pub fn canonical_request(
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    payload_sha256_hex: &str,
) -> (String, String) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let (block, signed) = canonical_headers(headers);
    let creq = format!(
        "{method}\n{}\n{}\n{block}\n{signed}\n{payload_sha256_hex}",
        canonical_uri(path),
        canonical_query(query)
    );
    (creq, signed)
}

/// The string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_lower(&sha256(canonical_request.as_bytes()))
    )
}

/// The SigV4 signing key for a date (`YYYYMMDD`), region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// Signs exactly `headers` (which must include `host` and `x-amz-date`) and returns the
/// `Authorization` header value.
pub fn authorization(
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    payload_sha256_hex: &str,
    creds: &AwsCredentials,
    service: &str,
    amz_date: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{}/{service}/aws4_request", creds.region);
    let (creq, signed) = canonical_request(method, path_and_query, headers, payload_sha256_hex);
    let sts = string_to_sign(amz_date, &scope, &creq);
    let key = signing_key(&creds.secret_access_key, date, &creds.region, service);
    let signature = hex_lower(&hmac_sha256(&key, sts.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    )
}

/// Signs a request. `headers` are extra headers to sign besides the ones this adds
/// (`host`, `x-amz-date`, `x-amz-content-sha256`, and `x-amz-security-token` when the
/// credentials carry a session token). Returns the headers to set on the request:
/// `authorization`, `x-amz-date`, `x-amz-content-sha256` and, with a session token,
/// `x-amz-security-token` (`host` is not returned: the caller already sends it).
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    host: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
    creds: &AwsCredentials,
    service: &str,
    now_unix: u64,
) -> Vec<(String, String)> {
    let date = amz_date(now_unix);
    let payload_hash = hex_lower(&sha256(body));
    let mut added = vec![
        ("x-amz-date".to_string(), date.clone()),
        ("x-amz-content-sha256".to_string(), payload_hash.clone()),
    ];
    if let Some(token) = creds.session_token.as_deref().filter(|t| !t.is_empty()) {
        added.push(("x-amz-security-token".to_string(), token.to_string()));
    }
    let mut to_sign: Vec<(String, String)> = vec![("host".to_string(), host.to_string())];
    to_sign.extend(
        headers
            .iter()
            .filter(|(n, _)| {
                !n.eq_ignore_ascii_case("host")
                    && !added.iter().any(|(a, _)| n.eq_ignore_ascii_case(a))
                    && !n.eq_ignore_ascii_case("authorization")
            })
            .cloned(),
    );
    to_sign.extend(added.iter().cloned());
    let auth = authorization(
        method,
        path_and_query,
        &to_sign,
        &payload_hash,
        creds,
        service,
        &date,
    );
    let mut out = vec![("authorization".to_string(), auth)];
    out.extend(added);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        hex_lower(b)
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(16_677), (2015, 8, 30));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(951_868_799), "20000229T235959Z");
        assert_eq!(amz_date(1_735_689_600), "20250101T000000Z");
    }

    fn example_creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            region: "us-east-1".into(),
        }
    }

    fn suite_headers() -> Vec<(String, String)> {
        vec![
            ("Host".into(), "example.amazonaws.com".into()),
            ("X-Amz-Date".into(), "20150830T123600Z".into()),
        ]
    }

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn aws_test_suite_get_vanilla() {
        let (creq, signed) = canonical_request("GET", "/", &suite_headers(), EMPTY_SHA);
        assert_eq!(
            creq,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "host;x-amz-date");
        let auth = authorization(
            "GET",
            "/",
            &suite_headers(),
            EMPTY_SHA,
            &example_creds(),
            "service",
            "20150830T123600Z",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn aws_test_suite_query_order_and_post_vanilla() {
        let sig = |method: &str, pq: &str| {
            let a = authorization(
                method,
                pq,
                &suite_headers(),
                EMPTY_SHA,
                &example_creds(),
                "service",
                "20150830T123600Z",
            );
            a.rsplit("Signature=")
                .next()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(
            sig("GET", "/?Param2=value2&Param1=value1"),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        assert_eq!(
            sig("POST", "/"),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn canonical_uri_double_encodes_segments() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse"
        );
        assert_eq!(canonical_uri("/a b/c"), "/a%20b/c");
    }

    #[test]
    fn canonical_headers_trim_collapse_and_join() {
        let (block, signed) = canonical_headers(&[
            ("My-Header1".into(), "  a   b   c  ".into()),
            ("host".into(), "h".into()),
            ("my-header1".into(), "d".into()),
        ]);
        assert_eq!(block, "host:h\nmy-header1:a b c,d\n");
        assert_eq!(signed, "host;my-header1");
    }

    #[test]
    fn sign_returns_headers_and_signs_token_and_content_type() {
        let mut creds = example_creds();
        creds.session_token = Some("TOKEN".into());
        let headers = sign(
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/m%3A0/converse",
            &[("content-type".into(), "application/json".into())],
            b"{}",
            &creds,
            "bedrock",
            1_440_938_160,
        );
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("x-amz-date"), "20150830T123600Z");
        assert_eq!(get("x-amz-content-sha256"), hex(&sha256(b"{}")));
        assert_eq!(get("x-amz-security-token"), "TOKEN");
        let auth = get("authorization");
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
             SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
             Signature="
        ));
        // Recompute independently from the primitives.
        let signed_headers: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            (
                "host".into(),
                "bedrock-runtime.us-east-1.amazonaws.com".into(),
            ),
            ("x-amz-content-sha256".into(), hex(&sha256(b"{}"))),
            ("x-amz-date".into(), "20150830T123600Z".into()),
            ("x-amz-security-token".into(), "TOKEN".into()),
        ];
        let expected = authorization(
            "POST",
            "/model/m%3A0/converse",
            &signed_headers,
            &hex(&sha256(b"{}")),
            &creds,
            "bedrock",
            "20150830T123600Z",
        );
        assert_eq!(auth, expected);
        // Without a token there is no token header.
        let plain = sign("POST", "h", "/", &[], b"", &example_creds(), "bedrock", 0);
        assert_eq!(plain.len(), 3);
        assert!(plain.iter().all(|(k, _)| k != "x-amz-security-token"));
    }
}
