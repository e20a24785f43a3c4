//! Unified LLM interface: one canonical model ([`model`]) and one module per wire format.
//!
//! Contract between the filter and the provider modules (all pure functions, no host calls):
//! - front doors parse client bodies into a [`model::ChatRequest`] and encode canonical
//!   responses and [`model::StreamEvent`]s back (`openai` for `/v1/chat/completions`,
//!   `anthropic` for `/v1/messages`, `responses` for `/v1/responses`, `krakend` for KrakenD's
//!   own AI contract), which endpoint serves which door by its path ([`EndpointKind`]);
//! - `embeddings` and `count_tokens` are their own small request/answer pairs for
//!   `/v1/embeddings` and `/v1/messages/count_tokens`;
//! - [`encode_request`] turns a canonical request into the provider's path, body and headers;
//! - [`decode_response`] turns a provider's non-streaming answer into a canonical response or
//!   a [`model::ProviderError`];
//! - [`stream_decoder`] gives a [`StreamDecoder`] that turns the provider's stream bytes, fed
//!   in arbitrary chunks, into canonical events as they arrive.

pub mod anthropic;
pub mod azure;
pub mod backend;
pub mod bedrock;
pub mod count_tokens;
pub mod embeddings;
pub mod eventstream;
pub mod gemini;
mod json;
pub mod krakend;
pub mod model;
pub mod openai;
pub mod responses;
pub mod sigv4;
pub mod tokens;
pub(crate) mod util;
pub mod vendor_stream;

pub use model::{ChatRequest, ChatResponse, ProviderError, StreamEvent};

/// The wire format a backend speaks. OpenAI-compatible services (Mistral, Groq, DeepSeek,
/// Together, Ollama, vLLM, ...) speak [`Wire::OpenAi`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
    Bedrock,
}

/// Default sampling variables a backend configures (KrakenD `ai/llm` `variables`).
/// A value the client sent wins over the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
}

/// Credentials that must be computed per request (the others are plain headers).
#[derive(Debug, Clone, PartialEq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub region: String,
}

/// Where and how to send one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Target<'a> {
    pub wire: Wire,
    /// The provider's model id (after alias resolution); for Azure, the deployment name.
    pub model: &'a str,
    /// Azure `api-version` query parameter.
    pub api_version: Option<&'a str>,
    pub defaults: &'a Defaults,
    /// Bedrock only: SigV4 signing inputs.
    pub aws: Option<&'a AwsCredentials>,
    /// Bedrock only: the `host` header value that is signed (e.g.
    /// `bedrock-runtime.us-east-1.amazonaws.com`).
    pub host: &'a str,
    /// Unix time in seconds, for request signing.
    pub now_unix: u64,
}

/// A request ready to go upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Path and query, e.g. `/v1/messages` or `/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse`.
    pub path: String,
    pub body: Vec<u8>,
    /// Provider headers to set (e.g. `anthropic-version`, SigV4 `authorization`).
    pub headers: Vec<(String, String)>,
}

/// The client's request cannot be expressed for this provider.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslateError(pub String);

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TranslateError {}

/// Decodes a provider's streamed answer, chunk by chunk, into canonical events.
pub trait StreamDecoder {
    /// Feeds bytes as they arrive; pushes every event completed by them.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>);
    /// The stream ended; pushes what remains (e.g. a final `Finish`).
    fn finish(&mut self, out: &mut Vec<StreamEvent>);
}

/// Translates a canonical request for the target's wire format.
pub fn encode_request(req: &ChatRequest, t: &Target) -> Result<Outgoing, TranslateError> {
    match t.wire {
        Wire::OpenAi => openai::encode_request(req, t),
        Wire::Azure => azure::encode_request(req, t),
        Wire::Anthropic => anthropic::encode_request(req, t),
        Wire::Gemini => gemini::encode_request(req, t),
        Wire::Bedrock => bedrock::encode_request(req, t),
    }
}

/// Decodes a provider's non-streaming answer (non-2xx → its error).
pub fn decode_response(
    wire: Wire,
    status: u16,
    body: &[u8],
) -> Result<ChatResponse, ProviderError> {
    match wire {
        Wire::OpenAi | Wire::Azure => openai::decode_response(status, body),
        Wire::Anthropic => anthropic::decode_response(status, body),
        Wire::Gemini => gemini::decode_response(status, body),
        Wire::Bedrock => bedrock::decode_response(status, body),
    }
}

