// Package seal holds the service's keys and everything done with them:
// opening credentials that devices seal with HPKE (RFC 9180) to the service's
// X25519 key, sealing and opening the callback-URL tokens that carry a
// subscription's state (and, in sealed mode, the user's credentials) through
// the mail server, keyed hashes of mailbox addresses, encryption of stored
// push tokens, and sealing push content to a device's own key.
//
// Keys live in one file, keyring.json, mode 0600, in the key directory (mode
// 0700), created on first start. Each HPKE and callback key has an ID; the
// first of each list is current and new values are sealed with it, while older
// keys keep opening what they sealed, so a rotation (Rotate) never breaks a
// live subscription. A rotation makes an HPKE key and a callback key with one
// ID. Retire deletes an old key's material (both kinds with that ID): what
// was sealed with it can no longer be opened, and opening it fails with an
// error that wraps mailpush.ErrRetiredKey, so that a callback URL sealed with
// it is answered Unsubscribe instead of being mistaken for a forgery. The
// current key cannot be retired. Reload picks up what `mailpush keys rotate`
// or `keys retire` wrote while a server runs. The hash secret is never
// rotated: the stored address hashes depend on it.
//
// Formats (stable; the README and docs/openapi.yaml describe them):
//
//	sealed credentials: "<keyId>.<base64url(enc || ciphertext)>", HPKE base mode,
//	                    DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM,
//	                    info "mailpush credentials v1 " + keyId
//	callback token:     "<keyId>.<base64url(nonce || AES-256-GCM ciphertext)>",
//	                    additional data "mailpush callback v1 " + keyId
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Size caps for values that arrive from outside.
const (
	MaxSealedCredentials = 32 << 10 // room for a client identity (mailpush.MaxIdentity) sealed and encoded twice
	MaxCallbackToken     = 4 << 10
)

const (
	credentialsInfo = "mailpush credentials v1 "
	callbackAAD     = "mailpush callback v1 "
	contentInfo     = "mailpush content v1"
	keyringFile     = "keyring.json"
)

// Suite names, as GET /api/v1/key reports them.
const (
	KEMName  = "DHKEM(X25519, HKDF-SHA256)"
	KDFName  = "HKDF-SHA256"
	AEADName = "AES-128-GCM"
)

var b64 = base64.RawURLEncoding.Strict()

type storedKey struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Key     []byte    `json:"key"`
}

type keyringJSON struct {
	HPKE     []storedKey  `json:"hpke"`
	Callback []storedKey  `json:"callback"`
	Secret   []byte       `json:"secret"`
	Retired  []retiredKey `json:"retired,omitempty"`
}

// retiredKey remembers a retired key's ID (never its material), so that what
// it sealed is recognised and refused as such.
type retiredKey struct {
	ID      string    `json:"id"`
	Retired time.Time `json:"retired"`
}

type hpkeKey struct {
	id   string
	priv hpke.PrivateKey
	pub  []byte
}

type aeadKey struct {
	id   string
	aead cipher.AEAD
}

// Keyring holds the service keys. It is safe for concurrent use.
type Keyring struct {
	dir string

	mu       sync.RWMutex
	loaded   []byte // the file as last read or written, for Reload
	stored   keyringJSON
	hpke     []hpkeKey // [0] is current
	callback []aeadKey // [0] is current

	hashKey  []byte
	fieldKey cipher.AEAD
	tokenKey []byte
}

// Open loads the keyring from dir, creating the directory and a fresh keyring
// on first start.
func Open(dir string, now time.Time) (*Keyring, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("seal: create key directory: %w", err)
	}
	path := filepath.Join(dir, keyringFile)
	data, err := os.ReadFile(path)
	var kj keyringJSON
	switch {
	case errors.Is(err, os.ErrNotExist):
		kj = keyringJSON{Secret: randomBytes(32)}
		hk, ck := newKeyPair(now)
		kj.HPKE, kj.Callback = []storedKey{hk}, []storedKey{ck}
		if data, err = writeKeyring(path, &kj); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("seal: read keyring: %w", err)
	default:
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("seal: %s is readable by group or others (mode %v): run chmod 600 on it", path, fi.Mode().Perm())
		}
		if err := json.Unmarshal(data, &kj); err != nil {
			return nil, fmt.Errorf("seal: parse %s: %w", path, err)
		}
	}
	k := &Keyring{dir: dir}
	if err := k.load(kj, data); err != nil {
		return nil, fmt.Errorf("seal: %s: %w", path, err)
	}
	return k, nil
}

