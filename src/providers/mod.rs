//! Unified LLM interface: one canonical model ([`model`]) and one module per wire format.
//!
//! Contract between the filter and the provider modules (all pure functions, no host calls):
//! - front doors parse client bodies into a [`model::ChatRequest`] and encode canonical
//!   responses and [`model::StreamEvent`]s back (`openai` for `/v1/chat/completions`,
//!   `anthropic` for `/v1/messages`);
//! - [`encode_request`] turns a canonical request into the provider's path, body and headers;
//! - [`decode_response`] turns a provider's non-streaming answer into a canonical response or
//!   a [`model::ProviderError`];
//! - [`stream_decoder`] gives a [`StreamDecoder`] that turns the provider's stream bytes, fed
//!   in arbitrary chunks, into canonical events as they arrive.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod eventstream;
pub mod gemini;
mod json;
pub mod model;
pub mod openai;
pub mod sigv4;
pub(crate) mod util;

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
