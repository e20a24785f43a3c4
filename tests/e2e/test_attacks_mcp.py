"""Adversarial tests of the MCP endpoints through a real Envoy (tests/e2e/mcp_world.py):
someone else's session, tools a caller may not see or call, arguments that break the
schema, personal data in arguments, a secret in a tool's result, messages that are not
JSON-RPC, unknown methods, and upstreams that die mid-answer. Each checks what the client
got, what the upstream received (nothing it should not), and that Envoy still serves."""
from __future__ import annotations

import json

import anyio
import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_world import KEYS

ACCEPT = "application/json, text/event-stream"


def headers(key: str, sid: str | None = None, **extra) -> dict:
    h = {"authorization": f"Bearer {key}", "accept": ACCEPT, "content-type": "application/json", **extra}
    if sid:
        h["mcp-session-id"] = sid
    return h


def message(r: httpx.Response) -> dict:
    """The JSON-RPC message of an answer (JSON, or the last event of an SSE stream)."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        data = [l[6:] for l in r.text.splitlines() if l.startswith("data: ")]
        return json.loads(data[-1])
    return r.json()


def rpc(id_, method, params=None) -> dict:
    m = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        m["params"] = params
    return m


def open_session(url: str, key: str) -> str:
    r = httpx.post(url, headers=headers(key), timeout=10, json=rpc(1, "initialize", {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}}))
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    httpx.post(url, headers=headers(key, sid), timeout=10, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return sid


def server_call(world, id_: int, name: str, args: dict | None = None) -> httpx.Response:
    """Bob's tools/call on the gateway's own server (`/mcp`) in a session of its own; the
    REST backend's record cleared just before."""
    url = f"{world.gw.url}/mcp"
    sid = open_session(url, KEYS["bob"])
    world.ups["rest"].clear()
    params = {"name": name} | ({} if args is None else {"arguments": args})
    return httpx.post(url, headers=headers(KEYS["bob"], sid), timeout=10, json=rpc(id_, "tools/call", params))


def still_serving(world):
    """Envoy answers the next client normally."""
    r = httpx.post(f"{world.gw.url}/hub", headers=headers(KEYS["bob"]), timeout=10, json=rpc(99, "ping"))
    assert r.status_code == 200 and message(r)["result"] == {}


class TestSessionsOfOthers:
    def test_another_callers_session_on_the_gateways_server(self, mcp_world):
        url = f"{mcp_world.gw.url}/mcp"
        sid = open_session(url, KEYS["alice"])
        mine = httpx.post(url, headers=headers(KEYS["alice"], sid), timeout=10, json=rpc(2, "tools/list"))
        assert mine.status_code == 200 and "admin" in mine.text
        for spelling in (sid, sid.upper(), sid[:-1], sid + "0"):
            r = httpx.post(url, headers=headers(KEYS["bob"], spelling), timeout=10, json=rpc(3, "tools/list"))
            assert r.status_code == 404, spelling
            assert r.json()["error"]["code"] == -32001
            assert "admin" not in r.text
        # Without a key at all: 401, as a JSON-RPC error.
        r = httpx.post(url, headers={"mcp-session-id": sid, "accept": ACCEPT}, timeout=10, json=rpc(4, "tools/list"))
        assert r.status_code == 401 and r.json()["error"]["code"] == -32600

    def test_another_callers_session_through_the_relay_never_reaches_the_upstream(self, mcp_world):
        url = f"{mcp_world.gw.url}/relay"
        up = mcp_world.ups["weather"]
        sid = open_session(url, KEYS["alice"])
        bobs = open_session(url, KEYS["bob"])
        up.clear()
        # Bob's own session first, alice's second: the gateway would check one, the upstream
        # might use the other.
        for pair in ((bobs, sid), (sid, bobs)):
            two = [(k, v) for k, v in headers(KEYS["bob"]).items()] + [("mcp-session-id", x) for x in pair]
            r = httpx.post(url, headers=two, timeout=10, json=rpc(4, "tools/list"))
            assert r.status_code == 400 and r.json()["error"]["code"] == -32600, r.text
        r = httpx.post(url, headers=headers(KEYS["bob"], sid), timeout=10,
                       json=rpc(5, "tools/call", {"name": "forecast", "arguments": {"city": "x"}}))
        assert r.status_code == 404 and r.json()["error"]["code"] == -32001
        # A session id the gateway never gave out is refused the same way.
        r = httpx.post(url, headers=headers(KEYS["bob"], "f" * 32), timeout=10, json=rpc(6, "tools/list"))
        assert r.status_code == 404
        # Nor may bob read alice's stream or end her session.
        for method in ("GET", "DELETE"):
            r = httpx.request(method, url, headers=headers(KEYS["bob"], sid), timeout=10)
            assert r.status_code == 404 and r.json()["error"]["code"] == -32001, method
        assert up.requests() == [], "nothing was forwarded"
        ok = httpx.post(url, headers=headers(KEYS["alice"], sid), timeout=10, json=rpc(7, "tools/list"))
        assert ok.status_code == 200 and "forecast" in ok.text


