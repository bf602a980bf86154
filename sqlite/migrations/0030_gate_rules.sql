-- Each tenant's ordered gate rules as the admin console edits them: one
-- versioned JSON list per tenant (users only as keyed hashes). The
-- configuration's gate.rules seed it; afterwards it is what every node applies.
CREATE TABLE gate_rules (
	tenant_id  TEXT PRIMARY KEY REFERENCES tenants(id),
	version    INTEGER NOT NULL,
	rules      TEXT NOT NULL,
	updated_at INTEGER NOT NULL
);
