//! KrakenD configuration (version 3) compiled into an immutable [`Gateway`]: this file holds
//! the compiled data (endpoints, backends) and what the request path asks of it.
//!
//! The filter receives the whole KrakenD JSON as its plugin configuration. Reading is
//! strict where tollgate acts (unknown fields in the namespaces it implements are errors,
//! named by JSON path) and tolerant where KrakenD has settings that do not apply inside
//! Envoy (kept, ignored, and reported once as warnings). [`reader`] and [`mod@env`] are the
//! vocabulary every domain compiles its namespaces with (they sit below the domains);
//! `compile.rs` assembles the gateway, and [`namespaces`] is the table of namespaces, each
//! compiled by its domain.

mod compile;
pub mod env;
pub mod krakend;
pub mod namespaces;
pub mod reader;

use crate::cost::{CostConfig, QuotaAttach};
use crate::host::Host;
use crate::providers::backend::LlmBackend;
use crate::providers::{EndpointKind, FrontDoor};
use crate::routing::forward::Forward;
pub use crate::routing::martian::{HeaderOp, HeaderValue, Modifiers};
use crate::routing::{HostUrl, PathPattern, UrlPattern};
use crate::security::config::EndpointSecurity;
pub use reader::{parse_duration_ms, ConfigError};

/// The compiled gateway: everything the request path needs, nothing parsed at request time.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub endpoints: Vec<Endpoint>,
    /// Quotas, prices and usage reporting.
    pub cost: CostConfig,
    /// The fleet limits' pools and how the limits service is reached.
    pub fleet: crate::limits::client::Settings,
    /// Things accepted but ignored (unknown namespaces, unsupported KrakenD settings);
    /// logged once at configure.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub pattern: PathPattern,
    pub method: String,
    /// One backend, or several `ai/llm` backends among which the client's model chooses.
    pub backends: Vec<Backend>,
    /// Set when the backends are LLMs: the API clients speak to this endpoint (Anthropic
    /// Messages on a path ending in `/messages`, else OpenAI Chat Completions).
    pub api: Option<FrontDoor>,
    /// What an LLM endpoint serves, by the end of its path (Chat Completions, Messages,
    /// `count_tokens`, Responses, embeddings); `ChatCompletions` for plain endpoints.
    pub kind: EndpointKind,
    /// Upstream timeout (endpoint `timeout`, else the service `timeout`).
    pub timeout_ms: Option<u64>,
    /// The budget this endpoint charges (its `governance/quota`, else the service's).
    pub quota: Option<QuotaAttach>,
    /// Rate limits, validation, templates ([`crate::governance`]).
    pub governance: crate::governance::Policy,
    /// Client auth, PII masking, exfiltration and prompt guards ([`crate::security`]).
    pub security: EndpointSecurity,
    /// What of the client's request goes upstream (`input_headers`,
    /// `input_query_strings`); each backend holds its own, narrowed by its lists.
    pub forward: Forward,
    /// Set on MCP endpoints the gateway answers itself: an `ai/mcp` server, or an
    /// `ai/mcp-federation` of the backends ([`crate::mcp`]).
    pub mcp: Option<crate::mcp::McpEndpoint>,
    /// KrakenD 3.0 `output_encoding: "streaming"` on an `ai/llm` endpoint: a request in
    /// KrakenD's AI contract is answered as a stream, in each backend's `ai/llm.format` (else
    /// its vendor's own stream format); the door whose error object answers before the stream
    /// starts (Anthropic's when every backend streams Anthropic's format, else KrakenD's).
    pub llm_stream: Option<FrontDoor>,
}

impl Endpoint {
    /// The backend for a client's model: an alias or configured model first, then a
    /// pass-through backend (no configured model), then the default; a single backend
    /// without aliases takes every model. `None`: no backend serves this model.
    pub fn backend_for(&self, model: &str) -> Option<usize> {
        let all: Vec<usize> = (0..self.backends.len()).collect();
        self.model_backend(model, &all)
    }

