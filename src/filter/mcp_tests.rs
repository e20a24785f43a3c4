//! MCP endpoints through `Flow` over `MockHost`: the protocol answered by the gateway, tool
//! calls as callouts, federation, sessions bound to callers, and the per-tool controls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use crate::config::Gateway;
use crate::filter::{Action, Flow};
use crate::host::mock::MockHost;
use serde_json::{json, Value};
use std::rc::Rc;

fn gateway() -> Rc<Gateway> {
    let doc = json!({
        "version": 3,
        "extra_config": {
            "auth/api-keys": {"keys": [{"key": "k-alice", "roles": ["analyst"]}, {"key": "k-bob", "roles": ["guest"]}]},
            "ai/mcp": {"servers": [{"name": "stories", "title": "Stories", "version": "1.0.0", "json_response": true,
                "tools": [
                    {"name": "story", "title": "Story", "description": "A story by id",
                     "input_schema": {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}}, "required": ["id"]},
                     "workflow": {"endpoint": "/__mcp/story/{id}", "backend": [{"host": ["http://127.0.0.1:9101"], "url_pattern": "/stories/{id}",
                        "extra_config": {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "Authorization", "value": "Bearer tool-secret-123456"}}}}]}},
                    {"name": "admin", "title": "Admin", "description": "Admin only",
                     "workflow": {"backend": [{"host": ["http://127.0.0.1:9101"], "url_pattern": "/admin", "method": "POST"}]}}
                ]}]}
        },
        "endpoints": [
            {"endpoint": "/mcp", "method": "POST", "backend": [{"host": ["http://ignore"], "url_pattern": "/ignore"}],
             "extra_config": {"ai/mcp": {"server_name": "stories"}, "auth/api-keys": {"roles": []},
                "security/pii": {"detectors": ["email"], "action": "mask", "restore": true},
                "security/exfiltration": {"detectors": ["aws_access_key"], "action": "block"},
                "ai/mcp-tools": {"rules": [{"tools": ["story"]}, {"tools": ["admin"], "roles": ["analyst"], "rate_limit": {"client_max_rate": 1, "every": "1m"}}]}}},
            {"endpoint": "/hub", "method": "POST",
             "backend": [
                {"host": ["http://127.0.0.1:9201"], "url_pattern": "/mcp", "extra_config": {"ai/mcp-upstream": {"name": "weather"},
                    "modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "X-Api-Token", "value": "weather-token"}}}},
                {"host": ["http://127.0.0.1:9202"], "url_pattern": "/mcp", "extra_config": {"ai/mcp-upstream": {"name": "files"}}}],
             "extra_config": {"ai/mcp-federation": {"name": "hub", "title": "Hub", "version": "2", "stateless": true},
                "auth/api-keys": {"roles": []},
                "ai/mcp-tools": {"rules": [{"tools": ["weather__*"]}, {"tools": ["files__read"], "roles": ["analyst"]}]}}},
            {"endpoint": "/relay", "method": "POST", "input_headers": ["Content-Type", "Mcp-Session-Id", "Accept"],
             "backend": [{"host": ["http://127.0.0.1:9301"], "url_pattern": "/mcp"}],
             "extra_config": {"auth/api-keys": {"roles": []}}}
        ]
    });
    Rc::new(Gateway::from_value(&doc, &|_| None).unwrap())
}

/// A JSON-RPC POST through the flow: the host after the body stage.
fn post(flow: &mut Flow, path: &str, key: &str, session: Option<&str>, msg: Value) -> MockHost {
    let mut headers = vec![
        ("authorization", format!("Bearer {key}")),
        ("accept", "application/json, text/event-stream".to_string()),
    ];
    if let Some(s) = session {
        headers.push(("mcp-session-id", s.to_string()));
    }
    let list: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = msg.to_string();
    let mut h = MockHost::request("POST", path, &list).with_body(body.as_bytes());
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    flow.on_request_body(&mut h, body.len(), true);
    h
}

