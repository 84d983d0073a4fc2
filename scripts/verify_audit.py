#!/usr/bin/env python3
"""Verify an exported Arbiter audit log independently of the Rust server.

Standard library only, Python 3.9 or later. The format is specified byte for byte in
``docs/audit-format.md``; this script is meant to be read next to that document.

Usage::

    python3 scripts/verify_audit.py EXPORT.jsonl --keys KEYS.json [--prev-mac HEX]
                                    [--from-seq N] [--quiet]

Exit status: 0 when every entry verifies, 1 when a fault is found (the first one is
reported), 2 for usage errors (missing file, unreadable or invalid key file, bad flag).

The functions are importable: ``canonical_bytes``, ``chain_mac``, ``key_id_for``,
``load_keys``, ``parse_keyring``, ``validate_entry``, ``export_line`` and
``verify_lines`` (which returns a ``VerifyResult``).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FORMAT_VERSION = 1
"""Value of the ``v`` field of every entry described by this script."""

DOMAIN = b"arbiter-audit-chain-v1\n"
"""Domain-separation prefix of every chain MAC input (23 bytes, ends with 0x0a)."""

GENESIS = hashlib.sha256(b"arbiter-audit-genesis-v1").digest()
"""The "previous MAC" of the entry with seq 1."""

KEY_ID_PREFIX = b"arbiter-hmac-key-id-v1"
"""Prefix hashed before the secret to derive a key id (no separator byte)."""

MAC_LEN = 32
SECRET_LEN = 32
MIN_DISTINCT_SECRET_BYTES = 16
MAX_SAFE_INTEGER = 2**53 - 1
KEY_STATUSES = ("active", "retired", "revoked")

# Fault names. They are part of the contract with `arbiter audit verify`.
GAP = "gap"
SEQ_MISMATCH = "seq_mismatch"
MAC_MISMATCH = "mac_mismatch"
NOT_CANONICAL = "not_canonical"
UNKNOWN_KEY = "unknown_key"
REVOKED_KEY = "revoked_key"
PARSE_ERROR = "parse_error"
FAULTS = (
    GAP,
    SEQ_MISMATCH,
    MAC_MISMATCH,
    NOT_CANONICAL,
    UNKNOWN_KEY,
    REVOKED_KEY,
    PARSE_ERROR,
)

ENTRY_KEYS = (
    "v",
    "seq",
    "ts",
    "kind",
    "key_id",
    "agent_id",
    "session_id",
    "outcome",
    "body",
)
_STRING_FIELDS = ("kind", "key_id", "agent_id", "session_id", "outcome")

_TS_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_KEY_ID_RE = re.compile(r"h-[0-9a-f]{16}")

# JCS (RFC 8785 section 3.2.2.2) string escaping: the two-character escapes for
# " \ BS FF LF CR HT, \u00xx (lower-case hex) for the other controls below 0x20, and
# nothing else. Non-ASCII characters, DEL and U+2028/U+2029 are written as they are.
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
for _code in range(0x20):
    _ESCAPES.setdefault(chr(_code), f"\\u{_code:04x}")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_ESCAPE_RE = re.compile('["\\\\\x00-\x1f]')


class CanonicalError(ValueError):
    """A value cannot be serialized in the canonical form (float, bad type, bad entry).

    ``path`` locates the offending value, e.g. ``("body", "usage", "cost")``.
    """

    def __init__(self, problem: str, path: tuple[str, ...] = ()) -> None:
        self.problem = problem
        self.path = path
        super().__init__(self._text())

    def _text(self) -> str:
        if not self.path:
            return self.problem
        return f"{_render_path(self.path)}: {self.problem}"

    def under(self, segment: str) -> CanonicalError:
        """Return the same error located one level deeper, under ``segment``."""
        return CanonicalError(self.problem, (segment,) + self.path)


class KeyFileError(Exception):
    """The key ring file is missing, unreadable or invalid."""


def _render_path(path: tuple[str, ...]) -> str:
    out = ""
    for segment in path:
        out += segment if segment.startswith("[") or not out else "." + segment
    return out


# --------------------------------------------------------------------------------------
# Canonical bytes (RFC 8785 / JCS restricted to the value types an entry may contain)
# --------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    if _SURROGATE_RE.search(text):
        raise CanonicalError("string contains a lone surrogate (not valid Unicode)")
    return '"' + _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], text) + '"'


def _utf16_key(item: tuple[str, Any]) -> bytes:
    # Big-endian UTF-16 bytes compare exactly like sequences of UTF-16 code units, which
    # is the JCS member order. It differs from code-point order for characters above
    # U+FFFF versus U+E000..U+FFFF. surrogatepass lets lone surrogates through here; the
    # final UTF-8 encoding rejects them.
    return item[0].encode("utf-16-be", "surrogatepass")


def _emit(value: Any, out: list[str]) -> None:
    # bool first: in Python bool is a subclass of int.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalError(f"integer {value} is outside ±(2^53−1)")
        out.append(int.__repr__(value))
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, float):
        raise CanonicalError(f"floating-point number {value!r} is not allowed")
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key in value:
            if not isinstance(key, str):
                raise CanonicalError(f"object key {key!r} is not a string")
        for key, member in sorted(value.items(), key=_utf16_key):
            if not first:
                out.append(",")
            first = False
            out.append(_quote(key))
            out.append(":")
            try:
                _emit(member, out)
            except CanonicalError as err:
                raise err.under(key) from None
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, member in enumerate(value):
            if index:
                out.append(",")
            try:
                _emit(member, out)
            except CanonicalError as err:
                raise err.under(f"[{index}]") from None
        out.append("]")
    else:
        raise CanonicalError(f"value of type {type(value).__name__} is not allowed")


def _plain(value: Any) -> bool:
    """Return True if ``value`` holds only allowed types, safe integers and ASCII keys.

    For such values JCS and ``json.dumps(sort_keys=True, ...)`` produce the same text:
    the escaping rules agree, and for ASCII member names code-point order is UTF-16
    order. Exact type checks send subclasses (and everything else) to the slow path.
    """
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if kind is dict:
        for key, member in value.items():
            if type(key) is not str or not key.isascii() or not _plain(member):
                return False
        return True
    if kind is list:
        for member in value:
            if not _plain(member):
                return False
        return True
    return False


_FAST_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 (JCS) canonical UTF-8 bytes of ``value``.

    Allowed values: dict (string keys), list, str, int within ±(2^53−1), bool and None.
    Floats, out-of-range integers, lone surrogates and other types raise
    ``CanonicalError``, which names where the bad value sits.
    """
    try:
        if _plain(value):
            # Fast path (C encoder); equal to JCS for plain values, see _plain.
            return _FAST_ENCODER.encode(value).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        pass  # the reference serializer below reports the problem precisely
    return _canonical_reference(value)


