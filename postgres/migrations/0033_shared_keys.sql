-- Keys every node must hold and mailpush makes itself (Graph's
-- rich-notification certificates with their private keys), sealed with the
-- field cipher and bound to (kind, id): any node opens a notification
-- encrypted to a certificate another node made.
CREATE TABLE shared_keys (
	kind         text NOT NULL,
	id           text NOT NULL,
	value_sealed bytea NOT NULL,
	not_after    bigint NOT NULL,
	created_at   bigint NOT NULL,
	PRIMARY KEY (kind, id)
);
