//! Security namespaces: KrakenD `auth/api-keys` (service + endpoint), `auth/validator`
//! (endpoint; roles/scopes enforced here, token verification by Envoy's `jwt_authn`),
//! KrakenD 3.0 `ai/prompt-guard` (service guards + endpoint selection, with tollgate
//! additions), and tollgate's `security/pii` and `security/exfiltration` (endpoint).

use crate::config::env::{self, Secret};
use crate::config::reader::{ConfigError, Obj, Result};
use crate::routing::HostUrl;
use crate::security::apikeys::{default_identifier, ApiKeys, Hash, Key, KeyRule, Strategy};
use crate::security::claims::ClaimsRule;
use crate::security::detect::{Detector, Detectors, Pattern, BUILTIN};
use crate::security::exfil::{Exfil, ExfilAction, DEFAULT_WINDOW};
use crate::security::guard::{PromptGuard, RegexGuard};
use crate::security::pii::{Pii, PiiAction};
use crate::security::secrets::Secrets;
use serde_json::Value;
use std::rc::Rc;

/// Service-level security settings, shared by endpoints.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceSecurity {
    pub api_keys: Option<Rc<ApiKeys>>,
    /// `ai/prompt-guard` guards (regex kind).
    pub guards: Vec<RegexGuard>,
}

/// An endpoint's compiled security settings (all optional).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EndpointSecurity {
    pub api_keys: Option<KeyRule>,
    pub jwt: Option<ClaimsRule>,
    pub pii: Option<Rc<Pii>>,
    pub exfil: Option<Rc<Exfil>>,
    pub guard: Option<Rc<PromptGuard>>,
    /// The gateway's configured secrets (the same set on every endpoint), scrubbed from
    /// what clients get.
    pub secrets: Rc<Secrets>,
    /// A backend of this endpoint is sent a secret in a header (a martian modifier): what
    /// it answers may echo it, so a plain endpoint's body is scrubbed too.
    pub upstream_secret: bool,
    /// `security/policies` and `validation/cel` of the endpoint.
    pub checks: Rc<crate::security::policy::Checks>,
}

impl EndpointSecurity {
    /// Headers the gateway writes for this endpoint (lowercase): the API-key role
    /// (`propagate_role`) and the JWT claims (`propagate_claims`). A client's own copies
    /// are removed before authentication.
    pub fn owned_headers(&self) -> Vec<String> {
        let role = self
            .api_keys
            .as_ref()
            .and_then(|k| k.store.propagate_role.as_deref());
        let claims = self.jwt.iter().flat_map(|j| &j.propagate_claims);
        role.into_iter()
            .chain(claims.map(|(_, header)| header.as_str()))
            .map(str::to_ascii_lowercase)
            .collect()
    }

    /// Headers that never leave the gateway (lowercase): client credentials and the
    /// API-key identifier header of this endpoint.
    pub fn secret_headers(&self) -> Vec<String> {
        let identifier = self
            .api_keys
            .as_ref()
            .filter(|k| k.strategy == Strategy::Header)
            .map(|k| k.identifier.to_ascii_lowercase());
        crate::routing::forward::CLIENT_CREDENTIALS
            .iter()
            .map(|s| s.to_string())
            .chain(identifier)
            .collect()
    }
}

/// KrakenD `auth/validator` fields about token verification: Envoy's `jwt_authn` does
/// that part (see `tollgate envoy`); tollgate accepts and does not use them.
const VALIDATOR_VERIFY_ONLY: &[&str] = &[
    "auth_header_name",
    "cache",
    "cache_duration",
    "cipher_suites",
    "cookie_key",
    "cypher_key",
    "disable_jwk_security",
    "failed_jwk_key_cooldown",
    "jwk_fingerprints",
    "jwk_local_ca",
    "key_identify_strategy",
    "leeway",
    "operation_debug",
    "propagate_claims_preserve_array",
    "secret_url",
];

const SEVERITIES: &[&str] = &["critical", "high", "medium", "low"];

