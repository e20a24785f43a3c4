//! The counters in Redis: one Lua script applies one operation to every counter of a request
//! atomically, so replicas of the service share everything through Redis and keep nothing.
//!
//! Counters, each with an expiry so Redis drops what no longer matters:
//! - a quota window: a string holding the count, key
//!   `tollgate:q|<quota>|<rule>|<identity>|<unit>|<window start>`, expiring at the window's end
//!   by the service's clock (plus [`GRACE_MS`] for replicas' clock skew);
//! - a token bucket: a hash `{t: tokens, l: last refill ms}`, key
//!   `tollgate:b|<scope>|e` (all clients), `…|c|<client>` (requests), `…|t|<client>` (LLM tokens),
//!   expiring when it would be full again (a full bucket and no record are the same);
//! - an applied operation: `tollgate:op|<op>|<id>` holding the script's answer for
//!   [`DEDUP_TTL_S`]; the same operation again gets that answer and changes nothing.
//!
//! Parts of keys are escaped (`%` → `%25`, `|` → `%7C`) so no two descriptors share a key.
//!
//! The script reads every counter, decides, then writes (see [`SCRIPT`]): a `reserve` takes its
//! hits only when every counter fits (nothing is written otherwise), a `charge` takes them
//! whatever the balance, negative hits give back (a window never below 0, a bucket never above
//! its capacity), and hits 0 only read.

use crate::limits::scheme::Op;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// How long an applied operation's answer is kept for retries.
pub const DEDUP_TTL_S: u64 = 300;
/// Window counters outlive their window by this much (clock skew between replicas).
pub const GRACE_MS: u64 = 60_000;
/// Largest hits value counted (Lua numbers are doubles: exact up to 2^53).
pub const MAX_HITS: u64 = 1 << 53;

/// The operation script. KEYS[1]: the dedup key; KEYS[1+i]: item i. ARGV: now_ms, op,
/// dedup ttl (0: none), n, then per item: kind (`w` window, `b` bucket), hits, negative (0/1),
/// and for a window its maximum and time to live (ms, relative: the service's clock decides
/// windows, Redis' clock need not agree), for a bucket its refill per ms and
/// capacity. Returns `applied;ok:value;ok:value…` (value: the count, or the bucket's tokens,
/// after the operation when applied).
pub const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local charge = ARGV[2] == 'charge'
local ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
if ttl > 0 then
  local prev = redis.call('GET', KEYS[1])
  if prev then return prev end
end
local items = {}
local fits = true
for i = 1, n do
  local a = 4 + (i - 1) * 5
  local it = {key = KEYS[i + 1], kind = ARGV[a + 1], hits = tonumber(ARGV[a + 2]),
              neg = ARGV[a + 3] == '1', p1 = tonumber(ARGV[a + 4]), p2 = tonumber(ARGV[a + 5])}
  if it.kind == 'w' then
    it.value = tonumber(redis.call('GET', it.key) or '0')
    if it.hits == 0 then
      it.ok = it.value < it.p1
    else
      it.ok = it.neg or (it.value < it.p1 and it.value + it.hits <= it.p1)
    end
  else
    local b = redis.call('HMGET', it.key, 't', 'l')
    local t, l = tonumber(b[1]), tonumber(b[2])
    if t == nil or l == nil then
      t = it.p2
    else
      t = math.min(it.p2, t + math.max(0, now - l) * it.p1)
    end
    it.value = t
    if it.hits == 0 then it.ok = t > 0 else it.ok = it.neg or t >= it.hits end
  end
  if not it.ok and (it.hits == 0 or not charge) then fits = false end
  items[i] = it
end
local apply = fits or charge
local out = {apply and '1' or '0'}
for i = 1, n do
  local it = items[i]
  if apply and it.hits > 0 then
    if it.kind == 'w' then
      local v
      if it.neg then v = math.max(0, it.value - it.hits) else v = math.min(it.value + it.hits, 4e18) end
      if v ~= it.value then
        redis.call('SET', it.key, string.format('%.0f', v), 'PX', string.format('%.0f', it.p2))
      end
      it.value = v
      if charge and not it.neg then it.ok = v <= it.p1 end
    else
      local t
      if it.neg then t = math.min(it.p2, it.value + it.hits) else t = it.value - it.hits end
      redis.call('HSET', it.key, 't', string.format('%.6f', t), 'l', string.format('%.0f', now))
      redis.call('PEXPIRE', it.key, string.format('%.0f', math.ceil((it.p2 - t) / it.p1) + 1000))
      it.value = t
      if charge and not it.neg then it.ok = t >= 0 end
    end
  end
  out[#out + 1] = (it.ok and '1' or '0') .. ':' .. string.format('%.6f', it.value)
end
local res = table.concat(out, ';')
if ttl > 0 then redis.call('SET', KEYS[1], res, 'EX', ttl) end
return res
";

/// What a counter is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A quota window: at most `max`, expiring in `ttl_ms`.
    Window { max: u64, ttl_ms: u64 },
    /// A token bucket refilling `rate_per_ms` up to `capacity`.
    Bucket { rate_per_ms: f64, capacity: f64 },
}

/// One counter of an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: String,
    pub kind: Kind,
    pub hits: u64,
    pub negative: bool,
}

