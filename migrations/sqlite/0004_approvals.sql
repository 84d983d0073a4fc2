-- Human approvals. `body_json` holds the whole approval (binding, state, approver);
-- the other columns index it. The audit log keeps every request, grant, deny, expiry
-- and consumption.
CREATE TABLE approvals (
    id            TEXT    PRIMARY KEY,
    agent_id      TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    requested_ms  INTEGER NOT NULL,
    body_json     TEXT    NOT NULL
);
CREATE INDEX approvals_by_agent ON approvals (agent_id, requested_ms);
