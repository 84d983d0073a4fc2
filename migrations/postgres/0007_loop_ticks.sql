-- Calls counted by the loop guard, one row per allowed (or pending) call of a guarded
-- tool. With several replicas the sequencer counts a (agent, session, tool) window
-- here before it admits another call, so the guard holds whatever replica serves the
-- call. Rows older than the longest window are deleted by the watchdog lease holder.
-- GRANT: SELECT, INSERT, DELETE ON loop_ticks (docs/postgres.md).
CREATE TABLE loop_ticks (
    agent_id    TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    tool        TEXT    NOT NULL,
    ts_ms       BIGINT  NOT NULL
);
CREATE INDEX loop_ticks_by_key ON loop_ticks (agent_id, session_id, tool, ts_ms);
CREATE INDEX loop_ticks_by_time ON loop_ticks (ts_ms);
