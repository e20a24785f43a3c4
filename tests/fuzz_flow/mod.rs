//! The whole filter ([`Flow`]) driven through the in-memory host (`host::mock`, feature
//! `mock`) with hostile input, the way Envoy drives it. Shared by the `flow` target of
//! `tests/fuzz.rs` (seeded generator, in `make test`) and `fuzz/fuzz_targets/flow.rs`
//! (libFuzzer, `make fuzz`): one input format, one Envoy emulation, one set of properties.
//! A failing input of either runs unchanged through the other
//! (`cargo fuzz run flow <file>` with `RUSTC_BOOTSTRAP=1`).
//!
//! Input: [`CONTROL`] control bytes, then messages separated by [`SEP`]: the client request,
//! the upstream response, then callout answers (failover attempts, in order). A message is a
//! head of `name: value` lines (pseudo-headers too: `:method`, `:path`, `:status`; defaults
//! `POST /v1/chat/completions` and 200), an empty line (`\n\n`), then the body. Control bytes:
//! - 0, flags: bit 0 request headers end the stream when the body is empty; bit 1 the same
//!   for the response; bit 2 the response is cut before its end (no `end_of_stream`); bit 3 a
//!   stale callout token is delivered first; bits 4-7 seconds the clock moves per callback;
//! - 1 and 2: how the request and response bodies are split into callbacks ([`splits`]);
//! - 3: bits 0-1 the client address (`source.address`): none, IPv4, IPv6, not an address;
//!   bit 2 the request body never reaches the filter: Envoy answers first (over its buffer
//!   limit: 413, or a timeout), the response message being its reply; bit 3 the request ends
//!   with trailers (HTTP/2): no body callback has `end_of_stream`, the trailers callback
//!   comes last; bits 4-5 what `jwt_authn` verified (the `metadata` property): nothing, the
//!   JWT endpoint's payload with its role and scope, one without them, the request body as
//!   raw bytes.
//!
//! Properties: no panic; every local reply has a status in 200..=599 and a JSON body (an SSE
//! body whose events are JSON when it is a failed-over stream), and is still that after
//! Envoy runs it through the response callbacks; a translated LLM answer the client gets
//! whole is JSON (SSE with JSON events for streams); no client credential reaches a provider;
//! no cluster is chosen except by the filter's match (whatever routing header the client
//! sent: the request goes to a backend of the endpoint the filter matched, or nowhere).
// Each of the two crates that include this file uses a part of it.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::rc::Rc;
use tollgate::config::Gateway;
use tollgate::filter::{Action, Flow};
use tollgate::host::mock::{MockHost, Reply};
use tollgate::stream::SseParser;

/// Separates the messages of an input.
pub const SEP: &[u8] = b"\n=~=\n";
/// Control bytes before the first message.
pub const CONTROL: usize = 4;

/// Provider credentials the gateway holds (allowed upstream, unlike the client's).
pub const PROVIDER_KEYS: &[&str] = &[
    "sk-openai-provider",
    "sk-ant-provider",
    "gemini-provider",
    "azure-provider",
    "mistral-provider",
];

/// Client API keys of `auth/api-keys` (`admin`, `user`).
pub const CLIENT_KEYS: &[&str] = &["k-admin", "k-user"];

/// Routing headers a client may send (every one names a real cluster but the filter's).
pub const CLIENT_CLUSTERS: &[&str] = &[
    "tg_http_127.0.0.1_9007",
    "tg_http_10.0.0.1_80+http_10.0.0.2_80",
    "tg_http_127.0.0.1_9001",
    "nonexistent",
];

/// The index of the `auth/validator` endpoint in [`config`] (its `jwt_authn` provider).
const JWT_ENDPOINT: usize = 7;

/// Request paths the configuration serves (and a few it does not).
pub const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/messages",
    "/failover/v1/chat/completions",
    "/cost/v1/chat/completions",
    "/tpl/team-a/chat",
    "/api/one/two?x=1",
    "/ask?key=k-user",
    "/jwt/v1/chat/completions",
    "/v1/responses",
    "/v1/responses/resp_1",
    "/v1/responses/resp_1/cancel",
    "/v1/responses/resp_1/input_items?limit=2&order=asc",
    "/v1/responses/resp_1?stream=true&starting_after=1",
    "/v1/responses/..%2Fresp_1?x=1",
    "/v1/embeddings",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/ks/openai",
    "/ks/anthropic",
    "/ks/gemini",
    "/ks/bedrock",
    "/ks/chat",
    "/nope",
];

