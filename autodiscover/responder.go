package autodiscover

// The responder: the server side of the protocols the Client speaks, so that
// a company running mailpush needs nothing else for zero-touch set-up. It
// lives beside the client because both are one protocol: they share the
// schemas and the message shapes, and each is tested against the other.
//
// No user enumeration: the responder has no directory and no store. Every
// address of a configured domain gets the same settings (the address is
// echoed where the protocol wants it, nothing else differs), and the work
// done is the same whether or not a mailbox of that name exists, because
// existence is never looked up. An address outside every configured domain
// gets the protocol's fixed "not found" answer; which domains are served is
// no secret (their DNS already points here).

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/mailpush/mailpush"
)

// MailServer is an IMAP or SMTP server offered to clients.
type MailServer struct {
	Host string
	Port int
	// Security is "SSL" (implicit TLS) or "STARTTLS". Plain text is not
	// offered: passwords would cross the network in clear.
	Security string
}

// Site is what the responder answers for one tenant's mail domains.
type Site struct {
	Tenant      string   // tenant name, for logs
	Domains     []string // mail domains answered for
	DisplayName string   // the organization, as clients show it
	// EWSURL is the Exchange Web Services URL (POX EXCH/EXPR EwsUrl and
	// ASUrl, JSON Protocol=EWS).
	EWSURL string
	// ActiveSyncURL is the ActiveSync URL devices use: the reverse proxy
	// in front of Exchange that consults mailpush's gate (mobilesync
	// MobileSync, JSON Protocol=ActiveSync, the Apple EAS payload).
	ActiveSyncURL string
	// PushURL is mailpush's device API (JSON Protocol=Mailpush).
	PushURL string
	// IMAP and SMTP, for IMAP tenants (autoconfig, POX IMAP/SMTP blocks,
	// the Apple mail payload).
	IMAP, SMTP *MailServer
	// Profile signs the Apple configuration profile; nil leaves it unsigned.
	Profile *ProfileSigner
}

// Responder answers autodiscover requests for the configured sites.
type Responder struct {
	logger   *slog.Logger
	byDomain map[string]*Site
}

// NewResponder checks the sites and returns their responder. Every URL must
// be absolute https; a domain belongs to one site only.
func NewResponder(sites []Site, logger *slog.Logger) (*Responder, error) {
	r := &Responder{logger: logger, byDomain: map[string]*Site{}}
	var errs []error
	for i := range sites {
		s := &sites[i]
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("tenants.%s.autodiscover.%s", s.Tenant, fmt.Sprintf(format, args...)))
		}
		if len(s.Domains) == 0 {
			bad("domains: list the mail domains to answer for")
		}
		for _, d := range s.Domains {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			if _, _, err := SplitAddress("x@" + d); err != nil || strings.ContainsAny(d, "*:") {
				bad("domains: %q is not a mail domain", d)
				continue
			}
			if other, dup := r.byDomain[d]; dup {
				bad("domains: %s is also tenant %s's", d, other.Tenant)
				continue
			}
			r.byDomain[d] = s
		}
		for key, u := range map[string]string{"ewsUrl": s.EWSURL, "activeSyncUrl": s.ActiveSyncURL, "pushUrl": s.PushURL} {
			if u == "" {
				continue
			}
			if p, err := url.Parse(u); err != nil || p.Scheme != "https" || p.Host == "" || p.User != nil {
				bad("%s: %q is not an absolute https URL", key, u)
			}
		}
		for key, m := range map[string]*MailServer{"imap": s.IMAP, "smtp": s.SMTP} {
			if m == nil {
				continue
			}
			if m.Host == "" || m.Port < 1 || m.Port > 65535 {
				bad("%s: host and port (1 to 65535) are required", key)
			}
			if m.Security != "SSL" && m.Security != "STARTTLS" {
				bad("%s.security: %q must be SSL or STARTTLS", key, m.Security)
			}
		}
		if s.EWSURL == "" && s.ActiveSyncURL == "" && s.IMAP == nil {
			bad("ewsUrl: set ewsUrl, activeSyncUrl or imap: there is nothing to answer")
		}
		if (s.IMAP == nil) != (s.SMTP == nil) {
			bad("smtp: imap and smtp go together")
		}
	}
	return r, errors.Join(errs...)
}

// Paths of the responder.
const (
	POXPath          = "/autodiscover/autodiscover.xml"
	JSONPath         = "/autodiscover/autodiscover.json/v1.0/"
	WellKnownPath    = "/.well-known/autoconfig/mail/config-v1.1.xml"
	AutoconfigPath   = "/mail/config-v1.1.xml"
	MobileconfigPath = "/autodiscover/mail.mobileconfig"
)

