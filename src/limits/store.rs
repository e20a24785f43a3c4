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
//! On a Redis Cluster ([`Keys::Tagged`]) every key carries a hash tag, so that the keys one
//! script touches are on one shard: `tollgate:q|{<quota>|<identity>}|<rule>|<unit>|<start>`
//! (every window of a caller's quota), `tollgate:b|{<scope>}|e`, `tollgate:b|{<scope>|<client>}|c`
//! and `…|t` (a client's buckets), `tollgate:op|{<tag>}|<op>|<id>` (the operation, per tag).
//! Inside a tag `{` and `}` are escaped too (`%7B`, `%7D`): a caller cannot end the tag early
//! and move its counters to another slot. Keys on one server keep the names above (counters
//! survive an upgrade). One request's counters may carry several tags (a quota and a rate
//! limit, a client's bucket and the endpoint's): [`Store::run`] then runs the script once per
//! tag; a `reserve` refused (or failed) in one gives back what the others took.
//!
//! The script reads every counter, decides, then writes (see [`SCRIPT`]): a `reserve` takes its
//! hits only when every counter fits (nothing is written otherwise), a `charge` takes them
//! whatever the balance, negative hits give back (a window never below 0, a bucket never above
//! its capacity), and hits 0 only read.

use crate::limits::config::{Backoff, Cluster, Pool};
use crate::limits::scheme::Op;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use std::time::Duration;

/// How long an applied operation's answer is kept for retries.
pub const DEDUP_TTL_S: u64 = 300;
/// Window counters outlive their window by this much (clock skew between replicas).
pub const GRACE_MS: u64 = 60_000;
/// Largest hits value counted (Lua numbers are doubles: exact up to 2^53).
pub const MAX_HITS: u64 = 1 << 53;

/// The operation script. KEYS[1]: the dedup key (for a `release`, that of the `reserve` it
/// releases); KEYS[1+i]: item i. ARGV: now_ms, op,
/// dedup ttl (0: none), n, then per item: kind (`w` window, `b` bucket), hits, negative (0/1),
/// and for a window its maximum and time to live (ms, relative: the service's clock decides
/// windows, Redis' clock need not agree), for a bucket its refill per ms and
/// capacity. Returns `applied;ok:value;ok:value…` (value: the count, or the bucket's tokens,
/// after the operation when applied).
///
/// A `release` (items: the reserve's, as the reserve sent them) gives back what its reserve
/// took when the reserve's record says it was applied, and leaves `released` in that record
/// either way: a release again gives back nothing, and the reserve, if it comes later (it
/// landed after the gateway stopped waiting, or the service retried it), takes nothing and
/// answers not applied.
pub const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local release = ARGV[2] == 'release'
local charge = ARGV[2] ~= 'reserve'
local ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local function none(ok)
  local o = {'0'}
  for i = 1, n do o[#o + 1] = ok .. ':0' end
  return table.concat(o, ';')
end
if release and ttl == 0 then return none('1') end
if ttl > 0 then
  local prev = redis.call('GET', KEYS[1])
  if release then
    redis.call('SET', KEYS[1], 'released', 'EX', ttl)
    if not prev or string.sub(prev, 1, 1) ~= '1' then return none('1') end
  elseif prev == 'released' then
    return none('0')
  elseif prev then
    return prev
  end
end
local items = {}
local fits = true
for i = 1, n do
  local a = 4 + (i - 1) * 5
  local it = {key = KEYS[i + 1], kind = ARGV[a + 1], hits = tonumber(ARGV[a + 2]),
              neg = (ARGV[a + 3] == '1') ~= release, p1 = tonumber(ARGV[a + 4]), p2 = tonumber(ARGV[a + 5])}
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
if ttl > 0 and not release then redis.call('SET', KEYS[1], res, 'EX', ttl) end
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

/// How keys are named: for one Redis server, or with a hash tag for a Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    Plain,
    Tagged,
}

/// `%` → `%25`, `|` → `%7C`: a key part that cannot run into the next.
pub fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('|', "%7C")
}

