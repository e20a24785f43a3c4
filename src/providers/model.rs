//! The canonical chat model: the OpenAI Chat Completions shape, typed, plus what agents send
//! that Chat Completions has no word for (reasoning blocks with their signatures, documents,
//! cache breakpoints, items only one API understands).
//!
//! Every front door (OpenAI chat completions, Anthropic Messages, OpenAI Responses) parses
//! into [`ChatRequest`]; every provider module translates a [`ChatRequest`] into its
//! own wire format, and its responses back into [`ChatResponse`] (non-streaming)
//! or a sequence of [`StreamEvent`]s (streaming). Front doors then encode the
//! canonical response or events in the client's format. Embeddings have their own small
//! canonical pair ([`EmbeddingRequest`], [`EmbeddingResponse`]).

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
    /// A document (PDF or plain text): Anthropic `document`, OpenAI `file`, Responses
    /// `input_file`, Gemini `inlineData`/`fileData`, Bedrock `document`.
    Document(Document),
    /// The model's reasoning (assistant messages and answers): Anthropic `thinking` /
    /// `redacted_thinking`, Bedrock `reasoningContent`, Gemini thought parts, Responses
    /// `reasoning` items. Only the provider family that wrote it can verify its signature, so
    /// it is sent back to that family and dropped for every other.
    Reasoning(Reasoning),
    /// A cache breakpoint: the prompt up to here may be cached (Anthropic `cache_control` on
    /// the block before it, Bedrock's `cachePoint` block; other providers cache on their own).
    CachePoint(CachePoint),
    /// An item of the client's API that has no canonical form (a Responses hosted-tool call,
    /// an `item_reference`): sent verbatim to a backend of that API, refused for any other.
    Native(Native),
}

impl Part {
    /// The text a provider reads as prompt text (text parts and plain-text documents): what
    /// guards, size limits and estimates look at. Reasoning is the model's own earlier output,
    /// signed as written: it is not prompt text to rewrite.
    pub fn prompt_text(&self) -> Option<&str> {
        match self {
            Part::Text(t) => Some(t),
            Part::Document(Document {
                source: DocSource::Text(t),
                ..
            }) => Some(t),
            _ => None,
        }
    }

    /// Bytes of inline binary data (images, base64 documents): counted by number, not by size,
    /// in token estimates.
    pub fn inline_data_len(&self) -> Option<usize> {
        match self {
            Part::Image { url, .. } => Some(url.len()),
            Part::Document(Document {
                source: DocSource::Data(url),
                ..
            }) => Some(url.len()),
            _ => None,
        }
    }
}

/// A document and where its bytes are.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub source: DocSource,
    /// Anthropic `title`; a file name stands in for it elsewhere.
    pub title: Option<String>,
    /// Anthropic `context`: text about the document that is not part of it.
    pub context: Option<String>,
    /// The client's file name (OpenAI `filename`, Bedrock `name`).
    pub filename: Option<String>,
    /// Anthropic `citations.enabled`.
    pub citations: bool,
}

/// Where a document's content is.
#[derive(Debug, Clone, PartialEq)]
pub enum DocSource {
    /// `data:<mime>;base64,<data>`.
    Data(String),
    /// An http(s) URL the provider fetches.
    Url(String),
    /// Plain text, inline.
    Text(String),
    /// A file uploaded to the provider (OpenAI `file_id`, Anthropic `file_id`): only that
    /// provider knows it.
    File(String),
}

/// The provider family whose signature a reasoning block carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Anthropic's API and Claude on Bedrock (the Anthropic wire family).
    Anthropic,
    Gemini,
    /// OpenAI's Responses API (`encrypted_content`).
    OpenAi,
    /// Reasoning text without a signature a provider could verify.
    Unknown,
}

impl Origin {
    fn tag(self) -> &'static str {
        match self {
            Origin::Anthropic => "anthropic",
            Origin::Gemini => "gemini",
            Origin::OpenAi => "openai",
            Origin::Unknown => "unknown",
        }
    }
}

/// Reasoning the model produced, with what proves it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reasoning {
    /// The reasoning text or its summary (empty for redacted reasoning).
    pub text: String,
    /// Anthropic `signature`, Gemini `thoughtSignature`, OpenAI `encrypted_content`; for
    /// redacted reasoning, Anthropic's `data`.
    pub signature: Option<String>,
    /// Anthropic `redacted_thinking` (Bedrock `redactedContent`): no text, `signature` holds
    /// the encrypted reasoning.
    pub redacted: bool,
    pub origin: Origin,
    /// The Responses API's reasoning item id.
    pub id: Option<String>,
}

/// Prefix of a signature the gateway tags with its origin when it hands it to a client of
/// another family, so that it can be told apart when the client sends it back.
const CARRIED: &str = "tollgate.";

