-- The admin console's audit log: every change an administrator makes. It
-- names actors and targets by IDs and keyed hashes only, and outlives the
-- tenants it mentions (it is the record of their deletion too).
CREATE TABLE audit_log (
	id        INTEGER PRIMARY KEY,
	at        INTEGER NOT NULL,
	actor     TEXT NOT NULL,
	tenant_id TEXT NOT NULL,
	action    TEXT NOT NULL,
	target    TEXT NOT NULL,
	detail    TEXT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
