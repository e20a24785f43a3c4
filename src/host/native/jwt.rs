//! The JWT payloads `jwt_authn` verified, for the native host. The pipeline reads them from
//! Envoy's dynamic metadata as a serialized `envoy.config.core.v3.Metadata` (the wasm host's
//! `metadata` property; [`crate::security::metadata`] decodes it). The dynamic-module ABI
//! reads metadata values only as strings, numbers and booleans, not a payload's `Struct`,
//! so the native bootstrap also has `jwt_authn` forward each verified payload in a request
//! header of its own ([`header`]: base64url JSON), which the native host takes off the
//! request before the pipeline runs and hands over as the same serialized `Metadata`
//! ([`metadata`]).
//!
//! A client cannot plant such a header: the generated bootstrap removes every one of them
//! before any filter runs (an early header mutation, like the routing header), and the host
//! takes a payload only for a provider `jwt_authn` recorded a verified token for in this
//! request's dynamic metadata, and only when the header has exactly one value.

use serde_json::Value;

/// Prefix of the request header `jwt_authn` forwards a provider's verified payload in.
pub const HEADER_PREFIX: &str = "x-tollgate-jwt-";

/// The payload header of a `jwt_authn` provider (`tollgate_endpoint_3`).
pub fn header(provider: &str) -> String {
    format!("{HEADER_PREFIX}{}", provider.replace('_', "-"))
}

/// A forwarded payload: base64url (padded or not) JSON object.
pub fn decode_payload(b64: &str) -> Option<Value> {
    let bytes = base64url(b64.trim())?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.is_object().then_some(v)
}

fn base64url(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `Metadata { filter_metadata: { <namespace>: Struct { <provider>: payload } } }`,
/// serialized, for the payloads given as (provider, payload).
pub fn metadata(namespace: &str, payloads: &[(String, Value)]) -> Vec<u8> {
    let mut fields = Vec::new();
    for (provider, payload) in payloads {
        entry(&mut fields, provider, &value(payload, 0));
    }
    let mut st = Vec::new();
    // Struct.fields (1): the entries.
    st.extend(fields);
    let mut ns_entry = Vec::new();
    bytes_field(&mut ns_entry, 1, namespace.as_bytes());
    bytes_field(&mut ns_entry, 2, &st);
    let mut out = Vec::new();
    // Metadata.filter_metadata (1): one map entry.
    bytes_field(&mut out, 1, &ns_entry);
    out
}

/// Nesting followed at most (deeper values become null).
const MAX_DEPTH: usize = 32;

/// A `google.protobuf.Value`.
fn value(v: &Value, depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if depth > MAX_DEPTH {
        varint_field(&mut out, 1, 0);
        return out;
    }
    match v {
        Value::Null => varint_field(&mut out, 1, 0),
        Value::Number(n) => {
            out.push(2 << 3 | 1);
            out.extend(n.as_f64().unwrap_or(0.0).to_le_bytes());
        }
        Value::String(s) => bytes_field(&mut out, 3, s.as_bytes()),
        Value::Bool(b) => varint_field(&mut out, 4, u64::from(*b)),
        Value::Object(m) => {
            let mut st = Vec::new();
            for (k, v) in m {
                entry(&mut st, k, &value(v, depth + 1));
            }
            bytes_field(&mut out, 5, &st);
        }
        Value::Array(a) => {
            let mut list = Vec::new();
            for v in a {
                bytes_field(&mut list, 1, &value(v, depth + 1));
            }
            bytes_field(&mut out, 6, &list);
        }
    }
    out
}

/// A `map<string, Value>` entry (field 1 of its message).
fn entry(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let mut e = Vec::new();
    bytes_field(&mut e, 1, key.as_bytes());
    bytes_field(&mut e, 2, value);
    bytes_field(out, 1, &e);
}

fn bytes_field(out: &mut Vec<u8>, number: u64, b: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn varint_field(out: &mut Vec<u8>, number: u64, v: u64) {
    varint(out, number << 3);
    varint(out, v);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::security::metadata::{jwt_payload, JWT_NAMESPACE};
    use serde_json::json;

    #[test]
    fn payloads_read_back_through_the_pipelines_decoder() {
        let p0 = json!({"iss": "https://issuer", "aud": ["a", "b"], "exp": 1_700_000_000,
            "roles": ["admin"], "nested": {"team": {"id": 7, "ok": true, "none": null}}});
        let p3 = json!({"sub": "svc"});
        let m = metadata(
            JWT_NAMESPACE,
            &[
                ("tollgate_endpoint_0".into(), p0.clone()),
                ("tollgate_endpoint_3".into(), p3.clone()),
            ],
        );
        assert_eq!(jwt_payload(&m, "tollgate_endpoint_0"), Some(p0));
        assert_eq!(jwt_payload(&m, "tollgate_endpoint_3"), Some(p3));
        assert_eq!(jwt_payload(&m, "tollgate_endpoint_1"), None);
        // Another namespace is not jwt_authn's.
        let other = metadata("x", &[("tollgate_endpoint_0".into(), json!({"a": 1}))]);
        assert_eq!(jwt_payload(&other, "tollgate_endpoint_0"), None);
    }

    #[test]
    fn forwarded_payloads_decode_padded_or_not() {
        // {"sub":"1234567890","admin":true} in base64url, without and with padding.
        let raw = "eyJzdWIiOiIxMjM0NTY3ODkwIiwiYWRtaW4iOnRydWV9";
        let want = json!({"sub": "1234567890", "admin": true});
        assert_eq!(decode_payload(raw), Some(want.clone()));
        assert_eq!(decode_payload(&format!("{raw}=")), Some(want.clone()));
        // base64url alphabet: '-' and '_' ({"a":"?>?"} has both kinds of 62/63 digits).
        assert_eq!(decode_payload("eyJhIjoiPz4_In0"), Some(json!({"a": "?>?"})));
        for bad in ["", "not base64!", "W10", "bnVsbA"] {
            // not base64, [], null: only objects are payloads
            assert_eq!(decode_payload(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_names_are_per_provider() {
        assert_eq!(
            header("tollgate_endpoint_3"),
            "x-tollgate-jwt-tollgate-endpoint-3"
        );
    }
}
