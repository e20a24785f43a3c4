//! `qos/ratelimit/tiered` (KrakenD EE, service or endpoint): rate limits per plan. The plan is
//! the value of the `tier_key` header; the tiers are tried in order and the first that matches
//! applies its `ratelimit` (the fields of `qos/ratelimit/router`, with their own buckets per
//! tier). `tier_value_as`: `literal` (the header equals `tier_value`) or `*` (every request,
//! KrakenD's catch-all, put last). A request no tier matches is not limited by this namespace
//! (KrakenD's behaviour: add a `*` tier to limit everyone else).
//!
//! The header is read after authentication has written its own copy: with `auth/api-keys`
//! `propagate_role` or `auth/validator` `propagate_claims` naming it, the plan is the key's
//! role or the token's claim and a client's own header is gone; otherwise the client states
//! its plan (KrakenD's docs: "use propagate functions"), which `tollgate check` warns about.
//!
//! `tier_value_as: policy` (a CEL expression on the value) is refused at configuration until
//! CEL is evaluated in the filter: [`TierMatch`] is where its variant goes.

use super::ratelimit::{self, RateLimit};
use crate::config::reader::{ConfigError, Obj, Result};
use crate::host::Host;
use crate::refusal::Refusal;
use crate::routing::Params;
use serde_json::Value;

/// A compiled `qos/ratelimit/tiered`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiered {
    /// The plan header (lowercase).
    pub tier_key: String,
    pub tiers: Vec<Tier>,
}

/// How a tier recognises its requests.
#[derive(Debug, Clone, PartialEq)]
pub enum TierMatch {
    /// `literal`: the header's value is exactly this (case-sensitive, as KrakenD compares).
    Literal(String),
    /// `*`: every request.
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub matches: TierMatch,
    /// `None`: the tier's rates are 0, KrakenD's "no limit" (an unlimited plan).
    pub limit: Option<RateLimit>,
}

/// Reads `qos/ratelimit/tiered` at `path`; `id` makes each tier's shared-data keys its own.
pub fn compile(v: &Value, path: &str, id: &str) -> Result<Tiered> {
    let mut o = Obj::new(v, path)?;
    let tier_key = o.str("tier_key")?.trim().to_ascii_lowercase();
    if tier_key.is_empty() {
        return Err(ConfigError::new(o.at("tier_key"), "must name a header"));
    }
    let list = o
        .opt_array("tiers")?
        .ok_or_else(|| ConfigError::new(o.at("tiers"), "is required"))?;
    let base = o.at("tiers");
    o.finish(&[])?;
    let tiers = list
        .iter()
        .enumerate()
        .map(|(i, t)| tier(t, &format!("{base}[{i}]"), &format!("{id}.t{i}")))
        .collect::<Result<Vec<_>>>()?;
    if tiers.is_empty() {
        return Err(ConfigError::new(base, "needs at least one tier"));
    }
    Ok(Tiered { tier_key, tiers })
}

fn tier(v: &Value, path: &str, id: &str) -> Result<Tier> {
    let mut t = Obj::new(v, path)?;
    let matches =
        match t.opt_str("tier_value_as")?.unwrap_or("literal") {
            "literal" => TierMatch::Literal(t.str("tier_value")?.to_string()),
            "*" => {
                t.opt_str("tier_value")?;
                TierMatch::Any
            }
            "policy" => return Err(ConfigError::new(
                t.at("tier_value_as"),
                "CEL policies are not evaluated by tollgate yet (pending: CEL); use literal or *",
            )),
            other => {
                return Err(ConfigError::new(
                    t.at("tier_value_as"),
                    format!("\"{other}\" is not one of literal, policy, *"),
                ))
            }
        };
    if t.get("ratelimit_redis").is_some() {
        return Err(ConfigError::new(
            t.at("ratelimit_redis"),
            "the Redis tiered rate limit is not supported by tollgate; use ratelimit (per Envoy)",
        ));
    }
    let rl = t.required("ratelimit")?;
    let limit = ratelimit::compile_router(rl, &t.at("ratelimit"), id)?;
    if limit.as_ref().is_some_and(|l| l.tokens.is_some()) {
        return Err(ConfigError::new(
            format!("{}.client_max_tokens", t.at("ratelimit")),
            "token limits are not supported in tiers (use qos/ratelimit/router)",
        ));
    }
    t.finish(&[])?;
    Ok(Tier { matches, limit })
}

impl Tiered {
    /// The tier of a request whose plan header is `value`: the first that matches.
    pub fn pick(&self, value: Option<&str>) -> Option<&Tier> {
        self.tiers.iter().find(|t| match &t.matches {
            TierMatch::Any => true,
            TierMatch::Literal(want) => value == Some(want.as_str()),
        })
    }

    /// Every rate limit of the tiers (their shared-data keys are created at configure time).
    pub fn limits(&self) -> impl Iterator<Item = &RateLimit> {
        self.tiers.iter().filter_map(|t| t.limit.as_ref())
    }
}

