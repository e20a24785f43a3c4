//! AWS Signature Version 4 (header flavour), with its own SHA-256 and HMAC-SHA256 so the
//! .wasm needs no crypto dependency.
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

use super::util::{hex_lower, percent_decode, uri_encode};
use super::AwsCredentials;

// ---------------------------------------------------------------- SHA-256 (FIPS 180-4)

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    let mut w = [0u32; 64];
    for (i, word) in block.chunks_exact(4).enumerate().take(16) {
        w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16]
            .wrapping_add(s0)
            .wrapping_add(w[i - 7])
            .wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for i in 0..64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(K[i])
            .wrapping_add(w[i]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        h = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut state = H0;
    let mut chunks = data.chunks_exact(64);
    for chunk in &mut chunks {
        let mut block = [0u8; 64];
        block.copy_from_slice(chunk);
        compress(&mut state, &block);
    }
    // Padding: 0x80, zeros, then the bit length as u64 BE; one or two final blocks.
    let rest = chunks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 56 { 64 } else { 128 };
    let bits = (data.len() as u64).wrapping_mul(8);
    tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_be_bytes());
    for block in tail[..tail_len].chunks_exact(64) {
        let mut b = [0u8; 64];
        b.copy_from_slice(block);
        compress(&mut state, &b);
    }
    let mut out = [0u8; 32];
    for (o, s) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&s.to_be_bytes());
    }
    out
}

/// HMAC-SHA256 (RFC 2104) of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Vec::with_capacity(64 + data.len());
    inner.extend(k.iter().map(|b| b ^ 0x36));
    inner.extend_from_slice(data);
    let inner_hash = sha256(&inner);
    let mut outer = Vec::with_capacity(96);
    outer.extend(k.iter().map(|b| b ^ 0x5c));
    outer.extend_from_slice(&inner_hash);
    sha256(&outer)
}

// ---------------------------------------------------------------- dates

/// Civil date (year, month 1-12, day 1-31) from days since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's era-based algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

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
    fn sha256_fips_vectors() {
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            hex(&sha256(&million_a)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn sha256_padding_edges() {
        // Lengths around the 55/56/64-byte padding boundaries must not panic and must
        // differ from each other.
        let mut seen = std::collections::HashSet::new();
        for n in 50..=130 {
            assert!(seen.insert(sha256(&vec![b'x'; n])), "collision at {n}");
        }
    }

    #[test]
    fn hmac_rfc4231_vectors() {
        // Test case 1
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 3
        assert_eq!(
            hex(&hmac_sha256(&[0xaa; 20], &[0xdd; 50])),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
        );
        // Test case 6: key longer than the block size
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
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
