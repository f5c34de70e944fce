-- Looking back (the event history and the endpoint charts).
-- Newest first by stored time, for every filter; SQLite appends the rowid (`seq`) to each
-- index, so ties sort by position.
CREATE INDEX events_history ON events (instance_id, created_at);
CREATE INDEX events_by_kind ON events (instance_id, kind, created_at);
CREATE INDEX events_by_number ON events (instance_id, conversation, created_at);

-- Delivery statistics per endpoint, minute, writer and latency bucket (store/attempt_stats.rs).
CREATE TABLE attempt_stats (
    endpoint_id     TEXT    NOT NULL,
    minute          INTEGER NOT NULL,
    writer          INTEGER NOT NULL,
    bucket          INTEGER NOT NULL,
    successes       INTEGER NOT NULL,
    failures        INTEGER NOT NULL,
    last_success_at INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, minute, writer, bucket)
) WITHOUT ROWID;
CREATE INDEX attempt_stats_by_age ON attempt_stats (minute);

-- Retention finds old events instance by instance through events_history; the global age
-- index is one write per event fewer.
DROP INDEX events_by_age;
