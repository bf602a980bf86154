// Package ewsfake is a fake Exchange server that speaks EWS over HTTPS on
// loopback, for tests and for the load tool.
//
// It serves Subscribe (push subscriptions on the Inbox), GetFolder (the Inbox
// unread count) and GetItem (subject and sender) with Basic or NTLMv2
// authentication (ntlm.go: NTLM bound to the TCP connection, as IIS does;
// AddNTLMUser makes a user NTLM-only), OAuth bearer tokens from its own
// token endpoint with short lifetimes, refresh-token rotation and
// revocation (oauth.go), TLS client certificates mapped to users by the UPN
// in their subject alternative name, issued by its own test CA and
// revocable (cba.go), ExchangeImpersonation for users given
// the role with AllowImpersonation, and the X-BackEndOverrideCookie
// server-affinity cookie,
// and pushes SendNotification requests to subscribers the way Exchange does:
// a StatusEvent right after Subscribe, the events of every mail change in
// order by one goroutine per subscription, a StatusEvent every
// StatusFrequency minutes when idle, retries after 30 s doubling each time
// until StatusFrequency minutes are spent, and the end of the subscription
// when the listener answers Unsubscribe or the retries run out. TimeScale
// shrinks Exchange's minutes so that tests run in milliseconds.
//
// Mail is changed with Go methods (Deliver, MarkRead, Delete, SoftDelete) or
// through a JSON control API under /control/ for a separate process. Tests
// observe the server with Subscriptions, Callbacks, Requests and WaitFor, and
// inject faults with DropSubscription, Restart, FailNext and
// SetCallbackDelay, and slow its answers with Hold and SetLatency.
//
// The fake writes and reads EWS XML on its own, without package ews, so that
// a test of ews against it checks two independent readings of the protocol.
package ewsfake

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Options configure a Server. The zero value is a real-time server.
type Options struct {
	// TimeScale multiplies Exchange's delays (StatusFrequency, the 30 s
	// retry back-off, the default ErrorServerBusy back-off): 0.001 makes a
	// minute last 60 ms. 0 means 1 (real time).
	TimeScale float64
	// Clock drives Exchange's timers (status events, retries) and stamps
	// deliveries; nil is the system clock. A test gives the fake the clock
	// it gives mailpush, so that one Advance moves both.
	Clock mailpush.Clock
	// Logger receives the fake's logs; nil discards them.
	Logger *slog.Logger
	// HTTPClient posts the notifications to the subscribers; nil means a
	// client with a 30 s timeout that does not follow redirects.
	HTTPClient *http.Client
	// QueueSize bounds the events waiting for delivery per subscription;
	// when full the oldest are dropped, which the listener sees as a
	// PreviousWatermark it does not know. 0 means 1000.
	QueueSize int
	// MaxCallbacks bounds the delivery attempts kept for Callbacks; older
	// ones are forgotten. 0 means 10,000.
	MaxCallbacks int
	// RevokeOnReuse makes the token endpoint revoke the whole grant (every
	// refresh and access token of its lineage) when a refresh token it
	// rotated away is used again, as providers with refresh-token reuse
	// detection do (oauth.go).
	RevokeOnReuse bool
}

// Subscription is the state of one push subscription.
type Subscription struct {
	ID              string   `json:"id"`
	Address         string   `json:"address"`
	URL             string   `json:"url"`
	StatusFrequency int      `json:"statusFrequency"` // minutes
	EventTypes      []string `json:"eventTypes"`
	Active          bool     `json:"active"`
	EndReason       string   `json:"endReason,omitempty"` // one of the End… constants when not Active
}

// Why a subscription ended.
const (
	EndUnsubscribed     = "unsubscribed"      // the listener answered Unsubscribe
	EndRetriesExhausted = "retries exhausted" // deliveries failed for StatusFrequency minutes
	EndDropped          = "dropped"           // DropSubscription
	EndRestarted        = "server restarted"  // Restart (then forgotten)
)

// Callback is one delivery attempt of a notification.
type Callback struct {
	SubscriptionID string    `json:"subscriptionId"`
	Attempt        int       `json:"attempt"` // 1 for the first try of a notification
	Status         int       `json:"status"`  // HTTP status, 0 when no answer came
	Result         string    `json:"result"`  // "OK", "Unsubscribe" or "error: …"
	Events         int       `json:"events"`  // events in the notification, StatusEvent included
	At             time.Time `json:"at"`
}

// ErrClosed is returned by WaitFor once the server is closed.
var ErrClosed = errors.New("ewsfake: server closed")

// ErrNotFound is returned for an unknown mailbox, item or subscription.
var ErrNotFound = errors.New("ewsfake: not found")

