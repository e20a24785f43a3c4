//! The pipeline's side of the fleet limits ([`crate::limits`]): budgets and rate limits kept
//! in Redis behind the limits service, shared by every Envoy.
//!
//! A request makes at most two operations, each one `ShouldRateLimit` call
//! ([`crate::limits::wire`]):
//! - **before it goes upstream**, at the last moment the pipeline holds it (after the body of
//!   an LLM call is prepared, so that its reservation is known): its Redis rate limits (a
//!   client's token balance checked, one request taken from the client's and the endpoint's
//!   buckets) and its quota (checked, or `reserve`d), all or nothing (op `reserve`). The
//!   request waits for the answer ([`Gate`]); a refusal is answered in the client's API with
//!   the service's `Retry-After` and `X-Quota-*`. A failed call (no answer within
//!   `limits/service.timeout`, any gRPC error) goes by `on_failure_allow`: on (every limit of
//!   the call allows it), counted in `tollgate_limits_unavailable_total{kind="allowed"}`; off,
//!   a 503 `limits_unavailable`. The reserve may have landed all the same (or land later):
//!   without its answer (failed, or the client gone meanwhile) it is released by its id
//!   ([`release_pending`]), so the charge after is the whole usage and nothing stays taken.
//! - **after the answer**, from the one usage record (`account.rs`): the quota charged what
//!   the call used (or the reservation settled: the difference, to the reservation's windows)
//!   and the client's token balance charged its tokens (op `charge`), through the host's
//!   long-lived context ([`Host::send_detached`]), retried until delivered.
//!
//! Every operation carries an id made by the gateway (never the client's request id), so a
//! retried charge is counted once.

use super::{Flow, Phase, Then};
use crate::config::{Endpoint, Gateway};
use crate::cost::{Charge, Store};
use crate::governance::{self, ratelimit::FleetRateLimit};
use crate::host::outbox::Detached;
use crate::host::Host;
use crate::limits::client::CLUSTER;
use crate::limits::scheme::{Bucket, Op, Target};
use crate::limits::wire::{self, Code, Descriptor, Request, Response};
use crate::observe;
use crate::refusal::Refusal;
use crate::routing::Params;
use std::cell::Cell;

/// The callouts' `:authority` (the cluster decides where they go).
const AUTHORITY: &str = "tollgate-limits";

/// One Redis rate limit of the request: its scope, the client, which buckets it has.
#[derive(Debug, Clone)]
struct Rate {
    scope: String,
    client: String,
    endpoint: bool,
    client_bucket: bool,
    tokens: bool,
    allow_on_failure: bool,
}

/// The fleet state of one request.
#[derive(Debug, Default)]
pub struct Fleet {
    /// The operations' id prefix (made by the gateway).
    id: String,
    rates: Vec<Rate>,
    /// The call before the request was made (once per request).
    gated: bool,
    /// The unix seconds of that call: a settlement goes to its windows.
    pub(super) at: u64,
    /// `X-Quota-*` of that call's answer, for the response (unless `disable_quota_headers`).
    pub headers: Vec<(&'static str, String)>,
    /// That call while its answer is awaited: released if the answer never comes.
    pending: Option<Request>,
}

/// What a descriptor of the call stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Tokens(usize),
    Client(usize),
    Endpoint(usize),
    /// A limit of the quota's rule (index in `Charge::limits`).
    Quota(usize),
}

/// The call before the request, in flight.
pub struct Gate {
    token: u32,
    roles: Vec<Role>,
    /// What the quota reserves (0: a check).
    reserve: u64,
    then: Then,
}

impl Fleet {
    /// Request headers: the Redis rate limits that apply, with the client each one keys on
    /// (read now, before the gateway changes any header). Token balances only on LLM calls.
    pub fn new<H: Host>(h: &H, ep: &Endpoint, params: &Params) -> Self {
        let llm = ep.api.is_some();
        let rate = |r: &FleetRateLimit| Rate {
            scope: r.scope.clone(),
            client: r.limit.client_key(h, params).unwrap_or_default(),
            endpoint: r.limit.endpoint.is_some(),
            client_bucket: r.limit.client.is_some(),
            tokens: llm && r.limit.tokens.is_some(),
            allow_on_failure: r.allow_on_failure,
        };
        Self {
            rates: ep.governance.fleet_rate_limits.iter().map(rate).collect(),
            ..Self::default()
        }
    }

