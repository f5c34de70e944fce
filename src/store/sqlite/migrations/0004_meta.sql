-- The Meta channel: an instance's Cloud API settings (JSON, secrets included: the database
-- is where they rest) and the reason it needs attention (an expired token).
ALTER TABLE instances ADD COLUMN meta TEXT;
ALTER TABLE instances ADD COLUMN meta_phone_number_id TEXT;
ALTER TABLE instances ADD COLUMN attention TEXT;
CREATE UNIQUE INDEX instances_by_meta_number ON instances (meta_phone_number_id)
    WHERE meta_phone_number_id IS NOT NULL;

-- Meta's own id of a message the business sent (statuses arrive with it).
ALTER TABLE messages ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX messages_by_external_id ON messages (instance_id, external_id)
    WHERE external_id IS NOT NULL;

-- Requests waiting to go to a channel (a message to send, a read receipt), oldest first
-- per conversation. A claimed row has next_at moved to the end of its lease.
CREATE TABLE channel_sends (
    id          INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL,
    message_id  TEXT,
    customer    TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX channel_sends_due ON channel_sends (next_at);
CREATE INDEX channel_sends_by_conversation ON channel_sends (instance_id, customer, id);
