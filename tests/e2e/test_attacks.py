"""Adversarial tests through a real Envoy: every way around the gateway's controls that was
found, one section per kind of attack. Each test failed against the code before its fix."""
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from harness import Envoy


# ---------------------------------------------------------------------------------------
# Money: budgets, token limits and accounting that a client could escape or wrap.
# ---------------------------------------------------------------------------------------

MONEY_BUDGET = 10_000_000


class MoneyStub:
    """An OpenAI-compatible provider that reports whatever usage the request's
    `x-stub-usage` header holds, verbatim (JSON text: numbers beyond u64, floats)."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                usage = self.headers.get("x-stub-usage", '{"prompt_tokens":1,"completion_tokens":1}')
                body = ('{"id":"chatcmpl-stub","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
                        '"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
                        '"finish_reason":"stop"}],"usage":' + usage + '}').encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def money_config(mock_url: str, stub_url: str) -> dict:
    def openai(host=mock_url):
        return [{"host": [host], "url_pattern": "/v1/chat/completions",
                 "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": "sk-o",
                                                               "variables": {"model": "gpt-4o-mini"}}}}}}]

    def quota(rule: str, key: str = "X-User", weight: str | None = "usage.total_tokens", reserve=False):
        q = {"quota_name": "money", "tier_key": "X-Plan", "reserve": reserve,
             "tiers": [{"rule_name": rule, "tier_value_as": "*", "strategy": "header", "key": key}]}
        if weight:
            q["weight_key"] = weight
        return {"governance/quota": q}

    def ep(path, extra, backend=None):
        return {"endpoint": path, "method": "POST", "backend": backend or openai(), "extra_config": extra}

    return {
        "version": 3,
        "extra_config": {
            "governance/processors": {"quotas": [{"name": "money", "rules": [
                {"name": "two", "limits": [{"amount": 2, "unit": "hour"}]},
                {"name": "thousand", "limits": [{"amount": 1000, "unit": "hour"}]},
                {"name": "big", "limits": [{"amount": MONEY_BUDGET, "unit": "hour"}]},
            ]}]},
            "ai/usage": {"response_headers": True, "tenant_header": "X-User"},
        },
        "endpoints": [
            ep("/rl-key/chat/completions", {"qos/ratelimit/router": {
                "client_max_rate": 2, "every": "1h", "strategy": "header", "key": "Authorization"}}),
            ep("/quota-key/chat/completions", quota("two", key="Authorization", weight=None)),
            ep("/tokens/chat/completions", quota("big") | {"qos/ratelimit/router": {
                "client_max_tokens": 10, "client_tokens_every": "1h", "strategy": "header", "key": "X-User"}}),
            ep("/reserve/chat/completions", quota("thousand", reserve=True)),
            ep("/big-reserve/chat/completions", quota("big", reserve=True)),
            ep("/big/chat/completions", quota("big")),
            ep("/stub/chat/completions", quota("thousand"), backend=openai(stub_url)),
            {"endpoint": "/v1/messages", "method": "POST", "backend": openai(),
             "extra_config": quota("thousand", reserve=True)},
        ],
    }


@pytest.fixture(scope="module")
def money_stub():
    s = MoneyStub()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def money_gw(mock, money_stub):
    e = Envoy(money_config(mock.url, money_stub.url), concurrency=2).wait_ready()
    yield e
    e.stop()


def money_chat(gw, path, user, text="hi", headers=None, **fields):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **fields}
    return httpx.post(f"{gw.url}{path}", json=body, headers={"x-user": user, **(headers or {})}, timeout=30)


def money_metric(gw, name: str, **labels) -> float:
    total = 0.0
    for line in gw.stats().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def money_tokens(gw, user: str) -> float:
    return sum(money_metric(gw, "tollgate_tokens_total", tenant=user, kind=k) for k in ("prompt", "completion"))


def money_wait(gw, user: str, timeout=10.0) -> float:
    """The tokens accounted to `user`, once some are (on_done comes after the client left)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (n := money_tokens(gw, user)) > 0:
            return n
        time.sleep(0.1)
    return 0.0


def money_spent(gw, path: str, user: str, limit: int = MONEY_BUDGET) -> int:
    """What `user`'s budget on `path` holds, read from a probe call's quota headers (the
    probe's own usage left out)."""
    r = money_chat(gw, path, user, max_tokens=1)
    assert r.status_code == 200, r.text
    own = int(r.headers["x-tollgate-total-tokens"])
    return limit - int(r.headers["x-quota-remaining"]) - own


