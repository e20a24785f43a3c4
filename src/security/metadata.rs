//! The JWT payloads Envoy's `jwt_authn` verified, read from the request's dynamic metadata:
//! something no client can write (unlike a header).
//!
//! `jwt_authn` with `payload_in_metadata: <name>` stores each verified payload as a
//! `google.protobuf.Struct` under `filter_metadata["envoy.filters.http.jwt_authn"][<name>]`.
//! The Wasm host gives the whole dynamic metadata (property `metadata`) as a serialized
//! `envoy.config.core.v3.Metadata` message (measured with Envoy 1.40; a deeper property
//! path comes back in proxy-wasm's pair encoding, which loses the types). This decodes the
//! few protobuf messages involved into JSON:
//! - `Metadata { map<string, Struct> filter_metadata = 1; ... }`
//! - `Struct { map<string, Value> fields = 1; }` (a map entry: key = 1, value = 2)
//! - `Value { oneof: null_value = 1, number_value = 2 (double), string_value = 3,
//!   bool_value = 4, struct_value = 5, list_value = 6 }`, `ListValue { repeated Value values = 1; }`

use serde_json::{Map, Number, Value};

/// The `filter_metadata` namespace `jwt_authn` writes to.
pub const JWT_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// Nesting of structs and lists followed at most (a payload is a few levels deep).
const MAX_DEPTH: usize = 32;

/// The payload `jwt_authn` verified and stored under `key`, as JSON. None when there is none
/// (no token verified for that provider) or the metadata cannot be read.
pub fn jwt_payload(metadata: &[u8], key: &str) -> Option<Value> {
    let mut found = None;
    fields(metadata, |n, f| {
        if let (1, Field::Bytes(entry)) = (n, f) {
            if let Some((ns, Field::Bytes(st))) = map_entry(entry)? {
                if ns == JWT_NAMESPACE {
                    if let Value::Object(mut m) = decode_struct(st, 0)? {
                        found = m.remove(key).or(found.take());
                    }
                }
            }
        }
        Some(())
    })?;
    found.filter(Value::is_object)
}

/// One field of a protobuf message.
#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32,
    Bytes(&'a [u8]),
}

/// Calls `f` with every field of a message, in order. None when the bytes are malformed
/// (or `f` gave up).
fn fields<'a>(mut b: &'a [u8], mut f: impl FnMut(u32, Field<'a>) -> Option<()>) -> Option<()> {
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let number = u32::try_from(key >> 3).ok()?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut b)?),
            1 => {
                let (v, rest) = b.split_first_chunk::<8>()?;
                b = rest;
                Field::Fixed64(*v)
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                let v = b.get(..len)?;
                b = b.get(len..)?;
                Field::Bytes(v)
            }
            5 => {
                b = b.get(4..)?;
                Field::Fixed32
            }
            _ => return None,
        };
        f(number, field)?;
    }
    Some(())
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A map entry: its string key and its value field. None when malformed; Some(None) when
/// the key is not UTF-8 or the value is missing.
fn map_entry(entry: &[u8]) -> Option<Option<(&str, Field<'_>)>> {
    let (mut key, mut value) = (None, None);
    fields(entry, |n, f| {
        match (n, f) {
            (1, Field::Bytes(k)) => key = std::str::from_utf8(k).ok(),
            (2, v) => value = Some(v),
            _ => {}
        }
        Some(())
    })?;
    Some(key.zip(value))
}

fn decode_struct(b: &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut m = Map::new();
    fields(b, |n, f| {
        if let (1, Field::Bytes(entry)) = (n, f) {
            if let Some((k, Field::Bytes(v))) = map_entry(entry)? {
                m.insert(k.to_string(), decode_value(v, depth + 1)?);
            }
        }
        Some(())
    })?;
    Some(Value::Object(m))
}

fn decode_value(b: &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut out = Value::Null;
    fields(b, |n, f| {
        out = match (n, f) {
            (1, _) => Value::Null,
            (2, Field::Fixed64(d)) => number(f64::from_le_bytes(d)),
            (3, Field::Bytes(s)) => Value::String(std::str::from_utf8(s).ok()?.to_string()),
            (4, Field::Varint(v)) => Value::Bool(v != 0),
            (5, Field::Bytes(s)) => decode_struct(s, depth + 1)?,
            (6, Field::Bytes(l)) => {
                let mut items = Vec::new();
                fields(l, |n, f| {
                    if let (1, Field::Bytes(v)) = (n, f) {
                        items.push(decode_value(v, depth + 1)?);
                    }
                    Some(())
                })?;
                Value::Array(items)
            }
            _ => return Some(()), // an unknown field: skipped
        };
        Some(())
    })?;
    Some(out)
}

/// A protobuf double as JSON: whole numbers (a `uid` claim, `exp`) as integers.
fn number(d: f64) -> Value {
    if d.fract() == 0.0 && d.abs() < 9_007_199_254_740_992.0 {
        Value::Number(Number::from(d as i64))
    } else {
        Number::from_f64(d).map_or(Value::Null, Value::Number)
    }
}

