//! KrakenD `modifier/martian` header modifiers, compiled into [`HeaderOp`] lists per scope.
//!
//! Supported: `header.Modifier` (set, replacing), `header.Append`, `header.Blacklist`
//! (remove), `header.Copy`, and the groups `fifo.Group` and `priority.Group`. Other
//! martian modifiers are valid KrakenD but not implemented here: they are rejected at
//! configure time rather than silently ignored.

use crate::config::env;
use crate::config::reader::{ConfigError, Obj, Result};
use serde_json::Value;
use std::fmt;

/// A header value from the config; may hold a secret, so Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderValue(pub String);

impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeaderValue(<redacted>)")
    }
}

/// One header operation, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    Set { name: String, value: HeaderValue },
    Append { name: String, value: HeaderValue },
    Remove { names: Vec<String> },
    Copy { from: String, to: String },
}

/// Operations per scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modifiers {
    pub request: Vec<HeaderOp>,
    pub response: Vec<HeaderOp>,
}

#[derive(Clone, Copy)]
struct Scopes {
    request: bool,
    response: bool,
}

const ALL: Scopes = Scopes {
    request: true,
    response: true,
};

/// Compiles the value of a `modifier/martian` namespace.
pub fn compile(
    v: &Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Modifiers> {
    let mut out = Modifiers::default();
    modifier(v, path, ALL, lookup, &mut out)?;
    Ok(out)
}

fn modifier(
    v: &Value,
    path: &str,
    outer: Scopes,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Modifiers,
) -> Result<()> {
    let o = Obj::new(v, path)?;
    let mut kinds = o
        .unread()
        .filter(|(k, _)| !crate::config::reader::is_meta_key(k));
    let (kind, body) = kinds
        .next()
        .ok_or_else(|| ConfigError::new(path, "expected one martian modifier"))?;
    if let Some((extra, _)) = kinds.next() {
        return Err(ConfigError::new(
            format!("{path}.{extra}"),
            "one modifier per object; wrap several in fifo.Group",
        ));
    }
    let path = format!("{path}.{kind}");
    let mut b = Obj::new(body, &path)?;
    let scopes = scopes(&mut b, outer)?;
    let op = match kind {
        "header.Modifier" | "header.Append" => {
            let name = header_name(&mut b, "name")?;
            let raw = b.str("value")?;
            let value = env::resolve(raw, lookup)
                .map_err(|e| ConfigError::new(b.at("value"), e.to_string()))?;
            if value.contains(['\r', '\n', '\0']) {
                return Err(ConfigError::new(b.at("value"), "header value contains CR, LF or NUL"));
            }
            let value = HeaderValue(value);
            if kind == "header.Modifier" {
                HeaderOp::Set { name, value }
            } else {
                HeaderOp::Append { name, value }
            }
        }
        "header.Blacklist" => {
            let names = b
                .opt_strings("names")?
                .ok_or_else(|| ConfigError::new(b.at("names"), "is required"))?;
            let mut lower = Vec::with_capacity(names.len());
            for (i, n) in names.iter().enumerate() {
                lower.push(check_header_name(n, &format!("{}[{i}]", b.at("names")))?);
            }
            HeaderOp::Remove { names: lower }
        }
        "header.Copy" => HeaderOp::Copy {
            from: header_name(&mut b, "from")?,
            to: header_name(&mut b, "to")?,
        },
        "fifo.Group" | "priority.Group" => return group(b, kind, scopes, lookup, out),
        other => {
            return Err(ConfigError::new(
                path.clone(),
                format!("martian modifier {other} is not supported by tollgate (supported: header.Modifier, header.Append, header.Blacklist, header.Copy, fifo.Group, priority.Group)"),
            ))
        }
    };
    b.finish(&[])?;
    if scopes.request {
        out.request.push(op.clone());
    }
    if scopes.response {
        out.response.push(op);
    }
    Ok(())
}

/// A `fifo.Group` (its modifiers in order) or `priority.Group` (higher priority first, equal
/// priorities in order), within the group's scopes.
fn group(
    mut b: Obj<'_>,
    kind: &str,
    scopes: Scopes,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Modifiers,
) -> Result<()> {
    let items = b
        .opt_array("modifiers")?
        .ok_or_else(|| ConfigError::new(b.at("modifiers"), "is required"))?;
    let base = b.at("modifiers");
    if kind == "fifo.Group" {
        b.opt_bool("aggregateErrors")?;
        b.finish(&[])?;
        for (i, item) in items.iter().enumerate() {
            modifier(item, &format!("{base}[{i}]"), scopes, lookup, out)?;
        }
        return Ok(());
    }
    b.finish(&[])?;
    let mut ranked = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{base}[{i}]");
        let mut entry = Obj::new(item, &ipath)?;
        let priority = entry.opt_u64("priority")?.unwrap_or(0);
        let m = entry.required("modifier")?;
        let mpath = entry.at("modifier");
        entry.finish(&[])?;
        ranked.push((priority, m, mpath));
    }
    // Higher priority runs first; equal priorities keep their order.
    ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (_, m, mpath) in ranked {
        modifier(m, &mpath, scopes, lookup, out)?;
    }
    Ok(())
}

/// Reads `scope` (required on every martian modifier) and intersects it with the group's.
fn scopes(b: &mut Obj<'_>, outer: Scopes) -> Result<Scopes> {
    let list = b.opt_strings("scope")?.ok_or_else(|| {
        ConfigError::new(
            b.at("scope"),
            "is required: [\"request\"], [\"response\"] or both",
        )
    })?;
    let mut s = Scopes {
        request: false,
        response: false,
    };
    for (i, item) in list.iter().enumerate() {
        match *item {
            "request" => s.request = true,
            "response" => s.response = true,
            other => {
                return Err(ConfigError::new(
                    format!("{}[{i}]", b.at("scope")),
                    format!("unknown scope \"{other}\" (expected request or response)"),
                ))
            }
        }
    }
    Ok(Scopes {
        request: s.request && outer.request,
        response: s.response && outer.response,
    })
}

