-- Message templates of an instance's WhatsApp Business Account, as last synced from Meta;
-- `template_syncs` says when (a sync may find none). Sends of type template are checked
-- against them.
CREATE TABLE templates (
    instance_id BIGINT NOT NULL,
    name        TEXT NOT NULL,
    language    TEXT NOT NULL,
    category    TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        TEXT NOT NULL,
    params      INTEGER NOT NULL,
    buttons     TEXT NOT NULL,
    PRIMARY KEY (instance_id, name, language)
);
CREATE TABLE template_syncs (
    instance_id BIGINT PRIMARY KEY,
    synced_at   BIGINT NOT NULL
);