/// Decodes a provider's error answer.
pub fn decode_error(wire: Wire, status: u16, body: &[u8]) -> ProviderError {
    match wire {
        Wire::OpenAi | Wire::Azure => openai::decode_error(status, body),
        Wire::Anthropic => anthropic::decode_error(status, body),
        Wire::Gemini => gemini::decode_error(status, body),
        Wire::Bedrock => bedrock::decode_error(status, body),
    }
}

/// A stream decoder for the wire format.
pub fn stream_decoder(wire: Wire) -> Box<dyn StreamDecoder> {
    match wire {
        Wire::OpenAi | Wire::Azure => Box::new(openai::stream_decoder()),
        Wire::Anthropic => Box::new(anthropic::stream_decoder()),
        Wire::Gemini => Box::new(gemini::stream_decoder()),
        Wire::Bedrock => Box::new(bedrock::stream_decoder()),
    }
}

/// What an `ai/llm` endpoint serves, from the end of its path (the way `/messages` already
/// picks the Anthropic door): `…/messages/count_tokens`, `…/messages`, `…/responses`,
/// `…/embeddings`, anything else Chat Completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    ChatCompletions,
    Messages,
    CountTokens,
    Responses,
    Embeddings,
}

impl EndpointKind {
    pub fn of(path: &str) -> Self {
        let path = path.trim_end_matches('/');
        if path.ends_with("/messages/count_tokens") {
            EndpointKind::CountTokens
        } else if path.ends_with("/messages") {
            EndpointKind::Messages
        } else if path.ends_with("/responses") {
            EndpointKind::Responses
        } else if path.ends_with("/embeddings") {
            EndpointKind::Embeddings
        } else {
            EndpointKind::ChatCompletions
        }
    }

    /// The client API whose error shape the endpoint answers in.
    pub fn front(self) -> FrontDoor {
        match self {
            EndpointKind::Messages | EndpointKind::CountTokens => FrontDoor::Anthropic,
            _ => FrontDoor::OpenAi,
        }
    }

    /// The path suffix that names the kind (what `GET …/models` replaces).
    pub fn suffix(self) -> &'static str {
        match self {
            EndpointKind::ChatCompletions => "/chat/completions",
            EndpointKind::Messages => "/messages",
            EndpointKind::CountTokens => "/messages/count_tokens",
            EndpointKind::Responses => "/responses",
            EndpointKind::Embeddings => "/embeddings",
        }
    }
}

/// The API a client speaks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoor {
    OpenAi,
    Anthropic,
    /// KrakenD's own AI contract (`{"instructions", "contents"}` in, `ai_gateway_response`
    /// out): chosen per request by [`FrontDoor::for_body`], never by the path.
    KrakenD,
}

/// Encodes canonical stream events in the client's format.
pub enum FrontEncoder {
    OpenAi(openai::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
    /// The Responses event sequence (the OpenAI door's errors, its own events).
    Responses(Box<responses::StreamEncoder>),
    /// Gemini's own stream (KrakenD's LLM streaming with no `format`).
    Gemini(vendor_stream::GeminiEncoder),
    /// Bedrock's own ConverseStream (KrakenD's LLM streaming with no `format`).
    Bedrock(vendor_stream::BedrockEncoder),
}

impl FrontEncoder {
    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match self {
            FrontEncoder::OpenAi(e) => e.encode(ev, out),
            FrontEncoder::Anthropic(e) => e.encode(ev, out),
            FrontEncoder::Responses(e) => e.encode(ev, out),
            FrontEncoder::Gemini(e) => e.encode(ev, out),
            FrontEncoder::Bedrock(e) => e.encode(ev, out),
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            FrontEncoder::OpenAi(e) => e.finish(out),
            FrontEncoder::Anthropic(e) => e.finish(out),
            FrontEncoder::Responses(e) => e.finish(out),
            FrontEncoder::Gemini(e) => e.finish(out),
            FrontEncoder::Bedrock(e) => e.finish(out),
        }
    }
}

impl FrontDoor {
    pub fn parse(self, body: &[u8]) -> Result<ChatRequest, openai::ClientError> {
        match self {
            FrontDoor::OpenAi => openai::parse_request(body),
            FrontDoor::Anthropic => anthropic::parse_request(body),
            FrontDoor::KrakenD => krakend::parse_value(json::parse_body(body)?.into()),
        }
    }