def _canonical_reference(value: Any) -> bytes:
    """The JCS serializer written out rule by rule; ``canonical_bytes`` defers to it."""
    out: list[str] = []
    try:
        _emit(value, out)
    except RecursionError:
        raise CanonicalError("value is nested too deeply") from None
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError(
            "string contains a lone surrogate (not valid Unicode)"
        ) from None


# --------------------------------------------------------------------------------------
# Chain and keys
# --------------------------------------------------------------------------------------


def chain_mac(key: bytes, prev_mac: bytes, canonical: bytes) -> bytes:
    """Return ``HMAC-SHA256(key, DOMAIN || prev_mac || canonical)`` (32 raw bytes).

    ``prev_mac`` is the previous entry's raw MAC, or ``GENESIS`` for seq 1.
    """
    if len(prev_mac) != MAC_LEN:
        raise ValueError(f"prev_mac must be {MAC_LEN} bytes, got {len(prev_mac)}")
    return hmac.new(key, DOMAIN + prev_mac + canonical, hashlib.sha256).digest()


def key_id_for(secret: bytes) -> str:
    """Return the key id of ``secret``: "h-" + first 16 hex of SHA-256(prefix || secret)."""
    return "h-" + hashlib.sha256(KEY_ID_PREFIX + secret).hexdigest()[:16]


