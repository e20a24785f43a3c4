//! A vendor's own stream format re-made from canonical events, for KrakenD 3.0's LLM
//! streaming without `ai/llm.format` ("KrakenD resolves it to whichever concrete wire format
//! the vendor ... require[s]": https://www.krakend.io/docs/enterprise/ai-gateway/llm-streaming/):
//! Gemini's `streamGenerateContent?alt=sse` chunks and Bedrock's ConverseStream
//! (`application/vnd.amazon.eventstream` frames). OpenAI's and Anthropic's own streams are
//! their front doors' encoders.
//!
//! The provider's stream is decoded (usage counted, the answer controls applied to the
//! events) and encoded again in the same vendor's format, so the client reads what the
//! vendor's SDK reads; each encoder only ever sees its own vendor's decoder's events (plus the
//! gateway's errors). Mid-stream errors are the vendor's: a Gemini `{"error": {...}}` chunk,
//! a Bedrock `exception` frame.

use super::eventstream::{encode_frame, HeaderValue};
use super::model::{FinishReason, ProviderError, StreamEvent, Usage};
use crate::stream::write_json_event;
use serde_json::{json, Value};

/// Gemini's `GenerateContentResponse` chunks as SSE `data:` lines.
#[derive(Debug)]
pub struct GeminiEncoder {
    model: String,
    id: String,
    /// A function call whose arguments are still arriving: (candidate, name, arguments).
    /// Gemini sends each call whole, so it is written when the next thing starts.
    call: Option<(u32, String, String)>,
    finishes: Vec<(u32, FinishReason)>,
    usage: Option<Usage>,
    ended: bool,
}

impl GeminiEncoder {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            id: String::new(),
            call: None,
            finishes: Vec::new(),
            usage: None,
            ended: false,
        }
    }

    fn chunk(&self, candidates: Vec<Value>, usage: Option<Value>, out: &mut Vec<u8>) {
        let mut v = json!({"candidates": candidates, "modelVersion": self.model});
        if !self.id.is_empty() {
            v["responseId"] = json!(self.id);
        }
        if let Some(u) = usage {
            v["usageMetadata"] = u;
        }
        write_json_event(out, None, &v);
    }

    fn parts(&self, index: u32, parts: Vec<Value>, out: &mut Vec<u8>) {
        let c = json!({"content": {"role": "model", "parts": parts}, "index": index});
        self.chunk(vec![c], None, out);
    }

    fn flush_call(&mut self, out: &mut Vec<u8>) {
        if let Some((index, name, args)) = self.call.take() {
            let args: Value = serde_json::from_str(&args).unwrap_or_else(|_| json!({}));
            let part = json!({"functionCall": {"name": name, "args": args}});
            self.parts(index, vec![part], out);
        }
    }

    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if !matches!(ev, StreamEvent::ToolCallArgs { .. } | StreamEvent::Usage(_)) {
            self.flush_call(out);
        }
        match ev {
            StreamEvent::Start { id, .. } => self.id.clone_from(id),
            StreamEvent::Text { index, text } | StreamEvent::Refusal { index, text } => {
                self.parts(*index, vec![json!({"text": text})], out);
            }
            StreamEvent::Reasoning { index, text } => {
                self.parts(*index, vec![json!({"text": text, "thought": true})], out);
            }
            StreamEvent::ToolCallStart { index, name, .. } => {
                self.call = Some((*index, name.clone(), String::new()));
            }
            StreamEvent::ToolCallArgs { arguments, .. } => {
                if let Some((_, _, args)) = &mut self.call {
                    args.push_str(arguments);
                }
            }
            StreamEvent::Finish { index, reason } => self.finishes.push((*index, *reason)),
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Error(e) => {
                self.ended = true;
                let err = json!({"error": {"code": e.status, "message": e.message, "status": google_status(e.status)}});
                write_json_event(out, None, &err);
            }
            _ => {}
        }
    }

    /// The last chunk: every candidate's `finishReason` and the usage.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.flush_call(out);
        self.ended = true;
        let candidates = self
            .finishes
            .iter()
            .map(|(index, reason)| {
                json!({"content": {"role": "model", "parts": []}, "finishReason": gemini_reason(*reason), "index": index})
            })
            .collect();
        let usage = self.usage.map(|u| {
            let answer = u.completion_tokens.saturating_sub(u.reasoning_tokens);
            json!({"promptTokenCount": u.prompt_tokens, "candidatesTokenCount": answer,
                   "thoughtsTokenCount": u.reasoning_tokens, "cachedContentTokenCount": u.cached_tokens,
                   "totalTokenCount": u.total()})
        });
        self.chunk(candidates, usage, out);
    }
}

fn gemini_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
    }
}

/// Google's status name for an HTTP status (its error objects carry both).
fn google_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// What the open Bedrock content block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Reasoning,
    Tool,
}

