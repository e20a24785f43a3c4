//! `ShouldRateLimit`: reads the descriptors ([`scheme`]), finds each one's limit in the
//! KrakenD configuration, runs the operation in Redis ([`store`]) and answers with one status
//! per descriptor plus KrakenD's quota headers.
//!
//! Answers:
//! - `OK` / `OVER_LIMIT` (`overall_code` and per descriptor). `response_headers_to_add` carries
//!   `X-Quota-Limit` and `X-Quota-Remaining` of the request's tightest quota limit (currency
//!   units for quotas weighed in money) and, when over, `Retry-After` (seconds until every
//!   refused counter has room again), computed here so every Envoy shows the same numbers.
//! - gRPC `UNAVAILABLE`: Redis did not answer (after the quota's `on_failure_max_retries`,
//!   within the operation timeout). The filter applies the quota's `on_failure_allow`.
//! - gRPC `INVALID_ARGUMENT`: descriptors this configuration does not know (another domain, a
//!   quota, rule, unit or rate limit it does not declare: filter and service disagree),
//!   descriptors on two Redis pools, a bad `x-tollgate-*` value. `INTERNAL`: a script error.
//!   The filter treats every gRPC error like `UNAVAILABLE`.

use crate::cost::{self, Standing};
use crate::limits::config::{Backoff, LimitsConfig};
use crate::limits::proto::{
    self, Code, DescriptorStatus, HeaderValue, RateLimitRequest, RateLimitResponse,
};
use crate::limits::scheme::{self, Bucket, Op, Target};
use crate::limits::store::{self, Item, Keys, Kind, Outcome, Retry, Store, StoreError};
use crate::support::calendar::Unit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Unix time in milliseconds (tests inject their own).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// Most descriptors one request may carry.
pub const MAX_DESCRIPTORS: usize = 64;
/// How far in the future `x-tollgate-at` may be (clock skew between Envoys and the service).
pub const MAX_AT_SKEW_S: u64 = 60;

/// The service: configuration, one [`Store`] per pool and per cluster, a clock. Keeps no
/// counter itself.
pub struct Limits {
    cfg: LimitsConfig,
    stores: Vec<Store>,
    clock: Clock,
    /// Bound on one operation, retries included.
    timeout: Duration,
    /// Ids of operations retried inside the service: `<nonce>-<counter>`.
    nonce: u64,
    counter: AtomicU64,
}

/// The request's gRPC metadata ([`scheme::OP`], [`scheme::ID`], [`scheme::AT`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub op: Op,
    pub id: Option<String>,
    pub at: Option<u64>,
}

impl Meta {
    fn read(m: &tonic::metadata::MetadataMap) -> Result<Self, Status> {
        let text = |name: &str| -> Result<Option<String>, Status> {
            match m.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(|s| Some(s.trim().to_string()))
                    .map_err(|_| Status::invalid_argument(format!("{name}: not ASCII"))),
            }
        };
        let op = match text(scheme::OP)? {
            None => Op::Reserve,
            Some(s) => Op::parse(&s).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{}: \"{s}\" is not reserve, charge or release",
                    scheme::OP
                ))
            })?,
        };
        let id = text(scheme::ID)?;
        if id
            .as_ref()
            .is_some_and(|i| i.is_empty() || i.len() > scheme::MAX_ID)
        {
            return Err(Status::invalid_argument(format!(
                "{}: 1 to {} characters",
                scheme::ID,
                scheme::MAX_ID
            )));
        }
        if op == Op::Release && id.is_none() {
            return Err(Status::invalid_argument(format!(
                "{}: release needs the id of the reserve it releases",
                scheme::ID
            )));
        }
        let at = match text(scheme::AT)? {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| {
                Status::invalid_argument(format!("{}: \"{s}\" is not unix seconds", scheme::AT))
            })?),
        };
        Ok(Self { op, id, at })
    }
}

/// One descriptor, resolved against the configuration.
#[derive(Debug, Clone)]
enum Planned {
    Window {
        quota: usize,
        amount: f64,
        unit: Unit,
        max: u64,
        end_s: u64,
        /// None: the window has ended (a late settlement): nothing to write.
        item: Option<usize>,
    },
    Bucket {
        bucket: crate::governance::ratelimit::Bucket,
        need: f64,
        item: usize,
        name: String,
    },
}

