package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/graphfake"
)

const (
	graphClientID     = "5e1c0a11-0000-4000-8000-00000000a991"
	graphClientSecret = "graph-client-secret-Zq8~very-secret"
	graphUser         = "megan.bowen@contoso.example"
)

// graphWorld is a world whose tenant "acme" has an Entra ID app on a fake
// Graph (client secret in a file), with one user.
type graphWorld struct {
	*world
	graph   *graphfake.Server
	app     string // acme's app token
	backend string // acme's backend token
}

func newGraphWorld(t testing.TB) *graphWorld {
	t.Helper()
	return newGraphWorldLevel(t, "debug")
}

// newGraphWorldLevel is newGraphWorld with a log level.
func newGraphWorldLevel(t testing.TB, logLevel string) *graphWorld {
	t.Helper()
	return newGraphWorldOptions(t, logLevel, "")
}

// newGraphWorldOptions is newGraphWorld with a log level and more YAML.
func newGraphWorldOptions(t testing.TB, logLevel, yaml string) *graphWorld {
	t.Helper()
	return newGraphWorldWith(t, logLevel, yaml, worldOptions{})
}

// newGraphWorldWith is newGraphWorldOptions with world options (its extra
// is replaced by the Graph tenant's).
func newGraphWorldWith(t testing.TB, logLevel, yaml string, o worldOptions) *graphWorld {
	t.Helper()
	g := graphfake.New(graphfake.Options{})
	t.Cleanup(g.Close)
	g.AddApp(graphClientID, graphClientSecret, nil)
	g.AddUser(graphUser)
	secretFile := filepath.Join(t.TempDir(), "graph-secret")
	os.WriteFile(secretFile, []byte(graphClientSecret+"\n"), 0o600)
	o.extra = func(*world) (string, []*x509.Certificate) {
		return yaml + fmt.Sprintf(`tenants:
  acme:
    graph:
      tenantId: %s
      clientId: %s
      clientSecretFile: %s
      authority: %s
      graphUrl: %s
`, g.TenantID(), graphClientID, secretFile, g.Authority(), g.GraphURL()), []*x509.Certificate{g.Certificate()}
	}
	w := newWorldWith(t, logLevel, o)
	gw := &graphWorld{world: w, graph: g, app: w.addTenant(t, "acme")}
	gw.backend = w.addToken(t, "acme", mailpush.ScopeBackend)
	return gw
}

func (gw *graphWorld) register(t testing.TB, token, device, userToken string) (int, map[string]any) {
	t.Helper()
	mb := map[string]any{"address": graphUser, "source": "graph"}
	if userToken != "" {
		mb["userToken"] = userToken
	}
	return gw.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device": map[string]any{"platform": "ios", "token": device}, "mailbox": mb, "content": "subject_sender",
	})
}

func (gw *graphWorld) userToken(mutate func(jwt.MapClaims)) string {
	return gw.graph.UserToken(graphUser, graphClientID, time.Hour, mutate)
}

// waitPush waits for the device's badge (what its last push carrying one
// set) to be badge and, when subject is set, for an alert with that subject
// and sender to have reached it. The alert need not be the last push: a
// resync racing with the new mail (after a subscription is made again) may
// push the same badge after it, or take a higher sequence first so that the
// alert goes without its stale badge; the device shows the same either way.
func (gw *graphWorld) waitPush(t *testing.T, device string, badge int, subject, sender string) {
	t.Helper()
	waitForExplained(t, fmt.Sprintf("push with badge %d %q", badge, subject), func(ctx context.Context) error {
		return gw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			ps := pushesTo(all, device)
			shown, alerted := -1, subject == ""
			for _, p := range ps {
				if p.Badge != -1 {
					shown = p.Badge
				}
				text := p.AlertTitle + " " + p.AlertBody
				alerted = alerted || strings.Contains(text, subject) && strings.Contains(text, sender)
			}
			return shown == badge && alerted
		})
	}, func() string { return describePushes(gw.apple.PushesFor(device)) })
}

// describePushes says what a device received, for a failed wait.
func describePushes(ps []apnsfake.Push) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "\n  seq %d badge %d type %s alert %q", p.Seq, p.Badge, p.PushType, p.AlertTitle+" "+p.AlertBody)
	}
	return b.String()
}

func (gw *graphWorld) oneSubscription(t *testing.T) graphfake.Subscription {
	t.Helper()
	subs := gw.graph.Subscriptions()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions on Graph, want 1: %+v", len(subs), subs)
	}
	return subs[0]
}

