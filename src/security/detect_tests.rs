use super::*;

/// The matched substrings of one built-in detector in `text`.
fn hits(name: &str, text: &str) -> Vec<String> {
    let d = Detectors {
        list: vec![Detector::builtin(name).unwrap()],
    };
    d.find(text)
        .iter()
        .map(|f| text[f.start..f.end].to_string())
        .collect()
}

/// Table: (text, expected matches).
fn table(name: &str, cases: &[(&str, &[&str])]) {
    for (text, want) in cases {
        let got = hits(name, text);
        assert_eq!(got, *want, "{name} on {text:?}");
    }
}

#[test]
fn every_builtin_compiles() {
    for (name, label) in BUILTIN {
        assert_eq!(Detector::builtin(name).unwrap().label, *label);
    }
    assert!(Detector::builtin("nope").is_none());
}

#[test]
fn email() {
    table(
        "email",
        &[
            (
                "write to jane.doe+tag@example.co.uk now",
                &["jane.doe+tag@example.co.uk"],
            ),
            ("a@b.io", &["a@b.io"]),
            // false positives that must not match
            ("user@localhost", &[]),
            ("@handle and foo@ bar", &[]),
            ("version 1.2.3@4", &[]),
        ],
    );
}

#[test]
fn phone() {
    table(
        "phone",
        &[
            ("call +14155552671 today", &["+14155552671"]),
            ("call +49 30 12345678.", &["+49 30 12345678"]),
            ("+44 (20) 7946 0958", &["+44 (20) 7946 0958"]),
            ("(555) 123-4567", &["(555) 123-4567"]),
            (
                "ring 555-123-4567 or 555.123.4567",
                &["555-123-4567", "555.123.4567"],
            ),
            ("030 1234 5678", &["030 1234 5678"]),
            // plain numbers, dates, order numbers, versions, ids: no
            ("order 12345678901 shipped", &[]),
            ("on 2024-01-15 at 10:30", &[]),
            ("order ORD-123-456-7890", &[]),
            ("total 100 000 000 000 EUR", &[]),
            ("+123 is a small number", &[]),
            ("v1.2.3", &[]),
            ("pi is 3.14159265", &[]),
        ],
    );
}

#[test]
fn credit_card() {
    table(
        "credit_card",
        &[
            ("card 4111 1111 1111 1111 exp", &["4111 1111 1111 1111"]),
            ("4111-1111-1111-1111", &["4111-1111-1111-1111"]),
            ("amex 3782 822463 10005", &["3782 822463 10005"]),
            ("5555555555554444", &["5555555555554444"]),
            (
                "card 4111 1111 1111 1111 1234 more",
                &["4111 1111 1111 1111"],
            ),
            // Luhn-invalid 16 digits, order numbers, dates, too long, wrong prefix: no
            ("4111 1111 1111 1112", &[]),
            ("order 1234567812345678", &[]),
            ("on 2024-01-15", &[]),
            ("id 41111111111111110000", &[]),
            ("9999999999999995", &[]),
            ("tracking 1Z999AA10123456784", &[]),
        ],
    );
    assert!(luhn("79927398713"));
    assert!(!luhn("79927398710"));
}

#[test]
fn iban() {
    table(
        "iban",
        &[
            (
                "IBAN DE89 3704 0044 0532 0130 00 ok",
                &["DE89 3704 0044 0532 0130 00"],
            ),
            ("GB82WEST12345698765432", &["GB82WEST12345698765432"]),
            (
                "to GB82 WEST 1234 5698 7654 32 THEN",
                &["GB82 WEST 1234 5698 7654 32"],
            ),
            (
                "FR1420041010050500013M02606",
                &["FR1420041010050500013M02606"],
            ),
            // wrong check digits, product codes
            ("DE89 3704 0044 0532 0130 01", &[]),
            ("SKU AB12CDEF34567890", &[]),
        ],
    );
    assert!(iban_valid("NL91ABNA0417164300"));
    assert!(!iban_valid("NL91ABNA0417164301"));
}

#[test]
fn ssn() {
    table(
        "ssn",
        &[
            ("ssn 123-45-6789.", &["123-45-6789"]),
            // invalid areas/groups/serials, longer numbers, dates
            ("000-12-3456", &[]),
            ("666-12-3456", &[]),
            ("912-12-3456", &[]),
            ("123-00-4567", &[]),
            ("123-45-0000", &[]),
            ("1123-45-6789", &[]),
            ("2024-01-15", &[]),
        ],
    );
}

