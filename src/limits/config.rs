//! What `tollgate limits` serves, read from the KrakenD document: the service `redis`
//! namespace (connection pools), the quotas of `governance/processors` that name a pool, and the
//! Redis rate limits (`qos/ratelimit/service/redis`, endpoint `qos/ratelimit/router/redis`).
//!
//! The quota rules and the token-bucket settings are read by the same functions the filter uses
//! (`cost::processors`, `cost::attach`, `governance::ratelimit::compile`), so both sides agree
//! on names, units and defaults; this module adds what only the fleet store needs. Every error
//! names its JSON path.

use crate::config::env;
use crate::config::reader::{ConfigError, Obj, Result};
use crate::cost::{self, Rule, Weight};
use crate::governance::ratelimit::{self, RateLimit};
use crate::limits::{client, scheme};
use serde_json::Value;

/// A KrakenD Redis connection pool (`redis.connection_pools[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub user: Option<String>,
    pub password: Option<Password>,
    /// `dial_timeout` (default 5 s, KrakenD's).
    pub dial_timeout_ms: u64,
    /// JSON path of the pool (for messages).
    pub path: String,
}

/// A Redis Cluster (`redis.clusters[]`): every key one script touches carries one hash tag
/// (`store::Keys::Tagged`), so it is on one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    /// `addresses`: the seed nodes.
    pub nodes: Vec<(String, u16)>,
    pub user: Option<String>,
    pub password: Option<Password>,
    /// `dial_timeout` (default 5 s).
    pub dial_timeout_ms: u64,
    /// `max_redirects` (KrakenD's default 3): MOVED/ASK redirections and retries on a node.
    pub max_redirects: u32,
    /// JSON path of the cluster (for messages).
    pub path: String,
}

/// A Redis password: `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// `on_failure_backoff_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backoff {
    Linear,
    #[default]
    Exponential,
}

/// What the quota does when Redis fails (KrakenD's `on_failure_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failure {
    /// `on_failure_allow`: the filter lets the call through (and counts it in a metric).
    pub allow: bool,
    /// `on_failure_max_retries`: retries of a failed Redis operation inside the service.
    pub max_retries: u32,
    pub backoff: Backoff,
}

/// A quota counted in Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    pub name: String,
    /// Its store: index in [`LimitsConfig::pools`], then [`LimitsConfig::clusters`].
    pub pool: usize,
    pub rules: Vec<Rule>,
    pub hash_keys: bool,
    pub failure: Failure,
    /// Weighed in money: counters are millionths of the currency, limits in currency units.
    pub cost: bool,
}

impl Quota {
    /// The weight the quota headers are computed with.
    pub fn weight(&self) -> Weight {
        if self.cost {
            Weight::Cost
        } else {
            Weight::TotalTokens
        }
    }

    /// A limit amount in counter units (millionths for cost), rounded down.
    pub fn max(&self, amount: f64) -> u64 {
        let scaled = if self.cost { amount * 1e6 } else { amount };
        // `as` saturates on floats (and maps NaN to 0).
        scaled.floor() as u64
    }
}

/// A Redis-backed rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisRateLimit {
    /// [`scheme::endpoint_scope`] or [`scheme::SERVICE_SCOPE`].
    pub scope: String,
    /// As [`Quota::pool`].
    pub pool: usize,
    pub limit: RateLimit,
    pub failure: Failure,
}

/// Everything `tollgate limits` serves.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LimitsConfig {
    pub pools: Vec<Pool>,
    pub clusters: Vec<Cluster>,
    pub quotas: Vec<Quota>,
    pub rate_limits: Vec<RedisRateLimit>,
    /// Accepted settings that mean nothing here.
    pub warnings: Vec<String>,
}

impl LimitsConfig {
    /// Whether a quota's or rate limit's store ([`Quota::pool`]) is a cluster.
    pub fn is_cluster(&self, store: usize) -> bool {
        store >= self.pools.len()
    }
}

