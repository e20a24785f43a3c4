//! The canonical chat model: the OpenAI Chat Completions shape, typed.
//!
//! Every front door (OpenAI chat completions, Anthropic Messages) parses into
//! [`ChatRequest`]; every provider module translates a [`ChatRequest`] into its
//! own wire format, and its responses back into [`ChatResponse`] (non-streaming)
//! or a sequence of [`StreamEvent`]s (streaming). Front doors then encode the
//! canonical response or events in the client's format.

use serde_json::{Map, Value};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One piece of message content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// An image by URL; `data:` URLs carry base64 inline data.
    Image {
        url: String,
        detail: Option<String>,
    },
}

/// A function call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text, exactly as OpenAI carries them.
    pub arguments: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    /// Assistant messages: the calls the model made.
    pub tool_calls: Vec<ToolCall>,
    /// Tool messages: the call this message answers.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// Bytes of text in parts (images count 0): a size for token estimates.
pub fn text_len<'a>(parts: impl IntoIterator<Item = &'a Part>) -> usize {
    parts
        .into_iter()
        .map(|p| match p {
            Part::Text(t) => t.len(),
            Part::Image { .. } => 0,
        })
        .sum()
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// How the model may use tools.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

/// The largest `max_tokens` accepted, from clients and in backend defaults: providers type
/// the field as a 32-bit signed integer (Gemini's `maxOutputTokens`, Bedrock's `maxTokens`),
/// and no model's output limit comes near it. Larger values are refused (400), so that
/// reservations and estimates built on it stay far from u64 limits.
pub const MAX_TOKENS: u64 = i32::MAX as u64;

/// A chat request in canonical form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The model as the client named it (before alias resolution).
    pub model: String,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// OpenAI `response_format` object, kept as sent.
    pub response_format: Option<Value>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// `max_tokens` or `max_completion_tokens`, whichever the client sent (at most
    /// [`MAX_TOKENS`]).
    pub max_tokens: Option<u64>,
    pub stop: Vec<String>,
    pub n: Option<u32>,
    pub seed: Option<i64>,
    pub user: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Fields the model does not type, passed through to OpenAI-compatible providers.
    pub extra: Map<String, Value>,
}

/// Why the model stopped, in OpenAI's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// Token usage as reported by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache (included in `prompt_tokens`).
    pub cached_tokens: u64,
    /// Reasoning tokens (included in `completion_tokens`).
    pub reasoning_tokens: u64,
    /// Prompt tokens written to the provider's cache (included in `prompt_tokens`; Anthropic
    /// `cache_creation_input_tokens`, Bedrock `cacheWriteInputTokens`), priced apart.
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Prompt + completion (saturating: the counts are the provider's).
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// One choice of a non-streaming response.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub index: u32,
    /// Role is always assistant; `content` holds text parts only.
    pub message: Message,
    pub finish_reason: Option<FinishReason>,
    /// The model declined (OpenAI `message.refusal`): its explanation, kept apart from the
    /// content so each front door can mark it as a refusal.
    pub refusal: Option<String>,
}

/// A non-streaming chat response in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    /// The model as the provider reported it.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
}

/// One event of a streamed response, provider-neutral.
///
/// A provider's stream decoder emits these as its SSE events arrive; a front
/// door's encoder turns each into client SSE bytes at once.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The response began; `id` and `model` as the provider reported them
    /// (decoders invent a stable id when the provider has none).
    Start { id: String, model: String },
    /// Text for choice `index`.
    Text { index: u32, text: String },
    /// Refusal text for choice `index` (OpenAI `delta.refusal`).
    Refusal { index: u32, text: String },
    /// A tool call began in choice `index`; `call` numbers calls within the choice.
    ToolCallStart {
        index: u32,
        call: u32,
        id: String,
        name: String,
    },
    /// A fragment of the JSON arguments of call `call`.
    ToolCallArgs {
        index: u32,
        call: u32,
        arguments: String,
    },
    /// Choice `index` finished.
    Finish { index: u32, reason: FinishReason },
    /// Usage so far; the last one seen is the final count.
    Usage(Usage),
    /// The provider reported an error inside the stream.
    Error(ProviderError),
}

/// An error reported by a provider, mapped to OpenAI's vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderError {
    /// HTTP status to answer the client with.
    pub status: u16,
    /// OpenAI error `type`, e.g. `invalid_request_error`, `rate_limit_error`, `server_error`.
    pub kind: String,
    /// The provider's own message.
    pub message: String,
    /// The provider's own code or type, e.g. `overloaded_error`.
    pub code: Option<String>,
}
