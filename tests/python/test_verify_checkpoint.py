"""Tests of the Merkle tree and signed-checkpoint checks of scripts/verify_audit.py.

The tree is compared with a naive recursive RFC 6962 implementation written here;
checkpoints are signed here with `cryptography` (Ed25519PrivateKey) in the C2SP
signed-note format of docs/audit-format.md §11.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_verify_audit import (
    ID_A,
    KEY_A,
    KEYS_A,
    ROOT,
    SCRIPT,
    VECTOR,
    chain,
    keyring_doc,
    make_entry,
    va,
    valid_log,
)

EMPTY_ROOT_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_LEAF_HEX = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
SEED = bytes(range(0x20, 0x40))
"""Test Ed25519 seed (bytes 0x20..0x3f), also used for the example in the document."""


# ----------------------------------------------------------------------------------
# A naive RFC 6962 reference, independent of the script
# ----------------------------------------------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_leaf(data: bytes) -> bytes:
    return sha256(b"\x00" + data)


def ref_node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def split(n: int) -> int:
    """The largest power of two strictly smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash over leaf hashes, by the recursive definition."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return ref_node(mth(leaves[:k]), mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if m < k:
        return ref_path(m, leaves[:k]) + [mth(leaves[k:])]
    return ref_path(m - k, leaves[k:]) + [mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D[n], b)."""
    if m == len(leaves):
        return [] if complete else [mth(leaves)]
    k = split(len(leaves))
    if m <= k:
        return ref_subproof(m, leaves[:k], complete) + [mth(leaves[k:])]
    return ref_subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def ref_consistency(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(m, D[n])."""
    return ref_subproof(m, leaves, True)


