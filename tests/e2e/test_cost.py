"""Cost control through a real Envoy: exact token accounting (streamed or not), budgets
(429 before the provider is called), window rollover, exactness across 2 workers under
parallel load, cost in currency, and the metrics at the admin endpoint."""
import json
import re
import threading
import time

import httpx
import pytest

from harness import Envoy, header

PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075},
          "claude-3-5-haiku-latest": {"input": 0.8, "output": 4.0}}


def failing_openai(mock_url: str) -> dict:
    """An OpenAI backend whose provider answers 503 (the mock obeys x-mock-status)."""
    return {"host": [mock_url], "url_pattern": "/v1/chat/completions", "extra_config": {
        "ai/llm": {"openai": {"v1": {"credentials": "sk-o", "variables": {"model": "gpt-4o-mini"}}}},
        "modifier/martian": {"header.Modifier": {"scope": ["request"], "name": "X-Mock-Status", "value": "503"}}}}


def config(mock_url: str) -> dict:
    llm_backends = [
        {"host": [mock_url], "url_pattern": "/v1/chat/completions",
         "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-o", "default": True,
                                                       "variables": {"model": "gpt-4o-mini"}}}}}},
        {"host": [mock_url], "url_pattern": "/v1/messages",
         "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": "sk-a", "aliases": ["claude"],
                                                          "variables": {"model": "claude-3-5-haiku-latest"}}}}}},
        {"host": [mock_url], "url_pattern": "/",
         "extra_config": {"ai/llm": {"gemini": {"v1beta": {"credentials": "g", "aliases": ["gemini"],
                                                          "variables": {"model": "gemini-2.0-flash"}}}}}},
    ]
    tier = lambda rule, value: {"rule_name": rule, "tier_value": value, "tier_value_as": "literal",
                                "strategy": "header", "key": "X-User"}
    return {
        "version": 3,
        "extra_config": {
            "governance/processors": {"quotas": [
                {"name": "tokens", "connection_name": "local", "rules": [
                    {"name": "small", "limits": [{"amount": 40, "unit": "hour"}]},
                    {"name": "big", "limits": [{"amount": 10_000_000, "unit": "day"}, {"amount": 10_000_000, "unit": "hour"}]},
                    {"name": "persecond", "limits": [{"amount": 2, "unit": "second"}]},
                ]},
                {"name": "money", "connection_name": "local", "rules": [
                    {"name": "usd", "limits": [{"amount": 0.00002, "unit": "day"}]}]},
                {"name": "reserved", "connection_name": "local", "rules": [
                    {"name": "r", "limits": [{"amount": 1000, "unit": "hour"}]}]},
            ]},
            "ai/usage": {"currency": "USD", "response_headers": True, "prices": PRICES},
        },
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": llm_backends,
             "extra_config": {"governance/quota": {
                 "quota_name": "tokens", "tier_key": "X-Plan", "weight_key": "usage.total_tokens",
                 "tiers": [tier("small", "small"), tier("big", "big")]}}},
            {"endpoint": "/req/chat/completions", "method": "POST", "backend": llm_backends[:1],
             "extra_config": {"governance/quota": {
                 "quota_name": "tokens", "tier_key": "X-Plan",
                 "tiers": [{"rule_name": "persecond", "tier_value_as": "*", "strategy": "header", "key": "X-User"}]}}},
            {"endpoint": "/money/chat/completions", "method": "POST", "backend": llm_backends[:1],
             "extra_config": {"governance/quota": {
                 "quota_name": "money", "tier_key": "X-Plan", "weight_key": "cost",
                 "tiers": [{"rule_name": "usd", "tier_value_as": "*", "strategy": "header", "key": "X-User"}]}}},
            {"endpoint": "/failover/chat/completions", "method": "POST",
             "backend": [failing_openai(mock_url), llm_backends[1]],
             "extra_config": {"ai/routing": {"failover": True}, "governance/quota": {
                 "quota_name": "tokens", "tier_key": "X-Plan", "weight_key": "usage.total_tokens",
                 "tiers": [tier("big", "big")]}}},
            {"endpoint": "/keyed/chat/completions", "method": "POST", "backend": llm_backends[:1],
             "extra_config": {"governance/quota": {
                 "quota_name": "tokens", "tier_key": "X-Plan", "weight_key": "usage.total_tokens",
                 "tiers": [{"rule_name": "big", "tier_value_as": "*", "strategy": "header", "key": "Authorization"}]}}},
            {"endpoint": "/reserve/chat/completions", "method": "POST", "backend": llm_backends[:1],
             "extra_config": {"governance/quota": {
                 "quota_name": "reserved", "tier_key": "X-Plan", "weight_key": "usage.total_tokens", "reserve": True,
                 "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "X-User"}]}}},
        ],
    }


@pytest.fixture(scope="module")
def gw(mock):
    e = Envoy(config(mock.url), concurrency=2).wait_ready()
    yield e
    e.stop()


def chat(gw, user, plan="big", model="gpt-4o-mini", stream=False, path="/v1/chat/completions", extra=None, text="Hello there"):
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    headers = {"x-plan": plan, "x-user": user, **(extra or {})}
    return httpx.post(f"{gw.url}{path}", json=body, headers=headers, timeout=30)


def mock_usage(r) -> tuple[int, int]:
    p, c = r.headers["x-mock-usage"].split(",")
    return int(p), int(c)


def stream_usage(r) -> tuple[int, int]:
    """Usage the mock reported on a streamed answer (the gateway passes x-mock-usage on)."""
    return mock_usage(r)


def metric(gw, name: str, **labels) -> float:
    total = 0.0
    for line in gw.stats().splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_non_streaming_and_streaming_tokens_equal_provider_usage(gw, fresh_mock):
    user = "acct-exact"
    reported = [0, 0]
    for model in ["gpt-4o-mini", "claude", "gemini"]:
        for stream in (False, True):
            r = chat(gw, user, model=model, stream=stream, text="count these words please")
            assert r.status_code == 200, r.text
            p, c = mock_usage(r)
            reported[0] += p
            reported[1] += c
            if not stream:
                assert int(r.headers["x-tollgate-prompt-tokens"]) == p
                assert int(r.headers["x-tollgate-completion-tokens"]) == c
    counted = [metric(gw, "tollgate_tokens_total", tenant=user, kind="prompt"),
               metric(gw, "tollgate_tokens_total", tenant=user, kind="completion")]
    print(f"\nreported by mock: prompt={reported[0]} completion={reported[1]}; "
          f"counted by gateway: prompt={counted[0]:.0f} completion={counted[1]:.0f}")
    assert counted == reported
    assert metric(gw, "tollgate_requests_total", tenant=user, status="200") == 6
    assert metric(gw, "tollgate_tokens_total", tenant=user, provider="anthropic", kind="prompt") > 0


def test_budget_exhausted_gives_429_and_provider_sees_nothing(gw, fresh_mock):
    user = "acct-small"
    used = 0
    while True:
        r = chat(gw, user, plan="small")
        if r.status_code == 429:
            break
        assert r.status_code == 200, r.text
        p, c = mock_usage(r)
        used += p + c
        assert int(r.headers["x-quota-remaining"]) == max(0, 40 - used)
        assert used < 200, "the budget never ran out"
    assert used >= 40
    calls_before = len(fresh_mock.requests())
    r = chat(gw, user, plan="small")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "quota_exceeded"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert int(r.headers["retry-after"]) > 0
    assert r.headers["x-quota-limit"] == "40"
    assert r.headers["x-quota-remaining"] == "0"
    assert len(fresh_mock.requests()) == calls_before
    print(f"\n429 after {used} tokens of a 40-token budget; Retry-After {r.headers['retry-after']}s")
    # Another user on the same plan is not affected.
    assert chat(gw, "acct-small-2", plan="small").status_code == 200
    # No tier matches: 400.
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "a"}]})
    assert r.status_code == 400
    assert "no quota tier matches" in r.json()["error"]["message"]