def secret_problem(secret: bytes) -> str | None:
    """Return why ``secret`` is too weak to chain audit entries, or None if it is fine.

    A secret must be exactly 32 bytes with at least 16 distinct byte values.
    """
    if len(secret) != SECRET_LEN:
        return f"secret must be {SECRET_LEN} bytes, got {len(secret)}"
    distinct = len(set(secret))
    if distinct < MIN_DISTINCT_SECRET_BYTES:
        return (
            f"secret has only {distinct} distinct byte values"
            f" (at least {MIN_DISTINCT_SECRET_BYTES} required)"
        )
    return None


@dataclass(frozen=True)
class Key:
    """One HMAC key of the key ring. ``secret`` is kept out of ``repr``."""

    id: str
    secret: bytes = field(repr=False)
    status: str
    created_at: str


def parse_keyring(document: Any) -> dict[str, Key]:
    """Validate a parsed key ring document and return its keys by id.

    Raises ``KeyFileError`` naming the first problem: wrong shape, a secret that is not
    64 hex characters, a weak secret, an id that does not match its secret, an unknown
    status or a duplicate id.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyFileError('expected an object {"keys": [...]}')
    if not document["keys"]:
        raise KeyFileError("the key ring holds no keys")
    keys: dict[str, Key] = {}
    for index, item in enumerate(document["keys"]):
        where = f"keys[{index}]"
        if not isinstance(item, dict):
            raise KeyFileError(f"{where}: expected an object")
        for name in ("id", "secret", "status", "created_at"):
            if not isinstance(item.get(name), str):
                raise KeyFileError(f"{where}: {name!r} must be a string")
        key_id = item["id"]
        secret_hex = item["secret"]
        if not re.fullmatch(r"[0-9a-fA-F]{64}", secret_hex):
            raise KeyFileError(f"{where} ({key_id}): secret must be 64 hex characters")
        secret = bytes.fromhex(secret_hex)
        problem = secret_problem(secret)
        if problem is not None:
            raise KeyFileError(f"{where} ({key_id}): weak key: {problem}")
        expected_id = key_id_for(secret)
        if key_id != expected_id:
            raise KeyFileError(
                f"{where}: id {key_id!r} does not match its secret (expected {expected_id!r})"
            )
        if item["status"] not in KEY_STATUSES:
            raise KeyFileError(
                f"{where} ({key_id}): status must be one of {', '.join(KEY_STATUSES)},"
                f" got {item['status']!r}"
            )
        if key_id in keys:
            raise KeyFileError(f"{where}: duplicate key id {key_id}")
        keys[key_id] = Key(key_id, secret, item["status"], item["created_at"])
    return keys


def load_keys(path: str) -> dict[str, Key]:
    """Read and validate a key ring file (``<data dir>/keys/hmac.json``).

    Raises ``KeyFileError`` when the file cannot be read, is not JSON or is invalid.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise KeyFileError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise KeyFileError(f"{path} is not valid JSON: {err}") from None
    try:
        return parse_keyring(document)
    except KeyFileError as err:
        raise KeyFileError(f"{path}: {err}") from None


# --------------------------------------------------------------------------------------
# Entries and export lines
# --------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_entry(entry: Any) -> None:
    """Check that ``entry`` is a well-formed v1 audit entry; raise ``CanonicalError`` if not.

    Checks the exact key set, the type of every field, the timestamp form, and that the
    whole entry (body included) holds no floats or out-of-range integers.
    """
    _check_fields(entry)
    canonical_bytes(entry)


