"""Tests of scripts/verify_audit.py, the stdlib-only audit export verifier.

Logs are built here from the rules in docs/audit-format.md. Each tampering test checks
both the fault name and the first bad sequence number, in process and through the CLI.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "verify_audit.py"
VECTOR = ROOT / "tests" / "vectors" / "audit-chain-v1.json"


def _load_module() -> Any:
    spec = importlib.util.spec_from_file_location("verify_audit", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class body runs.
    sys.modules["verify_audit"] = module
    spec.loader.exec_module(module)
    return module


va = _load_module()

KEY_A = bytes(range(32))
KEY_B = hashlib.sha256(b"arbiter test key B").digest()
KEY_C = hashlib.sha256(b"arbiter test key C").digest()
ATTACKER_KEY = hashlib.sha256(b"not in the key ring").digest()
ID_A = va.key_id_for(KEY_A)
ID_B = va.key_id_for(KEY_B)
ID_C = va.key_id_for(KEY_C)


# ----------------------------------------------------------------------------------
# Helpers that build logs, key rings and runs
# ----------------------------------------------------------------------------------


def keyring_doc(*keys: tuple[bytes, str]) -> dict[str, Any]:
    """A key ring document holding each (secret, status)."""
    return {
        "keys": [
            {
                "id": va.key_id_for(secret),
                "secret": secret.hex(),
                "status": status,
                "created_at": "2026-11-01T00:00:00.000Z",
            }
            for secret, status in keys
        ]
    }


def make_entry(seq: int, key_id: str = ID_A, **overrides: Any) -> dict[str, Any]:
    """A plausible entry; kinds and outcomes vary with seq."""
    kinds = [
        ("evaluate", "allow"),
        ("evaluate", "deny"),
        ("record", "success"),
        ("trust.set", ""),
        ("consent.grant", ""),
        ("evaluate", "pending_approval"),
    ]
    kind, outcome = kinds[(seq - 1) % len(kinds)]
    entry: dict[str, Any] = {
        "v": 1,
        "seq": seq,
        "ts": f"2026-11-22T02:30:{seq % 60:02d}.{seq % 1000:03d}Z",
        "kind": kind,
        "key_id": key_id,
        "agent_id": "agent-7" if kind != "trust.set" else "",
        "session_id": "sess-42" if kind in ("evaluate", "record") else "",
        "outcome": outcome,
        "body": {
            "request_id": f"req-{seq:04d}",
            "estimate_micro_usd": 1500 * seq,
            "reasons": [{"code": "budget.exceeded", "detail": "cap reached\n"}]
            if outcome == "deny"
            else [],
            "note": "café ☕ 😀",
            "approved": None,
            "flags": {"z": True, "a": False},
        },
    }
    entry.update(overrides)
    return entry


def chain(
    entries: list[dict[str, Any]],
    secrets: dict[str, bytes],
    prev: bytes | None = None,
) -> tuple[list[bytes], list[bytes]]:
    """Return the export lines and raw MACs of entries chained from prev (or GENESIS)."""
    mac = va.GENESIS if prev is None else prev
    lines: list[bytes] = []
    macs: list[bytes] = []
    for entry in entries:
        mac = va.chain_mac(secrets[entry["key_id"]], mac, va.canonical_bytes(entry))
        lines.append(va.export_line(entry, mac))
        macs.append(mac)
    return lines, macs


def valid_log(n: int = 6) -> tuple[list[dict[str, Any]], list[bytes], list[bytes]]:
    entries = [make_entry(seq) for seq in range(1, n + 1)]
    lines, macs = chain(entries, {ID_A: KEY_A})
    return entries, lines, macs


KEYS_A = va.parse_keyring(keyring_doc((KEY_A, "active")))


def raw_line(entry: Any, mac_hex: str) -> bytes:
    """An export line built with json.dumps (lets tests put floats and odd values in)."""
    body = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return ('{"entry":' + body + ',"mac":"' + mac_hex + '"}\n').encode("utf-8")


def run_cli(
    tmp_path: Path, lines: list[bytes], *args: str, keys: Any = None
) -> subprocess.CompletedProcess[str]:
    """Write the export and key ring into tmp_path and run the script on them."""
    export = tmp_path / "export.jsonl"
    export.write_bytes(b"".join(lines))
    keyfile = tmp_path / "hmac.json"
    keyfile.write_text(
        json.dumps(keys if keys is not None else keyring_doc((KEY_A, "active")))
    )
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(export), "--keys", str(keyfile), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def assert_fault(result: Any, fault: str, seq: int | None) -> None:
    assert not result.ok, result.summary()
    assert (result.fault, result.fault_seq) == (fault, seq), result.summary()


def assert_cli_fault(
    proc: subprocess.CompletedProcess[str], fault: str, seq: int
) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith(f"FAIL: seq {seq}: {fault}: "), proc.stdout
    assert proc.stdout.count("\n") == 1


# ----------------------------------------------------------------------------------
# A valid log
# ----------------------------------------------------------------------------------


def test_valid_log_verifies_in_process() -> None:
    _, lines, macs = valid_log()
    result = va.verify_lines(lines, KEYS_A)
    assert result.ok, result.summary()
    assert (result.count, result.first_seq, result.last_seq) == (6, 1, 6)
    assert result.head_mac == macs[-1].hex()


def test_valid_log_verifies_through_the_cli(tmp_path: Path) -> None:
    _, lines, macs = valid_log()
    proc = run_cli(tmp_path, lines)
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout == f"OK: 6 entries verified (seq 1..6), head mac {macs[-1].hex()}\n"
    )


def test_verify_lines_accepts_str_lines_without_newlines() -> None:
    _, lines, _ = valid_log(3)
    result = va.verify_lines([line.decode().rstrip("\n") for line in lines], KEYS_A)
    assert result.ok, result.summary()


def test_last_line_without_trailing_newline_is_accepted(tmp_path: Path) -> None:
    _, lines, _ = valid_log(3)
    lines[-1] = lines[-1].rstrip(b"\n")
    assert run_cli(tmp_path, lines).returncode == 0


def test_empty_export_verifies(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, [])
    assert (proc.returncode, proc.stdout) == (0, "OK: 0 entries verified\n")


def test_quiet_prints_nothing_on_success_but_still_reports_faults(
    tmp_path: Path,
) -> None:
    _, lines, _ = valid_log(3)
    proc = run_cli(tmp_path, lines, "--quiet")
    assert (proc.returncode, proc.stdout) == (0, "")
    proc = run_cli(tmp_path, lines[:1] + lines[2:], "--quiet")
    assert_cli_fault(proc, "gap", 2)


def test_export_can_be_read_from_stdin(tmp_path: Path) -> None:
    _, lines, _ = valid_log(3)
    keyfile = tmp_path / "hmac.json"
    keyfile.write_text(json.dumps(keyring_doc((KEY_A, "active"))))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "-", "--keys", str(keyfile)],
        input=b"".join(lines),
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"OK: 3 entries verified (seq 1..3)")


def test_key_rotation_with_a_retired_key_verifies() -> None:
    entries = [make_entry(seq, ID_A if seq <= 3 else ID_B) for seq in range(1, 7)]
    lines, _ = chain(entries, {ID_A: KEY_A, ID_B: KEY_B})
    keys = va.parse_keyring(keyring_doc((KEY_A, "retired"), (KEY_B, "active")))
    result = va.verify_lines(lines, keys)
    assert result.ok, result.summary()


# ----------------------------------------------------------------------------------
# Tampering: each case names the first bad seq and the fault
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("outcome", "allow"),
        ("ts", "2026-11-22T02:30:03.004Z"),
        ("agent_id", "agent-8"),
        ("kind", "record"),
        ("body", {"request_id": "req-0002"}),
    ],
)
def test_edited_field_is_a_mac_mismatch_at_its_seq(
    tmp_path: Path, field: str, value: Any
) -> None:
    entries, lines, macs = valid_log()
    edited = dict(entries[1], **{field: value})
    assert edited != entries[1]
    lines[1] = va.export_line(edited, macs[1])
    assert_fault(va.verify_lines(lines, KEYS_A), "mac_mismatch", 2)
    assert_cli_fault(run_cli(tmp_path, lines), "mac_mismatch", 2)


def test_edited_nested_body_value_is_a_mac_mismatch() -> None:
    entries, lines, macs = valid_log()
    edited = json.loads(json.dumps(entries[4]))
    edited["body"]["flags"]["z"] = False
    lines[4] = va.export_line(edited, macs[4])
    assert_fault(va.verify_lines(lines, KEYS_A), "mac_mismatch", 5)


def test_edited_mac_is_a_mac_mismatch() -> None:
    entries, lines, macs = valid_log()
    forged = bytes([macs[3][0] ^ 1]) + macs[3][1:]
    lines[3] = va.export_line(entries[3], forged)
    assert_fault(va.verify_lines(lines, KEYS_A), "mac_mismatch", 4)


def test_deleted_line_is_a_gap_at_the_missing_seq(tmp_path: Path) -> None:
    _, lines, _ = valid_log()
    del lines[2]
    result = va.verify_lines(lines, KEYS_A)
    assert_fault(result, "gap", 3)
    assert result.explanation == "expected seq 3, found seq 4"
    assert (result.count, result.last_seq) == (2, 2)
    assert_cli_fault(run_cli(tmp_path, lines), "gap", 3)


def test_deleted_first_line_is_a_seq_mismatch(tmp_path: Path) -> None:
    _, lines, _ = valid_log()
    assert_fault(va.verify_lines(lines[1:], KEYS_A), "seq_mismatch", 2)
    assert_cli_fault(run_cli(tmp_path, lines[1:]), "seq_mismatch", 2)


def test_deleted_line_renumbered_is_a_mac_mismatch() -> None:
    entries, lines, macs = valid_log()
    # The attacker deletes seq 3 and renumbers the rest, keeping their MACs.
    survivors = entries[:2] + [dict(e, seq=e["seq"] - 1) for e in entries[3:]]
    lines = lines[:2] + [va.export_line(e, m) for e, m in zip(survivors[2:], macs[3:])]
    assert_fault(va.verify_lines(lines, KEYS_A), "mac_mismatch", 3)


def test_truncated_tail_is_only_visible_against_a_kept_head() -> None:
    # The chain alone cannot show that the newest entries were cut off; an auditor needs
    # a head MAC (or, later, a signed checkpoint) kept from before.
    _, lines, macs = valid_log()
    result = va.verify_lines(lines[:4], KEYS_A)
    assert result.ok
    assert result.head_mac != macs[-1].hex()


def test_swapped_lines_are_a_gap_at_the_first_moved_seq(tmp_path: Path) -> None:
    _, lines, _ = valid_log()
    lines[2], lines[3] = lines[3], lines[2]
    result = va.verify_lines(lines, KEYS_A)
    assert_fault(result, "gap", 3)
    assert result.explanation == "expected seq 3, found seq 4"
    assert_cli_fault(run_cli(tmp_path, lines), "gap", 3)


def test_swapped_and_renumbered_lines_are_a_mac_mismatch() -> None:
    entries, lines, macs = valid_log()
    lines[2] = va.export_line(dict(entries[3], seq=3), macs[3])
    lines[3] = va.export_line(dict(entries[2], seq=4), macs[2])
    assert_fault(va.verify_lines(lines, KEYS_A), "mac_mismatch", 3)


def test_inserted_forged_line_is_a_mac_mismatch_at_its_seq(tmp_path: Path) -> None:
    _, lines, macs = valid_log()
    forged = make_entry(3, outcome="allow")
    # Without the key the forger can only guess; the best try uses another key.
    forged_mac = va.chain_mac(ATTACKER_KEY, macs[1], va.canonical_bytes(forged))
    lines.insert(2, va.export_line(forged, forged_mac))
    assert_fault(va.verify_lines(lines, KEYS_A), "mac_mismatch", 3)
    assert_cli_fault(run_cli(tmp_path, lines), "mac_mismatch", 3)


def test_inserted_line_with_an_out_of_order_seq_is_a_gap() -> None:
    _, lines, macs = valid_log()
    forged = make_entry(99)
    lines.insert(
        2,
        va.export_line(
            forged, va.chain_mac(ATTACKER_KEY, macs[1], va.canonical_bytes(forged))
        ),
    )
    result = va.verify_lines(lines, KEYS_A)
    assert_fault(result, "gap", 3)
    assert result.explanation == "expected seq 3, found seq 99"


def test_replayed_line_is_a_gap() -> None:
    _, lines, _ = valid_log()
    lines.insert(3, lines[2])
    result = va.verify_lines(lines, KEYS_A)
    assert_fault(result, "gap", 4)
    assert result.explanation == "expected seq 4, found seq 3"


def test_appended_forged_line_is_a_mac_mismatch() -> None:
    _, lines, macs = valid_log()
    forged = make_entry(7)
    lines.append(
        va.export_line(
            forged, va.chain_mac(ATTACKER_KEY, macs[-1], va.canonical_bytes(forged))
        )
    )
    assert_fault(va.verify_lines(lines, KEYS_A), "mac_mismatch", 7)


# ----------------------------------------------------------------------------------
# Keys
# ----------------------------------------------------------------------------------


def test_unknown_key_id_is_reported_at_its_seq(tmp_path: Path) -> None:
    entries = [make_entry(seq, ID_A if seq <= 3 else ID_C) for seq in range(1, 7)]
    lines, _ = chain(entries, {ID_A: KEY_A, ID_C: KEY_C})
    result = va.verify_lines(lines, KEYS_A)
    assert_fault(result, "unknown_key", 4)
    assert ID_C in result.explanation
    assert_cli_fault(run_cli(tmp_path, lines), "unknown_key", 4)


def test_revoked_key_is_reported_at_its_first_entry(tmp_path: Path) -> None:
    entries = [make_entry(seq, ID_A if seq <= 2 else ID_B) for seq in range(1, 5)]
    lines, _ = chain(entries, {ID_A: KEY_A, ID_B: KEY_B})
    ring = keyring_doc((KEY_A, "retired"), (KEY_B, "revoked"))
    assert_fault(va.verify_lines(lines, va.parse_keyring(ring)), "revoked_key", 3)
    assert_cli_fault(run_cli(tmp_path, lines, keys=ring), "revoked_key", 3)


def test_a_key_revoked_after_a_seq_still_verifies_its_earlier_entries(
    tmp_path: Path,
) -> None:
    entries = [make_entry(seq, ID_A if seq <= 4 else ID_B) for seq in range(1, 7)]
    lines, _ = chain(entries, {ID_A: KEY_A, ID_B: KEY_B})
    ring = keyring_doc((KEY_A, "revoked"), (KEY_B, "active"))
    ring["keys"][0]["revoked_after_seq"] = 2
    assert_fault(va.verify_lines(lines, va.parse_keyring(ring)), "revoked_key", 3)
    assert_cli_fault(run_cli(tmp_path, lines, keys=ring), "revoked_key", 3)
    ring["keys"][0]["revoked_after_seq"] = 4
    assert va.verify_lines(lines, va.parse_keyring(ring)).ok
    ring["keys"][0]["status"] = "retired"
    with pytest.raises(va.KeyFileError, match="not revoked"):
        va.parse_keyring(ring)


def test_key_id_is_derived_from_the_secret() -> None:
    digest = hashlib.sha256(b"arbiter-hmac-key-id-v1" + KEY_A).hexdigest()
    assert ID_A == "h-" + digest[:16]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["keys"][0].update(id="h-0000000000000000"),
            "does not match its secret",
        ),
        (
            lambda d: d["keys"][0].update(
                secret="00" * 32, id=va.key_id_for(bytes(32))
            ),
            "weak key",
        ),
        (
            lambda d: d["keys"][0].update(
                secret=bytes(range(15)).hex() * 2 + "0000",
                id=va.key_id_for(bytes(range(15)) * 2 + bytes(2)),
            ),
            "only 15 distinct byte values",
        ),
        (lambda d: d["keys"][0].update(secret="ab" * 16), "64 hex characters"),
        (lambda d: d["keys"][0].update(status="lost"), "status must be one of"),
        (lambda d: d["keys"].append(dict(d["keys"][0])), "duplicate key id"),
        (lambda d: d["keys"][0].pop("created_at"), "'created_at' must be a string"),
        (lambda d: d.update(keys=[]), "no keys"),
    ],
)
def test_bad_key_file_is_a_usage_error(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    ring = keyring_doc((KEY_A, "active"))
    mutate(ring)
    with pytest.raises(va.KeyFileError, match=message):
        va.parse_keyring(ring)
    _, lines, _ = valid_log(2)
    proc = run_cli(tmp_path, lines, keys=ring)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: key file ") and message in proc.stderr


def test_weak_key_rule() -> None:
    assert va.secret_problem(bytes(range(16)) * 2) is None
    assert "15 distinct" in va.secret_problem(bytes(range(15)) * 2 + b"\x00\x01")
    assert "32 bytes" in va.secret_problem(bytes(range(31)))
    assert "32 bytes" in va.secret_problem(bytes(range(33)))


def test_missing_files_and_bad_flags_are_usage_errors(tmp_path: Path) -> None:
    _, lines, _ = valid_log(2)
    proc = run_cli(tmp_path, lines)
    assert proc.returncode == 0
    keyfile = str(tmp_path / "hmac.json")
    export = str(tmp_path / "export.jsonl")
    missing = str(tmp_path / "nope.jsonl")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    for args, needle in [
        ((missing, "--keys", keyfile), "cannot read export"),
        ((export, "--keys", missing), "error: key file"),
        ((export,), "--keys"),
        ((export, "--keys", keyfile, "--prev-mac", "abc"), "--prev-mac must be 64 hex"),
        ((export, "--keys", keyfile, "--from-seq", "5"), "needs --prev-mac"),
        (
            (export, "--keys", keyfile, "--from-seq", "0"),
            "--from-seq must be 1 or more",
        ),
    ]:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)

    (tmp_path / "bad.json").write_text("{not json")
    proc = run(export, "--keys", str(tmp_path / "bad.json"))
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr


# ----------------------------------------------------------------------------------
# Canonical form
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["1.5", "1.0", "1e3", "-0.0"])
def test_float_in_an_entry_is_not_canonical(tmp_path: Path, number: str) -> None:
    entries, lines, macs = valid_log()
    text = raw_line(entries[1], macs[1].hex()).decode()
    text = text.replace('"estimate_micro_usd":3000', '"estimate_micro_usd":' + number)
    assert number in text
    lines[1] = text.encode()
    result = va.verify_lines(lines, KEYS_A)
    assert_fault(result, "not_canonical", 2)
    assert "body.estimate_micro_usd" in result.explanation
    assert_cli_fault(run_cli(tmp_path, lines), "not_canonical", 2)


def test_float_deep_in_the_body_is_located() -> None:
    entries, lines, macs = valid_log()
    entry = json.loads(json.dumps(entries[2]))
    entry["body"]["reasons"] = [{"score": 0.5}]
    lines[2] = raw_line(entry, macs[2].hex())
    result = va.verify_lines(lines, KEYS_A)
    assert_fault(result, "not_canonical", 3)
    assert (
        "body.reasons[0].score: floating-point number 0.5 is not allowed"
        in result.explanation
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda e: e.pop("session_id"), "missing key(s) session_id"),
        (lambda e: e.update(extra="x"), "unexpected key(s) 'extra'"),
        (lambda e: e.update(v=True), "v: must be the integer 1"),
        (lambda e: e.update(v=2), "v: must be the integer 1"),
        (lambda e: e.update(seq=True), "seq: must be an integer"),
        (lambda e: e.update(ts="2026-11-22T02:30:00Z"), "ts: must be RFC 3339"),
        (
            lambda e: e.update(ts="2026-11-22T02:30:00.123+00:00"),
            "ts: must be RFC 3339",
        ),
        (lambda e: e.update(ts="2026-13-22T02:30:00.123Z"), "ts: is not a valid date"),
        (lambda e: e.update(agent_id=None), "agent_id: must be a string"),
        (lambda e: e.update(outcome=0), "outcome: must be a string"),
        (lambda e: e.update(kind=""), "kind: must not be empty"),
        (lambda e: e.update(body=[]), "body: must be an object"),
        (
            lambda e: e["body"].update(big=2**53),
            "body.big: integer 9007199254740992 is outside",
        ),
    ],
)
def test_malformed_entry_is_not_canonical(change: Any, needle: str) -> None:
    entries, lines, macs = valid_log()
    entry = json.loads(json.dumps(entries[2]))
    change(entry)
    lines[2] = raw_line(entry, macs[2].hex())
    result = va.verify_lines(lines, KEYS_A)
    assert_fault(result, "not_canonical", 3)
    assert needle in result.explanation


@pytest.mark.parametrize(
    ("rewrite", "needle"),
    [
        (
            lambda t: t.replace('{"entry":{', '{"entry": {', 1),
            "byte-for-byte canonical",
        ),
        (lambda t: t.replace("\n", "\r\n"), "byte-for-byte canonical"),
        (lambda t: t.replace("é", "\\u00e9"), "byte-for-byte canonical"),
        (
            lambda t: t.replace('"approved":null', '"approved":null,"approved":null'),
            "duplicate object key",
        ),
        (
            lambda t: t.replace('"mac":"', '"extra":1,"mac":"'),
            'exactly the keys "entry" and "mac"',
        ),
        (
            lambda t: t[: t.index('"mac"')] + '"mac":"' + t.split('"mac":"')[1].upper(),
            "lower-case hex",
        ),
    ],
)
def test_non_canonical_line_is_rejected(rewrite: Any, needle: str) -> None:
    _, lines, _ = valid_log()
    text = lines[3].decode()
    changed = rewrite(text)
    assert changed != text
    lines[3] = changed.encode()
    result = va.verify_lines(lines, KEYS_A)
    assert_fault(result, "not_canonical", 4)
    assert needle in result.explanation


def test_members_in_another_order_are_not_canonical() -> None:
    entries, lines, macs = valid_log()
    body = json.dumps(
        entries[1], separators=(",", ":"), ensure_ascii=False
    )  # insertion order
    lines[1] = ('{"entry":' + body + ',"mac":"' + macs[1].hex() + '"}\n').encode()
    assert_fault(va.verify_lines(lines, KEYS_A), "not_canonical", 2)


# ----------------------------------------------------------------------------------
# Lines that are not JSON
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [b"not json\n", b"\n", b'{"entry":\n', b"\xff\xfe\n", b'{"entry":{},"mac":NaN}\n'],
)
def test_unparsable_line_is_a_parse_error_at_the_expected_seq(
    tmp_path: Path, bad: bytes
) -> None:
    _, lines, _ = valid_log()
    lines[2] = bad
    assert_fault(va.verify_lines(lines, KEYS_A), "parse_error", 3)
    assert_cli_fault(run_cli(tmp_path, lines), "parse_error", 3)


def test_torn_last_line_is_a_parse_error() -> None:
    _, lines, _ = valid_log()
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    assert_fault(va.verify_lines(lines, KEYS_A), "parse_error", 6)


def test_extra_blank_line_at_the_end_is_a_parse_error() -> None:
    _, lines, _ = valid_log()
    assert_fault(va.verify_lines([*lines, b"\n"], KEYS_A), "parse_error", 7)


# ----------------------------------------------------------------------------------
# Exports that start mid-log
# ----------------------------------------------------------------------------------


def test_export_starting_mid_log_verifies_with_prev_mac(tmp_path: Path) -> None:
    _, lines, macs = valid_log()
    result = va.verify_lines(lines[3:], KEYS_A, prev_mac=macs[2])
    assert result.ok, result.summary()
    assert (result.count, result.first_seq, result.last_seq) == (3, 4, 6)
    assert va.verify_lines(lines[3:], KEYS_A, prev_mac=macs[2].hex()).ok
    proc = run_cli(tmp_path, lines[3:], "--prev-mac", macs[2].hex())
    assert proc.returncode == 0, proc.stdout
    assert (
        proc.stdout == f"OK: 3 entries verified (seq 4..6), head mac {macs[-1].hex()}\n"
    )
    proc = run_cli(tmp_path, lines[3:], "--prev-mac", macs[2].hex(), "--from-seq", "4")
    assert proc.returncode == 0, proc.stdout


def test_export_starting_mid_log_without_prev_mac_is_a_seq_mismatch(
    tmp_path: Path,
) -> None:
    _, lines, _ = valid_log()
    result = va.verify_lines(lines[3:], KEYS_A)
    assert_fault(result, "seq_mismatch", 4)
    assert "--prev-mac with the MAC of seq 3" in result.explanation
    assert_cli_fault(run_cli(tmp_path, lines[3:]), "seq_mismatch", 4)


def test_export_starting_mid_log_with_the_wrong_prev_mac_is_a_mac_mismatch(
    tmp_path: Path,
) -> None:
    _, lines, macs = valid_log()
    result = va.verify_lines(lines[3:], KEYS_A, prev_mac=macs[1])
    assert_fault(result, "mac_mismatch", 4)
    assert "--prev-mac" in result.explanation
    assert_cli_fault(
        run_cli(tmp_path, lines[3:], "--prev-mac", macs[1].hex()), "mac_mismatch", 4
    )


def test_from_seq_that_does_not_fit_is_a_seq_mismatch(tmp_path: Path) -> None:
    _, lines, macs = valid_log()
    assert_fault(
        va.verify_lines(lines[3:], KEYS_A, prev_mac=macs[2], from_seq=5),
        "seq_mismatch",
        4,
    )
    proc = run_cli(tmp_path, lines[3:], "--prev-mac", macs[2].hex(), "--from-seq", "5")
    assert_cli_fault(proc, "seq_mismatch", 4)


def test_prev_mac_with_an_export_from_seq_1_is_a_seq_mismatch() -> None:
    _, lines, macs = valid_log()
    assert_fault(va.verify_lines(lines, KEYS_A, prev_mac=macs[0]), "seq_mismatch", 1)
    # GENESIS itself is the correct "previous MAC" of seq 1.
    assert va.verify_lines(lines, KEYS_A, prev_mac=va.GENESIS).ok
    assert_fault(
        va.verify_lines(lines[3:], KEYS_A, prev_mac=va.GENESIS), "seq_mismatch", 4
    )


def test_unparsable_first_line_of_a_mid_log_export_has_an_unknown_seq() -> None:
    _, lines, macs = valid_log()
    result = va.verify_lines([b"garbage\n", *lines[4:]], KEYS_A, prev_mac=macs[2])
    assert_fault(result, "parse_error", None)
    assert result.summary().startswith("FAIL: seq ?: parse_error: ")
    result = va.verify_lines([b"garbage\n"], KEYS_A, prev_mac=macs[2], from_seq=4)
    assert_fault(result, "parse_error", 4)


# ----------------------------------------------------------------------------------
# Canonicalization and the fixed test vector
# ----------------------------------------------------------------------------------


def test_canonical_bytes_match_json_dumps_for_ascii_keys() -> None:
    rng = random.Random(8785)
    alphabet = [
        "a",
        "Z",
        "é",
        "😀",
        '"',
        "\\",
        "\n",
        "\x00",
        "\x1f",
        "\x7f",
        "\u2028",
        "/",
        " ",
    ]

    def value(depth: int) -> Any:
        choice = rng.randrange(7 if depth < 4 else 4)
        if choice == 0:
            return rng.randint(-(2**53) + 1, 2**53 - 1)
        if choice == 1:
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
        if choice == 2:
            return rng.choice([True, False, None])
        if choice == 3:
            return rng.randint(-5, 5)
        if choice == 4:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {
            "".join(
                rng.choice("abcXYZ_.-09") for _ in range(rng.randrange(1, 5))
            ): value(depth + 1)
            for _ in range(rng.randrange(5))
        }

    for _ in range(500):
        data = {"k": value(0)}
        expected = json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        # canonical_bytes takes the C fast path here; the rule-by-rule serializer must agree.
        assert va.canonical_bytes(data) == expected.encode("utf-8")
        assert va._canonical_reference(data) == expected.encode("utf-8")


def test_fast_path_and_reference_serializer_agree_on_non_ascii_keys() -> None:
    rng = random.Random(1)
    names = [
        "a",
        "é",
        "\ue000",
        "\uffff",
        "😀",
        "\U00010000",
        "a😀",
        "a\ue000",
        "",
        "Z",
    ]
    for _ in range(300):
        data = {
            rng.choice(names) + rng.choice(names): rng.randint(-9, 9) for _ in range(6)
        }
        data["nested"] = {rng.choice(names): [rng.choice(names)] for _ in range(4)}
        assert va.canonical_bytes(data) == va._canonical_reference(data)
        order = [
            key.encode("utf-16-be") for key in json.loads(va.canonical_bytes(data))
        ]
        assert order == sorted(order)


def test_canonical_bytes_rejects_values_outside_the_format() -> None:
    for bad in [
        1.5,
        float("nan"),
        2**53,
        -(2**53),
        {1: "x"},
        {"x": {1, 2}},
        b"bytes",
        "\ud800",
    ]:
        with pytest.raises(va.CanonicalError):
            va.canonical_bytes({"x": bad})


def test_chain_constants() -> None:
    assert va.DOMAIN == b"arbiter-audit-chain-v1\n" and len(va.DOMAIN) == 23
    assert va.GENESIS == hashlib.sha256(b"arbiter-audit-genesis-v1").digest()
    assert (
        va.GENESIS.hex()
        == "1782ea61974dc4c095a932348c8e176d1696cbf430e5af74ec622b8898b76b9f"
    )


def test_vector_file_matches_this_implementation() -> None:
    vector = json.loads(VECTOR.read_text(encoding="utf-8"))
    key = bytes.fromhex(vector["key_hex"])
    assert vector["domain_hex"] == va.DOMAIN.hex()
    assert vector["genesis_hex"] == va.GENESIS.hex()
    assert vector["key_id"] == va.key_id_for(key)
    keys = va.parse_keyring(vector["keyring"])
    assert list(keys) == [vector["key_id"]]
    prev = va.GENESIS
    kinds = []
    for item in vector["entries"]:
        entry = item["entry"]
        va.validate_entry(entry)
        canonical = va.canonical_bytes(entry)
        assert canonical == item["canonical"].encode("utf-8")
        assert item["prev_mac"] == prev.hex()
        mac = va.chain_mac(key, prev, canonical)
        assert mac.hex() == item["mac"]
        assert va.export_line(entry, mac) == item["line"].encode("utf-8")
        kinds.append((entry["kind"], entry["outcome"]))
        prev = mac
    assert kinds == [("evaluate", "allow"), ("evaluate", "deny"), ("record", "success")]
    assert vector["head_mac"] == prev.hex()
    result = va.verify_lines([item["line"] for item in vector["entries"]], keys)
    assert result.ok and result.head_mac == vector["head_mac"]


def test_vector_jcs_cases() -> None:
    vector = json.loads(VECTOR.read_text(encoding="utf-8"))
    for case in vector["jcs_cases"]:
        assert va.canonical_bytes(case["value"]) == case["canonical"].encode("utf-8"), (
            case["name"]
        )
    order = next(c for c in vector["jcs_cases"] if c["name"] == "utf16_member_order")
    code_point_order = json.dumps(
        order["value"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert code_point_order != order["canonical"]
    template = raw_line(make_entry(1, body={"case": "@"}), "0" * 64).decode()
    for case in vector["jcs_rejects"]:
        line = template.replace('"@"', case["json"])
        result = va.verify_lines([line], KEYS_A)
        assert (result.fault, result.fault_seq) == ("not_canonical", 1), (
            case["name"],
            result.summary(),
        )
        assert "body.case" in result.explanation or "duplicate" in result.explanation


def test_documented_values_match_the_vector() -> None:
    doc = (ROOT / "docs" / "audit-format.md").read_text(encoding="utf-8")
    vector = json.loads(VECTOR.read_text(encoding="utf-8"))
    first = vector["entries"][0]
    for value in [
        vector["domain_hex"],
        vector["genesis_hex"],
        vector["key_hex"],
        vector["key_id"],
        first["canonical"],
        *(item["mac"] for item in vector["entries"]),
    ]:
        assert value in doc
    assert f"({len(first['canonical'].encode())} bytes" in doc
    assert f"MAC input is {23 + 32 + len(first['canonical'].encode())} bytes" in doc