// Routes registers the responder's routes on mux. ActiveSync devices send
// the POX path capitalized, Outlook in lower case: both are served.
func (r *Responder) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+POXPath, r.servePOX)
	mux.HandleFunc("POST /Autodiscover/Autodiscover.xml", r.servePOX)
	mux.HandleFunc("GET "+JSONPath+"{address}", r.serveJSON)
	mux.HandleFunc("GET "+WellKnownPath, r.serveAutoconfig)
	mux.HandleFunc("GET "+AutoconfigPath, r.serveAutoconfig)
	mux.HandleFunc("GET "+MobileconfigPath, r.serveMobileconfig)
}

// site returns the site of an address's domain, or nil.
func (r *Responder) site(domain string) *Site {
	return r.byDomain[domain]
}

// --- POX (Outlook and mobilesync) ---

type poxError struct {
	XMLName xml.Name `xml:"Autodiscover"`
	Xmlns   string   `xml:"xmlns,attr"`
	Error   struct {
		Time      string `xml:"Time,attr"`
		Id        string `xml:"Id,attr"`
		ErrorCode int    `xml:"ErrorCode"`
		Message   string `xml:"Message"`
		DebugData string `xml:"DebugData"`
	} `xml:"Response>Error"`
}

type outlookAnswer struct {
	XMLName  xml.Name `xml:"Autodiscover"`
	Xmlns    string   `xml:"xmlns,attr"`
	Response struct {
		Xmlns string `xml:"xmlns,attr"`
		User  struct {
			AutoDiscoverSMTPAddress string `xml:"AutoDiscoverSMTPAddress"`
		} `xml:"User"`
		Account struct {
			AccountType string         `xml:"AccountType"`
			Action      string         `xml:"Action"`
			Protocols   []outlookProto `xml:"Protocol"`
		} `xml:"Account"`
	} `xml:"Response"`
}

type outlookProto struct {
	Type         string `xml:"Type"`
	Server       string `xml:"Server"`
	Port         int    `xml:"Port,omitempty"`
	LoginName    string `xml:"LoginName,omitempty"`
	SSL          string `xml:"SSL,omitempty"`
	Encryption   string `xml:"Encryption,omitempty"`
	SPA          string `xml:"SPA,omitempty"`
	AuthRequired string `xml:"AuthRequired,omitempty"`
	ASUrl        string `xml:"ASUrl,omitempty"`
	EwsUrl       string `xml:"EwsUrl,omitempty"`
	OOFUrl       string `xml:"OOFUrl,omitempty"`
}

type mobilesyncAnswer struct {
	XMLName  xml.Name `xml:"Autodiscover"`
	Xmlns    string   `xml:"xmlns,attr"`
	Response struct {
		Xmlns   string `xml:"xmlns,attr"`
		Culture string `xml:"Culture"`
		User    struct {
			EMailAddress string `xml:"EMailAddress"`
		} `xml:"User"`
		Action struct {
			Settings *struct {
				Server struct {
					Type string `xml:"Type"`
					URL  string `xml:"Url"`
					Name string `xml:"Name"`
				} `xml:"Server"`
			} `xml:"Settings,omitempty"`
			Error *struct {
				Status    int    `xml:"Status"`
				Message   string `xml:"Message"`
				DebugData string `xml:"DebugData"`
			} `xml:"Error,omitempty"`
		} `xml:"Action"`
	} `xml:"Response"`
}

// notFoundMessage is the one answer for an address no site serves.
const notFoundMessage = "The e-mail address cannot be found."

func (r *Responder) servePOX(w http.ResponseWriter, req *http.Request) {
	if ct := req.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "text/xml" && mt != "application/xml") {
			r.poxFail(w, http.StatusUnsupportedMediaType, mailpush.Errorf(mailpush.EMediaType, "Content-Type must be text/xml, not %q", ct))
			return
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxRequestSize))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			r.poxFail(w, http.StatusRequestEntityTooLarge, mailpush.Errorf(mailpush.ETooLarge, "the autodiscover request exceeds %d bytes", MaxRequestSize))
			return
		}
		r.poxFail(w, http.StatusBadRequest, mailpush.Errorf(mailpush.EInvalid, "cannot read the request body"))
		return
	}
	preq, err := ParseRequest(data)
	if err != nil {
		status := http.StatusBadRequest
		if mailpush.ErrorCode(err) == mailpush.ETooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		r.poxFail(w, status, err)
		return
	}
	_, domain, _ := SplitAddress(preq.Address) // checked by ParseRequest
	site := r.site(domain)
	var out any
	switch preq.Kind {
	case KindOutlook:
		out = outlookFor(site, preq.Address)
	case KindMobileSync:
		out = mobilesyncFor(site, preq.Address)
	}
	writeXML(w, http.StatusOK, out)
}

