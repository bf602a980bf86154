package apnsfake_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"

	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/fake/apnsfake"
)

const (
	team  = "TEAM123456"
	kid   = "KEY1234567"
	topic = "com.example.mail"
	devA  = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	devB  = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	msgID = "123e4567-e89b-12d3-a456-426614174000"
)

type fixture struct {
	srv    *apnsfake.Server
	key    *ecdsa.PrivateKey
	client *http.Client
}

func newFixture(t *testing.T, opts apnsfake.Options) *fixture {
	t.Helper()
	key, _, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	srv := apnsfake.New(opts)
	t.Cleanup(srv.Close)
	srv.AddKey(team, kid, &key.PublicKey)
	srv.AllowTopic(topic)
	return &fixture{srv: srv, key: key, client: h2Client(t, srv)}
}

func h2Client(t *testing.T, srv *apnsfake.Server) *http.Client {
	var p http.Protocols
	p.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CertPool()}, Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// sign makes a provider token.
func sign(t *testing.T, key *ecdsa.PrivateKey, keyID, teamID string, iat time.Time) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": teamID, "iat": iat.Unix()})
	tok.Header["kid"] = keyID
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// request is a hand-made APNs request; fields left empty get valid values,
// "-" removes a header.
type request struct {
	method  string
	path    string
	auth    string
	topic   string
	typ     string
	prio    string
	id      string
	collaps string
	exp     string
	body    string
}

type answer struct {
	status     int
	reason     string
	timestamp  int64
	id         string
	retryAfter string
}

