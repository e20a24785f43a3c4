//! Template execution: walks the tree over JSON data, Go's semantics for the subset.
//!
//! Values borrow the request's data (`Val::Ref`); what functions build is reference-counted
//! (`Val::Own`, with a path so a field of a `fromJson` result is read in place, not
//! copied). Output and work are bounded ([`MAX_STEPS`](super::MAX_STEPS)).

use super::parse::{Arg, Cmd, Node, Pipeline};
use super::{Func, MAX_STEPS};
use serde_json::Value as Json;
use std::rc::Rc;

#[derive(Clone, Debug)]
enum Seg {
    Key(Rc<str>),
    Idx(usize),
}

#[derive(Clone, Debug)]
enum Val<'a> {
    Nil,
    Ref(&'a Json),
    Own(Rc<Json>, Vec<Seg>),
}

impl Val<'_> {
    fn own(j: Json) -> Self {
        Val::Own(Rc::new(j), Vec::new())
    }
    fn json(&self) -> Option<&Json> {
        match self {
            Val::Nil => None,
            Val::Ref(j) => Some(j),
            Val::Own(root, path) => path.iter().try_fold(&**root, |j, s| match (j, s) {
                (Json::Object(m), Seg::Key(k)) => m.get(&**k),
                (Json::Array(a), Seg::Idx(i)) => a.get(*i),
                _ => None,
            }),
        }
    }
}

/// Go's type names for error messages.
fn kind(j: Option<&Json>) -> &'static str {
    match j {
        None | Some(Json::Null) => "nil",
        Some(Json::Bool(_)) => "bool",
        Some(Json::Number(_)) => "number",
        Some(Json::String(_)) => "string",
        Some(Json::Array(_)) => "[]interface {}",
        Some(Json::Object(_)) => "map[string]interface {}",
    }
}

type E = (usize, String);

pub struct Exec<'a> {
    vars: Vec<(Rc<str>, Val<'a>)>,
    out: String,
    max: usize,
    steps: u64,
    root: &'a Json,
}

impl<'a> Exec<'a> {
    pub fn new(root: &'a Json, max: usize) -> Self {
        Exec {
            vars: Vec::new(),
            out: String::new(),
            max,
            steps: 0,
            root,
        }
    }

    pub fn run(mut self, nodes: &'a [Node]) -> Result<String, E> {
        let dot = Val::Ref(self.root);
        self.vars.push((Rc::from("$"), dot.clone()));
        self.nodes(nodes, &dot)?;
        Ok(self.out)
    }

    fn step(&mut self, pos: usize, units: u64) -> Result<(), E> {
        self.steps = self.steps.saturating_add(units);
        if self.steps > MAX_STEPS {
            return Err((pos, "template execution step limit exceeded".into()));
        }
        Ok(())
    }

