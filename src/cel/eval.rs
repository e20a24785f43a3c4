//! CEL evaluation over a checked tree.
//!
//! Semantics follow cel-spec: `&&`/`||` are commutative over errors (`false && error` is
//! `false` whichever side errs), integer arithmetic errors on overflow and division by zero,
//! no implicit numeric conversion in arithmetic, heterogeneous equality, `in` on lists and
//! map keys, `matches` an unanchored RE2-style search.
//!
//! Cost is bounded: every node evaluated, every macro iteration and every 64 bytes a string
//! operation touches spend one unit of [`MAX_COST`](super::MAX_COST); built strings and lists
//! are capped. Recursion is bounded by the tree's depth, which the parser limits.

use super::parse::{BinOp, Func, Kind, Lit, Macro, Node};
use super::time::{Duration, Timestamp};
use super::value::{canonical_header_key, num_cmp, List, Map, Str, Value};
use super::{Activation, EvalError, MAX_COST, MAX_LIST, MAX_STRING};
use std::cmp::Ordering;
use std::rc::Rc;

pub struct Eval<'p, 'r, 'a> {
    act: &'r Activation<'a>,
    locals: Vec<(&'p str, Value<'a>)>,
    budget: u64,
}

type R<'a> = Result<Value<'a>, EvalError>;

fn err<T>(pos: usize, msg: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError {
        pos,
        message: msg.into(),
    })
}

impl<'p, 'r, 'a> Eval<'p, 'r, 'a> {
    pub fn new(act: &'r Activation<'a>) -> Self {
        Eval {
            act,
            locals: Vec::new(),
            budget: MAX_COST,
        }
    }