/// Whether the document keeps anything in Redis (then [`compile`] applies to it at
/// `tollgate check`; a quota naming a pool without a `redis` namespace is refused by the
/// filter's own compile).
pub fn uses_redis(doc: &Value) -> bool {
    let has = |v: Option<&Value>, ns: &str| v.and_then(|e| e.get(ns)).is_some();
    let root = doc.get("extra_config");
    has(root, "redis")
        || has(root, "qos/ratelimit/service/redis")
        || doc
            .get("endpoints")
            .and_then(Value::as_array)
            .is_some_and(|eps| {
                eps.iter()
                    .any(|e| has(e.get("extra_config"), "qos/ratelimit/router/redis"))
            })
}

/// Reads the fleet limits of a KrakenD document. `lookup` resolves `{{ env "X" }}` (the
/// password); `resolve` checks that every pool address resolves (DNS) now.
pub fn compile(
    doc: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    resolve: bool,
) -> Result<LimitsConfig> {
    let mut out = LimitsConfig::default();
    let empty = Value::Object(Default::default());
    let extra = doc.get("extra_config").unwrap_or(&empty);
    let xpath = "$.extra_config";
    let redis = extra.get("redis").ok_or_else(|| {
        ConfigError::new(
            format!("{xpath}.redis"),
            "is required: the limits service keeps every counter in the Redis connection pools it declares",
        )
    })?;
    let names = client::pools(redis, &format!("{xpath}.redis"))?;
    pools(redis, &format!("{xpath}.redis"), lookup, resolve, &mut out)?;
    let defs = match extra.get("governance/processors") {
        Some(v) => cost::processors(v, &format!("{xpath}.governance/processors"), &names)?,
        None => Vec::new(),
    };
    let ppath = format!("{xpath}.governance/processors.quotas");
    let list = extra
        .get("governance/processors")
        .and_then(|p| p.get("quotas"))
        .and_then(Value::as_array);
    // Each definition's index among the Redis quotas (per-Envoy quotas are not served here).
    let mut served = Vec::with_capacity(defs.len());
    for (i, (def, raw)) in defs.iter().zip(list.into_iter().flatten()).enumerate() {
        if def.store == client::Store::Local {
            served.push(None);
            continue;
        }
        let mut o = Obj::new(raw, &format!("{ppath}[{i}]"))?;
        let pool = connection(&mut o, "connection_name", &names)?;
        let failure = failure(&mut o, true)?;
        served.push(Some(out.quotas.len()));
        out.quotas.push(Quota {
            name: def.name.clone(),
            pool,
            rules: def.rules.clone(),
            hash_keys: def.hash_keys,
            failure,
            cost: false,
        });
    }
    weights(doc, &defs, &served, &mut out.quotas)?;
    if let Some(v) = extra.get("qos/ratelimit/service/redis") {
        let path = format!("{xpath}.qos/ratelimit/service/redis");
        let rl = redis_rate_limit(v, &path, scheme::SERVICE_SCOPE, &names)?;
        out.rate_limits.push(rl);
    }
    for (i, ep) in endpoints(doc) {
        let Some(v) = ep
            .get("extra_config")
            .and_then(|e| e.get("qos/ratelimit/router/redis"))
        else {
            continue;
        };
        let path = format!("$.endpoints[{i}].extra_config.qos/ratelimit/router/redis");
        let method = ep.get("method").and_then(Value::as_str).unwrap_or("GET");
        let endpoint = ep
            .get("endpoint")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::new(format!("$.endpoints[{i}].endpoint"), "is required"))?;
        let scope = scheme::endpoint_scope(method, endpoint);
        out.rate_limits
            .push(redis_rate_limit(v, &path, &scope, &names)?);
    }
    Ok(out)
}

