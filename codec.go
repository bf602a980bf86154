package mailpush

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"strings"
	"time"
)

// StoreCodec is how every store turns secrets it must keep into what it
// writes: push tokens sealed (with a keyed hash for lookups), and the secret
// part of queued pushes and events sealed as one JSON value. The stores share
// it, so that a row written by one implementation reads the same in another
// and the format is decided in one place.
type StoreCodec struct {
	Cipher FieldCipher
}

// SealToken seals a device push token and returns it with its keyed hash
// (the hash finds "this device" without opening every token).
func (c StoreCodec) SealToken(token string) (sealed, hash []byte, err error) {
	sealed, err = c.Cipher.SealField([]byte(token))
	if err != nil {
		return nil, nil, err
	}
	return sealed, c.Cipher.HashField([]byte(token)), nil
}

// HashToken is the keyed hash of a device push token.
func (c StoreCodec) HashToken(token string) []byte { return c.Cipher.HashField([]byte(token)) }

// OpenToken opens a sealed device push token.
func (c StoreCodec) OpenToken(sealed []byte) (string, error) {
	tok, err := c.Cipher.OpenField(sealed)
	return string(tok), err
}

// SealAddress seals a mailbox's address for its row (Mailbox.StoredAddress),
// bound to the mailbox's ID: a sealed address copied into another
// mailbox's row does not open there.
func (c StoreCodec) SealAddress(mailboxID, address string) ([]byte, error) {
	if address == "" {
		return nil, nil
	}
	return c.Cipher.SealBound([]byte(address), addressAAD(mailboxID))
}

// OpenAddress opens what SealAddress sealed for the mailbox; "" when there
// is none or it cannot be opened (a retired key, another row's value): the
// mailbox's address is then unknown, as for one stored before addresses
// were kept, and the sources fall back to what they do without it.
func (c StoreCodec) OpenAddress(mailboxID string, sealed []byte) string {
	if len(sealed) == 0 {
		return ""
	}
	plain, err := c.Cipher.OpenBound(sealed, addressAAD(mailboxID))
	if err != nil {
		return ""
	}
	return string(plain)
}

// AddressUpdate is what a mailbox write stores in the sealed address column:
// nil (keep the stored value) unless m.StoredAddress was set to another
// address than before (the value read), then that address sealed. Most
// writes (every notification's) thus seal nothing, and an address is never
// erased by a write that did not know it.
func (c StoreCodec) AddressUpdate(m *Mailbox, before string) ([]byte, error) {
	if m.StoredAddress == "" || m.StoredAddress == before {
		return nil, nil
	}
	return c.SealAddress(m.ID, m.StoredAddress)
}

// NewMailboxAddress is the address a new mailbox row keeps: StoredAddress,
// else Address (the registration's), sealed; it sets m.StoredAddress.
func (c StoreCodec) NewMailboxAddress(m *Mailbox) ([]byte, error) {
	if m.StoredAddress == "" {
		m.StoredAddress = m.Address
	}
	return c.SealAddress(m.ID, m.StoredAddress)
}

// SealSharedKey seals a key of SharedKeyStore, bound to its kind and ID.
func (c StoreCodec) SealSharedKey(kind, id string, value []byte) ([]byte, error) {
	return c.Cipher.SealBound(value, sharedKeyAAD(kind, id))
}

// OpenSharedKey opens what SealSharedKey sealed under the same kind and ID.
func (c StoreCodec) OpenSharedKey(kind, id string, sealed []byte) ([]byte, error) {
	return c.Cipher.OpenBound(sealed, sharedKeyAAD(kind, id))
}

// Rows is what both stores' query results offer (database/sql's *Rows and
// pgx's Rows): the shared decodings below read either.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanSharedKeys reads rows of (id, value_sealed, not_after) of the kind's
// shared keys and opens each; a key sealed with a retired key of the
// keyring is left out, as if gone.
func (c StoreCodec) ScanSharedKeys(kind string, rows Rows) ([]SharedKey, error) {
	var out []SharedKey
	for rows.Next() {
		var k SharedKey
		var sealed []byte
		var notAfter int64
		if err := rows.Scan(&k.ID, &sealed, &notAfter); err != nil {
			return nil, err
		}
		var err error
		if k.Value, err = c.OpenSharedKey(kind, k.ID, sealed); err != nil {
			continue
		}
		k.NotAfter = FromUnixMilli(notAfter)
		out = append(out, k)
	}
	return out, rows.Err()
}

func sharedKeyAAD(kind, id string) []byte {
	return []byte("mailpush shared key\x00" + kind + "\x00" + id)
}

func addressAAD(mailboxID string) []byte { return []byte("mailpush mailbox address\x00" + mailboxID) }

// StoredContent is what of a queued push or event is secret: subject and
// sender in clear, or the content sealed to the device's key.
type StoredContent struct {
	Subject string `json:"s,omitempty"`
	Sender  string `json:"f,omitempty"`
	Sealed  string `json:"e,omitempty"`
	Ref     string `json:"r,omitempty"` // an event's Ref
}

