-- The customer-service window: when the customer last wrote (their message's own time),
-- filled in from the messages already stored.
ALTER TABLE conversations ADD COLUMN last_inbound_at BIGINT;
UPDATE conversations c SET last_inbound_at = (
    SELECT max(m.created_at) FROM messages m
    WHERE m.instance_id = c.instance_id AND m.customer = c.customer AND m.direction = 'inbound');