fn endpoints(doc: &Value) -> impl Iterator<Item = (usize, &Value)> {
    doc.get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// Pool settings KrakenD tunes its Go pool with: one multiplexed connection per pool (per
/// cluster node) replaces it.
const POOL_TUNING: &[&str] = &[
    "pool_size",
    "max_idle_conns",
    "max_active_conns",
    "min_idle_conns",
    "conn_max_idle_time",
    "conn_max_life_time",
    "pool_timeout",
    "max_retries",
    "min_retry_backoff",
    "max_retry_backoff",
    "opentelemetry",
    "client_name",
];

/// What pools and clusters share: credentials, `dial_timeout`, no TLS, tuning warned about.
struct Common {
    user: Option<String>,
    password: Option<Password>,
    dial_timeout_ms: u64,
}

fn common(
    p: &mut Obj<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Common> {
    let secret = |p: &mut Obj<'_>, key: &str| -> Result<Option<String>> {
        match p.opt_str(key)? {
            None => Ok(None),
            Some(s) => env::resolve(s, lookup)
                .map(Some)
                .map_err(|e| ConfigError::new(p.at(key), e.to_string())),
        }
    };
    let user = secret(p, "user_name")?;
    let password = secret(p, "password")?.map(Password);
    let dial_timeout_ms = match p.opt_str("dial_timeout")? {
        None => 5_000,
        Some(s) => crate::config::parse_duration_ms(s)
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                ConfigError::new(
                    p.at("dial_timeout"),
                    format!("\"{s}\" is not a duration longer than 0 (examples: 500ms, 5s)"),
                )
            })?,
    };
    if p.get("tls").is_some() {
        return Err(ConfigError::new(
            p.at("tls"),
            "TLS to Redis is not supported by tollgate limits; reach Redis on a private network or through a local TLS tunnel",
        ));
    }
    for key in POOL_TUNING {
        if p.get(key).is_some() {
            warnings.push(format!(
                "{}: KrakenD pool tuning, not used (tollgate limits keeps one multiplexed connection per Redis server)",
                p.at(key)
            ));
        }
    }
    Ok(Common {
        user,
        password,
        dial_timeout_ms,
    })
}

/// A `host:port` at `at`, resolved now when `resolve`.
fn address(address: &str, at: String, resolve: bool) -> Result<(String, u16)> {
    let (host, port) = host_port(address).ok_or_else(|| {
        ConfigError::new(
            &at,
            format!(
                "\"{address}\" is not host:port (examples: redis:6379, 10.0.0.5:6379, [::1]:6379)"
            ),
        )
    })?;
    if resolve {
        resolves(&host, port)
            .map_err(|e| ConfigError::new(&at, format!("\"{address}\" does not resolve: {e}")))?;
    }
    Ok((host, port))
}

/// Reads `redis.connection_pools` and `redis.clusters` into `out` (names checked by
/// [`client::pools`]).
fn pools(
    v: &Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    resolve: bool,
    out: &mut LimitsConfig,
) -> Result<()> {
    let mut o = Obj::new(v, path)?;
    for (i, p) in o
        .opt_array("connection_pools")?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut p = Obj::new(p, &format!("{path}.connection_pools[{i}]"))?;
        let name = p.str("name")?.to_string();
        let (host, port) = address(p.str("address")?, p.at("address"), resolve)?;
        let c = common(&mut p, lookup, &mut out.warnings)?;
        let db = match p.get("db") {
            None => 0,
            Some(v) => v
                .as_i64()
                .filter(|d| *d >= 0)
                .ok_or_else(|| ConfigError::new(p.at("db"), "expected a database number >= 0"))?,
        };
        let path = p.path().to_string();
        p.finish(&[])?;
        out.pools.push(Pool {
            name,
            host,
            port,
            db,
            user: c.user,
            password: c.password,
            dial_timeout_ms: c.dial_timeout_ms,
            path,
        });
    }
    for (i, c) in o.opt_array("clusters")?.into_iter().flatten().enumerate() {
        let c = Obj::new(c, &format!("{path}.clusters[{i}]"))?;
        out.clusters
            .push(cluster(c, lookup, resolve, &mut out.warnings)?);
    }
    o.finish(&[])
}