def money_hang_up(gw, path: str, user: str, body: bytes, headers: dict, send: int | None = None,
                  wait: float = 0.5):
    """Sends a request (the first `send` bytes of the body only, when given), waits, and
    closes the connection without reading an answer."""
    head = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{gw.port}", "content-type: application/json",
            f"content-length: {len(body)}", f"x-user: {user}", *[f"{k}: {v}" for k, v in headers.items()]]
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:send])
    time.sleep(wait)
    s.close()


def money_spellings(key: str) -> list[str]:
    """16 ways to send one API key: scheme in any case, extra whitespace, no scheme, another scheme."""
    schemes = ("Bearer", "bearer", "BEARER", "BeArEr", "bEARER", "beaRER",
               "Bearer ", "bearer ", "BEARER ", "BEarer", "beARer", "bearER")
    return [f"{s} {key}" for s in schemes] + [f"Bearer\t{key}", f"bearer \t {key}", key, f"Token {key}"]


class TestMoneyOneKeyOneBudget:
    """Item 8: limits keyed on a credential see one client however its scheme is spelled."""

    KEY = "sk-client-7f3a9c"
    SPELLINGS = money_spellings(KEY)

    def test_rate_limit_counts_every_spelling_of_one_key_once(self, money_gw, fresh_mock):
        codes = [money_chat(money_gw, "/rl-key/chat/completions", "rl", headers={"authorization": a}).status_code
                 for a in self.SPELLINGS]
        print(f"\nrate limit of 2 keyed on Authorization: {codes.count(200)} of {len(codes)} spellings accepted")
        assert len(self.SPELLINGS) == 16
        assert codes[:2] == [200, 200] and codes[2:] == [429] * 14, codes
        # Another key is another client.
        r = money_chat(money_gw, "/rl-key/chat/completions", "rl", headers={"authorization": "Bearer other"})
        assert r.status_code == 200

    def test_quota_counts_every_spelling_of_one_key_once(self, money_gw, fresh_mock):
        spellings = money_spellings(self.KEY + "-quota")
        codes = [money_chat(money_gw, "/quota-key/chat/completions", "q", headers={"authorization": a}).status_code
                 for a in spellings]
        print(f"\nquota of 2 keyed on Authorization: {codes.count(200)} of {len(codes)} spellings accepted")
        assert codes[:2] == [200, 200] and codes[2:] == [429] * 14, codes


class TestMoneyAbsurdNumbers:
    """Item 11: absurd client numbers are refused, absurd provider numbers saturate."""

    def test_max_tokens_beyond_any_model_is_400(self, money_gw, fresh_mock):
        for n in (18446744073709551615, 18446744073709551614, 2**63, 2**32, 2147483648):
            r = money_chat(money_gw, "/reserve/chat/completions", "absurd", max_tokens=n)
            assert r.status_code == 400, (n, r.text)
            err = r.json()["error"]
            assert err["param"] == "max_tokens" and "max_tokens" in err["message"], err
            r = money_chat(money_gw, "/reserve/chat/completions", "absurd", max_completion_tokens=n)
            assert r.status_code == 400, (n, r.text)
        assert fresh_mock.requests() == []
        # The largest accepted value cannot pass a 1000-token budget either.
        r = money_chat(money_gw, "/reserve/chat/completions", "absurd", max_tokens=2147483647)
        assert r.status_code == 429, r.text
        # Anthropic's door answers in its own shape.
        r = httpx.post(f"{money_gw.url}/v1/messages", headers={"x-user": "absurd"}, timeout=30, json={
            "model": "gpt-4o-mini", "max_tokens": 18446744073709551615,
            "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 400, r.text
        assert r.json()["type"] == "error" and "max_tokens" in r.json()["error"]["message"]

    @pytest.mark.parametrize("usage", [
        '{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615}',
        '{"prompt_tokens":9223372036854775808,"completion_tokens":1}',
        '{"prompt_tokens":1e30,"completion_tokens":5}',
        '{"prompt_tokens":18446744073709551616,"completion_tokens":5}',
    ])
    def test_overflowing_provider_usage_spends_the_budget(self, money_gw, usage):
        user = "overflow-" + str(abs(hash(usage)) % 10**8)
        r = money_chat(money_gw, "/stub/chat/completions", user, headers={"x-stub-usage": usage})
        assert r.status_code == 200, r.text
        assert r.headers["x-quota-remaining"] == "0", r.headers
        r = money_chat(money_gw, "/stub/chat/completions", user, headers={"x-stub-usage": usage})
        assert r.status_code == 429, r.text
