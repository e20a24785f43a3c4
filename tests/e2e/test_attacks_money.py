"""Adversarial tests through a real Envoy: every way around the gateway's controls that was
found, one section per kind of attack. Each test failed against the code before its fix."""
import asyncio
import json
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
            "governance/processors": {"quotas": [{"name": "money", "connection_name": "local", "rules": [
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
                  wait: float = 0.5, chunked: bool = False):
    """Sends a request over HTTP/1.1 (the first `send` bytes of the body only, when given;
    `chunked`: in chunks of 4 KB), waits, and closes the connection without reading an answer."""
    framing = "transfer-encoding: chunked" if chunked else f"content-length: {len(body)}"
    head = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{gw.port}", "content-type: application/json",
            framing, f"x-user: {user}", *[f"{k}: {v}" for k, v in headers.items()]]
    payload = body[:send]
    if chunked:
        pieces = [payload[i:i + 4096] for i in range(0, len(payload), 4096)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
        if send is None:
            payload += b"0\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
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


class TestMoneyHangUp:
    """Item 9: a client that hangs up after the provider has the request is charged."""

    PROMPT = "lorem ipsum dolor sit amet " * 1500  # 40.5 KB

    def body(self, **fields) -> bytes:
        return json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": self.PROMPT}],
                           **fields}).encode()

    def test_hang_up_is_charged_an_estimate_of_what_was_sent(self, money_gw, fresh_mock):
        user = "hangup-estimate"
        body = self.body()
        money_hang_up(money_gw, "/big/chat/completions", user, body, {"x-mock-hang-ms": "2000"})
        charged = money_wait(money_gw, user)
        # The provider had the request ...
        assert any(self.PROMPT[:100] in r["body"] for r in fresh_mock.requests())
        print(f"\n{len(body)} B prompt, client hung up while the provider worked: {charged:.0f} tokens charged")
        # ... so the call counts: at least a token per 4 bytes of the prompt text.
        assert charged >= len(self.PROMPT) / 4
        assert money_metric(money_gw, "tollgate_usage_estimated_total", tenant=user) == 1
        assert money_spent(money_gw, "/big/chat/completions", user) == charged

    def test_hang_up_of_a_chunked_request_is_charged(self, money_gw, fresh_mock):
        user = "hangup-chunked"
        money_hang_up(money_gw, "/big/chat/completions", user, self.body(), {"x-mock-hang-ms": "2000"},
                      chunked=True)
        charged = money_wait(money_gw, user)
        assert charged >= len(self.PROMPT) / 4
        assert money_spent(money_gw, "/big/chat/completions", user) == charged

    def test_http2_client_that_cancels_its_stream_is_charged(self, money_gw, fresh_mock):
        user = "hangup-h2"

        async def cancel():
            async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as c:
                post = c.post(f"{money_gw.url}/big/chat/completions", content=self.body(),
                              headers={"x-user": user, "x-mock-hang-ms": "2000",
                                       "content-type": "application/json"})
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(post, 0.5)

        asyncio.run(cancel())
        charged = money_wait(money_gw, user)
        assert any(self.PROMPT[:100] in r["body"] for r in fresh_mock.requests())
        print(f"\nHTTP/2 stream cancelled while the provider worked: {charged:.0f} tokens charged")
        assert charged >= len(self.PROMPT) / 4
        assert money_spent(money_gw, "/big/chat/completions", user) == charged

    def test_hang_up_keeps_the_reservation(self, money_gw, fresh_mock):
        user = "hangup-reserve"
        body = self.body(max_tokens=500)
        money_hang_up(money_gw, "/big-reserve/chat/completions", user, body, {"x-mock-hang-ms": "2000"})
        charged = money_wait(money_gw, user)
        print(f"\n{len(body)} B prompt, max_tokens 500, reserved, client hung up: {charged:.0f} tokens charged")
        assert charged >= len(self.PROMPT) / 4 + 500
        assert money_spent(money_gw, "/big-reserve/chat/completions", user) == charged

    def test_hang_up_before_the_body_is_complete_costs_nothing(self, money_gw, fresh_mock):
        user = "hangup-early"
        body = self.body(max_tokens=500)
        money_hang_up(money_gw, "/big-reserve/chat/completions", user, body, {}, send=len(body) // 2)
        time.sleep(1)
        assert not any(self.PROMPT[:100] in r["body"] for r in fresh_mock.requests())
        assert money_tokens(money_gw, user) == 0
        assert money_spent(money_gw, "/big-reserve/chat/completions", user) == 0


class TestMoneyCutStreamEstimate:
    """Item 10: a cut stream's estimate counts the whole request, not only message text."""

    def test_cut_stream_counts_tools_system_and_images(self, money_gw, fresh_mock):
        user = "cut-tools"
        tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": "d" * 10_000,
                                                    "parameters": {"type": "object", "properties": {}}}}
                 for i in range(10)]
        body = {"model": "gpt-4o-mini", "stream": True, "tools": tools,
                "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-user": user, "x-mock-tool": "0", "x-mock-text": "Hi", "x-mock-chunks": "1",
                   "x-mock-close-after": "2"}
        with httpx.stream("POST", f"{money_gw.url}/big/chat/completions", json=body, headers=headers,
                          timeout=30) as r:
            got = b""
            try:
                for c in r.iter_raw():
                    got += c
            except httpx.HTTPError:
                pass  # Envoy resets the client stream when the upstream dies mid-stream
        assert b'"content":"Hi"' in got
        charged = money_wait(money_gw, user)
        sent = len(json.dumps(tools))
        print(f"\nstream cut after \"Hi\" with {sent} B of tools: {charged:.0f} tokens charged")
        assert charged >= sent / 4
        assert money_spent(money_gw, "/big/chat/completions", user) == charged


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


