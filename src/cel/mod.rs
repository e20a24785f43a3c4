//! CEL (Common Expression Language), the subset KrakenD's documentation and published
//! configurations use, compiled at configuration and evaluated per request.
//!
//! Why not a CEL crate: measured on the release .wasm (opt-level "s", LTO) with a probe that
//! compiles and runs one expression, `cel-interpreter` 0.10 grew it from 973 KB to 2,520 KB
//! (1,573 KB without its default `regex`/`chrono` features); `cel` 0.15 (its successor, an
//! ANTLR parser) costs more. DESIGN's budget is 1 MB. This module costs a few tens of KB
//! (docs/cel-and-templates.md has the numbers) and reuses `regex-lite`.
//!
//! # What it accepts
//! cel-spec syntax with its precedence: `?:`, `||`, `&&`, `== != < <= > >= in`, `+ - * / %`,
//! unary `! -`, `.field`, `[index]`, calls; literals null, bool, int (`42`, `0x2A`), uint
//! (`42u`), double, strings (single, double, triple quotes, raw `r'..'`, every escape); list
//! and map literals (string keys). Functions: `size`, `int`, `uint`, `double`, `string`,
//! `bool`, `timestamp`, `duration`, `dyn`, `has(a.b)`, `matches` (literal RE2-style
//! pattern, compiled here), `startsWith`, `endsWith`, `contains`, `lowerAscii`,
//! `upperAscii`, the timestamp accessors (`getDayOfWeek()` ..., UTC) and duration
//! accessors, the macros `all`, `exists`, `exists_one`; KrakenD's policy macros
//! `getCookie(name)`, `req_headers.containsCookie(name, value)`, `hasQuerystring(name)`,
//! `between(v, lo, hi)` / `v.between(lo, hi)`. Refused when compiled, with the position:
//! bytes literals, message construction, `geoIP()` (needs KrakenD's GeoIP database),
//! `map`/`filter` macros, `type()`, time-zone arguments, any other function, and any
//! identifier that is not a variable of the [`Scope`] the expression is compiled for.
//!
//! # Variables per KrakenD use ([`Scope`])
//! Names and shapes are krakend-cel's (`internal/cel.go` `defaultDeclarations`, `proxy.go`
//! `newReqActivation`/`newRespActivation`, `rejecter.go`; docs
//! <https://www.krakend.io/docs/endpoints/common-expression-language-cel/>):
//! - request: `req_method` string, `req_path` string, `req_params` map<string,string> (the
//!   endpoint's `{param}`s with the first letter upper-cased: [`param_key`]; with the
//!   sequential proxy also `Resp0_field`), `req_headers` map<string,list<string>> (canonical
//!   names `X-User-Id`: [`canonical_header_key`]), `req_querystring` map<string,list<string>>
//!   (names as sent), `now` string (RFC 3339, read with `timestamp(now)`);
//! - response: `resp_completed` bool, `resp_metadata_status` int, `resp_metadata_headers`
//!   map<string,list<string>>, `resp_data` map (the decoded JSON body), `now`;
//! - JWT: `JWT` map (the token's claims), `now`;
//! - quota tier (`governance/quota` tiers with `tier_value_as: "policy"`): `value`, the
//!   tier key's value as a string (krakend/examples `governance`: `value.matches('free.*')`).
//!
//! `security/policies` uses the same names (KrakenD: "If you have existing validation using
//! the CEL Component, you can also port them as policies"; the playground's response policy
//! reads `resp_data.label`): `req` policies see the request variables, `resp` policies the
//! response ones, `jwt` policies `JWT`. `backend/conditional` with `strategy: "policy"` sees
//! the request variables.
//!
//! # Evaluation
//! [`Program::eval`] gives the value; [`Program::check`] what KrakenD does with a check:
//! pass only on `true` (an error or any other value rejects). Cost ([`MAX_COST`]), built
//! strings and lists, nesting and size are bounded; nothing panics (`tests/fuzz.rs`
//! `cel` target). JSON numbers are doubles, as in KrakenD; numbers compare across types.

mod eval;
mod lex;
mod parse;
mod time;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;
use std::rc::Rc;

pub use time::{Duration, Timestamp};
pub use value::{canonical_header_key, param_key, List, Map, Str, Value};

