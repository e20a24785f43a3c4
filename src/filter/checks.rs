//! CEL checks and policies in the pipeline ([`crate::security::policy`]): the request's data
//! captured once after authentication ([`Flow::request_checks`], also read by policy
//! routing), the request checks of the endpoint there and of a plain endpoint's chosen
//! backend ([`Flow::backend_checks`]), an
//! `ai/llm` backend's when it is prepared (`call.rs`), answer checks on an LLM call's whole
//! answer (`answer.rs`) and on a plain endpoint's answer, held whole for them ([`Held`]).

use super::{Action, Flow};
use crate::config::{Backend, Endpoint};
use crate::host::Host;
use crate::refusal::Refusal;
use crate::routing::data::{RequestData, ResponseData};
use crate::routing::Params;
use crate::security::policy::{Checks, Stage};
use crate::security::secrets::Mask;
use crate::support::encoding::form_decode;
use serde_json::Value;
use std::rc::Rc;

/// The request as KrakenD's expressions see it: the headers and query parameters the
/// endpoint's backend gets (`input_headers`, `input_query_strings`, the gateway's own), the
/// params, the token's claims, the time.
pub fn request_data<H: Host + ?Sized>(
    h: &H,
    ep: &Endpoint,
    params: &Params,
    query: Option<&str>,
    jwt: Option<Value>,
) -> RequestData {
    let headers = h
        .request_headers()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(':') && ep.forward.keeps(k));
    let query: Vec<(String, String)> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .filter(|(k, _)| ep.forward.query.allows(k))
        .collect();
    let ms = h.now_millis();
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let nanos = u32::try_from(ms % 1000)
        .unwrap_or(0)
        .saturating_mul(1_000_000);
    let now = crate::cel::now_text(secs, nanos).unwrap_or_default();
    let method = h.request_header(":method").unwrap_or_default();
    let full = h.request_header(":path").unwrap_or_default();
    let path = full.split('?').next().unwrap_or_default();
    let mut data = RequestData::new(&method, path, params, headers, query, now);
    data.jwt = jwt;
    data
}

impl Flow {
    /// After authentication, when the endpoint reads the request's data: captured once, then
    /// the request checks of the endpoint and, on a plain endpoint, of its backend.
    pub(super) fn request_checks<H: Host>(
        &mut self,
        h: &H,
        ep: &Endpoint,
        params: &Params,
        query: Option<&str>,
        jwt: Option<Value>,
    ) -> Result<(), Refusal> {
        if !ep.reads_request_data() {
            return Ok(());
        }
        let data = request_data(h, ep, params, query, jwt);
        ep.security.checks.run(Stage::Request, &data, None)?;
        self.data = Some(Rc::new(data));
        Ok(())
    }

    /// A plain endpoint's chosen backend: its request checks.
    pub(super) fn backend_checks(&self, ep: &Endpoint) -> Result<(), Refusal> {
        match (ep.backends.get(self.backend), self.data.as_deref()) {
            (Some(b), Some(data)) => b.checks.run(Stage::Request, data, None),
            _ => Ok(()),
        }
    }
}

/// The answer checks of an endpoint and of one of its backends, in that order.
pub fn answer_checks<'a>(ep: &'a Endpoint, b: Option<&'a Backend>) -> Vec<Rc<Checks>> {
    [Some(&ep.security.checks), b.map(|b| &b.checks)]
        .into_iter()
        .flatten()
        .filter(|c| c.has(Stage::Response))
        .cloned()
        .collect()
}

/// A plain endpoint's answer held whole until its end: its headers wait (their status may
/// change) while Envoy buffers the body.
pub struct Held {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Held {
    /// At the answer's headers: held when a check of the endpoint or its backend reads it,
    /// or the backend's answer template makes the client's answer from it.
    pub fn start<H: Host>(h: &H, ep: &Endpoint, b: Option<&Backend>) -> Option<Held> {
        if answer_checks(ep, b).is_empty() && b.is_none_or(|b| b.answer.is_none()) {
            return None;
        }
        Some(Held {
            status: h
                .response_header(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            headers: h
                .response_headers()
                .into_iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .collect(),
        })
    }

    /// The whole answer: checked (a refusal replaces it, in the endpoint's front door), and
    /// scrubbed of the gateway's secrets.
    pub fn finish<H: Host>(
        self,
        h: &mut H,
        ep: &Endpoint,
        b: Option<&Backend>,
        data: Option<&RequestData>,
        body: Vec<u8>,
    ) -> Action {
        let resp = ResponseData {
            status: self.status,
            headers: self
                .headers
                .into_iter()
                .map(|(k, v)| (crate::cel::canonical_header_key(&k), v))
                .collect(),
            body: serde_json::from_slice(&body).ok(),
            completed: true,
        };
        let empty = RequestData::default();
        let data = data.unwrap_or(&empty);
        let verdict = answer_checks(ep, b)
            .iter()
            .try_for_each(|c| c.run(Stage::Response, data, Some(&resp)));
        // The backend's answer template (KrakenD's response body generator), after the checks.
        let made = verdict.and_then(|()| match b.and_then(|b| b.answer.as_ref()) {
            Some(g) => g
                .render_answer(resp.status, &resp.headers, &body, data)
                .map(|out| Some((out, g.content_type.as_str()))),
            None => Ok(None),
        });
        let out = match made {
            Ok(None) => body,
            Ok(Some((out, content_type))) => {
                h.set_response_header("content-length", None);
                h.set_response_header("content-encoding", None);
                h.set_response_header("content-type", Some(content_type));
                h.set_response_body(&out);
                out
            }
            Err(r) => {
                let (status, headers, out) = super::reply::rendered(ep.front_door(), &r);
                h.set_response_header(":status", Some(&status.to_string()));
                h.set_response_header("content-length", None);
                h.set_response_header("content-encoding", None);
                for (k, v) in headers {
                    h.set_response_header(k, Some(&v));
                }
                h.set_response_body(&out);
                out
            }
        };
        if let Some(scrubbed) = ep.security.secrets.scrub(&out, Mask::SameLength) {
            h.set_response_body(&scrubbed);
        }
        Action::Continue
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "checks_tests.rs"]
mod tests;
