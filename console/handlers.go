package console

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// Routes registers the console under /admin/.
func (c *Console) Routes(mux *http.ServeMux) {
	mux.Handle("GET /admin/static/", c.static)
	mux.HandleFunc("GET /admin/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/tenants", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /admin", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/tenants", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /admin/login", c.loginPage)
	mux.HandleFunc("POST /admin/login", c.tokenSignIn)
	mux.HandleFunc("GET /admin/oidc/start", c.oidcStart)
	mux.HandleFunc("GET /admin/oidc/callback", c.oidcCallback)
	mux.Handle("POST /admin/logout", c.change(c.logout))
	mux.Handle("GET /admin/tenants", c.view(c.tenantsPage))
	mux.Handle("POST /admin/tenants/{id}", c.change(c.updateTenant))
	mux.Handle("GET /admin/registrations", c.view(c.registrationsPage))
	mux.Handle("GET /admin/subscriptions", c.view(c.subscriptionsPage))
	mux.Handle("GET /admin/deliveries", c.view(c.deliveriesPage))
	mux.Handle("GET /admin/deadletters", c.view(c.deadLettersPage))
	mux.Handle("POST /admin/deadletters/{tenant}/{id}/{action}", c.change(c.deadLetterAction))
	mux.Handle("GET /admin/gate", c.view(c.gatePage))
	mux.Handle("POST /admin/gate/devices", c.change(c.gateDeviceAction))
	mux.Handle("POST /admin/gate/rules/{op}", c.change(c.gateRuleAction))
	mux.Handle("POST /admin/gate/rules/{index}/{op}", c.change(c.gateRuleAction))
	mux.Handle("GET /admin/audit", c.view(c.auditPage))
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "not_found", "no console page "+r.URL.Path)
	})
}

type handler func(w http.ResponseWriter, r *http.Request, sess *session)

// view admits a signed-in administrator; others go to the sign-in page.
func (c *Console) view(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := c.current(r)
		if sess == nil {
			http.Redirect(w, r, "/admin/login", http.StatusSeeOther)
			return
		}
		h(w, r, sess)
	})
}

// change admits a form post of a signed-in administrator whose CSRF token
// matches; nothing is changed otherwise.
func (c *Console) change(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := c.current(r)
		if sess == nil {
			c.fail(w, r, http.StatusUnauthorized, "not_signed_in", "the session is missing or has expired: sign in again")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if !checkCSRF(r, sess) {
			c.fail(w, r, http.StatusForbidden, "csrf", "the form's CSRF token is missing or wrong (or the request came from another site): reload the page and try again")
			return
		}
		h(w, r, sess)
	})
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	Session *session
	Flash   string
	Data    any
}

func (c *Console) render(w http.ResponseWriter, status int, name string, p page) {
	t := c.pages[name]
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		c.cfg.Logger.Error("console template failed", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// No script may run on any console page; images only from here (the
	// SVG charts are inline).
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: under no-referrer browsers send
	// "Origin: null" with form posts, which the CSRF check refuses.
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	fmt.Fprint(w, b.String())
}

type failure struct{ Code, Message string }

// fail answers with an error page that names a stable code.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	c.render(w, status, "error", page{Title: "Error", Session: c.current(r), Data: failure{code, msg}})
}

// audit records a change; a change whose audit entry cannot be written is
// reported to the administrator (it was made: the store said so).
func (c *Console) audit(ctx context.Context, sess *session, tenantID, action, target, detail string) {
	e := &mailpush.AuditEntry{At: c.cfg.Clock.Now().UTC(), Actor: sess.actor, TenantID: tenantID, Action: action, Target: target, Detail: detail}
	if err := c.cfg.Store.AppendAudit(ctx, e); err != nil {
		c.cfg.Logger.Error("console: audit entry not written", "action", action, "err", err)
	}
	c.cfg.Logger.Info("console change", "actor", sess.actor, "tenant", tenantID, "action", action, "target", target)
}

// visibleTenants are the tenants this session may see: all for an
// operator, its own for a tenant admin.
func (c *Console) visibleTenants(ctx context.Context, sess *session) ([]*mailpush.Tenant, error) {
	all, err := c.cfg.Store.Tenants(ctx)
	if err != nil || sess.tenantID == "" {
		return all, err
	}
	return slices.DeleteFunc(all, func(t *mailpush.Tenant) bool { return t.ID != sess.tenantID }), nil
}

func (c *Console) mayChange(sess *session, tenantID string) bool {
	return sess.tenantID == "" || sess.tenantID == tenantID
}

// --- sign-in