def entries_bytes(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


# ----------------------------------------------------------------------------------
# Signing helpers
# ----------------------------------------------------------------------------------


def signer(seed: bytes = SEED) -> tuple[Ed25519PrivateKey, bytes, str]:
    """An Ed25519 key, its raw public key and the server's default origin for it."""
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return private, public, "arbiter/" + public.hex()[:16]


def key_id(name: str, public: bytes) -> bytes:
    return sha256(name.encode() + b"\n\x01" + public)[:4]


def sign_note(
    private: Ed25519PrivateKey,
    origin: str,
    size: int,
    root: bytes,
    *,
    name: str | None = None,
) -> str:
    """A checkpoint exactly as server/src/audit/checkpoint.rs writes it."""
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    name = origin if name is None else name
    body = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
    blob = key_id(name, public) + private.sign(body.encode())
    return f"{body}\n\u2014 {name} {base64.b64encode(blob).decode()}\n"


def pub_file(origin: str, public: bytes) -> str:
    return f"{origin}\n{public.hex()}\n"


PRIVATE, PUBLIC, ORIGIN = signer()
PUBKEY = va.PublicKey(ORIGIN, PUBLIC)


def log_and_checkpoint(
    n: int = 6, size: int | None = None
) -> tuple[list[dict[str, Any]], list[bytes], str]:
    """A valid log of n entries and a checkpoint signed over its first `size` entries."""
    entries, lines, _ = valid_log(n)
    size = n if size is None else size
    root = mth([ref_leaf(va.canonical_bytes(e)) for e in entries[:size]])
    return entries, lines, sign_note(PRIVATE, ORIGIN, size, root)


def run(
    tmp_path: Path,
    lines: list[bytes],
    note: str | bytes | None,
    *args: str,
    public: str | None = pub_file(ORIGIN, PUBLIC),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the script on an export, the test key ring, a checkpoint and a public key."""
    export = tmp_path / "export.jsonl"
    export.write_bytes(b"".join(lines))
    keyfile = tmp_path / "hmac.json"
    keyfile.write_text(json.dumps(keyring_doc((KEY_A, "active"))))
    argv = [sys.executable, str(SCRIPT), str(export), "--keys", str(keyfile)]
    if note is not None:
        cp = tmp_path / "checkpoint.txt"
        if isinstance(note, str):
            note = note.encode()
        cp.write_bytes(note)
        argv += ["--checkpoint", str(cp)]
    if public is not None:
        pub = tmp_path / "signing.pub"
        pub.write_text(public)
        argv += ["--public-key", str(pub)]
    return subprocess.run(
        argv + list(args),
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def assert_cli_fault(
    proc: subprocess.CompletedProcess[str], fault: str, seq: int | str
) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith(f"FAIL: seq {seq}: {fault}: "), proc.stdout
    assert proc.stdout.count("\n") == 1, proc.stdout


def without_cryptography(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import cryptography` fails."""
    blocker = tmp_path / "blocker" / "cryptography"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        'raise ImportError("cryptography is blocked for this test")\n'
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(blocker.parent)
    return env


# ----------------------------------------------------------------------------------
# The tree
# ----------------------------------------------------------------------------------


def test_tree_constants_match_rfc_6962() -> None:
    assert va.EMPTY_ROOT.hex() == EMPTY_ROOT_HEX
    assert va.merkle_root([]).hex() == EMPTY_ROOT_HEX
    assert va.leaf_hash(b"").hex() == EMPTY_LEAF_HEX
    assert va.node_hash(b"a" * 32, b"b" * 32) == ref_node(b"a" * 32, b"b" * 32)


def test_the_published_rfc_6962_vectors_verify() -> None:
    """RFC 6962 reference data (tests/vectors/rfc6962-merkle.json, shared with Rust)."""
    path = Path(__file__).resolve().parents[1] / "vectors" / "rfc6962-merkle.json"
    vector = json.loads(path.read_text())
    leaves = [bytes.fromhex(h) for h in vector["leaves_hex"]]
    roots = [bytes.fromhex(h) for h in vector["roots"]]
    assert va.merkle_root([]) == bytes.fromhex(vector["empty_root"])
    for size in range(1, len(leaves) + 1):
        assert va.merkle_root(leaves[:size]) == roots[size - 1]
    for case in vector["inclusion"]:
        index, size = case["leaf_index"], case["tree_size"]
        proof = [bytes.fromhex(h) for h in case["proof"]]
        leaf = va.leaf_hash(leaves[index])
        assert va.verify_inclusion(index, size, leaf, proof, roots[size - 1]), case
        if proof:
            bent = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
            assert not va.verify_inclusion(index, size, leaf, bent, roots[size - 1])
    for case in vector["consistency"]:
        old, new = case["old_size"], case["new_size"]
        proof = [bytes.fromhex(h) for h in case["proof"]]
        assert va.verify_consistency(old, new, roots[old - 1], roots[new - 1], proof), case
        if proof:
            assert not va.verify_consistency(old, new, roots[old - 1], roots[new - 1], proof[1:])


def test_root_equals_the_recursive_definition_for_sizes_0_to_40() -> None:
    data = entries_bytes(40)
    leaves = [ref_leaf(d) for d in data]
    tree = va.MerkleTree()
    assert tree.root() == mth([])
    for n in range(41):
        if n:
            tree.append(data[n - 1])
        assert tree.size == n
        assert tree.root() == mth(leaves[:n]), n
        assert va.merkle_root(data[:n]) == mth(leaves[:n]), n


def test_inclusion_and_consistency_proofs_verify_and_tampering_fails() -> None:
    data = entries_bytes(24)
    leaves = [ref_leaf(d) for d in data]
    forged = ref_leaf(b"forged")
    for size in range(1, len(leaves) + 1):
        root = mth(leaves[:size])
        for index in range(size):
            proof = ref_path(index, leaves[:size])
            assert va.verify_inclusion(index, size, leaves[index], proof, root)
            assert not va.verify_inclusion(index, size, forged, proof, root)
            if index ^ 1 < size:
                # The same hashes at the neighbouring position hash in the other order.
                assert not va.verify_inclusion(
                    index ^ 1, size, leaves[index], proof, root
                )
            if proof:
                assert not va.verify_inclusion(
                    index, size, leaves[index], proof[:-1], root
                )
        assert not va.verify_inclusion(size, size, leaves[0], [], root)
        for old in range(1, size + 1):
            old_root = mth(leaves[:old])
            proof = ref_consistency(old, leaves[:size])
            assert va.verify_consistency(old, size, old_root, root, proof), (old, size)
            if old < size:
                rewritten = mth([forged] + leaves[1:old])
                assert not va.verify_consistency(old, size, rewritten, root, proof)
                assert not va.verify_consistency(old, size, old_root, forged, proof)
                assert not va.verify_consistency(old, size, old_root, root, [])
    assert va.verify_consistency(0, 0, va.EMPTY_ROOT, va.EMPTY_ROOT, [])
    assert not va.verify_consistency(3, 2, mth(leaves[:3]), mth(leaves[:2]), [])


def test_vector_tree_values_are_documented() -> None:
    vector = json.loads(VECTOR.read_text(encoding="utf-8"))
    canonical = [item["canonical"].encode("utf-8") for item in vector["entries"]]
    leaves = [ref_leaf(c) for c in canonical]
    root = mth(leaves)
    assert va.merkle_root(canonical) == root
    doc = (ROOT / "docs" / "audit-format.md").read_text(encoding="utf-8")
    for value in [
        EMPTY_ROOT_HEX,
        EMPTY_LEAF_HEX,
        *(leaf.hex() for leaf in leaves),
        ref_node(leaves[0], leaves[1]).hex(),
        root.hex(),
        base64.b64encode(root).decode(),
    ]:
        assert value in doc, value
    # The proofs the document lists for the tree of size 3.
    assert ref_path(0, leaves) == [leaves[1], leaves[2]]
    assert ref_path(2, leaves) == [ref_node(leaves[0], leaves[1])]
    assert ref_consistency(1, leaves) == [leaves[1], leaves[2]]
    assert ref_consistency(2, leaves) == [leaves[2]]
    # The example checkpoint: Ed25519 is deterministic, so it can be reproduced.
    note = sign_note(PRIVATE, ORIGIN, 3, root)
    assert f"```\n{note}```" in doc
    assert PUBLIC.hex() in doc and ORIGIN in doc
    assert key_id(ORIGIN, PUBLIC).hex() in doc
    lines = [item["line"].encode("utf-8") for item in vector["entries"]]
    keys = va.parse_keyring(vector["keyring"])
    checkpoint = va.parse_checkpoint(note)
    assert va.check_signature(checkpoint, PUBKEY) is None
    assert va.verify_lines(lines, keys, checkpoint=checkpoint).ok


# ----------------------------------------------------------------------------------
# Parsing checkpoints and public keys
# ----------------------------------------------------------------------------------


def test_a_signed_checkpoint_parses_and_verifies() -> None:
    root = sha256(b"root")
    note = sign_note(PRIVATE, ORIGIN, 42, root)
    checkpoint = va.parse_checkpoint(note.encode())
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (ORIGIN, 42, root)
    assert (
        checkpoint.text == f"{ORIGIN}\n42\n{base64.b64encode(root).decode()}\n".encode()
    )
    assert va.note_key_id(ORIGIN, PUBLIC) == key_id(ORIGIN, PUBLIC)
    assert va.parse_public_key(pub_file(ORIGIN, PUBLIC)) == PUBKEY
    assert va.check_signature(checkpoint, PUBKEY) is None


def test_cosignatures_by_other_keys_are_ignored() -> None:
    root = sha256(b"root")
    note = sign_note(PRIVATE, ORIGIN, 7, root)
    witness, _, _ = signer(bytes(range(0x40, 0x60)))
    cosigned = sign_note(witness, ORIGIN, 7, root, name="witness.example/w1")
    note += cosigned.split("\n\n", 1)[1]
    checkpoint = va.parse_checkpoint(note)
    assert len(checkpoint.signatures) == 2
    assert va.check_signature(checkpoint, PUBKEY) is None


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda n: n.replace("\n7\n", "\n07\n", 1), "leading zeros"),
        (lambda n: n.replace("\n7\n", "\n+7\n", 1), "leading zeros"),
        (lambda n: n.replace("\n7\n", "\n-1\n", 1), "leading zeros"),
        (lambda n: n.replace("=\n\n", "\n\n", 1), "standard base64"),
        (lambda n: n.replace("\n\n", "\n", 1), "blank line"),
        (lambda n: n[:-1], "line feed"),
        (lambda n: n.replace("\n", "\r\n"), "control character"),
        (lambda n: n.split("\n\n")[0] + "\n\n", "no signature"),
        (lambda n: n.replace("\u2014 ", "- ", 1), "is not '— <key name>"),
        (lambda n: n.replace(ORIGIN + "\n", "\n", 1), "three non-empty lines"),
        (lambda n: n.replace("\n7\n", "\n9007199254740992\n", 1), "2^53"),
    ],
)
def test_malformed_checkpoints_are_rejected(mutate: Any, needle: str) -> None:
    note = sign_note(PRIVATE, ORIGIN, 7, sha256(b"root"))
    with pytest.raises(va.CheckpointError) as err:
        va.parse_checkpoint(mutate(note))
    assert needle in str(err.value)