def test_window_rollover(gw, fresh_mock):
    user = "acct-rollover"
    path = "/req/chat/completions"
    # 2 requests per second: align to the start of a second, spend it, wait for the next.
    time.sleep(1 - time.time() % 1 + 0.05)
    codes = [chat(gw, user, path=path).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    time.sleep(1 - time.time() % 1 + 0.05)
    assert chat(gw, user, path=path).status_code == 200


def test_budget_in_currency(gw, fresh_mock):
    user = "acct-money"
    spent = 0
    for _ in range(20):
        r = chat(gw, user, path="/money/chat/completions")
        if r.status_code == 429:
            break
        p, c = mock_usage(r)
        spent += round(p * 0.15 + c * 0.6)
        assert r.headers["x-tollgate-cost"].endswith(" USD")
    assert r.status_code == 429
    assert spent >= 20  # 0.00002 USD = 20 millionths
    assert metric(gw, "tollgate_cost_total", tenant=user, currency="USD") == spent


def test_concurrent_accounting_is_exact_across_workers(gw, fresh_mock):
    user = "acct-concurrent"
    results = []
    lock = threading.Lock()

    def worker(n):
        with httpx.Client(timeout=30) as c:
            for i in range(n):
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "word " * (i % 7 + 1)}],
                        "stream": i % 2 == 0}
                r = c.post(f"{gw.url}/v1/chat/completions", json=body, headers={"x-plan": "big", "x-user": user})
                assert r.status_code == 200
                p, cc = mock_usage(r)
                with lock:
                    results.append(p + cc)

    threads = [threading.Thread(target=worker, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 200
    expected = sum(results)
    r = chat(gw, user)
    p, c = mock_usage(r)
    remaining = int(r.headers["x-quota-remaining"])
    counted = 10_000_000 - remaining - (p + c)
    print(f"\n200 parallel calls over 2 workers: provider reported {expected} tokens, budget counted {counted}")
    assert counted == expected
    assert metric(gw, "tollgate_tokens_total", tenant=user, kind="prompt") + \
        metric(gw, "tollgate_tokens_total", tenant=user, kind="completion") == expected + p + c


def test_reservation_bounds_a_concurrent_burst(gw, fresh_mock):
    """Each call reserves max_tokens (300) + prompt estimate: of a burst against a 1000-token
    hourly budget at most 3 can be in flight at once, so the budget cannot overshoot by more
    than one reservation."""
    user = "acct-reserve"
    codes = []
    lock = threading.Lock()

    def one():
        body = {"model": "gpt-4o-mini", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{gw.url}/reserve/chat/completions", json=body,
                       headers={"x-user": user, "x-mock-delay-ms": "0", "x-mock-hang-ms": "300"}, timeout=30)
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert codes.count(200) == 3, codes
    assert codes.count(429) == 5, codes
    # After the calls, reservations were replaced by real usage: the budget has room again.
    r = httpx.post(f"{gw.url}/reserve/chat/completions", headers={"x-user": user}, timeout=30,
                   json={"model": "gpt-4o-mini", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert int(r.headers["x-quota-remaining"]) > 900


def test_stream_cut_is_estimated_and_marked(gw, fresh_mock):
    user = "acct-cut"
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", timeout=30,
                      json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                      headers={"x-plan": "big", "x-user": user, "x-mock-close-after": "3", "x-mock-chunks": "10"}) as r:
        chunks = []
        try:
            for c in r.iter_raw():
                chunks.append(c)
        except httpx.HTTPError:
            pass  # Envoy resets the client stream when the upstream dies mid-stream.
        body = b"".join(chunks)
    deadline = time.time() + 5
    while time.time() < deadline and metric(gw, "tollgate_tokens_total", tenant=user, kind="completion") == 0:
        time.sleep(0.1)
    completion = metric(gw, "tollgate_tokens_total", tenant=user, kind="completion")
    assert b"chat.completion.chunk" in body and b"\"content\":\"He" in body
    # 3 of 10 pieces arrived before the cut: an estimate from those bytes, never zero.
    assert completion > 0
    assert metric(gw, "tollgate_usage_estimated_total", tenant=user) == 1


def test_metrics_and_access_log_properties(gw, fresh_mock):
    r = chat(gw, "acct-metrics")
    p, c = mock_usage(r)
    deadline = time.time() + 20  # Envoy flushes its stdout access log every few seconds
    while time.time() < deadline and "tenant=acct-metrics" not in gw.access_log():
        time.sleep(0.1)
    line = next(l for l in gw.access_log().splitlines() if "tenant=acct-metrics" in l)
    assert f"provider=openai model=gpt-4o-mini tenant=acct-metrics prompt_tokens={p} completion_tokens={c}" in line
    assert "estimated=false" in line
    text = gw.stats()
    assert re.search(r'tollgate_tokens_total\{provider="openai",model="gpt-4o-mini",tenant="acct-metrics",kind="prompt"\} \d+', text)
    assert re.search(r'tollgate_requests_total\{provider="openai",model="gpt-4o-mini",tenant="acct-metrics",status="200"\} 1', text)
    assert "tollgate_request_duration_ms_bucket" in text
    assert "tollgate_time_to_first_token_ms_bucket" in text


def test_cost_config_passes_tollgate_check(tmp_path):
    import subprocess
    from harness import TOLLGATE
    p = tmp_path / "cost.json"
    p.write_text(json.dumps(config("http://127.0.0.1:9")))
    out = subprocess.run([str(TOLLGATE), "check", str(p)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    bad = config("http://127.0.0.1:9")
    bad["endpoints"][0]["extra_config"]["governance/quota"]["reserv"] = True
    p.write_text(json.dumps(bad))
    out = subprocess.run([str(TOLLGATE), "check", str(p)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "$.endpoints[0].extra_config.governance/quota.reserv: unknown field" in out.stderr


def test_failover_answers_are_accounted(gw, fresh_mock):
    user = "acct-failover"
    r = chat(gw, user, path="/failover/chat/completions", model="gpt-4o-mini")
    assert r.status_code == 200, r.text
    assert [x["path"] for x in fresh_mock.requests()] == ["/v1/chat/completions", "/v1/messages"]
    p, c = mock_usage(r)
    assert int(r.headers["x-tollgate-prompt-tokens"]) == p
    assert int(r.headers["x-tollgate-completion-tokens"]) == c
    assert int(r.headers["x-quota-remaining"]) == 10_000_000 - (p + c)
    assert metric(gw, "tollgate_tokens_total", tenant=user, provider="anthropic", kind="prompt") == p
    assert metric(gw, "tollgate_tokens_total", tenant=user, provider="anthropic", kind="completion") == c
    assert metric(gw, "tollgate_tokens_total", tenant=user, provider="openai", kind="prompt") == 0


def test_a_caller_identified_by_its_key_never_shows_the_key(gw, fresh_mock):
    secret = "sk-client-secret-0123456789abcdef"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{gw.url}/keyed/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200, r.text
    assert int(r.headers["x-quota-remaining"]) < 10_000_000
    stats = gw.stats()
    assert "0123456789abcdef" not in stats and "client_secret" not in stats and "client-secret" not in stats
    assert re.search(r'tollgate_tokens_total\{provider="openai",model="gpt-4o-mini",tenant="key-[0-9a-f]{16}",kind="prompt"\}', stats)
    # The client's key does not reach the provider either.
    assert secret not in json.dumps(fresh_mock.requests())


class TestKrakendWeightKey:
    """KrakenD's `weight_key` on plain endpoints, with its meaning: the number the backend
    reports in a field of its JSON answer (`weight_strategy: body`) or in a response header
    (`header`; here set by a martian response modifier), through a real Envoy."""

    @staticmethod
    def config(mock_url):
        def ep(path, url_pattern, quota, limit, extra=None):
            q = {"quota_name": path.strip("/"), "tier_key": "X-Plan", **quota,
                 "tiers": [{"rule_name": "r", "tier_value_as": "*", "strategy": "header", "key": "X-User"}]}
            backend = {"host": [mock_url], "url_pattern": url_pattern, **({"extra_config": extra} if extra else {})}
            rule = {"name": path.strip("/"), "connection_name": "local", "rules": [{"name": "r", "limits": [{"amount": limit, "unit": "hour"}]}]}
            return rule, {"endpoint": path, "method": "POST", "backend": [backend],
                          "extra_config": {"governance/quota": q}}
        credits = {"modifier/martian": {"header.Modifier": {"scope": ["response"], "name": "X-Credits", "value": "10"}}}
        parts = [
            ep("/body", "/v1/chat/completions", {"weight_key": "usage.total_tokens", "weight_strategy": "body"}, 5),
            ep("/header", "/nothing", {"weight_key": "X-Credits", "weight_strategy": "header"}, 10, credits),
            ep("/count", "/nothing", {}, 2),
        ]
        return {"version": 3,
                "extra_config": {"governance/processors": {"quotas": [p[0] for p in parts]}},
                "endpoints": [p[1] for p in parts]}

    def test_the_backend_reports_the_weight(self, mock):
        gw = Envoy(self.config(mock.url), concurrency=1).wait_ready()
        try:
            def call(path, user):
                body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                return httpx.post(f"{gw.url}{path}", json=body, headers={"x-user": user}, timeout=10)
            # The chat answer's usage.total_tokens (at least 5) spends the limit of 5.
            first = call("/body", "ann")
            assert first.status_code == 200 and first.json()["usage"]["total_tokens"] >= 5, first.text
            assert call("/body", "ann").status_code == 429
            assert call("/body", "bob").status_code == 200  # another caller, another counter
            # The header says 10: the limit of 10 is spent by one call.
            assert call("/header", "ann").status_code == 404  # the mock's answer
            assert call("/header", "ann").status_code == 429
            # Without weight_key each call weighs one.
            assert [call("/count", "ann").status_code for _ in range(3)] == [404, 404, 429]
        finally:
            gw.stop()