/// One `redis.clusters[]`: its seed `addresses` (the client learns the rest of the cluster
/// from them), credentials, `dial_timeout`, `max_redirects`.
fn cluster(
    mut c: Obj<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
    resolve: bool,
    warnings: &mut Vec<String>,
) -> Result<Cluster> {
    let name = c.str("name")?.to_string();
    let list = c.opt_array("addresses")?.map_or(&[][..], Vec::as_slice);
    if list.is_empty() {
        return Err(ConfigError::new(
            c.at("addresses"),
            "is required: at least one host:port of the cluster (the others are learned from it)",
        ));
    }
    let mut nodes = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let at = format!("{}[{i}]", c.at("addresses"));
        let a = a
            .as_str()
            .ok_or_else(|| ConfigError::new(&at, "expected a string host:port"))?;
        nodes.push(address(a, at, resolve)?);
    }
    let common = common(&mut c, lookup, warnings)?;
    let max_redirects = match c.opt_u64("max_redirects")? {
        None => 3,
        Some(n) => u32::try_from(n).ok().filter(|n| *n <= 16).ok_or_else(|| {
            ConfigError::new(
                c.at("max_redirects"),
                "must be at most 16 (each redirection adds a round trip to the call)",
            )
        })?,
    };
    let path = c.path().to_string();
    c.finish(&[])?;
    Ok(Cluster {
        name,
        nodes,
        user: common.user,
        password: common.password,
        dial_timeout_ms: common.dial_timeout_ms,
        max_redirects,
        path,
    })
}

/// `host:port`, `[v6]:port`, or `host` (port 6379).
fn host_port(address: &str) -> Option<(String, u16)> {
    let address = address.trim();
    if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once(']')?;
        let port = match port.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if port.is_empty() => 6379,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match address.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()?),
        Some(_) => return None,
        None => (address, 6379),
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    valid.then(|| (host.to_string(), port))
}

fn resolves(host: &str, port: u16) -> std::io::Result<()> {
    use std::net::ToSocketAddrs;
    match (host, port).to_socket_addrs()?.next() {
        Some(_) => Ok(()),
        None => Err(std::io::Error::other("no address")),
    }
}

/// The store a quota or rate limit names in `key`: its index in [`LimitsConfig::names`].
fn connection(o: &mut Obj<'_>, key: &str, names: &[String]) -> Result<usize> {
    let name = o.str(key)?;
    let at = o.at(key);
    client::pool(name, &at, names)
}

/// `on_failure_allow` (+ `on_failure_max_retries`, `on_failure_backoff_strategy` for quotas).
fn failure(o: &mut Obj<'_>, quota: bool) -> Result<Failure> {
    let mut f = Failure {
        allow: o.opt_bool("on_failure_allow")?.unwrap_or(false),
        ..Failure::default()
    };
    if !quota {
        return Ok(f);
    }
    if let Some(n) = o.opt_u64("on_failure_max_retries")? {
        f.max_retries = u32::try_from(n).ok().filter(|n| *n <= 10).ok_or_else(|| {
            ConfigError::new(
                o.at("on_failure_max_retries"),
                "must be at most 10 (each retry adds latency to the call)",
            )
        })?;
    }
    f.backoff = match o.opt_str("on_failure_backoff_strategy")? {
        None | Some("exponential") => Backoff::Exponential,
        Some("linear") => Backoff::Linear,
        Some(other) => {
            return Err(ConfigError::new(
                o.at("on_failure_backoff_strategy"),
                format!("\"{other}\" is not one of linear, exponential"),
            ))
        }
    };
    Ok(f)
}

