package main

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
)

// TestConsoleInARealBrowser drives Debian's chromium through the console:
// sign in with an admin token, find a registration by address, block a
// device in the gate and see /gate/auth deny it, add a gate rule (named with
// a script payload) and see /gate/auth deny by it, then remove it, retry a dead letter and
// see the push arrive, and try a script in each search box (it must not
// run, nor even become an element). With MAILPUSH_SCREENSHOTS=1 it writes a
// screenshot of every page to docs/console/ (the README shows them).
func TestConsoleInARealBrowser(t *testing.T) {
	chromium := requireBinary(t, "chromium")
	w := newWorld(t, "info", "console: {sampleEvery: 100ms}\ngate:\n  tenant: acme\n  proxy: nginx\n  mode: compliantOnly\n  rules:\n    - {name: no-old-clients, action: deny, userAgent: \"^OldMail/\"}\n    - {name: guest-wifi, action: deny, networks: [192.168.77.0/24]}\n")
	app := w.addTenant(t, "acme")
	admin := w.addToken(t, "acme", mailpush.ScopeAdmin)
	ctx := context.Background()
	acme, err := w.main.Store.TenantByName(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}

	// A registration for alice, a push delivered, then one refused for good:
	// a dead letter.
	device := deviceToken(7)
	st, reg := w.call(t, "POST", "/api/v1/registrations", app, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": device},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, username, password)},
	})
	if st != 201 {
		t.Fatalf("register = %d %v", st, reg)
	}
	w.exchange.Deliver(address, "Quarterly report", "Bob", "bob@example.com")
	waitFor(t, "the first push", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 1 })
	})
	w.apple.FailNext(1, 400, "PayloadTooLarge")
	w.exchange.Deliver(address, "Second", "Bob", "bob@example.com")
	waitFor(t, "a dead letter", func(ctx context.Context) error {
		for {
			if dls, _ := w.main.Store.DeadLetters(ctx, 10); len(dls) == 1 {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	// Two gate devices reported by the MDM.
	for _, id := range []string{"BROWSERDEV1", "BROWSERDEV2"} {
		if _, _, err := w.main.GateRegistry.SetDevice(ctx, acme.ID, mailpush.GateDeviceUpdate{DeviceID: id, User: address, DeviceType: "iPhone", State: mailpush.DeviceCompliant}); err != nil {
			t.Fatal(err)
		}
	}
	gateAuth := func() int {
		req, _ := http.NewRequest("GET", w.main.URL()+"/gate/auth", nil)
		req.Header.Set("X-Original-URI", "/Microsoft-Server-ActiveSync?Cmd=Sync&User="+url.QueryEscape(address)+"&DeviceId=BROWSERDEV1&DeviceType=iPhone")
		req.Header.Set("User-Agent", "Apple-iPhone/1")
		req.SetBasicAuth(address, "the user's password (the gate reads only the user)")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := gateAuth(); st != 200 {
		t.Fatalf("/gate/auth before the block = %d, want 200", st)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 3*time.Minute)
	defer cancelTimeout()
	var dialogs atomic.Int32
	if err := chromedp.Listen(bctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
		}
	}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	base := w.main.URL()
	shots := os.Getenv("MAILPUSH_SCREENSHOTS") != ""
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if !shots {
				return nil
			}
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			dir := filepath.Join("..", "..", "docs", "console")
			os.MkdirAll(dir, 0o755)
			return os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
		})
	}
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}

	// Sign in.
	run("sign in",
		chromedp.Navigate(base+"/admin/"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		shot("login"),
		chromedp.SendKeys(chromedp.CSS(`#token`), admin),
		chromedp.Click(chromedp.CSS(`#signin`)),
		chromedp.WaitVisible(chromedp.CSS(`#tenant-acme`)),
		shot("tenants"),
	)
	if h := text(`header`); !strings.Contains(h, "admin of acme") {
		t.Errorf("header after sign-in: %q", h)
	}

	// Find alice's registration by address.
	run("find a registration",
		chromedp.Navigate(base+"/admin/registrations"),
		chromedp.SendKeys(chromedp.CSS(`#address`), strings.ToUpper(address)),
		chromedp.Click(chromedp.CSS(`#find`)),
		chromedp.WaitVisible(chromedp.CSS(`#result-summary`)),
		shot("registrations"),
	)
	if m := text(`main`); !strings.Contains(m, reg["id"].(string)) || !strings.Contains(m, "1 mailbox(es)") {
		t.Errorf("registrations page does not show alice's registration:\n%s", m)
	}
	if body, err := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS(`.mailbox`))); err != nil || strings.Contains(body, "alice") {
		t.Error("the result lists the address in clear")
	}

	// Block BROWSERDEV1 in the gate: /gate/auth denies it.
	run("block a device",
		chromedp.Navigate(base+"/admin/gate"),
		chromedp.WaitVisible(chromedp.CSS(`#device-BROWSERDEV1`)),
		chromedp.Click(chromedp.CSS(`#device-BROWSERDEV1 button.block`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
		shot("gate"),
	)
	if row := text(`#device-BROWSERDEV1`); !strings.Contains(row, "blocked") {
		t.Errorf("device row after block: %q", row)
	}
	if st := gateAuth(); st != 403 {
		t.Errorf("/gate/auth after the block = %d, want 403", st)
	}

	// Edit the gate's rules: a deny rule added first (its name a script
	// payload) denies BROWSERDEV2 at the next /gate/auth; removed, it is
	// allowed again. The name comes back as text, never as markup.
	if st, reason := consoleGateAuth(t, base, "BROWSERDEV2"); st != 200 {
		t.Fatalf("/gate/auth for BROWSERDEV2 before the rule = %d %q", st, reason)
	}
	ruleName := `<script>alert(3)</script><img src=x onerror="alert(4)">no-iphones`
	run("add a gate rule",
		chromedp.Navigate(base+"/admin/gate"),
		chromedp.WaitVisible(chromedp.CSS(`#add-rule`)),
		chromedp.SendKeys(chromedp.CSS(`#rule-name`), ruleName),
		chromedp.SetValue(chromedp.CSS(`#rule-action`), "deny"),
		chromedp.SendKeys(chromedp.CSS(`#rule-types`), "iPhone"),
		chromedp.SendKeys(chromedp.CSS(`#rule-position`), "0"),
		chromedp.Submit(chromedp.CSS(`#rule-name`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
	)
	if got := text(`#rule-0 .rule-name`); got != ruleName {
		t.Errorf("the first rule's name reads %q, want the payload as text", got)
	}
	if st, reason := consoleGateAuth(t, base, "BROWSERDEV2"); st != 403 || reason != "denied by rule "+ruleName {
		t.Errorf("/gate/auth after adding the rule = %d %q", st, reason)
	}
	run("see the decision and the rules",
		chromedp.Navigate(base+"/admin/gate"),
		chromedp.WaitVisible(chromedp.CSS(`tr.decision`)),
		shot("gate"),
	)
	if d := text(`#decisions`); !strings.Contains(d, "denied by rule "+ruleName) || strings.Contains(d, "BROWSERDEV") {
		t.Errorf("recent decisions lack the rule's denial or show a DeviceId in clear:\n%s", d)
	}
	for _, q := range []string{`document.querySelectorAll("main script").length`, `document.querySelectorAll("img").length`} {
		if n, err := chromedp.Run(bctx, chromedp.Evaluate[int](q)); err != nil || n != 0 {
			t.Errorf("%s = %d, %v: the rule name became markup", q, n, err)
		}
	}
	run("remove the gate rule",
		chromedp.Click(chromedp.CSS(`#rule-0 button.remove`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
	)
	if st, reason := consoleGateAuth(t, base, "BROWSERDEV2"); st != 200 {
		t.Errorf("/gate/auth after removing the rule = %d %q", st, reason)
	}

	// Retry the dead letter: the device gets the mailbox's current badge.
	before := len(w.apple.PushesFor(device))
	run("retry a dead letter",
		chromedp.Navigate(base+"/admin/deadletters"),
		chromedp.WaitVisible(chromedp.CSS(`tr.deadletter`)),
		shot("deadletters"),
		chromedp.Click(chromedp.CSS(`tr.deadletter button.retry`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
	)
	waitFor(t, "the retried push", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
			n := 0
			for _, p := range ps {
				if p.Token == device {
					n++
				}
			}
			return n > before
		})
	})
	if ps := w.apple.PushesFor(device); ps[len(ps)-1].Badge != 2 {
		t.Errorf("retried push badge = %d, want the current 2", ps[len(ps)-1].Badge)
	}

	// The deliveries page counts what was delivered and charts it (once the
	// pipeline has counted the retried push).
	w.waitMetrics(t, `mailpush_pushes_total{provider="apns",reason="",result="delivered"} 2`)
	run("deliveries", chromedp.Navigate(base+"/admin/deliveries"), chromedp.WaitVisible(chromedp.CSS(`svg.chart path`)), shot("deliveries"))
	if d := text(`#delivered`); d != "2" {
		t.Errorf("deliveries page counts %q delivered, want 2", d)
	}
	if r := text(`main`); !strings.Contains(r, "failed: PayloadTooLarge") {
		t.Errorf("deliveries page does not list the refusal by reason:\n%s", r)
	}

	// The other pages render; their screenshots.
	for _, p := range []struct{ path, sel, name string }{
		{"/admin/subscriptions", "table.list", "subscriptions"},
		{"/admin/audit", "tr.audit", "audit"},
	} {
		run(p.name, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS(p.sel)), shot(p.name))
	}
	audit := text(`main`)
	for _, want := range []string{"gate.blocked", "gate.rule.add", "gate.rule.remove", "deadletter.retry", "console.sign_in"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit page lacks %s", want)
		}
	}

	// A script payload in every search box neither runs nor becomes markup.
	payload := `"><script>alert(1)</script><img src=x onerror="alert(2)">`
	for _, box := range []struct{ path, input string }{
		{"/admin/registrations", "#address"},
		{"/admin/gate", "#device-search"},
	} {
		run("payload in "+box.input,
			chromedp.Navigate(base+box.path),
			chromedp.WaitVisible(chromedp.CSS(box.input)),
			chromedp.SetValue(chromedp.CSS(box.input), payload),
			chromedp.Submit(chromedp.CSS(box.input)),
			chromedp.WaitVisible(chromedp.CSS(box.input)),
		)
		scripts, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("main script").length`))
		if err != nil {
			t.Fatal(err)
		}
		imgs, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("img").length`))
		if err != nil {
			t.Fatal(err)
		}
		value, err := chromedp.Run(bctx, chromedp.Value(chromedp.CSS(box.input)))
		if err != nil {
			t.Fatal(err)
		}
		if scripts != 0 || imgs != 0 {
			t.Errorf("%s: the payload became markup (%d scripts, %d images)", box.path, scripts, imgs)
		}
		if value != payload {
			t.Errorf("%s: the search box shows %q, want the payload as text", box.path, value)
		}
	}
	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d JavaScript dialogs opened: a payload ran", n)
	}
}