class TestMoneyOneUsageRecord:
    """Item 12: one usage record per call feeds metrics, quotas and token limits alike."""

    def test_stream_cut_after_usage_is_charged_to_the_token_limit(self, money_gw, fresh_mock):
        user = "one-record"
        text = "one two three four five six seven eight nine ten"  # 13 prompt tokens at the mock
        body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": text}]}
        # role chunk, 2 pieces, finish, usage (13 + 2 = 15 tokens): cut before [DONE].
        headers = {"x-user": user, "x-mock-chunks": "2", "x-mock-close-after": "5"}
        with httpx.stream("POST", f"{money_gw.url}/tokens/chat/completions", json=body, headers=headers,
                          timeout=30) as r:
            assert r.status_code == 200
            try:
                for _ in r.iter_raw():
                    pass
            except httpx.HTTPError:
                pass
        counted = money_wait(money_gw, user)
        print(f"\nstream cut after reporting usage: {counted:.0f} tokens in metrics")
        assert counted == 15
        # The same 15 tokens went to the quota ...
        assert money_spent_quietly(money_gw, user) == 15
        # ... and to the token limit (10 per hour): the next request is refused.
        r = money_chat(money_gw, "/tokens/chat/completions", user)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limit_exceeded"

    def test_answer_without_usage_is_charged_to_the_token_limit(self, money_gw, fresh_mock):
        user = "one-record-buffered"
        # A provider error without usage: its estimate is charged everywhere alike.
        r = money_chat(money_gw, "/tokens/chat/completions", user, text="word " * 60,
                       headers={"x-mock-status": "500"})
        assert r.status_code == 500
        counted = money_wait(money_gw, user)
        assert counted >= 60 * 5 / 4
        r = money_chat(money_gw, "/tokens/chat/completions", user)
        assert r.status_code == 429, r.text


def money_spent_quietly(gw, user: str) -> int:
    """The quota spent by `user` on /tokens, read from the response headers of a call to the
    big endpoint of the same quota rule (the /tokens endpoint itself is rate limited)."""
    return money_spent(gw, "/big/chat/completions", user)
