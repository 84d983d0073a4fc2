"""TLS and mTLS against a real server: certificates made here (tests/pki.py), the
server configured through ``ARBITER_SERVER__TLS__*``, principals bound to
certificate identities, and the refusals."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

import arbiter

from .conftest import Server, start_server
from .pki import Ca, Pair

ADMIN_ID = "spiffe://arbiter.test/admin"
OPS_ID = "spiffe://arbiter.test/ops"
BOT_ID = "spiffe://arbiter.test/bot"


@dataclass
class TlsServer:
    """A TLS server, its CA (written to ``ca``) and the directory of the PEM files."""

    server: Server
    ca: Ca
    ca_file: Path
    directory: Path

    def client(self, identity: Optional[Pair] = None, **kwargs: Any) -> arbiter.Client:
        """A client that trusts the CA and presents ``identity`` (PEM bytes), if any."""
        if identity is not None:
            kwargs.update(tls_cert=identity.cert, tls_key=identity.key)
        return arbiter.Client(
            self.server.address,
            timeout=15.0,
            retries=0,
            circuit_breaker=False,
            tls_ca=self.ca_file,
            **kwargs,
        )


def tls_server(client_auth: str, ca: Ca, probe: Optional[Pair] = None) -> TlsServer:
    """Starts a server with a certificate from ``ca`` for localhost and 127.0.0.1;
    with ``client_auth`` other than "none", client certificates must chain to ``ca``.
    The readiness probe presents ``probe``, if given."""
    directory = Path(tempfile.mkdtemp(prefix="arbiter-py-tls-"))
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.pem)
    cert, key = ca.server().write(directory, "server")
    env = {
        "ARBITER_SERVER__TLS__CERT_FILE": str(cert),
        "ARBITER_SERVER__TLS__KEY_FILE": str(key),
        "ARBITER_SERVER__TLS__CLIENT_AUTH": client_auth,
    }
    if client_auth != "none":
        env["ARBITER_SERVER__TLS__CLIENT_CA_FILE"] = str(ca_file)

    def make_probe(address: str) -> arbiter.Client:
        kwargs: dict[str, Any] = {}
        if probe is not None:
            kwargs.update(tls_cert=probe.cert, tls_key=probe.key)
        return arbiter.Client(address, timeout=1.0, circuit_breaker=False, tls_ca=ca_file, **kwargs)

    try:
        server = start_server(env=env, probe=make_probe)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return TlsServer(server, ca, ca_file, directory)


def stop(s: TlsServer) -> None:
    s.server.stop()
    shutil.rmtree(s.server.directory, ignore_errors=True)
    shutil.rmtree(s.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsServer]:
    """A TLS server without client certificates (development mode: no principals)."""
    s = tls_server("none", Ca("arbiter python TLS CA"))
    yield s
    stop(s)


@dataclass
class Mtls:
    tls: TlsServer
    admin: Pair
    ops: Pair
    bot: Pair


@pytest.fixture(scope="module")
def mtls() -> Iterator[Mtls]:
    """An mTLS server (client certificates required) with an admin, an operator and an
    agent principal, each bound to a certificate identity. The first admin is created
    over mTLS while the server is still in development mode, as `arbiter principals
    create root --role admin --tls-identity ...` does."""
    ca = Ca("arbiter python mTLS CA")
    admin, ops, bot = ca.client(ADMIN_ID), ca.client(OPS_ID), ca.client(BOT_ID)
    s = tls_server("required", ca, probe=admin)
    root = s.client(admin).create_principal("root", ["admin"], tls_identity=ADMIN_ID)
    assert root.api_key is None, "a certificate principal gets no API key"
    assert root.principal.tls_identity == ADMIN_ID
    # From here on the admin certificate authenticates as `root`.
    admin_client = s.client(admin)
    admin_client.create_principal("ops-1", ["operator"], tls_identity=OPS_ID)
    admin_client.create_principal("bot-runtime", ["agent"], agents=["bot-1"], tls_identity=BOT_ID)
    listed = {p.name: p.tls_identity for p in admin_client.list_principals()}
    assert listed == {"root": ADMIN_ID, "ops-1": OPS_ID, "bot-runtime": BOT_ID}
    yield Mtls(s, admin, ops, bot)
    stop(s)


def test_a_tls_client_works_and_a_plaintext_one_is_unavailable(tls: TlsServer) -> None:
    d = tls.client().evaluate("bot-1", tool="search")
    assert d.allowed, d.reasons
    # The CA as PEM text (str) or bytes, and the name given explicitly, work alike.
    assert tls.client(tls_domain="localhost").evaluate("bot-1", tool="search").allowed
    by_pem = arbiter.Client(
        tls.server.address, tls_ca=tls.ca.pem.decode(), tls_domain="127.0.0.1", timeout=15.0
    )
    by_pem.ping()

    plain = arbiter.Client(tls.server.address, timeout=5.0, retries=0, circuit_breaker=False)
    with pytest.raises(arbiter.Unavailable):
        plain.evaluate("bot-1", tool="search")


def test_hostname_and_ca_are_verified(tls: TlsServer) -> None:
    # The certificate is for localhost and 127.0.0.1, not for this name.
    wrong_name = tls.client(tls_domain="arbiter.example.org")
    with pytest.raises(arbiter.Unavailable):
        wrong_name.ping()
    other_ca = arbiter.Client(
        tls.server.address,
        tls_ca=Ca("someone else").pem,
        timeout=5.0,
        retries=0,
        circuit_breaker=False,
    )
    with pytest.raises(arbiter.Unavailable):
        other_ca.ping()


def test_async_client_over_tls(tls: TlsServer) -> None:
    async def main() -> None:
        a = arbiter.AsyncClient(tls.server.address, tls_ca=tls.ca_file, timeout=15.0)
        decisions = await asyncio.gather(
            *(a.evaluate("bot-1", tool="search", session_id=f"s-{i}") for i in range(20))
        )
        assert all(d.allowed for d in decisions)

    asyncio.run(main())


def test_bad_tls_settings_are_refused_at_construction(tls: TlsServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="https"):
        arbiter.Client(f"http://{tls.server.address}", tls_ca=tls.ca_file)
    with pytest.raises(ValueError, match="tls_ca"):
        arbiter.Client(tls.server.address, tls_ca=tmp_path / "missing.crt")
    with pytest.raises(ValueError, match="tls_ca"):
        arbiter.Client(tls.server.address, tls_ca=b"not a certificate")
    pair = tls.ca.client(BOT_ID)
    with pytest.raises(ValueError, match="tls_key"):
        arbiter.Client(tls.server.address, tls_ca=tls.ca_file, tls_cert=pair.cert)
    with pytest.raises(ValueError, match="tls_ca"):
        arbiter.Client(tls.server.address, tls_cert=pair.cert, tls_key=pair.key)
    with pytest.raises(ValueError, match="tls_identity_pem"):
        arbiter.Client(tls.server.address, tls_ca=tls.ca_file, tls_cert=pair.cert, tls_key=b"x")
    with pytest.raises(TypeError):
        arbiter.Client(tls.server.address, tls_ca=42)  # type: ignore[arg-type]


def test_mtls_certificates_hold_their_principals_roles(mtls: Mtls, tmp_path: Path) -> None:
    s = mtls.tls
    # Certificate and key as file paths.
    bot_cert, bot_key = mtls.bot.write(tmp_path, "bot")
    bot = s.client(tls_cert=bot_cert, tls_key=str(bot_key))
    ops = s.client(mtls.ops)

    assert bot.evaluate("bot-1", tool="search").allowed
    with pytest.raises(arbiter.PermissionDenied):
        bot.evaluate("bot-2", tool="search")
    # An agent certificate cannot halt.
    with pytest.raises(arbiter.PermissionDenied) as caught:
        bot.halt(reason="agent tries")
    assert type(caught.value) is arbiter.PermissionDenied

    # The operator certificate can, and the halt names its principal.
    halt = ops.halt("bot-1", reason="drill")
    try:
        assert halt.engaged_by == "ops-1"
        d = bot.evaluate("bot-1", tool="search")
        assert d.halted, d.reasons
        with pytest.raises(arbiter.PermissionDenied):
            bot.resume("bot-1", reason="agent tries")
    finally:
        ops.resume("bot-1", reason="drill over")
    assert bot.evaluate("bot-1", tool="search").allowed


def test_mtls_refuses_clients_without_a_known_certificate(mtls: Mtls) -> None:
    s = mtls.tls
    # No certificate: the handshake fails, the call never reaches gRPC.
    with pytest.raises(arbiter.Unavailable):
        s.client().ping()
    # A certificate from the trusted CA that no principal holds.
    stranger = s.client(s.ca.client("spiffe://arbiter.test/stranger"))
    with pytest.raises(arbiter.Unauthenticated):
        stranger.list_halts()
    # A certificate from another CA: refused at the handshake.
    foreign = s.client(Ca("elsewhere").client(OPS_ID))
    with pytest.raises(arbiter.Unavailable):
        foreign.ping()
