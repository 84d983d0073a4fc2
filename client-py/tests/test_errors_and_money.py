"""Money conversion edge cases, and errors when Arbiter is down or hangs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

import arbiter

from .conftest import free_port


@pytest.mark.parametrize(
    ("amount", "micros"),
    [
        (Decimal("1.5"), 1_500_000),
        ("0.000001", 1),
        (" 12.34 ", 12_340_000),
        ("1e-3", 1_000),
        (0, 0),
        (3, 3_000_000),
        (0.1, 100_000),
        (0.1 + 0.2, 300_000),
        (1e-7, 0),
        ("0.0000005", 0),
        ("0.0000015", 2),
        ("0.0000025", 2),
        ("0.00000051", 1),
        (Decimal("-0"), 0),
        ("999999999.999999", 999_999_999_999_999),
        # Plain decimals (the integer fast path) next to their neighbours that are not.
        ("5.", 5_000_000),
        ("007.5", 7_500_000),
        (".5", 500_000),
        (0.25, 250_000),
        ("9223372036854.775807", 2**63 - 1),
    ],
)
def test_dollars_convert_exactly_to_micro_usd(amount: arbiter.Money, micros: int) -> None:
    assert arbiter.usd_to_micros(amount) == micros


@pytest.mark.parametrize(
    "amount",
    [
        "-0.01",
        -1,
        float("nan"),
        float("inf"),
        "NaN",
        "abc",
        "",
        "1,5",
        "1e30",
        "9223372036854.775808",
    ],
)
def test_bad_amounts_are_value_errors(amount: arbiter.Money) -> None:
    with pytest.raises(ValueError):
        arbiter.usd_to_micros(amount)


@pytest.mark.parametrize("amount", [True, None, [1], b"1"])
def test_other_types_are_type_errors(amount: object) -> None:
    with pytest.raises(TypeError):
        arbiter.usd_to_micros(amount)  # type: ignore[arg-type]


def test_micro_usd_convert_back_to_exact_decimals() -> None:
    assert arbiter.micros_to_usd(1_234) == Decimal("0.001234")
    assert arbiter.micros_to_usd(10_000_000) == Decimal(10)
    assert str(arbiter.micros_to_usd(1)) == "0.000001"
    for micros in (0, 1, 999_999, 123_456_789_012):
        assert arbiter.usd_to_micros(arbiter.micros_to_usd(micros)) == micros


def test_nothing_listening_is_unavailable_for_every_kind_of_call() -> None:
    c = arbiter.Client(f"127.0.0.1:{free_port()}", retries=0, timeout=2)
    calls = [
        lambda: c.evaluate("bot-1", tool="t"),
        lambda: c.record("d-1"),
        lambda: c.halt(reason="x"),
        lambda: c.budget("bot-1"),
        lambda: c.audit.query(),
        lambda: list(c.audit.tail(limit=1)),
    ]
    for call in calls:
        with pytest.raises(arbiter.Unavailable) as caught:
            call()
        assert caught.value.code == "UNAVAILABLE"
        assert isinstance(caught.value, arbiter.ArbiterError)


def test_repeated_outages_open_the_circuit_breaker() -> None:
    c = arbiter.Client(f"127.0.0.1:{free_port()}", retries=0, timeout=2)
    assert c.circuit_state == "closed"
    for _ in range(6):
        with pytest.raises(arbiter.Unavailable):
            c.ping()
    assert c.circuit_state == "open"
    assert arbiter.Client("127.0.0.1:1", circuit_breaker=False).circuit_state is None


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_hung_server_is_deadline_exceeded_which_is_unavailable(silent_port: int) -> None:
    c = arbiter.Client(f"127.0.0.1:{silent_port}", timeout=0.5, retries=0)
    started = time.monotonic()
    with pytest.raises(arbiter.DeadlineExceeded) as caught:
        c.evaluate("bot-1", tool="t")
    assert time.monotonic() - started < 5
    assert isinstance(caught.value, arbiter.Unavailable)
    assert caught.value.code == "DEADLINE_EXCEEDED"
    with pytest.raises(arbiter.DeadlineExceeded):
        c.evaluate("bot-1", tool="t", timeout=0.2)


def test_a_call_object_runs_once() -> None:
    core = arbiter.Client("127.0.0.1:1")._core
    pending = core.ping()
    with pytest.raises(arbiter.Unavailable):
        pending.wait()
    with pytest.raises(RuntimeError, match="already started"):
        pending.wait()
