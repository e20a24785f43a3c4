//! One LLM call through an `ai/llm` endpoint, request side: the client's body is read once
//! into the canonical request ([`Call::read`]), and for the chosen backend the provider
//! request is computed as data ([`Call::prepare`]: no host call); `upstream` writes it (or a
//! failover sends it as a callout). The answer side is in `answer.rs`.

use super::account::Account;
use super::doors::{self, Doc, Door};
use crate::config::{Backend, Endpoint};
use crate::governance::{self, CallHooks};
use crate::providers::backend::{LlmBackend, Provider};
use crate::providers::krakend::StreamShape;
use crate::providers::model::anthropic_betas;
use crate::providers::model::{ChatRequest, StreamEvent};
use crate::providers::{count_tokens, embeddings, responses, tokens};
use crate::providers::{
    EndpointKind, FrontDoor, FrontEncoder, Outgoing, StreamDecoder, Target, Wire,
};
use crate::refusal::{ErrorKind, Refusal};
use crate::routing::data::RequestData;
use crate::security::call::CallSecurity;
use crate::security::guard::CallModel;
use crate::security::policy::{Checks, Stage};
use std::rc::Rc;

/// Where the answer is in its translation.
pub enum Response {
    /// Headers not seen yet.
    Pending,
    /// A JSON answer (or an error): buffered whole, translated at the end. `envoy`: the
    /// answer is Envoy's own error reply (a timeout, its buffer limit), not the provider's.
    Buffered { status: u16, envoy: bool },
    /// A stream: each chunk is decoded and re-encoded as it arrives.
    Streaming {
        decoder: Box<dyn StreamDecoder>,
        encoder: FrontEncoder,
    },
    /// Translated to its end; `held`: its headers were held until then (a buffered answer,
    /// whose headers can still take the usage headers).
    Done { held: bool },
}

/// The time, read only when needed (on the wasm host a read may be a hostcall).
pub trait Clock {
    fn now_ms(&self) -> u64;
    fn now_unix(&self) -> u64;
}

impl<H: crate::host::Host + ?Sized> Clock for H {
    fn now_ms(&self) -> u64 {
        self.now_millis()
    }
    fn now_unix(&self) -> u64 {
        crate::host::Host::now_unix(self)
    }
}

/// State of one LLM call.
pub struct Call {
    pub(super) front: FrontDoor,
    /// What the endpoint serves, and what the call is beyond a chat request.
    kind: EndpointKind,
    pub(super) door: Door,
    /// The client's request, parsed once; each attempt sends its own copy.
    request: ChatRequest,
    pub(super) wire: Wire,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    /// The provider model id the request was sent with.
    pub(super) model: String,
    pub(super) response: Response,
    pub(super) events: Vec<StreamEvent>,
    /// Usage and timing, for accounting.
    pub account: Account,
    /// The status the client gets (0 until the answer's headers or its end are seen).
    pub status: u16,
    /// Where tokens are charged, and response validation ([`crate::governance`]).
    pub governance: CallHooks,
    /// Prompt guard, PII masking, exfiltration guard ([`crate::security::call`]).
    pub security: CallSecurity,
    /// The request as CEL checks read it (when the endpoint has checks).
    pub data: Option<Rc<RequestData>>,
    /// The answer checks of the endpoint and of this attempt's backend.
    pub(super) answer_checks: Vec<Rc<Checks>>,
    /// The answer's headers, kept for answer checks (`resp_metadata_headers`).
    pub(super) answer_headers: Vec<(String, String)>,
    /// KrakenD's LLM streaming on this endpoint (`Endpoint::llm_stream`): the door of its errors.
    pub(super) llm_stream: Option<FrontDoor>,
    /// The request is in KrakenD's AI contract on a streaming endpoint: it streams.
    streams_contract: bool,
    /// The stream format of this attempt's backend, when [`Call::streams_contract`].
    pub(super) shape: Option<StreamShape>,
    /// A background Responses call answered `queued`: its response id (its charge is held).
    pub(super) pending: Option<String>,
}

impl Call {
    pub fn new(kind: EndpointKind, governance: CallHooks, security: CallSecurity) -> Self {
        Self {
            front: kind.front(),
            kind,
            door: Door::Chat,
            request: ChatRequest::default(),
            wire: Wire::OpenAi,
            stream: false,
            include_usage: false,
            model: String::new(),
            response: Response::Pending,
            events: Vec::new(),
            account: Account::default(),
            status: 0,
            governance,
            security,
            data: None,
            answer_checks: Vec::new(),
            answer_headers: Vec::new(),
            llm_stream: None,
            streams_contract: false,
            shape: None,
            pending: None,
        }
    }

