#!/usr/bin/env python3
"""Verify an exported Arbiter audit log independently of the Rust server.

Standard library only, Python 3.9 or later. The format is specified byte for byte in
``docs/audit-format.md``; this script is meant to be read next to that document.

Usage::

    python3 scripts/verify_audit.py EXPORT.jsonl --keys KEYS.json [--prev-mac HEX]
                                    [--from-seq N] [--quiet]
                                    [--checkpoint FILE [--public-key signing.pub]
                                     [--require-signature]]

Exit status: 0 when every entry verifies, 1 when a fault is found (the first one is
reported), 2 for usage errors (missing file, unreadable or invalid key file, bad flag,
or --require-signature without the 'cryptography' package).

The chain and the Merkle tree need only the standard library. Checking a checkpoint's
Ed25519 signature needs the 'cryptography' package; without it the signature is
reported as not checked.

The functions are importable: ``canonical_bytes``, ``chain_mac``, ``key_id_for``,
``load_keys``, ``parse_keyring``, ``validate_entry``, ``export_line`` and
``verify_lines`` (which returns a ``VerifyResult``); for the tree and checkpoints
``leaf_hash``, ``node_hash``, ``MerkleTree``, ``merkle_root``, ``verify_inclusion``,
``verify_consistency``, ``parse_checkpoint``, ``parse_public_key``, ``note_key_id``
and ``check_signature``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
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

# Faults found by checking an export against a signed checkpoint (--checkpoint).
TRUNCATED = "truncated"
TREE_MISMATCH = "tree_mismatch"
BAD_SIGNATURE = "bad_signature"
CHECKPOINT_FAULTS = (TRUNCATED, TREE_MISMATCH, BAD_SIGNATURE)

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
    #: For a revoked key: the last seq it is still trusted for (None: none).
    revoked_after_seq: int | None = None


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
        after = item.get("revoked_after_seq")
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, int) or after < 0
        ):
            raise KeyFileError(f"{where} ({key_id}): revoked_after_seq must be a seq number")
        if after is not None and item["status"] != "revoked":
            raise KeyFileError(
                f"{where} ({key_id}): revoked_after_seq is set but the key is not revoked"
            )
        keys[key_id] = Key(key_id, secret, item["status"], item["created_at"], after)
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
    checkpoint: Checkpoint | None = None,
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

    With ``checkpoint`` (a parsed ``Checkpoint``; its signature is checked separately,
    by ``check_signature``) the export must start at seq 1, and after the chain the
    Merkle root of its first ``checkpoint.size`` entries must equal the checkpoint's
    root: an export with fewer entries is ``truncated``, a different root is
    ``tree_mismatch``, both reported at seq ``checkpoint.size``. A chain fault inside
    the checkpointed range is reported first; one after it only if the root matches.
    """
    tree: MerkleTree | None = None
    on_entry: Callable[[bytes], None] | None = None
    if checkpoint is not None:
        if prev_mac is not None or from_seq not in (None, 1):
            raise ValueError(
                "a checkpoint covers the log from seq 1: the export must start at seq 1"
            )
        tree = MerkleTree()
        limit = checkpoint.size

        def on_entry(canonical: bytes) -> None:
            if tree.size < limit:
                tree.append(canonical)

    result = _verify_chain(lines, keys, prev_mac, from_seq, on_entry)
    if checkpoint is None or tree is None:
        return result
    return _check_tree(result, tree, checkpoint)


def _check_tree(
    result: VerifyResult, tree: MerkleTree, checkpoint: Checkpoint
) -> VerifyResult:
    """Compare the tree over the verified entries with the checkpoint (see verify_lines)."""
    size = checkpoint.size
    at = size if size >= 1 else None
    if tree.size < size:
        if not result.ok:
            return result  # the chain broke inside the checkpointed range: that comes first
        have = (
            "the export is empty"
            if result.count == 0
            else f"the export ends at seq {result.last_seq}"
        )
        result.ok = False
        result.fault, result.fault_seq = TRUNCATED, at
        result.explanation = (
            f"the checkpoint covers seq 1..{size}, but {have}"
            f" ({size - result.count} entries missing)"
        )
        return result
    root = tree.root()
    if not hmac.compare_digest(root, checkpoint.root):
        covered = f"seq 1..{size}" if size else "the empty log"
        result.ok = False
        result.fault, result.fault_seq = TREE_MISMATCH, at
        result.explanation = (
            f"the Merkle root of {covered} is {root.hex()}, but the checkpoint"
            f" commits to {checkpoint.root.hex()} (entries were rewritten, or the"
            " checkpoint is of another log)"
        )
    return result