/// Serializes JSON claims as `jwt_authn` stores them (tests and the fuzz harness build
/// the `metadata` property with it).
#[cfg(any(test, feature = "mock"))]
pub fn encode_jwt_metadata(payloads: &[(&str, &Value)]) -> Vec<u8> {
    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        put_varint(out, field << 3 | 2);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        put_bytes(&mut e, 1, key.as_bytes());
        put_bytes(&mut e, 2, value);
        e
    }
    fn strukt(m: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in m {
            put_bytes(&mut out, 1, &entry(k, &value(v)));
        }
        out
    }
    fn value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => put_varint(&mut out, 1 << 3),
            Value::Number(n) => {
                put_varint(&mut out, 2 << 3 | 1);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
            Value::String(s) => put_bytes(&mut out, 3, s.as_bytes()),
            Value::Bool(b) => {
                put_varint(&mut out, 4 << 3);
                put_varint(&mut out, u64::from(*b));
            }
            Value::Object(m) => put_bytes(&mut out, 5, &strukt(m)),
            Value::Array(a) => {
                let mut l = Vec::new();
                for item in a {
                    put_bytes(&mut l, 1, &value(item));
                }
                put_bytes(&mut out, 6, &l);
            }
        }
        if matches!(v, Value::Null) {
            put_varint(&mut out, 0);
        }
        out
    }
    let mut jwt = Map::new();
    for (k, v) in payloads {
        jwt.insert((*k).to_string(), (*v).clone());
    }
    let mut out = Vec::new();
    put_bytes(&mut out, 1, &entry(JWT_NAMESPACE, &strukt(&jwt)));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What Envoy 1.40 returned for the `metadata` property after `jwt_authn` verified a
    /// token with `payload_in_metadata: p0` (captured from a probe filter's log); payload
    /// `{"iss":"iss-a","sub":"u1","roles":["dev","admin"],"scope":"a b","exp":1796145017,
    /// "aud":["x","y"],"n":3,"nested":{"k":[1,"two",true]}}`.
    const ENVOY_METADATA: &str = "0adc010a1c656e766f792e66696c746572732e687474702e6a77745f617574686e12bb010ab8010a02703012b1012aae010a2b0a066e657374656412212a1f0a1d0a016b121832160a0911000000000000f03f0a051a0374776f0a0220010a0e0a0573636f706512051a036120620a130a03617564120c320a0a031a01780a031a01790a0e0a0369737312071a056973732d610a100a03657870120911000040debfc3da410a0b0a0373756212041a0275310a0e0a016e12091100000000000008400a1b0a05726f6c6573121232100a051a036465760a071a0561646d696e";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn reads_what_envoy_wrote() {
        let got = jwt_payload(&unhex(ENVOY_METADATA), "p0").unwrap();
        assert_eq!(
            got,
            json!({"iss": "iss-a", "sub": "u1", "roles": ["dev", "admin"], "scope": "a b",
                   "exp": 1796145017, "aud": ["x", "y"], "n": 3, "nested": {"k": [1, "two", true]}})
        );
        assert_eq!(jwt_payload(&unhex(ENVOY_METADATA), "p1"), None);
    }

    #[test]
    fn round_trips_and_refuses_garbage() {
        let a =
            json!({"roles": ["admin"], "x": null, "f": 1.5, "neg": -2, "deep": {"a": {"b": [[]]}}});
        let b = json!({"roles": ["user"]});
        let m = encode_jwt_metadata(&[("tollgate_endpoint_0", &a), ("tollgate_endpoint_1", &b)]);
        assert_eq!(jwt_payload(&m, "tollgate_endpoint_0"), Some(a));
        assert_eq!(jwt_payload(&m, "tollgate_endpoint_1"), Some(b));
        assert_eq!(jwt_payload(&m, "tollgate_endpoint_2"), None);
        // A payload that is not an object is no payload.
        let s = encode_jwt_metadata(&[("k", &json!("text"))]);
        assert_eq!(jwt_payload(&s, "k"), None);
        // Truncated at every byte, or bit-flipped: never a panic.
        let full = unhex(ENVOY_METADATA);
        for cut in 0..full.len() {
            let _ = jwt_payload(&full[..cut], "p0");
            let mut flipped = full.clone();
            flipped[cut] ^= 0x5a;
            let _ = jwt_payload(&flipped, "p0");
        }
        // Nesting past the limit is refused, not followed.
        let mut deep = json!("x");
        for _ in 0..100 {
            deep = json!([deep]);
        }
        let m = encode_jwt_metadata(&[("k", &json!({ "d": deep }))]);
        assert_eq!(jwt_payload(&m, "k"), None);
        assert_eq!(jwt_payload(&[], "k"), None);
        assert_eq!(jwt_payload(&[0xff; 11], "k"), None);
    }
}
