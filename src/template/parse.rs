//! Go text/template subset: source → checked tree.
//!
//! Lexing follows text/template's rules: actions between `{{` and `}}`, `{{- ` and ` -}}`
//! trim the white space (space, tab, CR, LF) of the neighbouring text, `{{/* */}}` comments,
//! strings `"..."` (Go escapes) and `` `raw` ``, numbers, `.field` chains, `$var.field`
//! chains, `|` pipes, `(...)` sub-pipelines, `:=` and `=`. Everything outside the subset is
//! refused here, naming the construct and its line and column.

use super::{Func, TemplateError, MAX_DEPTH, MAX_NODES};
use regex_lite::Regex;
use serde_json::Value as Json;
use std::rc::Rc;

#[derive(Debug)]
pub enum Node {
    Text(String),
    /// `{{ pipeline }}`: prints its value (a declaration or assignment prints nothing).
    Action(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        vars: Vec<Rc<str>>,
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug)]
pub struct Pipeline {
    pub pos: usize,
    /// `$x := ...` (declare) or `$x = ...` (assign).
    pub decl: Option<(Rc<str>, bool)>,
    pub cmds: Vec<Cmd>,
}

#[derive(Debug)]
pub struct Cmd {
    pub pos: usize,
    pub args: Vec<Arg>,
    /// The compiled pattern of a `regexReplaceAll` command.
    pub re: Option<Regex>,
}

