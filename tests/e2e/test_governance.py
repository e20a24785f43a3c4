"""Governance through a real Envoy: rate limits, token limits, request and response
validation, payload size, prompt templates and decorators."""
import json
import re
import time

import httpx
import pytest

from harness import Envoy


def llm_backend(mock_url: str) -> dict:
    return {"host": [mock_url], "url_pattern": "/v1/chat/completions",
            "extra_config": {"ai/llm": {"openai-compatible": {"v1": {}}}}}


def llm(path: str, mock_url: str, extra: dict) -> dict:
    return {"endpoint": path, "method": "POST", "extra_config": extra, "backend": [llm_backend(mock_url)]}


def config(mock_url: str) -> dict:
    plain = lambda path, extra: {"endpoint": path, "method": "POST", "extra_config": extra,
                                 "backend": [{"host": [mock_url], "url_pattern": "/v1/chat/completions"}]}
    return {"version": 3, "endpoints": [
        plain("/rl/endpoint", {"qos/ratelimit/router": {"max_rate": 3, "every": "2s"}}),
        llm("/rl/client/chat/completions", mock_url, {"qos/ratelimit/router": {
            "client_max_rate": 2, "every": "2s", "strategy": "header", "key": "X-Tenant"}}),
        plain("/rl/burst", {"qos/ratelimit/router": {"max_rate": 20, "every": "1h"}}),
        plain("/rl/ip", {"qos/ratelimit/router": {"client_max_rate": 1, "every": "2s", "strategy": "ip"}}),
        llm("/rl/tokens/chat/completions", mock_url, {"qos/ratelimit/router": {
            "client_max_tokens": 20, "client_tokens_every": "1m", "strategy": "header", "key": "X-User"}}),
        plain("/validated", {"validation/json-schema": {
            "type": "object", "required": ["model", "messages"],
            "properties": {"model": {"type": "string"}, "messages": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["role", "content"],
                "properties": {"role": {"enum": ["user", "system"]}, "content": {"type": "string", "maxLength": 40}}}}}},
            "proxy": {"max_payload": 300}}),
        llm("/summarise", mock_url, {
            "ai/prompt-template": {"template": json.dumps({
                "model": "{{ var.model }}",
                "messages": [{"role": "user", "content": "Summarise for {{ header.x-audience }}: {{ body.text }}"}],
                "max_tokens": "{{ body.limit }}"}).replace('"{{ var.model }}"', "{{ var.model }}")
                .replace('"{{ body.limit }}"', "{{ body.limit }}"),
                "variables": {"model": "gpt-4o-mini"}},
            "ai/prompt-decorator": {"prepend": [{"role": "system", "content": "Be brief."}],
                                    "append": [{"role": "user", "content": "Answer in French."}]}}),
        {"endpoint": "/plain/{tenant}/ask", "method": "POST", "extra_config": {"ai/prompt-template": {
            "template": '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "[{{ param.tenant }}] {{ body.q }}"}], "meta": {{ body.meta }}}'}},
         "backend": [{"host": [mock_url], "url_pattern": "/v1/chat/completions"}]},
        llm("/structured/chat/completions", mock_url, {"validation/response-json-schema": {
            "schema": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}),
    ]}


@pytest.fixture(scope="module")
def gw(mock):
    e = Envoy(config(mock.url)).wait_ready()
    yield e
    e.stop()


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


def post(gw, path, body=CHAT, **headers):
    # A new connection per request: Envoy spreads them over its two workers, so the
    # counts below also prove the buckets are shared across workers.
    return httpx.post(f"{gw.url}{path}", json=body, headers=headers, timeout=10)


def assert_rate_limited(r, status, kind="requests"):
    assert r.status_code == status, r.text
    assert int(r.headers["retry-after"]) >= 1
    err = r.json()["error"]
    assert (err["code"], err["type"]) == ("rate_limit_exceeded", kind)


def test_endpoint_limit_503_at_capacity_and_recovers_after_every(gw, fresh_mock):
    codes = [post(gw, "/rl/endpoint").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = post(gw, "/rl/endpoint")
    assert_rate_limited(r, 503)
    assert r.headers["retry-after"] == "1"  # one token per 667 ms, rounded up
    assert len(fresh_mock.requests()) == 3
    assert re.search(r"^tollgate_rate_limited_total\S* [1-9]", gw.stats(), re.M)
    time.sleep(2.1)  # `every`: the bucket is full again
    codes = [post(gw, "/rl/endpoint").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 503]


def test_concurrent_burst_is_counted_exactly_across_workers(gw, fresh_mock):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(lambda _: post(gw, "/rl/burst").status_code, range(60)))
    assert sorted(set(codes)) == [200, 503]
    assert codes.count(200) == 20  # capacity 20, refill 20 per hour: not one more
    assert len(fresh_mock.requests()) == 20