    fn write(&mut self, pos: usize, s: &str) -> Result<(), E> {
        if self.out.len().saturating_add(s.len()) > self.max {
            return Err((pos, format!("output larger than {} bytes", self.max)));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn nodes(&mut self, nodes: &'a [Node], dot: &Val<'a>) -> Result<(), E> {
        for n in nodes {
            match n {
                Node::Text(t) => {
                    self.step(0, 1)?;
                    self.write(0, t)?;
                }
                Node::Action(p) => {
                    self.step(p.pos, 1)?;
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_none() {
                        let mut s = String::new();
                        print_value(&mut s, v.json(), true, 0);
                        self.step(p.pos, (s.len() / 64) as u64)?;
                        self.write(p.pos, &s)?;
                    }
                }
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let mut taken = false;
                    for (cond, body) in branches {
                        self.step(cond.pos, 1)?;
                        let v = self.pipeline(cond, dot)?;
                        if truth(v.json()) {
                            self.nodes(body, dot)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.nodes(otherwise, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::Range {
                    vars,
                    pipe,
                    body,
                    otherwise,
                } => {
                    self.step(pipe.pos, 1)?;
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    let items: Vec<(Json, Val<'a>)> = match v.json() {
                        None | Some(Json::Null) => Vec::new(),
                        Some(Json::Array(a)) => (0..a.len())
                            .map(|i| (Json::from(i), child_idx(&v, i)))
                            .collect(),
                        Some(Json::Object(m)) => {
                            let mut keys: Vec<&String> = m.keys().collect();
                            keys.sort();
                            keys.into_iter()
                                .map(|k| (Json::String(k.clone()), child_key(&v, k)))
                                .collect()
                        }
                        Some(other) => {
                            return Err((
                                pipe.pos,
                                format!("range can't iterate over {}", kind(Some(other))),
                            ))
                        }
                    };
                    if items.is_empty() {
                        self.nodes(otherwise, dot)?;
                    }
                    for (key, elem) in items {
                        self.step(pipe.pos, 1)?;
                        let inner = self.vars.len();
                        match vars.as_slice() {
                            [v] => self.vars.push((v.clone(), elem.clone())),
                            [k, v] => {
                                self.vars.push((k.clone(), Val::own(key)));
                                self.vars.push((v.clone(), elem.clone()));
                            }
                            _ => {}
                        }
                        self.nodes(body, &elem)?;
                        self.vars.truncate(inner);
                    }
                    self.vars.truncate(mark);
                }
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &'a Pipeline, dot: &Val<'a>) -> Result<Val<'a>, E> {
        let mut prev: Option<Val<'a>> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(cmd, dot, prev)?);
        }
        let v = prev.unwrap_or(Val::Nil);
        match &p.decl {
            Some((name, true)) => self.vars.push((name.clone(), v.clone())),
            Some((name, false)) => match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = v.clone(),
                None => return Err((p.pos, format!("undefined variable {name}"))),
            },
            None => {}
        }
        Ok(v)
    }

    fn command(
        &mut self,
        cmd: &'a Cmd,
        dot: &Val<'a>,
        piped: Option<Val<'a>>,
    ) -> Result<Val<'a>, E> {
        let pos = cmd.pos;
        match cmd.args.first() {
            Some(Arg::Func(f)) => {
                let mut args = Vec::with_capacity(cmd.args.len());
                for a in cmd.args.iter().skip(1) {
                    args.push(self.arg(a, dot, pos)?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                self.call(cmd, *f, args)
            }
            Some(a) => self.arg(a, dot, pos),
            None => Ok(Val::Nil),
        }
    }

    fn arg(&mut self, a: &'a Arg, dot: &Val<'a>, pos: usize) -> Result<Val<'a>, E> {
        self.step(pos, 1)?;
        match a {
            Arg::Field(fields) => walk(dot.clone(), fields, pos),
            Arg::Var(name, fields) => {
                let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == name) else {
                    return Err((pos, format!("undefined variable {name}")));
                };
                walk(v.clone(), fields, pos)
            }
            Arg::Lit(j) => Ok(Val::Ref(j)),
            Arg::Nil => Ok(Val::Nil),
            Arg::Pipe(p, fields) => {
                let v = self.pipeline(p, dot)?;
                walk(v, fields, pos)
            }
            Arg::Func(f) => Err((pos, format!("{} is a function, not a value", f.name()))),
        }
    }

    fn call(&mut self, cmd: &Cmd, f: Func, args: Vec<Val<'a>>) -> Result<Val<'a>, E> {
        let pos = cmd.pos;
        let arg = |i: usize| args.get(i).and_then(Val::json);
        match f {
            Func::ToJson => {
                let s = to_json(arg(0));
                self.step(pos, (s.len() / 64) as u64)?;
                if s.len() > self.max {
                    return Err((pos, format!("toJson result larger than {} bytes", self.max)));
                }
                Ok(Val::own(Json::String(s)))
            }
            Func::FromJson => match arg(0) {
                Some(Json::String(s)) => {
                    self.step(pos, (s.len() / 64) as u64)?;
                    // Sprig ignores the error: bad JSON is nil.
                    Ok(serde_json::from_str::<Json>(s).map_or(Val::Nil, Val::own))
                }
                other => Err((
                    pos,
                    format!(
                        "fromJson: wrong type for value; expected string; got {}",
                        kind(other)
                    ),
                )),
            },
            Func::Index => {
                let mut it = args.into_iter();
                let mut v = it.next().unwrap_or(Val::Nil);
                for key in it {
                    v = index(&v, key.json(), pos)?;
                }
                Ok(v)
            }
            Func::Dig => {
                let n = args.len();
                let (Some(map), Some(default)) =
                    (args.get(n.wrapping_sub(1)), args.get(n.wrapping_sub(2)))
                else {
                    return Err((pos, "dig needs keys, a default and a map".into()));
                };
                if !matches!(map.json(), Some(Json::Object(_))) {
                    return Err((
                        pos,
                        format!(
                            "dig: the last argument must be a map, not {}",
                            kind(map.json())
                        ),
                    ));
                }
                let mut cur = map.clone();
                let keys = args.get(..n.saturating_sub(2)).unwrap_or(&[]);
                for (i, k) in keys.iter().enumerate() {
                    let Some(Json::String(k)) = k.json() else {
                        return Err((pos, "dig: keys must be strings".into()));
                    };
                    match cur.json() {
                        Some(Json::Object(m)) if m.contains_key(k) => cur = child_key(&cur, k),
                        Some(Json::Object(_)) => return Ok(default.clone()),
                        other if i > 0 => {
                            return Err((pos, format!("dig: {} is not a map", kind(other))))
                        }
                        _ => return Ok(default.clone()),
                    }
                }
                Ok(cur)
            }
            Func::Print => {
                let mut s = String::new();
                let mut prev_string = true;
                for (i, a) in args.iter().enumerate() {
                    let is_string = matches!(a.json(), Some(Json::String(_)));
                    if i > 0 && !is_string && !prev_string {
                        s.push(' ');
                    }
                    print_value(&mut s, a.json(), true, 0);
                    prev_string = is_string;
                    self.bound(pos, &s)?;
                }
                Ok(Val::own(Json::String(s)))
            }
            Func::Printf => {
                let Some(Json::String(fmt)) = arg(0) else {
                    return Err((pos, "printf needs a string format".into()));
                };
                let rest: Vec<Option<&Json>> =
                    args.get(1..).unwrap_or(&[]).iter().map(Val::json).collect();
                let s = sprintf(fmt, &rest);
                self.bound(pos, &s)?;
                Ok(Val::own(Json::String(s)))
            }
            Func::RegexReplaceAll => {
                let (Some(re), Some(Json::String(s)), Some(Json::String(repl))) =
                    (&cmd.re, arg(1), arg(2))
                else {
                    return Err((
                        pos,
                        "regexReplaceAll: the text and the replacement must be strings".into(),
                    ));
                };
                self.step(pos, (s.len() / 16) as u64)?;
                let mut out = String::new();
                let mut last = 0;
                for caps in re.captures_iter(s) {
                    let Some(m) = caps.get(0) else { continue };
                    out.push_str(s.get(last..m.start()).unwrap_or(""));
                    caps.expand(repl, &mut out);
                    last = m.end();
                    self.step(pos, 1)?;
                    self.bound(pos, &out)?;
                }
                out.push_str(s.get(last..).unwrap_or(""));
                self.bound(pos, &out)?;
                Ok(Val::own(Json::String(out)))
            }
            Func::Len => match arg(0) {
                Some(Json::String(s)) => Ok(Val::own(Json::from(s.len()))),
                Some(Json::Array(a)) => Ok(Val::own(Json::from(a.len()))),
                Some(Json::Object(m)) => Ok(Val::own(Json::from(m.len()))),
                other => Err((pos, format!("len of {}", kind(other)))),
            },
            Func::Eq => {
                let first = arg(0);
                for i in 1..args.len() {
                    if compare(first, arg(i), pos)? == Some(std::cmp::Ordering::Equal) {
                        return Ok(Val::own(Json::Bool(true)));
                    }
                }
                Ok(Val::own(Json::Bool(false)))
            }
            Func::Ne => Ok(Val::own(Json::Bool(
                compare(arg(0), arg(1), pos)? != Some(std::cmp::Ordering::Equal),
            ))),
            Func::Lt | Func::Le | Func::Gt | Func::Ge => {
                let Some(o) = compare(arg(0), arg(1), pos)?
                    .filter(|_| !matches!(arg(0), Some(Json::Bool(_)) | None))
                else {
                    return Err((
                        pos,
                        format!("invalid type for comparison: {}", kind(arg(0))),
                    ));
                };
                use std::cmp::Ordering::*;
                Ok(Val::own(Json::Bool(match f {
                    Func::Lt => o == Less,
                    Func::Le => o != Greater,
                    Func::Gt => o == Greater,
                    _ => o != Less,
                })))
            }
            Func::And | Func::Or => {
                let want = f == Func::Or;
                let mut last = Val::Nil;
                for a in args {
                    if truth(a.json()) == want {
                        return Ok(a);
                    }
                    last = a;
                }
                Ok(last)
            }
            Func::Not => Ok(Val::own(Json::Bool(!truth(arg(0))))),
        }
    }

    fn bound(&mut self, pos: usize, s: &str) -> Result<(), E> {
        if s.len() > self.max {
            return Err((pos, format!("value larger than {} bytes", self.max)));
        }
        Ok(())
    }
}

fn child_key<'a>(v: &Val<'a>, k: &str) -> Val<'a> {
    match v {
        Val::Ref(Json::Object(m)) => m.get(k).map_or(Val::Nil, Val::Ref),
        Val::Own(root, path) => {
            let mut p = path.clone();
            p.push(Seg::Key(Rc::from(k)));
            Val::Own(root.clone(), p)
        }
        _ => Val::Nil,
    }
}

fn child_idx<'a>(v: &Val<'a>, i: usize) -> Val<'a> {
    match v {
        Val::Ref(Json::Array(a)) => a.get(i).map_or(Val::Nil, Val::Ref),
        Val::Own(root, path) => {
            let mut p = path.clone();
            p.push(Seg::Idx(i));
            Val::Own(root.clone(), p)
        }
        _ => Val::Nil,
    }
}

