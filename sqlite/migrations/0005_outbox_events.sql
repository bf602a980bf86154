-- The event tier of the outbox (see the pipeline package doc): one row per
-- accepted event, whatever the number of devices of its mailbox. It is
-- written before the source acknowledges the mail server and deleted in the
-- transaction that records what the fan-out left behind (device pushes in
-- outbox, dead letters, raised last_seq). due_at doubles as the lease, as in
-- outbox. class is the push kind every device gets when it is one that
-- coalesces ('badge', 'sync'), '' otherwise. unresolved: stored before the
-- badge and content were fetched from the mail server (a later stage
-- completes it); credentials are never stored. content is the sealed
-- subject and sender. AUTOINCREMENT: IDs are never reused.
CREATE TABLE outbox_events (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	event_id   TEXT NOT NULL,
	tenant_id  TEXT NOT NULL,
	mailbox_id TEXT NOT NULL,
	kind       TEXT NOT NULL,
	class      TEXT NOT NULL,
	badge      INTEGER NOT NULL,
	seq        INTEGER NOT NULL,
	content    BLOB,
	unresolved INTEGER NOT NULL DEFAULT 0,
	attempts   INTEGER NOT NULL DEFAULT 0,
	due_at     INTEGER NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE INDEX outbox_events_mailbox ON outbox_events (mailbox_id, class);

-- The device tier's lookup by registration (is a device held?) already has
-- outbox_registration.

-- When an active registration last stopped being active (0: never). The
-- fan-out runs after the event was accepted: a registration made pending in
-- between (a health check asking the device to check in) still gets the
-- pushes of the events accepted while it was active, as it did when pushes
-- were written at acceptance.
ALTER TABLE registrations ADD COLUMN left_active_at INTEGER NOT NULL DEFAULT 0;