/// Model names the LLM endpoints route on.
pub const MODELS: &[&str] = &[
    "gpt-4o-mini",
    "claude",
    "gemini",
    "bedrock",
    "azure",
    "mistral",
    "ollama",
    "unknown-model",
];

/// A realistic gateway: every provider wire, security (API keys, JWT roles, PII masking,
/// exfiltration guard, prompt guard), governance (quotas with reservation, cost weight,
/// rate limits, failover with circuit breakers, templates, schemas), plain endpoints.
pub fn config() -> Value {
    let openai = |default: bool| {
        json!({"host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/chat/completions",
            "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-openai-provider", "default": default,
                "aliases": ["gpt"], "variables": {"model": "gpt-4o-mini", "max_tokens": 256}}}}}})
    };
    let anthropic = json!({"host": ["http://127.0.0.1:9002"], "url_pattern": "/v1/messages",
        "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-ant-provider", "aliases": ["claude"],
            "variables": {"model": "claude-3-5-haiku-latest", "max_tokens": 1024}}}}}});
    let gemini = json!({"host": ["http://127.0.0.1:9003"], "url_pattern": "/v1beta/models",
        "extra_config": {"ai/llm": {"gemini": {"v1beta": {"credentials": "gemini-provider", "aliases": ["gemini"],
            "variables": {"model": "gemini-2.0-flash"}}}}}});
    let bedrock = json!({"host": ["http://127.0.0.1:9004"], "url_pattern": "/model",
        "extra_config": {"ai/llm": {"bedrock": {"v1": {"aliases": ["bedrock"], "region": "eu-west-1",
            "credentials": {"access_key_id": "AKIDFUZZ", "secret_access_key": "secret", "session_token": "token"},
            "variables": {"model": "anthropic.claude-3-haiku-20240307-v1:0"}}}}}});
    let azure = json!({"host": ["http://127.0.0.1:9005"], "url_pattern": "/openai/deployments",
        "extra_config": {"ai/llm": {"azure": {"v1": {"credentials": "azure-provider", "aliases": ["azure"],
            "api_version": "2024-10-21", "variables": {"model": "gpt4o-mini-deploy"}}}}}});
    let mistral = json!({"host": ["http://127.0.0.1:9006"], "url_pattern": "/v1/chat/completions",
        "extra_config": {"ai/llm": {"mistral": {"v1": {"credentials": "mistral-provider", "aliases": ["mistral"],
            "variables": {"model": "mistral-small-latest", "extra_payload": {"safe_prompt": true}}}}}}});
    let ollama = json!({"host": ["http://127.0.0.1:11434"], "url_pattern": "/v1/chat/completions",
        "extra_config": {"ai/llm": {"ollama": {"v1": {"aliases": ["ollama"], "variables": {"model": "llama3.2"}}}}}});
    // KrakenD's LLM streaming (output_encoding streaming): format openai, anthropic, and each
    // vendor's own stream.
    let ks = |mut b: Value, format: Option<&str>| {
        if let Some(f) = format {
            b["extra_config"]["ai/llm"]["format"] = json!(f);
        }
        b
    };
    let streaming = [
        ("/ks/openai", ks(openai(true), Some("openai"))),
        ("/ks/anthropic", ks(gemini.clone(), Some("anthropic"))),
        ("/ks/gemini", ks(gemini.clone(), None)),
        ("/ks/bedrock", ks(bedrock.clone(), None)),
        ("/ks/chat", ks(openai(true), None)),
    ];
    let all = json!([
        openai(true),
        anthropic,
        gemini,
        bedrock,
        azure,
        mistral,
        ollama
    ]);
    let mut breaker = openai(false);
    breaker["extra_config"]["qos/circuit-breaker"] =
        json!({"max_errors": 1, "interval": 60, "timeout": 10, "name": "openai"});
    let mut conditional = json!({"host": ["http://127.0.0.1:9006"], "url_pattern": "/v1/chat/completions",
        "extra_config": {"ai/llm": {"mistral": {"v1": {"credentials": "mistral-provider",
            "variables": {"model": "mistral-small-latest"}}}}}});
    conditional["extra_config"]["backend/conditional"] =
        json!({"strategy": "header", "name": "X-Llm", "value": "mistral"});
    let mut responses = openai(true);
    responses["url_pattern"] = json!("/v1/responses");
    let mut embed = openai(false);
    embed["url_pattern"] = json!("/v1/embeddings");
    let titan = json!({"host": ["http://127.0.0.1:9004"], "url_pattern": "/model",
        "extra_config": {"ai/llm": {"bedrock": {"v1": {"credentials": "bedrock-api-key",
            "variables": {"model": "cohere.embed-v4:0"}}}}}});
    let pii = json!({"detectors": ["email", "phone", "credit_card", "iban", "ssn", "ipv4", "api_key"],
        "custom": [{"name": "employee_id", "pattern": "EMP-[0-9]{5}"}], "action": "mask", "restore": true});
    let streaming_pii = pii.clone();
    let quota = |name: &str, weight: &str, reserve: bool| {
        json!({"quota_name": name, "tier_key": "X-Plan", "weight_key": weight, "reserve": reserve, "tiers": [
            {"rule_name": "gold", "tier_value": "gold", "tier_value_as": "literal", "strategy": "header", "key": "X-User"},
            {"rule_name": "free", "tier_value_as": "*", "strategy": "ip"}]})
    };
    let mut doc = json!({
        "version": 3,
        "timeout": "30s",
        "extra_config": {
            "auth/api-keys": {"keys": [{"key": "k-admin", "roles": ["admin"]}, {"key": "k-user", "roles": ["user"]}],
                              "propagate_role": "X-Role"},
            "ai/prompt-guard": {"guards": [{"name": "jailbreak", "kind": "regex", "severity": "high",
                                            "config": {"patterns": ["(?i)ignore (all )?previous instructions"]}}]},
            "governance/processors": {"quotas": [
                {"name": "tokens", "connection_name": "per-envoy", "rules": [
                    {"name": "gold", "limits": [{"amount": 100000, "unit": "day"}, {"amount": 5000, "unit": "minute"}]},
                    {"name": "free", "limits": [{"amount": 600, "unit": "hour"}]}]},
                {"name": "money", "connection_name": "per-envoy", "rules": [
                    {"name": "gold", "limits": [{"amount": 1, "unit": "day"}]},
                    {"name": "free", "limits": [{"amount": 0.001, "unit": "day"}]}]}]},
            "ai/usage": {"currency": "USD", "response_headers": true, "tenant_header": "X-Tenant",
                         "prices": {"gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075},
                                    "claude-3-5-haiku-latest": {"input": 0.8, "output": 4.0}}}
        },
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": all,
             "extra_config": {
                 "security/pii": pii,
                 "security/exfiltration": {"action": "redact", "window": 64},
                 "ai/prompt-guard": {"guards": ["jailbreak"], "max_prompt_chars": 20000},
                 "governance/quota": quota("tokens", "usage.total_tokens", true),
                 "qos/ratelimit/router": {"client_max_rate": 1000, "client_max_tokens": 100000,
                                          "strategy": "header", "key": "X-User", "every": "1m"},
                 "proxy": {"max_payload": 65536}}},
            {"endpoint": "/v1/messages", "method": "POST", "backend": all,
             "extra_config": {
                 "auth/api-keys": {"roles": ["admin", "user"]},
                 "security/pii": {"detectors": ["email", "ssn"], "action": "block"},
                 "security/exfiltration": {"action": "block", "window": 32},
                 "ai/prompt-guard": {"guards": ["jailbreak"], "deny": ["(?i)secret plan"],
                                     "models_by_role": {"admin": ["*"], "user": ["gpt-4o-mini", "claude"]}},
                 "ai/prompt-decorator": {"prepend": [{"role": "system", "content": "Be brief."}],
                                         "append": [{"role": "user", "content": "Answer in French."}]}}},
            {"endpoint": "/failover/v1/chat/completions", "method": "POST", "timeout": "2s",
             "backend": [breaker, anthropic_backend(), conditional, gemini_backend()],
             "extra_config": {"ai/routing": {"failover": true, "weights": [3, 1, 0, 1]},
                              "governance/quota": quota("tokens", "usage.prompt_tokens", false)}},
            {"endpoint": "/cost/v1/chat/completions", "method": "POST", "backend": [openai(true), anthropic_backend()],
             "extra_config": {"governance/quota": quota("money", "cost", true),
                              "validation/response-json-schema": {"schema": {"type": "object", "required": ["city"]}}}},
            {"endpoint": "/tpl/{team}/chat", "method": "POST", "backend": [openai(true)],
             "extra_config": {
                 "validation/json-schema": {"type": "object", "required": ["text"],
                                            "properties": {"text": {"type": "string", "maxLength": 2000}}},
                 "ai/prompt-template": {"template": "{\"model\": {{ var.model }}, \"stream\": {{ body.stream }}, \"messages\": [{\"role\": \"user\", \"content\": \"{{ param.team }}: {{ body.text }}\"}]}",
                                        "variables": {"model": "gpt-4o-mini"}}}},
            {"endpoint": "/api/{a}/{b}", "method": "GET",
             "backend": [{"host": ["http://10.0.0.1:80", "http://10.0.0.2"], "url_pattern": "/x/{b}/{a}", "method": "POST",
                 "extra_config": {"modifier/martian": {"fifo.Group": {"scope": ["request", "response"], "modifiers": [
                     {"header.Modifier": {"scope": ["request"], "name": "X-A", "value": "1"}},
                     {"header.Append": {"scope": ["response"], "name": "X-B", "value": "2"}},
                     {"header.Blacklist": {"scope": ["request"], "names": ["Cookie"]}},
                     {"header.Copy": {"scope": ["request"], "from": "X-A", "to": "X-C"}}]}},
                     "qos/circuit-breaker": {"max_errors": 2, "interval": 60, "timeout": 10}}}],
             "extra_config": {"qos/ratelimit/router": {"max_rate": 1000, "client_max_rate": 100, "strategy": "param", "key": "a"}}},
            {"endpoint": "/ask", "method": "POST",
             "backend": [{"host": ["http://127.0.0.1:9007"], "url_pattern": "/answer"}],
             "extra_config": {
                 "auth/api-keys": {"roles": [], "strategy": "query_string", "identifier": "key"},
                 "validation/json-schema": {"type": "object", "required": ["q"], "properties": {"q": {"type": "string", "pattern": "^[a-z ]+$"}}},
                 "ai/prompt-template": {"template": "{\"question\": \"{{ body.q }}\", \"from\": \"{{ header.x-user }}\"}"},
                 "proxy": {"max_payload": 4096}}},
            {"endpoint": "/jwt/v1/chat/completions", "method": "POST", "backend": [openai(true)],
             "extra_config": {"auth/validator": {"alg": "RS256", "jwk_local_path": "/etc/jwks.json",
                 "roles": ["dev"], "scopes": ["llm:chat"], "scopes_key": "scope", "roles_key": "realm.roles",
                 "roles_key_is_nested": true}}},
            // The agents' doors (issue 15): Responses (its stored routes too), embeddings
            // and token counting behind failover.
            {"endpoint": "/v1/responses", "method": "POST", "backend": [responses, anthropic_backend()],
             "extra_config": {"auth/api-keys": {"roles": ["admin", "user"]},
                              "governance/quota": quota("tokens", "usage.total_tokens", true)}},
            {"endpoint": "/v1/embeddings", "method": "POST", "backend": [embed, titan],
             "extra_config": {"ai/routing": {"failover": true},
                              "governance/quota": quota("tokens", "usage.total_tokens", false)}},
            {"endpoint": "/v1/messages/count_tokens", "method": "POST", "backend": [anthropic_backend(), openai(false)],
             "extra_config": {"ai/routing": {"failover": true}}}
        ]
    });
    let endpoints = doc["endpoints"].as_array_mut().unwrap();
    for (path, b) in streaming {
        endpoints.push(json!({"endpoint": path, "method": "POST", "output_encoding": "streaming", "backend": [b],
            "extra_config": {"security/pii": streaming_pii.clone(), "governance/quota": quota("tokens", "usage", false)}}));
    }
    doc
}