// TestGraphEndToEnd is the scenario over real sockets through Main.
func TestGraphEndToEnd(t *testing.T) {
	gw := newGraphWorld(t)
	device := deviceToken(700)
	userToken := gw.userToken(nil)
	st, reg := gw.register(t, gw.app, device, userToken)
	if st != 201 || reg["status"] != "active" || reg["mode"] != "service" {
		t.Fatalf("register = %d %v, want 201 active service", st, reg)
	}
	sub := gw.oneSubscription(t)
	if !strings.Contains(sub.Resource, "mailFolders('inbox')/messages") || sub.ChangeType != "created,updated,deleted" ||
		sub.LifecycleNotificationURL == "" || len(sub.ClientState) < 20 || len(sub.ClientState) > 128 {
		t.Fatalf("subscription = %+v", sub)
	}

	// A second device of the same user shares the subscription.
	second := deviceToken(701)
	if st, reg := gw.register(t, gw.app, second, gw.userToken(nil)); st != 201 || reg["status"] != "active" {
		t.Fatalf("second device = %d %v", st, reg)
	}
	if n := gw.graph.Requests("create"); n != 1 {
		t.Errorf("%d subscriptions created for one mailbox, want 1", n)
	}

	// Three messages: badges 1, 2, 3 with subject and sender.
	var ids []string
	for i, m := range []struct{ subject, from string }{{"Quarterly numbers", "Adele Vance"}, {"Lunch?", "Alex Wilber"}, {"Board meeting", "Carol Danvers"}} {
		ids = append(ids, gw.graph.Deliver(graphUser, m.subject, m.from, "sender@contoso.example"))
		gw.waitPush(t, device, i+1, m.subject, m.from)
		gw.waitPush(t, second, i+1, m.subject, m.from)
	}
	// Read elsewhere: badge 2.
	gw.graph.MarkRead(graphUser, ids[0])
	gw.waitPush(t, device, 2, "", "")
	// Graph missed a change: the "missed" lifecycle event resyncs the badge.
	gw.graph.MarkReadSilently(graphUser, ids[1])
	if err := gw.graph.Lifecycle(sub.ID, "missed"); err != nil {
		t.Fatal(err)
	}
	gw.waitPush(t, device, 1, "", "")
	// Graph removed the subscription: mailpush makes it again.
	if err := gw.graph.Lifecycle(sub.ID, "subscriptionRemoved"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new subscription", func(ctx context.Context) error {
		return gw.graph.WaitFor(ctx, func(s *graphfake.Server) bool {
			subs := s.Subscriptions()
			return len(subs) == 1 && subs[0].ID != sub.ID
		})
	})
	newSub := gw.oneSubscription(t)
	if newSub.ClientState == sub.ClientState {
		t.Error("the new subscription reuses the old clientState")
	}
	gw.graph.Deliver(graphUser, "After the removal", "Diego Siciliani", "diego@contoso.example")
	gw.waitPush(t, device, 2, "After the removal", "Diego Siciliani")

	// Reauthorization: renewed in place.
	renewals := gw.graph.Requests("renew")
	if err := gw.graph.Lifecycle(newSub.ID, "reauthorizationRequired"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a renewal", func(ctx context.Context) error {
		return gw.graph.WaitFor(ctx, func(s *graphfake.Server) bool { return s.Requests("renew") > renewals })
	})

	// Delete both registrations: the subscription is deleted on Graph when
	// the last goes.
	for _, id := range []string{reg["id"].(string)} {
		if st, _ := gw.call(t, "DELETE", "/api/v1/registrations/"+id, gw.app, nil); st != 204 {
			t.Fatalf("delete = %d", st)
		}
	}
	if n := len(gw.graph.Subscriptions()); n != 1 {
		t.Fatalf("%d subscriptions after deleting one of two devices, want 1", n)
	}
	first, _ := gw.register(t, gw.app, device, gw.userToken(nil)) // re-register to know its ID
	_ = first
	for _, dev := range []string{device, second} {
		id := gw.registrationOf(t, dev)
		if st, _ := gw.call(t, "DELETE", "/api/v1/registrations/"+id, gw.app, nil); st != 204 {
			t.Fatalf("delete = %d", st)
		}
	}
	if subs := gw.graph.Subscriptions(); len(subs) != 0 {
		t.Fatalf("subscriptions after the last registration went: %+v", subs)
	}

	// The listener's health as Graph judges it, on /metrics.
	gw.waitMetrics(t, "mailpush_graph_ack_seconds_count", "mailpush_graph_slow_answer_ratio 0\n")

	// Privacy: no address, subject, sender, client secret or token in the
	// database files or the logs (debug level).
	gw.main.Close()
	secrets := []string{graphUser, "megan.bowen", "Quarterly numbers", "Board meeting", "Adele Vance", "Carol Danvers", graphClientSecret, userToken, device}
	secrets = append(secrets, gw.graph.IssuedTokens()...)
	files, _ := filepath.Glob(filepath.Join(gw.dir, "data", "*"))
	keys, _ := filepath.Glob(filepath.Join(gw.dir, "data", "keys", "*"))
	files = append(files, keys...)
	if len(files) < 2 {
		t.Fatalf("expected database files, found %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range secrets {
			if bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(s))) {
				t.Errorf("%s contains %q in clear", filepath.Base(f), s)
			}
		}
	}
	logs := gw.logs.String()
	if !strings.Contains(logs, "Graph subscription created") {
		t.Fatalf("captured logs look empty:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(strings.ToLower(logs), strings.ToLower(s)) {
			t.Errorf("logs contain %q", s)
		}
	}
}

