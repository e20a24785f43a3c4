//! KrakenD `modifier/martian` header modifiers, compiled into [`HeaderOp`] lists per scope.
//!
//! Supported: `header.Modifier` (set, replacing), `header.Append`, `header.Blacklist`
//! (remove), `header.Copy`, `header.Id` (a unique id when the header is absent: Envoy's
//! request id), `querystring.Modifier` (sets a query parameter of the backend's request),
//! `body.Modifier` (a fixed body, base64 in the configuration, for the backend's request or
//! the client's answer), and the groups `fifo.Group` and `priority.Group`. Other martian
//! modifiers are valid KrakenD but not implemented here: they are rejected at configure time
//! rather than silently ignored.

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
    Set {
        name: String,
        value: HeaderValue,
    },
    Append {
        name: String,
        value: HeaderValue,
    },
    Remove {
        names: Vec<String>,
    },
    Copy {
        from: String,
        to: String,
    },
    /// `header.Id`: the request's unique id (Envoy's `x-request-id`) in `name`, unless the
    /// header is there already.
    Id {
        name: String,
    },
    /// `querystring.Modifier`: parameter `name` of the request's `:path` set to `value` (every
    /// earlier value of that name, however percent-encoded, replaced).
    Query {
        name: String,
        value: String,
    },
}

/// The header martian's `header.Id` writes without a `header` of its own.
pub const DEFAULT_ID_HEADER: &str = "x-krakend-id";

/// A `body.Modifier`'s body (decoded) and content type.
#[derive(Clone, PartialEq, Eq)]
pub struct FixedBody {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

impl fmt::Debug for FixedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FixedBody({} bytes, {:?})",
            self.bytes.len(),
            self.content_type
        )
    }
}

/// Operations per scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modifiers {
    pub request: Vec<HeaderOp>,
    pub response: Vec<HeaderOp>,
    /// `body.Modifier`, request scope: the body the backend gets instead of the client's.
    pub request_body: Option<FixedBody>,
    /// `body.Modifier`, response scope: the body the client gets instead of the backend's.
    pub response_body: Option<FixedBody>,
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
        "body.Modifier" => return fixed_body(b, scopes, out),
        "fifo.Group" | "priority.Group" => return group(b, kind, scopes, lookup, out),
        _ => header_op(kind, &mut b, scopes, lookup)?,
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