/// What the script answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The hits were taken (or given back).
    pub applied: bool,
    /// Per item: within its limit, and the count or tokens after the operation.
    pub items: Vec<(bool, f64)>,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    /// Redis unreachable, slow or gone mid-command (retried per `on_failure_max_retries`).
    Unavailable(String),
    /// Anything else (a script error, an answer the service cannot read).
    Internal(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(m) => write!(f, "redis unavailable: {m}"),
            StoreError::Internal(m) => write!(f, "redis: {m}"),
        }
    }
}

/// `%` → `%25`, `|` → `%7C`: a key part that cannot run into the next.
pub fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('|', "%7C")
}

/// The key of a quota window.
pub fn window_key(quota: &str, rule: &str, identity: &str, unit: &str, start: u64) -> String {
    format!(
        "tollgate:q|{}|{}|{}|{unit}|{start}",
        escape(quota),
        escape(rule),
        escape(identity)
    )
}

/// The key of a bucket: `kind` is `e`, `c|<client>` or `t|<client>`.
pub fn bucket_key(scope: &str, kind: &str, client: Option<&str>) -> String {
    match client {
        Some(c) => format!("tollgate:b|{}|{kind}|{}", escape(scope), escape(c)),
        None => format!("tollgate:b|{}|{kind}", escape(scope)),
    }
}

/// The key remembering an applied operation.
pub fn op_key(op: Op, id: &str) -> String {
    format!("tollgate:op|{}|{}", op.name(), escape(id))
}

/// Parses the script's answer.
pub fn parse_outcome(s: &str, n: usize) -> Result<Outcome, StoreError> {
    let bad = || StoreError::Internal(format!("unreadable script answer {s:?}"));
    let mut parts = s.split(';');
    let applied = match parts.next() {
        Some("1") => true,
        Some("0") => false,
        _ => return Err(bad()),
    };
    let items = parts
        .map(|p| {
            let (ok, v) = p.split_once(':').ok_or_else(bad)?;
            Ok((ok == "1", v.parse::<f64>().map_err(|_| bad())?))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    if items.len() != n {
        return Err(bad());
    }
    Ok(Outcome { applied, items })
}

/// One Redis connection pool: a lazily connected, multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    script: redis::Script,
}

impl Store {
    /// Connects lazily (the service starts while Redis is down, and counts once it is up).
    /// `timeout` bounds each command and each connection attempt.
    pub fn new(pool: &crate::limits::config::Pool, timeout: Duration) -> Result<Self, StoreError> {
        let mut redis_info = redis::RedisConnectionInfo::default().set_db(pool.db);
        if let Some(u) = &pool.user {
            redis_info = redis_info.set_username(u);
        }
        if let Some(p) = &pool.password {
            redis_info = redis_info.set_password(&p.0);
        }
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::Tcp(pool.host.clone(), pool.port)
            .into_connection_info()
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .set_redis_settings(redis_info);
        let client = redis::Client::open(info).map_err(|e| StoreError::Internal(e.to_string()))?;
        let dial = Duration::from_millis(pool.dial_timeout_ms).min(timeout);
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(dial))
            // A failed reconnect is tried again by the next operation, not in a loop that
            // holds this one.
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(Self {
            conn,
            script: redis::Script::new(SCRIPT),
        })
    }

    /// Runs one operation once. `dedup`: the key remembering it, when it has an id.
    pub async fn run(
        &self,
        op: Op,
        items: &[Item],
        dedup: Option<&str>,
        now_ms: u64,
    ) -> Result<Outcome, StoreError> {
        let mut inv = self.script.prepare_invoke();
        inv.key(dedup.unwrap_or("tollgate:op|none"));
        for it in items {
            inv.key(&it.key);
        }
        inv.arg(now_ms)
            .arg(op.name())
            .arg(if dedup.is_some() { DEDUP_TTL_S } else { 0 })
            .arg(items.len());
        for it in items {
            let kind = match it.kind {
                Kind::Window { .. } => "w",
                Kind::Bucket { .. } => "b",
            };
            inv.arg(kind)
                .arg(it.hits.min(MAX_HITS))
                .arg(if it.negative { "1" } else { "0" });
            match it.kind {
                Kind::Window { max, ttl_ms } => inv.arg(max.min(MAX_HITS)).arg(ttl_ms.max(1)),
                Kind::Bucket {
                    rate_per_ms,
                    capacity,
                } => inv.arg(rate_per_ms.to_string()).arg(capacity.to_string()),
            };
        }
        let mut conn = self.conn.clone();
        let answer: String = inv.invoke_async(&mut conn).await.map_err(|e| {
            if e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error()
            {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Internal(e.to_string())
            }
        })?;
        parse_outcome(&answer, items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_collide() {
        assert_ne!(
            window_key("a|b", "c", "i", "day", 0),
            window_key("a", "b|c", "i", "day", 0)
        );
        assert_eq!(escape("50%|x"), "50%25%7Cx");
        assert_eq!(
            bucket_key("POST /x", "c", Some("k")),
            "tollgate:b|POST /x|c|k"
        );
        assert_eq!(op_key(Op::Charge, "r1"), "tollgate:op|charge|r1");
    }

    #[test]
    fn outcomes_parse() {
        let o = parse_outcome("1;1:12.000000;0:-3.500000", 2).unwrap();
        assert!(o.applied);
        assert_eq!(o.items, vec![(true, 12.0), (false, -3.5)]);
        assert!(parse_outcome("1;1:12", 2).is_err());
        assert!(parse_outcome("x", 0).is_err());
    }
}