/// The JSON-RPC message of a reply, whether JSON or an SSE stream.
fn msg(r: &crate::host::mock::Reply) -> Value {
    let ct = r
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    crate::mcp::jsonrpc::read_answer(ct, &r.body)
        .pop()
        .unwrap_or(Value::Null)
}

fn rpc(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn session_of(h: &MockHost) -> String {
    let r = h.reply.as_ref().unwrap();
    r.headers
        .iter()
        .find(|(k, _)| k == "mcp-session-id")
        .unwrap()
        .1
        .clone()
}

/// Opens a session for `key` on the stateful server.
fn open(gw: &Rc<Gateway>, key: &str) -> (MockHost, String) {
    let h = post(
        &mut Flow::new(Rc::clone(gw)),
        "/mcp",
        key,
        None,
        rpc(1, "initialize", json!({"protocolVersion": "2025-06-18"})),
    );
    let sid = session_of(&h);
    (h, sid)
}

/// A message on an open session, in the store `from` left (another worker of the Envoy).
fn send(gw: &Rc<Gateway>, from: &MockHost, key: &str, sid: &str, msg: Value) -> (Flow, MockHost) {
    let mut flow = Flow::new(Rc::clone(gw));
    let auth = format!("Bearer {key}");
    let body = msg.to_string();
    let mut h = MockHost::request(
        "POST",
        "/mcp",
        &[("authorization", &auth), ("mcp-session-id", sid)],
    )
    .with_body(body.as_bytes());
    h.shared = Rc::clone(&from.shared);
    flow.on_request_headers(&mut h, false);
    flow.on_request_body(&mut h, body.len(), true);
    (flow, h)
}

#[test]
fn the_gateway_answers_initialize_ping_and_a_filtered_tools_list() {
    let gw = gateway();
    let (opened, sid) = open(&gw, "k-bob");
    let r = opened.reply.as_ref().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(r.json()["result"]["serverInfo"]["name"], "stories");
    let (_, h) = send(&gw, &opened, "k-bob", &sid, rpc(2, "ping", json!({})));
    assert_eq!(h.reply.unwrap().json()["result"], json!({}));
    let (_, h) = send(&gw, &opened, "k-bob", &sid, rpc(3, "tools/list", json!({})));
    let tools = h.reply.unwrap().json()["result"]["tools"].clone();
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["story"], "a guest does not see the admin tool");
    let (_, h) = send(
        &gw,
        &opened,
        "k-bob",
        &sid,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert_eq!(h.reply.unwrap().status, 202);
}

#[test]
fn sessions_are_bound_to_the_caller_who_opened_them() {
    let gw = gateway();
    let (opened, sid) = open(&gw, "k-alice");
    let with_store = |key: &str, session: Option<&str>| {
        let mut flow = Flow::new(Rc::clone(&gw));
        let mut headers = vec![("authorization".to_string(), format!("Bearer {key}"))];
        if let Some(s) = session {
            headers.push(("mcp-session-id".to_string(), s.to_string()));
        }
        let list: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = rpc(5, "tools/list", json!({})).to_string();
        let mut h = MockHost::request("POST", "/mcp", &list).with_body(body.as_bytes());
        h.shared = Rc::clone(&opened.shared);
        flow.on_request_headers(&mut h, false);
        flow.on_request_body(&mut h, body.len(), true);
        h.reply.unwrap()
    };
    assert_eq!(with_store("k-alice", Some(&sid)).status, 200);
    let stolen = with_store("k-bob", Some(&sid));
    assert_eq!(
        (stolen.status, stolen.json()["error"]["code"].clone()),
        (404, json!(-32001))
    );
    let missing = with_store("k-alice", None);
    assert_eq!(
        (missing.status, missing.json()["error"]["code"].clone()),
        (400, json!(-32600))
    );
    let made_up = with_store("k-alice", Some("0123456789abcdef0123456789abcdef"));
    assert_eq!(made_up.status, 404);
}

/// A tools/call on an open session of `key`: the host after the body stage.
fn call_tool(gw: &Rc<Gateway>, key: &str, name: &str, args: Value) -> (Flow, MockHost) {
    let (opened, sid) = open(gw, key);
    let mut flow = Flow::new(Rc::clone(gw));
    let body = rpc(7, "tools/call", json!({"name": name, "arguments": args})).to_string();
    let auth = format!("Bearer {key}");
    let mut h = MockHost::request(
        "POST",
        "/mcp",
        &[
            ("authorization", &auth),
            ("mcp-session-id", &sid),
            ("x-trace", "t"),
        ],
    )
    .with_body(body.as_bytes());
    h.shared = Rc::clone(&opened.shared);
    flow.on_request_headers(&mut h, false);
    flow.on_request_body(&mut h, body.len(), true);
    (flow, h)
}

#[test]
fn a_tool_call_runs_its_workflow_backend_and_answers_a_call_tool_result() {
    let gw = gateway();
    let (mut flow, mut h) = call_tool(&gw, "k-bob", "story", json!({"id": "42"}));
    assert!(h.reply.is_none());
    let c = h.callouts.last().unwrap().clone();
    assert_eq!(c.cluster, "tg_http_127.0.0.1_9101");
    let get = |k: &str| {
        c.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        (get(":method"), get(":path")),
        (Some("GET"), Some("/stories/42"))
    );
    assert_eq!(
        get("authorization"),
        Some("Bearer tool-secret-123456"),
        "the workflow's credential, not the client's key"
    );
    h.callout_answer = (
        vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
        ],
        br#"{"title":"t","echo":"Bearer tool-secret-123456"}"#.to_vec(),
    );
    let n = h.callout_answer.1.len();
    flow.on_callout(&mut h, 1, n);
    let r = h.reply.take().unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["id"], 7);
    assert_eq!(v["result"]["isError"], false);
    assert_eq!(v["result"]["structuredContent"]["title"], "t");
    assert!(
        !String::from_utf8_lossy(&r.body).contains("tool-secret-123456"),
        "the gateway's secrets never reach the client"
    );
    let calls = h
        .counters
        .iter()
        .find(|(k, _)| {
            k.starts_with("tollgate_mcp_tool_calls_total.server.stories.tool.story.status.ok")
        })
        .map(|(_, v)| *v);
    assert_eq!(calls, Some(1));
}

