-- Accepted policy loads keep the bundle's bytes (the same column as PostgreSQL's
-- 0003): what was served is on record beside its version hash. NULL for rejected
-- loads and for loads recorded before this migration.
ALTER TABLE policy_loads ADD COLUMN bundle BLOB;
