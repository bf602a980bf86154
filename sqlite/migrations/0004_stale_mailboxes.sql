-- The EWS health monitor looks for live subscriptions that went silent:
-- mailboxes of one source, active or pending, by last_event_at. The partial
-- index leaves the inactive ones out, so it stays as small as the live set.
CREATE INDEX mailboxes_stale ON mailboxes (source, last_event_at) WHERE status IN ('active', 'pending');