def test_client_limit_429_per_tenant_header(gw, fresh_mock):
    path = "/rl/client/chat/completions"
    assert [post(gw, path, **{"X-Tenant": "a"}).status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(post(gw, path, **{"X-Tenant": "a"}), 429)
    assert post(gw, path, **{"X-Tenant": "b"}).status_code == 200
    # Without the header the client is the anonymous tenant, limited like any other.
    assert [post(gw, path).status_code for _ in range(3)] == [200, 200, 429]
    time.sleep(1.1)  # one request per second comes back
    assert post(gw, path, **{"X-Tenant": "a"}).status_code == 200


def test_ip_strategy_uses_the_peer_address_not_x_forwarded_for(gw, fresh_mock):
    assert post(gw, "/rl/ip").status_code == 200
    # A spoofed X-Forwarded-For does not make a new client.
    assert_rate_limited(post(gw, "/rl/ip", **{"X-Forwarded-For": "203.0.113.9"}), 429)


def test_token_limit_charges_the_usage_of_each_answer(gw, fresh_mock):
    path = "/rl/tokens/chat/completions"
    long = " ".join(["word"] * 30)
    r = post(gw, path, {"model": "m", "messages": [{"role": "user", "content": long}]}, **{"X-User": "u1"})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["total_tokens"] > 20
    r = post(gw, path, **{"X-User": "u1"})
    assert_rate_limited(r, 429, kind="tokens")
    assert int(r.headers["retry-after"]) >= 2  # the debt refills at 20 tokens a minute
    assert post(gw, path, **{"X-User": "u2"}).status_code == 200
    assert len(fresh_mock.requests()) == 2


def test_schema_failure_400_names_the_path_and_never_reaches_upstream(gw, fresh_mock):
    bad = {"model": "m", "messages": [{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}]}
    r = post(gw, "/validated", bad)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "$.messages[1].role"
    assert err["message"] == ('the request body does not match the endpoint\'s schema: '
                              '$.messages[1].role: must be one of "user", "system"')
    r = post(gw, "/validated", {"model": "m", "messages": []})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "$.messages")
    r = httpx.post(f"{gw.url}/validated", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert fresh_mock.requests() == []
    r = post(gw, "/validated")
    assert r.status_code == 200, r.text
    assert json.loads(fresh_mock.last()["body"]) == CHAT


def test_max_payload_413(gw, fresh_mock):
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    r = post(gw, "/validated", big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no content-length: the size is checked on the whole body
        yield json.dumps(big).encode()
    r = httpx.post(f"{gw.url}/validated", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert fresh_mock.requests() == []


def test_template_and_decorator_render_the_upstream_body(gw, fresh_mock):
    r = post(gw, "/summarise", {"text": 'The "quick" fox\njumps', "limit": 50}, **{"X-Audience": "kids"})
    assert r.status_code == 200, r.text
    sent = json.loads(fresh_mock.last()["body"])
    assert sent["model"] == "gpt-4o-mini"
    assert sent["max_tokens"] == 50
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": 'Summarise for kids: The "quick" fox\njumps'},
        {"role": "user", "content": "Answer in French."},
    ]
    r = post(gw, "/summarise", {"text": "x", "limit": 5})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "the template value {{ header.x-audience }} is missing in the request"


def test_template_on_a_plain_endpoint_rewrites_body_and_length(gw, fresh_mock):
    r = post(gw, "/plain/acme/ask", {"q": "why é?", "meta": {"n": [1, 2]}})
    assert r.status_code == 200, r.text
    rec = fresh_mock.last()
    sent = json.loads(rec["body"])
    assert sent == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "[acme] why é?"}], "meta": {"n": [1, 2]}}
    assert [v for k, v in rec["headers"] if k == "content-length"] == [str(len(rec["body"].encode()))]


def test_structured_output_is_validated(gw, fresh_mock):
    path = "/structured/chat/completions"
    r = post(gw, path, **{"x-mock-text": '{"city": "Paris"}'})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["choices"][0]["message"]["content"]) == {"city": "Paris"}
    r = post(gw, path, **{"x-mock-text": '{"town": "Paris"}'})
    assert r.status_code == 502
    assert r.json()["error"]["message"] == \
        "the model's answer does not match the endpoint's response schema: $.city: is required"
    r = post(gw, path, **{"x-mock-text": "Paris, of course"})
    assert r.status_code == 502
    assert "the assistant message is not JSON" in r.json()["error"]["message"]