/// Marks the quotas weighed in money (`weight_key: cost` in a `governance/quota` that attaches
/// them): their counters are millionths. A quota attached both in money and in tokens or
/// requests would add different units into one counter: refused.
fn weights(
    doc: &Value,
    defs: &[cost::QuotaDef],
    served: &[Option<usize>],
    quotas: &mut [Quota],
) -> Result<()> {
    let mut seen: Vec<Option<(bool, String)>> = vec![None; quotas.len()];
    let mut visit = |v: &Value, path: String| -> Result<()> {
        let a = cost::attach(v, &path, defs)?;
        let is_cost = a.weight == Weight::Cost;
        let Some(slot) = served
            .get(a.quota)
            .copied()
            .flatten()
            .and_then(|i| seen.get_mut(i))
        else {
            return Ok(());
        };
        match slot {
            Some((was, first)) if *was != is_cost => Err(ConfigError::new(
                format!("{path}.weight_key"),
                format!("quota \"{}\" is weighed in money here and not at {first} (one counter, one unit)", defs.get(a.quota).map_or("", |d| d.name.as_str())),
            )),
            Some(_) => Ok(()),
            None => {
                *slot = Some((is_cost, path));
                Ok(())
            }
        }
    };
    if let Some(v) = doc
        .get("extra_config")
        .and_then(|e| e.get("governance/quota"))
    {
        visit(v, "$.extra_config.governance/quota".to_string())?;
    }
    for (i, ep) in endpoints(doc) {
        if let Some(v) = ep
            .get("extra_config")
            .and_then(|e| e.get("governance/quota"))
        {
            visit(v, format!("$.endpoints[{i}].extra_config.governance/quota"))?;
        }
    }
    for (q, s) in quotas.iter_mut().zip(seen) {
        q.cost = s.is_some_and(|(c, _)| c);
    }
    Ok(())
}