// SealContent seals content; nil when there is none.
func (c StoreCodec) SealContent(sc StoredContent) ([]byte, error) {
	if sc == (StoredContent{}) {
		return nil, nil
	}
	plain, _ := json.Marshal(sc)
	defer clear(plain)
	return c.Cipher.SealField(plain)
}

// OpenContent opens what SealContent sealed; when it cannot, it says why
// (the row then becomes a dead letter instead of stopping the queue).
func (c StoreCodec) OpenContent(sealed []byte) (StoredContent, string) {
	var sc StoredContent
	if len(sealed) == 0 {
		return sc, ""
	}
	plain, err := c.Cipher.OpenField(sealed)
	if err != nil {
		return sc, "the stored content cannot be opened"
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, &sc); err != nil {
		return sc, "the stored content is not valid JSON"
	}
	return sc, ""
}

// NewID returns a 128-bit ID as 26 lower-case base32 characters (the
// extended-hex alphabet, so that IDs sort as their bytes do): the form of
// every stored object's ID (tenants, tokens, mailboxes, registrations),
// whichever store made it. The first 48 bits are the Unix milliseconds of
// its making, the other 80 random: IDs made together sort together, so the
// primary-key index of a table receives a burst of new rows on the same few
// pages instead of on a random page each (a random ID made every
// registration dirty index pages of its own, written to the WAL at each
// commit). An ID says when it was made, nothing else.
func NewID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (40 - 8*i))
	}
	rand.Read(b[6:])
	return strings.ToLower(idEncoding.EncodeToString(b[:]))
}

var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// UnixMilli is how the stores keep a time: Unix milliseconds, 0 for the
// zero time (so both stores round alike and the conformance suite holds).
func UnixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromUnixMilli reads what UnixMilli wrote, in UTC.
func FromUnixMilli(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// TenantRow receives a stored tenant's columns, in the stores' order (id,
// name, allowed_hosts, max_content, device_subscribed, created_at), from
// either store's Scan, and converts them: one decoding for both stores.
type TenantRow struct {
	t              *Tenant
	hosts, content string
	created        int64
}

// Dest returns the Scan destinations that fill t once Finish runs.
func (r *TenantRow) Dest(t *Tenant) []any {
	r.t = t
	return []any{&t.ID, &t.Name, &r.hosts, &r.content, &t.DeviceSubscribed, &r.created}
}

// Finish converts the scanned columns into the tenant.
func (r *TenantRow) Finish() {
	if r.hosts != "" {
		r.t.AllowedHosts = strings.Split(r.hosts, "\n")
	}
	r.t.MaxContent = ContentMode(r.content)
	r.t.CreatedAt = FromUnixMilli(r.created)
}

// TokenRow is TenantRow for a stored token's columns (id, tenant_id,
// scope, secret_hash, created_at).
type TokenRow struct {
	t       *Token
	scope   string
	created int64
}

// Dest returns the Scan destinations that fill t once Finish runs.
func (r *TokenRow) Dest(t *Token) []any {
	r.t = t
	return []any{&t.ID, &t.TenantID, &r.scope, &t.SecretHash, &r.created}
}

// Finish converts the scanned columns into the token.
func (r *TokenRow) Finish() {
	r.t.Scope, r.t.CreatedAt = Scope(r.scope), FromUnixMilli(r.created)
}

// OAuthTokenKey is the keyed hash under which a store finds the grant that
// a refresh token (of a token endpoint and client) belongs to; a grant's
// own key is that of its first refresh token.
func (c StoreCodec) OAuthTokenKey(tokenURL, clientID, refreshToken string) []byte {
	return c.Cipher.HashField([]byte("oauth grant\x00" + tokenURL + "\x00" + clientID + "\x00" + refreshToken))
}

// oauthSealed is what of an OAuth grant is sealed at rest.
type oauthSealed struct {
	AccessToken  string `json:"a,omitempty"`
	RefreshToken string `json:"r"`
	ExpiresAt    int64  `json:"e,omitempty"`
}

// SealOAuth seals a grant's tokens, bound to its key: a row's sealed
// tokens copied into another row do not open there.
func (c StoreCodec) SealOAuth(g OAuthGrant) ([]byte, error) {
	plain, _ := json.Marshal(oauthSealed{AccessToken: g.AccessToken, RefreshToken: g.RefreshToken, ExpiresAt: g.ExpiresAt})
	defer clear(plain)
	return c.Cipher.SealBound(plain, oauthAD(g.Key))
}

// OpenOAuth opens what SealOAuth sealed into g's tokens (g.Key set).
func (c StoreCodec) OpenOAuth(g *OAuthGrant, sealed []byte) error {
	plain, err := c.Cipher.OpenBound(sealed, oauthAD(g.Key))
	if err != nil {
		return WrapError(EInternal, "a stored OAuth grant cannot be opened", err)
	}
	defer clear(plain)
	var v oauthSealed
	if err := json.Unmarshal(plain, &v); err != nil || v.RefreshToken == "" {
		return Errorf(EInternal, "a stored OAuth grant is not valid")
	}
	g.AccessToken, g.RefreshToken, g.ExpiresAt = v.AccessToken, v.RefreshToken, v.ExpiresAt
	return nil
}

func oauthAD(key []byte) []byte { return append([]byte("mailpush oauth grant v1\x00"), key...) }
