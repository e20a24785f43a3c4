"""Adversarial tests through a real Envoy: every way around the gateway's controls that was
found, one section per kind of attack. Each test drives a real client request, checks what the
provider received and what the client got, and failed against the code before its fix."""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from harness import Envoy, header


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


# ---------------------------------------------------------------------------------------
# What reaches a provider, what reaches a client.
# ---------------------------------------------------------------------------------------

SECRET = "sk-ant-api03-LEAKleakLEAK0123456789abcdef"


def post(gw, path, body, headers=None):
    return httpx.post(f"{gw.url}{path}", json=body, headers=headers or {}, timeout=30)


def sse_events(raw: str) -> list[dict]:
    return [json.loads(line[6:]) for line in raw.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def openai_stream(raw: str) -> tuple[str, dict]:
    """(text, tool calls by index: name and arguments) of an OpenAI SSE stream."""
    text, calls = "", {}
    for ev in sse_events(raw):
        for c in ev.get("choices", []):
            d = c.get("delta", {})
            text += d.get("content") or ""
            for tc in d.get("tool_calls") or []:
                t = calls.setdefault(tc["index"], {"name": "", "arguments": ""})
                t["name"] += (tc.get("function") or {}).get("name") or ""
                t["arguments"] += (tc.get("function") or {}).get("arguments") or ""
    return text, calls


def anthropic_stream(raw: str) -> tuple[str, list[dict]]:
    """(text, tool_use blocks with their name and joined partial_json) of an Anthropic stream."""
    text, blocks = "", {}
    for line in raw.splitlines():
        if not line.startswith("data: "):
            continue
        ev = json.loads(line[6:])
        if ev["type"] == "content_block_start" and ev["content_block"]["type"] == "tool_use":
            blocks[ev["index"]] = {"name": ev["content_block"]["name"], "partial_json": ""}
        elif ev["type"] == "content_block_delta":
            d = ev["delta"]
            if d["type"] == "text_delta":
                text += d["text"]
            elif d["type"] == "input_json_delta":
                blocks[ev["index"]]["partial_json"] += d["partial_json"]
    return text, list(blocks.values())


def llm_backend(mock_url: str, provider: str = "openai") -> list:
    return [{"host": [mock_url], "url_pattern": "/v1/chat/completions" if provider == "openai" else "/v1/messages",
             "extra_config": {"ai/llm": {provider: {"v1": {"credentials": "sk-provider-attacks-0123456789"}}}}}]


# --- Items 13/14: PII masking and prompt guards see every text as the provider gets it ------

PII = {"detectors": ["email", "credit_card"], "action": "mask", "restore": True}
GUARD = {"guards": [{"name": "jailbreak", "kind": "regex", "severity": "high",
                     "config": {"patterns": ["(?i)ignore (all )?previous instructions"]}}]}


@pytest.fixture(scope="module")
def reach_gw(mock):
    cfg = {
        "version": 3,
        "extra_config": {"ai/prompt-guard": GUARD},
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": llm_backend(mock.url),
             "extra_config": {"security/pii": PII, "ai/prompt-guard": {"guards": ["jailbreak"]}}},
            {"endpoint": "/v1/messages", "method": "POST", "backend": llm_backend(mock.url, "anthropic"),
             "extra_config": {"security/pii": PII, "ai/prompt-guard": {"guards": ["jailbreak"]}}},
            {"endpoint": "/strict/v1/chat/completions", "method": "POST", "backend": llm_backend(mock.url),
             "extra_config": {"security/pii": {"detectors": ["email"], "action": "block"}}},
        ],
    }
    e = Envoy(cfg).wait_ready()
    yield e
    e.stop()


def parts(*texts):
    return [{"type": "text", "text": t} for t in texts]


