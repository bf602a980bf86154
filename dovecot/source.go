package dovecot

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/mailpush/mailpush"
)

// NotifyPath is where Dovecot posts (PUT or POST).
const NotifyPath = "/dovecot/notify"

// UserMapping says how a Dovecot user names a mailbox address.
type UserMapping string

const (
	// MapAddress: the user is the address (Domain is appended when it has no "@").
	MapAddress UserMapping = "address"
	// MapLogin: the user is a login; the address is login@Domain.
	MapLogin UserMapping = "login"
)

// Tenant is one tenant's Dovecot: the shared secret its Dovecot sends and
// how its users map to addresses.
type Tenant struct {
	Name        string // the mailpush tenant's name
	Username    string
	Password    string
	UserMapping UserMapping
	Domain      string
	// IMAP is where a user's own password is checked (VerifyCredentials);
	// empty Address: service mode needs the tenant's backend token.
	IMAP IMAP
}

// Address turns a Dovecot user into the mailbox address, or "" when the user
// cannot name one.
func (t *Tenant) Address(user string) string {
	user = strings.TrimSpace(user)
	if user == "" || len(user) > 320 {
		return ""
	}
	switch {
	case t.UserMapping == MapLogin && !strings.Contains(user, "@") && t.Domain != "":
		return user + "@" + t.Domain
	case t.UserMapping == MapLogin:
		return ""
	case strings.Contains(user, "@"):
		return user
	case t.Domain != "":
		return user + "@" + t.Domain
	}
	return ""
}

// Config is what a Source needs.
type Config struct {
	Store   mailpush.Store
	Hasher  mailpush.AddressHasher
	Sink    mailpush.EventSink
	Tenants []Tenant
	Logger  *slog.Logger
	Clock   mailpush.Clock
}

// Source is the Dovecot source: the mailpush.Watcher for source "dovecot"
// and the http.Handler of NotifyPath.
type Source struct {
	cfg     Config
	tenants []tenantSecret
}

type tenantSecret struct {
	Tenant
	user, pass [sha256.Size]byte // hashed so that comparisons take the same time for any length
}

var _ mailpush.Watcher = (*Source)(nil)

// New checks the tenants' settings and returns a Source.
func New(cfg Config) (*Source, error) {
	s := &Source{cfg: cfg}
	users := map[string]bool{}
	for _, t := range cfg.Tenants {
		switch {
		case t.Name == "":
			return nil, errors.New("dovecot: a tenant without a name")
		case t.Username == "" || t.Password == "":
			return nil, fmt.Errorf("dovecot: tenant %s: username and password are required", t.Name)
		case strings.Contains(t.Username, ":"):
			return nil, fmt.Errorf("dovecot: tenant %s: username must not contain ':' (HTTP basic auth)", t.Name)
		case users[t.Username]:
			return nil, fmt.Errorf("dovecot: tenant %s: username %q is used by another tenant", t.Name, t.Username)
		case t.UserMapping != MapAddress && t.UserMapping != MapLogin:
			return nil, fmt.Errorf("dovecot: tenant %s: userMapping must be address or login, not %q", t.Name, t.UserMapping)
		case t.UserMapping == MapLogin && t.Domain == "":
			return nil, fmt.Errorf("dovecot: tenant %s: userMapping login needs a domain", t.Name)
		case t.IMAP.TLS != "" && t.IMAP.TLS != "tls" && t.IMAP.TLS != "starttls" && t.IMAP.TLS != "none":
			return nil, fmt.Errorf("dovecot: tenant %s: imap tls must be tls, starttls or none, not %q", t.Name, t.IMAP.TLS)
		}
		users[t.Username] = true
		s.tenants = append(s.tenants, tenantSecret{Tenant: t, user: sha256.Sum256([]byte(t.Username)), pass: sha256.Sum256([]byte(t.Password))})
	}
	return s, nil
}

func (s *Source) tenantNamed(name string) *tenantSecret {
	for i := range s.tenants {
		if s.tenants[i].Name == name {
			return &s.tenants[i]
		}
	}
	return nil
}

// authenticate returns the tenant whose secret the request carries. Every
// configured secret is compared, in constant time, whatever matches.
func (s *Source) authenticate(r *http.Request) *tenantSecret {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return nil
	}
	u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	var found *tenantSecret
	for i := range s.tenants {
		t := &s.tenants[i]
		if subtle.ConstantTimeCompare(u[:], t.user[:])&subtle.ConstantTimeCompare(p[:], t.pass[:]) == 1 {
			found = t
		}
	}
	return found
}

// Watch makes a mailbox watched in service mode: Dovecot reports every user
// whose push METADATA is set, so nothing is subscribed; the tenant only needs
// a Dovecot configuration. Dovecot needs no user credential.
func (s *Source) Watch(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, reg *mailpush.Registration, creds mailpush.Credentials) (mailpush.WatchResult, error) {
	res, err := s.Admit(ctx, t, mb, creds)
	if err != nil {
		return res, err
	}
	if _, err := s.cfg.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.Mode, m.Status = mailpush.ModeService, res.Status
		return nil
	}); err != nil {
		return mailpush.WatchResult{}, err
	}
	return res, nil
}

