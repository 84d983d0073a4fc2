-- The human accountable for each agent, as registered by Heartbeat. Approvals use it
-- for four-eyes: an agent's registered operator cannot approve the agent's actions.
CREATE TABLE agent_operators (
    agent_id  TEXT    PRIMARY KEY,
    operator  TEXT    NOT NULL,
    set_by    TEXT    NOT NULL,
    set_ms    INTEGER NOT NULL
);