def _check_fields(entry: Any) -> None:
    """The field checks of ``validate_entry``, without canonicalizing the body."""
    if not isinstance(entry, dict):
        raise CanonicalError("entry must be a JSON object")
    missing = [name for name in ENTRY_KEYS if name not in entry]
    if missing:
        raise CanonicalError(f"entry is missing key(s) {', '.join(missing)}")
    extra = sorted(name for name in entry if name not in ENTRY_KEYS)
    if extra:
        raise CanonicalError(
            f"entry has unexpected key(s) {', '.join(map(repr, extra))}"
        )
    version = entry["v"]
    if not _is_int(version) or version != FORMAT_VERSION:
        raise CanonicalError(
            f"must be the integer {FORMAT_VERSION}, got {version!r}", ("v",)
        )
    seq = entry["seq"]
    if not _is_int(seq) or not 1 <= seq <= MAX_SAFE_INTEGER:
        raise CanonicalError(
            f"must be an integer from 1 to 2^53−1, got {seq!r}", ("seq",)
        )
    ts = entry["ts"]
    if not isinstance(ts, str) or not _TS_RE.fullmatch(ts):
        raise CanonicalError(
            f"must be RFC 3339 UTC with milliseconds, like 2026-11-22T02:30:00.123Z, got {ts!r}",
            ("ts",),
        )
    try:
        datetime(
            int(ts[0:4]),
            int(ts[5:7]),
            int(ts[8:10]),
            int(ts[11:13]),
            int(ts[14:16]),
            int(ts[17:19]),
        )
    except ValueError:
        raise CanonicalError(f"is not a valid date and time: {ts!r}", ("ts",)) from None
    for name in _STRING_FIELDS:
        if not isinstance(entry[name], str):
            raise CanonicalError(f"must be a string, got {entry[name]!r}", (name,))
    if not entry["kind"]:
        raise CanonicalError("must not be empty", ("kind",))
    if not entry["key_id"]:
        raise CanonicalError("must not be empty", ("key_id",))
    if not isinstance(entry["body"], dict):
        raise CanonicalError("must be an object", ("body",))


def export_line(entry: Mapping[str, Any], mac: bytes) -> bytes:
    """Return the JSONL export line of one entry, including its trailing newline.

    The line is ``{"entry":<canonical entry>,"mac":"<64 hex>"}`` followed by 0x0a.
    """
    return (
        b'{"entry":'
        + canonical_bytes(entry)
        + b',"mac":"'
        + mac.hex().encode()
        + b'"}\n'
    )


class _DuplicateKey(ValueError):
    pass


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate object key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _why_not_canonical(text: str) -> str:
    """Explain why a line that parsed and validated still differs from its canonical form."""
    try:
        json.loads(text, object_pairs_hook=_pairs_without_duplicates)
    except _DuplicateKey as err:
        return f"{err} (JCS forbids duplicate member names)"
    return "line is not byte-for-byte canonical (RFC 8785 JCS, no whitespace)"


