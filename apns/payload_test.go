package apns

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sideshow/apns2"

	"github.com/mailpush/mailpush"
)

func TestTruncate(t *testing.T) {
	tests := []struct {
		name string
		s    string
		max  int
		want string
	}{
		{"fits", "hello", 5, "hello"},
		{"fits with room", "hello", 10, "hello"},
		{"ascii", "hello world", 8, "hello…"},
		{"room for the ellipsis only", "hello", 3, "…"},
		{"no room for the ellipsis", "hello", 2, ""},
		{"zero", "hello", 0, ""},
		{"negative", "hello", -4, ""},
		{"empty", "", 0, ""},
		// "é" is 2 bytes: a cut inside it backs off to its start.
		{"two-byte rune whole", "café au lait", 8, "café…"}, // "café" is 5 bytes; 5+3 = 8
		{"two-byte rune split", "café au lait", 7, "caf…"},
		// "漢" is 3 bytes.
		{"three-byte runes", "漢字漢字漢字", 9, "漢字…"},
		{"three-byte runes split", "漢字漢字漢字", 11, "漢字…"},
		{"three-byte runes one more", "漢字漢字漢字", 12, "漢字漢…"},
		// "📬" is 4 bytes.
		{"four-byte rune", "📬📬📬", 10, "📬…"},
		{"four-byte rune split", "📬📬📬", 9, "📬…"},
		{"four-byte rune, room for none", "📬📬📬", 6, "…"},
		{"combining accent: cut on a rune, not a grapheme, boundary", "e\u0301e\u0301e\u0301", 7, "e\u0301e…"},
		{"invalid UTF-8 passes through", "ab\xffcdefgh", 7, "ab\xffc…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := truncate(tt.s, tt.max)
			if got != tt.want {
				t.Errorf("truncate(%q, %d) = %q, want %q", tt.s, tt.max, got, tt.want)
			}
			if len(got) > max(tt.max, 0) && got != tt.s {
				t.Errorf("truncate(%q, %d) is %d bytes", tt.s, tt.max, len(got))
			}
			if utf8.ValidString(tt.s) && !utf8.ValidString(got) {
				t.Errorf("truncate(%q, %d) = %q is not valid UTF-8", tt.s, tt.max, got)
			}
		})
	}
}

