//! Cost control: token usage accounting, prices, and budgets (KrakenD quotas) over time
//! windows, kept in Envoy shared data.
//!
//! Config (KrakenD Enterprise shapes): service `governance/processors` declares quotas
//! with rules and limits; `governance/quota` (service default or per endpoint) attaches a
//! quota, picks the rule by tier and the caller by header/ip/param, and weighs each call
//! (`weight_key`). tollgate adds the service namespace `ai/usage` (currency, price table,
//! usage response headers) and two `governance/quota` fields: `weight_key` values that
//! name usage (`usage.total_tokens`, `usage.prompt_tokens`, `usage.completion_tokens`,
//! `cost`), and `reserve` (pre-flight reservation from `max_tokens`).

pub mod config;
pub mod held;
pub mod store;

pub use config::{attach, for_llm, for_plain, processors, usage_config};

use crate::host::Host;
pub use crate::limits::client::Store;
use crate::providers::model::Usage;
use crate::refusal::{ErrorKind, Refusal};
use crate::support::calendar::Unit;
use std::collections::BTreeMap;

/// One limit of a rule: `amount` per `unit`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limit {
    pub amount: f64,
    pub unit: Unit,
}

/// A rule (plan) of a quota.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub limits: Vec<Limit>,
}

/// A quota processor (`governance/processors.quotas[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaDef {
    pub name: String,
    pub rules: Vec<Rule>,
    pub hash_keys: bool,
    /// `connection_name`: Redis (through the limits service) or each Envoy's own store.
    pub store: Store,
    /// `on_failure_allow`: a call goes on when the limits service fails (counted).
    pub allow_on_failure: bool,
}

/// Where the caller's identity comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Header(String),
    Ip,
    Param(String),
}

/// One tier of `governance/quota`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub rule: usize,
    pub value: TierValue,
    pub strategy: Strategy,
}

/// How a tier matches the value of the tier header (`tier_value` read as `tier_value_as`),
/// for `governance/quota` tiers and `qos/ratelimit/tiered` alike ([`config::tier_value`]).
#[derive(Debug, Clone, PartialEq)]
pub enum TierValue {
    /// `literal`: exactly this value.
    Literal(String),
    /// `policy`: a CEL policy over the value, bound as `value`
    /// (`value.matches('User-[a-zA-Z]+')`); a request without the header does not match.
    Policy(crate::cel::Expr),
    /// `*`: any request.
    Any,
}

impl TierValue {
    /// Whether a request whose tier header has `value` (None: absent) is in this tier.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match self {
            TierValue::Any => true,
            TierValue::Literal(v) => value == Some(v.as_str()),
            TierValue::Policy(p) => value.is_some_and(|v| {
                let mut act = crate::cel::Activation::new();
                act.bind(crate::cel::TIER_VAR, crate::cel::Value::str(v));
                p.program().check(&act)
            }),
        }
    }
}

/// What one call costs against the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Weight {
    /// One per request (KrakenD's default without `weight_key`).
    Requests,
    TotalTokens,
    PromptTokens,
    CompletionTokens,
    /// Money, in millionths of the `ai/usage` currency (limits are in currency units).
    Cost,
    /// The number the backend reports in its answer ([`Report`]; KrakenD's `weight_key`).
    Reported,
}

/// Where the backend reports what a call weighs (KrakenD's `weight_key` with
/// `weight_strategy`): a response header, or a field of its JSON answer (a dot path).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Report {
    /// Lowercase header name.
    Header(String),
    Field(String),
}

impl Report {
    /// The weight a JSON answer reports in the field: a whole number or a numeric string
    /// (KrakenD's AI templates render `usage` as a string); fractions rounded down, anything
    /// else (absent, negative, not a number) None.
    pub fn field_value(path: &str, body: &[u8]) -> Option<u64> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let mut at = &v;
        for part in path.split('.') {
            at = at.get(part)?;
        }
        reported_number(at)
    }

    /// The weight a header value reports (trimmed whole number, or fraction rounded down).
    pub fn header_value(v: &str) -> Option<u64> {
        reported_number(&serde_json::Value::String(v.to_string()))
    }
}