impl Limits {
    /// Connects (lazily) to every pool and cluster (from inside the Tokio runtime).
    /// `timeout` bounds one operation.
    pub fn new(cfg: LimitsConfig, clock: Clock, timeout: Duration) -> Result<Self, String> {
        let pools = cfg
            .pools
            .iter()
            .map(|p| Store::new(p, timeout).map_err(|e| format!("{}: {e}", p.path)));
        let clusters = cfg
            .clusters
            .iter()
            .map(|c| Store::cluster(c, timeout).map_err(|e| format!("{}: {e}", c.path)));
        let stores = pools.chain(clusters).collect::<Result<Vec<_>, _>>()?;
        use std::hash::{BuildHasher, Hasher};
        let nonce = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Ok(Self {
            cfg,
            stores,
            clock,
            timeout,
            nonce,
            counter: AtomicU64::new(0),
        })
    }

    /// Answers one `ShouldRateLimit`.
    pub async fn answer(
        &self,
        req: &RateLimitRequest,
        meta: &Meta,
    ) -> Result<RateLimitResponse, Status> {
        if req.domain != scheme::DOMAIN {
            return Err(Status::invalid_argument(format!(
                "domain \"{}\" is not \"{}\"",
                req.domain,
                scheme::DOMAIN
            )));
        }
        if req.descriptors.is_empty() || req.descriptors.len() > MAX_DESCRIPTORS {
            return Err(Status::invalid_argument(format!(
                "send 1 to {MAX_DESCRIPTORS} descriptors"
            )));
        }
        let now_ms = (self.clock)();
        let now_s = now_ms / 1000;
        let at_s = meta.at.unwrap_or(now_s);
        if at_s > now_s.saturating_add(MAX_AT_SKEW_S) {
            return Err(Status::invalid_argument(format!(
                "{}: {at_s} is in the future",
                scheme::AT
            )));
        }
        let mut items: Vec<Item> = Vec::new();
        let mut planned = Vec::with_capacity(req.descriptors.len());
        let mut pool: Option<usize> = None;
        let mut retries = Retry {
            max: 0,
            backoff: Backoff::Exponential,
        };
        for (i, d) in req.descriptors.iter().enumerate() {
            let entries: Vec<(&str, &str)> = d
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
                .collect();
            let target = Target::parse(&entries)
                .map_err(|m| Status::invalid_argument(format!("descriptors[{i}]: {m}")))?;
            let hits = d.hits_addend.unwrap_or(u64::from(req.hits_addend.max(1)));
            let (p, plan) = self
                .plan(&target, hits, d.is_negative_hits, at_s, now_ms, &mut items)
                .map_err(|m| Status::invalid_argument(format!("descriptors[{i}]: {m}")))?;
            if let Some(q) = match &plan {
                Planned::Window { quota, .. } => self.cfg.quotas.get(*quota),
                Planned::Bucket { .. } => None,
            } {
                if q.failure.max_retries > retries.max {
                    retries = Retry {
                        max: q.failure.max_retries,
                        backoff: q.failure.backoff,
                    };
                }
            }
            match pool {
                Some(prev) if prev != p => {
                    return Err(Status::invalid_argument(
                        "descriptors on different Redis pools: send them in separate requests",
                    ))
                }
                _ => pool = Some(p),
            }
            planned.push(plan);
        }
        let writes = items.iter().any(|it| it.hits > 0);
        let outcome = match (pool.and_then(|p| self.stores.get(p)), items.is_empty()) {
            (Some(store), false) => {
                let id = match &meta.id {
                    Some(id) if writes => Some(id.clone()),
                    None if writes && retries.max > 0 => {
                        let n = self.counter.fetch_add(1, Ordering::Relaxed);
                        Some(format!("svc-{:016x}-{n}", self.nonce))
                    }
                    _ => None,
                };
                let run = store.run(meta.op, &items, id.as_deref(), now_ms, retries);
                tokio::time::timeout(self.timeout, run)
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable(format!("no answer within {:?}", self.timeout))
                    })
                    .and_then(|r| r)
                    .map_err(|e| match e {
                        StoreError::Unavailable(m) => Status::unavailable(format!("redis: {m}")),
                        StoreError::Internal(m) => Status::internal(format!("redis: {m}")),
                    })?
            }
            _ => Outcome {
                applied: false,
                items: Vec::new(),
            },
        };
        Ok(self.respond(&planned, &outcome, now_s, now_ms))
    }

    /// How the store `pool` names its keys.
    fn keys(&self, pool: usize) -> Keys {
        self.stores.get(pool).map_or(Keys::Plain, Store::keys)
    }

    /// Resolves one descriptor; pushes its counter to `items`. Returns its pool.
    fn plan(
        &self,
        target: &Target,
        hits: u64,
        negative: bool,
        at_s: u64,
        now_ms: u64,
        items: &mut Vec<Item>,
    ) -> Result<(usize, Planned), String> {
        let now_s = now_ms / 1000;
        match target {
            Target::Quota {
                quota,
                rule,
                unit,
                identity,
            } => {
                let (qi, q) = self
                    .cfg
                    .quotas
                    .iter()
                    .enumerate()
                    .find(|(_, q)| q.name == *quota)
                    .ok_or_else(|| {
                        format!("quota \"{quota}\" is not a Redis quota of this configuration")
                    })?;
                let r =
                    q.rules.iter().find(|r| r.name == *rule).ok_or_else(|| {
                        format!("rule \"{rule}\" is not a rule of quota \"{quota}\"")
                    })?;
                let l = r.limits.iter().find(|l| l.unit == *unit).ok_or_else(|| {
                    format!(
                        "rule \"{rule}\" of quota \"{quota}\" has no {} limit",
                        unit.name()
                    )
                })?;
                let (start, end_s) = unit.window(at_s);
                let max = q.max(l.amount);
                let item = (end_s > now_s).then(|| {
                    items.push(Item {
                        key: store::window_key(
                            self.keys(q.pool),
                            quota,
                            rule,
                            identity,
                            unit.name(),
                            start,
                        ),
                        kind: Kind::Window {
                            max,
                            ttl_ms: end_s
                                .saturating_mul(1000)
                                .saturating_add(store::GRACE_MS)
                                .saturating_sub(now_ms),
                        },
                        hits,
                        negative,
                    });
                    items.len() - 1
                });
                Ok((
                    q.pool,
                    Planned::Window {
                        quota: qi,
                        amount: l.amount,
                        unit: *unit,
                        max,
                        end_s,
                        item,
                    },
                ))
            }
            Target::RateLimit { scope, bucket } => {
                let rl = self
                    .cfg
                    .rate_limits
                    .iter()
                    .find(|r| r.scope == *scope)
                    .ok_or_else(|| format!("rate limit \"{scope}\" is not a Redis rate limit of this configuration"))?;
                let (b, kind, client) = match bucket {
                    Bucket::Endpoint => (rl.limit.endpoint, "e", None),
                    Bucket::Client(c) => (rl.limit.client, "c", Some(c.as_str())),
                    Bucket::Tokens(c) => (rl.limit.tokens, "t", Some(c.as_str())),
                };
                let b = b.ok_or_else(|| {
                    format!(
                        "rate limit \"{scope}\" has no {} bucket",
                        match kind {
                            "e" => "max_rate",
                            "c" => "client_max_rate",
                            _ => "client_max_tokens",
                        }
                    )
                })?;
                items.push(Item {
                    key: store::bucket_key(self.keys(rl.pool), scope, kind, client),
                    kind: Kind::Bucket {
                        rate_per_ms: b.rate / b.every_ms.max(1) as f64,
                        capacity: b.capacity,
                    },
                    hits,
                    negative,
                });
                Ok((
                    rl.pool,
                    Planned::Bucket {
                        bucket: b,
                        need: if hits == 0 {
                            f64::MIN_POSITIVE
                        } else {
                            hits as f64
                        },
                        item: items.len() - 1,
                        name: format!("{scope}/{kind}"),
                    },
                ))
            }
        }
    }

    fn respond(
        &self,
        planned: &[Planned],
        out: &Outcome,
        now_s: u64,
        now_ms: u64,
    ) -> RateLimitResponse {
        let mut statuses = Vec::with_capacity(planned.len());
        let mut standings: Vec<Standing> = Vec::new();
        let mut weight = cost::Weight::TotalTokens;
        let mut retry_after: Option<u64> = None;
        let mut over = false;
        let sat = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        for p in planned {
            let (ok, status) = match p {
                Planned::Window {
                    quota,
                    amount,
                    unit,
                    max,
                    end_s,
                    item,
                } => {
                    let (ok, used) = item
                        .and_then(|i| out.items.get(i))
                        .map_or((true, 0), |(ok, v)| (*ok, v.max(0.0) as u64));
                    if let Some(q) = self.cfg.quotas.get(*quota) {
                        weight = q.weight();
                    }
                    standings.push(Standing {
                        limit: *amount,
                        unit: *unit,
                        used,
                    });
                    let reset = end_s.saturating_sub(now_s);
                    if !ok {
                        retry_after = retry_after.max(Some(reset.max(1)));
                    }
                    (
                        ok,
                        DescriptorStatus {
                            code: code(ok),
                            current_limit: Some(proto::RateLimit {
                                name: self
                                    .cfg
                                    .quotas
                                    .get(*quota)
                                    .map_or(String::new(), |q| q.name.clone()),
                                requests_per_unit: sat(*max),
                                unit: proto_unit(*unit) as i32,
                            }),
                            limit_remaining: sat(max.saturating_sub(used)),
                            duration_until_reset: Some(proto::Duration {
                                seconds: i64::try_from(reset).unwrap_or(i64::MAX),
                                nanos: 0,
                            }),
                        },
                    )
                }
                Planned::Bucket {
                    bucket,
                    need,
                    item,
                    name,
                } => {
                    let (ok, tokens) = out
                        .items
                        .get(*item)
                        .copied()
                        .unwrap_or((true, bucket.capacity));
                    // As the local bucket: multiply before dividing (60 tokens at 100 a
                    // minute is 36000 ms, not 36000.000000000004).
                    let every = bucket.every_ms.max(1) as f64;
                    let wait_ms =
                        |want: f64| ((want - tokens).max(0.0) * every / bucket.rate).ceil() as u64;
                    if !ok {
                        let s = wait_ms(*need).div_ceil(1000).max(1);
                        retry_after = retry_after.max(Some(s));
                    }
                    (
                        ok,
                        DescriptorStatus {
                            code: code(ok),
                            current_limit: Some(proto::RateLimit {
                                name: name.clone(),
                                requests_per_unit: sat(bucket.rate.ceil() as u64),
                                unit: every_unit(bucket.every_ms) as i32,
                            }),
                            limit_remaining: sat(tokens.max(0.0).floor() as u64),
                            duration_until_reset: Some(proto::Duration {
                                seconds: i64::try_from(wait_ms(bucket.capacity).div_ceil(1000))
                                    .unwrap_or(i64::MAX),
                                nanos: 0,
                            }),
                        },
                    )
                }
            };
            over |= !ok;
            statuses.push(status);
        }
        let _ = now_ms;
        let mut headers = Vec::new();
        let h = |k: &str, v: String| HeaderValue {
            key: k.to_string(),
            value: v,
        };
        if let Some((limit, remaining)) = cost::quota_headers(&standings, weight) {
            headers.push(h("X-Quota-Limit", limit));
            headers.push(h("X-Quota-Remaining", remaining));
        }
        if over {
            if let Some(s) = retry_after {
                headers.push(h("Retry-After", s.to_string()));
            }
        }
        RateLimitResponse {
            overall_code: code(!over),
            statuses,
            response_headers_to_add: headers,
            ..Default::default()
        }
    }
}