    /// Reads a client request already parsed as JSON (the same errors as [`FrontDoor::parse`]).
    pub fn parse_value(self, doc: serde_json::Value) -> Result<ChatRequest, openai::ClientError> {
        match self {
            FrontDoor::OpenAi => openai::parse_value(doc),
            FrontDoor::Anthropic => anthropic::parse_value(doc),
            FrontDoor::KrakenD => krakend::parse_value(doc),
        }
    }

    /// The door that reads this client body on an endpoint whose door is `self`: KrakenD's
    /// contract for a body with `contents` and no `messages` on a chat door (OpenAI's,
    /// Anthropic's), as KrakenD answers every `ai/llm` endpoint in its contract; else `self`
    /// (every chat request has `messages`, so their clients never change doors).
    pub fn for_body(self, doc: &serde_json::Value) -> FrontDoor {
        match self {
            FrontDoor::OpenAi | FrontDoor::Anthropic if krakend::is_contract(doc) => {
                FrontDoor::KrakenD
            }
            other => other,
        }
    }

    pub fn encode_response(self, resp: &ChatResponse, model: &str) -> Vec<u8> {
        match self {
            FrontDoor::OpenAi => openai::encode_response(resp, model),
            FrontDoor::Anthropic => anthropic::encode_response(resp, model),
            FrontDoor::KrakenD => krakend::encode_response(resp),
        }
    }

    /// KrakenD's contract streams only on a streaming endpoint, in the format
    /// [`krakend::StreamShape`] picks (the call uses that encoder, not this one); it shares
    /// OpenAI's encoder here only to keep this total.
    pub fn stream_encoder(self, model: &str, include_usage: bool, now_unix: u64) -> FrontEncoder {
        match self {
            FrontDoor::OpenAi | FrontDoor::KrakenD => {
                let mut e = openai::StreamEncoder::new(model, include_usage);
                e.set_created(now_unix);
                FrontEncoder::OpenAi(e)
            }
            FrontDoor::Anthropic => FrontEncoder::Anthropic(anthropic::StreamEncoder::new(model)),
        }
    }

    /// A provider error in the client's error shape, with the status to answer it with
    /// (Anthropic's clients get `overloaded_error` with 529, its SDK's `OverloadedError`;
    /// OpenAI's keep 503). KrakenD publishes no error body: its door answers OpenAI's.
    pub fn error(self, e: &ProviderError) -> (u16, Vec<u8>) {
        match self {
            // 529 is Anthropic's own status (any provider may send it): OpenAI's is 503.
            FrontDoor::OpenAi | FrontDoor::KrakenD if e.status == anthropic::OVERLOADED => {
                (503, openai::error_body(e))
            }
            FrontDoor::OpenAi | FrontDoor::KrakenD => (e.status, openai::error_body(e)),
            FrontDoor::Anthropic => anthropic::error_reply(e),
        }
    }
}

/// A target for unit tests: no credentials, a Bedrock host for signing, time 0.
#[cfg(test)]
pub(crate) fn test_target<'a>(wire: Wire, model: &'a str, defaults: &'a Defaults) -> Target<'a> {
    Target {
        wire,
        model,
        api_version: None,
        defaults,
        aws: None,
        host: "bedrock-runtime.us-east-1.amazonaws.com",
        now_unix: 0,
    }
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod agents_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_kinds_by_path_suffix() {
        for (path, kind) in [
            ("/v1/chat/completions", EndpointKind::ChatCompletions),
            ("/llm/openai", EndpointKind::ChatCompletions),
            ("/v1/messages", EndpointKind::Messages),
            ("/v1/messages/count_tokens", EndpointKind::CountTokens),
            (
                "/anthropic/v1/messages/count_tokens/",
                EndpointKind::CountTokens,
            ),
            ("/v1/responses", EndpointKind::Responses),
            ("/team/{t}/v1/embeddings", EndpointKind::Embeddings),
            ("/v1/responses/extra", EndpointKind::ChatCompletions),
        ] {
            assert_eq!(EndpointKind::of(path), kind, "{path}");
            assert!(
                kind == EndpointKind::ChatCompletions
                    || path.trim_end_matches('/').ends_with(kind.suffix())
            );
        }
        assert_eq!(EndpointKind::CountTokens.front(), FrontDoor::Anthropic);
        assert_eq!(EndpointKind::Responses.front(), FrontDoor::OpenAi);
    }
}
