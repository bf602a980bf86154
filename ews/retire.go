package ews

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// DefaultCallbackMaxAge is how long a callback URL is honoured after it was
// issued. mailpush issues a new one at every sealed-mode subscription (each
// check-in with credentials, each resubscription), so a live mailbox renews
// its URL long before; one that reaches the limit is answered Unsubscribe,
// and the subscription engine resubscribes it with a fresh URL (or asks its
// devices to check in) once it has been silent for 2×StatusFrequency.
const DefaultCallbackMaxAge = 90 * 24 * time.Hour

// Key retirement and callback-URL expiry (issue 9, finding 7).
//
// A callback URL sealed with a retired key cannot be opened any more, so it
// cannot say which mailbox it is for: it is answered Unsubscribe and nothing
// else happens (a holder of some such URL, or anyone guessing a key ID, can
// trigger nothing with it). The mailboxes whose credentials this server
// holds in memory were sealed with a known key ID: RetireKeys marks those
// due, and the subscription engine resubscribes them with the current key
// at its next sweep. The others go silent once Exchange gets Unsubscribe,
// and the engine asks their devices to check in.

// answerRetired answers a notification to a URL sealed with a retired key.
func (s *Source) answerRetired(w http.ResponseWriter, r *http.Request, err error) bool {
	if !errors.Is(err, mailpush.ErrRetiredKey) {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(r.Body, MaxNotificationSize))
	s.Logger.Info("unsubscribing: callback URL sealed with a retired key", "err", mailpush.ErrorMessage(err))
	WriteResult(w, StatusUnsubscribe)
	return true
}

// expired reports whether a callback token is older than CallbackMaxAge.
func (s *Source) expired(tok mailpush.CallbackToken) bool {
	maxAge := s.CallbackMaxAge
	if maxAge == 0 {
		maxAge = DefaultCallbackMaxAge
	}
	return maxAge > 0 && s.Clock.Now().Sub(time.Unix(tok.IssuedAt, 0)) > maxAge
}

// RetireKeys marks due every mailbox whose credentials are in memory from a
// callback URL sealed with one of keyIDs, so that the subscription engine
// resubscribes it with the current key. It returns how many it marked.
func (s *Source) RetireKeys(ctx context.Context, keyIDs []string) (int, error) {
	st := s.init()
	var due []string
	st.creds.mu.Lock()
	for id, c := range st.creds.m {
		for _, k := range keyIDs {
			if c.keyID == k {
				due = append(due, id)
			}
		}
	}
	st.creds.mu.Unlock()
	n := 0
	for _, id := range due {
		_, err := s.Store.UpdateMailbox(ctx, id, func(m *mailpush.Mailbox) error {
			m.LastEventAt = time.Time{} // due at the engine's next sweep
			return nil
		})
		if mailpush.ErrorCode(err) == mailpush.ENotFound {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	if n > 0 {
		s.Logger.Info("mailboxes with callback URLs sealed with a retired key are due for resubscription", "mailboxes", n)
	}
	return n, nil
}

// keyIDOf is the key ID of a sealed callback token ("<keyId>.<…>").
func keyIDOf(sealed string) string {
	id, _, _ := strings.Cut(sealed, ".")
	return id
}
