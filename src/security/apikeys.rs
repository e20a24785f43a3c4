//! Client API keys, compatible with KrakenD `auth/api-keys`: the service level declares
//! the keys (`keys[{key, roles}]`, `hash`, `salt`, `identifier`, `strategy`,
//! `propagate_role`); an endpoint with `auth/api-keys` `{roles, identifier?, strategy?}`
//! requires a known key (401) holding one of its roles (403).
//!
//! Hashes: `plain` compares the key as sent; `sha256` compares the lowercase hex of
//! SHA-256(salt + key) with the stored value (KrakenD documents that the salt is
//! concatenated before the key; the text encoding of the digest is not documented, hex is
//! what `echo -n "$SALT$KEY" | sha256sum` prints). `fnv128` and `sha1` are refused at
//! configure time.

use crate::config::env::Secret;
use crate::refusal::{ErrorKind, Refusal};
use crate::support::encoding::{form_decode, hex_lower};
use crate::support::sha256::sha256;
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hash {
    #[default]
    Plain,
    Sha256,
}

/// Where the client puts its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Header,
    QueryString,
}

/// One declared key: the stored value (plain or hashed) and its roles.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub stored: Secret<String>,
    pub roles: Vec<String>,
}

/// Service-level `auth/api-keys`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeys {
    pub keys: Vec<Key>,
    pub hash: Hash,
    pub salt: Secret<String>,
    /// Header or query parameter name (`Authorization` / `key` by default).
    pub identifier: Option<String>,
    pub strategy: Strategy,
    /// Header that tells the backend the matched role (not sent when unset).
    pub propagate_role: Option<String>,
}

/// Endpoint-level `auth/api-keys`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRule {
    pub store: Rc<ApiKeys>,
    /// Roles allowed here; empty: any known key.
    pub roles: Vec<String>,
    pub identifier: String,
    pub strategy: Strategy,
    /// Anthropic Messages endpoints also accept the key in `x-api-key` (Anthropic SDKs).
    pub accept_x_api_key: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No key (401).
    Missing,
    /// A key that is not declared (401).
    Unknown,
    /// A known key without an allowed role (403).
    Forbidden,
}

impl AuthError {
    /// The answer: 401 asking for a bearer credential (none, or an unknown one), or 403.
    pub fn refusal(self) -> Refusal {
        match self {
            AuthError::Missing | AuthError::Unknown => {
                Refusal::new(ErrorKind::Unauthorized, self.message())
                    .header("www-authenticate", "Bearer")
            }
            AuthError::Forbidden => Refusal::new(ErrorKind::Forbidden, self.message()),
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "an API key is required",
            AuthError::Unknown => "invalid API key",
            AuthError::Forbidden => "this API key may not use this endpoint",
        }
    }
}

/// An accepted caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// All roles of the key.
    pub roles: Vec<String>,
    /// (header, first matching role or `ANY`) when `propagate_role` is set.
    pub role_header: Option<(String, String)>,
    /// With the query-string strategy: the query without the key (None: empty).
    pub query: Option<String>,
}

/// Default identifier of a strategy.
pub fn default_identifier(s: Strategy) -> &'static str {
    match s {
        Strategy::Header => "Authorization",
        Strategy::QueryString => "key",
    }
}

impl KeyRule {
    /// Authenticates a request from its headers (`header(lowercase name)`) and query.
    pub fn authenticate(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        query: Option<&str>,
    ) -> Result<Grant, AuthError> {
        let mut rest_query = query.map(str::to_string);
        let presented = match self.strategy {
            Strategy::Header => header(&self.identifier.to_ascii_lowercase()).map(|v| {
                let v = v.trim();
                match v.get(..7) {
                    Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim().to_string(),
                    _ => v.to_string(),
                }
            }),
            Strategy::QueryString => {
                let (value, rest) = take_query_param(query.unwrap_or_default(), &self.identifier);
                rest_query = (!rest.is_empty()).then_some(rest);
                value
            }
        };
        let presented = presented
            .filter(|k| !k.is_empty())
            .or_else(|| {
                self.accept_x_api_key
                    .then(|| header("x-api-key"))
                    .flatten()
                    .map(|k| k.trim().to_string())
            })
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Missing)?;
        let key = self.store.find(&presented).ok_or(AuthError::Unknown)?;
        let role = if self.roles.is_empty() {
            Some("ANY".to_string())
        } else {
            key.roles.iter().find(|r| self.roles.contains(r)).cloned()
        };
        let role = role.ok_or(AuthError::Forbidden)?;
        Ok(Grant {
            roles: key.roles.clone(),
            role_header: self.store.propagate_role.clone().map(|h| (h, role)),
            query: rest_query,
        })
    }
}

