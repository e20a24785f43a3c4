//! Header maps read whole from the host and kept in step with the filter's own changes
//! (the `wasm` host caches them to save hostcalls); plain Rust, tested here.

use crate::routing::CLUSTER_HEADER;

/// A header map as read from Envoy (names lowercase), in order, duplicates kept.
pub type Headers = Vec<(String, String)>;

/// proxy-wasm map serialization: count, then (name length, value length) pairs, then the
/// NUL-terminated names and values. None when malformed.
pub fn decode_pairs(b: &[u8]) -> Option<Headers> {
    let word = |at: usize| -> Option<usize> {
        let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(w) as usize)
    };
    if b.is_empty() {
        return Some(Vec::new());
    }
    let n = word(0)?;
    let mut out = Vec::with_capacity(n.min(256));
    let mut p = 4usize.checked_add(n.checked_mul(8)?)?;
    for i in 0..n {
        let (kl, vl) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let k = b.get(p..p.checked_add(kl)?)?;
        p += kl + 1;
        let v = b.get(p..p.checked_add(vl)?)?;
        p += vl + 1;
        out.push((
            String::from_utf8_lossy(k).to_ascii_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Some(out)
}

/// Applies a set (Some) or removal (None) to a cached map, as Envoy does to the real one.
pub fn cache_set(map: &mut Headers, name: &str, value: Option<&str>) {
    map.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    if let Some(v) = value {
        map.push((name.to_ascii_lowercase(), v.to_string()));
    }
}

/// Whether setting `name` to `value` would change nothing in the cached map: a removal of
/// an absent header, or the header's only value already being `value`. The cluster header
/// is always set (that write is what makes Envoy route the request); removing it when it is
/// absent (the filter does so first thing on every request) changes nothing.
pub fn unchanged(map: &Headers, name: &str, value: Option<&str>) -> bool {
    if name == CLUSTER_HEADER && value.is_some() {
        return false;
    }
    let mut found = map.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
    match (value, found.next(), found.next()) {
        (None, None, _) => true,
        (Some(v), Some((_, old)), None) => old == v,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend((k.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend(*k);
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn decodes_pairs_in_order_with_duplicates_and_non_utf8_values() {
        let b = encode(&[
            (b":path", b"/v1/x"),
            (b"X-A", b"1"),
            (b"x-a", b"2"),
            (b"cookie", b"caf\xe9"),
        ]);
        let m = decode_pairs(&b).unwrap();
        assert_eq!(m[0], (":path".to_string(), "/v1/x".to_string()));
        assert_eq!(m[1], ("x-a".to_string(), "1".to_string()));
        assert_eq!(m[2], ("x-a".to_string(), "2".to_string()));
        assert_eq!(m[3].1, "caf\u{fffd}");
        assert_eq!(decode_pairs(&[]).unwrap(), Vec::new());
    }

    #[test]
    fn malformed_maps_are_refused_not_panicking() {
        let b = encode(&[(b"a", b"b")]);
        for cut in 1..b.len() - 1 {
            assert!(decode_pairs(&b[..cut]).is_none(), "cut at {cut}");
        }
        assert!(decode_pairs(&[255, 255, 255, 255]).is_none());
    }

    #[test]
    fn sets_that_change_nothing_are_recognised() {
        let mut m: Headers = vec![
            (":method".into(), "POST".into()),
            ("x-dup".into(), "1".into()),
            ("x-dup".into(), "2".into()),
            (CLUSTER_HEADER.into(), "c".into()),
        ];
        assert!(unchanged(&m, "authorization", None));
        assert!(unchanged(&m, ":method", Some("POST")));
        assert!(!unchanged(&m, ":method", Some("GET")));
        assert!(
            !unchanged(&m, "x-dup", Some("1")),
            "a set collapses duplicates"
        );
        assert!(!unchanged(&m, "x-dup", None));
        assert!(
            !unchanged(&m, CLUSTER_HEADER, Some("c")),
            "the route write is kept"
        );
        assert!(!unchanged(&m, CLUSTER_HEADER, None));
        assert!(
            unchanged(&Vec::new(), CLUSTER_HEADER, None),
            "nothing to remove"
        );
        cache_set(&mut m, "X-Dup", Some("3"));
        assert!(unchanged(&m, "x-dup", Some("3")));
        cache_set(&mut m, ":method", None);
        assert!(unchanged(&m, ":method", None));
    }
}
