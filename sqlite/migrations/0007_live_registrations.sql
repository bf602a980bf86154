-- The per-tenant registration quota is checked on every new registration.
-- Counting a tenant's live registrations through an index measured 39 ms
-- at 100,000 (BenchmarkCountRegistrations, docs/PERFORMANCE.md): too slow
-- for every registration. Triggers keep the count on the tenant row
-- instead, exact whatever path inserts, deletes or changes a registration
-- (API, gate wipes, dead push tokens, tenant deletion); the index goes.
DROP INDEX registrations_tenant_status;
ALTER TABLE tenants ADD COLUMN live_registrations INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET live_registrations =
	(SELECT count(*) FROM registrations r WHERE r.tenant_id = tenants.id AND r.status IN ('active', 'pending'));

CREATE TRIGGER registrations_live_insert AFTER INSERT ON registrations
	WHEN NEW.status IN ('active', 'pending')
BEGIN
	UPDATE tenants SET live_registrations = live_registrations + 1 WHERE id = NEW.tenant_id;
END;

CREATE TRIGGER registrations_live_delete AFTER DELETE ON registrations
	WHEN OLD.status IN ('active', 'pending')
BEGIN
	UPDATE tenants SET live_registrations = live_registrations - 1 WHERE id = OLD.tenant_id;
END;

CREATE TRIGGER registrations_live_update AFTER UPDATE OF status ON registrations
	WHEN (OLD.status IN ('active', 'pending')) != (NEW.status IN ('active', 'pending'))
BEGIN
	UPDATE tenants SET live_registrations = live_registrations
		+ (CASE WHEN NEW.status IN ('active', 'pending') THEN 1 ELSE -1 END)
	WHERE id = NEW.tenant_id;
END;
