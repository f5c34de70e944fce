-- Unread counts: inbound messages since the conversation was last marked read or answered.
ALTER TABLE conversations ADD COLUMN unread INTEGER NOT NULL DEFAULT 0;