// registrationOf returns the ID of the device's registration.
func (gw *graphWorld) registrationOf(t *testing.T, device string) string {
	t.Helper()
	st, reg := gw.register(t, gw.backend, device, "")
	if st != 201 {
		t.Fatalf("re-register %s = %d %v", device, st, reg)
	}
	return reg["id"].(string)
}

// TestGraphRegistrationNeedsAProof plays the holder of the app token (it
// ships in every copy of the app): it cannot register someone else's
// Microsoft 365 mailbox, with no token, a forged one, or another user's.
func TestGraphRegistrationNeedsAProof(t *testing.T) {
	gw := newGraphWorld(t)
	other := graphfake.New(graphfake.Options{TenantID: gw.graph.TenantID()})
	t.Cleanup(other.Close)
	for _, tc := range []struct {
		name, token string
		status      int
		code        string
	}{
		{"no user token", "", 403, mailpush.EScope},
		{"another user's token", gw.graph.UserToken("mallory@contoso.example", graphClientID, time.Hour, nil), 422, mailpush.ECredentials},
		{"another app's token", gw.graph.UserToken(graphUser, "another-app", time.Hour, nil), 422, mailpush.ECredentials},
		{"expired", gw.graph.UserToken(graphUser, graphClientID, -time.Hour, nil), 422, mailpush.ECredentials},
		{"signed by another key", other.UserToken(graphUser, graphClientID, time.Hour, nil), 422, mailpush.ECredentials},
	} {
		st, out := gw.register(t, gw.app, deviceToken(710), tc.token)
		if e, _ := out["error"].(map[string]any); st != tc.status || e["code"] != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.name, st, out, tc.status, tc.code)
		}
	}
	if n := gw.graph.Requests("create"); n != 0 {
		t.Fatalf("%d subscriptions created for refused registrations", n)
	}
	// The tenant's backend vouches for the user without a token.
	if st, reg := gw.register(t, gw.backend, deviceToken(711), ""); st != 201 || reg["status"] != "active" {
		t.Fatalf("backend registration = %d %v", st, reg)
	}
	if st, out := gw.call(t, "POST", "/api/v1/registrations", gw.app, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(712)},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": gw.exchange.URL(), "userToken": gw.userToken(nil)},
	}); st != 400 {
		t.Errorf("userToken with source ews = %d %v, want 400", st, out)
	}
}

// TestGraphRichNotifications: with graph.richNotifications the subject and
// sender come encrypted in the notification (to the certificate mailpush
// made, its key sealed in the store): no message is fetched.
func TestGraphRichNotifications(t *testing.T) {
	gw := newGraphWorldOptions(t, "debug", "graph:\n  richNotifications: true\n")
	device := deviceToken(720)
	if st, reg := gw.register(t, gw.app, device, gw.userToken(nil)); st != 201 || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}
	sub := gw.oneSubscription(t)
	if !sub.IncludeResourceData || sub.EncryptionCertificate == "" || sub.ExpirationDateTime.Sub(time.Now()) > 1440*time.Minute {
		t.Fatalf("subscription = %+v, want resource data, a certificate and at most 1,440 minutes", sub)
	}
	gw.graph.Deliver(graphUser, "Encrypted hello", "Nestor Wilke", "nestor@contoso.example")
	gw.waitPush(t, device, 1, "Encrypted hello", "Nestor Wilke")
	if n := gw.graph.Requests("message"); n != 0 {
		t.Errorf("%d message fetches with rich notifications, want 0", n)
	}
	// The certificate's key is in the store (sealed), for every node; no
	// key file is left in the key directory.
	keys, err := gw.main.Store.SharedKeys(context.Background(), "graph-encryption", time.Now())
	if err != nil || len(keys) != 1 || keys[0].ID != sub.EncryptionCertificateID {
		t.Fatalf("stored encryption keys = %d, %v; want the one of certificate %s", len(keys), err, sub.EncryptionCertificateID)
	}
	if files, _ := filepath.Glob(filepath.Join(gw.dir, "data", "keys", "graph-encryption", "*.pem")); len(files) != 0 {
		t.Errorf("key files in the key directory: %v", files)
	}
}