fn reported_number(v: &serde_json::Value) -> Option<u64> {
    let f = match v {
        serde_json::Value::Number(n) => return n.as_u64().or_else(|| whole(n.as_f64()?)),
        serde_json::Value::String(s) => s.trim(),
        _ => return None,
    };
    f.parse::<u64>()
        .ok()
        .or_else(|| whole(f.parse::<f64>().ok()?))
}

/// A finite, non-negative float rounded down (saturating).
fn whole(f: f64) -> Option<u64> {
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

/// `governance/quota`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaAttach {
    pub quota: usize,
    /// Lowercase header naming the tier.
    pub tier_key: String,
    pub tiers: Vec<Tier>,
    pub weight: Weight,
    /// Set with [`Weight::Reported`].
    pub report: Option<Report>,
    pub on_unmatched_tier_allow: bool,
    pub disable_quota_headers: bool,
    /// Reserve `max_tokens` + the prompt estimate before the call (tollgate).
    pub reserve: bool,
}

/// Prices per million tokens; cache reads and writes default to the input price.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cached_input: f64,
    /// Prompt tokens written to the provider's cache (Anthropic charges 1.25× or 2× input).
    pub cache_write: f64,
}

/// `ai/usage` (tollgate, service level).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageConfig {
    pub currency: String,
    pub prices: BTreeMap<String, Price>,
    /// Adds `x-tollgate-*` usage headers to non-streaming LLM responses.
    pub response_headers: bool,
    /// Header naming the tenant for metrics when no quota identifies the caller.
    pub tenant_header: Option<String>,
    /// Distinct tenants with a metric label of their own (per Envoy; the rest are
    /// `other`). None: [`crate::observe::DEFAULT_TENANT_LABELS`].
    pub max_tenant_labels: Option<u64>,
}

impl UsageConfig {
    /// Cost of a call in millionths of the currency (prices are per million tokens, so
    /// tokens × price is exactly millionths). `None` when the model has no price.
    pub fn cost_micros(&self, model: &str, u: &Usage) -> Option<u64> {
        let p = self.prices.get(model)?;
        let cached = u.cached_tokens.min(u.prompt_tokens);
        let written = u.cache_write_tokens.min(u.prompt_tokens - cached);
        let micros = (u.prompt_tokens - cached - written) as f64 * p.input
            + cached as f64 * p.cached_input
            + written as f64 * p.cache_write
            + u.completion_tokens as f64 * p.output;
        Some(micros.round() as u64)
    }
}

/// Cost governance of the whole gateway.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CostConfig {
    pub quotas: Vec<QuotaDef>,
    /// Service-level `governance/quota`: applies to endpoints without their own.
    pub default_attach: Option<QuotaAttach>,
    pub usage: UsageConfig,
}

/// Headers that carry client credentials: an identity read from one is a secret.
pub fn is_credential_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "x-api-key"
            | "api-key"
            | "x-goog-api-key"
            | "proxy-authorization"
            | "cookie"
    )
}

/// A stable, non-reversible stand-in for a secret identity (`key-<16 hex>`).
pub fn hashed_identity(identity: &str) -> String {
    format!(
        "key-{:016x}",
        crate::support::hash::fnv1a64(identity.as_bytes())
    )
}

/// The caller identity in the value of header `name`, as budgets, rate limits and metrics
/// tenants all see it: trimmed; for a credential header, the credential alone (the auth
/// scheme dropped, whatever its case: `Bearer K`, `bearer  K` and `K` are one client), hashed.
/// Empty when the header holds nothing (the same as no header).
pub fn header_identity(name: &str, value: &str) -> String {
    let value = value.trim();
    if !is_credential_header(name) {
        return value.to_string();
    }
    let credential = match name {
        "cookie" => value, // `a=1; b=2`: no scheme, and its spaces separate cookies
        _ => without_scheme(value),
    };
    if credential.is_empty() {
        return String::new();
    }
    hashed_identity(credential)
}

