-- Endpoint health: why botlinkd disabled an endpoint on its own, and since when its
-- attempts have all failed.
ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE endpoints ADD COLUMN failing_since BIGINT;

-- Dead deliveries, listed and resent by endpoint (few rows: most deliveries succeed).
CREATE INDEX deliveries_dead ON deliveries (endpoint_id, id) WHERE state = 3;