# ---- multi-LLM routing, failover, circuit breaker ----

def anthropic_backend(mock_url: str, extra: dict | None = None) -> dict:
    return {"host": [mock_url], "url_pattern": "/v1/messages", "extra_config": {
        "ai/llm": {"anthropic": {"v1": {"credentials": "test-anthropic-key", "variables": {"model": "claude-fallback"}}}},
        **(extra or {})}}


def failing(mock_url: str, status: str, extra: dict | None = None) -> dict:
    b = llm_backend(mock_url)
    b["extra_config"]["modifier/martian"] = {"header.Modifier": {"scope": ["request"], "name": "X-Mock-Status", "value": status}}
    b["extra_config"].update(extra or {})
    return b


def routing_config(mock_url: str, down_url: str) -> dict:
    fo = {"ai/routing": {"failover": True}}
    ep = lambda path, backends, extra=fo: {"endpoint": path, "method": "POST", "extra_config": extra, "backend": backends}
    return {"version": 3, "endpoints": [
        ep("/fo503/chat/completions", [failing(mock_url, "503"), anthropic_backend(mock_url)]),
        ep("/fook/chat/completions", [llm_backend(mock_url), anthropic_backend(mock_url)]),
        ep("/fo429/chat/completions", [failing(mock_url, "429"), anthropic_backend(mock_url)]),
        ep("/fodown/chat/completions", [llm_backend(down_url), anthropic_backend(mock_url)]),
        ep("/foall/chat/completions", [failing(mock_url, "503"), failing(mock_url, "502")]),
        {**ep("/fotimeout/chat/completions", [failing(mock_url, "200", {"modifier/martian": {"header.Modifier": {
            "scope": ["request"], "name": "X-Mock-Hang-Ms", "value": "4000"}}}), anthropic_backend(mock_url)]),
         "timeout": "1s"},
        ep("/weighted/chat/completions", [llm_backend(mock_url), anthropic_backend(mock_url)],
           {"ai/routing": {"weights": [1, 1]}}),
        ep("/fobreaker/chat/completions", [
            failing(mock_url, "503", {"qos/circuit-breaker": {"max_errors": 1, "interval": 60, "timeout": 30}}),
            anthropic_backend(mock_url)]),
        ep("/cond/chat/completions", [
            anthropic_backend(mock_url, {"backend/conditional": {"strategy": "header", "name": "X-Llm", "value": "claude"}}),
            {**llm_backend(mock_url), "extra_config": {**llm_backend(mock_url)["extra_config"],
                                                       "backend/conditional": {"strategy": "fallback"}}}], {}),
        {"endpoint": "/cb", "method": "POST", "backend": [{
            "host": [mock_url], "url_pattern": "/v1/chat/completions",
            "extra_config": {"qos/circuit-breaker": {"max_errors": 2, "interval": 60, "timeout": 1,
                                                     "name": "cb-mock", "log_status_change": True}}}]},
    ]}


@pytest.fixture(scope="module")
def rgw(mock):
    from harness import free_port
    e = Envoy(routing_config(mock.url, f"http://127.0.0.1:{free_port()}")).wait_ready()
    yield e
    e.stop()


def paths(mock) -> list[str]:
    return [r["path"] for r in mock.requests()]


def assert_fallback_answer(r, mock, first_status_header):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"  # the client's API, whatever answered
    assert body["model"] == "claude-fallback"
    assert body["choices"][0]["message"]["content"]
    reqs = mock.requests()
    assert reqs[-1]["path"] == "/v1/messages"
    sent = json.loads(reqs[-1]["body"])  # translated for Anthropic on the second attempt
    assert sent["model"] == "claude-fallback" and sent["messages"][0]["content"] in ("Hello", [{"type": "text", "text": "Hello"}])
    assert [v for k, v in reqs[-1]["headers"] if k == "x-api-key"] == ["test-anthropic-key"]
    if first_status_header:
        assert [v for k, v in reqs[0]["headers"] if k == "x-mock-status"] == [first_status_header]


@pytest.mark.parametrize("path,status", [("/fo503/chat/completions", "503"), ("/fo429/chat/completions", "429")])
def test_failover_to_the_next_provider_on_5xx_and_429(rgw, fresh_mock, path, status):
    r = post(rgw, path)
    assert_fallback_answer(r, fresh_mock, status)
    assert paths(fresh_mock) == ["/v1/chat/completions", "/v1/messages"]
    assert re.search(r"^tollgate_failover_attempts_total\S* [1-9]", rgw.stats(), re.M)