fn header_name(b: &mut Obj<'_>, key: &str) -> Result<String> {
    let name = b.str(key)?;
    check_header_name(name, &b.at(key))
}

/// A header name must be an HTTP token and not a pseudo-header; returned lowercased.
fn check_header_name(name: &str, path: &str) -> Result<String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(ConfigError::new(
            path,
            format!("\"{name}\" is not a valid header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "sk-secret".to_string())
    }

    fn set(name: &str, v: &str) -> HeaderOp {
        HeaderOp::Set {
            name: name.into(),
            value: HeaderValue(v.into()),
        }
    }

    #[test]
    fn single_modifier_with_env_secret() {
        let v = json!({"header.Modifier": {"scope": ["request"], "name": "Authorization", "value": "Bearer {{ env \"KEY\" }}"}});
        let m = compile(&v, "$.m", &env).unwrap();
        assert_eq!(m.request, vec![set("authorization", "Bearer sk-secret")]);
        assert!(m.response.is_empty());
        assert!(!format!("{m:?}").contains("sk-secret"));
    }

    #[test]
    fn groups_scopes_and_priorities() {
        let v = json!({"fifo.Group": {"scope": ["request", "response"], "aggregateErrors": true, "modifiers": [
            {"header.Modifier": {"scope": ["request"], "name": "A", "value": "1"}},
            {"header.Append": {"scope": ["request", "response"], "name": "B", "value": "2"}},
            {"header.Blacklist": {"scope": ["response"], "names": ["Server", "X-Secret"]}},
            {"priority.Group": {"scope": ["request"], "modifiers": [
                {"priority": 1, "modifier": {"header.Modifier": {"scope": ["request"], "name": "low", "value": "l"}}},
                {"priority": 9, "modifier": {"header.Copy": {"scope": ["request"], "from": "A", "to": "C"}}}
            ]}}
        ]}});
        let m = compile(&v, "$", &env).unwrap();
        let append = HeaderOp::Append {
            name: "b".into(),
            value: HeaderValue("2".into()),
        };
        assert_eq!(
            m.request,
            vec![
                set("a", "1"),
                append.clone(),
                HeaderOp::Copy {
                    from: "a".into(),
                    to: "c".into()
                },
                set("low", "l"),
            ]
        );
        assert_eq!(
            m.response,
            vec![
                append,
                HeaderOp::Remove {
                    names: vec!["server".into(), "x-secret".into()]
                }
            ]
        );
    }

    #[test]
    fn group_scope_limits_inner_scopes() {
        let v = json!({"fifo.Group": {"scope": ["request"], "modifiers": [
            {"header.Modifier": {"scope": ["request", "response"], "name": "A", "value": "1"}}]}});
        let m = compile(&v, "$", &env).unwrap();
        assert_eq!(m.request.len(), 1);
        assert!(m.response.is_empty());
    }

    #[test]
    fn reject_paths() {
        let cases = [
            (json!({}), "$.m: expected one martian modifier"),
            (json!({"header.Modifier": {"scope": ["request"], "name": "A", "value": "1"}, "header.Append": {}}),
             "$.m.header.Modifier: one modifier per object; wrap several in fifo.Group"),
            (json!({"header.Modifier": {"name": "A", "value": "1"}}),
             "$.m.header.Modifier.scope: is required: [\"request\"], [\"response\"] or both"),
            (json!({"header.Modifier": {"scope": ["both"], "name": "A", "value": "1"}}),
             "$.m.header.Modifier.scope[0]: unknown scope \"both\" (expected request or response)"),
            (json!({"header.Modifier": {"scope": ["request"], "name": "A B", "value": "1"}}),
             "$.m.header.Modifier.name: \"A B\" is not a valid header name"),
            (json!({"header.Modifier": {"scope": ["request"], "name": ":path", "value": "1"}}),
             "$.m.header.Modifier.name: \":path\" is not a valid header name"),
            (json!({"header.Modifier": {"scope": ["request"], "name": "A", "value": "{{ env \"MISSING\" }}"}}),
             "$.m.header.Modifier.value: environment variable MISSING is not set (Envoy passes it to the filter only when it is listed in vm_config.environment_variables.host_env_keys)"),
            (json!({"header.Modifier": {"scope": ["request"], "name": "A", "value": "x\r\ny: z"}}),
             "$.m.header.Modifier.value: header value contains CR, LF or NUL"),
            (json!({"header.Modifier": {"scope": ["request"], "name": "A", "value": "1", "typo": 1}}),
             "$.m.header.Modifier.typo: unknown field"),
            (json!({"header.Blacklist": {"scope": ["request"]}}), "$.m.header.Blacklist.names: is required"),
            (json!({"fifo.Group": {"scope": ["request"]}}), "$.m.fifo.Group.modifiers: is required"),
            (json!({"fifo.Group": {"scope": ["request"], "modifiers": [{"url.Modifier": {"scope": ["request"]}}]}}),
             "$.m.fifo.Group.modifiers[0].url.Modifier: martian modifier url.Modifier is not supported by tollgate (supported: header.Modifier, header.Append, header.Blacklist, header.Copy, fifo.Group, priority.Group)"),
        ];
        for (v, msg) in cases {
            assert_eq!(compile(&v, "$.m", &env).unwrap_err().to_string(), msg);
        }
    }
}