// Reload reads keyring.json again when another process (`mailpush keys
// rotate` or `keys retire`) changed it, and reports whether it did.
func (k *Keyring) Reload() (bool, error) {
	path := filepath.Join(k.dir, keyringFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("seal: read keyring: %w", err)
	}
	k.mu.RLock()
	same := string(data) == string(k.loaded)
	k.mu.RUnlock()
	if same {
		return false, nil
	}
	var kj keyringJSON
	if err := json.Unmarshal(data, &kj); err != nil {
		return false, fmt.Errorf("seal: parse %s: %w", path, err)
	}
	if err := k.load(kj, data); err != nil {
		return false, fmt.Errorf("seal: %s: %w", path, err)
	}
	return true, nil
}

func (k *Keyring) load(kj keyringJSON, data []byte) error {
	if len(kj.Secret) != 32 || len(kj.HPKE) == 0 || len(kj.Callback) == 0 {
		return errors.New("keyring is incomplete: it needs a 32-byte secret, an hpke key and a callback key")
	}
	var hk []hpkeKey
	for _, s := range kj.HPKE {
		priv, err := ecdh.X25519().NewPrivateKey(s.Key)
		if err != nil {
			return fmt.Errorf("hpke key %s: %w", s.ID, err)
		}
		hp, err := hpke.NewDHKEMPrivateKey(priv)
		if err != nil {
			return fmt.Errorf("hpke key %s: %w", s.ID, err)
		}
		hk = append(hk, hpkeKey{id: s.ID, priv: hp, pub: priv.PublicKey().Bytes()})
	}
	var ck []aeadKey
	for _, s := range kj.Callback {
		a, err := newGCM(s.Key)
		if err != nil {
			return fmt.Errorf("callback key %s: %w", s.ID, err)
		}
		ck = append(ck, aeadKey{id: s.ID, aead: a})
	}
	fieldKey, err := newGCM(derive(kj.Secret, "mailpush field v1"))
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stored, k.hpke, k.callback, k.loaded = kj, hk, ck, data
	k.hashKey = derive(kj.Secret, "mailpush address hash v1")
	k.tokenKey = derive(kj.Secret, "mailpush token hash v1")
	k.fieldKey = fieldKey
	return nil
}

// Rotate makes a new HPKE key and a new callback key current, with one ID.
// Older keys stay to open what was sealed with them, until retired.
func (k *Keyring) Rotate(now time.Time) error {
	k.mu.RLock()
	kj := k.stored
	k.mu.RUnlock()
	hk, ck := newKeyPair(now)
	kj.HPKE = append([]storedKey{hk}, kj.HPKE...)
	kj.Callback = append([]storedKey{ck}, kj.Callback...)
	return k.save(kj)
}

// Retire deletes the keys with ID id (the HPKE key, the callback key, or
// both when one rotation made them): credentials and callback tokens sealed
// with them can no longer be opened, and are refused with ErrRetiredKey.
// The current keys cannot be retired: rotate first.
func (k *Keyring) Retire(id string, now time.Time) error {
	k.mu.RLock()
	kj := k.stored
	k.mu.RUnlock()
	if kj.HPKE[0].ID == id || kj.Callback[0].ID == id {
		return mailpush.Errorf(mailpush.EConflict, "key %s is current: run mailpush keys rotate first, then retire it", id)
	}
	if slices.ContainsFunc(kj.Retired, func(r retiredKey) bool { return r.ID == id }) {
		return mailpush.Errorf(mailpush.EConflict, "key %s is already retired", id)
	}
	other := func(s storedKey) bool { return s.ID != id }
	hpkeKeys, callbackKeys := filter(kj.HPKE, other), filter(kj.Callback, other)
	if len(hpkeKeys) == len(kj.HPKE) && len(callbackKeys) == len(kj.Callback) {
		return mailpush.Errorf(mailpush.ENotFound, "no key %s in the keyring (mailpush keys list shows them)", id)
	}
	kj.HPKE, kj.Callback = hpkeKeys, callbackKeys
	kj.Retired = append(slices.Clone(kj.Retired), retiredKey{ID: id, Retired: now})
	return k.save(kj)
}

