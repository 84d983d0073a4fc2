"""The MCP server the conformance runner's tool scenarios expect (`test_simple_text`,
`test_image_content`, ...; each scenario's README in @modelcontextprotocol/conformance
names its tool and answer), on the official Python SDK, over stdio (or Streamable HTTP
with `--http PORT`, to run the suite against it directly). It offers tools
only, because tools are all the gateway proxies; the runner's resource, prompt and
completion scenarios are recorded as expected failures in conformance-baseline.json."""

from __future__ import annotations

import asyncio
import base64

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)

server = MCPServer("conformance-fixture")

# A 1x1 PNG and a 44-byte silent WAV header: the smallest valid payloads of their kind.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d4944415478da63f8cfc0f01f0005000201a2b2f4e40000000049454e44ae426082"
    )
).decode()
WAV = base64.b64encode(
    b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00@\x1f\x00\x00\x80>\x00\x00"
    b"\x02\x00\x10\x00data\x00\x00\x00\x00"
).decode()


@server.tool()
def test_simple_text() -> CallToolResult:
    """Returns one text block."""
    return CallToolResult(content=[TextContent(text="This is a simple text response for testing.")])


@server.tool()
def test_image_content() -> CallToolResult:
    """Returns one PNG image."""
    return CallToolResult(content=[ImageContent(data=PNG, mime_type="image/png")])


@server.tool()
def test_audio_content() -> CallToolResult:
    """Returns one WAV clip."""
    return CallToolResult(content=[AudioContent(data=WAV, mime_type="audio/wav")])


def _resource(uri: str, mime: str, text: str) -> EmbeddedResource:
    return EmbeddedResource(resource=TextResourceContents(uri=uri, mime_type=mime, text=text))


@server.tool()
def test_embedded_resource() -> CallToolResult:
    """Returns one embedded text resource."""
    return CallToolResult(
        content=[_resource("test://embedded-resource", "text/plain", "This is an embedded resource content.")]
    )


@server.tool()
def test_multiple_content_types() -> CallToolResult:
    """Returns text, an image and a resource."""
    return CallToolResult(
        content=[
            TextContent(text="Multiple content types test:"),
            ImageContent(data=PNG, mime_type="image/png"),
            _resource("test://mixed-content-resource", "application/json", '{"test":"data","value":123}'),
        ]
    )


@server.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three log notifications while it runs."""
    messages = ["Tool execution started", "Tool processing data", "Tool execution completed"]
    for i, message in enumerate(messages):
        if i:
            await asyncio.sleep(0.05)
        await ctx.info(message)
    return "Tool with logging executed successfully"


@server.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50 and 100 of 100 when the caller sent a progress token."""
    for i, done in enumerate([0, 50, 100]):
        if i:
            await asyncio.sleep(0.05)
        await ctx.report_progress(done, 100)
    return "Tool with progress executed successfully"


@server.tool()
def test_error_handling() -> CallToolResult:
    """Always fails, as a tool result (isError), not a protocol error."""
    return CallToolResult(
        is_error=True,
        content=[TextContent(text="This tool intentionally returns an error for testing")],
    )


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
