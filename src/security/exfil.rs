//! Exfiltration guard (tollgate `security/exfiltration`): the detectors run over the
//! provider's answer before it reaches the client. Streams are scanned through a sliding
//! window: the last `window` bytes of text are held back, so a secret of up to `window`
//! bytes split across any number of chunks is seen whole before any of it is sent.

use super::detect::Detectors;
use super::pii::REDACTED;
use super::reach::{splice, Edit};

/// What happens when an answer contains a detected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExfilAction {
    /// The value becomes `[REDACTED]`.
    #[default]
    Redact,
    /// The answer is stopped: 502 for JSON, an error event for streams.
    Block,
}

/// Default sliding window (bytes): longer than any built-in secret shape.
pub const DEFAULT_WINDOW: usize = 256;

/// Compiled `security/exfiltration` of an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Exfil {
    pub detectors: Detectors,
    pub action: ExfilAction,
    /// Bytes held back while streaming.
    pub window: usize,
}

/// An answer was stopped; the kinds found (never the values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked(pub Vec<String>);

impl Blocked {
    pub fn message(&self) -> String {
        format!(
            "the answer was stopped by the gateway: it contained sensitive data ({})",
            self.0.join(", ")
        )
    }
}

impl Exfil {
    /// Scans a whole text. `Ok(None)`: clean.
    pub fn scan(&self, text: &str) -> Result<Option<String>, Blocked> {
        let edits = self.edits(text)?;
        if edits.is_empty() {
            return Ok(None);
        }
        let mut out = text.to_string();
        splice(&mut [&mut out], &edits);
        Ok(Some(out))
    }

    /// The redactions a whole text needs (for a text spread over several parts:
    /// [`splice`]). `Err`: the answer is stopped.
    pub fn edits(&self, text: &str) -> Result<Vec<Edit>, Blocked> {
        let found = self.detectors.find(text);
        if self.action == ExfilAction::Block && !found.is_empty() {
            return Err(self.blocked(&found));
        }
        Ok(found
            .iter()
            .map(|f| Edit {
                start: f.start,
                end: f.end,
                with: REDACTED.to_string(),
            })
            .collect())
    }

    /// Scans a JSON value (an MCP tool's arguments or result): each string is redacted in
    /// place (or the value stopped), then its whole text is scanned, where a secret in an
    /// object key still shows; one left there stops the value whatever the action.
    pub fn scan_value(&self, v: &mut serde_json::Value) -> Result<(), Blocked> {
        let mut blocked = None;
        crate::support::json::each_string(v, &mut |s| match self.scan(s) {
            Ok(Some(clean)) => *s = clean,
            Ok(None) => {}
            Err(b) => blocked = Some(b),
        });
        if let Some(b) = blocked {
            return Err(b);
        }
        let found = self.detectors.find(&v.to_string());
        if found.is_empty() {
            Ok(())
        } else {
            Err(self.blocked(&found))
        }
    }

    fn blocked(&self, found: &[super::detect::Found]) -> Blocked {
        let mut labels: Vec<String> = Vec::new();
        for f in found {
            let l = self.detectors.label(f).to_string();
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        Blocked(labels)
    }
}

/// Bytes of already-sent text kept as left context (word boundaries of the detectors).
const CONTEXT: usize = 32;

/// Sliding-window scanner over one choice's streamed text.
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    /// Tail of what was already sent (left context only; never re-sent).
    context: String,
    /// Text not sent yet.
    pending: String,
}

impl Scanner {
    /// Feeds a delta; returns the text that can be sent now.
    pub fn push(&mut self, ex: &Exfil, delta: &str) -> Result<String, Blocked> {
        self.pending.push_str(delta);
        self.drain(ex, false)
    }

    /// The text ended: scans and returns what was held.
    pub fn finish(&mut self, ex: &Exfil) -> Result<String, Blocked> {
        self.drain(ex, true)
    }