impl ApiKeys {
    /// The declared key matching a presented one (every key is compared, in constant
    /// time per key).
    fn find(&self, presented: &str) -> Option<&Key> {
        let candidate = match self.hash {
            Hash::Plain => presented.to_string(),
            Hash::Sha256 => hex_lower(&sha256(format!("{}{presented}", self.salt.0).as_bytes())),
        };
        let mut hit = None;
        for k in &self.keys {
            let stored = match self.hash {
                Hash::Plain => k.stored.0.clone(),
                Hash::Sha256 => k.stored.0.to_ascii_lowercase(),
            };
            if ct_eq(stored.as_bytes(), candidate.as_bytes()) && hit.is_none() {
                hit = Some(k);
            }
        }
        hit
    }
}

/// Constant-time equality (for equal lengths).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Removes parameter `name` from a query string; returns its (percent-decoded) value and
/// the remaining query.
pub fn take_query_param(query: &str, name: &str) -> (Option<String>, String) {
    let mut value = None;
    let mut rest: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(k) == name {
            if value.is_none() {
                value = Some(form_decode(v));
            }
        } else {
            rest.push(pair);
        }
    }
    (value, rest.join("&"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn store(hash: Hash, salt: &str, keys: &[(&str, &[&str])]) -> Rc<ApiKeys> {
        Rc::new(ApiKeys {
            keys: keys
                .iter()
                .map(|(k, r)| Key {
                    stored: Secret(k.to_string()),
                    roles: r.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            hash,
            salt: Secret(salt.into()),
            identifier: None,
            strategy: Strategy::Header,
            propagate_role: Some("X-Role".into()),
        })
    }

    fn rule(store: Rc<ApiKeys>, roles: &[&str], strategy: Strategy, id: &str) -> KeyRule {
        KeyRule {
            store,
            roles: roles.iter().map(|s| s.to_string()).collect(),
            identifier: id.into(),
            strategy,
            accept_x_api_key: false,
        }
    }

    fn headers<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n: &str| {
            list.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn header_strategy_roles_and_bearer() {
        let s = store(Hash::Plain, "", &[("k1", &["a", "b"]), ("k2", &["c"])]);
        let r = rule(s, &["b", "c"], Strategy::Header, "Authorization");
        let g = r
            .authenticate(&headers(&[("authorization", "Bearer k1")]), None)
            .unwrap();
        assert_eq!(g.roles, ["a", "b"]);
        assert_eq!(g.role_header, Some(("X-Role".into(), "b".into())));
        assert!(r
            .authenticate(&headers(&[("authorization", "k2")]), None)
            .is_ok());
        assert_eq!(r.authenticate(&headers(&[]), None), Err(AuthError::Missing));
        assert_eq!(
            r.authenticate(&headers(&[("authorization", "Bearer nope")]), None),
            Err(AuthError::Unknown)
        );
        // x-api-key only where accepted (Anthropic endpoints).
        assert_eq!(
            r.authenticate(&headers(&[("x-api-key", "k1")]), None),
            Err(AuthError::Missing)
        );
        let anthropic = KeyRule {
            accept_x_api_key: true,
            ..r.clone()
        };
        assert!(anthropic
            .authenticate(&headers(&[("x-api-key", "k1")]), None)
            .is_ok());
        let only_a = rule(r.store.clone(), &["a"], Strategy::Header, "X-Key");
        assert_eq!(
            only_a.authenticate(&headers(&[("x-key", "k2")]), None),
            Err(AuthError::Forbidden)
        );
        let any = rule(r.store.clone(), &[], Strategy::Header, "X-Key");
        let g = any
            .authenticate(&headers(&[("x-key", "k2")]), None)
            .unwrap();
        assert_eq!(g.role_header, Some(("X-Role".into(), "ANY".into())));
    }

    #[test]
    fn sha256_with_salt() {
        // printf 'pepperk1' | sha256sum
        let stored = hex_lower(&sha256(b"pepperk1"));
        let s = store(Hash::Sha256, "pepper", &[(&stored.to_uppercase(), &["a"])]);
        let r = rule(s, &["a"], Strategy::Header, "Authorization");
        assert!(r
            .authenticate(&headers(&[("authorization", "Bearer k1")]), None)
            .is_ok());
        // The stored hash itself is not a valid key.
        assert_eq!(
            r.authenticate(&headers(&[("authorization", &stored)]), None),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn query_string_strategy_strips_the_key() {
        let s = store(Hash::Plain, "", &[("k 1", &["a"])]);
        let r = rule(s, &["a"], Strategy::QueryString, "key");
        let g = r
            .authenticate(&headers(&[]), Some("x=1&key=k%201&y=2"))
            .unwrap();
        assert_eq!(g.query.as_deref(), Some("x=1&y=2"));
        let g = r.authenticate(&headers(&[]), Some("key=k+1")).unwrap();
        assert_eq!(g.query, None);
        assert_eq!(
            r.authenticate(&headers(&[]), Some("x=1")),
            Err(AuthError::Missing)
        );
        assert_eq!(take_query_param("a=%zz&b", "a").0.as_deref(), Some("%zz"));
    }
}
