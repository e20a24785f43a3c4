//! The cost namespaces, compiled: `governance/processors` (service: quotas, their rules and
//! limits), `governance/quota` (service default or endpoint: which quota, tiers, weight) and
//! tollgate's `ai/usage` (service: currency, prices, usage headers, tenant labels).

use super::{
    Limit, Price, QuotaAttach, QuotaDef, Report, Rule, Strategy, Tier, UsageConfig, Weight,
};
use crate::config::reader::{ConfigError, Obj, Result};
use crate::support::calendar::Unit;
use serde_json::Value;
use std::collections::BTreeMap;

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
    let tiers = tiers_v
        .iter()
        .enumerate()
        .map(|(i, t)| tier(t, &format!("{tbase}[{i}]"), quotas, quota, qname))
        .collect::<Result<Vec<_>>>()?;
    let (weight, report) = weight(&mut o)?;
    let out = QuotaAttach {
        quota,
        tier_key,
        tiers,
        weight,
        report,
        on_unmatched_tier_allow: o.opt_bool("on_unmatched_tier_allow")?.unwrap_or(false),
        disable_quota_headers: o.opt_bool("disable_quota_headers")?.unwrap_or(false),
        reserve: o.opt_bool("reserve")?.unwrap_or(false),
    };
    o.finish(&[])?;
    Ok(out)
}

/// One tier of `governance/quota.tiers`: its rule (of quota `quota`), value and strategy.
fn tier(v: &Value, path: &str, quotas: &[QuotaDef], quota: usize, qname: &str) -> Result<Tier> {
    let mut t = Obj::new(v, path)?;
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
    Ok(Tier {
        rule,
        value,
        strategy,
    })
}

/// `weight_key` and `weight_strategy`: what one call costs against the budget. tollgate's
/// names (tokens, cost) are counted by the gateway; any other key is KrakenD's: the number the
/// backend reports in that response header (`header`) or field of its JSON answer (`body`,
/// the default; a dot path). On an `ai/llm` endpoint the field `usage` is the total tokens
/// (KrakenD's unified answer), see [`for_llm`].
fn weight(o: &mut Obj<'_>) -> Result<(Weight, Option<Report>)> {
    let header = match o.opt_str("weight_strategy")? {
        None | Some("body") => false,
        Some("header") => true,
        Some(s) => {
            return Err(ConfigError::new(
                o.at("weight_strategy"),
                format!("\"{s}\" is not one of body, header"),
            ))
        }
    };
    let Some(key) = o.opt_str("weight_key")? else {
        return Ok((Weight::Requests, None));
    };
    let counted = match key {
        "usage.total_tokens" | "total_tokens" | "tokens" => Some(Weight::TotalTokens),
        "usage.prompt_tokens" | "prompt_tokens" => Some(Weight::PromptTokens),
        "usage.completion_tokens" | "completion_tokens" => Some(Weight::CompletionTokens),
        "cost" => Some(Weight::Cost),
        _ => None,
    };
    if key.trim().is_empty() || key.split('.').any(str::is_empty) {
        return Err(ConfigError::new(
            o.at("weight_key"),
            "is not a field or header name",
        ));
    }
    Ok(match (counted, header) {
        (_, true) => (
            Weight::Reported,
            Some(Report::Header(key.to_ascii_lowercase())),
        ),
        (Some(Weight::Cost), false) => (Weight::Cost, None),
        // A token count is the gateway's on an ai/llm endpoint, the field on a plain one.
        (Some(w), false) => (w, Some(Report::Field(key.to_string()))),
        (None, false) => (Weight::Reported, Some(Report::Field(key.to_string()))),
    })
}

/// A quota on a plain endpoint: every field named by `weight_key` is the backend's (KrakenD's
/// meaning), tollgate's token names included (there is no LLM usage to count).
pub fn for_plain(a: &QuotaAttach) -> QuotaAttach {
    match &a.report {
        Some(Report::Field(_)) => QuotaAttach {
            weight: Weight::Reported,
            ..a.clone()
        },
        _ => a.clone(),
    }
}

/// A quota on an `ai/llm` endpoint: the answer is the gateway's translation, so a field the
/// backend reports is read from the usage the gateway counts: KrakenD's `usage` is the total
/// tokens; another field is refused (the client's answer has no such field). `path`: the
/// quota's JSON path.
pub fn for_llm(a: &QuotaAttach, path: &str) -> Result<QuotaAttach> {
    match &a.report {
        Some(Report::Field(f)) if f == "usage" => Ok(QuotaAttach {
            weight: Weight::TotalTokens,
            report: None,
            ..a.clone()
        }),
        Some(Report::Field(_)) if a.weight != Weight::Reported => Ok(QuotaAttach {
            report: None,
            ..a.clone()
        }),
        Some(Report::Field(f)) => Err(ConfigError::new(
            format!("{path}.weight_key"),
            format!("\"{f}\": an ai/llm answer is translated by the gateway and has no such field; use usage (KrakenD's total tokens), usage.prompt_tokens, usage.completion_tokens or cost"),
        )),
        _ => Ok(a.clone()),
    }
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
