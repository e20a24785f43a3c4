use super::*;
use crate::host::mock::MockHost;
use serde_json::json;

fn quotas() -> Vec<QuotaDef> {
    processors(
        &json!({"quotas": [{"name": "llm", "connection_name": "per-envoy", "hash_keys": false, "rules": [
            {"name": "gold", "limits": [{"amount": 100, "unit": "minute"}, {"amount": 1000, "unit": "day"}]},
            {"name": "free", "limits": [{"amount": 10, "unit": "minute"}]}]}]}),
        "$.p",
        &[],
    )
    .unwrap()
}

fn gold_attach() -> QuotaAttach {
    attach(
        &json!({"quota_name": "llm", "tier_key": "X-Plan", "weight_key": "usage.total_tokens", "tiers": [
            {"rule_name": "gold", "tier_value": "gold", "tier_value_as": "literal", "strategy": "header", "key": "X-User"},
            {"rule_name": "free", "tier_value_as": "*", "strategy": "ip"}]}),
        "$.q",
        &quotas(),
    )
    .unwrap()
}

fn headers(list: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |n: &str| {
        list.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    }
}

/// krakend/examples `governance` (tests/krakend_corpus/ex-governance.json, /consume_credit):
/// a literal tier and a policy tier over the tier header's value.
#[test]
fn policy_tiers() {
    let a = attach(
        &json!({"quota_name": "llm", "tier_key": "X-Krakend-Role", "tiers": [
            {"rule_name": "gold", "tier_value": "premium", "tier_value_as": "literal", "strategy": "header", "key": "Authorization"},
            {"rule_name": "free", "tier_value": "value.matches('free.*')", "tier_value_as": "policy", "strategy": "header", "key": "Authorization"}]}),
        "$.q",
        &quotas(),
    )
    .unwrap();
    let none = |_: &str| None;
    let rule = |role: &'static str| {
        let list: &'static [(&'static str, &'static str)] = match role {
            "premium" => &[("x-krakend-role", "premium"), ("authorization", "k")],
            "freemium" => &[("x-krakend-role", "freemium"), ("authorization", "k")],
            "other" => &[("x-krakend-role", "other"), ("authorization", "k")],
            _ => &[("authorization", "k")],
        };
        resolve(&a, &quotas(), &headers(list), None, &none)
            .map(|c| c.map(|c| c.key.split('|').nth(1).unwrap_or_default().to_string()))
    };
    assert_eq!(rule("premium"), Ok(Some("gold".into())));
    assert_eq!(rule("freemium"), Ok(Some("free".into())));
    assert!(matches!(rule("other"), Err(QuotaError::UnmatchedTier(_))));
    assert!(matches!(rule("absent"), Err(QuotaError::UnmatchedTier(_))));
}

#[test]
fn tiers_pick_rule_and_identity() {
    let a = gold_attach();
    let none = |_: &str| None;
    let c = resolve(
        &a,
        &quotas(),
        &headers(&[("x-plan", "gold"), ("x-user", "alice")]),
        None,
        &none,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (c.key.as_str(), c.identity.as_str(), c.weight),
        ("llm|gold|alice", "alice", Weight::TotalTokens)
    );
    let c = resolve(
        &a,
        &quotas(),
        &headers(&[("x-plan", "silver")]),
        Some("10.0.0.1".into()),
        &none,
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.key, "llm|free|10.0.0.1");
    let err = resolve(&a, &quotas(), &headers(&[]), None, &none).unwrap_err();
    assert!(matches!(err, QuotaError::UnmatchedTier(_)));
}

