-- Which process holds each delivery's lease, and which processes are alive, so that the
-- deliveries of a process that died are taken over within a second or two instead of when
-- their leases end (see src/store/postgres/liveness.rs). A process's number is also its
-- `attempt_stats` writer; a live process holds the advisory lock (LOCK_SPACE + 1, number) on
-- a connection of its own.
ALTER TABLE deliveries ADD COLUMN lease_owner INTEGER;
CREATE TABLE processes (
    number     INTEGER PRIMARY KEY,
    started_at BIGINT NOT NULL,
    gone_since BIGINT
);
-- The number of the process whose connection runs the statement (each connection carries it
-- as the setting `botlinkd.process`); NULL on a connection without it. Inlined by the planner.
CREATE FUNCTION botlinkd_process() RETURNS INTEGER LANGUAGE sql STABLE
    AS $$ SELECT current_setting('botlinkd.process', TRUE)::INTEGER $$;