// Server is a fake Exchange server. Its methods are safe for concurrent use.
type Server struct {
	scale        float64
	clock        mailpush.Clock
	queueSize    int
	maxCallbacks int
	log          *slog.Logger
	hc           *http.Client
	ownTransport *http.Transport // closed by Close when the fake made it
	ts           *httptest.Server

	ctx    context.Context // cancelled by Close; parent of the subscriptions'
	cancel context.CancelFunc
	wg     sync.WaitGroup // the subscriptions' goroutines
	once   sync.Once

	mu            sync.Mutex
	closed        bool
	changed       chan struct{} // closed and replaced at every state change
	mailboxes     map[string]*mailbox
	logins        map[string]*mailbox // by lower-cased username and address
	subs          map[string]*subscription
	subSeq        int
	callbacks     []Callback
	requests      map[string]int
	inflight      map[string]int // requests of an operation being answered
	maxInflight   map[string]int
	failures      map[string][]failure
	callbackDelay time.Duration
	holds         map[string]chan struct{} // operations held until released (slow.go)
	held          map[string]int           // requests waiting for a hold
	latency       map[string]time.Duration // per operation (slow.go)
	access        map[string]accessGrant   // OAuth access tokens (oauth.go)
	refresh       map[string]refreshGrant  // OAuth refresh tokens
	spent         map[string]refreshGrant  // refresh tokens rotated away
	revokeOnReuse bool
	tokenAnswer   *tokenAnswer    // the token endpoint's next answer, when set
	clientCA      *CA             // issues the client certificates it maps (cba.go)
	revoked       map[string]bool // revoked client certificates' serial numbers, hex
}

// New starts a fake Exchange server on an HTTPS loopback address.
func New(opts Options) *Server {
	s := &Server{
		scale:         opts.TimeScale,
		clock:         opts.Clock,
		queueSize:     opts.QueueSize,
		maxCallbacks:  opts.MaxCallbacks,
		revokeOnReuse: opts.RevokeOnReuse,
		log:           opts.Logger,
		hc:            opts.HTTPClient,
		changed:       make(chan struct{}),
		mailboxes:     make(map[string]*mailbox),
		logins:        make(map[string]*mailbox),
		subs:          make(map[string]*subscription),
		requests:      make(map[string]int),
		inflight:      make(map[string]int),
		maxInflight:   make(map[string]int),
		failures:      make(map[string][]failure),
		holds:         make(map[string]chan struct{}),
		held:          make(map[string]int),
		latency:       make(map[string]time.Duration),
	}
	if s.scale <= 0 {
		s.scale = 1
	}
	if s.clock == nil {
		s.clock = mailpush.SystemClock{}
	}
	if s.queueSize <= 0 {
		s.queueSize = 1000
	}
	if s.maxCallbacks <= 0 {
		s.maxCallbacks = 10_000
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		s.ownTransport = tr
		s.hc = &http.Client{
			Transport: tr,
			Timeout:   30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // Exchange does not follow redirects
			},
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	mux := http.NewServeMux()
	s.controlRoutes(mux)
	mux.HandleFunc("POST "+tokenPath, s.handleToken)
	mux.HandleFunc("/", s.handleEWS)
	s.ts = httptest.NewUnstartedServer(mux)
	s.ts.Config.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.ts.Config.ConnContext = connContext
	// Asked, not required: certificate-based authentication beside the
	// others (cba.go).
	s.ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	s.ts.StartTLS()
	return s
}

// URL returns the EWS endpoint, https://127.0.0.1:port/EWS/Exchange.asmx.
func (s *Server) URL() string { return s.ts.URL + ewsPath }

// ControlURL returns the base URL of the control API, ending in /control/.
func (s *Server) ControlURL() string { return s.ts.URL + "/control/" }

// CertPool returns a pool that trusts the server's certificate.
func (s *Server) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.ts.Certificate())
	return pool
}

// Certificate returns the server's self-signed TLS certificate.
func (s *Server) Certificate() *x509.Certificate { return s.ts.Certificate() }

// CertificatePEM returns the server's certificate in PEM, for a separate
// process that must trust it.
func (s *Server) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ts.Certificate().Raw})
}

// HTTPClient returns a client that trusts the server's certificate. It is
// closed with the server.
func (s *Server) HTTPClient() *http.Client { return s.ts.Client() }

// Close stops the server and every goroutine it started, and waits for them.
// It is safe to call more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.notifyLocked()
		s.mu.Unlock()
		s.ts.Close() // waits for the handlers: no subscription starts after this
		s.cancel()
		s.wg.Wait()
		if s.ownTransport != nil {
			s.ownTransport.CloseIdleConnections()
		}
	})
}

