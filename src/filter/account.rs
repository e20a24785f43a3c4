//! Accounting of one call: what it used (reported by the provider, or estimated when no
//! usage arrived: a stream cut short, a client that hung up), what it cost, and where that
//! is recorded — one [`UsageRecord`] feeds the budget counters, the client's token rate
//! limit, Prometheus metrics, filter-state properties for access logs, and (opt-in) usage
//! response headers.

use super::fleet::{self, Fleet};
use crate::config::Gateway;
use crate::cost::{self, Charge, Store};
use crate::governance::ratelimit::{self, TokenCharge};
use crate::host::Host;
use crate::observe::{self, name};
use crate::providers::model::{StreamEvent, Usage};
use crate::providers::tokens;

/// What is known about an LLM call as it goes.
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub provider: &'static str,
    pub model: String,
    pub start_ms: u64,
    pub first_token_ms: Option<u64>,
    /// The provider's last usage report.
    pub usage: Option<Usage>,
    /// Estimated tokens of the whole request as sent upstream (messages, system, tools,
    /// images, tool calls and every other field: [`tokens::estimate_request_tokens`]), for an
    /// estimate when no usage comes.
    pub request_tokens: u64,
    /// The most answer tokens the call may produce: `max_tokens` (the client's, else the
    /// backend default; 0 without either) for each of its `n` choices.
    pub max_tokens: u64,
    /// Text, tool-name and tool-argument bytes received so far.
    pub completion_bytes: usize,
    /// A stream's choice finished (usage reported after this is the final count).
    finished: bool,
    /// The last usage report came after the finish.
    usage_final: bool,
}

impl Account {
    /// Follows a streamed event.
    pub fn observe(&mut self, ev: &StreamEvent, now_ms: u64) {
        match ev {
            StreamEvent::Usage(u) => {
                self.usage = Some(*u);
                self.usage_final = self.finished;
            }
            StreamEvent::Finish { .. } => self.finished = true,
            StreamEvent::Text { text, .. } | StreamEvent::Refusal { text, .. } => {
                self.output(text.len(), now_ms)
            }
            StreamEvent::ToolCallArgs { arguments, .. } => self.output(arguments.len(), now_ms),
            StreamEvent::ToolCallStart { name, .. } => self.output(name.len(), now_ms),
            _ => {}
        }
    }

    fn output(&mut self, bytes: usize, now_ms: u64) {
        self.completion_bytes = self.completion_bytes.saturating_add(bytes);
        self.first_token_ms.get_or_insert(now_ms);
    }

    /// What a reservation holds for this call: the request as sent and `max_tokens` of
    /// answer.
    pub fn reservation(&self) -> Usage {
        Usage {
            prompt_tokens: self.request_tokens,
            completion_tokens: self.max_tokens,
            ..Usage::default()
        }
    }

    /// The usage to account, and whether it is estimated. The provider's report when the
    /// answer ended with one (or the report came after the finish: a stream cut just before
    /// its end). Otherwise an estimate: the whole request as sent (or the reported prompt) and
    /// what was received; a report's running count when it is more. `ended`: the answer
    /// arrived to its end. `reserved`: the call holds a reservation; when the answer did not
    /// end (a cut stream, a client that hung up) the provider may have produced up to
    /// `max_tokens` unseen, and the reservation's count stands.
    pub fn final_usage(&self, ended: bool, reserved: bool) -> (Usage, bool) {
        let received = tokens::estimate_tokens(self.completion_bytes);
        let bound = if reserved && !ended {
            self.max_tokens
        } else {
            0
        };
        match self.usage {
            Some(u) if (ended || self.usage_final) && u.completion_tokens > 0 => (u, false),
            Some(u) => {
                let completion = u.completion_tokens.max(received).max(bound);
                let estimated = completion != u.completion_tokens;
                (
                    Usage {
                        completion_tokens: completion,
                        ..u
                    },
                    estimated,
                )
            }
            None => (
                Usage {
                    prompt_tokens: self.request_tokens,
                    completion_tokens: received.max(bound),
                    ..Usage::default()
                },
                true,
            ),
        }
    }
}

