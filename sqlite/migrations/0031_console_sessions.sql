-- The admin console's sessions, shared by every node: found by the SHA-256
-- of the cookie (never the cookie itself); display is sealed (it may be an
-- email). Idle and absolute timeouts are checked against these times.
CREATE TABLE console_sessions (
	id_hash        BLOB PRIMARY KEY,
	actor          TEXT NOT NULL,
	display_sealed BLOB NOT NULL,
	tenant_id      TEXT NOT NULL,
	token_id       TEXT NOT NULL,
	created_at     INTEGER NOT NULL,
	last_seen      INTEGER NOT NULL
);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen);
