"""Drives hearth's MCP tools with the official MCP Python SDK.

Usage: mcp_client.py stdio HEARTH_BINARY | mcp_client.py http URL API_KEY
Prints `ok` once every tool worked on a real sandbox; fails loudly otherwise.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

TOOLS = {
    "create_sandbox", "list_sandboxes", "run_command", "run_code", "read_file",
    "write_file", "list_files", "destroy_sandbox",
}


def text(result):
    assert result.content, result
    return result.content[0].text


async def ok(session, name, arguments):
    result = await session.call_tool(name, arguments)
    assert not result.is_error, f"{name} {arguments}: {text(result)}"
    return text(result)


async def exercise(session, sandbox):
    await session.initialize()
    tools = (await session.list_tools()).tools
    assert {t.name for t in tools} == TOOLS, [t.name for t in tools]
    schemas = {t.name: t.input_schema for t in tools}
    assert "labels" in schemas["create_sandbox"]["properties"], schemas["create_sandbox"]
    assert schemas["run_command"]["required"][:2] == ["sandbox", "command"]

    created = json.loads(await ok(session, "create_sandbox", {
        "name": sandbox, "network": {"mode": "none"}, "labels": {"via": "mcp"},
    }))
    assert created["state"] == "running" and created["labels"] == {"via": "mcp"}, created

    ran = json.loads(await ok(session, "run_command", {
        "sandbox": sandbox, "command": ["sh", "-c", "echo out-$((1 + 2)); echo err >&2; exit 4"],
    }))
    assert (ran["stdout"], ran["stderr"], ran["exit_code"]) == ("out-3\n", "err\n", 4), ran

    said = await ok(session, "write_file", {
        "sandbox": sandbox, "path": "/tmp/note.txt", "content": "hello from mcp\n",
    })
    assert "15 bytes" in said, said
    assert await ok(session, "read_file", {"sandbox": sandbox, "path": "/tmp/note.txt"}) \
        == "hello from mcp\n"
    listed = json.loads(await ok(session, "list_files", {"sandbox": sandbox, "path": "/tmp"}))
    assert "note.txt" in [entry["name"] for entry in listed], listed

    # The built-in image has no Python: a clear tool error, not a crash.
    no_python = await session.call_tool("run_code", {"sandbox": sandbox, "code": "print(1)"})
    assert no_python.is_error and "no python3" in text(no_python), text(no_python)

    # Failed operations are tool errors the agent can read.
    missing = await session.call_tool("run_command", {"sandbox": "nope", "command": ["true"]})
    assert missing.is_error and text(missing).startswith("not_found"), text(missing)
    escape = await session.call_tool("read_file", {"sandbox": sandbox, "path": "/tmp/../etc"})
    assert escape.is_error and text(escape).startswith("invalid_input"), text(escape)
    # Arguments that do not fit the schema are protocol errors.
    for name, arguments in [("read_file", {"path": "/tmp"}), ("no_such_tool", {}),
                            ("list_files", {"sandbox": sandbox, "path": "/", "extra": 1})]:
        try:
            await session.call_tool(name, arguments)
        except MCPError as e:
            assert e.error.code == -32602, e.error
        else:
            raise AssertionError(f"{name} {arguments} was accepted")

    gone = await ok(session, "destroy_sandbox", {"sandbox": sandbox})
    assert "is gone" in gone, gone
    remaining = json.loads(await ok(session, "list_sandboxes", {}))
    assert sandbox not in [s["name"] for s in remaining], remaining


async def main():
    mode = sys.argv[1]
    if mode == "stdio":
        # The SDK passes a child only a few variables unless told; hearth needs its state dir.
        params = StdioServerParameters(command=sys.argv[2], args=["mcp"], env=dict(os.environ))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session, "mcp-stdio")
    else:
        url, key = sys.argv[2], sys.argv[3]
        async with httpx2.AsyncClient(timeout=300) as anonymous:
            refused = await anonymous.post(url, json={})
            assert refused.status_code == 401, refused
        auth = {"Authorization": f"Bearer {key}"}
        client = httpx2.AsyncClient(headers=auth, timeout=300)
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session, "mcp-http")
    print("ok")


asyncio.run(main())
