-- Fewer pages per commit (issue 18, item 1), counted by scripts/wal_frames.sh.
--
-- The Merkle tree: `merkle_nodes` was a rowid table with a (level, idx) primary key,
-- so two b-trees, and the key's index took the new nodes of a commit on one page per
-- tree level (2.1 pages per commit at one Evaluate per commit). Keyed instead by the
-- position a node takes when nodes are stored in the order they complete (post-order,
-- `audit::merkle::stored_position`), a commit's nodes append to one b-tree; the hash
-- is stored as its 32 bytes rather than 64 hex characters.
--
-- The position of node (level, idx): m = (idx+1)·2^level leaves exist once it
-- completes; pos = 2(m−1) − popcount(m−1) + level. SQLite has no popcount, so the
-- nested selects below count the bits of x = m − 1 (x < 2^63) by summing pairs, then
-- nibbles, then bytes, with shifts only (a multiplication would overflow to REAL).
CREATE TABLE merkle_tree (
    pos   INTEGER PRIMARY KEY,
    hash  BLOB    NOT NULL
);
INSERT INTO merkle_tree (pos, hash)
SELECT 2 * x - ((c5 + (c5 >> 32)) & 127) + level, unhex(hash) FROM (
  SELECT level, x, hash, c4 + (c4 >> 16) AS c5 FROM (
    SELECT level, x, hash, c3 + (c3 >> 8) AS c4 FROM (
      SELECT level, x, hash, (c2 + (c2 >> 4)) & 0x0F0F0F0F0F0F0F0F AS c3 FROM (
        SELECT level, x, hash,
               (c1 & 0x3333333333333333) + ((c1 >> 2) & 0x3333333333333333) AS c2 FROM (
          SELECT level, x, hash, x - ((x >> 1) & 0x5555555555555555) AS c1 FROM (
            SELECT level, ((idx + 1) << level) - 1 AS x, hash FROM merkle_nodes
          )
        )
      )
    )
  )
);
DROP TABLE merkle_nodes;
CREATE TRIGGER merkle_tree_no_update BEFORE UPDATE ON merkle_tree
BEGIN SELECT RAISE(ABORT, 'merkle_tree is append-only'); END;
CREATE TRIGGER merkle_tree_no_delete BEFORE DELETE ON merkle_tree
BEGIN SELECT RAISE(ABORT, 'merkle_tree is append-only'); END;

-- Open rows only: a settled reservation and a recorded decision are deleted (the audit
-- log holds what they were), so the tables stay as small as what is open and need no
-- index on their open flag, which every Evaluate and every Record wrote a page of
-- (1.3 and 1.1 pages per commit). Loading reads them whole at start.
DELETE FROM reservations WHERE settled <> 0;
DROP INDEX reservations_open;
DELETE FROM decisions WHERE recorded <> 0;
DROP INDEX decisions_open;