    fn spend(&mut self, pos: usize, units: u64) -> Result<(), EvalError> {
        match self.budget.checked_sub(units) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => {
                self.budget = 0;
                err(pos, "evaluation cost limit exceeded")
            }
        }
    }

    fn spend_bytes(&mut self, pos: usize, bytes: usize) -> Result<(), EvalError> {
        self.spend(pos, 1 + (bytes / 64) as u64)
    }

    fn lookup(&self, pos: usize, name: &str) -> R<'a> {
        if let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| *n == name) {
            return Ok(v.clone());
        }
        match self.act.get(name) {
            Some(v) => Ok(v.clone()),
            None => err(pos, format!("no such attribute '{name}' (not set here)")),
        }
    }

    pub fn eval(&mut self, n: &'p Node) -> R<'a> {
        self.spend(n.pos, 1)?;
        let pos = n.pos;
        match &n.kind {
            Kind::Lit(l) => Ok(match l {
                Lit::Null => Value::Null,
                Lit::Bool(b) => Value::Bool(*b),
                Lit::Int(i) => Value::Int(*i),
                Lit::Uint(u) => Value::Uint(*u),
                Lit::Double(d) => Value::Double(*d),
                Lit::Str(s) => Value::Str(Str::Rc(s.clone())),
            }),
            Kind::Ident(name) => self.lookup(pos, name),
            Kind::Select {
                operand,
                field,
                test,
            } => {
                let v = self.eval(operand)?;
                match v {
                    Value::Map(m) => match (m.get(field), test) {
                        (found, true) => Ok(Value::Bool(found.is_some())),
                        (Some(x), false) => Ok(x),
                        (None, false) => err(pos, format!("no such key: '{field}'")),
                    },
                    other => err(
                        pos,
                        format!("type '{}' has no field '{field}'", other.type_name()),
                    ),
                }
            }
            Kind::Index { operand, index } => {
                let v = self.eval(operand)?;
                let i = self.eval(index)?;
                index_value(pos, &v, &i)
            }
            Kind::Matches { operand, re } => {
                let v = self.eval(operand)?;
                let Some(s) = v.as_str() else {
                    return err(
                        pos,
                        format!("matches() applies to a string, not '{}'", v.type_name()),
                    );
                };
                // The search is linear in the input (regex-lite has no backtracking blow-up).
                self.spend_bytes(pos, s.len().saturating_mul(4))?;
                Ok(Value::Bool(re.is_match(s)))
            }
            Kind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    out.push(self.eval(it)?);
                }
                Ok(Value::List(List::Owned(out.into())))
            }
            Kind::Map(entries) => {
                let mut out: Vec<(Rc<str>, Value<'a>)> = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let Kind::Lit(Lit::Str(key)) = &k.kind else {
                        return err(k.pos, "map literal keys must be string literals");
                    };
                    if out.iter().any(|(x, _)| x == key) {
                        return err(k.pos, format!("repeated map key '{key}'"));
                    }
                    let val = self.eval(v)?;
                    out.push((key.clone(), val));
                }
                Ok(Value::Map(Map::Owned(out.into())))
            }
            Kind::Not(e) => match self.eval(e)? {
                Value::Bool(b) => Ok(Value::Bool(!b)),
                other => err(pos, format!("no such overload: !{}", other.type_name())),
            },
            Kind::Neg(e) => match self.eval(e)? {
                Value::Int(i) => i
                    .checked_neg()
                    .map(Value::Int)
                    .ok_or(())
                    .or_else(|_| err(pos, "integer overflow")),
                Value::Double(d) => Ok(Value::Double(-d)),
                Value::Duration(d) => d
                    .checked_neg()
                    .map(Value::Duration)
                    .ok_or(())
                    .or_else(|_| err(pos, "duration out of range")),
                other => err(pos, format!("no such overload: -{}", other.type_name())),
            },
            Kind::And(a, b) => self.logic(pos, a, b, false),
            Kind::Or(a, b) => self.logic(pos, a, b, true),
            Kind::Cond(c, a, b) => match self.eval(c)? {
                Value::Bool(true) => self.eval(a),
                Value::Bool(false) => self.eval(b),
                other => err(
                    pos,
                    format!(
                        "the condition of ?: must be a bool, not '{}'",
                        other.type_name()
                    ),
                ),
            },
            Kind::Binary(op, a, b) => {
                let x = self.eval(a)?;
                let y = self.eval(b)?;
                self.binary(pos, *op, x, y)
            }
            Kind::Comprehension {
                kind,
                range,
                var,
                body,
            } => self.comprehension(pos, *kind, range, var, body),
            Kind::Call {
                func,
                name,
                target,
                args,
            } => {
                let mut vals = Vec::with_capacity(args.len() + 1);
                if let Some(t) = target {
                    vals.push(self.eval(t)?);
                }
                for a in args {
                    vals.push(self.eval(a)?);
                }
                self.call(pos, *func, name, vals)
            }
        }
    }

    /// `a && b` (`or` false) and `a || b` (`or` true): the deciding value wins over an error
    /// on either side; otherwise the first error.
    fn logic(&mut self, pos: usize, a: &'p Node, b: &'p Node, or: bool) -> R<'a> {
        let decide = |v: &R<'a>| matches!(v, Ok(Value::Bool(x)) if *x == or);
        let x = self.eval(a);
        if decide(&x) {
            return Ok(Value::Bool(or));
        }
        let y = self.eval(b);
        if decide(&y) {
            return Ok(Value::Bool(or));
        }
        // The budget is shared: once spent, no error may be absorbed.
        if self.budget == 0 {
            return err(pos, "evaluation cost limit exceeded");
        }
        match (x?, y?) {
            (Value::Bool(_), Value::Bool(_)) => Ok(Value::Bool(!or)),
            (v, Value::Bool(_)) | (_, v) => err(
                pos,
                format!(
                    "no such overload: {} with a '{}'",
                    if or { "||" } else { "&&" },
                    v.type_name()
                ),
            ),
        }
    }

    fn comprehension(
        &mut self,
        pos: usize,
        kind: Macro,
        range: &'p Node,
        var: &'p str,
        body: &'p Node,
    ) -> R<'a> {
        let items: Vec<Value<'a>> = match self.eval(range)? {
            Value::List(l) => l.iter().collect(),
            Value::Map(m) => m.keys(),
            other => {
                return err(
                    pos,
                    format!(
                        "exists()/all() apply to a list or map, not '{}'",
                        other.type_name()
                    ),
                )
            }
        };
        let mut first_err: Option<EvalError> = None;
        let mut count = 0usize;
        for item in items {
            self.spend(pos, 1)?;
            self.locals.push((var, item));
            let r = self.eval(body);
            self.locals.pop();
            if self.budget == 0 {
                return err(pos, "evaluation cost limit exceeded");
            }
            match (kind, r) {
                (Macro::All, Ok(Value::Bool(false))) => return Ok(Value::Bool(false)),
                (Macro::Exists, Ok(Value::Bool(true))) => return Ok(Value::Bool(true)),
                (Macro::ExistsOne, Ok(Value::Bool(true))) => count += 1,
                (_, Ok(Value::Bool(_))) => {}
                (Macro::ExistsOne, Err(e)) => return Err(e),
                (_, Err(e)) => {
                    first_err.get_or_insert(e);
                }
                (_, Ok(other)) => {
                    first_err.get_or_insert(EvalError {
                        pos: body.pos,
                        message: format!(
                            "the condition must be a bool, not '{}'",
                            other.type_name()
                        ),
                    });
                }
            }
        }
        match (kind, first_err) {
            (Macro::ExistsOne, _) => Ok(Value::Bool(count == 1)),
            (_, Some(e)) => Err(e),
            (Macro::All, None) => Ok(Value::Bool(true)),
            (_, None) => Ok(Value::Bool(false)),
        }
    }

    fn binary(&mut self, pos: usize, op: BinOp, x: Value<'a>, y: Value<'a>) -> R<'a> {
        let overload = |x: &Value<'_>, y: &Value<'_>, sym: &str| -> R<'a> {
            err(
                pos,
                format!(
                    "no such overload: {} {sym} {}",
                    x.type_name(),
                    y.type_name()
                ),
            )
        };
        match op {
            BinOp::Eq | BinOp::Ne => {
                self.spend_bytes(pos, size_hint(&x).min(size_hint(&y)))?;
                Ok(Value::Bool(x.equals(&y, 0) == (op == BinOp::Eq)))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let ord = match (&x, &y) {
                    (Value::Str(a), Value::Str(b)) => Some(a.as_str().cmp(b.as_str())),
                    (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
                    (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
                    (Value::Duration(a), Value::Duration(b)) => Some(a.cmp(b)),
                    _ => num_cmp(&x, &y),
                };
                let sym = match op {
                    BinOp::Lt => "<",
                    BinOp::Le => "<=",
                    BinOp::Gt => ">",
                    _ => ">=",
                };
                let Some(ord) = ord else {
                    // NaN compares false, as in cel-go; anything else has no ordering.
                    if matches!((&x, &y), (Value::Double(_), _) | (_, Value::Double(_)))
                        && num_like(&x)
                        && num_like(&y)
                    {
                        return Ok(Value::Bool(false));
                    }
                    return overload(&x, &y, sym);
                };
                Ok(Value::Bool(match op {
                    BinOp::Lt => ord == Ordering::Less,
                    BinOp::Le => ord != Ordering::Greater,
                    BinOp::Gt => ord == Ordering::Greater,
                    _ => ord != Ordering::Less,
                }))
            }
            BinOp::In => match &y {
                Value::List(l) => {
                    for item in l.iter() {
                        self.spend(pos, 1)?;
                        if x.equals(&item, 0) {
                            return Ok(Value::Bool(true));
                        }
                    }
                    Ok(Value::Bool(false))
                }
                Value::Map(m) => Ok(Value::Bool(x.as_str().is_some_and(|k| m.get(k).is_some()))),
                _ => overload(&x, &y, "in"),
            },
            BinOp::Add => match (&x, &y) {
                (Value::Int(a), Value::Int(b)) => a
                    .checked_add(*b)
                    .map(Value::Int)
                    .map_or_else(|| err(pos, "integer overflow"), Ok),
                (Value::Uint(a), Value::Uint(b)) => a
                    .checked_add(*b)
                    .map(Value::Uint)
                    .map_or_else(|| err(pos, "unsigned integer overflow"), Ok),
                (Value::Double(a), Value::Double(b)) => Ok(Value::Double(a + b)),
                (Value::Str(a), Value::Str(b)) => {
                    let len = a.as_str().len().saturating_add(b.as_str().len());
                    if len > MAX_STRING {
                        return err(pos, format!("string longer than {MAX_STRING} bytes"));
                    }
                    self.spend_bytes(pos, len)?;
                    let mut s = String::with_capacity(len);
                    s.push_str(a.as_str());
                    s.push_str(b.as_str());
                    Ok(Value::Str(Str::Rc(Rc::from(s))))
                }
                (Value::List(a), Value::List(b)) => {
                    let len = a.len().saturating_add(b.len());
                    if len > MAX_LIST {
                        return err(pos, format!("list longer than {MAX_LIST} elements"));
                    }
                    self.spend(pos, len as u64)?;
                    let v: Vec<Value<'a>> = a.iter().chain(b.iter()).collect();
                    Ok(Value::List(List::Owned(v.into())))
                }
                (Value::Timestamp(t), Value::Duration(d))
                | (Value::Duration(d), Value::Timestamp(t)) => t
                    .checked_add(*d)
                    .map(Value::Timestamp)
                    .map_or_else(|| err(pos, "timestamp out of range"), Ok),
                (Value::Duration(a), Value::Duration(b)) => a
                    .checked_add(*b)
                    .map(Value::Duration)
                    .map_or_else(|| err(pos, "duration out of range"), Ok),
                _ => overload(&x, &y, "+"),
            },
            BinOp::Sub => match (&x, &y) {
                (Value::Int(a), Value::Int(b)) => a
                    .checked_sub(*b)
                    .map(Value::Int)
                    .map_or_else(|| err(pos, "integer overflow"), Ok),
                (Value::Uint(a), Value::Uint(b)) => a
                    .checked_sub(*b)
                    .map(Value::Uint)
                    .map_or_else(|| err(pos, "unsigned integer overflow"), Ok),
                (Value::Double(a), Value::Double(b)) => Ok(Value::Double(a - b)),
                (Value::Timestamp(a), Value::Timestamp(b)) => a
                    .since(*b)
                    .map(Value::Duration)
                    .map_or_else(|| err(pos, "duration out of range"), Ok),
                (Value::Timestamp(t), Value::Duration(d)) => t
                    .checked_sub(*d)
                    .map(Value::Timestamp)
                    .map_or_else(|| err(pos, "timestamp out of range"), Ok),
                (Value::Duration(a), Value::Duration(b)) => a
                    .checked_sub(*b)
                    .map(Value::Duration)
                    .map_or_else(|| err(pos, "duration out of range"), Ok),
                _ => overload(&x, &y, "-"),
            },
            BinOp::Mul => match (&x, &y) {
                (Value::Int(a), Value::Int(b)) => a
                    .checked_mul(*b)
                    .map(Value::Int)
                    .map_or_else(|| err(pos, "integer overflow"), Ok),
                (Value::Uint(a), Value::Uint(b)) => a
                    .checked_mul(*b)
                    .map(Value::Uint)
                    .map_or_else(|| err(pos, "unsigned integer overflow"), Ok),
                (Value::Double(a), Value::Double(b)) => Ok(Value::Double(a * b)),
                _ => overload(&x, &y, "*"),
            },
            BinOp::Div => match (&x, &y) {
                (Value::Int(_), Value::Int(0)) | (Value::Uint(_), Value::Uint(0)) => {
                    err(pos, "division by zero")
                }
                (Value::Int(a), Value::Int(b)) => a
                    .checked_div(*b)
                    .map(Value::Int)
                    .map_or_else(|| err(pos, "integer overflow"), Ok),
                (Value::Uint(a), Value::Uint(b)) => Ok(Value::Uint(a / b)),
                (Value::Double(a), Value::Double(b)) => Ok(Value::Double(a / b)),
                _ => overload(&x, &y, "/"),
            },
            BinOp::Rem => match (&x, &y) {
                (Value::Int(_), Value::Int(0)) | (Value::Uint(_), Value::Uint(0)) => {
                    err(pos, "modulus by zero")
                }
                (Value::Int(a), Value::Int(b)) => a
                    .checked_rem(*b)
                    .map(Value::Int)
                    .map_or_else(|| err(pos, "integer overflow"), Ok),
                (Value::Uint(a), Value::Uint(b)) => Ok(Value::Uint(a % b)),
                _ => overload(&x, &y, "%"),
            },
        }
    }

    fn call(&mut self, pos: usize, func: Func, name: &str, args: Vec<Value<'a>>) -> R<'a> {
        let mut it = args.into_iter();
        let (a, b, c) = (it.next(), it.next(), it.next());
        let bad = |v: &Option<Value<'_>>| -> R<'a> {
            let t = v.as_ref().map_or("nothing", Value::type_name);
            err(pos, format!("no such overload: {name}({t})"))
        };
        match func {
            Func::Size => match &a {
                Some(Value::Str(s)) => {
                    self.spend_bytes(pos, s.as_str().len())?;
                    Ok(Value::Int(s.as_str().chars().count() as i64))
                }
                Some(Value::List(l)) => Ok(Value::Int(l.len() as i64)),
                Some(Value::Map(m)) => Ok(Value::Int(m.len() as i64)),
                _ => bad(&a),
            },
            Func::ToInt => match &a {
                Some(Value::Int(i)) => Ok(Value::Int(*i)),
                Some(Value::Uint(u)) => i64::try_from(*u)
                    .map(Value::Int)
                    .or_else(|_| err(pos, "int() overflow")),
                Some(Value::Double(d)) => double_to_i64(*d)
                    .map(Value::Int)
                    .map_or_else(|| err(pos, "int() of a double out of range"), Ok),
                Some(Value::Str(s)) => s
                    .as_str()
                    .parse::<i64>()
                    .map(Value::Int)
                    .or_else(|_| err(pos, "int() of a string that is not an integer")),
                Some(Value::Timestamp(t)) => Ok(Value::Int(t.unix_secs())),
                Some(Value::Duration(d)) => Ok(Value::Int(d.whole_seconds())),
                _ => bad(&a),
            },
            Func::ToUint => match &a {
                Some(Value::Uint(u)) => Ok(Value::Uint(*u)),
                Some(Value::Int(i)) => u64::try_from(*i)
                    .map(Value::Uint)
                    .or_else(|_| err(pos, "uint() of a negative int")),
                Some(Value::Double(d)) => double_to_i64(*d)
                    .and_then(|i| u64::try_from(i).ok())
                    .map(Value::Uint)
                    .map_or_else(|| err(pos, "uint() of a double out of range"), Ok),
                Some(Value::Str(s)) => s
                    .as_str()
                    .parse::<u64>()
                    .map(Value::Uint)
                    .or_else(|_| err(pos, "uint() of a string that is not an unsigned integer")),
                _ => bad(&a),
            },
            Func::ToDouble => match &a {
                Some(Value::Double(d)) => Ok(Value::Double(*d)),
                Some(Value::Int(i)) => Ok(Value::Double(*i as f64)),
                Some(Value::Uint(u)) => Ok(Value::Double(*u as f64)),
                Some(Value::Str(s)) => s
                    .as_str()
                    .parse::<f64>()
                    .map(Value::Double)
                    .or_else(|_| err(pos, "double() of a string that is not a number")),
                _ => bad(&a),
            },
            Func::ToString => match &a {
                Some(Value::List(_) | Value::Map(_)) | None => bad(&a),
                Some(v @ Value::Str(_)) => Ok(v.clone()),
                Some(v) => Ok(Value::Str(Str::Rc(Rc::from(v.to_string())))),
            },
            Func::ToBool => match &a {
                Some(Value::Bool(b)) => Ok(Value::Bool(*b)),
                Some(Value::Str(s)) => match s.as_str() {
                    "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
                    "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
                    _ => err(pos, "bool() of a string that is not a boolean"),
                },
                _ => bad(&a),
            },
            Func::ToTimestamp => match &a {
                Some(Value::Timestamp(t)) => Ok(Value::Timestamp(*t)),
                Some(Value::Str(s)) => Timestamp::parse(s.as_str())
                    .map(Value::Timestamp)
                    .map_or_else(
                        || err(pos, "timestamp() of a string that is not an RFC 3339 time"),
                        Ok,
                    ),
                Some(Value::Int(i)) => Timestamp::from_unix(*i, 0)
                    .map(Value::Timestamp)
                    .map_or_else(|| err(pos, "timestamp out of range"), Ok),
                _ => bad(&a),
            },
            Func::ToDuration => match &a {
                Some(Value::Duration(d)) => Ok(Value::Duration(*d)),
                Some(Value::Str(s)) => Duration::parse(s.as_str())
                    .map(Value::Duration)
                    .map_or_else(
                        || {
                            err(
                                pos,
                                "duration() of a string that is not a duration like 1h30m",
                            )
                        },
                        Ok,
                    ),
                _ => bad(&a),
            },
            Func::Dyn => a.map_or_else(|| bad(&None), Ok),
            Func::StartsWith | Func::EndsWith | Func::Contains => match (&a, &b) {
                (Some(Value::Str(s)), Some(Value::Str(p))) => {
                    let (s, p) = (s.as_str(), p.as_str());
                    self.spend_bytes(pos, s.len())?;
                    Ok(Value::Bool(match func {
                        Func::StartsWith => s.starts_with(p),
                        Func::EndsWith => s.ends_with(p),
                        _ => s.contains(p),
                    }))
                }
                _ => bad(&a),
            },
            Func::LowerAscii | Func::UpperAscii => match &a {
                Some(Value::Str(s)) => {
                    self.spend_bytes(pos, s.as_str().len())?;
                    let out = if func == Func::LowerAscii {
                        s.as_str().to_ascii_lowercase()
                    } else {
                        s.as_str().to_ascii_uppercase()
                    };
                    Ok(Value::Str(Str::Rc(Rc::from(out))))
                }
                _ => bad(&a),
            },
            Func::TimeField => {
                let v = match &a {
                    Some(Value::Timestamp(t)) => t.field(name),
                    Some(Value::Duration(d)) => d.field(name),
                    _ => return bad(&a),
                };
                v.map(Value::Int).map_or_else(|| bad(&a), Ok)
            }
            Func::GetCookie => match &a {
                Some(Value::Str(n)) => {
                    let headers = self.lookup(pos, "req_headers")?;
                    let v = self.cookie(pos, &headers, n.as_str())?;
                    Ok(v.map_or_else(|| Value::Str(Str::Ref("")), Value::Str))
                }
                _ => bad(&a),
            },
            Func::ContainsCookie => match (&a, &b, &c) {
                (Some(h @ Value::Map(_)), Some(Value::Str(n)), Some(Value::Str(want))) => {
                    let v = self.cookie(pos, h, n.as_str())?;
                    Ok(Value::Bool(v.is_some_and(|v| v.as_str() == want.as_str())))
                }
                _ => bad(&a),
            },
            Func::HasQuerystring => match &a {
                Some(Value::Str(n)) => match self.lookup(pos, "req_querystring")? {
                    Value::Map(m) => Ok(Value::Bool(m.get(n.as_str()).is_some())),
                    other => err(
                        pos,
                        format!("req_querystring is a '{}', not a map", other.type_name()),
                    ),
                },
                _ => bad(&a),
            },
            Func::Between => match (&a, &b, &c) {
                (Some(v), Some(lo), Some(hi)) => match (num_cmp(v, lo), num_cmp(v, hi)) {
                    (Some(l), Some(h)) => {
                        Ok(Value::Bool(l != Ordering::Less && h != Ordering::Greater))
                    }
                    _ => bad(&a),
                },
                _ => bad(&a),
            },
        }
    }

    /// The value of cookie `name` in the `Cookie` headers of a `req_headers` map.
    fn cookie(
        &mut self,
        pos: usize,
        headers: &Value<'a>,
        name: &str,
    ) -> Result<Option<Str<'a>>, EvalError> {
        let Value::Map(m) = headers else {
            return err(
                pos,
                format!(
                    "cookies are read from req_headers, a map, not '{}'",
                    headers.type_name()
                ),
            );
        };
        let Some(Value::List(values)) = m.get(&canonical_header_key("cookie")) else {
            return Ok(None);
        };
        for line in values.iter() {
            let Value::Str(line) = line else { continue };
            self.spend_bytes(pos, line.as_str().len())?;
            let found = line.as_str().split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"'))
            });
            if let Some(v) = found {
                return Ok(Some(match &line {
                    Str::Ref(full) => Str::Ref(substr_of(full, v)),
                    Str::Rc(_) => Str::Rc(Rc::from(v)),
                }));
            }
        }
        Ok(None)
    }
}

