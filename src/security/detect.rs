//! Detectors of sensitive values in text (PII, secrets): a regex finds candidates, a
//! checksum or range check confirms them (Luhn for cards, mod-97 for IBANs, octet ranges
//! for IPv4, ...), and word boundaries are checked by hand so patterns stay simple.
//!
//! All regexes are compiled once at configure time with a size limit; `regex-lite` runs
//! in time linear in the text, whatever the pattern (no backreferences or look-around).
//! Its classes (`\d`, `\w`, `\b`) and case folding (`(?i)`) are ASCII-only.

use regex_lite::{Regex, RegexBuilder};
use std::fmt;

/// Upper bound on a compiled regex (bytes of the compiled program).
const SIZE_LIMIT: usize = 1 << 20;

/// A compiled regex: compared and printed by its source (config types derive both).
#[derive(Clone)]
pub struct Pattern(pub Regex);

impl Pattern {
    /// Compiles with tollgate's size limits. The error is the regex crate's message.
    pub fn new(source: &str) -> Result<Self, String> {
        RegexBuilder::new(source)
            .size_limit(SIZE_LIMIT)
            .build()
            .map(Pattern)
            .map_err(|e| e.to_string())
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.as_str())
    }
}

/// The built-in detectors: config name, placeholder label.
pub const BUILTIN: &[(&str, &str)] = &[
    ("email", "EMAIL"),
    ("phone", "PHONE"),
    ("credit_card", "CREDIT_CARD"),
    ("iban", "IBAN"),
    ("ssn", "SSN"),
    ("ipv4", "IPV4"),
    ("ipv6", "IPV6"),
    ("api_key", "API_KEY"),
    ("aws_access_key", "AWS_KEY"),
];

/// Confirms a candidate (`&text[start..end]`, with its surroundings for boundary checks).
type Check = fn(text: &str, start: usize, end: usize) -> bool;

/// One detector: a pattern, a confirmation, and the label of what it finds.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Placeholder label, e.g. `EMAIL` (`[EMAIL_1]`).
    pub label: String,
    pattern: Pattern,
    check: Option<Check>,
    /// On a failed check, retry shorter candidates ending before a separator (a greedy
    /// grouped pattern may have eaten a following word or number).
    shrink: bool,
    /// Literals one of which every match contains: a text without any is not scanned
    /// (`regex-lite` has no literal prefilter of its own).
    needs: &'static [&'static str],
}

/// Equal when label, pattern and shrinking agree (the check follows from the built-in).
impl PartialEq for Detector {
    fn eq(&self, other: &Self) -> bool {
        self.label == other.label
            && self.pattern == other.pattern
            && self.shrink == other.shrink
            && self.check.is_some() == other.check.is_some()
    }
}

