"""The MCP gateway inside `arbiter serve` (`[mcp_gateway] config`): one process serves
gRPC and MCP. The real binary, the official Python MCP SDK as client over Streamable
HTTP, and `upstream.py` as the tool server; the gateway reaches the server over its own
gRPC port, with TLS and client certificates when `server.tls` asks for them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from conftest import ARBITER, HERE, POLICY, Stack, first_line, mcp_client, stop
from pki import Ca


def text(result: object) -> str:
    return " ".join(getattr(c, "text", "") for c in getattr(result, "content", []))


def gateway_yaml(tmp: Path, arbiter: str = "", listen: str = "127.0.0.1:0") -> Path:
    """A gateway.yaml for the server to run: no `arbiter.endpoint` (the server is it)."""
    path = tmp / "gateway.yaml"
    path.write_text(
        f"""
{arbiter}
listen: {{addr: "{listen}"}}
approval_wait: 0s
upstream_timeout: 5s
upstreams:
  - name: fixture
    stdio:
      command: {json.dumps(sys.executable)}
      args: [{json.dumps(str(HERE / "upstream.py"))}]
      env: {{FIXTURE_CALLS: {json.dumps(str(tmp / "calls.jsonl"))}}}
""",
        encoding="utf-8",
    )
    return path


def serve(tmp: Path, toml: str = "", env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`arbiter serve` with settings from `toml` (an arbiter.toml) and `env`."""
    (tmp / "policy.yaml").write_text(POLICY, encoding="utf-8")
    (tmp / "arbiter.toml").write_text(toml, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    return subprocess.Popen(
        [
            *[ARBITER, "serve", "--config", str(tmp / "arbiter.toml"), "--listen", "127.0.0.1:0"],
            *["--data-dir", str(tmp / "data"), "--policy", str(tmp / "policy.yaml")],
            *["--metrics-listen", "off", "--console-listen", "off"],
        ],
        env={**clean, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Serving:
    stack: Stack
    url: str

    def calls(self) -> list[str]:
        path = self.stack.tmp / "calls.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        return [json.loads(line)["tool"] for line in lines if line]


def started(tmp: Path, proc: subprocess.Popen[str], scheme: str = "http") -> Serving:
    """The server's address (first line), the gateway's URL (next line), and principals:
    admin (created in development mode) and bot-1's agent key."""
    addr = first_line(proc).rsplit(" ", 1)[-1]
    line = first_line(proc)
    assert line.startswith("arbiter mcp-gateway listening on http://"), line
    s = Stack(tmp=tmp, server=proc, addr=f"{scheme}://{addr}")
    s.keys["admin"] = ""
    s.keys["admin"] = s.cli("principals", "create", "root", "--role", "admin", key="").stdout.strip()
    s.keys["bot-1"] = s.cli(
        "principals", "create", "bot-1-runtime", "--role", "agent", "--agent", "bot-1"
    ).stdout.strip()
    return Serving(stack=s, url=line.rsplit(" ", 1)[-1])


async def list_allowed_and_denied(url: str, key: str) -> tuple[list[str], object, object]:
    async with mcp_client(url, key) as c:
        tools = [t.name for t in (await c.list_tools()).tools]
        allowed = await c.call_tool("read_file", {"path": "/srv/a.txt"})
        denied = await c.call_tool("delete_repo", {"name": "prod"})
        return tools, allowed, denied


def check_decided_by_this_server(serving: Serving) -> None:
    tools, allowed, denied = asyncio.run(list_allowed_and_denied(serving.url, serving.stack.keys["bot-1"]))
    assert tools == ["read_file", "send_email", "crash", "garble", "hang"]
    assert not allowed.is_error and text(allowed) == "contents of /srv/a.txt"
    assert denied.is_error and "denied by Arbiter: scope.tool_denied" in text(denied)
    # The denied call never reached the tool server.
    assert serving.calls() == ["read_file"]
    audit = serving.stack.audit()
    evaluates = {e["body"]["action"]["tool"]: e for e in audit if e["kind"] == "evaluate"}
    assert set(evaluates) == {"read_file", "delete_repo"}
    assert {e["agent_id"] for e in evaluates.values()} == {"bot-1"}
    assert evaluates["read_file"]["outcome"] == "allow"
    assert evaluates["delete_repo"]["outcome"] == "deny"
    records = [e for e in audit if e["kind"] == "record"]
    assert [r["body"]["decision_id"] for r in records] == [evaluates["read_file"]["body"]["decision_id"]]


def test_one_process_serves_grpc_and_the_gateway_and_stops_both(tmp_path: Path) -> None:
    config = gateway_yaml(tmp_path)
    proc = serve(tmp_path, f'[mcp_gateway]\nconfig = "{config}"\n')
    try:
        serving = started(tmp_path, proc)
        check_decided_by_this_server(serving)
        port = int(serving.url.split(":")[2].split("/")[0])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "shutdown: the MCP gateway stopped" in err, err
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        stop(proc)


def test_over_mtls_the_gateway_reaches_its_server_with_a_transport_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = Ca(tmp_path)
    cert, key = ca.server("arbiter.test")
    client_cert, client_key = ca.client("gateway")
    # No tls_domain: the name comes from the server's certificate (the endpoint is 127.0.0.1).
    arbiter = f"arbiter: {{tls_ca: {json.dumps(str(ca.cert))}, tls_cert: {json.dumps(str(client_cert))}, "
    arbiter += f"tls_key: {json.dumps(str(client_key))}}}"
    config = gateway_yaml(tmp_path, arbiter)
    toml = f"""[server.tls]
cert_file = "{cert}"
key_file = "{key}"
client_ca_file = "{ca.cert}"
client_auth = "required"
"""
    proc = serve(tmp_path, toml, {"ARBITER_MCP_GATEWAY__CONFIG": str(config)})
    # The CLI presents the same unbound certificate; its key names the principal.
    for name, value in {
        "ARBITER_TLS_CA": ca.cert,
        "ARBITER_TLS_DOMAIN": "arbiter.test",
        "ARBITER_TLS_CERT": client_cert,
        "ARBITER_TLS_KEY": client_key,
    }.items():
        monkeypatch.setenv(name, str(value))
    try:
        check_decided_by_this_server(started(tmp_path, proc, "https"))
    finally:
        stop(proc)


ENDPOINT = 'arbiter: {endpoint: "http://127.0.0.1:1"}\n'
BAD = {
    "unknown key": (lambda y: y.replace("approval_wait:", "aproval_wait:"), "aproval_wait"),
    "an endpoint of its own": (lambda y: ENDPOINT + y, "arbiter.endpoint: not used inside"),
    "a bad upstream": (lambda y: y.replace("name: fixture", "name: a.b"), "upstreams[0].name"),
    "tls pieces over plaintext": (
        lambda y: "arbiter: {tls_ca: ca.pem}\n" + y,
        "arbiter.tls_ca: server.tls is off",
    ),
    "no file": (None, "reading"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_gateway_file_stops_the_start_naming_the_file_and_field(tmp_path: Path, case: str) -> None:
    edit, needle = BAD[case]
    config = gateway_yaml(tmp_path)
    if edit is None:
        config = tmp_path / "nowhere.yaml"
    else:
        config.write_text(edit(config.read_text(encoding="utf-8")), encoding="utf-8")
    proc = serve(tmp_path, env={"ARBITER_MCP_GATEWAY__CONFIG": str(config)})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "arbiter listening" not in out, "nothing is served with half a gateway"
    assert f"mcp_gateway.config: {config}" in err or f"mcp_gateway.config: reading {config}" in err, err
    assert needle in err, err
    assert not (tmp_path / "calls.jsonl").exists()


def test_a_taken_gateway_port_or_tls_without_its_ca_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = gateway_yaml(tmp_path, listen=f"127.0.0.1:{port}")
        proc = serve(tmp_path, env={"ARBITER_MCP_GATEWAY__CONFIG": str(config)})
        out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "arbiter listening" not in out
    assert f"binding listen.addr 127.0.0.1:{port}" in err, err

    ca = Ca(tmp_path)
    cert, key = ca.server("arbiter.test")
    config = gateway_yaml(tmp_path)
    toml = f'[server.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n[mcp_gateway]\nconfig = "{config}"\n'
    proc = serve(tmp_path, toml)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "arbiter listening" not in out
    assert "arbiter.tls_ca: needed because server.tls is on" in err, err


def test_the_standalone_gateway_still_needs_its_endpoint(tmp_path: Path) -> None:
    config = gateway_yaml(tmp_path)
    out = subprocess.run(
        [ARBITER, "mcp-gateway", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0 and "arbiter.endpoint: required" in out.stderr, out.stderr


def test_an_unauthenticated_request_to_the_in_process_gateway_is_refused(tmp_path: Path) -> None:
    config = gateway_yaml(tmp_path)
    proc = serve(tmp_path, env={"ARBITER_MCP_GATEWAY__CONFIG": str(config)})
    try:
        serving = started(tmp_path, proc)
        answer = httpx2.post(serving.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=10)
        assert answer.status_code == 401
        assert serving.calls() == []
    finally:
        stop(proc)