class TestToolAccess:
    def test_a_denied_tool_is_hidden_and_uncallable(self, mcp_world):
        files = mcp_world.ups["files"]
        url = f"{mcp_world.gw.url}/hub"
        listed = httpx.post(url, headers=headers(KEYS["bob"]), timeout=20, json=rpc(1, "tools/list"))
        tools = [t["name"] for t in message(listed)["result"]["tools"]]
        assert "files__read" not in tools and "files__delete" not in tools
        files.clear()
        spellings = ("files__read", "files__delete", "FILES__read", "files__READ", "files__read ", " files__read",
                     "files____read", "nope__read", "read", "files__read\u200b", "files\u00a0__read",
                     "\uff46iles__read", "files__r\u0435ad", "files__read\u0000", "files__read\n")
        for name in spellings:
            r = httpx.post(url, headers=headers(KEYS["bob"]), timeout=10,
                           json=rpc(2, "tools/call", {"name": name, "arguments": {"path": "/etc/passwd"}}))
            m = message(r)
            assert r.status_code == 200 and m["error"]["code"] == -32602, name
            assert m["error"]["message"] == f"Unknown tool: {name}"
        # files__delete is named by no rule: invisible even to analysts.
        r = httpx.post(url, headers=headers(KEYS["alice"]), timeout=10,
                       json=rpc(3, "tools/call", {"name": "files__delete", "arguments": {"path": "/"}}))
        assert message(r)["error"]["code"] == -32602
        assert not any('"tools/call"' in q["body"] for q in files.requests()), "no denied call reached the upstream"

    def test_a_denied_tool_of_the_gateways_server(self, mcp_world):
        r = server_call(mcp_world, 2, "admin")
        assert message(r)["error"] == {"code": -32602, "message": "Unknown tool: admin"}
        assert mcp_world.ups["rest"].requests() == []

    def test_a_tools_rate_limit(self, mcp_world):
        url = f"{mcp_world.gw.url}/hub"
        call = rpc(4, "tools/call", {"name": "weather__alerts", "arguments": {"region": "north"}})
        answers = [httpx.post(url, headers=headers(KEYS["alice"]), timeout=20, json=call) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert message(answers[0])["result"]["content"][0]["text"] == "no alerts in north"
        assert answers[2].json()["error"]["code"] == -32000 and int(answers[2].headers["retry-after"]) > 0
        # Another caller has a budget of its own; other tools are not limited.
        assert httpx.post(url, headers=headers(KEYS["bob"]), timeout=20, json=call).status_code == 200
        other = rpc(5, "tools/call", {"name": "weather__forecast", "arguments": {"city": "a"}})
        assert httpx.post(url, headers=headers(KEYS["alice"]), timeout=20, json=other).status_code == 200


class TestArguments:
    @pytest.mark.parametrize("args", [{}, {"id": 42}, {"id": "../../admin"}, {"id": "42/../1"}, {"id": "4 2"},
                                      {"id": "42", "extra": {"deep": [1] * 3}} | {"id": "%2e%2e"}])
    def test_arguments_failing_the_schema_never_reach_the_backend(self, mcp_world, args):
        rest = mcp_world.ups["rest"]
        r = server_call(mcp_world, 8, "story", args)
        m = message(r)
        assert r.status_code == 200 and m["id"] == 8 and m["error"]["code"] == -32602, m
        assert rest.requests() == []

    def test_a_schema_failure_through_the_sdk_is_an_mcp_error(self, mcp_world):
        from mcp.shared.exceptions import MCPError

        async def go():
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEYS['bob']}"})
            async with Client(streamable_http_client(f"{mcp_world.gw.url}/mcp", http_client=http)) as c:
                try:
                    await c.call_tool("note", {"text": "x" * 500})
                except MCPError as e:
                    return e
                return None

        e = anyio.run(go)
        assert isinstance(e, MCPError) and e.error.code == -32602
        assert "$.text: must be at most 200 characters long" in e.error.message

    def test_pii_in_arguments_is_masked_for_the_tool_and_restored_for_the_client(self, mcp_world):
        files = mcp_world.ups["files"]
        files.clear()
        r = httpx.post(f"{mcp_world.gw.url}/hub", headers=headers(KEYS["bob"]), timeout=20,
                       json=rpc(9, "tools/call", {"name": "files__echo", "arguments": {"text": "write to ann@example.com"}}))
        assert message(r)["result"]["content"][0]["text"] == "echo: write to ann@example.com"
        sent = [q["body"] for q in files.requests() if '"tools/call"' in q["body"]]
        assert sent and "ann@example.com" not in sent[0] and "[EMAIL_1]" in sent[0]

    def test_pii_in_a_workflow_tools_arguments(self, mcp_world):
        r = server_call(mcp_world, 10, "note", {"text": "mail bob@example.org"})
        assert "bob@example.org" in r.text, "restored for the client"
        assert "bob@example.org" not in mcp_world.ups["rest"].requests()[-1]["body"]


    @pytest.mark.parametrize("args", [{"text": "key AKIAIOSFODNN7EXAMPLE"},
                                      {"text": "x", "AKIAIOSFODNN7EXAMPLE": "in a key"},
                                      {"text": ["nested", {"deeper": "AKIAIOSFODNN7EXAMPLE"}]}])
    def test_a_secret_in_arguments_never_reaches_the_tool(self, mcp_world, args):
        files = mcp_world.ups["files"]
        files.clear()
        r = httpx.post(f"{mcp_world.gw.url}/hub", headers=headers(KEYS["bob"]), timeout=20,
                       json=rpc(18, "tools/call", {"name": "files__echo", "arguments": args}))
        m = message(r)
        assert m["error"]["code"] == -32602 and "AWS_KEY" in m["error"]["message"], m
        assert "AKIA" not in r.text
        assert not any("AKIA" in q["body"] for q in files.requests()), "nothing reached the upstream"

    def test_a_secret_in_a_workflow_tools_arguments(self, mcp_world):
        r = server_call(mcp_world, 19, "note", {"text": "AKIAIOSFODNN7EXAMPLE"})
        assert message(r)["error"]["code"] == -32602 and mcp_world.ups["rest"].requests() == []


