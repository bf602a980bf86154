package mailpush

import "context"

// AppConfig is one user's managed app configuration: the tenant's template
// with its macros expanded from the directory. Keys are in a stable order;
// each Value is a string, bool, int64 or float64.
type AppConfig struct {
	User   string
	Values []AppConfigValue
}

// AppConfigValue is one key of an AppConfig.
type AppConfigValue struct {
	Key   string
	Value any
}

// AppConfigs expands a tenant's managed app configuration for a user named
// by userPrincipalName, sAMAccountName or mail. Its errors carry stable
// codes: ENotFound (no such user), EInvalid (a name that cannot be looked
// up), EUnsupported (the tenant has no app configuration, or a macro's
// attribute is missing and has no default), EConflict (the name matches
// several users), EUnavailable (the directory did not answer in time).
type AppConfigs interface {
	AppConfig(ctx context.Context, t *Tenant, user string) (AppConfig, error)
}
