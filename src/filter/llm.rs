//! One LLM call through an `ai/llm` endpoint: parse the client's request (OpenAI or
//! Anthropic API), pick the backend by model, translate to the provider's API; then
//! translate the answer back, buffered for JSON answers and event by event for streams.

use super::account::Account;
use super::errors::{reply_error, ErrorKind, GatewayError, ENVOY_REPLY, ERROR_HEADER};
use crate::config::{Api, Endpoint, LlmBackend, Provider};
use crate::host::Host;
use crate::providers::model::{text_len, ChatRequest, Part, ProviderError, StreamEvent};
use crate::providers::{self, FrontDoor, FrontEncoder, StreamDecoder, Target, Wire};
use crate::security::guard::CallModel;
use serde_json::Value;

use super::Action;

/// Where the response is in its translation.
enum Response {
    /// Headers not seen yet.
    Pending,
    /// The gateway answered itself (an error reply): Envoy runs that local reply through
    /// the response callbacks too, and it is already in the client's shape.
    Local,
    /// A JSON answer (or an error): buffered whole, translated at the end. `envoy`: the
    /// answer is Envoy's own error reply (a timeout, its buffer limit), not the provider's.
    Buffered { status: u16, envoy: bool },
    /// A stream: each chunk is decoded and re-encoded as it arrives.
    Streaming {
        decoder: Box<dyn StreamDecoder>,
        encoder: FrontEncoder,
    },
}

/// State of one LLM call.
pub struct Call {
    front: FrontDoor,
    wire: Wire,
    stream: bool,
    include_usage: bool,
    /// The provider model id the request was sent with.
    model: String,
    response: Response,
    events: Vec<StreamEvent>,
    /// Usage and timing, for accounting.
    pub account: Account,
    /// The response is complete (translated to its end).
    pub done: bool,
    /// The response headers were held until the end (buffered answer).
    pub buffered: bool,
    /// The status the client gets (0 until the answer's headers or its end are seen).
    pub status: u16,
    /// Where tokens are charged, and response validation ([`crate::governance`]).
    pub governance: crate::governance::CallHooks,
    /// The backend chosen by governance routing (else the client's model chooses).
    pub forced_backend: Option<usize>,
    /// Prompt guard, PII masking, exfiltration guard ([`super::security`]).
    pub(super) security: super::security::CallSecurity,
}

impl Call {
    pub fn new(api: Api) -> Self {
        Self {
            front: match api {
                Api::OpenAiChat => FrontDoor::OpenAi,
                Api::AnthropicMessages => FrontDoor::Anthropic,
            },
            wire: Wire::OpenAi,
            stream: false,
            include_usage: false,
            model: String::new(),
            response: Response::Pending,
            events: Vec::new(),
            account: Account::default(),
            done: false,
            buffered: false,
            status: 0,
            governance: Default::default(),
            forced_backend: None,
            security: Default::default(),
        }
    }

    /// Whether the caller's roles may use the model backend `b` would send for
    /// `client_model` (`models_by_role`; true without a prompt guard).
    pub fn may_use(&self, ep: &Endpoint, b: usize, client_model: &str) -> bool {
        let Some(l) = ep.backends.get(b).and_then(|b| b.llm.as_ref()) else {
            return true;
        };
        let resolve = |name: &str| resolve_model(ep, name);
        self.security.may_use(&CallModel {
            requested: client_model,
            upstream: l.upstream_model(client_model),
            resolve: &resolve,
        })
    }

    /// Answers the client with an error in its API's shape.
    pub fn reply<H: Host>(
        &mut self,
        h: &mut H,
        kind: ErrorKind,
        message: &str,
        param: Option<&str>,
    ) {
        self.response = Response::Local;
        let e = GatewayError {
            param,
            ..GatewayError::new(kind, message)
        };
        reply_error(h, self.front, e, &[]);
    }

