-- The highest event sequence fanned out to each mailbox's devices (as the
-- sqlite store's 0006_fanned_seq): one write per event stands for every
-- device the event tier served; registrations.last_seq is raised only by
-- the device tier, and a device's last sequence is the higher of the two.
ALTER TABLE mailboxes ADD COLUMN fanned_seq bigint NOT NULL DEFAULT 0;