def _verify_chain(
    lines: Iterable[str | bytes],
    keys: Mapping[str, Key],
    prev_mac: bytes | str | None,
    from_seq: int | None,
    on_entry: Callable[[bytes], None] | None,
) -> VerifyResult:
    """The chain checks of ``verify_lines``; ``on_entry`` sees each verified entry."""
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
        if key.status == "revoked" and (
            key.revoked_after_seq is None or seq > key.revoked_after_seq
        ):
            after = key.revoked_after_seq
            when = "" if after is None else f" (trusted only up to seq {after})"
            return fail(REVOKED_KEY, seq, f"entry is chained with revoked key {key.id}{when}")

        # 6. MAC.
        mac = chain_mac(key.secret, prev, canonical)
        if not hmac.compare_digest(mac.hex(), mac_hex):
            why = "MAC does not match the entry and the previous MAC"
            if first_line and explicit_prev:
                why += f" (the entry was altered, or --prev-mac is not the MAC of seq {seq - 1})"
            return fail(MAC_MISMATCH, seq, why)

        if on_entry is not None:
            on_entry(canonical)
        if first_line:
            result.first_seq = seq
        result.count += 1
        result.last_seq = seq
        result.head_mac = mac_hex
        prev = mac
        expected = seq + 1
    return result


# --------------------------------------------------------------------------------------
# Merkle tree (RFC 6962 / RFC 9162) and signed checkpoints (C2SP signed note, Ed25519)
# --------------------------------------------------------------------------------------

LEAF_PREFIX = b"\x00"
"""Prefix of a leaf hash input: leaf = SHA-256(0x00 || canonical entry bytes)."""

NODE_PREFIX = b"\x01"
"""Prefix of an interior node hash input: node = SHA-256(0x01 || left || right)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the tree with no leaves: SHA-256 of the empty string."""

ED25519_SIGNATURE_TYPE = b"\x01"
"""signed-note signature type byte of Ed25519, hashed into the key id."""

EM_DASH = "\u2014"


def leaf_hash(canonical: bytes) -> bytes:
    """Return the RFC 6962 leaf hash of one entry's canonical bytes."""
    return hashlib.sha256(LEAF_PREFIX + canonical).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 hash of an interior node."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class MerkleTree:
    """An RFC 6962 Merkle tree built leaf by leaf in O(log n) memory.

    It keeps the right edge of the tree: one perfect subtree per set bit of ``size``,
    largest first. ``root()`` folds them from the smallest up, which is exactly the
    RFC's recursive split at the largest power of two smaller than the size.
    """

    def __init__(self) -> None:
        self.size = 0
        self._edge: list[tuple[int, bytes]] = []  # (height, hash), largest first

    def append(self, canonical: bytes) -> None:
        """Add the entry with these canonical bytes as the next leaf."""
        self.append_leaf_hash(leaf_hash(canonical))

    def append_leaf_hash(self, leaf: bytes) -> None:
        """Add an already hashed leaf."""
        height, digest = 0, leaf
        while self._edge and self._edge[-1][0] == height:
            _, left = self._edge.pop()
            digest = node_hash(left, digest)
            height += 1
        self._edge.append((height, digest))
        self.size += 1

    def root(self) -> bytes:
        """Return the root hash (Merkle Tree Hash) of the leaves added so far."""
        if not self._edge:
            return EMPTY_ROOT
        digest = self._edge[-1][1]
        for _, left in reversed(self._edge[:-1]):
            digest = node_hash(left, digest)
        return digest


