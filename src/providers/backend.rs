//! An LLM backend: which provider it is (name, wire format, how its key travels), its
//! credentials, model and default variables, compiled from KrakenD's `ai/llm` (backend
//! namespace) plus tollgate's additions (more providers, model aliases, a default backend for
//! model routing).
//!
//! Shape (KrakenD): `{"openai": {"v1": {"credentials": "...", "variables": {"model": "gpt-4o"}}}}`;
//! the older flat form `{"openai": {"version": "v1", "credentials": "...", ...}}` is accepted too.

use super::model::ChatRequest;
use super::{AwsCredentials, Defaults, Outgoing, Target, TranslateError, Wire};
use crate::config::env::{self, Secret};
use crate::config::reader::{self, ConfigError, Obj, Result};
use serde_json::{Map, Value};

/// An LLM provider tollgate can talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    Mistral,
    Bedrock,
    Azure,
    Ollama,
    Vllm,
    OpenAiCompatible,
}

/// (config key, provider, API version key, credentials required).
const PROVIDERS: &[(&str, Provider, &str, bool)] = &[
    ("openai", Provider::OpenAi, "v1", true),
    ("anthropic", Provider::Anthropic, "v1", true),
    ("gemini", Provider::Gemini, "v1beta", true),
    ("mistral", Provider::Mistral, "v1", true),
    ("bedrock", Provider::Bedrock, "v1", false),
    ("azure", Provider::Azure, "v1", true),
    ("ollama", Provider::Ollama, "v1", false),
    ("vllm", Provider::Vllm, "v1", false),
    ("openai-compatible", Provider::OpenAiCompatible, "v1", false),
];

impl Provider {
    pub fn name(self) -> &'static str {
        PROVIDERS
            .iter()
            .find(|p| p.1 == self)
            .map(|p| p.0)
            .unwrap_or("unknown")
    }

    pub fn wire(self) -> Wire {
        match self {
            Provider::Anthropic => Wire::Anthropic,
            Provider::Gemini => Wire::Gemini,
            Provider::Bedrock => Wire::Bedrock,
            Provider::Azure => Wire::Azure,
            Provider::OpenAi
            | Provider::Mistral
            | Provider::Ollama
            | Provider::Vllm
            | Provider::OpenAiCompatible => Wire::OpenAi,
        }
    }

    /// The header that carries the provider key, and its value for `key`.
    pub fn auth_header(self, key: &str) -> (&'static str, String) {
        match self {
            Provider::Anthropic => ("x-api-key", key.to_string()),
            Provider::Gemini => ("x-goog-api-key", key.to_string()),
            Provider::Azure => ("api-key", key.to_string()),
            _ => ("authorization", format!("Bearer {key}")),
        }
    }
}

/// A compiled `ai/llm` backend.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmBackend {
    pub provider: Provider,
    pub credentials: Option<Secret<String>>,
    /// The provider's model id (`variables.model`); `None` passes the client's model on.
    pub model: Option<String>,
    /// Client model names that route to this backend.
    pub aliases: Vec<String>,
    /// Takes every model no other backend of the endpoint claims.
    pub default: bool,
    pub defaults: Defaults,
    pub stop: Vec<String>,
    pub n: Option<u32>,
    pub seed: Option<i64>,
    /// Fields merged into every provider request body (`variables.extra_payload`).
    pub extra_payload: Map<String, Value>,
    /// Azure `api-version`.
    pub api_version: Option<String>,
    /// Bedrock SigV4 credentials and region.
    pub aws: Option<Secret<AwsCredentials>>,
    /// KrakenD 3.0 `format`: the wire format of a streamed answer (None: the vendor's own).
    pub format: Option<StreamFormat>,
}

impl LlmBackend {
    /// Model names clients may use for this backend (for `GET /v1/models`).
    pub fn public_models(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.aliases.iter().map(String::as_str).collect();
        if let Some(m) = &self.model {
            if !out.contains(&m.as_str()) {
                out.push(m);
            }
        }
        out
    }

    /// True when a client asking for `model` is served here (aliases and configured model).
    pub fn claims(&self, model: &str) -> bool {
        self.aliases.iter().any(|a| a == model) || self.model.as_deref() == Some(model)
    }