/// Longest expression accepted (bytes).
pub const MAX_EXPR_LEN: usize = 8 * 1024;
/// Deepest nesting of the syntax tree.
pub const MAX_DEPTH: usize = 64;
/// Most syntax-tree nodes in one expression.
pub const MAX_NODES: usize = 2_000;
/// Evaluation budget: one unit per node evaluated, per macro iteration, per list element
/// compared and per 64 bytes a string operation reads.
pub const MAX_COST: u64 = 100_000;
/// Longest string an expression may build (bytes).
pub const MAX_STRING: usize = 64 * 1024;
/// Longest list an expression may build.
pub const MAX_LIST: usize = 10_000;

/// An expression refused at configuration: the byte offset in the expression and why.
#[derive(Debug, Clone, PartialEq)]
pub struct CelError {
    pub pos: usize,
    pub message: String,
}

impl CelError {
    fn new(pos: usize, message: impl Into<String>) -> Self {
        CelError {
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for CelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {}: {}", self.pos, self.message)
    }
}

impl std::error::Error for CelError {}

/// An evaluation that failed (a missing key, an overflow, the cost limit): KrakenD treats
/// it as a failed check. The message never quotes request data.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError {
    pub pos: usize,
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {}: {}", self.pos, self.message)
    }
}

impl std::error::Error for EvalError {}

/// Where an expression runs, which decides the variables it may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `validation/cel` `check_expr`: request, response and JWT variables (the wiring runs
    /// it in each phase whose variables it reads: see [`Program::reads_request`]).
    Validation,
    /// `security/policies` `req` and `backend/conditional` `strategy: "policy"`.
    Request,
    /// `security/policies` `resp`.
    Response,
    /// `security/policies` `jwt`.
    Jwt,
    /// `governance/quota` tier with `tier_value_as: "policy"`.
    QuotaTier,
}

/// Request variables (krakend-cel `newReqActivation`).
pub const REQUEST_VARS: &[&str] = &[
    "req_method",
    "req_path",
    "req_params",
    "req_headers",
    "req_querystring",
];
/// Response variables (krakend-cel `newRespActivation`).
pub const RESPONSE_VARS: &[&str] = &[
    "resp_completed",
    "resp_metadata_status",
    "resp_metadata_headers",
    "resp_data",
];
/// The JWT rejecter's variable (krakend-cel `rejecter.go`).
pub const JWT_VAR: &str = "JWT";
/// The current time, in every scope but the quota tier.
pub const NOW_VAR: &str = "now";
/// The tier key's value in a quota tier policy.
pub const TIER_VAR: &str = "value";

impl Scope {
    fn allows(self, name: &str) -> bool {
        let req = REQUEST_VARS.contains(&name);
        let resp = RESPONSE_VARS.contains(&name);
        let jwt = name == JWT_VAR;
        let now = name == NOW_VAR;
        match self {
            Scope::Validation => req || resp || jwt || now,
            Scope::Request => req || now,
            Scope::Response => resp || now,
            Scope::Jwt => jwt || now,
            Scope::QuotaTier => name == TIER_VAR,
        }
    }
    fn names(self) -> String {
        let mut v: Vec<&str> = Vec::new();
        if matches!(self, Scope::Validation | Scope::Request) {
            v.extend(REQUEST_VARS);
        }
        if matches!(self, Scope::Validation | Scope::Response) {
            v.extend(RESPONSE_VARS);
        }
        if matches!(self, Scope::Validation | Scope::Jwt) {
            v.push(JWT_VAR);
        }
        if self == Scope::QuotaTier {
            v.push(TIER_VAR);
        } else {
            v.push(NOW_VAR);
        }
        v.join(", ")
    }
}

/// The variables one evaluation reads. Build it per request with the names of [`Scope`];
/// values borrow the request's data ([`Value::str`], [`Value::from_json`],
/// [`Value::string_lists`]).
#[derive(Default, Debug)]
pub struct Activation<'a> {
    vars: Vec<(&'a str, Value<'a>)>,
}