/// `Scheme credentials` (RFC 9110 §11.4) → `credentials`; a value without a scheme as is.
fn without_scheme(value: &str) -> &str {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    match value.split_once([' ', '\t']) {
        Some((scheme, rest)) if scheme.bytes().all(tchar) => rest.trim(),
        _ => value,
    }
}

/// The quota a request is charged against: resolved from its headers at request time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Charge {
    /// Counter key prefix `quota|rule|identity`.
    pub key: String,
    pub limits: Vec<Limit>,
    pub weight: Weight,
    pub headers: bool,
    pub reserve: bool,
    /// The caller's identity (tenant), as configured (hashed when `hash_keys`).
    pub identity: String,
    /// Amount reserved at request time, given back when the real usage is charged.
    pub reserved: u64,
    /// The quota and rule names (the fleet store's descriptors).
    pub quota: String,
    pub rule: String,
    /// Where the counters are: this Envoy's shared data, or Redis through the limits service.
    pub store: Store,
    /// `on_failure_allow` of the quota (fleet store only).
    pub allow_on_failure: bool,
    /// Where the backend reports the weight ([`Weight::Reported`]), and what it reported.
    pub report: Option<Report>,
    pub reported: Option<u64>,
}

/// Why a request cannot be charged.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaError {
    /// No tier matches and `on_unmatched_tier_allow` is false (400).
    UnmatchedTier(String),
    /// A limit is reached (429).
    Exceeded {
        limit: f64,
        unit: Unit,
        retry_after: u64,
    },
}

impl QuotaError {
    /// The answer: 400 when no tier matches; 429 with `Retry-After` when a limit is spent,
    /// and the quota headers unless `quiet` (`disable_quota_headers`).
    pub fn refusal(&self, quiet: bool) -> Refusal {
        match self {
            QuotaError::UnmatchedTier(msg) => Refusal::new(ErrorKind::InvalidRequest, msg),
            QuotaError::Exceeded {
                limit,
                unit,
                retry_after,
            } => {
                let msg = format!(
                    "quota exceeded: the limit of {limit} per {} is spent",
                    unit.name()
                );
                let r = Refusal::new(ErrorKind::QuotaExceeded, msg).retry_after(*retry_after);
                if quiet {
                    return r;
                }
                r.header("x-quota-limit", format!("{limit}"))
                    .header("x-quota-remaining", "0")
            }
        }
    }
}

/// Picks the tier and identity for a request.
pub fn resolve(
    a: &QuotaAttach,
    quotas: &[QuotaDef],
    header: &dyn Fn(&str) -> Option<String>,
    ip: Option<String>,
    param: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Option<Charge>, QuotaError> {
    let Some(q) = quotas.get(a.quota) else {
        return Ok(None);
    };
    let tier_value = header(&a.tier_key);
    for t in &a.tiers {
        if !t.value.matches(tier_value.as_deref()) {
            continue;
        }
        // A caller identified by its credential (Authorization, x-api-key, ...) is never
        // kept or shown as is: metrics labels and shared-data keys get a hash of it.
        let identity = match &t.strategy {
            Strategy::Header(name) => header(name).map(|v| header_identity(name, &v)),
            Strategy::Ip => ip.clone(),
            Strategy::Param(name) => param(name),
        };
        let Some(identity) = identity.filter(|i| !i.is_empty()) else {
            continue;
        };
        let Some(rule) = q.rules.get(t.rule) else {
            continue;
        };
        let secret = matches!(&t.strategy, Strategy::Header(n) if is_credential_header(n));
        let identity = if q.hash_keys && !secret {
            hashed_identity(&identity)
        } else {
            identity
        };
        return Ok(Some(Charge {
            key: store::counter_key(&[&q.name, &rule.name, &identity]),
            limits: rule.limits.clone(),
            weight: a.weight,
            headers: !a.disable_quota_headers,
            reserve: a.reserve,
            identity,
            reserved: 0,
            quota: q.name.clone(),
            rule: rule.name.clone(),
            store: q.store,
            allow_on_failure: q.allow_on_failure,
            report: a.report.clone(),
            reported: None,
        }));
    }
    if a.on_unmatched_tier_allow {
        return Ok(None);
    }
    Err(QuotaError::UnmatchedTier(format!(
        "no quota tier matches this request (tier header \"{}\" and the caller's identity are required)",
        a.tier_key
    )))
}

/// How much of a limit is used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    pub limit: f64,
    pub unit: Unit,
    pub used: u64,
}

