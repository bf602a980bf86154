package graph

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/mailpush/mailpush"
)

// keySet is an authority's token signing keys (JWKS), fetched on first use
// and again when a token names a key it does not hold (at most once a
// minute: Entra ID rolls keys, and a forged kid must not make us hammer it).
type keySet struct {
	url   string
	hc    *http.Client
	clock mailpush.Clock

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	fetched time.Time
}

const jwksRefetch = time.Minute

func (k *keySet) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if key, ok := k.keys[kid]; ok {
		return key, nil
	}
	if !k.fetched.IsZero() && k.clock.Now().Sub(k.fetched) < jwksRefetch {
		return nil, fmt.Errorf("no signing key %q", kid)
	}
	keys, err := k.fetch(ctx)
	k.fetched = k.clock.Now()
	if err != nil {
		return nil, err
	}
	k.keys = keys
	if key, ok := k.keys[kid]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("no signing key %q", kid)
}

func (k *keySet) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	res, err := k.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot fetch the signing keys: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cannot fetch the signing keys: HTTP %d", res.StatusCode)
	}
	var set struct {
		Keys []struct {
			Kty, Kid, N, E, Use string
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("malformed signing keys: %w", err)
	}
	out := map[string]*rsa.PublicKey{}
	for _, j := range set.Keys {
		if j.Kty != "RSA" || j.Kid == "" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(j.N)
		e, err2 := base64.RawURLEncoding.DecodeString(j.E)
		if err1 != nil || err2 != nil || len(e) > 4 {
			continue
		}
		out[j.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	return out, nil
}

// claims are the claims of an Entra ID token that mailpush reads.
type claims struct {
	jwt.RegisteredClaims
	PreferredUsername string `json:"preferred_username,omitempty"`
	UPN               string `json:"upn,omitempty"`
	Email             string `json:"email,omitempty"`
	OID               string `json:"oid,omitempty"`
	AppID             string `json:"appid,omitempty"`
	AZP               string `json:"azp,omitempty"`
}

// verify checks a token's RS256 signature against the key set, its issuer,
// audience, expiry and not-before (with a minute of leeway), and returns its
// claims.
func (k *keySet) verify(ctx context.Context, raw, issuer, audience string) (*claims, error) {
	if len(raw) > 16<<10 {
		return nil, errors.New("token longer than 16 KiB")
	}
	var c claims
	p := jwt.Parser{ValidMethods: []string{"RS256"}, SkipClaimsValidation: true}
	_, err := p.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return k.key(ctx, kid)
	})
	if err != nil {
		return nil, fmt.Errorf("token refused: %w", err)
	}
	now := k.clock.Now()
	switch {
	case c.Issuer != issuer:
		return nil, fmt.Errorf("token refused: issuer %q is not %q", c.Issuer, issuer)
	case !c.VerifyAudience(audience, true):
		return nil, errors.New("token refused: not issued for this app (audience)")
	case c.ExpiresAt == nil || !now.Before(c.ExpiresAt.Add(time.Minute)):
		return nil, errors.New("token refused: expired")
	case c.NotBefore != nil && now.Add(time.Minute).Before(c.NotBefore.Time):
		return nil, errors.New("token refused: not valid yet")
	}
	return &c, nil
}

// userMatches reports whether the token's user is the address: its
// preferred_username, upn or email, ignoring case.
func (c *claims) userMatches(address string) bool {
	for _, v := range []string{c.PreferredUsername, c.UPN, c.Email} {
		if v != "" && strings.EqualFold(v, address) {
			return true
		}
	}
	return false
}
