-- A principal can be bound to a client-certificate identity (mTLS) instead of an API
-- key. Such a principal has no key at all, so a leaked key can never stand in for the
-- certificate: key_hash and key_prefix become optional, and every row needs one of the
-- two credentials. SQLite cannot drop NOT NULL in place, hence the copy.
CREATE TABLE principals_v2 (
    name          TEXT    PRIMARY KEY,
    roles         TEXT    NOT NULL,
    agents        TEXT    NOT NULL,
    key_hash      TEXT    UNIQUE,
    key_prefix    TEXT,
    tls_identity  TEXT,
    created_by    TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    revoked_ms    INTEGER,
    CHECK ((key_hash IS NULL) = (key_prefix IS NULL)),
    CHECK (key_hash IS NOT NULL OR tls_identity IS NOT NULL)
);

INSERT INTO principals_v2 (name, roles, agents, key_hash, key_prefix, created_by, created_ms, revoked_ms)
SELECT name, roles, agents, key_hash, key_prefix, created_by, created_ms, revoked_ms FROM principals;

DROP TABLE principals;
ALTER TABLE principals_v2 RENAME TO principals;

-- One active principal per identity; a revoked principal's identity may be bound again
-- (a re-issued certificate usually keeps its SPIFFE ID).
CREATE UNIQUE INDEX principals_active_tls_identity
    ON principals (tls_identity) WHERE tls_identity IS NOT NULL AND revoked_ms IS NULL;
