package ewsfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"time"
)

// The control API lets a separate process (the load tool) drive the fake.
// Requests and answers are JSON; errors are {"error": "…"} with 400, or 404
// for an unknown mailbox, item or subscription. It has no authentication:
// the fake listens on loopback only.
//
//	POST /control/users           {"address","username","password"}
//	POST /control/deliver         {"address","subject","fromName","fromAddress"} → {"itemId"}
//	POST /control/markread        {"address","itemId","read"}
//	POST /control/delete          {"address","itemId","soft"} → {"itemId"} (the new ID when soft)
//	GET  /control/subscriptions   → [Subscription…]
//	GET  /control/callbacks       → [Callback…]; ?subscription=ID for one subscription
//	GET  /control/requests?op=OP  → {"op","count"}
//	POST /control/drop            {"subscriptionId"}
//	POST /control/restart
//	POST /control/fail            {"op","code","backOffMs"} (backOffMs only for ErrorServerBusy; 0 = default)
//	POST /control/callback-delay  {"delayMs"}
//	GET  /control/client-ca       → the client CA certificate, PEM
//	POST /control/revoke          {"serial"} (hex): revokes a client certificate
func (s *Server) controlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /control/client-ca", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(s.ClientCA().PEM())
	})
	mux.HandleFunc("POST /control/revoke", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Serial string }
		if !readJSON(w, r, &req) {
			return
		}
		n, ok := new(big.Int).SetString(req.Serial, 16)
		if !ok || n.Sign() <= 0 {
			writeJSONError(w, http.StatusBadRequest, "serial must be a positive hexadecimal number")
			return
		}
		s.RevokeClientCert(n)
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /control/users", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Address, Username, Password string }
		if !readJSON(w, r, &req) {
			return
		}
		if req.Address == "" || req.Password == "" {
			writeJSONError(w, http.StatusBadRequest, "address and password are required")
			return
		}
		s.AddUser(req.Address, req.Username, req.Password)
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /control/deliver", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Address, Subject, FromName, FromAddress string }
		if !readJSON(w, r, &req) {
			return
		}
		id := s.Deliver(req.Address, req.Subject, req.FromName, req.FromAddress)
		if id == "" {
			writeControlError(w, fmt.Errorf("mailbox: %w", ErrNotFound))
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"itemId": id})
	})
	mux.HandleFunc("POST /control/markread", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Address, ItemID string
			Read            bool
		}
		if !readJSON(w, r, &req) {
			return
		}
		if err := s.MarkRead(req.Address, req.ItemID, req.Read); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /control/delete", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Address, ItemID string
			Soft            bool
		}
		if !readJSON(w, r, &req) {
			return
		}
		id, err := req.ItemID, error(nil)
		if req.Soft {
			id, err = s.SoftDelete(req.Address, req.ItemID)
		} else {
			err = s.Delete(req.Address, req.ItemID)
		}
		if err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"itemId": id})
	})
	mux.HandleFunc("GET /control/subscriptions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Subscriptions())
	})
	mux.HandleFunc("GET /control/callbacks", func(w http.ResponseWriter, r *http.Request) {
		cbs := s.Callbacks()
		if id := r.URL.Query().Get("subscription"); id != "" {
			cbs = s.CallbacksFor(id)
		}
		if cbs == nil {
			cbs = []Callback{}
		}
		writeJSON(w, http.StatusOK, cbs)
	})
	mux.HandleFunc("GET /control/requests", func(w http.ResponseWriter, r *http.Request) {
		op := r.URL.Query().Get("op")
		writeJSON(w, http.StatusOK, map[string]any{"op": op, "count": s.Requests(op)})
	})
	mux.HandleFunc("POST /control/drop", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ SubscriptionID string }
		if !readJSON(w, r, &req) {
			return
		}
		if err := s.DropSubscription(req.SubscriptionID); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /control/restart", func(w http.ResponseWriter, r *http.Request) {
		s.Restart()
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /control/fail", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Op, Code  string
			BackOffMs int64
		}
		if !readJSON(w, r, &req) {
			return
		}
		if req.Op == "" || req.Code == "" {
			writeJSONError(w, http.StatusBadRequest, "op and code are required")
			return
		}
		if req.Code == "ErrorServerBusy" && req.BackOffMs > 0 {
			s.FailNextBusy(req.Op, time.Duration(req.BackOffMs)*time.Millisecond)
		} else {
			s.FailNext(req.Op, req.Code)
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /control/callback-delay", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ DelayMs int64 }
		if !readJSON(w, r, &req) {
			return
		}
		if req.DelayMs < 0 {
			writeJSONError(w, http.StatusBadRequest, "delayMs must not be negative")
			return
		}
		s.SetCallbackDelay(time.Duration(req.DelayMs) * time.Millisecond)
		writeJSON(w, http.StatusOK, struct{}{})
	})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	return true
}

func writeControlError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	if errors.Is(err, ErrNotFound) {
		status = http.StatusNotFound
	}
	writeJSONError(w, status, err.Error())
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) // the client hung up if this fails
}
