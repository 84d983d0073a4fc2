-- One row the health check rewrites after a failed commit, to learn whether a write
-- commits again (a full disk still answers reads). `room` is a zero blob the size of
-- a large batch, so the probe needs as much free space as a real commit. No audited state.
CREATE TABLE health_probe (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    writes  INTEGER NOT NULL,
    room    BLOB    NOT NULL
);
INSERT INTO health_probe (id, writes, room) VALUES (1, 0, x'');
