#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use serde_json::json;

fn none(_: &str) -> Option<String> {
    None
}

fn weather() -> Value {
    json!({"servers": [{
        "name": "weather", "title": "Weather", "version": "1.0.0", "stateless": true,
        "instructions": "Ask for a city.", "ping_period": "30s",
        "tools": [{
            "name": "forecast", "title": "Forecast", "description": "The forecast of a city",
            "annotations": {"read_only_hint": true},
            "input_headers": ["X-Trace"],
            "input_schema": {"type": "object", "properties": {"city": {"type": "string", "pattern": "^[A-Za-z]+$"}}, "required": ["city"]},
            "output_schema": {"type": "object", "required": ["temp"]},
            "return_error_msg": true,
            "workflow": {"endpoint": "/__mcp/forecast/{city}", "backend": [{
                "host": ["http://127.0.0.1:9001"], "url_pattern": "/v1/forecast?city={city}", "encoding": "json",
                "extra_config": {"modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "Authorization", "value": "Bearer k"}}}
            }]}
        }]
    }]})
}

#[test]
fn compiles_krakend_servers_and_their_tools() {
    let servers = servers(&weather(), "$.extra_config.ai/mcp", &none).unwrap();
    let s = &servers[0];
    assert_eq!(
        (s.info.name.as_str(), s.info.stateless, s.info.json_response),
        ("weather", true, false)
    );
    let t = &s.tools[0];
    assert_eq!(
        t.listing["annotations"],
        json!({"title": "Forecast", "readOnlyHint": true})
    );
    assert_eq!(t.listing["inputSchema"]["required"], json!(["city"]));
    assert!(t.listing.get("outputSchema").is_some());
    assert_eq!(t.input_headers, vec!["x-trace"]);
    assert_eq!(t.workflow.method, "GET");
    assert_eq!(t.workflow.cluster, "tg_http_127.0.0.1_9001");
    assert_eq!(t.workflow.modifiers.request.len(), 1);
    let attached = attach(&json!({"server_name": "weather"}), "$.e", &servers).unwrap();
    assert_eq!(attached.info.title, "Weather");
}

#[test]
fn refuses_what_it_cannot_honour_naming_the_path() {
    let p = "$.extra_config.ai/mcp";
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = weather();
        f(&mut v);
        servers(&v, p, &none).unwrap_err().to_string()
    };
    let tool = "$.extra_config.ai/mcp.servers[0].tools[0]";
    assert!(with(&|v| v["servers"][0]["tools"][0]["workflow"]["backend"] = json!([{"host": ["http://a"], "url_pattern": "/"}, {"host": ["http://b"], "url_pattern": "/"}]))
        .starts_with(&format!("{tool}.workflow.backend: a tool's workflow must have exactly one backend")));
    assert!(with(
        &|v| v["servers"][0]["tools"][0]["workflow"]["backend"][0]["extra_config"]
            ["modifier/jmespath"] = json!({"expr": "a"})
    )
    .starts_with(&format!(
        "{tool}.workflow.backend[0].extra_config.modifier/jmespath: unknown field"
    )));
    assert!(with(
        &|v| v["servers"][0]["tools"][0]["workflow"]["backend"][0]["url_pattern"] =
            json!("/x/{nope}")
    )
    .starts_with(&format!("{tool}.workflow.backend[0].url_pattern")));
    assert!(with(
        &|v| v["servers"][0]["tools"][0]["input_schema"] = json!({"type": "object", "if": {}})
    )
    .starts_with(&format!("{tool}.input_schema")));
    assert!(
        with(&|v| v["servers"][0]["tools"][0]["type"] = json!("video"))
            .starts_with(&format!("{tool}.type"))
    );
    assert!(
        with(&|v| v["servers"][0]["tools"][0]["annotations"]["hint"] = json!(true))
            .starts_with(&format!("{tool}.annotations.hint: unknown field"))
    );
    assert!(with(&|v| v["servers"][0]["ping_period"] = json!("soon"))
        .starts_with("$.extra_config.ai/mcp.servers[0].ping_period"));
    assert!(with(&|v| {
        let first = v["servers"][0].clone();
        v["servers"].as_array_mut().unwrap().push(first);
    })
    .contains("names two servers"));
    let e = attach(&json!({"server_name": "nope"}), "$.e.ai/mcp", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("$.e.ai/mcp.server_name: \"nope\" is not a server"),
        "{e}"
    );
}

#[test]
fn compiles_federation_upstreams_and_tool_rules() {
    let f = federation(
        &json!({"name": "hub", "title": "Tool hub", "version": "2", "separator": "."}),
        "$.f",
    )
    .unwrap();
    assert_eq!(
        (f.info.name.as_str(), f.separator.as_str(), f.info.stateless),
        ("hub", ".", false)
    );
    assert!(federation(&json!({"separator": ""}), "$.f").is_err());
    assert_eq!(
        upstream(&json!({"name": "weather-2"}), "$.b").unwrap(),
        "weather-2"
    );
    assert!(upstream(&json!({"name": "a b"}), "$.b")
        .unwrap_err()
        .to_string()
        .starts_with("$.b.name"));
    let p = policy(
        &json!({"rules": [{"tools": ["weather__*"], "roles": ["analyst"], "claims": {"tier": ["gold"]},
                 "rate_limit": {"max_rate": 2, "every": "1m"}}]}),
        "$.t",
        "POST_mcp",
    )
    .unwrap();
    assert!(
        !p.allow_unlisted,
        "rules make unlisted tools invisible unless said otherwise"
    );
    assert_eq!(
        p.rules[0].rate_limit.as_ref().unwrap().id,
        "tollgate.rl.POST_mcp.tool0."
    );
    assert!(policy(&json!({}), "$.t", "x").unwrap().allow_unlisted);
    let e = policy(&json!({"rules": [{"roles": ["a"]}]}), "$.t", "x")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("$.t.rules[0].tools"), "{e}");
    let e = policy(
        &json!({"rules": [{"tools": ["a"], "claims": {"tier": 3}}]}),
        "$.t",
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("$.t.rules[0].claims.tier"), "{e}");
}