#[test]
fn denied_invalid_and_limited_tool_calls_never_reach_a_backend() {
    let gw = gateway();
    let (_, h) = call_tool(&gw, "k-bob", "admin", json!({}));
    let r = h.reply.unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (200, json!(-32602))
    );
    assert_eq!(
        r.json()["error"]["message"],
        "Unknown tool: admin",
        "a denied tool looks like no tool"
    );
    assert!(h.callouts.is_empty());
    let (_, h) = call_tool(&gw, "k-bob", "story", json!({"id": "../admin"}));
    let r = h.reply.unwrap();
    assert_eq!(r.json()["error"]["code"], -32602);
    assert!(h.callouts.is_empty());
    let (opened, sid) = open(&gw, "k-alice");
    let (_, first) = send(
        &gw,
        &opened,
        "k-alice",
        &sid,
        rpc(8, "tools/call", json!({"name": "admin"})),
    );
    assert!(
        first.reply.is_none() && first.callouts.len() == 1,
        "alice may call admin once a minute"
    );
    let (_, limited) = send(
        &gw,
        &opened,
        "k-alice",
        &sid,
        rpc(9, "tools/call", json!({"name": "admin"})),
    );
    let r = limited.reply.unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (429, json!(-32000))
    );
    assert!(r.headers.iter().any(|(k, _)| k == "retry-after"));
    assert!(limited.callouts.is_empty());
}

