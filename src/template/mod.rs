//! Go text/template, the subset KrakenD's body generators use (`modifier/request-body-generator`,
//! `modifier/response-body-generator`, `modifier/body-generator`; the AI gateway's "other
//! vendors" and prompt templates, KrakenD's own AI and RAG examples): compiled at
//! configuration, rendered per request over JSON data, bounded, never panicking.
//!
//! # The subset
//! Text and `{{ }}` actions with `{{- -}}` trimming and `{{/* */}}` comments; pipelines
//! with `|`; `(...)` sub-pipelines; `.field` chains on dot, `$var.field` chains, `$` the
//! data; `$x := pipeline` and `$x = pipeline` (assignment reaches an outer variable, as
//! Go 1.11+); `{{if}}` / `{{else if}}` / `{{else}}` / `{{end}}`; `{{range pipeline}}`,
//! `{{range $v := ...}}`, `{{range $i, $v := ...}}` with `{{else}}`, over lists (index,
//! element) and maps (key, value in key order); string (`"..."` with Go escapes, raw
//! `` `...` ``), number, `true`/`false`/`nil` constants.
//!
//! Functions: Go's `index`, `len`, `print`, `printf` (literal format; verbs `%s %v %d %q
//! %%`), `eq ne lt le gt ge`, `and or not`; Sprig's `toJson` (Go's `json.Marshal`: sorted
//! keys, `<>&` escaped as `\u003c`...), `fromJson` (bad JSON gives nil, as Sprig), `dig`
//! (`dig "k1" "k2" default map`), `regexReplaceAll` (literal pattern, compiled here; `$1`,
//! `${1}` in the replacement).
//!
//! Refused when compiled, naming the construct with its line and column: `with`,
//! `define`, `template`, `block`, `break`, `continue`, character constants, any other
//! function (every Sprig function not listed), `printf` with a non-literal format or
//! another verb, `regexReplaceAll` with a non-literal pattern, undefined variables.
//!
//! # Data
//! The wiring builds one JSON object per request; the names KrakenD's templates read are
//! `req_body` (the client's JSON body), `req_headers` (map of lists, canonical names:
//! `index (index .req_headers "X-Name") 0`), `req_params` (endpoint `{params}` with a
//! capital first letter, and sequential-proxy `Resp0_field` values), `variables` (the
//! `ai/llm` namespace's, `.variables.extra_payload.key`), and `resp_body` for response
//! templates. [`Template::data_fields`] lists the top-level names a template reads, so the
//! wiring can refuse one it does not provide. Missing map keys are nil and print
//! `<no value>`, as Go prints them; a field of a non-map is an error.
//!
//! # Bounds
//! Source size, nesting and node count are limited when compiled; a render stops with an
//! error past its output limit ([`Template::render_limited`], [`DEFAULT_MAX_OUTPUT`]) or its
//! step budget ([`MAX_STEPS`]: one per action and loop iteration, one per 64 bytes a
//! function touches), so no data can make it loop or allocate without bound.

mod exec;
mod parse;

#[cfg(test)]
mod tests;

use serde_json::Value as Json;
use std::fmt;
use std::rc::Rc;

/// Largest template source accepted (bytes).
pub const MAX_TEMPLATE_LEN: usize = 64 * 1024;
/// Deepest nesting of blocks and parentheses.
pub const MAX_DEPTH: usize = 32;
/// Most nodes (text pieces, actions, arguments) in one template.
pub const MAX_NODES: usize = 10_000;
/// Output limit of [`Template::render`].
pub const DEFAULT_MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// Step budget of one render.
pub const MAX_STEPS: u64 = 1_000_000;

/// A template refused at configuration: line and column (1-based) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl TemplateError {
    fn at(src: &str, pos: usize, message: impl Into<String>) -> Self {
        let before = src.get(..pos).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        TemplateError {
            line,
            col,
            message: message.into(),
        }
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} column {}: {}",
            self.line, self.col, self.message
        )
    }
}

impl std::error::Error for TemplateError {}

/// A render that failed (a field of a non-map, an index out of range, the output or step
/// limit): the request cannot be built. The message never quotes request data.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} column {}: {}",
            self.line, self.col, self.message
        )
    }
}

impl std::error::Error for RenderError {}

/// The functions of the subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    ToJson,
    FromJson,
    Index,
    Dig,
    Print,
    Printf,
    RegexReplaceAll,
    Len,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Not,
}

const FUNCS: &[(&str, Func, usize, usize)] = &[
    ("toJson", Func::ToJson, 1, 1),
    ("fromJson", Func::FromJson, 1, 1),
    ("index", Func::Index, 1, usize::MAX),
    ("dig", Func::Dig, 3, usize::MAX),
    ("print", Func::Print, 0, usize::MAX),
    ("printf", Func::Printf, 1, usize::MAX),
    ("regexReplaceAll", Func::RegexReplaceAll, 3, 3),
    ("len", Func::Len, 1, 1),
    ("eq", Func::Eq, 2, usize::MAX),
    ("ne", Func::Ne, 2, 2),
    ("lt", Func::Lt, 2, 2),
    ("le", Func::Le, 2, 2),
    ("gt", Func::Gt, 2, 2),
    ("ge", Func::Ge, 2, 2),
    ("and", Func::And, 1, usize::MAX),
    ("or", Func::Or, 1, usize::MAX),
    ("not", Func::Not, 1, 1),
];

impl Func {
    fn by_name(name: &str) -> Option<Func> {
        FUNCS.iter().find(|(n, ..)| *n == name).map(|(_, f, ..)| *f)
    }
    pub fn name(self) -> &'static str {
        FUNCS
            .iter()
            .find(|(_, f, ..)| *f == self)
            .map_or("?", |(n, ..)| n)
    }
    fn arity(self) -> (usize, usize) {
        FUNCS
            .iter()
            .find(|(_, f, ..)| *f == self)
            .map_or((0, 0), |(_, _, a, b)| (*a, *b))
    }
}

/// A compiled template.
#[derive(Debug)]
pub struct Template {
    src: Rc<str>,
    nodes: Vec<parse::Node>,
    roots: Vec<Rc<str>>,
}

impl Template {
    /// Compiles a template (the text of a `path` file, or the decoded inline `template`).
    pub fn compile(src: &str) -> Result<Template, TemplateError> {
        if src.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError {
                line: 1,
                col: 1,
                message: format!("template longer than {MAX_TEMPLATE_LEN} bytes"),
            });
        }
        let mut p = parse::Parser::new(src)?;
        let nodes = p.parse()?;
        Ok(Template {
            src: Rc::from(src),
            nodes,
            roots: p.roots,
        })
    }

    /// Renders over `data` (a JSON object: see the module docs) with [`DEFAULT_MAX_OUTPUT`].
    pub fn render(&self, data: &Json) -> Result<String, RenderError> {
        self.render_limited(data, DEFAULT_MAX_OUTPUT)
    }

    /// Renders with an output limit in bytes.
    pub fn render_limited(&self, data: &Json, max_output: usize) -> Result<String, RenderError> {
        exec::Exec::new(data, max_output)
            .run(&self.nodes)
            .map_err(|(pos, message)| {
                let e = TemplateError::at(&self.src, pos, "");
                RenderError {
                    line: e.line,
                    col: e.col,
                    message,
                }
            })
    }

    /// The top-level data fields the template reads (`req_body`, `req_headers` ...).
    pub fn data_fields(&self) -> impl Iterator<Item = &str> {
        self.roots.iter().map(|r| &**r)
    }
}
