package graphfake

import (
	"encoding/json"
	"io"
	"net/http"
)

// controlRoutes is the fake's control API for tests in other processes and
// the load command: JSON in, JSON out, under /control/.
func (s *Server) controlRoutes(mux *http.ServeMux) {
	decode := func(w http.ResponseWriter, r *http.Request, v any) bool {
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil {
			http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
			return false
		}
		return true
	}
	mux.HandleFunc("POST /control/users", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Address string }
		if decode(w, r, &in) {
			writeJSON(w, http.StatusOK, map[string]string{"id": s.AddUser(in.Address)})
		}
	})
	mux.HandleFunc("POST /control/apps", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ ClientID, Secret string }
		if decode(w, r, &in) {
			s.AddApp(in.ClientID, in.Secret, nil)
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("POST /control/deliver", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Address, Subject, FromName, FromAddress string }
		if decode(w, r, &in) {
			writeJSON(w, http.StatusOK, map[string]string{"id": s.Deliver(in.Address, in.Subject, in.FromName, in.FromAddress)})
		}
	})
	mux.HandleFunc("POST /control/read", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Address, ID string }
		if decode(w, r, &in) {
			s.MarkRead(in.Address, in.ID)
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("POST /control/lifecycle", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ SubscriptionID, Event string }
		if decode(w, r, &in) {
			if err := s.Lifecycle(in.SubscriptionID, in.Event); err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("POST /control/fail", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Op         string
			Status     int
			RetryAfter int
		}
		if decode(w, r, &in) {
			s.FailNext(in.Op, in.Status, in.RetryAfter)
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("GET /control/subscriptions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Subscriptions())
	})
	mux.HandleFunc("GET /control/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"slowRatio": s.SlowRatio(), "deliveries": len(s.Deliveries())})
	})
}
