package ewsfake_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

// control calls the control API and decodes the answer into out.
func control(t *testing.T, f *ewsfake.Server, method, path, body string, wantStatus int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, f.ControlURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: HTTP %d %s, want %d", method, path, resp.StatusCode, data, wantStatus)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
}

func TestControlAPI(t *testing.T) {
	f := ewsfake.New(ewsfake.Options{TimeScale: 0.001})
	t.Cleanup(f.Close)
	c := &ews.Client{HTTP: f.HTTPClient()}
	ep := ews.Endpoint{URL: f.URL(), Credentials: mailpush.Credentials{Username: "bob", Password: "pw"}}
	ctx := context.Background()
	l := newListener(t, nil)

	control(t, f, "POST", "users", `{"address":"bob@contoso.com","username":"bob","password":"pw"}`, 200, nil)
	sub, err := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: l.URL()})
	if err != nil {
		t.Fatal(err)
	}
	var delivered struct{ ItemID string }
	control(t, f, "POST", "deliver", `{"address":"bob@contoso.com","subject":"s","fromName":"A","fromAddress":"a@example.com"}`, 200, &delivered)
	if delivered.ItemID == "" {
		t.Fatal("deliver returned no itemId")
	}
	l.wait("the delivery", func(n []*ews.Notification) bool { return len(folderCounts(events(n, sub.SubscriptionID))) >= 1 })
	control(t, f, "POST", "markread", `{"address":"bob@contoso.com","itemId":"`+delivered.ItemID+`","read":true}`, 200, nil)
	l.wait("the read", func(n []*ews.Notification) bool { return len(folderCounts(events(n, sub.SubscriptionID))) >= 2 })
	if n, err := c.GetInboxUnread(ctx, ep); err != nil || n != 0 {
		t.Errorf("GetInboxUnread = %d, %v after markread", n, err)
	}
	var moved struct{ ItemID string }
	control(t, f, "POST", "delete", `{"address":"bob@contoso.com","itemId":"`+delivered.ItemID+`","soft":true}`, 200, &moved)
	if moved.ItemID == "" || moved.ItemID == delivered.ItemID {
		t.Errorf("soft delete returned item %q", moved.ItemID)
	}
	control(t, f, "POST", "delete", `{"address":"bob@contoso.com","itemId":"`+delivered.ItemID+`"}`, 404, nil)
	control(t, f, "POST", "deliver", `{"address":"nobody@contoso.com"}`, 404, nil)
	control(t, f, "POST", "deliver", `{"address":"bob@contoso.com","bogus":1}`, 400, nil)

	var subs []ewsfake.Subscription
	control(t, f, "GET", "subscriptions", "", 200, &subs)
	if len(subs) != 1 || subs[0].ID != sub.SubscriptionID || !subs[0].Active || subs[0].Address != "bob@contoso.com" || subs[0].StatusFrequency != 1440 {
		t.Errorf("subscriptions = %+v", subs)
	}
	waitFake(t, f, "a callback", func(f *ewsfake.Server) bool { return len(f.CallbacksFor(sub.SubscriptionID)) > 0 })
	var cbs []ewsfake.Callback
	control(t, f, "GET", "callbacks?subscription="+url.QueryEscape(sub.SubscriptionID), "", 200, &cbs)
	if len(cbs) == 0 || cbs[0].Result != "OK" {
		t.Errorf("callbacks = %+v", cbs)
	}
	var reqs struct {
		Op    string
		Count int
	}
	control(t, f, "GET", "requests?op=Subscribe", "", 200, &reqs)
	if reqs.Count != 1 {
		t.Errorf("requests = %+v", reqs)
	}

	control(t, f, "POST", "fail", `{"op":"GetFolder","code":"ErrorServerBusy","backOffMs":1500}`, 200, nil)
	_, err = c.GetInboxUnread(ctx, ep)
	if re, ok := asResponseError(err); !ok || re.BackOff.Milliseconds() != 1500 {
		t.Errorf("after /control/fail: %v", err)
	}
	control(t, f, "POST", "callback-delay", `{"delayMs":1}`, 200, nil)
	control(t, f, "POST", "drop", `{"subscriptionId":"`+sub.SubscriptionID+`"}`, 200, nil)
	control(t, f, "POST", "drop", `{"subscriptionId":"nope"}`, 404, nil)
	control(t, f, "POST", "restart", "", 200, nil)
	control(t, f, "GET", "subscriptions", "", 200, &subs)
	if len(subs) != 0 {
		t.Errorf("subscriptions after restart = %+v", subs)
	}
}

func asResponseError(err error) (*ews.ResponseError, bool) {
	var re *ews.ResponseError
	ok := errors.As(err, &re)
	return re, ok
}
