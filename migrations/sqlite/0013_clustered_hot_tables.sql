-- Fewer b-trees per Evaluate (issue 18, item 1). A rowid table keyed by a TEXT
-- primary key is two b-trees (the rows, and the key's automatic index), and every
-- commit rewrites at least one page of each b-tree it touches. `reservations` and
-- `replies` are written on every Evaluate with a budget or a request id, their rows are
-- small and they are only looked up by their keys, so each becomes one b-tree
-- clustered on its key (WITHOUT ROWID). Measured with WAL frames per commit: about one
-- and a half pages fewer per Evaluate. `merkle_nodes` and `decisions` stay rowid
-- tables: clustered on (level, idx), new nodes land on one page per tree level (more
-- pages, not fewer), and decision rows are too large for a clustered table to pay.

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
