"""Fixtures that run the real ``arbiter`` binary: one process per fixture, on a free
port (``--listen 127.0.0.1:0``; the first stdout line names the address) with a
temporary data directory. Nothing sleeps for a fixed time: readiness is a ping.

The binary is ``$ARBITER_BIN``, else ``$CARGO_TARGET_DIR/debug/arbiter``, else
``target/debug/arbiter`` in the repository (``cargo build --bins``). A missing binary
fails the run; it is never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Optional

import pytest

import arbiter

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE = 30.0

POLICY = """
version: 1
defaults:
  trust_level: L2_SUGGEST
  consent: deny
  approval_ttl: 1h
actions:
  - match: {tool: "refund_*"}
    approval: always
  - match: {tool: wire_money}
    trust: L4_ACT_REPORT
  - match: {tool: escalate}
    critical: true
agents:
  - id: "bot*"
    tools: {allow: ["*"], hidden: ["admin_*"]}
    apis: {allow: ["* https://api.example.com/**"]}
    models: ["gpt-4o-mini"]
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "10.00"}
"""


def arbiter_bin() -> Path:
    explicit = os.environ.get("ARBITER_BIN")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise RuntimeError(f"ARBITER_BIN={explicit} does not exist")
        return path
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = target / "debug" / "arbiter"
    if not path.is_file():
        raise RuntimeError(
            f"the arbiter binary is missing at {path}; build it with `cargo build --bins` "
            "or set ARBITER_BIN"
        )
    return path


@dataclass
class Server:
    """A running ``arbiter serve`` process."""

    address: str
    process: subprocess.Popen[bytes]
    directory: Path

    def client(self, api_key: Optional[str] = None, **kwargs: object) -> arbiter.Client:
        return arbiter.Client(self.address, api_key=api_key, timeout=15.0, **kwargs)  # type: ignore[arg-type]

    def async_client(self, api_key: Optional[str] = None) -> arbiter.AsyncClient:
        return arbiter.AsyncClient(self.address, api_key=api_key, timeout=15.0)

    def log(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)


def _drain(stream: IO[bytes], sink: IO[bytes]) -> None:
    for line in stream:
        sink.write(line)
        sink.flush()


def start_server(
    policy: str = POLICY,
    *,
    env: Optional[dict[str, str]] = None,
    probe: Optional[Callable[[str], arbiter.Client]] = None,
) -> Server:
    """Start ``arbiter serve``; ``env`` adds environment variables (e.g. TLS settings)
    and ``probe`` makes the client that pings it ready (a plaintext one by default)."""
    directory = Path(tempfile.mkdtemp(prefix="arbiter-py-"))
    policy_dir = directory / "policy"
    policy_dir.mkdir()
    (policy_dir / "policy.yaml").write_text(policy)
    log = open(directory / "server.log", "ab")  # noqa: SIM115 (closed with the process)
    environment = dict(os.environ, RUST_LOG="info,sqlx=warn", NO_COLOR="1")
    environment.pop("ARBITER_CONFIG", None)
    environment.pop("ARBITER_POLICY", None)
    # A free metrics port per server: fixtures overlap, and 9090 may be taken.
    environment["ARBITER_METRICS__LISTEN"] = "127.0.0.1:0"
    environment["ARBITER_CONSOLE__LISTEN"] = "127.0.0.1:0"
    environment.update(env or {})
    process = subprocess.Popen(
        [
            str(arbiter_bin()),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(directory / "data"),
            "--policy",
            str(policy_dir / "policy.yaml"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=environment,
    )
    assert process.stdout is not None
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(START_DEADLINE)
    line = first[0].decode().strip() if first else ""
    prefix = "arbiter listening on "
    if not line.startswith(prefix):
        process.kill()
        raise RuntimeError(
            f"arbiter did not print its address (got {line!r}); log:\n"
            + (directory / "server.log").read_text(errors="replace")[-4000:]
        )
    threading.Thread(target=_drain, args=(process.stdout, log), daemon=True).start()
    server = Server(address=line[len(prefix) :], process=process, directory=directory)
    if probe is None:
        probe_client = arbiter.Client(server.address, timeout=1.0, circuit_breaker=False)
    else:
        probe_client = probe(server.address)
    deadline = time.monotonic() + START_DEADLINE
    while True:
        try:
            probe_client.ping()
            return server
        except arbiter.Unavailable as error:
            if time.monotonic() > deadline or process.poll() is not None:
                server.stop()
                raise RuntimeError(
                    "arbiter did not answer in time; log:\n" + server.log()
                ) from error
            time.sleep(0.05)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """A development-mode server (no principals: every caller has every role)."""
    s = start_server()
    yield s
    s.stop()
    shutil.rmtree(s.directory, ignore_errors=True)


@pytest.fixture()
def authed_server() -> Iterator[Server]:
    """A fresh server of its own, for tests that switch authentication on."""
    s = start_server()
    yield s
    s.stop()
    shutil.rmtree(s.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def client(server: Server) -> arbiter.Client:
    return server.client()


@pytest.fixture()
def agent() -> str:
    """A fresh agent id (matching the policy's "bot*" rule), so tests share no state."""
    return f"bot-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    """A port that was just bound and released: connecting to it is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The framework adapters' tests (test_integrations_*.py): a server whose policy prices two
# test models and allows a few tools, and a fake provider endpoint (fake_providers.py).

INTEGRATIONS_POLICY = """
version: 1
defaults:
  trust_level: L2_SUGGEST
  consent: deny
  approval_ttl: 1h
prices:
  gpt-test: {input: "1.00", output: "2.00"}
  gpt-test-large: {input: "1.00", output: "2.00"}
  claude-test: {input: "3.00", output: "15.00"}
actions:
  - match: {tool: "refund_*"}
    approval: always
  - match: {model: "gpt-test-large*"}
    approval: always
agents:
  - id: "bot*"
    tools: {allow: ["lookup_*", "refund_*"]}
    models: ["gpt-test*", "claude-test*"]
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "0.50"}
"""


def require(module: str) -> object:
    """Import an adapter's SDK: a skip outside CI, a failure under CI=true."""
    if os.environ.get("CI") == "true":
        return __import__(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="session")
def llm_server() -> Iterator[Server]:
    s = start_server(INTEGRATIONS_POLICY)
    yield s
    s.stop()
    shutil.rmtree(s.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def _provider() -> Iterator[object]:
    from .fake_providers import FakeProvider

    fake = FakeProvider()
    yield fake
    fake.close()


@pytest.fixture()
def provider(_provider: object) -> object:
    """The fake provider endpoint, with an empty script and request count."""
    _provider.script()  # type: ignore[attr-defined]
    return _provider


def cli_approve(server: Server, approval_id: str) -> None:
    """Grant an approval the way an operator does: ``arbiter approvals approve``."""
    done = subprocess.run(
        [str(arbiter_bin()), "approvals", "approve", approval_id, "--addr", server.address],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
