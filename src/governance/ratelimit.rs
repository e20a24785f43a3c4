//! `qos/ratelimit/router` (KrakenD's endpoint rate limit) plus tollgate's per-client token
//! limit, as token buckets in Envoy shared data: exact across all worker threads of one
//! Envoy (every update is a compare-and-swap), not shared between Envoys.
//!
//! Layout in shared data, per endpoint (`id` = `tollgate.rl.<endpoint shared_id>.`):
//! - `<id>g`: the endpoint bucket (`max_rate`/`capacity`);
//! - `<id>c0` .. `<id>c15`: client request buckets (`client_max_rate`/`client_capacity`),
//!   each shard holding the buckets of many clients (a client's shard: hash of its key);
//! - `<id>t0` .. `<id>t15`: client token buckets (`client_max_tokens`).
//!
//! Why fixed shards created at configure time: proxy-wasm's `set_shared_data` with a CAS
//! token of 0 (what a key that does not exist yet has) writes unconditionally, so two workers
//! creating the same new key at once would both "win" and one update would be lost. A key per
//! client would hit that race on every client's first requests. With a fixed set of keys,
//! created in `Root::on_configure` (before traffic; several VMs creating them at once write the
//! same empty value, which is harmless), every request-path write is a real CAS on an existing
//! key. A missing client record means "bucket full", and a record whose bucket would be full
//! again by now carries no information: such records are pruned on every write of the shard,
//! so shards only hold clients active within the last refill period.
//!
//! Values: one format byte, then fixed-size little-endian records (client hash u64, tokens f64,
//! last refill time in ms u64). The endpoint bucket is a single record with hash 0.

use super::rate_limited;
use crate::config::reader::{ConfigError, Obj, Result};
use crate::host::{shared_update, Host};
use crate::refusal::Refusal;
use crate::routing::Params;
use crate::support::addr::strip_port;
use serde_json::Value;

/// Shards per bucket family and endpoint.
pub const SHARDS: u64 = 16;
const FORMAT: u8 = 1;
const RECORD: usize = 24;

/// How a client is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The downstream address Envoy reports (`source.address`, port stripped).
    #[default]
    Ip,
    /// The value of the header named by `key`.
    Header,
    /// The value of the endpoint `{param}` named by `key`.
    Param,
}

/// One bucket kind: `rate` tokens per `every_ms`, holding at most `capacity`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub rate: f64,
    pub every_ms: u64,
    pub capacity: f64,
}

impl Bucket {
    /// Tokens after refilling from `last` to `now`.
    fn refill(&self, tokens: f64, last: u64, now: u64) -> f64 {
        let elapsed = now.saturating_sub(last) as f64;
        (tokens + elapsed * self.rate / self.every_ms as f64).min(self.capacity)
    }

    /// Milliseconds until the bucket holds `want` tokens (from `tokens` now).
    fn wait_ms(&self, tokens: f64, want: f64) -> u64 {
        if tokens >= want || self.rate <= 0.0 {
            return 0;
        }
        ((want - tokens) * self.every_ms as f64 / self.rate).ceil() as u64
    }
}

/// A compiled `qos/ratelimit/router`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Shared-data key prefix of this endpoint.
    pub id: String,
    /// `max_rate` per `every`, all clients together (503 when exceeded).
    pub endpoint: Option<Bucket>,
    /// `client_max_rate` per `every`, per client (429 when exceeded).
    pub client: Option<Bucket>,
    /// tollgate: `client_max_tokens` LLM tokens per `client_tokens_every`, per client (429).
    pub tokens: Option<Bucket>,
    pub strategy: Strategy,
    /// Header name (lowercase) or param name.
    pub key: String,
}

/// Reads `qos/ratelimit/router` at `path`; `endpoint_id` ([`super::shared_id`]) makes the
/// shared-data keys unique. A limit must set a rate above 0.
pub fn compile(v: &Value, path: &str, endpoint_id: &str) -> Result<RateLimit> {
    compile_router(v, path, endpoint_id)?.ok_or_else(|| {
        ConfigError::new(
            path,
            "set max_rate, client_max_rate or client_max_tokens (a number above 0)",
        )
    })
}

