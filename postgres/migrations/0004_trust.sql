-- Whether a tenant accepts device-subscribed registrations (new tenants:
-- off; CreateTenant writes the value). Each device-subscribed registration
-- owns the subscription its own callback URL bound. The registration quota
-- counts a tenant's live registrations.
ALTER TABLE tenants ADD COLUMN device_subscribed boolean NOT NULL DEFAULT false;
ALTER TABLE registrations ADD COLUMN subscription_id text;
CREATE INDEX registrations_tenant_status ON registrations (tenant_id, status);
