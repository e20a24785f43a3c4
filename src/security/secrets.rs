//! The gateway's configured secrets never leave in answers: provider credentials (`ai/llm`
//! `credentials`, AWS keys), every value read from `{{ env }}` (martian header values,
//! keys), client API keys and their salt, and credential headers the backends send. A
//! provider may echo what it received (a key in an error message, a debug header): those
//! bytes are replaced before the client gets them — response headers, translated answers
//! and streams, failover replies, and the bodies of plain endpoints whose backend is sent a
//! secret.
//!
//! Values shorter than [`MIN_LEN`] bytes are not treated as secrets (they could not be
//! told from ordinary text: a region `us-east-1`, a flag), so keep keys long.

use super::pii::REDACTED;
use std::fmt;

/// Shortest value scrubbed.
pub const MIN_LEN: usize = 8;

/// The configured secrets, longest first (a secret inside a longer one is replaced as part
/// of it).
#[derive(Clone, PartialEq, Default)]
pub struct Secrets {
    values: Vec<Vec<u8>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets(<{} redacted>)", self.values.len())
    }
}

/// How a found secret is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// `[REDACTED]`.
    Redacted,
    /// As many bytes as the secret (`[REDACTED]` then `*`, or only `*`): a body whose
    /// length was announced (`content-length`) keeps it.
    SameLength,
}

impl Mask {
    fn bytes(self, len: usize) -> Vec<u8> {
        match self {
            Mask::Redacted => REDACTED.as_bytes().to_vec(),
            Mask::SameLength if len >= REDACTED.len() => {
                let mut m = REDACTED.as_bytes().to_vec();
                m.resize(len, b'*');
                m
            }
            Mask::SameLength => vec![b'*'; len],
        }
    }
}

impl Secrets {
    /// The secrets among `values` (shorter than [`MIN_LEN`] ignored); each also as it is
    /// written inside a JSON string when that differs.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for v in values {
            if v.len() < MIN_LEN {
                continue;
            }
            let quoted = serde_json::to_string(&v).unwrap_or_default();
            let escaped = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or("");
            for form in [v.as_str(), escaped] {
                if form.len() >= MIN_LEN && !out.iter().any(|x| x == form.as_bytes()) {
                    out.push(form.as_bytes().to_vec());
                }
            }
        }
        out.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        Self { values: out }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// True when `text` holds a secret.
    pub fn any_in(&self, text: &[u8]) -> bool {
        self.values.iter().any(|s| find(text, s, 0).is_some())
    }

    /// `data` with every secret replaced; None when it holds none.
    pub fn scrub(&self, data: &[u8], mask: Mask) -> Option<Vec<u8>> {
        if !self.any_in(data) {
            return None;
        }
        let mut out = data.to_vec();
        for s in &self.values {
            let mut at = 0;
            while let Some(i) = find(&out, s, at) {
                let m = mask.bytes(s.len());
                at = i + m.len();
                out.splice(i..i + s.len(), m.iter().copied());
            }
        }
        Some(out)
    }

    /// A text with every secret replaced by `[REDACTED]`; None when it holds none.
    pub fn scrub_text(&self, text: &str) -> Option<String> {
        let out = self.scrub(text.as_bytes(), Mask::Redacted)?;
        // Secrets and masks are whole strings, so the result is UTF-8.
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// The length of the longest end of `data` that begins a secret (it may be completed
    /// by the next bytes).
    fn partial_tail(&self, data: &[u8]) -> usize {
        let mut hold = 0;
        for s in &self.values {
            let Some(&first) = s.first() else { continue };
            let from = data.len().saturating_sub(s.len().saturating_sub(1));
            for i in from..data.len() {
                if data.get(i) == Some(&first) && data.get(i..).is_some_and(|t| s.starts_with(t)) {
                    hold = hold.max(data.len() - i);
                    break;
                }
            }
        }
        hold
    }
}

/// First index of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let rest = hay.get(i..)?;
        let off = rest.iter().position(|&b| b == first)?;
        i += off;
        if hay.get(i..i + needle.len())? == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Scrubs a byte stream as it passes: a tail that may be the start of a secret is held
/// until the next chunk shows whether it is one (usually nothing is held: a chunk rarely
/// ends in the first bytes of a key).
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    held: Vec<u8>,
}

impl Scrubber {
    /// What can go out of `chunk` now, scrubbed.
    pub fn push(&mut self, s: &Secrets, chunk: &[u8], mask: Mask) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(chunk);
        let mut data = s.scrub(&data, mask).unwrap_or(data);
        let hold = s.partial_tail(&data);
        self.held = data.split_off(data.len() - hold);
        data
    }

    /// The stream ended: what is held (it holds no whole secret).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const KEY: &str = "sk-provider-0123456789";

    fn secrets() -> Secrets {
        Secrets::new([
            "short".into(),
            KEY.into(),
            "AKIAIOSFODNN7EXAMPLE".into(),
            r#"pa"ss\word"#.into(),
        ])
    }

    #[test]
    fn whole_texts() {
        let s = secrets();
        assert_eq!(format!("{s:?}"), "Secrets(<4 redacted>)");
        let msg =
            format!("Incorrect API key provided: {KEY}. Credential=AKIAIOSFODNN7EXAMPLE/x {KEY}");
        assert_eq!(
            s.scrub_text(&msg).unwrap(),
            "Incorrect API key provided: [REDACTED]. Credential=[REDACTED]/x [REDACTED]"
        );
        assert_eq!(s.scrub_text("short texts stay"), None);
        // Inside JSON the value is escaped: both spellings are secrets.
        let json = serde_json::json!({"m": r#"pa"ss\word"#}).to_string();
        assert_eq!(s.scrub_text(&json).unwrap(), r#"{"m":"[REDACTED]"}"#);
        let same = s
            .scrub(format!("<{KEY}>").as_bytes(), Mask::SameLength)
            .unwrap();
        assert_eq!(same.len(), KEY.len() + 2);
        assert_eq!(String::from_utf8(same).unwrap(), "<[REDACTED]************>");
        assert_eq!(Mask::SameLength.bytes(8), b"********");
    }

    #[test]
    fn streams_split_anywhere() {
        let s = secrets();
        let text = format!("a {KEY} b {KEY}s c sk-pro");
        for mask in [Mask::Redacted, Mask::SameLength] {
            let want = String::from_utf8(s.scrub(text.as_bytes(), mask).unwrap()).unwrap();
            for i in 0..=text.len() {
                for j in i..=text.len() {
                    let mut sc = Scrubber::default();
                    let mut out = sc.push(&s, &text.as_bytes()[..i], mask);
                    out.extend(sc.push(&s, &text.as_bytes()[i..j], mask));
                    out.extend(sc.push(&s, &text.as_bytes()[j..], mask));
                    out.extend(sc.finish());
                    assert_eq!(String::from_utf8(out).unwrap(), want, "{i},{j}");
                }
            }
        }
        // Nothing is held when the tail cannot start a secret.
        let mut sc = Scrubber::default();
        assert_eq!(
            sc.push(&s, b"data: {}\n\n", Mask::Redacted),
            b"data: {}\n\n"
        );
        assert_eq!(sc.push(&s, b"x sk-p", Mask::Redacted), b"x ");
        assert_eq!(sc.finish(), b"sk-p");
    }
}
