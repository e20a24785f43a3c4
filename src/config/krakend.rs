//! KrakenD's namespaces that tollgate does not compile into the filter, with what it does with
//! each: a namespace with no effect inside Envoy (KrakenD's own logs, telemetry exporters,
//! documentation) is accepted with one warning line; one that another part of tollgate runs
//! (the fleet limits service) is accepted quietly; every other one changes what a client gets
//! or is a control, and is refused naming its JSON path and why — never accepted and skipped.
//! A namespace KrakenD's schema knows but this table does not is refused too (fail closed).
//!
//! The namespaces tollgate implements are the rows of [`super::namespaces`]; a row there wins
//! over an entry here (a namespace moves from "refused (pending: …)" to implemented by getting
//! its row). `tollgate check --explain` prints the verdict of every namespace of a file
//! ([`explain`]), and `tollgate check` downgrades KrakenD schema errors inside an ignored
//! namespace to that namespace's warning ([`ignored_at`]).

use super::namespaces::{self, Row};
use serde_json::Value;

/// Where an `extra_config` sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Service,
    Endpoint,
    Backend,
}

/// What tollgate does with a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Compiled into the filter (a row of `config::namespaces`).
    Implemented,
    /// Run by another part of tollgate, outside the filter (named).
    Elsewhere(&'static str),
    /// No effect inside Envoy: accepted with one warning line (why).
    Ignored(&'static str),
    /// Refused at configuration (why).
    Refused(&'static str),
}

/// CEL and body templates where tollgate has no row for them (the levels it implements are
/// rows of `config::namespaces`).
const CEL_LEVEL: &str = "CEL checks apply to endpoints and backends in tollgate";
const TEMPLATE_LEVEL: &str = "body templates apply to backends in tollgate: set it on the backend";

const TELEMETRY: &str = "KrakenD's own telemetry; inside Envoy, Envoy's stats, tracing and access log (with tollgate's metrics and usage properties) take its place";
const PLUGIN: &str = "KrakenD Go plugins cannot run inside Envoy";
const LUA: &str = "Lua scripts are not supported by tollgate";
const BACKEND_KIND: &str = "tollgate proxies HTTP backends only";
const MANIPULATION: &str =
    "request/response manipulation is not supported by tollgate (the answer would pass unchanged)";
const FLEET: &str = "the fleet limits service (`tollgate limits`, docs/limits.md)";
const UPSTREAM_AUTH: &str =
    "backend authentication of this kind is not supported by tollgate (use a modifier/martian header)";

/// `(namespace, levels it applies at (None: every level), verdict)`. Only namespaces tollgate
/// does not compile into the filter.
const TABLE: &[(&str, Option<&[Level]>, Verdict)] = &[
    // No effect inside Envoy: one warning line.
    ("telemetry/logging", None, Verdict::Ignored(TELEMETRY)),
    ("telemetry/gelf", None, Verdict::Ignored(TELEMETRY)),
    ("telemetry/logstash", None, Verdict::Ignored(TELEMETRY)),
    ("telemetry/influx", None, Verdict::Ignored(TELEMETRY)),
    ("telemetry/metrics", None, Verdict::Ignored(TELEMETRY)),
    ("telemetry/newrelic", None, Verdict::Ignored(TELEMETRY)),
    ("telemetry/opencensus", None, Verdict::Ignored(TELEMETRY)),
    ("telemetry/opentelemetry", None, Verdict::Ignored(TELEMETRY)),
    ("telemetry/opentelemetry-security", None, Verdict::Ignored(TELEMETRY)),
    ("telemetry/moesif", None, Verdict::Ignored(TELEMETRY)),
    ("documentation/openapi", None, Verdict::Ignored("API documentation for KrakenD's generators; no effect on requests")),
    ("documentation/postman", None, Verdict::Ignored("API documentation for KrakenD's generators; no effect on requests")),
    ("auth/validator", Some(&[Level::Service]), Verdict::Ignored("KrakenD's shared JWK cache; Envoy's jwt_authn caches the keys itself")),
    ("grpc", Some(&[Level::Service]), Verdict::Ignored("the gRPC catalog of backend/grpc backends, which tollgate refuses; no effect alone")),
    ("qos/http-cache", None, Verdict::Ignored("tollgate does not cache answers: every request reaches the backend")),
    // Compiled by the filter too (rows win), run by the fleet limits service; kept for
    // `check --explain` of a build whose rows lack them.
    ("redis", Some(&[Level::Service]), Verdict::Elsewhere(FLEET)),
    ("qos/ratelimit/service/redis", Some(&[Level::Service]), Verdict::Elsewhere(FLEET)),
    ("qos/ratelimit/router/redis", Some(&[Level::Endpoint]), Verdict::Elsewhere(FLEET)),
    // Not supported: refused.
    ("validation/cel", None, Verdict::Refused(CEL_LEVEL)),
    ("security/policies", None, Verdict::Refused(CEL_LEVEL)),
    ("modifier/request-body-generator", None, Verdict::Refused(TEMPLATE_LEVEL)),
    ("modifier/response-body-generator", None, Verdict::Refused(TEMPLATE_LEVEL)),
    ("modifier/body-generator", None, Verdict::Refused(TEMPLATE_LEVEL)),
    ("auth/basic", None, Verdict::Refused("basic authentication is not supported by tollgate (use auth/api-keys or auth/validator)")),
    ("auth/signer", None, Verdict::Refused("token signing is not supported by tollgate")),
    ("auth/revoker", None, Verdict::Refused("token revocation is not supported by tollgate: revoked tokens would pass")),
    ("auth/aws-sigv4", None, Verdict::Refused(UPSTREAM_AUTH)),
    ("auth/gcp", None, Verdict::Refused(UPSTREAM_AUTH)),
    ("auth/ntlm", None, Verdict::Refused(UPSTREAM_AUTH)),
    ("auth/client-credentials", None, Verdict::Refused(UPSTREAM_AUTH)),
    ("security/cors", None, Verdict::Refused("CORS is not handled by tollgate (configure Envoy's CORS filter in front)")),
    ("security/http", None, Verdict::Refused("HTTP security headers and host checks are not applied by tollgate")),
    ("security/bot-detector", None, Verdict::Refused("bot detection is not supported by tollgate: bots would pass")),
    ("qos/ratelimit/service", None, Verdict::Refused("a service-wide rate limit is not supported inside the filter: use qos/ratelimit/router per endpoint, or qos/ratelimit/service/redis with the fleet limits service")),
    ("governance/quota", Some(&[Level::Backend]), Verdict::Refused("a backend-level quota is not supported by tollgate: attach it to the endpoint")),
    ("validation/response-json-schema", Some(&[Level::Backend]), Verdict::Refused("a backend-level response schema is not supported by tollgate: put it on the endpoint")),
    ("qos/ratelimit/proxy", None, Verdict::Refused("a backend-side rate limit is not supported: use qos/ratelimit/router on the endpoint")),
    ("qos/circuit-breaker/http", None, Verdict::Refused("the HTTP-status circuit breaker is not supported: use qos/circuit-breaker")),
    ("modifier/lua-endpoint", None, Verdict::Refused(LUA)),
    ("modifier/lua-proxy", None, Verdict::Refused(LUA)),
    ("modifier/lua-backend", None, Verdict::Refused(LUA)),
    ("plugin/http-server", None, Verdict::Refused(PLUGIN)),
    ("plugin/http-client", None, Verdict::Refused(PLUGIN)),
    ("plugin/middleware", None, Verdict::Refused(PLUGIN)),
    ("plugin/req-resp-modifier", None, Verdict::Refused(PLUGIN)),
    ("modifier/jmespath", None, Verdict::Refused(MANIPULATION)),
    ("modifier/response-body", None, Verdict::Refused(MANIPULATION)),
    ("modifier/response-headers", None, Verdict::Refused(MANIPULATION)),
    ("modifier/request-body-extractor", None, Verdict::Refused(MANIPULATION)),
    ("modifier/request-body-extractor/early", None, Verdict::Refused(MANIPULATION)),
    ("proxy", Some(&[Level::Backend]), Verdict::Refused("shadow backends and flatmap are not supported by tollgate")),
    ("ai/mcp", None, Verdict::Refused("the MCP server is not supported by tollgate")),
    ("websocket", None, Verdict::Refused("WebSocket proxying is not supported by tollgate")),
    ("workflow", None, Verdict::Refused("workflows (nested pipelines) are not supported by tollgate")),
    ("server/static-filesystem", None, Verdict::Refused("serving files is not supported by tollgate")),
    ("server/virtualhost", None, Verdict::Refused("virtual hosts are not supported by tollgate (use Envoy's virtual hosts)")),
    ("backend/amqp/consumer", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/amqp/producer", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/graphql", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/grpc", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/lambda", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/pubsub/publisher", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/pubsub/publisher/kafka", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/pubsub/subscriber", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/pubsub/subscriber/kafka", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/soap", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/static-filesystem", None, Verdict::Refused(BACKEND_KIND)),
    ("backend/http", None, Verdict::Refused("error wrapping (return_error_details) is not supported: tollgate passes the backend's status and body as they are")),
    ("backend/http/client", None, Verdict::Refused("KrakenD's HTTP client settings are not supported (Envoy's cluster settings apply)")),
];

/// The refusal for a namespace in no table.
const UNKNOWN: &str = "namespace not supported by tollgate";

/// What tollgate does with namespace `name` at `level`.
pub fn verdict(level: Level, name: &str) -> Verdict {
    let implemented = match level {
        Level::Service => has_row(namespaces::SERVICE, name),
        Level::Endpoint => has_row(namespaces::ENDPOINT, name),
        Level::Backend => has_row(namespaces::BACKEND, name),
    };
    if implemented {
        return Verdict::Implemented;
    }
    TABLE
        .iter()
        .find(|(n, levels, _)| *n == name && levels.is_none_or(|l| l.contains(&level)))
        .map_or(Verdict::Refused(UNKNOWN), |e| e.2)
}

fn has_row<P>(rows: &[Row<P>], name: &str) -> bool {
    rows.iter().any(|(n, _)| *n == name)
}

/// Where each `extra_config` of a KrakenD document is: `(level, JSON path)`.
pub fn extra_configs(doc: &Value) -> Vec<(Level, String, &Value)> {
    let mut out = Vec::new();
    if let Some(x) = doc.get("extra_config") {
        out.push((Level::Service, "$.extra_config".to_string(), x));
    }
    let endpoints = doc.get("endpoints").and_then(Value::as_array);
    for (i, ep) in endpoints.into_iter().flatten().enumerate() {
        if let Some(x) = ep.get("extra_config") {
            out.push((Level::Endpoint, format!("$.endpoints[{i}].extra_config"), x));
        }
        let backends = ep.get("backend").and_then(Value::as_array);
        for (j, b) in backends.into_iter().flatten().enumerate() {
            if let Some(x) = b.get("extra_config") {
                let at = format!("$.endpoints[{i}].backend[{j}].extra_config");
                out.push((Level::Backend, at, x));
            }
        }
    }
    out
}

/// The namespace an error's JSON path falls in when tollgate ignores that namespace (`None`
/// otherwise): `$.endpoints[0].backend[1].extra_config.telemetry/logging.custom_format` →
/// `telemetry/logging` (ignored at backend level).
pub fn ignored_at(doc: &Value, path: &str) -> Option<String> {
    for (level, at, x) in extra_configs(doc) {
        let Some(rest) = path.strip_prefix(&format!("{at}.")) else {
            continue;
        };
        let Some(map) = x.as_object() else { continue };
        // Namespace keys contain dots rarely, slashes often: the longest key that prefixes it.
        let name = map
            .keys()
            .filter(|k| rest == k.as_str() || rest.starts_with(&format!("{k}.")))
            .max_by_key(|k| k.len())?;
        return match verdict(level, name) {
            Verdict::Ignored(_) => Some(name.clone()),
            _ => None,
        };
    }
    None
}

/// One line of the migration report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub namespace: String,
    pub verdict: Verdict,
    /// Every `extra_config` path holding it.
    pub at: Vec<String>,
}

/// The migration report: every namespace of the document, once per verdict, in document
/// order (`tollgate check --explain`).
pub fn explain(doc: &Value) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    for (level, at, x) in extra_configs(doc) {
        let keys = x.as_object().into_iter().flat_map(|m| m.keys());
        for name in keys.filter(|k| !super::reader::is_meta_key(k)) {
            let v = verdict(level, name);
            match out
                .iter_mut()
                .find(|l| l.namespace == *name && l.verdict == v)
            {
                Some(line) => line.at.push(at.clone()),
                None => out.push(Line {
                    namespace: name.clone(),
                    verdict: v,
                    at: vec![at.clone()],
                }),
            }
        }
    }
    // KrakenD 3.0's LLM streaming is an endpoint field, not a namespace: its own line.
    let endpoints = doc.get("endpoints").and_then(Value::as_array);
    let streaming: Vec<String> = (endpoints.into_iter().flatten().enumerate())
        .filter(|(_, e)| e.get("output_encoding").and_then(Value::as_str) == Some("streaming"))
        .map(|(i, _)| format!("$.endpoints[{i}]"))
        .collect();
    if !streaming.is_empty() {
        out.push(Line {
            namespace: "output_encoding \"streaming\" (KrakenD 3.0 LLM streaming, ai/llm.format)"
                .into(),
            verdict: Verdict::Implemented,
            at: streaming,
        });
    }
    out
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, why) = match self.verdict {
            Verdict::Implemented => ("implemented", ""),
            Verdict::Elsewhere(who) => ("implemented outside the filter", who),
            Verdict::Ignored(why) => ("ignored inside Envoy (warning)", why),
            Verdict::Refused(why) => ("refused", why),
        };
        write!(f, "{}: {what}", self.namespace)?;
        if !why.is_empty() {
            write!(f, ": {why}")?;
        }
        write!(f, " [{}]", self.at.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_win_then_the_table_then_refusal() {
        assert_eq!(
            verdict(Level::Endpoint, "qos/ratelimit/router"),
            Verdict::Implemented
        );
        assert!(matches!(
            verdict(Level::Backend, "telemetry/logging"),
            Verdict::Ignored(_)
        ));
        assert!(matches!(
            verdict(Level::Service, "auth/validator"),
            Verdict::Ignored(_)
        ));
        assert_eq!(
            verdict(Level::Endpoint, "auth/validator"),
            Verdict::Implemented
        );
        // The fleet limits: compiled by the filter (pools, Redis rate limits), run by the
        // limits service.
        assert_eq!(verdict(Level::Service, "redis"), Verdict::Implemented);
        assert_eq!(
            verdict(Level::Endpoint, "validation/cel"),
            Verdict::Implemented
        );
        assert_eq!(
            verdict(Level::Endpoint, "modifier/response-body-generator"),
            Verdict::Refused(TEMPLATE_LEVEL)
        );
        assert_eq!(
            verdict(Level::Backend, "tollgate/made-up"),
            Verdict::Refused(UNKNOWN)
        );
    }

    /// Every namespace KrakenD's v2.13 schema lists at a level has a verdict of its own there
    /// (none falls through to "not supported" by omission).
    #[test]
    fn every_krakend_namespace_has_a_verdict() {
        let schema: Value =
            serde_json::from_str(include_str!("../../schema/krakend-v2.13.json")).unwrap();
        let defs = &schema["$defs"];
        for (level, def) in [
            (Level::Service, "service_extra_config"),
            (Level::Endpoint, "endpoint_extra_config"),
            (Level::Backend, "backend_extra_config"),
        ] {
            let url = format!("https://www.krakend.io/schema/v2.13/{def}.json");
            let props = defs[&url]["properties"].as_object().unwrap();
            assert!(props.len() > 20, "{def}");
            for name in props.keys() {
                assert_ne!(
                    verdict(level, name),
                    Verdict::Refused(UNKNOWN),
                    "{def}: {name}"
                );
            }
        }
    }

    #[test]
    fn ignored_namespaces_are_found_under_error_paths() {
        let doc = json!({"extra_config": {"telemetry/logging": {}, "security/cors": {}},
            "endpoints": [{"backend": [{"extra_config": {"telemetry/logging": {"custom_format": "x"}}}]}]});
        let at = |p: &str| ignored_at(&doc, p);
        assert_eq!(
            at("$.endpoints[0].backend[0].extra_config.telemetry/logging").as_deref(),
            Some("telemetry/logging")
        );
        assert_eq!(
            at("$.extra_config.telemetry/logging.level").as_deref(),
            Some("telemetry/logging")
        );
        assert_eq!(at("$.extra_config.security/cors.allow_origins"), None);
        assert_eq!(at("$.extra_config"), None);
        assert_eq!(at("$.endpoints[0].backend[0].url_pattern"), None);
        assert_eq!(at("$.extra_config.telemetry/loggingx"), None);
    }

    #[test]
    fn explain_lists_each_namespace_once_per_verdict() {
        let doc = json!({"extra_config": {"telemetry/logging": {}, "@comment": "x"},
            "endpoints": [
                {"extra_config": {"qos/ratelimit/router": {}, "validation/cel": []}, "backend": [
                    {"extra_config": {"telemetry/logging": {}}}]},
                {"extra_config": {"qos/ratelimit/router": {}}, "backend": []}]});
        let lines: Vec<String> = explain(&doc).iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with(
                "telemetry/logging: ignored inside Envoy (warning): KrakenD's own telemetry"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("[$.extra_config, $.endpoints[0].backend[0].extra_config]"));
        assert_eq!(
            lines[1],
            "qos/ratelimit/router: implemented [$.endpoints[0].extra_config, $.endpoints[1].extra_config]"
        );
        assert!(
            lines[2].starts_with("validation/cel: implemented"),
            "{}",
            lines[2]
        );
        // KrakenD's LLM streaming, an endpoint field, has its own line.
        let doc = json!({"endpoints": [{"backend": []}, {"output_encoding": "streaming", "backend": []}]});
        let lines: Vec<String> = explain(&doc).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            ["output_encoding \"streaming\" (KrakenD 3.0 LLM streaming, ai/llm.format): implemented [$.endpoints[1]]"]
        );
    }
}
