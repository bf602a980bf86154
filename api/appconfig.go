package api

import (
	"bytes"
	"encoding/csv"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"howett.net/plist"

	"github.com/mailpush/mailpush"
)

// MaxExportUsers caps the users of one app configuration export.
const MaxExportUsers = 1000

// Managed app configuration routes: what an MDM fetches to configure the
// mail app of each user. Admin scope only: the configuration carries the
// tenant's app token and the user's directory attributes, and the app
// token itself ships inside every app.
func (s *Server) appConfigRoutes(mux *http.ServeMux) {
	mux.Handle("GET /api/v1/appconfig/{user}", s.scoped(s.getAppConfig, mailpush.ScopeAdmin))
	mux.Handle("POST /api/v1/appconfig/export", s.scoped(s.exportAppConfig, mailpush.ScopeAdmin))
}

func (s *Server) appConfigs(w http.ResponseWriter, r *http.Request) (mailpush.AppConfigs, bool) {
	if s.AppConfigs == nil {
		s.writeError(w, r, mailpush.Errorf(mailpush.EUnsupported, "managed app configuration is not enabled on this server"))
		return nil, false
	}
	return s.AppConfigs, true
}

// wants returns the first of offers that Accept names (ignoring q, which
// MDMs do not send), else offers[0].
func wants(r *http.Request, offers ...string) string {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		for _, o := range offers {
			if mt == o {
				return o
			}
		}
	}
	return offers[0]
}

// appConfigMap is an AppConfig's keys as one dictionary (JSON and plist).
func appConfigMap(c mailpush.AppConfig) map[string]any {
	m := make(map[string]any, len(c.Values))
	for _, v := range c.Values {
		m[v.Key] = v.Value
	}
	return m
}

// getAppConfig answers the user's configuration: a JSON object of the keys,
// or (Accept: application/x-plist, application/xml or text/xml) the XML
// plist dictionary that MDMs upload as the app's managed configuration,
// which the app then reads as its com.apple.configuration.managed
// dictionary.
func (s *Server) getAppConfig(w http.ResponseWriter, r *http.Request) {
	ac, ok := s.appConfigs(w, r)
	if !ok {
		return
	}
	c, err := ac.AppConfig(r.Context(), tenantFrom(r.Context()), r.PathValue("user"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	switch wants(r, "application/json", "application/x-plist", "application/xml", "text/xml") {
	case "application/json":
		writeJSON(w, http.StatusOK, appConfigMap(c))
	default:
		data, err := plist.MarshalIndent(appConfigMap(c), plist.XMLFormat, "\t")
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-plist")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(data)
	}
}

type exportRequest struct {
	Users []string `json:"users"`
}

type exportConfig struct {
	User   string         `json:"user"`
	Values map[string]any `json:"values"`
}

type exportError struct {
	User    string `json:"user"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type exportResponse struct {
	Configs []exportConfig `json:"configs"`
	Errors  []exportError  `json:"errors"`
}

// exportAppConfig expands the configuration of up to MaxExportUsers users
// for MDMs that import files: JSON, or CSV (Accept: text/csv) with a _user
// column, one column per key and an _error column (template keys never
// start with "_"). A user that cannot be
// configured (no such user, a missing attribute without a default) is
// reported in its row and the rest go on; a directory that is down fails
// the whole export (503): a file with holes would be imported as complete.
func (s *Server) exportAppConfig(w http.ResponseWriter, r *http.Request) {
	ac, ok := s.appConfigs(w, r)
	if !ok {
		return
	}
	var req exportRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(req.Users) == 0 || len(req.Users) > MaxExportUsers {
		s.writeError(w, r, mailpush.Errorf(mailpush.EInvalid, "users must list 1 to %d users, not %d", MaxExportUsers, len(req.Users)))
		return
	}
	t := tenantFrom(r.Context())
	out := exportResponse{Configs: []exportConfig{}, Errors: []exportError{}}
	var keys []string
	for _, u := range req.Users {
		c, err := ac.AppConfig(r.Context(), t, u)
		switch code := mailpush.ErrorCode(err); code {
		case "":
			if keys == nil {
				for _, v := range c.Values {
					keys = append(keys, v.Key)
				}
			}
			out.Configs = append(out.Configs, exportConfig{User: u, Values: appConfigMap(c)})
		case mailpush.ENotFound, mailpush.EInvalid, mailpush.EConflict, mailpush.EUnsupported:
			out.Errors = append(out.Errors, exportError{User: u, Code: code, Message: mailpush.ErrorMessage(err)})
		default:
			s.writeError(w, r, err)
			return
		}
	}
	if wants(r, "application/json", "text/csv") == "application/json" {
		writeJSON(w, http.StatusOK, out)
		return
	}
	var b bytes.Buffer
	cw := csv.NewWriter(&b)
	cw.Write(append(append([]string{"_user"}, keys...), "_error"))
	for _, c := range out.Configs {
		row := []string{csvCell(c.User)}
		for _, k := range keys {
			row = append(row, csvCell(c.Values[k]))
		}
		cw.Write(append(row, ""))
	}
	for _, e := range out.Errors {
		row := append([]string{csvCell(e.User)}, make([]string, len(keys))...)
		cw.Write(append(row, e.Code+": "+e.Message))
	}
	cw.Flush()
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="appconfig.csv"`)
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

// csvCell renders a value for CSV. A text cell that a spreadsheet would run
// as a formula (=, +, -, @, tab, CR first: OWASP's CSV injection list) gets
// a leading apostrophe: directory attributes are partly user-controlled,
// and admins open these files in spreadsheets.
func csvCell(v any) string {
	switch v := v.(type) {
	case string:
		if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			return "'" + v
		}
		return v
	case bool:
		return strconv.FormatBool(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return ""
}
