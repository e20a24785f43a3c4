//! Metrics natively. The pipeline names a metric with its labels inside the name
//! (`tollgate_tokens_total.provider.openai.model.gpt-4o.tenant.t1.kind.prompt`, see
//! [`crate::observe`]); the wasm build defines each such name as its own stat and the
//! bootstrap's `stats_tags` cut the labels back out. Envoy's dynamic-module ABI defines
//! metrics only while a filter configuration is created (on the main thread), each as a
//! family with label names; a request then adds to the family with label values. So every
//! family tollgate emits is listed here ([`FAMILIES`]), defined up front, and each name the
//! pipeline gives is split into its family and label values ([`split`]). The series in
//! `/stats/prometheus` come out as the wasm build's.

use crate::governance::{METRIC_BREAKER_OPENED, METRIC_FAILOVER, METRIC_RATE_LIMITED};
use crate::observe::{COST, DURATION, ESTIMATED, QUOTA_REJECTED, REQUESTS, TOKENS, TTFT};

/// What kind of stat a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
}

/// One metric family: a name, its kind and its label names, in the order the pipeline
/// writes them into a metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
}

const CALL: &[&str] = &["provider", "model", "tenant"];

/// Every metric family the pipeline emits.
pub const FAMILIES: &[Family] = &[
    Family {
        name: REQUESTS,
        kind: Kind::Counter,
        labels: &["provider", "model", "tenant", "status"],
    },
    Family {
        name: TOKENS,
        kind: Kind::Counter,
        labels: &["provider", "model", "tenant", "kind"],
    },
    Family {
        name: ESTIMATED,
        kind: Kind::Counter,
        labels: CALL,
    },
    Family {
        name: COST,
        kind: Kind::Counter,
        labels: &["provider", "model", "tenant", "currency"],
    },
    Family {
        name: DURATION,
        kind: Kind::Histogram,
        labels: &["provider", "model"],
    },
    Family {
        name: TTFT,
        kind: Kind::Histogram,
        labels: &["provider", "model"],
    },
    Family {
        name: QUOTA_REJECTED,
        kind: Kind::Counter,
        labels: &["tenant"],
    },
    Family {
        name: METRIC_RATE_LIMITED,
        kind: Kind::Counter,
        labels: &[],
    },
    Family {
        name: METRIC_FAILOVER,
        kind: Kind::Counter,
        labels: &[],
    },
    Family {
        name: METRIC_BREAKER_OPENED,
        kind: Kind::Counter,
        labels: &[],
    },
];

/// A metric name split into its family (an index into [`FAMILIES`]) and label values in
/// the family's order. None for a name whose family is not listed, or whose labels are not
/// the family's (in number, names or order).
pub fn split(name: &str, kind: Kind) -> Option<(usize, Vec<&str>)> {
    let mut parts = name.split('.');
    let family = parts.next()?;
    let index = FAMILIES
        .iter()
        .position(|f| f.name == family && f.kind == kind)?;
    let f = FAMILIES.get(index)?;
    let mut values = Vec::with_capacity(f.labels.len());
    for label in f.labels {
        if parts.next()? != *label {
            return None;
        }
        values.push(parts.next()?);
    }
    if parts.next().is_some() {
        return None;
    }
    Some((index, values))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::observe::name;

    #[test]
    fn names_split_into_family_and_label_values() {
        let n = name(
            TOKENS,
            &[
                ("provider", "openai"),
                ("model", "gpt-4.1"),
                ("tenant", ""),
                ("kind", "prompt"),
            ],
        );
        let (i, values) = split(&n, Kind::Counter).unwrap();
        assert_eq!(FAMILIES[i].name, TOKENS);
        assert_eq!(values, ["openai", "gpt-4_1", "none", "prompt"]);
        assert_eq!(split(METRIC_RATE_LIMITED, Kind::Counter), Some((7, vec![])));
        let d = name(DURATION, &[("provider", "p"), ("model", "m")]);
        assert_eq!(split(&d, Kind::Histogram).unwrap().1, ["p", "m"]);
    }

    #[test]
    fn names_outside_the_families_are_refused() {
        for n in [
            "tollgate_unknown_total",
            // wrong kind
            "tollgate_request_duration_ms.provider.p.model.m",
            // labels missing, extra, renamed, out of order
            "tollgate_quota_rejected_total",
            "tollgate_quota_rejected_total.tenant.a.kind.b",
            "tollgate_quota_rejected_total.team.a",
            "tollgate_request_duration_ms.model.m.provider.p",
        ] {
            let kind = if n.contains("ms.model") {
                Kind::Histogram
            } else {
                Kind::Counter
            };
            assert_eq!(split(n, kind), None, "{n}");
        }
    }

    /// The label sets here are the ones the pipeline writes: every family's labels are
    /// known observe labels, in observe's order.
    #[test]
    fn family_labels_follow_observes_order() {
        for f in FAMILIES {
            let positions: Vec<usize> = f
                .labels
                .iter()
                .map(|l| crate::observe::LABELS.iter().position(|k| k == l).unwrap())
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", f.name);
        }
    }
}
