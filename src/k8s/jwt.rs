//! KrakenD `auth/validator` under a control plane: the control plane's `jwt_authn` verifies
//! the token, tollgate checks the verified claims, as with tollgate's own bootstrap.
//!
//! Neither control plane verifies per tollgate endpoint: Envoy Gateway's `SecurityPolicy`
//! covers the HTTPRoute every request starts on, Istio's `RequestAuthentication` the whole
//! gateway. So one provider per issuer verifies any token that comes (a request without one
//! passes `jwt_authn`; a bad one is refused 401 there), and the filter requires the payload
//! of the endpoint it matched (none: 401 in the client's shape; issuer, audience, roles and
//! scopes checked again). Where the payload is: the `envoy.filters.http.jwt_authn`
//! namespace of the dynamic metadata (only `jwt_authn` writes it), under the key the control
//! plane gives `payload_in_metadata`, which this writes into each endpoint's
//! `auth/validator` for the filter ([`PAYLOAD_KEY_FIELD`]):
//! - Envoy Gateway: the SecurityPolicy provider's `name` (internal/xds/translator/jwt.go
//!   `buildJWTProvider`), here `tollgate-jwt-<n>`;
//! - Istio: `payload` for every provider (pilot/pkg/security/authn/policy_applier.go,
//!   `filters.EnvoyJwtFilterPayload`).
//!
//! Istio also gets an `AuthorizationPolicy` that denies (403, before the filter) a request
//! to a JWT endpoint without a principal of that endpoint's issuer.

use super::{metadata, Flavor, Options};
use crate::config::Gateway;
use crate::security::apikeys::Strategy;
use crate::security::claims::{ClaimsRule, PAYLOAD_KEY_FIELD};
use serde_json::{json, Value};

/// Istio's `payload_in_metadata` key for every `RequestAuthentication` provider.
pub const ISTIO_PAYLOAD_KEY: &str = "payload";

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq)]
enum Jwks {
    Url(String),
    /// The JWKS file's content (`jwk_local_path` read when the manifests are made: no file
    /// of the operator's machine exists on the gateway's).
    Inline(String),
}

/// One provider: an issuer, its keys, and the audiences of every endpoint it serves.
struct Provider {
    issuer: Option<String>,
    jwks: Jwks,
    audiences: Vec<String>,
    /// Endpoint index whose configuration first named this issuer (for messages).
    first: usize,
}

/// The JWT manifests and the plugin configuration to load (the KrakenD document with each
/// validator's payload key), or the document unchanged and nothing when no endpoint has
/// `auth/validator`. `read` reads a `jwk_local_path`.
pub fn plan(
    gw: &Gateway,
    doc: &Value,
    o: &Options,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(Value, Vec<Value>), String> {
    let rules: Vec<(usize, &ClaimsRule)> = gw
        .endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((i, e.security.jwt.as_ref()?)))
        .collect();
    if rules.is_empty() {
        return Ok((doc.clone(), Vec::new()));
    }
    refuse_bearer_keys(gw)?;
    let mut providers: Vec<Provider> = Vec::new();
    let mut doc = doc.clone();
    for &(i, rule) in &rules {
        let at = format!("$.endpoints[{i}].extra_config.auth/validator");
        if o.flavor == Flavor::Istio && rule.issuer.is_none() {
            return Err(format!("{at}.issuer: required with --flavor istio (the AuthorizationPolicy requires a principal of this issuer); refused"));
        }
        let jwks = jwks(rule, &at, read)?;
        let n = match providers.iter().position(|p| p.issuer == rule.issuer) {
            Some(n) if providers.get(n).is_some_and(|p| p.jwks != jwks) => {
                let first = providers.get(n).map_or(0, |p| p.first);
                return Err(format!("{at}: the issuer of $.endpoints[{first}] with other keys: under a control plane one provider verifies an issuer's tokens; refused"));
            }
            Some(n) => n,
            None => {
                providers.push(Provider {
                    issuer: rule.issuer.clone(),
                    jwks,
                    audiences: Vec::new(),
                    first: i,
                });
                providers.len() - 1
            }
        };
        if let Some(p) = providers.get_mut(n) {
            for a in &rule.audience {
                if !p.audiences.contains(a) {
                    p.audiences.push(a.clone());
                }
            }
        }
        let key = match o.flavor {
            Flavor::EnvoyGateway => provider_name(n),
            Flavor::Istio => ISTIO_PAYLOAD_KEY.to_string(),
        };
        let validator = doc
            .get_mut("endpoints")
            .and_then(|e| e.get_mut(i))
            .and_then(|e| e.get_mut("extra_config"))
            .and_then(|e| e.get_mut("auth/validator"))
            .and_then(Value::as_object_mut)
            .ok_or(format!("{at}: not found in the document; refused"))?;
        validator.insert(PAYLOAD_KEY_FIELD.into(), json!(key));
    }
    let manifests = match o.flavor {
        Flavor::EnvoyGateway => vec![security_policy(&providers, o)],
        Flavor::Istio => istio(gw, &providers, o),
    };
    Ok((doc, manifests))
}