fn anthropic_backend() -> Value {
    json!({"host": ["http://127.0.0.1:9002"], "url_pattern": "/v1/messages",
        "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-ant-provider", "aliases": ["claude"],
            "variables": {"model": "claude-3-5-haiku-latest"}}}}}})
}

fn gemini_backend() -> Value {
    json!({"host": ["http://127.0.0.1:9003"], "url_pattern": "/v1beta/models",
        "extra_config": {"ai/llm": {"gemini": {"v1beta": {"credentials": "gemini-provider", "aliases": ["gemini"],
            "variables": {"model": "gemini-2.0-flash"}}}}}})
}

thread_local! {
    static GATEWAY: Rc<Gateway> = Rc::new(match Gateway::from_value(&config(), &|_| None) {
        Ok(gw) => gw,
        Err(e) => panic!("the flow fuzz configuration is invalid: {e}"),
    });
}

/// One HTTP message of the input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub head: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A decoded input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub control: [u8; CONTROL],
    pub request: Message,
    pub response: Message,
    pub callouts: Vec<Message>,
}

/// Splits `data` at every `sep`.
fn split_all<'a>(mut data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(at) = data.windows(sep.len()).position(|w| w == sep) {
        out.push(&data[..at]);
        data = &data[at + sep.len()..];
    }
    out.push(data);
    out
}

