//! CEL checks on requests, answers and tokens: KrakenD's `security/policies` (EE: `req`,
//! `resp`, `jwt` blocks of policies with their `error`) and `validation/cel` (CE: a list of
//! `check_expr`), at endpoint and backend level, compiled with [`crate::cel`] when the
//! configuration loads (an error names the JSON path, the expression and the offset).
//!
//! A check runs in the stage whose data it reads ([`Stage`]): request and token checks on
//! the request headers (a backend's when that backend is chosen), answer checks on the
//! backend's answer. Every check must pass: `true` passes; `false`, any other value and an
//! evaluation error refuse (KrakenD's verdict). How a refusal answers:
//! - `security/policies` `req` and `resp`: the block's `error.status` (KrakenD's default 500)
//!   with `error.body` as the message (as is, with `error.content_type`, for KrakenD's own
//!   clients: see [`Refusal::raw`]); `jwt`: 401, as KrakenD answers.
//! - `validation/cel`: KrakenD answers its generic 500 ("request aborted by evaluator #N");
//!   tollgate tells what happened: 401 for a check of the token alone, 403 for a request
//!   check, 502 for an answer check (the backend's answer is not served).
//!
//! The message never quotes the expression (a policy may hold a value the client must not
//! learn); it names the block and the index.

use crate::cel::{Activation, Expr, Scope};
use crate::config::reader::{ConfigError, Obj, Result};
use crate::refusal::{ErrorKind, Refusal};
use crate::routing::data::{RequestData, ResponseData};
use serde_json::Value;
use std::rc::Rc;

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// On the request headers (request variables, `now`, `JWT`).
    Request,
    /// On the backend's answer (response variables; request variables too).
    Response,
}

/// Where a namespace is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Endpoint,
    Backend,
}

/// How a failed check answers.
#[derive(Debug, Clone, PartialEq)]
struct Fail {
    status: u16,
    /// The configured `error.body` and `error.content_type`.
    body: Option<(String, Rc<String>)>,
    /// What failed, for the default message: `security policy req #0`.
    what: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Check {
    expr: Expr,
    stage: Stage,
    /// Reads `resp_data` (needs the whole answer).
    body: bool,
    /// Reads `JWT`.
    jwt: bool,
    fail: Rc<Fail>,
}

/// The CEL checks of an endpoint or of a backend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checks {
    list: Vec<Check>,
    /// The JSON path of the first check reading `JWT` (it needs `auth/validator`).
    jwt_at: Option<String>,
}

impl Checks {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether a check runs in this stage.
    pub fn has(&self, stage: Stage) -> bool {
        self.list.iter().any(|c| c.stage == stage)
    }

    /// Whether an answer check reads the answer's body (`resp_data`).
    pub fn reads_body(&self) -> bool {
        self.list.iter().any(|c| c.body)
    }

    /// Runs the checks of a stage, in order; the first that does not pass refuses.
    pub fn run(
        &self,
        stage: Stage,
        req: &RequestData,
        resp: Option<&ResponseData>,
    ) -> std::result::Result<(), Refusal> {
        let mut checks = self.list.iter().filter(|c| c.stage == stage).peekable();
        if checks.peek().is_none() {
            return Ok(());
        }
        let mut act = Activation::new();
        req.bind(&mut act);
        if let Some(r) = resp {
            r.bind(&mut act);
        }
        for c in checks {
            if !c.expr.program().check(&act) {
                return Err(refusal(&c.fail, stage));
            }
        }
        Ok(())
    }

    /// Refuses a configuration where a check reads `JWT` without `auth/validator` on the
    /// endpoint (KrakenD skips such checks: an open door).
    pub fn need_validator(&self, has_validator: bool) -> Result<()> {
        match &self.jwt_at {
            Some(at) if !has_validator => Err(ConfigError::new(
                at,
                "reads JWT: needs auth/validator on this endpoint (KrakenD skips such checks without one)",
            )),
            _ => Ok(()),
        }
    }

