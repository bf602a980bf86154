-- A tenant's live (active or pending) registrations, kept by triggers: the
-- registrar checks the tenant's quota on every new mailbox, and counting the
-- registrations table for it grew with the tenant (a scan per registration:
-- quadratic over a migration of a million devices).
CREATE TABLE tenant_registrations (
	tenant_id TEXT PRIMARY KEY,
	live      INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO tenant_registrations (tenant_id, live)
	SELECT tenant_id, count(*) FROM registrations WHERE status IN ('active', 'pending') GROUP BY tenant_id;

CREATE TRIGGER registrations_live_insert AFTER INSERT ON registrations
WHEN NEW.status IN ('active', 'pending')
BEGIN
	INSERT INTO tenant_registrations (tenant_id, live) VALUES (NEW.tenant_id, 1)
		ON CONFLICT (tenant_id) DO UPDATE SET live = live + 1;
END;

CREATE TRIGGER registrations_live_delete AFTER DELETE ON registrations
WHEN OLD.status IN ('active', 'pending')
BEGIN
	UPDATE tenant_registrations SET live = live - 1 WHERE tenant_id = OLD.tenant_id;
END;

CREATE TRIGGER registrations_live_update AFTER UPDATE OF status, tenant_id ON registrations
WHEN (OLD.status IN ('active', 'pending')) != (NEW.status IN ('active', 'pending')) OR OLD.tenant_id != NEW.tenant_id
BEGIN
	UPDATE tenant_registrations SET live = live - 1 WHERE tenant_id = OLD.tenant_id AND OLD.status IN ('active', 'pending');
	INSERT INTO tenant_registrations (tenant_id, live) SELECT NEW.tenant_id, 1 WHERE NEW.status IN ('active', 'pending')
		ON CONFLICT (tenant_id) DO UPDATE SET live = live + 1;
END;
