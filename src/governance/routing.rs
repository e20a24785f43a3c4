//! Multi-LLM routing: which backends of an `ai/llm` endpoint a request tries, in which order;
//! on a plain endpoint, `backend/conditional` picks its one backend (KrakenD's conditional
//! routing, without response merging).
//!
//! - `backend/conditional` (KrakenD EE, backend): `{"strategy": "header", "name": "X-Llm",
//!   "value": "claude"}` makes a backend the choice when the header has that exact value;
//!   `{"strategy": "fallback"}` is the choice when no header condition matched (one per endpoint).
//!   Backends with a header condition are never used otherwise.
//! - `ai/routing` (tollgate, endpoint): `{"weights": [3, 1], "failover": true}`. `weights` (one per
//!   backend) splits traffic among the backends without a header condition (weight 0: failover
//!   only); `failover` tries the next backend when an attempt fails (429, 5xx, timeout,
//!   connection failure) with the request translated for that provider.
//! - `qos/circuit-breaker` (KrakenD, backend): `{"max_errors": 3, "interval": 60, "timeout": 10}`.
//!   After `max_errors` consecutive failures (any non-2xx answer, or none) within `interval`
//!   seconds the backend is skipped for `timeout` seconds; then one probe request is let through
//!   (half-open): success closes the breaker, failure opens it again. State in shared data
//!   (exact across workers; keys created at configure time like the rate-limit shards).

use crate::config::reader::{ConfigError, Obj, Result};
use crate::host::{shared_update, Host};
use crate::refusal::Refusal;
use serde_json::Value;

const FORMAT: u8 = 1;

/// A backend's `backend/conditional`.
#[derive(Debug, Clone, PartialEq)]
pub enum Conditional {
    /// Chosen when the header `name` (lowercase) has exactly `value`.
    Header { name: String, value: String },
    /// Chosen when no header condition matched.
    Fallback,
}

/// A backend's `qos/circuit-breaker`.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    /// Shared-data key (set when the endpoint is compiled).
    pub key: String,
    pub name: String,
    pub max_errors: u32,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub log: bool,
}

/// Routing settings of one backend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackendRules {
    pub conditional: Option<Conditional>,
    pub breaker: Option<Breaker>,
}

/// An endpoint's `ai/routing`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Routing {
    pub weights: Vec<u32>,
    pub failover: bool,
}

/// Reads a backend's `backend/conditional` (KrakenD EE).
pub fn conditional(v: &Value, path: &str) -> Result<Conditional> {
    let mut c = Obj::new(v, path)?;
    let out =
        match c.str("strategy")? {
            "header" => Conditional::Header {
                name: c.str("name")?.to_ascii_lowercase(),
                value: c.str("value")?.to_string(),
            },
            "fallback" => Conditional::Fallback,
            "policy" => return Err(ConfigError::new(
                c.at("strategy"),
                "the policy strategy (CEL) is not evaluated by tollgate yet (pending: CEL); use header or fallback",
            )),
            other => {
                return Err(ConfigError::new(
                    c.at("strategy"),
                    format!("\"{other}\" is not one of header, fallback"),
                ))
            }
        };
    c.finish(&[])?;
    Ok(out)
}

/// Reads a backend's `qos/circuit-breaker` (KrakenD); its key is named by [`finish_endpoint`].
pub fn breaker(v: &Value, path: &str) -> Result<Breaker> {
    let mut b = Obj::new(v, path)?;
    let mut secs = |k: &str| -> Result<u64> {
        match b.opt_u64(k)? {
            Some(n) if n > 0 => Ok(n),
            Some(_) => Err(ConfigError::new(b.at(k), "must be at least 1")),
            None => Err(ConfigError::new(b.at(k), "is required")),
        }
    };
    let max_errors = secs("max_errors")?.min(u64::from(u32::MAX)) as u32;
    let interval_ms = secs("interval")?.saturating_mul(1000);
    let timeout_ms = secs("timeout")?.saturating_mul(1000);
    let name = b.opt_str("name")?.unwrap_or_default().to_string();
    let log = b.opt_bool("log_status_change")?.unwrap_or(false);
    b.finish(&[])?;
    Ok(Breaker {
        key: String::new(),
        name,
        max_errors,
        interval_ms,
        timeout_ms,
        log,
    })
}