/// [`compile`] with KrakenD's meaning of 0: rates set to 0 only (`"max_rate": 0,
/// "client_max_rate": 0`) are no limit at all (`None`). Without any rate, refused.
pub fn compile_router(v: &Value, path: &str, endpoint_id: &str) -> Result<Option<RateLimit>> {
    let mut o = Obj::new(v, path)?;
    let every_ms = match o.opt_str("every")? {
        None => 1000,
        Some(s) => crate::config::reader::parse_duration_ms(s)
            .map_err(|m| ConfigError::new(o.at("every"), m))?,
    };
    if every_ms == 0 {
        return Err(ConfigError::new(o.at("every"), "must be longer than 0"));
    }
    let endpoint = bucket(&mut o, "max_rate", "capacity", every_ms)?;
    let client = bucket(&mut o, "client_max_rate", "client_capacity", every_ms)?;
    let tokens_every = match o.opt_str("client_tokens_every")? {
        None => every_ms,
        Some(s) => crate::config::reader::parse_duration_ms(s)
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                ConfigError::new(
                    o.at("client_tokens_every"),
                    format!("\"{s}\" is not a duration longer than 0 (examples: 1m, 1h)"),
                )
            })?,
    };
    let tokens = bucket(&mut o, "client_max_tokens", "", tokens_every)?;
    if endpoint.is_none() && client.is_none() && tokens.is_none() {
        let rates = ["max_rate", "client_max_rate", "client_max_tokens"];
        if !rates.iter().any(|k| v.get(k).is_some()) {
            return Err(ConfigError::new(
                path,
                "set max_rate, client_max_rate or client_max_tokens (a number above 0)",
            ));
        }
        // KrakenD: "a 0 is the equivalent to no limitation"; the rest is still checked.
        o.opt_str("strategy")?;
        o.opt_str("key")?;
        o.finish(&["num_shards", "cleanup_period", "cleanup_threads"])?;
        return Ok(None);
    }
    let strategy = match o.opt_str("strategy")? {
        None | Some("ip") => Strategy::Ip,
        Some("header") => Strategy::Header,
        Some("param") => Strategy::Param,
        Some(other) => {
            return Err(ConfigError::new(
                o.at("strategy"),
                format!("\"{other}\" is not one of ip, header, param"),
            ))
        }
    };
    let key = o.opt_str("key")?.unwrap_or_default().to_ascii_lowercase();
    if strategy != Strategy::Ip && key.is_empty() {
        return Err(ConfigError::new(
            o.at("key"),
            "is required with the header and param strategies (the header or {param} name)",
        ));
    }
    // KrakenD's memory tuning knobs; shards here are fixed and pruned on write.
    o.finish(&["num_shards", "cleanup_period", "cleanup_threads"])?;
    Ok(Some(RateLimit {
        id: format!("tollgate.rl.{endpoint_id}."),
        endpoint,
        client,
        tokens,
        strategy,
        key,
    }))
}

fn bucket(o: &mut Obj<'_>, rate_key: &str, cap_key: &str, every_ms: u64) -> Result<Option<Bucket>> {
    let Some(rate) = o.opt_f64(rate_key)? else {
        return Ok(None);
    };
    if !(rate >= 0.0 && rate.is_finite()) {
        return Err(ConfigError::new(o.at(rate_key), "must be a number >= 0"));
    }
    let capacity = if cap_key.is_empty() {
        None
    } else {
        o.opt_u64(cap_key)?
    };
    if rate == 0.0 {
        return Ok(None); // KrakenD: 0 means unlimited
    }
    // KrakenD's default capacity: the rate, or 1 for fractions.
    let capacity = capacity.map(|c| c as f64).unwrap_or(rate.floor().max(1.0));
    if capacity < 1.0 {
        return Err(ConfigError::new(o.at(cap_key), "must be at least 1"));
    }
    Ok(Some(Bucket {
        rate,
        every_ms,
        capacity,
    }))
}

