package mailpush

import (
	"context"
	"strings"
)

// Directory reads a tenant's corporate directory (LDAP / Active Directory):
// package directory implements it; the S/MIME lookup and the managed app
// configuration use it through this interface.
//
// Lookup returns the one entry that the tenant's filter finds for value (an
// address or a user name). Its errors carry stable codes (ErrorCode):
// ENotFound when no entry matches, EConflict when several do, EInvalid when
// value cannot be looked up (NUL, not UTF-8, too long; nothing is sent),
// EUnavailable when the directory did not answer in time or refused — the
// "directory unavailable" condition, never a hang.
type Directory interface {
	Lookup(ctx context.Context, value string) (DirectoryEntry, error)
}

// DirectoryEntry is one directory entry: its DN and the attributes read,
// each a list of raw values (binary-safe: certificates come as DER).
type DirectoryEntry struct {
	DN         string
	Attributes map[string][][]byte // by the attribute name as the server returned it
}

// Values returns the values of attribute name, compared case-insensitively
// and with or without a ";binary" option: Values("userCertificate") finds
// "userCertificate;binary" too.
func (e DirectoryEntry) Values(name string) [][]byte {
	base := strings.TrimSuffix(strings.ToLower(name), ";binary")
	for k, v := range e.Attributes {
		if strings.TrimSuffix(strings.ToLower(k), ";binary") == base {
			return v
		}
	}
	return nil
}

// Value returns the first value of attribute name as a string, "" when the
// entry has none.
func (e DirectoryEntry) Value(name string) string {
	if v := e.Values(name); len(v) > 0 {
		return string(v[0])
	}
	return ""
}
