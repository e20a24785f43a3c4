//! CEL parser: tokens → checked syntax tree.
//!
//! The grammar is cel-spec's (`doc/langdef.md`), with its precedence from loosest to
//! tightest: `?:`, `||`, `&&`, relations (`== != < <= > >= in`, one level, left to right),
//! `+ -`, `* / %`, unary `! -`, member access (`.f`, `.f(...)`, `[i]`), primaries.
//!
//! Everything that can be decided without the request is decided here, so a configuration
//! that cannot work is refused when the gateway starts, naming the expression position:
//! unknown functions and wrong argument counts, `has()` without a field selection, macros
//! whose variable is not a plain name, `matches()` patterns that do not compile (the pattern
//! must be a literal; it is compiled once, here), identifiers that are not variables of the
//! KrakenD context the expression runs in. Depth and size are bounded: a hostile expression
//! cannot exhaust the stack when parsed, evaluated or dropped.

use super::lex::{Tok, Token};
use super::{CelError, MAX_DEPTH, MAX_NODES};
use regex_lite::Regex;
use std::rc::Rc;

/// A literal value.
#[derive(Clone, Debug)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(Rc<str>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// The functions tollgate evaluates (the CEL standard ones KrakenD's docs use, plus
/// KrakenD's own macros). Anything else is refused when compiled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Func {
    Size,
    ToInt,
    ToUint,
    ToDouble,
    ToString,
    ToBool,
    ToTimestamp,
    ToDuration,
    Dyn,
    StartsWith,
    EndsWith,
    Contains,
    LowerAscii,
    UpperAscii,
    /// A timestamp or duration accessor; the name is kept in the node.
    TimeField,
    // KrakenD policy macros
    GetCookie,
    ContainsCookie,
    HasQuerystring,
    Between,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Macro {
    All,
    Exists,
    ExistsOne,
}

#[derive(Debug)]
pub struct Node {
    pub pos: usize,
    pub kind: Kind,
}

#[derive(Debug)]
pub enum Kind {
    Lit(Lit),
    Ident(Rc<str>),
    /// `operand.field`; `test` for `has(operand.field)`.
    Select {
        operand: Box<Node>,
        field: Rc<str>,
        test: bool,
    },
    Index {
        operand: Box<Node>,
        index: Box<Node>,
    },
    Call {
        func: Func,
        name: Rc<str>,
        target: Option<Box<Node>>,
        args: Vec<Node>,
    },
    /// `x.matches('re')` / `matches(x, 're')` with the pattern compiled at configuration.
    Matches {
        operand: Box<Node>,
        re: Regex,
    },
    List(Vec<Node>),
    Map(Vec<(Node, Node)>),
    Not(Box<Node>),
    Neg(Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Comprehension {
        kind: Macro,
        range: Box<Node>,
        var: Rc<str>,
        body: Box<Node>,
    },
}

/// Functions called as `f(args)`: name, function, argument count.
const GLOBAL: &[(&str, Func, usize)] = &[
    ("size", Func::Size, 1),
    ("int", Func::ToInt, 1),
    ("uint", Func::ToUint, 1),
    ("double", Func::ToDouble, 1),
    ("string", Func::ToString, 1),
    ("bool", Func::ToBool, 1),
    ("timestamp", Func::ToTimestamp, 1),
    ("duration", Func::ToDuration, 1),
    ("dyn", Func::Dyn, 1),
    ("getCookie", Func::GetCookie, 1),
    ("hasQuerystring", Func::HasQuerystring, 1),
    ("between", Func::Between, 3),
];

/// Functions called as `target.f(args)`: name, function, argument count (target excluded).
const METHODS: &[(&str, Func, usize)] = &[
    ("size", Func::Size, 0),
    ("startsWith", Func::StartsWith, 1),
    ("endsWith", Func::EndsWith, 1),
    ("contains", Func::Contains, 1),
    ("lowerAscii", Func::LowerAscii, 0),
    ("upperAscii", Func::UpperAscii, 0),
    ("containsCookie", Func::ContainsCookie, 2),
    ("between", Func::Between, 2),
    ("getFullYear", Func::TimeField, 0),
    ("getMonth", Func::TimeField, 0),
    ("getDate", Func::TimeField, 0),
    ("getDayOfMonth", Func::TimeField, 0),
    ("getDayOfWeek", Func::TimeField, 0),
    ("getDayOfYear", Func::TimeField, 0),
    ("getHours", Func::TimeField, 0),
    ("getMinutes", Func::TimeField, 0),
    ("getSeconds", Func::TimeField, 0),
    ("getMilliseconds", Func::TimeField, 0),
];

/// Functions KrakenD documents that tollgate refuses, with the reason.
const REFUSED: &[(&str, &str)] = &[
    (
        "geoIP",
        "needs KrakenD's GeoIP database, which tollgate does not have",
    ),
    ("type", "type values are not supported"),
    ("bytes", "bytes values are not supported"),
    ("map", "the map() macro is not supported (use exists/all)"),
    (
        "filter",
        "the filter() macro is not supported (use exists/all)",
    ),
];

/// Largest regex program a `matches()` pattern may compile to.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

pub struct Parser<'t> {
    toks: &'t [Token],
    at: usize,
    depth: usize,
    nodes: usize,
    /// Free variables the expression reads, in order of first use.
    pub vars: Vec<(Rc<str>, usize)>,
}