/// [`escape`], and `{` → `%7B`, `}` → `%7D`: a part that cannot end (or open) a hash tag.
fn escape_tagged(part: &str) -> String {
    escape(part).replace('{', "%7B").replace('}', "%7D")
}

/// A key part, escaped for `keys`.
fn part(keys: Keys, s: &str) -> String {
    match keys {
        Keys::Plain => escape(s),
        Keys::Tagged => escape_tagged(s),
    }
}

/// The key of a quota window.
pub fn window_key(
    keys: Keys,
    quota: &str,
    rule: &str,
    identity: &str,
    unit: &str,
    start: u64,
) -> String {
    let (q, r, i) = (part(keys, quota), part(keys, rule), part(keys, identity));
    match keys {
        Keys::Plain => format!("tollgate:q|{q}|{r}|{i}|{unit}|{start}"),
        Keys::Tagged => format!("tollgate:q|{{{q}|{i}}}|{r}|{unit}|{start}"),
    }
}

/// The key of a bucket: `kind` is `e`, `c|<client>` or `t|<client>`.
pub fn bucket_key(keys: Keys, scope: &str, kind: &str, client: Option<&str>) -> String {
    let scope = part(keys, scope);
    match (keys, client.map(|c| part(keys, c))) {
        (Keys::Plain, Some(c)) => format!("tollgate:b|{scope}|{kind}|{c}"),
        (Keys::Plain, None) => format!("tollgate:b|{scope}|{kind}"),
        (Keys::Tagged, Some(c)) => format!("tollgate:b|{{{scope}|{c}}}|{kind}"),
        (Keys::Tagged, None) => format!("tollgate:b|{{{scope}}}|{kind}"),
    }
}

/// The key remembering an applied operation (`tag`: the hash tag of the keys it touched, on
/// a cluster).
pub fn op_key(op: Op, id: &str, tag: Option<&str>) -> String {
    match tag {
        None => format!("tollgate:op|{}|{}", op.name(), escape(id)),
        Some(t) => format!("tollgate:op|{{{t}}}|{}|{}", op.name(), escape_tagged(id)),
    }
}

/// The hash tag of a key, by Redis Cluster's rule: between the first `{` and the next `}`,
/// when not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    let (_, rest) = key.split_once('{')?;
    let (tag, _) = rest.split_once('}')?;
    (!tag.is_empty()).then_some(tag)
}

/// The items by hash tag, in order of first appearance (one group, untagged, for
/// [`Keys::Plain`]).
fn groups(keys: Keys, items: &[Item]) -> Vec<(Option<&str>, Vec<usize>)> {
    let mut out: Vec<(Option<&str>, Vec<usize>)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let tag = match keys {
            Keys::Plain => None,
            Keys::Tagged => hash_tag(&it.key),
        };
        match out.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, list)) => list.push(i),
            None => out.push((tag, vec![i])),
        }
    }
    out
}

/// Retries of a failed operation (`on_failure_max_retries`, `on_failure_backoff_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub max: u32,
    pub backoff: Backoff,
}

/// First pause between retries of a failed Redis operation.
pub const RETRY_BASE_MS: u64 = 10;

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

/// The connection: one server, or a cluster (MOVED/ASK redirections followed by the client).
#[derive(Clone)]
enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

/// One Redis connection pool or cluster: a lazily connected, multiplexed, self-reconnecting
/// connection (one per node of a cluster).
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    script: redis::Script,
}

fn internal(e: redis::RedisError) -> StoreError {
    StoreError::Internal(e.to_string())
}

