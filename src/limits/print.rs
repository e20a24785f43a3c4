//! `tollgate limits KRAKEND.json --print-config envoy-ratelimit|limitador`: the same limits as a
//! configuration of an official rate limit service, for the descriptors of [`scheme`], and the
//! list of what that engine does differently (printed on stderr).
//!
//! Both official engines count fixed windows of a fixed length and know neither KrakenD's token
//! buckets, calendar months nor tollgate's all-or-nothing reservations and refunds; the
//! differences are listed per limit, and in docs/limits.md.

use crate::governance::ratelimit::Bucket;
use crate::limits::config::LimitsConfig;
use crate::limits::scheme;
use crate::support::calendar::Unit;
use serde_json::{json, Value};

/// The engines `--print-config` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    EnvoyRatelimit,
    Limitador,
}

impl Engine {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "envoy-ratelimit" => Some(Engine::EnvoyRatelimit),
            "limitador" => Some(Engine::Limitador),
            _ => None,
        }
    }
}

/// What both engines lack, whatever the limits.
const COMMON: &[&str] = &[
    "no refunds: is_negative_hits is not read (a refund would count as a charge); run the filter with reserve off",
    "no all-or-nothing reservation: hits are counted even when the request is refused, and each descriptor on its own",
    "no x-tollgate-id: a retried charge counts twice",
];

/// The configuration (JSON, which is also YAML) and the differences, one per line.
pub fn render(cfg: &LimitsConfig, engine: Engine) -> (Value, Vec<String>) {
    let mut notes: Vec<String> = COMMON.iter().map(|s| s.to_string()).collect();
    match engine {
        Engine::EnvoyRatelimit => (envoy_ratelimit(cfg, &mut notes), notes),
        Engine::Limitador => (limitador(cfg, &mut notes), notes),
    }
}

/// A fixed window for a quota limit: (count, unit name for envoyproxy/ratelimit, seconds).
fn window(amount: u64, unit: Unit, what: &str, notes: &mut Vec<String>) -> (u64, u64) {
    let seconds = match unit {
        Unit::Second => 1,
        Unit::Minute => 60,
        Unit::Hour => 3_600,
        Unit::Day => 86_400,
        Unit::Week => 604_800,
        Unit::Month => 2_592_000,
        Unit::Year => 31_536_000,
    };
    match unit {
        Unit::Week => notes.push(format!(
            "{what}: a week of 7 days counted from the epoch (Thursday 00:00 UTC), not from Monday"
        )),
        Unit::Month => notes.push(format!(
            "{what}: a month of 30 days, not the calendar month"
        )),
        Unit::Year => notes.push(format!("{what}: a year of 365 days, not the calendar year")),
        _ => {}
    }
    (amount, seconds)
}

/// A token bucket as a fixed window: `rate` per `every` (capacity dropped).
fn bucket_window(b: &Bucket, what: &str, notes: &mut Vec<String>) -> (u64, u64) {
    notes.push(format!(
        "{what}: a fixed window of {} per {} ms instead of a token bucket (capacity {} dropped)",
        b.rate, b.every_ms, b.capacity
    ));
    (b.rate.ceil() as u64, b.every_ms.div_ceil(1000).max(1))
}

fn unit_name(seconds: u64) -> Option<&'static str> {
    Some(match seconds {
        1 => "second",
        60 => "minute",
        3_600 => "hour",
        86_400 => "day",
        604_800 => "week",
        2_592_000 => "month",
        31_536_000 => "year",
        _ => return None,
    })
}

/// envoyproxy/ratelimit: `requests_per_unit` (uint32) per whole unit.
fn rate_limit(count: u64, seconds: u64, what: &str, notes: &mut Vec<String>) -> Value {
    let (per_unit, unit) = match unit_name(seconds) {
        Some(u) => (count, u),
        None => {
            notes.push(format!(
                "{what}: {count} per {seconds} s becomes {} per second",
                count.div_ceil(seconds)
            ));
            (count.div_ceil(seconds), "second")
        }
    };
    let capped = u32::try_from(per_unit).unwrap_or(u32::MAX);
    if u64::from(capped) != per_unit {
        notes.push(format!(
            "{what}: {per_unit} is above requests_per_unit's 32 bits; capped at {capped}"
        ));
    }
    json!({"unit": unit, "requests_per_unit": capped})
}

fn envoy_ratelimit(cfg: &LimitsConfig, notes: &mut Vec<String>) -> Value {
    let mut top = Vec::new();
    for q in &cfg.quotas {
        let mut rules = Vec::new();
        for r in &q.rules {
            let units: Vec<Value> = r
                .limits
                .iter()
                .map(|l| {
                    let what = format!("quota {}/{}/{}", q.name, r.name, l.unit.name());
                    let (count, seconds) = window(q.max(l.amount), l.unit, &what, notes);
                    json!({"key": "unit", "value": l.unit.name(), "descriptors": [
                        {"key": "identity", "rate_limit": rate_limit(count, seconds, &what, notes)}]})
                })
                .collect();
            rules.push(json!({"key": "rule", "value": r.name, "descriptors": units}));
        }
        top.push(json!({"key": "quota", "value": q.name, "descriptors": rules}));
    }
    for rl in &cfg.rate_limits {
        let mut node = json!({"key": "ratelimit", "value": rl.scope});
        let mut children = Vec::new();
        if let Some(b) = &rl.limit.endpoint {
            let what = format!("rate limit {} max_rate", rl.scope);
            let (c, s) = bucket_window(b, &what, notes);
            node["rate_limit"] = rate_limit(c, s, &what, notes);
        }
        for (key, b) in [
            ("client", &rl.limit.client),
            ("client_tokens", &rl.limit.tokens),
        ] {
            if let Some(b) = b {
                let what = format!("rate limit {} {key}", rl.scope);
                let (c, s) = bucket_window(b, &what, notes);
                children.push(json!({"key": key, "rate_limit": rate_limit(c, s, &what, notes)}));
            }
        }
        if !children.is_empty() {
            node["descriptors"] = Value::Array(children);
        }
        top.push(node);
    }
    json!({"domain": scheme::DOMAIN, "descriptors": top})
}

