-- The same model as the sqlite store (see its migrations for the reasons):
-- addresses only as keyed hashes, push tokens sealed with a keyed hash for
-- uniqueness, times as Unix milliseconds so that both stores agree to the
-- millisecond and the conformance suite holds for both.
CREATE TABLE tenants (
	id            text PRIMARY KEY,
	name          text NOT NULL UNIQUE,
	allowed_hosts text NOT NULL DEFAULT '',
	max_content   text NOT NULL,
	created_at    bigint NOT NULL
);

-- A tenant's API tokens, one scope each; only the SHA-256 of the 256-bit
-- secret is kept.
CREATE TABLE tokens (
	id          text PRIMARY KEY,
	tenant_id   text NOT NULL REFERENCES tenants(id),
	scope       text NOT NULL,
	secret_hash bytea NOT NULL,
	created_at  bigint NOT NULL
);
CREATE INDEX tokens_tenant ON tokens (tenant_id, created_at);

CREATE TABLE mailboxes (
	id              text PRIMARY KEY,
	tenant_id       text NOT NULL REFERENCES tenants(id),
	address_hash    bytea NOT NULL,
	source          text NOT NULL,
	mode            text NOT NULL,
	server_url      text NOT NULL DEFAULT '',
	subscription_id text,
	watermark       text NOT NULL DEFAULT '',
	badge           integer NOT NULL DEFAULT -1,
	seq             bigint NOT NULL DEFAULT 0,
	status          text NOT NULL,
	last_event_at   bigint NOT NULL DEFAULT 0,
	created_at      bigint NOT NULL,
	updated_at      bigint NOT NULL,
	UNIQUE (tenant_id, address_hash, source)
);
CREATE UNIQUE INDEX mailboxes_subscription ON mailboxes (subscription_id) WHERE subscription_id IS NOT NULL;
-- The health monitors' sweep: live mailboxes of one source by silence.
CREATE INDEX mailboxes_stale ON mailboxes (source, last_event_at) WHERE status IN ('active', 'pending');

CREATE TABLE registrations (
	id                     text PRIMARY KEY,
	tenant_id              text NOT NULL REFERENCES tenants(id),
	mailbox_id             text NOT NULL REFERENCES mailboxes(id),
	platform               text NOT NULL,
	environment            text NOT NULL,
	token_sealed           bytea NOT NULL,
	token_hash             bytea NOT NULL,
	content_key            bytea,
	content                text NOT NULL,
	status                 text NOT NULL,
	created_at             bigint NOT NULL,
	updated_at             bigint NOT NULL,
	expires_at             bigint NOT NULL,
	last_seq               bigint NOT NULL DEFAULT 0,
	activesync_device_hash bytea,
	UNIQUE (mailbox_id, token_hash)
);
CREATE INDEX registrations_activesync ON registrations (tenant_id, activesync_device_hash) WHERE activesync_device_hash IS NOT NULL;

CREATE TABLE gate_devices (
	tenant_id   text NOT NULL REFERENCES tenants(id),
	device_id   text NOT NULL,
	user_hash   bytea,
	device_type text NOT NULL DEFAULT '',
	state       text NOT NULL,
	last_seen   bigint NOT NULL DEFAULT 0,
	created_at  bigint NOT NULL,
	updated_at  bigint NOT NULL,
	PRIMARY KEY (tenant_id, device_id)
);
