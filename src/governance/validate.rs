//! A small JSON Schema validator for the keywords that matter to API payloads (drafts 4, 6
//! and 7 agree on them). Schemas are compiled at configure time: a keyword outside the
//! subset is a configuration error that names it, never silently skipped.
//!
//! Supported: `type` (one or a list; `integer` = a number without fraction), `required`,
//! `properties`, `additionalProperties` (boolean or schema), `items` (one schema for every
//! element), `enum`, `const`, `minimum`/`maximum`, `exclusiveMinimum`/`exclusiveMaximum`
//! (draft-4 booleans or draft-6 numbers), `minLength`/`maxLength` (characters),
//! `minItems`/`maxItems`, `uniqueItems`, `minProperties`/`maxProperties`, `pattern`
//! (unanchored, Rust `regex` syntax: the ECMA-262 subset without look-around and
//! back-references), and boolean schemas. Annotations are accepted and not checked:
//! `$schema`, `$id`, `id`, `$comment`, `title`, `description`, `default`, `examples`,
//! `format`, `readOnly`, `writeOnly`, `deprecated`.

use crate::config::reader::{type_name, ConfigError, Result};
use serde_json::{Map, Value};

const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "readOnly",
    "writeOnly",
    "deprecated",
];

/// A JSON type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "null" => Kind::Null,
            "boolean" => Kind::Boolean,
            "integer" => Kind::Integer,
            "number" => Kind::Number,
            "string" => Kind::String,
            "array" => Kind::Array,
            "object" => Kind::Object,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match (self, v) {
            (Kind::Null, Value::Null) => true,
            (Kind::Boolean, Value::Bool(_)) => true,
            (Kind::Number, Value::Number(_)) => true,
            (Kind::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            (Kind::String, Value::String(_)) => true,
            (Kind::Array, Value::Array(_)) => true,
            (Kind::Object, Value::Object(_)) => true,
            _ => false,
        }
    }
}

/// A compiled `pattern` (compared by its source).
#[derive(Debug, Clone)]
pub struct Pattern(regex_lite::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A compiled schema.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schema {
    /// `false` schema: nothing is valid.
    never: bool,
    types: Vec<Kind>,
    required: Vec<String>,
    properties: Vec<(String, Schema)>,
    /// `additionalProperties`: None = anything; Some(schema) (a `false` schema forbids).
    additional: Option<Box<Schema>>,
    items: Option<Box<Schema>>,
    enumeration: Option<Vec<Value>>,
    constant: Option<Value>,
    minimum: Option<(f64, bool)>,
    maximum: Option<(f64, bool)>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    pattern: Option<Pattern>,
}

/// Where validation failed (`$.messages[0].role`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: String,
    pub message: String,
}