#[test]
fn pii_is_masked_in_arguments_and_restored_and_secrets_stop_results() {
    let gw = gateway();
    let (mut flow, mut h) = call_tool(
        &gw,
        "k-alice",
        "admin",
        json!({"note": "mail ann@example.com"}),
    );
    let c = h.callouts.last().unwrap().clone();
    let sent = String::from_utf8(c.body.clone()).unwrap();
    assert!(
        !sent.contains("ann@example.com") && sent.contains("[EMAIL_1]"),
        "{sent}"
    );
    h.callout_answer = (
        vec![(":status".into(), "200".into())],
        br#"{"saved":"[EMAIL_1]"}"#.to_vec(),
    );
    let n = h.callout_answer.1.len();
    flow.on_callout(&mut h, 1, n);
    let r = h.reply.take().unwrap();
    assert!(
        String::from_utf8_lossy(&r.body).contains("ann@example.com"),
        "restored for the client"
    );
    let (mut flow, mut h) = call_tool(&gw, "k-bob", "story", json!({"id": "1"}));
    h.callout_answer = (
        vec![(":status".into(), "200".into())],
        br#"{"key":"AKIAIOSFODNN7EXAMPLE"}"#.to_vec(),
    );
    let n = h.callout_answer.1.len();
    flow.on_callout(&mut h, 1, n);
    let r = h.reply.take().unwrap();
    assert_eq!(r.json()["error"]["code"], -32603);
    assert!(!String::from_utf8_lossy(&r.body).contains("AKIA"));
}

#[test]
fn malformed_messages_and_unknown_methods_get_their_codes() {
    let gw = gateway();
    let (opened, sid) = open(&gw, "k-bob");
    for (body, status, code) in [
        ("{", 400, -32700),
        ("[]", 400, -32600),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#,
            200,
            -32601,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"server/discover"}"#,
            200,
            -32601,
        ),
    ] {
        let mut flow = Flow::new(Rc::clone(&gw));
        let mut h = MockHost::request(
            "POST",
            "/mcp",
            &[("authorization", "Bearer k-bob"), ("mcp-session-id", &sid)],
        )
        .with_body(body.as_bytes());
        h.shared = Rc::clone(&opened.shared);
        flow.on_request_headers(&mut h, false);
        flow.on_request_body(&mut h, body.len(), true);
        let r = h.reply.unwrap();
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_i64().unwrap()),
            (status, code),
            "{body}"
        );
    }
    let mut flow = Flow::new(Rc::clone(&gw));
    let mut h = MockHost::request("POST", "/mcp", &[("authorization", "Bearer nope")]);
    flow.on_request_headers(&mut h, false);
    let r = h.reply.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["jsonrpc"],
        "2.0",
        "an MCP client gets a JSON-RPC error"
    );
}

#[test]
fn a_federation_lists_and_calls_upstream_tools_under_their_names() {
    let gw = gateway();
    let mut flow = Flow::new(Rc::clone(&gw));
    let mut h = post(
        &mut flow,
        "/hub",
        "k-bob",
        None,
        rpc(3, "tools/list", json!({})),
    );
    // Each upstream is initialized first: initialize, notifications/initialized, tools/list.
    let answer = |h: &mut MockHost, headers: &[(&str, &str)], body: &str| {
        h.callout_answer = (
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body.as_bytes().to_vec(),
        );
    };
    let init = r#"{"jsonrpc":"2.0","id":"tollgate-init","result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"w","version":"1"}}}"#;
    answer(
        &mut h,
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("mcp-session-id", "up-1"),
        ],
        init,
    );
    let first = h.callouts[0].clone();
    assert_eq!(first.cluster, "tg_http_127.0.0.1_9201");
    assert!(
        first
            .headers
            .iter()
            .any(|(k, v)| k == "x-api-token" && v == "weather-token"),
        "per-upstream credential"
    );
    assert!(
        !first.headers.iter().any(|(k, _)| k == "authorization"),
        "the client's key stays at the gateway"
    );
    flow.on_callout(&mut h, 1, init.len());
    let notified = String::from_utf8(h.callouts[1].body.clone()).unwrap();
    assert!(notified.contains("notifications/initialized"));
    assert!(h.callouts[1]
        .headers
        .iter()
        .any(|(k, v)| k == "mcp-session-id" && v == "up-1"));
    answer(&mut h, &[(":status", "202")], "");
    flow.on_callout(&mut h, 2, 0);
    let list = r#"event: message
