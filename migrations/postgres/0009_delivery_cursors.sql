-- Webhook delivery cursors (docs/operations.md, "Webhooks"): with several replicas on
-- one database only the holder of the notifier lease delivers, and it keeps here the
-- audit seq up to which every event is done, so the replica that takes the lease over
-- resumes from it. The value only moves forward.
-- GRANT: SELECT, INSERT, UPDATE ON delivery_cursors (docs/postgres.md).
CREATE TABLE delivery_cursors (
    name TEXT PRIMARY KEY,
    seq  BIGINT NOT NULL
);