impl Invalid {
    fn at(path: &str, message: String) -> Self {
        Self {
            path: path.to_string(),
            message,
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Compiles the schema at `path` (a configuration JSON path, for errors).
pub fn compile(v: &Value, path: &str) -> Result<Schema> {
    let map = match v {
        Value::Bool(true) => return Ok(Schema::default()),
        Value::Bool(false) => {
            return Ok(Schema {
                never: true,
                ..Schema::default()
            })
        }
        Value::Object(m) => m,
        other => {
            return Err(ConfigError::new(
                path,
                format!(
                    "a JSON Schema must be an object or a boolean, found {}",
                    type_name(other)
                ),
            ))
        }
    };
    let unsupported: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !is_supported(k))
        .collect();
    if !unsupported.is_empty() {
        return Err(ConfigError::new(
            path,
            format!(
                "unsupported JSON Schema keyword(s): {} (tollgate validates type, required, properties, additionalProperties, items, enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength, minItems, maxItems, uniqueItems, minProperties, maxProperties, pattern)",
                unsupported.join(", ")
            ),
        ));
    }
    let mut s = Schema::default();
    structure(map, path, &mut s)?;
    limits(map, path, &mut s)?;
    Ok(s)
}

/// `type`, `required`, `properties`, `additionalProperties`, `items`.
fn structure(map: &Map<String, Value>, path: &str, s: &mut Schema) -> Result<()> {
    let at = |k: &str| format!("{path}.{k}");
    if let Some(t) = map.get("type") {
        let names: Vec<&Value> = match t {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        for n in names {
            let kind = n.as_str().and_then(Kind::parse).ok_or_else(|| {
                ConfigError::new(at("type"), format!("{n} is not a JSON Schema type"))
            })?;
            s.types.push(kind);
        }
    }
    if let Some(r) = map.get("required") {
        let list = r
            .as_array()
            .filter(|a| a.iter().all(Value::is_string))
            .ok_or_else(|| ConfigError::new(at("required"), "expected an array of strings"))?;
        s.required = list
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect();
    }
    if let Some(p) = map.get("properties") {
        let props = p
            .as_object()
            .ok_or_else(|| ConfigError::new(at("properties"), "expected an object"))?;
        for (name, sub) in props {
            s.properties.push((
                name.clone(),
                compile(sub, &format!("{}.{name}", at("properties")))?,
            ));
        }
    }
    if let Some(a) = map.get("additionalProperties") {
        s.additional = Some(Box::new(compile(a, &at("additionalProperties"))?));
    }
    if let Some(i) = map.get("items") {
        if i.is_array() {
            return Err(ConfigError::new(
                at("items"),
                "unsupported: tuple items (an array of schemas); use one schema",
            ));
        }
        s.items = Some(Box::new(compile(i, &at("items"))?));
    }
    Ok(())
}

/// `enum`, `const`, bounds, counts, `uniqueItems`, `pattern`.
fn limits(map: &Map<String, Value>, path: &str, s: &mut Schema) -> Result<()> {
    let at = |k: &str| format!("{path}.{k}");
    if let Some(e) = map.get("enum") {
        s.enumeration = Some(
            e.as_array()
                .cloned()
                .ok_or_else(|| ConfigError::new(at("enum"), "expected an array"))?,
        );
    }
    s.constant = map.get("const").cloned();
    s.minimum = bound(map, "minimum", "exclusiveMinimum", path)?;
    s.maximum = bound(map, "maximum", "exclusiveMaximum", path)?;
    s.min_length = count(map, "minLength", path)?;
    s.max_length = count(map, "maxLength", path)?;
    s.min_items = count(map, "minItems", path)?;
    s.max_items = count(map, "maxItems", path)?;
    s.min_properties = count(map, "minProperties", path)?;
    s.max_properties = count(map, "maxProperties", path)?;
    s.unique_items = match map.get("uniqueItems") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ConfigError::new(at("uniqueItems"), "expected a boolean")),
    };
    if let Some(p) = map.get("pattern") {
        let src = p
            .as_str()
            .ok_or_else(|| ConfigError::new(at("pattern"), "expected a string"))?;
        let re = // regex-lite's classes are ASCII: `\d`, `\w` and `\b` are ECMA-262's (JSON Schema's
        // dialect); `\s` lacks ECMA's non-ASCII spaces.
        regex_lite::Regex::new(src).map_err(|e| {
            ConfigError::new(at("pattern"), format!("invalid regular expression: {e}"))
        })?;
        s.pattern = Some(Pattern(re));
    }
    Ok(())
}

fn is_supported(k: &str) -> bool {
    ANNOTATIONS.contains(&k)
        || matches!(
            k,
            "type"
                | "required"
                | "properties"
                | "additionalProperties"
                | "items"
                | "enum"
                | "const"
                | "minimum"
                | "maximum"
                | "exclusiveMinimum"
                | "exclusiveMaximum"
                | "minLength"
                | "maxLength"
                | "minItems"
                | "maxItems"
                | "uniqueItems"
                | "minProperties"
                | "maxProperties"
                | "pattern"
        )
}

/// `minimum` + `exclusiveMinimum` (draft-4 boolean or draft-6 number) → (limit, exclusive).
fn bound(
    map: &Map<String, Value>,
    key: &str,
    excl: &str,
    path: &str,
) -> Result<Option<(f64, bool)>> {
    let inclusive = match map.get(key) {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| ConfigError::new(format!("{path}.{key}"), "expected a number"))?,
        ),
    };
    match map.get(excl) {
        None | Some(Value::Bool(false)) => Ok(inclusive.map(|n| (n, false))),
        Some(Value::Bool(true)) => match inclusive {
            Some(n) => Ok(Some((n, true))),
            None => Err(ConfigError::new(
                format!("{path}.{excl}"),
                format!("true needs {key} (draft-4 form)"),
            )),
        },
        Some(Value::Number(n)) => {
            let e = n.as_f64().unwrap_or_default();
            // Both given: the stricter one applies.
            Ok(Some(match inclusive {
                Some(i) if (key == "minimum" && i > e) || (key == "maximum" && i < e) => (i, false),
                _ => (e, true),
            }))
        }
        Some(_) => Err(ConfigError::new(
            format!("{path}.{excl}"),
            "expected a number or a boolean",
        )),
    }
}