data: {"jsonrpc":"2.0","id":"tollgate-list","result":{"tools":[{"name":"forecast","inputSchema":{"type":"object"}}]}}

"#;
    answer(
        &mut h,
        &[(":status", "200"), ("content-type", "text/event-stream")],
        list,
    );
    flow.on_callout(&mut h, 3, list.len());
    // The second upstream is stateless (no session id) and lists two tools.
    answer(
        &mut h,
        &[(":status", "200"), ("content-type", "application/json")],
        init,
    );
    flow.on_callout(&mut h, 4, init.len());
    answer(&mut h, &[(":status", "202")], "");
    flow.on_callout(&mut h, 5, 0);
    let files = r#"{"jsonrpc":"2.0","id":"tollgate-list","result":{"tools":[{"name":"read"},{"name":"write"}]}}"#;
    answer(
        &mut h,
        &[(":status", "200"), ("content-type", "application/json")],
        files,
    );
    flow.on_callout(&mut h, 6, files.len());
    let r = h.reply.take().unwrap();
    let names: Vec<String> = msg(&r)["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["weather__forecast"],
        "bob sees neither files__read (analyst only) nor the unlisted files__write"
    );

    // A call goes to its upstream under the upstream's own name, on the kept session.
    let mut flow = Flow::new(Rc::clone(&gw));
    let mut h2 = MockHost::request("POST", "/hub", &[("authorization", "Bearer k-bob")]);
    h2.shared = Rc::clone(&h.shared);
    let body = rpc(
        9,
        "tools/call",
        json!({"name": "weather__forecast", "arguments": {"city": "Oslo"}}),
    )
    .to_string();
    h2.request_body = body.clone().into_bytes();
    flow.on_request_headers(&mut h2, false);
    flow.on_request_body(&mut h2, body.len(), true);
    let c = h2.callouts.last().unwrap().clone();
    let sent: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(
        sent["params"],
        json!({"name": "forecast", "arguments": {"city": "Oslo"}})
    );
    assert!(c
        .headers
        .iter()
        .any(|(k, v)| k == "mcp-session-id" && v == "up-1"));
    let result = r#"{"jsonrpc":"2.0","id":"tollgate-call","result":{"content":[{"type":"text","text":"sunny"}],"isError":false}}"#;
    h2.callout_answer = (
        vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
        ],
        result.as_bytes().to_vec(),
    );
    let t = h2.callouts.len() as u32;
    flow.on_callout(&mut h2, t, result.len());
    let r = h2.reply.take().unwrap();
    assert_eq!(msg(&r)["id"], 9);
    assert_eq!(msg(&r)["result"]["content"][0]["text"], "sunny");

    // A denied tool is never sent; an upstream that dies gets a JSON-RPC error.
    let h3 = post(
        &mut Flow::new(Rc::clone(&gw)),
        "/hub",
        "k-bob",
        None,
        rpc(10, "tools/call", json!({"name": "files__read"})),
    );
    assert_eq!(
        msg(&h3.reply.unwrap())["error"]["message"],
        "Unknown tool: files__read"
    );
    let mut flow = Flow::new(Rc::clone(&gw));
    let mut h4 = MockHost::request("POST", "/hub", &[("authorization", "Bearer k-bob")]);
    h4.shared = Rc::clone(&h.shared);
    h4.request_body = body.clone().into_bytes();
    flow.on_request_headers(&mut h4, false);
    flow.on_request_body(&mut h4, body.len(), true);
    h4.callout_answer = (Vec::new(), Vec::new());
    let t = h4.callouts.len() as u32;
    flow.on_callout(&mut h4, t, 0);
    let r = h4.reply.unwrap();
    assert_eq!(msg(&r)["error"]["code"], -32603);
    assert!(msg(&r)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("weather did not answer"));
}

