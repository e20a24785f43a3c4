//! KrakenD's body generator (EE, backend): `modifier/request-body-generator` (and its v2.13
//! name `modifier/body-generator`) makes the body a plain backend gets from a Go template
//! ([`crate::template`]) over the client's request: `req_body` (the client's JSON body; nil
//! when it is not JSON), `req_headers` and `req_querystring` (maps of lists: what the backend
//! may get), `req_params` (the `{param}`s, capitalised). KrakenD's "other vendors" AI examples
//! build a vendor's request this way.
//!
//! At configuration: the template (`template`, base64; `path` is read and inlined by
//! `tollgate check` and `tollgate envoy`, relative to the configuration file) is compiled,
//! and refused naming the JSON path, the line and column and the construct outside the
//! subset, or a data field the gateway does not provide. Per request: a render error, or a
//! JSON `content_type` whose output does not parse, is the gateway's failure (500 naming the
//! template's line, never the template text or the request's data).

use crate::config::reader::{ConfigError, Obj, Result};
use crate::refusal::{ErrorKind, Refusal};
use crate::routing::data::RequestData;
use crate::support::encoding::base64_decode;
use crate::template::Template;
use serde_json::Value;
use std::rc::Rc;

/// The data a request body template may read.
pub const FIELDS: &[&str] = &["req_body", "req_headers", "req_params", "req_querystring"];
/// The data an answer template (`modifier/response-body-generator`) may read.
pub const ANSWER_FIELDS: &[&str] = &[
    "resp_body",
    "resp_headers",
    "resp_status",
    "req_headers",
    "req_params",
    "req_querystring",
];

/// Which body a generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The backend's request body (`modifier/request-body-generator`, `modifier/body-generator`).
    Request,
    /// The client's answer from the backend's (`modifier/response-body-generator`).
    Answer,
}

/// Largest body a template may make.
pub const MAX_OUTPUT: usize = 4 << 20;

/// A compiled body generator.
#[derive(Debug, Clone)]
pub struct BodyGenerator {
    template: Rc<Template>,
    /// The `content-type` of the body it makes.
    pub content_type: String,
    /// The output must be JSON (`application/json`, `+json`).
    json: bool,
    side: Side,
}

impl PartialEq for BodyGenerator {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.template, &other.template) && self.content_type == other.content_type
    }
}

/// Compiles a `modifier/request-body-generator` (or `modifier/body-generator`), or a
/// `modifier/response-body-generator` (`side`), at `path`.
pub fn compile(v: &Value, path: &str, side: Side) -> Result<BodyGenerator> {
    let mut o = Obj::new(v, path)?;
    o.opt_bool("debug")?;
    if let Some(file) = o.opt_str("path")? {
        return Err(ConfigError::new(
            o.at("path"),
            format!("\"{file}\": a template file is read by tollgate check and tollgate envoy (relative to the configuration file), which inline it as template; the filter's own configuration needs template"),
        ));
    }
    let at = o.at("template");
    let text = o
        .opt_str("template")?
        .ok_or_else(|| ConfigError::new(&at, "is required (or path)"))?;
    let bytes = base64_decode(text)
        .ok_or_else(|| ConfigError::new(&at, "is not base64 (KrakenD's inline templates are)"))?;
    let src = String::from_utf8(bytes)
        .map_err(|_| ConfigError::new(&at, "the decoded template is not UTF-8 text"))?;
    let template = Template::compile(&src).map_err(|e| ConfigError::new(&at, e.to_string()))?;
    let (fields, what) = match side {
        Side::Request => (FIELDS, "request templates"),
        Side::Answer => (ANSWER_FIELDS, "answer templates"),
    };
    if let Some(f) = template.data_fields().find(|f| !fields.contains(f)) {
        return Err(ConfigError::new(
            &at,
            format!(
                "reads .{f}, which tollgate does not provide to {what} (it provides {})",
                fields.join(", ")
            ),
        ));
    }
    let content_type = o
        .opt_str("content_type")?
        .unwrap_or("application/json")
        .to_string();
    if content_type.is_empty() || content_type.contains(['\r', '\n', '\0']) {
        return Err(ConfigError::new(
            o.at("content_type"),
            "must be a content type (no CR, LF or NUL)",
        ));
    }
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let json = media.eq_ignore_ascii_case("application/json")
        || media.to_ascii_lowercase().ends_with("+json");
    o.finish(&[])?;
    Ok(BodyGenerator {
        template: Rc::new(template),
        content_type,
        json,
        side,
    })
}

