-- The audit seq of the batch that last changed a budget counter's settled spend or an
-- agent's row, so each replica re-reads only what other replicas changed since its
-- last look: GetBudgets, the pipeline's first budget check, ListAgents and the
-- watchdog see every replica's spend and agents within a second (docs/postgres.md).
-- GRANT: nothing new (budget_counters and agents already allow SELECT, INSERT, UPDATE).
ALTER TABLE budget_counters ADD COLUMN spent_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX budget_counters_by_spent_seq ON budget_counters (spent_seq);
ALTER TABLE agents ADD COLUMN seen_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX agents_by_seen_seq ON agents (seen_seq);