    /// Model routing restricted to `eligible` backends (aliases/model, then pass-through, then
    /// default; a single one without aliases takes every model, and a single one any request
    /// that names none: KrakenD's AI contract).
    pub fn model_backend(&self, model: &str, eligible: &[usize]) -> Option<usize> {
        let llm = |i: &usize| self.backends.get(*i).and_then(|b| b.llm.as_ref());
        if let [only] = eligible {
            if model.is_empty() || llm(only).is_none_or(|l| l.aliases.is_empty()) {
                return Some(*only);
            }
        }
        let by = |f: &dyn Fn(&LlmBackend) -> bool| {
            eligible.iter().copied().find(|i| llm(i).is_some_and(f))
        };
        by(&|l| l.claims(model))
            .or_else(|| by(&|l| l.model.is_none() && l.aliases.is_empty()))
            .or_else(|| by(&|l| l.default))
    }

    /// Whether routing beyond "the client's model chooses" is configured (conditions,
    /// weights, failover, breakers).
    pub fn is_routed(&self) -> bool {
        self.governance.routing != crate::governance::routing::Routing::default()
            || self
                .backends
                .iter()
                .any(|b| b.rules.conditional.is_some() || b.rules.breaker.is_some())
    }

    /// The client's API on this endpoint: the `ai/llm` endpoint's door; for a plain endpoint
    /// named after a chat API, that API's (Anthropic's on `/messages`, OpenAI's on
    /// `/chat/completions`), else KrakenD's (its refusals are OpenAI's error object, and a
    /// body the configuration wrote goes as is: `security/policies` `error.body`).
    pub fn front_door(&self) -> FrontDoor {
        let path = self.pattern.as_str();
        match self.api {
            // KrakenD's LLM streaming in Anthropic's format: its clients read Anthropic's errors.
            Some(_) if self.llm_stream == Some(FrontDoor::Anthropic) => FrontDoor::Anthropic,
            Some(front) => front,
            None if path.ends_with("/messages") => FrontDoor::Anthropic,
            None if path.ends_with("/chat/completions") => FrontDoor::OpenAi,
            None => FrontDoor::KrakenD,
        }
    }

    /// Whether the request's data is captured for CEL checks and policies
    /// ([`crate::routing::data::RequestData`]).
    pub fn reads_request_data(&self) -> bool {
        !self.security.checks.is_empty()
            || self.backends.iter().any(|b| {
                !b.checks.is_empty()
                    || b.body.is_some()
                    || b.answer.is_some()
                    || matches!(
                        b.rules.conditional,
                        Some(crate::governance::routing::Conditional::Policy(_))
                    )
            })
    }

    /// The single backend of a non-LLM endpoint (the first otherwise).
    pub fn backend(&self) -> Option<&Backend> {
        self.backends.first()
    }

    /// Whether MCP sessions are bound to their caller here: an MCP endpoint the gateway
    /// answers (unless stateless), or a relay whose backend gets `Mcp-Session-Id`.
    pub fn keeps_mcp_sessions(&self) -> bool {
        match &self.mcp {
            Some(m) => !m.info().stateless,
            None => self.relays_mcp_sessions(),
        }
    }

    /// A plain endpoint whose backend gets the client's `Mcp-Session-Id` (an MCP relay).
    pub fn relays_mcp_sessions(&self) -> bool {
        self.api.is_none()
            && self.mcp.is_none()
            && self
                .backend()
                .is_some_and(|b| b.forward.client_header(crate::mcp::session::HEADER))
    }

