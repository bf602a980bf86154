-- ActiveSync gate: the device registry fed by the MDM, and the link from a
-- push registration to its device's ActiveSync DeviceId (as a keyed hash),
-- so that blocking or wiping a device removes its pushes. Users are kept
-- only as keyed hashes, like mailbox addresses.
CREATE TABLE gate_devices (
	tenant_id   TEXT NOT NULL REFERENCES tenants(id),
	device_id   TEXT NOT NULL,
	user_hash   BLOB,
	device_type TEXT NOT NULL DEFAULT '',
	state       TEXT NOT NULL,
	last_seen   INTEGER NOT NULL DEFAULT 0,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	PRIMARY KEY (tenant_id, device_id)
) WITHOUT ROWID;

ALTER TABLE registrations ADD COLUMN activesync_device_hash BLOB;
CREATE INDEX registrations_activesync ON registrations (tenant_id, activesync_device_hash) WHERE activesync_device_hash IS NOT NULL;