/// A header (or query) operation of kind `kind` read from `b`.
fn header_op(
    kind: &str,
    b: &mut Obj<'_>,
    scopes: Scopes,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<HeaderOp> {
    Ok(match kind {
        "header.Modifier" | "header.Append" => {
            let name = header_name(b, "name")?;
            let raw = b.str("value")?;
            let value = env::resolve(raw, lookup)
                .map_err(|e| ConfigError::new(b.at("value"), e.to_string()))?;
            if value.contains(['\r', '\n', '\0']) {
                return Err(ConfigError::new(
                    b.at("value"),
                    "header value contains CR, LF or NUL",
                ));
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
            from: header_name(b, "from")?,
            to: header_name(b, "to")?,
        },
        "header.Id" => {
            request_only(b, scopes)?;
            let name = match b.opt_str("header")? {
                Some(n) => check_header_name(n, &b.at("header"))?,
                None => DEFAULT_ID_HEADER.to_string(),
            };
            HeaderOp::Id { name }
        }
        "querystring.Modifier" => {
            request_only(b, scopes)?;
            let name = b.str("name")?;
            if name.is_empty() {
                return Err(ConfigError::new(b.at("name"), "must not be empty"));
            }
            let value = b.str("value")?;
            HeaderOp::Query {
                name: name.to_string(),
                value: value.to_string(),
            }
        }
        other => {
            return Err(ConfigError::new(
                b.path(),
                format!(
                "martian modifier {other} is not supported by tollgate (supported: {SUPPORTED})"
            ),
            ))
        }
    })
}

const SUPPORTED: &str = "header.Modifier, header.Append, header.Blacklist, header.Copy, header.Id, querystring.Modifier, body.Modifier, fifo.Group, priority.Group";

/// Modifiers of the request only (martian's schema: `scope: ["request"]`).
fn request_only(b: &Obj<'_>, scopes: Scopes) -> Result<()> {
    if scopes.response {
        return Err(ConfigError::new(
            b.at("scope"),
            "applies to the request only: [\"request\"]",
        ));
    }
    Ok(())
}

/// `body.Modifier`: `body` (base64) and `contentType`, for each scope it names; one per scope.
fn fixed_body(mut b: Obj<'_>, scopes: Scopes, out: &mut Modifiers) -> Result<()> {
    let raw = b.str("body")?;
    let bytes = crate::support::encoding::base64_decode(raw)
        .ok_or_else(|| ConfigError::new(b.at("body"), "is not base64"))?;
    let content_type = match b.opt_str("contentType")? {
        Some(t) if t.contains(['\r', '\n', '\0']) => {
            return Err(ConfigError::new(
                b.at("contentType"),
                "contains CR, LF or NUL",
            ))
        }
        t => t.map(String::from),
    };
    let path = b.path().to_string();
    b.finish(&[])?;
    let fixed = FixedBody {
        bytes,
        content_type,
    };
    for (on, slot) in [
        (scopes.request, &mut out.request_body),
        (scopes.response, &mut out.response_body),
    ] {
        if on {
            if slot.is_some() {
                return Err(ConfigError::new(path, "one body.Modifier per scope"));
            }
            *slot = Some(fixed.clone());
        }
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

/// `path` with query parameter `name` set to `value`: every earlier value of the name (as
/// decoded, so `%61mount` is `amount`) is removed, the new one appended, encoded.
pub fn set_query(path: &str, name: &str, value: &str) -> String {
    use crate::support::encoding::{form_decode, uri_encode};
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let kept = query.split('&').filter(|pair| {
        let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
        !pair.is_empty() && form_decode(key) != name
    });
    let mut out = String::from(base);
    for (i, pair) in kept.enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(pair);
    }
    out.push(if out.len() == base.len() { '?' } else { '&' });
    out.push_str(&uri_encode(name, false));
    out.push('=');
    out.push_str(&uri_encode(value, false));
    out
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

    /// KrakenD's martian page: `body.Modifier` (base64 body, both scopes), `querystring.Modifier`
    /// inside a `priority.Group`, `header.Id` with and without its header.
    #[test]
    fn body_querystring_and_id_modifiers() {
        let v = json!({"body.Modifier": {"scope": ["request", "response"], "body": "eyJtc2ciOiJ5b3Ugcm9jayEifQ==", "contentType": "application/json"}});
        let m = compile(&v, "$", &env).unwrap();
        let fixed = FixedBody {
            bytes: br#"{"msg":"you rock!"}"#.to_vec(),
            content_type: Some("application/json".into()),
        };
        assert_eq!(
            (m.request_body.as_ref(), m.response_body.as_ref()),
            (Some(&fixed), Some(&fixed))
        );
        assert!(m.request.is_empty() && m.response.is_empty());
        let v = json!({"priority.Group": {"scope": ["request", "response"], "modifiers": [
            {"priority": 0, "modifier": {"querystring.Modifier": {"scope": ["request"], "name": "first", "value": "0"}}},
            {"priority": 100, "modifier": {"querystring.Modifier": {"scope": ["request"], "name": "last", "value": "100"}}}]}});
        let m = compile(&v, "$", &env).unwrap();
        let q = |n: &str, v: &str| HeaderOp::Query {
            name: n.into(),
            value: v.into(),
        };
        assert_eq!(m.request, vec![q("last", "100"), q("first", "0")]);
        let m = compile(
            &json!({"header.Id": {"scope": ["request"], "header": "X-Request-Id"}}),
            "$",
            &env,
        )
        .unwrap();
        assert_eq!(
            m.request,
            vec![HeaderOp::Id {
                name: "x-request-id".into()
            }]
        );
        let m = compile(&json!({"header.Id": {"scope": ["request"]}}), "$", &env).unwrap();
        assert_eq!(
            m.request,
            vec![HeaderOp::Id {
                name: "x-krakend-id".into()
            }]
        );
    }

    #[test]
    fn query_parameters_are_set_whatever_their_spelling() {
        let cases = [
            ("/a", "amount", "75", "/a?amount=75"),
            ("/a?", "amount", "75", "/a?amount=75"),
            (
                "/a?currency=EUR&amount=10",
                "amount",
                "75",
                "/a?currency=EUR&amount=75",
            ),
            // A client's other spellings of the name are the same parameter: all replaced.
            (
                "/a?%61mount=1000&amount=5&amount%3D=x&x=1",
                "amount",
                "75",
                "/a?amount%3D=x&x=1&amount=75",
            ),
            ("/a?b=1&&c=2", "n", "a b&c=d", "/a?b=1&c=2&n=a%20b%26c%3Dd"),
            ("/a?amount", "amount", "1", "/a?amount=1"),
        ];
        for (path, name, value, want) in cases {
            assert_eq!(set_query(path, name, value), want, "{path}");
        }
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
             "$.m.fifo.Group.modifiers[0].url.Modifier: martian modifier url.Modifier is not supported by tollgate (supported: header.Modifier, header.Append, header.Blacklist, header.Copy, header.Id, querystring.Modifier, body.Modifier, fifo.Group, priority.Group)"),
            (json!({"header.Id": {"scope": ["request", "response"]}}), "$.m.header.Id.scope: applies to the request only: [\"request\"]"),
            (json!({"querystring.Modifier": {"scope": ["request"], "name": "", "value": "1"}}), "$.m.querystring.Modifier.name: must not be empty"),
            (json!({"querystring.Modifier": {"scope": ["response"], "name": "a", "value": "1"}}), "$.m.querystring.Modifier.scope: applies to the request only: [\"request\"]"),
            (json!({"body.Modifier": {"scope": ["request"], "body": "not base64!"}}), "$.m.body.Modifier.body: is not base64"),
            (json!({"body.Modifier": {"scope": ["request"]}}), "$.m.body.Modifier.body: is required"),
            (json!({"fifo.Group": {"scope": ["request"], "modifiers": [{"body.Modifier": {"scope": ["request"], "body": "eyJ9"}}, {"body.Modifier": {"scope": ["request"], "body": "eyJ9"}}]}}),
             "$.m.fifo.Group.modifiers[1].body.Modifier: one body.Modifier per scope"),
        ];
        for (v, msg) in cases {
            assert_eq!(compile(&v, "$.m", &env).unwrap_err().to_string(), msg);
        }
    }
}
