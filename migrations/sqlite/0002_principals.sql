-- Authenticated callers. Only a SHA-256 of each API key is stored; keys carry 256 bits
-- of randomness, so a fast hash is enough. Rows are never deleted: a revoked principal
-- keeps its row, and a non-empty table means authentication is required.
CREATE TABLE principals (
    name        TEXT    PRIMARY KEY,
    roles       TEXT    NOT NULL,
    agents      TEXT    NOT NULL,
    key_hash    TEXT    NOT NULL UNIQUE,
    key_prefix  TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    revoked_ms  INTEGER
);
