package api

import (
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"time"

	"github.com/mailpush/mailpush"
)

// The S/MIME endpoints: recipients' encryption certificates for an app
// about to send (app scope), and what a certificate or PKCS#12 may do (any
// scope). The work is the mailpush.SMIME service's (package smime); this
// file only speaks HTTP.

func (s *Server) smimeRoutes(mux *http.ServeMux) {
	mux.Handle("POST /api/v1/smime/lookup", s.scoped(s.smimeLookup, mailpush.ScopeApp))
	mux.Handle("POST /api/v1/smime/classify", s.scoped(s.smimeClassify, mailpush.ScopeApp, mailpush.ScopeBackend, mailpush.ScopeAdmin))
}

var errNoSMIME = mailpush.Errorf(mailpush.EUnsupported, "S/MIME is not offered by this server")

type smimeLookupRequest struct {
	Recipients []string `json:"recipients"`
}

type smimeCertificateJSON struct {
	PEM       string    `json:"pem"`
	SHA256    string    `json:"sha256"`
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

type smimeRecipientJSON struct {
	Address      string                 `json:"address"`
	Certificates []smimeCertificateJSON `json:"certificates"`
	Reason       string                 `json:"reason,omitempty"`
	Message      string                 `json:"message,omitempty"`
}

type smimeLookupResponse struct {
	Verdict    string               `json:"verdict"`
	Blocking   []string             `json:"blocking"`
	Recipients []smimeRecipientJSON `json:"recipients"`
}

func (s *Server) smimeLookup(w http.ResponseWriter, r *http.Request) {
	if s.SMIME == nil {
		s.writeError(w, r, errNoSMIME)
		return
	}
	var req smimeLookupRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.SMIME.LookupCertificates(r.Context(), tenantFrom(r.Context()), req.Recipients)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := smimeLookupResponse{Verdict: res.Verdict, Blocking: res.Blocking, Recipients: make([]smimeRecipientJSON, 0, len(res.Recipients))}
	if out.Blocking == nil {
		out.Blocking = []string{}
	}
	for _, rc := range res.Recipients {
		j := smimeRecipientJSON{Address: rc.Address, Reason: rc.Reason, Message: rc.Detail, Certificates: []smimeCertificateJSON{}}
		for _, c := range rc.Certificates {
			j.Certificates = append(j.Certificates, smimeCertificateJSON{
				PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER})), SHA256: c.SHA256,
				Subject: c.Subject, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
			})
		}
		out.Recipients = append(out.Recipients, j)
	}
	writeJSON(w, http.StatusOK, out)
}

type smimeClassifyRequest struct {
	File     string `json:"file"` // base64 of the file's bytes (PEM, DER or PKCS#12)
	Password string `json:"password"`
}

type smimeClassifiedJSON struct {
	Subject       string    `json:"subject"`
	SHA256        string    `json:"sha256"`
	Class         string    `json:"class"`
	KeyAlgorithm  string    `json:"keyAlgorithm"`
	KeyUsage      []string  `json:"keyUsage"`
	ExtKeyUsage   []string  `json:"extKeyUsage"`
	Emails        []string  `json:"emails"`
	NotBefore     time.Time `json:"notBefore"`
	NotAfter      time.Time `json:"notAfter"`
	HasPrivateKey bool      `json:"hasPrivateKey"`
}

func (s *Server) smimeClassify(w http.ResponseWriter, r *http.Request) {
	if s.SMIME == nil {
		s.writeError(w, r, errNoSMIME)
		return
	}
	var req smimeClassifyRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	file, err := base64.StdEncoding.DecodeString(req.File)
	if err != nil {
		s.writeError(w, r, mailpush.Errorf(mailpush.EInvalid, "file must be the file's bytes in standard base64"))
		return
	}
	got, err := s.SMIME.Classify(r.Context(), file, req.Password)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]smimeClassifiedJSON, 0, len(got))
	nonNil := func(v []string) []string {
		if v == nil {
			return []string{}
		}
		return v
	}
	for _, c := range got {
		out = append(out, smimeClassifiedJSON{
			Subject: c.Subject, SHA256: c.SHA256, Class: c.Class, KeyAlgorithm: c.KeyAlgorithm,
			KeyUsage: nonNil(c.KeyUsage), ExtKeyUsage: nonNil(c.ExtKeyUsage), Emails: nonNil(c.Emails),
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, HasPrivateKey: c.HasPrivateKey,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"certificates": out})
}