class TestPiiReach:
    """PII masking and the prompt guard cover every text the provider receives: content
    parts read joined (a value split across parts is one value to the model), tool-call
    arguments (escapes decoded), Anthropic tool_use.input and tool_result blocks, tool
    schemas, `user`; placeholders the model repeats in tool-call arguments are restored."""

    def test_email_split_across_content_parts_is_masked_and_restored(self, reach_gw, fresh_mock):
        body = {"model": "m", "messages": [{"role": "user", "content": parts("mail bob@exa", "mple.com now")}]}
        r = post(reach_gw, "/v1/chat/completions", body, {"x-mock-text": "Dear [EMAIL_1]."})
        assert r.status_code == 200, r.text
        sent = fresh_mock.last()["body"]
        assert "bob@exa" not in sent and "mple.com" not in sent, sent
        content = json.loads(sent)["messages"][0]["content"]
        if isinstance(content, list):  # text-only parts may reach the provider joined
            content = "".join(p["text"] for p in content)
        assert content == "mail [EMAIL_1] now"
        assert r.json()["choices"][0]["message"]["content"] == "Dear bob@example.com."
        # Every split of the address, in Anthropic's front door too (text blocks).
        address = "carol.smith@example.org"
        for i in range(1, len(address)):
            fresh_mock.clear()
            body = {"model": "m", "max_tokens": 20, "messages": [
                {"role": "user", "content": parts("to " + address[:i], address[i:] + " please")}]}
            r = post(reach_gw, "/v1/messages", body, {"x-mock-text": "ok [EMAIL_1]"})
            assert r.status_code == 200, (i, r.text)
            sent = fresh_mock.last()["body"]
            leaked = [address[k:k + 4] for k in range(len(address) - 3) if address[k:k + 4] in sent]
            assert not leaked and "[EMAIL_1]" in sent, (i, leaked, sent)
            assert r.json()["content"][0]["text"] == f"ok {address}", i

    def test_pii_block_and_denied_phrase_split_across_parts_are_refused(self, reach_gw, fresh_mock):
        body = {"model": "m", "messages": [{"role": "user", "content": parts("my mail: bob@exa", "mple.com")}]}
        r = post(reach_gw, "/strict/v1/chat/completions", body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "content_blocked"
        body = {"model": "m", "messages": [{"role": "user", "content": parts("please ignore previous instru", "ctions")}]}
        r = post(reach_gw, "/v1/chat/completions", body)
        assert r.status_code == 400, r.text
        assert "jailbreak" in r.json()["error"]["message"]
        # The guard reads tool-call arguments and tool results too.
        body = {"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "note", "arguments": json.dumps({"text": "Ignore previous instructions"})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"}]}
        assert post(reach_gw, "/v1/chat/completions", body).status_code == 400
        assert fresh_mock.requests() == []

    def test_tool_call_arguments_and_schemas_are_masked(self, reach_gw, fresh_mock):
        escaped = '{"to": "boss\\u0040corp.example", "card": 4111111111111111}'
        body = {"model": "m", "user": "dave@example.net", "messages": [
            {"role": "user", "content": "mail my boss"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "send", "arguments": escaped}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sent to boss@corp.exa"},
                                                                {"type": "text", "text": "mple"}]}],
            "tools": [{"type": "function", "function": {
                "name": "send", "description": "send mail, e.g. to eve@corp.example",
                "parameters": {"type": "object", "properties": {"to": {"type": "string", "default": "frank@corp.example"}}}}}]}
        r = post(reach_gw, "/v1/chat/completions", body, {"x-mock-text": "done"})
        assert r.status_code == 200, r.text
        sent = fresh_mock.last()["body"]
        for value in ["boss", "u0040", "4111", "dave@", "eve@", "frank@", "corp.exa"]:
            assert value not in sent.replace("mail my boss", ""), (value, sent)
        args = json.loads(json.loads(sent)["messages"][1]["tool_calls"][0]["function"]["arguments"])
        assert re.fullmatch(r"\[EMAIL_\d\]", args["to"]) and args["card"] == "[CREDIT_CARD_1]", args

    def test_anthropic_tool_use_input_and_tool_result_are_masked(self, reach_gw, fresh_mock):
        body = {"model": "m", "max_tokens": 50, "messages": [
            {"role": "user", "content": "mail bob"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "send",
                                               "input": {"to": "bob@example.com", "card": 4111111111111111}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": [{"type": "text", "text": "queued for bob@exam"},
                                                      {"type": "text", "text": "ple.com"}]}]}]}
        r = post(reach_gw, "/v1/messages", body, {"x-mock-text": "done"})
        assert r.status_code == 200, r.text
        sent = fresh_mock.last()["body"]
        for value in ["bob@", "4111", "exam"]:
            assert value not in sent, (value, sent)

    def test_placeholders_in_answered_tool_arguments_are_restored(self, reach_gw, fresh_mock):
        tools = [{"type": "function", "function": {"name": "send", "parameters": {"type": "object"}}}]
        body = {"model": "m", "messages": [{"role": "user", "content": "mail bob@example.com"}], "tools": tools}
        h = {"x-mock-tool-args": '{"to":"[EMAIL_1]"}'}
        r = post(reach_gw, "/v1/chat/completions", body, h)
        assert r.status_code == 200, r.text
        assert "[EMAIL_1]" in fresh_mock.last()["body"]
        call = r.json()["choices"][0]["message"]["tool_calls"][0]
        assert json.loads(call["function"]["arguments"]) == {"to": "bob@example.com"}
        for chunks in (2, 5, 17):
            r = post(reach_gw, "/v1/chat/completions", {**body, "stream": True}, {**h, "x-mock-chunks": str(chunks)})
            _, calls = openai_stream(r.text)
            assert json.loads(calls[0]["arguments"]) == {"to": "bob@example.com"}, (chunks, calls)


