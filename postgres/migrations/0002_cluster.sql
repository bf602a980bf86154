-- Nodes sharing this database, by heartbeat: a per-node share of a cluster
-- limit is the limit divided by the live nodes.
CREATE TABLE nodes (
	id      text PRIMARY KEY,
	seen_at bigint NOT NULL
);