type loginData struct {
	OIDC  bool
	Login string // the double-submit token of the sign-in form
	Error string
}

const loginCookie = "mailpush_admin_login"

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.showLogin(w, http.StatusOK, "")
}

func (c *Console) showLogin(w http.ResponseWriter, status int, msg string) {
	// The sign-in form has no session yet: its CSRF protection is a
	// double-submit token (cookie and field must match) plus SameSite.
	tok := randomString()
	c.setCookie(w, loginCookie, tok, 30*time.Minute, http.SameSiteStrictMode)
	c.render(w, status, "login", page{Title: "Sign in", Data: loginData{OIDC: c.cfg.OIDC != nil, Login: tok, Error: msg}})
}

func (c *Console) tokenSignIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	ck, err := r.Cookie(loginCookie)
	field := r.PostFormValue("login")
	if err != nil || field == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(field)) != 1 || !sameOrigin(r) {
		c.fail(w, r, http.StatusForbidden, "csrf", "the sign-in form's CSRF token is missing or wrong: reload the sign-in page")
		return
	}
	t, tok, err := mailpush.VerifyToken(r.Context(), c.cfg.Store, r.PostFormValue("token"))
	if err != nil {
		c.showLogin(w, http.StatusUnauthorized, mailpush.ErrorMessage(err))
		return
	}
	if tok.Scope != mailpush.ScopeAdmin {
		c.showLogin(w, http.StatusForbidden, fmt.Sprintf("this is a token of scope %s: the console needs a token of scope admin (mailpush token add --tenant %s --scope admin)", tok.Scope, t.Name))
		return
	}
	c.clearCookie(w, loginCookie)
	c.signIn(w, r, &session{actor: "token:" + tok.ID, Display: "admin of " + t.Name, tenantID: t.ID, tokenID: tok.ID})
}

func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o == "" || o == "http://"+r.Host || o == "https://"+r.Host
}

// signIn starts a session. The answer is a page that moves on by itself
// rather than a redirect: after the identity provider's cross-site
// redirect, a browser would not send a SameSite=Strict cookie on a
// redirect chain that began on another site.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request, sess *session) {
	cookie, err := c.sessions.create(r.Context(), sess)
	if err != nil {
		c.cfg.Logger.Error("console: could not store a session", "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, "store", "the session could not be stored: try again")
		return
	}
	c.setCookie(w, c.cookieName(), cookie, c.cfg.MaxAge, http.SameSiteStrictMode)
	c.audit(r.Context(), sess, sess.tenantID, "console.sign_in", sess.actor, "")
	c.render(w, http.StatusOK, "signedin", page{Title: "Signed in"})
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if ck, err := r.Cookie(c.cookieName()); err == nil {
		if err := c.sessions.delete(r.Context(), ck.Value); err != nil {
			c.fail(w, r, http.StatusServiceUnavailable, "store", "the session could not be ended: try again")
			return
		}
	}
	c.clearCookie(w, c.cookieName())
	http.Redirect(w, r, "/admin/login", http.StatusSeeOther)
}

// --- tenants

type tenantRow struct {
	Tenant *mailpush.Tenant
	Tokens map[mailpush.Scope][]*mailpush.Token
	Hosts  string
	Quota  *quotaView
}

// quotaView is a tenant's registration quota: the limits and what is used.
type quotaView struct {
	Quotas
	Registrations int
	Percent       int // of PerTenant used
	High          int // 90% of PerTenant: the meter warns above it
}

func (c *Console) tenantsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ts, err := c.visibleTenants(r.Context(), sess)
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	var rows []tenantRow
	for _, t := range ts {
		toks, err := c.cfg.Store.Tokens(r.Context(), t.ID)
		if err != nil {
			c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
			return
		}
		row := tenantRow{Tenant: t, Tokens: map[mailpush.Scope][]*mailpush.Token{}, Hosts: strings.Join(t.AllowedHosts, "\n")}
		if c.cfg.Quotas != nil {
			n, err := c.cfg.Store.CountRegistrations(r.Context(), t.ID)
			if err != nil {
				c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
				return
			}
			q := &quotaView{Registrations: n, Quotas: c.cfg.Quotas(t)}
			if q.PerTenant > 0 {
				q.Percent, q.High = min(100, n*100/q.PerTenant), q.PerTenant*9/10
			}
			row.Quota = q
		}
		for _, tok := range toks {
			row.Tokens[tok.Scope] = append(row.Tokens[tok.Scope], tok)
		}
		rows = append(rows, row)
	}
	c.render(w, http.StatusOK, "tenants", page{Title: "Tenants", Nav: "tenants", Session: sess, Flash: r.URL.Query().Get("done"), Data: rows})
}