impl Detector {
    /// A built-in detector by its config name.
    pub fn builtin(name: &str) -> Option<Self> {
        let (label, source, check, shrink): (&str, &str, Check, bool) = match name {
            "email" => (
                "EMAIL",
                r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}",
                check_email,
                false,
            ),
            "phone" => (
                "PHONE",
                // E.164 (+ and 8-15 digits, separators allowed) or a national number with
                // separators: (555) 123-4567, 555-123-4567, 030 1234 5678, 06-12345678.
                // (Plain character-class runs keep the automaton small: this detector
                // was 60% of the scan time with nested counted groups.)
                r"\+[1-9][0-9 .\-()]{6,20}[0-9]|\(?[0-9]{2,4}\)?[ .\-/][0-9]{3,4}[ .\-]?[0-9]{3,5}",
                check_phone,
                true,
            ),
            "credit_card" => (
                "CREDIT_CARD",
                r"[0-9]{4}(?:[ \-][0-9]{4}){3}[ \-][0-9]{3}|[0-9]{4}(?:[ \-][0-9]{4}){3}|[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{4,5}|[0-9]{13,19}",
                check_card,
                true,
            ),
            "iban" => (
                "IBAN",
                r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?",
                check_iban,
                true,
            ),
            "ssn" => ("SSN", r"[0-9]{3}-[0-9]{2}-[0-9]{4}", check_ssn, false),
            "ipv4" => (
                "IPV4",
                r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
                check_ipv4,
                false,
            ),
            "ipv6" => (
                "IPV6",
                r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3})?",
                check_ipv6,
                false,
            ),
            "api_key" => (
                "API_KEY",
                r"sk-[A-Za-z0-9_\-]{20,200}|AIza[0-9A-Za-z_\-]{35}|gh[pousr]_[A-Za-z0-9]{36,251}|xox[abposr]-[A-Za-z0-9\-]{10,200}",
                check_token,
                false,
            ),
            "aws_access_key" => ("AWS_KEY", r"(?:AKIA|ASIA)[A-Z0-9]{16}", check_token, false),
            _ => return None,
        };
        let pattern = Pattern::new(source).ok()?;
        let needs: &'static [&'static str] = match name {
            "email" => &["@"],
            "ssn" => &["-"],
            "ipv4" => &["."],
            "ipv6" => &[":"],
            "api_key" => &["sk-", "AIza", "gho_", "ghp_", "ghu_", "ghs_", "ghr_", "xox"],
            "aws_access_key" => &["AKIA", "ASIA"],
            _ => &[],
        };
        Some(Self {
            label: label.to_string(),
            pattern,
            check: Some(check),
            shrink,
            needs,
        })
    }

    /// A custom detector: every match of `pattern` counts; `name` becomes the label.
    pub fn custom(name: &str, pattern: Pattern) -> Self {
        let label = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            label,
            pattern,
            check: None,
            shrink: false,
            needs: &[],
        }
    }

    /// Confirmed matches in `text`, as byte ranges.
    fn find(&self, text: &str, out: &mut Vec<Found>, index: usize) {
        if !self.needs.is_empty() && !self.needs.iter().any(|n| text.contains(n)) {
            return;
        }
        for m in self.pattern.0.find_iter(text) {
            if m.start() == m.end() {
                continue;
            }
            let Some(check) = self.check else {
                out.push(Found {
                    start: m.start(),
                    end: m.end(),
                    detector: index,
                });
                continue;
            };
            let mut end = m.end();
            loop {
                if check(text, m.start(), end) {
                    out.push(Found {
                        start: m.start(),
                        end,
                        detector: index,
                    });
                    break;
                }
                if !self.shrink {
                    break;
                }
                // Next shorter candidate: up to the last separator before `end`.
                match text
                    .get(m.start()..end)
                    .and_then(|s| s.rfind([' ', '-', '.', '/']))
                {
                    Some(cut) if cut > 0 => end = m.start() + cut,
                    _ => break,
                }
            }
        }
    }
}

/// One confirmed match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    /// Index of the detector in its [`Detectors`] list.
    pub detector: usize,
}

/// A list of detectors applied together.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Detectors {
    pub list: Vec<Detector>,
}

impl Detectors {
    /// Non-overlapping matches, in text order; on overlap the earlier, then longer, wins.
    pub fn find(&self, text: &str) -> Vec<Found> {
        let mut all = Vec::new();
        for (i, d) in self.list.iter().enumerate() {
            d.find(text, &mut all, i);
        }
        all.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut out: Vec<Found> = Vec::with_capacity(all.len());
        for f in all {
            if out.last().is_none_or(|last| f.start >= last.end) {
                out.push(f);
            }
        }
        out
    }

