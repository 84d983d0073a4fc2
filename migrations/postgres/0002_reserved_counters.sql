-- Amounts held by open reservations, per budget counter, kept in step with the
-- reservations table (added on Reserve, taken off on Settle and on expiry), so the
-- replica-safe budget check reads one row instead of summing reservations (SPEC §7:
-- nothing on the hot path is summed from history).
-- GRANT: nothing new (budget_counters and reservations already allow SELECT, INSERT, UPDATE).
ALTER TABLE budget_counters
    ADD COLUMN reserved_micro_usd BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reserved_tokens    BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reserved_calls     BIGINT NOT NULL DEFAULT 0;

INSERT INTO budget_counters (budget, scope_key, window_start_ms,
                             reserved_micro_usd, reserved_tokens, reserved_calls)
SELECT k->>'budget', k->>'scope_key', (k->>'window_start_ms')::BIGINT,
       SUM(r.micro_usd), SUM(r.tokens), SUM(r.calls)
FROM reservations r, jsonb_array_elements(r.keys_json::jsonb) AS k
WHERE r.settled = 0
GROUP BY 1, 2, 3
ON CONFLICT (budget, scope_key, window_start_ms) DO UPDATE SET
    reserved_micro_usd = excluded.reserved_micro_usd,
    reserved_tokens    = excluded.reserved_tokens,
    reserved_calls     = excluded.reserved_calls;
