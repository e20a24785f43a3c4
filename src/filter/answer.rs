//! One LLM call, answer side: the provider's answer translated back into the client's API,
//! buffered for JSON answers and event by event for streams. [`Call::head`] and
//! [`Call::chunk`] are pure (the answer in, the client's bytes and header changes out): the
//! proxied path writes their result to the host, failover to the answer it sends.

use super::call::{Call, Clock, Response};
use super::doors::{Decoded, Door, BEDROCK_TOKENS_HEADER};
use crate::cel::canonical_header_key;
use crate::providers;
use crate::providers::model::{text_len, ChatResponse, EmbeddingResponse, ProviderError, Usage};
use crate::providers::{count_tokens, embeddings};
use crate::routing::data::{RequestData, ResponseData};
use crate::security::policy::Stage;
use serde_json::Value;

/// What the client's answer becomes after a translation step.
#[derive(Debug, Default)]
pub struct Out {
    /// Response headers to set (`None`: remove), in order.
    pub headers: Vec<(&'static str, Option<String>)>,
    /// The body (or this chunk of it) for the client; None: leave it as it is.
    pub body: Option<Vec<u8>>,
    /// Hold the answer's headers (a buffered answer waits for its end: its status may
    /// change once the body is read).
    pub hold: bool,
}

impl Call {
    /// The answer's headers: `status` (None: absent, a 502), whether it is Envoy's own reply
    /// (reshaped by the bootstrap's `local_reply_config`), and whether it has a body.
    pub fn head(&mut self, status: Option<u16>, envoy: bool, end: bool, clock: &impl Clock) -> Out {
        let status = status.unwrap_or(502);
        let mut out = Out {
            headers: vec![("content-length", None), ("content-encoding", None)],
            ..Out::default()
        };
        if self.stream && (200..300).contains(&status) && !end {
            self.status = status;
            let content_type = self.shape.map_or("text/event-stream", |s| s.content_type());
            out.headers
                .push(("content-type", Some(content_type.into())));
            out.headers.push(("cache-control", Some("no-cache".into())));
            // KrakenD's LLM streaming: the backend's stream format ([`Call::shape`]).
            let encoder = match self.shape {
                Some(shape) => shape.encoder(&self.model, clock.now_unix()),
                None => self.door.stream_encoder(
                    self.front,
                    &self.model,
                    self.client_model(),
                    self.include_usage,
                    clock.now_unix(),
                ),
            };
            self.response = Response::Streaming {
                decoder: self.door.stream_decoder(self.wire),
                encoder,
            };
            return out;
        }
        self.response = Response::Buffered { status, envoy };
        if end {
            let done = self.finish_buffered(&[], clock);
            out.headers.extend(done.headers);
            out.body = done.body;
            return out;
        }
        out.hold = true;
        out
    }

    /// A chunk of the answer (`end`: the last one).
    pub fn chunk(&mut self, chunk: &[u8], end: bool, clock: &impl Clock) -> Out {
        match &mut self.response {
            Response::Streaming { decoder, encoder } => {
                self.events.clear();
                decoder.feed(chunk, &mut self.events);
                if end {
                    decoder.finish(&mut self.events);
                }
                self.security.on_events(&mut self.events, end);
                let mut out = Vec::with_capacity(chunk.len() + 64);
                // The clock only matters until the first token is seen (a hostcall per chunk).
                let now_ms = match self.account.first_token_ms {
                    None if !self.events.is_empty() => clock.now_ms(),
                    _ => 0,
                };
                for ev in &self.events {
                    self.account.observe(ev, now_ms);
                    encoder.encode(ev, &mut out);
                }
                if end {
                    encoder.finish(&mut out);
                    self.response = Response::Done { held: false };
                }
                Out {
                    body: Some(self.security.scrub_stream(out, end)),
                    ..Out::default()
                }
            }
            Response::Buffered { .. } if !end => Out {
                hold: true,
                ..Out::default()
            },
            Response::Buffered { .. } => self.finish_buffered(chunk, clock),
            Response::Pending | Response::Done { .. } => Out::default(),
        }
    }