func (c *Console) updateTenant(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	if !c.mayChange(sess, id) {
		c.fail(w, r, http.StatusForbidden, "forbidden", "this session administers another tenant")
		return
	}
	content := mailpush.ContentMode(r.PostFormValue("maxContent"))
	if content.Rank() < 0 {
		c.fail(w, r, http.StatusBadRequest, "invalid_content", fmt.Sprintf("content policy must be badge, subject or subject_sender, not %q", content))
		return
	}
	var hosts []string
	for h := range strings.FieldsSeq(r.PostFormValue("hosts")) {
		if len(h) > 253 || strings.ContainsAny(h, "/@?#") {
			c.fail(w, r, http.StatusBadRequest, "invalid_host", fmt.Sprintf("allowed host %q is not a host name (or *.domain)", h))
			return
		}
		hosts = append(hosts, strings.ToLower(h))
	}
	ts, err := c.cfg.Store.Tenants(r.Context())
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	i := slices.IndexFunc(ts, func(t *mailpush.Tenant) bool { return t.ID == id })
	if i < 0 {
		c.fail(w, r, http.StatusNotFound, "not_found", "no such tenant")
		return
	}
	t := ts[i]
	before := fmt.Sprintf("maxContent=%s hosts=%s", t.MaxContent, strings.Join(t.AllowedHosts, ","))
	t.MaxContent, t.AllowedHosts = content, hosts
	if err := c.cfg.Store.UpdateTenant(r.Context(), t); err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	c.audit(r.Context(), sess, t.ID, "tenant.update", t.Name, before+" -> "+fmt.Sprintf("maxContent=%s hosts=%s", content, strings.Join(hosts, ",")))
	http.Redirect(w, r, "/admin/tenants?done=tenant+"+t.Name+"+updated", http.StatusSeeOther)
}

// --- registrations

type mailboxResult struct {
	Tenant  string
	Mailbox *mailpush.Mailbox
	Hash    string
	Regs    []*mailpush.Registration
}

type registrationsData struct {
	Query   string
	Hash    string
	Error   string
	Results []mailboxResult
}

func (c *Console) registrationsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	q := strings.TrimSpace(r.URL.Query().Get("address"))
	d := registrationsData{Query: q}
	status := http.StatusOK
	switch {
	case q == "":
	case len(q) > 320 || !strings.Contains(q, "@"):
		d.Error, status = "an address looks like alice@example.com", http.StatusBadRequest
	default:
		ts, err := c.visibleTenants(r.Context(), sess)
		if err != nil {
			c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
			return
		}
		for _, t := range ts {
			hash := c.cfg.Hasher.HashAddress(t.ID, q)
			if d.Hash == "" {
				d.Hash = hex.EncodeToString(hash)
			}
			for _, src := range []mailpush.Source{mailpush.SourceEWS, mailpush.SourceGraph, mailpush.SourceDovecot} {
				mb, err := c.cfg.Store.MailboxByAddress(r.Context(), t.ID, hash, src)
				if mailpush.ErrorCode(err) == mailpush.ENotFound {
					continue
				}
				if err != nil {
					c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
					return
				}
				regs, err := c.cfg.Store.ActiveRegistrations(r.Context(), mb.ID)
				if err != nil {
					c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
					return
				}
				d.Results = append(d.Results, mailboxResult{Tenant: t.Name, Mailbox: mb, Hash: hex.EncodeToString(hash), Regs: regs})
			}
		}
	}
	c.render(w, status, "registrations", page{Title: "Registrations", Nav: "registrations", Session: sess, Data: d})
}

// --- subscriptions

type healthData struct {
	OverdueAfter time.Duration
	Sources      []sourceHealth
}

// sourceHealth is one source's part of the subscriptions page.
type sourceHealth struct {
	Source mailpush.Source
	Rows   []mailpush.SourceHealth
	// Engine is false for a source without subscriptions to renew
	// (Dovecot pushes on its own) or whose engine is off.
	Engine   bool
	DueAfter time.Duration
	Due      []dueWindow
	Running  []mailpush.HealRecord
	Ended    []mailpush.HealRecord
}

type dueWindow struct {
	Label string
	Count int
}

// dueWindows are the upcoming windows the page counts renewals in.
var dueWindows = []struct {
	label string
	d     time.Duration
}{{"due now", 0}, {"within the next hour", time.Hour}, {"within the next day", 24 * time.Hour}}

// overdueAfter is when a subscription that sent nothing counts as overdue:
// twice Exchange's default status frequency (5 minutes).
const overdueAfter = 10 * time.Minute

