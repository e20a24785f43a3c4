//! The bootstrap's routes, and the request body Envoy buffers for each endpoint.
//!
//! The filter reads a whole request body into memory before it goes upstream (LLM calls,
//! body governance); Envoy holds it meanwhile, up to the route's `request_body_buffer_limit`,
//! and answers 413 past it. One catch-all route keeps the edge default
//! ([`super::Edge::request_buffer_bytes`], 1 MiB); endpoints that need another limit get a
//! route of their own, matched on path and method in tollgate's own match order (most literal
//! segments first, then configuration order), before the catch-all:
//!
//! - an endpoint with KrakenD's `proxy.max_payload` buffers exactly that much (the filter
//!   refuses a larger `content-length` at once with the client's 413; a chunked body larger
//!   than it meets Envoy's 413, shaped for the client the same way);
//! - else KrakenD's service-level `router.max_payload`, when set;
//! - else `ai/llm` endpoints buffer [`super::Edge::llm_request_buffer_bytes`] (16 MiB by
//!   default: agents send prompts of several MB, with images and documents inline; a body
//!   costs about 6.5 times its size in the worker's Wasm VM while it is translated, memory the
//!   VM keeps, so the default stays below Anthropic's own 32 MB request limit; see
//!   docs/agents-api.md for the measured bound), other endpoints the edge default.
//!
//! Every route sends to the cluster the filter names (`cluster_header`). The filter rewrites
//! `:path` before the request goes upstream, which picks the route again; the body is read
//! whole by then, under the limit of the route the client's path chose.

use super::{path_match, Edge};
use crate::config::Gateway;
use crate::routing::CLUSTER_HEADER;
use serde_json::{json, Value};

/// KrakenD's service-level `extra_config.router.max_payload` (0 or absent: none).
fn service_max_payload(doc: &Value) -> Option<u64> {
    doc.get("extra_config")?
        .get("router")?
        .get("max_payload")?
        .as_u64()
        .filter(|n| *n > 0)
}

/// The request body limit of each endpoint, by index.
pub fn endpoint_limits(gw: &Gateway, doc: &Value, e: &Edge) -> Vec<u64> {
    let service = service_max_payload(doc);
    gw.endpoints
        .iter()
        .map(|ep| {
            ep.governance
                .max_payload
                .or(service)
                .unwrap_or(if ep.api.is_some() {
                    e.llm_request_buffer_bytes
                } else {
                    e.request_buffer_bytes
                })
        })
        .collect()
}

fn route(limit: u64, matcher: Value) -> Value {
    json!({
        "match": matcher,
        // The bodies the filter reads whole may exceed the connection buffer limit;
        // Envoy answers 413 past this.
        "request_body_buffer_limit": limit,
        "route": {
            "cluster_header": CLUSTER_HEADER,
            // LLM answers are slow; endpoints with a KrakenD `timeout` override this per
            // request.
            "timeout": "600s",
            "auto_host_rewrite": true,
        },
        "request_headers_to_remove": [CLUSTER_HEADER],
    })
}

/// The routes: one per endpoint whose limit differs from the edge default, then the
/// catch-all.
pub fn routes(gw: &Gateway, doc: &Value, e: &Edge) -> Vec<Value> {
    let limits = endpoint_limits(gw, doc, e);
    let mut order: Vec<usize> = (0..gw.endpoints.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(
            gw.endpoints
                .get(i)
                .map_or(0, |ep| ep.pattern.literal_count()),
        )
    });
    let mut out = Vec::new();
    for i in order {
        let (Some(ep), Some(&limit)) = (gw.endpoints.get(i), limits.get(i)) else {
            continue;
        };
        if limit == e.request_buffer_bytes {
            continue;
        }
        let mut m = path_match(ep.pattern.as_str());
        m["headers"] = json!([{"name": ":method", "string_match": {"exact": ep.method}}]);
        out.push(route(limit, m));
    }
    out.push(route(e.request_buffer_bytes, json!({"prefix": "/"})));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn gw(doc: &Value) -> Gateway {
        Gateway::from_json(&doc.to_string(), &|_| None).unwrap()
    }

    fn llm(endpoint: &str, extra: Value) -> Value {
        json!({"endpoint": endpoint, "method": "POST", "extra_config": extra, "backend": [{
            "host": ["http://127.0.0.1:9"], "url_pattern": "/v1/chat/completions",
            "extra_config": {"ai/llm": {"ollama": {"v1": {}}}}}]})
    }

    #[test]
    fn limits_follow_max_payload_then_the_llm_default() {
        let doc = json!({"version": 3, "endpoints": [
            llm("/v1/chat/completions", json!({})),
            llm("/small/chat/completions", json!({"proxy": {"max_payload": 65536}})),
            {"endpoint": "/plain", "method": "POST", "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/x"}]},
            {"endpoint": "/team/{t}/v1/responses", "method": "POST", "backend": [{
                "host": ["http://127.0.0.1:9"], "url_pattern": "/v1/chat/completions",
                "extra_config": {"ai/llm": {"ollama": {"v1": {}}}}}]}
        ]});
        let e = Edge::default();
        assert_eq!(e.llm_request_buffer_bytes, 16 << 20);
        assert_eq!(
            endpoint_limits(&gw(&doc), &doc, &e),
            [16 << 20, 65536, 1 << 20, 16 << 20]
        );
        let r = routes(&gw(&doc), &doc, &e);
        // Most literal first: /small/chat/completions and /v1/chat/completions (3 segments),
        // then /team/{t}/v1/responses; the plain endpoint keeps the catch-all.
        let got: Vec<(Value, Value)> = r
            .iter()
            .map(|r| (r["match"].clone(), r["request_body_buffer_limit"].clone()))
            .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].0["path"], "/v1/chat/completions");
        assert_eq!(got[0].1, json!(16 << 20));
        assert_eq!(got[1].0["path"], "/small/chat/completions");
        assert_eq!(got[1].1, json!(65536));
        assert_eq!(got[2].0["safe_regex"]["regex"], "/team/[^/]+/v1/responses");
        assert_eq!(got[2].0["headers"][0]["string_match"]["exact"], "POST");
        assert_eq!(got[3], (json!({"prefix": "/"}), json!(1 << 20)));
        // KrakenD's service-level router.max_payload applies where the endpoint sets none.
        let mut doc = doc;
        doc["extra_config"] = json!({"router": {"max_payload": 4_000_000}});
        assert_eq!(
            endpoint_limits(&gw(&doc), &doc, &e),
            [4_000_000, 65536, 4_000_000, 4_000_000]
        );
        // And the edge setting moves the LLM default.
        let mut e = Edge::default();
        e.set("llm_request_buffer_bytes", "33554432").unwrap();
        let doc = json!({"version": 3, "endpoints": [llm("/v1/chat/completions", json!({}))]});
        assert_eq!(endpoint_limits(&gw(&doc), &doc, &e), [32 << 20]);
        assert!(e.set("llm_request_buffer_bytes", "12").is_err());
    }
}