#[test]
fn ipv4() {
    table(
        "ipv4",
        &[
            ("from 192.168.1.10, then", &["192.168.1.10"]),
            ("10.0.0.1", &["10.0.0.1"]),
            // octet > 255, version strings, longer dotted numbers
            ("999.1.1.1", &[]),
            ("256.0.0.1", &[]),
            ("version 1.2.3.4.5", &[]),
            ("v1.2.3.4", &[]),
            ("3.14", &[]),
        ],
    );
}

#[test]
fn ipv6() {
    table(
        "ipv6",
        &[
            (
                "host 2001:db8:85a3::8a2e:370:7334 up",
                &["2001:db8:85a3::8a2e:370:7334"],
            ),
            (
                "fe80:0:0:0:202:b3ff:fe1e:8329",
                &["fe80:0:0:0:202:b3ff:fe1e:8329"],
            ),
            // code paths, times, MAC addresses, loopback shorthand
            ("std::fmt::Display", &[]),
            ("at 12:30:45", &[]),
            ("mac 00:1A:2B:3C:4D:5E", &[]),
            ("::1", &[]),
            ("a::b", &[]),
        ],
    );
}

#[test]
fn api_keys() {
    let ant = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
    let gh = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
    let google = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
    let text = format!("keys {ant} and {gh}, {google} xoxb-1234567890-abcdef");
    assert_eq!(
        hits("api_key", &text),
        vec![
            ant.to_string(),
            gh.to_string(),
            google.to_string(),
            "xoxb-1234567890-abcdef".to_string()
        ]
    );
    table(
        "api_key",
        &[
            (
                "sk-proj-abcdefghijklmnopqrstuvwx",
                &["sk-proj-abcdefghijklmnopqrstuvwx"],
            ),
            // too short, inside a word
            ("sk-short", &[]),
            ("task-abcdefghijklmnopqrstuvwxyz", &[]),
            ("ghp_short", &[]),
        ],
    );
}

#[test]
fn aws_keys() {
    table(
        "aws_access_key",
        &[
            ("id AKIAIOSFODNN7EXAMPLE.", &["AKIAIOSFODNN7EXAMPLE"]),
            ("ASIAY34FZKBOKMUTVV7A", &["ASIAY34FZKBOKMUTVV7A"]),
            ("AKIAIOSFODNN7EXAMPLEX", &[]),
            ("AKIA1234", &[]),
        ],
    );
}

#[test]
fn overlaps_keep_the_earlier_longer_match_and_custom_labels() {
    let d = Detectors {
        list: vec![
            Detector::builtin("ssn").unwrap(),
            Detector::builtin("phone").unwrap(),
            Detector::custom("employee id", Pattern::new(r"EMP-[0-9]{5}").unwrap()),
        ],
    };
    let text = "EMP-12345 has 123-45-6789 and +14155552671";
    let found = d.find(text);
    let labels: Vec<&str> = found.iter().map(|f| d.label(f)).collect();
    assert_eq!(labels, ["EMPLOYEE_ID", "SSN", "PHONE"]);
}

#[test]
fn regex_limits() {
    assert!(Pattern::new("(").is_err());
    // A pattern whose compiled program exceeds the size limit is refused.
    assert!(Pattern::new(r"(?:a{1000}){1000}").is_err());
    assert!(Pattern::new(r"(?i)ignore previous").is_ok());
}

/// `cargo test --release --lib -- --ignored --nocapture detector_speed`: scan time of all
/// built-in detectors over a 100 KB prompt (prints, asserts nothing about time).
#[test]
#[ignore]
fn detector_speed() {
    let d = Detectors {
        list: BUILTIN
            .iter()
            .map(|(n, _)| Detector::builtin(n).unwrap())
            .collect(),
    };
    let para =
        "The quarterly report for order 1234567812345678 was sent on 2024-01-15 to the team; \
                contact jane.doe@example.com or +14155552671 for details. ";
    let text = para.repeat(100_000 / para.len());
    let t = std::time::Instant::now();
    let n = d.find(&text).len();
    println!("{} bytes, {n} matches, {:?}", text.len(), t.elapsed());
    for (name, _) in BUILTIN {
        let one = Detectors {
            list: vec![Detector::builtin(name).unwrap()],
        };
        let t = std::time::Instant::now();
        let n = one.find(&text).len();
        println!("  {name}: {n} matches, {:?}", t.elapsed());
    }
}