func filter(keys []storedKey, keep func(storedKey) bool) []storedKey {
	var out []storedKey
	for _, s := range keys {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// save writes kj and makes it the keyring in use.
func (k *Keyring) save(kj keyringJSON) error {
	data, err := writeKeyring(filepath.Join(k.dir, keyringFile), &kj)
	if err != nil {
		return err
	}
	return k.load(kj, data)
}

// KeyInfo describes one key of the keyring, never its material.
type KeyInfo struct {
	ID      string
	Kind    string // "credentials" (HPKE) or "callback"
	Created time.Time
	Current bool
	Retired time.Time // zero unless retired (then the key material is gone)
}

// Keys lists the keyring's keys, current first, then the retired IDs.
func (k *Keyring) Keys() []KeyInfo {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var out []KeyInfo
	for kind, list := range map[string][]storedKey{"credentials": k.stored.HPKE, "callback": k.stored.Callback} {
		for i, s := range list {
			out = append(out, KeyInfo{ID: s.ID, Kind: kind, Created: s.Created, Current: i == 0})
		}
	}
	slices.SortStableFunc(out, func(a, b KeyInfo) int {
		if a.Current != b.Current {
			if a.Current {
				return -1
			}
			return 1
		}
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Kind, b.Kind)
	})
	for _, r := range k.stored.Retired {
		out = append(out, KeyInfo{ID: r.ID, Retired: r.Retired})
	}
	return out
}

// retired reports whether id names a retired key.
func (k *Keyring) retired(id string) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return slices.ContainsFunc(k.stored.Retired, func(r retiredKey) bool { return r.ID == id })
}

// PublicKey returns the current credential-sealing key: its ID and the raw
// X25519 public key.
func (k *Keyring) PublicKey() (keyID string, pub []byte) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.hpke[0].id, k.hpke[0].pub
}

// OpenCredentials opens credentials a device sealed to one of the service's
// HPKE keys. Every failure is an *mailpush.Error with code EBadSealed.
func (k *Keyring) OpenCredentials(sealed string) (mailpush.Credentials, error) {
	var c mailpush.Credentials
	if len(sealed) > MaxSealedCredentials {
		return c, mailpush.Errorf(mailpush.EBadSealed, "sealed credentials are longer than %d bytes", MaxSealedCredentials)
	}
	kid, blob, err := splitSealed(sealed, "sealed credentials")
	if err != nil {
		return c, err
	}
	key, ok := k.hpkeKey(kid)
	if !ok && k.retired(kid) {
		return c, mailpush.WrapError(mailpush.EBadSealed, fmt.Sprintf("sealed credentials name key %q, which is retired: fetch GET /api/v1/key and seal again", kid), mailpush.ErrRetiredKey)
	}
	if !ok {
		return c, mailpush.Errorf(mailpush.EBadSealed, "sealed credentials name key %q, which this service does not have: fetch GET /api/v1/key and seal again", kid)
	}
	plain, err := hpke.Open(key.priv, hpke.HKDFSHA256(), hpke.AES128GCM(), []byte(credentialsInfo+kid), blob)
	if err != nil {
		return c, mailpush.Errorf(mailpush.EBadSealed, "sealed credentials cannot be opened: tampered with, or not sealed to key %q with info %q", kid, credentialsInfo+kid)
	}
	defer clear(plain)
	dec := json.NewDecoder(strings.NewReader(string(plain)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return mailpush.Credentials{}, mailpush.Errorf(mailpush.EBadSealed, "sealed credentials do not hold a JSON object with username/password, accessToken/refreshToken/tokenUrl/clientId, or a client identity (pkcs12/pkcs12Password or certificatePem/privateKeyPem)")
	}
	if err := c.CheckOAuth(); err != nil {
		return mailpush.Credentials{}, err
	}
	if err := c.CheckIdentity(); err != nil {
		return mailpush.Credentials{}, err
	}
	if c.Empty() {
		return c, mailpush.Errorf(mailpush.EBadSealed, "sealed credentials hold neither a username and password, an access token nor a client identity")
	}
	return c, nil
}

// SealCredentials seals creds to a service public key the way a device does.
// The server never needs it; tests, the load tool and app developers do.
func SealCredentials(keyID string, pub []byte, creds mailpush.Credentials) (string, error) {
	pk, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("seal: public key: %w", err)
	}
	hpk, err := hpke.NewDHKEMPublicKey(pk)
	if err != nil {
		return "", fmt.Errorf("seal: public key: %w", err)
	}
	plain, err := json.Marshal(creds)
	if err != nil {
		return "", err
	}
	ct, err := hpke.Seal(hpk, hpke.HKDFSHA256(), hpke.AES128GCM(), []byte(credentialsInfo+keyID), plain)
	if err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	return keyID + "." + b64.EncodeToString(ct), nil
}

