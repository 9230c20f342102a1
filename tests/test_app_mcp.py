"""The app as an MCP server (GRADIO_MCP_SERVER=True, or launch(mcp_server=True)): an LLM agent lists its
tools through the MCP endpoint (streamable HTTP), each described by its function's docstring, inputs
included."""
from __future__ import annotations

import asyncio

import pytest

from apphttp import Served

pytestmark = pytest.mark.slow


async def list_tools(url: str):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return (await session.list_tools()).tools


def test_mcp_server_lists_identify_and_compare_with_their_inputs(tmp_path):
    pytest.importorskip("mcp", reason="the MCP server needs gradio[mcp] (requirements.txt)")
    served = Served(tmp_path, env={"GRADIO_MCP_SERVER": "True"}).start()
    try:
        tools = {t.name: t for t in asyncio.run(list_tools(f"{served.url}/gradio_api/mcp/"))}
    finally:
        served.stop()
    assert set(tools) == {"identify", "compare", "browse_previous", "browse_next", "build_gallery", "reset_gallery"}
    identify, compare = tools["identify"], tools["compare"]
    assert identify.description.startswith("Identify one vehicle image: its car model or type")
    assert compare.description.startswith("Compare two vehicle images: cosine similarity")
    for tool, inputs in ((identify, ["image", "model", "raw"]), (compare, ["first", "second", "model", "raw"])):
        properties = tool.inputSchema["properties"]
        assert list(properties) == inputs
        assert all(properties[name]["description"] for name in inputs), properties
        assert properties["model"]["enum"] == ["default", "two-level"]  # only the zoo's models, as the UI offers
    assert "photo of one vehicle" in identify.inputSchema["properties"]["image"]["description"]