/// Bedrock's ConverseStream frames (`messageStart`, `contentBlockStart`/`Delta`/`Stop`,
/// `messageStop`, `metadata`). Bedrock answers one choice: every event is choice 0's.
#[derive(Debug, Default)]
pub struct BedrockEncoder {
    started: bool,
    open: Option<(u32, Block)>,
    next_block: u32,
    stop: Option<FinishReason>,
    usage: Option<Usage>,
    ended: bool,
}

impl BedrockEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn event(out: &mut Vec<u8>, kind: &str, payload: &Value) {
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let headers = [
            (":event-type", HeaderValue::String(kind.into())),
            (
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            (":message-type", HeaderValue::String("event".into())),
        ];
        out.extend(encode_frame(&headers, &body));
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            Self::event(out, "messageStart", &json!({"role": "assistant"}));
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((block, _)) = self.open.take() {
            Self::event(
                out,
                "contentBlockStop",
                &json!({"contentBlockIndex": block}),
            );
        }
    }

    /// The block index of an open block of `kind`, opening one (closing another) if needed.
    fn block(&mut self, kind: Block, out: &mut Vec<u8>) -> u32 {
        self.start(out);
        match self.open {
            Some((b, k)) if k == kind => b,
            _ => {
                self.close(out);
                let b = self.next_block;
                self.next_block = self.next_block.saturating_add(1);
                self.open = Some((b, kind));
                b
            }
        }
    }

    fn delta(out: &mut Vec<u8>, block: u32, delta: Value) {
        Self::event(
            out,
            "contentBlockDelta",
            &json!({"contentBlockIndex": block, "delta": delta}),
        );
    }

    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match ev {
            StreamEvent::Start { .. } => self.start(out),
            StreamEvent::Text { text, .. } | StreamEvent::Refusal { text, .. } => {
                let b = self.block(Block::Text, out);
                Self::delta(out, b, json!({"text": text}));
            }
            StreamEvent::Reasoning { text, .. } => {
                let b = self.block(Block::Reasoning, out);
                Self::delta(out, b, json!({"reasoningContent": {"text": text}}));
            }
            StreamEvent::ReasoningEnd {
                signature: Some(sig),
                ..
            } => {
                let b = self.block(Block::Reasoning, out);
                Self::delta(out, b, json!({"reasoningContent": {"signature": sig}}));
                self.close(out);
            }
            StreamEvent::RedactedReasoning { data, .. } => {
                self.close(out);
                let b = self.block(Block::Reasoning, out);
                Self::delta(
                    out,
                    b,
                    json!({"reasoningContent": {"redactedContent": data}}),
                );
                self.close(out);
            }
            StreamEvent::ToolCallStart { id, name, .. } => {
                self.start(out);
                self.close(out);
                let b = self.block(Block::Tool, out);
                let start = json!({"toolUse": {"toolUseId": id, "name": name}});
                let v = json!({"contentBlockIndex": b, "start": start});
                Self::event(out, "contentBlockStart", &v);
            }
            StreamEvent::ToolCallArgs { arguments, .. } => {
                if let Some((b, Block::Tool)) = self.open {
                    Self::delta(out, b, json!({"toolUse": {"input": arguments}}));
                }
            }
            StreamEvent::Finish { reason, .. } => {
                self.start(out);
                self.close(out);
                if self.stop.is_none() {
                    self.stop = Some(*reason);
                    let v = json!({"stopReason": bedrock_reason(*reason)});
                    Self::event(out, "messageStop", &v);
                }
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Error(e) => {
                self.ended = true;
                exception(out, e);
            }
            _ => {}
        }
    }

    /// The `metadata` frame with the usage (Bedrock's last).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        let Some(u) = self.usage else { return };
        let fresh = u
            .prompt_tokens
            .saturating_sub(u.cached_tokens)
            .saturating_sub(u.cache_write_tokens);
        let usage = json!({"inputTokens": fresh, "outputTokens": u.completion_tokens,
            "totalTokens": u.total(), "cacheReadInputTokens": u.cached_tokens,
            "cacheWriteInputTokens": u.cache_write_tokens});
        Self::event(
            out,
            "metadata",
            &json!({"usage": usage, "metrics": {"latencyMs": 0}}),
        );
    }
}

fn bedrock_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "content_filtered",
    }
}

