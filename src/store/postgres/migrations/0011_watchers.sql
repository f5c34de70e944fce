-- Which process watches which instance's live news (long-polls, streams, the portal), so
-- that processes announce to each other only what somebody waits for (see
-- src/store/postgres/watchers.rs). Unlogged: the rows are renewed every few seconds and are
-- worth nothing after a crash.
CREATE UNLOGGED TABLE watchers (
    instance_id BIGINT NOT NULL,
    process TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (instance_id, process)
);
