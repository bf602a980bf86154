-- The admin console's audit log: every change an administrator makes. It
-- names actors and targets by IDs and keyed hashes only, and outlives the
-- tenants it mentions (it is the record of their deletion too).
CREATE TABLE audit_log (
	id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at        bigint NOT NULL,
	actor     text NOT NULL,
	tenant_id text NOT NULL,
	action    text NOT NULL,
	target    text NOT NULL,
	detail    text NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
