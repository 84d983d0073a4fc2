-- Conditions the watchdog has halted an agent for (over a budget in a window, a loop
-- trip in a minute), written in the same transaction as the halt's audit entry. Under
-- the sequencer lock a second halt for a marked condition is refused, so whichever
-- replica holds the lease, and across restarts, each condition halts once.
-- GRANT: SELECT, INSERT ON watchdog_marks (docs/postgres.md); never updated or deleted.
CREATE TABLE watchdog_marks (
    condition  TEXT    PRIMARY KEY,
    marked_ms  BIGINT  NOT NULL
);
