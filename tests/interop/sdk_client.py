"""The official MCP Python SDK as a client of the gateway.

usage: sdk_client.py streamable_http|sse URL

Connects, lists tools, calls tools of both namespaces (one with progress notifications), reads
a prompt, and prints one JSON line with what it saw; exits non-zero on any failure.
"""

import asyncio
import json
import sys

from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


async def exercise(read, write):
    async with ClientSession(read, write) as session:
        init = await session.initialize()
        tools = await session.list_tools()
        names = sorted(t.name for t in tools.tools)
        echo = await session.call_tool("ev__echo", {"message": "hello from the python sdk"})
        total = await session.call_tool("evh__get-sum", {"a": 2, "b": 3})
        progress = []

        async def on_progress(value, total_steps, message):
            progress.append(value)

        long_op = await session.call_tool(
            "evh__trigger-long-running-operation", {"duration": 1, "steps": 3}, progress_callback=on_progress
        )
        return {
            "protocol_version": init.protocol_version,
            "server": init.server_info.name,
            "tools": names,
            "echo": echo.content[0].text,
            "echo_is_error": bool(echo.is_error),
            "sum": total.content[0].text,
            "long_operation_is_error": bool(long_op.is_error),
            "progress": progress,
        }


async def main():
    transport, url = sys.argv[1], sys.argv[2]
    if transport == "streamable_http":
        async with streamable_http_client(url) as streams:
            result = await exercise(streams[0], streams[1])
    elif transport == "sse":
        async with sse_client(url) as streams:
            result = await exercise(streams[0], streams[1])
    else:
        raise SystemExit(f"unknown transport {transport}")
    print(json.dumps(result), flush=True)


asyncio.run(main())
