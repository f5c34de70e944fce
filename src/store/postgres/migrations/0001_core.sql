-- The core schema for PostgreSQL: the same tables as the SQLite backend (times are
-- milliseconds since the Unix epoch), with sequences for ids and BOOLEAN flags.

CREATE SEQUENCE instance_ids START 10001;

CREATE TABLE instances (
    id            BIGINT  PRIMARY KEY DEFAULT nextval('instance_ids'),
    name          TEXT    NOT NULL,
    channel       TEXT    NOT NULL,
    phone_number  TEXT    NOT NULL,
    app_key       TEXT    NOT NULL UNIQUE,
    auth_key_hash BYTEA   NOT NULL,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE endpoints (
    id          TEXT     PRIMARY KEY,
    instance_id BIGINT   NOT NULL REFERENCES instances (id),
    url         TEXT     NOT NULL,
    description TEXT     NOT NULL,
    events      SMALLINT NOT NULL,
    enabled     BOOLEAN  NOT NULL,
    secret      TEXT     NOT NULL,
    created_at  BIGINT   NOT NULL,
    updated_at  BIGINT   NOT NULL
);
CREATE INDEX endpoints_by_instance ON endpoints (instance_id);

CREATE TABLE messages (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT      NOT NULL UNIQUE,
    instance_id BIGINT    NOT NULL,
    direction   TEXT      NOT NULL,
    customer    TEXT      NOT NULL,
    business    TEXT      NOT NULL,
    kind        TEXT      NOT NULL,
    body        TEXT      NOT NULL,
    detail      TEXT      NOT NULL,
    status      TEXT      NOT NULL,
    created_at  BIGINT    NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (instance_id, customer, seq);

CREATE TABLE conversations (
    instance_id   BIGINT NOT NULL,
    customer      TEXT   NOT NULL,
    name          TEXT,
    last_seq      BIGINT NOT NULL,
    message_count BIGINT NOT NULL,
    unread        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (instance_id, customer)
);
CREATE INDEX conversations_by_activity ON conversations (instance_id, last_seq);

-- The outbox. Writers of one instance's events hold that instance's advisory lock, so
-- `seq` grows in commit order within an instance (the pull cursor relies on it).
CREATE TABLE events (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT      NOT NULL UNIQUE,
    instance_id  BIGINT    NOT NULL,
    kind         TEXT      NOT NULL,
    conversation TEXT      NOT NULL,
    payload      TEXT      NOT NULL,
    created_at   BIGINT    NOT NULL
);
CREATE INDEX events_by_instance ON events (instance_id, seq);
CREATE INDEX events_by_age ON events (created_at);

-- state: 0 waiting, 1 pending (head of its conversation), 2 delivered, 3 dead.
CREATE TABLE deliveries (
    id             BIGSERIAL PRIMARY KEY,
    event_seq      BIGINT    NOT NULL,
    endpoint_id    TEXT      NOT NULL,
    conversation   TEXT      NOT NULL,
    state          SMALLINT  NOT NULL,
    failures       INTEGER   NOT NULL DEFAULT 0,
    attempt_offset INTEGER   NOT NULL DEFAULT 0,
    next_at        BIGINT    NOT NULL,
    lease_until    BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 1;
CREATE INDEX deliveries_queue ON deliveries (endpoint_id, conversation, id) WHERE state IN (0, 1);
CREATE INDEX deliveries_by_event ON deliveries (event_seq);
-- The ordering invariant, enforced: at most one pending head per conversation and endpoint.
CREATE UNIQUE INDEX deliveries_one_head ON deliveries (endpoint_id, conversation) WHERE state = 1;

CREATE TABLE attempts (
    id          BIGSERIAL PRIMARY KEY,
    event_seq   BIGINT    NOT NULL,
    endpoint_id TEXT      NOT NULL,
    attempt     INTEGER   NOT NULL,
    started_at  BIGINT    NOT NULL,
    duration_ms BIGINT    NOT NULL,
    status_code INTEGER,
    response    TEXT      NOT NULL,
    error       TEXT,
    success     BOOLEAN   NOT NULL
);
CREATE INDEX attempts_by_event ON attempts (event_seq);

CREATE TABLE scheduled_statuses (
    message_id  TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    instance_id BIGINT NOT NULL,
    customer    TEXT   NOT NULL,
    due_at      BIGINT NOT NULL,
    PRIMARY KEY (message_id, status)
);
CREATE INDEX scheduled_statuses_due ON scheduled_statuses (due_at);

CREATE TABLE idempotency_keys (
    instance_id  BIGINT NOT NULL,
    key          TEXT   NOT NULL,
    request_hash TEXT   NOT NULL,
    response     TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (instance_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
