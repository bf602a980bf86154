package ews

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/mailpush/mailpush"
)

// CallbackPath is where notifications arrive: CallbackPath + <sealed token>.
const CallbackPath = "/ews/notify/"

// Source watches Exchange Inboxes over EWS push subscriptions. It is the
// mailpush.Watcher for source "ews" and the http.Handler of the callback URLs.
//
// The callback URL's token is sealed by Sealer and names the tenant and the
// mailbox. In sealed mode it also carries the user's credentials and the EWS
// URL: they then exist only in that URL, which Exchange keeps, and in memory
// while a notification is handled, never in the database or a log.
type Source struct {
	Store  mailpush.Store
	Sealer mailpush.CallbackSealer
	Sink   mailpush.EventSink
	Client *Client
	// PublicURL is this service's base URL as Exchange reaches it.
	PublicURL string
	// StatusFrequency is the minutes between Exchange's status events.
	StatusFrequency int
	Logger          *slog.Logger
	Clock           mailpush.Clock
}

var _ mailpush.Watcher = (*Source)(nil)

// Watch sets up the Exchange side of a mailbox. Sealed mode subscribes now,
// with the credentials inside the callback URL. Device-subscribed mode only
// returns the callback URL for the app to subscribe with; the first
// notification binds the subscription.
func (s *Source) Watch(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, creds mailpush.Credentials) (mailpush.WatchResult, error) {
	tok := mailpush.CallbackToken{TenantID: mb.TenantID, MailboxID: mb.ID, IssuedAt: s.Clock.Now().Unix()}
	if mb.Mode == mailpush.ModeSealed {
		tok.ServerURL, tok.Credentials = mb.ServerURL, creds
	}
	sealed, err := s.Sealer.SealCallback(tok)
	if err != nil {
		return mailpush.WatchResult{}, mailpush.WrapError(mailpush.EInternal, "cannot seal the callback token", err)
	}
	callback := s.PublicURL + CallbackPath + sealed

	if mb.Mode == mailpush.ModeDeviceSubscribed {
		stored, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
			if m.Mode != mailpush.ModeDeviceSubscribed || m.Status == mailpush.StatusInactive {
				m.Mode, m.Status, m.SubscriptionID, m.Watermark = mailpush.ModeDeviceSubscribed, mailpush.StatusPending, "", ""
			}
			return nil
		})
		if err != nil {
			return mailpush.WatchResult{}, err
		}
		return mailpush.WatchResult{CallbackURL: callback, Status: stored.Status}, nil
	}

	// Sealed mode: forget the old subscription first, so that its next
	// notification is answered Unsubscribe, then subscribe anew.
	if _, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.Mode, m.ServerURL, m.Status, m.SubscriptionID = mailpush.ModeSealed, mb.ServerURL, mailpush.StatusPending, ""
		return nil
	}); err != nil {
		return mailpush.WatchResult{}, err
	}
	res, err := s.Client.Subscribe(ctx, Endpoint{URL: mb.ServerURL, Credentials: creds}, SubscribeRequest{
		Folder: "inbox", StatusFrequency: s.StatusFrequency, URL: callback,
	})
	if err != nil {
		s.Logger.Warn("subscribe failed", "mailbox", mb.ID, "err", err)
		return mailpush.WatchResult{}, subscribeError(err)
	}
	now := s.Clock.Now()
	if _, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.SubscriptionID, m.Watermark, m.Status, m.LastEventAt = res.SubscriptionID, res.Watermark, mailpush.StatusActive, now
		return nil
	}); err != nil {
		return mailpush.WatchResult{}, err
	}
	s.Logger.Info("subscribed", "mailbox", mb.ID, "mode", mb.Mode)
	return mailpush.WatchResult{Status: mailpush.StatusActive}, nil
}

func subscribeError(err error) error {
	switch {
	case errors.Is(err, ErrUnauthorized):
		return mailpush.WrapError(mailpush.ECredentials, "Exchange refused the sealed credentials", err)
	case mailpush.ErrorCode(err) == mailpush.EUnavailable:
		return mailpush.WrapError(mailpush.EUnavailable, "Exchange is busy or unavailable: try again later", err)
	}
	var re *ResponseError
	if errors.As(err, &re) {
		return mailpush.WrapError(mailpush.EUpstream, "Exchange refused the subscription: "+re.Code, err)
	}
	return mailpush.WrapError(mailpush.EUpstream, "Exchange could not be reached at the ewsUrl", err)
}

