package graph

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// MaxNotificationSize bounds a notification POST. Graph batches up to a
// few hundred notifications; rich ones carry a few KiB each.
const MaxNotificationSize = 4 << 20

// MaxNotifications bounds the notifications of one POST that are looked at.
const MaxNotifications = 1000

// Notification is one change or lifecycle notification of a POST's "value".
type Notification struct {
	SubscriptionID                 string            `json:"subscriptionId"`
	SubscriptionExpirationDateTime string            `json:"subscriptionExpirationDateTime,omitempty"`
	ClientState                    string            `json:"clientState,omitempty"`
	ChangeType                     string            `json:"changeType,omitempty"`     // created, updated, deleted
	LifecycleEvent                 string            `json:"lifecycleEvent,omitempty"` // reauthorizationRequired, subscriptionRemoved, missed
	Resource                       string            `json:"resource,omitempty"`
	TenantID                       string            `json:"tenantId,omitempty"`
	ResourceData                   *ResourceData     `json:"resourceData,omitempty"`
	EncryptedContent               *EncryptedContent `json:"encryptedContent,omitempty"`
}

// ResourceData names the changed message.
type ResourceData struct {
	ODataType string `json:"@odata.type,omitempty"`
	ID        string `json:"id,omitempty"`
}

// EncryptedContent is a rich notification's resource data, encrypted to
// mailpush's encryption certificate.
type EncryptedContent struct {
	Data                            string `json:"data"`
	DataKey                         string `json:"dataKey"`
	DataSignature                   string `json:"dataSignature"`
	EncryptionCertificateID         string `json:"encryptionCertificateId"`
	EncryptionCertificateThumbprint string `json:"encryptionCertificateThumbprint,omitempty"`
}

// Lifecycle events.
const (
	LifecycleReauthorizationRequired = "reauthorizationRequired"
	LifecycleSubscriptionRemoved     = "subscriptionRemoved"
	LifecycleMissed                  = "missed"
)

// Batch is the body of a notification POST.
type Batch struct {
	Value            []Notification `json:"value"`
	ValidationTokens []string       `json:"validationTokens,omitempty"`
}

// ParseBatch decodes a notification POST. It refuses what Graph never sends:
// no "value", more than MaxNotifications, a notification without
// subscriptionId, or one that is neither a change nor a lifecycle event.
func ParseBatch(body []byte) (*Batch, error) {
	var b Batch
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("not a notification batch: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("not a notification batch: data after the JSON object")
	}
	if b.Value == nil {
		return nil, fmt.Errorf("not a notification batch: no \"value\" array")
	}
	if len(b.Value) > MaxNotifications {
		return nil, fmt.Errorf("%d notifications in one POST, at most %d", len(b.Value), MaxNotifications)
	}
	for i, n := range b.Value {
		if n.SubscriptionID == "" || len(n.SubscriptionID) > 128 {
			return nil, fmt.Errorf("value[%d]: subscriptionId missing or longer than 128 characters", i)
		}
		switch {
		case n.LifecycleEvent != "":
		case n.ChangeType == "created" || n.ChangeType == "updated" || n.ChangeType == "deleted":
		default:
			return nil, fmt.Errorf("value[%d]: changeType %q is not created, updated or deleted", i, n.ChangeType)
		}
	}
	return &b, nil
}

// Subscription is a Graph subscription (the fields mailpush uses).
type Subscription struct {
	ID                        string    `json:"id,omitempty"`
	ChangeType                string    `json:"changeType,omitempty"`
	NotificationURL           string    `json:"notificationUrl,omitempty"`
	LifecycleNotificationURL  string    `json:"lifecycleNotificationUrl,omitempty"`
	Resource                  string    `json:"resource,omitempty"`
	ExpirationDateTime        time.Time `json:"expirationDateTime"`
	ClientState               string    `json:"clientState,omitempty"`
	IncludeResourceData       bool      `json:"includeResourceData,omitempty"`
	EncryptionCertificate     string    `json:"encryptionCertificate,omitempty"`
	EncryptionCertificateID   string    `json:"encryptionCertificateId,omitempty"`
	LatestSupportedTLSVersion string    `json:"latestSupportedTlsVersion,omitempty"`
}

// Message is the part of a message a push may carry.
type Message struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	IsRead  bool   `json:"isRead"`
	From    *struct {
		EmailAddress struct {
			Name    string `json:"name"`
			Address string `json:"address"`
		} `json:"emailAddress"`
	} `json:"from,omitempty"`
}

// Sender is the message's sender as a push shows it: the name, else the address.
func (m *Message) Sender() string {
	if m.From == nil {
		return ""
	}
	if m.From.EmailAddress.Name != "" {
		return m.From.EmailAddress.Name
	}
	return m.From.EmailAddress.Address
}

// InboxResource is the resource of a mailbox's subscription.
func InboxResource(user string) string {
	return "users/" + user + "/mailFolders('inbox')/messages"
}
