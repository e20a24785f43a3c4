//! Token counting: Anthropic's `POST /v1/messages/count_tokens` on the Anthropic door, to any
//! provider.
//!
//! The request is a Messages request without `max_tokens`
//! ([`super::anthropic::parse_count_tokens_request`]); the answer is Anthropic's
//! `{"input_tokens": N}`. Per provider ([`encode_request`]):
//!
//! | provider | how |
//! |---|---|
//! | Anthropic | forwarded: `POST /v1/messages/count_tokens` with the prompt as Anthropic gets it |
//! | Gemini | `POST /v1beta/models/{m}:countTokens` with the whole `generateContentRequest` (system instruction and tools count too) → `totalTokens` |
//! | Bedrock (Claude models) | `POST /model/{id}/count-tokens` with the Converse request → `inputTokens` |
//! | the others | no call: the gateway's estimate of the prompt as that provider would get it, marked `"estimated": true` |
//!
//! [`encode_request`] answers `Ok(None)` when there is no call to make: [`estimate`] gives
//! the count then.

use serde_json::{json, Value};

use super::model::{ChatRequest, ProviderError, TokenCount};
use super::{Outgoing, Target, TranslateError, Wire};

/// The call that counts `req`'s tokens at the target's provider, or `None` when the provider
/// has no counting API (then [`estimate`]).
pub fn encode_request(req: &ChatRequest, t: &Target) -> Result<Option<Outgoing>, TranslateError> {
    match t.wire {
        Wire::Anthropic => {
            let body = super::anthropic::request_body(
                req,
                t.model,
                t.defaults,
                super::anthropic::Extras::CountTokens,
            )?;
            Ok(Some(Outgoing {
                path: "/v1/messages/count_tokens".into(),
                body,
                headers: super::anthropic::headers(req),
            }))
        }
        Wire::Gemini => {
            let mut plain = req.clone();
            plain.stream = false;
            let generate = super::gemini::encode_request(&plain, t)?;
            let mut inner: Value = serde_json::from_slice(&generate.body)
                .map_err(|e| TranslateError(format!("cannot write the request: {e}")))?;
            let model = t.model.strip_prefix("models/").unwrap_or(t.model);
            if let Some(o) = inner.as_object_mut() {
                // countTokens refuses sampling settings inside the request it counts.
                o.remove("generationConfig");
                o.insert("model".into(), json!(format!("models/{model}")));
            }
            let path = generate.path.replace(":generateContent", ":countTokens");
            Ok(Some(Outgoing {
                path,
                body: serde_json::to_vec(&json!({ "generateContentRequest": inner }))
                    .unwrap_or_default(),
                headers: generate.headers,
            }))
        }
        Wire::Bedrock if super::bedrock::is_claude(t.model) => {
            let mut plain = req.clone();
            plain.stream = false;
            // The Converse request, unsigned: only its body is wrapped.
            let unsigned = Target {
                aws: None,
                ..t.clone()
            };
            let converse = super::bedrock::encode_request(&plain, &unsigned)?;
            let mut inner: Value = serde_json::from_slice(&converse.body)
                .map_err(|e| TranslateError(format!("cannot write the request: {e}")))?;
            if let Some(o) = inner.as_object_mut() {
                // The count is of the prompt: no sampling or model-specific settings.
                o.remove("inferenceConfig");
                o.remove("additionalModelRequestFields");
            }
            let body =
                serde_json::to_vec(&json!({ "input": { "converse": inner } })).unwrap_or_default();
            let path = format!(
                "/model/{}/count-tokens",
                super::bedrock::model_segment(t.model)
            );
            super::bedrock::signed_post(path, body, t, "application/json").map(Some)
        }
        _ => Ok(None),
    }
}

/// Reads a provider's count (non-2xx: its error in OpenAI's vocabulary).
pub fn decode_response(wire: Wire, status: u16, body: &[u8]) -> Result<TokenCount, ProviderError> {
    if !(200..300).contains(&status) {
        return Err(super::decode_error(wire, status, body));
    }
    let v: Value = serde_json::from_slice(body).ok().unwrap_or(Value::Null);
    let key = match wire {
        Wire::Gemini => "totalTokens",
        Wire::Bedrock => "inputTokens",
        _ => "input_tokens",
    };
    match v.get(key).and_then(super::json::count) {
        Some(n) => Ok(TokenCount {
            input_tokens: n,
            estimated: false,
        }),
        None => Err(ProviderError {
            status: 502,
            kind: "server_error".into(),
            message: format!(
                "the provider's token count has no \"{key}\": {}",
                super::json::excerpt(body)
            ),
            code: None,
        }),
    }
}

