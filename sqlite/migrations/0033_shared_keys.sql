-- Keys every node must hold and mailpush makes itself (Graph's
-- rich-notification certificates with their private keys), sealed with the
-- field cipher and bound to (kind, id): any node opens a notification
-- encrypted to a certificate another node made.
CREATE TABLE shared_keys (
	kind         TEXT NOT NULL,
	id           TEXT NOT NULL,
	value_sealed BLOB NOT NULL,
	not_after    INTEGER NOT NULL,
	created_at   INTEGER NOT NULL,
	PRIMARY KEY (kind, id)
);