/// Request headers: the limit of the request's tier (429 for its client limit, 503 for its
/// tier-wide `max_rate`), none when no tier matches or the tier is unlimited.
pub fn check<H: Host + ?Sized>(h: &mut H, t: &Tiered, params: &Params) -> Option<Refusal> {
    let value = h.request_header(&t.tier_key);
    let rl = t.pick(value.as_deref())?.limit.as_ref()?;
    let client = rl.client_key(h, params);
    ratelimit::check(h, rl, client.as_deref())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;
    use serde_json::json;

    /// KrakenD's example (tiered-rate-limit page, krakend/examples 9.rate-limits-per-tier),
    /// with the silver tier as a literal and a catch-all.
    fn plans() -> Tiered {
        let v = json!({"tier_key": "X-Plan", "tiers": [
            {"tier_value": "gold", "tier_value_as": "literal", "ratelimit":
                {"client_max_rate": 3, "every": "10s", "strategy": "header", "key": "Authorization"}},
            {"tier_value": "silver", "ratelimit": {"client_max_rate": 1, "every": "10s", "strategy": "header", "key": "Authorization"}},
            {"tier_value": "free", "ratelimit": {"max_rate": 0}},
            {"tier_value_as": "*", "ratelimit": {"max_rate": 1, "every": "1m"}}
        ]});
        compile(&v, "$.t", "ep").unwrap()
    }

    fn request(h: &mut MockHost, t: &Tiered, plan: Option<&str>, key: &str) -> Option<u16> {
        h.request_headers = vec![("authorization".into(), key.into())];
        if let Some(p) = plan {
            h.request_headers.push(("x-plan".into(), p.into()));
        }
        check(h, t, &Vec::new()).map(|r| r.status)
    }

    #[test]
    fn each_plan_has_its_own_limit_and_buckets() {
        let t = plans();
        let mut h = MockHost::request("GET", "/x", &[]);
        for rl in t.limits() {
            ratelimit::init_shared(&mut h, rl);
        }
        h.now_ms = Some(1_000);
        // gold: 3 per 10 s per key; silver: 1; the buckets of one plan are not the other's.
        for _ in 0..3 {
            assert_eq!(request(&mut h, &t, Some("gold"), "Bearer a"), None);
        }
        assert_eq!(request(&mut h, &t, Some("gold"), "Bearer a"), Some(429));
        assert_eq!(request(&mut h, &t, Some("gold"), "Bearer b"), None);
        assert_eq!(request(&mut h, &t, Some("silver"), "Bearer a"), None);
        assert_eq!(request(&mut h, &t, Some("silver"), "Bearer a"), Some(429));
        // free: rates of 0, no limit.
        for _ in 0..10 {
            assert_eq!(request(&mut h, &t, Some("free"), "Bearer a"), None);
        }
        // Everyone else (an unknown plan, no plan, another case): the catch-all's one request
        // per minute for all of them together (503: a tier-wide max_rate).
        assert_eq!(request(&mut h, &t, Some("GOLD"), "Bearer a"), None);
        assert_eq!(request(&mut h, &t, None, "Bearer c"), Some(503));
        assert_eq!(request(&mut h, &t, Some("platinum"), "Bearer d"), Some(503));
        h.now_ms = Some(11_001);
        assert_eq!(request(&mut h, &t, Some("gold"), "Bearer a"), None);
    }

    #[test]
    fn without_a_catch_all_an_unmatched_request_is_not_limited() {
        let v = json!({"tier_key": "x-plan", "tiers": [{"tier_value": "gold", "ratelimit": {"max_rate": 1}}]});
        let t = compile(&v, "$.t", "ep").unwrap();
        let mut h = MockHost::request("GET", "/x", &[]);
        h.now_ms = Some(1_000);
        for _ in 0..3 {
            assert_eq!(request(&mut h, &t, Some("silver"), "k"), None);
        }
        assert_eq!(request(&mut h, &t, Some("gold"), "k"), None);
        assert_eq!(request(&mut h, &t, Some("gold"), "k"), Some(503));
    }

    #[test]
    fn config_errors_name_the_path() {
        let err = |v: Value| compile(&v, "$.t", "ep").unwrap_err().to_string();
        let rl = json!({"max_rate": 1});
        let cases = [
            (json!({"tiers": []}), "$.t.tier_key: is required"),
            (json!({"tier_key": "x"}), "$.t.tiers: is required"),
            (json!({"tier_key": "x", "tiers": []}), "$.t.tiers: needs at least one tier"),
            (json!({"tier_key": "x", "tiers": [{"tier_value": "a"}]}), "$.t.tiers[0].ratelimit: is required"),
            (json!({"tier_key": "x", "tiers": [{"ratelimit": rl}]}), "$.t.tiers[0].tier_value: is required"),
            (json!({"tier_key": "x", "tiers": [{"tier_value": "value.matches('silver.*')", "tier_value_as": "policy", "ratelimit": rl}]}),
             "$.t.tiers[0].tier_value_as: CEL policies are not evaluated by tollgate yet (pending: CEL); use literal or *"),
            (json!({"tier_key": "x", "tiers": [{"tier_value": "a", "tier_value_as": "regex", "ratelimit": rl}]}),
             "$.t.tiers[0].tier_value_as: \"regex\" is not one of literal, policy, *"),
            (json!({"tier_key": "x", "tiers": [{"tier_value": "a", "ratelimit_redis": {}}]}),
             "$.t.tiers[0].ratelimit_redis: the Redis tiered rate limit is not supported by tollgate; use ratelimit (per Envoy)"),
            (json!({"tier_key": "x", "tiers": [{"tier_value": "a", "ratelimit": {"max_rate": 1, "typo": 1}}]}),
             "$.t.tiers[0].ratelimit.typo: unknown field"),
            (json!({"tier_key": "x", "tiers": [{"tier_value": "a", "ratelimit": {"client_max_tokens": 10}}]}),
             "$.t.tiers[0].ratelimit.client_max_tokens: token limits are not supported in tiers (use qos/ratelimit/router)"),
        ];
        for (v, want) in cases {
            assert_eq!(err(v), want);
        }
    }
}