// poxFail answers a request that cannot be read with the outlook schema's
// error (ErrorCode 600, "Invalid Request") and a 4xx status; DebugData
// carries mailpush's stable code, Message says what is wrong.
func (r *Responder) poxFail(w http.ResponseWriter, status int, err error) {
	writeXML(w, status, newPOXError(600, "Invalid Request: "+mailpush.ErrorMessage(err), mailpush.ErrorCode(err)))
}

// newPOXError is the schema's error answer. Time and Id are fixed: they
// would only tell an attacker about the server.
func newPOXError(code int, message, debug string) poxError {
	var e poxError
	e.Xmlns = envelopeSchema
	e.Error.Time, e.Error.Id = "00:00:00.0000000", "0"
	e.Error.ErrorCode, e.Error.Message, e.Error.DebugData = code, message, debug
	return e
}

func outlookFor(site *Site, address string) any {
	if site == nil || (site.EWSURL == "" && site.IMAP == nil) {
		// Exchange's own answer for an address it does not know.
		return newPOXError(500, notFoundMessage, mailpush.ENotFound)
	}
	var a outlookAnswer
	a.Xmlns = envelopeSchema
	a.Response.Xmlns = outlookResponseSchema
	a.Response.User.AutoDiscoverSMTPAddress = address
	acc := &a.Response.Account
	acc.AccountType = "email"
	acc.Action = "settings"
	if site.EWSURL != "" {
		host := hostOf(site.EWSURL)
		for _, typ := range []string{"EXCH", "EXPR"} {
			p := outlookProto{Type: typ, Server: host, ASUrl: site.EWSURL, EwsUrl: site.EWSURL, OOFUrl: site.EWSURL}
			if typ == "EXPR" {
				p.SSL = "On"
				p.AuthRequired = "On"
			}
			acc.Protocols = append(acc.Protocols, p)
		}
	}
	if site.IMAP != nil {
		acc.Protocols = append(acc.Protocols, outlookMail("IMAP", site.IMAP, address), outlookMail("SMTP", site.SMTP, address))
	}
	return a
}

func outlookMail(typ string, m *MailServer, address string) outlookProto {
	p := outlookProto{Type: typ, Server: m.Host, Port: m.Port, LoginName: address, SPA: "off", AuthRequired: "on", SSL: "on"}
	if m.Security == "STARTTLS" {
		p.Encryption = "TLS"
	} else {
		p.Encryption = "SSL"
	}
	return p
}