/// A head and body: the head ends at the first empty line.
fn message(data: &[u8]) -> Message {
    let (head, body) = if let Some(body) = data.strip_prefix(b"\n") {
        (&[][..], body)
    } else {
        match data.windows(2).position(|w| w == b"\n\n") {
            Some(at) => (&data[..at], &data[at + 2..]),
            None => (data, &[][..]),
        }
    };
    let head = String::from_utf8_lossy(head);
    let mut headers = Vec::new();
    for line in head.split('\n') {
        // Envoy refuses CR, LF and NUL in header values; names arrive lowercase.
        let line: String = line.chars().filter(|c| !matches!(c, '\r' | '\0')).collect();
        let from = usize::from(line.starts_with(':'));
        let Some(at) = line.get(from..).and_then(|l| l.find(':')).map(|i| i + from) else {
            continue;
        };
        let name = line[..at].trim().to_ascii_lowercase();
        if name.is_empty() || name == ":" {
            continue;
        }
        headers.push((name, line[at + 1..].trim_start().to_string()));
    }
    Message {
        head: headers,
        body: body.to_vec(),
    }
}

/// Decodes any bytes as an input (missing parts are empty).
pub fn parse(data: &[u8]) -> Input {
    let mut control = [0u8; CONTROL];
    let n = data.len().min(CONTROL);
    control[..n].copy_from_slice(&data[..n]);
    let rest = &data[n..];
    let mut messages = split_all(rest, SEP).into_iter().map(message);
    Input {
        control,
        request: messages.next().unwrap_or_default(),
        response: messages.next().unwrap_or_default(),
        callouts: messages.take(8).collect(),
    }
}