/// Envoy Gateway's provider name of provider `n` (also its `payload_in_metadata` key).
pub fn provider_name(n: usize) -> String {
    format!("tollgate-jwt-{n}")
}

/// The control plane's `jwt_authn` reads `Authorization: Bearer` (and `access_token`) on
/// every path it covers, and refuses what does not verify: an API key sent there would be
/// refused as a malformed token before tollgate sees it.
fn refuse_bearer_keys(gw: &Gateway) -> Result<(), String> {
    for (j, e) in gw.endpoints.iter().enumerate() {
        let Some(k) = &e.security.api_keys else {
            continue;
        };
        let clash = match k.strategy {
            Strategy::Header => k.identifier.eq_ignore_ascii_case("authorization"),
            Strategy::QueryString => k.identifier == "access_token",
        };
        if clash {
            return Err(format!("$.endpoints[{j}].extra_config.auth/api-keys: read from {}, where the control plane's jwt_authn (covering every endpoint under tollgate k8s) refuses what is not a valid token; give the keys another header (identifier) or deploy JWT endpoints separately; refused", k.identifier));
        }
    }
    Ok(())
}

fn jwks(
    rule: &ClaimsRule,
    at: &str,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Jwks, String> {
    if let Some(url) = &rule.jwk_url {
        return Ok(Jwks::Url(url.clone()));
    }
    let path = rule.jwk_local_path.as_deref().unwrap_or_default();
    let text = read(path).map_err(|e| format!("{at}.jwk_local_path: {path}: {e}; refused"))?;
    let keys = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("keys")?.as_array().map(Vec::len))
        .unwrap_or_default();
    if keys == 0 {
        return Err(format!(
            "{at}.jwk_local_path: {path}: not a JWKS (a JSON object with a non-empty \"keys\" array); refused"
        ));
    }
    Ok(Jwks::Inline(text))
}

/// Envoy Gateway: one SecurityPolicy on the route every request starts on; `optional`
/// (jwt_authn's `allow_missing`): a request without a token reaches the filter, which
/// refuses it where the endpoint requires one.
fn security_policy(providers: &[Provider], o: &Options) -> Value {
    let list: Vec<Value> = providers
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let mut v = json!({"name": provider_name(n)});
            if let Some(iss) = &p.issuer {
                v["issuer"] = json!(iss);
            }
            if !p.audiences.is_empty() {
                v["audiences"] = json!(p.audiences);
            }
            match &p.jwks {
                Jwks::Url(u) => v["remoteJWKS"] = json!({"uri": u}),
                Jwks::Inline(t) => v["localJWKS"] = json!({"type": "Inline", "inline": t}),
            }
            v
        })
        .collect();
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "SecurityPolicy",
        "metadata": metadata("tollgate-jwt", o),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "tollgate"}],
            "jwt": {"optional": true, "providers": list},
        },
    })
}