# --- Item 15: the exfiltration guard reads every text field the client receives -------------

@pytest.fixture(scope="module")
def exfil_gw(mock):
    cfg = {
        "version": 3,
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": llm_backend(mock.url),
             "extra_config": {"security/exfiltration": {"action": "redact", "window": 64}}},
            {"endpoint": "/v1/messages", "method": "POST", "backend": llm_backend(mock.url),
             "extra_config": {"security/exfiltration": {"action": "redact", "window": 64}}},
            {"endpoint": "/strict/v1/chat/completions", "method": "POST", "backend": llm_backend(mock.url),
             "extra_config": {"security/exfiltration": {"action": "block"}}},
        ],
    }
    e = Envoy(cfg).wait_ready()
    yield e
    e.stop()


def tool_named(name: str) -> list[dict]:
    return [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}]


class TestExfilReach:
    """The exfiltration guard scans tool-call names (JSON answers and streams, both front
    doors), and tool-call arguments as the client will parse them (JSON escapes cannot
    hide a value)."""

    def test_secret_as_tool_name_is_redacted(self, exfil_gw, fresh_mock):
        body = {"model": "m", "messages": [{"role": "user", "content": "go"}], "tools": tool_named(SECRET)}
        r = post(exfil_gw, "/v1/chat/completions", body)
        assert r.status_code == 200, r.text
        assert SECRET not in r.text and "LEAK" not in r.text, r.text
        assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "[REDACTED]"
        for chunks in (2, 9):
            r = post(exfil_gw, "/v1/chat/completions", {**body, "stream": True}, {"x-mock-chunks": str(chunks)})
            assert "LEAK" not in r.text, r.text
            _, calls = openai_stream(r.text)
            assert calls[0]["name"] == "[REDACTED]"
        anth = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "go"}],
                "tools": [{"name": SECRET, "input_schema": {"type": "object"}}]}
        r = post(exfil_gw, "/v1/messages", anth)
        assert "LEAK" not in r.text and r.json()["content"][0]["name"] == "[REDACTED]", r.text
        r = post(exfil_gw, "/v1/messages", {**anth, "stream": True})
        assert "LEAK" not in r.text, r.text
        assert anthropic_stream(r.text)[1][0]["name"] == "[REDACTED]"
        r = post(exfil_gw, "/strict/v1/chat/completions", body)
        assert r.status_code == 502 and r.json()["error"]["code"] == "response_blocked", r.text
        r = post(exfil_gw, "/strict/v1/chat/completions", {**body, "stream": True})
        assert "response_blocked" in r.text and "LEAK" not in r.text, r.text

    def test_escaped_secret_in_tool_arguments_is_redacted(self, exfil_gw, fresh_mock):
        hidden = "".join(f"\\u{ord(c):04x}" for c in SECRET[:6]) + SECRET[6:]
        body = {"model": "m", "messages": [{"role": "user", "content": "go"}], "tools": tool_named("f")}
        h = {"x-mock-tool-args": '{"token":"' + hidden + '"}'}
        r = post(exfil_gw, "/v1/chat/completions", body, h)
        assert r.status_code == 200, r.text
        args = json.loads(r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        assert args == {"token": "[REDACTED]"}, args
        for chunks in (2, 7, 31):
            r = post(exfil_gw, "/v1/chat/completions", {**body, "stream": True}, {**h, "x-mock-chunks": str(chunks)})
            _, calls = openai_stream(r.text)
            assert json.loads(calls[0]["arguments"]) == {"token": "[REDACTED]"}, (chunks, calls)


# --- Item 16: configured secrets never leave in answers or logs -----------------------------

PROVIDER_KEY = "sk-provider-secret-0123456789abcdef"
PLAIN_KEY = "plain-upstream-token-0123456789"
CLIENT_KEY = "tg-client-key-0123456789"
ADMIN_KEY = "tg-admin-key-0123456789"
ALL_SECRETS = (PROVIDER_KEY, PLAIN_KEY, CLIENT_KEY, ADMIN_KEY)


def steered(backend: dict, headers: dict) -> dict:
    mods = [{"header.Modifier": {"scope": ["request"], "name": k, "value": v}} for k, v in headers.items()]
    return {**backend, "extra_config": {**backend["extra_config"],
                                        "modifier/martian": {"fifo.Group": {"scope": ["request"], "modifiers": mods}}}}


@pytest.fixture(scope="module")
def secrets_gw(mock):
    key = '{{ env "ATTACK_PROVIDER_KEY" }}'
    openai = {"host": [mock.url], "url_pattern": "/v1/chat/completions",
              "extra_config": {"ai/llm": {"openai": {"v1": {"credentials": key}}}}}
    anthropic = {"host": [mock.url], "url_pattern": "/v1/messages",
                 "extra_config": {"ai/llm": {"anthropic": {"v1": {"credentials": key}}}}}
    cfg = {
        "version": 3,
        "extra_config": {"auth/api-keys": {"keys": [
            {"key": '{{ env "ATTACK_CLIENT_KEY" }}', "roles": ["user"]},
            {"key": ADMIN_KEY, "roles": ["admin"]}]}},
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": [openai]},
            {"endpoint": "/v1/messages", "method": "POST", "backend": [anthropic]},
            # Failover attempts are callouts: they carry the backends' modifiers, not the
            # client's headers, so the mock is steered by modifiers here.
            {"endpoint": "/failover/v1/chat/completions", "method": "POST",
             "backend": [steered(openai, {"x-mock-status": "503"}),
                         steered(openai, {"x-mock-status": "401", "x-mock-echo-key": "1"})],
             "extra_config": {"ai/routing": {"failover": True}}},
            {"endpoint": "/failover-ok/v1/chat/completions", "method": "POST",
             "backend": [steered(openai, {"x-mock-status": "503"}), steered(openai, {"x-mock-echo-key": "1"})],
             "extra_config": {"ai/routing": {"failover": True}}},
            {"endpoint": "/plain", "method": "POST", "backend": [{
                "host": [mock.url], "url_pattern": "/v1/chat/completions",
                "extra_config": {"modifier/martian": {"header.Modifier": {
                    "scope": ["request"], "name": "Authorization",
                    "value": 'Bearer {{ env "ATTACK_PLAIN_KEY" }}'}}}}]},
            {"endpoint": "/q/chat", "method": "POST", "backend": [openai],
             "extra_config": {"auth/api-keys": {"roles": ["admin"], "strategy": "query_string", "identifier": "key"}}},
        ],
    }
    e = Envoy(cfg, env={"ATTACK_PROVIDER_KEY": PROVIDER_KEY, "ATTACK_PLAIN_KEY": PLAIN_KEY,
                        "ATTACK_CLIENT_KEY": CLIENT_KEY}).wait_ready()
    yield e
    e.stop()