/// Writes a message in the input format.
pub fn write_message(out: &mut Vec<u8>, head: &[(&str, &str)], body: &[u8]) {
    for (k, v) in head {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
}

/// Cuts `len` bytes into callback chunks: seed bits 0-1 pick the size class (whole, 1-4,
/// 1-64, 1-512 bytes), the other bits the sizes.
pub fn splits(seed: u8, len: usize) -> Vec<std::ops::Range<usize>> {
    let max = match seed & 3 {
        0 => return std::iter::once(0..len).collect(),
        1 => 4,
        2 => 64,
        _ => 512,
    };
    let mut state = u32::from(seed >> 2).wrapping_mul(2_654_435_761) | 1;
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = 1 + state as usize % max;
        let end = (at + n).min(len);
        out.push(at..end);
        at = end;
    }
    if out.is_empty() {
        out.push(0..0);
    }
    out
}

/// What a run reached, for the generator's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// The gateway answered the client itself.
    LocalReply,
    /// The request went to the upstream (proxied or through callouts).
    Upstream,
    /// Neither (a callout never answered).
    Nothing,
}

/// The Envoy side of one HTTP stream.
struct Envoy {
    flow: Flow,
    h: MockHost,
    input: Input,
    /// Callout answers delivered so far.
    answered: usize,
    /// Client credential values, which must never reach a provider.
    client_credentials: Vec<String>,
}