#[test]
fn a_relay_binds_the_upstreams_session_to_its_caller() {
    let gw = gateway();
    let mut flow = Flow::new(Rc::clone(&gw));
    let mut h = MockHost::request(
        "POST",
        "/relay",
        &[
            ("authorization", "Bearer k-alice"),
            ("accept", "application/json, text/event-stream"),
        ],
    );
    crate::mcp::session::init_shared(&mut h);
    assert_eq!(
        flow.on_request_headers(&mut h, false),
        Action::Continue,
        "a relay is proxied"
    );
    h.response_headers = vec![
        (":status".into(), "200".into()),
        ("mcp-session-id".into(), "upstream-s1".into()),
    ];
    flow.on_response_headers(&mut h, false);
    let relay = |key: &str| {
        let mut flow = Flow::new(Rc::clone(&gw));
        let auth = format!("Bearer {key}");
        let mut h2 = MockHost::request(
            "POST",
            "/relay",
            &[("authorization", &auth), ("mcp-session-id", "upstream-s1")],
        );
        h2.shared = Rc::clone(&h.shared);
        let action = flow.on_request_headers(&mut h2, false);
        (action, h2)
    };
    let (action, h2) = relay("k-alice");
    assert_eq!(action, Action::Continue);
    assert_eq!(
        h2.request_values("mcp-session-id"),
        vec!["upstream-s1"],
        "the session id reaches the upstream"
    );
    let (action, h3) = relay("k-bob");
    assert_eq!(action, Action::Pause);
    let r = h3.reply.unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (404, json!(-32001))
    );
}

#[test]
fn a_relays_refusals_are_json_rpc_errors() {
    let gw = gateway();
    let mut flow = Flow::new(Rc::clone(&gw));
    let mut h = MockHost::request("POST", "/relay", &[("authorization", "Bearer k-nobody")]);
    assert_eq!(flow.on_request_headers(&mut h, false), Action::Pause);
    let r = h.reply.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["jsonrpc"], json!("2.0"));
    assert_eq!(r.json()["error"]["code"], json!(-32600));
}

#[test]
fn without_ai_mcp_tools_every_tool_is_listed_and_callable() {
    let doc = json!({"version": 3,
        "extra_config": {"ai/mcp": {"servers": [{"name": "s", "title": "S", "version": "1", "json_response": true, "stateless": true,
            "tools": [{"name": "t", "title": "T", "description": "d",
                "workflow": {"backend": [{"host": ["http://127.0.0.1:9101"], "url_pattern": "/t"}]}}]}]}},
        "endpoints": [{"endpoint": "/open", "method": "POST", "backend": [{"host": ["http://ignore"], "url_pattern": "/ignore"}],
            "extra_config": {"ai/mcp": {"server_name": "s"}}}]});
    let gw = Rc::new(Gateway::from_value(&doc, &|_| None).unwrap());
    let open = |m: Value| post(&mut Flow::new(Rc::clone(&gw)), "/open", "", None, m);
    let listed = open(rpc(1, "tools/list", json!({})));
    assert_eq!(
        msg(listed.reply.as_ref().unwrap())["result"]["tools"][0]["name"],
        json!("t")
    );
    let called = open(rpc(2, "tools/call", json!({"name": "t", "arguments": {}})));
    assert!(
        called.reply.is_none(),
        "the workflow's callout is made: {:?}",
        called.reply
    );
    assert_eq!(called.callouts.len(), 1);
}

#[test]
fn two_session_ids_are_refused_before_any_is_checked_or_forwarded() {
    let gw = gateway();
    for path in ["/relay", "/mcp"] {
        let mut flow = Flow::new(Rc::clone(&gw));
        let mut h = MockHost::request(
            "POST",
            path,
            &[
                ("authorization", "Bearer k-bob"),
                ("mcp-session-id", "bobs-own"),
                ("Mcp-Session-Id", "alices"),
            ],
        );
        crate::mcp::session::init_shared(&mut h);
        assert_eq!(
            flow.on_request_headers(&mut h, false),
            Action::Pause,
            "{path}"
        );
        let r = h.reply.unwrap();
        assert_eq!(
            (r.status, r.json()["error"]["code"].clone()),
            (400, json!(-32600)),
            "{path}"
        );
    }
}