#[test]
fn budget_is_charged_and_refused_when_spent_and_rolls_over() {
    let mut h = MockHost::default();
    store::init(&mut h);
    let none = |_: &str| None;
    let c = resolve(
        &gold_attach(),
        &quotas(),
        &headers(&[("x-plan", "gold"), ("x-user", "bob")]),
        None,
        &none,
    )
    .unwrap()
    .unwrap();
    let now = 1_795_597_834;
    assert!(c.precheck(&h, now, 0).is_ok());
    c.add(&mut h, now, 60);
    let s = c.precheck(&h, now, 0).unwrap();
    assert_eq!(
        quota_headers(&s, c.weight),
        Some(("100".into(), "40".into()))
    );
    // A reservation that would overshoot is refused; a plain check still passes.
    assert!(matches!(
        c.precheck(&h, now, 50),
        Err(QuotaError::Exceeded { .. })
    ));
    c.add(&mut h, now, 40);
    match c.precheck(&h, now, 0) {
        Err(QuotaError::Exceeded {
            limit,
            unit,
            retry_after,
        }) => {
            assert_eq!((limit, unit), (100.0, Unit::Minute));
            assert_eq!(retry_after, 60 - now % 60);
        }
        other => panic!("{other:?}"),
    }
    // Next minute: the minute window is fresh, the day window still counts 100.
    let later = now + 60;
    let s = c.precheck(&h, later, 0).unwrap();
    assert_eq!(s.iter().map(|x| x.used).collect::<Vec<_>>(), vec![0, 100]);
}