#[derive(Debug)]
pub enum Arg {
    /// `.` and `.a.b`: fields of dot.
    Field(Vec<Rc<str>>),
    /// `$x.a.b` (`$` alone is the root data).
    Var(Rc<str>, Vec<Rc<str>>),
    Lit(Json),
    Nil,
    Func(Func),
    /// `(pipeline)`, with a field chain when one follows the `)` directly: `(p).a.b`.
    Pipe(Box<Pipeline>, Vec<Rc<str>>),
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Field(Vec<Rc<str>>),
    Var(Rc<str>, Vec<Rc<str>>),
    Ident(String),
    Lit(Json),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// An action's tokens, with byte offsets in the template.
struct Action {
    pos: usize,
    toks: Vec<(Tok, usize)>,
}

enum Item {
    Text(String),
    Action(Action),
}

const KEYWORDS_REFUSED: &[&str] = &["with", "define", "template", "block", "break", "continue"];

/// Splits the source into text and actions, applying trim markers and dropping comments.
fn items(src: &str) -> Result<Vec<Item>, TemplateError> {
    let b = src.as_bytes();
    let mut out: Vec<Item> = Vec::new();
    let mut i = 0;
    let mut trim_next = false;
    while i <= b.len() {
        let open = src[i..].find("{{").map(|o| i + o);
        let text_end = open.unwrap_or(b.len());
        let mut text = &src[i..text_end];
        if trim_next {
            text = text.trim_start_matches([' ', '\t', '\r', '\n']);
        }
        let Some(open) = open else {
            if !text.is_empty() {
                out.push(Item::Text(text.to_string()));
            }
            break;
        };
        let mut start = open + 2;
        let trim_left =
            b.get(start) == Some(&b'-') && b.get(start + 1).is_some_and(|c| b" \t\r\n".contains(c));
        if trim_left {
            text = text.trim_end_matches([' ', '\t', '\r', '\n']);
            start += 2;
        }
        if !text.is_empty() {
            out.push(Item::Text(text.to_string()));
        }
        // A comment: `{{/* ... */}}`, `{{- /* ... */ -}}`.
        if src[start..].starts_with("/*") {
            let Some(close) = src[start..].find("*/").map(|c| start + c) else {
                return Err(TemplateError::at(src, open, "unclosed comment"));
            };
            let rest = &src[close + 2..];
            let (trim_right, skip) = if rest.starts_with(" -}}") {
                (true, 4)
            } else if rest.starts_with("}}") {
                (false, 2)
            } else {
                return Err(TemplateError::at(
                    src,
                    open,
                    "comment ends before closing delimiter",
                ));
            };
            trim_next = trim_right;
            i = close + 2 + skip;
            continue;
        }
        let (action, end, trim_right) = action(src, open, start)?;
        out.push(Item::Action(action));
        trim_next = trim_right;
        i = end;
    }
    Ok(out)
}

/// Tokens of one action from `start` to its `}}`: (action, offset after `}}`, trim right).
fn action(src: &str, open: usize, start: usize) -> Result<(Action, usize, bool), TemplateError> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = start;
    loop {
        let Some(&c) = b.get(i) else {
            return Err(TemplateError::at(src, open, "unclosed action"));
        };
        if c == b'}' && b.get(i + 1) == Some(&b'}') {
            return Ok((Action { pos: open, toks }, i + 2, false));
        }
        if c == b'-'
            && b.get(i + 1) == Some(&b'}')
            && b.get(i + 2) == Some(&b'}')
            && i > start
            && b.get(i - 1).is_some_and(|p| b" \t\r\n".contains(p))
        {
            return Ok((Action { pos: open, toks }, i + 3, true));
        }
        if c == b' ' || c == b'\t' || c == b'\r' || c == b'\n' {
            i += 1;
            continue;
        }
        let at = i;
        let tok =
            match c {
                b'(' => {
                    i += 1;
                    Tok::LParen
                }
                b')' => {
                    i += 1;
                    Tok::RParen
                }
                b'|' => {
                    i += 1;
                    Tok::Pipe
                }
                b',' => {
                    i += 1;
                    Tok::Comma
                }
                b':' if b.get(i + 1) == Some(&b'=') => {
                    i += 2;
                    Tok::Declare
                }
                b'=' => {
                    i += 1;
                    Tok::Assign
                }
                b'"' | b'`' => {
                    let (s, next) = string(src, i)?;
                    i = next;
                    Tok::Lit(Json::String(s))
                }
                b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    let (fields, next) = fields(src, i)?;
                    i = next;
                    Tok::Field(fields)
                }
                b'$' => {
                    let name_end = ident_end(b, i + 1);
                    let name: Rc<str> = Rc::from(&src[i..name_end]);
                    let (fields, next) = if b.get(name_end) == Some(&b'.') {
                        fields(src, name_end)?
                    } else {
                        (Vec::new(), name_end)
                    };
                    i = next;
                    Tok::Var(name, fields)
                }
                b'0'..=b'9' | b'-' | b'+' | b'.' => {
                    let end = src[i + 1..]
                        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_'))
                        .map_or(b.len(), |e| i + 1 + e);
                    let text = &src[i..end];
                    i = end;
                    Tok::Lit(number(text).ok_or_else(|| {
                        TemplateError::at(src, at, format!("bad number {text:?}"))
                    })?)
                }
                b'\'' => {
                    return Err(TemplateError::at(
                        src,
                        at,
                        "character constants ('x') are not supported",
                    ))
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let end = ident_end(b, i);
                    let word = &src[i..end];
                    i = end;
                    match word {
                        "true" => Tok::Lit(Json::Bool(true)),
                        "false" => Tok::Lit(Json::Bool(false)),
                        _ => Tok::Ident(word.to_string()),
                    }
                }
                _ => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(TemplateError::at(
                        src,
                        at,
                        format!("unexpected {:?} in action", ch),
                    ));
                }
            };
        toks.push((tok, at));
    }
}

fn ident_end(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        i += 1;
    }
    i
}

/// `.a.b.c` from `i` (at a dot); a lone `.` is no fields.
fn fields(src: &str, mut i: usize) -> Result<(Vec<Rc<str>>, usize), TemplateError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    while b.get(i) == Some(&b'.') {
        let end = ident_end(b, i + 1);
        if end == i + 1 {
            if out.is_empty() && b.get(i + 1).is_none_or(|c| *c != b'.') {
                return Ok((out, i + 1));
            }
            return Err(TemplateError::at(src, i, "bad field name"));
        }
        out.push(Rc::from(&src[i + 1..end]));
        i = end;
    }
    Ok((out, i))
}

