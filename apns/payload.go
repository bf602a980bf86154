package apns

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/mailpush/mailpush"
)

// MaxPayload is APNs' limit on a payload, in bytes.
const MaxPayload = 4096

// ellipsis ends a shortened subject or sender.
const ellipsis = "…"

// What a sealed alert shows until the app's notification service extension
// replaces it with the decrypted subject and sender, or when it cannot.
const (
	genericTitle = "New mail"
	genericBody  = "New mail"
)

// ErrPayloadTooLarge means a push cannot be made to fit in MaxPayload bytes,
// e.g. because its sealed content alone is too large.
var ErrPayloadTooLarge = errors.New("apns: payload over 4096 bytes")

type payload struct {
	APS aps `json:"aps"`
	MP  mp  `json:"mp"`
}

type aps struct {
	Alert            *alert `json:"alert,omitempty"`
	Badge            *int   `json:"badge,omitempty"`
	Sound            string `json:"sound,omitempty"`
	ContentAvailable int    `json:"content-available,omitempty"`
	MutableContent   int    `json:"mutable-content,omitempty"`
}

type alert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

// mp is mailpush's own part of the payload, read by the app.
type mp struct {
	Seq int64  `json:"seq"`
	Enc string `json:"enc,omitempty"` // alert content sealed to the device's key
}

// buildPayload returns the JSON payload for p, shortening the subject, then
// the sender, so that it fits in MaxPayload bytes.
//
// The payload is encoded with json.Marshal's HTML escaping (<, > and & as
// \u003c...): the size measured is the size sent, whichever JSON encoder a
// later version of the client might run it through.
func buildPayload(p *mailpush.Push) ([]byte, error) {
	var badge *int
	if p.Badge >= 0 { // NoBadge, or any negative value, leaves the badge as it is
		b := p.Badge
		badge = &b
	}
	v := payload{MP: mp{Seq: p.Seq}}
	switch {
	case p.Kind == mailpush.PushSync:
		v.APS.ContentAvailable = 1
	case p.Kind == mailpush.PushBadge:
		v.APS.Badge = badge
	case p.Kind == mailpush.PushAlert && p.Sealed != "":
		v.APS.Alert = &alert{Title: genericTitle, Body: genericBody}
		v.APS.Badge = badge
		v.APS.Sound = "default"
		v.APS.MutableContent = 1
		v.MP.Enc = p.Sealed
	case p.Kind == mailpush.PushAlert:
		v.APS.Alert = &alert{Title: p.Sender, Body: p.Subject}
		if p.Sender == "" && p.Subject == "" {
			v.APS.Alert.Body = genericBody
		}
		v.APS.Badge = badge
		v.APS.Sound = "default"
		return fitAlert(&v)
	default:
		return nil, fmt.Errorf("apns: unknown push kind %q", p.Kind)
	}
	b, err := json.Marshal(&v)
	if err != nil {
		return nil, fmt.Errorf("apns: encode payload: %w", err)
	}
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(b))
	}
	return b, nil
}

// fitAlert encodes v, shortening v.APS.Alert's body (the subject) and then
// its title (the sender) as little as needed for the payload to fit in
// MaxPayload bytes.
func fitAlert(v *payload) ([]byte, error) {
	fits := func() bool {
		b, err := json.Marshal(v)
		return err == nil && len(b) <= MaxPayload
	}
	a := v.APS.Alert
	for _, field := range []*string{&a.Body, &a.Title} {
		if fits() {
			break
		}
		orig := *field
		*field = ""
		if !fits() {
			continue // not enough even without it: cut the next one too
		}
		*field = longestFit(orig, func(s string) bool {
			*field = s
			return fits()
		})
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("apns: encode payload: %w", err)
	}
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes without subject and sender", ErrPayloadTooLarge, len(b))
	}
	return b, nil
}

// longestFit returns the longest truncation of s (see truncate) that fits
// reports true for. fits("") must be true.
//
// JSON escaping makes a rune take 1 to 6 bytes in the payload, so the cut
// point is searched for rather than computed: truncate(s, n) grows with n,
// and a few encodings of a 4 KB payload cost microseconds.
func longestFit(s string, fits func(string) bool) string {
	// Escaping never shrinks text: more than MaxPayload bytes never fit.
	s = truncate(s, MaxPayload)
	if fits(s) {
		return s
	}
	lo, hi := 0, len(s) // truncate(s, lo) fits; truncate(s, hi) does not
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if fits(truncate(s, mid)) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return truncate(s, lo)
}

// truncate returns s if it is at most max bytes long. Otherwise it returns
// the longest prefix of s that ends on a rune boundary and, followed by "…",
// is at most max bytes; or "" when max leaves no room for the ellipsis.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	n := max - len(ellipsis)
	if n < 0 {
		return ""
	}
	// Back off to the start of the rune that straddles n, if any.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + ellipsis
}
