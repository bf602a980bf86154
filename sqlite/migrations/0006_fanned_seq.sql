-- The highest event sequence fanned out to each mailbox's devices. A device
-- served by the event tier gets the mailbox's events in order, so this one
-- number per mailbox (raised once per event) stands for every such device's
-- last delivered sequence: the common case writes nothing per device.
-- registrations.last_seq is raised only by the device tier (retries, held
-- pushes); a device's last sequence is the higher of the two.
ALTER TABLE mailboxes ADD COLUMN fanned_seq INTEGER NOT NULL DEFAULT 0;