func TestBuildPayload(t *testing.T) {
	tests := []struct {
		name string
		push mailpush.Push
		want string
	}{
		{"badge", mailpush.Push{Kind: mailpush.PushBadge, Badge: 4, Seq: 12},
			`{"aps":{"badge":4},"mp":{"seq":12}}`},
		{"badge zero clears it", mailpush.Push{Kind: mailpush.PushBadge, Badge: 0, Seq: 1},
			`{"aps":{"badge":0},"mp":{"seq":1}}`},
		{"badge unknown", mailpush.Push{Kind: mailpush.PushBadge, Badge: mailpush.NoBadge, Seq: 2},
			`{"aps":{},"mp":{"seq":2}}`},
		{"sync ignores badge and content", mailpush.Push{Kind: mailpush.PushSync, Badge: 3, Subject: "s", Sender: "f", Seq: 3},
			`{"aps":{"content-available":1},"mp":{"seq":3}}`},
		{"alert", mailpush.Push{Kind: mailpush.PushAlert, Badge: 1, Subject: "Lunch?", Sender: "Ann", Seq: 4},
			`{"aps":{"alert":{"title":"Ann","body":"Lunch?"},"badge":1,"sound":"default"},"mp":{"seq":4}}`},
		{"alert subject only, no badge", mailpush.Push{Kind: mailpush.PushAlert, Badge: mailpush.NoBadge, Subject: "Lunch?", Seq: 5},
			`{"aps":{"alert":{"body":"Lunch?"},"sound":"default"},"mp":{"seq":5}}`},
		{"alert without content", mailpush.Push{Kind: mailpush.PushAlert, Badge: 2, Seq: 6},
			`{"aps":{"alert":{"body":"New mail"},"badge":2,"sound":"default"},"mp":{"seq":6}}`},
		{"alert escapes HTML", mailpush.Push{Kind: mailpush.PushAlert, Badge: mailpush.NoBadge, Subject: "<b>&</b>", Seq: 7},
			`{"aps":{"alert":{"body":"\u003cb\u003e\u0026\u003c/b\u003e"},"sound":"default"},"mp":{"seq":7}}`},
		{"sealed", mailpush.Push{Kind: mailpush.PushAlert, Badge: 3, Sealed: "Y2lwaGVy", Seq: 8},
			`{"aps":{"alert":{"title":"New mail","body":"New mail"},"badge":3,"sound":"default","mutable-content":1},"mp":{"seq":8,"enc":"Y2lwaGVy"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := buildPayload(&tt.push)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestBuildPayloadErrors(t *testing.T) {
	if _, err := buildPayload(&mailpush.Push{Kind: "shout"}); err == nil {
		t.Error("unknown kind: no error")
	}
	huge := &mailpush.Push{Kind: mailpush.PushAlert, Sealed: strings.Repeat("A", MaxPayload)}
	if _, err := buildPayload(huge); !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("oversized sealed content: err = %v, want ErrPayloadTooLarge", err)
	}
}

func TestBuildPayloadFits(t *testing.T) {
	tests := []struct {
		name            string
		subject, sender string
		subjectCut      bool
		senderCut       bool
	}{
		{"short", "Lunch?", "Ann", false, false},
		{"long ASCII subject", strings.Repeat("a", 5000), "Ann", true, false},
		{"long two-byte subject", strings.Repeat("é", 3000), "Ann", true, false},
		{"long three-byte subject", strings.Repeat("漢", 2000), "Ann", true, false},
		{"long emoji subject", strings.Repeat("📬", 1500), "Ann", true, false},
		{"subject that escapes to 6 bytes a byte", strings.Repeat("<&>", 2000), "Ann", true, false},
		{"subject with control characters", strings.Repeat("\x01\"\\", 2000), "Ann", true, false},
		{"subject with line separators", strings.Repeat("\u2028", 2000), "Ann", true, false},
		{"both long: subject goes first", strings.Repeat("s", 5000), strings.Repeat("f", 5000), true, true},
		{"long sender, no subject", "", strings.Repeat("ü", 3000), false, true},
		{"subject just over", strings.Repeat("x", MaxPayload-len(`{"aps":{"alert":{"title":"Ann","body":""},"badge":1,"sound":"default"},"mp":{"seq":1}}`)+1), "Ann", true, false},
		{"subject just fits", strings.Repeat("x", MaxPayload-len(`{"aps":{"alert":{"title":"Ann","body":""},"badge":1,"sound":"default"},"mp":{"seq":1}}`)), "Ann", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &mailpush.Push{Kind: mailpush.PushAlert, Badge: 1, Subject: tt.subject, Sender: tt.sender, Seq: 1}
			b, err := buildPayload(p)
			if err != nil {
				t.Fatal(err)
			}
			checkFits(t, b)
			var got payload
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			checkCut(t, "subject", tt.subject, got.APS.Alert.Body, tt.subjectCut)
			checkCut(t, "sender", tt.sender, got.APS.Alert.Title, tt.senderCut)
			if tt.subjectCut && !tt.senderCut && MaxPayload-len(b) > 6 {
				// Only the escaping of the last rune may be left over.
				t.Errorf("payload is %d bytes: the subject was cut more than needed", len(b))
			}
		})
	}
}

// checkFits checks that b stays within the limit after apns2 encodes it.
func checkFits(t *testing.T, b []byte) {
	t.Helper()
	sent, err := json.Marshal(&apns2.Notification{Payload: b})
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) > MaxPayload {
		t.Errorf("payload is %d bytes as sent, over %d", len(sent), MaxPayload)
	}
	if string(sent) != string(b) {
		t.Errorf("apns2 re-encoded the payload: %d bytes became %d", len(b), len(sent))
	}
}

func checkCut(t *testing.T, field, orig, got string, cut bool) {
	t.Helper()
	if !cut {
		if got != orig {
			t.Errorf("%s changed: %d bytes became %d", field, len(orig), len(got))
		}
		return
	}
	if !utf8.ValidString(got) {
		t.Errorf("%s %q is not valid UTF-8", field, got)
	}
	if got != "" && (!strings.HasSuffix(got, ellipsis) || !strings.HasPrefix(orig, strings.TrimSuffix(got, ellipsis))) {
		t.Errorf("%s %q is not a prefix of the original followed by %q", field, got, ellipsis)
	}
	if len(got) >= len(orig) {
		t.Errorf("%s was not shortened", field)
	}
}

func FuzzBuildPayload(f *testing.F) {
	f.Add("Lunch?", "Ann", 3)
	f.Add(strings.Repeat("漢<", 1500), strings.Repeat("ü", 2100), -1)
	f.Add(strings.Repeat("\xff", 5000), "\u2028", 0)
	f.Fuzz(func(t *testing.T, subject, sender string, badge int) {
		p := &mailpush.Push{Kind: mailpush.PushAlert, Badge: badge, Subject: subject, Sender: sender, Seq: 1}
		b, err := buildPayload(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > MaxPayload || !json.Valid(b) {
			t.Fatalf("payload of %d bytes, valid JSON %v", len(b), json.Valid(b))
		}
		sent, err := json.Marshal(&apns2.Notification{Payload: b})
		if err != nil || len(sent) > MaxPayload {
			t.Fatalf("as sent: %d bytes, err %v", len(sent), err)
		}
	})
}
