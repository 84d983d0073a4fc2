-- Arbiter schema for PostgreSQL: the same tables as migrations/sqlite/0001–0007, in their
-- final shape. Migrations are only ever added, never edited. Integers are BIGINT so
-- every column decodes to the same Rust type as on SQLite.

-- The audit log. `canonical` holds the exact hashed bytes; the other columns are
-- indexes over them and are checked against them by verification.
CREATE TABLE audit_entries (
    seq         BIGINT  PRIMARY KEY,
    ts_ms       BIGINT  NOT NULL,
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

CREATE TABLE trust_assignments (
    agent_id     TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    level        BIGINT  NOT NULL,
    assigned_by  TEXT    NOT NULL,
    assigned_ms  BIGINT  NOT NULL,
    PRIMARY KEY (agent_id, scope)
);

-- purpose '' stands for "every purpose" (a null purpose in the API).
CREATE TABLE consent_grants (
    agent_id    TEXT    NOT NULL,
    data_type   TEXT    NOT NULL,
    purpose     TEXT    NOT NULL,
    granted_by  TEXT    NOT NULL,
    granted_ms  BIGINT  NOT NULL,
    expires_ms  BIGINT,
    PRIMARY KEY (agent_id, data_type, purpose)
);

CREATE TABLE budget_counters (
    budget           TEXT    NOT NULL,
    scope_key        TEXT    NOT NULL,
    window_start_ms  BIGINT  NOT NULL,
    spent_micro_usd  BIGINT  NOT NULL DEFAULT 0,
    spent_tokens     BIGINT  NOT NULL DEFAULT 0,
    spent_calls      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, scope_key, window_start_ms)
);

CREATE TABLE reservations (
    id           TEXT    PRIMARY KEY,
    decision_id  TEXT    NOT NULL,
    agent_id     TEXT    NOT NULL,
    keys_json    TEXT    NOT NULL,
    micro_usd    BIGINT  NOT NULL,
    tokens       BIGINT  NOT NULL,
    calls        BIGINT  NOT NULL,
    created_ms   BIGINT  NOT NULL,
    expires_ms   BIGINT  NOT NULL,
    settled      BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX reservations_open ON reservations (settled, expires_ms);

CREATE TABLE decisions (
    decision_id  TEXT    PRIMARY KEY,
    agent_id     TEXT    NOT NULL,
    body_json    TEXT    NOT NULL,
    created_ms   BIGINT  NOT NULL,
    recorded     BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX decisions_open ON decisions (recorded, created_ms);

CREATE TABLE replies (
    kind         TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    agent_id     TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    response     TEXT    NOT NULL,
    audit_seq    BIGINT  NOT NULL,
    created_ms   BIGINT  NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX replies_by_time ON replies (created_ms);

CREATE TABLE agents (
    agent_id         TEXT    PRIMARY KEY,
    first_seen_ms    BIGINT  NOT NULL,
    last_seen_ms     BIGINT  NOT NULL,
    last_allowed_ms  BIGINT
);

CREATE TABLE sessions (
    agent_id    TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    started_ms  BIGINT  NOT NULL,
    PRIMARY KEY (agent_id, session_id)
);

CREATE TABLE policy_loads (
    id         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version    TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    loaded_ms  BIGINT  NOT NULL,
    accepted   BIGINT  NOT NULL,
    error      TEXT    NOT NULL
);

-- Authenticated callers: a SHA-256 of each API key, or a client-certificate identity.
CREATE TABLE principals (
    name          TEXT    PRIMARY KEY,
    roles         TEXT    NOT NULL,
    agents        TEXT    NOT NULL,
    key_hash      TEXT    UNIQUE,
    key_prefix    TEXT,
    tls_identity  TEXT,
    created_by    TEXT    NOT NULL,
    created_ms    BIGINT  NOT NULL,
    revoked_ms    BIGINT,
    CHECK ((key_hash IS NULL) = (key_prefix IS NULL)),
    CHECK (key_hash IS NOT NULL OR tls_identity IS NOT NULL)
);
CREATE UNIQUE INDEX principals_active_tls_identity
    ON principals (tls_identity) WHERE tls_identity IS NOT NULL AND revoked_ms IS NULL;

CREATE TABLE halts (
    target      TEXT    PRIMARY KEY,
    scope       TEXT    NOT NULL,
    agent_id    TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    mode        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    engaged_by  TEXT    NOT NULL,
    engaged_ms  BIGINT  NOT NULL
);

CREATE TABLE approvals (
    id            TEXT    PRIMARY KEY,
    agent_id      TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    requested_ms  BIGINT  NOT NULL,
    body_json     TEXT    NOT NULL
);
CREATE INDEX approvals_by_agent ON approvals (agent_id, requested_ms);

CREATE TABLE agent_operators (
    agent_id  TEXT    PRIMARY KEY,
    operator  TEXT    NOT NULL,
    set_by    TEXT    NOT NULL,
    set_ms    BIGINT  NOT NULL
);

-- The Merkle tree over audit entries (RFC 6962). Leaf i is entry seq i+1.
CREATE TABLE merkle_nodes (
    level  BIGINT  NOT NULL,
    idx    BIGINT  NOT NULL,
    hash   TEXT    NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Signed tree heads in the C2SP signed-note format, one per committed batch.
CREATE TABLE checkpoints (
    size   BIGINT  PRIMARY KEY,
    root   TEXT    NOT NULL,
    note   TEXT    NOT NULL,
    ts_ms  BIGINT  NOT NULL
);

-- Append-only in the database: the audit log, the tree and the checkpoints refuse
-- UPDATE, DELETE and TRUNCATE whatever role runs the statement (a superuser can still
-- drop the triggers; the HMAC chain and signed checkpoints catch what follows).
CREATE FUNCTION arbiter_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION arbiter_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION arbiter_append_only();
CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION arbiter_append_only();
CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION arbiter_append_only();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION arbiter_append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION arbiter_append_only();
