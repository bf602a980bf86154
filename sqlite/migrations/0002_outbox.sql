-- The durable push outbox. A push is a row from the moment a source's event
-- is accepted until a provider answered for good. due_at doubles as the
-- lease: a claim moves it to the end of the lease, so a row claimed by a
-- process that died becomes due again by itself. Content (subject, sender,
-- sealed content) is stored sealed with the field cipher; the device token is
-- not stored here at all (it is read from the registration at claim time).
-- AUTOINCREMENT: an ID is never reused, so settling a push that was
-- coalesced away while in flight can never touch the row that replaced it.
CREATE TABLE outbox (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,
	push_id         TEXT NOT NULL,
	tenant_id       TEXT NOT NULL,
	registration_id TEXT NOT NULL,
	mailbox_id      TEXT NOT NULL,
	kind            TEXT NOT NULL,
	badge           INTEGER NOT NULL,
	seq             INTEGER NOT NULL,
	collapse_id     TEXT NOT NULL DEFAULT '',
	content         BLOB,
	attempts        INTEGER NOT NULL DEFAULT 0,
	due_at          INTEGER NOT NULL,
	last_error      TEXT NOT NULL DEFAULT '',
	created_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (due_at);
CREATE INDEX outbox_registration ON outbox (registration_id, kind);

-- Pushes given up on: no content, no token.
CREATE TABLE outbox_dead (
	id              INTEGER PRIMARY KEY,
	push_id         TEXT NOT NULL,
	tenant_id       TEXT NOT NULL,
	registration_id TEXT NOT NULL,
	mailbox_id      TEXT NOT NULL,
	kind            TEXT NOT NULL,
	seq             INTEGER NOT NULL,
	attempts        INTEGER NOT NULL,
	reason          TEXT NOT NULL,
	created_at      INTEGER NOT NULL,
	dead_at         INTEGER NOT NULL
);

-- The highest mailbox sequence delivered to each registration: a push that
-- reflects an older state is never sent after a newer one (badges never go
-- backwards).
ALTER TABLE registrations ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