    /// `/v1/chat/completions` → `/v1/models`: where the model list of this endpoint is served.
    pub fn models_path(&self) -> Option<String> {
        let path = self.pattern.as_str();
        let base = match self.kind {
            EndpointKind::ChatCompletions => path.strip_suffix("/chat/completions"),
            kind => path.strip_suffix(kind.suffix()),
        }?;
        Some(format!("{base}/models"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub hosts: Vec<HostUrl>,
    pub url_pattern: UrlPattern,
    /// Method to use upstream when it differs from the endpoint's.
    pub method: Option<String>,
    /// Envoy cluster for `hosts` ([`crate::routing::cluster_name`]).
    pub cluster: String,
    pub modifiers: Modifiers,
    /// `ai/llm`: the backend is an LLM provider; requests are translated to its API.
    pub llm: Option<LlmBackend>,
    /// `backend/conditional`, `qos/circuit-breaker` ([`crate::governance::routing`]).
    pub rules: crate::governance::routing::BackendRules,
    /// What of the client's request goes to this backend ([`Forward`]).
    pub forward: Forward,
    /// `ai/mcp-upstream`: on a federating MCP endpoint, the upstream server's name.
    pub mcp_upstream: Option<String>,
    /// `security/policies` and `validation/cel` ([`crate::security::policy`]).
    pub checks: std::rc::Rc<crate::security::policy::Checks>,
    /// `modifier/request-body-generator`: the body a plain backend gets.
    pub body: Option<std::rc::Rc<crate::governance::generator::BodyGenerator>>,
    /// `modifier/response-body-generator`: the answer the client gets from the backend's.
    pub answer: Option<std::rc::Rc<crate::governance::generator::BodyGenerator>>,
}

impl Backend {
    /// The `:authority` sent upstream: the first host (Envoy's `auto_host_rewrite`
    /// corrects it when a list load-balances over differently named hosts).
    pub fn authority(&self) -> String {
        self.hosts
            .first()
            .map(HostUrl::authority)
            .unwrap_or_default()
    }
}

/// Reads the process environment (the Wasm VM's, inside Envoy).
/// An empty variable counts as missing: an empty provider key is always a mistake.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Gateway {
    /// Creates the shared-data keys of every rate limit and circuit breaker (configure time,
    /// before traffic: see `governance::ratelimit`).
    pub fn init_shared<H: Host + ?Sized>(&self, h: &mut H) {
        for ep in &self.endpoints {
            for rl in ep.governance.rate_limits() {
                crate::governance::ratelimit::init_shared(h, rl);
            }
            let breakers = ep.backends.iter().filter_map(|b| b.rules.breaker.as_ref());
            crate::governance::routing::init_breakers(h, breakers);
            if let Some(m) = &ep.mcp {
                let limits = m.policy.rules.iter().filter_map(|r| r.rate_limit.as_ref());
                limits.for_each(|rl| crate::governance::ratelimit::init_shared(h, rl));
            }
        }
        if self.endpoints.iter().any(Endpoint::keeps_mcp_sessions) {
            crate::mcp::session::init_shared(h);
        }
    }

    /// Whether anything is kept in Redis through the limits service (a quota naming a pool, a
    /// Redis rate limit): the hosts then keep a long-lived sender for charges.
    pub fn uses_fleet(&self) -> bool {
        let quotas = self.cost.quotas.iter();
        quotas
            .into_iter()
            .any(|q| q.store != crate::limits::client::Store::Local)
            || self
                .endpoints
                .iter()
                .any(|e| !e.governance.fleet_rate_limits.is_empty())
    }

    /// Every distinct backend host list with its cluster name (for the bootstrap generator).
    pub fn clusters(&self) -> Vec<(&str, &[HostUrl])> {
        let mut out: Vec<(&str, &[HostUrl])> = Vec::new();
        let backends = self.endpoints.iter().flat_map(|e| &e.backends);
        let tools = self.endpoints.iter().filter_map(|e| match &e.mcp {
            Some(crate::mcp::McpEndpoint {
                kind: crate::mcp::Kind::Server(s),
                ..
            }) => Some(
                s.tools
                    .iter()
                    .map(|t| (t.workflow.cluster.as_str(), t.workflow.hosts.as_slice())),
            ),
            _ => None,
        });
        let all = backends
            .map(|b| (b.cluster.as_str(), b.hosts.as_slice()))
            .chain(tools.flatten());
        for (name, hosts) in all {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, hosts));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
