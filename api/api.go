// Package api serves mailpush's HTTP interfaces for apps and operators: the
// device API of docs/openapi.yaml (/api/v1/…) and the operations endpoints (/healthz,
// /readyz). Mail-server webhooks are served by their source packages and
// mounted beside it by cmd/mailpush.
//
// Every handler reads its input through decodeJSON (size cap, unknown fields
// refused, JSON only) and answers errors through writeError, the one place
// where an error code becomes an HTTP status. A rejected request changes
// nothing.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/mailpush/mailpush"
)

// MaxBodySize caps every request body.
const MaxBodySize = 1 << 20

// Keys is what the API needs of the service keyring: the public key that
// devices seal their credentials to.
type Keys interface {
	PublicKey() (keyID string, pub []byte)
}

// Server holds the API's dependencies.
type Server struct {
	Store mailpush.Store // tokens, tenants, readiness
	Keys  Keys
	// Registrar is the registration lifecycle; the API only translates
	// HTTP to it.
	Registrar mailpush.Registrar
	Logger    *slog.Logger
	// Gate is the ActiveSync gate's device registry; nil turns its routes
	// into unsupported errors.
	Gate mailpush.GateRegistry
	// AppConfigs expands managed app configuration; nil turns its routes
	// into unsupported errors.
	AppConfigs mailpush.AppConfigs
	// SMIME serves /api/v1/smime/…; nil turns them into unsupported errors.
	SMIME mailpush.SMIME
	// Migrator runs a tenant's cut-over from EWS to Microsoft Graph
	// (/api/v1/migrations); nil turns its routes into unsupported errors.
	Migrator mailpush.Migrator
	// Ready reports whether the service can take traffic (for /readyz);
	// nil means Store.Ping. The message of a *mailpush.Error it returns
	// is the reason /readyz gives; its cause is logged, never answered.
	Ready func(ctx context.Context) error
}

// Routes registers the API's routes on mux.
func (s *Server) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/alive", s.alive)
	mux.HandleFunc("GET /api/v1/key", s.key)
	mux.Handle("POST /api/v1/registrations", s.scoped(s.createRegistration, mailpush.ScopeApp, mailpush.ScopeBackend))
	mux.Handle("GET /api/v1/registrations/{id}", s.scoped(s.getRegistration, mailpush.ScopeApp, mailpush.ScopeBackend))
	mux.Handle("POST /api/v1/registrations/{id}/checkin", s.scoped(s.checkin, mailpush.ScopeApp, mailpush.ScopeBackend))
	mux.Handle("DELETE /api/v1/registrations/{id}", s.scoped(s.deleteRegistration, mailpush.ScopeApp, mailpush.ScopeBackend))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	s.gateRoutes(mux)
	s.appConfigRoutes(mux)
	s.smimeRoutes(mux)
	s.migrationRoutes(mux)
}

func (s *Server) alive(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": mailpush.Version})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ready := s.Ready
	if ready == nil {
		ready = s.Store.Ping
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := ready(ctx); err != nil {
		// The answer names the failing dependency (the check's own message,
		// e.g. "the database does not answer") but never its cause: the
		// cause may name hosts and users, and /readyz is unauthenticated.
		// The log holds the cause.
		reason := "the database does not answer"
		if mailpush.ErrorCode(err) != mailpush.EInternal {
			reason = mailpush.ErrorMessage(err)
		}
		s.writeError(w, r, mailpush.WrapError(mailpush.EUnavailable, "not ready: "+reason, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

type keyResponse struct {
	KeyID     string `json:"keyId"`
	KEM       string `json:"kem"`
	KDF       string `json:"kdf"`
	AEAD      string `json:"aead"`
	PublicKey string `json:"publicKey"`
}

func (s *Server) key(w http.ResponseWriter, r *http.Request) {
	id, pub := s.Keys.PublicKey()
	writeJSON(w, http.StatusOK, keyResponse{KeyID: id, KEM: "DHKEM(X25519, HKDF-SHA256)", KDF: "HKDF-SHA256", AEAD: "AES-128-GCM", PublicKey: b64.EncodeToString(pub)})
}