/// Reads the service-level `ai/prompt-guard` (KrakenD 3.0): the named guards endpoints select.
pub fn guards(v: &Value, path: &str) -> Result<Vec<RegexGuard>> {
    let mut out: Vec<RegexGuard> = Vec::new();
    let mut o = Obj::new(v, path)?;
    let list = o.opt_array("guards")?.cloned().unwrap_or_default();
    for (i, g) in list.iter().enumerate() {
        let guard = regex_guard(g, &format!("{}[{i}]", o.at("guards")))?;
        if out.iter().any(|x| x.name == guard.name) {
            return Err(ConfigError::new(
                format!("{}[{i}].name", o.at("guards")),
                format!("duplicate guard name \"{}\"", guard.name),
            ));
        }
        out.push(guard);
    }
    o.finish(&[])?;
    Ok(out)
}

/// Reads the service-level `auth/api-keys` (KrakenD): the key store.
pub fn api_keys(v: &Value, path: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<ApiKeys> {
    let mut o = Obj::new(v, path)?;
    let hash = match o.opt_str("hash")? {
        None | Some("plain") => Hash::Plain,
        Some("sha256") => Hash::Sha256,
        Some(h @ ("fnv128" | "sha1")) => {
            return Err(ConfigError::new(
                o.at("hash"),
                format!("\"{h}\" is not supported by tollgate; use plain or sha256"),
            ))
        }
        Some(h) => {
            return Err(ConfigError::new(
                o.at("hash"),
                format!("\"{h}\" is not one of plain, sha256, fnv128, sha1"),
            ))
        }
    };
    let salt = match o.opt_str("salt")? {
        Some(s) => {
            env::resolve(s, lookup).map_err(|e| ConfigError::new(o.at("salt"), e.to_string()))?
        }
        None => String::new(),
    };
    let strategy = strategy(&mut o)?.unwrap_or_default();
    let identifier = o.opt_str("identifier")?.map(str::to_string);
    let propagate_role = o
        .opt_str("propagate_role")?
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let list = o
        .opt_array("keys")?
        .ok_or_else(|| ConfigError::new(o.at("keys"), "is required"))?;
    let mut keys: Vec<Key> = Vec::with_capacity(list.len());
    for (i, k) in list.iter().enumerate() {
        let kpath = format!("{}[{i}]", o.at("keys"));
        let mut ko = Obj::new(k, &kpath)?;
        let raw = ko.str("key")?;
        let key =
            env::resolve(raw, lookup).map_err(|e| ConfigError::new(ko.at("key"), e.to_string()))?;
        if key.is_empty() {
            return Err(ConfigError::new(ko.at("key"), "must not be empty"));
        }
        if keys.iter().any(|x| x.stored.0 == key) {
            return Err(ConfigError::new(ko.at("key"), "duplicates another key"));
        }
        let roles = ko
            .opt_strings("roles")?
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string)
            .collect();
        ko.finish(&[])?;
        keys.push(Key {
            stored: Secret(key),
            roles,
        });
    }
    o.finish(&[])?;
    Ok(ApiKeys {
        keys,
        hash,
        salt: Secret(salt),
        identifier,
        strategy,
        propagate_role,
    })
}

fn strategy(o: &mut Obj<'_>) -> Result<Option<Strategy>> {
    match o.opt_str("strategy")? {
        None => Ok(None),
        Some("header") => Ok(Some(Strategy::Header)),
        Some("query_string") => Ok(Some(Strategy::QueryString)),
        Some(s) => Err(ConfigError::new(
            o.at("strategy"),
            format!("\"{s}\" is not one of header, query_string"),
        )),
    }
}