def leaks(r: httpx.Response) -> list[str]:
    seen = r.text + json.dumps(dict(r.headers))
    return [k for k in (PROVIDER_KEY, PLAIN_KEY) if k in seen]


ECHO = {"x-mock-echo-key": "1"}
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ASK_ANTHROPIC = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


class TestSecrets:
    """A provider that echoes the credential the gateway sent it (in an error message, in a
    response header) never hands it to the client: both front doors, JSON and streams,
    failover replies, plain endpoints (same length: content-length stays right). A client
    key in the query string never reaches the access log, nor any secret Envoy's log."""

    def test_provider_echo_in_error_body_and_headers(self, secrets_gw, fresh_mock):
        for stream in (False, True):
            for status in ("401", "403", "400", "500"):
                h = {**ECHO, "x-mock-status": status}
                r = post(secrets_gw, "/v1/chat/completions", {**ASK, "stream": stream}, h)
                assert r.status_code >= 400 and not leaks(r), (stream, status, r.text, r.headers)
                assert "[REDACTED]" in r.text and r.headers["x-echo-credential"] == "Bearer [REDACTED]"
                r = post(secrets_gw, "/v1/messages", {**ASK_ANTHROPIC, "stream": stream}, h)
                assert r.status_code >= 400 and not leaks(r), (stream, status, r.text, r.headers)
                assert r.json()["type"] == "error" and r.headers["x-echo-credential"] == "[REDACTED]"
        # Successful answers: the echoing header, and a key in the answer text.
        for stream in (False, True):
            r = post(secrets_gw, "/v1/chat/completions", {**ASK, "stream": stream},
                     {**ECHO, "x-mock-text": f"your key is {PROVIDER_KEY}", "x-mock-chunks": "1"})
            assert r.status_code == 200 and not leaks(r), r.text
            assert "your key is [REDACTED]" in r.text
        assert fresh_mock.last()["headers"].count(["authorization", f"Bearer {PROVIDER_KEY}"]) == 1

    def test_failover_reply_is_scrubbed(self, secrets_gw, fresh_mock):
        r = post(secrets_gw, "/failover/v1/chat/completions", ASK)
        assert r.status_code == 502 and not leaks(r), (r.text, r.headers)
        assert r.headers["x-echo-credential"] == "Bearer [REDACTED]" and "[REDACTED]" in r.text
        r = post(secrets_gw, "/failover-ok/v1/chat/completions", ASK)
        assert r.status_code == 200 and not leaks(r), (r.text, r.headers)
        assert r.headers["x-echo-credential"] == "Bearer [REDACTED]"
        assert len(fresh_mock.requests()) == 4

    def test_plain_endpoint_echo_is_masked_keeping_the_length(self, secrets_gw, fresh_mock):
        r = post(secrets_gw, "/plain", ASK, {**ECHO, "x-mock-status": "401"})
        assert r.status_code == 401 and not leaks(r), (r.text, r.headers)
        assert r.json()["error"]["message"].endswith("Bearer [REDACTED]*********************")
        for stream in (False, True):
            r = post(secrets_gw, "/plain", {**ASK, "stream": stream},
                     {**ECHO, "x-mock-text": f"token {PLAIN_KEY}!", "x-mock-chunks": "1"})
            assert r.status_code == 200 and not leaks(r), (r.text, r.headers)
            assert "token [REDACTED]" in r.text
        assert header(fresh_mock.last(), "authorization") == [f"Bearer {PLAIN_KEY}"]

    def test_query_string_key_never_in_the_access_log(self, secrets_gw, fresh_mock):
        # 401 (unknown key), 403 (a real key without the role), 200 (the right key).
        for key, status in ((CLIENT_KEY + "x", 401), (CLIENT_KEY, 403), (ADMIN_KEY, 200)):
            r = post(secrets_gw, f"/q/chat?trace=1&key={key}", ASK)
            assert r.status_code == status, r.text
        deadline = time.time() + 10
        while secrets_gw.access_log().count('"POST /q/chat"') < 2 and time.time() < deadline:
            time.sleep(0.2)
        log = secrets_gw.access_log()
        assert log.count('"POST /q/chat"') >= 2, log
        for k in (CLIENT_KEY, ADMIN_KEY):
            assert k not in log, log

    def test_no_secret_in_envoys_log(self, secrets_gw):
        """Runs after the others of this class: Envoy's own log (info, filter at info)."""
        log = secrets_gw.log()
        assert "tollgate" in log
        for k in ALL_SECRETS:
            assert k not in log, k


