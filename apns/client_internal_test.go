package apns

import (
	"strings"
	"testing"
	"time"

	"github.com/sideshow/apns2/token"

	"github.com/mailpush/mailpush"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		status int
		reason string
		want   mailpush.PushOutcome
	}{
		{200, "", mailpush.PushDelivered},
		{410, "Unregistered", mailpush.PushDropToken},
		{410, "ExpiredToken", mailpush.PushDropToken},
		{400, "BadDeviceToken", mailpush.PushDropToken},
		{400, "DeviceTokenNotForTopic", mailpush.PushDropToken},
		{400, "BadCollapseId", mailpush.PushFailed},
		{400, "TopicDisallowed", mailpush.PushFailed},
		{400, "", mailpush.PushFailed},
		{403, "InvalidProviderToken", mailpush.PushFailed},
		{403, "ExpiredProviderToken", mailpush.PushRetry},
		{404, "BadPath", mailpush.PushFailed},
		{405, "MethodNotAllowed", mailpush.PushFailed},
		{413, "PayloadTooLarge", mailpush.PushFailed},
		{429, "TooManyRequests", mailpush.PushRetry},
		{429, "TooManyProviderTokenUpdates", mailpush.PushRetry},
		{500, "InternalServerError", mailpush.PushRetry},
		{502, "", mailpush.PushRetry},
		{503, "ServiceUnavailable", mailpush.PushRetry},
		{503, "Shutdown", mailpush.PushRetry},
	}
	for _, tt := range tests {
		if got := classify(tt.status, tt.reason); got != tt.want {
			t.Errorf("classify(%d, %q) = %v, want %v", tt.status, tt.reason, got, tt.want)
		}
	}
}

func TestCollapseID(t *testing.T) {
	short := strings.Repeat("m", 64)
	if got := collapseID(short); got != short {
		t.Errorf("64-byte ID changed to %q", got)
	}
	long1, long2 := strings.Repeat("m", 64)+"1", strings.Repeat("m", 64)+"2"
	h1, h2 := collapseID(long1), collapseID(long2)
	if len(h1) != 64 || h1 == h2 || h1 != collapseID(long1) {
		t.Errorf("long IDs gave %q and %q: want distinct, stable, 64 bytes", h1, h2)
	}
}

func TestIsUUID(t *testing.T) {
	for s, want := range map[string]bool{
		"123e4567-e89b-12d3-a456-426614174000": true,
		"123E4567-E89B-12D3-A456-426614174000": true,
		"123e4567e89b12d3a456426614174000":     false,
		"123e4567-e89b-12d3-a456-42661417400g": false,
		"":                                     false,
	} {
		if got := isUUID(s); got != want {
			t.Errorf("isUUID(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestExpireToken(t *testing.T) {
	now := time.Now() // token.Token.Expired reads the real clock
	tests := []struct {
		age  time.Duration
		want bool
	}{
		{5 * time.Minute, false},
		{minTokenAge - time.Second, false},
		{minTokenAge, true},
		{45 * time.Minute, true},
	}
	for _, tt := range tests {
		tok := &token.Token{IssuedAt: now.Add(-tt.age).Unix()}
		got := expireToken(tok, now)
		if got != tt.want || tok.Expired() != tt.want {
			t.Errorf("token of age %v: expireToken = %v, Expired() = %v; want %v", tt.age, got, tok.Expired(), tt.want)
		}
	}
}
