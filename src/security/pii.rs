//! PII masking of prompts (tollgate `security/pii`): detected values are replaced by typed,
//! numbered placeholders (`[EMAIL_1]`; the same value always gets the same placeholder
//! within a request), by `[REDACTED]`, or the request is refused. Placeholders can be put
//! back in the answer, also in streams where a placeholder arrives split across chunks.

use super::detect::Detectors;
use super::reach::{splice, Edit};

/// What happens to a detected value in a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PiiAction {
    /// A typed placeholder, e.g. `[EMAIL_1]`.
    #[default]
    Mask,
    /// `[REDACTED]`.
    Redact,
    /// The request is refused (400) and never reaches the provider.
    Block,
}

/// Text that replaces a value when redacting.
pub const REDACTED: &str = "[REDACTED]";

/// Compiled `security/pii` of an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Pii {
    pub detectors: Detectors,
    pub action: PiiAction,
    /// Put the original values back in the answer (`mask` only).
    pub restore: bool,
}

/// The placeholders given out in one request: (placeholder, original value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Masking {
    pub pairs: Vec<(String, String)>,
    /// Placeholder-shaped text the client wrote itself (`[EMAIL_1]`): never given out, so
    /// that a placeholder always means one value and restoring leaves the client's own
    /// text alone.
    taken: Vec<String>,
}

/// Longest bracketed token [`Masking::reserve`] keeps (placeholders are much shorter).
const MAX_PLACEHOLDER: usize = 64;

impl Masking {
    /// Notes the placeholder-shaped tokens (`[NAME_12]`) of a request text. Call it for
    /// every text of the request before masking any, so that no placeholder given out
    /// appears in the request as written.
    pub fn reserve(&mut self, text: &str) {
        let mut rest = text;
        while let Some(open) = rest.find('[') {
            rest = rest.get(open..).unwrap_or_default();
            let token = rest
                .get(1..)
                .and_then(|r| r.find(['[', ']']))
                .and_then(|close| rest.get(..close + 2))
                .filter(|t| t.ends_with(']') && t.len() <= MAX_PLACEHOLDER);
            if let Some(t) = token.filter(|t| is_placeholder(t)) {
                if !self.taken.iter().any(|x| x == t) {
                    self.taken.push(t.to_string());
                }
            }
            rest = rest.get(1..).unwrap_or_default();
        }
    }

    /// Masks one text. `Ok(None)`: nothing found. `Err(labels)`: blocked, with the kinds
    /// found (never the values).
    pub fn apply(&mut self, pii: &Pii, text: &str) -> Result<Option<String>, Vec<String>> {
        let edits = self.edits(pii, text)?;
        if edits.is_empty() {
            return Ok(None);
        }
        let mut out = text.to_string();
        splice(&mut [&mut out], &edits);
        Ok(Some(out))
    }

    /// The replacements masking makes in `text` (in order), for texts spread over several
    /// parts ([`splice`]). `Err(labels)`: blocked.
    pub fn edits(&mut self, pii: &Pii, text: &str) -> Result<Vec<Edit>, Vec<String>> {
        let found = pii.detectors.find(text);
        if found.is_empty() {
            return Ok(Vec::new());
        }
        if pii.action == PiiAction::Block {
            let mut labels: Vec<String> = Vec::new();
            for f in &found {
                let l = pii.detectors.label(f).to_string();
                if !labels.contains(&l) {
                    labels.push(l);
                }
            }
            return Err(labels);
        }
        self.reserve(text);
        let mut edits = Vec::with_capacity(found.len());
        for f in &found {
            let value = text.get(f.start..f.end).unwrap_or_default();
            let with = match pii.action {
                PiiAction::Redact | PiiAction::Block => REDACTED.to_string(),
                PiiAction::Mask => {
                    let label = pii.detectors.label(f);
                    self.placeholder(label, value)
                }
            };
            edits.push(Edit {
                start: f.start,
                end: f.end,
                with,
            });
        }
        Ok(edits)
    }