func (c *Console) subscriptionsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	now := c.cfg.Clock.Now()
	rows, err := c.cfg.Store.SubscriptionHealth(ctx, sess.tenantID, now.Add(-overdueAfter))
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	d := healthData{OverdueAfter: overdueAfter}
	others := func(h mailpush.HealRecord) bool { return !c.mayChange(sess, h.TenantID) }
	for _, src := range []mailpush.Source{mailpush.SourceEWS, mailpush.SourceGraph, mailpush.SourceDovecot} {
		sh := sourceHealth{Source: src}
		for _, row := range rows {
			if row.Source == src {
				sh.Rows = append(sh.Rows, row)
			}
		}
		if e, ok := c.cfg.Engines[src]; ok && e.DueAfter > 0 {
			sh.Engine, sh.DueAfter = true, e.DueAfter
			before := make([]time.Time, len(dueWindows))
			for i, win := range dueWindows {
				before[i] = now.Add(win.d - e.DueAfter)
			}
			counts, err := c.cfg.Store.DueSubscriptions(ctx, sess.tenantID, src, before)
			if err != nil {
				c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
				return
			}
			for i, win := range dueWindows {
				sh.Due = append(sh.Due, dueWindow{win.label, counts[i]})
			}
			if e.Healing != nil {
				sh.Running, sh.Ended = e.Healing()
				sh.Running, sh.Ended = slices.DeleteFunc(sh.Running, others), slices.DeleteFunc(sh.Ended, others)
			}
		}
		d.Sources = append(d.Sources, sh)
	}
	c.render(w, http.StatusOK, "subscriptions", page{Title: "Subscriptions", Nav: "subscriptions", Session: sess, Data: d})
}

// --- dead letters

func (c *Console) deadLettersPage(w http.ResponseWriter, r *http.Request, sess *session) {
	dls, err := c.cfg.Store.DeadLetters(r.Context(), 500)
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	dls = slices.DeleteFunc(dls, func(d mailpush.DeadLetter) bool { return !c.mayChange(sess, d.TenantID) })
	c.render(w, http.StatusOK, "deadletters", page{Title: "Dead letters", Nav: "deadletters", Session: sess, Flash: r.URL.Query().Get("done"), Data: dls})
}

// deadLetterAction retries or drops a dead letter. A dead letter keeps no
// content (by design), so a retry sends the mailbox's current badge to the
// registration's device: what the device missed is brought up to date,
// without the lost alert's subject ever having been kept.
func (c *Console) deadLetterAction(w http.ResponseWriter, r *http.Request, sess *session) {
	tenantID, id, action := r.PathValue("tenant"), r.PathValue("id"), r.PathValue("action")
	if action != "retry" && action != "drop" {
		c.fail(w, r, http.StatusNotFound, "not_found", "a dead letter can be retried or dropped")
		return
	}
	if !c.mayChange(sess, tenantID) {
		c.fail(w, r, http.StatusForbidden, "forbidden", "this session administers another tenant")
		return
	}
	ctx := r.Context()
	dls, err := c.cfg.Store.DeadLetters(ctx, 500)
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	i := slices.IndexFunc(dls, func(d mailpush.DeadLetter) bool { return d.TenantID == tenantID && d.PushID == id })
	if i < 0 {
		c.fail(w, r, http.StatusNotFound, "not_found", "no such dead letter (already retried or dropped?)")
		return
	}
	dl := dls[i]
	if action == "retry" {
		mb, err := c.cfg.Store.Mailbox(ctx, dl.MailboxID)
		if err != nil {
			c.fail(w, r, http.StatusConflict, "mailbox_gone", "the dead letter's mailbox is gone: drop it instead")
			return
		}
		p := &mailpush.Push{ID: newPushID(), TenantID: dl.TenantID, RegistrationID: dl.RegistrationID, MailboxID: dl.MailboxID,
			Kind: mailpush.PushBadge, Badge: mb.Badge, Seq: mb.Seq, CollapseID: "badge", CreatedAt: c.cfg.Clock.Now().UTC()}
		if err := c.cfg.Store.EnqueuePushes(ctx, []*mailpush.Push{p}); err != nil {
			c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
			return
		}
	}
	if err := c.cfg.Store.DropDeadLetter(ctx, tenantID, id); err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	c.audit(ctx, sess, tenantID, "deadletter."+action, id, "registration "+dl.RegistrationID+", reason "+dl.Reason)
	http.Redirect(w, r, "/admin/deadletters?done=dead+letter+"+action+"+done", http.StatusSeeOther)
}

func newPushID() string {
	s := randomString()
	return s[:26]
}