/// The gateway's estimate: the prompt as the target's provider would get it (its translated
/// body, images counted by number), as budgets estimate a request.
pub fn estimate(req: &ChatRequest, t: &Target) -> TokenCount {
    let body_len = super::encode_request(req, t)
        .map(|o| o.body.len())
        .unwrap_or_else(|_| {
            // Not translatable for that provider: the canonical texts still measure the prompt.
            req.parts()
                .filter_map(|p| p.prompt_text())
                .map(str::len)
                .sum()
        });
    TokenCount {
        input_tokens: super::tokens::request_estimate(req, body_len),
        estimated: true,
    }
}

/// Anthropic's answer: `{"input_tokens": N}`, with `"estimated": true` when the gateway
/// estimated it.
pub fn encode_response(c: &TokenCount) -> Vec<u8> {
    let v = if c.estimated {
        json!({"input_tokens": c.input_tokens, "estimated": true})
    } else {
        json!({"input_tokens": c.input_tokens})
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::providers::{anthropic, test_target, Defaults};

    fn request() -> ChatRequest {
        anthropic::parse_count_tokens_request(
            br#"{"model": "claude", "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                 "messages": [{"role": "user", "content": "Hello, Claude"}],
                 "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}}],
                 "thinking": {"type": "enabled", "budget_tokens": 2048}}"#,
        )
        .unwrap()
    }

    #[test]
    fn no_max_tokens_needed_and_anthropic_gets_the_prompt_only() {
        let d = Defaults::default();
        let o = encode_request(&request(), &test_target(Wire::Anthropic, "claude-x", &d))
            .unwrap()
            .unwrap();
        assert_eq!(o.path, "/v1/messages/count_tokens");
        let b: Value = serde_json::from_slice(&o.body).unwrap();
        assert_eq!(b["model"], "claude-x");
        assert!(b.get("max_tokens").is_none(), "{b}");
        assert!(b.get("stream").is_none());
        assert_eq!(b["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(b["tools"][0]["name"], "f");
        assert_eq!(b["thinking"]["type"], "enabled");
        assert_eq!(
            decode_response(Wire::Anthropic, 200, br#"{"input_tokens": 2095}"#).unwrap(),
            TokenCount {
                input_tokens: 2095,
                estimated: false
            }
        );
        // The Messages door still requires max_tokens.
        assert!(anthropic::parse_request(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#
        )
        .is_err());
    }

    #[test]
    fn gemini_counts_the_whole_generate_request() {
        let d = Defaults::default();
        let o = encode_request(
            &request(),
            &test_target(Wire::Gemini, "gemini-2.5-flash", &d),
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.path, "/v1beta/models/gemini-2.5-flash:countTokens");
        let b: Value = serde_json::from_slice(&o.body).unwrap();
        let g = &b["generateContentRequest"];
        assert_eq!(g["model"], "models/gemini-2.5-flash");
        assert_eq!(g["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(g["contents"][0]["parts"][0]["text"], "Hello, Claude");
        assert!(g.get("generationConfig").is_none());
        // Gemini's answer (API reference example shape).
        let c = decode_response(
            Wire::Gemini,
            200,
            br#"{"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]}"#,
        )
        .unwrap();
        assert_eq!(c.input_tokens, 31);
    }

    #[test]
    fn bedrock_claude_counts_the_converse_request_others_estimate() {
        let d = Defaults::default();
        let o = encode_request(
            &request(),
            &test_target(
                Wire::Bedrock,
                "anthropic.claude-sonnet-4-5-20250929-v1:0",
                &d,
            ),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            o.path,
            "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
        );
        let b: Value = serde_json::from_slice(&o.body).unwrap();
        assert_eq!(b["input"]["converse"]["messages"][0]["role"], "user");
        assert!(b["input"]["converse"].get("inferenceConfig").is_none());
        assert_eq!(
            decode_response(Wire::Bedrock, 200, br#"{"inputTokens": 12}"#)
                .unwrap()
                .input_tokens,
            12
        );
        for (wire, model) in [
            (Wire::Bedrock, "amazon.nova-pro-v1:0"),
            (Wire::OpenAi, "gpt-4o"),
            (Wire::Azure, "dep"),
        ] {
            assert_eq!(
                encode_request(&request(), &test_target(wire, model, &d)).unwrap(),
                None,
                "{wire:?}"
            );
            let e = estimate(&request(), &test_target(wire, model, &d));
            assert!(e.estimated && e.input_tokens > 10, "{wire:?}: {e:?}");
        }
        let v: Value = serde_json::from_slice(&encode_response(&TokenCount {
            input_tokens: 40,
            estimated: true,
        }))
        .unwrap();
        assert_eq!(v, json!({"input_tokens": 40, "estimated": true}));
    }

    #[test]
    fn provider_errors_and_odd_answers() {
        let e = decode_response(
            Wire::Anthropic,
            400,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: at least one message is required"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        let e = decode_response(Wire::Gemini, 200, b"{}").unwrap_err();
        assert_eq!(e.status, 502);
        assert!(e.message.contains("totalTokens"));
    }
}
