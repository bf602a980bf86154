package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
)

func writeCSV(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "regs.csv")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRegistrationsImport: a migration file becomes active Dovecot
// registrations, grouped into mailboxes, content capped by the tenant; a
// file with a bad row writes nothing and names the row; a tenant without
// Dovecot is refused.
func TestRegistrationsImport(t *testing.T) {
	w, _, _ := newDovecotWorld(t, "info")
	ctx := context.Background()
	file := writeCSV(t,
		"platform,token,address,content,environment",
		"ios,"+deviceToken(1)+",alice@example.com,subject_sender,sandbox",
		"ios,"+deviceToken(2)+",alice@example.com,,",
		"android,"+strings.Repeat("fcm_token-", 5)+",bob@example.com,badge",
	)
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"registrations", "import", file, "--tenant", "acme", "--config", w.configPath}, &out, &errOut, nil); err != nil {
		t.Fatalf("import: %v (%s)", err, errOut.String())
	}
	if !strings.Contains(out.String(), "3 registrations imported") || !strings.Contains(errOut.String(), "imported 3/3") {
		t.Errorf("output %q, progress %q", out.String(), errOut.String())
	}
	alice := w.dovecotMailbox(t, "alice@example.com")
	regs, err := w.main.Store.ActiveRegistrations(ctx, alice.ID)
	if err != nil || len(regs) != 2 {
		t.Fatalf("alice's registrations = %d, %v; want 2", len(regs), err)
	}
	for _, r := range regs {
		if r.Status != mailpush.StatusActive || alice.Mode != mailpush.ModeService || alice.Status != mailpush.StatusActive {
			t.Errorf("registration %+v of mailbox %+v, want active in service mode", r, alice)
		}
		if r.Device.Token == deviceToken(1) && (r.Device.Environment != mailpush.EnvSandbox || r.Content != mailpush.ContentSubjectSender) {
			t.Errorf("first device = %+v", r)
		}
	}
	if bob := w.dovecotMailbox(t, "bob@example.com"); bob == nil {
		t.Fatal("bob's mailbox missing")
	}

	// A bad row: nothing is written, the line is named.
	bad := writeCSV(t,
		"ios,"+deviceToken(3)+",carol@example.com",
		"ios,not-hex,dave@example.com",
		"ios,"+deviceToken(4)+",Eve <eve@example.com>",
	)
	out.Reset()
	errOut.Reset()
	err = run(ctx, []string{"registrations", "import", bad, "--tenant", "acme", "--config", w.configPath}, &out, &errOut, nil)
	if err == nil || !strings.Contains(err.Error(), "line 2: device.token is not an APNs device token") || !strings.Contains(err.Error(), "line 3: mailbox.address") ||
		!strings.Contains(err.Error(), "nothing was imported") {
		t.Fatalf("bad file: %v", err)
	}
	ctxAcme, err := w.main.Store.TenantByName(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.main.Store.MailboxByAddress(ctx, ctxAcme.ID, w.main.Keys.HashAddress(ctxAcme.ID, "carol@example.com"), mailpush.SourceDovecot); mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("a valid row of a bad file was imported: %v", err)
	}

	err = run(ctx, []string{"registrations", "import", file, "--tenant", "plain", "--config", w.configPath}, &out, &errOut, nil)
	if err == nil || !strings.Contains(err.Error(), "no Dovecot configuration") {
		t.Errorf("tenant without Dovecot: %v", err)
	}
	if err := run(ctx, []string{"registrations", "import", file, "--config", w.configPath}, &out, &errOut, nil); err == nil || !strings.Contains(err.Error(), "--tenant NAME is required") {
		t.Errorf("without --tenant: %v", err)
	}
}
