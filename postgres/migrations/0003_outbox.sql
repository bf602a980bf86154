-- The outbox, as in the sqlite store (the pipeline package doc has the
-- design): the event tier (one row per accepted event), the device tier (one
-- row per push that must wait: a retry, an order hold, a rate limit) and the
-- dead letters (no content, no token). due_at doubles as the lease. Content
-- is sealed with the field cipher. Identity columns never reuse an ID, so a
-- settlement can never touch a row that replaced a coalesced one.
CREATE TABLE outbox_events (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	event_id   text NOT NULL,
	tenant_id  text NOT NULL,
	mailbox_id text NOT NULL,
	kind       text NOT NULL,
	class      text NOT NULL,
	badge      integer NOT NULL,
	seq        bigint NOT NULL,
	content    bytea,
	unresolved boolean NOT NULL DEFAULT false,
	attempts   integer NOT NULL DEFAULT 0,
	due_at     bigint NOT NULL,
	created_at bigint NOT NULL
);
CREATE INDEX outbox_events_mailbox ON outbox_events (mailbox_id, class);

CREATE TABLE outbox (
	id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	push_id         text NOT NULL,
	tenant_id       text NOT NULL,
	registration_id text NOT NULL,
	mailbox_id      text NOT NULL,
	kind            text NOT NULL,
	badge           integer NOT NULL,
	seq             bigint NOT NULL,
	collapse_id     text NOT NULL DEFAULT '',
	content         bytea,
	attempts        integer NOT NULL DEFAULT 0,
	due_at          bigint NOT NULL,
	last_error      text NOT NULL DEFAULT '',
	created_at      bigint NOT NULL
);
CREATE INDEX outbox_registration ON outbox (registration_id, kind);

CREATE TABLE outbox_dead (
	id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	push_id         text NOT NULL,
	tenant_id       text NOT NULL,
	registration_id text NOT NULL,
	mailbox_id      text NOT NULL,
	kind            text NOT NULL,
	seq             bigint NOT NULL,
	attempts        integer NOT NULL,
	reason          text NOT NULL,
	created_at      bigint NOT NULL,
	dead_at         bigint NOT NULL
);

-- When an active registration last stopped being active (0: never): it
-- still gets the pushes of events accepted while it was active.
ALTER TABLE registrations ADD COLUMN left_active_at bigint NOT NULL DEFAULT 0;