    fn push(&mut self, expr: Expr, at: &str, fail: &Rc<Fail>) {
        let p = expr.program();
        let (jwt, body) = (p.reads_jwt(), p.variables().any(|v| v == "resp_data"));
        if jwt && self.jwt_at.is_none() {
            self.jwt_at = Some(at.to_string());
        }
        let stage = if p.reads_response() {
            Stage::Response
        } else {
            Stage::Request
        };
        self.list.push(Check {
            expr,
            stage,
            body,
            jwt,
            fail: Rc::clone(fail),
        });
    }
}

fn refusal(fail: &Fail, stage: Stage) -> Refusal {
    let message = match &fail.body {
        Some((body, _)) => body.clone(),
        None if stage == Stage::Response => {
            format!("the backend's answer does not pass the {}", fail.what)
        }
        None => format!("the request does not pass the {}", fail.what),
    };
    let kind = match fail.status {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        s if s >= 500 => ErrorKind::BadGateway,
        _ => ErrorKind::InvalidRequest,
    };
    let (_, kind, code) = kind.parts();
    let r = Refusal::custom(fail.status, kind, code, message);
    match &fail.body {
        Some((_, content_type)) => r.raw(Rc::clone(content_type)),
        None => r,
    }
}

/// Compiles one expression at `at`.
fn expr(src: &str, scope: Scope, at: &str) -> Result<Expr> {
    Expr::compile(src, scope).map_err(|m| ConfigError::new(at, m))
}

/// Reads `security/policies` into `checks`.
pub fn policies(v: &Value, path: &str, level: Level, checks: &mut Checks) -> Result<()> {
    let mut o = Obj::new(v, path)?;
    for flag in ["auto_join_policies", "debug", "disable_macros"] {
        o.opt_bool(flag)?;
    }
    let blocks = [
        ("req", Scope::Request),
        ("resp", Scope::Response),
        ("jwt", Scope::Jwt),
    ];
    let mut any = false;
    for (key, scope) in blocks {
        let Some(mut b) = o.opt_obj(key)? else {
            continue;
        };
        any = true;
        if key == "jwt" && level == Level::Backend {
            return Err(ConfigError::new(
                b.path(),
                "jwt policies apply at endpoint level only (as in KrakenD)",
            ));
        }
        let fail = Rc::new(policy_error(&mut b, key)?);
        let list = b
            .opt_strings("policies")?
            .filter(|l| !l.is_empty())
            .ok_or_else(|| ConfigError::new(b.at("policies"), "needs at least one policy"))?;
        for (i, src) in list.iter().enumerate() {
            let at = format!("{}[{i}]", b.at("policies"));
            checks.push(expr(src, scope, &at)?, &at, &fail);
        }
        b.finish(&[])?;
    }
    if !any {
        return Err(ConfigError::new(path, "needs req, resp or jwt policies"));
    }
    o.finish(&[])
}

/// A policy block's `error` (jwt: 401, no `error`).
fn policy_error(b: &mut Obj<'_>, key: &str) -> Result<Fail> {
    let what = format!("security policies ({key})");
    if key == "jwt" {
        return Ok(Fail {
            status: 401,
            body: None,
            what,
        });
    }
    let mut fail = Fail {
        status: 500,
        body: None,
        what,
    };
    if let Some(mut e) = b.opt_obj("error")? {
        if let Some(s) = e.opt_u64("status")? {
            if !(400..600).contains(&s) {
                return Err(ConfigError::new(
                    e.at("status"),
                    "must be an HTTP error status (400-599)",
                ));
            }
            fail.status = s as u16;
        }
        let content_type = e.opt_str("content_type")?.unwrap_or("text/plain");
        if content_type.contains(['\r', '\n', '\0']) {
            return Err(ConfigError::new(
                e.at("content_type"),
                "contains CR, LF or NUL",
            ));
        }
        fail.body = e
            .opt_str("body")?
            .filter(|b| !b.is_empty())
            .map(|b| (b.to_string(), Rc::new(content_type.to_string())));
        e.finish(&[])?;
    }
    Ok(fail)
}