    /// The model id to send upstream for a client's model.
    pub fn upstream_model<'a>(&'a self, client_model: &'a str) -> &'a str {
        self.model.as_deref().unwrap_or(client_model)
    }

    /// Backend `variables` fill what the client did not send (max_tokens, temperature and
    /// top_p travel in `Target::defaults`).
    pub fn fill_defaults(&self, req: &mut ChatRequest) {
        if req.stop.is_empty() {
            req.stop = self.stop.clone();
        }
        if req.n.is_none() {
            req.n = self.n;
        }
        if req.seed.is_none() {
            req.seed = self.seed;
        }
    }

    /// The request this backend's provider receives, as data: the path (OpenAI-compatible
    /// services may live under a prefix, `/openai/v1/chat/completions`: then the backend's
    /// `url_pattern` is the path; other wires compute theirs, the model in it), the headers
    /// (the credential first, as the provider expects it), and the body with
    /// `variables.extra_payload` merged in.
    pub fn request(
        &self,
        req: &ChatRequest,
        t: &Target,
        url_pattern: &str,
    ) -> std::result::Result<Outgoing, TranslateError> {
        let mut out = match self.provider {
            Provider::Mistral => super::openai::encode_mistral_request(req, t),
            _ => super::encode_request(req, t),
        }?;
        if t.wire == Wire::OpenAi && url_pattern.ends_with("/chat/completions") {
            out.path = url_pattern.to_string();
        }
        Ok(self.finish(out))
    }

    /// A generation request (chat or Responses) made ready for this backend:
    /// `variables.extra_payload` merged in, the credential first.
    pub fn finish(&self, mut out: Outgoing) -> Outgoing {
        if !self.extra_payload.is_empty() {
            out.body = self.merge_payload(&out.body);
        }
        self.authorize(out)
    }

    /// Any provider request with this backend's credential first (embeddings and token
    /// counts take no `extra_payload`: its fields are generation settings).
    pub fn authorize(&self, mut out: Outgoing) -> Outgoing {
        if let Some(key) = &self.credentials {
            let (name, value) = self.provider.auth_header(&key.0);
            out.headers.insert(0, (name.to_string(), value));
        }
        out
    }

    /// Merges `variables.extra_payload` into the provider body (the body's own fields win).
    /// The one place a body is read back: the provider's, only when the backend has one.
    fn merge_payload(&self, body: &[u8]) -> Vec<u8> {
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
            return body.to_vec();
        };
        for (k, v) in &self.extra_payload {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
        serde_json::to_vec(&Value::Object(map)).unwrap_or_else(|_| body.to_vec())
    }
}

/// The model a backend's `url_pattern` names, for the providers that carry it in the path:
/// Gemini's `.../models/{model}:generateContent` and Bedrock's `.../model/{model}/converse`
/// (KrakenD's Gemini and Bedrock examples set no `variables.model`). Percent-escapes are
/// decoded (Bedrock ids hold `:`); a `{param}` is no model.
pub fn url_model(provider: Provider, url_pattern: &str) -> Option<String> {
    let path = url_pattern.split('?').next().unwrap_or_default();
    let raw = match provider {
        Provider::Gemini => {
            let (_, rest) = path.rsplit_once("/models/")?;
            let (model, action) = rest.split_once(':')?;
            matches!(action, "generateContent" | "streamGenerateContent").then_some(model)?
        }
        Provider::Bedrock => {
            let (_, rest) = path.rsplit_once("/model/")?;
            let (model, action) = rest.split_once('/')?;
            matches!(action, "converse" | "converse-stream").then_some(model)?
        }
        _ => return None,
    };
    if raw.is_empty() || raw.contains(['{', '}']) {
        return None;
    }
    let bytes = crate::support::encoding::percent_decode_strict(raw)?;
    String::from_utf8(bytes).ok()
}

/// KrakenD 3.0's `ai/llm.format`: the wire format of a streamed answer on an endpoint with
/// `output_encoding: "streaming"`, whatever the backend's vendor
/// (https://www.krakend.io/docs/enterprise/ai-gateway/llm-streaming/; schema v3.0
/// `ai/llm.json`: `"format": {"enum": ["anthropic", "openai"]}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Anthropic's Messages stream (`message_start` … `message_stop`).
    Anthropic,
    /// OpenAI's Responses API events (`response.created` … `response.completed`): KrakenD's
    /// OpenAI connector calls `/v1/responses`, so OpenAI's format is that API's stream.
    OpenAi,
}