    pub fn label(&self, found: &Found) -> &str {
        self.list
            .get(found.detector)
            .map(|d| d.label.as_str())
            .unwrap_or("PII")
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

fn before(text: &str, start: usize) -> Option<char> {
    text.get(..start).and_then(|s| s.chars().next_back())
}

fn after(text: &str, end: usize) -> Option<char> {
    text.get(end..).and_then(|s| s.chars().next())
}

/// Neither neighbour is a character for which `joins` holds.
fn bounded(text: &str, start: usize, end: usize, joins: fn(char) -> bool) -> bool {
    !before(text, start).is_some_and(joins) && !after(text, end).is_some_and(joins)
}

fn word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

fn slice(text: &str, start: usize, end: usize) -> &str {
    text.get(start..end).unwrap_or_default()
}

fn check_email(text: &str, start: usize, end: usize) -> bool {
    let s = slice(text, start, end);
    !s.starts_with('.') && !s.contains("..") && !after(text, end).is_some_and(word)
}

fn check_phone(text: &str, start: usize, end: usize) -> bool {
    let s = slice(text, start, end);
    let n = digits(s).len();
    let joins = |c: char| c.is_alphanumeric() || c == '/' || c == '+';
    // A trailing separator or a lone parenthesis is not part of a number.
    let balanced = s.matches('(').count() == s.matches(')').count();
    let ends_digit = s.ends_with(|c: char| c.is_ascii_digit());
    // A number that goes on after a separator ("100 000 000 000", "ORD-123-456-7890",
    // "1.555.123.4567.8") is not a phone number.
    let continues = |rest: Option<&str>| {
        rest.is_some_and(|r| {
            let mut cs = r.chars();
            match (cs.next(), cs.next()) {
                (Some(' '), Some(c)) => c.is_ascii_digit(),
                (Some('.' | '-'), Some(c)) => c.is_ascii_alphanumeric(),
                _ => false,
            }
        })
    };
    let ahead = text.get(end..);
    let behind: Option<String> = text.get(..start).map(|b| b.chars().rev().take(2).collect());
    if !(bounded(text, start, end, joins) && balanced && ends_digit)
        || continues(ahead)
        || continues(behind.as_deref())
    {
        return false;
    }
    if s.starts_with('+') {
        return (8..=15).contains(&n);
    }
    // National numbers: 9-12 digits, and not a date-like 4-2-2 / 2-2-4 shape (the
    // pattern already needs groups of 2-4, 3-4 and 3-5 digits).
    (9..=12).contains(&n)
}

/// Luhn checksum over the digits of a card number.
pub fn luhn(number: &str) -> bool {
    let ds = digits(number);
    if ds.is_empty() {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

fn check_card(text: &str, start: usize, end: usize) -> bool {
    let s = slice(text, start, end);
    let ds = digits(s);
    let joins = |c: char| c.is_alphanumeric() || c == '-' || c == '_' || c == '.';
    // Issuer ranges start with 2-6 (Mastercard 2/5, Amex 3, Visa 4, Discover 6).
    (13..=19).contains(&ds.len())
        && ds.first().is_some_and(|d| (2..=6).contains(d))
        && bounded(text, start, end, joins)
        && luhn(s)
}

/// IBAN check digits (ISO 13616 mod 97 == 1).
pub fn iban_valid(iban: &str) -> bool {
    let s: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let (head, tail) = s.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

fn check_iban(text: &str, start: usize, end: usize) -> bool {
    bounded(text, start, end, word) && iban_valid(slice(text, start, end))
}

fn check_ssn(text: &str, start: usize, end: usize) -> bool {
    let s = slice(text, start, end);
    let joins = |c: char| c.is_alphanumeric() || c == '-';
    let mut parts = s.split('-');
    let (Some(area), Some(group), Some(serial)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    bounded(text, start, end, joins)
        && area != "000"
        && area != "666"
        && !area.starts_with('9')
        && group != "00"
        && serial != "0000"
}

fn check_ipv4(text: &str, start: usize, end: usize) -> bool {
    let s = slice(text, start, end);
    let joins = |c: char| c.is_alphanumeric() || c == '.' || c == '_';
    bounded(text, start, end, joins) && s.split('.').all(|o| o.parse::<u8>().is_ok())
}

fn check_ipv6(text: &str, start: usize, end: usize) -> bool {
    let s = slice(text, start, end);
    let joins = |c: char| c.is_alphanumeric() || c == ':' || c == '_';
    // At least three groups with digits: rules out `::`, `::1` and `a::b`-like code.
    let groups = s.split(':').filter(|g| !g.is_empty()).count();
    bounded(text, start, end, joins) && groups >= 3 && s.parse::<std::net::Ipv6Addr>().is_ok()
}

fn check_token(text: &str, start: usize, end: usize) -> bool {
    let joins = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    bounded(text, start, end, joins)
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
