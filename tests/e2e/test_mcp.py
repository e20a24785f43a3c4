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

from mcp_world import FILES_TOKEN, KEYS, REST_TOKEN, UPSTREAM_TOKEN

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
        assert names(listed) == ["broken", "note", "secret", "story"], "admin is for analysts"
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
                return names(await c.list_tools())

        weather = ["weather__alerts", "weather__forecast"]
        assert run(listing, KEYS["alice"]) == ["doomed__crash", "doomed__slow", "files__echo", "files__leak", "files__read", *weather]
        assert run(listing, KEYS["bob"]) == ["doomed__crash", "doomed__slow", "files__echo", "files__leak", *weather]

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
