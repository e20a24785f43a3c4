//! A JSON reader that knows where it is: every error names its JSON path
//! (`$.endpoints[0].backend[1].url_pattern: expected a string`).
//!
//! KrakenD configs are large and hand-written; an error that says only "invalid
//! type at line 1 column 4711" is useless. Config types are read field by field
//! through [`Obj`], which also rejects keys it was not asked about.

use serde_json::{Map, Value};
use std::fmt;

/// A configuration error at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

pub type Result<T> = std::result::Result<T, ConfigError>;

/// Names the JSON type of a value for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keys any KrakenD object may carry (comments and editor metadata).
pub fn is_meta_key(key: &str) -> bool {
    key.starts_with(['@', '$', '_', '#'])
}

/// An object being read; `finish` rejects every key that was not read or tolerated.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    read: Vec<&'a str>,
}

impl<'a> Obj<'a> {
    pub fn new(v: &'a Value, path: &str) -> Result<Self> {
        match v {
            Value::Object(map) => Ok(Self {
                map,
                path: path.to_string(),
                read: Vec::new(),
            }),
            other => Err(ConfigError::new(
                path,
                format!("expected an object, found {}", type_name(other)),
            )),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of a child key.
    pub fn at(&self, key: &str) -> String {
        format!("{}.{}", self.path, key)
    }

    /// The raw value of a key, marking it read.
    pub fn get(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.read.push(k.as_str());
        Some(v)
    }

    pub fn required(&mut self, key: &str) -> Result<&'a Value> {
        self.get(key)
            .ok_or_else(|| ConfigError::new(self.at(key), "is required"))
    }

    pub fn opt_str(&mut self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    pub fn str(&mut self, key: &str) -> Result<&'a str> {
        self.opt_str(key)?
            .ok_or_else(|| ConfigError::new(self.at(key), "is required"))
    }

    pub fn opt_bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "a boolean", other)),
        }
    }

    pub fn opt_u64(&mut self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| ConfigError::new(self.at(key), "expected a whole number >= 0")),
            Some(other) => Err(self.wrong(key, "a whole number", other)),
        }
    }

    pub fn opt_f64(&mut self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.wrong(key, "a number", other)),
        }
    }

    pub fn opt_array(&mut self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.wrong(key, "an array", other)),
        }
    }

    /// An array of strings.
    pub fn opt_strings(&mut self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(items) = self.opt_array(key)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.as_str()),
                other => {
                    return Err(ConfigError::new(
                        format!("{}[{i}]", self.at(key)),
                        format!("expected a string, found {}", type_name(other)),
                    ))
                }
            }
        }
        Ok(Some(out))
    }

    pub fn opt_obj(&mut self, key: &str) -> Result<Option<Obj<'a>>> {
        let path = self.at(key);
        self.get(key).map(|v| Obj::new(v, &path)).transpose()
    }

    /// Keys present but not read so far (in document order).
    pub fn unread(&self) -> impl Iterator<Item = (&'a str, &'a Value)> + '_ {
        self.map
            .iter()
            .filter(|(k, _)| !self.read.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Rejects keys that were neither read, nor tolerated, nor metadata (`@ $ _ #`).
    pub fn finish(self, tolerated: &[&str]) -> Result<()> {
        for (key, _) in self.unread() {
            if !is_meta_key(key) && !tolerated.contains(&key) {
                return Err(ConfigError::new(self.at(key), "unknown field"));
            }
        }
        Ok(())
    }

    fn wrong(&self, key: &str, want: &str, found: &Value) -> ConfigError {
        ConfigError::new(
            self.at(key),
            format!("expected {want}, found {}", type_name(found)),
        )
    }
}

/// Parses a Go duration (`2s`, `500ms`, `1m30s`, `1.5h`) into milliseconds.
pub fn parse_duration_ms(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("\"{s}\" is not a duration (examples: 500ms, 30s, 2m, 1h30m)");
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return Err(bad()),
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_path() {
        let v = json!({"a": 1, "b": "x", "c": [1], "zz": true, "@comment": "ok"});
        let mut o = Obj::new(&v, "$").unwrap();
        assert_eq!(
            o.opt_str("a").unwrap_err().to_string(),
            "$.a: expected a string, found a number"
        );
        assert_eq!(o.str("b").unwrap(), "x");
        assert_eq!(
            o.opt_strings("c").unwrap_err().to_string(),
            "$.c[0]: expected a string, found a number"
        );
        assert_eq!(
            o.str("missing").unwrap_err().to_string(),
            "$.missing: is required"
        );
        assert_eq!(
            o.finish(&[]).unwrap_err().to_string(),
            "$.zz: unknown field"
        );
    }

    #[test]
    fn tolerated_and_meta_keys_pass() {
        let v = json!({"timeout": "2s", "$schema": "x", "#c": 1});
        assert!(Obj::new(&v, "$").unwrap().finish(&["timeout"]).is_ok());
        assert_eq!(
            Obj::new(&json!([1]), "$.x").err().unwrap().to_string(),
            "$.x: expected an object, found an array"
        );
    }
}
