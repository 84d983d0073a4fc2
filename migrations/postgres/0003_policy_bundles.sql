-- Accepted policy loads keep the bundle's bytes, so every replica on this database
-- serves the newest accepted bundle, whichever replica loaded it (docs/postgres.md).
-- NULL for rejected loads and for loads recorded before this migration.
-- No new GRANT: the server role already has SELECT, INSERT on policy_loads.
ALTER TABLE policy_loads ADD COLUMN bundle BYTEA;
