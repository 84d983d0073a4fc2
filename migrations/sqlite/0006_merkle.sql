-- The Merkle tree over audit entries (RFC 6962): every complete perfect subtree, stored
-- once when its last leaf commits, so proofs read O(log n) rows. Leaf i is entry seq i+1.
CREATE TABLE merkle_nodes (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hash   TEXT    NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Signed tree heads in the C2SP signed-note format, one per committed batch.
CREATE TABLE checkpoints (
    size   INTEGER PRIMARY KEY,
    root   TEXT    NOT NULL,
    note   TEXT    NOT NULL,
    ts_ms  INTEGER NOT NULL
);

CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'merkle_nodes is append-only'); END;
CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'merkle_nodes is append-only'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only'); END;
