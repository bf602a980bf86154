-- A mailbox's audience (MailboxAudience: its active and pending
-- registrations, and how many of them may show content) is read before
-- every notification is acknowledged and on every registration (the
-- per-mailbox quota). Counting the registrations read each row for its
-- status and content: about 9 µs per device, so 9 ms on the
-- acknowledgement of a mailbox with 1,000 devices (docs/PERFORMANCE.md).
-- Triggers keep both counts on the mailbox row instead, exact whatever path
-- inserts, deletes or changes a registration; reading them costs the same
-- for one device as for a thousand.
ALTER TABLE mailboxes ADD COLUMN live_registrations INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN content_registrations INTEGER NOT NULL DEFAULT 0;
UPDATE mailboxes SET
	live_registrations = (SELECT count(*) FROM registrations r
		WHERE r.mailbox_id = mailboxes.id AND r.status IN ('active', 'pending')),
	content_registrations = (SELECT count(*) FROM registrations r
		WHERE r.mailbox_id = mailboxes.id AND r.status IN ('active', 'pending') AND r.content IN ('subject', 'subject_sender'));

CREATE TRIGGER registrations_audience_insert AFTER INSERT ON registrations
	WHEN NEW.status IN ('active', 'pending')
BEGIN
	UPDATE mailboxes SET live_registrations = live_registrations + 1,
		content_registrations = content_registrations + (NEW.content IN ('subject', 'subject_sender'))
	WHERE id = NEW.mailbox_id;
END;

CREATE TRIGGER registrations_audience_delete AFTER DELETE ON registrations
	WHEN OLD.status IN ('active', 'pending')
BEGIN
	UPDATE mailboxes SET live_registrations = live_registrations - 1,
		content_registrations = content_registrations - (OLD.content IN ('subject', 'subject_sender'))
	WHERE id = OLD.mailbox_id;
END;

CREATE TRIGGER registrations_audience_update AFTER UPDATE OF status, content, mailbox_id ON registrations
	WHEN OLD.status IS NOT NEW.status OR OLD.content IS NOT NEW.content OR OLD.mailbox_id IS NOT NEW.mailbox_id
BEGIN
	UPDATE mailboxes SET live_registrations = live_registrations - 1,
		content_registrations = content_registrations - (OLD.content IN ('subject', 'subject_sender'))
	WHERE id = OLD.mailbox_id AND OLD.status IN ('active', 'pending');
	UPDATE mailboxes SET live_registrations = live_registrations + 1,
		content_registrations = content_registrations + (NEW.content IN ('subject', 'subject_sender'))
	WHERE id = NEW.mailbox_id AND NEW.status IN ('active', 'pending');
END;