def test_failover_on_connection_failure(rgw, fresh_mock):
    r = post(rgw, "/fodown/chat/completions")
    assert_fallback_answer(r, fresh_mock, None)
    assert paths(fresh_mock) == ["/v1/messages"]


def test_failover_on_timeout(rgw, fresh_mock):
    started = time.time()
    r = post(rgw, "/fotimeout/chat/completions")
    assert_fallback_answer(r, fresh_mock, None)
    assert time.time() - started < 3.5  # the 4 s answer was not awaited (endpoint timeout 1 s)


def test_weighted_split_uses_both_providers(rgw, fresh_mock):
    answers = [post(rgw, "/weighted/chat/completions").status_code for _ in range(30)]
    assert answers == [200] * 30
    p = paths(fresh_mock)
    # 1:1 by request id: each side gets some (P(one side < 5 of 30) ~ 1e-4).
    assert p.count("/v1/messages") >= 5 and p.count("/v1/chat/completions") >= 5, p


def test_every_provider_failing_returns_the_last_error(rgw, fresh_mock):
    r = post(rgw, "/foall/chat/completions")
    assert r.status_code == 502
    assert r.json()["error"]["message"]
    assert len(fresh_mock.requests()) == 2


@pytest.mark.parametrize("path", ["/fo503/chat/completions", "/fo429/chat/completions", "/fodown/chat/completions"])
def test_a_stream_failing_before_its_first_byte_fails_over(rgw, fresh_mock, path):
    r = post(rgw, path, {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(l[6:]) for l in r.text.splitlines() if l.startswith("data: {")]
    text = "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e["choices"])
    assert text == "Hello from mock anthropic!"
    assert events[-1]["usage"]["total_tokens"] > 0
    assert r.text.rstrip().endswith("data: [DONE]")
    reqs = fresh_mock.requests()
    assert reqs[-1]["path"] == "/v1/messages"
    assert json.loads(reqs[-1]["body"])["stream"] is True  # translated for Anthropic, still a stream


def test_a_healthy_stream_is_proxied_incrementally_on_a_failover_endpoint(rgw, fresh_mock):
    import httpx
    arrivals = []
    t0 = time.time()
    with httpx.stream("POST", f"{rgw.url}/fook/chat/completions", json={**CHAT, "stream": True},
                      headers={"x-mock-chunks": "5", "x-mock-delay-ms": "150"}, timeout=30) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            arrivals.append(time.time() - t0)
    assert arrivals[-1] - arrivals[0] > 0.3  # not buffered
    assert [x["path"] for x in fresh_mock.requests()] == ["/v1/chat/completions"]


def test_open_breaker_skips_the_failing_provider(rgw, fresh_mock):
    assert_fallback_answer(post(rgw, "/fobreaker/chat/completions"), fresh_mock, "503")
    fresh_mock.clear()
    assert_fallback_answer(post(rgw, "/fobreaker/chat/completions"), fresh_mock, None)
    assert paths(fresh_mock) == ["/v1/messages"]  # the primary is not called while open


def test_conditional_routing_by_header_with_fallback_backend(rgw, fresh_mock):
    assert post(rgw, "/cond/chat/completions", **{"X-Llm": "claude"}).status_code == 200
    assert post(rgw, "/cond/chat/completions").status_code == 200
    assert post(rgw, "/cond/chat/completions", **{"X-Llm": "Claude"}).status_code == 200  # values are case-sensitive
    assert paths(fresh_mock) == ["/v1/messages", "/v1/chat/completions", "/v1/chat/completions"]


def test_circuit_breaker_opens_half_opens_and_closes(rgw, fresh_mock):
    fail = {"X-Mock-Status": "500"}
    assert [post(rgw, "/cb", **fail).status_code for _ in range(2)] == [500, 500]
    r = post(rgw, "/cb")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "backend_unavailable"
    assert r.headers["retry-after"] == "1"
    assert len(fresh_mock.requests()) == 2  # open: the backend is not called
    time.sleep(1.1)
    assert post(rgw, "/cb", **fail).status_code == 500  # half-open probe fails: open again
    assert post(rgw, "/cb").status_code == 503
    time.sleep(1.1)
    assert post(rgw, "/cb").status_code == 200  # the probe succeeds: closed
    assert [post(rgw, "/cb").status_code for _ in range(2)] == [200, 200]
    assert len(fresh_mock.requests()) == 6
    assert re.search(r"^tollgate_circuit_breaker_opened_total\S* ([2-9]|\d\d)", rgw.stats(), re.M)
