-- A mailbox's address, sealed with the field cipher and bound to the
-- mailbox's ID (mailpush.StoreCodec.SealAddress): whichever node resolves a
-- Graph event, renews a subscription or runs the EWS to Graph cut-over
-- finds it, not only the node that last heard a notification. NULL until
-- known (mailboxes created before this migration learn it from their next
-- notification).
ALTER TABLE mailboxes ADD COLUMN address_sealed bytea;