/// Reads the endpoint's `ai/routing` (the weight count is checked in [`finish_endpoint`]).
pub fn compile_endpoint(v: &Value, path: &str) -> Result<Routing> {
    let mut o = Obj::new(v, path)?;
    let mut r = Routing {
        failover: o.opt_bool("failover")?.unwrap_or(false),
        ..Routing::default()
    };
    if let Some(list) = o.opt_array("weights")? {
        for (i, w) in list.iter().enumerate() {
            let n = w.as_u64().filter(|n| *n <= 1_000_000).ok_or_else(|| {
                ConfigError::new(
                    format!("{}[{i}]", o.at("weights")),
                    "expected a whole number 0..=1000000",
                )
            })?;
            r.weights.push(n as u32);
        }
        if r.weights.iter().all(|w| *w == 0) {
            return Err(ConfigError::new(
                o.at("weights"),
                "at least one weight must be above 0",
            ));
        }
    }
    o.finish(&[])?;
    Ok(r)
}

/// Cross-checks an endpoint's routing against its backends' rules (one per backend, in
/// order) and names the breaker keys.
pub fn finish_endpoint(
    routing: &Routing,
    mut rules: Vec<&mut BackendRules>,
    is_llm: bool,
    endpoint_id: &str,
    backend_path: &str,
    extra_path: &str,
) -> Result<()> {
    let weights = routing.weights.len();
    if weights > 0 && weights != rules.len() {
        return Err(ConfigError::new(
            format!("{extra_path}.ai/routing.weights"),
            format!("needs one weight per backend ({})", rules.len()),
        ));
    }
    let fallbacks = rules
        .iter()
        .filter(|r| r.conditional == Some(Conditional::Fallback))
        .count();
    if fallbacks > 1 {
        return Err(ConfigError::new(
            backend_path,
            "only one backend may use backend/conditional strategy fallback",
        ));
    }
    if *routing != Routing::default() && !is_llm {
        return Err(ConfigError::new(
            format!("{extra_path}.ai/routing"),
            "applies to endpoints with ai/llm backends",
        ));
    }
    if !is_llm {
        one_plain_backend(&rules, backend_path)?;
    }
    for (j, r) in rules.iter_mut().enumerate() {
        if let Some(br) = &mut r.breaker {
            br.key = format!("tollgate.cb.{endpoint_id}.{j}");
        }
    }
    Ok(())
}

/// A plain endpoint's conditions must pick one backend at most: KrakenD calls every backend
/// whose condition holds and merges their answers, which tollgate does not. Header
/// conditions on one header with distinct values never hold together; on two headers (or
/// one value twice) they may, and are refused.
fn one_plain_backend(rules: &[&mut BackendRules], backend_path: &str) -> Result<()> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for c in rules.iter().filter_map(|r| r.conditional.as_ref()) {
        if let Conditional::Header { name, value } = c {
            if seen
                .iter()
                .any(|(n, v)| *n != name.as_str() || *v == value.as_str())
            {
                return Err(ConfigError::new(
                    backend_path,
                    "backend/conditional header rules of a plain endpoint must test one header for distinct values: two could hold at once, and KrakenD would merge both answers (not supported)",
                ));
            }
            seen.push((name, value));
        }
    }
    Ok(())
}

/// Whether an answer counts as a failure for failover: none at all, 429 or 5xx.
pub fn should_fail_over(status: Option<u16>) -> bool {
    status.is_none_or(|s| s == 429 || s >= 500)
}

// ---- circuit breaker ----

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct State {
    errors: u32,
    window_start: u64,
    /// 0: closed. Else open until then, half-open after.
    open_until: u64,
    /// Half-open: a probe is in flight until then.
    probe_until: u64,
}

fn decode(v: Option<&[u8]>) -> State {
    let Some(b) = v.and_then(|b| b.strip_prefix(&[FORMAT])) else {
        return State::default();
    };
    let u = |r: std::ops::Range<usize>| {
        b.get(r)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    };
    State {
        errors: u(0..8) as u32,
        window_start: u(8..16),
        open_until: u(16..24),
        probe_until: u(24..32),
    }
}

