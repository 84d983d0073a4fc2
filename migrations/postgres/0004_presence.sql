-- Presence: each agent's newest heartbeat, whichever replica received it, so the
-- watchdog's lease holder judges silence from every replica's heartbeats, ListAgents
-- on any replica shows them, and presence survives a restart.
--
-- Not audited state: heartbeats are not logged, and each replica writes the ones it
-- received in one multi-row upsert about four times a second, outside the audit batch,
-- moving last_heartbeat_ms only forward. silence_halted_ms (the heartbeat whose silence
-- the watchdog halted the agent for, so it acts once per silence) is written in the
-- same transaction as that halt's audit entry.
--
-- GRANT: SELECT, INSERT, UPDATE ON presence TO arbiter_app (docs/postgres.md).
CREATE TABLE presence (
    agent_id           TEXT    PRIMARY KEY,
    status             TEXT    NOT NULL CHECK (status IN ('live', 'idle', 'unresponsive')),
    last_heartbeat_ms  BIGINT  NOT NULL,
    silence_halted_ms  BIGINT
);