fn regex_guard(v: &Value, path: &str) -> Result<RegexGuard> {
    let mut o = Obj::new(v, path)?;
    let name = o.str("name")?.to_string();
    match o.str("kind")? {
        "regex" => {}
        k @ ("classifier" | "policy") => {
            return Err(ConfigError::new(
                o.at("kind"),
                format!("\"{k}\" guards are not supported by tollgate; use regex"),
            ))
        }
        k => {
            return Err(ConfigError::new(
                o.at("kind"),
                format!("\"{k}\" is not one of regex, classifier, policy"),
            ))
        }
    }
    let severity = o.opt_str("severity")?.unwrap_or("high").to_string();
    if !SEVERITIES.contains(&severity.as_str()) {
        return Err(ConfigError::new(
            o.at("severity"),
            format!("\"{severity}\" is not one of critical, high, medium, low"),
        ));
    }
    let mut c = o
        .opt_obj("config")?
        .ok_or_else(|| ConfigError::new(o.at("config"), "is required"))?;
    let patterns = patterns(&mut c, "patterns")?
        .ok_or_else(|| ConfigError::new(c.at("patterns"), "is required"))?;
    c.finish(&[])?;
    o.finish(&[])?;
    Ok(RegexGuard {
        name,
        severity,
        patterns,
    })
}