/// A `qos/ratelimit/*/redis`, read as the filter reads it ([`ratelimit::compile_fleet`]).
fn redis_rate_limit(
    v: &Value,
    path: &str,
    scope: &str,
    names: &[String],
) -> Result<RedisRateLimit> {
    let f = ratelimit::compile_fleet(v, path, scope, names)?;
    Ok(RedisRateLimit {
        scope: f.scope,
        pool: f.pool,
        limit: f.limit,
        failure: Failure {
            allow: f.allow_on_failure,
            ..Failure::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        (name == "REDIS_PASSWORD").then(|| "s3cret".to_string())
    }

    fn doc() -> Value {
        json!({
            "version": 3,
            "extra_config": {
                "redis": {"connection_pools": [
                    {"name": "shared", "address": "127.0.0.1:6390", "db": 2,
                     "password": "{{ env \"REDIS_PASSWORD\" }}", "pool_size": 20}]},
                "governance/processors": {"quotas": [
                    {"name": "tokens", "connection_name": "shared", "on_failure_allow": true,
                     "on_failure_max_retries": 2, "on_failure_backoff_strategy": "linear",
                     "rules": [{"name": "gold", "limits": [{"amount": 1000, "unit": "hour"}, {"amount": 5000, "unit": "day"}]}]},
                    {"name": "money", "connection_name": "shared",
                     "rules": [{"name": "std", "limits": [{"amount": 2.5, "unit": "month"}]}]}]},
                "qos/ratelimit/service/redis": {"connection_name": "shared", "max_rate": 100, "every": "1s"}
            },
            "endpoints": [{
                "endpoint": "/v1/chat/completions", "method": "POST",
                "extra_config": {
                    "governance/quota": {"quota_name": "money", "tier_key": "x-plan", "weight_key": "cost",
                        "tiers": [{"rule_name": "std", "tier_value_as": "*", "strategy": "ip"}]},
                    "qos/ratelimit/router/redis": {"connection_pool": "shared", "client_max_rate": 5,
                        "every": "1m", "strategy": "header", "key": "X-Tenant", "client_max_tokens": 100}
                },
                "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/"}]
            }]
        })
    }

    #[test]
    fn reads_pools_quotas_and_rate_limits() {
        let c = compile(&doc(), &env, false).unwrap();
        let p = &c.pools[0];
        assert_eq!((p.host.as_str(), p.port, p.db), ("127.0.0.1", 6390, 2));
        assert_eq!(p.password, Some(Password("s3cret".into())));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(c.warnings[0].contains("pool_size"));
        let t = &c.quotas[0];
        assert_eq!(
            t.failure,
            Failure {
                allow: true,
                max_retries: 2,
                backoff: Backoff::Linear
            }
        );
        assert_eq!(t.rules[0].limits.len(), 2);
        assert!(!t.cost && c.quotas[1].cost);
        assert_eq!(c.quotas[1].max(2.5), 2_500_000);
        assert_eq!(c.rate_limits[0].scope, "service");
        assert_eq!(c.rate_limits[1].scope, "POST /v1/chat/completions");
        assert!(c.rate_limits[1].limit.client.is_some() && c.rate_limits[1].limit.tokens.is_some());
        assert!(uses_redis(&doc()));
        assert!(!uses_redis(&json!({"version": 3, "endpoints": []})));
    }

    #[test]
    fn errors_name_the_path() {
        let set = |ptr: &str, v: Value| {
            let mut d = doc();
            let (parent, key) = ptr.rsplit_once('/').unwrap();
            d.pointer_mut(parent)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert(key.into(), v);
            compile(&d, &env, true).unwrap_err().to_string()
        };
        let q = "/extra_config/governance~1processors/quotas/0";
        assert!(
            set(&format!("{q}/connection_name"), json!("nope")).starts_with(
            "$.extra_config.governance/processors.quotas[0].connection_name: \"nope\" names no Redis connection pool or cluster (declared in $.extra_config.redis: shared)"
        ));
        assert!(set("/extra_config/redis/connection_pools/0/address", json!("no-such-host.invalid:6379"))
            .starts_with("$.extra_config.redis.connection_pools[0].address: \"no-such-host.invalid:6379\" does not resolve"));
        assert!(set(
            "/extra_config/redis/connection_pools/0/address",
            json!("a:b:c")
        )
        .starts_with(
            "$.extra_config.redis.connection_pools[0].address: \"a:b:c\" is not host:port"
        ));
        assert!(set(&format!("{q}/rules/0/limits/1/unit"), json!("fortnight"))
            .starts_with("$.extra_config.governance/processors.quotas[0].rules[0].limits[1].unit: \"fortnight\" is not one of"));
        assert!(
            set(&format!("{q}/on_failure_backoff_strategy"), json!("random")).ends_with(
                "on_failure_backoff_strategy: \"random\" is not one of linear, exponential"
            )
        );
        assert!(
            set("/extra_config/redis/connection_pools/0/tls", json!({})).starts_with(
                "$.extra_config.redis.connection_pools[0].tls: TLS to Redis is not supported"
            )
        );
        assert!(set(
            "/extra_config/redis/connection_pools/0/password",
            json!("{{ env \"MISSING\" }}")
        )
        .starts_with(
            "$.extra_config.redis.connection_pools[0].password: environment variable MISSING"
        ));
        let e = set(
            "/extra_config/redis/clusters",
            json!([{"name": "shared", "addresses": ["127.0.0.1:7000"]}]),
        );
        assert!(
            e.starts_with("$.extra_config.redis.clusters[0].name: \"shared\" is declared twice"),
            "{e}"
        );
        let mut d = doc();
        d["extra_config"].as_object_mut().unwrap().remove("redis");
        assert!(compile(&d, &env, false)
            .unwrap_err()
            .to_string()
            .starts_with("$.extra_config.redis: is required"));
        let mut d = doc();
        d["extra_config"]["governance/quota"] = json!({"quota_name": "money", "tier_key": "x",
            "tiers": [{"rule_name": "std", "tier_value_as": "*", "strategy": "ip"}]});
        let e = compile(&d, &env, false).unwrap_err().to_string();
        assert!(e.starts_with("$.endpoints[0].extra_config.governance/quota.weight_key: quota \"money\" is weighed in money here and not at $.extra_config.governance/quota"), "{e}");
        let mut d = doc();
        d["endpoints"][0]["extra_config"]["qos/ratelimit/router/redis"]["burst"] = json!(1);
        assert_eq!(
            compile(&d, &env, false).unwrap_err().to_string(),
            "$.endpoints[0].extra_config.qos/ratelimit/router/redis.burst: unknown field"
        );
    }

    #[test]
    fn reads_clusters_and_refuses_what_cannot_be_served() {
        let mut d = doc();
        d["extra_config"]["redis"]["clusters"] = json!([{"name": "c", "addresses": ["127.0.0.1:7000", "127.0.0.1:7001"],
            "password": "{{ env \"REDIS_PASSWORD\" }}", "user_name": "u", "dial_timeout": "2s",
            "max_redirects": 5, "pool_size": 10}]);
        d["extra_config"]["governance/processors"]["quotas"][0]["connection_name"] = json!("c");
        d["endpoints"][0]["extra_config"]["qos/ratelimit/router/redis"]["connection_pool"] =
            json!("c");
        let c = compile(&d, &env, true).unwrap();
        let k = &c.clusters[0];
        assert_eq!(
            k.nodes,
            vec![("127.0.0.1".into(), 7000), ("127.0.0.1".into(), 7001)]
        );
        assert_eq!(
            (k.dial_timeout_ms, k.max_redirects, k.user.as_deref()),
            (2000, 5, Some("u"))
        );
        assert_eq!(k.password, Some(Password("s3cret".into())));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(c
            .warnings
            .iter()
            .any(|w| w.starts_with("$.extra_config.redis.clusters[0].pool_size")));
        assert_eq!((c.quotas[0].pool, c.quotas[1].pool), (1, 0));
        assert!(c.is_cluster(c.quotas[0].pool) && !c.is_cluster(c.quotas[1].pool));
        assert_eq!(c.rate_limits[1].pool, 1);
        let bad = |cluster: Value| {
            let mut d = d.clone();
            d["extra_config"]["redis"]["clusters"] = json!([cluster]);
            compile(&d, &env, true).unwrap_err().to_string()
        };
        let at = "$.extra_config.redis.clusters[0]";
        for (cluster, want) in [
            (json!({"name": "c"}), format!("{at}.addresses: is required")),
            (
                json!({"name": "c", "addresses": []}),
                format!("{at}.addresses: is required"),
            ),
            (
                json!({"name": "c", "addresses": ["a:b:c"]}),
                format!("{at}.addresses[0]: \"a:b:c\" is not host:port"),
            ),
            (
                json!({"name": "c", "addresses": ["127.0.0.1:1", "no-such-host.invalid:7000"]}),
                format!("{at}.addresses[1]: \"no-such-host.invalid:7000\" does not resolve"),
            ),
            (
                json!({"name": "c", "addresses": [7000]}),
                format!("{at}.addresses[0]: expected a string"),
            ),
            (
                json!({"name": "c", "addresses": ["127.0.0.1:1"], "tls": {}}),
                format!("{at}.tls: TLS to Redis is not supported"),
            ),
            (
                json!({"name": "c", "addresses": ["127.0.0.1:1"], "max_redirects": 99}),
                format!("{at}.max_redirects: must be at most 16"),
            ),
            (
                json!({"name": "c", "addresses": ["127.0.0.1:1"], "db": 1}),
                format!("{at}.db: unknown field"),
            ),
        ] {
            let e = bad(cluster);
            assert!(e.starts_with(&want), "{e} / {want}");
        }
        let mut d = doc();
        d["extra_config"]["governance/processors"]["quotas"][0]["connection_name"] = json!("c");
        let e = compile(&d, &env, false).unwrap_err().to_string();
        assert!(e.contains("connection_name: \"c\" names no Redis connection pool or cluster (declared in $.extra_config.redis: shared)"), "{e}");
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(host_port("redis"), Some(("redis".into(), 6379)));
        assert_eq!(host_port("redis:6380"), Some(("redis".into(), 6380)));
        assert_eq!(host_port("[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(host_port("redis:x"), None);
        assert_eq!(host_port("a b:1"), None);
    }
}