/// Everything the end of a call records.
pub struct Outcome<'a> {
    pub account: Option<&'a Account>,
    /// The answer arrived to its end (see [`Account::final_usage`]).
    pub ended: bool,
    pub charge: Option<&'a Charge>,
    /// The client's token rate limit (`client_max_tokens`).
    pub tokens: Option<&'a TokenCharge>,
    pub tenant: &'a str,
    pub status: u16,
    /// The request's fleet limits (budget and token balances kept in Redis).
    pub fleet: &'a mut Fleet,
}

/// The one usage record of an LLM call: every consumer (budget, token rate limit, metrics,
/// access-log properties, usage headers) reads this, so none can disagree.
pub struct UsageRecord<'a> {
    pub account: &'a Account,
    pub usage: Usage,
    /// No final report from the provider: the usage is (partly) estimated.
    pub estimated: bool,
    /// Millionths of the `ai/usage` currency (None: the model has no price).
    pub cost: Option<u64>,
    pub tenant: &'a str,
    pub status: u16,
}

/// The model label: a model or alias the configuration names, else `other` (a
/// pass-through backend takes any name a client sends).
fn model_label<'a>(gw: &Gateway, model: &'a str) -> &'a str {
    let known = gw
        .endpoints
        .iter()
        .flat_map(|e| &e.backends)
        .filter_map(|b| b.llm.as_ref())
        .any(|l| l.claims(model));
    if known {
        model
    } else {
        observe::OTHER
    }
}

/// The tenant label (capped per Envoy, [`observe::tenant_label`]).
pub fn tenant_label<H: Host>(h: &mut H, gw: &Gateway, tenant: &str) -> String {
    let max = gw
        .cost
        .usage
        .max_tenant_labels
        .unwrap_or(observe::DEFAULT_TENANT_LABELS);
    observe::tenant_label(h, tenant, max)
}

/// Records the call — budget, token rate limit, metrics, properties — all from one usage
/// record. Returns the headers its answer carries when it still can (quota standing, usage).
pub fn record<H: Host>(h: &mut H, gw: &Gateway, o: Outcome<'_>) -> Vec<(&'static str, String)> {
    let reserved = o.charge.is_some_and(|c| c.reserved > 0);
    let rec = o.account.map(|a| {
        let (usage, estimated) = a.final_usage(o.ended, reserved);
        UsageRecord {
            account: a,
            usage,
            estimated,
            cost: gw.cost.usage.cost_micros(&a.model, &usage),
            tenant: o.tenant,
            status: o.status,
        }
    });
    let mut headers = Vec::new();
    let used = o.charge.map(|c| weigh(c, rec.as_ref()));
    let (local, in_redis) = match o.charge {
        Some(c) if c.store == Store::Local => (Some(c), None),
        other => (None, other),
    };
    if let (Some(charge), Some(used)) = (local, used) {
        headers.extend(settle(h, charge, used));
    }
    let tokens = rec.as_ref().map_or(0, |r| r.usage.total());
    // The budget and token balances kept in Redis: one charge to the limits service.
    fleet::settle(h, gw, o.fleet, in_redis, used, tokens);
    let Some(rec) = rec else {
        return headers;
    };
    ratelimit::charge_tokens(h, o.tokens, tokens);
    metrics(h, gw, &rec);
    properties(h, &rec);
    if gw.cost.usage.response_headers {
        headers.extend(usage_headers(&rec, &gw.cost.usage.currency));
    }
    headers
}

/// What the call weighs on its budget (a plain endpoint: one request, when requests are
/// counted).
fn weigh(charge: &Charge, rec: Option<&UsageRecord<'_>>) -> u64 {
    match rec {
        Some(r) => charge.weigh(&r.usage, r.cost),
        None => match charge.weight {
            cost::Weight::Requests => 1,
            cost::Weight::Reported => charge.reported.unwrap_or(0),
            _ => 0,
        },
    }
}

/// Charges the budget in this Envoy what the call used; returns the quota headers
/// (`x-quota-limit`, `x-quota-remaining`).
fn settle<H: Host>(h: &mut H, charge: &Charge, amount: u64) -> Vec<(&'static str, String)> {
    let now = h.now_unix();
    let standings = charge.settle(h, now, amount);
    match cost::quota_headers(&standings, charge.weight) {
        Some((limit, remaining)) if charge.headers => {
            vec![("x-quota-limit", limit), ("x-quota-remaining", remaining)]
        }
        _ => Vec::new(),
    }
}

