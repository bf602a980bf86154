package registrar

import (
	"context"

	"github.com/mailpush/mailpush"
)

var _ mailpush.RegistrationRules = (*Service)(nil)

// Admit decides what a mail server's notification may change. A
// notification changes nothing and is answered Unsubscribe when its mailbox
// is gone or has no registration, when the callback token and the mailbox
// belong to different tenants, when its subscription is bound to another
// mailbox, or when it is not the mailbox's subscription. Only a pending
// device-subscribed registration alone in its mailbox may bind a newer
// subscription (its app subscribed again): nothing it sends may replace the
// subscription that another registration proved.
func (s *Service) Admit(ctx context.Context, tok mailpush.CallbackToken, subscriptionID string) (mailpush.Admission, error) {
	log := s.Logger.With("mailbox", tok.MailboxID)
	no := mailpush.Admission{Unsubscribe: true}
	mb, err := s.Store.Mailbox(ctx, tok.MailboxID)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		log.Info("unsubscribing: mailbox is gone")
		return no, nil
	}
	if err != nil {
		return no, err
	}
	if mb.TenantID != tok.TenantID {
		log.Warn("unsubscribing: callback token and mailbox belong to different tenants")
		return no, nil
	}
	if mb.Status == mailpush.StatusInactive {
		log.Info("unsubscribing: mailbox has no registration left")
		return no, nil
	}
	if owner, err := s.Store.MailboxBySubscription(ctx, subscriptionID); err == nil && owner.ID != mb.ID {
		if owner.TenantID != mb.TenantID {
			log.Warn("notification ignored: its subscription ID belongs to another tenant's mailbox; answering Unsubscribe, nothing changed")
		} else {
			log.Warn("notification ignored: its subscription ID belongs to another mailbox; answering Unsubscribe, nothing changed")
		}
		return no, nil
	} else if err != nil && mailpush.ErrorCode(err) != mailpush.ENotFound {
		return no, err
	}
	// A device-subscribed URL names its registration: it must still exist.
	var tokReg *mailpush.Registration
	if tok.RegistrationID != "" {
		tokReg, err = s.Store.Registration(ctx, tok.TenantID, tok.RegistrationID)
		if mailpush.ErrorCode(err) == mailpush.ENotFound || err == nil && tokReg.MailboxID != mb.ID {
			log.Info("unsubscribing: the registration this callback URL was made for is gone")
			return no, nil
		}
		if err != nil {
			return no, err
		}
	}
	// The webhook's path counts the registrations without loading them (a
	// mailbox may have thousands of devices); the list is read only when a
	// device-subscribed registration's newer subscription asks to rebind.
	aud, err := s.Store.MailboxAudience(ctx, mb.ID)
	if err != nil {
		return no, err
	}
	// Pending registrations count: a registration that went pending (its
	// devices were asked to check in) subscribes anew at its check-in, and
	// that subscription's first notification may arrive before Subscribe
	// returns and the registration is active again. Answered Unsubscribe,
	// it would end the very subscription the check-in is making (the
	// mailbox, unbound meanwhile, binds nothing from it: see bind below).
	// cmd/mailpush's TestEarlyNotificationOfANewSubscription guards this.
	if aud.Registrations == 0 {
		log.Info("unsubscribing: no active or pending registration")
		return no, nil
	}
	rebind := false
	if mb.SubscriptionID != "" && mb.SubscriptionID != subscriptionID {
		replaced := tokReg == nil || tokReg.Status != mailpush.StatusPending || mb.Mode != mailpush.ModeDeviceSubscribed
		if !replaced {
			if replaced, err = s.othersActive(ctx, mb.ID, tokReg); err != nil {
				return no, err
			}
		}
		if replaced {
			log.Info("unsubscribing: subscription replaced by a newer one")
			return no, nil
		}
		rebind = true
	}
	// In device-subscribed mode an unbound mailbox takes the first
	// subscription that reaches its registration's callback URL (only the
	// app knows its ID). In sealed and service mode mailpush learns the ID
	// from Subscribe; a notification that arrives while the mailbox is
	// unbound binds nothing, or an old subscription could win the race
	// against the new one and take the mailbox back.
	bind := tokReg != nil && (mb.SubscriptionID == "" && mb.Mode == mailpush.ModeDeviceSubscribed || rebind)
	return mailpush.Admission{Mailbox: mb, Registration: tokReg, Bind: bind}, nil
}

// othersActive reports whether a registration other than reg is active:
// then a newer subscription through reg's URL may not replace the one the
// others get their pushes from. (A device-subscribed registration has a
// mailbox of its own; older data may still share one.)
func (s *Service) othersActive(ctx context.Context, mailboxID string, reg *mailpush.Registration) (bool, error) {
	regs, err := s.Store.ActiveRegistrations(ctx, mailboxID)
	if err != nil {
		return false, err
	}
	for _, r := range regs {
		if r.ID != reg.ID && r.Status == mailpush.StatusActive {
			return true, nil
		}
	}
	return false, nil
}

// Activate makes a pending registration active.
func (s *Service) Activate(ctx context.Context, reg *mailpush.Registration) error {
	return s.setStatus(ctx, []*mailpush.Registration{reg}, mailpush.StatusPending, mailpush.StatusActive)
}

// Suspend makes a mailbox's active registrations pending until their
// devices check in.
func (s *Service) Suspend(ctx context.Context, mailboxID string) error {
	regs, err := s.Store.ActiveRegistrations(ctx, mailboxID)
	if err != nil {
		return err
	}
	return s.setStatus(ctx, regs, mailpush.StatusActive, mailpush.StatusPending)
}

func (s *Service) setStatus(ctx context.Context, regs []*mailpush.Registration, from, to mailpush.Status) error {
	for _, reg := range regs {
		if reg.Status != from {
			continue
		}
		if _, err := s.Store.UpdateRegistration(ctx, reg.TenantID, reg.ID, func(r *mailpush.Registration) error {
			if r.Status == from {
				r.Status = to
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