/// Istio: a RequestAuthentication (one rule per issuer) and an AuthorizationPolicy that
/// denies each JWT endpoint (and the model list it guards) to a request without a verified
/// principal of that endpoint's issuer.
fn istio(gw: &Gateway, providers: &[Provider], o: &Options) -> Vec<Value> {
    let (label, value) = o
        .selector
        .split_once('=')
        .unwrap_or(("istio", "ingressgateway"));
    let selector = json!({"matchLabels": {label: value}});
    let rules: Vec<Value> = providers
        .iter()
        .map(|p| {
            let mut r = json!({"issuer": p.issuer});
            if !p.audiences.is_empty() {
                r["audiences"] = json!(p.audiences);
            }
            match &p.jwks {
                Jwks::Url(u) => r["jwksUri"] = json!(u),
                Jwks::Inline(t) => r["jwks"] = json!(t),
            }
            r
        })
        .collect();
    let mut deny = Vec::new();
    // The model list under a prefix is guarded like the first LLM endpoint there with
    // authentication (as the filter and `tollgate envoy` do).
    let mut seen: Vec<String> = Vec::new();
    for ep in &gw.endpoints {
        let guarded = ep.security.api_keys.is_some() || ep.security.jwt.is_some();
        let models = ep
            .models_path()
            .filter(|m| ep.api.is_some() && guarded && !seen.contains(m));
        if let Some(m) = &models {
            seen.push(m.clone());
        }
        let Some(iss) = ep.security.jwt.as_ref().and_then(|r| r.issuer.as_ref()) else {
            continue;
        };
        let from = json!([{"source": {"notRequestPrincipals": [format!("{iss}/*")]}}]);
        let mut to = vec![json!({"operation": {
            "methods": [ep.method], "paths": [path_template(ep.pattern.as_str())]}})];
        if let Some(m) = models {
            // `{id}` below it: a prefix (`*`) where the path is literal; in a template
            // (Istio refuses `*` beside `{*}`), `{**}`.
            let m = path_template(&m);
            let below = if m.contains("{*}") { "{**}" } else { "*" };
            to.push(
                json!({"operation": {"methods": ["GET"], "paths": [format!("{m}/{below}"), m]}}),
            );
        }
        for t in to {
            deny.push(json!({"from": from, "to": [t]}));
        }
    }
    vec![
        json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": metadata("tollgate-jwt", o),
            "spec": {"selector": selector, "jwtRules": rules},
        }),
        json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": metadata("tollgate-jwt", o),
            "spec": {"selector": selector, "action": "DENY", "rules": deny},
        }),
    ]
}

