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

pub mod store;

use crate::config::reader::{ConfigError, Obj, Result};
use crate::host::Host;
use crate::providers::model::Usage;
use crate::refusal::{ErrorKind, Refusal};
use crate::support::calendar::Unit;
use serde_json::Value;
use std::collections::BTreeMap;

/// One limit of a rule: `amount` per `unit`.
#[derive(Debug, Clone, PartialEq)]
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
    /// `None`: `tier_value_as: "*"`, matches any request.
    pub value: Option<String>,
    pub strategy: Strategy,
}

/// What one call costs against the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// One per request (KrakenD's default without `weight_key`).
    Requests,
    TotalTokens,
    PromptTokens,
    CompletionTokens,
    /// Money, in millionths of the `ai/usage` currency (limits are in currency units).
    Cost,
}

/// `governance/quota`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaAttach {
    pub quota: usize,
    /// Lowercase header naming the tier.
    pub tier_key: String,
    pub tiers: Vec<Tier>,
    pub weight: Weight,
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

/// Reads service-level `governance/processors`.
pub fn processors(v: &Value, path: &str) -> Result<Vec<QuotaDef>> {
    let mut o = Obj::new(v, path)?;
    let list = o
        .opt_array("quotas")?
        .ok_or_else(|| ConfigError::new(o.at("quotas"), "is required"))?;
    let base = o.at("quotas");
    o.finish(&[])?;
    let mut out: Vec<QuotaDef> = Vec::with_capacity(list.len());
    for (i, q) in list.iter().enumerate() {
        let mut q = Obj::new(q, &format!("{base}[{i}]"))?;
        let name = q.str("name")?.to_string();
        if out.iter().any(|d| d.name == name) {
            return Err(ConfigError::new(
                q.at("name"),
                format!("quota \"{name}\" is declared twice"),
            ));
        }
        // Redis settings of KrakenD: tollgate keeps counters in Envoy shared data.
        q.opt_str("connection_name")?;
        let hash_keys = q.opt_bool("hash_keys")?.unwrap_or(false);
        let rules_v = q
            .opt_array("rules")?
            .ok_or_else(|| ConfigError::new(q.at("rules"), "is required"))?;
        let rbase = q.at("rules");
        let mut rules = Vec::with_capacity(rules_v.len());
        for (j, r) in rules_v.iter().enumerate() {
            let mut r = Obj::new(r, &format!("{rbase}[{j}]"))?;
            let name = r.str("name")?.to_string();
            let limits_v = r
                .opt_array("limits")?
                .ok_or_else(|| ConfigError::new(r.at("limits"), "is required"))?;
            let lbase = r.at("limits");
            let mut limits = Vec::with_capacity(limits_v.len());
            for (k, l) in limits_v.iter().enumerate() {
                let mut l = Obj::new(l, &format!("{lbase}[{k}]"))?;
                let amount = l
                    .opt_f64("amount")?
                    .ok_or_else(|| ConfigError::new(l.at("amount"), "is required"))?;
                if amount < 0.0 {
                    return Err(ConfigError::new(l.at("amount"), "must be >= 0"));
                }
                let unit_s = l.str("unit")?;
                let unit = Unit::parse(unit_s).ok_or_else(|| {
                    ConfigError::new(
                        l.at("unit"),
                        format!("\"{unit_s}\" is not one of second, minute, hour, day, week, month, year"),
                    )
                })?;
                l.finish(&[])?;
                limits.push(Limit { amount, unit });
            }
            r.finish(&[])?;
            rules.push(Rule { name, limits });
        }
        q.finish(&[
            "on_failure_allow",
            "on_failure_backoff_strategy",
            "on_failure_max_retries",
            "rejecter_cache",
            "deny_queue_flush_interval",
            "deny_queue_flush_threshold",
            "deny_queue_size",
        ])?;
        out.push(QuotaDef {
            name,
            rules,
            hash_keys,
        });
    }
    Ok(out)
}