impl BodyGenerator {
    /// The backend's body for the client's `body` and request `data`.
    pub fn render(&self, body: &[u8], data: &RequestData) -> std::result::Result<Vec<u8>, Refusal> {
        let mut doc = data.template_data();
        let req_body = serde_json::from_slice(body).unwrap_or(Value::Null);
        doc.insert("req_body".into(), req_body);
        self.run(doc)
    }

    /// The client's answer from the backend's (`status`, `headers` with canonical names,
    /// `body`: `resp_body` is nil when not JSON) and the request `data`.
    pub fn render_answer(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
        data: &RequestData,
    ) -> std::result::Result<Vec<u8>, Refusal> {
        let mut doc = data.template_data();
        let resp = RequestData {
            headers: headers.to_vec(),
            ..RequestData::default()
        };
        let resp_headers = resp
            .template_data()
            .remove("req_headers")
            .unwrap_or_default();
        doc.insert("resp_headers".into(), resp_headers);
        doc.insert("resp_status".into(), Value::from(status));
        let resp_body = serde_json::from_slice(body).unwrap_or(Value::Null);
        doc.insert("resp_body".into(), resp_body);
        self.run(doc)
    }

    fn run(&self, doc: serde_json::Map<String, Value>) -> std::result::Result<Vec<u8>, Refusal> {
        let what = match self.side {
            Side::Request => "the backend's request body template",
            Side::Answer => "the answer template",
        };
        let out = self
            .template
            .render_limited(&Value::Object(doc), MAX_OUTPUT)
            .map_err(|e| Refusal::new(ErrorKind::Internal, format!("{what} failed: {e}")))?;
        if self.json && serde_json::from_str::<serde::de::IgnoredAny>(&out).is_err() {
            let msg = format!("{what} did not make JSON (its content_type)");
            return Err(Refusal::new(ErrorKind::Internal, msg));
        }
        Ok(out.into_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        crate::support::encoding::base64_encode(s.as_bytes())
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/krakend_templates/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn data() -> RequestData {
        RequestData::new(
            "POST",
            "/req-mask",
            &[("username".into(), "kpacha".into())],
            vec![("x-user".to_string(), "u-1".to_string())],
            Vec::new(),
            String::new(),
        )
    }

    #[test]
    fn krakends_masking_template() {
        // KrakenD's AI security page (corpus doc-ai-gateway-security-L179, body_mask.tmpl).
        let g = compile(
            &json!({"template": b64(&fixture("doc-ai-gateway-security-body_mask.tmpl")),
                    "content_type": "application/json", "debug": true}),
            "$.g",
            Side::Request,
        )
        .unwrap();
        let out = g
            .render(
                br#"{"message": "call me at 555 123 4567 or 1234"}"#,
                &data(),
            )
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        // The pattern takes the separators before the last four digits too (as Go's does).
        assert_eq!(v, json!({"message": "call me atXXX-4567 orXXX-1234"}));
        // Not JSON: req_body is nil, the template's index of nil errs: a 500, not the text.
        let r = g.render(b"not json", &data()).unwrap_err();
        assert_eq!(r.status, 500);
        assert!(!r.message.contains("regexReplaceAll"), "{}", r.message);
    }

    #[test]
    fn form_bodies_and_json_checks() {
        let g = compile(
            &json!({"template": b64(&fixture("multiple-post-users_post_body.tmpl")),
                    "content_type": "application/x-www-form-urlencoded"}),
            "$.g",
            Side::Request,
        )
        .unwrap();
        assert_eq!(
            g.render(b"", &data()).unwrap(),
            b"username=kpacha&static_param=static_value\n".to_vec()
        );
        // A JSON content type whose output is not JSON: refused, never sent.
        let g = compile(
            &json!({"template": b64("{\"a\": {{ .req_params.Username }}}")}),
            "$.g",
            Side::Request,
        )
        .unwrap();
        let r = g.render(b"", &data()).unwrap_err();
        assert_eq!(
            (r.status, r.message.as_str()),
            (
                500,
                "the backend's request body template did not make JSON (its content_type)"
            )
        );
        let g = compile(
            &json!({"template": b64("{\"a\": {{ toJson .req_headers }}}")}),
            "$.g",
            Side::Request,
        )
        .unwrap();
        assert_eq!(
            g.render(b"", &data()).unwrap(),
            br#"{"a": {"X-User":["u-1"]}}"#.to_vec()
        );
    }

    #[test]
    fn krakends_answer_template() {
        // KrakenD's pre-2.11 AI example: an OpenAI Responses answer in KrakenD's unified shape.
        let g = compile(
            &json!({"template": b64(&fixture("llm-pre-2.11-generate.response.openai.tmpl"))}),
            "$.g",
            Side::Answer,
        )
        .unwrap();
        let answer = json!({"output": [{"content": [{"type": "output_text", "text": "Yo"}]}],
            "usage": {"total_tokens": 12}});
        let out = g
            .render_answer(200, &[], answer.to_string().as_bytes(), &data())
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"ai_gateway_response": [{"contents": ["Yo"]}], "usage": "12"})
        );
        // Status and headers (canonical names) are data too.
        let g = compile(
            &json!({"template": b64("{\"s\": {{ .resp_status }}, \"h\": {{ toJson .resp_headers }}}")}),
            "$.g",
            Side::Answer,
        )
        .unwrap();
        let headers = [("X-Id".to_string(), "7".to_string())];
        let out = g.render_answer(404, &headers, b"", &data()).unwrap();
        assert_eq!(out, br#"{"s": 404, "h": {"X-Id":["7"]}}"#.to_vec());
        // A request template's data is not an answer template's.
        let e = compile(
            &json!({"template": b64("{{ .req_body }}")}),
            "$.g",
            Side::Answer,
        );
        assert_eq!(e.unwrap_err().to_string(), "$.g.template: reads .req_body, which tollgate does not provide to answer templates (it provides resp_body, resp_headers, resp_status, req_headers, req_params, req_querystring)");
    }

    #[test]
    fn configuration_errors_name_path_and_construct() {
        let cases = [
            (json!({"path": "body_mask.tmpl"}), "$.g.path: \"body_mask.tmpl\": a template file is read by tollgate check and tollgate envoy (relative to the configuration file), which inline it as template; the filter's own configuration needs template"),
            (json!({}), "$.g.template: is required (or path)"),
            (json!({"template": "*"}), "$.g.template: is not base64 (KrakenD's inline templates are)"),
            (json!({"template": b64("{{ with .req_body }}x{{ end }}")}), "$.g.template: line 1 column 1: {{with}} is not supported"),
            (json!({"template": b64("{{ .resp_body }}")}), "$.g.template: reads .resp_body, which tollgate does not provide to request templates (it provides req_body, req_headers, req_params, req_querystring)"),
            (json!({"template": b64("x"), "content_type": "a\r\nb: c"}), "$.g.content_type: must be a content type (no CR, LF or NUL)"),
            (json!({"template": b64("x"), "extra": 1}), "$.g.extra: unknown field"),
        ];
        for (v, want) in cases {
            assert_eq!(
                compile(&v, "$.g", Side::Request).unwrap_err().to_string(),
                want
            );
        }
    }
}