fn encode(s: &State) -> Vec<u8> {
    let mut out = vec![FORMAT];
    for n in [
        u64::from(s.errors),
        s.window_start,
        s.open_until,
        s.probe_until,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

/// Creates the keys of these breakers (configure time).
pub fn init_breakers<'a, H: Host + ?Sized>(
    h: &mut H,
    breakers: impl IntoIterator<Item = &'a Breaker>,
) {
    for br in breakers {
        if h.shared_get(&br.key).1.is_none()
            && h.shared_set(&br.key, &encode(&State::default()), None)
                .is_err()
        {
            h.log_warn(&format!(
                "tollgate: cannot create shared data key {}",
                br.key
            ));
        }
    }
}

/// May a request go to this backend now? Err: wait in ms (open, or a probe in flight).
/// In half-open state this claims the single probe.
pub fn allow<H: Host + ?Sized>(h: &mut H, br: Option<&Breaker>) -> std::result::Result<(), u64> {
    let Some(br) = br else {
        return Ok(());
    };
    let now = h.now_millis();
    let mut verdict = Ok(());
    shared_update(h, &br.key, |cur| {
        let mut s = decode(cur);
        if s.open_until == 0 {
            verdict = Ok(());
            return None;
        }
        if s.open_until > now {
            verdict = Err(s.open_until - now);
            return None;
        }
        if s.probe_until > now {
            verdict = Err(s.probe_until - now);
            return None;
        }
        s.probe_until = now + br.timeout_ms;
        verdict = Ok(());
        Some(encode(&s))
    });
    verdict
}

/// Records an attempt's outcome (`status` None: no answer).
pub fn record<H: Host + ?Sized>(h: &mut H, br: Option<&Breaker>, status: Option<u16>) {
    let Some(br) = br else {
        return;
    };
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    let now = h.now_millis();
    let mut change = None;
    shared_update(h, &br.key, |cur| {
        let mut s = decode(cur);
        change = None;
        if ok {
            if s == State::default() {
                return None;
            }
            if s.open_until != 0 {
                change = Some("closed");
            }
            return Some(encode(&State::default()));
        }
        if s.open_until != 0 {
            if s.open_until > now {
                return None; // already open (an attempt that started before it opened)
            }
            // The half-open probe failed.
            s = State {
                open_until: now + br.timeout_ms,
                ..State::default()
            };
            change = Some("open again");
            return Some(encode(&s));
        }
        if s.errors == 0 || now.saturating_sub(s.window_start) > br.interval_ms {
            s.errors = 1;
            s.window_start = now;
        } else {
            s.errors += 1;
        }
        if s.errors >= br.max_errors {
            s = State {
                open_until: now + br.timeout_ms,
                ..State::default()
            };
            change = Some("open");
        }
        Some(encode(&s))
    });
    if matches!(change, Some("open" | "open again")) {
        h.counter_add(super::METRIC_BREAKER_OPENED, 1);
    }
    if let (Some(c), true) = (change, br.log) {
        h.log_warn(&format!(
            "tollgate: circuit breaker {} {c}",
            if br.name.is_empty() {
                &br.key
            } else {
                &br.name
            }
        ));
    }
}

/// The refusal when every backend's breaker is open.
pub fn unavailable(wait_ms: u64) -> Refusal {
    Refusal::custom(
        503,
        "server_error",
        "backend_unavailable",
        "the backend is failing and temporarily not used (circuit breaker open); retry later",
    )
    .retry_after(wait_ms.div_ceil(1000).max(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Endpoint, Gateway};
    use crate::host::mock::MockHost;
    use serde_json::json;

    fn breaker() -> Breaker {
        Breaker {
            key: "cb".into(),
            name: "llm".into(),
            max_errors: 2,
            interval_ms: 10_000,
            timeout_ms: 1_000,
            log: true,
        }
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let br = breaker();
        let mut h = MockHost::request("POST", "/", &[]);
        let ep = gw_with_breaker();
        init_breakers(
            &mut h,
            ep.backends.iter().filter_map(|b| b.rules.breaker.as_ref()),
        );
        h.shared_set("cb", &encode(&State::default()), None)
            .unwrap();
        h.now_ms = Some(1_000);
        assert_eq!(allow(&mut h, Some(&br)), Ok(()));
        record(&mut h, Some(&br), Some(500));
        record(&mut h, Some(&br), Some(200)); // success resets the consecutive count
        record(&mut h, Some(&br), Some(500));
        assert_eq!(allow(&mut h, Some(&br)), Ok(()));
        record(&mut h, Some(&br), None);
        assert_eq!(allow(&mut h, Some(&br)), Err(1_000));
        assert!(h
            .logs
            .borrow()
            .iter()
            .any(|l| l == "tollgate: circuit breaker llm open"));
        h.now_ms = Some(2_000);
        assert_eq!(allow(&mut h, Some(&br)), Ok(())); // the probe
        assert_eq!(allow(&mut h, Some(&br)), Err(1_000)); // one probe at a time
        record(&mut h, Some(&br), Some(503));
        assert_eq!(allow(&mut h, Some(&br)), Err(1_000)); // open again
        h.now_ms = Some(3_001);
        assert_eq!(allow(&mut h, Some(&br)), Ok(()));
        record(&mut h, Some(&br), Some(200));
        assert_eq!(allow(&mut h, Some(&br)), Ok(()));
        assert_eq!(allow(&mut h, Some(&br)), Ok(()));
    }

    #[test]
    fn errors_outside_the_interval_do_not_add_up() {
        let br = breaker();
        let mut h = MockHost::request("POST", "/", &[]);
        h.shared_set("cb", &encode(&State::default()), None)
            .unwrap();
        h.now_ms = Some(1_000);
        record(&mut h, Some(&br), Some(500));
        h.now_ms = Some(20_000);
        record(&mut h, Some(&br), Some(500));
        assert_eq!(allow(&mut h, Some(&br)), Ok(()));
    }

    fn gw_with_breaker() -> Endpoint {
        gateway(
            json!({"qos/circuit-breaker": {"max_errors": 2, "interval": 10, "timeout": 1}}),
            json!({}),
            json!({}),
        )
        .endpoints[0]
            .clone()
    }

    pub(crate) fn gateway(b0: Value, b1: Value, ep: Value) -> Gateway {
        let be = |extra: Value, model: &str| {
            let mut x = extra.as_object().unwrap().clone();
            x.insert(
                "ai/llm".into(),
                json!({"openai-compatible": {"v1": {"variables": {"model": model}}}}),
            );
            json!({"host": ["http://127.0.0.1:9"], "url_pattern": "/v1/chat/completions", "extra_config": x})
        };
        let doc = json!({"version": 3, "endpoints": [{"endpoint": "/v1/chat/completions", "method": "POST", "extra_config": ep,
            "backend": [be(b0, "a"), be(b1, "b")]}]});
        Gateway::from_value(&doc, &|_| None).unwrap()
    }

    #[test]
    fn config_errors() {
        let doc = |b0: Value, ep: Value| {
            json!({"version": 3, "endpoints": [{"endpoint": "/c", "method": "POST", "extra_config": ep, "backend": [
            {"host": ["http://h"], "url_pattern": "/", "extra_config": b0}]}]})
        };
        let cases = [
            (doc(json!({"backend/conditional": {"strategy": "policy", "value": "x"}}), json!({})), "$.endpoints[0].backend[0].extra_config.backend/conditional.strategy: the policy strategy (CEL) is not evaluated by tollgate yet (pending: CEL); use header or fallback"),
            (doc(json!({"backend/conditional": {"strategy": "header", "name": "X"}}), json!({})), "$.endpoints[0].backend[0].extra_config.backend/conditional.value: is required"),
            (doc(json!({"qos/circuit-breaker": {"max_errors": 1, "interval": 0, "timeout": 1}}), json!({})), "$.endpoints[0].backend[0].extra_config.qos/circuit-breaker.interval: must be at least 1"),
            (doc(json!({}), json!({"ai/routing": {"failover": true}})), "$.endpoints[0].extra_config.ai/routing: applies to endpoints with ai/llm backends"),
            (doc(json!({}), json!({"ai/routing": {"weights": [1, 2]}})), "$.endpoints[0].extra_config.ai/routing.weights: needs one weight per backend (1)"),
        ];
        for (d, want) in cases {
            assert_eq!(
                Gateway::from_value(&d, &|_| None).unwrap_err().to_string(),
                want
            );
        }
    }
}