fn count(map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u64>> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ConfigError::new(format!("{path}.{key}"), "expected a whole number >= 0")
        }),
    }
}

fn child(path: &str, name: &str) -> String {
    let simple = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if simple {
        format!("{path}.{name}")
    } else {
        format!("{path}[{}]", Value::String(name.to_string()))
    }
}

impl Schema {
    /// Validates `v`; the first failure names its JSON path (`$` is the document).
    pub fn validate(&self, v: &Value) -> std::result::Result<(), Invalid> {
        self.check(v, "$")
    }

    fn check(&self, v: &Value, path: &str) -> std::result::Result<(), Invalid> {
        let fail = |message: String| Err(Invalid::at(path, message));
        if self.never {
            return fail("no value is allowed here".into());
        }
        if !self.types.is_empty() && !self.types.iter().any(|k| k.accepts(v)) {
            let want: Vec<&str> = self.types.iter().map(|k| k.name()).collect();
            return fail(format!(
                "expected {}, found {}",
                want.join(" or "),
                type_name(v)
            ));
        }
        if let Some(list) = &self.enumeration {
            if !list.iter().any(|x| json_eq(x, v)) {
                let shown: Vec<String> = list.iter().map(Value::to_string).collect();
                return fail(format!("must be one of {}", shown.join(", ")));
            }
        }
        if let Some(c) = &self.constant {
            if !json_eq(c, v) {
                return fail(format!("must be {c}"));
            }
        }
        match v {
            Value::Number(n) => self.check_number(n.as_f64().unwrap_or_default(), path),
            Value::String(s) => self.check_string(s, path),
            Value::Array(items) => self.check_array(items, path),
            Value::Object(map) => self.check_object(map, path),
            _ => Ok(()),
        }
    }

    fn check_number(&self, x: f64, path: &str) -> std::result::Result<(), Invalid> {
        let fail = |message: String| Err(Invalid::at(path, message));
        if let Some((m, excl)) = self.minimum {
            if x < m || (excl && x == m) {
                let op = if excl { ">" } else { ">=" };
                return fail(format!("must be {op} {m}"));
            }
        }
        if let Some((m, excl)) = self.maximum {
            if x > m || (excl && x == m) {
                let op = if excl { "<" } else { "<=" };
                return fail(format!("must be {op} {m}"));
            }
        }
        Ok(())
    }

    fn check_string(&self, s: &str, path: &str) -> std::result::Result<(), Invalid> {
        let fail = |message: String| Err(Invalid::at(path, message));
        let len = s.chars().count() as u64;
        if let Some(m) = self.min_length.filter(|m| len < *m) {
            return fail(format!("must be at least {m} characters long"));
        }
        if let Some(m) = self.max_length.filter(|m| len > *m) {
            return fail(format!("must be at most {m} characters long"));
        }
        if let Some(Pattern(re)) = &self.pattern {
            if !re.is_match(s) {
                return fail(format!("does not match the pattern {}", re.as_str()));
            }
        }
        Ok(())
    }