/// A KrakenD path as an Istio AuthorizationPolicy path: `{param}` (one segment) → `{*}`.
fn path_template(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{*}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::manifests_reading;
    use super::*;

    const JWKS_A: &str = r#"{"keys": [{"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB"}]}"#;

    fn read(path: &str) -> Result<String, String> {
        match path {
            "/a.json" => Ok(JWKS_A.into()),
            "/empty.json" => Ok(r#"{"keys": []}"#.into()),
            _ => Err("No such file or directory".into()),
        }
    }

    fn llm(path: &str, validator: Value) -> Value {
        json!({"endpoint": path, "method": "POST",
               "backend": [{"host": ["https://api.openai.com"], "url_pattern": "/v1/chat/completions",
                            "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "k"}}}}}],
               "extra_config": {"auth/validator": validator}})
    }

    fn doc() -> Value {
        json!({"version": 3, "endpoints": [
            llm("/a/v1/chat/completions", json!({"jwk_local_path": "/a.json", "issuer": "https://a", "audience": ["x"], "roles": ["admin"]})),
            llm("/a/{team}/chat/completions", json!({"jwk_local_path": "/a.json", "issuer": "https://a", "audience": ["y"]})),
            llm("/b/v1/chat/completions", json!({"jwk_url": "https://idp.example.com/jwks", "issuer": "https://b"})),
            {"endpoint": "/plain", "method": "GET", "backend": [{"host": ["https://x.example.com"], "url_pattern": "/"}]},
        ]})
    }

    fn run(doc: &Value, flavor: Flavor) -> Result<Vec<Value>, String> {
        let gw = Gateway::from_value(doc, &|_| None).map_err(|e| format!("{e:?}"))?;
        let o = Options {
            flavor,
            ..Options::default()
        };
        manifests_reading(&gw, doc, &o, &read)
    }

    fn kind<'a>(docs: &'a [Value], k: &str) -> &'a Value {
        docs.iter().find(|d| d["kind"] == k).unwrap()
    }

    /// The plugin configuration the filter loads, compiled: each endpoint's payload key.
    fn keys(plugin: &Value) -> Vec<Option<String>> {
        let gw = Gateway::from_value(plugin, &|_| None).unwrap();
        (0..gw.endpoints.len())
            .map(|i| {
                gw.endpoints[i]
                    .security
                    .jwt
                    .as_ref()
                    .map(|r| r.payload_key(i))
            })
            .collect()
    }

    #[test]
    fn envoy_gateway_gets_one_provider_per_issuer_and_the_filter_its_name() {
        let docs = run(&doc(), Flavor::EnvoyGateway).unwrap();
        let sp = kind(&docs, "SecurityPolicy");
        assert_eq!(sp["spec"]["targetRefs"][0]["name"], "tollgate");
        assert_eq!(sp["spec"]["jwt"]["optional"], true);
        let providers = sp["spec"]["jwt"]["providers"].as_array().unwrap();
        assert_eq!(providers.len(), 2);
        assert_eq!(
            providers[0],
            json!({"name": "tollgate-jwt-0", "issuer": "https://a", "audiences": ["x", "y"],
                   "localJWKS": {"type": "Inline", "inline": JWKS_A}})
        );
        assert_eq!(
            providers[1],
            json!({"name": "tollgate-jwt-1", "issuer": "https://b",
                   "remoteJWKS": {"uri": "https://idp.example.com/jwks"}})
        );
        let plugin = &kind(&docs, "EnvoyExtensionPolicy")["spec"]["wasm"][0]["config"];
        let want = ["tollgate-jwt-0", "tollgate-jwt-0", "tollgate-jwt-1"];
        let want: Vec<Option<String>> = want.iter().map(|k| Some(k.to_string())).collect();
        assert_eq!(keys(plugin), [want, vec![None]].concat());
    }

    #[test]
    fn istio_reads_payload_and_denies_jwt_paths_without_a_principal() {
        let docs = run(&doc(), Flavor::Istio).unwrap();
        let ra = kind(&docs, "RequestAuthentication");
        assert_eq!(
            ra["spec"]["selector"],
            json!({"matchLabels": {"istio": "ingressgateway"}})
        );
        assert_eq!(
            ra["spec"]["jwtRules"],
            json!([{"issuer": "https://a", "audiences": ["x", "y"], "jwks": JWKS_A},
                   {"issuer": "https://b", "jwksUri": "https://idp.example.com/jwks"}])
        );
        let ap = kind(&docs, "AuthorizationPolicy");
        assert_eq!(ap["spec"]["action"], "DENY");
        let rules = ap["spec"]["rules"].as_array().unwrap();
        let to = |r: &Value| r["to"][0]["operation"].clone();
        let from = |r: &Value| r["from"][0]["source"]["notRequestPrincipals"].clone();
        assert_eq!(rules.len(), 6);
        assert_eq!(
            to(&rules[0]),
            json!({"methods": ["POST"], "paths": ["/a/v1/chat/completions"]})
        );
        assert_eq!(
            to(&rules[1]),
            json!({"methods": ["GET"], "paths": ["/a/v1/models/*", "/a/v1/models"]})
        );
        assert_eq!(
            to(&rules[2]),
            json!({"methods": ["POST"], "paths": ["/a/{*}/chat/completions"]})
        );
        assert_eq!(
            to(&rules[3]),
            json!({"methods": ["GET"], "paths": ["/a/{*}/models/{**}", "/a/{*}/models"]})
        );
        // Istio's path check (pkg/config/security CheckValidPathTemplate): in a template,
        // every other segment a literal, `{**}` last.
        let literal = |g: &str| {
            !g.is_empty()
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
        };
        for r in rules {
            for p in to(r)["paths"].as_array().unwrap() {
                let p = p.as_str().unwrap();
                let globs: Vec<&str> = p.trim_matches('/').split('/').collect();
                if p.contains("{*}") || p.contains("{**}") {
                    let n = globs.len();
                    for (i, g) in globs.iter().enumerate() {
                        let ok = *g == "{*}" || (*g == "{**}" && i + 1 == n) || literal(g);
                        assert!(ok, "{p}");
                    }
                } else {
                    assert!(!p.contains(['{', '}']), "{p}");
                }
            }
        }
        assert_eq!(from(&rules[0]), json!(["https://a/*"]));
        assert_eq!(from(&rules[4]), json!(["https://b/*"]));
        let ef = kind(&docs, "EnvoyFilter");
        let text = ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
            ["configuration"]["value"]
            .as_str()
            .unwrap();
        let plugin: Value = serde_json::from_str(text).unwrap();
        let p = Some("payload".to_string());
        assert_eq!(keys(&plugin), [p.clone(), p.clone(), p, None]);
    }

    #[test]
    fn what_a_control_plane_cannot_verify_is_refused_with_its_path() {
        let at = |i: usize| format!("$.endpoints[{i}].extra_config.auth/validator");
        let with = |i: usize, f: &dyn Fn(&mut Value)| {
            let mut d = doc();
            f(&mut d["endpoints"][i]["extra_config"]["auth/validator"]);
            d
        };
        let cases: Vec<(Value, Flavor, String)> = vec![
            (
                with(2, &|v| v["issuer"] = json!("https://a")),
                Flavor::EnvoyGateway,
                format!("{}: the issuer of $.endpoints[0] with other keys", at(2)),
            ),
            (
                with(0, &|v| v["jwk_local_path"] = json!("/missing.json")),
                Flavor::Istio,
                format!("{}.jwk_local_path: /missing.json: No such file", at(0)),
            ),
            (
                with(0, &|v| v["jwk_local_path"] = json!("/empty.json")),
                Flavor::EnvoyGateway,
                format!("{}.jwk_local_path: /empty.json: not a JWKS", at(0)),
            ),
            (
                with(2, &|v| {
                    v.as_object_mut().unwrap().remove("issuer");
                }),
                Flavor::Istio,
                format!("{}.issuer: required with --flavor istio", at(2)),
            ),
        ];
        for (d, flavor, want) in cases {
            let e = run(&d, flavor).unwrap_err();
            assert!(e.starts_with(&want), "{e}\nwant {want}");
        }
        // Without an issuer Envoy Gateway is fine (its provider checks the keys only).
        let d = with(2, &|v| {
            v.as_object_mut().unwrap().remove("issuer");
        });
        assert!(run(&d, Flavor::EnvoyGateway).is_ok());
        // API keys in Authorization beside JWT endpoints: the control plane's jwt_authn
        // would refuse them as malformed tokens.
        let mut d = doc();
        d["extra_config"] = json!({"auth/api-keys": {"keys": [{"key": "k", "roles": ["r"]}]}});
        d["endpoints"][3]["extra_config"] = json!({"auth/api-keys": {"roles": ["r"]}});
        for flavor in [Flavor::EnvoyGateway, Flavor::Istio] {
            let e = run(&d, flavor).unwrap_err();
            assert!(
                e.starts_with("$.endpoints[3].extra_config.auth/api-keys: read from Authorization"),
                "{e}"
            );
        }
        d["extra_config"]["auth/api-keys"]["identifier"] = json!("X-Team-Key");
        assert!(run(&d, Flavor::Istio).is_ok());
    }
}
