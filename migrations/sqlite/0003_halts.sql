-- Engaged halts (the kill switch), one row per target. Lifting deletes the row; the
-- audit log keeps the history of every engage and release.
CREATE TABLE halts (
    target      TEXT    PRIMARY KEY,
    scope       TEXT    NOT NULL,
    agent_id    TEXT    NOT NULL,
    session_id  TEXT    NOT NULL,
    mode        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    engaged_by  TEXT    NOT NULL,
    engaged_ms  INTEGER NOT NULL
);