// SealCallback seals a callback token with the current callback key.
func (k *Keyring) SealCallback(tok mailpush.CallbackToken) (string, error) {
	plain, err := json.Marshal(tok)
	if err != nil {
		return "", err
	}
	defer clear(plain)
	k.mu.RLock()
	key := k.callback[0]
	k.mu.RUnlock()
	nonce := randomBytes(key.aead.NonceSize())
	out := key.aead.Seal(nonce, nonce, plain, []byte(callbackAAD+key.id))
	s := key.id + "." + b64.EncodeToString(out)
	if len(s) > MaxCallbackToken {
		return "", fmt.Errorf("seal: callback token of %d bytes exceeds %d", len(s), MaxCallbackToken)
	}
	return s, nil
}

// OpenCallback opens a callback token. A forged, truncated or foreign token
// gives an *mailpush.Error with code EUnauthorized.
func (k *Keyring) OpenCallback(s string) (mailpush.CallbackToken, error) {
	var tok mailpush.CallbackToken
	if len(s) > MaxCallbackToken {
		return tok, mailpush.Errorf(mailpush.EUnauthorized, "callback token is longer than %d bytes", MaxCallbackToken)
	}
	kid, blob, err := splitSealed(s, "callback token")
	if err != nil {
		return tok, mailpush.Errorf(mailpush.EUnauthorized, "%s", mailpush.ErrorMessage(err))
	}
	key, ok := k.callbackKey(kid)
	if !ok && k.retired(kid) {
		return tok, mailpush.WrapError(mailpush.EUnauthorized, fmt.Sprintf("callback token was sealed with retired key %q", kid), mailpush.ErrRetiredKey)
	}
	if !ok {
		return tok, mailpush.Errorf(mailpush.EUnauthorized, "callback token names unknown key %q", kid)
	}
	ns := key.aead.NonceSize()
	if len(blob) < ns+key.aead.Overhead() {
		return tok, mailpush.Errorf(mailpush.EUnauthorized, "callback token is truncated")
	}
	plain, err := key.aead.Open(nil, blob[:ns], blob[ns:], []byte(callbackAAD+kid))
	if err != nil {
		return tok, mailpush.Errorf(mailpush.EUnauthorized, "callback token is forged or damaged")
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, &tok); err != nil || tok.MailboxID == "" || tok.TenantID == "" {
		return mailpush.CallbackToken{}, mailpush.Errorf(mailpush.EUnauthorized, "callback token content is invalid")
	}
	tok.KeyID = kid
	return tok, nil
}

// HashAddress returns the 16-byte keyed hash (truncated HMAC-SHA256) under
// which a mailbox address is stored. 128 bits keep collisions out of reach
// for any number of mailboxes a deployment can have. Addresses are compared
// without case and surrounding space.
func (k *Keyring) HashAddress(tenantID, address string) []byte {
	m := hmac.New(sha256.New, k.hashKey)
	m.Write([]byte(tenantID))
	m.Write([]byte{0})
	m.Write([]byte(strings.ToLower(strings.TrimSpace(address))))
	return m.Sum(nil)[:16]
}

// AddressID is a short printable form of an address hash, for logs.
func AddressID(hash []byte) string {
	if len(hash) > 6 {
		hash = hash[:6]
	}
	return hex.EncodeToString(hash)
}

// SealField encrypts a value for storage (AES-256-GCM, random nonce).
func (k *Keyring) SealField(plain []byte) ([]byte, error) { return k.SealBound(plain, nil) }

