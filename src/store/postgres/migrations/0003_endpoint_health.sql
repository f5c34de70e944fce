-- Endpoint health: why botlinkd disabled an endpoint on its own, and since when its
-- attempts have all failed.
ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE endpoints ADD COLUMN failing_since BIGINT;

-- Dead deliveries, listed and resent by endpoint (few rows: most deliveries succeed).
CREATE INDEX deliveries_dead ON deliveries (endpoint_id, id) WHERE state = 3;

-- Secret rotation: the secret before the last rotation keeps signing (beside the new one)
-- until previous_secret_until.
ALTER TABLE endpoints ADD COLUMN previous_secret TEXT;
ALTER TABLE endpoints ADD COLUMN previous_secret_until BIGINT;
