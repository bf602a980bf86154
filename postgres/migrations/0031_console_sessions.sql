-- The admin console's sessions, shared by every node: found by the SHA-256
-- of the cookie (never the cookie itself); display is sealed (it may be an
-- email). Idle and absolute timeouts are checked against these times.
CREATE TABLE console_sessions (
	id_hash        bytea PRIMARY KEY,
	actor          text NOT NULL,
	display_sealed bytea NOT NULL,
	tenant_id      text NOT NULL,
	token_id       text NOT NULL,
	created_at     bigint NOT NULL,
	last_seen      bigint NOT NULL
);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen);