# --- Item 17: metric labels are bounded ------------------------------------------------------

MAX_TENANTS = 5


@pytest.fixture(scope="module")
def metrics_gw(mock):
    backend = [{"host": [mock.url], "url_pattern": "/v1/chat/completions",
                "extra_config": {"ai/llm": {"openai": {"v1": {
                    "credentials": "sk-provider-metrics-0123456789", "aliases": ["fast"], "default": True}}}}}]
    cfg = {
        "version": 3,
        "extra_config": {
            "ai/usage": {"tenant_header": "x-tenant", "max_tenant_labels": MAX_TENANTS},
            "governance/processors": {"quotas": [{"name": "q", "connection_name": "none", "rules": [
                {"name": "tiny", "limits": [{"amount": 1, "unit": "day"}]}]}]},
        },
        "endpoints": [
            {"endpoint": "/v1/chat/completions", "method": "POST", "backend": backend},
            {"endpoint": "/quota/v1/chat/completions", "method": "POST", "backend": backend,
             "extra_config": {"governance/quota": {"quota_name": "q", "tier_key": "X-Plan", "tiers": [
                 {"rule_name": "tiny", "tier_value_as": "*", "strategy": "header", "key": "X-Tenant"}]}}},
        ],
    }
    e = Envoy(cfg).wait_ready()
    yield e
    e.stop()