/// A Bedrock `exception` frame for an error in the stream (its exception type by status).
fn exception(out: &mut Vec<u8>, e: &ProviderError) {
    let kind = match e.status {
        400 => "validationException",
        403 => "accessDeniedException",
        404 => "resourceNotFoundException",
        429 => "throttlingException",
        503 => "serviceUnavailableException",
        504 => "modelTimeoutException",
        502 => "modelStreamErrorException",
        _ => "internalServerException",
    };
    let headers = [
        (":exception-type", HeaderValue::String(kind.into())),
        (
            ":content-type",
            HeaderValue::String("application/json".into()),
        ),
        (":message-type", HeaderValue::String("exception".into())),
    ];
    let body = serde_json::to_vec(&json!({"message": e.message})).unwrap_or_default();
    out.extend(encode_frame(&headers, &body));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::providers::{bedrock, gemini, StreamDecoder};

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 11,
            completion_tokens: 7,
            cached_tokens: 3,
            reasoning_tokens: 2,
            cache_write_tokens: 0,
        }
    }

    fn events() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Start {
                id: "r1".into(),
                model: String::new(),
            },
            StreamEvent::Reasoning {
                index: 0,
                text: "hmm".into(),
            },
            StreamEvent::Text {
                index: 0,
                text: "Hel".into(),
            },
            StreamEvent::Text {
                index: 0,
                text: "lo".into(),
            },
            StreamEvent::ToolCallStart {
                index: 0,
                call: 0,
                id: "c1".into(),
                name: "get".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                call: 0,
                arguments: "{\"a\":".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                call: 0,
                arguments: "1}".into(),
            },
            StreamEvent::Finish {
                index: 0,
                reason: FinishReason::ToolCalls,
            },
            StreamEvent::Usage(usage()),
        ]
    }

    /// What the vendor's own decoder reads back: the texts, the call, the finish, the usage.
    fn read_back(decoder: &mut dyn StreamDecoder, bytes: &[u8]) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        // Byte by byte: the client's parser may see any split.
        for b in bytes.chunks(1) {
            decoder.feed(b, &mut out);
        }
        decoder.finish(&mut out);
        out
    }

    fn summary(evs: &[StreamEvent]) -> (String, String, Option<FinishReason>, Option<Usage>, bool) {
        let mut text = String::new();
        let mut call = String::new();
        let (mut finish, mut usage, mut error) = (None, None, false);
        for e in evs {
            match e {
                StreamEvent::Text { text: t, .. } => text.push_str(t),
                StreamEvent::ToolCallStart { name, .. } => call.push_str(name),
                StreamEvent::ToolCallArgs { arguments, .. } => call.push_str(arguments),
                StreamEvent::Finish { reason, .. } => finish = Some(*reason),
                StreamEvent::Usage(u) => usage = Some(*u),
                StreamEvent::Error(_) => error = true,
                _ => {}
            }
        }
        (text, call, finish, usage, error)
    }

    #[test]
    fn gemini_stream_reads_back() {
        let mut enc = GeminiEncoder::new("gemini-2.5-flash");
        let mut out = Vec::new();
        for e in events() {
            enc.encode(&e, &mut out);
        }
        enc.finish(&mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("data: {"), "{text}");
        assert!(text.contains("\"thought\":true") && text.contains("\"finishReason\":\"STOP\""));
        let back = read_back(&mut gemini::stream_decoder(), &out);
        let (t, call, finish, u, err) = summary(&back);
        assert_eq!((t.as_str(), call.as_str()), ("Hello", "get{\"a\":1}"));
        assert_eq!(finish, Some(FinishReason::ToolCalls));
        assert_eq!(u.map(|u| (u.total(), u.reasoning_tokens)), Some((18, 2)));
        assert!(!err);
    }

    #[test]
    fn bedrock_stream_reads_back() {
        let mut enc = BedrockEncoder::new();
        let mut out = Vec::new();
        for e in events() {
            enc.encode(&e, &mut out);
        }
        enc.finish(&mut out);
        let back = read_back(&mut bedrock::stream_decoder(), &out);
        let (t, call, finish, u, err) = summary(&back);
        assert_eq!((t.as_str(), call.as_str()), ("Hello", "get{\"a\":1}"));
        assert_eq!(finish, Some(FinishReason::ToolCalls));
        // Bedrock's usage has no reasoning count.
        let bedrock = Usage {
            reasoning_tokens: 0,
            ..usage()
        };
        assert_eq!(u, Some(bedrock));
        assert!(!err);
    }

    /// An error mid-stream is the vendor's error, and nothing follows it.
    #[test]
    fn errors_mid_stream_in_the_vendor_shape() {
        let err = StreamEvent::Error(ProviderError {
            status: 429,
            kind: "rate_limit_error".into(),
            message: "slow down".into(),
            code: None,
        });
        let text = StreamEvent::Text {
            index: 0,
            text: "Hi".into(),
        };
        let mut g = GeminiEncoder::new("m");
        let mut out = Vec::new();
        for e in [&text, &err, &text] {
            g.encode(e, &mut out);
        }
        g.finish(&mut out);
        let back = read_back(&mut gemini::stream_decoder(), &out);
        let last = back.last().unwrap();
        assert!(
            matches!(last, StreamEvent::Error(e) if e.status == 429 && e.message.contains("slow down")),
            "{back:?}"
        );
        assert_eq!(summary(&back).0, "Hi");
        let mut b = BedrockEncoder::new();
        let mut out = Vec::new();
        for e in [&text, &err, &text] {
            b.encode(e, &mut out);
        }
        b.finish(&mut out);
        let back = read_back(&mut bedrock::stream_decoder(), &out);
        assert!(
            matches!(back.last(), Some(StreamEvent::Error(e)) if e.status == 429 && e.message == "slow down"),
            "{back:?}"
        );
        assert_eq!(summary(&back).0, "Hi");
    }
}
