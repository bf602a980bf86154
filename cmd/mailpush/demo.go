package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/seal"
)

// The demo's made-up world: one mailbox on the fake Exchange, one iPhone.
const (
	demoAddress  = "alice@demo.example"
	demoUser     = `DEMO\alice`
	demoPassword = "demo password (never leaves this process)"
	demoTeamID   = "DEMOTEAM01"
	demoKeyID    = "DEMOKEY001"
	demoTopic    = "com.example.demo-mail"
	demoDevice   = "00000000000000000000000000000000000000000000000000000000000a11ce"
)

// runDemo is "mailpush demo": the real server, wired as serve wires it,
// against an in-process fake Exchange and fake APNs, so that a newcomer sees
// pushes arrive without any credential. Nothing of it is used by serve.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlags("demo", "demo [--listen ADDR] [--every DURATION]", stdout, stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "where the demo server listens (its console is at /admin/)")
	every := fs.Duration("every", 5*time.Second, "how often a mail is delivered to the demo mailbox")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *every < 10*time.Millisecond {
		return usageError{fmt.Sprintf("demo: --every %v is too short (at least 10ms)", *every)}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := startDemo(ctx, *listen, *every, stdout, stderr)
	if err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping the demo")
	return d.Close()
}

// trustFakes makes an APNs token key that the fake APNs trusts for
// teamID/keyID and topic, and a CA bundle of the fake APNs' certificate and
// the extra ones, as an admin would configure apns.keyFile and caFile. It
// returns the two files it wrote in dir.
func trustFakes(dir string, apple *apnsfake.Server, teamID, keyID, topic string, extraCAs ...*x509.Certificate) (p8, ca string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	apple.AddKey(teamID, keyID, &key.PublicKey)
	apple.AllowTopic(topic)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	p8 = filepath.Join(dir, "AuthKey.p8")
	if err := os.WriteFile(p8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	var bundle []byte
	for _, c := range append([]*x509.Certificate{apple.Certificate()}, extraCAs...) {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	ca = filepath.Join(dir, "ca.pem")
	return p8, ca, os.WriteFile(ca, bundle, 0o600)
}

// demo is a running demo.
type demo struct {
	main     *Main
	exchange *ewsfake.Server
	apple    *apnsfake.Server
	dir      string
	admin    string
	cancel   context.CancelFunc
	done     chan struct{}
}

// startDemo starts the fakes and the server, registers the demo device and
// starts delivering mail every interval; pushes are printed to out.
func startDemo(ctx context.Context, listen string, every time.Duration, out, logs io.Writer) (*demo, error) {
	dir, err := os.MkdirTemp("", "mailpush-demo-")
	if err != nil {
		return nil, err
	}
	d := &demo{dir: dir, done: make(chan struct{})}
	fail := func(err error) (*demo, error) {
		d.Close()
		return nil, err
	}
	d.exchange = ewsfake.New(ewsfake.Options{})
	d.exchange.AddUser(demoAddress, demoUser, demoPassword)
	d.apple = apnsfake.New(apnsfake.Options{})
	p8, ca, err := trustFakes(dir, d.apple, demoTeamID, demoKeyID, demoTopic, d.exchange.Certificate())
	if err != nil {
		return fail(err)
	}

	cfg := DefaultConfig()
	cfg.Listen = listen
	cfg.Database.Path = filepath.Join(dir, "mailpush.db")
	cfg.KeyDir = filepath.Join(dir, "keys")
	cfg.CAFile = ca
	cfg.Log.Level = "warn"
	cfg.APNs.TeamID, cfg.APNs.KeyID, cfg.APNs.KeyFile, cfg.APNs.Topic = demoTeamID, demoKeyID, p8, demoTopic
	cfg.APNs.ProductionURL, cfg.APNs.SandboxURL = d.apple.URL(), d.apple.URL()
	cfg.Console.SampleEvery = time.Second
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	d.main = NewMain(cfg, logs)
	if err := d.main.Run(ctx); err != nil {
		return fail(err)
	}
	base := d.main.URL()

	exURL, err := url.Parse(d.exchange.URL())
	if err != nil {
		return fail(err)
	}
	app, err := d.main.AddTenant(ctx, "demo", TenantSettings{Hosts: []string{exURL.Host}, MaxContent: mailpush.ContentSubjectSender})
	if err != nil {
		return fail(err)
	}
	if d.admin, err = d.main.AddToken(ctx, "demo", mailpush.ScopeAdmin); err != nil {
		return fail(err)
	}
	// Register the device as an app would: seal the credentials to the
	// server's key, then POST the registration.
	if err := d.register(ctx, base, app); err != nil {
		return fail(fmt.Errorf("demo: registering the demo device: %w", err))
	}
	fmt.Fprintf(out, "mailpush demo: server %s (fake Exchange %s, fake APNs %s; state in %s)\n", base, d.exchange.URL(), d.apple.URL(), dir)
	fmt.Fprintf(out, "device %s… registered for %s; a mail arrives every %v. Ctrl-C stops.\n", demoDevice[:12], demoAddress, every)
	fmt.Fprintf(out, "admin console: %s/admin/ — sign in with the admin token %s\n", base, d.admin)

	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go d.loop(runCtx, every, out)
	return d, nil
}

func (d *demo) register(ctx context.Context, base, token string) error {
	var key struct{ KeyID, PublicKey string }
	if err := demoCall(ctx, "GET", base+"/api/v1/key", "", nil, &key); err != nil {
		return err
	}
	pub, err := base64.RawURLEncoding.DecodeString(key.PublicKey)
	if err != nil {
		return err
	}
	sealed, err := seal.SealCredentials(key.KeyID, pub, mailpush.Credentials{Username: demoUser, Password: demoPassword})
	if err != nil {
		return err
	}
	var reg struct{ ID, Status string }
	err = demoCall(ctx, "POST", base+"/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": demoDevice},
		"mailbox": map[string]any{"address": demoAddress, "source": "ews", "ewsUrl": d.exchange.URL(), "sealedCredentials": sealed},
		"content": "subject_sender",
	}, &reg)
	if err == nil && reg.Status != "active" {
		err = fmt.Errorf("registration %s is %s, not active", reg.ID, reg.Status)
	}
	return err
}