# --------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    """Outcome of ``verify_lines``.

    ``count``, ``first_seq``, ``last_seq`` and ``head_mac`` describe the entries that
    verified (all of them when ``ok``; those before the fault otherwise). ``fault_seq``
    is None only when the sequence number of a bad first line cannot be known.
    """

    ok: bool
    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_mac: str | None = None
    fault: str | None = None
    fault_seq: int | None = None
    explanation: str = ""

    def summary(self) -> str:
        """Return the one-line report printed by the command line."""
        if self.ok:
            if self.count == 0:
                return "OK: 0 entries verified"
            return (
                f"OK: {self.count} entries verified (seq {self.first_seq}..{self.last_seq}),"
                f" head mac {self.head_mac}"
            )
        seq = "?" if self.fault_seq is None else str(self.fault_seq)
        return f"FAIL: seq {seq}: {self.fault}: {self.explanation}"


def _as_mac(value: bytes | str | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("prev_mac must be 64 hex characters")
        return bytes.fromhex(value)
    if len(value) != MAC_LEN:
        raise ValueError(f"prev_mac must be {MAC_LEN} bytes")
    return bytes(value)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verify_lines(
    lines: Iterable[str | bytes],
    keys: Mapping[str, Key],
    prev_mac: bytes | str | None = None,
    from_seq: int | None = None,
) -> VerifyResult:
    """Verify JSONL export lines in order and return the first fault, if any.

    ``lines`` may be ``bytes`` (as read from a file opened in binary mode) or ``str``; one
    trailing newline per line is removed and nothing else is forgiven. ``prev_mac`` (raw
    bytes or hex) is the MAC of the entry before the first line; None means GENESIS, so
    the export must start at seq 1. ``from_seq``, if given, is the seq the first line
    must have. The rule tying them together: the first line has seq 1 exactly when the
    previous MAC is GENESIS; otherwise the fault is ``seq_mismatch``.

    Per line the checks run in this order, and the first failure is returned: UTF-8 and
    JSON syntax (``parse_error``), shape, types and floats (``not_canonical``), the line
    being byte-for-byte canonical (``not_canonical``), the sequence number (``gap`` or
    ``seq_mismatch``), the key (``unknown_key``, ``revoked_key``) and the MAC
    (``mac_mismatch``).
    """
    prev = _as_mac(prev_mac)
    explicit_prev = prev is not None
    if prev is None:
        prev = GENESIS
    if from_seq is not None:
        if not _is_int(from_seq) or from_seq < 1:
            raise ValueError("from_seq must be an integer >= 1")
        if from_seq > 1 and not explicit_prev:
            raise ValueError(
                f"an export starting after seq 1 needs prev_mac (the MAC of seq {from_seq - 1})"
            )

    result = VerifyResult(ok=True)
    # The seq the next line must have; None only before the first line when the start
    # is given by prev_mac alone.
    expected: int | None = (
        from_seq if from_seq is not None else (None if explicit_prev else 1)
    )

    def fail(fault: str, seq: int | None, explanation: str) -> VerifyResult:
        result.ok = False
        result.fault = fault
        result.fault_seq = seq
        result.explanation = explanation
        return result

    for raw in lines:
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogatepass")
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        first_line = result.count == 0

        # 1. UTF-8 and JSON syntax.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return fail(
                PARSE_ERROR, expected, f"line is not valid UTF-8 (byte {err.start})"
            )
        if not text.strip():
            return fail(PARSE_ERROR, expected, "empty line where an entry was expected")
        try:
            # Duplicate member names are caught by the byte comparison in step 3 (the
            # parser keeps only the last one, so the re-serialized line is shorter).
            document = _DECODER.decode(text)
        except RecursionError:
            return fail(PARSE_ERROR, expected, "line is nested too deeply")
        except ValueError as err:
            return fail(PARSE_ERROR, expected, f"line is not JSON: {err}")

        # 2. Shape of the line and of the entry.
        if not isinstance(document, dict) or sorted(document) != ["entry", "mac"]:
            return fail(
                NOT_CANONICAL,
                expected,
                'line must be an object with exactly the keys "entry" and "mac"',
            )
        entry = document["entry"]
        seq_field = entry.get("seq") if isinstance(entry, dict) else None
        seq = seq_field if _is_int(seq_field) and seq_field >= 1 else expected
        try:
            _check_fields(entry)
            canonical = canonical_bytes(entry)
        except CanonicalError as err:
            return fail(NOT_CANONICAL, seq, str(err))
        mac_hex = document["mac"]
        if not isinstance(mac_hex, str) or not _HEX64_RE.fullmatch(mac_hex):
            return fail(
                NOT_CANONICAL,
                seq,
                f"mac must be 64 lower-case hex characters, got {_short(mac_hex)}",
            )

        # 3. The line must be exactly the canonical line: no extra whitespace, JCS member
        # order and escaping. The MAC covers the canonical entry bytes only, so this is
        # what stops two different texts from claiming the same MAC.
        if raw != b'{"entry":' + canonical + b',"mac":"' + mac_hex.encode() + b'"}':
            return fail(NOT_CANONICAL, seq, _why_not_canonical(text))

        # 4. Sequence numbers.
        if first_line:
            starts_at_genesis = hmac.compare_digest(prev, GENESIS)
            if from_seq is not None and seq != from_seq:
                return fail(
                    SEQ_MISMATCH,
                    seq,
                    f"export starts at seq {seq}, but --from-seq is {from_seq}",
                )
            if seq == 1 and not starts_at_genesis:
                return fail(
                    SEQ_MISMATCH,
                    seq,
                    "seq 1 chains from GENESIS, but --prev-mac gives another value",
                )
            if seq != 1 and starts_at_genesis:
                if explicit_prev:
                    hint = "GENESIS only precedes seq 1"
                else:
                    hint = f"pass --prev-mac with the MAC of seq {seq - 1}"
                return fail(SEQ_MISMATCH, seq, f"export starts at seq {seq}: {hint}")
        elif seq != expected:
            return fail(GAP, expected, f"expected seq {expected}, found seq {seq}")

        # 5. Key.
        key = keys.get(entry["key_id"])
        if key is None:
            return fail(
                UNKNOWN_KEY,
                seq,
                f"key id {_short(entry['key_id'])} is not in the key ring",
            )
        if key.status == "revoked":
            return fail(REVOKED_KEY, seq, f"entry is chained with revoked key {key.id}")

        # 6. MAC.
        mac = chain_mac(key.secret, prev, canonical)
        if not hmac.compare_digest(mac.hex(), mac_hex):
            why = "MAC does not match the entry and the previous MAC"
            if first_line and explicit_prev:
                why += f" (the entry was altered, or --prev-mac is not the MAC of seq {seq - 1})"
            return fail(MAC_MISMATCH, seq, why)

        if first_line:
            result.first_seq = seq
        result.count += 1
        result.last_seq = seq
        result.head_mac = mac_hex
        prev = mac
        expected = seq + 1
    return result


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verify_audit.py",
        description="Verify an exported Arbiter audit log (JSONL) against its HMAC key ring. "
        "Format: docs/audit-format.md.",
        epilog="Exit status: 0 verified, 1 a fault was found (the first is reported), 2 usage error.",
    )
    parser.add_argument(
        "export",
        metavar="EXPORT.jsonl",
        help="the JSONL export ('-' for standard input)",
    )
    parser.add_argument(
        "--keys",
        required=True,
        metavar="KEYS.json",
        help="the key ring file (keys/hmac.json)",
    )
    parser.add_argument(
        "--prev-mac",
        metavar="HEX",
        help="MAC (64 hex) of the entry just before the first line, when the export does not start at seq 1",
    )
    parser.add_argument(
        "--from-seq", type=int, metavar="N", help="require the first line to have seq N"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 fault, 2 usage error)."""
    parser = _parser()
    args = parser.parse_args(argv)

    prev_mac: bytes | None = None
    if args.prev_mac is not None:
        try:
            prev_mac = _as_mac(args.prev_mac.strip())
        except ValueError:
            parser.error(
                "--prev-mac must be 64 hex characters (the MAC of the entry before the export)"
            )
    if args.from_seq is not None:
        if args.from_seq < 1:
            parser.error("--from-seq must be 1 or more")
        if args.from_seq > 1 and prev_mac is None:
            parser.error(
                f"--from-seq {args.from_seq} needs --prev-mac with the MAC of seq {args.from_seq - 1}"
            )

    try:
        keys = load_keys(args.keys)
    except KeyFileError as err:
        print(f"error: key file {err}", file=sys.stderr)
        return 2

    try:
        if args.export == "-":
            result = verify_lines(sys.stdin.buffer, keys, prev_mac, args.from_seq)
        else:
            with open(args.export, "rb") as handle:
                result = verify_lines(handle, keys, prev_mac, args.from_seq)
    except OSError as err:
        print(
            f"error: cannot read export {args.export}: {err.strerror or err}",
            file=sys.stderr,
        )
        return 2

    if not result.ok or not args.quiet:
        print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