// --- gate

type gateData struct {
	Info       *GateInfo
	ShowGate   bool // the gate's rules and decisions are this session's to see
	Rules      []ruleView
	Version    int64
	Decisions  []mailpush.GateDecisionRecord
	Allowed    uint64
	Denied     uint64
	Tenant     *mailpush.Tenant
	Devices    []*mailpush.GateDevice
	CanChange  bool
	HasGate    bool
	HasDevices bool
	Query      string
}

func (c *Console) gatePage(w http.ResponseWriter, r *http.Request, sess *session) {
	d := gateData{Info: c.cfg.Gate, HasGate: c.cfg.Gate != nil, Query: r.URL.Query().Get("device")}
	if d.HasGate && c.cfg.Gate.Decisions != nil {
		d.Allowed, d.Denied = c.cfg.Gate.Decisions()
	}
	if d.ShowGate = c.gateTenantVisible(sess); d.ShowGate {
		if ed := c.cfg.Gate.Rules; ed != nil {
			rules, version, err := ed.GateRules(r.Context())
			if err != nil {
				c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
				return
			}
			d.Rules, d.Version = ruleViews(rules), version
		}
		if c.cfg.Gate.Recent != nil {
			d.Decisions = c.cfg.Gate.Recent.Recent()
		}
	}
	ts, err := c.visibleTenants(r.Context(), sess)
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	want := r.URL.Query().Get("tenant")
	if want == "" && c.cfg.Gate != nil {
		want = c.cfg.Gate.TenantID
	}
	for _, t := range ts {
		if t.ID == want || (want == "" && d.Tenant == nil) {
			d.Tenant = t
		}
	}
	if d.Tenant != nil {
		d.Devices, err = c.cfg.Store.GateDevices(r.Context(), d.Tenant.ID, 200)
		if err != nil {
			c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
			return
		}
		if d.Query != "" {
			q := strings.ToUpper(d.Query)
			d.Devices = slices.DeleteFunc(d.Devices, func(g *mailpush.GateDevice) bool { return !strings.Contains(strings.ToUpper(g.DeviceID), q) })
		}
		d.HasDevices = len(d.Devices) > 0
		d.CanChange = c.cfg.Registry != nil && c.mayChange(sess, d.Tenant.ID)
	}
	c.render(w, http.StatusOK, "gate", page{Title: "Gate", Nav: "gate", Session: sess, Flash: r.URL.Query().Get("done"), Data: d})
}

func (c *Console) gateDeviceAction(w http.ResponseWriter, r *http.Request, sess *session) {
	tenantID, deviceID := r.PostFormValue("tenant"), r.PostFormValue("device")
	state := mailpush.DeviceState(r.PostFormValue("state"))
	if c.cfg.Registry == nil {
		c.fail(w, r, http.StatusNotFound, "no_gate", "the gate registry is not available")
		return
	}
	if !c.mayChange(sess, tenantID) {
		c.fail(w, r, http.StatusForbidden, "forbidden", "this session administers another tenant")
		return
	}
	switch state {
	case mailpush.DeviceBlocked, mailpush.DeviceCompliant, mailpush.DeviceWiped:
	default:
		c.fail(w, r, http.StatusBadRequest, "invalid_state", fmt.Sprintf("a device can be blocked, allowed (compliant) or wiped, not %q", state))
		return
	}
	cur, err := c.cfg.Registry.Device(r.Context(), tenantID, deviceID)
	if err != nil {
		c.fail(w, r, http.StatusNotFound, "not_found", "no such gate device")
		return
	}
	// The user the MDM reported is kept (the console knows only its hash).
	_, removed, err := c.cfg.Registry.SetDevice(r.Context(), tenantID, mailpush.GateDeviceUpdate{DeviceID: cur.DeviceID, DeviceType: cur.DeviceType, UserHash: cur.UserHash, State: state})
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, mailpush.ErrorCode(err), mailpush.ErrorMessage(err))
		return
	}
	c.audit(r.Context(), sess, tenantID, "gate."+string(state), cur.DeviceID, fmt.Sprintf("was %s; %d push registrations removed", cur.State, removed))
	http.Redirect(w, r, "/admin/gate?tenant="+tenantID+"&done=device+"+cur.DeviceID+"+is+now+"+string(state), http.StatusSeeOther)
}

// --- audit

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, sess *session) {
	es, err := c.cfg.Store.AuditEntries(r.Context(), sess.tenantID, 200)
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	c.render(w, http.StatusOK, "audit", page{Title: "Audit log", Nav: "audit", Session: sess, Data: es})
}
