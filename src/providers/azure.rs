//! Azure OpenAI: the OpenAI body sent to a deployment path. Responses, streams and errors
//! are OpenAI's, so decoding reuses [`super::openai`].

use super::model::ChatRequest;
use super::{Outgoing, Target, TranslateError};

pub use super::openai::{decode_error, decode_response, stream_decoder, Decoder};

/// The `api-version` used when the backend configures none (latest GA data-plane inference).
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// `POST /openai/deployments/{deployment}/chat/completions?api-version=...` with the OpenAI body
/// (`model` is set to the deployment name; Azure ignores it).
pub fn encode_request(req: &ChatRequest, t: &Target) -> Result<Outgoing, TranslateError> {
    let deployment = t.model;
    if deployment.is_empty()
        || !deployment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(TranslateError(format!(
            "invalid Azure deployment name \"{deployment}\" (letters, digits, '-', '_' and '.' only)"
        )));
    }
    let version = t
        .api_version
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_API_VERSION);
    if !version
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(TranslateError(format!(
            "invalid Azure api-version \"{version}\""
        )));
    }
    super::openai::check_parts(req, "Azure OpenAI Chat Completions")?;
    Ok(Outgoing {
        path: format!("/openai/deployments/{deployment}/chat/completions?api-version={version}"),
        body: super::openai::request_body(
            req,
            deployment,
            t.defaults,
            super::openai::Dialect::OpenAi,
        ),
        headers: Vec::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::providers::model::{FinishReason, StreamEvent};
    use crate::providers::{openai, Defaults, StreamDecoder, Wire};
    use serde_json::{json, Value};

    fn target<'a>(model: &'a str, v: Option<&'a str>, d: &'a Defaults) -> Target<'a> {
        Target {
            wire: Wire::Azure,
            model,
            api_version: v,
            defaults: d,
            aws: None,
            host: "",
            now_unix: 0,
        }
    }

    #[test]
    fn path_body_and_version() {
        let req = openai::parse_request(
            br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .unwrap();
        let d = Defaults::default();
        let o = encode_request(&req, &target("my-gpt4o", None, &d)).unwrap();
        assert_eq!(
            o.path,
            "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
        );
        let b: Value = serde_json::from_slice(&o.body).unwrap();
        assert_eq!(b["model"], "my-gpt4o");
        assert_eq!(b["stream_options"], json!({"include_usage": true}));
        assert!(o.headers.is_empty());
        let o = encode_request(&req, &target("d", Some("2025-01-01-preview"), &d)).unwrap();
        assert_eq!(
            o.path,
            "/openai/deployments/d/chat/completions?api-version=2025-01-01-preview"
        );
        assert_eq!(
            encode_request(&req, &target("a/b", None, &d))
                .unwrap_err()
                .0,
            "invalid Azure deployment name \"a/b\" (letters, digits, '-', '_' and '.' only)"
        );
        assert_eq!(
            encode_request(&req, &target("d", Some("x&y=1"), &d))
                .unwrap_err()
                .0,
            "invalid Azure api-version \"x&y=1\""
        );
    }

    #[test]
    fn azure_content_filter_error_and_response() {
        let body = br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#;
        let e = decode_error(400, body);
        assert_eq!(
            (e.status, e.kind.as_str(), e.code.as_deref()),
            (400, "invalid_request_error", Some("content_filter"))
        );
        let ok = br#"{"choices":[{"content_filter_results":{},"finish_reason":"stop","index":0,"message":{"content":"Hi","role":"assistant"}}],"created":1,"id":"chatcmpl-A","model":"gpt-4o-2024-08-06","object":"chat.completion","prompt_filter_results":[],"usage":{"completion_tokens":1,"prompt_tokens":2,"total_tokens":3}}"#;
        let r = decode_response(200, ok).unwrap();
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
        let mut d = stream_decoder();
        let mut out = Vec::new();
        d.feed(b"data: {\"choices\":[],\"id\":\"\",\"model\":\"\",\"prompt_filter_results\":[]}\n\ndata: [DONE]\n\n", &mut out);
        d.finish(&mut out);
        assert_eq!(out, Vec::<StreamEvent>::new());
    }
}
