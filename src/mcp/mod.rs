//! The Model Context Protocol, as plain data: JSON-RPC messages and errors ([`jsonrpc`]),
//! the MCP namespaces ([`config`]), sessions bound to their caller ([`session`]), what
//! an MCP server answers and how a tool call becomes its backend's request and back
//! ([`server`]), and here who may see and call which tool ([`Policy::access`]) and how a
//! federating endpoint names its upstreams' tools ([`split`], [`namespaced`]).
//!
//! The pipeline's side (reading the body, callouts, the answer) is `filter/mcp.rs`.

pub mod config;
pub mod jsonrpc;
pub mod server;
pub mod session;

pub use config::{Kind, McpEndpoint, Policy, Rule};
use serde_json::{json, Value};

/// Who is asking: roles (API key, JWT) and the verified JWT claims.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub roles: &'a [String],
    pub claims: Option<&'a Value>,
}

/// Whether a caller may see and call a tool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Access {
    /// Invisible and uncallable, as if it did not exist.
    Denied,
    /// Allowed; the index of the rule that allowed it (its rate limit applies), if any.
    Allowed(Option<usize>),
}

impl Rule {
    /// Whether the rule admits the caller: one of its roles, and every claim it names.
    pub fn admits(&self, c: &Caller<'_>) -> bool {
        let roles = self.roles.is_empty() || self.roles.iter().any(|r| c.roles.contains(r));
        roles
            && self.claims.iter().all(|(name, want)| {
                let have = c
                    .claims
                    .and_then(|p| crate::security::claims::header_value(p, name));
                have.is_some_and(|h| h.split([',', ' ']).any(|v| want.iter().any(|w| w == v)))
            })
    }
}

impl Policy {
    /// The first rule naming the tool that admits the caller; a tool no rule names is
    /// allowed only with `allow_unlisted`.
    pub fn access(&self, tool: &str, c: &Caller<'_>) -> Access {
        let mut named = false;
        for (i, r) in self.rules.iter().enumerate().filter(|(_, r)| r.names(tool)) {
            named = true;
            if r.admits(c) {
                return Access::Allowed(Some(i));
            }
        }
        if !named && self.allow_unlisted {
            Access::Allowed(None)
        } else {
            Access::Denied
        }
    }
}

/// A federated tool name split into its upstream (index into `upstreams`) and the
/// upstream's own tool name.
pub fn split<'a>(name: &'a str, separator: &str, upstreams: &[&str]) -> Option<(usize, &'a str)> {
    let (prefix, tool) = name.split_once(separator)?;
    let i = upstreams.iter().position(|u| *u == prefix)?;
    (!tool.is_empty()).then_some((i, tool))
}

/// An upstream's `tools/list` result as the federating endpoint lists it: each tool
/// renamed `<upstream><separator><tool>`, with a title saying where it comes from.
pub fn namespaced(upstream: &str, separator: &str, result: &Value) -> Vec<Value> {
    let Some(tools) = result.get("tools").and_then(Value::as_array) else {
        return Vec::new();
    };
    tools
        .iter()
        .filter_map(|t| {
            let mut t = t.as_object()?.clone();
            let name = t.get("name")?.as_str()?.to_string();
            t.insert("name".into(), json!(format!("{upstream}{separator}{name}")));
            Some(Value::Object(t))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn rule(tools: &[&str], roles: &[&str], claims: &[(&str, &[&str])]) -> Rule {
        Rule {
            tools: tools.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            claims: claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            rate_limit: None,
        }
    }

    #[test]
    fn a_tool_is_allowed_by_a_rule_that_names_it_and_admits_the_caller() {
        let p = Policy {
            rules: vec![
                rule(&["weather__*"], &["analyst"], &[]),
                rule(&["files__read"], &[], &[("tier", &["gold", "platinum"])]),
            ],
            allow_unlisted: false,
        };
        let analyst = vec!["analyst".to_string()];
        let guest = vec!["guest".to_string()];
        let gold = json!({"sub": "u1", "tier": "gold"});
        let silver = json!({"sub": "u2", "tier": "silver"});
        let c = |roles: &'static [String], claims| Caller { roles, claims };
        let analyst: &'static [String] = Box::leak(analyst.into_boxed_slice());
        let guest: &'static [String] = Box::leak(guest.into_boxed_slice());
        assert!(matches!(
            p.access("weather__forecast", &c(analyst, None)),
            Access::Allowed(Some(_))
        ));
        assert_eq!(
            p.access("weather__forecast", &c(guest, None)),
            Access::Denied
        );
        assert!(matches!(
            p.access("files__read", &c(guest, Some(&gold))),
            Access::Allowed(_)
        ));
        assert_eq!(
            p.access("files__read", &c(guest, Some(&silver))),
            Access::Denied
        );
        assert_eq!(
            p.access("files__read", &c(guest, None)),
            Access::Denied,
            "no token, no claim"
        );
        assert_eq!(
            p.access("files__write", &c(analyst, Some(&gold))),
            Access::Denied,
            "unlisted"
        );
        let open = Policy {
            allow_unlisted: true,
            ..p
        };
        assert_eq!(
            open.access("files__write", &c(guest, None)),
            Access::Allowed(None)
        );
        assert_eq!(
            open.access("weather__x", &c(guest, None)),
            Access::Denied,
            "named and refused"
        );
    }

    #[test]
    fn federated_names_split_on_the_first_separator_of_a_known_upstream() {
        let ups = ["weather", "files"];
        assert_eq!(
            split("weather__forecast", "__", &ups),
            Some((0, "forecast"))
        );
        assert_eq!(split("files__a__b", "__", &ups), Some((1, "a__b")));
        assert_eq!(split("other__x", "__", &ups), None);
        assert_eq!(split("weather__", "__", &ups), None);
        assert_eq!(split("weatherforecast", "__", &ups), None);
        let listed = namespaced(
            "weather",
            "__",
            &json!({"tools": [{"name": "forecast", "inputSchema": {}}, {"bad": 1}, 3]}),
        );
        assert_eq!(
            listed,
            vec![json!({"name": "weather__forecast", "inputSchema": {}})]
        );
    }
}
