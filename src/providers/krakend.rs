//! KrakenD's own AI client contract: the front door of a KrakenD `ai/llm` endpoint
//! (tests/krakend_corpus/AI_CONTRACT.md has the sources).
//!
//! Request: `{"instructions": "...", "contents": "..."}`: `contents` (required) is the user's
//! prompt, `instructions` (optional) a system prompt; both strings. The request names no
//! model (the backend's `variables.model`, or the model in its `url_pattern`, chooses) and no
//! stream (KrakenD 2.x `ai/llm` never streams). Other fields are ignored, as KrakenD's default
//! templates read only those two.
//!
//! Answer: `{"ai_gateway_response": [{"contents": ["<text>", ...]}], "usage": "<total tokens>"}`:
//! one element for the first choice (none: an empty list) whose `contents` are its text
//! parts, and the total token count as a string, as KrakenD's own output templates render
//! it (its clients read it with `parseInt`; `governance/quota` `weight_key: "usage"` parses it).
//!
//! Errors: KrakenD publishes no error body for `ai/llm` (its clients read the status and the
//! body as text); tollgate answers with the status KrakenD would and OpenAI's error object.
//!
//! Streaming (KrakenD 3.0, endpoint `output_encoding: "streaming"`): the request is the same,
//! the endpoint (never the client) decides that it streams, and the answer is a vendor's
//! stream format, not this contract: the one `ai/llm.format` names, else the backend vendor's
//! own ([`StreamShape`]).
//!
//! Which door reads a body ([`is_contract`]): on an `ai/llm` endpoint whose door is a chat
//! door (OpenAI Chat Completions, Anthropic Messages, and the endpoints whose path names no
//! API), a JSON object with `contents` and without `messages` is KrakenD's: every chat
//! request has `messages`, KrakenD's never does.

use serde::Serialize;
use serde_json::{Map, Value};

use super::backend::StreamFormat;
use super::json::{cerr, field, object, opt_str, type_name, ClientError};
use super::model::{ChatRequest, ChatResponse, Message, Part, Role};
use super::responses::{self, Echo, ResponsesExtras};
use super::{anthropic, openai, vendor_stream, FrontDoor, FrontEncoder, Wire};

/// The wire format of a KrakenD LLM stream (https://www.krakend.io/docs/enterprise/ai-gateway/llm-streaming/):
/// with `ai/llm.format`, "anthropic" is Anthropic's Messages stream and "openai" OpenAI's
/// Responses API events (KrakenD's OpenAI connector calls `/v1/responses`: that is OpenAI's
/// format from KrakenD's view), whatever the vendor. Without it, the vendor's own: OpenAI's
/// Responses events for a backend whose `url_pattern` is the Responses API, Chat Completions
/// chunks for the other OpenAI-wire ones (Mistral, `/v1/chat/completions`), Anthropic's
/// Messages stream, Gemini's SSE chunks, Bedrock's eventstream frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamShape {
    Chat,
    Responses,
    Anthropic,
    Gemini,
    Bedrock,
}

impl StreamShape {
    pub fn of(format: Option<StreamFormat>, wire: Wire, url_pattern: &str) -> Self {
        match (format, wire) {
            (Some(StreamFormat::Anthropic), _) | (None, Wire::Anthropic) => StreamShape::Anthropic,
            (Some(StreamFormat::OpenAi), _) => StreamShape::Responses,
            (None, Wire::Gemini) => StreamShape::Gemini,
            (None, Wire::Bedrock) => StreamShape::Bedrock,
            (None, Wire::OpenAi | Wire::Azure) if url_pattern.ends_with("/responses") => {
                StreamShape::Responses
            }
            (None, Wire::OpenAi | Wire::Azure) => StreamShape::Chat,
        }
    }

    /// The answer's `content-type`.
    pub fn content_type(self) -> &'static str {
        match self {
            StreamShape::Bedrock => "application/vnd.amazon.eventstream",
            _ => "text/event-stream",
        }
    }

    /// The door whose error object answers a refusal or a provider error before the stream's
    /// first byte: Anthropic's for its stream, OpenAI's for the others (KrakenD's door; Google's
    /// and Bedrock's errors carry the same `message`).
    pub fn error_door(self) -> FrontDoor {
        match self {
            StreamShape::Anthropic => FrontDoor::Anthropic,
            _ => FrontDoor::KrakenD,
        }
    }

    /// The encoder of the stream; `model`: the model the provider was sent (the request
    /// names none).
    pub fn encoder(self, model: &str, now_unix: u64) -> FrontEncoder {
        match self {
            StreamShape::Chat => {
                let mut e = openai::StreamEncoder::new(model, true);
                e.set_created(now_unix);
                FrontEncoder::OpenAi(e)
            }
            StreamShape::Responses => {
                let ext = ResponsesExtras::default();
                let e = responses::StreamEncoder::new(model, &ext, Echo::default(), now_unix);
                FrontEncoder::Responses(Box::new(e))
            }
            StreamShape::Anthropic => FrontEncoder::Anthropic(anthropic::StreamEncoder::new(model)),
            StreamShape::Gemini => FrontEncoder::Gemini(vendor_stream::GeminiEncoder::new(model)),
            StreamShape::Bedrock => FrontEncoder::Bedrock(vendor_stream::BedrockEncoder::new()),
        }
    }
}

/// Whether a client body speaks KrakenD's contract rather than a chat API.
pub fn is_contract(doc: &Value) -> bool {
    doc.as_object()
        .is_some_and(|o| !o.contains_key("messages") && o.contains_key("contents"))
}

