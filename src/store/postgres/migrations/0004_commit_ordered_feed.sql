-- Feed positions follow commit order without an instance lock: a writer sets each event's
-- seq to (its transaction id << 20) | (the event's index in the transaction), and readers
-- take only events below the oldest running transaction (see store/postgres/append.rs).
-- Old positions came from a sequence, one per event, and no transaction wrote more than a
-- few events, so they stay far below (transaction id << 20): new positions sort after every
-- old one and cursors handed out earlier stay valid.
ALTER TABLE events ALTER COLUMN seq DROP DEFAULT;
