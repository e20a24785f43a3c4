//! Which backends of an `ai/llm` endpoint a request tries, in which order: a matching
//! `backend/conditional` header, else the fallback backend, else a weighted pick, else the
//! client's model; with `ai/routing.failover` the other eligible backends follow. A plain
//! endpoint's `backend/conditional` picks its one backend the same way ([`plain`]). The
//! settings and the breakers are governance's ([`crate::governance::routing`]).

use crate::config::Endpoint;
use crate::governance::routing::Conditional;
use crate::host::Host;
use crate::support::hash::fnv1a64;

/// The backends to try, in order: the primary first, then (with `failover`) the others that
/// may serve this request. Empty: let model routing decide (it answers unknown models).
pub fn order<H: Host + ?Sized>(h: &H, ep: &Endpoint, model: &str) -> Vec<usize> {
    let header_match = ep.backends.iter().position(|b| match &b.rules.conditional {
        Some(Conditional::Header { name, value }) => {
            h.request_header(name).as_deref() == Some(value.as_str())
        }
        _ => false,
    });
    // Without a header match, backends with a header condition are out.
    let eligible: Vec<usize> = (0..ep.backends.len())
        .filter(|i| {
            Some(*i) == header_match
                || !matches!(
                    ep.backends
                        .get(*i)
                        .and_then(|b| b.rules.conditional.as_ref()),
                    Some(Conditional::Header { .. })
                )
        })
        .collect();
    let weights = &ep.governance.routing.weights;
    let primary = header_match
        .or_else(|| {
            ep.backends
                .iter()
                .position(|b| b.rules.conditional == Some(Conditional::Fallback))
                .filter(|_| {
                    ep.backends
                        .iter()
                        .any(|b| matches!(b.rules.conditional, Some(Conditional::Header { .. })))
                })
        })
        .or_else(|| weighted(h, &eligible, weights))
        .or_else(|| ep.model_backend(model, &eligible));
    let Some(primary) = primary else {
        return Vec::new();
    };
    let mut out = vec![primary];
    if ep.governance.routing.failover {
        out.extend(eligible.iter().copied().filter(|i| *i != primary));
    }
    out
}

/// The backend of a plain endpoint: the only one, or (KrakenD's conditional routing, every
/// backend conditional) the one whose header condition the request meets, else the fallback.
/// None: no condition holds and there is no fallback (KrakenD calls no backend).
pub fn plain<H: Host + ?Sized>(h: &H, ep: &Endpoint) -> Option<usize> {
    let conditions = ep.backends.iter().map(|b| b.rules.conditional.as_ref());
    let mut fallback = None;
    for (i, c) in conditions.enumerate() {
        match c {
            None => return Some(i),
            Some(Conditional::Header { name, value }) => {
                if h.request_header(name).as_deref() == Some(value.as_str()) {
                    return Some(i);
                }
            }
            Some(Conditional::Fallback) => fallback = Some(i),
        }
    }
    fallback
}

/// A weighted pick among `eligible` (by the request id, uniformly distributed).
fn weighted<H: Host + ?Sized>(h: &H, eligible: &[usize], weights: &[u32]) -> Option<usize> {
    if weights.is_empty() {
        return None;
    }
    let w = |i: usize| u64::from(weights.get(i).copied().unwrap_or(0));
    let total: u64 = eligible.iter().map(|i| w(*i)).sum();
    if total == 0 {
        return None;
    }
    let seed = h
        .request_header("x-request-id")
        .map(|id| fnv(&id))
        .unwrap_or_else(|| fnv(&h.now_millis().to_string()));
    let mut pick = seed % total;
    for i in eligible {
        if pick < w(*i) {
            return Some(*i);
        }
        pick -= w(*i);
    }
    None
}

fn fnv(s: &str) -> u64 {
    let h = fnv1a64(s.as_bytes());
    // Mix the high bits down: request ids differ mostly in their last characters.
    h ^ (h >> 29) ^ (h >> 47)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::governance::routing::tests::gateway;
    use crate::host::mock::MockHost;
    use serde_json::json;

    #[test]
    fn order_by_header_fallback_weights_and_failover() {
        let g = gateway(
            json!({"backend/conditional": {"strategy": "header", "name": "X-Llm", "value": "a"}}),
            json!({"backend/conditional": {"strategy": "fallback"}}),
            json!({"ai/routing": {"failover": true}}),
        );
        let ep = &g.endpoints[0];
        let h = MockHost::request("POST", "/", &[("x-llm", "a")]);
        assert_eq!(order(&h, ep, "x"), vec![0, 1]);
        let h = MockHost::request("POST", "/", &[("x-llm", "A")]);
        assert_eq!(order(&h, ep, "a"), vec![1]); // case-sensitive value; header backend is out

        let g = gateway(
            json!({}),
            json!({}),
            json!({"ai/routing": {"weights": [3, 1]}}),
        );
        let ep = &g.endpoints[0];
        let mut counts = [0, 0];
        for i in 0..400 {
            let h = MockHost::request(
                "POST",
                "/",
                &[(
                    "x-request-id",
                    &format!("9b2c1e6a-{i:04}-4f00-a000-00000000{i:04}"),
                )],
            );
            let o = order(&h, ep, "a");
            assert_eq!(o.len(), 1);
            counts[o[0]] += 1;
        }
        assert!(counts[1] > 60 && counts[1] < 140, "{counts:?}");

        let g = gateway(
            json!({}),
            json!({}),
            json!({"ai/routing": {"failover": true}}),
        );
        let ep = &g.endpoints[0];
        let h = MockHost::request("POST", "/", &[]);
        assert_eq!(order(&h, ep, "b"), vec![1, 0]);
        assert_eq!(order(&h, ep, "zzz"), Vec::<usize>::new()); // unknown model: model routing answers
    }
}