def merkle_root(entries: Iterable[bytes]) -> bytes:
    """Return the Merkle root over canonical entry bytes given in seq order."""
    tree = MerkleTree()
    for canonical in entries:
        tree.append(canonical)
    return tree.root()


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> bool:
    """Check an inclusion proof (RFC 9162 section 2.1.3.2).

    ``index`` is the leaf index (seq − 1), ``leaf`` the leaf hash, ``proof`` the sibling
    hashes from the leaf up (as returned by GetInclusionProof, decoded from hex).
    """
    if index < 0 or index >= size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> bool:
    """Check a consistency proof (RFC 9162 section 2.1.4.2).

    True when the tree of ``old_size`` leaves with ``old_root`` is a prefix of the tree
    of ``new_size`` leaves with ``new_root``. ``proof`` is GetConsistencyProof's list.
    A tree of size 0 is a prefix of every tree and needs no proof.
    """
    if old_size < 0 or old_size > new_size:
        return False
    if old_size == 0:
        return not proof and hmac.compare_digest(old_root, EMPTY_ROOT)
    if old_size == new_size:
        return not proof and hmac.compare_digest(old_root, new_root)
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return (
        sn == 0
        and hmac.compare_digest(fr, old_root)
        and hmac.compare_digest(sr, new_root)
    )


class CheckpointError(ValueError):
    """A checkpoint note or a public key file is malformed."""


@dataclass(frozen=True)
class Checkpoint:
    """A parsed (not yet verified) checkpoint note.

    ``text`` is the signed note text (the body lines with their newlines, as bytes);
    ``signatures`` holds (key name, decoded signature blob) per signature line.
    """

    origin: str
    size: int
    root: bytes
    text: bytes = field(repr=False)
    extensions: tuple[str, ...] = ()
    signatures: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class PublicKey:
    """A log's checkpoint key, as written to ``keys/signing.pub``."""

    origin: str
    key: bytes
    #: Public keys of retired signing keys (after ``arbiter keys rotate --signing``):
    #: checkpoints they signed still verify.
    retired: tuple[bytes, ...] = ()

    @property
    def key_id(self) -> bytes:
        return note_key_id(self.origin, self.key)

    def trusted(self) -> tuple[bytes, ...]:
        """The active key, then the retired ones."""
        return (self.key, *self.retired)


_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_B64_HASH_RE = re.compile(r"[A-Za-z0-9+/]{43}=")
_B64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_NAME_BAD_RE = re.compile(r"[\s+]")
_CONTROL_RE = re.compile("[\x00-\x09\x0b-\x1f]")


def note_key_id(name: str, public_key: bytes) -> bytes:
    """Return the 4-byte signed-note key id of an Ed25519 key.

    key id = SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]
    """
    return hashlib.sha256(
        name.encode("utf-8") + b"\n" + ED25519_SIGNATURE_TYPE + public_key
    ).digest()[:4]


def _b64decode(text: str) -> bytes | None:
    if not _B64_RE.fullmatch(text):
        return None
    raw = base64.b64decode(text, validate=True)
    # Non-zero padding bits would give a second spelling of the same bytes.
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _check_name(name: str, what: str) -> None:
    if not name:
        raise CheckpointError(f"{what} is empty")
    if _NAME_BAD_RE.search(name):
        raise CheckpointError(f"{what} {name!r} contains a space or '+'")