def test_a_rotated_public_key_file_still_verifies_checkpoints_of_retired_keys() -> None:
    new_private = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    new_public = new_private.public_key().public_bytes_raw()
    old_note = va.parse_checkpoint(sign_note(PRIVATE, ORIGIN, 7, sha256(b"root")))
    new_note = va.parse_checkpoint(sign_note(new_private, ORIGIN, 9, sha256(b"root2")))
    rotated = va.parse_public_key(f"{ORIGIN}\n{new_public.hex()}\n{PUBLIC.hex()}\n")
    assert rotated.retired == (PUBLIC,)
    assert va.check_signature(old_note, rotated) is None
    assert va.check_signature(new_note, rotated) is None
    assert va.check_signature(new_note, PUBKEY) is not None


def test_malformed_public_keys_are_rejected() -> None:
    for text in [
        "",
        ORIGIN + "\n",
        f"{ORIGIN}\nabcd\n",
        f"has space\n{PUBLIC.hex()}\n",
    ]:
        with pytest.raises(va.CheckpointError):
            va.parse_public_key(text)


@pytest.mark.parametrize("what", ["size", "root", "signature", "origin"])
def test_tampered_checkpoint_fails_its_signature(what: str) -> None:
    note = sign_note(PRIVATE, ORIGIN, 7, sha256(b"root"))
    other_root = base64.b64encode(sha256(b"other")).decode()
    body, sig = note.split("\n\n")
    if what == "size":
        note = note.replace("\n7\n", "\n8\n", 1)
    elif what == "root":
        note = body.rsplit("\n", 1)[0] + "\n" + other_root + "\n\n" + sig
    elif what == "signature":
        blob = bytearray(base64.b64decode(sig.split(" ")[2]))
        blob[-1] ^= 1
        note = f"{body}\n\n\u2014 {ORIGIN} {base64.b64encode(bytes(blob)).decode()}\n"
    else:
        note = note.replace(ORIGIN, "arbiter/another-log")
    problem = va.check_signature(va.parse_checkpoint(note), PUBKEY)
    assert problem is not None


