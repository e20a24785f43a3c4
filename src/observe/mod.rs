//! Metric names and labels. Envoy stats have no labels; tollgate encodes them in the
//! name (`tollgate_tokens_total.provider.openai.model.gpt-4o.tenant.t1.kind.prompt`) and
//! the generated bootstrap's `stats_tags` turn each `.label.value` pair back into a
//! Prometheus label, so `/stats/prometheus` shows
//! `tollgate_tokens_total{provider="openai",model="gpt-4o",tenant="t1",kind="prompt"}`.

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

pub const TOKENS: &str = "tollgate_tokens_total";
pub const REQUESTS: &str = "tollgate_requests_total";
/// Millionths of the configured currency.
pub const COST: &str = "tollgate_cost_total";
pub const DURATION: &str = "tollgate_request_duration_ms";
pub const TTFT: &str = "tollgate_time_to_first_token_ms";
pub const QUOTA_REJECTED: &str = "tollgate_quota_rejected_total";
/// Calls whose usage was estimated (the provider never reported it: a stream cut short).
pub const ESTIMATED: &str = "tollgate_usage_estimated_total";

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
}