/// `.a.b` from a value: a missing key is nil; a field of nil or of a non-map is an error.
fn walk<'a>(mut v: Val<'a>, fields: &[Rc<str>], pos: usize) -> Result<Val<'a>, E> {
    for f in fields {
        v = match v.json() {
            Some(Json::Object(m)) if m.contains_key(&**f) => child_key(&v, f),
            Some(Json::Object(_)) => Val::Nil,
            None | Some(Json::Null) => return Err((pos, format!("nil pointer evaluating .{f}"))),
            Some(other) => {
                return Err((
                    pos,
                    format!("can't evaluate field {f} in type {}", kind(Some(other))),
                ))
            }
        };
    }
    Ok(v)
}

/// Go's `index`: a map by string key (missing: nil), a list by integer (out of range: error).
fn index<'a>(v: &Val<'a>, key: Option<&Json>, pos: usize) -> Result<Val<'a>, E> {
    match (v.json(), key) {
        (Some(Json::Object(m)), Some(Json::String(k))) => Ok(if m.contains_key(k) {
            child_key(v, k)
        } else {
            Val::Nil
        }),
        (Some(Json::Object(_)), other) => Err((
            pos,
            format!("index: a map key must be a string, not {}", kind(other)),
        )),
        (Some(Json::Array(a)), Some(Json::Number(n))) => {
            match n.as_u64().and_then(|i| usize::try_from(i).ok()) {
                Some(i) if i < a.len() => Ok(child_idx(v, i)),
                _ => Err((pos, format!("index out of range (list of {})", a.len()))),
            }
        }
        (Some(Json::Array(_)), other) => Err((
            pos,
            format!(
                "index: a list index must be an integer, not {}",
                kind(other)
            ),
        )),
        (None | Some(Json::Null), _) => Err((pos, "index of untyped nil".into())),
        (Some(other), _) => Err((
            pos,
            format!("can't index item of type {}", kind(Some(other))),
        )),
    }
}

