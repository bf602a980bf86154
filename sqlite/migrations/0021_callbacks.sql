-- The callback URL a device-subscribed registration was given, sealed (it
-- lets its holder post notifications), so that GET returns the same URL.
-- Kept apart from registrations: the delivery path never reads it.
CREATE TABLE registration_callbacks (
	registration_id TEXT PRIMARY KEY REFERENCES registrations(id) ON DELETE CASCADE,
	tenant_id       TEXT NOT NULL,
	url_sealed      BLOB NOT NULL
) WITHOUT ROWID;