func (f *fixture) do(t *testing.T, r request) answer {
	t.Helper()
	def := func(v, d string) string {
		switch v {
		case "":
			return d
		case "-":
			return ""
		}
		return v
	}
	method := def(r.method, http.MethodPost)
	path := def(r.path, "/3/device/"+devA)
	body := def(r.body, `{"aps":{"badge":3},"mp":{"seq":7}}`)
	req, err := http.NewRequest(method, f.srv.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []struct{ name, value string }{
		{"authorization", def(r.auth, "bearer "+sign(t, f.key, kid, team, time.Now()))},
		{"apns-topic", def(r.topic, topic)},
		{"apns-push-type", def(r.typ, "alert")},
		{"apns-priority", def(r.prio, "10")},
		{"apns-id", def(r.id, msgID)},
		{"apns-collapse-id", def(r.collaps, "")},
		{"apns-expiration", def(r.exp, "")},
	} {
		if h.value != "" {
			req.Header.Set(h.name, h.value)
		}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("answer over %s, want HTTP/2", resp.Proto)
	}
	a := answer{status: resp.StatusCode, id: resp.Header.Get("apns-id"), retryAfter: resp.Header.Get("Retry-After")}
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Reason    string `json:"reason"`
			Timestamp int64  `json:"timestamp"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("error body %q: %v", raw, err)
		}
		a.reason, a.timestamp = e.Reason, e.Timestamp
	} else if len(raw) != 0 {
		t.Errorf("200 with body %q", raw)
	}
	return a
}

func TestRejections(t *testing.T) {
	f := newFixture(t, apnsfake.Options{})
	other, _, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	hs256, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": team, "iat": now.Unix()}).SignedString([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		req    request
		status int
		reason string
	}{
		{"GET", request{method: http.MethodGet, body: "-"}, 405, "MethodNotAllowed"},
		{"PUT", request{method: http.MethodPut}, 405, "MethodNotAllowed"},
		{"bad path", request{path: "/3/devices/" + devA}, 404, "BadPath"},
		{"extra path segment", request{path: "/3/device/" + devA + "/x"}, 404, "BadPath"},
		{"no token in path", request{path: "/3/device/"}, 400, "MissingDeviceToken"},
		{"no authorization", request{auth: "-"}, 403, "MissingProviderToken"},
		{"not bearer", request{auth: "basic abc"}, 403, "InvalidProviderToken"},
		{"garbage JWT", request{auth: "bearer abc.def.ghi"}, 403, "InvalidProviderToken"},
		{"unknown key ID", request{auth: "bearer " + sign(t, f.key, "NOSUCHKEY0", team, now)}, 403, "InvalidProviderToken"},
		{"issuer not the key's team", request{auth: "bearer " + sign(t, f.key, kid, "OTHERTEAM0", now)}, 403, "InvalidProviderToken"},
		{"signed by another key", request{auth: "bearer " + sign(t, other, kid, team, now)}, 403, "InvalidProviderToken"},
		{"HS256", request{auth: "bearer " + hs256}, 403, "InvalidProviderToken"},
		{"iat in the future", request{auth: "bearer " + sign(t, f.key, kid, team, now.Add(time.Hour))}, 403, "InvalidProviderToken"},
		{"iat over an hour old", request{auth: "bearer " + sign(t, f.key, kid, team, now.Add(-61*time.Minute))}, 403, "ExpiredProviderToken"},
		{"token too short", request{path: "/3/device/" + devA[:62]}, 400, "BadDeviceToken"},
		{"token odd length", request{path: "/3/device/" + devA + "a"}, 400, "BadDeviceToken"},
		{"token too long", request{path: "/3/device/" + strings.Repeat("ab", 101)}, 400, "BadDeviceToken"},
		{"token not hex", request{path: "/3/device/" + strings.Repeat("zz", 32)}, 400, "BadDeviceToken"},
		{"no topic", request{topic: "-"}, 400, "MissingTopic"},
		{"topic not allowed", request{topic: "com.example.other"}, 400, "TopicDisallowed"},
		{"unknown push type", request{typ: "shout"}, 400, "InvalidPushType"},
		{"priority 7", request{prio: "7"}, 400, "BadPriority"},
		{"priority not a number", request{prio: "high"}, 400, "BadPriority"},
		{"background priority 10", request{typ: "background", body: `{"aps":{"content-available":1}}`}, 400, "BadPriority"},
		{"background default priority", request{typ: "background", prio: "-", body: `{"aps":{"content-available":1}}`}, 400, "BadPriority"},
		{"background with badge", request{typ: "background", prio: "5", body: `{"aps":{"content-available":1,"badge":1}}`}, 400, "BadPayload"},
		{"background with alert", request{typ: "background", prio: "5", body: `{"aps":{"content-available":1,"alert":"hi"}}`}, 400, "BadPayload"},
		{"background with sound", request{typ: "background", prio: "5", body: `{"aps":{"content-available":1,"sound":"default"}}`}, 400, "BadPayload"},
		{"apns-id not a UUID", request{id: "42"}, 400, "BadMessageId"},
		{"collapse ID of 65 bytes", request{collaps: strings.Repeat("c", 65)}, 400, "BadCollapseId"},
		{"expiration not a number", request{exp: "tomorrow"}, 400, "BadExpirationDate"},
		{"payload of 4097 bytes", request{body: `{"aps":{},"x":"` + strings.Repeat("x", 4097-len(`{"aps":{},"x":""}`)) + `"}`}, 413, "PayloadTooLarge"},
		{"empty payload", request{body: "-"}, 400, "PayloadEmpty"},
		{"payload not JSON", request{body: `{"aps":`}, 400, "BadPayload"},
		{"payload an array", request{body: `[1]`}, 400, "BadPayload"},
		{"payload without aps", request{body: `{"mp":{"seq":1}}`}, 400, "BadPayload"},
		{"aps not an object", request{body: `{"aps":1}`}, 400, "BadPayload"},
		{"alert a number", request{body: `{"aps":{"alert":1}}`}, 400, "BadPayload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.do(t, tt.req)
			if got.status != tt.status || got.reason != tt.reason {
				t.Errorf("got %d %s, want %d %s", got.status, got.reason, tt.status, tt.reason)
			}
			if got.id == "" {
				t.Error("answer without apns-id")
			}
		})
	}
	if n := len(f.srv.Pushes()); n != 0 {
		t.Errorf("recorded %d pushes from rejected requests", n)
	}
	if got, want := f.srv.Requests(), len(tests); got != want {
		t.Errorf("Requests() = %d, want %d", got, want)
	}
}

func TestAccepts(t *testing.T) {
	f := newFixture(t, apnsfake.Options{})
	tests := []struct {
		name string
		req  request
		want apnsfake.Push
	}{
		{
			name: "badge",
			req:  request{collaps: strings.Repeat("c", 64), exp: "1700000000"},
			want: apnsfake.Push{Token: devA, Topic: topic, PushType: "alert", Priority: 10, ID: msgID, CollapseID: strings.Repeat("c", 64),
				Expiration: time.Unix(1700000000, 0), Badge: 3, Seq: 7},
		},
		{
			name: "background",
			req:  request{typ: "background", prio: "5", body: `{"aps":{"content-available":1},"mp":{"seq":9}}`},
			want: apnsfake.Push{Token: devA, Topic: topic, PushType: "background", Priority: 5, ID: msgID, Badge: -1, ContentAvailable: true, Seq: 9},
		},
		{
			name: "alert dictionary, upper-case token, no push type",
			req: request{path: "/3/device/" + strings.ToUpper(devB), typ: "-", prio: "-",
				body: `{"aps":{"alert":{"title":"Ann","body":"Lunch?"},"badge":0,"sound":"default","mutable-content":1},"mp":{"seq":1,"enc":"c2VhbGVk"}}`},
			want: apnsfake.Push{Token: devB, Topic: topic, PushType: "alert", Priority: 10, ID: msgID, Badge: 0, AlertTitle: "Ann", AlertBody: "Lunch?",
				Sound: "default", MutableContent: true, Enc: "c2VhbGVk", Seq: 1},
		},
		{
			name: "alert string",
			req:  request{body: `{"aps":{"alert":"Hello"}}`},
			want: apnsfake.Push{Token: devA, Topic: topic, PushType: "alert", Priority: 10, ID: msgID, Badge: -1, AlertBody: "Hello"},
		},
		{
			name: "payload of exactly 4096 bytes",
			req:  request{body: `{"aps":{},"x":"` + strings.Repeat("x", 4096-len(`{"aps":{},"x":""}`)) + `"}`},
			want: apnsfake.Push{Token: devA, Topic: topic, PushType: "alert", Priority: 10, ID: msgID, Badge: -1},
		},
		{
			name: "voip payload over 4096 bytes",
			req:  request{typ: "voip", body: `{"aps":{},"x":"` + strings.Repeat("x", 5000) + `"}`},
			want: apnsfake.Push{Token: devA, Topic: topic, PushType: "voip", Priority: 10, ID: msgID, Badge: -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.srv.Reset()
			a := f.do(t, tt.req)
			if a.status != http.StatusOK {
				t.Fatalf("got %d %s, want 200", a.status, a.reason)
			}
			if a.id != msgID {
				t.Errorf("apns-id = %q, want %q", a.id, msgID)
			}
			pushes := f.srv.Pushes()
			if len(pushes) != 1 {
				t.Fatalf("recorded %d pushes, want 1", len(pushes))
			}
			got := pushes[0]
			if got.At.IsZero() || len(got.Payload) == 0 {
				t.Errorf("At = %v, Payload = %q: want both set", got.At, got.Payload)
			}
			got.At, got.Payload = time.Time{}, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("recorded\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestAnswerMakesAPNsIDWhenAbsent(t *testing.T) {
	f := newFixture(t, apnsfake.Options{})
	a := f.do(t, request{id: "-"})
	if a.status != 200 || len(a.id) != 36 {
		t.Fatalf("got %d with apns-id %q, want 200 with a UUID", a.status, a.id)
	}
	if got := f.srv.Pushes()[0].ID; got != a.id {
		t.Errorf("recorded ID %q, answered %q", got, a.id)
	}
}

func TestUnregistered(t *testing.T) {
	f := newFixture(t, apnsfake.Options{})
	at := time.UnixMilli(1700000000123)
	f.srv.SetTokenUnregistered(strings.ToUpper(devA), at)

	a := f.do(t, request{})
	if a.status != 410 || a.reason != "Unregistered" || a.timestamp != at.UnixMilli() {
		t.Errorf("got %d %s %d, want 410 Unregistered %d", a.status, a.reason, a.timestamp, at.UnixMilli())
	}
	if a := f.do(t, request{path: "/3/device/" + devB}); a.status != 200 {
		t.Errorf("other token: got %d %s, want 200", a.status, a.reason)
	}
	// A bad request is refused for what is wrong with it, as APNs does.
	if a := f.do(t, request{topic: "-"}); a.reason != "MissingTopic" {
		t.Errorf("bad request to an unregistered token: got %s, want MissingTopic", a.reason)
	}
	f.srv.SetTokenUnregistered(devA, time.Time{})
	if a := f.do(t, request{}); a.status != 200 {
		t.Errorf("after re-registration: got %d %s, want 200", a.status, a.reason)
	}
}

func TestFailNext(t *testing.T) {
	f := newFixture(t, apnsfake.Options{RetryAfter: 1500 * time.Millisecond})
	tests := []struct {
		status     int
		reason     string
		retryAfter string
		timestamp  bool
	}{
		{503, "ServiceUnavailable", "2", false},
		{429, "TooManyRequests", "2", false},
		{500, "InternalServerError", "", false},
		{410, "ExpiredToken", "", true},
		{400, "DeviceTokenNotForTopic", "", false},
	}
	for _, tt := range tests {
		f.srv.FailNext(2, tt.status, tt.reason)
		for i := range 2 {
			// Even an invalid request gets the injected answer.
			a := f.do(t, request{topic: "-"})
			if a.status != tt.status || a.reason != tt.reason || a.retryAfter != tt.retryAfter || (a.timestamp != 0) != tt.timestamp {
				t.Errorf("%d %s, request %d: got %+v", tt.status, tt.reason, i, a)
			}
		}
		if a := f.do(t, request{}); a.status != 200 {
			t.Errorf("%d %s: third request got %d %s, want 200", tt.status, tt.reason, a.status, a.reason)
		}
	}
}

func TestHTTP1Refused(t *testing.T) {
	f := newFixture(t, apnsfake.Options{})
	var p http.Protocols
	p.SetHTTP1(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.srv.CertPool()}, Protocols: &p}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL()+"/3/device/"+devA, strings.NewReader(`{"aps":{}}`))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		// Refusing in the handshake, as Apple does, is fine too.
		t.Logf("refused: %v", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusHTTPVersionNotSupported {
		t.Errorf("HTTP/1.1 request got %d, want 505", resp.StatusCode)
	}
}

func TestTokensSeenAndConnections(t *testing.T) {
	f := newFixture(t, apnsfake.Options{})
	jwt1 := "bearer " + sign(t, f.key, kid, team, time.Now())
	jwt2 := "bearer " + sign(t, f.key, kid, team, time.Now().Add(-time.Minute))
	for _, auth := range []string{jwt1, jwt1, jwt2, jwt1, "bearer junk"} {
		f.do(t, request{auth: auth})
	}
	if got := f.srv.TokensSeen(); got != 3 {
		t.Errorf("TokensSeen() = %d, want 3", got)
	}
	if got := f.srv.Connections(); got != 1 {
		t.Errorf("Connections() = %d, want 1 (one HTTP/2 connection)", got)
	}
	f.srv.Reset()
	if f.srv.TokensSeen() != 0 || f.srv.Requests() != 0 || len(f.srv.Pushes()) != 0 {
		t.Error("Reset kept counts or pushes")
	}
}

func TestExpiredByClock(t *testing.T) {
	clock := clocktest.New(time.Now())
	f := newFixture(t, apnsfake.Options{Clock: clock})
	auth := "bearer " + sign(t, f.key, kid, team, clock.Now())
	if a := f.do(t, request{auth: auth}); a.status != 200 {
		t.Fatalf("fresh token: got %d %s", a.status, a.reason)
	}
	clock.Advance(time.Hour + time.Second)
	// The token was verified and cached; its age is still judged.
	if a := f.do(t, request{auth: auth}); a.reason != "ExpiredProviderToken" {
		t.Errorf("after an hour: got %d %s, want 403 ExpiredProviderToken", a.status, a.reason)
	}
}

func TestWaitFor(t *testing.T) {
	f := newFixture(t, apnsfake.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	done := make(chan error, 1)
	go func() {
		done <- f.srv.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 2 })
	}()
	var wg sync.WaitGroup
	for _, dev := range []string{devA, devB} {
		wg.Go(func() {
			if a := f.do(t, request{path: "/3/device/" + dev}); a.status != 200 {
				t.Errorf("got %d %s", a.status, a.reason)
			}
		})
	}
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatalf("WaitFor: %v", err)
	}
	if got := len(f.srv.PushesFor(strings.ToUpper(devB))); got != 1 {
		t.Errorf("PushesFor(devB) has %d pushes, want 1", got)
	}

	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	err := f.srv.WaitFor(short, func(ps []apnsfake.Push) bool { return len(ps) >= 3 })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor on an unmet predicate = %v, want DeadlineExceeded", err)
	}
}

func TestLatencyHonoursClientCancel(t *testing.T) {
	f := newFixture(t, apnsfake.Options{})
	f.srv.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.srv.URL()+"/3/device/"+devA, bytes.NewReader([]byte(`{"aps":{}}`)))
	if _, err := f.client.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow answer: err = %v, want DeadlineExceeded", err)
	}
	// Close (in Cleanup) must not wait an hour for the handler.
}

func TestMaxRecorded(t *testing.T) {
	f := newFixture(t, apnsfake.Options{MaxRecorded: 2})
	for range 7 {
		if a := f.do(t, request{}); a.status != 200 {
			t.Fatalf("got %d %s", a.status, a.reason)
		}
	}
	if got := f.srv.Accepted(); got != 7 {
		t.Errorf("Accepted() = %d, want 7", got)
	}
	if got := len(f.srv.Pushes()); got != 2 {
		t.Errorf("kept %d pushes, want 2", got)
	}
	if got := len(f.srv.PushesFor(devA)); got != 2 {
		t.Errorf("PushesFor kept %d pushes, want 2", got)
	}
}
