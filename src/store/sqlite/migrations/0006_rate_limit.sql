-- An endpoint's rate limit: at most this many deliveries a second (NULL: no limit).
ALTER TABLE endpoints ADD COLUMN rate_limit INTEGER;