impl RateLimit {
    /// Every shared-data key this limit uses (created at configure time).
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if self.endpoint.is_some() {
            keys.push(format!("{}g", self.id));
        }
        for (family, on) in [("c", self.client.is_some()), ("t", self.tokens.is_some())] {
            if on {
                keys.extend((0..SHARDS).map(|n| format!("{}{family}{n}", self.id)));
            }
        }
        keys
    }

    /// The client's identity under this limit's strategy (None: no client limits).
    pub fn client_key<H: Host + ?Sized>(&self, h: &H, params: &Params) -> Option<String> {
        if self.client.is_none() && self.tokens.is_none() {
            return None;
        }
        // A request without the identifying header or param shares one anonymous bucket:
        // omitting the header must not escape the limit.
        Some(match self.strategy {
            Strategy::Ip => h
                .property(&["source", "address"])
                .map(|a| strip_port(&String::from_utf8_lossy(&a)).to_string())
                .unwrap_or_default(),
            Strategy::Header => h
                .request_header(&self.key)
                .map(|v| crate::cost::header_identity(&self.key, &v))
                .unwrap_or_default(),
            Strategy::Param => params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&self.key))
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        })
    }
}

/// Creates the shard keys of `rl` that do not exist yet (configure time; see module docs).
pub fn init_shared<H: Host + ?Sized>(h: &mut H, rl: &RateLimit) {
    for key in rl.keys() {
        let (_, cas) = h.shared_get(&key);
        if cas.is_none() && h.shared_set(&key, &[FORMAT], None).is_err() {
            h.log_warn(&format!("tollgate: cannot create shared data key {key}"));
        }
    }
}

/// FNV-1a, 64 bits: the client's record id (never 0, which marks the endpoint bucket).
fn hash(key: &str) -> u64 {
    crate::support::hash::fnv1a64(key.as_bytes()).max(1)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Record {
    id: u64,
    tokens: f64,
    last: u64,
}

fn decode(v: Option<&[u8]>) -> Vec<Record> {
    let Some(bytes) = v.and_then(|b| b.strip_prefix(&[FORMAT])) else {
        return Vec::new();
    };
    bytes
        .chunks_exact(RECORD)
        .filter_map(|c| {
            let id = u64::from_le_bytes(c.get(0..8)?.try_into().ok()?);
            let tokens = f64::from_le_bytes(c.get(8..16)?.try_into().ok()?);
            let last = u64::from_le_bytes(c.get(16..24)?.try_into().ok()?);
            Some(Record { id, tokens, last })
        })
        .collect()
}

fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + records.len() * RECORD);
    out.push(FORMAT);
    for r in records {
        out.extend_from_slice(&r.id.to_le_bytes());
        out.extend_from_slice(&r.tokens.to_le_bytes());
        out.extend_from_slice(&r.last.to_le_bytes());
    }
    out
}

/// What to do to a bucket.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Take one token if there is one.
    Take,
    /// Succeed if the balance is above 0 (token limits: checked, charged later).
    Check,
    /// Subtract this many tokens (may go below 0: a debt paid by waiting).
    Charge(f64),
}