    /// Translates a whole provider answer (or error) into the client's API.
    fn finish_buffered(&mut self, body: &[u8], clock: &impl Clock) -> Out {
        let Response::Buffered { status, envoy } = self.response else {
            return Out::default();
        };
        // Envoy's reply is not in the provider's format: its text is the error message.
        let envoy_text = envoy.then(|| envoy_reply_text(body));
        let body = envoy_text.as_deref().unwrap_or(body);
        let mut content_type = "application/json".to_string();
        let decoded = self.door.decode(self.wire, &self.model, status, body);
        let (status, out) = match decoded {
            Ok(Decoded::Chat(resp)) => {
                let (status, out, ct) = self.answer(resp, clock);
                content_type = ct;
                (status, out)
            }
            Ok(Decoded::Count(c)) => (200, count_tokens::encode_response(&c)),
            Ok(Decoded::Embeddings(r)) => self.embedded(&r, clock),
            Ok(Decoded::Pending(v)) => self.pending(v),
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
        self.status = status;
        self.response = Response::Done { held: true };
        Out {
            headers: vec![
                (":status", Some(status.to_string())),
                ("content-type", Some(content_type)),
            ],
            body: Some(self.security.scrub_answer(out)),
            hold: false,
        }
    }

    /// A background call's first answer (`queued`, `in_progress`): the provider's object
    /// as sent, the model named as the client did and the client's own `instructions` (not
    /// what a decorator added); its id is kept for the hold of its charge
    /// ([`crate::cost::held`]).
    fn pending(&mut self, mut v: Value) -> (u16, Vec<u8>) {
        self.pending = v.get("id").and_then(Value::as_str).map(str::to_string);
        let model = Value::String(self.client_model().to_string());
        let instructions = match &self.door {
            Door::Responses { extras, .. } => extras.instructions.clone().map(Value::String),
            _ => None,
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("model".into(), model);
            o.insert("instructions".into(), instructions.unwrap_or(Value::Null));
        }
        (200, serde_json::to_vec(&v).unwrap_or_default())
    }

    /// A provider's whole answer for the client (status, body, content type): accounted,
    /// checked by security (exfiltration guard, placeholder restore), governance (structured
    /// output), then the answer checks on the answer as the client would get it.
    fn answer(&mut self, mut resp: ChatResponse, clock: &impl Clock) -> (u16, Vec<u8>, String) {
        self.account.usage = resp.usage;
        self.account.first_token_ms = Some(clock.now_ms());
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
            resp.created = clock.now_unix();
        }
        if resp.model.is_empty() {
            resp.model = self.model.clone();
        }
        let json = || "application/json".to_string();
        if let Err(msg) = self.security.on_response(&mut resp) {
            let (status, body) = self.front.error(&blocked(msg));
            return (status, body, json());
        }
        let body = match self.governance.check_response(&resp) {
            Ok(()) => {
                let client_model = self.client_model();
                self.door
                    .encode(self.front, &resp, &self.model, client_model)
            }
            Err(refusal) => {
                let (status, body) = refusal.render(self.front);
                return (status, body, json());
            }
        };
        match self.check_answer(&resp, &body) {
            Ok(()) => (200, body, json()),
            Err(r) => {
                let (status, body) = r.render(self.front);
                (status, body, r.content_type(self.front).to_string())
            }
        }
    }

    /// The answer checks over the answer in KrakenD's AI contract (`resp_data`), whatever
    /// door the client chose: the configuration's expressions are written against KrakenD's
    /// shape, and a client must not pick a shape where a field the policy tests is missing.
    /// `body`: the answer already encoded for the client.
    fn check_answer(
        &self,
        resp: &ChatResponse,
        body: &[u8],
    ) -> Result<(), crate::refusal::Refusal> {
        if self.answer_checks.is_empty() {
            return Ok(());
        }
        let krakend;
        let body = if self.front == providers::FrontDoor::KrakenD {
            body
        } else {
            krakend = providers::FrontDoor::KrakenD.encode_response(resp, &self.model);
            &krakend
        };
        let resp = ResponseData {
            status: 200,
            headers: self
                .answer_headers
                .iter()
                .map(|(k, v)| (canonical_header_key(k), v.clone()))
                .collect(),
            body: serde_json::from_slice(body).ok(),
            completed: true,
        };
        let empty = RequestData::default();
        let data = self.data.as_deref().unwrap_or(&empty);
        self.answer_checks
            .iter()
            .try_for_each(|c| c.run(Stage::Response, data, Some(&resp)))
    }

    /// An embeddings answer for the client: accounted (the provider's count, else the
    /// gateway's estimate of the inputs) in the format the client asked for.
    fn embedded(&mut self, r: &EmbeddingResponse, clock: &impl Clock) -> (u16, Vec<u8>) {
        let Door::Embeddings { req, .. } = &self.door else {
            return (500, Vec::new());
        };
        let tokens = r.prompt_tokens.unwrap_or_else(|| req.estimate_tokens());
        self.account.usage = Some(Usage {
            prompt_tokens: tokens,
            ..Usage::default()
        });
        self.account.first_token_ms = Some(clock.now_ms());
        let body = embeddings::encode_response(r, &req.model, req.encoding_format, tokens);
        (200, body)
    }

    /// The answer's headers some doors read a count from (Bedrock's embeddings count their
    /// input tokens in a header): the header's name, when this call wants it.
    pub fn usage_header(&self) -> Option<&'static str> {
        let bedrock = self.wire == crate::providers::Wire::Bedrock;
        (bedrock && matches!(self.door, Door::Embeddings { .. })).then_some(BEDROCK_TOKENS_HEADER)
    }

    /// The value of [`Call::usage_header`].
    pub fn set_usage_header(&mut self, value: Option<String>) {
        if let Door::Embeddings { header_tokens, .. } = &mut self.door {
            *header_tokens = value.and_then(|v| v.trim().parse().ok());
        }
    }
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