def parse_checkpoint(note: bytes | str) -> Checkpoint:
    """Parse a checkpoint in the C2SP signed-note / tlog-checkpoint format.

    The note is ``<origin>\\n<size>\\n<base64 root>\\n`` (optionally followed by
    extension lines), a blank line, and one or more lines
    ``— <key name> <base64(key id || signature)>\\n``. Raises ``CheckpointError``.
    The signature is not checked here: see ``check_signature``.
    """
    if isinstance(note, bytes):
        try:
            text = note.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CheckpointError(f"not valid UTF-8 (byte {err.start})") from None
    else:
        text = note
    if _SURROGATE_RE.search(text):
        raise CheckpointError("not valid Unicode")
    bad = _CONTROL_RE.search(text)
    if bad:
        raise CheckpointError(
            f"contains the control character U+{ord(bad.group()):04X}"
            " (only line feeds are allowed)"
        )
    if not text.endswith("\n"):
        raise CheckpointError("does not end with a line feed")
    split = text.rfind("\n\n")
    if split < 0:
        raise CheckpointError("no blank line between the checkpoint and its signatures")
    body, signature_block = text[: split + 1], text[split + 2 :]
    lines = body[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise CheckpointError(
            "the checkpoint must be at least three non-empty lines: origin, size, root"
        )
    origin, size_text, root_text = lines[:3]
    if not _SIZE_RE.fullmatch(size_text):
        raise CheckpointError(
            f"tree size {size_text!r} is not a decimal number without leading zeros"
        )
    size = int(size_text)
    if size > MAX_SAFE_INTEGER:
        raise CheckpointError(
            f"tree size {size} is larger than the largest seq, 2^53−1"
        )
    root = _b64decode(root_text) if _B64_HASH_RE.fullmatch(root_text) else None
    if root is None or len(root) != 32:
        raise CheckpointError(
            f"root {root_text!r} is not 32 bytes in standard base64 with padding"
        )
    signatures: list[tuple[str, bytes]] = []
    for line in signature_block[:-1].split("\n") if signature_block else []:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise CheckpointError(
                f"signature line {_short(line)} is not '— <key name> <base64>'"
            )
        _check_name(parts[1], "signature key name")
        blob = _b64decode(parts[2])
        if blob is None or len(blob) < 5:
            raise CheckpointError(
                f"signature of {parts[1]!r} is not base64 of a key id and a signature"
            )
        signatures.append((parts[1], blob))
    if not signatures:
        raise CheckpointError("the note has no signature line")
    return Checkpoint(
        origin=origin,
        size=size,
        root=root,
        text=body.encode("utf-8"),
        extensions=tuple(lines[3:]),
        signatures=tuple(signatures),
    )


def parse_public_key(text: bytes | str) -> PublicKey:
    """Parse ``keys/signing.pub``: the origin line, the active Ed25519 public key in hex,
    then any retired public keys, one per line."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("not valid UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        raise CheckpointError(
            "expected the log origin, then the public key in hex (and retired keys)"
        )
    origin = lines[0]
    _check_name(origin, "origin")
    keys = []
    for number, line in enumerate(lines[1:], start=2):
        key_hex = line.strip()
        if not re.fullmatch(r"[0-9a-fA-F]{64}", key_hex):
            raise CheckpointError(
                f"line {number}: a public key must be 64 hex characters (32 bytes)"
            )
        keys.append(bytes.fromhex(key_hex))
    return PublicKey(origin, keys[0], tuple(keys[1:]))


def _read(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise CheckpointError(
            f"cannot read {what} {path}: {err.strerror or err}"
        ) from None


def load_checkpoint(path: str) -> Checkpoint:
    """Read and parse a checkpoint file; raises ``CheckpointError``."""
    raw = _read(path, "checkpoint")
    try:
        return parse_checkpoint(raw)
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None


def load_public_key(path: str) -> PublicKey:
    """Read and parse a ``signing.pub`` file; raises ``CheckpointError``."""
    raw = _read(path, "public key")
    try:
        return parse_public_key(raw)
    except CheckpointError as err:
        raise CheckpointError(f"public key {path}: {err}") from None


def signature_support() -> bool:
    """Return True if Ed25519 signatures can be checked (the 'cryptography' package)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: F401
    except ImportError:
        return False
    return True


def _ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_signature(checkpoint: Checkpoint, public_key: PublicKey) -> str | None:
    """Check the checkpoint's Ed25519 signature; return the problem, or None if it holds.

    Signature lines by other keys (another name or key id) are ignored, as signed-note
    requires; there must be one by this key, and every one by this key must verify.
    Needs the 'cryptography' package (``signature_support()``); raises ImportError
    without it.
    """
    if checkpoint.origin != public_key.origin:
        return (
            f"the checkpoint's origin {checkpoint.origin!r} is not the public key's"
            f" origin {public_key.origin!r}"
        )
    by_id = {note_key_id(public_key.origin, k): k for k in public_key.trusted()}
    found = False
    for name, blob in checkpoint.signatures:
        key = by_id.get(blob[:4]) if name == public_key.origin else None
        if key is None:
            continue
        found = True
        if len(blob) != 4 + 64 or not _ed25519_verify(key, blob[4:], checkpoint.text):
            return "the Ed25519 signature does not verify (the checkpoint was altered or forged)"
    if not found:
        return (
            f"no signature by the key {public_key.origin} (key id"
            f" {public_key.key_id.hex()}) or a retired key in the file;"
            " is this the right signing.pub?"
        )
    return None


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
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="a signed checkpoint (C2SP signed note) of the same log: the export, from"
        " seq 1, must hold every entry it covers, with the same Merkle root",
    )
    parser.add_argument(
        "--public-key",
        metavar="FILE",
        help="the log's public key file (keys/signing.pub), to check the checkpoint's"
        " Ed25519 signature (needs the 'cryptography' package)",
    )
    parser.add_argument(
        "--require-signature",
        action="store_true",
        help="exit 2 if the checkpoint's signature cannot be checked",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    return parser


def _checkpoint_summary(checkpoint: Checkpoint, signature: str) -> str:
    covered = f"seq 1..{checkpoint.size}" if checkpoint.size else "the empty log"
    return (
        f"OK: checkpoint {checkpoint.origin} size {checkpoint.size} matches {covered}"
        f" (root {checkpoint.root.hex()}), signature {signature}"
    )


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

    if args.checkpoint is None:
        if args.public_key is not None or args.require_signature:
            parser.error("--public-key and --require-signature need --checkpoint")
    else:
        if prev_mac is not None or (args.from_seq or 1) != 1:
            parser.error(
                "--checkpoint needs an export that starts at seq 1"
                " (a checkpoint's tree covers the log from its first entry)"
            )
        if args.require_signature and args.public_key is None:
            parser.error("--require-signature needs --public-key (keys/signing.pub)")
        if args.checkpoint == "-" and args.export == "-":
            parser.error("the export and the checkpoint cannot both be standard input")

    try:
        keys = load_keys(args.keys)
    except KeyFileError as err:
        print(f"error: key file {err}", file=sys.stderr)
        return 2

    checkpoint: Checkpoint | None = None
    signature = "not checked"
    if args.checkpoint is not None:
        try:
            checkpoint = load_checkpoint(args.checkpoint)
            public_key = (
                load_public_key(args.public_key)
                if args.public_key is not None
                else None
            )
        except CheckpointError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if public_key is None:
            print(
                "note: signature not checked: pass --public-key with the log's"
                " keys/signing.pub",
                file=sys.stderr,
            )
        elif not signature_support():
            print(
                "note: signature not checked: install the 'cryptography' package"
                " (python3 -m pip install cryptography)",
                file=sys.stderr,
            )
            if args.require_signature:
                return 2
        else:
            problem = check_signature(checkpoint, public_key)
            if problem is not None:
                failed = VerifyResult(
                    ok=False,
                    fault=BAD_SIGNATURE,
                    fault_seq=checkpoint.size or None,
                    explanation=problem,
                )
                print(failed.summary())
                return 1
            signature = "verified"

    try:
        if args.export == "-":
            result = verify_lines(
                sys.stdin.buffer, keys, prev_mac, args.from_seq, checkpoint
            )
        else:
            with open(args.export, "rb") as handle:
                result = verify_lines(handle, keys, prev_mac, args.from_seq, checkpoint)
    except OSError as err:
        print(
            f"error: cannot read export {args.export}: {err.strerror or err}",
            file=sys.stderr,
        )
        return 2

    if not result.ok or not args.quiet:
        print(result.summary())
        if result.ok and checkpoint is not None:
            print(_checkpoint_summary(checkpoint, signature))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