impl Reasoning {
    /// Reasoning known by its signature only (what a stream's end or a redacted block tells).
    pub fn signed(signature: Option<String>, redacted: bool, origin: Origin) -> Self {
        Self {
            text: String::new(),
            signature,
            redacted,
            origin,
            id: None,
        }
    }

    /// The signature as a client of the `door` family carries it: its own family's as written,
    /// another family's tagged with its origin (`tollgate.gemini.<signature>`), also when it has
    /// none, so that the block is never taken for one of the door's own family when it comes
    /// back (Anthropic refuses a thinking block whose signature it did not write).
    pub fn carried_signature(&self, door: Origin) -> String {
        let sig = self.signature.as_deref().unwrap_or("");
        if self.origin == door {
            sig.to_string()
        } else {
            format!("{CARRIED}{}.{sig}", self.origin.tag())
        }
    }

    /// A signature a client of the `door` family sent back: its origin and the provider's own
    /// signature (see [`Reasoning::carried_signature`]).
    pub fn from_carried(signature: &str, door: Origin) -> (Origin, String) {
        if let Some(rest) = signature.strip_prefix(CARRIED) {
            for o in [Origin::Anthropic, Origin::Gemini, Origin::OpenAi] {
                if let Some(sig) = rest.strip_prefix(o.tag()).and_then(|r| r.strip_prefix('.')) {
                    return (o, sig.to_string());
                }
            }
            return (Origin::Unknown, String::new());
        }
        (door, signature.to_string())
    }
}

/// A cache breakpoint's lifetime (Anthropic `ttl`: `5m`, `1h`; none = the provider's default).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CachePoint {
    pub ttl: Option<String>,
}

/// The client API an untranslatable item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeApi {
    /// OpenAI Responses (input and output items).
    Responses,
}

/// An item kept verbatim for backends of its own API.
#[derive(Debug, Clone, PartialEq)]
pub struct Native {
    pub api: NativeApi,
    /// The item's type, for error messages (`web_search_call`).
    pub kind: String,
    /// Where the client sent it (`input[3]`), for error messages.
    pub path: String,
    pub value: Value,
}

/// Gemini's thought signature of a function call rides in the tool-call id the client gets
/// (`call_0__ts_<base64url>`): every client API sends tool-call ids back verbatim, and Gemini
/// refuses a later turn whose function calls lost their signatures. Other providers get the
/// plain id ([`split_call_id`]).
const SIG_SEPARATOR: &str = "__ts_";

/// A tool-call id carrying a Gemini thought signature (base64, written as base64url so the
/// id stays within `[A-Za-z0-9_-]`, the alphabet Anthropic's tool-use ids allow).
pub fn call_id_with_signature(id: &str, signature: &str) -> String {
    let mut out = String::with_capacity(id.len() + SIG_SEPARATOR.len() + signature.len());
    out.push_str(id);
    out.push_str(SIG_SEPARATOR);
    for c in signature.chars() {
        match c {
            '+' => out.push('-'),
            '/' => out.push('_'),
            '=' => {}
            c => out.push(c),
        }
    }
    out
}

/// The plain id and the Gemini thought signature (standard base64) a tool-call id carries.
pub fn split_call_id(id: &str) -> (&str, Option<String>) {
    let Some((plain, sig)) = id.split_once(SIG_SEPARATOR) else {
        return (id, None);
    };
    let mut out: String = sig
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while out.len() % 4 != 0 {
        out.push('=');
    }
    (plain, Some(out))
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

/// Bytes of text in parts (images count 0; reasoning text counts, it is output the model
/// wrote): a size for token estimates.
pub fn text_len<'a>(parts: impl IntoIterator<Item = &'a Part>) -> usize {
    parts
        .into_iter()
        .map(|p| match p {
            Part::Reasoning(r) => r.text.len(),
            p => p.prompt_text().map_or(0, str::len),
        })
        .sum()
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    /// A cache breakpoint after this tool (Anthropic `cache_control` on a tool; Bedrock a
    /// `cachePoint` after it).
    pub cache: Option<CachePoint>,
    /// OpenAI `strict` (Responses and Chat Completions function tools).
    pub strict: Option<bool>,
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

/// How much the model should reason before answering.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReasoningConfig {
    /// Anthropic `thinking.type`: `enabled`, `adaptive`, `disabled` (None: not said).
    pub mode: Option<String>,
    /// A token budget (Anthropic `budget_tokens`, Gemini `thinkingBudget`).
    pub budget_tokens: Option<u64>,
    /// An effort level (OpenAI `reasoning_effort` / `reasoning.effort`, Anthropic
    /// `output_config.effort`): `minimal`, `low`, `medium`, `high`, ...
    pub effort: Option<String>,
    /// OpenAI Responses `reasoning.summary` (`auto`, `concise`, `detailed`); Anthropic
    /// `thinking.display` (`summarized`, `omitted`).
    pub summary: Option<String>,
}