    fn drain(&mut self, ex: &Exfil, last: bool) -> Result<String, Blocked> {
        let ctx = self.context.len();
        let joined = format!("{}{}", self.context, self.pending);
        let found: Vec<_> = ex
            .detectors
            .find(&joined)
            .into_iter()
            .filter(|f| f.end > ctx)
            .collect();
        if ex.action == ExfilAction::Block && !found.is_empty() {
            self.pending.clear();
            return Err(ex.blocked(&found));
        }
        let mut cut = if last {
            joined.len()
        } else {
            joined.len().saturating_sub(ex.window)
        };
        while !joined.is_char_boundary(cut) {
            cut -= 1;
        }
        cut = cut.max(ctx);
        // A match across the cut is held back whole (it may still grow).
        if let Some(f) = found.iter().find(|f| f.start < cut && f.end > cut) {
            cut = f.start.max(ctx);
        }
        let mut out = String::with_capacity(cut - ctx);
        let mut at = ctx;
        for f in found.iter().filter(|f| f.end <= cut) {
            let start = f.start.max(ctx);
            out.push_str(joined.get(at..start).unwrap_or_default());
            out.push_str(REDACTED);
            at = f.end;
        }
        out.push_str(joined.get(at..cut).unwrap_or_default());
        let mut keep = cut.saturating_sub(CONTEXT);
        while !joined.is_char_boundary(keep) {
            keep += 1;
        }
        self.context = joined.get(keep..cut).unwrap_or_default().to_string();
        self.pending = joined.get(cut..).unwrap_or_default().to_string();
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::security::detect::{Detector, BUILTIN};

    fn exfil(action: ExfilAction, window: usize) -> Exfil {
        Exfil {
            detectors: Detectors {
                list: BUILTIN
                    .iter()
                    .map(|(n, _)| Detector::builtin(n).unwrap())
                    .collect(),
            },
            action,
            window,
        }
    }

    const SECRET: &str = "sk-ant-api03-SECRETsecretSECRET0123456789";

    fn stream(ex: &Exfil, pieces: &[&str]) -> Result<String, Blocked> {
        let mut s = Scanner::default();
        let mut out = String::new();
        for p in pieces {
            out += &s.push(ex, p)?;
        }
        out += &s.finish(ex)?;
        Ok(out)
    }

    #[test]
    fn a_json_value_is_redacted_in_its_strings_and_stopped_for_a_secret_in_a_key() {
        let ex = exfil(ExfilAction::Redact, DEFAULT_WINDOW);
        let mut v = serde_json::json!({"a": [{"b": format!("key {SECRET}")}], "n": 1});
        assert_eq!(ex.scan_value(&mut v), Ok(()));
        assert_eq!(
            v,
            serde_json::json!({"a": [{"b": "key [REDACTED]"}], "n": 1})
        );
        let mut keyed = serde_json::json!({"x": {SECRET: 1}});
        let blocked = ex.scan_value(&mut keyed).unwrap_err();
        assert!(!blocked.0.is_empty() && !blocked.message().contains(SECRET));
        let block = exfil(ExfilAction::Block, DEFAULT_WINDOW);
        assert!(block.scan_value(&mut serde_json::json!([SECRET])).is_err());
        assert_eq!(
            block.scan_value(&mut serde_json::json!({"clean": "text"})),
            Ok(())
        );
    }

    #[test]
    fn whole_text() {
        let ex = exfil(ExfilAction::Redact, DEFAULT_WINDOW);
        assert_eq!(
            ex.scan(&format!("key: {SECRET}.")).unwrap().unwrap(),
            "key: [REDACTED]."
        );
        assert_eq!(ex.scan("nothing to see").unwrap(), None);
        let ex = exfil(ExfilAction::Block, DEFAULT_WINDOW);
        assert_eq!(
            ex.scan(&format!("{SECRET} AKIAIOSFODNN7EXAMPLE"))
                .unwrap_err()
                .0,
            vec!["API_KEY".to_string(), "AWS_KEY".to_string()]
        );
    }

    #[test]
    fn secret_split_at_every_pair_of_offsets_is_redacted() {
        let text = format!("Sure! The key is {SECRET} and the mail is bob@example.com ok");
        let want = "Sure! The key is [REDACTED] and the mail is [REDACTED] ok";
        for window in [64, DEFAULT_WINDOW] {
            let ex = exfil(ExfilAction::Redact, window);
            for i in 0..=text.len() {
                for j in (i..=text.len()).step_by(7) {
                    let out = stream(&ex, &[&text[..i], &text[i..j], &text[j..]]).unwrap();
                    assert_eq!(out, want, "window {window}, split at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn byte_by_byte_and_block() {
        let text = format!("x {SECRET} y");
        let pieces: Vec<&str> = (0..text.len()).map(|i| &text[i..i + 1]).collect();
        let ex = exfil(ExfilAction::Redact, 64);
        assert_eq!(stream(&ex, &pieces).unwrap(), "x [REDACTED] y");
        let ex = exfil(ExfilAction::Block, 64);
        // Nothing of the secret was sent before the block.
        let mut s = Scanner::default();
        let mut sent = String::new();
        let mut blocked = None;
        for p in &pieces {
            match s.push(&ex, p) {
                Ok(o) => sent += &o,
                Err(b) => {
                    blocked = Some(b);
                    break;
                }
            }
        }
        assert_eq!(blocked.unwrap().0, vec!["API_KEY".to_string()]);
        assert!(!sent.contains("sk-"), "{sent}");
    }

    #[test]
    fn clean_text_passes_unchanged_with_a_lag() {
        let ex = exfil(ExfilAction::Redact, 8);
        let mut s = Scanner::default();
        assert_eq!(s.push(&ex, "hello ").unwrap(), "");
        assert_eq!(s.push(&ex, "wonderful world").unwrap(), "hello wonderf");
        assert_eq!(s.finish(&ex).unwrap(), "ul world");
        let multi = "héllo wörld ✓ ünïcode text that is long enough";
        let pieces: Vec<String> = multi.chars().map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        assert_eq!(stream(&ex, &refs).unwrap(), multi);
    }
}