    /// The whole request body arrived: translate it and set the upstream request.
    /// Returns the chosen backend, or `None` after answering the client with an error.
    pub fn on_request<H: Host>(&mut self, h: &mut H, ep: &Endpoint, body: &[u8]) -> Option<usize> {
        // Failover translates the request once per backend: an earlier attempt's answer, or
        // its refusal (a local reply), must not decide how this attempt's answer is read.
        self.response = Response::Pending;
        self.done = false;
        self.buffered = false;
        let mut req = match self.front.parse(body) {
            Ok(r) => r,
            Err(e) => {
                self.reply(h, ErrorKind::InvalidRequest, &e.message, e.param.as_deref());
                return None;
            }
        };
        let Some(index) = self.forced_backend.or_else(|| ep.backend_for(&req.model)) else {
            let msg = format!(
                "the model \"{}\" does not exist or is not served by this endpoint; GET {} lists the models",
                req.model,
                ep.models_path().unwrap_or_else(|| "/v1/models".into())
            );
            self.reply(h, ErrorKind::ModelNotFound, &msg, Some("model"));
            return None;
        };
        let (b, l) = match ep
            .backends
            .get(index)
            .and_then(|b| b.llm.as_ref().map(|l| (b, l)))
        {
            Some(found) => found,
            None => {
                self.reply(
                    h,
                    ErrorKind::Internal,
                    "the backend is not an LLM backend",
                    None,
                );
                return None;
            }
        };
        // The client's headers the provider may get (`input_headers`); the translation
        // then sets what the provider's API needs.
        super::forward_only(h, &b.forward);
        crate::governance::decorate(&ep.governance, &mut req);
        apply_defaults(&mut req, l);
        self.wire = l.provider.wire();
        self.stream = req.stream;
        self.include_usage = req.include_usage;
        self.model = l.upstream_model(&req.model).to_string();
        // Role and model checks judge the model this provider receives (after model
        // routing, header conditions, weights, or on a failover attempt).
        let client_model = req.model.clone();
        let resolve = |name: &str| resolve_model(ep, name);
        let model = CallModel {
            requested: &client_model,
            upstream: &self.model,
            resolve: &resolve,
        };
        if let Err((kind, msg)) = self.security.on_request(&mut req, &model) {
            self.reply(h, kind, &msg, None);
            return None;
        }
        self.account.provider = l.provider.name();
        self.account.model = self.model.clone();
        self.account.start_ms = h.now_millis();
        // `n` choices of up to `max_tokens` each.
        let choices = u64::from(req.n.unwrap_or(1).max(1));
        self.account.max_tokens = req
            .max_tokens
            .or(l.defaults.max_tokens)
            .unwrap_or(0)
            .saturating_mul(choices);
        let host = b.authority();
        let target = Target {
            wire: self.wire,
            model: &self.model,
            api_version: l.api_version.as_deref(),
            defaults: &l.defaults,
            aws: l.aws.as_ref().map(|s| &s.0),
            host: &host,
            now_unix: h.now_unix(),
        };
        let encoded = match l.provider {
            Provider::Mistral => providers::openai::encode_mistral_request(&req, &target),
            _ => providers::encode_request(&req, &target),
        };
        let mut out = match encoded {
            Ok(o) => o,
            Err(e) => {
                let msg = format!("the request cannot be sent to {}: {e}", l.provider.name());
                self.reply(h, ErrorKind::InvalidRequest, &msg, None);
                return None;
            }
        };
        if !l.extra_payload.is_empty() {
            out.body = merge_payload(&out.body, l);
        }
        self.account.request_tokens = request_tokens(&req, out.body.len());
        // OpenAI-compatible services may live under a prefix (`/openai/v1/chat/completions`):
        // the backend's url_pattern is the path then. Other wires compute theirs (model in path).
        let path = match self.wire {
            Wire::OpenAi if b.url_pattern.as_str().ends_with("/chat/completions") => {
                b.url_pattern.as_str().to_string()
            }
            _ => out.path.clone(),
        };
        h.set_request_header(":path", Some(&path));
        h.set_request_header(":method", Some("POST"));
        h.set_request_header("content-type", Some("application/json"));
        h.set_request_header("content-length", Some(&out.body.len().to_string()));
        // The answer must be readable to be translated: no compression from the provider.
        h.set_request_header("accept-encoding", None);
        if let Some(key) = &l.credentials {
            let (name, value) = l.provider.auth_header(&key.0);
            h.set_request_header(name, Some(&value));
        }
        for (name, value) in &out.headers {
            h.set_request_header(name, Some(value));
        }
        h.set_request_body(&out.body);
        Some(index)
    }

