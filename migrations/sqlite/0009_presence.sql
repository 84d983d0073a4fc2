-- Presence: each agent's newest heartbeat, so presence (and the silence the watchdog
-- judges) survives a restart. The same table as migrations/postgres/0004_presence.sql,
-- where several replicas share it.
--
-- Not audited state: heartbeats are not logged, and the server writes the ones it
-- received in one multi-row upsert about four times a second, outside the audit batch,
-- moving last_heartbeat_ms only forward. silence_halted_ms (the heartbeat whose silence
-- the watchdog halted the agent for, so it acts once per silence) is written in the
-- same transaction as that halt's audit entry.
CREATE TABLE presence (
    agent_id           TEXT    PRIMARY KEY,
    status             TEXT    NOT NULL CHECK (status IN ('live', 'idle', 'unresponsive')),
    last_heartbeat_ms  INTEGER NOT NULL,
    silence_halted_ms  INTEGER
);
