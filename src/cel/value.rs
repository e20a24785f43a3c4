//! CEL values: what an expression reads from its [`Activation`](super::Activation) and what it
//! computes.
//!
//! A value borrows the request's data (`'a`) where it can: header values, a JWT's claims and a
//! response body are read in place (`Str::Ref`, `List::Json`, `Map::Json`), never copied.
//! What the expression builds (literals, concatenations) is reference-counted, so passing a
//! value around costs a pointer copy.
//!
//! JSON numbers are doubles, as in KrakenD (Go's `encoding/json` decodes every number into a
//! `float64`); equality and ordering compare numbers across int, uint and double by value, as
//! cel-go does, so `JWT.level == 3` holds for a claim `"level": 3`.

use super::time::{Duration, Timestamp};
use serde_json::Value as Json;
use std::cmp::Ordering;
use std::fmt;
use std::rc::Rc;

/// A CEL value.
#[derive(Clone, Debug)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(Str<'a>),
    List(List<'a>),
    Map(Map<'a>),
    Timestamp(Timestamp),
    Duration(Duration),
}

/// A string, borrowed from the request or owned by the evaluation.
#[derive(Clone, Debug)]
pub enum Str<'a> {
    Ref(&'a str),
    Rc(Rc<str>),
}

/// A list: a JSON array read in place, or one the expression or the activation built.
#[derive(Clone, Debug)]
pub enum List<'a> {
    Json(&'a [Json]),
    Owned(Rc<[Value<'a>]>),
}

/// A map: a JSON object read in place, or one the expression or the activation built
/// (string keys only in the latter; CEL map literals with other keys are refused when the
/// expression is compiled).
#[derive(Clone, Debug)]
pub enum Map<'a> {
    Json(&'a serde_json::Map<String, Json>),
    Owned(Rc<[(Rc<str>, Value<'a>)]>),
}

impl Str<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Str::Ref(s) => s,
            Str::Rc(s) => s,
        }
    }
}

impl<'a> List<'a> {
    pub fn len(&self) -> usize {
        match self {
            List::Json(a) => a.len(),
            List::Owned(a) => a.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, i: usize) -> Option<Value<'a>> {
        match self {
            List::Json(a) => a.get(i).map(Value::from_json),
            List::Owned(a) => a.get(i).cloned(),
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = Value<'a>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl<'a> Map<'a> {
    pub fn len(&self) -> usize {
        match self {
            Map::Json(m) => m.len(),
            Map::Owned(m) => m.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The value under a string key.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        match self {
            Map::Json(m) => m.get(key).map(Value::from_json),
            Map::Owned(m) => m.iter().find(|(k, _)| &**k == key).map(|(_, v)| v.clone()),
        }
    }
    /// The keys, as CEL strings.
    pub fn keys(&self) -> Vec<Value<'a>> {
        match self {
            Map::Json(m) => m.keys().map(|k| Value::Str(Str::Ref(k.as_str()))).collect(),
            Map::Owned(m) => m
                .iter()
                .map(|(k, _)| Value::Str(Str::Rc(k.clone())))
                .collect(),
        }
    }
}

impl<'a> Value<'a> {
    /// A string value borrowed from the request.
    pub fn str(s: &'a str) -> Self {
        Value::Str(Str::Ref(s))
    }
    /// A string value the caller owns.
    pub fn string(s: &str) -> Self {
        Value::Str(Str::Rc(Rc::from(s)))
    }
    /// A JSON document read in place (a JWT's claims, a response body). Numbers become doubles.
    pub fn from_json(j: &'a Json) -> Self {
        match j {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
            Json::String(s) => Value::Str(Str::Ref(s)),
            Json::Array(a) => Value::List(List::Json(a)),
            Json::Object(m) => Value::Map(Map::Json(m)),
        }
    }
    /// A map of string lists, the shape KrakenD gives headers and query strings
    /// (`map<string, list<string>>`): repeated names gather their values in order.
    /// Keys are taken as given (see [`canonical_header_key`] for headers).
    pub fn string_lists<K: AsRef<str>>(pairs: impl IntoIterator<Item = (K, &'a str)>) -> Self {
        let mut out: Vec<(Rc<str>, Vec<Value<'a>>)> = Vec::new();
        for (k, v) in pairs {
            let k = k.as_ref();
            match out.iter_mut().find(|(key, _)| &**key == k) {
                Some((_, vals)) => vals.push(Value::str(v)),
                None => out.push((Rc::from(k), vec![Value::str(v)])),
            }
        }
        Value::Map(Map::Owned(
            out.into_iter()
                .map(|(k, v)| (k, Value::List(List::Owned(v.into()))))
                .collect(),
        ))
    }
    /// A map of strings (`map<string, string>`), the shape of KrakenD's `req_params`.
    /// A repeated key keeps its first value.
    pub fn string_map<K: AsRef<str>>(pairs: impl IntoIterator<Item = (K, &'a str)>) -> Self {
        let mut out: Vec<(Rc<str>, Value<'a>)> = Vec::new();
        for (k, v) in pairs {
            let k = k.as_ref();
            if !out.iter().any(|(key, _)| &**key == k) {
                out.push((Rc::from(k), Value::str(v)));
            }
        }
        Value::Map(Map::Owned(out.into()))
    }

    /// The CEL type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null_type",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Double(_) => "double",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Timestamp(_) => "google.protobuf.Timestamp",
            Value::Duration(_) => "google.protobuf.Duration",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// CEL equality (heterogeneous: values of different types are unequal, numbers compare
    /// by value across int, uint and double; NaN equals nothing). `depth` bounds nesting.
    pub fn equals(&self, other: &Value<'_>, depth: u32) -> bool {
        if depth > super::MAX_DEPTH as u32 {
            return false;
        }
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a.as_str() == b.as_str(),
            (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            (Value::Duration(a), Value::Duration(b)) => a == b,
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.equals(&y, depth + 1))
            }
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.keys().iter().all(|k| {
                        let key = k.as_str().unwrap_or_default();
                        match (a.get(key), b.get(key)) {
                            (Some(x), Some(y)) => x.equals(&y, depth + 1),
                            _ => false,
                        }
                    })
            }
            _ => matches!(num_cmp(self, other), Some(Ordering::Equal)),
        }
    }
}

/// Compares two numbers of any numeric type by value (None: not both numbers, or NaN).
pub fn num_cmp(a: &Value<'_>, b: &Value<'_>) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Uint(x), Value::Uint(y)) => Some(x.cmp(y)),
        (Value::Double(x), Value::Double(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::Uint(y)) => Some(i128::from(*x).cmp(&i128::from(*y))),
        (Value::Uint(x), Value::Int(y)) => Some(i128::from(*x).cmp(&i128::from(*y))),
        (Value::Int(x), Value::Double(y)) => int_double_cmp(i128::from(*x), *y),
        (Value::Uint(x), Value::Double(y)) => int_double_cmp(i128::from(*x), *y),
        (Value::Double(x), Value::Int(y)) => {
            int_double_cmp(i128::from(*y), *x).map(Ordering::reverse)
        }
        (Value::Double(x), Value::Uint(y)) => {
            int_double_cmp(i128::from(*y), *x).map(Ordering::reverse)
        }
        _ => None,
    }
}

/// Exact comparison of an integer with a double (no rounding of large integers).
fn int_double_cmp(i: i128, d: f64) -> Option<Ordering> {
    if d.is_nan() {
        return None;
    }
    // Every integer here fits in (-2^64, 2^64); doubles outside that range order trivially.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0; // 2^64
    if d >= LIMIT {
        return Some(Ordering::Less);
    }
    if d <= -LIMIT {
        return Some(Ordering::Greater);
    }
    let t = d.trunc();
    // |t| < 2^64, so it converts exactly.
    let ti = t as i128;
    match i.cmp(&ti) {
        Ordering::Equal if d > t => Some(Ordering::Less),
        Ordering::Equal if d < t => Some(Ordering::Greater),
        o => Some(o),
    }
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: the form KrakenD gives header names in
/// `req_headers` (`x-user-id` → `X-User-Id`). A name with a byte that is not a token
/// character is returned unchanged, as Go does.
pub fn canonical_header_key(name: &str) -> String {
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// KrakenD's `req_params` names: the endpoint's `{param}` with its first letter upper-cased
/// (`{id_user}` → `Id_user`).
pub fn param_key(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl fmt::Display for Value<'_> {
    /// The text `string(x)` gives (cel-go's formatting for scalars: doubles as Go's
    /// `strconv.FormatFloat(d, 'g', -1, 64)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Uint(u) => write!(f, "{u}"),
            Value::Double(d) => f.write_str(&crate::gofmt::float_text(*d, 6)),
            Value::Str(s) => f.write_str(s.as_str()),
            Value::Timestamp(t) => write!(f, "{t}"),
            Value::Duration(d) => write!(f, "{d}"),
            Value::List(_) => f.write_str("[list]"),
            Value::Map(_) => f.write_str("{map}"),
        }
    }
}
