package seal

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

var t0 = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

func newKeyring(t testing.TB) *Keyring {
	t.Helper()
	k, err := Open(t.TempDir(), t0)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOpenCreatesPrivateKeyring(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	k1, err := Open(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, keyringFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("keyring mode = %v, want 0600", got)
	}
	di, _ := os.Stat(dir)
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("key dir mode = %v, want 0700", got)
	}
	k2, err := Open(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	id1, pub1 := k1.PublicKey()
	id2, pub2 := k2.PublicKey()
	if id1 != id2 || string(pub1) != string(pub2) {
		t.Error("reopened keyring has a different public key")
	}
	if string(k1.HashAddress("t", "a@b")) != string(k2.HashAddress("t", "a@b")) {
		t.Error("reopened keyring hashes addresses differently")
	}
	os.Chmod(filepath.Join(dir, keyringFile), 0o644)
	if _, err := Open(dir, t0); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable keyring: err = %v, want a chmod hint", err)
	}
}

func TestCredentialsRoundTripAndRotation(t *testing.T) {
	k := newKeyring(t)
	kid, pub := k.PublicKey()
	want := mailpush.Credentials{Username: "alice", Password: "s3cret"}
	sealed, err := SealCredentials(kid, pub, want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.OpenCredentials(sealed)
	if err != nil || got != want {
		t.Fatalf("OpenCredentials = %+v, %v; want %+v", got, err, want)
	}
	tok, err := k.SealCallback(mailpush.CallbackToken{TenantID: "t1", MailboxID: "m1", Credentials: want})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Rotate(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if nkid, _ := k.PublicKey(); nkid == kid {
		t.Fatal("Rotate kept the same key ID")
	}
	// Values sealed before the rotation still open.
	if got, err := k.OpenCredentials(sealed); err != nil || got != want {
		t.Errorf("after rotation OpenCredentials = %+v, %v", got, err)
	}
	if ct, err := k.OpenCallback(tok); err != nil || ct.Credentials != want || ct.MailboxID != "m1" {
		t.Errorf("after rotation OpenCallback = %+v, %v", ct, err)
	}
}

func TestOpenCredentialsRejects(t *testing.T) {
	k := newKeyring(t)
	other := newKeyring(t)
	kid, pub := k.PublicKey()
	okid, opub := other.PublicKey()
	good, _ := SealCredentials(kid, pub, mailpush.Credentials{Username: "u", Password: "p"})
	foreign, _ := SealCredentials(okid, opub, mailpush.Credentials{Username: "u", Password: "p"})
	wrongKeySameID, _ := SealCredentials(kid, opub, mailpush.Credentials{Username: "u", Password: "p"})
	empty, _ := SealCredentials(kid, pub, mailpush.Credentials{})
	unknownField := sealRaw(t, kid, pub, `{"username":"u","password":"p","extra":1}`)
	notJSON := sealRaw(t, kid, pub, `hello`)
	tampered := []byte(good)
	tampered[len(tampered)-3] ^= 'A' ^ 'B'
	cases := map[string]string{
		"empty":           "",
		"no dot":          "abc",
		"bad base64":      kid + ".!!!",
		"unknown key":     foreign,
		"wrong key":       wrongKeySameID,
		"tampered":        string(tampered),
		"truncated":       good[:len(good)-10],
		"no credential":   empty,
		"unknown field":   unknownField,
		"not json":        notJSON,
		"oversized":       kid + "." + strings.Repeat("A", MaxSealedCredentials),
		"long key id":     strings.Repeat("k", 40) + ".AAAA",
		"padded base64":   kid + ".AAAA==",
		"only key id":     kid + ".",
		"only ciphertext": "." + good[len(kid)+1:],
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := k.OpenCredentials(in)
			if mailpush.ErrorCode(err) != mailpush.EBadSealed {
				t.Fatalf("code = %q (err %v), want %q", mailpush.ErrorCode(err), err, mailpush.EBadSealed)
			}
			if !c.Empty() {
				t.Errorf("credentials returned on error: %v", c)
			}
			if strings.Contains(mailpush.ErrorMessage(err), "p\"") {
				t.Errorf("message leaks content: %s", mailpush.ErrorMessage(err))
			}
		})
	}
}

func sealRaw(t *testing.T, kid string, pub []byte, plain string) string {
	t.Helper()
	pk, _ := ecdh.X25519().NewPublicKey(pub)
	hpk, _ := hpke.NewDHKEMPublicKey(pk)
	ct, err := hpke.Seal(hpk, hpke.HKDFSHA256(), hpke.AES128GCM(), []byte(credentialsInfo+kid), []byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	return kid + "." + b64.EncodeToString(ct)
}

func TestOpenCallbackRejects(t *testing.T) {
	k := newKeyring(t)
	other := newKeyring(t)
	good, _ := k.SealCallback(mailpush.CallbackToken{TenantID: "t", MailboxID: "m"})
	foreign, _ := other.SealCallback(mailpush.CallbackToken{TenantID: "t", MailboxID: "m"})
	kid, _, _ := strings.Cut(good, ".")
	_, fblob, _ := strings.Cut(foreign, ".")
	forged := []byte(good)
	forged[len(forged)-5] ^= 1
	cases := map[string]string{
		"empty":              "",
		"garbage":            "not-a-token",
		"truncated":          good[:len(good)-8],
		"short":              kid + ".AAAA",
		"forged":             string(forged),
		"other service":      foreign,
		"other key, our kid": kid + "." + fblob,
		"oversized":          kid + "." + strings.Repeat("A", MaxCallbackToken),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := k.OpenCallback(in); mailpush.ErrorCode(err) != mailpush.EUnauthorized {
				t.Errorf("code = %q (%v), want %q", mailpush.ErrorCode(err), err, mailpush.EUnauthorized)
			}
		})
	}
	tok, err := k.OpenCallback(good)
	if err != nil || tok.TenantID != "t" || tok.MailboxID != "m" {
		t.Errorf("good token: %+v, %v", tok, err)
	}
}