    pub fn on_response_headers<H: Host>(&mut self, h: &mut H, end_of_stream: bool) -> Action {
        if matches!(self.response, Response::Local) {
            return Action::Continue;
        }
        let status: u16 = h
            .response_header(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(502);
        h.set_response_header("content-length", None);
        h.set_response_header("content-encoding", None);
        if self.stream && (200..300).contains(&status) && !end_of_stream {
            self.status = status;
            h.set_response_header("content-type", Some("text/event-stream"));
            h.set_response_header("cache-control", Some("no-cache"));
            self.response = Response::Streaming {
                decoder: providers::stream_decoder(self.wire),
                encoder: self
                    .front
                    .stream_encoder(&self.model, self.include_usage, h.now_unix()),
            };
            return Action::Continue;
        }
        // Envoy's own replies come already reshaped by the bootstrap's local_reply_config.
        let envoy = h.response_header(ERROR_HEADER).as_deref() == Some(ENVOY_REPLY);
        self.response = Response::Buffered { status, envoy };
        self.buffered = true;
        if end_of_stream {
            self.finish_buffered(h, &[]);
            return Action::Continue;
        }
        // Hold the headers: the status may change once the body is read (an unreadable
        // provider answer becomes a 502).
        Action::Pause
    }

    pub fn on_response_body<H: Host>(
        &mut self,
        h: &mut H,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        match &mut self.response {
            Response::Streaming { decoder, encoder } => {
                let chunk = h.response_body(size).unwrap_or_default();
                self.events.clear();
                decoder.feed(&chunk, &mut self.events);
                if end_of_stream {
                    decoder.finish(&mut self.events);
                }
                self.security.on_events(&mut self.events, end_of_stream);
                let mut out = Vec::with_capacity(chunk.len() + 64);
                // The clock only matters until the first token is seen (a hostcall per chunk).
                let now_ms = match self.account.first_token_ms {
                    None if !self.events.is_empty() => h.now_millis(),
                    _ => 0,
                };
                for ev in &self.events {
                    self.account.observe(ev, now_ms);
                    encoder.encode(ev, &mut out);
                }
                if end_of_stream {
                    encoder.finish(&mut out);
                    self.done = true;
                }
                let out = self.security.scrub_stream(out, end_of_stream);
                h.set_response_body(&out);
                Action::Continue
            }
            Response::Buffered { .. } if !end_of_stream => Action::Pause,
            Response::Buffered { .. } => {
                let body = h.response_body(size).unwrap_or_default();
                self.finish_buffered(h, &body);
                Action::Continue
            }
            Response::Pending | Response::Local => Action::Continue,
        }
    }

    /// Translates a whole provider answer (or error) into the client's API.
    fn finish_buffered<H: Host>(&mut self, h: &mut H, body: &[u8]) {
        let Response::Buffered { status, envoy } = self.response else {
            return;
        };
        // Envoy's reply is not in the provider's format: its text is the error message.
        let envoy_text = envoy.then(|| envoy_reply_text(body));
        let body = envoy_text.as_deref().unwrap_or(body);
        let (status, out) = match providers::decode_response(self.wire, status, body) {
            Ok(mut resp) => {
                self.account.usage = resp.usage;
                self.account.first_token_ms = Some(h.now_millis());
                self.account.completion_bytes = resp
                    .choices
                    .iter()
                    .map(|c| {
                        let calls = c.message.tool_calls.iter();
                        let refusal = c.refusal.as_ref().map_or(0, String::len);
                        calls
                            .map(|t| t.name.len().saturating_add(t.arguments.len()))
                            .fold(text_len(&c.message.content), usize::saturating_add)
                            .saturating_add(refusal)
                    })
                    .fold(0, usize::saturating_add);
                if resp.created == 0 {
                    resp.created = h.now_unix();
                }
                if resp.model.is_empty() {
                    resp.model = self.model.clone();
                }
                // security (exfiltration guard, placeholder restore), then governance
                // (structured output) on what the client would get.
                match self.security.on_response(&mut resp) {
                    Err(msg) => self.front.error(&blocked(msg)),
                    Ok(()) => match self.governance.check_response(&resp) {
                        Ok(()) => (200, self.front.encode_response(&resp, &self.model)),
                        Err(d) => self.front.gateway_error(
                            d.status as u16,
                            d.kind,
                            d.code,
                            &d.message,
                            None,
                        ),
                    },
                }
            }
            Err(mut e) => {
                if self.model.is_empty() {
                    // The body was never translated, so no provider saw the request: this is
                    // Envoy's own answer (413 over its buffer limit), not the provider's.
                    let text = String::from_utf8_lossy(body);
                    e.message = format!(
                        "the gateway rejected the request (HTTP {}): {}",
                        e.status,
                        text.trim()
                    );
                }
                self.front.error(&upstream_error(e))
            }
        };
        let out = self.security.scrub_answer(out);
        h.set_response_header(":status", Some(&status.to_string()));
        h.set_response_header("content-type", Some("application/json"));
        h.set_response_body(&out);
        self.status = status;
        self.done = true;
    }
}

/// The token estimate of a request as sent upstream: its translated body, with images
/// counted by number rather than by the size of their data.
fn request_tokens(req: &ChatRequest, body_bytes: usize) -> u64 {
    let (images, image_bytes) = req
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(Part::inline_data_len)
        .fold((0usize, 0usize), |(n, bytes), len| {
            (n.saturating_add(1), bytes.saturating_add(len))
        });
    crate::cost::estimate_request_tokens(body_bytes, images, image_bytes)
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

/// The text of an Envoy reply shaped by the bootstrap's `local_reply_config`
/// (`{"error": {"message": ...}}`); the body as it is when it is not that shape.
fn envoy_reply_text(body: &[u8]) -> Vec<u8> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .map(|m| m.as_bytes().to_vec())
        })
        .unwrap_or_else(|| body.to_vec())
}