impl Store {
    /// Connects lazily (the service starts while Redis is down, and counts once it is up).
    /// `timeout` bounds each command and each connection attempt.
    pub fn new(pool: &Pool, timeout: Duration) -> Result<Self, StoreError> {
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
            .map_err(internal)?
            .set_redis_settings(redis_info);
        let client = redis::Client::open(info).map_err(internal)?;
        let dial = Duration::from_millis(pool.dial_timeout_ms).min(timeout);
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(dial))
            // A failed reconnect is tried again by the next operation, not in a loop that
            // holds this one.
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(internal)?;
        Ok(Self {
            conn: Conn::One(conn),
            script: redis::Script::new(SCRIPT),
        })
    }

    /// A Redis Cluster, connected in the background (from inside the Tokio runtime): the
    /// service starts while the cluster is down. `timeout` bounds each command.
    pub fn cluster(c: &Cluster, timeout: Duration) -> Result<Self, StoreError> {
        let nodes: Vec<redis::ConnectionAddr> = c
            .nodes
            .iter()
            .map(|(h, p)| redis::ConnectionAddr::Tcp(h.clone(), *p))
            .collect();
        let mut b = redis::cluster::ClusterClientBuilder::new(nodes)
            .retries(c.max_redirects)
            .min_retry_wait(1)
            .max_retry_wait(50);
        if let Some(u) = &c.user {
            b = b.username(u);
        }
        if let Some(p) = &c.password {
            b = b.password(&p.0);
        }
        let client = b.build().map_err(internal)?;
        let dial = Duration::from_millis(c.dial_timeout_ms).min(timeout);
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(dial)
            .set_response_timeout(timeout);
        Ok(Self {
            conn: Conn::Cluster(client.get_pending_async_connection_with_config(config)),
            script: redis::Script::new(SCRIPT),
        })
    }

    /// How this store names its keys.
    pub fn keys(&self) -> Keys {
        match self.conn {
            Conn::One(_) => Keys::Plain,
            Conn::Cluster(_) => Keys::Tagged,
        }
    }

    /// Runs one operation (retried per `retry`); `id` names it for exactly-once application.
    /// On a cluster, once per hash tag of its counters: a `reserve` refused by one tag (or
    /// failed) gives back what the others took, so it is still all or nothing.
    pub async fn run(
        &self,
        op: Op,
        items: &[Item],
        id: Option<&str>,
        now_ms: u64,
        retry: Retry,
    ) -> Result<Outcome, StoreError> {
        let groups = groups(self.keys(), items);
        if let [(tag, _)] = groups.as_slice() {
            return self.retried(op, items, id, *tag, now_ms, retry).await;
        }
        let mut values = vec![(true, 0.0); items.len()];
        let mut taken: Vec<(Option<&str>, Vec<Item>, Vec<usize>)> = Vec::new();
        let mut applied = true;
        for (tag, idx) in groups {
            let sub: Vec<Item> = idx.iter().filter_map(|i| items.get(*i).cloned()).collect();
            let out = match self.retried(op, &sub, id, tag, now_ms, retry).await {
                Ok(out) => out,
                Err(e) => {
                    if op == Op::Reserve {
                        // With an id, the failed part is released too: it may have landed.
                        if id.is_some() {
                            taken.push((tag, sub, idx));
                        }
                        self.give_back(&taken, id, now_ms, retry, &mut values).await;
                    }
                    return Err(e);
                }
            };
            for (i, v) in idx.iter().zip(&out.items) {
                if let Some(slot) = values.get_mut(*i) {
                    *slot = *v;
                }
            }
            applied &= out.applied;
            if out.applied && sub.iter().any(|it| it.hits > 0) {
                taken.push((tag, sub, idx));
            }
        }
        if op == Op::Reserve && !applied {
            self.give_back(&taken, id, now_ms, retry, &mut values).await;
        }
        Ok(Outcome {
            applied,
            items: values,
        })
    }

    /// Undoes the parts of a refused or failed `reserve` that were taken: with an id, a
    /// `release` of that id per part (which also stops a part landing late from taking
    /// anything); without, a `charge` of the opposite hits, tried once. `values` then shows
    /// the counters as left.
    async fn give_back(
        &self,
        taken: &[(Option<&str>, Vec<Item>, Vec<usize>)],
        id: Option<&str>,
        now_ms: u64,
        retry: Retry,
        values: &mut [(bool, f64)],
    ) {
        for (tag, sub, idx) in taken {
            let res = match id {
                Some(_) => {
                    self.retried(Op::Release, sub, id, *tag, now_ms, retry)
                        .await
                }
                None => {
                    // Without an id, a retry could give back twice: once only.
                    let back: Vec<Item> = sub
                        .iter()
                        .map(|it| Item {
                            negative: !it.negative,
                            ..it.clone()
                        })
                        .collect();
                    let once = Retry { max: 0, ..retry };
                    self.retried(Op::Charge, &back, None, *tag, now_ms, once)
                        .await
                }
            };
            match res {
                Ok(out) => {
                    for ((i, v), it) in idx.iter().zip(&out.items).zip(sub) {
                        if let Some(slot) = values.get_mut(*i) {
                            let given = out.applied && it.hits > 0;
                            *slot = (slot.0, if given { v.1 } else { slot.1 });
                        }
                    }
                }
                Err(e) => eprintln!(
                    "tollgate limits: a refused reservation could not be given back on one shard ({} counters stay taken until their window ends): {e}",
                    sub.len()
                ),
            }
        }
    }

    /// One script (one tag), retried per `retry` when Redis is unavailable.
    async fn retried(
        &self,
        op: Op,
        items: &[Item],
        id: Option<&str>,
        tag: Option<&str>,
        now_ms: u64,
        retry: Retry,
    ) -> Result<Outcome, StoreError> {
        // A release reads and marks the record of the reserve it releases.
        let record = if op == Op::Release { Op::Reserve } else { op };
        let dedup = id.map(|id| op_key(record, id, tag));
        let mut attempt = 0u32;
        loop {
            match self.once(op, items, dedup.as_deref(), tag, now_ms).await {
                Err(StoreError::Unavailable(_)) if attempt < retry.max => {
                    attempt += 1;
                    let pause = match retry.backoff {
                        Backoff::Linear => RETRY_BASE_MS,
                        Backoff::Exponential => RETRY_BASE_MS << (attempt - 1).min(10),
                    };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }

    /// Runs the script once. `dedup`: the key remembering it, when it has an id.
    async fn once(
        &self,
        op: Op,
        items: &[Item],
        dedup: Option<&str>,
        tag: Option<&str>,
        now_ms: u64,
    ) -> Result<Outcome, StoreError> {
        let mut inv = self.script.prepare_invoke();
        let none = match tag {
            None => "tollgate:op|none".to_string(),
            Some(t) => format!("tollgate:op|{{{t}}}|none"),
        };
        inv.key(dedup.unwrap_or(&none));
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
        let answer: Result<String, redis::RedisError> = match &self.conn {
            Conn::One(c) => inv.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        };
        let answer = answer.map_err(|e| {
            if e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error()
                || e.is_cluster_error()
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
        for keys in [Keys::Plain, Keys::Tagged] {
            assert_ne!(
                window_key(keys, "a|b", "c", "i", "day", 0),
                window_key(keys, "a", "b|c", "i", "day", 0)
            );
        }
        assert_eq!(escape("50%|x"), "50%25%7Cx");
    }

    #[test]
    fn keys_on_one_server_keep_their_names() {
        assert_eq!(
            window_key(Keys::Plain, "llm", "gold", "{t}", "day", 7),
            "tollgate:q|llm|gold|{t}|day|7"
        );
        assert_eq!(
            bucket_key(Keys::Plain, "POST /x", "c", Some("k")),
            "tollgate:b|POST /x|c|k"
        );
        assert_eq!(bucket_key(Keys::Plain, "s", "e", None), "tollgate:b|s|e");
        assert_eq!(op_key(Op::Charge, "r1", None), "tollgate:op|charge|r1");
        let items = [item("a{b}"), item("c{d}")];
        assert_eq!(groups(Keys::Plain, &items), vec![(None, vec![0, 1])]);
    }

    fn item(key: &str) -> Item {
        Item {
            key: key.to_string(),
            kind: Kind::Window { max: 1, ttl_ms: 1 },
            hits: 1,
            negative: false,
        }
    }

    #[test]
    fn cluster_keys_of_one_caller_share_a_tag() {
        let day = window_key(Keys::Tagged, "llm", "gold", "t-1", "day", 7);
        assert_eq!(day, "tollgate:q|{llm|t-1}|gold|day|7");
        let hour = window_key(Keys::Tagged, "llm", "silver", "t-1", "hour", 9);
        assert_eq!(hash_tag(&day), Some("llm|t-1"));
        assert_eq!(hash_tag(&hour), hash_tag(&day));
        let op = op_key(Op::Reserve, "abc:reserve", hash_tag(&day));
        assert_eq!(op, "tollgate:op|{llm|t-1}|reserve|abc:reserve");
        assert_eq!(hash_tag(&op), hash_tag(&day));
        let c = bucket_key(Keys::Tagged, "POST /x", "c", Some("k"));
        let t = bucket_key(Keys::Tagged, "POST /x", "t", Some("k"));
        let e = bucket_key(Keys::Tagged, "POST /x", "e", None);
        assert_eq!(
            (c.as_str(), e.as_str()),
            ("tollgate:b|{POST /x|k}|c", "tollgate:b|{POST /x}|e")
        );
        assert_eq!(hash_tag(&c), hash_tag(&t));
        let items = [item(&day), item(&c), item(&hour), item(&e), item(&t)];
        let g = groups(Keys::Tagged, &items);
        assert_eq!(
            g,
            vec![
                (Some("llm|t-1"), vec![0, 2]),
                (Some("POST /x|k"), vec![1, 4]),
                (Some("POST /x"), vec![3])
            ]
        );
    }

    #[test]
    fn an_identity_cannot_leave_its_tag() {
        // Redis hashes what is between the first `{` and the next `}`: an identity that
        // closed the tag would move its counters to the slot of a shorter tag ("llm|"), or
        // share one with every caller whose identity starts the same way.
        for evil in ["}x{", "}", "{", "{}", "x}|gold|day|7", "}%7D{"] {
            let key = window_key(Keys::Tagged, "llm", "gold", evil, "day", 7);
            let tag = hash_tag(&key).unwrap();
            assert_eq!(tag, format!("llm|{}", escape_tagged(evil)), "{key}");
            assert!(!tag.contains('{') && !tag.contains('}'), "{key}");
            assert!(
                key.starts_with(&format!("tollgate:q|{{{tag}}}|gold|")),
                "{key}"
            );
            // Its own counters, all on its own slot; nobody else's.
            let op = op_key(Op::Charge, "id}{", Some(tag));
            assert_eq!(hash_tag(&op), Some(tag));
            for other in ["x", "", "llm", "%7Dx%7B", "}x", "x{"] {
                if other != evil {
                    let k = window_key(Keys::Tagged, "llm", "gold", other, "day", 7);
                    assert_ne!(hash_tag(&k), Some(tag), "{evil} / {other}");
                    assert_ne!(k, key);
                }
            }
            let c = bucket_key(Keys::Tagged, "POST /x", "c", Some(evil));
            assert_eq!(
                hash_tag(&c),
                Some(format!("POST /x|{}", escape_tagged(evil)).as_str())
            );
        }
        // The quota name and the scope come from the configuration, escaped the same way.
        let k = window_key(Keys::Tagged, "a}b", "r", "i", "day", 1);
        assert_eq!(hash_tag(&k), Some("a%7Db|i"));
    }

    #[test]
    fn hash_tags_follow_redis() {
        assert_eq!(hash_tag("a{b}c"), Some("b"));
        assert_eq!(hash_tag("a{}c{d}"), None);
        assert_eq!(hash_tag("a{b"), None);
        assert_eq!(hash_tag("a}b{c}d}"), Some("c"));
        assert_eq!(hash_tag("a{b{c}d}"), Some("b{c"));
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
