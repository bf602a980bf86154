-- Whether a tenant accepts device-subscribed registrations (new tenants:
-- off; CreateTenant writes the value). The registration quota counts a
-- tenant's live registrations.
ALTER TABLE tenants ADD COLUMN device_subscribed boolean NOT NULL DEFAULT false;
CREATE INDEX registrations_tenant_status ON registrations (tenant_id, status);