class TestResults:
    def test_pii_a_tool_gives_is_masked_and_the_callers_own_restored(self, mcp_world):
        r = server_call(mcp_world, 20, "story", {"id": "42"})
        result = message(r)["result"]
        assert "ann@example.com" not in r.text, "the story's owner is not the caller's to see"
        assert result["structuredContent"]["owner"] == "[EMAIL_1]" and "[EMAIL_1]" in result["content"][0]["text"]
        r = server_call(mcp_world, 21, "note", {"text": "to bob@example.org"})
        assert message(r)["result"]["structuredContent"] == {"saved": {"text": "to bob@example.org"}}

    def test_a_secret_in_a_federated_tools_result_is_stopped(self, mcp_world):
        r = httpx.post(f"{mcp_world.gw.url}/hub", headers=headers(KEYS["bob"]), timeout=20,
                       json=rpc(11, "tools/call", {"name": "files__leak", "arguments": {}}))
        m = message(r)
        assert m["error"]["code"] == -32603 and "AWS_KEY" in m["error"]["message"]
        assert "AKIA" not in r.text

    def test_a_secret_in_a_workflow_tools_result_is_stopped(self, mcp_world):
        r = server_call(mcp_world, 12, "secret", {})
        assert message(r)["error"]["code"] == -32603 and "AKIA" not in r.text