    /// A background call still running: its response id, and its usage is the reservation
    /// (the request and `max_tokens`) until a retrieve reports the real one.
    pub fn take_pending(&mut self) -> Option<String> {
        let id = self.pending.take()?;
        self.account.usage = Some(self.account.reservation());
        Some(id)
    }

    /// Whether answer checks read this call's answer (its headers are then kept).
    pub fn checks_answer(&self) -> bool {
        !self.answer_checks.is_empty()
    }

    /// The answer is translated to its end.
    pub fn done(&self) -> bool {
        matches!(self.response, Response::Done { .. })
    }

    /// The answer is complete and its headers were held until then (they can still change).
    pub fn held(&self) -> bool {
        matches!(self.response, Response::Done { held: true })
    }

    /// The client's model.
    pub fn client_model(&self) -> &str {
        &self.request.model
    }

    /// Whether the client asked for a stream.
    pub fn client_streams(&self) -> bool {
        self.request.stream
    }

    /// The whole request body, read once: governance (size, schema, template) and the front
    /// door parse the same JSON document. A template renders a new body, parsed once more.
    /// The document also chooses the door that reads it ([`FrontDoor::for_body`]: KrakenD's
    /// contract or the endpoint's chat API); [`Call::front`] is that door after this, also
    /// when the body is refused.
    pub fn read(
        &mut self,
        policy: &governance::Policy,
        state: &governance::State,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let parsed = match governance::read_body(policy, state, body)? {
            governance::Body::Unread => doors::read(self.kind, Doc::Bytes(body), &mut self.front),
            governance::Body::Parsed(doc) => {
                doors::read(self.kind, Doc::Value(doc), &mut self.front)
            }
            governance::Body::Rendered(rendered) => {
                doors::read(self.kind, Doc::Bytes(&rendered), &mut self.front)
            }
        };
        // KrakenD's LLM streaming: the endpoint streams a request in its AI contract (the
        // client's fields never decide), and answers in the stream format's error shape.
        if let (FrontDoor::KrakenD, Some(door)) = (self.front, self.llm_stream) {
            self.front = door;
            self.streams_contract = true;
        }
        (self.request, self.door) = parsed
            .map_err(|e| Refusal::new(ErrorKind::InvalidRequest, e.message).param(e.param))?;
        if self.streams_contract {
            self.request.stream = true;
            self.request.include_usage = true;
        }
        Ok(())
    }

    /// The client's API, as read from its body.
    pub fn front(&self) -> FrontDoor {
        self.front
    }

    /// The client's `anthropic-beta` header (Anthropic's door): the features go to
    /// Anthropic-wire backends with the request, nowhere else.
    pub fn set_betas(&mut self, header: Option<String>) {
        if self.front == FrontDoor::Anthropic && !self.streams_contract {
            self.request.anthropic_beta =
                header.as_deref().map(anthropic_betas).unwrap_or_default();
        }
    }

    /// Token counting for a provider with no counting API: the gateway's estimate of the
    /// prompt as backend `index` would get it, as the client's answer (None: the provider
    /// counts).
    pub fn local_count(&self, ep: &Endpoint, index: usize, clock: &impl Clock) -> Option<Vec<u8>> {
        if !matches!(self.door, Door::CountTokens) {
            return None;
        }
        let (b, l) = llm_backend(ep, index)?;
        let model = l.upstream_model(&self.request.model);
        let host = b.authority();
        let target = target(l, model, &host, clock.now_unix());
        match count_tokens::encode_request(&self.request, &target) {
            Ok(None) => Some(count_tokens::encode_response(&count_tokens::estimate(
                &self.request,
                &target,
            ))),
            _ => None,
        }
    }

    /// Whether the caller's roles may use the model backend `b` would send for the client's
    /// model (`models_by_role`; true without a prompt guard).
    pub fn may_use(&self, ep: &Endpoint, b: usize) -> bool {
        let Some(l) = ep.backends.get(b).and_then(|b| b.llm.as_ref()) else {
            return true;
        };
        let client_model = self.request.model.as_str();
        let resolve = |name: &str| resolve_model(ep, name);
        self.security.may_use(&CallModel {
            requested: client_model,
            upstream: l.upstream_model(client_model),
            resolve: &resolve,
        })
    }

