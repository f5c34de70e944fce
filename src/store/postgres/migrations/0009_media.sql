-- Customers' media kept by botlinkd (Meta's copy expires), and the downloads still to make.
CREATE TABLE media (
    instance_id  BIGINT NOT NULL,
    message_id   TEXT NOT NULL,
    content_type TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    bytes        BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (instance_id, message_id)
);
CREATE INDEX media_by_age ON media (created_at);
CREATE TABLE media_fetches (
    instance_id BIGINT NOT NULL,
    message_id  TEXT NOT NULL,
    media_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    sha256      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (instance_id, message_id)
);
CREATE INDEX media_fetches_due ON media_fetches (next_at);
