use super::*;

fn e(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn request() -> Request {
    Request {
        descriptors: vec![
            Descriptor {
                entries: vec![e("ratelimit", "service"), e("client_tokens", "")],
                hits: 0,
                negative: false,
            },
            Descriptor {
                entries: vec![
                    e("quota", "q"),
                    e("rule", "gold"),
                    e("unit", "day"),
                    e("identity", "tenant-ü"),
                ],
                hits: 300_000,
                negative: true,
            },
        ],
        op: Op::Charge,
        id: "abc:settle".into(),
        at: Some(1_700_000_000),
    }
}

fn s(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| e(k, v)).collect()
}

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

#[test]
fn headers_carry_the_grpc_call_and_the_metadata() {
    let h = request().headers("tollgate_limits", 250);
    let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(get(":path"), Some(PATH));
    assert_eq!(get("content-type"), Some("application/grpc"));
    assert_eq!(get("te"), Some("trailers"));
    assert_eq!(get("grpc-timeout"), Some("250m"));
    assert_eq!(get("x-tollgate-op"), Some("charge"));
    assert_eq!(get("x-tollgate-id"), Some("abc:settle"));
    assert_eq!(get("x-tollgate-at"), Some("1700000000"));
}

#[test]
fn a_truncated_or_foreign_answer_is_a_failure() {
    let ok = [(":status", "200")];
    for body in [
        &[][..],
        &[1, 0, 0, 0, 0][..],
        &[0, 0, 0, 0, 9, 8][..],
        &[0, 0, 0][..],
    ] {
        assert!(answer(&s(&ok), &[], body, 0).is_err(), "{body:?}");
    }
    // Code UNKNOWN (0, or absent) is a failure.
    assert!(answer(&s(&ok), &[], &frame(&[0x08, 0x00]), 0)
        .unwrap_err()
        .contains("UNKNOWN"));
    assert!(answer(&s(&ok), &[], &frame(&[]), 0).is_err());
    // A wire type protobuf does not have.
    assert!(decode(&frame(&[0x0f])).is_err());
    // A varint that never ends.
    assert!(decode(&frame(&[0x08, 0xff, 0xff])).is_err());
}

#[test]
fn statuses_come_from_trailers_else_headers() {
    let body = frame(&[0x08, 0x01, 0x12, 0x02, 0x08, 0x01]);
    // OK: trailers say 0, or nothing says anything (the native host sees no trailers).
    let r = answer(
        &s(&[(":status", "200")]),
        &s(&[("grpc-status", "0")]),
        &body,
        1,
    )
    .unwrap();
    assert_eq!((r.overall, r.statuses.clone()), (Code::Ok, vec![Code::Ok]));
    assert!(answer(&s(&[(":status", "200")]), &[], &body, 1).is_ok());
    // Trailers-only error (how a server answers UNAVAILABLE).
    let err = answer(
        &s(&[
            (":status", "200"),
            ("grpc-status", "14"),
            ("grpc-message", "redis: down"),
        ]),
        &[],
        &[],
        1,
    )
    .unwrap_err();
    assert_eq!(err, "gRPC status 14 redis: down");
    // A message followed by an error trailer: the trailer wins.
    assert!(answer(
        &s(&[(":status", "200")]),
        &s(&[("grpc-status", "13")]),
        &body,
        1
    )
    .is_err());
    // No answer at all, an HTTP error, a count mismatch.
    assert!(answer(&[], &[], &[], 1).unwrap_err().contains("no answer"));
    assert_eq!(
        answer(&s(&[(":status", "503")]), &[], &body, 1).unwrap_err(),
        "HTTP status 503"
    );
    assert!(answer(&s(&[(":status", "200")]), &[], &body, 2).is_err());
}

/// The bytes agree with prost's encoding of the service's own structs, both ways.
#[cfg(feature = "limits")]
#[test]
fn agrees_with_prost() {
    use crate::limits::proto;
    use prost::Message;
    let req = request();
    let body = req.body();
    assert_eq!(body[0], 0);
    let n = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert_eq!(n, body.len() - 5);
    let got = proto::RateLimitRequest::decode(&body[5..]).unwrap();
    assert_eq!(got.domain, "tollgate");
    assert_eq!(
        got.hits_addend, 0,
        "descriptors disagree: no request-level hits"
    );
    let d0 = &got.descriptors[0];
    assert_eq!(d0.hits_addend, Some(0));
    assert!(!d0.is_negative_hits);
    assert_eq!(d0.entries[1].key, "client_tokens");
    assert_eq!(d0.entries[1].value, "");
    let d1 = &got.descriptors[1];
    assert_eq!(d1.hits_addend, Some(300_000));
    assert!(d1.is_negative_hits);
    assert_eq!(d1.entries[3].value, "tenant-ü");
    // One hits value for all: also the request-level one (saturated to 32 bits).
    let mut same = request();
    for d in &mut same.descriptors {
        d.hits = u64::MAX;
    }
    let got = proto::RateLimitRequest::decode(&same.body()[5..]).unwrap();
    assert_eq!(got.hits_addend, u32::MAX);
    assert_eq!(got.descriptors[0].hits_addend, Some(u64::MAX));

    let resp = proto::RateLimitResponse {
        overall_code: proto::Code::OverLimit as i32,
        statuses: vec![
            proto::DescriptorStatus {
                code: proto::Code::Ok as i32,
                current_limit: Some(proto::RateLimit {
                    name: "x".into(),
                    requests_per_unit: 7,
                    unit: 4,
                }),
                limit_remaining: 3,
                duration_until_reset: Some(proto::Duration {
                    seconds: 9,
                    nanos: 1,
                }),
            },
            proto::DescriptorStatus {
                code: proto::Code::OverLimit as i32,
                ..Default::default()
            },
        ],
        response_headers_to_add: vec![
            proto::HeaderValue {
                key: "X-Quota-Limit".into(),
                value: "1000".into(),
            },
            proto::HeaderValue {
                key: "Retry-After".into(),
                value: "42".into(),
            },
        ],
        raw_body: b"ignored".to_vec(),
        ..Default::default()
    };
    let r = decode(&frame(&resp.encode_to_vec())).unwrap();
    assert_eq!(r.overall, Code::OverLimit);
    assert_eq!(r.statuses, vec![Code::Ok, Code::OverLimit]);
    assert_eq!(r.header("retry-after"), Some("42"));
    assert_eq!(r.header("x-quota-limit"), Some("1000"));
}
