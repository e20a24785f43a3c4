//! Secrets from the environment: `{{ env "OPENAI_API_KEY" }}` in a config string is
//! replaced by that variable of the Wasm VM's environment (Envoy passes host variables
//! listed in `vm_config.environment_variables.host_env_keys`). This is the syntax of
//! KrakenD's flexible configuration, so the same file works in both.

use serde_json::Value;
use std::fmt;

/// A configured secret: Debug never prints it.
#[derive(Clone, PartialEq)]
pub struct Secret<T>(pub T);

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the template syntax went wrong, or which variable is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    Syntax(String),
    Missing(String),
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvError::Syntax(m) => f.write_str(m),
            EnvError::Missing(name) => write!(
                f,
                "environment variable {name} is not set (Envoy passes it to the filter only when it is listed in vm_config.environment_variables.host_env_keys)"
            ),
        }
    }
}

/// One piece of a template string.
enum Piece<'a> {
    Text(&'a str),
    Env(&'a str),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, EnvError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        out.push(Piece::Text(&rest[..open]));
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| EnvError::Syntax("unclosed {{ in template".into()))?;
        out.push(Piece::Env(parse_env_call(after[..close].trim())?));
        rest = &after[close + 2..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// Parses `env "NAME"`.
fn parse_env_call(inner: &str) -> Result<&str, EnvError> {
    let bad = || {
        EnvError::Syntax(format!(
            "unsupported template {{{{ {inner} }}}}: only {{{{ env \"NAME\" }}}} is supported"
        ))
    };
    let arg = inner.strip_prefix("env").ok_or_else(bad)?.trim();
    let name = arg
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .ok_or_else(bad)?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad());
    }
    Ok(name)
}

/// Resolves every `{{ env "NAME" }}` in `s` through `lookup`.
pub fn resolve(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    if !s.contains("{{") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    for piece in pieces(s)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Env(name) => {
                out.push_str(&lookup(name).ok_or_else(|| EnvError::Missing(name.to_string()))?)
            }
        }
    }
    Ok(out)
}

/// Every variable name referenced anywhere in a config document, sorted and unique
/// (the bootstrap generator lists them in `host_env_keys`).
pub fn referenced(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.contains("{{") => {
                if let Ok(ps) = pieces(s) {
                    for p in ps {
                        if let Piece::Env(name) = p {
                            out.push(name.to_string());
                        }
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut out);
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "sk-123".to_string())
    }

    #[test]
    fn resolves_variables_with_any_spacing() {
        assert_eq!(
            resolve("Bearer {{ env \"KEY\" }}", &env).unwrap(),
            "Bearer sk-123"
        );
        assert_eq!(
            resolve("{{env \"KEY\"}}/{{ env \"KEY\" }}", &env).unwrap(),
            "sk-123/sk-123"
        );
        assert_eq!(resolve("plain", &env).unwrap(), "plain");
    }

    #[test]
    fn rejects_bad_templates_and_missing_variables() {
        assert_eq!(
            resolve("{{ env \"NOPE\" }}", &env).unwrap_err(),
            EnvError::Missing("NOPE".into())
        );
        for bad in [
            "{{ env KEY }}",
            "{{ .Foo }}",
            "{{ env \"\" }}",
            "{{ env \"A-B\" }}",
        ] {
            assert!(
                matches!(resolve(bad, &env), Err(EnvError::Syntax(_))),
                "{bad}"
            );
        }
        assert_eq!(
            resolve("{{ env", &env).unwrap_err(),
            EnvError::Syntax("unclosed {{ in template".into())
        );
    }

    #[test]
    fn lists_referenced_variables() {
        let doc =
            json!({"a": ["{{ env \"B\" }}", {"x": "{{ env \"A\" }} {{ env \"B\" }}"}], "n": 1});
        assert_eq!(referenced(&doc), vec!["A", "B"]);
    }
}