/// Reads `validation/cel` (a list of `{check_expr}`) into `checks`.
pub fn validations(v: &Value, path: &str, level: Level, checks: &mut Checks) -> Result<()> {
    let list = v
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ConfigError::new(path, "expected a list of {\"check_expr\": ...}"))?;
    for (i, item) in list.iter().enumerate() {
        let mut o = Obj::new(item, &format!("{path}[{i}]"))?;
        let at = o.at("check_expr");
        let src = o.str("check_expr")?;
        let e = expr(src, Scope::Validation, &at)?;
        let p = e.program();
        if p.reads_jwt() && level == Level::Backend {
            return Err(ConfigError::new(
                &at,
                "reads JWT: token checks apply at endpoint level only (as in KrakenD)",
            ));
        }
        let status = if p.reads_response() {
            502
        } else if p.reads_jwt() && !p.reads_request() {
            401
        } else {
            403
        };
        let fail = Rc::new(Fail {
            status,
            body: None,
            what: format!("CEL check #{i} (validation/cel)"),
        });
        checks.push(e, &at, &fail);
        o.finish(&[])?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(ns: &str, v: Value, level: Level) -> std::result::Result<Checks, String> {
        let mut c = Checks::default();
        let r = match ns {
            "policies" => policies(&v, "$.p", level, &mut c),
            _ => validations(&v, "$.c", level, &mut c),
        };
        r.map(|()| c).map_err(|e| e.to_string())
    }

    fn request(cookie: &str) -> RequestData {
        RequestData::new(
            "GET",
            "/track-user",
            &[],
            vec![("cookie".to_string(), cookie.to_string())],
            Vec::new(),
            "2024-01-15T09:30:00Z".into(),
        )
    }

    #[test]
    fn playground_track_user_policy() {
        // krakend/playground-enterprise /track-user (tests/krakend_corpus/pge-ep-track-user.json).
        let c = compile(
            "policies",
            json!({"req": {"error": {"body": "User did not accept the cookie and tracking is not allowed", "status": 403},
                "policies": ["getCookie('GDPR') == 'yes'"]}}),
            Level::Endpoint,
        )
        .unwrap();
        assert!(c.has(Stage::Request) && !c.has(Stage::Response));
        assert_eq!(c.run(Stage::Request, &request("GDPR=yes"), None), Ok(()));
        let r = c
            .run(Stage::Request, &request("GDPR=no"), None)
            .unwrap_err();
        assert_eq!(r.status, 403);
        assert_eq!(
            r.message,
            "User did not accept the cookie and tracking is not allowed"
        );
        assert_eq!(r.raw.as_deref().map(String::as_str), Some("text/plain"));
    }

    #[test]
    fn failures_answer_by_block_and_stage() {
        let c = compile(
            "policies",
            json!({"req": {"policies": ["req_method == 'GET'"]},
                   "resp": {"policies": ["resp_data.label == 'BENIGN'"],
                            "error": {"status": 403, "body": "{\"error\":\"Prompt blocked\"}", "content_type": "application/json"}}}),
            Level::Endpoint,
        )
        .unwrap();
        let mut post = request("");
        post.method = "POST".into();
        let r = c.run(Stage::Request, &post, None).unwrap_err();
        assert_eq!(
            (r.status, r.message.as_str(), r.raw.is_none()),
            (
                500,
                "the request does not pass the security policies (req)",
                true
            )
        );
        assert!(c.reads_body());
        let bad = ResponseData {
            status: 200,
            body: Some(json!({"label": "INJECTION"})),
            completed: true,
            ..ResponseData::default()
        };
        let r = c.run(Stage::Response, &post, Some(&bad)).unwrap_err();
        assert_eq!(
            (r.status, r.raw.as_deref().map(String::as_str)),
            (403, Some("application/json"))
        );
        let good = ResponseData {
            body: Some(json!({"label": "BENIGN"})),
            ..bad
        };
        assert_eq!(c.run(Stage::Response, &post, Some(&good)), Ok(()));

        // validation/cel: 401 for the token alone, 403 for the request, 502 for the answer.
        let c = compile(
            "cel",
            json!([{"check_expr": "has(JWT.user_id)"}, {"check_expr": "req_params.Nick.matches('k.*')"},
                   {"check_expr": "'company' in resp_data.github"}]),
            Level::Endpoint,
        )
        .unwrap();
        let mut req = request("");
        let r = c.run(Stage::Request, &req, None).unwrap_err();
        assert_eq!(
            (r.status, r.message.as_str()),
            (
                401,
                "the request does not pass the CEL check #0 (validation/cel)"
            )
        );
        req.jwt = Some(json!({"user_id": "u"}));
        req.params = vec![("Nick".into(), "bob".into())];
        assert_eq!(c.run(Stage::Request, &req, None).unwrap_err().status, 403);
        req.params = vec![("Nick".into(), "kpacha".into())];
        assert_eq!(c.run(Stage::Request, &req, None), Ok(()));
        let r = c
            .run(Stage::Response, &req, Some(&ResponseData::default()))
            .unwrap_err();
        assert_eq!(r.status, 502);
        assert_eq!(c.need_validator(true), Ok(()));
        assert_eq!(
            c.need_validator(false).unwrap_err().to_string(),
            "$.c[0].check_expr: reads JWT: needs auth/validator on this endpoint (KrakenD skips such checks without one)"
        );
    }

    #[test]
    fn configuration_errors_name_path_and_expression() {
        let cases = [
            ("cel", json!([{"check_expr": "CONDITION1 && CONDITION2"}]), Level::Endpoint,
             "$.c[0].check_expr: \"CONDITION1 && CONDITION2\": at offset 0: unknown variable 'CONDITION1' (variables here: req_method, req_path, req_params, req_headers, req_querystring, resp_completed, resp_metadata_status, resp_metadata_headers, resp_data, JWT, now)"),
            ("cel", json!([{"check_expr": "has(JWT.a)"}]), Level::Backend,
             "$.c[0].check_expr: reads JWT: token checks apply at endpoint level only (as in KrakenD)"),
            ("cel", json!([]), Level::Endpoint, "$.c: expected a list of {\"check_expr\": ...}"),
            ("cel", json!([{"check_expr": "true", "x": 1}]), Level::Endpoint, "$.c[0].x: unknown field"),
            ("policies", json!({"req": {"policies": ["resp_data.a"]}}), Level::Endpoint,
             "$.p.req.policies[0]: \"resp_data.a\": at offset 0: unknown variable 'resp_data' (variables here: req_method, req_path, req_params, req_headers, req_querystring, now)"),
            ("policies", json!({"req": {"policies": ["geoIP().Country.IsoCode == 'ES'"]}}), Level::Endpoint,
             "$.p.req.policies[0]: \"geoIP().Country.IsoCode == 'ES'\": at offset 0: geoIP() is not supported: needs KrakenD's GeoIP database, which tollgate does not have"),
            ("policies", json!({"jwt": {"policies": ["JWT.role == 'a'"]}}), Level::Backend,
             "$.p.jwt: jwt policies apply at endpoint level only (as in KrakenD)"),
            ("policies", json!({"req": {"policies": []}}), Level::Endpoint, "$.p.req.policies: needs at least one policy"),
            ("policies", json!({"debug": true}), Level::Endpoint, "$.p: needs req, resp or jwt policies"),
            ("policies", json!({"req": {"policies": ["true"], "error": {"status": 200}}}), Level::Endpoint,
             "$.p.req.error.status: must be an HTTP error status (400-599)"),
        ];
        for (ns, v, level, want) in cases {
            assert_eq!(compile(ns, v, level).unwrap_err(), want);
        }
    }
}
