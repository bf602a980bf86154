package dovecot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
)

// MaxNotificationSize caps a notification body. The OX driver's payload is a
// few hundred bytes (its snippet is at most 255 characters); 64 KiB leaves
// room for long subjects and sender names.
const MaxNotificationSize = 64 << 10

// maxUnseen bounds the unread count accepted (an APNs badge is an int).
const maxUnseen = 1 << 30

// Notification is one push_notification report in the OX driver's JSON.
type Notification struct {
	User        string `json:"user"`
	Folder      string `json:"folder"`
	Event       string `json:"event"`
	UIDValidity uint32 `json:"imap-uidvalidity"`
	UID         uint32 `json:"imap-uid"`
	From        string `json:"from"`
	Subject     string `json:"subject"`
	Snippet     string `json:"snippet"`
	// Unseen is the folder's UNSEEN count after the event; nil when absent.
	Unseen *int `json:"unseen"`
}

// ErrMalformed marks a payload that cannot be a notification.
var ErrMalformed = errors.New("malformed Dovecot notification")

// ParseNotification reads one notification. It refuses anything that is not
// a single JSON object with a non-empty user and, when present, an unseen
// count between 0 and 2^30. Unknown fields are ignored: newer Dovecot
// versions may add some.
func ParseNotification(body []byte) (*Notification, error) {
	if len(body) > MaxNotificationSize {
		return nil, fmt.Errorf("%w: body exceeds %d bytes", ErrMalformed, MaxNotificationSize)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var n Notification
	if err := dec.Decode(&n); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: more than one JSON value", ErrMalformed)
	}
	if strings.TrimSpace(n.User) == "" {
		return nil, fmt.Errorf("%w: no user", ErrMalformed)
	}
	if n.Unseen != nil && (*n.Unseen < 0 || *n.Unseen > maxUnseen) {
		return nil, fmt.Errorf("%w: unseen %d out of range", ErrMalformed, *n.Unseen)
	}
	return &n, nil
}

// IsNewMail reports whether the event is a delivery (the OX driver writes
// "messageNew"; RFC 5423 spells it "MessageNew").
func (n *Notification) IsNewMail() bool { return strings.EqualFold(n.Event, "MessageNew") }

// InInbox reports whether the event concerns the INBOX (the only folder a
// badge counts). A missing folder is taken as the INBOX: the OX driver
// always names it, and older scripts may not.
func (n *Notification) InInbox() bool { return n.Folder == "" || strings.EqualFold(n.Folder, "INBOX") }

// Sender is the display name of the From address, or the address, or the
// raw value when it does not parse.
func (n *Notification) Sender() string {
	if n.From == "" {
		return ""
	}
	if a, err := mail.ParseAddress(n.From); err == nil {
		if a.Name != "" {
			return a.Name
		}
		return a.Address
	}
	return n.From
}