class TestMalformed:
    @pytest.mark.parametrize("body,status,code", [
        (b"{", 400, -32700),
        (b"", 400, -32700),
        (b"\xff\xfe{}", 400, -32700),
        (b"[]", 400, -32600),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 400, -32600),
        (b'"ping"', 400, -32600),
        (b'{"id":1,"method":"ping"}', 400, -32600),
        (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', 400, -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":["ping"]}', 400, -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"story"}', 200, -32602),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"story","arguments":[1]}}', 200, -32602),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}', 200, -32602),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', 400, -32600),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, -32600),
        # Nesting deeper than any parser should follow: refused, nothing recurses on it.
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}", 400, -32700),
    ])
    def test_messages_that_are_not_json_rpc(self, mcp_world, body, status, code):
        for path in ("/mcp", "/hub"):
            url = f"{mcp_world.gw.url}{path}"
            sid = open_session(url, KEYS["bob"]) if path == "/mcp" else None
            r = httpx.post(url, headers=headers(KEYS["bob"], sid), content=body, timeout=10)
            assert r.status_code == status, (path, r.text)
            assert message(r)["error"]["code"] == code, (path, r.text)
        still_serving(mcp_world)

    @pytest.mark.parametrize("method", ["resources/list", "prompts/get", "server/discover", "sampling/createMessage",
                                        "Tools/List", "tools/list ", ""])
    def test_unknown_methods(self, mcp_world, method):
        files, rest = mcp_world.ups["files"], mcp_world.ups["rest"]
        sid = open_session(f"{mcp_world.gw.url}/mcp", KEYS["bob"])
        files.clear()
        rest.clear()
        for path, s in (("/hub", None), ("/mcp", sid)):
            r = httpx.post(f"{mcp_world.gw.url}{path}", headers=headers(KEYS["bob"], s), timeout=10, json=rpc(13, method))
            m = message(r)
            assert r.status_code == 200 and m["id"] == 13 and m["error"]["code"] == -32601, path
        assert files.requests() == [] and rest.requests() == [], "an unknown method is not forwarded"

    def test_a_chunked_body_and_an_http2_client_get_the_same_answers(self, mcp_world):
        url = f"{mcp_world.gw.url}/hub"
        chunks = iter([b'{"jsonrpc":"2.0",', b'"id":14,"method":', b'"ping"}'])
        r = httpx.post(url, headers=headers(KEYS["bob"]), content=chunks, timeout=10)
        assert message(r) == {"jsonrpc": "2.0", "id": 14, "result": {}}
        with httpx.Client(http1=False, http2=True) as c:
            r = c.post(url, headers=headers(KEYS["bob"]), content=b"{", timeout=10)
            assert r.http_version == "HTTP/2" and r.status_code == 400 and r.json()["error"]["code"] == -32700


class TestUpstreamDies:
    def test_an_upstream_dying_mid_stream_through_the_relay(self, mcp_world):
        url = f"{mcp_world.gw.url}/doomed"
        sid = open_session(url, KEYS["bob"])
        call = rpc(15, "tools/call", {"name": "crash", "arguments": {}, "_meta": {"progressToken": "p"}})
        got = []
        with pytest.raises(httpx.HTTPError):
            with httpx.stream("POST", url, headers=headers(KEYS["bob"], sid), json=call, timeout=15) as r:
                for line in r.iter_lines():
                    got.append(line)
        assert any("notifications/progress" in l for l in got), "the stream had started"
        assert not mcp_world.ups["doomed_relay"].alive()
        still_serving(mcp_world)

    def test_an_upstream_dying_mid_answer_of_a_federated_call(self, mcp_world):
        r = httpx.post(f"{mcp_world.gw.url}/hub", headers=headers(KEYS["bob"]), timeout=20,
                       json=rpc(16, "tools/call", {"name": "doomed__crash", "arguments": {}}))
        m = message(r)
        assert r.status_code == 200 and m["id"] == 16 and m["error"]["code"] == -32603
        assert "doomed" in m["error"]["message"]
        assert not mcp_world.ups["doomed_hub"].alive()
        # The list goes on without it.
        listed = httpx.post(f"{mcp_world.gw.url}/hub", headers=headers(KEYS["bob"]), timeout=20, json=rpc(17, "tools/list"))
        tools = [t["name"] for t in message(listed)["result"]["tools"]]
        assert "weather__forecast" in tools and not any(t.startswith("doomed__") for t in tools)
        still_serving(mcp_world)
