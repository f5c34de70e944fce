-- Looking back (the event history and the endpoint charts).
-- Newest first by stored time, ties by position, for every filter.
CREATE INDEX events_history ON events (instance_id, created_at, seq);
CREATE INDEX events_by_kind ON events (instance_id, kind, created_at, seq);
CREATE INDEX events_by_number ON events (instance_id, conversation, created_at, seq);

-- Delivery statistics per endpoint, minute, writer (one per process, so processes never wait
-- on each other's rows) and latency bucket (store/attempt_stats.rs).
CREATE TABLE attempt_stats (
    endpoint_id     TEXT     NOT NULL,
    minute          BIGINT   NOT NULL,
    writer          INTEGER  NOT NULL,
    bucket          SMALLINT NOT NULL,
    successes       BIGINT   NOT NULL,
    failures        BIGINT   NOT NULL,
    last_success_at BIGINT   NOT NULL,
    PRIMARY KEY (endpoint_id, minute, writer, bucket)
);
CREATE INDEX attempt_stats_by_age ON attempt_stats (minute);

-- Retention finds old events instance by instance through events_history; the global age
-- index is one write per event fewer.
DROP INDEX events_by_age;
