-- EWS OAuth grants shared by the nodes (package ews, oauth.go): the newest
-- access and refresh token of each grant, sealed with the field key and
-- bound to grant_key (never in clear), a version that moves at each
-- refresh, and the refresh lease that lets one node at a time call the
-- token endpoint. grant_key is the keyed hash of the token URL, the client
-- ID and the grant's first refresh token; oauth_grant_tokens maps the keyed
-- hash of every refresh token the grant held to it (a callback URL may
-- still carry an old one). Grants idle for 30 days go, superseded refresh
-- tokens a day after they were superseded.
CREATE TABLE oauth_grants (
	grant_key    bytea PRIMARY KEY,
	sealed       bytea NOT NULL,
	version      bigint NOT NULL,
	lease_holder text NOT NULL DEFAULT '',
	lease_until  bigint NOT NULL DEFAULT 0,
	used_at      bigint NOT NULL
);
CREATE INDEX oauth_grants_used_at ON oauth_grants (used_at);
CREATE TABLE oauth_grant_tokens (
	token_key     bytea PRIMARY KEY,
	grant_key     bytea NOT NULL REFERENCES oauth_grants (grant_key) ON DELETE CASCADE,
	superseded_at bigint NOT NULL DEFAULT 0
);
CREATE INDEX oauth_grant_tokens_grant ON oauth_grant_tokens (grant_key);
CREATE INDEX oauth_grant_tokens_superseded ON oauth_grant_tokens (superseded_at) WHERE superseded_at > 0;
