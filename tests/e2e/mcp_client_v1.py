"""The MCP SDK's previous major (mcp 1.x) as a client, run in its own venv
(scripts/mcp1-venv.sh) by tests/e2e/test_mcp.py: connects to URL with the given bearer key,
initializes, lists the tools, calls one, and prints what it got as one JSON line.

    python mcp_client_v1.py URL KEY TOOL ARGS_JSON
"""
import asyncio
import json
import sys

import mcp
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


async def main(url: str, key: str, tool: str, args: dict) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with streamablehttp_client(url, headers=headers) as (read, write, session_id):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            tools = await s.list_tools()
            out = {
                "sdk": getattr(mcp, "__version__", None),
                "server": init.serverInfo.name,
                "protocol": init.protocolVersion,
                "session": session_id(),
                "tools": sorted(t.name for t in tools.tools),
            }
            result = await s.call_tool(tool, args)
            out["is_error"] = result.isError
            out["text"] = [c.text for c in result.content if getattr(c, "type", "") == "text"]
            out["structured"] = result.structuredContent
            return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))))