    fn check_array(&self, items: &[Value], path: &str) -> std::result::Result<(), Invalid> {
        let fail = |message: String| Err(Invalid::at(path, message));
        let len = items.len() as u64;
        if let Some(m) = self.min_items.filter(|m| len < *m) {
            return fail(format!("must have at least {m} items"));
        }
        if let Some(m) = self.max_items.filter(|m| len > *m) {
            return fail(format!("must have at most {m} items"));
        }
        if self.unique_items {
            for (i, a) in items.iter().enumerate() {
                if items.iter().skip(i + 1).any(|b| json_eq(a, b)) {
                    return fail("items must be unique".into());
                }
            }
        }
        if let Some(s) = &self.items {
            for (i, item) in items.iter().enumerate() {
                s.check(item, &format!("{path}[{i}]"))?;
            }
        }
        Ok(())
    }

    fn check_object(
        &self,
        map: &Map<String, Value>,
        path: &str,
    ) -> std::result::Result<(), Invalid> {
        let fail = |message: String| Err(Invalid::at(path, message));
        let len = map.len() as u64;
        if let Some(m) = self.min_properties.filter(|m| len < *m) {
            return fail(format!("must have at least {m} properties"));
        }
        if let Some(m) = self.max_properties.filter(|m| len > *m) {
            return fail(format!("must have at most {m} properties"));
        }
        for r in &self.required {
            if !map.contains_key(r) {
                return Err(Invalid {
                    path: child(path, r),
                    message: "is required".into(),
                });
            }
        }
        for (k, item) in map {
            let p = child(path, k);
            match self.properties.iter().find(|(name, _)| name == k) {
                Some((_, s)) => s.check(item, &p)?,
                None => match &self.additional {
                    Some(s) if s.never => {
                        return Err(Invalid {
                            path: p,
                            message: "is not an allowed property".into(),
                        })
                    }
                    Some(s) => s.check(item, &p)?,
                    None => {}
                },
            }
        }
        Ok(())
    }
}