func TestHashes(t *testing.T) {
	k := newKeyring(t)
	a := k.HashAddress("t1", " Alice@Example.com ")
	if string(a) != string(k.HashAddress("t1", "alice@example.com")) {
		t.Error("address hash depends on case or spaces")
	}
	if string(a) == string(k.HashAddress("t2", "alice@example.com")) {
		t.Error("address hash does not depend on the tenant")
	}
	if string(a) == string(newKeyring(t).HashAddress("t1", "alice@example.com")) {
		t.Error("address hash does not depend on the secret")
	}
	sealed, _ := k.SealField([]byte("token"))
	if strings.Contains(string(sealed), "token") {
		t.Error("sealed field holds the plaintext")
	}
	if p, err := k.OpenField(sealed); err != nil || string(p) != "token" {
		t.Errorf("OpenField = %q, %v", p, err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := k.OpenField(sealed); err == nil {
		t.Error("OpenField accepted a damaged value")
	}
}

func TestSealContent(t *testing.T) {
	priv, _ := ecdh.X25519().GenerateKey(rand.Reader)
	s, err := SealContent(priv.PublicKey().Bytes(), []byte(`{"subject":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := b64.DecodeString(s)
	hp, _ := hpke.NewDHKEMPrivateKey(priv)
	plain, err := hpke.Open(hp, hpke.HKDFSHA256(), hpke.AES128GCM(), []byte(contentInfo), ct)
	if err != nil || string(plain) != `{"subject":"hi"}` {
		t.Errorf("device could not open content: %q, %v", plain, err)
	}
	if ValidContentKey([]byte("short")) {
		t.Error("ValidContentKey accepted 5 bytes")
	}
}

func FuzzOpenCredentials(f *testing.F) {
	k := newKeyring(f)
	kid, pub := k.PublicKey()
	good, _ := SealCredentials(kid, pub, mailpush.Credentials{Username: "u", Password: "p"})
	for _, s := range []string{good, "", ".", kid + ".", kid + ".AAAA", "x.y.z", good + "A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := k.OpenCredentials(s)
		if err != nil && !c.Empty() {
			t.Fatal("credentials returned with an error")
		}
		if err == nil && c.Empty() {
			t.Fatal("empty credentials without an error")
		}
	})
}

func FuzzOpenCallback(f *testing.F) {
	k := newKeyring(f)
	good, _ := k.SealCallback(mailpush.CallbackToken{TenantID: "t", MailboxID: "m", ServerURL: "https://x"})
	for _, s := range []string{good, "", ".", "a.", good[:20], good + "A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := k.OpenCallback(s)
		if err == nil && (tok.MailboxID == "" || tok.TenantID == "") {
			t.Fatal("accepted a token without mailbox or tenant")
		}
		if err == nil && s != good {
			t.Fatalf("accepted a token that this test did not seal: %q", s)
		}
	})
}

// FuzzOpenCredentialsPlaintext fuzzes what is inside the HPKE envelope
// (a device's JSON), which FuzzOpenCredentials cannot reach: whatever it
// holds, opened credentials are usable and OAuth ones well-formed.
func FuzzOpenCredentialsPlaintext(f *testing.F) {
	k := newKeyring(f)
	kid, pub := k.PublicKey()
	for _, s := range []string{
		`{"username":"u","password":"p"}`,
		`{"accessToken":"a"}`,
		`{"accessToken":"a","refreshToken":"r","tokenUrl":"https://login.example.com/t/oauth2/v2.0/token","clientId":"c","expiresAt":1700000000}`,
		`{"refreshToken":"r","tokenUrl":"https://login.example.com/t/token","clientId":"c"}`,
		`{"refreshToken":"r","tokenUrl":"http://login.example.com/t/token","clientId":"c"}`,
		`{"refreshToken":"r","clientId":"c"}`,
		`{"refreshToken":"r","tokenUrl":"https://u:p@h/t","clientId":"c"}`,
		`{"expiresAt":"soon"}`, `[]`, `null`, `{"accessToken":"a"} {}`,
	} {
		f.Add([]byte(s))
	}
	pk, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		f.Fatal(err)
	}
	hpk, err := hpke.NewDHKEMPublicKey(pk)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		ct, err := hpke.Seal(hpk, hpke.HKDFSHA256(), hpke.AES128GCM(), []byte(credentialsInfo+kid), plain)
		if err != nil {
			t.Fatal(err)
		}
		sealed := kid + "." + b64.EncodeToString(ct)
		c, err := k.OpenCredentials(sealed)
		if err != nil {
			if mailpush.ErrorCode(err) != mailpush.EBadSealed || (c != mailpush.Credentials{}) && !c.Empty() {
				t.Fatalf("error %v with code %q and credentials", err, mailpush.ErrorCode(err))
			}
			return
		}
		if c.Empty() {
			t.Fatal("opened credentials that hold nothing usable")
		}
		if err := c.CheckOAuth(); err != nil {
			t.Fatalf("opened OAuth credentials that are not well-formed: %v", err)
		}
		if (c.RefreshToken != "" || c.TokenURL != "" || c.ClientID != "") && !c.Refreshable() {
			t.Fatal("a partial OAuth triple was opened")
		}
	})
}