impl Standing {
    /// Remaining in the limit's own units (currency for cost limits).
    pub fn remaining(&self, weight: Weight) -> f64 {
        (self.limit - scaled(self.used, weight)).max(0.0)
    }
}

/// Counter units → limit units (cost counters are millionths).
fn scaled(used: u64, weight: Weight) -> f64 {
    match weight {
        Weight::Cost => used as f64 / 1e6,
        _ => used as f64,
    }
}

/// A count as a counter delta, saturating at `i64::MAX`.
pub fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn counter(c: &Charge, unit: Unit) -> String {
    format!("{}|{}", c.key, unit.name())
}

impl Charge {
    /// Checks every limit before the call: `extra` is what this call would add now
    /// (a reservation). Refuses when any limit is spent.
    pub fn precheck<H: Host + ?Sized>(
        &self,
        h: &H,
        now: u64,
        extra: u64,
    ) -> std::result::Result<Vec<Standing>, QuotaError> {
        let mut out = Vec::with_capacity(self.limits.len());
        for l in &self.limits {
            let (start, end) = l.unit.window(now);
            let used = store::used(h, &counter(self, l.unit), start);
            let would = scaled(used.saturating_add(extra), self.weight);
            let spent = scaled(used, self.weight) >= l.amount;
            if spent || (extra > 0 && would > l.amount) {
                return Err(QuotaError::Exceeded {
                    limit: l.amount,
                    unit: l.unit,
                    retry_after: end.saturating_sub(now).max(1),
                });
            }
            out.push(Standing {
                limit: l.amount,
                unit: l.unit,
                used,
            });
        }
        Ok(out)
    }

    /// Adds `amount` (negative: give back) to every window of the rule.
    pub fn add<H: Host + ?Sized>(&self, h: &mut H, now: u64, amount: i64) -> Vec<Standing> {
        self.limits
            .iter()
            .map(|l| {
                let used = store::add(h, &counter(self, l.unit), l.unit.window(now), now, amount);
                Standing {
                    limit: l.amount,
                    unit: l.unit,
                    used,
                }
            })
            .collect()
    }

    /// Books a finished call: its `amount` replaces what was reserved (saturating).
    pub fn settle<H: Host + ?Sized>(&self, h: &mut H, now: u64, amount: u64) -> Vec<Standing> {
        self.add(h, now, signed(amount).saturating_sub(signed(self.reserved)))
    }

    /// The amount a finished call weighs.
    pub fn weigh(&self, usage: &Usage, cost_micros: Option<u64>) -> u64 {
        match self.weight {
            Weight::Requests => 1,
            Weight::TotalTokens => usage.total(),
            Weight::PromptTokens => usage.prompt_tokens,
            Weight::CompletionTokens => usage.completion_tokens,
            Weight::Cost => cost_micros.unwrap_or(0),
            // Nothing reported (a cut answer, no such field): the call weighs nothing.
            Weight::Reported => self.reported.unwrap_or(0),
        }
    }
}

/// The quota response headers for the tightest limit.
pub fn quota_headers(standings: &[Standing], weight: Weight) -> Option<(String, String)> {
    let tightest = standings.iter().min_by(|a, b| {
        a.remaining(weight)
            .partial_cmp(&b.remaining(weight))
            .unwrap_or(std::cmp::Ordering::Equal)
    })?;
    Some((number(tightest.limit), number(tightest.remaining(weight))))
}

fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.6}")
    }
}

#[cfg(test)]
mod tests;