/// Reads a `governance/quota` against the declared processors.
pub fn attach(v: &Value, path: &str, quotas: &[QuotaDef]) -> Result<QuotaAttach> {
    let mut o = Obj::new(v, path)?;
    let qname = o.str("quota_name")?;
    let quota = quotas.iter().position(|q| q.name == qname).ok_or_else(|| {
        ConfigError::new(
            o.at("quota_name"),
            format!("quota \"{qname}\" is not declared in the service's governance/processors"),
        )
    })?;
    let tier_key = o.str("tier_key")?.to_ascii_lowercase();
    let tiers_v = o
        .opt_array("tiers")?
        .ok_or_else(|| ConfigError::new(o.at("tiers"), "is required"))?;
    let tbase = o.at("tiers");
    let mut tiers = Vec::with_capacity(tiers_v.len());
    for (i, t) in tiers_v.iter().enumerate() {
        let mut t = Obj::new(t, &format!("{tbase}[{i}]"))?;
        let rule_name = t.str("rule_name")?;
        let rule = quotas
            .get(quota)
            .and_then(|q| q.rules.iter().position(|r| r.name == rule_name))
            .ok_or_else(|| {
                ConfigError::new(
                    t.at("rule_name"),
                    format!("rule \"{rule_name}\" is not a rule of quota \"{qname}\""),
                )
            })?;
        let value = match t.opt_str("tier_value_as")?.unwrap_or("literal") {
            "literal" => Some(t.str("tier_value")?.to_string()),
            "*" => {
                t.opt_str("tier_value")?;
                None
            }
            "policy" => {
                return Err(ConfigError::new(
                    t.at("tier_value_as"),
                    "CEL policies are not supported by tollgate; use literal or *",
                ))
            }
            other => {
                return Err(ConfigError::new(
                    t.at("tier_value_as"),
                    format!("\"{other}\" is not one of literal, policy, *"),
                ))
            }
        };
        let strategy = match t.opt_str("strategy")?.unwrap_or("header") {
            "header" => Strategy::Header(t.str("key")?.to_ascii_lowercase()),
            "param" => Strategy::Param(t.str("key")?.to_string()),
            "ip" => {
                t.opt_str("key")?;
                Strategy::Ip
            }
            other => {
                return Err(ConfigError::new(
                    t.at("strategy"),
                    format!("\"{other}\" is not one of header, ip, param"),
                ))
            }
        };
        t.finish(&["comment"])?;
        tiers.push(Tier {
            rule,
            value,
            strategy,
        });
    }
    let weight = match o.opt_str("weight_key")? {
        None => Weight::Requests,
        Some("usage.total_tokens" | "total_tokens" | "tokens") => Weight::TotalTokens,
        Some("usage.prompt_tokens" | "prompt_tokens") => Weight::PromptTokens,
        Some("usage.completion_tokens" | "completion_tokens") => Weight::CompletionTokens,
        Some("cost") => Weight::Cost,
        Some(other) => {
            return Err(ConfigError::new(
                o.at("weight_key"),
                format!("\"{other}\" is not supported: use usage.total_tokens, usage.prompt_tokens, usage.completion_tokens or cost"),
            ))
        }
    };
    if let Some(s) = o.opt_str("weight_strategy")? {
        if s != "body" && s != "header" {
            return Err(ConfigError::new(
                o.at("weight_strategy"),
                format!("\"{s}\" is not one of body, header"),
            ));
        }
    }
    let out = QuotaAttach {
        quota,
        tier_key,
        tiers,
        weight,
        on_unmatched_tier_allow: o.opt_bool("on_unmatched_tier_allow")?.unwrap_or(false),
        disable_quota_headers: o.opt_bool("disable_quota_headers")?.unwrap_or(false),
        reserve: o.opt_bool("reserve")?.unwrap_or(false),
    };
    o.finish(&[])?;
    Ok(out)
}

/// Reads `ai/usage`.
pub fn usage_config(v: &Value, path: &str) -> Result<UsageConfig> {
    let mut o = Obj::new(v, path)?;
    let mut out = UsageConfig {
        currency: o.opt_str("currency")?.unwrap_or("USD").to_string(),
        response_headers: o.opt_bool("response_headers")?.unwrap_or(false),
        tenant_header: o.opt_str("tenant_header")?.map(str::to_ascii_lowercase),
        max_tenant_labels: o.opt_u64("max_tenant_labels")?,
        prices: BTreeMap::new(),
    };
    if let Some(mut prices) = o.opt_obj("prices")? {
        let models: Vec<&str> = prices.unread().map(|(k, _)| k).collect();
        for model in models {
            let mut p = prices
                .opt_obj(model)?
                .ok_or_else(|| ConfigError::new(prices.at(model), "is required"))?;
            let mut get = |key: &str| -> Result<f64> {
                match p.opt_f64(key)? {
                    Some(x) if x < 0.0 => Err(ConfigError::new(p.at(key), "must be >= 0")),
                    Some(x) => Ok(x),
                    None => Ok(f64::NAN),
                }
            };
            let input = get("input")?;
            let output = get("output")?;
            let cached = get("cached_input")?;
            let cache_write = get("cache_write")?;
            if input.is_nan() || output.is_nan() {
                return Err(ConfigError::new(
                    p.path(),
                    "needs input and output prices (per million tokens)",
                ));
            }
            p.finish(&[])?;
            out.prices.insert(
                model.to_string(),
                Price {
                    input,
                    output,
                    cached_input: if cached.is_nan() { input } else { cached },
                    cache_write: if cache_write.is_nan() {
                        input
                    } else {
                        cache_write
                    },
                },
            );
        }
        prices.finish(&[])?;
    }
    o.finish(&[])?;
    Ok(out)
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
#[derive(Debug, Clone, PartialEq)]
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
        if let Some(v) = &t.value {
            if tier_value.as_deref() != Some(v.as_str()) {
                continue;
            }
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

/// A rough token estimate from text bytes (about four bytes per token), for calls whose
/// provider never reported usage (a stream cut short).
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// What one image counts in estimates, whatever its encoded size: about the most a provider
/// charges for one (Anthropic: up to ~1600 tokens at its largest size; OpenAI high detail:
/// 1105 for six tiles; Gemini: 258 per tile).
pub const IMAGE_TOKENS: u64 = 1_600;

/// A token estimate for a request as sent upstream, for calls whose usage never comes: every
/// byte of its body (messages, system, tools and their schemas, tool calls and results, any
/// other field) at four bytes per token, except `images`, which count [`IMAGE_TOKENS`] each
/// instead of their `image_bytes` (base64 data or URLs in the body).
pub fn estimate_request_tokens(body_bytes: usize, images: usize, image_bytes: usize) -> u64 {
    estimate_tokens(body_bytes.saturating_sub(image_bytes))
        .saturating_add(IMAGE_TOKENS.saturating_mul(images as u64))
}

#[cfg(test)]
mod tests;
