//! The filter's side of [`crate::security`] that touches the host: authentication on the
//! request headers, and the gateway's secrets scrubbed from proxied answers (headers, and a
//! plain endpoint's body). An LLM call's own checks are [`crate::security::call`].

use crate::config::Endpoint;
use crate::host::Host;
use crate::refusal::Refusal;
use crate::security::claims;
use crate::security::metadata;
use crate::security::secrets::{Mask, Scrubber, Secrets};

/// An authenticated (or public) request.
pub struct Auth {
    /// Roles from the API key and the JWT.
    pub roles: Vec<String>,
    /// The query to send upstream (the client key removed with the query-string strategy).
    pub query: Option<String>,
    /// Who the caller is (a hash of its API key, the JWT's issuer and subject); empty for
    /// a public endpoint. MCP sessions are bound to it.
    pub caller: String,
    /// The claims of the JWT `jwt_authn` verified for this endpoint.
    pub claims: Option<serde_json::Value>,
}

/// Request headers: `auth/api-keys` and `auth/validator` of endpoint `index`; a 401 or 403
/// when the credential does not pass.
pub fn authenticate<H: Host>(
    h: &mut H,
    ep: &Endpoint,
    index: usize,
    query: Option<&str>,
) -> Result<Auth, Refusal> {
    let sec = &ep.security;
    let mut auth = Auth {
        roles: Vec::new(),
        query: query.map(str::to_string),
        caller: String::new(),
        claims: None,
    };
    if let Some(rule) = &sec.api_keys {
        let header = |n: &str| h.request_header(n);
        match rule.authenticate(&header, query) {
            Ok(grant) => {
                auth.roles = grant.roles;
                auth.caller = grant.caller;
                if rule.strategy == crate::security::apikeys::Strategy::QueryString {
                    auth.query = grant.query;
                }
                if let Some((name, role)) = grant.role_header {
                    h.set_request_header(&name.to_ascii_lowercase(), Some(&role));
                }
            }
            Err(e) => return Err(e.refusal()),
        }
    }
    if let Some(rule) = &sec.jwt {
        // The payload jwt_authn verified with this endpoint's own provider, from the
        // dynamic metadata (never from a header: a client can write those).
        let payload = h
            .property(&["metadata"])
            .and_then(|m| metadata::jwt_payload(&m, &rule.payload_key(index)));
        match rule.check(payload.as_ref()) {
            Ok(roles) => auth.roles.extend(roles),
            Err(e) => return Err(e.refusal()),
        }
        for (claim, header) in &rule.propagate_claims {
            let value = payload
                .as_ref()
                .and_then(|p| claims::header_value(p, claim));
            h.set_request_header(&header.to_ascii_lowercase(), value.as_deref());
        }
        if let Some(p) = &payload {
            let part = |k: &str| claims::header_value(p, k).unwrap_or_default();
            let jwt = format!("jwt:{}|{}", part("iss"), part("sub"));
            auth.caller = if auth.caller.is_empty() {
                jwt
            } else {
                format!("{} {jwt}", auth.caller)
            };
        }
        auth.claims = payload;
    }
    Ok(auth)
}

/// Response headers without the gateway's secrets: a header holding one gets it replaced
/// (every value of that name is rewritten, duplicates kept).
pub fn scrub_headers<H: Host>(h: &mut H, secrets: &Secrets) {
    if secrets.is_empty() {
        return;
    }
    let headers = h.response_headers();
    let mut names: Vec<&str> = Vec::new();
    for (k, v) in &headers {
        if !k.starts_with(':') && !names.contains(&k.as_str()) && secrets.any_in(v.as_bytes()) {
            names.push(k);
        }
    }
    for name in names {
        h.set_response_header(name, None);
        for (_, v) in headers.iter().filter(|(k, _)| k == name) {
            h.add_response_header(name, &secrets.scrub_text(v).unwrap_or_else(|| v.clone()));
        }
    }
}

/// A plain endpoint's response body on its way to the client, when its backend is sent a
/// secret: the secret is masked with as many bytes (the announced length stays right).
#[derive(Default)]
pub struct BodyScrub(Scrubber);

