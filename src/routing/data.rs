//! KrakenD's view of a request and of a backend's answer, as its CEL expressions
//! (`validation/cel`, `security/policies`, `backend/conditional` policies) and its body
//! templates read them: one capture per request, bound to a CEL [`Activation`] or rendered as
//! a template's data.
//!
//! Names and shapes are KrakenD's (krakend-cel, the body generator): `req_method`,
//! `req_path`, `req_params` (the `{param}`s with a capital first letter), `req_headers` and
//! `req_querystring` (maps of lists; header names canonical, `X-User-Id`), `now` (RFC 3339),
//! `JWT` (the token's claims); `resp_completed`, `resp_metadata_status`,
//! `resp_metadata_headers`, `resp_data` (the answer's JSON). KrakenD gives its expressions the
//! request as its backend gets it: the headers and query parameters `input_headers` and
//! `input_query_strings` let through, with the gateway's own (propagated claims, the API-key
//! role); the filter captures those.

use crate::cel::{canonical_header_key, param_key, Activation, Value};
use crate::support::encoding::percent_decode_strict;
use serde_json::{Map, Value as Json};

/// A request as KrakenD's expressions and templates see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestData {
    pub method: String,
    /// The path the client asked for (no query).
    pub path: String,
    /// The endpoint's `{param}`s, named as KrakenD names them ([`param_key`]).
    pub params: Vec<(String, String)>,
    /// Header names canonical ([`canonical_header_key`]), values as sent.
    pub headers: Vec<(String, String)>,
    /// Query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// The current time, RFC 3339.
    pub now: String,
    /// The verified token's claims (with `auth/validator`).
    pub jwt: Option<Json>,
}

impl RequestData {
    /// The request's data from its parts (names converted to KrakenD's; the path and the
    /// `{param}`s percent-decoded, as KrakenD's router and the backend read them: a policy
    /// on `admin` also sees `%61dmin`).
    pub fn new(
        method: &str,
        path: &str,
        params: &[(String, String)],
        headers: impl IntoIterator<Item = (String, String)>,
        query: Vec<(String, String)>,
        now: String,
    ) -> Self {
        Self {
            method: method.to_string(),
            path: decoded(path),
            params: params
                .iter()
                .map(|(k, v)| (param_key(k), decoded(v)))
                .collect(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (canonical_header_key(&k), v))
                .collect(),
            query,
            now,
            jwt: None,
        }
    }

    /// Binds the request variables, `now` and `JWT` (when there is a token).
    pub fn bind<'a>(&'a self, act: &mut Activation<'a>) {
        let pairs = |l: &'a [(String, String)]| l.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        act.bind("req_method", Value::str(&self.method))
            .bind("req_path", Value::str(&self.path))
            .bind("req_params", Value::string_map(pairs(&self.params)))
            .bind("req_headers", Value::string_lists(pairs(&self.headers)))
            .bind("req_querystring", Value::string_lists(pairs(&self.query)))
            .bind("now", Value::str(&self.now));
        if let Some(jwt) = &self.jwt {
            act.bind("JWT", Value::from_json(jwt));
        }
    }

    /// The request's part of a template's data: `req_headers`, `req_params`,
    /// `req_querystring` (the body and variables are the caller's).
    pub fn template_data(&self) -> Map<String, Json> {
        let mut data = Map::new();
        data.insert("req_headers".into(), lists(&self.headers));
        let params = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect();
        data.insert("req_params".into(), Json::Object(params));
        data.insert("req_querystring".into(), lists(&self.query));
        data
    }
}

/// One round of percent-decoding, as the backend reads a path segment; a value with a
/// malformed escape or that is not UTF-8 once decoded stays as written. Whatever keys on a
/// `{param}` (CEL, templates, rate-limit and quota identities) takes it decoded: `alice` and
/// `%61lice` are one client.
pub fn decoded(raw: &str) -> String {
    if !raw.contains('%') {
        return raw.to_string();
    }
    percent_decode_strict(raw)
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| raw.to_string())
}

/// Name → list of values, names in order of first appearance.
fn lists(pairs: &[(String, String)]) -> Json {
    let mut out = Map::new();
    for (k, v) in pairs {
        let list = out
            .entry(k.clone())
            .or_insert_with(|| Json::Array(Vec::new()));
        if let Json::Array(a) = list {
            a.push(Json::String(v.clone()));
        }
    }
    Json::Object(out)
}

