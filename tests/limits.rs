//! `tollgate limits` against a real redis-server (Debian's, installed by scripts/setup.sh):
//! each test starts its own on a free port with a temporary directory, runs one or two service
//! replicas in-process (or the built binary), and drives them with a tonic client over
//! loopback gRPC, as the filter will.
#![cfg(feature = "limits")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::limits::config;
use tollgate::limits::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitResponse, RateLimitServiceClient,
};
use tollgate::limits::scheme::{self, Bucket, Target};
use tollgate::limits::service::{self, Limits};
use tollgate::support::calendar::Unit;
use tonic::transport::Channel;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A redis-server child on a free port, its data in a temporary directory.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    persist: bool,
}

impl Redis {
    fn start(persist: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir,
            persist,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
        ])
        .arg(&self.dir)
        .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
        .args(["--appendonly", if self.persist { "yes" } else { "no" }])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("redis-server could not start ({e}): run scripts/setup.sh (it installs Debian's redis-server)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("client")
    }

    fn ping(&self) -> redis::RedisResult<String> {
        let mut c = self
            .client()
            .get_connection_with_timeout(Duration::from_millis(200))?;
        redis::cmd("PING").query(&mut c)
    }

    fn get(&self, key: &str) -> Option<String> {
        let mut c = self.client().get_connection().expect("redis connection");
        redis::cmd("GET").arg(key).query(&mut c).expect("GET")
    }

    /// Stops the server (SHUTDOWN, which writes the append-only file when persistence is on).
    fn stop(&mut self) {
        if let Ok(mut c) = self.client().get_connection() {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut c);
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The KrakenD document of these tests, on the Redis at `port`.
fn doc(port: u16) -> Value {
    json!({
        "version": 3,
        "extra_config": {
            "redis": {"connection_pools": [{"name": "shared", "address": format!("127.0.0.1:{port}")}]},
            "governance/processors": {"quotas": [
                {"name": "tokens", "connection_name": "shared", "hash_keys": true,
                 "rules": [{"name": "gold", "limits": [{"amount": 1000000, "unit": "day"}, {"amount": 100000000, "unit": "month"}]},
                           {"name": "small", "limits": [{"amount": 1000, "unit": "minute"}, {"amount": 5000, "unit": "day"}]}]},
                {"name": "money", "connection_name": "shared", "on_failure_max_retries": 3, "on_failure_backoff_strategy": "linear",
                 "rules": [{"name": "std", "limits": [{"amount": 2.5, "unit": "month"}]}]}]},
            "qos/ratelimit/service/redis": {"connection_name": "shared", "max_rate": 3, "every": "10s"}
        },
        "endpoints": [{
            "endpoint": "/v1/chat/completions", "method": "POST",
            "extra_config": {
                "governance/quota": {"quota_name": "money", "tier_key": "x-plan", "weight_key": "cost",
                    "tiers": [{"rule_name": "std", "tier_value_as": "*", "strategy": "ip"}]},
                "qos/ratelimit/router/redis": {"connection_name": "shared", "client_max_rate": 2, "every": "1m",
                    "strategy": "header", "key": "x-tenant", "client_max_tokens": 100, "client_tokens_every": "1m"}
            },
            "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/"}]
        }]
    })
}