    /// The descriptors of the call before the request.
    fn descriptors(&self, charge: Option<&Charge>, reserve: u64) -> (Vec<Descriptor>, Vec<Role>) {
        let mut out = Vec::new();
        let mut roles = Vec::new();
        let mut push = |target: Target, hits: u64, role: Role| {
            out.push(Descriptor {
                entries: target.entries(),
                hits,
                negative: false,
            });
            roles.push(role);
        };
        for (i, r) in self.rates.iter().enumerate() {
            let bucket = |b: Bucket| Target::RateLimit {
                scope: r.scope.clone(),
                bucket: b,
            };
            if r.tokens {
                push(bucket(Bucket::Tokens(r.client.clone())), 0, Role::Tokens(i));
            }
            if r.client_bucket {
                push(bucket(Bucket::Client(r.client.clone())), 1, Role::Client(i));
            }
            if r.endpoint {
                push(bucket(Bucket::Endpoint), 1, Role::Endpoint(i));
            }
        }
        for (k, target) in quota_targets(charge) {
            push(target, reserve, Role::Quota(k));
        }
        (out, roles)
    }

    /// The operations' id prefix, made once.
    fn id<H: Host + ?Sized>(&mut self, h: &H) -> &str {
        if self.id.is_empty() {
            self.id = new_id(h.now_millis());
        }
        &self.id
    }
}

/// A fleet quota's descriptors: one per limit of its rule (none for a per-Envoy quota).
fn quota_targets(charge: Option<&Charge>) -> Vec<(usize, Target)> {
    let Some(c) = charge.filter(|c| matches!(c.store, Store::Fleet(_))) else {
        return Vec::new();
    };
    c.limits
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let target = Target::Quota {
                quota: c.quota.clone(),
                rule: c.rule.clone(),
                unit: l.unit,
                identity: c.identity.clone(),
            };
            (k, target)
        })
        .collect()
}