/// A CEL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn limitador(cfg: &LimitsConfig, notes: &mut Vec<String>) -> Value {
    notes.push("limitador: windows start at each counter's first hit (not at calendar boundaries) and only the request-level hits_addend is read: send each quota check or charge, and each rate-limit bucket, in its own request with hits_addend set (0 counts 1)".to_string());
    let d0 = |k: &str| format!("descriptors[0][{}]", lit(k));
    let mut out = Vec::new();
    for q in &cfg.quotas {
        for r in &q.rules {
            for l in &r.limits {
                let what = format!("quota {}/{}/{}", q.name, r.name, l.unit.name());
                let (count, seconds) = window(q.max(l.amount), l.unit, &what, notes);
                out.push(json!({
                    "namespace": scheme::DOMAIN, "name": what, "max_value": count, "seconds": seconds,
                    "conditions": [format!("{} == {}", d0("quota"), lit(&q.name)), format!("{} == {}", d0("rule"), lit(&r.name))],
                    "variables": [d0("identity")]}));
            }
        }
    }
    for rl in &cfg.rate_limits {
        let scope = format!("{} == {}", d0("ratelimit"), lit(&rl.scope));
        if let Some(b) = &rl.limit.endpoint {
            let what = format!("rate limit {} max_rate", rl.scope);
            let (c, s) = bucket_window(b, &what, notes);
            out.push(json!({"namespace": scheme::DOMAIN, "name": what, "max_value": c, "seconds": s,
                "conditions": [scope, "!('client' in descriptors[0])", "!('client_tokens' in descriptors[0])"],
                "variables": []}));
        }
        for (key, b) in [
            ("client", &rl.limit.client),
            ("client_tokens", &rl.limit.tokens),
        ] {
            if let Some(b) = b {
                let what = format!("rate limit {} {key}", rl.scope);
                let (c, s) = bucket_window(b, &what, notes);
                out.push(
                    json!({"namespace": scheme::DOMAIN, "name": what, "max_value": c, "seconds": s,
                    "conditions": [scope.clone()], "variables": [d0(key)]}),
                );
            }
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::config::compile;

    fn cfg() -> LimitsConfig {
        let doc = json!({"version": 3, "extra_config": {
            "redis": {"connection_pools": [{"name": "r", "address": "127.0.0.1:6379"}]},
            "governance/processors": {"quotas": [{"name": "llm", "connection_name": "r", "rules": [
                {"name": "gold", "limits": [{"amount": 1000, "unit": "hour"}, {"amount": 20000, "unit": "month"}]}]}]}},
            "endpoints": [{"endpoint": "/v1/chat", "method": "POST", "backend": [], "extra_config": {
                "qos/ratelimit/router/redis": {"connection_name": "r", "max_rate": 10, "client_max_rate": 2,
                    "every": "1m", "strategy": "header", "key": "x-tenant"}}}]});
        compile(&doc, &|_| None, false).unwrap()
    }

    #[test]
    fn envoy_ratelimit_tree_matches_the_descriptors() {
        let (v, notes) = render(&cfg(), Engine::EnvoyRatelimit);
        assert_eq!(v["domain"], "tollgate");
        let month = &v["descriptors"][0]["descriptors"][0]["descriptors"][1];
        assert_eq!(month["value"], "month");
        assert_eq!(month["descriptors"][0]["key"], "identity");
        assert_eq!(
            month["descriptors"][0]["rate_limit"],
            json!({"unit": "month", "requests_per_unit": 20000})
        );
        let rl = &v["descriptors"][1];
        assert_eq!(rl["value"], "POST /v1/chat");
        assert_eq!(
            rl["rate_limit"],
            json!({"unit": "minute", "requests_per_unit": 10})
        );
        assert_eq!(rl["descriptors"][0]["key"], "client");
        assert!(notes.iter().any(|n| n.contains("a month of 30 days")));
        assert!(notes.iter().any(|n| n.contains("no refunds")));
    }

    #[test]
    fn limitador_limits_use_the_first_descriptor() {
        let (v, notes) = render(&cfg(), Engine::Limitador);
        let first = &v[0];
        assert_eq!(first["max_value"], 1000);
        assert_eq!(first["seconds"], 3600);
        assert_eq!(first["conditions"][0], "descriptors[0]['quota'] == 'llm'");
        assert_eq!(first["variables"][0], "descriptors[0]['identity']");
        assert_eq!(v[3]["variables"][0], "descriptors[0]['client']");
        assert!(notes.iter().any(|n| n.contains("first hit")));
        assert_eq!(lit("it's"), "'it\\'s'");
    }
}
