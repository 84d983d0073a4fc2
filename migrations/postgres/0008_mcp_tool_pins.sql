-- MCP tool pins (docs/mcp.md, "Tool pinning"): per upstream server and tool, the
-- trusted definition's digest and at most one definition waiting for an operator.
-- `body_json` holds the whole pin; the other columns key it. The audit log keeps
-- every pin, change, approval and rejection.
-- GRANT: SELECT, INSERT, UPDATE ON mcp_tool_pins (docs/postgres.md).
CREATE TABLE mcp_tool_pins (
    server     TEXT NOT NULL,
    tool       TEXT NOT NULL,
    body_json  TEXT NOT NULL,
    PRIMARY KEY (server, tool)
);