impl ReasoningConfig {
    /// A token budget for providers that take one: the client's budget as sent, else one
    /// derived from the effort and kept below `max_tokens` where known (Anthropic wants
    /// the budget under it).
    pub fn budget(&self, max_tokens: Option<u64>) -> Option<u64> {
        if let Some(b) = self.budget_tokens {
            return Some(b);
        }
        let b: u64 = match self.effort.as_deref()? {
            "minimal" | "none" => return None,
            "low" => 1024,
            "medium" => 4096,
            "high" => 16384,
            _ => 32768,
        };
        Some(match max_tokens {
            Some(m) if m > 1 && b >= m => m.saturating_sub(1),
            _ => b,
        })
    }

    /// Reasoning asked off (`disabled`, effort `none`).
    pub fn off(&self) -> bool {
        self.mode.as_deref() == Some("disabled") || self.effort.as_deref() == Some("none")
    }

    /// An effort level for providers that take one: the effort, else one derived from a budget.
    pub fn effort_level(&self) -> Option<&str> {
        if let Some(e) = self.effort.as_deref() {
            return Some(e);
        }
        let b = self.budget_tokens?;
        Some(match b {
            0..=2047 => "low",
            2048..=8191 => "medium",
            _ => "high",
        })
    }
}

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
    /// Thinking / reasoning settings (Anthropic `thinking`, OpenAI `reasoning_effort`,
    /// Responses `reasoning`).
    pub reasoning: Option<ReasoningConfig>,
    /// Top-level Anthropic fields the model does not type (`top_k`, `service_tier`,
    /// `context_management`, `container`, `mcp_servers`, `inference_geo`, `cache_control`,
    /// ...): passed to Anthropic's API as sent, dropped for every other provider.
    pub anthropic_extra: Map<String, Value>,
    /// The client's `anthropic-beta` features (the header's comma-separated values): sent to
    /// Anthropic as the header, to Claude on Bedrock as `anthropic_beta`, nowhere else.
    pub anthropic_beta: Vec<String>,
}

/// `anthropic-beta` values worth forwarding: OAuth betas are about the client's own login,
/// not the gateway's key, and stay behind.
pub fn anthropic_betas(header: &str) -> Vec<String> {
    header
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty() && !b.starts_with("oauth-"))
        .map(str::to_string)
        .collect()
}

impl ChatRequest {
    /// Every part of every message (for walks that do not care where a part is).
    pub fn parts(&self) -> impl Iterator<Item = &Part> {
        self.messages.iter().flat_map(|m| &m.content)
    }

    /// The first item that only a backend of its own client API can take (see
    /// [`Part::Native`]): encoders for other wires refuse the request naming it.
    pub fn first_native(&self) -> Option<&Native> {
        self.parts().find_map(|p| match p {
            Part::Native(n) => Some(n),
            _ => None,
        })
    }
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
    /// A reasoning block begins in choice `index`, with the provider's id for it (a Responses
    /// reasoning item id). Optional: a [`StreamEvent::Reasoning`] piece opens a block too.
    ReasoningStart { index: u32, id: Option<String> },
    /// Reasoning text for choice `index` (Anthropic `thinking_delta`, Gemini thought parts,
    /// Bedrock `reasoningContent.text`, Responses reasoning summary deltas). Consecutive pieces
    /// form one reasoning block until a [`StreamEvent::ReasoningEnd`].
    Reasoning { index: u32, text: String },
    /// The open reasoning block of choice `index` ends, with the provider's signature
    /// (Anthropic `signature_delta`, Bedrock `reasoningContent.signature`, Responses
    /// `encrypted_content`).
    ReasoningEnd {
        index: u32,
        signature: Option<String>,
        origin: Origin,
    },
    /// A whole redacted reasoning block (Anthropic `redacted_thinking`, Bedrock
    /// `redactedContent`): opaque data, no text.
    RedactedReasoning {
        index: u32,
        data: String,
        origin: Origin,
    },
    /// A whole output item only the client's own API understands (a Responses hosted-tool
    /// call), passed to clients of that API and dropped for others.
    Native(Native),
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

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

/// What to embed.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingInput {
    /// Texts (a single string is one text).
    Texts(Vec<String>),
    /// Token ids (OpenAI accepts arrays of token arrays); only OpenAI-compatible providers
    /// take them.
    Tokens(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Texts(t) => t.len(),
            EmbeddingInput::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How the client wants the vectors written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    #[default]
    Float,
    /// Base64 of little-endian float32 values (what the `openai` SDK asks for by default).
    Base64,
}

/// An embeddings request in canonical form (OpenAI's `/v1/embeddings` shape).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRequest {
    /// The model as the client named it.
    pub model: String,
    pub input: EmbeddingInput,
    /// Output dimensions (OpenAI `dimensions`, Gemini `outputDimensionality`, Titan
    /// `dimensions`, Cohere v4 `output_dimension`).
    pub dimensions: Option<u32>,
    pub encoding_format: EncodingFormat,
    pub user: Option<String>,
    /// What the vectors are for: `search_document`, `search_query`, `classification`,
    /// `clustering` (Cohere `input_type`, Gemini `taskType`); from the client's `input_type`.
    pub input_type: Option<String>,
    /// Other fields, passed through to OpenAI-compatible providers.
    pub extra: Map<String, Value>,
}

