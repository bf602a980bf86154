package fcm

import (
	"bytes"
	"testing"

	"github.com/mailpush/mailpush"
)

// TestSharedBodyIsBuild: the body spliced from the event's shared message is
// byte for byte what Build makes for the device, for every kind of push and
// for tokens that JSON would escape (those are built alone).
func TestSharedBodyIsBuild(t *testing.T) {
	pushes := []mailpush.Push{
		{Kind: mailpush.PushBadge, Badge: 3, Seq: 7, CollapseID: "mb-1"},
		{Kind: mailpush.PushSync, Badge: mailpush.NoBadge, Seq: 8, CollapseID: "sync-1"},
		{Kind: mailpush.PushAlert, Badge: 4, Seq: 9, Subject: "Quarterly <figures> & more", Sender: "Ann"},
	}
	tokens := []string{"dA1b:APA91bH-x_y", "second-device-token", `odd"token\`, ""}
	for _, base := range pushes {
		var shared mailpush.SharedPayload
		for _, tok := range tokens {
			p := base
			p.Device = mailpush.Device{Platform: mailpush.PlatformAndroid, Token: tok}
			p.Shared = &shared
			got, err := requestBody(&p)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Build(&p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s push to %q:\n got %s\nwant %s", p.Kind, tok, got, want)
			}
		}
	}
}