/// Go's template truth: false, 0, nil, empty string, list or map are false.
fn truth(j: Option<&Json>) -> bool {
    match j {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(Json::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Json::String(s)) => !s.is_empty(),
        Some(Json::Array(a)) => !a.is_empty(),
        Some(Json::Object(m)) => !m.is_empty(),
    }
}

/// Ordering of two basic values (numbers by value, strings, bools for equality); values of
/// different kinds are an error, as Go's comparison functions say.
fn compare(
    a: Option<&Json>,
    b: Option<&Json>,
    pos: usize,
) -> Result<Option<std::cmp::Ordering>, E> {
    match (a, b) {
        (Some(Json::Number(x)), Some(Json::Number(y))) => Ok(match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x
                .as_f64()
                .zip(y.as_f64())
                .and_then(|(x, y)| x.partial_cmp(&y)),
        }),
        (Some(Json::String(x)), Some(Json::String(y))) => Ok(Some(x.cmp(y))),
        (Some(Json::Bool(x)), Some(Json::Bool(y))) => Ok(Some(x.cmp(y))),
        (None | Some(Json::Null), None | Some(Json::Null)) => Ok(Some(std::cmp::Ordering::Equal)),
        (x, y) => Err((
            pos,
            format!(
                "incompatible types for comparison: {} and {}",
                kind(x),
                kind(y)
            ),
        )),
    }
}

