package seal

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
)

// TestRetire is finding 7's keyring half: after a rotation the old key
// still opens what it sealed; once retired it opens neither credentials nor
// callback tokens, its material is gone from the file, and the refusal says
// "retired" (ErrRetiredKey) rather than "forged". The current key cannot be
// retired.
func TestRetire(t *testing.T) {
	dir := t.TempDir()
	k, err := Open(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	oldID, oldPub := k.PublicKey()
	creds := mailpush.Credentials{Username: "alice", Password: "pw"}
	oldCreds, err := SealCredentials(oldID, oldPub, creds)
	if err != nil {
		t.Fatal(err)
	}
	oldTok, err := k.SealCallback(mailpush.CallbackToken{TenantID: "t", MailboxID: "m", IssuedAt: t0.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if kid, _, _ := strings.Cut(oldTok, "."); kid != oldID {
		t.Fatalf("callback key ID %s, credentials key ID %s: one keyring generation should share one ID", kid, oldID)
	}
	oldMaterial := string(readFile(t, dir))

	if err := k.Retire(oldID, t0); mailpush.ErrorCode(err) != mailpush.EConflict || !strings.Contains(mailpush.ErrorMessage(err), "rotate first") {
		t.Errorf("retiring the current key: %v, want a conflict saying to rotate first", err)
	}
	if err := k.Rotate(t0.Add(1)); err != nil {
		t.Fatal(err)
	}
	newID, newPub := k.PublicKey()
	if _, err := k.OpenCredentials(oldCreds); err != nil {
		t.Errorf("after rotation the old key no longer opens credentials: %v", err)
	}
	if tok, err := k.OpenCallback(oldTok); err != nil || tok.KeyID != oldID {
		t.Errorf("after rotation the old key no longer opens callback tokens: %+v, %v", tok, err)
	}

	// Another process (the server) holds the keyring open.
	server, err := Open(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Retire(oldID, t0.Add(2)); err != nil {
		t.Fatal(err)
	}
	if changed, err := server.Reload(); err != nil || !changed {
		t.Fatalf("Reload = %v, %v; want the retirement picked up", changed, err)
	}
	if changed, err := server.Reload(); err != nil || changed {
		t.Errorf("second Reload = %v, %v; want nothing new", changed, err)
	}
	for name, kr := range map[string]*Keyring{"retiring": k, "reloaded": server} {
		_, err := kr.OpenCredentials(oldCreds)
		if mailpush.ErrorCode(err) != mailpush.EBadSealed || !errors.Is(err, mailpush.ErrRetiredKey) || !strings.Contains(mailpush.ErrorMessage(err), "retired") {
			t.Errorf("%s: credentials sealed with the retired key: %v", name, err)
		}
		_, err = kr.OpenCallback(oldTok)
		if mailpush.ErrorCode(err) != mailpush.EUnauthorized || !errors.Is(err, mailpush.ErrRetiredKey) {
			t.Errorf("%s: callback token sealed with the retired key: %v", name, err)
		}
		fresh, _ := SealCredentials(newID, newPub, creds)
		if got, err := kr.OpenCredentials(fresh); err != nil || got != creds {
			t.Errorf("%s: the current key no longer opens: %v", name, err)
		}
	}
	// A forgery naming an unknown key is still just that.
	if _, err := k.OpenCallback("ffffffff.AAAA"); errors.Is(err, mailpush.ErrRetiredKey) {
		t.Errorf("unknown key reported as retired: %v", err)
	}

	after := string(readFile(t, dir))
	var doc struct {
		HPKE, Callback []storedKey
	}
	mustJSON(t, oldMaterial, &doc)
	for _, s := range append(doc.HPKE, doc.Callback...) {
		if s.ID == oldID && strings.Contains(after, base64.StdEncoding.EncodeToString(s.Key)) {
			t.Errorf("the retired %s key material is still in keyring.json", s.ID)
		}
	}

	for _, tc := range []struct {
		id, code string
	}{
		{oldID, mailpush.EConflict}, // already retired
		{newID, mailpush.EConflict}, // current
		{"0badc0de", mailpush.ENotFound},
	} {
		if err := k.Retire(tc.id, t0); mailpush.ErrorCode(err) != tc.code {
			t.Errorf("Retire(%s) = %v, want code %s", tc.id, err, tc.code)
		}
	}
	var current, retired int
	for _, ki := range k.Keys() {
		switch {
		case ki.Current && ki.ID == newID:
			current++
		case !ki.Retired.IsZero() && ki.ID == oldID:
			retired++
		}
	}
	if current != 2 || retired != 1 {
		t.Errorf("Keys() = %+v; want the current pair and the retired ID", k.Keys())
	}
}

func readFile(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, keyringFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatal(err)
	}
}
