//! Accounting of one call: what it used (reported by the provider, or estimated when a
//! stream was cut before usage arrived), what it cost, and where that is recorded —
//! the budget counters, Prometheus metrics, filter-state properties for access logs, and
//! (opt-in) usage response headers.

use crate::config::Gateway;
use crate::cost::{self, Charge};
use crate::host::Host;
use crate::observe::{self, name};
use crate::providers::model::{StreamEvent, Usage};

/// What is known about an LLM call as it goes.
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub provider: &'static str,
    pub model: String,
    pub start_ms: u64,
    pub first_token_ms: Option<u64>,
    /// The provider's last usage report.
    pub usage: Option<Usage>,
    /// Text sent as the prompt (for an estimate when no usage comes).
    pub prompt_bytes: usize,
    /// Text and tool-argument bytes streamed back so far.
    pub completion_bytes: usize,
}

impl Account {
    /// Follows a streamed event.
    pub fn observe(&mut self, ev: &StreamEvent, now_ms: u64) {
        match ev {
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Text { text, .. } | StreamEvent::Refusal { text, .. } => {
                self.output(text.len(), now_ms)
            }
            StreamEvent::ToolCallArgs { arguments, .. } => self.output(arguments.len(), now_ms),
            StreamEvent::ToolCallStart { name, .. } => self.output(name.len(), now_ms),
            _ => {}
        }
    }

    fn output(&mut self, bytes: usize, now_ms: u64) {
        self.completion_bytes += bytes;
        self.first_token_ms.get_or_insert(now_ms);
    }

    /// The usage to account: the provider's (with `false`), else an estimate (`true`).
    /// A report without completion tokens (a stream cut after `message_start`) keeps its
    /// prompt count and estimates the rest.
    pub fn final_usage(&self) -> (Usage, bool) {
        match self.usage {
            Some(u) if u.completion_tokens > 0 || self.completion_bytes == 0 => (u, false),
            Some(u) => (
                Usage {
                    completion_tokens: cost::estimate_tokens(self.completion_bytes),
                    ..u
                },
                true,
            ),
            None => (
                Usage {
                    prompt_tokens: cost::estimate_tokens(self.prompt_bytes),
                    completion_tokens: cost::estimate_tokens(self.completion_bytes),
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
    pub charge: Option<&'a Charge>,
    pub tenant: &'a str,
    pub status: u16,
    /// Response headers can still change (buffered answers, plain endpoints).
    pub headers_open: bool,
}

/// Records the call: budget, metrics, properties, headers.
pub fn record<H: Host>(h: &mut H, gw: &Gateway, o: Outcome<'_>) {
    let now = h.now_unix();
    let usage = o.account.map(Account::final_usage);
    let cost = match (o.account, usage) {
        (Some(a), Some((u, _))) => gw.cost.usage.cost_micros(&a.model, &u),
        _ => None,
    };
    if let Some(charge) = o.charge {
        let amount = match usage {
            Some((u, _)) => charge.weigh(&u, cost),
            // A plain endpoint: only request counts mean something.
            None => u64::from(charge.weight == cost::Weight::Requests),
        };
        let standings = charge.add(h, now, amount as i64 - charge.reserved as i64);
        if o.headers_open && charge.headers {
            if let Some((limit, remaining)) = cost::quota_headers(&standings, charge.weight) {
                h.set_response_header("x-quota-limit", Some(&limit));
                h.set_response_header("x-quota-remaining", Some(&remaining));
            }
        }
    }
    let (Some(a), Some((u, estimated))) = (o.account, usage) else {
        return;
    };
    // The provider/model/tenant labels are the same for every metric of the call:
    // sanitized and joined once (`observe::name` would redo it for each metric).
    let base = name("", &[("provider", a.provider), ("model", &a.model)]);
    let tenant = name("", &[("tenant", o.tenant)]);
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
    let status = o.status.to_string();
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
    if estimated {
        h.counter_add(&metric(observe::ESTIMATED, None), 1);
    }
    let currency = gw.cost.usage.currency.as_str();
    if let Some(c) = cost {
        h.counter_add(&metric(observe::COST, Some(("currency", currency))), c);
    }
    let now_ms = h.now_millis();
    let duration = format!("{}{base}", observe::DURATION);
    h.histogram_record(&duration, now_ms.saturating_sub(a.start_ms));
    if let Some(t) = a.first_token_ms {
        let ttft = format!("{}{base}", observe::TTFT);
        h.histogram_record(&ttft, t.saturating_sub(a.start_ms));
    }
    let cost_text = cost
        .map(|c| format!("{:.6}", c as f64 / 1e6))
        .unwrap_or_default();
    let props: [(&str, String); 10] = [
        ("tollgate_provider", a.provider.to_string()),
        ("tollgate_model", a.model.clone()),
        ("tollgate_tenant", o.tenant.to_string()),
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
        ("tollgate_cost", cost_text.clone()),
        ("tollgate_usage_estimated", estimated.to_string()),
    ];
    for (k, v) in &props {
        h.set_property(k, v.as_bytes());
    }
    if o.headers_open && gw.cost.usage.response_headers {
        h.set_response_header(
            "x-tollgate-prompt-tokens",
            Some(&u.prompt_tokens.to_string()),
        );
        h.set_response_header(
            "x-tollgate-completion-tokens",
            Some(&u.completion_tokens.to_string()),
        );
        h.set_response_header("x-tollgate-total-tokens", Some(&u.total().to_string()));
        if cost.is_some() {
            h.set_response_header("x-tollgate-cost", Some(&format!("{cost_text} {currency}")));
        }
        if estimated {
            h.set_response_header("x-tollgate-usage-estimated", Some("true"));
        }
    }
}