/// Runs one input through the whole filter; panics when a property does not hold.
pub fn run(data: &[u8]) -> Reached {
    let input = parse(data);
    let gw = GATEWAY.with(Rc::clone);
    let req = &input.request;
    let method = req.header(":method").unwrap_or("POST").to_string();
    let path = req
        .header(":path")
        .unwrap_or("/v1/chat/completions")
        .to_string();
    let mut h = MockHost::request(&method, &path, &[]);
    for (k, v) in &req.head {
        if !matches!(k.as_str(), ":method" | ":path") {
            h.request_headers.push((k.clone(), v.clone()));
        }
    }
    h.source_address = match input.control[3] & 3 {
        0 => None,
        1 => Some("10.0.0.1:5555".into()),
        2 => Some("[2001:db8::1]:443".into()),
        _ => Some("not an address".into()),
    };
    let provider = tollgate::security::claims::provider_name(JWT_ENDPOINT);
    let encode = |claims: Value| {
        tollgate::security::metadata::encode_jwt_metadata(&[(provider.as_str(), &claims)])
    };
    h.metadata = match (input.control[3] >> 4) & 3 {
        0 => None,
        1 => Some(encode(
            json!({"realm": {"roles": ["dev"]}, "scope": "llm:chat", "sub": "u"}),
        )),
        2 => Some(encode(json!({"realm": {"roles": ["ops"]}}))),
        _ => Some(req.body.clone()),
    };
    tollgate::cost::store::init(&mut h);
    gw.init_shared(&mut h);
    let client_credentials = req
        .head
        .iter()
        .filter(|(k, _)| is_credential(k))
        .flat_map(|(_, v)| [v.trim().to_string(), bearer(v).to_string()])
        .filter(|v| {
            !v.is_empty()
                && !PROVIDER_KEYS
                    .iter()
                    .any(|k| k.contains(v.as_str()) || v.contains(k))
        })
        .collect();
    let mut envoy = Envoy {
        flow: Flow::new(gw),
        h,
        input,
        answered: 0,
        client_credentials,
    };
    let reached = envoy.stream();
    envoy.check_cluster(reached);
    envoy.flow.on_log(&mut envoy.h);
    for (i, c) in envoy.h.callouts.iter().enumerate() {
        let what = format!("callout {i}");
        check_headers(&what, &c.headers);
        envoy.check_credentials(&what, &c.headers);
    }
    reached
}

/// Client credential headers of every front door.
fn is_credential(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "x-api-key" | "api-key" | "x-goog-api-key"
    )
}

fn bearer(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix("Bearer ").unwrap_or(v).trim()
}

impl Envoy {
    fn flag(&self, bit: u8) -> bool {
        self.input.control[0] & (1 << bit) != 0
    }

    /// A callback later: the clock moves on.
    fn tick(&mut self) {
        let step = u64::from(self.input.control[0] >> 4);
        self.h.now += step;
        self.h.now_ms = Some(self.h.now * 1000 + step * 7);
    }

    fn stream(&mut self) -> Reached {
        // Request headers.
        let body = std::mem::take(&mut self.input.request.body);
        let eos = body.is_empty() && self.flag(0);
        self.flow.on_request_headers(&mut self.h, eos);
        if let Some(r) = self.h.reply.take() {
            return self.local_reply(r);
        }
        if !eos && self.input.control[3] & 4 != 0 {
            return self.response();
        }
        // Request body: Envoy buffers while the filter pauses (`body_size` is then the
        // whole buffer); a chunk let through is gone upstream. With trailers, no body
        // callback ends the stream: the trailers callback does.
        let trailers = self.input.control[3] & 8 != 0;
        if !eos {
            let parts = splits(self.input.control[1], body.len());
            let last = if trailers {
                usize::MAX
            } else {
                parts.len() - 1
            };
            let mut action = Action::Continue;
            for (i, part) in parts.into_iter().enumerate() {
                self.tick();
                if action == Action::Continue {
                    self.h.request_body.clear();
                }
                self.h.request_body.extend_from_slice(&body[part]);
                let size = self.h.request_body.len();
                action = self.flow.on_request_body(&mut self.h, size, i == last);
                if let Some(r) = self.h.reply.take() {
                    return self.local_reply(r);
                }
            }
            if trailers {
                self.tick();
                self.h.request_trailers = vec![("x-trailer".into(), "1".into())];
                self.flow.on_request_trailers(&mut self.h);
                assert!(
                    self.h.request_trailers.is_empty(),
                    "client trailers are forwarded"
                );
                if let Some(r) = self.h.reply.take() {
                    return self.local_reply(r);
                }
            }
        }
        if !self.h.callouts.is_empty() {
            // Failover: the request is answered from callouts.
            return self.callouts();
        }
        self.check_credentials("upstream request", &self.h.request_headers);
        self.response()
    }