/// An injectable clock (unix ms).
#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn at(ms: u64) -> Self {
        TestClock(Arc::new(AtomicU64::new(ms)))
    }
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    fn clock(&self) -> service::Clock {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

fn system_now_ms() -> u64 {
    (service::system_clock())()
}

/// One in-process replica of the service; stops when dropped.
struct Replica {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Replica {
    async fn start(doc: &Value, clock: service::Clock) -> Self {
        Self::start_with(doc, clock, Duration::from_millis(1000)).await
    }

    async fn start_with(doc: &Value, clock: service::Clock, timeout: Duration) -> Self {
        let cfg = config::compile(doc, &|_| None, true).expect("config");
        let limits = Arc::new(Limits::new(cfg, clock, timeout).expect("service"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service::serve(limits, listener, async {
            let _ = rx.await;
        }));
        Replica {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn client(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Descriptors of one quota operation: every limit of the rule, `hits` each.
fn quota(
    q: &str,
    rule: &str,
    units: &[Unit],
    identity: &str,
    hits: u64,
    negative: bool,
) -> Vec<RateLimitDescriptor> {
    units
        .iter()
        .map(|u| {
            descriptor(
                Target::Quota {
                    quota: q.into(),
                    rule: rule.into(),
                    unit: *u,
                    identity: identity.into(),
                },
                hits,
                negative,
            )
        })
        .collect()
}

fn descriptor(t: Target, hits: u64, negative: bool) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: t
            .entries()
            .into_iter()
            .map(|(key, value)| Entry { key, value })
            .collect(),
        limit: None,
        hits_addend: Some(hits),
        is_negative_hits: negative,
    }
}

/// Sends one operation with its metadata.
async fn call(
    c: &mut RateLimitServiceClient<Channel>,
    descriptors: Vec<RateLimitDescriptor>,
    op: &str,
    id: Option<&str>,
    at: Option<u64>,
) -> Result<RateLimitResponse, tonic::Status> {
    let mut req = tonic::Request::new(RateLimitRequest {
        domain: scheme::DOMAIN.into(),
        descriptors,
        hits_addend: 0,
    });
    let m = req.metadata_mut();
    m.insert(scheme::OP, op.parse().expect("op"));
    if let Some(id) = id {
        m.insert(scheme::ID, id.parse().expect("id"));
    }
    if let Some(at) = at {
        m.insert(scheme::AT, at.to_string().parse().expect("at"));
    }
    c.should_rate_limit(req)
        .await
        .map(tonic::Response::into_inner)
}

fn header<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

fn ok(r: &RateLimitResponse) -> bool {
    r.overall_code == Code::Ok as i32
}

fn count(redis: &Redis, quota: &str, rule: &str, identity: &str, unit: Unit, now_s: u64) -> u64 {
    let (start, _) = unit.window(now_s);
    let key = tollgate::limits::store::window_key(
        tollgate::limits::store::Keys::Plain,
        quota,
        rule,
        identity,
        unit.name(),
        start,
    );
    redis.get(&key).map_or(0, |v| v.parse().expect("count"))
}

// 2026-01-31T23:59:30Z, a Saturday.
const JAN_31_LATE: u64 = 1_769_903_970_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_charges_through_two_replicas_are_counted_exactly() {
    let redis = Redis::start(false);
    let d = doc(redis.port);
    let (a, b) = (
        Replica::start(&d, service::system_clock()).await,
        Replica::start(&d, service::system_clock()).await,
    );
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(if i % 2 == 0 {
            a.client().await
        } else {
            b.client().await
        });
    }
    let units = [Unit::Day, Unit::Month];
    let tenants = ["t1", "t2", "t3"];
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let mut c = clients[(i % 4) as usize].clone();
        let tenant = tenants[(i % 3) as usize];
        let weight = 17 + (i * 37) % 500; // what the provider reported for call i
        tasks.push(tokio::spawn(async move {
            let r = call(
                &mut c,
                quota("tokens", "gold", &units, tenant, weight, false),
                "charge",
                Some(&format!("call-{i}")),
                None,
            )
            .await
            .expect("charge");
            assert!(ok(&r));
            (tenant, weight)
        }));
    }
    let mut want = std::collections::HashMap::new();
    for t in tasks {
        let (tenant, w) = t.await.expect("task");
        *want.entry(tenant).or_insert(0u64) += w;
    }
    let now = system_now_ms() / 1000;
    let mut total = 0;
    for t in tenants {
        for u in units {
            assert_eq!(
                count(&redis, "tokens", "gold", t, u, now),
                want[t],
                "{t} {u:?}"
            );
        }
        total += want[t];
    }
    eprintln!("reported {total} tokens in 200 calls over 2 replicas; charged {total} (per tenant: {want:?})");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_never_overshoot_and_settle_exactly() {
    let redis = Redis::start(false);
    let d = doc(redis.port);
    let (a, b) = (
        Replica::start(&d, service::system_clock()).await,
        Replica::start(&d, service::system_clock()).await,
    );
    let (ca, cb) = (a.client().await, b.client().await);
    let units = [Unit::Minute, Unit::Day];
    // 200 concurrent reservations of 10 against 1000 a minute: exactly 100 fit, whatever
    // the interleaving over two replicas.
    let start_s = system_now_ms() / 1000;
    if 60 - start_s % 60 < 5 {
        tokio::time::sleep(Duration::from_secs(6)).await; // stay inside one minute window
    }
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        tasks.push(tokio::spawn(async move {
            let r = call(
                &mut c,
                quota("tokens", "small", &units, "burst", 10, false),
                "reserve",
                Some(&format!("r{i}")),
                None,
            )
            .await
            .expect("reserve");
            (i, ok(&r), r)
        }));
    }
    let mut granted = Vec::new();
    for t in tasks {
        let (i, fits, r) = t.await.expect("task");
        if fits {
            granted.push(i);
        } else {
            assert_eq!(header(&r, "X-Quota-Remaining"), Some("0"));
            assert!(header(&r, "Retry-After").is_some());
        }
    }
    assert_eq!(granted.len(), 100);
    let now = system_now_ms() / 1000;
    assert_eq!(
        count(&redis, "tokens", "small", "burst", Unit::Minute, now),
        1000
    );
    // Each granted call used 7: give back 3 (is_negative_hits), twice (a retry: same id).
    for i in &granted {
        let mut c = ca.clone();
        for _ in 0..2 {
            let r = call(
                &mut c,
                quota("tokens", "small", &units, "burst", 3, true),
                "charge",
                Some(&format!("s{i}")),
                None,
            )
            .await
            .expect("settle");
            assert!(ok(&r));
        }
    }
    assert_eq!(
        count(&redis, "tokens", "small", "burst", Unit::Minute, now),
        700
    );
    assert_eq!(
        count(&redis, "tokens", "small", "burst", Unit::Day, now),
        700
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_follow_the_calendar_and_settlements_go_to_their_windows() {
    let redis = Redis::start(false);
    let clock = TestClock::at(JAN_31_LATE);
    let r = Replica::start(&doc(redis.port), clock.clock()).await;
    let mut c = r.client().await;
    let units = [Unit::Minute, Unit::Day];
    let jan = JAN_31_LATE / 1000;
    // 995 of the minute's 1000: a reservation of 10 does not fit, one of 5 does.
    call(
        &mut c,
        quota("tokens", "small", &units, "u", 995, false),
        "charge",
        None,
        None,
    )
    .await
    .unwrap();
    let refused = call(
        &mut c,
        quota("tokens", "small", &units, "u", 10, false),
        "reserve",
        None,
        None,
    )
    .await
    .unwrap();
    assert!(!ok(&refused));
    assert_eq!(
        header(&refused, "Retry-After"),
        Some("30"),
        "seconds to 00:00:00"
    );
    assert_eq!(refused.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(refused.statuses[1].code, Code::Ok as i32);
    assert_eq!(
        count(&redis, "tokens", "small", "u", Unit::Minute, jan),
        995,
        "a refused reservation takes nothing"
    );
    let fits = call(
        &mut c,
        quota("tokens", "small", &units, "u", 5, false),
        "reserve",
        None,
        None,
    )
    .await
    .unwrap();
    assert!(ok(&fits));
    assert_eq!(header(&fits, "X-Quota-Limit"), Some("1000"));
    assert_eq!(header(&fits, "X-Quota-Remaining"), Some("0"));
    // Spent: a check (hits 0) refuses, a charge still counts.
    assert!(!ok(&call(
        &mut c,
        quota("tokens", "small", &units, "u", 0, false),
        "reserve",
        None,
        None
    )
    .await
    .unwrap()));
    // Midnight UTC: a new minute, a new day (and a new month for month limits).
    clock.set(JAN_31_LATE + 31_000);
    let feb = jan + 31;
    let r2 = call(
        &mut c,
        quota("tokens", "small", &units, "u", 5, false),
        "reserve",
        None,
        None,
    )
    .await
    .unwrap();
    assert!(ok(&r2));
    assert_eq!(count(&redis, "tokens", "small", "u", Unit::Day, feb), 5);
    assert_eq!(count(&redis, "tokens", "small", "u", Unit::Day, jan), 1000);
    // Settling January's reservation (x-tollgate-at) leaves February alone; its minute and
    // day have ended, so nothing is written.
    call(
        &mut c,
        quota("tokens", "small", &units, "u", 5, true),
        "charge",
        None,
        Some(jan),
    )
    .await
    .unwrap();
    assert_eq!(count(&redis, "tokens", "small", "u", Unit::Day, jan), 1000);
    assert_eq!(count(&redis, "tokens", "small", "u", Unit::Day, feb), 5);
    // Months are calendar months: the money quota's January counter is not February's.
    let money = |hits, neg| quota("money", "std", &[Unit::Month], "ip-1", hits, neg);
    clock.set(JAN_31_LATE);
    assert!(ok(&call(
        &mut c,
        money(2_000_000, false),
        "charge",
        None,
        None
    )
    .await
    .unwrap()));
    let over = call(&mut c, money(600_000, false), "reserve", None, None)
        .await
        .unwrap();
    assert!(!ok(&over));
    assert_eq!(header(&over, "Retry-After"), Some("30"));
    assert_eq!(header(&over, "X-Quota-Limit"), Some("2.500000"));
    assert_eq!(header(&over, "X-Quota-Remaining"), Some("0.500000"));
    clock.set(JAN_31_LATE + 31_000);
    assert!(ok(&call(
        &mut c,
        money(600_000, false),
        "reserve",
        None,
        None
    )
    .await
    .unwrap()));
    // Keys expire with their window (plus the grace for clock skew).
    let ttl: i64 = {
        let mut conn = redis.client().get_connection().unwrap();
        let (start, _) = Unit::Minute.window(feb);
        redis::cmd("PTTL")
            .arg(tollgate::limits::store::window_key(
                tollgate::limits::store::Keys::Plain,
                "tokens",
                "small",
                "u",
                "minute",
                start,
            ))
            .query(&mut conn)
            .unwrap()
    };
    assert!(ttl > 0, "the minute counter has an expiry ({ttl})");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_operations_count_once_and_get_the_first_answer() {
    let redis = Redis::start(false);
    let r = Replica::start(&doc(redis.port), service::system_clock()).await;
    let mut c = r.client().await;
    let units = [Unit::Minute, Unit::Day];
    let first = call(
        &mut c,
        quota("tokens", "small", &units, "i", 600, false),
        "reserve",
        Some("call-1:reserve"),
        None,
    )
    .await
    .unwrap();
    let again = call(
        &mut c,
        quota("tokens", "small", &units, "i", 600, false),
        "reserve",
        Some("call-1:reserve"),
        None,
    )
    .await
    .unwrap();
    assert!(ok(&first) && ok(&again));
    assert_eq!(first.response_headers_to_add, again.response_headers_to_add);
    let remaining = |r: &RateLimitResponse| {
        r.statuses
            .iter()
            .map(|s| s.limit_remaining)
            .collect::<Vec<_>>()
    };
    assert_eq!(remaining(&first), remaining(&again));
    let now = system_now_ms() / 1000;
    assert_eq!(
        count(&redis, "tokens", "small", "i", Unit::Minute, now),
        600
    );
    // Another id is another operation: 600 more do not fit.
    let other = call(
        &mut c,
        quota("tokens", "small", &units, "i", 600, false),
        "reserve",
        Some("call-2:reserve"),
        None,
    )
    .await
    .unwrap();
    assert!(!ok(&other));
    // The same id under another op is another operation too.
    call(
        &mut c,
        quota("tokens", "small", &units, "i", 1, false),
        "charge",
        Some("call-1:reserve"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        count(&redis, "tokens", "small", "i", Unit::Minute, now),
        601
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_follow_krakend_token_buckets() {
    let redis = Redis::start(false);
    let clock = TestClock::at(1_800_000_000_000);
    let r = Replica::start(&doc(redis.port), clock.clock()).await;
    let mut c = r.client().await;
    let svc = |b: Bucket| {
        descriptor(
            Target::RateLimit {
                scope: scheme::SERVICE_SCOPE.into(),
                bucket: b,
            },
            1,
            false,
        )
    };
    // max_rate 3 per 10 s: three requests, then 429/503 with Retry-After 4 (one token per 3.33 s).
    for _ in 0..3 {
        assert!(ok(&call(
            &mut c,
            vec![svc(Bucket::Endpoint)],
            "reserve",
            None,
            None
        )
        .await
        .unwrap()));
    }
    let refused = call(&mut c, vec![svc(Bucket::Endpoint)], "reserve", None, None)
        .await
        .unwrap();
    assert!(!ok(&refused));
    assert_eq!(header(&refused, "Retry-After"), Some("4"));
    clock.set(1_800_000_003_334);
    assert!(ok(&call(
        &mut c,
        vec![svc(Bucket::Endpoint)],
        "reserve",
        None,
        None
    )
    .await
    .unwrap()));
    // An endpoint's client buckets: 2 requests a minute per tenant; a refused client takes
    // nothing from its token balance (all-or-nothing across descriptors).
    let scope = scheme::endpoint_scope("POST", "/v1/chat/completions");
    let d = |b: Bucket, hits| {
        descriptor(
            Target::RateLimit {
                scope: scope.clone(),
                bucket: b,
            },
            hits,
            false,
        )
    };
    let both = || {
        vec![
            d(Bucket::Tokens("a".into()), 0),
            d(Bucket::Client("a".into()), 1),
        ]
    };
    assert!(ok(&call(&mut c, both(), "reserve", None, None)
        .await
        .unwrap()));
    assert!(ok(&call(&mut c, both(), "reserve", None, None)
        .await
        .unwrap()));
    assert!(!ok(&call(&mut c, both(), "reserve", None, None)
        .await
        .unwrap()));
    assert!(ok(&call(
        &mut c,
        vec![d(Bucket::Client("b".into()), 1)],
        "reserve",
        None,
        None
    )
    .await
    .unwrap()));
    // Tokens: 100 a minute; an answer of 160 overdraws; the debt (60) is paid by waiting 36 s.
    let overdrawn = call(
        &mut c,
        vec![d(Bucket::Tokens("t".into()), 160)],
        "charge",
        None,
        None,
    )
    .await
    .unwrap();
    assert!(
        !ok(&overdrawn),
        "a charge is taken whatever the balance, and reports the overdraft"
    );
    let debt = call(
        &mut c,
        vec![d(Bucket::Tokens("t".into()), 0)],
        "reserve",
        None,
        None,
    )
    .await
    .unwrap();
    assert!(!ok(&debt));
    assert_eq!(
        header(&debt, "Retry-After"),
        Some("36"),
        "60 tokens of debt at 100 a minute"
    );
    clock.set(1_800_000_003_334 + 36_001);
    assert!(ok(&call(
        &mut c,
        vec![d(Bucket::Tokens("t".into()), 0)],
        "reserve",
        None,
        None
    )
    .await
    .unwrap()));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_the_spent_budget() {
    let mut redis = Redis::start(true);
    let d = doc(redis.port);
    let units = [Unit::Day, Unit::Month];
    let a = Replica::start(&d, service::system_clock()).await;
    let mut c = a.client().await;
    call(
        &mut c,
        quota("tokens", "gold", &units, "r", 400, false),
        "charge",
        None,
        None,
    )
    .await
    .unwrap();
    a.stop().await;
    // A new service process knows what the old one counted: it kept nothing itself.
    let b = Replica::start(&d, service::system_clock()).await;
    let mut c = b.client().await;
    let r = call(
        &mut c,
        quota("tokens", "gold", &units, "r", 0, false),
        "reserve",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(header(&r, "X-Quota-Remaining"), Some("999600"));
    // Redis restarts with its append-only file: the counts survive, and the same service
    // reconnects by itself.
    redis.stop();
    redis.spawn();
    let mut answer = None;
    for _ in 0..50 {
        match call(
            &mut c,
            quota("tokens", "gold", &units, "r", 100, false),
            "charge",
            Some("after-restart"),
            None,
        )
        .await
        {
            Ok(r) => {
                answer = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let r = answer.expect("the service reconnects to the restarted Redis");
    assert_eq!(header(&r, "X-Quota-Remaining"), Some("999500"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_fast_and_counting_resumes() {
    let mut redis = Redis::start(false);
    let d = doc(redis.port);
    let r = Replica::start_with(&d, service::system_clock(), Duration::from_millis(300)).await;
    let mut c = r.client().await;
    let units = [Unit::Day, Unit::Month];
    call(
        &mut c,
        quota("tokens", "gold", &units, "d", 10, false),
        "charge",
        None,
        None,
    )
    .await
    .unwrap();
    redis.stop();
    for (what, q) in [
        ("no retries", quota("tokens", "gold", &units, "d", 1, false)),
        (
            "3 linear retries",
            quota("money", "std", &[Unit::Month], "d", 1, false),
        ),
    ] {
        let t = Instant::now();
        let e = call(&mut c, q, "charge", None, None).await.unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{what}: {e:?}");
        assert!(
            took < Duration::from_millis(600),
            "{what}: bounded by the 300 ms operation timeout, took {took:?}"
        );
        eprintln!(
            "redis down, {what}: UNAVAILABLE in {took:?} ({})",
            e.message()
        );
    }
    redis.spawn();
    let mut resumed = None;
    for _ in 0..50 {
        if let Ok(r) = call(
            &mut c,
            quota("tokens", "gold", &units, "d", 5, false),
            "charge",
            None,
            None,
        )
        .await
        {
            resumed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A fresh Redis (no persistence here): counting starts again from what it holds.
    let r2 = resumed.expect("counting resumes when Redis is back");
    assert_eq!(header(&r2, "X-Quota-Remaining"), Some("999995"));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_descriptors_are_invalid_arguments() {
    let redis = Redis::start(false);
    let r = Replica::start(&doc(redis.port), service::system_clock()).await;
    let mut c = r.client().await;
    let cases: Vec<(Vec<RateLimitDescriptor>, &str)> = vec![
        (
            quota("nope", "gold", &[Unit::Day], "x", 1, false),
            "quota \"nope\" is not a Redis quota",
        ),
        (
            quota("tokens", "silver", &[Unit::Day], "x", 1, false),
            "rule \"silver\" is not a rule of quota \"tokens\"",
        ),
        (
            quota("tokens", "gold", &[Unit::Hour], "x", 1, false),
            "has no hour limit",
        ),
        (
            vec![descriptor(
                Target::RateLimit {
                    scope: "GET /x".into(),
                    bucket: Bucket::Endpoint,
                },
                1,
                false,
            )],
            "rate limit \"GET /x\" is not a Redis rate limit",
        ),
        (
            vec![descriptor(
                Target::RateLimit {
                    scope: "service".into(),
                    bucket: Bucket::Client("c".into()),
                },
                1,
                false,
            )],
            "has no client_max_rate bucket",
        ),
        (
            vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: "generic_key".into(),
                    value: "x".into(),
                }],
                ..Default::default()
            }],
            "is not one of tollgate's",
        ),
    ];
    for (d, want) in cases {
        let e = call(&mut c, d, "reserve", None, None).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains(want),
            "{} does not contain {want}",
            e.message()
        );
    }
    let e = call(
        &mut c,
        quota("tokens", "gold", &[Unit::Day], "x", 1, false),
        "refund",
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("is not reserve, charge or release"));
    let future = system_now_ms() / 1000 + 3600;
    let e = call(
        &mut c,
        quota("tokens", "gold", &[Unit::Day], "x", 1, false),
        "charge",
        None,
        Some(future),
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("is in the future"));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_latency_of_a_check_and_a_charge() {
    let redis = Redis::start(false);
    let r = Replica::start(&doc(redis.port), service::system_clock()).await;
    let mut c = r.client().await;
    let units = [Unit::Day, Unit::Month];
    let mut rtt = Vec::new();
    for i in 0..1000 {
        let t = Instant::now();
        let check = call(
            &mut c,
            quota("tokens", "gold", &units, "lat", 0, false),
            "reserve",
            None,
            None,
        )
        .await
        .unwrap();
        let charge = call(
            &mut c,
            quota("tokens", "gold", &units, "lat", 42, false),
            "charge",
            Some(&format!("lat-{i}")),
            None,
        )
        .await
        .unwrap();
        rtt.push(t.elapsed());
        assert!(ok(&check) && ok(&charge));
    }
    rtt.sort();
    let (p50, p99) = (rtt[rtt.len() / 2], rtt[rtt.len() * 99 / 100]);
    eprintln!("check + charge round trips over loopback gRPC and Redis: p50 {p50:?}, p99 {p99:?} (1000 pairs)");
    // Loose bound: the shared 2-core machine is noisy; the note reports the numbers.
    assert!(p50 < Duration::from_millis(20), "p50 {p50:?}");
    r.stop().await;
}

/// The built binary: readiness line, a real call, --print-config, and refusals naming the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_prints_and_refuses() {
    let bin = Path::new(env!("CARGO_BIN_EXE_tollgate"));
    let redis = Redis::start(false);
    let dir = &redis.dir;
    let good = dir.join("krakend.json");
    std::fs::write(&good, doc(redis.port).to_string()).unwrap();
    let mut child = Command::new(bin)
        .args(["limits"])
        .arg(&good)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = child.stdout.take().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
    }
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("readiness line")
        .to_string();
    let mut c = RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let r = call(
        &mut c,
        quota("tokens", "gold", &[Unit::Day, Unit::Month], "bin", 7, false),
        "charge",
        None,
        None,
    )
    .await
    .unwrap();
    assert!(ok(&r));
    let _ = child.kill();
    let _ = child.wait();

    let printed = Command::new(bin)
        .arg("limits")
        .arg(&good)
        .args(["--print-config", "limitador"])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let limits: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert!(limits.as_array().is_some_and(|l| l.len() >= 5));
    assert!(String::from_utf8_lossy(&printed.stderr).contains("first hit"));

    let mut bad = doc(redis.port);
    bad["extra_config"]["governance/processors"]["quotas"][0]["connection_name"] = json!("typo");
    let bad_path = dir.join("bad.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    for cmd in ["limits", "check"] {
        let out = Command::new(bin).arg(cmd).arg(&bad_path).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("$.extra_config.governance/processors.quotas[0].connection_name: \"typo\" names no Redis connection pool"),
            "{cmd}: {err}"
        );
    }
    let mut unresolvable = doc(redis.port);
    unresolvable["extra_config"]["redis"]["connection_pools"][0]["address"] =
        json!("redis.invalid:6379");
    std::fs::write(&bad_path, unresolvable.to_string()).unwrap();
    let out = Command::new(bin)
        .arg("check")
        .arg(&bad_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "$.extra_config.redis.connection_pools[0].address: \"redis.invalid:6379\" does not resolve"
    ));
}

/// The call before a request (a reserve) whose answer the gateway never had, in every order
/// with its `release` (same id, same descriptors) and the charge of the whole usage after
/// it: what a provider reported is charged exactly once, nothing the reserve took stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_whose_answer_was_lost_is_released_in_any_order() {
    let redis = Redis::start(false);
    let r = Replica::start(&doc(redis.port), service::system_clock()).await;
    let mut c = r.client().await;
    let units = [Unit::Minute, Unit::Day];
    let now = system_now_ms() / 1000;
    let spent = |who: &str| count(&redis, "tokens", "small", who, Unit::Minute, now);
    // What the filter sends: the tenant's request bucket and the quota's reservation.
    let reserve = |who: &str, hits: u64| {
        let mut d = vec![descriptor(
            Target::RateLimit {
                scope: scheme::endpoint_scope("POST", "/v1/chat/completions"),
                bucket: Bucket::Client(who.into()),
            },
            1,
            false,
        )];
        d.extend(quota("tokens", "small", &units, who, hits, false));
        d
    };
    let at = Some(now);

    // The reserve landed, its answer was lost: released, then the whole usage charged.
    let id = "lost-1:reserve";
    let first = call(&mut c, reserve("a", 600), "reserve", Some(id), at).await;
    assert!(ok(&first.unwrap()));
    assert_eq!(spent("a"), 600);
    let rel = call(&mut c, reserve("a", 600), "release", Some(id), at).await;
    assert!(ok(&rel.unwrap()));
    assert_eq!(spent("a"), 0, "what the reserve took is given back");
    // Released again (the release retried): nothing more given back.
    call(
        &mut c,
        quota("tokens", "small", &units, "a", 300, false),
        "charge",
        Some("other"),
        at,
    )
    .await
    .unwrap();
    call(&mut c, reserve("a", 600), "release", Some(id), at)
        .await
        .unwrap();
    assert_eq!(spent("a"), 300);
    // The reserve retried (or a copy landing late): takes nothing.
    let late = call(&mut c, reserve("a", 600), "reserve", Some(id), at).await;
    assert!(!ok(&late.unwrap()));
    assert_eq!(spent("a"), 300);
    // The usage, charged once however often it is sent.
    for _ in 0..2 {
        let q = quota("tokens", "small", &units, "a", 450, false);
        call(&mut c, q, "charge", Some("lost-1:charge"), None)
            .await
            .unwrap();
    }
    assert_eq!(spent("a"), 750, "300 + the usage 450, once");
    // The request bucket (2 a minute) was given back too: two more requests fit.
    for n in 2..4 {
        let id = format!("lost-{n}:reserve");
        let fits = call(&mut c, reserve("a", 1), "reserve", Some(&id), at).await;
        assert!(ok(&fits.unwrap()), "request {n}");
    }
    let over = call(
        &mut c,
        reserve("a", 1),
        "reserve",
        Some("lost-4:reserve"),
        at,
    )
    .await;
    assert!(!ok(&over.unwrap()), "the third request of the minute");

    // The release comes first, the reserve lands after it: it takes nothing, ever.
    let id = "late-1:reserve";
    let rel = call(&mut c, reserve("b", 600), "release", Some(id), at).await;
    assert!(ok(&rel.unwrap()));
    assert_eq!(spent("b"), 0);
    let late = call(&mut c, reserve("b", 600), "reserve", Some(id), at).await;
    assert!(!ok(&late.unwrap()));
    assert_eq!(spent("b"), 0);
    let q = quota("tokens", "small", &units, "b", 450, false);
    call(&mut c, q, "charge", Some("late-1:charge"), None)
        .await
        .unwrap();
    assert_eq!(spent("b"), 450, "the usage, and nothing of the reservation");
    let fits = call(
        &mut c,
        reserve("b", 1),
        "reserve",
        Some("late-2:reserve"),
        at,
    )
    .await;
    assert!(ok(&fits.unwrap()));
    let fits = call(
        &mut c,
        reserve("b", 1),
        "reserve",
        Some("late-3:reserve"),
        at,
    )
    .await;
    assert!(
        ok(&fits.unwrap()),
        "the late reserve took no request either"
    );

    // A refused reserve (over the minute's 1000), released: it took nothing, gives nothing.
    call(
        &mut c,
        quota("tokens", "small", &units, "c", 900, false),
        "charge",
        Some("c0"),
        at,
    )
    .await
    .unwrap();
    let refused = call(
        &mut c,
        reserve("c", 600),
        "reserve",
        Some("c-1:reserve"),
        at,
    )
    .await;
    assert!(!ok(&refused.unwrap()));
    assert_eq!(spent("c"), 900);
    call(
        &mut c,
        reserve("c", 600),
        "release",
        Some("c-1:reserve"),
        at,
    )
    .await
    .unwrap();
    assert_eq!(spent("c"), 900, "a refused reserve gives nothing back");

    // A release names the reserve it releases.
    let e = call(&mut c, reserve("d", 1), "release", None, at).await;
    assert_eq!(e.unwrap_err().code(), tonic::Code::InvalidArgument);
    r.stop().await;
}
