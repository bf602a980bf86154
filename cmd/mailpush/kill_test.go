package main

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/sqlite"
)

// proc is the mailpush binary running `serve` as a child process.
type proc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	up   chan struct{}
}

func startBinary(t *testing.T, bin, config string) *proc {
	t.Helper()
	p := &proc{logs: &syncBuffer{}, up: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve", "--config", config)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // ends when the process's stderr closes
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			if strings.Contains(line, "mailpush serving") {
				once.Do(func() { close(p.up) })
			}
		}
	}()
	t.Cleanup(func() { p.kill() })
	select {
	case <-p.up:
	case <-time.After(60 * time.Second):
		t.Fatalf("mailpush did not start:\n%s", p.logs.String())
	}
	return p
}

// kill sends SIGKILL: no shutdown code runs.
func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

// killWorld is a built mailpush binary serving one EWS mailbox with
// devices devices (the first registered through the API, the others seeded
// into the database), a fake Exchange and a fake APNs.
type killWorld struct {
	bin, config string
	exchange    *ewsfake.Server
	apple       *apnsfake.Server
	p           *proc
}

func newKillWorld(t *testing.T, devices int) *killWorld {
	t.Helper()
	return newKillWorldContent(t, devices, "")
}

// newKillWorldContent is newKillWorld whose first device registers with
// the given content mode ("" for the default, badge).
func newKillWorldContent(t *testing.T, devices int, content string) *killWorld {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "mailpush")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	exchange, apple := newFakes(t)
	listen := "127.0.0.1:" + freePort(t)
	config := writeConfig(t, dir, exchange, apple, listen, "info", `push:
  retryBase: 50ms
  retryMax: 500ms
  maxAttempts: 100000
  lease: 3s
`)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"tenant", "add", "acme", "--config", config, "--allow-host", hostOf(exchange.URL()), "--max-content", "subject_sender"}, &out, &errOut, nil); err != nil {
		t.Fatalf("tenant add: %v (%s)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	token := lines[len(lines)-1]

	p := startBinary(t, bin, config)
	base := "http://" + listen

	// The first device registers through the API, which subscribes on the
	// fake Exchange.
	call := func(method, path string, body any) (int, map[string]any) {
		return apiCall(t, base, method, path, token, body)
	}
	_, key := call("GET", "/api/v1/key", nil)
	pub, err := b64url(key["publicKey"].(string))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := seal.SealCredentials(key["keyId"].(string), pub, mailpush.Credentials{Username: username, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	st, reg := call("POST", "/api/v1/registrations", map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(0)},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": exchange.URL(), "sealedCredentials": sealed},
		"content": content,
	})
	if st != 201 || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}

	// The other devices of the mailbox are seeded straight into the
	// database (the running server shares it, as SQLite allows).
	keys, err := seal.Open(filepath.Join(dir, "data", "keys"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.Open(context.Background(), filepath.Join(dir, "data", "mailpush.db"), keys, mailpush.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	tn, err := store.TenantByName(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	first, err := store.Registration(context.Background(), tn.ID, reg["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	mb, err := store.Mailbox(context.Background(), first.MailboxID)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < devices; i++ {
		r := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: deviceToken(i), Environment: mailpush.EnvProduction},
			Content: mailpush.ContentBadge, Status: mailpush.StatusActive, ExpiresAt: time.Now().Add(time.Hour)}
		if _, err := store.Register(context.Background(), r, mb, nil); err != nil {
			t.Fatal(err)
		}
	}
	store.Close()
	return &killWorld{bin: bin, config: config, exchange: exchange, apple: apple, p: p}
}

// restartAndWait starts mailpush again and waits until every device got a
// badge-1 push.
func (w *killWorld) restartAndWait(t *testing.T, ctx context.Context, devices int) {
	t.Helper()
	w.p = startBinary(t, w.bin, w.config)
	err := w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
		seen := map[string]bool{}
		for _, push := range ps {
			if push.Badge == 1 {
				seen[push.Token] = true
			}
		}
		return len(seen) == devices
	})
	if err != nil {
		got := map[string]bool{}
		for _, push := range w.apple.Pushes() {
			got[push.Token] = true
		}
		t.Fatalf("after restart %d of %d devices got their push: %v\n%s", len(got), devices, err, w.p.logs.String())
	}
}

// TestKill9LosesNoPush queues 1,000 pushes while APNs fails, kills mailpush
// with SIGKILL, starts it again against a healthy APNs and checks that every
// device gets its push.
func TestKill9LosesNoPush(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const devices = 1000
	w := newKillWorld(t, devices)

	// APNs fails every push; a mail arrives: 1,000 pushes are accepted.
	w.apple.FailNext(1<<30, http.StatusServiceUnavailable, apnsfake.ReasonServiceUnavailable)
	w.exchange.Deliver(address, "Quarterly report", "Bob Sender", "bob@example.com")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for w.apple.Requests() < devices {
		// Every push was tried (so it was in the outbox) and refused.
		select {
		case <-ctx.Done():
			t.Fatalf("only %d of %d pushes tried:\n%s", w.apple.Requests(), devices, w.p.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if n := w.apple.Accepted(); n != 0 {
		t.Fatalf("%d pushes accepted while APNs fails", n)
	}
	w.p.kill()

	// APNs recovers; mailpush starts again and sends what it had queued.
	w.apple.Reset()
	w.restartAndWait(t, ctx, devices)
	t.Logf("all %d pushes delivered after kill -9; %d pushes sent after restart (duplicates allowed: at least once)", devices, w.apple.Accepted())
}

// TestKill9InTheMiddleOfAFanOut kills mailpush while one event's fan-out to
// 3,000 devices is half sent (APNs answers slowly, all 200): the event was
// acknowledged, so after the restart every device gets its push, the ones
// already served perhaps twice (at least once).
func TestKill9InTheMiddleOfAFanOut(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const devices = 3000
	w := newKillWorld(t, devices)
	// 64 sends in flight, 20 ms each: the fan-out takes about a second.
	w.apple.SetLatency(20 * time.Millisecond)
	w.exchange.Deliver(address, "Quarterly report", "Bob Sender", "bob@example.com")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for w.apple.Accepted() < 300 {
		select {
		case <-ctx.Done():
			t.Fatalf("only %d of %d pushes accepted:\n%s", w.apple.Accepted(), devices, w.p.logs.String())
		case <-time.After(time.Millisecond):
		}
	}
	w.p.kill()
	before := w.apple.Accepted()
	if before >= devices {
		t.Fatalf("the fan-out was over (%d pushes) before the kill: the test did not kill it in the middle", before)
	}
	w.apple.Reset()
	w.restartAndWait(t, ctx, devices)
	t.Logf("killed after %d of %d pushes; %d pushes after restart", before, devices, w.apple.Accepted())
}

// TestKill9BetweenAckAndFetch kills mailpush after it answered Exchange's
// new-mail notification and before the fetch that completes its event
// (Exchange holds GetItem): the event is durable, so after the restart the
// device still gets its push (badge 1, which the notification carried; the
// subject needed the credentials, which lived only in the killed process's
// memory and in Exchange's callback URL).
func TestKill9BetweenAckAndFetch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	w := newKillWorldContent(t, 1, "subject_sender")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	subs := w.exchange.Subscriptions()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions, want 1", len(subs))
	}
	release := w.exchange.Hold("GetItem")
	defer release()
	w.exchange.Deliver(address, "Quarterly report", "Bob Sender", "bob@example.com")
	// Answered OK: the notification with the new mail (and the Inbox's
	// count) was acknowledged...
	err := w.exchange.WaitFor(ctx, func(x *ewsfake.Server) bool {
		for _, c := range x.CallbacksFor(subs[0].ID) {
			if c.Events > 1 && c.Result == "OK" {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("the new mail's notification was not answered OK: %v\n%s", err, w.p.logs.String())
	}
	// ...and its fetch is held by Exchange: nothing was pushed yet.
	if err := w.exchange.WaitFor(ctx, func(x *ewsfake.Server) bool { return x.Held("GetItem") == 1 }); err != nil {
		t.Fatalf("no GetItem after the answer: %v\n%s", err, w.p.logs.String())
	}
	if n := len(w.apple.Pushes()); n != 0 {
		t.Fatalf("%d pushes before the fetch was answered", n)
	}
	w.p.kill()
	release()
	w.restartAndWait(t, ctx, 1)
	t.Logf("after kill -9 between the answer and the fetch: %d push(es) after the restart, badge %v", len(w.apple.Pushes()), badges(w.apple.Pushes()))
}
