-- Which process holds each lease (deliveries, Meta sends, media downloads), and which
-- serving processes are alive, so that the work of a process that died is taken over within a second
-- or two instead of when its leases end (see src/store/postgres/liveness.rs). A process's
-- number is also its `attempt_stats` writer; a live process holds the advisory lock
-- (LOCK_SPACE + 1, number) on a connection of its own.
ALTER TABLE deliveries ADD COLUMN lease_owner INTEGER;
ALTER TABLE channel_sends ADD COLUMN lease_owner INTEGER;
ALTER TABLE media_fetches ADD COLUMN lease_owner INTEGER;
CREATE TABLE processes (
    number     INTEGER PRIMARY KEY,
    started_at BIGINT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    version    TEXT NOT NULL,
    gone_since BIGINT
);
-- The number of the process whose connection runs the statement (each connection carries it
-- as the setting `botlinkd.process`); NULL on a connection without it. Inlined by the planner.
CREATE FUNCTION botlinkd_process() RETURNS INTEGER LANGUAGE sql STABLE
    AS $$ SELECT current_setting('botlinkd.process', TRUE)::INTEGER $$;
