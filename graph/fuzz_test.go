package graph

import (
	"strings"
	"testing"
)

// FuzzParseBatch: the notification parser takes anything Graph (or anyone
// who learned a notification URL) posts; it must never panic, and what it
// accepts must hold what the handler relies on.
func FuzzParseBatch(f *testing.F) {
	for _, seed := range []string{
		`{"value":[{"subscriptionId":"s1","clientState":"c","changeType":"created","resource":"Users/u/Messages/m","resourceData":{"@odata.type":"#Microsoft.Graph.Message","id":"m"}}]}`,
		`{"value":[{"subscriptionId":"s1","lifecycleEvent":"missed","clientState":"c"}]}`,
		`{"value":[{"subscriptionId":"s1","changeType":"updated"},{"subscriptionId":"s2","changeType":"deleted"}],"validationTokens":["a.b.c"]}`,
		`{"value":[{"subscriptionId":"s1","changeType":"created","encryptedContent":{"data":"AA==","dataKey":"AA==","dataSignature":"AA==","encryptionCertificateId":"1"}}]}`,
		`{"value":[]}`, `{}`, `[]`, `null`, `{"value":[{"subscriptionId":""}]}`, `{"value":[{}]} trailing`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := ParseBatch(body)
		if err != nil {
			return
		}
		if b.Value == nil || len(b.Value) > MaxNotifications {
			t.Fatalf("accepted %d notifications", len(b.Value))
		}
		for _, n := range b.Value {
			if n.SubscriptionID == "" || len(n.SubscriptionID) > 128 {
				t.Fatalf("accepted subscriptionId %q", n.SubscriptionID)
			}
			if n.LifecycleEvent == "" && !strings.Contains("created updated deleted", n.ChangeType) {
				t.Fatalf("accepted changeType %q", n.ChangeType)
			}
		}
	})
}
