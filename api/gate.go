package api

import (
	"errors"
	"mime"
	"net/http"
	"time"

	"github.com/mailpush/mailpush"
)

// Gate device registry routes: how an MDM (or an admin) tells the gate what
// it knows about ActiveSync devices. They need an admin token: the app token
// ships inside every app, and whoever holds it must not turn a blocked device
// compliant or block anyone else's.
func (s *Server) gateRoutes(mux *http.ServeMux) {
	mux.Handle("PUT /api/v1/gate/devices/{deviceId}", s.scoped(s.putGateDevice, mailpush.ScopeAdmin))
	mux.Handle("GET /api/v1/gate/devices/{deviceId}", s.scoped(s.getGateDevice, mailpush.ScopeAdmin))
	mux.Handle("DELETE /api/v1/gate/devices/{deviceId}", s.scoped(s.deleteGateDevice, mailpush.ScopeAdmin))
	mux.Handle("POST /api/v1/gate/import", s.scoped(s.importGateDevices, mailpush.ScopeAdmin))
}

type gateDeviceRequest struct {
	User       string `json:"user,omitempty"`
	DeviceType string `json:"deviceType,omitempty"`
	State      string `json:"state"`
}

type gateDeviceResponse struct {
	DeviceID             string `json:"deviceId"`
	DeviceType           string `json:"deviceType"`
	State                string `json:"state"`
	HasUser              bool   `json:"hasUser"`
	LastSeen             string `json:"lastSeen,omitempty"`
	UpdatedAt            string `json:"updatedAt"`
	RemovedRegistrations *int   `json:"removedRegistrations,omitempty"`
}

func gateDeviceJSON(d *mailpush.GateDevice) gateDeviceResponse {
	r := gateDeviceResponse{DeviceID: d.DeviceID, DeviceType: d.DeviceType, State: string(d.State), HasUser: d.UserHash != nil, UpdatedAt: d.UpdatedAt.UTC().Format(time.RFC3339)}
	if !d.LastSeen.IsZero() {
		r.LastSeen = d.LastSeen.UTC().Format(time.RFC3339)
	}
	return r
}

func (s *Server) gateRegistry(w http.ResponseWriter, r *http.Request) (mailpush.GateRegistry, bool) {
	if s.Gate == nil {
		s.writeError(w, r, mailpush.Errorf(mailpush.EUnsupported, "the ActiveSync gate registry is not enabled on this server"))
		return nil, false
	}
	return s.Gate, true
}

func (s *Server) putGateDevice(w http.ResponseWriter, r *http.Request) {
	g, ok := s.gateRegistry(w, r)
	if !ok {
		return
	}
	var req gateDeviceRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	t := tenantFrom(r.Context())
	d, removed, err := g.SetDevice(r.Context(), t.ID, mailpush.GateDeviceUpdate{DeviceID: r.PathValue("deviceId"), User: req.User, DeviceType: req.DeviceType, State: mailpush.DeviceState(req.State)})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res := gateDeviceJSON(d)
	res.RemovedRegistrations = &removed
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) getGateDevice(w http.ResponseWriter, r *http.Request) {
	g, ok := s.gateRegistry(w, r)
	if !ok {
		return
	}
	d, err := g.Device(r.Context(), tenantFrom(r.Context()).ID, r.PathValue("deviceId"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, gateDeviceJSON(d))
}

func (s *Server) deleteGateDevice(w http.ResponseWriter, r *http.Request) {
	g, ok := s.gateRegistry(w, r)
	if !ok {
		return
	}
	if err := g.DeleteDevice(r.Context(), tenantFrom(r.Context()).ID, r.PathValue("deviceId")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// MaxImportSize caps a CSV import sent to the API.
const MaxImportSize = 64 << 20

func (s *Server) importGateDevices(w http.ResponseWriter, r *http.Request) {
	g, ok := s.gateRegistry(w, r)
	if !ok {
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "text/csv" {
		s.writeError(w, r, mailpush.Errorf(mailpush.EMediaType, "Content-Type must be text/csv"))
		return
	}
	body := http.MaxBytesReader(w, r.Body, MaxImportSize)
	res, err := g.Import(r.Context(), tenantFrom(r.Context()).ID, body, nil)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			err = mailpush.Errorf(mailpush.ETooLarge, "the CSV exceeds %d bytes; split it (%d rows were applied)", MaxImportSize, res.Stored)
		}
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