/// Prometheus metrics: requests by status, tokens by kind, estimated usage, cost, duration
/// and time to first token.
fn metrics<H: Host>(h: &mut H, gw: &Gateway, rec: &UsageRecord<'_>) {
    let (a, u) = (rec.account, &rec.usage);
    // The provider/model/tenant labels are the same for every metric of the call:
    // sanitized and joined once (`observe::name` would redo it for each metric). Model and
    // tenant come from bounded sets (configured models; capped tenants).
    let base = name(
        "",
        &[
            ("provider", a.provider),
            ("model", model_label(gw, &a.model)),
        ],
    );
    let tenant = name("", &[("tenant", &tenant_label(h, gw, rec.tenant))]);
    let metric = |m: &str, extra: Option<(&str, &str)>| {
        let mut n = String::with_capacity(m.len() + base.len() + tenant.len() + 24);
        n.push_str(m);
        n.push_str(&base);
        n.push_str(&tenant);
        if let Some(extra) = extra {
            n.push_str(&name("", &[extra]));
        }
        n
    };
    let status = rec.status.to_string();
    h.counter_add(&metric(observe::REQUESTS, Some(("status", &status))), 1);
    for (kind, n) in [
        ("prompt", u.prompt_tokens),
        ("completion", u.completion_tokens),
        ("cached", u.cached_tokens),
        ("reasoning", u.reasoning_tokens),
        ("cache_write", u.cache_write_tokens),
    ] {
        // A zero add is no change (the wasm host skips it anyway): no name to build.
        if n > 0 {
            h.counter_add(&metric(observe::TOKENS, Some(("kind", kind))), n);
        }
    }
    if rec.estimated {
        h.counter_add(&metric(observe::ESTIMATED, None), 1);
    }
    let currency = gw.cost.usage.currency.as_str();
    if let Some(c) = rec.cost {
        h.counter_add(&metric(observe::COST, Some(("currency", currency))), c);
    }
    let now_ms = h.now_millis();
    let duration = format!("{}{base}", observe::DURATION);
    h.histogram_record(&duration, now_ms.saturating_sub(a.start_ms));
    if let Some(t) = a.first_token_ms {
        let ttft = format!("{}{base}", observe::TTFT);
        h.histogram_record(&ttft, t.saturating_sub(a.start_ms));
    }
}

/// The cost as written in properties and headers (`0.001250`).
fn cost_text(cost: Option<u64>) -> String {
    cost.map(|c| format!("{:.6}", c as f64 / 1e6))
        .unwrap_or_default()
}

/// Filter-state properties for access logs (`%FILTER_STATE(wasm.tollgate_*:PLAIN)%`).
fn properties<H: Host>(h: &mut H, rec: &UsageRecord<'_>) {
    let (a, u) = (rec.account, &rec.usage);
    let props: [(&str, String); 10] = [
        ("tollgate_provider", a.provider.to_string()),
        ("tollgate_model", a.model.clone()),
        ("tollgate_tenant", rec.tenant.to_string()),
        ("tollgate_prompt_tokens", u.prompt_tokens.to_string()),
        (
            "tollgate_completion_tokens",
            u.completion_tokens.to_string(),
        ),
        ("tollgate_total_tokens", u.total().to_string()),
        ("tollgate_cached_tokens", u.cached_tokens.to_string()),
        (
            "tollgate_cache_write_tokens",
            u.cache_write_tokens.to_string(),
        ),
        ("tollgate_cost", cost_text(rec.cost)),
        ("tollgate_usage_estimated", rec.estimated.to_string()),
    ];
    for (k, v) in &props {
        h.set_property(k, v.as_bytes());
    }
}

/// `x-tollgate-*` usage headers (`ai/usage.response_headers`).
fn usage_headers(rec: &UsageRecord<'_>, currency: &str) -> Vec<(&'static str, String)> {
    let u = &rec.usage;
    let mut out = vec![
        ("x-tollgate-prompt-tokens", u.prompt_tokens.to_string()),
        (
            "x-tollgate-completion-tokens",
            u.completion_tokens.to_string(),
        ),
        ("x-tollgate-total-tokens", u.total().to_string()),
    ];
    if rec.cost.is_some() {
        out.push((
            "x-tollgate-cost",
            format!("{} {currency}", cost_text(rec.cost)),
        ));
    }
    if rec.estimated {
        out.push(("x-tollgate-usage-estimated", "true".to_string()));
    }
    out
}

#[cfg(test)]
#[path = "account_tests.rs"]
mod tests;