    fn placeholder(&mut self, label: &str, value: &str) -> String {
        if let Some((p, _)) = self.pairs.iter().find(|(_, v)| v == value) {
            return p.clone();
        }
        let prefix = format!("[{label}_");
        let mut n = self
            .pairs
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix))
            .count()
            + 1;
        loop {
            let p = format!("{prefix}{n}]");
            let used = self.pairs.iter().any(|(x, _)| *x == p) || self.taken.contains(&p);
            if !used {
                self.pairs.push((p.clone(), value.to_string()));
                return p;
            }
            n += 1;
        }
    }

    /// Restores every placeholder in a whole text.
    pub fn restore(&self, text: &str) -> String {
        self.restore_as(text, false)
    }

    /// Restores placeholders in JSON text (tool-call arguments): each value goes in
    /// escaped for a JSON string, where the model puts a placeholder.
    pub fn restore_json(&self, text: &str) -> String {
        self.restore_as(text, true)
    }

    fn restore_as(&self, text: &str, json: bool) -> String {
        let mut out = text.to_string();
        for (p, v) in &self.pairs {
            if out.contains(p.as_str()) {
                let value = if json { json_escaped(v) } else { v.clone() };
                out = out.replace(p.as_str(), &value);
            }
        }
        out
    }
}

/// `v` as it is written inside a JSON string (without the quotes).
fn json_escaped(v: &str) -> String {
    let quoted = serde_json::to_string(v).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .to_string()
}

/// `[NAME_12]`: a label (letters, digits, `_`) and a number, as [`Masking`] writes them.
fn is_placeholder(token: &str) -> bool {
    let Some(inner) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return false;
    };
    let Some((label, n)) = inner.rsplit_once('_') else {
        return false;
    };
    !label.is_empty()
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Restores placeholders in a stream of text deltas: a tail that may be the start of a
/// placeholder (`[EMA`) is held until the next delta shows whether it is one.
#[derive(Debug, Clone, Default)]
pub struct Restorer {
    pending: String,
    /// The text is JSON (tool-call arguments): values go in JSON-escaped.
    json: bool,
}

impl Restorer {
    /// A restorer for JSON text (streamed tool-call arguments).
    pub fn json() -> Self {
        Self {
            json: true,
            ..Self::default()
        }
    }

    pub fn push(&mut self, m: &Masking, delta: &str) -> String {
        self.pending.push_str(delta);
        let hold = match self.pending.rfind('[') {
            Some(i) => {
                let tail = self.pending.get(i..).unwrap_or_default();
                let partial =
                    !tail.contains(']') && m.pairs.iter().any(|(p, _)| p.starts_with(tail));
                if partial {
                    i
                } else {
                    self.pending.len()
                }
            }
            None => self.pending.len(),
        };
        let ready = m.restore_as(self.pending.get(..hold).unwrap_or_default(), self.json);
        self.pending = self.pending.get(hold..).unwrap_or_default().to_string();
        ready
    }

