//! The filter's side of the fleet limits, as configured: where a quota or rate limit keeps its
//! counters ([`Store`]), the `redis` namespace's pool names, and how the filter reaches the
//! limits service (`limits/service`: the callout timeout; the cluster `tollgate envoy
//! --limits` adds, [`CLUSTER`]). Compiled for the .wasm; the service reads the rest of the
//! `redis` namespace itself (`limits::config`).
//!
//! A quota's `connection_name` names a Redis connection pool (its counters are in Redis,
//! shared by every Envoy, kept across restarts) or [`LOCAL`]: the explicit choice of the
//! per-Envoy store (counted in each Envoy's shared data, exact within one Envoy, reset when
//! it restarts). Any other name is refused, as KrakenD refuses it.

use crate::config::reader::{ConfigError, Obj, Result};
use serde_json::Value;

/// The `connection_name` that keeps a quota in each Envoy's own store (no Redis).
pub const LOCAL: &str = "per-envoy";
/// The Envoy cluster of the limits service (HTTP/2), added by `tollgate envoy --limits`.
pub const CLUSTER: &str = "tollgate_limits";
/// Default bound on one call to the limits service.
pub const TIMEOUT_MS: u64 = 250;
/// Longest accepted `limits/service.timeout`: a request never waits longer for its limits.
pub const MAX_TIMEOUT_MS: u64 = 10_000;

/// Where a quota keeps its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Store {
    /// Each Envoy's shared data (`connection_name`: [`LOCAL`]).
    #[default]
    Local,
    /// Redis, through the limits service: the index of the name in [`pools`] (a pool or a
    /// cluster).
    Fleet(usize),
}

/// The fleet settings of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Names of `redis.connection_pools` then `redis.clusters`, in order ([`pools`]).
    pub pools: Vec<String>,
    /// `limits/service.timeout`: each call's bound (ms).
    pub timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            pools: Vec::new(),
            timeout_ms: TIMEOUT_MS,
        }
    }
}

/// Reads the names a quota or rate limit may use in the service's `redis` namespace: its
/// connection pools, then its clusters (the index of a name is the service's store); the
/// service checks the rest (addresses, credentials, tuning). [`LOCAL`] is reserved, and one
/// name names one thing.
pub fn pools(v: &Value, path: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for list in ["connection_pools", "clusters"] {
        let items = v.get(list).and_then(Value::as_array);
        for (i, p) in items.into_iter().flatten().enumerate() {
            let at = format!("{path}.{list}[{i}].name");
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ConfigError::new(&at, "is required (a string)"))?;
            if name == LOCAL {
                return Err(ConfigError::new(
                    at,
                    format!("\"{LOCAL}\" is reserved: a quota with this connection_name is counted in each Envoy's own store"),
                ));
            }
            if out.iter().any(|n| n == name) {
                return Err(ConfigError::new(
                    at,
                    format!("\"{name}\" is declared twice in {path} (a connection_name must name one pool or one cluster)"),
                ));
            }
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Reads `limits/service` (tollgate, service level): `timeout`.
pub fn service(v: &Value, path: &str, settings: &mut Settings) -> Result<()> {
    let mut o = Obj::new(v, path)?;
    if let Some(s) = o.opt_str("timeout")? {
        settings.timeout_ms = crate::config::reader::parse_duration_ms(s)
            .ok()
            .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
            .ok_or_else(|| {
                ConfigError::new(
                    o.at("timeout"),
                    format!("\"{s}\" is not a duration from 1ms to 10s (examples: 100ms, 1s)"),
                )
            })?;
    }
    o.finish(&[])
}

/// The store a `connection_name` names (at `path`): [`LOCAL`], a declared pool or cluster.
pub fn store(name: &str, path: &str, pools: &[String]) -> Result<Store> {
    if name == LOCAL {
        return Ok(Store::Local);
    }
    if let Some(i) = pools.iter().position(|p| p == name) {
        return Ok(Store::Fleet(i));
    }
    Err(ConfigError::new(
        path,
        format!("\"{name}\" names no Redis connection pool or cluster (declared in $.extra_config.redis: {}); use \"{LOCAL}\" to count this quota in each Envoy's own store (not shared between Envoys, reset when Envoy restarts)", declared(pools)),
    ))
}

/// The pool or cluster a Redis rate limit names (at `path`) ([`LOCAL`] is for quotas;
/// `qos/ratelimit/router` is the per-Envoy rate limit).
pub fn pool(name: &str, path: &str, pools: &[String]) -> Result<usize> {
    if let Some(i) = pools.iter().position(|p| p == name) {
        return Ok(i);
    }
    let why = if name == LOCAL {
        format!(
            "\"{LOCAL}\" is for quotas: the rate limit kept in each Envoy is qos/ratelimit/router"
        )
    } else {
        format!(
            "\"{name}\" names no Redis connection pool or cluster (declared in $.extra_config.redis: {})",
            declared(pools)
        )
    };
    Err(ConfigError::new(path, why))
}

fn declared(pools: &[String]) -> String {
    if pools.is_empty() {
        "none".to_string()
    } else {
        pools.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stores_and_pools() {
        let pools = pools(
            &json!({"connection_pools": [{"name": "a", "address": "x:1"}, {"name": "b"}]}),
            "$.r",
        )
        .unwrap();
        assert_eq!(pools, ["a", "b"]);
        assert_eq!(store("b", "$.q", &pools), Ok(Store::Fleet(1)));
        assert_eq!(store(LOCAL, "$.q", &[]), Ok(Store::Local));
        let e = store("c", "$.q", &pools).unwrap_err().to_string();
        assert!(e.starts_with("$.q: \"c\" names no Redis connection pool or cluster (declared in $.extra_config.redis: a, b); use \"per-envoy\""), "{e}");
        assert!(store("c", "$.q", &[])
            .unwrap_err()
            .message
            .contains("redis: none"));
        assert_eq!(pool("b", "$.r", &pools), Ok(1));
        assert!(pool(LOCAL, "$.r", &pools)
            .unwrap_err()
            .message
            .contains("qos/ratelimit/router"));
        assert!(pool("c", "$.r", &pools)
            .unwrap_err()
            .message
            .ends_with("redis: a, b)"));
        let e = super::pools(&json!({"connection_pools": [{"name": LOCAL}]}), "$.r").unwrap_err();
        assert_eq!(e.path, "$.r.connection_pools[0].name");
        let both = json!({"connection_pools": [{"name": "a"}], "clusters": [{"name": "c"}, {"name": "a"}]});
        let e = super::pools(&both, "$.r").unwrap_err();
        assert_eq!(e.path, "$.r.clusters[1].name");
        assert!(e.message.contains("declared twice"), "{e}");
        let names = super::pools(
            &json!({"connection_pools": [{"name": "a"}], "clusters": [{"name": "c"}]}),
            "$.r",
        )
        .unwrap();
        assert_eq!(store("c", "$.q", &names), Ok(Store::Fleet(1)));
    }

    #[test]
    fn timeout_is_bounded() {
        let mut s = Settings::default();
        service(&json!({"timeout": "80ms"}), "$.l", &mut s).unwrap();
        assert_eq!(s.timeout_ms, 80);
        for bad in ["0s", "11s", "soon"] {
            let e = service(&json!({"timeout": bad}), "$.l", &mut s).unwrap_err();
            assert_eq!(e.path, "$.l.timeout");
        }
        assert!(service(&json!({"retries": 1}), "$.l", &mut s).is_err());
    }
}