/// Applies `op` to the bucket `id` in shared-data `key`; returns the wait in ms when refused.
fn apply<H: Host + ?Sized>(h: &mut H, key: &str, id: u64, b: &Bucket, op: Op) -> Option<u64> {
    let now = h.now_millis();
    let mut refused = None;
    shared_update(h, key, |current| {
        let mut records = decode(current);
        // Prune the records of other clients whose bucket is full again.
        records.retain(|r| r.id == id || b.refill(r.tokens, r.last, now) < b.capacity);
        let pos = records.iter().position(|r| r.id == id);
        let tokens = pos
            .and_then(|i| records.get(i))
            .map(|r| b.refill(r.tokens, r.last, now))
            .unwrap_or(b.capacity);
        let (next, wait) = match op {
            Op::Take if tokens >= 1.0 => (tokens - 1.0, None),
            Op::Take => (tokens, Some(b.wait_ms(tokens, 1.0))),
            Op::Check if tokens > 0.0 => (tokens, None),
            Op::Check => (tokens, Some(b.wait_ms(tokens, f64::MIN_POSITIVE).max(1))),
            Op::Charge(n) => (tokens - n, None),
        };
        refused = wait;
        if wait.is_some() && pos.is_none() {
            return None; // nothing to record
        }
        let rec = Record {
            id,
            tokens: next,
            last: now,
        };
        match pos.and_then(|i| records.get_mut(i)) {
            Some(r) => *r = rec,
            None => records.push(rec),
        }
        Some(encode(&records))
    });
    refused
}

/// Retry-After in whole seconds, rounded up, at least 1.
fn retry_after(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

/// Before the request: client token balance, client request bucket, then endpoint bucket.
/// A client refused by its own limit does not consume the endpoint's tokens.
pub fn check<H: Host + ?Sized>(h: &mut H, rl: &RateLimit, client: Option<&str>) -> Option<Refusal> {
    if let Some(client) = client {
        let id = hash(client);
        let shard = id % SHARDS;
        if let Some(b) = &rl.tokens {
            let key = format!("{}t{shard}", rl.id);
            if let Some(wait) = apply(h, &key, id, b, Op::Check) {
                return Some(rate_limited(
                    429,
                    "tokens",
                    "token rate limit exceeded for this client; retry later",
                    retry_after(wait),
                ));
            }
        }
        if let Some(b) = &rl.client {
            let key = format!("{}c{shard}", rl.id);
            if let Some(wait) = apply(h, &key, id, b, Op::Take) {
                return Some(rate_limited(
                    429,
                    "requests",
                    "rate limit exceeded for this client; retry later",
                    retry_after(wait),
                ));
            }
        }
    }
    if let Some(b) = &rl.endpoint {
        let key = format!("{}g", rl.id);
        if let Some(wait) = apply(h, &key, 0, b, Op::Take) {
            return Some(rate_limited(
                503,
                "requests",
                "the endpoint's rate limit is exceeded; retry later",
                retry_after(wait),
            ));
        }
    }
    None
}

/// Whom to charge the tokens of an LLM answer to (saved when the request passed the limits).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCharge {
    key: String,
    id: u64,
    bucket: Bucket,
}

impl TokenCharge {
    /// The charge target of `client` under `rl`, when `rl` limits tokens.
    pub fn new(rl: &RateLimit, client: Option<&str>) -> Option<Self> {
        let (b, client) = (rl.tokens?, client?);
        let id = hash(client);
        Some(Self {
            key: format!("{}t{}", rl.id, id % SHARDS),
            id,
            bucket: b,
        })
    }
}

/// Charges `tokens` LLM tokens (prompt + completion of one answer) to a client's token
/// bucket; the next request of that client is refused (429) while the balance is below 1.
/// Callable from any accounting code that knows the usage.
pub fn charge_tokens<H: Host + ?Sized>(h: &mut H, charge: Option<&TokenCharge>, tokens: u64) {
    if let Some(c) = charge {
        if tokens > 0 {
            apply(h, &c.key, c.id, &c.bucket, Op::Charge(tokens as f64));
        }
    }
}

