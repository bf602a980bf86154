package smime

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// crlSet holds a tenant's configured CRLs, each fetched when first needed
// and again when it is due (its nextUpdate, or crlRefresh after the fetch,
// whichever comes first). Only the configured URLs are ever fetched.
type crlSet struct {
	client  *http.Client
	clock   mailpush.Clock
	log     *slog.Logger
	refresh time.Duration
	timeout time.Duration
	lists   []*crlEntry
}

type crlEntry struct {
	url string
	// mu serialises fetches of this URL; lookups that need it wait (no
	// longer than their context allows) rather than fetch it again.
	mu      sync.Mutex
	list    *x509.RevocationList
	due     time.Time
	checked map[string]bool // issuer certificates (raw) whose signature on list verified
}

func newCRLSet(cfg Config, client *http.Client, clock mailpush.Clock, log *slog.Logger) *crlSet {
	s := &crlSet{client: client, clock: clock, log: log, refresh: cfg.CRLRefresh, timeout: cfg.CRLTimeout}
	for _, u := range cfg.CRLs {
		s.lists = append(s.lists, &crlEntry{url: u})
	}
	return s
}

var errCRLUnavailable = errors.New("a configured CRL cannot be had")

// revoked reports whether chain's leaf is on a CRL that its issuer
// (chain[1]) signed. Any configured CRL that cannot be fetched (and has no
// copy still within its nextUpdate) makes the answer unknown: it might be
// the issuer's.
func (s *crlSet) revoked(ctx context.Context, chain []*x509.Certificate) (bool, error) {
	if len(chain) < 2 {
		return false, nil // a self-signed root used as a leaf has no issuer CRL
	}
	leaf, issuer := chain[0], chain[1]
	for _, e := range s.lists {
		list, err := e.current(ctx, s)
		if err != nil {
			return false, err
		}
		if !bytes.Equal(list.RawIssuer, issuer.RawSubject) || !e.signedBy(list, issuer) {
			continue
		}
		for _, r := range list.RevokedCertificateEntries {
			if r.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				return true, nil
			}
		}
	}
	return false, nil
}

func (e *crlEntry) signedBy(list *x509.RevocationList, issuer *x509.Certificate) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := string(issuer.Raw)
	if ok, done := e.checked[k]; done {
		return ok
	}
	ok := list.CheckSignatureFrom(issuer) == nil
	if e.checked == nil {
		e.checked = map[string]bool{}
	}
	e.checked[k] = ok
	return ok
}

// current returns the CRL, fetching it when it is due. A failed fetch
// keeps the old copy while the old copy's nextUpdate has not passed.
func (e *crlEntry) current(ctx context.Context, s *crlSet) (*x509.RevocationList, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := s.clock.Now()
	if e.list != nil && now.Before(e.due) {
		return e.list, nil
	}
	list, err := s.fetch(ctx, e.url)
	if err != nil {
		s.log.Warn("smime: CRL fetch failed", "url", e.url, "err", err)
		if e.list != nil && (e.list.NextUpdate.IsZero() || now.Before(e.list.NextUpdate)) {
			return e.list, nil
		}
		return nil, fmt.Errorf("%w: %s: %v", errCRLUnavailable, e.url, err)
	}
	e.list, e.checked = list, nil
	e.due = now.Add(s.refresh)
	if !list.NextUpdate.IsZero() && list.NextUpdate.Before(e.due) {
		e.due = list.NextUpdate
	}
	return list, nil
}

func (s *crlSet) fetch(ctx context.Context, url string) (*x509.RevocationList, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxCRLSize+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxCRLSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxCRLSize)
	}
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("-----BEGIN")) {
		if der, ok := pemBytes(body, "X509 CRL"); ok {
			body = der
		}
	}
	return x509.ParseRevocationList(body)
}
