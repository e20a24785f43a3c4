//! Metric names and labels. Envoy stats have no labels; tollgate encodes them in the
//! name (`tollgate_tokens_total.provider.openai.model.gpt-4o.tenant.t1.kind.prompt`) and
//! the generated bootstrap's `stats_tags` turn each `.label.value` pair back into a
//! Prometheus label, so `/stats/prometheus` shows
//! `tollgate_tokens_total{provider="openai",model="gpt-4o",tenant="t1",kind="prompt"}`.

use crate::host::{shared_update, Host};

/// Label names, in the order they appear in metric names.
pub const LABELS: &[&str] = &["provider", "model", "tenant", "kind", "status", "currency"];

/// Envoy `stats_tags` (tag name, regex) for the labels: the first capture group is cut
/// from the stat name, the second is the label value.
pub fn stats_tags() -> Vec<(String, String)> {
    LABELS
        .iter()
        .map(|l| {
            (
                (*l).to_string(),
                format!("^wasmcustom\\.tollgate_[a-z_]+(?:\\.[a-z]+\\.[^.]+)*?(\\.{l}\\.([^.]+))"),
            )
        })
        .collect()
}

/// A label value safe inside a stat name: dots and anything unusual become `_`; empty
/// values become `none`; long values are cut (bounded cardinality of bytes, not of values).
pub fn label(v: &str) -> String {
    let s: String = v
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}

/// `name.label.value...` for a metric with labels.
pub fn name(metric: &str, labels: &[(&str, &str)]) -> String {
    let mut out = String::from(metric);
    for (k, v) in labels {
        out.push('.');
        out.push_str(k);
        out.push('.');
        out.push_str(&label(v));
    }
    out
}

/// The label value of everything outside a bounded set.
pub const OTHER: &str = "other";

/// Distinct tenants that get a label of their own, per Envoy, when `ai/usage` does not
/// say (`max_tenant_labels`).
pub const DEFAULT_TENANT_LABELS: u64 = 100;

/// Shared-data key counting the tenant labels given out (created at configure time: a
/// key proxy-wasm creates under load is written unconditionally, see cost::store).
const TENANTS_KEY: &str = "tollgate:labels:tenants";

/// Creates the shared-data key of the tenant label count (configure time).
pub fn init<H: Host + ?Sized>(h: &mut H) {
    if h.shared_get(TENANTS_KEY).0.is_none() {
        // Unconditional: at configure time every writer writes the same value.
        let _ = h.shared_set(TENANTS_KEY, b"0", None);
    }
}

/// The tenant label of a call, from a bounded set: every Envoy stat name is kept for the
/// life of the process, so a label may not take any value a client sends. The first `max`
/// distinct tenants (per Envoy: the set lives in shared data, all workers agree) keep
/// their own label; the rest are `other`. A tenant already admitted costs one shared-data
/// read; `none` (no tenant) costs nothing.
pub fn tenant_label<H: Host + ?Sized>(h: &mut H, tenant: &str, max: u64) -> String {
    let value = label(tenant);
    if value == "none" || value == OTHER {
        return value;
    }
    let key = format!("tollgate:labels:tenant:{value}");
    if h.shared_get(&key).0.is_some() {
        return value;
    }
    let mut admitted = false;
    shared_update(h, TENANTS_KEY, |count| {
        let n: u64 = count
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        admitted = n < max;
        admitted.then(|| n.saturating_add(1).to_string().into_bytes())
    });
    if !admitted {
        return OTHER.to_string();
    }
    // A new key is written unconditionally: two workers admitting the same tenant at once
    // both count it (a slot lost, the bound still holds).
    let _ = h.shared_set(&key, b"1", None);
    value
}

pub const TOKENS: &str = "tollgate_tokens_total";
pub const REQUESTS: &str = "tollgate_requests_total";
/// Millionths of the configured currency.
pub const COST: &str = "tollgate_cost_total";
pub const DURATION: &str = "tollgate_request_duration_ms";
pub const TTFT: &str = "tollgate_time_to_first_token_ms";
pub const QUOTA_REJECTED: &str = "tollgate_quota_rejected_total";
/// Calls whose usage was estimated (the provider never reported it: a stream cut short).
pub const ESTIMATED: &str = "tollgate_usage_estimated_total";
/// Requests whose call to the fleet limits service failed (Redis or the service down or
/// slow), by what their `on_failure_allow` decided: label `kind` = `allowed` or `refused`.
pub const LIMITS_UNAVAILABLE: &str = "tollgate_limits_unavailable_total";
/// Charges to the fleet limits service given up after every retry (not counted in Redis).
pub const LIMITS_CHARGES_LOST: &str = "tollgate_limits_charges_lost_total";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_labels_safely() {
        assert_eq!(
            name(
                TOKENS,
                &[
                    ("provider", "openai"),
                    ("model", "gpt-4.1"),
                    ("tenant", ""),
                    ("kind", "prompt")
                ]
            ),
            "tollgate_tokens_total.provider.openai.model.gpt-4_1.tenant.none.kind.prompt"
        );
        assert_eq!(label("a b/c:d"), "a_b_c_d");
        assert_eq!(label(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn tenant_labels_are_capped_per_envoy() {
        use crate::host::mock::MockHost;
        let mut h = MockHost::default();
        init(&mut h);
        // Workers of one Envoy share the store: a clone of the host is another worker.
        let mut other_worker = h.clone();
        assert_eq!(tenant_label(&mut h, "acme.corp", 2), "acme_corp");
        assert_eq!(tenant_label(&mut other_worker, "beta", 2), "beta");
        for t in ["gamma", "delta", "x".repeat(80).as_str()] {
            assert_eq!(tenant_label(&mut h, t, 2), OTHER);
        }
        assert_eq!(tenant_label(&mut other_worker, "acme.corp", 2), "acme_corp");
        assert_eq!(tenant_label(&mut h, "beta", 2), "beta");
        assert_eq!(tenant_label(&mut h, "", 2), "none");
        assert_eq!(tenant_label(&mut h, "other", 0), OTHER);
        let keys = h.shared.borrow().len();
        for i in 0..1000 {
            tenant_label(&mut h, &format!("t{i}"), 2);
        }
        assert_eq!(h.shared.borrow().len(), keys, "no key per refused tenant");
    }
}