/// Tokens charged so far to a client's token bucket (tests: the bucket as last written).
#[cfg(test)]
pub(crate) fn charged<H: Host + ?Sized>(h: &H, c: &TokenCharge) -> f64 {
    let (data, _) = h.shared_get(&c.key);
    decode(data.as_deref())
        .iter()
        .find(|r| r.id == c.id)
        .map_or(0.0, |r| c.bucket.capacity - r.tokens)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;
    use serde_json::json;

    fn rl(v: Value) -> RateLimit {
        compile(&v, "$.rl", "0").unwrap()
    }

    fn host() -> MockHost {
        let mut h = MockHost::request("POST", "/x", &[("x-tenant", "a")]);
        h.now = 1_700_000_000;
        h
    }

    fn set_ms(h: &mut MockHost, ms: u64) {
        h.now = ms / 1000;
        h.now_ms = Some(ms);
    }

    #[test]
    fn endpoint_bucket_allows_capacity_then_503_and_refills() {
        let r = rl(json!({"max_rate": 3, "every": "2s"}));
        let mut h = host();
        init_shared(&mut h, &r);
        set_ms(&mut h, 10_000_000);
        for _ in 0..3 {
            assert!(check(&mut h, &r, None).is_none());
        }
        let d = check(&mut h, &r, None).unwrap();
        assert_eq!((d.status, d.retry_after), (503, Some(1)));
        set_ms(&mut h, 10_000_000 + 667);
        assert!(check(&mut h, &r, None).is_none());
        assert!(check(&mut h, &r, None).is_some());
        set_ms(&mut h, 10_000_000 + 5_000);
        for _ in 0..3 {
            assert!(check(&mut h, &r, None).is_none());
        }
        assert!(check(&mut h, &r, None).is_some());
    }

    #[test]
    fn client_buckets_are_separate_and_429_with_retry_after() {
        let r = rl(
            json!({"client_max_rate": 2, "every": "10s", "strategy": "header", "key": "X-Tenant"}),
        );
        let mut h = host();
        init_shared(&mut h, &r);
        set_ms(&mut h, 1_000);
        let a = r.client_key(&h, &vec![]).unwrap();
        assert_eq!(a, "a");
        assert!(check(&mut h, &r, Some("a")).is_none());
        assert!(check(&mut h, &r, Some("a")).is_none());
        let d = check(&mut h, &r, Some("a")).unwrap();
        assert_eq!(d.status, 429);
        assert_eq!(d.retry_after, Some(5)); // one token every 5 s
        assert!(check(&mut h, &r, Some("b")).is_none());
        // A missing header is one anonymous client, not a free pass.
        let h2 = MockHost::request("POST", "/x", &[]);
        assert_eq!(r.client_key(&h2, &vec![]).unwrap(), "");
    }

    #[test]
    fn full_buckets_of_idle_clients_are_pruned() {
        let r = rl(json!({"client_max_rate": 1, "every": "1s", "strategy": "param", "key": "id"}));
        let mut h = host();
        init_shared(&mut h, &r);
        set_ms(&mut h, 1_000);
        for i in 0..200 {
            check(&mut h, &r, Some(&format!("c{i}")));
        }
        let total = |h: &MockHost| -> usize {
            h.shared
                .borrow()
                .values()
                .map(|(v, _)| decode(Some(v)).len())
                .sum()
        };
        assert_eq!(total(&h), 200);
        set_ms(&mut h, 3_000);
        for i in 0..SHARDS {
            // touch every shard once
            let name = (0..)
                .map(|n| format!("z{n}"))
                .find(|k| hash(k) % SHARDS == i)
                .unwrap();
            check(&mut h, &r, Some(&name));
        }
        assert_eq!(total(&h), SHARDS as usize);
    }

    #[test]
    fn tokens_are_charged_and_checked() {
        let r = rl(
            json!({"client_max_tokens": 100, "client_tokens_every": "1m", "strategy": "header", "key": "x-tenant"}),
        );
        let mut h = host();
        init_shared(&mut h, &r);
        set_ms(&mut h, 1_000);
        let charge = TokenCharge::new(&r, Some("a"));
        assert!(check(&mut h, &r, Some("a")).is_none());
        charge_tokens(&mut h, charge.as_ref(), 160);
        let d = check(&mut h, &r, Some("a")).unwrap();
        assert_eq!(d.status, 429);
        // 60 tokens of debt at 100 per minute: 36 s.
        assert_eq!(d.retry_after, Some(36));
        assert!(check(&mut h, &r, Some("b")).is_none());
        set_ms(&mut h, 1_000 + 36_001);
        assert!(check(&mut h, &r, Some("a")).is_none());
    }

    #[test]
    fn shards_exist_after_configure_so_writes_are_real_cas() {
        let r = rl(json!({"max_rate": 1, "client_max_rate": 1}));
        let mut h = host();
        init_shared(&mut h, &r);
        assert_eq!(h.shared.borrow().len(), 1 + SHARDS as usize);
        // a second VM configuring later leaves existing buckets alone
        set_ms(&mut h, 1);
        check(&mut h, &r, Some("x"));
        let before = h.shared.borrow().clone();
        init_shared(&mut h, &r);
        assert_eq!(*h.shared.borrow(), before);
    }

    /// KrakenD's docs: "the absence of max_rate in the configuration or a 0 is the equivalent
    /// to no limitation" (its rate-limit page limits `/happy-hour` with `max_rate: 0,
    /// client_max_rate: 0`).
    #[test]
    fn rates_of_zero_are_no_limit() {
        let none = |v: Value| compile_router(&v, "$.rl", "0").unwrap();
        assert_eq!(none(json!({"max_rate": 0, "client_max_rate": 0})), None);
        assert_eq!(none(json!({"max_rate": 0})), None);
        assert_eq!(
            none(json!({"client_max_rate": 0, "strategy": "header", "key": "X-A", "every": "1m"})),
            None
        );
        let some = none(json!({"max_rate": 0, "client_max_rate": 2})).unwrap();
        assert_eq!(
            (some.endpoint, some.client.map(|b| b.rate)),
            (None, Some(2.0))
        );
        // Still read strictly, and a limit without any rate is still a mistake.
        let err = |v: Value| compile_router(&v, "$.rl", "0").unwrap_err().to_string();
        assert_eq!(
            err(json!({"max_rate": 0, "typo": 1})),
            "$.rl.typo: unknown field"
        );
        assert_eq!(
            err(json!({"max_rate": 0, "every": "soon"})),
            "$.rl.every: \"soon\" is not a duration (examples: 500ms, 30s, 2m, 1h30m)"
        );
        assert_eq!(
            err(json!({})),
            "$.rl: set max_rate, client_max_rate or client_max_tokens (a number above 0)"
        );
        assert_eq!(
            compile(&json!({"max_rate": 0}), "$.rl", "0")
                .unwrap_err()
                .to_string(),
            "$.rl: set max_rate, client_max_rate or client_max_tokens (a number above 0)"
        );
    }

    #[test]
    fn config_errors_name_the_path() {
        let cases = [
            (json!({}), "$.rl: set max_rate, client_max_rate or client_max_tokens (a number above 0)"),
            (json!({"max_rate": 1, "every": "soon"}), "$.rl.every: \"soon\" is not a duration (examples: 500ms, 30s, 2m, 1h30m)"),
            (json!({"max_rate": 1, "every": "0s"}), "$.rl.every: must be longer than 0"),
            (json!({"client_max_rate": 1, "strategy": "cookie"}), "$.rl.strategy: \"cookie\" is not one of ip, header, param"),
            (json!({"client_max_rate": 1, "strategy": "header"}), "$.rl.key: is required with the header and param strategies (the header or {param} name)"),
            (json!({"max_rate": -1}), "$.rl.max_rate: must be a number >= 0"),
            (json!({"max_rate": 1, "burst": 3}), "$.rl.burst: unknown field"),
        ];
        for (v, want) in cases {
            assert_eq!(compile(&v, "$.rl", "0").unwrap_err().to_string(), want);
        }
        let r = rl(json!({"max_rate": 0.5, "num_shards": 4}));
        assert_eq!(r.endpoint.unwrap().capacity, 1.0);
    }
}
