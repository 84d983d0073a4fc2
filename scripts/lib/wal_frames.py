"""WAL frames per commit, per b-tree, from copies of a SQLite database and its WAL.

Used by scripts/wal_frames.sh. The WAL format (https://www.sqlite.org/fileformat.html):
a 32-byte header whose salts every valid frame repeats, then frames of a 24-byte header
(page number, database size after the commit or 0 for a frame inside one, the salts)
and the page. Frames after a restart carry new salts, so reading stops at the first
frame whose salts differ; the salts and a frame's position identify it across copies.
"""

import collections
import os
import sqlite3
import struct
import sys

Frame = tuple[bytes, int]  # (salts, position in the WAL)


def frames(wal_path: str) -> list[tuple[Frame, int, bool]]:
    """(identity, page number, ends a commit) for each valid frame, in order."""
    if not os.path.exists(wal_path):
        return []
    with open(wal_path, "rb") as f:
        data = f.read()
    if len(data) < 32:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    out = []
    pos, i = 32, 0
    while pos + 24 + page_size <= len(data):
        page, size_after = struct.unpack(">II", data[pos : pos + 8])
        if data[pos + 8 : pos + 16] != salts:
            break
        out.append(((salts, i), page, size_after != 0))
        pos += 24 + page_size
        i += 1
    # Only whole commits count: drop frames after the last commit mark.
    last = max((k for k, (_, _, end) in enumerate(out) if end), default=-1)
    return out[: last + 1]


def owners(db_path: str) -> dict[int, str]:
    """Page number → the table or index it belongs to in this copy."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT pageno, name FROM dbstat"))
    finally:
        con.close()


def main() -> None:
    clients, copies = sys.argv[1], sys.argv[2:]
    seen: dict[Frame, tuple[str, bool]] = {}
    for db in copies:
        listed = frames(db + "-wal")
        if not listed:
            continue
        owner = owners(db)
        for ident, page, end in listed:
            name = "(page 1: header)" if page == 1 else owner.get(page, "(free or new)")
            seen.setdefault(ident, (name, end))
    commits = sum(1 for _, end in seen.values() if end)
    if commits == 0:
        print("no complete commit in the WAL copies")
        return
    per_tree = collections.Counter(name for name, _ in seen.values())
    print(
        f"{clients} client(s): {commits} commits in {len(copies)} copies, {len(seen)} frames, "
        f"{len(seen) / commits:.2f} frames per commit"
    )
    for name, n in per_tree.most_common():
        print(f"  {name:32} {n / commits:6.2f}")


if __name__ == "__main__":
    main()
