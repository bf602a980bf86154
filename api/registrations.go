package api

import (
	"context"
	"crypto/hmac"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

type deviceJSON struct {
	Platform    string `json:"platform"`
	Token       string `json:"token"`
	Environment string `json:"environment,omitempty"`
	ContentKey  string `json:"contentKey,omitempty"`
	// ActiveSyncDeviceID links the registration to the device's ActiveSync
	// DeviceId: a block or wipe at the gate then removes it. Stored hashed.
	ActiveSyncDeviceID string `json:"activeSyncDeviceId,omitempty"`
}

type mailboxJSON struct {
	Address           string `json:"address"`
	Source            string `json:"source"`
	EWSURL            string `json:"ewsUrl,omitempty"`
	SealedCredentials string `json:"sealedCredentials,omitempty"`
}

type registrationRequest struct {
	Device  deviceJSON  `json:"device"`
	Mailbox mailboxJSON `json:"mailbox"`
	Content string      `json:"content,omitempty"`
}

type checkinRequest struct {
	Device *struct {
		Token string `json:"token"`
	} `json:"device,omitempty"`
	Mailbox *struct {
		SealedCredentials string `json:"sealedCredentials,omitempty"`
		// Address lets a service-mode subscription be renewed after a
		// restart (mailpush keeps only its hash).
		Address string `json:"address,omitempty"`
	} `json:"mailbox,omitempty"`
}

type registrationResponse struct {
	ID          string `json:"id"`
	Mode        string `json:"mode"`
	Platform    string `json:"platform"`
	Content     string `json:"content"`
	CallbackURL string `json:"callbackUrl,omitempty"`
	Status      string `json:"status"`
	ExpiresAt   string `json:"expiresAt"`
}

func (s *Server) createRegistration(w http.ResponseWriter, r *http.Request) {
	t := tenantFrom(r.Context())
	var req registrationRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	dev, err := parseDevice(req.Device)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if id := req.Device.ActiveSyncDeviceID; id != "" {
		if !mailpush.ValidDeviceID(mailpush.NormalizeDeviceID(id)) {
			s.writeError(w, r, mailpush.Errorf(mailpush.EInvalid, "device.activeSyncDeviceId must be 1 to %d printable characters without spaces or commas", mailpush.MaxDeviceIDLen))
			return
		}
		dev.ActiveSyncDeviceHash = mailpush.ActiveSyncDeviceHash(s.Keys, t.ID, id)
	}
	if err := s.checkPlatform(t, dev.Platform); err != nil {
		s.writeError(w, r, err)
		return
	}
	mb, creds, err := s.parseMailbox(r.Context(), t, req.Mailbox)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	content := mailpush.ContentBadge
	if req.Content != "" {
		content = mailpush.ContentMode(req.Content)
		if content.Rank() < 0 {
			s.writeError(w, r, mailpush.Errorf(mailpush.EInvalid, "content must be badge, subject or subject_sender, not %q", req.Content))
			return
		}
	}
	if _, ok := s.Watchers[mb.Source]; !ok {
		s.writeError(w, r, mailpush.Errorf(mailpush.EUnsupported, "source %q is not enabled on this server", mb.Source))
		return
	}
	previous, err := s.checkJoin(r.Context(), mb, dev)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	now := s.Clock.Now().UTC()
	reg := &mailpush.Registration{
		Device:    dev,
		Content:   t.CapContent(content),
		Status:    mailpush.StatusPending,
		ExpiresAt: now.Add(s.RegistrationTTL),
	}
	ctx := r.Context()
	stored, err := s.Store.Register(ctx, reg, mb)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	stored.Address = mb.Address // in memory only
	res, err := s.watch(r, t, stored, reg, mb.Mode, creds)
	if err != nil {
		// A rejected request changes nothing: take the registration back,
		// or restore the one this device had.
		if derr := s.takeBack(ctx, t.ID, reg.ID, previous); derr != nil {
			s.Logger.Error("could not take back a failed registration", "registration", reg.ID, "err", derr)
		}
		s.writeError(w, r, err)
		return
	}
	if res.Status == mailpush.StatusActive && reg.Status != mailpush.StatusActive {
		if reg, err = s.Store.UpdateRegistration(ctx, t.ID, reg.ID, func(r *mailpush.Registration) error {
			r.Status = mailpush.StatusActive
			return nil
		}); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	// Routine: counted, logged only at debug (a million registrations must
	// not write a million lines at the default level).
	s.Metrics.registered()
	s.Logger.Debug("registration created", "tenant", t.Name, "registration", reg.ID, "mailbox", stored.ID, "mode", mb.Mode, "platform", dev.Platform, "scope", scopeFrom(ctx))
	writeJSON(w, http.StatusCreated, s.response(reg, chosen(mb.Mode, res), res))
}

// watch asks the source to (re)subscribe unless the mailbox is already
// watched in the requested mode and no new credentials came with the request.
func (s *Server) watch(r *http.Request, t *mailpush.Tenant, mb *mailpush.Mailbox, reg *mailpush.Registration, mode mailpush.Mode, creds mailpush.Credentials) (mailpush.WatchResult, error) {
	// Device-subscribed mode always goes to the source: the device needs its
	// callback URL. New sealed credentials always go to the source too, even
	// for a mailbox that is already watched: they are what proves that the
	// device may receive this mailbox's pushes (the tenant token only proves
	// that the request comes from the tenant's app), so the source must try
	// them on the mail server before the device is attached.
	if mb.Status == mailpush.StatusActive && mb.Mode == mode && mode != mailpush.ModeDeviceSubscribed && creds.Empty() {
		return mailpush.WatchResult{Status: mailpush.StatusActive}, nil
	}
	// A tenant's service account already watches this mailbox.
	if mb.Status == mailpush.StatusActive && mb.Mode == mailpush.ModeService && mode == mailpush.ModeDeviceSubscribed && creds.Empty() {
		return mailpush.WatchResult{Status: mailpush.StatusActive, Mode: mailpush.ModeService}, nil
	}
	mb.Mode = mode
	return s.Watchers[mb.Source].Watch(r.Context(), t, mb, reg, creds)
}

// checkJoin looks at the mailbox the registration would join. It refuses a
// registration without credentials for a mailbox that is watched with a
// user's sealed credentials: a device-subscribed registration proves nothing
// about the mailbox (the tenant token is the app's, not the user's), so it
// may neither join that subscription nor replace it. It returns the
// registration this device already has there, if any, so that a refused
// request can restore it.
func (s *Server) checkJoin(ctx context.Context, mb *mailpush.Mailbox, dev mailpush.Device) (*mailpush.Registration, error) {
	existing, err := s.Store.MailboxByAddress(ctx, mb.TenantID, mb.AddressHash, mb.Source)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if mb.Mode == mailpush.ModeDeviceSubscribed && existing.Mode == mailpush.ModeSealed && existing.Status != mailpush.StatusInactive {
		return nil, mailpush.Errorf(mailpush.EConflict, "this mailbox is watched with a user's sealed credentials: register with mailbox.sealedCredentials")
	}
	// By the token's hash: registering the n-th device of a mailbox must
	// not load and open the n-1 others.
	reg, err := s.Store.RegistrationByToken(ctx, existing.ID, dev.Token)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		return nil, nil
	}
	return reg, err
}

// takeBack undoes Register after the source refused: it deletes a new
// registration, or puts back the device's previous one as it was.
func (s *Server) takeBack(ctx context.Context, tenantID, id string, previous *mailpush.Registration) error {
	if previous == nil || previous.ID != id {
		return s.Store.DeleteRegistration(ctx, tenantID, id)
	}
	_, err := s.Store.UpdateRegistration(ctx, tenantID, id, func(r *mailpush.Registration) error {
		r.Device, r.Content, r.Status, r.ExpiresAt = previous.Device, previous.Content, previous.Status, previous.ExpiresAt
		return nil
	})
	return err
}

func (s *Server) getRegistration(w http.ResponseWriter, r *http.Request) {
	t := tenantFrom(r.Context())
	reg, err := s.Store.Registration(r.Context(), t.ID, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	mb, err := s.Store.Mailbox(r.Context(), reg.MailboxID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.response(reg, mb.Mode, mailpush.WatchResult{}))
}

func (s *Server) checkin(w http.ResponseWriter, r *http.Request) {
	t := tenantFrom(r.Context())
	var req checkinRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	reg, err := s.Store.Registration(ctx, t.ID, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	newToken := ""
	if req.Device != nil {
		d, err := parseDevice(deviceJSON{Platform: string(reg.Device.Platform), Token: req.Device.Token, Environment: string(reg.Device.Environment)})
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		newToken = d.Token
	}
	var creds mailpush.Credentials
	if req.Mailbox != nil && req.Mailbox.SealedCredentials != "" {
		if creds, err = s.Keys.OpenCredentials(req.Mailbox.SealedCredentials); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	mb, err := s.Store.Mailbox(ctx, reg.MailboxID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Mailbox != nil && req.Mailbox.Address != "" {
		addr, err := parseAddress(req.Mailbox.Address)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if !hmac.Equal(s.Keys.HashAddress(t.ID, addr), mb.AddressHash) {
			s.writeError(w, r, mailpush.Errorf(mailpush.EInvalid, "mailbox.address is not the address of this registration's mailbox"))
			return
		}
		mb.Address = addr
	}
	mode := mb.Mode
	if !creds.Empty() {
		mode = mailpush.ModeSealed
	}
	var res mailpush.WatchResult
	if mb.Status != mailpush.StatusActive || !creds.Empty() || mode == mailpush.ModeDeviceSubscribed {
		watcher, ok := s.Watchers[mb.Source]
		if !ok {
			s.writeError(w, r, mailpush.Errorf(mailpush.EUnsupported, "source %q is not enabled on this server", mb.Source))
			return
		}
		mb.Mode = mode
		if res, err = watcher.Watch(ctx, t, mb, reg, creds); err != nil {
			s.writeError(w, r, err)
			return
		}
	} else {
		// A renewal keeps the registration's status: a pending registration
		// becomes active only by proving itself (sealed credentials, or its
		// own subscription in device-subscribed mode), never by a check-in
		// that carries neither. An inactive one (its push token died) was
		// active before, so it proved itself then: the check-in, usually with
		// a rotated token, revives it.
		res.Status = reg.Status
		if reg.Status == mailpush.StatusInactive {
			res.Status = mailpush.StatusActive
		}
	}
	now := s.Clock.Now().UTC()
	reg, err = s.Store.UpdateRegistration(ctx, t.ID, reg.ID, func(r *mailpush.Registration) error {
		if newToken != "" {
			r.Device.Token = newToken
		}
		r.ExpiresAt = now.Add(s.RegistrationTTL)
		r.Status = res.Status
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.response(reg, chosen(mode, res), res))
}

func (s *Server) deleteRegistration(w http.ResponseWriter, r *http.Request) {
	t := tenantFrom(r.Context())
	id := r.PathValue("id")
	if err := s.Store.DeleteRegistration(r.Context(), t.ID, id); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.Metrics.deleted()
	s.Logger.Debug("registration deleted", "tenant", t.Name, "registration", id)
	w.WriteHeader(http.StatusNoContent)
}

// chosen is the mode a watcher settled on: the one asked unless it chose
// another (service mode for a tenant with a service account).
func chosen(asked mailpush.Mode, res mailpush.WatchResult) mailpush.Mode {
	if res.Mode != "" {
		return res.Mode
	}
	return asked
}

func (s *Server) response(reg *mailpush.Registration, mode mailpush.Mode, res mailpush.WatchResult) registrationResponse {
	status := reg.Status
	if res.Status != "" && status != mailpush.StatusInactive {
		status = res.Status
	}
	return registrationResponse{
		ID: reg.ID, Mode: string(mode), Platform: string(reg.Device.Platform), Content: string(reg.Content),
		CallbackURL: res.CallbackURL, Status: string(status), ExpiresAt: reg.ExpiresAt.UTC().Format(time.RFC3339),
	}
}

// parseMailbox validates the mailbox part of a registration. It makes no
// outbound request: a server URL outside the tenant's allowed hosts is
// refused here, before any source sees it.
func (s *Server) parseMailbox(ctx context.Context, t *mailpush.Tenant, in mailboxJSON) (*mailpush.Mailbox, mailpush.Credentials, error) {
	var creds mailpush.Credentials
	addr, err := parseAddress(in.Address)
	if err != nil {
		return nil, creds, err
	}
	src := mailpush.Source(in.Source)
	switch src {
	case mailpush.SourceEWS, mailpush.SourceGraph, mailpush.SourceDovecot:
	case "":
		return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.source is required: ews, graph or dovecot")
	default:
		return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.source must be ews, graph or dovecot, not %q", in.Source)
	}
	mb := &mailpush.Mailbox{TenantID: t.ID, AddressHash: s.Keys.HashAddress(t.ID, addr), Source: src, Badge: mailpush.NoBadge, Status: mailpush.StatusPending, Address: addr}
	if src == mailpush.SourceEWS && in.EWSURL != "" {
		u, err := s.checkServerURL(t, in.EWSURL, "mailbox.ewsUrl")
		if err != nil {
			return nil, creds, err
		}
		mb.ServerURL = u
	} else if in.EWSURL != "" {
		return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.ewsUrl is only for source ews")
	}
	if src == mailpush.SourceDovecot {
		// Dovecot reports with the tenant's shared secret: no user credential.
		if in.SealedCredentials != "" {
			return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.sealedCredentials is not for source dovecot: mailpush uses the tenant's Dovecot shared secret")
		}
		mb.Mode = mailpush.ModeService
		return mb, creds, nil
	}
	mb.Mode = mailpush.ModeDeviceSubscribed
	if in.SealedCredentials != "" {
		if creds, err = s.Keys.OpenCredentials(in.SealedCredentials); err != nil {
			return nil, creds, err
		}
		mb.Mode = mailpush.ModeSealed
	}
	if src == mailpush.SourceEWS && mb.ServerURL == "" {
		if s.Autodiscover == nil {
			return nil, creds, mailpush.Errorf(mailpush.EUnsupported, "mailbox.ewsUrl is required: autodiscover is off on this server")
		}
		// Autodiscover checks every host against the tenant's list before
		// it sends anything; checkServerURL checks the result again.
		raw, err := s.Autodiscover.LocateEWS(ctx, t, addr, creds)
		if err != nil {
			return nil, creds, err
		}
		if mb.ServerURL, err = s.checkServerURL(t, raw, "mailbox.ewsUrl"); err != nil {
			return nil, creds, err
		}
	}
	return mb, creds, nil
}

func (s *Server) checkServerURL(t *mailpush.Tenant, raw, field string) (string, error) {
	if len(raw) > 2048 {
		return "", mailpush.Errorf(mailpush.EInvalid, "%s is longer than 2048 characters", field)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return "", mailpush.Errorf(mailpush.EInvalid, "%s must be an absolute https URL without user info, such as https://mail.example.com/EWS/Exchange.asmx", field)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && s.AllowInsecureEWS:
	default:
		return "", mailpush.Errorf(mailpush.EInvalid, "%s must use https (credentials travel to it)", field)
	}
	if !t.URLAllowed(u) {
		return "", mailpush.Errorf(mailpush.EForbidden, "%s host %q (with its port; none means the scheme's default) is not one of the tenant's allowed mail-server hosts", field, u.Host)
	}
	return u.String(), nil
}

func parseAddress(in string) (string, error) {
	if in == "" {
		return "", mailpush.Errorf(mailpush.EInvalid, "mailbox.address is required")
	}
	if len(in) > 320 {
		return "", mailpush.Errorf(mailpush.EInvalid, "mailbox.address is longer than 320 characters")
	}
	a, err := mail.ParseAddress(in)
	if err != nil || a.Name != "" || a.Address != strings.TrimSpace(in) || !strings.Contains(a.Address, "@") {
		return "", mailpush.Errorf(mailpush.EInvalid, "mailbox.address must be a plain e-mail address such as alice@example.com")
	}
	return a.Address, nil
}

// parseDevice validates a device: an APNs token is hex (64 to 200 digits,
// stored lower-case); an FCM token is 32 to 4096 characters of [A-Za-z0-9_:-].
func parseDevice(in deviceJSON) (mailpush.Device, error) {
	d := mailpush.Device{Platform: mailpush.Platform(in.Platform), Environment: mailpush.Environment(in.Environment)}
	switch d.Platform {
	case mailpush.PlatformIOS:
		tok := strings.ToLower(in.Token)
		if len(tok) < 64 || len(tok) > 200 || len(tok)%2 != 0 || strings.Trim(tok, "0123456789abcdef") != "" {
			return d, mailpush.Errorf(mailpush.EInvalid, "device.token is not an APNs device token: it must be 64 to 200 hexadecimal digits")
		}
		d.Token = tok
		switch d.Environment {
		case "", mailpush.EnvProduction, mailpush.EnvSandbox:
			// Empty: the tenant's default environment applies at push
			// time (production unless configured).
		default:
			return d, mailpush.Errorf(mailpush.EInvalid, "device.environment must be production or sandbox, not %q", in.Environment)
		}
	case mailpush.PlatformAndroid:
		if len(in.Token) < 32 || len(in.Token) > 4096 || strings.IndexFunc(in.Token, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == ':')
		}) >= 0 {
			return d, mailpush.Errorf(mailpush.EInvalid, "device.token is not an FCM registration token: 32 to 4096 characters of letters, digits, '_', '-' and ':'")
		}
		d.Token = in.Token
		if d.Environment != "" && d.Environment != mailpush.EnvProduction {
			return d, mailpush.Errorf(mailpush.EInvalid, "device.environment applies to ios only")
		}
		d.Environment = mailpush.EnvProduction
	case "":
		return d, mailpush.Errorf(mailpush.EInvalid, "device.platform is required: ios or android")
	default:
		return d, mailpush.Errorf(mailpush.EInvalid, "device.platform must be ios or android, not %q", in.Platform)
	}
	if in.ContentKey != "" {
		k, err := b64.DecodeString(in.ContentKey)
		if err != nil || len(k) != 32 {
			return d, mailpush.Errorf(mailpush.EInvalid, "device.contentKey must be a base64url (unpadded) X25519 public key of 32 bytes")
		}
		d.ContentKey = k
	}
	return d, nil
}

// checkPlatform refuses a device whose platform the tenant cannot push to:
// better a clear error at registration than a silent drop later.
func (s *Server) checkPlatform(t *mailpush.Tenant, p mailpush.Platform) error {
	if s.Platforms == nil {
		return nil
	}
	if slices.Contains(s.Platforms(t), p) {
		return nil
	}
	return mailpush.Errorf(mailpush.EUnsupported, "this server has no push credentials for platform %s of tenant %s", p, t.Name)
}