// scaled returns d multiplied by the time scale.
func (s *Server) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.scale)
}

// notifyLocked wakes every WaitFor. s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitFor returns when cond(s) holds, checking it at once and after every
// state change (subscription, delivery attempt, request, mail change). cond
// may call the Server's methods. It fails when ctx ends or the server closes.
func (s *Server) WaitFor(ctx context.Context, cond func(*Server) bool) error {
	for {
		s.mu.Lock()
		ch, closed := s.changed, s.closed
		s.mu.Unlock()
		if cond(s) {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("ewsfake: WaitFor: %w", ctx.Err())
		}
	}
}

// Subscriptions returns every subscription known, oldest first; Restart
// forgets them all.
func (s *Server) Subscriptions() []Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	subs := make([]*subscription, 0, len(s.subs))
	for _, sub := range s.subs {
		subs = append(subs, sub)
	}
	slices.SortFunc(subs, func(a, b *subscription) int { return a.seq - b.seq })
	out := make([]Subscription, len(subs))
	for i, sub := range subs {
		out[i] = sub.view()
	}
	return out
}

// Subscription returns the subscription with the given ID.
func (s *Server) Subscription(id string) (Subscription, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subs[id]
	if !ok {
		return Subscription{}, false
	}
	return sub.view(), true
}

// Callbacks returns the delivery attempts, oldest first (at most
// Options.MaxCallbacks of them).
func (s *Server) Callbacks() []Callback {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.callbacks)
}

// CallbacksFor returns the delivery attempts for one subscription.
func (s *Server) CallbacksFor(subscriptionID string) []Callback {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Callback
	for _, c := range s.callbacks {
		if c.SubscriptionID == subscriptionID {
			out = append(out, c)
		}
	}
	return out
}

// Requests returns how many authenticated requests of the EWS operation op
// ("Subscribe", "GetFolder", "GetItem", or any other name a client sent)
// arrived, injected failures included. Requests refused for their
// credentials count under "Unauthorized", and those whose operation could
// not be read under "Invalid".
func (s *Server) Requests(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[op]
}

// MaxConcurrent returns the most requests of the EWS operation op that the
// fake answered at the same time: how a client keeps its concurrency limits.
func (s *Server) MaxConcurrent(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInflight[op]
}

// DropSubscription silently stops the subscription, as a crashed or
// restarted mailbox server does: no more notifications, no Unsubscribe.
func (s *Server) DropSubscription(id string) error {
	s.mu.Lock()
	sub, ok := s.subs[id]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("subscription %q: %w", id, ErrNotFound)
	}
	s.endLocked(sub, EndDropped)
	s.mu.Unlock()
	sub.stop()
	return nil
}

// Restart forgets every subscription, as an Exchange restart does;
// mailboxes, mail and watermarks stay.
func (s *Server) Restart() {
	s.mu.Lock()
	subs := make([]*subscription, 0, len(s.subs))
	for _, sub := range s.subs {
		s.endLocked(sub, EndRestarted)
		subs = append(subs, sub)
	}
	clear(s.subs)
	s.notifyLocked()
	s.mu.Unlock()
	for _, sub := range subs {
		sub.stop()
	}
	s.log.Info("ewsfake restarted", "subscriptions", len(subs))
}

// FailNext makes the next request of the EWS operation op fail with the EWS
// response code, e.g. FailNext("Subscribe", "ErrorInvalidWatermark").
// ErrorServerBusy comes as a SOAP fault (HTTP 500) whose MessageXml carries
// BackOffMilliseconds of 30 s times TimeScale, as Exchange's throttling does;
// other codes come as a response message with ResponseClass="Error". A code
// "HTTP<status>", e.g. "HTTP503", answers that status with a plain-text body.
// Calls queue up: each failure is used once.
func (s *Server) FailNext(op, code string) {
	s.failNext(op, failure{code: code, backOff: s.scaled(30 * time.Second)})
}

// FailNextBusy makes the next request of op fail with ErrorServerBusy and
// the given back-off (not scaled).
func (s *Server) FailNextBusy(op string, backOff time.Duration) {
	s.failNext(op, failure{code: "ErrorServerBusy", backOff: backOff})
}

func (s *Server) failNext(op string, f failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[op] = append(s.failures[op], f)
}

// SetCallbackDelay makes every delivery attempt wait d (real time, not
// scaled) before it posts, as a slow or busy Exchange does.
func (s *Server) SetCallbackDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.callbackDelay = d
}

// lower normalises addresses and usernames for lookups.
func lower(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