impl BodyScrub {
    pub fn chunk<H: Host>(&mut self, h: &mut H, secrets: &Secrets, size: usize, end: bool) {
        let chunk = h.response_body(size).unwrap_or_default();
        let mut out = self.0.push(secrets, &chunk, Mask::SameLength);
        if end {
            out.extend(self.0.finish());
        }
        if out != chunk {
            h.set_response_body(&out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    mod flow {
        use crate::config::Gateway;
        use crate::filter::{Action, Flow};
        use crate::host::mock::MockHost;
        use serde_json::json;
        use std::rc::Rc;

        fn gateway() -> Rc<Gateway> {
            let llm = |url: &str| {
                json!([{"host": ["http://127.0.0.1:9001"], "url_pattern": url,
                        "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-provider"}}}}}])
            };
            let doc = json!({
                "version": 3,
                "extra_config": {"auth/api-keys": {"keys": [
                    {"key": "k-admin", "roles": ["admin"]}, {"key": "k-user", "roles": ["user"]}],
                    "propagate_role": "X-Role"}},
                "endpoints": [
                    {"endpoint": "/v1/chat/completions", "method": "POST", "backend": llm("/v1/chat/completions"),
                     "extra_config": {"auth/api-keys": {"roles": ["admin", "user"]},
                        "security/pii": {"detectors": ["email"], "action": "block"}}},
                    {"endpoint": "/v1/messages", "method": "POST", "backend": llm("/v1/chat/completions"),
                     "extra_config": {"auth/api-keys": {"roles": ["admin"]}}},
                    {"endpoint": "/plain", "method": "GET",
                     "input_query_strings": ["a", "b", "api_key"],
                     "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/p"}],
                     "extra_config": {"auth/api-keys": {"roles": [], "strategy": "query_string", "identifier": "api_key"}}},
                    {"endpoint": "/jwt", "method": "GET",
                     "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/j"}],
                     "extra_config": {"auth/validator": {"alg": "RS256", "jwk_local_path": "/k.json", "roles": ["r1"],
                        "issuer": "idp", "propagate_claims": [["sub", "x-user"]]}}}
                ]
            });
            Rc::new(Gateway::from_value(&doc, &|_| None).unwrap())
        }

        fn run(method: &str, path: &str, headers: &[(&str, &str)]) -> MockHost {
            let mut flow = Flow::new(gateway());
            let mut h = MockHost::request(method, path, headers);
            flow.on_request_headers(&mut h, false);
            h
        }

        #[test]
        fn api_keys_401_403_in_each_api_shape() {
            let h = run("POST", "/v1/chat/completions", &[]);
            let r = h.reply.unwrap();
            assert_eq!(r.status, 401);
            assert_eq!(
                r.json(),
                json!({"error": {"message": "an API key is required", "type": "authentication_error", "param": null, "code": "invalid_api_key"}})
            );
            let r = run("POST", "/v1/messages", &[("x-api-key", "k-user")])
                .reply
                .unwrap();
            assert_eq!(r.status, 403);
            assert_eq!(
                r.json(),
                json!({"type": "error", "error": {"type": "permission_error", "message": "this API key may not use this endpoint"}})
            );
            let r = run("POST", "/v1/messages", &[("x-api-key", "wrong")])
                .reply
                .unwrap();
            assert_eq!(r.json()["error"]["type"], "authentication_error");
            // Accepted: the role is propagated and the client key never goes upstream.
            let h = run("POST", "/v1/messages", &[("x-api-key", "k-admin")]);
            assert!(h.reply.is_none());
            assert_eq!(h.request_values("x-role"), vec!["admin"]);
            assert!(h.request_values("x-api-key").is_empty());
        }

        #[test]
        fn query_string_key_is_removed_before_upstream() {
            let h = run("GET", "/plain?a=1&api_key=k-user&b=2", &[]);
            assert!(h.reply.is_none());
            assert_eq!(h.request_values(":path"), vec!["/p?a=1&b=2"]);
            assert_eq!(h.request_values("x-role"), vec!["ANY"]);
            assert_eq!(run("GET", "/plain?a=1", &[]).reply.unwrap().status, 401);
        }

        /// The claims come from what jwt_authn verified for this endpoint (dynamic
        /// metadata), never from a header the client can write.
        #[test]
        fn jwt_claims_come_from_verified_metadata_only() {
            use crate::security::metadata::encode_jwt_metadata;
            // The /jwt endpoint is endpoint 3: its provider is tollgate_endpoint_3.
            let with = |key: &str, claims: serde_json::Value, headers: &[(&str, &str)]| {
                let mut flow = Flow::new(gateway());
                let mut h = MockHost::request("GET", "/jwt", headers);
                h.metadata = Some(encode_jwt_metadata(&[(key, &claims)]));
                flow.on_request_headers(&mut h, false);
                h
            };
            let ok = with(
                "tollgate_endpoint_3",
                json!({"iss": "idp", "sub": "u-1", "roles": ["r1"]}),
                &[
                    ("x-user", "forged"),
                    ("x-jwt-payload", "eyJyb2xlcyI6WyJyMSJdfQ"),
                ],
            );
            assert!(ok.reply.is_none());
            assert_eq!(ok.request_values("x-user"), vec!["u-1"]);
            assert!(ok.request_values("x-jwt-payload").is_empty());
            // A claim the token lacks: the client's own header does not stand in for it.
            let no_sub = with(
                "tollgate_endpoint_3",
                json!({"iss": "idp", "roles": ["r1"]}),
                &[("x-user", "forged")],
            );
            assert!(no_sub.reply.is_none());
            assert!(no_sub.request_values("x-user").is_empty());
            let r = with(
                "tollgate_endpoint_3",
                json!({"iss": "idp", "roles": ["r2"]}),
                &[],
            );
            assert_eq!(r.reply.unwrap().status, 403);
            // Another issuer, or a payload verified for another endpoint: 401.
            let r = with(
                "tollgate_endpoint_3",
                json!({"iss": "other", "roles": ["r1"]}),
                &[],
            );
            assert_eq!(r.reply.unwrap().status, 401);
            let r = with(
                "tollgate_endpoint_0",
                json!({"iss": "idp", "roles": ["r1"]}),
                &[],
            );
            assert_eq!(r.reply.unwrap().status, 401);
            // A self-written payload header alone (what main accepted): 401.
            let mut flow = Flow::new(gateway());
            let mut h = MockHost::request(
                "GET",
                "/jwt",
                &[("x-jwt-payload", "eyJyb2xlcyI6WyJyMSJdfQ")],
            );
            flow.on_request_headers(&mut h, false);
            let r = h.reply.unwrap();
            assert_eq!(r.status, 401);
            assert_eq!(r.json()["error"]["type"], "authentication_error");
        }

        /// Under a control plane (`tollgate k8s`), the payload is read under the key that
        /// control plane's jwt_authn writes (`tollgate_payload_in_metadata`), and only there.
        #[test]
        fn jwt_claims_under_a_control_planes_key() {
            use crate::security::metadata::encode_jwt_metadata;
            let doc = json!({"version": 3, "endpoints": [
                {"endpoint": "/jwt", "method": "GET",
                 "backend": [{"host": ["http://127.0.0.1:9001"], "url_pattern": "/j"}],
                 "extra_config": {"auth/validator": {"jwk_local_path": "/k.json", "roles": ["r1"],
                    "issuer": "idp", "tollgate_payload_in_metadata": "payload"}}}]});
            let gw = Rc::new(Gateway::from_value(&doc, &|_| None).unwrap());
            let with = |key: &str| {
                let mut flow = Flow::new(gw.clone());
                let mut h = MockHost::request("GET", "/jwt", &[]);
                let claims = json!({"iss": "idp", "roles": ["r1"]});
                h.metadata = Some(encode_jwt_metadata(&[(key, &claims)]));
                flow.on_request_headers(&mut h, false);
                h
            };
            assert!(with("payload").reply.is_none());
            // The bootstrap's key, or any other: no verified payload here, 401.
            for key in ["tollgate_endpoint_0", "tollgate-jwt-0"] {
                let r = with(key).reply.unwrap();
                assert_eq!(r.status, 401);
                assert_eq!(r.json()["error"]["type"], "authentication_error");
            }
        }

        #[test]
        fn pii_block_is_400_before_upstream() {
            let mut flow = Flow::new(gateway());
            let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "I am bob@example.com"}]});
            let body = body.to_string();
            let mut h = MockHost::request(
                "POST",
                "/v1/chat/completions",
                &[("authorization", "Bearer k-user")],
            )
            .with_body(body.as_bytes());
            assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
            flow.on_request_body(&mut h, body.len(), true);
            let r = h.reply.clone().unwrap();
            assert_eq!(r.status, 400);
            assert_eq!(r.json()["error"]["code"], "content_blocked");
            assert!(!String::from_utf8_lossy(&r.body).contains("bob@"));
            // The local reply passes through the response callbacks untranslated.
            let mut h = h.with_response_headers(&[(":status", "400")]);
            assert_eq!(flow.on_response_headers(&mut h, false), Action::Continue);
            assert_eq!(flow.on_response_body(&mut h, 0, true), Action::Continue);
        }
    }
}
