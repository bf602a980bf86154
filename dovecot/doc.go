// Package dovecot makes mailpush the push service of a Dovecot mail server.
// It serves PUT|POST /dovecot/notify, where Dovecot's push_notification
// plugin reports mailbox changes, and is the mailpush.Watcher for
// registrations with source "dovecot".
//
// Two Dovecot drivers post to the endpoint, both in the JSON of the OX
// driver (fields user, folder, event, imap-uidvalidity, imap-uid, from,
// subject, snippet, unseen):
//
//   - the OX driver (push_notification_driver = ox:url=…), built into
//     Debian's dovecot-core, on MessageNew: a delivery, not an IMAP APPEND.
//     Dovecot 2.3 sends the event name as "messageNew".
//   - the Lua script conf/mailpush.lua (push_notification_driver2 =
//     lua:file=…, Debian's dovecot-auth-lua) for everything else that moves
//     the INBOX unread count: MessageRead, FlagsSet, FlagsClear, MessageTrash,
//     MessageExpunge, MessageAppend. The OX driver reports only new mail, so
//     without it the badge would not follow reads made on another client.
//
// Both fire only for users whose METADATA key
// /private/vendor/vendor.dovecot/http-notify is set; "user" is that value's
// user=… part. conf/90-mailpush.conf is the Dovecot configuration to copy
// (docs/dovecot.md); the end-to-end test runs a real Dovecot with that very
// file.
//
// Service mode: mailpush holds no user credential. Each tenant configures a
// shared secret (HTTP basic auth, compared in constant time) and how the
// Dovecot user names the mailbox (the address itself, or a login to which a
// domain is appended). The address is only hashed with the service key and
// looked up by hash, as the store keeps no address.
//
// Answers: wrong or missing credentials get 401 and nothing is read; a body
// over MaxNotificationSize gets 413. A payload that is not JSON, has no
// user, names a user without registration, or a folder other than INBOX is
// accepted (202) and ignored: Dovecot would only retry it, and logging each
// would fill the log with every delivery of every user without a phone. A
// handled notification gets 204.
package dovecot