/// `v` is a slice of `full`: the same bytes with `full`'s lifetime.
fn substr_of<'a>(full: &'a str, v: &str) -> &'a str {
    let start = (v.as_ptr() as usize).saturating_sub(full.as_ptr() as usize);
    full.get(start..start.saturating_add(v.len())).unwrap_or("")
}

fn num_like(v: &Value<'_>) -> bool {
    matches!(v, Value::Int(_) | Value::Uint(_) | Value::Double(_))
}

/// Bytes a comparison may have to read (strings), for the cost.
fn size_hint(v: &Value<'_>) -> usize {
    match v {
        Value::Str(s) => s.as_str().len(),
        Value::List(l) => l.len().saturating_mul(16),
        Value::Map(m) => m.len().saturating_mul(32),
        _ => 0,
    }
}

/// Truncates toward zero; None when out of i64's range or NaN.
fn double_to_i64(d: f64) -> Option<i64> {
    // i64::MAX as f64 rounds up to 2^63, which is out of range: hence the strict bound.
    (d.is_finite() && d > -9_223_372_036_854_775_809.0 && d < 9_223_372_036_854_775_808.0)
        .then_some(d.trunc() as i64)
}

fn index_value<'a>(pos: usize, v: &Value<'a>, i: &Value<'_>) -> R<'a> {
    match v {
        Value::List(l) => {
            let idx = match i {
                Value::Int(n) => usize::try_from(*n).ok(),
                Value::Uint(n) => usize::try_from(*n).ok(),
                Value::Double(d) if d.fract() == 0.0 => {
                    double_to_i64(*d).and_then(|n| usize::try_from(n).ok())
                }
                _ => {
                    return err(
                        pos,
                        format!("a list index must be an int, not '{}'", i.type_name()),
                    )
                }
            };
            match idx.and_then(|n| l.get(n)) {
                Some(x) => Ok(x),
                None => err(pos, format!("index out of range (list of {})", l.len())),
            }
        }
        // The key is not echoed: it may come from the request (a header value).
        Value::Map(m) => match i.as_str().and_then(|k| m.get(k)) {
            Some(x) => Ok(x),
            None => err(pos, format!("no such key (a '{}' index)", i.type_name())),
        },
        other => err(
            pos,
            format!("type '{}' cannot be indexed", other.type_name()),
        ),
    }
}
