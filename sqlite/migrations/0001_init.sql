-- Addresses are never stored: mailboxes are found by a keyed hash of the
-- address. Push tokens are stored sealed (AES-GCM) with a keyed hash for
-- uniqueness. Times are Unix milliseconds. Mailboxes and registrations keep
-- their rowid: rows then append in insertion order, while WITHOUT ROWID on a
-- random text key measured larger (page splits) and slower.
CREATE TABLE tenants (
	id            TEXT PRIMARY KEY,
	name          TEXT NOT NULL UNIQUE,
	token_hash    BLOB NOT NULL,
	allowed_hosts TEXT NOT NULL DEFAULT '',
	max_content   TEXT NOT NULL,
	created_at    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE mailboxes (
	id              TEXT PRIMARY KEY,
	tenant_id       TEXT NOT NULL REFERENCES tenants(id),
	address_hash    BLOB NOT NULL,
	source          TEXT NOT NULL,
	mode            TEXT NOT NULL,
	server_url      TEXT NOT NULL DEFAULT '',
	subscription_id TEXT,
	watermark       TEXT NOT NULL DEFAULT '',
	badge           INTEGER NOT NULL DEFAULT -1,
	seq             INTEGER NOT NULL DEFAULT 0,
	status          TEXT NOT NULL,
	last_event_at   INTEGER NOT NULL DEFAULT 0,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	UNIQUE (tenant_id, address_hash, source)
);
CREATE UNIQUE INDEX mailboxes_subscription ON mailboxes (subscription_id) WHERE subscription_id IS NOT NULL;

CREATE TABLE registrations (
	id           TEXT PRIMARY KEY,
	tenant_id    TEXT NOT NULL REFERENCES tenants(id),
	mailbox_id   TEXT NOT NULL REFERENCES mailboxes(id),
	platform     TEXT NOT NULL,
	environment  TEXT NOT NULL,
	token_sealed BLOB NOT NULL,
	token_hash   BLOB NOT NULL,
	content_key  BLOB,
	content      TEXT NOT NULL,
	status       TEXT NOT NULL,
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL,
	UNIQUE (mailbox_id, token_hash)
);
