//! What of the client's request goes upstream: KrakenD's `input_headers` and
//! `input_query_strings` (endpoint level, narrowed by a backend's own lists).
//!
//! KrakenD's rule (its request builder): without `input_headers` only `Content-Type` is
//! forwarded; with a list, exactly the listed headers (case-insensitive); `["*"]` forwards
//! all. Without `input_query_strings` no query parameter is forwarded; with a list, the
//! listed names (case-sensitive); `["*"]` all. tollgate adds:
//! - transport headers Envoy manages are kept ([`TRANSPORT`]);
//! - headers the gateway writes itself for the endpoint (the API-key role, JWT claims:
//!   `owned`) are kept; their client-sent copies are removed before authentication;
//! - never forwarded, listed or `*`: client credentials, the API-key identifier, Envoy's
//!   `x-envoy-*` control headers and the routing header.

use super::CLUSTER_HEADER;
use crate::support::encoding::form_decode;

/// Headers kept whatever the lists say: framing, and what Envoy itself writes at the edge
/// (`use_remote_address`: the client address, the scheme, a request id Envoy generated).
pub const TRANSPORT: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "x-envoy-external-address",
];

/// Client credential headers of every front door (OpenAI, Anthropic, Azure, Gemini).
/// They authenticate the client to the gateway and are never forwarded.
pub const CLIENT_CREDENTIALS: &[&str] =
    &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// A KrakenD forwarding list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// `["*"]`.
    All,
    /// These names (headers lowercase, query parameters as written).
    Only(Vec<String>),
}

impl Allow {
    /// A list from the configuration; `*` anywhere forwards all.
    pub fn from_list(list: &[&str], lowercase: bool) -> Self {
        if list.contains(&"*") {
            return Allow::All;
        }
        let name = |s: &&str| {
            if lowercase {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        Allow::Only(list.iter().map(name).collect())
    }

    pub fn allows(&self, name: &str) -> bool {
        match self {
            Allow::All => true,
            Allow::Only(names) => names.iter().any(|n| n == name),
        }
    }

    /// KrakenD's second-level filter: what both lists let through.
    pub fn narrow(&self, inner: Option<&Allow>) -> Allow {
        match (self, inner) {
            (a, None | Some(Allow::All)) => a.clone(),
            (Allow::All, Some(b)) => b.clone(),
            (Allow::Only(a), Some(Allow::Only(b))) => {
                Allow::Only(a.iter().filter(|n| b.contains(n)).cloned().collect())
            }
        }
    }
}

/// The forwarding policy toward one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub headers: Allow,
    pub query: Allow,
    /// Headers the gateway writes for this endpoint (lowercase).
    pub owned: Vec<String>,
    /// Never forwarded: client credential headers and the API-key identifier (lowercase).
    pub never: Vec<String>,
}

impl Default for Forward {
    /// KrakenD's defaults: `Content-Type` only, no query parameter.
    fn default() -> Self {
        Self {
            headers: Allow::Only(vec!["content-type".into()]),
            query: Allow::Only(Vec::new()),
            owned: Vec::new(),
            never: Vec::new(),
        }
    }
}

impl Forward {
    /// Endpoint level: `input_headers` and `input_query_strings` as configured (absent or
    /// empty: KrakenD's defaults).
    pub fn new(headers: Option<&[&str]>, query: Option<&[&str]>) -> Self {
        let d = Self::default();
        Self {
            headers: headers
                .filter(|l| !l.is_empty())
                .map_or(d.headers, |l| Allow::from_list(l, true)),
            query: query
                .filter(|l| !l.is_empty())
                .map_or(d.query, |l| Allow::from_list(l, false)),
            ..d
        }
    }

    /// This policy narrowed by a backend's own lists.
    pub fn narrow(&self, headers: Option<&Allow>, query: Option<&Allow>) -> Self {
        Self {
            headers: self.headers.narrow(headers),
            query: self.query.narrow(query),
            ..self.clone()
        }
    }

    /// Whether a client header (lowercase name) may go to the backend as the client sent it.
    pub fn client_header(&self, name: &str) -> bool {
        !name.starts_with(':')
            && !name.starts_with("x-envoy-")
            && name != CLUSTER_HEADER
            && !self.never.iter().any(|n| n == name)
            && self.headers.allows(name)
    }

    /// Whether a header of the request as it stands stays on the proxied request.
    pub fn keeps(&self, name: &str) -> bool {
        name.starts_with(':')
            || TRANSPORT.contains(&name)
            || self.owned.iter().any(|n| n == name)
            || self.client_header(name)
    }

    /// The client's query string reduced to the listed parameters (names compared after
    /// percent-decoding, as KrakenD parses them); None when nothing is left.
    pub fn query(&self, query: &str) -> Option<String> {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| {
                let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
                self.query.allows(&form_decode(name))
            })
            .collect();
        (!kept.is_empty()).then(|| kept.join("&"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn krakend_defaults_content_type_only_no_query() {
        let f = Forward::new(None, None);
        assert!(f.keeps("content-type"));
        for name in [
            "x-role",
            "x-http-method-override",
            "cookie",
            "user-agent",
            "accept",
        ] {
            assert!(!f.keeps(name), "{name}");
        }
        assert!(f.keeps(":path") && f.keeps("content-length") && f.keeps("x-request-id"));
        assert_eq!(f.query("admin=true&a=1"), None);
        assert_eq!(Forward::new(Some(&[]), Some(&[])), f);
    }

    #[test]
    fn lists_star_and_never() {
        let mut f = Forward::new(Some(&["X-Tenant", "Anthropic-Beta"]), Some(&["page", "Q"]));
        assert!(f.keeps("x-tenant") && f.keeps("anthropic-beta"));
        assert!(!f.keeps("content-type"), "a list replaces the default");
        assert_eq!(
            f.query("page=2&Page=3&q=1&Q=4&admin=true").as_deref(),
            Some("page=2&Q=4")
        );
        assert_eq!(
            f.query("%70age=2&p%61ge").as_deref(),
            Some("%70age=2&p%61ge")
        );
        f.never = vec!["x-gateway-key".into(), "authorization".into()];
        f.owned = vec!["x-role".into()];
        f.headers = Allow::from_list(&["*"], true);
        assert!(f.keeps("x-anything") && f.keeps("x-role"));
        for name in [
            "x-gateway-key",
            "authorization",
            "x-envoy-upstream-rq-timeout-ms",
            "x-envoy-retry-on",
            CLUSTER_HEADER,
        ] {
            assert!(!f.keeps(name) && !f.client_header(name), "{name}");
        }
        assert!(!f.client_header(":path"));
    }

    #[test]
    fn backend_lists_narrow_the_endpoint() {
        let ep = Forward::new(Some(&["a", "b"]), Some(&["*"]));
        let b = ep.narrow(Some(&Allow::from_list(&["B", "c"], true)), None);
        assert_eq!(b.headers, Allow::Only(vec!["b".into()]));
        assert_eq!(b.query, Allow::All);
        let star = Forward::new(Some(&["*"]), None);
        let n = star.narrow(Some(&Allow::Only(vec!["x".into()])), Some(&Allow::All));
        assert_eq!(n.headers, Allow::Only(vec!["x".into()]));
        assert_eq!(n.query, Allow::Only(vec![]));
    }
}