    /// The stream ended: whatever is held goes out as is.
    pub fn finish(&mut self, m: &Masking) -> String {
        m.restore_as(&std::mem::take(&mut self.pending), self.json)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::security::detect::Detector;

    fn pii(action: PiiAction) -> Pii {
        Pii {
            detectors: Detectors {
                list: ["email", "phone", "credit_card"]
                    .iter()
                    .map(|n| Detector::builtin(n).unwrap())
                    .collect(),
            },
            action,
            restore: true,
        }
    }

    #[test]
    fn masks_with_numbered_placeholders_per_value() {
        let p = pii(PiiAction::Mask);
        let mut m = Masking::default();
        let out = m
            .apply(
                &p,
                "a@x.com wrote to b@y.org; cc a@x.com, card 4111 1111 1111 1111",
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "[EMAIL_1] wrote to [EMAIL_2]; cc [EMAIL_1], card [CREDIT_CARD_1]"
        );
        // A second message of the same request continues the numbering.
        let out2 = m.apply(&p, "again b@y.org and c@z.net").unwrap().unwrap();
        assert_eq!(out2, "again [EMAIL_2] and [EMAIL_3]");
        assert_eq!(
            m.restore("hi [EMAIL_3] and [EMAIL_1]"),
            "hi c@z.net and a@x.com"
        );
        assert_eq!(m.apply(&p, "nothing here 12345").unwrap(), None);
    }

    #[test]
    fn placeholders_never_collide_with_text_the_client_wrote() {
        let p = pii(PiiAction::Mask);
        // Found by `cargo fuzz run pii`: the client's own "[EMAIL_1]" was handed out for
        // the address too, so restoring turned the client's text into the address.
        let mut m = Masking::default();
        let text = "+@e.co[EMAIL_1]";
        let masked = m.apply(&p, text).unwrap().unwrap();
        assert_eq!(masked, "[EMAIL_2][EMAIL_1]");
        assert_eq!(m.restore(&masked), text);

        let mut m = Masking::default();
        m.reserve("a later message quotes [EMAIL_3] and [PHONE_1]");
        let text = "mail jane@example.com, not [EMAIL_1] or [EMAIL_2] [x_1 or [EMAIL_4";
        let masked = m.apply(&p, text).unwrap().unwrap();
        assert_eq!(
            masked,
            "mail [EMAIL_4], not [EMAIL_1] or [EMAIL_2] [x_1 or [EMAIL_4"
        );
        assert_eq!(
            m.restore("[EMAIL_1] [EMAIL_3] [EMAIL_4]"),
            "[EMAIL_1] [EMAIL_3] jane@example.com"
        );
        let next = m.apply(&p, "and bob@example.org").unwrap().unwrap();
        assert_eq!(next, "and [EMAIL_5]");
    }

    #[test]
    fn redact_and_block() {
        let mut m = Masking::default();
        assert_eq!(
            m.apply(&pii(PiiAction::Redact), "mail a@x.com")
                .unwrap()
                .unwrap(),
            "mail [REDACTED]"
        );
        assert!(m.pairs.is_empty());
        assert_eq!(
            m.apply(&pii(PiiAction::Block), "a@x.com +14155552671 b@x.com")
                .unwrap_err(),
            vec!["EMAIL".to_string(), "PHONE".to_string()]
        );
    }

    #[test]
    fn restores_into_json_text_escaped() {
        let mut m = Masking::default();
        m.pairs.push(("[ID_1]".into(), r#"a"b\c"#.into()));
        let args = r#"{"id":"[ID_1]"}"#;
        assert_eq!(m.restore_json(args), r#"{"id":"a\"b\\c"}"#);
        let v: serde_json::Value = serde_json::from_str(&m.restore_json(args)).unwrap();
        assert_eq!(v["id"], r#"a"b\c"#);
        let mut r = Restorer::json();
        let mut out = r.push(&m, r#"{"id":"[ID"#);
        out += &r.push(&m, r#"_1]"}"#);
        out += &r.finish(&m);
        assert_eq!(out, m.restore_json(args));
    }

    #[test]
    fn restores_placeholders_split_at_every_offset() {
        let p = pii(PiiAction::Mask);
        let mut m = Masking::default();
        m.apply(&p, "a@x.com b@y.org").unwrap();
        let answer = "Dear [EMAIL_1], forward to [EMAIL_2] [not a placeholder] [EMAIL_";
        let want = "Dear a@x.com, forward to b@y.org [not a placeholder] [EMAIL_";
        for i in 0..=answer.len() {
            for j in i..=answer.len() {
                let mut r = Restorer::default();
                let mut out = r.push(&m, &answer[..i]);
                out += &r.push(&m, &answer[i..j]);
                out += &r.push(&m, &answer[j..]);
                out += &r.finish(&m);
                assert_eq!(out, want, "split at {i},{j}");
            }
        }
    }
}
