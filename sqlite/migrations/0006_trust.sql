-- Whether a tenant accepts device-subscribed registrations (a registration
-- that proves only that someone could POST to its callback URL). Tenants
-- created before the setting keep the mode their apps already use; new
-- tenants get it off (CreateTenant writes the value).
ALTER TABLE tenants ADD COLUMN device_subscribed INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET device_subscribed = 1;

-- In device-subscribed mode each registration owns the subscription that
-- its own callback URL bound: a notification through one registration's
-- URL never touches another's binding.
ALTER TABLE registrations ADD COLUMN subscription_id TEXT;

-- The per-tenant registration quota counts live registrations.
CREATE INDEX registrations_tenant_status ON registrations (tenant_id, status);
