package ewsfake_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mailpush/mailpush/fake/ewsfake"
)

// post sends a raw SOAP request to the fake as alice.
func post(t *testing.T, f *ewsfake.Server, action, body string) (int, string) {
	t.Helper()
	env := `<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"` +
		` xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">` +
		`<soap:Body>` + body + `</soap:Body></soap:Envelope>`
	req, err := http.NewRequest("POST", f.URL(), strings.NewReader(env))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(username, password)
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	if action != "" {
		req.Header.Set("SOAPAction", `"http://schemas.microsoft.com/exchange/services/2006/messages/`+action+`"`)
	}
	resp, err := f.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func TestFakeChecksRequests(t *testing.T) {
	f, _, _ := newFake(t, ewsfake.Options{})
	const push = `<m:Subscribe><m:PushSubscriptionRequest>%s</m:PushSubscriptionRequest></m:Subscribe>`
	folders := `<t:FolderIds><t:DistinguishedFolderId Id="inbox"/></t:FolderIds>`
	types := `<t:EventTypes><t:EventType>NewMailEvent</t:EventType></t:EventTypes>`
	tests := []struct {
		name, action, body string
		wantStatus         int
		wantText           string
	}{
		{"children out of order", "Subscribe", strings.Replace(push, "%s", types+folders+`<t:StatusFrequency>1</t:StatusFrequency><t:URL>https://x/cb</t:URL>`, 1),
			500, "ErrorSchemaValidation"},
		{"children in the messages namespace", "Subscribe", strings.Replace(push, "%s", folders+types+`<m:StatusFrequency>1</m:StatusFrequency><t:URL>https://x/cb</t:URL>`, 1),
			500, "ErrorSchemaValidation"},
		{"StatusFrequency out of range", "Subscribe", strings.Replace(push, "%s", folders+types+`<t:StatusFrequency>1441</t:StatusFrequency><t:URL>https://x/cb</t:URL>`, 1),
			500, "StatusFrequency"},
		{"URL missing", "Subscribe", strings.Replace(push, "%s", folders+types+`<t:StatusFrequency>1</t:StatusFrequency>`, 1),
			500, "URL is missing"},
		{"StatusEvent subscribed", "Subscribe", strings.Replace(push, "%s", folders+`<t:EventTypes><t:EventType>StatusEvent</t:EventType></t:EventTypes><t:StatusFrequency>1</t:StatusFrequency><t:URL>https://x/cb</t:URL>`, 1),
			500, "EventType"},
		{"bad push URL", "Subscribe", strings.Replace(push, "%s", folders+types+`<t:StatusFrequency>1</t:StatusFrequency><t:URL>not a url</t:URL>`, 1),
			200, "ErrorInvalidPushSubscriptionUrl"},
		{"another folder", "Subscribe", strings.Replace(push, "%s", `<t:FolderIds><t:DistinguishedFolderId Id="calendar"/></t:FolderIds>`+types+`<t:StatusFrequency>1</t:StatusFrequency><t:URL>https://x/cb</t:URL>`, 1),
			200, "ErrorInvalidOperation"},
		{"pull subscription", "Subscribe", `<m:Subscribe><m:PullSubscriptionRequest/></m:Subscribe>`, 200, "ErrorInvalidSubscriptionRequest"},
		{"in order, with optional Watermark absent", "Subscribe", strings.Replace(push, "%s", folders+types+`<t:StatusFrequency>1</t:StatusFrequency><t:URL>https://127.0.0.1:1/cb</t:URL>`, 1),
			200, "NoError"},
		{"unknown operation", "FindItem", `<m:FindItem/>`, 500, "ErrorInvalidRequest"},
		{"SOAPAction does not match", "GetItem", `<m:GetFolder/>`, 500, "SOAPAction"},
		{"no SOAPAction is fine", "", `<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>`,
			200, "<t:DisplayName>Inbox</t:DisplayName>"},
		{"GetFolder of another folder", "GetFolder", `<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="drafts"/></m:FolderIds></m:GetFolder>`,
			200, "ErrorFolderNotFound"},
		{"body not in the messages namespace", "", `<Subscribe/>`, 500, "ErrorSchemaValidation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(t, f, tt.action, tt.body)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantText) {
				t.Errorf("HTTP %d %s\nwant HTTP %d with %q", status, body, tt.wantStatus, tt.wantText)
			}
		})
	}
	if got := f.Requests("FindItem"); got != 1 {
		t.Errorf("Requests(FindItem) = %d, want 1", got)
	}
}