/// Go's `%v` of a value (`top`: a nil prints `<no value>`, as text/template prints it; inside
/// a list or map it is `<nil>`). Depth is bounded by the data (serde_json parses at most 128
/// levels).
fn print_value(out: &mut String, j: Option<&Json>, top: bool, depth: usize) {
    match j {
        None | Some(Json::Null) => out.push_str(if top { "<no value>" } else { "<nil>" }),
        Some(Json::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        // Integers as written; doubles as Go's %v.
        Some(Json::Number(n)) => match (n.is_f64(), n.as_f64()) {
            (true, Some(f)) => out.push_str(&crate::gofmt::float_text(f, 21)),
            _ => out.push_str(&n.to_string()),
        },
        Some(Json::String(s)) => out.push_str(s),
        Some(_) if depth > 128 => out.push_str("..."),
        Some(Json::Array(a)) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print_value(out, Some(x), false, depth + 1);
            }
            out.push(']');
        }
        Some(Json::Object(m)) => {
            out.push_str("map[");
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                print_value(out, m.get(k), false, depth + 1);
            }
            out.push(']');
        }
    }
}

/// Sprig's `toJson`, i.e. Go's `json.Marshal`: keys sorted, `<`, `>`, `&`, U+2028 and U+2029
/// escaped. Those characters only occur inside JSON strings, so escaping the text is exact.
pub fn to_json(j: Option<&Json>) -> String {
    let text = match j {
        None => "null".to_string(),
        Some(j) => sorted(j).to_string(),
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// serde_json keeps keys sorted unless its `preserve_order` feature is on somewhere in the
/// build; sort explicitly so the text is Go's either way.
fn sorted(j: &Json) -> std::borrow::Cow<'_, Json> {
    match j {
        Json::Object(m)
            if !m.keys().zip(m.keys().skip(1)).all(|(a, b)| a <= b)
                || m.values().any(needs_sort) =>
        {
            let mut entries: Vec<(&String, &Json)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            std::borrow::Cow::Owned(Json::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v).into_owned()))
                    .collect(),
            ))
        }
        Json::Array(a) if a.iter().any(needs_sort) => std::borrow::Cow::Owned(Json::Array(
            a.iter().map(|v| sorted(v).into_owned()).collect(),
        )),
        _ => std::borrow::Cow::Borrowed(j),
    }
}

fn needs_sort(j: &Json) -> bool {
    match j {
        Json::Object(m) => {
            !m.keys().zip(m.keys().skip(1)).all(|(a, b)| a <= b) || m.values().any(needs_sort)
        }
        Json::Array(a) => a.iter().any(needs_sort),
        _ => false,
    }
}

/// Go's `fmt.Sprintf` for the verbs of [`crate::gofmt::check_format`], with Go's text for missing and
/// extra arguments.
fn sprintf(fmt: &str, args: &[Option<&Json>]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(verb) = it.next() else { break };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        match (verb, a) {
            ('d', Some(Json::Number(n))) if n.is_i64() || n.is_u64() => {
                out.push_str(&n.to_string())
            }
            ('d', other) => {
                let mut v = String::new();
                print_value(&mut v, *other, false, 0);
                out.push_str(&format!("%!d({}={v})", kind(*other)));
            }
            (_, other) => print_value(&mut out, *other, false, 0),
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA");
        for a in args.get(next..).unwrap_or(&[]) {
            let mut v = String::new();
            print_value(&mut v, *a, false, 0);
            out.push_str(&format!(" {}={v}", kind(*a)));
        }
        out.push(')');
    }
    out
}
