-- Arbiter embedded schema. Migrations are only ever added, never edited.

-- The audit log. `canonical` holds the exact hashed bytes; the other columns are
-- indexes over them and are checked against them by verification.
CREATE TABLE audit_entries (
    seq         INTEGER PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    agent_id    TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    canonical   TEXT    NOT NULL,
    mac         TEXT    NOT NULL
);
CREATE INDEX audit_by_agent   ON audit_entries (agent_id, seq);
CREATE INDEX audit_by_session ON audit_entries (session_id, seq);
CREATE INDEX audit_by_kind    ON audit_entries (kind, seq);
CREATE INDEX audit_by_time    ON audit_entries (ts_ms);

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only: DELETE refused'); END;

CREATE TABLE trust_assignments (
    agent_id     TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    level        INTEGER NOT NULL,
    assigned_by  TEXT    NOT NULL,
    assigned_ms  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, scope)
);

-- purpose '' stands for "every purpose" (a null purpose in the API).
CREATE TABLE consent_grants (
    agent_id    TEXT    NOT NULL,
    data_type   TEXT    NOT NULL,
    purpose     TEXT    NOT NULL,
    granted_by  TEXT    NOT NULL,
    granted_ms  INTEGER NOT NULL,
    expires_ms  INTEGER,
    PRIMARY KEY (agent_id, data_type, purpose)
);

-- Settled spend per budget window; never summed from a ledger on the hot path.
CREATE TABLE budget_counters (
    budget           TEXT    NOT NULL,
    scope_key        TEXT    NOT NULL,
    window_start_ms  INTEGER NOT NULL,
    spent_micro_usd  INTEGER NOT NULL DEFAULT 0,
    spent_tokens     INTEGER NOT NULL DEFAULT 0,
    spent_calls      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, scope_key, window_start_ms)
);

CREATE TABLE reservations (
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
);
CREATE INDEX reservations_open ON reservations (settled, expires_ms);

-- Allowed decisions, so Record can find what to settle.
CREATE TABLE decisions (
    decision_id  TEXT    PRIMARY KEY,
    agent_id     TEXT    NOT NULL,
    body_json    TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    recorded     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX decisions_open ON decisions (recorded, created_ms);

-- Answers replayed for repeated request ids (kind 'evaluate') and repeated Records
-- (kind 'record', keyed by decision id).
CREATE TABLE replies (
    kind         TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    agent_id     TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    response     TEXT    NOT NULL,
    audit_seq    INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX replies_by_time ON replies (created_ms);

CREATE TABLE agents (
    agent_id       TEXT    PRIMARY KEY,
    first_seen_ms    INTEGER NOT NULL,
    last_seen_ms     INTEGER NOT NULL,
    last_allowed_ms  INTEGER
);

CREATE TABLE sessions (
    agent_id    TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    started_ms  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, session_id)
);

CREATE TABLE policy_loads (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    version    TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    loaded_ms  INTEGER NOT NULL,
    accepted   INTEGER NOT NULL,
    error      TEXT    NOT NULL
);