    /// Delivers callout answers from the input while the filter waits for one.
    fn callouts(&mut self) -> Reached {
        while self.answered < self.h.callouts.len() {
            let Some(answer) = self.input.callouts.get(self.answered).cloned() else {
                // No answer: the callout times out later; the stream ends first here.
                return Reached::Nothing;
            };
            self.tick();
            if self.flag(3) {
                self.h.callout_answer = (vec![(":status".into(), "200".into())], b"{}".to_vec());
                self.flow.on_callout(&mut self.h, 9999, 2);
            }
            let token = self.h.callouts.len() as u32;
            self.answered = self.h.callouts.len();
            let size = answer.body.len();
            self.h.callout_answer = (answer.head, answer.body);
            self.flow.on_callout(&mut self.h, token, size);
            if let Some(r) = self.h.reply.take() {
                return self.local_reply(r);
            }
        }
        Reached::Upstream
    }

    /// The upstream answers: headers, then the body in chunks.
    fn response(&mut self) -> Reached {
        let resp = std::mem::take(&mut self.input.response);
        self.h.response_headers = resp.head.clone();
        if resp.header(":status").is_none() {
            self.h
                .response_headers
                .insert(0, (":status".into(), "200".into()));
        }
        let eos = resp.body.is_empty() && self.flag(1);
        self.tick();
        let before = self.h.callouts.len();
        let mut action = self.flow.on_response_headers(&mut self.h, eos);
        if self.h.callouts.len() > before {
            // A stream that failed before its first byte fails over through callouts.
            self.answered = before;
            return self.callouts();
        }
        if let Some(r) = self.h.reply.take() {
            return self.local_reply(r);
        }
        if eos {
            return Reached::Upstream;
        }
        let mut parts = splits(self.input.control[2], resp.body.len());
        let cut = self.flag(2);
        if cut {
            parts.pop(); // the connection is reset before the last chunk
        }
        let last = parts.len().saturating_sub(1);
        let mut client = Vec::new();
        self.h.response_chunk.clear();
        let mut paused = action == Action::Pause;
        for (i, part) in parts.into_iter().enumerate() {
            self.tick();
            if !paused {
                self.h.response_chunk.clear();
            }
            self.h.response_chunk.extend_from_slice(&resp.body[part]);
            let size = self.h.response_chunk.len();
            let end = !cut && i == last;
            action = self.flow.on_response_body(&mut self.h, size, end);
            if let Some(r) = self.h.reply.take() {
                return self.local_reply(r);
            }
            paused = action == Action::Pause && !end;
            if !paused {
                client.extend_from_slice(&self.h.response_chunk);
            }
        }
        if !cut && self.llm_endpoint() {
            self.check_body("translated answer", &client, &self.h.response_headers);
        }
        Reached::Upstream
    }

    /// Envoy answers the client with the filter's reply, and runs it through the response
    /// callbacks (the filter must leave it as it is: already in the client's shape).
    fn local_reply(&mut self, r: Reply) -> Reached {
        assert!(
            (200..=599).contains(&r.status),
            "local reply status {}",
            r.status
        );
        check_headers("local reply", &r.headers);
        self.check_body("local reply", &r.body, &r.headers);
        let status = r.status.to_string();
        let mut headers = vec![(":status".to_string(), status)];
        headers.extend(r.headers.iter().cloned());
        self.h.response_headers = headers;
        self.h.response_chunk = r.body.clone();
        self.tick();
        self.flow.on_response_headers(&mut self.h, false);
        let size = self.h.response_chunk.len();
        self.flow.on_response_body(&mut self.h, size, true);
        assert!(
            self.h.reply.is_none(),
            "a second local reply while the first one is sent"
        );
        let body = self.h.response_chunk.clone();
        self.check_body(
            "local reply after the response callbacks",
            &body,
            &self.h.response_headers,
        );
        Reached::LocalReply
    }

