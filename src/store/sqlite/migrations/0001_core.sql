-- The core schema: instances, webhook endpoints, messages, the event outbox with its
-- deliveries and attempts, sandbox status schedule, idempotency keys.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE instances (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    channel       TEXT    NOT NULL,
    phone_number  TEXT    NOT NULL,
    app_key       TEXT    NOT NULL UNIQUE,
    auth_key_hash BLOB    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE endpoints (
    id          TEXT    PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances (id),
    url         TEXT    NOT NULL,
    description TEXT    NOT NULL,
    events      INTEGER NOT NULL,
    enabled     INTEGER NOT NULL,
    secret      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX endpoints_by_instance ON endpoints (instance_id);

CREATE TABLE messages (
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    instance_id INTEGER NOT NULL,
    direction   TEXT    NOT NULL,
    customer    TEXT    NOT NULL,
    business    TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (instance_id, customer, seq);

CREATE TABLE conversations (
    instance_id   INTEGER NOT NULL,
    customer      TEXT    NOT NULL,
    name          TEXT,
    last_seq      INTEGER NOT NULL,
    message_count INTEGER NOT NULL,
    PRIMARY KEY (instance_id, customer)
);
CREATE INDEX conversations_by_activity ON conversations (instance_id, last_seq);

-- The outbox. `seq` is the pull cursor; with a single writer it grows in commit order.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    instance_id  INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    conversation TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX events_by_instance ON events (instance_id, seq);

-- One row per event and endpoint. state: 0 waiting (behind the head of its conversation),
-- 1 pending (the head; due at next_at), 2 delivered, 3 dead. A claimed delivery has
-- lease_until set and next_at moved to the lease's end, so it is due again only if the
-- claiming process never reports back.
CREATE TABLE deliveries (
    id             INTEGER PRIMARY KEY,
    event_seq      INTEGER NOT NULL,
    endpoint_id    TEXT    NOT NULL,
    conversation   TEXT    NOT NULL,
    state          INTEGER NOT NULL,
    failures       INTEGER NOT NULL DEFAULT 0,
    attempt_offset INTEGER NOT NULL DEFAULT 0,
    next_at        INTEGER NOT NULL,
    lease_until    INTEGER
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 1;
CREATE INDEX deliveries_queue ON deliveries (endpoint_id, conversation, id) WHERE state IN (0, 1);
CREATE INDEX deliveries_by_event ON deliveries (event_seq);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    event_seq   INTEGER NOT NULL,
    endpoint_id TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    response    TEXT    NOT NULL,
    error       TEXT,
    success     INTEGER NOT NULL
);
CREATE INDEX attempts_by_event ON attempts (event_seq);

CREATE TABLE scheduled_statuses (
    message_id  TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    instance_id INTEGER NOT NULL,
    customer    TEXT    NOT NULL,
    due_at      INTEGER NOT NULL,
    PRIMARY KEY (message_id, status)
);
CREATE INDEX scheduled_statuses_due ON scheduled_statuses (due_at);

CREATE TABLE idempotency_keys (
    instance_id  INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    response     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (instance_id, key)
);