func mobilesyncFor(site *Site, address string) mobilesyncAnswer {
	var a mobilesyncAnswer
	a.Xmlns = envelopeSchema
	a.Response.Xmlns = mobilesyncResponseSchema
	a.Response.Culture = "en:us"
	a.Response.User.EMailAddress = address
	act := &a.Response.Action
	if site == nil || site.ActiveSyncURL == "" {
		act.Error = &struct {
			Status    int    `xml:"Status"`
			Message   string `xml:"Message"`
			DebugData string `xml:"DebugData"`
		}{Status: 1, Message: notFoundMessage, DebugData: mailpush.ENotFound}
		return a
	}
	act.Settings = &struct {
		Server struct {
			Type string `xml:"Type"`
			URL  string `xml:"Url"`
			Name string `xml:"Name"`
		} `xml:"Server"`
	}{}
	act.Settings.Server.Type = "MobileSync"
	act.Settings.Server.URL = site.ActiveSyncURL
	act.Settings.Server.Name = site.ActiveSyncURL
	return a
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

func writeXML(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	if err := xml.NewEncoder(&b).Encode(v); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// --- JSON v2 ---

type jsonAnswer struct {
	Protocol string `json:"Protocol"`
	URL      string `json:"Url"`
}

type jsonError struct {
	ErrorCode    string `json:"ErrorCode"`
	ErrorMessage string `json:"ErrorMessage"`
}

// jsonProtocols are the Protocol values answered, by lower-cased name.
var jsonProtocols = map[string]string{"ews": "EWS", "activesync": "ActiveSync", "autodiscoverv1": "AutodiscoverV1", "mailpush": "Mailpush"}

func (r *Responder) serveJSON(w http.ResponseWriter, req *http.Request) {
	address := req.PathValue("address")
	_, domain, err := SplitAddress(address)
	if err != nil {
		r.jsonFail(w, http.StatusBadRequest, err)
		return
	}
	q := req.URL.Query().Get("Protocol")
	if q == "" {
		q = req.URL.Query().Get("protocol")
	}
	proto, ok := jsonProtocols[strings.ToLower(q)]
	if !ok {
		r.jsonFail(w, http.StatusBadRequest, mailpush.Errorf(mailpush.EInvalid, "Protocol %q is not supported: use EWS, ActiveSync, AutodiscoverV1 or Mailpush", truncate(q)))
		return
	}
	var u string
	if site := r.site(domain); site != nil {
		switch proto {
		case "EWS":
			u = site.EWSURL
		case "ActiveSync":
			u = site.ActiveSyncURL
		case "AutodiscoverV1":
			if site.EWSURL != "" || site.ActiveSyncURL != "" {
				u = "https://" + autodiscoverHost(req, domain) + POXPath
			}
		case "Mailpush":
			u = site.PushURL
		}
	}
	if u == "" {
		r.jsonFail(w, http.StatusNotFound, mailpush.Errorf(mailpush.ENotFound, "no %s settings for this address", proto))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(jsonAnswer{Protocol: proto, URL: u})
}

// autodiscoverHost is the host this request reached, when it is one of the
// domain's autodiscover names, else autodiscover.<domain>: the answer never
// echoes a Host header that is not the domain's.
func autodiscoverHost(req *http.Request, domain string) string {
	host := strings.ToLower(req.Host)
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	if name == domain || name == "autodiscover."+domain {
		return host
	}
	return "autodiscover." + domain
}

func (r *Responder) jsonFail(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(jsonError{ErrorCode: mailpush.ErrorCode(err), ErrorMessage: mailpush.ErrorMessage(err)})
}

// --- Thunderbird autoconfig ---

type clientConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Version  string   `xml:"version,attr"`
	Provider struct {
		ID               string         `xml:"id,attr"`
		Domain           []string       `xml:"domain"`
		DisplayName      string         `xml:"displayName"`
		DisplayShortName string         `xml:"displayShortName"`
		Incoming         []autoconfigIn `xml:"incomingServer"`
		Outgoing         []autoconfigIn `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type autoconfigIn struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port,omitempty"`
	SocketType     string `xml:"socketType,omitempty"`
	Authentication string `xml:"authentication"`
	Username       string `xml:"username"`
	OWAURL         string `xml:"owaURL,omitempty"`
	EWSURL         string `xml:"ewsURL,omitempty"`
}

// serveAutoconfig answers Thunderbird: the domain comes from emailaddress
// when given, else from the Host (autoconfig.<domain> or <domain>).
func (r *Responder) serveAutoconfig(w http.ResponseWriter, req *http.Request) {
	var domain string
	if a := req.URL.Query().Get("emailaddress"); a != "" {
		_, d, err := SplitAddress(a)
		if err != nil {
			http.Error(w, mailpush.ErrorCode(err)+": "+mailpush.ErrorMessage(err), http.StatusBadRequest)
			return
		}
		domain = d
	} else {
		host := strings.ToLower(req.Host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		domain = strings.TrimPrefix(host, "autoconfig.")
	}
	site := r.site(domain)
	if site == nil || (site.IMAP == nil && site.EWSURL == "") {
		http.Error(w, mailpush.ENotFound+": no mail settings for this domain", http.StatusNotFound)
		return
	}
	var c clientConfig
	c.Version = "1.1"
	c.Provider.ID = domain
	c.Provider.Domain = []string{domain}
	c.Provider.DisplayName = site.DisplayName
	c.Provider.DisplayShortName = site.DisplayName
	if site.IMAP != nil {
		c.Provider.Incoming = append(c.Provider.Incoming, autoconfigServer("imap", site.IMAP))
		c.Provider.Outgoing = append(c.Provider.Outgoing, autoconfigServer("smtp", site.SMTP))
	}
	if site.EWSURL != "" {
		c.Provider.Incoming = append(c.Provider.Incoming, autoconfigIn{Type: "exchange", Hostname: hostOf(site.EWSURL),
			Authentication: "password-cleartext", Username: "%EMAILADDRESS%", EWSURL: site.EWSURL})
	}
	writeXML(w, http.StatusOK, c)
}

func autoconfigServer(typ string, m *MailServer) autoconfigIn {
	return autoconfigIn{Type: typ, Hostname: m.Host, Port: m.Port, SocketType: m.Security,
		Authentication: "password-cleartext", Username: "%EMAILADDRESS%"}
}