def test_a_checkpoint_signed_by_another_key_has_no_signature_by_this_key() -> None:
    other, _, _ = signer(bytes(range(0x60, 0x80)))
    note = sign_note(other, ORIGIN, 7, sha256(b"root"))
    problem = va.check_signature(va.parse_checkpoint(note), PUBKEY)
    assert problem is not None and "no signature by the key" in problem


# ----------------------------------------------------------------------------------
# Checking an export against a checkpoint
# ----------------------------------------------------------------------------------


def test_export_matching_a_signed_checkpoint_verifies(tmp_path: Path) -> None:
    entries, lines, note = log_and_checkpoint(6)
    proc = run(tmp_path, lines, note)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    first, second = proc.stdout.splitlines()
    assert first.startswith("OK: 6 entries verified (seq 1..6), head mac ")
    root = mth([ref_leaf(va.canonical_bytes(e)) for e in entries])
    assert second == (
        f"OK: checkpoint {ORIGIN} size 6 matches seq 1..6 (root {root.hex()}),"
        " signature verified"
    )
    assert proc.stderr == ""
    assert run(tmp_path, lines, note, "--quiet").stdout == ""


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_export_longer_than_the_checkpoint_verifies(tmp_path: Path, size: int) -> None:
    _, lines, note = log_and_checkpoint(6, size)
    proc = run(tmp_path, lines, note, "--require-signature")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert f"size {size} matches seq 1..{size}" in proc.stdout