func demoCall(ctx context.Context, method, target, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, target, resp.StatusCode, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// loop delivers a mail every interval and prints each push the fake APNs
// receives, until ctx ends.
func (d *demo) loop(ctx context.Context, every time.Duration, out io.Writer) {
	defer close(d.done)
	ticker, tick := d.main.Clock.NewTicker(every)
	defer ticker.Stop()
	printed, n := 0, 0
	deliver := func() {
		n++
		d.exchange.Deliver(demoAddress, fmt.Sprintf("Demo mail %d", n), "mailpush demo", "demo@demo.example")
		fmt.Fprintf(out, "%s  mail %d delivered to %s on the fake Exchange\n", time.Now().Format("15:04:05"), n, demoAddress)
	}
	deliver()
	for {
		wctx, cancel := context.WithCancel(ctx)
		seen := make(chan struct{})
		go func() {
			// Wakes when the fake APNs has more pushes than printed.
			if d.apple.WaitFor(wctx, func(ps []apnsfake.Push) bool { return len(ps) > printed }) == nil {
				close(seen)
			}
		}()
		select {
		case <-ctx.Done():
			cancel()
			return
		case <-tick:
			cancel()
			deliver()
		case <-seen:
			cancel()
			ps := d.apple.Pushes()
			for _, p := range ps[printed:] {
				fmt.Fprintf(out, "%s  push to device %s…: badge %d, alert %q / %q (%s push)\n",
					p.At.Format("15:04:05"), p.Token[:12], p.Badge, p.AlertTitle, p.AlertBody, p.PushType)
			}
			printed = len(ps)
		}
	}
}

// Close stops the demo and removes its state.
func (d *demo) Close() error {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	var err error
	if d.main != nil {
		err = d.main.Close()
	}
	if d.exchange != nil {
		d.exchange.Close()
	}
	if d.apple != nil {
		d.apple.Close()
	}
	os.RemoveAll(d.dir)
	return err
}
