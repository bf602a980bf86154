package api

import (
	"net/http"
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
	// UserToken is the user's Entra ID token for the tenant's mailpush app
	// (source graph): an app-scope registration proves the mailbox with it.
	UserToken string `json:"userToken,omitempty"`
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
	res, err := s.Registrar.Register(r.Context(), tenantFrom(r.Context()), mailpush.RegisterRequest{
		Scope: scopeFrom(r.Context()), Device: dev, ActiveSyncDeviceID: req.Device.ActiveSyncDeviceID,
		Address: req.Mailbox.Address, Source: mailpush.Source(req.Mailbox.Source), EWSURL: req.Mailbox.EWSURL,
		SealedCredentials: req.Mailbox.SealedCredentials, UserToken: req.Mailbox.UserToken, Content: mailpush.ContentMode(req.Content),
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, response(res))
}

func (s *Server) getRegistration(w http.ResponseWriter, r *http.Request) {
	res, err := s.Registrar.Get(r.Context(), tenantFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, response(res))
}

func (s *Server) checkin(w http.ResponseWriter, r *http.Request) {
	var req checkinRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	in := mailpush.CheckInRequest{Scope: scopeFrom(r.Context())}
	if req.Device != nil {
		// Checked against the registration's platform by the registrar.
		in.DeviceToken = req.Device.Token
	}
	if req.Mailbox != nil {
		in.SealedCredentials, in.Address = req.Mailbox.SealedCredentials, req.Mailbox.Address
	}
	res, err := s.Registrar.CheckIn(r.Context(), tenantFrom(r.Context()), r.PathValue("id"), in)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, response(res))
}

func (s *Server) deleteRegistration(w http.ResponseWriter, r *http.Request) {
	if err := s.Registrar.Delete(r.Context(), tenantFrom(r.Context()), r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func response(res *mailpush.RegistrationResult) registrationResponse {
	reg := res.Registration
	return registrationResponse{
		ID: reg.ID, Mode: string(res.Mode), Platform: string(reg.Device.Platform), Content: string(reg.Content),
		CallbackURL: res.CallbackURL, Status: string(res.Status), ExpiresAt: reg.ExpiresAt.UTC().Format(time.RFC3339),
	}
}

// parseDevice validates a device: an APNs token is hex (64 to 200 digits,
// stored lower-case); an FCM token is 32 to 4096 characters of [A-Za-z0-9_:-].
func parseDevice(in deviceJSON) (mailpush.Device, error) {
	d := mailpush.Device{Platform: mailpush.Platform(in.Platform), Environment: mailpush.Environment(in.Environment)}
	switch d.Platform {
	case mailpush.PlatformIOS:
		tok, err := mailpush.NormalizeDeviceToken(d.Platform, in.Token)
		if err != nil {
			return d, err
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
		tok, err := mailpush.NormalizeDeviceToken(d.Platform, in.Token)
		if err != nil {
			return d, err
		}
		d.Token = tok
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
