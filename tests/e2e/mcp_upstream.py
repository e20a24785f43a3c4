"""Upstream servers for tests/e2e/test_mcp.py, run as child processes on a free port:

- `mcp NAME [--stateless] [--json]`: an MCP server written with the official `mcp` SDK
  (2.x: `MCPServer`, Streamable HTTP at /mcp) whose tools are named by NAME's toolset;
- `rest`: a small REST backend for the workflows of the gateway's own MCP server.

Both record every request they get (method, path, headers, body) and serve the record at
`GET /__requests` (DELETE clears it). The first line on stdout is `listening on HOST:PORT`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

RECORD: list[dict] = []


class Recorder:
    """ASGI middleware: records requests and answers /__requests."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/__requests":
            if scope["method"] == "DELETE":
                RECORD.clear()
            body = json.dumps(RECORD).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        chunks: list[bytes] = []

        async def recording_receive():
            m = await receive()
            chunks.append(m.get("body", b""))
            return m

        entry = {"method": scope["method"], "path": scope["path"],
                 "query": scope.get("query_string", b"").decode(),
                 "headers": {k.decode(): v.decode() for k, v in scope["headers"]}}
        RECORD.append(entry)
        try:
            await self.app(scope, recording_receive, send)
        finally:
            entry["body"] = b"".join(chunks).decode(errors="replace")


def mcp_app(name: str, stateless: bool, json_response: bool):
    srv = MCPServer(name)
    if name == "weather":
        @srv.tool()
        def forecast(city: str) -> str:
            """The weather forecast of a city."""
            return f"sunny in {city}"

        @srv.tool()
        def alerts(region: str) -> str:
            """Weather alerts of a region."""
            return f"no alerts in {region}"
    elif name == "files":
        @srv.tool()
        def read(path: str) -> str:
            """Reads a file."""
            return f"contents of {path}"

        @srv.tool()
        def delete(path: str) -> str:
            """Deletes a file."""
            return f"deleted {path}"

        @srv.tool()
        def leak() -> str:
            """Returns a cloud credential it should not."""
            return "found AKIAIOSFODNN7EXAMPLE in the config"

        @srv.tool()
        def echo(text: str) -> str:
            """Echoes its argument."""
            return f"echo: {text}"
    elif name == "crashy":
        @srv.tool()
        async def slow(ctx: Context, steps: int = 3) -> str:
            """Reports progress, then finishes."""
            for i in range(steps):
                await ctx.report_progress(i, steps)
                await asyncio.sleep(0.3)
            return "done"

        @srv.tool()
        async def crash(ctx: Context) -> str:
            """Starts answering, then the server dies."""
            await ctx.report_progress(0, 2)
            await asyncio.sleep(0.3)
            os._exit(3)
    return srv.streamable_http_app(stateless_http=stateless, json_response=json_response)


STORIES = {"42": {"id": "42", "title": "The answer", "owner": "ann@example.com"}}


async def rest_app(scope, receive, send):
    """GET /stories/{id}; POST /notes (echoes its JSON); GET /secret; GET /broken."""
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    path = scope["path"]
    status, answer = 404, {"error": "no such resource"}
    if path.startswith("/stories/"):
        story = STORIES.get(path.rsplit("/", 1)[1])
        status, answer = (200, story) if story else (404, {"error": "no such story"})
    elif path == "/notes" and scope["method"] == "POST":
        status, answer = 200, {"saved": json.loads(body or b"{}")}
    elif path == "/secret":
        status, answer = 200, {"note": "key AKIAIOSFODNN7EXAMPLE"}
    elif path == "/broken":
        status, answer = 500, {"error": "database down"}
    data = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["mcp", "rest"])
    ap.add_argument("name", nargs="?", default="weather")
    ap.add_argument("--stateless", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    app = mcp_app(args.name, args.stateless, args.json) if args.kind == "mcp" else rest_app
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    config = uvicorn.Config(Recorder(app), log_level="warning", lifespan="on" if args.kind == "mcp" else "off")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
