"""MCP through a real Envoy with the official `mcp` SDK as the client (current 2.x in this
process, the previous 1.x major in its own venv) against upstream MCP servers written with
the same SDK (tests/e2e/mcp_world.py): KrakenD's MCP gateway (a relay), KrakenD's MCP
server (`ai/mcp`), and tollgate's federation (`ai/mcp-federation`, `ai/mcp-tools`)."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_world import FILES_TOKEN, KEYS, RELAY_RATE, REST_TOKEN, UPSTREAM_TOKEN

V1_CLIENT = Path(__file__).with_name("mcp_client_v1.py")


def session(url: str, key: str, mode: str = "auto"):
    """An SDK 2.x client session through the gateway with an API key."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode)


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


def metric(gw, name: str, **labels) -> float:
    """The sum of a metric's series with these labels in Envoy's /stats/prometheus."""
    total = 0.0
    for line in gw.stats().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def names(tools) -> list[str]:
    return sorted(t.name for t in tools.tools)


def v1(python: str, url: str, key: str, tool: str, args: dict) -> dict:
    out = subprocess.run([python, str(V1_CLIENT), url, key, tool, json.dumps(args)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


class TestRelay:
    """KrakenD's MCP gateway: a no-op endpoint relaying Streamable HTTP to a third-party
    MCP server, with tollgate's auth, input_headers and credential injection on top."""

    def test_sdk2_client_lists_and_calls_through_the_relay(self, mcp_world):
        up = mcp_world.ups["weather"]
        up.clear()

        async def go():
            async with session(f"{mcp_world.gw.url}/relay", KEYS["alice"]) as c:
                return names(await c.list_tools()), await c.call_tool("forecast", {"city": "Oslo"})

        tools, result = run(go)
        assert tools == ["alerts", "forecast"]
        assert result.content[0].text == "sunny in Oslo"
        seen = up.requests()
        assert seen and all(r["headers"].get("x-upstream-token") == UPSTREAM_TOKEN for r in seen)
        assert not any("authorization" in r["headers"] for r in seen), "the client's key stays at the gateway"

    def test_session_id_reaches_the_upstream_and_comes_back(self, mcp_world):
        up = mcp_world.ups["weather"]
        up.clear()

        async def go():
            async with session(f"{mcp_world.gw.url}/relay", KEYS["bob"], mode="legacy") as c:
                return await c.call_tool("forecast", {"city": "Rome"})

        result = run(go)
        assert result.content[0].text == "sunny in Rome"
        seen = up.requests()
        init = next(r for r in seen if '"initialize"' in r["body"])
        later = [r for r in seen if r is not init]
        sids = {r["headers"].get("mcp-session-id") for r in later}
        assert len(sids) == 1 and None not in sids, "every request after initialize carries the upstream's session"
        assert any(r["method"] == "GET" for r in later), "the SDK's GET stream went through"
        assert any(r["method"] == "DELETE" for r in later), "and its session DELETE"

    def test_sse_answers_stream_through_incrementally(self, mcp_world):
        """A tool reporting progress every 0.3 s: each event reaches the client as the
        upstream sends it, not at the end."""
        url = f"{mcp_world.gw.url}/slow"
        h = {"authorization": f"Bearer {KEYS['alice']}", "accept": "application/json, text/event-stream"}
        init = httpx.post(url, headers=h, timeout=10, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                          "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        h["mcp-session-id"] = init.headers["mcp-session-id"]
        httpx.post(url, headers=h, timeout=10, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "slow", "arguments": {"steps": 4}, "_meta": {"progressToken": "p"}}}
        arrivals = []
        start = time.monotonic()
        with httpx.stream("POST", url, headers=h, json=call, timeout=20) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.monotonic() - start, json.loads(line[6:])))
        progress = [t for t, m in arrivals if m.get("method") == "notifications/progress"]
        done = [t for t, m in arrivals if m.get("id") == 2]
        assert len(progress) == 4 and done
        assert progress[0] < done[0] - 0.6, f"the first event waited for the end: {arrivals}"


    def test_json_answers_and_a_rate_limit_through_the_relay(self, mcp_world):
        """A stateless upstream answering JSON: the SDK lists and calls through the relay;
        past the endpoint's rate the client gets a JSON-RPC error and the upstream nothing."""
        up = mcp_world.ups["files"]
        up.clear()

        async def go():
            async with session(f"{mcp_world.gw.url}/relay-json", KEYS["alice"]) as c:
                return names(await c.list_tools()), await c.call_tool("echo", {"text": "hi"})

        tools, result = run(go)
        assert tools == ["delete", "echo", "leak", "read"]
        assert result.content[0].text == "echo: hi"
        seen = up.requests()
        assert seen and all(r["headers"].get("x-upstream-token") == UPSTREAM_TOKEN for r in seen)
        assert not any(r["headers"].get("mcp-session-id") for r in seen), "a stateless upstream has no session"
        h = {"authorization": f"Bearer {KEYS['alice']}", "accept": "application/json, text/event-stream"}
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        answers = [httpx.post(f"{mcp_world.gw.url}/relay-json", headers=h, json=ping, timeout=10)
                   for _ in range(RELAY_RATE)]
        codes = [a.status_code for a in answers]
        assert 200 in codes and codes[-1] == 429, codes
        assert answers[0].headers["content-type"].startswith("application/json")
        refused = answers[-1]
        assert refused.json()["error"]["code"] == -32000 and int(refused.headers["retry-after"]) > 0
        assert len(up.requests()) == len(seen) + codes.count(200), "a refused message never reached the upstream"
        bob = httpx.post(f"{mcp_world.gw.url}/relay-json", headers=h | {"authorization": f"Bearer {KEYS['bob']}"},
                         json=ping, timeout=10)
        assert bob.status_code == 200, "the limit is per caller"
        anon = httpx.post(f"{mcp_world.gw.url}/relay-json", headers={"accept": h["accept"]}, json=ping, timeout=10)
        assert anon.status_code == 401 and anon.json()["error"]["code"] == -32600

    def test_sdk1_client_through_the_relay(self, mcp_world, mcp1_python):
        out = v1(mcp1_python, f"{mcp_world.gw.url}/relay", KEYS["bob"], "forecast", {"city": "Lagos"})
        assert out["sdk"] is None or out["sdk"].startswith("1.")
        assert out["session"] and out["tools"] == ["alerts", "forecast"]
        assert out["text"] == ["sunny in Lagos"]


