// Package appconfig builds managed app configuration: per tenant, a
// template of the keys a mail app needs (push service URL, app token, push
// enabled, EWS / Graph / ActiveSync URLs, the user's identity, values in the
// style of SEND_LDAP_ATTRIBUTES) whose values hold macros such as
// ${user.userPrincipalName}, expanded per user from the tenant's directory.
// The API serves the result to the MDM as JSON, an Apple managed app
// configuration plist, or a CSV/JSON export.
//
// The macro syntax is the one of the MDM seed: ${user.attr}, spaces
// tolerated inside the braces, attribute names case-insensitive, and a
// default after ":-" (${user.mobile:-none}). Templates are parsed when the
// configuration loads, so a macro that names no known attribute or
// variable stops the start with the key named — never a half-expanded
// value on a device.
//
// The directory is reached only through mailpush.Directory (the package
// directory implements it, with its escaping, pool, timeouts and cache), so
// a user name is never put into an LDAP filter here.
package appconfig

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/mailpush/mailpush"
)

// MaxUserLen caps the user name looked up.
const MaxUserLen = 256

// Tenant is one tenant's app configuration: its template and the directory
// that finds its users (by userPrincipalName, sAMAccountName or mail, as
// the tenant's filter says).
type Tenant struct {
	Template  *Template
	Directory mailpush.Directory
}

// Service implements mailpush.AppConfigs for the configured tenants.
type Service struct {
	Tenants map[string]Tenant // by tenant name
}

var _ mailpush.AppConfigs = (*Service)(nil)

// AppConfig expands t's template for user.
func (s *Service) AppConfig(ctx context.Context, t *mailpush.Tenant, user string) (mailpush.AppConfig, error) {
	tc, ok := s.Tenants[t.Name]
	if !ok {
		return mailpush.AppConfig{}, mailpush.Errorf(mailpush.EUnsupported, "tenant %s has no app configuration: set tenants.%s.appConfig and tenants.%s.directory", t.Name, t.Name, t.Name)
	}
	if user == "" || len(user) > MaxUserLen || !utf8.ValidString(user) || strings.ContainsAny(user, "\x00\r\n") {
		return mailpush.AppConfig{}, mailpush.Errorf(mailpush.EInvalid, "the user must be a userPrincipalName, sAMAccountName or mail address of 1 to %d characters", MaxUserLen)
	}
	entry, err := tc.Directory.Lookup(ctx, user)
	if err != nil {
		switch mailpush.ErrorCode(err) {
		case mailpush.ENotFound:
			return mailpush.AppConfig{}, mailpush.WrapError(mailpush.ENotFound, "no such user in the tenant's directory", err)
		case mailpush.EConflict:
			return mailpush.AppConfig{}, mailpush.WrapError(mailpush.EConflict, "the name matches more than one user in the directory: use the userPrincipalName", err)
		case mailpush.EUnavailable:
			return mailpush.AppConfig{}, mailpush.WrapError(mailpush.EUnavailable, "directory unavailable: "+unavailableReason(err)+"; retry later", err)
		}
		return mailpush.AppConfig{}, err
	}
	values, err := tc.Template.Expand(func(name string) (string, bool) {
		v := entry.Values(name)
		if len(v) == 0 {
			return "", false
		}
		return string(v[0]), true
	})
	if err != nil {
		var missing *MissingError
		if errors.As(err, &missing) {
			return mailpush.AppConfig{}, mailpush.WrapError(mailpush.EUnsupported, missing.Error(), err)
		}
		return mailpush.AppConfig{}, mailpush.WrapError(mailpush.EUnsupported, err.Error(), err)
	}
	out := mailpush.AppConfig{User: user, Values: make([]mailpush.AppConfigValue, len(values))}
	for i, v := range values {
		out.Values[i] = mailpush.AppConfigValue{Key: v.Key, Value: v.Value}
	}
	return out, nil
}

// unavailableReason says, without internals, why the directory failed.
func unavailableReason(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "it did not answer in time"
	}
	if errors.Is(err, context.Canceled) {
		return "the request was cancelled"
	}
	return "it refused the connection, the bind or the search"
}
