use super::*;
use crate::host::mock::MockHost;
use serde_json::json;

fn gateway() -> Rc<Gateway> {
    let doc = json!({
        "version": 3,
        "timeout": "45s",
        "endpoints": [
            {"endpoint": "/llm/{provider}/chat", "method": "POST", "backend": [{
                "host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/{provider}/completions",
                "extra_config": {"modifier/martian": {"fifo.Group": {"scope": ["request", "response"], "modifiers": [
                    {"header.Modifier": {"scope": ["request"], "name": "Authorization", "value": "Bearer {{ env \"KEY\" }}"}},
                    {"header.Append": {"scope": ["request"], "name": "X-Tag", "value": "gw"}},
                    {"header.Blacklist": {"scope": ["response"], "names": ["Server"]}},
                    {"header.Modifier": {"scope": ["response"], "name": "X-Gateway", "value": "tollgate"}}
                ]}}}
            }]},
            {"endpoint": "/status", "method": "GET", "timeout": "2s", "backend": [{
                "host": ["https://api.example.com"], "url_pattern": "/health", "method": "POST"}]}
        ]
    });
    let env = |n: &str| (n == "KEY").then(|| "sk-provider".to_string());
    Rc::new(Gateway::from_value(&doc, &env).unwrap())
}

#[test]
fn routes_rewrites_and_replaces_client_credentials() {
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request(
        "POST",
        "/llm/openai/chat?trace=1&x=%20",
        &[
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client2"),
            ("x-tag", "client"),
            (CLUSTER_HEADER, "evil"),
        ],
    );
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Continue);
    assert!(h.reply.is_none());
    assert_eq!(
        h.request_values(":path"),
        vec!["/v1/openai/completions?trace=1&x=%20"]
    );
    assert_eq!(h.request_values(":authority"), vec!["127.0.0.1:9001"]);
    assert_eq!(
        h.request_values("authorization"),
        vec!["Bearer sk-provider"]
    );
    assert!(h.request_values("x-api-key").is_empty());
    assert_eq!(h.request_values("x-tag"), vec!["client", "gw"]);
    assert_eq!(
        h.request_values(CLUSTER_HEADER),
        vec!["tg_http_127.0.0.1_9001"]
    );
    assert_eq!(h.request_values(TIMEOUT_HEADER), vec!["45000"]);

    let mut h =
        h.with_response_headers(&[("server", "upstream"), ("content-type", "application/json")]);
    assert_eq!(flow.on_response_headers(&mut h, false), Action::Continue);
    assert!(h.response_values("server").is_empty());
    assert_eq!(h.response_values("x-gateway"), vec!["tollgate"]);
}

#[test]
fn backend_method_and_endpoint_timeout() {
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request("GET", "/status", &[]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Continue);
    assert_eq!(h.request_values(":method"), vec!["POST"]);
    assert_eq!(h.request_values(":path"), vec!["/health"]);
    assert_eq!(h.request_values(":authority"), vec!["api.example.com"]);
    assert_eq!(h.request_values(TIMEOUT_HEADER), vec!["2000"]);
}

#[test]
fn unknown_path_is_404_and_wrong_method_405_in_openai_shape() {
    let mut flow = Flow::new(gateway());
    let mut h = MockHost::request("GET", "/nope?x=1", &[("authorization", "Bearer c")]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    let r = h.reply.clone().unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "no endpoint matches GET /nope", "type": "invalid_request_error", "param": null, "code": "not_found"}})
    );
    assert!(h.request_values(CLUSTER_HEADER).is_empty());

    let mut h = MockHost::request("GET", "/llm/openai/chat", &[]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    let r = h.reply.unwrap();
    assert_eq!(r.status, 405);
    assert!(r.headers.contains(&("allow".into(), "POST".into())));
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
}
