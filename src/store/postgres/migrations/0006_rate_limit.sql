-- An endpoint's rate limit: at most this many deliveries a second (NULL: no limit).
ALTER TABLE endpoints ADD COLUMN rate_limit INTEGER;

-- The pace shared by every process: for each key (an endpoint), the earliest time (microseconds) the next
-- send may start. A send reserves its slot by moving it on by one interval.
CREATE TABLE pacing (
    key TEXT PRIMARY KEY,
    next_at_us BIGINT NOT NULL
);