type PResult = Result<Node, CelError>;

impl<'t> Parser<'t> {
    pub fn new(toks: &'t [Token]) -> Self {
        Parser {
            toks,
            at: 0,
            depth: 0,
            nodes: 0,
            vars: Vec::new(),
        }
    }

    fn peek(&self) -> &Tok {
        self.toks.get(self.at).map_or(&Tok::Eof, |t| &t.tok)
    }
    fn pos(&self) -> usize {
        self.toks
            .get(self.at)
            .or(self.toks.last())
            .map_or(0, |t| t.pos)
    }
    fn bump(&mut self) {
        if self.at < self.toks.len() {
            self.at += 1;
        }
    }
    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }
    fn eat(&mut self, p: &str) -> bool {
        let hit = self.is(p);
        if hit {
            self.bump();
        }
        hit
    }
    fn expect(&mut self, p: &str) -> Result<(), CelError> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(CelError::new(
                self.pos(),
                format!("expected '{p}', found {}", describe(self.peek())),
            ))
        }
    }

    fn node(&mut self, pos: usize, kind: Kind) -> PResult {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(CelError::new(
                pos,
                format!("expression too large (more than {MAX_NODES} nodes)"),
            ));
        }
        Ok(Node { pos, kind })
    }

    /// Every recursive rule enters here, so nesting is bounded (the tree's depth is bounded
    /// by the same count: each level of the tree is one level of recursion).
    fn enter(&mut self) -> Result<(), CelError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CelError::new(
                self.pos(),
                format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }
    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    pub fn parse(&mut self) -> PResult {
        let e = self.expr()?;
        if !matches!(self.peek(), Tok::Eof) {
            return Err(CelError::new(
                self.pos(),
                format!("unexpected {}", describe(self.peek())),
            ));
        }
        Ok(e)
    }

    fn expr(&mut self) -> PResult {
        self.enter()?;
        let r = self.expr_inner();
        self.leave();
        r
    }

    fn expr_inner(&mut self) -> PResult {
        let cond = self.or()?;
        if self.is("?") {
            let pos = self.pos();
            self.bump();
            let a = self.or()?;
            self.expect(":")?;
            let b = self.expr()?;
            return self.node(pos, Kind::Cond(Box::new(cond), Box::new(a), Box::new(b)));
        }
        Ok(cond)
    }

    /// Left-associative chains build left-deep trees: each link is one more level, counted
    /// against the depth limit like a recursion.
    fn chain(&mut self, levels: &mut usize) -> Result<(), CelError> {
        *levels += 1;
        self.enter()
    }
    fn unchain(&mut self, levels: usize) {
        self.depth = self.depth.saturating_sub(levels);
    }

    fn or(&mut self) -> PResult {
        let mut levels = 0;
        let r = (|| {
            let mut l = self.and()?;
            while self.is("||") {
                let pos = self.pos();
                self.bump();
                self.chain(&mut levels)?;
                let r = self.and()?;
                l = self.node(pos, Kind::Or(Box::new(l), Box::new(r)))?;
            }
            Ok(l)
        })();
        self.unchain(levels);
        r
    }

    fn and(&mut self) -> PResult {
        let mut levels = 0;
        let r = (|| {
            let mut l = self.relation()?;
            while self.is("&&") {
                let pos = self.pos();
                self.bump();
                self.chain(&mut levels)?;
                let r = self.relation()?;
                l = self.node(pos, Kind::And(Box::new(l), Box::new(r)))?;
            }
            Ok(l)
        })();
        self.unchain(levels);
        r
    }

    fn relation(&mut self) -> PResult {
        let mut levels = 0;
        let r = (|| {
            let mut l = self.addition()?;
            loop {
                let op = match self.peek() {
                    Tok::Punct("==") => BinOp::Eq,
                    Tok::Punct("!=") => BinOp::Ne,
                    Tok::Punct("<") => BinOp::Lt,
                    Tok::Punct("<=") => BinOp::Le,
                    Tok::Punct(">") => BinOp::Gt,
                    Tok::Punct(">=") => BinOp::Ge,
                    Tok::Ident(w) if w == "in" => BinOp::In,
                    _ => return Ok(l),
                };
                let pos = self.pos();
                self.bump();
                self.chain(&mut levels)?;
                let r = self.addition()?;
                l = self.node(pos, Kind::Binary(op, Box::new(l), Box::new(r)))?;
            }
        })();
        self.unchain(levels);
        r
    }

    fn addition(&mut self) -> PResult {
        let mut levels = 0;
        let r = (|| {
            let mut l = self.multiplication()?;
            loop {
                let op = match self.peek() {
                    Tok::Punct("+") => BinOp::Add,
                    Tok::Punct("-") => BinOp::Sub,
                    _ => return Ok(l),
                };
                let pos = self.pos();
                self.bump();
                self.chain(&mut levels)?;
                let r = self.multiplication()?;
                l = self.node(pos, Kind::Binary(op, Box::new(l), Box::new(r)))?;
            }
        })();
        self.unchain(levels);
        r
    }

    fn multiplication(&mut self) -> PResult {
        let mut levels = 0;
        let r = (|| {
            let mut l = self.unary()?;
            loop {
                let op = match self.peek() {
                    Tok::Punct("*") => BinOp::Mul,
                    Tok::Punct("/") => BinOp::Div,
                    Tok::Punct("%") => BinOp::Rem,
                    _ => return Ok(l),
                };
                let pos = self.pos();
                self.bump();
                self.chain(&mut levels)?;
                let r = self.unary()?;
                l = self.node(pos, Kind::Binary(op, Box::new(l), Box::new(r)))?;
            }
        })();
        self.unchain(levels);
        r
    }

    fn unary(&mut self) -> PResult {
        self.enter()?;
        let r = self.unary_inner();
        self.leave();
        r
    }

    fn unary_inner(&mut self) -> PResult {
        let pos = self.pos();
        if self.eat("!") {
            let e = self.unary()?;
            return self.node(pos, Kind::Not(Box::new(e)));
        }
        if self.eat("-") {
            // `-9223372036854775808` is the only way to write i64::MIN.
            if matches!(self.peek(), Tok::IntMinMagnitude) {
                self.bump();
                let lit = self.node(pos, Kind::Lit(Lit::Int(i64::MIN)))?;
                return self.member_suffix(lit);
            }
            let e = self.unary()?;
            return self.node(pos, Kind::Neg(Box::new(e)));
        }
        self.member()
    }

    fn member(&mut self) -> PResult {
        let p = self.primary()?;
        self.member_suffix(p)
    }

    fn member_suffix(&mut self, mut e: Node) -> PResult {
        let mut levels = 0;
        let r = (|| loop {
            let pos = self.pos();
            if self.eat(".") {
                self.chain(&mut levels)?;
                let Tok::Ident(name) = self.peek().clone() else {
                    return Err(CelError::new(
                        self.pos(),
                        format!(
                            "expected a field name after '.', found {}",
                            describe(self.peek())
                        ),
                    ));
                };
                self.bump();
                if self.is("(") {
                    self.bump();
                    let args = self.args(")")?;
                    e = self.method(pos, e, &name, args)?;
                } else {
                    e = self.node(
                        pos,
                        Kind::Select {
                            operand: Box::new(e),
                            field: Rc::from(name.as_str()),
                            test: false,
                        },
                    )?;
                }
            } else if self.eat("[") {
                self.chain(&mut levels)?;
                let index = self.expr()?;
                self.expect("]")?;
                e = self.node(
                    pos,
                    Kind::Index {
                        operand: Box::new(e),
                        index: Box::new(index),
                    },
                )?;
            } else {
                return Ok(e);
            }
        })();
        self.unchain(levels);
        r
    }

    /// Comma-separated expressions up to `close` (a trailing comma is allowed).
    fn args(&mut self, close: &str) -> Result<Vec<Node>, CelError> {
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(self.expr()?);
            if self.eat(close) {
                return Ok(out);
            }
            self.expect(",")?;
            if self.eat(close) {
                return Ok(out);
            }
        }
    }

    fn primary(&mut self) -> PResult {
        let pos = self.pos();
        let tok = self.peek().clone();
        self.bump();
        match tok {
            Tok::Int(v) => self.node(pos, Kind::Lit(Lit::Int(v))),
            Tok::Uint(v) => self.node(pos, Kind::Lit(Lit::Uint(v))),
            Tok::Double(v) => self.node(pos, Kind::Lit(Lit::Double(v))),
            Tok::Str(s) => self.node(pos, Kind::Lit(Lit::Str(Rc::from(s.as_str())))),
            Tok::IntMinMagnitude => Err(CelError::new(pos, "integer literal out of range")),
            Tok::Punct("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Punct("[") => {
                let items = self.args("]")?;
                self.node(pos, Kind::List(items))
            }
            Tok::Punct("{") => self.map_literal(pos),
            Tok::Punct(".") => Err(CelError::new(
                pos,
                "qualified names with a leading '.' are not supported",
            )),
            Tok::Ident(name) => match name.as_str() {
                "true" => self.node(pos, Kind::Lit(Lit::Bool(true))),
                "false" => self.node(pos, Kind::Lit(Lit::Bool(false))),
                "null" => self.node(pos, Kind::Lit(Lit::Null)),
                "in" => Err(CelError::new(pos, "unexpected 'in'")),
                _ if self.is("(") => {
                    self.bump();
                    self.global_call(pos, &name)
                }
                _ if self.is("{") => Err(CelError::new(
                    pos,
                    format!("message construction '{name}{{...}}' is not supported"),
                )),
                _ => {
                    let name: Rc<str> = Rc::from(name.as_str());
                    if !self.vars.iter().any(|(v, _)| *v == name) {
                        self.vars.push((name.clone(), pos));
                    }
                    self.node(pos, Kind::Ident(name))
                }
            },
            Tok::Eof => Err(CelError::new(pos, "unexpected end of expression")),
            Tok::Punct(p) => Err(CelError::new(pos, format!("unexpected '{p}'"))),
        }
    }

    fn map_literal(&mut self, pos: usize) -> PResult {
        let mut entries = Vec::new();
        if !self.eat("}") {
            loop {
                let k = self.expr()?;
                if !matches!(k.kind, Kind::Lit(Lit::Str(_))) {
                    return Err(CelError::new(
                        k.pos,
                        "map literal keys must be string literals",
                    ));
                }
                self.expect(":")?;
                let v = self.expr()?;
                entries.push((k, v));
                if self.eat("}") {
                    break;
                }
                self.expect(",")?;
                if self.eat("}") {
                    break;
                }
            }
        }
        self.node(pos, Kind::Map(entries))
    }

    fn global_call(&mut self, pos: usize, name: &str) -> PResult {
        if name == "has" {
            let mut args = self.args(")")?;
            return match (args.len(), args.pop()) {
                (1, Some(Node { kind: Kind::Select { operand, field, .. }, pos: spos })) => {
                    self.node(spos, Kind::Select { operand, field, test: true })
                }
                _ => Err(CelError::new(pos, "has() takes one field selection, like has(JWT.user_id) (for a key with other characters use 'key' in map)")),
            };
        }
        let args = self.args(")")?;
        if name == "matches" {
            let mut it = args.into_iter();
            return match (it.next(), it.next(), it.next()) {
                (Some(operand), Some(pattern), None) => self.matches(pos, operand, pattern),
                _ => Err(CelError::new(pos, "matches() takes 2 arguments")),
            };
        }
        if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
            return Err(CelError::new(
                pos,
                format!("{name}() is not supported: {why}"),
            ));
        }
        let Some(&(_, func, arity)) = GLOBAL.iter().find(|(n, _, _)| *n == name) else {
            return Err(CelError::new(pos, format!("unknown function {name}()")));
        };
        if args.len() != arity {
            return Err(CelError::new(
                pos,
                format!("{name}() takes {arity} argument(s), got {}", args.len()),
            ));
        }
        // KrakenD's request macros read the request's headers or query string.
        let implicit = match func {
            Func::GetCookie => Some("req_headers"),
            Func::HasQuerystring => Some("req_querystring"),
            _ => None,
        };
        if let Some(v) = implicit {
            if !self.vars.iter().any(|(n, _)| &**n == v) {
                self.vars.push((Rc::from(v), pos));
            }
        }
        self.node(
            pos,
            Kind::Call {
                func,
                name: Rc::from(name),
                target: None,
                args,
            },
        )
    }

    fn method(&mut self, pos: usize, target: Node, name: &str, mut args: Vec<Node>) -> PResult {
        match name {
            "matches" => {
                return match (args.len(), args.pop()) {
                    (1, Some(pattern)) => self.matches(pos, target, pattern),
                    _ => Err(CelError::new(pos, "matches() takes 1 argument")),
                };
            }
            "all" | "exists" | "exists_one" => {
                let kind = match name {
                    "all" => Macro::All,
                    "exists" => Macro::Exists,
                    _ => Macro::ExistsOne,
                };
                return self.comprehension(pos, kind, target, args);
            }
            _ => {}
        }
        if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
            return Err(CelError::new(
                pos,
                format!("{name}() is not supported: {why}"),
            ));
        }
        let Some(&(_, func, arity)) = METHODS.iter().find(|(n, _, _)| *n == name) else {
            return Err(CelError::new(pos, format!("unknown method .{name}()")));
        };
        if func == Func::TimeField && !args.is_empty() {
            return Err(CelError::new(
                pos,
                format!(".{name}() with a time zone is not supported (times are UTC)"),
            ));
        }
        if args.len() != arity {
            return Err(CelError::new(
                pos,
                format!(".{name}() takes {arity} argument(s), got {}", args.len()),
            ));
        }
        self.node(
            pos,
            Kind::Call {
                func,
                name: Rc::from(name),
                target: Some(Box::new(target)),
                args,
            },
        )
    }

    /// The pattern is a string literal, compiled now (RE2 syntax, unanchored, as CEL's
    /// `matches`): no regex is ever compiled while a request waits.
    fn matches(&mut self, pos: usize, operand: Node, pattern: Node) -> PResult {
        let Kind::Lit(Lit::Str(p)) = &pattern.kind else {
            return Err(CelError::new(
                pattern.pos,
                "matches() needs a string literal pattern",
            ));
        };
        let re = regex_lite::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                CelError::new(
                    pattern.pos,
                    format!("bad regular expression: {}", first_line(&e.to_string())),
                )
            })?;
        self.node(
            pos,
            Kind::Matches {
                operand: Box::new(operand),
                re,
            },
        )
    }

    /// `range.all(x, body)` and friends: the body is parsed with `x` bound; `x` must be a
    /// simple name that is not a KrakenD variable.
    fn comprehension(&mut self, pos: usize, kind: Macro, range: Node, args: Vec<Node>) -> PResult {
        let mut it = args.into_iter();
        let (Some(var), Some(body), None) = (it.next(), it.next(), it.next()) else {
            return Err(CelError::new(
                pos,
                "exists()/all()/exists_one() take 2 arguments: a name and a condition",
            ));
        };
        let Kind::Ident(name) = var.kind else {
            return Err(CelError::new(
                var.pos,
                "the first argument of exists()/all()/exists_one() must be a simple name",
            ));
        };
        // The body was parsed before we knew `name` was bound: take it back out of the free
        // variables if it was recorded there only by this body.
        if let Some(i) = self
            .vars
            .iter()
            .position(|(v, p)| *v == name && *p >= var.pos)
        {
            self.vars.remove(i);
        }
        self.node(
            pos,
            Kind::Comprehension {
                kind,
                range: Box::new(range),
                var: name,
                body: Box::new(body),
            },
        )
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Int(_) | Tok::Uint(_) | Tok::Double(_) | Tok::IntMinMagnitude => "a number".into(),
        Tok::Str(_) => "a string".into(),
        Tok::Punct(p) => format!("'{p}'"),
        Tok::Eof => "the end of the expression".into(),
    }
}