/// An embeddings answer in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingResponse {
    /// The model as the provider reported it (empty: the filter fills it in).
    pub model: String,
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens; `None` when the provider does not say (the gateway estimates them).
    pub prompt_tokens: Option<u64>,
}

/// A token count (Anthropic's `count_tokens` answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount {
    pub input_tokens: u64,
    /// The gateway estimated it: the provider offers no count.
    pub estimated: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gemini_signatures_ride_in_call_ids_and_come_back_intact() {
        // A real Gemini thought signature shape: standard base64 with `+`, `/` and padding.
        let sig = "CiQBcsjafD+8p2Zq/Y0TtW1kLq2x3TE7ggKPiJlyPHqt9Mtr//Z6xQ==";
        let id = call_id_with_signature("call_0", sig);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        assert_eq!(split_call_id(&id), ("call_0", Some(sig.to_string())));
        assert_eq!(split_call_id("toolu_01A"), ("toolu_01A", None));
        // Unpadded signatures come back unpadded-equivalent (padded to a multiple of four).
        let id = call_id_with_signature("c", "YWJj");
        assert_eq!(split_call_id(&id).1.as_deref(), Some("YWJj"));
    }

    #[test]
    fn foreign_signatures_are_tagged_for_the_client_and_recognised_back() {
        let r = Reasoning {
            text: "t".into(),
            signature: Some("EpkDCkYICxgC".into()),
            redacted: false,
            origin: Origin::Gemini,
            id: None,
        };
        let carried = r.carried_signature(Origin::Anthropic);
        assert_eq!(carried, "tollgate.gemini.EpkDCkYICxgC");
        assert_eq!(
            Reasoning::from_carried(&carried, Origin::Anthropic),
            (Origin::Gemini, "EpkDCkYICxgC".to_string())
        );
        // The family's own signature is untouched both ways.
        let own = Reasoning {
            origin: Origin::Anthropic,
            ..r.clone()
        };
        assert_eq!(own.carried_signature(Origin::Anthropic), "EpkDCkYICxgC");
        // Reasoning without a signature from another family is tagged all the same.
        let bare = Reasoning {
            signature: None,
            origin: Origin::Unknown,
            ..r.clone()
        };
        assert_eq!(
            Reasoning::from_carried(
                &bare.carried_signature(Origin::Anthropic),
                Origin::Anthropic
            )
            .0,
            Origin::Unknown
        );
        assert_eq!(
            Reasoning::from_carried("EpkDCkYICxgC", Origin::Anthropic).0,
            Origin::Anthropic
        );
        // A forged tag with an unknown family is nobody's signature.
        assert_eq!(
            Reasoning::from_carried("tollgate.mistral.x", Origin::Anthropic).0,
            Origin::Unknown
        );
    }

    #[test]
    fn beta_headers_keep_features_and_drop_oauth() {
        assert_eq!(
            anthropic_betas(
                " oauth-2025-04-20,interleaved-thinking-2025-05-14 ,, context-1m-2025-08-07"
            ),
            ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]
        );
        assert!(anthropic_betas("").is_empty());
    }

    #[test]
    fn reasoning_budgets_and_efforts_convert_both_ways() {
        let effort = |e: &str| ReasoningConfig {
            effort: Some(e.into()),
            ..Default::default()
        };
        assert_eq!(effort("low").budget(None), Some(1024));
        assert_eq!(effort("high").budget(Some(8000)), Some(7999));
        assert_eq!(effort("minimal").budget(None), None);
        let budget = ReasoningConfig {
            budget_tokens: Some(10_000),
            ..Default::default()
        };
        assert_eq!(budget.effort_level(), Some("high"));
        // The client's own budget goes as sent (the provider judges it), a derived one fits.
        assert_eq!(budget.budget(Some(2048)), Some(10_000));
        assert!(effort("none").off());
    }
}