/// Reads a KrakenD contract request already parsed as JSON.
pub fn parse_value(doc: Value) -> Result<ChatRequest, ClientError> {
    parse_object(&object(doc)?)
}

fn parse_object(obj: &Map<String, Value>) -> Result<ChatRequest, ClientError> {
    let contents = match field(obj, "contents") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            let got = type_name(other);
            return Err(cerr("contents", format!("expected a string, got {got}")));
        }
        None => return Err(cerr("contents", "missing required field")),
    };
    let mut messages = Vec::with_capacity(2);
    if let Some(instructions) = opt_str(obj, "instructions", "")? {
        messages.push(text_message(Role::System, instructions.to_string()));
    }
    messages.push(text_message(Role::User, contents));
    Ok(ChatRequest {
        messages,
        ..ChatRequest::default()
    })
}

fn text_message(role: Role, text: String) -> Message {
    Message {
        role,
        content: vec![Part::Text(text)],
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    }
}

#[derive(Serialize)]
struct Unified<'a> {
    ai_gateway_response: Vec<Output<'a>>,
    usage: String,
}

#[derive(Serialize)]
struct Output<'a> {
    contents: Vec<&'a str>,
}

/// Encodes a canonical response in KrakenD's unified shape.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let first = resp.choices.iter().min_by_key(|c| c.index);
    let ai_gateway_response = first
        .map(|c| {
            let mut contents: Vec<&str> = c
                .message
                .content
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            contents.extend(c.refusal.as_deref());
            Output { contents }
        })
        .into_iter()
        .collect();
    let total = resp.usage.map_or(0, |u| u.total());
    let out = Unified {
        ai_gateway_response,
        usage: total.to_string(),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::providers::model::{Choice, Usage};
    use serde_json::json;

    fn text(m: &Message) -> &str {
        match m.content.first() {
            Some(Part::Text(t)) => t,
            _ => panic!("no text"),
        }
    }

    #[test]
    fn krakend_request_shape() {
        // KrakenD's documented call (every vendor page) and its example clients' body.
        let req = parse_value(json!({"instructions": "Act as a 1000 dollar consultant",
            "contents": "Tell me a consultant joke"}))
        .unwrap();
        assert_eq!(req.messages.len(), 2);
        assert_eq!(req.messages[0].role, Role::System);
        assert_eq!(text(&req.messages[0]), "Act as a 1000 dollar consultant");
        assert_eq!(req.messages[1].role, Role::User);
        assert_eq!(text(&req.messages[1]), "Tell me a consultant joke");
        assert_eq!((req.model.as_str(), req.stream), ("", false));
        // instructions optional (null is absent); other fields ignored, as KrakenD's templates do.
        let req = parse_value(
            json!({"contents": "hi", "instructions": null, "stream": true,
            "model": "x", "temperature": 9}),
        )
        .unwrap();
        assert_eq!(req.messages.len(), 1);
        assert_eq!(
            (req.model.as_str(), req.stream, req.temperature),
            ("", false, None)
        );
        assert!(req.extra.is_empty());
    }

    #[test]
    fn krakend_request_errors() {
        let cases = [
            (
                json!({"instructions": "x"}),
                "contents: missing required field",
            ),
            (
                json!({"contents": null}),
                "contents: missing required field",
            ),
            (
                json!({"contents": ["a"]}),
                "contents: expected a string, got an array",
            ),
            (
                json!({"contents": "a", "instructions": 1}),
                "instructions: expected a string, got a number",
            ),
            (
                json!("contents"),
                "request body must be a JSON object, got a string",
            ),
        ];
        for (body, msg) in cases {
            assert_eq!(parse_value(body).unwrap_err().message, msg);
        }
    }

    #[test]
    fn which_door_reads_a_body() {
        assert!(is_contract(&json!({"contents": "a"})));
        assert!(is_contract(&json!({"contents": 1, "instructions": "a"})));
        // Chat requests always carry messages; a body with both is a chat request.
        assert!(!is_contract(&json!({"contents": "a", "messages": []})));
        assert!(!is_contract(&json!({"model": "m", "messages": []})));
        assert!(!is_contract(&json!({"instructions": "only"})));
        assert!(!is_contract(&json!(["contents"])));
    }

    fn choice(index: u32, parts: &[&str], refusal: Option<&str>) -> Choice {
        Choice {
            index,
            message: Message {
                role: Role::Assistant,
                content: parts.iter().map(|t| Part::Text(t.to_string())).collect(),
                tool_calls: Vec::new(),
                tool_call_id: None,
                name: None,
            },
            finish_reason: None,
            refusal: refusal.map(String::from),
        }
    }

    #[test]
    fn unified_answer() {
        let mut resp = ChatResponse {
            id: "id".into(),
            model: "m".into(),
            created: 1,
            choices: vec![
                choice(1, &["other"], None),
                choice(0, &["Hello", " world"], None),
            ],
            usage: Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 5,
                ..Usage::default()
            }),
        };
        let out: Value = serde_json::from_slice(&encode_response(&resp)).unwrap();
        assert_eq!(
            out,
            json!({"ai_gateway_response": [{"contents": ["Hello", " world"]}], "usage": "12"})
        );
        resp.choices = vec![choice(0, &[], Some("I can't help with that"))];
        resp.usage = None;
        let out: Value = serde_json::from_slice(&encode_response(&resp)).unwrap();
        assert_eq!(
            out,
            json!({"ai_gateway_response": [{"contents": ["I can't help with that"]}], "usage": "0"})
        );
        resp.choices.clear();
        let out: Value = serde_json::from_slice(&encode_response(&resp)).unwrap();
        assert_eq!(out, json!({"ai_gateway_response": [], "usage": "0"}));
    }
}
