package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/mailpush/mailpush"
)

// maxMigrationWait bounds a long poll of GET /api/v1/migrations/{to}: below
// the server's write timeout.
const maxMigrationWait = 50 * time.Second

// Migration routes: `mailpush tenant migrate NAME --to graph` starts the
// tenant's cut-over from EWS to Microsoft Graph in the server (which owns
// the webhooks and the addresses in memory) and follows it. An admin token
// only: moving every device of a tenant is an operator's act.
func (s *Server) migrationRoutes(mux *http.ServeMux) {
	mux.Handle("POST /api/v1/migrations", s.scoped(s.startMigration, mailpush.ScopeAdmin))
	mux.Handle("GET /api/v1/migrations/{to}", s.scoped(s.getMigration, mailpush.ScopeAdmin))
}

type migrationRequest struct {
	// Tenant, when given, must be the token's tenant (the CLI sends the
	// NAME it was given, so that a token of another tenant cannot be
	// mistaken for it).
	Tenant string `json:"tenant,omitempty"`
	To     string `json:"to"`
	DryRun bool   `json:"dryRun,omitempty"`
}

// MigrationStay is one mailbox of a Migration that stays on EWS.
type MigrationStay struct {
	Mailbox   string `json:"mailbox"`
	AddressID string `json:"addressId"`
	Reason    string `json:"reason"`
	Detail    string `json:"detail"`
}

// Migration is the JSON of a migration (docs/openapi.yaml's Migration),
// also what `mailpush tenant migrate` reads.
type Migration struct {
	Tenant             string          `json:"tenant"`
	To                 string          `json:"to"`
	DryRun             bool            `json:"dryRun"`
	State              string          `json:"state"`
	Error              string          `json:"error,omitempty"`
	StartedAt          string          `json:"startedAt"`
	FinishedAt         string          `json:"finishedAt,omitempty"`
	Mailboxes          int             `json:"mailboxes"`
	Registrations      int             `json:"registrations"`
	Migrated           int             `json:"migrated"`
	MovedRegistrations int             `json:"movedRegistrations"`
	GraphReads         int             `json:"graphReads"`
	GraphWrites        int             `json:"graphWrites"`
	Stayed             []MigrationStay `json:"stayed"`
}

func migrationJSON(r *mailpush.MigrationReport) Migration {
	out := Migration{Tenant: r.Tenant, To: string(r.To), DryRun: r.DryRun, State: string(r.State), Error: r.Error,
		StartedAt: r.StartedAt.UTC().Format(time.RFC3339), Mailboxes: r.Mailboxes, Registrations: r.Registrations,
		Migrated: r.Migrated, MovedRegistrations: r.MovedRegistrations, GraphReads: r.GraphReads, GraphWrites: r.GraphWrites,
		Stayed: []MigrationStay{}}
	if !r.FinishedAt.IsZero() {
		out.FinishedAt = r.FinishedAt.UTC().Format(time.RFC3339)
	}
	for _, st := range r.Stayed {
		out.Stayed = append(out.Stayed, MigrationStay{Mailbox: st.MailboxID, AddressID: st.AddressID, Reason: st.Reason, Detail: st.Detail})
	}
	return out
}

func (s *Server) migrator(w http.ResponseWriter, r *http.Request) (mailpush.Migrator, bool) {
	if s.Migrator == nil {
		s.writeError(w, r, mailpush.Errorf(mailpush.EUnsupported, "migrations are not offered by this server"))
		return nil, false
	}
	return s.Migrator, true
}

func (s *Server) startMigration(w http.ResponseWriter, r *http.Request) {
	m, ok := s.migrator(w, r)
	if !ok {
		return
	}
	var req migrationRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	t := tenantFrom(r.Context())
	if req.Tenant != "" && req.Tenant != t.Name {
		// Another tenant's name is as unknown to this token as a name
		// that exists nowhere.
		s.writeError(w, r, mailpush.Errorf(mailpush.ENotFound, "tenant %q not found", req.Tenant))
		return
	}
	if req.To != string(mailpush.SourceGraph) {
		s.writeError(w, r, mailpush.Errorf(mailpush.EInvalid, "to must be graph (mailboxes move from EWS to Microsoft Graph), not %q", req.To))
		return
	}
	rep, err := m.StartMigration(r.Context(), t, mailpush.SourceGraph, req.DryRun)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/migrations/graph")
	writeJSON(w, http.StatusAccepted, migrationJSON(rep))
}

func (s *Server) getMigration(w http.ResponseWriter, r *http.Request) {
	m, ok := s.migrator(w, r)
	if !ok {
		return
	}
	to := r.PathValue("to")
	if to != string(mailpush.SourceGraph) {
		s.writeError(w, r, mailpush.Errorf(mailpush.EInvalid, "migrations go to graph only, not %q", to))
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || time.Duration(n)*time.Second > maxMigrationWait {
			s.writeError(w, r, mailpush.Errorf(mailpush.EInvalid, "wait must be whole seconds from 0 to %d, not %q", int(maxMigrationWait/time.Second), v))
			return
		}
		wait = time.Duration(n) * time.Second
	}
	rep, err := m.Migration(r.Context(), tenantFrom(r.Context()), mailpush.SourceGraph, wait)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, migrationJSON(rep))
}