def test_roots_of_every_size_match_in_process() -> None:
    entries = [make_entry(seq) for seq in range(1, 41)]
    lines, _ = chain(entries, {ID_A: KEY_A})
    leaves = [ref_leaf(va.canonical_bytes(e)) for e in entries]
    for size in range(41):
        note = sign_note(PRIVATE, ORIGIN, size, mth(leaves[:size]))
        result = va.verify_lines(lines, KEYS_A, checkpoint=va.parse_checkpoint(note))
        assert result.ok, (size, result.summary())


def test_truncated_export_is_reported_as_truncated(tmp_path: Path) -> None:
    _, lines, note = log_and_checkpoint(6)
    proc = run(tmp_path, lines[:4], note)
    assert_cli_fault(proc, "truncated", 6)
    assert "ends at seq 4" in proc.stdout and "2 entries missing" in proc.stdout
    proc = run(tmp_path, [], note)
    assert_cli_fault(proc, "truncated", 6)
    assert "the export is empty" in proc.stdout
    # The chain alone accepts the same export.
    assert run(tmp_path, lines[:4], None, public=None).returncode == 0


def test_rewritten_log_with_valid_macs_is_a_tree_mismatch(tmp_path: Path) -> None:
    # Whoever holds the HMAC key can rewrite an entry and re-chain every MAC after it;
    # the chain then verifies, but the tree no longer matches the saved checkpoint.
    entries, _, note = log_and_checkpoint(6)
    entries[2]["outcome"] = "deny"
    lines, _ = chain(entries, {ID_A: KEY_A})
    assert va.verify_lines(lines, KEYS_A).ok
    proc = run(tmp_path, lines, note)
    assert_cli_fault(proc, "tree_mismatch", 6)
    # A checkpoint taken before the rewritten entry is not affected by it.
    _, _, early = log_and_checkpoint(6, 2)
    assert run(tmp_path, lines, early).returncode == 0


@pytest.mark.parametrize("what", ["size", "root"])
def test_tampered_checkpoint_without_the_public_key_fails_on_the_tree(
    tmp_path: Path, what: str
) -> None:
    _, lines, note = log_and_checkpoint(6)
    body, sig = note.split("\n\n")
    if what == "size":
        tampered = note.replace("\n6\n", "\n5\n", 1)
    else:
        other = base64.b64encode(sha256(b"other")).decode()
        tampered = body.rsplit("\n", 1)[0] + "\n" + other + "\n\n" + sig
    proc = run(tmp_path, lines, tampered, public=None)
    assert_cli_fault(proc, "tree_mismatch", 5 if what == "size" else 6)
    assert "signature not checked" in proc.stderr
    grown = note.replace("\n6\n", "\n7\n", 1)
    assert_cli_fault(run(tmp_path, lines, grown, public=None), "truncated", 7)


@pytest.mark.parametrize("what", ["size", "root", "signature"])
def test_tampered_checkpoint_with_the_public_key_is_a_bad_signature(
    tmp_path: Path, what: str
) -> None:
    _, lines, note = log_and_checkpoint(6)
    body, sig = note.split("\n\n")
    if what == "size":
        tampered = note.replace("\n6\n", "\n5\n", 1)
        seq = 5
    elif what == "root":
        other = base64.b64encode(sha256(b"other")).decode()
        tampered = body.rsplit("\n", 1)[0] + "\n" + other + "\n\n" + sig
        seq = 6
    else:
        blob = bytearray(base64.b64decode(sig.split(" ")[2]))
        blob[10] ^= 0x80
        tampered = (
            f"{body}\n\n\u2014 {ORIGIN} {base64.b64encode(bytes(blob)).decode()}\n"
        )
        seq = 6
    proc = run(tmp_path, lines, tampered)
    assert_cli_fault(proc, "bad_signature", seq)
    assert "does not verify" in proc.stdout


def test_checkpoint_of_another_key_or_origin_is_a_bad_signature(tmp_path: Path) -> None:
    entries, lines, _ = log_and_checkpoint(3)
    root = mth([ref_leaf(va.canonical_bytes(e)) for e in entries])
    other, other_public, other_origin = signer(bytes(range(0x60, 0x80)))
    proc = run(tmp_path, lines, sign_note(other, ORIGIN, 3, root))
    assert_cli_fault(proc, "bad_signature", 3)
    assert "no signature by the key" in proc.stdout
    proc = run(tmp_path, lines, sign_note(other, other_origin, 3, root))
    assert_cli_fault(proc, "bad_signature", 3)
    assert "origin" in proc.stdout
    # The same checkpoint verifies with its own public key.
    proc = run(
        tmp_path,
        lines,
        sign_note(other, other_origin, 3, root),
        public=pub_file(other_origin, other_public),
    )
    assert proc.returncode == 0, proc.stdout