#[test]
fn cost_weight_uses_prices_in_millionths() {
    let u = usage_config(&json!({"currency": "EUR", "prices": {"gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075}}}), "$.u").unwrap();
    let usage = Usage {
        prompt_tokens: 1000,
        completion_tokens: 500,
        cached_tokens: 200,
        reasoning_tokens: 0,
        cache_write_tokens: 0,
    };
    // 800 × 0.15 + 200 × 0.075 + 500 × 0.6 = 120 + 15 + 300 = 435 millionths.
    assert_eq!(u.cost_micros("gpt-4o-mini", &usage), Some(435));
    assert_eq!(u.cost_micros("unknown", &usage), None);
    assert_eq!(u.currency, "EUR");
}

/// Anthropic cache writes are their own figure, priced `cache_write` (default: input).
#[test]
fn cache_writes_are_priced_apart() {
    let prices = json!({"prices": {"claude": {"input": 3, "output": 15, "cached_input": 0.3, "cache_write": 3.75},
                                   "plain": {"input": 3, "output": 15}}});
    let u = usage_config(&prices, "$.u").unwrap();
    // Anthropic usage {input 100, cache_read 1000, cache_creation 2000, output 50}.
    let usage = Usage {
        prompt_tokens: 3100,
        completion_tokens: 50,
        cached_tokens: 1000,
        reasoning_tokens: 0,
        cache_write_tokens: 2000,
    };
    // 100 × 3 + 1000 × 0.3 + 2000 × 3.75 + 50 × 15 = 300 + 300 + 7500 + 750.
    assert_eq!(u.cost_micros("claude", &usage), Some(8850));
    // No cache prices: reads and writes cost the input price (as before writes were counted).
    assert_eq!(u.cost_micros("plain", &usage), Some(3100 * 3 + 50 * 15));
    // A provider claiming more cached than prompt tokens cannot make the cost negative.
    let odd = Usage {
        prompt_tokens: 10,
        cached_tokens: 8,
        cache_write_tokens: 8,
        ..usage
    };
    assert_eq!(
        u.cost_micros("claude", &odd),
        Some((8.0f64 * 0.3 + 2.0 * 3.75 + 750.0).round() as u64)
    );
    let err = usage_config(
        &json!({"prices": {"m": {"input": 1, "output": 1, "cache_write": -1}}}),
        "$.u",
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "$.u.prices.m.cache_write: must be >= 0");
}

#[test]
fn reject_paths() {
    let q = quotas();
    let cases = [
        (json!({"quota_name": "nope", "tier_key": "x", "tiers": []}), "$.q.quota_name: quota \"nope\" is not declared in the service's governance/processors"),
        (json!({"quota_name": "llm", "tier_key": "x", "tiers": [{"rule_name": "platinum", "tier_value": "p"}]}), "$.q.tiers[0].rule_name: rule \"platinum\" is not a rule of quota \"llm\""),
        (json!({"quota_name": "llm", "tier_key": "x", "tiers": [{"rule_name": "gold", "tier_value_as": "policy", "tier_value": "x"}]}), "$.q.tiers[0].tier_value: \"x\": at offset 0: unknown variable 'x' (variables here: value)"),
        (json!({"quota_name": "llm", "tier_key": "x", "tiers": [{"rule_name": "gold", "tier_value_as": "policy", "tier_value": "value.matches("}]}), "$.q.tiers[0].tier_value: \"value.matches(\": at offset 14: unexpected end of expression"),
        (json!({"quota_name": "llm", "tier_key": "x", "weight_key": "usage..total", "tiers": []}), "$.q.weight_key: is not a field or header name"),
        (json!({"quota_name": "llm", "tier_key": "x", "weight_key": "n", "weight_strategy": "query", "tiers": []}), "$.q.weight_strategy: \"query\" is not one of body, header"),
        (json!({"quota_name": "llm", "tier_key": "x", "tiers": [], "typo": 1}), "$.q.typo: unknown field"),
        (json!({"quota_name": "llm", "tier_key": "x", "tiers": [{"rule_name": "gold", "tier_value": "g", "strategy": "cookie"}]}), "$.q.tiers[0].strategy: \"cookie\" is not one of header, ip, param"),
    ];
    for (v, msg) in cases {
        assert_eq!(attach(&v, "$.q", &q).unwrap_err().to_string(), msg);
    }
    let bad_unit = json!({"quotas": [{"name": "a", "connection_name": "r", "rules": [{"name": "r", "limits": [{"amount": 1, "unit": "fortnight"}]}]}]});
    assert_eq!(processors(&bad_unit, "$.p", &["r".into()]).unwrap_err().to_string(),
        "$.p.quotas[0].rules[0].limits[0].unit: \"fortnight\" is not one of second, minute, hour, day, week, month, year");
    // KrakenD refuses a quota whose connection names nothing: so does tollgate; the per-Envoy
    // store is asked for by name.
    let named = |c: Option<&str>| {
        let mut q = json!({"name": "a", "rules": [{"name": "r", "limits": []}]});
        if let Some(c) = c {
            q["connection_name"] = json!(c);
        }
        processors(&json!({"quotas": [q]}), "$.p", &["shared".into()])
    };
    assert!(named(None)
        .unwrap_err()
        .to_string()
        .starts_with("$.p.quotas[0].connection_name: is required"));
    assert!(named(Some("local")).unwrap_err().to_string().starts_with(
        "$.p.quotas[0].connection_name: \"local\" names no Redis connection pool or cluster (declared in $.extra_config.redis: shared)"));
    assert_eq!(named(Some("per-envoy")).unwrap()[0].store, Store::Local);
    assert_eq!(named(Some("shared")).unwrap()[0].store, Store::Fleet(0));
    assert_eq!(
        usage_config(&json!({"prices": {"m": {"input": 1}}}), "$.u")
            .unwrap_err()
            .to_string(),
        "$.u.prices.m: needs input and output prices (per million tokens)"
    );
}

/// Every caller on `gold`, identified by its `Authorization`.
fn keyed_attach() -> QuotaAttach {
    attach(
        &json!({"quota_name": "llm", "tier_key": "X-Plan", "tiers": [
            {"rule_name": "gold", "tier_value_as": "*", "strategy": "header", "key": "Authorization"}]}),
        "$.q",
        &quotas(),
    )
    .unwrap()
}

#[test]
fn identities_from_credential_headers_are_hashed() {
    let a = keyed_attach();
    let none = |_: &str| None;
    let c = resolve(
        &a,
        &quotas(),
        &headers(&[("authorization", "Bearer sk-secret-123")]),
        None,
        &none,
    )
    .unwrap()
    .unwrap();
    assert!(
        c.identity.starts_with("key-") && c.identity.len() == 20,
        "{}",
        c.identity
    );
    assert!(!c.key.contains("sk-secret-123") && !c.identity.contains("sk-secret"));
    // Same key, same identity (budgets still per key).
    let c2 = resolve(
        &a,
        &quotas(),
        &headers(&[("authorization", "Bearer sk-secret-123")]),
        None,
        &none,
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.key, c2.key);
}

#[test]
fn a_credential_is_one_identity_however_its_scheme_is_spelled() {
    let one = header_identity("authorization", "Bearer sk-1");
    assert!(one.starts_with("key-"), "{one}");
    for spelling in [
        "bearer sk-1",
        "BEARER  sk-1",
        " Bearer sk-1 ",
        "Bearer\tsk-1",
        "bEaReR \t sk-1",
        "sk-1",
        "Token sk-1",
        "Basic sk-1",
    ] {
        assert_eq!(
            header_identity("authorization", spelling),
            one,
            "{spelling:?}"
        );
    }
    // The same key in another credential header is the same caller.
    assert_eq!(header_identity("x-api-key", " sk-1 "), one);
    assert_eq!(header_identity("proxy-authorization", "bearer sk-1"), one);
    assert_ne!(header_identity("authorization", "Bearer sk-2"), one);
    // Nothing but whitespace: no identity (as if absent).
    assert_eq!(header_identity("authorization", "   "), "");
    // Cookies keep their spaces (they separate cookies).
    assert_ne!(
        header_identity("cookie", "a=1; s=x"),
        header_identity("cookie", "b=2; s=x")
    );
    // Other headers: trimmed, otherwise as sent (not hashed).
    assert_eq!(header_identity("x-user", "  alice "), "alice");
    assert_eq!(header_identity("x-user", "Bearer alice"), "Bearer alice");
}

#[test]
fn quota_identity_from_a_credential_is_canonical() {
    let a = keyed_attach();
    let none = |_: &str| None;
    let key = |h: &'static [(&'static str, &'static str)]| {
        resolve(&a, &quotas(), &headers(h), None, &none)
            .unwrap()
            .map(|c| c.key)
    };
    let one = key(&[("authorization", "Bearer sk-9")]);
    assert!(one.is_some());
    assert_eq!(key(&[("authorization", "BEARER   sk-9")]), one);
    assert_eq!(key(&[("authorization", "sk-9")]), one);
    // Whitespace alone identifies nobody: no tier matches.
    assert!(resolve(
        &a,
        &quotas(),
        &headers(&[("authorization", "  ")]),
        None,
        &none
    )
    .is_err());
}

#[test]
fn settling_an_absurd_amount_saturates_and_spends_the_budget() {
    let mut h = MockHost::default();
    store::init(&mut h);
    let none = |_: &str| None;
    let mut c = resolve(
        &gold_attach(),
        &quotas(),
        &headers(&[("x-plan", "gold"), ("x-user", "eve")]),
        None,
        &none,
    )
    .unwrap()
    .unwrap();
    let now = 1_795_597_834;
    c.add(&mut h, now, signed(40));
    c.reserved = 40;
    // u64::MAX as i64 would be -1: the budget would shrink instead of grow.
    let s = c.settle(&mut h, now, u64::MAX);
    assert!(s.iter().all(|x| x.used == i64::MAX as u64), "{s:?}");
    assert!(c.precheck(&h, now, 0).is_err());
    // Giving a reservation back never goes below zero.
    let mut d = c.clone();
    d.key = "llm|gold|other".into();
    d.reserved = u64::MAX;
    let s = d.settle(&mut h, now, 0);
    assert!(s.iter().all(|x| x.used == 0), "{s:?}");
    assert_eq!(signed(u64::MAX), i64::MAX);
}
