package ews

import (
	"sync"

	"github.com/mailpush/mailpush"
)

// credCache keeps the credentials that sealed-mode callback tokens carried,
// per mailbox, in memory only, so that a dead subscription can be made again
// without the device. It is bounded: when full, an arbitrary entry gives way
// (that mailbox then falls back to asking its device to check in).
type credCache struct {
	mu  sync.Mutex
	max int
	m   map[string]cachedCreds
}

type cachedCreds struct {
	serverURL string
	creds     mailpush.Credentials // sealed mode
	identity  *Identity            // sealed mode with a client identity (CBA): lives only here
	address   string               // the mailbox whose Inbox requests name (service mode: impersonate)
	keyID     string               // the key that sealed the callback URL Exchange holds
}

func newCredCache(max int) *credCache { return &credCache{max: max, m: map[string]cachedCreds{}} }

func (c *credCache) put(mailboxID string, v cachedCreds) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[mailboxID]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[mailboxID] = v
}

func (c *credCache) get(mailboxID string) (cachedCreds, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[mailboxID]
	return v, ok
}

func (c *credCache) drop(mailboxID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, mailboxID)
}