// OpenField decrypts a value sealed by SealField.
func (k *Keyring) OpenField(sealed []byte) ([]byte, error) { return k.OpenBound(sealed, nil) }

// SealBound is SealField with ad as GCM's additional data: what it seals
// opens only with the same ad (the row's key), so a sealed value copied
// into another row does not open there.
func (k *Keyring) SealBound(plain, ad []byte) ([]byte, error) {
	nonce := randomBytes(k.fieldKey.NonceSize())
	return k.fieldKey.Seal(nonce, nonce, plain, ad), nil
}

// OpenBound decrypts a value sealed by SealBound with the same ad.
func (k *Keyring) OpenBound(sealed, ad []byte) ([]byte, error) {
	ns := k.fieldKey.NonceSize()
	if len(sealed) < ns {
		return nil, errors.New("seal: stored field is truncated")
	}
	p, err := k.fieldKey.Open(nil, sealed[:ns], sealed[ns:], ad)
	if err != nil {
		return nil, fmt.Errorf("seal: stored field cannot be opened: %w", err)
	}
	return p, nil
}

// HashField gives a 16-byte keyed hash of a value, for unique lookups.
func (k *Keyring) HashField(plain []byte) []byte {
	m := hmac.New(sha256.New, k.tokenKey)
	m.Write(plain)
	return m.Sum(nil)[:16]
}

// SealContent HPKE-seals a push's content to a device's X25519 public key
// (info "mailpush content v1"), returning base64url(enc || ciphertext).
func SealContent(devicePub []byte, plain []byte) (string, error) {
	pk, err := ecdh.X25519().NewPublicKey(devicePub)
	if err != nil {
		return "", fmt.Errorf("seal: content key: %w", err)
	}
	hpk, err := hpke.NewDHKEMPublicKey(pk)
	if err != nil {
		return "", fmt.Errorf("seal: content key: %w", err)
	}
	ct, err := hpke.Seal(hpk, hpke.HKDFSHA256(), hpke.AES128GCM(), []byte(contentInfo), plain)
	if err != nil {
		return "", fmt.Errorf("seal: content: %w", err)
	}
	return b64.EncodeToString(ct), nil
}

// ValidContentKey reports whether b is a usable X25519 public key.
func ValidContentKey(b []byte) bool {
	_, err := ecdh.X25519().NewPublicKey(b)
	return err == nil
}

func (k *Keyring) hpkeKey(id string) (hpkeKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, h := range k.hpke {
		if h.id == id {
			return h, true
		}
	}
	return hpkeKey{}, false
}

func (k *Keyring) callbackKey(id string) (aeadKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, c := range k.callback {
		if c.id == id {
			return c, true
		}
	}
	return aeadKey{}, false
}

func splitSealed(s, what string) (kid string, blob []byte, err error) {
	kid, enc, ok := strings.Cut(s, ".")
	if !ok || kid == "" || enc == "" || len(kid) > 32 {
		return "", nil, mailpush.Errorf(mailpush.EBadSealed, "%s are not of the form <keyId>.<base64url>", what)
	}
	blob, err = b64.DecodeString(enc)
	if err != nil {
		return "", nil, mailpush.Errorf(mailpush.EBadSealed, "%s are not valid unpadded base64url", what)
	}
	return kid, blob, nil
}

// writeKeyring writes kj atomically and returns what it wrote.
func writeKeyring(path string, kj *keyringJSON) ([]byte, error) {
	data, err := json.MarshalIndent(kj, "", "  ")
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return nil, fmt.Errorf("seal: write keyring: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("seal: write keyring: %w", err)
	}
	return data, nil
}

// newKeyPair makes an HPKE key and a callback key with one ID: one
// rotation, retired together.
func newKeyPair(now time.Time) (hpkeKey, callbackKey storedKey) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	id := newKeyID()
	return storedKey{ID: id, Created: now, Key: priv.Bytes()}, storedKey{ID: id, Created: now, Key: randomBytes(32)}
}

func newKeyID() string { return hex.EncodeToString(randomBytes(4)) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func derive(secret []byte, label string) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, label, 32)
	if err != nil {
		panic(err) // only for lengths HKDF cannot produce
	}
	return k
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