/// A backend's answer as KrakenD's response expressions see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseData {
    pub status: u16,
    /// Header names canonical, values as received.
    pub headers: Vec<(String, String)>,
    /// The decoded JSON body (None: not JSON, or not read).
    pub body: Option<Json>,
    /// The answer arrived whole.
    pub completed: bool,
}

impl ResponseData {
    /// Binds the response variables (`resp_data` is null without a JSON body).
    pub fn bind<'a>(&'a self, act: &mut Activation<'a>) {
        let pairs = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        act.bind("resp_completed", Value::Bool(self.completed))
            .bind("resp_metadata_status", Value::Int(i64::from(self.status)))
            .bind("resp_metadata_headers", Value::string_lists(pairs))
            .bind(
                "resp_data",
                self.body.as_ref().map_or(Value::Null, Value::from_json),
            );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::cel::{Program, Scope};
    use serde_json::json;

    fn sample() -> RequestData {
        let mut r = RequestData::new(
            "POST",
            "/nick/kpacha",
            &[("nick".into(), "kpacha".into())],
            vec![
                ("x-user-id".to_string(), "42".to_string()),
                ("cookie".to_string(), "GDPR=yes".to_string()),
                ("x-user-id".to_string(), "43".to_string()),
            ],
            vec![("foo[]".into(), "bar".into())],
            "2024-01-15T09:30:00Z".into(),
        );
        r.jwt = Some(json!({"user_id": "u-1", "enabled_days": [1, 2]}));
        r
    }

    fn check(expr: &str, req: &RequestData, resp: Option<&ResponseData>) -> bool {
        let p = Program::compile_for(expr, Scope::Validation).unwrap();
        let mut act = Activation::new();
        req.bind(&mut act);
        if let Some(r) = resp {
            r.bind(&mut act);
        }
        p.check(&act)
    }

    #[test]
    fn krakends_names_and_shapes() {
        let r = sample();
        // KrakenD's documentation examples (docs/cel-and-templates.md, tests/krakend_corpus).
        for expr in [
            "req_params.Nick.matches('k.*')",
            "size(req_headers['X-User-Id']) == 2 && req_headers['X-User-Id'][1] == '43'",
            "getCookie('GDPR') == 'yes'",
            "'bar' in req_querystring['foo[]']",
            "has(JWT.user_id) && timestamp(now).getDayOfWeek() in JWT.enabled_days",
            "req_method == 'POST' && req_path == '/nick/kpacha'",
        ] {
            assert!(check(expr, &r, None), "{expr}");
        }
        assert!(!check("req_params.Nick == 'other'", &r, None));
        // The path and params as the backend decodes them (one round); a bad escape stays.
        let enc = RequestData::new(
            "GET",
            "/nick/%61dmin",
            &[
                ("nick".into(), "%61dmin".into()),
                ("id".into(), "%zz".into()),
            ],
            Vec::new(),
            Vec::new(),
            String::new(),
        );
        assert!(check(
            "req_params.Nick == 'admin' && req_path == '/nick/admin'",
            &enc,
            None
        ));
        assert!(check("req_params.Id == '%zz'", &enc, None));
        // Without a token JWT is unbound: reading it fails the check.
        let mut anon = r.clone();
        anon.jwt = None;
        assert!(!check("has(JWT.user_id)", &anon, None));
        let resp = ResponseData {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Some(json!({"github": {"company": "KrakenD"}})),
            completed: true,
        };
        assert!(check(
            "'company' in resp_data.github && resp_metadata_status == 200 && resp_completed && resp_metadata_headers['Content-Type'][0] == 'application/json'",
            &r,
            Some(&resp)
        ));
        let none = ResponseData::default();
        assert!(!check(
            "resp_data.github.company == 'KrakenD'",
            &r,
            Some(&none)
        ));
    }

    #[test]
    fn template_data() {
        let d = sample().template_data();
        assert_eq!(
            d["req_headers"],
            json!({"X-User-Id": ["42", "43"], "Cookie": ["GDPR=yes"]})
        );
        assert_eq!(d["req_params"], json!({"Nick": "kpacha"}));
        assert_eq!(d["req_querystring"], json!({"foo[]": ["bar"]}));
    }
}