fn number(text: &str) -> Option<Json> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16).ok().map(Json::from);
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(Json::from(i));
    }
    let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    serde_json::Number::from_f64(f).map(Json::Number)
}

/// A Go string literal at `i`: interpreted ("...", Go escapes) or raw (`...`).
fn string(src: &str, start: usize) -> Result<(String, usize), TemplateError> {
    let b = src.as_bytes();
    let q = b[start];
    let mut i = start + 1;
    let mut out = String::new();
    loop {
        let Some(&c) = b.get(i) else {
            return Err(TemplateError::at(src, start, "unterminated string"));
        };
        if c == q {
            return Ok((out, i + 1));
        }
        if q == b'"' && c == b'\n' {
            return Err(TemplateError::at(
                src,
                start,
                "line break in a quoted string",
            ));
        }
        if q == b'"' && c == b'\\' {
            let e = *b
                .get(i + 1)
                .ok_or_else(|| TemplateError::at(src, i, "unterminated escape"))?;
            i += 2;
            let simple = match e {
                b'\\' => Some('\\'),
                b'"' => Some('"'),
                b'\'' => Some('\''),
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
            let (len, radix, back) = match e {
                b'x' => (2, 16, 0),
                b'u' => (4, 16, 0),
                b'U' => (8, 16, 0),
                b'0'..=b'7' => (3, 8, 1),
                _ => {
                    return Err(TemplateError::at(
                        src,
                        i - 2,
                        format!("invalid escape \\{}", char::from(e)),
                    ))
                }
            };
            i -= back;
            let code = src
                .get(i..i + len)
                .filter(|d| d.chars().all(|ch| ch.is_digit(radix)))
                .and_then(|d| u32::from_str_radix(d, radix).ok())
                .and_then(char::from_u32)
                .ok_or_else(|| TemplateError::at(src, i, "malformed escape"))?;
            out.push(code);
            i += len;
            continue;
        }
        let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
}

pub struct Parser<'s> {
    src: &'s str,
    items: std::vec::IntoIter<Item>,
    peeked: Option<Item>,
    depth: usize,
    /// `range` bodies being parsed: inside one, dot is an element, not the data.
    range_depth: usize,
    nodes: usize,
    /// Declared variables in scope (`$` always is).
    vars: Vec<Rc<str>>,
    /// Top-level fields of the data the template reads (`.req_body` ...), in order.
    pub roots: Vec<Rc<str>>,
}

/// What ended a list of nodes.
enum Close {
    Eof,
    End,
    Else(Action),
}

impl<'s> Parser<'s> {
    pub fn new(src: &'s str) -> Result<Self, TemplateError> {
        Ok(Parser {
            src,
            items: items(src)?.into_iter(),
            peeked: None,
            depth: 0,
            range_depth: 0,
            nodes: 0,
            vars: vec![Rc::from("$")],
            roots: Vec::new(),
        })
    }

    fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError::at(self.src, pos, msg)
    }

    fn count(&mut self, pos: usize) -> Result<(), TemplateError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.err(
                pos,
                format!("template too large (more than {MAX_NODES} nodes)"),
            ));
        }
        Ok(())
    }

    pub fn parse(&mut self) -> Result<Vec<Node>, TemplateError> {
        let (nodes, end) = self.list(0)?;
        match end {
            Close::Eof => Ok(nodes),
            Close::End => Err(self.err(self.src.len(), "unexpected {{end}}")),
            Close::Else(a) => Err(self.err(a.pos, "unexpected {{else}}")),
        }
    }

    fn next(&mut self) -> Option<Item> {
        self.peeked.take().or_else(|| self.items.next())
    }

    /// Nodes up to `{{end}}`, `{{else ...}}` or the end of the source.
    fn list(&mut self, depth: usize) -> Result<(Vec<Node>, Close), TemplateError> {
        if depth > MAX_DEPTH {
            return Err(self.err(
                0,
                format!("template nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        let saved = self.depth;
        self.depth = depth;
        let r = self.list_inner(depth);
        self.depth = saved;
        r
    }

    fn list_inner(&mut self, depth: usize) -> Result<(Vec<Node>, Close), TemplateError> {
        let mut out = Vec::new();
        while let Some(item) = self.next() {
            match item {
                Item::Text(t) => {
                    self.count(0)?;
                    out.push(Node::Text(t));
                }
                Item::Action(a) => {
                    self.count(a.pos)?;
                    let first = a.toks.first().map(|(t, _)| t.clone());
                    match first {
                        Some(Tok::Ident(w)) if w == "end" => {
                            if a.toks.len() > 1 {
                                return Err(self.err(a.pos, "unexpected words after {{end}}"));
                            }
                            return Ok((out, Close::End));
                        }
                        Some(Tok::Ident(w)) if w == "else" => return Ok((out, Close::Else(a))),
                        Some(Tok::Ident(w)) if w == "if" => out.push(self.if_node(a, depth)?),
                        Some(Tok::Ident(w)) if w == "range" => out.push(self.range_node(a, depth)?),
                        Some(Tok::Ident(w)) if KEYWORDS_REFUSED.contains(&w.as_str()) => {
                            return Err(self.err(a.pos, format!("{{{{{w}}}}} is not supported")));
                        }
                        None => return Err(self.err(a.pos, "missing value for command")),
                        _ => {
                            let p = self.pipeline(&a.toks, a.pos, true)?;
                            out.push(Node::Action(p));
                        }
                    }
                }
            }
        }
        Ok((out, Close::Eof))
    }

    fn if_node(&mut self, a: Action, depth: usize) -> Result<Node, TemplateError> {
        let mark = self.vars.len();
        let cond = self.pipeline(a.toks.get(1..).unwrap_or(&[]), a.pos, true)?;
        let (body, mut end) = self.list(depth + 1)?;
        let mut branches = vec![(cond, body)];
        let mut otherwise = Vec::new();
        loop {
            match end {
                Close::End => break,
                Close::Eof => return Err(self.err(a.pos, "{{if}} without {{end}}")),
                Close::Else(e) => {
                    // `{{else if pipeline}}` chains; a plain `{{else}}` ends the chain.
                    match e.toks.get(1) {
                        Some((Tok::Ident(w), _)) if w == "if" => {
                            self.vars.truncate(mark);
                            let cond =
                                self.pipeline(e.toks.get(2..).unwrap_or(&[]), e.pos, true)?;
                            let (body, next) = self.list(depth + 1)?;
                            branches.push((cond, body));
                            end = next;
                        }
                        None => {
                            self.vars.truncate(mark);
                            let (body, next) = self.list(depth + 1)?;
                            if let Close::Else(x) = next {
                                return Err(self.err(x.pos, "{{else}} after {{else}}"));
                            }
                            if matches!(next, Close::Eof) {
                                return Err(self.err(a.pos, "{{if}} without {{end}}"));
                            }
                            otherwise = body;
                            break;
                        }
                        Some((_, p)) => return Err(self.err(*p, "{{else}} takes nothing but 'if'")),
                    }
                }
            }
        }
        self.vars.truncate(mark);
        Ok(Node::If {
            branches,
            otherwise,
        })
    }

    fn range_node(&mut self, a: Action, depth: usize) -> Result<Node, TemplateError> {
        let mark = self.vars.len();
        let toks = a.toks.get(1..).unwrap_or(&[]);
        // `range $v := p` or `range $i, $v := p`.
        let (vars, rest) = match toks {
            [(Tok::Var(v, f), _), (Tok::Declare, _), rest @ ..] if f.is_empty() => {
                (vec![v.clone()], rest)
            }
            [(Tok::Var(i, fi), _), (Tok::Comma, _), (Tok::Var(v, fv), _), (Tok::Declare, _), rest @ ..]
                if fi.is_empty() && fv.is_empty() =>
            {
                (vec![i.clone(), v.clone()], rest)
            }
            _ => (Vec::new(), toks),
        };
        let pipe = self.pipeline(rest, a.pos, false)?;
        self.vars.extend(vars.iter().cloned());
        self.range_depth += 1;
        let r = self.list(depth + 1);
        self.range_depth -= 1;
        let (body, end) = r?;
        let otherwise = match end {
            Close::End => Vec::new(),
            Close::Eof => return Err(self.err(a.pos, "{{range}} without {{end}}")),
            Close::Else(e) => {
                if e.toks.len() > 1 {
                    return Err(self.err(e.pos, "{{else if}} inside {{range}} is not supported"));
                }
                self.vars.truncate(mark);
                let (body, next) = self.list(depth + 1)?;
                if !matches!(next, Close::End) {
                    return Err(self.err(a.pos, "{{range}} without {{end}}"));
                }
                body
            }
        };
        self.vars.truncate(mark);
        Ok(Node::Range {
            vars,
            pipe,
            body,
            otherwise,
        })
    }

    /// `[$x :=|=] cmd | cmd ...` (declarations only where `decl` is allowed).
    fn pipeline(
        &mut self,
        toks: &[(Tok, usize)],
        pos: usize,
        decl_ok: bool,
    ) -> Result<Pipeline, TemplateError> {
        if self.depth > MAX_DEPTH {
            return Err(self.err(pos, "template nested too deeply"));
        }
        let (decl, rest) = match toks {
            [(Tok::Var(v, f), p), (op @ (Tok::Declare | Tok::Assign), _), rest @ ..]
                if f.is_empty() =>
            {
                if !decl_ok {
                    return Err(self.err(*p, "a variable declaration is not allowed here"));
                }
                let declare = *op == Tok::Declare;
                if !declare && !self.vars.contains(v) {
                    return Err(self.err(*p, format!("undefined variable {v}")));
                }
                (Some((v.clone(), declare)), rest)
            }
            _ => (None, toks),
        };
        if rest.is_empty() {
            return Err(self.err(pos, "missing value for command"));
        }
        // Split at the `|` outside parentheses.
        let mut cmds = Vec::new();
        let mut level = 0usize;
        let mut start = 0;
        for (i, (t, _)) in rest.iter().enumerate() {
            match t {
                Tok::LParen => level += 1,
                Tok::RParen => level = level.saturating_sub(1),
                Tok::Pipe if level == 0 => {
                    let part = rest.get(start..i).unwrap_or(&[]);
                    let cpos = part.first().map_or(pos, |(_, p)| *p);
                    cmds.push(self.command(part, cpos, !cmds.is_empty())?);
                    start = i + 1;
                }
                _ => {}
            }
        }
        let part = rest.get(start..).unwrap_or(&[]);
        let cpos = part.first().map_or(pos, |(_, p)| *p);
        cmds.push(self.command(part, cpos, !cmds.is_empty())?);
        if let Some((v, true)) = &decl {
            self.vars.push(v.clone());
        }
        Ok(Pipeline { pos, decl, cmds })
    }

    /// One command; `piped`: it receives the previous command's value as its last argument.
    fn command(
        &mut self,
        toks: &[(Tok, usize)],
        pos: usize,
        piped: bool,
    ) -> Result<Cmd, TemplateError> {
        if toks.is_empty() {
            return Err(self.err(pos, "missing command in pipeline"));
        }
        let mut args = Vec::new();
        let mut i = 0;
        while let Some((t, p)) = toks.get(i) {
            self.count(*p)?;
            i += 1;
            let arg = match t {
                Tok::LParen => {
                    // The matching `)`.
                    let mut level = 1;
                    let start = i;
                    while level > 0 {
                        match toks.get(i) {
                            Some((Tok::LParen, _)) => level += 1,
                            Some((Tok::RParen, _)) => level -= 1,
                            Some(_) => {}
                            None => return Err(self.err(*p, "unclosed '('")),
                        }
                        i += 1;
                    }
                    let inner = toks.get(start..i - 1).unwrap_or(&[]);
                    self.depth += 1;
                    let r = self.pipeline(inner, *p, false);
                    self.depth -= 1;
                    // `(p).a.b`: a field chain written right after the `)`.
                    let close = toks.get(i - 1).map_or(0, |(_, q)| *q);
                    let fields = match toks.get(i) {
                        Some((Tok::Field(f), q)) if *q == close + 1 && !f.is_empty() => {
                            i += 1;
                            f.clone()
                        }
                        _ => Vec::new(),
                    };
                    Arg::Pipe(Box::new(r?), fields)
                }
                Tok::RParen => return Err(self.err(*p, "unexpected ')'")),
                Tok::Field(f) => {
                    if let (Some(first), 0) = (f.first(), self.range_depth) {
                        if !self.roots.contains(first) {
                            self.roots.push(first.clone());
                        }
                    }
                    Arg::Field(f.clone())
                }
                Tok::Var(v, f) => {
                    if !self.vars.contains(v) {
                        return Err(self.err(*p, format!("undefined variable {v}")));
                    }
                    if &**v == "$" {
                        if let Some(first) = f.first() {
                            if !self.roots.contains(first) {
                                self.roots.push(first.clone());
                            }
                        }
                    }
                    Arg::Var(v.clone(), f.clone())
                }
                Tok::Lit(j) => Arg::Lit(j.clone()),
                Tok::Ident(w) if w == "nil" => Arg::Nil,
                Tok::Ident(w) => {
                    if !args.is_empty() {
                        return Err(self.err(
                            *p,
                            format!("function {w} must come first in a command (use parentheses)"),
                        ));
                    }
                    if KEYWORDS_REFUSED.contains(&w.as_str())
                        || ["if", "range", "else", "end"].contains(&w.as_str())
                    {
                        return Err(self.err(*p, format!("unexpected {w} in command")));
                    }
                    Arg::Func(
                        Func::by_name(w).ok_or_else(|| {
                            self.err(*p, format!("function {w:?} is not supported"))
                        })?,
                    )
                }
                Tok::Pipe | Tok::Declare | Tok::Assign | Tok::Comma => {
                    return Err(self.err(*p, "unexpected operator in command"));
                }
            };
            args.push(arg);
        }
        let mut re = None;
        match args.first() {
            Some(Arg::Func(f)) => {
                let n = args.len() - 1 + usize::from(piped);
                let (min, max) = f.arity();
                if n < min || n > max {
                    return Err(self.err(
                        pos,
                        format!(
                            "wrong number of arguments for {}: want {}, got {n}",
                            f.name(),
                            arity_text(min, max)
                        ),
                    ));
                }
                match f {
                    Func::Printf => {
                        let Some(Arg::Lit(Json::String(fmt))) = args.get(1) else {
                            return Err(self.err(pos, "printf needs a string literal format"));
                        };
                        crate::gofmt::check_format(fmt).map_err(|m| self.err(pos, m))?;
                    }
                    Func::RegexReplaceAll => {
                        let Some(Arg::Lit(Json::String(pat))) = args.get(1) else {
                            return Err(
                                self.err(pos, "regexReplaceAll needs a string literal pattern")
                            );
                        };
                        re = Some(
                            regex_lite::RegexBuilder::new(pat)
                                .size_limit(64 * 1024)
                                .build()
                                .map_err(|e| {
                                    self.err(
                                        pos,
                                        format!(
                                            "bad regular expression: {}",
                                            e.to_string().lines().next().unwrap_or("")
                                        ),
                                    )
                                })?,
                        );
                    }
                    _ => {}
                }
            }
            Some(_) if args.len() > 1 || piped => {
                return Err(self.err(
                    pos,
                    "only a function can take arguments (a field, variable or value cannot)",
                ));
            }
            _ => {}
        }
        Ok(Cmd { pos, args, re })
    }
}

fn arity_text(min: usize, max: usize) -> String {
    match (min, max) {
        (a, b) if a == b => a.to_string(),
        (a, usize::MAX) => format!("at least {a}"),
        (a, b) => format!("{a} to {b}"),
    }
}
