-- Fewer b-trees per Evaluate (issue 18, item 1). A rowid table keyed by a TEXT
-- primary key is two b-trees (the rows, and the key's automatic index), and every
-- commit rewrites at least one page of each b-tree it touches. These four tables are
-- written on every Evaluate or Record and are only ever looked up by their primary
-- key, so each becomes one b-tree clustered on that key (WITHOUT ROWID): merkle_nodes
-- (two rows per entry), decisions and reservations (keyed by time-ordered UUIDv7s, so
-- new rows append) and replies. Four fewer pages per commit; nothing reads a rowid.

CREATE TABLE merkle_nodes_clustered (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hash   TEXT    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
INSERT INTO merkle_nodes_clustered (level, idx, hash) SELECT level, idx, hash FROM merkle_nodes;
DROP TABLE merkle_nodes;
ALTER TABLE merkle_nodes_clustered RENAME TO merkle_nodes;
CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'merkle_nodes is append-only'); END;
CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'merkle_nodes is append-only'); END;

CREATE TABLE reservations_clustered (
    id           TEXT    PRIMARY KEY,
    decision_id  TEXT    NOT NULL,
    agent_id     TEXT    NOT NULL,
    keys_json    TEXT    NOT NULL,
    micro_usd    INTEGER NOT NULL,
    tokens       INTEGER NOT NULL,
    calls        INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    settled      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO reservations_clustered SELECT id, decision_id, agent_id, keys_json, micro_usd,
    tokens, calls, created_ms, expires_ms, settled FROM reservations;
DROP TABLE reservations;
ALTER TABLE reservations_clustered RENAME TO reservations;
CREATE INDEX reservations_open ON reservations (settled, expires_ms);

CREATE TABLE decisions_clustered (
    decision_id  TEXT    PRIMARY KEY,
    agent_id     TEXT    NOT NULL,
    body_json    TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    recorded     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO decisions_clustered SELECT decision_id, agent_id, body_json, created_ms, recorded
    FROM decisions;
DROP TABLE decisions;
ALTER TABLE decisions_clustered RENAME TO decisions;
CREATE INDEX decisions_open ON decisions (recorded, created_ms);

CREATE TABLE replies_clustered (
    kind         TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    agent_id     TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    response     TEXT    NOT NULL,
    audit_seq    INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
INSERT INTO replies_clustered SELECT kind, key, agent_id, fingerprint, response, audit_seq,
    created_ms FROM replies;
DROP TABLE replies;
ALTER TABLE replies_clustered RENAME TO replies;
CREATE INDEX replies_by_time ON replies (created_ms);