/// An answer stopped by the exfiltration guard.
fn blocked(message: String) -> ProviderError {
    ProviderError {
        status: 502,
        kind: "server_error".into(),
        message,
        code: Some("response_blocked".into()),
    }
}

/// Provider errors keep their message; a provider answer with a 2xx status that could not
/// be read is the provider's failure (502).
fn upstream_error(mut e: ProviderError) -> ProviderError {
    if (200..300).contains(&e.status) {
        e.status = 502;
        e.kind = "server_error".into();
    }
    e
}

/// Backend `variables` fill what the client did not send (max_tokens, temperature and
/// top_p travel in `Target::defaults`).
fn apply_defaults(req: &mut ChatRequest, l: &LlmBackend) {
    if req.stop.is_empty() {
        req.stop = l.stop.clone();
    }
    if req.n.is_none() {
        req.n = l.n;
    }
    if req.seed.is_none() {
        req.seed = l.seed;
    }
}

/// Merges `variables.extra_payload` into the provider body (the client's fields win).
fn merge_payload(body: &[u8], l: &LlmBackend) -> Vec<u8> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    for (k, v) in &l.extra_payload {
        map.entry(k.clone()).or_insert_with(|| v.clone());
    }
    serde_json::to_vec(&Value::Object(map)).unwrap_or_else(|_| body.to_vec())
}
