//! The pipeline's side of budgets ([`crate::cost`]): who the caller is (the metrics tenant),
//! the quota pre-check on the request headers, the reservation an LLM call makes before any
//! provider is asked, and what a refusal counts.

use super::account::{tenant_label, Account};
use crate::config::{Endpoint, Gateway};
use crate::cost::{self, Charge, QuotaError, Report};
use crate::host::Host;
use crate::observe;
use crate::refusal::Refusal;
use crate::routing::Params;
use crate::support::addr::strip_port;

/// The budget a request is charged against, and the caller.
pub struct Quota {
    /// None: no quota applies (or a refusal dropped it).
    pub charge: Option<Charge>,
    /// The caller, for metrics (quota identity, else the `ai/usage` tenant header).
    pub tenant: String,
    /// A plain answer read for the weight its backend reports in a field (bounded).
    weigh_body: Option<Vec<u8>>,
}

/// The most of a plain answer read for its weight field (the answer itself passes whole).
const WEIGH_BODY_MAX: usize = 1 << 20;

impl Default for Quota {
    fn default() -> Self {
        Self {
            charge: None,
            tenant: String::from("none"),
            weigh_body: None,
        }
    }
}

impl Quota {
    /// The answer's headers: the weight its backend reports in a header is read; true when
    /// the weight is a field of its JSON body still to come (the call is recorded at its end,
    /// [`Self::weigh_chunk`]).
    pub fn weigh_headers<H: Host>(&mut self, h: &H, end_of_stream: bool) -> bool {
        let Some(c) = self.charge.as_mut() else {
            return false;
        };
        match &c.report {
            Some(Report::Header(name)) => {
                c.reported = h
                    .response_header(name)
                    .and_then(|v| Report::header_value(&v));
                false
            }
            Some(Report::Field(_)) if !end_of_stream => {
                self.weigh_body = Some(Vec::new());
                true
            }
            _ => false,
        }
    }

    /// A chunk of a plain answer whose backend reports the weight in a field: kept (at most
    /// [`WEIGH_BODY_MAX`]); at the end the field is read. True when the answer ended.
    pub fn weigh_chunk<H: Host>(&mut self, h: &H, size: usize, end: bool) -> bool {
        let Some(buf) = self.weigh_body.as_mut() else {
            return false;
        };
        if let Some(chunk) = h.response_body(size) {
            let room = WEIGH_BODY_MAX.saturating_sub(buf.len());
            buf.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        }
        if !end {
            return false;
        }
        let body = self.weigh_body.take().unwrap_or_default();
        if let Some(c) = self.charge.as_mut() {
            if let Some(Report::Field(f)) = &c.report {
                c.reported = Report::field_value(f, &body);
            }
        }
        true
    }

    /// Request headers: the caller, then the quota pre-check (400 when no tier matches, 429
    /// when a limit is spent).
    pub fn check<H: Host>(
        &mut self,
        h: &mut H,
        gw: &Gateway,
        ep: &Endpoint,
        params: &Params,
    ) -> Result<(), Refusal> {
        if let Some(th) = &gw.cost.usage.tenant_header {
            // Never a credential as a metrics label: the canonical identity (hashed).
            if let Some(t) = h.request_header(th).map(|t| cost::header_identity(th, &t)) {
                self.tenant = t;
            }
        }
        let Some(attach) = &ep.quota else {
            return Ok(());
        };
        let ip = h
            .property(&["source", "address"])
            .and_then(|b| String::from_utf8(b).ok())
            .map(|a| strip_port(&a).to_string());
        let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let resolved = cost::resolve(
            attach,
            &gw.cost.quotas,
            &|n| h.request_header(n),
            ip,
            &param,
        );
        let charge = match resolved {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.refused(h, gw, &e, attach.disable_quota_headers)),
        };
        if let Err(e) = charge.precheck(h, h.now_unix(), 0) {
            return Err(self.refused(h, gw, &e, !charge.headers));
        }
        self.tenant = charge.identity.clone();
        self.charge = Some(charge);
        Ok(())
    }

    /// Reserves what an LLM call may use on its budget (`reserve: true`), once per call: the
    /// request as sent and `max_tokens` of answer, weighed as the call will be. A call that
    /// does not fit is refused (and charged nothing).
    pub fn reserve<H: Host>(
        &mut self,
        h: &mut H,
        gw: &Gateway,
        account: &Account,
    ) -> Result<(), Refusal> {
        let Some(charge) = self
            .charge
            .as_mut()
            .filter(|c| c.reserve && c.reserved == 0)
        else {
            return Ok(());
        };
        let u = account.reservation();
        let amount = match charge.weight {
            cost::Weight::Requests => 0,
            _ => charge.weigh(&u, gw.cost.usage.cost_micros(&account.model, &u)),
        };
        let now = h.now_unix();
        match charge.precheck(h, now, amount) {
            Ok(_) => {
                charge.add(h, now, cost::signed(amount));
                charge.reserved = amount;
                Ok(())
            }
            Err(e) => {
                let quiet = !charge.headers;
                self.charge = None;
                Err(self.refused(h, gw, &e, quiet))
            }
        }
    }

    /// Gives a reservation back: nothing was used.
    pub fn release<H: Host>(&self, h: &mut H) {
        if let Some(c) = self.charge.as_ref().filter(|c| c.reserved > 0) {
            let now = h.now_unix();
            c.settle(h, now, 0);
        }
    }

    /// A quota refusal; a spent limit counts in `tollgate_quota_rejected_total`.
    fn refused<H: Host>(&self, h: &mut H, gw: &Gateway, e: &QuotaError, quiet: bool) -> Refusal {
        if let QuotaError::Exceeded { .. } = e {
            let tenant = tenant_label(h, gw, &self.tenant);
            let metric = observe::name(observe::QUOTA_REJECTED, &[("tenant", &tenant)]);
            h.counter_add(&metric, 1);
        }
        e.refusal(quiet)
    }
}
