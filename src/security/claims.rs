//! JWT claims checks (KrakenD `auth/validator` `roles`, `roles_key`,
//! `roles_key_is_nested`, `scopes`, `scopes_key`, `scopes_matcher`, `issuer`, `audience`,
//! `propagate_claims`). tollgate does not verify tokens: Envoy's `jwt_authn` filter, placed
//! before tollgate, verifies each endpoint's token with that endpoint's own provider
//! ([`provider_name`]) and stores the verified payload in the request's dynamic metadata
//! under the same name ([`super::metadata`]), which no client can write. This module checks
//! that payload against the endpoint tollgate matched: no payload 401; another issuer or
//! audience 401; roles or scopes not satisfied 403.

use crate::refusal::{ErrorKind, Refusal};
use serde_json::Value;

/// The `jwt_authn` provider (and its `payload_in_metadata` key) of endpoint `index`. The
/// bootstrap generator and the filter both name it here, so the filter reads exactly the
/// payload verified for the endpoint it matched.
pub fn provider_name(index: usize) -> String {
    format!("tollgate_endpoint_{index}")
}

/// Endpoint-level `auth/validator`: what tollgate enforces, and what `tollgate envoy`
/// needs to generate the verifying `jwt_authn` provider.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClaimsRule {
    /// At least one of these roles is required (empty: no role check).
    pub roles: Vec<String>,
    /// Claim holding the roles (`roles` by default).
    pub roles_key: String,
    /// `roles_key` is a dot path (`realm_access.roles`).
    pub roles_key_is_nested: bool,
    pub scopes: Vec<String>,
    /// Claim holding the scopes, a dot path (`scope` by default).
    pub scopes_key: String,
    /// All listed scopes are required (`scopes_matcher: all`), else any one.
    pub scopes_all: bool,
    pub alg: Option<String>,
    /// The token's `iss` must be this (checked by `jwt_authn` and again here).
    pub issuer: Option<String>,
    /// The token's `aud` must name one of these (checked by `jwt_authn` and again here).
    pub audience: Vec<String>,
    /// Where `jwt_authn` finds the keys: one of the two is required.
    pub jwk_local_path: Option<String>,
    pub jwk_url: Option<String>,
    /// `propagate_claims`: (claim, header) pairs; tollgate writes the headers from the
    /// verified payload.
    pub propagate_claims: Vec<(String, String)>,
    /// Where a control plane's `jwt_authn` stores the verified payload (its
    /// `payload_in_metadata` key), written by `tollgate k8s` as [`PAYLOAD_KEY_FIELD`]; None:
    /// tollgate's own bootstrap, [`provider_name`].
    pub payload_key: Option<String>,
}

/// The `auth/validator` field `tollgate k8s` adds for the control plane's `payload_in_metadata`
/// key (Envoy Gateway: the SecurityPolicy provider's name; Istio: `payload`).
pub const PAYLOAD_KEY_FIELD: &str = "tollgate_payload_in_metadata";

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimsError {
    /// No payload verified for this endpoint (401).
    Missing,
    /// A verified token of another issuer or audience (401).
    WrongIssuer,
    /// Roles or scopes do not match (403).
    Forbidden(&'static str),
}

impl ClaimsError {
    /// The answer: 401 asking for a bearer token (none, or another issuer's), or 403.
    pub fn refusal(&self) -> Refusal {
        match self {
            ClaimsError::Missing | ClaimsError::WrongIssuer => {
                Refusal::new(ErrorKind::Unauthorized, self.message())
                    .header("www-authenticate", "Bearer")
            }
            ClaimsError::Forbidden(_) => Refusal::new(ErrorKind::Forbidden, self.message()),
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            ClaimsError::Missing => "a valid bearer token is required",
            ClaimsError::WrongIssuer => "the token was not issued for this endpoint",
            ClaimsError::Forbidden(m) => m,
        }
    }
}

impl ClaimsRule {
    /// The `jwt_authn` metadata key of endpoint `index`'s verified payload: always in the
    /// `envoy.filters.http.jwt_authn` namespace of the dynamic metadata, which only
    /// `jwt_authn` writes.
    pub fn payload_key(&self, index: usize) -> String {
        self.payload_key
            .clone()
            .unwrap_or_else(|| provider_name(index))
    }

    /// Checks the verified payload of this endpoint's provider; returns the caller's roles.
    pub fn check(&self, claims: Option<&Value>) -> Result<Vec<String>, ClaimsError> {
        let claims = claims
            .filter(|c| c.is_object())
            .ok_or(ClaimsError::Missing)?;
        if let Some(iss) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err(ClaimsError::WrongIssuer);
            }
        }
        if !self.audience.is_empty() {
            let aud = strings(claims.get("aud"));
            if !self.audience.iter().any(|a| aud.contains(a)) {
                return Err(ClaimsError::WrongIssuer);
            }
        }
        let role_claim = if self.roles_key_is_nested {
            nested(claims, &self.roles_key)
        } else {
            claims.get(&self.roles_key)
        };
        let roles = strings(role_claim);
        if !self.roles.is_empty() && !self.roles.iter().any(|r| roles.contains(r)) {
            return Err(ClaimsError::Forbidden(
                "the token has none of the roles this endpoint requires",
            ));
        }
        if !self.scopes.is_empty() {
            let have = strings(nested(claims, &self.scopes_key));
            let ok = if self.scopes_all {
                self.scopes.iter().all(|s| have.contains(s))
            } else {
                self.scopes.iter().any(|s| have.contains(s))
            };
            if !ok {
                return Err(ClaimsError::Forbidden(
                    "the token lacks the scopes this endpoint requires",
                ));
            }
        }
        Ok(roles)
    }
}

