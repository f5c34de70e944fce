-- Retention: find old events and expired idempotency keys without scanning everything.
CREATE INDEX events_by_age ON events (created_at);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
