//! Tool-call arguments are JSON text, and JSON can spell any character with an escape:
//! `"\u0073k-…"` is `sk-…` once the client parses it, but no detector sees `sk-` in the
//! escaped bytes. [`Unescape`] rewrites JSON text with the fewest escapes (only `"`, `\`
//! and control characters stay escaped, as serde_json writes them), so what a detector
//! reads is what the client's parser gets. It streams: fragments may split an escape or a
//! surrogate pair anywhere. The JSON means the same after; text that is not JSON passes
//! through character by character (an invalid escape is kept as written).

/// Streaming rewriter of JSON text to its minimal escapes.
#[derive(Debug, Clone, Default)]
pub struct Unescape {
    in_string: bool,
    /// An escape sequence in progress, from its backslash.
    esc: String,
    /// A high surrogate (`\ud83d`) waiting for its low half.
    high: Option<u32>,
}

impl Unescape {
    /// Rewrites one fragment; a partial escape at its end is held for the next.
    pub fn push(&mut self, fragment: &str) -> String {
        let mut out = String::with_capacity(fragment.len());
        for c in fragment.chars() {
            self.char(c, &mut out);
        }
        out
    }

    /// The text ended: what is held goes out as written.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.flush_high(&mut out);
        out.push_str(&std::mem::take(&mut self.esc));
        out
    }

    /// A whole JSON text.
    pub fn text(text: &str) -> String {
        let mut u = Self::default();
        let mut out = u.push(text);
        out.push_str(&u.finish());
        out
    }

    fn char(&mut self, c: char, out: &mut String) {
        if !self.esc.is_empty() {
            self.esc.push(c);
            self.escape(out);
            return;
        }
        match (self.in_string, c) {
            (false, '"') => {
                self.in_string = true;
                out.push(c);
            }
            (false, _) => out.push(c),
            (true, '\\') => self.esc.push(c),
            (true, '"') => {
                self.flush_high(out);
                self.in_string = false;
                out.push(c);
            }
            (true, _) => {
                self.flush_high(out);
                out.push(c);
            }
        }
    }

    /// `esc` grew by one character: complete it when it is whole.
    fn escape(&mut self, out: &mut String) {
        let mut chars = self.esc.chars().skip(1);
        match chars.next() {
            Some('u') => {
                let hex: String = chars.collect();
                if hex.len() < 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return; // more to come
                }
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4);
                match code {
                    Some(h @ 0xD800..=0xDBFF) => {
                        self.flush_high(out);
                        self.high = Some(h);
                    }
                    Some(l @ 0xDC00..=0xDFFF) => match self.high.take() {
                        Some(h) => {
                            let c = 0x10000 + ((h - 0xD800) << 10) + (l - 0xDC00);
                            match char::from_u32(c) {
                                Some(c) => push_escaped(c, out),
                                None => out.push_str(&self.esc),
                            }
                        }
                        None => out.push_str(&self.esc),
                    },
                    Some(code) => {
                        self.flush_high(out);
                        match char::from_u32(code) {
                            Some(c) => push_escaped(c, out),
                            None => out.push_str(&self.esc),
                        }
                    }
                    None => {
                        self.flush_high(out);
                        out.push_str(&self.esc);
                    }
                }
            }
            Some('/') => {
                self.flush_high(out);
                out.push('/');
            }
            _ => {
                // \" \\ \b \f \n \r \t stay as they are (minimal already); anything else is
                // not JSON and is kept as written.
                self.flush_high(out);
                out.push_str(&self.esc);
            }
        }
        self.esc.clear();
    }

    /// A high surrogate without its low half stays escaped.
    fn flush_high(&mut self, out: &mut String) {
        if let Some(h) = self.high.take() {
            out.push_str(&format!("\\u{h:04x}"));
        }
    }
}

/// A decoded character written inside a JSON string with the fewest escapes.
fn push_escaped(c: char, out: &mut String) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push(c),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn escapes_become_characters_and_the_json_means_the_same() {
        let cases = [
            (r#"{"k":"\u0073k-abc\/d"}"#, r#"{"k":"sk-abc/d"}"#),
            (r#"{"q":"a\"b\\c\nd\u0001"}"#, r#"{"q":"a\"b\\c\nd\u0001"}"#),
            (
                r#"{"e":"\u00e9\ud83d\ude00"}"#,
                "{\"e\":\"\u{e9}\u{1F600}\"}",
            ),
            (r#"{"q":"\u0022\u005c"}"#, r#"{"q":"\"\\"}"#),
            (
                r#"{"lone":"\ud83dx","bad":"\x"}"#,
                r#"{"lone":"\ud83dx","bad":"\x"}"#,
            ),
            (
                r#"["\u0040", 1, true, "\\u0040"]"#,
                r#"["@", 1, true, "\\u0040"]"#,
            ),
        ];
        for (input, want) in cases {
            let got = Unescape::text(input);
            assert_eq!(got, want, "{input}");
            if let Ok(v) = serde_json::from_str::<Value>(input) {
                assert_eq!(serde_json::from_str::<Value>(&got).unwrap(), v, "{input}");
            }
        }
    }

    #[test]
    fn any_split_gives_the_same_text() {
        let input = r#"{"key":"\u0073\u006b-\ud83d\ude00\"x\/y","n":[1,2]}"#;
        let want = Unescape::text(input);
        let chars: Vec<(usize, char)> = input.char_indices().collect();
        for &(i, _) in &chars {
            for &(j, _) in chars.iter().filter(|(j, _)| *j >= i) {
                let mut u = Unescape::default();
                let mut got = u.push(&input[..i]);
                got += &u.push(&input[i..j]);
                got += &u.push(&input[j..]);
                got += &u.finish();
                assert_eq!(got, want, "split at {i},{j}");
            }
        }
    }
}