class TestServer:
    """KrakenD's MCP server (`ai/mcp`): the gateway answers the protocol and runs each
    tool's workflow backend."""

    def test_sdk2_client_initializes_lists_and_calls(self, mcp_world):
        rest = mcp_world.ups["rest"]
        rest.clear()

        async def go():
            async with session(f"{mcp_world.gw.url}/mcp", KEYS["bob"]) as c:
                listed = await c.list_tools()
                story = await c.call_tool("story", {"id": "42"})
                note = await c.call_tool("note", {"text": "hello"})
                broken = await c.call_tool("broken", {})
                return listed, story, note, broken

        listed, story, note, broken = run(go)
        assert names(listed) == ["broken", "dated", "note", "secret", "story"], "admin is for analysts"
        s = next(t for t in listed.tools if t.name == "story")
        assert s.input_schema["required"] == ["id"] and s.annotations.read_only_hint is True
        assert story.is_error is False and story.structured_content["title"] == "The answer"
        assert note.structured_content == {"saved": {"text": "hello"}}
        assert broken.is_error is True and "database down" in broken.content[0].text
        calls = [r for r in rest.requests() if r["path"] in ("/stories/42", "/notes")]
        assert [r["method"] for r in calls] == ["GET", "POST"]
        assert all(r["headers"]["authorization"] == f"Bearer {REST_TOKEN}" for r in calls)

    def test_initialize_answer_and_session(self, mcp_world):
        h = {"authorization": f"Bearer {KEYS['bob']}", "accept": "application/json, text/event-stream"}
        r = httpx.post(f"{mcp_world.gw.url}/mcp", headers=h, timeout=10, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        msg = json.loads(next(l for l in r.text.splitlines() if l.startswith("data: "))[6:])
        assert msg["result"]["protocolVersion"] == "2025-03-26"
        assert msg["result"]["serverInfo"] == {"name": "stories", "title": "Story tracker", "version": "1.2.0"}
        assert msg["result"]["instructions"] == "Look stories up by id."
        sid = r.headers["mcp-session-id"]
        assert len(sid) == 32
        h["mcp-session-id"] = sid
        h["mcp-protocol-version"] = "2025-03-26"
        done = httpx.post(f"{mcp_world.gw.url}/mcp", headers=h, timeout=10,
                          json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert done.status_code == 202 and done.content == b""
        pong = httpx.post(f"{mcp_world.gw.url}/mcp", headers=h, timeout=10, json={"jsonrpc": "2.0", "id": "p", "method": "ping"})
        assert json.loads(pong.text.split("data: ", 1)[1]) == {"jsonrpc": "2.0", "id": "p", "result": {}}
        h["mcp-protocol-version"] = "1999-01-01"
        old = httpx.post(f"{mcp_world.gw.url}/mcp", headers=h, timeout=10, json={"jsonrpc": "2.0", "id": 3, "method": "ping"})
        assert old.status_code == 400 and old.json()["error"]["code"] == -32600

    def test_a_result_breaking_the_output_schema_is_an_error(self, mcp_world):
        from mcp.shared.exceptions import MCPError

        async def go():
            async with session(f"{mcp_world.gw.url}/mcp", KEYS["bob"]) as c:
                try:
                    await c.call_tool("dated", {})
                except MCPError as e:
                    return e

        e = run(go)
        assert isinstance(e, MCPError) and e.error.code == -32603
        assert "does not match its output schema" in e.error.message and "year" in e.error.message

    def test_a_stateless_server_gives_out_no_session_and_checks_none(self, mcp_world):
        url = f"{mcp_world.gw.url}/lookup"
        h = {"authorization": f"Bearer {KEYS['bob']}", "accept": "application/json, text/event-stream"}
        init = httpx.post(url, headers=h, timeout=10, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert init.status_code == 200 and "mcp-session-id" not in init.headers
        assert init.headers["content-type"].startswith("application/json"), "json_response"
        assert init.json()["result"]["serverInfo"]["name"] == "lookup"
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "story", "arguments": {"id": "42"}}}
        for sid in (None, "made-up-session"):
            hh = h | ({"mcp-session-id": sid} if sid else {})
            r = httpx.post(url, headers=hh, timeout=10, json=call)
            assert r.status_code == 200 and r.json()["result"]["structuredContent"]["title"] == "The answer", sid

        async def go():
            async with session(url, KEYS["alice"]) as c:
                return names(await c.list_tools()), await c.call_tool("story", {"id": "42"})

        tools, result = run(go)
        assert tools == ["story"] and result.structured_content["id"] == "42"

    def test_sdk1_client(self, mcp_world, mcp1_python):
        out = v1(mcp1_python, f"{mcp_world.gw.url}/mcp", KEYS["alice"], "story", {"id": "42"})
        assert out["sdk"] is None or out["sdk"].startswith("1.")
        assert out["server"] == "stories" and out["session"]
        assert "admin" in out["tools"]
        assert out["is_error"] is False and out["structured"]["id"] == "42"


class TestFederation:
    """tollgate's federation: one MCP endpoint in front of several upstream MCP servers,
    tools namespaced per server and filtered per caller."""

    def test_sdk2_client_sees_namespaced_tools_filtered_per_caller(self, mcp_world):
        async def listing(key):
            async with session(f"{mcp_world.gw.url}/hub", key) as c:
                # The doomed upstream is listed until test_attacks_mcp.py kills it.
                return [n for n in names(await c.list_tools()) if not n.startswith("doomed__")]

        weather = ["weather__alerts", "weather__forecast"]
        assert run(listing, KEYS["alice"]) == ["files__echo", "files__leak", "files__read", *weather]
        assert run(listing, KEYS["bob"]) == ["files__echo", "files__leak", *weather]

    def test_calls_route_by_name_with_per_upstream_credentials(self, mcp_world):
        files, weather = mcp_world.ups["files"], mcp_world.ups["weather"]
        files.clear()
        weather.clear()

        async def go():
            async with session(f"{mcp_world.gw.url}/hub", KEYS["alice"]) as c:
                return (await c.call_tool("files__read", {"path": "/etc/motd"}),
                        await c.call_tool("weather__forecast", {"city": "Lima"}))

        read, forecast = run(go)
        assert read.content[0].text == "contents of /etc/motd"
        assert forecast.content[0].text == "sunny in Lima"
        fcalls = [json.loads(r["body"]) for r in files.requests() if '"tools/call"' in r["body"]]
        assert [c["params"]["name"] for c in fcalls] == ["read"], "the upstream gets its own tool name"
        assert all(r["headers"].get("x-files-token") == FILES_TOKEN for r in files.requests())
        assert not any("x-upstream-token" in r["headers"] or "authorization" in r["headers"] for r in files.requests())
        wcalls = [r for r in weather.requests() if '"tools/call"' in r["body"]]
        assert wcalls and all(r["headers"].get("mcp-session-id") for r in wcalls), "the stateful upstream's session"

    def test_sdk1_client(self, mcp_world, mcp1_python):
        out = v1(mcp1_python, f"{mcp_world.gw.url}/hub", KEYS["bob"], "weather__forecast", {"city": "Kyiv"})
        assert out["server"] == "hub"
        assert "files__read" not in out["tools"] and "weather__forecast" in out["tools"]
        assert out["text"] == ["sunny in Kyiv"]

    def test_a_tool_allowed_by_a_jwt_claim(self, mcp_world):
        """Per-tool access by JWT claims: the claim's holder lists and calls files__read; a
        token without it sees and calls only weather__forecast; no token, no answer."""
        files = mcp_world.ups["files"]
        storage = mcp_world.issuer.token("ann", team="storage")
        sales = mcp_world.issuer.token("bob", team=["sales", "storage-ish"])

        async def go(token):
            async with session(f"{mcp_world.gw.url}/hub-jwt", token) as c:
                tools = names(await c.list_tools())
                read = await c.call_tool("files__read", {"path": "/a"})
                return tools, read

        files.clear()
        tools, read = run(go, storage)
        assert tools == ["files__read", "weather__forecast"]
        assert read.content[0].text == "contents of /a"
        assert [json.loads(r["body"])["params"]["name"] for r in files.requests() if '"tools/call"' in r["body"]] == ["read"]
        files.clear()
        h = {"authorization": f"Bearer {sales}", "accept": "application/json, text/event-stream"}
        init = httpx.post(f"{mcp_world.gw.url}/hub-jwt", headers=h, timeout=20, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        h["mcp-session-id"] = init.headers["mcp-session-id"]
        # The session is bound to the token's iss and sub: another subject cannot use it.
        other = h | {"authorization": f"Bearer {mcp_world.issuer.token('eve', team='sales')}"}
        stolen = httpx.post(f"{mcp_world.gw.url}/hub-jwt", headers=other, timeout=20,
                            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert stolen.status_code == 404 and stolen.json()["error"]["code"] == -32001
        listed = httpx.post(f"{mcp_world.gw.url}/hub-jwt", headers=h, timeout=20,
                            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert [t["name"] for t in listed.json()["result"]["tools"]] == ["weather__forecast"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "files__read", "arguments": {"path": "/a"}}}
        denied = httpx.post(f"{mcp_world.gw.url}/hub-jwt", headers=h, timeout=20, json=call)
        assert denied.json()["error"] == {"code": -32602, "message": "Unknown tool: files__read"}
        assert not any('"tools/call"' in r["body"] for r in files.requests()), "no call reached the upstream"
        anon = httpx.post(f"{mcp_world.gw.url}/hub-jwt", headers={"accept": h["accept"]}, timeout=20, json=call)
        assert anon.status_code == 401 and anon.json()["error"]["code"] == -32600

    def test_metrics_per_tool(self, mcp_world):
        async def go():
            async with session(f"{mcp_world.gw.url}/hub", KEYS["alice"]) as c:
                await c.call_tool("weather__forecast", {"city": "Quito"})

        before = metric(mcp_world.gw, "tollgate_mcp_tool_calls_total", server="weather", tool="weather__forecast", status="ok")
        run(go)
        gw = mcp_world.gw
        assert metric(gw, "tollgate_mcp_tool_calls_total", server="weather", tool="weather__forecast", status="ok") == before + 1
        deadline = time.time() + 15  # Envoy flushes histograms every few seconds
        while time.time() < deadline and not metric(gw, "tollgate_mcp_tool_duration_ms_count", server="weather"):
            time.sleep(0.2)
        assert metric(gw, "tollgate_mcp_tool_duration_ms_count", server="weather", tool="weather__forecast") >= 1
        assert metric(gw, "tollgate_mcp_tool_calls_total", server="stories", status="ok") >= 1
