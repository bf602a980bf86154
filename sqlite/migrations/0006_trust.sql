-- Whether a tenant accepts device-subscribed registrations (a registration
-- that proves only that someone could POST to its callback URL). Tenants
-- created before the setting keep the mode their apps already use; new
-- tenants get it off (CreateTenant writes the value).
ALTER TABLE tenants ADD COLUMN device_subscribed INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET device_subscribed = 1;

-- The per-tenant registration quota counts live registrations.
CREATE INDEX registrations_tenant_status ON registrations (tenant_id, status);