/// Compiles the value of `ai/llm`. `host` is the backend's first host (Bedrock region).
pub fn compile(
    v: &Value,
    path: &str,
    host: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<LlmBackend> {
    let mut o = Obj::new(v, path)?;
    let format = match o.get("format") {
        None => None,
        Some(Value::String(f)) if f == "anthropic" => Some(StreamFormat::Anthropic),
        Some(Value::String(f)) if f == "openai" => Some(StreamFormat::OpenAi),
        Some(other) => {
            return Err(ConfigError::new(
                format!("{path}.format"),
                format!("{other} is not a stream format: \"anthropic\" or \"openai\" (KrakenD 3.0, exactly so spelled)"),
            ))
        }
    };
    if let Some((k, _)) = o
        .unread()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("format"))
    {
        let msg = "unknown field: KrakenD's stream format is spelled \"format\"";
        return Err(ConfigError::new(format!("{path}.{k}"), msg));
    }
    let names: Vec<&str> = PROVIDERS.iter().map(|p| p.0).collect();
    let mut found = o.unread().filter(|(k, _)| !reader::is_meta_key(k));
    let (key, body) = found.next().ok_or_else(|| {
        ConfigError::new(path, format!("expected one provider: {}", names.join(", ")))
    })?;
    if let Some((extra, _)) = found.next() {
        return Err(ConfigError::new(
            format!("{path}.{extra}"),
            "one provider per backend",
        ));
    }
    let Some(&(_, provider, version, needs_key)) = PROVIDERS.iter().find(|p| p.0 == key) else {
        return Err(ConfigError::new(
            format!("{path}.{key}"),
            format!(
                "unknown provider \"{key}\" (expected one of: {})",
                names.join(", ")
            ),
        ));
    };
    let ppath = format!("{path}.{key}");
    let mut p = Obj::new(body, &ppath)?;
    // Nested {"v1": {...}} or flat {"version": "v1", ...}.
    let settings = match p.get(version) {
        Some(inner) => {
            p.finish(&[])?;
            Obj::new(inner, &format!("{ppath}.{version}"))?
        }
        None => {
            match p.opt_str("version")? {
                Some(v) if v == version => {}
                Some(v) => {
                    return Err(ConfigError::new(
                        p.at("version"),
                        format!("\"{v}\" is not supported for {key} (expected {version})"),
                    ))
                }
                None => {
                    return Err(ConfigError::new(
                        &ppath,
                        format!("expected the version object \"{version}\" (or a flat form with \"version\": \"{version}\")"),
                    ))
                }
            }
            p
        }
    };
    let mut out = settings_of(settings, provider, needs_key, host, lookup)?;
    out.format = format;
    Ok(out)
}