impl<'a> Activation<'a> {
    pub fn new() -> Self {
        Activation { vars: Vec::new() }
    }
    /// Sets a variable (replacing an earlier value of the same name).
    pub fn bind(&mut self, name: &'a str, value: Value<'a>) -> &mut Self {
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
        self
    }
    pub fn get(&self, name: &str) -> Option<&Value<'a>> {
        self.vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// A compiled expression.
#[derive(Debug)]
pub struct Program {
    root: parse::Node,
    vars: Vec<Rc<str>>,
}

impl Program {
    /// Compiles an expression that may read every KrakenD variable ([`Scope::Validation`]
    /// plus the quota tier's `value`): syntax and functions are checked, variables only
    /// by name. Prefer [`Program::compile_for`].
    pub fn compile(expr: &str) -> Result<Program, CelError> {
        Self::build(expr, None)
    }

    /// Compiles an expression for one KrakenD use: an identifier that is not one of the
    /// scope's variables is refused, naming it and its position.
    pub fn compile_for(expr: &str, scope: Scope) -> Result<Program, CelError> {
        Self::build(expr, Some(scope))
    }

    fn build(expr: &str, scope: Option<Scope>) -> Result<Program, CelError> {
        if expr.len() > MAX_EXPR_LEN {
            return Err(CelError::new(
                0,
                format!("expression longer than {MAX_EXPR_LEN} bytes"),
            ));
        }
        if expr.trim().is_empty() {
            return Err(CelError::new(0, "empty expression"));
        }
        let toks = lex::tokenize(expr)?;
        let mut p = parse::Parser::new(&toks);
        let root = p.parse()?;
        for (name, pos) in &p.vars {
            let known = match scope {
                Some(s) => s.allows(name),
                None => Scope::Validation.allows(name) || &**name == TIER_VAR,
            };
            if !known {
                let names = scope.unwrap_or(Scope::Validation).names();
                return Err(CelError::new(
                    *pos,
                    format!("unknown variable '{name}' (variables here: {names})"),
                ));
            }
        }
        Ok(Program {
            root,
            vars: p.vars.into_iter().map(|(n, _)| n).collect(),
        })
    }

    /// Evaluates against one request's variables.
    pub fn eval<'a>(&self, act: &Activation<'a>) -> Result<Value<'a>, EvalError> {
        eval::Eval::new(act).eval(&self.root)
    }

    /// KrakenD's verdict for a check or policy: `true` passes; `false`, any other value
    /// and any error reject.
    pub fn check(&self, act: &Activation<'_>) -> bool {
        matches!(self.eval(act), Ok(Value::Bool(true)))
    }

    /// The variables the expression reads (including `req_headers` for `getCookie` and
    /// `req_querystring` for `hasQuerystring`), in order of first use.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|v| &**v)
    }
    /// Reads a request variable: a `validation/cel` check runs before the backend call.
    pub fn reads_request(&self) -> bool {
        self.variables().any(|v| REQUEST_VARS.contains(&v))
    }
    /// Reads a response variable: a `validation/cel` check runs on the backend's answer.
    pub fn reads_response(&self) -> bool {
        self.variables().any(|v| RESPONSE_VARS.contains(&v))
    }
    /// Reads `JWT`: a `validation/cel` check runs in the JWT rejecter (endpoint level only).
    pub fn reads_jwt(&self) -> bool {
        self.variables().any(|v| v == JWT_VAR)
    }
}

/// A compiled expression as a configuration holds it: shared (cheap to clone) and compared
/// by its source.
#[derive(Clone, Debug)]
pub struct Expr {
    src: Rc<str>,
    program: Rc<Program>,
}

impl Expr {
    /// Compiles `src` for a scope; the error quotes the expression (configuration errors
    /// name it beside the JSON path).
    pub fn compile(src: &str, scope: Scope) -> Result<Expr, String> {
        let program = Program::compile_for(src, scope).map_err(|e| format!("\"{src}\": {e}"))?;
        Ok(Expr {
            src: Rc::from(src),
            program: Rc::new(program),
        })
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn source(&self) -> &str {
        &self.src
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.src == other.src
    }
}

/// `now` as KrakenD binds it: RFC 3339 text of the current time (UTC here), read with
/// `timestamp(now)`. None when out of CEL's range.
pub fn now_text(unix_secs: i64, nanos: u32) -> Option<String> {
    Timestamp::from_unix(unix_secs, nanos).map(|t| t.to_string())
}