    /// The request names (at most) one cluster, of the endpoint the filter matched; with no
    /// endpoint matched, none: never one the client named. A request that went upstream
    /// (not answered by Envoy first) names one.
    fn check_cluster(&self, reached: Reached) {
        let routed = self.h.request_values(tollgate::routing::CLUSTER_HEADER);
        let allowed: Vec<String> = GATEWAY.with(|gw| {
            self.matched()
                .and_then(|i| gw.endpoints.get(i))
                .map(|e| e.backends.iter().map(|b| b.cluster.clone()).collect())
                .unwrap_or_default()
        });
        assert!(
            routed.len() <= 1 && routed.iter().all(|c| allowed.iter().any(|a| a == c)),
            "routed to {routed:?}; the filter's match allows {allowed:?}"
        );
        let envoy_answered = self.input.control[3] & 4 != 0;
        if reached == Reached::Upstream && self.h.callouts.is_empty() && !envoy_answered {
            assert_eq!(routed.len(), 1, "proxied upstream without a cluster");
        }
    }

    /// The endpoint the filter matches for this request.
    fn matched(&self) -> Option<usize> {
        let req = &self.input.request;
        let method = req.header(":method").unwrap_or("POST");
        let path = req.header(":path").unwrap_or("/v1/chat/completions");
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        GATEWAY.with(|gw| tollgate::filter::matched_endpoint(gw, method, path))
    }

    /// Whether the request was routed to an `ai/llm` endpoint.
    fn llm_endpoint(&self) -> bool {
        let matched = self.matched();
        GATEWAY.with(|gw| {
            matched
                .and_then(|i| gw.endpoints.get(i))
                .is_some_and(|e| e.api.is_some())
        })
    }

    /// A body the client gets whole: JSON, or SSE with JSON events when it is a stream, or
    /// well-formed eventstream frames with JSON payloads (KrakenD's LLM streaming from Bedrock).
    fn check_body(&self, what: &str, body: &[u8], headers: &[(String, String)]) {
        let ctype = |t: &str| {
            headers
                .iter()
                .any(|(k, v)| k == "content-type" && v.starts_with(t))
        };
        if ctype("application/vnd.amazon.eventstream") {
            let mut frames = Vec::new();
            let mut d = tollgate::providers::eventstream::Decoder::new();
            d.feed(body, &mut frames);
            d.finish(&mut frames);
            for f in frames {
                let f = f.unwrap_or_else(|e| panic!("{what}: a bad eventstream frame: {e:?}"));
                assert!(is_json(&f.payload), "{what}: a frame's payload is not JSON");
            }
        } else if ctype("text/event-stream") {
            let mut p = SseParser::new();
            let mut events = Vec::new();
            p.feed(body, &mut events);
            p.finish(&mut events);
            for ev in events {
                assert!(
                    ev.data == "[DONE]" || is_json(ev.data.as_bytes()),
                    "{what}: an event is not JSON: {:?}",
                    ev.data
                );
            }
        } else {
            assert!(
                is_json(body),
                "{what}: the body is not JSON: {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// No credential header going to a provider carries the client's credential.
    fn check_credentials(&self, what: &str, headers: &[(String, String)]) {
        for (k, v) in headers.iter().filter(|(k, _)| is_credential(k)) {
            for c in &self.client_credentials {
                assert!(
                    v.trim() != c && bearer(v) != c,
                    "{what}: the client credential {c:?} is sent upstream in {k}: {v:?}"
                );
            }
        }
    }
}

/// Whether `bytes` are one JSON document. serde_json stops at 128 levels of nesting; what
/// the gateway writes is serialized by serde_json (valid by construction) and may nest a
/// few levels deeper than the input it translates (a tool schema 127 levels deep), so a
/// document too deep to read back counts as JSON.
pub fn is_json(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(_) => true,
        Err(e) => e.to_string().starts_with("recursion limit exceeded"),
    }
}

/// Header names and values a filter sends must be writable to HTTP.
fn check_headers(what: &str, headers: &[(String, String)]) {
    for (k, v) in headers {
        assert!(
            !k.is_empty() && !k.contains(['\r', '\n', '\0']) && !v.contains(['\r', '\n', '\0']),
            "{what}: header {k:?}: {v:?}"
        );
    }
}
