package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// netscalerCallout builds the request NetScaler's HTTP callout sends for an
// ActiveSync request, expression by expression, as docs/gate.md configures
// it:
//
//	user(HTTP.REQ.HEADER("authorization").AFTER_STR("Basic ").B64DECODE.BEFORE_STR(":").HTTP_URL_SAFE)
//	agent(HTTP.REQ.HEADER("user-agent").HTTP_URL_SAFE)
//	ip(CLIENT.IP.SRC)
//	url(("https://"+HTTP.REQ.HOSTNAME+HTTP.REQ.URL).B64ENCODE)
//	version(HTTP.REQ.HEADER("MS-ASProtocolVersion").HTTP_URL_SAFE)
//	DeviceId(HTTP.REQ.URL.QUERY.VALUE("DeviceId"))
//
// QUERY.VALUE takes the first of several DeviceIds, and B64ENCODE's output
// is not URL-escaped.
func netscalerCallout(requestURL, basicUser, userAgent, clientIP, version string) string {
	_, rawQuery, _ := strings.Cut(requestURL, "?")
	deviceID := ""
	for _, kv := range strings.Split(rawQuery, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == "DeviceId" {
			deviceID = v
			break
		}
	}
	return fmt.Sprintf("/services/ActiveSync/Authorize?user=%s&agent=%s&ip=%s&url=%s&version=%s&DeviceId=%s",
		url.QueryEscape(basicUser), url.QueryEscape(userAgent), clientIP,
		base64.StdEncoding.EncodeToString([]byte("https://mail.example.com"+requestURL)), url.QueryEscape(version), deviceID)
}

func TestGateNetScalerCallout(t *testing.T) {
	w, _, token := newGateWorldFor(t, "netscaler", gateHostileConfig)
	for id, state := range map[string]string{"GOODDEV01": "compliant", "BLOCKED": "blocked"} {
		if st, body := w.call(t, "PUT", "/api/v1/gate/devices/"+id, token, map[string]string{"user": "alice@example.com", "state": state}); st != 200 {
			t.Fatalf("PUT device %s = %d %v", id, st, body)
		}
	}
	ask := func(callout string) (string, string) {
		t.Helper()
		res, err := http.Get(w.main.URL() + callout)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 {
			t.Fatalf("callout answered %d %q", res.StatusCode, b)
		}
		// The policy's -resultExpr: HTTP.RES.BODY(5).EQ("Allow").
		return string(b), res.Header.Get("X-Mailpush-Reason")
	}
	good := "/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=GOODDEV01&DeviceType=iPhone"
	// A request whose base64 holds a '+', which NetScaler does not escape.
	// Of three '~' (0x7E) one ends a 3-byte group, whose last 6 bits 111110 are '+'.
	plus := netscalerCallout(good+"&ItemId=~~~", "alice@example.com", "Apple-iPhone/1", "192.0.2.10", "16.1")
	if !strings.Contains(plus, "+") {
		t.Fatalf("the callout %q has no '+'", plus)
	}
	for _, tc := range []struct {
		name, callout, want, reason string
	}{
		{"compliant", netscalerCallout(good, `CORP\alice`, "Apple-iPhone/1", "192.0.2.10", "16.1"), "Allow", "device is compliant"},
		{"a '+' in the unescaped base64", plus, "Allow", "device is compliant"},
		{"bob", netscalerCallout(good, "bob@example.com", "Apple-iPhone/1", "192.0.2.10", "16.1"), "Deny", "not the authenticated user"},
		{"bob without a query User", netscalerCallout(strings.Replace(good, "User=alice&", "", 1), "bob@example.com", "Apple-iPhone/1", "192.0.2.10", "16.1"), "Deny", "registered to another user"},
		{"no user", netscalerCallout(good, "", "Apple-iPhone/1", "192.0.2.10", "16.1"), "Deny", "no credentials"},
		{"guest network", netscalerCallout(strings.Replace(good, "Ping", "Sync", 1), "alice@example.com", "Apple-iPhone/1", "127.0.0.2", "16.1"), "Deny", "guest-wifi"},
		{"old protocol", netscalerCallout(good, "alice@example.com", "Apple-iPhone/1", "192.0.2.10", "12.1"), "Deny", "below"},
		// The first DeviceId goes to the callout's DeviceId; the url holds both.
		{"duplicated DeviceId in the request", netscalerCallout(good+"&DeviceId=BLOCKED", "alice@example.com", "Apple-iPhone/1", "192.0.2.10", "16.1"), "Deny", "repeats"},
		{"duplicated DeviceId in the callout", netscalerCallout(good, "alice@example.com", "Apple-iPhone/1", "192.0.2.10", "16.1") + "&DeviceId=BLOCKED", "Deny", "repeats its deviceid"},
		{"duplicated ip in the callout", netscalerCallout(good, "alice@example.com", "Apple-iPhone/1", "192.0.2.10", "16.1") + "&ip=10.1.2.3", "Deny", "repeats its ip"},
		{"look-alike DeviceId", netscalerCallout(strings.Replace(good, "GOODDEV01", "GOODDEV01%C2%A0", 1), "alice@example.com", "Apple-iPhone/1", "192.0.2.10", "16.1"), "Deny", "ASCII letters and digits"},
		{"path trick", netscalerCallout(strings.Replace(good, "/Microsoft-Server-ActiveSync", "/Microsoft-Server-ActiveSync/../owa", 1), "alice@example.com", "Apple-iPhone/1", "192.0.2.10", "16.1"), "Deny", "not /Microsoft-Server-ActiveSync"},
	} {
		got, reason := ask(tc.callout)
		if got != tc.want || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: %s (%q), want %s (%q)", tc.name, got, reason, tc.want, tc.reason)
		}
	}
	// With gate.proxy netscaler /gate/auth refuses.
	code, _ := rawRequestFrom(t, "127.0.0.1", strings.TrimPrefix(w.main.URL(), "http://"), "GET", "/gate/auth", [][2]string{{"X-Original-URI", good}, basicAuth("alice@example.com")})
	if code != 403 {
		t.Errorf("/gate/auth of a netscaler gate: %d", code)
	}
	// The callout from an address that is not a trusted proxy (the same
	// callout from 127.0.0.1 is allowed: "compliant" above).
	code, body := rawRequestFrom(t, hostileClientAddr, strings.TrimPrefix(w.main.URL(), "http://"), "GET", netscalerCallout(good, "alice@example.com", "Apple-iPhone/1", "192.0.2.10", "16.1"), nil)
	if code != 200 || body != "Deny" {
		t.Errorf("callout from an untrusted address: %d %q", code, body)
	}
}