/// A fresh operation id: a random per-worker prefix (the VM's or thread's) and a counter.
fn new_id(now_ms: u64) -> String {
    thread_local! {
        static NEXT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    NEXT.with(|c| {
        let (mut seed, n) = c.get();
        if seed == 0 {
            use std::hash::{BuildHasher, Hasher};
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            seed = (random ^ now_ms.rotate_left(23)) | 1;
        }
        c.set((seed, n.wrapping_add(1)));
        format!("{seed:016x}-{n:x}")
    })
}

impl Flow {
    /// The call before the request goes upstream (once per request): `reserve` is what the
    /// quota reserves (0: a check). Without fleet limits, or once made, `then` at once.
    pub(super) fn gate<H: Host>(&mut self, h: &mut H, reserve: u64, then: Then) -> super::Action {
        let charge = self.quota.charge.as_ref();
        let (descriptors, roles) = self.fleet.descriptors(charge, reserve);
        if self.fleet.gated || descriptors.is_empty() {
            return self.go(h, then, false);
        }
        self.fleet.gated = true;
        self.fleet.at = h.now_unix();
        let req = Request {
            descriptors,
            op: Op::Reserve,
            id: format!("{}:reserve", self.fleet.id(h)),
            at: Some(self.fleet.at),
        };
        let timeout = self.gw.fleet.timeout_ms;
        let headers = req.headers(AUTHORITY, timeout);
        let list: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match h.dispatch(CLUSTER, &list, &req.body(), timeout) {
            Some(token) => {
                self.fleet.pending = Some(req);
                let gate = Gate {
                    token,
                    roles,
                    reserve,
                    then,
                };
                self.phase = Phase::Gate(Box::new(gate));
                super::Action::Pause
            }
            None => {
                let failed = Err(format!(
                    "cluster {CLUSTER} refused the call (is tollgate envoy --limits set?)"
                ));
                self.decide(h, &roles, reserve, failed, then, false)
            }
        }
    }

    /// The limits service answered the call before the request (or it failed).
    pub(super) fn on_gate_answer<H: Host>(&mut self, h: &mut H, token: u32, body_size: usize) {
        let Phase::Gate(gate) = std::mem::replace(&mut self.phase, Phase::Start) else {
            return;
        };
        if gate.token != token {
            self.phase = Phase::Gate(gate);
            return;
        }
        let body = h
            .callout_body(body_size.min(wire::MAX_ANSWER))
            .unwrap_or_default();
        let answer = wire::answer(
            &h.callout_headers(),
            &h.callout_trailers(),
            &body,
            gate.roles.len(),
        );
        let Gate {
            roles,
            reserve,
            then,
            ..
        } = *gate;
        if answer.is_ok() {
            self.fleet.pending = None;
        } else {
            release_pending(h, &self.gw, &mut self.fleet);
        }
        self.decide(h, &roles, reserve, answer, then, true);
    }

    /// Goes on or refuses, by the answer. `held`: the request waits (resume it to go on).
    fn decide<H: Host>(
        &mut self,
        h: &mut H,
        roles: &[Role],
        reserve: u64,
        answer: Result<Response, String>,
        then: Then,
        held: bool,
    ) -> super::Action {
        let verdict = match answer {
            Ok(r) => self.judge(h, roles, &r),
            Err(why) => self.failed(h, roles, &why),
        };
        match verdict {
            Err(refusal) => {
                self.quota.charge = None;
                super::reply::reply(h, self.front, &refusal);
                self.phase = Phase::Replied;
                super::Action::Pause
            }
            Ok(reserved) => {
                if let Some(c) = self.quota.charge.as_mut().filter(|_| reserved) {
                    c.reserved = reserve;
                }
                self.go(h, then, held)
            }
        }
    }

    /// An answer: the first refused descriptor (tokens, client, endpoint, then the quota)
    /// refuses the request; else Ok(whether the quota's reservation was taken).
    fn judge<H: Host>(&mut self, h: &mut H, roles: &[Role], r: &Response) -> Result<bool, Refusal> {
        let retry = r
            .header("retry-after")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1);
        let quiet = self.quota.charge.as_ref().is_none_or(|c| !c.headers);
        let over = |want: fn(&Role) -> bool| {
            roles
                .iter()
                .zip(&r.statuses)
                .find(|(role, code)| want(role) && **code == Code::OverLimit)
                .map(|(role, _)| *role)
        };
        let refused = over(|r| matches!(r, Role::Tokens(_)))
            .or_else(|| over(|r| matches!(r, Role::Client(_))))
            .or_else(|| over(|r| matches!(r, Role::Endpoint(_))))
            .or_else(|| over(|r| matches!(r, Role::Quota(_))));
        let quota_headers: Vec<(&'static str, String)> = ["x-quota-limit", "x-quota-remaining"]
            .into_iter()
            .filter_map(|k| r.header(k).map(|v| (k, v.to_string())))
            .collect();
        let Some(role) = refused else {
            if !quiet {
                self.fleet.headers = quota_headers;
            }
            return Ok(roles.iter().any(|r| matches!(r, Role::Quota(_))));
        };
        let refusal = match role {
            Role::Tokens(_) => rate_refusal(
                429,
                "tokens",
                "token rate limit exceeded for this client; retry later",
            ),
            Role::Client(_) => rate_refusal(
                429,
                "requests",
                "rate limit exceeded for this client; retry later",
            ),
            Role::Endpoint(_) => rate_refusal(
                503,
                "requests",
                "the endpoint's rate limit is exceeded; retry later",
            ),
            Role::Quota(k) => {
                let limit = self
                    .quota
                    .charge
                    .as_ref()
                    .and_then(|c| c.limits.get(k).cloned());
                let (amount, unit) = limit
                    .map_or((0.0, crate::support::calendar::Unit::Day), |l| {
                        (l.amount, l.unit)
                    });
                let e = crate::cost::QuotaError::Exceeded {
                    limit: amount,
                    unit,
                    retry_after: retry,
                };
                let mut refusal = self.quota.refused(h, &self.gw, &e, true);
                if !quiet {
                    refusal.headers.extend(quota_headers);
                }
                return Err(refusal.retry_after(retry));
            }
        };
        h.counter_add(governance::METRIC_RATE_LIMITED, 1);
        Err(refusal.retry_after(retry))
    }

    /// The call failed: every limit it carried must allow the request to go on.
    fn failed<H: Host>(&mut self, h: &mut H, roles: &[Role], why: &str) -> Result<bool, Refusal> {
        let allows = |role: &Role| match role {
            Role::Tokens(i) | Role::Client(i) | Role::Endpoint(i) => {
                self.fleet.rates.get(*i).is_some_and(|r| r.allow_on_failure)
            }
            Role::Quota(_) => self
                .quota
                .charge
                .as_ref()
                .is_some_and(|c| c.allow_on_failure),
        };
        let allowed = roles.iter().all(allows);
        let kind = if allowed { "allowed" } else { "refused" };
        h.log_warn(&format!(
            "tollgate: limits service call failed ({why}); {kind} by on_failure_allow"
        ));
        h.counter_add(
            &observe::name(observe::LIMITS_UNAVAILABLE, &[("kind", kind)]),
            1,
        );
        if allowed {
            return Ok(false);
        }
        let msg = "the gateway's rate limits and budgets are unavailable; retry later";
        Err(Refusal::custom(503, "server_error", "limits_unavailable", msg).retry_after(1))
    }

    /// Goes on: upstream (resumed when `held`), or the failover attempt.
    fn go<H: Host>(&mut self, h: &mut H, then: Then, held: bool) -> super::Action {
        match then {
            Then::Upstream(phase) => {
                self.phase = phase;
                if held {
                    h.resume_request();
                    return super::Action::Pause;
                }
                super::Action::Continue
            }
            Then::Attempt(p) => self.send_attempt(h, *p),
        }
    }
}

fn rate_refusal(status: u16, kind: &'static str, message: &str) -> Refusal {
    governance::rate_limited(status, kind, message, 1)
}

/// After the answer (or when nothing was sent: `used` 0): the quota charged `used`, or its
/// reservation settled to it (to the reservation's windows), and the clients' token balances
/// charged `tokens`: one `charge` operation, sent by the host's long-lived context.
pub fn settle<H: Host>(
    h: &mut H,
    gw: &Gateway,
    fleet: &mut Fleet,
    charge: Option<&Charge>,
    used: Option<u64>,
    tokens: u64,
) {
    let mut descriptors = Vec::new();
    let mut at = None;
    if let (Some(c), Some(used)) = (charge, used) {
        let (hits, negative) = match used.checked_sub(c.reserved) {
            Some(more) => (more, false),
            None => (c.reserved - used, true),
        };
        if c.reserved > 0 {
            at = Some(fleet.at);
        }
        if hits > 0 {
            for (_, target) in quota_targets(Some(c)) {
                descriptors.push(Descriptor {
                    entries: target.entries(),
                    hits,
                    negative,
                });
            }
        }
    }
    if tokens > 0 {
        for r in fleet.rates.iter().filter(|r| r.tokens) {
            let target = Target::RateLimit {
                scope: r.scope.clone(),
                bucket: Bucket::Tokens(r.client.clone()),
            };
            descriptors.push(Descriptor {
                entries: target.entries(),
                hits: tokens,
                negative: false,
            });
        }
    }
    if descriptors.is_empty() {
        return;
    }
    let req = Request {
        descriptors,
        op: Op::Charge,
        id: format!("{}:charge", fleet.id(h)),
        at,
    };
    send(h, gw, &req);
}

/// The call before the request never had its answer (it timed out, its answer was lost or
/// unreadable, the client went away meanwhile), yet its reserve may have been applied, or
/// may still be: a `release` with the reserve's id and descriptors gives back whatever that
/// reserve took and makes it take nothing if it lands later. The request then goes on (or
/// not) as if nothing was reserved: its charge after the answer is its whole usage.
pub(super) fn release_pending<H: Host>(h: &mut H, gw: &Gateway, fleet: &mut Fleet) {
    if let Some(mut req) = fleet.pending.take() {
        req.op = Op::Release;
        send(h, gw, &req);
    }
}

/// Sends an operation through the host's long-lived context (retried until delivered).
fn send<H: Host>(h: &mut H, gw: &Gateway, req: &Request) {
    let timeout_ms = gw.fleet.timeout_ms;
    h.send_detached(Detached {
        cluster: CLUSTER.to_string(),
        headers: req.headers(AUTHORITY, timeout_ms),
        body: req.body(),
        timeout_ms,
    });
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