/// A list of regexes, each compiled (errors name the item).
fn patterns(o: &mut Obj<'_>, key: &str) -> Result<Option<Vec<Pattern>>> {
    let Some(list) = o.opt_strings(key)? else {
        return Ok(None);
    };
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            Pattern::new(p).map_err(|e| {
                ConfigError::new(format!("{}[{i}]", o.at(key)), format!("invalid regex: {e}"))
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Reads an endpoint's `auth/api-keys` (KrakenD): the roles and identifier, against the
/// service's key store. `is_messages`: an Anthropic-style endpoint (also reads `x-api-key`).
pub fn key_rule(
    v: &Value,
    path: &str,
    svc: &ServiceSecurity,
    is_messages: bool,
) -> Result<KeyRule> {
    let store = svc.api_keys.clone().ok_or_else(|| {
        ConfigError::new(
            path,
            "needs the service-level extra_config \"auth/api-keys\" that declares the keys",
        )
    })?;
    let mut o = Obj::new(v, path)?;
    let roles = o
        .opt_strings("roles")?
        .unwrap_or_default()
        .into_iter()
        .map(str::to_string)
        .collect();
    let strat = strategy(&mut o)?.unwrap_or(store.strategy);
    let identifier = o
        .opt_str("identifier")?
        .map(str::to_string)
        .or_else(|| store.identifier.clone())
        .unwrap_or_else(|| default_identifier(strat).to_string());
    if o.get("client_max_rate").is_some() {
        return Err(ConfigError::new(
            o.at("client_max_rate"),
            "per-key rate limits are not supported by tollgate here; use qos/ratelimit/router",
        ));
    }
    o.finish(&[])?;
    Ok(KeyRule {
        store,
        roles,
        identifier,
        strategy: strat,
        accept_x_api_key: is_messages,
    })
}

/// Reads an endpoint's `auth/validator` (KrakenD): issuer, audience, roles, claims to propagate.
pub fn validator(v: &Value, path: &str) -> Result<ClaimsRule> {
    let mut o = Obj::new(v, path)?;
    let strings = |o: &mut Obj<'_>, k: &str| -> Result<Vec<String>> {
        Ok(o.opt_strings(k)?
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string)
            .collect())
    };
    let roles = strings(&mut o, "roles")?;
    let scopes = strings(&mut o, "scopes")?;
    let audience = strings(&mut o, "audience")?;
    let scopes_all = match o.opt_str("scopes_matcher")? {
        None | Some("any") => false,
        Some("all") => true,
        Some(s) => {
            return Err(ConfigError::new(
                o.at("scopes_matcher"),
                format!("\"{s}\" is not one of any, all"),
            ))
        }
    };
    let mut propagate_claims = Vec::new();
    if let Some(list) = o.opt_array("propagate_claims")? {
        for (i, pair) in list.iter().enumerate() {
            match pair.as_array().map(|a| a.as_slice()) {
                Some([Value::String(c), Value::String(h)]) => {
                    propagate_claims.push((c.clone(), h.clone()))
                }
                _ => {
                    return Err(ConfigError::new(
                        format!("{}[{i}]", o.at("propagate_claims")),
                        "expected [claim, header]",
                    ))
                }
            }
        }
    }
    let rule = ClaimsRule {
        roles,
        roles_key: o.opt_str("roles_key")?.unwrap_or("roles").to_string(),
        roles_key_is_nested: o.opt_bool("roles_key_is_nested")?.unwrap_or(false),
        scopes,
        scopes_key: o.opt_str("scopes_key")?.unwrap_or("scope").to_string(),
        scopes_all,
        alg: o.opt_str("alg")?.map(str::to_string),
        issuer: o.opt_str("issuer")?.map(str::to_string),
        audience,
        jwk_local_path: o.opt_str("jwk_local_path")?.map(str::to_string),
        jwk_url: o.opt_str("jwk_url")?.map(str::to_string),
        propagate_claims,
        payload_key: o
            .opt_str(crate::security::claims::PAYLOAD_KEY_FIELD)?
            .map(str::to_string),
    };
    if rule.payload_key.as_deref() == Some("") {
        return Err(ConfigError::new(
            o.at(crate::security::claims::PAYLOAD_KEY_FIELD),
            "must not be empty",
        ));
    }
    if let Some(url) = &rule.jwk_url {
        jwks_host(url).map_err(|m| ConfigError::new(o.at("jwk_url"), m))?;
    }
    if rule.jwk_local_path.as_deref() == Some("") {
        return Err(ConfigError::new(
            o.at("jwk_local_path"),
            "must not be empty",
        ));
    }
    o.finish(VALIDATOR_VERIFY_ONLY)?;
    if rule.jwk_local_path.is_none() && rule.jwk_url.is_none() {
        // Without keys Envoy's jwt_authn cannot verify anything: tokens would go unchecked.
        return Err(ConfigError::new(
            path,
            "needs jwk_local_path or jwk_url: tollgate has Envoy's jwt_authn verify the tokens with those keys",
        ));
    }
    Ok(rule)
}

/// The host of a `jwk_url` (Envoy needs a cluster for it).
pub fn jwks_host(url: &str) -> std::result::Result<HostUrl, String> {
    let Some(after_scheme) = url.find("://").map(|i| i + 3) else {
        return Err(format!("\"{url}\" must start with http:// or https://"));
    };
    let origin_end = url
        .get(after_scheme..)
        .and_then(|rest| rest.find('/'))
        .map(|p| after_scheme + p)
        .unwrap_or(url.len());
    HostUrl::parse(url.get(..origin_end).unwrap_or(url))
}

/// `detectors` (built-in names, default all) and `custom[{name, pattern}]`.
fn detectors(o: &mut Obj<'_>) -> Result<Detectors> {
    let mut list = Vec::new();
    match o.opt_strings("detectors")? {
        None => list.extend(BUILTIN.iter().filter_map(|(n, _)| Detector::builtin(n))),
        Some(names) => {
            for (i, n) in names.iter().enumerate() {
                let d = Detector::builtin(n).ok_or_else(|| {
                    let known: Vec<&str> = BUILTIN.iter().map(|b| b.0).collect();
                    ConfigError::new(
                        format!("{}[{i}]", o.at("detectors")),
                        format!("unknown detector \"{n}\" (known: {})", known.join(", ")),
                    )
                })?;
                list.push(d);
            }
        }
    }
    if let Some(items) = o.opt_array("custom")? {
        for (i, item) in items.iter().enumerate() {
            let mut c = Obj::new(item, &format!("{}[{i}]", o.at("custom")))?;
            let name = c.str("name")?;
            let pattern = Pattern::new(c.str("pattern")?)
                .map_err(|e| ConfigError::new(c.at("pattern"), format!("invalid regex: {e}")))?;
            c.finish(&[])?;
            list.push(Detector::custom(name, pattern));
        }
    }
    if list.is_empty() {
        return Err(ConfigError::new(o.path(), "needs at least one detector"));
    }
    Ok(Detectors { list })
}

/// Reads an endpoint's `security/pii` (tollgate): detectors, mask or block, restore.
pub fn pii(v: &Value, path: &str) -> Result<Pii> {
    let mut o = Obj::new(v, path)?;
    let detectors = detectors(&mut o)?;
    let action = match o.opt_str("action")? {
        None | Some("mask") => PiiAction::Mask,
        Some("redact") => PiiAction::Redact,
        Some("block") => PiiAction::Block,
        Some(a) => {
            return Err(ConfigError::new(
                o.at("action"),
                format!("\"{a}\" is not one of mask, redact, block"),
            ))
        }
    };
    let restore = o.opt_bool("restore")?.unwrap_or(false);
    if restore && action != PiiAction::Mask {
        return Err(ConfigError::new(
            o.at("restore"),
            "needs \"action\": \"mask\"",
        ));
    }
    o.finish(&[])?;
    Ok(Pii {
        detectors,
        action,
        restore,
    })
}

/// Reads an endpoint's `security/exfiltration` (tollgate): detectors, redact or block, window.
pub fn exfil(v: &Value, path: &str) -> Result<Exfil> {
    let mut o = Obj::new(v, path)?;
    let detectors = detectors(&mut o)?;
    let action = match o.opt_str("action")? {
        None | Some("redact") => ExfilAction::Redact,
        Some("block") => ExfilAction::Block,
        Some(a) => {
            return Err(ConfigError::new(
                o.at("action"),
                format!("\"{a}\" is not one of redact, block"),
            ))
        }
    };
    let window = match o.opt_u64("window")? {
        None => DEFAULT_WINDOW,
        Some(w) if (16..=65536).contains(&w) => w as usize,
        Some(_) => {
            return Err(ConfigError::new(
                o.at("window"),
                "must be between 16 and 65536",
            ))
        }
    };
    o.finish(&[])?;
    Ok(Exfil {
        detectors,
        action,
        window,
    })
}

/// Reads an endpoint's `ai/prompt-guard` (KrakenD 3.0 + tollgate fields), selecting among the
/// service's guards.
pub fn guard(v: &Value, path: &str, svc: &ServiceSecurity) -> Result<PromptGuard> {
    let mut o = Obj::new(v, path)?;
    let mut g = PromptGuard::default();
    // KrakenD selection: names pick guards; `!name`, `!<severity>` and `!all_defaults`
    // opt out. Without positive names every service guard applies.
    let names = o.opt_strings("guards")?.unwrap_or_default();
    let picked: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.starts_with('!'))
        .collect();
    let excluded: Vec<&str> = names.iter().filter_map(|n| n.strip_prefix('!')).collect();
    for (i, n) in picked.iter().enumerate() {
        if !svc.guards.iter().any(|x| x.name == *n) {
            return Err(ConfigError::new(
                format!("{}[{i}]", o.at("guards")),
                format!("no service-level ai/prompt-guard guard is named \"{n}\""),
            ));
        }
    }
    for x in &svc.guards {
        let chosen = if picked.is_empty() {
            !excluded.contains(&"all_defaults")
        } else {
            picked.contains(&x.name.as_str())
        };
        let dropped =
            excluded.contains(&x.name.as_str()) || excluded.contains(&x.severity.as_str());
        if chosen && !dropped {
            g.deny.push(x.clone());
        }
    }
    if let Some(p) = patterns(&mut o, "deny")? {
        g.deny.push(RegexGuard {
            name: "deny".into(),
            severity: "high".into(),
            patterns: p,
        });
    }
    g.allow = patterns(&mut o, "allow")?.unwrap_or_default();
    g.max_bytes = o.opt_u64("max_prompt_bytes")?;
    g.max_chars = o.opt_u64("max_prompt_chars")?;
    if let Some(mut m) = o.opt_obj("models_by_role")? {
        let keys: Vec<String> = m.unread().map(|(k, _)| k.to_string()).collect();
        for role in keys {
            let models = m
                .opt_strings(&role)?
                .unwrap_or_default()
                .into_iter()
                .map(str::to_string)
                .collect();
            g.models_by_role.push((role, models));
        }
    }
    o.finish(&[])?;
    Ok(g)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::namespaces::{self, Context, Row, ServiceParts};
    use serde_json::json;

    /// Compiles an `extra_config` through the namespace table, as the gateway does.
    fn level<P: Default>(v: &Value, path: &str, rows: &[Row<P>], s: &ServiceSecurity) -> Result<P> {
        let mut o = Obj::new(v, path)?;
        let service = ServiceParts {
            security: s.clone(),
            ..ServiceParts::default()
        };
        let cx = Context {
            lookup: &|_| Some("from-env".into()),
            service: &service,
            id: "",
            is_messages: false,
            host: "",
            url_pattern: "",
            scope: "",
        };
        let mut parts = P::default();
        namespaces::compile(&mut o, rows, &mut parts, &cx)?;
        Ok(parts)
    }

    fn svc(v: Value) -> Result<ServiceSecurity> {
        let none = ServiceSecurity::default();
        level(&v, "$.extra_config", namespaces::SERVICE, &none).map(|p| p.security)
    }

    fn ep(v: Value, s: &ServiceSecurity) -> Result<EndpointSecurity> {
        level(&v, "$.endpoints[0].extra_config", namespaces::ENDPOINT, s).map(|p| p.security)
    }

    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn api_keys_shapes_and_errors() {
        let s = svc(json!({"auth/api-keys": {"keys": [
            {"key": "k1", "roles": ["a"], "@description": "x"},
            {"key": "{{ env \"K2\" }}", "roles": ["b"]}],
            "propagate_role": "X-Role", "strategy": "header"}}))
        .unwrap();
        let store = s.api_keys.clone().unwrap();
        assert_eq!(store.keys[1].stored.0, "from-env");
        let e = ep(json!({"auth/api-keys": {"roles": ["a"]}}), &s).unwrap();
        let rule = e.api_keys.unwrap();
        assert_eq!(rule.identifier, "Authorization");
        let q = ep(
            json!({"auth/api-keys": {"roles": [], "strategy": "query_string"}}),
            &s,
        )
        .unwrap();
        assert_eq!(q.api_keys.unwrap().identifier, "key");
        assert_eq!(
            err(svc(json!({"auth/api-keys": {"keys": [], "hash": "sha1"}}))),
            "$.extra_config.auth/api-keys.hash: \"sha1\" is not supported by tollgate; use plain or sha256"
        );
        assert_eq!(
            err(svc(
                json!({"auth/api-keys": {"keys": [{"key": "a", "role": []}]}})
            )),
            "$.extra_config.auth/api-keys.keys[0].role: unknown field"
        );
        assert_eq!(
            err(svc(
                json!({"auth/api-keys": {"keys": [{"key": "a"}, {"key": "a"}]}})
            )),
            "$.extra_config.auth/api-keys.keys[1].key: duplicates another key"
        );
        assert_eq!(
            err(svc(json!({"auth/api-keys": {}}))),
            "$.extra_config.auth/api-keys.keys: is required"
        );
        assert_eq!(
            err(ep(json!({"auth/api-keys": {"roles": ["a"]}}), &ServiceSecurity::default())),
            "$.endpoints[0].extra_config.auth/api-keys: needs the service-level extra_config \"auth/api-keys\" that declares the keys"
        );
        assert_eq!(
            err(ep(json!({"auth/api-keys": {"roles": ["a"], "strategy": "cookie"}}), &s)),
            "$.endpoints[0].extra_config.auth/api-keys.strategy: \"cookie\" is not one of header, query_string"
        );
    }

    #[test]
    fn pii_exfil_and_guard_shapes_and_errors() {
        let s = svc(json!({"ai/prompt-guard": {"guards": [
            {"name": "jb", "kind": "regex", "severity": "critical", "config": {"patterns": ["(?i)ignore previous"]}},
            {"name": "low1", "kind": "regex", "severity": "low", "config": {"patterns": ["foo"]}}]}}))
        .unwrap();
        let e = ep(
            json!({
                "security/pii": {"detectors": ["email"], "custom": [{"name": "emp", "pattern": "EMP-[0-9]+"}], "action": "mask", "restore": true},
                "security/exfiltration": {"action": "block", "window": 128},
                "ai/prompt-guard": {"guards": ["!low"], "deny": ["secret plan"], "max_prompt_bytes": 100, "models_by_role": {"a": ["gpt-4o"]}},
                "auth/validator": {"alg": "RS256", "jwk_local_path": "/x.json", "roles": ["r"], "roles_key": "realm.roles", "roles_key_is_nested": true, "scopes": ["s"], "scopes_matcher": "all", "cache": true, "propagate_claims": [["sub", "x-user"]]}
            }),
            &s,
        )
        .unwrap();
        let pii = e.pii.unwrap();
        assert_eq!(pii.detectors.list.len(), 2);
        assert!(pii.restore);
        assert_eq!(e.exfil.unwrap().window, 128);
        let g = e.guard.unwrap();
        let names: Vec<&str> = g.deny.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["jb", "deny"]);
        assert_eq!(
            g.models_by_role,
            vec![("a".to_string(), vec!["gpt-4o".to_string()])]
        );
        let j = e.jwt.unwrap();
        assert!(j.scopes_all && j.roles_key_is_nested);
        assert_eq!(j.propagate_claims, vec![("sub".into(), "x-user".into())]);
        let p = "$.endpoints[0].extra_config";
        for (v, want) in [
            (json!({"security/pii": {"detectors": ["mail"]}}), format!("{p}.security/pii.detectors[0]: unknown detector \"mail\" (known: email, phone, credit_card, iban, ssn, ipv4, ipv6, api_key, aws_access_key)")),
            (json!({"security/pii": {"custom": [{"name": "x", "pattern": "("}]}}), format!("{p}.security/pii.custom[0].pattern: invalid regex: found open group without closing ')'")),
            (json!({"security/pii": {"action": "redact", "restore": true}}), format!("{p}.security/pii.restore: needs \"action\": \"mask\"")),
            (json!({"security/pii": {"detectors": []}}), format!("{p}.security/pii: needs at least one detector")),
            (json!({"security/exfiltration": {"action": "mask"}}), format!("{p}.security/exfiltration.action: \"mask\" is not one of redact, block")),
            (json!({"security/exfiltration": {"window": 1}}), format!("{p}.security/exfiltration.window: must be between 16 and 65536")),
            (json!({"ai/prompt-guard": {"guards": ["nope"]}}), format!("{p}.ai/prompt-guard.guards[0]: no service-level ai/prompt-guard guard is named \"nope\"")),
            (json!({"ai/prompt-guard": {"deny": ["a{2,1}"]}}), format!("{p}.ai/prompt-guard.deny[0]: invalid regex: found counted repetition with a min bigger than its max")),
            (json!({"auth/validator": {"scopes_matcher": "most"}}), format!("{p}.auth/validator.scopes_matcher: \"most\" is not one of any, all")),
            (json!({"auth/validator": {"rolez": []}}), format!("{p}.auth/validator.rolez: unknown field")),
            (json!({"auth/validator": {"alg": "RS256", "roles": ["admin"]}}), format!("{p}.auth/validator: needs jwk_local_path or jwk_url: tollgate has Envoy's jwt_authn verify the tokens with those keys")),
            (json!({"auth/validator": {"alg": "HS256", "secret_url": "base64://c2VjcmV0", "disable_jwk_security": true}}), format!("{p}.auth/validator: needs jwk_local_path or jwk_url: tollgate has Envoy's jwt_authn verify the tokens with those keys")),
            (json!({"auth/validator": {"jwk_local_path": ""}}), format!("{p}.auth/validator.jwk_local_path: must not be empty")),
            (json!({"auth/validator": {"jwk_url": "idp/jwks"}}), format!("{p}.auth/validator.jwk_url: \"idp/jwks\" must start with http:// or https://")),
        ] {
            assert_eq!(err(ep(v, &s)), want);
        }
        assert_eq!(
            err(svc(json!({"ai/prompt-guard": {"guards": [{"name": "c", "kind": "classifier", "config": {}}]}}))),
            "$.extra_config.ai/prompt-guard.guards[0].kind: \"classifier\" guards are not supported by tollgate; use regex"
        );
        // Without names every service guard applies; `!all_defaults` none.
        let all = ep(json!({"ai/prompt-guard": {}}), &s)
            .unwrap()
            .guard
            .unwrap();
        assert_eq!(all.deny.len(), 2);
        let none = ep(
            json!({"ai/prompt-guard": {"guards": ["!all_defaults"]}}),
            &s,
        )
        .unwrap()
        .guard
        .unwrap();
        assert!(none.deny.is_empty());
    }
}
