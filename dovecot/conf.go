package dovecot

import _ "embed"

// ConfigSnippet is the Dovecot configuration to add for mailpush
// (conf/90-mailpush.conf): docs/dovecot.md shows it and the end-to-end test
// runs Dovecot with it, so that the two cannot drift. Its placeholders are
// push.example.com, CHANGE-ME and /etc/dovecot/mailpush.lua.
//
//go:embed conf/90-mailpush.conf
var ConfigSnippet string

// LuaScript is the push_notification Lua driver script (conf/mailpush.lua)
// that reports reads, deletes and flag changes.
//
//go:embed conf/mailpush.lua
var LuaScript string
