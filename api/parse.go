package api

import "github.com/mailpush/mailpush"

// ParseDevice validates a device as POST /api/v1/registrations does, for
// bulk paths (mailpush registrations import) that must apply the same rules.
func ParseDevice(platform, token, environment string) (mailpush.Device, error) {
	return parseDevice(deviceJSON{Platform: platform, Token: token, Environment: environment})
}