/// JSON equality where 1 and 1.0 are the same number (JSON Schema's rule).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> Schema {
        compile(&v, "$.s").unwrap()
    }

    fn err(s: &Schema, v: Value) -> String {
        s.validate(&v).unwrap_err().to_string()
    }

    #[test]
    fn chat_request_schema() {
        let s = schema(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string", "enum": ["gpt-4o-mini", "claude"]},
                "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                "n": {"type": "integer", "exclusiveMinimum": 0},
                "messages": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
                    "type": "object", "required": ["role", "content"], "additionalProperties": false,
                    "properties": {
                        "role": {"enum": ["system", "user", "assistant"]},
                        "content": {"type": "string", "minLength": 1, "maxLength": 20, "pattern": "^[^<>]*$"},
                        "name": {"type": ["string", "null"]}
                    }}}
            }
        }));
        let ok = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "n": 1});
        assert!(s.validate(&ok).is_ok());
        let cases = [
            (json!([]), "$: expected object, found an array"),
            (json!({"messages": []}), "$.model: is required"),
            (
                json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}),
                "$.model: must be one of \"gpt-4o-mini\", \"claude\"",
            ),
            (
                json!({"model": "claude", "messages": []}),
                "$.messages: must have at least 1 items",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user"}]}),
                "$.messages[0].content: is required",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}),
                "$.messages[1].role: must be one of \"system\", \"user\", \"assistant\"",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user", "content": ""}]}),
                "$.messages[0].content: must be at least 1 characters long",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user", "content": "ééééééééééééééééééééé"}]}),
                "$.messages[0].content: must be at most 20 characters long",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user", "content": "<script>"}]}),
                "$.messages[0].content: does not match the pattern ^[^<>]*$",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user", "content": "a", "extra": 1}]}),
                "$.messages[0].extra: is not an allowed property",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user", "content": "a", "name": 3}]}),
                "$.messages[0].name: expected string or null, found a number",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user", "content": "a"}], "temperature": 1.5}),
                "$.temperature: must be <= 1",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user", "content": "a"}], "n": 0}),
                "$.n: must be > 0",
            ),
            (
                json!({"model": "claude", "messages": [{"role": "user", "content": "a"}], "n": 1.5}),
                "$.n: expected integer, found a number",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(err(&s, v), want);
        }
        // 2.0 is an integer; 1 == 1.0 for const
        assert!(schema(json!({"type": "integer"}))
            .validate(&json!(2.0))
            .is_ok());
        assert!(schema(json!({"const": 1})).validate(&json!(1.0)).is_ok());
        assert_eq!(
            err(&schema(json!({"const": "a"})), json!("b")),
            "$: must be \"a\""
        );
    }

    #[test]
    fn draft4_exclusive_booleans_boolean_schemas_and_odd_keys() {
        let s = schema(
            json!({"minimum": 1, "exclusiveMinimum": true, "maximum": 3, "exclusiveMaximum": true}),
        );
        assert!(s.validate(&json!(2)).is_ok());
        assert_eq!(err(&s, json!(1)), "$: must be > 1");
        assert_eq!(err(&s, json!(3)), "$: must be < 3");
        let s = schema(
            json!({"properties": {"a": false, "b c": {"type": "string"}}, "additionalProperties": {"type": "integer"}}),
        );
        assert_eq!(err(&s, json!({"a": 1})), "$.a: no value is allowed here");
        assert_eq!(
            err(&s, json!({"b c": 1})),
            "$[\"b c\"]: expected string, found a number"
        );
        assert_eq!(
            err(&s, json!({"z": "x"})),
            "$.z: expected integer, found a string"
        );
        assert_eq!(
            err(&schema(json!({"uniqueItems": true})), json!([1, 1.0])),
            "$: items must be unique"
        );
        assert!(schema(json!(true)).validate(&json!({"x": 1})).is_ok());
    }

    #[test]
    fn patterns_use_ecma_ascii_classes() {
        let s = schema(json!({"pattern": "^\\d{3}-[\\w.]+\\s\\bok\\b$"}));
        assert!(s.validate(&json!("123-a_b.c ok")).is_ok());
        assert!(s.validate(&json!("١٢٣-abc ok")).is_err()); // Arabic-Indic digits are not \d in ECMA
        assert!(s.validate(&json!("123-é ok")).is_err());
        let s = schema(json!({"pattern": "[^\\s]+@\\S+\\\\d"}));
        assert!(s.validate(&json!("a@b\\d")).is_ok());
        assert!(s.validate(&json!("a@b1")).is_err());
        assert!(schema(json!({"pattern": "é+"}))
            .validate(&json!("xéé"))
            .is_ok());
    }

    #[test]
    fn unsupported_keywords_and_bad_values_are_config_errors() {
        let cases = [
            (
                json!({"type": "object", "properties": {"a": {"oneOf": [], "$ref": "#/x"}}}),
                "$.s.properties.a: unsupported JSON Schema keyword(s): $ref, oneOf",
            ),
            (
                json!({"type": "strin"}),
                "$.s.type: \"strin\" is not a JSON Schema type",
            ),
            (
                json!({"pattern": "("}),
                "$.s.pattern: invalid regular expression",
            ),
            (
                json!({"items": [{}]}),
                "$.s.items: unsupported: tuple items (an array of schemas); use one schema",
            ),
            (
                json!({"minLength": -1}),
                "$.s.minLength: expected a whole number >= 0",
            ),
            (
                json!("x"),
                "$.s: a JSON Schema must be an object or a boolean, found a string",
            ),
        ];
        for (v, want) in cases {
            let e = compile(&v, "$.s").unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }
}