fn code(ok: bool) -> i32 {
    if ok {
        Code::Ok as i32
    } else {
        Code::OverLimit as i32
    }
}

fn proto_unit(u: Unit) -> proto::Unit {
    match u {
        Unit::Second => proto::Unit::Second,
        Unit::Minute => proto::Unit::Minute,
        Unit::Hour => proto::Unit::Hour,
        Unit::Day => proto::Unit::Day,
        Unit::Week => proto::Unit::Week,
        Unit::Month => proto::Unit::Month,
        Unit::Year => proto::Unit::Year,
    }
}

/// The protocol unit of a bucket's refill period, when it is exactly one.
fn every_unit(every_ms: u64) -> proto::Unit {
    match every_ms {
        1_000 => proto::Unit::Second,
        60_000 => proto::Unit::Minute,
        3_600_000 => proto::Unit::Hour,
        86_400_000 => proto::Unit::Day,
        _ => proto::Unit::Unknown,
    }
}

#[tonic::async_trait]
impl proto::RateLimitService for Limits {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let meta = Meta::read(request.metadata())?;
        let answer = self.answer(request.get_ref(), &meta).await;
        if let Err(s) = &answer {
            eprintln!("tollgate limits: {:?}: {}", s.code(), s.message());
        }
        answer.map(Response::new)
    }
}

/// Serves `limits` on `listener` until `shutdown` resolves.
pub async fn serve(
    limits: Arc<Limits>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(proto::RateLimitServiceServer::from_arc(limits))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string())
}