// Admit is Watch's decision without its write (mailpush.Admitter): a
// mailbox of a tenant with a Dovecot configuration is watched in service
// mode from the start, as nothing needs to be asked of Dovecot.
func (s *Source) Admit(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, creds mailpush.Credentials) (mailpush.WatchResult, error) {
	if !creds.Empty() {
		return mailpush.WatchResult{}, mailpush.Errorf(mailpush.EInvalid, "source dovecot takes no user credentials: mailpush uses the tenant's Dovecot shared secret")
	}
	if s.tenantNamed(t.Name) == nil {
		return mailpush.WatchResult{}, mailpush.Errorf(mailpush.EUnsupported, "tenant %q has no Dovecot configuration on this server (tenants.%s.dovecot)", t.Name, t.Name)
	}
	return mailpush.WatchResult{Status: mailpush.StatusActive, Mode: mailpush.ModeService}, nil
}

// ServeHTTP handles one notification from Dovecot.
func (s *Source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := s.authenticate(r)
	if t == nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="mailpush dovecot", charset="UTF-8"`)
		http.Error(w, "wrong or missing basic-auth credentials: use the tenant's tenants.<name>.dovecot username and password", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxNotificationSize))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			http.Error(w, fmt.Sprintf("notification exceeds %d bytes", MaxNotificationSize), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	ignored, err := s.handle(r.Context(), t, body)
	switch {
	case err != nil:
		s.cfg.Logger.Error("dovecot notification not handled", "tenant", t.Name, "err", err)
		http.Error(w, "temporarily unable to handle the notification", http.StatusServiceUnavailable)
	case ignored != "":
		s.cfg.Logger.Debug("dovecot notification ignored", "tenant", t.Name, "reason", ignored)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "ignored: "+ignored+"\n")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// handle turns a notification into at most one Event. It returns a reason
// when the notification is ignored.
func (s *Source) handle(ctx context.Context, t *tenantSecret, body []byte) (ignored string, err error) {
	n, err := ParseNotification(body)
	if err != nil {
		return err.Error(), nil
	}
	if !n.InInbox() {
		return "not the INBOX", nil
	}
	if n.Unseen == nil && !n.IsNewMail() {
		return "no unseen count", nil
	}
	addr := t.Address(n.User)
	if addr == "" {
		return "user names no address", nil
	}
	tenant, err := s.cfg.Store.TenantByName(ctx, t.Name)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		s.cfg.Logger.Warn("dovecot notification for a tenant that does not exist: create it with mailpush tenant add", "tenant", t.Name)
		return "no such tenant", nil
	}
	if err != nil {
		return "", err
	}
	mb, err := s.cfg.Store.MailboxByAddress(ctx, tenant.ID, s.cfg.Hasher.HashAddress(tenant.ID, addr), mailpush.SourceDovecot)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		return "no registration for this user", nil
	}
	if err != nil {
		return "", err
	}
	if mb.Status == mailpush.StatusInactive {
		return "mailbox has no registration left", nil
	}
	// A summary, not the registrations: the pipeline reads the devices
	// after the acknowledgement, once per batch.
	audience, err := s.cfg.Store.MailboxAudience(ctx, mb.ID)
	if err != nil {
		return "", err
	}
	if audience.Registrations == 0 {
		return "no active registration", nil
	}

	ev := mailpush.Event{TenantID: tenant.ID, MailboxID: mb.ID, Kind: mailpush.EventChanged, Badge: mailpush.NoBadge, At: s.cfg.Clock.Now()}
	if n.Unseen != nil {
		ev.Badge = *n.Unseen
	}
	if n.IsNewMail() {
		ev.Kind = mailpush.EventNewMail
		if audience.WantsContent {
			ev.Subject, ev.Sender = n.Subject, n.Sender()
		}
	}
	record := func(m *mailpush.Mailbox) (news bool) {
		m.LastEventAt = ev.At
		// A flag change that leaves the unread count alone (\Flagged,
		// keywords) is no news for the phone.
		if news = ev.Kind == mailpush.EventNewMail || ev.Badge != m.Badge; news {
			m.Record(ev)
		}
		return news
	}
	if sink, ok := s.cfg.Sink.(mailpush.MailboxEventSink); ok {
		// The mailbox update and the event in one write: the
		// acknowledgement waits for one commit.
		return "", sink.HandleMailboxEvent(ctx, ev, record)
	}
	push := true
	updated, err := s.cfg.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		push = record(m)
		return nil
	})
	if err != nil {
		return "", err
	}
	if !push {
		return "", nil
	}
	ev.Seq = updated.Seq
	return "", s.cfg.Sink.HandleEvent(ctx, ev)
}
