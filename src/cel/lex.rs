//! CEL tokens (cel-spec `doc/langdef.md`, "Syntax"): identifiers, int/uint/double/string
//! literals with every escape, operators. Byte offsets are kept for error positions.

use super::CelError;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(String),
    /// `-9223372036854775808` can only be written as a negated literal: its magnitude is
    /// kept here until the parser sees the minus.
    IntMinMagnitude,
    Punct(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub pos: usize,
}

/// Words CEL reserves: refused as identifiers.
const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

const PUNCT: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", ".", ",",
    "(", ")", "[", "]", "{", "}",
];

pub fn tokenize(src: &str) -> Result<Vec<Token>, CelError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        // String literals, with optional r/R (raw) or b/B (bytes: refused) prefixes.
        let prefix_len = match (c, b.get(i + 1)) {
            (b'r' | b'R', Some(b'"' | b'\'')) => 1,
            (b'b' | b'B', Some(b'"' | b'\'')) => 1,
            (b'r' | b'R', Some(b'b' | b'B')) | (b'b' | b'B', Some(b'r' | b'R'))
                if matches!(b.get(i + 2), Some(b'"' | b'\'')) =>
            {
                2
            }
            _ => 0,
        };
        if prefix_len > 0 || c == b'"' || c == b'\'' {
            let prefix = &src[i..i + prefix_len];
            if prefix.contains(['b', 'B']) {
                return Err(CelError::new(
                    start,
                    "bytes literals (b'...') are not supported",
                ));
            }
            let raw = !prefix.is_empty();
            let (s, next) = string_lit(src, i + prefix_len, raw)?;
            out.push(Token {
                tok: Tok::Str(s),
                pos: start,
            });
            i = next;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let (tok, next) = number(src, i)?;
            out.push(Token { tok, pos: start });
            i = next;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &src[start..i];
            if RESERVED.contains(&word) {
                return Err(CelError::new(
                    start,
                    format!("'{word}' is a reserved word in CEL"),
                ));
            }
            out.push(Token {
                tok: Tok::Ident(word.to_string()),
                pos: start,
            });
            continue;
        }
        match PUNCT.iter().find(|p| b[i..].starts_with(p.as_bytes())) {
            Some(p) => {
                out.push(Token {
                    tok: Tok::Punct(p),
                    pos: start,
                });
                i += p.len();
            }
            None => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(CelError::new(
                    start,
                    format!("unexpected character '{}'", ch.escape_default()),
                ));
            }
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: b.len(),
    });
    Ok(out)
}

/// An int (`42`, `0x2A`), uint (`42u`) or double (`4.2`, `.5`, `1e3`) literal.
fn number(src: &str, start: usize) -> Result<(Tok, usize), CelError> {
    let b = src.as_bytes();
    let mut i = start;
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        let ds = i;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i == ds {
            return Err(CelError::new(start, "hexadecimal literal without digits"));
        }
        let digits = &src[ds..i];
        return int_suffix(src, start, i, u64::from_str_radix(digits, 16).ok());
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut is_double = false;
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        is_double = true;
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            is_double = true;
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    if is_double {
        let v: f64 = src[start..i]
            .parse()
            .map_err(|_| CelError::new(start, "malformed double literal"))?;
        if !v.is_finite() {
            return Err(CelError::new(start, "double literal out of range"));
        }
        return Ok((Tok::Double(v), i));
    }
    let digits = &src[start..i];
    int_suffix(src, start, i, digits.parse::<u64>().ok())
}

fn int_suffix(
    src: &str,
    start: usize,
    end: usize,
    value: Option<u64>,
) -> Result<(Tok, usize), CelError> {
    let b = src.as_bytes();
    let value = value.ok_or_else(|| CelError::new(start, "integer literal out of range"))?;
    if matches!(b.get(end), Some(b'u' | b'U')) {
        return Ok((Tok::Uint(value), end + 1));
    }
    if b.get(end)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        return Err(CelError::new(start, "malformed number literal"));
    }
    match i64::try_from(value) {
        Ok(v) => Ok((Tok::Int(v), end)),
        Err(_) if value == 1u64 << 63 => Ok((Tok::IntMinMagnitude, end)),
        Err(_) => Err(CelError::new(start, "integer literal out of range")),
    }
}

/// A quoted string starting at `start` (the quote): single, double or triple quotes; escapes
/// `\\ \' \" \` \? \a \b \f \n \r \t \v \xHH \uHHHH \UHHHHHHHH \ooo` unless raw.
fn string_lit(src: &str, start: usize, raw: bool) -> Result<(String, usize), CelError> {
    let b = src.as_bytes();
    let q = b[start];
    let triple = b.get(start + 1) == Some(&q) && b.get(start + 2) == Some(&q);
    let mut i = start + if triple { 3 } else { 1 };
    let mut out = String::new();
    loop {
        let Some(&c) = b.get(i) else {
            return Err(CelError::new(start, "unterminated string literal"));
        };
        if c == q && (!triple || (b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q))) {
            return Ok((out, i + if triple { 3 } else { 1 }));
        }
        if !triple && (c == b'\n' || c == b'\r') {
            return Err(CelError::new(
                start,
                "line break in a single-quoted string literal",
            ));
        }
        if c == b'\\' && !raw {
            let esc_pos = i;
            let e = *b
                .get(i + 1)
                .ok_or_else(|| CelError::new(esc_pos, "unterminated escape"))?;
            i += 2;
            let simple = match e {
                b'\\' => Some('\\'),
                b'\'' => Some('\''),
                b'"' => Some('"'),
                b'`' => Some('`'),
                b'?' => Some('?'),
                b'a' => Some('\u{7}'),
                b'b' => Some('\u{8}'),
                b'f' => Some('\u{c}'),
                b'n' => Some('\n'),
                b'r' => Some('\r'),
                b't' => Some('\t'),
                b'v' => Some('\u{b}'),
                _ => None,
            };
            if let Some(ch) = simple {
                out.push(ch);
                continue;
            }
            let (len, radix) = match e {
                b'x' | b'X' => (2, 16),
                b'u' => (4, 16),
                b'U' => (8, 16),
                b'0'..=b'3' => {
                    i -= 1;
                    (3, 8)
                }
                _ => {
                    return Err(CelError::new(
                        esc_pos,
                        format!("invalid escape '\\{}'", char::from(e)),
                    ))
                }
            };
            let digits = src
                .get(i..i + len)
                .filter(|d| d.chars().all(|c| c.is_digit(radix)))
                .ok_or_else(|| CelError::new(esc_pos, "malformed escape sequence"))?;
            let code = u32::from_str_radix(digits, radix)
                .map_err(|_| CelError::new(esc_pos, "malformed escape sequence"))?;
            let ch = char::from_u32(code)
                .ok_or_else(|| CelError::new(esc_pos, "escape is not a Unicode scalar value"))?;
            out.push(ch);
            i += len;
            continue;
        }
        // Copy one UTF-8 character.
        let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
}