/// The header value for a `propagate_claims` claim (a name, else a dot path): strings as
/// they are, arrays joined with `,`, other values as JSON. None when the claim is absent,
/// null, or would not be a valid header value.
pub fn header_value(claims: &Value, claim: &str) -> Option<String> {
    let v = claims.get(claim).or_else(|| nested(claims, claim))?;
    let text = match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    (!text.chars().any(|c| c.is_control())).then_some(text)
}

/// Follows a dot path through objects.
fn nested<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// A claim as a list of strings: an array of strings, or a space-separated string.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_and_scopes() {
        let rule = ClaimsRule {
            roles: vec!["admin".into(), "dev".into()],
            roles_key: "realm_access.roles".into(),
            roles_key_is_nested: true,
            scopes: vec!["llm:chat".into(), "llm:stream".into()],
            scopes_key: "scope".into(),
            scopes_all: true,
            ..Default::default()
        };
        let ok = json!({"realm_access": {"roles": ["dev"]}, "scope": "llm:chat llm:stream x"});
        assert_eq!(rule.check(Some(&ok)).unwrap(), ["dev"]);
        let one_scope = json!({"realm_access": {"roles": ["dev"]}, "scope": ["llm:chat"]});
        assert!(matches!(
            rule.check(Some(&one_scope)),
            Err(ClaimsError::Forbidden(_))
        ));
        let any = ClaimsRule {
            scopes_all: false,
            ..rule.clone()
        };
        assert!(any.check(Some(&one_scope)).is_ok());
        let no_role = json!({"realm_access": {"roles": ["guest"]}, "scope": "llm:chat llm:stream"});
        assert!(matches!(
            rule.check(Some(&no_role)),
            Err(ClaimsError::Forbidden(_))
        ));
        assert_eq!(rule.check(None), Err(ClaimsError::Missing));
        assert_eq!(rule.check(Some(&json!("x"))), Err(ClaimsError::Missing));
        // Not nested: the dotted name is a literal claim.
        let flat = ClaimsRule {
            roles: vec!["a".into()],
            roles_key: "x.y".into(),
            ..Default::default()
        };
        assert!(flat.check(Some(&json!({"x.y": ["a"]}))).is_ok());
        assert!(flat.check(Some(&json!({"x": {"y": ["a"]}}))).is_err());
    }

    #[test]
    fn issuer_and_audience_of_the_matched_endpoint() {
        let rule = ClaimsRule {
            issuer: Some("https://b.example".into()),
            audience: vec!["api-b".into(), "api-c".into()],
            ..Default::default()
        };
        let b = json!({"iss": "https://b.example", "aud": ["x", "api-c"]});
        assert!(rule.check(Some(&b)).is_ok());
        assert!(rule
            .check(Some(&json!({"iss": "https://b.example", "aud": "api-b"})))
            .is_ok());
        for wrong in [
            json!({"iss": "https://a.example", "aud": "api-b"}),
            json!({"aud": "api-b"}),
            json!({"iss": "https://b.example", "aud": "api-a"}),
            json!({"iss": "https://b.example"}),
            json!({"iss": ["https://b.example"], "aud": "api-b"}),
        ] {
            assert_eq!(
                rule.check(Some(&wrong)),
                Err(ClaimsError::WrongIssuer),
                "{wrong}"
            );
        }
    }

    #[test]
    fn claim_header_values() {
        let c = json!({"sub": "u-1", "n": 42, "ok": true, "groups": ["a", "b", 3],
                       "realm": {"id": "r1"}, "bad": "a\r\nx-admin: 1", "none": null});
        assert_eq!(header_value(&c, "sub").as_deref(), Some("u-1"));
        assert_eq!(header_value(&c, "n").as_deref(), Some("42"));
        assert_eq!(header_value(&c, "ok").as_deref(), Some("true"));
        assert_eq!(header_value(&c, "groups").as_deref(), Some("a,b,3"));
        assert_eq!(header_value(&c, "realm.id").as_deref(), Some("r1"));
        assert_eq!(header_value(&c, "realm").as_deref(), Some(r#"{"id":"r1"}"#));
        for none in ["bad", "none", "missing", "realm.nope"] {
            assert_eq!(header_value(&c, none), None, "{none}");
        }
    }

    #[test]
    fn provider_names_are_per_endpoint() {
        assert_eq!(provider_name(0), "tollgate_endpoint_0");
        assert_ne!(provider_name(1), provider_name(11));
    }
}
