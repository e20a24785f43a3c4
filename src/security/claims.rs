//! JWT claims checks (KrakenD `auth/validator` `roles`, `roles_key`,
//! `roles_key_is_nested`, `scopes`, `scopes_key`, `scopes_matcher`). tollgate does not
//! verify tokens: Envoy's `jwt_authn` filter, placed before tollgate, verifies them and
//! forwards the verified payload (base64url JSON) in [`PAYLOAD_HEADER`]; this module reads
//! that payload. No payload: 401; roles or scopes not satisfied: 403.

use serde_json::Value;

/// The header Envoy's `jwt_authn` writes the verified payload to (`forward_payload_header`).
pub const PAYLOAD_HEADER: &str = "x-jwt-payload";

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
    // Verification settings, used by the Envoy bootstrap generator only.
    pub alg: Option<String>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub jwk_local_path: Option<String>,
    pub jwk_url: Option<String>,
    /// `propagate_claims`: (claim, header) pairs, done by `jwt_authn` `claim_to_headers`.
    pub propagate_claims: Vec<(String, String)>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimsError {
    /// No verified payload (401).
    Missing,
    /// The payload is not base64url JSON (401).
    Invalid,
    /// Roles or scopes do not match (403).
    Forbidden(&'static str),
}

impl ClaimsError {
    pub fn message(&self) -> &'static str {
        match self {
            ClaimsError::Missing => "a valid bearer token is required",
            ClaimsError::Invalid => "the token payload cannot be read",
            ClaimsError::Forbidden(m) => m,
        }
    }
}

impl ClaimsRule {
    /// Checks the payload header; returns the caller's roles.
    pub fn check(&self, payload: Option<&str>) -> Result<Vec<String>, ClaimsError> {
        let payload = payload
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .ok_or(ClaimsError::Missing)?;
        let bytes = base64url_decode(payload).ok_or(ClaimsError::Invalid)?;
        let claims: Value = serde_json::from_slice(&bytes).map_err(|_| ClaimsError::Invalid)?;
        let role_claim = if self.roles_key_is_nested {
            nested(&claims, &self.roles_key)
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
            let have = strings(nested(&claims, &self.scopes_key));
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

/// Decodes base64url (or standard base64), padding optional.
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// base64url without padding, as Envoy forwards it.
    fn b64(s: &str) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |a, &c| (a << 8) | u32::from(c)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn decodes_base64url() {
        for s in ["", "a", "ab", "abc", "abcd", "{\"sub\":\"ü?>\"}"] {
            assert_eq!(base64url_decode(&b64(s)).unwrap(), s.as_bytes());
        }
        assert_eq!(base64url_decode("YQ==").unwrap(), b"a");
        assert!(base64url_decode("a*b").is_none());
    }

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
        let ok = b64(r#"{"realm_access":{"roles":["dev"]},"scope":"llm:chat llm:stream x"}"#);
        assert_eq!(rule.check(Some(&ok)).unwrap(), ["dev"]);
        let one_scope = b64(r#"{"realm_access":{"roles":["dev"]},"scope":["llm:chat"]}"#);
        assert!(matches!(
            rule.check(Some(&one_scope)),
            Err(ClaimsError::Forbidden(_))
        ));
        let any = ClaimsRule {
            scopes_all: false,
            ..rule.clone()
        };
        assert!(any.check(Some(&one_scope)).is_ok());
        let no_role = b64(r#"{"realm_access":{"roles":["guest"]},"scope":"llm:chat llm:stream"}"#);
        assert!(matches!(
            rule.check(Some(&no_role)),
            Err(ClaimsError::Forbidden(_))
        ));
        assert_eq!(rule.check(None), Err(ClaimsError::Missing));
        assert_eq!(rule.check(Some("%%%")), Err(ClaimsError::Invalid));
        // Not nested: the dotted name is a literal claim.
        let flat = ClaimsRule {
            roles: vec!["a".into()],
            roles_key: "x.y".into(),
            ..Default::default()
        };
        assert!(flat.check(Some(&b64(r#"{"x.y":["a"]}"#))).is_ok());
        assert!(flat.check(Some(&b64(r#"{"x":{"y":["a"]}}"#))).is_err());
    }
}