def test_chain_faults_inside_the_checkpoint_come_first(tmp_path: Path) -> None:
    _, lines, note = log_and_checkpoint(6)
    broken = lines[:2] + lines[3:]
    assert_cli_fault(run(tmp_path, broken, note), "gap", 3)
    # After the checkpointed range, a chain fault is reported when the root matches...
    _, _, early = log_and_checkpoint(6, 3)
    assert_cli_fault(run(tmp_path, lines[:4] + lines[5:], early), "gap", 5)
    # ...and a tree mismatch comes first when it does not.
    entries, _, _ = log_and_checkpoint(6)
    entries[0]["agent_id"] = "agent-rewritten"
    rewritten, _ = chain(entries, {ID_A: KEY_A})
    assert_cli_fault(
        run(tmp_path, rewritten[:4] + rewritten[5:], early), "tree_mismatch", 3
    )


def test_empty_checkpoint_and_empty_export(tmp_path: Path) -> None:
    note = sign_note(PRIVATE, ORIGIN, 0, sha256(b""))
    proc = run(tmp_path, [], note)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines()[1].startswith(
        f"OK: checkpoint {ORIGIN} size 0 matches the empty log"
    )
    bad = sign_note(PRIVATE, ORIGIN, 0, sha256(b"x"))
    assert_cli_fault(run(tmp_path, [], bad), "tree_mismatch", "?")


# ----------------------------------------------------------------------------------
# Without `cryptography`, and usage errors
# ----------------------------------------------------------------------------------


def test_without_cryptography_the_signature_is_not_checked(tmp_path: Path) -> None:
    _, lines, note = log_and_checkpoint(4)
    env = without_cryptography(tmp_path)
    proc = run(tmp_path, lines, note, env=env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "signature not checked: install the 'cryptography' package" in proc.stderr
    assert proc.stdout.splitlines()[1].endswith("signature not checked")
    # The tree is still checked.
    assert_cli_fault(run(tmp_path, lines[:3], note, env=env), "truncated", 4)
    proc = run(tmp_path, lines, note, "--require-signature", env=env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "install the 'cryptography' package" in proc.stderr


def test_without_a_public_key_the_signature_is_not_checked(tmp_path: Path) -> None:
    _, lines, note = log_and_checkpoint(4)
    proc = run(tmp_path, lines, note, public=None)
    assert proc.returncode == 0
    assert "signature not checked" in proc.stderr and "--public-key" in proc.stderr
    assert proc.stdout.splitlines()[1].endswith("signature not checked")


def test_checkpoint_usage_errors(tmp_path: Path) -> None:
    _, lines, note = log_and_checkpoint(4)
    _, _, macs = valid_log(4)
    for args, kwargs, needle in [
        (("--prev-mac", macs[0].hex(), "--from-seq", "2"), {}, "starts at seq 1"),
        ((), {"note": None}, "need --checkpoint"),
        (("--require-signature",), {"note": None, "public": None}, "need --checkpoint"),
        (("--require-signature",), {"public": None}, "needs --public-key"),
        ((), {"note": "not a checkpoint\n"}, "error: checkpoint "),
        ((), {"note": b"\xff\xfe\n"}, "UTF-8"),
        ((), {"public": "just one line\n"}, "error: public key "),
    ]:
        proc = run(
            tmp_path,
            lines,
            kwargs.get("note", note),
            *args,
            public=kwargs.get("public", pub_file(ORIGIN, PUBLIC)),
        )
        assert proc.returncode == 2, (args, kwargs, proc.stdout, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)
    keyfile = tmp_path / "hmac.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(tmp_path / "export.jsonl"),
            "--keys",
            str(keyfile),
            "--checkpoint",
            str(tmp_path / "missing.txt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "cannot read checkpoint" in proc.stderr
    with pytest.raises(ValueError):
        va.verify_lines(
            lines, KEYS_A, prev_mac=macs[0], checkpoint=va.parse_checkpoint(note)
        )