// ServeHTTP handles a SendNotification posted to a callback URL. Every
// refusal is a precise 4xx that changes nothing; a notification for a
// mailbox that is gone, or for a subscription that is no longer the
// mailbox's, is answered Unsubscribe, which ends it on Exchange.
func (s *Source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, err := s.Sealer.OpenCallback(r.PathValue("token"))
	if err != nil {
		s.Logger.Warn("notification refused: bad callback token", "err", mailpush.ErrorMessage(err))
		http.Error(w, mailpush.ErrorMessage(err), http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxNotificationSize))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			http.Error(w, "SendNotification exceeds 1 MiB", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	n, err := ParseSendNotification(body)
	if err != nil {
		s.Logger.Warn("notification refused: malformed SendNotification", "mailbox", tok.MailboxID, "err", err)
		http.Error(w, "malformed SendNotification: "+err.Error(), http.StatusBadRequest)
		return
	}
	status, err := s.handle(r.Context(), tok, n)
	if err != nil {
		// Exchange retries a failed delivery: nothing acknowledged is lost.
		s.Logger.Error("notification not handled; Exchange will retry", "mailbox", tok.MailboxID, "err", err)
		http.Error(w, "temporarily unable to handle the notification", http.StatusServiceUnavailable)
		return
	}
	WriteResult(w, status)
}

func (s *Source) handle(ctx context.Context, tok mailpush.CallbackToken, n *Notification) (SubscriptionStatus, error) {
	log := s.Logger.With("mailbox", tok.MailboxID)
	mb, err := s.Store.Mailbox(ctx, tok.MailboxID)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		log.Info("unsubscribing: mailbox is gone")
		return StatusUnsubscribe, nil
	}
	if err != nil {
		return "", err
	}
	if mb.TenantID != tok.TenantID {
		log.Warn("unsubscribing: callback token and mailbox belong to different tenants")
		return StatusUnsubscribe, nil
	}
	if mb.Status == mailpush.StatusInactive {
		log.Info("unsubscribing: mailbox has no registration left")
		return StatusUnsubscribe, nil
	}
	if mb.SubscriptionID != "" && mb.SubscriptionID != n.SubscriptionID {
		log.Info("unsubscribing: subscription replaced by a newer one")
		return StatusUnsubscribe, nil
	}
	if owner, err := s.Store.MailboxBySubscription(ctx, n.SubscriptionID); err == nil && owner.ID != mb.ID {
		log.Warn("unsubscribing: subscription ID belongs to another mailbox")
		return StatusUnsubscribe, nil
	}
	regs, err := s.Store.ActiveRegistrations(ctx, mb.ID)
	if err != nil {
		return "", err
	}
	if len(regs) == 0 {
		log.Info("unsubscribing: no active registration")
		return StatusUnsubscribe, nil
	}

	ev, changed := s.reduce(ctx, tok, mb, n, regs)
	bind := mb.SubscriptionID == "" && mb.Mode == mailpush.ModeDeviceSubscribed
	now := s.Clock.Now()
	updated, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		if bind {
			m.SubscriptionID, m.Status = n.SubscriptionID, mailpush.StatusActive
		}
		if wm := lastWatermark(n); wm != "" {
			m.Watermark = wm
		}
		m.LastEventAt = now
		if changed {
			m.Record(ev)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if bind {
		for _, reg := range regs {
			if reg.Status == mailpush.StatusPending {
				if _, err := s.Store.UpdateRegistration(ctx, reg.TenantID, reg.ID, func(r *mailpush.Registration) error {
					r.Status = mailpush.StatusActive
					return nil
				}); err != nil {
					return "", err
				}
			}
		}
		log.Info("device subscription bound")
	}
	if !changed {
		return StatusOK, nil
	}
	ev.Seq = updated.Seq
	if err := s.Sink.HandleEvent(ctx, ev); err != nil {
		return "", err
	}
	return StatusOK, nil
}

// reduce turns a notification into at most one Event: the latest unread
// count (from the Inbox's ModifiedEvent, or GetFolder in sealed mode) and, for
// new mail when some device may show it, the newest message's subject and
// sender from GetItem. changed is false for notifications with only status
// events.
func (s *Source) reduce(ctx context.Context, tok mailpush.CallbackToken, mb *mailpush.Mailbox, n *Notification, regs []*mailpush.Registration) (ev mailpush.Event, changed bool) {
	ev = mailpush.Event{TenantID: mb.TenantID, MailboxID: mb.ID, Kind: mailpush.EventChanged, Badge: mailpush.NoBadge, At: s.Clock.Now()}
	var newItems []string
	for _, e := range n.Events {
		switch e.Type {
		case StatusEvent, FreeBusyChangedEvent:
			continue
		case NewMailEvent:
			ev.Kind = mailpush.EventNewMail
			if e.ItemID != "" {
				newItems = append(newItems, e.ItemID)
			}
		case ModifiedEvent:
			if e.FolderID != "" && e.UnreadCount >= 0 {
				ev.Badge = e.UnreadCount
			}
		}
		changed = true
	}
	if !changed {
		return ev, false
	}
	sealed := mb.Mode == mailpush.ModeSealed && !tok.Credentials.Empty() && tok.ServerURL != ""
	ep := Endpoint{URL: tok.ServerURL, Credentials: tok.Credentials}
	if ev.Badge == mailpush.NoBadge && sealed {
		if unread, err := s.Client.GetInboxUnread(ctx, ep); err != nil {
			s.Logger.Warn("GetFolder failed: pushing a sync signal instead of a badge", "mailbox", mb.ID, "err", err)
		} else {
			ev.Badge = unread
		}
	}
	if len(newItems) > 0 && sealed && mailpush.WantsContent(regs) {
		items, err := s.Client.GetItems(ctx, ep, newItems[len(newItems)-1:])
		if err != nil {
			s.Logger.Warn("GetItem failed: pushing the badge without content", "mailbox", mb.ID, "err", err)
		} else if len(items) > 0 {
			ev.Subject = items[0].Subject
			ev.Sender = items[0].FromName
			if ev.Sender == "" {
				ev.Sender = items[0].FromAddress
			}
		}
	}
	return ev, true
}

func lastWatermark(n *Notification) string {
	for i := len(n.Events) - 1; i >= 0; i-- {
		if n.Events[i].Watermark != "" {
			return n.Events[i].Watermark
		}
	}
	return ""
}

var _ = time.Second
