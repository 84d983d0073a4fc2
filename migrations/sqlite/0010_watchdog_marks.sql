-- Conditions the watchdog has halted an agent for (over a budget in a window, a loop
-- trip in a minute), written with the halt's audit entry and read at start, so a
-- restart does not halt an agent again for a condition an operator already resumed.
CREATE TABLE watchdog_marks (
    condition  TEXT    PRIMARY KEY,
    marked_ms  INTEGER NOT NULL
);