fn settings_of(
    mut s: Obj<'_>,
    provider: Provider,
    needs_key: bool,
    host: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<LlmBackend> {
    for unsupported in ["input_template", "output_template"] {
        if s.get(unsupported).is_some() {
            return Err(ConfigError::new(
                s.at(unsupported),
                "Go templates are not supported by tollgate; the provider format is translated natively",
            ));
        }
    }
    s.opt_bool("debug")?;
    let bedrock_keys =
        provider == Provider::Bedrock && !matches!(s.get("credentials"), Some(Value::String(_)));
    let (credentials, aws) = if bedrock_keys {
        (None, Some(aws_credentials(&mut s, host, lookup)?))
    } else {
        // Bedrock too takes an API key (KrakenD v2.13: a string, sent as a bearer token).
        (api_key(&mut s, needs_key, lookup)?, None)
    };
    let aliases = s
        .opt_strings("aliases")?
        .unwrap_or_default()
        .into_iter()
        .map(String::from)
        .collect();
    let default = s.opt_bool("default")?.unwrap_or(false);
    let api_version = match s.opt_str("api_version")? {
        Some(v) if provider == Provider::Azure => Some(v.to_string()),
        Some(_) => {
            return Err(ConfigError::new(
                s.at("api_version"),
                "only applies to azure",
            ))
        }
        None => None,
    };
    if aws.is_none() && s.get("region").is_some() {
        return Err(ConfigError::new(
            s.at("region"),
            "only applies to bedrock with AWS keys (SigV4)",
        ));
    }
    let mut out = LlmBackend {
        provider,
        credentials,
        model: None,
        aliases,
        default,
        defaults: Defaults::default(),
        stop: Vec::new(),
        n: None,
        seed: None,
        extra_payload: Map::new(),
        api_version,
        aws,
        format: None,
    };
    if let Some(mut vars) = s.opt_obj("variables")? {
        variables(&mut vars, &mut out)?;
        vars.finish(&[])?;
    }
    s.finish(&[])?;
    Ok(out)
}

/// Bedrock's `credentials` (AWS keys, `{{ env }}` resolved) and region (`region`, else
/// the host's `bedrock-runtime.<region>.amazonaws.com`).
fn aws_credentials(
    s: &mut Obj<'_>,
    host: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret<AwsCredentials>> {
    let secret = |s: &Obj<'_>, key: &str, raw: &str| {
        env::resolve(raw, lookup).map_err(|e| ConfigError::new(s.at(key), e.to_string()))
    };
    let mut c = s
        .opt_obj("credentials")?
        .ok_or_else(|| ConfigError::new(s.at("credentials"), "is required for bedrock: a Bedrock API key, or AWS keys {\"access_key_id\", \"secret_access_key\", \"session_token\"?}"))?;
    let id = c.str("access_key_id")?;
    let access_key_id = secret(&c, "access_key_id", id)?;
    let sk = c.str("secret_access_key")?;
    let secret_access_key = secret(&c, "secret_access_key", sk)?;
    let session_token = match c.opt_str("session_token")? {
        Some(t) => Some(secret(&c, "session_token", t)?),
        None => None,
    };
    c.finish(&[])?;
    let region = match s.opt_str("region")? {
        Some(r) => r.to_string(),
        None => region_from_host(host).ok_or_else(|| {
            ConfigError::new(
                s.at("region"),
                "is required when the host is not bedrock-runtime.<region>.amazonaws.com",
            )
        })?,
    };
    Ok(Secret(AwsCredentials {
        access_key_id,
        secret_access_key,
        session_token,
        region,
    }))
}

/// Every other provider's `credentials`: its API key (`{{ env }}` resolved; required where
/// the provider needs one).
fn api_key(
    s: &mut Obj<'_>,
    needs_key: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret<String>>> {
    match s.opt_str("credentials")? {
        Some(raw) => {
            let key = env::resolve(raw, lookup)
                .map_err(|e| ConfigError::new(s.at("credentials"), e.to_string()))?;
            if key.contains(['\r', '\n', '\0']) {
                return Err(ConfigError::new(
                    s.at("credentials"),
                    "contains CR, LF or NUL",
                ));
            }
            Ok(Some(Secret(key)))
        }
        None if needs_key => Err(ConfigError::new(s.at("credentials"), "is required")),
        None => Ok(None),
    }
}

/// Reads `variables` (KrakenD names per vendor; all accepted for every provider).
fn variables(v: &mut Obj<'_>, out: &mut LlmBackend) -> Result<()> {
    out.model = v.opt_str("model")?.map(String::from);
    for key in ["max_tokens", "max_output_tokens"] {
        let max = super::model::MAX_TOKENS;
        match v.opt_u64(key)? {
            Some(n) if n > max => {
                return Err(ConfigError::new(
                    v.at(key),
                    format!("{n} is more than any model allows (at most {max})"),
                ))
            }
            n => out.defaults.max_tokens = out.defaults.max_tokens.or(n),
        }
    }
    out.defaults.temperature = bounded(v, "temperature", 0.0, 2.0)?;
    out.defaults.top_p = bounded(v, "top_p", 0.0, 1.0)?;
    out.stop = v
        .opt_strings("stop_sequences")?
        .or(v.opt_strings("stop")?)
        .unwrap_or_default()
        .into_iter()
        .map(String::from)
        .collect();
    out.n = v
        .opt_u64("n")?
        .or(v.opt_u64("candidate_count")?)
        .map(|n| n.min(u32::MAX as u64) as u32);
    out.seed = v
        .opt_u64("random_seed")?
        .or(v.opt_u64("seed")?)
        .map(|s| s as i64);
    if let Some(mut extra) = v.opt_obj("extra_payload")? {
        let keys: Vec<(&str, &Value)> = extra.unread().collect();
        for (k, val) in keys {
            out.extra_payload.insert(k.to_string(), val.clone());
            extra.get(k);
        }
    }
    // Vendor knobs without a canonical field travel in the body as is.
    for knob in ["top_k", "safe_prompt", "truncation"] {
        if let Some(val) = v.get(knob) {
            out.extra_payload.insert(knob.to_string(), val.clone());
        }
    }
    Ok(())
}

fn bounded(v: &mut Obj<'_>, key: &str, lo: f64, hi: f64) -> Result<Option<f64>> {
    match v.opt_f64(key)? {
        Some(x) if !(lo..=hi).contains(&x) => Err(ConfigError::new(
            v.at(key),
            format!("{x} is outside {lo}..={hi}"),
        )),
        other => Ok(other),
    }
}

/// `bedrock-runtime.us-east-1.amazonaws.com` → `us-east-1`.
fn region_from_host(host: &str) -> Option<String> {
    let rest = host.strip_prefix("bedrock-runtime.")?;
    let (region, tail) = rest.split_once('.')?;
    tail.starts_with("amazonaws.com")
        .then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-1".into()),
            "AKID" => Some("AKIDEXAMPLE".into()),
            "SECRET" => Some("wJalr".into()),
            _ => None,
        }
    }

    fn compile_ok(v: Value) -> LlmBackend {
        compile(&v, "$.llm", "api.example.com", &env).unwrap()
    }

    fn compile_err(v: Value) -> String {
        compile(&v, "$.llm", "api.example.com", &env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn krakend_nested_and_flat_forms() {
        let nested = compile_ok(
            json!({"openai": {"v1": {"credentials": "{{ env \"KEY\" }}", "debug": false,
            "variables": {"model": "gpt-4o", "max_output_tokens": 100, "temperature": 0.5, "top_p": 0.9, "truncation": "auto"}}}}),
        );
        assert_eq!(nested.provider, Provider::OpenAi);
        assert_eq!(nested.credentials, Some(Secret("sk-1".into())));
        assert_eq!(nested.model.as_deref(), Some("gpt-4o"));
        assert_eq!(
            nested.defaults,
            Defaults {
                max_tokens: Some(100),
                temperature: Some(0.5),
                top_p: Some(0.9)
            }
        );
        assert_eq!(nested.extra_payload.get("truncation"), Some(&json!("auto")));
        let flat = compile_ok(
            json!({"openai": {"version": "v1", "credentials": "{{ env \"KEY\" }}", "variables": {"model": "gpt-4o"}}}),
        );
        assert_eq!(flat.model.as_deref(), Some("gpt-4o"));
        assert!(!format!("{nested:?}").contains("sk-1"));
    }

    /// KrakenD 3.0's stream-format sibling: "anthropic" or "openai", exactly so spelled; any
    /// other value is refused naming `format` (it was read as a second provider before).
    #[test]
    fn krakend_stream_format() {
        let a =
            compile_ok(json!({"format": "anthropic", "anthropic": {"v1": {"credentials": "k"}}}));
        assert_eq!(
            (a.provider, a.format),
            (Provider::Anthropic, Some(StreamFormat::Anthropic))
        );
        let o = compile_ok(json!({"gemini": {"v1beta": {"credentials": "k"}}, "format": "openai"}));
        assert_eq!(o.format, Some(StreamFormat::OpenAi));
        assert_eq!(
            compile_ok(json!({"openai": {"v1": {"credentials": "k"}}})).format,
            None
        );
        for bad in [
            json!("Anthropic"),
            json!("OPENAI"),
            json!(" openai"),
            json!("openai\u{0}"),
            json!("gemini"),
            json!(""),
            json!(null),
            json!(["openai"]),
            json!(1),
        ] {
            let err = compile_err(json!({"format": bad, "openai": {"v1": {"credentials": "k"}}}));
            assert!(
                err.starts_with("$.llm.format: ") && err.contains("is not a stream format"),
                "{err}"
            );
        }
        // Another spelling of the key is no provider either, named by its path.
        for key in ["Format", "FORMAT", "format "] {
            let err = compile_err(json!({key: "openai", "openai": {"v1": {"credentials": "k"}}}));
            assert!(
                err.starts_with(&format!("$.llm.{key}: unknown field")),
                "{err}"
            );
        }
        let err = compile_err(json!({"format": "openai"}));
        assert!(err.starts_with("$.llm: expected one provider"), "{err}");
    }

    #[test]
    fn tollgate_providers_aliases_and_bedrock() {
        let a = compile_ok(
            json!({"anthropic": {"v1": {"credentials": "k", "aliases": ["fast"], "default": true,
            "variables": {"model": "claude-3-5-haiku-latest", "max_tokens": 512, "stop_sequences": ["END"], "top_k": 5}}}}),
        );
        assert!(a.claims("fast") && a.claims("claude-3-5-haiku-latest") && !a.claims("gpt-4o"));
        assert_eq!(a.public_models(), vec!["fast", "claude-3-5-haiku-latest"]);
        assert_eq!(
            (a.default, a.stop.clone(), a.extra_payload.get("top_k")),
            (true, vec!["END".to_string()], Some(&json!(5)))
        );
        let o = compile_ok(json!({"ollama": {"v1": {}}}));
        assert_eq!(
            (
                o.provider.wire(),
                o.credentials.clone(),
                o.upstream_model("llama3")
            ),
            (Wire::OpenAi, None, "llama3")
        );
        let z = compile_ok(
            json!({"azure": {"v1": {"credentials": "k", "api_version": "2024-10-21", "variables": {"model": "my-deploy"}}}}),
        );
        assert_eq!(
            (z.provider.auth_header("k"), z.api_version.as_deref()),
            (("api-key", "k".to_string()), Some("2024-10-21"))
        );
        let b = compile(&json!({"bedrock": {"v1": {"credentials": {"access_key_id": "{{ env \"AKID\" }}", "secret_access_key": "{{ env \"SECRET\" }}"},
            "variables": {"model": "anthropic.claude-3-haiku-20240307-v1:0"}}}}), "$", "bedrock-runtime.eu-west-1.amazonaws.com", &env).unwrap();
        let aws = b.aws.unwrap().0;
        assert_eq!(
            (
                aws.access_key_id.as_str(),
                aws.region.as_str(),
                aws.session_token
            ),
            ("AKIDEXAMPLE", "eu-west-1", None)
        );
    }

    /// KrakenD v2.13's Bedrock `credentials` is a Bedrock API key (a string): sent as a bearer
    /// token, no SigV4, no region needed; AWS keys still sign.
    #[test]
    fn bedrock_api_key_is_a_bearer_token() {
        let b = compile(&json!({"bedrock": {"v1": {"credentials": "{{ env \"KEY\" }}", "variables": {"max_tokens": 1500}}}}),
            "$", "127.0.0.1", &env).unwrap();
        assert_eq!(
            (b.credentials.clone(), b.aws.is_none()),
            (Some(Secret("sk-1".into())), true)
        );
        use crate::providers::model::{Message, Part, Role};
        let req = ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: vec![Part::Text("hi".into())],
                tool_calls: vec![],
                tool_call_id: None,
                name: None,
            }],
            ..Default::default()
        };
        let defaults = Defaults::default();
        let t = Target {
            wire: Wire::Bedrock,
            model: "eu.meta.llama3-2-1b-instruct-v1:0",
            api_version: None,
            defaults: &defaults,
            aws: None,
            host: "bedrock-runtime.eu-west-1.amazonaws.com",
            now_unix: 1_700_000_000,
        };
        let out = b.request(&req, &t, "/model/x/converse").unwrap();
        assert_eq!(
            out.headers.first(),
            Some(&("authorization".to_string(), "Bearer sk-1".to_string()))
        );
        assert!(!out
            .headers
            .iter()
            .any(|(k, _)| k == "x-amz-date" || k.starts_with("x-amz-content")));
        assert_eq!(
            out.path,
            "/model/eu.meta.llama3-2-1b-instruct-v1%3A0/converse"
        );
    }

    #[test]
    fn model_in_url_pattern() {
        let cases = [
            (
                Provider::Gemini,
                "/v1beta/models/gemini-2.5-flash:generateContent",
                Some("gemini-2.5-flash"),
            ),
            (
                Provider::Gemini,
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                Some("gemini-2.5-flash"),
            ),
            (
                Provider::Gemini,
                "/v1beta/models/{model}:generateContent",
                None,
            ),
            (Provider::Gemini, "/v1beta/models", None),
            (Provider::Gemini, "/v1beta/models/m:countTokens", None),
            (
                Provider::Bedrock,
                "/model/eu.meta.llama3-2-1b-instruct-v1:0/converse",
                Some("eu.meta.llama3-2-1b-instruct-v1:0"),
            ),
            (
                Provider::Bedrock,
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream",
                Some("anthropic.claude-3-haiku-20240307-v1:0"),
            ),
            (Provider::Bedrock, "/model/bad%zz/converse", None),
            (Provider::Bedrock, "/model", None),
            (Provider::OpenAi, "/v1beta/models/x:generateContent", None),
        ];
        for (p, url, want) in cases {
            assert_eq!(url_model(p, url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn reject_paths() {
        let cases = [
            (json!({}), "$.llm: expected one provider: openai, anthropic, gemini, mistral, bedrock, azure, ollama, vllm, openai-compatible"),
            (json!({"cohere": {}}), "$.llm.cohere: unknown provider \"cohere\" (expected one of: openai, anthropic, gemini, mistral, bedrock, azure, ollama, vllm, openai-compatible)"),
            (json!({"openai": {}, "anthropic": {}}), "$.llm.openai: one provider per backend"),
            (json!({"openai": {"v2": {}}}), "$.llm.openai: expected the version object \"v1\" (or a flat form with \"version\": \"v1\")"),
            (json!({"openai": {"version": "v2"}}), "$.llm.openai.version: \"v2\" is not supported for openai (expected v1)"),
            (json!({"openai": {"v1": {"variables": {"model": "m"}}}}), "$.llm.openai.v1.credentials: is required"),
            (json!({"openai": {"v1": {"credentials": "{{ env \"NOPE\" }}"}}}), "$.llm.openai.v1.credentials: environment variable NOPE is not set (Envoy passes it to the filter only when it is listed in vm_config.environment_variables.host_env_keys)"),
            (json!({"openai": {"v1": {"credentials": "k", "input_template": "/t.tmpl"}}}), "$.llm.openai.v1.input_template: Go templates are not supported by tollgate; the provider format is translated natively"),
            (json!({"openai": {"v1": {"credentials": "k", "variables": {"modle": "x"}}}}), "$.llm.openai.v1.variables.modle: unknown field"),
            (json!({"openai": {"v1": {"credentials": "k", "variables": {"temperature": 3}}}}), "$.llm.openai.v1.variables.temperature: 3 is outside 0..=2"),
            (json!({"openai": {"v1": {"credentials": "k", "variables": {"max_tokens": 18446744073709551615u64}}}}), "$.llm.openai.v1.variables.max_tokens: 18446744073709551615 is more than any model allows (at most 2147483647)"),
            (json!({"gemini": {"v1beta": {"credentials": "k", "variables": {"max_output_tokens": 4294967296u64}}}}), "$.llm.gemini.v1beta.variables.max_output_tokens: 4294967296 is more than any model allows (at most 2147483647)"),
            (json!({"openai": {"v1": {"credentials": "k", "api_version": "x"}}}), "$.llm.openai.v1.api_version: only applies to azure"),
            (json!({"openai": {"v1": {"credentials": "k", "typo": 1}}}), "$.llm.openai.v1.typo: unknown field"),
            (json!({"bedrock": {"v1": {"variables": {"model": "m"}}}}), "$.llm.bedrock.v1.credentials: is required for bedrock: a Bedrock API key, or AWS keys {\"access_key_id\", \"secret_access_key\", \"session_token\"?}"),
            (json!({"bedrock": {"v1": {"credentials": "k", "region": "eu-west-1"}}}), "$.llm.bedrock.v1.region: only applies to bedrock with AWS keys (SigV4)"),
            (json!({"bedrock": {"v1": {"credentials": {"access_key_id": "a", "secret_access_key": "b"}}}}), "$.llm.bedrock.v1.region: is required when the host is not bedrock-runtime.<region>.amazonaws.com"),
        ];
        for (v, msg) in cases {
            assert_eq!(compile_err(v), msg);
        }
    }
}