    /// The backend the client's model chooses (404 naming the model when none serves it).
    pub fn model_backend(&self, ep: &Endpoint) -> Result<usize, Refusal> {
        ep.backend_for(&self.request.model).ok_or_else(|| {
            if self.request.model.is_empty() {
                // KrakenD's contract names no model: configuration chooses the backend.
                let msg = "the request names no model (KrakenD's AI contract) and no backend of this endpoint is chosen for it: mark one ai/llm backend \"default\": true, or route with backend/conditional";
                return Refusal::new(ErrorKind::ModelNotFound, msg);
            }
            let msg = format!(
                "the model \"{}\" does not exist or is not served by this endpoint; GET {} lists the models",
                self.request.model,
                ep.models_path().unwrap_or_else(|| "/v1/models".into())
            );
            Refusal::new(ErrorKind::ModelNotFound, msg).param(Some("model"))
        })
    }

    /// The provider request for backend `index`, computed from a copy of the parsed request
    /// (a failover attempt: others may follow). See [`Call::prepare_last`].
    pub fn prepare(
        &mut self,
        ep: &Endpoint,
        index: usize,
        clock: &impl Clock,
    ) -> Result<Outgoing, Refusal> {
        let req = self.request.clone();
        self.prepare_from(req, ep, index, clock)
    }

    /// The provider request for backend `index` when no other attempt follows: the parsed
    /// request itself is used up (no copy).
    pub fn prepare_last(
        &mut self,
        ep: &Endpoint,
        index: usize,
        clock: &impl Clock,
    ) -> Result<Outgoing, Refusal> {
        // The client's model stays (the Responses door names it in the answer).
        let req = std::mem::take(&mut self.request);
        self.request.model.clone_from(&req.model);
        self.prepare_from(req, ep, index, clock)
    }

    /// The endpoint's decorator, the backend's defaults, the security checks (judging the
    /// model this provider receives), the translation. No host call; the call's state (answer
    /// expected, accounting) is set for this attempt.
    fn prepare_from(
        &mut self,
        mut req: ChatRequest,
        ep: &Endpoint,
        index: usize,
        clock: &impl Clock,
    ) -> Result<Outgoing, Refusal> {
        // Failover prepares once per backend: an earlier attempt's answer must not decide
        // how this attempt's answer is read.
        self.response = Response::Pending;
        let Some((b, l)) = llm_backend(ep, index) else {
            let msg = "the backend is not an LLM backend";
            return Err(Refusal::new(ErrorKind::Internal, msg));
        };
        // security: the backend's request checks, and the answer checks this attempt runs.
        if let Some(data) = &self.data {
            b.checks.run(Stage::Request, data, None)?;
        }
        self.answer_checks = super::checks::answer_checks(ep, Some(b));
        if req.stream && self.checks_answer() {
            let msg = "this endpoint checks whole answers (security/policies resp, validation/cel on the answer): send \"stream\": false";
            return Err(Refusal::new(ErrorKind::InvalidRequest, msg).param(Some("stream")));
        }
        if let Door::Responses { extras, .. } = &self.door {
            // Stored state and hosted tools need OpenAI's Responses API: nothing goes to
            // another provider half-translated.
            if !doors::responses_upstream(l.provider.wire(), b.url_pattern.as_str()) {
                if let Some((param, msg)) = extras.needs_openai() {
                    let msg = format!("{msg} ({}, not sent the Responses API)", l.provider.name());
                    return Err(Refusal::new(ErrorKind::InvalidRequest, msg).param(Some(&param)));
                }
            }
        }
        if !matches!(self.door, Door::Embeddings { .. }) {
            // A decorator's prompts are for a model to read, not texts to embed.
            governance::decorate(&ep.governance, &mut req);
        }
        l.fill_defaults(&mut req);
        self.wire = l.provider.wire();
        let url = b.url_pattern.as_str();
        self.shape = self
            .streams_contract
            .then(|| StreamShape::of(l.format, self.wire, url));
        self.stream = req.stream;
        self.include_usage = req.include_usage;
        self.model = l.upstream_model(&req.model).to_string();
        if self.model.is_empty() {
            // KrakenD's contract names no model: the backend must.
            let msg = format!("the {} backend names no model: set its ai/llm variables.model (KrakenD's AI contract sends none)", l.provider.name());
            return Err(Refusal::new(ErrorKind::Internal, msg));
        }
        // Role and model checks judge the model this provider receives (after model
        // routing, header conditions, weights, or on a failover attempt).
        let client_model = req.model.clone();
        let resolve = |name: &str| resolve_model(ep, name);
        let model = CallModel {
            requested: &client_model,
            upstream: &self.model,
            resolve: &resolve,
        };
        self.security
            .on_request(&mut req, &model)
            .map_err(Refusal::from)?;
        let inspected = self.security.inspects();
        if let Some((param, msg)) = inspected.then(|| self.door.unread(&req)).flatten() {
            return Err(Refusal::new(ErrorKind::InvalidRequest, msg).param(Some(param)));
        }
        self.door
            .take_texts(&req, inspected)
            .map_err(|m| Refusal::new(ErrorKind::InvalidRequest, m).param(Some("input")))?;
        self.account.provider = l.provider.name();
        self.account.model = self.model.clone();
        self.account.start_ms = clock.now_ms();
        // `n` choices of up to `max_tokens` each.
        let choices = u64::from(req.n.unwrap_or(1).max(1));
        self.account.max_tokens = req
            .max_tokens
            .or(l.defaults.max_tokens)
            .unwrap_or(0)
            .saturating_mul(choices);
        let host = b.authority();
        let target = target(l, &self.model, &host, clock.now_unix());
        let out = outgoing(&mut self.door, &req, b, l, &target).map_err(|e| {
            let msg = format!("the request cannot be sent to {}: {e}", l.provider.name());
            Refusal::new(ErrorKind::InvalidRequest, msg)
        })?;
        self.account.request_tokens = match &self.door {
            Door::Embeddings { req, .. } => req.estimate_tokens(),
            _ => tokens::request_estimate(&req, out.body.len()),
        };
        Ok(out)
    }
}

