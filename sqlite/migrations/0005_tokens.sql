-- A tenant has many API tokens, each with one scope (app, backend, admin).
-- Only the SHA-256 of a token's 256-bit secret is kept. The single token
-- that each tenant had ("<tenantID>.<secret>") becomes an app token whose ID
-- is the tenant's ID, so tokens already inside shipped apps keep working.
CREATE TABLE tokens (
	id          TEXT PRIMARY KEY,
	tenant_id   TEXT NOT NULL REFERENCES tenants(id),
	scope       TEXT NOT NULL,
	secret_hash BLOB NOT NULL,
	created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_tenant ON tokens (tenant_id, created_at);

INSERT INTO tokens (id, tenant_id, scope, secret_hash, created_at)
	SELECT id, id, 'app', token_hash, created_at FROM tenants;

ALTER TABLE tenants DROP COLUMN token_hash;