def tollgate_series(stats: str) -> list[str]:
    return [line for line in stats.splitlines() if line.startswith("tollgate_")]


def label_values(series: list[str], label: str) -> set[str]:
    return {m.group(1) for line in series if (m := re.search(label + r'="([^"]*)"', line))}


class TestMetricCardinality:
    """Clients choose model names (a pass-through backend takes any) and tenant values:
    each new value would be a new Envoy stat for the life of the process. Labels come from
    bounded sets: configured models and aliases, else `other`; the first MAX_TENANTS
    tenants, else `other` (quota rejections too). 300 distinct values add no series once
    the sets are full."""

    def send(self, gw, start: int, n: int):
        with httpx.Client(timeout=30) as c:
            for i in range(start, start + n):
                model = "fast" if i % 3 == 0 else f"model-{i}"
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                h = {"x-tenant": f"tenant-{i}", "x-mock-no-record": "1"}
                assert c.post(f"{gw.url}/v1/chat/completions", json=body, headers=h).status_code == 200
                # A quota of 1 per tenant per day: the first call passes, the second is a 429.
                for want in (200, 429):
                    r = c.post(f"{gw.url}/quota/v1/chat/completions", json=body, headers=h)
                    assert r.status_code == want, r.text

    def test_labels_stay_bounded_under_300_distinct_values(self, metrics_gw):
        self.send(metrics_gw, 0, 30)
        early = tollgate_series(metrics_gw.stats())
        self.send(metrics_gw, 30, 270)
        stats = metrics_gw.stats()
        late = tollgate_series(stats)
        assert label_values(late, "model") == {"fast", "other"}, label_values(late, "model")
        tenants = label_values(late, "tenant")
        assert len(tenants - {"other"}) == MAX_TENANTS and "other" in tenants, tenants
        rejected = [s for s in late if s.startswith("tollgate_quota_rejected_total")]
        assert label_values(rejected, "tenant") <= tenants and len(rejected) <= MAX_TENANTS + 1, rejected
        assert len(late) == len(early), (len(early), len(late))
        assert not [s for s in stats.splitlines() if "model-2" in s or "tenant-29" in s]