/// The provider request of the call's door for backend `b`.
fn outgoing(
    door: &mut Door,
    req: &ChatRequest,
    b: &Backend,
    l: &LlmBackend,
    t: &Target,
) -> Result<Outgoing, crate::providers::TranslateError> {
    let url = b.url_pattern.as_str();
    match door {
            Door::Chat => l.request(req, t, url),
            Door::Responses {
                extras, upstream, ..
            } => {
                *upstream = doors::responses_upstream(t.wire, url);
                if !*upstream {
                    return l.request(req, t, url);
                }
                let body = responses::encode_upstream(req, extras, t.model, &l.defaults)?;
                let path = url.to_string();
                Ok(l.finish(Outgoing { path, body, headers: Vec::new() }))
            }
            Door::CountTokens => match count_tokens::encode_request(req, t)? {
                Some(out) => Ok(l.authorize(out)),
                None => Err(crate::providers::TranslateError(
                    "token counting: this provider has no counting API (the gateway estimates the count)".into(),
                )),
            },
            Door::Embeddings { req: e, .. } => {
                let mistral = l.provider == Provider::Mistral;
                embeddings::encode_request(e, t, mistral).map(|o| l.authorize(o))
            }
        }
}

/// Backend `index` of the endpoint, when it is an LLM backend.
fn llm_backend(ep: &Endpoint, index: usize) -> Option<(&Backend, &LlmBackend)> {
    ep.backends
        .get(index)
        .and_then(|b| b.llm.as_ref().map(|l| (b, l)))
}

/// Where and how backend `l` is called for `model`.
fn target<'a>(l: &'a LlmBackend, model: &'a str, host: &'a str, now_unix: u64) -> Target<'a> {
    Target {
        wire: l.provider.wire(),
        model,
        api_version: l.api_version.as_deref(),
        defaults: &l.defaults,
        aws: l.aws.as_ref().map(|s| &s.0),
        host,
        now_unix,
    }
}

/// The provider model a client name stands for on an endpoint: the model of the backend
/// that claims the name (alias or configured model).
fn resolve_model(ep: &Endpoint, name: &str) -> Option<String> {
    ep.backends
        .iter()
        .filter_map(|b| b.llm.as_ref())
        .find(|l| l.claims(name))
        .map(|l| l.upstream_model(name).to_string())
}
